//! The workload: on every node, one client task per key family, each doing
//! one operation at a time and recording it in the [`History`].
//!
//! A key is only ever written through one node by one task, one operation
//! after the other (except the hot keys, which exist to be contended). When
//! an operation's outcome is unknown the task abandons the key: the request
//! may still be executed later (a SIGSTOPped node reads it from its socket
//! after SIGCONT), so nothing after it on that key would be ordered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::history::{Action, ELEMENT_SEPARATOR, Family, History, Op, Outcome, Version};

/// How long a request may go unanswered before it is "unknown". Above the
/// WAIT timeout so a WAIT that times out is answered, not abandoned.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_millis(2500);
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1000);
/// WAIT's own timeout, in milliseconds.
pub const WAIT_TIMEOUT_MS: u64 = 1000;
/// TTLs are drawn from this range (milliseconds).
pub const TTL_RANGE: std::ops::RangeInclusive<u64> = 200..=1500;
/// Pause between two operations of one task: keeps the debug build on a
/// two-core machine responsive while still producing a few thousand
/// operations per scenario.
const PACE: Duration = Duration::from_millis(8);
/// The hot keys, written by every node.
pub const HOT_KEYS: usize = 3;
/// The counters, hashes and sets every node writes.
pub const SHARED_TYPED_KEYS: usize = 2;
/// The hash field every node HINCRBYs.
pub const SHARED_FIELD: &str = "count";

/// One connection to one node, remade after anything but a server error.
pub struct Client {
    addr: SocketAddr,
    con: Option<MultiplexedConnection>,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Client { addr, con: None }
    }

    async fn connect(&mut self) -> Result<MultiplexedConnection, String> {
        if let Some(con) = &self.con {
            return Ok(con.clone());
        }
        let config = redis::AsyncConnectionConfig::new()
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        let client =
            redis::Client::open(format!("redis://{}/", self.addr)).map_err(|e| e.to_string())?;
        let con = tokio::time::timeout(
            CONNECT_TIMEOUT * 2,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        .map_err(|_| "connect timed out".to_string())?
        .map_err(|e| format!("connect: {e}"))?;
        self.con = Some(con.clone());
        Ok(con)
    }

    /// Sends `cmd`, classifies the outcome.
    pub async fn run(&mut self, cmd: &redis::Cmd) -> Outcome {
        let mut con = match self.connect().await {
            Ok(c) => c,
            Err(e) => {
                // Nothing was sent. Do not spin against a dead node.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Outcome::Fail(e);
            }
        };
        let reply: Result<redis::Value, redis::RedisError> = cmd.query_async(&mut con).await;
        match reply {
            Ok(redis::Value::Int(i)) => Outcome::Ok(i),
            Ok(_) => Outcome::Ok(0),
            Err(e) => self.failed(e),
        }
    }

    /// A server error means "not executed"; anything else (timeout, reset)
    /// leaves the outcome unknown and the connection is remade.
    fn failed(&mut self, e: redis::RedisError) -> Outcome {
        if matches!(
            e.kind(),
            redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
        ) {
            Outcome::Fail(e.to_string())
        } else {
            self.con = None;
            Outcome::Unknown(e.to_string())
        }
    }

    /// `SET key value` and `DEBUG VERSION key` in one MULTI/EXEC, so the
    /// version read is the one the SET got (a replicated write arriving in
    /// between could only replace it by a larger one, which then also
    /// replaced the value). The version is None unless acknowledged.
    pub async fn set_with_version(&mut self, key: &str, value: &str) -> (Outcome, Option<Version>) {
        let mut con = match self.connect().await {
            Ok(c) => c,
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
                return (Outcome::Fail(e), None);
            }
        };
        let reply: Result<((), Option<(String, String)>), redis::RedisError> = redis::pipe()
            .atomic()
            .cmd("SET")
            .arg(key)
            .arg(value)
            .cmd("DEBUG")
            .arg("VERSION")
            .arg(key)
            .query_async(&mut con)
            .await;
        match reply {
            Ok(((), Some((hlc, node)))) => match (hlc.parse(), node.parse()) {
                (Ok(hlc), Ok(node)) => (Outcome::Ok(0), Some((hlc, node))),
                _ => (
                    Outcome::Fail(format!("bad DEBUG VERSION {hlc} {node}")),
                    None,
                ),
            },
            // Acknowledged, but the key was gone before DEBUG VERSION ran
            // (no hot key is ever deleted, so this is itself suspicious; the
            // checker still sees the write).
            Ok(((), None)) => (Outcome::Ok(0), None),
            Err(e) => (self.failed(e), None),
        }
    }

    /// Like [`run`](Self::run) for a read whose value matters.
    pub async fn query<T: redis::FromRedisValue>(&mut self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut con = self.connect().await?;
        match cmd.query_async(&mut con).await {
            Ok(v) => Ok(v),
            Err(e) => {
                self.con = None;
                Err(e.to_string())
            }
        }
    }
}

