//! Commands: the metadata table, argument access with Redis's errors, and
//! dispatch. One file per command family (its rows of the table and its
//! handlers); each handler parses its arguments, applies them to the store
//! and writes its reply. Handlers see the node only through [`Services`]:
//! what commands may use, never the tasks, sockets or peers behind it.

mod cluster;
mod connection;
mod docs;
mod keys;
mod server;
mod strings;
pub mod table;
pub mod transaction;

mod services;

use std::borrow::Cow;

use crate::clients::ClientInfo;
use crate::resp::{Reply, parse_i64};
use crate::store::Store;

pub use server::{clients_info, cluster_info, cpu_info, server_info};
pub use services::{ClusterView, NodeInfo, Services};
pub use table::{COMMANDS, CommandSpec, Flag, lookup, lookup_index};

/// A command's arguments (`args.get(0)` is the command name), borrowed from
/// the connection's buffers.
#[derive(Clone, Copy)]
pub struct Args<'a> {
    base: &'a [u8],
    ranges: &'a [(usize, usize)],
}

impl<'a> Args<'a> {
    pub fn new(base: &'a [u8], ranges: &'a [(usize, usize)]) -> Self {
        Self { base, ranges }
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Argument `i`; callers index within the arity checked by dispatch.
    pub fn get(&self, i: usize) -> &'a [u8] {
        let (start, end) = self.ranges[i];
        &self.base[start..end]
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &'a [u8]> + '_ {
        self.ranges.iter().map(|&(s, e)| &self.base[s..e])
    }

    /// Arguments from `i` on.
    pub fn from(&self, i: usize) -> Args<'a> {
        Args {
            base: self.base,
            ranges: &self.ranges[i.min(self.ranges.len())..],
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, CmdError> {
        parse_i64(self.get(i)).ok_or(CmdError::NOT_INTEGER)
    }

    /// Whether argument `i` equals `word`, ignoring ASCII case.
    pub fn is(&self, i: usize, word: &str) -> bool {
        self.get(i).eq_ignore_ascii_case(word.as_bytes())
    }
}

/// An error reply, with its code (`ERR …`, `WRONGTYPE …`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdError(pub Cow<'static, str>);

impl CmdError {
    pub const SYNTAX: Self = Self::fixed("ERR syntax error");
    pub const NOT_INTEGER: Self = Self::fixed("ERR value is not an integer or out of range");
    pub const NOT_FLOAT: Self = Self::fixed("ERR value is not a valid float");
    pub const NO_SUCH_KEY: Self = Self::fixed("ERR no such key");
    pub const DB_RANGE: Self = Self::fixed("ERR DB index is out of range");
    pub const OVERFLOW: Self = Self::fixed("ERR increment or decrement would overflow");
    /// Redis 7's reply, word for word, to a write refused by `noeviction`
    /// (or when no key is left to evict).
    pub const OOM: Self = Self::fixed("OOM command not allowed when used memory > 'maxmemory'.");
    #[allow(dead_code)] // the first non-string type (a later issue) raises it
    pub const WRONG_TYPE: Self =
        Self::fixed("WRONGTYPE Operation against a key holding the wrong kind of value");

    pub const fn fixed(msg: &'static str) -> Self {
        Self(Cow::Borrowed(msg))
    }

    pub fn new(msg: String) -> Self {
        Self(Cow::Owned(msg))
    }

    pub fn wrong_arity(name: &str) -> Self {
        Self::new(format!(
            "ERR wrong number of arguments for '{name}' command"
        ))
    }

    pub fn invalid_expire(name: &str) -> Self {
        Self::new(format!("ERR invalid expire time in '{name}' command"))
    }

    pub fn unknown_subcommand(sub: &[u8], parent: &str) -> Self {
        Self::new(format!(
            "ERR unknown subcommand '{}'. Try {} HELP.",
            truncate(sub, 128),
            parent.to_ascii_uppercase()
        ))
    }
}

pub type CmdResult = Result<(), CmdError>;

fn truncate(bytes: &[u8], max: usize) -> Cow<'_, str> {
    String::from_utf8_lossy(&bytes[..bytes.len().min(max)])
}

/// What the connection does after a command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send the replies so far, then close (QUIT, SHUTDOWN).
    Close,
    /// WAIT: reply once `replicas` peers acknowledged this client's
    /// writes, or after `timeout_ms` (0: no timeout).
    Wait {
        replicas: usize,
        timeout_ms: u64,
    },
    /// EXEC: run the queued transaction with the node to itself.
    Exec,
}

