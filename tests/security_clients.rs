//! Client-connection security: passwords (AUTH, HELLO AUTH, redis-cli -a,
//! URL passwords), protected mode, TLS (with and without client
//! certificates, from the redis crate and from redis-cli), the idle
//! timeout and the output-buffer limit. Every refusal is checked byte for
//! byte, and every test also checks that another client keeps being served.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{
    closed_by_server, eventually, exchange, raw, read_exactly, start_node_stepped, start_node_with,
    start_on_a_free_port,
};
use kriminodb::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PASSWORD: &str = "s3cret-pass";
const NOAUTH: &[u8] = b"-NOAUTH Authentication required.\r\n";
const WRONGPASS: &[u8] = b"-WRONGPASS invalid username-password pair or user is disabled.\r\n";
const HELLO_NOAUTH: &[u8] = b"-NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time\r\n";

/// Tests that allocate tens of MB, or measure allocation, run one at a
/// time: `used_memory` is the whole test process's, shared by the tests
/// running in parallel.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn with_password() -> Config {
    Config {
        requirepass: Some(PASSWORD.parse().unwrap()),
        ..Config::ephemeral()
    }
}

/// Another client, authenticating first when `password` is given, gets
/// answers.
async fn still_serves(addr: SocketAddr, password: Option<&str>) {
    let mut other = raw(addr).await;
    if let Some(p) = password {
        exchange(&mut other, format!("AUTH {p}\r\n").as_bytes(), b"+OK\r\n").await;
    }
    exchange(&mut other, b"PING\r\n", b"+PONG\r\n").await;
}

#[tokio::test]
async fn requirepass_gates_every_command_but_auth_hello_quit() {
    let node = start_node_with(with_password()).await;
    let addr = node.client_addr();
    let mut c = raw(addr).await;
    exchange(&mut c, b"PING\r\n", NOAUTH).await;
    exchange(&mut c, b"SET k v\r\n", NOAUTH).await;
    // Unknown commands too: nothing about the node shows before AUTH.
    exchange(&mut c, b"NOSUCHCOMMAND\r\n", NOAUTH).await;
    exchange(&mut c, b"MULTI\r\n", NOAUTH).await;
    exchange(&mut c, b"AUTH wrong\r\n", WRONGPASS).await;
    exchange(&mut c, b"AUTH default wrong\r\n", WRONGPASS).await;
    exchange(
        &mut c,
        format!("AUTH alice {PASSWORD}\r\n").as_bytes(),
        WRONGPASS,
    )
    .await;
    exchange(&mut c, b"AUTH a b c\r\n", b"-ERR syntax error\r\n").await;
    exchange(&mut c, b"HELLO 3\r\n", HELLO_NOAUTH).await;
    exchange(&mut c, b"HELLO 3 AUTH default wrong\r\n", WRONGPASS).await;
    // Still RESP2 and still refused after the failed HELLO.
    exchange(&mut c, b"GET k\r\n", NOAUTH).await;
    exchange(
        &mut c,
        format!("AUTH {PASSWORD}\r\n").as_bytes(),
        b"+OK\r\n",
    )
    .await;
    exchange(&mut c, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut c, b"SET k v\r\nGET k\r\n", b"+OK\r\n$1\r\nv\r\n").await;
    // A failed AUTH later does not log the client out (as in Redis).
    exchange(&mut c, b"AUTH wrong\r\n", WRONGPASS).await;
    exchange(&mut c, b"GET k\r\n", b"$1\r\nv\r\n").await;
    // AUTH and commands pipelined in one write are gated in order.
    let mut d = raw(addr).await;
    exchange(
        &mut d,
        format!("GET k\r\nAUTH default {PASSWORD}\r\nGET k\r\n").as_bytes(),
        b"-NOAUTH Authentication required.\r\n+OK\r\n$1\r\nv\r\n",
    )
    .await;
    // HELLO 3 AUTH authenticates and switches protocol in one step.
    let mut h = raw(addr).await;
    h.write_all(format!("HELLO 3 AUTH default {PASSWORD}\r\n").as_bytes())
        .await
        .unwrap();
    let got = read_exactly(&mut h, 2).await;
    assert_eq!(got, b"%7", "HELLO 3 AUTH answers with a RESP3 map");
    // QUIT works unauthenticated.
    let mut q = raw(addr).await;
    exchange(&mut q, b"QUIT\r\n", b"+OK\r\n").await;
    assert!(closed_by_server(&mut q, Duration::from_secs(10)).await);
    still_serves(addr, Some(PASSWORD)).await;
    node.shutdown().await;
}

