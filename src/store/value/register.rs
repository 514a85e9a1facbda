//! One versioned element: a string key's value, a hash field or a set
//! member. Its base is the last write that set (or removed) it, LWW by
//! version; if it was ever incremented it also carries counter parts: each
//! node's running contribution and the contributions the base had observed
//! when it was written (docs/TYPES.md, "Counters").
//!
//! The value is `base + Σ (contribution − observed)`: a SET/HSET/DEL
//! resets exactly what it had seen, and increments it had not seen still
//! count. Amounts are exact decimals (rust_decimal), summed in node order,
//! so every replica computes the same value from the same state, whatever
//! order the deltas came in (binary floats would not be associative).

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::clock::Version;

/// Contributions of a counter; a few nodes ever increment one key, so
/// sorted vectors beat maps in memory and time.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct CounterParts {
    /// Each node's running total of increments and the version of its
    /// last one, sorted by node. A node's total only moves forward in its
    /// own versions, so the larger version of a node's entry wins.
    ///
    /// The first sits inside the parts (most counters are incremented at
    /// one node): an INCR then reads one allocation fewer, which is one
    /// cache miss fewer on a large keyspace (make bench row 13 incr-p16).
    #[serde(deserialize_with = "contributions_from_seq")]
    pub contributions: Contributions,
    /// The contributions the base had observed, sorted by node: the reset
    /// its write made. Equal base versions (the same expiry computed at two
    /// replicas) merge by the larger amount per node.
    pub observed: Vec<(u64, Amount)>,
}

pub type Contributions = smallvec::SmallVec<[(u64, Amount, Version); 1]>;

/// Element by element, growing as they arrive: a peer's length prefix
/// reserves nothing before its bytes do, and no vector is allocated
/// only to be moved inline (one allocation per replicated INCR).
fn contributions_from_seq<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Contributions, D::Error> {
    struct Sequence;
    impl<'de> serde::de::Visitor<'de> for Sequence {
        type Value = Contributions;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a sequence of counter contributions")
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Contributions, A::Error> {
            let mut out = Contributions::new();
            while let Some(c) = seq.next_element()? {
                out.push(c);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Sequence)
}

/// An exact decimal, serialized as mantissa and scale so that a peer's
/// bytes are validated (scale ≤ 28) before they become a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
pub struct Amount(pub Decimal);

impl Serialize for Amount {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.0.mantissa(), self.0.scale()).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (mantissa, scale) = <(i128, u32)>::deserialize(d)?;
        Decimal::try_from_i128_with_scale(mantissa, scale)
            .map(Amount)
            .map_err(serde::de::Error::custom)
    }
}

/// Where a register keeps its counter parts. Behind a box of their own
/// for hash fields and set members, and in fragments: a field that was
/// never incremented pays 8 bytes for them. Inline for a key's own string
/// ([`StringRegister`]), with what the base reads as: an INCR then reads
/// the string register's one allocation, not the register, its parts and
/// its base (a cache miss each on a keyspace larger than the caches).
///
/// The string register itself sits behind a box in the typed value, so
/// that a hash or set key's typed value stays small (120 bytes; smallhashes
/// memory 1.63 → 1.56 of Redis). Kept inline instead, it made INCR `-P 16
/// -r 100000` 0.69–0.76 of redis-server against 0.59–0.60 boxed (alternating
/// runs), but every typed value grew to 176 bytes and smallhashes to 1.94
/// (RSS 1.99) of Redis, at its 2.0 limit: not taken.
pub trait PartsSlot: Default + Clone {
    fn from_parts(parts: CounterParts) -> Self;
    fn parts(&self) -> &CounterParts;
    fn parts_mut(&mut self) -> &mut CounterParts;
    fn into_parts(self) -> CounterParts;
    /// Heap bytes the slot adds besides the parts' own vectors.
    const BOXED: usize;
    /// The register's base was written (see [`BaseNumber`]).
    fn note_base(&mut self, _base: Option<&[u8]>) {}
    /// What the base reads as, if the slot keeps it.
    fn base_number(&self) -> Option<BaseNumber> {
        None
    }
}

impl PartsSlot for Box<CounterParts> {
    fn from_parts(parts: CounterParts) -> Self {
        Box::new(parts)
    }
    fn parts(&self) -> &CounterParts {
        self
    }
    fn parts_mut(&mut self) -> &mut CounterParts {
        self
    }
    fn into_parts(self) -> CounterParts {
        *self
    }
    const BOXED: usize = std::mem::size_of::<CounterParts>();
}

