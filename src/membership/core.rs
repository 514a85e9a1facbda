//! The membership core: foca with its timer heap, the datagram envelope
//! (plain, or sealed with the cluster key against forgery and replay), and
//! what the node keeps about members beside foca: graceful leaves,
//! last-heard times, the peers it knew, the local suspicion timeout, the
//! join backoff and the reconnect schedule. From these it works out the
//! member list to publish and the [`Event`]s worth logging.
//!
//! A plain struct stepped by calls: it owns no socket, task or clock (every
//! step is handed the time), and its randomness comes from a seed. The
//! driver task, the fuzz harness, the simulation and the unit tests all
//! step this one struct. It never resolves names (seeds are handed to it as
//! addresses) and logs nothing above debug level: events are the caller's
//! to log.

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, PostcardCodec, Timer};
use rand::SeedableRng;
use rand::rngs::StdRng;

use super::sealing::Envelope;
use super::suspicion::SuspicionTimer;
use super::{Kind, MemberId, MemberState, MemberView, MembershipStats, protocol_config};
use crate::config::Config;
use crate::crypto::Keyring;

/// First and longest wait between announces to the seeds while alone.
pub const JOIN_BACKOFF_MIN: Duration = Duration::from_millis(500);
pub const JOIN_BACKOFF_MAX: Duration = Duration::from_secs(5);
/// How often a node announces itself to the peers it knew (and its seeds)
/// that are not members now: after a partition both sides have declared
/// each other down and removed them, and only a node that reaches across
/// brings the two halves back together.
pub const RECONNECT_EVERY: Duration = Duration::from_secs(3);

type Swim = Foca<MemberId, PostcardCodec, StdRng, NoCustomBroadcast>;

/// An announce the core wants made: the caller resolves the seed names
/// (I/O the core never does) and hands the addresses to
/// [`MembershipCore::announce`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announce {
    /// We know no member: announce to the seeds. `attempt` counts from 1;
    /// the next one comes `retry_in` later if nobody answers.
    Join { attempt: u32, retry_in: Duration },
    /// Announce to the seeds and to every peer we knew that is not a
    /// member now.
    Reconnect,
}

/// What happened to the membership, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member listed for the first time (or again after its removal).
    Joined { id: MemberId, state: MemberState },
    /// A listed member changed state, or identity at the same address.
    Changed { id: MemberId, state: MemberState },
    /// A member that announced its leave is no longer listed.
    Left(MemberId),
    /// A member dropped from the list (down for `--remove-down-after`).
    Removed(MemberId),
    /// A member came back at its address under a new incarnation.
    Restarted { old: MemberId, new: MemberId },
    /// We reached the cluster.
    Connected,
    /// No other member is reachable.
    Idle,
    /// Peers declared us down; we rejoined under this new identity.
    Rejoined(MemberId),
}

/// Why a datagram was dropped (and counted in [`MembershipStats`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Dropped {
    #[error("not a kriminodb membership datagram")]
    NotOurs,
    #[error("not sealed with our cluster key")]
    Unauthenticated,
    #[error("malformed sealed datagram")]
    MalformedSealed,
    #[error("replayed datagram")]
    Replayed,
    #[error("datagram sent too long ago (or clocks too far apart)")]
    Stale,
    #[error("malformed leave notice")]
    MalformedLeave,
    #[error("leave notice from an unknown member")]
    UnknownLeaver,
    /// foca refused the message (its error, as text).
    #[error("{0}")]
    Swim(String),
}

/// A datagram to send, sealed when drained (sealing needs the wall clock).
struct Outgoing {
    to: SocketAddr,
    /// Node id of the member it goes to, `ANY_RECEIVER` for an address
    /// we announce ourselves to (foca's placeholder identity has it).
    receiver: u64,
    kind: Kind,
    payload: Bytes,
}

struct JoinSchedule {
    /// Next announce to the seeds while alone; None without seeds.
    at: Option<Instant>,
    backoff: Duration,
    /// Announces since we last had a member.
    attempts: u32,
}

