//! A client session: bytes in, replies out. It decodes every complete
//! command of the input, holds the authentication gate and the MULTI
//! queue, dispatches, runs EXEC with the node to itself, and accounts for
//! the output buffer and the query buffer. It owns no socket, task or
//! clock reading of its own beyond the node's [`Clock`]: the connection
//! (`connection.rs`) reads into its input, calls [`Session::execute`],
//! writes [`Session::output`] and waits where it says so; the fuzz target
//! and the unit tests drive it the same way.
//!
//! [`Clock`]: crate::clock::Clock

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};

use crate::clients::ClientInfo;

use crate::command::{After, Args, Ctx, Services, Transaction, dispatch, run_queued};
use crate::resp::{Decoded, Decoder, Limits, Reply, Source};
use crate::stats::Stats;
use crate::store::Store;

/// Buffers grown past this (a large request or reply) are released once
/// empty, so one big command does not pin memory for the session's life.
pub const KEEP_CAPACITY: usize = 64 * 1024;

/// What the connection does once [`Session::execute`] returns. In every
/// case it first sends [`Session::output`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read more: the next command needs at least `needed` bytes of input.
    Read { needed: usize },
    /// WAIT: once `replicas` peers acknowledged the change log up to `seq`
    /// (or `timeout` passed; never, if None), hand their number to
    /// [`Session::waited`] and execute the rest of the input.
    Wait {
        seq: u64,
        replicas: usize,
        timeout: Option<Duration>,
    },
    /// Close the connection.
    Close(Closing),
}

/// Why a session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing {
    /// QUIT (after its reply) or SHUTDOWN (without one, as Redis).
    Command,
    /// Malformed input: the error is the last reply.
    ProtocolError,
    /// Unparsed input beyond `--client-query-buffer-limit`: the error is
    /// the last reply.
    QueryBufferLimit,
    /// Replies the client does not read passed the output-buffer limit:
    /// they are dropped, and nothing more is sent (Redis's close-ASAP).
    OutputBufferLimit,
}

pub struct Session {
    services: Arc<Services>,
    client: Arc<ClientInfo>,
    decoder: Decoder,
    reply: Reply,
    tx: Transaction,
    /// True until the client authenticates when a password is required;
    /// a field so the common case costs one predictable branch per command.
    auth_pending: bool,
    /// The change log's sequence as of this client's last write, once
    /// known (WAIT waits for peers to acknowledge it).
    last_write_seq: u64,
    /// The client wrote since `last_write_seq` was taken.
    wrote_since: bool,
    /// Commands executed so far.
    commands: u64,
    /// The input was malformed: the session ends after its error reply.
    decoder_failed: bool,
}

impl Session {
    pub fn new(services: Arc<Services>, client: Arc<ClientInfo>) -> Self {
        let auth_pending = services.config.requirepass.is_some();
        let decoder = Decoder::new(Limits {
            max_bulk_len: services.config.proto_max_bulk_len,
            unauthenticated: auth_pending,
        });
        let reply = Reply {
            limit: match services.config.client_output_buffer_limit {
                0 => usize::MAX,
                n => usize::try_from(n).unwrap_or(usize::MAX),
            },
            ..Reply::default()
        };
        Self {
            services,
            client,
            decoder,
            reply,
            tx: Transaction::default(),
            auth_pending,
            last_write_seq: 0,
            wrote_since: false,
            commands: 0,
            decoder_failed: false,
        }
    }

    pub fn client(&self) -> &Arc<ClientInfo> {
        &self.client
    }

    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    /// Replies waiting to be sent.
    pub fn output(&self) -> &[u8] {
        &self.reply.buf
    }

    /// The connection sent [`Self::output`].
    pub fn output_sent(&mut self) {
        self.reply.buf.clear();
        if self.reply.buf.capacity() > KEEP_CAPACITY {
            self.reply.buf = Vec::new();
        }
    }

    /// Commands executed so far.
    pub fn commands(&self) -> u64 {
        self.commands
    }

    /// Marks the client active now (bytes arrived, or part of a long reply
    /// left), so that it is not taken for idle.
    pub fn touch(&self) {
        self.client.touch(self.services.clock.wall_ms());
    }