/// Parts held in place with no copy of the base's number: the string
/// register of a fragment, decoded without a box of its own.
impl PartsSlot for CounterParts {
    fn from_parts(parts: CounterParts) -> Self {
        parts
    }
    fn parts(&self) -> &CounterParts {
        self
    }
    fn parts_mut(&mut self) -> &mut CounterParts {
        self
    }
    fn into_parts(self) -> CounterParts {
        self
    }
    const BOXED: usize = 0;
}

/// What a register's base reads as for INCR: always what
/// [`BaseNumber::of`] makes of the base bytes, rewritten by every
/// write of the base (`Register::base_written`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BaseNumber {
    /// No base (removed, or a counter deleted).
    #[default]
    Absent,
    Integer(i64),
    /// Bytes that are no plain integer ("1.5", "abc").
    Other,
}

impl BaseNumber {
    pub fn of(base: Option<&[u8]>) -> Self {
        match base {
            None => BaseNumber::Absent,
            Some(bytes) => {
                crate::resp::parse_i64(bytes).map_or(BaseNumber::Other, BaseNumber::Integer)
            }
        }
    }
}

/// The parts of a key's own string counter, inline, and its base's
/// number (see [`PartsSlot`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InlineParts {
    parts: CounterParts,
    base: BaseNumber,
}

impl PartsSlot for InlineParts {
    fn from_parts(parts: CounterParts) -> Self {
        InlineParts {
            parts,
            base: BaseNumber::Absent,
        }
    }
    fn parts(&self) -> &CounterParts {
        &self.parts
    }
    fn parts_mut(&mut self) -> &mut CounterParts {
        &mut self.parts
    }
    fn into_parts(self) -> CounterParts {
        self.parts
    }
    const BOXED: usize = 0;
    fn note_base(&mut self, base: Option<&[u8]>) {
        self.base = BaseNumber::of(base);
    }
    fn base_number(&self) -> Option<BaseNumber> {
        Some(self.base)
    }
}

/// A register's value and version, and its counter parts if any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register<P = Box<CounterParts>> {
    /// The version of the write that set the base.
    pub version: Version,
    /// The base: bytes (empty for a set member), or None when it was
    /// removed (an element tombstone, or a deleted counter).
    #[serde(with = "serde_bytes")]
    pub base: Option<Box<[u8]>>,
    pub counter: Option<P>,
}

/// A key's own string register, its counter parts inline (see
/// [`PartsSlot`]).
pub type StringRegister = Register<InlineParts>;

impl<P: PartsSlot> Register<P> {
    pub fn new(version: Version, base: Option<&[u8]>) -> Self {
        Self {
            version,
            base: base.map(Into::into),
            counter: None,
        }
    }

    /// The same register with its parts kept the other way (a string
    /// register into a fragment, or back).
    pub fn to_form<Q: PartsSlot>(&self) -> Register<Q> {
        let mut r = Register {
            version: self.version,
            base: self.base.clone(),
            counter: self
                .counter
                .as_ref()
                .map(|p| Q::from_parts(p.parts().clone())),
        };
        r.base_written();
        r
    }

    pub fn into_form<Q: PartsSlot>(self) -> Register<Q> {
        let mut r = Register {
            version: self.version,
            base: self.base,
            counter: self.counter.map(|p| Q::from_parts(p.into_parts())),
        };
        r.base_written();
        r
    }

    /// Keeps the parts' copy of what the base reads as (see
    /// [`BaseNumber`]): called after every write of `base`.
    pub fn base_written(&mut self) {
        if let Some(c) = &mut self.counter {
            c.note_base(self.base.as_deref());
        }
    }

    /// What the base reads as, from the parts' copy when they keep one.
    fn base_number(&self) -> BaseNumber {
        match self.counter.as_ref().and_then(P::base_number) {
            Some(n) => {
                debug_assert_eq!(n, BaseNumber::of(self.base.as_deref()));
                n
            }
            None => BaseNumber::of(self.base.as_deref()),
        }
    }

    /// The counter parts, if the register was ever incremented.
    pub fn parts(&self) -> Option<&CounterParts> {
        self.counter.as_ref().map(PartsSlot::parts)
    }

    fn parts_or_default(&mut self) -> &mut CounterParts {
        let base = self.base.as_deref();
        self.counter
            .get_or_insert_with(|| {
                let mut slot = P::default();
                slot.note_base(base);
                slot
            })
            .parts_mut()
    }

