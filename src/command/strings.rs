//! String commands: GET, SET and its variants, multi-key MGET/MSET, and the
//! read-modify-write family (APPEND, SETRANGE, INCR…), with Redis 7's
//! options, replies and error texts.

use std::borrow::Cow;

use rust_decimal::Decimal;

use super::{Args, CmdError, CmdResult, Ctx};
use crate::clock::Version;
use crate::resp::parse_i64;
use crate::store::value::register::parse_decimal;
use crate::store::{Expiry, KeyAccess, Kind, NO_EXPIRY};

use super::CommandSpec;
use super::spec::spec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("get", 2, get, [Readonly, Fast], (1, 1, 1), "string", "1.0.0", "key", "Returns the string value of a key."),
    spec!("set", -3, set, [Write, Denyoom], (1, 1, 1), "string", "1.0.0", "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]", "Sets the string value of a key, with options."),
    spec!("setnx", 3, setnx, [Write, Denyoom, Fast], (1, 1, 1), "string", "1.0.0", "key value", "Sets a key only if it does not exist."),
    spec!("setex", 4, setex, [Write, Denyoom], (1, 1, 1), "string", "2.0.0", "key seconds value", "Sets a key with an expiry in seconds."),
    spec!("psetex", 4, psetex, [Write, Denyoom], (1, 1, 1), "string", "2.6.0", "key milliseconds value", "Sets a key with an expiry in milliseconds."),
    spec!("getset", 3, getset, [Write, Denyoom, Fast], (1, 1, 1), "string", "1.0.0", "key value", "Sets a key and returns its previous value."),
    spec!("getdel", 2, getdel, [Write, Fast], (1, 1, 1), "string", "6.2.0", "key", "Returns a key's value and deletes it."),
    spec!("getex", -2, getex, [Write, Fast], (1, 1, 1), "string", "6.2.0", "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]", "Returns a key's value and changes its expiry."),
    spec!("mget", -2, mget, [Readonly, Fast], (1, -1, 1), "string", "1.0.0", "key...", "Returns the values of several keys."),
    spec!("mset", -3, mset, [Write, Denyoom], (1, -1, 2), "string", "1.0.1", "(key value)...", "Sets several keys atomically."),
    spec!("msetnx", -3, msetnx, [Write, Denyoom], (1, -1, 2), "string", "1.0.1", "(key value)...", "Sets several keys only if none exists."),
    spec!("append", 3, append, [Write, Denyoom, Fast], (1, 1, 1), "string", "2.0.0", "key value", "Appends to a key's value."),
    spec!("strlen", 2, strlen, [Readonly, Fast], (1, 1, 1), "string", "2.2.0", "key", "Returns the length of a key's value."),
    spec!("getrange", 4, getrange, [Readonly], (1, 1, 1), "string", "2.4.0", "key start end", "Returns a substring of a key's value."),
    spec!("substr", 4, getrange, [Readonly], (1, 1, 1), "string", "1.0.0", "key start end", "Returns a substring of a key's value (old name of GETRANGE)."),
    spec!("setrange", 4, setrange, [Write, Denyoom], (1, 1, 1), "string", "2.2.0", "key offset value", "Overwrites part of a key's value at an offset."),
    spec!("incr", 2, incr, [Write, Denyoom, Fast], (1, 1, 1), "string", "1.0.0", "key", "Increments an integer value by one."),
    spec!("decr", 2, decr, [Write, Denyoom, Fast], (1, 1, 1), "string", "1.0.0", "key", "Decrements an integer value by one."),
    spec!("incrby", 3, incrby, [Write, Denyoom, Fast], (1, 1, 1), "string", "1.0.0", "key increment", "Increments an integer value by a number."),
    spec!("decrby", 3, decrby, [Write, Denyoom, Fast], (1, 1, 1), "string", "1.0.0", "key decrement", "Decrements an integer value by a number."),
    spec!("incrbyfloat", 3, incrbyfloat, [Write, Denyoom, Fast], (1, 1, 1), "string", "2.6.0", "key increment", "Increments a floating point value by a number."),
];

/// The key's value as a string command sees it (a counter reads as its
/// sum); WRONGTYPE for a hash or a set.
fn string_of<'k>(k: &'k KeyAccess<'_>) -> Result<Option<Cow<'k, [u8]>>, CmdError> {
    k.string().map_err(|_| CmdError::WRONG_TYPE)
}

