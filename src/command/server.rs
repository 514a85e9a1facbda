//! Server commands: COMMAND, INFO, DBSIZE, FLUSHALL/FLUSHDB, TIME, DEBUG
//! DIGEST, SHUTDOWN, CONFIG GET.

use super::connection::REDIS_COMPAT_VERSION;
use super::{After, Args, CmdError, CmdResult, CommandSpec, Ctx, Services, sub_arity};
use crate::info::InfoWriter;
use crate::store::Glob;

use super::spec::spec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("info", -1, info, [Loading, Stale], (0, 0, 0), "server", "1.0.0", "[section...]", "Returns information and statistics about the server."),
    spec!("dbsize", 1, dbsize, [Readonly, Fast], (0, 0, 0), "server", "1.0.0", "", "Returns the number of keys."),
    spec!("flushall", -1, flushall, [Write], (0, 0, 0), "server", "1.0.0", "[ASYNC|SYNC]", "Removes all keys."),
    spec!("flushdb", -1, flushall, [Write], (0, 0, 0), "server", "1.0.0", "[ASYNC|SYNC]", "Removes all keys of the (only) database."),
    spec!("time", 1, time, [Fast, Loading, Stale], (0, 0, 0), "server", "2.6.0", "", "Returns the server time."),
    spec!("debug", -2, debug, [Admin, Noscript, Loading, Stale], (0, 0, 0), "server", "1.0.0", "DIGEST", "DEBUG DIGEST: a digest of the keyspace's contents."),
    spec!("shutdown", -1, shutdown, [Admin, Noscript, Loading, Stale, NoMulti], (0, 0, 0), "server", "1.0.0", "[NOSAVE|SAVE] [NOW] [FORCE]", "Stops the node gracefully."),
    spec!("wait", 3, wait, [Noscript], (0, 0, 0), "generic", "3.0.0", "numreplicas timeout", "Waits until this connection's writes are acknowledged by that many peers."),
    spec!("config", -2, config, [Admin, Noscript, Loading, Stale], (0, 0, 0), "server", "2.0.0", "subcommand [argument...]", "CONFIG GET of the node's settings, CONFIG SET of the memory settings, CONFIG RESETSTAT."),
];

pub fn info(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let requested: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let text = ctx.services.info.render(ctx.services, &requested);
    ctx.reply.verbatim(&text);
    Ok(())
}

