//! The client-facing side: the listener (with the connection cap) and the
//! per-connection loop.

pub mod client;
pub mod connection;

pub mod listener {
    //! Accepts clients until shutdown, then lets connections finish what
    //! they are executing before the node reports itself stopped.

    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;
    use tokio::task::JoinSet;

    use crate::node::NodeState;
    use crate::stats::Stats;

    /// How long connections get to finish after shutdown starts; a client
    /// that does not read its replies cannot hold the node up longer.
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

    pub async fn run(listener: TcpListener, state: Arc<NodeState>) {
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                _ = state.shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((mut stream, peer)) => {
                        Stats::add(&state.stats.total_connections_received, 1);
                        if connections.len() >= state.config.maxclients {
                            Stats::add(&state.stats.rejected_connections, 1);
                            connections.spawn(async move {
                                let _ = stream.write_all(b"-ERR max number of clients reached\r\n").await;
                            });
                            continue;
                        }
                        let _ = stream.set_nodelay(true);
                        connections.spawn(super::connection::serve(stream, peer, state.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off
                        // instead of spinning, and keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);
        let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
            while connections.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::warn!(
                remaining = connections.len(),
                "closing connections that did not finish in time"
            );
        }
    }
}
