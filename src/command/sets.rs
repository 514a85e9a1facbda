//! Set commands: SADD … SSCAN, with Redis 7's replies and errors; every
//! write goes through `KeyAccess::write_typed` and replicates its delta.
//!
//! Multi-key commands lock all their keys at once (`Store::with_keys`),
//! but a `MultiAccess` lends one key at a time, so a set is never probed
//! while another is being walked: members are copied out in bounded chunks
//! ([`Members`], one buffer per chunk) and filtered key by key.

use std::hash::BuildHasher;

use hashbrown::HashTable;

use super::{Args, CmdError, CmdResult, Ctx};
use crate::clock::Version;
use crate::resp::parse_i64;
use crate::store::value::{Elements, Fragment, Typed};
use crate::store::{KeyAccess, Kind, MultiAccess, NO_EXPIRY};

use super::CommandSpec;
use super::element_scan;
use super::spec::spec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("sadd", -3, sadd, [Write, Denyoom, Fast], (1, 1, 1), "set", "1.0.0", "key member...", "Adds one or more members to a set."),
    spec!("srem", -3, srem, [Write, Fast], (1, 1, 1), "set", "1.0.0", "key member...", "Removes one or more members from a set."),
    spec!("smembers", 2, smembers, [Readonly], (1, 1, 1), "set", "1.0.0", "key", "Returns all members of a set."),
    spec!("sismember", 3, sismember, [Readonly, Fast], (1, 1, 1), "set", "1.0.0", "key member", "Determines whether a member belongs to a set."),
    spec!("smismember", -3, smismember, [Readonly, Fast], (1, 1, 1), "set", "6.2.0", "key member...", "Determines whether multiple members belong to a set."),
    spec!("scard", 2, scard, [Readonly, Fast], (1, 1, 1), "set", "1.0.0", "key", "Returns the number of members in a set."),
    spec!("spop", -2, spop, [Write, Fast], (1, 1, 1), "set", "1.0.0", "key [count]", "Returns one or more random members from a set after removing them."),
    spec!("srandmember", -2, srandmember, [Readonly], (1, 1, 1), "set", "1.0.0", "key [count]", "Returns one or more random members from a set."),
    spec!("smove", 4, smove, [Write, Fast], (1, 2, 1), "set", "1.0.0", "source destination member", "Moves a member from one set to another."),
    spec!("sinter", -2, sinter, [Readonly], (1, -1, 1), "set", "1.0.0", "key...", "Returns the intersect of multiple sets."),
    spec!("sintercard", -3, sintercard, [Readonly], (0, 0, 0), "set", "7.0.0", "numkeys key... [LIMIT limit]", "Returns the number of members of the intersect of multiple sets."),
    spec!("sinterstore", -3, sinterstore, [Write, Denyoom], (1, -1, 1), "set", "1.0.0", "destination key...", "Stores the intersect of multiple sets in a key."),
    spec!("sunion", -2, sunion, [Readonly], (1, -1, 1), "set", "1.0.0", "key...", "Returns the union of multiple sets."),
    spec!("sunionstore", -3, sunionstore, [Write, Denyoom], (1, -1, 1), "set", "1.0.0", "destination key...", "Stores the union of multiple sets in a key."),
    spec!("sdiff", -2, sdiff, [Readonly], (1, -1, 1), "set", "1.0.0", "key...", "Returns the difference of multiple sets."),
    spec!("sdiffstore", -3, sdiffstore, [Write, Denyoom], (1, -1, 1), "set", "1.0.0", "destination key...", "Stores the difference of multiple sets in a key."),
    spec!("sscan", -3, sscan, [Readonly], (1, 1, 1), "set", "2.0.0", "key cursor [MATCH pattern] [COUNT count]", "Iterates over members of a set."),
];

/// Members copied out of a set per step of a multi-key walk: bounds the
/// memory a big SINTER/SDIFF holds beyond its result.
const CHUNK: usize = 1024;

