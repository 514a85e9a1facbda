//! One keyspace entry and the slab that holds a shard's entries.
//!
//! A small key and value (up to [`INLINE`] bytes together, which covers
//! the 16-byte keys and values of the benchmarks) live inside the entry,
//! one 64-byte cache line: a lookup then misses on the index and the entry
//! only, not on a separate allocation for the key bytes. Larger ones keep
//! key and value in a single allocation, to keep the per-key overhead
//! close to Redis's. Entries never move once placed, so a slot index is a
//! stable position for SCAN.

use super::value::{Kind, Typed};
use crate::clock::Version;

/// `expires_at` value meaning "no expiry".
pub const NO_EXPIRY: u64 = 0;
/// `Slab` index meaning "none".
pub const NO_SLOT: u32 = u32::MAX;
/// Bits of the coarse access clock kept in each entry (as Redis's
/// `LRU_BITS`).
pub const LRU_BITS: u32 = 24;
pub const LRU_MAX: u32 = (1 << LRU_BITS) - 1;
/// Largest key + value kept inside the entry: what fits in the 40 bytes
/// the entry has besides its version and expiry (a tag, the access clock,
/// the state and two lengths take the other 7).
pub const INLINE: usize = 33;
/// Entries per slab chunk: growth allocates one chunk instead of doubling a
/// vector, so a shard wastes at most one chunk (4 KiB; 1 MiB over 256
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
    /// Absolute expiry in unix milliseconds, or [`NO_EXPIRY`]; for a
    /// tombstone, when it arrived (see [`Entry::tombstone_arrival`]).
    pub expires_at: u64,
    pub version: Version,
    body: Body,
}

/// Where an entry's bytes are. `lru` is the coarse clock of the last
/// access (see `evict::lru_clock`), 24 bits in three bytes.
#[derive(Debug)]
enum Body {
    /// A free slot: the next free slot of the slab's free list.
    Free { next: u32 },
    /// Key then value in `bytes[..len]` (value empty for tombstones).
    Inline {
        state: SlotState,
        lru: [u8; 3],
        key_len: u8,
        len: u8,
        bytes: [u8; INLINE],
    },
    /// Key then value in one allocation.
    Heap {
        state: SlotState,
        lru: [u8; 3],
        key_len: u32,
        data: Box<[u8]>,
    },
    /// A typed value (a counter, a hash, a set; see `value`): the key
    /// inside the entry when short, the value behind a box, so the entry
    /// keeps its one cache line whatever the value holds. Live when the
    /// value has visible content, else a tombstone that keeps what a
    /// plain one cannot (counter resets, element tombstones). `kind` is
    /// the value's, kept here so that a type check (every command's first
    /// step) and a lookup's key comparison touch no other cache line.
    Typed {
        state: SlotState,
        lru: [u8; 3],
        kind: Option<Kind>,
        key: TypedKey,
        value: Box<Typed>,
    },
}

/// Longest key a typed entry keeps inside itself: what fits beside the
/// value's box, the access clock and the tags (the 16-byte keys of the
/// benchmarks and of most applications).
const TYPED_INLINE: usize = 22;

#[derive(Debug)]
enum TypedKey {
    Inline { len: u8, bytes: [u8; TYPED_INLINE] },
    Heap(Box<[u8]>),
}

impl TypedKey {
    fn new(key: &[u8]) -> Self {
        if key.len() <= TYPED_INLINE {
            let mut bytes = [0; TYPED_INLINE];
            bytes[..key.len()].copy_from_slice(key);
            TypedKey::Inline {
                len: key.len() as u8,
                bytes,
            }
        } else {
            TypedKey::Heap(key.into())
        }
    }

    fn bytes(&self) -> &[u8] {
        match self {
            TypedKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            TypedKey::Heap(key) => key,
        }
    }

    fn heap_size(&self) -> usize {
        match self {
            TypedKey::Inline { .. } => 0,
            TypedKey::Heap(key) => key.len(),
        }
    }
}

impl Body {
    /// Key then value, inside the entry when they fit.
    fn new(state: SlotState, key: &[u8], value: &[u8], lru: [u8; 3]) -> Self {
        let len = key.len() + value.len();
        if len <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..key.len()].copy_from_slice(key);
            bytes[key.len()..len].copy_from_slice(value);
            Body::Inline {
                state,
                lru,
                key_len: key.len() as u8,
                len: len as u8,
                bytes,
            }
        } else {
            Body::Heap {
                state,
                lru,
                key_len: key.len() as u32,
                data: concat(key, value),
            }
        }
    }

    /// (key and value bytes, key length)
    fn bytes(&self) -> (&[u8], usize) {
        match self {
            Body::Free { .. } => (&[], 0),
            Body::Inline {
                key_len,
                len,
                bytes,
                ..
            } => (&bytes[..usize::from(*len)], usize::from(*key_len)),
            Body::Heap { key_len, data, .. } => (data, *key_len as usize),
            Body::Typed { key, .. } => (key.bytes(), key.bytes().len()),
        }
    }
}

