//! The side of a link that answers: one [`Responder`] per inbound link,
//! from the peer's Hello until the link closes. It applies the updates the
//! peer pushes (the hot path: straight from the frame, answered with an
//! Ack) and answers the reconciliations the peer starts: roots, leaves,
//! summaries, the entries wanted, and when it is done.
//!
//! It never touches a socket or a clock: the inbound loop hands it each
//! message and the time, and sends what it returns.

use super::{Local, Now, chunked, entry_frames};
use crate::clock::Version;
use crate::replication::framing::PeerError;
use crate::replication::sync;
use crate::replication::wire::{Message, UpdatesRef, WireEntry};

pub struct Responder {
    peer: u64,
    /// The reconciliation the peer is running with us: its id and when it
    /// started here.
    session: Option<(u64, u64)>,
}

impl Responder {
    /// A link whose first message is `first`: it must be the peer's Hello,
    /// whose clock ours observes.
    pub fn accept(local: Local<'_>, first: Message) -> Result<Self, PeerError> {
        let Message::Hello { node_id, hlc, .. } = first else {
            return Err(PeerError::NoHello);
        };
        local.store.clock().hlc().observe(Version { hlc, node_id });
        Ok(Self {
            peer: node_id,
            session: None,
        })
    }

    /// Applies a batch the peer pushed, borrowed from the frame it came in
    /// (never copied out entry by entry); returns the Ack to send.
    pub fn updates(&mut self, local: Local<'_>, updates: UpdatesRef<'_>, now_ms: u64) -> Message {
        let ack = Message::Ack {
            last_seq: updates.last_seq,
        };
        local.received(sync::apply_updates(local.store, updates, now_ms));
        ack
    }

    /// Handles one message of a reconciliation; returns what to send back,
    /// in order. Pushed updates come through [`Self::updates`].
    pub fn handle(
        &mut self,
        local: Local<'_>,
        message: Message,
        now: Now,
    ) -> Result<Vec<Message>, PeerError> {
        let store = local.store;
        let mut send = Vec::new();
        match message {
            Message::SyncRoot {
                session,
                root,
                truncated,
            } => {
                local.bookkeeping.lock().before_sync(store, now.unix_ms);
                self.session = Some((session, now.unix_ms));
                store.truncate(truncated);
                let equal = root == store.digest_tree().root() && truncated == store.truncated();
                send.push(if equal {
                    local.sync_completed(self.peer, now.unix_ms, now.unix_ms);
                    Message::SyncEqual { session }
                } else if local.bookkeeping.lock().pulling_initial_copy(now.instant) {
                    // We are pulling our first copy from a peer; being sent
                    // another full copy now would only double the work.
                    Message::SyncBusy { session }
                } else {
                    Message::SyncInner {
                        session,
                        truncated: store.truncated(),
                        inner: sync::inner_hashes(store),
                    }
                });
            }
            Message::SyncLeaves { session, groups } => {
                let (empty_there, summarize) = sync::differing_leaves(store, &groups);
                // Leaves the initiator holds nothing in: whole entries, no
                // summary round trip (this is how a joining node fills up).
                let recent = local
                    .bookkeeping
                    .lock()
                    .recent_tombstones_since(now.unix_ms);
                let whole = sync::entries_in(store, &empty_there, recent);
                entry_frames(session, whole, &mut send);
                let summary = sync::summary_of(store, &summarize);
                // The leaves the summary covers go with its last frame (those
                // the initiator holds nothing in are covered by the whole
                // entries above; it has nothing there to push back).
                let mut leaves = Some(summarize);
                chunked(summary, |keys, last| {
                    let leaves = if last { leaves.take() } else { None };
                    send.push(Message::SyncSummary {
                        session,
                        leaves: leaves.unwrap_or_default(),
                        keys,
                        last,
                    });
                });
            }
            Message::SyncEntries { entries, .. } => {
                let applied =
                    sync::apply(store, entries.iter().map(WireEntry::borrowed), now.unix_ms);
                local.received(applied);
            }
            Message::SyncWant {
                session,
                keys,
                last,
            } => {
                let wanted = sync::entries_for(store, &keys, now.unix_ms);
                entry_frames(session, wanted, &mut send);
                if last {
                    send.push(Message::SyncDone { session });
                    // A session the initiator gave up on (it timed out and
                    // started another) completes nothing: it may have missed
                    // what arrived since its own start.
                    if let Some((_, start_ms)) = self.session.filter(|(id, _)| *id == session) {
                        local.sync_completed(self.peer, start_ms, now.unix_ms);
                    }
                }
            }
            // Updates come through `updates` (the inbound loop decodes them
            // borrowed, never as an owned message).
            Message::Hello { .. }
            | Message::Updates { .. }
            | Message::Ack { .. }
            | Message::SyncEqual { .. }
            | Message::SyncBusy { .. }
            | Message::SyncInner { .. }
            | Message::SyncSummary { .. }
            | Message::SyncDone { .. } => return Err(PeerError::Unexpected),
        }
        Ok(send)
    }
}
