#![warn(missing_docs)]
//! What litebroker clients and `litebrokerd` share about finding and talking to
//! each other.
//!
//! - The wire contract: the [`Request`] and [`Response`] enums, [`Value`], the
//!   typed [`ErrorKind`]s, the protocol version and the framing/codec in [`frame`].
//! - [`metrics`]: the broker's figures as they cross the wire, and their
//!   rendering in the Prometheus text exposition format.
//! - [`rendezvous`]: where a database's broker listens and what it records in its
//!   lock file, derived from the database path alone.
//! - [`stream`]: the connecting side's frame stream, with the waits of a round
//!   trip (and, on Windows, `pipe_deadline`, which enforces them on pipes).
//! - [`host`] and [`backoff`]: the facts about processes and users both ends judge
//!   alike, and the one retry schedule and jitter they wait with.
//! - `sql` (feature `rusqlite`): [`Value`] to and from rusqlite's types.
//!
//! It holds no broker policy: what the broker does with a request, and what a
//! client retries, live in their crates.
//!
//! # Compatibility rules
//! bincode writes an enum variant as its index, so variants of every enum here are
//! only ever **appended**, and fields are never reordered. The golden-bytes tests in
//! `tests/golden.rs` fail when a message's encoding changes by accident.
//! [`Request::Hello`] and [`Response::Hello`]/[`Response::Error`] are frozen: a
//! broker must be able to read any client's handshake and answer it in a form that
//! client understands, whatever its version.

pub mod backoff;
mod feed;
pub mod frame;
pub mod host;
mod messages;
pub mod metrics;
#[cfg(windows)]
pub mod pipe_deadline;
pub mod rendezvous;
pub mod replication;
mod reports;
#[cfg(feature = "rusqlite")]
pub mod sql;
pub mod stream;

pub use feed::*;
pub use frame::{
    decode_payload, encode_frame, read_frame, write_frame, FrameError, DEFAULT_MAX_FRAME, FRAME_HEADER_LEN,
    HARD_MAX_FRAME,
};
pub use messages::*;
pub use metrics::{HistogramValue, MetricFamily, MetricKind, MetricSeries, MetricValue, MetricsReport};
pub use reports::*;

/// Major protocol version. Part of the socket name: brokers and clients of different
/// majors never talk on the same socket. Bumped for any incompatible change.
pub const PROTOCOL_VERSION: u32 = 1;

/// Minor protocol version: raised when variants are appended. Clients and brokers of
/// the same major but different minors talk; a request the broker does not know (from
/// a client of a higher minor) is answered with a typed protocol error that says so
/// and names both versions.
pub const PROTOCOL_MINOR: u32 = 3;
