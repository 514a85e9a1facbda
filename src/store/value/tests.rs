//! The merge laws, as property tests: replicas of one key take local
//! writes (the commands' own operations), exchange their deltas in any
//! order, with duplicates, and full states in small chunks; once
//! everything is delivered they hold the same contents and digest, and a
//! counter holds exactly the increments its winning reset had not seen.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rust_decimal::Decimal;

use super::*;

const REPLICAS: usize = 3;

#[derive(Debug, Clone)]
enum Op {
    HSet(u8, u8),
    HDel(u8),
    HIncr(u8, i8),
    SAdd(u8),
    SRem(u8),
    Incr(i8),
    /// SET of the key's string (replaces whatever the key holds).
    Set(u8),
    Del,
    /// Hands the oldest undelivered delta to a replica (the index picks it).
    Deliver(proptest::sample::Index),
    /// Hands a delivered one again.
    Duplicate(proptest::sample::Index),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..4, 0u8..3).prop_map(|(f, v)| Op::HSet(f, v)),
        (0u8..4).prop_map(Op::HDel),
        (0u8..4, -3i8..4).prop_map(|(f, by)| Op::HIncr(f, by)),
        (0u8..4).prop_map(Op::SAdd),
        (0u8..4).prop_map(Op::SRem),
        (-3i8..4).prop_map(Op::Incr),
        (0u8..3).prop_map(Op::Set),
        Just(Op::Del),
        any::<proptest::sample::Index>().prop_map(Op::Deliver),
        any::<proptest::sample::Index>().prop_map(Op::Deliver),
        any::<proptest::sample::Index>().prop_map(Op::Duplicate),
    ]
}

struct Replica {
    value: Typed,
    hlc: u64,
    node: u64,
    /// Ids of the string increments this replica has seen (for the
    /// counter model), and the newest reset it knows of.
    seen: BTreeSet<usize>,
    winner: Option<usize>,
    /// The ids of this replica's own increments.
    own: BTreeSet<usize>,
}

/// A delta in flight: who made it, its bytes, and the increments its
/// sender had seen when it was made (what delivering it tells the
/// receiver about).
#[derive(Clone)]
struct Sent {
    from: usize,
    fragment: Fragment,
    seen: BTreeSet<usize>,
    winner: Option<usize>,
}

/// The string counter's model: every increment, and every reset (a SET,
/// a DEL at a replica holding the counter, or the first INCR of a missing
/// key, which writes the base 0): its version, its base (None for a DEL)
/// and the increments it reset. A DEL at a replica that never held the
/// counter resets nothing (it saw nothing): it only hides an older base.
#[derive(Default)]
struct Model {
    increments: Vec<i64>,
    resets: Vec<(Version, Option<i64>, BTreeSet<usize>)>,
    clears: Vec<Version>,
}

impl Model {
    fn newer(&self, a: Option<usize>, b: Option<usize>) -> Option<usize> {
        match (a, b) {
            (Some(x), Some(y)) => Some(if self.resets[x].0 >= self.resets[y].0 {
                x
            } else {
                y
            }),
            (x, None) => x,
            (None, y) => y,
        }
    }

    fn reset(
        &mut self,
        rep: &mut Replica,
        version: Version,
        base: Option<i64>,
        observed: BTreeSet<usize>,
    ) {
        self.resets.push((version, base, observed));
        rep.winner = self.newer(rep.winner, Some(self.resets.len() - 1));
    }
}

struct Sim {
    replicas: Vec<Replica>,
    queue: Vec<(Sent, usize)>,
    delivered: Vec<(Sent, usize)>,
    model: Model,
    /// Whether the key ever held another type than a counter (the model
    /// only checks a pure counter).
    mixed: bool,
}

