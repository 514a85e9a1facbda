//! How one node seals and opens its datagrams: the plain envelope, or the
//! cluster key with our anti-replay stream and the replay window of every
//! sender. It reads no clock (the wall time is handed in) and knows
//! nothing of what the datagrams carry.

use std::borrow::Cow;
use std::sync::Arc;

use rand::RngExt;
use rand::rngs::StdRng;

use super::{Dropped, Kind, SealedError, SealedHeader, open, open_keyed, seal, seal_keyed};
use crate::crypto::{Keyring, Replay, ReplayGuard};

pub(super) enum Envelope {
    Plain,
    /// With a cluster key.
    Keyed(Keyed),
}

pub(super) struct Keyed {
    keyring: Arc<Keyring>,
    /// Our stream id for anti-replay: random, new for every process.
    stream: u64,
    /// Number of the last datagram sealed.
    counter: u64,
    replay: ReplayGuard,
}

impl Envelope {
    /// Sealed with `keyring` if there is one, our stream id drawn from `rng`.
    pub(super) fn new(keyring: Option<Arc<Keyring>>, rng: &mut StdRng) -> Self {
        match keyring {
            None => Self::Plain,
            Some(keyring) => Self::Keyed(Keyed {
                keyring,
                stream: rng.random(),
                counter: 0,
                replay: ReplayGuard::default(),
            }),
        }
    }

    /// The kind and message of a datagram received at `now_ms`, if it is
    /// ours and meant for the node `me` (its node id).
    pub(super) fn open<'a>(
        &mut self,
        datagram: &'a [u8],
        me: u64,
        now_ms: u64,
    ) -> Result<(Kind, Cow<'a, [u8]>), Dropped> {
        let keyed = match self {
            Self::Plain => {
                let (kind, payload) = open(datagram).ok_or(Dropped::NotOurs)?;
                return Ok((kind, Cow::Borrowed(payload)));
            }
            Self::Keyed(keyed) => keyed,
        };
        let (header, kind, payload) =
            open_keyed(&keyed.keyring, datagram).map_err(|e| match e {
                SealedError::Auth(_) => Dropped::Unauthenticated,
                SealedError::Malformed => Dropped::MalformedSealed,
            })?;
        // Our own datagrams sent back to us are replays too: we never
        // record our own stream in the window. A datagram sealed for
        // another node is authentic but not ours: replayed from the wire
        // to it, or sent to the previous process at our address before its
        // peers learnt of this one (so it is not an authentication failure).
        if header.stream == keyed.stream || !header.is_for(me) {
            return Err(Dropped::Replayed);
        }
        keyed
            .replay
            .check(header.stream, header.counter, header.sent_ms, now_ms)
            .map_err(|replay| match replay {
                Replay::Repeated => Dropped::Replayed,
                Replay::Stale => Dropped::Stale,
            })?;
        Ok((kind, Cow::Owned(payload)))
    }

    /// `payload` of `kind` for the node `receiver` (its node id, or
    /// `ANY_RECEIVER`), sent at `now_ms`.
    pub(super) fn seal(
        &mut self,
        kind: Kind,
        payload: &[u8],
        receiver: u64,
        now_ms: u64,
    ) -> Vec<u8> {
        let mut datagram = Vec::new();
        match self {
            Self::Plain => seal(kind, payload, &mut datagram),
            Self::Keyed(keyed) => {
                keyed.counter += 1;
                let header = SealedHeader {
                    stream: keyed.stream,
                    counter: keyed.counter,
                    sent_ms: now_ms,
                    receiver,
                };
                seal_keyed(&keyed.keyring, &header, kind, payload, &mut datagram);
            }
        }
        datagram
    }
}
