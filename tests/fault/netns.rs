//! The network: one Linux network namespace per node, all joined to one
//! bridge, plus nftables rules inside each namespace to cut links (one way or
//! both) and to drop packets at random.
//!
//! Why namespaces rather than ports on 127.0.0.1: a partition has to cut the
//! peer traffic (UDP membership and TCP replication) between two nodes while
//! the test's clients still reach both, and that needs one address per node.
//! The test process stays in the root namespace, which gets the bridge's
//! `.254` address so clients reach every node directly.
//!
//! Names carry the creating process id (`kf<pid hex><serial>…`), so two runs
//! on one machine never collide, and a run that died without cleaning up
//! (SIGKILL, power cut) is recognised and removed by the next run.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static SERIAL: AtomicU32 = AtomicU32::new(0);

/// Runs a command, returns (success, stdout+stderr).
pub fn sh(program: &str, args: &[&str]) -> (bool, String) {
    match Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
    {
        Ok(out) => {
            let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.push_str(&String::from_utf8_lossy(&out.stderr));
            (out.status.success(), text)
        }
        Err(e) => (false, format!("cannot run {program}: {e}")),
    }
}

/// Like [`sh`], panicking with the command and its output on failure.
pub fn must(program: &str, args: &[&str]) -> String {
    let (ok, text) = sh(program, args);
    assert!(ok, "`{program} {}` failed: {text}", args.join(" "));
    text
}

/// Fails the test, loudly, when this machine cannot run the fault tests.
/// CI runs as root with iproute2 and nftables (`.ci/run` installs it), so a
/// missing prerequisite there is a broken CI, never a reason to pass.
pub fn require_prerequisites() {
    let uid = sh("id", &["-u"]).1;
    assert!(
        uid.trim() == "0",
        "FAULT TESTS CANNOT RUN: they create network namespaces and need root \
         (uid is {}). Run them as root (CI does).",
        uid.trim()
    );
    let (ok, text) = sh("ip", &["netns", "list"]);
    assert!(
        ok,
        "FAULT TESTS CANNOT RUN: `ip netns` does not work ({text}); install iproute2"
    );
    let (ok, text) = sh("nft", &["--version"]);
    assert!(
        ok,
        "FAULT TESTS CANNOT RUN: nftables is missing ({text}); \
         `make test` installs it when run as root (scripts/test_deps.sh)"
    );
}

/// Removes namespaces and bridges left by runs whose process is gone.
pub fn remove_stale() {
    let list = sh("ip", &["netns", "list"]).1;
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(pid) = owner_pid(name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            kill_all_in(name);
            let _ = sh("ip", &["netns", "del", name]);
        }
    }
    let links = sh("ip", &["-o", "link", "show", "type", "bridge"]).1;
    for line in links.lines() {
        let name = line.split(':').nth(1).unwrap_or("").trim();
        if let Some(pid) = owner_pid(name)
            && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = sh("ip", &["link", "del", name]);
        }
    }
}

/// `kf<pid hex>x…` → pid. The `x` separates the pid from the rest.
fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("kf")?;
    let hex = rest.split('x').next()?;
    u32::from_str_radix(hex, 16).ok()
}

/// Kills every process left in namespace `ns` (the node processes).
pub fn kill_all_in(ns: &str) {
    let pids = sh("ip", &["netns", "pids", ns]).1;
    for pid in pids.split_whitespace() {
        let _ = sh("kill", &["-9", pid]);
    }
}

/// What the network does to the nodes' traffic. Client traffic (from the
/// root namespace's `.254`) is only affected by `down`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetFaults {
    /// (from, to): packets from node `from` never reach node `to`.
    pub blocked: BTreeSet<(usize, usize)>,
    /// Percentage of peer packets (TCP and UDP) dropped at random on every
    /// link, in each direction.
    pub loss_percent: u8,
    /// Nodes whose link to the bridge is down: cut off from peers and
    /// clients alike.
    pub down: BTreeSet<usize>,
}

impl NetFaults {
    pub fn block_both(&mut self, a: usize, b: usize) {
        self.blocked.insert((a, b));
        self.blocked.insert((b, a));
    }

    /// Cuts every link between group `a` and group `b`, both ways.
    pub fn split(&mut self, a: &[usize], b: &[usize]) {
        for &x in a {
            for &y in b {
                self.block_both(x, y);
            }
        }
    }
}

/// N namespaces on one bridge. Dropping it removes everything it created
/// (and kills whatever still runs inside the namespaces).
pub struct Net {
    prefix: String,
    subnet: u8,
    nodes: usize,
    bridge_made: bool,
    namespaces: Vec<String>,
    applied: NetFaults,
}