/// One node's membership, stepped by calls (see the module docs).
pub struct MembershipCore {
    foca: Swim,
    runtime: AccumulatingRuntime<MemberId>,
    /// foca's timers by deadline; the sequence number keeps equal deadlines
    /// in submission order. foca requires every timer to be delivered.
    timers: BinaryHeap<Reverse<(Instant, u64, Timer<MemberId>)>>,
    timer_seq: u64,
    config: Config,
    /// Cluster size foca's configuration was last scaled for, and the
    /// suspicion timeout of that configuration.
    cluster_size: usize,
    suspect_to_down_after: Duration,
    me: MemberId,
    envelope: Envelope,
    stats: Arc<MembershipStats>,
    last_heard: HashMap<SocketAddr, Instant>,
    /// Identities (node id, incarnation) that announced a graceful leave,
    /// with their address; hidden at once instead of lingering as down.
    left: HashMap<(u64, u64), SocketAddr>,
    suspicion: SuspicionTimer,
    /// Addresses of former members, and when each was last listed alive
    /// or suspect (for reconnecting). A member listed alive or suspect now
    /// is not reconnected to, so it needs no entry until it stops being.
    known_peers: HashMap<SocketAddr, Instant>,
    /// Listed members by address, as of the last step: the transitions
    /// are what changed since.
    listed: HashMap<SocketAddr, (MemberId, MemberState)>,
    /// foca's membership at the last step, in its order: while it is the
    /// same, so is everything derived from it, and a step costs no lookup.
    fingerprints: Vec<Fingerprint>,
    /// A leave notice was taken: what is listed changed, foca's state did not.
    left_changed: bool,
    /// Sender of the datagram foca took in this step, for last-heard.
    heard_from: Option<SocketAddr>,
    /// When the core was last stepped: for a member that stops being
    /// listed alive or suspect, the last time it was.
    last_step: Instant,
    join: JoinSchedule,
    next_reconnect: Instant,
    outgoing: Vec<Outgoing>,
    events: Vec<Event>,
}

