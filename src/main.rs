//! The `kriminodb` binary: parse the configuration, start a node, and stop
//! it gracefully on SIGINT, SIGTERM or a client's SHUTDOWN.

use anyhow::Context as _;
use kriminodb::{Config, Node};
use tracing_subscriber::EnvFilter;

/// jemalloc, as in Redis: INFO's `used_memory` and `--maxmemory` read its
/// statistics (`kriminodb::stats::used_memory`).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> anyhow::Result<()> {
    let config = match Config::from_env_and_args() {
        Ok(c) => c,
        Err(kriminodb::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => return Err(e.into()),
    };
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            EnvFilter::try_new(&config.log_level)
                .with_context(|| format!("invalid --log-level '{}'", config.log_level))?,
        )
        .init();
    raise_open_files_limit(config.maxclients);
    if config.clock_offset_ms != 0 {
        tracing::warn!(
            offset_ms = config.clock_offset_ms,
            "test-only clock offset in effect"
        );
    }
    let mut runtime = match runtime_threads(config.threads) {
        1 => {
            let mut one = tokio::runtime::Builder::new_current_thread();
            one.on_thread_park(linger_before_sleeping);
            one
        }
        n => {
            let mut multi = tokio::runtime::Builder::new_multi_thread();
            multi.worker_threads(n);
            multi
        }
    };
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config))
}

/// Threads that run the node for `--threads` (0: automatic). One thread
/// runs everything on a single-threaded runtime, as Redis does. That is the
/// automatic choice up to two cores: on the 2-core benchmark machine, where
/// the clients share the cores, it beat one worker per core on every row
/// (SET -P16 1.26M vs 1.21M rps, MSET 129k vs 109k, a 3-node cluster's
/// SET -P16 700k vs 590k with 1.9 vs 2.7 us of CPU per write), because
/// the multi-threaded runtime woke its second worker for nearly every
/// request: 45,000 context switches in 2.5 s of SET -P1 against 13,000.
/// With more cores, one worker per core.
fn runtime_threads(requested: usize) -> usize {
    match requested {
        0 => match std::thread::available_parallelism().map_or(1, usize::from) {
            cores @ 3.. => cores,
            _ => 1,
        },
        n => n,
    }
}

/// How long the single thread keeps the CPU before it sleeps for events.
const LINGER: std::time::Duration = std::time::Duration::from_micros(20);

/// Called when the single-threaded runtime has nothing to run, just before
/// it blocks in epoll_wait: it yields the CPU for [`LINGER`] first, so that
/// a request arriving meanwhile finds the thread awake. Waking a sleeping
/// thread costs the client that sent the request: with one request in
/// flight per client (SET/GET -P1), redis-benchmark spent 1.86 s of CPU per
/// 300,000 requests against kriminodb, which then slept 13,000 times in
/// 2.5 s, and 1.75 s against Redis, which slept 4,000 times; lingering
/// brought it to 1.68 s and SET/GET -P1 from 152k to 172k rps. It yields
/// rather than spins so that other processes on the core (a 3-node
/// cluster on 2 cores) lose nothing: a plain 10 us spin cost that cluster
/// 5-10 % of its throughput, this none. Costs an idle node about 20 us of
/// CPU per timer wakeup.
fn linger_before_sleeping() {
    let until = std::time::Instant::now() + LINGER;
    while std::time::Instant::now() < until {
        std::thread::yield_now();
    }
}

/// File descriptors the node needs besides its clients (listeners, peer
/// links, logs), as Redis's `CONFIG_MIN_RESERVED_FDS`.
const RESERVED_FDS: u64 = 32;

/// Raises the soft limit on open files to the hard limit, as Redis does for
/// `maxclients`: the common soft default (1024) would refuse connections
/// long before `--maxclients` (10000) with accept errors instead of
/// Redis's "max number of clients reached".
fn raise_open_files_limit(maxclients: usize) {
    let needed = maxclients as u64 + RESERVED_FDS;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the open files limit (ulimit -n) is below --maxclients plus {RESERVED_FDS}: \
             connections beyond it will fail; raise the hard limit"
        ),
        Ok(limit) => tracing::debug!(limit, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let node = Node::start(config).await?;
    tokio::select! {
        signal = shutdown_signal() => {
            signal?;
            tracing::info!("signal received, shutting down");
        }
        _ = node.stopped() => {}
    }
    node.shutdown().await;
    Ok(())
}

async fn shutdown_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.context("waiting for SIGINT")?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
