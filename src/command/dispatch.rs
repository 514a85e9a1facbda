//! Dispatch: one command through the table's checks — authentication,
//! MULTI's queue, maxmemory, arity — to its handler; and EXEC's body,
//! which dispatches the queued commands. Everything here is driven by the
//! command table's rows, never by command names.

use super::args::{Args, CmdError, truncate};
use super::context::{Ctx, Queued, Watched};
use super::spec::{CommandSpec, Flag};
use super::table::COMMANDS;
use super::transaction;

const NOAUTH: &str = "NOAUTH Authentication required.";

/// Runs one command, writing its reply (or its error) into `ctx.reply`.
pub fn dispatch(ctx: &mut Ctx<'_>, args: &Args<'_>) {
    let commands = &*COMMANDS;
    let Some(index) = commands.lookup_index(args.get(0)) else {
        if ctx.auth_pending {
            // As Redis: nothing about the node shows before AUTH, not
            // even which commands it knows.
            ctx.reply.error(NOAUTH);
        } else if ctx.tx.in_multi() {
            queue(ctx, args, None);
        } else {
            ctx.reply.error(&unknown_command(args));
        }
        return;
    };
    let spec = commands.get(index);
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
        queue(ctx, args, Some(spec));
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

/// Queues a command sent after MULTI, replying +QUEUED, or refuses it with
/// the error that makes EXEC abort.
fn queue(ctx: &mut Ctx<'_>, args: &Args<'_>, spec: Option<&CommandSpec>) {
    let refusal = match spec {
        None => Some(unknown_command(args)),
        Some(spec) if !spec.arity_ok(args.len()) => Some(CmdError::wrong_arity(spec.name).0.into()),
        Some(spec) if spec.has(Flag::NoMulti) => {
            Some("ERR Command not allowed inside a transaction".into())
        }
        Some(_) => None,
    };
    match refusal {
        Some(error) => {
            ctx.tx.refuse();
            ctx.reply.error(&error);
        }
        None => {
            ctx.tx.push(args);
            ctx.reply.simple("QUEUED");
        }
    }
}

fn unknown_command(args: &Args<'_>) -> String {
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

/// As Redis: past maxmemory, an EXEC whose queue holds a command that may
/// grow memory first makes room, and is refused whole (`-OOM`, the
/// transaction discarded) if none can be made, so no transaction is ever
/// half applied; once it passes, its commands run without further checks.
fn refused_for_memory(ctx: &Ctx<'_>, queued: &Queued) -> bool {
    ctx.store().memory().maxmemory() != 0
        && queued.iter().any(|command| {
            command
                .first()
                .and_then(|name| COMMANDS.lookup(name))
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
    if transaction::watched_changed(ctx, watched) {
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
