//! The TCP side of the peer port: accepts links from peers, applies their
//! pushed updates (acknowledging each batch) and answers the
//! reconciliations they start.

use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::framing::{self, PeerError};
use super::wire::{self, CHUNK_ENTRIES, Inbound, KeyVersion, Message, WireEntry};
use super::{Replication, sync};
use crate::clock::Version;

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
                            replication.count_error(&e);
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

async fn serve(
    stream: TcpStream,
    replication: &Arc<Replication>,
    shutdown: CancellationToken,
) -> Result<(), PeerError> {
    let keyring = replication.keyring.as_deref();
    let accepted = tokio::select! {
        _ = shutdown.cancelled() => return Ok(()),
        accepted = framing::accept(stream, replication.frame_limit(), keyring) => accepted?,
    };
    let Some((mut reader, mut writer, first)) = accepted else {
        return Ok(());
    };
    let Message::Hello { node_id, hlc, .. } = first else {
        return Err(PeerError::NoHello);
    };
    replication.clock.hlc().observe(Version { hlc, node_id });
    let sent = &replication.stats.sync_bytes_sent;
    // When the reconciliation the peer is running with us started.
    let mut sync_start_ms = 0;
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            frame = framing::receive_frame(&mut reader) => frame?,
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        let store = &replication.store;
        let message = match wire::decode_inbound(&frame)? {
            Inbound::Updates(updates) => {
                let ack = Message::Ack {
                    last_seq: updates.last_seq,
                };
                let applied = sync::apply_updates(store, updates);
                Replication::count(&replication.stats.entries_received, applied as u64);
                framing::send(&mut writer, ack, sent).await?;
                continue;
            }
            Inbound::Other(message) => message,
        };
        match message {
            Message::SyncRoot {
                session,
                root,
                truncated,
            } => {
                replication.before_sync();
                sync_start_ms = replication.clock.wall_ms();
                store.truncate(truncated);
                let equal = root == store.digest_tree().root() && truncated == store.truncated();
                let reply = if !equal && replication.pulling_initial_copy() {
                    // We are pulling our first copy from a peer; being sent
                    // another full copy now would only double the work.
                    Message::SyncBusy { session }
                } else if equal {
                    replication.sync_completed(node_id, sync_start_ms);
                    Message::SyncEqual { session }
                } else {
                    Message::SyncInner {
                        session,
                        truncated: store.truncated(),
                        inner: sync::inner_hashes(store),
                    }
                };
                framing::send(&mut writer, reply, sent).await?;
            }
            Message::SyncLeaves { session, groups } => {
                let (empty_there, summarize) = sync::differing_leaves(store, &groups);
                // Leaves the initiator holds nothing in: whole entries, no
                // summary round trip (this is how a joining node fills up).
                let whole =
                    sync::entries_in(store, &empty_there, replication.recent_tombstones_since());
                framing::send_entries(&mut writer, session, &whole, sent).await?;
                let summary = sync::summary_of(store, &summarize);
                // Leaves the initiator holds nothing in are covered by the
                // whole entries above; it has nothing there to push back.
                let mut leaves = summarize;
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
                    let message = Message::SyncSummary {
                        session,
                        leaves,
                        keys,
                        last,
                    };
                    framing::send(&mut writer, message, sent).await?;
                }
            }
            Message::SyncEntries { entries, .. } => {
                let applied = sync::apply(store, entries.iter().map(WireEntry::borrowed));
                Replication::count(&replication.stats.entries_received, applied as u64);
            }
            Message::SyncWant {
                session,
                keys,
                last,
            } => {
                let wanted = sync::entries_for(store, &keys);
                framing::send_entries(&mut writer, session, &wanted, sent).await?;
                if last {
                    framing::send(&mut writer, Message::SyncDone { session }, sent).await?;
                    replication.sync_completed(node_id, sync_start_ms);
                }
            }
            // Updates come as Inbound::Updates (decode_inbound never hands
            // them over owned).
            Message::Hello { .. }
            | Message::Updates { .. }
            | Message::Ack { .. }
            | Message::SyncEqual { .. }
            | Message::SyncBusy { .. }
            | Message::SyncInner { .. }
            | Message::SyncSummary { .. }
            | Message::SyncDone { .. } => return Err(PeerError::Unexpected),
        }
    }
}
