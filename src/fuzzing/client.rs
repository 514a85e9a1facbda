//! The client-side targets: the RESP decoder, and commands dispatched on an
//! in-process node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use crate::command::transaction::{self, Transaction};
use crate::command::{After, Args, Ctx, dispatch};
use crate::config::Config;
use crate::node::{Node, NodeHandle, NodeState};
use crate::resp::{Decoded, Decoder, Limits, ProtocolError, Reply, Source};
use crate::server::client::ClientInfo;

/// How one request stream decoded: the commands, then how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOutcome {
    pub commands: Vec<Vec<Vec<u8>>>,
    /// The protocol error that ended the stream, if any.
    pub error: Option<ProtocolError>,
}

/// Decodes `input` as a client's request stream with the production
/// decoder, the way the connection loop does: every complete request, until
/// more input is needed or a protocol error. Panics if the decoder breaks
/// one of the promises the connection relies on.
pub fn resp_decode(input: &[u8]) -> DecodeOutcome {
    resp_decode_chunked(input, input.len().max(1))
}

/// As [`resp_decode`], with the input arriving `chunk` bytes at a time (a
/// request split across reads must decode the same).
pub fn resp_decode_chunked(input: &[u8], chunk: usize) -> DecodeOutcome {
    let mut decoder = Decoder::new(Limits::default());
    let mut commands = Vec::new();
    let mut pos = 0;
    let mut available = 0;
    while available < input.len() {
        available = (available + chunk.max(1)).min(input.len());
        loop {
            let buf = &input[pos..available];
            match decoder.decode(buf) {
                Ok(Decoded::Command { consumed, source }) => {
                    assert!(consumed > 0 && consumed <= buf.len(), "consumed {consumed}");
                    let base: &[u8] = match source {
                        Source::Input => &buf[..consumed],
                        Source::Scratch => &decoder.scratch,
                    };
                    assert!(!decoder.args.is_empty(), "a command without arguments");
                    commands.push(
                        decoder
                            .args
                            .iter()
                            .map(|&(s, e)| base[s..e].to_vec())
                            .collect(),
                    );
                    pos += consumed;
                }
                Ok(Decoded::Nothing { consumed }) => {
                    assert!(consumed > 0 && consumed <= buf.len(), "consumed {consumed}");
                    pos += consumed;
                }
                Ok(Decoded::Incomplete { min_len }) => {
                    // The connection waits for `min_len` bytes: asking for
                    // no more than it holds would spin, and a request
                    // already whole must not wait.
                    assert!(min_len > buf.len(), "min_len {min_len} with {}", buf.len());
                    break;
                }
                Err(error) => {
                    return DecodeOutcome {
                        commands,
                        error: Some(error),
                    };
                }
            }
        }
    }
    DecodeOutcome {
        commands,
        error: None,
    }
}

/// The RESP target: decodes whole and in chunks (the first byte picks the
/// chunk size) and requires the same outcome.
pub fn resp_target(data: &[u8]) {
    let Some((&split, input)) = data.split_first() else {
        return;
    };
    let whole = resp_decode(input);
    let chunked = resp_decode_chunked(input, usize::from(split) + 1);
    assert_eq!(whole, chunked, "decoding depends on how the input is split");
}

/// An in-process node for dispatching decoded commands, started once per
/// process (bound to loopback, ports chosen by the OS).
pub struct CommandNode {
    handle: NodeHandle,
    // Drives the node's tasks; kept alive with the node.
    _runtime: tokio::runtime::Runtime,
}

