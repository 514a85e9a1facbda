//! Frames on a peer TCP link, shared by both ends: the length-delimited
//! codec with its size limit, the cluster-key handshake and frame ciphers,
//! sending (with byte accounting) and receiving whole messages, and the
//! link error type.
//!
//! With a cluster key a link starts with a handshake: the initiator sends
//! [`HANDSHAKE_MAGIC`], a version byte and a fresh random nonce in one
//! frame, the responder answers the same way with its own nonce, and from
//! then on every frame in each direction is sealed with that direction's
//! session key (derived from the cluster key and both nonces) and its
//! frame number as the nonce (see [`crate::crypto`]). The initiator's first
//! sealed frame (its Hello) tells the responder which of its keys the
//! initiator uses. A frame that does not authenticate ends the link.
//!
//! Until the other end has proved itself, frames are limited to
//! [`UNPROVEN_FRAME_LIMIT`]: on the responder until the first sealed frame
//! opens (or, without a key, until the first frame has arrived), on the
//! initiator until the first sealed reply opens. Only then is the full
//! frame limit (one value of the largest size a client may write) allowed,
//! so a stranger cannot make a node buffer hundreds of MB. Whatever the
//! limit, a frame's bytes are buffered only as they arrive (see
//! [`FrameDecoder`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{Decoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use super::wire::{self, Message};
use crate::crypto::{AuthError, FrameOpener, FrameSealer, Keyring, LINK_NONCE_LEN, TAG_LEN};

/// First bytes of a handshake frame ("kriminodb link handshake").
pub const HANDSHAKE_MAGIC: [u8; 4] = *b"KRLH";
/// Bumped whenever the handshake or the sealed frames change.
pub const HANDSHAKE_VERSION: u8 = 1;
const HANDSHAKE_LEN: usize = HANDSHAKE_MAGIC.len() + 1 + LINK_NONCE_LEN;
/// A keyed link that has not completed its handshake by then is closed.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame (before sealing) accepted from a peer that has not yet
/// proved it holds the cluster key, or, without a key, before its first
/// frame: far above a handshake, a Hello or the first reply an initiator
/// waits for (an Ack, or a reconciliation's root answer of 256 hashes).
pub const UNPROVEN_FRAME_LIMIT: usize = 64 << 10;
/// Length prefix: a big-endian u32 (the codec's default).
const HEAD_LEN: usize = 4;
/// Read-ahead for a frame whose bytes are still arriving, before the
/// buffer's own size takes over.
pub const READ_AHEAD_MIN: usize = 64 << 10;

/// The receiving half of a link.
pub struct Reader {
    inner: FramedRead<OwnedReadHalf, FrameDecoder>,
    opener: Option<FrameOpener>,
    /// The full frame limit, installed once the first sealed frame opens.
    proven_limit: Option<usize>,
}

