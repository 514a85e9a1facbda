//! Key-level access for the command layer: read, write, delete, expire and
//! apply replicated writes, all while the key's shard is locked.

use super::changelog::Cause;
use super::entry::{Entry, NO_EXPIRY};
use super::evict::lru_clock;
use super::shard::{Shard, ShardGuard};
use super::typed_access::PlainWrite;
use super::value::Fragment;
use super::{Expiry, KeyHashes, Store};
use crate::clock::Version;

/// Exclusive access to one key while its shard is locked.
pub struct KeyAccess<'a> {
    pub(super) store: &'a Store,
    pub(super) shard: &'a mut Shard,
    pub(super) key: &'a [u8],
    pub(super) hashes: KeyHashes,
    /// Slot of this key's entry (live or tombstone), if any.
    pub(super) slot: Option<u32>,
    /// The batch's clock reading; versions are ticked from it rather than
    /// from a fresh one (about 100 instructions less per write, callgrind).
    pub(super) now_ms: u64,
}

impl<'a> KeyAccess<'a> {
    pub(super) fn new(
        store: &'a Store,
        shard: &'a mut Shard,
        key: &'a [u8],
        hashes: KeyHashes,
        now_ms: u64,
        touch: bool,
    ) -> Self {
        let slot = shard.find(hashes.index, key);
        if let Some(i) = slot {
            let e = shard.slab.get_mut(i);
            if e.is_expired(now_ms) {
                shard.expire(store, i, hashes.digest, now_ms);
            } else if touch {
                // The entry's line is in cache from the key comparison.
                e.touch(lru_clock(now_ms));
            }
        }
        Self {
            store,
            shard,
            key,
            hashes,
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

    /// The live value of a plain string, if any (a typed value's is read
    /// through `KeyAccess::string` or `KeyAccess::typed`).
    pub fn value(&self) -> Option<&[u8]> {
        self.live_entry()
            .filter(|e| e.typed().is_none())
            .map(Entry::value)
    }

    /// Whether the key's entry holds a typed value (live or not).
    pub(super) fn holds_typed(&self) -> bool {
        self.slot
            .is_some_and(|i| self.shard.slab.get(i).typed().is_some())
    }

    /// The live entry's expiry (None: no key; Some(NO_EXPIRY): persistent).
    pub fn expires_at(&self) -> Option<u64> {
        self.live_entry().map(|e| e.expires_at)
    }

    /// The version of whatever this key holds, tombstones included: for a
    /// typed value, the newest version among its parts (DEBUG VERSION).
    pub fn version(&self) -> Option<Version> {
        self.slot.map(|i| self.shard.slab.get(i).version)
    }

    /// What WATCH compares: the version, or for a typed value its content
    /// digest (see `Entry::digest_version`), since a replicated element
    /// older than the newest changes the value without changing `version`.
    pub fn watch_version(&self) -> Option<Version> {
        self.slot.map(|i| self.shard.slab.get(i).digest_version())
    }

    /// Publishes what the key holds now to the change log.
    fn publish(&mut self, cause: Cause) {
        if let Some(slot) = self.slot {
            self.shard.publish_slot(&self.store.log, cause, slot);
        }
    }

    /// Writes `value` with a new version; returns that version.
    pub fn set(&mut self, value: &[u8], expiry: Expiry) -> Version {
        let version = self.store.clock.hlc().tick_at(self.now_ms);
        self.set_at(value, expiry, version);
        version
    }

    /// Writes `value` with a version the caller took from the clock (a
    /// RENAME stamps its delete and its write with one version).
    pub fn set_at(&mut self, value: &[u8], expiry: Expiry, version: Version) {
        if self.holds_typed() {
            return self.write_over_typed(PlainWrite::Set(value, expiry), version);
        }
        self.put(value, expiry, version);
        self.publish(Cause::Local);
    }

    /// Stores a live value with `version`; returns the expiry it got.
    fn put(&mut self, value: &[u8], expiry: Expiry, version: Version) -> u64 {
        let old_expiry = self.expires_at().unwrap_or(NO_EXPIRY);
        let expires_at = match expiry {
            Expiry::Keep => old_expiry,
            Expiry::Persist => NO_EXPIRY,
            Expiry::At(t) => t,
        };
        match self.slot {
            Some(i) => self
                .shard
                .set_live(i, self.hashes.digest, value, expires_at, version),
            None => {
                let mut entry = Entry::live(self.key, value, expires_at, version);
                entry.touch(lru_clock(self.now_ms));
                self.slot = Some(self.shard.insert(self.store, self.hashes, entry));
            }
        }
        expires_at
    }

    /// Deletes the key if it exists; returns whether it did.
    pub fn delete(&mut self) -> bool {
        if !self.exists() {
            return false;
        }
        let version = self.store.clock.hlc().tick_at(self.now_ms);
        self.delete_at(version)
    }

    /// Deletes the key with a version the caller took from the clock.
    pub fn delete_at(&mut self, version: Version) -> bool {
        let Some(i) = self.slot.filter(|&i| self.shard.slab.get(i).is_live()) else {
            return false;
        };
        if self.holds_typed() {
            self.write_over_typed(PlainWrite::Delete, version);
            return true;
        }
        self.shard
            .set_tombstone(i, self.hashes.digest, version, self.now_ms);
        self.publish(Cause::Local);
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
        let version = self.store.clock.hlc().tick_at(self.now_ms);
        if self.holds_typed() {
            self.write_over_typed(PlainWrite::Expire(expires_at), version);
            return true;
        }
        self.shard
            .set_expiry(i, self.hashes.digest, expires_at, version);
        self.publish(Cause::Local);
        true
    }

    /// Applies a replicated write under the conflict rule (DESIGN §2): it
    /// takes effect only if its version is larger than whatever this key
    /// holds (tombstones included) and than the last FLUSHALL, so applying
    /// is idempotent and order-independent. `value` None is a delete.
    /// Returns whether it took effect.
    pub fn apply(&mut self, value: Option<&[u8]>, expires_at: u64, version: Version) -> bool {
        if self.holds_typed() {
            // A plain write replaces a typed value where it is newer: its
            // clear marker and string join the value element by element.
            let fragment = Fragment::plain(value, expires_at, version);
            return self.merge_fragment(&fragment, Cause::Replicated);
        }
        self.store.clock.hlc().observe(version);
        if self.version().is_some_and(|held| held >= version) || version < self.store.truncated() {
            return false;
        }
        match (value, self.slot) {
            (Some(value), _) => {
                let expiry = if expires_at == NO_EXPIRY {
                    Expiry::Persist
                } else {
                    Expiry::At(expires_at)
                };
                self.put(value, expiry, version);
            }
            (None, Some(i)) => {
                self.shard
                    .set_tombstone(i, self.hashes.digest, version, self.now_ms)
            }
            (None, None) => {
                let entry = Entry::tombstone(self.key, version, self.now_ms);
                self.slot = Some(self.shard.insert(self.store, self.hashes, entry));
            }
        }
        self.publish(Cause::Replicated);
        true
    }
}

/// Several keys locked together (MSET, RENAME, COPY…).
pub struct MultiAccess<'s> {
    pub(super) store: &'s Store,
    pub(super) guards: Vec<(usize, ShardGuard<'s>)>,
    pub(super) now_ms: u64,
}

impl MultiAccess<'_> {
    /// `n` consecutive fresh versions, returned as the first: one clock
    /// update for a multi-key write, taken while its shards are locked.
    pub fn tick_n(&self, n: u64) -> Version {
        self.store.clock.hlc().tick_n_at(self.now_ms, n)
    }

    /// Access to one of the keys this multi-access was created with.
    ///
    /// # Panics
    /// If `key` was not among them (a bug in the caller, not input).
    pub fn key<'k>(&'k mut self, key: &'k [u8]) -> KeyAccess<'k> {
        let hashes = self.store.hashes(key);
        let shard_no = Store::shard_of(hashes.digest);
        let at = self
            .guards
            .binary_search_by_key(&shard_no, |(i, _)| *i)
            .expect("MultiAccess::key called with a key it was not created with");
        let guard = &mut *self.guards[at].1;
        KeyAccess::new(self.store, guard, key, hashes, self.now_ms, true)
    }
}
