//! A client's request stream decoded and dispatched on an in-process node:
//! no panic, one well-formed reply per command.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kriminodb::fuzzing::commands_target(data));
