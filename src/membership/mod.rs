//! Cluster membership: SWIM with suspicion through the `foca` crate.
//!
//! foca owns the protocol state machine; the membership core in [`core`]
//! wraps it with its timers, the wire envelope and what we keep about
//! members, stepped by calls; the driver task in [`driver`] owns the UDP
//! socket on the peer port and the clock, and only moves datagrams and
//! timers between them. This module holds what they share: the member
//! identity, the protocol configuration derived from our flags, the
//! envelope formats (plain, or sealed with the cluster key: see
//! [`seal_keyed`]), and the handle the rest of the node reads membership
//! from. It never touches the keyspace.

mod core;
mod driver;
mod sealing;
mod suspicion;

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::config::Config;
use crate::crypto::{AuthError, DATAGRAM_NONCE_LEN, Keyring, TAG_LEN};

pub use self::core::{
    Announce, Dropped, Event, JOIN_BACKOFF_MAX, JOIN_BACKOFF_MIN, MembershipCore, RECONNECT_EVERY,
};
pub use driver::start;

/// A member's identity, carried in every SWIM message.
///
/// `incarnation` is the wall-clock millisecond at which the process started
/// (bumped by one when foca asks us to renew), so a restarted node always
/// wins over its previous life at the same peer address and rejoins at once.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberId {
    pub node_id: u64,
    pub incarnation: u64,
    pub name: String,
    pub peer: SocketAddr,
    pub client: SocketAddr,
}

impl foca::Identity for MemberId {
    type Addr = SocketAddr;

    fn renew(&self) -> Option<Self> {
        Some(Self {
            incarnation: self.incarnation.wrapping_add(1),
            ..self.clone()
        })
    }

    fn addr(&self) -> SocketAddr {
        self.peer
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.incarnation, self.node_id) > (adversary.incarnation, adversary.node_id)
    }
}

impl MemberId {
    /// The identity to announce to a seed we only know the address of: foca
    /// accepts an announce whose destination address is its own. Datagrams
    /// to it are sealed for [`ANY_RECEIVER`].
    pub fn placeholder(peer: SocketAddr) -> Self {
        Self {
            node_id: ANY_RECEIVER,
            incarnation: 0,
            name: String::new(),
            peer,
            client: peer,
        }
    }
}

/// foca's configuration from our flags, for a cluster of `cluster_size`.
///
/// As foca's LAN profile (after memberlist's), the number of times an update
/// is retransmitted grows with log10 of the cluster size, and so does the
/// suspicion timeout beyond 10 members; probe timings are ours, chosen so a
/// crashed node is seen down by everyone within 5 s on a LAN while a node
/// paused for a second is only suspected.
pub fn protocol_config(config: &Config, cluster_size: usize) -> foca::Config {
    let n =
        NonZeroU32::new(cluster_size.clamp(1, u32::MAX as usize) as u32).unwrap_or(NonZeroU32::MIN);
    let mut c = foca::Config::new_lan(n);
    c.probe_period = config.probe_period;
    c.probe_rtt = config.probe_rtt.min(config.probe_period);
    c.num_indirect_probes = NonZeroUsize::new(config.indirect_probes).unwrap_or(NonZeroUsize::MIN);
    let scale = f64::max(1.0, (cluster_size.max(1) as f64).log10());
    c.suspect_to_down_after = config.suspect_timeout.mul_f64(scale);
    // Small clusters still get a few retransmissions so one lost datagram
    // does not hide an update.
    let max_tx = (4.0 * ((cluster_size + 1) as f64).log10()).clamp(4.0, 255.0) as u8;
    c.max_transmissions = NonZeroU8::new(max_tx).unwrap_or(NonZeroU8::MIN);
    c.remove_down_after = Some(config.remove_down_after);
    let envelope = if config.has_cluster_key() {
        SEALED_OVERHEAD
    } else {
        ENVELOPE_LEN
    };
    c.max_packet_size = NonZeroUsize::new(MAX_DATAGRAM - envelope).unwrap_or(NonZeroUsize::MIN);
    if let Some(gossip) = c.periodic_gossip.as_mut() {
        gossip.frequency = config.gossip_interval;
    }
    // Seeds that were down when we joined are retried often, so a cluster
    // whose bootstrap node restarts heals quickly.
    if let Some(down) = c.periodic_announce_to_down_members.as_mut() {
        down.frequency = Duration::from_secs(5);
    }
    c
}

