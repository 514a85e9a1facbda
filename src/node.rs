//! The composition root: binds the ports, builds the store, membership,
//! replication and what commands share ([`Services`]), starts every
//! long-lived task, and returns a [`NodeHandle`] that can stop them all.
//! The one place that knows how the parts fit.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clients::Registry;
use crate::clock::{Clock, TimeSource};
use crate::command::{self, ClusterView, NodeInfo, Services};
use crate::config::Config;
use crate::info::InfoRegistry;
use crate::membership::{self, MemberView, MembershipHandle};
use crate::replication::{self, Replication};
use crate::server;
use crate::stats::Stats;
use crate::store::Store;

/// How often the active-expiry cycle runs (Redis's default `hz` is 10).
const EXPIRE_PERIOD: Duration = Duration::from_millis(100);

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
        let node = NodeInfo {
            name,
            node_id,
            run_id: (0..40)
                .map(|_| char::from_digit(fastrand::u32(..16), 16).unwrap_or('0'))
                .collect(),
            client_addr,
            tls_addr,
            peer_addr: membership.me.peer,
            started: clock.now(),
        };
        let services = Arc::new(Services {
            info: info_sections(&replication, &membership),
            cluster: Arc::new(Cluster {
                replication: replication.clone(),
                membership: membership.clone(),
            }),
            store,
            clock,
            clients: Registry::new(|index| command::COMMANDS.get(index).name),
            node,
            stats: Arc::new(Stats::default()),
            shutdown,
            exec_gate: parking_lot::RwLock::new(()),
            tunables: Default::default(),
            config,
        });

        tracker.spawn(async move {
            let _ = membership_task.await;
        });
        tracker.spawn(server::listener::run(listeners, services.clone()));
        tracker.spawn(active_expiry(services.clone()));
        tracker.close();
        tracing::info!(
            name = %services.node.name,
            node_id = format_args!("{node_id:016x}"),
            %client_addr,
            peer_addr = %services.node.peer_addr,
            tls_addr = ?services.node.tls_addr,
            "kriminodb node started"
        );
        Ok(NodeHandle {
            services,
            replication,
            membership,
            tracker,
            halt,
        })
    }
}

/// INFO's sections, in Redis's order, each from the subsystem that owns
/// its figures.
fn info_sections(
    replication: &Arc<Replication>,
    membership: &MembershipHandle,
) -> InfoRegistry<Services> {
    let mut info = InfoRegistry::default();
    info.register("server", "Server", command::server_info);
    info.register("clients", "Clients", command::clients_info);
    info.register("memory", "Memory", |s, w| s.store.memory_info(w));
    info.register("stats", "Stats", |s, w| s.stats.info(w));
    info.register("stats", "Stats", |s, w| s.store.stats_info(w));
    let replication = replication.clone();
    info.register("replication", "Replication", move |_, w| {
        replication.info(w)
    });
    info.register("cpu", "CPU", command::cpu_info);
    info.register("cluster", "Cluster", command::cluster_info);
    let membership = membership.clone();
    info.register("membership", "Membership", move |_, w| membership.info(w));
    info.register("keyspace", "Keyspace", |s, w| s.store.keyspace_info(w));
    info
}

/// What commands see of the cluster: WAIT's acknowledgements from
/// replication, CLUSTER's members from membership.
struct Cluster {
    replication: Arc<Replication>,
    membership: MembershipHandle,
}

impl ClusterView for Cluster {
    fn acked_by(&self, seq: u64) -> usize {
        self.replication.acked_by(seq)
    }

    fn wait_for(
        &self,
        seq: u64,
        wanted: usize,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = usize> + Send + '_>> {
        Box::pin(self.replication.wait_for(seq, wanted, timeout))
    }

    fn members(&self) -> Arc<Vec<MemberView>> {
        self.membership.members()
    }
}

async fn active_expiry(services: Arc<Services>) {
    let mut tick = services.clock.ticker(EXPIRE_PERIOD);
    loop {
        tokio::select! {
            _ = services.shutdown.cancelled() => return,
            _ = tick.tick() => {
                let now = services.clock.wall_ms();
                services.store.active_expire(now);
                services.store.evict_in_background(now);
            }
        }
    }
}

/// A running node: its addresses, its parts for in-process inspection by
/// tests, and the way to stop it.
pub struct NodeHandle {
    services: Arc<Services>,
    replication: Arc<Replication>,
    membership: MembershipHandle,
    tracker: TaskTracker,
    /// Stops every task at once, without telling peers (a crash, for tests).
    halt: CancellationToken,
}

impl NodeHandle {
    pub fn client_addr(&self) -> SocketAddr {
        self.services.node.client_addr
    }

    /// The TLS client port's address, when TLS is on.
    pub fn tls_addr(&self) -> Option<SocketAddr> {
        self.services.node.tls_addr
    }

    /// The address peers reach this node at (UDP membership, TCP data).
    pub fn peer_addr(&self) -> SocketAddr {
        self.services.node.peer_addr
    }

    pub fn membership(&self) -> &MembershipHandle {
        &self.membership
    }

    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.services.store
    }

    /// What the node's commands and client sessions share.
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub fn node_id(&self) -> u64 {
        self.services.node.node_id
    }

    /// The node's clock: its time source, wall clock and HLC.
    pub fn clock(&self) -> &Clock {
        &self.services.clock
    }

    pub fn name(&self) -> &str {
        &self.services.node.name
    }

    /// Resolves once the node has stopped, whether through
    /// [`NodeHandle::shutdown`] or a client's SHUTDOWN.
    pub async fn stopped(&self) {
        self.services.shutdown.cancelled().await;
        self.tracker.wait().await;
    }

    /// Graceful stop: no new connections, commands in flight finish, every
    /// task ends.
    pub async fn shutdown(self) {
        self.services.shutdown.cancel();
        self.tracker.wait().await;
        tracing::info!(name = %self.services.node.name, "kriminodb node stopped");
    }

    /// Stops the node as a crash would: peers are not told, they must
    /// detect it. For tests of failure detection.
    pub async fn kill(self) {
        self.halt.cancel();
        self.services.shutdown.cancel();
        self.tracker.wait().await;
    }

    /// Starts a graceful stop without waiting for it.
    pub fn trigger_shutdown(&self) {
        self.services.shutdown.cancel();
    }
}
