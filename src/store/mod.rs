//! The keyspace: a fixed number of shards, each a hash index over a slab of
//! entries behind its own short lock, so connections on different cores
//! rarely contend and no lock is ever held across an await.
//!
//! Every write is stamped with a [`Version`] from the node's HLC while the
//! shard lock is held, so the order of writes to one key is the order of
//! their versions. Deletes and expiries leave tombstones (DESIGN §2), which
//! the sweep collects once the replication layer says every node has seen
//! them ([`Store::set_tombstone_horizon`]). Every change also updates the
//! digest tree that anti-entropy compares, and is published once, with its
//! cause, to the change log ([`changelog`]) for whoever reads it: the push
//! path, and later persistence, notifications and client-side caching.
//!
//! The store never parses commands or formats replies: the command layer
//! does that through [`KeyAccess`].

mod access;
pub mod changelog;
pub mod digest;
mod entry;
pub mod evict;
pub mod glob;
mod info;
mod shard;
mod typed_access;
pub mod value;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::clock::{Clock, Version};
pub use access::{KeyAccess, MultiAccess};
use changelog::ChangeLog;
pub use changelog::{Cause, Causes, Change, ChangeBatch, ChangeKind, ChangeReader, Lagged};
pub use digest::DigestTree;
pub use entry::{Entry, NO_EXPIRY, SlotState};
pub use evict::{MemoryLimit, OutOfMemory, Policy};
pub use glob::Glob;
use shard::{Shard, ShardGuard};
pub use typed_access::{Content, WrongType};
pub use value::Kind;

/// Number of shards; a power of two. Two MSETs of 10 keys lock a common
/// shard with odds 1 − (1 − 10/SHARDS)^10: 80 % with 64 shards, 32 % with
/// 256, 9 % with 1024 (parking_lot's sched_yield calls during 20,000 MSETs
/// from 50 clients, strace: 2,579 with 64 shards, 235 with 1024). More
/// shards cost cache: alternating runs of MSET -P1 / a 3-node cluster's
/// SET -P16 gave 56k / 475k rps with 64 shards, 76k / 452k with 256, 80k /
/// 417k with 1024 (Redis: 81k MSET), and single-key SET/GET were lowest
/// with 1024.
const SHARDS: usize = 256;
// A shard holds one inner node of the digest tree (see `digest::ShardLeaves`).
const _: () = assert!(SHARDS == digest::LEAVES / digest::FANOUT);
/// Slots examined per shard per active-expiry step (Redis samples 20 keys per
/// loop; we sweep sequentially, which also collects tombstones).
const SWEEP_STEP: u32 = 64;

/// Cache-line padding so two shards' locks never share a line.
#[repr(align(128))]
struct Padded<T>(T);

/// A key's two hashes: `index` (randomly seeded) places it in its shard's
/// hash index; `digest` (stable across nodes) picks its shard and its
/// digest leaf.
#[derive(Debug, Clone, Copy)]
pub(super) struct KeyHashes {
    pub index: u64,
    pub digest: u64,
}

/// What a write does to the key's time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Keep the current expiry (KEEPTTL, INCR, APPEND…).
    Keep,
    /// Remove any expiry (plain SET).
    Persist,
    /// Expire at this unix-millisecond time.
    At(u64),
}

/// Counters the store maintains for INFO.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub expired_keys: AtomicU64,
    /// Peers' typed values that did not decode or were malformed.
    pub refused_fragments: AtomicU64,
}

pub struct Store {
    shards: Box<[Padded<Mutex<Shard>>]>,
    hasher: foldhash::fast::RandomState,
    clock: Clock,
    /// Tombstones that arrived before this unix-ms time may be collected.
    tombstone_horizon: AtomicU64,
    /// ...and were written before this unix-ms time (by their version).
    tombstone_written_before: AtomicU64,
    /// The last FLUSHALL's version: older writes are ignored.
    truncated: Mutex<Version>,
    /// Every change is published here (see `changelog`).
    log: Arc<ChangeLog>,
    pub stats: StoreStats,
    /// `--maxmemory`: limit, policy, gauge and eviction counters.
    memory: MemoryLimit,
}