    /// Executes every complete command at the front of `input`, consuming
    /// them, and says what the connection does next. WAIT stops the
    /// pipeline: the commands after it run once [`Self::waited`] answered.
    pub fn execute(&mut self, input: &mut BytesMut) -> Step {
        loop {
            let (after, needed) = self.execute_buffered(input);
            match after {
                After::Exec => self.exec(),
                After::Wait {
                    replicas,
                    timeout_ms,
                } => {
                    return Step::Wait {
                        seq: self.write_seq(),
                        replicas,
                        timeout: (timeout_ms > 0).then(|| Duration::from_millis(timeout_ms)),
                    };
                }
                After::Close if self.reply.overflow => return self.output_overflow(),
                After::Close if self.decoder_failed => {
                    return Step::Close(Closing::ProtocolError);
                }
                After::Close => return Step::Close(Closing::Command),
                After::Continue if self.reply.overflow => return self.output_overflow(),
                After::Continue => {
                    if input.len() as u64 > self.services.config.client_query_buffer_limit {
                        tracing::warn!(
                            client = self.client.id,
                            "closing client that exceeded the query buffer limit"
                        );
                        self.reply
                            .error("ERR Protocol error: query buffer limit exceeded");
                        return Step::Close(Closing::QueryBufferLimit);
                    }
                    return Step::Read { needed };
                }
            }
        }
    }

    /// WAIT's answer: `acked` peers acknowledged this client's writes.
    pub fn waited(&mut self, acked: usize) {
        self.client.set_blocked(false);
        self.touch();
        self.reply.int(acked as i64);
    }

    /// As Redis: no reply (the client is not reading them), the queued
    /// ones are dropped and the connection closed.
    fn output_overflow(&mut self) -> Step {
        tracing::warn!(
            client = self.client.id,
            addr = %self.client.addr,
            queued = self.reply.buf.len(),
            "closing client that reached the output buffer limit"
        );
        self.reply.buf = Vec::new();
        Step::Close(Closing::OutputBufferLimit)
    }

    fn write_seq(&mut self) -> u64 {
        covering_seq(
            &self.services.store,
            &mut self.wrote_since,
            &mut self.last_write_seq,
        )
    }

