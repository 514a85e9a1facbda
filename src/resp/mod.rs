//! The Redis wire protocol: request decoding and reply encoding.

pub mod decoder;
pub mod reply;

pub use decoder::{Decoded, Decoder, Limits, ProtocolError, Source, parse_i64};
pub use reply::Reply;
