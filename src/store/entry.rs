//! One keyspace entry and the slab that holds a shard's entries.
//!
//! An entry keeps its key and value in a single allocation (key bytes then
//! value bytes) to keep the per-key overhead close to Redis's; entries never
//! move once placed, so a slot index is a stable position for SCAN.

use crate::clock::Version;

/// `expires_at` value meaning "no expiry".
pub const NO_EXPIRY: u64 = 0;
/// `Slab` index meaning "none".
pub const NO_SLOT: u32 = u32::MAX;
/// Bits of the coarse access clock kept in each entry (as Redis's
/// `LRU_BITS`): they fit in padding the layout had anyway.
pub const LRU_BITS: u32 = 24;
pub const LRU_MAX: u32 = (1 << LRU_BITS) - 1;
/// Entries per slab chunk: growth allocates one chunk instead of doubling a
/// vector, so a shard wastes at most one chunk (3 KiB; 768 KiB over 256
/// shards) of slack.
const CHUNK: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    Free,
    Live,
    Tombstone,
}

#[derive(Debug)]
pub struct Entry {
    /// Key followed by value (the value is empty for tombstones).
    data: Box<[u8]>,
    /// Length of the key within `data`; for a free slot, the next free slot.
    key_len: u32,
    pub state: SlotState,
    /// Coarse clock of the last access (see `evict::lru_clock`), split in
    /// two fields so it fills the padding after `key_len` and `state`
    /// without growing the entry (a `[u8; 3]` would do too; two fields let
    /// the compiler pack them beside the u32 and the u8).
    lru_low: u16,
    lru_high: u8,
    /// Absolute expiry in unix milliseconds, or [`NO_EXPIRY`]; for a
    /// tombstone, when it arrived (see [`Entry::tombstone_arrival`]).
    pub expires_at: u64,
    pub version: Version,
}

impl Entry {
    pub fn live(key: &[u8], value: &[u8], expires_at: u64, version: Version) -> Self {
        Self {
            data: concat(key, value),
            key_len: key.len() as u32,
            state: SlotState::Live,
            lru_low: 0,
            lru_high: 0,
            expires_at,
            version,
        }
    }

    /// A delete of `key` with `version`, which reached this node at
    /// `arrival_ms` (tombstone collection counts from then).
    pub fn tombstone(key: &[u8], version: Version, arrival_ms: u64) -> Self {
        Self {
            data: key.into(),
            key_len: key.len() as u32,
            state: SlotState::Tombstone,
            lru_low: 0,
            lru_high: 0,
            expires_at: arrival_ms,
            version,
        }
    }

    fn free(next: u32) -> Self {
        Self {
            data: Box::default(),
            key_len: next,
            state: SlotState::Free,
            lru_low: 0,
            lru_high: 0,
            expires_at: NO_EXPIRY,
            version: Version::default(),
        }
    }

    pub fn key(&self) -> &[u8] {
        match self.state {
            SlotState::Free => &[],
            _ => &self.data[..self.key_len as usize],
        }
    }

    pub fn value(&self) -> &[u8] {
        match self.state {
            SlotState::Free => &[],
            _ => &self.data[self.key_len as usize..],
        }
    }

    pub fn is_live(&self) -> bool {
        self.state == SlotState::Live
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.state == SlotState::Live && self.expires_at != NO_EXPIRY && self.expires_at <= now_ms
    }

    /// Replaces the value, reusing the allocation when the size is unchanged
    /// (the common case of overwriting a fixed-size value).
    pub fn set_value(&mut self, value: &[u8]) {
        let key_len = self.key_len as usize;
        if self.data.len() == key_len + value.len() {
            self.data[key_len..].copy_from_slice(value);
        } else {
            self.data = concat(&self.data[..key_len], value);
        }
        self.state = SlotState::Live;
    }

    /// Turns the entry into a tombstone with `version`, arrived at
    /// `arrival_ms`.
    pub fn make_tombstone(&mut self, version: Version, arrival_ms: u64) {
        if self.data.len() != self.key_len as usize {
            self.data = self.data[..self.key_len as usize].into();
        }
        self.state = SlotState::Tombstone;
        self.expires_at = arrival_ms;
        self.version = version;
    }