pub fn get(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        match string_of(k)? {
            Some(v) => reply.bulk(&v),
            None => reply.null(),
        }
        Ok(())
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Always,
    IfMissing,
    IfExists,
}

/// How an expiry option was written, before it is turned into a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ExpireOpt {
    None,
    Keep,
    Persist,
    Seconds(i64),
    Millis(i64),
    UnixSeconds(i64),
    UnixMillis(i64),
}

/// Redis's `getExpireMillisecondsOrReply`: converts an expiry option into an
/// absolute unix-millisecond time, rejecting non-positive and overflowing
/// values with "invalid expire time in '<cmd>' command".
fn expire_at(opt: ExpireOpt, now_ms: u64, cmd: &str) -> Result<Expiry, CmdError> {
    let invalid = || CmdError::invalid_expire(cmd);
    let (value, seconds, relative) = match opt {
        ExpireOpt::None => return Ok(Expiry::Persist),
        ExpireOpt::Keep => return Ok(Expiry::Keep),
        ExpireOpt::Persist => return Ok(Expiry::Persist),
        ExpireOpt::Seconds(v) => (v, true, true),
        ExpireOpt::Millis(v) => (v, false, true),
        ExpireOpt::UnixSeconds(v) => (v, true, false),
        ExpireOpt::UnixMillis(v) => (v, false, false),
    };
    if value <= 0 {
        return Err(invalid());
    }
    let mut ms = if seconds {
        value.checked_mul(1000).ok_or_else(invalid)?
    } else {
        value
    };
    if relative {
        ms = ms.checked_add(now_ms as i64).ok_or_else(invalid)?;
    }
    Ok(Expiry::At(ms as u64))
}

/// Parses the shared option syntax of SET and GETEX from argument `from` on.
fn parse_options(
    args: &Args<'_>,
    from: usize,
    allow_set_flags: bool,
) -> Result<(Condition, bool, ExpireOpt), CmdError> {
    let mut cond = Condition::Always;
    let mut get = false;
    let mut expire = ExpireOpt::None;
    let mut i = from;
    while i < args.len() {
        let has_next = i + 1 < args.len();
        let word = args.get(i);
        let upper = |w: &str| word.eq_ignore_ascii_case(w.as_bytes());
        if allow_set_flags && upper("NX") && cond == Condition::Always {
            cond = Condition::IfMissing;
        } else if allow_set_flags && upper("XX") && cond == Condition::Always {
            cond = Condition::IfExists;
        } else if allow_set_flags && upper("GET") {
            get = true;
        } else if allow_set_flags && upper("KEEPTTL") && expire == ExpireOpt::None {
            expire = ExpireOpt::Keep;
        } else if !allow_set_flags && upper("PERSIST") && expire == ExpireOpt::None {
            expire = ExpireOpt::Persist;
        } else if expire == ExpireOpt::None
            && has_next
            && ["EX", "PX", "EXAT", "PXAT"].iter().any(|w| upper(w))
        {
            let v = args.int(i + 1)?;
            expire = if upper("EX") {
                ExpireOpt::Seconds(v)
            } else if upper("PX") {
                ExpireOpt::Millis(v)
            } else if upper("EXAT") {
                ExpireOpt::UnixSeconds(v)
            } else {
                ExpireOpt::UnixMillis(v)
            };
            i += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 1;
    }
    Ok((cond, get, expire))
}

pub fn set(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (cond, get, opt) = parse_options(args, 3, true)?;
    let expiry = expire_at(opt, ctx.now_ms, "set")?;
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        if get {
            match string_of(k)? {
                Some(v) => reply.bulk(&v),
                None => reply.null(),
            }
        }
        let allowed = match cond {
            Condition::Always => true,
            Condition::IfMissing => !k.exists(),
            Condition::IfExists => k.exists(),
        };
        if allowed {
            write_with_expiry(k, args.get(2), expiry);
            if !get {
                reply.ok();
            }
        } else if !get {
            reply.null();
        }
        Ok(())
    })
}

/// Writes a value; an absolute expiry already in the past deletes the key
/// instead, as Redis does, so nothing dead is ever stored or replicated.
fn write_with_expiry(k: &mut KeyAccess<'_>, value: &[u8], expiry: Expiry) {
    match expiry {
        Expiry::At(t) if t <= k.now_ms() => {
            k.delete();
        }
        _ => {
            k.set(value, expiry);
        }
    }
}

pub fn setnx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let created = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        if k.exists() {
            return false;
        }
        k.set(args.get(2), Expiry::Persist);
        true
    });
    ctx.reply.int(i64::from(created));
    Ok(())
}

