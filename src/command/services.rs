//! What command handlers may use of the node: the keyspace, the clock, the
//! client registry, INFO's sections, the settings, and narrow views of the
//! cluster (WAIT's acknowledgements, CLUSTER's member list). The
//! composition root (`node.rs`) builds it; nothing here starts a task or
//! knows a socket.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::clients::Registry;
use crate::clock::Clock;
use crate::config::Config;
use crate::info::InfoRegistry;
use crate::membership::MemberView;
use crate::stats::Stats;
use crate::store::Store;

/// The cluster as commands see it.
pub trait ClusterView: Send + Sync {
    /// Peers that acknowledged every change of the log up to `seq`.
    fn acked_by(&self, seq: u64) -> usize;

    /// Resolves with the number of peers that acknowledged `seq`, once it
    /// reaches `wanted` or `timeout` passes (never, if None): WAIT.
    fn wait_for(
        &self,
        seq: u64,
        wanted: usize,
        timeout: Option<Duration>,
    ) -> Pin<Box<dyn Future<Output = usize> + Send + '_>>;

    /// Every known member, this node included.
    fn members(&self) -> Arc<Vec<MemberView>>;
}

/// Who this node is, for INFO, CLUSTER MYID and CONFIG GET.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub node_id: u64,
    /// 40 hex characters, new on every start (INFO `run_id`).
    pub run_id: String,
    /// The plain client port's address, or the TLS port's when the plain
    /// one is disabled.
    pub client_addr: SocketAddr,
    pub tls_addr: Option<SocketAddr>,
    pub peer_addr: SocketAddr,
    /// When the node started, on its clock.
    pub started: Instant,
}

/// Everything the command layer and the client sessions share.
pub struct Services {
    pub store: Arc<Store>,
    pub clock: Clock,
    pub clients: Registry,
    pub cluster: Arc<dyn ClusterView>,
    pub info: InfoRegistry<Services>,
    /// The settings the node started with (CONFIG GET reports them; the
    /// ones CONFIG SET changes live in the store's memory limit).
    pub config: Config,
    pub node: NodeInfo,
    pub stats: Arc<Stats>,
    /// SHUTDOWN cancels it.
    pub shutdown: CancellationToken,
    /// Client batches run under its read side; EXEC takes it exclusively,
    /// so no other client's command runs inside a transaction.
    pub exec_gate: parking_lot::RwLock<()>,
    /// Redis's encoding thresholds, settable and inert.
    pub tunables: super::tunables::Tunables,
}

impl Services {
    pub fn uptime(&self) -> Duration {
        self.clock.since(self.node.started)
    }
}
