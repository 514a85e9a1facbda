//! Frames on a peer TCP link, shared by both ends: the length-delimited
//! codec with its size limit, sending (with byte accounting) and receiving
//! whole messages, and the link error type.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{Decoder, FramedRead, FramedWrite, LengthDelimitedCodec};

use super::wire::{self, CHUNK_ENTRIES, Message, WireEntry};

pub type Reader = FramedRead<OwnedReadHalf, FrameDecoder>;
pub type Writer = FramedWrite<OwnedWriteHalf, LengthDelimitedCodec>;

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
}

impl PeerError {
    /// Whether the peer sent something malformed (counted as a bad frame),
    /// as opposed to a network failure.
    pub fn is_bad_input(&self) -> bool {
        match self {
            // The codec reports an oversized length prefix as InvalidData.
            Self::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            Self::Wire(_) | Self::NoHello | Self::Unexpected | Self::Truncated => true,
            Self::Encode(_) | Self::Closed => false,
        }
    }
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .max_frame_length(max_frame)
        .new_codec()
}

/// Length prefix: a big-endian u32 (the codec's default).
const HEAD_LEN: usize = 4;

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
}

impl Decoder for FrameDecoder {
    type Item = BytesMut;
    type Error = std::io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        if let Some(head) = src.first_chunk::<HEAD_LEN>() {
            let len = u32::from_be_bytes(*head) as usize;
            // Oversized lengths go to the codec, which refuses them.
            if len <= self.max_frame && src.len() < HEAD_LEN + len {
                return Ok(None);
            }
        }
        // The inner codec is only ever handed a whole frame (or a head it
        // refuses), so it never reserves ahead.
        self.inner.decode(src)
    }
}

/// Splits a connected stream into framed halves; frames longer than
/// `max_frame` are refused before anything is allocated for them.
pub fn split(stream: TcpStream, max_frame: usize) -> (Reader, Writer) {
    let (read, write) = stream.into_split();
    (
        FramedRead::new(read, FrameDecoder::new(max_frame)),
        FramedWrite::new(write, codec(max_frame)),
    )
}

/// The next message, or None when the peer closed the link cleanly.
pub async fn receive(reader: &mut Reader) -> Result<Option<Message>, PeerError> {
    match reader.next().await {
        None => Ok(None),
        // The codec reports leftover bytes at end of stream as an error of
        // kind Other; those bytes were a frame cut short.
        Some(Err(e))
            if e.kind() == std::io::ErrorKind::Other && !reader.read_buffer().is_empty() =>
        {
            Err(PeerError::Truncated)
        }
        Some(frame) => Ok(Some(wire::decode(&frame?)?)),
    }
}

pub async fn send(
    writer: &mut Writer,
    message: Message,
    bytes_sent: &AtomicU64,
) -> Result<(), PeerError> {
    let frame = wire::encode(message)?;
    // Four bytes of length prefix travel with every frame.
    bytes_sent.fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
    writer.send(Bytes::from(frame)).await?;
    Ok(())
}

/// Sends `entries` as SyncEntries frames of at most [`CHUNK_ENTRIES`].
pub async fn send_entries(
    writer: &mut Writer,
    session: u64,
    entries: &[WireEntry],
    bytes_sent: &AtomicU64,
) -> Result<(), PeerError> {
    for chunk in entries.chunks(CHUNK_ENTRIES) {
        let message = Message::SyncEntries {
            session,
            entries: chunk.to_vec(),
            last: false,
        };
        send(writer, message, bytes_sent).await?;
    }
    Ok(())
}