impl MembershipCore {
    /// A node that knows nobody yet, configured for a cluster of one;
    /// with `config.join`, it asks to announce to the seeds at once. All
    /// its randomness (foca's choices, the anti-replay stream id) comes
    /// from `seed`.
    pub fn new(
        me: MemberId,
        config: &Config,
        keyring: Option<Arc<Keyring>>,
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let envelope = Envelope::new(keyring, &mut rng);
        let foca_config = protocol_config(config, 1);
        let suspect_to_down_after = foca_config.suspect_to_down_after;
        Self {
            foca: Foca::new(me.clone(), foca_config, rng, PostcardCodec),
            runtime: AccumulatingRuntime::new(),
            timers: BinaryHeap::new(),
            timer_seq: 0,
            config: config.clone(),
            cluster_size: 1,
            suspect_to_down_after,
            me,
            envelope,
            stats: Arc::new(MembershipStats::default()),
            last_heard: HashMap::new(),
            left: HashMap::new(),
            suspicion: SuspicionTimer::default(),
            known_peers: HashMap::new(),
            listed: HashMap::new(),
            fingerprints: Vec::new(),
            left_changed: false,
            heard_from: None,
            last_step: now,
            join: JoinSchedule {
                at: (!config.join.is_empty()).then_some(now),
                backoff: JOIN_BACKOFF_MIN,
                attempts: 0,
            },
            next_reconnect: now + RECONNECT_EVERY,
            outgoing: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Our identity (renewed when peers declared us down).
    pub fn me(&self) -> &MemberId {
        &self.me
    }

    /// The counters of dropped datagrams, shared with the handle.
    pub fn stats(&self) -> &Arc<MembershipStats> {
        &self.stats
    }

    /// Members alive or suspect, not counting this node.
    pub fn active_members(&self) -> usize {
        self.foca.num_members()
    }

    /// One datagram from `from`, received at `now` (`now_ms` on the wall
    /// clock, for anti-replay); a dropped one is counted and says why.
    pub fn handle_datagram(
        &mut self,
        datagram: &[u8],
        from: SocketAddr,
        now: Instant,
        now_ms: u64,
    ) -> Result<(), Dropped> {
        let received = self.receive(datagram, from, now_ms);
        if let Err(why) = &received {
            self.stats.bad_packets.fetch_add(1, Ordering::Relaxed);
            match why {
                Dropped::Unauthenticated => {
                    self.stats.auth_failures.fetch_add(1, Ordering::Relaxed);
                }
                Dropped::Replayed | Dropped::Stale => {
                    self.stats.replayed_packets.fetch_add(1, Ordering::Relaxed);
                }
                _ => {}
            }
        }
        self.settle(now);
        received
    }

    fn receive(&mut self, datagram: &[u8], from: SocketAddr, now_ms: u64) -> Result<(), Dropped> {
        let (kind, payload) = self.envelope.open(datagram, self.me.node_id, now_ms)?;
        match kind {
            Kind::Swim => {
                self.foca
                    .handle_data(&payload, &mut self.runtime)
                    .map_err(|e| Dropped::Swim(e.to_string()))?;
                self.heard_from = Some(from);
                Ok(())
            }
            Kind::Leave => self.on_leave(&payload, from),
        }
    }

    /// A member says it is leaving; believe it only for the identity that
    /// currently lives at the sender's address.
    fn on_leave(&mut self, payload: &[u8], from: SocketAddr) -> Result<(), Dropped> {
        let (node_id, incarnation) =
            postcard::from_bytes::<(u64, u64)>(payload).map_err(|_| Dropped::MalformedLeave)?;
        let known = self.foca.iter_membership_state().any(|m| {
            m.id().peer == from && m.id().node_id == node_id && m.id().incarnation == incarnation
        });
        if !known {
            return Err(Dropped::UnknownLeaver);
        }
        self.left.insert((node_id, incarnation), from);
        self.left_changed = true;
        Ok(())
    }

    /// Fires foca's timers due at `now`, in deadline order (submission
    /// order for equal deadlines). Timers they schedule wait for a later
    /// call, even those due at once. Like every step, it also declares
    /// down the suspects whose local suspicion timed out.
    pub fn fire_due_timers(&mut self, now: Instant) {
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
        self.settle(now);
    }

    /// When the core next needs a call: a timer's deadline or a local
    /// suspicion's ([`Self::fire_due_timers`]), or an announce's
    /// ([`Self::due_announce`]).
    pub fn next_deadline(&self) -> Instant {
        let mut next = self.next_reconnect;
        if let Some(Reverse((at, _, _))) = self.timers.peek() {
            next = next.min(*at);
        }
        if let Some(at) = self.suspicion.next_expiry(self.suspect_to_down_after) {
            next = next.min(at);
        }
        if let Some(join) = self.join.at
            && self.foca.num_members() == 0
        {
            next = next.min(join);
        }
        next
    }

    /// The latest deadline among foca's pending timers: the fuzz harness
    /// moves time there to fire them all at once.
    pub fn last_timer_deadline(&self) -> Option<Instant> {
        self.timers.iter().map(|Reverse((at, _, _))| *at).max()
    }

    /// The announce due at `now`, if any, scheduling the next one: the
    /// join backoff while we know no member, the reconnect period always.
    /// Several may be due: call until None.
    pub fn due_announce(&mut self, now: Instant) -> Option<Announce> {
        if let Some(at) = self.join.at
            && at <= now
            && self.foca.num_members() == 0
        {
            self.join.attempts += 1;
            let retry_in = self.join.backoff;
            self.join.at = Some(now + retry_in);
            self.join.backoff = (retry_in * 2).min(JOIN_BACKOFF_MAX);
            return Some(Announce::Join {
                attempt: self.join.attempts,
                retry_in,
            });
        }
        if self.next_reconnect <= now {
            self.next_reconnect = now + RECONNECT_EVERY;
            return Some(Announce::Reconnect);
        }
        None
    }

    /// Makes `announce`, `seeds` being the addresses the seed names
    /// resolve to now.
    pub fn announce(&mut self, announce: Announce, seeds: &[SocketAddr], now: Instant) {
        let targets = match announce {
            Announce::Join { .. } => seeds.iter().copied().collect(),
            Announce::Reconnect => self.reconnect_targets(seeds, now),
        };
        for addr in targets.into_iter().filter(|a| *a != self.me.peer) {
            if let Err(e) = self
                .foca
                .announce(MemberId::placeholder(addr), &mut self.runtime)
            {
                tracing::debug!(%addr, error = %e, ?announce, "announce failed");
            }
        }
        self.settle(now);
    }

    /// Every address we have known a member at (for up to
    /// `--forget-after`) and every seed, unless a member is there now;
    /// ordered, so a simulated run depends on its seed only.
    fn reconnect_targets(&mut self, seeds: &[SocketAddr], now: Instant) -> BTreeSet<SocketAddr> {
        let forget = self.config.forget_after;
        self.known_peers
            .retain(|_, seen| now.saturating_duration_since(*seen) <= forget);
        let mut targets: BTreeSet<SocketAddr> = self.known_peers.keys().copied().collect();
        targets.extend(seeds);
        for member in self.foca.iter_members() {
            targets.remove(&member.id().peer);
        }
        targets
    }

    /// Tells every member we are leaving, then has foca gossip our
    /// departure; returns how many members were told. Send all of it
    /// ([`Self::drain_outgoing`]) before the socket closes.
    pub fn leave(&mut self, now: Instant) -> usize {
        let Ok(notice) = postcard::to_allocvec(&(self.me.node_id, self.me.incarnation)) else {
            return 0;
        };
        let notice = Bytes::from(notice);
        let before = self.outgoing.len();
        for member in self.foca.iter_members() {
            self.outgoing.push(Outgoing {
                to: member.id().peer,
                receiver: member.id().node_id,
                kind: Kind::Leave,
                payload: notice.clone(),
            });
        }
        let told = self.outgoing.len() - before;
        if let Err(e) = self.foca.leave_cluster(&mut self.runtime) {
            tracing::debug!(error = %e, "leave");
        }
        self.settle(now);
        told
    }

    /// Simulation shortcut to a settled cluster: learns `members` as alive
    /// without telling anyone, as if restored from a snapshot, instead of
    /// N announces gossiped through the cluster.
    pub fn bootstrap(&mut self, members: impl IntoIterator<Item = MemberId>, now: Instant) {
        let members = members.into_iter().map(foca::Member::alive);
        if let Err(e) = self.foca.apply_many(members, false, &mut self.runtime) {
            tracing::debug!(error = %e, "bootstrap");
        }
        self.settle(now);
    }

    /// The datagrams to send, each sealed (with the cluster key, if any)
    /// at `now_ms` on the wall clock; in the order they were produced.
    pub fn drain_outgoing(
        &mut self,
        now_ms: u64,
    ) -> impl Iterator<Item = (SocketAddr, Vec<u8>)> + '_ {
        let envelope = &mut self.envelope;
        self.outgoing.drain(..).map(move |out| {
            let datagram = envelope.seal(out.kind, &out.payload, out.receiver, now_ms);
            (out.to, datagram)
        })
    }

    /// What happened since the last drain, in order.
    pub fn drain_events(&mut self) -> impl Iterator<Item = Event> + '_ {
        self.events.drain(..)
    }