/// The running workload; [`Workload::stop`] ends it.
pub struct Workload {
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workload {
    pub fn start(history: Arc<History>, addrs: &[SocketAddr], seed: u64) -> Workload {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        let nodes = addrs.len();
        for (node, &addr) in addrs.iter().enumerate() {
            for (f, family) in Family::ALL.into_iter().enumerate() {
                let worker = Worker {
                    node,
                    nodes,
                    family,
                    client: Client::new(addr),
                    history: history.clone(),
                    rng: fastrand::Rng::with_seed(seed ^ ((node as u64) << 8 | f as u64)),
                };
                tasks.push(tokio::spawn(worker.run(stop.clone())));
            }
        }
        Workload { stop, tasks }
    }

    pub async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.expect("workload task does not panic");
        }
    }
}

struct Worker {
    node: usize,
    nodes: usize,
    family: Family,
    client: Client,
    history: Arc<History>,
    rng: fastrand::Rng,
}

impl Worker {
    async fn run(mut self, stop: Arc<AtomicBool>) {
        let mut seq = 0u64;
        while !stop.load(Ordering::Relaxed) {
            seq += 1;
            self.unit(seq).await;
            tokio::time::sleep(PACE).await;
        }
    }

    /// One operation (or one short sequence on one key).
    async fn unit(&mut self, seq: u64) {
        let (node, prefix) = (self.node, self.family.prefix());
        match self.family {
            Family::Unique => {
                let key = format!("{prefix}{node}:{seq}");
                self.set(&key, format!("v{seq}"), None).await;
            }
            Family::Hot => {
                let key = format!("{prefix}{}", self.rng.usize(0..HOT_KEYS));
                let value = format!("n{node}:{seq}");
                let invoked_ms = self.history.now_ms();
                let (outcome, version) = self.client.set_with_version(&key, &value).await;
                let completed_ms = self.history.now_ms();
                self.history.record(Op {
                    node,
                    family: self.family,
                    key,
                    action: Action::Set {
                        value,
                        ttl_ms: None,
                    },
                    invoked_ms,
                    completed_ms,
                    outcome,
                    version,
                });
            }
            Family::Delete => {
                let key = format!("{prefix}{node}:{seq}");
                if !self.set(&key, "first".into(), None).await.is_ok() {
                    return;
                }
                if !self.op(&key, Action::Del).await.is_ok() {
                    return;
                }
                // A third of them are written again after the DEL: those
                // must be present, the others absent.
                if self.rng.u8(0..3) == 0 {
                    self.set(&key, "again".into(), None).await;
                }
            }
            Family::Wait => {
                let key = format!("{prefix}{node}:{seq}");
                if self.set(&key, format!("v{seq}"), None).await.is_ok() {
                    let want = self.nodes as i64 - 1;
                    self.op(&key, Action::Wait { want }).await;
                }
            }
            Family::Ttl => {
                let key = format!("{prefix}{node}:{seq}");
                let ttl = self.rng.u64(TTL_RANGE);
                self.set(&key, format!("v{seq}"), Some(ttl)).await;
            }
            Family::Counter => {
                let key = format!("{prefix}{}", self.rng.usize(0..SHARED_TYPED_KEYS));
                let by = self.rng.i64(1..=5);
                let mut c = redis::cmd("INCRBY");
                c.arg(&key).arg(by);
                self.record(&key, Action::Incr { by }, &c).await;
            }
            Family::Hash => {
                let key = format!("{prefix}{}", self.rng.usize(0..SHARED_TYPED_KEYS));
                let field = format!("n{node}:{seq}");
                let element = format!("{key}{ELEMENT_SEPARATOR}{field}");
                let value = format!("v{seq}");
                let mut c = redis::cmd("HSET");
                c.arg(&key).arg(&field).arg(&value);
                let set = Action::Set {
                    value,
                    ttl_ms: None,
                };
                if self.record(&element, set, &c).await.is_ok() && self.rng.u8(0..3) == 0 {
                    let mut c = redis::cmd("HDEL");
                    c.arg(&key).arg(&field);
                    self.record(&element, Action::Del, &c).await;
                }
                let by = self.rng.i64(1..=5);
                let mut c = redis::cmd("HINCRBY");
                c.arg(&key).arg(SHARED_FIELD).arg(by);
                let counter = format!("{key}{ELEMENT_SEPARATOR}{SHARED_FIELD}");
                self.record(&counter, Action::Incr { by }, &c).await;
            }
            Family::Set => {
                let key = format!("{prefix}{}", self.rng.usize(0..SHARED_TYPED_KEYS));
                let member = format!("n{node}:{seq}");
                let element = format!("{key}{ELEMENT_SEPARATOR}{member}");
                let mut c = redis::cmd("SADD");
                c.arg(&key).arg(&member);
                let added = Action::Set {
                    value: "1".into(),
                    ttl_ms: None,
                };
                if self.record(&element, added, &c).await.is_ok() && self.rng.u8(0..3) == 0 {
                    let mut c = redis::cmd("SREM");
                    c.arg(&key).arg(&member);
                    self.record(&element, Action::Del, &c).await;
                }
            }
        }
    }

