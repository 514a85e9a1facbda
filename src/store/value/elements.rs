//! The elements of a hash (fields) or a set (members), in one of two
//! forms: packed in one buffer while small and plain ([`Packed`]), a hash
//! table beyond ([`Table`]). Both keep removed elements as element
//! tombstones until collected (so a HDEL/SREM does not lose to an older
//! add arriving late) and digest alike, so replicas that hold one value in
//! different forms still agree.

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use rust_decimal::Decimal;

use super::packed::{Packed, Slot};
use super::register::{CounterParts, Register};
use super::table::{Table, apply_clear, mix};
use crate::clock::Version;

/// Redis's `hash-max-listpack-entries` and `-value` (CONFIG SET changes
/// them for values packed from then on), used for sets too: beyond them a
/// linear scan costs more than a table lookup.
static PACKED_MAX_ENTRIES: AtomicUsize = AtomicUsize::new(128);
static PACKED_MAX_VALUE: AtomicUsize = AtomicUsize::new(64);

pub fn set_packed_limits(max_entries: Option<usize>, max_value: Option<usize>) {
    if let Some(n) = max_entries {
        PACKED_MAX_ENTRIES.store(n, Ordering::Relaxed);
    }
    if let Some(n) = max_value {
        PACKED_MAX_VALUE.store(n, Ordering::Relaxed);
    }
}

#[derive(Debug, Clone)]
pub enum Elements {
    Packed(Packed),
    Table(Box<Table>),
}

impl Default for Elements {
    fn default() -> Self {
        Elements::Packed(Packed::default())
    }
}

/// One element's register as either form holds it.
#[derive(Debug, Clone, Copy)]
pub enum Elem<'a> {
    Register(&'a Register),
    Plain {
        version: Version,
        base: Option<&'a [u8]>,
    },
}

impl<'a> Elem<'a> {
    fn of(slot: &Slot<'a>) -> Self {
        Elem::Plain {
            version: slot.version,
            base: slot.base,
        }
    }

    /// The value a reader sees, borrowed when it is the base as written.
    pub fn read(self) -> Option<Cow<'a, [u8]>> {
        match self {
            Elem::Register(r) => r.read(),
            Elem::Plain { base, .. } => base.map(Cow::Borrowed),
        }
    }

    pub fn base(self) -> Option<&'a [u8]> {
        match self {
            Elem::Register(r) => r.base.as_deref(),
            Elem::Plain { base, .. } => base,
        }
    }

    pub fn counter(self) -> Option<&'a CounterParts> {
        match self {
            Elem::Register(r) => r.counter.as_deref(),
            Elem::Plain { .. } => None,
        }
    }

    /// Increments not reset by the base (see [`Register::unobserved`]).
    pub fn unobserved(self) -> Decimal {
        match self {
            Elem::Register(r) => r.unobserved(),
            Elem::Plain { .. } => Decimal::ZERO,
        }
    }

    pub fn newest(self) -> Version {
        match self {
            Elem::Register(r) => r.newest(),
            Elem::Plain { version, .. } => version,
        }
    }

    pub fn to_register(self) -> Register {
        match self {
            Elem::Register(r) => r.clone(),
            Elem::Plain { version, base } => Register::new(version, base),
        }
    }
}

/// Whether `register` of `name` may stay packed in a value that would
/// then hold `count` elements.
fn packable(name: &[u8], register: &Register, count: usize) -> bool {
    let max_value = PACKED_MAX_VALUE.load(Ordering::Relaxed);
    let max_entries = PACKED_MAX_ENTRIES.load(Ordering::Relaxed);
    register.counter.is_none()
        && count <= max_entries.min(super::packed::MAX_ELEMENTS)
        && name.len() <= max_value
        && register.base.as_ref().is_none_or(|b| b.len() <= max_value)
}

