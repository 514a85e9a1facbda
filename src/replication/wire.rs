//! The peer data protocol: length-delimited frames on a TCP link, each a
//! postcard-encoded [`Frame`] that names the protocol version.
//!
//! Decoding never trusts the peer: the frame length is checked by the codec
//! before any allocation, and a frame that fails to decode or has another
//! version closes the link (the caller counts it).
//!
//! The push path, most of the traffic, skips the owned [`Message`]: its
//! Updates frames are encoded straight from the store's changes
//! ([`encode_updates`]) and decoded with keys and values borrowed from the
//! frame ([`decode_inbound`]), in exactly the bytes of `Message::Updates`.

use serde::ser::{SerializeSeq, SerializeStruct, SerializeStructVariant};
use serde::{Deserialize, Serialize, Serializer};

use crate::clock::Version;
use crate::store::{Change, ChangeKind};

/// Bumped whenever a message changes incompatibly.
pub const PROTOCOL_VERSION: u16 = 3;
/// Entries per frame on the push path and in sync streams: bounds both the
/// memory of one frame and the time a peer spends applying it.
pub const CHUNK_ENTRIES: usize = 1024;

/// One key's state as peers exchange it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// None for a delete (tombstone).
    pub value: Option<serde_bytes::ByteBuf>,
    pub expires_at: u64,
    pub version: Version,
    /// For a typed key (counter, hash, set): a fragment of its value
    /// (`store::value::Fragment`, encoded), `value` None and `version` the
    /// fragment's newest. Decoded and checked by the store before it is
    /// applied.
    pub typed: Option<serde_bytes::ByteBuf>,
}

/// [`WireEntry`] borrowing its key and value: the same bytes on the wire,
/// without copying them into vectors of their own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntryRef<'a> {
    #[serde(borrow, with = "serde_bytes")]
    pub key: &'a [u8],
    /// None for a delete (tombstone).
    #[serde(borrow, with = "serde_bytes")]
    pub value: Option<&'a [u8]>,
    pub expires_at: u64,
    pub version: Version,
    /// See [`WireEntry::typed`].
    #[serde(borrow, with = "serde_bytes")]
    pub typed: Option<&'a [u8]>,
}

/// A key and the version a node holds of it (sync summaries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub version: Version,
    /// False for a tombstone.
    pub live: bool,
    /// A typed value's content digest (0 for a plain entry): two typed
    /// replicas whose digests differ exchange their values whatever their
    /// newest versions.
    pub content: u64,
    /// A large typed value's element bucket digests
    /// (`store::value::buckets`), empty otherwise: the other side then
    /// sends and asks for only the buckets that differ.
    pub buckets: Vec<u64>,
}

/// A key the initiator asks for: whole, or only some of its element
/// buckets (`buckets` of them, the indices in `which`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Want {
    pub key: serde_bytes::ByteBuf,
    /// 0: the whole entry.
    pub buckets: u32,
    pub which: Vec<u16>,
}

/// Postcard encodes an enum variant as its index: [`Message::Updates`]'s,
/// which [`encode_updates`] writes by hand (a test holds them equal).
const UPDATES_INDEX: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// First frame of a link: who is connecting.
    Hello {
        node_id: u64,
        incarnation: u64,
        hlc: u64,
    },
    /// Push path: local writes in sequence order, and FLUSHALL markers.
    Updates {
        entries: Vec<WireEntry>,
        truncates: Vec<Version>,
        last_seq: u64,
    },
    /// The receiver applied every update up to `last_seq`.
    Ack { last_seq: u64 },
    /// Anti-entropy, initiator → responder: our root hash and FLUSHALL.
    SyncRoot {
        session: u64,
        root: u64,
        truncated: Version,
    },
    /// Responder: nothing differs.
    SyncEqual { session: u64 },
    /// Responder: it is still pulling its initial copy; ask again later.
    SyncBusy { session: u64 },
    /// Responder: its inner hashes (and FLUSHALL marker) since roots differ.
    SyncInner {
        session: u64,
        truncated: Version,
        inner: Vec<u64>,
    },
    /// Initiator: its leaf hashes for the inner nodes that differ.
    SyncLeaves {
        session: u64,
        groups: Vec<(u16, Vec<u64>)>,
    },
    /// Responder: what it holds in the differing leaves, as key versions
    /// (and, for leaves the initiator has empty, whole entries via
    /// `SyncEntries`); `last` ends the stream.
    SyncSummary {
        session: u64,
        /// The leaves that differ (sent with the last chunk).
        leaves: Vec<u16>,
        keys: Vec<KeyVersion>,
        last: bool,
    },
    /// Either side: entries the other lacks or holds older.
    SyncEntries {
        session: u64,
        entries: Vec<WireEntry>,
        last: bool,
    },
    /// Initiator: keys it wants the responder's entries for; `last` ends it.
    SyncWant {
        session: u64,
        keys: Vec<Want>,
        last: bool,
    },
    /// Responder: it has sent everything the initiator wanted.
    SyncDone { session: u64 },
}

