//! Entry points for the cargo-fuzz targets in `fuzz/` (and for the
//! regression tests of what they found). Each takes raw bytes as they would
//! arrive from the network and pushes them through the functions the node
//! itself calls on that input, checking what must hold for any input: no
//! panic, bounded allocation, and replies that keep the client's framing.
//!
//! Not a stable API: it exists so fuzzing needs no wholesale `pub` of the
//! internals.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};

use bytes::BytesMut;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, PostcardCodec};
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio_util::codec::Decoder as _;

use crate::clock::{Hlc, Version};
use crate::command::transaction::{self, Transaction};
use crate::command::{After, Args, Ctx, dispatch};
use crate::config::Config;
use crate::membership::{self, Kind, MemberId};
use crate::node::{Node, NodeHandle, NodeState};
use crate::replication::framing::{FrameDecoder, READ_AHEAD_MIN};
use crate::replication::sync;
use crate::replication::wire::{self, Inbound, Message, WireError};
use crate::resp::{Decoded, Decoder, Limits, ProtocolError, Reply, Source};
use crate::server::client::ClientInfo;
use crate::store::Store;

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
            let now_ms = crate::clock::unix_millis();
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

/// The frame limit of a node with default flags (as `Replication`
/// derives it: the largest value plus room for the rest of the frame).
pub fn default_frame_limit() -> usize {
    usize::try_from(Config::default().proto_max_bulk_len)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20)
}

/// Splits a peer link's byte stream into frames with the production codec.
/// Returns the frames' payloads and the codec error that would close the
/// link (as text), if any. Panics if splitting reserves memory the peer
/// has not sent yet beyond the codec's read size and its bounded
/// read-ahead (at most as much again as has arrived, at least
/// `READ_AHEAD_MIN`).
pub fn peer_frames(input: &[u8], max_frame: usize) -> (Vec<BytesMut>, Option<String>) {
    let mut codec = FrameDecoder::new(max_frame);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    // Bytes arrive in reads of up to this size (tokio's FramedRead reads
    // into at least 8 KiB of spare capacity).
    const READ: usize = 8 * 1024;
    for chunk in input.chunks(READ) {
        buf.extend_from_slice(chunk);
        loop {
            let frame = codec.decode(&mut buf);
            assert!(
                buf.capacity() <= 2 * READ + 2 * input.len() + READ_AHEAD_MIN,
                "the codec reserved {} bytes for {} received",
                buf.capacity(),
                input.len()
            );
            match frame {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => break,
                Err(e) => return (frames, Some(e.to_string())),
            }
        }
    }
    (frames, None)
}

/// Splits a peer link's byte stream into frames (see [`peer_frames`]) and
/// decodes each as a message with the owned decoder the link task uses.
/// Returns the messages and the error that would close the link (as text),
/// if any.
pub fn peer_decode(input: &[u8], max_frame: usize) -> (Vec<Message>, Option<String>) {
    let (frames, error) = peer_frames(input, max_frame);
    let mut messages = Vec::new();
    for frame in frames {
        match wire::decode(&frame) {
            Ok(message) => messages.push(message),
            Err(e) => return (messages, Some(e.to_string())),
        }
    }
    (messages, error)
}

/// Decodes one frame's payload (what follows the length prefix).
pub fn peer_frame(payload: &[u8]) -> Result<Message, WireError> {
    wire::decode(payload)
}

/// Decodes one frame's payload as the inbound task does (Updates borrowed
/// from it), and panics unless the owned decoder, which defines the
/// format, accepts the same frame and reads the same message from it.
pub fn peer_frame_inbound(payload: &[u8]) -> Result<Inbound<'_>, WireError> {
    let inbound = wire::decode_inbound(payload);
    match (&inbound, wire::decode(payload)) {
        (Ok(Inbound::Updates(updates)), Ok(owned)) => assert_eq!(updates.to_message(), owned),
        (Ok(Inbound::Other(other)), Ok(owned)) => {
            assert!(!matches!(other, Message::Updates { .. }), "{other:?}");
            assert_eq!(*other, owned);
        }
        (Err(_), Err(_)) => {}
        (inbound, owned) => panic!("the decoders disagree: {inbound:?}, owned {owned:?}"),
    }
    inbound
}

