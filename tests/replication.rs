//! Replication between nodes started in-process on 127.0.0.1: concurrent
//! writes converging everywhere, a late joiner filling up, broken links and
//! crashed nodes repaired by anti-entropy, deletes that stay deleted and
//! tombstones that get collected, WAIT, FLUSHALL, expiry, and hostile bytes
//! on the TCP peer port.
//!
//! Every test starts its own nodes on OS-assigned ports with fast membership
//! and anti-entropy timings. Assertions poll (`eventually_ok`) with deadlines
//! far above what an idle machine needs, and compare whole keyspaces: the
//! store's entries (key, value, expiry, version), DEBUG DIGEST, and SCAN +
//! GET + PEXPIRETIME over the Redis protocol.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use common::cluster::{self, wait_ready};
use common::{
    closed_by_server, eventually_ok, fast_config as config, info_field, patient_client_at,
    restart_at, start_node_with,
};
use kriminodb::clock::{TimeSource, Version};

use kriminodb::replication::wire::{self, Frame, Message, PROTOCOL_VERSION};
use kriminodb::{Config, Node, NodeHandle};
use redis::aio::MultiplexedConnection;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_util::sync::CancellationToken;

/// Deadline for anything the cluster must reach on its own. An idle machine
/// needs well under a second for most of it; this holds on a loaded one.
const CONVERGE: Duration = Duration::from_secs(30);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn joining(name: &str, seed: &NodeHandle) -> Config {
    cluster::joining(config(name), seed)
}

/// Starts `n1`..`nN`, all but the first joining through `n1`, and waits
/// until they form a fully linked cluster.
async fn start_cluster(n: usize) -> Vec<NodeHandle> {
    cluster::start_ready_cluster(n, config).await
}

/// A node's live, unexpired entries: (key, value, expiry, version), sorted.
type Live = Vec<(Vec<u8>, Vec<u8>, u64, Version)>;

fn live(node: &NodeHandle) -> Live {
    let now = node.clock().wall_ms();
    node.store()
        .dump()
        .into_iter()
        .filter_map(|(key, value, expires_at, version)| {
            let value = value?;
            (expires_at == 0 || expires_at > now).then_some((key, value, expires_at, version))
        })
        .collect()
}

/// Ok when every node holds the same live entries, versions included;
/// otherwise names the first difference.
fn same_contents(nodes: &[&NodeHandle]) -> Result<(), String> {
    let first = live(nodes[0]);
    for node in &nodes[1..] {
        let other = live(node);
        if other != first {
            let a: BTreeMap<_, _> = first.iter().map(|e| (&e.0, e)).collect();
            let b: BTreeMap<_, _> = other.iter().map(|e| (&e.0, e)).collect();
            let diff = a
                .keys()
                .chain(b.keys())
                .find(|k| a.get(*k) != b.get(*k))
                .map(|k| (String::from_utf8_lossy(k).into_owned(), a.get(k), b.get(k)));
            return Err(format!(
                "{} holds {} live keys, {} holds {}; first difference {diff:?}",
                nodes[0].name(),
                first.len(),
                node.name(),
                other.len()
            ));
        }
    }
    Ok(())
}

async fn digest(con: &mut MultiplexedConnection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query_async(con)
        .await
        .unwrap()
}

/// Ok when every connection reports the same DEBUG DIGEST.
async fn same_digests(cons: &[MultiplexedConnection]) -> Result<(), String> {
    let mut seen = Vec::new();
    for con in cons {
        seen.push(digest(&mut con.clone()).await);
    }
    if seen.iter().all(|d| *d == seen[0]) {
        Ok(())
    } else {
        Err(format!("digests differ: {seen:?}"))
    }
}

