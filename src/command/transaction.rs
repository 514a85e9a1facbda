//! MULTI / EXEC / DISCARD / WATCH / UNWATCH, with Redis's semantics on one
//! node: queued commands run together, no other client's command runs in
//! between (the connection takes the node's transaction gate exclusively
//! for EXEC), and WATCH aborts EXEC if a watched key changed — detected by
//! its version, which every write changes.
//!
//! Each write of a transaction replicates as it always does, so peers apply
//! them one by one under the conflict rule; the transaction is atomic on the
//! node that ran it, not across the cluster.

use super::{After, Args, CmdError, CmdResult, Ctx, Flag, dispatch, lookup};
use crate::clock::Version;

use super::CommandSpec;
use super::table::spec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("multi", 1, multi, [Noscript, Loading, Stale, Fast, TxControl], (0, 0, 0), "transactions", "1.2.0", "", "Starts a transaction."),
    spec!("exec", 1, exec, [Noscript, Loading, Stale, TxControl], (0, 0, 0), "transactions", "1.2.0", "", "Runs the commands queued since MULTI, with no other command in between."),
    spec!("discard", 1, discard, [Noscript, Loading, Stale, Fast, TxControl], (0, 0, 0), "transactions", "2.0.0", "", "Drops the commands queued since MULTI."),
    spec!("watch", -2, watch, [Noscript, Loading, Stale, Fast, TxControl], (1, -1, 1), "transactions", "2.2.0", "key...", "Makes the next EXEC fail if any of these keys changes meanwhile."),
    spec!("unwatch", 1, unwatch, [Noscript, Loading, Stale, Fast], (0, 0, 0), "transactions", "2.2.0", "", "Forgets every WATCHed key."),
];

/// A queued command's arguments, owned.
pub type Queued = Vec<Vec<Vec<u8>>>;
/// WATCHed keys and the version each had when watched (None: absent).
pub type Watched = Vec<(Vec<u8>, Option<Version>)>;

/// A connection's transaction state.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Commands queued since MULTI (owned: the read buffer moves on).
    queued: Option<Queued>,
    /// A command was refused while queueing: EXEC must abort.
    dirty: bool,
    watched: Watched,
}

impl Transaction {
    pub fn in_multi(&self) -> bool {
        self.queued.is_some()
    }

    /// Queues a command sent after MULTI; replies +QUEUED or the error that
    /// makes EXEC abort.
    pub fn queue(&mut self, ctx: &mut Ctx<'_>, args: &Args<'_>) {
        let Some(spec) = lookup(args.get(0)) else {
            self.dirty = true;
            ctx.reply.error(&super::unknown_command(args));
            return;
        };
        if !spec.arity_ok(args.len()) {
            self.dirty = true;
            ctx.reply.error(&CmdError::wrong_arity(spec.name).0);
            return;
        }
        if spec.has(Flag::NoMulti) {
            self.dirty = true;
            ctx.reply
                .error("ERR Command not allowed inside a transaction");
            return;
        }
        if let Some(queued) = self.queued.as_mut() {
            queued.push(args.iter().map(<[u8]>::to_vec).collect());
        }
        ctx.reply.simple("QUEUED");
    }

    /// A command was refused before it could be queued (out of memory):
    /// EXEC must abort.
    pub fn refuse(&mut self) {
        self.dirty = true;
    }

    /// Takes what EXEC runs: None if it must abort (an error while
    /// queueing), and whether a watched key changed.
    pub fn take(&mut self) -> (Option<Queued>, Watched) {
        let queued = self.queued.take();
        let dirty = std::mem::take(&mut self.dirty);
        let watched = std::mem::take(&mut self.watched);
        (queued.filter(|_| !dirty), watched)
    }
}

pub fn multi(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if ctx.tx.in_multi() {
        return Err(CmdError::fixed("ERR MULTI calls can not be nested"));
    }
    ctx.tx.queued = Some(Vec::new());
    ctx.reply.ok();
    Ok(())
}

pub fn discard(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if !ctx.tx.in_multi() {
        return Err(CmdError::fixed("ERR DISCARD without MULTI"));
    }
    *ctx.tx = Transaction::default();
    ctx.reply.ok();
    Ok(())
}

pub fn exec(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if !ctx.tx.in_multi() {
        return Err(CmdError::fixed("ERR EXEC without MULTI"));
    }
    if ctx.tx.dirty {
        *ctx.tx = Transaction::default();
        return Err(CmdError::fixed(
            "EXECABORT Transaction discarded because of previous errors.",
        ));
    }
    // The connection runs it, holding the node's transaction gate.
    ctx.after = After::Exec;
    Ok(())
}

pub fn watch(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if ctx.tx.in_multi() {
        return Err(CmdError::fixed("ERR WATCH inside MULTI is not allowed"));
    }
    for key in args.iter().skip(1) {
        let version = ctx.store().with_key(key, ctx.now_ms, |k| {
            k.exists().then(|| k.version()).flatten()
        });
        ctx.tx.watched.push((key.to_vec(), version));
    }
    ctx.reply.ok();
    Ok(())
}

pub fn unwatch(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.tx.watched.clear();
    ctx.reply.ok();
    Ok(())
}

/// Whether any watched key holds something other than when it was watched.
pub fn watched_changed(ctx: &Ctx<'_>, watched: &Watched) -> bool {
    watched.iter().any(|(key, version)| {
        let now = ctx.store().with_key(key, ctx.now_ms, |k| {
            k.exists().then(|| k.version()).flatten()
        });
        now != *version
    })
}

/// As Redis: past maxmemory, an EXEC whose queue holds a command that may
/// grow memory first makes room, and is refused whole (`-OOM`, the
/// transaction discarded) if none can be made, so no transaction is ever
/// half applied; once it passes, its commands run without further checks.
pub fn refused_for_memory(ctx: &Ctx<'_>, queued: &Queued) -> bool {
    ctx.store().memory().maxmemory() != 0
        && queued.iter().any(|command| {
            command
                .first()
                .and_then(|name| lookup(name))
                .is_some_and(|spec| spec.may_grow_memory())
        })
        && ctx.store().ensure_memory(ctx.now_ms).is_err()
}

/// EXEC's body, for the connection and the fuzz harness alike: the abort
/// of a refused transaction, the memory check, WATCH, then every queued
/// command in order; `after_each` runs after each one (the connection
/// notes writes for WAIT and answers a WAIT queued inside the transaction).
/// The caller holds the node's transaction gate.
pub fn run_queued(
    ctx: &mut Ctx<'_>,
    queued: Option<Queued>,
    watched: &Watched,
    mut after_each: impl FnMut(&mut Ctx<'_>),
) {
    let Some(queued) = queued else {
        ctx.reply
            .error("EXECABORT Transaction discarded because of previous errors.");
        return;
    };
    if refused_for_memory(ctx, &queued) {
        ctx.reply.error(&format!(
            "EXECABORT Transaction discarded because of: {}",
            CmdError::OOM.0
        ));
        return;
    }
    ctx.memory_checked = true;
    if watched_changed(ctx, watched) {
        ctx.reply.null_array();
        return;
    }
    ctx.reply.array(queued.len());
    let mut ranges = Vec::new();
    let mut flat = Vec::new();
    for command in &queued {
        ranges.clear();
        flat.clear();
        for arg in command {
            ranges.push((flat.len(), flat.len() + arg.len()));
            flat.extend_from_slice(arg);
        }
        dispatch(ctx, &Args::new(&flat, &ranges));
        after_each(ctx);
    }
}
