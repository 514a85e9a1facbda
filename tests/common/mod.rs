//! Helpers shared by the integration tests, once: nodes in-process on
//! free ports (here, and [`cluster`] for clusters), real processes
//! ([`process`]), real clients, and the waits.
//!
//! Time. A test of timing logic steps the node's clock instead of
//! sleeping ([`start_node_stepped`]: expiry in `commands.rs`, the idle
//! timeout in `security_clients.rs`), runs clocks that disagree in one
//! process ([`cluster::start_cluster_on`]), or drives a sans-IO core in
//! virtual time (the membership simulation, the anti-entropy session's
//! tests in `replication::session`). Waits here poll for a condition until
//! a deadline ([`eventually`], [`eventually_ok`]); they assert behaviour,
//! never that something took a given time.
//!
//! The real sleeps that remain, and why each needs real time:
//! - polling loops here ([`eventually`], [`eventually_ok`],
//!   [`restart_at`]'s retry) and in `binary.rs`, `fault/cluster.rs` and
//!   [`process::spawn_retrying`]: waiting for a real process or socket
//!   (an exit, a log line, a port the OS releases);
//! - `security_memory.rs`, the LRU access clock: the node is a separate
//!   process (memory is measured per process), whose clock a test cannot
//!   step;
//! - load and pacing: `replication.rs`'s writers, `security_clients.rs`'s
//!   slowloris and memory samplers, `security_memory.rs`'s slow sender,
//!   `security_peers.rs`'s memory sampler, `membership_processes.rs`'s
//!   observer, and the fault harness (`fault/scenario.rs`,
//!   `fault/workload.rs`): real traffic over real sockets to real
//!   processes, where what is tested is the system under that load;
//! - cluster tests over real UDP and TCP whose nodes need real time to
//!   probe and reconcile (`membership.rs`, `replication.rs`,
//!   `security_peers.rs`): a manual clock would freeze their protocol
//!   timers. The rules they end in (failure detection, tombstone
//!   collection) are also tested by stepping time, in the cores.
#![allow(dead_code)]

pub mod cluster;
pub mod process;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kriminodb::clock::{ManualTime, TimeSource};
use kriminodb::{Config, Node, NodeHandle};

/// The allocator the binary uses: in-process nodes measure memory
/// (`used_memory`, `--maxmemory`) from its statistics.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// A node named `name` on free ports, with fast membership and
/// anti-entropy timings spelled out, so cluster tests converge in well
/// under a second on an idle machine.
pub fn fast_config(name: &str) -> Config {
    let ms = Duration::from_millis;
    Config {
        name: Some(name.to_owned()),
        probe_period: ms(200),
        probe_rtt: ms(100),
        suspect_timeout: ms(1000),
        gossip_interval: ms(100),
        remove_down_after: ms(2000),
        sync_interval: ms(200),
        ..Config::ephemeral()
    }
}

/// A node on a manual clock that reads the real time now and then stands
/// still until the test advances it: expiry and timeouts are then tested
/// by stepping time, not by sleeping.
pub async fn start_node_stepped(config: Config) -> (NodeHandle, Arc<ManualTime>) {
    let (time, manual) = TimeSource::manual(wall_ms());
    let node = Node::start_with_time(config, time)
        .await
        .expect("node starts");
    (node, manual)
}

/// Starts a node on an OS-assigned port with default settings.
pub async fn start_node() -> NodeHandle {
    start_node_with(Config::ephemeral()).await
}

pub async fn start_node_with(config: Config) -> NodeHandle {
    Node::start(config).await.expect("node starts")
}

