//! A connection to the broker: requests, reconnecting, one-shot writes and
//! write sessions. Its streams (executemany, streamed batches) are in
//! `many.rs`, its pipeline in `pipeline.rs`, the operations' requests in
//! `admin.rs`: each builds on the request path here.
//!
//! One file for [`Client`] and its [`WriteSession`] (over 600 lines): a session is a
//! mode of one connection, run through the connection's own request path, and the
//! client hands sessions out; apart, each would have to import the other.

use std::borrow::BorrowMut;
use std::path::Path;
use std::time::{Duration, Instant};

use litebroker_protocol::backoff::jitter;
use litebroker_protocol::rendezvous::Location;
use litebroker_protocol::stream::{ExchangeError, FrameStream};
use litebroker_protocol::{
    ErrorInfo, ErrorKind, ExecResult, HelloAck, Request, Response, Statement, Value, WriteOptions,
};

use crate::autostart::{self, StartOutcome};
use crate::connect::{connect, Connected};
use crate::error::{exchange_error, unexpected, ClientError, Result};
use crate::options::{AutoStart, ConnectOptions};
use crate::tracking::Tracked;

/// The default wait for the writer of a write session from `factory.writer()`.
pub const DEFAULT_WRITER_TIMEOUT: Duration = Duration::from_secs(10);

/// Extra time the client waits beyond a request's own timeout, so that the broker's
/// typed answer ("locked", "timeout") arrives before the client gives up.
pub(crate) const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Connects to the broker of `opts.db`, starting one first when none is running
/// (see [`crate::autostart`]), and tells how. `opts.autostart` is ignored: `auto`
/// rules.
///
/// # Errors
/// [`ClientError::AutoStart`] when no broker could be started or none answered in
/// time; any other connect error (an incompatible broker, …) as
/// [`Client::connect_with`] returns it.
pub fn connect_or_start(opts: &ConnectOptions, auto: &AutoStart) -> Result<(Client, StartOutcome)> {
    let (conn, outcome) = autostart::connect_or_start(opts, auto)?;
    Ok((Client::over(conn, opts), outcome))
}

/// A connection to the broker of one database.
///
/// Requests are sent one at a time, except one-shot writes through
/// [`Client::pipeline`]; each carries its timeout so the broker never works past
/// what the caller waits for.
#[derive(Debug)]
pub struct Client {
    pub(crate) stream: FrameStream,
    pub(crate) hello: HelloAck,
    pub(crate) location: Location,
    pub(crate) timeout: Duration,
    /// Set after an I/O failure: the stream's state is unknown, so it is not reused.
    pub(crate) broken: bool,
    pub(crate) opts: ConnectOptions,
    reconnects: u64,
    _tracked: Tracked,
}

impl Client {
    /// Connects to the broker serving `db`, with default options.
    ///
    /// # Errors
    /// [`ClientError::NotRunning`] when no broker serves the database, a typed
    /// [`ClientError::Broker`] error (e.g. [`ErrorKind::Incompatible`]) when the
    /// broker refuses the handshake.
    pub fn connect(db: impl AsRef<Path>) -> Result<Client> {
        Self::connect_with(&ConnectOptions::new(db))
    }

    /// Connects with explicit options; with [`ConnectOptions::autostart`] set, starts
    /// a broker first when none runs.
    ///
    /// # Errors
    /// As [`Client::connect`]; [`ClientError::AutoStart`] when starting one failed.
    pub fn connect_with(opts: &ConnectOptions) -> Result<Client> {
        let conn = match &opts.autostart {
            Some(auto) => autostart::connect_or_start(opts, auto)?.0,
            None => connect(opts)?,
        };
        Ok(Client::over(conn, opts))
    }

    /// The client of a connection made with `opts`.
    fn over(conn: Connected, opts: &ConnectOptions) -> Client {
        let Connected { stream, hello, location } = conn;
        Client {
            stream,
            hello,
            location,
            timeout: opts.request_timeout,
            broken: false,
            opts: opts.clone(),
            reconnects: 0,
            _tracked: Tracked::new(),
        }
    }