#[tokio::test]
async fn unauthenticated_clients_get_small_request_limits_like_redis() {
    let node = start_node_with(with_password()).await;
    let addr = node.client_addr();
    // Texts as redis-server 7.0.15 with --requirepass; it closes after each.
    for (request, error) in [
        (
            &b"*11\r\n"[..],
            &b"-ERR Protocol error: unauthenticated multibulk length\r\n"[..],
        ),
        (
            b"*1\r\n$16385\r\n",
            b"-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
        (
            b"*1\r\n$536870912\r\n",
            b"-ERR Protocol error: unauthenticated bulk length\r\n",
        ),
    ] {
        let mut c = raw(addr).await;
        exchange(&mut c, request, error).await;
        assert!(
            closed_by_server(&mut c, Duration::from_secs(5)).await,
            "closed after {:?}",
            String::from_utf8_lossy(request)
        );
    }
    // Up to the limits a request is read (and refused for want of AUTH).
    let mut c = raw(addr).await;
    let mut ten = b"*10\r\n$4\r\nECHO\r\n$16384\r\n".to_vec();
    ten.extend(std::iter::repeat_n(b'a', 16384));
    ten.extend(b"\r\n".iter());
    ten.extend(b"$1\r\nx\r\n".repeat(8));
    exchange(&mut c, &ten, NOAUTH).await;
    // Once authenticated, the configured limits apply, in the same batch.
    let mut after =
        format!("AUTH {PASSWORD}\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$20000\r\n").into_bytes();
    after.extend(std::iter::repeat_n(b'v', 20000));
    after.extend(b"\r\n");
    after.extend(b"*12\r\n$4\r\nMGET\r\n".iter());
    after.extend(b"$1\r\nk\r\n".repeat(11));
    let mut expected = b"+OK\r\n+OK\r\n*11\r\n".to_vec();
    let mut bulk = b"$20000\r\n".to_vec();
    bulk.extend(std::iter::repeat_n(b'v', 20000));
    bulk.extend(b"\r\n");
    expected.extend(bulk.repeat(11));
    exchange(&mut c, &after, &expected).await;
    still_serves(addr, Some(PASSWORD)).await;
    node.shutdown().await;
}

#[tokio::test]
async fn auth_without_a_configured_password_answers_like_redis() {
    let node = start_node_with(Config::ephemeral()).await;
    let mut c = raw(node.client_addr()).await;
    exchange(
        &mut c,
        b"AUTH x\r\n",
        b"-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n",
    )
    .await;
    // The default user is `nopass`: any password works for it, no other
    // user exists.
    exchange(&mut c, b"AUTH default anything\r\n", b"+OK\r\n").await;
    exchange(&mut c, b"AUTH bob anything\r\n", WRONGPASS).await;
    exchange(&mut c, b"PING\r\n", b"+PONG\r\n").await;
    exchange(
        &mut c,
        b"CONFIG GET requirepass\r\n",
        b"*2\r\n$11\r\nrequirepass\r\n$0\r\n\r\n",
    )
    .await;
    node.shutdown().await;
}

#[tokio::test]
async fn redis_crate_passwords_in_the_url_authenticate() {
    let node = start_node_with(Config {
        timeout: 300,
        ..with_password()
    })
    .await;
    let addr = node.client_addr();
    // `redis://:pass@host` sends AUTH pass; with a user, AUTH user pass;
    // with RESP3, HELLO 3 AUTH user pass.
    for url in [
        format!("redis://:{PASSWORD}@{addr}/"),
        format!("redis://default:{PASSWORD}@{addr}/"),
        format!("redis://default:{PASSWORD}@{addr}/?protocol=resp3"),
    ] {
        let mut con = redis::Client::open(url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap_or_else(|e| panic!("{url} connects: {e}"));
        assert_round_trip(&mut con, "k", &url).await;
        let config: std::collections::HashMap<String, String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("requirepass")
            .arg("timeout")
            .query_async(&mut con)
            .await
            .unwrap();
        assert_eq!(config["requirepass"], PASSWORD);
        assert_eq!(config["timeout"], "300");
    }
    // A wrong password fails at connect time with WRONGPASS, and no
    // password at all gets NOAUTH on the first command.
    let wrong = redis::Client::open(format!("redis://:nope@{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await;
    let Err(err) = wrong else {
        panic!("a wrong password is refused")
    };
    assert_eq!(err.kind(), redis::ErrorKind::AuthenticationFailed, "{err}");
    let mut anonymous = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let err = redis::cmd("GET")
        .arg("k")
        .query_async::<Option<String>>(&mut anonymous)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    node.shutdown().await;
}

async fn redis_cli(args: &[&str]) -> (String, String) {
    let out = tokio::process::Command::new("redis-cli")
        .args(args)
        .output()
        .await
        .expect("redis-cli runs (Debian's redis-tools)");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        String::from_utf8_lossy(&out.stderr).trim().to_string(),
    )
}

#[tokio::test]
async fn redis_cli_dash_a_authenticates() {
    let node = start_node_with(with_password()).await;
    let port = node.client_addr().port().to_string();
    let base = ["-h", "127.0.0.1", "-p", port.as_str()];
    let with = |extra: &[&'static str]| {
        let mut args = base.to_vec();
        args.extend(extra);
        args
    };
    let (out, err) = redis_cli(&with(&["-a", PASSWORD, "--no-auth-warning", "PING"])).await;
    assert_eq!(out, "PONG", "stderr: {err}");
    let (out, _) = redis_cli(&with(&["PING"])).await;
    assert_eq!(out, "NOAUTH Authentication required.");
    let (out, _) = redis_cli(&with(&["-a", "wrong", "--no-auth-warning", "PING"])).await;
    assert!(out.contains("NOAUTH") || out.contains("WRONGPASS"), "{out}");
    node.shutdown().await;
}

#[test]
fn the_binary_reads_the_password_from_the_environment() {
    let mut cmd = common::process::node_command((0, 0));
    cmd.env("KRIMINODB_REQUIREPASS", PASSWORD);
    let node = common::process::spawn("env-password", cmd);
    let procs = common::process::Procs(vec![node]);
    let addr = procs.0[0].client;
    let open = |url: String| redis::Client::open(url).unwrap().get_connection();
    let mut anonymous = open(format!("redis://{addr}/")).unwrap();
    let err = redis::cmd("PING")
        .query::<String>(&mut anonymous)
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    let mut con = open(format!("redis://:{PASSWORD}@{addr}/")).unwrap();
    let pong: String = redis::cmd("PING").query(&mut con).unwrap();
    assert_eq!(pong, "PONG");
}

/// A non-loopback IPv4 address of this host. None exists on a host with
/// only a loopback interface, and then the protected-mode test fails
/// rather than passing without checking anything.
fn non_loopback_ipv4() -> IpAddr {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("`ip -4 -o addr show` runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse::<IpAddr>().ok()
        })
        .find(|ip| !ip.is_loopback())
        .expect("the host has a non-loopback IPv4 address to test protected mode from")
}

/// Connects to `port` on `ip` from `ip` itself, so the node sees a
/// non-loopback client address.
async fn connect_from(ip: IpAddr, port: u16) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(ip, 0)).unwrap();
    let stream = socket.connect(SocketAddr::new(ip, port)).await.unwrap();
    assert_eq!(stream.local_addr().unwrap().ip(), ip);
    stream
}