/// The keyspace as a client sees it: key → (value, PEXPIRETIME).
async fn wire_contents(con: &mut MultiplexedConnection) -> BTreeMap<Vec<u8>, (Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(con)
            .await
            .unwrap();
        for key in keys {
            let value: Option<Vec<u8>> =
                redis::cmd("GET").arg(&key).query_async(con).await.unwrap();
            let at: i64 = redis::cmd("PEXPIRETIME")
                .arg(&key)
                .query_async(con)
                .await
                .unwrap();
            if let Some(value) = value {
                out.insert(key, (value, at));
            }
        }
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

async fn client(node: &NodeHandle) -> MultiplexedConnection {
    patient_client_at(node.client_addr()).await
}

async fn connect_all(nodes: &[&NodeHandle]) -> Vec<MultiplexedConnection> {
    let mut cons = Vec::new();
    for node in nodes {
        cons.push(client(node).await);
    }
    cons
}

/// Waits until every node holds the same entries and reports the same
/// digest, then checks that clients see the same keyspace everywhere.
/// Returns the number of live keys.
async fn assert_converged(nodes: &[&NodeHandle]) -> usize {
    let cons = connect_all(nodes).await;
    let keys = AtomicU64::new(0);
    let converged = eventually_ok(CONVERGE, || async {
        same_contents(nodes)?;
        same_digests(&cons).await?;
        // Keys with a short TTL may expire between two scans: compare
        // again until a round sees the same everywhere.
        let first = wire_contents(&mut cons[0].clone()).await;
        for (i, con) in cons.iter().enumerate().skip(1) {
            let other = wire_contents(&mut con.clone()).await;
            if other != first {
                return Err(format!(
                    "SCAN+GET+PEXPIRETIME differ between {} ({} keys) and {} ({} keys)",
                    nodes[0].name(),
                    first.len(),
                    nodes[i].name(),
                    other.len()
                ));
            }
        }
        keys.store(first.len() as u64, Ordering::Relaxed);
        Ok(())
    })
    .await;
    converged.expect("every node converges to the same contents");
    keys.load(Ordering::Relaxed) as usize
}

async fn get(con: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(con).await.unwrap()
}

async fn set(con: &mut MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(con)
        .await
        .unwrap();
}

async fn info_u64(con: &mut MultiplexedConnection, field: &str) -> u64 {
    info_field(con, "replication", field)
        .await
        .unwrap_or_else(|| panic!("INFO replication has {field}"))
        .trim()
        .parse()
        .unwrap()
}

/// Ok when `key` has `value` (None: is absent) on every connection.
async fn everywhere(
    cons: &[MultiplexedConnection],
    key: &str,
    value: Option<&str>,
) -> Result<(), String> {
    for (i, con) in cons.iter().enumerate() {
        let seen = get(&mut con.clone(), key).await;
        if seen.as_deref() != value {
            return Err(format!("node {i} has {key} = {seen:?}, want {value:?}"));
        }
    }
    Ok(())
}

/// Background writers: one task per connection writing `w<n>:<i>` keys
/// and overwriting a few shared ones, until stopped.
struct Writers {
    stop: Arc<AtomicBool>,
    ops: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(cons: &[MultiplexedConnection]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ops = Arc::new(AtomicU64::new(0));
        let tasks = cons
            .iter()
            .enumerate()
            .map(|(n, con)| {
                let (mut con, stop, ops) = (con.clone(), stop.clone(), ops.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let key = format!("w{n}:{i}");
                        let _: () = redis::pipe()
                            .cmd("SET")
                            .arg(&key)
                            .arg(i)
                            .ignore()
                            .cmd("SET")
                            .arg(format!("shared:{}", i % 7))
                            .arg(format!("{n}:{i}"))
                            .ignore()
                            .query_async(&mut con)
                            .await
                            .unwrap();
                        ops.fetch_add(1, Ordering::Relaxed);
                        i += 1;
                        if i.is_multiple_of(16) {
                            tokio::time::sleep(ms(5)).await;
                        }
                    }
                })
            })
            .collect();
        Self { stop, ops, tasks }
    }

    /// Waits until `n` more operations have been done.
    async fn progress(&self, n: u64) {
        let target = self.ops.load(Ordering::Relaxed) + n;
        let done = eventually_ok(CONVERGE, || {
            let ops = self.ops.load(Ordering::Relaxed);
            std::future::ready(if ops >= target {
                Ok(())
            } else {
                Err(format!("{ops} writes of {target}"))
            })
        })
        .await;
        done.expect("writers make progress");
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

// ---------------------------------------------------------------------------
// 1. Concurrent random writes converge.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_random_writes_on_every_node_converge() {
    let nodes = start_cluster(3).await;
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    let seed = fastrand::u64(..);
    eprintln!("random seed {seed}");
    const CLIENTS_PER_NODE: usize = 2;
    const OPS: usize = 300;
    const KEYS: u64 = 50;

    let mut tasks = Vec::new();
    for (n, node) in nodes.iter().enumerate() {
        for c in 0..CLIENTS_PER_NODE {
            let mut con = client(node).await;
            let mut rng = fastrand::Rng::with_seed(seed ^ ((n * 16 + c) as u64));
            tasks.push(tokio::spawn(async move {
                for i in 0..OPS {
                    let key = format!("k{}", rng.u64(..KEYS));
                    let cmd = match rng.u32(..100) {
                        0..=24 => {
                            let mut cmd = redis::cmd("SET");
                            cmd.arg(&key).arg(format!("v{n}.{c}.{i}"));
                            match rng.u32(..4) {
                                0 | 1 => {}
                                2 => {
                                    cmd.arg("EX").arg(1000 + rng.u32(..100));
                                }
                                // Some keys expire during the run.
                                _ => {
                                    cmd.arg("PX").arg(50 + rng.u32(..400));
                                }
                            }
                            cmd
                        }
                        25..=36 => {
                            let mut cmd = redis::cmd("DEL");
                            cmd.arg(&key);
                            cmd
                        }
                        37..=48 => {
                            let mut cmd = redis::cmd("EXPIRE");
                            cmd.arg(&key).arg(1000 + rng.u32(..100));
                            cmd
                        }
                        49..=64 => {
                            let mut cmd = redis::cmd("INCR");
                            cmd.arg(&key);
                            cmd
                        }
                        65..=76 => {
                            let mut cmd = redis::cmd("RENAME");
                            cmd.arg(&key).arg(format!("k{}", rng.u64(..KEYS)));
                            cmd
                        }
                        77..=98 => {
                            let mut cmd = redis::cmd("APPEND");
                            cmd.arg(&key).arg(format!("+{n}{c}"));
                            cmd
                        }
                        // No FLUSHALL near the end, so the final keyspace is
                        // rarely empty.
                        _ if i < OPS - 50 => redis::cmd("FLUSHALL"),
                        _ => {
                            let mut cmd = redis::cmd("SET");
                            cmd.arg(&key).arg(i);
                            cmd
                        }
                    };
                    // Errors (INCR of a non-integer, RENAME of a missing key)
                    // are part of the workload.
                    let _ = cmd.query_async::<redis::Value>(&mut con).await;
                    if i % 32 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let keys = assert_converged(&all).await;
    eprintln!("converged on {keys} keys");
}

// ---------------------------------------------------------------------------
// 2. A late joiner receives everything.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_receives_a_hundred_thousand_keys() {
    const KEYS: usize = 100_000;
    const BATCH: usize = 1000;
    let a = start_node_with(config("n1")).await;
    let mut con = client(&a).await;
    for start in (0..KEYS).step_by(BATCH * 10) {
        let mut pipe = redis::pipe();
        for batch in (start..(start + BATCH * 10).min(KEYS)).step_by(BATCH) {
            let mut mset = redis::cmd("MSET");
            for i in batch..batch + BATCH {
                mset.arg(format!("key:{i}")).arg(format!("value-{i}"));
            }
            pipe.add_command(mset).ignore();
        }
        let _: () = pipe.query_async(&mut con).await.unwrap();
    }
    // Some with an expiry too: expiry times travel with the entries.
    let _: () = redis::cmd("SET")
        .arg("key:0")
        .arg("volatile")
        .arg("EX")
        .arg(3600)
        .query_async(&mut con)
        .await
        .unwrap();
    let dbsize: usize = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
    assert_eq!(dbsize, KEYS);

    let b = start_node_with(joining("n2", &a)).await;
    let mut con_b = client(&b).await;
    let filled = eventually_ok(CONVERGE, || {
        let mut con_b = con_b.clone();
        async move {
            let n: usize = redis::cmd("DBSIZE").query_async(&mut con_b).await.unwrap();
            if n == KEYS {
                Ok(())
            } else {
                Err(format!("the joiner holds {n} keys"))
            }
        }
    })
    .await;
    filled.expect("the joiner receives every key");
    let cons = [con.clone(), con_b.clone()];
    let same = eventually_ok(CONVERGE, || async {
        same_contents(&[&a, &b])?;
        same_digests(&cons).await
    })
    .await;
    same.expect("the joiner holds exactly the seed's contents");
    assert_eq!(
        info_field(&mut con_b, "replication", "initial_sync_done")
            .await
            .as_deref(),
        Some("1")
    );
    let ttl: i64 = redis::cmd("PTTL")
        .arg("key:0")
        .query_async(&mut con_b)
        .await
        .unwrap();
    assert!(ttl > 3_000_000, "expiry replicated, PTTL {ttl}");
    assert_eq!(
        get(&mut con_b, "key:99999").await.as_deref(),
        Some("value-99999")
    );
}

// ---------------------------------------------------------------------------
// 3. Broken links and crashed nodes are repaired.

/// A UDP and TCP forwarder standing in for a node's peer address, so tests
/// can break the node's inbound TCP replication links while its membership
/// datagrams (and the node itself) keep running.
struct Proxy {
    blocked: Arc<AtomicBool>,
    /// While set, datagrams from this address are dropped, and while
    /// `blocked`, every datagram is.
    deaf_to: Arc<parking_lot::Mutex<Option<SocketAddr>>>,
    /// Cancelled to cut every connection forwarded so far.
    generation: Arc<parking_lot::Mutex<CancellationToken>>,
    /// Connections refused while blocked.
    refused: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Proxy {
    async fn start(listen: SocketAddr, target: SocketAddr) -> Self {
        let proxy = Self {
            blocked: Arc::new(AtomicBool::new(false)),
            deaf_to: Arc::new(parking_lot::Mutex::new(None)),
            generation: Arc::new(parking_lot::Mutex::new(CancellationToken::new())),
            refused: Arc::new(AtomicU64::new(0)),
            stop: CancellationToken::new(),
        };
        let udp_in = UdpSocket::bind(listen).await.unwrap();
        let udp_out = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let (stop, blocked, deaf_to) = (
            proxy.stop.clone(),
            proxy.blocked.clone(),
            proxy.deaf_to.clone(),
        );
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65536];
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    r = udp_in.recv_from(&mut buf) => if let Ok((n, from)) = r {
                        if blocked.load(Ordering::Acquire) || *deaf_to.lock() == Some(from) {
                            continue;
                        }
                        let _ = udp_out.send_to(&buf[..n], target).await;
                    },
                }
            }
        });
        let tcp = TcpListener::bind(listen).await.unwrap();
        let (stop, blocked, generation, refused) = (
            proxy.stop.clone(),
            proxy.blocked.clone(),
            proxy.generation.clone(),
            proxy.refused.clone(),
        );
        tokio::spawn(async move {
            loop {
                let mut inbound = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = tcp.accept() => match r {
                        Ok((s, _)) => s,
                        Err(_) => continue,
                    },
                };
                if blocked.load(Ordering::Acquire) {
                    refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let cut = generation.lock().clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = stop.cancelled() => {}
                        _ = cut.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        proxy
    }

    /// Closes every forwarded TCP connection and refuses new ones.
    fn cut(&self) {
        self.blocked.store(true, Ordering::Release);
        let old = std::mem::take(&mut *self.generation.lock());
        old.cancel();
    }

    fn heal(&self) {
        self.blocked.store(false, Ordering::Release);
        *self.deaf_to.lock() = None;
    }

    /// Drops the datagrams `node` sends to the node behind this proxy.
    fn ignore(&self, node: SocketAddr) {
        *self.deaf_to.lock() = Some(node);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_broken_mid_traffic_is_repaired_by_anti_entropy() {
    let a = start_node_with(config("n1")).await;
    let b = start_node_with(joining("n2", &a)).await;
    // n3 listens on 127.0.0.1 but advertises 127.0.0.2, where a proxy
    // forwards to it: cutting the proxy's TCP side breaks the links n1 and
    // n2 hold to n3 while n3 keeps running and stays a member.
    let front = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let c = start_node_with(Config {
        advertise_addr: Some(front),
        ..joining("n3", &a)
    })
    .await;
    assert_eq!(c.peer_addr().ip(), front);
    let behind = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), c.peer_addr().port());
    let proxy = Proxy::start(c.peer_addr(), behind).await;
    let all = [&a, &b, &c];
    wait_ready(&all).await;
    let mut cons = connect_all(&all).await;
    set(&mut cons[0], "doomed", "x").await;
    let replicated = eventually_ok(CONVERGE, || everywhere(&cons, "doomed", Some("x"))).await;
    replicated.expect("doomed reaches every node");

    let writers = Writers::start(&cons);
    writers.progress(100).await;
    proxy.cut();
    writers.progress(100).await;
    // Writes on n1 while n1 cannot push to n3: they reach n3 only by
    // anti-entropy.
    set(&mut cons[0], "during-cut", "1").await;
    let _: i64 = redis::cmd("DEL")
        .arg("doomed")
        .query_async(&mut cons[0])
        .await
        .unwrap();
    let repaired = eventually_ok(CONVERGE, || async {
        everywhere(&cons, "during-cut", Some("1")).await?;
        everywhere(&cons, "doomed", None).await
    })
    .await;
    repaired.expect("writes made while the link is cut reach n3 by anti-entropy");
    let retried = eventually_ok(CONVERGE, || {
        let n = proxy.refused.load(Ordering::Relaxed);
        std::future::ready(if n > 0 {
            Ok(())
        } else {
            Err("no reconnection attempt through the cut proxy".to_owned())
        })
    })
    .await;
    retried.expect("the peers notice the broken link and try to reconnect");

    proxy.heal();
    writers.progress(100).await;
    writers.stop().await;
    let keys = assert_converged(&all).await;
    assert!(keys > 200, "only {keys} keys");

    // The push path to n3 works again: WAIT sees both peers acknowledge.
    let acked = eventually_ok(CONVERGE, || {
        let mut con = cons[0].clone();
        async move {
            set(&mut con, "after-heal", "1").await;
            let n: i64 = redis::cmd("WAIT")
                .arg(2)
                .arg(1000)
                .query_async(&mut con)
                .await
                .unwrap();
            if n == 2 {
                Ok(())
            } else {
                Err(format!("WAIT 2 returned {n}"))
            }
        }
    })
    .await;
    acked.expect("n3 acknowledges pushed writes after the link heals");
    assert_eq!(get(&mut cons[2], "after-heal").await.as_deref(), Some("1"));
    assert_eq!(get(&mut cons[2], "doomed").await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_restarted_at_the_same_address_catches_up() {
    let mut nodes = start_cluster(3).await;
    let c = nodes.pop().unwrap();
    let peer_port = c.peer_addr().port();
    let cons = connect_all(&[&nodes[0], &nodes[1]]).await;
    let writers = Writers::start(&cons);
    writers.progress(100).await;
    c.kill().await;
    writers.progress(100).await;
    let mut con_a = cons[0].clone();
    set(&mut con_a, "while-down", "1").await;
    writers.progress(100).await;

    let c = restart_at(joining("n3", &nodes[0]), peer_port).await;
    assert_eq!(c.peer_addr().port(), peer_port);
    writers.progress(100).await;
    writers.stop().await;
    let all = [&nodes[0], &nodes[1], &c];
    wait_ready(&all).await;
    let keys = assert_converged(&all).await;
    assert!(keys > 400, "only {keys} keys");
    let mut con_c = client(&c).await;
    assert_eq!(get(&mut con_c, "while-down").await.as_deref(), Some("1"));
}

// ---------------------------------------------------------------------------
// 4. Deletes stay deleted; tombstones are collected.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_made_while_a_node_is_down_stays_deleted() {
    let mut nodes = start_cluster(3).await;
    let mut cons = connect_all(&nodes.iter().collect::<Vec<_>>()).await;
    set(&mut cons[0], "k", "v").await;
    set(&mut cons[1], "other", "o").await;
    let everywhere_k = eventually_ok(CONVERGE, || async {
        everywhere(&cons, "k", Some("v")).await?;
        everywhere(&cons, "other", Some("o")).await
    })
    .await;
    everywhere_k.expect("k reaches every node");

    let c = nodes.pop().unwrap();
    let peer_port = c.peer_addr().port();
    cons.pop();
    c.kill().await;
    let deleted: i64 = redis::cmd("DEL")
        .arg("k")
        .query_async(&mut cons[0])
        .await
        .unwrap();
    assert_eq!(deleted, 1);
    let c = restart_at(joining("n3", &nodes[0]), peer_port).await;
    let all = [&nodes[0], &nodes[1], &c];
    wait_ready(&all).await;
    cons.push(client(&c).await);
    // The restarted node has caught up (it holds `other`, and the same
    // contents as the others)...
    let caught_up = eventually_ok(CONVERGE, || everywhere(&cons, "other", Some("o"))).await;
    caught_up.expect("the restarted node catches up");
    assert_converged(&all).await;
    // ...and k is absent everywhere, also after more reconciliations.
    everywhere(&cons, "k", None).await.unwrap();
    let rounds = syncs_completed(&cons).await;
    let more = eventually_ok(CONVERGE, || more_syncs(&cons, &rounds, 3)).await;
    more.expect("anti-entropy keeps running");
    everywhere(&cons, "k", None).await.unwrap();
}

async fn syncs_completed(cons: &[MultiplexedConnection]) -> Vec<u64> {
    let mut out = Vec::new();
    for con in cons {
        out.push(info_u64(&mut con.clone(), "syncs_completed").await);
    }
    out
}

/// Ok once every node has completed `n` more reconciliations than `before`.
async fn more_syncs(cons: &[MultiplexedConnection], before: &[u64], n: u64) -> Result<(), String> {
    let now = syncs_completed(cons).await;
    if now
        .iter()
        .zip(before)
        .all(|(now, before)| *now >= before + n)
    {
        Ok(())
    } else {
        Err(format!("syncs_completed {before:?} -> {now:?}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_collected_once_every_node_has_reconciled() {
    let nodes = start_cluster(3).await;
    let mut cons = connect_all(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..20 {
        set(&mut cons[i % 3], &format!("t{i}"), "v").await;
    }
    let written = eventually_ok(CONVERGE, || everywhere(&cons, "t19", Some("v"))).await;
    written.expect("the keys reach every node");
    assert_converged(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..20 {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("t{i}"))
            .query_async(&mut cons[0])
            .await
            .unwrap();
    }
    let collected = eventually_ok(CONVERGE, || async {
        for (i, con) in cons.iter().enumerate() {
            let mut con = con.clone();
            let dbsize: u64 = redis::cmd("DBSIZE").query_async(&mut con).await.unwrap();
            let tombstones = info_u64(&mut con, "tombstones").await;
            if dbsize != 0 || tombstones != 0 {
                return Err(format!(
                    "n{}: dbsize {dbsize}, tombstones {tombstones}",
                    i + 1
                ));
            }
        }
        Ok(())
    })
    .await;
    collected.expect("deleted everywhere and every tombstone collected");
    for node in &nodes {
        assert_eq!(node.store().tombstone_len(), 0);
        assert!(node.store().dump().is_empty());
    }
    // Collecting the tombstones brought nothing back.
    let rounds = syncs_completed(&cons).await;
    let more = eventually_ok(CONVERGE, || more_syncs(&cons, &rounds, 3)).await;
    more.expect("anti-entropy keeps running");
    for con in &cons {
        let dbsize: u64 = redis::cmd("DBSIZE")
            .query_async(&mut con.clone())
            .await
            .unwrap();
        assert_eq!(dbsize, 0);
    }
}

/// Skew is a parameter, not a process-wide setting: three nodes in one
/// process whose wall clocks disagree by a minute converge, and a write
/// made after another was seen wins even on the node whose clock is
/// furthest behind (the HLC receive rule), a delete too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_whose_clocks_disagree_in_one_process_keep_causal_order() {
    let skews_ms = [30_000, 0, -30_000];
    let nodes = cluster::start_cluster_on(3, config, |i| TimeSource::System {
        offset_ms: skews_ms[i],
    })
    .await;
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    wait_ready(&all).await;
    let ahead = nodes[0].clock().wall_ms();
    let behind = nodes[2].clock().wall_ms();
    assert!(
        ahead > behind + 50_000,
        "{ahead} vs {behind}: the clocks disagree"
    );
    let mut cons = connect_all(&all).await;
    set(&mut cons[0], "k", "from the node ahead").await;
    let seen = eventually_ok(CONVERGE, || {
        everywhere(&cons, "k", Some("from the node ahead"))
    })
    .await;
    seen.expect("the first write reaches every node");
    // Written after it was seen: later in causal order, though this node's
    // clock reads a minute earlier.
    set(&mut cons[2], "k", "from the node behind").await;
    let won = eventually_ok(CONVERGE, || {
        everywhere(&cons, "k", Some("from the node behind"))
    })
    .await;
    won.expect("the causally later write wins everywhere");
    let _: i64 = redis::cmd("DEL")
        .arg("k")
        .query_async(&mut cons[2])
        .await
        .unwrap();
    let deleted = eventually_ok(CONVERGE, || everywhere(&cons, "k", None)).await;
    deleted.expect("the delete from the node behind wins too");
    assert_converged(&all).await;
}

// ---------------------------------------------------------------------------
// 5. WAIT.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_counts_the_peers_that_acknowledged_and_they_can_be_read() {
    let nodes = start_cluster(3).await;
    let mut cons = connect_all(&nodes.iter().collect::<Vec<_>>()).await;
    for i in 0..5 {
        let key = format!("waited{i}");
        set(&mut cons[0], &key, "yes").await;
        let acked: i64 = redis::cmd("WAIT")
            .arg(2)
            .arg(1000)
            .query_async(&mut cons[0])
            .await
            .unwrap();
        assert_eq!(acked, 2, "WAIT 2 1000 after write {i}");
        // No polling: WAIT guarantees both peers applied it.
        assert_eq!(get(&mut cons[1], &key).await.as_deref(), Some("yes"));
        assert_eq!(get(&mut cons[2], &key).await.as_deref(), Some("yes"));
    }
}

/// MSET stamps its keys with consecutive versions from one clock update:
/// a key named twice must still end with its last value on the peers too
/// (one version shared by both writes would let a peer keep the first).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mset_naming_a_key_twice_leaves_its_last_value_on_every_node() {
    let nodes = start_cluster(2).await;
    let refs: Vec<&NodeHandle> = nodes.iter().collect();
    let mut cons = connect_all(&refs).await;
    let _: () = redis::cmd("MSET")
        .arg("dup")
        .arg("first")
        .arg("other")
        .arg("x")
        .arg("dup")
        .arg("last")
        .query_async(&mut cons[0])
        .await
        .unwrap();
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut cons[0])
        .await
        .unwrap();
    assert_eq!(acked, 1);
    everywhere(&cons, "dup", Some("last")).await.unwrap();
    everywhere(&cons, "other", Some("x")).await.unwrap();
    assert_converged(&refs).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_on_a_single_node_returns_zero_at_once() {
    let node = start_node_with(config("solo")).await;
    let mut con = client(&node).await;
    set(&mut con, "k", "v").await;
    let n: i64 = tokio::time::timeout(
        Duration::from_secs(10),
        redis::cmd("WAIT").arg(0).arg(0).query_async(&mut con),
    )
    .await
    .expect("WAIT 0 0 does not block")
    .unwrap();
    assert_eq!(n, 0);
    // Asking for a peer that does not exist times out with 0.
    let n: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(50)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(n, 0);
}

// ---------------------------------------------------------------------------
// 6. FLUSHALL.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushall_empties_every_node_and_later_writes_survive() {
    let nodes = start_cluster(3).await;
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    let mut cons = connect_all(&all).await;
    for i in 0..30 {
        set(&mut cons[i % 3], &format!("old{i}"), "v").await;
    }
    let written = eventually_ok(CONVERGE, || async {
        for i in 0..30 {
            everywhere(&cons, &format!("old{i}"), Some("v")).await?;
        }
        Ok(())
    })
    .await;
    written.expect("the keys reach every node");

    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut cons[1])
        .await
        .unwrap();
    let emptied = eventually_ok(CONVERGE, || async {
        for (i, con) in cons.iter().enumerate() {
            let n: u64 = redis::cmd("DBSIZE")
                .query_async(&mut con.clone())
                .await
                .unwrap();
            if n != 0 {
                return Err(format!("n{} holds {n} keys", i + 1));
            }
        }
        Ok(())
    })
    .await;
    emptied.expect("FLUSHALL empties every node");
    assert_eq!(digest(&mut cons[0]).await, "0".repeat(40));

    for i in 0..30 {
        set(&mut cons[i % 3], &format!("new{i}"), "w").await;
    }
    let survived = eventually_ok(CONVERGE, || async {
        for i in 0..30 {
            everywhere(&cons, &format!("new{i}"), Some("w")).await?;
        }
        Ok(())
    })
    .await;
    survived.expect("writes after FLUSHALL reach every node");
    let rounds = syncs_completed(&cons).await;
    let more = eventually_ok(CONVERGE, || more_syncs(&cons, &rounds, 3)).await;
    more.expect("anti-entropy keeps running");
    assert_eq!(assert_converged(&all).await, 30);
    for i in 0..30 {
        everywhere(&cons, &format!("new{i}"), Some("w"))
            .await
            .unwrap();
        everywhere(&cons, &format!("old{i}"), None).await.unwrap();
    }
}

// ---------------------------------------------------------------------------
// 7. Expiry.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_set_with_px_is_replicated_with_its_ttl_and_expires_everywhere() {
    let nodes = start_cluster(3).await;
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    let mut cons = connect_all(&all).await;
    // 300 ms is short on a loaded machine: if the peer is read after the
    // key already expired, try again with a new key.
    let mut seen = None;
    for attempt in 0..5 {
        let key = format!("short{attempt}");
        let _: () = redis::cmd("SET")
            .arg(&key)
            .arg("v")
            .arg("PX")
            .arg(300)
            .query_async(&mut cons[0])
            .await
            .unwrap();
        let _: i64 = redis::cmd("WAIT")
            .arg(2)
            .arg(1000)
            .query_async(&mut cons[0])
            .await
            .unwrap();
        let pttl: i64 = redis::cmd("PTTL")
            .arg(&key)
            .query_async(&mut cons[1])
            .await
            .unwrap();
        if pttl > 0 {
            assert!(pttl <= 300, "PTTL {pttl} on the peer");
            seen = Some(key);
            break;
        }
    }
    let key = seen.expect("the key is seen on the peer with a PTTL > 0");
    let gone = eventually_ok(CONVERGE, || async {
        for (i, con) in cons.iter().enumerate() {
            let exists: i64 = redis::cmd("EXISTS")
                .arg(&key)
                .query_async(&mut con.clone())
                .await
                .unwrap();
            if exists != 0 {
                return Err(format!("n{} still has {key}", i + 1));
            }
        }
        for node in &nodes {
            if !node.store().is_empty() {
                return Err(format!("{} holds live entries", node.name()));
            }
        }
        Ok(())
    })
    .await;
    gone.expect("the key expires on every node");
    let mut con_c = cons[2].clone();
    assert_eq!(get(&mut con_c, &key).await, None);
}

// ---------------------------------------------------------------------------
// 8. Hostile input on the TCP peer port.

/// Sends `bytes` to the peer port (then, if `close_write`, ends our side)
/// and waits for the node to close the connection.
async fn send_bad(peer: SocketAddr, bytes: &[u8], close_write: bool) {
    let mut s = TcpStream::connect(peer).await.unwrap();
    // The node may close before reading everything: ignore write errors.
    let _ = s.write_all(bytes).await;
    if close_write {
        let _ = s.shutdown().await;
    }
    assert!(
        closed_by_server(&mut s, CONVERGE).await,
        "the node closes a connection that sent a bad frame"
    );
}

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn hello() -> Vec<u8> {
    wire::encode(Message::Hello {
        node_id: 42,
        incarnation: 1,
        hlc: 0,
    })
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_on_the_peer_port_close_the_connection_and_change_nothing() {
    // A small bulk limit makes the frame limit small (limit + 1 MiB).
    let small = |c: Config| Config {
        proto_max_bulk_len: 1 << 20,
        ..c
    };
    let a = start_node_with(small(config("n1"))).await;
    let b = start_node_with(small(joining("n2", &a))).await;
    wait_ready(&[&a, &b]).await;
    let mut cons = connect_all(&[&a, &b]).await;
    for i in 0..50 {
        set(&mut cons[i % 2], &format!("k{i}"), &format!("v{i}")).await;
    }
    let written = eventually_ok(CONVERGE, || everywhere(&cons, "k49", Some("v49"))).await;
    written.expect("the keys reach both nodes");
    assert_converged(&[&a, &b]).await;
    let before = live(&a);
    let peer = a.peer_addr();
    let frame_limit: u32 = (1 << 20) + (1 << 20);

    let mut rng = fastrand::Rng::with_seed(7);
    let mut garbage: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(300).collect();
    // Never protocol version 1 (varint 0x01), so it cannot be a Hello.
    garbage[0] = 0x55;
    let mut truncated_hello = hello();
    truncated_hello.truncate(truncated_hello.len() - 1);
    let other_version = postcard::to_allocvec(&Frame {
        version: 999,
        message: Message::Hello {
            node_id: 42,
            incarnation: 1,
            hlc: 0,
        },
    })
    .unwrap();
    let other_version_later = postcard::to_allocvec(&Frame {
        version: 999,
        message: Message::Ack { last_seq: 1 },
    })
    .unwrap();
    assert_ne!(PROTOCOL_VERSION, 999);
    let mut oversized = (frame_limit + 1).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 64]);
    let mut huge = u32::MAX.to_be_bytes().to_vec();
    huge.extend_from_slice(b"xyz");
    let valid_hello_then = |bad: &[u8]| {
        let mut v = framed(&hello());
        v.extend_from_slice(bad);
        v
    };

    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        (
            "a Redis command (its first bytes read as a huge length)",
            b"PING\r\n".to_vec(),
            false,
        ),
        ("random bytes in a frame", framed(&garbage), false),
        ("a length over the limit", oversized, false),
        ("a length of 4 GiB", huge, false),
        ("another protocol version", framed(&other_version), false),
        (
            "another protocol version after a Hello",
            valid_hello_then(&framed(&other_version_later)),
            false,
        ),
        (
            "a truncated message in a frame",
            framed(&truncated_hello),
            false,
        ),
        (
            "a cluster-key handshake (this node has no key)",
            framed(&[&b"KRLH\x01"[..], &[7u8; 32][..]].concat()),
            false,
        ),
        (
            "a message other than Hello first",
            framed(&wire::encode(Message::Ack { last_seq: 1 }).unwrap()),
            false,
        ),
    ];
    for (i, (what, bytes, close_write)) in cases.iter().enumerate() {
        send_bad(peer, bytes, *close_write).await;
        let expected_bad = i as u64 + 1;
        let counted = eventually_ok(CONVERGE, || {
            let mut con = cons[0].clone();
            async move {
                let n = info_u64(&mut con, "bad_frames").await;
                if n >= expected_bad {
                    Ok(())
                } else {
                    Err(format!("bad_frames {n} after {what}"))
                }
            }
        })
        .await;
        counted.expect("the bad frame is counted");
    }
    assert_eq!(live(&a), before, "the bad frames changed nothing");
    assert_converged(&[&a, &b]).await;

    // Replication still works both ways, push path included.
    set(&mut cons[0], "after", "a").await;
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(5000)
        .query_async(&mut cons[0])
        .await
        .unwrap();
    assert_eq!(acked, 1);
    assert_eq!(get(&mut cons[1], "after").await.as_deref(), Some("a"));
    set(&mut cons[1], "after-b", "b").await;
    let back = eventually_ok(CONVERGE, || everywhere(&cons, "after-b", Some("b"))).await;
    back.expect("replication from n2 still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_cut_off_mid_stream_are_counted_as_bad() {
    let a = start_node_with(Config {
        proto_max_bulk_len: 1 << 20,
        ..config("n1")
    })
    .await;
    let mut con = client(&a).await;
    set(&mut con, "k", "v").await;
    let before = live(&a);
    let peer = a.peer_addr();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half a length prefix", vec![0, 0]),
        ("a frame shorter than its length", {
            let mut v = framed(&hello());
            v.truncate(v.len() - 2);
            v
        }),
        ("a Hello, then half a frame", {
            let mut v = framed(&hello());
            v.extend_from_slice(&framed(&wire::encode(Message::Ack { last_seq: 1 }).unwrap())[..3]);
            v
        }),
    ];
    for (i, (what, bytes)) in cases.iter().enumerate() {
        send_bad(peer, bytes, true).await;
        let expected_bad = i as u64 + 1;
        let counted = eventually_ok(Duration::from_secs(5), || {
            let mut con = con.clone();
            async move {
                let n = info_u64(&mut con, "bad_frames").await;
                if n >= expected_bad {
                    Ok(())
                } else {
                    Err(format!("bad_frames {n} after {what}"))
                }
            }
        })
        .await;
        counted.expect("a frame cut off by the peer is counted in bad_frames");
    }
    assert_eq!(live(&a), before);
}

// ---------------------------------------------------------------------------
// Starting on the peer port (found while writing these tests).

/// With `peer_port: 0`, `Node::start` binds UDP on a port the OS picks and
/// then TCP on the same number without checking it is free for TCP: while
/// many TCP ports are in use (here: held listeners, in a test run: client
/// and link connections) the start fails with AddrInUse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_on_peer_port_zero_start_while_many_tcp_ports_are_taken() {
    let held: Vec<std::net::TcpListener> = (0..6000)
        .map_while(|_| std::net::TcpListener::bind("127.0.0.1:0").ok())
        .collect();
    assert!(held.len() > 1000, "only {} listeners", held.len());
    for i in 0..30 {
        let node = Node::start(Config::ephemeral())
            .await
            .unwrap_or_else(|e| panic!("start {i} on peer port 0: {e:?}"));
        node.kill().await;
    }
}