    /// How many times this client reconnected after losing its broker.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Replaces a broken connection with a new one, retrying with jittered
    /// exponential backoff (50 ms doubling, capped at 2 s) until `deadline`: the
    /// broker may be restarting. Reconnecting is a plain connect: it never starts a
    /// broker, also where [`ConnectOptions::autostart`] is set.
    ///
    /// # Errors
    /// The last connect error once the deadline passes, or at once for errors a
    /// retry cannot fix (e.g. an incompatible broker).
    pub fn reconnect(&mut self, deadline: Instant) -> Result<()> {
        let backoff = crate::connect::RECONNECT;
        let mut retry = 0;
        loop {
            let mut opts = self.opts.clone();
            opts.connect_timeout =
                opts.connect_timeout.min(deadline.saturating_duration_since(Instant::now()));
            match connect(&opts).map(|conn| Client::over(conn, &opts)) {
                Ok(mut fresh) => {
                    fresh.timeout = self.timeout;
                    fresh.reconnects = self.reconnects + 1;
                    tracing::info!(
                        broker_pid = fresh.hello.pid,
                        reconnects = fresh.reconnects,
                        "reconnected to the broker"
                    );
                    *self = fresh;
                    return Ok(());
                }
                Err(e) if is_transient(&e) => {
                    let pause = jitter(backoff.delay(retry), 0.5, 1.0);
                    if Instant::now() + pause >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(pause);
                    retry += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends a one-shot request; when the connection breaks, reconnects and resends
    /// it if that cannot apply it twice (see [`ConnectOptions::reconnect`]).
    fn call_resending(&mut self, req: &Request, opts: &WriteOptions, wait: Duration) -> Result<Response> {
        let deadline = Instant::now() + wait;
        // An earlier attempt reached the broker and its answer was lost.
        let mut in_doubt = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let err = match self.call(req, left) {
                Err(ClientError::Broker(i))
                    if in_doubt && matches!(i.kind, ErrorKind::Timeout | ErrorKind::Locked) =>
                {
                    // The resend did not get to run, so it cannot say what became
                    // of the first attempt: never report that as a plain timeout
                    // or lock, which would mean "not applied".
                    return Err(ClientError::ConnectionLost {
                        sent: true,
                        reason: format!(
                            "the answer to the first attempt was lost, and the resend with the same request id \
                             could not reach the writer in time ({})",
                            i.message
                        ),
                    });
                }
                Err(e) => e,
                ok => return ok,
            };
            let sent = match &err {
                ClientError::ConnectionLost { sent, .. } => *sent,
                // Refused before running: safe to send again once the broker is back.
                ClientError::Broker(i) if i.kind == ErrorKind::ShuttingDown => false,
                _ => return Err(err),
            };
            if !self.opts.reconnect || (sent && !opts.idempotent && opts.request_id.is_none()) {
                return Err(err);
            }
            loop {
                if let Err(e) = self.reconnect(deadline) {
                    tracing::warn!("could not reconnect to resend the request: {e}");
                    // Unsent, the request's fate is known: the refusal says more. Sent,
                    // its outcome at the lost broker is what the caller must learn.
                    if !sent && matches!(e, ClientError::Untrusted(_)) {
                        return Err(e);
                    }
                    return Err(err);
                }
                if !sent || opts.idempotent {
                    break;
                }
                // A resend is exactly-once only where the broker records request ids.
                // Losing this connection too (the broker died again) is one more
                // reconnect within the deadline.
                match self.status() {
                    Ok(s) if s.request_ids => break,
                    Ok(_) => return Err(err),
                    Err(_) if Instant::now() < deadline => continue,
                    Err(_) => return Err(err),
                }
            }
            in_doubt |= sent;
            tracing::info!(request = req.kind(), "resending after a lost connection");
        }
    }

    /// The broker's handshake answer (versions, pid, database, schema version).
    pub fn hello(&self) -> &HelloAck {
        &self.hello
    }

    /// Where this client found its broker.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// The default timeout of requests on this connection.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Changes the default timeout of requests on this connection.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Marks the connection unusable (its stream's state is unknown).
    pub(crate) fn mark_broken(&mut self) {
        self.broken = true;
    }

    /// True once an I/O failure has made this connection unusable.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Sends any request and returns the broker's answer; an error answer becomes
    /// [`ClientError::Broker`]. `wait` bounds the time spent waiting for the answer.
    ///
    /// # Errors
    /// [`ClientError::Broker`] for the broker's typed errors;
    /// [`ClientError::ConnectionLost`] when the connection breaks or the answer
    /// does not come within `wait`.
    pub fn round_trip(&mut self, req: &Request, wait: Duration) -> Result<Response> {
        if self.broken {
            return Err(ClientError::ConnectionLost {
                sent: false,
                reason: "this connection failed earlier; connect again".into(),
            });
        }
        let answer = self.stream.round_trip(req, wait);
        self.settle(answer)
    }

    /// Turns the outcome of an exchange into this library's terms: an error
    /// answer becomes [`ClientError::Broker`], and a failure that leaves the
    /// stream in an unknown state marks the connection broken.
    pub(crate) fn settle(&mut self, answer: Result<Response, ExchangeError>) -> Result<Response> {
        match answer {
            Ok(Response::Error(info)) => Err(ClientError::Broker(info)),
            Ok(resp) => Ok(resp),
            Err(e) => {
                if !matches!(e, ExchangeError::Encode(_)) {
                    self.broken = true;
                }
                Err(exchange_error(e))
            }
        }
    }

    /// The change feed's figures: subscribers, the ring of recent events, what
    /// was published (protocol minor 2).
    ///
    /// # Errors
    /// When the broker does not answer, or is too old for the feed (protocol
    /// minor below 2): then [`ClientError::Unexpected`].
    pub fn feed_stats(&mut self) -> Result<litebroker_protocol::FeedFigures> {
        match self.call_newer(Request::FeedStats)? {
            Response::FeedStats(f) => Ok(f),
            other => Err(unexpected("feed-stats", &other)),
        }
    }

    /// Waits up to `wait` for the next frame of a stream (a watch): `Ok(None)`
    /// when none came; an error answer is returned as [`Response::Error`].
    pub(crate) fn next_response(&mut self, wait: Duration) -> Result<Option<Response>> {
        match self.stream.next_response(wait) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.broken = true;
                Err(exchange_error(e))
            }
        }
    }

    pub(crate) fn call(&mut self, req: &Request, timeout: Duration) -> Result<Response> {
        self.round_trip(req, timeout + ANSWER_GRACE)
    }

    /// Liveness check; returns the round-trip time.
    ///
    /// # Errors
    /// When the broker does not answer.
    pub fn ping(&mut self) -> Result<Duration> {
        let t = Instant::now();
        match self.call(&Request::Ping, self.timeout)? {
            Response::Pong => Ok(t.elapsed()),
            other => Err(unexpected("ping", &other)),
        }
    }

    /// Runs `sql` (one or several `;`-separated statements, atomically) through the
    /// broker's writer, with positional parameters.
    ///
    /// # Errors
    /// [`ClientError::Broker`] with [`ErrorKind::Sql`], [`ErrorKind::Constraint`],
    /// [`ErrorKind::Locked`]… when the write fails; nothing of it is applied then.
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        let opts = WriteOptions::default();
        self.execute_with(Statement::new(sql, params.to_vec()), opts)
    }