/// INFO server.
pub fn server_info(node: &Services, w: &mut InfoWriter<'_>) {
    let uptime = node.uptime().as_secs();
    w.field("redis_version", REDIS_COMPAT_VERSION);
    w.field("kriminodb_version", env!("CARGO_PKG_VERSION"));
    w.field("redis_mode", "standalone");
    w.field("node_name", &node.node.name);
    w.field("node_id", format_args!("{:016x}", node.node.node_id));
    w.field("os", std::env::consts::OS);
    w.field("arch_bits", usize::BITS);
    w.field("multiplexing_api", "epoll");
    w.field("process_id", std::process::id());
    w.field("run_id", &node.node.run_id);
    w.field("tcp_port", node.node.client_addr.port());
    w.field("peer_port", node.config.peer_port);
    w.field("uptime_in_seconds", uptime);
    w.field("uptime_in_days", uptime / 86_400);
    w.field("hz", 10);
    w.field(
        "executable",
        std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
    w.field(
        "config_file",
        node.config
            .config
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    );
}

/// INFO clients.
pub fn clients_info(node: &Services, w: &mut InfoWriter<'_>) {
    w.field("connected_clients", node.clients.len());
    w.field("maxclients", node.config.maxclients);
    w.field("blocked_clients", 0);
}

/// INFO cpu (not measured yet: Redis's fields, zero).
pub fn cpu_info(_: &Services, w: &mut InfoWriter<'_>) {
    w.field("used_cpu_sys", "0.000000");
    w.field("used_cpu_user", "0.000000");
}

/// INFO cluster: kriminoDB replicates every key to every node instead of
/// sharding, so Redis Cluster clients must not route by slot.
pub fn cluster_info(_: &Services, w: &mut InfoWriter<'_>) {
    w.field("cluster_enabled", 0);
}

pub fn wait(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let replicas = args.int(1)?;
    let timeout = args.int(2)?;
    if timeout < 0 {
        return Err(CmdError::fixed("ERR timeout is negative"));
    }
    ctx.after = After::Wait {
        replicas: usize::try_from(replicas).unwrap_or(0),
        timeout_ms: timeout as u64,
    };
    Ok(())
}

pub fn dbsize(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let n = ctx.services.store.len();
    ctx.reply.int(n as i64);
    Ok(())
}

/// FLUSHALL and FLUSHDB (there is one database).
pub fn flushall(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    match args.len() {
        1 => {}
        2 if args.is(1, "ASYNC") || args.is(1, "SYNC") => {}
        _ => return Err(CmdError::SYNTAX),
    }
    ctx.services.store.flush_all();
    ctx.reply.ok();
    Ok(())
}

pub fn time(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let micros = ctx.services.clock.wall_micros();
    ctx.reply.array(2);
    ctx.reply.bulk_int((micros / 1_000_000) as i64);
    ctx.reply.bulk_int((micros % 1_000_000) as i64);
    Ok(())
}

pub fn debug(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.is(1, "DIGEST") {
        sub_arity(args, "debug", "digest", 2)?;
        let digest = ctx.services.store.digest(ctx.now_ms);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        ctx.reply.simple(&hex);
        return Ok(());
    }
    if args.is(1, "VERSION") {
        // kriminoDB's own: the fault checker needs the version that decided
        // each key (DESIGN: the largest version wins) to verify that rule
        // from outside. Decimal strings: the node id is a full u64.
        sub_arity(args, "debug", "version", 3)?;
        let reply = &mut *ctx.reply;
        // Untouched: inspecting a key must not make it look recently used.
        ctx.services
            .store
            .with_key_untouched(args.get(2), ctx.now_ms, |k| {
                match k.version().filter(|_| k.exists()) {
                    Some(v) => {
                        reply.array(2);
                        reply.bulk(v.hlc.to_string().as_bytes());
                        reply.bulk(v.node_id.to_string().as_bytes());
                    }
                    None => reply.null(),
                }
            });
        return Ok(());
    }
    if args.is(1, "HELP") {
        ctx.reply.help(&[
            "DIGEST",
            "    Output a hex signature representing the current keyspace.",
            "VERSION <key>",
            "    Return the version (HLC, node id) of the key's value, or nil.",
        ]);
        return Ok(());
    }
    Err(CmdError::unknown_subcommand(args.get(1), "debug"))
}

pub fn shutdown(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    for i in 1..args.len() {
        if args.is(i, "ABORT") {
            return Err(CmdError::fixed("ERR No shutdown in progress."));
        }
        if !["NOSAVE", "SAVE", "NOW", "FORCE"]
            .iter()
            .any(|w| args.is(i, w))
        {
            return Err(CmdError::SYNTAX);
        }
    }
    tracing::info!(client = ctx.client.id, "SHUTDOWN requested by a client");
    ctx.services.shutdown.cancel();
    // Redis closes the connection without a reply when it shuts down.
    ctx.after = After::Close;
    Ok(())
}

/// The settings CONFIG GET reports, with Redis's names.
fn config_values(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = &ctx.services.config;
    vec![
        ("bind", c.bind.to_string()),
        (
            "port",
            // 0 when the plain port is disabled, as Redis reports it.
            if c.tls_port.is_some() && c.port == 0 {
                "0".into()
            } else {
                ctx.services.node.client_addr.port().to_string()
            },
        ),
        ("maxclients", c.maxclients.to_string()),
        ("proto-max-bulk-len", c.proto_max_bulk_len.to_string()),
        (
            "client-query-buffer-limit",
            c.client_query_buffer_limit.to_string(),
        ),
        ("databases", "1".into()),
        ("save", String::new()),
        ("appendonly", "no".into()),
        (
            "maxmemory",
            ctx.services.store.memory().maxmemory().to_string(),
        ),
        (
            "maxmemory-policy",
            ctx.services.store.memory().policy().name().into(),
        ),
        (
            "maxmemory-samples",
            ctx.services.store.memory().samples().to_string(),
        ),
        ("timeout", c.timeout.to_string()),
        // As Redis: only an authenticated client gets this far, and it
        // knew the password already.
        (
            "requirepass",
            c.requirepass
                .as_ref()
                .map_or_else(String::new, |p| p.expose().to_string()),
        ),
        (
            "protected-mode",
            if c.protected_mode { "yes" } else { "no" }.into(),
        ),
        (
            "client-output-buffer-limit",
            format!(
                "normal {} 0 0 slave 0 0 0 pubsub 0 0 0",
                c.client_output_buffer_limit
            ),
        ),
        (
            "tls-port",
            ctx.services
                .node
                .tls_addr
                .map_or(0, |a| a.port())
                .to_string(),
        ),
        ("hz", "10".into()),
    ]
    .into_iter()
    .chain(
        ctx.services
            .tunables
            .all()
            .into_iter()
            .map(|(name, v)| (name, v.to_string())),
    )
    .collect()
}

/// A setting CONFIG SET can change at run time, parsed.
enum Setting {
    MaxMemory(u64),
    Policy(crate::store::Policy),
    Samples(u32),
    Tunable(&'static str, i64),
}

fn config_failed(name: &str, why: &str) -> CmdError {
    CmdError::new(format!(
        "ERR CONFIG SET failed (possibly related to argument '{name}') - {why}"
    ))
}

/// CONFIG SET name value [name value ...]: the memory settings only (the
/// others are flags, fixed at start). Every pair is checked before any is
/// applied, as Redis does.
fn config_set(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let pairs = args.from(2);
    let unknown = |name: &[u8]| {
        CmdError::new(format!(
            "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
            String::from_utf8_lossy(name)
        ))
    };
    if !pairs.len().is_multiple_of(2) {
        return Err(unknown(pairs.get(0)));
    }
    let mut settings = Vec::with_capacity(pairs.len() / 2);
    for i in (0..pairs.len()).step_by(2) {
        let (name, value) = (pairs.get(i), pairs.get(i + 1));
        let text = String::from_utf8_lossy(value);
        let setting = match name.to_ascii_lowercase().as_slice() {
            b"maxmemory" => crate::config::parse_memory(&text)
                .map(Setting::MaxMemory)
                .map_err(|_| config_failed("maxmemory", "argument must be a memory value"))?,
            b"maxmemory-policy" => crate::store::Policy::parse(value)
                .map(Setting::Policy)
                .ok_or_else(|| {
                    config_failed(
                        "maxmemory-policy",
                        &format!(
                            "argument(s) must be one of the following: {}",
                            crate::store::Policy::names()
                        ),
                    )
                })?,
            b"maxmemory-samples" => text
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=64).contains(n))
                .map(Setting::Samples)
                .ok_or_else(|| {
                    config_failed(
                        "maxmemory-samples",
                        "argument must be between 1 and 64 inclusive",
                    )
                })?,
            other => match super::tunables::Tunables::lookup(other) {
                Some(tunable) => text
                    .parse::<i64>()
                    .map(|v| Setting::Tunable(tunable, v))
                    .map_err(|_| {
                        config_failed(tunable, "argument couldn't be parsed into an integer")
                    })?,
                None => return Err(unknown(name)),
            },
        };
        settings.push(setting);
    }
    let limit = ctx.services.store.memory();
    for setting in settings {
        match setting {
            Setting::MaxMemory(bytes) => limit.set_maxmemory(bytes),
            Setting::Policy(policy) => limit.set_policy(policy),
            Setting::Samples(n) => limit.set_samples(n),
            Setting::Tunable(name, v) => ctx.services.tunables.set(name, v),
        }
    }
    ctx.reply.ok();
    Ok(())
}

pub fn config(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.is(1, "GET") {
        sub_arity(args, "config", "get", -3)?;
        let patterns: Vec<Glob> = args.iter().skip(2).map(Glob::new).collect();
        let matched: Vec<_> = config_values(ctx)
            .into_iter()
            .filter(|(k, _)| patterns.iter().any(|p| p.matches(k.as_bytes())))
            .collect();
        ctx.reply.map(matched.len());
        for (k, v) in matched {
            ctx.reply.bulk(k.as_bytes());
            ctx.reply.bulk(v.as_bytes());
        }
        return Ok(());
    }
    if args.is(1, "SET") {
        sub_arity(args, "config", "set", -4)?;
        return config_set(ctx, args);
    }
    if args.is(1, "RESETSTAT") {
        sub_arity(args, "config", "resetstat", 2)?;
        ctx.services.stats.reset();
        ctx.services.store.memory().reset_stats();
        ctx.reply.ok();
        return Ok(());
    }
    Err(CmdError::unknown_subcommand(args.get(1), "config"))
}
