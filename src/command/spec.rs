//! What the command table is made of: a row ([`CommandSpec`]) per
//! command, its typed [`Flag`]s, the `spec!` macro the families write their
//! rows with, and the assembled [`CommandTable`] with its lookup by name.

use super::args::{Args, CmdResult};
use super::context::Ctx;

pub type Handler = fn(&mut Ctx<'_>, &Args<'_>) -> CmdResult;

/// A command's flags. Redis's own are reported by COMMAND INFO under
/// Redis's names; the rest are kriminoDB's and drive dispatch only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Flag {
    /// Changes the keyspace: a client that ran it waits for it in WAIT.
    Write,
    Readonly,
    /// A write that may grow memory: past maxmemory it first makes room
    /// per the eviction policy, or is refused with -OOM.
    Denyoom,
    Admin,
    Noscript,
    Loading,
    Stale,
    Fast,
    /// Runs before the client authenticates (AUTH, HELLO, QUIT).
    NoAuth,
    /// Refused inside MULTI ("Command not allowed inside a transaction").
    NoMulti,
    AllowBusy,
    /// kriminoDB's own: acts at once inside MULTI instead of being queued
    /// (MULTI, EXEC, DISCARD, WATCH, QUIT, as Redis hard-codes them).
    TxControl,
}

impl Flag {
    /// Redis's name, or None for kriminoDB's own flags.
    pub fn redis_name(self) -> Option<&'static str> {
        Some(match self {
            Self::Write => "write",
            Self::Readonly => "readonly",
            Self::Denyoom => "denyoom",
            Self::Admin => "admin",
            Self::Noscript => "noscript",
            Self::Loading => "loading",
            Self::Stale => "stale",
            Self::Fast => "fast",
            Self::NoAuth => "no_auth",
            Self::NoMulti => "no_multi",
            Self::AllowBusy => "allow_busy",
            Self::TxControl => return None,
        })
    }

    /// The flags as a bit set, for one-instruction checks on the hot path.
    pub const fn mask(flags: &[Flag]) -> u32 {
        let mut mask = 0;
        let mut i = 0;
        while i < flags.len() {
            mask |= 1 << flags[i] as u32;
            i += 1;
        }
        mask
    }
}

#[derive(Debug)]
pub struct CommandSpec {
    /// Lowercase, as Redis reports it.
    pub name: &'static str,
    /// Redis's convention: N means exactly N arguments (name included), -N
    /// means at least N.
    pub arity: i32,
    /// In the order COMMAND INFO reports them.
    pub flags: &'static [Flag],
    /// The same, as a bit set.
    pub mask: u32,
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

    pub fn has(&self, flag: Flag) -> bool {
        self.mask & (1 << flag as u32) != 0
    }

    pub fn is_write(&self) -> bool {
        self.has(Flag::Write)
    }

    /// Redis's `denyoom`: a write that may grow memory, refused past
    /// maxmemory when nothing can be evicted.
    pub fn may_grow_memory(&self) -> bool {
        self.has(Flag::Denyoom)
    }

    /// The flags COMMAND INFO reports, by Redis's names.
    pub fn reported_flags(&self) -> impl Iterator<Item = &'static str> {
        self.flags.iter().filter_map(|f| f.redis_name())
    }

    /// Redis's ACL categories, derived from the group and flags.
    pub fn acl_categories(&self) -> Vec<String> {
        let mut cats = vec![format!("@{}", self.group)];
        cats.push(if self.is_write() { "@write" } else { "@read" }.to_string());
        cats.push(
            if self.has(Flag::Fast) {
                "@fast"
            } else {
                "@slow"
            }
            .to_string(),
        );
        if self.has(Flag::Admin) {
            cats.push("@admin".into());
            cats.push("@dangerous".into());
        }
        cats
    }
}

/// One row of the command table (the families' files use it).
macro_rules! spec {
    ($name:literal, $arity:expr, $handler:path, [$($flag:ident),*], ($first:expr, $last:expr, $step:expr),
     $group:literal, $since:literal, $args:literal, $summary:literal) => {
        $crate::command::CommandSpec {
            name: $name,
            arity: $arity,
            flags: &[$($crate::command::Flag::$flag),*],
            mask: $crate::command::Flag::mask(&[$($crate::command::Flag::$flag),*]),
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
pub(super) use spec;

/// Longest command name we store; longer names cannot match.
const MAX_NAME: usize = 32;

/// Every command, and a lookup by name. A command's index here is its
/// identity (CLIENT LIST's `cmd=` keeps one per client).
pub struct CommandTable {
    all: Vec<&'static CommandSpec>,
    /// Positions in `all` by the shape of the name: its length and the
    /// low five bits of its first byte (the same for both cases of a
    /// letter). A lookup compares the one or two names of that shape,
    /// without copying or hashing the name (133 → 97 instructions per
    /// command, callgrind).
    by_shape: Vec<Vec<u16>>,
}

/// Index of a non-empty name of at most [`MAX_NAME`] bytes in `by_shape`.
fn shape(name: &[u8]) -> usize {
    name.len() * 32 + usize::from(name[0] & 0x1f)
}

impl CommandTable {
    /// The table of every family's rows, in the families' order.
    pub fn new(families: &[&'static [CommandSpec]]) -> Self {
        let all: Vec<&'static CommandSpec> = families.iter().flat_map(|f| f.iter()).collect();
        let mut by_shape = vec![Vec::new(); (MAX_NAME + 1) * 32];
        for (i, c) in all.iter().enumerate() {
            by_shape[shape(c.name.as_bytes())].push(i as u16);
        }
        Self { all, by_shape }
    }

    /// Finds a command by name, ignoring ASCII case, without allocating.
    pub fn lookup(&self, name: &[u8]) -> Option<&'static CommandSpec> {
        self.lookup_index(name).map(|i| self.all[i])
    }

    /// Like [`Self::lookup`], giving the command's index.
    pub fn lookup_index(&self, name: &[u8]) -> Option<usize> {
        if name.is_empty() || name.len() > MAX_NAME {
            return None;
        }
        self.by_shape[shape(name)]
            .iter()
            .map(|&i| usize::from(i))
            .find(|&i| self.all[i].name.as_bytes().eq_ignore_ascii_case(name))
    }

    /// The command at `index` (from [`Self::lookup_index`]).
    pub fn get(&self, index: usize) -> &'static CommandSpec {
        self.all[index]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'static CommandSpec> + '_ {
        self.all.iter().copied()
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}