    /// Records an access at `clock` (a value of `evict::lru_clock`): a
    /// plain store under the shard lock the access holds anyway.
    pub fn touch(&mut self, clock: u32) {
        self.lru_low = clock as u16;
        self.lru_high = (clock >> 16) as u8;
    }

    /// The clock of the last access.
    pub fn lru(&self) -> u32 {
        u32::from(self.lru_low) | (u32::from(self.lru_high) << 16)
    }

    /// When a tombstone reached this node (unix ms).
    pub fn tombstone_arrival(&self) -> u64 {
        self.expires_at
    }

    /// Heap bytes owned by this entry beyond its slot.
    pub fn heap_size(&self) -> usize {
        self.data.len()
    }
}

// The per-key memory target depends on this size (48 bytes, benchmarked
// against Redis): the access clock must live in padding, never grow it.
const _: () = assert!(std::mem::size_of::<Entry>() == 48);

fn concat(a: &[u8], b: &[u8]) -> Box<[u8]> {
    let mut v = Vec::with_capacity(a.len() + b.len());
    v.extend_from_slice(a);
    v.extend_from_slice(b);
    v.into_boxed_slice()
}

/// Fixed-position storage for a shard's entries, with a free list.
#[derive(Debug)]
pub struct Slab {
    chunks: Vec<Vec<Entry>>,
    len: u32,
    free_head: u32,
}

impl Default for Slab {
    fn default() -> Self {
        Self {
            chunks: Vec::new(),
            len: 0,
            free_head: NO_SLOT,
        }
    }
}

impl Slab {
    /// Number of slots ever placed (live, tombstone or free).
    pub fn len(&self) -> u32 {
        self.len
    }

    pub fn get(&self, index: u32) -> &Entry {
        let i = index as usize;
        &self.chunks[i / CHUNK][i % CHUNK]
    }

    pub fn get_mut(&mut self, index: u32) -> &mut Entry {
        let i = index as usize;
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }

    pub fn insert(&mut self, entry: Entry) -> u32 {
        if self.free_head != NO_SLOT {
            let index = self.free_head;
            let slot = self.get_mut(index);
            let next = slot.key_len;
            *slot = entry;
            self.free_head = next;
            return index;
        }
        if self.chunks.last().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        if let Some(chunk) = self.chunks.last_mut() {
            chunk.push(entry);
        }
        self.len += 1;
        self.len - 1
    }

    pub fn remove(&mut self, index: u32) {
        let head = self.free_head;
        *self.get_mut(index) = Entry::free(head);
        self.free_head = index;
    }

    /// Bytes held by the slots themselves (not the entries' heap data).
    pub fn slot_bytes(&self) -> usize {
        self.chunks.len() * CHUNK * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_stays_small() {
        assert_eq!(std::mem::size_of::<Entry>(), 48);
    }

    #[test]
    fn the_access_clock_keeps_all_its_bits() {
        let mut e = Entry::live(b"k", b"v", NO_EXPIRY, Version::default());
        for clock in [0, 1, 0xffff, 0x1_0000, LRU_MAX] {
            e.touch(clock);
            assert_eq!(e.lru(), clock);
        }
        assert_eq!((e.key(), e.value()), (&b"k"[..], &b"v"[..]));
    }

    #[test]
    fn freed_slots_are_reused_and_others_never_move() {
        let mut slab = Slab::default();
        let v = Version::default();
        let a = slab.insert(Entry::live(b"a", b"1", NO_EXPIRY, v));
        let b = slab.insert(Entry::live(b"b", b"2", NO_EXPIRY, v));
        slab.remove(a);
        let c = slab.insert(Entry::live(b"c", b"3", NO_EXPIRY, v));
        assert_eq!(c, a);
        assert_eq!(slab.get(b).key(), b"b");
        assert_eq!(slab.get(c).value(), b"3");
    }

    #[test]
    fn overwriting_a_value_keeps_the_key() {
        let mut e = Entry::live(b"key", b"old", NO_EXPIRY, Version::default());
        e.set_value(b"new");
        assert_eq!((e.key(), e.value()), (&b"key"[..], &b"new"[..]));
        e.set_value(b"longer value");
        assert_eq!((e.key(), e.value()), (&b"key"[..], &b"longer value"[..]));
        e.make_tombstone(Version::default(), 0);
        assert_eq!((e.key(), e.value()), (&b"key"[..], &b""[..]));
    }
}
