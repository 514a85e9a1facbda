//! One outbound link per peer: a persistent TCP connection to its peer
//! port that carries our pushed updates and the reconciliations we start,
//! and receives the peer's acknowledgements and sync replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::framing::{self, PeerError, Writer};
use super::wire::{CHUNK_ENTRIES, Message};
use super::{Replication, sync};
use crate::clock::Version;
use crate::membership::MemberId;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A reconciliation the peer has not finished by then is abandoned (the
/// next one starts over); normal ones take milliseconds, a full join of a
/// large dataset seconds.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// The link from the larger node id waits this long at a first meeting.
const FIRST_MEETING_DELAY: Duration = Duration::from_millis(500);
/// Retry delay when the peer is busy pulling its first copy.
const RETRY_BUSY: Duration = Duration::from_millis(300);

/// One encoded Updates frame, shared by every link.
pub struct Batch {
    pub frame: Bytes,
}

/// What the link shares with the rest of the node.
#[derive(Default)]
pub struct LinkState {
    /// Highest change sequence the peer has applied (or received through a
    /// completed reconciliation).
    pub acked: AtomicU64,
    /// Set when queued updates were dropped: a reconciliation must follow.
    repair: AtomicBool,
    sync_requested: AtomicBool,
    wake: Notify,
}

pub struct LinkHandle {
    pub state: Arc<LinkState>,
    queue: mpsc::Sender<Arc<Batch>>,
    stop: CancellationToken,
    drain: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl LinkHandle {
    pub fn start(peer: MemberId, replication: Arc<Replication>, capacity: usize) -> Self {
        let (queue, updates) = mpsc::channel(capacity);
        let state = Arc::new(LinkState::default());
        let stop = CancellationToken::new();
        let drain = CancellationToken::new();
        let link = Link {
            drain: drain.clone(),
            peer,
            replication,
            state: state.clone(),
            updates,
            stop: stop.clone(),
            repairing: true,
            established: false,
            connections: 0,
            holds_initial_pull: false,
        };
        let task = tokio::spawn(link.run());
        Self {
            state,
            queue,
            stop,
            drain,
            task,
        }
    }

    /// Queues a batch without ever waiting; false if the queue is full, in
    /// which case the link drops its queue and repairs by reconciliation.
    pub fn offer(&self, batch: Arc<Batch>) -> bool {
        if self.queue.try_send(batch).is_ok() {
            return true;
        }
        self.state.repair.store(true, Ordering::Release);
        self.state.wake.notify_one();
        false
    }

    /// The changes this link should have carried are lost (the change log
    /// dropped them before the push path read them): repair by
    /// reconciliation, as after a queue overflow.
    pub fn repair(&self) {
        self.state.repair.store(true, Ordering::Release);
        self.state.wake.notify_one();
    }

    pub fn request_sync(&self) {
        self.state.sync_requested.store(true, Ordering::Release);
        self.state.wake.notify_one();
    }

    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Graceful shutdown: sends what is queued, then ends; resolves when
    /// the link has ended (or after `grace`, then it is stopped).
    pub async fn finish(self, grace: Duration) {
        self.drain.cancel();
        if tokio::time::timeout(grace, self.task).await.is_err() {
            self.stop.cancel();
        }
    }
}

struct Link {
    /// Cancelled at shutdown: send the queue, then end.
    drain: CancellationToken,
    peer: MemberId,
    replication: Arc<Replication>,
    state: Arc<LinkState>,
    updates: mpsc::Receiver<Arc<Batch>>,
    stop: CancellationToken,
    /// Connections made so far (the first one is a first meeting).
    connections: u32,
    /// This link is pulling the fresh node's first copy.
    holds_initial_pull: bool,
    /// Whether the last connection attempt got as far as a working link
    /// (then reconnecting starts again from the shortest delay).
    established: bool,
    /// Updates may have been lost since the last completed reconciliation:
    /// acknowledgements do not prove the peer has every earlier write.
    repairing: bool,
}

/// What a message from the peer means for the current reconciliation.
enum Outcome {
    Continue,
    Done,
    /// The peer is pulling its own first copy: try again a little later.
    Busy,
}

async fn sleep_until_some(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The reconciliation this link started and is waiting on.
struct Session {
    id: u64,
    started: tokio::time::Instant,
    start_ms: u64,
    start_seq: u64,
    leaves: Vec<u16>,
    theirs: HashMap<Vec<u8>, (Version, bool)>,
}

impl Link {
    async fn run(mut self) {
        let mut retry = RETRY_MIN;
        loop {
            let stop = self.stop.clone();
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = self.connected() => r,
            };
            if self.drain.is_cancelled() {
                return;
            }
            if self.established {
                retry = RETRY_MIN;
                self.established = false;
            }
            if let Err(e) = result {
                self.replication.count_error(&e);
                tracing::debug!(peer = %self.peer.name, error = %e, "replication link down; retrying");
            }
            // Whatever was queued may not have arrived: repair on reconnect.
            self.state.repair.store(true, Ordering::Release);
            tokio::select! {
                _ = self.stop.cancelled() => return,
                _ = tokio::time::sleep(retry) => {}
            }
            retry = (retry * 2).min(RETRY_MAX);
        }
    }

    async fn connected(&mut self) -> Result<(), PeerError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.peer.peer))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connect timed out")
            })??;
        stream.set_nodelay(true)?;
        let keyring = self.replication.keyring.as_deref();
        let (mut reader, mut writer) =
            framing::connect(stream, self.replication.frame_limit(), keyring).await?;
        let hello = Message::Hello {
            node_id: self.replication.node_id,
            incarnation: self.replication.incarnation,
            hlc: self.replication.clock.hlc().current(),
        };
        framing::send(&mut writer, hello, &self.replication.stats.sync_bytes_sent).await?;
        tracing::debug!(peer = %self.peer.name, "replication link up");
        self.established = true;
        // Every new link starts with a reconciliation: it covers a join, a
        // restart, a healed partition and anything dropped while down.
        // Acknowledgements only count once that reconciliation has covered
        // whatever the link may have missed. When two nodes meet for the
        // first time both links come up at once; the one from the larger
        // node id waits a moment, so the other's reconciliation does the
        // work and its own finds nothing left to do.
        self.repairing = true;
        self.state.repair.store(false, Ordering::Release);
        let defer = self.connections == 0 && self.replication.node_id > self.peer.node_id;
        self.connections += 1;
        let mut sync_at = Some(
            tokio::time::Instant::now()
                + if defer {
                    FIRST_MEETING_DELAY
                } else {
                    Duration::ZERO
                },
        );
        let mut next_session = 0u64;
        let mut session: Option<Session> = None;
        let result = self
            .serve_link(
                &mut reader,
                &mut writer,
                &mut session,
                &mut sync_at,
                &mut next_session,
            )
            .await;
        if self.holds_initial_pull {
            self.holds_initial_pull = false;
            self.replication.end_initial_pull(false);
        }
        result
    }

    async fn serve_link(
        &mut self,
        reader: &mut framing::Reader,
        writer: &mut Writer,
        session: &mut Option<Session>,
        sync_at: &mut Option<tokio::time::Instant>,
        next_session: &mut u64,
    ) -> Result<(), PeerError> {
        loop {
            if sync_at.is_some_and(|at| at <= tokio::time::Instant::now()) {
                *sync_at = None;
                self.state.sync_requested.store(true, Ordering::Release);
            }
            if self.state.repair.swap(false, Ordering::AcqRel) {
                while self.updates.try_recv().is_ok() {}
                self.repairing = true;
                self.state.sync_requested.store(true, Ordering::Release);
            }
            if session
                .as_ref()
                .is_some_and(|s| s.started.elapsed() > SYNC_TIMEOUT)
            {
                tracing::warn!(peer = %self.peer.name, "reconciliation timed out; starting over");
                *session = None;
                self.state.sync_requested.store(true, Ordering::Release);
            }
            if session.is_none() && self.state.sync_requested.swap(false, Ordering::AcqRel) {
                let (go, initial) = if self.holds_initial_pull {
                    (true, true)
                } else {
                    self.replication.claim_initial_pull()
                };
                if !go {
                    // Another link is pulling this node's first copy.
                    *sync_at = Some(tokio::time::Instant::now() + RETRY_BUSY);
                } else {
                    self.holds_initial_pull = initial;
                    *next_session += 1;
                    *session = Some(self.start_sync(writer, *next_session).await?);
                }
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                _ = self.drain.cancelled() => {
                    let sent = &self.replication.stats.sync_bytes_sent;
                    while let Ok(batch) = self.updates.try_recv() {
                        writer.feed_frame(batch.frame.clone(), sent).await?;
                    }
                    writer.flush().await?;
                    return Ok(());
                }
                _ = self.state.wake.notified() => {}
                _ = sleep_until_some(*sync_at) => {}
                message = framing::receive(reader) => {
                    let message = message?.ok_or(PeerError::Closed)?;
                    match self.on_message(message, session, writer).await? {
                        Outcome::Continue => {}
                        Outcome::Done => {
                            *session = None;
                            if self.holds_initial_pull {
                                self.holds_initial_pull = false;
                                self.replication.end_initial_pull(true);
                            }
                        }
                        Outcome::Busy => {
                            *session = None;
                            *sync_at = Some(tokio::time::Instant::now() + RETRY_BUSY);
                        }
                    }
                }
                batch = self.updates.recv() => {
                    let Some(batch) = batch else { return Ok(()) };
                    writer.send_frame(batch.frame.clone(), &self.replication.stats.sync_bytes_sent).await?;
                }
            }
        }
    }

    async fn start_sync(&mut self, writer: &mut Writer, id: u64) -> Result<Session, PeerError> {
        self.replication.before_sync();
        let store = &self.replication.store;
        let session = Session {
            id,
            started: tokio::time::Instant::now(),
            start_ms: self.replication.clock.wall_ms(),
            start_seq: store.last_seq(),
            leaves: Vec::new(),
            theirs: HashMap::new(),
        };
        let root = store.digest_tree().root();
        self.send(
            writer,
            Message::SyncRoot {
                session: session.id,
                root,
                truncated: store.truncated(),
            },
        )
        .await?;
        Ok(session)
    }

    async fn send(&self, writer: &mut Writer, message: Message) -> Result<(), PeerError> {
        framing::send(writer, message, &self.replication.stats.sync_bytes_sent).await
    }

    /// Handles one message from the peer.
    async fn on_message(
        &mut self,
        message: Message,
        session: &mut Option<Session>,
        writer: &mut Writer,
    ) -> Result<Outcome, PeerError> {
        let store = self.replication.store.clone();
        match message {
            Message::Ack { last_seq } => {
                if !self.repairing {
                    self.state.acked.fetch_max(last_seq, Ordering::AcqRel);
                    self.replication.acks.notify_waiters();
                }
                Ok(Outcome::Continue)
            }
            Message::SyncEqual { session: id } => Ok(self.finish(session, id)),
            Message::SyncBusy { session: id } => Ok(match session {
                Some(s) if s.id == id => Outcome::Busy,
                _ => Outcome::Continue,
            }),
            Message::SyncInner {
                session: id,
                truncated,
                inner,
            } => {
                store.truncate(truncated);
                let groups = sync::differing_groups(&store, &inner)
                    .into_iter()
                    .map(|g| (g, sync::leaf_hashes(&store, usize::from(g))))
                    .collect();
                self.send(
                    writer,
                    Message::SyncLeaves {
                        session: id,
                        groups,
                    },
                )
                .await?;
                Ok(Outcome::Continue)
            }
            Message::SyncSummary {
                session: id,
                leaves,
                keys,
                last,
            } => {
                let Some(current) = session.as_mut().filter(|s| s.id == id) else {
                    return Ok(Outcome::Continue);
                };
                current
                    .theirs
                    .extend(keys.into_iter().map(|kv| (kv.key, (kv.version, kv.live))));
                current.leaves.extend(leaves);
                if last {
                    let recent = self.replication.recent_tombstones_since();
                    let (want, push) = sync::plan(&store, &current.leaves, &current.theirs, recent);
                    current.theirs = HashMap::new();
                    let sent = &self.replication.stats.sync_bytes_sent;
                    framing::send_entries(writer, id, &push, sent).await?;
                    let want: Vec<serde_bytes::ByteBuf> =
                        want.into_iter().map(serde_bytes::ByteBuf::from).collect();
                    // At least one frame, the last one marked as such.
                    let chunks: Vec<&[serde_bytes::ByteBuf]> = match want.is_empty() {
                        true => vec![&[]],
                        false => want.chunks(CHUNK_ENTRIES).collect(),
                    };
                    for (i, chunk) in chunks.iter().enumerate() {
                        let message = Message::SyncWant {
                            session: id,
                            keys: chunk.to_vec(),
                            last: i + 1 == chunks.len(),
                        };
                        self.send(writer, message).await?;
                    }
                }
                Ok(Outcome::Continue)
            }
            Message::SyncEntries {
                session: id,
                entries,
                ..
            } => {
                let (applied, ours) = sync::apply_and_rebut(&store, &entries);
                Replication::count(&self.replication.stats.entries_received, applied as u64);
                let sent = &self.replication.stats.sync_bytes_sent;
                framing::send_entries(writer, id, &ours, sent).await?;
                Ok(Outcome::Continue)
            }
            Message::SyncDone { session: id } => Ok(self.finish(session, id)),
            _ => Err(PeerError::Unexpected),
        }
    }

    fn finish(&mut self, session: &Option<Session>, id: u64) -> Outcome {
        let Some(current) = session.as_ref().filter(|s| s.id == id) else {
            return Outcome::Continue;
        };
        self.repairing = false;
        // Everything written before the reconciliation started is now on
        // the peer.
        self.state
            .acked
            .fetch_max(current.start_seq, Ordering::AcqRel);
        self.replication.acks.notify_waiters();
        self.replication
            .sync_completed(self.peer.node_id, current.start_ms);
        Outcome::Done
    }
}
