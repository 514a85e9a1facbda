//! The history: every client operation with its invocation and completion
//! time and its outcome, and every fault the harness injected, on one clock
//! (milliseconds since the scenario started, `Instant`-based so the nodes'
//! skewed clocks never enter it).

use std::sync::Mutex;
use std::time::Instant;

/// Which property a key belongs to; fixed by its key prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// `u:…` written once: must be on every node after healing.
    Unique,
    /// `h:…` a few keys written concurrently by every node.
    Hot,
    /// `d:…` SET then DEL (sometimes SET again): no resurrection.
    Delete,
    /// `w:…` SET then WAIT n-1: if WAIT said n-1, never lost.
    Wait,
    /// `t:…` SET … PX: gone everywhere after its time.
    Ttl,
    /// `c:…` a few counters every node INCRBYs: every acknowledged
    /// increment counted exactly once.
    Counter,
    /// `hs:…` a few hashes every node HSETs its own fields in (some then
    /// HDELed) and HINCRBYs one shared field of: no lost or resurrected
    /// field, exact field counter.
    Hash,
    /// `st:…` a few sets every node SADDs its own members to (some then
    /// SREMed): no lost or resurrected member.
    Set,
}

/// Separates a hash's or set's key from a field or member in the
/// history's (and the dump's) element keys: each field and member is
/// checked as a key of its own, written by one node.
pub const ELEMENT_SEPARATOR: char = '\u{1}';

impl Family {
    pub const ALL: [Family; 8] = [
        Family::Unique,
        Family::Hot,
        Family::Delete,
        Family::Wait,
        Family::Ttl,
        Family::Counter,
        Family::Hash,
        Family::Set,
    ];

    pub fn prefix(self) -> &'static str {
        match self {
            Family::Unique => "u:",
            Family::Hot => "h:",
            Family::Delete => "d:",
            Family::Wait => "w:",
            Family::Ttl => "t:",
            Family::Counter => "c:",
            Family::Hash => "hs:",
            Family::Set => "st:",
        }
    }
}

#[derive(Debug, Clone)]
pub enum Action {
    Set {
        value: String,
        ttl_ms: Option<u64>,
    },
    Del,
    /// `WAIT want timeout` after the SET before it on the same connection.
    Wait {
        want: i64,
    },
    /// INCRBY, or HINCRBY of a hash field (the element key names it).
    Incr {
        by: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged; the integer reply (DEL, WAIT) or 0.
    Ok(i64),
    /// Definitely not executed: the connection could not be made, or the
    /// server answered with an error.
    Fail(String),
    /// Sent, but no answer (timeout, connection reset): it may or may not
    /// have taken effect, possibly later than the client gave up.
    Unknown(String),
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok(_))
    }
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown(_))
    }
}

#[derive(Debug, Clone)]
pub struct Op {
    /// The node (index) whose client port the operation was sent to.
    pub node: usize,
    pub family: Family,
    pub key: String,
    pub action: Action,
    pub invoked_ms: f64,
    pub completed_ms: f64,
    pub outcome: Outcome,
    /// The version the node stamped the write with (hot-key SETs only: they
    /// run in MULTI with `DEBUG VERSION`), when acknowledged.
    pub version: Option<Version>,
}

/// A write's version as `DEBUG VERSION` reports it: (HLC, node id), ordered
/// as the node orders versions.
pub type Version = (u64, u64);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// SIGKILL: whatever the node had not pushed yet is gone.
    Kill,
    /// SIGTERM (graceful stop, as in a rolling restart).
    Term,
    /// A new, empty process at the node's address.
    Start,
    Stop,
    Cont,
    Net(String),
    Heal,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub at_ms: f64,
    pub node: Option<usize>,
    pub kind: EventKind,
}

#[derive(Debug)]
pub struct History {
    t0: Instant,
    ops: Mutex<Vec<Op>>,
    events: Mutex<Vec<Event>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        History {
            t0: Instant::now(),
            ops: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
        }
    }

    pub fn now_ms(&self) -> f64 {
        self.t0.elapsed().as_secs_f64() * 1000.0
    }

    pub fn record(&self, op: Op) {
        self.ops.lock().unwrap().push(op);
    }

    pub fn event(&self, node: Option<usize>, kind: EventKind) {
        let at_ms = self.now_ms();
        self.events
            .lock()
            .unwrap()
            .push(Event { at_ms, node, kind });
    }

    pub fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }
}