/// Applies a frame the inbound task decoded: Updates straight from the
/// frame, as that task does, anything else as [`peer_apply`] does.
pub fn peer_apply_inbound(store: &Store, inbound: Inbound<'_>) {
    match inbound {
        Inbound::Updates(updates) => {
            sync::apply_updates(store, updates);
        }
        Inbound::Other(message) => peer_apply(store, message),
    }
}

/// Applies `message` to `store` as the node does when it arrives on a link:
/// the inbound side for what initiators send, the link side for what
/// responders send. Replies are computed and dropped.
pub fn peer_apply(store: &Store, message: Message) {
    match message {
        Message::Hello { node_id, hlc, .. } => store.clock().observe(Version { hlc, node_id }),
        Message::Updates {
            entries, truncates, ..
        } => {
            for marker in truncates {
                store.truncate(marker);
            }
            sync::apply(store, entries.iter().map(wire::WireEntry::borrowed));
        }
        Message::SyncRoot { truncated, .. } => {
            store.truncate(truncated);
            let _ = store.digest_tree().root() == 0;
            let _ = sync::inner_hashes(store);
        }
        Message::SyncLeaves { groups, .. } => {
            let (empty_there, summarize) = sync::differing_leaves(store, &groups);
            let _ = sync::entries_in(store, &empty_there, 0);
            let _ = sync::summary_of(store, &summarize);
        }
        Message::SyncEntries { entries, .. } => {
            let _ = sync::apply_and_rebut(store, &entries);
        }
        Message::SyncWant { keys, .. } => {
            let _ = sync::entries_for(store, &keys);
        }
        Message::SyncInner {
            truncated, inner, ..
        } => {
            store.truncate(truncated);
            for group in sync::differing_groups(store, &inner) {
                let _ = sync::leaf_hashes(store, usize::from(group));
            }
        }
        Message::SyncSummary { leaves, keys, .. } => {
            let theirs = keys
                .into_iter()
                .map(|kv| (kv.key, (kv.version, kv.live)))
                .collect();
            let _ = sync::plan(store, &leaves, &theirs, 0);
        }
        Message::Ack { .. }
        | Message::SyncEqual { .. }
        | Message::SyncBusy { .. }
        | Message::SyncDone { .. } => {}
    }
}

/// The peer-frames target: the input is a peer link's byte stream; every
/// frame up to the first that fails to decode (which closes the link) is
/// decoded as the inbound task does and applied to a fresh store, and a
/// local write follows (the clock must still move forward).
pub fn peer_target(data: &[u8]) {
    let (frames, _) = peer_frames(data, default_frame_limit());
    let store = Store::new(Arc::new(Hlc::new(1)));
    for frame in &frames {
        let Ok(inbound) = peer_frame_inbound(frame) else {
            break;
        };
        peer_apply_inbound(&store, inbound);
    }
    let before = store.clock().current();
    let after = store.next_version();
    assert!(
        after.hlc > before || before == u64::MAX,
        "the clock did not move forward after a peer's input"
    );
}

/// A membership node's view for the datagram target: foca configured as
/// the driver configures it, fed synchronously.
pub struct MembershipHarness {
    foca: Foca<MemberId, PostcardCodec, StdRng, NoCustomBroadcast>,
    runtime: AccumulatingRuntime<MemberId>,
    /// Sealed datagrams foca asked to send, when recording (seed corpus).
    sent: Option<Vec<(SocketAddr, Vec<u8>)>>,
    timers: Vec<foca::Timer<MemberId>>,
}

impl Default for MembershipHarness {
    fn default() -> Self {
        Self::new(1, 4000)
    }
}

