//! The cluster key (`--cluster-key`): key derivation, sealing and opening
//! of membership datagrams, the session keys and frame ciphers of a peer
//! TCP link, and the anti-replay window for datagrams.
//!
//! Nothing here does I/O: the membership driver and the replication links
//! call it on bytes they already hold.
//!
//! - Keys: HKDF-SHA256 turns each secret into two independent 256-bit
//!   keys, one for UDP and one for TCP, so a datagram can never be passed
//!   off as a frame or the reverse.
//! - Datagrams: XChaCha20-Poly1305 with a random 192-bit nonce each (no
//!   counter state to lose across restarts; 2^96 datagrams before a
//!   collision is even likely).
//! - Links: each side contributes a fresh random 32-byte nonce; the
//!   session's two keys (one per direction) are derived from the link key
//!   and both nonces, so a recorded session cannot be replayed into a new
//!   one. Frames then use ChaCha20-Poly1305 with the frame number as nonce,
//!   which never repeats under a key used for one session only.
//! - Two keys at once (primary and secondary): we send with the primary
//!   and accept either, as memberlist's keyring does, so the key can be
//!   rotated by rolling restarts.

use std::collections::HashMap;
use std::path::PathBuf;

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

/// Shortest secret accepted, in bytes. The KDF is fast, so a short or
/// guessable secret could be brute-forced from one captured datagram.
pub const MIN_SECRET_LEN: usize = 16;
/// Random nonce of a sealed datagram.
pub const DATAGRAM_NONCE_LEN: usize = 24;
/// Poly1305 tag.
pub const TAG_LEN: usize = 16;
/// Random nonce each side of a link contributes to its session keys.
pub const LINK_NONCE_LEN: usize = 32;

const KDF_SALT: &[u8] = b"kriminodb cluster key v1";
const UDP_INFO: &[u8] = b"kriminodb membership datagrams v1";
const TCP_INFO: &[u8] = b"kriminodb replication links v1";
const INITIATOR_INFO: &[u8] = b"kriminodb link initiator to responder v1";
const RESPONDER_INFO: &[u8] = b"kriminodb link responder to initiator v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the cluster key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the {which} cluster key is {len} bytes; it must have at least {MIN_SECRET_LEN}")]
    TooShort { which: &'static str, len: usize },
    #[error("a secondary cluster key needs a primary one (--cluster-key)")]
    SecondaryWithoutPrimary,
}

/// A sealed datagram or frame failed to authenticate: wrong key, no key,
/// tampered with, replayed into another session, or not sealed at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("authentication failed")]
pub struct AuthError;

/// One cluster key, derived for each use.
struct ClusterKey {
    udp: XChaCha20Poly1305,
    tcp: [u8; 32],
}

impl ClusterKey {
    fn derive(secret: &[u8]) -> Self {
        let kdf = Hkdf::<Sha256>::new(Some(KDF_SALT), secret);
        let mut udp = [0u8; 32];
        let mut tcp = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit: cannot fail.
        let _ = kdf.expand(UDP_INFO, &mut udp);
        let _ = kdf.expand(TCP_INFO, &mut tcp);
        Self {
            udp: XChaCha20Poly1305::new(&udp.into()),
            tcp,
        }
    }
}

/// The primary key (sends; accepted) and optionally a secondary one
/// (accepted only).
pub struct Keyring {
    keys: Vec<ClusterKey>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keyring({} keys)", self.keys.len())
    }
}

impl Keyring {
    pub fn new(primary: &[u8], secondary: Option<&[u8]>) -> Result<Self, KeyError> {
        let check = |which, secret: &[u8]| {
            if secret.len() < MIN_SECRET_LEN {
                Err(KeyError::TooShort {
                    which,
                    len: secret.len(),
                })
            } else {
                Ok(ClusterKey::derive(secret))
            }
        };
        let mut keys = vec![check("primary", primary)?];
        if let Some(secondary) = secondary {
            keys.push(check("secondary", secondary)?);
        }
        Ok(Self { keys })
    }

