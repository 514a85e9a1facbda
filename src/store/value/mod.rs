//! Typed values: what a key holds when it is more than a plain string (a
//! counter, a hash, a set), and the merge rules that make every replica
//! converge on it (DESIGN §2a; the concrete encoding is docs/TYPES.md).
//!
//! A [`Typed`] value is a clear marker, an expiry register and up to three
//! parts: the key's own string [`Register`] (a counter once incremented),
//! hash fields and set members ([`Elements`]). Each part is joined element
//! by element; a [`Fragment`] is any subset of a value (a local write's
//! delta, or a chunk of a full state in anti-entropy), and joining a
//! fragment is commutative, associative and idempotent.
//!
//! A plain string that was never incremented stays today's compact entry;
//! it is the value `{clear: v, string: (v, bytes)}`, and the store turns
//! it into a `Typed` only when a typed write or fragment reaches it.
//!
//! Nothing here locks, allocates per key beyond the value itself, or reads
//! a clock: the store calls in with the time.

pub mod buckets;
pub mod elements;
mod live;
mod ops;
mod packed;
pub mod register;
mod table;
#[cfg(test)]
mod tests;

use serde::{Deserialize, Serialize};

use crate::clock::Version;
pub use elements::{Elem, Elements, set_packed_limits};
pub use register::{Amount, CounterParts, PartsSlot, Register, StringRegister};

/// What the key is to a client: the Redis type TYPE names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Hash,
    Set,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::String => "string",
            Kind::Hash => "hash",
            Kind::Set => "set",
        }
    }
}

/// Seeds of the two element parts' digests, so that a field and a member
/// of the same name never cancel out.
const HASH_SALT: u64 = 0x6861_7368;
const SET_SALT: u64 = 0x0073_6574;

/// The typed value of one key.
#[derive(Debug, Clone, Default)]
pub struct Typed {
    /// Every base older than this is gone (DEL, UNLINK, expiry, a SET that
    /// replaced the value).
    pub clear: Version,
    /// The expiry register: absolute unix ms (0 = none) and the version of
    /// the write that set it; the larger version wins.
    pub expires_at: u64,
    pub expiry_version: Version,
    pub string: Option<Box<StringRegister>>,
    pub hash: Option<Elements>,
    pub set: Option<Elements>,
    /// [`Typed::digest`] as of the value's last change through the store
    /// (`Shard::update_typed` refreshes it): a write then reads the old
    /// digest without computing it and computes the new one once, where a
    /// peer's fragment was digested four times (41 % of a replica's perf
    /// samples applying INCRs).
    stored_digest: u64,
}

/// A subset of a [`Typed`] value, as peers send it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Fragment {
    pub clear: Version,
    pub expires_at: u64,
    pub expiry_version: Version,
    /// Its parts in place (the wire form is the same as boxed): a
    /// replicated INCR decodes without allocating them.
    pub string: Option<Register<CounterParts>>,
    pub hash: Vec<(serde_bytes::ByteBuf, Register)>,
    pub set: Vec<(serde_bytes::ByteBuf, Register)>,
}

/// Why a peer's fragment was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FragmentError {
    #[error("undecodable typed value: {0}")]
    Decode(String),
    #[error("malformed counter contributions")]
    Malformed,
}

impl Fragment {
    pub fn encode(&self) -> Box<[u8]> {
        // Sized first: one allocation of the exact size, no growth and no
        // shrink. Encoding a plain struct into a vector cannot fail.
        let size = postcard::serialize_with_flavor(self, postcard::ser_flavors::Size::default())
            .unwrap_or(0);
        postcard::to_extend(self, Vec::with_capacity(size))
            .unwrap_or_default()
            .into_boxed_slice()
    }

    /// Decodes and validates a peer's fragment: it is applied only if
    /// every register in it is well formed.
    pub fn decode(bytes: &[u8]) -> Result<Self, FragmentError> {
        let f: Fragment =
            postcard::from_bytes(bytes).map_err(|e| FragmentError::Decode(e.to_string()))?;
        let elements = f.hash.iter().chain(&f.set).map(|(_, r)| r.is_valid());
        if !f
            .string
            .iter()
            .map(Register::is_valid)
            .chain(elements)
            .all(|valid| valid)
        {
            return Err(FragmentError::Malformed);
        }
        Ok(f)
    }