/// A multiplexed async connection from the `redis` crate.
pub async fn client(node: &NodeHandle) -> redis::aio::MultiplexedConnection {
    let url = format!("redis://{}/", node.client_addr());
    redis::Client::open(url)
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

/// A plain TCP connection for byte-level protocol tests.
pub async fn raw(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects")
}

/// The system's wall clock in unix ms, for crafting peer messages with a
/// current timestamp (nodes read time through their own clock).
pub fn wall_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Polls `check` until it returns true or `deadline` passes; returns the
/// last result so the caller asserts on behaviour, not on timing.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A multiplexed async connection to a node known only by its client
/// address (for example one running in another process).
pub async fn client_at(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    redis::Client::open(format!("redis://{addr}/"))
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

/// Like [`eventually`], for checks that explain themselves: polls `check`
/// until it returns `Ok` or `deadline` passes, and then returns the last
/// explanation so the failing assertion shows what was seen.
pub async fn eventually_ok<F, Fut>(deadline: Duration, mut check: F) -> Result<(), String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        let last = check().await;
        if last.is_ok() || tokio::time::Instant::now() >= until {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One member as `CLUSTER MEMBERS` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    pub name: String,
    pub node_id: String,
    pub peer_addr: SocketAddr,
    pub client_addr: SocketAddr,
    pub state: String,
    pub incarnation: i64,
    pub last_heard_ms: i64,
    pub myself: bool,
}

/// `CLUSTER MEMBERS`, parsed. Accepts the RESP2 (flat array) and RESP3 (map)
/// forms of each member; anything else fails the test.
pub async fn cluster_members(con: &mut redis::aio::MultiplexedConnection) -> Vec<MemberRow> {
    use std::collections::HashMap;

    let reply: Vec<redis::Value> = redis::cmd("CLUSTER")
        .arg("MEMBERS")
        .query_async(con)
        .await
        .expect("CLUSTER MEMBERS answers");
    reply
        .into_iter()
        .map(|member| {
            let fields: HashMap<String, redis::Value> = member
                .into_map_iter()
                .expect("each member is a map")
                .map(|(k, v)| (redis::from_redis_value(k).expect("string keys"), v))
                .collect();
            let text = |key: &str| -> String {
                redis::from_redis_value(fields.get(key).cloned().expect(key)).expect(key)
            };
            let int = |key: &str| -> i64 {
                match fields.get(key) {
                    Some(redis::Value::Int(i)) => *i,
                    other => panic!("{key} is not an integer: {other:?}"),
                }
            };
            MemberRow {
                name: text("name"),
                node_id: text("node_id"),
                peer_addr: text("peer_addr").parse().expect("peer_addr"),
                client_addr: text("client_addr").parse().expect("client_addr"),
                state: text("state"),
                incarnation: int("incarnation"),
                last_heard_ms: int("last_heard_ms"),
                myself: match int("myself") {
                    0 => false,
                    1 => true,
                    n => panic!("myself is {n}"),
                },
            }
        })
        .collect()
}

/// The value of `field` in INFO `section`, None when absent.
pub async fn info_field(
    con: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> Option<String> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(con)
        .await
        .expect("INFO answers");
    info.lines().find_map(|line| {
        line.strip_prefix(field)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::to_owned)
    })
}

/// Starts `config` on a plain client port that is free, for a node that
/// also has a TLS port (there `--port 0` disables the plain port instead
/// of picking one). A port found free may be taken before the node binds
/// it, so a refused bind is retried on another.
pub async fn start_on_a_free_port(config: Config) -> NodeHandle {
    let mut last = None;
    for _ in 0..20 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        match Node::start(Config {
            port,
            ..config.clone()
        })
        .await
        {
            Ok(node) => {
                assert_eq!(node.client_addr().port(), port, "the plain port asked for");
                return node;
            }
            Err(e @ kriminodb::StartError::Bind { .. }) => last = Some(e),
            Err(e) => panic!("node start: {e}"),
        }
    }
    panic!("no free port could be bound: {last:?}");
}

/// Starts a node at `peer_port` (a restart at the address a stopped node
/// had). The port was just released; retries briefly in case the OS is slow
/// about it.
pub async fn restart_at(mut config: Config, peer_port: u16) -> NodeHandle {
    config.peer_port = peer_port;
    let mut last = None;
    for _ in 0..100 {
        match Node::start(config.clone()).await {
            Ok(node) => return node,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("cannot restart at peer port {peer_port}: {last:?}");
}

/// True once the server has closed the connection (EOF or reset) within
/// `within`; false if the connection is still open then.
pub async fn closed_by_server<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    within: Duration,
) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let until = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(until, tokio::io::AsyncReadExt::read(stream, &mut buf)).await
        {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// INFO memory `used_memory`, in bytes.
pub async fn used_memory(con: &mut redis::aio::MultiplexedConnection) -> u64 {
    info_field(con, "memory", "used_memory")
        .await
        .and_then(|v| v.trim().parse().ok())
        .expect("INFO memory has used_memory")
}

// ---- Added for tests/replication.rs and tests/replication_processes.rs ----

/// Like [`client_at`], with a response timeout far above the redis crate's
/// 500 ms default: in-process nodes share the test's runtime threads, and a
/// node busy applying a large sync can delay a reply on a loaded machine
/// without anything being wrong.
pub async fn patient_client_at(addr: SocketAddr) -> redis::aio::MultiplexedConnection {
    let config = redis::AsyncConnectionConfig::new()
        .set_response_timeout(Some(Duration::from_secs(30)))
        .set_connection_timeout(Some(Duration::from_secs(30)));
    redis::Client::open(format!("redis://{addr}/"))
        .expect("valid url")
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .expect("connects")
}

// ---- End of additions for the replication tests ----

/// Reads `len` bytes, or fewer if the peer closes first (or the read
/// fails): the caller compares what came.
pub async fn read_exactly<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let mut filled = 0;
    while filled < len {
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            tokio::io::AsyncReadExt::read(stream, &mut out[filled..]),
        )
        .await
        .expect("reply arrives")
        .unwrap_or(0);
        if n == 0 {
            break;
        }
        filled += n;
    }
    out.truncate(filled);
    out
}

/// Sends `send` and asserts the reply is exactly `expected`.
pub async fn exchange(stream: &mut tokio::net::TcpStream, send: &[u8], expected: &[u8]) {
    tokio::io::AsyncWriteExt::write_all(stream, send)
        .await
        .expect("request sent");
    let got = read_exactly(stream, expected.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(expected),
        "reply to {:?}",
        String::from_utf8_lossy(send)
    );
}
