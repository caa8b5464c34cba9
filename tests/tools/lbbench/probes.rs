//! The machine's own figures, measured around the scenarios so that a run can be
//! read against them: the round trip of a small frame between two processes, the
//! disk's `fdatasync`, and a `Ping` through the broker.

use std::io::{BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use litebroker_tests::{wait_until, TestDir};

use crate::scenario::SyncMode;
use crate::stats::percentile;

/// Echoes length-prefixed frames back until the peer leaves (`lbbench echo`).
pub fn echo(socket: &Path) -> Result<()> {
    let listener = UnixListener::bind(socket).context("bind")?;
    let (stream, _) = listener.accept()?;
    std::fs::remove_file(socket).ok();
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    let mut buf = Vec::new();
    loop {
        let mut header = [0u8; 4];
        if r.read_exact(&mut header).is_err() {
            return Ok(());
        }
        let len = u32::from_le_bytes(header) as usize;
        buf.clear();
        buf.extend_from_slice(&header);
        buf.resize(4 + len, 0);
        r.read_exact(&mut buf[4..])?;
        w.write_all(&buf)?;
    }
}

/// p50 and p99 of a small-frame ping-pong with another process, in µs.
pub fn socket_rtt(dir: &Path, dur: Duration) -> Result<(f64, f64)> {
    let socket = dir.join("rtt.sock");
    std::fs::remove_file(&socket).ok();
    let mut child = Command::new(std::env::current_exe()?)
        .arg("echo")
        .arg("--socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .spawn()?;
    let (mut connected, mut refused) = (None, None);
    wait_until(Duration::from_secs(10), || match UnixStream::connect(&socket) {
        Ok(s) => {
            connected = Some(s);
            true
        }
        Err(e) => {
            refused = Some(e);
            false
        }
    });
    let Some(stream) = connected else {
        child.kill().ok();
        child.wait().ok();
        let e = refused.map_or_else(|| anyhow::anyhow!("no answer"), anyhow::Error::from);
        return Err(e.context("connect to the echo process"));
    };
    let mut r = BufReader::new(stream.try_clone()?);
    let mut w = stream;
    // A frame about the size of a small request: 4-byte length, 24-byte payload.
    let mut frame = vec![0u8; 28];
    frame[..4].copy_from_slice(&24u32.to_le_bytes());
    let mut back = vec![0u8; 28];
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < dur || n < 2000 {
        let t0 = Instant::now();
        w.write_all(&frame)?;
        r.read_exact(&mut back)?;
        if n >= 1000 {
            lat.push(t0.elapsed().as_nanos() as u64);
        }
        n += 1;
    }
    drop(w);
    drop(r);
    let _ = child.wait();
    lat.sort_unstable();
    Ok((percentile(&lat, 50.0) as f64 / 1000.0, percentile(&lat, 99.0) as f64 / 1000.0))
}

/// p50 of `fdatasync` after a 4 KiB append, µs: the disk's state, since the
/// FULL figures depend on it.
pub fn fsync_probe(dir: &Path) -> Result<f64> {
    use std::os::unix::io::AsRawFd;
    let path = dir.join("fsync-probe");
    let mut f = std::fs::File::create(&path)?;
    let block = [0x5au8; 4096];
    let mut lat = Vec::new();
    for _ in 0..100 {
        f.write_all(&block)?;
        let t0 = Instant::now();
        // SAFETY: fdatasync on a file descriptor we own.
        if unsafe { libc::fdatasync(f.as_raw_fd()) } != 0 {
            return Err(std::io::Error::last_os_error()).context("fdatasync");
        }
        lat.push(t0.elapsed().as_nanos() as u64);
    }
    drop(f);
    std::fs::remove_file(&path).ok();
    lat.sort_unstable();
    Ok(percentile(&lat, 50.0) as f64 / 1000.0)
}

/// p50 of a `Ping` round trip through the broker, µs: the socket round trip
/// plus the broker's own frame handling, without the writer.
pub fn broker_ping(work: &Path, dur: Duration) -> Result<f64> {
    let dir = TestDir::new_in(work);
    let db = dir.db();
    std::fs::create_dir_all(db.parent().context("the database's folder")?)?;
    let mut b = crate::broker::start(&db, SyncMode::Normal, &[])?;
    let mut lat = Vec::new();
    let start = Instant::now();
    let mut n = 0usize;
    while start.elapsed() < dur || n < 2000 {
        let took = b.client.ping().context("ping")?;
        if n >= 1000 {
            lat.push(took.as_nanos() as u64);
        }
        n += 1;
    }
    b.stop()?;
    lat.sort_unstable();
    Ok(percentile(&lat, 50.0) as f64 / 1000.0)
}