    async fn set(&mut self, key: &str, value: String, ttl_ms: Option<u64>) -> Outcome {
        self.op(key, Action::Set { value, ttl_ms }).await
    }

    async fn op(&mut self, key: &str, action: Action) -> Outcome {
        let cmd = match &action {
            Action::Set { value, ttl_ms } => {
                let mut c = redis::cmd("SET");
                c.arg(key).arg(value);
                if let Some(ttl) = ttl_ms {
                    c.arg("PX").arg(*ttl);
                }
                c
            }
            Action::Del => {
                let mut c = redis::cmd("DEL");
                c.arg(key);
                c
            }
            Action::Wait { want } => {
                let mut c = redis::cmd("WAIT");
                c.arg(*want).arg(WAIT_TIMEOUT_MS);
                c
            }
            Action::Incr { by } => {
                let mut c = redis::cmd("INCRBY");
                c.arg(key).arg(*by);
                c
            }
        };
        self.record(key, action, &cmd).await
    }

    /// Sends `cmd` and records it as `action` on `key` (an element key for
    /// hash and set commands).
    async fn record(&mut self, key: &str, action: Action, cmd: &redis::Cmd) -> Outcome {
        let invoked_ms = self.history.now_ms();
        let outcome = self.client.run(cmd).await;
        let completed_ms = self.history.now_ms();
        self.history.record(Op {
            node: self.node,
            family: self.family,
            key: key.to_owned(),
            action,
            invoked_ms,
            completed_ms,
            outcome: outcome.clone(),
            version: None,
        });
        outcome
    }
}