/// The key's members; None when the key is missing. WRONGTYPE for another
/// type, checked before anything is written.
fn members<'k>(k: &'k KeyAccess<'_>) -> Result<Option<&'k Elements>, CmdError> {
    k.expect(Kind::Set).map_err(|_| CmdError::WRONG_TYPE)?;
    Ok(k.typed()
        .and_then(|t| t.set.as_ref())
        .filter(|s| !s.is_empty()))
}

/// The key's members without the type check: for keys a command already
/// checked (finding the type walks every member's version, see the
/// report on `Typed::kind`), so a chunked walk does not repeat it.
fn checked<'k>(k: &'k KeyAccess<'_>) -> Option<&'k Elements> {
    k.typed()
        .and_then(|t| t.set.as_ref())
        .filter(|s| !s.is_empty())
}

fn card(k: &KeyAccess<'_>) -> Result<usize, CmdError> {
    Ok(members(k)?.map_or(0, Elements::len))
}

fn contains(k: &KeyAccess<'_>, member: &[u8]) -> bool {
    k.typed().is_some_and(|t| t.set_contains(member))
}

/// Set members packed into one buffer (no allocation per member).
#[derive(Default)]
struct Members {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Members {
    fn len(&self) -> usize {
        self.ends.len()
    }

    fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }

    fn push(&mut self, member: &[u8]) {
        self.bytes.extend_from_slice(member);
        self.ends.push(self.bytes.len());
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Keeps the members `keep` accepts, compacting in place.
    fn retain(&mut self, mut keep: impl FnMut(&[u8]) -> bool) {
        let (mut read, mut write) = (0, 0);
        let mut kept = 0;
        for i in 0..self.ends.len() {
            let end = self.ends[i];
            if keep(&self.bytes[read..end]) {
                self.bytes.copy_within(read..end, write);
                write += end - read;
                self.ends[kept] = write;
                kept += 1;
            }
            read = end;
        }
        self.bytes.truncate(write);
        self.ends.truncate(kept);
    }
}

/// [`Members`] without repeats, for unions.
#[derive(Default)]
struct Distinct {
    members: Members,
    index: HashTable<usize>,
    hasher: foldhash::fast::RandomState,
}

impl Distinct {
    fn insert(&mut self, member: &[u8]) {
        let Self {
            members,
            index,
            hasher,
        } = self;
        let hash = hasher.hash_one(member);
        if index.find(hash, |&i| members.get(i) == member).is_none() {
            members.push(member);
            index.insert_unique(hash, members.len() - 1, |&i| {
                hasher.hash_one(members.get(i))
            });
        }
    }
}

pub fn sadd(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let added = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        members(k)?;
        Ok(k.write_typed(|value, version, now_ms| {
            let mut delta = value.delta();
            let added = args
                .iter()
                .skip(2)
                .filter(|m| value.set_add(m, version, now_ms, &mut delta))
                .count();
            (added, (added > 0).then_some(delta))
        }))
    })?;
    ctx.reply.int(added as i64);
    Ok(())
}

/// Removes `gone` (members the caller saw in the set) as one write.
fn remove<'m>(k: &mut KeyAccess<'_>, gone: impl Iterator<Item = &'m [u8]>) -> usize {
    k.write_typed(|value, version, now_ms| remove_members(value, version, now_ms, gone))
}

fn remove_members<'m>(
    value: &mut Typed,
    version: Version,
    now_ms: u64,
    gone: impl Iterator<Item = &'m [u8]>,
) -> (usize, Option<Fragment>) {
    let mut delta = value.delta();
    let removed = gone
        .filter(|m| value.set_rem(m, version, now_ms, &mut delta))
        .count();
    (removed, (removed > 0).then_some(delta))
}

pub fn srem(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let removed = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        if members(k)?.is_none() {
            return Ok(0);
        }
        Ok(remove(k, args.iter().skip(2)))
    })?;
    ctx.reply.int(removed as i64);
    Ok(())
}

pub fn smembers(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let set = members(k)?;
        reply.set(set.map_or(0, Elements::len));
        for (m, _) in set.into_iter().flat_map(Elements::iter) {
            reply.bulk(m);
        }
        Ok(())
    })
}

