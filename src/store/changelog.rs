//! The change log (DESIGN §5): every change to the keyspace — a client's
//! write, a peer's write applied here, an expiry, an eviction, a flush —
//! is published once, through [`Store`](super::Store)'s one publish path,
//! and read by any number of readers, each at its own position: the peer
//! push now; persistence, keyspace notifications and client-side caching
//! next.
//!
//! How a change travels:
//! 1. *Staged*: while the key's shard is locked, the change is appended to
//!    that shard's staging buffer (no lock but the one already held, so
//!    writers on different shards never meet), stamped with its publish
//!    order, and the shard is marked dirty.
//! 2. *Logged*: a reader's read (or a staging buffer grown past
//!    [`STAGE_LIMIT`]) collects the dirty shards' staged changes, orders
//!    them by stamp and appends them to the log as one chunk, giving each
//!    its sequence number: positions in the log, contiguous, so "applied
//!    up to `seq`" (acknowledgements, WAIT) means exactly that.
//! 3. *Read*: each reader takes the chunks past its position; chunks are
//!    shared (`Arc`), never copied per reader, and dropped once every
//!    reader is past them.
//!
//! Readers never block writers: a write takes no lock of the log (only the
//! rare over-limit flush does). The memory is bounded: past [`RETAIN`]
//! changes the oldest chunks go, and a reader that had not read them is
//! told it lost its place ([`Lagged`]) and recovers from the store (the
//! peer push repairs by anti-entropy). A change is staged only when some
//! reader wants its [`Cause`], so with no reader (a lone node before
//! persistence exists) publishing costs one load; it still happens for
//! every change, so a reader subscribing sees everything from then on.
//!
//! Order: per key, exact (a key's changes are staged in one shard, in the
//! order they happen). Across keys, the log follows the publish order,
//! except that on the multi-threaded runtime a change published while a
//! collection runs may land in the next chunk, and that a flush of one
//! over-full staging buffer goes ahead of the other shards' changes.
//! Replicas do not depend on that order: every change carries its version.
//!
//! The log never decides what a change means for a reader (the push path
//! skips what peers already have, by cause) and does no I/O.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;

use crate::clock::Version;

/// Changes kept for readers that have not read them yet; past this the
/// oldest chunks are dropped and their laggards told so. A reader keeps up
/// (the push path reads as soon as it is woken) unless its consumer
/// stalls, and 1 Mi changes is ~a second of writes at full speed.
pub const RETAIN: usize = 1 << 20;
/// A shard's staged changes that no reader has collected are moved into
/// the log by the writer itself beyond this, so a reader that stops
/// reading bounds the staging buffers too (and then lags).
pub const STAGE_LIMIT: usize = 4096;

/// Why the keyspace changed; readers subscribe to the causes they need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Cause {
    /// A command on this node (a write, FLUSHALL).
    Local = 1,
    /// An eviction for `--maxmemory`: a delete with a new version, which
    /// peers apply like a DEL.
    Evicted = 2,
    /// A peer's write or flush, applied here.
    Replicated = 4,
    /// A key whose time ran out; every replica expires it on its own.
    Expired = 8,
    /// Everything dropped without a marker (a node forgotten by the
    /// cluster pulls everything again).
    Discarded = 16,
}

/// A set of [`Cause`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Causes(u8);

impl Causes {
    pub const NONE: Self = Self(0);
    pub const ALL: Self = Self(31);

    pub const fn of(causes: &[Cause]) -> Self {
        let mut bits = 0;
        let mut i = 0;
        while i < causes.len() {
            bits |= causes[i] as u8;
            i += 1;
        }
        Self(bits)
    }

