//! A client's request stream through the RESP/inline decoder, whole and split
//! into reads: no panic, the connection's invariants hold, same outcome.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kriminodb::fuzzing::resp_target(data));