    /// Increments not reset by the base: what the counter adds to it.
    pub fn unobserved(&self) -> Decimal {
        if let Some(sum) = self.unobserved_integer() {
            return Decimal::from_i128_with_scale(sum, 0);
        }
        let Some(parts) = self.parts() else {
            return Decimal::ZERO;
        };
        let mut sum = Decimal::ZERO;
        for (node, amount, _) in &parts.contributions {
            let seen = observed_of(&parts.observed, *node);
            sum = sum.saturating_add(amount.0.saturating_sub(seen));
        }
        sum
    }

    /// [`Register::unobserved`] when every amount is an integer (INCR's
    /// counters), summed as integers: the decimal arithmetic cost INCR
    /// more than everything else it does together (callgrind, make bench
    /// row 13 incr-p16).
    fn unobserved_integer(&self) -> Option<i128> {
        let Some(parts) = self.parts() else {
            return Some(0);
        };
        let integer = |a: &Amount| (a.0.scale() == 0).then(|| a.0.mantissa());
        let mut sum: i128 = 0;
        for (node, amount, _) in &parts.contributions {
            let seen = match parts.observed.binary_search_by_key(node, |o| o.0) {
                Ok(i) => integer(&parts.observed[i].1)?,
                Err(_) => 0,
            };
            sum = sum.checked_add(integer(amount)?.checked_sub(seen)?)?;
        }
        // Within what a decimal holds, as the slow path's sum would be.
        (sum.unsigned_abs() < 1 << 95).then_some(sum)
    }

    /// Whether the element exists: a live base, or increments that no
    /// removal has observed.
    pub fn is_visible(&self) -> bool {
        self.base.is_some() || !self.unobserved().is_zero()
    }

    /// The value a reader sees: the base when nothing unobserved is added
    /// (byte for byte what was written), else base + increments formatted
    /// as Redis formats numbers. A base that is not a number ignores
    /// increments (they were concurrent with the write that made it one).
    pub fn value(&self) -> Option<Vec<u8>> {
        if self.counter.is_some()
            && let Some(add) = self.unobserved_integer().filter(|a| *a != 0)
            && let Some(start) = match self.base_number() {
                BaseNumber::Absent => Some(0),
                BaseNumber::Integer(n) => Some(n),
                BaseNumber::Other => None,
            }
        {
            // An integer counter, formatted as an integer.
            let mut buf = itoa::Buffer::new();
            return Some(buf.format(i128::from(start) + add).as_bytes().to_vec());
        }
        let add = self.unobserved();
        match &self.base {
            Some(base) if add.is_zero() => Some(base.to_vec()),
            None if add.is_zero() => None,
            base => {
                let start = match base {
                    Some(bytes) => match parse_decimal(bytes) {
                        Some(d) => d,
                        None => return Some(bytes.to_vec()),
                    },
                    None => Decimal::ZERO,
                };
                Some(format_decimal(start.saturating_add(add)).into_bytes())
            }
        }
    }

    /// The value as INCR reads it: an integer, or None when the value is
    /// not one (Redis's rules for the written bytes; a counter's sum when
    /// increments are added). Without formatting the value first.
    pub fn integer(&self) -> Option<i64> {
        if let Some(add) = self.unobserved_integer() {
            match (self.base_number(), add) {
                (BaseNumber::Integer(n), 0) => return Some(n),
                (_, 0) => return None,
                (BaseNumber::Absent, add) => return i64::try_from(add).ok(),
                (BaseNumber::Integer(n), add) => return i64::try_from(i128::from(n) + add).ok(),
                // A base that is no plain integer ("1.0") takes the slow path.
                (BaseNumber::Other, _) => {}
            }
        }
        let add = self.unobserved();
        if add.is_zero() {
            return crate::resp::parse_i64(self.base.as_deref()?);
        }
        let start = match &self.base {
            Some(bytes) => parse_decimal(bytes)?,
            None => Decimal::ZERO,
        };
        let sum = start.checked_add(add)?;
        if !sum.fract().is_zero() {
            return None;
        }
        i64::try_from(sum.trunc()).ok()
    }

    /// Adds `by` to `node`'s contribution at `version` (a local INCR).
    pub fn increment(&mut self, node: u64, by: Decimal, version: Version) {
        let parts = self.parts_or_default();
        match parts.contributions.binary_search_by_key(&node, |c| c.0) {
            Ok(i) => {
                let c = &mut parts.contributions[i];
                c.1 = match (c.1.0.scale(), by.scale()) {
                    // Integers add as integers (see `unobserved_integer`).
                    (0, 0) => {
                        c.1.0
                            .mantissa()
                            .checked_add(by.mantissa())
                            .filter(|m| m.unsigned_abs() < 1 << 95)
                            .map_or_else(
                                || Amount(c.1.0.saturating_add(by)),
                                |m| Amount(Decimal::from_i128_with_scale(m, 0)),
                            )
                    }
                    _ => Amount(c.1.0.saturating_add(by)),
                };
                c.2 = version;
            }
            Err(i) => parts.contributions.insert(i, (node, Amount(by), version)),
        }
    }

