//! The hash-table form of a hash's fields or a set's members (OBJECT
//! ENCODING "hashtable"; small ones are [`super::packed::Packed`]): each a
//! versioned [`Register`], live ones in insertion order (so a random pick
//! and a SCAN step are O(1)), removed ones kept apart as element
//! tombstones until collected, so that a HDEL/SREM does not lose to an
//! older add arriving late.
//!
//! The content digest is the XOR of every element's hash (tombstones
//! included), kept up to date on every change, so a 1,000,000-element key
//! is never rehashed whole.

use std::collections::HashMap;

use super::live::{LiveElements, Name};
use super::register::Register;
use crate::clock::Version;

type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Clone, Default)]
pub struct Table {
    live: LiveElements,
    /// Removed elements: their register (a counter's tombstone carries its
    /// observed contributions) and when the removal reached this node.
    removed: HashMap<Name, (Register, u64), Hasher>,
    digest: u64,
    /// Bytes of the names and registers, kept for MEMORY USAGE and
    /// maxmemory without a walk.
    heap: usize,
    /// The newest version any element carries, kept so that a write
    /// need not walk the elements to learn the key's type and version.
    newest: Version,
    /// An element carrying `newest` was taken out and nothing as new was
    /// put back yet: `newest` is recomputed when the change is done.
    newest_stale: bool,
}

/// Bytes of one live element's slot (name, register) and of one removed
/// element's, as size_of measures them; index slots add 5 (a u32
/// position and a control byte) and 1 byte.
const LIVE_SLOT: usize = std::mem::size_of::<(Name, Register)>();
const REMOVED_SLOT: usize = std::mem::size_of::<(Name, (Register, u64))>() + 1;

pub(super) fn element_hash(salt: u64, name: &[u8], register: &Register) -> u64 {
    element_hash_of(salt, name, register.digest())
}

/// An element's hash from its register's digest (the packed form's
/// elements hash exactly as the table's, so both forms digest alike).
pub(super) fn element_hash_of(salt: u64, name: &[u8], register_digest: u64) -> u64 {
    element_hash_with(name_hash(salt, name), register_digest)
}

fn name_hash(salt: u64, name: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(name, salt)
}

fn element_hash_with(name_hash: u64, register_digest: u64) -> u64 {
    mix(name_hash ^ register_digest.rotate_left(17))
}

