//! The peer-link targets: frames split by the production codec, decoded
//! as the link tasks decode them and handed to the very sessions a node's
//! links run (`replication::session`), never a copy of them.

use bytes::BytesMut;
use tokio_util::codec::Decoder as _;

use parking_lot::Mutex;

use crate::clock::Clock;
use crate::config::Config;
use crate::replication::ReplicationStats;
use crate::replication::framing::{FrameDecoder, READ_AHEAD_MIN};
use crate::replication::session::{Bookkeeping, Initiator, Local, Now, Outcome, Responder};
use crate::replication::wire::{self, Inbound, Message, UpdatesRef, WireEntry, WireError};
use crate::store::{Expiry, Store};

/// The frame limit of a node with default flags (as `Replication`
/// derives it: the largest value plus room for the rest of the frame).
pub fn default_frame_limit() -> usize {
    usize::try_from(Config::default().proto_max_bulk_len)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20)
}

/// Splits a peer link's byte stream into frames with the production codec.
/// Returns the frames' payloads and the codec error that would close the
/// link (as text), if any. Panics if splitting reserves memory the peer
/// has not sent yet beyond the codec's read size and its bounded
/// read-ahead (at most as much again as has arrived, at least
/// `READ_AHEAD_MIN`).
pub fn peer_frames(input: &[u8], max_frame: usize) -> (Vec<BytesMut>, Option<String>) {
    let mut codec = FrameDecoder::new(max_frame);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    // Bytes arrive in reads of up to this size (tokio's FramedRead reads
    // into at least 8 KiB of spare capacity).
    const READ: usize = 8 * 1024;
    for chunk in input.chunks(READ) {
        buf.extend_from_slice(chunk);
        loop {
            let frame = codec.decode(&mut buf);
            assert!(
                buf.capacity() <= 2 * READ + 2 * input.len() + READ_AHEAD_MIN,
                "the codec reserved {} bytes for {} received",
                buf.capacity(),
                input.len()
            );
            match frame {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}

/// Splits a peer link's byte stream into frames (see [`peer_frames`]) and
/// decodes each as a message with the owned decoder the link task uses.
/// Returns the messages and the error that would close the link (as text),
/// if any.
pub fn peer_decode(input: &[u8], max_frame: usize) -> (Vec<Message>, Option<String>) {
    let (frames, error) = peer_frames(input, max_frame);
    let mut messages = Vec::new();
    for frame in frames {
        match wire::decode(&frame) {
            Ok(message) => messages.push(message),
            Err(e) => return (messages, Some(e.to_string())),
        }
    }
    (messages, error)
}

/// Decodes one frame's payload (what follows the length prefix).
pub fn peer_frame(payload: &[u8]) -> Result<Message, WireError> {
    wire::decode(payload)
}

/// Decodes one frame's payload as the inbound task does (Updates borrowed
/// from it), and panics unless the owned decoder, which defines the
/// format, accepts the same frame and reads the same message from it.
pub fn peer_frame_inbound(payload: &[u8]) -> Result<Inbound<'_>, WireError> {
    let inbound = wire::decode_inbound(payload);
    match (&inbound, wire::decode(payload)) {
        (Ok(Inbound::Updates(updates)), Ok(owned)) => assert_eq!(updates.to_message(), owned),
        (Ok(Inbound::Other(other)), Ok(owned)) => {
            assert!(!matches!(other, Message::Updates { .. }), "{other:?}");
            assert_eq!(*other, owned);
        }
        (Err(_), Err(_)) => {}
        (inbound, owned) => panic!("the decoders disagree: {inbound:?}, owned {owned:?}"),
    }
    inbound
}

/// The peer at the fuzzer's end of the links (its Hello opens them).
const PEER: u64 = 7;
/// This node's id.
const ME: u64 = 1;

/// One node's two ends of its links with a peer, as the link tasks hold
/// them: the responder of an inbound link (after the peer's Hello) and
/// the initiator of an outbound link, in the reconciliation it started
/// (session 1). Both share the node's store and bookkeeping.
pub struct PeerHarness {
    store: Store,
    bookkeeping: Mutex<Bookkeeping>,
    stats: ReplicationStats,
    responder: Responder,
    initiator: Initiator,
}

impl Default for PeerHarness {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerHarness {
    pub fn new() -> Self {
        let store = Store::new(Clock::system(ME));
        // A node past its initial pull: an empty one would answer every
        // reconciliation SyncBusy, and the fuzzer would reach no further.
        store.with_key(b"held", store.clock().wall_ms(), |k| {
            k.set(b"before the peer", Expiry::Persist)
        });
        let now = Now::read(store.clock());
        let bookkeeping = Mutex::new(Bookkeeping::new(&Config::default(), now.instant));
        let stats = ReplicationStats::default();
        let local = Local {
            store: &store,
            bookkeeping: &bookkeeping,
            stats: &stats,
        };
        let responder = Self::inbound_link(local, hello());
        let initiator = Self::outbound_link(local, now);
        Self {
            store,
            bookkeeping,
            stats,
            responder,
            initiator,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A frame the inbound task decoded: Updates straight from the frame,
    /// as that task applies them, anything else as [`Self::apply`] does.
    /// Returns the replies the sessions computed.
    pub fn apply_inbound(&mut self, inbound: Inbound<'_>) -> Vec<Message> {
        match inbound {
            Inbound::Updates(updates) => {
                let now_ms = self.store.clock().wall_ms();
                let local = Local {
                    store: &self.store,
                    bookkeeping: &self.bookkeeping,
                    stats: &self.stats,
                };
                vec![self.responder.updates(local, updates, now_ms)]
            }
            Inbound::Other(message) => self.apply(message),
        }
    }

    /// Hands `message` to the session that receives it on a link: the
    /// responder for what initiators send (a Hello opens a new inbound
    /// link), the initiator for what responders send, both for SyncEntries
    /// (either side sends them). Returns the replies the sessions computed.
    /// When the initiator's reconciliation ends, or a link would close, a
    /// new connection takes its place, so later input still meets one.
    pub fn apply(&mut self, message: Message) -> Vec<Message> {
        let Self {
            store,
            bookkeeping,
            stats,
            responder,
            initiator,
        } = self;
        let local = Local {
            store,
            bookkeeping,
            stats,
        };
        let now = Now::read(store.clock());
        match message {
            Message::Hello { .. } => {
                *responder = Self::inbound_link(local, message);
                Vec::new()
            }
            Message::Updates {
                entries,
                truncates,
                last_seq,
            } => {
                let updates = UpdatesRef {
                    entries: entries.iter().map(WireEntry::borrowed).collect(),
                    truncates,
                    last_seq,
                };
                vec![responder.updates(local, updates, now.unix_ms)]
            }
            Message::SyncRoot { .. } | Message::SyncLeaves { .. } | Message::SyncWant { .. } => {
                to_responder(local, responder, message, now)
            }
            Message::SyncEntries { .. } => {
                let mut replies = to_responder(local, responder, message.clone(), now);
                replies.extend(to_initiator(local, initiator, message, now));
                replies
            }
            Message::Ack { .. }
            | Message::SyncEqual { .. }
            | Message::SyncBusy { .. }
            | Message::SyncInner { .. }
            | Message::SyncSummary { .. }
            | Message::SyncDone { .. } => to_initiator(local, initiator, message, now),
        }
    }

    /// A new inbound link, opened by the peer's `hello`.
    fn inbound_link(local: Local<'_>, hello: Message) -> Responder {
        Responder::accept(local, hello).expect("a Hello opens a link")
    }

    /// A new outbound connection, its first reconciliation under way.
    fn outbound_link(local: Local<'_>, now: Now) -> Initiator {
        let mut initiator = Initiator::connected(ME, PEER, false, now.instant);
        let _ = initiator.poll(local, now);
        initiator
    }
}

fn hello() -> Message {
    Message::Hello {
        node_id: PEER,
        incarnation: 1,
        hlc: 0,
    }
}

fn to_responder(
    local: Local<'_>,
    responder: &mut Responder,
    message: Message,
    now: Now,
) -> Vec<Message> {
    responder.handle(local, message, now).unwrap_or_else(|_| {
        // The link closes; the peer opens another.
        *responder = PeerHarness::inbound_link(local, hello());
        Vec::new()
    })
}

fn to_initiator(
    local: Local<'_>,
    initiator: &mut Initiator,
    message: Message,
    now: Now,
) -> Vec<Message> {
    let (replies, ended) = match initiator.handle(local, message, now) {
        Ok(step) => (step.send, step.outcome != Outcome::Continue),
        Err(_) => (Vec::new(), true),
    };
    if ended {
        let old = std::mem::replace(initiator, PeerHarness::outbound_link(local, now));
        old.close(local);
    }
    replies
}

/// Hands a frame the inbound task decoded to the harness's sessions (see
/// [`PeerHarness::apply_inbound`]); their replies are dropped.
pub fn peer_apply_inbound(harness: &mut PeerHarness, inbound: Inbound<'_>) {
    let _replies = harness.apply_inbound(inbound);
}

/// Hands `message` to the harness's sessions as a node's links would (see
/// [`PeerHarness::apply`]); their replies are dropped.
pub fn peer_apply(harness: &mut PeerHarness, message: Message) {
    let _replies = harness.apply(message);
}

/// The peer-frames target: the input is a peer link's byte stream; every
/// frame up to the first that fails to decode (which closes the link) is
/// decoded as the inbound task does and handed to a node's sessions (see
/// [`peer_apply`]), and a local write follows (the clock must still move
/// forward).
pub fn peer_target(data: &[u8]) {
    let (frames, _) = peer_frames(data, default_frame_limit());
    let mut harness = PeerHarness::new();
    for frame in &frames {
        let Ok(inbound) = peer_frame_inbound(frame) else {
            break;
        };
        peer_apply_inbound(&mut harness, inbound);
    }
    let store = harness.store();
    let before = store.clock().hlc().current();
    let after = store.next_version();
    assert!(
        after.hlc > before || before == u64::MAX,
        "the clock did not move forward after a peer's input"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Version;
    use crate::fuzzing::seed_corpus;
    use crate::store::{Cause, Change, ChangeKind};

    /// Found by the peer_frames target: a 4-byte frame head declaring
    /// 172 MB made tokio-util's codec reserve all of it before a byte of
    /// the frame arrived (up to the 513 MB frame limit per link).
    #[test]
    fn a_frame_head_alone_reserves_nothing() {
        let input = include_bytes!("../../fuzz/regressions/peer_frames/reserve-ahead-4-byte-head");
        // peer_decode asserts the buffer stays within what was received.
        let (messages, error) = peer_decode(input, default_frame_limit());
        assert!(messages.is_empty());
        assert_eq!(error, None, "a frame still on its way is no error");
        let (_, error) = peer_decode(&u32::MAX.to_be_bytes(), default_frame_limit());
        assert_eq!(error.as_deref(), Some("frame size too big"));
    }

    /// A peer's Hello (or entry, or FLUSHALL marker) with its HLC at
    /// u64::MAX made the next local write overflow the clock: a panic
    /// with overflow checks, and without them a clock wrapped back to wall
    /// time, issuing versions older than ones already handed out.
    #[test]
    fn a_peer_version_at_the_end_of_time_does_not_wrap_the_clock() {
        let input = include_bytes!("../../fuzz/regressions/peer_frames/hello-hlc-max");
        let (messages, error) = peer_decode(input, default_frame_limit());
        assert_eq!(error, None);
        let [Message::Hello { hlc: u64::MAX, .. }] = &messages[..] else {
            panic!("{messages:?}");
        };
        peer_target(input);
        let store = Store::new(Clock::system(1));
        store.clock().hlc().observe(Version {
            hlc: u64::MAX,
            node_id: 9,
        });
        assert_eq!(store.next_version().hlc, u64::MAX);
    }

    /// The committed Updates seed was written by `wire::encode` before the
    /// push path encoded from the store's changes: that encoder must still
    /// produce it byte for byte (nodes of earlier builds read these frames).
    #[test]
    fn the_push_path_encodes_the_committed_updates_seed_byte_for_byte() {
        let seed = include_bytes!("../../fuzz/seeds/peer_frames/seed-updates");
        let payload = &seed[4..];
        assert_eq!(seed[..4], (payload.len() as u32).to_be_bytes());
        let Ok(Message::Updates {
            entries,
            truncates,
            last_seq,
        }) = wire::decode(payload)
        else {
            panic!("{:?}", wire::decode(payload));
        };
        assert!(entries.iter().any(|e| e.value.is_none()) && !truncates.is_empty());
        let changes: Vec<Change> = entries
            .iter()
            .map(|e| ChangeKind::Entry {
                key: e.key.as_slice().into(),
                value: e.value.as_deref().map(|v| v[..].into()),
                expires_at: e.expires_at,
                version: e.version,
                typed: e.typed.as_deref().map(|v| v[..].into()),
            })
            .chain(
                truncates
                    .iter()
                    .map(|&version| ChangeKind::Truncate { version }),
            )
            .map(|kind| Change::new(Cause::Local, kind))
            .collect();
        let changes: Vec<&Change> = changes.iter().collect();
        assert_eq!(wire::encode_updates(&changes, last_seq).unwrap(), payload);
        let Ok(Inbound::Updates(updates)) = peer_frame_inbound(payload) else {
            panic!("{:?}", peer_frame_inbound(payload));
        };
        assert_eq!(updates.entries.len(), entries.len());
    }

    /// The harness runs the node's own sessions: a reconciliation the
    /// fuzzer plays the other side of goes as deep as a real one.
    #[test]
    fn the_harness_answers_as_the_sessions_of_a_node_do() {
        let mut harness = PeerHarness::new();
        let root = Message::SyncRoot {
            session: 3,
            root: 0x1234,
            truncated: Version::default(),
        };
        let [Message::SyncInner { session: 3, .. }] = &harness.apply(root)[..] else {
            panic!("a differing root is answered with the inner hashes");
        };
        // The initiator is in session 1: a summary of a leaf holding what
        // we lack is answered with what we want.
        let key = b"theirs".to_vec();
        let leaf = crate::store::digest::bucket_of(&key) as u16;
        let summary = Message::SyncSummary {
            session: 1,
            leaves: vec![leaf],
            keys: vec![wire::KeyVersion {
                key: key.clone(),
                version: harness.store().next_version(),
                live: true,
                content: 0,
                buckets: Vec::new(),
            }],
            last: true,
        };
        let replies = harness.apply(summary);
        let wanted = replies.iter().find_map(|m| match m {
            Message::SyncWant {
                keys, last: true, ..
            } => Some(keys.clone()),
            _ => None,
        });
        let whole = wire::Want {
            key: serde_bytes::ByteBuf::from(key),
            buckets: 0,
            which: Vec::new(),
        };
        assert_eq!(wanted, Some(vec![whole]));
        let done = harness.apply(Message::SyncDone { session: 1 });
        assert!(done.is_empty());
        assert_eq!(
            harness
                .stats
                .syncs_completed
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        // A pushed batch is applied from the frame and acknowledged.
        let frame = wire::encode(Message::Updates {
            entries: vec![],
            truncates: vec![],
            last_seq: 9,
        })
        .unwrap();
        let inbound = peer_frame_inbound(&frame).unwrap();
        assert_eq!(
            harness.apply_inbound(inbound),
            [Message::Ack { last_seq: 9 }]
        );
    }

    #[test]
    fn frames_arriving_byte_by_byte_decode_whole() {
        let (_, _, link) = seed_corpus()
            .into_iter()
            .find(|(t, n, _)| *t == "peer_frames" && n == "link")
            .unwrap();
        let (expected, _) = peer_decode(&link, default_frame_limit());
        let mut decoder = FrameDecoder::new(default_frame_limit());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in &link {
            buf.extend_from_slice(&[byte]);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                got.push(wire::decode(&frame).unwrap());
            }
            assert!(buf.capacity() < 4096, "reserved {}", buf.capacity());
        }
        assert!(buf.is_empty());
        assert_eq!(got, expected);
        assert_eq!(got.len(), 14);
    }
}
