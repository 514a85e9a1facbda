//! Typed values across a cluster: clients at every node run HSET, HDEL,
//! HINCRBY, SADD, SREM, SPOP, INCR, DEL and EXPIRE on overlapping keys at
//! once; after quiescence every node holds the same contents, compared
//! element by element over the Redis protocol, and the same digest, and
//! every acknowledged increment of a counter is counted exactly once.
//! Once with in-process nodes, once with real processes.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::cluster;
use common::process::{self, Proc, Procs};
use common::{eventually_ok, fast_config, patient_client_at};
use redis::aio::MultiplexedConnection;

const CONVERGE: Duration = Duration::from_secs(30);
/// Keys every node writes with every command.
const MIXED_KEYS: u64 = 12;
/// Counters only ever incremented: their value is known exactly.
const COUNTERS: u64 = 3;

/// What a client sees of a key: its type and contents (fields and
/// members sorted).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    String(String),
    Hash(Vec<(String, String)>),
    Set(Vec<String>),
}

/// The whole keyspace as a client sees it, key by key, element by element.
async fn client_view(con: &mut MultiplexedConnection) -> BTreeMap<String, (Seen, i64)> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    let mut out = BTreeMap::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(con).await.unwrap();
        let seen = match kind.as_str() {
            "string" => {
                let v: Option<String> = redis::cmd("GET").arg(&key).query_async(con).await.unwrap();
                match v {
                    Some(v) => Seen::String(v),
                    None => continue,
                }
            }
            "hash" => {
                let mut fields: Vec<(String, String)> = redis::cmd("HGETALL")
                    .arg(&key)
                    .query_async(con)
                    .await
                    .unwrap();
                fields.sort();
                Seen::Hash(fields)
            }
            "set" => {
                let mut members: Vec<String> = redis::cmd("SMEMBERS")
                    .arg(&key)
                    .query_async(con)
                    .await
                    .unwrap();
                members.sort();
                Seen::Set(members)
            }
            // Expired between SCAN and TYPE.
            _ => continue,
        };
        let at: i64 = redis::cmd("PEXPIRETIME")
            .arg(&key)
            .query_async(con)
            .await
            .unwrap();
        out.insert(key, (seen, at));
    }
    out
}