impl Sim {
    fn new() -> Self {
        let replicas = (0..REPLICAS)
            .map(|i| Replica {
                value: Typed::default(),
                hlc: 0,
                node: i as u64 + 1,
                seen: BTreeSet::new(),
                winner: None,
                own: BTreeSet::new(),
            })
            .collect();
        Sim {
            replicas,
            queue: Vec::new(),
            delivered: Vec::new(),
            model: Model::default(),
            mixed: false,
        }
    }

    fn tick(&mut self, r: usize) -> Version {
        let rep = &mut self.replicas[r];
        rep.hlc += 1;
        Version {
            hlc: rep.hlc,
            node_id: rep.node,
        }
    }

    fn local(&mut self, r: usize, op: &Op) {
        let version = self.tick(r);
        let kind = self.replicas[r].value.kind();
        let node = self.replicas[r].node;
        let rep = &mut self.replicas[r];
        let v = &mut rep.value;
        let mut delta = v.delta();
        let now = 0;
        let wrong = |want: Kind| kind.is_some_and(|k| k != want);
        let mut only_own = false;
        match *op {
            Op::HSet(f, x) if !wrong(Kind::Hash) => {
                v.hash_set(&[f], &[x], version, now, &mut delta);
                self.mixed = true;
            }
            Op::HDel(f) if !wrong(Kind::Hash) => {
                v.hash_del(&[f], version, now, &mut delta);
            }
            Op::HIncr(f, by) if !wrong(Kind::Hash) => {
                let current = v.hash_field(&[f]).map(|c| c.into_owned());
                if current.is_some_and(|c| register::parse_decimal(&c).is_none()) {
                    return;
                }
                v.hash_incr(&[f], Decimal::from(by), node, version, now, &mut delta);
                self.mixed = true;
            }
            Op::SAdd(m) if !wrong(Kind::Set) => {
                v.set_add(&[m], version, now, &mut delta);
                self.mixed = true;
            }
            Op::SRem(m) if !wrong(Kind::Set) => {
                v.set_rem(&[m], version, now, &mut delta);
            }
            Op::Incr(by) if !wrong(Kind::String) => {
                let current = v.string_value().map(|c| c.into_owned());
                if current.is_some_and(|c| register::parse_decimal(&c).is_none()) {
                    return;
                }
                v.string_incr(Decimal::from(by), node, version, &mut delta);
                if kind.is_none() {
                    // The base 0 this INCR writes resets every increment
                    // the replica has seen, as a SET 0 would: none of them
                    // is visible here (the key does not exist).
                    let seen = rep.seen.clone();
                    self.model.reset(rep, version, Some(0), seen);
                }
                let id = self.model.increments.len();
                self.model.increments.push(i64::from(by));
                rep.seen.insert(id);
                rep.own.insert(id);
                // An increment of an existing counter sends this node's
                // contribution alone: all it tells is this node's own
                // increments (and, sent with it, the reset it knows).
                if kind.is_some() {
                    only_own = true;
                }
            }
            Op::Set(x) => {
                delta = v.clear_local(version, now);
                let mut reg = v
                    .string
                    .take()
                    .unwrap_or_else(|| Box::new(Register::new(version, None)));
                reg.overwrite(version, Some(x.to_string().as_bytes()));
                v.string = Some(reg.clone());
                v.expiry_version = version;
                delta.string = Some(reg.into_form());
                delta.expiry_version = version;
                let seen = rep.seen.clone();
                self.model.reset(rep, version, Some(i64::from(x)), seen);
            }
            Op::Del if kind.is_some() => {
                let holds_counter = v.string.as_ref().is_some_and(|r| r.counter.is_some());
                delta = v.clear_local(version, now);
                if holds_counter {
                    let seen = rep.seen.clone();
                    self.model.reset(rep, version, None, seen);
                } else {
                    self.model.clears.push(version);
                }
            }
            _ => return,
        }
        let sent = Sent {
            from: r,
            fragment: delta,
            seen: if only_own {
                rep.own.clone()
            } else {
                rep.seen.clone()
            },
            winner: if only_own { None } else { rep.winner },
        };
        for to in 0..REPLICAS {
            if to != r {
                self.queue.push((sent.clone(), to));
            }
        }
    }

