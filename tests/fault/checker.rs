//! The checker: compares every node's final contents with the history.
//!
//! Per key family (see [`Family`]):
//! 1. unique keys: an acknowledged SET is present, with its value, on every
//!    node;
//! 2. hot keys: every node holds the same value and it is one of the values
//!    written (acknowledged or unknown), and the winner is the write with the
//!    largest version: each hot SET learns its version (`DEBUG VERSION` in
//!    the same MULTI), the dump reads each key's final version, and no
//!    acknowledged write may have a larger version than the final one, while
//!    the winning write's own version must be the final one. Wall-clock
//!    order is not version order across nodes, least of all under clock
//!    skew, so nothing is assumed about it;
//! 3. deleted keys: a key whose last acknowledged operation is a DEL is
//!    absent (present = resurrected), one written again after the DEL holds
//!    the new value;
//! 4. WAIT keys: a SET whose WAIT returned n-1 is present, whatever node was
//!    killed afterwards (any loss is a violation, never "explained");
//! 5. TTL keys: absent on every node once their expiry has passed on every
//!    node's clock (the scenario waits for the latest such moment, see
//!    [`ttl_deadline_ms`]);
//! 6. counters (INCRBY of shared keys, HINCRBY of a shared hash field):
//!    every node holds the same value, at least the sum of the acknowledged
//!    increments (less those acknowledged by a node then killed with
//!    SIGKILL, which may be gone with it) and at most that sum plus the
//!    increments whose outcome is unknown: none lost, none counted twice;
//! 7. hash fields and set members: each is written by one node (HSET or
//!    SADD, sometimes then HDEL or SREM) and checked as a key of its own,
//!    as 1 and 3: present with its value, or absent after its removal.
//!
//! A single-writer key allows these final states: the state left by its
//! last acknowledged operation, or by any later operation whose outcome is
//! unknown (it may have happened). Anything else is classified: an
//! acknowledged write that is missing is *lost*; a deleted key that is back
//! is *resurrected*. A loss or resurrection of a plain (not WAIT-confirmed)
//! write is *explained* when the node that took it was then killed with
//! SIGKILL: kriminoDB answers before it pushes and has no persistence, so a
//! write only the killed process held is gone with it (README, Replication).
//! It is reported with that cause and is not a violation; everything else is.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use super::history::{Action, Event, EventKind, Family, Op, Outcome, Version};

/// One node's contents.
pub type Dump = BTreeMap<String, Stored>;

/// One key as a node holds it; compared whole across nodes, so replicas that
/// agree on the value but not the version are divergent too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub value: String,
    /// PEXPIRETIME: -1 for a key without a TTL.
    pub expiry: i64,
    pub version: Version,
}

#[derive(Debug, Default, Clone)]
pub struct Report {
    pub scenario: String,
    pub seed: u64,
    pub nodes: usize,
    pub ops: usize,
    /// Writes (SET, DEL) answered OK.
    pub acknowledged: usize,
    /// SETs whose WAIT returned n-1.
    pub wait_acknowledged: usize,
    /// Acknowledged hot-key SETs whose version is known (the winner check
    /// compares these).
    pub hot_versioned: usize,
    pub unknown: usize,
    pub failed: usize,
    /// cause → acknowledged writes lost.
    pub lost: BTreeMap<String, usize>,
    /// cause → deleted keys that came back.
    pub resurrected: BTreeMap<String, usize>,
    pub divergent: usize,
    pub keys_checked: usize,
    pub convergence_ms: f64,
    pub violations: Vec<String>,
}

impl Report {
    /// The summary with every violation, not only the first 30.
    pub fn summary_all(&self) -> String {
        let mut s = self.summary_with(usize::MAX);
        s.push('\n');
        s
    }

    pub fn summary(&self) -> String {
        self.summary_with(30)
    }

