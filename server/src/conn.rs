//! One thread per client connection: handshake, frame reading with stall
//! detection, request routing, hand-off to the writer thread, answers.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::Stream;
use litebroker_protocol::frame::{peek_hello_version, read_frame_after};
use litebroker_protocol::{
    write_frame, BrokerStatus, ClientInfo, ErrorInfo, ErrorKind, FrameError, Hello, HelloAck, Migration,
    Request, Response, Statement, WriteOptions, FRAME_HEADER_LEN, PROTOCOL_MINOR, PROTOCOL_VERSION,
};
use tracing::{debug, info, warn};

use crate::admin;
use crate::job::{InFlight, Job, JobKind, JobLine, Reply, ReplyTx, WriteBody};
use crate::reply::{Direct, SharedStream};
use crate::shared::{session_state, ClientEntry, Shared, StopReason};
use crate::sql::text::small_answer;
use crate::texts;
use crate::writer::WriterHandle;

/// What happened to a frame read.
enum Incoming {
    Request(Request),
    /// The peer left cleanly between frames (or the broker is stopping).
    Closed,
    /// A complete frame that is not a valid request: answer, keep the connection.
    Malformed(FrameError),
}

struct Conn {
    /// Windows: pipes have no timeouts; the pipe watchdog enforces the handshake
    /// and I/O timeouts instead. Declared before `reader`: released before the
    /// handle is closed.
    #[cfg(windows)]
    deadline: litebroker_protocol::pipe_deadline::PipeDeadline,
    reader: BufReader<SharedStream>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    shared: Arc<Shared>,
    writer: Arc<WriterHandle>,
    client: Option<Arc<ClientEntry>>,
    peer_pid: Option<u32>,
    accepted: Instant,
    line: JobLine,
    reply_rx: Receiver<Reply>,
    /// Unix: answers small writes on the socket (see `crate::reply`).
    socket: Option<Arc<Direct>>,
    /// A write whose answer is sent on the socket by whoever runs it.
    direct: Option<DirectWrite>,
    /// The socket's receive timeout in force.
    recv_timeout: Duration,
}

/// A write in flight whose answer goes straight to the socket (see `crate::reply`).
#[derive(Debug, Clone, Copy)]
struct DirectWrite {
    seq: u64,
    deadline: Instant,
    timeout: Duration,
}

/// Serves one client until it leaves, misbehaves or the broker stops.
pub fn serve(stream: Stream, shared: Arc<Shared>, writer: Arc<WriterHandle>, peer_pid: Option<u32>) {
    let io_timeout = shared.config.io_timeout;
    // Until the handshake, a silent peer is given the handshake's time only.
    let first_wait = shared.config.handshake_timeout.min(io_timeout);
    // Unix sockets honour these; on Windows the pipe does not support them and the
    // pipe watchdog disconnects a client that misses the same deadlines.
    let _ = stream.set_recv_timeout(Some(first_wait));
    let _ = stream.set_send_timeout(Some(io_timeout));
    #[cfg(windows)]
    let deadline = litebroker_protocol::pipe_deadline::PipeDeadline::new(&stream, true);
    #[cfg(windows)]
    deadline.arm(shared.config.handshake_timeout);
    // Shared with the threads that answer small writes on the socket directly.
    let stream = Arc::new(stream);
    let (tx, reply_rx) = mpsc::sync_channel(1);
    let socket = Direct::new(stream.clone(), shared.config.max_frame);
    let reply_tx = match &socket {
        Some(s) => ReplyTx::with_socket(tx, s.clone()),
        None => ReplyTx::new(tx),
    };
    let mut conn = Conn {
        #[cfg(windows)]
        deadline,
        reader: BufReader::with_capacity(64 * 1024, SharedStream(stream)),
        wbuf: Vec::with_capacity(4096),
        rbuf: Vec::with_capacity(4096),
        shared,
        writer,
        client: None,
        peer_pid,
        accepted: Instant::now(),
        line: JobLine::new(reply_tx),
        reply_rx,
        socket,
        direct: None,
        recv_timeout: first_wait,
    };
    if let Err(e) = conn.run() {
        let who = conn.client.as_ref().map_or_else(|| "unidentified client".into(), |c| c.describe());
        match &e {
            _ if conn.deadline_fired() => {
                warn!("disconnecting {who}: stalled in the middle of a frame or not reading answers")
            }
            FrameError::Io(io) if is_timeout(io) => {
                warn!("disconnecting {who}: stalled in the middle of a frame or not reading answers")
            }
            FrameError::Io(_) | FrameError::Truncated { .. } => debug!("{who} left: {e}"),
            _ => warn!("disconnecting {who}: {e}"),
        }
    }
    conn.close();
    #[cfg(windows)]
    conn.deadline.release();
}

