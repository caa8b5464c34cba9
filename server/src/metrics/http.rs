//! `--metrics-listen ADDR`: the report over HTTP for a Prometheus server to scrape,
//! on a loopback address only.
//!
//! - **Loopback only.** The address must be in 127.0.0.0/8 or `::1` (`localhost`
//!   means 127.0.0.1); anything else is refused before the broker takes its
//!   database (exit 2). Loopback TCP has no permissions, so any local user can
//!   read the figures: they are counts, sizes and times, never SQL, data, paths or
//!   client names.
//! - **One small thread** (`lb-metrics`) with a plain `std::net::TcpListener`, not an
//!   HTTP framework: it answers one `GET` and nothing else. Connections are served
//!   one at a time; each has [`REQUEST_TIME`] to send its request head (at most
//!   [`MAX_HEAD`] bytes) and as long again to take the answer, then it is cut off.
//!   A slow or garbage client therefore delays only the scrapes queued behind it,
//!   by at most that long; the thread never touches the writer, the job queue or
//!   a client connection.
//! - **HTTP/1.1, `Connection: close`.** `GET /metrics` (a query string is ignored)
//!   answers 200 with `Content-Type: text/plain; version=0.0.4`; another path 404;
//!   another method 405 (`Allow: GET`); a request line that is not HTTP/1.x 400; a
//!   head over [`MAX_HEAD`] 431; a head not complete in time 408. The body of a
//!   request, if any, is never read.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use tracing::{error, warn};

use super::report::report;
use crate::shared::Shared;

/// Most bytes of a request head (request line and headers) read.
pub const MAX_HEAD: usize = 8 * 1024;

/// How long a client has to send its request head, and again to take the answer.
pub const REQUEST_TIME: Duration = Duration::from_secs(2);

/// Parses `--metrics-listen`: `IP:PORT` (`[::1]:PORT` for IPv6) or
/// `localhost:PORT`, on a loopback address (port 0: one the system picks).
///
/// # Errors
/// What is wrong with it, for the exit-2 message.
pub fn parse_listen_addr(s: &str) -> Result<SocketAddr, String> {
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => port.parse::<u16>().map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p)).ok(),
        None => s.parse::<SocketAddr>().ok(),
    };
    let addr = addr.ok_or_else(|| {
        format!("--metrics-listen takes IP:PORT on a loopback address (e.g. 127.0.0.1:9899), got '{s}'")
    })?;
    check_loopback(addr)?;
    Ok(addr)
}

/// Refuses an address other machines could reach.
///
/// # Errors
/// The refusal, naming the address.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(format!(
        "--metrics-listen {addr} is not a loopback address: the metrics endpoint listens on 127.0.0.0/8 or \
         ::1 only (a Prometheus server elsewhere scrapes through an exporter or a proxy of your choice)"
    ))
}

/// The endpoint's listener, bound and not yet served.
#[derive(Debug)]
pub struct MetricsListener {
    listener: TcpListener,
    addr: SocketAddr,
}

impl MetricsListener {
    /// Binds `addr` (already checked to be loopback).
    ///
    /// # Errors
    /// When it cannot be bound (in use, not available).
    pub fn bind(addr: SocketAddr) -> io::Result<MetricsListener> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        Ok(MetricsListener { listener, addr })
    }

    /// The address it listens on (the port the system picked for port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Starts the `lb-metrics` thread; it ends once shutdown began and
    /// [`wake`] woke it.
    ///
    /// # Errors
    /// When the thread cannot be started.
    pub fn spawn(self, shared: Arc<Shared>) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("lb-metrics".into()).spawn(move || {
            for conn in self.listener.incoming() {
                if shared.is_shutting_down() {
                    break;
                }
                match conn {
                    Ok(stream) => {
                        let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            serve(stream, &shared);
                        }));
                        if served.is_err() {
                            error!("internal failure answering a metrics request; the endpoint serves on");
                        }
                    }
                    Err(e) => {
                        // Typically out of descriptors: pause rather than spin.
                        warn!("metrics endpoint: accept failed: {e}");
                        thread::sleep(Duration::from_millis(50));
                    }
                }
            }
        })
    }
}

/// Wakes the endpoint's accept loop so that it sees the shutdown (a connection
/// it closes at once).
pub fn wake(addr: SocketAddr) {
    let _ = TcpStream::connect_timeout(&addr, Duration::from_secs(1));
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Asked {
    Metrics,
    OtherPath,
    OtherMethod,
    Malformed,
}

/// Reads the request line of `head`: `METHOD TARGET HTTP/1.x`.
fn asked(head: &[u8]) -> Asked {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let Ok(line) = std::str::from_utf8(line) else { return Asked::Malformed };
    let mut parts = line.trim_end_matches('\r').split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Asked::Malformed;
    };
    if !version.starts_with("HTTP/1.") || method.is_empty() || !target.starts_with('/') {
        return Asked::Malformed;
    }
    if method != "GET" {
        return Asked::OtherMethod;
    }
    match target.split('?').next() {
        Some("/metrics") => Asked::Metrics,
        _ => Asked::OtherPath,
    }
}

