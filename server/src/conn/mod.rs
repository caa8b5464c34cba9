//! One thread per client connection: it reads frames ([`io`]), identifies the
//! client ([`handshake`]), routes each request ([`route`]) to an answer, to the
//! writer as a job awaited within its deadline ([`deadline`]), or to the
//! answer-on-the-socket shortcut ([`direct`]), and writes the answers. One-shot
//! writes a client sends before reading the answers are kept in flight together,
//! answered in order ([`pipeline`]). A streamed executemany reads the frames of
//! its stream itself ([`many`]).
//!
//! A failure serving one client (a panic) disconnects that client only; its
//! write session, if it held one, is rolled back by the writer.

mod deadline;
mod direct;
mod handshake;
mod io;
mod many;
mod pipeline;
mod route;
mod watch;

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

use interprocess::local_socket::Stream;
use litebroker_protocol::{FrameError, Request, Response, PROTOCOL_MINOR};
use tracing::{debug, warn};

use self::deadline::Jobs;
use self::direct::Direct;
use self::io::{is_timeout, FrameIo, Incoming, Wait};
use self::pipeline::Pipeline;
use self::route::Route;
use crate::admin;
use crate::job::{InFlight, Job, JobKind, JobLine, StreamOf, PIPELINE_DEPTH};
use crate::metrics::RequestKind;
use crate::shared::{session_state, ClientEntry, Shared};
use crate::texts;
use crate::writer::WriterHandle;

/// Serves one client until it leaves, misbehaves or the broker stops.
pub fn serve(stream: Stream, shared: Arc<Shared>, writer: Arc<WriterHandle>, peer_pid: Option<u32>) {
    let io = FrameIo::new(stream, &shared.config, &shared.socket);
    // Room for the reply of every job the connection may have in flight.
    let (tx, replies) = mpsc::sync_channel(PIPELINE_DEPTH + 1);
    let (direct, reply) = Direct::new(io.stream(), shared.config.max_frame, tx, shared.clone());
    let mut conn = Conn {
        jobs: Jobs::new(JobLine::new(reply), replies, writer, shared.clone()),
        io,
        direct,
        pipeline: Pipeline::default(),
        shared,
        client: None,
        peer_pid,
        accepted: Instant::now(),
    };
    if let Err(e) = conn.run() {
        let who = conn.client.as_ref().map_or_else(|| "unidentified client".into(), |c| c.describe());
        let stalled = conn.io.deadline_fired() || matches!(&e, FrameError::Io(io) if is_timeout(io));
        match &e {
            _ if stalled => {
                conn.shared.metrics.stalled_clients.fetch_add(1, Ordering::Relaxed);
                warn!("disconnecting {who}: stalled in the middle of a frame or not reading answers")
            }
            FrameError::Io(_) | FrameError::Truncated { .. } => debug!("{who} left: {e}"),
            _ => warn!("disconnecting {who}: {e}"),
        }
    }
    conn.close();
    #[cfg(windows)]
    conn.io.release();
}

struct Conn {
    io: FrameIo,
    jobs: Jobs,
    direct: Direct,
    pipeline: Pipeline,
    shared: Arc<Shared>,
    client: Option<Arc<ClientEntry>>,
    peer_pid: Option<u32>,
    accepted: Instant,
}

impl Drop for Conn {
    /// Also when the connection's thread fails: the client is forgotten and its
    /// write session rolled back.
    fn drop(&mut self) {
        self.close();
    }
}

