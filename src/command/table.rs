//! The command metadata table: one row per command drives arity checks,
//! dispatch, and the `COMMAND` / `COMMAND DOCS` replies.

use std::sync::LazyLock;

use super::{Args, CmdResult, Ctx, cluster, connection, keys, server, strings, transaction};

pub type Handler = fn(&mut Ctx<'_>, &Args<'_>) -> CmdResult;

#[derive(Debug)]
pub struct CommandSpec {
    /// Lowercase, as Redis reports it.
    pub name: &'static str,
    /// Redis's convention: N means exactly N arguments (name included), -N
    /// means at least N.
    pub arity: i32,
    pub flags: &'static [&'static str],
    pub first_key: i32,
    pub last_key: i32,
    pub key_step: i32,
    pub group: &'static str,
    pub since: &'static str,
    pub summary: &'static str,
    /// Arguments in Redis's help notation, extended with `(a b)...` for a
    /// repeated group and `name...` for a repeated argument; COMMAND DOCS
    /// turns it into the structured form redis-cli builds its hints from.
    pub syntax: &'static str,
    pub handler: Handler,
}

impl CommandSpec {
    pub fn arity_ok(&self, argc: usize) -> bool {
        let argc = argc as i32;
        if self.arity >= 0 {
            argc == self.arity
        } else {
            argc >= -self.arity
        }
    }

    pub fn is_write(&self) -> bool {
        self.flags.contains(&"write")
    }

    /// Redis's `denyoom`: a write that may grow memory, refused past
    /// maxmemory when nothing can be evicted.
    pub fn may_grow_memory(&self) -> bool {
        self.flags.contains(&"denyoom")
    }

    /// Redis's ACL categories, derived from the group and flags.
    pub fn acl_categories(&self) -> Vec<String> {
        let mut cats = vec![format!("@{}", self.group)];
        cats.push(if self.is_write() { "@write" } else { "@read" }.to_string());
        cats.push(
            if self.flags.contains(&"fast") {
                "@fast"
            } else {
                "@slow"
            }
            .to_string(),
        );
        if self.flags.contains(&"admin") {
            cats.push("@admin".into());
            cats.push("@dangerous".into());
        }
        cats
    }
}

macro_rules! spec {
    ($name:literal, $arity:expr, $handler:path, [$($flag:literal),*], ($first:expr, $last:expr, $step:expr),
     $group:literal, $since:literal, $args:literal, $summary:literal) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: &[$($flag),*],
            first_key: $first,
            last_key: $last,
            key_step: $step,
            group: $group,
            since: $since,
            summary: $summary,
            syntax: $args,
            handler: $handler,
        }
    };
}

