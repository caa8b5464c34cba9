//! How answers get from whoever ran a job back to the client.
//!
//! Normally through the connection thread's one-slot channel: the connection
//! thread waits for the answer and writes it. For a small one-shot write the
//! connection thread does not wait: it goes back to reading its socket, and the
//! thread that committed the write (the writer thread, or another connection
//! thread serving the queue) sends the answer on the socket itself, without
//! blocking. That saves two thread wake-ups per request; the channel then only
//! carries a note that the answer went out.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use interprocess::local_socket::Stream;
use litebroker_protocol::{encode_frame, FrameError, Response};

use crate::job::{InFlight, Reply, SocketAnswer};
use crate::shared::lock;
use crate::texts;

/// The connection's socket, shared with the threads that answer on it so that it
/// stays open (its descriptor cannot be reused) while one of them may write.
#[derive(Debug, Clone)]
pub struct SharedStream(pub Arc<Stream>);

impl Read for SharedStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// Lets the thread that ran a job send its answer on the socket.
#[derive(Debug)]
pub struct Direct {
    stream: Arc<Stream>,
    /// The job whose answer goes straight to the socket, with its request's
    /// in-flight count, until whoever answers (or cancels) it takes them.
    armed: Mutex<Option<(u64, InFlight)>>,
    max_frame: u32,
}

impl Direct {
    /// The socket path of a connection (Unix only: elsewhere None).
    pub fn new(stream: Arc<Stream>, max_frame: u32) -> Option<Arc<Direct>> {
        cfg!(unix).then(|| Arc::new(Direct { stream, armed: Mutex::new(None), max_frame }))
    }

    /// The answer of job `seq` will be sent on the socket by whoever runs it.
    pub fn arm(&self, seq: u64, in_flight: InFlight) {
        *lock(&self.armed) = Some((seq, in_flight));
    }

    /// Takes the job's answer back from the socket path (it was cancelled, or
    /// never queued), with its in-flight count.
    pub fn disarm(&self) -> Option<InFlight> {
        lock(&self.armed).take().map(|(_, in_flight)| in_flight)
    }
}

impl SocketAnswer for Direct {
    #[allow(clippy::result_large_err)]
    fn answer(&self, seq: u64, resp: Response) -> Result<Reply, Response> {
        let taken = {
            let mut armed = lock(&self.armed);
            match armed.take() {
                Some((s, in_flight)) if s == seq => Some(in_flight),
                other => {
                    *armed = other;
                    None
                }
            }
        };
        let Some(in_flight) = taken else { return Err(resp) };
        Ok(match self.send_now(&resp) {
            Ok(rest) if !rest.is_empty() => Reply::Rest(rest, in_flight),
            // Sent in full, or a broken socket (the connection thread finds out by
            // reading): either way the request is out of flight.
            _ => Reply::Sent,
        })
    }
}

thread_local! {
    static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Direct {
    /// Encodes and sends `resp` without blocking; returns what could not be sent.
    fn send_now(&self, resp: &Response) -> io::Result<Vec<u8>> {
        let max = self.max_frame;
        FRAME.with(|buf| {
            let mut buf = buf.borrow_mut();
            match encode_frame(resp, &mut buf, max) {
                Ok(()) => {}
                Err(FrameError::TooLarge { len, max }) => {
                    let too_large = Response::Error(texts::answer_too_large(len, max));
                    encode_frame(&too_large, &mut buf, max).map_err(io::Error::other)?
                }
                Err(e) => return Err(io::Error::other(e)),
            }
            let sent = send_nonblocking(&self.stream, &buf)?;
            let rest = buf[sent..].to_vec();
            if buf.capacity() > 64 * 1024 {
                *buf = Vec::new();
            }
            Ok(rest)
        })
    }
}

/// Sends as much of `bytes` as the socket takes without waiting.
#[cfg(unix)]
fn send_nonblocking(stream: &Stream, bytes: &[u8]) -> io::Result<usize> {
    use std::os::unix::io::AsRawFd;
    #[cfg(any(target_os = "linux", target_os = "android"))]
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    const FLAGS: libc::c_int = libc::MSG_DONTWAIT;
    let fd = match stream {
        Stream::UdSocket(s) => s.inner().as_raw_fd(),
    };
    let mut off = 0;
    while off < bytes.len() {
        let rest = &bytes[off..];
        // SAFETY: `fd` stays open while `stream` is borrowed; the buffer is valid
        // for `rest.len()` bytes.
        let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), FLAGS) };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.kind() {
                io::ErrorKind::Interrupted => continue,
                io::ErrorKind::WouldBlock => return Ok(off),
                _ => return Err(e),
            }
        }
        off += n as usize;
    }
    Ok(off)
}

#[cfg(not(unix))]
fn send_nonblocking(_stream: &Stream, _bytes: &[u8]) -> io::Result<usize> {
    Ok(0)
}