    fn receive(&mut self, sent: &Sent, to: usize) {
        let rep = &mut self.replicas[to];
        // Through the wire encoding, as a peer would send it.
        let fragment = Fragment::decode(&sent.fragment.encode()).expect("own fragments decode");
        rep.value.merge(&fragment, 0);
        rep.hlc = rep.hlc.max(fragment.newest().hlc);
        rep.seen.extend(sent.seen.iter().copied());
        rep.winner = self.model.newer(rep.winner, sent.winner);
        let _ = sent.from;
    }

    fn deliver(&mut self, i: usize) {
        let (sent, to) = self.queue.remove(i);
        self.receive(&sent, to);
        self.delivered.push((sent, to));
    }

    /// Everything delivered, then every pair exchanges full states in
    /// chunks of two elements.
    fn quiesce(&mut self) {
        while !self.queue.is_empty() {
            self.deliver(0);
        }
        for a in 0..REPLICAS {
            for b in 0..REPLICAS {
                if a == b {
                    continue;
                }
                for fragment in self.replicas[a].value.fragments(2, 0) {
                    let sent = Sent {
                        from: a,
                        fragment,
                        seen: self.replicas[a].seen.clone(),
                        winner: self.replicas[a].winner,
                    };
                    self.receive(&sent, b);
                }
            }
        }
    }

    fn run(&mut self, ops: &[(usize, Op)]) {
        for (r, op) in ops {
            match op {
                Op::Deliver(i) if !self.queue.is_empty() => {
                    let i = i.index(self.queue.len());
                    self.deliver(i);
                }
                Op::Duplicate(i) if !self.delivered.is_empty() => {
                    let (sent, to) = self.delivered[i.index(self.delivered.len())].clone();
                    self.receive(&sent, to);
                }
                Op::Deliver(_) | Op::Duplicate(_) => {}
                op => self.local(*r, op),
            }
        }
        self.quiesce();
    }
}

/// What a client sees: the type, the string, the elements sorted.
type Visible = (Option<Kind>, Option<Vec<u8>>, Vec<(Vec<u8>, Vec<u8>)>);

fn visible(t: &Typed) -> Visible {
    let mut elements: Vec<(Vec<u8>, Vec<u8>)> = [&t.hash, &t.set]
        .into_iter()
        .flatten()
        .flat_map(|e| e.iter())
        .map(|(k, r)| {
            (
                k.to_vec(),
                r.read().map(|c| c.into_owned()).unwrap_or_default(),
            )
        })
        .collect();
    elements.sort();
    (t.kind(), t.string_value().map(|c| c.into_owned()), elements)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn replicas_converge_whatever_the_order_and_duplication(
        ops in proptest::collection::vec((0..REPLICAS, op()), 1..60),
    ) {
        let mut sim = Sim::new();
        sim.run(&ops);
        let first = &sim.replicas[0].value;
        for rep in &sim.replicas[1..] {
            prop_assert_eq!(rep.value.digest(), first.digest());
            prop_assert_eq!(visible(&rep.value), visible(first));
            prop_assert_eq!(rep.value.visible_digest(), first.visible_digest());
        }
    }

    #[test]
    fn a_counter_keeps_exactly_the_increments_its_reset_had_not_seen(
        ops in proptest::collection::vec((0..REPLICAS, prop_oneof![
            (-3i8..4).prop_map(Op::Incr),
            (-3i8..4).prop_map(Op::Incr),
            (0u8..3).prop_map(Op::Set),
            Just(Op::Del),
            any::<proptest::sample::Index>().prop_map(Op::Deliver),
            any::<proptest::sample::Index>().prop_map(Op::Deliver),
            any::<proptest::sample::Index>().prop_map(Op::Duplicate),
        ]), 1..60),
    ) {
        let mut sim = Sim::new();
        sim.run(&ops);
        prop_assume!(!sim.mixed);
        let winner = sim.model.resets.iter().max_by_key(|r| r.0);
        let cleared = sim.model.clears.iter().max().copied().unwrap_or_default();
        let expected = winner.and_then(|(version, base, observed)| {
            let base = base.filter(|_| *version > cleared);
            let unseen: i64 = sim.model.increments.iter().enumerate()
                .filter(|(id, _)| !observed.contains(id))
                .map(|(_, by)| by)
                .sum();
            match base {
                Some(base) => Some((base + unseen).to_string()),
                None if unseen != 0 => Some(unseen.to_string()),
                None => None,
            }
        });
        for rep in &sim.replicas {
            let got = rep.value.string_value().map(|c| String::from_utf8(c.into_owned()).unwrap());
            prop_assert_eq!(&got, &expected);
        }
    }
}