impl CommandNode {
    pub fn shared() -> &'static CommandNode {
        static NODE: OnceLock<CommandNode> = OnceLock::new();
        NODE.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("tokio runtime: {e}"));
            let config = Config {
                bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
                port: 0,
                peer_port: 0,
                // Bounds what one input can make the node allocate
                // (SETRANGE, APPEND), as the flag does in production.
                proto_max_bulk_len: 1 << 20,
                ..Config::default()
            };
            let handle = runtime
                .block_on(Node::start(config))
                .unwrap_or_else(|e| panic!("node start: {e}"));
            CommandNode {
                handle,
                _runtime: runtime,
            }
        })
    }

    pub fn state(&self) -> &Arc<NodeState> {
        self.handle.state()
    }

    /// Runs every command in `input` as one client connection would and
    /// returns the reply bytes. Checks that each command produced exactly
    /// one well-formed reply. The keyspace is emptied afterwards.
    pub fn run(&self, input: &[u8]) -> Vec<u8> {
        let state = self.state();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        let client = ClientInfo::new(
            state.clients.next_id(),
            addr,
            state.client_addr,
            -1,
            tokio_util::sync::CancellationToken::new(),
            &state.clock,
        );
        let mut decoder = Decoder::new(Limits {
            max_bulk_len: state.config.proto_max_bulk_len,
            unauthenticated: false,
        });
        let mut reply = Reply::default();
        let mut tx = Transaction::default();
        let mut pos = 0;
        let mut replies = 0usize;
        // SHUTDOWN closes without a reply, as in Redis; QUIT replies first.
        let mut closed = false;
        loop {
            let now_ms = state.clock.wall_ms();
            let after = match decoder.decode(&input[pos..]) {
                Ok(Decoded::Command { consumed, source }) => {
                    let base: &[u8] = match source {
                        Source::Input => &input[pos..],
                        Source::Scratch => &decoder.scratch,
                    };
                    let args = Args::new(base, &decoder.args);
                    let mut ctx = Ctx::new(state, &client, &mut reply, now_ms, &mut tx);
                    dispatch(&mut ctx, &args);
                    pos += consumed;
                    ctx.after
                }
                Ok(Decoded::Nothing { consumed }) => {
                    pos += consumed;
                    continue;
                }
                Ok(Decoded::Incomplete { .. }) => break,
                Err(e) => {
                    reply.error(&format!("ERR {e}"));
                    replies += 1;
                    break;
                }
            };
            replies += 1;
            match after {
                After::Continue => {}
                After::Close => {
                    closed = true;
                    break;
                }
                // WAIT never blocks here: it answers with what is
                // acknowledged now, as inside a transaction.
                After::Wait { .. } => {
                    state.store.collect_changes();
                    reply.int(state.replication.acked_by(state.store.last_seq()) as i64)
                }
                After::Exec => exec(state, &client, &mut reply, &mut tx, now_ms),
            }
        }
        let count = check_replies(&reply.buf);
        if !(closed && count + 1 == replies) {
            assert_eq!(count, replies, "one reply per command");
        }
        state.store.discard_all();
        reply.buf
    }
}

/// The connection's EXEC, without the transaction gate (one client here).
fn exec(
    state: &Arc<NodeState>,
    client: &ClientInfo,
    reply: &mut Reply,
    tx: &mut Transaction,
    now_ms: u64,
) {
    let (queued, watched) = tx.take();
    let mut idle = Transaction::default();
    let mut ctx = Ctx::new(state, client, reply, now_ms, &mut idle);
    transaction::run_queued(&mut ctx, queued, &watched, |ctx| {
        if let After::Wait { .. } = std::mem::replace(&mut ctx.after, After::Continue) {
            ctx.reply.int(0);
        }
    });
}

/// Parses `buf` as a sequence of RESP2/RESP3 replies and returns how many
/// there are at top level; panics on anything a client could not parse.
pub fn check_replies(buf: &[u8]) -> usize {
    let mut pos = 0;
    let mut count = 0;
    while pos < buf.len() {
        pos = check_reply(buf, pos);
        count += 1;
    }
    count
}

fn reply_line(buf: &[u8], at: usize) -> (&[u8], usize) {
    let rest = &buf[at..];
    let Some(end) = rest.windows(2).position(|w| w == b"\r\n") else {
        panic!("reply line without CRLF at {at}");
    };
    let line = &rest[..end];
    assert!(
        !line.contains(&b'\r') && !line.contains(&b'\n'),
        "line break inside a reply line at {at}"
    );
    (line, at + end + 2)
}

fn reply_len(line: &[u8]) -> i64 {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad length {:?}", String::from_utf8_lossy(line)))
}

fn check_reply(buf: &[u8], at: usize) -> usize {
    let Some(&kind) = buf.get(at) else {
        panic!("reply cut short at {at}");
    };
    let (line, next) = reply_line(buf, at + 1);
    match kind {
        b'+' | b'-' | b':' | b',' | b'#' | b'(' | b'_' => next,
        b'$' | b'=' | b'!' => {
            let len = reply_len(line);
            if len < 0 {
                assert_eq!(kind, b'$', "negative length");
                return next;
            }
            let end = next + len as usize;
            assert!(buf.len() >= end + 2, "bulk reply cut short");
            assert_eq!(&buf[end..end + 2], b"\r\n", "bulk reply length mismatch");
            end + 2
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let len = reply_len(line);
            if len < 0 {
                assert_eq!(kind, b'*', "negative length");
                return next;
            }
            let items = if matches!(kind, b'%' | b'|') {
                len * 2
            } else {
                len
            };
            (0..items).fold(next, |pos, _| check_reply(buf, pos))
        }
        other => panic!("unknown reply type {:?} at {at}", char::from(other)),
    }
}

/// The commands target: the input is a client's request stream.
pub fn commands_target(data: &[u8]) {
    CommandNode::shared().run(data);
}
