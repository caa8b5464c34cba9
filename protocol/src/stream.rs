//! The connecting side of a conversation with a broker: one buffered frame stream
//! over a local socket (`interprocess`) that sends a [`Request`] and reads its
//! [`Response`] within a wait. The client library talks through it, and the
//! broker's start-up probe uses it to ask whoever listens on its socket for a
//! handshake.
//!
//! Waits are enforced by the socket's receive timeout on Unix; Windows pipes have
//! no timeouts, so there a `PipeDeadline` (the `pipe_deadline` module) cancels
//! the I/O when the wait runs out. A failed exchange says whether the
//! request can have reached the peer, which decides what a caller may resend.

use std::io::{self, BufReader, Read};
use std::time::Duration;

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::Stream;

use crate::frame::{read_frame_after, write_frame, FrameError, FRAME_HEADER_LEN, HARD_MAX_FRAME};
use crate::rendezvous::socket_name;
use crate::{ErrorInfo, Hello, Request, Response, PROTOCOL_MINOR, PROTOCOL_VERSION};

/// Why an exchange on a [`FrameStream`] failed. Every variant but
/// [`ExchangeError::Encode`] leaves the stream in an unknown state: do not reuse it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExchangeError {
    /// The request could not be encoded (e.g. larger than the largest frame);
    /// nothing was sent and the stream is still usable.
    #[error("{0}")]
    Encode(FrameError),
    /// Writing the request failed: the peer did not get it whole.
    #[error("{0}")]
    Send(io::Error),
    /// The peer answered with an error and closed before the request was written
    /// whole (a refusal: another user, too many clients, an oversized frame).
    #[error("{0}")]
    Refused(ErrorInfo),
    /// Reading the answer failed after the request was sent (an I/O error, or no
    /// answer within the wait on Unix).
    #[error("{0}")]
    Receive(io::Error),
    /// The peer closed the connection before answering.
    #[error("the peer closed the connection before answering")]
    Closed,
    /// The peer closed part-way through the answer.
    #[error("{0}")]
    Truncated(FrameError),
    /// The answer is not a valid message.
    #[error("{0}")]
    Malformed(FrameError),
    /// Windows: the wait ran out and the pipe's I/O was cancelled; `sent` tells
    /// whether the request had been written by then.
    #[error("no answer in time")]
    TimedOut {
        /// Whether the request had been written whole.
        sent: bool,
    },
}

impl ExchangeError {
    /// True when the answer did not come within the wait.
    pub fn timed_out(&self) -> bool {
        match self {
            ExchangeError::TimedOut { .. } => true,
            ExchangeError::Send(e) | ExchangeError::Receive(e) => {
                matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
            }
            _ => false,
        }
    }
}

/// A connected local socket (or pipe) that carries requests one at a time, each
/// answered before the next is sent.
#[derive(Debug)]
pub struct FrameStream {
    /// Windows: the pipe has no timeouts; this bounds each round trip instead.
    /// Declared before `reader` so it is released before the handle is closed.
    #[cfg(windows)]
    deadline: crate::pipe_deadline::PipeDeadline,
    reader: BufReader<Stream>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// The stream's receive timeout in force.
    recv_timeout: Option<Duration>,
}

impl FrameStream {
    /// Connects to `socket` (a socket path on Unix, a pipe name on Windows).
    ///
    /// # Errors
    /// When the name is invalid or nothing accepts the connection.
    pub fn connect(socket: &str) -> io::Result<FrameStream> {
        let stream = Stream::connect(socket_name(socket)?)?;
        Ok(FrameStream {
            #[cfg(windows)]
            deadline: crate::pipe_deadline::PipeDeadline::new(&stream, None),
            reader: BufReader::with_capacity(64 * 1024, stream),
            wbuf: Vec::with_capacity(4096),
            rbuf: Vec::with_capacity(4096),
            recv_timeout: None,
        })
    }

    /// The underlying stream, e.g. to ask who listens on it before anything is sent.
    pub fn get_ref(&self) -> &Stream {
        self.reader.get_ref()
    }

    /// Unix: the effective uid of the process at the other end, `None` when the
    /// system does not say.
    ///
    /// # Errors
    /// When the system cannot report the peer's credentials.
    #[cfg(unix)]
    pub fn peer_uid(&self) -> io::Result<Option<u32>> {
        use interprocess::local_socket::traits::StreamCommon;
        Ok(self.get_ref().peer_creds()?.euid())
    }

    /// Windows: the SID of whoever created the pipe (see [`crate::host::pipe_owner_sid`]).
    ///
    /// # Errors
    /// When the system does not report the owner.
    #[cfg(windows)]
    pub fn pipe_owner_sid(&self) -> io::Result<String> {
        crate::host::pipe_owner_sid(self.get_ref())
    }

    /// Sends this process's half of the handshake (this build's protocol versions,
    /// `client_name`, this process's pid, the schema version it expects) and
    /// returns the answer: [`Response::Hello`] from a broker that accepts it.
    ///
    /// # Errors
    /// As [`FrameStream::round_trip`].
    pub fn handshake(
        &mut self,
        client_name: &str,
        expected_schema: Option<u32>,
        wait: Duration,
    ) -> Result<Response, ExchangeError> {
        let hello = Request::Hello(Hello {
            protocol: PROTOCOL_VERSION,
            minor: PROTOCOL_MINOR,
            client_name: client_name.to_owned(),
            pid: std::process::id(),
            expected_schema,
        });
        self.round_trip(&hello, wait)
    }

