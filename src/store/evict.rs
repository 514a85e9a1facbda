//! `--maxmemory`: the memory gauge, the eviction policies and the sampling
//! that picks what to evict. It never decides which commands may grow
//! memory (the command table's `denyoom` flag does) nor formats errors.
//!
//! The measure is Redis's `used_memory`: bytes allocated through jemalloc.
//! Reading it means advancing jemalloc's statistics epoch (a few
//! microseconds under a global mutex), far too slow per write, so the
//! figure is cached and refreshed at most every [`REFRESH_MS`] by whichever
//! write notices it is stale. Between two refreshes the writes of those
//! milliseconds go unseen, and an eviction round subtracts its own estimate
//! of what it freed, so the limit is approximate: a node may exceed it by
//! what it can allocate in a few milliseconds, and jemalloc counts memory
//! cached in its per-thread caches as allocated.
//!
//! Eviction is approximate like Redis's: sample `maxmemory-samples` keys
//! (each from a random shard), merge them into a small pool of the best
//! candidates seen so far (Redis's eviction pool), evict the best one that
//! is still what it was when sampled (longest idle, or expiring first),
//! repeat until the excess is covered. The random policies evict a random
//! key.
//!
//! In a cluster an eviction is a delete: a tombstone stamped with a new
//! version from this node's clock and pushed to the peers like a DEL (as a
//! Redis master sends DELs for the keys it evicts to its replicas). Every
//! node holds every key, so they are all under the same memory pressure;
//! had the eviction stayed local, anti-entropy, which compares every key,
//! would hand the key straight back.

use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};

use parking_lot::Mutex;

use super::changelog::Cause;
use super::entry::{Entry, LRU_MAX, NO_EXPIRY, SlotState};
use super::shard::Shard;
use super::{SHARDS, Store, digest};
use crate::clock::Version;

/// How stale the cached memory figure may get, in milliseconds.
pub const REFRESH_MS: u64 = 10;
/// Milliseconds per tick of the access clock. 24 bits of 100 ms wrap after
/// 19.4 days: a key untouched for longer looks recent again (Redis, with
/// 1 s ticks, wraps after 194 days); a finer tick tells apart keys touched
/// within the same second, which matters more for a cache.
pub const LRU_RESOLUTION_MS: u64 = 100;
/// Redis's default `maxmemory-samples`.
pub const DEFAULT_SAMPLES: u32 = 5;
/// Keys one write may evict before it proceeds anyway (the background
/// cycle goes on evicting), so a write of a huge value cannot stall its
/// connection for long.
const MAX_EVICTIONS_PER_CALL: usize = 4096;
/// The slot an evicted key keeps (its tombstone) until collected, counted
/// in what an eviction frees: the tombstone goes once the cluster has seen
/// it, and overestimating what was freed errs towards evicting too little
/// for a few milliseconds rather than too much for good.
const ENTRY_OVERHEAD: u64 = std::mem::size_of::<super::Entry>() as u64 + 16;
/// Candidates the eviction pool keeps between rounds (Redis's
/// `EVPOOL_SIZE`).
const POOL_SIZE: usize = 16;
/// At most one warning per this many milliseconds about peer writes
/// applied over the limit.
const WARN_EVERY_MS: u64 = 10_000;

/// What happens to writes once used memory exceeds `maxmemory`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum Policy {
    /// Writes that may grow memory get `-OOM`; nothing is evicted.
    #[default]
    NoEviction,
    /// Evict the least recently used of sampled keys.
    AllKeysLru,
    /// Evict random keys.
    AllKeysRandom,
    /// Evict the least recently used of sampled keys that have a TTL.
    VolatileLru,
    /// Evict random keys that have a TTL.
    VolatileRandom,
    /// Evict, of sampled keys that have a TTL, the one expiring first.
    VolatileTtl,
}

impl Policy {
    /// Redis's names, in [`Self::ALL`]'s order.
    pub const NAMES: [&'static str; 6] = [
        "noeviction",
        "allkeys-lru",
        "allkeys-random",
        "volatile-lru",
        "volatile-random",
        "volatile-ttl",
    ];