    fn primary(&self) -> &ClusterKey {
        // `new` always puts the primary key first.
        &self.keys[0]
    }

    /// Appends nonce, ciphertext and tag of `plaintext` under the primary
    /// key to `out`; `aad` is authenticated but not encrypted.
    pub fn seal_datagram(&self, aad: &[u8], plaintext: &[u8], out: &mut Vec<u8>) {
        let mut nonce = [0u8; DATAGRAM_NONCE_LEN];
        rand::fill(&mut nonce[..]);
        let payload = Payload {
            msg: plaintext,
            aad,
        };
        // Encryption only fails for messages of 256 GiB and more.
        if let Ok(sealed) = self
            .primary()
            .udp
            .encrypt(XNonce::from_slice(&nonce), payload)
        {
            out.extend_from_slice(&nonce);
            out.extend_from_slice(&sealed);
        }
    }

    /// The plaintext of what [`seal_datagram`](Self::seal_datagram) made,
    /// under any of our keys.
    pub fn open_datagram(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, AuthError> {
        if sealed.len() < DATAGRAM_NONCE_LEN + TAG_LEN {
            return Err(AuthError);
        }
        let (nonce, body) = sealed.split_at(DATAGRAM_NONCE_LEN);
        self.keys
            .iter()
            .find_map(|key| {
                let payload = Payload { msg: body, aad };
                key.udp.decrypt(XNonce::from_slice(nonce), payload).ok()
            })
            .ok_or(AuthError)
    }

    /// The initiator's ciphers for a link whose nonces are `ours` and
    /// `theirs`: it always seals with the primary key.
    pub fn initiator_session(&self, ours: &[u8], theirs: &[u8]) -> (FrameSealer, FrameOpener) {
        let (send, receive) = session_keys(self.primary(), ours, theirs);
        (FrameSealer::new(&send), FrameOpener::new(&receive))
    }

    /// The responder's candidate ciphers, one pair per key: the first frame
    /// tells which key the initiator uses.
    pub fn responder_sessions(
        &self,
        theirs: &[u8],
        ours: &[u8],
    ) -> Vec<(FrameSealer, FrameOpener)> {
        self.keys
            .iter()
            .map(|key| {
                let (to_responder, to_initiator) = session_keys(key, theirs, ours);
                (
                    FrameSealer::new(&to_initiator),
                    FrameOpener::new(&to_responder),
                )
            })
            .collect()
    }
}

/// The keys of one link: initiator → responder and responder → initiator.
fn session_keys(key: &ClusterKey, initiator: &[u8], responder: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut salt = Vec::with_capacity(initiator.len() + responder.len());
    salt.extend_from_slice(initiator);
    salt.extend_from_slice(responder);
    let kdf = Hkdf::<Sha256>::new(Some(&salt), &key.tcp);
    let mut forward = [0u8; 32];
    let mut backward = [0u8; 32];
    let _ = kdf.expand(INITIATOR_INFO, &mut forward);
    let _ = kdf.expand(RESPONDER_INFO, &mut backward);
    (forward, backward)
}

/// A fresh random link nonce.
pub fn link_nonce() -> [u8; LINK_NONCE_LEN] {
    let mut nonce = [0u8; LINK_NONCE_LEN];
    rand::fill(&mut nonce[..]);
    nonce
}

fn frame_nonce(counter: u64) -> chacha20poly1305::Nonce {
    let mut nonce = [0u8; 12];
    nonce[..8].copy_from_slice(&counter.to_le_bytes());
    nonce.into()
}

/// Seals the frames of one direction of a link; the frame number is the
/// nonce.
pub struct FrameSealer {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl FrameSealer {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(key.into()),
            counter: 0,
        }
    }