impl Conn {
    fn run(&mut self) -> Result<(), FrameError> {
        loop {
            self.io.shrink_idle_buffers();
            // Pipelined writes: what is answered goes out; with no room, or nothing
            // more sent, the oldest answer is awaited.
            self.pipeline.progress(0, &mut self.io, &self.jobs, &self.direct)?;
            let Some(incoming) = self.next_frame()? else {
                // Answers still due go to a client that stopped sending (or at
                // shutdown, once the writer ran what was queued).
                return self.drain();
            };
            // The armed write's note, if its answer went out already.
            self.direct.settle(false, &mut self.io, &self.jobs)?;
            let req = match incoming {
                Incoming::Request(r) => r,
                Incoming::Malformed(e) => {
                    self.drain()?;
                    let Some(client) = &self.client else {
                        // A malformed handshake: answered, and the connection closed.
                        let refusal = handshake::refuse_malformed(self.io.payload(), &e);
                        self.shared.metrics.answered(RequestKind::UNKNOWN, &refusal);
                        self.io.send(&refusal)?;
                        return Ok(());
                    };
                    debug!("client {} sent a malformed frame: {e}", client.describe());
                    // From a client of a newer minor: most likely a request this
                    // broker does not know, which the answer says.
                    let answer = Response::Error(texts::malformed(&e, client.minor, PROTOCOL_MINOR));
                    self.shared.metrics.answered(RequestKind::UNKNOWN, &answer);
                    self.io.send(&answer)?;
                    continue;
                }
            };
            self.shared.counters.requests.fetch_add(1, Ordering::Relaxed);
            let kind = RequestKind::of(&req);
            let in_flight = InFlight::new(&self.shared);
            let (req, in_flight) = match self.client.clone() {
                Some(client) if pipeline::pipelinable(&req, &client) => {
                    // Nothing in flight: the shortcut, as for a client that sends one
                    // request at a time (a socket poll here would cost every such
                    // request a system call; a pipelining client's next write finds
                    // this one in flight and joins the pipeline).
                    if self.pipeline.is_empty() && !self.direct.is_pending() && !self.io.frame_buffered() {
                        match self.direct.try_start(req, in_flight, &client, &mut self.io, &mut self.jobs) {
                            Ok(()) => continue,
                            Err(back) => back,
                        }
                    } else {
                        self.pipeline.adopt_direct(&mut self.direct, &self.jobs);
                        self.pipelined(req, kind, in_flight, &client)?;
                        continue;
                    }
                }
                _ => (req, in_flight),
            };
            // Answers go out in request order: a client that sent this before
            // reading the previous answers waits for them to be sent first (and only
            // this thread writes the socket from here on).
            self.drain()?;
            if let (Request::Watch { tables, since }, Some(client)) = (&req, self.client.clone()) {
                if client.minor < req.since_minor() {
                    // Its answers would be variants this client cannot decode.
                    let needed = req.since_minor();
                    self.io.send(&Response::Error(texts::needs_minor(req.kind(), needed, client.minor)))?;
                    continue;
                }
                if route::session_state(&client, &self.shared.config) == Ok(true) {
                    self.io.send(&Response::Error(texts::watch_in_session()))?;
                    continue;
                }
                client.requests.fetch_add(1, Ordering::Relaxed);
                drop(in_flight);
                // From here on the connection is a stream of events.
                return watch::serve(&mut self.io, &self.shared, &client, tables.clone(), *since);
            }
            let since = req.since_minor();
            let (resp, keep_open) = match (req, self.client.clone()) {
                // From an older client, routing answers that it needs a newer minor.
                (req @ (Request::ManyBegin { .. } | Request::BatchBegin { .. }), Some(client))
                    if client.minor >= since =>
                {
                    client.requests.fetch_add(1, Ordering::Relaxed);
                    let (of, opts) = match req {
                        Request::ManyBegin { sql, opts } => (StreamOf::Rows { sql }, opts),
                        Request::BatchBegin { opts } => (StreamOf::Statements, opts),
                        _ => unreachable!("matched above"),
                    };
                    match many::serve(self, &client, of, opts)? {
                        Some(resp) => (resp, true),
                        None => return Ok(()),
                    }
                }
                (req, _) => self.handle(req),
            };
            self.shared.metrics.answered(kind, &resp);
            let sent = self.io.send(&resp);
            drop(in_flight);
            sent?;
            if !keep_open {
                return Ok(());
            }
        }
    }

    /// Sends every answer still due: the pipelined writes', the armed write's.
    fn drain(&mut self) -> Result<(), FrameError> {
        self.pipeline.drain(&mut self.io, &self.jobs, &self.direct)?;
        self.direct.settle(true, &mut self.io, &self.jobs)
    }

