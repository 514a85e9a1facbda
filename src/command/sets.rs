//! Set commands: SADD … SSCAN, with Redis 7's replies and errors; every
//! write goes through `KeyAccess::write_typed` and replicates its delta.

use super::CommandSpec;

/// This family's rows of the command table.
#[rustfmt::skip]
pub(super) static FAMILY: &[CommandSpec] = &[
];
