//! The named scenarios and the run of one: start the cluster, run the
//! workload through the scenario's faults, heal, wait for convergence, dump
//! every node and check the history.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::patient_client_at;

use super::checker::{self, Dump, Report, Stored};
use super::cluster::{self, Cluster, FORM};
use super::history::History;
use super::netns::NetFaults;
use super::workload::{Client, Workload};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// One node's link to the bridge goes down (peers and clients lose it).
    Isolate,
    /// Majority and minority cannot reach each other; clients reach both.
    Split,
    /// Packets from one node never reach another; the reverse direction works.
    OneWay,
    /// Two sides that cannot see each other, and one node that sees both.
    Bridge,
    /// 10–30 % of the peer packets (TCP and UDP) are dropped on every link.
    Loss,
    /// kill -9 of a node and a new empty process at its address, repeatedly.
    Kill,
    /// SIGSTOP of a node for 3 s, then SIGCONT.
    Stop,
    /// One node's clock 5 s ahead, another's 5 s behind, for the whole run.
    Skew,
    /// Every node in turn is stopped (SIGTERM) and started again, each time
    /// after the previous one has caught up.
    Rolling,
    /// A seeded random sequence of the faults above.
    Random,
}

impl Scenario {
    pub const ALL: [Scenario; 10] = [
        Scenario::Isolate,
        Scenario::Split,
        Scenario::OneWay,
        Scenario::Bridge,
        Scenario::Loss,
        Scenario::Kill,
        Scenario::Stop,
        Scenario::Skew,
        Scenario::Rolling,
        Scenario::Random,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Scenario::Isolate => "isolate",
            Scenario::Split => "split",
            Scenario::OneWay => "one-way",
            Scenario::Bridge => "bridge",
            Scenario::Loss => "loss",
            Scenario::Kill => "kill",
            Scenario::Stop => "stop",
            Scenario::Skew => "skew",
            Scenario::Rolling => "rolling",
            Scenario::Random => "random",
        }
    }

    pub fn parse(name: &str) -> Option<Scenario> {
        Scenario::ALL.into_iter().find(|s| s.name() == name)
    }
}

#[derive(Debug, Clone)]
pub struct Params {
    pub scenario: Scenario,
    pub nodes: usize,
    /// Length of the fault phase.
    pub fault_time: Duration,
    pub seed: u64,
    pub bin: PathBuf,
    pub keep_logs: bool,
}

/// What must happen, with generous deadlines: these bound liveness, they are
/// not performance targets.
const CONVERGE: Duration = Duration::from_secs(60);
/// Workload before the faults start and after they are healed.
const WARMUP: Duration = Duration::from_millis(1000);
const AFTER_HEAL: Duration = Duration::from_millis(1000);

/// Runs one scenario; returns its report (violations included, the caller
/// decides to fail).
pub fn run(p: &Params) -> Report {
    assert!((3..=5).contains(&p.nodes), "3 to 5 nodes, not {}", p.nodes);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_async(p))
}

async fn run_async(p: &Params) -> Report {
    let history = Arc::new(History::new());
    let mut offsets = vec![0i64; p.nodes];
    if p.scenario == Scenario::Skew {
        offsets[0] = 5000;
        offsets[1] = -5000;
    }
    let log_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/fault-logs")
        .join(format!(
            "{}-seed{}-pid{}-{}",
            p.scenario.name(),
            p.seed,
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis()
        ));
    let _ = std::fs::remove_dir_all(&log_dir);
    let mut c = blocking(|| Cluster::start(p.nodes, offsets, &p.bin, &log_dir, history.clone()));
    // From here on a panic (a failed deadline) must keep the logs too.
    let guard = KeepLogsOnPanic(log_dir.clone());
    let addrs = c.client_addrs();
    wait_linked(&addrs, "the cluster forms").await;

    let workload = Workload::start(history.clone(), &addrs, p.seed);
    tokio::time::sleep(WARMUP).await;
    let mut rng = fastrand::Rng::with_seed(p.seed);
    faults(&mut c, p, &mut rng, &addrs).await;
    blocking(|| c.heal_all());
    // Requests sent to a cut-off node may still land after the heal (see
    // `late_horizon_ms`); "unknown" operations count as executed up to then.
    let settle_ms = history.now_ms().max(c.late_horizon_ms());
    tokio::time::sleep(AFTER_HEAL).await;
    workload.stop().await;
    let quiet = Instant::now();

    let mut report = Report {
        scenario: p.scenario.name().to_string(),
        seed: p.seed,
        ..Report::default()
    };
    // Convergence time: from the last write (after the heal) to every node
    // reporting the same digest.
    match converge(&addrs).await {
        Ok(()) => report.convergence_ms = quiet.elapsed().as_secs_f64() * 1000.0,
        Err(e) => report.violations.push(format!(
            "no convergence within {CONVERGE:?} of the heal: {e}"
        )),
    }
    // Wait until every TTL key has expired on every node's clock, then for
    // the (expiry-driven) digests to agree again, then dump.
    let ops = history.ops();
    let ttl_until = ops
        .iter()
        .filter_map(|o| checker::ttl_deadline_ms(o, &c.offsets, settle_ms))
        .fold(settle_ms, f64::max);
    let now = history.now_ms();
    if ttl_until > now {
        tokio::time::sleep(Duration::from_millis((ttl_until - now) as u64)).await;
    }
    if let Err(e) = converge(&addrs).await {
        report
            .violations
            .push(format!("no convergence after the TTLs ran out: {e}"));
    }
    let mut dumps = Vec::new();
    for &a in &addrs {
        dumps.push(dump(a).await);
    }
    checker::check(&mut report, p.nodes, &ops, &history.events(), &dumps);
    let failed = !report.violations.is_empty();
    if failed {
        // The evidence, next to the node logs: every violation, every fault
        // event and the whole history.
        let mut text = report.summary_all();
        for e in history.events() {
            text.push_str(&format!(
                "\nevent {:>9.1}ms n{:?} {:?}",
                e.at_ms, e.node, e.kind
            ));
        }
        for o in &ops {
            text.push_str(&format!(
                "\nop n{} {} {:?} {:.1}..{:.1}ms {:?}",
                o.node, o.key, o.action, o.invoked_ms, o.completed_ms, o.outcome
            ));
        }
        let _ = std::fs::write(log_dir.join("report.txt"), text);
    }
    drop(guard);
    c.finish_logs(failed, p.keep_logs);
    drop(c);
    report
}