    /// Sends `req` and reads its answer, waiting at most `wait` for it. An error
    /// answer is returned as a [`Response::Error`], like any other answer.
    ///
    /// # Errors
    /// See [`ExchangeError`].
    pub fn round_trip(&mut self, req: &Request, wait: Duration) -> Result<Response, ExchangeError> {
        // The Windows pipe does not support timeouts: the pipe watchdog cancels
        // the write or read instead when `wait` runs out.
        let wait = wait.max(Duration::from_millis(1));
        // Set only when it changes: one system call less per request.
        if self.recv_timeout != Some(wait) {
            let _ = self.get_ref().set_recv_timeout(Some(wait));
            self.recv_timeout = Some(wait);
        }
        #[cfg(windows)]
        self.deadline.arm(wait);
        let resp = self.send_and_read(req);
        #[cfg(windows)]
        if self.deadline.disarm() {
            // The watchdog cancelled the I/O (and the stream's state is unknown).
            return Err(ExchangeError::TimedOut { sent: !matches!(resp, Err(ExchangeError::Send(_))) });
        }
        resp
    }

    /// Sends `req` without reading an answer: a frame of a stream the broker
    /// answers once at its end (a streamed executemany's `ManyBegin` and
    /// `ManyRows`). Blocks while the socket is full, which is how the broker
    /// paces the stream.
    ///
    /// # Errors
    /// [`ExchangeError::Encode`]; [`ExchangeError::Refused`] when the broker
    /// closed the connection with a reason; else [`ExchangeError::Send`].
    pub fn send(&mut self, req: &Request) -> Result<(), ExchangeError> {
        let stream = self.reader.get_ref();
        match write_frame(&mut &*stream, req, &mut self.wbuf, HARD_MAX_FRAME) {
            Ok(()) => Ok(()),
            Err(FrameError::Io(e)) => match self.read_response() {
                Ok(Response::Error(info)) => Err(ExchangeError::Refused(info)),
                _ => Err(ExchangeError::Send(e)),
            },
            Err(other) => Err(ExchangeError::Encode(other)),
        }
    }

    fn send_and_read(&mut self, req: &Request) -> Result<Response, ExchangeError> {
        let stream = self.reader.get_ref();
        match write_frame(&mut &*stream, req, &mut self.wbuf, HARD_MAX_FRAME) {
            Ok(()) => self.read_response(),
            Err(FrameError::Io(e)) => {
                // A broker that refuses this connection answers and closes at once,
                // maybe before the request was written: its reason is still readable.
                match self.read_response() {
                    Ok(Response::Error(info)) => Err(ExchangeError::Refused(info)),
                    _ => Err(ExchangeError::Send(e)),
                }
            }
            Err(other) => Err(ExchangeError::Encode(other)),
        }
    }

    /// Waits up to `wait` for the next frame of a stream (a watch's events) and
    /// reads it; `Ok(None)` when none started within the wait, which leaves the
    /// stream usable.
    ///
    /// # Errors
    /// As [`FrameStream::read_response`]; on Windows a frame started but not
    /// finished within the wait is [`ExchangeError::TimedOut`].
    pub fn next_response(&mut self, wait: Duration) -> Result<Option<Response>, ExchangeError> {
        let wait = wait.max(Duration::from_millis(1));
        if self.reader.buffer().is_empty() {
            if self.recv_timeout != Some(wait) {
                let _ = self.get_ref().set_recv_timeout(Some(wait));
                self.recv_timeout = Some(wait);
            }
            #[cfg(windows)]
            self.deadline.arm(wait);
            let filled = loop {
                match io::BufRead::fill_buf(&mut self.reader) {
                    Ok(b) => break Ok(b.is_empty()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => break Err(e),
                }
            };
            #[cfg(windows)]
            let fired = self.deadline.disarm();
            #[cfg(not(windows))]
            let fired = false;
            match filled {
                Ok(true) => return Err(ExchangeError::Closed),
                Ok(false) => {}
                // Nothing was read: the stream is as it was.
                Err(e)
                    if fired || matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(ExchangeError::Receive(e)),
            }
        }
        // A frame started: the rest comes within the same wait.
        #[cfg(windows)]
        self.deadline.arm(wait);
        let resp = self.read_response();
        #[cfg(windows)]
        if self.deadline.disarm() {
            return Err(ExchangeError::TimedOut { sent: true });
        }
        resp.map(Some)
    }

    /// Reads the next answer, e.g. after a [`Response::Progress`] of a long
    /// operation (the wait in force is that of the last round trip).
    ///
    /// # Errors
    /// [`ExchangeError::Receive`], [`ExchangeError::Closed`],
    /// [`ExchangeError::Truncated`] or [`ExchangeError::Malformed`].
    pub fn read_response(&mut self) -> Result<Response, ExchangeError> {
        let mut header = [0u8; FRAME_HEADER_LEN];
        let n = loop {
            match self.reader.read(&mut header) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ExchangeError::Receive(e)),
            }
        };
        if n == 0 {
            return Err(ExchangeError::Closed);
        }
        read_frame_after(&mut self.reader, header, n, HARD_MAX_FRAME, &mut self.rbuf).map_err(|e| match e {
            FrameError::Io(io) => ExchangeError::Receive(io),
            e @ FrameError::Truncated { .. } => ExchangeError::Truncated(e),
            other => ExchangeError::Malformed(other),
        })
    }
}
