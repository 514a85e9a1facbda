//! The client-facing side: the listeners (plain and TLS, with the
//! connection cap, protected mode and idle timeout), the client session
//! (sans-IO: bytes in, replies out) and the per-connection loop around it.

pub mod connection;
pub mod session;
pub mod tls;

pub mod listener {
    //! Accepts clients until shutdown, then lets connections finish what
    //! they are executing before the node reports itself stopped.

    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};
    use tokio::task::JoinSet;
    use tokio_rustls::TlsAcceptor;

    use crate::command::Services;
    use crate::stats::Stats;

    /// How long connections get to finish after shutdown starts; a client
    /// that does not read its replies cannot hold the node up longer.
    const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
    /// A TLS client that has not finished its handshake by then is dropped,
    /// so half-open handshakes cannot pile up.
    const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

    /// Redis's protected-mode refusal, with the remedies kriminoDB has (no
    /// CONFIG SET: flags, environment or config file).
    pub const DENIED: &[u8] = b"-DENIED kriminoDB is running in protected mode because protected mode is enabled and no password is set for the default user. In this mode connections are only accepted from the loopback interface. If you want to connect from external computers to kriminoDB you may adopt one of the following solutions: 1) Restart the node with the '--protected-mode no' option (or KRIMINODB_PROTECTED_MODE=no, or 'protected_mode = false' in its config file), however MAKE SURE the node is not publicly accessible from internet if you do so. 2) Set up an authentication password for the default user with '--requirepass' (or KRIMINODB_REQUIREPASS). 3) Bind to a loopback address only with '--bind 127.0.0.1'. NOTE: You only need to do one of the above things in order for the node to start accepting connections from the outside.\r\n";

    /// The listening sockets: plain TCP (absent when disabled with
    /// `--port 0 --tls-port ...`) and TLS.
    pub struct Listeners {
        pub plain: Option<TcpListener>,
        pub tls: Option<(TcpListener, TlsAcceptor)>,
    }

    pub async fn run(listeners: Listeners, services: Arc<Services>) {
        let Listeners { plain, tls } = listeners;
        let protected = services.config.protected_mode && services.config.requirepass.is_none();
        if !protected
            && services.config.requirepass.is_none()
            && !services.config.bind.is_loopback()
        {
            tracing::warn!(
                bind = %services.config.bind,
                "protected mode is off and no password is set: anyone who can reach the client port can use this node"
            );
        }
        let timeout_ms = services.config.timeout.saturating_mul(1000);
        // Idle clients are found by a sweep, as Redis's clientsCron does,
        // rather than a timer per read on the hot path.
        let mut sweep = services
            .clock
            .ticker(Duration::from_millis(timeout_ms.clamp(1, 1000)));
        let mut connections = JoinSet::new();
        loop {
            let (accepted, acceptor) = tokio::select! {
                _ = services.shutdown.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                _ = sweep.tick(), if timeout_ms > 0 => {
                    close_idle(&services, timeout_ms);
                    continue;
                }
                accepted = accept(plain.as_ref()) => (accepted, None),
                accepted = accept(tls.as_ref().map(|(l, _)| l)) => {
                    (accepted, tls.as_ref().map(|(_, a)| a.clone()))
                }
            };
            let (mut stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off
                    // instead of spinning, and keep serving.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            Stats::add(&services.stats.total_connections_received, 1);
            if connections.len() >= services.config.maxclients {
                Stats::add(&services.stats.rejected_connections, 1);
                connections.spawn(async move {
                    let _ = stream
                        .write_all(b"-ERR max number of clients reached\r\n")
                        .await;
                });
                continue;
            }
            let denied = protected && !peer.ip().to_canonical().is_loopback();
            if denied {
                tracing::debug!(%peer, "refusing a non-loopback client in protected mode");
            }
            let _ = stream.set_nodelay(true);
            let laddr = stream.local_addr().unwrap_or(services.node.client_addr);
            let fd = raw_fd(&stream);
            let services = services.clone();
            match acceptor {
                None if denied => {
                    connections.spawn(async move {
                        let _ = stream.write_all(DENIED).await;
                    });
                }
                None => {
                    connections.spawn(super::connection::serve(stream, peer, laddr, fd, services));
                }
                Some(acceptor) => {
                    connections.spawn(async move {
                        let handshake = tokio::select! {
                            _ = services.shutdown.cancelled() => return,
                            done = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => done,
                        };
                        match handshake {
                            // As Redis, the refusal goes over TLS, so the
                            // client can read it.
                            Ok(Ok(mut tls)) if denied => {
                                let _ = tls.write_all(DENIED).await;
                                let _ = tls.shutdown().await;
                            }
                            Ok(Ok(tls)) => {
                                super::connection::serve(tls, peer, laddr, fd, services).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            }
                            Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
        drop((plain, tls));
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

    async fn accept(listener: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
        match listener {
            Some(l) => l.accept().await,
            None => std::future::pending().await,
        }
    }

    /// Closes clients idle for longer than `timeout_ms` (Redis's `timeout`),
    /// except those blocked in WAIT.
    fn close_idle(services: &Services, timeout_ms: u64) {
        let now_ms = services.clock.wall_ms();
        for client in services.clients.snapshot() {
            if client.idle_ms(now_ms) > timeout_ms && !client.is_blocked() {
                tracing::debug!(client = client.id, addr = %client.addr, "closing idle client");
                client.kill.cancel();
            }
        }
    }

    #[cfg(unix)]
    fn raw_fd(stream: &TcpStream) -> i32 {
        use std::os::fd::AsRawFd;
        stream.as_raw_fd()
    }

    #[cfg(not(unix))]
    fn raw_fd(_stream: &TcpStream) -> i32 {
        -1
    }
}
