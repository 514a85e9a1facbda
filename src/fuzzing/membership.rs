//! The membership target: datagrams fed to one node's SWIM state.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, PostcardCodec};
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::config::Config;
use crate::membership::{self, Kind, MemberId};

/// A membership node's view for the datagram target: foca configured as
/// the driver configures it, fed synchronously.
pub struct MembershipHarness {
    pub(super) foca: Foca<MemberId, PostcardCodec, StdRng, NoCustomBroadcast>,
    pub(super) runtime: AccumulatingRuntime<MemberId>,
    /// Sealed datagrams foca asked to send, when recording (seed corpus).
    pub(super) sent: Option<Vec<(SocketAddr, Vec<u8>)>>,
    timers: Vec<foca::Timer<MemberId>>,
}

impl Default for MembershipHarness {
    fn default() -> Self {
        Self::new(1, 4000)
    }
}

impl MembershipHarness {
    /// Node `node_id` at 127.0.0.1:`peer_port` (the fuzz target is node 1
    /// at port 4000: datagrams for another identity are refused early).
    pub fn new(node_id: u64, peer_port: u16) -> Self {
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), peer_port);
        let me = MemberId {
            node_id,
            incarnation: 1,
            name: format!("node{node_id}"),
            peer,
            client: SocketAddr::new(peer.ip(), peer_port - 1000),
        };
        Self {
            foca: Foca::new(
                me,
                membership::protocol_config(&Config::default(), 1),
                StdRng::seed_from_u64(node_id),
                PostcardCodec,
            ),
            runtime: AccumulatingRuntime::new(),
            sent: None,
            timers: Vec::new(),
        }
    }

    /// One datagram, as the driver handles it; returns whether it was
    /// accepted (a rejected one is counted as bad by the node).
    pub fn datagram(&mut self, datagram: &[u8]) -> bool {
        let accepted = match membership::open(datagram) {
            None => false,
            Some((Kind::Swim, payload)) => {
                self.foca.handle_data(payload, &mut self.runtime).is_ok()
            }
            Some((Kind::Leave, payload)) => postcard::from_bytes::<(u64, u64)>(payload).is_ok(),
        };
        self.settle();
        accepted
    }

    /// Carries out what foca asked for: sends (dropped unless recording),
    /// notifications, and timers (kept for [`Self::fire_timers`]).
    pub(super) fn settle(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            if let Some(sent) = self.sent.as_mut() {
                let mut sealed = Vec::new();
                membership::seal(Kind::Swim, &data, &mut sealed);
                sent.push((to.peer, sealed));
            }
        }
        while self.runtime.to_notify().is_some() {}
        while let Some((_, timer)) = self.runtime.to_schedule() {
            self.timers.push(timer);
        }
    }

    /// Fires every pending timer, as if their deadlines had all passed.
    pub fn fire_timers(&mut self) {
        for timer in std::mem::take(&mut self.timers) {
            let _ = self.foca.handle_timer(timer, &mut self.runtime);
        }
        self.settle();
    }

    pub fn members(&self) -> usize {
        self.foca.num_members()
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