impl Entry {
    pub fn live(key: &[u8], value: &[u8], expires_at: u64, version: Version) -> Self {
        Self {
            body: Body::new(SlotState::Live, key, value, [0; 3]),
            expires_at,
            version,
        }
    }

    /// A delete of `key` with `version`, which reached this node at
    /// `arrival_ms` (tombstone collection counts from then).
    pub fn tombstone(key: &[u8], version: Version, arrival_ms: u64) -> Self {
        Self {
            body: Body::new(SlotState::Tombstone, key, &[], [0; 3]),
            expires_at: arrival_ms,
            version,
        }
    }

    fn free(next: u32) -> Self {
        Self {
            body: Body::Free { next },
            expires_at: NO_EXPIRY,
            version: Version::default(),
        }
    }

    pub fn state(&self) -> SlotState {
        match self.body {
            Body::Free { .. } => SlotState::Free,
            Body::Inline { state, .. } | Body::Heap { state, .. } | Body::Typed { state, .. } => {
                state
            }
        }
    }

    /// The type of a live entry's value (a plain entry is a string); None
    /// for a tombstone or a free slot.
    pub fn kind(&self) -> Option<Kind> {
        match &self.body {
            Body::Typed { kind, .. } => *kind,
            Body::Inline { state, .. } | Body::Heap { state, .. } => {
                (*state == SlotState::Live).then_some(Kind::String)
            }
            Body::Free { .. } => None,
        }
    }

    /// The typed value, if the entry holds one (a plain string does not).
    pub fn typed(&self) -> Option<&Typed> {
        match &self.body {
            Body::Typed { value, .. } => Some(value),
            _ => None,
        }
    }

    pub fn typed_mut(&mut self) -> Option<&mut Typed> {
        match &mut self.body {
            Body::Typed { value, .. } => Some(value),
            _ => None,
        }
    }

    /// Gives the entry a typed value (keeping its key and access clock);
    /// its state follows the value's visibility, its version the value's
    /// newest and its expiry the value's (or, for a tombstone, `now_ms`
    /// as its arrival).
    pub fn set_typed(&mut self, value: Box<Typed>, now_ms: u64) {
        let lru = self.lru_bytes();
        let kind = value.kind();
        let state = if kind.is_some() {
            SlotState::Live
        } else {
            SlotState::Tombstone
        };
        self.version = value.newest();
        self.expires_at = if state == SlotState::Live {
            value.expires_at
        } else {
            now_ms
        };
        self.body = Body::Typed {
            state,
            lru,
            kind,
            key: TypedKey::new(self.key()),
            value,
        };
    }

    /// After the typed value was changed in place: the entry's state,
    /// version and expiry follow it (as [`Entry::set_typed`] sets them).
    pub fn typed_changed(&mut self, now_ms: u64) {
        let Body::Typed {
            state, kind, value, ..
        } = &mut self.body
        else {
            return;
        };
        let was_live = *state == SlotState::Live;
        *kind = value.kind();
        let live = kind.is_some();
        *state = if live {
            SlotState::Live
        } else {
            SlotState::Tombstone
        };
        self.version = value.newest();
        if live {
            self.expires_at = value.expires_at;
        } else if was_live {
            self.expires_at = now_ms;
        }
    }