/// Why no complete head was read.
enum HeadError {
    /// Over [`MAX_HEAD`] bytes without its end.
    TooLarge,
    /// Not complete within [`REQUEST_TIME`].
    TimedOut,
    /// The client left (or failed) first: nobody to answer.
    Gone,
}

/// Reads a request head (up to its blank line) before `deadline`.
fn read_head(s: &mut TcpStream, deadline: Instant) -> Result<Vec<u8>, HeadError> {
    let mut head = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(HeadError::TimedOut);
        }
        s.set_read_timeout(Some(left)).map_err(|_| HeadError::Gone)?;
        let room = (MAX_HEAD - head.len()).min(chunk.len());
        let n = match s.read(&mut chunk[..room]) {
            Ok(0) => return Err(HeadError::Gone),
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return Err(HeadError::TimedOut)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => return Err(HeadError::Gone),
        };
        let from = head.len().saturating_sub(3);
        head.extend_from_slice(&chunk[..n]);
        let tail = &head[from..];
        if tail.windows(4).any(|w| w == b"\r\n\r\n") || tail.windows(2).any(|w| w == b"\n\n") {
            return Ok(head);
        }
        if head.len() >= MAX_HEAD {
            return Err(HeadError::TooLarge);
        }
    }
}

/// Answers one connection, within [`REQUEST_TIME`] to read and as long to write.
fn serve(mut s: TcpStream, shared: &Shared) {
    let head = read_head(&mut s, Instant::now() + REQUEST_TIME);
    let (code, extra, content_type, body) = match head {
        Ok(head) => match asked(&head) {
            Asked::Metrics => {
                (200, "", "text/plain; version=0.0.4; charset=utf-8", report(shared).exposition())
            }
            Asked::OtherPath => (404, "", TEXT, "not found: the metrics are at /metrics\n".into()),
            Asked::OtherMethod => (405, "Allow: GET\r\n", TEXT, "only GET is served\n".into()),
            Asked::Malformed => (400, "", TEXT, "not an HTTP/1.x request\n".into()),
        },
        Err(HeadError::TooLarge) => (431, "", TEXT, format!("request head over {MAX_HEAD} bytes\n")),
        Err(HeadError::TimedOut) => (408, "", TEXT, "request head not complete in time\n".into()),
        Err(HeadError::Gone) => return,
    };
    shared.metrics.http_answered(code);
    let reason = match code {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        _ => "Request Header Fields Too Large",
    };
    let mut answer = format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    answer.extend_from_slice(body.as_bytes());
    if write_before(&mut s, &answer, Instant::now() + REQUEST_TIME).is_ok() {
        let _ = s.shutdown(Shutdown::Write);
    }
}

const TEXT: &str = "text/plain; charset=utf-8";

/// Writes `bytes` unless `deadline` passes first (a client that reads slowly is
/// cut off then, however it paces its reads).
fn write_before(s: &mut TcpStream, mut bytes: &[u8], deadline: Instant) -> io::Result<()> {
    while !bytes.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(io::ErrorKind::TimedOut.into());
        }
        s.set_write_timeout(Some(left))?;
        match s.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_addresses_are_accepted() {
        for ok in ["127.0.0.1:9899", "127.1.2.3:0", "[::1]:9899", "localhost:9899"] {
            let addr = parse_listen_addr(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert!(addr.ip().is_loopback());
        }
        for refused in
            ["0.0.0.0:9899", "[::]:9899", "192.168.1.2:9899", "10.0.0.1:80", "[::ffff:127.0.0.1]:1"]
        {
            let e = parse_listen_addr(refused).unwrap_err();
            assert!(e.contains("not a loopback address"), "{refused}: {e}");
        }
        for bad in ["9899", "localhost", "example.com:80", "127.0.0.1", "localhost:x"] {
            let e = parse_listen_addr(bad).unwrap_err();
            assert!(e.contains("takes IP:PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_request_line_is_read_as_the_endpoint_answers_it() {
        assert_eq!(asked(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"), Asked::Metrics);
        assert_eq!(asked(b"GET /metrics?name[]=x HTTP/1.0\n\n"), Asked::Metrics);
        assert_eq!(asked(b"GET / HTTP/1.1\r\n\r\n"), Asked::OtherPath);
        assert_eq!(asked(b"GET /metricsx HTTP/1.1\r\n\r\n"), Asked::OtherPath);
        assert_eq!(asked(b"POST /metrics HTTP/1.1\r\n\r\n"), Asked::OtherMethod);
        assert_eq!(asked(b"HEAD /metrics HTTP/1.1\r\n\r\n"), Asked::OtherMethod);
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET /metrics HTTP/2\r\n\r\n",
            b"\xff\xfe\r\n\r\n",
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"GET metrics HTTP/1.1\r\n\r\n",
        ] {
            assert_eq!(asked(bad), Asked::Malformed, "{bad:?}");
        }
    }
}