pub fn sismember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let found = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        Ok::<_, CmdError>(members(k)?.is_some_and(|s| s.get(args.get(2)).is_some()))
    })?;
    ctx.reply.int(i64::from(found));
    Ok(())
}

pub fn smismember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let set = members(k)?;
        reply.array(args.len() - 2);
        for m in args.iter().skip(2) {
            reply.int(i64::from(set.is_some_and(|s| s.get(m).is_some())));
        }
        Ok(())
    })
}

pub fn scard(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let n = ctx
        .services
        .store
        .with_key(args.get(1), ctx.now_ms, |k| card(k))?;
    ctx.reply.int(n as i64);
    Ok(())
}

fn pick(set: &Elements) -> Option<&[u8]> {
    set.get_index(fastrand::usize(..set.len())).map(|(m, _)| m)
}

/// `k` distinct indexes below `n` (k < n), in random order, in O(k): a
/// partial Fisher–Yates when k is a large part of n, else Floyd's
/// sampling (each step one pick, never a retry loop).
fn sample(n: usize, k: usize) -> Vec<usize> {
    if k * 2 >= n {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            all.swap(i, fastrand::usize(i..n));
        }
        all.truncate(k);
        return all;
    }
    let mut chosen = std::collections::HashSet::with_capacity(k);
    let mut out = Vec::with_capacity(k);
    for j in n - k..n {
        let t = fastrand::usize(..=j);
        let pick = if chosen.insert(t) { t } else { j };
        chosen.insert(pick);
        out.push(pick);
    }
    fastrand::shuffle(&mut out);
    out
}

const NOT_POSITIVE: CmdError = CmdError::fixed("ERR value is out of range, must be positive");

/// SPOP removes what it returns as an SREM at this node: two nodes popping
/// one set at the same time may both return the same member (each removes
/// it; the removals merge), which a single Redis never does.
pub fn spop(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(CmdError::SYNTAX);
    }
    let count = match args.len() {
        3 => Some(
            parse_i64(args.get(2))
                .filter(|&n| n >= 0)
                .ok_or(NOT_POSITIVE)? as usize,
        ),
        _ => None,
    };
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let set = members(k)?;
        let Some(count) = count else {
            let Some(set) = set else {
                reply.null();
                return Ok(());
            };
            let member = pick(set).expect("set is not empty").to_vec();
            reply.bulk(&member);
            remove(k, std::iter::once(&member[..]));
            return Ok(());
        };
        let Some(set) = set.filter(|_| count > 0) else {
            reply.set(0);
            return Ok(());
        };
        // Removed from the last index down: each removal is then the
        // cheap end of a swap_remove, and memory is walked in order.
        let mut picks = if count >= set.len() {
            (0..set.len()).collect()
        } else {
            sample(set.len(), count)
        };
        picks.sort_unstable_by(|a, b| b.cmp(a));
        let mut popped = Members::default();
        for i in picks {
            popped.push(set.get_index(i).expect("index below len").0);
        }
        reply.set(popped.len());
        for m in popped.iter() {
            reply.bulk(m);
        }
        remove(k, popped.iter());
        Ok(())
    })
}

pub fn srandmember(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() > 3 {
        return Err(CmdError::SYNTAX);
    }
    let count = match args.len() {
        3 => {
            let n = args.int(2)?;
            if n == i64::MIN {
                return Err(CmdError::fixed(
                    "ERR value is out of range, value must between \
                     -9223372036854775807 and 9223372036854775807",
                ));
            }
            Some(n)
        }
        _ => None,
    };
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let set = members(k)?;
        let Some(count) = count else {
            match set.and_then(pick) {
                Some(m) => reply.bulk(m),
                None => reply.null(),
            }
            return Ok(());
        };
        let Some(set) = set.filter(|_| count != 0) else {
            reply.array(0);
            return Ok(());
        };
        if count < 0 {
            // Repeats allowed: each pick is independent, O(1).
            reply.array(count.unsigned_abs() as usize);
            for _ in 0..count.unsigned_abs() {
                // A client past its output limit is closed: stop feeding it.
                if reply.over_limit() {
                    break;
                }
                reply.bulk(pick(set).expect("set is not empty"));
            }
        } else if count as u64 >= set.len() as u64 {
            reply.array(set.len());
            for (m, _) in set.iter() {
                reply.bulk(m);
            }
        } else {
            let picks = sample(set.len(), count as usize);
            reply.array(picks.len());
            for i in picks {
                reply.bulk(set.get_index(i).expect("index below len").0);
            }
        }
        Ok(())
    })
}