    /// Every listed member, this node first: what the node publishes.
    pub fn views(&self) -> Vec<MemberView> {
        let mut views = vec![MemberView {
            id: self.me.clone(),
            state: MemberState::Alive,
            last_heard: None,
            is_self: true,
        }];
        views.extend(
            self.foca
                .iter_membership_state()
                .filter(|m| !self.has_left(m.id()))
                .map(|m| MemberView {
                    id: m.id().clone(),
                    state: member_state(m.state()),
                    last_heard: self.last_heard.get(&m.id().peer).copied(),
                    is_self: false,
                }),
        );
        views
    }

    /// How the member at `peer` is listed, if it is.
    pub fn state_of(&self, peer: SocketAddr) -> Option<MemberState> {
        self.listed.get(&peer).map(|(_, state)| *state)
    }

    fn has_left(&self, id: &MemberId) -> bool {
        self.left.contains_key(&(id.node_id, id.incarnation))
    }

    /// Takes what foca asked for after a step, applies the local
    /// suspicion timeout, and works out what changed.
    fn settle(&mut self, now: Instant) {
        self.take_foca_output(now);
        if self.expire_suspicions(now) {
            self.take_foca_output(now);
        }
        if self.foca.num_members() > 0 && self.join.attempts > 0 {
            self.join.attempts = 0;
            self.join.backoff = JOIN_BACKOFF_MIN;
        }
        self.track_members(now);
    }

