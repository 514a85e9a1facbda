//! kriminoDB: an in-memory key-value store that speaks the Redis protocol.
//!
//! Map of the crate (see `DESIGN.md` in the shared folder for the why):
//! - [`config`]: flags, environment and TOML file.
//! - [`node`]: the composition root; [`Node::start`] returns a [`NodeHandle`].
//! - `resp`: the RESP2/RESP3 + inline decoder and the reply encoder.
//! - `command`: the command table and one file per command family.
//! - `store`: the sharded keyspace, entries with versions, expiry.
//! - `clock`: the hybrid logical clock that stamps every write.
//! - `server`: the listener and the per-connection loop.
//! - [`membership`]: SWIM gossip membership (foca) on the peer port.
//! - [`replication`]: the push path and anti-entropy over TCP on the peer port.
//! - [`crypto`]: the cluster key that seals both, and datagram anti-replay.

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
