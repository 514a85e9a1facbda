//! Tests of the `kriminodb` binary as a user runs it: flags and help,
//! graceful shutdown on SIGTERM and on SHUTDOWN.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kriminodb");

/// The binary with free ports.
fn node_command() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.args(["--port", "0", "--peer-port", "0", "--log-level", "info"]);
    cmd
}

fn spawn_node(extra: &[&str]) -> (Child, SocketAddr) {
    let mut cmd = node_command();
    cmd.args(extra);
    spawn(cmd)
}

/// Starts the node and returns it with its client address, read from the
/// startup log line.
fn spawn(mut cmd: Command) -> (Child, SocketAddr) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("binary starts");
    let stdout = child.stdout.take().expect("stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("node logs its startup")
            .expect("log is readable");
        if let Some(rest) = line.split("client_addr=").nth(1) {
            let addr = rest.split_whitespace().next().unwrap_or_default();
            break addr.parse().expect("client_addr is an address");
        }
    };
    // Keep draining the log so the node never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

/// Waits for the process to exit; None if it is still running after a
/// generous deadline (then it is killed so the test run never hangs).
fn wait_exit(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("wait works") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    None
}

fn redis_connection(addr: SocketAddr) -> redis::Connection {
    redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_connection()
        .expect("connects")
}

#[test]
fn sigterm_stops_the_node_with_exit_code_zero() {
    let (mut child, addr) = spawn_node(&[]);
    let mut con = redis_connection(addr);
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(&mut child).expect("node exits after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn shutdown_command_stops_the_node_with_exit_code_zero() {
    let (mut child, addr) = spawn_node(&["--name", "to-stop"]);
    let mut con = redis_connection(addr);
    let name: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    assert!(name.contains("node_name:to-stop"));
    let _ = redis::cmd("SHUTDOWN").query::<redis::Value>(&mut con);
    let exit = wait_exit(&mut child).expect("node exits after SHUTDOWN");
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn help_documents_every_flag_with_its_default() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, default) in [
        ("--bind", "127.0.0.1"),
        ("--port", "3000"),
        ("--peer-port", "4000"),
        ("--log-level", "info"),
        ("--maxclients", "10000"),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(
            help.contains(&format!("[default: {default}]")),
            "default of {flag} missing from --help"
        );
        let env = format!(
            "KRIMINODB_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        assert!(help.contains(&env), "{env} missing from --help");
    }
    for flag in ["--name", "--join", "--config"] {
        assert!(help.contains(flag), "{flag} missing from --help");
    }
}

#[test]
fn environment_and_config_file_configure_the_node() {
    let dir = std::env::temp_dir().join(format!("kriminodb-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("node.toml");
    std::fs::write(&file, "name = \"from-file\"\nmaxclients = 5\n").unwrap();
    let mut cmd = node_command();
    cmd.arg("--config")
        .arg(&file)
        .env("KRIMINODB_MAXCLIENTS", "7");
    let (mut child, addr) = spawn(cmd);
    let mut con = redis_connection(addr);
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    assert!(info.contains("node_name:from-file"), "name from the file");
    let clients: String = redis::cmd("INFO").arg("clients").query(&mut con).unwrap();
    assert!(
        clients.contains("maxclients:7"),
        "environment beats the file"
    );
    let _ = child.kill();
    let _ = child.wait();
}
