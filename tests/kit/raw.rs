//! Raw connections to a broker's socket (or pipe), for tests that write frames
//! themselves: many requests before reading any answer, hand-made or hostile
//! bytes, handshakes that claim things, connections that stall or never read.
//!
//! The client library's `FrameStream` carries one request at a time, each answered
//! before the next, through a buffered reader and (on Windows) a watchdog armed per
//! round trip. A [`RawConn`] is the bare stream instead: every method takes `&self`
//! (one thread may write while another reads the same connection), nothing is
//! buffered across reads, and bytes go out exactly as given. Frames are built and
//! read with the protocol's own codec.

use std::io::{self, Read, Write};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::Stream;
use litebroker_protocol::rendezvous::socket_name;
use litebroker_protocol::{
    encode_frame, read_frame, ErrorKind, FrameError, Hello, HelloAck, Request, Response, HARD_MAX_FRAME,
    PROTOCOL_MINOR, PROTOCOL_VERSION,
};

/// A raw connection to a broker. Reads and writes wait at most its timeouts
/// ([`RawConn::TIMEOUT`] unless changed; Windows pipes have none, so there a broken
/// broker hangs a test instead of failing it).
#[derive(Debug)]
pub struct RawConn {
    stream: Stream,
}

/// What a connection received until the broker closed it.
#[derive(Debug)]
pub struct Closed {
    /// The answers read before the close.
    pub answers: Vec<Response>,
    /// When the close came, counted from the moment given to
    /// [`RawConn::read_until_closed`].
    pub after: Duration,
}

impl RawConn {
    /// The read and write timeouts of [`RawConn::connect`].
    pub const TIMEOUT: Duration = Duration::from_secs(10);

    /// Connects to `socket` (a path on Unix, a pipe name on Windows), with
    /// [`RawConn::TIMEOUT`] for reads and writes.
    ///
    /// # Panics
    /// When nothing accepts the connection.
    pub fn connect(socket: &str) -> RawConn {
        let c =
            RawConn::try_connect(socket).unwrap_or_else(|e| panic!("connect to the broker on {socket}: {e}"));
        c.set_recv_timeout(Some(RawConn::TIMEOUT));
        c.set_send_timeout(Some(RawConn::TIMEOUT));
        c
    }

    /// Connects to `socket` without timeouts.
    ///
    /// # Errors
    /// When the name is invalid or nothing accepts the connection.
    pub fn try_connect(socket: &str) -> io::Result<RawConn> {
        Ok(RawConn { stream: Stream::connect(socket_name(socket)?)? })
    }

    /// Sets how long a read may wait (ignored where the platform has no such
    /// timeout, as Windows pipes).
    pub fn set_recv_timeout(&self, timeout: Option<Duration>) {
        let _ = self.stream.set_recv_timeout(timeout);
    }

    /// Sets how long a write may wait (ignored where the platform has none).
    pub fn set_send_timeout(&self, timeout: Option<Duration>) {
        let _ = self.stream.set_send_timeout(timeout);
    }

    /// The stream itself, for reads and writes of a test's own.
    pub fn stream(&self) -> &Stream {
        &self.stream
    }

    /// Writes `bytes` as they are.
    ///
    /// # Errors
    /// When the write fails (e.g. the broker closed the connection).
    pub fn send_bytes(&self, bytes: &[u8]) -> io::Result<()> {
        let mut w = &self.stream;
        w.write_all(bytes)?;
        w.flush()
    }

    /// Writes one request frame.
    ///
    /// # Panics
    /// When the write fails.
    pub fn send(&self, req: &Request) {
        self.send_bytes(&frame_of(req)).unwrap_or_else(|e| panic!("send {}: {e}", req.kind()));
    }

    /// Reads the next frame: `None` when the broker closed the connection first.
    ///
    /// # Errors
    /// When reading fails or the bytes are no answer.
    pub fn try_recv(&self) -> Result<Option<Response>, FrameError> {
        read_frame::<_, Response>(&mut &self.stream, HARD_MAX_FRAME, &mut Vec::new())
    }

    /// Reads the next answer.
    ///
    /// # Panics
    /// When none comes: the connection closed, failed or timed out.
    pub fn recv(&self) -> Response {
        match self.try_recv() {
            Ok(Some(r)) => r,
            other => panic!("expected an answer from the broker, got {other:?}"),
        }
    }

    /// Sends `req` and reads its answer.
    ///
    /// # Panics
    /// As [`RawConn::send`] and [`RawConn::recv`].
    pub fn round_trip(&self, req: &Request) -> Response {
        self.send(req);
        self.recv()
    }

    /// The handshake as this build's client sends it, named `name`.
    ///
    /// # Panics
    /// When the broker refuses it.
    pub fn handshake(&self, name: &str) -> HelloAck {
        self.handshake_with(hello(name))
    }

    /// A handshake of the test's making (another pid, version, schema).
    ///
    /// # Panics
    /// When the broker refuses it.
    pub fn handshake_with(&self, h: Hello) -> HelloAck {
        match self.round_trip(&Request::Hello(h)) {
            Response::Hello(ack) => ack,
            other => panic!("handshake refused: {other:?}"),
        }
    }

    /// Reads answers until the broker closes the connection.
    ///
    /// # Panics
    /// When it stays open past the read timeout, or sends something unreadable.
    pub fn read_until_closed(&self, since: Instant) -> Closed {
        let mut answers = Vec::new();
        let mut buf = Vec::new();
        loop {
            match read_frame::<_, Response>(&mut &self.stream, HARD_MAX_FRAME, &mut buf) {
                Ok(Some(r)) => answers.push(r),
                Ok(None) => break,
                // Linux reports a close with our unread bytes still queued at the broker
                // as a reset, after the answers it had sent.
                Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => break,
                Err(e) => {
                    panic!("broker did not close the connection cleanly: {e} (answers so far: {answers:?})")
                }
            }
        }
        Closed { answers, after: since.elapsed() }
    }

    /// Whether the broker closes the connection within `timeout`, whatever it sends
    /// first. Reads on a thread of its own, so it works where reads cannot time out
    /// (Windows pipes); the connection's own read timeout does not count as a close.
    pub fn closed_within(self, timeout: Duration) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut sink = [0u8; 4096];
            loop {
                match (&self.stream).read(&mut sink) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // Reset or broken: closed by the broker.
                    Err(_) => break,
                }
            }
            let _ = tx.send(());
        });
        rx.recv_timeout(timeout).is_ok()
    }
}

/// The handshake this build's client sends, named `name`, from this process, with
/// no schema expectation. Change a field with struct update syntax:
/// `Hello { protocol: 99, ..hello("from-the-future") }`.
pub fn hello(name: &str) -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        minor: PROTOCOL_MINOR,
        client_name: name.into(),
        pid: std::process::id(),
        expected_schema: None,
    }
}

/// A request as one frame: its length prefix and payload.
pub fn frame_of(req: &Request) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(req, &mut buf, HARD_MAX_FRAME).expect("encode a frame");
    buf
}

/// A frame around arbitrary payload bytes.
pub fn raw_frame(payload: &[u8]) -> Vec<u8> {
    [&(payload.len() as u32).to_le_bytes()[..], payload].concat()
}

/// The kind and message of an error answer.
///
/// # Panics
/// When `r` is not an error answer.
#[track_caller]
pub fn answer_error(r: &Response) -> (ErrorKind, String) {
    match r {
        Response::Error(e) => (e.kind, e.message.clone()),
        other => panic!("expected an error answer, got {other:?}"),
    }
}