pub fn smove(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (src, dst, member) = (args.get(1), args.get(2), args.get(3));
    let moved = ctx.services.store.with_keys(&[src, dst], ctx.now_ms, |m| {
        // Redis answers 0 for a missing source before looking at the
        // destination's type.
        if !m.key(src).exists() {
            return Ok(false);
        }
        members(&m.key(src))?;
        members(&m.key(dst))?;
        if !contains(&m.key(src), member) {
            return Ok(false);
        }
        if src == dst {
            return Ok(true);
        }
        // One version for both halves, as RENAME.
        let version = m.tick_n(1);
        m.key(src)
            .write_typed_at(version, |value, version, now_ms| {
                remove_members(value, version, now_ms, std::iter::once(member))
            });
        m.key(dst)
            .write_typed_at(version, |value, version, now_ms| {
                let mut delta = value.delta();
                let added = value.set_add(member, version, now_ms, &mut delta);
                ((), added.then_some(delta))
            });
        Ok(true)
    })?;
    ctx.reply.int(i64::from(moved));
    Ok(())
}

/// Cardinalities of `keys`, every type checked first: Redis reports
/// WRONGTYPE even after a missing key.
fn cards(m: &mut MultiAccess<'_>, keys: &[&[u8]]) -> Result<Vec<usize>, CmdError> {
    keys.iter().map(|key| card(&m.key(key))).collect()
}

/// The members of `base` that are in every one of `others` (`inter`) or
/// in none of them (a difference), walked a chunk at a time; stops once
/// `limit` are found. With `count_only` they are counted, not kept.
fn filter(
    m: &mut MultiAccess<'_>,
    base: &[u8],
    others: &[&[u8]],
    inter: bool,
    limit: usize,
    count_only: bool,
) -> (usize, Members) {
    let len = checked(&m.key(base)).map_or(0, Elements::len);
    let (mut found, mut out, mut chunk) = (0, Members::default(), Members::default());
    let mut start = 0;
    while start < len && found < limit {
        chunk.clear();
        if let Some(set) = checked(&m.key(base)) {
            for i in start..(start + CHUNK).min(set.len()) {
                chunk.push(set.get_index(i).expect("index below len").0);
            }
        }
        for other in others {
            if chunk.is_empty() {
                break;
            }
            let k = m.key(other);
            chunk.retain(|x| contains(&k, x) == inter);
        }
        let take = chunk.len().min(limit - found);
        found += take;
        if !count_only {
            for x in chunk.iter().take(take) {
                out.push(x);
            }
        }
        start += CHUNK;
    }
    (found, out)
}

/// SINTER's members: the smallest set walked, the others probed.
fn intersection(
    m: &mut MultiAccess<'_>,
    keys: &[&[u8]],
    limit: usize,
    count_only: bool,
) -> Result<(usize, Members), CmdError> {
    let cards = cards(m, keys)?;
    let Some((smallest, _)) = cards
        .iter()
        .enumerate()
        .min_by_key(|(_, n)| **n)
        .filter(|(_, n)| **n > 0)
    else {
        return Ok((0, Members::default()));
    };
    let others: Vec<&[u8]> = (0..keys.len())
        .filter(|&i| i != smallest)
        .map(|i| keys[i])
        .collect();
    Ok(filter(m, keys[smallest], &others, true, limit, count_only))
}

fn difference(m: &mut MultiAccess<'_>, keys: &[&[u8]]) -> Result<Members, CmdError> {
    cards(m, keys)?;
    Ok(filter(m, keys[0], &keys[1..], false, usize::MAX, false).1)
}

