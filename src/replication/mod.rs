//! Replication: every write reaches every node (DESIGN §4).
//!
//! - Push path: the distributor drains the store's change queue and hands
//!   each batch, encoded once, to every peer's link; a link whose bounded
//!   queue overflows drops it and repairs by anti-entropy instead. Clients
//!   never wait for peers (except through WAIT).
//! - Anti-entropy: every `--sync-interval` the next peer in a rotation is
//!   reconciled through the digest tree; every new link (a join, a restart,
//!   a healed partition, a broken link) starts with one.
//! - Tombstone collection: a tombstone goes once every known node has
//!   completed a reconciliation with us that started after it arrived.

pub(crate) mod framing;
mod inbound;
mod link;
pub mod sync;
pub mod wire;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keyring;
use crate::membership::{MemberState, MembershipHandle};
use crate::store::{Cause, Causes, Change, ChangeKind, ChangeReader, Lagged, Store};
use link::{Batch, LinkHandle};

/// How long a node that started empty may defer its peers' reconciliations
/// while it pulls its initial copy.
const FRESH_FOR_AT_MOST: Duration = Duration::from_secs(60);
/// Shortest window in which tombstones count as recent (it also covers a
/// few seconds of clock skew between nodes).
const MIN_RECENT_TOMBSTONE_WINDOW: Duration = Duration::from_secs(10);
const PULL_NOT_STARTED: u8 = 0;
const PULL_IN_FLIGHT: u8 = 1;
const PULL_DONE: u8 = 2;
/// Batches a link may have queued before it counts as overflowing.
const LINK_QUEUE_BATCHES: usize = 4096;

/// What the links, the inbound side and WAIT share.
pub struct Replication {
    store: Arc<Store>,
    /// The push path's reader of the store's change log (paused while
    /// there is no link).
    pusher: ChangeReader,
    /// The store's clock: every reading of time here.
    clock: Clock,
    config: Config,
    /// With a cluster key, links are encrypted and authenticated.
    keyring: Option<Arc<Keyring>>,
    node_id: u64,
    incarnation: u64,
    links: Mutex<HashMap<u64, LinkHandle>>,
    /// Per known node: when its last completed reconciliation with us
    /// started, and when we last saw it alive (unix ms).
    book: Mutex<HashMap<u64, PeerRecord>>,
    /// When we last completed a reconciliation with anyone (0: never).
    last_contact_ms: AtomicU64,
    /// Woken whenever a peer acknowledges updates (WAIT listens).
    acks: tokio::sync::Notify,
    /// A node that starts empty pulls its first copy from one peer: one of
    /// PULL_NOT_STARTED, PULL_IN_FLIGHT, PULL_DONE.
    initial_pull: std::sync::atomic::AtomicU8,
    started: std::time::Instant,
    pub stats: ReplicationStats,
}

#[derive(Debug, Clone, Copy, Default)]
struct PeerRecord {
    last_sync_start_ms: u64,
    last_seen_ms: u64,
}

#[derive(Debug, Default)]
pub struct ReplicationStats {
    /// Links closed because the peer sent something malformed or
    /// unauthenticated.
    pub bad_frames: AtomicU64,
    /// Of those, links whose peer did not prove it has our cluster key.
    pub auth_failures: AtomicU64,
    pub syncs_completed: AtomicU64,
    pub entries_pushed: AtomicU64,
    pub entries_received: AtomicU64,
    pub sync_bytes_sent: AtomicU64,
    pub queue_overflows: AtomicU64,
    pub initial_sync_done: std::sync::atomic::AtomicBool,
}