    fn summary_with(&self, limit: usize) -> String {
        let fmt = |m: &BTreeMap<String, usize>| {
            if m.is_empty() {
                "0".to_string()
            } else {
                let total: usize = m.values().sum();
                let parts: Vec<String> = m.iter().map(|(c, n)| format!("{n} {c}")).collect();
                format!("{total} ({})", parts.join("; "))
            }
        };
        let mut s = format!(
            "FAULT {:<9} nodes={} seed={} ops={} acknowledged={} wait-acknowledged={} \
             hot-versioned={} unknown={} failed={} keys={} lost={} resurrected={} \
             divergent={} convergence={:.0}ms violations={}",
            self.scenario,
            self.nodes,
            self.seed,
            self.ops,
            self.acknowledged,
            self.wait_acknowledged,
            self.hot_versioned,
            self.unknown,
            self.failed,
            self.keys_checked,
            fmt(&self.lost),
            fmt(&self.resurrected),
            self.divergent,
            self.convergence_ms,
            self.violations.len()
        );
        for v in self.violations.iter().take(limit) {
            let _ = write!(s, "\n  VIOLATION: {v}");
        }
        if self.violations.len() > limit {
            let _ = write!(s, "\n  … {} more", self.violations.len() - limit);
        }
        s
    }
}

/// The latest moment (history clock) at which the key written by `op` can
/// still exist on some node, for a TTL SET.
///
/// A node expires a key at `writer_clock(exec) + ttl` read on its *own*
/// clock. With offsets `o_w` (writer) and `o_j` (node j) that is real time
/// `exec + ttl + o_w - o_j`: a node whose clock is ahead expires it earlier,
/// one whose clock is behind later. So the key must be gone everywhere by
/// `exec + ttl + max(0, o_w - min_j o_j)`. `exec` is at most the completion
/// of an acknowledged SET; an unknown one may execute as late as `settle_ms`
/// (a stopped node reads it after SIGCONT, a request to a cut-off node is
/// retransmitted by the kernel after the heal), so it counts from
/// `max(completion, settle)`. 300 ms cover the active expiry sweep (10 Hz).
pub fn ttl_deadline_ms(op: &Op, offsets: &[i64], settle_ms: f64) -> Option<f64> {
    let Action::Set {
        ttl_ms: Some(ttl), ..
    } = op.action
    else {
        return None;
    };
    if matches!(op.outcome, Outcome::Fail(_)) {
        return None;
    }
    let min = *offsets.iter().min().unwrap_or(&0);
    let skew = (offsets[op.node] - min).max(0) as f64;
    let exec = if op.outcome.is_unknown() {
        op.completed_ms.max(settle_ms)
    } else {
        op.completed_ms
    };
    Some(exec + ttl as f64 + skew + 300.0)
}

pub fn check(report: &mut Report, nodes: usize, ops: &[Op], events: &[Event], dumps: &[Dump]) {
    report.nodes = nodes;
    report.ops = ops.len();
    for op in ops {
        match (&op.action, &op.outcome) {
            (Action::Wait { want }, Outcome::Ok(got)) if got >= want => {
                report.wait_acknowledged += 1
            }
            (Action::Wait { .. }, _) => {}
            (_, Outcome::Ok(_)) => report.acknowledged += 1,
            _ => {}
        }
        if op.outcome.is_ok() && op.version.is_some() {
            report.hot_versioned += 1;
        }
        match op.outcome {
            Outcome::Unknown(_) => report.unknown += 1,
            Outcome::Fail(_) => report.failed += 1,
            Outcome::Ok(_) => {}
        }
    }

    // Divergence: keys whose (value, expiry) differ between nodes.
    let all_keys: BTreeSet<&String> = dumps.iter().flat_map(|d| d.keys()).collect();
    for key in &all_keys {
        let seen: Vec<Option<&Stored>> = dumps.iter().map(|d| d.get(*key)).collect();
        if seen.iter().any(|s| *s != seen[0]) {
            report.divergent += 1;
            report
                .violations
                .push(format!("divergent key {key}: per node {seen:?}"));
        }
    }

    // Group the history by key, each key's operations in invocation order.
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in ops {
        by_key.entry(&op.key).or_default().push(op);
    }
    for list in by_key.values_mut() {
        list.sort_by(|a, b| a.invoked_ms.total_cmp(&b.invoked_ms));
    }
    for key in &all_keys {
        if !by_key.contains_key(key.as_str()) {
            report
                .violations
                .push(format!("key {key} on some node was never written"));
        }
    }
    report.keys_checked = by_key.len();

    for (key, list) in &by_key {
        // Every node's view of the key (equal unless divergent, which is
        // already a violation; check each node anyway).
        for (n, dump) in dumps.iter().enumerate() {
            let found = dump.get(*key);
            check_key(report, key, list, found, n, events, nodes);
        }
    }
}

