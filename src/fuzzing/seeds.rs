//! The committed seed corpus of the fuzz targets.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::membership::MembershipHarness;
use crate::clock::Version;
use crate::membership::{self, Kind};
use crate::replication::wire::{self, Message};

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
    // A recent HLC, so that tombstones in the seeds count as recent.
    let now = crate::clock::Clock::system(0).wall_ms() << 16;
    let entry = |key: &[u8], value: Option<&[u8]>, hlc: u64| wire::WireEntry {
        key: key.to_vec(),
        value: value.map(|v| serde_bytes::ByteBuf::from(v.to_vec())),
        expires_at: 0,
        version: version(hlc),
        typed: None,
    };
    let typed_entry = |key: &[u8], typed: Vec<u8>, hlc: u64| wire::WireEntry {
        key: key.to_vec(),
        value: None,
        expires_at: 0,
        version: version(hlc),
        typed: Some(serde_bytes::ByteBuf::from(typed)),
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
        (
            // A hash field, a set member and a counter contribution as a
            // peer sends them, and a typed value that does not decode.
            "updates-typed",
            Message::Updates {
                entries: vec![
                    typed_entry(b"h", typed_seed(version(now)), now),
                    typed_entry(b"junk", vec![0xff; 9], now + 1),
                ],
                truncates: vec![],
                last_seq: 4,
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
                keys: vec![
                    wire::KeyVersion {
                        key: b"k".to_vec(),
                        version: version(now),
                        live: true,
                        content: 0,
                        buckets: Vec::new(),
                    },
                    // A large typed value's bucket digests, and a count no
                    // node sends (refused as such, never a panic).
                    wire::KeyVersion {
                        key: b"h".to_vec(),
                        version: version(now),
                        live: true,
                        content: 7,
                        buckets: vec![1, 2, 3, 4],
                    },
                    wire::KeyVersion {
                        key: b"s".to_vec(),
                        version: version(now),
                        live: true,
                        content: 9,
                        buckets: vec![1, 2, 3],
                    },
                ],
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
                keys: vec![
                    wire::Want {
                        key: serde_bytes::ByteBuf::from(b"k".to_vec()),
                        buckets: 0,
                        which: Vec::new(),
                    },
                    wire::Want {
                        key: serde_bytes::ByteBuf::from(b"h".to_vec()),
                        buckets: 4,
                        which: vec![1, 3, 900],
                    },
                    wire::Want {
                        key: serde_bytes::ByteBuf::from(b"s".to_vec()),
                        buckets: 3,
                        which: vec![0],
                    },
                ],
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
    let target = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 4000);
    let mut nodes: Vec<MembershipHarness> = (1..=3)
        .map(|n| {
            let port = 3999 + n as u16;
            let node = if n == 1 {
                MembershipHarness::new(n, port)
            } else {
                MembershipHarness::joining(n, port, target)
            };
            node.recording()
        })
        .collect();
    let mut received = Vec::new();
    for round in 0..6 {
        let mut in_flight = Vec::new();
        for (i, node) in nodes.iter_mut().enumerate() {
            if round > 1 {
                node.fire_timers();
            }
            let sent = node.sent.as_mut().map(std::mem::take).unwrap_or_default();
            let from = SocketAddr::new(target.ip(), 4000 + i as u16);
            in_flight.extend(sent.into_iter().map(|(to, d)| (from, to, d)));
        }
        for (from, to, datagram) in in_flight {
            let port = usize::from(to.port());
            if let Some(node) = port.checked_sub(4000).and_then(|i| nodes.get_mut(i)) {
                if port == 4000 {
                    received.push(datagram.clone());
                }
                node.datagram_from(&datagram, from);
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

/// A fragment with one of each element kind, encoded.
fn typed_seed(version: Version) -> Vec<u8> {
    use crate::store::value::{Fragment, Register};
    let mut counter = Register::new(version, Some(b"10"));
    counter.increment(7, rust_decimal::Decimal::from(3), version);
    Fragment {
        clear: Version::default(),
        expires_at: 0,
        expiry_version: version,
        string: None,
        hash: vec![
            (
                serde_bytes::ByteBuf::from(b"field".to_vec()),
                Register::new(version, Some(b"v")),
            ),
            (serde_bytes::ByteBuf::from(b"count".to_vec()), counter),
        ],
        set: vec![(
            serde_bytes::ByteBuf::from(b"member".to_vec()),
            Register::new(version, Some(b"")),
        )],
    }
    .encode()
    .into_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fuzzing::*;
    use crate::replication::wire::Inbound;

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
            let pushes = if name == "link" {
                2
            } else {
                usize::from(name.starts_with("updates"))
            };
            assert_eq!(updates, pushes, "{name}");
            peer_target(bytes);
        }
        let swim: Vec<_> = of("membership").collect();
        assert!(
            swim.len() > 10,
            "the exchange produced {} datagrams",
            swim.len()
        );
        for (_, name, bytes) in swim {
            check_datagram_seed(name, bytes);
        }
    }

    /// Every datagram of the seed reaches past the decoders of a fresh
    /// node 1, and the whole exchange teaches it members.
    fn check_datagram_seed(name: &str, bytes: &[u8]) {
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

    /// The committed datagram seeds were written by an earlier exchange;
    /// the node must still take them.
    #[test]
    fn committed_datagram_seeds_reach_past_the_decoders() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/membership");
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy();
            let name = name.strip_prefix("seed-").unwrap_or(&name).to_string();
            check_datagram_seed(&name, &std::fs::read(&path).unwrap());
            checked += 1;
        }
        assert!(checked > 10, "{checked} committed seeds");
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
