//! `--maxmemory` and hostile clients, against real `kriminodb` processes
//! (each node its own process, so its jemalloc figure is its own): the
//! exact OOM error under `noeviction`, what each eviction policy keeps,
//! eviction in a cluster (replicated as deletes, peers converge, peer
//! writes never refused), and thousands of idle connections plus a
//! slowloris client not starving a normal one.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::process::{self, Proc, Procs};
use common::{eventually_ok, info_field, patient_client_at as client_at};
use redis::aio::MultiplexedConnection as Con;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OOM: &str = "OOM command not allowed when used memory > 'maxmemory'.";
/// Values of 1000 bytes: with a short key, one 1 KiB jemalloc size class.
const VALUE_LEN: usize = 1000;
const CONVERGE: Duration = Duration::from_secs(30);

fn node(name: &str, flags: &[&str]) -> Proc {
    let mut cmd = process::node_command((0, 0));
    cmd.args(["--name", name]).args(flags);
    process::spawn(name, cmd)
}

async fn field(con: &Con, section: &str, name: &str) -> u64 {
    let value = info_field(&mut con.clone(), section, name).await;
    value
        .as_deref()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO {section} {name}: {value:?}"))
}

async fn evicted(con: &Con) -> u64 {
    field(con, "stats", "evicted_keys").await
}

/// Sets maxmemory to what the node uses now plus `headroom` bytes.
async fn limit_to_used_plus(con: &Con, headroom: u64) -> u64 {
    let max = common::used_memory(&mut con.clone()).await + headroom;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(max)
        .query_async(&mut con.clone())
        .await
        .unwrap();
    max
}

fn value(i: usize) -> Vec<u8> {
    let mut v = format!("{i}:").into_bytes();
    v.resize(VALUE_LEN, b'x');
    v
}

/// Writes `prefix{i}` for i in `range` (with a TTL in seconds, if given),
/// 100 per pipeline. Err with the first error reply.
async fn fill(
    con: &Con,
    prefix: &str,
    range: std::ops::Range<usize>,
    ttl: Option<u64>,
) -> Result<(), String> {
    let keys: Vec<usize> = range.collect();
    for chunk in keys.chunks(100) {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for &i in chunk {
            let cmd = pipe.cmd("SET").arg(format!("{prefix}{i}")).arg(value(i));
            if let Some(secs) = ttl {
                cmd.arg("EX").arg(secs);
            }
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut con.clone()).await.unwrap();
        if let Some(e) = replies.iter().find_map(|r| match r {
            redis::Value::ServerError(e) => Some(e),
            _ => None,
        }) {
            return Err(format!("{} {}", e.code(), e.details().unwrap_or_default()));
        }
    }
    Ok(())
}

/// How many of `prefix{0..n}` exist.
async fn existing(con: &Con, prefix: &str, n: usize) -> usize {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("EXISTS").arg(format!("{prefix}{i}"));
    }
    let found: Vec<u64> = pipe.query_async(&mut con.clone()).await.unwrap();
    found.iter().filter(|&&f| f == 1).count()
}

/// Reads every `prefix{0..n}` (a use, for LRU).
async fn read_all(con: &Con, prefix: &str, n: usize) {
    let mut pipe = redis::pipe();
    for i in 0..n {
        pipe.cmd("GET").arg(format!("{prefix}{i}")).ignore();
    }
    let _: () = pipe.query_async(&mut con.clone()).await.unwrap();
}

