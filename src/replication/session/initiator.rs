//! The side of a link that starts reconciliations: one [`Initiator`] per
//! connection of an outbound link, from the moment it is up until it
//! breaks. It decides when a reconciliation starts (at once on a new link,
//! after the first-meeting delay, on request, after a busy peer's retry
//! delay, again after a timeout), walks the digest tree down with the
//! responder, plans what to push and what to want, and reports what the
//! peer has acknowledged (for WAIT).
//!
//! It never touches a socket or a clock: the link loop hands it each
//! message from the peer and the time, sends what it returns, and sleeps
//! until [`Initiator::next_wakeup`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::bookkeeping::Claim;
use super::{Local, Now, chunked, entry_frames};

use crate::replication::framing::PeerError;
use crate::replication::sync;
use crate::replication::wire::Message;

/// A reconciliation the peer has not finished by then is abandoned (the
/// next one starts over); normal ones take milliseconds, a full join of a
/// large dataset seconds.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(120);
/// The link from the larger node id waits this long at a first meeting.
pub const FIRST_MEETING_DELAY: Duration = Duration::from_millis(500);
/// Retry delay when the peer (or this node) is busy pulling a first copy.
pub const RETRY_BUSY: Duration = Duration::from_millis(300);

pub struct Initiator {
    peer: u64,
    /// The id of the last session started on this connection.
    last_session: u64,
    session: Option<Session>,
    /// When a reconciliation is due by a timer (first meeting, busy retry).
    sync_at: Option<Instant>,
    /// A reconciliation is wanted as soon as none is running.
    sync_wanted: bool,
    /// Updates may have been lost since the last completed reconciliation:
    /// acknowledgements do not prove the peer has every earlier write.
    repairing: bool,
    /// This link is pulling the fresh node's first copy.
    holds_initial_pull: bool,
}

/// The reconciliation this link started and is waiting on.
struct Session {
    id: u64,
    started: Instant,
    start_ms: u64,
    /// Everything written up to this change is on the peer once it ends.
    start_seq: u64,
    /// The responder's summary so far: the leaves that differ, and what it
    /// holds in them (key → version, live).
    leaves: Vec<u16>,
    theirs: HashMap<Vec<u8>, sync::Held>,
}

/// What a message from the peer meant for the current reconciliation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Outcome {
    #[default]
    Continue,
    /// It completed.
    Done,
    /// The peer is pulling its own first copy: it is retried a little later.
    Busy,
}

/// The initiator's answer to one message.
#[derive(Debug, Default)]
pub struct Step {
    /// To send to the peer, in order.
    pub send: Vec<Message>,
    /// The peer now holds every local change up to this sequence.
    pub acked: Option<u64>,
    pub outcome: Outcome,
}

impl Initiator {
    /// A connection to `peer` came up at `now`. Every new connection starts
    /// with a reconciliation: it covers a join, a restart, a healed
    /// partition and anything dropped while down, and acknowledgements only
    /// count once it has covered whatever the link may have missed. When
    /// two nodes meet for the first time both links come up at once; the
    /// one from the larger node id waits a moment, so the other's
    /// reconciliation does the work and its own finds nothing left to do.
    pub fn connected(me: u64, peer: u64, first_connection: bool, now: Instant) -> Self {
        let defer = first_connection && me > peer;
        let delay = if defer {
            FIRST_MEETING_DELAY
        } else {
            Duration::ZERO
        };
        Self {
            peer,
            last_session: 0,
            session: None,
            sync_at: Some(now + delay),
            sync_wanted: false,
            repairing: true,
            holds_initial_pull: false,
        }
    }

    /// The rotation's turn: reconcile as soon as none is running.
    pub fn request_sync(&mut self) {
        self.sync_wanted = true;
    }

    /// Pushed updates were dropped: until a reconciliation completes,
    /// acknowledgements prove nothing, and one is wanted at once.
    pub fn repair(&mut self) {
        self.repairing = true;
        self.sync_wanted = true;
    }

    /// Whether [`Self::poll`] has nothing to do whatever the time: no
    /// timer, no request, no session.
    pub fn idle(&self) -> bool {
        self.sync_at.is_none() && !self.sync_wanted && self.session.is_none()
    }

