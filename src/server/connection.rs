//! One client connection: read what is available, decode every complete
//! command in the buffer, execute them in order, and send all their replies
//! in one write.
//!
//! Memory per client is bounded: the input buffer holds at most one partial
//! command (capped by the query-buffer limit), and replies are written
//! before more input is read, so a client that pipelines without reading
//! its replies is held back by TCP instead of growing our buffers. What
//! TCP cannot hold back is the replies to one read's worth of commands (a
//! few KB of `GET big` can ask for gigabytes): those are bounded by the
//! output-buffer limit, past which the client is disconnected.
//!
//! The loop is generic over the stream, so plain TCP and TLS share it and
//! the plain path is compiled for `TcpStream` alone.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

use crate::command::transaction::{self, Transaction};
use crate::command::{After, Args, Ctx, dispatch};
use crate::node::NodeState;
use crate::resp::{Decoded, Decoder, Limits, Reply, Source};
use crate::server::client::ClientInfo;
use crate::stats::Stats;

/// Read size and the capacity an idle connection keeps.
const READ_CHUNK: usize = 4 * 1024;
/// Buffers grown past this (a large request or reply) are released once
/// empty, so one big command does not pin memory for the connection's life.
const KEEP_CAPACITY: usize = 64 * 1024;
/// Most bytes reserved ahead of a large declared bulk: the rest is reserved
/// only as it arrives, so a declared length alone allocates nothing big.
const MAX_RESERVE: usize = 1024 * 1024;
/// Replies at least this big are written piece by piece, stamping the
/// client's activity at each; smaller ones go out in one write.
const LONG_WRITE: usize = 64 * 1024;

const NOAUTH: &str = "NOAUTH Authentication required.";