/// The fields of [`Message::Updates`], with every entry's key and value
/// borrowed from the frame they arrived in.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct UpdatesRef<'a> {
    #[serde(borrow)]
    pub entries: Vec<WireEntryRef<'a>>,
    pub truncates: Vec<Version>,
    pub last_seq: u64,
}

/// A frame as the inbound side reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inbound<'a> {
    /// The push path, most of the traffic: applied straight from the frame.
    Updates(UpdatesRef<'a>),
    /// Anything else (never `Message::Updates`).
    Other(Message),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub version: u16,
    pub message: Message,
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("undecodable frame: {0}")]
    Decode(#[from] postcard::Error),
    #[error("peer speaks protocol version {0}, we speak {PROTOCOL_VERSION}")]
    Version(u16),
}

pub fn encode(message: Message) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(&Frame {
        version: PROTOCOL_VERSION,
        message,
    })
}

pub fn decode(bytes: &[u8]) -> Result<Message, WireError> {
    let frame: Frame = postcard::from_bytes(bytes)?;
    if frame.version != PROTOCOL_VERSION {
        return Err(WireError::Version(frame.version));
    }
    Ok(frame.message)
}

/// The Updates frame for `changes` (a chunk of the push path), encoded
/// straight from them: the same bytes as [`encode`] of
/// `Message::Updates { entries, truncates, last_seq }` built from them,
/// without copying every key and value into a [`WireEntry`] first.
pub fn encode_updates(changes: &[&Change], last_seq: u64) -> Result<Vec<u8>, postcard::Error> {
    let frame = UpdatesFrame { changes, last_seq };
    // Sized first: one allocation, instead of a vector that doubles (and
    // copies itself) ~log2(frame size) times while it is written.
    let size = postcard::serialize_with_flavor(&frame, postcard::ser_flavors::Size::default())?;
    let out = Vec::with_capacity(size);
    postcard::to_extend(&frame, out)
}

/// Decodes a frame as [`decode`] does, except that an Updates frame's keys
/// and values stay in `bytes` rather than being copied out entry by entry.
/// Accepts and refuses exactly the frames [`decode`] does.
pub fn decode_inbound(bytes: &[u8]) -> Result<Inbound<'_>, WireError> {
    // A Frame is its version, then the message's variant index, then the
    // message's fields, in that order; anything that does not start as an
    // Updates frame goes to the owned decoder (which refuses it if it must).
    match postcard::take_from_bytes::<(u16, u32)>(bytes) {
        Ok(((version, UPDATES_INDEX), fields)) => {
            let updates: UpdatesRef<'_> = postcard::from_bytes(fields)?;
            if version != PROTOCOL_VERSION {
                return Err(WireError::Version(version));
            }
            Ok(Inbound::Updates(updates))
        }
        _ => decode(bytes).map(Inbound::Other),
    }
}

impl UpdatesRef<'_> {
    /// The same message, owned (tests and the fuzz harness compare the two
    /// decoders with it).
    pub fn to_message(&self) -> Message {
        Message::Updates {
            entries: self.entries.iter().map(WireEntryRef::to_entry).collect(),
            truncates: self.truncates.clone(),
            last_seq: self.last_seq,
        }
    }
}

impl WireEntry {
    pub fn borrowed(&self) -> WireEntryRef<'_> {
        WireEntryRef {
            key: &self.key,
            value: self.value.as_deref().map(|v| &v[..]),
            expires_at: self.expires_at,
            version: self.version,
            typed: self.typed.as_deref().map(|v| &v[..]),
        }
    }
}

impl<'a> WireEntryRef<'a> {
    pub fn to_entry(&self) -> WireEntry {
        WireEntry {
            key: self.key.to_vec(),
            value: self.value.map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
            expires_at: self.expires_at,
            version: self.version,
            typed: self.typed.map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
        }
    }