    /// When [`Self::poll`] next has something to do if nothing else
    /// happens: a timer, or the running session's timeout.
    pub fn next_wakeup(&self) -> Option<Instant> {
        let timeout = self.session.as_ref().map(|s| s.started + SYNC_TIMEOUT);
        match (self.sync_at, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The session running, if any.
    pub fn session(&self) -> Option<u64> {
        self.session.as_ref().map(|s| s.id)
    }

    /// Fires what is due at `now`: abandons a session past its timeout and
    /// starts the reconciliation that is wanted (returning its first
    /// message), unless another link is pulling this node's first copy.
    pub fn poll(&mut self, local: Local<'_>, now: Now) -> Option<Message> {
        if self.sync_at.is_some_and(|at| at <= now.instant) {
            self.sync_at = None;
            self.sync_wanted = true;
        }
        let timed_out = self
            .session
            .as_ref()
            .is_some_and(|s| now.instant.saturating_duration_since(s.started) >= SYNC_TIMEOUT);
        if timed_out {
            tracing::warn!(peer = self.peer, "reconciliation timed out; starting over");
            self.session = None;
            self.sync_wanted = true;
        }
        if self.session.is_some() || !self.sync_wanted {
            return None;
        }
        self.sync_wanted = false;
        let claim = if self.holds_initial_pull {
            Claim::GoInitial
        } else {
            local
                .bookkeeping
                .lock()
                .claim_initial_pull(local.store, now.instant)
        };
        if claim == Claim::Wait {
            self.sync_at = Some(now.instant + RETRY_BUSY);
            return None;
        }
        self.holds_initial_pull = claim == Claim::GoInitial;
        Some(self.start(local, now))
    }

    fn start(&mut self, local: Local<'_>, now: Now) -> Message {
        let store = local.store;
        local.bookkeeping.lock().before_sync(store, now.unix_ms);
        self.last_session += 1;
        self.session = Some(Session {
            id: self.last_session,
            started: now.instant,
            start_ms: now.unix_ms,
            start_seq: store.last_seq(),
            leaves: Vec::new(),
            theirs: HashMap::new(),
        });
        Message::SyncRoot {
            session: self.last_session,
            root: store.digest_tree().root(),
            truncated: store.truncated(),
        }
    }

    /// The peer applied every pushed update up to `last_seq`: returns what
    /// that acknowledges, nothing while updates may have been lost.
    pub fn ack(&self, last_seq: u64) -> Option<u64> {
        (!self.repairing).then_some(last_seq)
    }

    /// Handles one message from the peer.
    pub fn handle(
        &mut self,
        local: Local<'_>,
        message: Message,
        now: Now,
    ) -> Result<Step, PeerError> {
        let store = local.store;
        let mut step = Step::default();
        match message {
            Message::Ack { last_seq } => step.acked = self.ack(last_seq),
            Message::SyncEqual { session } | Message::SyncDone { session } => {
                self.finish(local, session, now, &mut step);
            }
            Message::SyncBusy { session } => {
                if self.session() == Some(session) {
                    self.session = None;
                    self.sync_at = Some(now.instant + RETRY_BUSY);
                    step.outcome = Outcome::Busy;
                }
            }
            Message::SyncInner {
                session,
                truncated,
                inner,
            } => {
                store.truncate(truncated);
                let groups = sync::differing_groups(store, &inner)
                    .into_iter()
                    .map(|g| (g, sync::leaf_hashes(store, usize::from(g))))
                    .collect();
                step.send.push(Message::SyncLeaves { session, groups });
            }
            Message::SyncSummary {
                session,
                leaves,
                keys,
                last,
            } => {
                let Some(current) = self.session.as_mut().filter(|s| s.id == session) else {
                    return Ok(step);
                };
                current.theirs.extend(keys.into_iter().map(|kv| {
                    let held = sync::Held {
                        version: kv.version,
                        live: kv.live,
                        content: kv.content,
                        buckets: kv.buckets,
                    };
                    (kv.key, held)
                }));
                current.leaves.extend(leaves);
                if last {
                    let recent = local
                        .bookkeeping
                        .lock()
                        .recent_tombstones_since(now.unix_ms);
                    let theirs = std::mem::take(&mut current.theirs);
                    let leaves = std::mem::take(&mut current.leaves);
                    let (want, push) = sync::plan(store, &leaves, &theirs, recent);
                    entry_frames(session, push, &mut step.send);
                    chunked(want, |keys, last| {
                        step.send.push(Message::SyncWant {
                            session,
                            keys,
                            last,
                        });
                    });
                }
            }
            Message::SyncEntries {
                session, entries, ..
            } => {
                let (applied, ours) = sync::apply_and_rebut(store, &entries, now.unix_ms);
                local.received(applied);
                entry_frames(session, ours, &mut step.send);
            }
            Message::Hello { .. }
            | Message::Updates { .. }
            | Message::SyncRoot { .. }
            | Message::SyncLeaves { .. }
            | Message::SyncWant { .. } => return Err(PeerError::Unexpected),
        }
        Ok(step)
    }

    fn finish(&mut self, local: Local<'_>, id: u64, now: Now, step: &mut Step) {
        let Some(current) = self.session.take_if(|s| s.id == id) else {
            return;
        };
        self.repairing = false;
        // Everything written before the reconciliation started is now on
        // the peer.
        step.acked = Some(current.start_seq);
        step.outcome = Outcome::Done;
        local.sync_completed(self.peer, current.start_ms, now.unix_ms);
        if self.holds_initial_pull {
            self.holds_initial_pull = false;
            local.bookkeeping.lock().end_initial_pull(true);
        }
    }

    /// The connection ended (broken, stopped or replaced): a failed initial
    /// pull lets another link try.
    pub fn close(self, local: Local<'_>) {
        if self.holds_initial_pull {
            local.bookkeeping.lock().end_initial_pull(false);
        }
    }
}
