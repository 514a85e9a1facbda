//! Generic key commands: DEL, EXISTS, TYPE, KEYS, SCAN, RANDOMKEY, RENAME,
//! COPY, and the EXPIRE/TTL family, with Redis 7's replies and errors.

use super::{Args, CmdError, CmdResult, Ctx};
use crate::store::{Content, Glob, KeyAccess, Kind, NO_EXPIRY};

use super::CommandSpec;
use super::spec::spec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("del", -2, del, [Write], (1, -1, 1), "keyspace", "1.0.0", "key...", "Deletes keys."),
    spec!("unlink", -2, del, [Write, Fast], (1, -1, 1), "keyspace", "4.0.0", "key...", "Deletes keys (memory is reclaimed at once; same as DEL)."),
    spec!("exists", -2, exists, [Readonly, Fast], (1, -1, 1), "keyspace", "1.0.0", "key...", "Counts how many of the given keys exist."),
    spec!("type", 2, type_, [Readonly, Fast], (1, 1, 1), "keyspace", "1.0.0", "key", "Returns the type of a key's value."),
    spec!("keys", 2, keys, [Readonly], (0, 0, 0), "keyspace", "1.0.0", "pattern", "Returns the keys matching a pattern."),
    spec!("scan", -2, scan, [Readonly], (0, 0, 0), "keyspace", "2.8.0", "cursor [MATCH pattern] [COUNT count] [TYPE type]", "Iterates over the keys incrementally."),
    spec!("randomkey", 1, randomkey, [Readonly], (0, 0, 0), "keyspace", "1.0.0", "", "Returns a random key."),
    spec!("rename", 3, rename, [Write], (1, 2, 1), "keyspace", "1.0.0", "key newkey", "Renames a key, overwriting the destination."),
    spec!("renamenx", 3, renamenx, [Write, Fast], (1, 2, 1), "keyspace", "1.0.0", "key newkey", "Renames a key if the destination does not exist."),
    spec!("copy", -3, copy, [Write, Denyoom], (1, 2, 1), "keyspace", "6.2.0", "source destination [DB destination-db] [REPLACE]", "Copies a key's value to another key."),
    spec!("touch", -2, exists, [Readonly, Fast], (1, -1, 1), "keyspace", "3.2.1", "key...", "Counts the given keys that exist (and touches them)."),
    spec!("expire", -3, expire, [Write, Fast], (1, 1, 1), "keyspace", "1.0.0", "key seconds [NX|XX|GT|LT]", "Sets a key's time to live in seconds."),
    spec!("pexpire", -3, pexpire, [Write, Fast], (1, 1, 1), "keyspace", "2.6.0", "key milliseconds [NX|XX|GT|LT]", "Sets a key's time to live in milliseconds."),
    spec!("expireat", -3, expireat, [Write, Fast], (1, 1, 1), "keyspace", "1.2.0", "key unix-time-seconds [NX|XX|GT|LT]", "Sets a key's expiry as a unix time in seconds."),
    spec!("pexpireat", -3, pexpireat, [Write, Fast], (1, 1, 1), "keyspace", "2.6.0", "key unix-time-milliseconds [NX|XX|GT|LT]", "Sets a key's expiry as a unix time in milliseconds."),
    spec!("expiretime", 2, expiretime, [Readonly, Fast], (1, 1, 1), "keyspace", "7.0.0", "key", "Returns a key's expiry as a unix time in seconds."),
    spec!("pexpiretime", 2, pexpiretime, [Readonly, Fast], (1, 1, 1), "keyspace", "7.0.0", "key", "Returns a key's expiry as a unix time in milliseconds."),
    spec!("ttl", 2, ttl, [Readonly, Fast], (1, 1, 1), "keyspace", "1.0.0", "key", "Returns a key's time to live in seconds."),
    spec!("pttl", 2, pttl, [Readonly, Fast], (1, 1, 1), "keyspace", "2.6.0", "key", "Returns a key's time to live in milliseconds."),
    spec!("persist", 2, persist, [Write, Fast], (1, 1, 1), "keyspace", "2.2.0", "key", "Removes a key's expiry."),
];

pub fn del(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let mut deleted = 0;
    for key in args.iter().skip(1) {
        if ctx.services.store.with_key(key, ctx.now_ms, |k| k.delete()) {
            deleted += 1;
        }
    }
    ctx.reply.int(deleted);
    Ok(())
}

