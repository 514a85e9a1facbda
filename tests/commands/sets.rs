//! The sets family's conformance checks (see tests/commands.rs).

#[allow(unused_imports)]
use crate::*;

pub async fn sets(_t: &Target) {}