#[tokio::test]
async fn protected_mode_refuses_non_loopback_clients_without_a_password() {
    let external = non_loopback_ipv4();
    let wildcard = Config {
        bind: "0.0.0.0".parse().unwrap(),
        ..Config::ephemeral()
    };
    let node = start_node_with(wildcard.clone()).await;
    let port = node.client_addr().port();
    let mut outsider = connect_from(external, port).await;
    let denied = kriminodb::server::listener::DENIED;
    assert!(denied.starts_with(b"-DENIED kriminoDB is running in protected mode"));
    assert!(
        String::from_utf8_lossy(denied).contains("'--protected-mode no'"),
        "the refusal names this node's own flag"
    );
    // Refused before any command is read, then closed.
    let got = read_exactly(&mut outsider, denied.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(denied)
    );
    assert!(closed_by_server(&mut outsider, Duration::from_secs(10)).await);
    // Loopback clients are served.
    let local: SocketAddr = ([127, 0, 0, 1], port).into();
    still_serves(local, None).await;
    node.shutdown().await;

    // With a password, outsiders may connect and must authenticate.
    let node = start_node_with(Config {
        requirepass: Some(PASSWORD.parse().unwrap()),
        ..wildcard.clone()
    })
    .await;
    let port = node.client_addr().port();
    let mut outsider = connect_from(external, port).await;
    exchange(&mut outsider, b"PING\r\n", NOAUTH).await;
    exchange(
        &mut outsider,
        format!("AUTH {PASSWORD}\r\nPING\r\n").as_bytes(),
        b"+OK\r\n+PONG\r\n",
    )
    .await;
    node.shutdown().await;

    // `--protected-mode no` lets them in without one.
    let node = start_node_with(Config {
        protected_mode: false,
        ..wildcard
    })
    .await;
    let mut outsider = connect_from(external, node.client_addr().port()).await;
    exchange(&mut outsider, b"PING\r\n", b"+PONG\r\n").await;
    node.shutdown().await;
}

