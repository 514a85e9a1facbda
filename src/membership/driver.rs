//! The membership task: owns the UDP socket on the peer port, foca's timers
//! and the join loop, feeds datagrams and timer events to foca, sends what
//! it asks to send, and publishes the member list after every change.
//!
//! It never blocks on anything but its own socket, and it never touches the
//! keyspace.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;
use std::time::Instant;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{
    Kind, MAX_DATAGRAM, MemberId, MemberState, MemberView, MembershipHandle, MembershipStats,
    SealedError, SealedHeader, SuspicionTimer, open, open_keyed, protocol_config, seal, seal_keyed,
};
use crate::clock::Clock;
use crate::config::Config;
use crate::crypto::{Keyring, Replay, ReplayGuard};

/// First and longest wait between announces to the seeds while alone.
const JOIN_BACKOFF_MIN: Duration = Duration::from_millis(500);
const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a node announces itself to the peers it knew (and its seeds)
/// that are not members now: after a partition both sides have declared
/// each other down and removed them, and only a node that reaches across
/// brings the two halves back together.
const RECONNECT_EVERY: Duration = Duration::from_secs(3);
/// How often the published list is refreshed even without changes, so
/// "last heard" ages stay current.
const REFRESH: Duration = Duration::from_millis(250);

type Swim = Foca<MemberId, PostcardCodec, StdRng, NoCustomBroadcast>;

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
    let foca = Foca::new(
        me.clone(),
        protocol_config(config, 1),
        StdRng::seed_from_u64(fastrand::u64(..)),
        PostcardCodec,
    );
    let stats = Arc::new(MembershipStats::default());
    let (publish, members) = watch::channel(Arc::new(vec![self_view(&me)]));
    let handle = MembershipHandle {
        me: me.clone(),
        members,
        stats: stats.clone(),
    };
    let driver = Driver {
        foca,
        runtime: AccumulatingRuntime::new(),
        socket,
        timers: BinaryHeap::new(),
        timer_seq: 0,
        config: config.clone(),
        cluster_size: 1,
        me,
        last_heard: HashMap::new(),
        left: HashSet::new(),
        previous: HashMap::new(),
        suspicion: SuspicionTimer::default(),
        known_peers: HashMap::new(),
        last_reconnect: clock.now(),
        epoch: clock.now(),
        publish,
        stats,
        send_buf: Vec::with_capacity(MAX_DATAGRAM),
        clock,
        sealing: keyring.map(|keyring| Sealing {
            keyring,
            stream: rand::random(),
            counter: 0,
            replay: ReplayGuard::default(),
        }),
    };
    let task = tokio::spawn(driver.run(shutdown, halt));
    (handle, task)
}

fn self_view(me: &MemberId) -> MemberView {
    MemberView {
        id: me.clone(),
        state: MemberState::Alive,
        last_heard: None,
        is_self: true,
    }
}

struct Driver {
    foca: Swim,
    runtime: AccumulatingRuntime<MemberId>,
    socket: UdpSocket,
    /// foca's timers by deadline; the sequence number keeps equal deadlines
    /// in submission order. foca requires every timer to be delivered.
    timers: BinaryHeap<Reverse<(Instant, u64, Timer<MemberId>)>>,
    timer_seq: u64,
    config: Config,
    /// Cluster size foca's configuration was last scaled for.
    cluster_size: usize,
    me: MemberId,
    last_heard: HashMap<SocketAddr, Instant>,
    /// Identities (node id, incarnation) that announced a graceful leave;
    /// hidden at once instead of lingering as down.
    left: HashSet<(u64, u64)>,
    suspicion: SuspicionTimer,
    /// Peer addresses of every member seen, and when (for reconnecting).
    known_peers: HashMap<SocketAddr, Instant>,
    last_reconnect: Instant,
    /// Start of the driver's monotonic clock for the suspicion timer.
    epoch: Instant,
    /// Last published state per member, to log transitions.
    previous: HashMap<SocketAddr, (MemberId, MemberState)>,
    publish: watch::Sender<Arc<Vec<MemberView>>>,
    stats: Arc<MembershipStats>,
    send_buf: Vec<u8>,
    /// Every reading of time, and the timers.
    clock: Clock,
    /// Present with a cluster key.
    sealing: Option<Sealing>,
}

/// What sealing datagrams with the cluster key needs.
struct Sealing {
    keyring: Arc<Keyring>,
    /// Our stream id for anti-replay: random, new for every process.
    stream: u64,
    /// Number of the last datagram sealed.
    counter: u64,
    replay: ReplayGuard,
}

