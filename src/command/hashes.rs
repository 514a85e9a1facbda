//! Hash commands: HSET … HSCAN, with Redis 7's replies and errors; every
//! write goes through `KeyAccess::write_typed` and replicates its delta.
//!
//! HINCRBY and HINCRBYFLOAT are counter operations (concurrent increments
//! at different nodes all count), computed in exact decimals; everything
//! else is a last-writer-wins write of whole fields.

use std::borrow::Cow;
use std::collections::HashSet;

use indexmap::IndexMap;
use rust_decimal::Decimal;

use super::{Args, CmdError, CmdResult, Ctx};
use crate::clock::Version;
use crate::resp::{Reply, parse_i64};
use crate::store::value::register::{format_decimal, parse_decimal};
use crate::store::value::{Elem, Elements, Fragment, Typed};
use crate::store::{KeyAccess, Kind};

use super::CommandSpec;
use super::element_scan;
use super::spec::spec;
use super::strings::parse_float;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("hset", -4, hset, [Write, Denyoom, Fast], (1, 1, 1), "hash", "2.0.0", "key (field value)...", "Sets fields of a hash; returns how many were new."),
    spec!("hsetnx", 4, hsetnx, [Write, Denyoom, Fast], (1, 1, 1), "hash", "2.0.0", "key field value", "Sets a hash field only if it does not exist."),
    spec!("hmset", -4, hmset, [Write, Denyoom, Fast], (1, 1, 1), "hash", "2.0.0", "key (field value)...", "Sets fields of a hash (deprecated form of HSET)."),
    spec!("hget", 3, hget, [Readonly, Fast], (1, 1, 1), "hash", "2.0.0", "key field", "Returns the value of a hash field."),
    spec!("hmget", -3, hmget, [Readonly, Fast], (1, 1, 1), "hash", "2.0.0", "key field...", "Returns the values of several hash fields."),
    spec!("hgetall", 2, hgetall, [Readonly], (1, 1, 1), "hash", "2.0.0", "key", "Returns every field and value of a hash."),
    spec!("hdel", -3, hdel, [Write, Fast], (1, 1, 1), "hash", "2.0.0", "key field...", "Deletes fields of a hash."),
    spec!("hexists", 3, hexists, [Readonly, Fast], (1, 1, 1), "hash", "2.0.0", "key field", "Tells whether a hash field exists."),
    spec!("hlen", 2, hlen, [Readonly, Fast], (1, 1, 1), "hash", "2.0.0", "key", "Returns the number of fields of a hash."),
    spec!("hstrlen", 3, hstrlen, [Readonly, Fast], (1, 1, 1), "hash", "3.2.0", "key field", "Returns the length of a hash field's value."),
    spec!("hkeys", 2, hkeys, [Readonly], (1, 1, 1), "hash", "2.0.0", "key", "Returns every field of a hash."),
    spec!("hvals", 2, hvals, [Readonly], (1, 1, 1), "hash", "2.0.0", "key", "Returns every value of a hash."),
    spec!("hincrby", 4, hincrby, [Write, Denyoom, Fast], (1, 1, 1), "hash", "2.0.0", "key field increment", "Increments the integer value of a hash field."),
    spec!("hincrbyfloat", 4, hincrbyfloat, [Write, Denyoom, Fast], (1, 1, 1), "hash", "2.6.0", "key field increment", "Increments the floating point value of a hash field."),
    spec!("hrandfield", -2, hrandfield, [Readonly], (1, 1, 1), "hash", "6.2.0", "key [count [WITHVALUES]]", "Returns random fields of a hash."),
    spec!("hscan", -3, hscan, [Readonly], (1, 1, 1), "hash", "2.8.0", "key cursor [MATCH pattern] [COUNT count]", "Iterates over the fields and values of a hash."),
];

/// The hash at the key: None when the key does not exist; WRONGTYPE when
/// it holds another type.
fn hash_of<'k>(k: &'k KeyAccess<'_>) -> Result<Option<&'k Elements>, CmdError> {
    k.expect(Kind::Hash).map_err(|_| CmdError::WRONG_TYPE)?;
    Ok(k.typed()
        .and_then(|t| t.hash.as_ref())
        .filter(|h| !h.is_empty()))
}