#[tokio::test]
async fn idle_clients_are_closed_after_the_timeout_and_active_ones_are_not() {
    let _heavy = HEAVY.lock().await;
    let (node, time) = start_node_stepped(Config {
        timeout: 1,
        ..Config::ephemeral()
    })
    .await;
    let addr = node.client_addr();
    let mut idle = raw(addr).await;
    exchange(&mut idle, b"PING\r\n", b"+PONG\r\n").await;
    let mut active = raw(addr).await;
    let mut silent = raw(addr).await;
    // A client that asks for 20 MiB of replies and never reads them is
    // stuck in our write, which the timeout ends too.
    set_big(&mut active, 1024 * 1024).await;
    let mut stuck = raw(addr).await;
    stuck.write_all(&b"GET big\r\n".repeat(20)).await.unwrap();
    // The active client talks every 200 ms of the node's clock, for 3
    // timeouts; the idle sweep runs on that clock too.
    for _ in 0..15 {
        exchange(&mut active, b"PING\r\n", b"+PONG\r\n").await;
        time.advance(Duration::from_millis(200));
    }
    exchange(
        &mut active,
        b"CONFIG GET timeout\r\n",
        b"*2\r\n$7\r\ntimeout\r\n$1\r\n1\r\n",
    )
    .await;
    // By now the idle ones have had three timeouts of silence: both get
    // EOF (the read below returns at once if they are already closed).
    assert!(
        closed_by_server(&mut idle, Duration::from_secs(5)).await,
        "a client idle for 3x the timeout is closed"
    );
    assert!(
        closed_by_server(&mut silent, Duration::from_secs(5)).await,
        "a client that never sent anything is closed too"
    );
    // Checked from the server's side: reading here would unblock it.
    let stuck_addr = format!("addr={} ", stuck.local_addr().unwrap());
    let observer = common::client_at(addr).await;
    let gone = common::eventually_ok(Duration::from_secs(5), || {
        let (observer, stuck_addr) = (observer.clone(), stuck_addr.clone());
        async move {
            let list = client_list(&observer).await;
            if list.contains(&stuck_addr) {
                Err(list)
            } else {
                Ok(())
            }
        }
    })
    .await;
    if let Err(list) = gone {
        panic!("a client not reading its replies for 3x the timeout is closed: {list}");
    }
    exchange(&mut active, b"PING\r\n", b"+PONG\r\n").await;
    node.shutdown().await;
}

#[tokio::test]
async fn a_client_blocked_in_wait_is_not_idle() {
    let (node, time) = start_node_stepped(Config {
        timeout: 1,
        ..Config::ephemeral()
    })
    .await;
    let addr = node.client_addr();
    // A lone node: WAIT 1 0 blocks until the client gives up.
    let mut waiter = raw(addr).await;
    waiter.write_all(b"WAIT 1 0\r\n").await.unwrap();
    let mut control = raw(addr).await;
    exchange(&mut control, b"PING\r\n", b"+PONG\r\n").await;
    let observer = common::client(&node).await;
    let blocked = eventually(Duration::from_secs(5), || async {
        client_list(&observer).await.contains("cmd=wait")
    })
    .await;
    assert!(blocked, "the WAIT is being served");
    // 3x the timeout pass on the node's clock; the sweep that closes the
    // idle control client is the one the blocked waiter must survive.
    for _ in 0..3 {
        time.advance(Duration::from_millis(1100));
        tokio::task::yield_now().await;
    }
    assert!(
        closed_by_server(&mut control, Duration::from_secs(5)).await,
        "the idle sweep ran: an idle client is closed"
    );
    assert!(
        !closed_by_server(&mut waiter, Duration::from_millis(200)).await,
        "a client blocked in WAIT survives 3x the timeout"
    );
    still_serves(addr, None).await;
    // The client gives up: the node notices and drops it.
    let waiter_addr = format!("addr={} ", waiter.local_addr().unwrap());
    drop(waiter);
    let mut observer = common::client_at(addr).await;
    assert!(
        eventually(Duration::from_secs(5), || async {
            !client_list(&observer).await.contains(&waiter_addr)
        })
        .await,
        "a client that hangs up during WAIT is dropped"
    );
    let pong: String = redis::cmd("PING").query_async(&mut observer).await.unwrap();
    assert_eq!(pong, "PONG");
    node.shutdown().await;
}

