//! A streamed executemany as its connection serves it: `ManyBegin`, then
//! `ManyRows` frames, then `ManyEnd`, with one answer after `ManyEnd`.
//!
//! The client sends the whole stream without waiting, so this thread reads every
//! frame of it whatever happens: it hands each chunk to the writer (see
//! `writer::many`), reads and decodes the next while it runs, and hands that one
//! over once the one before has run: the broker holds at most two chunks of a
//! stream (the rest waits in the socket, and the client blocks on a full socket).
//! Once the stream cannot commit (a row failed, the request id was already
//! recorded, a refusal), the remaining chunks are read and dropped, and the
//! answer waits for `ManyEnd`. Another request inside a stream ends it at once
//! with a protocol error (the stream is rolled back). A client that leaves
//! mid-stream is rolled back by its connection's `Disconnected` job; one that
//! stalls is rolled back by the writer at the stream's deadline.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use litebroker_protocol::{FrameError, Request, Response, WriteOptions, PROTOCOL_MINOR};

use super::deadline::{timeout_of, Sent};
use super::io::Incoming;
use super::route::session_state;
use super::Conn;
use crate::job::JobKind;
use crate::shared::ClientEntry;
use crate::texts;

/// Serves the stream `ManyBegin { sql, opts }` opened; the stream's answer, or
/// None when the client left (or the broker stops) before ending it.
///
/// # Errors
/// The connection's I/O errors.
pub(super) fn serve(
    conn: &mut Conn,
    client: &Arc<ClientEntry>,
    sql: String,
    opts: WriteOptions,
) -> Result<Option<Response>, FrameError> {
    let shared = conn.shared.clone();
    let timeout = timeout_of(opts.timeout_ms, &shared.config);
    let deadline = Instant::now() + timeout;
    let left = || deadline.saturating_duration_since(Instant::now());
    let schema = shared.schema_version.load(Ordering::Relaxed);
    // Set once the stream cannot commit: what `ManyEnd` will be answered.
    let mut answer = match session_state(client, &shared.config) {
        _ if client.expected_schema.is_some_and(|e| e > schema) => {
            Some(Response::Error(texts::schema_mismatch(client.expected_schema.unwrap_or(0), schema)))
        }
        Ok(true) => Some(Response::Error(texts::many_in_session())),
        Err(e) => Some(Response::Error(e)),
        Ok(false) => None,
    };
    if answer.is_none() {
        match conn.jobs.submit(client, JobKind::ManyBegin { sql }, opts, timeout) {
            Response::SessionStarted { .. } => {}
            // Answered from the request-id record, or refused: nothing runs.
            other => answer = Some(other),
        }
    }
    // The writer holds this stream's transaction until it is ended or rolled back.
    let mut stream = Stream { open: answer.is_none(), in_flight: None };
    loop {
        let Some(incoming) = conn.next_frame()? else { return Ok(None) };
        let req = match incoming {
            Incoming::Request(r) => r,
            Incoming::Malformed(e) => {
                stream.abandon(conn, client);
                return Ok(Some(Response::Error(texts::malformed(&e, client.minor, PROTOCOL_MINOR))));
            }
        };
        match req {
            Request::ManyRows { rows } => {
                if answer.is_some() {
                    continue;
                }
                let max = shared.config.max_params;
                if let Some(row) = rows.iter().find(|r| r.len() > max) {
                    stream.abandon(conn, client);
                    answer = Some(Response::Error(texts::too_many_params(row.len(), max)));
                    continue;
                }
                // One chunk runs at the writer while this thread reads and decodes
                // the next; the next is handed over once the one before has run.
                if let Some(failed) = stream.settle(conn, client) {
                    answer = Some(failed);
                    continue;
                }
                match conn.jobs.hand_over(client, JobKind::ManyRows(rows), WriteOptions::default(), left()) {
                    Ok(sent) => stream.in_flight = Some(sent),
                    Err(refused) => {
                        stream.abandon(conn, client);
                        answer = Some(Response::Error(refused));
                    }
                }
            }
            Request::ManyEnd { rows, commit } => {
                if let Some(failed) = stream.settle(conn, client) {
                    answer = Some(failed);
                }
                if let Some(a) = answer {
                    return Ok(Some(a));
                }
                // A commit under way is waited for even at the deadline's edge:
                // the writer bounds its own work.
                let end = JobKind::ManyEnd { rows, commit };
                let wait = left().max(Duration::from_secs(1));
                return Ok(Some(conn.jobs.submit(client, end, WriteOptions::default(), wait)));
            }
            other => {
                stream.abandon(conn, client);
                return Ok(Some(Response::Error(texts::many_out_of_place(other.kind()))));
            }
        }
    }
}

/// The stream as this connection sees it.
struct Stream {
    /// The writer may still hold the stream's transaction for this client.
    open: bool,
    /// The chunk handed to the writer whose answer is still to be read.
    in_flight: Option<Sent>,
}

impl Stream {
    /// Waits for the chunk in flight, if any: None when it ran, else its answer
    /// (a row failed, the deadline passed), and the stream is rolled back.
    fn settle(&mut self, conn: &mut Conn, client: &Arc<ClientEntry>) -> Option<Response> {
        let sent = self.in_flight.take()?;
        match conn.jobs.answer_of(sent) {
            Response::ExecutedMany(_) => None,
            other => {
                // The writer rolled the stream back (a failed row ends it there);
                // a chunk that timed out while queued did not.
                self.abandon(conn, client);
                Some(other)
            }
        }
    }

    /// Rolls back the stream if the writer may still hold it for this client
    /// (after the answer of the chunk in flight: a connection has one job at a
    /// time).
    fn abandon(&mut self, conn: &mut Conn, client: &Arc<ClientEntry>) {
        if let Some(sent) = self.in_flight.take() {
            let _ = conn.jobs.answer_of(sent);
        }
        if std::mem::take(&mut self.open) {
            let end = JobKind::ManyEnd { rows: 0, commit: false };
            let _ =
                conn.jobs.submit(client, end, WriteOptions::default(), conn.shared.config.default_timeout);
        }
    }
}
