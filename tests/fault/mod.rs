//! The fault-injection harness (issue 5): a kriminoDB cluster of 3–5 real
//! processes, one per Linux network namespace on a bridge, a recorded
//! client workload through partitions, packet loss, crashes, pauses and
//! clock skew, and a checker of the history against the healed cluster.
//!
//! - [`netns`]: namespaces, bridge, nftables rules; cleanup on drop.
//! - [`cluster`]: the node processes (start, kill -9, SIGTERM, SIGSTOP…).
//! - [`history`] and [`workload`]: the clients and what they saw.
//! - [`checker`]: the properties, the report.
//! - [`scenario`]: the named scenarios and the run of one.

pub mod checker;
pub mod cluster;
pub mod history;
pub mod netns;
pub mod scenario;
pub mod workload;
