//! Length-prefixed membership datagrams through the envelope and foca's
//! postcard codec into a SWIM node (its timers fired after each).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kriminodb::fuzzing::membership_target(data));
