#![warn(missing_docs)]
//! The wire contract between litebroker clients and `litebrokerd`.
//!
//! This crate holds only what both sides must agree on: the [`Request`] and
//! [`Response`] enums, [`Value`], the typed [`ErrorKind`]s, the protocol version
//! and the framing/codec in [`frame`]. It does no socket I/O policy and knows
//! nothing about SQLite.
//!
//! # Compatibility rules
//! bincode writes an enum variant as its index, so variants of every enum here are
//! only ever **appended**, and fields are never reordered. The golden-bytes tests in
//! `tests/golden.rs` fail when a message's encoding changes by accident.
//! [`Request::Hello`] and [`Response::Hello`]/[`Response::Error`] are frozen: a
//! broker must be able to read any client's handshake and answer it in a form that
//! client understands, whatever its version.

pub mod frame;
mod messages;
mod naming;

pub use frame::{
    decode_payload, encode_frame, read_frame, write_frame, FrameError, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN,
    HARD_MAX_FRAME,
};
pub use messages::*;
pub use naming::{fnv1a64, socket_file_name, PIPE_PREFIX};

/// Major protocol version. Part of the socket name: brokers and clients of different
/// majors never talk on the same socket. Bumped for any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Minor protocol version: raised when variants are appended. Clients and brokers of
/// the same major but different minors talk; a request the broker does not know is
/// answered with a typed protocol error that names both versions.
pub const PROTOCOL_MINOR: u32 = 1;
