//! Framing: a 4-byte little-endian length prefix, then a bincode 2 payload encoded
//! with `config::standard()`.
//!
//! The length is checked against a maximum **before** anything is allocated, the
//! payload is read incrementally (a forged prefix with no body allocates nothing),
//! decoding runs with a byte limit, and a payload that is not consumed exactly is
//! an error.

use std::io::{self, Read, Write};

use bincode::config;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Bytes in the length prefix.
pub const FRAME_HEADER_LEN: usize = 4;

/// The largest frame either side ever accepts, whatever is configured.
pub const HARD_MAX_FRAME: u32 = 64 * 1024 * 1024;

/// The default maximum frame size.
pub const DEFAULT_MAX_FRAME: u32 = 16 * 1024 * 1024;

/// The most decode-limit bytes bincode claims per payload byte: a one-byte varint
/// can decode into a 16-byte integer (today's messages stay at 8, a `u64`).
const CLAIM_PER_BYTE: usize = 16;

/// Bound on what the decoder may claim while decoding the largest possible payload.
const DECODE_LIMIT: usize = CLAIM_PER_BYTE * HARD_MAX_FRAME as usize;

fn decode_limited<T: DeserializeOwned, const LIMIT: usize>(
    payload: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice::<T, _>(payload, config::standard().with_limit::<LIMIT>())
}

/// Decodes with a limit proportional to the payload's length. bincode allocates a
/// `String` or byte vector at its encoded length *before* reading its bytes, and
/// only the limit stops it, so a fixed limit would let a 20-byte frame claiming a
/// 200 MiB string allocate 200 MiB. An honest payload of `n` bytes never claims more
/// than `CLAIM_PER_BYTE * n`; the limit is the next size class above that (classes
/// 4x apart, since each is a separate instantiation of the whole decoder).
fn decode_bounded<T: DeserializeOwned>(payload: &[u8]) -> Result<(T, usize), bincode::error::DecodeError> {
    let need = payload.len().saturating_mul(CLAIM_PER_BYTE);
    if need <= 1 << 10 {
        decode_limited::<T, { 1 << 10 }>(payload)
    } else if need <= 1 << 12 {
        decode_limited::<T, { 1 << 12 }>(payload)
    } else if need <= 1 << 14 {
        decode_limited::<T, { 1 << 14 }>(payload)
    } else if need <= 1 << 16 {
        decode_limited::<T, { 1 << 16 }>(payload)
    } else if need <= 1 << 18 {
        decode_limited::<T, { 1 << 18 }>(payload)
    } else if need <= 1 << 20 {
        decode_limited::<T, { 1 << 20 }>(payload)
    } else if need <= 1 << 22 {
        decode_limited::<T, { 1 << 22 }>(payload)
    } else if need <= 1 << 24 {
        decode_limited::<T, { 1 << 24 }>(payload)
    } else if need <= 1 << 26 {
        decode_limited::<T, { 1 << 26 }>(payload)
    } else if need <= 1 << 28 {
        decode_limited::<T, { 1 << 28 }>(payload)
    } else {
        decode_limited::<T, DECODE_LIMIT>(payload)
    }
}

/// A framing or codec failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The peer closed the connection part-way through a frame.
    #[error("connection closed in the middle of a frame ({got} of {expected} bytes)")]
    Truncated {
        /// Bytes received.
        got: usize,
        /// Bytes the frame needed.
        expected: usize,
    },
    /// The length prefix announces more than the maximum frame size.
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge {
        /// Announced (or encoded) payload length.
        len: u64,
        /// The maximum in force.
        max: u32,
    },
    /// The payload is not a valid message.
    #[error("malformed frame: {0}")]
    Decode(String),
    /// The payload decoded, but bytes were left over.
    #[error("malformed frame: {extra} trailing bytes after the message")]
    TrailingBytes {
        /// Bytes not consumed.
        extra: usize,
    },
    /// The message could not be encoded.
    #[error("cannot encode message: {0}")]
    Encode(String),
    /// An I/O error on the underlying stream.
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl FrameError {
    /// True when the stream is no longer usable (I/O failure or truncation).
    pub fn is_fatal(&self) -> bool {
        matches!(self, FrameError::Io(_) | FrameError::Truncated { .. } | FrameError::TooLarge { .. })
    }
}

