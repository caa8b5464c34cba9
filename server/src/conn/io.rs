//! Frames on a client's connection: reading requests with the handshake and I/O
//! deadlines, writing answers within the send timeout.
//!
//! Idle time between frames is unlimited (app instances keep connections open for
//! hours). Once a frame's first byte arrived, the whole frame must arrive within
//! `--io-timeout-secs` ([`FrameDeadline`]); the handshake frame also within the
//! handshake's time. Answers are written with the socket's send timeout, the same
//! `--io-timeout-secs`: a client that does not read its answers is disconnected.
//! Unix sockets honour both timeouts; a Windows pipe has none, and the pipe
//! watchdog disconnects a client that misses the same deadlines.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use interprocess::local_socket::prelude::*;
use interprocess::local_socket::Stream;
use litebroker_protocol::frame::read_frame_after;
use litebroker_protocol::{write_frame, FrameError, Request, Response, FRAME_HEADER_LEN};

use crate::config::Config;
use crate::texts;

/// Largest read or write buffer a connection keeps between frames.
const IDLE_BUFFER_MAX: usize = 256 * 1024;

/// The connection's socket, shared with the threads that answer on it (the
/// answer-on-the-socket shortcut, `conn::direct`) so that it stays open (its
/// descriptor cannot be reused) while one of them may write.
#[derive(Debug, Clone)]
pub(super) struct SharedStream(pub Arc<Stream>);

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// What waiting for the next frame found.
pub(super) enum Wait {
    /// A frame has started.
    Frame,
    /// The peer left cleanly between frames.
    Closed,
    /// Nothing arrived within the receive timeout in force.
    Idle,
}

/// What a frame read gave.
pub(super) enum Incoming {
    /// A request.
    Request(Request),
    /// A complete frame that is not a valid request: answer, keep the connection.
    Malformed(FrameError),
}

/// A client's connection, as frames.
pub(super) struct FrameIo {
    /// Windows: pipes have no timeouts; the pipe watchdog enforces the handshake
    /// and I/O timeouts instead. Declared before `reader`: released before the
    /// handle is closed.
    #[cfg(windows)]
    deadline: litebroker_protocol::pipe_deadline::PipeDeadline,
    reader: BufReader<SharedStream>,
    wbuf: Vec<u8>,
    rbuf: Vec<u8>,
    /// The socket's receive timeout in force.
    recv_timeout: Duration,
    max_frame: u32,
    io_timeout: Duration,
}

impl FrameIo {
    /// Frames on `stream`, which was just accepted: until the handshake, a silent
    /// peer is given the handshake's time only. `pipe` is the broker's pipe name:
    /// on Windows the pipe watchdog knows this broker's ends by it.
    pub(super) fn new(
        stream: Stream,
        config: &Config,
        #[cfg_attr(not(windows), allow(unused_variables))] pipe: &str,
    ) -> FrameIo {
        let first_wait = config.handshake_timeout.min(config.io_timeout);
        // Unix sockets honour these; on Windows the pipe does not support them and
        // the pipe watchdog disconnects a client that misses the same deadlines.
        let _ = stream.set_recv_timeout(Some(first_wait));
        let _ = stream.set_send_timeout(Some(config.io_timeout));
        #[cfg(windows)]
        let deadline = litebroker_protocol::pipe_deadline::PipeDeadline::new(&stream, Some(pipe));
        #[cfg(windows)]
        deadline.arm(config.handshake_timeout);
        FrameIo {
            #[cfg(windows)]
            deadline,
            reader: BufReader::with_capacity(64 * 1024, SharedStream(Arc::new(stream))),
            wbuf: Vec::with_capacity(4096),
            rbuf: Vec::with_capacity(4096),
            recv_timeout: first_wait,
            max_frame: config.max_frame,
            io_timeout: config.io_timeout,
        }
    }

    /// The socket, for the threads that answer on it directly.
    pub(super) fn stream(&self) -> &Arc<Stream> {
        &self.reader.get_ref().0
    }

    /// Idle connections may wait for hours: they must not pin the buffers of their
    /// last big frame, or many clients could hold a maximum frame each.
    pub(super) fn shrink_idle_buffers(&mut self) {
        for buf in [&mut self.rbuf, &mut self.wbuf] {
            if buf.capacity() > IDLE_BUFFER_MAX {
                *buf = Vec::with_capacity(4096);
            }
        }
    }