    pub fn contains(self, cause: Cause) -> bool {
        self.0 & cause as u8 != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

/// One change to the keyspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its position in the log (1, 2, …); 0 while it is still staged.
    pub seq: u64,
    pub cause: Cause,
    pub kind: ChangeKind,
    /// Publish order, for ordering a collection (see the module's notes).
    stamp: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeKind {
    /// A key's new state: a value (with its expiry) or, None, a delete.
    Entry {
        key: Box<[u8]>,
        value: Option<Box<[u8]>>,
        expires_at: u64,
        version: Version,
        /// For a typed key: the fragment this change wrote (a delta), as
        /// `value::Fragment::encode` gives it; `value` is then None.
        typed: Option<Box<[u8]>>,
    },
    /// FLUSHALL: everything older than `version` is gone.
    Truncate { version: Version },
    /// Everything is gone, tombstones and FLUSHALL marker included.
    Discard,
}

impl Change {
    pub fn new(cause: Cause, kind: ChangeKind) -> Self {
        Self {
            seq: 0,
            cause,
            kind,
            stamp: 0,
        }
    }
}

/// A reader's position was dropped before it read it: what it missed is
/// only in the store now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the change log dropped changes this reader had not read")]
pub struct Lagged;

/// Changes in log order, as one read returned them.
#[derive(Debug, Default)]
pub struct ChangeBatch {
    chunks: Vec<Arc<[Change]>>,
    /// Skip changes before this sequence number (a chunk the reader had
    /// partly read before).
    from: u64,
    causes: Causes,
}

impl ChangeBatch {
    /// The changes this reader subscribed to, in log order.
    pub fn iter(&self) -> impl Iterator<Item = &Change> {
        let (from, causes) = (self.from, self.causes);
        self.chunks
            .iter()
            .flat_map(|c| c.iter())
            .filter(move |c| c.seq >= from && causes.contains(c.cause))
    }

    /// Sequence number of the last change read (0 if none): a reader that
    /// handled this batch is caught up to here, including the changes its
    /// causes skip.
    pub fn last_seq(&self) -> u64 {
        self.chunks
            .last()
            .and_then(|c| c.last())
            .map_or(0, |c| c.seq)
    }

    pub fn is_empty(&self) -> bool {
        self.iter().next().is_none()
    }
}

/// Per reader: what it wants, where it is, how to wake it.
struct Slot {
    id: u64,
    causes: Causes,
    /// Sequence number of the next change it reads.
    next: u64,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Logged {
    /// Chunks in log order; `chunks[0]` starts at `first`.
    chunks: VecDeque<Arc<[Change]>>,
    first: u64,
    retained: usize,
    readers: Vec<Slot>,
    next_reader: u64,
}

impl Logged {
    /// Sequence number the next logged change gets.
    fn end(&self) -> u64 {
        self.first + self.retained as u64
    }

    /// Drops chunks every active reader has read, and the oldest ones past
    /// `limit` changes whoever has not.
    fn trim(&mut self, limit: usize) {
        let needed = self
            .readers
            .iter()
            .filter(|r| !r.causes.is_empty())
            .map(|r| r.next)
            .min()
            .unwrap_or(u64::MAX);
        while let Some(front) = self.chunks.front() {
            let end = self.first + front.len() as u64;
            if end > needed && self.retained <= limit {
                break;
            }
            self.retained -= front.len();
            self.first = end;
            self.chunks.pop_front();
        }
    }
}

/// The log's shared state; the staging buffers live in the store's shards.
pub struct ChangeLog {
    /// Union of the causes the readers want: read on every publish.
    wanted: AtomicU8,
    /// Publish order of staged changes.
    stamps: AtomicU64,
    /// One bit per shard whose staging buffer may hold changes, so a
    /// collection locks those shards only.
    dirty: Box<[AtomicU64]>,
    logged: Mutex<Logged>,
    /// The readers' wakers, apart from `logged` so that waking them on a
    /// write never waits for a reader's read.
    wakers: RwLock<Vec<Arc<Notify>>>,
    limit: usize,
}

impl ChangeLog {
    pub(super) fn new(shards: usize, limit: usize) -> Self {
        Self {
            wanted: AtomicU8::new(0),
            stamps: AtomicU64::new(0),
            dirty: (0..shards.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            logged: Mutex::new(Logged {
                first: 1,
                ..Logged::default()
            }),
            wakers: RwLock::new(Vec::new()),
            limit,
        }
    }

    /// Whether some reader wants changes of `cause` (one relaxed load: the
    /// cost of publishing when nobody does).
    pub(super) fn wants(&self, cause: Cause) -> bool {
        self.wanted.load(Ordering::Relaxed) & cause as u8 != 0
    }

    /// Stamps a change with its publish order, for staging.
    pub(super) fn stamped(&self, mut change: Change) -> Change {
        change.stamp = self.stamps.fetch_add(1, Ordering::Relaxed);
        change
    }

    /// Marks a shard's staging buffer as holding changes and wakes the
    /// readers. Called with the shard still locked, so a collection that
    /// misses the mark waits for the lock and then finds it.
    pub(super) fn staged(&self, shard_no: usize) {
        self.dirty[shard_no / 64].fetch_or(1 << (shard_no % 64), Ordering::AcqRel);
        self.wake();
    }

    /// Tells every reader that changes may be waiting.
    pub(super) fn wake(&self) {
        for wake in self.wakers.read().iter() {
            wake.notify_one();
        }
    }

    /// Takes the dirty marks: the shards a collection must visit.
    pub(super) fn take_dirty(&self) -> Vec<usize> {
        let mut shards = Vec::new();
        for (word_no, word) in self.dirty.iter().enumerate() {
            let mut bits = word.swap(0, Ordering::AcqRel);
            while bits != 0 {
                shards.push(word_no * 64 + bits.trailing_zeros() as usize);
                bits &= bits - 1;
            }
        }
        shards
    }

    /// Appends collected changes (in any order) to the log as one chunk.
    pub(super) fn append(&self, mut changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        changes.sort_unstable_by_key(|c| c.stamp);
        let mut logged = self.logged.lock();
        let first = logged.end();
        for (i, change) in changes.iter_mut().enumerate() {
            change.seq = first + i as u64;
        }
        logged.retained += changes.len();
        logged.chunks.push_back(changes.into());
        logged.trim(self.limit);
    }

    /// Sequence number of the last change logged (0 if none yet). Changes
    /// still staged come after it.
    pub fn last_seq(&self) -> u64 {
        self.logged.lock().end() - 1
    }

    /// A new reader wanting `causes`, positioned at the end of the log.
    pub(super) fn subscribe(self: &Arc<Self>, causes: Causes) -> ChangeReader {
        let wake = Arc::new(Notify::new());
        let mut logged = self.logged.lock();
        logged.next_reader += 1;
        let id = logged.next_reader;
        let next = logged.end();
        logged.readers.push(Slot {
            id,
            causes,
            next,
            wake: wake.clone(),
        });
        self.refresh(&logged);
        ChangeReader {
            id,
            log: self.clone(),
            wake,
        }
    }

    /// Recomputes what readers want, and whom to wake.
    fn refresh(&self, logged: &Logged) {
        let wanted = logged.readers.iter().fold(0, |acc, r| acc | r.causes.0);
        self.wanted.store(wanted, Ordering::Relaxed);
        *self.wakers.write() = logged
            .readers
            .iter()
            .filter(|r| !r.causes.is_empty())
            .map(|r| r.wake.clone())
            .collect();
    }

    /// The logged changes past `reader`'s position, which moves to the end.
    pub(super) fn read(&self, reader: &ChangeReader) -> Result<ChangeBatch, Lagged> {
        let mut logged = self.logged.lock();
        let (first, end) = (logged.first, logged.end());
        let Some(slot) = logged.readers.iter_mut().find(|r| r.id == reader.id) else {
            return Ok(ChangeBatch::default());
        };
        let (from, causes) = (slot.next, slot.causes);
        slot.next = end;
        if from < first {
            return Err(Lagged);
        }
        let mut start = first;
        let chunks = logged
            .chunks
            .iter()
            .filter(|chunk| {
                let chunk_end = start + chunk.len() as u64;
                start = chunk_end;
                chunk_end > from
            })
            .cloned()
            .collect();
        logged.trim(self.limit);
        Ok(ChangeBatch {
            chunks,
            from,
            causes,
        })
    }

    fn set_causes(&self, id: u64, causes: Causes) {
        let mut logged = self.logged.lock();
        let end = logged.end();
        if let Some(slot) = logged.readers.iter_mut().find(|r| r.id == id) {
            // A paused reader read nothing meanwhile: it resumes at the
            // end, having lost its place (as a laggard does).
            if slot.causes.is_empty() {
                slot.next = end;
            }
            slot.causes = causes;
        }
        self.refresh(&logged);
        logged.trim(self.limit);
    }

    fn unsubscribe(&self, id: u64) {
        let mut logged = self.logged.lock();
        logged.readers.retain(|r| r.id != id);
        self.refresh(&logged);
        logged.trim(self.limit);
    }
}

/// One reader of the change log; read with
/// [`Store::read_changes`](super::Store::read_changes). Dropping it
/// unsubscribes.
pub struct ChangeReader {
    id: u64,
    log: Arc<ChangeLog>,
    wake: Arc<Notify>,
}

impl ChangeReader {
    /// Resolves when changes may be waiting (at once if some were
    /// published since the last read began).
    pub async fn ready(&self) {
        self.wake.notified().await;
    }

    pub(super) fn log(&self) -> &ChangeLog {
        &self.log
    }
}

impl Drop for ChangeReader {
    fn drop(&mut self) {
        self.log.unsubscribe(self.id);
    }
}

impl std::fmt::Debug for ChangeReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeReader")
            .field("id", &self.id)
            .finish()
    }
}

impl super::Store {
    /// A new reader of the change log, wanting `causes`, positioned after
    /// every change published so far.
    pub fn subscribe(&self, causes: Causes) -> ChangeReader {
        self.collect_changes();
        self.log.subscribe(causes)
    }

    /// Changes what `reader` wants. [`Causes::NONE`] pauses it: nothing is
    /// staged for it and it holds nothing back; resumed, it starts after
    /// every change published so far, what it missed being in the store
    /// only.
    pub fn set_reader_causes(&self, reader: &ChangeReader, causes: Causes) {
        self.collect_changes();
        self.log.set_causes(reader.id, causes);
    }

    /// The changes published since `reader`'s last read, in log order, or
    /// [`Lagged`] if the log dropped some it had not read.
    pub fn read_changes(&self, reader: &ChangeReader) -> Result<ChangeBatch, Lagged> {
        self.collect_changes();
        reader.log().read(reader)
    }

    /// Moves every staged change into the log, so that [`Self::last_seq`]
    /// covers every change published so far (WAIT asks for this).
    pub fn collect_changes(&self) {
        let mut collected = Vec::new();
        for shard_no in self.log.take_dirty() {
            collected.append(&mut self.shard(shard_no).staged);
        }
        self.log.append(collected);
    }

    /// Sequence number of the last change in the log (changes still staged
    /// come after it; see [`Self::collect_changes`]).
    pub fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, TimeSource};
    use crate::store::tests::store;
    use crate::store::{Expiry, Policy, Store};

    fn causes(batch: &ChangeBatch) -> Vec<(Cause, Option<Vec<u8>>)> {
        batch
            .iter()
            .map(|c| {
                let key = match &c.kind {
                    ChangeKind::Entry { key, .. } => Some(key.to_vec()),
                    ChangeKind::Truncate { .. } | ChangeKind::Discard => None,
                };
                (c.cause, key)
            })
            .collect()
    }

    #[test]
    fn every_kind_of_change_is_published_once_with_its_cause() {
        let s = store();
        let reader = s.subscribe(Causes::ALL);
        let remote = crate::clock::Version {
            hlc: 1 << 40,
            node_id: 9,
        };
        s.with_key(b"w", 0, |k| k.set(b"v", Expiry::Persist));
        s.with_key(b"short", 0, |k| k.set(b"v", Expiry::At(10)));
        s.with_key(b"r", 0, |k| k.apply(Some(b"peer"), 0, remote));
        s.with_key(b"short", 20, |k| k.exists()); // lazy expiry
        s.with_key(b"swept", 20, |k| k.set(b"v", Expiry::At(30)));
        assert!(s.active_expire(40) >= 1);
        assert!(s.evict_one(Policy::AllKeysRandom, 5, 40).is_some());
        s.flush_all();
        s.truncate(crate::clock::Version {
            hlc: u64::MAX >> 1,
            node_id: 9,
        });
        s.discard_all();
        let batch = s.read_changes(&reader).unwrap();
        let got = causes(&batch);
        let key = |k: &[u8]| Some(k.to_vec());
        assert_eq!(
            got[..4],
            [
                (Cause::Local, key(b"w")),
                (Cause::Local, key(b"short")),
                (Cause::Replicated, key(b"r")),
                (Cause::Expired, key(b"short")),
            ]
        );
        assert!(got[4..].contains(&(Cause::Local, key(b"swept"))));
        assert!(got[4..].contains(&(Cause::Expired, key(b"swept"))));
        assert_eq!(got.iter().filter(|c| c.0 == Cause::Evicted).count(), 1);
        assert_eq!(
            got[got.len() - 3..],
            [
                (Cause::Local, None),
                (Cause::Replicated, None),
                (Cause::Discarded, None)
            ]
        );
        // Sequence numbers are positions: contiguous, in log order.
        let seqs: Vec<u64> = batch.iter().map(|c| c.seq).collect();
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
        assert_eq!(s.last_seq(), seqs.len() as u64);
        assert!(s.read_changes(&reader).unwrap().is_empty());
    }

    #[test]
    fn readers_have_their_own_positions_and_causes() {
        let s = store();
        let all = s.subscribe(Causes::ALL);
        s.with_key(b"a", 0, |k| k.set(b"1", Expiry::Persist));
        let local = s.subscribe(Causes::of(&[Cause::Local]));
        s.with_key(b"b", 0, |k| k.set(b"2", Expiry::At(5)));
        s.with_key(b"b", 10, |k| k.exists());
        let first = s.read_changes(&all).unwrap();
        assert_eq!(first.iter().count(), 3, "a, b, b's expiry");
        assert_eq!(first.last_seq(), 3);
        let seen: Vec<_> = causes(&s.read_changes(&local).unwrap());
        assert_eq!(
            seen,
            [(Cause::Local, Some(b"b".to_vec()))],
            "from its subscription on, its causes only"
        );
        s.with_key(b"c", 10, |k| k.set(b"3", Expiry::Persist));
        assert_eq!(s.read_changes(&local).unwrap().iter().count(), 1);
        assert_eq!(s.read_changes(&all).unwrap().iter().count(), 1);
    }

    #[test]
    fn nothing_is_staged_for_nobody_and_a_paused_reader_resumes_at_the_end() {
        let s = store();
        let reader = s.subscribe(Causes::NONE);
        s.with_key(b"a", 0, |k| k.set(b"1", Expiry::Persist));
        assert_eq!(s.shard(0).staged.len(), 0);
        assert_eq!(s.log.take_dirty(), Vec::<usize>::new(), "nothing staged");
        s.set_reader_causes(&reader, Causes::ALL);
        assert!(s.read_changes(&reader).unwrap().is_empty());
        s.with_key(b"b", 0, |k| k.set(b"2", Expiry::Persist));
        s.set_reader_causes(&reader, Causes::NONE);
        s.with_key(b"c", 0, |k| k.set(b"3", Expiry::Persist));
        s.set_reader_causes(&reader, Causes::ALL);
        assert!(
            s.read_changes(&reader).unwrap().is_empty(),
            "b was unread when it paused, c never staged"
        );
        s.with_key(b"d", 0, |k| k.set(b"4", Expiry::Persist));
        assert_eq!(s.read_changes(&reader).unwrap().iter().count(), 1);
        drop(reader);
        assert!(!s.log.wants(Cause::Local), "dropping unsubscribes");
    }

    #[test]
    fn a_reader_that_falls_behind_is_told_so_and_memory_stays_bounded() {
        let s = Store::with_log_limit(Clock::new(TimeSource::default(), 1), 100);
        let slow = s.subscribe(Causes::ALL);
        let fast = s.subscribe(Causes::ALL);
        for i in 0..500u32 {
            s.with_key(&i.to_be_bytes(), 0, |k| k.set(b"v", Expiry::Persist));
            if i % 10 == 9 {
                assert_eq!(s.read_changes(&fast).unwrap().iter().count(), 10);
            }
        }
        assert!(s.log.logged.lock().retained <= 100, "the limit holds");
        assert_eq!(s.read_changes(&slow).unwrap_err(), Lagged);
        s.with_key(b"after", 0, |k| k.set(b"v", Expiry::Persist));
        assert_eq!(
            s.read_changes(&slow).unwrap().iter().count(),
            1,
            "it goes on from the end"
        );
        drop(fast);
        drop(slow);
        assert_eq!(s.log.logged.lock().retained, 0, "nobody needs them");
    }

    #[test]
    fn a_reader_that_never_reads_bounds_the_staging_too() {
        let s = store();
        let _idle = s.subscribe(Causes::ALL);
        // Keys of one shard: staging of that shard overflows into the log.
        let key = |i: u32| format!("{{k}}{i}").into_bytes();
        let shard = Store::shard_of(crate::store::digest::key_hash(&key(0)));
        let mut n = 0;
        for i in 0.. {
            if n > STAGE_LIMIT + 10 {
                break;
            }
            if Store::shard_of(crate::store::digest::key_hash(&key(i))) == shard {
                s.with_key(&key(i), 0, |k| k.set(b"v", Expiry::Persist));
                n += 1;
            }
        }
        assert!(s.shard(shard).staged.len() < STAGE_LIMIT);
        assert_eq!(s.last_seq() as usize, n - s.shard(shard).staged.len());
    }

    #[test]
    fn waiters_wake_when_changes_are_staged() {
        let s = std::sync::Arc::new(store());
        let reader = s.subscribe(Causes::of(&[Cause::Local]));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let ready = reader.ready();
            tokio::pin!(ready);
            assert!(futures_util::poll!(ready.as_mut()).is_pending());
            s.with_key(b"k", 0, |k| k.set(b"v", Expiry::Persist));
            ready.await;
        });
        assert_eq!(s.read_changes(&reader).unwrap().iter().count(), 1);
    }
}