/// EXISTS and TOUCH: how many of the arguments name a key (repeats count).
pub fn exists(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let found = args
        .iter()
        .skip(1)
        .filter(|key| ctx.services.store.with_key(key, ctx.now_ms, |k| k.exists()))
        .count();
    ctx.reply.int(found as i64);
    Ok(())
}

pub fn type_(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let kind = ctx
        .services
        .store
        .with_key(args.get(1), ctx.now_ms, |k| k.kind());
    ctx.reply.simple(kind.map_or("none", Kind::name));
    Ok(())
}

pub fn keys(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let keys = ctx.services.store.keys(&Glob::new(args.get(1)), ctx.now_ms);
    ctx.reply.bulks(keys.iter().map(Vec::as_slice));
    Ok(())
}

pub fn scan(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let cursor = std::str::from_utf8(args.get(1))
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .ok_or(CmdError::fixed("ERR invalid cursor"))?;
    let mut pattern = None;
    let mut count = 10usize;
    let mut type_filter: Option<&[u8]> = None;
    let mut i = 2;
    while i < args.len() {
        if i + 1 >= args.len() {
            return Err(CmdError::SYNTAX);
        }
        if args.is(i, "MATCH") {
            pattern = Some(Glob::new(args.get(i + 1)));
        } else if args.is(i, "COUNT") {
            let n = args.int(i + 1)?;
            if n < 1 {
                return Err(CmdError::SYNTAX);
            }
            count = usize::try_from(n).unwrap_or(usize::MAX);
        } else if args.is(i, "TYPE") {
            type_filter = Some(args.get(i + 1));
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 2;
    }
    let (next, keys) = ctx.services.store.scan(cursor, count, ctx.now_ms, |e| {
        let kind = e.kind();
        type_filter
            .is_none_or(|t| kind.is_some_and(|k| t.eq_ignore_ascii_case(k.name().as_bytes())))
            && pattern.as_ref().is_none_or(|p| p.matches(e.key()))
    });
    let reply = &mut *ctx.reply;
    reply.array(2);
    reply.bulk(next.to_string().as_bytes());
    reply.bulks(keys.iter().map(Vec::as_slice));
    Ok(())
}

pub fn randomkey(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    match ctx.services.store.random_key(ctx.now_ms) {
        Some(key) => ctx.reply.bulk(&key),
        None => ctx.reply.null(),
    }
    Ok(())
}

/// RENAME / RENAMENX. Both keys are locked together so no client sees the
/// value at both names or at neither.
fn rename_generic(ctx: &mut Ctx<'_>, args: &Args<'_>, only_if_new: bool) -> CmdResult {
    let (src, dst) = (args.get(1), args.get(2));
    let renamed = ctx.services.store.with_keys(&[src, dst], ctx.now_ms, |m| {
        let Some(content) = content_of(&m.key(src)) else {
            return Err(CmdError::NO_SUCH_KEY);
        };
        if src == dst {
            return Ok(!only_if_new);
        }
        if only_if_new && m.key(dst).exists() {
            return Ok(false);
        }
        // One version for both halves: replicas apply the move as a unit
        // under the conflict rule.
        let version = ctx.services.store.next_version();
        m.key(src).delete_at(version);
        m.key(dst).write_content(&content, version);
        Ok(true)
    })?;
    if only_if_new {
        ctx.reply.int(i64::from(renamed));
    } else {
        ctx.reply.ok();
    }
    Ok(())
}

/// What RENAME and COPY carry over: a plain string's bytes or a typed
/// value's visible content, with the expiry.
fn content_of(k: &KeyAccess<'_>) -> Option<Content> {
    if let Some(value) = k.value() {
        return Some(Content {
            kind: Kind::String,
            string: Some(value.to_vec()),
            elements: Vec::new(),
            expires_at: k.expires_at().unwrap_or(NO_EXPIRY),
        });
    }
    k.typed_content()
}

pub fn rename(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    rename_generic(ctx, args, false)
}

pub fn renamenx(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    rename_generic(ctx, args, true)
}

pub fn copy(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (src, dst) = (args.get(1), args.get(2));
    let mut replace = false;
    let mut i = 3;
    while i < args.len() {
        if args.is(i, "REPLACE") {
            replace = true;
        } else if args.is(i, "DB") && i + 1 < args.len() {
            if args.int(i + 1)? != 0 {
                return Err(CmdError::DB_RANGE);
            }
            i += 1;
        } else {
            return Err(CmdError::SYNTAX);
        }
        i += 1;
    }
    if src == dst {
        return Err(CmdError::fixed(
            "ERR source and destination objects are the same",
        ));
    }
    let copied = ctx.services.store.with_keys(&[src, dst], ctx.now_ms, |m| {
        let Some(content) = content_of(&m.key(src)) else {
            return false;
        };
        let mut to = m.key(dst);
        if to.exists() && !replace {
            return false;
        }
        let version = ctx.services.store.next_version();
        to.write_content(&content, version);
        true
    });
    ctx.reply.int(i64::from(copied));
    Ok(())
}

#[derive(Debug, Default, Clone, Copy)]
struct ExpireFlags {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

fn parse_expire_flags(args: &Args<'_>) -> Result<ExpireFlags, CmdError> {
    let mut f = ExpireFlags::default();
    for i in 3..args.len() {
        if args.is(i, "NX") {
            f.nx = true;
        } else if args.is(i, "XX") {
            f.xx = true;
        } else if args.is(i, "GT") {
            f.gt = true;
        } else if args.is(i, "LT") {
            f.lt = true;
        } else {
            return Err(CmdError::new(format!(
                "ERR Unsupported option {}",
                String::from_utf8_lossy(args.get(i))
            )));
        }
    }
    if f.nx && (f.xx || f.gt || f.lt) {
        return Err(CmdError::fixed(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if f.gt && f.lt {
        return Err(CmdError::fixed(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    Ok(f)
}

/// Redis's `expireGenericCommand`: `base_ms` is now for relative forms and
/// 0 for absolute ones.
fn expire_generic(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    base_ms: u64,
    seconds: bool,
    cmd: &str,
) -> CmdResult {
    let flags = parse_expire_flags(args)?;
    let mut when = args.int(2)?;
    let invalid = || CmdError::invalid_expire(cmd);
    if seconds {
        when = when.checked_mul(1000).ok_or_else(invalid)?;
    }
    when = when.checked_add(base_ms as i64).ok_or_else(invalid)?;
    let applied = ctx.services.store.with_key(args.get(1), ctx.now_ms, |k| {
        let Some(current) = k.expires_at() else {
            return false;
        };
        let persistent = current == NO_EXPIRY;
        // A key without expiry counts as an infinite TTL for GT and LT.
        if (flags.nx && !persistent)
            || (flags.xx && persistent)
            || (flags.gt && (persistent || when <= current as i64))
            || (flags.lt && !persistent && when >= current as i64)
        {
            return false;
        }
        if when <= ctx.now_ms as i64 {
            k.delete();
        } else {
            k.set_expiry(when as u64);
        }
        true
    });
    ctx.reply.int(i64::from(applied));
    Ok(())
}

pub fn expire(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, ctx.now_ms, true, "expire")
}

pub fn pexpire(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, ctx.now_ms, false, "pexpire")
}

pub fn expireat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 0, true, "expireat")
}

pub fn pexpireat(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expire_generic(ctx, args, 0, false, "pexpireat")
}

/// -2 for a missing key, -1 for no expiry, else the key's expiry.
fn expiry_reply(
    ctx: &mut Ctx<'_>,
    args: &Args<'_>,
    to_reply: impl Fn(u64, u64) -> i64,
) -> CmdResult {
    let now = ctx.now_ms;
    let value = ctx
        .services
        .store
        .with_key(args.get(1), now, |k| match k.expires_at() {
            None => -2,
            Some(NO_EXPIRY) => -1,
            Some(at) => to_reply(at, now),
        });
    ctx.reply.int(value);
    Ok(())
}

pub fn expiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expiry_reply(ctx, args, |at, _| (at as i64 + 500) / 1000)
}

pub fn pexpiretime(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expiry_reply(ctx, args, |at, _| at as i64)
}

pub fn ttl(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expiry_reply(ctx, args, |at, now| {
        (at.saturating_sub(now) as i64 + 500) / 1000
    })
}

pub fn pttl(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    expiry_reply(ctx, args, |at, now| at.saturating_sub(now) as i64)
}

pub fn persist(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let removed = ctx
        .services
        .store
        .with_key(args.get(1), ctx.now_ms, |k| match k.expires_at() {
            Some(at) if at != NO_EXPIRY => k.set_expiry(NO_EXPIRY),
            _ => false,
        });
    ctx.reply.int(i64::from(removed));
    Ok(())
}