/// Reads frames as [`LengthDelimitedCodec`] does, except that a declared
/// length reserves nothing: the codec reserves the whole frame as soon as
/// its 4-byte head arrives, so any peer could make a link hold up to the
/// frame limit (hundreds of MB) by sending 4 bytes. Here the frame's bytes
/// are buffered only as they arrive.
#[derive(Debug)]
pub struct FrameDecoder {
    inner: LengthDelimitedCodec,
    max_frame: usize,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self {
            inner: codec(max_frame),
            max_frame,
        }
    }

    fn set_max_frame(&mut self, max_frame: usize) {
        self.inner.set_max_frame_length(max_frame);
        self.max_frame = max_frame;
    }
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        if let Some(head) = src.first_chunk::<HEAD_LEN>() {
            let len = u32::from_be_bytes(*head) as usize;
            // Oversized lengths go to the codec, which refuses them.
            if len <= self.max_frame && src.len() < HEAD_LEN + len {
                // Room for the rest of the frame, at most as much again as
                // has arrived: the buffer grows geometrically (without
                // this, FramedRead grew it 8 KiB at a time, copying a 1 MB
                // frame ~128 times), and a declared length alone still
                // reserves no more than what was sent.
                let missing = HEAD_LEN + len - src.len();
                src.reserve(missing.min(src.len().max(READ_AHEAD_MIN)));
                return Ok(None);
            }
        }
        // The inner codec is only ever handed a whole frame (or a head it
        // refuses), so it never reserves ahead.
        self.inner.decode(src)
    }
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// The sending half of a link.
pub struct Writer {
    inner: FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>,
    sealer: Option<FrameSealer>,
}

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("encode: {0}")]
    Encode(#[from] postcard::Error),
    #[error("the peer closed the link")]
    Closed,
    #[error("the link ended in the middle of a frame")]
    Truncated,
    #[error("the link did not start with Hello")]
    NoHello,
    #[error("unexpected message from the peer")]
    Unexpected,
    #[error("the peer did not prove it has our cluster key")]
    Auth(#[from] AuthError),
}

impl PeerError {
    /// Whether the peer sent something malformed (counted as a bad frame),
    /// as opposed to a network failure.
    pub fn is_bad_input(&self) -> bool {
        match self {
            // The codec reports an oversized length prefix as InvalidData.
            Self::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            Self::Wire(_) | Self::NoHello | Self::Unexpected | Self::Truncated | Self::Auth(_) => {
                true
            }
            Self::Encode(_) | Self::Closed => false,
        }
    }

    /// Whether the peer failed the cluster key check (also a bad frame).
    pub fn is_auth_failure(&self) -> bool {
        matches!(self, Self::Auth(_))
    }
}

/// Splits a connected stream into framed halves; frames longer than
/// `max_frame` are refused before anything is allocated for them. Frames
/// travel in the clear until a handshake installs ciphers.
pub fn split(stream: TcpStream, max_frame: usize) -> (Reader, Writer) {
    let (read, write) = stream.into_split();
    (
        Reader {
            inner: FramedRead::new(read, FrameDecoder::new(max_frame)),
            opener: None,
            proven_limit: None,
        },
        Writer {
            inner: FramedWrite::new(write, codec(max_frame)),
            sealer: None,
        },
    )
}

/// Halves whose reader accepts only small frames for now; `full` is the
/// limit for later.
fn split_unproven(stream: TcpStream, full: usize) -> (Reader, Writer) {
    let (mut reader, writer) = split(stream, full);
    reader.set_max_frame(full.min(UNPROVEN_FRAME_LIMIT.saturating_add(TAG_LEN)));
    (reader, writer)
}

impl Reader {
    fn set_max_frame(&mut self, max_frame: usize) {
        self.inner.decoder_mut().set_max_frame(max_frame);
    }
}

/// Starts a link on `stream`, as the side that connected: with a keyring,
/// runs the handshake so every frame after it is sealed.
pub async fn connect(
    stream: TcpStream,
    max_frame: usize,
    keyring: Option<&Keyring>,
) -> Result<(Reader, Writer), PeerError> {
    let Some(keyring) = keyring else {
        return Ok(split(stream, max_frame));
    };
    let full = max_frame.saturating_add(TAG_LEN);
    let (mut reader, mut writer) = split_unproven(stream, full);
    let ours = crate::crypto::link_nonce();
    let exchange = async {
        writer.inner.send(handshake_frame(&ours)).await?;
        let frame = next_frame(&mut reader).await?.ok_or(PeerError::Closed)?;
        parse_handshake(&frame)
    };
    let theirs = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| timed_out())??;
    let (sealer, opener) = keyring.initiator_session(&ours, &theirs);
    reader.opener = Some(opener);
    // The responder proves the key with its first sealed reply.
    reader.proven_limit = Some(full);
    writer.sealer = Some(sealer);
    Ok((reader, writer))
}

