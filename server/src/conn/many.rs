//! A stream as its connection serves it: a streamed executemany (`ManyBegin`,
//! then `ManyRows` frames) or a streamed batch (`BatchBegin`, then `BatchPart`
//! frames), then `ManyEnd`, with one answer after `ManyEnd`. Each part is
//! checked as the request it stands for would be (parameters, and a batch
//! part's statement count, `--max-batch-statements`).
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

use litebroker_protocol::{ErrorInfo, FrameError, Request, Response, WriteOptions, PROTOCOL_MINOR};

use super::deadline::{timeout_of, Sent};
use super::io::Incoming;
use super::route::{check_batch, session_state};
use super::Conn;
use crate::config::Config;
use crate::job::{JobKind, Part, StreamOf};
use crate::shared::ClientEntry;
use crate::texts;

/// Serves the stream `ManyBegin` or `BatchBegin` opened (`of`); the stream's
/// answer, or None when the client left (or the broker stops) before ending it.
///
/// # Errors
/// The connection's I/O errors.
pub(super) fn serve(
    conn: &mut Conn,
    client: &Arc<ClientEntry>,
    of: StreamOf,
    opts: WriteOptions,
) -> Result<Option<Response>, FrameError> {
    let words = of.words();
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
        Ok(true) => Some(Response::Error(texts::many_in_session(words))),
        Err(e) => Some(Response::Error(e)),
        Ok(false) => None,
    };
    if answer.is_none() {
        match conn.jobs.submit(client, JobKind::ManyBegin(of.clone()), opts, timeout) {
            Response::SessionStarted { .. } => {}
            // Answered from the request-id record, or refused: nothing runs.
            other => answer = Some(other),
        }
    }
    // The writer holds this stream's transaction until it is ended or rolled back.
    let mut stream = Stream { open: answer.is_none(), in_flight: None, words };
    loop {
        let Some(incoming) = conn.next_frame()? else { return Ok(None) };
        let req = match incoming {
            Incoming::Request(r) => r,
            Incoming::Malformed(e) => {
                stream.abandon(conn, client);
                return Ok(Some(Response::Error(texts::malformed(&e, client.minor, PROTOCOL_MINOR))));
            }
        };
        match part_of(req, &of, &shared.config) {
            Frame::Part(checked) => {
                if answer.is_some() {
                    continue;
                }
                let part = match checked {
                    Ok(part) => part,
                    Err(refused) => {
                        stream.abandon(conn, client);
                        answer = Some(Response::Error(refused));
                        continue;
                    }
                };
                // One chunk runs at the writer while this thread reads and decodes
                // the next; the next is handed over once the one before has run.
                if let Some(failed) = stream.settle(conn, client) {
                    answer = Some(failed);
                    continue;
                }
                match conn.jobs.hand_over(client, JobKind::ManyPart(part), WriteOptions::default(), left()) {
                    Ok(sent) => stream.in_flight = Some(sent),
                    Err(refused) => {
                        stream.abandon(conn, client);
                        answer = Some(Response::Error(refused));
                    }
                }
            }
            Frame::End { rows, commit } => {
                if let Some(failed) = stream.settle(conn, client) {
                    answer = Some(failed);
                }
                if let Some(a) = answer {
                    return Ok(Some(a));
                }
                // A commit under way is waited for even at the deadline's edge:
                // the writer bounds its own work.
                let end = JobKind::ManyEnd { words, rows, commit };
                let wait = left().max(Duration::from_secs(1));
                return Ok(Some(conn.jobs.submit(client, end, WriteOptions::default(), wait)));
            }
            Frame::Other(kind) => {
                stream.abandon(conn, client);
                return Ok(Some(Response::Error(texts::many_out_of_place(words, kind))));
            }
        }
    }
}

/// A frame read inside a stream.
enum Frame {
    /// A part of this stream, checked as its request would be.
    Part(Result<Part, ErrorInfo>),
    /// `ManyEnd`.
    End { rows: u64, commit: bool },
    /// Anything else (the kind of request): out of place.
    Other(&'static str),
}

/// What `req` is to the stream `of`: an executemany takes rows, a batch
/// statements (each part limited as one `Batch` request is).
fn part_of(req: Request, of: &StreamOf, config: &Config) -> Frame {
    match (req, of) {
        (Request::ManyRows { rows }, StreamOf::Rows { .. }) => {
            let max = config.max_params;
            Frame::Part(match rows.iter().find(|r| r.len() > max) {
                Some(row) => Err(texts::too_many_params(row.len(), max)),
                None => Ok(Part::Rows(rows)),
            })
        }
        (Request::BatchPart { statements }, StreamOf::Statements) => {
            Frame::Part(check_batch(&statements, config).map(|()| Part::Statements(statements)))
        }
        (Request::ManyEnd { rows, commit }, _) => Frame::End { rows, commit },
        (other, _) => Frame::Other(other.kind()),
    }
}

/// The stream as this connection sees it.
struct Stream {
    /// The writer may still hold the stream's transaction for this client.
    open: bool,
    /// The chunk handed to the writer whose answer is still to be read.
    in_flight: Option<Sent>,
    /// Which stream, for its messages.
    words: texts::StreamWords,
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
            let end = JobKind::ManyEnd { words: self.words, rows: 0, commit: false };
            let _ =
                conn.jobs.submit(client, end, WriteOptions::default(), conn.shared.config.default_timeout);
        }
    }
}