    /// Queues foca's datagrams, schedules its timers, turns its
    /// notifications into events, and rescales its configuration when the
    /// cluster size changed.
    fn take_foca_output(&mut self, now: Instant) {
        while let Some((to, payload)) = self.runtime.to_send() {
            self.outgoing.push(Outgoing {
                to: to.peer,
                receiver: to.node_id,
                kind: Kind::Swim,
                payload,
            });
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            self.timer_seq += 1;
            self.timers
                .push(Reverse((now + after, self.timer_seq, timer)));
        }
        while let Some(notification) = self.runtime.to_notify() {
            let event = match notification {
                OwnedNotification::Rename(old, new) => Event::Restarted { old, new },
                OwnedNotification::Active => Event::Connected,
                OwnedNotification::Idle => Event::Idle,
                OwnedNotification::Rejoin(id) => {
                    self.me = id.clone();
                    Event::Rejoined(id)
                }
                _ => continue,
            };
            self.events.push(event);
        }
        let size = self.foca.num_members() + 1;
        if size != self.cluster_size {
            self.cluster_size = size;
            let config = protocol_config(&self.config, size);
            self.suspect_to_down_after = config.suspect_to_down_after;
            if let Err(e) = self.foca.set_config(config) {
                tracing::debug!(error = %e, "rescaling the membership configuration");
            }
        }
    }

    /// Declares down the members suspected here for too long (see
    /// [`SuspicionTimer`]); true if there were any.
    fn expire_suspicions(&mut self, now: Instant) -> bool {
        let overdue = self.suspicion.overdue(
            self.foca.iter_membership_state(),
            now,
            self.suspect_to_down_after,
        );
        if overdue.is_empty() {
            return false;
        }
        if let Err(e) = self
            .foca
            .apply_many(overdue.into_iter(), true, &mut self.runtime)
        {
            tracing::debug!(error = %e, "local suspicion timeout");
        }
        true
    }

    /// Works out what changed in this step: the listing and its events,
    /// former members, and when the sender was heard from.
    fn track_members(&mut self, now: Instant) {
        match self.state_changes() {
            Some(changes) if changes.is_empty() => {}
            Some(changes) => {
                for (id, state) in &changes {
                    self.note_listed(id, *state);
                }
                self.take_fingerprints();
            }
            None => {
                self.left_changed = false;
                self.relist();
                self.take_fingerprints();
            }
        }
        if let Some(from) = self.heard_from.take()
            && self.holds(from)
        {
            self.last_heard.insert(from, now);
        }
        self.last_step = now;
    }

    fn take_fingerprints(&mut self) {
        self.fingerprints.clear();
        self.fingerprints
            .extend(self.foca.iter_membership_state().map(fingerprint));
    }

    /// The listed members whose state or identity changed since the last
    /// step, when nothing else did (the same addresses in the same order,
    /// no leave notice to take or forget): the common step costs a
    /// comparison per member and no lookup. None when the listing must be
    /// worked out again.
    fn state_changes(&self) -> Option<Vec<(MemberId, MemberState)>> {
        let members = self.foca.iter_membership_state();
        if self.left_changed || members.len() != self.fingerprints.len() {
            return None;
        }
        let mut changes = Vec::new();
        for (member, seen) in members.zip(&self.fingerprints) {
            let current = fingerprint(member);
            if current == *seen {
                continue;
            }
            // A new identity at an address (a restart) may end a leave.
            let renamed = current.identity != seen.identity;
            if current.identity.0 != seen.identity.0 || (renamed && !self.left.is_empty()) {
                return None;
            }
            if !self.has_left(member.id()) {
                changes.push((member.id().clone(), member_state(member.state())));
            }
        }
        Some(changes)
    }

