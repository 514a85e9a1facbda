//! Entry points for the cargo-fuzz targets in `fuzz/` (and for the
//! regression tests of what they found). Each takes raw bytes as they would
//! arrive from the network and pushes them through the functions the node
//! itself calls on that input, checking what must hold for any input: no
//! panic, bounded allocation, and replies that keep the client's framing.
//!
//! Not a stable API: it exists so fuzzing needs no wholesale `pub` of the
//! internals.
//!
//! - [`client`]: the RESP decoder and a client session on an in-process node.
//! - [`peer`]: the peer link's frame codec, its decoders and the
//!   anti-entropy sessions a node runs on each message.
//! - [`membership`]: datagrams fed to the membership core.
//! - [`seeds`]: the committed seed corpus.

pub mod client;
pub mod membership;
pub mod peer;
pub mod seeds;

pub use client::{
    CommandNode, check_replies, commands_target, resp_decode, resp_decode_chunked, resp_target,
};
pub use membership::{MembershipHarness, membership_target, split_datagrams};
pub use peer::{
    PeerHarness, default_frame_limit, peer_apply, peer_apply_inbound, peer_decode, peer_frame,
    peer_frame_inbound, peer_frames, peer_target,
};
pub use seeds::seed_corpus;