/// A live field's value (borrowed unless it is a counter's sum).
fn value_of(r: Elem<'_>) -> Cow<'_, [u8]> {
    r.read().unwrap_or_default()
}

/// Runs `f` on the key's hash (None: no such key), after the type check.
fn read<R>(
    ctx: &mut Ctx<'_>,
    key: &[u8],
    f: impl FnOnce(Option<&Elements>, &mut Reply) -> R,
) -> Result<R, CmdError> {
    let reply = &mut *ctx.reply;
    ctx.services
        .store
        .with_key(key, ctx.now_ms, |k| Ok(f(hash_of(k)?, reply)))
}

/// HSET and HMSET: writes the pairs, returns how many fields were new.
fn set_fields(ctx: &mut Ctx<'_>, args: &Args<'_>, cmd: &str) -> Result<i64, CmdError> {
    if !args.len().is_multiple_of(2) {
        return Err(CmdError::wrong_arity(cmd));
    }
    // A field given twice is written once, with its last value, at its
    // first position (Redis's order): two writes of one element in one
    // delta would carry one version with two values, which replicas
    // could not order. One pair, the common case, needs no map.
    let mut pairs: IndexMap<&[u8], &[u8], foldhash::fast::RandomState> = IndexMap::default();
    if args.len() > 4 {
        pairs.reserve(args.len() / 2 - 1);
        for i in (2..args.len()).step_by(2) {
            pairs.insert(args.get(i), args.get(i + 1));
        }
    }
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        hash_of(k)?;
        Ok(k.write_typed(|value, version, now_ms| {
            let mut delta = value.delta();
            let mut added = 0;
            let mut put = |field: &[u8], v: &[u8]| {
                added += i64::from(value.hash_set(field, v, version, now_ms, &mut delta));
            };
            if pairs.is_empty() {
                put(args.get(2), args.get(3));
            }
            for (field, v) in &pairs {
                put(field, v);
            }
            (added, Some(delta))
        }))
    })
}

pub fn hset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let added = set_fields(ctx, args, "hset")?;
    ctx.reply.int(added);
    Ok(())
}

pub fn hmset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    set_fields(ctx, args, "hmset")?;
    ctx.reply.ok();
    Ok(())
}

pub fn hsetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (field, v) = (args.get(2), args.get(3));
    let created = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        if hash_of(k)?.is_some_and(|h| h.get(field).is_some()) {
            return Ok(false);
        }
        Ok(k.write_typed(|value, version, now_ms| {
            let mut delta = value.delta();
            value.hash_set(field, v, version, now_ms, &mut delta);
            (true, Some(delta))
        }))
    })?;
    ctx.reply.int(i64::from(created));
    Ok(())
}

pub fn hget(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        match h.and_then(|h| h.get(args.get(2))) {
            Some(r) => reply.bulk(&value_of(r)),
            None => reply.null(),
        }
    })
}

pub fn hmget(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        reply.array(args.len() - 2);
        for field in args.iter().skip(2) {
            match h.and_then(|h| h.get(field)) {
                Some(r) => reply.bulk(&value_of(r)),
                None => reply.null(),
            }
        }
    })
}

pub fn hgetall(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        // A map in RESP3, a flat array of pairs in RESP2, as Redis 7.
        reply.map(h.map_or(0, Elements::len));
        for (name, r) in h.into_iter().flat_map(Elements::iter) {
            reply.bulk(name);
            reply.bulk(&value_of(r));
        }
    })
}

pub fn hkeys(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        reply.array(h.map_or(0, Elements::len));
        for (name, _) in h.into_iter().flat_map(Elements::iter) {
            reply.bulk(name);
        }
    })
}

pub fn hvals(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        reply.array(h.map_or(0, Elements::len));
        for (_, r) in h.into_iter().flat_map(Elements::iter) {
            reply.bulk(&value_of(r));
        }
    })
}

pub fn hdel(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let deleted = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let Some(h) = hash_of(k)? else {
            return Ok(0);
        };
        if !args.iter().skip(2).any(|f| h.get(f).is_some()) {
            return Ok(0);
        }
        Ok(k.write_typed(|value, version, now_ms| {
            let mut delta = value.delta();
            let mut deleted = 0;
            for field in args.iter().skip(2) {
                // A repeated field is gone by its second mention, and a
                // missing one records nothing.
                deleted += i64::from(value.hash_del(field, version, now_ms, &mut delta));
            }
            (deleted, (deleted > 0).then_some(delta))
        }))
    })?;
    ctx.reply.int(deleted);
    Ok(())
}

