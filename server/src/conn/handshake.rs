//! The handshake: a connection's first frame must be a `Hello` of this broker's
//! major protocol version, complete within the handshake's time (5 s from
//! accept). The client is then registered, with the minor version it speaks and
//! the schema version it was built for, and answered with the broker's facts
//! (`HelloAck`). Anything else is answered and the connection closed.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use litebroker_protocol::frame::peek_hello_version;
use litebroker_protocol::{
    ErrorInfo, FrameError, Hello, HelloAck, Request, Response, PROTOCOL_MINOR, PROTOCOL_VERSION,
};
use tracing::{debug, warn};

use crate::config::Config;
use crate::shared::{ClientEntry, Shared};
use crate::texts;

/// Time left for the handshake of a connection accepted at `accepted`.
pub(super) fn time_left(accepted: Instant, config: &Config) -> Duration {
    config.handshake_timeout.saturating_sub(accepted.elapsed())
}

/// Registers the client of `hello` and answers it; a client of another major
/// version gets `incompatible` and is not registered. `peer_pid`, when the OS
/// told it, wins over the pid the client states.
///
/// # Errors
/// The refusal to send before closing the connection.
pub(super) fn greet(
    hello: Hello,
    peer_pid: Option<u32>,
    shared: &Shared,
) -> Result<(Arc<ClientEntry>, Response), ErrorInfo> {
    let name: String = hello.client_name.chars().filter(|c| !c.is_control()).take(128).collect();
    let pid = peer_pid.unwrap_or(hello.pid);
    if hello.protocol != PROTOCOL_VERSION {
        warn!("refused client '{name}' (pid {pid}): {}", texts::version_mismatch(hello.protocol));
        return Err(texts::incompatible(hello.protocol));
    }
    let client = shared.register(name, pid, hello.expected_schema, hello.minor);
    let schema = shared.schema_version.load(Ordering::Relaxed);
    if let Some(expected) = hello.expected_schema.filter(|e| *e > schema) {
        warn!(
            "client {} was built for schema version {expected}, the database is at {schema}: \
             its writes are refused until the migrations are applied",
            client.describe()
        );
    }
    debug!("client {} connected (protocol {}.{})", client.describe(), hello.protocol, hello.minor);
    let ack = HelloAck {
        protocol: PROTOCOL_VERSION,
        minor: PROTOCOL_MINOR,
        broker_version: env!("CARGO_PKG_VERSION").to_owned(),
        db_path: shared.db_path.clone(),
        socket: shared.socket.clone(),
        pid: std::process::id(),
        client_id: client.id,
        schema_version: shared.schema_version.load(Ordering::Relaxed),
    };
    Ok((client, Response::Hello(ack)))
}

/// The answer to a first frame that does not decode. A handshake from another
/// major version may not decode as this one's `Hello`, but its first fields are
/// frozen (variant 0, then the version), so it still gets `incompatible`.
pub(super) fn refuse_malformed(payload: &[u8], e: &FrameError) -> Response {
    match peek_hello_version(payload) {
        Some(v) if v != PROTOCOL_VERSION => {
            warn!("refused an unidentified client: {}", texts::version_mismatch(v));
            Response::Error(texts::incompatible(v))
        }
        _ => {
            let refusal = texts::expected_hello_malformed(e);
            warn!("disconnecting unidentified client: {}", refusal.message);
            Response::Error(refusal)
        }
    }
}

/// The answer to a first frame that is another request than `Hello`.
pub(super) fn refuse_other(req: &Request) -> Response {
    let refusal = texts::expected_hello(req.kind());
    warn!("disconnecting unidentified client: {}", refusal.message);
    Response::Error(refusal)
}