    /// Queues a one-shot write of a pipelining client (see [`pipeline`]), or
    /// keeps its refusal for its turn.
    fn pipelined(
        &mut self,
        req: litebroker_protocol::Request,
        kind: RequestKind,
        in_flight: InFlight,
        client: &Arc<ClientEntry>,
    ) -> Result<(), FrameError> {
        client.requests.fetch_add(1, Ordering::Relaxed);
        match route::route(req, client, &self.shared) {
            Route::Submit { kind: job @ JobKind::Write(_), opts, timeout } => {
                let weight = match &job {
                    JobKind::Write(body) => body.weight(),
                    _ => 0,
                };
                self.pipeline.progress(weight, &mut self.io, &self.jobs, &self.direct)?;
                match self.jobs.queue_pipelined(client, job, opts, timeout) {
                    Ok(queued) => self.pipeline.push_job(queued, timeout, kind, weight, in_flight),
                    Err(refused) => self.pipeline.push_answer(Response::Error(refused), kind, in_flight),
                }
            }
            Route::Answer(resp) => self.pipeline.push_answer(resp, kind, in_flight),
            // `pipeline::pipelinable` admits only writes outside a session.
            _ => self.pipeline.push_answer(Response::Error(texts::not_pipelinable()), kind, in_flight),
        }
        Ok(())
    }

    /// Waits for the next frame (None: the peer left, or the broker stops).
    /// Between frames the armed direct write is settled when its answer comes,
    /// and a connection without a handshake is closed when its time is up. A
    /// frame longer than the maximum is answered, then the connection closed.
    fn next_frame(&mut self) -> Result<Option<Incoming>, FrameError> {
        loop {
            match self.io.wait()? {
                Wait::Closed => return Ok(None),
                Wait::Frame => break,
                Wait::Idle => {
                    self.direct.settle(false, &mut self.io, &self.jobs)?;
                    if self.shared.is_shutting_down() {
                        return Ok(None);
                    }
                    if self.client.is_none() {
                        let left = handshake::time_left(self.accepted, &self.shared.config);
                        if left.is_zero() {
                            debug!("closing a connection that sent no handshake in time");
                            return Ok(None);
                        }
                        self.io.set_recv_timeout(left);
                    }
                }
            }
        }
        let handshake_left =
            self.client.is_none().then(|| handshake::time_left(self.accepted, &self.shared.config));
        match self.io.read_request(handshake_left) {
            Err(FrameError::TooLarge { len, max }) => {
                // The stream cannot be resynchronised without reading the whole
                // announced length: answer (after the answers due) and close.
                self.drain()?;
                let refusal = Response::Error(texts::frame_too_large(len, max));
                self.shared.metrics.answered(RequestKind::UNKNOWN, &refusal);
                let _ = self.io.send(&refusal);
                Err(FrameError::TooLarge { len, max })
            }
            read => read.map(Some),
        }
    }

    /// Answers one request; the flag says whether to keep the connection open.
    fn handle(&mut self, req: Request) -> (Response, bool) {
        let Some(client) = self.client.clone() else {
            return match req {
                Request::Hello(h) => match handshake::greet(h, self.peer_pid, &self.shared) {
                    Ok((client, ack)) => {
                        self.client = Some(client);
                        // From now on only frames started and left unfinished are timed out.
                        self.io.set_recv_timeout(self.shared.config.io_timeout);
                        (ack, true)
                    }
                    Err(refusal) => (Response::Error(refusal), false),
                },
                other => (handshake::refuse_other(&other), false),
            };
        };
        client.requests.fetch_add(1, Ordering::Relaxed);
        let resp = match route::route(req, &client, &self.shared) {
            Route::Answer(resp) => resp,
            Route::Submit { kind, opts, timeout } => self.jobs.submit(&client, kind, opts, timeout),
            Route::Backup { label, keep } => {
                let shared = self.shared.clone();
                let mut progress = |done, total| self.io.send(&Response::Progress { done, total }).is_ok();
                admin::backup(&shared, &label, keep, &mut progress)
                    .map_or_else(Response::Error, Response::Backup)
            }
        };
        (resp, true)
    }

    fn close(&mut self) {
        let Some(client) = self.client.take() else { return };
        if client.session.load(Ordering::SeqCst) == session_state::ACTIVE {
            // The writer rolls the session back; nobody waits for an answer.
            // Refused only when the writer is gone, and the session with it.
            let _ = self.jobs.send(Job::notice(JobKind::Disconnected, Some(client.clone())));
        }
        debug!("client {} disconnected", client.describe());
        self.shared.unregister(client.id);
    }
}