pub fn hexists(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        reply.int(i64::from(h.is_some_and(|h| h.get(args.get(2)).is_some())));
    })
}

pub fn hlen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        reply.int(h.map_or(0, Elements::len) as i64);
    })
}

pub fn hstrlen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    read(ctx, args.get(1), |h, reply| {
        let len = h
            .and_then(|h| h.get(args.get(2)))
            .map_or(0, |r| value_of(r).len());
        reply.int(len as i64);
    })
}

// ---------------------------------------------------------------------------
// HINCRBY / HINCRBYFLOAT
// ---------------------------------------------------------------------------

/// What an increment is to write, decided before anything is written.
struct Increment {
    /// The field's new value as Redis shows it (and the reply).
    text: String,
    /// What is added to this node's contribution to reach exactly the
    /// shown value; None: the result is written as a plain HSET.
    ///
    /// Plain writes are for numbers the exact decimals cannot hold (past
    /// about 7.9e28, or with more than 28 decimals): such a field does not
    /// merge concurrent increments. Redis's long doubles reach further
    /// than an overflow error would admit, so this keeps the command
    /// working (with f64 digits) instead.
    step: Option<Decimal>,
    /// The field's value before, as read.
    current: Option<Vec<u8>>,
}

impl Increment {
    /// Plans reaching `target` (None: not a decimal) from the field's
    /// register `r`, with `node`'s contribution.
    fn new(r: Option<Elem<'_>>, node: u64, target: Option<Decimal>, text: String) -> Self {
        let step = target
            .zip(exact_value(r))
            .and_then(|(target, exact)| target.checked_sub(exact))
            .filter(|step| {
                // The node's running total must take the step without
                // saturating, or replicas would sum something else.
                let total = r
                    .and_then(Elem::counter)
                    .and_then(|p| p.contributions.iter().find(|c| c.0 == node))
                    .map_or(Decimal::ZERO, |c| c.1.0);
                total.checked_add(*step).is_some()
            });
        Self {
            text,
            step,
            current: r.map(|r| value_of(r).into_owned()),
        }
    }

    /// Applies the plan inside `write_typed`; returns the delta, None if
    /// nothing changed.
    fn apply(
        &self,
        value: &mut Typed,
        field: &[u8],
        node: u64,
        version: Version,
        now_ms: u64,
    ) -> Option<Fragment> {
        let mut delta = value.delta();
        let text = self.text.as_bytes();
        match self.step {
            None => {
                value.hash_set(field, text, version, now_ms, &mut delta);
            }
            Some(step) if step.is_zero() => {
                // Redis rewrites the field in its canonical form ("1.50"
                // + 0 is "1.5"); where that changes nothing, nothing is sent.
                if self.current.as_deref() == Some(text) {
                    return None;
                }
                value.hash_set(field, text, version, now_ms, &mut delta);
            }
            Some(step) => {
                let before = delta.hash.len();
                value.hash_incr(field, step, node, version, now_ms, &mut delta);
                if value.hash_field(field).as_deref() != Some(text) {
                    // The increments cancelled out, so the field reads as
                    // its base verbatim (or, with no base, does not exist)
                    // where Redis holds the canonical text. Writing it
                    // keeps the counter's contributions; only the final
                    // register is sent, as two registers of one field at
                    // one version would not merge in a fixed order.
                    value.hash_set(field, text, version, now_ms, &mut delta);
                    let last = delta.hash.len() - 1;
                    delta.hash.drain(before..last);
                }
            }
        }
        Some(delta)
    }
}

/// The exact value a field's register holds: its base plus the increments
/// it has not reset (None when the base is no decimal).
fn exact_value(r: Option<Elem<'_>>) -> Option<Decimal> {
    let Some(r) = r else {
        return Some(Decimal::ZERO);
    };
    let base = match r.base() {
        Some(bytes) => parse_decimal(bytes)?,
        None => Decimal::ZERO,
    };
    base.checked_add(r.unobserved())
}