fn set_with_ttl(ctx: &mut Ctx<'_>, args: &Args<'_>, opt: ExpireOpt, cmd: &str) -> CmdResult {
    let expiry = expire_at(opt, ctx.now_ms, cmd)?;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        write_with_expiry(k, args.get(3), expiry);
    });
    ctx.reply.ok();
    Ok(())
}

pub fn setex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    set_with_ttl(ctx, args, ExpireOpt::Seconds(args.int(2)?), "setex")
}

pub fn psetex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    set_with_ttl(ctx, args, ExpireOpt::Millis(args.int(2)?), "psetex")
}

pub fn getset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        match string_of(k)? {
            Some(v) => reply.bulk(&v),
            None => reply.null(),
        }
        k.set(args.get(2), Expiry::Persist);
        Ok(())
    })
}

pub fn getdel(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        match string_of(k)? {
            Some(v) => {
                reply.bulk(&v);
                k.delete();
            }
            None => reply.null(),
        }
        Ok(())
    })
}

pub fn getex(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (_, _, opt) = parse_options(args, 2, false)?;
    let expiry = expire_at(opt, ctx.now_ms, "getex")?;
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let Some(v) = string_of(k)? else {
            reply.null();
            return Ok(());
        };
        reply.bulk(&v);
        match (opt, expiry) {
            (ExpireOpt::None, _) => {}
            (ExpireOpt::Persist, _) if k.expires_at().is_some_and(|t| t != NO_EXPIRY) => {
                k.set_expiry(NO_EXPIRY);
            }
            (_, Expiry::At(t)) => {
                k.set_expiry(t);
            }
            _ => {}
        }
        Ok(())
    })
}

pub fn mget(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let reply = &mut *ctx.reply;
    reply.array(args.len() - 1);
    for key in args.iter().skip(1) {
        ctx.services
            .store
            .with_key(key, ctx.now_ms, |k| match k.string() {
                Ok(Some(v)) => reply.bulk(&v),
                // MGET answers nil for keys of other types, as Redis.
                Ok(None) | Err(_) => reply.null(),
            });
    }
    Ok(())
}

/// Key/value pairs of MSET and MSETNX, checked for even count.
fn pairs<'a>(args: &Args<'a>, cmd: &str) -> Result<Vec<&'a [u8]>, CmdError> {
    if args.len().is_multiple_of(2) {
        return Err(CmdError::wrong_arity(cmd));
    }
    let mut keys = Vec::with_capacity(args.len() / 2);
    keys.extend((1..args.len()).step_by(2).map(|i| args.get(i)));
    Ok(keys)
}

pub fn mset(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = pairs(args, "mset")?;
    ctx.services.store.with_keys(&keys, ctx.now_ms, |m| {
        // Consecutive versions from one clock update (10 keys: 10 atomic
        // updates → 1); a key given twice ends with its last value, as in
        // Redis, on peers too.
        let first = m.tick_n(keys.len() as u64);
        for (n, i) in (1..args.len()).step_by(2).enumerate() {
            let version = Version {
                hlc: first.hlc + n as u64,
                ..first
            };
            m.key(args.get(i))
                .set_at(args.get(i + 1), Expiry::Persist, version);
        }
    });
    ctx.reply.ok();
    Ok(())
}

pub fn msetnx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = pairs(args, "msetnx")?;
    let done = ctx.services.store.with_keys(&keys, ctx.now_ms, |m| {
        if keys.iter().any(|key| m.key(key).exists()) {
            return false;
        }
        for i in (1..args.len()).step_by(2) {
            m.key(args.get(i)).set(args.get(i + 1), Expiry::Persist);
        }
        true
    });
    ctx.reply.int(i64::from(done));
    Ok(())
}

const TOO_LONG: CmdError =
    CmdError::fixed("ERR string exceeds maximum allowed size (proto-max-bulk-len)");

pub fn append(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let suffix = args.get(2);
    let max = ctx.services.config.proto_max_bulk_len;
    let len = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let mut value = string_of(k)?.map(Cow::into_owned).unwrap_or_default();
        if value.len() as u64 + suffix.len() as u64 > max {
            return Err(TOO_LONG);
        }
        value.extend_from_slice(suffix);
        k.set(&value, Expiry::Keep);
        Ok(value.len())
    })?;
    ctx.reply.int(len as i64);
    Ok(())
}

