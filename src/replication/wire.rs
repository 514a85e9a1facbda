//! The peer data protocol: length-delimited frames on a TCP link, each a
//! postcard-encoded [`Frame`] that names the protocol version.
//!
//! Decoding never trusts the peer: the frame length is checked by the codec
//! before any allocation, and a frame that fails to decode or has another
//! version closes the link (the caller counts it).

use serde::{Deserialize, Serialize};

use crate::clock::Version;
use crate::store::Change;

/// Bumped whenever a message changes incompatibly.
pub const PROTOCOL_VERSION: u16 = 1;
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
}

/// A key and the version a node holds of it (sync summaries).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyVersion {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    pub version: Version,
    /// False for a tombstone.
    pub live: bool,
}

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
        keys: Vec<serde_bytes::ByteBuf>,
        last: bool,
    },
    /// Responder: it has sent everything the initiator wanted.
    SyncDone { session: u64 },
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

impl WireEntry {
    pub fn from_change(change: &Change) -> Option<Self> {
        match change {
            Change::Entry {
                key,
                value,
                expires_at,
                version,
                ..
            } => Some(Self {
                key: key.to_vec(),
                value: value
                    .as_ref()
                    .map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
                expires_at: *expires_at,
                version: *version,
            }),
            Change::Truncate { .. } => None,
        }
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
            }],
            truncates: vec![],
            last_seq: 3,
        };
        let bytes = encode(message.clone()).unwrap();
        assert_eq!(decode(&bytes).unwrap(), message);
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
    }

    mod prop {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
                let _ = decode(&bytes);
            }
        }
    }
}
