//! Server commands: COMMAND, INFO, DBSIZE, FLUSHALL/FLUSHDB, TIME, DEBUG
//! DIGEST, SHUTDOWN, CONFIG GET.

use std::fmt::Write as _;

use super::connection::REDIS_COMPAT_VERSION;
use super::{After, Args, COMMANDS, CmdError, CmdResult, CommandSpec, Ctx, lookup, sub_arity};
use crate::resp::Reply;
use crate::stats::{Stats, human_bytes, rss_bytes, used_memory};
use crate::store::Glob;

fn command_info(reply: &mut Reply, c: &CommandSpec) {
    reply.array(10);
    reply.bulk(c.name.as_bytes());
    reply.int(i64::from(c.arity));
    reply.set(c.flags.len());
    for f in c.flags {
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
    let reply = &mut *ctx.reply;
    if args.len() == 1 {
        reply.array(COMMANDS.len());
        for c in COMMANDS {
            command_info(reply, c);
        }
        return Ok(());
    }
    let sub = args.get(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"count" => {
            sub_arity(args, "command", "count", 2)?;
            reply.int(COMMANDS.len() as i64);
        }
        b"info" => {
            let names = args.from(2);
            if names.is_empty() {
                reply.array(COMMANDS.len());
                COMMANDS.iter().for_each(|c| command_info(reply, c));
            } else {
                reply.array(names.len());
                for name in names.iter() {
                    match lookup(name) {
                        Some(c) => command_info(reply, c),
                        None => reply.null_array(),
                    }
                }
            }
        }
        b"docs" => {
            let names = args.from(2);
            if names.is_empty() {
                reply.map(COMMANDS.len());
                COMMANDS
                    .iter()
                    .for_each(|c| super::docs::write_docs(reply, c));
            } else {
                let found: Vec<_> = names.iter().filter_map(lookup).collect();
                reply.map(found.len());
                found
                    .into_iter()
                    .for_each(|c| super::docs::write_docs(reply, c));
            }
        }
        b"list" => {
            reply.array(COMMANDS.len());
            for c in COMMANDS {
                reply.bulk(c.name.as_bytes());
            }
        }
        _ => return Err(CmdError::unknown_subcommand(args.get(1), "command")),
    }
    Ok(())
}

const DEFAULT_SECTIONS: &[&str] = &[
    "server",
    "clients",
    "memory",
    "stats",
    "replication",
    "cpu",
    "cluster",
    "membership",
    "keyspace",
];

pub fn info(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let requested: Vec<String> = args
        .iter()
        .skip(1)
        .map(|a| String::from_utf8_lossy(a).to_ascii_lowercase())
        .collect();
    let all = requested.is_empty()
        || requested
            .iter()
            .any(|s| s == "all" || s == "default" || s == "everything");
    let mut text = String::new();
    for section in DEFAULT_SECTIONS {
        if all || requested.iter().any(|r| r == section) {
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            info_section(ctx, section, &mut text);
        }
    }
    ctx.reply.verbatim(&text);
    Ok(())
}

fn kv(out: &mut String, key: &str, value: &dyn std::fmt::Display) {
    // Writing to a String cannot fail.
    let _ = write!(out, "{key}:{value}\r\n");
}

fn info_section(ctx: &Ctx<'_>, section: &str, out: &mut String) {
    let node = ctx.node;
    let stats = &node.stats;
    match section {
        "server" => {
            let uptime = node.uptime().as_secs();
            out.push_str("# Server\r\n");
            kv(out, "redis_version", &REDIS_COMPAT_VERSION);
            kv(out, "kriminodb_version", &env!("CARGO_PKG_VERSION"));
            kv(out, "redis_mode", &"standalone");
            kv(out, "node_name", &node.name);
            kv(out, "node_id", &format_args!("{:016x}", node.node_id));
            kv(out, "os", &std::env::consts::OS);
            kv(out, "arch_bits", &(usize::BITS));
            kv(out, "multiplexing_api", &"epoll");
            kv(out, "process_id", &std::process::id());
            kv(out, "run_id", &node.run_id);
            kv(out, "tcp_port", &node.client_addr.port());
            kv(out, "peer_port", &node.config.peer_port);
            kv(out, "uptime_in_seconds", &uptime);
            kv(out, "uptime_in_days", &(uptime / 86_400));
            kv(out, "hz", &10);
            kv(
                out,
                "executable",
                &std::env::current_exe()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
            kv(
                out,
                "config_file",
                &node
                    .config
                    .config
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            );
        }
        "clients" => {
            out.push_str("# Clients\r\n");
            kv(out, "connected_clients", &node.clients.len());
            kv(out, "maxclients", &node.config.maxclients);
            kv(out, "blocked_clients", &0);
        }
        "memory" => {
            let used = used_memory();
            let rss = rss_bytes();
            out.push_str("# Memory\r\n");
            kv(out, "used_memory", &used);
            kv(out, "used_memory_human", &human_bytes(used));
            kv(out, "used_memory_rss", &rss);
            kv(out, "used_memory_rss_human", &human_bytes(rss));
            let limit = node.store.memory();
            kv(out, "maxmemory", &limit.maxmemory());
            kv(out, "maxmemory_human", &human_bytes(limit.maxmemory()));
            kv(out, "maxmemory_policy", &limit.policy().name());
            kv(out, "mem_allocator", &"jemalloc");
        }
        "stats" => {
            out.push_str("# Stats\r\n");
            for (name, counter) in [
                (
                    "total_connections_received",
                    &stats.total_connections_received,
                ),
                ("total_commands_processed", &stats.total_commands_processed),
                ("total_net_input_bytes", &stats.net_input_bytes),
                ("total_net_output_bytes", &stats.net_output_bytes),
                ("rejected_connections", &stats.rejected_connections),
            ] {
                kv(out, name, &Stats::get(counter));
            }
            kv(
                out,
                "expired_keys",
                &node
                    .store
                    .stats
                    .expired_keys
                    .load(std::sync::atomic::Ordering::Relaxed),
            );
            let limit = node.store.memory();
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            kv(out, "evicted_keys", &load(&limit.evicted_keys));
            // kriminoDB's own: writes from peers applied past maxmemory
            // under noeviction (they are never refused).
            kv(
                out,
                "replicated_writes_over_maxmemory",
                &load(&limit.replicated_over),
            );
        }
        "replication" => {
            // Every node is a master in Redis's terms: it takes writes.
            let r = &node.replication;
            let load =
                |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
            out.push_str("# Replication\r\n");
            kv(out, "role", &"master");
            kv(out, "connected_slaves", &0);
            kv(out, "peers_linked", &r.connected_peers());
            kv(
                out,
                "initial_sync_done",
                &u8::from(
                    r.stats
                        .initial_sync_done
                        .load(std::sync::atomic::Ordering::Relaxed),
                ),
            );
            kv(out, "syncs_completed", &load(&r.stats.syncs_completed));
            kv(out, "entries_pushed", &load(&r.stats.entries_pushed));
            kv(out, "entries_received", &load(&r.stats.entries_received));
            kv(out, "peer_bytes_sent", &load(&r.stats.sync_bytes_sent));
            kv(out, "queue_overflows", &load(&r.stats.queue_overflows));
            kv(out, "bad_frames", &load(&r.stats.bad_frames));
            kv(out, "auth_failures", &load(&r.stats.auth_failures));
            kv(
                out,
                "rejected_peer_links",
                &load(&r.stats.rejected_peer_links),
            );
            kv(out, "tombstones", &node.store.tombstone_len());
            kv(out, "last_change_seq", &node.store.last_seq());
        }
        "cpu" => {
            out.push_str("# CPU\r\n");
            kv(out, "used_cpu_sys", &"0.000000");
            kv(out, "used_cpu_user", &"0.000000");
        }
        "cluster" => {
            // kriminoDB replicates every key to every node instead of
            // sharding, so Redis Cluster clients must not route by slot.
            out.push_str("# Cluster\r\n");
            kv(out, "cluster_enabled", &0);
        }
        "membership" => {
            use crate::membership::MemberState;
            let m = &node.membership;
            out.push_str("# Membership\r\n");
            kv(out, "members", &m.members().len());
            kv(out, "members_alive", &m.count(MemberState::Alive));
            kv(out, "members_suspect", &m.count(MemberState::Suspect));
            kv(out, "members_down", &m.count(MemberState::Down));
            kv(out, "bad_packets", &m.bad_packets());
            kv(out, "auth_failures", &m.auth_failures());
            kv(out, "replayed_packets", &m.replayed_packets());
            kv(out, "peer_addr", &m.me.peer);
            // The driver renews our identity if peers ever declared us down.
            let me = m
                .members()
                .iter()
                .find(|v| v.is_self)
                .map(|v| v.id.incarnation);
            kv(out, "incarnation", &me.unwrap_or(m.me.incarnation));
        }
        "keyspace" => {
            out.push_str("# Keyspace\r\n");
            let keys = node.store.len();
            if keys > 0 {
                kv(
                    out,
                    "db0",
                    &format_args!(
                        "keys={keys},expires={},avg_ttl=0",
                        node.store.volatile_len()
                    ),
                );
            }
        }
        _ => {}
    }
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
    let n = ctx.node.store.len();
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
    ctx.node.store.flush_all();
    ctx.reply.ok();
    Ok(())
}

pub fn time(ctx: &mut Ctx<'_>, _args: &Args<'_>) -> CmdResult {
    let micros = ctx.node.clock.wall_micros();
    ctx.reply.array(2);
    ctx.reply.bulk_int((micros / 1_000_000) as i64);
    ctx.reply.bulk_int((micros % 1_000_000) as i64);
    Ok(())
}

pub fn debug(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    if args.is(1, "DIGEST") {
        sub_arity(args, "debug", "digest", 2)?;
        let digest = ctx.node.store.digest(ctx.now_ms);
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
        ctx.node
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
    ctx.node.shutdown.cancel();
    // Redis closes the connection without a reply when it shuts down.
    ctx.after = After::Close;
    Ok(())
}

/// The settings CONFIG GET reports, with Redis's names.
fn config_values(ctx: &Ctx<'_>) -> Vec<(&'static str, String)> {
    let c = &ctx.node.config;
    vec![
        ("bind", c.bind.to_string()),
        (
            "port",
            // 0 when the plain port is disabled, as Redis reports it.
            if c.tls_port.is_some() && c.port == 0 {
                "0".into()
            } else {
                ctx.node.client_addr.port().to_string()
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
        ("maxmemory", ctx.node.store.memory().maxmemory().to_string()),
        (
            "maxmemory-policy",
            ctx.node.store.memory().policy().name().into(),
        ),
        (
            "maxmemory-samples",
            ctx.node.store.memory().samples().to_string(),
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
            ctx.node.tls_addr.map_or(0, |a| a.port()).to_string(),
        ),
        ("hz", "10".into()),
    ]
}

/// A setting CONFIG SET can change at run time, parsed.
enum Setting {
    MaxMemory(u64),
    Policy(crate::store::Policy),
    Samples(u32),
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
            _ => return Err(unknown(name)),
        };
        settings.push(setting);
    }
    let limit = ctx.node.store.memory();
    for setting in settings {
        match setting {
            Setting::MaxMemory(bytes) => limit.set_maxmemory(bytes),
            Setting::Policy(policy) => limit.set_policy(policy),
            Setting::Samples(n) => limit.set_samples(n),
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
        ctx.node.stats.reset();
        ctx.node.store.memory().reset_stats();
        ctx.reply.ok();
        return Ok(());
    }
    Err(CmdError::unknown_subcommand(args.get(1), "config"))
}