pub fn strlen(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let len = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        string_of(k).map(|v| v.map_or(0, |v| v.len()))
    })?;
    ctx.reply.int(len as i64);
    Ok(())
}

pub fn getrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (start, end) = (args.int(2)?, args.int(3)?);
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let value = string_of(k)?.unwrap_or_default();
        reply.bulk(substring(&value, start, end));
        Ok(())
    })
}

/// Redis's GETRANGE index arithmetic (negative indexes count from the end).
fn substring(value: &[u8], mut start: i64, mut end: i64) -> &[u8] {
    let len = value.len() as i64;
    if start < 0 && end < 0 && start > end {
        return &[];
    }
    if start < 0 {
        start += len;
    }
    if end < 0 {
        end += len;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= len {
        end = len - 1;
    }
    if start > end || len == 0 {
        return &[];
    }
    &value[start as usize..=end as usize]
}

pub fn setrange(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let offset = args.int(2)?;
    if offset < 0 {
        return Err(CmdError::fixed("ERR offset is out of range"));
    }
    let patch = args.get(3);
    let max = ctx.services.config.proto_max_bulk_len;
    let len = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let current = string_of(k)?;
        // An empty patch changes nothing and creates nothing, as in Redis.
        if patch.is_empty() {
            return Ok(current.map_or(0, |v| v.len()));
        }
        if offset as u64 + patch.len() as u64 > max {
            return Err(TOO_LONG);
        }
        let (offset, end) = (offset as usize, offset as usize + patch.len());
        let mut value = current.map(Cow::into_owned).unwrap_or_default();
        if value.len() < end {
            value.resize(end, 0);
        }
        value[offset..end].copy_from_slice(patch);
        k.set(&value, Expiry::Keep);
        Ok(value.len())
    })?;
    ctx.reply.int(len as i64);
    Ok(())
}

/// INCR and friends are counter operations (DESIGN §2a): the check is
/// Redis's, on the local value, and the write adds this node's
/// contribution, so increments made at the same time on other nodes all
/// count once the contributions meet.
fn incr_by(ctx: &mut Ctx<'_>, key: &[u8], delta: i64) -> CmdResult {
    let node = ctx.services.store.clock().hlc().node_id();
    let result = ctx.services.store.with_key(key, ctx.now_ms, |k| {
        let current = match (k.value(), k.typed()) {
            (Some(v), _) => Some(parse_i64(v)),
            (None, Some(t)) => match k.kind() {
                Some(Kind::String) => Some(t.string.as_ref().and_then(|r| r.integer())),
                Some(_) => return Err(CmdError::WRONG_TYPE),
                None => None,
            },
            (None, None) => None,
        };
        let current = match current {
            Some(v) => v.ok_or(CmdError::NOT_INTEGER)?,
            None => 0,
        };
        let next = current.checked_add(delta).ok_or(CmdError::OVERFLOW)?;
        k.write_typed(|value, version, _| {
            let mut d = value.delta();
            value.string_incr(Decimal::from(delta), node, version, &mut d);
            ((), Some(d))
        });
        Ok(next)
    })?;
    ctx.reply.int(result);
    Ok(())
}

pub fn incr(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), 1)
}

pub fn decr(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    incr_by(ctx, args.get(1), -1)
}

pub fn incrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let delta = args.int(2)?;
    incr_by(ctx, args.get(1), delta)
}

pub fn decrby(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let delta = args.int(2)?;
    let delta = delta
        .checked_neg()
        .ok_or(CmdError::fixed("ERR decrement would overflow"))?;
    incr_by(ctx, args.get(1), delta)
}