impl MembershipHarness {
    /// Node `node_id` at 127.0.0.1:`peer_port` (the fuzz target is node 1
    /// at port 4000: datagrams for another identity are refused early).
    pub fn new(node_id: u64, peer_port: u16) -> Self {
        let peer = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), peer_port);
        let me = MemberId {
            node_id,
            incarnation: 1,
            name: format!("node{node_id}"),
            peer,
            client: SocketAddr::new(peer.ip(), peer_port - 1000),
        };
        Self {
            foca: Foca::new(
                me,
                membership::protocol_config(&Config::default(), 1),
                StdRng::seed_from_u64(node_id),
                PostcardCodec,
            ),
            runtime: AccumulatingRuntime::new(),
            sent: None,
            timers: Vec::new(),
        }
    }

    /// One datagram, as the driver handles it; returns whether it was
    /// accepted (a rejected one is counted as bad by the node).
    pub fn datagram(&mut self, datagram: &[u8]) -> bool {
        let accepted = match membership::open(datagram) {
            None => false,
            Some((Kind::Swim, payload)) => {
                self.foca.handle_data(payload, &mut self.runtime).is_ok()
            }
            Some((Kind::Leave, payload)) => postcard::from_bytes::<(u64, u64)>(payload).is_ok(),
        };
        self.settle();
        accepted
    }

    /// Carries out what foca asked for: sends (dropped unless recording),
    /// notifications, and timers (kept for [`Self::fire_timers`]).
    fn settle(&mut self) {
        while let Some((to, data)) = self.runtime.to_send() {
            if let Some(sent) = self.sent.as_mut() {
                let mut sealed = Vec::new();
                membership::seal(Kind::Swim, &data, &mut sealed);
                sent.push((to.peer, sealed));
            }
        }
        while self.runtime.to_notify().is_some() {}
        while let Some((_, timer)) = self.runtime.to_schedule() {
            self.timers.push(timer);
        }
    }

    /// Fires every pending timer, as if their deadlines had all passed.
    pub fn fire_timers(&mut self) {
        for timer in std::mem::take(&mut self.timers) {
            let _ = self.foca.handle_timer(timer, &mut self.runtime);
        }
        self.settle();
    }

    pub fn members(&self) -> usize {
        self.foca.num_members()
    }
}

/// Splits the membership target's input: datagrams, each preceded by its
/// length (u16, little endian; a longer length takes what is left).
pub fn split_datagrams(mut data: &[u8]) -> Vec<&[u8]> {
    let mut datagrams = Vec::new();
    while let [lo, hi, tail @ ..] = data {
        let len = usize::from(u16::from_le_bytes([*lo, *hi])).min(tail.len());
        let (datagram, rest) = tail.split_at(len);
        datagrams.push(datagram);
        data = rest;
    }
    datagrams
}

/// The membership target: a sequence of datagrams fed to one node; an
/// empty one (which the envelope refuses anyway) fires the pending timers,
/// and so does the end of the input.
pub fn membership_target(data: &[u8]) {
    let mut harness = MembershipHarness::default();
    for datagram in split_datagrams(data) {
        if datagram.is_empty() {
            harness.fire_timers();
        } else {
            harness.datagram(datagram);
        }
    }
    harness.fire_timers();
}

/// The committed seed corpus (`fuzz/seeds/<target>/seed-<name>`): real
/// requests, real frames from the wire encoder, real datagrams from a small
/// SWIM exchange. Regenerate with `make fuzz-seeds` after a format change.
pub fn seed_corpus() -> Vec<(&'static str, String, Vec<u8>)> {
    let mut seeds = Vec::new();
    for (name, bytes) in request_seeds() {
        seeds.push(("resp", name.clone(), [&[7u8][..], &bytes].concat()));
        seeds.push(("commands", name, bytes));
    }
    for (name, bytes) in frame_seeds() {
        seeds.push(("peer_frames", name, bytes));
    }
    for (name, bytes) in datagram_seeds() {
        seeds.push(("membership", name, bytes));
    }
    seeds
}

fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        out.extend(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
    out
}

