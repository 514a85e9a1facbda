//! One outbound link per peer: a persistent TCP connection to its peer
//! port that carries our pushed updates and the reconciliations we start,
//! and receives the peer's acknowledgements and sync replies.
//!
//! The loop is thin: it connects (and reconnects), sends queued batches,
//! hands every message from the peer to the connection's [`Initiator`],
//! writes what it returns and sleeps until the initiator's next timer. When
//! to reconcile and what to send are the initiator's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use super::Replication;
use super::framing::{self, PeerError};
use super::session::{Initiator, Now};
use super::wire::Message;
use crate::clock::Clock;
use crate::membership::MemberId;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

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
            established: false,
            connections: 0,
            initiator: None,
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
    /// Whether the last connection attempt got as far as a working link
    /// (then reconnecting starts again from the shortest delay).
    established: bool,
    /// The protocol of the current connection, while it is up.
    initiator: Option<Initiator>,
}

async fn sleep_until_some(clock: &Clock, deadline: Option<Instant>) {
    match deadline {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Link {
    async fn run(mut self) {
        let mut retry = RETRY_MIN;
        loop {
            let stop = self.stop.clone();
            let result = tokio::select! {
                _ = stop.cancelled() => None,
                r = self.connected() => Some(r),
            };
            // Also when the connection was dropped mid-await by a stop.
            self.close_connection();
            let Some(result) = result else { return };
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

    /// The connection is gone: its initiator lets go of what it held.
    fn close_connection(&mut self) {
        if let Some(initiator) = self.initiator.take() {
            initiator.close(self.replication.local());
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
        // The new connection's initiator repairs whatever was missed.
        self.state.repair.store(false, Ordering::Release);
        self.initiator = Some(Initiator::connected(
            self.replication.node_id,
            self.peer.node_id,
            self.connections == 0,
            self.replication.clock.now(),
        ));
        self.connections += 1;
        self.serve_link(&mut reader, &mut writer).await
    }

    async fn serve_link(
        &mut self,
        reader: &mut framing::Reader,
        writer: &mut framing::Writer,
    ) -> Result<(), PeerError> {
        let replication = &*self.replication;
        let (clock, local) = (&replication.clock, replication.local());
        let sent = &replication.stats.sync_bytes_sent;
        let Some(initiator) = self.initiator.as_mut() else {
            return Ok(());
        };
        loop {
            if self.state.repair.swap(false, Ordering::AcqRel) {
                while self.updates.try_recv().is_ok() {}
                initiator.repair();
            }
            if self.state.sync_requested.swap(false, Ordering::AcqRel) {
                initiator.request_sync();
            }
            if !initiator.idle()
                && let Some(root) = initiator.poll(local, Now::read(clock))
            {
                framing::send(writer, root, sent).await?;
            }
            tokio::select! {
                biased;
                _ = self.stop.cancelled() => return Ok(()),
                _ = self.drain.cancelled() => {
                    while let Ok(batch) = self.updates.try_recv() {
                        writer.feed_frame(batch.frame.clone(), sent).await?;
                    }
                    writer.flush().await?;
                    return Ok(());
                }
                _ = self.state.wake.notified() => {}
                _ = sleep_until_some(clock, initiator.next_wakeup()) => {}
                message = framing::receive(reader) => {
                    let message = message?.ok_or(PeerError::Closed)?;
                    let acked = match message {
                        // The push path's answer, most of the traffic.
                        Message::Ack { last_seq } => initiator.ack(last_seq),
                        message => {
                            let step = initiator.handle(local, message, Now::read(clock))?;
                            framing::send_all(writer, step.send, sent).await?;
                            step.acked
                        }
                    };
                    if let Some(seq) = acked {
                        self.state.acked.fetch_max(seq, Ordering::AcqRel);
                        replication.acks.notify_waiters();
                    }
                }
                batch = self.updates.recv() => {
                    let Some(batch) = batch else { return Ok(()) };
                    writer.send_frame(batch.frame.clone(), sent).await?;
                }
            }
        }
    }
}
