//! Replication lag between two kriminoDB nodes (behind `make bench-cluster`).
//!
//! ```text
//! cargo run --release --example replication_lag -- \
//!     --write 127.0.0.1:3000 --read 127.0.0.1:3001 [--rate 10000] [--seconds 10]
//! ```
//!
//! # Method
//!
//! One process, two connections, one monotonic clock (so no clock skew):
//!
//! - **Writer** (connection to node A): every millisecond it sends, as one
//!   pipeline, the writes that are due by then at `--rate` per second
//!   (`SET <prefix>:<i> <unix time in ns>`, keys unique to this run). The
//!   send time of each key is taken just before its pipeline is handed to
//!   the connection, its ack time when the pipeline's replies are back.
//!   Pipelines are not waited for before the next one is sent, so a slow
//!   reply does not lower the offered rate (no coordinated omission).
//! - **Poller** (connection to node B): in a tight loop it sends one
//!   `MGET` of every key written so far and not yet seen on B (oldest
//!   first, at most `--max-batch`), and waits for the reply before the next
//!   round. A key first returned non-nil by a round whose request left at
//!   `t_req` and whose reply arrived at `t_resp` became visible on B at some
//!   moment the server executed that MGET, which lies in `[t_req, t_resp]`,
//!   so its seen time is taken as the midpoint. The previous round (sent
//!   right after the one before it returned) did not see it, so the error of
//!   a seen time is at most one poll round trip; that round trip is
//!   reported (`poll_rtt_p50_us`, `poll_rtt_p99_us`) as the resolution. On
//!   loopback it is tens to a few hundred microseconds, well under 1 ms.
//!   When nothing is pending the poller sleeps until the writer issues the
//!   next keys, so it does not spin a core for nothing.
//!
//! Lag of a key = seen time on B − ack time on A (`lag_ack_*`: how long
//! after the client got `+OK` another node still served the old state;
//! negative when B had it before A's reply reached the client) and
//! seen time − send time (`lag_send_*`: includes A's own latency). After
//! the writing phase the poller keeps going for `--drain-seconds`; keys
//! still not seen then are reported as `missing` and count as infinitely
//! late in the percentiles.
//!
//! Output: a human summary on stderr and one `key=value` line on stdout
//! (microseconds), read by `scripts/bench_cluster.sh`. With `--dump FILE`,
//! also one line per key: index, send, ack and seen times in microseconds
//! since the start (0: never), to see when the slow keys were written.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::sync::Notify;

const USAGE: &str = "usage: replication_lag --write HOST:PORT --read HOST:PORT \
[--rate N (10000)] [--seconds S (10)] [--drain-seconds S (5)] \
[--prefix P (lag:<pid>)] [--max-batch N (4096)] [--dump FILE]";

struct Options {
    write: String,
    read: String,
    rate: u64,
    seconds: f64,
    drain_seconds: f64,
    prefix: String,
    max_batch: usize,
    dump: Option<String>,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        write: String::new(),
        read: String::new(),
        rate: 10_000,
        seconds: 10.0,
        drain_seconds: 5.0,
        prefix: format!("lag:{}", std::process::id()),
        max_batch: 4096,
        dump: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{flag} needs a value"));
        let bad = |e: &dyn std::fmt::Display| format!("{flag}: {e}");
        match flag.as_str() {
            "--write" => o.write = value()?,
            "--read" => o.read = value()?,
            "--rate" => o.rate = value()?.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = value()?.parse().map_err(|e| bad(&e))?,
            "--drain-seconds" => o.drain_seconds = value()?.parse().map_err(|e| bad(&e))?,
            "--prefix" => o.prefix = value()?,
            "--max-batch" => o.max_batch = value()?.parse().map_err(|e| bad(&e))?,
            "--dump" => o.dump = Some(value()?),
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if o.write.is_empty() || o.read.is_empty() {
        return Err(USAGE.to_string());
    }
    if o.rate == 0 || o.seconds <= 0.0 || o.max_batch == 0 {
        return Err("--rate, --seconds and --max-batch must be positive".to_string());
    }
    Ok(o)
}

/// What the writer and the poller share. Times are nanoseconds since
/// `start` plus one, so that 0 means "not yet".
struct Shared {
    start: Instant,
    prefix: String,
    /// Keys 0..issued have been handed to the write connection.
    issued: AtomicU64,
    writer_done: AtomicBool,
    issued_more: Notify,
    send_ns: Vec<AtomicU64>,
    ack_ns: Vec<AtomicU64>,
    write_errors: AtomicU64,
}

impl Shared {
    fn now(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64 + 1
    }

