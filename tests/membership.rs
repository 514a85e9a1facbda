//! Cluster membership between nodes started in-process, over real UDP on
//! 127.0.0.1: joining through one seed, crash detection and removal,
//! graceful leave, a restart at the same peer address, hostile datagrams on
//! the peer port, and a seed that never answers.
//!
//! Every test starts its own nodes on OS-assigned ports. Assertions poll
//! (`eventually_ok`) with deadlines far above what an idle machine needs, so
//! they hold on a loaded CI machine while still checking the condition.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{client, cluster_members, eventually_ok, info_field, start_node_with};
use kriminodb::crypto::Keyring;
use kriminodb::membership::{
    ANY_RECEIVER, Kind, MAX_DATAGRAM, MemberState, SealedHeader, seal, seal_keyed,
};
use kriminodb::{Config, NodeHandle};
use tokio::net::UdpSocket;

/// Deadline for anything the protocol must reach on its own (joins, crash
/// detection, removal). With the timings below an idle machine needs ~1 s
/// to converge and ~3-5 s to declare a crashed node down.
const CONVERGE: Duration = Duration::from_secs(25);

/// A node named `name` on free ports, with the protocol timings spelled
/// out so a change of defaults cannot silently change what a test means.
fn config(name: &str) -> Config {
    Config {
        name: Some(name.to_owned()),
        probe_period: Duration::from_millis(600),
        probe_rtt: Duration::from_millis(300),
        suspect_timeout: Duration::from_millis(2400),
        gossip_interval: Duration::from_millis(200),
        remove_down_after: Duration::from_secs(20),
        ..Config::ephemeral()
    }
}

/// Starts nodes `n1`..`nN`; all but the first join through `n1`'s peer
/// address. `tweak` adjusts every node's configuration.
async fn start_cluster(n: usize, tweak: impl Fn(&mut Config)) -> Vec<NodeHandle> {
    common::cluster::start_cluster(n, |name| {
        let mut c = config(name);
        tweak(&mut c);
        c
    })
    .await
}