/// A start that fails after the membership task was spawned (here: the
/// peer port is free for UDP but taken for TCP) must not leave that task
/// running: it would keep the UDP port and join the cluster as a member
/// that never replicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_start_leaves_nothing_running() {
    let seed = start_node_with(config("seed")).await;
    let (taken, port) = loop {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            break (tcp, port);
        }
    };
    let failed = Node::start(Config {
        peer_port: port,
        ..joining("ghost", &seed)
    })
    .await;
    assert!(
        failed.is_err(),
        "the start fails: the port is taken for TCP"
    );
    drop(taken);
    let released = eventually_ok(Duration::from_secs(5), || {
        std::future::ready(match std::net::UdpSocket::bind(("127.0.0.1", port)) {
            Ok(_) => Ok(()),
            Err(e) => Err(format!("UDP port {port} still bound: {e}")),
        })
    })
    .await;
    let ghost: Vec<String> = seed
        .membership()
        .members()
        .iter()
        .filter(|m| !m.is_self)
        .map(|m| format!("{} {:?}", m.id.name, m.state))
        .collect();
    released.expect("the failed node released its UDP port");
    assert!(ghost.is_empty(), "the seed lists {ghost:?}");
}

// ---------------------------------------------------------------------------
// A node cut off for longer than --forget-after does not resurrect deletes.