/// Encodes `msg` as one frame (prefix + payload) into `buf`, replacing its contents.
///
/// # Errors
/// [`FrameError::TooLarge`] when the payload exceeds `max` (nothing should be sent),
/// [`FrameError::Encode`] when serde refuses the value.
pub fn encode_frame<T: Serialize>(msg: &T, buf: &mut Vec<u8>, max: u32) -> Result<(), FrameError> {
    buf.clear();
    buf.extend_from_slice(&[0; FRAME_HEADER_LEN]);
    bincode::serde::encode_into_std_write(msg, buf, config::standard())
        .map_err(|e| FrameError::Encode(e.to_string()))?;
    let len = buf.len() - FRAME_HEADER_LEN;
    let max = max.min(HARD_MAX_FRAME);
    if len > max as usize {
        return Err(FrameError::TooLarge { len: len as u64, max });
    }
    buf[..FRAME_HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(())
}

/// Encodes `msg` and writes it as one frame with a single `write_all`.
///
/// # Errors
/// As [`encode_frame`], plus I/O errors.
pub fn write_frame<W: Write, T: Serialize>(
    w: &mut W,
    msg: &T,
    buf: &mut Vec<u8>,
    max: u32,
) -> Result<(), FrameError> {
    encode_frame(msg, buf, max)?;
    w.write_all(buf)?;
    w.flush()?;
    Ok(())
}

/// Validates a length prefix against `max` and returns the payload length.
///
/// # Errors
/// [`FrameError::TooLarge`] when the announced length exceeds `max` or
/// [`HARD_MAX_FRAME`]; [`FrameError::Decode`] for an empty payload.
pub fn parse_header(header: [u8; FRAME_HEADER_LEN], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(header);
    let max = max.min(HARD_MAX_FRAME);
    if len > max {
        return Err(FrameError::TooLarge { len: u64::from(len), max });
    }
    if len == 0 {
        return Err(FrameError::Decode("empty frame".into()));
    }
    Ok(len as usize)
}

/// Decodes one payload, requiring that every byte is consumed.
///
/// # Errors
/// [`FrameError::Decode`] or [`FrameError::TrailingBytes`].
pub fn decode_payload<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, used) = decode_bounded::<T>(payload).map_err(|e| FrameError::Decode(e.to_string()))?;
    if used != payload.len() {
        return Err(FrameError::TrailingBytes { extra: payload.len() - used });
    }
    Ok(msg)
}

/// Reads exactly `want` bytes into `buf` (appending), growing it as data arrives so
/// that a forged length does not allocate up front. Returns the bytes read.
fn read_into<R: Read>(r: &mut R, buf: &mut Vec<u8>, want: usize) -> io::Result<usize> {
    let start = buf.len();
    r.take(want as u64).read_to_end(buf)?;
    Ok(buf.len() - start)
}

/// Reads the rest of a frame whose first `have` header bytes are already in
/// `header` and decodes it. `buf` is scratch space reused between calls.
///
/// # Errors
/// Any [`FrameError`]; a close part-way is [`FrameError::Truncated`].
pub fn read_frame_after<R: Read, T: DeserializeOwned>(
    r: &mut R,
    mut header: [u8; FRAME_HEADER_LEN],
    have: usize,
    max: u32,
    buf: &mut Vec<u8>,
) -> Result<T, FrameError> {
    let mut got = have;
    while got < FRAME_HEADER_LEN {
        match r.read(&mut header[got..]) {
            Ok(0) => return Err(FrameError::Truncated { got, expected: FRAME_HEADER_LEN }),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = parse_header(header, max)?;
    buf.clear();
    let n = read_into(r, buf, len)?;
    if n < len {
        return Err(FrameError::Truncated { got: FRAME_HEADER_LEN + n, expected: FRAME_HEADER_LEN + len });
    }
    decode_payload(buf)
}

/// Reads and decodes one frame. Returns `Ok(None)` on a clean end of stream
/// between frames.
///
/// # Errors
/// Any [`FrameError`]; a close part-way is [`FrameError::Truncated`].
pub fn read_frame<R: Read, T: DeserializeOwned>(
    r: &mut R,
    max: u32,
    buf: &mut Vec<u8>,
) -> Result<Option<T>, FrameError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    loop {
        match r.read(&mut header) {
            Ok(0) => return Ok(None),
            Ok(n) => return read_frame_after(r, header, n, max, buf).map(Some),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads the variant index and protocol version at the start of a payload that
/// failed to decode as a whole. A handshake from a client of another version may
/// not decode, but its first two fields (`Request::Hello` = variant 0, then
/// `protocol`) are frozen, so the broker can still answer "incompatible".
pub fn peek_hello_version(payload: &[u8]) -> Option<u32> {
    let ((tag, protocol), _) = decode_limited::<(u32, u32), { 2 * CLAIM_PER_BYTE }>(payload).ok()?;
    (tag == 0).then_some(protocol)
}