/// Runs an increment against the key; `plan` sees the field's register
/// and this node's id and returns the increment or Redis's error.
fn increment(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    plan: impl FnOnce(Option<Elem<'_>>, u64) -> Result<Increment, CmdError>,
) -> Result<String, CmdError> {
    let field = args.get(2);
    let node = ctx.services.store.clock().hlc().node_id();
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let inc = plan(hash_of(k)?.and_then(|h| h.get(field)), node)?;
        k.write_typed(|value, version, now_ms| {
            ((), inc.apply(value, field, node, version, now_ms))
        });
        Ok(inc.text)
    })
}

const NOT_INTEGER_FIELD: CmdError = CmdError::fixed("ERR hash value is not an integer");
const NOT_FLOAT_FIELD: CmdError = CmdError::fixed("ERR hash value is not a float");

pub fn hincrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    // The increment is checked before the key, as Redis does.
    let by = args.int(3)?;
    let mut next = 0;
    increment(ctx, args, |r, node| {
        let current = match r.map(value_of) {
            Some(v) => parse_i64(&v).ok_or(NOT_INTEGER_FIELD)?,
            None => 0,
        };
        next = current.checked_add(by).ok_or(CmdError::OVERFLOW)?;
        let text = itoa::Buffer::new().format(next).to_owned();
        Ok(Increment::new(r, node, Some(Decimal::from(next)), text))
    })?;
    ctx.reply.int(next);
    Ok(())
}

/// Redis's human-readable long double (`%.17Lf`, trailing zeros and a
/// bare point cut, "-0" as "0"), for results past the decimals' range.
fn format_float(value: f64) -> String {
    let mut s = format!("{value:.17}");
    if s.contains('.') {
        let trimmed = s.trim_end_matches('0').trim_end_matches('.').len();
        s.truncate(trimmed);
    }
    if s == "-0" {
        s = "0".into();
    }
    s
}

pub fn hincrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let by_text = args.get(3);
    let by = parse_float(by_text).ok_or(CmdError::NOT_FLOAT)?;
    if by.is_infinite() {
        return Err(CmdError::fixed("ERR value is NaN or Infinity"));
    }
    let text = increment(ctx, args, |r, node| {
        let current_text = r.map(value_of);
        let current = match &current_text {
            Some(v) => parse_float(v).ok_or(NOT_FLOAT_FIELD)?,
            None => 0.0,
        };
        let sum = current + by;
        if !sum.is_finite() {
            return Err(CmdError::fixed(
                "ERR increment would produce NaN or Infinity",
            ));
        }
        // Redis adds to the value it shows (it stores text) and keeps 17
        // decimals; the exact sum of the two decimals, so rounded, is what
        // its long doubles print for every ordinary magnitude.
        let target = current_text
            .as_deref()
            .map_or(Some(Decimal::ZERO), parse_decimal)
            .zip(parse_decimal(by_text))
            .and_then(|(a, b)| a.checked_add(b))
            .map(|sum| sum.round_dp(17).normalize());
        let text = target.map_or_else(|| format_float(sum), format_decimal);
        Ok(Increment::new(r, node, target, text))
    })?;
    ctx.reply.bulk(text.as_bytes());
    Ok(())
}

// ---------------------------------------------------------------------------
// HRANDFIELD / HSCAN
// ---------------------------------------------------------------------------

/// One field of an HRANDFIELD reply: with its value, a pair (an array of
/// two in RESP3, two flat items in RESP2).
fn random_entry(reply: &mut Reply, name: &[u8], r: Elem<'_>, with_values: bool) {
    if with_values && reply.resp3 {
        reply.array(2);
    }
    reply.bulk(name);
    if with_values {
        reply.bulk(&value_of(r));
    }
}

/// `k` distinct indexes below `n` (k ≤ n), in random order, in O(k) time
/// when k is small against n and O(n) otherwise.
fn distinct_indexes(n: usize, k: usize) -> Vec<usize> {
    if k.saturating_mul(3) > n {
        let mut all: Vec<usize> = (0..n).collect();
        for i in 0..k {
            all.swap(i, fastrand::usize(i..n));
        }
        all.truncate(k);
        all
    } else {
        // At most a third is taken, so each pick needs < 1.5 draws.
        let mut seen = HashSet::with_capacity_and_hasher(k, foldhash::fast::RandomState::default());
        let mut out = Vec::with_capacity(k);
        while out.len() < k {
            let i = fastrand::usize(..n);
            if seen.insert(i) {
                out.push(i);
            }
        }
        out
    }
}