    const ALL: [Self; 6] = [
        Self::NoEviction,
        Self::AllKeysLru,
        Self::AllKeysRandom,
        Self::VolatileLru,
        Self::VolatileRandom,
        Self::VolatileTtl,
    ];

    /// Redis's name for it.
    pub fn name(self) -> &'static str {
        Self::NAMES[self as usize]
    }

    /// Parses Redis's name, ignoring ASCII case.
    pub fn parse(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().as_bytes().eq_ignore_ascii_case(name))
    }

    /// Every name, for error messages.
    pub fn names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }

    fn from_u8(n: u8) -> Self {
        Self::ALL.get(usize::from(n)).copied().unwrap_or_default()
    }

    fn volatile_only(self) -> bool {
        matches!(
            self,
            Self::VolatileLru | Self::VolatileRandom | Self::VolatileTtl
        )
    }
}

/// The write may not run: memory is over the limit and nothing could be
/// evicted (policy `noeviction`, or no candidate key left).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfMemory;

/// The limit, the policy, the cached gauge and their counters.
#[derive(Debug)]
pub struct MemoryLimit {
    /// Bytes; 0 means no limit.
    maxmemory: AtomicU64,
    policy: AtomicU8,
    samples: AtomicU32,
    /// Last measured used memory, minus what evictions since then freed.
    used: AtomicU64,
    /// When `used` was measured (the caller's unix ms).
    measured_ms: AtomicU64,
    last_warning_ms: AtomicU64,
    /// Keys evicted by this node (INFO `evicted_keys`).
    pub evicted_keys: AtomicU64,
    /// Writes from peers applied while over the limit under `noeviction`
    /// (INFO `replicated_writes_over_maxmemory`).
    pub replicated_over: AtomicU64,
    /// The best candidates sampled so far (LRU and TTL policies).
    pool: Mutex<Vec<Candidate>>,
    /// The gauge; replaceable so unit tests need not allocate gigabytes.
    meter: fn() -> u64,
}

/// A sampled key, named by position; `version` and `lru` tell whether the
/// slot still holds the key as it was sampled (a write changes the
/// version, a read the access clock).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Candidate {
    shard: usize,
    slot: u32,
    version: Version,
    lru: u32,
    expires_at: u64,
}

impl Candidate {
    fn of(shard: usize, slot: u32, e: &Entry) -> Self {
        Self {
            shard,
            slot,
            version: e.version,
            lru: e.lru(),
            expires_at: e.expires_at,
        }
    }

    fn still(&self, e: &Entry) -> bool {
        e.state() == SlotState::Live
            && e.version == self.version
            && e.lru() == self.lru
            && e.expires_at == self.expires_at
    }

    /// Smaller is evicted first.
    fn rank(&self, policy: Policy, clock: u32) -> u64 {
        match policy {
            Policy::VolatileTtl => self.expires_at,
            _ => u64::from(LRU_MAX - (clock.wrapping_sub(self.lru) & LRU_MAX)),
        }
    }
}

impl Default for MemoryLimit {
    fn default() -> Self {
        Self {
            maxmemory: AtomicU64::new(0),
            policy: AtomicU8::new(Policy::NoEviction as u8),
            samples: AtomicU32::new(DEFAULT_SAMPLES),
            used: AtomicU64::new(0),
            measured_ms: AtomicU64::new(0),
            last_warning_ms: AtomicU64::new(0),
            evicted_keys: AtomicU64::new(0),
            replicated_over: AtomicU64::new(0),
            pool: Mutex::new(Vec::with_capacity(POOL_SIZE + DEFAULT_SAMPLES as usize)),
            meter: crate::stats::used_memory,
        }
    }
}

impl MemoryLimit {
    pub fn maxmemory(&self) -> u64 {
        self.maxmemory.load(Ordering::Relaxed)
    }

