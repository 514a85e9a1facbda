//! CLUSTER MEMBERS / MYID: kriminoDB's own membership introspection.
//!
//! kriminoDB replicates every key to every node instead of sharding, so
//! Redis Cluster's slot commands (NODES, SLOTS, SHARDS…) answer as a Redis
//! without cluster support does, and cluster-aware clients fall back to
//! talking to one node.

use super::{Args, CmdError, CmdResult, Ctx, sub_arity};

use super::CommandSpec;
use super::spec::spec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
    spec!("cluster", -2, cluster, [Admin, Loading, Stale], (0, 0, 0), "cluster", "3.0.0", "subcommand", "CLUSTER MEMBERS and MYID: gossip membership of this leaderless cluster."),
];

const CLUSTER_DISABLED: CmdError =
    CmdError::fixed("ERR This instance has cluster support disabled");

pub fn cluster(ctx: &mut Ctx<'_>, args: &Args<'_>) -> CmdResult {
    let sub = args.get(1).to_ascii_lowercase();
    match sub.as_slice() {
        b"members" => {
            sub_arity(args, "cluster", "members", 2)?;
            let members = ctx.services.cluster.members();
            let reply = &mut *ctx.reply;
            reply.array(members.len());
            for m in members.iter() {
                reply.map(8);
                reply.bulk(b"name");
                reply.bulk(m.id.name.as_bytes());
                reply.bulk(b"node_id");
                reply.bulk(format!("{:016x}", m.id.node_id).as_bytes());
                reply.bulk(b"peer_addr");
                reply.bulk(m.id.peer.to_string().as_bytes());
                reply.bulk(b"client_addr");
                reply.bulk(m.id.client.to_string().as_bytes());
                reply.bulk(b"state");
                reply.bulk(m.state.as_str().as_bytes());
                reply.bulk(b"incarnation");
                reply.int(m.id.incarnation as i64);
                reply.bulk(b"last_heard_ms");
                // -1: this node itself, or never heard from directly.
                reply.int(
                    m.last_heard
                        .map_or(-1, |t| ctx.services.clock.since(t).as_millis() as i64),
                );
                reply.bulk(b"myself");
                reply.int(i64::from(m.is_self));
            }
        }
        b"myid" => {
            sub_arity(args, "cluster", "myid", 2)?;
            ctx.reply
                .bulk(format!("{:016x}", ctx.services.node.node_id).as_bytes());
        }
        b"help" => {
            let lines = [
                "CLUSTER <subcommand>. Subcommands are:",
                "MEMBERS",
                "    Every known member: name, node_id, peer_addr, client_addr, state",
                "    (alive, suspect or down), incarnation, last_heard_ms, myself.",
                "MYID",
                "    This node's id.",
                "HELP",
                "    Print this help.",
            ];
            ctx.reply.help(&lines);
        }
        b"nodes" | b"slots" | b"shards" | b"info" | b"keyslot" | b"countkeysinslot"
        | b"getkeysinslot" | b"links" | b"myshardid" => return Err(CLUSTER_DISABLED),
        _ => return Err(CmdError::unknown_subcommand(args.get(1), "cluster")),
    }
    Ok(())
}
