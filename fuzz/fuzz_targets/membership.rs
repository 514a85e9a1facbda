//! Length-prefixed membership datagrams into the membership core a node
//! runs (envelope, leave notices, foca), its timers fired after each.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kriminodb::fuzzing::membership_target(data));
