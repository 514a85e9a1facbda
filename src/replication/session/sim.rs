//! A cluster in one thread, for the session tests: a few stores on one
//! manual clock and, for every ordered pair of them, a link as a node runs
//! it (the initiator at one end, the responder at the other, a queue of
//! encoded frames each way). Nothing happens by itself: a test polls
//! initiators, delivers frames, cuts and heals links and advances time, so
//! every interleaving is a list of operations, with no sockets and no
//! sleeps.
//!
//! A cut drops what is in flight and ends both sessions, as a broken TCP
//! link does; a heal connects again (a new initiator, and a new responder
//! once the Hello is in). The push path is a node's drained changes
//! encoded as the distributor encodes them.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::{Bookkeeping, Initiator, Local, Now, Outcome, Responder};
use crate::clock::{Clock, ManualTime, TimeSource};
use crate::config::Config;
use crate::replication::ReplicationStats;
use crate::replication::wire::{self, CHUNK_ENTRIES, Inbound, Message};
use crate::store::{Change, ChangeReader, Expiry, Store};

/// Far more deliveries than any test's reconciliations take: a session
/// that never ends is a bug, not a slow test.
const MAX_DELIVERIES: usize = 200_000;
/// Far more timer firings than settling any test's cluster takes.
const MAX_TIMERS: usize = 1_000;

pub struct SimNode {
    pub store: Store,
    /// The push path's reader of the store's change log.
    pusher: ChangeReader,
    pub bookkeeping: Mutex<Bookkeeping>,
    pub stats: ReplicationStats,
    /// Receives nothing and answers nothing, its links left up (a peer
    /// that stopped mid-conversation).
    pub silent: bool,
}

impl SimNode {
    pub fn local(&self) -> Local<'_> {
        Local {
            store: &self.store,
            bookkeeping: &self.bookkeeping,
            stats: &self.stats,
        }
    }

    pub fn node_id(&self) -> u64 {
        self.store.clock().hlc().node_id()
    }
}

/// One direction's link: `from`'s initiator and `to`'s responder.
struct SimLink {
    from: usize,
    to: usize,
    connection: Option<Connection>,
    connections: u32,
    /// The highest change sequence acknowledged (the link's `acked`).
    acked: u64,
    /// What each message from the responder meant, but Continue.
    outcomes: Vec<Outcome>,
}

struct Connection {
    initiator: Initiator,
    responder: Responder,
    /// Frames from the initiator's node to the responder's.
    forward: VecDeque<Vec<u8>>,
    /// Frames from the responder's node back.
    back: VecDeque<Vec<u8>>,
}

pub struct Sim {
    pub time: Arc<ManualTime>,
    pub nodes: Vec<SimNode>,
    links: Vec<SimLink>,
    /// Bytes of every frame delivered so far (what a repair cost).
    pub delivered_bytes: usize,
}

impl Sim {
    /// `n` nodes (ids 1..=n) with `config`, every link down, each node
    /// knowing every other (as membership would have told it).
    pub fn new(n: usize, config: &Config) -> Self {
        let (source, time) = TimeSource::manual(1_700_000_000_000);
        let nodes: Vec<SimNode> = (1..=n as u64)
            .map(|id| {
                let clock = Clock::new(source.clone(), id);
                let bookkeeping = Bookkeeping::new(config, clock.now());
                let store = Store::new(clock);
                let pusher = store.subscribe(crate::replication::PUSHED);
                SimNode {
                    pusher,
                    store,
                    bookkeeping: Mutex::new(bookkeeping),
                    stats: ReplicationStats::default(),
                    silent: false,
                }
            })
            .collect();
        let links = (0..n)
            .flat_map(|from| {
                (0..n)
                    .filter(move |&to| to != from)
                    .map(move |to| (from, to))
            })
            .map(|(from, to)| SimLink {
                from,
                to,
                connection: None,
                connections: 0,
                acked: 0,
                outcomes: Vec::new(),
            })
            .collect();
        let sim = Self {
            time,
            nodes,
            links,
            delivered_bytes: 0,
        };
        for node in 0..n {
            sim.saw_alive(node);
        }
        sim
    }