impl Replication {
    fn count(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts a link that ended on bad input from the peer.
    fn count_error(&self, e: &framing::PeerError) {
        if e.is_bad_input() {
            Self::count(&self.stats.bad_frames, 1);
        }
        if e.is_auth_failure() {
            Self::count(&self.stats.auth_failures, 1);
        }
    }

    /// Number of peers that acknowledged every update up to `seq`.
    pub fn acked_by(&self, seq: u64) -> usize {
        self.links
            .lock()
            .values()
            .filter(|l| l.state.acked.load(Ordering::Acquire) >= seq)
            .count()
    }

    /// WAIT: resolves with the number of peers that acknowledged `seq`,
    /// once it reaches `wanted` or `timeout` passes (never, if None).
    pub async fn wait_for(&self, seq: u64, wanted: usize, timeout: Option<Duration>) -> usize {
        let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
        loop {
            let notified = self.acks.notified();
            let acked = self.acked_by(seq);
            if acked >= wanted {
                return acked;
            }
            match deadline {
                Some(at) => {
                    if tokio::time::timeout_at(at, notified).await.is_err() {
                        return self.acked_by(seq);
                    }
                }
                None => notified.await,
            }
        }
    }

    /// INFO replication. Every node is a master in Redis's terms: it takes
    /// writes.
    pub fn info(&self, w: &mut crate::info::InfoWriter<'_>) {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        w.field("role", "master");
        w.field("connected_slaves", 0);
        w.field("peers_linked", self.connected_peers());
        w.field(
            "initial_sync_done",
            u8::from(self.stats.initial_sync_done.load(Ordering::Relaxed)),
        );
        w.field("syncs_completed", load(&self.stats.syncs_completed));
        w.field("entries_pushed", load(&self.stats.entries_pushed));
        w.field("entries_received", load(&self.stats.entries_received));
        w.field("peer_bytes_sent", load(&self.stats.sync_bytes_sent));
        w.field("queue_overflows", load(&self.stats.queue_overflows));
        w.field("bad_frames", load(&self.stats.bad_frames));
        w.field("auth_failures", load(&self.stats.auth_failures));
        w.field("tombstones", self.store.tombstone_len());
        w.field("last_change_seq", self.store.last_seq());
    }

    /// Whether this node is pulling its first full copy: it started empty
    /// and one of its links is fetching everything. Meanwhile it asks peers
    /// that would send it another full copy to come back later (bounded in
    /// time, so a node that cannot finish never refuses its peers for long).
    fn pulling_initial_copy(&self) -> bool {
        self.initial_pull.load(Ordering::Acquire) == PULL_IN_FLIGHT
            && self.clock.since(self.started) < FRESH_FOR_AT_MOST
    }

    /// Asks whether a link may start a reconciliation now: the first one of
    /// a node that is still empty becomes its initial pull and the others
    /// wait for it (false); everything else goes ahead (true).
    fn claim_initial_pull(&self) -> (bool, bool) {
        match self.initial_pull.load(Ordering::Acquire) {
            PULL_DONE => (true, false),
            PULL_IN_FLIGHT => (self.clock.since(self.started) >= FRESH_FOR_AT_MOST, false),
            _ if !self.store.is_empty() => {
                self.initial_pull.store(PULL_DONE, Ordering::Release);
                (true, false)
            }
            _ => {
                let claimed = self
                    .initial_pull
                    .compare_exchange(
                        PULL_NOT_STARTED,
                        PULL_IN_FLIGHT,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    )
                    .is_ok();
                (claimed, claimed)
            }
        }
    }

    /// The initial pull ended: done, or failed (then another link may try).
    fn end_initial_pull(&self, completed: bool) {
        let next = if completed {
            PULL_DONE
        } else {
            PULL_NOT_STARTED
        };
        self.initial_pull.store(next, Ordering::Release);
    }

    /// Tombstones written since this unix-ms time are "recent": handed even
    /// to peers that hold nothing for their key (see `sync::worth_sending`).
    /// The window spans many reconciliation rounds, so every node has
    /// reconciled (and got the tombstone) long before it closes.
    fn recent_tombstones_since(&self) -> u64 {
        let window = (self.config.sync_interval * 10).max(MIN_RECENT_TOMBSTONE_WINDOW);
        self.clock
            .wall_ms()
            .saturating_sub(window.as_millis() as u64)
    }

    /// Largest frame accepted from a peer: one entry of the largest value
    /// a client may write, plus room for the frame around it.
    fn frame_limit(&self) -> usize {
        usize::try_from(self.config.proto_max_bulk_len)
            .unwrap_or(usize::MAX)
            .saturating_add(1 << 20)
    }

    pub fn connected_peers(&self) -> usize {
        self.links.lock().len()
    }

    /// A reconciliation with `node_id` that started at `start_ms` finished.
    fn sync_completed(&self, node_id: u64, start_ms: u64) {
        let mut book = self.book.lock();
        let record = book.entry(node_id).or_default();
        record.last_sync_start_ms = record.last_sync_start_ms.max(start_ms);
        record.last_seen_ms = self.clock.wall_ms();
        self.last_contact_ms
            .store(self.clock.wall_ms(), Ordering::Release);
        Self::count(&self.stats.syncs_completed, 1);
        self.stats.initial_sync_done.store(true, Ordering::Release);
        drop(book);
        self.update_horizon();
    }

    /// Tombstones that arrived before every known node's last completed
    /// reconciliation with us have been seen by all of them.
    fn update_horizon(&self) {
        let now = self.clock.wall_ms();
        let forget = self.config.forget_after.as_millis() as u64;
        let mut book = self.book.lock();
        book.retain(|_, r| now.saturating_sub(r.last_seen_ms) <= forget);
        let horizon = book.values().map(|r| r.last_sync_start_ms).min().unwrap_or(
            if self.config.join.is_empty() && self.last_contact_ms.load(Ordering::Acquire) == 0 {
                u64::MAX
            } else {
                0
            },
        );
        self.store.set_tombstone_horizon(horizon);
        // A lone node that never had peers may collect at once; otherwise a
        // tombstone is kept while it is recent (see recent_tombstones_since).
        let min_age = if horizon == u64::MAX {
            u64::MAX
        } else {
            self.recent_tombstones_since()
        };
        self.store.set_tombstone_min_age(min_age);
    }

    /// Called before a reconciliation starts: a node cut off from every
    /// peer for longer than `--forget-after` has been forgotten by them
    /// (they collected tombstones it never saw), so it discards its data
    /// and pulls everything instead of resurrecting deleted keys.
    fn before_sync(&self) {
        let last = self.last_contact_ms.load(Ordering::Acquire);
        let forget = self.config.forget_after.as_millis() as u64;
        if last != 0 && self.clock.wall_ms().saturating_sub(last) > forget {
            tracing::warn!(
                cut_off_for_s = self.clock.wall_ms().saturating_sub(last) / 1000,
                "cut off from the cluster longer than --forget-after: discarding local data and resyncing"
            );
            self.store.discard_all();
            self.last_contact_ms
                .store(self.clock.wall_ms(), Ordering::Release);
        }
    }
}

/// Starts the inbound side on `listener` (the TCP half of the bound peer
/// port), the distributor and the link manager.
pub fn start(
    config: &Config,
    keyring: Option<Arc<Keyring>>,
    listener: TcpListener,
    store: Arc<Store>,
    membership: MembershipHandle,
    shutdown: CancellationToken,
    tracker: &TaskTracker,
) -> Arc<Replication> {
    let clock = store.clock().clone();
    let pusher = store.subscribe(Causes::NONE);
    let replication = Arc::new(Replication {
        pusher,
        started: clock.now(),
        clock,
        store,
        config: config.clone(),
        keyring,
        node_id: membership.me.node_id,
        incarnation: membership.me.incarnation,
        links: Mutex::new(HashMap::new()),
        book: Mutex::new(HashMap::new()),
        last_contact_ms: AtomicU64::new(0),
        acks: tokio::sync::Notify::new(),
        initial_pull: std::sync::atomic::AtomicU8::new(PULL_NOT_STARTED),
        stats: ReplicationStats::default(),
    });
    replication.update_horizon();
    tracker.spawn(inbound::run(
        listener,
        replication.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(distribute(replication.clone(), shutdown.clone()));
    tracker.spawn(manage_links(replication.clone(), membership, shutdown));
    replication
}

/// How long writes still executing at shutdown get before the last changes
/// are handed to the links (client connections finish their current batch
/// within microseconds), and how long links then get to send them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(100);
const LINK_DRAIN_GRACE: Duration = Duration::from_secs(1);

/// What peers need of the change log: this node's own writes (its
/// evictions included). Replicated writes came from the peer that made
/// them, which sent them to every node itself; expiries happen on every
/// node on their own.
const PUSHED: Causes = Causes::of(&[Cause::Local, Cause::Evicted]);

/// The push path's reader of the change log: hands every batch of local
/// changes to every link; at shutdown, hands over the last ones and lets
/// the links send them before they close.
async fn distribute(replication: Arc<Replication>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = replication.pusher.ready() => {}
        }
        push_pending(&replication);
    }
    tokio::time::sleep(SHUTDOWN_GRACE).await;
    push_pending(&replication);
    let links: Vec<LinkHandle> = replication.links.lock().drain().map(|(_, l)| l).collect();
    futures_util::future::join_all(links.into_iter().map(|l| l.finish(LINK_DRAIN_GRACE))).await;
}

fn push_pending(replication: &Replication) {
    let batch = match replication.store.read_changes(&replication.pusher) {
        Ok(batch) => batch,
        Err(Lagged) => {
            // What was dropped is in the store only: repair every link.
            for link in replication.links.lock().values() {
                link.repair();
            }
            return;
        }
    };
    let changes: Vec<&Change> = batch.iter().collect();
    for chunk in changes.chunks(wire::CHUNK_ENTRIES) {
        let last_seq = chunk.last().map_or(0, |c| c.seq);
        let count = chunk
            .iter()
            .filter(|c| matches!(c.kind, ChangeKind::Entry { .. }))
            .count() as u64;
        let Ok(frame) = wire::encode_updates(chunk, last_seq) else {
            continue;
        };
        let batch = Arc::new(Batch {
            frame: frame.into(),
        });
        for link in replication.links.lock().values() {
            if link.offer(batch.clone()) {
                Replication::count(&replication.stats.entries_pushed, count);
            } else {
                Replication::count(&replication.stats.queue_overflows, 1);
            }
        }
    }
}

/// Keeps one link per alive member, and starts a reconciliation with the
/// next one in the rotation every sync interval.
async fn manage_links(
    replication: Arc<Replication>,
    mut membership: MembershipHandle,
    shutdown: CancellationToken,
) {
    let mut tick = replication.clock.ticker(replication.config.sync_interval);
    let mut rotation = 0usize;
    loop {
        reconcile_links(&replication, &membership);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = membership.changed() => if !changed { return },
            _ = tick.tick() => {
                let links = replication.links.lock();
                let mut ids: Vec<&u64> = links.keys().collect();
                ids.sort();
                if !ids.is_empty() {
                    rotation = (rotation + 1) % ids.len();
                    links[ids[rotation]].request_sync();
                }
                drop(links);
                replication.update_horizon();
            }
        }
    }
    // The distributor hands the last changes to the links and closes them.
}