/// Redis's `string2ld` as far as a binary f64 follows it: no surrounding
/// spaces, no NaN, at most 5 KiB. (Hexadecimal floats, which strtold reads,
/// are refused, and magnitudes past f64's range read as infinite.)
pub(super) fn parse_float(bytes: &[u8]) -> Option<f64> {
    if bytes.is_empty() || bytes.len() >= 5 * 1024 {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let value: f64 = text.parse().ok()?;
    (!value.is_nan()).then_some(value)
}

/// Formats like Redis's human-readable long double: plain decimal, no
/// exponent, no trailing zeros.
pub fn format_float(value: f64) -> String {
    if value == 0.0 {
        return "0".into();
    }
    format!("{value}")
}

/// Redis adds in `long double` and prints 17 decimals with trailing zeros
/// cut, so `0.1 + 0.2` gives `0.3`. Where both operands are plain decimals
/// the sum is computed exactly in decimal and rounded the same way, which
/// gives Redis's answers; beyond what a 96-bit decimal holds, the binary
/// double sum is printed in its shortest exact form.
fn add_floats(
    current: &[u8],
    current_value: f64,
    delta: &[u8],
    delta_value: f64,
) -> Result<String, CmdError> {
    let sum = current_value + delta_value;
    if !sum.is_finite() {
        return Err(CmdError::fixed(
            "ERR increment would produce NaN or Infinity",
        ));
    }
    let exact = decimal(current)
        .zip(decimal(delta))
        .and_then(|(a, b)| a.checked_add(b))
        .map(|d| d.round_dp(17).normalize());
    Ok(match exact {
        Some(d) if d.is_zero() => "0".into(),
        Some(d) => d.to_string(),
        None => format_float(sum),
    })
}

fn decimal(bytes: &[u8]) -> Option<rust_decimal::Decimal> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.contains(['e', 'E']) {
        rust_decimal::Decimal::from_scientific(text).ok()
    } else {
        rust_decimal::Decimal::from_str_exact(text).ok()
    }
}

/// INCRBYFLOAT is a counter operation too, in exact decimals; the reply
/// is the value read back, as GET then shows it. An operand or result
/// beyond what a decimal holds (|x| ≥ 7.9e28, or more than 28 digits
/// after the point) falls back to writing the result as a plain value,
/// which concurrent increments elsewhere do not add to.
pub fn incrbyfloat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let delta = args.get(2);
    let delta_value = parse_float(delta).ok_or(CmdError::NOT_FLOAT)?;
    let node = ctx.services.store.clock().hlc().node_id();
    let reply = &mut *ctx.reply;
    ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let current = string_of(k)?.map(Cow::into_owned);
        let current = current.as_deref().unwrap_or(b"0");
        let current_value = parse_float(current).ok_or(CmdError::NOT_FLOAT)?;
        let text = add_floats(current, current_value, delta, delta_value)?;
        let exact = parse_decimal(delta)
            .zip(parse_decimal(current))
            .filter(|(d, c)| c.checked_add(*d).is_some());
        // Adding 0 rewrites the value in Redis's format ("5.0e3" becomes
        // "5000"): a plain write of the result, which as a SET resets only
        // the increments it has seen.
        let Some((by, _)) = exact.filter(|(by, _)| !by.is_zero()) else {
            k.set(text.as_bytes(), Expiry::Keep);
            reply.bulk(text.as_bytes());
            return Ok(());
        };
        let read = k.write_typed(|value, version, _| {
            let mut d = value.delta();
            value.string_incr(by, node, version, &mut d);
            (value.string_value().map(Cow::into_owned), Some(d))
        });
        reply.bulk(read.as_deref().unwrap_or(text.as_bytes()));
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn getrange_matches_redis_examples() {
        let v = b"This is a string";
        assert_eq!(substring(v, 0, 3), b"This");
        assert_eq!(substring(v, -3, -1), b"ing");
        assert_eq!(substring(v, 0, -1), v);
        assert_eq!(substring(v, 10, 100), b"string");
        assert_eq!(substring(v, 5, 3), b"");
        assert_eq!(substring(v, -1, -5), b"");
        assert_eq!(substring(b"", 0, -1), b"");
    }

    #[test]
    fn floats_format_like_redis() {
        assert_eq!(format_float(10.5 + 0.1), "10.6");
        assert_eq!(format_float(5.0e3), "5000");
        assert_eq!(format_float(-0.0), "0");
        assert_eq!(format_float(3.0), "3");
        assert_eq!(parse_float(b"5.0e3"), Some(5000.0));
        let add = |a: &str, b: &str| {
            let (x, y) = (
                parse_float(a.as_bytes()).unwrap(),
                parse_float(b.as_bytes()).unwrap(),
            );
            add_floats(a.as_bytes(), x, b.as_bytes(), y).unwrap()
        };
        assert_eq!(add("0.1", "0.2"), "0.3");
        assert_eq!(add("1.1", "2.2"), "3.3");
        assert_eq!(add("10.50", "0.1"), "10.6");
        assert_eq!(add("5.0e3", "200"), "5200");
        assert_eq!(add("1", "-1"), "0");
        assert_eq!(add("1e300", "1"), format_float(1e300));
        assert_eq!(parse_float(b" 1"), None);
        assert_eq!(parse_float(b"nan"), None);
        assert_eq!(parse_float(b"abc"), None);
    }
}