/// Everything a handler may touch.
pub struct Ctx<'a> {
    pub services: &'a Services,
    pub client: &'a ClientInfo,
    pub reply: &'a mut Reply,
    pub now_ms: u64,
    pub after: After,
    /// Set when the command was a write (WAIT waits for those).
    pub wrote: bool,
    /// Set inside EXEC, which checked memory once for the whole queue.
    pub memory_checked: bool,
    pub tx: &'a mut transaction::Transaction,
    /// The client has yet to authenticate: only `no_auth` commands run.
    pub auth_pending: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        services: &'a Services,
        client: &'a ClientInfo,
        reply: &'a mut Reply,
        now_ms: u64,
        tx: &'a mut transaction::Transaction,
    ) -> Self {
        Self {
            services,
            client,
            reply,
            now_ms,
            after: After::Continue,
            wrote: false,
            memory_checked: false,
            tx,
            auth_pending: false,
        }
    }

    pub fn store(&self) -> &Store {
        &self.services.store
    }
}

const NOAUTH: &str = "NOAUTH Authentication required.";

/// Runs one command, writing its reply (or its error) into `ctx.reply`.
pub fn dispatch(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let Some(index) = lookup_index(args.get(0)) else {
        if ctx.auth_pending {
            // As Redis: nothing about the node shows before AUTH, not
            // even which commands it knows.
            ctx.reply.error(NOAUTH);
        } else if ctx.tx.in_multi() {
            queue(ctx, args);
        } else {
            ctx.reply.error(&unknown_command(args));
        }
        return;
    };
    let spec = COMMANDS[index];
    if ctx.auth_pending && !spec.has(Flag::NoAuth) {
        ctx.reply.error(NOAUTH);
        return;
    }
    ctx.client.set_last_command(index);
    let queueing = ctx.tx.in_multi() && !spec.has(Flag::TxControl);
    // As Redis: past maxmemory, commands flagged `denyoom` (writes that may
    // grow memory) first make room per the eviction policy, and are
    // refused if none can be made; reads and deletes always run. A refused
    // command inside MULTI makes EXEC abort, as in Redis; EXEC itself
    // checks once for its whole queue (`transaction::refused_for_memory`).
    if !ctx.memory_checked
        && ctx.store().memory().maxmemory() != 0
        && spec.may_grow_memory()
        && spec.arity_ok(args.len())
        && ctx.store().ensure_memory(ctx.now_ms).is_err()
    {
        if queueing {
            ctx.tx.refuse();
        }
        ctx.reply.error(&CmdError::OOM.0);
        return;
    }
    if queueing {
        queue(ctx, args);
        return;
    }
    if !spec.arity_ok(args.len()) {
        ctx.reply.error(&CmdError::wrong_arity(spec.name).0);
        return;
    }
    match (spec.handler)(ctx, args) {
        Ok(()) => ctx.wrote |= spec.is_write(),
        Err(e) => ctx.reply.error(&e.0),
    }
}

/// Queues a command after MULTI (the transaction is taken out of the
/// context for the call so it can write the reply through the context).
fn queue(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let mut tx = std::mem::take(ctx.tx);
    tx.queue(ctx, args);
    *ctx.tx = tx;
}

pub(crate) fn unknown_command(args: &Args<'_>) -> String {
    let mut listed = String::new();
    for arg in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&truncate(arg, room));
        listed.push_str("' ");
    }
    format!(
        "ERR unknown command '{}', with args beginning with: {listed}",
        truncate(args.get(0), 128)
    )
}

/// Checks a subcommand's arity, Redis-style (`'client|setname'`).
pub fn sub_arity(args: &Args<'_>, parent: &str, sub: &str, arity: i32) -> CmdResult {
    let n = args.len() as i32;
    if (arity > 0 && n != arity) || n < -arity {
        return Err(CmdError::wrong_arity(&format!("{parent}|{sub}")));
    }
    Ok(())
}
