//! One shard: a hash index over a slab of entries, and the lock guard every
//! access takes. Every change to an entry goes through the few methods
//! here, which keep the shard's counters and the store's digest tree in
//! step with the entries; every change to the keyspace is published to the
//! change log through [`Shard::publish`].

use std::sync::atomic::Ordering;

use hashbrown::HashTable;

use parking_lot::MutexGuard;

use super::changelog::{Cause, Change, ChangeKind, ChangeLog, STAGE_LIMIT};
use super::digest::{ShardLeaves, key_hash};
use super::entry::{Entry, NO_EXPIRY, Slab, SlotState};
use super::value::Typed;
use super::{KeyHashes, Store};
use crate::clock::Version;

#[derive(Default)]
pub(super) struct Shard {
    pub index: HashTable<u32>,
    pub slab: Slab,
    pub live: usize,
    pub volatile: usize,
    pub tombstones: usize,
    /// Live typed values holding element tombstones (the sweep collects
    /// them, so it visits a shard that has any).
    pub element_tombstones: usize,
    pub sweep_cursor: u32,
    /// Changes published and not yet collected into the change log.
    pub staged: Vec<Change>,
    /// This shard's part of the digest tree.
    pub digest: ShardLeaves,
}

/// Keeps the digest tree in step when the entry of the key whose stable
/// hash is `key_hash` changes from version `old` to `new` (None: no
/// entry). Key accesses pass the hash they picked the shard with; the
/// mutators below take it rather than hash the key again under the lock.
fn redigest(digest: &mut ShardLeaves, key_hash: u64, old: Option<Version>, new: Option<Version>) {
    match (old, new) {
        (Some(a), Some(b)) if a != b => digest.replace(key_hash, a, b),
        (Some(a), None) => digest.toggle(key_hash, a),
        (None, Some(b)) => digest.toggle(key_hash, b),
        _ => {}
    }
}

/// The version an entry contributes to the digest: live values and
/// tombstones alike (a free slot contributes nothing); a typed value's
/// stands for its content (see `Entry::digest_version`).
fn live_version(e: &Entry) -> Option<Version> {
    (e.state() != SlotState::Free).then(|| e.digest_version())
}

/// (live, volatile, tombstone, live with element tombstones) contribution
/// of an entry to the counters.
fn weight(e: &Entry) -> (usize, usize, usize, usize) {
    match e.state() {
        SlotState::Free => (0, 0, 0, 0),
        SlotState::Live => (
            1,
            usize::from(e.expires_at != NO_EXPIRY),
            0,
            usize::from(e.typed().is_some_and(|t| t.removed_len() > 0)),
        ),
        SlotState::Tombstone => (0, 0, 1, 0),
    }
}

/// A locked shard. When it is released, the changes staged meanwhile are
/// announced to the change log (still under the lock: a collection that
/// misses the mark then waits for the lock and finds the changes).
pub(super) struct ShardGuard<'a> {
    pub guard: MutexGuard<'a, Shard>,
    pub shard_no: usize,
    pub log: &'a ChangeLog,
}

impl std::ops::Deref for ShardGuard<'_> {
    type Target = Shard;
    fn deref(&self) -> &Shard {
        &self.guard
    }
}

impl std::ops::DerefMut for ShardGuard<'_> {
    fn deref_mut(&mut self) -> &mut Shard {
        &mut self.guard
    }
}

impl Drop for ShardGuard<'_> {
    fn drop(&mut self) {
        if !self.guard.staged.is_empty() {
            self.log.staged(self.shard_no);
        }
    }
}

impl Shard {
    /// The one publish path: every change to the keyspace (a write, a
    /// replicated write, an expiry, an eviction, a flush) is staged here,
    /// under the lock of the shard that holds it, for the change log's
    /// readers. `kind` is only built when a reader wants `cause`.
    pub fn publish(
        &mut self,
        log: &ChangeLog,
        cause: Cause,
        kind: impl FnOnce(&Self) -> ChangeKind,
    ) {
        if !log.wants(cause) {
            return;
        }
        let change = log.stamped(Change::new(cause, kind(self)));
        self.staged.push(change);
        if self.staged.len() >= STAGE_LIMIT {
            // No reader collects: bound the staging, let them lag.
            log.append(std::mem::take(&mut self.staged));
            log.wake();
        }
    }

    /// Publishes what the entry in `slot` holds now (after a change): its
    /// value and expiry, or, for a tombstone, the delete.
    pub fn publish_slot(&mut self, log: &ChangeLog, cause: Cause, slot: u32) {
        self.publish(log, cause, |shard| {
            let e = shard.slab.get(slot);
            let live = e.is_live();
            ChangeKind::Entry {
                key: e.key().into(),
                value: (live && e.typed().is_none()).then(|| e.value().into()),
                expires_at: if live { e.expires_at } else { NO_EXPIRY },
                version: e.version,
                typed: None,
            }
        });
    }

