//! The digest tree anti-entropy compares: the keyspace split into
//! [`LEAVES`] buckets by a stable hash of the key, each bucket the XOR of
//! its entries' hashes (tombstones included), kept up to date on every
//! change. Two replicas holding the same versions of the same keys have
//! equal buckets, whatever order the writes arrived in.
//!
//! Tombstones must count: a replica that never saw a delete may still
//! receive the deleted value late (a push delayed behind a reconciliation),
//! and only holding the tombstone lets it refuse that value. Tombstones
//! collected on one node and not yet on another make their buckets differ
//! for a while; the sync logic does not hand old tombstones back to a node
//! that holds nothing for the key (see `replication::sync`).
//!
//! Hashes are xxh3 with fixed seeds, so every node (and every build)
//! computes the same buckets.

use super::Store;
use crate::clock::Version;

/// log2 of the number of leaf buckets.
pub const LEAF_BITS: u32 = 16;
pub const LEAVES: usize = 1 << LEAF_BITS;
/// Leaves per inner node of the two-level tree (256 × 256 = 65 536).
pub const FANOUT: usize = 256;

/// A key's leaf bucket.
pub fn bucket_of(key: &[u8]) -> usize {
    leaf_of(key_hash(key))
}

pub(super) fn leaf_of(key_hash: u64) -> usize {
    (key_hash >> (64 - LEAF_BITS)) as usize
}

/// An entry's contribution: its key and version identify its contents
/// (every write has its own version), so the value need not be hashed.
pub fn entry_hash(key: &[u8], version: Version) -> u64 {
    entry_hash_of(key_hash(key), version)
}

/// [`entry_hash`] from the key's xxh3 hash, which callers compute once.
fn entry_hash_of(key_hash: u64, version: Version) -> u64 {
    mix(key_hash ^ mix(version.hlc) ^ mix(version.node_id.rotate_left(32)))
}

/// splitmix64's finalizer: spreads every input bit over the output.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The leaves of one shard: shard `i` holds leaves `i * FANOUT ..
/// (i + 1) * FANOUT`, i.e. inner node `i` of the tree (a key's shard is
/// the top bits of the same stable hash, see `Store::shard_of`). They are
/// changed under the shard's lock with plain stores: as one array of
/// atomics shared by all shards, the `lock xor` on a leaf that missed the
/// cache stalled the core and took 95 % of a replica's digest time.
#[derive(Clone)]
pub struct ShardLeaves([u64; FANOUT]);

impl Default for ShardLeaves {
    fn default() -> Self {
        Self([0; FANOUT])
    }
}

impl ShardLeaves {
    /// Adds or removes (XOR is its own inverse) one entry.
    pub fn toggle(&mut self, key_hash: u64, version: Version) {
        self.0[leaf_of(key_hash) % FANOUT] ^= entry_hash_of(key_hash, version);
    }

    /// Replaces an entry's old version by its new one.
    pub fn replace(&mut self, key_hash: u64, old: Version, new: Version) {
        self.0[leaf_of(key_hash) % FANOUT] ^=
            entry_hash_of(key_hash, old) ^ entry_hash_of(key_hash, new);
    }

    /// The hash of this shard's inner node, `index`.
    fn inner(&self, index: usize) -> u64 {
        let start = index * FANOUT;
        self.0
            .iter()
            .enumerate()
            .fold(0, |acc, (i, leaf)| acc ^ mix(leaf ^ (start + i) as u64))
    }
}

/// The key's stable hash that picks both its leaf and its shard.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

/// A read-only view of the digest tree, one shard lock at a time.
pub struct DigestTree<'a> {
    pub(super) store: &'a Store,
}

impl DigestTree<'_> {
    pub fn leaf(&self, index: usize) -> u64 {
        self.store.shard(index / FANOUT).digest.0[index % FANOUT]
    }

    /// The hash of inner node `index` (a group of [`FANOUT`] leaves).
    pub fn inner(&self, index: usize) -> u64 {
        self.store.shard(index).digest.inner(index)
    }

    pub fn root(&self) -> u64 {
        (0..LEAVES / FANOUT).fold(0, |acc, i| acc ^ mix(self.inner(i) ^ i as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version { hlc, node_id: 1 }
    }

    #[test]
    fn order_does_not_matter_and_removal_restores() {
        let (mut a, mut b) = (ShardLeaves::default(), ShardLeaves::default());
        let (x, y) = (key_hash(b"x"), key_hash(b"y"));
        a.toggle(x, v(1));
        a.toggle(y, v(2));
        b.toggle(y, v(2));
        b.toggle(x, v(1));
        assert_eq!(a.0, b.0);
        b.replace(x, v(1), v(3));
        assert_ne!(a.0, b.0);
        b.replace(x, v(3), v(1));
        assert_eq!(a.0, b.0);
        a.toggle(x, v(1));
        a.toggle(y, v(2));
        assert_eq!(a.0, ShardLeaves::default().0);
    }

    #[test]
    fn buckets_are_stable_across_processes() {
        // Fixed values: nodes of different builds compare these, so a
        // change here breaks anti-entropy between versions.
        assert_eq!(key_hash(b"key:1"), 13_775_787_143_713_575_802);
        assert_eq!(bucket_of(b"key:1"), 48_941);
        assert_eq!(entry_hash(b"k", v(1)), 15_237_707_805_442_376_239);
        assert_ne!(entry_hash(b"k", v(1)), entry_hash(b"k", v(2)));
        assert_ne!(entry_hash(b"k", v(1)), entry_hash(b"j", v(1)));
    }
}