impl Store {
    pub fn new(clock: Clock) -> Self {
        Self::with_log_limit(clock, changelog::RETAIN)
    }

    /// A store whose change log retains at most `limit` unread changes.
    pub fn with_log_limit(clock: Clock, limit: usize) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Padded(Mutex::new(Shard::default())))
            .collect();
        Self {
            shards,
            hasher: foldhash::fast::RandomState::default(),
            clock,
            // A node with no peers collects tombstones at once; the
            // replication layer lowers this as soon as it knows of any.
            tombstone_horizon: AtomicU64::new(u64::MAX),
            tombstone_written_before: AtomicU64::new(u64::MAX),
            truncated: Mutex::new(Version::default()),
            log: Arc::new(ChangeLog::new(SHARDS, limit)),
            stats: StoreStats::default(),
            memory: MemoryLimit::default(),
        }
    }

    /// A new version from the node's clock, for writes that stamp several
    /// keys with one version (RENAME).
    pub fn next_version(&self) -> Version {
        self.clock.tick()
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    /// Both hashes of a key, each computed once per access.
    fn hashes(&self, key: &[u8]) -> KeyHashes {
        KeyHashes {
            index: self.hash(key),
            digest: digest::key_hash(key),
        }
    }

    /// The shard of a key with stable hash `key_hash` (its top bits), so
    /// that the shard also holds the key's digest leaf. The index inside
    /// the shard uses the randomly seeded [`Store::hash`], so keys chosen
    /// to share a shard cost lock contention, not a degenerate hash table.
    fn shard_of(key_hash: u64) -> usize {
        (key_hash >> (64 - SHARDS.trailing_zeros())) as usize
    }

    /// Locks a shard. Every lock goes through here: when the guard goes,
    /// the changes staged meanwhile are announced to the change log.
    fn shard(&self, shard_no: usize) -> ShardGuard<'_> {
        ShardGuard {
            guard: self.shards[shard_no].0.lock(),
            shard_no,
            log: &self.log,
        }
    }

    /// Runs `f` with exclusive access to one key (lazy expiry already done);
    /// the access counts as a use of the key for LRU eviction.
    pub fn with_key<R>(
        &self,
        key: &[u8],
        now_ms: u64,
        f: impl FnOnce(&mut KeyAccess<'_>) -> R,
    ) -> R {
        self.access_key(key, now_ms, true, f)
    }

    /// Like [`Store::with_key`] without counting as a use: for the
    /// replication layer's reads (anti-entropy comparing versions must not
    /// make every key it looks at look recently used).
    pub fn with_key_untouched<R>(
        &self,
        key: &[u8],
        now_ms: u64,
        f: impl FnOnce(&mut KeyAccess<'_>) -> R,
    ) -> R {
        self.access_key(key, now_ms, false, f)
    }

    fn access_key<R>(
        &self,
        key: &[u8],
        now_ms: u64,
        touch: bool,
        f: impl FnOnce(&mut KeyAccess<'_>) -> R,
    ) -> R {
        let hashes = self.hashes(key);
        let mut shard = self.shard(Self::shard_of(hashes.digest));
        f(&mut KeyAccess::new(
            self, &mut shard, key, hashes, now_ms, touch,
        ))
    }

    /// Locks every shard that holds one of `keys` (in shard order, so two
    /// multi-key commands cannot deadlock) and runs `f`, which sees all of
    /// them atomically.
    pub fn with_keys<R>(
        &self,
        keys: &[&[u8]],
        now_ms: u64,
        f: impl FnOnce(&mut MultiAccess<'_>) -> R,
    ) -> R {
        let mut wanted: Vec<usize> = keys
            .iter()
            .map(|key| Self::shard_of(digest::key_hash(key)))
            .collect();
        wanted.sort_unstable();
        wanted.dedup();
        // Sorted by shard: MultiAccess::key finds a guard by binary search.
        let guards = wanted.into_iter().map(|i| (i, self.shard(i))).collect();
        f(&mut MultiAccess {
            store: self,
            guards,
            now_ms,
        })
    }

    /// Number of live keys (expired keys not yet reclaimed included, as Redis).
    pub fn len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).live).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live keys that carry an expiry.
    pub fn volatile_len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).volatile).sum()
    }

    pub fn tombstone_len(&self) -> usize {
        (0..SHARDS).map(|i| self.shard(i).tombstones).sum()
    }

    /// FLUSHALL: a truncate marker with a new version; every older entry is
    /// dropped here, and on every peer when the marker reaches it.
    pub fn flush_all(&self) -> Version {
        let marker = self.clock.tick();
        self.apply_truncate(marker, Cause::Local);
        marker
    }

    /// Applies a peer's truncate marker (its FLUSHALL); returns whether it
    /// was newer than the last one.
    pub fn truncate(&self, marker: Version) -> bool {
        self.apply_truncate(marker, Cause::Replicated)
    }

    fn apply_truncate(&self, marker: Version, cause: Cause) -> bool {
        self.clock.hlc().observe(marker);
        {
            let mut truncated = self.truncated.lock();
            if *truncated >= marker {
                return false;
            }
            *truncated = marker;
        }
        // Published before any shard is truncated, so that it precedes, in
        // the log, every write that survives it.
        self.shard(0)
            .publish(&self.log, cause, |_| ChangeKind::Truncate {
                version: marker,
            });
        for i in 0..SHARDS {
            self.shard(i).truncate(self, marker);
        }
        true
    }

    /// Drops every entry, tombstones included, without a FLUSHALL marker:
    /// for a node that must pull everything again from its peers.
    pub fn discard_all(&self) {
        self.shard(0)
            .publish(&self.log, Cause::Discarded, |_| ChangeKind::Discard);
        for i in 0..SHARDS {
            let mut shard = self.shard(i);
            for slot in 0..shard.slab.len() {
                let e = shard.slab.get(slot);
                if e.state() != SlotState::Free {
                    let hash = self.hash(e.key());
                    shard.purge(slot, hash);
                }
            }
        }
    }

    /// The last FLUSHALL's version (zero if none).
    pub fn truncated(&self) -> Version {
        *self.truncated.lock()
    }

    /// Calls `f` for every live, unexpired entry; `f` returns false to stop.
    /// Holds one shard lock at a time.
    pub fn for_each_live(&self, now_ms: u64, mut f: impl FnMut(&Entry) -> bool) {
        self.for_each_entry(|e| !e.is_live() || e.is_expired(now_ms) || f(e));
    }

    /// Calls `f` for every entry, tombstones included; `f` returns false to
    /// stop. Holds one shard lock at a time.
    pub fn for_each_entry(&self, mut f: impl FnMut(&Entry) -> bool) {
        for shard_no in 0..SHARDS {
            let shard = self.shard(shard_no);
            for i in 0..shard.slab.len() {
                let e = shard.slab.get(i);
                if e.state() != SlotState::Free && !f(e) {
                    return;
                }
            }
        }
    }

    /// Calls `f` for every entry, tombstones included, whose digest leaf is
    /// one of `leaves` (out-of-range leaves are ignored). Only the shards
    /// holding those leaves are visited, one lock at a time: a repair of a
    /// few leaves reads a few shards rather than the whole keyspace.
    pub fn for_each_entry_in_leaves(&self, leaves: &[u16], mut f: impl FnMut(&Entry)) {
        let mut wanted = vec![false; digest::LEAVES];
        let mut shards = Vec::new();
        for &leaf in leaves {
            if let Some(slot) = wanted.get_mut(usize::from(leaf)) {
                *slot = true;
                shards.push(usize::from(leaf) / digest::FANOUT);
            }
        }
        shards.sort_unstable();
        shards.dedup();
        for shard_no in shards {
            let shard = self.shard(shard_no);
            for i in 0..shard.slab.len() {
                let e = shard.slab.get(i);
                if e.state() != SlotState::Free && wanted[digest::bucket_of(e.key())] {
                    f(e);
                }
            }
        }
    }

    /// Every entry, tombstones included, sorted by key: (key, value or None
    /// for a tombstone, expiry, version). For comparing replicas.
    #[allow(clippy::type_complexity)]
    pub fn dump(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>, u64, Version)> {
        let mut out = Vec::new();
        self.for_each_entry(|e| {
            // A typed value by its content digest, which covers every
            // element and version (two replicas agree exactly when equal).
            let value = match e.typed() {
                Some(t) => Some(format!("typed:{:016x}", t.stored_digest()).into_bytes()),
                None => e.is_live().then(|| e.value().to_vec()),
            };
            let expires_at = if e.is_live() { e.expires_at } else { NO_EXPIRY };
            out.push((e.key().to_vec(), value, expires_at, e.digest_version()));
            true
        });
        out.sort();
        out
    }

    /// Keys matching `pattern` (KEYS).
    pub fn keys(&self, pattern: &Glob, now_ms: u64) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        self.for_each_live(now_ms, |e| {
            if pattern.matches(e.key()) {
                out.push(e.key().to_vec());
            }
            true
        });
        out
    }

    /// One SCAN step. The cursor is `(slot << 6) | shard`; slots never move
    /// while their key exists, so every key present for the whole scan is
    /// returned. Returns the next cursor (0 when done).
    pub fn scan(
        &self,
        cursor: u64,
        count: usize,
        now_ms: u64,
        mut keep: impl FnMut(&Entry) -> bool,
    ) -> (u64, Vec<Vec<u8>>) {
        let mut shard_no = (cursor as usize) & (SHARDS - 1);
        let mut slot = cursor >> SHARDS.trailing_zeros();
        let mut out = Vec::new();
        // Bound the work per call even when few slots hold matching keys.
        let mut budget = count.saturating_mul(10).max(100);
        while shard_no < SHARDS {
            let shard = self.shards[shard_no].0.lock();
            let len = u64::from(shard.slab.len());
            while slot < len {
                let e = shard.slab.get(slot as u32);
                slot += 1;
                budget = budget.saturating_sub(1);
                if e.is_live() && !e.is_expired(now_ms) && keep(e) {
                    out.push(e.key().to_vec());
                }
                if out.len() >= count || budget == 0 {
                    let next = if slot < len {
                        (slot << SHARDS.trailing_zeros()) | shard_no as u64
                    } else {
                        next_shard_cursor(shard_no)
                    };
                    return (next, out);
                }
            }
            shard_no += 1;
            slot = 0;
        }
        (0, out)
    }

    /// A random live key, or None when the keyspace is empty.
    pub fn random_key(&self, now_ms: u64) -> Option<Vec<u8>> {
        let start = fastrand::usize(..SHARDS);
        for step in 0..SHARDS {
            let mut guard = self.shard((start + step) % SHARDS);
            let shard = &mut *guard;
            if shard.live == 0 {
                continue;
            }
            for i in shard.random_slots(32) {
                let e = shard.slab.get(i);
                if e.is_live() {
                    if e.is_expired(now_ms) {
                        shard.expire(self, i, digest::key_hash(e.key()), now_ms);
                        continue;
                    }
                    return Some(e.key().to_vec());
                }
            }
        }
        None
    }

    /// One active-expiry pass, as Redis's cycle: sweep a step of each shard
    /// that has volatile keys or tombstones, repeating on shards where more
    /// than a quarter of the sweep was expired. Returns keys expired.
    pub fn active_expire(&self, now_ms: u64) -> usize {
        let horizon = (
            self.tombstone_horizon.load(Ordering::Relaxed),
            self.tombstone_written_before.load(Ordering::Relaxed),
        );
        let mut expired = 0;
        for shard_no in 0..SHARDS {
            let mut shard = self.shard(shard_no);
            for _ in 0..16 {
                if shard.volatile == 0 && shard.tombstones == 0 && shard.element_tombstones == 0 {
                    break;
                }
                let (seen, gone) = shard.sweep(self, now_ms, horizon, SWEEP_STEP);
                expired += gone;
                if seen == 0 || gone * 4 <= seen {
                    break;
                }
            }
        }
        expired
    }

    /// Tombstones that arrived before `unix_ms` may be collected: the
    /// replication layer sets this once every node has seen them.
    pub fn set_tombstone_horizon(&self, unix_ms: u64) {
        self.tombstone_horizon.store(unix_ms, Ordering::Relaxed);
    }

    /// Tombstones written (by their version's clock) after `unix_ms` are
    /// kept whatever the horizon: while recent they are still handed to
    /// peers, and collecting them would only get them handed back.
    pub fn set_tombstone_min_age(&self, written_before_unix_ms: u64) {
        self.tombstone_written_before
            .store(written_before_unix_ms, Ordering::Relaxed);
    }

    /// Digest of the live keyspace: equal contents (keys, values, expiry
    /// times) give equal digests on any node, whatever the insertion order;
    /// all zeros when empty, as Redis's DEBUG DIGEST.
    pub fn digest(&self, now_ms: u64) -> [u8; 20] {
        let mut acc = [0u8; 20];
        self.for_each_live(now_ms, |e| {
            let mut h = sha1_smol::Sha1::new();
            h.update(&(e.key().len() as u64).to_le_bytes());
            h.update(e.key());
            match e.typed() {
                Some(t) => h.update(&t.visible_digest()),
                None => h.update(e.value()),
            }
            h.update(&e.expires_at.to_le_bytes());
            // XOR is order-independent; SHA-1 makes accidental cancellation
            // between different entries practically impossible.
            for (a, b) in acc.iter_mut().zip(h.digest().bytes()) {
                *a ^= b;
            }
            true
        });
        acc
    }

    /// The digest tree over keys and versions (tombstones included) that
    /// anti-entropy compares.
    pub fn digest_tree(&self) -> DigestTree<'_> {
        DigestTree { store: self }
    }

    /// Approximate bytes held by the keyspace's own structures.
    pub fn memory_estimate(&self) -> usize {
        (0..SHARDS)
            .map(|i| {
                let s = self.shard(i);
                s.slab.slot_bytes() + s.index.capacity() * (std::mem::size_of::<u32>() + 1)
            })
            .sum()
    }
}

