//! Helpers shared by the integration tests: start a node in-process on
//! port 0, connect real clients to it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use kriminodb::{Config, Node, NodeHandle};

/// Starts a node on an OS-assigned port with default settings.
pub async fn start_node() -> NodeHandle {
    start_node_with(Config::ephemeral()).await
}

pub async fn start_node_with(config: Config) -> NodeHandle {
    Node::start(config).await.expect("node starts")
}

/// A multiplexed async connection from the `redis` crate.
pub async fn client(node: &NodeHandle) -> redis::aio::MultiplexedConnection {
    let url = format!("redis://{}/", node.client_addr());
    redis::Client::open(url)
        .expect("valid url")
        .get_multiplexed_async_connection()
        .await
        .expect("connects")
}

/// A plain TCP connection for byte-level protocol tests.
pub async fn raw(addr: SocketAddr) -> tokio::net::TcpStream {
    tokio::net::TcpStream::connect(addr)
        .await
        .expect("connects")
}

/// Polls `check` until it returns true or `deadline` passes; returns the
/// last result so the caller asserts on behaviour, not on timing.
pub async fn eventually<F, Fut>(deadline: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if check().await {
            return true;
        }
        if tokio::time::Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