/// What `node` knows, as (name, state) pairs sorted by name: compact and
/// readable in a failure message.
fn view(node: &NodeHandle) -> Vec<(String, MemberState)> {
    let mut v: Vec<_> = node
        .membership()
        .members()
        .iter()
        .map(|m| (m.id.name.clone(), m.state))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// The state `observer` has for the member at peer address `peer`.
fn state_of(observer: &NodeHandle, peer: SocketAddr) -> Option<MemberState> {
    observer
        .membership()
        .members()
        .iter()
        .find(|m| m.id.peer == peer)
        .map(|m| m.state)
}

/// Ok when every node lists exactly the peers of `nodes`, all alive.
fn all_alive(nodes: &[&NodeHandle]) -> Result<(), String> {
    let mut expected: Vec<SocketAddr> = nodes.iter().map(|n| n.peer_addr()).collect();
    expected.sort();
    for node in nodes {
        let members = node.membership().members();
        let mut peers: Vec<SocketAddr> = members.iter().map(|m| m.id.peer).collect();
        peers.sort();
        let alive = members.iter().all(|m| m.state == MemberState::Alive);
        if peers != expected || !alive {
            return Err(format!("{} sees {:?}", node.name(), view(node)));
        }
    }
    Ok(())
}

async fn wait_all_alive(nodes: &[&NodeHandle]) {
    let converged = eventually_ok(CONVERGE, || std::future::ready(all_alive(nodes))).await;
    converged.expect("every node sees every other alive");
}

/// A UDP socket on a free port, for posing as a seed or as an attacker.
async fn udp() -> UdpSocket {
    UdpSocket::bind("127.0.0.1:0").await.unwrap()
}

/// The next datagram `socket` receives, with its sender; fails the test if
/// none comes within the deadline.
async fn recv(socket: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 65536];
    let (len, from) = tokio::time::timeout(CONVERGE, socket.recv_from(&mut buf))
        .await
        .expect("a datagram arrives")
        .unwrap();
    buf.truncate(len);
    (buf, from)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_joining_through_one_seed_all_see_each_other_alive() {
    let nodes = start_cluster(5, |_| {}).await;
    let all: Vec<&NodeHandle> = nodes.iter().collect();
    wait_all_alive(&all).await;

    // In-process view: the same five identities everywhere, itself first.
    let expected: BTreeMap<SocketAddr, (u64, String)> = nodes
        .iter()
        .map(|n| (n.peer_addr(), (n.node_id(), n.name().to_owned())))
        .collect();
    for node in &nodes {
        let members = node.membership().members();
        let seen: BTreeMap<SocketAddr, (u64, String)> = members
            .iter()
            .map(|m| (m.id.peer, (m.id.node_id, m.id.name.clone())))
            .collect();
        assert_eq!(seen, expected, "identities known to {}", node.name());
        assert!(members[0].is_self && members[0].id.node_id == node.node_id());
        assert_eq!(members.iter().filter(|m| m.is_self).count(), 1);
    }

    // Over the wire, on every node: CLUSTER MEMBERS and INFO membership.
    // last_heard_ms becomes >= 0 only once a member's datagrams reached
    // this node, hence the polling.
    let nodes = &nodes;
    for node in nodes {
        let con = client(node).await;
        let checked = eventually_ok(CONVERGE, || {
            let mut con = con.clone();
            async move {
                let rows = cluster_members(&mut con).await;
                check_rows(node, nodes, &rows)?;
                let info = |field: &'static str| {
                    let mut con = con.clone();
                    async move { info_field(&mut con, "membership", field).await }
                };
                let counts = (
                    info("members").await,
                    info("members_alive").await,
                    info("members_suspect").await,
                    info("members_down").await,
                    info("bad_packets").await,
                );
                let want = |s: &str| Some(s.to_owned());
                if counts != (want("5"), want("5"), want("0"), want("0"), want("0")) {
                    return Err(format!(
                        "INFO membership of {} (members, alive, suspect, down, bad): {counts:?}",
                        node.name()
                    ));
                }
                Ok(())
            }
        })
        .await;
        checked.unwrap();
    }
}