#[tokio::test]
async fn a_slow_but_steady_reader_of_a_long_reply_is_not_idle() {
    let _heavy = HEAVY.lock().await;
    const VALUE: usize = 16 * 1024 * 1024;
    let (node, time) = start_node_stepped(Config {
        timeout: 1,
        ..Config::ephemeral()
    })
    .await;
    let addr = node.client_addr();
    let mut setup = raw(addr).await;
    set_big(&mut setup, VALUE).await;
    // A small receive buffer, so the node's write lasts as long as the
    // reading does: 256 KiB every 32 ms of the node's clock, 2 s for the
    // 16 MiB reply. The node marks the client active at each partial write,
    // so the last second is what the kernel buffers hold once it wrote
    // everything (at most 4 MiB of send buffer here, half a second).
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(64 * 1024).unwrap();
    let mut reader = socket.connect(addr).await.unwrap();
    reader.write_all(b"GET big\r\n").await.unwrap();
    let expected = format!("${VALUE}\r\n").len() + VALUE + 2;
    let started = node.clock().now();
    let mut received = 0usize;
    let mut buf = vec![0u8; 256 * 1024];
    while received < expected {
        let mut chunk = 0;
        while chunk < buf.len() && received + chunk < expected {
            match tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf[chunk..]))
                .await
            {
                Ok(Ok(n)) if n > 0 => chunk += n,
                _ => panic!("reply cut after {} of {expected} bytes", received + chunk),
            }
        }
        received += chunk;
        time.advance(Duration::from_millis(32));
    }
    let took = node.clock().since(started);
    println!("read {received} bytes in {took:?} of the node's clock");
    assert!(took >= Duration::from_secs(2), "twice the timeout");
    exchange(&mut reader, b"PING\r\n", b"+PONG\r\n").await;
    node.shutdown().await;
}

#[tokio::test]
async fn without_a_timeout_idle_clients_stay_connected() {
    let (node, time) = start_node_stepped(Config::ephemeral()).await;
    let mut idle = raw(node.client_addr()).await;
    time.advance(Duration::from_secs(3600));
    assert!(
        !closed_by_server(&mut idle, Duration::from_secs(1)).await,
        "timeout 0 never closes a client"
    );
    exchange(&mut idle, b"PING\r\n", b"+PONG\r\n").await;
    node.shutdown().await;
}

/// CLIENT LIST, as seen by `observer`.
async fn client_list(observer: &redis::aio::MultiplexedConnection) -> String {
    redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut observer.clone())
        .await
        .unwrap()
}

/// SET `big` to `len` bytes over a raw connection.
async fn set_big(con: &mut TcpStream, len: usize) {
    let mut set = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${len}\r\n").into_bytes();
    set.extend(std::iter::repeat_n(b'v', len));
    set.extend(b"\r\n");
    exchange(con, &set, b"+OK\r\n").await;
}

/// SET `key` to `value`, then GET it back whole.
async fn assert_round_trip(con: &mut redis::aio::MultiplexedConnection, key: &str, value: &str) {
    let () = redis::cmd("SET")
        .arg(key)
        .arg(value)
        .query_async(con)
        .await
        .unwrap();
    let got: String = redis::cmd("GET").arg(key).query_async(con).await.unwrap();
    assert!(
        got == value,
        "GET {key} returned {} bytes of {}",
        got.len(),
        value.len()
    );
}

async fn used_memory(addr: SocketAddr) -> u64 {
    common::used_memory(&mut common::client_at(addr).await).await
}

/// Polls `used_memory` until `done` is set and returns the highest value
/// seen, so a peak that is over by the time a test looks is still caught.
fn peak_used_memory(
    addr: SocketAddr,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        loop {
            peak = peak.max(used_memory(addr).await);
            if done.load(std::sync::atomic::Ordering::Relaxed) {
                return peak;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
}

/// Reads until the server closes the connection; returns whether it did
/// (within 10 s of silence) and how many bytes arrived.
async fn read_until_closed(stream: &mut TcpStream) -> (bool, usize) {
    let mut received = 0usize;
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (true, received),
            Ok(Ok(n)) => received += n,
            Err(_) => return (false, received),
        }
    }
}

