//! The TCP side of the peer port: accepts links from peers, at most
//! `--max-peer-links` at a time, and runs each as a thin loop around its
//! [`Responder`]: read a frame, hand it over, write what it returns.
//!
//! The protocol (what to apply, what to answer) is the responder's; this
//! loop only owns the sockets.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::Replication;
use super::framing::{self, PeerError};
use super::session::{Now, Responder};
use super::wire::{self, Inbound};

pub async fn run(
    listener: TcpListener,
    replication: Arc<Replication>,
    shutdown: CancellationToken,
) {
    let mut links = JoinSet::new();
    // A permit per open link, held by its task until it ends: a stranger
    // opening connections cannot make the node hold more than this many
    // (each waits for a handshake or a Hello with buffers of its own).
    let slots = Arc::new(Semaphore::new(replication.config.max_peer_links as usize));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            Some(_) = links.join_next(), if !links.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let Ok(slot) = slots.clone().try_acquire_owned() else {
                        replication.stats.rejected_peer_links.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%peer, "refusing a peer link: --max-peer-links are open");
                        drop(stream);
                        continue;
                    };
                    let _ = stream.set_nodelay(true);
                    let replication = replication.clone();
                    let shutdown = shutdown.clone();
                    links.spawn(async move {
                        if let Err(e) = serve(stream, &replication, shutdown).await {
                            replication.count_error(&e);
                            tracing::debug!(%peer, error = %e, "inbound replication link closed");
                        }
                        drop(slot);
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
    let local = replication.local();
    let mut responder = Responder::accept(local, first)?;
    let sent = &replication.stats.sync_bytes_sent;
    loop {
        let frame = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            frame = framing::receive_frame(&mut reader) => frame?,
        };
        let Some(frame) = frame else {
            return Ok(());
        };
        match wire::decode_inbound(&frame)? {
            Inbound::Updates(updates) => {
                let now_ms = replication.clock.wall_ms();
                let ack = responder.updates(local, updates, now_ms);
                framing::send(&mut writer, ack, sent).await?;
            }
            Inbound::Other(message) => {
                let now = Now::read(&replication.clock);
                let replies = responder.handle(local, message, now)?;
                framing::send_all(&mut writer, replies, sent).await?;
            }
        }
    }
}
