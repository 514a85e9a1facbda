//! What a handler runs in: the node's [`Services`], its client, the reply
//! it writes, the batch's clock reading, the client's MULTI state, and
//! what it tells the session to do next.

use super::args::Args;
use super::services::Services;
use crate::clients::ClientInfo;
use crate::clock::Version;
use crate::resp::Reply;
use crate::store::Store;

/// What the connection does after a command's reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Continue,
    /// Send the replies so far, then close (QUIT, SHUTDOWN).
    Close,
    /// WAIT: reply once `replicas` peers acknowledged this client's
    /// writes, or after `timeout_ms` (0: no timeout).
    Wait {
        replicas: usize,
        timeout_ms: u64,
    },
    /// EXEC: run the queued transaction with the node to itself.
    Exec,
}

/// Everything a handler may touch.
pub struct Ctx<'a> {
    pub services: &'a Services,
    pub client: &'a ClientInfo,
    pub reply: &'a mut Reply,
    pub now_ms: u64,
    pub after: After,
    /// Set when the command was a write (WAIT waits for those).
    pub wrote: bool,
    /// Set inside EXEC, which checked memory once for the whole queue.
    pub memory_checked: bool,
    pub tx: &'a mut Transaction,
    /// The client has yet to authenticate: only `no_auth` commands run.
    pub auth_pending: bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        services: &'a Services,
        client: &'a ClientInfo,
        reply: &'a mut Reply,
        now_ms: u64,
        tx: &'a mut Transaction,
    ) -> Self {
        Self {
            services,
            client,
            reply,
            now_ms,
            after: After::Continue,
            wrote: false,
            memory_checked: false,
            tx,
            auth_pending: false,
        }
    }

    pub fn store(&self) -> &Store {
        &self.services.store
    }
}

/// A queued command's arguments, owned.
pub type Queued = Vec<Vec<Vec<u8>>>;
/// WATCHed keys and the version each had when watched (None: absent).
pub type Watched = Vec<(Vec<u8>, Option<Version>)>;

/// A connection's transaction state.
#[derive(Debug, Default)]
pub struct Transaction {
    /// Commands queued since MULTI (owned: the read buffer moves on).
    queued: Option<Queued>,
    /// A command was refused while queueing: EXEC must abort.
    dirty: bool,
    watched: Watched,
}

impl Transaction {
    pub fn in_multi(&self) -> bool {
        self.queued.is_some()
    }

    /// MULTI: commands are queued from now on.
    pub fn begin(&mut self) {
        self.queued = Some(Vec::new());
    }

    /// A command was refused while queueing: EXEC aborts.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// WATCH: `key` held `version` (None: absent) when watched.
    pub fn watch(&mut self, key: &[u8], version: Option<Version>) {
        self.watched.push((key.to_vec(), version));
    }

    /// UNWATCH.
    pub fn unwatch(&mut self) {
        self.watched.clear();
    }

    /// Queues a command sent after MULTI (dispatch checked it).
    pub fn push(&mut self, args: &Args<'_>) {
        if let Some(queued) = self.queued.as_mut() {
            queued.push(args.iter().map(<[u8]>::to_vec).collect());
        }
    }

    /// A command was refused before it could be queued (out of memory):
    /// EXEC must abort.
    pub fn refuse(&mut self) {
        self.dirty = true;
    }

    /// Takes what EXEC runs: None if it must abort (an error while
    /// queueing), and whether a watched key changed.
    pub fn take(&mut self) -> (Option<Queued>, Watched) {
        let queued = self.queued.take();
        let dirty = std::mem::take(&mut self.dirty);
        let watched = std::mem::take(&mut self.watched);
        (queued.filter(|_| !dirty), watched)
    }
}