/// Largest datagram we send or accept, envelope included (fits a 1500-byte
/// Ethernet MTU with IP and UDP headers).
pub const MAX_DATAGRAM: usize = 1400;
/// Envelope: magic "KR", protocol version, message kind.
pub const ENVELOPE_LEN: usize = 4;
const MAGIC: [u8; 2] = *b"KR";
/// Bumped whenever the membership wire format changes incompatibly.
pub const PROTOCOL_VERSION: u8 = 1;

/// What a datagram carries after the envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A foca (SWIM) message.
    Swim = 0,
    /// "I am leaving": peers drop the sender from their member list at once.
    Leave = 1,
}

/// Prepends the envelope to `payload`.
pub fn seal(kind: Kind, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(&MAGIC);
    out.push(PROTOCOL_VERSION);
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

/// Checks the envelope; None for anything that is not ours.
pub fn open(datagram: &[u8]) -> Option<(Kind, &[u8])> {
    if datagram.len() < ENVELOPE_LEN || datagram.len() > MAX_DATAGRAM {
        return None;
    }
    if datagram[..2] != MAGIC || datagram[2] != PROTOCOL_VERSION {
        return None;
    }
    let kind = match datagram[3] {
        0 => Kind::Swim,
        1 => Kind::Leave,
        _ => return None,
    };
    Some((kind, &datagram[ENVELOPE_LEN..]))
}

/// Envelope of a datagram sealed with the cluster key: magic "KS",
/// protocol version, sealed format; authenticated, not encrypted. Format 1
/// added the receiver to the sealed header: a node still on format 0 fails
/// to authenticate these datagrams instead of misreading them.
const SEALED_ENVELOPE: [u8; ENVELOPE_LEN] = [b'K', b'S', PROTOCOL_VERSION, 1];
/// Inside the sealed part, before the message: stream, counter, send time,
/// receiver and kind (see [`SealedHeader`]).
const SEALED_HEADER_LEN: usize = 33;
/// Bytes a sealed datagram adds to the message it carries.
pub const SEALED_OVERHEAD: usize = ENVELOPE_LEN + DATAGRAM_NONCE_LEN + SEALED_HEADER_LEN + TAG_LEN;

/// What a sealed datagram says about itself, for anti-replay
/// ([`crate::crypto::ReplayGuard`]): the sender process's random stream
/// id, the datagram's number in that stream (from 1), when it was sent
/// (unix ms), and who it is for.
///
/// Replay windows are kept per receiver, so without `receiver` a datagram
/// captured on its way to one node could be replayed once to every other.
/// The receiver is named by its node id (random per process, never 0), not
/// by its address: the address a sender uses may not be one the receiver
/// knows as its own (a wildcard bind, NAT, a seed named by another
/// address). A sender knows the node id of every member; it does not for a
/// seed or a former member it announces itself to by address, and then
/// sends [`ANY_RECEIVER`]. Such a datagram is only ever an announce, which
/// any member may take: replayed elsewhere it makes that node learn of a
/// genuine member a little early (the sender still answers for itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealedHeader {
    pub stream: u64,
    pub counter: u64,
    pub sent_ms: u64,
    pub receiver: u64,
}

/// [`SealedHeader::receiver`] of a datagram sent to an address whose
/// node is not known yet.
pub const ANY_RECEIVER: u64 = 0;

impl SealedHeader {
    /// Whether the datagram is meant for the node `node_id`.
    pub fn is_for(&self, node_id: u64) -> bool {
        self.receiver == ANY_RECEIVER || self.receiver == node_id
    }
}

/// Why a datagram was refused by a node that has a cluster key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SealedError {
    #[error("not sealed with a cluster key of ours")]
    Auth(#[from] AuthError),
    #[error("sealed, but its content is malformed")]
    Malformed,
}

/// Seals `payload` of `kind` under the primary key into `out`.
pub fn seal_keyed(
    keyring: &Keyring,
    header: &SealedHeader,
    kind: Kind,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    let mut plain = Vec::with_capacity(SEALED_HEADER_LEN + payload.len());
    plain.extend_from_slice(&header.stream.to_le_bytes());
    plain.extend_from_slice(&header.counter.to_le_bytes());
    plain.extend_from_slice(&header.sent_ms.to_le_bytes());
    plain.extend_from_slice(&header.receiver.to_le_bytes());
    plain.push(kind as u8);
    plain.extend_from_slice(payload);
    out.clear();
    out.extend_from_slice(&SEALED_ENVELOPE);
    keyring.seal_datagram(&SEALED_ENVELOPE, &plain, out);
}