    /// What an increment by `node` sends: that node's contribution alone,
    /// under the smallest version (a join with it changes nothing but the
    /// contribution), so a counter's delta does not grow with the number of
    /// nodes that ever incremented it.
    pub fn contribution_of<Q: PartsSlot>(&self, node: u64) -> Register<Q> {
        let mine = self.parts().and_then(|p| {
            p.contributions
                .binary_search_by_key(&node, |c| c.0)
                .ok()
                .map(|i| p.contributions[i])
        });
        Register {
            version: Version::default(),
            base: None,
            counter: Some(Q::from_parts(CounterParts {
                contributions: mine.into_iter().collect(),
                observed: Vec::new(),
            })),
        }
    }

    /// This register overwritten (see [`Register::overwrite`]), built
    /// without copying the old base.
    pub fn overwritten(&self, version: Version, base: Option<&[u8]>) -> Register<P> {
        let mut r = Register {
            version,
            base: base.map(Into::into),
            counter: self.counter.clone(),
        };
        r.base_written();
        r.observe_all();
        r
    }

    /// Overwrites the base at `version`, resetting every contribution it
    /// observes (a local SET/HSET/DEL/expiry of a counter).
    pub fn overwrite(&mut self, version: Version, base: Option<&[u8]>) {
        self.version = version;
        self.base = base.map(Into::into);
        self.base_written();
        self.observe_all();
    }

    /// The base observes every contribution there is (its write reset them).
    fn observe_all(&mut self) {
        if let Some(parts) = self.counter.as_mut().map(PartsSlot::parts_mut) {
            parts.observed = parts
                .contributions
                .iter()
                .map(|(node, amount, _)| (*node, *amount))
                .collect();
        }
    }

    /// What [`Register::merge`] does between two registers without
    /// counter parts, decided without building the join: `Some(true)` when
    /// `theirs` replaces this one whole (a larger version, or the same
    /// version with a larger base), `Some(false)` when the join leaves this
    /// one as it is; None when either has counter parts (only `merge`
    /// joins those). The property tests hold it to `merge`.
    pub fn replaced_by<Q: PartsSlot>(&self, theirs: &Register<Q>) -> Option<bool> {
        if self.counter.is_some() || theirs.counter.is_some() {
            return None;
        }
        Some(match theirs.version.cmp(&self.version) {
            std::cmp::Ordering::Greater => true,
            std::cmp::Ordering::Equal => theirs.base > self.base,
            std::cmp::Ordering::Less => false,
        })
    }

    /// Joins `other` into this register: the base with the larger version
    /// wins (with the observations it made), contributions merge per node
    /// by version. Commutative, associative and idempotent.
    pub fn merge<Q: PartsSlot>(&mut self, other: &Register<Q>) {
        use std::cmp::Ordering;
        match other.version.cmp(&self.version) {
            Ordering::Greater => {
                self.version = other.version;
                self.base.clone_from(&other.base);
                self.base_written();
                let observed = other
                    .parts()
                    .map(|p| p.observed.clone())
                    .unwrap_or_default();
                if !observed.is_empty() || self.counter.is_some() {
                    self.parts_or_default().observed = observed;
                }
            }
            Ordering::Equal => {
                // One write gives one base per version; should two ever
                // meet (a bug's delta), the larger one wins everywhere.
                if other.base > self.base {
                    self.base.clone_from(&other.base);
                    self.base_written();
                }
                if let Some(theirs) = other.parts().filter(|p| !p.observed.is_empty()) {
                    let parts = self.parts_or_default();
                    for (node, amount) in &theirs.observed {
                        match parts.observed.binary_search_by_key(node, |o| o.0) {
                            Ok(i) => parts.observed[i].1 = parts.observed[i].1.max(*amount),
                            Err(i) => parts.observed.insert(i, (*node, *amount)),
                        }
                    }
                }
            }
            Ordering::Less => {}
        }
        if let Some(theirs) = other.parts() {
            let parts = self.parts_or_default();
            for c in &theirs.contributions {
                match parts.contributions.binary_search_by_key(&c.0, |m| m.0) {
                    Ok(i) if parts.contributions[i].2 < c.2 => parts.contributions[i] = *c,
                    Ok(_) => {}
                    Err(i) => parts.contributions.insert(i, *c),
                }
            }
        }
        if self
            .parts()
            .is_some_and(|p| p.contributions.is_empty() && p.observed.is_empty())
        {
            self.counter = None;
        }
    }