/// The distinct members of every key but `skip`.
fn union(m: &mut MultiAccess<'_>, keys: &[&[u8]], skip: Option<usize>) -> Members {
    let mut all = Distinct::default();
    for (i, key) in keys.iter().enumerate() {
        if Some(i) == skip || skip.is_some_and(|s| keys[s] == *key) {
            continue;
        }
        if let Some(set) = checked(&m.key(key)) {
            for (x, _) in set.iter() {
                all.insert(x);
            }
        }
    }
    all.members
}

fn reply_members(ctx: &mut Ctx<'_>, members: &Members) {
    ctx.reply.set(members.len());
    for m in members.iter() {
        ctx.reply.bulk(m);
    }
}

/// Source keys of a multi-set read (`from` on).
fn keys_from<'a>(args: &Args<'a>, from: usize) -> Vec<&'a [u8]> {
    args.iter().skip(from).collect()
}

pub fn sinter(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() == 2 {
        return smembers(ctx, args);
    }
    let keys = keys_from(args, 1);
    let (_, result) = ctx.services.store.with_keys(&keys, ctx.now_ms, |m| {
        intersection(m, &keys, usize::MAX, false)
    })?;
    reply_members(ctx, &result);
    Ok(())
}

pub fn sintercard(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let numkeys = parse_i64(args.get(1))
        .filter(|&n| n > 0)
        .ok_or(CmdError::fixed("ERR numkeys should be greater than 0"))?;
    if numkeys as u64 > (args.len() - 2) as u64 {
        return Err(CmdError::fixed(
            "ERR Number of keys can't be greater than number of args",
        ));
    }
    let numkeys = numkeys as usize;
    let mut limit = 0;
    let mut i = 2 + numkeys;
    while i < args.len() {
        if args.is(i, "LIMIT") && i + 1 < args.len() {
            limit = parse_i64(args.get(i + 1))
                .filter(|&n| n >= 0)
                .ok_or(CmdError::fixed("ERR LIMIT can't be negative"))?;
            i += 2;
        } else {
            return Err(CmdError::SYNTAX);
        }
    }
    let limit = if limit == 0 {
        usize::MAX
    } else {
        usize::try_from(limit).unwrap_or(usize::MAX)
    };
    let keys: Vec<&[u8]> = (2..2 + numkeys).map(|i| args.get(i)).collect();
    let (n, _) = ctx
        .services
        .store
        .with_keys(&keys, ctx.now_ms, |m| intersection(m, &keys, limit, true))?;
    ctx.reply.int(n as i64);
    Ok(())
}

pub fn sunion(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = keys_from(args, 1);
    let reply = &mut *ctx.reply;
    ctx.services.store.with_keys(&keys, ctx.now_ms, |m| {
        let cards = cards(m, &keys)?;
        // The largest set is replied from where it is; only the others'
        // members not in it are collected.
        let largest = (0..keys.len()).max_by_key(|&i| cards[i]).unwrap_or(0);
        let mut extra = union(m, &keys, Some(largest));
        let k = m.key(keys[largest]);
        extra.retain(|x| !contains(&k, x));
        let set = checked(&k);
        reply.set(set.map_or(0, Elements::len) + extra.len());
        for (x, _) in set.into_iter().flat_map(Elements::iter) {
            reply.bulk(x);
        }
        for x in extra.iter() {
            reply.bulk(x);
        }
        Ok(())
    })
}

pub fn sdiff(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = keys_from(args, 1);
    let result = ctx
        .services
        .store
        .with_keys(&keys, ctx.now_ms, |m| difference(m, &keys))?;
    reply_members(ctx, &result);
    Ok(())
}

#[derive(Clone, Copy)]
enum Op {
    Inter,
    Union,
    Diff,
}