    /// `plaintext` sealed as the next frame (its length plus [`TAG_LEN`]).
    pub fn seal(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, AuthError> {
        // A nonce must never repeat: the link ends instead (after 2^64
        // frames, that is never).
        let counter = self.counter;
        self.counter = counter.checked_add(1).ok_or(AuthError)?;
        let mut out = Vec::with_capacity(plaintext.len() + TAG_LEN);
        out.extend_from_slice(plaintext);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&frame_nonce(counter), b"", &mut out)
            .map_err(|_| AuthError)?;
        out.extend_from_slice(&tag);
        Ok(out)
    }
}

/// Opens the frames of one direction of a link, in order: a frame dropped,
/// repeated or reordered fails.
pub struct FrameOpener {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl FrameOpener {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(key.into()),
            counter: 0,
        }
    }

    /// Opens `frame` in place: afterwards it holds the plaintext. Left
    /// unchanged when it does not authenticate.
    pub fn open(&mut self, frame: &mut bytes::BytesMut) -> Result<(), AuthError> {
        let Some(body_len) = frame.len().checked_sub(TAG_LEN) else {
            return Err(AuthError);
        };
        let (body, tag) = frame.split_at_mut(body_len);
        let tag = Tag::clone_from_slice(tag);
        self.cipher
            .decrypt_in_place_detached(&frame_nonce(self.counter), b"", body, &tag)
            .map_err(|_| AuthError)?;
        self.counter = self.counter.checked_add(1).ok_or(AuthError)?;
        frame.truncate(body_len);
        Ok(())
    }
}

/// How far a datagram's send time may be from our clock (both ways), and
/// so how long a datagram can be replayed to a node that has not heard its
/// sender since it restarted.
pub const REPLAY_MAX_AGE_MS: u64 = 60_000;
/// Counters this far behind the highest one seen are refused as replays.
const WINDOW: u64 = 128;
/// Senders tracked at once; beyond, the longest silent is forgotten.
const MAX_STREAMS: usize = 4096;

/// Why a sealed datagram was refused after it authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replay {
    /// Its counter was seen already, or is too far behind.
    Repeated,
    /// Its send time is too far from our clock.
    Stale,
}

/// Anti-replay for datagrams, as IPsec's and WireGuard's: every sender
/// process (a random stream id) numbers its datagrams 1, 2, 3…; per
/// stream the receiver keeps the highest number seen and a bitmap of the
/// 128 before it. A stream seen for the first time (a new sender,
/// or any sender after we restarted) is accepted only if its send time is
/// within [`REPLAY_MAX_AGE_MS`] of our clock, and a stream silent for
/// twice that is forgotten: its datagrams are stale by then.
#[derive(Debug, Default)]
pub struct ReplayGuard {
    streams: HashMap<u64, Window>,
}

#[derive(Debug, Clone, Copy)]
struct Window {
    highest: u64,
    /// Bit i: counter `highest - i` was seen.
    seen: u128,
    last_ms: u64,
}

impl ReplayGuard {
    /// Records datagram `counter` of `stream`, sent at `sent_ms`, or says
    /// why it must be dropped.
    pub fn check(
        &mut self,
        stream: u64,
        counter: u64,
        sent_ms: u64,
        now_ms: u64,
    ) -> Result<(), Replay> {
        if sent_ms.abs_diff(now_ms) > REPLAY_MAX_AGE_MS {
            return Err(Replay::Stale);
        }
        if counter == 0 {
            return Err(Replay::Repeated);
        }
        if !self.streams.contains_key(&stream) {
            self.make_room(now_ms);
        }
        let window = self.streams.entry(stream).or_insert(Window {
            highest: 0,
            seen: 0,
            last_ms: now_ms,
        });
        if counter > window.highest {
            let shift = counter - window.highest;
            window.seen = if shift >= WINDOW {
                0
            } else {
                window.seen << shift
            };
            window.seen |= 1;
            window.highest = counter;
        } else {
            let behind = window.highest - counter;
            if behind >= WINDOW || window.seen & (1 << behind) != 0 {
                return Err(Replay::Repeated);
            }
            window.seen |= 1 << behind;
        }
        window.last_ms = now_ms;
        Ok(())
    }