    /// Waits for the next frame to start, up to the receive timeout in force.
    ///
    /// # Errors
    /// The socket's failure.
    pub(super) fn wait(&mut self) -> Result<Wait, FrameError> {
        loop {
            match self.reader.fill_buf() {
                Ok([]) => return Ok(Wait::Closed),
                Ok(_) => return Ok(Wait::Frame),
                Err(e) if is_timeout(&e) => return Ok(Wait::Idle),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Whether the client has sent more already (bytes buffered, or readable on
    /// the socket now, or its end of stream), without waiting: a client that sends
    /// before reading its answers is pipelining. Windows: only buffered bytes
    /// count (a pipe is not polled), so there a pipeline is read on only as far as
    /// the buffer reaches before the oldest answer is awaited.
    pub(super) fn frame_ready(&self) -> bool {
        self.frame_buffered() || readable_now(&self.reader.get_ref().0)
    }

    /// Whether bytes of the client's next frame are buffered already (no system
    /// call: asked once per request).
    pub(super) fn frame_buffered(&self) -> bool {
        !self.reader.buffer().is_empty()
    }

    /// Reads the frame that started, within the I/O timeout (and within
    /// `handshake_left` for the handshake's frame). A frame longer than the
    /// maximum is not read: [`FrameError::TooLarge`], after which the stream
    /// cannot be resynchronised.
    ///
    /// # Errors
    /// The socket's failure, a stalled or truncated frame, a frame too large.
    pub(super) fn read_request(&mut self, handshake_left: Option<Duration>) -> Result<Incoming, FrameError> {
        #[cfg(windows)]
        self.deadline.arm(self.io_timeout);
        let mut deadline = Instant::now() + self.io_timeout;
        if let Some(left) = handshake_left {
            deadline = deadline.min(Instant::now() + left);
        }
        let mut frame = FrameDeadline { reader: &mut self.reader, deadline, shortened: false };
        let read = read_frame_after::<_, Request>(
            &mut frame,
            [0; FRAME_HEADER_LEN],
            0,
            self.max_frame,
            &mut self.rbuf,
        );
        if frame.shortened {
            // Unknown now: the next `set_recv_timeout` sets it again.
            self.recv_timeout = Duration::ZERO;
            self.set_recv_timeout(self.io_timeout);
        }
        #[cfg(windows)]
        self.deadline.disarm();
        match read {
            Ok(r) => Ok(Incoming::Request(r)),
            Err(e @ (FrameError::Decode(_) | FrameError::TrailingBytes { .. })) => Ok(Incoming::Malformed(e)),
            Err(e) => Err(e),
        }
    }

    /// The payload of the last frame read (for a handshake that did not decode).
    pub(super) fn payload(&self) -> &[u8] {
        &self.rbuf
    }

    /// Writes one answer within the send timeout. An answer longer than the
    /// maximum frame is replaced by an error saying so.
    ///
    /// # Errors
    /// The socket's failure (or a client that does not read its answers).
    pub(super) fn send(&mut self, resp: &Response) -> Result<(), FrameError> {
        #[cfg(windows)]
        self.deadline.arm(self.io_timeout);
        let max = self.max_frame;
        let stream: &Stream = &self.reader.get_ref().0;
        let sent = match write_frame(&mut &*stream, resp, &mut self.wbuf, max) {
            Err(FrameError::TooLarge { len, max }) => {
                let too_large = Response::Error(texts::answer_too_large(len, max));
                write_frame(&mut &*stream, &too_large, &mut self.wbuf, max)
            }
            other => other,
        };
        #[cfg(windows)]
        self.deadline.disarm();
        sent
    }

    /// Writes the rest of an answer another thread started on the socket.
    ///
    /// # Errors
    /// The socket's failure.
    pub(super) fn send_rest(&mut self, bytes: &[u8]) -> Result<(), FrameError> {
        let stream: &Stream = &self.reader.get_ref().0;
        (&mut &*stream).write_all(bytes).map_err(FrameError::from)
    }

    /// Sets the socket's receive timeout (at least 1 ms), unless it is in force.
    pub(super) fn set_recv_timeout(&mut self, t: Duration) {
        let t = t.max(Duration::from_millis(1));
        if t != self.recv_timeout {
            let _ = self.reader.get_ref().0.set_recv_timeout(Some(t));
            self.recv_timeout = t;
        }
    }

    /// Whether the connection was cut off for missing a deadline (Windows: by the
    /// pipe watchdog; elsewhere the error says so).
    pub(super) fn deadline_fired(&self) -> bool {
        #[cfg(windows)]
        {
            self.deadline.fired()
        }
        #[cfg(not(windows))]
        {
            false
        }
    }

    /// Windows: lets the pipe watchdog forget this connection.
    #[cfg(windows)]
    pub(super) fn release(&mut self) {
        self.deadline.release();
    }
}

/// Whether the socket has something to read right now (poll with no wait).
#[cfg(unix)]
fn readable_now(stream: &Stream) -> bool {
    use std::os::unix::io::AsRawFd;
    let fd = match stream {
        Stream::UdSocket(s) => s.inner().as_raw_fd(),
    };
    let mut p = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd; `fd` stays open while `stream` is borrowed.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents != 0
}

#[cfg(not(unix))]
fn readable_now(_stream: &Stream) -> bool {
    false
}

/// Whether a socket error is its timeout running out.
pub(super) fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
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