/// Sends `request` (which asks for far more than the output limit in
/// replies) from a client that does not read until the end, and checks it
/// is disconnected early while another client is served and used_memory
/// stays bounded throughout.
async fn greedy_client_is_disconnected(request: &[u8], asked: usize) {
    const VALUE: usize = 1024 * 1024;
    let node = start_node_with(Config {
        client_output_buffer_limit: 4 * 1024 * 1024,
        ..Config::ephemeral()
    })
    .await;
    let addr = node.client_addr();
    let mut setup = raw(addr).await;
    set_big(&mut setup, VALUE).await;
    let before = used_memory(addr).await;
    let rss_before = rss_kib();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = peak_used_memory(addr, done.clone());

    let mut greedy = raw(addr).await;
    greedy.write_all(request).await.unwrap();
    // Other clients keep being served meanwhile.
    still_serves(addr, None).await;
    let rss_during = rss_kib();
    // Whatever had reached the socket buffers arrives, then EOF: far less
    // than the replies asked for.
    let (closed, received) = read_until_closed(&mut greedy).await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let used = peak.await.unwrap();
    assert!(closed, "the client is disconnected (got {received} bytes)");
    assert!(
        received < asked / 4,
        "disconnected early: {received} bytes of {asked} arrived"
    );
    assert!(
        used < before + 64 * 1024 * 1024,
        "used memory grew from {before} to a peak of {used} with a client not reading"
    );
    println!(
        "output limit: used_memory {before} -> peak {used}, RSS {rss_before} KiB -> {rss_during} KiB"
    );
    still_serves(addr, None).await;
    let mut c = common::client_at(addr).await;
    let len: usize = redis::cmd("STRLEN")
        .arg("big")
        .query_async(&mut c)
        .await
        .unwrap();
    assert_eq!(len, VALUE);
    node.shutdown().await;
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_client_that_never_reads_its_replies_is_disconnected_at_the_output_limit() {
    let _heavy = HEAVY.lock().await;
    // 400 GETs in one write ask for 400 MiB of replies.
    greedy_client_is_disconnected(&b"GET big\r\n".repeat(400), 400 << 20).await;
}

#[tokio::test]
async fn one_mget_of_many_big_values_is_disconnected_at_the_output_limit() {
    let _heavy = HEAVY.lock().await;
    // One command asking for 400 MiB: the limit holds inside a command.
    let mut mget = b"*401\r\n$4\r\nMGET\r\n".to_vec();
    mget.extend(b"$3\r\nbig\r\n".repeat(400));
    greedy_client_is_disconnected(&mget, 400 << 20).await;
}

#[tokio::test]
async fn exec_of_many_big_gets_is_disconnected_at_the_output_limit() {
    let _heavy = HEAVY.lock().await;
    let mut tx = b"MULTI\r\n".to_vec();
    tx.extend(b"GET big\r\n".repeat(400));
    tx.extend(b"EXEC\r\n");
    greedy_client_is_disconnected(&tx, 400 << 20).await;
}

#[tokio::test]
async fn a_single_reply_larger_than_the_output_limit_is_still_sent() {
    let _heavy = HEAVY.lock().await;
    let node = start_node_with(Config {
        client_output_buffer_limit: 64 * 1024,
        ..Config::ephemeral()
    })
    .await;
    let mut c = common::client(&node).await;
    assert_round_trip(&mut c, "big", &"x".repeat(1024 * 1024)).await;
    node.shutdown().await;
}

#[tokio::test]
async fn idle_connections_and_a_slowloris_do_not_stop_a_normal_client() {
    let _heavy = HEAVY.lock().await;
    const IDLE: usize = 5000;
    let node = start_node_with(Config::ephemeral()).await;
    let addr = node.client_addr();
    let before = used_memory(addr).await;
    let rss_before = rss_kib();
    let mut idle = Vec::with_capacity(IDLE);
    for _ in 0..IDLE {
        idle.push(raw(addr).await);
    }
    // Every idle connection is registered (and so holds its memory) before
    // measuring.
    assert!(
        eventually(Duration::from_secs(20), || async {
            let mut con = common::client_at(addr).await;
            let info: String = redis::cmd("INFO")
                .arg("clients")
                .query_async(&mut con)
                .await
                .unwrap();
            info.lines()
                .find_map(|l| l.strip_prefix("connected_clients:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .is_some_and(|n| n > IDLE)
        })
        .await
    );
    // One byte every 100 ms of a PING, over and over.
    let slowloris = tokio::spawn(async move {
        let mut s = raw(addr).await;
        for &b in b"*1\r\n$4\r\nPING\r\n".repeat(3).iter() {
            if s.write_all(&[b]).await.is_err() {
                return 0;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        read_exactly(&mut s, 21).await.len()
    });
    let mut normal = common::client_at(addr).await;
    while !slowloris.is_finished() {
        let pong: String = tokio::time::timeout(
            Duration::from_secs(5),
            redis::cmd("PING").query_async(&mut normal),
        )
        .await
        .expect("the normal client is answered while the slowloris sends")
        .unwrap();
        assert_eq!(pong, "PONG");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        slowloris.await.unwrap(),
        21,
        "the slowloris gets its 3 PONGs"
    );
    let used = used_memory(addr).await;
    let rss = rss_kib();
    println!(
        "{IDLE} idle clients + slowloris: used_memory {before} -> {used}, \
         RSS of the test process (node and clients) {rss_before} KiB -> {rss} KiB"
    );
    assert!(
        used < before + 64 * 1024 * 1024,
        "used memory grew from {before} to {used} for {IDLE} idle clients"
    );
    drop(idle);
    node.shutdown().await;
}

// ---- TLS ----

struct Pki {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

impl Pki {
    /// A CA, a server certificate for localhost/127.0.0.1 and a client
    /// certificate, all signed by the CA, written as PEM files.
    fn generate(name: &str) -> Self {
        use rcgen::{
            BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose,
            IsCa, KeyPair, KeyUsagePurpose,
        };
        let dir = std::env::temp_dir().join(format!(
            "kriminodb-tls-{name}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "kriminodb test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();

        let server_key = KeyPair::generate().unwrap();
        let mut server =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server = server.signed_by(&server_key, &ca).unwrap();

        let client_key = KeyPair::generate().unwrap();
        let mut client = CertificateParams::new(vec!["client".to_string()]).unwrap();
        client.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let client = client.signed_by(&client_key, &ca).unwrap();

        let write = |file: &str, text: String| {
            let path = dir.join(file);
            std::fs::write(&path, text).unwrap();
            path
        };
        Self {
            ca: write("ca.pem", ca.pem()),
            cert: write("server.pem", server.pem()),
            key: write("server.key", server_key.serialize_pem()),
            client_cert: write("client.pem", client.pem()),
            client_key: write("client.key", client_key.serialize_pem()),
            dir,
        }
    }

    fn node_config(&self, require_client_cert: bool) -> Config {
        Config {
            tls_port: Some(0),
            tls_cert_file: Some(self.cert.clone()),
            tls_key_file: Some(self.key.clone()),
            tls_ca_cert_file: require_client_cert.then(|| self.ca.clone()),
            ..Config::ephemeral()
        }
    }

    fn read(path: &Path) -> Vec<u8> {
        std::fs::read(path).unwrap()
    }

    fn client(&self, addr: SocketAddr, with_client_cert: bool) -> redis::Client {
        redis::Client::build_with_tls(
            format!("rediss://{addr}/"),
            redis::TlsCertificates {
                client_tls: with_client_cert.then(|| redis::ClientTlsConfig {
                    client_cert: Self::read(&self.client_cert),
                    client_key: Self::read(&self.client_key),
                }),
                root_cert: Some(Self::read(&self.ca)),
            },
        )
        .unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fastrand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u8(0);
    h.finish()
}

#[tokio::test]
async fn tls_port_serves_the_redis_crate_and_the_plain_port_keeps_working() {
    let _heavy = HEAVY.lock().await;
    let pki = Pki::generate("both");
    let node = start_on_a_free_port(pki.node_config(false)).await;
    let tls_addr = node.tls_addr().expect("TLS port bound");
    assert_ne!(node.client_addr(), tls_addr, "the plain port serves too");
    let mut tls = pki
        .client(tls_addr, false)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg("k")
        .arg("over tls")
        .query_async(&mut tls)
        .await
        .unwrap();
    // A reply larger than TLS records and socket buffers arrives whole.
    assert_round_trip(&mut tls, "big", &"b".repeat(3 * 1024 * 1024 + 7)).await;
    let port: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("tls-port")
        .query_async(&mut tls)
        .await
        .unwrap();
    assert_eq!(
        port,
        vec!["tls-port".to_string(), tls_addr.port().to_string()]
    );
    // The same data over the plain port.
    let mut plain = common::client(&node).await;
    let got: String = redis::cmd("GET")
        .arg("k")
        .query_async(&mut plain)
        .await
        .unwrap();
    assert_eq!(got, "over tls");
    // Plain text on the TLS port is not a command.
    let mut confused = raw(tls_addr).await;
    confused.write_all(b"PING\r\n").await.unwrap();
    let got = read_exactly(&mut confused, 7).await;
    assert_ne!(got, b"+PONG\r\n");
    node.shutdown().await;
}

#[tokio::test]
async fn port_zero_with_a_tls_port_disables_the_plain_port() {
    let pki = Pki::generate("tlsonly");
    let node = start_node_with(pki.node_config(false)).await;
    let tls_addr = node.tls_addr().unwrap();
    assert_eq!(node.client_addr(), tls_addr);
    let mut tls = pki
        .client(tls_addr, false)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let port: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("port")
        .query_async(&mut tls)
        .await
        .unwrap();
    assert_eq!(port, vec!["port".to_string(), "0".to_string()]);
    node.shutdown().await;
}

#[tokio::test]
async fn tls_with_a_password_needs_both() {
    let pki = Pki::generate("auth");
    let node = start_node_with(Config {
        requirepass: Some(PASSWORD.parse().unwrap()),
        ..pki.node_config(false)
    })
    .await;
    let tls_addr = node.tls_addr().unwrap();
    let client = redis::Client::build_with_tls(
        format!("rediss://:{PASSWORD}@{tls_addr}/"),
        redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(Pki::read(&pki.ca)),
        },
    )
    .unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    let mut anonymous = pki
        .client(tls_addr, false)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let err = redis::cmd("PING")
        .query_async::<String>(&mut anonymous)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOAUTH"), "{err}");
    node.shutdown().await;
}

#[tokio::test]
async fn tls_ca_cert_file_requires_a_client_certificate() {
    let pki = Pki::generate("mtls");
    let node = start_on_a_free_port(pki.node_config(true)).await;
    let tls_addr = node.tls_addr().unwrap();
    // Without a client certificate the handshake is refused (TLS 1.3
    // reports it on first use rather than at connect, so check both).
    let refused = match pki
        .client(tls_addr, false)
        .get_multiplexed_async_connection()
        .await
    {
        Err(_) => true,
        Ok(mut con) => redis::cmd("PING")
            .query_async::<String>(&mut con)
            .await
            .is_err(),
    };
    assert!(refused, "a client without a certificate is refused");
    // With one signed by the CA it is served.
    let mut con = pki
        .client(tls_addr, true)
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let pong: String = redis::cmd("PING").query_async(&mut con).await.unwrap();
    assert_eq!(pong, "PONG");
    // The plain port does not ask for certificates.
    still_serves(node.client_addr(), None).await;
    node.shutdown().await;
}

#[tokio::test]
async fn protected_mode_refuses_non_loopback_tls_clients_over_tls() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let external = non_loopback_ipv4();
    let pki = Pki::generate("protected");
    let node = start_node_with(Config {
        bind: "0.0.0.0".parse().unwrap(),
        ..pki.node_config(false)
    })
    .await;
    let port = node.tls_addr().unwrap().port();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_file(&pki.ca).unwrap())
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let tcp = connect_from(external, port).await;
    let mut tls = connector.connect(name.clone(), tcp).await.unwrap();
    let denied = kriminodb::server::listener::DENIED;
    let got = read_exactly(&mut tls, denied.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(denied)
    );
    assert!(closed_by_server(&mut tls, Duration::from_secs(10)).await);
    // A loopback TLS client is served.
    let tcp = raw(([127, 0, 0, 1], port).into()).await;
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"PING\r\n").await.unwrap();
    assert_eq!(read_exactly(&mut tls, 7).await, b"+PONG\r\n");
    node.shutdown().await;
}

#[tokio::test]
async fn redis_cli_tls_talks_to_the_tls_port() {
    let pki = Pki::generate("cli");
    let node = start_node_with(pki.node_config(true)).await;
    let port = node.tls_addr().unwrap().port().to_string();
    let ca = pki.ca.to_str().unwrap().to_string();
    let cert = pki.client_cert.to_str().unwrap().to_string();
    let key = pki.client_key.to_str().unwrap().to_string();
    let (out, err) = redis_cli(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--tls",
        "--cacert",
        &ca,
        "--cert",
        &cert,
        "--key",
        &key,
        "PING",
    ])
    .await;
    assert_eq!(out, "PONG", "stderr: {err}");
    // Without a client certificate redis-cli cannot get an answer.
    let (out, _) = redis_cli(&[
        "-h",
        "127.0.0.1",
        "-p",
        &port,
        "--tls",
        "--cacert",
        &ca,
        "PING",
    ])
    .await;
    assert_ne!(out, "PONG");
    node.shutdown().await;
}

#[tokio::test]
async fn a_tls_client_that_never_handshakes_does_not_block_others() {
    let pki = Pki::generate("stall");
    let node = start_node_with(pki.node_config(false)).await;
    let tls_addr = node.tls_addr().unwrap();
    let _stalled: Vec<TcpStream> = {
        let mut v = Vec::new();
        for _ in 0..20 {
            v.push(raw(tls_addr).await);
        }
        v
    };
    assert!(
        eventually(Duration::from_secs(10), || async {
            let Ok(mut con) = pki
                .client(tls_addr, false)
                .get_multiplexed_async_connection()
                .await
            else {
                return false;
            };
            redis::cmd("PING")
                .query_async::<String>(&mut con)
                .await
                .is_ok()
        })
        .await
    );
    node.shutdown().await;
}