    /// Publishes a typed write: the fragment it changed (a delta), never
    /// the whole value.
    pub fn publish_fragment(
        &mut self,
        log: &ChangeLog,
        cause: Cause,
        slot: u32,
        fragment: &super::value::Fragment,
    ) {
        self.publish(log, cause, |shard| {
            let e = shard.slab.get(slot);
            ChangeKind::Entry {
                key: e.key().into(),
                value: None,
                expires_at: NO_EXPIRY,
                version: fragment.newest(),
                typed: Some(fragment.encode()),
            }
        });
    }

    /// Slots to try for a random pick: `probes` random ones (cheap when the
    /// slab is dense), then every slot from a random offset, so a sparse
    /// slab still yields one. Empty for an empty slab.
    pub fn random_slots(&self, probes: usize) -> impl Iterator<Item = u32> + use<> {
        let len = self.slab.len();
        let offset = if len == 0 { 0 } else { fastrand::u32(..len) };
        let probes = if len == 0 { 0 } else { probes };
        let random = (0..probes).map(move |_| fastrand::u32(..len));
        random.chain((0..len).map(move |i| (offset + i) % len))
    }

    pub fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        let slab = &self.slab;
        self.index
            .find(hash, |&i| slab.get(i).key() == key)
            .copied()
    }

    fn uncount(&mut self, w: (usize, usize, usize, usize)) {
        self.live -= w.0;
        self.volatile -= w.1;
        self.tombstones -= w.2;
        self.element_tombstones -= w.3;
    }

    fn count(&mut self, w: (usize, usize, usize, usize)) {
        self.live += w.0;
        self.volatile += w.1;
        self.tombstones += w.2;
        self.element_tombstones += w.3;
    }

    /// Places a new entry for a key the shard does not hold.
    pub fn insert(&mut self, store: &Store, hashes: KeyHashes, entry: Entry) -> u32 {
        redigest(&mut self.digest, hashes.digest, None, live_version(&entry));
        let w = weight(&entry);
        let slot = self.slab.insert(entry);
        let slab = &self.slab;
        self.index
            .insert_unique(hashes.index, slot, |&j| store.hash(slab.get(j).key()));
        self.count(w);
        slot
    }

    /// Forgets an entry entirely (tombstone collection, truncation).
    pub fn purge(&mut self, slot: u32, hash: u64) {
        let e = self.slab.get(slot);
        if e.state() == SlotState::Free {
            return;
        }
        redigest(&mut self.digest, key_hash(e.key()), live_version(e), None);
        let w = weight(e);
        if let Ok(found) = self.index.find_entry(hash, |&i| i == slot) {
            found.remove();
        }
        self.uncount(w);
        self.slab.remove(slot);
    }

    /// Gives an existing entry (live or tombstone) a live value.
    pub fn set_live(
        &mut self,
        slot: u32,
        key_hash: u64,
        value: &[u8],
        expires_at: u64,
        version: Version,
    ) {
        let e = self.slab.get_mut(slot);
        redigest(&mut self.digest, key_hash, live_version(e), Some(version));
        let before = weight(e);
        e.set_value(value);
        e.expires_at = expires_at;
        e.version = version;
        let after = weight(e);
        self.uncount(before);
        self.count(after);
    }

    /// Turns an existing entry into a tombstone with `version`, which
    /// arrived (or was written) at `arrival_ms`.
    pub fn set_tombstone(&mut self, slot: u32, key_hash: u64, version: Version, arrival_ms: u64) {
        let e = self.slab.get_mut(slot);
        redigest(&mut self.digest, key_hash, live_version(e), Some(version));
        let before = weight(e);
        e.make_tombstone(version, arrival_ms);
        self.uncount(before);
        self.count((0, 0, 1, 0));
    }

    /// The one path of typed writes, local and replicated: `f` gets the
    /// entry's value as a [`Typed`] (a plain string or tombstone turned
    /// into one) and returns the new value, which goes back as a compact
    /// plain entry when it is just a plain string or tombstone. Counters
    /// and the digest follow.
    pub fn update_typed<R>(
        &mut self,
        slot: u32,
        key_hash: u64,
        now_ms: u64,
        f: impl FnOnce(&mut Typed) -> R,
    ) -> R {
        self.update_typed_reporting(slot, key_hash, now_ms, f).0
    }

    /// [`Shard::update_typed`], also telling whether the entry's content
    /// changed (its digest version moved), which the digest tree learns
    /// anyway: a peer's fragment is then digested once, by the refresh.
    pub fn update_typed_reporting<R>(
        &mut self,
        slot: u32,
        key_hash: u64,
        now_ms: u64,
        f: impl FnOnce(&mut Typed) -> R,
    ) -> (R, bool) {
        let e = self.slab.get_mut(slot);
        let old = live_version(e);
        let before = weight(e);
        let out = match e.typed_mut() {
            // Changed in place: no new box, no copy of the key.
            Some(value) => {
                let out = f(value);
                value.refresh_digest();
                e.typed_changed(now_ms);
                out
            }
            None => {
                let mut value = Box::new(if e.is_live() {
                    Typed::from_plain(Some(e.value()), e.expires_at, e.version)
                } else {
                    Typed::from_plain(None, 0, e.version)
                });
                let out = f(&mut value);
                value.refresh_digest();
                e.set_typed(value, now_ms);
                out
            }
        };
        if let Some((bytes, expires_at, version)) = e.typed().and_then(|t| {
            t.as_plain()
                .map(|(v, at, version)| (v.map(<[u8]>::to_vec), at, version))
        }) {
            match bytes {
                Some(bytes) => {
                    e.set_value(&bytes);
                    e.expires_at = expires_at;
                    e.version = version;
                }
                None => e.make_tombstone(version, now_ms),
            }
        }
        let new = live_version(e);
        let after = weight(e);
        redigest(&mut self.digest, key_hash, old, new);
        self.uncount(before);
        self.count(after);
        (out, old != new)
    }

    /// Changes a live entry's expiry under a new version.
    pub fn set_expiry(&mut self, slot: u32, key_hash: u64, expires_at: u64, version: Version) {
        let e = self.slab.get_mut(slot);
        redigest(&mut self.digest, key_hash, live_version(e), Some(version));
        let before = weight(e);
        e.expires_at = expires_at;
        e.version = version;
        let after = weight(e);
        self.uncount(before);
        self.count(after);
    }

    /// An expired entry becomes a tombstone with its own version: every
    /// replica expires it at the same instant, so they agree without a new
    /// write.
    pub fn expire(&mut self, store: &Store, slot: u32, key_hash: u64, now_ms: u64) {
        let e = self.slab.get(slot);
        if e.typed().is_some() {
            // Every replica clears at the same version, derived from the
            // expiry time: what was written before it goes, counters are
            // reset to what each replica had seen (equal versions merge by
            // the larger observation, see `Register::merge`).
            let fragment = self.update_typed(slot, key_hash, now_ms, |value| {
                let clear = Version {
                    hlc: crate::clock::hlc_at_millis(value.expires_at),
                    node_id: 0,
                };
                value.clear_local(clear.max(value.clear), now_ms)
            });
            self.publish_fragment(&store.log, Cause::Expired, slot, &fragment);
        } else {
            let version = e.version;
            self.set_tombstone(slot, key_hash, version, now_ms);
            self.publish_slot(&store.log, Cause::Expired, slot);
        }
        store.stats.expired_keys.fetch_add(1, Ordering::Relaxed);
    }

    /// Examines up to `step` slots from the sweep cursor: expires what is
    /// due and collects tombstones that arrived before `horizon.0` and were
    /// written before `horizon.1`.
    /// Returns (slots examined, keys expired).
    pub fn sweep(
        &mut self,
        store: &Store,
        now_ms: u64,
        horizon: (u64, u64),
        step: u32,
    ) -> (usize, usize) {
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
            match e.state() {
                SlotState::Live if e.is_expired(now_ms) => {
                    self.expire(store, slot, key_hash(e.key()), now_ms);
                    expired += 1;
                }
                SlotState::Live if e.typed().is_some_and(|t| t.removed_len() > 0) => {
                    let key_hash = key_hash(e.key());
                    self.update_typed(slot, key_hash, now_ms, |value| {
                        value.collect(horizon.0, horizon.1);
                    });
                }
                SlotState::Tombstone
                    if e.tombstone_arrival() < horizon.0 && e.version.millis() < horizon.1 =>
                {
                    let hash = store.hash(e.key());
                    self.purge(slot, hash);
                }
                _ => {}
            }
            seen += 1;
        }
        (seen, expired)
    }

    /// Drops every entry older than `marker` (a FLUSHALL). Returns how many.
    pub fn truncate(&mut self, store: &Store, marker: Version) -> usize {
        let mut dropped = 0;
        for slot in 0..self.slab.len() {
            let e = self.slab.get(slot);
            if e.state() != SlotState::Free && e.version < marker {
                let hash = store.hash(e.key());
                self.purge(slot, hash);
                dropped += 1;
            } else if e.typed().is_some_and(|t| t.clear < marker) {
                // Elements newer than the FLUSHALL stay; older ones go.
                let key_hash = key_hash(e.key());
                let now_ms = store.clock().wall_ms();
                self.update_typed(slot, key_hash, now_ms, |value| {
                    let marker = super::value::Fragment {
                        clear: marker,
                        ..Default::default()
                    };
                    value.merge(&marker, 0);
                });
            }
        }
        dropped
    }
}
