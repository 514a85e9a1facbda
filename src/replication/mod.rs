//! Replication: every write reaches every node (DESIGN §4).
//!
//! - Push path: the distributor, a reader of the store's change log (this
//!   node's own writes; paused while there is no link), hands each batch,
//!   encoded once, to every peer's link; a link whose bounded queue
//!   overflows drops it and repairs by anti-entropy instead, as do all of
//!   them if the log dropped changes before they were read. Clients never
//!   wait for peers (except through WAIT).
//! - Anti-entropy: every `--sync-interval` the next peer in a rotation is
//!   reconciled through the digest tree; every new link (a join, a restart,
//!   a healed partition, a broken link) starts with one. The protocol is in
//!   [`session`] (sans-IO); [`link`] and [`inbound`] are the loops that
//!   carry its frames.
//! - Tombstone collection: a tombstone goes once every known node has
//!   completed a reconciliation with us that started after it arrived
//!   ([`session::Bookkeeping`]).
//!
//! This module owns what the node's tasks share ([`Replication`]) and the
//! tasks that keep one link per live member; it never decodes a message.

pub(crate) mod framing;
mod inbound;
mod link;
pub(crate) mod session;
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
use session::{Bookkeeping, Local};

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
    /// What completed reconciliations tell: tombstone horizon, initial
    /// pull, last contact.
    bookkeeping: Mutex<Bookkeeping>,
    /// Woken whenever a peer acknowledges updates (WAIT listens).
    acks: tokio::sync::Notify,
    pub stats: ReplicationStats,
}

#[derive(Debug, Default)]
pub struct ReplicationStats {
    /// Links closed because the peer sent something malformed or
    /// unauthenticated.
    pub bad_frames: AtomicU64,
    /// Of those, links whose peer did not prove it has our cluster key.
    pub auth_failures: AtomicU64,
    /// Connections to the peer port closed at once because
    /// `--max-peer-links` inbound links were open.
    pub rejected_peer_links: AtomicU64,
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
        w.field("rejected_peer_links", load(&self.stats.rejected_peer_links));
        w.field("tombstones", self.store.tombstone_len());
        w.field("last_change_seq", self.store.last_seq());
    }

    /// This node as the sessions see it.
    fn local(&self) -> Local<'_> {
        Local {
            store: &self.store,
            bookkeeping: &self.bookkeeping,
            stats: &self.stats,
        }
    }

    fn update_horizon(&self) {
        let now_ms = self.clock.wall_ms();
        self.bookkeeping.lock().update_horizon(&self.store, now_ms);
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
        bookkeeping: Mutex::new(Bookkeeping::new(config, clock.now())),
        clock,
        store,
        config: config.clone(),
        keyring,
        node_id: membership.me.node_id,
        incarnation: membership.me.incarnation,
        links: Mutex::new(HashMap::new()),
        acks: tokio::sync::Notify::new(),
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
pub(crate) const PUSHED: Causes = Causes::of(&[Cause::Local, Cause::Evicted]);

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
        let mut bookkeeping = replication.bookkeeping.lock();
        for m in members.iter().filter(|m| !m.is_self) {
            if m.state != MemberState::Down {
                bookkeeping.saw_alive(m.id.node_id, now);
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
