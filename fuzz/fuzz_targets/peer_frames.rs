//! A peer link's byte stream through the length-delimited codec and the
//! postcard wire decoder, each message applied to a store as a node does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| kriminodb::fuzzing::peer_target(data));