async fn sleep_until_some(clock: &Clock, deadline: Option<Instant>) {
    match deadline {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Driver {
    async fn run(mut self, shutdown: CancellationToken, halt: CancellationToken) {
        // One byte more than we accept, so an oversized datagram is seen as
        // such instead of silently truncated.
        let mut datagram = vec![0u8; MAX_DATAGRAM + 1];
        let seeds = self.config.join.clone();
        let mut join_at = (!seeds.is_empty()).then(|| self.clock.now());
        let mut join_backoff = JOIN_BACKOFF_MIN;
        let mut join_attempts = 0u32;
        let mut refresh = self.clock.ticker(REFRESH);
        let clock = self.clock.clone();
        loop {
            let next_timer = self.timers.peek().map(|Reverse((at, _, _))| *at);
            let alone = self.foca.num_members() == 0;
            tokio::select! {
                biased;
                _ = halt.cancelled() => return,
                _ = shutdown.cancelled() => {
                    self.leave().await;
                    return;
                }
                received = self.socket.recv_from(&mut datagram) => match received {
                    Ok((len, from)) => self.on_datagram(&datagram[..len], from),
                    Err(e) => tracing::debug!(error = %e, "peer socket receive failed"),
                },
                _ = sleep_until_some(&clock, next_timer) => self.fire_due_timers(),
                _ = sleep_until_some(&clock, join_at.filter(|_| alone)) => {
                    join_attempts += 1;
                    if join_attempts > 1 {
                        tracing::warn!(seeds = ?seeds, retry_in = ?join_backoff, "no answer from the seeds yet; retrying");
                    } else {
                        tracing::info!(seeds = ?seeds, "joining the cluster");
                    }
                    self.announce_to(&seeds).await;
                    join_at = Some(self.clock.now() + join_backoff);
                    join_backoff = (join_backoff * 2).min(JOIN_BACKOFF_MAX);
                }
                _ = refresh.tick() => {
                    if self.clock.since(self.last_reconnect) >= RECONNECT_EVERY {
                        self.last_reconnect = self.clock.now();
                        self.reconnect(&seeds).await;
                    }
                }
            }
            if !alone && self.foca.num_members() > 0 && join_attempts > 0 {
                join_attempts = 0;
                join_backoff = JOIN_BACKOFF_MIN;
            }
            self.flush().await;
        }
    }

    fn on_datagram(&mut self, datagram: &[u8], from: SocketAddr) {
        if let Some(sealing) = self.sealing.as_mut() {
            let (header, kind, payload) = match open_keyed(&sealing.keyring, datagram) {
                Ok(opened) => opened,
                Err(SealedError::Auth(_)) => {
                    self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                    self.bad_packet(from, "not sealed with our cluster key");
                    return;
                }
                Err(SealedError::Malformed) => {
                    self.bad_packet(from, "malformed sealed datagram");
                    return;
                }
            };
            // Our own datagrams sent back to us are replays too: we never
            // record our own stream in the window. A datagram sealed for
            // another node is authentic but not ours: replayed from the
            // wire to it, or sent to the previous process at our address
            // before its peers learnt of this one (so it is not counted as
            // an authentication failure).
            let checked = if header.stream == sealing.stream || !header.is_for(self.me.node_id) {
                Err(Replay::Repeated)
            } else {
                sealing.replay.check(
                    header.stream,
                    header.counter,
                    header.sent_ms,
                    self.clock.wall_ms(),
                )
            };
            if let Err(replay) = checked {
                self.stats.replayed_packets.fetch_add(1, Ordering::Relaxed);
                let why = match replay {
                    Replay::Repeated => "replayed datagram",
                    Replay::Stale => "datagram sent too long ago (or clocks too far apart)",
                };
                self.bad_packet(from, why);
                return;
            }
            self.on_message(kind, &payload, from);
            return;
        }
        let Some((kind, payload)) = open(datagram) else {
            self.bad_packet(from, "not a kriminodb membership datagram");
            return;
        };
        self.on_message(kind, payload, from);
    }

    fn on_message(&mut self, kind: Kind, payload: &[u8], from: SocketAddr) {
        match kind {
            Kind::Swim => match self.foca.handle_data(payload, &mut self.runtime) {
                Ok(()) => {
                    self.last_heard.insert(from, self.clock.now());
                }
                Err(e) => self.bad_packet(from, &e.to_string()),
            },
            Kind::Leave => self.on_leave(payload, from),
        }
    }

    /// Puts `payload` of `kind` in the send buffer, sealed if we have a
    /// cluster key.
    /// `receiver` is the node id of the member it goes to
    /// (`ANY_RECEIVER` for an address we announce ourselves to).
    fn envelope(&mut self, kind: Kind, payload: &[u8], receiver: u64) {
        match self.sealing.as_mut() {
            Some(sealing) => {
                sealing.counter += 1;
                let header = SealedHeader {
                    stream: sealing.stream,
                    counter: sealing.counter,
                    sent_ms: self.clock.wall_ms(),
                    receiver,
                };
                seal_keyed(&sealing.keyring, &header, kind, payload, &mut self.send_buf);
            }
            None => seal(kind, payload, &mut self.send_buf),
        }
    }

    fn bad_packet(&self, from: SocketAddr, why: &str) {
        self.stats.bad_packets.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%from, why, "dropped a peer datagram");
    }

    /// A member says it is leaving; believe it only for the identity that
    /// currently lives at the sender's address.
    fn on_leave(&mut self, payload: &[u8], from: SocketAddr) {
        let Ok((node_id, incarnation)) = postcard::from_bytes::<(u64, u64)>(payload) else {
            self.bad_packet(from, "malformed leave notice");
            return;
        };
        let known = self.foca.iter_membership_state().any(|m| {
            m.id().peer == from && m.id().node_id == node_id && m.id().incarnation == incarnation
        });
        if known {
            self.left.insert((node_id, incarnation));
        } else {
            self.bad_packet(from, "leave notice from an unknown member");
        }
    }

    fn fire_due_timers(&mut self) {
        let now = self.clock.now();
        while let Some(Reverse((at, _, _))) = self.timers.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, _, timer))) = self.timers.pop() else {
                break;
            };
            if let Err(e) = self.foca.handle_timer(timer, &mut self.runtime) {
                tracing::debug!(error = %e, "membership timer");
            }
        }
    }

    /// Announces to every address we have known a member at (for up to
    /// `--forget-after`) and to every seed, unless a member is there now.
    async fn reconnect(&mut self, seeds: &[String]) {
        let now = self.clock.now();
        let forget = self.config.forget_after;
        self.known_peers
            .retain(|_, seen| now.duration_since(*seen) <= forget);
        let active: HashSet<SocketAddr> = self.foca.iter_members().map(|m| m.id().peer).collect();
        let mut targets: HashSet<SocketAddr> = self.known_peers.keys().copied().collect();
        for seed in seeds {
            if let Ok(addrs) = tokio::net::lookup_host(seed.as_str()).await {
                targets.extend(addrs);
            }
        }
        for addr in targets
            .into_iter()
            .filter(|a| *a != self.me.peer && !active.contains(a))
        {
            if let Err(e) = self
                .foca
                .announce(MemberId::placeholder(addr), &mut self.runtime)
            {
                tracing::debug!(%addr, error = %e, "reconnect announce failed");
            }
        }
    }

    async fn announce_to(&mut self, seeds: &[String]) {
        for seed in seeds {
            let addrs = match tokio::net::lookup_host(seed.as_str()).await {
                Ok(addrs) => addrs,
                Err(e) => {
                    tracing::warn!(seed, error = %e, "cannot resolve seed");
                    continue;
                }
            };
            for addr in addrs.filter(|a| *a != self.me.peer) {
                if let Err(e) = self
                    .foca
                    .announce(MemberId::placeholder(addr), &mut self.runtime)
                {
                    tracing::debug!(seed, error = %e, "announce failed");
                }
            }
        }
    }

    /// Tells every member we are leaving, then lets foca gossip our
    /// departure, and sends all of it before the socket closes.
    async fn leave(&mut self) {
        let Ok(notice) = postcard::to_allocvec(&(self.me.node_id, self.me.incarnation)) else {
            return;
        };
        let peers: Vec<(SocketAddr, u64)> = self
            .foca
            .iter_members()
            .map(|m| (m.id().peer, m.id().node_id))
            .collect();
        for (peer, node_id) in &peers {
            self.envelope(Kind::Leave, &notice, *node_id);
            let _ = self.socket.send_to(&self.send_buf, peer).await;
        }
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leave");
        }
        self.send_pending().await;
        tracing::info!(members = peers.len(), "left the cluster");
    }

    async fn send_pending(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            // A placeholder (an address we announce to) has the node id
            // ANY_RECEIVER.
            self.envelope(Kind::Swim, &data, to.node_id);
            if let Err(e) = self.socket.send_to(&self.send_buf, to.peer).await {
                tracing::debug!(to = %to.peer, error = %e, "peer send failed");
            }
        }
    }

    /// Carries out what foca asked for, rescales its configuration if the
    /// cluster size changed, and publishes the member list.
    async fn flush(&mut self) {
        self.send_pending().await;
        let now = self.clock.now();
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers
                .push(Reverse((now + after, self.timer_seq, timer)));
        }
        while let Some(notification) = self.runtime.to_notify() {
            match notification {
                OwnedNotification::Rename(old, new) => {
                    tracing::info!(name = %new.name, peer = %new.peer, old_incarnation = old.incarnation,
                        incarnation = new.incarnation, "member restarted");
                }
                OwnedNotification::Active => tracing::info!("connected to the cluster"),
                OwnedNotification::Idle => tracing::warn!("no other member is reachable"),
                OwnedNotification::Rejoin(id) => {
                    tracing::info!(
                        incarnation = id.incarnation,
                        "declared down by peers; rejoined with a new incarnation"
                    );
                    self.me = id;
                }
                _ => {}
            }
        }
        let size = self.foca.num_members() + 1;
        if size != self.cluster_size {
            self.cluster_size = size;
            if let Err(e) = self.foca.set_config(protocol_config(&self.config, size)) {
                tracing::debug!(error = %e, "rescaling the membership configuration");
            }
        }
        self.expire_suspicions();
        self.publish();
    }

    /// Declares down the members suspected here for too long (see
    /// [`SuspicionTimer`]).
    fn expire_suspicions(&mut self) {
        let limit = protocol_config(&self.config, self.cluster_size).suspect_to_down_after;
        let overdue = self.suspicion.overdue(
            self.foca.iter_membership_state(),
            self.clock.since(self.epoch),
            limit,
        );
        if !overdue.is_empty()
            && let Err(e) = self
                .foca
                .apply_many(overdue.into_iter(), true, &mut self.runtime)
        {
            tracing::debug!(error = %e, "local suspicion timeout");
        }
    }

    fn publish(&mut self) {
        let mut views = vec![self_view(&self.me)];
        let mut seen = HashMap::new();
        for member in self.foca.iter_membership_state() {
            let id = member.id();
            if self.left.contains(&(id.node_id, id.incarnation)) {
                continue;
            }
            let state = match member.state() {
                foca::State::Alive => MemberState::Alive,
                foca::State::Suspect => MemberState::Suspect,
                foca::State::Down => MemberState::Down,
            };
            seen.insert(id.peer, (id.clone(), state));
            if state != MemberState::Down {
                self.known_peers.insert(id.peer, self.clock.now());
            }
            views.push(MemberView {
                id: id.clone(),
                state,
                last_heard: self.last_heard.get(&id.peer).copied(),
                is_self: false,
            });
        }
        self.log_transitions(&seen);
        self.previous = seen;
        // Forget leave notices and last-heard times of members foca dropped.
        let present: HashSet<SocketAddr> = self
            .foca
            .iter_membership_state()
            .map(|m| m.id().peer)
            .collect();
        let live_ids: HashSet<(u64, u64)> = self
            .foca
            .iter_membership_state()
            .map(|m| (m.id().node_id, m.id().incarnation))
            .collect();
        self.left.retain(|id| live_ids.contains(id));
        self.last_heard.retain(|addr, _| present.contains(addr));
        self.publish.send_replace(Arc::new(views));
    }

    fn log_transitions(&self, current: &HashMap<SocketAddr, (MemberId, MemberState)>) {
        for (addr, (id, state)) in current {
            match self.previous.get(addr) {
                None => {
                    tracing::info!(name = %id.name, peer = %addr, state = state.as_str(), "member joined")
                }
                Some((old, old_state)) if old_state != state || old != id => {
                    tracing::info!(name = %id.name, peer = %addr, state = state.as_str(), "member is now {}", state.as_str());
                }
                Some(_) => {}
            }
        }
        for (addr, (id, _)) in &self.previous {
            if !current.contains_key(addr) {
                if self.left.contains(&(id.node_id, id.incarnation)) {
                    tracing::info!(name = %id.name, peer = %addr, "member left");
                } else {
                    tracing::info!(name = %id.name, peer = %addr, "member removed");
                }
            }
        }
    }
}
