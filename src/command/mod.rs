//! Commands: the metadata table, argument access with Redis's errors, and
//! dispatch. One file per command family (its rows of the table and its
//! handlers); each handler parses its arguments, applies them to the store
//! and writes its reply. Handlers see the node only through [`Services`]:
//! what commands may use, never the tasks, sockets or peers behind it —
//! the command table included, so that no family imports the table that
//! lists it.

pub(crate) mod args;
mod cluster;
mod connection;
mod context;
mod dispatch;
mod docs;
mod element_scan;
mod hashes;
mod keys;
mod objects;
mod server;
mod services;
mod sets;
mod spec;
mod strings;
mod table;
mod transaction;
mod tunables;

pub use args::{Args, CmdError, CmdResult, sub_arity};
pub use context::{After, Ctx, Transaction};
pub use dispatch::{dispatch, run_queued};
pub use server::{clients_info, cluster_info, cpu_info, server_info};
pub use services::{ClusterView, NodeInfo, Services};
pub use spec::{CommandSpec, CommandTable, Flag, Handler};
pub use table::COMMANDS;