    /// As [`Client::execute`], marking the request idempotent (an UPSERT with a
    /// unique key): [`crate::retry_on_locked`] may then retry it after a lost answer.
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn execute_idempotent(&mut self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        let opts = WriteOptions { idempotent: true, ..WriteOptions::default() };
        self.execute_with(Statement::new(sql, params.to_vec()), opts)
    }

    /// Runs a statement with explicit options (timeout, request id, idempotency).
    ///
    /// # Errors
    /// As [`Client::execute`].
    pub fn execute_with(&mut self, stmt: Statement, mut opts: WriteOptions) -> Result<ExecResult> {
        let wait = timeout_of(&mut opts, self.timeout);
        self.assign_request_id(&mut opts);
        let ids = opts.clone();
        match self.call_resending(&Request::Execute { stmt, opts }, &ids, wait)? {
            Response::Executed(r) => Ok(r),
            other => Err(unexpected("execute", &other)),
        }
    }

    /// Runs statements as one all-or-nothing transaction; one result per statement.
    ///
    /// # Errors
    /// As [`Client::execute`]; when any statement fails, none is applied.
    pub fn execute_batch(&mut self, statements: Vec<Statement>) -> Result<Vec<ExecResult>> {
        let opts = WriteOptions::default();
        self.execute_batch_with(statements, opts)
    }