#[rustfmt::skip]
pub static COMMANDS: &[CommandSpec] = &[
    // connection
    spec!("ping", -1, connection::ping, ["fast", "stale"], (0, 0, 0), "connection", "1.0.0", "[message]", "Returns the server's liveliness response."),
    spec!("echo", 2, connection::echo, ["fast"], (0, 0, 0), "connection", "1.0.0", "message", "Returns the given string."),
    spec!("quit", -1, connection::quit, ["fast", "noscript", "stale", "loading", "allow_busy"], (0, 0, 0), "connection", "1.0.0", "", "Closes the connection."),
    spec!("hello", -1, connection::hello, ["fast", "noscript", "stale", "loading", "no_auth"], (0, 0, 0), "connection", "6.0.0", "[protover [AUTH username password] [SETNAME clientname]]", "Handshakes with the server: protocol version, client name."),
    spec!("select", 2, connection::select, ["fast", "stale", "loading"], (0, 0, 0), "connection", "1.0.0", "index", "Changes the selected database (only 0 exists)."),
    spec!("auth", -2, connection::auth, ["fast", "noscript", "stale", "loading", "no_auth"], (0, 0, 0), "connection", "1.0.0", "[username] password", "Authenticates the connection."),
    spec!("client", -2, connection::client, ["admin", "noscript", "loading", "stale"], (0, 0, 0), "connection", "2.4.0", "subcommand [argument...]", "CLIENT SETNAME, GETNAME, ID, LIST, INFO."),
    // server
    spec!("command", -1, server::command, ["loading", "stale"], (0, 0, 0), "server", "2.8.13", "[COUNT|INFO command-name...|DOCS command-name...|LIST]", "Returns details about commands: COUNT, INFO, DOCS, LIST."),
    spec!("info", -1, server::info, ["loading", "stale"], (0, 0, 0), "server", "1.0.0", "[section...]", "Returns information and statistics about the server."),
    spec!("dbsize", 1, server::dbsize, ["readonly", "fast"], (0, 0, 0), "server", "1.0.0", "", "Returns the number of keys."),
    spec!("flushall", -1, server::flushall, ["write"], (0, 0, 0), "server", "1.0.0", "[ASYNC|SYNC]", "Removes all keys."),
    spec!("flushdb", -1, server::flushall, ["write"], (0, 0, 0), "server", "1.0.0", "[ASYNC|SYNC]", "Removes all keys of the (only) database."),
    spec!("time", 1, server::time, ["fast", "loading", "stale"], (0, 0, 0), "server", "2.6.0", "", "Returns the server time."),
    spec!("debug", -2, server::debug, ["admin", "noscript", "loading", "stale"], (0, 0, 0), "server", "1.0.0", "DIGEST", "DEBUG DIGEST: a digest of the keyspace's contents."),
    spec!("shutdown", -1, server::shutdown, ["admin", "noscript", "loading", "stale"], (0, 0, 0), "server", "1.0.0", "[NOSAVE|SAVE] [NOW] [FORCE]", "Stops the node gracefully."),
    spec!("cluster", -2, cluster::cluster, ["admin", "loading", "stale"], (0, 0, 0), "cluster", "3.0.0", "subcommand", "CLUSTER MEMBERS and MYID: gossip membership of this leaderless cluster."),
    spec!("multi", 1, transaction::multi, ["noscript", "loading", "stale", "fast"], (0, 0, 0), "transactions", "1.2.0", "", "Starts a transaction."),
    spec!("exec", 1, transaction::exec, ["noscript", "loading", "stale"], (0, 0, 0), "transactions", "1.2.0", "", "Runs the commands queued since MULTI, with no other command in between."),
    spec!("discard", 1, transaction::discard, ["noscript", "loading", "stale", "fast"], (0, 0, 0), "transactions", "2.0.0", "", "Drops the commands queued since MULTI."),
    spec!("watch", -2, transaction::watch, ["noscript", "loading", "stale", "fast"], (1, -1, 1), "transactions", "2.2.0", "key...", "Makes the next EXEC fail if any of these keys changes meanwhile."),
    spec!("unwatch", 1, transaction::unwatch, ["noscript", "loading", "stale", "fast"], (0, 0, 0), "transactions", "2.2.0", "", "Forgets every WATCHed key."),
    spec!("wait", 3, server::wait, ["noscript"], (0, 0, 0), "generic", "3.0.0", "numreplicas timeout", "Waits until this connection's writes are acknowledged by that many peers."),
    spec!("config", -2, server::config, ["admin", "noscript", "loading", "stale"], (0, 0, 0), "server", "2.0.0", "subcommand [argument...]", "CONFIG GET of the node's settings, CONFIG SET of the memory settings, CONFIG RESETSTAT."),
    // strings
    spec!("get", 2, strings::get, ["readonly", "fast"], (1, 1, 1), "string", "1.0.0", "key", "Returns the string value of a key."),
    spec!("set", -3, strings::set, ["write", "denyoom"], (1, 1, 1), "string", "1.0.0", "key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|KEEPTTL]", "Sets the string value of a key, with options."),
    spec!("setnx", 3, strings::setnx, ["write", "denyoom", "fast"], (1, 1, 1), "string", "1.0.0", "key value", "Sets a key only if it does not exist."),
    spec!("setex", 4, strings::setex, ["write", "denyoom"], (1, 1, 1), "string", "2.0.0", "key seconds value", "Sets a key with an expiry in seconds."),
    spec!("psetex", 4, strings::psetex, ["write", "denyoom"], (1, 1, 1), "string", "2.6.0", "key milliseconds value", "Sets a key with an expiry in milliseconds."),
    spec!("getset", 3, strings::getset, ["write", "denyoom", "fast"], (1, 1, 1), "string", "1.0.0", "key value", "Sets a key and returns its previous value."),
    spec!("getdel", 2, strings::getdel, ["write", "fast"], (1, 1, 1), "string", "6.2.0", "key", "Returns a key's value and deletes it."),
    spec!("getex", -2, strings::getex, ["write", "fast"], (1, 1, 1), "string", "6.2.0", "key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT unix-time-milliseconds|PERSIST]", "Returns a key's value and changes its expiry."),
    spec!("mget", -2, strings::mget, ["readonly", "fast"], (1, -1, 1), "string", "1.0.0", "key...", "Returns the values of several keys."),
    spec!("mset", -3, strings::mset, ["write", "denyoom"], (1, -1, 2), "string", "1.0.1", "(key value)...", "Sets several keys atomically."),
    spec!("msetnx", -3, strings::msetnx, ["write", "denyoom"], (1, -1, 2), "string", "1.0.1", "(key value)...", "Sets several keys only if none exists."),
    spec!("append", 3, strings::append, ["write", "denyoom", "fast"], (1, 1, 1), "string", "2.0.0", "key value", "Appends to a key's value."),
    spec!("strlen", 2, strings::strlen, ["readonly", "fast"], (1, 1, 1), "string", "2.2.0", "key", "Returns the length of a key's value."),
    spec!("getrange", 4, strings::getrange, ["readonly"], (1, 1, 1), "string", "2.4.0", "key start end", "Returns a substring of a key's value."),
    spec!("substr", 4, strings::getrange, ["readonly"], (1, 1, 1), "string", "1.0.0", "key start end", "Returns a substring of a key's value (old name of GETRANGE)."),
    spec!("setrange", 4, strings::setrange, ["write", "denyoom"], (1, 1, 1), "string", "2.2.0", "key offset value", "Overwrites part of a key's value at an offset."),
    spec!("incr", 2, strings::incr, ["write", "denyoom", "fast"], (1, 1, 1), "string", "1.0.0", "key", "Increments an integer value by one."),
    spec!("decr", 2, strings::decr, ["write", "denyoom", "fast"], (1, 1, 1), "string", "1.0.0", "key", "Decrements an integer value by one."),
    spec!("incrby", 3, strings::incrby, ["write", "denyoom", "fast"], (1, 1, 1), "string", "1.0.0", "key increment", "Increments an integer value by a number."),
    spec!("decrby", 3, strings::decrby, ["write", "denyoom", "fast"], (1, 1, 1), "string", "1.0.0", "key decrement", "Decrements an integer value by a number."),
    spec!("incrbyfloat", 3, strings::incrbyfloat, ["write", "denyoom", "fast"], (1, 1, 1), "string", "2.6.0", "key increment", "Increments a floating point value by a number."),
    // keys
    spec!("del", -2, keys::del, ["write"], (1, -1, 1), "keyspace", "1.0.0", "key...", "Deletes keys."),
    spec!("unlink", -2, keys::del, ["write", "fast"], (1, -1, 1), "keyspace", "4.0.0", "key...", "Deletes keys (memory is reclaimed at once; same as DEL)."),
    spec!("exists", -2, keys::exists, ["readonly", "fast"], (1, -1, 1), "keyspace", "1.0.0", "key...", "Counts how many of the given keys exist."),
    spec!("type", 2, keys::type_, ["readonly", "fast"], (1, 1, 1), "keyspace", "1.0.0", "key", "Returns the type of a key's value."),
    spec!("keys", 2, keys::keys, ["readonly"], (0, 0, 0), "keyspace", "1.0.0", "pattern", "Returns the keys matching a pattern."),
    spec!("scan", -2, keys::scan, ["readonly"], (0, 0, 0), "keyspace", "2.8.0", "cursor [MATCH pattern] [COUNT count] [TYPE type]", "Iterates over the keys incrementally."),
    spec!("randomkey", 1, keys::randomkey, ["readonly"], (0, 0, 0), "keyspace", "1.0.0", "", "Returns a random key."),
    spec!("rename", 3, keys::rename, ["write"], (1, 2, 1), "keyspace", "1.0.0", "key newkey", "Renames a key, overwriting the destination."),
    spec!("renamenx", 3, keys::renamenx, ["write", "fast"], (1, 2, 1), "keyspace", "1.0.0", "key newkey", "Renames a key if the destination does not exist."),
    spec!("copy", -3, keys::copy, ["write", "denyoom"], (1, 2, 1), "keyspace", "6.2.0", "source destination [DB destination-db] [REPLACE]", "Copies a key's value to another key."),
    spec!("touch", -2, keys::exists, ["readonly", "fast"], (1, -1, 1), "keyspace", "3.2.1", "key...", "Counts the given keys that exist (and touches them)."),
    spec!("expire", -3, keys::expire, ["write", "fast"], (1, 1, 1), "keyspace", "1.0.0", "key seconds [NX|XX|GT|LT]", "Sets a key's time to live in seconds."),
    spec!("pexpire", -3, keys::pexpire, ["write", "fast"], (1, 1, 1), "keyspace", "2.6.0", "key milliseconds [NX|XX|GT|LT]", "Sets a key's time to live in milliseconds."),
    spec!("expireat", -3, keys::expireat, ["write", "fast"], (1, 1, 1), "keyspace", "1.2.0", "key unix-time-seconds [NX|XX|GT|LT]", "Sets a key's expiry as a unix time in seconds."),
    spec!("pexpireat", -3, keys::pexpireat, ["write", "fast"], (1, 1, 1), "keyspace", "2.6.0", "key unix-time-milliseconds [NX|XX|GT|LT]", "Sets a key's expiry as a unix time in milliseconds."),
    spec!("expiretime", 2, keys::expiretime, ["readonly", "fast"], (1, 1, 1), "keyspace", "7.0.0", "key", "Returns a key's expiry as a unix time in seconds."),
    spec!("pexpiretime", 2, keys::pexpiretime, ["readonly", "fast"], (1, 1, 1), "keyspace", "7.0.0", "key", "Returns a key's expiry as a unix time in milliseconds."),
    spec!("ttl", 2, keys::ttl, ["readonly", "fast"], (1, 1, 1), "keyspace", "1.0.0", "key", "Returns a key's time to live in seconds."),
    spec!("pttl", 2, keys::pttl, ["readonly", "fast"], (1, 1, 1), "keyspace", "2.6.0", "key", "Returns a key's time to live in milliseconds."),
    spec!("persist", 2, keys::persist, ["write", "fast"], (1, 1, 1), "keyspace", "2.2.0", "key", "Removes a key's expiry."),
];