/// Starts a link on `stream`, as the side that accepted it: the halves and
/// the peer's first message, None if it closed the link before sending
/// one. With a keyring the handshake comes first, and the first message
/// must be sealed under one of our keys.
pub async fn accept(
    stream: TcpStream,
    max_frame: usize,
    keyring: Option<&Keyring>,
) -> Result<Option<(Reader, Writer, Message)>, PeerError> {
    let Some(keyring) = keyring else {
        // Nothing to prove without a key, but a stranger's first frame
        // stays small: a link starts with a Hello.
        let (mut reader, writer) = split_unproven(stream, max_frame);
        let first = receive(&mut reader).await?;
        reader.set_max_frame(max_frame);
        return Ok(first.map(|m| (reader, writer, m)));
    };
    let full = max_frame.saturating_add(TAG_LEN);
    let (mut reader, mut writer) = split_unproven(stream, full);
    let exchange = async {
        let Some(frame) = next_frame(&mut reader).await? else {
            return Ok(None);
        };
        let theirs = parse_handshake(&frame)?;
        let ours = crate::crypto::link_nonce();
        writer.inner.send(handshake_frame(&ours)).await?;
        let Some(first) = next_frame(&mut reader).await? else {
            return Ok(None);
        };
        // The first sealed frame tells which of our keys the peer uses.
        for (sealer, mut opener) in keyring.responder_sessions(&theirs, &ours) {
            let mut frame = first.clone();
            if opener.open(&mut frame).is_ok() {
                return Ok(Some((sealer, opener, frame)));
            }
        }
        Err(PeerError::Auth(AuthError))
    };
    let opened = tokio::time::timeout(HANDSHAKE_TIMEOUT, exchange)
        .await
        .map_err(|_| timed_out())??;
    let Some((sealer, opener, first)) = opened else {
        return Ok(None);
    };
    reader.set_max_frame(full);
    reader.opener = Some(opener);
    writer.sealer = Some(sealer);
    let message = wire::decode(&first)?;
    Ok(Some((reader, writer, message)))
}

fn timed_out() -> PeerError {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "link handshake timed out").into()
}

fn handshake_frame(nonce: &[u8; LINK_NONCE_LEN]) -> Bytes {
    let mut frame = Vec::with_capacity(HANDSHAKE_LEN);
    frame.extend_from_slice(&HANDSHAKE_MAGIC);
    frame.push(HANDSHAKE_VERSION);
    frame.extend_from_slice(nonce);
    frame.into()
}

/// The peer's nonce from its handshake frame. Anything else (a plaintext
/// Hello from a node without a key, garbage) fails authentication.
fn parse_handshake(frame: &[u8]) -> Result<[u8; LINK_NONCE_LEN], PeerError> {
    if frame.len() != HANDSHAKE_LEN
        || frame[..HANDSHAKE_MAGIC.len()] != HANDSHAKE_MAGIC
        || frame[HANDSHAKE_MAGIC.len()] != HANDSHAKE_VERSION
    {
        return Err(AuthError.into());
    }
    let mut nonce = [0u8; LINK_NONCE_LEN];
    nonce.copy_from_slice(&frame[HANDSHAKE_MAGIC.len() + 1..]);
    Ok(nonce)
}

/// The next whole frame as it came off the wire, or None when the peer
/// closed the link cleanly.
async fn next_frame(reader: &mut Reader) -> Result<Option<BytesMut>, PeerError> {
    match reader.inner.next().await {
        None => Ok(None),
        // The codec reports leftover bytes at end of stream as an error of
        // kind Other; those bytes were a frame cut short.
        Some(Err(e))
            if e.kind() == std::io::ErrorKind::Other && !reader.inner.read_buffer().is_empty() =>
        {
            Err(PeerError::Truncated)
        }
        Some(frame) => Ok(Some(frame?)),
    }
}