    /// Keeps one entry per element, the last: a command that writes an
    /// element twice (a clear that reset a counter field, then the field
    /// written anew) must send one register for it, or peers would hold
    /// two bases under one version.
    pub fn dedup(&mut self) {
        for list in [&mut self.hash, &mut self.set] {
            if list.len() < 2 {
                continue;
            }
            let mut seen = std::collections::HashSet::new();
            let keep: Vec<bool> = list
                .iter()
                .rev()
                .map(|(name, _)| seen.insert(name.as_slice()))
                .collect();
            let mut keep = keep.into_iter().rev();
            list.retain(|_| keep.next().unwrap_or(true));
        }
    }

    /// The newest version in the fragment (the clock observes it).
    pub fn newest(&self) -> Version {
        let elements = self.hash.iter().chain(&self.set).map(|(_, r)| r.newest());
        let string = self.string.iter().map(Register::newest);
        string
            .chain(elements)
            .fold(self.clear.max(self.expiry_version), Version::max)
    }

    /// A plain string entry as a fragment: a SET replaces the whole value.
    pub fn plain(value: Option<&[u8]>, expires_at: u64, version: Version) -> Self {
        Fragment {
            clear: version,
            expires_at: if value.is_some() { expires_at } else { 0 },
            expiry_version: version,
            string: value.map(|v| Register::new(version, Some(v))),
            ..Default::default()
        }
    }
}

impl Typed {
    /// A plain string (or a plain tombstone, `value` None) as a value.
    pub fn from_plain(value: Option<&[u8]>, expires_at: u64, version: Version) -> Self {
        let mut t = Typed::default();
        t.merge(&Fragment::plain(value, expires_at, version), 0);
        t
    }

    /// The type a client sees: the part with the newest visible content
    /// (two parts are visible only after two nodes created one key with
    /// different types at once; the newer wins, the other stays hidden
    /// until a clear marker removes it). None: the key does not exist.
    pub fn kind(&self) -> Option<Kind> {
        let mut best: Option<(Version, Kind)> = None;
        let mut consider = |newest: Version, kind: Kind| {
            if best.is_none_or(|(v, _)| newest > v) {
                best = Some((newest, kind));
            }
        };
        if let Some(r) = self.string.as_ref().filter(|r| r.is_visible()) {
            consider(r.newest(), Kind::String);
        }
        if let Some(h) = self.hash.as_ref().filter(|h| !h.is_empty()) {
            consider(h.newest(), Kind::Hash);
        }
        if let Some(s) = self.set.as_ref().filter(|s| !s.is_empty()) {
            consider(s.newest(), Kind::Set);
        }
        best.map(|(_, kind)| kind)
    }

    /// The newest version anything in the value carries.
    pub fn newest(&self) -> Version {
        let mut newest = self.clear.max(self.expiry_version);
        if let Some(r) = &self.string {
            newest = newest.max(r.newest());
        }
        for part in [&self.hash, &self.set].into_iter().flatten() {
            newest = newest.max(part.newest());
        }
        newest
    }

    /// Whether the value is just a plain string or a plain tombstone, with
    /// nothing that needs the typed form: the store then keeps it as a
    /// compact entry. Returns (value, expires_at, version).
    pub fn as_plain(&self) -> Option<(Option<&[u8]>, u64, Version)> {
        if self.hash.is_some() || self.set.is_some() {
            return None;
        }
        match &self.string {
            None if self.expiry_version <= self.clear => Some((None, 0, self.clear)),
            Some(r)
                if r.counter.is_none()
                    && r.version == self.clear
                    && self.expiry_version == self.clear
                    && r.base.is_some() =>
            {
                Some((r.base.as_deref(), self.expires_at, r.version))
            }
            _ => None,
        }
    }

