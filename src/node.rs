//! The composition root: binds the listener, builds the shared state and
//! starts every long-lived task, returning a [`NodeHandle`] that can stop
//! them all.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::{Clock, TimeSource};
use crate::config::Config;
use crate::membership::{self, MembershipHandle};
use crate::replication::{self, Replication};
use crate::server;
use crate::server::client::Registry;
use crate::stats::Stats;
use crate::store::Store;

/// How often the active-expiry cycle runs (Redis's default `hz` is 10).
const EXPIRE_PERIOD: Duration = Duration::from_millis(100);

/// State shared by every task of a node.
pub struct NodeState {
    pub config: Config,
    pub name: String,
    pub node_id: u64,
    /// 40 hex characters, new on every start (INFO `run_id`).
    pub run_id: String,
    pub store: Arc<Store>,
    /// The node's clock (also inside the store, replication and
    /// membership).
    pub clock: Clock,
    pub stats: Stats,
    pub clients: Registry,
    pub shutdown: CancellationToken,
    pub started: Instant,
    /// The plain client port's address, or the TLS port's when the plain
    /// one is disabled.
    pub client_addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub membership: MembershipHandle,
    pub replication: Arc<Replication>,
    /// Client batches run under its read side; EXEC takes it exclusively,
    /// so no other client's command runs inside a transaction.
    pub exec_gate: parking_lot::RwLock<()>,
}

impl NodeState {
    pub fn uptime(&self) -> Duration {
        self.clock.since(self.started)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen for clients on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    ClusterKey(#[from] crate::crypto::KeyError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("cannot listen for peers on {addr} (UDP and TCP): {source}")]
    Peer {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Binds the peer port for both UDP (membership) and TCP (replication).
/// With port 0 the OS picks the TCP port, which may be taken for UDP (or
/// the reverse), so a few ports are tried.
async fn bind_peer_port(config: &Config) -> Result<(UdpSocket, TcpListener), StartError> {
    let addr = SocketAddr::new(config.bind, config.peer_port);
    let attempts = if config.peer_port == 0 { 20 } else { 1 };
    let mut last_error = None;
    for _ in 0..attempts {
        let listener = match TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                last_error = Some(e);
                continue;
            }
        };
        let bound = listener
            .local_addr()
            .map_err(|source| StartError::Peer { addr, source })?;
        match UdpSocket::bind(bound).await {
            Ok(socket) => return Ok((socket, listener)),
            Err(e) => last_error = Some(e),
        }
    }
    Err(StartError::Peer {
        addr,
        source: last_error.unwrap_or_else(|| std::io::Error::other("no port could be bound")),
    })
}

/// Binds the plain client port and, when configured, the TLS one. As in
/// Redis, `--port 0` with a TLS port disables the plain port; without one it
/// picks a free port.
async fn bind_client_ports(config: &Config) -> Result<server::listener::Listeners, StartError> {
    let bind = |port| async move {
        let addr = SocketAddr::new(config.bind, port);
        TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })
    };
    let tls = match config.tls_port {
        Some(port) => {
            let (Some(cert), Some(key)) = (&config.tls_cert_file, &config.tls_key_file) else {
                return Err(StartError::Tls(
                    "--tls-port needs --tls-cert-file and --tls-key-file".into(),
                ));
            };
            let acceptor = server::tls::acceptor(cert, key, config.tls_ca_cert_file.as_deref())
                .map_err(StartError::Tls)?;
            Some((bind(port).await?, acceptor))
        }
        None => None,
    };
    let plain = if tls.is_some() && config.port == 0 {
        None
    } else {
        Some(bind(config.port).await?)
    };
    Ok(server::listener::Listeners { plain, tls })
}

fn local_addr(listener: &TcpListener, ip: std::net::IpAddr) -> Result<SocketAddr, StartError> {
    listener.local_addr().map_err(|source| StartError::Bind {
        addr: SocketAddr::new(ip, 0),
        source,
    })
}

/// Starts nodes.
pub struct Node;

impl Node {
    /// Binds the client port and starts the node's tasks on the current
    /// tokio runtime, on the system clock (skewed by `--clock-offset-ms`).
    pub async fn start(config: Config) -> Result<NodeHandle, StartError> {
        let time = TimeSource::System {
            offset_ms: config.clock_offset_ms,
        };
        Self::start_with_time(config, time).await
    }

