//! The keyspace: a fixed number of shards, each a hash index over a slab of
//! entries behind its own short lock, so connections on different cores
//! rarely contend and no lock is ever held across an await.
//!
//! Every write is stamped with a [`Version`] from the node's HLC while the
//! shard lock is held, so the order of writes to one key is the order of
//! their versions. Deletes and expiries leave tombstones when the cluster
//! needs them (DESIGN §2); a lone node purges them at once.
//!
//! The store never parses commands or formats replies: the command layer
//! does that through [`KeyAccess`].

mod entry;
pub mod glob;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};

use crate::clock::{Hlc, Version};
use entry::Slab;
pub use entry::{Entry, NO_EXPIRY, SlotState};
pub use glob::Glob;

/// Number of shards; a power of two. 64 keeps contention negligible on the
/// core counts we target while each shard stays small enough to sweep.
const SHARDS: usize = 64;
/// Bits of the key hash that pick the shard. They sit between the low bits
/// hashbrown uses for bucket positions and the top 7 it uses for control
/// bytes, so sharding does not correlate with either.
const SHARD_SHIFT: u32 = 40;
/// Slots examined per shard per active-expiry step (Redis samples 20 keys per
/// loop; we sweep sequentially, which also reclaims tombstones).
const SWEEP_STEP: u32 = 64;

/// Cache-line padding so two shards' locks never share a line.
#[repr(align(128))]
struct Padded<T>(T);

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

#[derive(Default)]
struct Shard {
    index: HashTable<u32>,
    slab: Slab,
    live: usize,
    volatile: usize,
    tombstones: usize,
    sweep_cursor: u32,
}

/// Counters the store maintains for INFO.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub expired_keys: AtomicU64,
    pub keyspace_hits: AtomicU64,
    pub keyspace_misses: AtomicU64,
}

pub struct Store {
    shards: Box<[Padded<Mutex<Shard>>]>,
    hasher: foldhash::fast::RandomState,
    clock: Arc<Hlc>,
    /// Whether deletes must leave tombstones (true once there are peers that
    /// could hold older values); a lone node purges deleted entries at once.
    keep_tombstones: AtomicBool,
    pub stats: StoreStats,
}

impl Store {
    pub fn new(clock: Arc<Hlc>) -> Self {
        let shards = (0..SHARDS)
            .map(|_| Padded(Mutex::new(Shard::default())))
            .collect();
        Self {
            shards,
            hasher: foldhash::fast::RandomState::default(),
            clock,
            keep_tombstones: AtomicBool::new(false),
            stats: StoreStats::default(),
        }
    }

    pub fn clock(&self) -> &Hlc {
        &self.clock
    }

    pub fn set_keep_tombstones(&self, keep: bool) {
        self.keep_tombstones.store(keep, Ordering::Relaxed);
    }

    fn hash(&self, key: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn shard_of(hash: u64) -> usize {
        (hash >> SHARD_SHIFT) as usize & (SHARDS - 1)
    }

    fn ctx(&self) -> Ctx<'_> {
        Ctx {
            store: self,
            keep_tombstones: self.keep_tombstones.load(Ordering::Relaxed),
        }
    }

    /// Runs `f` with exclusive access to one key (lazy expiry already done).
    pub fn with_key<R>(
        &self,
        key: &[u8],
        now_ms: u64,
        f: impl FnOnce(&mut KeyAccess<'_>) -> R,
    ) -> R {
        let hash = self.hash(key);
        let mut shard = self.shards[Self::shard_of(hash)].0.lock();
        let mut access = KeyAccess::new(self.ctx(), &mut shard, key, hash, now_ms);
        f(&mut access)
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
        let mut wanted = [false; SHARDS];
        for key in keys {
            wanted[Self::shard_of(self.hash(key))] = true;
        }
        let guards = wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| **w)
            .map(|(i, _)| (i, self.shards[i].0.lock()))
            .collect();
        let mut multi = MultiAccess {
            store: self,
            guards,
            now_ms,
        };
        f(&mut multi)
    }