    /// Joins a fragment into the value (`now_ms` dates element removals).
    pub fn merge(&mut self, f: &Fragment, now_ms: u64) {
        if f.clear > self.clear {
            self.clear_before(f.clear, now_ms);
        }
        if f.expiry_version > self.expiry_version {
            self.expiry_version = f.expiry_version;
            self.expires_at = f.expires_at;
        }
        if let Some(theirs) = &f.string {
            let mine = self
                .string
                .get_or_insert_with(|| Box::new(StringRegister::new(Version::default(), None)));
            mine.merge(theirs);
            table::apply_clear(mine, self.clear);
        }
        let clear = self.clear;
        for (part, salt, entries) in [
            (&mut self.hash, HASH_SALT, &f.hash),
            (&mut self.set, SET_SALT, &f.set),
        ] {
            if entries.is_empty() {
                continue;
            }
            let elements = part.get_or_insert_with(Default::default);
            for (name, r) in entries {
                elements.merge(salt, name, r, clear, now_ms);
            }
        }
        self.normalize();
    }

    /// Raises the clear marker to `clear`, dropping what it removes.
    fn clear_before(&mut self, clear: Version, now_ms: u64) {
        self.clear = clear;
        if let Some(r) = &mut self.string {
            table::apply_clear(r, clear);
        }
        if let Some(h) = &mut self.hash {
            h.clear_before(HASH_SALT, clear, now_ms);
        }
        if let Some(s) = &mut self.set {
            s.clear_before(SET_SALT, clear, now_ms);
        }
        self.normalize();
    }

    /// Drops parts that hold nothing, so equal contents have one form (and
    /// one digest) on every replica.
    fn normalize(&mut self) {
        // An expiry set before the clear belonged to what the clear removed:
        // a key written again after a DEL or an expiry has no TTL, as in
        // Redis (and an expired key written again is not expired at once).
        if self.expiry_version < self.clear {
            self.expires_at = 0;
        }
        if self
            .string
            .as_ref()
            .is_some_and(|r| r.counter.is_none() && (r.base.is_none() || r.version < self.clear))
        {
            self.string = None;
        }
        for part in [&mut self.hash, &mut self.set] {
            if part
                .as_ref()
                .is_some_and(|e| e.is_empty() && e.removed_len() == 0)
            {
                *part = None;
            }
        }
    }

    /// A local clear at `version` (DEL, or the start of a SET that
    /// replaces the value): every counter in the value is reset to what
    /// it holds (so increments elsewhere that it has not seen still
    /// count), everything else goes. Returns the fragment that carries
    /// the clear to peers.
    pub fn clear_local(&mut self, version: Version, now_ms: u64) -> Fragment {
        let mut f = Fragment {
            clear: version,
            ..Default::default()
        };
        if let Some(r) = self.string.as_mut().filter(|r| r.counter.is_some()) {
            r.overwrite(version, None);
            f.string = Some(r.to_form());
        }
        for (part, salt, out) in [
            (&mut self.hash, HASH_SALT, &mut f.hash),
            (&mut self.set, SET_SALT, &mut f.set),
        ] {
            let Some(elements) = part else { continue };
            let counters: Vec<Box<[u8]>> = elements
                .iter_all()
                .filter(|(_, r, _)| r.counter().is_some())
                .map(|(name, _, _)| name.into())
                .collect();
            for name in counters {
                elements.update(salt, &name, now_ms, |r| {
                    let r = r?.overwritten(version, None);
                    out.push((serde_bytes::ByteBuf::from(name.to_vec()), r.clone()));
                    Some(r)
                });
            }
        }
        self.clear_before(version, now_ms);
        f.expires_at = self.expires_at;
        f.expiry_version = self.expiry_version;
        f
    }

    /// The whole value as fragments of at most `chunk` elements each (a
    /// large key is sent in bounded pieces; each piece carries the clear
    /// marker and the expiry, so any subset of pieces is a valid state).
    /// Removed elements written before `tombstones_since_ms` are left out
    /// (see `replication::sync::worth_sending`).
    pub fn fragments(&self, chunk: usize, tombstones_since_ms: u64) -> Vec<Fragment> {
        self.fragments_where(chunk, tombstones_since_ms, |_| true)
    }