    /// The entry a change sends; None for a FLUSHALL marker.
    pub fn from_change(change: &'a Change) -> Option<Self> {
        match &change.kind {
            ChangeKind::Entry {
                key,
                value,
                expires_at,
                version,
                typed,
            } => Some(Self {
                key,
                value: value.as_deref(),
                expires_at: *expires_at,
                version: *version,
                typed: typed.as_deref(),
            }),
            ChangeKind::Truncate { .. } | ChangeKind::Discard => None,
        }
    }
}

/// Serializes as `Frame { version, message: Message::Updates { .. } }`
/// does, field for field.
struct UpdatesFrame<'a> {
    changes: &'a [&'a Change],
    last_seq: u64,
}

impl Serialize for UpdatesFrame<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut frame = serializer.serialize_struct("Frame", 2)?;
        frame.serialize_field("version", &PROTOCOL_VERSION)?;
        frame.serialize_field("message", &UpdatesMessage(self))?;
        frame.end()
    }
}

struct UpdatesMessage<'a>(&'a UpdatesFrame<'a>);

impl Serialize for UpdatesMessage<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let UpdatesFrame { changes, last_seq } = *self.0;
        let mut message =
            serializer.serialize_struct_variant("Message", UPDATES_INDEX, "Updates", 3)?;
        message.serialize_field("entries", &Entries(changes))?;
        message.serialize_field("truncates", &Truncates(changes))?;
        message.serialize_field("last_seq", &last_seq)?;
        message.end()
    }
}

/// The entries among changes, as a sequence of [`WireEntry`].
struct Entries<'a>(&'a [&'a Change]);

impl Serialize for Entries<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entries = || self.0.iter().filter_map(|c| WireEntryRef::from_change(c));
        let mut seq = serializer.serialize_seq(Some(entries().count()))?;
        for entry in entries() {
            seq.serialize_element(&entry)?;
        }
        seq.end()
    }
}