/// The next frame's payload (opened, if the link is keyed), for the caller
/// to decode; None when the peer closed the link cleanly.
pub async fn receive_frame(reader: &mut Reader) -> Result<Option<BytesMut>, PeerError> {
    let Some(mut frame) = next_frame(reader).await? else {
        return Ok(None);
    };
    if let Some(opener) = reader.opener.as_mut() {
        opener.open(&mut frame)?;
        if let Some(full) = reader.proven_limit.take() {
            reader.set_max_frame(full);
        }
    }
    Ok(Some(frame))
}

/// The next message, or None when the peer closed the link cleanly.
pub async fn receive(reader: &mut Reader) -> Result<Option<Message>, PeerError> {
    match receive_frame(reader).await? {
        Some(frame) => Ok(Some(wire::decode(&frame)?)),
        None => Ok(None),
    }
}

impl Writer {
    /// Seals `frame` if the link is keyed; the unkeyed path passes it on
    /// untouched (an encoded batch is shared by every link).
    fn prepare(&mut self, frame: Bytes, bytes_sent: &AtomicU64) -> Result<Bytes, PeerError> {
        let frame = match self.sealer.as_mut() {
            Some(sealer) => Bytes::from(sealer.seal(&frame)?),
            None => frame,
        };
        // Four bytes of length prefix travel with every frame.
        bytes_sent.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
        Ok(frame)
    }

    /// Sends one encoded frame and flushes.
    pub async fn send_frame(
        &mut self,
        frame: Bytes,
        bytes_sent: &AtomicU64,
    ) -> Result<(), PeerError> {
        let frame = self.prepare(frame, bytes_sent)?;
        self.inner.send(frame).await?;
        Ok(())
    }

    /// Queues one encoded frame without flushing.
    pub async fn feed_frame(
        &mut self,
        frame: Bytes,
        bytes_sent: &AtomicU64,
    ) -> Result<(), PeerError> {
        let frame = self.prepare(frame, bytes_sent)?;
        self.inner.feed(frame).await?;
        Ok(())
    }

    pub async fn flush(&mut self) -> Result<(), PeerError> {
        SinkExt::<Bytes>::flush(&mut self.inner).await?;
        Ok(())
    }
}

pub async fn send(
    writer: &mut Writer,
    message: Message,
    bytes_sent: &AtomicU64,
) -> Result<(), PeerError> {
    let frame = wire::encode(message)?;
    writer.send_frame(Bytes::from(frame), bytes_sent).await
}

/// Sends `messages` in order, flushing once after the last.
pub async fn send_all(
    writer: &mut Writer,
    messages: Vec<Message>,
    bytes_sent: &AtomicU64,
) -> Result<(), PeerError> {
    if messages.is_empty() {
        return Ok(());
    }
    for message in messages {
        let frame = wire::encode(message)?;
        writer.feed_frame(Bytes::from(frame), bytes_sent).await?;
    }
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_declared_length_reserves_nothing_until_its_bytes_arrive() {
        let mut decoder = FrameDecoder::new(600 << 20);
        let mut src = BytesMut::from(&0x2010_0000u32.to_be_bytes()[..]);
        assert_eq!(decoder.decode(&mut src).ok(), Some(None));
        assert!(src.capacity() < 1 << 20, "reserved {}", src.capacity());
    }

    #[test]
    fn frames_pass_whole_and_oversized_heads_are_refused() {
        let mut decoder = FrameDecoder::new(8);
        let mut src = BytesMut::from(&[0, 0, 0, 3, b'a', b'b'][..]);
        assert_eq!(decoder.decode(&mut src).ok(), Some(None));
        src.extend_from_slice(b"c");
        let frame = decoder.decode(&mut src).ok().flatten();
        assert_eq!(frame.as_deref(), Some(&b"abc"[..]));
        decoder.set_max_frame(2);
        let mut src = BytesMut::from(&[0, 0, 0, 3][..]);
        let refused = decoder.decode(&mut src).err().map(|e| e.kind());
        assert_eq!(refused, Some(std::io::ErrorKind::InvalidData));
    }
}
