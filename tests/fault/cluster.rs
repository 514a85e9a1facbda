//! The node processes: one `kriminodb` per namespace, started with
//! `ip netns exec` (which execs, so the child's pid is the node's own pid and
//! SIGKILL / SIGSTOP reach it directly). Every node logs to its own file in
//! the run's log directory, across restarts.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::history::{EventKind, History};
use super::netns::{Net, NetFaults, sh};
use super::workload::Client;

pub const CLIENT_PORT: u16 = 6379;
pub const PEER_PORT: u16 = 7000;

/// Fast failure detection and anti-entropy, so a scenario of a few seconds
/// sees nodes suspected, declared down, removed and repaired.
const TIMINGS: [&str; 12] = crate::common::process::fast_timings("5s", "300ms");

/// Deadline for a node to log its addresses after being started.
const STARTUP: Duration = Duration::from_secs(30);
/// Deadline for the cluster to form / for a restarted node to catch up.
pub const FORM: Duration = Duration::from_secs(30);

struct Slot {
    child: Option<Child>,
    generation: u32,
    stopped: bool,
}

pub struct Cluster {
    pub net: Net,
    slots: Vec<Slot>,
    bin: PathBuf,
    pub log_dir: PathBuf,
    /// Test-only clock offsets (`--clock-offset-ms`) per node.
    pub offsets: Vec<i64>,
    history: Arc<History>,
    faults: NetFaults,
    /// When each node's link went down (history clock), while it is down.
    down_since: std::collections::BTreeMap<usize, f64>,
    /// See [`Cluster::late_horizon_ms`].
    late_horizon_ms: f64,
}

impl Cluster {
    /// Creates the network and starts every node; node 0 is the seed.
    pub fn start(
        nodes: usize,
        offsets: Vec<i64>,
        bin: &Path,
        log_dir: &Path,
        history: Arc<History>,
    ) -> Cluster {
        assert_eq!(offsets.len(), nodes);
        std::fs::create_dir_all(log_dir).expect("log directory");
        let net = Net::create(nodes);
        let mut c = Cluster {
            net,
            slots: (0..nodes)
                .map(|_| Slot {
                    child: None,
                    generation: 0,
                    stopped: false,
                })
                .collect(),
            bin: bin.to_owned(),
            log_dir: log_dir.to_owned(),
            offsets,
            history,
            faults: NetFaults::default(),
            down_since: Default::default(),
            late_horizon_ms: 0.0,
        };
        for i in 0..nodes {
            c.spawn(i);
        }
        c
    }

    pub fn nodes(&self) -> usize {
        self.slots.len()
    }