/// Leaves a note where the logs are when a deadline fails the run.
struct KeepLogsOnPanic(PathBuf);

impl Drop for KeepLogsOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("node logs kept in {}", self.0.display());
        }
    }
}

/// The harness's own shell-outs (ip, nft, kill, waiting for a node's log
/// line) are synchronous; run them without stalling the workload's tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

async fn wait_linked(addrs: &[SocketAddr], what: &str) {
    let until = Instant::now() + FORM;
    for (i, &a) in addrs.iter().enumerate() {
        let mut client = Client::new(a);
        loop {
            match cluster::linked(&mut client, addrs.len()).await {
                Ok(()) => break,
                Err(e) => assert!(
                    Instant::now() < until,
                    "{what}: node {i} not linked within {FORM:?}: {e}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// The fault phase of each scenario.
async fn faults(c: &mut Cluster, p: &Params, rng: &mut fastrand::Rng, addrs: &[SocketAddr]) {
    let n = p.nodes;
    let hold = p.fault_time;
    match p.scenario {
        Scenario::Skew => tokio::time::sleep(hold).await,
        Scenario::Rolling => {
            for i in 0..n {
                blocking(|| c.terminate(i));
                tokio::time::sleep(Duration::from_millis(300)).await;
                blocking(|| c.spawn(i));
                wait_linked(addrs, &format!("rolling restart of node {i}")).await;
            }
        }
        Scenario::Random => {
            let end = Instant::now() + hold;
            while Instant::now() < end {
                // The first seven of ALL: the faults that end on their own
                // (skew, rolling restarts and the mix itself do not mix).
                let kind = Scenario::ALL[rng.usize(0..7)];
                let t = Duration::from_millis(rng.u64(800..=2500));
                one_fault(c, kind, n, rng, t).await;
                tokio::time::sleep(Duration::from_millis(rng.u64(300..=1000))).await;
            }
        }
        Scenario::Kill => {
            // Kill, keep it down 1.5 s, restart, let it settle; again until
            // the phase is over (at least once).
            let end = Instant::now() + hold;
            loop {
                one_fault(c, Scenario::Kill, n, rng, Duration::from_millis(1500)).await;
                tokio::time::sleep(Duration::from_millis(1000)).await;
                if Instant::now() >= end {
                    break;
                }
            }
        }
        Scenario::Stop => {
            let t = Duration::from_secs(3);
            one_fault(c, Scenario::Stop, n, rng, t).await;
            tokio::time::sleep(hold.saturating_sub(t)).await;
        }
        other => one_fault(c, other, n, rng, hold).await,
    }
}

/// Applies one fault, holds it for `t`, and heals it.
async fn one_fault(
    c: &mut Cluster,
    kind: Scenario,
    n: usize,
    rng: &mut fastrand::Rng,
    t: Duration,
) {
    let victim = rng.usize(0..n);
    let mut f = NetFaults::default();
    let what;
    match kind {
        Scenario::Isolate => {
            f.down.insert(victim);
            what = format!("isolate n{victim}");
        }
        Scenario::Split => {
            // The minority is floor(n/2) nodes, picked at random.
            let mut order: Vec<usize> = (0..n).collect();
            rng.shuffle(&mut order);
            let (minority, majority) = order.split_at(n / 2);
            f.split(majority, minority);
            what = format!("split {majority:?} | {minority:?}");
        }
        Scenario::OneWay => {
            let to = (victim + 1 + rng.usize(0..n - 1)) % n;
            f.blocked.insert((victim, to));
            what = format!("one-way n{victim} -/-> n{to}");
        }
        Scenario::Bridge => {
            let others: Vec<usize> = (0..n).filter(|&i| i != victim).collect();
            let (a, b) = others.split_at(others.len() / 2);
            f.split(a, b);
            what = format!("bridge n{victim} between {a:?} and {b:?}");
        }
        Scenario::Loss => {
            f.loss_percent = rng.u8(10..=30);
            what = format!("loss {}%", f.loss_percent);
        }
        Scenario::Kill => {
            blocking(|| c.kill9(victim));
            tokio::time::sleep(t).await;
            blocking(|| c.spawn(victim));
            return;
        }
        Scenario::Stop => {
            blocking(|| c.sigstop(victim));
            tokio::time::sleep(t).await;
            blocking(|| c.sigcont(victim));
            return;
        }
        other => unreachable!("{other:?} is not a single fault"),
    }
    blocking(|| c.set_faults(f, &what));
    tokio::time::sleep(t).await;
    blocking(|| c.set_faults(NetFaults::default(), "heal network"));
}

/// Waits until every node answers DEBUG DIGEST with the same digest.
async fn converge(addrs: &[SocketAddr]) -> Result<(), String> {
    let until = Instant::now() + CONVERGE;
    let mut clients: Vec<Client> = addrs.iter().map(|&a| Client::new(a)).collect();
    loop {
        let mut seen = Vec::new();
        for c in &mut clients {
            seen.push(
                c.query::<String>(redis::cmd("DEBUG").arg("DIGEST"))
                    .await
                    .unwrap_or_else(|e| format!("error: {e}")),
            );
        }
        if !seen[0].starts_with("error") && seen.iter().all(|d| *d == seen[0]) {
            return Ok(());
        }
        if Instant::now() >= until {
            return Err(format!("digests per node: {seen:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every key of one node with its value, PEXPIRETIME and version (SCAN,
/// then GET, PEXPIRETIME and DEBUG VERSION pipelined). A key that expires
/// between SCAN and GET is left out, as it would be by a reader.
async fn dump(addr: SocketAddr) -> Dump {
    let mut con = patient_client_at(addr).await;
    let mut keys = Vec::new();
    let mut cursor: u64 = 0;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut con)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            break;
        }
        cursor = next;
    }
    keys.sort();
    keys.dedup();
    let mut out = BTreeMap::new();
    for chunk in keys.chunks(500) {
        let mut types = redis::pipe();
        for k in chunk {
            types.cmd("TYPE").arg(k);
        }
        let types: Vec<String> = types.query_async(&mut con).await.unwrap();
        let mut pipe = redis::pipe();
        for (k, t) in chunk.iter().zip(&types) {
            let read = match t.as_str() {
                "hash" => "HGETALL",
                "set" => "SMEMBERS",
                // "none" (expired since the SCAN) reads as nil too.
                _ => "GET",
            };
            pipe.cmd(read).arg(k).cmd("PEXPIRETIME").arg(k);
            pipe.cmd("DEBUG").arg("VERSION").arg(k);
        }
        let replies: Vec<redis::Value> = pipe.query_async(&mut con).await.unwrap();
        for ((k, t), reply) in chunk.iter().zip(&types).zip(replies.chunks(3)) {
            let expiry: i64 = redis::from_redis_value(reply[1].clone()).unwrap();
            let version: Option<(String, String)> =
                redis::from_redis_value(reply[2].clone()).unwrap();
            let Some(version) = version.map(|(hlc, node)| {
                (
                    hlc.parse().expect("DEBUG VERSION: decimal HLC"),
                    node.parse().expect("DEBUG VERSION: decimal node id"),
                )
            }) else {
                continue;
            };
            let stored = |value| Stored {
                value,
                expiry,
                version,
            };
            // A hash's fields and a set's members go in as element keys,
            // each checked on its own (see `checker`), compared by value and
            // expiry only: the key's newest version may differ between
            // converged replicas for a while, when the element tombstone
            // that carried it has been collected at one node and not yet at
            // another (DESIGN §4: each node collects on its own horizon).
            let element = |value| Stored {
                value,
                expiry,
                version: Default::default(),
            };
            let sep = super::history::ELEMENT_SEPARATOR;
            match t.as_str() {
                "hash" => {
                    let fields: Vec<(String, String)> =
                        redis::from_redis_value(reply[0].clone()).unwrap();
                    for (f, v) in fields {
                        out.insert(format!("{k}{sep}{f}"), element(v));
                    }
                }
                "set" => {
                    let members: Vec<String> = redis::from_redis_value(reply[0].clone()).unwrap();
                    for m in members {
                        out.insert(format!("{k}{sep}{m}"), element("1".into()));
                    }
                }
                _ => {
                    let value: Option<String> = redis::from_redis_value(reply[0].clone()).unwrap();
                    if let Some(value) = value {
                        out.insert(k.clone(), stored(value));
                    }
                }
            }
        }
    }
    out
}
