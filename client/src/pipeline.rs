//! Pipelined writes on one connection ([`Pipeline`]): one-shot writes sent
//! without waiting for each answer, so that the broker's writer commits many of
//! them per group while the app goes on.
//!
//! The broker answers a connection's writes in the order they were sent, each
//! once, each with its own outcome (a failing write fails alone); so the answers
//! are matched to the writes by their order. Each write carries its own request
//! id (exactly-once). A pipeline keeps at most [`Pipeline::depth`] writes
//! unanswered ([`DEFAULT_DEPTH`], the broker's own limit per connection): a
//! submit beyond it first reads the oldest answer.
//!
//! On Windows the depth is 1: the broker reads a named pipe only while no answer
//! is due to it, and a pipe may take neither side's next frame until the other
//! reads, so a client sending while the broker writes its answer can stall both
//! until the broker's I/O timeout (PROTOCOL.md, "Windows"). The calls are the
//! same there; the writes go one at a time.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use litebroker_protocol::{ExecResult, Request, RequestId, Response, Statement, Value, WriteOptions};

use crate::client::{hex, timeout_of, Client, ANSWER_GRACE};
use crate::error::{unexpected, ClientError, Result};

/// Writes a pipeline keeps unanswered at most by default: the broker's limit per
/// connection (it stops reading beyond it until the oldest is answered); 1 on
/// Windows (see the module's doc).
pub const DEFAULT_DEPTH: usize = if cfg!(windows) { 1 } else { 64 };

/// A write sent through a [`Pipeline`], to wait for with [`Pipeline::wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "wait for the write's answer (or use Pipeline::wait_all)"]
pub struct Pending {
    n: u64,
    request_id: Option<RequestId>,
}

impl Pending {
    /// The write's request id, if it has one: after a lost connection, sending
    /// the same write again with it applies it once.
    pub fn request_id(&self) -> Option<RequestId> {
        self.request_id
    }
}

/// A write sent and not answered yet.
#[derive(Debug)]
struct Sent {
    n: u64,
    request_id: Option<RequestId>,
    /// When the client stops waiting for its answer.
    deadline: Instant,
}

/// Writes in flight on one [`Client`], answered in order ([`Client::pipeline`]).
///
/// ```no_run
/// use litebroker_client::{Client, Value};
/// let mut client = Client::connect("data/app.db")?;
/// let mut p = client.pipeline();
/// let mut pending = Vec::new();
/// for i in 0..1000 {
///     pending.push(p.submit("INSERT INTO events (n) VALUES (?1)", &[Value::Integer(i)])?);
/// }
/// // Each write's own outcome, in the order sent.
/// for r in p.wait_all() {
///     r?;
/// }
/// # Ok::<(), litebroker_client::ClientError>(())
/// ```
///
/// Dropping a pipeline reads the answers still due (so the connection can be
/// used again) and drops them: wait for the writes whose outcome matters.
#[derive(Debug)]
pub struct Pipeline<'c> {
    client: &'c mut Client,
    sent: VecDeque<Sent>,
    /// Answers read before their write was waited for.
    done: BTreeMap<u64, Result<ExecResult>>,
    next: u64,
    depth: usize,
}

// Here rather than in `client.rs`, which knows nothing of pipelines: the
// pipeline is built on the client's frame stream, not the other way round.
impl Client {
    /// Pipelines one-shot writes on this connection: each is sent without
    /// waiting for its answer, and the answers, matched in order, are read when
    /// waited for ([`Pipeline`]). The broker commits the writes in flight
    /// together, so one connection writes many times faster than with
    /// [`Client::execute`]; each write keeps its own request id and outcome.
    pub fn pipeline(&mut self) -> Pipeline<'_> {
        Pipeline { client: self, sent: VecDeque::new(), done: BTreeMap::new(), next: 0, depth: DEFAULT_DEPTH }
    }
}

impl<'c> Pipeline<'c> {
    /// At most `depth` writes unanswered (at least 1, and at most
    /// [`DEFAULT_DEPTH`], which is 1 on Windows): a submit beyond that reads the
    /// oldest answer first.
    pub fn with_depth(mut self, depth: usize) -> Self {
        self.depth = depth.clamp(1, DEFAULT_DEPTH);
        self
    }
}

