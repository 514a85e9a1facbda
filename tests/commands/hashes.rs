//! The hashes family's conformance checks (see tests/commands.rs).

#[allow(unused_imports)]
use crate::*;

pub async fn hashes(_t: &Target) {}