#[test]
fn a_hash_field_written_after_a_concurrent_delete_survives_it() {
    let v = |hlc, node_id| Version { hlc, node_id };
    let mut a = Typed::default();
    let mut d = a.delta();
    a.hash_set(b"f", b"1", v(1, 1), 0, &mut d);
    let created = d.clone();
    let mut b = Typed::default();
    b.merge(&created, 0);
    // A deletes at 3; B, not having seen it, writes g at 4.
    let del = a.clear_local(v(3, 1), 0);
    let mut d = b.delta();
    b.hash_set(b"g", b"2", v(4, 2), 0, &mut d);
    a.merge(&d, 0);
    b.merge(&del, 0);
    assert_eq!(a.digest(), b.digest());
    assert_eq!(visible(&a), visible(&b));
    assert_eq!(visible(&a).2, vec![(b"g".to_vec(), b"2".to_vec())]);
}

#[test]
fn concurrent_increments_all_count_and_a_set_resets_only_what_it_saw() {
    let v = |hlc, node_id| Version { hlc, node_id };
    let (mut a, mut b) = (Typed::default(), Typed::default());
    let mut da = a.delta();
    a.string_incr(Decimal::from(5), 1, v(1, 1), &mut da);
    let mut db = b.delta();
    b.string_incr(Decimal::from(3), 2, v(1, 2), &mut db);
    a.merge(&db, 0);
    b.merge(&da, 0);
    assert_eq!(a.string_value().as_deref(), Some(&b"8"[..]));
    assert_eq!(b.string_value().as_deref(), Some(&b"8"[..]));
    // A sets 100 having seen both; B increments again concurrently.
    let mut set = a.clear_local(v(5, 1), 0);
    let mut reg = a.string.take().unwrap();
    reg.overwrite(v(5, 1), Some(b"100"));
    a.string = Some(reg.clone());
    set.string = Some(reg.into_form());
    let mut db = b.delta();
    b.string_incr(Decimal::from(1), 2, v(4, 2), &mut db);
    a.merge(&db, 0);
    b.merge(&set, 0);
    assert_eq!(a.string_value().as_deref(), Some(&b"101"[..]));
    assert_eq!(a.digest(), b.digest());
}

#[test]
fn fragments_refuse_malformed_counters_and_garbage() {
    assert!(Fragment::decode(&[0xff; 7]).is_err());
    let mut f = Fragment::default();
    let mut r = Register::new(Version::default(), Some(b"1"));
    r.counter = Some(Box::new(CounterParts {
        contributions: smallvec::smallvec![
            (2, Amount(Decimal::ONE), Version::default()),
            (1, Amount(Decimal::ONE), Version::default()),
        ],
        observed: vec![],
    }));
    f.string = Some(r.into_form());
    assert_eq!(Fragment::decode(&f.encode()), Err(FragmentError::Malformed));
    // A scale no decimal has.
    let mut bytes = Fragment::default().encode().into_vec();
    bytes.clear();
    assert!(Fragment::decode(&bytes).is_err());
}