fn reconcile_links(replication: &Arc<Replication>, membership: &MembershipHandle) {
    let members = membership.members();
    let now = replication.clock.wall_ms();
    {
        let mut book = replication.book.lock();
        for m in members.iter().filter(|m| !m.is_self) {
            if m.state != MemberState::Down {
                book.entry(m.id.node_id).or_default().last_seen_ms = now;
            }
        }
    }
    let mut links = replication.links.lock();
    let alive: HashMap<u64, _> = members
        .iter()
        .filter(|m| !m.is_self && m.state != MemberState::Down)
        .map(|m| (m.id.node_id, m.id.clone()))
        .collect();
    links.retain(|node_id, link| {
        let keep = alive.contains_key(node_id);
        if !keep {
            link.stop();
        }
        keep
    });
    for (node_id, id) in alive {
        links
            .entry(node_id)
            .or_insert_with(|| LinkHandle::start(id, replication.clone(), LINK_QUEUE_BATCHES));
    }
    // With nobody to push to, the push path reads nothing, so writes on a
    // lone node stage nothing for it; a new link starts with a
    // reconciliation, which covers what was written meanwhile.
    let pushed = if links.is_empty() {
        Causes::NONE
    } else {
        PUSHED
    };
    replication
        .store
        .set_reader_causes(&replication.pusher, pushed);
}