/// n1..n3 each behind a proxy at 127.0.0.(k+1), so a node can be cut off
/// completely: its own proxy refuses everything, and the others' proxies
/// drop the membership datagrams it sends (its replication links go once
/// membership sees the others down). While n3 is cut off for longer than
/// `forget_after`, n1 and n2 forget it and collect a delete's tombstone
/// that n3 never saw; when n3 comes back it must discard its data and pull
/// instead of handing the deleted key back.
#[tokio::test]
async fn a_node_forgotten_by_the_cluster_does_not_bring_deleted_keys_back() {
    let forgetful = |name: &str| Config {
        forget_after: ms(2000),
        remove_down_after: ms(1000),
        ..config(name)
    };
    let mut nodes: Vec<NodeHandle> = Vec::new();
    let mut proxies = Vec::new();
    for k in 1..=3u8 {
        let front = IpAddr::V4(Ipv4Addr::new(127, 0, 0, k + 1));
        let mut cfg = forgetful(&format!("n{k}"));
        cfg.advertise_addr = Some(front);
        if let Some(seed) = nodes.first() {
            cfg.join = vec![seed.peer_addr().to_string()];
        }
        let node = start_node_with(cfg).await;
        let behind = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), node.peer_addr().port());
        proxies.push(Proxy::start(node.peer_addr(), behind).await);
        nodes.push(node);
    }
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    wait_ready(&all).await;
    let mut cons = connect_all(&all).await;
    set(&mut cons[0], "gone", "old").await;
    eventually_ok(CONVERGE, || everywhere(&cons, "gone", Some("old")))
        .await
        .expect("the key reaches every node");

    // Cut n3 off entirely.
    let n3_real = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), nodes[2].peer_addr().port());
    proxies[2].cut();
    proxies[0].ignore(n3_real);
    proxies[1].ignore(n3_real);
    let n3_name = nodes[2].name().to_owned();
    eventually_ok(CONVERGE, || {
        let forgotten = nodes[..2].iter().all(|n| {
            !n.membership()
                .members()
                .iter()
                .any(|m| m.id.name == n3_name)
        });
        std::future::ready(if forgotten {
            Ok(())
        } else {
            Err("n1 and n2 still list n3".to_owned())
        })
    })
    .await
    .expect("n1 and n2 remove n3");

    // Delete while n3 is away, and wait until n1 and n2 have collected the
    // tombstone: from now on nothing on them remembers the delete.
    let _: i64 = redis::cmd("DEL")
        .arg("gone")
        .query_async(&mut cons[0])
        .await
        .unwrap();
    eventually_ok(CONVERGE, || async {
        for con in &cons[..2] {
            let tombstones = info_u64(&mut con.clone(), "tombstones").await;
            if tombstones != 0 {
                return Err(format!("{tombstones} tombstones left"));
            }
        }
        Ok(())
    })
    .await
    .expect("n1 and n2 collect the tombstone once n3 is forgotten");
    assert_eq!(
        get(&mut cons[2], "gone").await.as_deref(),
        Some("old"),
        "n3 missed the delete"
    );

    // n3 comes back after more than forget_after.
    for proxy in &proxies {
        proxy.heal();
    }
    wait_ready(&all).await;
    eventually_ok(CONVERGE, || everywhere(&cons, "gone", None))
        .await
        .expect("the deleted key stays deleted everywhere once n3 is back");
    assert_converged(&all).await;
    for node in nodes {
        node.shutdown().await;
    }
}
