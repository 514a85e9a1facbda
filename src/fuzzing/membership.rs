//! The membership target: datagrams fed to one node's membership core.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use crate::config::Config;
use crate::membership::{Dropped, MemberId, MembershipCore};

/// Wall clock of the harness (unix ms): datagrams are not sealed, so it
/// only has to be some time.
const WALL_MS: u64 = 1_700_000_000_000;

/// One membership node for the datagram target: the node's own
/// [`MembershipCore`], configured as the driver configures it, stepped
/// synchronously in a time that moves only to fire timers.
pub struct MembershipHarness {
    core: MembershipCore,
    now: Instant,
    /// `--join`, already resolved.
    seeds: Vec<SocketAddr>,
    /// Datagrams the core sent, when [`Self::recording`].
    pub(super) sent: Option<Vec<(SocketAddr, Vec<u8>)>>,
}

impl Default for MembershipHarness {
    fn default() -> Self {
        Self::new(1, 4000)
    }
}

/// Where the target's datagrams come from: node 2 of the seed exchange,
/// so that a leave notice for it can be believed.
const FUZZ_SENDER: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4001);

impl MembershipHarness {
    /// Node `node_id` at 127.0.0.1:`peer_port` (the fuzz target is node 1
    /// at port 4000: datagrams for another identity are refused early).
    pub fn new(node_id: u64, peer_port: u16) -> Self {
        Self::with_seeds(node_id, peer_port, Vec::new())
    }

    /// The same, started with `--join` `seed`: it announces itself at once.
    pub fn joining(node_id: u64, peer_port: u16, seed: SocketAddr) -> Self {
        Self::with_seeds(node_id, peer_port, vec![seed])
    }

    fn with_seeds(node_id: u64, peer_port: u16, seeds: Vec<SocketAddr>) -> Self {
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), peer_port);
        let me = MemberId {
            node_id,
            incarnation: 1,
            name: format!("node{node_id}"),
            peer,
            client: SocketAddr::new(peer.ip(), peer_port - 1000),
        };
        let config = Config {
            join: seeds.iter().map(ToString::to_string).collect(),
            ..Config::default()
        };
        let now = Instant::now();
        let mut harness = Self {
            core: MembershipCore::new(me, &config, None, node_id, now),
            now,
            seeds,
            sent: None,
        };
        harness.announce_due();
        harness
    }

    /// One datagram from [`FUZZ_SENDER`], as the driver hands it over;
    /// whether it got past the decoders.
    pub fn datagram(&mut self, datagram: &[u8]) -> bool {
        self.datagram_from(datagram, FUZZ_SENDER)
    }

    /// One datagram from `from`; whether it got past the decoders: taken,
    /// or a well-formed leave notice from a member this node does not know
    /// (every other refusal is counted as bad by the node).
    pub fn datagram_from(&mut self, datagram: &[u8], from: SocketAddr) -> bool {
        let handled = self.core.handle_datagram(datagram, from, self.now, WALL_MS);
        self.settle();
        matches!(handled, Ok(()) | Err(Dropped::UnknownLeaver))
    }

    /// Records the datagrams it sends from now on, those of its first
    /// announce included (seed corpus).
    pub(super) fn recording(mut self) -> Self {
        self.sent = Some(Vec::new());
        self.settle();
        self
    }

    /// Makes the announces due now, as the driver does at a deadline
    /// (what they send is taken at the next [`Self::settle`]).
    fn announce_due(&mut self) {
        while let Some(announce) = self.core.due_announce(self.now) {
            self.core.announce(announce, &self.seeds, self.now);
        }
    }

    /// Takes what the core produced: datagrams (dropped unless recording)
    /// and events.
    fn settle(&mut self) {
        let sent = self.core.drain_outgoing(WALL_MS);
        match self.sent.as_mut() {
            Some(recorded) => recorded.extend(sent),
            None => sent.for_each(drop),
        }
        self.core.drain_events().for_each(drop);
    }

    /// Fires every pending timer, as if their deadlines had all passed
    /// (time moves to the last of them).
    pub fn fire_timers(&mut self) {
        if let Some(last) = self.core.last_timer_deadline() {
            self.now = self.now.max(last);
        }
        self.core.fire_due_timers(self.now);
        self.announce_due();
        self.settle();
    }

    pub fn members(&self) -> usize {
        self.core.active_members()
    }
}

/// Splits the membership target's input: datagrams, each preceded by its
/// length (u16, little endian; a longer length takes what is left).
pub fn split_datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut datagrams = Vec::new();
    while let [lo, hi, tail @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (datagram, rest) = tail.split_at(len);
        datagrams.push(datagram);
        data = rest;
    }
    datagrams
}

/// The membership target: a sequence of datagrams fed to one node; an
/// empty one (which the envelope refuses anyway) fires the pending timers,
/// and so does the end of the input.
pub fn membership_target(data: &[u8]) {
    let mut harness = MembershipHarness::default();
    for datagram in split_datagrams(data) {
        if datagram.is_empty() {
            harness.fire_timers();
        } else {
            harness.datagram(datagram);
        }
    }
    harness.fire_timers();
}