impl Pipeline<'_> {
    /// How many writes may be unanswered at once.
    pub fn depth(&self) -> usize {
        self.depth
    }

    /// Writes sent whose answer was not read yet.
    pub fn in_flight(&self) -> usize {
        self.sent.len()
    }

    /// Sends `sql` with positional parameters, as [`Client::execute`] would, without
    /// waiting for its answer (unless [`Pipeline::depth`] writes are unanswered:
    /// then the oldest answer is read first). A new request id unless the
    /// connection's options turn them off.
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`] (`sent: false`) when the write could not
    /// be sent; the writes sent before it are then answered "connection lost".
    pub fn submit(&mut self, sql: &str, params: &[Value]) -> Result<Pending> {
        self.submit_with(Statement::new(sql, params.to_vec()), WriteOptions::default())
    }

    /// [`Pipeline::submit`] with explicit options (timeout, request id).
    ///
    /// # Errors
    /// As [`Pipeline::submit`].
    pub fn submit_with(&mut self, stmt: Statement, mut opts: WriteOptions) -> Result<Pending> {
        while self.sent.len() >= self.depth {
            self.read_oldest();
        }
        let wait = timeout_of(&mut opts, self.client.timeout());
        self.client.assign_request_id(&mut opts);
        let request_id = opts.request_id;
        if let Err(e) = self.client.send_part(&Request::Execute { stmt, opts }) {
            self.lose_all("the connection broke while a later write was sent");
            return Err(e);
        }
        let n = self.next;
        self.next += 1;
        self.sent.push_back(Sent { n, request_id, deadline: Instant::now() + wait + ANSWER_GRACE });
        Ok(Pending { n, request_id })
    }

    /// The answer of `pending`, reading the answers before it as needed (they are
    /// kept for their own wait).
    ///
    /// # Errors
    /// The write's own error ([`ClientError::Broker`]: nothing of it applied);
    /// [`ClientError::ConnectionLost`] (`sent: true`, naming its request id) when
    /// the connection broke or its answer did not come in time.
    pub fn wait(&mut self, pending: Pending) -> Result<ExecResult> {
        loop {
            if let Some(r) = self.done.remove(&pending.n) {
                return r;
            }
            if !self.sent.iter().any(|s| s.n == pending.n) {
                return Err(ClientError::Unexpected(
                    "this write's answer was taken already (waited twice, or by wait_all)".into(),
                ));
            }
            self.read_oldest();
        }
    }

    /// Every answer not waited for yet, in the order the writes were sent.
    pub fn wait_all(&mut self) -> Vec<Result<ExecResult>> {
        while !self.sent.is_empty() {
            self.read_oldest();
        }
        std::mem::take(&mut self.done).into_values().collect()
    }

    /// Reads the oldest write's answer into `done`; on a broken connection or an
    /// answer not in time, every write in flight is answered "connection lost".
    fn read_oldest(&mut self) {
        let Some(oldest) = self.sent.front() else { return };
        let left = oldest.deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        let answer = match self.client.next_response(left) {
            Ok(Some(Response::Executed(r))) => Ok(r),
            Ok(Some(Response::Error(info))) => Err(ClientError::Broker(info)),
            Ok(Some(other)) => Err(unexpected("execute", &other)),
            Ok(None) => {
                self.client.mark_broken();
                return self.lose_all("no answer in time");
            }
            Err(e) => return self.lose_all(&e.to_string()),
        };
        if let Some(s) = self.sent.pop_front() {
            self.done.insert(s.n, answer);
        }
    }

    /// Every write in flight gets "connection lost": sent, outcome unknown.
    fn lose_all(&mut self, why: &str) {
        for s in self.sent.drain(..) {
            let reason = match s.request_id {
                Some(id) => format!(
                    "{why}; a pipelined write is not resent by the client: send it again with request id {} \
                     and the broker applies it once",
                    hex(&id)
                ),
                None => why.to_owned(),
            };
            self.done.insert(s.n, Err(ClientError::ConnectionLost { sent: true, reason }));
        }
    }
}

impl Drop for Pipeline<'_> {
    /// The answers still due are read, so that the connection's next request is
    /// not answered with one of them.
    fn drop(&mut self) {
        while !self.sent.is_empty() {
            self.read_oldest();
        }
    }
}
