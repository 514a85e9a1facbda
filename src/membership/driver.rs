//! The membership task: a thin loop around the [`MembershipCore`]. It owns
//! the UDP socket on the peer port, the node's clock, the published member
//! list and the shutdown tokens, and only moves things between them:
//! datagrams from the socket into the core, the core's deadlines onto the
//! clock, seed names through the resolver, the core's datagrams onto the
//! socket, its events into the log, and its member list out.
//!
//! It never blocks on anything but its own socket and the resolver, and it
//! never touches the keyspace.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Announce, Event, MAX_DATAGRAM, MemberId, MemberView, MembershipCore, MembershipHandle,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::Keyring;

/// How often the published list is refreshed even without changes, so
/// "last heard" ages stay current.
const REFRESH: Duration = Duration::from_millis(250);

/// Starts the membership task on `socket`, the UDP half of the bound peer
/// port; with a `keyring`, every datagram is sealed with the cluster key.
/// Never fails: everything that can fail happened while binding.
#[allow(clippy::too_many_arguments)]
pub fn start(
    config: &Config,
    keyring: Option<Arc<Keyring>>,
    socket: UdpSocket,
    clock: Clock,
    node_id: u64,
    name: String,
    client: SocketAddr,
    shutdown: CancellationToken,
    halt: CancellationToken,
) -> (MembershipHandle, tokio::task::JoinHandle<()>) {
    // A bound socket always knows its address; the fallback only keeps
    // this function infallible.
    let bound = socket
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::new(config.bind, config.peer_port));
    if keyring.is_none() && !bound.ip().is_loopback() {
        tracing::warn!(
            peer_addr = %bound,
            "the peer port listens beyond loopback without --cluster-key: anyone who can reach it \
             can join the cluster, read every write and inject its own"
        );
    }
    let advertised_ip = match config.advertise_addr {
        Some(ip) => ip,
        None if bound.ip().is_unspecified() => {
            tracing::warn!(
                bind = %config.bind,
                "--bind is a wildcard and --advertise-addr is not set: peers on other hosts \
                 cannot reach this node; advertising the loopback address"
            );
            std::net::IpAddr::from([127, 0, 0, 1])
        }
        None => bound.ip(),
    };
    // Peers and their clients need an address they can connect to, not a
    // wildcard.
    let client = if client.ip().is_unspecified() {
        SocketAddr::new(advertised_ip, client.port())
    } else {
        client
    };
    let me = MemberId {
        node_id,
        incarnation: clock.wall_ms(),
        name,
        peer: SocketAddr::new(advertised_ip, bound.port()),
        client,
    };
    let core = MembershipCore::new(me.clone(), config, keyring, rand::random(), clock.now());
    let (publish, members) = watch::channel(Arc::new(core.views()));
    let handle = MembershipHandle {
        me,
        members,
        stats: core.stats().clone(),
    };
    let driver = Driver {
        core,
        socket,
        clock,
        seeds: config.join.clone(),
        publish,
    };
    let task = tokio::spawn(driver.run(shutdown, halt));
    (handle, task)
}

struct Driver {
    core: MembershipCore,
    socket: UdpSocket,
    /// Every reading of time, and the sleeps until the core's deadlines.
    clock: Clock,
    /// `--join`: names resolved at every announce, as DNS may change.
    seeds: Vec<String>,
    publish: watch::Sender<Arc<Vec<MemberView>>>,
}

impl Driver {
    async fn run(mut self, shutdown: CancellationToken, halt: CancellationToken) {
        // One byte more than we accept, so an oversized datagram is seen as
        // such instead of silently truncated.
        let mut datagram = vec![0u8; MAX_DATAGRAM + 1];
        let mut refresh = self.clock.ticker(REFRESH);
        let clock = self.clock.clone();
        loop {
            let deadline = self.core.next_deadline();
            tokio::select! {
                biased;
                _ = halt.cancelled() => return,
                _ = shutdown.cancelled() => {
                    self.leave().await;
                    return;
                }
                received = self.socket.recv_from(&mut datagram) => match received {
                    Ok((len, from)) => {
                        let (now, now_ms) = (self.clock.now(), self.clock.wall_ms());
                        if let Err(why) = self.core.handle_datagram(&datagram[..len], from, now, now_ms) {
                            tracing::debug!(%from, %why, "dropped a peer datagram");
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "peer socket receive failed"),
                },
                _ = clock.sleep_until(deadline) => self.on_deadline().await,
                _ = refresh.tick() => {}
            }
            self.send_outgoing().await;
            self.log_events();
            self.publish.send_replace(Arc::new(self.core.views()));
        }
    }

    async fn on_deadline(&mut self) {
        self.core.fire_due_timers(self.clock.now());
        while let Some(announce) = self.core.due_announce(self.clock.now()) {
            let warn_unresolved = match announce {
                Announce::Join { attempt: 1, .. } => {
                    tracing::info!(seeds = ?self.seeds, "joining the cluster");
                    true
                }
                Announce::Join { retry_in, .. } => {
                    tracing::warn!(seeds = ?self.seeds, ?retry_in, "no answer from the seeds yet; retrying");
                    true
                }
                Announce::Reconnect => false,
            };
            let seeds = self.resolve_seeds(warn_unresolved).await;
            self.core.announce(announce, &seeds, self.clock.now());
        }
    }

    async fn resolve_seeds(&self, warn_unresolved: bool) -> Vec<SocketAddr> {
        let mut addrs = Vec::new();
        for seed in &self.seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(resolved) => addrs.extend(resolved),
                Err(e) if warn_unresolved => {
                    tracing::warn!(seed, error = %e, "cannot resolve seed");
                }
                Err(_) => {}
            }
        }
        addrs
    }

    /// Tells every member we are leaving and sends all of it before the
    /// socket closes.
    async fn leave(&mut self) {
        let members = self.core.leave(self.clock.now());
        self.send_outgoing().await;
        tracing::info!(members, "left the cluster");
    }

    async fn send_outgoing(&mut self) {
        for (to, datagram) in self.core.drain_outgoing(self.clock.wall_ms()) {
            if let Err(e) = self.socket.send_to(&datagram, to).await {
                tracing::debug!(%to, error = %e, "peer send failed");
            }
        }
    }

    fn log_events(&mut self) {
        for event in self.core.drain_events() {
            log(&event);
        }
    }
}

fn log(event: &Event) {
    match event {
        Event::Joined { id, state } => {
            tracing::info!(name = %id.name, peer = %id.peer, state = state.as_str(), "member joined");
        }
        Event::Changed { id, state } => {
            tracing::info!(name = %id.name, peer = %id.peer, state = state.as_str(), "member is now {}", state.as_str());
        }
        Event::Left(id) => tracing::info!(name = %id.name, peer = %id.peer, "member left"),
        Event::Removed(id) => tracing::info!(name = %id.name, peer = %id.peer, "member removed"),
        Event::Restarted { old, new } => {
            tracing::info!(name = %new.name, peer = %new.peer, old_incarnation = old.incarnation,
                incarnation = new.incarnation, "member restarted");
        }
        Event::Connected => tracing::info!("connected to the cluster"),
        Event::Idle => tracing::warn!("no other member is reachable"),
        Event::Rejoined(MemberId { incarnation, .. }) => {
            tracing::info!(
                incarnation,
                "declared down by peers; rejoined with a new incarnation"
            );
        }
    }
}