/// splitmix64's finalizer.
pub(super) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Table {
    /// Live elements.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    pub fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    pub fn removed_len(&self) -> usize {
        self.removed.len()
    }

    pub fn digest(&self, salt: u64) -> u64 {
        mix(self.digest ^ salt)
    }

    pub fn heap_size(&self) -> usize {
        let (slots, index) = self.live.capacity();
        self.heap + slots * LIVE_SLOT + index * 5 + self.removed.capacity() * REMOVED_SLOT
    }

    pub fn get(&self, name: &[u8]) -> Option<&Register> {
        self.live.get(name)
    }

    /// The register of `name`, live or removed.
    pub fn register(&self, name: &[u8]) -> Option<&Register> {
        self.live
            .get(name)
            .or_else(|| self.removed.get(name).map(|(r, _)| r))
    }

    pub fn get_index(&self, i: usize) -> Option<(&[u8], &Register)> {
        self.live.get_index(i)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Register)> {
        self.live.iter()
    }

    /// Every element, removed ones included: (name, register, live).
    pub fn iter_all(&self) -> impl Iterator<Item = (&[u8], &Register, bool)> {
        self.iter()
            .map(|(k, v)| (k, v, true))
            .chain(self.removed.iter().map(|(k, (v, _))| (&k[..], v, false)))
    }

    fn account(&mut self, salt: u64, name: &[u8], register: &Register, sign: bool) {
        self.digest ^= element_hash(salt, name, register);
        let bytes = name.len() + register.heap_size();
        if sign {
            self.heap += bytes;
        } else {
            self.heap = self.heap.saturating_sub(bytes);
        }
    }

    /// Takes `name`'s register out (live or removed), unaccounted.
    pub(super) fn take(&mut self, salt: u64, name: &[u8]) -> Option<Register> {
        let register = match self.live.swap_remove(name) {
            Some(r) => r,
            None => self.removed.remove(name)?.0,
        };
        self.account(salt, name, &register, false);
        if register.newest() >= self.newest {
            self.newest_stale = true;
        }
        Some(register)
    }

    /// Ends a change: recomputes `newest` if the newest element left.
    pub(super) fn settle(&mut self) {
        if self.newest_stale {
            self.newest = self
                .live
                .iter()
                .map(|(_, r)| r)
                .chain(self.removed.values().map(|(r, _)| r))
                .map(Register::newest)
                .max()
                .unwrap_or_default();
            self.newest_stale = false;
        }
    }

    /// Puts a register in, live or removed as it is visible; `arrival_ms`
    /// dates a removal.
    pub(super) fn put(&mut self, salt: u64, name: &[u8], register: Register, arrival_ms: u64) {
        self.account(salt, name, &register, true);
        let newest = register.newest();
        if newest >= self.newest {
            self.newest = newest;
            self.newest_stale = false;
        }
        if register.is_visible() {
            self.live.insert_new(name, register);
        } else {
            self.removed
                .insert(Name::from_slice(name), (register, arrival_ms));
        }
    }

    /// Changes `name`'s register with `f` (None: no such element yet),
    /// keeping the digest and the live/removed split right. `f` returns
    /// the new register, or None to leave the element as it was.
    pub fn update(
        &mut self,
        salt: u64,
        name: &[u8],
        now_ms: u64,
        f: impl FnOnce(Option<&Register>) -> Option<Register>,
    ) {
        // One lookup for the read and the write (HSET of a field of a big
        // hash: the lookup's cache misses are most of its cost), and the
        // old register lent, not copied (copying its base touched bytes an
        // overwrite never reads: another miss).
        let position = self.live.position(name);
        let old = match position {
            Some(i) => self.live.get_index(i).map(|(_, r)| r),
            None => self.removed.get(name).map(|(r, _)| r),
        };
        if let Some(new) = f(old) {
            self.store_at(salt, name, position, new, now_ms);
        }
    }

    /// Gives `name` the register `new`. A live element that stays live is
    /// changed in place: it keeps its position, so a SCAN in progress
    /// (which walks positions) still returns it and HGETALL keeps Redis's
    /// order; only removals and additions move elements.
    pub(super) fn store(&mut self, salt: u64, name: &[u8], new: Register, now_ms: u64) {
        let position = self.live.position(name);
        self.store_at(salt, name, position, new, now_ms);
    }

    /// [`Table::store`] where `position` is `name`'s live position.
    fn store_at(
        &mut self,
        salt: u64,
        name: &[u8],
        position: Option<usize>,
        new: Register,
        now_ms: u64,
    ) {
        if new.is_visible()
            && let Some(slot) = position.and_then(|i| self.live.get_index_mut(i))
        {
            let name_hash = name_hash(salt, name);
            let old_hash = element_hash_with(name_hash, slot.digest());
            let old_bytes = slot.heap_size();
            let old_newest = slot.newest();
            let new_hash = element_hash_with(name_hash, new.digest());
            let new_bytes = new.heap_size();
            let new_newest = new.newest();
            *slot = new;
            self.digest ^= old_hash ^ new_hash;
            self.heap = (self.heap + new_bytes).saturating_sub(old_bytes);
            if old_newest >= self.newest && new_newest < old_newest {
                self.newest_stale = true;
            }
            if new_newest >= self.newest {
                self.newest = new_newest;
                self.newest_stale = false;
            }
        } else {
            self.take(salt, name);
            self.put(salt, name, new, now_ms);
        }
        self.settle();
    }

    /// A new clear marker: every base older than `clear` is removed;
    /// removed elements older than it are forgotten (the marker stands for
    /// them), unless they carry counter observations.
    pub fn clear_before(&mut self, salt: u64, clear: Version, now_ms: u64) {
        // One pass that drops in place (a DEL of a 1,000,000-member set
        // must not copy every name first); counters older than the marker
        // stay, as removed elements, with their base gone.
        let (mut digest, mut heap) = (self.digest, self.heap);
        let mut kept_counters = Vec::new();
        let mut drop_one = |name: &[u8], r: &Register| {
            digest ^= element_hash(salt, name, r);
            heap = heap.saturating_sub(name.len() + r.heap_size());
            if r.counter.is_some() {
                let mut r = r.clone();
                apply_clear(&mut r, clear);
                kept_counters.push((Box::<[u8]>::from(name), r));
            }
        };
        self.live.retain(|name, r| {
            let keep = r.version >= clear;
            if !keep {
                drop_one(name, r);
            }
            keep
        });
        self.removed.retain(|name, (r, _)| {
            let keep = r.version >= clear;
            if !keep {
                drop_one(name, r);
            }
            keep
        });
        (self.digest, self.heap) = (digest, heap);
        self.newest_stale = true;
        for (name, r) in kept_counters {
            self.put(salt, &name, r, now_ms);
        }
        self.settle();
    }

    /// Collects element tombstones that arrived before `arrived_before`
    /// and were written before `written_before_ms`; returns how many.
    pub fn collect(&mut self, salt: u64, arrived_before: u64, written_before_ms: u64) -> usize {
        let old: Vec<Name> = self
            .removed
            .iter()
            .filter(|(_, (r, at))| *at < arrived_before && r.newest().millis() < written_before_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for name in &old {
            self.take(salt, name);
        }
        self.settle();
        old.len()
    }

    /// The newest version among the elements.
    pub fn newest(&self) -> Version {
        self.newest
    }
}

/// A clear marker applied to one register: a base older than it is gone.
/// Its version and observations stay (a counter's contributions are reset
/// by what writes observed, never by versions): the base becomes None in
/// every replica's copy alike, so digests agree, and a later join with a
/// base newer than the marker still finds the same state everywhere.
pub fn apply_clear<P: super::PartsSlot>(r: &mut Register<P>, clear: Version) {
    if r.version < clear {
        r.base = None;
        r.base_written();
    }
}