    /// Whether foca holds a member at `addr`: listed, or hidden since its
    /// leave notice.
    fn holds(&self, addr: SocketAddr) -> bool {
        self.listed.contains_key(&addr) || self.left.values().any(|a| *a == addr)
    }

    /// Notes that `id` is listed as `state` now: an event if that is news.
    fn note_listed(&mut self, id: &MemberId, state: MemberState) {
        // foca keeps at most one member per address.
        match self.listed.get_mut(&id.peer) {
            None => {
                self.listed.insert(id.peer, (id.clone(), state));
                self.events.push(Event::Joined {
                    id: id.clone(),
                    state,
                });
            }
            Some(seen) if seen.1 != state || seen.0 != *id => {
                if state == MemberState::Down && seen.1 != MemberState::Down {
                    self.known_peers.insert(id.peer, self.last_step);
                }
                *seen = (id.clone(), state);
                self.events.push(Event::Changed {
                    id: id.clone(),
                    state,
                });
            }
            Some(_) => {}
        }
    }

    /// Works the whole listing out again (members came, went, changed
    /// identity or left), and forgets leaves and last-heard times of
    /// members foca dropped.
    fn relist(&mut self) {
        let current: Vec<(MemberId, MemberState)> = self
            .foca
            .iter_membership_state()
            .filter(|m| !self.has_left(m.id()))
            .map(|m| (m.id().clone(), member_state(m.state())))
            .collect();
        for (id, state) in &current {
            self.note_listed(id, *state);
        }
        if self.listed.len() > current.len() {
            self.unlist_missing();
        }
        if !self.left.is_empty() {
            let foca = &self.foca;
            self.left.retain(|(node_id, incarnation), _| {
                foca.iter_membership_state()
                    .any(|m| m.id().node_id == *node_id && m.id().incarnation == *incarnation)
            });
        }
        let mut last_heard = std::mem::take(&mut self.last_heard);
        last_heard.retain(|addr, _| self.holds(*addr));
        self.last_heard = last_heard;
    }

    /// Drops from the listing the members no longer listed: they left, or
    /// foca removed them.
    fn unlist_missing(&mut self) {
        let present: HashSet<SocketAddr> = self
            .foca
            .iter_membership_state()
            .filter(|m| !self.has_left(m.id()))
            .map(|m| m.id().peer)
            .collect();
        let mut gone: Vec<SocketAddr> = self
            .listed
            .keys()
            .filter(|addr| !present.contains(addr))
            .copied()
            .collect();
        gone.sort();
        for addr in gone {
            let Some((id, state)) = self.listed.remove(&addr) else {
                continue;
            };
            if state != MemberState::Down {
                self.known_peers.insert(addr, self.last_step);
            }
            let event = if self.has_left(&id) {
                Event::Left(id)
            } else {
                Event::Removed(id)
            };
            self.events.push(event);
        }
    }
}

/// A member's state in foca, as compared between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    /// Address, node id and incarnation.
    identity: (SocketAddr, u64, u64),
    swim_incarnation: u16,
    state: foca::State,
}

fn fingerprint(member: &foca::Member<MemberId>) -> Fingerprint {
    let id = member.id();
    Fingerprint {
        identity: (id.peer, id.node_id, id.incarnation),
        swim_incarnation: member.incarnation(),
        state: member.state(),
    }
}

fn member_state(state: foca::State) -> MemberState {
    match state {
        foca::State::Alive => MemberState::Alive,
        foca::State::Suspect => MemberState::Suspect,
        foca::State::Down => MemberState::Down,
    }
}
