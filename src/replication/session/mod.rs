//! The anti-entropy session (DESIGN §4, §5): the protocol of reconciling
//! two nodes, as plain structs stepped by calls. An [`Initiator`] runs on
//! the node that starts reconciliations (one per outbound link), a
//! [`Responder`] on the node that answers them (one per inbound link), and
//! the node-wide [`Bookkeeping`] remembers what completed, for tombstone
//! collection, the initial pull and `--forget-after`. A message in gives the
//! messages to send back; the time of the call is a parameter.
//!
//! Nothing here owns a socket, a task or a clock: the link and inbound
//! loops move the frames and fire the timers the sessions ask for, and the
//! fuzz harness and the tests drive these very structs by hand.
//!
//! A reconciliation, session `s` started by the initiator:
//!
//! ```text
//! initiator                                  responder
//! SyncRoot{s, root, flushall}        ->
//!                                    <-      SyncEqual{s} (done) | SyncBusy{s} (retry later)
//!                                    <-      | SyncInner{s, flushall, inner hashes}
//! SyncLeaves{s, differing groups}    ->
//!                                    <-      SyncEntries* (leaves we hold nothing in)
//!                                    <-      SyncSummary{s, keys, last}* (the other differing leaves)
//! SyncEntries* (ours is newer)       ->
//! SyncWant{s, keys, last}*           ->
//!                                    <-      SyncEntries* (what was wanted), SyncDone{s}
//! ```
//!
//! The initiator answers every SyncEntries with the entries it holds newer
//! (so a delete reaches a peer that sent whole buckets we hold tombstones
//! in). Streams are chunked at [`CHUNK_ENTRIES`] entries per frame.

mod bookkeeping;
mod initiator;
mod responder;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::sync::atomic::Ordering;
use std::time::Instant;

use parking_lot::Mutex;

pub use bookkeeping::Bookkeeping;
pub use initiator::{Initiator, Outcome};
pub use responder::Responder;

use super::ReplicationStats;
use super::wire::{CHUNK_ENTRIES, Message, WireEntry};
use crate::clock::Clock;
use crate::store::Store;

/// This node as its sessions see it: the store they compare and repair,
/// the bookkeeping they report to, the counters they add to.
#[derive(Clone, Copy)]
pub struct Local<'a> {
    pub store: &'a Store,
    pub bookkeeping: &'a Mutex<Bookkeeping>,
    pub stats: &'a ReplicationStats,
}

/// The time of a call: a monotonic reading for durations, and the wall
/// clock in unix ms for what is compared across nodes.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub unix_ms: u64,
}

impl Now {
    /// What `clock` reads now (for the loops; sessions never read a clock).
    pub fn read(clock: &Clock) -> Self {
        Self {
            instant: clock.now(),
            unix_ms: clock.wall_ms(),
        }
    }
}

impl Local<'_> {
    /// A reconciliation with `peer` that started at `start_ms` finished.
    fn sync_completed(&self, peer: u64, start_ms: u64, now_ms: u64) {
        self.bookkeeping
            .lock()
            .sync_completed(self.store, peer, start_ms, now_ms);
        self.stats.syncs_completed.fetch_add(1, Ordering::Relaxed);
        self.stats.initial_sync_done.store(true, Ordering::Release);
    }

    fn received(&self, entries: usize) {
        self.stats
            .entries_received
            .fetch_add(entries as u64, Ordering::Relaxed);
    }
}

/// Appends `entries` as SyncEntries frames of at most [`CHUNK_ENTRIES`]
/// (none when there are none).
fn entry_frames(session: u64, entries: Vec<WireEntry>, out: &mut Vec<Message>) {
    let mut entries = entries.into_iter().peekable();
    while entries.peek().is_some() {
        out.push(Message::SyncEntries {
            session,
            entries: entries.by_ref().take(CHUNK_ENTRIES).collect(),
            last: false,
        });
    }
}

/// Splits `items` into chunks of at most [`CHUNK_ENTRIES`], at least one
/// (an empty stream still needs its frame marked `last`); calls `frame`
/// with each chunk and whether it is the last.
fn chunked<T>(items: Vec<T>, mut frame: impl FnMut(Vec<T>, bool)) {
    let mut items = items.into_iter().peekable();
    loop {
        let chunk = items.by_ref().take(CHUNK_ENTRIES).collect();
        let last = items.peek().is_none();
        frame(chunk, last);
        if last {
            return;
        }
    }
}
