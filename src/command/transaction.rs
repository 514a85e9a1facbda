//! MULTI / EXEC / DISCARD / WATCH / UNWATCH, with Redis's semantics on one
//! node: queued commands run together, no other client's command runs in
//! between (the connection takes the node's transaction gate exclusively
//! for EXEC), and WATCH aborts EXEC if a watched key changed — detected by
//! its version, which every write changes.
//!
//! Each write of a transaction replicates as it always does, so peers apply
//! them one by one under the conflict rule; the transaction is atomic on the
//! node that ran it, not across the cluster.

use super::args::{Args, CmdError, CmdResult};
use super::context::{After, Ctx, Transaction, Watched};
use super::spec::{CommandSpec, spec};

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("multi", 1, multi, [Noscript, Loading, Stale, Fast, TxControl], (0, 0, 0), "transactions", "1.2.0", "", "Starts a transaction."),
    spec!("exec", 1, exec, [Noscript, Loading, Stale, TxControl], (0, 0, 0), "transactions", "1.2.0", "", "Runs the commands queued since MULTI, with no other command in between."),
    spec!("discard", 1, discard, [Noscript, Loading, Stale, Fast, TxControl], (0, 0, 0), "transactions", "2.0.0", "", "Drops the commands queued since MULTI."),
    spec!("watch", -2, watch, [Noscript, Loading, Stale, Fast, TxControl], (1, -1, 1), "transactions", "2.2.0", "key...", "Makes the next EXEC fail if any of these keys changes meanwhile."),
    spec!("unwatch", 1, unwatch, [Noscript, Loading, Stale, Fast], (0, 0, 0), "transactions", "2.2.0", "", "Forgets every WATCHed key."),
];

pub fn multi(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    if ctx.tx.in_multi() {
        return Err(CmdError::fixed("ERR MULTI calls can not be nested"));
    }
    ctx.tx.begin();
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
    if ctx.tx.is_dirty() {
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
            k.exists().then(|| k.watch_version()).flatten()
        });
        ctx.tx.watch(key, version);
    }
    ctx.reply.ok();
    Ok(())
}

pub fn unwatch(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    ctx.tx.unwatch();
    ctx.reply.ok();
    Ok(())
}

/// Whether any watched key holds something other than when it was watched.
pub fn watched_changed(ctx: &Ctx<'_>, watched: &Watched) -> bool {
    watched.iter().any(|(key, version)| {
        let now = ctx.store().with_key(key, ctx.now_ms, |k| {
            k.exists().then(|| k.watch_version()).flatten()
        });
        now != *version
    })
}