    /// `n` nodes, every link up and the first reconciliations (of empty
    /// stores) done; [`Self::outcomes`] count from then.
    pub fn cluster(n: usize, config: &Config) -> Self {
        let mut sim = Self::new(n, config);
        sim.heal_all();
        sim.settle();
        for link in &mut sim.links {
            link.outcomes.clear();
        }
        sim
    }

    pub fn now(&self) -> Now {
        Now::read(self.nodes[0].store.clock())
    }

    pub fn advance(&self, by: Duration) {
        self.time.advance(by);
    }

    pub fn store(&self, node: usize) -> &Store {
        &self.nodes[node].store
    }

    /// Membership at `node` reports every other node alive.
    pub fn saw_alive(&self, node: usize) {
        let now_ms = self.now().unix_ms;
        let mut bookkeeping = self.nodes[node].bookkeeping.lock();
        for (other, peer) in self.nodes.iter().enumerate() {
            if other != node {
                bookkeeping.saw_alive(peer.node_id(), now_ms);
            }
        }
    }

    pub fn set(&self, node: usize, key: &str, value: &str) {
        let store = self.store(node);
        store.with_key(key.as_bytes(), self.now().unix_ms, |k| {
            k.set(value.as_bytes(), Expiry::Persist)
        });
    }

    /// HSET of one field at `node`.
    pub fn hset(&self, node: usize, key: &str, field: &str, value: &str) {
        let store = self.store(node);
        store.with_key(key.as_bytes(), self.now().unix_ms, |k| {
            k.write_typed(|t, version, now_ms| {
                let mut delta = t.delta();
                t.hash_set(
                    field.as_bytes(),
                    value.as_bytes(),
                    version,
                    now_ms,
                    &mut delta,
                );
                ((), Some(delta))
            })
        });
    }

    pub fn del(&self, node: usize, key: &str) {
        let store = self.store(node);
        store.with_key(key.as_bytes(), self.now().unix_ms, |k| k.delete());
    }

    pub fn flush_all(&self, node: usize) {
        self.store(node).flush_all();
    }

    /// The value of `key` at `node`, None if absent or deleted.
    pub fn get(&self, node: usize, key: &str) -> Option<String> {
        let store = self.store(node);
        store.with_key(key.as_bytes(), self.now().unix_ms, |k| {
            k.value().map(|v| String::from_utf8_lossy(v).into_owned())
        })
    }

    fn link_index(&self, from: usize, to: usize) -> usize {
        self.links
            .iter()
            .position(|l| l.from == from && l.to == to)
            .expect("a link between two distinct nodes")
    }

    /// Connects `from`'s link to `to` (if down): the Hello goes first.
    pub fn connect(&mut self, from: usize, to: usize) {
        let now = self.now();
        let i = self.link_index(from, to);
        let link = &mut self.links[i];
        if link.connection.is_some() {
            return;
        }
        let (me, peer) = (&self.nodes[from], &self.nodes[to]);
        let hello = Message::Hello {
            node_id: me.node_id(),
            incarnation: 1,
            hlc: me.store.clock().hlc().current(),
        };
        let responder = Responder::accept(peer.local(), hello).expect("a Hello opens a link");
        let first = link.connections == 0;
        link.connections += 1;
        link.connection = Some(Connection {
            initiator: Initiator::connected(me.node_id(), peer.node_id(), first, now.instant),
            responder,
            forward: VecDeque::new(),
            back: VecDeque::new(),
        });
    }

    /// Breaks `from`'s link to `to`: frames in flight are lost and both
    /// ends' sessions end.
    pub fn disconnect(&mut self, from: usize, to: usize) {
        let i = self.link_index(from, to);
        if let Some(connection) = self.links[i].connection.take() {
            connection.initiator.close(self.nodes[from].local());
        }
    }