/// Largest read or write buffer a connection keeps between frames.
const IDLE_BUFFER_MAX: usize = 256 * 1024;

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

impl Drop for Conn {
    /// Also when the connection's thread fails: the client is forgotten and its
    /// write session rolled back.
    fn drop(&mut self) {
        self.close();
    }
}

impl Conn {
    /// Time left for the handshake.
    fn handshake_left(&self) -> Duration {
        self.shared.config.handshake_timeout.saturating_sub(self.accepted.elapsed())
    }

    /// Windows: whether the pipe watchdog cut this connection off.
    fn deadline_fired(&self) -> bool {
        #[cfg(windows)]
        {
            self.deadline.fired()
        }
        #[cfg(not(windows))]
        {
            false
        }
    }

    fn run(&mut self) -> Result<(), FrameError> {
        loop {
            // Idle connections may wait for hours: they must not pin the buffers of
            // their last big frame, or many clients could hold max_frame each.
            for buf in [&mut self.rbuf, &mut self.wbuf] {
                if buf.capacity() > IDLE_BUFFER_MAX {
                    *buf = Vec::with_capacity(4096);
                }
            }
            let req = match self.next_frame()? {
                Incoming::Closed => return Ok(()),
                Incoming::Request(r) => r,
                Incoming::Malformed(e) => {
                    if self.client.is_none() {
                        // A handshake from another protocol version may not decode;
                        // its first fields are frozen, so answer "incompatible".
                        let resp = match peek_hello_version(&self.rbuf) {
                            Some(v) if v != PROTOCOL_VERSION => {
                                warn!("refused an unidentified client: {}", texts::version_mismatch(v));
                                Response::Error(texts::incompatible(v))
                            }
                            _ => {
                                let refusal = texts::expected_hello_malformed(&e);
                                warn!("disconnecting unidentified client: {}", refusal.message);
                                Response::Error(refusal)
                            }
                        };
                        self.send(&resp)?;
                        return Ok(());
                    }
                    if let Some(c) = &self.client {
                        debug!("client {} sent a malformed frame: {e}", c.describe());
                    }
                    self.send(&Response::error(ErrorKind::Protocol, e.to_string()))?;
                    continue;
                }
            };
            // Answers go out in request order: a client that sent this before
            // reading the previous answer waits for it to be sent first.
            self.settle_direct(true)?;
            self.shared.counters.requests.fetch_add(1, Ordering::Relaxed);
            let in_flight = InFlight::new(&self.shared);
            let (req, in_flight) = match self.try_direct(req, in_flight) {
                Ok(()) => continue,
                Err(back) => back,
            };
            let (resp, keep_open) = self.handle(req);
            let sent = self.send(&resp);
            drop(in_flight);
            sent?;
            if !keep_open {
                return Ok(());
            }
        }
    }