fn request_seeds() -> Vec<(String, Vec<u8>)> {
    let commands: &[&[&str]] = &[
        &["PING"],
        &["SET", "k", "v", "EX", "100", "NX", "GET"],
        &["SET", "k", "v", "PXAT", "99999999999999", "KEEPTTL"],
        &["GET", "k"],
        &["MSET", "a", "1", "b", "2"],
        &["MGET", "a", "b", "c"],
        &["INCRBY", "n", "-9223372036854775808"],
        &["INCRBYFLOAT", "f", "1e308"],
        &["APPEND", "k", "tail"],
        &["SETRANGE", "k", "1048570", "xyz"],
        &["GETRANGE", "k", "-100", "9223372036854775807"],
        &["GETEX", "k", "PERSIST"],
        &["EXPIRE", "k", "-1", "GT"],
        &["PEXPIREAT", "k", "9223372036854775807", "NX"],
        &["TTL", "k"],
        &["RENAME", "a", "b"],
        &["COPY", "a", "c", "DB", "0", "REPLACE"],
        &[
            "SCAN",
            "0",
            "MATCH",
            "*a[^b-]?\\",
            "COUNT",
            "1000",
            "TYPE",
            "string",
        ],
        &["KEYS", "[z-a]*"],
        &["DEL", "a", "b", "c"],
        &["HELLO", "3", "SETNAME", "fuzz"],
        &["CLIENT", "SETNAME", "x"],
        &["CLIENT", "LIST"],
        &["COMMAND", "DOCS", "set", "get"],
        &["INFO", "all"],
        &["CONFIG", "GET", "*"],
        &["CLUSTER", "MEMBERS"],
        &["DEBUG", "DIGEST"],
        &["WAIT", "1", "0"],
        &["FLUSHALL", "ASYNC"],
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = commands
        .iter()
        .map(|cmd| {
            let args: Vec<&[u8]> = cmd.iter().map(|a| a.as_bytes()).collect();
            let name: String = cmd
                .join("-")
                .chars()
                .map(|c| match c {
                    'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => c.to_ascii_lowercase(),
                    _ => '_',
                })
                .collect();
            (name, multibulk(&args))
        })
        .collect();
    let transaction = [
        multibulk(&[b"WATCH", b"k"]),
        multibulk(&[b"MULTI"]),
        multibulk(&[b"SET", b"k", b"1"]),
        multibulk(&[b"INCR", b"k"]),
        multibulk(&[b"EXEC"]),
    ]
    .concat();
    seeds.push(("multi-exec".into(), transaction));
    seeds.push((
        "inline-quoted".into(),
        b"SET \"a b\\x41\\n\" 'it\\'s'\r\nGET \"a bA\\n\"\n".to_vec(),
    ));
    seeds.push((
        "pipeline-mixed".into(),
        [
            &b"PING\r\n\r\n*0\r\n*-1\r\n"[..],
            &multibulk(&[b"ECHO", b"\r\n\0"]),
        ]
        .concat(),
    ));
    seeds.push((
        "partial-bulk".into(),
        b"*2\r\n$3\r\nGET\r\n$100\r\nab".to_vec(),
    ));
    seeds.push(("bad-bulk-length".into(), b"*1\r\n$-5\r\n".to_vec()));
    seeds
}

fn frame(message: Message) -> Vec<u8> {
    let payload = wire::encode(message).unwrap_or_default();
    [&(payload.len() as u32).to_be_bytes()[..], &payload].concat()
}

fn frame_seeds() -> Vec<(String, Vec<u8>)> {
    let version = |hlc: u64| Version { hlc, node_id: 7 };
    let now = crate::clock::unix_millis() << 16;
    let entry = |key: &[u8], value: Option<&[u8]>, hlc: u64| wire::WireEntry {
        key: key.to_vec(),
        value: value.map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
        expires_at: 0,
        version: version(hlc),
    };
    let hello = Message::Hello {
        node_id: 7,
        incarnation: 1,
        hlc: now,
    };
    let messages = vec![
        ("hello", hello.clone()),
        (
            "updates",
            Message::Updates {
                entries: vec![entry(b"k", Some(b"v"), now), entry(b"gone", None, now + 1)],
                truncates: vec![version(now - 5)],
                last_seq: 3,
            },
        ),
        ("ack", Message::Ack { last_seq: 3 }),
        (
            "sync-root",
            Message::SyncRoot {
                session: 1,
                root: 0x1234,
                truncated: version(0),
            },
        ),
        ("sync-equal", Message::SyncEqual { session: 1 }),
        ("sync-busy", Message::SyncBusy { session: 1 }),
        (
            "sync-inner",
            Message::SyncInner {
                session: 1,
                truncated: version(0),
                inner: vec![0, 5, 0, 9],
            },
        ),
        (
            "sync-leaves",
            Message::SyncLeaves {
                session: 1,
                groups: vec![(0, vec![0; crate::store::digest::FANOUT]), (3, vec![1; 2])],
            },
        ),
        (
            "sync-summary",
            Message::SyncSummary {
                session: 1,
                leaves: vec![0, 17],
                keys: vec![wire::KeyVersion {
                    key: b"k".to_vec(),
                    version: version(now),
                    live: true,
                }],
                last: true,
            },
        ),
        (
            "sync-entries",
            Message::SyncEntries {
                session: 1,
                entries: vec![entry(b"k", Some(b"v2"), now + 2)],
                last: false,
            },
        ),
        (
            "sync-want",
            Message::SyncWant {
                session: 1,
                keys: vec![serde_bytes::ByteBuf::from(b"k".to_vec())],
                last: true,
            },
        ),
        ("sync-done", Message::SyncDone { session: 1 }),
    ];
    let mut seeds: Vec<(String, Vec<u8>)> = messages
        .iter()
        .map(|(name, m)| (name.to_string(), frame(m.clone())))
        .collect();
    // A whole link: hello, then every message in turn.
    let link = std::iter::once(frame(hello))
        .chain(messages.into_iter().map(|(_, m)| frame(m)))
        .collect::<Vec<_>>()
        .concat();
    seeds.push(("link".into(), link));
    seeds
}

fn length_prefixed(datagrams: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for d in datagrams {
        out.extend((d.len() as u16).to_le_bytes());
        out.extend(d);
    }
    out
}

/// Three SWIM nodes join through node 1 (the target's identity) and probe
/// each other for a few rounds; what reaches node 1 is kept.
fn datagram_seeds() -> Vec<(String, Vec<u8>)> {
    let mut nodes: Vec<MembershipHarness> = (1..=3)
        .map(|n| {
            let mut h = MembershipHarness::new(n, 3999 + n as u16);
            h.sent = Some(Vec::new());
            h
        })
        .collect();
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
    for node in nodes.iter_mut().skip(1) {
        let _ = node
            .foca
            .announce(MemberId::placeholder(target), &mut node.runtime);
        node.settle();
    }
    let mut received = Vec::new();
    for round in 0..6 {
        let mut in_flight = Vec::new();
        for node in nodes.iter_mut() {
            if round > 1 {
                node.fire_timers();
            }
            in_flight.extend(node.sent.as_mut().map(std::mem::take).unwrap_or_default());
        }
        for (to, datagram) in in_flight {
            let port = usize::from(to.port());
            if let Some(node) = port.checked_sub(4000).and_then(|i| nodes.get_mut(i)) {
                if port == 4000 {
                    received.push(datagram.clone());
                }
                node.datagram(&datagram);
            }
        }
    }
    let mut seeds: Vec<(String, Vec<u8>)> = received
        .iter()
        .take(24)
        .enumerate()
        .map(|(i, d)| {
            (
                format!("swim-{i:02}"),
                length_prefixed(std::slice::from_ref(d)),
            )
        })
        .collect();
    seeds.push(("swim-exchange".into(), length_prefixed(&received)));
    let mut leave = Vec::new();
    if let Ok(notice) = postcard::to_allocvec(&(2u64, 1u64)) {
        membership::seal(Kind::Leave, &notice, &mut leave);
    }
    seeds.push(("leave".into(), length_prefixed(&[leave])));
    seeds
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Change;

    #[test]
    fn seeds_reach_past_the_decoders() {
        let seeds = seed_corpus();
        let of = |target| seeds.iter().filter(move |(t, _, _)| *t == target);
        for (_, name, bytes) in of("resp") {
            let outcome = resp_decode(&bytes[1..]);
            let partial = name.starts_with("partial");
            assert!(
                partial || !outcome.commands.is_empty() || outcome.error.is_some(),
                "{name}"
            );
        }
        for (_, name, bytes) in of("peer_frames") {
            let (messages, error) = peer_decode(bytes, default_frame_limit());
            assert!(error.is_none() && !messages.is_empty(), "{name}: {error:?}");
            // The inbound decoder reads them all too, Updates borrowed.
            let (frames, _) = peer_frames(bytes, default_frame_limit());
            let mut updates = 0;
            for frame in &frames {
                let inbound = peer_frame_inbound(frame);
                assert!(inbound.is_ok(), "{name}: {inbound:?}");
                updates += usize::from(matches!(inbound, Ok(Inbound::Updates(_))));
            }
            assert_eq!(updates, usize::from(name == "updates" || name == "link"));
            peer_target(bytes);
        }
        let swim: Vec<_> = of("membership").collect();
        assert!(
            swim.len() > 10,
            "the exchange produced {} datagrams",
            swim.len()
        );
        for (_, name, bytes) in swim {
            let mut harness = MembershipHarness::default();
            let datagrams = split_datagrams(bytes);
            assert!(
                datagrams.iter().all(|d| harness.datagram(d)),
                "{name} refused"
            );
            if name == "swim-exchange" {
                assert!(harness.members() > 0, "node 1 learned no member");
            }
        }
    }

    /// Found by the peer_frames target: a 4-byte frame head declaring
    /// 172 MB made tokio-util's codec reserve all of it before a byte of
    /// the frame arrived (up to the 513 MB frame limit per link).
    #[test]
    fn a_frame_head_alone_reserves_nothing() {
        let input = include_bytes!("../fuzz/regressions/peer_frames/reserve-ahead-4-byte-head");
        // peer_decode asserts the buffer stays within what was received.
        let (messages, error) = peer_decode(input, default_frame_limit());
        assert!(messages.is_empty());
        assert_eq!(error, None, "a frame still on its way is no error");
        let (_, error) = peer_decode(&u32::MAX.to_be_bytes(), default_frame_limit());
        assert_eq!(error.as_deref(), Some("frame size too big"));
    }

    /// A peer's Hello (or entry, or FLUSHALL marker) with its HLC at
    /// u64::MAX made the next local write overflow the clock: a panic
    /// with overflow checks, and without them a clock wrapped back to wall
    /// time, issuing versions older than ones already handed out.
    #[test]
    fn a_peer_version_at_the_end_of_time_does_not_wrap_the_clock() {
        let input = include_bytes!("../fuzz/regressions/peer_frames/hello-hlc-max");
        let (messages, error) = peer_decode(input, default_frame_limit());
        assert_eq!(error, None);
        let [Message::Hello { hlc: u64::MAX, .. }] = &messages[..] else {
            panic!("{messages:?}");
        };
        peer_target(input);
        let store = Store::new(Arc::new(Hlc::new(1)));
        store.clock().observe(Version {
            hlc: u64::MAX,
            node_id: 9,
        });
        assert_eq!(store.next_version().hlc, u64::MAX);
    }

    /// The committed Updates seed was written by `wire::encode` before the
    /// push path encoded from the store's changes: that encoder must still
    /// produce it byte for byte (nodes of earlier builds read these frames).
    #[test]
    fn the_push_path_encodes_the_committed_updates_seed_byte_for_byte() {
        let seed = include_bytes!("../fuzz/seeds/peer_frames/seed-updates");
        let payload = &seed[4..];
        assert_eq!(seed[..4], (payload.len() as u32).to_be_bytes());
        let Ok(Message::Updates {
            entries,
            truncates,
            last_seq,
        }) = wire::decode(payload)
        else {
            panic!("{:?}", wire::decode(payload));
        };
        assert!(entries.iter().any(|e| e.value.is_none()) && !truncates.is_empty());
        let changes: Vec<Change> = entries
            .iter()
            .map(|e| Change::Entry {
                seq: 0,
                key: e.key.as_slice().into(),
                value: e.value.as_deref().map(|v| v[..].into()),
                expires_at: e.expires_at,
                version: e.version,
            })
            .chain(
                truncates
                    .iter()
                    .map(|&version| Change::Truncate { seq: 0, version }),
            )
            .collect();
        assert_eq!(wire::encode_updates(&changes, last_seq).unwrap(), payload);
        let Ok(Inbound::Updates(updates)) = peer_frame_inbound(payload) else {
            panic!("{:?}", peer_frame_inbound(payload));
        };
        assert_eq!(updates.entries.len(), entries.len());
    }

    #[test]
    fn frames_arriving_byte_by_byte_decode_whole() {
        let (_, _, link) = seed_corpus()
            .into_iter()
            .find(|(t, n, _)| *t == "peer_frames" && n == "link")
            .unwrap();
        let (expected, _) = peer_decode(&link, default_frame_limit());
        let mut decoder = FrameDecoder::new(default_frame_limit());
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for &byte in &link {
            buf.extend_from_slice(&[byte]);
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                got.push(wire::decode(&frame).unwrap());
            }
            assert!(buf.capacity() < 4096, "reserved {}", buf.capacity());
        }
        assert!(buf.is_empty());
        assert_eq!(got, expected);
        assert_eq!(got.len(), 13);
    }

    /// `make fuzz-seeds`: rewrites fuzz/seeds from [`seed_corpus`].
    #[test]
    #[ignore = "writes fuzz/seeds; run by make fuzz-seeds"]
    fn write_seed_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds");
        for (target, name, bytes) in seed_corpus() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
}
