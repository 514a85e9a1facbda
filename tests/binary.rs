//! Tests of the `kriminodb` binary as a user runs it: flags and help,
//! graceful shutdown on SIGTERM and on SHUTDOWN.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::SocketAddr;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::process::{self, BIN, Procs};

/// Starts a node on free ports with `extra` flags; the guard kills it when
/// the test ends.
fn spawn_node(extra: &[&str]) -> (Procs, SocketAddr) {
    let mut cmd = process::node_command((0, 0));
    cmd.args(extra);
    spawn(cmd)
}

fn spawn(cmd: Command) -> (Procs, SocketAddr) {
    let node = process::spawn("node", cmd);
    let addr = node.client;
    (Procs(vec![node]), addr)
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
    let (mut procs, addr) = spawn_node(&[]);
    let child = &mut procs[0].child;
    let mut con = redis_connection(addr);
    let _: () = redis::cmd("SET").arg("k").arg("v").query(&mut con).unwrap();
    process::signal(child, "TERM");
    let exit = wait_exit(child).expect("node exits after SIGTERM");
    assert!(exit.success(), "exit status {exit:?}");
}

#[test]
fn shutdown_command_stops_the_node_with_exit_code_zero() {
    let (mut procs, addr) = spawn_node(&["--name", "to-stop"]);
    let child = &mut procs[0].child;
    let mut con = redis_connection(addr);
    let name: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    assert!(name.contains("node_name:to-stop"));
    let _ = redis::cmd("SHUTDOWN").query::<redis::Value>(&mut con);
    let exit = wait_exit(child).expect("node exits after SHUTDOWN");
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
    let mut cmd = process::node_command((0, 0));
    cmd.arg("--config")
        .arg(&file)
        .env("KRIMINODB_MAXCLIENTS", "7");
    let (_procs, addr) = spawn(cmd);
    let mut con = redis_connection(addr);
    let info: String = redis::cmd("INFO").arg("server").query(&mut con).unwrap();
    assert!(info.contains("node_name:from-file"), "name from the file");
    let clients: String = redis::cmd("INFO").arg("clients").query(&mut con).unwrap();
    assert!(
        clients.contains("maxclients:7"),
        "environment beats the file"
    );
}
