//! The live elements of a hash or a set: a vector of (name, register) in
//! insertion order, indexed by a hash table of positions. An index map,
//! written here because indexmap reserves its entries to match its index
//! table's capacity (7/8 of a power of two): for 1,000,000 fields that was
//! 1.8 million 64-byte entries allocated, 167 bytes per field in INFO
//! used_memory against Redis's 73 (make bench, issue 13's memory rows).
//! Positions are u32 and names up to 24 bytes live inside the element.
//!
//! Removal swaps the last element into the hole (O(1)); a SCAN that walks
//! positions from the end towards 0 therefore never misses an element
//! present throughout (a moved one was already returned).

use hashbrown::HashTable;
use smallvec::SmallVec;

use super::register::Register;

/// An element's name: inline up to 24 bytes (most field and member names,
/// redis-benchmark's 20-byte `element:…` among them), else on the heap,
/// which costs an allocation and a cache miss per lookup.
pub type Name = SmallVec<[u8; 24]>;

type Hasher = foldhash::fast::RandomState;

#[derive(Debug, Clone, Default)]
pub struct LiveElements {
    elements: Vec<(Name, Register)>,
    index: HashTable<u32>,
    hasher: Hasher,
}

impl LiveElements {
    fn hash(&self, name: &[u8]) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(name)
    }

    pub fn len(&self) -> usize {
        self.elements.len()
    }

    pub fn is_empty(&self) -> bool {
        self.elements.is_empty()
    }

    /// Slots allocated (for the memory estimate).
    pub fn capacity(&self) -> (usize, usize) {
        (self.elements.capacity(), self.index.capacity())
    }

    pub fn position(&self, name: &[u8]) -> Option<usize> {
        let elements = &self.elements;
        self.index
            .find(self.hash(name), |&i| elements[i as usize].0[..] == *name)
            .map(|&i| i as usize)
    }

    pub fn get(&self, name: &[u8]) -> Option<&Register> {
        self.position(name).map(|i| &self.elements[i].1)
    }

    pub fn get_index_mut(&mut self, i: usize) -> Option<&mut Register> {
        self.elements.get_mut(i).map(|(_, r)| r)
    }

    pub fn get_index(&self, i: usize) -> Option<(&[u8], &Register)> {
        self.elements.get(i).map(|(n, r)| (&n[..], r))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Register)> {
        self.elements.iter().map(|(n, r)| (&n[..], r))
    }

    /// Appends an element the map does not hold.
    pub fn insert_new(&mut self, name: &[u8], register: Register) {
        let position = self.elements.len() as u32;
        let hash = self.hash(name);
        self.elements.push((Name::from_slice(name), register));
        let (elements, hasher) = (&self.elements, &self.hasher);
        self.index.insert_unique(hash, position, |&i| {
            use std::hash::BuildHasher;
            hasher.hash_one(&elements[i as usize].0[..])
        });
    }

    /// Removes `name`, moving the last element into its place.
    pub fn swap_remove(&mut self, name: &[u8]) -> Option<Register> {
        let hash = self.hash(name);
        let elements = &self.elements;
        let found = self
            .index
            .find_entry(hash, |&i| elements[i as usize].0[..] == *name)
            .ok()?;
        let (position, _) = found.remove();
        let position = position as usize;
        let last = self.elements.len() - 1;
        if position != last {
            let moved = self.hash(&self.elements[last].0);
            if let Some(slot) = self.index.find_mut(moved, |&i| i as usize == last) {
                *slot = position as u32;
            }
        }
        Some(self.elements.swap_remove(position).1)
    }

    /// Keeps the elements `keep` says to keep, in order; rebuilds the index.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &Register) -> bool) {
        let before = self.elements.len();
        self.elements.retain(|(n, r)| keep(n, r));
        if self.elements.len() != before {
            self.index.clear();
            let (elements, hasher) = (&self.elements, &self.hasher);
            for (i, (name, _)) in elements.iter().enumerate() {
                use std::hash::BuildHasher;
                self.index
                    .insert_unique(hasher.hash_one(&name[..]), i as u32, |&j| {
                        hasher.hash_one(&elements[j as usize].0[..])
                    });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Version;

    #[test]
    fn removal_moves_the_last_element_and_lookups_follow() {
        let mut m = LiveElements::default();
        for i in 0..100u32 {
            m.insert_new(
                format!("n{i}").as_bytes(),
                Register::new(Version::default(), Some(b"")),
            );
        }
        assert!(m.swap_remove(b"n10").is_some());
        assert_eq!(m.get_index(10).map(|(n, _)| n), Some(&b"n99"[..]));
        for i in (0..100u32).filter(|&i| i != 10) {
            assert!(m.get(format!("n{i}").as_bytes()).is_some(), "n{i}");
        }
        assert!(m.get(b"n10").is_none() && m.swap_remove(b"n10").is_none());
        m.retain(|n, _| n.len() == 2);
        assert_eq!(m.len(), 10, "n0 … n9");
        assert!(m.get(b"n5").is_some() && m.get(b"n50").is_none());
        assert_eq!(
            std::mem::size_of::<Name>(),
            32,
            "a name inline in four words"
        );
    }
}