    /// [`Client::execute_batch`] with explicit options.
    ///
    /// # Errors
    /// As [`Client::execute_batch`].
    pub fn execute_batch_with(
        &mut self,
        statements: Vec<Statement>,
        mut opts: WriteOptions,
    ) -> Result<Vec<ExecResult>> {
        let wait = timeout_of(&mut opts, self.timeout);
        self.assign_request_id(&mut opts);
        let ids = opts.clone();
        match self.call_resending(&Request::Batch { statements, opts }, &ids, wait)? {
            Response::Batch(r) => Ok(r),
            other => Err(unexpected("batch", &other)),
        }
    }

    /// Sends a frame of a stream (see [`FrameStream::send`]). Nothing of the
    /// stream can have been applied when this fails: only its last frame commits.
    pub(crate) fn send_part(&mut self, req: &Request) -> Result<()> {
        if self.broken {
            return Err(ClientError::ConnectionLost {
                sent: false,
                reason: "this connection failed earlier; connect again".into(),
            });
        }
        self.stream.send(req).map_err(|e| {
            if !matches!(e, ExchangeError::Encode(_)) {
                self.broken = true;
            }
            match exchange_error(e) {
                ClientError::ConnectionLost { reason, .. } => {
                    ClientError::ConnectionLost { sent: false, reason }
                }
                other => other,
            }
        })
    }

    pub(crate) fn assign_request_id(&self, opts: &mut WriteOptions) {
        if self.opts.auto_request_ids && !opts.idempotent && opts.request_id.is_none() {
            opts.request_id = Some(crate::ids::new_request_id());
        }
    }

    /// Runs SQL inside this connection's write session: no request id, no resend —
    /// a session cut by a lost connection is rolled back by the broker, never resumed.
    /// (The step form of [`WriteSession::execute`], for code that keeps the
    /// connection across several sessions, such as a language binding's context
    /// manager; see [`Client::begin_session`].)
    ///
    /// # Errors
    /// As [`WriteSession::execute`].
    pub fn execute_in_session(&mut self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        let mut opts = WriteOptions::default();
        let wait = timeout_of(&mut opts, self.timeout);
        let req = Request::Execute { stmt: Statement::new(sql, params.to_vec()), opts };
        match self.call(&req, wait) {
            Ok(Response::Executed(r)) => Ok(r),
            Ok(other) => Err(unexpected("execute", &other)),
            Err(ClientError::ConnectionLost { reason, .. }) => Err(ClientError::Broker(ErrorInfo::new(
                ErrorKind::LeaseExpired,
                format!(
                    "the connection to the broker broke during the write session ({reason}); the broker \
                     rolls such a session back, nothing of it was committed"
                ),
            ))),
            Err(e) => Err(e),
        }
    }

