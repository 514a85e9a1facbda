//! The cluster key (`--cluster-key`) on the peer port, with nodes started
//! in-process on 127.0.0.1 and real UDP and TCP: keyed nodes form a cluster
//! and replicate; nodes with another key or none can neither join nor
//! inject writes; the key is rotated by rolling restarts without downtime;
//! replayed and reflected datagrams are refused; hostile datagrams and
//! frames sent to a keyed node are dropped, counted and change nothing;
//! inbound links past `--max-peer-links` are closed and counted.
//!
//! Assertions poll (`eventually_ok`) with deadlines far above what an idle
//! machine needs. Datagrams sent from one socket to another arrive in order
//! on loopback, so a "marker" datagram that is sure to be counted tells
//! when everything sent before it has been handled.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::cluster::{self, wait_ready};
use common::wall_ms;
use common::{
    closed_by_server, cluster_members, eventually_ok, info_field, patient_client_at, restart_at,
    start_node_with, used_memory,
};
use kriminodb::clock::Version;
use kriminodb::crypto::{Keyring, LINK_NONCE_LEN, link_nonce};
use kriminodb::membership::{ANY_RECEIVER, Kind, SealedHeader, seal, seal_keyed};
use kriminodb::replication::wire::{self, Message, WireEntry};
use kriminodb::{Config, NodeHandle};
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

const CONVERGE: Duration = Duration::from_secs(30);
const KEY: &str = "the first cluster key, 32 bytes.";
const NEW_KEY: &str = "the second cluster key, rotated!";
const WRONG_KEY: &str = "not this cluster's key at all...";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// A node named `name` on free ports with fast timings and `key`.
fn config(name: &str, key: Option<&str>) -> Config {
    Config {
        cluster_key: key.map(Into::into),
        ..common::fast_config(name)
    }
}

fn joining(name: &str, key: Option<&str>, seed: &NodeHandle) -> Config {
    cluster::joining(config(name, key), seed)
}

fn keyring(key: &str) -> Keyring {
    Keyring::new(key.as_bytes(), None).unwrap()
}

async fn start_cluster(n: usize, key: Option<&str>) -> Vec<NodeHandle> {
    cluster::start_ready_cluster(n, |name| config(name, key)).await
}

async fn client(node: &NodeHandle) -> MultiplexedConnection {
    patient_client_at(node.client_addr()).await
}

async fn set(con: &mut MultiplexedConnection, key: &str, value: &str) {
    let _: () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(con)
        .await
        .unwrap();
}

async fn get(con: &mut MultiplexedConnection, key: &str) -> Option<String> {
    redis::cmd("GET").arg(key).query_async(con).await.unwrap()
}

async fn digest(con: &mut MultiplexedConnection) -> String {
    redis::cmd("DEBUG")
        .arg("DIGEST")
        .query_async(con)
        .await
        .unwrap()
}

/// Ok when `key` has `value` on every node.
async fn everywhere(nodes: &[&NodeHandle], key: &str, value: &str) -> Result<(), String> {
    for node in nodes {
        let seen = get(&mut client(node).await, key).await;
        if seen.as_deref() != Some(value) {
            return Err(format!("{} has {key} = {seen:?}", node.name()));
        }
    }
    Ok(())
}

/// Writes `key` on `from` and waits until every node in `nodes` has it.
async fn replicates(from: &NodeHandle, nodes: &[&NodeHandle], key: &str, value: &str) {
    set(&mut client(from).await, key, value).await;
    let arrived = eventually_ok(CONVERGE, || everywhere(nodes, key, value)).await;
    arrived.unwrap_or_else(|e| panic!("{key} written on {} does not arrive: {e}", from.name()));
}

/// Membership and replication authentication failures of a node.
fn auth_failures(node: &NodeHandle) -> (u64, u64) {
    let tcp = &node.replication().stats.auth_failures;
    (
        node.membership().auth_failures(),
        tcp.load(std::sync::atomic::Ordering::Relaxed),
    )
}

fn tcp_auth_failures(node: &NodeHandle) -> u64 {
    auth_failures(node).1
}

fn bad_frames(node: &NodeHandle) -> u64 {
    let bad = &node.replication().stats.bad_frames;
    bad.load(std::sync::atomic::Ordering::Relaxed)
}

/// CLUSTER MEMBERS without the ever-changing "last heard" ages.
async fn members(node: &NodeHandle) -> Vec<(String, String, String, i64)> {
    let mut rows: Vec<_> = cluster_members(&mut client(node).await)
        .await
        .into_iter()
        .map(|m| (m.name, m.node_id, m.state, m.incarnation))
        .collect();
    rows.sort();
    rows
}

async fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

async fn recv(socket: &UdpSocket) -> Vec<u8> {
    let mut buf = vec![0u8; 65536];
    let (len, _) = tokio::time::timeout(CONVERGE, socket.recv_from(&mut buf))
        .await
        .expect("a datagram arrives")
        .unwrap();
    buf.truncate(len);
    buf
}

/// Waits until `read` reaches `at_least`, then checks it is exactly that.
async fn counted(what: &str, at_least: u64, read: impl Fn() -> u64) {
    let reached = eventually_ok(CONVERGE, || {
        let n = read();
        std::future::ready(if n >= at_least {
            Ok(())
        } else {
            Err(format!("{what} is {n}, want {at_least}"))
        })
    })
    .await;
    reached.unwrap();
    assert_eq!(read(), at_least, "{what} counted more than expected");
}

// ---------------------------------------------------------------------------
// Keyed clusters.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_keyed_nodes_form_a_cluster_and_replicate() {
    let nodes = start_cluster(3, Some(KEY)).await;
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    for (i, node) in nodes.iter().enumerate() {
        replicates(node, &all, &format!("k{i}"), &format!("v{i}")).await;
    }
    let mut con = client(&nodes[0]).await;
    let acked: i64 = redis::cmd("WAIT")
        .arg(2)
        .arg(5000)
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(acked, 2, "both peers acknowledge over sealed links");
    for node in &nodes {
        assert_eq!(auth_failures(node), (0, 0), "{}", node.name());
        assert_eq!(node.membership().replayed_packets(), 0, "{}", node.name());
    }
    let mut con = client(&nodes[1]).await;
    for (section, field) in [
        ("membership", "auth_failures"),
        ("membership", "replayed_packets"),
        ("replication", "auth_failures"),
    ] {
        let value = info_field(&mut con, section, field).await;
        assert_eq!(value.as_deref(), Some("0"), "INFO {section} {field}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_another_key_or_none_cannot_join_a_keyed_cluster() {
    let nodes = start_cluster(2, Some(KEY)).await;
    let (seed, other) = (&nodes[0], &nodes[1]);
    let before = members(seed).await;
    let wrong = start_node_with(joining("wrong", Some(WRONG_KEY), seed)).await;
    let keyless = start_node_with(joining("keyless", None, seed)).await;
    // Both keep announcing (with backoff); let the seed refuse several.
    counted_at_least(seed, 6).await;
    for stranger in [&wrong, &keyless] {
        set(
            &mut client(stranger).await,
            "from-stranger",
            stranger.name(),
        )
        .await;
    }
    // A write that the cluster does replicate, after the strangers' ones.
    replicates(seed, &[seed, other], "after", "1").await;
    assert_eq!(members(seed).await, before, "the seed let a stranger in");
    assert_eq!(members(other).await, before);
    for stranger in [&wrong, &keyless] {
        let seen = stranger.membership().members();
        assert_eq!(seen.len(), 1, "{} sees {seen:?}", stranger.name());
        assert_eq!(stranger.replication().connected_peers(), 0);
    }
    for node in [seed, other] {
        assert_eq!(get(&mut client(node).await, "from-stranger").await, None);
        assert_eq!(tcp_auth_failures(node), 0, "no stranger got as far as TCP");
    }
    // The cluster never answers what it cannot authenticate: the node
    // without a key never even saw a sealed datagram.
    assert_eq!(keyless.membership().bad_packets(), 0);
}

async fn counted_at_least(node: &NodeHandle, n: u64) {
    let refused = eventually_ok(CONVERGE, || {
        let seen = node.membership().auth_failures();
        std::future::ready(if seen >= n {
            Ok(())
        } else {
            Err(format!("{} refused {seen} datagrams", node.name()))
        })
    })
    .await;
    refused.unwrap();
}

// ---------------------------------------------------------------------------
// Raw peer links: handshakes by hand.

fn framed(body: &[u8]) -> Vec<u8> {
    let mut out = u32::try_from(body.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

fn handshake_frame(nonce: &[u8; LINK_NONCE_LEN]) -> Vec<u8> {
    let mut body = b"KRLH\x01".to_vec();
    body.extend_from_slice(nonce);
    framed(&body)
}

async fn read_frame(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let read = async {
        let mut len = [0u8; 4];
        stream.read_exact(&mut len).await.ok()?;
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        stream.read_exact(&mut body).await.ok()?;
        Some(body)
    };
    tokio::time::timeout(CONVERGE, read).await.ok().flatten()
}

/// Waits until the node closes `stream`.
async fn closed(mut stream: TcpStream) {
    assert!(
        closed_by_server(&mut stream, CONVERGE).await,
        "the node closes the link"
    );
}

fn hello() -> Vec<u8> {
    wire::encode(Message::Hello {
        node_id: 4242,
        incarnation: 1,
        hlc: 0,
    })
    .unwrap()
}

fn inject(key: &str) -> Vec<u8> {
    wire::encode(Message::Updates {
        entries: vec![WireEntry {
            key: key.as_bytes().to_vec(),
            value: Some(serde_bytes::ByteBuf::from(b"injected".to_vec())),
            expires_at: 0,
            version: Version {
                hlc: wall_ms() << 16,
                node_id: 4242,
            },
            typed: None,
        }],
        truncates: vec![],
        last_seq: 1,
    })
    .unwrap()
}

/// Opens a link to `peer` as a node with `key` would: handshake, then a
/// sealed Hello and a sealed Updates frame carrying `key_written`. Returns
/// the stream and, if the node answered, the Ack it sent.
async fn keyed_link(
    peer: SocketAddr,
    key: &str,
    key_written: &str,
) -> (TcpStream, Option<Message>) {
    let mut stream = TcpStream::connect(peer).await.unwrap();
    let ours = link_nonce();
    stream.write_all(&handshake_frame(&ours)).await.unwrap();
    let theirs = read_frame(&mut stream).await.expect("the node's handshake");
    assert_eq!(&theirs[..5], b"KRLH\x01");
    let (mut sealer, mut opener) = keyring(key).initiator_session(&ours, &theirs[5..]);
    let mut out = framed(&sealer.seal(&hello()).unwrap());
    out.extend(framed(&sealer.seal(&inject(key_written)).unwrap()));
    let _ = stream.write_all(&out).await;
    let reply = match read_frame(&mut stream).await {
        Some(frame) => {
            let mut frame = bytes::BytesMut::from(&frame[..]);
            opener.open(&mut frame).expect("the reply is sealed for us");
            Some(wire::decode(&frame).unwrap())
        }
        None => None,
    };
    (stream, reply)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_cannot_be_injected_over_tcp_without_the_key() {
    let node = start_node_with(config("n1", Some(KEY))).await;
    let peer = node.peer_addr();
    let mut con = client(&node).await;
    set(&mut con, "k", "v").await;
    let before = digest(&mut con).await;

    // As a node without a key: a plaintext Hello and Updates.
    let mut stream = TcpStream::connect(peer).await.unwrap();
    let mut plain = framed(&hello());
    plain.extend(framed(&inject("no-key")));
    let _ = stream.write_all(&plain).await;
    closed(stream).await;
    counted("auth_failures", 1, || tcp_auth_failures(&node)).await;

    // As a node with another key: a correct handshake, frames sealed
    // under the wrong key.
    let (stream, reply) = keyed_link(peer, WRONG_KEY, "wrong-key").await;
    assert_eq!(reply, None, "the node answered a stranger");
    closed(stream).await;
    counted("auth_failures", 2, || tcp_auth_failures(&node)).await;
    assert_eq!(get(&mut con, "no-key").await, None);
    assert_eq!(get(&mut con, "wrong-key").await, None);
    assert_eq!(digest(&mut con).await, before);

    // The same by-hand link with the right key does write: the refusals
    // above are the key's doing, not the harness's.
    let (_stream, reply) = keyed_link(peer, KEY, "right-key").await;
    assert_eq!(reply, Some(Message::Ack { last_seq: 1 }));
    assert_eq!(
        get(&mut con, "right-key").await.as_deref(),
        Some("injected")
    );
    assert_eq!(tcp_auth_failures(&node), 2);
}

/// Opens `links` connections to `node`'s peer port, each sending only a
/// frame head that declares a ~513 MB frame (within the default frame
/// limit), and holds them until the node closes every one. Returns the
/// most `used_memory` grew meanwhile.
async fn hold_huge_frame_heads(node: &NodeHandle, links: usize) -> u64 {
    let mut con = client(node).await;
    let before = used_memory(&mut con).await;
    let mut streams = Vec::new();
    for _ in 0..links {
        let mut stream = TcpStream::connect(node.peer_addr()).await.unwrap();
        stream
            .write_all(&0x2010_0000u32.to_be_bytes())
            .await
            .unwrap();
        streams.push(stream);
    }
    let all_closed = async {
        for stream in streams {
            closed(stream).await;
        }
    };
    tokio::pin!(all_closed);
    let mut grew = 0;
    loop {
        grew = grew.max(used_memory(&mut con).await.saturating_sub(before));
        tokio::select! {
            _ = &mut all_closed => break,
            _ = tokio::time::sleep(ms(50)) => {}
        }
    }
    grew.max(used_memory(&mut con).await.saturating_sub(before))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strangers_huge_frame_head_costs_no_memory_and_is_counted() {
    const MIB: u64 = 1 << 20;
    let keyed = start_node_with(config("n1", Some(KEY))).await;
    let grew = hold_huge_frame_heads(&keyed, 2).await;
    assert!(grew < 64 * MIB, "used_memory grew by {grew} bytes");
    counted("bad_frames", 2, || bad_frames(&keyed)).await;
    let mut con = client(&keyed).await;
    set(&mut con, "still", "serving").await;
    assert_eq!(get(&mut con, "still").await.as_deref(), Some("serving"));

    // Without a key nothing is proved, but the first frame (a Hello)
    // is small all the same.
    let open = start_node_with(config("n2", None)).await;
    let grew = hold_huge_frame_heads(&open, 2).await;
    assert!(grew < 64 * MIB, "used_memory grew by {grew} bytes");
    counted("bad_frames", 2, || bad_frames(&open)).await;
    let mut con = client(&open).await;
    set(&mut con, "still", "serving").await;
    assert_eq!(get(&mut con, "still").await.as_deref(), Some("serving"));
}

fn rejected_peer_links(node: &NodeHandle) -> u64 {
    let rejected = &node.replication().stats.rejected_peer_links;
    rejected.load(std::sync::atomic::Ordering::Relaxed)
}

/// The peer port caps its inbound links as the client port caps its
/// clients: past `--max-peer-links` a connection is closed at once and
/// counted, the links already open keep replicating, and a slot freed is
/// a slot a new link may take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_links_beyond_the_cap_are_closed_and_counted() {
    const CAP: u32 = 3;
    let capped = |c: Config| Config {
        max_peer_links: CAP,
        ..c
    };
    let n1 = start_node_with(capped(config("n1", None))).await;
    let n2 = start_node_with(capped(joining("n2", None, &n1))).await;
    wait_ready(&[&n1, &n2]).await;
    // n1 acknowledged something over n2's link to it: that link is up
    // and holds one of n1's slots.
    let mut con2 = client(&n2).await;
    set(&mut con2, "before-cap", "1").await;
    let acked: i64 = redis::cmd("WAIT")
        .arg(1)
        .arg(0)
        .query_async(&mut con2)
        .await
        .unwrap();
    assert_eq!(acked, 1);

    // Strangers that send nothing hold the other slots...
    let mut held = Vec::new();
    for _ in 1..CAP {
        held.push(TcpStream::connect(n1.peer_addr()).await.unwrap());
    }
    // ...so the next connection is closed at once.
    let extra = TcpStream::connect(n1.peer_addr()).await.unwrap();
    closed(extra).await;
    counted("rejected_peer_links", 1, || rejected_peer_links(&n1)).await;
    let mut con1 = client(&n1).await;
    let shown = info_field(&mut con1, "replication", "rejected_peer_links").await;
    assert_eq!(shown.as_deref(), Some("1"));
    assert_eq!(bad_frames(&n1), 0, "a refused connection is no bad frame");

    // The real peer's link is untouched: writes still go both ways.
    replicates(&n1, &[&n1, &n2], "from-n1", "1").await;
    replicates(&n2, &[&n1, &n2], "from-n2", "2").await;

    // Once the strangers leave, a new link is served again.
    drop(held);
    let served = eventually_ok(CONVERGE, || async {
        let mut stream = TcpStream::connect(n1.peer_addr()).await.unwrap();
        let mut frames = framed(&hello());
        frames.extend(framed(&inject("after-cap")));
        let _ = stream.write_all(&frames).await;
        match read_frame(&mut stream).await.map(|f| wire::decode(&f)) {
            Some(Ok(Message::Ack { last_seq: 1 })) => Ok(()),
            other => Err(format!("the node answered {other:?}")),
        }
    })
    .await;
    served.expect("a freed slot takes a new link");
    assert_eq!(
        get(&mut con1, "after-cap").await.as_deref(),
        Some("injected")
    );
}

// ---------------------------------------------------------------------------
// Rotation.

/// Stops `node` after checking it never refused a peer; its peer port.
async fn stop(node: NodeHandle) -> u16 {
    let (mem, tcp) = auth_failures(&node);
    assert_eq!(
        (mem, tcp),
        (0, 0),
        "{} refused a peer during the rotation",
        node.name()
    );
    let peer_port = node.peer_addr().port();
    node.shutdown().await;
    peer_port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_rotated_by_rolling_restarts_without_downtime() {
    let mut nodes = start_cluster(3, Some(KEY)).await;
    let peers: Vec<SocketAddr> = nodes.iter().map(|n| n.peer_addr()).collect();
    // The three steps of the README: add the new key as secondary
    // everywhere, make it primary everywhere, drop the old one everywhere.
    let steps: [(&str, Option<&str>); 3] =
        [(KEY, Some(NEW_KEY)), (NEW_KEY, Some(KEY)), (NEW_KEY, None)];
    let mut written = Vec::new();
    for (step, (primary, secondary)) in steps.iter().enumerate() {
        for i in 0..nodes.len() {
            let name = format!("n{}", i + 1);
            let mut c = config(&name, Some(primary));
            c.cluster_key_secondary = secondary.map(Into::into);
            c.join = vec![peers[(i + 1) % peers.len()].to_string()];
            // Writes go on while the node is away, and reach it once back.
            let port = stop(nodes.remove(i)).await;
            let key = format!("step{step}-n{i}-down");
            set(&mut client(&nodes[0]).await, &key, "1").await;
            nodes.insert(i, restart_at(c, port).await);
            written.push(key);
            let all: Vec<&NodeHandle> = nodes.iter().collect();
            wait_ready(&all).await;
            let key = format!("step{step}-n{i}-up");
            replicates(&nodes[i], &all, &key, "1").await;
            written.push(key);
        }
    }
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    for key in &written {
        let arrived = eventually_ok(CONVERGE, || everywhere(&all, key, "1")).await;
        arrived.unwrap();
    }
    for node in &nodes {
        assert_eq!(auth_failures(node), (0, 0), "{}", node.name());
    }

    // The old key is gone: a node that has only it cannot join any more.
    let before = members(&nodes[0]).await;
    let old = start_node_with(joining("old", Some(KEY), &nodes[0])).await;
    counted_at_least(&nodes[0], 3).await;
    assert_eq!(members(&nodes[0]).await, before);
    assert_eq!(old.membership().members().len(), 1);
}

// ---------------------------------------------------------------------------
// Replay.

/// Sends `datagram` from `socket` to `to`, then a marker that is sure to be
/// counted as an authentication failure, and waits until it is: by then
/// the datagram has been handled.
async fn deliver(socket: &UdpSocket, to: &NodeHandle, datagrams: &[&[u8]]) {
    for d in datagrams {
        socket.send_to(d, to.peer_addr()).await.unwrap();
    }
    let before = to.membership().auth_failures();
    socket.send_to(b"marker", to.peer_addr()).await.unwrap();
    counted_at_least(to, before + 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_and_reflected_datagrams_are_rejected() {
    let nodes = start_cluster(2, Some(KEY)).await;
    let (target, other) = (&nodes[0], &nodes[1]);

    // Capture a genuine sealed announce: a keyed node joins through a
    // socket that poses as its seed.
    let fake_seed = udp().await;
    let mut c = config("outsider-with-a-secret-name", Some(KEY));
    c.join = vec![fake_seed.local_addr().unwrap().to_string()];
    let outsider = start_node_with(c).await;
    let captured = recv(&fake_seed).await;
    assert_eq!(&captured[..4], b"KS\x01\x01", "a sealed datagram");
    let name = b"outsider-with-a-secret-name";
    assert!(
        !captured.windows(name.len()).any(|w| w == name),
        "the node's name travels in the clear"
    );

    // Reflected to its sender.
    deliver(&fake_seed, &outsider, &[&captured]).await;
    assert_eq!(outsider.membership().replayed_packets(), 1);
    assert_eq!(outsider.membership().members().len(), 1);

    // Delivered once to the target (foca ignores an announce addressed to
    // another node), then replayed: every replay is counted and nothing
    // changes.
    let before = members(target).await;
    let mut con = client(target).await;
    let digest_before = digest(&mut con).await;
    deliver(&fake_seed, target, &[&captured]).await;
    assert_eq!(target.membership().replayed_packets(), 0, "first delivery");
    let bad_before = target.membership().bad_packets();
    deliver(&fake_seed, target, &[&captured[..]; 5]).await;
    assert_eq!(target.membership().replayed_packets(), 5);
    // The five replays and the marker.
    assert_eq!(target.membership().bad_packets(), bad_before + 6);
    assert_eq!(members(target).await, before);
    assert_eq!(digest(&mut con).await, digest_before);

    // Sealed with the right key by the test itself: a fresh one is taken,
    // the same bytes again are not, and one sent long ago is not either.
    let key = keyring(KEY);
    let leave = |counter, sent_ms| {
        let mut d = Vec::new();
        let header = SealedHeader {
            stream: 77,
            counter,
            sent_ms,
            receiver: target.node_id(),
        };
        let notice = postcard::to_allocvec(&(1u64, 1u64)).unwrap();
        seal_keyed(&key, &header, Kind::Leave, &notice, &mut d);
        d
    };
    let fresh = leave(1, wall_ms());
    deliver(&fake_seed, target, &[&fresh]).await;
    assert_eq!(target.membership().replayed_packets(), 5, "a fresh one");
    deliver(&fake_seed, target, &[&fresh]).await;
    assert_eq!(target.membership().replayed_packets(), 6, "the same again");
    let stale = leave(2, wall_ms() - 10 * 60 * 1000);
    deliver(&fake_seed, target, &[&stale]).await;
    assert_eq!(target.membership().replayed_packets(), 7, "ten minutes old");
    let info = info_field(&mut con, "membership", "replayed_packets").await;
    assert_eq!(info.as_deref(), Some("7"));
    assert_eq!(members(target).await, before);
    replicates(other, &[target, other], "still", "works").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_captured_on_its_way_to_one_node_is_refused_by_another() {
    let mut nodes = start_cluster(3, Some(KEY)).await;
    let crashed = nodes.pop().unwrap();
    let (a, b) = (&nodes[0], &nodes[1]);
    let address = crashed.peer_addr();
    crashed.kill().await;
    // The others keep probing the crashed node for a while: a socket at its
    // address sees what was sealed for it.
    let wire = UdpSocket::bind(address).await.unwrap();
    let mut buf = vec![0u8; 65536];
    let (len, from) = tokio::time::timeout(CONVERGE, wire.recv_from(&mut buf))
        .await
        .expect("a datagram for the crashed node")
        .unwrap();
    let captured = &buf[..len];
    let to = if from == a.peer_addr() { b } else { a };
    let before = members(to).await;
    deliver(&wire, to, &[captured]).await;
    assert_eq!(
        to.membership().replayed_packets(),
        1,
        "a datagram sealed for another node is taken"
    );
    assert_eq!(members(to).await, before);

    // Sealed by the test for this node, or for any node, they are taken.
    let key = keyring(KEY);
    let leave = |counter, receiver| {
        let mut d = Vec::new();
        let header = SealedHeader {
            stream: 78,
            counter,
            sent_ms: wall_ms(),
            receiver,
        };
        let notice = postcard::to_allocvec(&(1u64, 1u64)).unwrap();
        seal_keyed(&key, &header, Kind::Leave, &notice, &mut d);
        d
    };
    deliver(
        &wire,
        to,
        &[&leave(1, to.node_id()), &leave(2, ANY_RECEIVER)],
    )
    .await;
    assert_eq!(to.membership().replayed_packets(), 1);
    let other = if to.node_id() == a.node_id() { b } else { a };
    deliver(&wire, to, &[&leave(3, other.node_id())]).await;
    assert_eq!(
        to.membership().replayed_packets(),
        2,
        "sealed for the other node"
    );
    replicates(a, &[a, b], "still", "works").await;
}

// ---------------------------------------------------------------------------
// Hostile input to a keyed node.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_input_to_a_keyed_node_is_dropped_counted_and_changes_nothing() {
    let small = |c: Config| Config {
        proto_max_bulk_len: 1 << 20,
        ..c
    };
    let a = start_node_with(small(config("n1", Some(KEY)))).await;
    let b = start_node_with(small(joining("n2", Some(KEY), &a))).await;
    wait_ready(&[&a, &b]).await;
    for i in 0..20 {
        replicates(&a, &[&a, &b], &format!("k{i}"), "v").await;
    }
    let mut con = client(&a).await;
    let digest_before = digest(&mut con).await;
    let members_before = members(&a).await;

    // UDP.
    let mut rng = fastrand::Rng::with_seed(11);
    let random: Vec<u8> = std::iter::repeat_with(|| rng.u8(..)).take(400).collect();
    let header = SealedHeader {
        stream: 99,
        counter: 1,
        sent_ms: wall_ms(),
        receiver: ANY_RECEIVER,
    };
    let mut wrong_key = Vec::new();
    seal_keyed(
        &keyring(WRONG_KEY),
        &header,
        Kind::Swim,
        &[0; 64],
        &mut wrong_key,
    );
    let mut right_key = Vec::new();
    seal_keyed(&keyring(KEY), &header, Kind::Swim, &[0; 64], &mut right_key);
    let mut flipped = right_key.clone();
    *flipped.last_mut().unwrap() ^= 1;
    let mut plaintext = Vec::new();
    seal(Kind::Swim, &[0; 64], &mut plaintext);
    let mut oversized = right_key.clone();
    oversized.resize(9000, 0);
    let datagrams: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("random bytes", random.clone()),
        ("sealed envelope only", b"KS\x01\x01".to_vec()),
        ("truncated", right_key[..right_key.len() / 2].to_vec()),
        ("oversized", oversized),
        ("sealed with another key", wrong_key),
        ("one bit flipped", flipped),
        ("plaintext (a node without a key)", plaintext),
    ];
    let attacker = udp().await;
    let bad_before = a.membership().bad_packets();
    let auth_before = a.membership().auth_failures();
    for (_, d) in &datagrams {
        attacker.send_to(d, a.peer_addr()).await.unwrap();
    }
    let n = datagrams.len() as u64;
    counted_at_least(&a, auth_before + n).await;
    assert_eq!(a.membership().auth_failures(), auth_before + n);
    assert_eq!(a.membership().bad_packets(), bad_before + n);
    assert_eq!(a.membership().replayed_packets(), 0);

    // TCP.
    let peer = a.peer_addr();
    let frame_limit: u32 = (1 << 20) + (1 << 20) + 16;
    let handshake = || handshake_frame(&link_nonce());
    let with_handshake = |rest: &[u8]| [handshake(), rest.to_vec()].concat();
    // (what, bytes, close our side, counted as an authentication failure)
    let cases: Vec<(&str, Vec<u8>, bool, bool)> = vec![
        ("random bytes in a frame", framed(&random), false, true),
        ("a plaintext Hello", framed(&hello()), false, true),
        (
            "a handshake of the wrong length",
            framed(b"KRLH\x01short"),
            false,
            true,
        ),
        (
            "a handshake of another version",
            framed(&[&b"KRLH\x02"[..], &[0; LINK_NONCE_LEN]].concat()),
            false,
            true,
        ),
        (
            "a handshake, then a plaintext Hello",
            with_handshake(&framed(&hello())),
            false,
            true,
        ),
        (
            "a handshake, then random bytes",
            with_handshake(&framed(&random)),
            false,
            true,
        ),
        (
            "a handshake, then a frame shorter than a tag",
            with_handshake(&framed(b"tiny")),
            false,
            true,
        ),
        (
            "a length over the limit",
            (frame_limit + 1).to_be_bytes().to_vec(),
            false,
            false,
        ),
        (
            "a handshake, then a length over the limit",
            with_handshake(&(frame_limit + 1).to_be_bytes()),
            false,
            false,
        ),
        (
            "a truncated handshake",
            handshake()[..20].to_vec(),
            true,
            false,
        ),
        (
            "a handshake, then half a frame",
            with_handshake(&framed(&random)[..100]),
            true,
            false,
        ),
    ];
    for (what, bytes, close_write, auth) in &cases {
        let (bad, auth_before) = (bad_frames(&a), tcp_auth_failures(&a));
        let mut stream = TcpStream::connect(peer).await.unwrap();
        let _ = stream.write_all(bytes).await;
        if *close_write {
            let _ = stream.shutdown().await;
        }
        closed(stream).await;
        counted(&format!("bad_frames after {what}"), bad + 1, || {
            bad_frames(&a)
        })
        .await;
        let expected = auth_before + u64::from(*auth);
        assert_eq!(
            tcp_auth_failures(&a),
            expected,
            "auth_failures after {what}"
        );
    }
    // A genuine keyed session, whose first frame is then sent again: frames
    // are numbered, so a repeated (or reordered) frame fails.
    let mut stream = TcpStream::connect(peer).await.unwrap();
    let ours = link_nonce();
    stream.write_all(&handshake_frame(&ours)).await.unwrap();
    let theirs = read_frame(&mut stream).await.unwrap();
    let (mut sealer, _) = keyring(KEY).initiator_session(&ours, &theirs[5..]);
    let sealed_hello = framed(&sealer.seal(&hello()).unwrap());
    let auth_before = tcp_auth_failures(&a);
    stream
        .write_all(&[sealed_hello.clone(), sealed_hello].concat())
        .await
        .unwrap();
    closed(stream).await;
    counted(
        "auth_failures after a repeated frame",
        auth_before + 1,
        || tcp_auth_failures(&a),
    )
    .await;

    let info = info_field(&mut con, "replication", "auth_failures").await;
    assert_eq!(info, Some(tcp_auth_failures(&a).to_string()));
    assert_eq!(digest(&mut con).await, digest_before, "the data changed");
    assert_eq!(members(&a).await, members_before, "the membership changed");
    assert_eq!(
        auth_failures(&b),
        (0, 0),
        "the honest peer was never refused"
    );
    replicates(&b, &[&a, &b], "after", "1").await;
    replicates(&a, &[&a, &b], "after-a", "1").await;
}

// ---------------------------------------------------------------------------
// The binary: flags, the warning, secrets kept out of sight.

#[test]
fn an_unkeyed_peer_port_beyond_loopback_is_warned_about() {
    use common::process::{Procs, node_command, spawn};
    const WARNING: &str = "listens beyond loopback without --cluster-key";
    let dir = std::env::temp_dir().join(format!("kriminodb-keys-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("cluster.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();

    let mut procs = Procs::default();
    let mut open = node_command((0, 0));
    open.args(["--bind", "0.0.0.0"]);
    procs.push(spawn("open", open));
    let mut keyed = node_command((0, 0));
    keyed
        .args(["--bind", "0.0.0.0", "--cluster-key-file"])
        .arg(&key_file);
    procs.push(spawn("keyed", keyed));
    let mut local = node_command((0, 0));
    local.args(["--bind", "127.0.0.1"]);
    procs.push(spawn("local", local));
    let warned = |i: usize| {
        let log = procs[i].log.lock().unwrap();
        log.iter().any(|line| line.contains(WARNING))
    };
    assert!(warned(0), "no warning for an open peer port");
    assert!(!warned(1), "a warning despite the cluster key");
    assert!(!warned(2), "a warning for a loopback peer port");
}

#[test]
fn short_keys_are_refused_and_secrets_stay_out_of_help() {
    use common::process::BIN;
    let out = std::process::Command::new(BIN)
        .args(["--port", "0", "--peer-port", "0", "--cluster-key", "short"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("at least 16"), "{stderr}");

    let out = std::process::Command::new(BIN)
        .args(["--port", "0", "--peer-port", "0"])
        .env("KRIMINODB_CLUSTER_KEY_SECONDARY", KEY)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a secondary key without a primary");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs a primary"), "{stderr}");

    let out = std::process::Command::new(BIN)
        .arg("--help")
        .env("KRIMINODB_CLUSTER_KEY", KEY)
        .env("KRIMINODB_CLUSTER_KEY_SECONDARY", NEW_KEY)
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--cluster-key-secondary"), "{help}");
    assert!(!help.contains(KEY) && !help.contains(NEW_KEY), "{help}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_from_a_flag_a_file_or_the_environment_is_the_same_key() {
    use common::process::{Procs, node_command, spawn};
    let dir = std::env::temp_dir().join(format!("kriminodb-keys2-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("cluster.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let mut procs = Procs::default();
    let mut flag = node_command((0, 0));
    flag.args(["--name", "flag", "--cluster-key", KEY]);
    procs.push(spawn("flag", flag));
    let seed = procs[0].peer.to_string();
    let mut file = node_command((0, 0));
    file.args(["--name", "file", "--join", &seed, "--cluster-key-file"])
        .arg(&key_file);
    procs.push(spawn("file", file));
    let mut env = node_command((0, 0));
    env.args(["--name", "env", "--join", &seed])
        .env("KRIMINODB_CLUSTER_KEY", KEY);
    procs.push(spawn("env", env));
    let clients: Vec<SocketAddr> = procs.iter().map(|p| p.client).collect();
    let formed = eventually_ok(CONVERGE, || async {
        for addr in &clients {
            let rows = cluster_members(&mut patient_client_at(*addr).await).await;
            let alive = rows.iter().filter(|m| m.state == "alive").count();
            if alive != 3 {
                return Err(format!("{addr} sees {rows:?}"));
            }
        }
        Ok(())
    })
    .await;
    formed.expect("the three nodes form one cluster");
    let mut con = patient_client_at(clients[1]).await;
    set(&mut con, "from-file-node", "1").await;
    let replicated = eventually_ok(CONVERGE, || async {
        for addr in &clients {
            let v = get(&mut patient_client_at(*addr).await, "from-file-node").await;
            if v.as_deref() != Some("1") {
                return Err(format!("{addr} has {v:?}"));
            }
        }
        Ok(())
    })
    .await;
    replicated.expect("the write reaches every node");
    let auth = info_field(&mut con, "membership", "auth_failures").await;
    assert_eq!(auth.as_deref(), Some("0"));
}
