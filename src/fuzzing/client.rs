//! The client-side targets: the RESP decoder, and commands dispatched on an
//! in-process node.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;

use crate::clients::ClientInfo;
use crate::command::Services;
use crate::config::Config;
use crate::node::{Node, NodeHandle};
use crate::resp::{Decoded, Decoder, Limits, ProtocolError, Source};
use crate::server::session::{Closing, Session, Step};

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

    pub fn services(&self) -> &Arc<Services> {
        self.handle.services()
    }

    /// Runs every command in `input` through a client session, as one
    /// connection would, and returns the reply bytes. Checks that each
    /// command produced exactly one well-formed reply. The keyspace is
    /// emptied afterwards.
    pub fn run(&self, input: &[u8]) -> Vec<u8> {
        let services = self.services();
        let addr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 1);
        let client = Arc::new(ClientInfo::new(
            services.clients.next_id(),
            addr,
            services.node.client_addr,
            -1,
            tokio_util::sync::CancellationToken::new(),
            &services.clock,
        ));
        let mut session = Session::new(services.clone(), client);
        let mut input = BytesMut::from(input);
        let mut output = Vec::new();
        let closing = loop {
            let step = session.execute(&mut input);
            output.extend_from_slice(session.output());
            session.output_sent();
            match step {
                Step::Read { .. } => break None,
                Step::Close(closing) => break Some(closing),
                // WAIT never blocks here: it answers with what is
                // acknowledged now, as inside a transaction.
                Step::Wait { seq, .. } => session.waited(services.cluster.acked_by(seq)),
            }
        };
        let count = check_replies(&output) as u64;
        let commands = session.commands();
        match closing {
            Some(Closing::ProtocolError | Closing::QueryBufferLimit) => {
                assert_eq!(count, commands + 1, "one reply per command, then the error");
            }
            // SHUTDOWN closes without a reply, as in Redis; QUIT replies.
            Some(Closing::Command) => assert!(
                count == commands || count + 1 == commands,
                "{count} replies to {commands} commands"
            ),
            Some(Closing::OutputBufferLimit) => assert_eq!(count, 0, "nothing sent"),
            None => assert_eq!(count, commands, "one reply per command"),
        }
        services.store.discard_all();
        output
    }
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