    pub fn client_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.net.ip(i)), CLIENT_PORT)
    }

    pub fn client_addrs(&self) -> Vec<SocketAddr> {
        (0..self.nodes()).map(|i| self.client_addr(i)).collect()
    }

    fn peer_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(self.net.ip(i)), PEER_PORT)
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.log_dir.join(format!("node{i}.log"))
    }

    /// Starts node `i` (a new, empty process) and waits until it logs its
    /// addresses, which must be the ones asked for. The first start of node
    /// 0 bootstraps the cluster; every other start joins all other nodes.
    pub fn spawn(&mut self, i: usize) {
        assert!(self.slots[i].child.is_none(), "node {i} already runs");
        let path = self.log_path(i);
        let mut log: File = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .expect("node log file");
        let generation = self.slots[i].generation;
        writeln!(
            log,
            "=== harness: node {i} process #{generation} starts at t={:.0}ms ===",
            self.history.now_ms()
        )
        .unwrap();
        let from = log.metadata().unwrap().len();
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.net.ns(i)])
            .arg(&self.bin)
            .args(["--bind", &self.net.ip(i).to_string()])
            // The workload connects from the host's bridge address.
            .args(["--protected-mode", "no"])
            .args(["--port", &CLIENT_PORT.to_string()])
            .args(["--peer-port", &PEER_PORT.to_string()])
            .args(["--name", &format!("n{i}")])
            .args(["--log-level", "info"])
            .args(TIMINGS)
            .args(["--clock-offset-ms", &self.offsets[i].to_string()]);
        let bootstrap = i == 0 && generation == 0;
        if !bootstrap {
            let seeds: Vec<String> = (0..self.nodes())
                .filter(|&j| j != i)
                .map(|j| self.peer_addr(j).to_string())
                .collect();
            cmd.args(["--join", &seeds.join(",")]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("ip netns exec kriminodb starts");
        self.slots[i].child = Some(child);
        self.slots[i].generation += 1;
        self.slots[i].stopped = false;
        self.history.event(Some(i), EventKind::Start);
        self.wait_for_addresses(i, &path, from);
    }

    /// Reads the node's log from `from` until it shows `client_addr=` and
    /// `peer_addr=`, and checks they are the node's own addresses.
    fn wait_for_addresses(&mut self, i: usize, path: &Path, from: u64) {
        let until = Instant::now() + STARTUP;
        loop {
            let text = std::fs::read(path).unwrap_or_default();
            let text = String::from_utf8_lossy(&text[from as usize..]).into_owned();
            if let Some(line) = text.lines().find(|l| l.contains("client_addr=")) {
                let field = |key: &str| -> Option<SocketAddr> {
                    line.split(key)
                        .nth(1)?
                        .split_whitespace()
                        .next()?
                        .parse()
                        .ok()
                };
                assert_eq!(
                    (field("client_addr="), field("peer_addr=")),
                    (Some(self.client_addr(i)), Some(self.peer_addr(i))),
                    "node {i} logged other addresses than asked: {line}"
                );
                return;
            }
            let exited = self.slots[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            assert!(
                exited.is_none(),
                "node {i} exited ({exited:?}) before logging its addresses:\n{text}"
            );
            assert!(
                Instant::now() < until,
                "node {i} did not log its addresses within {STARTUP:?}:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn pid(&self, i: usize) -> String {
        self.slots[i]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {i} is not running"))
            .id()
            .to_string()
    }

    /// SIGKILL: no goodbye, no flush; the node's unpushed writes are gone.
    pub fn kill9(&mut self, i: usize) {
        let mut child = self.slots[i].child.take().expect("node runs");
        child.kill().unwrap();
        child.wait().unwrap();
        self.history.event(Some(i), EventKind::Kill);
    }

    /// SIGTERM and wait for the graceful exit (deadline 30 s, then it is a
    /// failure: a node that does not stop is a product bug).
    pub fn terminate(&mut self, i: usize) {
        let pid = self.pid(i);
        self.history.event(Some(i), EventKind::Term);
        let (ok, text) = sh("kill", &["-TERM", &pid]);
        assert!(ok, "kill -TERM {pid}: {text}");
        let mut child = self.slots[i].child.take().unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(status.success(), "node {i} exited with {status} on SIGTERM");
                return;
            }
            if Instant::now() > until {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {i} did not stop within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn sigstop(&mut self, i: usize) {
        let pid = self.pid(i);
        assert!(sh("kill", &["-STOP", &pid]).0);
        self.slots[i].stopped = true;
        self.history.event(Some(i), EventKind::Stop);
    }

    pub fn sigcont(&mut self, i: usize) {
        let pid = self.pid(i);
        assert!(sh("kill", &["-CONT", &pid]).0);
        self.slots[i].stopped = false;
        self.history.event(Some(i), EventKind::Cont);
    }

    /// Applies network faults (replacing the previous ones).
    pub fn set_faults(&mut self, faults: NetFaults, what: &str) {
        self.net.apply(&faults);
        let now = self.history.now_ms();
        for i in 0..self.nodes() {
            if faults.down.contains(&i) {
                self.down_since.entry(i).or_insert(now);
            } else if let Some(since) = self.down_since.remove(&i) {
                self.late_horizon_ms = self.late_horizon_ms.max(now + (now - since) + 1000.0);
            }
        }
        self.faults = faults;
        self.history.event(None, EventKind::Net(what.to_owned()));
    }

    /// Ends every fault: the network is whole, stopped nodes continue,
    /// killed nodes are restarted.
    pub fn heal_all(&mut self) {
        self.set_faults(NetFaults::default(), "heal network");
        for i in 0..self.nodes() {
            if self.slots[i].stopped {
                self.sigcont(i);
            }
            if self.slots[i].child.is_none() {
                self.spawn(i);
            }
        }
        self.history.event(None, EventKind::Heal);
    }

    /// Until when (history clock) a request sent to a node whose link was
    /// down may still arrive and take effect. The client gives up after its
    /// timeout and closes the connection, but the kernel keeps
    /// retransmitting the request with exponential backoff (RTO 200 ms,
    /// doubling): the first retransmission after the link comes back is at
    /// most about one outage length after it. A second is added as margin.
    pub fn late_horizon_ms(&self) -> f64 {
        self.late_horizon_ms
    }

    /// Keeps the logs of a failed run; removes them after a good one unless
    /// asked to keep them.
    pub fn finish_logs(&self, failed: bool, keep: bool) {
        if failed || keep {
            eprintln!("node logs kept in {}", self.log_dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGKILL also ends a stopped process. The namespaces and the bridge
        // go when `net` is dropped right after.
        for slot in &mut self.slots {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Ok when node `i` is linked to every other node, has finished its initial
/// sync and sees every member alive.
pub async fn linked(client: &mut Client, nodes: usize) -> Result<(), String> {
    let info: String = client.query(redis::cmd("INFO").arg("everything")).await?;
    let field = |name: &str| -> Option<String> {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    };
    let want = [
        ("peers_linked", (nodes - 1).to_string()),
        ("initial_sync_done", "1".to_string()),
        ("members_alive", nodes.to_string()),
        ("members", nodes.to_string()),
    ];
    for (name, value) in want {
        if field(name).as_deref() != Some(value.as_str()) {
            return Err(format!("{name} is {:?}, want {value}", field(name)));
        }
    }
    Ok(())
}