    /// Executes every complete command in `input`. Returns what to do next
    /// and how many bytes the next command needs at least.
    fn execute_buffered(&mut self, input: &mut BytesMut) -> (After, usize) {
        // Shared side of the transaction gate, once per batch (borrowing the
        // field: an Arc clone here would bounce its count between cores).
        let services = &*self.services;
        let _gate = services.exec_gate.read();
        let now_ms = services.clock.wall_ms();
        let mut pos = 0;
        let mut commands = 0u64;
        let mut after = After::Continue;
        let mut needed = 1;
        self.client.touch(now_ms);
        loop {
            match self.decoder.decode(&input[pos..]) {
                Ok(Decoded::Command { consumed, source }) => {
                    let base: &[u8] = match source {
                        Source::Input => &input[pos..],
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
                    let mut ctx = Ctx::new(
                        services,
                        &self.client,
                        &mut self.reply,
                        now_ms,
                        &mut self.tx,
                    );
                    ctx.auth_pending = self.auth_pending;
                    dispatch(&mut ctx, &args);
                    after = ctx.after;
                    self.wrote_since |= ctx.wrote;
                    if self.auth_pending && self.client.is_authenticated() {
                        self.auth_pending = false;
                        self.decoder.set_limits(Limits {
                            max_bulk_len: services.config.proto_max_bulk_len,
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
                    self.decoder_failed = true;
                    after = After::Close;
                    break;
                }
            }
        }
        input.advance(pos);
        if input.is_empty() && input.capacity() > KEEP_CAPACITY {
            *input = BytesMut::new();
        }
        self.commands += commands;
        Stats::add(&services.stats.total_commands_processed, commands);
        (after, needed)
    }

    /// Runs the queued transaction with the node to itself: the exclusive
    /// side of the gate waits for every other client's batch in progress
    /// and holds new ones back until the last queued command ran.
    fn exec(&mut self) {
        let services = &*self.services;
        let _alone = services.exec_gate.write();
        let now_ms = services.clock.wall_ms();
        let (queued, watched) = self.tx.take();
        let mut idle = Transaction::default();
        let mut ctx = Ctx::new(services, &self.client, &mut self.reply, now_ms, &mut idle);
        let (wrote_since, last_write_seq) = (&mut self.wrote_since, &mut self.last_write_seq);
        run_queued(&mut ctx, queued, &watched, |ctx| {
            *wrote_since |= ctx.wrote;
            // WAIT cannot block inside a transaction: as in Redis it answers
            // with what is acknowledged already.
            if let After::Wait { .. } = std::mem::replace(&mut ctx.after, After::Continue) {
                let seq = covering_seq(ctx.store(), wrote_since, last_write_seq);
                let acked = ctx.services.cluster.acked_by(seq);
                ctx.reply.int(acked as i64);
            }
        });
    }
}

/// The change log's sequence that covers a client's writes (`last`), taken
/// afresh, after collecting what is staged, only when it `wrote_since`.
fn covering_seq(store: &Store, wrote_since: &mut bool, last: &mut u64) -> u64 {
    if std::mem::take(wrote_since) {
        store.collect_changes();
        *last = store.last_seq();
    }
    *last
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::pin::Pin;

    use super::*;
    use crate::clients::Registry;
    use crate::clock::Clock;
    use crate::command::{COMMANDS, ClusterView, NodeInfo};
    use crate::config::Config;
    use crate::info::InfoRegistry;
    use crate::membership::MemberView;
    use crate::stats::Stats;

    /// A cluster of one: no peer ever acknowledges anything.
    struct Alone;

    impl ClusterView for Alone {
        fn acked_by(&self, _seq: u64) -> usize {
            0
        }

        fn wait_for(
            &self,
            _seq: u64,
            _wanted: usize,
            _timeout: Option<Duration>,
        ) -> Pin<Box<dyn std::future::Future<Output = usize> + Send + '_>> {
            Box::pin(std::future::ready(0))
        }

        fn members(&self) -> Arc<Vec<MemberView>> {
            Arc::new(Vec::new())
        }
    }

    fn session(config: Config) -> Session {
        let clock = Clock::system(1);
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        let services = Arc::new(Services {
            store: Arc::new(Store::new(clock.clone())),
            cluster: Arc::new(Alone),
            info: InfoRegistry::default(),
            clients: Registry::new(|i| COMMANDS.get(i).name),
            node: NodeInfo {
                name: "test".into(),
                node_id: 1,
                run_id: "0".repeat(40),
                client_addr: addr,
                tls_addr: None,
                peer_addr: addr,
                started: clock.now(),
            },
            clock,
            stats: Arc::new(Stats::default()),
            shutdown: tokio_util::sync::CancellationToken::new(),
            exec_gate: parking_lot::RwLock::new(()),
            tunables: Default::default(),
            config,
        });
        let client = Arc::new(ClientInfo::new(
            1,
            addr,
            addr,
            -1,
            tokio_util::sync::CancellationToken::new(),
            &services.clock,
        ));
        Session::new(services, client)
    }

    /// Feeds `input` in pieces of `piece` bytes, as reads would bring it;
    /// returns everything the session answered and its last step.
    fn run(session: &mut Session, input: &[u8], piece: usize) -> (Vec<u8>, Step) {
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut step = Step::Read { needed: 1 };
        for chunk in input.chunks(piece.max(1)) {
            buf.extend_from_slice(chunk);
            loop {
                step = session.execute(&mut buf);
                out.extend_from_slice(session.output());
                session.output_sent();
                match step {
                    Step::Wait { .. } => session.waited(0),
                    Step::Read { .. } | Step::Close(_) => break,
                }
            }
            if let Step::Close(_) = step {
                break;
            }
        }
        (out, step)
    }

    #[test]
    fn a_pipeline_answers_the_same_however_it_is_split() {
        let input = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv1\r\nGET k\r\nMULTI\r\nINCR n\r\n\
                      UNWATCH\r\nEXEC\r\nWAIT 1 0\r\nECHO \"a b\"\r\n";
        let expected = b"+OK\r\n$2\r\nv1\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:1\r\n+OK\r\n\
                         :0\r\n$3\r\na b\r\n";
        for piece in [input.len(), 1, 2, 7, 13] {
            let (out, step) = run(&mut session(Config::default()), input, piece);
            assert_eq!(
                String::from_utf8_lossy(&out),
                String::from_utf8_lossy(expected),
                "pieces of {piece}"
            );
            assert_eq!(step, Step::Read { needed: 1 });
        }
    }

    #[test]
    fn only_no_auth_commands_run_before_authentication() {
        let config = Config {
            requirepass: Some("pw".parse().unwrap()),
            ..Config::default()
        };
        let mut s = session(config);
        let (out, _) = run(
            &mut s,
            b"GET k\r\nNOSUCH\r\nAUTH pw\r\nGET k\r\nQUIT\r\n",
            64,
        );
        assert_eq!(
            String::from_utf8_lossy(&out),
            "-NOAUTH Authentication required.\r\n-NOAUTH Authentication required.\r\n\
             +OK\r\n$-1\r\n+OK\r\n"
        );
        let mut s = session(Config {
            requirepass: Some("pw".parse().unwrap()),
            ..Config::default()
        });
        let (out, step) = run(&mut s, b"QUIT\r\n", 64);
        assert_eq!(
            (&out[..], step),
            (&b"+OK\r\n"[..], Step::Close(Closing::Command))
        );
    }

    #[test]
    fn wait_stops_the_pipeline_until_it_is_answered() {
        let mut s = session(Config::default());
        let mut buf = BytesMut::from(&b"SET k v\r\nWAIT 2 100\r\nGET k\r\n"[..]);
        let step = s.execute(&mut buf);
        assert_eq!(
            step,
            Step::Wait {
                seq: 0,
                replicas: 2,
                timeout: Some(Duration::from_millis(100))
            },
            "the change log is empty: a lone node stages nothing"
        );
        assert_eq!(s.output(), b"+OK\r\n", "GET waits for WAIT's reply");
        s.waited(0);
        assert_eq!(s.execute(&mut buf), Step::Read { needed: 1 });
        assert_eq!(s.output(), b"+OK\r\n:0\r\n$1\r\nv\r\n");
    }

    #[test]
    fn protocol_errors_and_the_buffer_limits_close_the_session() {
        let (out, step) = run(&mut session(Config::default()), b"PING\r\n*abc\r\n", 64);
        assert_eq!(step, Step::Close(Closing::ProtocolError));
        assert!(out.starts_with(b"+PONG\r\n-ERR Protocol error"), "{out:?}");

        let small = Config {
            client_query_buffer_limit: 16,
            ..Config::default()
        };
        let (out, step) = run(&mut session(small), b"*2\r\n$3\r\nGET\r\n$100\r\nab", 64);
        assert_eq!(step, Step::Close(Closing::QueryBufferLimit));
        assert_eq!(out, b"-ERR Protocol error: query buffer limit exceeded\r\n");

        let tiny_output = Config {
            client_output_buffer_limit: 64,
            ..Config::default()
        };
        let mut s = session(tiny_output);
        let big = format!("SET big {}\r\n", "x".repeat(100));
        let (out, _) = run(&mut s, big.as_bytes(), 4096);
        assert_eq!(out, b"+OK\r\n");
        let (out, step) = run(&mut s, &b"GET big\r\n".repeat(3), 4096);
        assert_eq!(step, Step::Close(Closing::OutputBufferLimit));
        assert!(out.is_empty(), "unread replies are dropped, not sent");
    }

    #[test]
    fn commands_are_counted_for_the_node() {
        let mut s = session(Config::default());
        run(&mut s, b"PING\r\nPING\r\n\r\nPING\r\n", 3);
        assert_eq!(s.commands(), 3);
        assert_eq!(Stats::get(&s.services().stats.total_commands_processed), 3);
    }
}
