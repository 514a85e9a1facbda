//! A peer link's byte stream through the length-delimited codec and the
//! postcard wire decoder, each message handed to the anti-entropy
//! sessions (responder and initiator) a node runs on its links.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kriminodb::fuzzing::peer_target(data));