/// The first reply line to `command` on a raw connection.
async fn raw_line(stream: &mut tokio::net::TcpStream, command: &str) -> String {
    stream.write_all(command.as_bytes()).await.unwrap();
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while !line.ends_with(b"\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        line.push(byte[0]);
    }
    String::from_utf8(line).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn noeviction_refuses_growing_writes_with_redis_error_and_serves_the_rest() {
    let procs = Procs(vec![node("full", &["--maxmemory-policy", "noeviction"])]);
    let con = client_at(procs[0].client).await;
    let other = client_at(procs[0].client).await;
    let max = limit_to_used_plus(&con, 6 << 20).await;
    let config: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("maxmemory*")
        .query_async(&mut con.clone())
        .await
        .unwrap();
    assert_eq!(
        config,
        [
            "maxmemory",
            &max.to_string(),
            "maxmemory-policy",
            "noeviction",
            "maxmemory-samples",
            "5"
        ]
    );

    // 8 MiB of values cannot fit in 6 MiB of headroom (of which the
    // store's own structures take a few).
    let refused = fill(&con, "k", 0..8192, None).await;
    assert_eq!(refused, Err(OOM.to_owned()));
    let stored: usize = redis::cmd("DBSIZE")
        .query_async(&mut con.clone())
        .await
        .unwrap();
    assert!(stored > 1000, "only {stored} keys stored before OOM");
    assert_eq!(evicted(&con).await, 0);

    // The exact bytes on the wire, and what still runs: reads, deletes,
    // other clients; writes that cannot grow memory (EXPIRE).
    let mut raw = tokio::net::TcpStream::connect(procs[0].client)
        .await
        .unwrap();
    assert_eq!(
        raw_line(&mut raw, "SET x y\r\n").await,
        format!("-{OOM}\r\n")
    );
    assert_eq!(raw_line(&mut raw, "MULTI\r\n").await, "+OK\r\n");
    assert_eq!(
        raw_line(&mut raw, "SET x y\r\n").await,
        format!("-{OOM}\r\n")
    );
    assert_eq!(
        raw_line(&mut raw, "EXEC\r\n").await,
        "-EXECABORT Transaction discarded because of previous errors.\r\n"
    );
    let got: Vec<u8> = redis::cmd("GET")
        .arg("k0")
        .query_async(&mut other.clone())
        .await
        .unwrap();
    assert_eq!(got, value(0));
    let set: bool = redis::cmd("EXPIRE")
        .arg("k1")
        .arg(1000)
        .query_async(&mut other.clone())
        .await
        .unwrap();
    assert!(set);
    let pong: String = redis::cmd("PING")
        .query_async(&mut other.clone())
        .await
        .unwrap();
    assert_eq!(pong, "PONG");

    // Deleting makes room again.
    let mut del = redis::cmd("DEL");
    for i in 0..stored {
        del.arg(format!("k{i}"));
    }
    let _: u64 = del.query_async(&mut con.clone()).await.unwrap();
    eventually_ok(CONVERGE, || async {
        match fill(&con, "again", 0..10, None).await {
            Ok(()) => Ok(()),
            Err(e) => Err(format!("after DEL: {e}")),
        }
    })
    .await
    .unwrap();
}

/// A transaction queued under the limit and executed past it is refused
/// whole, with Redis 7.0's reply (checked against redis-server): none of
/// its writes is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_past_the_limit_is_refused_whole() {
    let procs = Procs(vec![node("tx", &["--maxmemory-policy", "noeviction"])]);
    let other = client_at(procs[0].client).await;
    let mut raw = tokio::net::TcpStream::connect(procs[0].client)
        .await
        .unwrap();
    assert_eq!(raw_line(&mut raw, "MULTI\r\n").await, "+OK\r\n");
    for cmd in ["DEL c\r\n", "SET a 1\r\n", "SET b 2\r\n"] {
        assert_eq!(raw_line(&mut raw, cmd).await, "+QUEUED\r\n");
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut other.clone())
        .await
        .unwrap();
    assert_eq!(
        raw_line(&mut raw, "EXEC\r\n").await,
        format!("-EXECABORT Transaction discarded because of: {OOM}\r\n")
    );
    let present: u64 = redis::cmd("EXISTS")
        .arg("a")
        .arg("b")
        .query_async(&mut other.clone())
        .await
        .unwrap();
    assert_eq!(present, 0, "no write of the refused EXEC is applied");
    assert_eq!(
        raw_line(&mut raw, "EXEC\r\n").await,
        "-ERR EXEC without MULTI\r\n",
        "the transaction is discarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allkeys_lru_keeps_recently_read_keys_and_evicts_cold_ones() {
    let procs = Procs(vec![node("lru", &["--maxmemory-policy", "allkeys-lru"])]);
    let con = client_at(procs[0].client).await;
    limit_to_used_plus(&con, 8 << 20).await;
    const HOT: usize = 100;
    const COLD: usize = 4000;
    fill(&con, "hot", 0..HOT, None).await.unwrap();
    fill(&con, "cold", 0..COLD, None).await.unwrap();
    assert_eq!(evicted(&con).await, 0, "the first 4 MiB fit in 8");
    // The access clock ticks every 100 ms: from now on every access is
    // later than every cold key's last one.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New keys push the node past its limit, while the hot keys are read
    // between every batch.
    let mut written = 0;
    while evicted(&con).await < 1000 {
        assert!(written < 20_000, "still no 1000 evictions");
        read_all(&con, "hot", HOT).await;
        fill(&con, "new", written..written + 100, None)
            .await
            .unwrap();
        written += 100;
    }
    let hot = existing(&con, "hot", HOT).await;
    let cold = existing(&con, "cold", COLD).await;
    let new = existing(&con, "new", written).await;
    println!("allkeys-lru: hot {hot}/{HOT}, cold {cold}/{COLD}, new {new}/{written}");
    // Random eviction would leave about as large a share of hot keys as of
    // cold ones (three quarters); LRU takes the cold ones first.
    assert!(hot >= HOT - 5, "hot keys evicted: {hot}/{HOT} left");
    assert!(cold <= COLD - 900, "cold keys kept: {cold}/{COLD}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allkeys_random_evicts_to_stay_under_the_limit() {
    let procs = Procs(vec![node(
        "random",
        &["--maxmemory-policy", "allkeys-random"],
    )]);
    let con = client_at(procs[0].client).await;
    // 8 MiB of headroom: room for the store's own structures once every
    // shard holds keys, and several thousand values.
    let max = limit_to_used_plus(&con, 8 << 20).await;
    // 16 MiB of writes into that: every one is accepted.
    fill(&con, "k", 0..16_384, None).await.unwrap();
    let evictions = evicted(&con).await;
    println!("allkeys-random: {evictions} evicted");
    assert!(evictions >= 8000, "{evictions} evictions");
    // Some keys of every age survive (LRU would have none of the oldest).
    let oldest = existing(&con, "k", 4096).await;
    assert!(oldest > 0, "no key of the first quarter left");
    // Within the limit once the gauge catches up with the evictions (the
    // slack covers jemalloc's thread caches and the next refresh).
    eventually_ok(CONVERGE, || async {
        let used = common::used_memory(&mut con.clone()).await;
        let evictions = evicted(&con).await;
        let keys = dbsize(&con).await;
        if used <= max + (1 << 20) && keys + evictions == 16_384 {
            Ok(())
        } else {
            Err(format!(
                "used {used} (maxmemory {max} + 1 MiB), {keys} keys + {evictions} evicted"
            ))
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn volatile_ttl_evicts_keys_with_a_ttl_soonest_first_then_refuses() {
    let procs = Procs(vec![node("ttl", &["--maxmemory-policy", "volatile-ttl"])]);
    let con = client_at(procs[0].client).await;
    limit_to_used_plus(&con, 6 << 20).await;
    const N: usize = 1000;
    fill(&con, "keep", 0..N, None).await.unwrap();
    fill(&con, "soon", 0..N, Some(10_000)).await.unwrap();
    fill(&con, "late", 0..N, Some(1_000_000)).await.unwrap();
    assert_eq!(evicted(&con).await, 0, "3 MiB fit in 6");

    let mut written = 0;
    while evicted(&con).await < 500 {
        assert!(written < 20_000, "still no 500 evictions");
        fill(&con, "new", written..written + 50, None)
            .await
            .unwrap();
        written += 50;
    }
    let soon = existing(&con, "soon", N).await;
    let late = existing(&con, "late", N).await;
    println!("volatile-ttl after 500+ evictions: soon {soon}/{N}, late {late}/{N}");
    // Exact TTL order leaves 500 or fewer of `soon` and all of `late`;
    // random among keys with a TTL would take about as many of each.
    assert!(late >= N - 50, "late keys evicted: {late}/{N} left");
    assert!(soon <= N - 450, "soon keys kept: {soon}/{N}");

    // Once no key has a TTL, writes are refused, and keys without one
    // were never touched.
    let refused = fill(&con, "more", 0..20_000, None).await;
    assert_eq!(refused, Err(OOM.to_owned()));
    assert_eq!(existing(&con, "soon", N).await, 0);
    assert_eq!(existing(&con, "late", N).await, 0);
    assert_eq!(existing(&con, "keep", N).await, N);
    assert_eq!(existing(&con, "new", written).await, written);
}

async fn dbsize(con: &Con) -> u64 {
    redis::cmd("DBSIZE")
        .query_async(&mut con.clone())
        .await
        .unwrap()
}

async fn digest(con: &Con) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query_async(&mut con.clone())
        .await
        .unwrap()
}

/// Fast membership timings for the two-node tests. Anti-entropy runs only
/// when a link starts: evictions must reach the peer by push, which the
/// periodic repair would otherwise cover up.
const TIMINGS: [&str; 12] = process::fast_timings("2s", "1h");

/// Node "limited" with `policy` and node "roomy" (no limit) joined to it,
/// linked and synced; returns their clients.
async fn pair(policy: &str) -> (Procs, Con, Con) {
    let mut flags = vec!["--maxmemory-policy", policy];
    flags.extend(TIMINGS);
    let limited = node("limited", &flags);
    let seed = limited.peer.to_string();
    let mut flags = vec!["--join", &seed];
    flags.extend(TIMINGS);
    let roomy = node("roomy", &flags);
    let procs = Procs(vec![limited, roomy]);
    let (a, b) = (
        client_at(procs[0].client).await,
        client_at(procs[1].client).await,
    );
    eventually_ok(CONVERGE, || async {
        for con in [&a, &b] {
            let peers = field(con, "replication", "peers_linked").await;
            let synced = field(con, "replication", "initial_sync_done").await;
            if (peers, synced) != (1, 1) {
                return Err(format!("peers_linked {peers}, initial_sync_done {synced}"));
            }
        }
        Ok(())
    })
    .await
    .unwrap();
    (procs, a, b)
}

/// Ok once both nodes hold the same contents, per DEBUG DIGEST and DBSIZE.
async fn converged(a: &Con, b: &Con) -> Result<(u64, String), String> {
    let (da, db) = (digest(a).await, digest(b).await);
    let (na, nb) = (dbsize(a).await, dbsize(b).await);
    if da == db && na == nb {
        Ok((na, da))
    } else {
        Err(format!("limited: {na} keys {da}; roomy: {nb} keys {db}"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_evictions_replicate_as_deletes_and_replicas_converge() {
    let (_procs, limited, roomy) = pair("allkeys-random").await;
    // Room for the store's fixed structures once every shard holds a key
    // (a few MiB once every shard holds keys) and a few thousand values.
    limit_to_used_plus(&limited, 6 << 20).await;
    // 8 MiB written on the node without a limit reach the limited one,
    // which applies them all, then evicts; its evictions reach the other.
    fill(&roomy, "k", 0..8192, None).await.unwrap();
    eventually_ok(CONVERGE, || async {
        let (keys, d) = converged(&limited, &roomy).await?;
        if keys < 8192 && evicted(&limited).await > 0 {
            Ok(())
        } else {
            Err(format!("{keys} keys on both ({d}), nothing evicted yet"))
        }
    })
    .await
    .unwrap();
    let evictions = evicted(&limited).await;
    let keys = dbsize(&roomy).await;
    println!(
        "cluster allkeys-random: {evictions} evicted on the limited node, {keys} keys on both"
    );
    // Evictions with no write after them (a lower limit, met by the
    // background cycle) reach the peer too: nothing else would carry them
    // until the next anti-entropy round, an hour away here.
    limit_to_used_plus(&limited, 0).await;
    let lower = common::used_memory(&mut limited.clone())
        .await
        .saturating_sub(1 << 20);
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(lower)
        .query_async(&mut limited.clone())
        .await
        .unwrap();
    eventually_ok(CONVERGE, || async {
        let (now, d) = converged(&limited, &roomy).await?;
        if now < keys && evicted(&limited).await > evictions {
            Ok(())
        } else {
            Err(format!("{now} keys on both ({d}), none evicted since"))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        evicted(&roomy).await,
        0,
        "evictions are counted where they happen"
    );
    assert_eq!(
        field(&limited, "stats", "replicated_writes_over_maxmemory").await,
        0,
        "an eviction policy makes room instead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_cluster_peer_writes_over_maxmemory_are_applied_and_counted() {
    let (_procs, limited, roomy) = pair("noeviction").await;
    limit_to_used_plus(&limited, 2 << 20).await;
    fill(&roomy, "k", 0..6144, None).await.unwrap();
    eventually_ok(CONVERGE, || async {
        match converged(&limited, &roomy).await? {
            (6144, _) => Ok(()),
            (n, _) => Err(format!("{n} keys on both, not every write applied")),
        }
    })
    .await
    .unwrap();
    let keys = dbsize(&limited).await;
    let over = field(&limited, "stats", "replicated_writes_over_maxmemory").await;
    println!("cluster noeviction: {keys} keys on both, {over} peer writes applied over maxmemory");
    assert!(over > 0);
    assert_eq!(evicted(&limited).await, 0);
    // Converged: nothing more arrives, so RESETSTAT's zero stays.
    let _: () = redis::cmd("CONFIG")
        .arg("RESETSTAT")
        .query_async(&mut limited.clone())
        .await
        .unwrap();
    assert_eq!(
        field(&limited, "stats", "replicated_writes_over_maxmemory").await,
        0
    );
    // Its own clients' writes are refused.
    assert_eq!(
        fill(&limited, "local", 0..1, None).await,
        Err(OOM.to_owned())
    );
}

/// VmRSS of a process, in bytes.
fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_and_a_slowloris_do_not_starve_a_normal_client() {
    const IDLE: usize = 5000;
    // The test holds 5000 sockets; the node raises its own limit.
    let limit = rlimit::increase_nofile_limit(u64::MAX).unwrap();
    assert!(limit >= IDLE as u64 + 100, "ulimit -n is {limit}");
    let procs = Procs(vec![node("target", &[])]);
    let addr = procs[0].client;
    let pid = procs[0].child.id();
    let rss_before = rss_of(pid);

    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    // One byte per 100 ms of a command that would take minutes to finish.
    let slowloris = tokio::spawn(async move {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let command = format!(
            "*3\r\n$3\r\nSET\r\n$4\r\nslow\r\n$1000\r\n{}\r\n",
            "s".repeat(1000)
        );
        let mut sent = 0;
        for byte in command.bytes() {
            if stream.write_all(&[byte]).await.is_err() {
                break;
            }
            sent += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        sent
    });

    let con = client_at(addr).await;
    eventually_ok(CONVERGE, || async {
        let clients = field(&con, "clients", "connected_clients").await;
        if clients as usize > IDLE {
            Ok(())
        } else {
            Err(format!("{clients} connected"))
        }
    })
    .await
    .unwrap();
    for i in 0..200 {
        let _: () = redis::cmd("SET")
            .arg(format!("normal{i}"))
            .arg(i)
            .query_async(&mut con.clone())
            .await
            .unwrap();
        let got: usize = redis::cmd("GET")
            .arg(format!("normal{i}"))
            .query_async(&mut con.clone())
            .await
            .unwrap();
        assert_eq!(got, i);
    }
    assert!(
        !slowloris.is_finished(),
        "the slowloris was cut off or finished"
    );
    let rss = rss_of(pid);
    println!(
        "node RSS: {} KiB before, {} KiB with {IDLE} idle connections and a slowloris",
        rss_before / 1024,
        rss / 1024
    );
    assert!(rss < 512 << 20, "RSS {rss} bytes");
    slowloris.abort();
    drop(idle);
}