impl Elements {
    /// Live elements.
    pub fn len(&self) -> usize {
        match self {
            Elements::Packed(p) => p.live(),
            Elements::Table(t) => t.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Elements::Packed(p) => p.live() == 0,
            Elements::Table(t) => t.is_empty(),
        }
    }

    pub fn removed_len(&self) -> usize {
        match self {
            Elements::Packed(p) => p.removed(),
            Elements::Table(t) => t.removed_len(),
        }
    }

    /// Whether the packed form holds them (OBJECT ENCODING).
    pub fn is_packed(&self) -> bool {
        matches!(self, Elements::Packed(_))
    }

    pub fn digest(&self, salt: u64) -> u64 {
        match self {
            Elements::Packed(p) => mix(p.digest() ^ salt),
            Elements::Table(t) => t.digest(salt),
        }
    }

    pub fn heap_size(&self) -> usize {
        match self {
            Elements::Packed(p) => p.heap_size(),
            Elements::Table(t) => std::mem::size_of::<Table>() + t.heap_size(),
        }
    }

    /// A live element.
    pub fn get(&self, name: &[u8]) -> Option<Elem<'_>> {
        match self {
            Elements::Packed(p) => p
                .find(name)
                .filter(|s| s.base.is_some())
                .map(|s| Elem::of(&s)),
            Elements::Table(t) => t.get(name).map(Elem::Register),
        }
    }

    /// The element `name`, live or removed.
    pub fn register(&self, name: &[u8]) -> Option<Elem<'_>> {
        match self {
            Elements::Packed(p) => p.find(name).map(|s| Elem::of(&s)),
            Elements::Table(t) => t.register(name).map(Elem::Register),
        }
    }

    /// The `i`-th live element (O(1) in a table, a scan when packed).
    pub fn get_index(&self, i: usize) -> Option<(&[u8], Elem<'_>)> {
        match self {
            Elements::Packed(p) => p
                .slots()
                .filter(|s| s.base.is_some())
                .nth(i)
                .map(|s| (s.name, Elem::of(&s))),
            Elements::Table(t) => t.get_index(i).map(|(n, r)| (n, Elem::Register(r))),
        }
    }

    /// Live elements, in order. Either form's own iterator, not a boxed
    /// one: HGETALL of a 1,000,000-field hash calls it per field.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Elem<'_>)> {
        let (packed, table) = match self {
            Elements::Packed(p) => (Some(p.slots().filter(|s| s.base.is_some())), None),
            Elements::Table(t) => (None, Some(t.iter())),
        };
        let packed = packed.into_iter().flatten().map(|s| (s.name, Elem::of(&s)));
        let table = table
            .into_iter()
            .flatten()
            .map(|(n, r)| (n, Elem::Register(r)));
        packed.chain(table)
    }

    /// Every element, removed ones included: (name, register, live).
    pub fn iter_all(&self) -> Box<dyn Iterator<Item = (&[u8], Elem<'_>, bool)> + '_> {
        match self {
            Elements::Packed(p) => {
                Box::new(p.slots().map(|s| (s.name, Elem::of(&s), s.base.is_some())))
            }
            Elements::Table(t) => Box::new(
                t.iter_all()
                    .map(|(n, r, live)| (n, Elem::Register(r), live)),
            ),
        }
    }

    /// The newest version among the elements.
    pub fn newest(&self) -> Version {
        match self {
            Elements::Packed(p) => p.newest(),
            Elements::Table(t) => t.newest(),
        }
    }

    /// The table this value becomes for good: the packed elements move
    /// over in order, removed ones with their arrival.
    fn make_table(&mut self, salt: u64) -> &mut Table {
        if let Elements::Packed(p) = self {
            let mut table = Table::default();
            for s in p.slots() {
                table.put(salt, s.name, s.register(), s.arrival);
            }
            table.settle();
            *self = Elements::Table(Box::new(table));
        }
        match self {
            Elements::Table(t) => t,
            Elements::Packed(_) => unreachable!("converted above"),
        }
    }

    /// Gives `name` the register `new`, packed while it can be.
    fn store(&mut self, salt: u64, name: &[u8], new: Register, now_ms: u64) {
        if let Elements::Packed(p) = self {
            let count = p.count() + usize::from(p.find(name).is_none());
            if packable(name, &new, count)
                && p.put(salt, name, new.version, new.base.as_deref(), now_ms)
                    .is_ok()
            {
                return;
            }
        }
        self.make_table(salt).store(salt, name, new, now_ms);
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
        match self {
            Elements::Table(t) => t.update(salt, name, now_ms, f),
            Elements::Packed(p) => {
                let old = p.find(name).map(|s| s.register());
                if let Some(new) = f(old.as_ref()) {
                    self.store(salt, name, new, now_ms);
                }
            }
        }
    }

    /// Joins a peer's register of `name` under `clear` (bases older than
    /// the key's clear marker are gone). Returns whether anything changed.
    /// One lookup for the read and the write, the old register lent (a
    /// replica applying HSETs of a large hash spent a third of its time in
    /// the lookups, perf).
    pub fn merge(
        &mut self,
        salt: u64,
        name: &[u8],
        theirs: &Register,
        clear: Version,
        now_ms: u64,
    ) -> bool {
        let mut changed = false;
        let mut older_than_clear = false;
        self.update(salt, name, now_ms, |old| {
            // Plain against plain (the common case: replicated HSETs and
            // SADDs) is decided without copying the old register to join
            // it (that copy was 12 % of a replica's time, perf), and a join
            // that changes nothing returns at once. Only an old element no
            // older than the clear marker (clearing removed the others).
            let replaced = old
                .filter(|mine| mine.version >= clear)
                .and_then(|mine| mine.replaced_by(theirs));
            let (mut merged, compare) = match (old, replaced) {
                (_, Some(false)) => return None,
                (_, Some(true)) | (None, None) => (theirs.clone(), None),
                (Some(mine), None) => {
                    let mut joined = mine.clone();
                    joined.merge(theirs);
                    (joined, Some(mine.digest()))
                }
            };
            apply_clear(&mut merged, clear);
            if merged.counter.is_none() && merged.version < clear {
                older_than_clear = true;
                return None;
            }
            if compare == Some(merged.digest()) {
                return None;
            }
            changed = true;
            Some(merged)
        });
        if older_than_clear {
            // Older than the clear marker, which stands for it.
            return match self {
                Elements::Packed(p) => p.take(salt, name).is_some(),
                Elements::Table(t) => {
                    let had = t.take(salt, name).is_some();
                    t.settle();
                    had
                }
            };
        }
        changed
    }

    /// A new clear marker: every base older than `clear` is removed;
    /// removed elements older than it are forgotten (the marker stands for
    /// them), unless they carry counter observations.
    pub fn clear_before(&mut self, salt: u64, clear: Version, now_ms: u64) {
        match self {
            // Nothing packed carries counter parts.
            Elements::Packed(p) => {
                p.retain(salt, |s| s.version >= clear);
            }
            Elements::Table(t) => t.clear_before(salt, clear, now_ms),
        }
    }

    /// Collects element tombstones that arrived before `arrived_before`
    /// and were written before `written_before_ms`; returns how many.
    pub fn collect(&mut self, salt: u64, arrived_before: u64, written_before_ms: u64) -> usize {
        match self {
            Elements::Packed(p) => p.retain(salt, |s| {
                s.base.is_some()
                    || s.arrival >= arrived_before
                    || s.version.millis() >= written_before_ms
            }),
            Elements::Table(t) => t.collect(salt, arrived_before, written_before_ms),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// A local write of a name's base (None: removed).
        Write(u8, u64, u64, Option<u8>),
        /// A peer's register, with an increment when the flag is set.
        Merge(u8, u64, u64, Option<u8>, bool),
        Clear(u64),
        Collect(u64, u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let name = 0u8..8;
        prop_oneof![
            (
                name.clone(),
                1u64..40,
                0u64..3,
                proptest::option::of(0u8..3)
            )
                .prop_map(|(n, h, node, b)| Op::Write(n, h, node, b)),
            (
                name,
                1u64..40,
                0u64..3,
                proptest::option::of(0u8..3),
                proptest::bool::weighted(0.1)
            )
                .prop_map(|(n, h, node, b, c)| Op::Merge(n, h, node, b, c)),
            (1u64..40).prop_map(Op::Clear),
            (0u64..60, 0u64..60).prop_map(|(a, w)| Op::Collect(a, w)),
        ]
    }

    fn contents(e: &Elements) -> Vec<(Vec<u8>, Register, bool)> {
        let mut all: Vec<_> = e
            .iter_all()
            .map(|(n, r, live)| (n.to_vec(), r.to_register(), live))
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn plain_register() -> impl Strategy<Value = Register> {
        (1u64..4, 0u64..2, proptest::option::of(0u8..3)).prop_map(|(hlc, node_id, base)| {
            let base = base.map(|b| vec![b'v', b]);
            Register::new(Version { hlc, node_id }, base.as_deref())
        })
    }

    proptest! {
        /// The shortcut `Elements::merge` takes for plain registers is
        /// what `Register::merge` does; with counter parts there is none.
        #[test]
        fn replaced_by_is_what_merge_does(a in plain_register(), b in plain_register()) {
            let mut joined = a.clone();
            joined.merge(&b);
            match a.replaced_by(&b) {
                Some(true) => prop_assert_eq!(&joined, &b),
                Some(false) => prop_assert_eq!(&joined, &a),
                None => prop_assert!(false, "two plain registers have a shortcut"),
            }
            let mut counter = b.clone();
            counter.increment(b.version.node_id, Decimal::ONE, b.version);
            prop_assert_eq!(a.replaced_by(&counter), None);
            prop_assert_eq!(counter.replaced_by(&a), None);
        }

        /// The packed form and the table hold and digest the same under
        /// any sequence of writes, joins, clears and collections, however
        /// many elements or counters make the packed one a table midway.
        #[test]
        fn both_forms_agree(ops in proptest::collection::vec(op(), 1..60), limit in 1usize..10) {
            set_packed_limits(Some(limit.max(4)), None);
            let mut packed = Elements::default();
            let mut table = Elements::Table(Box::default());
            for (now, op) in ops.iter().enumerate() {
                let now = now as u64;
                for e in [&mut packed, &mut table] {
                    match op {
                        Op::Write(n, hlc, node, base) => {
                            let v = Version { hlc: *hlc, node_id: *node };
                            let base = base.map(|b| vec![b'v', b]);
                            e.update(7, &[*n], now, |_| Some(Register::new(v, base.as_deref())));
                        }
                        Op::Merge(n, hlc, node, base, incr) => {
                            let v = Version { hlc: *hlc, node_id: *node };
                            let base = base.map(|b| vec![b'v', b]);
                            let mut r = Register::new(v, base.as_deref());
                            if *incr {
                                r.increment(*node, Decimal::ONE, v);
                            }
                            e.merge(7, &[*n], &r, Version::default(), now);
                        }
                        Op::Clear(hlc) => e.clear_before(7, Version { hlc: *hlc, node_id: 9 }, now),
                        Op::Collect(a, w) => {
                            e.collect(7, *a, *w);
                        }
                    }
                }
                prop_assert_eq!(contents(&packed), contents(&table));
                prop_assert_eq!(packed.digest(7), table.digest(7));
                prop_assert_eq!(packed.len(), table.len());
                prop_assert_eq!(packed.removed_len(), table.removed_len());
                prop_assert_eq!(packed.newest(), table.newest());
            }
            set_packed_limits(Some(128), None);
        }
    }
}