fn next_shard_cursor(shard_no: usize) -> u64 {
    if shard_no + 1 >= SHARDS {
        0
    } else {
        (shard_no + 1) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn store() -> Store {
        Store::new(Clock::system(1))
    }

    #[test]
    fn set_get_delete() {
        let s = store();
        s.with_key(b"k", 1000, |a| a.set(b"v", Expiry::Persist));
        assert_eq!(
            s.with_key(b"k", 1000, |a| a.value().map(<[u8]>::to_vec)),
            Some(b"v".to_vec())
        );
        assert!(s.with_key(b"k", 1000, |a| a.delete()));
        assert!(!s.with_key(b"k", 1000, |a| a.exists()));
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn expired_keys_are_invisible_and_reclaimed() {
        let s = store();
        s.with_key(b"k", 1000, |a| a.set(b"v", Expiry::At(1500)));
        assert!(s.with_key(b"k", 1499, |a| a.exists()));
        assert!(!s.with_key(b"k", 1500, |a| a.exists()));
        assert_eq!(s.len(), 0);
        assert_eq!(s.stats.expired_keys.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn active_expiry_reclaims_without_access() {
        let s = store();
        for i in 0..1000u32 {
            s.with_key(&i.to_be_bytes(), 0, |a| a.set(b"v", Expiry::At(10)));
        }
        s.with_key(b"stay", 0, |a| a.set(b"v", Expiry::Persist));
        let mut rounds = 0;
        while s.len() > 1 && rounds < 1000 {
            s.active_expire(20);
            rounds += 1;
        }
        assert_eq!(s.len(), 1);
        assert_eq!(s.volatile_len(), 0);
    }

    #[test]
    fn tombstones_keep_the_delete_version_until_collected() {
        let s = store();
        s.set_tombstone_horizon(0);
        let written = s.with_key(b"k", 0, |a| a.set(b"v", Expiry::Persist));
        s.with_key(b"k", 0, |a| a.delete());
        let (exists, version) = s.with_key(b"k", 0, |a| (a.exists(), a.version()));
        assert!(!exists);
        assert!(version.is_some_and(|v| v > written));
        assert_eq!(s.tombstone_len(), 1);
        s.with_key(b"k", 0, |a| a.set(b"again", Expiry::Persist));
        assert_eq!(s.tombstone_len(), 0);
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn scan_returns_every_key_present_throughout_despite_concurrent_changes() {
        let s = store();
        for i in 0..2000u32 {
            s.with_key(format!("k{i}").as_bytes(), 0, |a| {
                a.set(b"v", Expiry::Persist)
            });
        }
        let mut seen = std::collections::HashSet::new();
        let mut cursor = 0;
        let mut step = 0u32;
        loop {
            let (next, keys) = s.scan(cursor, 10, 0, |_| true);
            seen.extend(keys);
            // Churn: delete and add keys not in the stable set while scanning.
            s.with_key(format!("churn{step}").as_bytes(), 0, |a| {
                a.set(b"x", Expiry::Persist)
            });
            if step > 0 {
                s.with_key(format!("churn{}", step - 1).as_bytes(), 0, |a| a.delete());
            }
            step += 1;
            cursor = next;
            if cursor == 0 {
                break;
            }
        }
        for i in 0..2000u32 {
            assert!(seen.contains(format!("k{i}").as_bytes()), "k{i} missed");
        }
    }

    #[test]
    fn digest_depends_on_contents_not_order() {
        let (a, b) = (store(), store());
        assert_eq!(a.digest(0), [0; 20]);
        a.with_key(b"x", 0, |k| k.set(b"1", Expiry::Persist));
        a.with_key(b"y", 0, |k| k.set(b"2", Expiry::Persist));
        b.with_key(b"y", 0, |k| k.set(b"2", Expiry::Persist));
        b.with_key(b"x", 0, |k| k.set(b"1", Expiry::Persist));
        assert_eq!(a.digest(0), b.digest(0));
        b.with_key(b"x", 0, |k| k.set(b"3", Expiry::Persist));
        assert_ne!(a.digest(0), b.digest(0));
    }

    #[test]
    fn entries_in_leaves_are_exactly_those_whose_leaf_is_asked_for() {
        let s = store();
        let keys: Vec<Vec<u8>> = (0..2000).map(|i| format!("key:{i}").into_bytes()).collect();
        for key in &keys {
            s.with_key(key, 0, |k| k.set(b"v", Expiry::Persist));
        }
        s.with_key(&keys[7], 0, |k| k.delete());
        let leaves = [
            digest::bucket_of(&keys[7]) as u16,
            digest::bucket_of(&keys[1500]) as u16,
        ];
        let mut seen = Vec::new();
        s.for_each_entry_in_leaves(&leaves, |e| seen.push(e.key().to_vec()));
        seen.sort();
        let mut expected: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| leaves.contains(&(digest::bucket_of(k) as u16)))
            .cloned()
            .collect();
        expected.sort();
        assert_eq!(seen, expected, "the tombstone of key:7 included");
        assert!(seen.contains(&keys[7]) && seen.contains(&keys[1500]));
        let mut none = 0;
        s.for_each_entry_in_leaves(&[], |_| none += 1);
        assert_eq!(none, 0);
    }

    mod merge_laws {
        use super::*;
        use proptest::prelude::*;

        /// A replicated write: key index, value (None = delete), expiry,
        /// version (hlc, node).
        type Update = (u8, Option<Vec<u8>>, u64, u64, u64);

        fn update() -> impl Strategy<Value = Update> {
            (
                0u8..6,
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
                prop_oneof![Just(NO_EXPIRY), 1u64..1_000],
                1u64..20,
                1u64..4,
            )
        }

        fn replay(updates: &[Update]) -> Store {
            let s = store();
            s.set_tombstone_horizon(0);
            for (key, value, expires_at, hlc, node_id) in updates {
                let version = Version {
                    hlc: *hlc,
                    node_id: *node_id,
                };
                s.with_key(&[*key], 0, |k| {
                    k.apply(value.as_deref(), *expires_at, version)
                });
            }
            s
        }

        proptest! {
            #[test]
            fn any_order_with_duplicates_gives_the_same_store(
                updates in proptest::collection::vec(update(), 1..40),
                order in proptest::collection::vec(any::<proptest::sample::Index>(), 1..80),
            ) {
                // Distinct versions: two different writes never share one.
                let mut seen = std::collections::HashSet::new();
                let updates: Vec<_> = updates.into_iter().filter(|u| seen.insert((u.3, u.4))).collect();
                let shuffled: Vec<_> = order.iter().map(|i| updates[i.index(updates.len())].clone())
                    .chain(updates.iter().rev().cloned())
                    .collect();
                let (a, b) = (replay(&updates), replay(&shuffled));
                prop_assert_eq!(a.dump(), b.dump());
                prop_assert_eq!(a.digest(0), b.digest(0));
            }

            #[test]
            fn the_largest_version_wins(updates in proptest::collection::vec(update(), 1..40)) {
                let mut seen = std::collections::HashSet::new();
                let updates: Vec<_> = updates.into_iter().filter(|u| seen.insert((u.3, u.4))).collect();
                let s = replay(&updates);
                let keys: std::collections::HashSet<u8> = updates.iter().map(|u| u.0).collect();
                prop_assert_eq!(s.dump().len(), keys.len());
                for (key, value, expires_at, version) in s.dump() {
                    let newest = updates.iter()
                        .filter(|u| [u.0] == key[..])
                        .max_by_key(|u| (u.3, u.4))
                        .unwrap();
                    prop_assert_eq!(version, Version { hlc: newest.3, node_id: newest.4 });
                    prop_assert_eq!(value, newest.1.clone());
                    if newest.1.is_some() {
                        prop_assert_eq!(expires_at, newest.2);
                    }
                }
            }

            #[test]
            fn the_clock_moves_past_every_version_received(hlcs in proptest::collection::vec(1u64..u64::MAX / 2, 1..20)) {
                let s = store();
                let mut last = Version::default();
                for hlc in hlcs {
                    let remote = Version { hlc, node_id: 9 };
                    s.with_key(b"k", 0, |k| k.apply(Some(b"v"), NO_EXPIRY, remote));
                    let local = s.clock().hlc().tick_at(0);
                    prop_assert!(local > remote && local > last);
                    last = local;
                }
            }
        }
    }

    #[test]
    fn multi_key_access_sees_keys_on_different_shards() {
        let s = store();
        let keys: Vec<Vec<u8>> = (0..100u32).map(|i| i.to_be_bytes().to_vec()).collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        s.with_keys(&refs, 0, |m| {
            for k in &refs {
                m.key(k).set(k, Expiry::Persist);
            }
        });
        assert_eq!(s.len(), 100);
    }
}
