//! Element buckets: a large typed value's elements grouped by a hash of
//! their names, each group digested on its own, so that anti-entropy
//! sends only the groups two replicas disagree on (an HSET missed on one
//! field of a 1,000,000-field hash repairs ~4,000 fields, not a million).
//! The grouping depends only on the names and the bucket count, so both
//! sides agree on it without agreeing on anything else.

use super::elements::Elem;
use super::table::element_hash_of;
use super::{Fragment, HASH_SALT, SET_SALT, Typed};

/// At most this many buckets per value (a summary carries one u64 each).
pub const MAX_BUCKETS: usize = 256;

/// The buckets a value of `elements` elements is split into, so that each
/// holds about `per_bucket`: a power of two, at most [`MAX_BUCKETS`];
/// 0 for a value small enough to be sent whole.
pub fn bucket_count(elements: usize, per_bucket: usize) -> usize {
    if elements <= per_bucket {
        return 0;
    }
    elements
        .div_ceil(per_bucket.max(1))
        .next_power_of_two()
        .min(MAX_BUCKETS)
}

/// Whether a peer's bucket count is one [`bucket_count`] can produce.
pub fn valid_count(count: usize) -> bool {
    count.is_power_of_two() && count <= MAX_BUCKETS
}

/// The bucket of element `name` among `count` (a power of two).
pub fn bucket_of(name: &[u8], count: usize) -> usize {
    (xxhash_rust::xxh3::xxh3_64(name) as usize) & (count - 1)
}

/// Some buckets of a value: what a fragment stream is restricted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buckets {
    pub count: usize,
    wanted: Vec<bool>,
}

impl Buckets {
    /// `which` of `count` buckets; out-of-range indices are ignored.
    pub fn new(count: usize, which: impl IntoIterator<Item = usize>) -> Self {
        let mut wanted = vec![false; count];
        for i in which {
            if let Some(w) = wanted.get_mut(i) {
                *w = true;
            }
        }
        Self { count, wanted }
    }

    pub fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.wanted
            .iter()
            .enumerate()
            .filter(|(_, w)| **w)
            .map(|(i, _)| i)
    }

    pub fn contains(&self, name: &[u8]) -> bool {
        self.wanted[bucket_of(name, self.count)]
    }
}

impl<'a> Elem<'a> {
    /// The register's digest (as [`super::Register::digest`]).
    pub fn digest(self) -> u64 {
        match self {
            Elem::Register(r) => r.digest(),
            Elem::Plain { version, base } => super::Register::plain_digest(version, base),
        }
    }
}

impl Typed {
    /// Elements in the hash and set parts, removed ones included.
    pub fn element_total(&self) -> usize {
        [&self.hash, &self.set]
            .into_iter()
            .flatten()
            .map(|e| e.len() + e.removed_len())
            .sum()
    }

    /// Each bucket's digest: the XOR of its elements' hashes (the same
    /// hashes as the content digest). `count` must be a power of two.
    pub fn bucket_digests(&self, count: usize) -> Vec<u64> {
        let mut out = vec![0u64; count];
        for (part, salt) in [(&self.hash, HASH_SALT), (&self.set, SET_SALT)] {
            let Some(elements) = part else { continue };
            for (name, r, _) in elements.iter_all() {
                out[bucket_of(name, count)] ^= element_hash_of(salt, name, r.digest());
            }
        }
        out
    }

    /// The buckets whose digests differ from `theirs` (as
    /// [`Typed::bucket_digests`] made them, with `theirs.len()` buckets).
    pub fn differing_buckets(&self, theirs: &[u64]) -> Buckets {
        let mine = self.bucket_digests(theirs.len());
        let differ = mine
            .iter()
            .zip(theirs)
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, _)| i);
        Buckets::new(theirs.len(), differ)
    }

    /// [`Typed::fragments`] of the elements in `only`'s buckets (all of
    /// them when None).
    pub fn fragments_of(
        &self,
        chunk: usize,
        tombstones_since_ms: u64,
        only: Option<&Buckets>,
    ) -> Vec<Fragment> {
        self.fragments_where(chunk, tombstones_since_ms, |name| {
            only.is_none_or(|b| b.contains(name))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Version;

    #[test]
    fn only_the_buckets_that_differ_are_sent() {
        assert_eq!(bucket_count(512, 512), 0);
        assert_eq!(bucket_count(513, 512), 2);
        assert_eq!(bucket_count(10_000_000, 512), MAX_BUCKETS);
        let (mut a, mut b) = (Typed::default(), Typed::default());
        for i in 0..5000u64 {
            let name = format!("f{i}");
            let v = Version {
                hlc: i + 1,
                node_id: 1,
            };
            let mut d = Fragment::default();
            a.hash_set(name.as_bytes(), b"x", v, 0, &mut d);
            b.hash_set(name.as_bytes(), b"x", v, 0, &mut d);
        }
        let mut d = Fragment::default();
        b.hash_set(
            b"f77",
            b"y",
            Version {
                hlc: 9999,
                node_id: 2,
            },
            0,
            &mut d,
        );
        let count = bucket_count(b.element_total(), 512);
        let theirs = b.bucket_digests(count);
        let differ = a.differing_buckets(&theirs);
        let sent: usize = a
            .fragments_of(512, 0, Some(&differ))
            .iter()
            .map(|f| f.hash.len())
            .sum();
        assert!(sent > 0 && sent < 1000, "{sent} of 5000 fields sent");
        for f in b.fragments_of(512, 0, Some(&differ)) {
            a.merge(&f, 0);
        }
        assert_eq!(a.digest(), b.digest(), "the differing buckets suffice");
        assert_eq!(a.bucket_digests(count), theirs);
    }
}
