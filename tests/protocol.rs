//! Byte-level protocol tests over plain TCP: the README's telnet session,
//! pipelining, inline commands, and hostile or broken input. Every bad-input
//! case also checks that the node keeps serving other clients.
#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

mod common;

use std::time::Duration;

use common::{exchange, raw, read_exactly, start_node, start_node_with, used_memory};
use kriminodb::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the received bytes end with `suffix`.
async fn read_until(stream: &mut TcpStream, suffix: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !out.ends_with(suffix) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("reply arrives")
            .expect("read works");
        assert!(n > 0, "closed before {suffix:?}");
        out.extend(&buf[..n]);
    }
    out
}

/// True once the server has closed the connection.
async fn closed_by_server(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

async fn still_serves(addr: std::net::SocketAddr) {
    let mut other = raw(addr).await;
    exchange(&mut other, b"PING\r\n", b"+PONG\r\n").await;
}

/// The session shown in the README, as telnet sends it (CRLF line ends).
const TELNET_INPUT: &[u8] = b"SET name \"Ayoub Krimi\"\r\nGET name\r\n";
const TELNET_OUTPUT: &[u8] = b"+OK\r\n$11\r\nAyoub Krimi\r\n";

#[tokio::test]
async fn readme_telnet_session_byte_for_byte() {
    let readme = include_str!("../README.md");
    assert!(
        readme.contains("SET name \"Ayoub Krimi\"\n+OK\nGET name\n$11\nAyoub Krimi\n"),
        "the README shows the telnet session this test replays"
    );
    let node = start_node().await;
    let mut s = raw(node.client_addr()).await;
    exchange(&mut s, TELNET_INPUT, TELNET_OUTPUT).await;
    node.shutdown().await;
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let node = start_node().await;
    let mut s = raw(node.client_addr()).await;
    let mut batch = Vec::new();
    let mut expected = Vec::new();
    for i in 0..200 {
        batch
            .extend(format!("*3\r\n$3\r\nSET\r\n$4\r\nk{i:03}\r\n$1\r\n{}\r\n", i % 10).as_bytes());
        expected.extend(b"+OK\r\n");
    }
    for i in 0..200 {
        batch.extend(format!("GET k{i:03}\r\n").as_bytes());
        expected.extend(format!("$1\r\n{}\r\n", i % 10).as_bytes());
    }
    batch.extend(b"INCR k000\r\nPING\r\n");
    expected.extend(b":1\r\n+PONG\r\n");
    exchange(&mut s, &batch, &expected).await;
    node.shutdown().await;
}

#[tokio::test]
async fn commands_split_across_writes_are_reassembled() {
    let node = start_node().await;
    let mut s = raw(node.client_addr()).await;
    let command = b"*3\r\n$3\r\nSET\r\n$3\r\nkey\r\n$5\r\nvalue\r\n";
    for byte in command.iter() {
        s.write_all(&[*byte]).await.unwrap();
        s.flush().await.unwrap();
    }
    assert_eq!(read_exactly(&mut s, 5).await, b"+OK\r\n");
    exchange(&mut s, b"GET key\r\n", b"$5\r\nvalue\r\n").await;
    node.shutdown().await;
}

#[tokio::test]
async fn binary_values_round_trip() {
    let node = start_node().await;
    let mut s = raw(node.client_addr()).await;
    let value: Vec<u8> = (0..=255u8).collect();
    let mut cmd = b"*3\r\n$3\r\nSET\r\n$3\r\nbin\r\n$256\r\n".to_vec();
    cmd.extend(&value);
    cmd.extend(b"\r\n");
    exchange(&mut s, &cmd, b"+OK\r\n").await;
    let mut expected = b"$256\r\n".to_vec();
    expected.extend(&value);
    expected.extend(b"\r\n");
    exchange(&mut s, b"*2\r\n$3\r\nGET\r\n$3\r\nbin\r\n", &expected).await;
    node.shutdown().await;
}

#[tokio::test]
async fn command_errors_keep_the_connection_open() {
    let node = start_node().await;
    let mut s = raw(node.client_addr()).await;
    let cases: &[(&[u8], &[u8])] = &[
        (
            b"FOO a b\r\n",
            b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n",
        ),
        (
            b"GET\r\n",
            b"-ERR wrong number of arguments for 'get' command\r\n",
        ),
        (b"SET k v NX XX\r\n", b"-ERR syntax error\r\n"),
        (
            b"SET n abc\r\nINCR n\r\n",
            b"+OK\r\n-ERR value is not an integer or out of range\r\n",
        ),
        (
            b"SET k v EX 0\r\n",
            b"-ERR invalid expire time in 'set' command\r\n",
        ),
        (b"SELECT 1\r\n", b"-ERR DB index is out of range\r\n"),
        (
            b"CLIENT NOPE\r\n",
            b"-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n",
        ),
    ];
    for (send, expected) in cases {
        exchange(&mut s, send, expected).await;
    }
    exchange(&mut s, b"PING\r\n", b"+PONG\r\n").await;
    node.shutdown().await;
}

/// Each protocol error gets Redis's reply and closes only that connection.
#[tokio::test]
async fn protocol_errors_close_the_connection_with_redis_replies() {
    let node = start_node().await;
    let addr = node.client_addr();
    let mut oversized_inline = vec![b'a'; 70 * 1024];
    oversized_inline.extend(b"\r\n");
    let cases: Vec<(Vec<u8>, &[u8])> = vec![
        (
            b"*abc\r\n".to_vec(),
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\n$-5\r\n".to_vec(),
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*1\r\n$600000000\r\n".to_vec(),
            b"-ERR Protocol error: invalid bulk length\r\n",
        ),
        (
            b"*9999999\r\n".to_vec(),
            b"-ERR Protocol error: invalid multibulk length\r\n",
        ),
        (
            b"*1\r\nGET\r\n".to_vec(),
            b"-ERR Protocol error: expected '$', got 'G'\r\n",
        ),
        (
            b"SET a \"b\r\n".to_vec(),
            b"-ERR Protocol error: unbalanced quotes in request\r\n",
        ),
        (
            oversized_inline,
            b"-ERR Protocol error: too big inline request\r\n",
        ),
    ];
    for (send, expected) in cases {
        let mut s = raw(addr).await;
        // Earlier complete commands in the same read still run.
        let mut input = b"PING\r\n".to_vec();
        input.extend(&send);
        let mut reply = b"+PONG\r\n".to_vec();
        reply.extend(expected);
        exchange(&mut s, &input, &reply).await;
        assert!(closed_by_server(&mut s).await, "closed after {expected:?}");
        still_serves(addr).await;
    }
    node.shutdown().await;
}

#[tokio::test]
async fn configured_bulk_and_query_buffer_limits_are_enforced() {
    let config = Config {
        proto_max_bulk_len: 1000,
        client_query_buffer_limit: 64 * 1024,
        ..Config::ephemeral()
    };
    let node = start_node_with(config).await;
    let addr = node.client_addr();

    let mut s = raw(addr).await;
    exchange(
        &mut s,
        b"*2\r\n$4\r\nECHO\r\n$1001\r\n",
        b"-ERR Protocol error: invalid bulk length\r\n",
    )
    .await;
    assert!(closed_by_server(&mut s).await);

    // A bulk within the bulk limit, with many arguments: the unparsed
    // request outgrows the query buffer limit before it completes.
    let mut s = raw(addr).await;
    let mut big = b"*1000\r\n".to_vec();
    for _ in 0..100 {
        big.extend(b"$1000\r\n");
        big.extend(vec![b'x'; 1000]);
        big.extend(b"\r\n");
    }
    s.write_all(&big).await.unwrap();
    let got = read_exactly(&mut s, 64).await;
    assert!(
        String::from_utf8_lossy(&got).starts_with("-ERR Protocol error"),
        "{got:?}"
    );
    assert!(closed_by_server(&mut s).await);
    still_serves(addr).await;
    node.shutdown().await;
}

#[tokio::test]
async fn half_sent_commands_and_abrupt_disconnects_cost_nothing() {
    let node = start_node().await;
    let addr = node.client_addr();
    for partial in [
        &b"*2\r\n$3\r\nGET"[..],
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000\r\nabc",
        b"SET k \"v",
    ] {
        let mut s = raw(addr).await;
        s.write_all(partial).await.unwrap();
        drop(s);
    }
    still_serves(addr).await;
    let mut s = raw(addr).await;
    exchange(&mut s, b"DBSIZE\r\n", b":0\r\n").await;
    node.shutdown().await;
}

/// A client that pipelines without reading replies is held back by TCP;
/// the node's memory stays bounded and other clients are served.
#[tokio::test]
async fn a_client_that_never_reads_replies_costs_bounded_memory() {
    let node = start_node().await;
    let addr = node.client_addr();
    let mut client = redis::Client::open(format!("redis://{addr}/"))
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let used_before = used_memory(&mut client).await;

    let mut flooder = raw(addr).await;
    let chunk: Vec<u8> = b"*2\r\n$4\r\nECHO\r\n$1000\r\n"
        .iter()
        .copied()
        .chain(std::iter::repeat_n(b'x', 1000))
        .chain(*b"\r\n")
        .collect::<Vec<_>>()
        .repeat(1000);
    // Up to ~1 GB of requests; the write stalls long before that once both
    // sides' socket buffers are full.
    let mut sent = 0usize;
    while sent < 1000 * chunk.len() {
        match tokio::time::timeout(Duration::from_secs(2), flooder.write_all(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    assert!(sent < 1000 * chunk.len(), "backpressure stops the flood");
    let pong: String = redis::cmd("PING").query_async(&mut client).await.unwrap();
    assert_eq!(pong, "PONG");
    let used_during = used_memory(&mut client).await;
    assert!(
        used_during < used_before + 64 * 1024 * 1024,
        "memory grew from {used_before} to {used_during} while {sent} bytes were pushed"
    );
    drop(flooder);
    node.shutdown().await;
}

#[tokio::test]
async fn maxclients_refuses_extra_connections_with_redis_error() {
    let config = Config {
        maxclients: 2,
        ..Config::ephemeral()
    };
    let node = start_node_with(config).await;
    let addr = node.client_addr();
    let mut a = raw(addr).await;
    let mut b = raw(addr).await;
    exchange(&mut a, b"PING\r\n", b"+PONG\r\n").await;
    exchange(&mut b, b"PING\r\n", b"+PONG\r\n").await;
    let mut c = raw(addr).await;
    let refusal = b"-ERR max number of clients reached\r\n";
    assert_eq!(read_exactly(&mut c, refusal.len()).await, refusal);
    assert!(closed_by_server(&mut c).await);
    drop(a);
    // Once a slot frees up, new clients are served again.
    assert!(
        common::eventually(Duration::from_secs(10), || async {
            let mut d = raw(addr).await;
            d.write_all(b"PING\r\n").await.unwrap();
            read_exactly(&mut d, 7).await == b"+PONG\r\n"
        })
        .await
    );
    node.shutdown().await;
}

#[tokio::test]
async fn quit_replies_ok_then_closes() {
    let node = start_node().await;
    let mut s = raw(node.client_addr()).await;
    exchange(&mut s, b"QUIT\r\n", b"+OK\r\n").await;
    assert!(closed_by_server(&mut s).await);
    node.shutdown().await;
}

#[tokio::test]
async fn hello_3_switches_replies_to_resp3() {
    let node = start_node().await;
    let mut s = raw(node.client_addr()).await;
    exchange(&mut s, b"GET missing\r\n", b"$-1\r\n").await;
    s.write_all(b"HELLO 3\r\n").await.unwrap();
    let hello = read_until(&mut s, b"$7\r\nmodules\r\n*0\r\n").await;
    assert!(
        hello.starts_with(b"%7\r\n"),
        "{:?}",
        String::from_utf8_lossy(&hello)
    );
    let proto: &[u8] = b"$5\r\nproto\r\n:3\r\n";
    assert!(hello.windows(proto.len()).any(|w| w == proto));
    exchange(&mut s, b"GET missing\r\n", b"_\r\n").await;
    exchange(&mut s, b"HELLO 2\r\nPING\r\n", b"*14\r\n").await;
    node.shutdown().await;
}