    /// Waits for the next frame. Idle time between frames is unlimited (app
    /// instances keep connections open for hours); once a frame has started it must
    /// arrive within the I/O timeout.
    fn next_frame(&mut self) -> Result<Incoming, FrameError> {
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return Ok(Incoming::Closed),
                Ok(_) => break,
                Err(e) if is_timeout(&e) => {
                    self.settle_direct(false)?;
                    if self.shared.is_shutting_down() {
                        return Ok(Incoming::Closed);
                    }
                    if self.client.is_none() {
                        let left = self.handshake_left();
                        if left.is_zero() {
                            debug!("closing a connection that sent no handshake in time");
                            return Ok(Incoming::Closed);
                        }
                        self.set_recv_timeout(left);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        let max = self.shared.config.max_frame;
        let io_timeout = self.shared.config.io_timeout;
        #[cfg(windows)]
        self.deadline.arm(io_timeout);
        // The handshake frame must also arrive within the handshake's time.
        let mut deadline = Instant::now() + io_timeout;
        if self.client.is_none() {
            deadline = deadline.min(Instant::now() + self.handshake_left());
        }
        let mut frame = FrameDeadline { reader: &mut self.reader, deadline, shortened: false };
        let read = read_frame_after::<_, Request>(&mut frame, [0; FRAME_HEADER_LEN], 0, max, &mut self.rbuf);
        if frame.shortened {
            // Unknown now: the next `set_recv_timeout` sets it again.
            self.recv_timeout = Duration::ZERO;
            self.set_recv_timeout(io_timeout);
        }
        #[cfg(windows)]
        self.deadline.disarm();
        match read {
            Ok(r) => Ok(Incoming::Request(r)),
            Err(e @ (FrameError::Decode(_) | FrameError::TrailingBytes { .. })) => Ok(Incoming::Malformed(e)),
            Err(FrameError::TooLarge { len, max }) => {
                // The stream cannot be resynchronised without reading the whole
                // announced length: answer and close.
                let _ = self.send(&Response::Error(texts::frame_too_large(len, max)));
                Err(FrameError::TooLarge { len, max })
            }
            Err(e) => Err(e),
        }
    }

    fn send(&mut self, resp: &Response) -> Result<(), FrameError> {
        let max = self.shared.config.max_frame;
        #[cfg(windows)]
        self.deadline.arm(self.shared.config.io_timeout);
        let sent = self.write_answer(resp, max);
        #[cfg(windows)]
        self.deadline.disarm();
        sent
    }

    fn write_answer(&mut self, resp: &Response, max: u32) -> Result<(), FrameError> {
        let stream: &Stream = &self.reader.get_ref().0;
        match write_frame(&mut &*stream, resp, &mut self.wbuf, max) {
            Err(FrameError::TooLarge { len, max }) => write_frame(
                &mut &*stream,
                &Response::Error(texts::answer_too_large(len, max)),
                &mut self.wbuf,
                max,
            ),
            other => other,
        }
    }

    /// Runs a one-shot write whose answer is small (see [`small_answer`]) without
    /// waiting for it: the thread that commits it sends the answer on the socket,
    /// and this thread goes back to reading. Gives other requests back.
    fn try_direct(&mut self, req: Request, in_flight: InFlight) -> Result<(), (Request, InFlight)> {
        let Some(socket) = self.socket.clone() else { return Err((req, in_flight)) };
        let Some(client) = self.client.clone() else { return Err((req, in_flight)) };
        let Request::Execute { stmt, opts } = req else { return Err((req, in_flight)) };
        let schema = self.shared.schema_version.load(Ordering::Relaxed);
        // Anything that is answered with an error before it reaches the writer, or
        // that runs in a session, takes the normal path.
        if !small_answer(&stmt.sql)
            || self.check_statement(&stmt).is_err()
            || self.shared.is_shutting_down()
            || client.session.load(Ordering::SeqCst) != session_state::NONE
            || client.expected_schema.is_some_and(|e| e > schema)
        {
            return Err((Request::Execute { stmt, opts }, in_flight));
        }
        client.requests.fetch_add(1, Ordering::Relaxed);
        let timeout = self.timeout_of(opts.timeout_ms);
        let deadline = Instant::now() + timeout;
        let job = self.line.next(JobKind::Write(WriteBody::Execute(stmt)), opts, &client, deadline);
        let seq = job.seq;
        socket.arm(seq, in_flight);
        self.direct = Some(DirectWrite { seq, deadline, timeout });
        if self.writer.send_and_serve(job).is_err() {
            let in_flight = socket.disarm();
            self.direct = None;
            let sent = self.send(&Response::Error(texts::shutting_down()));
            drop(in_flight);
            // A failed send shows on the next read.
            drop(sent);
        } else if self.direct.is_some() {
            // Wake up in time to cancel the write if it is still queued then.
            self.set_recv_timeout(self.shared.config.io_timeout.min(timeout));
        }
        Ok(())
    }

    fn set_recv_timeout(&mut self, t: Duration) {
        let t = t.max(Duration::from_millis(1));
        if t != self.recv_timeout {
            let _ = self.reader.get_ref().0.set_recv_timeout(Some(t));
            self.recv_timeout = t;
        }
    }

    /// Completes the direct write in flight, if any: takes note that its answer
    /// was sent, sends what remains of it, or, once its deadline passed while it
    /// still waits in the queue, cancels it and answers "timed out". With `block`,
    /// waits for the answer (the client sent its next request without reading).
    fn settle_direct(&mut self, block: bool) -> Result<(), FrameError> {
        while let Some(d) = self.direct {
            let got = if block {
                let left = d.deadline.saturating_duration_since(Instant::now());
                match self.reply_rx.recv_timeout(left.clamp(Duration::from_millis(1), Duration::from_secs(1)))
                {
                    Ok(r) => Some(r),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => unreachable!("this connection holds a sender"),
                }
            } else {
                match self.reply_rx.try_recv() {
                    Ok(r) => Some(r),
                    Err(TryRecvError::Empty) => None,
                    Err(TryRecvError::Disconnected) => unreachable!("this connection holds a sender"),
                }
            };
            match got {
                Some(reply) => {
                    self.direct = None;
                    // Only an answer sent in full was counted out by its sender.
                    let sent = match reply {
                        Reply::Sent => Ok(()),
                        Reply::Rest(bytes, in_flight) => {
                            let stream: &Stream = &self.reader.get_ref().0;
                            let r = (&mut &*stream).write_all(&bytes).map_err(FrameError::from);
                            drop(in_flight);
                            r
                        }
                        Reply::Response(resp) => {
                            let in_flight = self.socket.as_ref().and_then(|s| s.disarm());
                            let r = self.send(&resp);
                            drop(in_flight);
                            r
                        }
                    };
                    sent?;
                }
                None if (Instant::now() >= d.deadline
                    || !self.shared.writer_alive.load(Ordering::SeqCst))
                    && self.line.cancel(d.seq) =>
                {
                    let in_flight = self.socket.as_ref().and_then(|s| s.disarm());
                    self.direct = None;
                    let resp = if Instant::now() >= d.deadline {
                        self.timed_out(d.timeout)
                    } else {
                        Response::Error(texts::shutting_down())
                    };
                    let sent = self.send(&resp);
                    drop(in_flight);
                    sent?;
                }
                None if block => {}
                None => {
                    let left = d.deadline.saturating_duration_since(Instant::now());
                    self.set_recv_timeout(self.shared.config.io_timeout.min(left));
                    return Ok(());
                }
            }
        }
        self.set_recv_timeout(self.shared.config.io_timeout);
        Ok(())
    }

    fn timed_out(&self, timeout: Duration) -> Response {
        Response::Error(texts::timed_out(timeout, &self.shared.describe_contention()))
    }

    /// Answers one request; the flag says whether to keep the connection open.
    fn handle(&mut self, req: Request) -> (Response, bool) {
        let Some(client) = self.client.clone() else {
            return match req {
                Request::Hello(h) => self.hello(h),
                other => {
                    let refusal = texts::expected_hello(other.kind());
                    warn!("disconnecting unidentified client: {}", refusal.message);
                    (Response::Error(refusal), false)
                }
            };
        };
        client.requests.fetch_add(1, Ordering::Relaxed);
        let resp = match req {
            Request::Hello(_) => Response::Error(texts::handshake_again()),
            Request::Ping => Response::Pong,
            Request::Health => Response::Health(self.shared.health()),
            Request::Status => Response::Status(self.status()),
            Request::Connections => Response::Connections(self.connections()),
            Request::Shutdown => {
                info!("shutdown requested by {}", client.describe());
                self.shared.request_stop(StopReason::Request { client: client.describe() });
                Response::ShuttingDown
            }
            Request::Execute { stmt, opts } => match self.check_statement(&stmt) {
                Err(e) => Response::Error(e),
                Ok(()) => self.write(&client, WriteBody::Execute(stmt), opts),
            },
            Request::Batch { statements, opts } => match self.check_batch(&statements) {
                Err(e) => Response::Error(e),
                Ok(()) => self.write(&client, WriteBody::Batch(statements), opts),
            },
            Request::BeginSession { timeout_ms } => self.begin_session(&client, timeout_ms),
            Request::Stats => admin::stats(&self.shared, self.status())
                .map_or_else(Response::Error, |s| Response::Stats(Box::new(s))),
            Request::Verify => admin::verify(&self.shared).map_or_else(Response::Error, Response::Verify),
            Request::Checkpoint { .. } | Request::Restore { .. }
                if self.session_state(&client) == Ok(true) =>
            {
                Response::Error(texts::needs_the_writer(req.kind()))
            }
            Request::Checkpoint { mode } => {
                let timeout = self.shared.config.default_timeout;
                self.submit(&client, JobKind::Checkpoint(mode), WriteOptions::default(), timeout)
            }
            Request::Backup { label, keep } => {
                let shared = self.shared.clone();
                let mut progress = |done, total| self.send(&Response::Progress { done, total }).is_ok();
                admin::backup(&shared, &label, keep, &mut progress)
                    .map_or_else(Response::Error, Response::Backup)
            }
            Request::Migrate { migrations, timeout_ms } => match check_migrations(&migrations) {
                Err(e) => Response::Error(e),
                Ok(()) => {
                    let timeout = self.timeout_of(timeout_ms);
                    self.submit(&client, JobKind::Migrate(migrations), WriteOptions::default(), timeout)
                }
            },
            Request::Restore { path, timeout_ms } => match admin::check_restore(&self.shared, &path) {
                Err(e) => Response::Error(e),
                Ok(p) => {
                    info!("restore of {} requested by {}", p.display(), client.describe());
                    let timeout = self.timeout_of(timeout_ms);
                    self.submit(&client, JobKind::Restore(p), WriteOptions::default(), timeout)
                }
            },
            Request::Commit | Request::Rollback => {
                let commit = matches!(req, Request::Commit);
                match self.session_state(&client) {
                    Err(e) => Response::Error(e),
                    Ok(false) => Response::Error(texts::no_session(commit)),
                    Ok(true) => {
                        let timeout = self.shared.config.default_timeout;
                        self.submit(&client, JobKind::EndSession { commit }, WriteOptions::default(), timeout)
                    }
                }
            }
        };
        (resp, true)
    }

    fn hello(&mut self, h: Hello) -> (Response, bool) {
        let name: String = h.client_name.chars().filter(|c| !c.is_control()).take(128).collect();
        let pid = self.peer_pid.unwrap_or(h.pid);
        if h.protocol != PROTOCOL_VERSION {
            warn!("refused client '{name}' (pid {pid}): {}", texts::version_mismatch(h.protocol));
            return (Response::Error(texts::incompatible(h.protocol)), false);
        }
        let client = self.shared.register(name, pid, h.expected_schema, h.minor);
        let schema = self.shared.schema_version.load(Ordering::Relaxed);
        if let Some(expected) = h.expected_schema.filter(|e| *e > schema) {
            warn!(
                "client {} was built for schema version {expected}, the database is at {schema}: \
                 its writes are refused until the migrations are applied",
                client.describe()
            );
        }
        debug!("client {} connected (protocol {}.{})", client.describe(), h.protocol, h.minor);
        let ack = HelloAck {
            protocol: PROTOCOL_VERSION,
            minor: PROTOCOL_MINOR,
            broker_version: env!("CARGO_PKG_VERSION").to_owned(),
            db_path: self.shared.db_path.clone(),
            socket: self.shared.socket.clone(),
            pid: std::process::id(),
            client_id: client.id,
            schema_version: self.shared.schema_version.load(Ordering::Relaxed),
        };
        self.client = Some(client);
        // From now on only frames started and left unfinished are timed out.
        self.set_recv_timeout(self.shared.config.io_timeout);
        (Response::Hello(ack), true)
    }

    fn status(&self) -> BrokerStatus {
        let s = &self.shared;
        let c = &s.counters;
        BrokerStatus {
            pid: std::process::id(),
            socket: s.socket.clone(),
            db_path: s.db_path.clone(),
            protocol: PROTOCOL_VERSION,
            minor: PROTOCOL_MINOR,
            broker_version: env!("CARGO_PKG_VERSION").to_owned(),
            uptime_ms: s.started.elapsed().as_millis() as u64,
            clients: s.client_count() as u32,
            requests: s.counters.requests.load(Ordering::Relaxed),
            commits: s.counters.commits.load(Ordering::Relaxed),
            queue_depth: s.counters.queued.load(Ordering::Relaxed) as u32,
            synchronous: s.config.synchronous.as_str().to_owned(),
            writer_holder: s
                .holder()
                .map(|h| format!("{} for {:.1} s", h.client.describe(), h.since.elapsed().as_secs_f64())),
            request_ids: s.request_ids.load(Ordering::Relaxed),
            group_commits: c.group_commits.load(Ordering::Relaxed),
            group_requests: c.committed_requests.load(Ordering::Relaxed),
            max_group: c.max_group.load(Ordering::Relaxed),
            queue_waits: c.queue_waits.load(Ordering::Relaxed),
            queue_wait_us: c.queue_wait_us.load(Ordering::Relaxed),
            max_queue_wait_us: c.max_queue_wait_us.load(Ordering::Relaxed),
            commit_us: c.commit_us.load(Ordering::Relaxed),
            max_commit_us: c.max_commit_us.load(Ordering::Relaxed),
        }
    }

    fn connections(&self) -> Vec<ClientInfo> {
        self.shared
            .clients()
            .iter()
            .map(|c| ClientInfo {
                id: c.id,
                name: c.name.clone(),
                pid: c.pid,
                connected_unix_ms: c.connected_unix_ms,
                requests: c.requests.load(Ordering::Relaxed),
                holds_writer: c.session.load(Ordering::SeqCst) == session_state::ACTIVE,
            })
            .collect()
    }

    fn check_statement(&self, s: &Statement) -> Result<(), ErrorInfo> {
        let max = self.shared.config.max_params;
        if s.params.len() > max {
            return Err(texts::too_many_params(s.params.len(), max));
        }
        Ok(())
    }

    fn check_batch(&self, stmts: &[Statement]) -> Result<(), ErrorInfo> {
        let max = self.shared.config.max_batch_statements;
        if stmts.len() > max {
            return Err(texts::too_many_batch_statements(stmts.len(), max));
        }
        if stmts.is_empty() {
            return Err(texts::empty_batch());
        }
        stmts.iter().try_for_each(|s| self.check_statement(s))
    }

    /// Whether this client holds a session; an expired one is reported once.
    fn session_state(&self, client: &ClientEntry) -> Result<bool, ErrorInfo> {
        match client.session.load(Ordering::SeqCst) {
            session_state::ACTIVE => Ok(true),
            session_state::EXPIRED => {
                client.session.store(session_state::NONE, Ordering::SeqCst);
                Err(texts::lease_expired(self.shared.config.lease))
            }
            _ => Ok(false),
        }
    }

    fn write(&mut self, client: &Arc<ClientEntry>, body: WriteBody, opts: WriteOptions) -> Response {
        let schema = self.shared.schema_version.load(Ordering::Relaxed);
        if let Some(expected) = client.expected_schema.filter(|e| *e > schema) {
            return Response::Error(texts::schema_mismatch(expected, schema));
        }
        let timeout = self.timeout_of(opts.timeout_ms);
        match self.session_state(client) {
            Err(e) => Response::Error(e),
            Ok(true) => self.submit(client, JobKind::SessionWrite(body), opts, timeout),
            Ok(false) => self.submit(client, JobKind::Write(body), opts, timeout),
        }
    }

    fn begin_session(&mut self, client: &Arc<ClientEntry>, timeout_ms: u32) -> Response {
        match self.session_state(client) {
            Ok(true) => Response::Error(texts::session_already_held()),
            // An expired session was reported to nobody yet; a new one supersedes it.
            Ok(false) | Err(_) => {
                let timeout = self.timeout_of(timeout_ms);
                self.submit(client, JobKind::BeginSession, WriteOptions::default(), timeout)
            }
        }
    }

    fn timeout_of(&self, ms: u32) -> Duration {
        if ms == 0 {
            self.shared.config.default_timeout
        } else {
            Duration::from_millis(u64::from(ms))
        }
    }

    /// Hands a job to the writer and waits for its answer. When the deadline passes
    /// while the job still waits in the queue, it is cancelled (the writer will skip
    /// it) and the caller learns who holds the writer; once the writer has taken it,
    /// its answer is awaited, since the writer bounds its own work by the deadline.
    fn submit(
        &mut self,
        client: &Arc<ClientEntry>,
        kind: JobKind,
        opts: WriteOptions,
        timeout: Duration,
    ) -> Response {
        if self.shared.is_shutting_down() {
            return Response::Error(texts::shutting_down());
        }
        let deadline = Instant::now() + timeout;
        let job = self.line.next(kind, opts, client, deadline);
        let seq = job.seq;
        let queued = if matches!(job.kind, JobKind::Write(_)) {
            self.writer.send_and_serve(job)
        } else {
            self.writer.send(job)
        };
        if queued.is_err() {
            return Response::Error(texts::shutting_down());
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.reply_rx.recv_timeout(left.clamp(Duration::from_millis(1), Duration::from_secs(1))) {
                Ok(Reply::Response(resp)) => return resp,
                Ok(other) => return Response::Error(texts::unexpected_reply(&other)),
                Err(RecvTimeoutError::Timeout) => {
                    if Instant::now() >= deadline && self.line.cancel(seq) {
                        return self.timed_out(timeout);
                    }
                    if !self.shared.writer_alive.load(Ordering::SeqCst) {
                        return Response::Error(texts::shutting_down());
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return Response::Error(texts::writer_gone()),
            }
        }
    }

    fn close(&mut self) {
        let Some(client) = self.client.take() else { return };
        if client.session.load(Ordering::SeqCst) == session_state::ACTIVE {
            // The writer rolls the session back; nobody waits for an answer.
            let job = Job::notice(JobKind::Disconnected, Some(client.clone()));
            // Refused only when the writer is gone, and the session with it.
            let _ = self.writer.send(job);
        }
        debug!("client {} disconnected", client.describe());
        self.shared.unregister(client.id);
    }
}

/// Reads the rest of a started frame against one deadline for the whole frame.
/// The socket's receive timeout alone restarts at every read, so a peer sending a
/// byte now and then would hold its connection, and its thread, forever.
struct FrameDeadline<'a> {
    reader: &'a mut BufReader<SharedStream>,
    deadline: Instant,
    /// Whether the socket's receive timeout was changed and must be restored.
    shortened: bool,
}

impl Read for FrameDeadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Bytes already buffered cost no wait (and no system call).
        if self.reader.buffer().is_empty() {
            let left = self.deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "frame not completed within the io timeout",
                ));
            }
            // Unsupported on Windows pipes: there, the per-request deadlines bound the work.
            let _ = self.reader.get_ref().0.set_recv_timeout(Some(left.max(Duration::from_millis(1))));
            self.shortened = true;
        }
        self.reader.read(buf)
    }
}

/// Versions must be positive and strictly increasing, so "apply those above the
/// database's version" has one meaning.
fn check_migrations(migrations: &[Migration]) -> Result<(), ErrorInfo> {
    let mut last = 0;
    for m in migrations {
        if m.version <= last {
            return Err(texts::migrations_out_of_order(m.version, &m.name, last));
        }
        last = m.version;
    }
    Ok(())
}