/// Serves one client on `stream` (plain TCP, or TLS after its handshake);
/// `laddr` and `fd` are the underlying socket's, for CLIENT LIST.
pub async fn serve<S>(
    stream: S,
    peer: SocketAddr,
    laddr: SocketAddr,
    fd: i32,
    state: Arc<NodeState>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let client = Arc::new(ClientInfo::new(
        state.clients.next_id(),
        peer,
        laddr,
        fd,
        state.shutdown.child_token(),
        &state.clock,
    ));
    state.clients.add(client.clone());
    let auth_pending = state.config.requirepass.is_some();
    let mut conn = Connection {
        auth_pending,
        stream,
        decoder: Decoder::new(Limits {
            max_bulk_len: state.config.proto_max_bulk_len,
            unauthenticated: auth_pending,
        }),
        input: BytesMut::new(),
        reply: Reply {
            limit: match state.config.client_output_buffer_limit {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            ..Reply::default()
        },
        client,
        state,
        last_write_seq: 0,
        wrote_since: false,
        tx: Transaction::default(),
    };
    if let Err(e) = conn.run().await {
        tracing::debug!(client = conn.client.id, error = %e, "client connection ended");
    }
    conn.state.clients.remove(conn.client.id);
}

struct Connection<S> {
    stream: S,
    /// True until the client authenticates when a password is required;
    /// a field so the common case costs one predictable branch per command.
    auth_pending: bool,
    decoder: Decoder,
    input: BytesMut,
    reply: Reply,
    client: Arc<ClientInfo>,
    state: Arc<NodeState>,
    /// Sequence of the change log as of this client's last write, once
    /// known (WAIT waits for peers to acknowledge it).
    last_write_seq: u64,
    /// The client wrote since `last_write_seq` was taken.
    wrote_since: bool,
    tx: Transaction,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    async fn run(&mut self) -> std::io::Result<()> {
        // Bytes the buffer must hold before decoding can make progress.
        let mut needed = 1usize;
        // One pinned future on the client's own token (a child of the
        // node's) per connection: a fresh `cancelled()` of the node's token
        // per read took its waiter lock, shared by every connection, twice
        // per request (~400 of 3,900 instructions per GET, callgrind).
        let killed = self.client.kill.clone().cancelled_owned();
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
            Stats::add(&self.state.stats.net_input_bytes, read as u64);
            if self.input.len() < needed {
                // A partial command is activity too (execute_buffered
                // stamps the others), so a slow sender is not "idle".
                self.client.touch(self.state.clock.wall_ms());
                continue;
            }
            let (mut after, mut next_needed) = self.execute_buffered();
            // WAIT and EXEC pause the pipeline: later commands run after
            // their replies.
            loop {
                match after {
                    After::Wait {
                        replicas,
                        timeout_ms,
                    } => {
                        self.flush().await?;
                        let timeout =
                            (timeout_ms > 0).then(|| std::time::Duration::from_millis(timeout_ms));
                        let Some(acked) = self.wait(replicas, timeout).await? else {
                            return Ok(());
                        };
                        self.reply.int(acked as i64);
                    }
                    After::Exec => self.exec(),
                    After::Continue | After::Close => break,
                }
                (after, next_needed) = self.execute_buffered();
            }
            needed = next_needed;
            if self.reply.overflow {
                // As Redis: no reply (the client is not reading them), the
                // queued ones are dropped and the connection closed.
                tracing::warn!(
                    client = self.client.id,
                    addr = %self.client.addr,
                    queued = self.reply.buf.len(),
                    "closing client that reached the output buffer limit"
                );
                return Ok(());
            }
            if after == After::Continue
                && self.input.len() as u64 > self.state.config.client_query_buffer_limit
            {
                tracing::warn!(
                    client = self.client.id,
                    "closing client that exceeded the query buffer limit"
                );
                self.reply
                    .error("ERR Protocol error: query buffer limit exceeded");
                self.flush().await?;
                return Ok(());
            }
            self.flush().await?;
            if after != After::Continue {
                return Ok(());
            }
            if self.input.is_empty() && self.input.capacity() > KEEP_CAPACITY {
                self.input = BytesMut::new();
            }
        }
    }

    /// Runs the queued transaction with the node to itself: the exclusive
    /// side of the gate waits for every other client's batch in progress
    /// and holds new ones back until the last queued command ran.
    fn exec(&mut self) {
        // Field borrows: the guard holds `self.state` while the other
        // fields are used (no Arc clone).
        let _alone = self.state.exec_gate.write();
        let now_ms = self.state.clock.wall_ms();
        let (queued, watched) = self.tx.take();
        let mut idle = Transaction::default();
        let mut ctx = Ctx::new(
            &self.state,
            &self.client,
            &mut self.reply,
            now_ms,
            &mut idle,
        );
        let (state, last_write_seq, wrote_since) =
            (&self.state, &mut self.last_write_seq, &mut self.wrote_since);
        transaction::run_queued(&mut ctx, queued, &watched, |ctx| {
            *wrote_since |= ctx.wrote;
            // WAIT cannot block inside a transaction: as in Redis it answers
            // with what is acknowledged already.
            if let After::Wait { .. } = std::mem::replace(&mut ctx.after, After::Continue) {
                let acked =
                    state
                        .replication
                        .acked_by(write_seq(state, last_write_seq, wrote_since));
                ctx.reply.int(acked as i64);
            }
        });
    }

    /// Executes every complete command in the input buffer. Returns what to
    /// do next and how many bytes the next command needs at least.
    fn execute_buffered(&mut self) -> (After, usize) {
        // Shared side of the transaction gate, once per batch (borrowing the
        // field: an Arc clone here would bounce its count between cores).
        let _gate = self.state.exec_gate.read();
        let now_ms = self.state.clock.wall_ms();
        let mut pos = 0;
        let mut commands = 0u64;
        let mut after = After::Continue;
        let mut needed = 1;
        self.client.touch(now_ms);
        loop {
            match self.decoder.decode(&self.input[pos..]) {
                Ok(Decoded::Command { consumed, source }) => {
                    let base: &[u8] = match source {
                        Source::Input => &self.input[pos..],
                        Source::Scratch => &self.decoder.scratch,
                    };
                    // Checked before each command (and by the reply before
                    // each value), so one reply of any size passes but a
                    // pipeline of unread ones does not.
                    if self.reply.over_limit() {
                        self.reply.overflow = true;
                        after = After::Close;
                        break;
                    }
                    let args = Args::new(base, &self.decoder.args);
                    pos += consumed;
                    commands += 1;
                    if self.auth_pending && !allowed_before_auth(args.get(0)) {
                        self.reply.error(NOAUTH);
                        continue;
                    }
                    let mut ctx = Ctx::new(
                        &self.state,
                        &self.client,
                        &mut self.reply,
                        now_ms,
                        &mut self.tx,
                    );
                    dispatch(&mut ctx, &args);
                    after = ctx.after;
                    self.wrote_since |= ctx.wrote;
                    if self.auth_pending && self.client.is_authenticated() {
                        self.auth_pending = false;
                        self.decoder.set_limits(Limits {
                            max_bulk_len: self.state.config.proto_max_bulk_len,
                            unauthenticated: false,
                        });
                    }
                    if after != After::Continue {
                        break;
                    }
                }
                Ok(Decoded::Nothing { consumed }) => pos += consumed,
                Ok(Decoded::Incomplete { min_len }) => {
                    needed = min_len;
                    break;
                }
                Err(e) => {
                    self.reply.error(&format!("ERR {e}"));
                    tracing::debug!(client = self.client.id, error = %e, "closing client after a protocol error");
                    after = After::Close;
                    break;
                }
            }
        }
        self.input.advance(pos);
        Stats::add(&self.state.stats.total_commands_processed, commands);
        (after, needed)
    }

    async fn flush(&mut self) -> std::io::Result<()> {
        if self.reply.buf.is_empty() {
            return Ok(());
        }
        // One write per batch; the flush is a no-op for TCP and pushes out
        // what TLS still holds. A client that stops reading stays here
        // until it is killed (idle timeout, shutdown).
        let (stream, buf, client, clock) = (
            &mut self.stream,
            &self.reply.buf,
            &self.client,
            &self.state.clock,
        );
        let write = async move {
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
                    client.touch(clock.wall_ms());
                }
            }
            stream.flush().await
        };
        tokio::pin!(write);
        let result = tokio::select! {
            biased;
            result = &mut write => result,
            // At shutdown the listener's drain timeout bounds the write
            // instead, so replies in flight still go out.
            _ = self.client.kill.cancelled() => if self.state.shutdown.is_cancelled() {
                write.await
            } else {
                Err(std::io::ErrorKind::TimedOut.into())
            },
        };
        Stats::add(
            &self.state.stats.net_output_bytes,
            self.reply.buf.len() as u64,
        );
        self.reply.buf.clear();
        if self.reply.buf.capacity() > KEEP_CAPACITY {
            self.reply.buf = Vec::new();
        }
        result
    }

    /// Blocks in WAIT: None if the client was killed or hung up meanwhile.
    /// A blocked client is exempt from --timeout (as in Redis), so the
    /// socket is read meanwhile to notice a client that goes away; what it
    /// pipelines is kept for after the reply, up to the buffer's capacity
    /// (then TCP holds it back).
    async fn wait(
        &mut self,
        replicas: usize,
        timeout: Option<std::time::Duration>,
    ) -> std::io::Result<Option<usize>> {
        let Self {
            stream,
            input,
            client,
            state,
            last_write_seq,
            wrote_since,
            ..
        } = self;
        let target = write_seq(state, last_write_seq, wrote_since);
        let waiting = state.replication.wait_for(target, replicas, timeout);
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
                        Ok(n) => Stats::add(&state.stats.net_input_bytes, n as u64),
                        Err(e) => {
                            client.set_blocked(false);
                            return Err(e);
                        }
                    }
                }
            }
        };
        client.set_blocked(false);
        client.touch(state.clock.wall_ms());
        Ok(acked)
    }
}

/// The change log's sequence that covers this client's writes: taken
/// afresh (after collecting what is staged) only when it wrote since.
fn write_seq(state: &NodeState, last_write_seq: &mut u64, wrote_since: &mut bool) -> u64 {
    if std::mem::take(wrote_since) {
        state.store.collect_changes();
        *last_write_seq = state.store.last_seq();
    }
    *last_write_seq
}

/// AUTH, HELLO (which can authenticate) and QUIT are the only commands an
/// unauthenticated client may run, as in Redis. Unknown commands get
/// NOAUTH too, so nothing about the node shows before authentication.
fn allowed_before_auth(name: &[u8]) -> bool {
    name.eq_ignore_ascii_case(b"auth")
        || name.eq_ignore_ascii_case(b"hello")
        || name.eq_ignore_ascii_case(b"quit")
}
