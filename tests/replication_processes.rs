//! Replication between real `kriminodb` processes, started as `make node1`
//! … would start them (`--join <node 1's peer address>`), observed over the
//! Redis protocol: a write on one node is readable on another, and a node
//! killed with SIGKILL and restarted at the same ports catches up.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{self, Proc, Procs};
use common::{eventually_ok, info_field, patient_client_at as client_at};
use redis::aio::MultiplexedConnection;

/// Deadline for what the cluster must reach on its own.
const CONVERGE: Duration = Duration::from_secs(30);

/// Fast membership and anti-entropy timings.
const TIMINGS: [&str; 12] = process::fast_timings("2s", "200ms");

/// Starts one node with this file's timings on `ports` (0 for free ones).
fn spawn(name: &str, ports: (u16, u16), join: Option<SocketAddr>) -> Proc {
    process::spawn_retrying(name, || {
        let mut cmd = process::node_command(ports);
        cmd.args(["--name", name]);
        cmd.args(TIMINGS);
        if let Some(seed) = join {
            cmd.args(["--join", &seed.to_string()]);
        }
        cmd
    })
}

async fn digest(con: &MultiplexedConnection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query_async(&mut con.clone())
        .await
        .unwrap()
}

async fn dbsize(con: &MultiplexedConnection) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut con.clone())
        .await
        .unwrap()
}

/// Ok when every node is linked to the two others and has reconciled.
async fn linked(cons: &[MultiplexedConnection]) -> Result<(), String> {
    for (i, con) in cons.iter().enumerate() {
        let mut con = con.clone();
        let peers = info_field(&mut con, "replication", "peers_linked").await;
        let synced = info_field(&mut con, "replication", "initial_sync_done").await;
        let alive = info_field(&mut con, "membership", "members_alive").await;
        let members = info_field(&mut con, "membership", "members").await;
        let want = cons.len().to_string();
        if peers.as_deref() != Some(&(cons.len() - 1).to_string())
            || synced.as_deref() != Some("1")
            || alive.as_deref() != Some(&want)
            || members.as_deref() != Some(&want)
        {
            return Err(format!(
                "node {}: peers_linked {peers:?}, initial_sync_done {synced:?}, \
                 members {members:?}, alive {alive:?}",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Ok when every node reports the same non-empty digest and `keys` keys.
async fn same_contents(cons: &[MultiplexedConnection], keys: u64) -> Result<(), String> {
    let mut seen = Vec::new();
    for con in cons {
        seen.push((dbsize(con).await, digest(con).await));
    }
    if seen.iter().all(|s| *s == seen[0]) && seen[0].0 == keys {
        Ok(())
    } else {
        Err(format!("(dbsize, digest) per node: {seen:?}"))
    }
}

async fn mset(con: &MultiplexedConnection, prefix: &str, n: usize) {
    let mut cmd = redis::cmd("MSET");
    for i in 0..n {
        cmd.arg(format!("{prefix}{i}"))
            .arg(format!("{prefix}-value-{i}"));
    }
    let _: () = cmd.query_async(&mut con.clone()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_restarted_at_the_same_ports_catches_up() {
    let mut cluster = Procs::default();
    let n1 = spawn("n1", (0, 0), None);
    let seed = n1.peer;
    cluster.push(n1);
    for name in ["n2", "n3"] {
        cluster.push(spawn(name, (0, 0), Some(seed)));
    }
    let mut cons = Vec::new();
    for p in cluster.iter() {
        cons.push(client_at(p.client).await);
    }
    let formed = eventually_ok(CONVERGE, || linked(&cons)).await;
    formed.expect("three processes form a linked cluster");

    // A write on node 1 is readable on node 3.
    let _: () = redis::cmd("SET")
        .arg("greeting")
        .arg("hello")
        .query_async(&mut cons[0].clone())
        .await
        .unwrap();
    let read = eventually_ok(CONVERGE, || async {
        let v: Option<String> = redis::cmd("GET")
            .arg("greeting")
            .query_async(&mut cons[2].clone())
            .await
            .unwrap();
        match v.as_deref() {
            Some("hello") => Ok(()),
            other => Err(format!("node 3 has greeting = {other:?}")),
        }
    })
    .await;
    read.expect("a write on node 1 is readable on node 3");
    mset(&cons[0], "before:", 500).await;
    mset(&cons[2], "before3:", 500).await;

    // SIGKILL node 2; writes go on without it.
    let (client, peer) = (cluster[1].client, cluster[1].peer);
    cluster[1].child.kill().unwrap();
    cluster[1].child.wait().unwrap();
    mset(&cons[0], "while-down:", 500).await;
    mset(&cons[2], "while-down3:", 500).await;

    // Restart it at the same ports; it catches up.
    let restarted = spawn("n2", (client.port(), peer.port()), Some(seed));
    assert_eq!((restarted.client, restarted.peer), (client, peer));
    let old = std::mem::replace(&mut cluster[1], restarted);
    drop(old.child);
    cons[1] = client_at(client).await;
    let keys = 1 + 4 * 500;
    let caught_up = eventually_ok(CONVERGE, || async {
        linked(&cons).await?;
        same_contents(&cons, keys).await
    })
    .await;
    caught_up.expect("the restarted node holds what the others hold");
    let v: Option<String> = redis::cmd("GET")
        .arg("while-down:499")
        .query_async(&mut cons[1].clone())
        .await
        .unwrap();
    assert_eq!(v.as_deref(), Some("while-down:-value-499"));
}