pub fn hrandfield(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.len() == 2 {
        return read(ctx, args.get(1), |h, reply| {
            match h.and_then(|h| h.get_index(fastrand::usize(..h.len()))) {
                Some((name, _)) => reply.bulk(name),
                None => reply.null(),
            }
        });
    }
    let count = args.int(2)?;
    if count == i64::MIN {
        return Err(CmdError::fixed(
            "ERR value is out of range, value must between -9223372036854775807 and 9223372036854775807",
        ));
    }
    if args.len() > 4 || (args.len() == 4 && !args.is(3, "WITHVALUES")) {
        return Err(CmdError::SYNTAX);
    }
    let with_values = args.len() == 4;
    // Redis's bound, so that the count of reply items fits a long.
    if with_values && count.unsigned_abs() > (i64::MAX / 2) as u64 {
        return Err(CmdError::fixed("ERR value is out of range"));
    }
    read(ctx, args.get(1), |h, reply| {
        let Some(h) = h.filter(|_| count != 0) else {
            reply.array(0);
            return;
        };
        let n = h.len();
        let items = |len: usize| {
            if with_values && !reply.resp3 {
                len * 2
            } else {
                len
            }
        };
        if count < 0 || count == 1 {
            // Repeats allowed: independent draws, in random order.
            let k = usize::try_from(count.unsigned_abs()).unwrap_or(usize::MAX);
            reply.array(items(k));
            // Past the output limit the client is closed unread: stop
            // drawing rather than loop over a count of 2^63.
            for _ in 0..k {
                if reply.over_limit() {
                    break;
                }
                if let Some((name, r)) = h.get_index(fastrand::usize(..n)) {
                    random_entry(reply, name, r, with_values);
                }
            }
            return;
        }
        let k = usize::try_from(count).unwrap_or(usize::MAX);
        if k >= n {
            reply.array(items(n));
            for (name, r) in h.iter() {
                random_entry(reply, name, r, with_values);
            }
            return;
        }
        reply.array(items(k));
        for i in distinct_indexes(n, k) {
            if let Some((name, r)) = h.get_index(i) {
                random_entry(reply, name, r, with_values);
            }
        }
    })
}

pub fn hscan(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cursor =
        super::args::parse_cursor(args.get(2)).ok_or(CmdError::fixed("ERR invalid cursor"))?;
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        // Redis looks the key up before it reads the options: a missing
        // key ends the scan whatever follows the cursor.
        let Some(h) = hash_of(k)? else {
            reply.array(2);
            reply.bulk(b"0");
            reply.array(0);
            return Ok(());
        };
        let (pattern, count) = element_scan::options(args)?;
        let (next, found) = element_scan::step(h, cursor, count, pattern.as_ref());
        reply.array(2);
        reply.bulk_int(next as i64);
        reply.array(found.len() * 2);
        for (name, r) in found {
            reply.bulk(name);
            reply.bulk(&value_of(r));
        }
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
        for bad in [
            &b"18446744073709551616"[..],
            b" 1",
            b"1 ",
            b"-",
            b"+",
            b"0x1",
            b"1a",
        ] {
            assert_eq!(crate::command::args::parse_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn floats_past_the_decimals_format_like_redis() {
        assert_eq!(format_float(2.5), "2.5");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(1e-30), "0");
        assert_eq!(format_float(-1e-30), "0");
        assert!(
            format_float(1e300)
                .starts_with("1000000000000000052504760255204420248704468581108159154915854")
        );
        assert_eq!(parse_float(b"1\x002"), None);
        assert_eq!(parse_float(b" 1"), None);
        assert_eq!(parse_float(b"nan"), None);
        assert_eq!(parse_float(b"5.0e3"), Some(5000.0));
    }

    #[test]
    fn distinct_indexes_are_distinct_and_in_range() {
        for (n, k) in [(10, 10), (10, 8), (10, 2), (1000, 3), (1000, 999), (1, 1)] {
            let picked = distinct_indexes(n, k);
            assert_eq!(picked.len(), k);
            let unique: HashSet<usize> = picked.iter().copied().collect();
            assert_eq!(unique.len(), k);
            assert!(picked.iter().all(|&i| i < n));
        }
    }
}