/// Authenticates and opens a sealed datagram: its header, kind and message.
/// Anything not sealed under one of our keys, plaintext datagrams
/// included, is an authentication failure.
pub fn open_keyed(
    keyring: &Keyring,
    datagram: &[u8],
) -> Result<(SealedHeader, Kind, Vec<u8>), SealedError> {
    if datagram.len() < SEALED_OVERHEAD || datagram.len() > MAX_DATAGRAM {
        return Err(AuthError.into());
    }
    let (aad, sealed) = datagram.split_at(ENVELOPE_LEN);
    if aad != SEALED_ENVELOPE {
        return Err(AuthError.into());
    }
    let mut plain = keyring.open_datagram(aad, sealed)?;
    let u64_at = |i: usize| {
        plain
            .get(i..i + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_le_bytes)
    };
    let (Some(stream), Some(counter), Some(sent_ms), Some(receiver)) =
        (u64_at(0), u64_at(8), u64_at(16), u64_at(24))
    else {
        return Err(SealedError::Malformed);
    };
    let kind = match plain.get(32) {
        Some(0) => Kind::Swim,
        Some(1) => Kind::Leave,
        _ => return Err(SealedError::Malformed),
    };
    plain.drain(..SEALED_HEADER_LEN);
    let header = SealedHeader {
        stream,
        counter,
        sent_ms,
        receiver,
    };
    Ok((header, kind, plain))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    Alive,
    Suspect,
    Down,
}

impl MemberState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alive => "alive",
            Self::Suspect => "suspect",
            Self::Down => "down",
        }
    }
}

/// One member as the rest of the node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub id: MemberId,
    pub state: MemberState,
    /// When we last received a datagram from its peer address.
    pub last_heard: Option<Instant>,
    pub is_self: bool,
}

/// Counters for INFO `membership`.
#[derive(Debug, Default)]
pub struct MembershipStats {
    /// Every datagram dropped, for whatever reason.
    pub bad_packets: AtomicU64,
    /// Of those, the ones not sealed with one of our cluster keys.
    pub auth_failures: AtomicU64,
    /// Of those, authentic ones seen before, sent too long ago, or sealed
    /// for another receiver.
    pub replayed_packets: AtomicU64,
}

/// How the node reads membership: a snapshot that the driver republishes on
/// every change.
#[derive(Clone)]
pub struct MembershipHandle {
    pub me: MemberId,
    members: watch::Receiver<Arc<Vec<MemberView>>>,
    pub stats: Arc<MembershipStats>,
}

impl MembershipHandle {
    /// INFO membership.
    pub fn info(&self, w: &mut crate::info::InfoWriter<'_>) {
        w.field("members", self.members().len());
        w.field("members_alive", self.count(MemberState::Alive));
        w.field("members_suspect", self.count(MemberState::Suspect));
        w.field("members_down", self.count(MemberState::Down));
        w.field("bad_packets", self.bad_packets());
        w.field("auth_failures", self.auth_failures());
        w.field("replayed_packets", self.replayed_packets());
        w.field("peer_addr", self.me.peer);
        // The driver renews our identity if peers ever declared us down.
        let me = self
            .members()
            .iter()
            .find(|v| v.is_self)
            .map(|v| v.id.incarnation);
        w.field("incarnation", me.unwrap_or(self.me.incarnation));
    }

    /// Every known member, this node first.
    pub fn members(&self) -> Arc<Vec<MemberView>> {
        self.members.borrow().clone()
    }

    /// Waits for the next change of the member list.
    pub async fn changed(&mut self) -> bool {
        self.members.changed().await.is_ok()
    }

    pub fn bad_packets(&self) -> u64 {
        self.stats.bad_packets.load(Ordering::Relaxed)
    }

    pub fn auth_failures(&self) -> u64 {
        self.stats.auth_failures.load(Ordering::Relaxed)
    }

    pub fn replayed_packets(&self) -> u64 {
        self.stats.replayed_packets.load(Ordering::Relaxed)
    }

