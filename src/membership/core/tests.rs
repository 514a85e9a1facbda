//! Cores exchanging datagrams in memory, in stepped time: no socket, no
//! sleep. Delivery is instant unless a link is cut.

use std::collections::HashSet;

use super::*;
use crate::crypto::REPLAY_MAX_AGE_MS;
use crate::membership::seal;

/// Wall clock at the start of every test (unix ms).
const START_MS: u64 = 1_700_000_000_000;

fn addr(i: usize) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 4000 + i as u16))
}

fn member(i: usize) -> MemberId {
    MemberId {
        node_id: i as u64 + 1,
        incarnation: 1,
        name: format!("n{i}"),
        peer: addr(i),
        client: SocketAddr::from(([127, 0, 0, 1], 3000 + i as u16)),
    }
}

fn keyring(key: &[u8]) -> Arc<Keyring> {
    Arc::new(Keyring::new(key, None).unwrap())
}

/// Nodes 0..n at 127.0.0.1:4000+i; every node but the first joins
/// through node 0.
struct Cluster {
    nodes: Vec<MembershipCore>,
    up: Vec<bool>,
    /// Links that lose every datagram, both ways.
    cut: HashSet<(usize, usize)>,
    start: Instant,
    elapsed: Duration,
    /// Every event of every node, in order.
    events: Vec<Vec<Event>>,
}

impl Cluster {
    fn new(n: usize, keyring: Option<Arc<Keyring>>) -> Self {
        let start = Instant::now();
        let nodes = (0..n)
            .map(|i| {
                let config = Config {
                    cluster_key: keyring.as_ref().map(|_| "0123456789abcdef".into()),
                    ..if i > 0 {
                        joining_config()
                    } else {
                        Config::default()
                    }
                };
                MembershipCore::new(member(i), &config, keyring.clone(), i as u64, start)
            })
            .collect();
        Self {
            nodes,
            up: vec![true; n],
            cut: HashSet::new(),
            start,
            elapsed: Duration::ZERO,
            events: vec![Vec::new(); n],
        }
    }

    fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    fn now_ms(&self) -> u64 {
        START_MS + self.elapsed.as_millis() as u64
    }

    fn cut(&mut self, a: usize, b: usize) {
        self.cut.insert((a, b));
        self.cut.insert((b, a));
    }

    /// Everything the nodes have to send, until nothing is left: what a
    /// stopped node or a cut link would carry is lost.
    fn deliver(&mut self) {
        let (now, now_ms) = (self.now(), self.now_ms());
        loop {
            let mut in_flight = Vec::new();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                let sent: Vec<_> = node.drain_outgoing(now_ms).collect();
                self.events[i].extend(node.drain_events());
                if self.up[i] {
                    in_flight.extend(sent.into_iter().map(|(to, d)| (i, to, d)));
                }
            }
            if in_flight.is_empty() {
                return;
            }
            for (from, to, datagram) in in_flight {
                let to = usize::from(to.port() - 4000);
                if self.up[to] && !self.cut.contains(&(from, to)) {
                    let _ = self.nodes[to].handle_datagram(&datagram, addr(from), now, now_ms);
                }
            }
        }
    }

    /// Steps every running node through its deadlines until `done` holds
    /// or `limit` has passed; whether `done` held.
    fn run_until(&mut self, limit: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let end = self.now() + limit;
        loop {
            self.deliver();
            if done(self) {
                return true;
            }
            let next = (0..self.nodes.len())
                .filter(|&i| self.up[i])
                .map(|i| self.nodes[i].next_deadline())
                .min();
            let Some(next) = next.filter(|next| *next <= end) else {
                self.elapsed = end - self.start;
                return false;
            };
            self.elapsed = next.saturating_duration_since(self.start).max(self.elapsed);
            let now = self.now();
            for (i, node) in self.nodes.iter_mut().enumerate() {
                if !self.up[i] || node.next_deadline() > now {
                    continue;
                }
                node.fire_due_timers(now);
                while let Some(announce) = node.due_announce(now) {
                    node.announce(announce, &[addr(0)], now);
                }
            }
        }
    }

    fn run_for(&mut self, duration: Duration) {
        self.run_until(duration, |_| false);
    }

    /// Whether every running node lists every other running one alive.
    fn all_alive(&self) -> bool {
        (0..self.nodes.len()).filter(|&i| self.up[i]).all(|i| {
            (0..self.nodes.len())
                .filter(|&j| j != i && self.up[j])
                .all(|j| self.nodes[i].state_of(addr(j)) == Some(MemberState::Alive))
        })
    }
}