fn check_key(
    report: &mut Report,
    key: &str,
    list: &[&Op],
    stored: Option<&Stored>,
    node: usize,
    events: &[Event],
    nodes: usize,
) {
    let family = list[0].family;
    let writes: Vec<&Op> = list
        .iter()
        .copied()
        .filter(|o| !matches!(o.action, Action::Wait { .. }))
        .collect();
    // Count losses and resurrections once per key (on node 0's view), but
    // report violations for any node.
    let count = node == 0;
    let found = stored.map(|s| s.value.as_str());
    if writes
        .iter()
        .any(|o| matches!(o.action, Action::Incr { .. }))
    {
        check_counter(report, key, &writes, found, node, events, count);
        return;
    }
    match family {
        Family::Ttl => {
            if let Some(v) = found {
                report.violations.push(format!(
                    "TTL key {key} still present on n{node} ({v:?}) after its expiry passed \
                     on every clock (ops: {})",
                    describe(list)
                ));
            }
        }
        Family::Hot => {
            let written: BTreeSet<&str> = writes
                .iter()
                .filter(|o| !matches!(o.outcome, Outcome::Fail(_)))
                .filter_map(|o| match &o.action {
                    Action::Set { value, .. } => Some(value.as_str()),
                    _ => None,
                })
                .collect();
            match found {
                Some(v) if !written.contains(v) => report.violations.push(format!(
                    "hot key {key} on n{node} holds {v:?}, which was never written"
                )),
                None if writes.iter().any(|o| o.outcome.is_ok()) => report
                    .violations
                    .push(format!("hot key {key} missing on n{node} though written")),
                _ => {}
            }
            if let Some(stored) = stored {
                check_hot_winner(report, key, &writes, stored, node);
            }
        }
        Family::Unique
        | Family::Delete
        | Family::Wait
        | Family::Hash
        | Family::Set
        | Family::Counter => {
            // The allowed final states.
            let state = |o: &Op| -> Option<String> {
                match &o.action {
                    Action::Set { value, .. } => Some(value.clone()),
                    _ => None,
                }
            };
            let last_ok = writes.iter().rposition(|o| o.outcome.is_ok());
            let mut allowed: Vec<Option<String>> = Vec::new();
            allowed.push(last_ok.and_then(|i| state(writes[i])));
            let after = last_ok.map_or(0, |i| i + 1);
            for o in &writes[after..] {
                if o.outcome.is_unknown() {
                    allowed.push(state(o));
                }
            }
            let found = found.map(str::to_owned);
            if allowed.contains(&found) {
                return;
            }
            let Some(i) = last_ok else {
                report.violations.push(format!(
                    "{key} on n{node} holds {found:?}, never acknowledged: {}",
                    describe(list)
                ));
                return;
            };
            let acked = writes[i];
            let durable = list.iter().any(|o| {
                matches!((&o.action, &o.outcome),
                    (Action::Wait { want }, Outcome::Ok(got)) if got >= want)
            });
            let (what, was_del) = match (&acked.action, &found) {
                (Action::Del, Some(_)) => ("resurrected", true),
                (Action::Set { .. }, None) => ("lost", false),
                _ => {
                    report.violations.push(format!(
                        "{key} on n{node} holds {found:?}; allowed {allowed:?}: {}",
                        describe(list)
                    ));
                    return;
                }
            };
            let cause = explain(acked, events);
            match cause {
                Some(cause) if !durable => {
                    if count {
                        let map = if was_del {
                            &mut report.resurrected
                        } else {
                            &mut report.lost
                        };
                        *map.entry(cause).or_default() += 1;
                    }
                }
                _ => {
                    if count {
                        let map = if was_del {
                            &mut report.resurrected
                        } else {
                            &mut report.lost
                        };
                        let label = if durable {
                            format!("WAIT-{}-acknowledged (VIOLATION)", nodes - 1)
                        } else {
                            "unexplained (VIOLATION)".to_string()
                        };
                        *map.entry(label).or_default() += 1;
                    }
                    report.violations.push(format!(
                        "{key} {what} on n{node}{}: found {found:?}, allowed {allowed:?}; \
                         history: {}; events of n{}: {}",
                        if durable { " despite WAIT" } else { "" },
                        describe(list),
                        acked.node,
                        describe_events(events, acked.node)
                    ));
                }
            }
        }
    }
}

