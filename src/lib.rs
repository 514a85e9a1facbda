//! kriminoDB: an in-memory key-value store that speaks the Redis protocol.
//!
//! Map of the crate (see `DESIGN.md` in the shared folder for the why),
//! from the bottom up:
//! - [`clock`]: the node's clock (injectable time source, HLC); [`stats`],
//!   [`info`]: counters and INFO's section registry; [`clients`]: the
//!   registry of connected clients; [`crypto`]: the cluster key.
//! - [`store`]: the sharded keyspace, entries with versions, expiry,
//!   eviction, the digest tree and the change log every change goes to.
//! - [`config`]: flags, environment and TOML file.
//! - [`resp`]: the RESP2/RESP3 + inline decoder and the reply encoder.
//! - [`membership`]: SWIM gossip (a sans-IO core and its driver task).
//! - [`replication`]: the push path and anti-entropy (a sans-IO session
//!   and the link tasks) over TCP on the peer port.
//! - [`command`]: the command table, one file per family, dispatch, and
//!   the [`command::Services`] handlers see the node through.
//! - [`server`]: the listeners, the client session (sans-IO) and the
//!   connection loop.
//! - [`node`]: the composition root; [`Node::start`] returns a [`NodeHandle`].
//! - `fuzzing`: the fuzz targets' entry points, driving the same cores.

pub mod clients;
pub mod clock;
pub mod command;
pub mod config;
pub mod crypto;
#[doc(hidden)]
pub mod fuzzing;
pub mod info;
pub mod membership;
pub mod node;
pub mod replication;
pub mod resp;
pub mod server;
pub mod stats;
pub mod store;

pub use config::Config;

/// The library's own unit tests measure memory as the binary does.
#[cfg(test)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
pub use node::{Node, NodeHandle, StartError};
