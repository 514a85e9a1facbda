//! Introspection of one key's value: OBJECT (ENCODING, REFCOUNT,
//! IDLETIME, FREQ) and MEMORY USAGE, which redis-cli `--memkeys` uses.

use super::args::{Args, CmdError, CmdResult, sub_arity};
use super::context::Ctx;
use super::spec::{CommandSpec, spec};
use crate::store::value::{Elements, Kind};

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("object", -2, object, [Readonly], (2, 2, 1), "keyspace", "2.2.3", "ENCODING|FREQ|IDLETIME|REFCOUNT key", "Inspects a key's value: ENCODING, FREQ, IDLETIME, REFCOUNT."),
    spec!("memory", -2, memory, [Readonly], (0, 0, 0), "server", "4.0.0", "USAGE key [SAMPLES count]", "Reports memory use: USAGE of a key."),
];

/// Bytes of one entry's slot in the keyspace (`store::entry`), which MEMORY
/// USAGE adds to what the value owns on the heap.
const ENTRY_BYTES: u64 = 64;

/// The encoding OBJECT ENCODING names. Redis's names where ours is the
/// same idea (an integer, a short string kept inside the entry, a small
/// hash packed in one buffer). A small set is packed too, but Redis 7.0
/// has no packed set of strings: it is named as Redis 7.0 would name it
/// (intset when every member is an integer), since clients compare.
fn encoding(kind: Kind, plain: Option<&[u8]>, elements: Option<&Elements>) -> &'static str {
    match (kind, plain) {
        (Kind::String, Some(v)) if crate::resp::parse_i64(v).is_some() && v.len() <= 20 => "int",
        (Kind::String, Some(v)) if v.len() <= 44 => "embstr",
        (Kind::String, Some(_)) => "raw",
        // A counter: an integer that many nodes add to.
        (Kind::String, None) => "int",
        (Kind::Hash, _) if elements.is_some_and(Elements::is_packed) => "listpack",
        (Kind::Set, _)
            if elements.is_some_and(|s| {
                s.len() <= INTSET_ENTRIES
                    && s.iter().all(|(m, _)| crate::resp::parse_i64(m).is_some())
            }) =>
        {
            "intset"
        }
        (Kind::Hash | Kind::Set, _) => "hashtable",
    }
}

/// Redis 7.0's default `set-max-intset-entries`.
const INTSET_ENTRIES: usize = 512;

pub fn object(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.is(1, "HELP") {
        ctx.reply.help(&[
            "ENCODING <key>",
            "    Return the kind of internal representation used in order to store the value",
            "    associated with a <key>.",
            "FREQ <key>",
            "    Return the access frequency index of the <key>. The returned integer is",
            "    proportional to the logarithm of the recent access frequency of the key.",
            "IDLETIME <key>",
            "    Return the idle time of the <key>, that is the approximated number of",
            "    seconds elapsed since the last access to the key.",
            "REFCOUNT <key>",
            "    Return the number of references of the value associated with the specified",
            "    <key>.",
        ]);
        return Ok(());
    }
    let sub = ["ENCODING", "FREQ", "IDLETIME", "REFCOUNT"]
        .into_iter()
        .find(|s| args.is(1, s))
        .ok_or_else(|| CmdError::unknown_subcommand(args.get(1), "object"))?;
    sub_arity(args, "object", &sub.to_ascii_lowercase(), 3)?;
    let now_ms = ctx.now_ms;
    let lfu = ctx.services.store.memory().policy().name().contains("lfu");
    let found = ctx
        .services
        .store
        .with_key_untouched(args.get(2), now_ms, |k| {
            let kind = k.kind()?;
            let elements = k.typed().and_then(|t| match kind {
                Kind::Hash => t.hash.as_ref(),
                Kind::Set => t.set.as_ref(),
                Kind::String => None,
            });
            Some((encoding(kind, k.value(), elements), k.idle_ms()))
        });
    let Some((encoding, idle_ms)) = found else {
        ctx.reply.null();
        return Ok(());
    };
    match sub {
        "ENCODING" => ctx.reply.bulk(encoding.as_bytes()),
        "REFCOUNT" => ctx.reply.int(1),
        "IDLETIME" if lfu => {
            return Err(CmdError::fixed(
                "ERR An LFU maxmemory policy is selected, idle time not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
            ));
        }
        "IDLETIME" => ctx.reply.int((idle_ms / 1000) as i64),
        _ if !lfu => {
            return Err(CmdError::fixed(
                "ERR An LFU maxmemory policy is not selected, access frequency not tracked. Please note that when switching between policies at runtime LRU and LFU data will take some time to adjust.",
            ));
        }
        // Approximated by recency: kriminoDB keeps one access clock.
        _ => ctx.reply.int(if idle_ms < 60_000 { 5 } else { 0 }),
    }
    Ok(())
}

pub fn memory(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.is(1, "HELP") {
        ctx.reply.help(&[
            "USAGE <key> [SAMPLES <count>]",
            "    Return memory in bytes used by <key> and its value. Nested values are",
            "    sampled up to <count> times (default: 5, 0 means sample all).",
        ]);
        return Ok(());
    }
    if !args.is(1, "USAGE") {
        return Err(CmdError::unknown_subcommand(args.get(1), "memory"));
    }
    sub_arity(args, "memory", "usage", -3)?;
    match args.len() {
        3 => {}
        5 if args.is(3, "SAMPLES") => {
            if args.int(4)? < 0 {
                return Err(CmdError::SYNTAX);
            }
        }
        _ => return Err(CmdError::SYNTAX),
    }
    let bytes = ctx
        .services
        .store
        .with_key_untouched(args.get(2), ctx.now_ms, |k| {
            let e = k.entry().filter(|e| e.is_live())?;
            // The whole value, not a sample: the size is kept as it changes.
            Some(ENTRY_BYTES + e.heap_size() as u64)
        });
    match bytes {
        Some(n) => ctx.reply.int(n as i64),
        None => ctx.reply.null(),
    }
    Ok(())
}