    fn key(&self, i: u64) -> String {
        format!("{}:{i}", self.prefix)
    }
}

async fn connect(addr: &str) -> redis::RedisResult<MultiplexedConnection> {
    let client = redis::Client::open(format!("redis://{addr}/"))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(30)));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

async fn writer(shared: Arc<Shared>, con: MultiplexedConnection, rate: u64, total: u64) {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut inflight = tokio::task::JoinSet::new();
    let mut issued = 0u64;
    let begin = Instant::now();
    while issued < total {
        tick.tick().await;
        let due = ((begin.elapsed().as_secs_f64() * rate as f64) as u64).min(total);
        if due <= issued {
            continue;
        }
        let mut pipe = redis::pipe();
        let unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        for i in issued..due {
            pipe.cmd("SET")
                .arg(shared.key(i))
                .arg(unix_ns.to_string())
                .ignore();
        }
        let sent = shared.now();
        for i in issued..due {
            shared.send_ns[i as usize].store(sent, Ordering::Relaxed);
        }
        let range = issued..due;
        issued = due;
        shared.issued.store(issued, Ordering::Release);
        shared.issued_more.notify_one();
        let (shared, mut con) = (shared.clone(), con.clone());
        inflight.spawn(async move {
            match pipe.query_async::<()>(&mut con).await {
                Ok(()) => {
                    let acked = shared.now();
                    for i in range {
                        shared.ack_ns[i as usize].store(acked, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    if shared.write_errors.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("replication_lag: write failed: {e}");
                    }
                }
            }
        });
        // Reap finished pipelines so the set stays small.
        while inflight.try_join_next().is_some() {}
    }
    while inflight.join_next().await.is_some() {}
    shared.writer_done.store(true, Ordering::Release);
    shared.issued_more.notify_one();
}

struct PollResult {
    seen_ns: Vec<u64>,
    rtt_ns: Vec<u64>,
    errors: u64,
}

async fn poller(
    shared: Arc<Shared>,
    mut con: MultiplexedConnection,
    max_batch: usize,
    drain: Duration,
) -> PollResult {
    let total = shared.send_ns.len();
    let mut seen_ns = vec![0u64; total];
    let mut rtt_ns = Vec::new();
    let mut unseen: Vec<u64> = Vec::new();
    let mut known = 0u64; // keys 0..known are in `unseen` or seen
    let mut drain_deadline: Option<Instant> = None;
    let mut errors = 0u64;
    loop {
        let issued = shared.issued.load(Ordering::Acquire);
        unseen.extend(known..issued);
        known = issued;
        if shared.writer_done.load(Ordering::Acquire)
            && known == shared.issued.load(Ordering::Acquire)
        {
            let deadline = *drain_deadline.get_or_insert_with(|| Instant::now() + drain);
            if unseen.is_empty() || Instant::now() >= deadline {
                break;
            }
        }
        if unseen.is_empty() {
            // Nothing pending: wait for the writer (with a bound, in case
            // a notification raced with the check above).
            let _ =
                tokio::time::timeout(Duration::from_millis(5), shared.issued_more.notified()).await;
            continue;
        }
        let batch = &unseen[..unseen.len().min(max_batch)];
        let mut mget = redis::cmd("MGET");
        for &i in batch {
            mget.arg(shared.key(i));
        }
        let t_req = shared.now();
        let reply: redis::RedisResult<Vec<Option<Vec<u8>>>> = mget.query_async(&mut con).await;
        let t_resp = shared.now();
        let values = match reply {
            Ok(v) if v.len() == batch.len() => v,
            Ok(_) | Err(_) => {
                errors += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
                continue;
            }
        };
        rtt_ns.push(t_resp - t_req);
        let at = t_req + (t_resp - t_req) / 2;
        let mut still = Vec::with_capacity(unseen.len());
        for (&i, v) in batch.iter().zip(&values) {
            if v.is_some() {
                seen_ns[i as usize] = at;
            } else {
                still.push(i);
            }
        }
        still.extend_from_slice(&unseen[batch.len()..]);
        unseen = still;
    }
    PollResult {
        seen_ns,
        rtt_ns,
        errors,
    }
}

/// Nearest-rank percentile of sorted values (`None` = never seen = +inf).
fn pct(sorted: &[Option<i64>], p: f64) -> Option<i64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn us(v: Option<i64>) -> String {
    v.map_or_else(
        || "inf".to_string(),
        |ns| format!("{:.1}", ns as f64 / 1000.0),
    )
}

/// Sorted lags (ns) from `from[i]` to `seen[i]`; `None` sorts last.
fn lags(from: &[AtomicU64], seen: &[u64]) -> Vec<Option<i64>> {
    let mut v: Vec<Option<i64>> = from
        .iter()
        .zip(seen)
        .map(|(f, &s)| {
            let f = f.load(Ordering::Relaxed);
            (s != 0 && f != 0).then(|| s as i64 - f as i64)
        })
        .collect();
    v.sort_by_key(|x| x.map_or((1, 0), |ns| (0, ns)));
    v
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let o = match parse_args() {
        Ok(o) => o,
        Err(msg) => {
            eprintln!("{msg}");
            std::process::exit(2);
        }
    };
    let total = (o.rate as f64 * o.seconds).round() as u64;
    let (wcon, rcon) = match tokio::try_join!(connect(&o.write), connect(&o.read)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("replication_lag: cannot connect: {e}");
            std::process::exit(1);
        }
    };
    let shared = Arc::new(Shared {
        start: Instant::now(),
        prefix: o.prefix.clone(),
        issued: AtomicU64::new(0),
        writer_done: AtomicBool::new(false),
        issued_more: Notify::new(),
        send_ns: (0..total).map(|_| AtomicU64::new(0)).collect(),
        ack_ns: (0..total).map(|_| AtomicU64::new(0)).collect(),
        write_errors: AtomicU64::new(0),
    });
    let drain = Duration::from_secs_f64(o.drain_seconds);
    let poll = tokio::spawn(poller(shared.clone(), rcon, o.max_batch, drain));
    let began = Instant::now();
    writer(shared.clone(), wcon, o.rate, total).await;
    let write_secs = began.elapsed().as_secs_f64();
    let result = poll.await.unwrap();

    let seen = result.seen_ns.iter().filter(|&&s| s != 0).count() as u64;
    let acked = shared
        .ack_ns
        .iter()
        .filter(|a| a.load(Ordering::Relaxed) != 0)
        .count() as u64;
    let lag_ack = lags(&shared.ack_ns, &result.seen_ns);
    let lag_send = lags(&shared.send_ns, &result.seen_ns);
    let mut write_lat: Vec<Option<i64>> = shared
        .send_ns
        .iter()
        .zip(&shared.ack_ns)
        .filter_map(|(s, a)| {
            let (s, a) = (s.load(Ordering::Relaxed), a.load(Ordering::Relaxed));
            (a != 0).then(|| Some(a as i64 - s as i64))
        })
        .collect();
    write_lat.sort();
    let mut rtt: Vec<Option<i64>> = result.rtt_ns.iter().map(|&r| Some(r as i64)).collect();
    rtt.sort();

    let fields = [
        ("keys", total.to_string()),
        ("acked", acked.to_string()),
        ("seen", seen.to_string()),
        ("missing", (total - seen).to_string()),
        ("rate", format!("{:.0}", total as f64 / write_secs)),
        ("lag_ack_p50_us", us(pct(&lag_ack, 50.0))),
        ("lag_ack_p99_us", us(pct(&lag_ack, 99.0))),
        ("lag_ack_max_us", us(pct(&lag_ack, 100.0))),
        ("lag_send_p50_us", us(pct(&lag_send, 50.0))),
        ("lag_send_p99_us", us(pct(&lag_send, 99.0))),
        ("lag_send_max_us", us(pct(&lag_send, 100.0))),
        ("write_p50_us", us(pct(&write_lat, 50.0))),
        ("write_p99_us", us(pct(&write_lat, 99.0))),
        ("poll_rounds", rtt.len().to_string()),
        ("poll_rtt_p50_us", us(pct(&rtt, 50.0))),
        ("poll_rtt_p99_us", us(pct(&rtt, 99.0))),
        (
            "write_errors",
            shared.write_errors.load(Ordering::Relaxed).to_string(),
        ),
        ("poll_errors", result.errors.to_string()),
    ];
    eprintln!(
        "replication_lag: {total} keys written to {} at {}/s, read back from {}",
        o.write, o.rate, o.read
    );
    for (k, v) in &fields {
        eprintln!("  {k:>16} {v}");
    }
    if let Some(path) = &o.dump {
        let us = |ns: u64| if ns == 0 { 0 } else { ns / 1000 };
        let mut out = String::new();
        for (i, seen) in result.seen_ns.iter().enumerate() {
            let send = shared.send_ns[i].load(Ordering::Relaxed);
            let ack = shared.ack_ns[i].load(Ordering::Relaxed);
            out.push_str(&format!("{i} {} {} {}\n", us(send), us(ack), us(*seen)));
        }
        if let Err(e) = std::fs::write(path, out) {
            eprintln!("replication_lag: cannot write {path}: {e}");
        }
    }
    let line: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
    if seen < total || acked < total {
        std::process::exit(3);
    }
}