    fn make_room(&mut self, now_ms: u64) {
        if self.streams.len() < MAX_STREAMS {
            return;
        }
        self.streams
            .retain(|_, w| now_ms.saturating_sub(w.last_ms) <= 2 * REPLAY_MAX_AGE_MS);
        if self.streams.len() >= MAX_STREAMS
            && let Some(oldest) = self
                .streams
                .iter()
                .min_by_key(|(_, w)| w.last_ms)
                .map(|(id, _)| *id)
        {
            self.streams.remove(&oldest);
        }
    }

    pub fn len(&self) -> usize {
        self.streams.len()
    }

    pub fn is_empty(&self) -> bool {
        self.streams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"0123456789abcdef-first";
    const B: &[u8] = b"0123456789abcdef-second";

    #[test]
    fn short_secrets_are_refused() {
        assert!(matches!(
            Keyring::new(b"short", None),
            Err(KeyError::TooShort { .. })
        ));
        assert!(Keyring::new(A, Some(b"short")).is_err());
        assert!(Keyring::new(A, Some(B)).is_ok());
    }

    #[test]
    fn datagrams_open_only_under_a_shared_key_and_unchanged() {
        let a = Keyring::new(A, None).unwrap();
        let b = Keyring::new(B, None).unwrap();
        let mut sealed = Vec::new();
        a.seal_datagram(b"hdr", b"hello", &mut sealed);
        assert_eq!(a.open_datagram(b"hdr", &sealed).unwrap(), b"hello");
        assert_eq!(b.open_datagram(b"hdr", &sealed), Err(AuthError));
        assert_eq!(a.open_datagram(b"HDR", &sealed), Err(AuthError), "aad");
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 1;
            assert_eq!(a.open_datagram(b"hdr", &flipped), Err(AuthError));
        }
        assert_eq!(a.open_datagram(b"hdr", &sealed[..20]), Err(AuthError));
        assert_eq!(a.open_datagram(b"hdr", &[]), Err(AuthError));
    }

    #[test]
    fn every_datagram_gets_a_new_nonce() {
        let a = Keyring::new(A, None).unwrap();
        let mut nonces = std::collections::HashSet::new();
        for _ in 0..1000 {
            let mut sealed = Vec::new();
            a.seal_datagram(b"", b"x", &mut sealed);
            assert!(nonces.insert(sealed[..DATAGRAM_NONCE_LEN].to_vec()));
        }
    }

    #[test]
    fn the_secondary_key_is_accepted_but_never_used_to_send() {
        let old = Keyring::new(A, None).unwrap();
        let rotating = Keyring::new(B, Some(A)).unwrap();
        let new = Keyring::new(B, None).unwrap();
        let mut from_old = Vec::new();
        old.seal_datagram(b"", b"m", &mut from_old);
        assert!(rotating.open_datagram(b"", &from_old).is_ok());
        let mut from_rotating = Vec::new();
        rotating.seal_datagram(b"", b"m", &mut from_rotating);
        assert!(new.open_datagram(b"", &from_rotating).is_ok());
        assert!(old.open_datagram(b"", &from_rotating).is_err());
    }

    fn frames(initiator: &Keyring, responder: &Keyring) -> Option<Vec<u8>> {
        let (ni, nr) = (link_nonce(), link_nonce());
        let (mut seal, _) = initiator.initiator_session(&ni, &nr);
        let sealed = seal.seal(b"hello").unwrap();
        for (_, mut open) in responder.responder_sessions(&ni, &nr) {
            let mut frame = bytes::BytesMut::from(&sealed[..]);
            if open.open(&mut frame).is_ok() {
                return Some(frame.to_vec());
            }
        }
        None
    }

