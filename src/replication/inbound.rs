//! The TCP side of the peer port: accepts links from peers, applies their
//! pushed updates (acknowledging each batch) and answers the
//! reconciliations they start.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;

use super::wire::{self, CHUNK_ENTRIES, KeyVersion, Message};
use super::{Replication, sync};
use crate::clock::{Version, unix_millis};

pub async fn run(
    listener: TcpListener,
    replication: Arc<Replication>,
    shutdown: CancellationToken,
) {
    let mut links = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = links.join_next(), if !links.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let replication = replication.clone();
                    let shutdown = shutdown.clone();
                    links.spawn(async move {
                        if let Err(e) = serve(stream, &replication, shutdown).await {
                            if e.counts_as_bad() {
                                Replication::count(&replication.stats.bad_frames, 1);
                            }
                            tracing::debug!(%peer, error = %e, "inbound replication link closed");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "peer accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    #[error("encode: {0}")]
    Encode(#[from] postcard::Error),
    #[error("the link did not start with Hello")]
    NoHello,
    #[error("unexpected message")]
    Unexpected,
}

impl InboundError {
    fn counts_as_bad(&self) -> bool {
        match self {
            Self::Io(e) => e.kind() == std::io::ErrorKind::InvalidData,
            Self::Wire(_) | Self::NoHello | Self::Unexpected => true,
            Self::Encode(_) => false,
        }
    }
}

type Writer = FramedWrite<tokio::net::tcp::OwnedWriteHalf, LengthDelimitedCodec>;

async fn serve(
    stream: TcpStream,
    replication: &Arc<Replication>,
    shutdown: CancellationToken,
) -> Result<(), InboundError> {
    let (read, write) = stream.into_split();
    let codec = || {
        LengthDelimitedCodec::builder()
            .max_frame_length(replication.frame_limit())
            .new_codec()
    };
    let mut reader = FramedRead::new(read, codec());
    let mut writer = FramedWrite::new(write, codec());
    let first = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        frame = reader.next() => frame,
    };
    let Some(first) = first else { return Ok(()) };
    let Message::Hello { node_id, hlc, .. } = wire::decode(&first?)? else {
        return Err(InboundError::NoHello);
    };
    replication.store.clock().observe(Version { hlc, node_id });
    // When the reconciliation the peer is running with us started.
    let mut sync_start_ms = 0;
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            frame = reader.next() => frame,
        };
        let Some(frame) = frame else { return Ok(()) };
        let message = wire::decode(&frame?)?;
        let store = &replication.store;
        match message {
            Message::Updates {
                entries,
                truncates,
                last_seq,
            } => {
                for marker in truncates {
                    store.truncate(marker);
                }
                let applied = sync::apply(store, &entries);
                Replication::count(&replication.stats.entries_received, applied as u64);
                send(&mut writer, Message::Ack { last_seq }, replication).await?;
            }
            Message::SyncRoot {
                session,
                root,
                truncated,
            } => {
                replication.before_sync();
                sync_start_ms = unix_millis();
                store.truncate(truncated);
                let reply = if root == store.digest_tree().root() && truncated == store.truncated()
                {
                    replication.sync_completed(node_id, sync_start_ms);
                    Message::SyncEqual { session }
                } else {
                    Message::SyncInner {
                        session,
                        truncated: store.truncated(),
                        inner: sync::inner_hashes(store),
                    }
                };
                send(&mut writer, reply, replication).await?;
            }
            Message::SyncLeaves { session, groups } => {
                let (empty_there, summarize) = sync::differing_leaves(store, &groups);
                // Leaves the initiator holds nothing in: whole entries, no
                // summary round trip (this is how a joining node fills up).
                for chunk in sync::entries_in(store, &empty_there).chunks(CHUNK_ENTRIES) {
                    let entries = chunk.to_vec();
                    send(
                        &mut writer,
                        Message::SyncEntries {
                            session,
                            entries,
                            last: false,
                        },
                        replication,
                    )
                    .await?;
                }
                let summary = sync::summary_of(store, &summarize);
                let mut leaves = summarize;
                leaves.extend(empty_there);
                let chunks: Vec<&[KeyVersion]> = summary.chunks(CHUNK_ENTRIES).collect();
                let count = chunks.len().max(1);
                for i in 0..count {
                    let keys = chunks.get(i).map(|c| c.to_vec()).unwrap_or_default();
                    let last = i + 1 == count;
                    let leaves = if last {
                        std::mem::take(&mut leaves)
                    } else {
                        Vec::new()
                    };
                    send(
                        &mut writer,
                        Message::SyncSummary {
                            session,
                            leaves,
                            keys,
                            last,
                        },
                        replication,
                    )
                    .await?;
                }
            }
            Message::SyncEntries { entries, .. } => {
                let applied = sync::apply(store, &entries);
                Replication::count(&replication.stats.entries_received, applied as u64);
            }
            Message::SyncWant {
                session,
                keys,
                last,
            } => {
                for chunk in sync::entries_for(store, &keys).chunks(CHUNK_ENTRIES) {
                    let entries = chunk.to_vec();
                    send(
                        &mut writer,
                        Message::SyncEntries {
                            session,
                            entries,
                            last: false,
                        },
                        replication,
                    )
                    .await?;
                }
                if last {
                    send(&mut writer, Message::SyncDone { session }, replication).await?;
                    replication.sync_completed(node_id, sync_start_ms);
                }
            }
            Message::Hello { .. }
            | Message::Ack { .. }
            | Message::SyncEqual { .. }
            | Message::SyncInner { .. }
            | Message::SyncSummary { .. }
            | Message::SyncDone { .. } => return Err(InboundError::Unexpected),
        }
    }
}

async fn send(
    writer: &mut Writer,
    message: Message,
    replication: &Replication,
) -> Result<(), InboundError> {
    let frame = wire::encode(message)?;
    replication
        .stats
        .sync_bytes_sent
        .fetch_add(frame.len() as u64 + 4, Ordering::Relaxed);
    writer.send(Bytes::from(frame)).await?;
    Ok(())
}