    /// [`Node::start`] with time from `time`: a test's manual clock, or a
    /// skewed system clock for one node of several in a process.
    pub async fn start_with_time(
        config: Config,
        time: TimeSource,
    ) -> Result<NodeHandle, StartError> {
        let keyring = config.keyring()?.map(Arc::new);
        let listeners = bind_client_ports(&config).await?;
        let tls_addr = match &listeners.tls {
            Some((l, _)) => Some(local_addr(l, config.bind)?),
            None => None,
        };
        let client_addr = match (&listeners.plain, tls_addr) {
            (Some(l), _) => local_addr(l, config.bind)?,
            (None, Some(tls)) => tls,
            (None, None) => return Err(StartError::Tls("no client port".into())),
        };

        let node_id = fastrand::u64(1..);
        let clock = Clock::new(time, node_id);
        let name = config.node_name(client_addr.port());
        let shutdown = CancellationToken::new();
        let halt = CancellationToken::new();
        let (udp, tcp) = bind_peer_port(&config).await?;
        // Nothing below can fail: every task starts only once both ports
        // are bound.
        let (membership, membership_task) = membership::start(
            &config,
            keyring.clone(),
            udp,
            clock.clone(),
            node_id,
            name.clone(),
            client_addr,
            shutdown.clone(),
            halt.clone(),
        );
        let tracker = TaskTracker::new();
        let store = Arc::new(Store::new(clock.clone()));
        store.memory().set_maxmemory(config.maxmemory);
        store.memory().set_policy(config.maxmemory_policy);
        store.memory().set_samples(config.maxmemory_samples);
        let replication = replication::start(
            &config,
            keyring,
            tcp,
            store.clone(),
            membership.clone(),
            shutdown.clone(),
            &tracker,
        );
        let state = Arc::new(NodeState {
            name,
            node_id,
            run_id: (0..40)
                .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
                .collect(),
            store,
            stats: Stats::default(),
            clients: Registry::default(),
            shutdown,
            started: clock.now(),
            clock,
            client_addr,
            tls_addr,
            membership,
            replication,
            exec_gate: parking_lot::RwLock::new(()),
            config,
        });

        tracker.spawn(async move {
            let _ = membership_task.await;
        });
        tracker.spawn(server::listener::run(listeners, state.clone()));
        tracker.spawn(active_expiry(state.clone()));
        tracker.close();
        tracing::info!(
            name = %state.name,
            node_id = format_args!("{node_id:016x}"),
            %client_addr,
            peer_addr = %state.membership.me.peer,
            tls_addr = ?state.tls_addr,
            "kriminodb node started"
        );
        Ok(NodeHandle {
            state,
            tracker,
            halt,
        })
    }
}

async fn active_expiry(state: Arc<NodeState>) {
    let mut tick = state.clock.ticker(EXPIRE_PERIOD);
    loop {
        tokio::select! {
            _ = state.shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = state.clock.wall_ms();
                state.store.active_expire(now);
                state.store.evict_in_background(now);
            }
        }
    }
}

/// A running node: its addresses, and the way to stop it.
pub struct NodeHandle {
    state: Arc<NodeState>,
    tracker: TaskTracker,
    /// Stops every task at once, without telling peers (a crash, for tests).
    halt: CancellationToken,
}

impl NodeHandle {
    pub fn client_addr(&self) -> SocketAddr {
        self.state.client_addr
    }

    /// The TLS client port's address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.state.tls_addr
    }

    /// The address peers reach this node at (UDP membership, TCP data).
    pub fn peer_addr(&self) -> SocketAddr {
        self.state.membership.me.peer
    }

    pub fn membership(&self) -> &MembershipHandle {
        &self.state.membership
    }

    pub fn node_id(&self) -> u64 {
        self.state.node_id
    }

    /// The node's clock: its time source, wall clock and HLC.
    pub fn clock(&self) -> &Clock {
        &self.state.clock
    }

    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The node's shared state, for in-process inspection by tests.
    pub fn state(&self) -> &Arc<NodeState> {
        &self.state
    }

    /// Resolves once the node has stopped, whether through
    /// [`NodeHandle::shutdown`] or a client's SHUTDOWN.
    pub async fn stopped(&self) {
        self.state.shutdown.cancelled().await;
        self.tracker.wait().await;
    }

    /// Graceful stop: no new connections, commands in flight finish, every
    /// task ends.
    pub async fn shutdown(self) {
        self.state.shutdown.cancel();
        self.tracker.wait().await;
        tracing::info!(name = %self.state.name, "kriminodb node stopped");
    }

    /// Stops the node as a crash would: peers are not told, they must
    /// detect it. For tests of failure detection.
    pub async fn kill(self) {
        self.halt.cancel();
        self.state.shutdown.cancel();
        self.tracker.wait().await;
    }

    /// Starts a graceful stop without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.state.shutdown.cancel();
    }
}