    #[test]
    fn link_frames_need_a_shared_key() {
        let a = Keyring::new(A, None).unwrap();
        let b = Keyring::new(B, None).unwrap();
        let both = Keyring::new(B, Some(A)).unwrap();
        assert_eq!(frames(&a, &a).as_deref(), Some(&b"hello"[..]));
        assert_eq!(frames(&a, &both).as_deref(), Some(&b"hello"[..]));
        assert_eq!(frames(&a, &b), None);
    }

    #[test]
    fn link_frames_must_come_in_order_within_their_session() {
        let k = Keyring::new(A, None).unwrap();
        let (ni, nr) = (link_nonce(), link_nonce());
        let (mut seal, _) = k.initiator_session(&ni, &nr);
        let first = seal.seal(b"one").unwrap();
        let second = seal.seal(b"two").unwrap();
        let (_, mut open) = k.responder_sessions(&ni, &nr).remove(0);
        let mut f = bytes::BytesMut::from(&second[..]);
        assert_eq!(open.open(&mut f), Err(AuthError), "skipped a frame");
        assert_eq!(&f[..], &second[..], "left unchanged");
        let mut f = bytes::BytesMut::from(&first[..]);
        open.open(&mut f).unwrap();
        assert_eq!(&f[..], b"one");
        let mut f = bytes::BytesMut::from(&first[..]);
        assert_eq!(open.open(&mut f), Err(AuthError), "repeated");
        let mut f = bytes::BytesMut::from(&second[..]);
        open.open(&mut f).unwrap();
        // The same frames in a session with another responder nonce.
        let (_, mut other) = k.responder_sessions(&ni, &link_nonce()).remove(0);
        let mut f = bytes::BytesMut::from(&first[..]);
        assert_eq!(other.open(&mut f), Err(AuthError), "replayed session");
        let mut f = bytes::BytesMut::from(&[0u8; 3][..]);
        assert_eq!(other.open(&mut f), Err(AuthError), "shorter than a tag");
    }

    #[test]
    fn the_replay_window_accepts_each_counter_once() {
        let mut g = ReplayGuard::default();
        let now = 1_000_000;
        assert_eq!(g.check(7, 1, now, now), Ok(()));
        assert_eq!(g.check(7, 1, now, now), Err(Replay::Repeated));
        assert_eq!(g.check(7, 3, now, now), Ok(()));
        assert_eq!(g.check(7, 2, now, now), Ok(()), "reordered, not replayed");
        assert_eq!(g.check(7, 2, now, now), Err(Replay::Repeated));
        assert_eq!(g.check(7, 500, now, now), Ok(()));
        assert_eq!(g.check(7, 500 - 127, now, now), Ok(()));
        assert_eq!(g.check(7, 500 - 128, now, now), Err(Replay::Repeated));
        assert_eq!(g.check(8, 1, now, now), Ok(()), "another stream");
        assert_eq!(g.check(7, 0, now, now), Err(Replay::Repeated));
        assert_eq!(
            g.check(9, 1, now - REPLAY_MAX_AGE_MS - 1, now),
            Err(Replay::Stale)
        );
        assert_eq!(
            g.check(9, 1, now + REPLAY_MAX_AGE_MS + 1, now),
            Err(Replay::Stale)
        );
        assert_eq!(g.check(9, 1, now - REPLAY_MAX_AGE_MS, now), Ok(()));
    }

    #[test]
    fn the_replay_window_stays_bounded() {
        let mut g = ReplayGuard::default();
        for stream in 0..(MAX_STREAMS as u64 + 100) {
            assert_eq!(
                g.check(stream, 1, 5_000_000 + stream, 5_000_000 + stream),
                Ok(())
            );
        }
        assert!(g.len() <= MAX_STREAMS);
    }
}
