//! The command table: every family's rows (a new family is a file with
//! its rows plus its line in [`FAMILIES`]), and COMMAND, which reports the
//! table: it lives here so that no family imports the table listing it.

use std::sync::LazyLock;

use super::args::{Args, CmdError, CmdResult, sub_arity};
use super::context::Ctx;
use super::spec::{CommandSpec, CommandTable, spec};
use super::{cluster, connection, docs, hashes, keys, objects, server, sets, strings, transaction};
use crate::resp::Reply;

/// The table's own row.
#[rustfmt::skip]
static INTROSPECTION: &[CommandSpec] = &[
    spec!("command", -1, command, [Loading, Stale], (0, 0, 0), "server", "2.8.13", "[COUNT|INFO command-name...|DOCS command-name...|LIST]", "Returns details about commands: COUNT, INFO, DOCS, LIST."),
];

/// The command families, each a file with its rows.
static FAMILIES: &[&[CommandSpec]] = &[
    connection::FAMILY,
    INTROSPECTION,
    server::FAMILY,
    cluster::FAMILY,
    transaction::FAMILY,
    strings::FAMILY,
    keys::FAMILY,
    objects::FAMILY,
    hashes::FAMILY,
    sets::FAMILY,
];

/// Every command, in the families' order.
pub static COMMANDS: LazyLock<CommandTable> = LazyLock::new(|| CommandTable::new(FAMILIES));

fn command_info(reply: &mut Reply, c: &CommandSpec) {
    reply.array(10);
    reply.bulk(c.name.as_bytes());
    reply.int(i64::from(c.arity));
    let flags: Vec<&str> = c.reported_flags().collect();
    reply.set(flags.len());
    for f in flags {
        reply.simple(f);
    }
    reply.int(i64::from(c.first_key));
    reply.int(i64::from(c.last_key));
    reply.int(i64::from(c.key_step));
    let cats = c.acl_categories();
    reply.set(cats.len());
    for cat in &cats {
        reply.simple(cat);
    }
    reply.array(0); // tips
    reply.array(0); // key specifications
    reply.array(0); // subcommands
}

pub fn command(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let (reply, commands) = (&mut *ctx.reply, &*COMMANDS);
    if args.len() == 1 {
        reply.array(commands.len());
        for c in commands.iter() {
            command_info(reply, c);
        }
        return Ok(());
    }
    let sub = args.get(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"count" => {
            sub_arity(args, "command", "count", 2)?;
            reply.int(commands.len() as i64);
        }
        b"info" => {
            let names = args.from(2);
            if names.is_empty() {
                reply.array(commands.len());
                commands.iter().for_each(|c| command_info(reply, c));
            } else {
                reply.array(names.len());
                for name in names.iter() {
                    match commands.lookup(name) {
                        Some(c) => command_info(reply, c),
                        None => reply.null_array(),
                    }
                }
            }
        }
        b"docs" => {
            let names = args.from(2);
            if names.is_empty() {
                reply.map(commands.len());
                commands.iter().for_each(|c| docs::write_docs(reply, c));
            } else {
                let found: Vec<_> = names.iter().filter_map(|n| commands.lookup(n)).collect();
                reply.map(found.len());
                found.into_iter().for_each(|c| docs::write_docs(reply, c));
            }
        }
        b"list" => {
            reply.array(commands.len());
            for c in commands.iter() {
                reply.bulk(c.name.as_bytes());
            }
        }
        _ => return Err(CmdError::unknown_subcommand(args.get(1), "command")),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lowercase_and_found_in_any_case() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS.iter() {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(seen.insert(c.name), "duplicate {}", c.name);
            assert!(
                COMMANDS
                    .lookup(c.name.to_ascii_uppercase().as_bytes())
                    .is_some()
            );
        }
        assert!(COMMANDS.lookup(b"nosuchcommand").is_none());
        // Same length and first letter as GET, or as nothing at all.
        assert!(COMMANDS.lookup(b"gex").is_none() && COMMANDS.lookup(b"GEX").is_none());
        assert_eq!(COMMANDS.lookup(b"gEt").map(|c| c.name), Some("get"));
        assert!(COMMANDS.lookup(b"").is_none() && COMMANDS.lookup(&[b'g'; 40]).is_none());
        assert!(COMMANDS.lookup(b"\0et").is_none() && COMMANDS.lookup("gét".as_bytes()).is_none());
    }

    #[test]
    fn arity_follows_redis_convention() {
        let get = COMMANDS.lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = COMMANDS.lookup(b"set").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(9) && !set.arity_ok(2));
    }
}
