//! In-process clusters: nodes started on this test's runtime on free
//! ports, all but the first joining through the first, and the wait until
//! they form a fully linked cluster.
#![allow(dead_code)]

use std::sync::atomic::Ordering;
use std::time::Duration;

use kriminodb::clock::TimeSource;
use kriminodb::membership::MemberState;
use kriminodb::{Config, Node, NodeHandle};

use super::eventually_ok;

/// Deadline for a cluster to form on its own: an idle machine needs well
/// under a second with the fast timings; this holds on a loaded one.
pub const FORM: Duration = Duration::from_secs(30);

/// `config` for a node that joins through `seed`.
pub fn joining(config: Config, seed: &NodeHandle) -> Config {
    Config {
        join: vec![seed.peer_addr().to_string()],
        ..config
    }
}

/// Starts `n1`..`nN` with `config(name)`, all but the first joining
/// through `n1`; returns at once (see [`start_ready_cluster`]).
pub async fn start_cluster(n: usize, config: impl Fn(&str) -> Config) -> Vec<NodeHandle> {
    start_cluster_on(n, config, |_| TimeSource::default()).await
}

/// [`start_cluster`] with node `i` (0-based) on `time(i)`: clocks that
/// disagree, in one process.
pub async fn start_cluster_on(
    n: usize,
    config: impl Fn(&str) -> Config,
    time: impl Fn(usize) -> TimeSource,
) -> Vec<NodeHandle> {
    let mut nodes: Vec<NodeHandle> = Vec::with_capacity(n);
    for i in 0..n {
        let c = config(&format!("n{}", i + 1));
        let c = match nodes.first() {
            Some(seed) => joining(c, seed),
            None => c,
        };
        let node = Node::start_with_time(c, time(i))
            .await
            .expect("node starts");
        nodes.push(node);
    }
    nodes
}

/// [`start_cluster`], then [`wait_ready`].
pub async fn start_ready_cluster(n: usize, config: impl Fn(&str) -> Config) -> Vec<NodeHandle> {
    let nodes = start_cluster(n, config).await;
    wait_ready(&nodes.iter().collect::<Vec<_>>()).await;
    nodes
}

/// Ok when every node sees exactly `nodes` (by node id), all alive, has a
/// link to each of the others and has completed a reconciliation;
/// otherwise says what is missing.
pub fn ready(nodes: &[&NodeHandle]) -> Result<(), String> {
    let mut expected: Vec<u64> = nodes.iter().map(|n| n.node_id()).collect();
    expected.sort_unstable();
    for node in nodes {
        let members = node.membership().members();
        let mut ids: Vec<u64> = members.iter().map(|m| m.id.node_id).collect();
        ids.sort_unstable();
        if ids != expected || members.iter().any(|m| m.state != MemberState::Alive) {
            let seen: Vec<_> = members.iter().map(|m| (&m.id.name, m.state)).collect();
            return Err(format!("{} sees {seen:?}", node.name()));
        }
        let replication = node.replication();
        let linked = replication.connected_peers();
        if linked != nodes.len() - 1 {
            return Err(format!("{} has {linked} peer links", node.name()));
        }
        let synced = replication.stats.initial_sync_done.load(Ordering::Acquire);
        if nodes.len() > 1 && !synced {
            return Err(format!("{} has not reconciled yet", node.name()));
        }
    }
    Ok(())
}

/// Waits until `nodes` are [`ready`]; fails the test with what was seen.
pub async fn wait_ready(nodes: &[&NodeHandle]) {
    let formed = eventually_ok(FORM, || std::future::ready(ready(nodes))).await;
    formed.expect("the nodes form a fully linked cluster");
}
