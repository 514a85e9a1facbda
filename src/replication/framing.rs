//! Frames on a peer TCP link, shared by both ends: the length-delimited
//! codec with its size limit, sending (with byte accounting) and receiving
//! whole messages, and the link error type.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

use super::wire::{self, CHUNK_ENTRIES, Message, WireEntry};

pub type Reader = FramedRead<OwnedReadHalf, LengthDelimitedCodec>;
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

/// Splits a connected stream into framed halves; frames longer than
/// `max_frame` are refused before anything is allocated for them.
pub fn split(stream: TcpStream, max_frame: usize) -> (Reader, Writer) {
    let (read, write) = stream.into_split();
    let codec = || {
        LengthDelimitedCodec::builder()
            .max_frame_length(max_frame)
            .new_codec()
    };
    (
        FramedRead::new(read, codec()),
        FramedWrite::new(write, codec()),
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