    /// Members in `state`, this node included when alive.
    pub fn count(&self, state: MemberState) -> usize {
        self.members
            .borrow()
            .iter()
            .filter(|m| m.state == state)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    fn id(incarnation: u64, node_id: u64) -> MemberId {
        MemberId {
            node_id,
            incarnation,
            name: "n".into(),
            peer: "127.0.0.1:4000".parse().unwrap(),
            client: "127.0.0.1:3000".parse().unwrap(),
        }
    }

    #[test]
    fn a_restarted_node_wins_over_its_previous_life() {
        let old = id(1_000, 7);
        let new = id(2_000, 3);
        assert!(new.win_addr_conflict(&old));
        assert!(!old.win_addr_conflict(&new));
        let renewed = old.renew().unwrap();
        assert!(renewed.win_addr_conflict(&old));
    }

    #[test]
    fn envelope_round_trips_and_rejects_strangers() {
        let mut buf = Vec::new();
        seal(Kind::Swim, b"payload", &mut buf);
        assert_eq!(open(&buf), Some((Kind::Swim, &b"payload"[..])));
        assert_eq!(open(b"KR"), None);
        assert_eq!(open(b"XX\x01\x00abc"), None);
        assert_eq!(open(b"KR\x09\x00abc"), None, "other protocol versions");
        assert_eq!(open(b"KR\x01\x07abc"), None, "unknown kinds");
        assert_eq!(open(&vec![0u8; MAX_DATAGRAM + 1]), None);
    }

    #[test]
    fn sealed_datagrams_round_trip_and_reject_strangers() {
        let key = Keyring::new(b"0123456789abcdef", None).unwrap();
        let other = Keyring::new(b"fedcba9876543210", None).unwrap();
        let header = SealedHeader {
            stream: 5,
            counter: 9,
            sent_ms: 77,
            receiver: 3,
        };
        let mut buf = Vec::new();
        seal_keyed(&key, &header, Kind::Leave, b"payload", &mut buf);
        assert_eq!(buf.len(), SEALED_OVERHEAD + 7);
        assert_eq!(
            open_keyed(&key, &buf),
            Ok((header, Kind::Leave, b"payload".to_vec()))
        );
        assert!(header.is_for(3));
        assert!(!header.is_for(4), "sealed for another receiver");
        let anyone = SealedHeader {
            receiver: ANY_RECEIVER,
            ..header
        };
        assert!(anyone.is_for(4));
        assert_eq!(open_keyed(&other, &buf), Err(AuthError.into()));
        let mut plain = Vec::new();
        seal(Kind::Swim, b"payload", &mut plain);
        assert_eq!(open_keyed(&key, &plain), Err(AuthError.into()));
        assert_eq!(open(&buf), None, "an unkeyed node drops sealed datagrams");
        for i in 0..ENVELOPE_LEN {
            let mut changed = buf.clone();
            changed[i] ^= 0x20;
            assert_eq!(open_keyed(&key, &changed), Err(AuthError.into()));
        }
        assert_eq!(
            open_keyed(&key, &buf[..buf.len() - 1]),
            Err(AuthError.into())
        );
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_open(bytes in proptest::collection::vec(any::<u8>(), 0..1500)) {
                let key = Keyring::new(b"0123456789abcdef", None).unwrap();
                prop_assert!(open_keyed(&key, &bytes).is_err());
                let mut sealed = SEALED_ENVELOPE.to_vec();
                sealed.extend_from_slice(&bytes);
                prop_assert!(open_keyed(&key, &sealed).is_err());
            }
        }
    }

    #[test]
    fn protocol_config_scales_with_cluster_size() {
        let config = Config::default();
        let small = protocol_config(&config, 5);
        let large = protocol_config(&config, 1000);
        assert_eq!(small.suspect_to_down_after, config.suspect_timeout);
        assert!(large.suspect_to_down_after > small.suspect_to_down_after);
        assert!(large.max_transmissions > small.max_transmissions);
        assert_eq!(small.remove_down_after, Some(Duration::from_secs(20)));
        let keyed = Config {
            cluster_key: Some("0123456789abcdef".into()),
            ..Config::default()
        };
        assert_eq!(
            protocol_config(&keyed, 5).max_packet_size.get() + SEALED_OVERHEAD,
            MAX_DATAGRAM,
            "sealed datagrams still fit"
        );
    }
}