/// SINTERSTORE, SUNIONSTORE, SDIFFSTORE: the destination is replaced
/// (whatever its type, and without its TTL, as Redis's setKey), or deleted
/// when the result is empty.
fn store(ctx: &mut Ctx<'_>, args: &Args<'_>, op: Op) -> CmdResult {
    let dst = args.get(1);
    let keys = keys_from(args, 1);
    let sources = &keys[1..];
    let stored = ctx.services.store.with_keys(&keys, ctx.now_ms, |m| {
        let result = match op {
            Op::Inter => intersection(m, sources, usize::MAX, false)?.1,
            Op::Union => {
                cards(m, sources)?;
                union(m, sources, None)
            }
            Op::Diff => difference(m, sources)?,
        };
        let mut k = m.key(dst);
        if result.is_empty() {
            k.delete();
            return Ok::<_, CmdError>(0);
        }
        k.write_typed(|value, version, now_ms| {
            let mut delta = value.clear_local(version, now_ms);
            value.expires_at = NO_EXPIRY;
            value.expiry_version = version;
            delta.expires_at = NO_EXPIRY;
            delta.expiry_version = version;
            for x in result.iter() {
                value.set_add(x, version, now_ms, &mut delta);
            }
            ((), Some(delta))
        });
        Ok(result.len())
    })?;
    ctx.reply.int(stored as i64);
    Ok(())
}

pub fn sinterstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    store(ctx, args, Op::Inter)
}

pub fn sunionstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    store(ctx, args, Op::Union)
}

pub fn sdiffstore(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    store(ctx, args, Op::Diff)
}

/// SSCAN walks the members from the last index down to 0; the cursor is
/// how many indexes are left. A removal moves the last member into the
/// hole, so a member is at worst returned twice, never missed; members
/// added meanwhile land past the cursor (SCAN may leave those out).
pub fn sscan(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cursor =
        super::args::parse_cursor(args.get(2)).ok_or(CmdError::fixed("ERR invalid cursor"))?;
    // Redis reads the options only once it found the set.
    let options = element_scan::options(args);
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let Some(set) = members(k)? else {
            reply.array(2);
            reply.bulk(b"0");
            reply.array(0);
            return Ok(());
        };
        let (pattern, count) = options?;
        let (next, found) = element_scan::step(set, cursor, count, pattern.as_ref());
        reply.array(2);
        reply.bulk_int(next as i64);
        reply.bulks(found.into_iter().map(|(m, _)| m));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_like_strtoul() {
        assert_eq!(crate::command::args::parse_cursor(b"0"), Some(0));
        assert_eq!(crate::command::args::parse_cursor(b""), Some(0));
        assert_eq!(crate::command::args::parse_cursor(b"+7"), Some(7));
        assert_eq!(crate::command::args::parse_cursor(b"-1"), Some(u64::MAX));
        assert_eq!(
            crate::command::args::parse_cursor(b"18446744073709551615"),
            Some(u64::MAX)
        );
        assert_eq!(
            crate::command::args::parse_cursor(b"18446744073709551616"),
            None
        );
        assert_eq!(crate::command::args::parse_cursor(b"-"), None);
        assert_eq!(crate::command::args::parse_cursor(b" 1"), None);
        assert_eq!(crate::command::args::parse_cursor(b"1x"), None);
    }

    #[test]
    fn samples_are_distinct_and_in_range() {
        for (n, k) in [(10, 1), (10, 4), (10, 5), (10, 9), (1000, 3), (1000, 999)] {
            let picks = sample(n, k);
            assert_eq!(picks.len(), k);
            let distinct: std::collections::HashSet<_> = picks.iter().collect();
            assert_eq!(distinct.len(), k);
            assert!(picks.iter().all(|&i| i < n));
        }
    }

    #[test]
    fn members_retain_and_dedup() {
        let mut m = Members::default();
        for x in [&b"a"[..], b"bb", b"", b"ccc", b"d"] {
            m.push(x);
        }
        m.retain(|x| x != b"bb" && x != b"d");
        assert_eq!(m.iter().collect::<Vec<_>>(), [&b"a"[..], b"", b"ccc"]);
        let mut d = Distinct::default();
        for x in [&b"x"[..], b"y", b"x", b"", b""] {
            d.insert(x);
        }
        assert_eq!(d.members.iter().collect::<Vec<_>>(), [&b"x"[..], b"y", b""]);
    }
}
