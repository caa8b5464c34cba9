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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use interprocess::local_socket::Stream;
use litebroker_protocol::{encode_frame, FrameError, Response};

use crate::shared::Shared;
use crate::texts;

/// What a connection thread receives for its job.
// It moves once through a one-slot channel; boxing the answer would allocate per
// request instead.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Reply {
    /// The answer, for the connection thread to send.
    Response(Response),
    /// The answer was sent on the socket.
    Sent,
    /// The start of the answer was sent; these bytes remain (the client's socket
    /// buffer was full, so it is not reading).
    Rest(Vec<u8>),
}

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
    /// Sequence number of the job whose answer goes straight to the socket (0 = none).
    armed: AtomicU64,
    shared: Arc<Shared>,
}

/// A connection's reply path, cloned into each of its jobs.
#[derive(Debug, Clone)]
pub struct ReplyTx {
    tx: SyncSender<Reply>,
    direct: Option<Arc<Direct>>,
}

impl ReplyTx {
    /// A reply path through `tx`; with `stream` (Unix) answers may also be sent on
    /// the socket directly, once armed.
    pub fn new(tx: SyncSender<Reply>, stream: Option<Arc<Stream>>, shared: &Arc<Shared>) -> ReplyTx {
        let direct = stream
            .filter(|_| cfg!(unix))
            .map(|stream| Arc::new(Direct { stream, armed: AtomicU64::new(0), shared: shared.clone() }));
        ReplyTx { tx, direct }
    }

    /// Whether answers can be sent on the socket directly.
    pub fn can_send_directly(&self) -> bool {
        self.direct.is_some()
    }

    /// The answer of job `seq` will be sent on the socket by whoever runs it.
    pub fn arm(&self, seq: u64) {
        if let Some(d) = &self.direct {
            d.armed.store(seq, Ordering::SeqCst);
        }
    }

    /// Takes the job's answer back from the socket path (it was cancelled).
    pub fn disarm(&self) {
        if let Some(d) = &self.direct {
            d.armed.store(0, Ordering::SeqCst);
        }
    }

    /// Delivers the answer of job `seq`. Never blocks: each connection has one job
    /// in flight, a reply slot of one, and a direct answer is sent without waiting.
    pub fn send(&self, seq: u64, resp: Response) {
        if let Some(d) = &self.direct {
            if seq != 0 && d.armed.compare_exchange(seq, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() {
                let note = match d.send_now(&resp) {
                    Ok(rest) if !rest.is_empty() => Reply::Rest(rest),
                    // A broken socket: the connection thread finds out by reading.
                    _ => {
                        d.shared.counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                        Reply::Sent
                    }
                };
                let _ = self.tx.try_send(note);
                return;
            }
        }
        let _ = self.tx.try_send(Reply::Response(resp));
    }
}

thread_local! {
    static FRAME: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

impl Direct {
    /// Encodes and sends `resp` without blocking; returns what could not be sent.
    fn send_now(&self, resp: &Response) -> io::Result<Vec<u8>> {
        let max = self.shared.config.max_frame;
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