    /// Cuts both links between `a` and `b`.
    pub fn cut(&mut self, a: usize, b: usize) {
        self.disconnect(a, b);
        self.disconnect(b, a);
    }

    /// Connects both links between `a` and `b` again.
    pub fn heal(&mut self, a: usize, b: usize) {
        self.connect(a, b);
        self.connect(b, a);
    }

    pub fn heal_all(&mut self) {
        for i in 0..self.links.len() {
            let (from, to) = (self.links[i].from, self.links[i].to);
            self.connect(from, to);
        }
    }

    /// Every time the initiator of `from`'s link to `to` gave up, completed
    /// or was told busy.
    pub fn outcomes(&self, from: usize, to: usize) -> &[Outcome] {
        &self.links[self.link_index(from, to)].outcomes
    }

    /// What `to` acknowledged of `from`'s changes.
    pub fn acked(&self, from: usize, to: usize) -> u64 {
        self.links[self.link_index(from, to)].acked
    }

    /// The reconciliation `from`'s initiator is running with `to`, if any.
    pub fn session(&self, from: usize, to: usize) -> Option<u64> {
        let link = &self.links[self.link_index(from, to)];
        link.connection.as_ref()?.initiator.session()
    }

    /// The rotation's turn for `from`'s link to `to`.
    pub fn request_sync(&mut self, from: usize, to: usize) {
        let i = self.link_index(from, to);
        if let Some(c) = self.links[i].connection.as_mut() {
            c.initiator.request_sync();
        }
    }

    /// Requests a reconciliation on every link, then settles.
    pub fn reconcile_all(&mut self) {
        for i in 0..self.links.len() {
            let (from, to) = (self.links[i].from, self.links[i].to);
            self.request_sync(from, to);
        }
        self.settle();
    }

    /// The push path: `node`'s queued changes, in Updates frames as the
    /// distributor encodes them, onto each of its links that is up.
    pub fn push(&mut self, node: usize) {
        let sim_node = &self.nodes[node];
        let batch = sim_node
            .store
            .read_changes(&sim_node.pusher)
            .expect("the simulation reads every change it makes");
        let changes: Vec<&Change> = batch.iter().collect();
        for chunk in changes.chunks(CHUNK_ENTRIES) {
            let last_seq = chunk.last().map_or(0, |c| c.seq);
            let frame = wire::encode_updates(chunk, last_seq).expect("encodes");
            for link in self.links.iter_mut().filter(|l| l.from == node) {
                if let Some(c) = link.connection.as_mut() {
                    c.forward.push_back(frame.clone());
                }
            }
        }
    }

    /// Lets `from`'s initiator for `to` fire what is due; true if it sent
    /// something.
    pub fn poll(&mut self, from: usize, to: usize) -> bool {
        let now = self.now();
        let i = self.link_index(from, to);
        let local = self.nodes[from].local();
        let Some(c) = self.links[i].connection.as_mut() else {
            return false;
        };
        let Some(message) = c.initiator.poll(local, now) else {
            return false;
        };
        c.forward.push_back(encode(message));
        true
    }