    /// The newest version anything in the register carries.
    pub fn newest(&self) -> Version {
        let mut newest = self.version;
        if let Some(parts) = self.parts() {
            for c in &parts.contributions {
                newest = newest.max(c.2);
            }
        }
        newest
    }

    /// Heap bytes this register owns.
    pub fn heap_size(&self) -> usize {
        self.base.as_ref().map_or(0, |b| b.len())
            + self.parts().map_or(0, |p| {
                let spilled = if p.contributions.spilled() {
                    p.contributions.capacity()
                } else {
                    0
                };
                P::BOXED
                    + spilled * std::mem::size_of::<(u64, Amount, Version)>()
                    + p.observed.capacity() * std::mem::size_of::<(u64, Amount)>()
            })
    }

    /// A stable hash of the whole state, for the content digest. Folded
    /// by hand rather than with a streaming hasher: it runs on every write
    /// of a typed value.
    pub fn digest(&self) -> u64 {
        let mut h = match self.counter.as_ref().and_then(P::base_number) {
            // The base's bytes are the integer's canonical form: hashed
            // from the number, the base's allocation is not read (a miss
            // per INCR, twice, on a large keyspace).
            Some(BaseNumber::Integer(n)) => {
                plain_digest(self.version, Some(itoa::Buffer::new().format(n).as_bytes()))
            }
            _ => plain_digest(self.version, self.base.as_deref()),
        };
        if let Some(parts) = self.parts() {
            for (node, amount, version) in &parts.contributions {
                h = fold(fold(fold(h, *node), amount_bits(amount)), version.hlc);
                h = fold(h, version.node_id);
            }
            h = fold(h, 0xff);
            for (node, amount) in &parts.observed {
                h = fold(fold(h, *node), amount_bits(amount));
            }
        }
        h
    }

    /// Whether a peer's register is well formed: sorted, unique nodes.
    pub fn is_valid(&self) -> bool {
        self.parts().is_none_or(|p| {
            p.contributions.windows(2).all(|w| w[0].0 < w[1].0)
                && p.observed.windows(2).all(|w| w[0].0 < w[1].0)
        })
    }
}

impl Register {
    /// [`Register::digest`] of a register without counter parts, from its
    /// parts (the packed form keeps no `Register`).
    pub fn plain_digest(version: Version, base: Option<&[u8]>) -> u64 {
        plain_digest(version, base)
    }
}

fn plain_digest(version: Version, base: Option<&[u8]>) -> u64 {
    let h = fold(fold(0x7265_6769, version.hlc), version.node_id);
    match base {
        Some(b) => fold(h, xxhash_rust::xxh3::xxh3_64(b) ^ 1),
        None => fold(h, 2),
    }
}

/// One step of a hash fold (splitmix64's finalizer over the running state).
pub(super) fn fold(h: u64, x: u64) -> u64 {
    let mut z = (h ^ x).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An amount's exact bits (mantissa and scale), for hashing.
fn amount_bits(a: &Amount) -> u64 {
    let m = a.0.mantissa();
    fold(
        (m as u64) ^ ((m >> 64) as u64).rotate_left(32),
        u64::from(a.0.scale()),
    )
}

fn observed_of(observed: &[(u64, Amount)], node: u64) -> Decimal {
    observed
        .binary_search_by_key(&node, |o| o.0)
        .map_or(Decimal::ZERO, |i| observed[i].1.0)
}

/// A decimal as the counter reads it: an integer or a plain decimal, as
/// Redis's string2ld reads INCRBYFLOAT's operand (exponents included).
pub fn parse_decimal(bytes: &[u8]) -> Option<Decimal> {
    if bytes.is_empty() || bytes.len() > 64 {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    if text.contains(['e', 'E']) {
        Decimal::from_scientific(text).ok()
    } else {
        Decimal::from_str_exact(text).ok()
    }
}

/// Redis's number formats: an integer as itself, a fraction with at most
/// 17 decimals and no trailing zeros (INCRBYFLOAT's human-friendly form).
pub fn format_decimal(d: Decimal) -> String {
    let d = d.round_dp(17).normalize();
    if d.is_zero() {
        "0".into()
    } else {
        d.to_string()
    }
}