    /// Number of live keys (expired keys not yet reclaimed included, as Redis).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().live).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Live keys that carry an expiry.
    pub fn volatile_len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().volatile).sum()
    }

    pub fn tombstone_len(&self) -> usize {
        self.shards.iter().map(|s| s.0.lock().tombstones).sum()
    }

    /// Removes every entry, tombstones included.
    pub fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            // Swap out under the lock, drop outside it: freeing millions of
            // entries should not stall other connections on this shard.
            let old = std::mem::take(&mut *shard);
            drop(shard);
            drop(old);
        }
    }

    /// Calls `f` for every live, unexpired entry; `f` returns false to stop.
    /// Holds one shard lock at a time.
    pub fn for_each_live(&self, now_ms: u64, mut f: impl FnMut(&Entry) -> bool) {
        for shard in self.shards.iter() {
            let shard = shard.0.lock();
            for i in 0..shard.slab.len() {
                let e = shard.slab.get(i);
                if e.is_live() && !e.is_expired(now_ms) && !f(e) {
                    return;
                }
            }
        }
    }

    /// Every entry, tombstones included, sorted by key: (key, value or None
    /// for a tombstone, expiry, version). For comparing replicas.
    #[allow(clippy::type_complexity)]
    pub fn dump(&self) -> Vec<(Vec<u8>, Option<Vec<u8>>, u64, Version)> {
        let mut out = Vec::new();
        for shard in self.shards.iter() {
            let shard = shard.0.lock();
            for i in 0..shard.slab.len() {
                let e = shard.slab.get(i);
                match e.state {
                    SlotState::Free => {}
                    SlotState::Live => out.push((
                        e.key().to_vec(),
                        Some(e.value().to_vec()),
                        e.expires_at,
                        e.version,
                    )),
                    SlotState::Tombstone => {
                        out.push((e.key().to_vec(), None, NO_EXPIRY, e.version))
                    }
                }
            }
        }
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
            let mut guard = self.shards[(start + step) % SHARDS].0.lock();
            let shard = &mut *guard;
            if shard.live == 0 {
                continue;
            }
            let len = shard.slab.len();
            // Random probes first (cheap when the slab is dense), then a
            // linear pass so a sparse slab still yields a key.
            let probes = (0..32).map(|_| fastrand::u32(..len));
            let offset = fastrand::u32(..len);
            let linear = (0..len).map(|i| (offset + i) % len);
            for i in probes.chain(linear) {
                let e = shard.slab.get(i);
                if e.is_live() {
                    if e.is_expired(now_ms) {
                        let hash = self.hash(e.key());
                        shard.expire_slot(i, hash, self.ctx());
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
        let ctx = self.ctx();
        let mut expired = 0;
        for shard in self.shards.iter() {
            let mut shard = shard.0.lock();
            for _ in 0..16 {
                if shard.volatile == 0 && (shard.tombstones == 0 || ctx.keep_tombstones) {
                    break;
                }
                let (seen, gone) = shard.sweep(now_ms, SWEEP_STEP, self, ctx);
                expired += gone;
                if seen == 0 || gone * 4 <= seen {
                    break;
                }
            }
        }
        expired
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
            h.update(e.value());
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

    /// Approximate bytes held by the keyspace's own structures.
    pub fn memory_estimate(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let s = s.0.lock();
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

#[derive(Clone, Copy)]
struct Ctx<'s> {
    store: &'s Store,
    keep_tombstones: bool,
}

impl Shard {
    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(hash, |&i| slab.get(i).key() == key)
            .copied()
    }

    fn purge_slot(&mut self, slot: u32, hash: u64) {
        if let Ok(found) = self.index.find_entry(hash, |&i| i == slot) {
            found.remove();
        }
        match self.slab.get(slot).state {
            SlotState::Live => {
                self.live -= 1;
                if self.slab.get(slot).expires_at != NO_EXPIRY {
                    self.volatile -= 1;
                }
            }
            SlotState::Tombstone => self.tombstones -= 1,
            SlotState::Free => return,
        }
        self.slab.remove(slot);
    }

    /// Deletes a live entry: a tombstone with `version` if the cluster needs
    /// one, otherwise the slot is freed.
    fn delete_slot(&mut self, slot: u32, hash: u64, version: Version, ctx: Ctx<'_>) {
        if !ctx.keep_tombstones {
            self.purge_slot(slot, hash);
            return;
        }
        let e = self.slab.get_mut(slot);
        if e.state != SlotState::Live {
            return;
        }
        if e.expires_at != NO_EXPIRY {
            self.volatile -= 1;
        }
        e.make_tombstone(version);
        self.live -= 1;
        self.tombstones += 1;
    }

    /// An expired entry becomes a tombstone with its own version: every
    /// replica expires it at the same instant, so they agree without a new
    /// write.
    fn expire_slot(&mut self, slot: u32, hash: u64, ctx: Ctx<'_>) {
        let version = self.slab.get(slot).version;
        self.delete_slot(slot, hash, version, ctx);
        ctx.store.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
    }

    fn sweep(&mut self, now_ms: u64, step: u32, store: &Store, ctx: Ctx<'_>) -> (usize, usize) {
        let len = self.slab.len();
        if len == 0 {
            return (0, 0);
        }
        let (mut seen, mut expired) = (0, 0);
        for _ in 0..step.min(len) {
            if self.sweep_cursor >= len {
                self.sweep_cursor = 0;
            }
            let slot = self.sweep_cursor;
            self.sweep_cursor += 1;
            let e = self.slab.get(slot);
            match e.state {
                SlotState::Live if e.is_expired(now_ms) => {
                    let hash = store.hash(e.key());
                    self.expire_slot(slot, hash, ctx);
                    expired += 1;
                }
                SlotState::Tombstone if !ctx.keep_tombstones => {
                    let hash = store.hash(e.key());
                    self.purge_slot(slot, hash);
                }
                _ => {}
            }
            seen += 1;
        }
        (seen, expired)
    }
}

/// Exclusive access to one key while its shard is locked.
pub struct KeyAccess<'a> {
    ctx: Ctx<'a>,
    shard: &'a mut Shard,
    key: &'a [u8],
    hash: u64,
    /// Slot of this key's entry (live or tombstone), if any.
    slot: Option<u32>,
    now_ms: u64,
}

impl<'a> KeyAccess<'a> {
    fn new(ctx: Ctx<'a>, shard: &'a mut Shard, key: &'a [u8], hash: u64, now_ms: u64) -> Self {
        let mut slot = shard.find(hash, key);
        if let Some(i) = slot
            && shard.slab.get(i).is_expired(now_ms)
        {
            shard.expire_slot(i, hash, ctx);
            if !ctx.keep_tombstones {
                slot = None;
            }
        }
        Self {
            ctx,
            shard,
            key,
            hash,
            slot,
            now_ms,
        }
    }

    pub fn key(&self) -> &[u8] {
        self.key
    }

    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn live_entry(&self) -> Option<&Entry> {
        self.slot
            .map(|i| self.shard.slab.get(i))
            .filter(|e| e.is_live())
    }

    pub fn exists(&self) -> bool {
        self.live_entry().is_some()
    }

    /// The live value, if any.
    pub fn value(&self) -> Option<&[u8]> {
        self.live_entry().map(Entry::value)
    }

    /// The live entry's expiry (None: no key; Some(NO_EXPIRY): persistent).
    pub fn expires_at(&self) -> Option<u64> {
        self.live_entry().map(|e| e.expires_at)
    }

    /// The version of whatever this key holds, tombstones included.
    pub fn version(&self) -> Option<Version> {
        self.slot.map(|i| self.shard.slab.get(i).version)
    }

    /// Writes `value` with a new version; returns that version.
    pub fn set(&mut self, value: &[u8], expiry: Expiry) -> Version {
        let version = self.ctx.store.clock.tick();
        self.write(value, expiry, version);
        version
    }

    fn write(&mut self, value: &[u8], expiry: Expiry, version: Version) {
        let shard = &mut *self.shard;
        match self.slot {
            Some(i) => {
                let e = shard.slab.get_mut(i);
                let was_live = e.is_live();
                let old_expiry = if was_live { e.expires_at } else { NO_EXPIRY };
                let new_expiry = match expiry {
                    Expiry::Keep => old_expiry,
                    Expiry::Persist => NO_EXPIRY,
                    Expiry::At(t) => t,
                };
                e.set_value(value);
                e.expires_at = new_expiry;
                e.version = version;
                if !was_live {
                    shard.tombstones -= 1;
                    shard.live += 1;
                }
                match (old_expiry != NO_EXPIRY, new_expiry != NO_EXPIRY) {
                    (false, true) => shard.volatile += 1,
                    (true, false) => shard.volatile -= 1,
                    _ => {}
                }
            }
            None => {
                let expires_at = match expiry {
                    Expiry::At(t) => t,
                    Expiry::Keep | Expiry::Persist => NO_EXPIRY,
                };
                let i = shard
                    .slab
                    .insert(Entry::live(self.key, value, expires_at, version));
                let (slab, hasher) = (&shard.slab, &self.ctx.store.hasher);
                shard.index.insert_unique(self.hash, i, |&j| {
                    use std::hash::BuildHasher;
                    hasher.hash_one(slab.get(j).key())
                });
                shard.live += 1;
                if expires_at != NO_EXPIRY {
                    shard.volatile += 1;
                }
                self.slot = Some(i);
            }
        }
    }

    /// Deletes the key if it exists; returns whether it did.
    pub fn delete(&mut self) -> bool {
        let Some(i) = self.slot.filter(|&i| self.shard.slab.get(i).is_live()) else {
            return false;
        };
        let version = self.ctx.store.clock.tick();
        self.shard.delete_slot(i, self.hash, version, self.ctx);
        if !self.ctx.keep_tombstones {
            self.slot = None;
        }
        true
    }

    /// Changes the expiry of a live key (a write with a new version);
    /// an expiry in the past deletes the key, as Redis does.
    pub fn set_expiry(&mut self, expires_at: u64) -> bool {
        let Some(i) = self.slot.filter(|&i| self.shard.slab.get(i).is_live()) else {
            return false;
        };
        if expires_at != NO_EXPIRY && expires_at <= self.now_ms {
            return self.delete();
        }
        let version = self.ctx.store.clock.tick();
        let shard = &mut *self.shard;
        let e = shard.slab.get_mut(i);
        match (e.expires_at != NO_EXPIRY, expires_at != NO_EXPIRY) {
            (false, true) => shard.volatile += 1,
            (true, false) => shard.volatile -= 1,
            _ => {}
        }
        e.expires_at = expires_at;
        e.version = version;
        true
    }

    /// Applies a replicated write under the conflict rule (DESIGN §2): it
    /// takes effect only if its version is larger than whatever this key
    /// holds, tombstones included, so applying is idempotent and
    /// order-independent. `value` None is a delete. Returns whether it took
    /// effect.
    pub fn apply(&mut self, value: Option<&[u8]>, expires_at: u64, version: Version) -> bool {
        self.ctx.store.clock.observe(version);
        if self.version().is_some_and(|held| held >= version) {
            return false;
        }
        match (value, self.slot) {
            (Some(value), _) => {
                let expiry = if expires_at == NO_EXPIRY {
                    Expiry::Persist
                } else {
                    Expiry::At(expires_at)
                };
                self.write(value, expiry, version);
            }
            (None, Some(i)) if self.shard.slab.get(i).is_live() => {
                self.shard.delete_slot(i, self.hash, version, self.ctx);
                if !self.ctx.keep_tombstones {
                    self.slot = None;
                }
            }
            (None, Some(i)) => self.shard.slab.get_mut(i).version = version,
            (None, None) if self.ctx.keep_tombstones => {
                let shard = &mut *self.shard;
                let i = shard.slab.insert(Entry::tombstone(self.key, version));
                let (slab, hasher) = (&shard.slab, &self.ctx.store.hasher);
                shard.index.insert_unique(self.hash, i, |&j| {
                    use std::hash::BuildHasher;
                    hasher.hash_one(slab.get(j).key())
                });
                shard.tombstones += 1;
                self.slot = Some(i);
            }
            (None, None) => {}
        }
        true
    }
}

/// Several keys locked together (MSET, RENAME, COPY…).
pub struct MultiAccess<'s> {
    store: &'s Store,
    guards: Vec<(usize, MutexGuard<'s, Shard>)>,
    now_ms: u64,
}

impl MultiAccess<'_> {
    /// Access to one of the keys this multi-access was created with.
    ///
    /// # Panics
    /// If `key` was not among them (a bug in the caller, not input).
    pub fn key<'k>(&'k mut self, key: &'k [u8]) -> KeyAccess<'k> {
        let hash = self.store.hash(key);
        let shard_no = Store::shard_of(hash);
        let ctx = self.store.ctx();
        let now_ms = self.now_ms;
        let guard = self
            .guards
            .iter_mut()
            .find(|(i, _)| *i == shard_no)
            .map(|(_, g)| &mut **g)
            .expect("MultiAccess::key called with a key it was not created with");
        KeyAccess::new(ctx, guard, key, hash, now_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(Arc::new(Hlc::new(1)))
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
    fn tombstones_keep_the_delete_version_when_the_cluster_needs_them() {
        let s = store();
        s.set_keep_tombstones(true);
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
            s.set_keep_tombstones(true);
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
                    let local = s.clock().tick_at(0);
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
