//! The packed form of a small hash or set (OBJECT ENCODING "listpack"):
//! every element in one byte buffer, found by a linear scan, as Redis keeps
//! small hashes in a listpack. A table costs ~70 bytes of slots, index and
//! allocations per element before its bytes; 100,000 hashes of 10 fields
//! took 6.3x Redis's memory that way (make bench, issue 13's memory rows).
//!
//! Only plain registers are packed (a version and a base, live or removed):
//! an element with counter parts, a name or value longer than the limit,
//! or more elements than the limit turn the value into a
//! [`super::table::Table`] for good (Redis never converts back either).
//!
//! Layout: a header `[node count: u8][live: u16 LE][removed: u16 LE]
//! [newest version: HLC u64 LE, node u64 LE][node ids: u64 LE …][base HLC:
//! u64 LE]` (the counts and the newest version kept there so that HLEN,
//! the type check and the entry's version after every write need no
//! scan), then per element `[flags: u8][name length: varint][name]`, then the value
//! (`[length: varint][bytes]` when live, the removal's arrival `u64 LE` when
//! removed), then `[HLC − base: varint][node index: u8]`. Versions made by
//! one write share their HLC, so most cost two bytes; a version older than
//! the base rewrites the buffer around a new base.
//!
//! The buffer is this node's own memory, never peer input: decoding trusts
//! it (a malformed buffer is a bug, caught by the property tests).

use super::register::Register;
use super::table::element_hash_of;
use crate::clock::Version;

/// Element flag: removed (an element tombstone).
const REMOVED: u8 = 1;
/// Header offsets (see the layout above).
const LIVE_AT: usize = 1;
const REMOVED_AT: usize = 3;
const NEWEST_AT: usize = 5;
const NODE_IDS_AT: usize = 21;
/// Most elements a packed value counts (its counts are u16).
pub const MAX_ELEMENTS: usize = u16::MAX as usize;
/// More node ids than a packed value tracks (an index is one byte).
const MAX_NODES: usize = 255;

#[derive(Debug, Clone, Default)]
pub struct Packed {
    bytes: Vec<u8>,
    /// XOR of the elements' hashes, as [`super::table::Table`] keeps it.
    digest: u64,
}

/// One element as decoded from the buffer.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    /// Its byte range in the buffer.
    start: usize,
    end: usize,
    pub name: &'a [u8],
    /// The base when live; None when removed.
    pub base: Option<&'a [u8]>,
    /// When a removal arrived (0 when live).
    pub arrival: u64,
    pub version: Version,
}

impl Slot<'_> {
    pub fn register(&self) -> Register {
        Register::new(self.version, self.base)
    }
}

/// Why an element cannot be packed: the caller moves to a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unpackable;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn varint(bytes: &[u8], at: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = bytes[*at];
        *at += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return v;
        }
        shift += 7;
    }
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

impl Packed {
    fn node_count(&self) -> usize {
        self.bytes.first().map_or(0, |&n| usize::from(n))
    }

    fn node(&self, index: u8) -> u64 {
        u64_at(&self.bytes, NODE_IDS_AT + usize::from(index) * 8)
    }

    fn base_at(&self) -> usize {
        NODE_IDS_AT + self.node_count() * 8
    }

    fn header_u16(&self, at: usize) -> usize {
        self.bytes
            .get(at..at + 2)
            .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    }

    fn set_header_u16(&mut self, at: usize, value: usize) {
        self.bytes[at..at + 2].copy_from_slice(&(value as u16).to_le_bytes());
    }

    /// Live elements.
    pub fn live(&self) -> usize {
        self.header_u16(LIVE_AT)
    }

    /// Removed elements (element tombstones).
    pub fn removed(&self) -> usize {
        self.header_u16(REMOVED_AT)
    }

    /// Counts `base`'s element (live or removed) in, or out.
    fn count_in(&mut self, base: Option<&[u8]>, sign: bool) {
        let at = if base.is_some() { LIVE_AT } else { REMOVED_AT };
        let n = self.header_u16(at);
        self.set_header_u16(at, if sign { n + 1 } else { n - 1 });
    }

    /// The newest version any element carries.
    pub fn newest(&self) -> Version {
        if self.bytes.is_empty() {
            return Version::default();
        }
        Version {
            hlc: u64_at(&self.bytes, NEWEST_AT),
            node_id: u64_at(&self.bytes, NEWEST_AT + 8),
        }
    }

    fn set_newest(&mut self, v: Version) {
        self.bytes[NEWEST_AT..NEWEST_AT + 8].copy_from_slice(&v.hlc.to_le_bytes());
        self.bytes[NEWEST_AT + 8..NEWEST_AT + 16].copy_from_slice(&v.node_id.to_le_bytes());
    }

