//! One outbound link per peer: a persistent TCP connection to its peer
//! port that carries our pushed updates and the reconciliations we start,
//! and receives the peer's acknowledgements and sync replies.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::framing::{self, PeerError, Writer};
use super::wire::{CHUNK_ENTRIES, Message};
use super::{Replication, sync};
use crate::clock::{Version, unix_millis};
use crate::membership::MemberId;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
/// A reconciliation the peer has not finished by then is abandoned (the
/// next one starts over); normal ones take milliseconds, a full join of a
/// large dataset seconds.
const SYNC_TIMEOUT: Duration = Duration::from_secs(120);

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
    /// Whether the last connection attempt got as far as a working link
    /// (then reconnecting starts again from the shortest delay).
    established: bool,
    /// Updates may have been lost since the last completed reconciliation:
    /// acknowledgements do not prove the peer has every earlier write.
    repairing: bool,
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
                if e.is_bad_input() {
                    Replication::count(&self.replication.stats.bad_frames, 1);
                }
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
        let (mut reader, mut writer) = framing::split(stream, self.replication.frame_limit());
        let hello = Message::Hello {
            node_id: self.replication.node_id,
            incarnation: self.replication.incarnation,
            hlc: self.replication.store.clock().current(),
        };
        framing::send(&mut writer, hello, &self.replication.stats.sync_bytes_sent).await?;
        tracing::debug!(peer = %self.peer.name, "replication link up");
        self.established = true;
        // Every new link starts with a reconciliation: it covers a join, a
        // restart, a healed partition and anything dropped while down.
        // Acknowledgements only count once that reconciliation has covered
        // whatever the link may have missed.
        self.repairing = true;
        self.state.repair.store(false, Ordering::Release);
        let mut next_session = 1u64;
        let mut session = Some(self.start_sync(&mut writer, next_session).await?);
        loop {
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
                session = None;
                self.state.sync_requested.store(true, Ordering::Release);
            }
            if session.is_none() && self.state.sync_requested.swap(false, Ordering::AcqRel) {
                next_session += 1;
                session = Some(self.start_sync(&mut writer, next_session).await?);
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                _ = self.drain.cancelled() => {
                    while let Ok(batch) = self.updates.try_recv() {
                        writer.feed(batch.frame.clone()).await?;
                    }
                    SinkExt::<Bytes>::flush(&mut writer).await?;
                    return Ok(());
                }
                _ = self.state.wake.notified() => {}
                message = framing::receive(&mut reader) => {
                    let message = message?.ok_or(PeerError::Closed)?;
                    if self.on_message(message, &mut session, &mut writer).await? {
                        session = None;
                    }
                }
                batch = self.updates.recv() => {
                    let Some(batch) = batch else { return Ok(()) };
                    writer.send(batch.frame.clone()).await?;
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
            start_ms: unix_millis(),
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

    /// Handles one message from the peer; returns true when the current
    /// reconciliation has completed.
    async fn on_message(
        &mut self,
        message: Message,
        session: &mut Option<Session>,
        writer: &mut Writer,
    ) -> Result<bool, PeerError> {
        let store = self.replication.store.clone();
        match message {
            Message::Ack { last_seq } => {
                if !self.repairing {
                    self.state.acked.fetch_max(last_seq, Ordering::AcqRel);
                    self.replication.acks.notify_waiters();
                }
                Ok(false)
            }
            Message::SyncEqual { session: id } => Ok(self.finish(session, id)),
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
                Ok(false)
            }
            Message::SyncSummary {
                session: id,
                leaves,
                keys,
                last,
            } => {
                let Some(current) = session.as_mut().filter(|s| s.id == id) else {
                    return Ok(false);
                };
                current
                    .theirs
                    .extend(keys.into_iter().map(|kv| (kv.key, (kv.version, kv.live))));
                current.leaves.extend(leaves);
                if last {
                    let (want, push) = sync::plan(&store, &current.leaves, &current.theirs);
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
                Ok(false)
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
                Ok(false)
            }
            Message::SyncDone { session: id } => Ok(self.finish(session, id)),
            _ => Err(PeerError::Unexpected),
        }
    }

    fn finish(&mut self, session: &Option<Session>, id: u64) -> bool {
        let Some(current) = session.as_ref().filter(|s| s.id == id) else {
            return false;
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
        true
    }
}