/// Longest command name we store; longer names cannot match.
const MAX_NAME: usize = 32;

/// Positions in [`COMMANDS`] by the shape of the name: its length and the
/// low five bits of its first byte (the same for both cases of a letter).
/// A lookup compares the one or two names of that shape, without copying
/// or hashing the name (133 → 97 instructions per command, callgrind).
static BY_SHAPE: LazyLock<Vec<Vec<u16>>> = LazyLock::new(|| {
    let mut table = vec![Vec::new(); (MAX_NAME + 1) * 32];
    for (i, c) in COMMANDS.iter().enumerate() {
        table[shape(c.name.as_bytes())].push(i as u16);
    }
    table
});

/// Index of a non-empty name of at most [`MAX_NAME`] bytes in [`BY_SHAPE`].
fn shape(name: &[u8]) -> usize {
    name.len() * 32 + usize::from(name[0] & 0x1f)
}

/// Finds a command by name, ignoring ASCII case, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    lookup_index(name).map(|i| &COMMANDS[i])
}

/// Like [`lookup`], giving the command's position in [`COMMANDS`].
pub fn lookup_index(name: &[u8]) -> Option<usize> {
    if name.is_empty() || name.len() > MAX_NAME {
        return None;
    }
    BY_SHAPE[shape(name)]
        .iter()
        .map(|&i| usize::from(i))
        .find(|&i| COMMANDS[i].name.as_bytes().eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_lowercase_and_found_in_any_case() {
        let mut seen = std::collections::HashSet::new();
        for c in COMMANDS {
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(seen.insert(c.name), "duplicate {}", c.name);
            assert!(lookup(c.name.to_ascii_uppercase().as_bytes()).is_some());
        }
        assert!(lookup(b"nosuchcommand").is_none());
        // Same length and first letter as GET, or as nothing at all.
        assert!(lookup(b"gex").is_none() && lookup(b"GEX").is_none());
        assert_eq!(lookup(b"gEt").map(|c| c.name), Some("get"));
        assert!(lookup(b"").is_none() && lookup(&[b'g'; 40]).is_none());
        assert!(lookup(b"\0et").is_none() && lookup("gét".as_bytes()).is_none());
    }

    #[test]
    fn arity_follows_redis_convention() {
        let get = lookup(b"get").unwrap();
        assert!(get.arity_ok(2) && !get.arity_ok(1) && !get.arity_ok(3));
        let set = lookup(b"set").unwrap();
        assert!(set.arity_ok(3) && set.arity_ok(9) && !set.arity_ok(2));
    }
}
