//! Fault-injection tests (issue 5): real `kriminodb` processes in Linux
//! network namespaces under partitions, packet loss, kill -9, SIGSTOP, clock
//! skew and restarts, with a recorded workload and a history checker. See
//! `tests/fault/mod.rs` for the layout and `tests/fault/checker.rs` for the
//! properties checked.
//!
//! Needs root (network namespaces) and nftables; without them every test
//! here FAILS with a message saying so, it never passes silently.
//!
//! `cargo test` runs the bounded suite: every scenario once, 3 nodes, a
//! short fault phase, fixed seeds, one scenario at a time (a lock: they
//! share the machine's two cores, and timing faults need the CPU). The node
//! binary is the debug build cargo made for this test; `make fault` runs
//! [`fault_by_hand`] against the release build with parameters.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;
mod fault;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use fault::scenario::{self, Params, Scenario};

/// One scenario at a time, whichever order the test threads pick.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn bin() -> PathBuf {
    std::env::var_os("FAULT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_kriminodb")))
}

fn run_and_check(p: Params) {
    let report = scenario::run(&p);
    let summary = report.summary();
    println!("{summary}");
    assert!(
        report.violations.is_empty(),
        "scenario {} (nodes {}, seed {}) violated the properties:\n{summary}",
        p.scenario.name(),
        p.nodes,
        p.seed
    );
}

/// The bounded CI run of one scenario.
fn suite(scenario: Scenario, seed: u64) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    run_and_check(Params {
        scenario,
        nodes: 3,
        fault_time: Duration::from_secs(4),
        seed,
        bin: bin(),
        keep_logs: false,
    });
}

/// The checker itself (no namespaces): a hot key that ended with a smaller
/// version than an acknowledged write, or with a version other than its
/// winning write's, is a violation; the largest version winning is not.
#[test]
fn checker_hot_key_winner_is_the_largest_version() {
    use fault::checker::{Report, Stored, check};
    use fault::history::{Action, Family, Op, Outcome};
    let set = |node: usize, value: &str, version: (u64, u64)| Op {
        node,
        family: Family::Hot,
        key: "h:0".into(),
        action: Action::Set {
            value: value.into(),
            ttl_ms: None,
        },
        invoked_ms: node as f64,
        completed_ms: node as f64 + 1.0,
        outcome: Outcome::Ok(0),
        version: Some(version),
    };
    let ops = [set(0, "a", (10, 1)), set(1, "b", (20, 2))];
    let holding = |value: &str, version: (u64, u64)| {
        let stored = Stored {
            value: value.into(),
            expiry: -1,
            version,
        };
        vec![[("h:0".to_string(), stored)].into_iter().collect(); 2]
    };
    let violations = |dumps: &[_]| {
        let mut report = Report::default();
        check(&mut report, 2, &ops, &[], dumps);
        assert_eq!(report.hot_versioned, 2);
        report.violations
    };
    assert_eq!(violations(&holding("b", (20, 2))), Vec::<String>::new());
    let smaller = violations(&holding("a", (10, 1)));
    assert!(
        smaller.iter().any(|v| v.contains("larger version")),
        "{smaller:?}"
    );
    let mislabelled = violations(&holding("b", (30, 1)));
    assert!(
        mislabelled.iter().any(|v| v.contains("that write got")),
        "{mislabelled:?}"
    );
}

/// The checker's counter and element rules (no namespaces): a counter must
/// hold the acknowledged increments exactly, give or take the unknown ones;
/// a hash field acknowledged and never removed must be present, one
/// removed must be absent.
#[test]
fn checker_counts_increments_exactly_and_misses_no_element() {
    use fault::checker::{Report, Stored, check};
    use fault::history::{Action, ELEMENT_SEPARATOR, Family, Op, Outcome};
    let op = |key: &str, family: Family, action: Action, outcome: Outcome, at: f64| Op {
        node: 0,
        family,
        key: key.into(),
        action,
        invoked_ms: at,
        completed_ms: at + 1.0,
        outcome,
        version: None,
    };
    let field = format!("hs:0{ELEMENT_SEPARATOR}n0:1");
    let gone = format!("hs:0{ELEMENT_SEPARATOR}n0:2");
    let set = || Action::Set {
        value: "v".into(),
        ttl_ms: None,
    };
    let ops = [
        op(
            "c:0",
            Family::Counter,
            Action::Incr { by: 3 },
            Outcome::Ok(3),
            1.0,
        ),
        op(
            "c:0",
            Family::Counter,
            Action::Incr { by: 4 },
            Outcome::Ok(7),
            2.0,
        ),
        op(
            "c:0",
            Family::Counter,
            Action::Incr { by: 1 },
            Outcome::Unknown("timeout".into()),
            3.0,
        ),
        op(&field, Family::Hash, set(), Outcome::Ok(1), 4.0),
        op(&gone, Family::Hash, set(), Outcome::Ok(1), 5.0),
        op(&gone, Family::Hash, Action::Del, Outcome::Ok(1), 6.0),
    ];
    let violations = |counter: &str, fields: &[&str]| {
        let stored = |value: &str| Stored {
            value: value.into(),
            expiry: -1,
            version: (1, 1),
        };
        let mut dump: fault::checker::Dump =
            [("c:0".to_string(), stored(counter))].into_iter().collect();
        for f in fields {
            dump.insert(f.to_string(), stored("v"));
        }
        let mut report = Report::default();
        check(&mut report, 1, &ops, &[], &[dump]);
        report.violations
    };
    assert_eq!(violations("7", &[&field]), Vec::<String>::new());
    assert_eq!(violations("8", &[&field]), Vec::<String>::new());
    assert!(
        violations("6", &[&field])
            .iter()
            .any(|v| v.contains("less than"))
    );
    assert!(
        violations("9", &[&field])
            .iter()
            .any(|v| v.contains("counted twice"))
    );
    assert!(violations("7", &[]).iter().any(|v| v.contains("lost")));
    assert!(
        violations("7", &[&field, &gone])
            .iter()
            .any(|v| v.contains("resurrected"))
    );
}

