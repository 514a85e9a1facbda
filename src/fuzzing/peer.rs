//! The peer-link targets: frames split by the production codec, decoded
//! as the link tasks decode them and applied as a node applies them.

use bytes::BytesMut;
use tokio_util::codec::Decoder as _;

use crate::clock::{Clock, Version};
use crate::config::Config;
use crate::replication::framing::{FrameDecoder, READ_AHEAD_MIN};
use crate::replication::sync;
use crate::replication::wire::{self, Inbound, Message, WireError};
use crate::store::Store;

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

/// Applies a frame the inbound task decoded: Updates straight from the
/// frame, as that task does, anything else as [`peer_apply`] does.
pub fn peer_apply_inbound(store: &Store, inbound: Inbound<'_>) {
    match inbound {
        Inbound::Updates(updates) => {
            sync::apply_updates(store, updates);
        }
        Inbound::Other(message) => peer_apply(store, message),
    }
}

/// Applies `message` to `store` as the node does when it arrives on a link:
/// the inbound side for what initiators send, the link side for what
/// responders send. Replies are computed and dropped.
pub fn peer_apply(store: &Store, message: Message) {
    match message {
        Message::Hello { node_id, hlc, .. } => {
            store.clock().hlc().observe(Version { hlc, node_id })
        }
        Message::Updates {
            entries, truncates, ..
        } => {
            for marker in truncates {
                store.truncate(marker);
            }
            sync::apply(store, entries.iter().map(wire::WireEntry::borrowed));
        }
        Message::SyncRoot { truncated, .. } => {
            store.truncate(truncated);
            let _ = store.digest_tree().root() == 0;
            let _ = sync::inner_hashes(store);
        }
        Message::SyncLeaves { groups, .. } => {
            let (empty_there, summarize) = sync::differing_leaves(store, &groups);
            let _ = sync::entries_in(store, &empty_there, 0);
            let _ = sync::summary_of(store, &summarize);
        }
        Message::SyncEntries { entries, .. } => {
            let _ = sync::apply_and_rebut(store, &entries);
        }
        Message::SyncWant { keys, .. } => {
            let _ = sync::entries_for(store, &keys);
        }
        Message::SyncInner {
            truncated, inner, ..
        } => {
            store.truncate(truncated);
            for group in sync::differing_groups(store, &inner) {
                let _ = sync::leaf_hashes(store, usize::from(group));
            }
        }
        Message::SyncSummary { leaves, keys, .. } => {
            let theirs = keys
                .into_iter()
                .map(|kv| (kv.key, (kv.version, kv.live)))
                .collect();
            let _ = sync::plan(store, &leaves, &theirs, 0);
        }
        Message::Ack { .. }
        | Message::SyncEqual { .. }
        | Message::SyncBusy { .. }
        | Message::SyncDone { .. } => {}
    }
}

/// The peer-frames target: the input is a peer link's byte stream; every
/// frame up to the first that fails to decode (which closes the link) is
/// decoded as the inbound task does and applied to a fresh store, and a
/// local write follows (the clock must still move forward).
pub fn peer_target(data: &[u8]) {
    let (frames, _) = peer_frames(data, default_frame_limit());
    let store = Store::new(Clock::system(1));
    for frame in &frames {
        let Ok(inbound) = peer_frame_inbound(frame) else {
            break;
        };
        peer_apply_inbound(&store, inbound);
    }
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
        assert_eq!(got.len(), 13);
    }
}