    /// Sends `req`, a request appended after protocol minor 0, after checking that
    /// the broker speaks the minor that appended it (an older broker could not
    /// decode it).
    pub(crate) fn call_newer(&mut self, req: Request) -> Result<Response> {
        if self.hello.minor < req.since_minor() {
            let h = &self.hello;
            return Err(ClientError::Unexpected(format!(
                "the broker (litebrokerd {}, protocol {}.{}) is too old for the {} request, which needs \
                 protocol {}.{}; upgrade it",
                h.broker_version,
                h.protocol,
                h.minor,
                req.kind(),
                h.protocol,
                req.since_minor()
            )));
        }
        let timeout = self.timeout;
        self.call(&req, timeout)
    }

    /// Commits (`commit` true) or rolls back the write session that
    /// [`Client::begin_session`] opened on this connection.
    ///
    /// # Errors
    /// As [`WriteSession::commit`] and [`WriteSession::rollback`].
    pub fn end_session(&mut self, commit: bool) -> Result<()> {
        let req = if commit { Request::Commit } else { Request::Rollback };
        let timeout = self.timeout;
        match self.call(&req, timeout)? {
            Response::SessionEnded { committed } if committed == commit => Ok(()),
            other => Err(unexpected(req.kind(), &other)),
        }
    }

    /// Opens an exclusive write session on this connection, waiting up to `timeout`
    /// for the writer (FIFO behind other sessions and writes).
    ///
    /// # Errors
    /// [`ErrorKind::Timeout`] naming the current holder when the wait runs out;
    /// [`ErrorKind::Locked`] when another process holds the database lock.
    pub fn session(&mut self, timeout: Duration) -> Result<WriteSession<&mut Client>> {
        WriteSession::begin(self, timeout)
    }

    /// As [`Client::session`], taking ownership of the connection.
    ///
    /// # Errors
    /// As [`Client::session`].
    pub fn into_session(self, timeout: Duration) -> Result<WriteSession<Client>> {
        WriteSession::begin(self, timeout)
    }
}

/// An exclusive write session (what `factory.writer()` hands out): the broker runs
/// `BEGIN IMMEDIATE` for it, then every statement sent here, until [`commit`] or
/// [`rollback`]. Dropping it without committing rolls back.
///
/// The session is a lease: the broker rolls it back when it is held longer than its
/// configured maximum or the connection breaks; the next call then fails with
/// [`ErrorKind::LeaseExpired`] and nothing of the session is visible.
///
/// [`commit`]: WriteSession::commit
/// [`rollback`]: WriteSession::rollback
#[derive(Debug)]
pub struct WriteSession<C: BorrowMut<Client>> {
    client: C,
    open: bool,
    start: SessionStart,
}

/// What the broker said when it opened a write session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SessionStart {
    /// How long the session waited for the writer.
    pub waited: Duration,
    /// How long the broker lets the session hold the writer before it rolls it
    /// back (`litebrokerd --lease-secs`); `None` from a broker older than
    /// protocol minor 2, which does not say.
    pub lease: Option<Duration>,
    /// When the answer arrived (the lease runs from about then).
    pub at: Instant,
}

impl SessionStart {
    /// How long the session may still hold the writer, if the broker said.
    pub fn lease_left(&self) -> Option<Duration> {
        self.lease.map(|l| l.saturating_sub(self.at.elapsed()))
    }
}

impl Client {
    /// Opens a write session at the broker on this connection; returns how long it
    /// waited for the writer and the session's lease. [`WriteSession`] is the form that cannot be left
    /// open; this step form, with [`Client::execute_in_session`] and
    /// [`Client::end_session`], keeps the connection across sessions (a session
    /// ended leaves the connection reusable for the next one). Whoever calls it
    /// must end the session (the broker rolls it back when the connection closes
    /// or the lease runs out).
    ///
    /// # Errors
    /// As [`Client::session`].
    pub fn begin_session(&mut self, timeout: Duration) -> Result<SessionStart> {
        let req = Request::BeginSession { timeout_ms: millis(timeout) };
        let at = Instant::now();
        match self.call(&req, timeout)? {
            Response::SessionStarted { waited_ms } => {
                Ok(SessionStart { waited: Duration::from_millis(waited_ms), lease: None, at })
            }
            Response::SessionLeased { waited_ms, lease_ms } => Ok(SessionStart {
                waited: Duration::from_millis(waited_ms),
                lease: Some(Duration::from_millis(lease_ms)),
                at,
            }),
            other => Err(unexpected("begin-session", &other)),
        }
    }
}

