//! One client connection: the thin loop around a [`Session`]. It reads
//! what is available, hands it to the session, writes all the replies in
//! one go, and waits where the session says so (WAIT). The protocol logic
//! — decoding, authentication, MULTI, dispatch, buffer limits — is the
//! session's.
//!
//! Memory per client is bounded: the input buffer holds at most one partial
//! command (capped by the query-buffer limit), and replies are written
//! before more input is read, so a client that pipelines without reading
//! its replies is held back by TCP instead of growing our buffers. What
//! TCP cannot hold back is the replies to one read's worth of commands (a
//! few KB of `GET big` can ask for gigabytes): those are bounded by the
//! output-buffer limit, past which the session closes the client.
//!
//! The loop is generic over the stream, so plain TCP and TLS share it and
//! the plain path is compiled for `TcpStream` alone.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use super::session::{Session, Step};
use crate::clients::ClientInfo;
use crate::command::Services;
use crate::stats::Stats;

/// Read size and the capacity an idle connection keeps.
const READ_CHUNK: usize = 4 * 1024;
/// Most bytes reserved ahead of a large declared bulk: the rest is reserved
/// only as it arrives, so a declared length alone allocates nothing big.
const MAX_RESERVE: usize = 1024 * 1024;
/// Replies at least this big are written piece by piece, stamping the
/// client's activity at each; smaller ones go out in one write.
const LONG_WRITE: usize = 64 * 1024;

/// Serves one client on `stream` (plain TCP, or TLS after its handshake);
/// `laddr` and `fd` are the underlying socket's, for CLIENT LIST.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    laddr: SocketAddr,
    fd: i32,
    services: Arc<Services>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let client = Arc::new(ClientInfo::new(
        services.clients.next_id(),
        peer,
        laddr,
        fd,
        services.shutdown.child_token(),
        &services.clock,
    ));
    services.clients.add(client.clone());
    let mut conn = Connection {
        stream,
        input: BytesMut::new(),
        session: Session::new(services.clone(), client.clone()),
    };
    if let Err(e) = conn.run().await {
        tracing::debug!(client = client.id, error = %e, "client connection ended");
    }
    services.clients.remove(client.id);
}

struct Connection<S> {
    stream: S,
    input: BytesMut,
    session: Session,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn run(&mut self) -> std::io::Result<()> {
        // Bytes the buffer must hold before decoding can make progress.
        let mut needed = 1usize;
        // One pinned future on the client's own token (a child of the
        // node's) per connection: a fresh `cancelled()` of the node's token
        // per read took its waiter lock, shared by every connection, twice
        // per request (~400 of 3,900 instructions per GET, callgrind).
        let killed = self.session.client().kill.clone().cancelled_owned();
        tokio::pin!(killed);
        loop {
            let spare = self.input.capacity() - self.input.len();
            if spare < READ_CHUNK / 2 {
                let ahead = needed
                    .saturating_sub(self.input.len())
                    .clamp(READ_CHUNK, MAX_RESERVE);
                self.input.reserve(ahead);
            }
            let read = tokio::select! {
                biased;
                _ = &mut killed => return Ok(()),
                read = tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.input) => read?,
            };
            if read == 0 {
                return Ok(());
            }
            Stats::add(&self.session.services().stats.net_input_bytes, read as u64);
            if self.input.len() < needed {
                // A partial command is activity too (the session stamps
                // the others), so a slow sender is not "idle".
                self.session.touch();
                continue;
            }
            loop {
                match self.session.execute(&mut self.input) {
                    Step::Read { needed: next } => {
                        needed = next;
                        break;
                    }
                    Step::Close(_) => {
                        self.flush().await?;
                        return Ok(());
                    }
                    Step::Wait {
                        seq,
                        replicas,
                        timeout,
                    } => {
                        // WAIT pauses the pipeline: the replies so far go
                        // out first, later commands run after its reply.
                        self.flush().await?;
                        let Some(acked) = self.wait(seq, replicas, timeout).await? else {
                            return Ok(());
                        };
                        self.session.waited(acked);
                    }
                }
            }
            self.flush().await?;
        }
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        let Self {
            stream, session, ..
        } = self;
        let buf = session.output();
        if buf.is_empty() {
            return Ok(());
        }
        // One write per batch; the flush is a no-op for TCP and pushes out
        // what TLS still holds. A client that stops reading stays here
        // until it is killed (idle timeout, shutdown).
        let write = async {
            if buf.len() < LONG_WRITE {
                stream.write_all(buf).await?;
            } else {
                // Every partial write of a big reply is activity (as
                // Redis's writeToClient), so a client reading a long reply
                // slowly but steadily is not taken for idle.
                let mut written = 0;
                while written < buf.len() {
                    match stream.write(&buf[written..]).await? {
                        0 => return Err(std::io::ErrorKind::WriteZero.into()),
                        n => written += n,
                    }
                    session.touch();
                }
            }
            stream.flush().await
        };
        tokio::pin!(write);
        let services = session.services();
        let result = tokio::select! {
            biased;
            result = &mut write => result,
            // At shutdown the listener's drain timeout bounds the write
            // instead, so replies in flight still go out.
            _ = session.client().kill.cancelled() => if services.shutdown.is_cancelled() {
                write.await
            } else {
                Err(std::io::ErrorKind::TimedOut.into())
            },
        };
        Stats::add(&services.stats.net_output_bytes, buf.len() as u64);
        self.session.output_sent();
        result
    }

    /// Blocks in WAIT: None if the client was killed or hung up meanwhile.
    /// A blocked client is exempt from --timeout (as in Redis), so the
    /// socket is read meanwhile to notice a client that goes away; what it
    /// pipelines is kept for after the reply, up to the buffer's capacity
    /// (then TCP holds it back).
    async fn wait(
        &mut self,
        seq: u64,
        replicas: usize,
        timeout: Option<Duration>,
    ) -> std::io::Result<Option<usize>> {
        let Self {
            stream,
            input,
            session,
        } = self;
        let (client, services) = (session.client(), session.services());
        let waiting = services.cluster.wait_for(seq, replicas, timeout);
        tokio::pin!(waiting);
        client.set_blocked(true);
        let acked = loop {
            tokio::select! {
                _ = client.kill.cancelled() => break None,
                n = &mut waiting => break Some(n),
                read = tokio::io::AsyncReadExt::read_buf(&mut *stream, &mut *input),
                    if input.capacity() > input.len() =>
                {
                    match read {
                        Ok(0) => break None,
                        Ok(n) => Stats::add(&services.stats.net_input_bytes, n as u64),
                        Err(e) => {
                            client.set_blocked(false);
                            return Err(e);
                        }
                    }
                }
            }
        };
        if acked.is_none() {
            client.set_blocked(false);
        }
        Ok(acked)
    }
}