    pub fn set_maxmemory(&self, bytes: u64) {
        self.maxmemory.store(bytes, Ordering::Relaxed);
        // Measure afresh on the next write: the old figure may predate a
        // burst of writes the old limit did not care about.
        self.measured_ms.store(0, Ordering::Relaxed);
    }

    pub fn policy(&self) -> Policy {
        Policy::from_u8(self.policy.load(Ordering::Relaxed))
    }

    pub fn set_policy(&self, policy: Policy) {
        self.policy.store(policy as u8, Ordering::Relaxed);
    }

    pub fn samples(&self) -> u32 {
        self.samples.load(Ordering::Relaxed)
    }

    pub fn set_samples(&self, n: u32) {
        self.samples.store(n.max(1), Ordering::Relaxed);
    }

    /// CONFIG RESETSTAT: the counters start again from zero.
    pub fn reset_stats(&self) {
        self.evicted_keys.store(0, Ordering::Relaxed);
        self.replicated_over.store(0, Ordering::Relaxed);
    }

    /// Used memory, measured at most [`REFRESH_MS`] ago (by `now_ms`).
    fn used(&self, now_ms: u64) -> u64 {
        let last = self.measured_ms.load(Ordering::Relaxed);
        // `abs_diff`: a wall clock stepped back must not freeze the gauge.
        if now_ms.abs_diff(last) >= REFRESH_MS
            && self
                .measured_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            // One writer measures; the others use the previous figure.
            let used = (self.meter)();
            self.used.store(used, Ordering::Relaxed);
            return used;
        }
        self.used.load(Ordering::Relaxed)
    }

    /// How far used memory is over the limit (0 if under, or no limit).
    fn excess(&self, now_ms: u64) -> u64 {
        match self.maxmemory() {
            0 => 0,
            max => self.used(now_ms).saturating_sub(max),
        }
    }

    /// Whether a warning is due now (rate-limited).
    fn warning_due(&self, now_ms: u64) -> bool {
        let last = self.last_warning_ms.load(Ordering::Relaxed);
        now_ms.abs_diff(last) >= WARN_EVERY_MS
            && self
                .last_warning_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// The access clock at `now_ms`: [`LRU_RESOLUTION_MS`] ticks, wrapping at
/// 24 bits (as Redis's `LRU_CLOCK`).
pub fn lru_clock(now_ms: u64) -> u32 {
    ((now_ms / LRU_RESOLUTION_MS) & u64::from(LRU_MAX)) as u32
}

/// What eviction may take in `shard` under `policy`.
fn has_candidates(shard: &Shard, policy: Policy) -> bool {
    if policy.volatile_only() {
        shard.volatile > 0
    } else {
        shard.live > 0
    }
}

fn is_candidate(e: &Entry, policy: Policy) -> bool {
    e.state() == SlotState::Live && (!policy.volatile_only() || e.expires_at != NO_EXPIRY)
}

/// A random candidate slot of `shard`.
fn sample(shard: &Shard, policy: Policy) -> Option<u32> {
    shard
        .random_slots(8)
        .find(|&slot| is_candidate(shard.slab.get(slot), policy))
}

impl Store {
    /// The `--maxmemory` settings and counters.
    pub fn memory(&self) -> &MemoryLimit {
        &self.memory
    }

    /// Called before a write that may grow memory: when over the limit,
    /// evicts per the policy. `Err` means the write must be refused with
    /// `-OOM`. Costs one relaxed load when there is no limit.
    pub fn ensure_memory(&self, now_ms: u64) -> Result<(), OutOfMemory> {
        match self.memory.excess(now_ms) {
            0 => Ok(()),
            excess => self.free_memory(excess, now_ms),
        }
    }

    /// Called after writes from peers were applied: they are never refused
    /// (refusing would leave this replica behind for good, and anti-entropy
    /// would only bring them again), so memory is recovered by evicting
    /// afterwards; under `noeviction` they are counted and logged.
    pub fn after_peer_writes(&self, applied: usize, now_ms: u64) {
        let excess = self.memory.excess(now_ms);
        if applied == 0 || excess == 0 {
            return;
        }
        if self.free_memory(excess, now_ms).is_err() {
            self.memory
                .replicated_over
                .fetch_add(applied as u64, Ordering::Relaxed);
            if self.memory.warning_due(now_ms) {
                tracing::warn!(
                    maxmemory = self.memory.maxmemory(),
                    policy = self.memory.policy().name(),
                    total = self.memory.replicated_over.load(Ordering::Relaxed),
                    "writes from peers applied while used memory exceeds maxmemory \
                     (INFO replicated_writes_over_maxmemory)"
                );
            }
        }
    }

    /// The background half of eviction (run with active expiry): goes on
    /// where a write's bounded round stopped.
    pub fn evict_in_background(&self, now_ms: u64) {
        if let excess @ 1.. = self.memory.excess(now_ms) {
            let _ = self.free_memory(excess, now_ms);
        }
    }

    /// Evicts until the estimated bytes freed cover `excess` (or the round's
    /// bound). Err if nothing could be evicted.
    fn free_memory(&self, excess: u64, now_ms: u64) -> Result<(), OutOfMemory> {
        let policy = self.memory.policy();
        if policy == Policy::NoEviction {
            return Err(OutOfMemory);
        }
        let samples = self.memory.samples() as usize;
        let (mut freed, mut evicted) = (0u64, 0usize);
        while freed < excess && evicted < MAX_EVICTIONS_PER_CALL {
            let Some(bytes) = self.evict_one(policy, samples, now_ms) else {
                break;
            };
            freed += bytes;
            evicted += 1;
        }
        // The next measurement replaces this estimate.
        let _ = self
            .memory
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(freed))
            });
        if evicted > 0 {
            Ok(())
        } else {
            Err(OutOfMemory)
        }
    }

    /// Evicts one key per `policy`. Returns the bytes this is estimated to
    /// free, None when no key may be evicted.
    pub(super) fn evict_one(&self, policy: Policy, samples: usize, now_ms: u64) -> Option<u64> {
        if matches!(policy, Policy::AllKeysRandom | Policy::VolatileRandom) {
            return self.evict_random(policy, now_ms);
        }
        let clock = lru_clock(now_ms);
        let mut pool = self.memory.pool.lock();
        // Stale candidates are dropped as they are met, so a few rounds
        // always end with an eviction or with nothing left to evict.
        for _ in 0..8 {
            for _ in 0..samples {
                let Some((c, expired)) = self.random_candidate(policy, now_ms) else {
                    break;
                };
                if expired {
                    return Some(self.evict_at(&c, now_ms));
                }
                if !pool.contains(&c) {
                    pool.push(c);
                }
            }
            if pool.is_empty() {
                return None;
            }
            pool.sort_unstable_by_key(|c| std::cmp::Reverse(c.rank(policy, clock)));
            let excess = pool.len().saturating_sub(POOL_SIZE);
            pool.drain(..excess);
            while let Some(c) = pool.pop() {
                let freed = self.evict_at(&c, now_ms);
                if freed > 0 {
                    return Some(freed);
                }
            }
        }
        None
    }

    fn evict_random(&self, policy: Policy, now_ms: u64) -> Option<u64> {
        let (c, _) = self.random_candidate(policy, now_ms)?;
        Some(self.evict_at(&c, now_ms))
    }

    /// A candidate from a random shard that has any, and whether it has
    /// expired (then it goes first).
    fn random_candidate(&self, policy: Policy, now_ms: u64) -> Option<(Candidate, bool)> {
        let start = fastrand::usize(..SHARDS);
        (0..SHARDS).find_map(|step| {
            let shard_no = (start + step) % SHARDS;
            let shard = self.shard(shard_no);
            if !has_candidates(&shard, policy) {
                return None;
            }
            let slot = sample(&shard, policy)?;
            let e = shard.slab.get(slot);
            Some((Candidate::of(shard_no, slot, e), e.is_expired(now_ms)))
        })
    }

    /// Evicts the sampled key `c` if its slot still holds it as sampled:
    /// an expired key is expired, any other becomes a tombstone with a new
    /// version, pushed to the peers like a DEL. Returns the bytes this is
    /// estimated to free (0: nothing evicted).
    fn evict_at(&self, c: &Candidate, now_ms: u64) -> u64 {
        let mut guard = self.shard(c.shard);
        let shard = &mut *guard;
        let slot = c.slot;
        let e = shard.slab.get(slot);
        if !c.still(e) {
            return 0;
        }
        let bytes = e.heap_size() as u64 + ENTRY_OVERHEAD;
        if e.is_expired(now_ms) {
            // Expired already: every replica drops it on its own.
            shard.expire(self, slot, digest::key_hash(e.key()), now_ms);
            return bytes;
        }
        let version = self.clock.hlc().tick_at(now_ms);
        let key_hash = digest::key_hash(e.key());
        if e.typed().is_some() {
            // A typed value is cleared like a DEL: its counters reset to
            // what they hold here, or the peers' copies would bring them back.
            let fragment = shard.update_typed(slot, key_hash, now_ms, |value| {
                value.clear_local(version, now_ms)
            });
            shard.publish_fragment(&self.log, Cause::Evicted, slot, &fragment);
        } else {
            shard.set_tombstone(slot, key_hash, version, now_ms);
            shard.publish_slot(&self.log, Cause::Evicted, slot);
        }
        drop(guard);
        self.memory.evicted_keys.fetch_add(1, Ordering::Relaxed);
        bytes
    }
}