    /// Takes the typed value out, leaving a plain tombstone in its place
    /// (the caller puts a value back).
    pub fn take_typed(&mut self) -> Option<Box<Typed>> {
        if !matches!(self.body, Body::Typed { .. }) {
            return None;
        }
        let lru = self.lru_bytes();
        let plain = Body::new(SlotState::Tombstone, self.key(), &[], lru);
        let body = std::mem::replace(&mut self.body, plain);
        match body {
            Body::Typed { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The version the digest tree counts for this entry: a plain entry's
    /// version names its contents (every write has its own); a typed
    /// value's newest version does not (two replicas may differ in older
    /// elements), so its content digest stands in for it.
    pub fn digest_version(&self) -> Version {
        match &self.body {
            Body::Typed { value, .. } => Version {
                hlc: value.stored_digest(),
                node_id: u64::MAX,
            },
            _ => self.version,
        }
    }

    pub fn key(&self) -> &[u8] {
        let (bytes, key_len) = self.body.bytes();
        &bytes[..key_len]
    }

    pub fn value(&self) -> &[u8] {
        let (bytes, key_len) = self.body.bytes();
        &bytes[key_len..]
    }

    pub fn is_live(&self) -> bool {
        self.state() == SlotState::Live
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.is_live() && self.expires_at != NO_EXPIRY && self.expires_at <= now_ms
    }

    /// Replaces the value (the entry becomes live), in place when the size
    /// is unchanged (the common case of overwriting a fixed-size value) or
    /// the new one still fits inside the entry.
    pub fn set_value(&mut self, value: &[u8]) {
        match &mut self.body {
            Body::Inline {
                state,
                key_len,
                len,
                bytes,
                ..
            } if usize::from(*key_len) + value.len() <= INLINE => {
                let key_len = usize::from(*key_len);
                bytes[key_len..key_len + value.len()].copy_from_slice(value);
                *len = (key_len + value.len()) as u8;
                *state = SlotState::Live;
            }
            Body::Heap {
                state,
                key_len,
                data,
                ..
            } if data.len() == *key_len as usize + value.len() => {
                data[*key_len as usize..].copy_from_slice(value);
                *state = SlotState::Live;
            }
            _ => self.rebuild(SlotState::Live, value),
        }
    }

    /// Turns the entry into a tombstone with `version`, arrived at
    /// `arrival_ms`.
    pub fn make_tombstone(&mut self, version: Version, arrival_ms: u64) {
        self.rebuild(SlotState::Tombstone, &[]);
        self.expires_at = arrival_ms;
        self.version = version;
    }

    /// Gives the entry `state` and `value`, keeping its key and access
    /// clock, and moving its bytes inside the entry or out as they fit.
    fn rebuild(&mut self, state: SlotState, value: &[u8]) {
        let lru = self.lru_bytes();
        self.body = Body::new(state, self.key(), value, lru);
    }

    fn lru_bytes(&self) -> [u8; 3] {
        match self.body {
            Body::Free { .. } => [0; 3],
            Body::Inline { lru, .. } | Body::Heap { lru, .. } | Body::Typed { lru, .. } => lru,
        }
    }

    /// Records an access at `clock` (a value of `evict::lru_clock`): a
    /// plain store under the shard lock the access holds anyway.
    pub fn touch(&mut self, clock: u32) {
        if let Body::Inline { lru, .. } | Body::Heap { lru, .. } | Body::Typed { lru, .. } =
            &mut self.body
        {
            let [a, b, c, _] = clock.to_le_bytes();
            *lru = [a, b, c];
        }
    }

    /// The clock of the last access.
    pub fn lru(&self) -> u32 {
        let [a, b, c] = self.lru_bytes();
        u32::from_le_bytes([a, b, c, 0])
    }

    /// When a tombstone reached this node (unix ms).
    pub fn tombstone_arrival(&self) -> u64 {
        self.expires_at
    }

    /// Heap bytes owned by this entry beyond its slot.
    pub fn heap_size(&self) -> usize {
        match &self.body {
            Body::Heap { data, .. } => data.len(),
            Body::Typed { key, value, .. } => key.heap_size() + value.heap_size(),
            _ => 0,
        }
    }
}

// One cache line (chunks of 64 entries are 4 KiB, page-aligned by the
// allocator, so no entry straddles two lines). The per-key memory target
// depends on this size too: benchmarked against Redis.
const _: () = assert!(std::mem::size_of::<Entry>() == 64);

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
            // Only free slots are on the free list; were one not, the list
            // would just end here.
            let next = match slot.body {
                Body::Free { next } => next,
                _ => NO_SLOT,
            };
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
        assert_eq!(std::mem::size_of::<Entry>(), 64);
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

    #[test]
    fn bytes_move_in_and_out_of_the_entry_as_they_fit() {
        let key = b"k".repeat(INLINE - 4);
        let mut e = Entry::live(&key, b"1234", NO_EXPIRY, Version::default());
        e.touch(0xabcdef);
        assert_eq!(e.heap_size(), 0, "key + value of INLINE bytes stay inside");
        e.set_value(b"12345");
        assert_eq!(e.heap_size(), INLINE + 1);
        assert_eq!((e.key(), e.value()), (&key[..], &b"12345"[..]));
        e.set_value(b"54321");
        assert_eq!(e.value(), b"54321");
        e.set_value(b"");
        assert_eq!((e.heap_size(), e.value()), (0, &b""[..]));
        assert!(e.is_live());
        e.make_tombstone(Version::default(), 7);
        assert_eq!(
            (e.state(), e.key(), e.lru()),
            (SlotState::Tombstone, &key[..], 0xabcdef)
        );
        e.set_value(b"back");
        assert_eq!((e.state(), e.value()), (SlotState::Live, &b"back"[..]));

        let long_key = b"x".repeat(INLINE + 1);
        let mut e = Entry::live(&long_key, b"v", NO_EXPIRY, Version::default());
        assert_eq!(e.heap_size(), INLINE + 2);
        e.make_tombstone(Version::default(), 0);
        assert_eq!(
            (e.key(), e.value(), e.heap_size()),
            (&long_key[..], &b""[..], INLINE + 1)
        );
    }
}