/// Increments add up: the value is the sum of the acknowledged ones, give
/// or take those whose outcome is unknown and those a killed node may have
/// taken with it.
fn check_counter(
    report: &mut Report,
    key: &str,
    writes: &[&Op],
    found: Option<&str>,
    node: usize,
    events: &[Event],
    count: bool,
) {
    let by = |o: &Op| match o.action {
        Action::Incr { by } => by,
        _ => 0,
    };
    let acked: i64 = writes
        .iter()
        .filter(|o| o.outcome.is_ok())
        .map(|o| by(o))
        .sum();
    let unknown: i64 = writes
        .iter()
        .filter(|o| o.outcome.is_unknown())
        .map(|o| by(o))
        .sum();
    let killed: i64 = writes
        .iter()
        .filter(|o| o.outcome.is_ok() && explain(o, events).is_some())
        .map(|o| by(o))
        .sum();
    let value = match found.map(str::parse::<i64>) {
        None => 0,
        Some(Ok(v)) => v,
        Some(Err(_)) => {
            report.violations.push(format!(
                "counter {key} on n{node} holds {found:?}, not an integer"
            ));
            return;
        }
    };
    if value > acked + unknown {
        report.violations.push(format!(
            "counter {key} on n{node} is {value}: more than the {acked} acknowledged plus {unknown} \
             unknown increments (counted twice)"
        ));
    } else if value < acked - killed {
        if count {
            *report
                .lost
                .entry("unexplained increment (VIOLATION)".into())
                .or_default() += 1;
        }
        report.violations.push(format!(
            "counter {key} on n{node} is {value}: less than the {acked} acknowledged increments \
             (of which {killed} on nodes then killed)"
        ));
    } else if value < acked && count {
        *report
            .lost
            .entry("increment on a node then killed with kill -9".into())
            .or_default() += 1;
    }
}

/// The largest version wins: no acknowledged write of `key` has a version
/// above the one it ended with, and the write whose value it holds had
/// exactly that version (when that write's version is known).
fn check_hot_winner(report: &mut Report, key: &str, writes: &[&Op], stored: &Stored, node: usize) {
    let version_of = |o: &Op| o.version.filter(|_| o.outcome.is_ok());
    if let Some(larger) = writes
        .iter()
        .filter(|o| version_of(o).is_some_and(|v| v > stored.version))
        .max_by_key(|o| o.version)
    {
        report.violations.push(format!(
            "hot key {key} on n{node} holds {:?} at version {:?}, but the acknowledged write \
             {:?} from n{} has the larger version {:?}",
            stored.value,
            stored.version,
            describe(&[larger]),
            larger.node,
            larger.version
        ));
    }
    let winner = writes
        .iter()
        .find(|o| matches!(&o.action, Action::Set { value, .. } if *value == stored.value));
    if let Some(v) = winner.and_then(|o| version_of(o))
        && v != stored.version
    {
        report.violations.push(format!(
            "hot key {key} on n{node} holds {:?} at version {:?}, but that write got {v:?}",
            stored.value, stored.version
        ));
    }
}

/// Why an acknowledged write by `op` may be gone: its node was killed after
/// acknowledging it.
fn explain(op: &Op, events: &[Event]) -> Option<String> {
    events
        .iter()
        .filter(|e| e.node == Some(op.node) && e.at_ms >= op.completed_ms)
        .find_map(|e| match e.kind {
            EventKind::Kill => Some("plain write on a node then killed with kill -9".to_string()),
            _ => None,
        })
}

fn describe(list: &[&Op]) -> String {
    list.iter()
        .map(|o| {
            let act = match &o.action {
                Action::Set { value, ttl_ms } => match ttl_ms {
                    Some(t) => format!("SET {value} PX {t}"),
                    None => format!("SET {value}"),
                },
                Action::Del => "DEL".into(),
                Action::Wait { want } => format!("WAIT {want}"),
                Action::Incr { by } => format!("INCRBY {by}"),
            };
            format!(
                "[n{} {act} {:.0}..{:.0}ms {:?}]",
                o.node, o.invoked_ms, o.completed_ms, o.outcome
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn describe_events(events: &[Event], node: usize) -> String {
    events
        .iter()
        .filter(|e| e.node == Some(node) || e.node.is_none())
        .map(|e| format!("{:?}@{:.0}ms", e.kind, e.at_ms))
        .collect::<Vec<_>>()
        .join(", ")
}