#[cfg(test)]
pub(super) fn set_meter(limit: &mut MemoryLimit, meter: fn() -> u64) {
    limit.meter = meter;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::store;
    use crate::store::{Causes, Change, ChangeKind, Expiry};

    fn fill(s: &Store, prefix: &str, n: usize, expiry: Expiry, now_ms: u64) {
        for i in 0..n {
            s.with_key(format!("{prefix}{i}").as_bytes(), now_ms, |a| {
                a.set(b"value", expiry)
            });
        }
    }

    fn count(s: &Store, prefix: &str, n: usize, now_ms: u64) -> usize {
        (0..n)
            .filter(|i| {
                s.with_key_untouched(format!("{prefix}{i}").as_bytes(), now_ms, |a| a.exists())
            })
            .count()
    }

    #[test]
    fn policies_parse_by_redis_name_in_any_case() {
        assert_eq!(Policy::parse(b"ALLKEYS-LRU"), Some(Policy::AllKeysLru));
        assert_eq!(Policy::parse(b"volatile-ttl"), Some(Policy::VolatileTtl));
        assert_eq!(Policy::parse(b"allkeys-lfu"), None);
        for p in Policy::ALL {
            assert_eq!(Policy::from_u8(p as u8), p);
        }
    }

    #[test]
    fn the_access_clock_wraps_and_idle_time_survives_the_wrap() {
        assert_eq!(lru_clock(0), 0);
        assert_eq!(lru_clock(LRU_RESOLUTION_MS * 5), 5);
        let e = Entry::live(b"k", b"v", NO_EXPIRY, Default::default());
        let mut c = Candidate::of(0, 0, &e);
        c.lru = LRU_MAX - 1;
        let fresh = Candidate { lru: 2, ..c };
        // 5 ticks idle across the wrap, against 1: ranked to go first.
        assert!(c.rank(Policy::AllKeysLru, 3) < fresh.rank(Policy::AllKeysLru, 3));
    }

    #[test]
    fn lru_evicts_keys_idle_longest() {
        let s = store();
        fill(&s, "cold", 500, Expiry::Persist, 0);
        fill(&s, "hot", 500, Expiry::Persist, 0);
        // Later, the hot keys are read: their clock moves on.
        let later = 100 * LRU_RESOLUTION_MS;
        for i in 0..500 {
            s.with_key(format!("hot{i}").as_bytes(), later, |a| a.exists());
        }
        for _ in 0..400 {
            assert!(s.evict_one(Policy::AllKeysLru, 5, later).is_some());
        }
        let (hot, cold) = (count(&s, "hot", 500, later), count(&s, "cold", 500, later));
        // Exact LRU leaves 500 hot and 100 cold, random eviction about
        // 300 of each; sampling lands close to the former (460–500 hot
        // over 256 shards, where many hold a few keys or none).
        assert!(hot >= 430 && cold <= 170, "hot {hot}, cold {cold}");
        assert_eq!(s.memory().evicted_keys.load(Ordering::Relaxed), 400);
    }

    #[test]
    fn volatile_ttl_evicts_only_keys_with_a_ttl_soonest_first() {
        let s = store();
        fill(&s, "keep", 300, Expiry::Persist, 0);
        fill(&s, "soon", 300, Expiry::At(1_000_000), 0);
        fill(&s, "late", 300, Expiry::At(9_000_000), 0);
        for _ in 0..250 {
            assert!(s.evict_one(Policy::VolatileTtl, 5, 0).is_some());
        }
        let (soon, late) = (count(&s, "soon", 300, 0), count(&s, "late", 300, 0));
        assert_eq!(count(&s, "keep", 300, 0), 300);
        assert!(soon < late, "soon {soon}, late {late}");
        for _ in 0..350 {
            assert!(s.evict_one(Policy::VolatileTtl, 5, 0).is_some());
        }
        assert_eq!(s.evict_one(Policy::VolatileTtl, 5, 0), None);
        assert_eq!(s.len(), 300);
    }

    #[test]
    fn an_eviction_is_a_versioned_delete() {
        let s = store();
        let written = s.with_key(b"k", 0, |a| a.set(b"v", Expiry::Persist));
        assert!(s.evict_one(Policy::AllKeysRandom, 5, 0).is_some());
        let (exists, version) = s.with_key(b"k", 0, |a| (a.exists(), a.version()));
        assert!(!exists);
        assert!(version.is_some_and(|v| v > written));
        assert_eq!(s.evict_one(Policy::AllKeysRandom, 5, 0), None);
    }

    #[test]
    fn an_eviction_is_published_as_a_delete() {
        let s = store();
        let reader = s.subscribe(Causes::ALL);
        s.with_key(b"k", 0, |a| a.set(b"v", Expiry::Persist));
        let batch = s.read_changes(&reader).unwrap();
        assert_eq!(batch.iter().count(), 1, "the SET");
        assert!(s.evict_one(Policy::AllKeysRandom, 5, 0).is_some());
        let batch = s.read_changes(&reader).unwrap();
        let changes: Vec<&Change> = batch.iter().collect();
        assert!(
            matches!(
                changes[..],
                [Change {
                    cause: Cause::Evicted,
                    kind: ChangeKind::Entry { value: None, .. },
                    ..
                }]
            ),
            "the eviction's delete is published: {changes:?}"
        );
    }

    fn huge() -> u64 {
        u64::MAX / 2
    }

    #[test]
    fn over_the_limit_noeviction_refuses_and_the_others_evict() {
        let mut s = store();
        set_meter(&mut s.memory, huge);
        fill(&s, "k", 100, Expiry::Persist, 0);
        assert_eq!(s.ensure_memory(0), Ok(()), "no limit");
        s.memory().set_maxmemory(1 << 20);
        assert_eq!(s.ensure_memory(REFRESH_MS), Err(OutOfMemory));
        s.after_peer_writes(3, REFRESH_MS);
        assert_eq!(s.memory().replicated_over.load(Ordering::Relaxed), 3);
        assert_eq!(s.len(), 100);
        s.memory().set_policy(Policy::VolatileTtl);
        assert_eq!(s.ensure_memory(2 * REFRESH_MS), Err(OutOfMemory));
        s.memory().set_policy(Policy::AllKeysRandom);
        assert_eq!(s.ensure_memory(3 * REFRESH_MS), Ok(()));
        assert_eq!(s.len(), 0, "the gauge never drops: every key goes");
        assert_eq!(s.ensure_memory(4 * REFRESH_MS), Err(OutOfMemory));
    }
}
