//! The broker's metrics endpoint (`--metrics-listen`) as a test reads it: a plain
//! HTTP/1.1 exchange over a `TcpStream`, and the samples of the Prometheus text
//! format by name and labels.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// An HTTP answer: status code, head (status line and headers) and body.
#[derive(Debug)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The status line and headers, as sent.
    pub head: String,
    /// The body.
    pub body: String,
}

/// Sends `request` (raw bytes) to `addr` and reads the answer until the server
/// closes the connection, for at most `timeout`.
///
/// # Errors
/// When the connection fails, times out, or the answer is not HTTP.
pub fn http_exchange(addr: SocketAddr, request: &[u8], timeout: Duration) -> Result<HttpAnswer, String> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| format!("send: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| format!("read the answer: {e}"))?;
    parse_answer(&raw)
}

/// `GET <path>` on `addr`.
///
/// # Errors
/// As [`http_exchange`].
pub fn http_get(addr: SocketAddr, path: &str) -> Result<HttpAnswer, String> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: litebroker-tests\r\n\r\n");
    http_exchange(addr, request.as_bytes(), Duration::from_secs(20))
}

/// Splits a raw answer into status, head and body (checking `Content-Length`).
///
/// # Errors
/// When it is not an HTTP/1.1 answer with a status code, or the body's length
/// differs from `Content-Length`.
pub fn parse_answer(raw: &[u8]) -> Result<HttpAnswer, String> {
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| format!("no end of head in {text:?}"))?;
    let status = head
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| format!("not an HTTP/1.1 status line: {head:?}"))?;
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse::<usize>().ok())
        .ok_or_else(|| format!("no Content-Length in {head:?}"))?;
    if length != body.len() {
        return Err(format!("Content-Length {length}, body of {} bytes", body.len()));
    }
    Ok(HttpAnswer { status, head: head.to_owned(), body: body.to_owned() })
}

/// The samples of a text exposition, keyed by the sample as written before its
/// value (`name` or `name{label="v",…}`).
///
/// # Panics
/// On a sample line without a numeric value.
pub fn samples(exposition: &str) -> BTreeMap<String, f64> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (key, value) = l.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {l:?}"));
            let v = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("not a value: {l:?}")),
            };
            (key.to_owned(), v)
        })
        .collect()
}