/// The FLUSHALL markers among changes, as a sequence of versions.
struct Truncates<'a>(&'a [&'a Change]);

impl Serialize for Truncates<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let versions = || {
            self.0.iter().filter_map(|c| match &c.kind {
                ChangeKind::Truncate { version } => Some(version),
                ChangeKind::Entry { .. } | ChangeKind::Discard => None,
            })
        };
        let mut seq = serializer.serialize_seq(Some(versions().count()))?;
        for version in versions() {
            seq.serialize_element(version)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let message = Message::Updates {
            entries: vec![WireEntry {
                key: b"k".to_vec(),
                value: Some(serde_bytes::ByteBuf::from(b"v".to_vec())),
                expires_at: 5,
                version: Version { hlc: 9, node_id: 2 },
                typed: None,
            }],
            truncates: vec![],
            last_seq: 3,
        };
        let bytes = encode(message.clone()).unwrap();
        assert_eq!(decode(&bytes).unwrap(), message);
    }

    fn changes() -> Vec<Change> {
        let version = |hlc| Version { hlc, node_id: 3 };
        let entry = |seq, key: &[u8], value: Option<&[u8]>, expires_at| {
            logged(
                seq,
                ChangeKind::Entry {
                    key: key.into(),
                    value: value.map(Into::into),
                    expires_at,
                    version: version(100 + seq),
                    typed: (key == b"typed").then(|| vec![1, 2, 3].into()),
                },
            )
        };
        let truncate = |seq, version| logged(seq, ChangeKind::Truncate { version });
        let big = vec![0xab; 300];
        vec![
            entry(1, b"k", Some(b"v"), crate::store::NO_EXPIRY),
            entry(2, b"gone", None, 0),
            entry(8, b"typed", None, 0),
            truncate(3, version(1 << 40)),
            entry(4, b"empty", Some(b""), 1_700_000_000_000),
            entry(5, b"", Some(&big), 7),
            truncate(6, version(u64::MAX)),
            entry(7, &big, None, u64::MAX),
        ]
    }

    fn logged(seq: u64, kind: ChangeKind) -> Change {
        let mut change = Change::new(crate::store::Cause::Local, kind);
        change.seq = seq;
        change
    }

    /// What the push path sent before `encode_updates`: the changes copied
    /// into a `Message::Updates`.
    fn updates_message(changes: &[&Change], last_seq: u64) -> Message {
        Message::Updates {
            entries: changes
                .iter()
                .filter_map(|c| WireEntryRef::from_change(c))
                .map(|e| e.to_entry())
                .collect(),
            truncates: changes
                .iter()
                .filter_map(|c| match c.kind {
                    ChangeKind::Truncate { version } => Some(version),
                    ChangeKind::Entry { .. } | ChangeKind::Discard => None,
                })
                .collect(),
            last_seq,
        }
    }

    /// Fuzz seeds and nodes of earlier builds read the push path's frames:
    /// they must not change by a byte.
    #[test]
    fn updates_encode_to_the_same_bytes_as_the_message() {
        let owned = changes();
        let all: Vec<&Change> = owned.iter().collect();
        let cases: [&[&Change]; 5] = [&all, &all[..1], &all[1..2], &all[2..3], &[]];
        for (i, changes) in cases.into_iter().enumerate() {
            let last_seq = changes.last().map_or(0, |c| c.seq);
            let expected = encode(updates_message(changes, last_seq)).unwrap();
            let got = encode_updates(changes, last_seq).unwrap();
            assert_eq!(got, expected, "case {i}");
            assert_eq!(got.capacity(), got.len(), "case {i}: sized exactly");
        }
    }

    #[test]
    fn updates_decode_borrowed_as_the_message_decodes_owned() {
        let owned = changes();
        let all: Vec<&Change> = owned.iter().collect();
        for changes in [&all[..], &all[..1], &[]] {
            let bytes = encode_updates(changes, 9).unwrap();
            let Ok(Inbound::Updates(updates)) = decode_inbound(&bytes) else {
                panic!("{:?}", decode_inbound(&bytes));
            };
            assert_eq!(updates.to_message(), decode(&bytes).unwrap());
            assert_eq!(updates.to_message(), updates_message(changes, 9));
        }
        let ack = encode(Message::Ack { last_seq: 4 }).unwrap();
        assert_eq!(
            decode_inbound(&ack).unwrap(),
            Inbound::Other(Message::Ack { last_seq: 4 })
        );
    }

    /// Both decoders accept the same frames, and agree on what they hold
    /// (the peer_frames fuzz target checks the same on every frame).
    fn decoders_agree(bytes: &[u8]) {
        let _ = crate::fuzzing::peer_frame_inbound(bytes);
    }

    #[test]
    fn other_versions_and_garbage_are_refused() {
        let bytes = postcard::to_allocvec(&Frame {
            version: PROTOCOL_VERSION + 1,
            message: Message::Ack { last_seq: 1 },
        })
        .unwrap();
        assert!(matches!(decode(&bytes), Err(WireError::Version(_))));
        assert!(decode(&[0xff, 0xff, 0xff, 0xff, 0x0f, 9]).is_err());
        assert!(decode(&[]).is_err());
        let owned = changes();
        let all: Vec<&Change> = owned.iter().collect();
        let mut updates = encode_updates(&all, 1).unwrap();
        updates[0] = (PROTOCOL_VERSION + 1) as u8;
        assert!(matches!(
            decode_inbound(&updates),
            Err(WireError::Version(v)) if v == PROTOCOL_VERSION + 1
        ));
        for bytes in [&[][..], &[1], &[1, 1], &[1, 1, 1], &[0xff; 8]] {
            assert!(decode_inbound(bytes).is_err(), "{bytes:?}");
        }
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = decode(&bytes);
                decoders_agree(&bytes);
            }

            /// Arbitrary bytes after an Updates frame's head, which random
            /// bytes above seldom start with.
            #[test]
            fn arbitrary_updates_never_panic(
                version in 0u8..3,
                tail in proptest::collection::vec(any::<u8>(), 0..256),
            ) {
                decoders_agree(&[&[version, 1][..], &tail].concat());
            }

            /// Real Updates frames, damaged: a byte changed, cut short, or
            /// with bytes added.
            #[test]
            fn damaged_updates_never_panic(
                at in any::<proptest::sample::Index>(),
                byte in any::<u8>(),
                cut in any::<proptest::sample::Index>(),
                extra in proptest::collection::vec(any::<u8>(), 0..8),
            ) {
                let owned = changes();
                let all: Vec<&Change> = owned.iter().collect();
                let frame = encode_updates(&all, 7).unwrap();
                let mut changed = frame.clone();
                changed[at.index(frame.len())] = byte;
                decoders_agree(&changed);
                decoders_agree(&frame[..cut.index(frame.len())]);
                decoders_agree(&[&frame[..], &extra].concat());
            }
        }
    }
}
