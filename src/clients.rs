//! What the node knows about each connected client, for CLIENT LIST/INFO
//! and the idle timeout, and the registry of connected clients. It never
//! reads or writes a socket: the connection does, and reports here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;

#[derive(Debug, Default)]
struct Mutable {
    name: Option<String>,
    lib_name: Option<String>,
    lib_ver: Option<String>,
}

/// One client connection. Written by its own connection task; read by
/// CLIENT LIST from others, so the mutable parts sit behind a short lock.
#[derive(Debug)]
pub struct ClientInfo {
    pub id: u64,
    pub addr: SocketAddr,
    pub laddr: SocketAddr,
    pub fd: i32,
    created: Instant,
    /// Unix ms of the last batch of commands (for CLIENT LIST idle=).
    last_active_ms: AtomicU64,
    resp3: AtomicBool,
    /// Position in the command table of the last command (set per command,
    /// so an atomic store rather than a lock).
    last_command: AtomicUsize,
    mutable: Mutex<Mutable>,
    /// Set once AUTH (or HELLO AUTH) succeeds; a later failed AUTH leaves it
    /// set, as in Redis.
    authenticated: AtomicBool,
    /// Blocked in WAIT: not idle, whatever its last activity (Redis never
    /// times out blocked clients on `timeout`).
    blocked: AtomicBool,
    /// Cancelled to close the connection (idle timeout, node shutdown: it
    /// is a child of the node's shutdown token).
    pub kill: CancellationToken,
}

const NO_COMMAND: usize = usize::MAX;

impl ClientInfo {
    pub fn new(
        id: u64,
        addr: SocketAddr,
        laddr: SocketAddr,
        fd: i32,
        kill: CancellationToken,
        clock: &Clock,
    ) -> Self {
        Self {
            id,
            addr,
            laddr,
            fd,
            created: clock.now(),
            last_active_ms: AtomicU64::new(clock.wall_ms()),
            resp3: AtomicBool::new(false),
            last_command: AtomicUsize::new(NO_COMMAND),
            mutable: Mutex::new(Mutable::default()),
            authenticated: AtomicBool::new(false),
            blocked: AtomicBool::new(false),
            kill,
        }
    }

    pub fn name(&self) -> Option<String> {
        self.mutable.lock().name.clone()
    }

    pub fn set_name(&self, name: Option<String>) {
        self.mutable.lock().name = name;
    }

    pub fn set_lib(&self, name: Option<String>, version: Option<String>) {
        let mut m = self.mutable.lock();
        if name.is_some() {
            m.lib_name = name;
        }
        if version.is_some() {
            m.lib_ver = version;
        }
    }

    pub fn set_last_command(&self, index: usize) {
        self.last_command.store(index, Ordering::Relaxed);
    }

    pub fn set_resp3(&self, on: bool) {
        self.resp3.store(on, Ordering::Relaxed);
    }

    pub fn is_authenticated(&self) -> bool {
        self.authenticated.load(Ordering::Relaxed)
    }

    pub fn set_authenticated(&self) {
        self.authenticated.store(true, Ordering::Relaxed);
    }

    pub fn set_blocked(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }

    pub fn is_blocked(&self) -> bool {
        self.blocked.load(Ordering::Relaxed)
    }

    /// Marks activity at `now_ms` (unix ms): once per batch of commands, on
    /// a read that completes no command, on each partial write of a big
    /// reply, and when WAIT returns. The
    /// batch's clock reading is reused: an `Instant::elapsed` here was 90
    /// of 3,700 instructions per GET (callgrind).
    pub fn touch(&self, now_ms: u64) {
        self.last_active_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Milliseconds since the client last sent bytes or took a reply, at
    /// `now_ms` (unix ms).
    pub fn idle_ms(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.last_active_ms.load(Ordering::Relaxed))
    }

    /// Position in the command table of the last command it ran.
    pub fn last_command(&self) -> Option<usize> {
        match self.last_command.load(Ordering::Relaxed) {
            NO_COMMAND => None,
            index => Some(index),
        }
    }

    /// One line of CLIENT LIST, in Redis 7's field order, as of `clock`'s
    /// time; `last_command` is the name of the last command it ran.
    fn describe(&self, clock: &Clock, last_command: Option<&str>) -> String {
        let m = self.mutable.lock();
        let age = clock.since(self.created);
        let idle_ms = self.idle_ms(clock.wall_ms());
        format!(
            "id={} addr={} laddr={} fd={} name={} age={} idle={} flags=N db=0 sub=0 psub=0 ssub=0 \
             multi=-1 qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=0 rbp=0 obl=0 oll=0 omem=0 \
             tot-mem=0 events=r cmd={} user=default redir=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.addr,
            self.laddr,
            self.fd,
            m.name.as_deref().unwrap_or(""),
            age.as_secs(),
            idle_ms / 1000,
            last_command.unwrap_or("NULL"),
            if self.resp3.load(Ordering::Relaxed) {
                3
            } else {
                2
            },
            m.lib_name.as_deref().unwrap_or(""),
            m.lib_ver.as_deref().unwrap_or(""),
        )
    }
}

/// Connected clients by id (ids grow, so CLIENT LIST is in connection order).
#[derive(Debug)]
pub struct Registry {
    next_id: AtomicU64,
    clients: Mutex<BTreeMap<u64, Arc<ClientInfo>>>,
    /// The name of the command at an index of the command table, which
    /// the registry does not know (CLIENT LIST's `cmd=`).
    command_name: fn(usize) -> &'static str,
}

impl Registry {
    pub fn new(command_name: fn(usize) -> &'static str) -> Self {
        Self {
            next_id: AtomicU64::new(0),
            clients: Mutex::new(BTreeMap::new()),
            command_name,
        }
    }

    /// `client`'s line of CLIENT LIST, as of `clock`'s time.
    pub fn describe(&self, client: &ClientInfo, clock: &Clock) -> String {
        client.describe(clock, client.last_command().map(self.command_name))
    }

    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub fn add(&self, client: Arc<ClientInfo>) {
        self.clients.lock().insert(client.id, client);
    }

    pub fn remove(&self, id: u64) {
        self.clients.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.clients.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn snapshot(&self) -> Vec<Arc<ClientInfo>> {
        self.clients.lock().values().cloned().collect()
    }
}
