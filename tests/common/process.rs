//! Real `kriminodb` processes for multi-process tests: spawn the built
//! binary, learn its addresses from its startup log line, keep its log for
//! diagnosis, and kill every process of a test when it ends (also when it
//! panics, and then print their logs).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

pub const BIN: &str = env!("CARGO_BIN_EXE_kriminodb");

/// One running node process.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub client: SocketAddr,
    pub peer: SocketAddr,
    /// Everything it logged, shown if the test fails.
    pub log: Arc<Mutex<Vec<String>>>,
}

/// Fast membership and anti-entropy timings for multi-process tests: a
/// silent member is suspected within a few hundred milliseconds and down
/// after a second; how long a down member stays listed and how often
/// anti-entropy runs are each test's choice.
pub const fn fast_timings<'a>(remove_down_after: &'a str, sync_interval: &'a str) -> [&'a str; 12] {
    [
        "--probe-period",
        "200ms",
        "--probe-rtt",
        "100ms",
        "--suspect-timeout",
        "1s",
        "--gossip-interval",
        "100ms",
        "--remove-down-after",
        remove_down_after,
        "--sync-interval",
        sync_interval,
    ]
}

/// The binary on `ports` (client, peer; 0 for free ones); add flags
/// before spawning.
pub fn node_command(ports: (u16, u16)) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--port", &ports.0.to_string()])
        .args(["--peer-port", &ports.1.to_string()])
        .args(["--log-level", "info"]);
    cmd
}

/// Starts `cmd` and reads the node's addresses from its startup log line
/// (`... client_addr=127.0.0.1:N peer_addr=127.0.0.1:M`). None if it exits
/// first (a port could not be bound, say).
pub fn try_spawn(name: &str, mut cmd: Command) -> Option<Proc> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let log = Arc::new(Mutex::new(Vec::new()));
    let field = |line: &str, key: &str| -> Option<SocketAddr> {
        let rest = line.split(key).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    let (client, peer) = loop {
        let Some(Ok(line)) = lines.next() else {
            let _ = child.kill();
            let _ = child.wait();
            eprintln!(
                "{name} exited before logging its addresses: {:?}",
                log.lock().expect("log lock")
            );
            return None;
        };
        log.lock().expect("log lock").push(line.clone());
        if let (Some(c), Some(p)) = (field(&line, "client_addr="), field(&line, "peer_addr=")) {
            break (c, p);
        }
    };
    // Keep draining the log so the node never blocks on a full pipe.
    let sink = log.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().expect("log lock").push(line);
        }
    });
    Some(Proc {
        child,
        name: name.to_owned(),
        client,
        peer,
        log,
    })
}

pub fn spawn(name: &str, cmd: Command) -> Proc {
    try_spawn(name, cmd).unwrap_or_else(|| panic!("{name} starts"))
}

/// Starts `command()` (a node on fixed ports), retrying a few times: a
/// port just released by a killed process may take a moment to be free.
pub fn spawn_retrying(name: &str, command: impl Fn() -> Command) -> Proc {
    for _ in 0..10 {
        if let Some(p) = try_spawn(name, command()) {
            return p;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("{name} cannot start");
}

/// Sends `signal` (e.g. "STOP", "TERM") to a process.
pub fn signal(child: &Child, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
}

/// The processes of one test. Dropping it kills them, also when the test
/// panics, and then prints their logs.
#[derive(Default)]
pub struct Procs(pub Vec<Proc>);

impl Drop for Procs {
    fn drop(&mut self) {
        for p in &mut self.0 {
            // SIGKILL works on a SIGSTOPped process too.
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        if std::thread::panicking() {
            for p in &self.0 {
                eprintln!("--- log of {} ---", p.name);
                if let Ok(log) = p.log.lock() {
                    for line in log.iter() {
                        eprintln!("{line}");
                    }
                }
            }
        }
    }
}

impl std::ops::Deref for Procs {
    type Target = Vec<Proc>;
    fn deref(&self) -> &Vec<Proc> {
        &self.0
    }
}

impl std::ops::DerefMut for Procs {
    fn deref_mut(&mut self) -> &mut Vec<Proc> {
        &mut self.0
    }
}