/// Runs the mixed workload from `clients_per_node` clients at each
/// address; returns the acknowledged increments per counter key (strings
/// `ctr:N` and hash fields `hctr:N`/`n`).
async fn workload(addrs: &[SocketAddr], ops: usize, seed: u64) -> BTreeMap<String, i64> {
    let mut tasks = Vec::new();
    for (n, addr) in addrs.iter().enumerate() {
        for c in 0..2u64 {
            let mut con = patient_client_at(*addr).await;
            let mut rng = fastrand::Rng::with_seed(seed ^ ((n as u64) << 8 | c));
            tasks.push(tokio::spawn(async move {
                let mut acked: BTreeMap<String, i64> = BTreeMap::new();
                for i in 0..ops {
                    let k = rng.u64(..MIXED_KEYS);
                    let member = format!("m{}", rng.u8(..8));
                    let mut cmd;
                    let mut counted = None;
                    match rng.u32(..100) {
                        0..=14 => {
                            cmd = redis::cmd("HSET");
                            cmd.arg(format!("hash:{k}"))
                                .arg(&member)
                                .arg(format!("v{n}.{c}.{i}"));
                        }
                        15..=22 => {
                            cmd = redis::cmd("HDEL");
                            cmd.arg(format!("hash:{k}")).arg(&member);
                        }
                        23..=30 => {
                            cmd = redis::cmd("HINCRBY");
                            cmd.arg(format!("hash:{k}"))
                                .arg("count")
                                .arg(rng.i64(-2..5));
                        }
                        31..=44 => {
                            cmd = redis::cmd("SADD");
                            cmd.arg(format!("set:{k}")).arg(&member);
                        }
                        45..=52 => {
                            cmd = redis::cmd("SREM");
                            cmd.arg(format!("set:{k}")).arg(&member);
                        }
                        53..=57 => {
                            cmd = redis::cmd("SPOP");
                            cmd.arg(format!("set:{k}"));
                        }
                        58..=66 => {
                            cmd = redis::cmd("INCRBY");
                            cmd.arg(format!("num:{k}")).arg(rng.i64(-3..6));
                        }
                        67..=74 => {
                            cmd = redis::cmd("DEL");
                            let prefix = ["hash", "set", "num"][rng.usize(..3)];
                            cmd.arg(format!("{prefix}:{k}"));
                        }
                        75..=80 => {
                            let prefix = ["hash", "set", "num"][rng.usize(..3)];
                            if rng.bool() {
                                cmd = redis::cmd("EXPIRE");
                                cmd.arg(format!("{prefix}:{k}")).arg(1000);
                            } else {
                                // Some keys expire during the run.
                                cmd = redis::cmd("PEXPIRE");
                                cmd.arg(format!("{prefix}:{k}")).arg(50 + rng.u32(..300));
                            }
                        }
                        81..=90 => {
                            let by = rng.i64(1..10);
                            let key = format!("ctr:{}", rng.u64(..COUNTERS));
                            cmd = redis::cmd("INCRBY");
                            cmd.arg(&key).arg(by);
                            counted = Some((key, by));
                        }
                        _ => {
                            let by = rng.i64(1..10);
                            let key = format!("hctr:{}", rng.u64(..COUNTERS));
                            cmd = redis::cmd("HINCRBY");
                            cmd.arg(&key).arg("n").arg(by);
                            counted = Some((format!("{key}/n"), by));
                        }
                    }
                    // Errors (WRONGTYPE, a field that is no integer) are
                    // part of the workload; counted increments must succeed.
                    let reply = cmd.query_async::<redis::Value>(&mut con).await;
                    if let Some((key, by)) = counted {
                        assert!(reply.is_ok(), "{key} += {by}: {reply:?}");
                        *acked.entry(key).or_default() += by;
                    }
                    if i % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                acked
            }));
        }
    }
    let mut total = BTreeMap::new();
    for t in tasks {
        for (key, by) in t.await.unwrap() {
            *total.entry(key).or_default() += by;
        }
    }
    total
}

/// Every node converged: same DEBUG DIGEST, same client view; and each
/// counter holds exactly its acknowledged increments.
async fn assert_converged(addrs: &[SocketAddr], acked: &BTreeMap<String, i64>) {
    let mut cons = Vec::new();
    for addr in addrs {
        cons.push(patient_client_at(*addr).await);
    }
    let converged = eventually_ok(CONVERGE, || {
        let cons = cons.clone();
        async move {
            let mut digests = Vec::new();
            for con in &cons {
                let d: String = redis::cmd("DEBUG")
                    .arg("DIGEST")
                    .query_async(&mut con.clone())
                    .await
                    .unwrap();
                digests.push(d);
            }
            if digests.iter().any(|d| *d != digests[0]) {
                return Err(format!("digests differ: {digests:?}"));
            }
            let first = client_view(&mut cons[0].clone()).await;
            for (i, con) in cons.iter().enumerate().skip(1) {
                let other = client_view(&mut con.clone()).await;
                if other != first {
                    let diff = first
                        .keys()
                        .chain(other.keys())
                        .find(|k| first.get(*k) != other.get(*k))
                        .map(|k| (k.clone(), first.get(k).cloned(), other.get(k).cloned()));
                    return Err(format!("node 0 and node {i} differ first at {diff:?}"));
                }
            }
            Ok(())
        }
    })
    .await;
    converged.expect("the nodes converge");
    let view = client_view(&mut cons[0].clone()).await;
    for (key, sum) in acked {
        let seen = match key.split_once('/') {
            Some((hash, field)) => match view.get(hash) {
                Some((Seen::Hash(fields), _)) => fields
                    .iter()
                    .find(|(f, _)| f == field)
                    .map(|(_, v)| v.clone()),
                other => panic!("{hash} is {other:?}"),
            },
            None => match view.get(key.as_str()) {
                Some((Seen::String(v), _)) => Some(v.clone()),
                other => panic!("{key} is {other:?}"),
            },
        };
        assert_eq!(
            seen,
            Some(sum.to_string()),
            "{key} must hold every acknowledged increment exactly once"
        );
    }
    assert!(
        view.keys().any(|k| k.starts_with("hash:")) && view.keys().any(|k| k.starts_with("set:")),
        "the workload leaves hashes and sets: {:?}",
        view.keys().collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_typed_writes_on_every_node_converge_in_process() {
    let nodes = cluster::start_ready_cluster(3, fast_config).await;
    let addrs: Vec<SocketAddr> = nodes.iter().map(|n| n.client_addr()).collect();
    let seed = fastrand::u64(..);
    eprintln!("random seed {seed}");
    let acked = workload(&addrs, 400, seed).await;
    assert_converged(&addrs, &acked).await;
    // The stores agree entry by entry (typed values by content digest,
    // which covers every element and its version), once the nodes have
    // collected the same tombstones.
    let agree = eventually_ok(CONVERGE, || async {
        let first = nodes[0].store().dump();
        for node in &nodes[1..] {
            let other = node.store().dump();
            if other != first {
                let diff: Vec<_> = first
                    .iter()
                    .filter(|e| !other.contains(e))
                    .take(3)
                    .collect();
                let theirs: Vec<_> = other
                    .iter()
                    .filter(|e| !first.contains(e))
                    .take(3)
                    .collect();
                return Err(format!(
                    "{} differs from n1: n1 only {diff:?}; theirs only {theirs:?}",
                    node.name()
                ));
            }
        }
        Ok(())
    })
    .await;
    agree.expect("the stores agree entry by entry");
    for node in nodes {
        node.shutdown().await;
    }
}

/// Fast membership and anti-entropy timings.
const TIMINGS: [&str; 12] = process::fast_timings("2s", "200ms");

fn spawn(name: &str, join: Option<SocketAddr>) -> Proc {
    process::spawn_retrying(name, || {
        let mut cmd = process::node_command((0, 0));
        cmd.args(["--name", name]);
        cmd.args(TIMINGS);
        if let Some(seed) = join {
            cmd.args(["--join", &seed.to_string()]);
        }
        cmd
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_typed_writes_on_every_node_converge_across_processes() {
    let mut procs = Procs::default();
    let first = spawn("n1", None);
    let seed_addr = first.peer;
    procs.push(first);
    for name in ["n2", "n3"] {
        procs.push(spawn(name, Some(seed_addr)));
    }
    let addrs: Vec<SocketAddr> = procs.iter().map(|p| p.client).collect();
    // Linked: a write on each node is readable on every other.
    let linked = eventually_ok(CONVERGE, || async {
        for (i, a) in addrs.iter().enumerate() {
            let mut con = patient_client_at(*a).await;
            let _: () = redis::cmd("SET")
                .arg(format!("hello:{i}"))
                .arg(i)
                .query_async(&mut con)
                .await
                .unwrap();
        }
        for b in &addrs {
            let mut con = patient_client_at(*b).await;
            for i in 0..addrs.len() {
                let v: Option<String> = redis::cmd("GET")
                    .arg(format!("hello:{i}"))
                    .query_async(&mut con)
                    .await
                    .unwrap();
                if v.is_none() {
                    return Err(format!("hello:{i} not yet on {b}"));
                }
            }
        }
        Ok(())
    })
    .await;
    linked.expect("three processes form a cluster");
    let seed = fastrand::u64(..);
    eprintln!("random seed {seed}");
    let acked = workload(&addrs, 300, seed).await;
    assert_converged(&addrs, &acked).await;
}