/// A key SET and then DELeted a few milliseconds before another node is cut
/// off must not come back after the heal: the cut-off node may have the SET
/// and not the DEL (this found a resurrection, fixed by keeping recent
/// tombstones and handing them even to peers that lack the key).
#[test]
fn fault_isolate_one_node() {
    suite(Scenario::Isolate, 1);
}

/// After a majority/minority split longer than the suspect timeout the two
/// sides must find each other again and converge (this found a split that
/// never healed, fixed by announcing to known peers that are not members).
#[test]
fn fault_split_majority_minority() {
    suite(Scenario::Split, 2);
}

#[test]
fn fault_one_way_partition() {
    suite(Scenario::OneWay, 3);
}

#[test]
fn fault_bridge_node() {
    suite(Scenario::Bridge, 4);
}

#[test]
fn fault_packet_loss() {
    suite(Scenario::Loss, 5);
}

#[test]
fn fault_kill_and_restart() {
    suite(Scenario::Kill, 6);
}

#[test]
fn fault_sigstop_sigcont() {
    suite(Scenario::Stop, 7);
}

#[test]
fn fault_clock_skew() {
    suite(Scenario::Skew, 8);
}

#[test]
fn fault_rolling_restart() {
    suite(Scenario::Rolling, 9);
}

#[test]
fn fault_random_mix() {
    suite(Scenario::Random, 10);
}

/// `make fault`: parameters from the environment.
///
/// - `FAULT_SCENARIO`: a scenario name (isolate, split, one-way, bridge,
///   loss, kill, stop, skew, rolling, random) or `all` (default `random`);
/// - `FAULT_NODES`: 3–5 (default 5);
/// - `FAULT_DURATION`: fault phase, e.g. `30s` (default 20s);
/// - `FAULT_SEED`: integer (default: from the clock, printed);
/// - `FAULT_RUNS`: how many times (seed, seed+1, …; default 1);
/// - `FAULT_KEEP_LOGS=1`: keep node logs of good runs too (a failed run's
///   are always kept, under target/fault-logs/);
/// - `FAULT_BIN`: the node binary (make fault passes the release build).
#[test]
#[ignore = "run by hand with `make fault`"]
fn fault_by_hand() {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let scenarios = match var("FAULT_SCENARIO").as_deref().unwrap_or("random") {
        "all" => Scenario::ALL.to_vec(),
        name => vec![Scenario::parse(name).unwrap_or_else(|| {
            panic!(
                "FAULT_SCENARIO={name}: not one of {:?} or all",
                Scenario::ALL.map(Scenario::name)
            )
        })],
    };
    let nodes: usize = var("FAULT_NODES").map_or(5, |v| v.parse().expect("FAULT_NODES"));
    let duration = var("FAULT_DURATION").map_or(Duration::from_secs(20), |v| {
        humantime::parse_duration(&v).expect("FAULT_DURATION like 30s")
    });
    let seed: u64 = var("FAULT_SEED").map_or_else(
        || {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64
                % 1_000_000
        },
        |v| v.parse().expect("FAULT_SEED"),
    );
    let runs: u64 = var("FAULT_RUNS").map_or(1, |v| v.parse().expect("FAULT_RUNS"));
    let keep_logs = var("FAULT_KEEP_LOGS").is_some_and(|v| v != "0");
    println!(
        "fault: scenarios {:?}, {nodes} nodes, fault phase {duration:?}, seed {seed}, {runs} run(s), binary {}",
        scenarios.iter().map(|s| s.name()).collect::<Vec<_>>(),
        bin().display()
    );
    let mut failed = Vec::new();
    for run in 0..runs {
        for &scenario in &scenarios {
            let p = Params {
                scenario,
                nodes,
                fault_time: duration,
                seed: seed + run,
                bin: bin(),
                keep_logs,
            };
            let report = scenario::run(&p);
            println!("{}", report.summary());
            if !report.violations.is_empty() {
                failed.push(format!("{} seed {}", scenario.name(), p.seed));
            }
        }
    }
    assert!(failed.is_empty(), "violations in: {failed:?}");
}