/// Checks `node`'s CLUSTER MEMBERS rows against the identities of `nodes`.
fn check_rows(
    node: &NodeHandle,
    nodes: &[NodeHandle],
    rows: &[common::MemberRow],
) -> Result<(), String> {
    if rows.len() != nodes.len() {
        return Err(format!("{} lists {rows:?}", node.name()));
    }
    if !rows[0].myself {
        return Err(format!(
            "{} does not list itself first: {rows:?}",
            node.name()
        ));
    }
    for n in nodes {
        let Some(row) = rows.iter().find(|r| r.peer_addr == n.peer_addr()) else {
            return Err(format!(
                "{} does not list {}: {rows:?}",
                node.name(),
                n.name()
            ));
        };
        let is_self = n.node_id() == node.node_id();
        // The incarnation is the member's own (its self view).
        let incarnation = n.membership().members()[0].id.incarnation as i64;
        let heard_ok = if is_self {
            row.last_heard_ms == -1
        } else {
            row.last_heard_ms >= 0
        };
        let expected = (
            n.name(),
            format!("{:016x}", n.node_id()),
            n.client_addr(),
            "alive",
            incarnation,
            is_self,
        );
        let actual = (
            row.name.as_str(),
            row.node_id.clone(),
            row.client_addr,
            row.state.as_str(),
            row.incarnation,
            row.myself,
        );
        if actual != expected || !heard_ok {
            return Err(format!(
                "{} reports {row:?}, expected {expected:?} and a fitting last_heard_ms",
                node.name()
            ));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_is_declared_down_by_every_other_node_then_removed() {
    // Down members are removed 2 s after being declared down.
    let mut nodes = start_cluster(5, |c| c.remove_down_after = Duration::from_secs(2)).await;
    wait_all_alive(&nodes.iter().collect::<Vec<_>>()).await;

    let victim = nodes.pop().unwrap();
    let peer = victim.peer_addr();
    victim.kill().await;

    // Each survivor must report it down at some point. Each keeps a down
    // member listed for remove_down_after (2 s), far longer than the 20 ms
    // polling interval, so a survivor cannot skip past it unseen.
    let mut saw_down = vec![false; nodes.len()];
    let all_saw_down = eventually_ok(CONVERGE, || {
        for (seen, node) in saw_down.iter_mut().zip(&nodes) {
            *seen |= state_of(node, peer) == Some(MemberState::Down);
        }
        std::future::ready(if saw_down.iter().all(|s| *s) {
            Ok(())
        } else {
            Err(format!("saw down: {saw_down:?}"))
        })
    })
    .await;
    all_saw_down.unwrap();

    // Then it is removed everywhere, and the survivors still agree.
    let survivors: Vec<&NodeHandle> = nodes.iter().collect();
    let removed = eventually_ok(CONVERGE, || std::future::ready(all_alive(&survivors))).await;
    removed.expect("the killed node is removed and the survivors are alive");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_gracefully_is_dropped_at_once() {
    // A down member would stay listed for a minute: only the leave notice
    // can explain a removal within the deadline below.
    let remove_down_after = Duration::from_secs(60);
    let mut nodes = start_cluster(5, |c| c.remove_down_after = remove_down_after).await;
    wait_all_alive(&nodes.iter().collect::<Vec<_>>()).await;

    let leaver = nodes.pop().unwrap();
    let peer = leaver.peer_addr();
    let left_at = tokio::time::Instant::now();
    leaver.shutdown().await;

    // A node that said goodbye is never a failure: no survivor should ever
    // show it suspect or down on its way out.
    let mut failed_states = Vec::new();
    let survivors: Vec<&NodeHandle> = nodes.iter().collect();
    let gone = eventually_ok(Duration::from_secs(10), || {
        for node in &survivors {
            if let Some(s @ (MemberState::Suspect | MemberState::Down)) = state_of(node, peer) {
                failed_states.push((node.name().to_owned(), s));
            }
        }
        std::future::ready(all_alive(&survivors))
    })
    .await;
    gone.expect("the node that left is dropped by every survivor");
    assert!(left_at.elapsed() < remove_down_after / 2);
    assert!(
        failed_states.is_empty(),
        "seen as a failed member on its way out: {failed_states:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_restarted_at_the_same_address_rejoins_with_a_new_identity() {
    let mut nodes = start_cluster(3, |_| {}).await;
    wait_all_alive(&nodes.iter().collect::<Vec<_>>()).await;

    let old = nodes.pop().unwrap();
    let (peer, old_id, name) = (old.peer_addr(), old.node_id(), old.name().to_owned());
    let old_incarnation = old.membership().me.incarnation;
    old.kill().await;

    // Restart at once, as a supervisor would: same name, same peer port,
    // before the others had time to declare the old life down.
    let mut c = config(&name);
    c.peer_port = peer.port();
    c.join = vec![nodes[0].peer_addr().to_string()];
    let restarted = start_node_with(c).await;
    assert_eq!(restarted.peer_addr(), peer);
    assert_ne!(restarted.node_id(), old_id);

    // Everyone converges on the new life: exactly one entry at that
    // address, with the new node id and a larger incarnation. (Until the
    // news spreads a survivor may still list the old life as alive, so
    // "three alive members" alone proves nothing.)
    let all = [&nodes[0], &nodes[1], &restarted];
    let rejoined = eventually_ok(CONVERGE, || {
        let check = || -> Result<(), String> {
            all_alive(&all)?;
            for node in &nodes {
                let members = node.membership().members();
                let at_peer: Vec<_> = members.iter().filter(|m| m.id.peer == peer).collect();
                let new_life = match at_peer[..] {
                    [m] => {
                        m.id.node_id == restarted.node_id() && m.id.incarnation > old_incarnation
                    }
                    _ => false,
                };
                if !new_life {
                    return Err(format!(
                        "{} sees {at_peer:?}; old life {old_id:016x}/{old_incarnation}",
                        node.name()
                    ));
                }
            }
            Ok(())
        };
        std::future::ready(check())
    })
    .await;
    rejoined.expect("the restarted node is known by its new identity");
}

/// Datagrams that are not valid membership messages, built from a genuine
/// announce so each one is wrong in exactly one way.
fn invalid_datagrams(announce: &[u8], forged_leave: Vec<u8>) -> Vec<(&'static str, Vec<u8>)> {
    let with = |i: usize, b: u8| {
        let mut d = announce.to_vec();
        d[i] = b;
        d
    };
    let padded = |len: usize| {
        let mut d = announce.to_vec();
        d.resize(len, 0);
        d
    };
    let mut garbage_swim = Vec::new();
    seal(Kind::Swim, &[0xff; 40], &mut garbage_swim);
    let mut garbage_leave = Vec::new();
    seal(Kind::Leave, &[0xff; 3], &mut garbage_leave);
    // What a node with a cluster key sends; this node has none.
    let keyring = Keyring::new(b"some cluster key, 32 bytes long.", None).unwrap();
    let header = SealedHeader {
        stream: 1,
        counter: 1,
        sent_ms: common::wall_ms(),
        receiver: ANY_RECEIVER,
    };
    let mut sealed = Vec::new();
    seal_keyed(&keyring, &header, Kind::Swim, &announce[4..], &mut sealed);
    vec![
        ("empty", Vec::new()),
        ("text", b"hello, is this redis?".to_vec()),
        (
            "random bytes",
            (0..300u32).map(|i| (i * 37 % 251) as u8).collect(),
        ),
        ("shorter than the envelope", b"KR".to_vec()),
        ("wrong magic", with(0, b'X')),
        ("wrong version", with(2, 2)),
        ("unknown kind", with(3, 9)),
        ("truncated", announce[..announce.len() / 2].to_vec()),
        ("envelope only", announce[..4].to_vec()),
        ("trailing bytes", [announce, &[1u8, 2, 3][..]].concat()),
        ("one byte too big", padded(MAX_DATAGRAM + 1)),
        ("1500 bytes", padded(1500)),
        ("9000 bytes", padded(9000)),
        ("garbage swim payload", garbage_swim),
        ("garbage leave payload", garbage_leave),
        ("leave forged from another address", forged_leave),
        ("sealed with a cluster key", sealed),
    ]
}

/// A member's peer address, node id, incarnation and state.
type Member = (SocketAddr, u64, u64, MemberState);

/// Every member `node` knows, by peer address.
fn snapshot(node: &NodeHandle) -> Vec<Member> {
    let mut v: Vec<_> = node
        .membership()
        .members()
        .iter()
        .map(|m| (m.id.peer, m.id.node_id, m.id.incarnation, m.state))
        .collect();
    v.sort_by_key(|m| m.0);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_datagrams_are_counted_and_change_nothing() {
    let nodes = start_cluster(2, |_| {}).await;
    let (target, other) = (&nodes[0], &nodes[1]);
    wait_all_alive(&[target, other]).await;

    // Capture a genuine announce: a third node joins through a socket that
    // poses as its seed.
    let fake_seed = udp().await;
    let mut c = config("outsider");
    c.join = vec![fake_seed.local_addr().unwrap().to_string()];
    let outsider = start_node_with(c).await;
    let (announce, from) = recv(&fake_seed).await;
    assert_eq!(from, outsider.peer_addr());
    assert_eq!(&announce[..4], b"KR\x01\x00", "a SWIM datagram");

    let before = snapshot(target);
    let bad_before = target.membership().bad_packets();
    let attacker = udp().await;
    // A leave notice in the name of a real member, sent from elsewhere.
    let other_id = &other.membership().me;
    let mut forged_leave = Vec::new();
    seal(
        Kind::Leave,
        &postcard::to_allocvec(&(other_id.node_id, other_id.incarnation)).unwrap(),
        &mut forged_leave,
    );
    let invalid = invalid_datagrams(&announce, forged_leave);
    for (_, datagram) in &invalid {
        attacker
            .send_to(datagram, target.peer_addr())
            .await
            .unwrap();
    }
    let expected_bad = bad_before + invalid.len() as u64;
    let counted = eventually_ok(CONVERGE, || {
        let bad = target.membership().bad_packets();
        std::future::ready(if bad >= expected_bad {
            Ok(())
        } else {
            Err(format!("bad_packets {bad}, want {expected_bad}"))
        })
    })
    .await;
    counted.unwrap();
    // Every invalid datagram counted once, and nothing else (legitimate
    // traffic from `other` is never bad).
    assert_eq!(target.membership().bad_packets(), expected_bad);
    let mut con = client(target).await;
    let info_bad = info_field(&mut con, "membership", "bad_packets").await;
    assert_eq!(info_bad, Some(expected_bad.to_string()));
    assert_eq!(
        target.membership().auth_failures(),
        0,
        "without a cluster key nothing is an authentication failure"
    );
    assert_eq!(
        snapshot(target),
        before,
        "garbage changed the membership (the forged leave must not drop {})",
        other.name()
    );

    // Replay the captured announce, several times. It was addressed to the
    // fake seed, so the target must not act on it; if it did, the only
    // member it could gain is the outsider, who did send it. The garbage
    // datagram after the replays is a marker: datagrams from one socket to
    // another arrive in order on loopback, so once it is counted every
    // replay has been handled.
    for _ in 0..5 {
        attacker
            .send_to(&announce, target.peer_addr())
            .await
            .unwrap();
    }
    let bad_before_marker = target.membership().bad_packets();
    attacker
        .send_to(b"marker", target.peer_addr())
        .await
        .unwrap();
    let handled = eventually_ok(CONVERGE, || {
        let bad = target.membership().bad_packets();
        std::future::ready(if bad > bad_before_marker {
            Ok(())
        } else {
            Err(format!("marker not counted yet ({bad})"))
        })
    })
    .await;
    handled.unwrap();
    let after = snapshot(target);
    let (kept, gained): (Vec<&Member>, Vec<&Member>) =
        after.iter().partition(|m| before.contains(m));
    assert_eq!(
        kept.len(),
        before.len(),
        "replays changed {before:?} to {after:?}"
    );
    assert!(
        gained.iter().all(|m| m.0 == outsider.peer_addr()),
        "replays added strangers: {gained:?}"
    );

    // The node survived all of it: it still answers and still agrees with
    // its peer.
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    assert_eq!(
        state_of(other, target.peer_addr()),
        Some(MemberState::Alive)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seed_that_never_answers_leaves_the_node_alone_but_serving() {
    // Bound, so the node's datagrams are not refused; never read from
    // except here, never answered.
    let silent_seed = udp().await;
    let mut c = config("lonely");
    c.join = vec![silent_seed.local_addr().unwrap().to_string()];
    let node = start_node_with(c).await;
    let mut con = client(&node).await;

    // Observe three join attempts (the node keeps retrying with back-off),
    // and after each check that it serves clients and lists only itself.
    for attempt in 1..=3 {
        let (datagram, from) = recv(&silent_seed).await;
        assert_eq!(from, node.peer_addr(), "attempt {attempt}");
        assert_eq!(&datagram[..4], b"KR\x01\x00", "attempt {attempt}");

        let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
        assert_eq!(pong, "PONG");
        let _: () = redis::cmd("SET")
            .arg("k")
            .arg(attempt)
            .query_async(&mut con)
            .await
            .unwrap();
        let rows = cluster_members(&mut con).await;
        assert_eq!(rows.len(), 1, "attempt {attempt}: {rows:?}");
        assert!(rows[0].myself && rows[0].state == "alive" && rows[0].name == "lonely");
        assert_eq!(
            info_field(&mut con, "membership", "members").await,
            Some("1".into())
        );
    }
    let value: i64 = redis::cmd("GET")
        .arg("k")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(value, 3);
}