    /// Delivers the next frame on `from`'s link to `to`, towards the
    /// responder if `forward`, else back to the initiator; true if there
    /// was one. A silent node's frames are lost.
    pub fn deliver(&mut self, from: usize, to: usize, forward: bool) -> bool {
        let now = self.now();
        let i = self.link_index(from, to);
        let link = &mut self.links[i];
        let Some(c) = link.connection.as_mut() else {
            return false;
        };
        let queue = if forward { &mut c.forward } else { &mut c.back };
        let Some(frame) = queue.pop_front() else {
            return false;
        };
        self.delivered_bytes += frame.len();
        let (sender, receiver) = if forward { (from, to) } else { (to, from) };
        if self.nodes[sender].silent || self.nodes[receiver].silent {
            return true;
        }
        if forward {
            let local = self.nodes[to].local();
            match wire::decode_inbound(&frame).expect("decodes") {
                Inbound::Updates(updates) => {
                    let ack = c.responder.updates(local, updates, now.unix_ms);
                    c.back.push_back(encode(ack));
                }
                Inbound::Other(message) => {
                    let replies = c
                        .responder
                        .handle(local, message, now)
                        .expect("an honest initiator sends nothing unexpected");
                    c.back.extend(replies.into_iter().map(encode));
                }
            }
        } else {
            let local = self.nodes[from].local();
            let message = wire::decode(&frame).expect("decodes");
            let step = c
                .initiator
                .handle(local, message, now)
                .expect("an honest responder sends nothing unexpected");
            c.forward.extend(step.send.into_iter().map(encode));
            if let Some(seq) = step.acked {
                link.acked = link.acked.max(seq);
            }
            if step.outcome != Outcome::Continue {
                link.outcomes.push(step.outcome);
            }
        }
        true
    }

    /// Delivers everything on `from`'s link to `to`, both ways, until
    /// neither end has anything more to say.
    pub fn converse(&mut self, from: usize, to: usize) {
        let mut budget = MAX_DELIVERIES;
        while self.deliver(from, to, true) || self.deliver(from, to, false) {
            budget = budget.checked_sub(1).expect("the conversation ends");
        }
    }

    /// Polls every initiator and delivers every frame, round-robin over
    /// the links, until nothing is in flight and nothing is due now.
    pub fn run(&mut self) {
        let mut budget = MAX_DELIVERIES;
        loop {
            let mut busy = false;
            for i in 0..self.links.len() {
                let (from, to) = (self.links[i].from, self.links[i].to);
                busy |= self.poll(from, to);
                busy |= self.deliver(from, to, true);
                busy |= self.deliver(from, to, false);
            }
            if !busy {
                return;
            }
            budget = budget.checked_sub(1).expect("the cluster quiets down");
        }
    }

    /// [`Self::run`], then advances time to the next timer any initiator
    /// waits for and runs again, until no initiator waits for anything.
    pub fn settle(&mut self) {
        for _ in 0..MAX_TIMERS {
            self.run();
            // A silent node's links wait for nothing that will come.
            let next = self
                .links
                .iter()
                .filter(|l| !self.nodes[l.from].silent && !self.nodes[l.to].silent)
                .filter_map(|l| l.connection.as_ref()?.initiator.next_wakeup())
                .min();
            let Some(at) = next else {
                return;
            };
            let now = self.now().instant;
            self.advance(at.saturating_duration_since(now));
        }
        panic!("the cluster does not settle");
    }

    /// `node` after a collection pass at the current time: its tombstone
    /// horizon updated (the rotation's tick) and the store swept.
    pub fn tombstones_after_collection(&self, node: usize) -> usize {
        let now_ms = self.now().unix_ms;
        let n = &self.nodes[node];
        n.bookkeeping.lock().update_horizon(&n.store, now_ms);
        n.store.active_expire(now_ms);
        n.store.tombstone_len()
    }

    /// Panics unless every node holds the same entries (tombstones and
    /// versions included) and the same live digest.
    pub fn assert_converged(&self) {
        let now_ms = self.now().unix_ms;
        let first = &self.nodes[0].store;
        for (i, node) in self.nodes.iter().enumerate().skip(1) {
            assert_eq!(
                node.store.dump(),
                first.dump(),
                "node {i} differs from node 0"
            );
            assert_eq!(
                node.store.digest(now_ms),
                first.digest(now_ms),
                "node {i}'s digest"
            );
            assert_eq!(
                node.store.truncated(),
                first.truncated(),
                "node {i}'s FLUSHALL"
            );
        }
    }
}

fn encode(message: Message) -> Vec<u8> {
    wire::encode(message).expect("encodes")
}