impl Net {
    pub fn create(nodes: usize) -> Net {
        require_prerequisites();
        remove_stale();
        let prefix = format!(
            "kf{:x}x{}",
            std::process::id(),
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        // Interface names are limited to 15 bytes: "<prefix>v<i>" must fit.
        assert!(prefix.len() <= 12, "name prefix {prefix} too long");
        let mut net = Net {
            subnet: free_subnet(),
            prefix,
            nodes,
            bridge_made: false,
            namespaces: Vec::new(),
            applied: NetFaults::default(),
        };
        let bridge = net.bridge();
        must("ip", &["link", "add", &bridge, "type", "bridge"]);
        net.bridge_made = true;
        let host = format!("{}/24", net.host_ip());
        must("ip", &["addr", "add", &host, "dev", &bridge]);
        must("ip", &["link", "set", &bridge, "up"]);
        for i in 0..nodes {
            let ns = net.ns(i);
            must("ip", &["netns", "add", &ns]);
            net.namespaces.push(ns.clone());
            let outside = net.veth(i);
            let inside = format!("{}p{i}", net.prefix);
            must(
                "ip",
                &[
                    "link", "add", &outside, "type", "veth", "peer", "name", &inside, "netns", &ns,
                ],
            );
            must("ip", &["link", "set", &outside, "master", &bridge, "up"]);
            let addr = format!("{}/24", net.ip(i));
            must("ip", &["-n", &ns, "addr", "add", &addr, "dev", &inside]);
            must("ip", &["-n", &ns, "link", "set", &inside, "up"]);
            must("ip", &["-n", &ns, "link", "set", "lo", "up"]);
            // One table per namespace; its input chain is rewritten on every
            // change of the faults (see `apply`).
            nft(
                &ns,
                "add table inet kf\n\
                 add chain inet kf in { type filter hook input priority 0; policy accept; }\n",
            );
        }
        net
    }

    fn bridge(&self) -> String {
        format!("{}b", self.prefix)
    }

    fn veth(&self, i: usize) -> String {
        format!("{}v{i}", self.prefix)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("{}n{i}", self.prefix)
    }

    /// Node `i`'s address: 10.231.S.(i+1).
    pub fn ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, i as u8 + 1)
    }

    /// The root namespace's address on the bridge, where clients come from.
    pub fn host_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 231, self.subnet, 254)
    }

    /// Makes the network do exactly `faults` (replacing what it did).
    pub fn apply(&mut self, faults: &NetFaults) {
        for i in 0..self.nodes {
            let up = !faults.down.contains(&i);
            let was_up = !self.applied.down.contains(&i);
            if up != was_up {
                let state = if up { "up" } else { "down" };
                must("ip", &["link", "set", &self.veth(i), state]);
            }
            let mut script = String::from("flush chain inet kf in\n");
            for &(from, to) in &faults.blocked {
                if to == i {
                    script.push_str(&format!(
                        "add rule inet kf in ip saddr {} drop\n",
                        self.ip(from)
                    ));
                }
            }
            if faults.loss_percent > 0 {
                script.push_str(&format!(
                    "add rule inet kf in ip saddr 10.231.{}.0/24 ip saddr != {} \
                     meta l4proto {{ tcp, udp }} numgen random mod 100 < {} drop\n",
                    self.subnet,
                    self.host_ip(),
                    faults.loss_percent
                ));
            }
            nft(&self.ns(i), &script);
        }
        self.applied = faults.clone();
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            kill_all_in(ns);
            let _ = sh("ip", &["netns", "del", ns]);
        }
        if self.bridge_made {
            let _ = sh("ip", &["link", "del", &self.bridge()]);
        }
    }
}

/// Feeds `script` to `nft -f -` inside namespace `ns` (one atomic batch).
fn nft(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ip netns exec runs");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .expect("nft reads its script");
    let out = child.wait_with_output().expect("nft finishes");
    assert!(
        out.status.success(),
        "nft in {ns} rejected:\n{script}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 10.231.S.0/24 no interface of this machine uses yet. Starts at a
/// pid-dependent S so concurrent runs rarely race for the same one.
fn free_subnet() -> u8 {
    let used = sh("ip", &["-o", "-4", "addr"]).1;
    let start = 7 + (std::process::id() % 200) as u8;
    (0..240u16)
        .map(|k| 7 + ((start as u16 - 7 + k) % 240) as u8)
        .find(|s| !used.contains(&format!("10.231.{s}.")))
        .expect("a free 10.231.S.0/24")
}