    /// [`Typed::fragments`] of the elements whose names `include` says.
    fn fragments_where(
        &self,
        chunk: usize,
        tombstones_since_ms: u64,
        include: impl Fn(&[u8]) -> bool,
    ) -> Vec<Fragment> {
        let header = || Fragment {
            clear: self.clear,
            expires_at: self.expires_at,
            expiry_version: self.expiry_version,
            ..Default::default()
        };
        let mut out = vec![header()];
        out[0].string = self.string.as_ref().map(|r| r.to_form());
        let mut used = 0;
        let chunk = chunk.max(1);
        for (part, is_hash) in [(&self.hash, true), (&self.set, false)] {
            let Some(elements) = part else { continue };
            for (name, r, live) in elements.iter_all() {
                if !live && r.newest().millis() < tombstones_since_ms && r.counter().is_none()
                    || !include(name)
                {
                    continue;
                }
                if used == chunk {
                    out.push(header());
                    used = 0;
                }
                let last = out.len() - 1;
                let entry = (serde_bytes::ByteBuf::from(name.to_vec()), r.to_register());
                if is_hash {
                    out[last].hash.push(entry);
                } else {
                    out[last].set.push(entry);
                }
                used += 1;
            }
        }
        out
    }

    /// [`Typed::digest`] as the store last saw it (see `stored_digest`).
    pub fn stored_digest(&self) -> u64 {
        debug_assert_eq!(self.stored_digest, self.digest(), "stored digest stale");
        self.stored_digest
    }

    /// Computes the digest again after a change.
    pub fn refresh_digest(&mut self) {
        self.stored_digest = self.digest();
    }

    /// A stable hash of the whole content: equal on two replicas exactly
    /// when they hold the same elements with the same versions.
    pub fn digest(&self) -> u64 {
        use register::fold;
        let mut h = fold(self.clear.hlc, self.clear.node_id);
        h = fold(
            fold(h, self.expiry_version.hlc),
            self.expiry_version.node_id,
        );
        h = fold(h, self.expires_at);
        h = fold(h, self.string.as_ref().map_or(0, |r| r.digest()));
        h = fold(h, self.hash.as_ref().map_or(0, |e| e.digest(HASH_SALT)));
        h = fold(h, self.set.as_ref().map_or(0, |e| e.digest(SET_SALT)));
        // Never 0: a typed entry's digest must differ from "no content".
        h | 1
    }

    /// Heap bytes the value owns.
    pub fn heap_size(&self) -> usize {
        std::mem::size_of::<Typed>()
            + self
                .string
                .as_ref()
                .map_or(0, |r| std::mem::size_of::<StringRegister>() + r.heap_size())
            + [&self.hash, &self.set]
                .into_iter()
                .flatten()
                .map(Elements::heap_size)
                .sum::<usize>()
    }

    /// Collects element tombstones (see `Elements::collect`).
    pub fn collect(&mut self, arrived_before: u64, written_before_ms: u64) -> usize {
        let mut n = 0;
        if let Some(h) = &mut self.hash {
            n += h.collect(HASH_SALT, arrived_before, written_before_ms);
        }
        if let Some(s) = &mut self.set {
            n += s.collect(SET_SALT, arrived_before, written_before_ms);
        }
        self.normalize();
        n
    }

    pub fn removed_len(&self) -> usize {
        [&self.hash, &self.set]
            .into_iter()
            .flatten()
            .map(|e| e.removed_len())
            .sum()
    }

    /// The hash part, created empty on first use (a local HSET).
    pub fn hash_mut(&mut self) -> &mut Elements {
        self.hash.get_or_insert_with(Default::default)
    }

    pub fn set_mut(&mut self) -> &mut Elements {
        self.set.get_or_insert_with(Default::default)
    }

    pub fn hash_salt() -> u64 {
        HASH_SALT
    }

    pub fn set_salt() -> u64 {
        SET_SALT
    }
}