impl<C: BorrowMut<Client>> WriteSession<C> {
    fn begin(mut client: C, timeout: Duration) -> Result<Self> {
        let start = client.borrow_mut().begin_session(timeout)?;
        Ok(WriteSession::opened(client, start))
    }

    /// Holds a session that [`Client::begin_session`] opened on `client`.
    pub(crate) fn opened(client: C, start: SessionStart) -> Self {
        WriteSession { client, open: true, start }
    }

    /// How long the session waited for the writer.
    pub fn waited(&self) -> Duration {
        self.start.waited
    }

    /// How long the session may still hold the writer before the broker rolls it
    /// back; `None` from a broker that does not say (older than protocol minor 2).
    pub fn lease_left(&self) -> Option<Duration> {
        self.start.lease_left()
    }

    /// Runs SQL inside the session. Each call is atomic on its own: when it fails,
    /// the session goes on without its effects.
    ///
    /// # Errors
    /// SQL errors; [`ErrorKind::LeaseExpired`] when the broker rolled the session back.
    pub fn execute(&mut self, sql: &str, params: &[Value]) -> Result<ExecResult> {
        let r = self.client.borrow_mut().execute_in_session(sql, params);
        self.note_end(&r);
        r
    }

    /// Commits the session.
    ///
    /// # Errors
    /// [`ErrorKind::LeaseExpired`] when the broker already rolled it back; any
    /// commit failure (then nothing was committed).
    pub fn commit(mut self) -> Result<()> {
        self.end(true)
    }

    /// Rolls the session back.
    ///
    /// # Errors
    /// When the broker cannot be told (the broker rolls back by itself then).
    pub fn rollback(mut self) -> Result<()> {
        self.end(false)
    }

    /// The underlying client (e.g. to ask for `status` while holding the writer).
    pub fn client(&mut self) -> &mut Client {
        self.client.borrow_mut()
    }

    fn end(&mut self, commit: bool) -> Result<()> {
        self.open = false;
        self.client.borrow_mut().end_session(commit)
    }

    fn note_end<T>(&mut self, r: &Result<T>) {
        if let Err(e) = r {
            if matches!(e.kind(), Some(ErrorKind::LeaseExpired | ErrorKind::ShuttingDown))
                || matches!(e, ClientError::ConnectionLost { .. })
            {
                self.open = false;
            }
        }
    }
}

impl<C: BorrowMut<Client>> Drop for WriteSession<C> {
    fn drop(&mut self) {
        if self.open {
            // Best effort: if this fails the broker rolls back when the lease ends or
            // the connection closes.
            let _ = self.end(false);
        }
    }
}

/// Connect failures worth retrying while a broker may be (re)starting.
fn is_transient(e: &ClientError) -> bool {
    matches!(e, ClientError::NotRunning { .. } | ClientError::ConnectionLost { .. })
        || matches!(e.kind(), Some(ErrorKind::ShuttingDown))
}

/// A request id as lower-case hex, for messages.
pub(crate) fn hex(id: &[u8]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn millis(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX).max(1)
}

/// The request's timeout, defaulting to the connection's (and telling the broker,
/// so both sides give up at the same moment).
pub(crate) fn timeout_of(opts: &mut WriteOptions, default: Duration) -> Duration {
    if opts.timeout_ms == 0 {
        opts.timeout_ms = millis(default);
    }
    Duration::from_millis(u64::from(opts.timeout_ms))
}
