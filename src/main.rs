//! The `kriminodb` binary: parse the configuration, start a node, and stop
//! it gracefully on SIGINT, SIGTERM or a client's SHUTDOWN.

use anyhow::Context as _;
use kriminodb::{Config, Node};
use tracing_subscriber::EnvFilter;

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
    if config.clock_offset_ms != 0 {
        tracing::warn!(
            offset_ms = config.clock_offset_ms,
            "test-only clock offset in effect"
        );
        kriminodb::clock::set_clock_offset_ms(config.clock_offset_ms);
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.threads > 0 {
        runtime.worker_threads(config.threads);
    }
    let runtime = runtime
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(run(config))
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