    /// The newest version and the counts again, from the elements (after
    /// removals that may have taken the newest out).
    fn recount(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        let (mut live, mut removed, mut newest) = (0, 0, Version::default());
        for s in self.slots() {
            if s.base.is_some() {
                live += 1;
            } else {
                removed += 1;
            }
            newest = newest.max(s.version);
        }
        self.set_header_u16(LIVE_AT, live);
        self.set_header_u16(REMOVED_AT, removed);
        self.set_newest(newest);
    }

    fn base_hlc(&self) -> u64 {
        u64_at(&self.bytes, self.base_at())
    }

    fn first_element(&self) -> usize {
        if self.bytes.is_empty() {
            0
        } else {
            self.base_at() + 8
        }
    }

    /// Every element, live and removed, in buffer order.
    pub fn slots(&self) -> impl Iterator<Item = Slot<'_>> {
        let mut at = self.first_element();
        let base_hlc = if self.bytes.is_empty() {
            0
        } else {
            self.base_hlc()
        };
        std::iter::from_fn(move || {
            let bytes = &self.bytes;
            if at >= bytes.len() {
                return None;
            }
            let start = at;
            let flags = bytes[at];
            at += 1;
            let name_len = varint(bytes, &mut at) as usize;
            let name = &bytes[at..at + name_len];
            at += name_len;
            let (base, arrival) = if flags & REMOVED != 0 {
                at += 8;
                (None, u64_at(bytes, at - 8))
            } else {
                let len = varint(bytes, &mut at) as usize;
                at += len;
                (Some(&bytes[at - len..at]), 0)
            };
            let hlc = base_hlc + varint(bytes, &mut at);
            let node_id = self.node(bytes[at]);
            at += 1;
            Some(Slot {
                start,
                end: at,
                name,
                base,
                arrival,
                version: Version { hlc, node_id },
            })
        })
    }

    /// Elements, live and removed.
    pub fn count(&self) -> usize {
        self.live() + self.removed()
    }

    pub fn find(&self, name: &[u8]) -> Option<Slot<'_>> {
        self.slots().find(|s| s.name == name)
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    pub fn heap_size(&self) -> usize {
        self.bytes.capacity()
    }

    fn element_hash(salt: u64, name: &[u8], version: Version, base: Option<&[u8]>) -> u64 {
        element_hash_of(salt, name, Register::plain_digest(version, base))
    }

    /// The index of `node` in the node table, adding it (None: the table
    /// is full).
    fn node_index(&mut self, node: u64) -> Option<u8> {
        let n = self.node_count();
        if let Some(i) = (0..n).find(|&i| self.node(i as u8) == node) {
            return Some(i as u8);
        }
        if n >= MAX_NODES {
            return None;
        }
        let at = NODE_IDS_AT + n * 8;
        self.bytes.splice(at..at, node.to_le_bytes());
        self.bytes[0] = (n + 1) as u8;
        Some(n as u8)
    }

    /// Puts `name` with `version` and `base` (None: removed, arrived at
    /// `arrival_ms`), in place of its old element if any (which keeps its
    /// position, as the table keeps a live element's).
    pub fn put(
        &mut self,
        salt: u64,
        name: &[u8],
        version: Version,
        base: Option<&[u8]>,
        arrival_ms: u64,
    ) -> Result<(), Unpackable> {
        if self.bytes.is_empty() {
            self.bytes.resize(NODE_IDS_AT, 0);
            self.bytes.extend_from_slice(&version.hlc.to_le_bytes());
        }
        if version.hlc < self.base_hlc() {
            self.rebase(version.hlc);
        }
        let node = self.node_index(version.node_id).ok_or(Unpackable)?;
        let mut encoded = Vec::with_capacity(name.len() + base.map_or(8, <[u8]>::len) + 8);
        encoded.push(if base.is_some() { 0 } else { REMOVED });
        put_varint(&mut encoded, name.len() as u64);
        encoded.extend_from_slice(name);
        match base {
            Some(b) => {
                put_varint(&mut encoded, b.len() as u64);
                encoded.extend_from_slice(b);
            }
            None => encoded.extend_from_slice(&arrival_ms.to_le_bytes()),
        }
        put_varint(&mut encoded, version.hlc - self.base_hlc());
        encoded.push(node);
        let old = self.find(name).map(|s| {
            (
                s.start..s.end,
                Self::element_hash(salt, s.name, s.version, s.base),
                s.base.is_some(),
                s.version,
            )
        });
        let newest = self.newest();
        let mut stale = false;
        let range = match old {
            Some((range, hash, live, old_version)) => {
                self.digest ^= hash;
                self.count_in(live.then_some(&[][..]), false);
                stale = old_version == newest && version < old_version;
                range
            }
            None => self.bytes.len()..self.bytes.len(),
        };
        self.digest ^= Self::element_hash(salt, name, version, base);
        self.count_in(base, true);
        if version > newest {
            self.set_newest(version);
        }
        // Grown exactly: a small value's buffer is most of its memory.
        let grow = encoded.len().saturating_sub(range.len());
        self.bytes.reserve_exact(grow);
        self.bytes.splice(range, encoded);
        if stale {
            self.recount();
        }
        Ok(())
    }

    /// Removes `name`'s element altogether; returns its register.
    pub fn take(&mut self, salt: u64, name: &[u8]) -> Option<Register> {
        let slot = self.find(name)?;
        let (range, register) = (slot.start..slot.end, slot.register());
        self.digest ^= Self::element_hash(salt, slot.name, slot.version, slot.base);
        self.bytes.drain(range);
        self.recount();
        self.compact();
        Some(register)
    }

    /// Keeps the elements `keep` says to keep (one pass, in order).
    pub fn retain(&mut self, salt: u64, mut keep: impl FnMut(&Slot<'_>) -> bool) -> usize {
        let mut dropped = Vec::new();
        for s in self.slots() {
            if !keep(&s) {
                dropped.push((
                    s.start..s.end,
                    Self::element_hash(salt, s.name, s.version, s.base),
                ));
            }
        }
        for (range, hash) in dropped.iter().rev() {
            self.digest ^= hash;
            self.bytes.drain(range.clone());
        }
        if !dropped.is_empty() {
            self.recount();
        }
        self.compact();
        dropped.len()
    }

    /// An empty value frees its header (and a shrunk one its slack).
    fn compact(&mut self) {
        if self.bytes.len() == self.first_element() {
            self.bytes = Vec::new();
        } else if self.bytes.capacity() > self.bytes.len() + 64 {
            self.bytes.shrink_to_fit();
        }
    }

    /// Rewrites every element's HLC against a smaller base.
    fn rebase(&mut self, base_hlc: u64) {
        let old: Vec<(Vec<u8>, Register, u64)> = self
            .slots()
            .map(|s| (s.name.to_vec(), s.register(), s.arrival))
            .collect();
        // The header with its node table, counts and newest at zero (the
        // elements are put back one by one).
        let mut header = self.bytes[..self.base_at()].to_vec();
        header[LIVE_AT..NODE_IDS_AT].fill(0);
        self.bytes.clear();
        self.bytes.extend_from_slice(&header);
        self.bytes.extend_from_slice(&base_hlc.to_le_bytes());
        let digest = self.digest;
        for (name, r, arrival) in old {
            // Node ids are all in the table already: cannot fail.
            let _ = self.put(0, &name, r.version, r.base.as_deref(), arrival);
        }
        // The elements are the same: so is the digest.
        self.digest = digest;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64, node_id: u64) -> Version {
        Version { hlc, node_id }
    }

    #[test]
    fn elements_round_trip_in_place_across_rebases_and_removals() {
        let mut p = Packed::default();
        p.put(1, b"a", v(100, 7), Some(b"x"), 0).unwrap();
        p.put(1, b"b", v(200, 9), Some(b"yy"), 0).unwrap();
        p.put(1, b"c", v(50, 7), None, 1234).unwrap();
        let names: Vec<&[u8]> = p.slots().map(|s| s.name).collect();
        assert_eq!(names, [&b"a"[..], b"b", b"c"]);
        let c = p.find(b"c").unwrap();
        assert_eq!((c.base, c.arrival, c.version), (None, 1234, v(50, 7)));
        assert_eq!(p.find(b"b").unwrap().version, v(200, 9));
        p.put(1, b"a", v(300, 9), Some(b"longer"), 0).unwrap();
        let a = p.find(b"a").unwrap();
        assert_eq!((a.base, a.version), (Some(&b"longer"[..]), v(300, 9)));
        assert_eq!(p.slots().next().unwrap().name, b"a", "kept its place");
        let mut q = Packed::default();
        q.put(1, b"c", v(50, 7), None, 1234).unwrap();
        q.put(1, b"b", v(200, 9), Some(b"yy"), 0).unwrap();
        q.put(1, b"a", v(300, 9), Some(b"longer"), 0).unwrap();
        assert_eq!(p.digest(), q.digest(), "digest follows contents only");
        assert!(p.take(1, b"b").is_some() && p.find(b"b").is_none());
        assert_eq!(p.retain(1, |s| s.base.is_some()), 1);
        assert_eq!(p.count(), 1);
        p.take(1, b"a");
        assert_eq!((p.heap_size(), p.digest()), (0, 0), "empty frees all");
    }
}
