//! The node-wide reconciliation bookkeeping: per known node, when its last
//! completed reconciliation with us started and when it was last seen;
//! when we last reached anyone; the initial pull of a node that started
//! empty. From these it sets the store's tombstone horizon (DESIGN §4: a
//! tombstone goes once every known node has completed a reconciliation
//! with us that started after it arrived) and decides the `--forget-after`
//! discard.
//!
//! It never sends, reads a clock or starts anything: sessions report to it
//! and ask it, passing the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::store::Store;

/// How long a node that started empty may defer its peers' reconciliations
/// while it pulls its initial copy.
const FRESH_FOR_AT_MOST: Duration = Duration::from_secs(60);
/// Shortest window in which tombstones count as recent (it also covers a
/// few seconds of clock skew between nodes).
const MIN_RECENT_TOMBSTONE_WINDOW: Duration = Duration::from_secs(10);

pub struct Bookkeeping {
    peers: HashMap<u64, PeerRecord>,
    /// When we last completed a reconciliation with anyone (unix ms).
    last_contact_ms: Option<u64>,
    initial_pull: InitialPull,
    /// When the node started (the initial pull is bounded from then).
    started: Instant,
    /// Tombstones written this long ago are still "recent".
    recent_window: Duration,
    forget_after: Duration,
    /// Started with seeds to join: peers are expected even before any is
    /// met, so tombstones wait for them.
    joins: bool,
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerRecord {
    last_sync_start_ms: u64,
    last_seen_ms: u64,
}

/// A node that starts empty pulls its first copy from one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InitialPull {
    /// No link has claimed it yet (the store may have filled meanwhile).
    NotStarted,
    /// One link is pulling; the others wait, and peers are told busy.
    InFlight,
    Done,
}

/// The answer to a link that wants to start a reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    Go,
    /// Go, and this reconciliation is the node's initial pull: end it with
    /// [`Bookkeeping::end_initial_pull`].
    GoInitial,
    /// Another link is pulling this node's first copy: try again later.
    Wait,
}

impl Bookkeeping {
    pub fn new(config: &Config, started: Instant) -> Self {
        Self {
            peers: HashMap::new(),
            last_contact_ms: None,
            initial_pull: InitialPull::NotStarted,
            started,
            recent_window: (config.sync_interval * 10).max(MIN_RECENT_TOMBSTONE_WINDOW),
            forget_after: config.forget_after,
            joins: !config.join.is_empty(),
        }
    }

    /// Membership reports `node` alive: it counts as known (its
    /// reconciliations hold tombstones back) until `--forget-after` passes
    /// without news of it.
    pub fn saw_alive(&mut self, node: u64, now_ms: u64) {
        self.peers.entry(node).or_default().last_seen_ms = now_ms;
    }

    /// A reconciliation with `node` that started at `start_ms` finished.
    pub fn sync_completed(&mut self, store: &Store, node: u64, start_ms: u64, now_ms: u64) {
        let record = self.peers.entry(node).or_default();
        record.last_sync_start_ms = record.last_sync_start_ms.max(start_ms);
        record.last_seen_ms = now_ms;
        self.last_contact_ms = Some(now_ms);
        self.update_horizon(store, now_ms);
    }

    /// Tombstones that arrived before every known node's last completed
    /// reconciliation with us have been seen by all of them; nodes unseen
    /// for longer than `--forget-after` are forgotten first.
    pub fn update_horizon(&mut self, store: &Store, now_ms: u64) {
        let forget = self.forget_after.as_millis() as u64;
        self.peers
            .retain(|_, r| now_ms.saturating_sub(r.last_seen_ms) <= forget);
        let lone = !self.joins && self.last_contact_ms.is_none();
        let horizon = self
            .peers
            .values()
            .map(|r| r.last_sync_start_ms)
            .min()
            .unwrap_or(if lone { u64::MAX } else { 0 });
        store.set_tombstone_horizon(horizon);
        // A lone node that never had peers may collect at once; otherwise a
        // tombstone is kept while it is recent (see recent_tombstones_since).
        let min_age = if horizon == u64::MAX {
            u64::MAX
        } else {
            self.recent_tombstones_since(now_ms)
        };
        store.set_tombstone_min_age(min_age);
    }

    /// Tombstones written since this unix-ms time are "recent": handed even
    /// to peers that hold nothing for their key (see `sync::worth_sending`).
    /// The window spans many reconciliation rounds, so every node has
    /// reconciled (and got the tombstone) long before it closes.
    pub fn recent_tombstones_since(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.recent_window.as_millis() as u64)
    }

    /// Called before a reconciliation starts, on either side: a node cut
    /// off from every peer for longer than `--forget-after` has been
    /// forgotten by them (they collected tombstones it never saw), so it
    /// discards its data and pulls everything instead of resurrecting
    /// deleted keys.
    pub fn before_sync(&mut self, store: &Store, now_ms: u64) {
        let Some(last) = self.last_contact_ms else {
            return;
        };
        let cut_off = now_ms.saturating_sub(last);
        if cut_off > self.forget_after.as_millis() as u64 {
            tracing::warn!(
                cut_off_for_s = cut_off / 1000,
                "cut off from the cluster longer than --forget-after: discarding local data and resyncing"
            );
            store.discard_all();
            self.last_contact_ms = Some(now_ms);
        }
    }

    /// Whether this node is pulling its first full copy: it started empty
    /// and one of its links is fetching everything. Meanwhile it asks peers
    /// that would send it another full copy to come back later (bounded in
    /// time, so a node that cannot finish never refuses its peers for long).
    pub fn pulling_initial_copy(&self, now: Instant) -> bool {
        self.initial_pull == InitialPull::InFlight && !self.fresh_for_too_long(now)
    }

    /// A link asks whether it may start a reconciliation now: the first one
    /// of a node that is still empty becomes its initial pull and the
    /// others wait for it; everything else goes ahead.
    pub fn claim_initial_pull(&mut self, store: &Store, now: Instant) -> Claim {
        match self.initial_pull {
            InitialPull::Done => Claim::Go,
            InitialPull::InFlight if self.fresh_for_too_long(now) => Claim::Go,
            InitialPull::InFlight => Claim::Wait,
            InitialPull::NotStarted if !store.is_empty() => {
                self.initial_pull = InitialPull::Done;
                Claim::Go
            }
            InitialPull::NotStarted => {
                self.initial_pull = InitialPull::InFlight;
                Claim::GoInitial
            }
        }
    }

    /// The initial pull ended: done, or failed (then another link may try).
    pub fn end_initial_pull(&mut self, completed: bool) {
        self.initial_pull = if completed {
            InitialPull::Done
        } else {
            InitialPull::NotStarted
        };
    }

    fn fresh_for_too_long(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.started) >= FRESH_FOR_AT_MOST
    }
}