/// A node started with `--join` node 0.
fn joining_config() -> Config {
    Config {
        join: vec![addr(0).to_string()],
        ..Config::default()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

#[test]
fn members_joining_through_a_seed_see_each_other_alive() {
    let mut cluster = Cluster::new(3, None);
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    // A few probe rounds: everyone hears from everyone.
    cluster.run_for(secs(5));
    for (i, node) in cluster.nodes.iter().enumerate() {
        let views = node.views();
        assert_eq!(views.len(), 3);
        assert!(
            views[0].is_self && views[0].id == member(i),
            "this node first"
        );
        for view in &views[1..] {
            assert_eq!(view.state, MemberState::Alive);
            assert!(view.last_heard.is_some(), "{view:?} never heard");
        }
    }
    let joiner = &cluster.events[1];
    assert!(joiner.contains(&Event::Connected), "{joiner:?}");
    for other in [0, 2] {
        assert!(
            joiner
                .iter()
                .any(|e| matches!(e, Event::Joined { id, .. } if *id == member(other)))
        );
    }
}

#[test]
fn a_member_that_stops_answering_is_declared_down_then_removed() {
    let mut cluster = Cluster::new(3, None);
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    cluster.up[2] = false;
    let seen_down =
        |c: &Cluster| (0..2).all(|i| c.nodes[i].state_of(addr(2)) == Some(MemberState::Down));
    assert!(cluster.run_until(secs(30), seen_down));
    for events in &cluster.events[..2] {
        let down = Event::Changed {
            id: member(2),
            state: MemberState::Down,
        };
        assert!(events.contains(&down), "{events:?}");
    }
    let removed = |c: &Cluster| (0..2).all(|i| c.nodes[i].state_of(addr(2)).is_none());
    assert!(cluster.run_until(Config::default().remove_down_after * 2, removed));
    for events in &cluster.events[..2] {
        assert!(events.contains(&Event::Removed(member(2))), "{events:?}");
    }
    assert!(cluster.all_alive(), "the others are still alive");
}

#[test]
fn a_member_restarted_at_its_address_is_listed_under_its_new_identity() {
    let mut cluster = Cluster::new(3, None);
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    let reborn = MemberId {
        incarnation: 2,
        ..member(2)
    };
    let now = cluster.now();
    cluster.nodes[2] = MembershipCore::new(reborn.clone(), &joining_config(), None, 7, now);
    let sees_reborn = |c: &Cluster| {
        (0..2).all(|i| {
            let views = c.nodes[i].views();
            views.len() == 3
                && views
                    .iter()
                    .any(|v| v.id == reborn && v.state == MemberState::Alive)
        })
    };
    assert!(cluster.run_until(secs(10), sees_reborn));
    for events in &cluster.events[..2] {
        let restarted = |e: &Event| matches!(e, Event::Restarted { new, .. } if *new == reborn);
        assert!(events.iter().any(restarted), "{events:?}");
    }
}

#[test]
fn a_leave_notice_hides_the_member_at_once() {
    let mut cluster = Cluster::new(3, None);
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    let now = cluster.now();
    assert_eq!(cluster.nodes[2].leave(now), 2, "both members are told");
    cluster.deliver();
    for (i, node) in cluster.nodes.iter().enumerate().take(2) {
        assert_eq!(node.state_of(addr(2)), None);
        assert!(node.views().iter().all(|v| v.id != member(2)));
        assert!(cluster.events[i].contains(&Event::Left(member(2))));
        assert_eq!(node.stats().bad_packets.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn a_leave_notice_is_believed_only_from_the_leaver_address() {
    let mut cluster = Cluster::new(3, None);
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    let notice = postcard::to_allocvec(&(member(2).node_id, member(2).incarnation)).unwrap();
    let mut forged = Vec::new();
    seal(Kind::Leave, &notice, &mut forged);
    let (now, now_ms) = (cluster.now(), cluster.now_ms());
    let node = &mut cluster.nodes[0];
    assert_eq!(
        node.handle_datagram(&forged, addr(1), now, now_ms),
        Err(Dropped::UnknownLeaver)
    );
    assert_eq!(
        node.handle_datagram(&forged[..forged.len() - 1], addr(2), now, now_ms),
        Err(Dropped::MalformedLeave)
    );
    assert_eq!(node.state_of(addr(2)), Some(MemberState::Alive));
    assert_eq!(node.stats().bad_packets.load(Ordering::Relaxed), 2);
}

#[test]
fn datagrams_not_sealed_with_our_key_are_refused_and_counted() {
    let ours = keyring(b"0123456789abcdef");
    let mut cluster = Cluster::new(2, Some(ours));
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    // A node with another key announces itself to node 0.
    let (now, now_ms) = (cluster.now(), cluster.now_ms());
    let config = joining_config();
    let other = Some(keyring(b"fedcba9876543210"));
    let mut stranger = MembershipCore::new(member(2), &config, other, 9, now);
    let announce = stranger.due_announce(now).unwrap();
    stranger.announce(announce, &[addr(0)], now);
    let sent: Vec<_> = stranger.drain_outgoing(now_ms).collect();
    assert!(!sent.is_empty());
    let mut plain = Vec::new();
    seal(Kind::Swim, b"hello", &mut plain);
    let node = &mut cluster.nodes[0];
    for (_, datagram) in sent.iter().chain([&(addr(2), plain)]) {
        assert_eq!(
            node.handle_datagram(datagram, addr(2), now, now_ms),
            Err(Dropped::Unauthenticated)
        );
    }
    let stats = node.stats();
    let refused = sent.len() as u64 + 1;
    assert_eq!(stats.auth_failures.load(Ordering::Relaxed), refused);
    assert_eq!(stats.bad_packets.load(Ordering::Relaxed), refused);
    assert_eq!(node.state_of(addr(2)), None);
}

#[test]
fn replayed_datagrams_are_refused_and_counted() {
    let key = keyring(b"0123456789abcdef");
    let mut cluster = Cluster::new(3, Some(key));
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    let (now, now_ms) = (cluster.now(), cluster.now_ms());
    // A fresh datagram from node 1 to node 0, named for node 0.
    cluster.nodes[1].leave(now);
    let (to, datagram) = cluster.nodes[1]
        .drain_outgoing(now_ms)
        .find(|(to, _)| *to == addr(0))
        .unwrap();
    assert_eq!(to, addr(0));
    let replayed = |node: &MembershipCore| node.stats().replayed_packets.load(Ordering::Relaxed);

    let to_node_2 = cluster.nodes[2].handle_datagram(&datagram, addr(1), now, now_ms);
    assert_eq!(to_node_2, Err(Dropped::Replayed), "sealed for another node");
    let late = now_ms + REPLAY_MAX_AGE_MS + 1;
    let stale = cluster.nodes[0].handle_datagram(&datagram, addr(1), now, late);
    assert_eq!(stale, Err(Dropped::Stale));
    let node = &mut cluster.nodes[0];
    assert_eq!(
        node.handle_datagram(&datagram, addr(1), now, now_ms),
        Ok(())
    );
    assert_eq!(node.state_of(addr(1)), None, "the leave was taken");
    assert_eq!(
        node.handle_datagram(&datagram, addr(1), now, now_ms),
        Err(Dropped::Replayed)
    );
    assert_eq!(replayed(node), 2);
    assert_eq!(replayed(&cluster.nodes[2]), 1);

    // Our own datagram sent back to us.
    cluster.nodes[0].leave(now);
    let (_, own) = cluster.nodes[0].drain_outgoing(now_ms).next().unwrap();
    let echoed = cluster.nodes[0].handle_datagram(&own, addr(2), now, now_ms);
    assert_eq!(echoed, Err(Dropped::Replayed));
    assert_eq!(
        cluster.nodes[0]
            .stats()
            .auth_failures
            .load(Ordering::Relaxed),
        0
    );
}

#[test]
fn a_lone_node_retries_its_seeds_with_a_growing_backoff() {
    let start = Instant::now();
    let config = joining_config();
    let mut core = MembershipCore::new(member(1), &config, None, 1, start);
    let mut joins = Vec::new();
    let mut reconnects = 0;
    let mut now = start;
    while now < start + secs(30) {
        core.fire_due_timers(now);
        while let Some(announce) = core.due_announce(now) {
            match announce {
                Announce::Join { attempt, retry_in } => {
                    joins.push((attempt, retry_in, now - start))
                }
                Announce::Reconnect => reconnects += 1,
            }
            core.announce(announce, &[addr(0)], now);
        }
        let sent: Vec<_> = core.drain_outgoing(START_MS).collect();
        assert!(sent.iter().all(|(to, _)| *to == addr(0)));
        now = core.next_deadline();
    }
    let ms = Duration::from_millis;
    let expected = [
        (1, ms(500), ms(0)),
        (2, secs(1), ms(500)),
        (3, secs(2), ms(1500)),
        (4, secs(4), ms(3500)),
        (5, secs(5), ms(7500)),
        (6, secs(5), ms(12500)),
        (7, secs(5), ms(17500)),
        (8, secs(5), ms(22500)),
        (9, secs(5), ms(27500)),
    ];
    assert_eq!(joins, expected);
    assert_eq!(reconnects, 9, "every {RECONNECT_EVERY:?}");
}

#[test]
fn a_node_with_members_stops_retrying_its_seeds() {
    let mut cluster = Cluster::new(2, None);
    cluster.up[0] = false;
    cluster.run_for(secs(2));
    cluster.up[0] = true;
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    let later = cluster.now() + secs(60);
    let node = &mut cluster.nodes[1];
    assert_eq!(node.due_announce(later), Some(Announce::Reconnect));
    assert_eq!(node.due_announce(later), None, "no join: it has a member");
}

#[test]
fn after_a_partition_heals_reconnecting_brings_the_halves_together() {
    let mut cluster = Cluster::new(3, None);
    assert!(cluster.run_until(secs(10), Cluster::all_alive));
    // Node 0 has no seeds, and 1 and 2 are not alone: no join announce
    // heals this, only reconnecting.
    cluster.cut(0, 1);
    cluster.cut(0, 2);
    let forgotten = |c: &Cluster| {
        c.nodes[0].active_members() == 0
            && (1..3).all(|i| c.nodes[0].state_of(addr(i)).is_none())
            && (1..3).all(|i| c.nodes[i].state_of(addr(0)).is_none())
    };
    assert!(cluster.run_until(secs(90), forgotten));
    cluster.cut.clear();
    assert!(cluster.run_until(RECONNECT_EVERY * 3, Cluster::all_alive));
}

#[test]
fn the_same_seeds_give_the_same_datagrams() {
    let run = || {
        let mut cluster = Cluster::new(3, None);
        cluster.run_for(secs(5));
        let (now, now_ms) = (cluster.now(), cluster.now_ms());
        cluster.nodes[1].leave(now);
        cluster.nodes[1].drain_outgoing(now_ms).collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}
