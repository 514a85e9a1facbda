//! The anti-entropy sessions driven by hand (see `sim`): lists of
//! operations on a few in-memory nodes — write, cut a link, heal it, step
//! the sessions until quiet — and what must hold afterwards, the way
//! chitchat tests its protocol. No sockets, no sleeps: time moves only
//! when a test advances it.

use std::time::Duration;

use proptest::prelude::*;

use super::initiator::{FIRST_MEETING_DELAY, RETRY_BUSY, SYNC_TIMEOUT};
use super::sim::Sim;
use super::{Outcome, Responder};
use crate::clock::Version;
use crate::config::Config;
use crate::replication::wire::Message;

/// One step of a scenario.
#[derive(Debug, Clone)]
enum Op {
    Set(usize, &'static str, &'static str),
    Del(usize, &'static str),
    FlushAll(usize),
    /// The node's queued changes go out on its links (the push path).
    Push(usize),
    Cut(usize, usize),
    Heal(usize, usize),
    /// The rotation asks `from`'s link to `to` for a reconciliation.
    Sync(usize, usize),
    /// `from`'s initiator for `to` fires what is due.
    Poll(usize, usize),
    /// One frame on `from`'s link to `to`: towards the responder if true.
    Deliver(usize, usize, bool),
    /// Every frame delivered, every due timer fired, at this instant.
    Run,
    /// Run, and advance time through every pending timer.
    Settle,
    AdvanceMs(u64),
}

fn apply(sim: &mut Sim, ops: &[Op]) {
    for op in ops {
        match *op {
            Op::Set(node, key, value) => sim.set(node, key, value),
            Op::Del(node, key) => sim.del(node, key),
            Op::FlushAll(node) => sim.flush_all(node),
            Op::Push(node) => sim.push(node),
            Op::Cut(a, b) => sim.cut(a, b),
            Op::Heal(a, b) => sim.heal(a, b),
            Op::Sync(from, to) => sim.request_sync(from, to),
            Op::Poll(from, to) => {
                sim.poll(from, to);
            }
            Op::Deliver(from, to, forward) => {
                sim.deliver(from, to, forward);
            }
            Op::Run => sim.run(),
            Op::Settle => sim.settle(),
            Op::AdvanceMs(ms) => sim.advance(Duration::from_millis(ms)),
        }
    }
}

fn config() -> Config {
    Config::default()
}

/// Like the cluster tests' fast timings: tombstones stay recent for 10 s.
fn fast_config() -> Config {
    Config {
        sync_interval: Duration::from_millis(200),
        ..Config::default()
    }
}

fn everywhere(sim: &Sim, key: &str) -> Vec<Option<String>> {
    (0..sim.nodes.len()).map(|n| sim.get(n, key)).collect()
}

#[test]
fn a_write_reaches_every_node_by_reconciliation_alone() {
    let mut sim = Sim::cluster(3, &config());
    apply(
        &mut sim,
        &[Op::Set(1, "k", "v"), Op::Sync(1, 0), Op::Sync(1, 2)],
    );
    sim.settle();
    sim.assert_converged();
    assert_eq!(everywhere(&sim, "k"), vec![Some("v".into()); 3]);
}

#[test]
fn writes_on_both_sides_of_a_partition_survive_its_healing() {
    let mut sim = Sim::cluster(2, &config());
    apply(
        &mut sim,
        &[
            Op::Set(0, "before", "1"),
            Op::Push(0),
            Op::Run,
            Op::Cut(0, 1),
            Op::Set(0, "a", "from 0"),
            Op::Set(1, "b", "from 1"),
            // Lost: the links are down.
            Op::Push(0),
            Op::Push(1),
            Op::Run,
        ],
    );
    assert_eq!(sim.get(1, "before").as_deref(), Some("1"));
    assert_eq!(sim.get(1, "a"), None);
    assert_eq!(sim.get(0, "b"), None);
    apply(&mut sim, &[Op::Heal(0, 1), Op::Settle]);
    sim.assert_converged();
    assert_eq!(sim.get(0, "b").as_deref(), Some("from 1"));
    assert_eq!(sim.get(1, "a").as_deref(), Some("from 0"));
}

#[test]
fn concurrent_writes_converge_to_the_larger_versions() {
    let mut sim = Sim::cluster(3, &config());
    apply(
        &mut sim,
        &[
            Op::Cut(0, 1),
            Op::Cut(0, 2),
            Op::Cut(1, 2),
            // Same millisecond: the HLC and then the node id decide.
            Op::Set(0, "same-ms", "0"),
            Op::Set(1, "same-ms", "1"),
            Op::Set(2, "same-ms", "2"),
            Op::Set(1, "later", "1"),
            Op::AdvanceMs(5),
            Op::Set(0, "later", "0"),
            Op::Set(2, "earlier", "2"),
            Op::AdvanceMs(5),
            Op::Set(1, "earlier", "1"),
        ],
    );
    let winner = |key: &str| {
        (0..3)
            .filter_map(|n| {
                let dump = sim.store(n).dump();
                let (_, value, _, version) = dump.into_iter().find(|e| e.0 == key.as_bytes())?;
                Some((version, value))
            })
            .max()
            .and_then(|(_, value)| value)
            .map(|v| String::from_utf8_lossy(&v).into_owned())
    };
    let expected: Vec<_> = ["same-ms", "later", "earlier"]
        .iter()
        .map(|k| winner(k))
        .collect();
    assert_eq!(expected[1].as_deref(), Some("0"));
    assert_eq!(expected[2].as_deref(), Some("1"));
    sim.heal_all();
    sim.settle();
    sim.assert_converged();
    for (key, value) in ["same-ms", "later", "earlier"].iter().zip(&expected) {
        assert_eq!(everywhere(&sim, key), vec![value.clone(); 3], "{key}");
    }
}

#[test]
fn a_delete_stays_deleted_and_a_late_push_of_the_old_value_is_refused() {
    let mut sim = Sim::cluster(3, &config());
    apply(&mut sim, &[Op::Set(0, "k", "old"), Op::Push(0), Op::Run]);
    assert_eq!(everywhere(&sim, "k"), vec![Some("old".into()); 3]);
    apply(
        &mut sim,
        &[
            Op::AdvanceMs(1),
            Op::Set(0, "k", "newer"),
            // Held up on 0's link to 2, behind nothing yet.
            Op::Push(0),
            Op::Cut(0, 1),
            Op::AdvanceMs(1),
            Op::Del(0, "k"),
            Op::Set(1, "other", "x"),
            Op::Push(1),
        ],
    );
    // 2 learns of the delete by reconciling with 0 over its own link...
    sim.request_sync(2, 0);
    sim.poll(2, 0);
    sim.converse(2, 0);
    assert_eq!(sim.get(2, "k"), None);
    // ...and then the older write, pushed before the delete, arrives.
    while sim.deliver(0, 2, true) || sim.deliver(0, 2, false) {}
    assert_eq!(sim.get(2, "k"), None, "the late push brought the key back");
    apply(&mut sim, &[Op::Heal(0, 1), Op::Settle]);
    sim.assert_converged();
    assert_eq!(everywhere(&sim, "k"), vec![None; 3]);
    assert_eq!(everywhere(&sim, "other"), vec![Some("x".into()); 3]);
    for n in 0..3 {
        let dump = sim.store(n).dump();
        let tombstone = dump.iter().find(|e| e.0 == b"k").map(|e| e.1.is_none());
        assert_eq!(tombstone, Some(true), "node {n} keeps the tombstone");
    }
    sim.reconcile_all();
    assert_eq!(everywhere(&sim, "k"), vec![None; 3]);
}

#[test]
fn a_flushall_marker_clears_older_writes_everywhere_and_later_ones_survive() {
    let mut sim = Sim::cluster(3, &config());
    apply(
        &mut sim,
        &[
            Op::Set(0, "a", "1"),
            Op::Set(1, "b", "1"),
            Op::Set(2, "c", "1"),
            Op::Push(0),
            Op::Push(1),
            Op::Push(2),
            Op::Run,
            Op::Cut(0, 2),
            Op::Cut(1, 2),
            // Unseen by 0 before its FLUSHALL, and older than it.
            Op::Set(2, "before-flush", "x"),
            Op::AdvanceMs(1),
            Op::FlushAll(0),
            Op::AdvanceMs(1),
            Op::Set(1, "after-flush", "y"),
        ],
    );
    assert_eq!(sim.get(2, "a").as_deref(), Some("1"));
    sim.heal_all();
    sim.reconcile_all();
    sim.assert_converged();
    for key in ["a", "b", "c", "before-flush"] {
        assert_eq!(everywhere(&sim, key), vec![None; 3], "{key}");
    }
    assert_eq!(everywhere(&sim, "after-flush"), vec![Some("y".into()); 3]);
    assert_eq!(sim.store(2).truncated(), sim.store(0).truncated());
    assert!(sim.store(2).truncated() > Version::default());
}

#[test]
fn the_link_from_the_larger_node_id_waits_at_a_first_meeting() {
    let mut sim = Sim::new(2, &config());
    sim.heal(0, 1);
    assert!(sim.poll(0, 1), "node 1 starts at once");
    assert!(!sim.poll(1, 0), "node 2 waits");
    sim.advance(FIRST_MEETING_DELAY);
    assert!(sim.poll(1, 0));
    sim.settle();
    // Meeting again is no first meeting.
    sim.cut(0, 1);
    sim.heal(0, 1);
    assert!(sim.poll(1, 0));
}

/// Node 0 starts empty while 1 and 2 hold data: its first reconciliation
/// pulls everything, its other link waits for it, and peers that reach
/// it meanwhile are told it is busy.
#[test]
fn a_fresh_node_pulls_everything_while_telling_its_peers_it_is_busy() {
    let mut sim = Sim::new(3, &config());
    sim.heal(1, 2);
    sim.settle();
    for i in 0..2500 {
        sim.set(1 + i % 2, &format!("key{i}"), "v");
    }
    sim.reconcile_all();
    sim.heal(0, 1);
    sim.heal(0, 2);
    assert!(sim.poll(0, 1), "the first link claims the initial pull");
    assert!(!sim.poll(0, 2), "the other waits for it");
    assert_eq!(sim.session(0, 2), None);
    sim.advance(FIRST_MEETING_DELAY);
    for peer in [1, 2] {
        assert!(sim.poll(peer, 0));
        sim.converse(peer, 0);
        assert_eq!(sim.outcomes(peer, 0), [Outcome::Busy], "node {peer}");
    }
    assert!(sim.store(0).is_empty());
    sim.converse(0, 1);
    assert_eq!(sim.outcomes(0, 1), [Outcome::Done]);
    assert_eq!(sim.store(0).len(), 2500);
    sim.settle();
    sim.assert_converged();
    // The waiting link went ahead once the pull was over, and so did the
    // peers that were told busy.
    assert_eq!(sim.outcomes(0, 2).last(), Some(&Outcome::Done));
    for peer in [1, 2] {
        assert_eq!(sim.outcomes(peer, 0).last(), Some(&Outcome::Done));
    }
}

/// Node 1 pulls 5000 keys from node 0, which stops answering halfway: the
/// reconciliation is abandoned at its timeout and the next one completes.
#[test]
fn a_peer_vanishing_mid_transfer_is_caught_up_by_the_next_reconciliation() {
    let mut sim = Sim::cluster(2, &config());
    for i in 0..5000 {
        sim.set(0, &format!("key{i}"), "v");
    }
    sim.request_sync(1, 0);
    assert!(sim.poll(1, 0));
    while sim.store(1).is_empty() {
        assert!(sim.deliver(1, 0, true) || sim.deliver(1, 0, false));
    }
    sim.nodes[0].silent = true;
    sim.converse(1, 0);
    let first = sim.session(1, 0);
    assert!(first.is_some(), "still waiting for the peer");
    assert!(sim.store(1).len() < 5000);
    sim.nodes[0].silent = false;
    sim.advance(SYNC_TIMEOUT);
    assert!(sim.poll(1, 0), "a new reconciliation starts at the timeout");
    assert_ne!(sim.session(1, 0), first);
    sim.converse(1, 0);
    assert_eq!(sim.outcomes(1, 0), [Outcome::Done]);
    sim.assert_converged();
}

/// The link breaks in the middle of a fresh node's initial pull: the pull
/// is released with the connection, and the next connection completes it.
#[test]
fn a_link_broken_mid_transfer_is_repaired_by_the_next_connection() {
    let mut sim = Sim::new(2, &config());
    for i in 0..5000 {
        sim.set(1, &format!("key{i}"), "v");
    }
    sim.connect(0, 1);
    assert!(sim.poll(0, 1));
    while sim.store(0).is_empty() {
        assert!(sim.deliver(0, 1, true) || sim.deliver(0, 1, false));
    }
    let pulling = |sim: &Sim| {
        let now = sim.now().instant;
        sim.nodes[0].bookkeeping.lock().pulling_initial_copy(now)
    };
    assert!(pulling(&sim));
    sim.cut(0, 1);
    assert!(!pulling(&sim), "a broken link lets go of the initial pull");
    assert!(sim.store(0).len() < 5000);
    sim.heal(0, 1);
    sim.settle();
    sim.assert_converged();
    assert_eq!(sim.store(0).len(), 5000);
}

/// The responder books a completed reconciliation with its own start
/// time; a SyncWant for a session it is no longer answering (the peer
/// started another since) completes nothing, since that session may have
/// missed what arrived here after it started.
#[test]
fn only_the_session_being_answered_counts_as_completed() {
    let sim = Sim::new(2, &config());
    sim.set(1, "k", "v");
    let node = &sim.nodes[1];
    let hello = Message::Hello {
        node_id: sim.nodes[0].node_id(),
        incarnation: 1,
        hlc: 0,
    };
    let mut responder = Responder::accept(node.local(), hello).unwrap();
    let completed = || {
        let n = &node.stats.syncs_completed;
        n.load(std::sync::atomic::Ordering::Relaxed)
    };
    let root = |session| Message::SyncRoot {
        session,
        root: 0,
        truncated: Version::default(),
    };
    let want = |session| Message::SyncWant {
        session,
        keys: vec![],
        last: true,
    };
    for session in [1, 2] {
        let replies = responder.handle(node.local(), root(session), sim.now());
        let replies = replies.unwrap();
        assert!(
            matches!(replies[..], [Message::SyncInner { .. }]),
            "{replies:?}"
        );
        sim.advance(Duration::from_millis(1));
    }
    let stale = responder.handle(node.local(), want(1), sim.now()).unwrap();
    assert_eq!(stale, [Message::SyncDone { session: 1 }]);
    assert_eq!(completed(), 0);
    let current = responder.handle(node.local(), want(2), sim.now()).unwrap();
    assert_eq!(current, [Message::SyncDone { session: 2 }]);
    assert_eq!(completed(), 1);
}

#[test]
fn acknowledgements_count_only_once_a_reconciliation_covered_the_link() {
    let mut sim = Sim::cluster(2, &config());
    apply(&mut sim, &[Op::Set(0, "k", "1"), Op::Push(0), Op::Run]);
    let seq = sim.store(0).last_seq();
    assert_eq!(sim.acked(0, 1), seq);
    // A new connection may have missed updates: its acks prove nothing
    // until its first reconciliation completes.
    apply(
        &mut sim,
        &[
            Op::Cut(0, 1),
            Op::Set(0, "lost", "1"),
            Op::Push(0),
            Op::Heal(0, 1),
            Op::Set(0, "k", "2"),
            Op::Push(0),
            Op::Deliver(0, 1, true),
            Op::Deliver(0, 1, false),
        ],
    );
    assert_eq!(sim.acked(0, 1), seq);
    apply(&mut sim, &[Op::Settle]);
    assert_eq!(sim.acked(0, 1), sim.store(0).last_seq());
    assert_eq!(sim.get(1, "lost").as_deref(), Some("1"));
}

/// A tombstone goes once every known node has completed a reconciliation
/// with its holder that started after it arrived there, and not before.
#[test]
fn tombstones_are_collected_once_every_node_has_reconciled_since_they_arrived() {
    let mut sim = Sim::cluster(3, &fast_config());
    apply(&mut sim, &[Op::Set(0, "k", "v"), Op::Push(0), Op::Settle]);
    apply(
        &mut sim,
        &[Op::AdvanceMs(1000), Op::Del(0, "k"), Op::AdvanceMs(1)],
    );
    // Node 1 learns of it from node 0; node 2 not yet.
    sim.request_sync(0, 1);
    sim.settle();
    assert_eq!(sim.get(1, "k"), None);
    assert_eq!(sim.get(2, "k").as_deref(), Some("v"));
    // Long past the window in which tombstones count as recent.
    sim.advance(Duration::from_secs(11));
    assert_eq!(
        sim.tombstones_after_collection(0),
        1,
        "node 2 has not seen it"
    );
    assert_eq!(sim.tombstones_after_collection(1), 1);
    sim.advance(Duration::from_millis(1));
    sim.request_sync(0, 2);
    sim.settle();
    assert_eq!(sim.get(2, "k"), None);
    assert_eq!(
        sim.tombstones_after_collection(0),
        0,
        "every node reconciled with node 0 since the delete"
    );
    // Node 1 got it during a reconciliation that started before it
    // arrived there, and has not reconciled with node 2 since.
    assert_eq!(sim.tombstones_after_collection(1), 1);
    assert_eq!(sim.tombstones_after_collection(2), 1);
    sim.advance(Duration::from_millis(1));
    sim.reconcile_all();
    sim.advance(Duration::from_millis(1));
    sim.reconcile_all();
    for n in 0..3 {
        assert_eq!(sim.tombstones_after_collection(n), 0, "node {n}");
        assert!(sim.store(n).dump().is_empty(), "node {n}");
    }
    // Collecting them brought nothing back.
    sim.reconcile_all();
    assert_eq!(everywhere(&sim, "k"), vec![None; 3]);
}

/// Node 2 is cut off longer than `--forget-after`: nodes 0 and 1 forget
/// it and collect a tombstone it never saw; when it comes back it
/// discards its data instead of handing the deleted key back.
#[test]
fn a_node_forgotten_by_the_cluster_discards_its_data_instead_of_resurrecting_keys() {
    let config = Config {
        forget_after: Duration::from_secs(60),
        ..fast_config()
    };
    let mut sim = Sim::cluster(3, &config);
    apply(
        &mut sim,
        &[Op::Set(0, "gone", "old"), Op::Push(0), Op::Settle],
    );
    apply(
        &mut sim,
        &[Op::Cut(0, 2), Op::Cut(1, 2), Op::Del(0, "gone")],
    );
    // Membership no longer reports node 2; nodes 0 and 1 keep reconciling.
    sim.advance(Duration::from_secs(61));
    sim.reconcile_all();
    sim.advance(Duration::from_millis(1));
    sim.reconcile_all();
    for n in 0..2 {
        assert_eq!(sim.tombstones_after_collection(n), 0, "node {n}");
    }
    assert_eq!(sim.get(2, "gone").as_deref(), Some("old"));
    sim.heal_all();
    sim.settle();
    sim.assert_converged();
    assert_eq!(everywhere(&sim, "gone"), vec![None; 3]);
}

// ---------------------------------------------------------------------------
// Any interleaving.

const KEYS: [&str; 6] = ["a", "b", "c", "d", "e", "f"];
const VALUES: [&str; 3] = ["x", "y", "z"];
const NODES: usize = 3;

fn pair() -> impl Strategy<Value = (usize, usize)> {
    (0..NODES, 1..NODES).prop_map(|(a, d)| (a, (a + d) % NODES))
}

fn op() -> impl Strategy<Value = Op> {
    let node = 0..NODES;
    let key = proptest::sample::select(&KEYS[..]);
    let value = proptest::sample::select(&VALUES[..]);
    prop_oneof![
        6 => (node.clone(), key.clone(), value).prop_map(|(n, k, v)| Op::Set(n, k, v)),
        2 => (node.clone(), key).prop_map(|(n, k)| Op::Del(n, k)),
        1 => node.clone().prop_map(Op::FlushAll),
        3 => node.prop_map(Op::Push),
        1 => pair().prop_map(|(a, b)| Op::Cut(a, b)),
        2 => pair().prop_map(|(a, b)| Op::Heal(a, b)),
        3 => pair().prop_map(|(a, b)| Op::Sync(a, b)),
        3 => pair().prop_map(|(a, b)| Op::Poll(a, b)),
        8 => (pair(), any::<bool>()).prop_map(|((a, b), f)| Op::Deliver(a, b, f)),
        1 => Just(Op::Run),
        // Within the window in which tombstones count as recent, so every
        // one still reaches every node.
        2 => (0u64..100).prop_map(Op::AdvanceMs),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever was written, pushed, cut, delivered or left in flight,
    /// once the links are healed and every pair has reconciled, every node
    /// holds the same entries and the same digest.
    #[test]
    fn any_interleaving_of_writes_and_sessions_converges(
        ops in proptest::collection::vec(op(), 0..60),
    ) {
        let mut sim = Sim::cluster(NODES, &config());
        apply(&mut sim, &ops);
        sim.heal_all();
        sim.settle();
        sim.reconcile_all();
        sim.assert_converged();
    }

    /// Two nodes that wrote the same keys apart agree after one
    /// reconciliation in either direction, on the larger versions.
    #[test]
    fn one_reconciliation_makes_two_nodes_equal(
        writes in proptest::collection::vec((0..2usize, 0..KEYS.len(), proptest::option::of(0..VALUES.len())), 0..40),
        initiator in 0..2usize,
    ) {
        let mut sim = Sim::cluster(2, &config());
        sim.cut(0, 1);
        for (node, key, value) in writes {
            match value {
                Some(v) => sim.set(node, KEYS[key], VALUES[v]),
                None => sim.del(node, KEYS[key]),
            }
            sim.advance(Duration::from_millis(1));
        }
        // One link only, whose new connection reconciles at once.
        sim.connect(initiator, 1 - initiator);
        sim.run();
        sim.assert_converged();
    }
}

/// RETRY_BUSY is what a told-busy link waits: a settled cluster has fired
/// it (and no timer is left).
#[test]
fn a_busy_peer_is_retried_after_the_busy_delay() {
    let mut sim = Sim::new(2, &config());
    sim.set(1, "k", "v");
    sim.connect(0, 1);
    sim.connect(1, 0);
    assert!(sim.poll(0, 1), "node 0 (empty) claims its initial pull");
    sim.advance(FIRST_MEETING_DELAY);
    assert!(sim.poll(1, 0));
    sim.converse(1, 0);
    assert_eq!(sim.outcomes(1, 0), [Outcome::Busy]);
    assert!(!sim.poll(1, 0));
    sim.converse(0, 1);
    sim.advance(RETRY_BUSY);
    assert!(sim.poll(1, 0));
    sim.converse(1, 0);
    assert_eq!(sim.outcomes(1, 0), [Outcome::Busy, Outcome::Done]);
}

#[test]
fn a_large_hash_that_differs_in_one_field_is_repaired_by_its_differing_buckets() {
    let mut sim = Sim::cluster(2, &config());
    for i in 0..5000 {
        sim.hset(0, "big", &format!("field:{i:08}"), &format!("value:{i:08}"));
    }
    apply(&mut sim, &[Op::Push(0), Op::Run]);
    sim.assert_converged();
    // What sending the value whole, as before, would cost one way.
    let whole: usize = sim.store(0).with_key(b"big", sim.now().unix_ms, |k| {
        let t = k.typed().expect("a hash");
        t.fragments(512, 0).iter().map(|f| f.encode().len()).sum()
    });
    apply(&mut sim, &[Op::Cut(0, 1)]);
    sim.hset(1, "big", "field:00000077", "changed at 1");
    apply(&mut sim, &[Op::Push(1), Op::Run]);
    let before = sim.delivered_bytes;
    apply(&mut sim, &[Op::Heal(0, 1), Op::Sync(0, 1), Op::Settle]);
    sim.assert_converged();
    let repair = sim.delivered_bytes - before;
    assert!(
        repair * 2 < whole,
        "the repair sent {repair} bytes; the whole hash is {whole}"
    );
}
