//! Hostile bytes on the broker's socket: garbage, truncated and stalled frames,
//! forged lengths, malformed frames, foreign protocol versions, connection churn.
//! Each test runs a well-behaved client (the witness) next to the attack and ends
//! by checking that it saw zero errors, that the broker still runs within a memory
//! bound, and that the database is intact.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use litebroker_client::{Client, ConnectOptions, Reader};
use litebroker_protocol::{
    ErrorKind, Hello, Request, Response, Statement, Value, WriteOptions, DEFAULT_MAX_FRAME, HARD_MAX_FRAME,
    PROTOCOL_VERSION,
};
use litebroker_tests::*;

/// The broker's RSS must stay under this whatever the attack (a debug build idles
/// at about 10 MiB here). The forged lengths below claim up to 4 GiB.
const RSS_BOUND_KIB: u64 = 64 * 1024;

/// The io timeout the brokers of these tests run with, so stalls resolve quickly.
const IO_TIMEOUT: Duration = Duration::from_secs(1);

// ----- the well-behaved client -----------------------------------------------------

#[derive(Debug, Default)]
struct WitnessReport {
    writes: u64,
    reads: u64,
    errors: Vec<String>,
    worst: Duration,
}

/// Writes a row, then reads the row count back through its own reader (it must
/// equal the writes acknowledged so far), over and over, sampling the broker's RSS.
fn witness(
    db: PathBuf,
    broker_pid: u32,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    max_rss: Arc<AtomicU64>,
) -> WitnessReport {
    let mut rep = WitnessReport::default();
    let opts = ConnectOptions::new(&db).client_name("witness").request_timeout(Duration::from_secs(10));
    let (mut client, reader) = match (Client::connect_with(&opts), Reader::open(&db)) {
        (Ok(c), Ok(r)) => (c, r),
        (c, r) => {
            rep.errors.push(format!("witness cannot start: {:?} {:?}", c.err(), r.err()));
            return rep;
        }
    };
    while !stop.load(Ordering::SeqCst) {
        let t = Instant::now();
        let n = rep.writes as i64 + 1;
        match client.execute("INSERT INTO witness (n) VALUES (?)", &[Value::Integer(n)]) {
            Ok(r) if r.changes == 1 => rep.writes += 1,
            Ok(r) => rep.errors.push(format!("write {n}: {r:?}")),
            Err(e) => rep.errors.push(format!("write {n}: {e}")),
        }
        // Other connections of a test may write rows of their own, with n < 0.
        match reader.query_value("SELECT count(*) FROM witness WHERE n > 0", &[]) {
            Ok(Some(Value::Integer(c))) if c == rep.writes as i64 => rep.reads += 1,
            other => rep.errors.push(format!("read after {} writes: {other:?}", rep.writes)),
        }
        rep.worst = rep.worst.max(t.elapsed());
        if rep.writes % 8 == 0 {
            max_rss.fetch_max(rss_kib(broker_pid).unwrap_or(0), Ordering::SeqCst);
        }
        progress.store(rep.writes, Ordering::SeqCst);
        if rep.errors.len() > 20 {
            break;
        }
        // Pacing, so the witness does not take a whole core from the broker.
        thread::sleep(Duration::from_millis(2));
    }
    rep
}

/// A broker with a witness running next to it.
struct Scenario {
    dir: TestDir,
    broker: Broker,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
    /// Largest broker RSS seen, KiB.
    max_rss: Arc<AtomicU64>,
    witness: Option<JoinHandle<WitnessReport>>,
    started: Instant,
}

impl Scenario {
    fn start() -> Scenario {
        let started = Instant::now();
        let dir = TestDir::new();
        let broker = Broker::start(&dir.db(), &["--io-timeout-secs", "1"]);
        assert_exit(&cli(&dir.db(), &["exec", "CREATE TABLE witness (n INTEGER PRIMARY KEY)"]), 0);
        let (stop, progress) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let max_rss = Arc::new(AtomicU64::new(0));
        let witness = {
            let (db, pid) = (dir.db(), broker.pid());
            let (stop, progress, max_rss) = (stop.clone(), progress.clone(), max_rss.clone());
            thread::spawn(move || witness(db, pid, stop, progress, max_rss))
        };
        let s = Scenario { dir, broker, stop, progress, max_rss, witness: Some(witness), started };
        assert!(
            wait_until(Duration::from_secs(10), || s.progress.load(Ordering::SeqCst) > 0),
            "the witness made no write; broker log:\n{}",
            s.broker.log()
        );
        s
    }

    fn connect(&self) -> RawConn {
        RawConn::connect(&self.broker.socket)
    }

    /// The broker's RSS now (KiB, 0 where unknown), recorded for the final check.
    fn rss(&self) -> u64 {
        let now = rss_kib(self.broker.pid()).unwrap_or(0);
        self.max_rss.fetch_max(now, Ordering::SeqCst);
        now
    }

    /// Stops the witness once it has kept working after the attack, and checks
    /// everything a hostile peer must not have disturbed.
    fn finish(mut self, test: &str) {
        let after_attack = self.progress.load(Ordering::SeqCst);
        let still_served =
            wait_until(Duration::from_secs(10), || self.progress.load(Ordering::SeqCst) >= after_attack + 10);
        self.stop.store(true, Ordering::SeqCst);
        let rep = self.witness.take().unwrap().join().expect("witness thread");
        self.rss();
        assert!(
            rep.errors.is_empty(),
            "the witness saw errors: {:#?}\nbroker log:\n{}",
            rep.errors,
            self.broker.log()
        );
        assert!(still_served, "the witness stopped progressing after the attack: {rep:?}");
        assert!(self.broker.running(), "the broker died; log:\n{}", self.broker.log());
        let max_rss = self.max_rss.load(Ordering::SeqCst);
        if cfg!(target_os = "linux") {
            assert!(max_rss > 0, "no RSS sample");
        }
        assert!(max_rss < RSS_BOUND_KIB, "broker RSS reached {max_rss} KiB (bound {RSS_BOUND_KIB} KiB)");
        let log = self.broker.log();
        assert!(!log.contains("panicked") && !log.contains("ERROR"), "{log}");
        assert_eq!(query_i64(&self.dir.db(), "SELECT count(*) FROM witness WHERE n > 0"), rep.writes as i64);
        assert_eq!(integrity(&self.dir.db()), "ok");
        eprintln!(
            "{test}: {:?}; witness {} writes + {} reads, 0 errors, worst round trip {:?}; broker max RSS {} KiB",
            self.started.elapsed(),
            rep.writes,
            rep.reads,
            rep.worst,
            max_rss
        );
    }
}

// ----- hand-made bytes ------------------------------------------------------------

/// Deterministic bytes, so a failure can be replayed from its seed.
fn garbage(seed: u64, len: usize) -> Vec<u8> {
    Rng::new(seed).bytes(len)
}

/// Varint (bincode `standard()`) of a u32-sized value: marker 252, then 4 bytes LE.
fn varint_u32(v: u32) -> Vec<u8> {
    [&[252u8][..], &v.to_le_bytes()].concat()
}

/// Waits until one line of the broker's log contains every one of `needles`.
#[track_caller]
fn assert_logged(b: &Broker, needles: &[&str]) {
    let found = wait_until(Duration::from_secs(10), || {
        b.log().lines().any(|line| needles.iter().all(|n| line.contains(n)))
    });
    assert!(found, "the broker logged no line with {needles:?}; its log:\n{}", b.log());
}

// ----- tests -----------------------------------------------------------------------

// Stalled leftovers of the garbage are dropped by the socket's receive timeout,
// which Windows pipes do not have.
#[cfg(unix)]
#[test]
fn random_garbage_before_and_after_the_handshake_is_refused_and_closed() {
    let s = Scenario::start();
    let t0 = Instant::now();
    // All connections attack at once; each must end closed by the broker with, at
    // most, typed error answers.
    let mut conns = Vec::new();
    let sizes = [1usize, 2, 3, 4, 5, 8, 64, 1000, 4096, 65_536, 300_000];
    for (i, &len) in sizes.iter().enumerate() {
        for after_hello in [false, true] {
            let c = s.connect();
            if after_hello {
                c.handshake("garbage-sender");
            }
            let seed = i as u64 * 2 + u64::from(after_hello);
            // The broker may close before it has read everything: a failed send is
            // part of the game.
            let _ = c.send_bytes(&garbage(seed, len));
            conns.push((format!("seed {seed}, {len} bytes, after hello: {after_hello}"), c));
        }
    }
    // A plausible length, then a payload that is no message: "expected a handshake".
    let plausible = s.connect();
    let _ = plausible.send_bytes(&raw_frame(&[&[0xEE][..], &garbage(99, 19)].concat()));

    for (what, c) in &conns {
        let closed = c.read_until_closed(t0);
        assert!(closed.answers.len() <= 8, "{what}: {closed:?}");
        for a in &closed.answers {
            let (kind, _) = answer_error(a);
            assert!(matches!(kind, ErrorKind::Protocol | ErrorKind::LimitExceeded), "{what}: {a:?}");
        }
    }
    let closed = plausible.read_until_closed(t0);
    assert_eq!(closed.answers.len(), 1, "{closed:?}");
    let (kind, msg) = answer_error(&closed.answers[0]);
    assert_eq!(kind, ErrorKind::Protocol);
    assert!(msg.contains("expected a handshake"), "{msg}");
    // Stalled leftovers end at the io timeout, not later.
    assert!(t0.elapsed() < IO_TIMEOUT * 5, "closing the garbage connections took {:?}", t0.elapsed());
    assert_logged(&s.broker, &["WARN", "disconnecting", "exceeds the maximum frame size"]);
    assert_logged(&s.broker, &["WARN", "disconnecting unidentified client: expected a handshake"]);
    s.finish("random garbage");
}

// Stalls are detected with the socket's receive timeout, which Windows pipes lack.
#[cfg(unix)]
#[test]
fn truncated_and_stalled_frames_are_dropped() {
    let s = Scenario::start();
    // Announces 100 bytes, sends 10.
    let partial = [&100u32.to_le_bytes()[..], &[1u8; 10]].concat();

    // Truncated, then the peer leaves.
    let c = s.connect();
    c.send_bytes(&partial).unwrap();
    drop(c);

    // Truncated, then the peer stalls with the connection open: before and after
    // its handshake.
    let t0 = Instant::now();
    let silent = s.connect();
    silent.send_bytes(&partial).unwrap();
    let named = s.connect();
    named.handshake("stalling-client");
    let t1 = Instant::now();
    named.send_bytes(&partial).unwrap();

    // A slow drip: one byte every 150 ms. Each byte arrives well within the io
    // timeout, but the frame as a whole does not.
    // A `RawConn` reads and writes through `&self`, so one connection is shared by
    // the dripping thread and this one, which waits for the close.
    let drip = Arc::new(s.connect());
    drip.handshake("dripping-client");
    let t2 = Instant::now();
    let drip_done = Arc::new(AtomicBool::new(false));
    let dripper = {
        let (drip, done) = (drip.clone(), drip_done.clone());
        thread::spawn(move || {
            let frame = frame_of(&Request::Execute {
                stmt: Statement::new("INSERT INTO witness (n) VALUES (-1)", vec![]),
                opts: WriteOptions::default(),
            });
            for b in frame {
                if done.load(Ordering::SeqCst) || drip.send_bytes(&[b]).is_err() {
                    return;
                }
                thread::sleep(Duration::from_millis(150));
            }
        })
    };

    for (what, c, since) in [("before the handshake", &silent, t0), ("after the handshake", &named, t1)] {
        let closed = c.read_until_closed(since);
        assert!(closed.answers.is_empty(), "{what}: {closed:?}");
        assert!(
            closed.after >= IO_TIMEOUT.mul_f64(0.9) && closed.after < IO_TIMEOUT * 4,
            "{what}: a stalled frame was dropped after {:?} (io timeout {IO_TIMEOUT:?})",
            closed.after
        );
    }
    let closed = drip.read_until_closed(t2);
    drip_done.store(true, Ordering::SeqCst);
    dripper.join().unwrap();
    assert!(closed.answers.is_empty(), "{closed:?}");
    assert!(
        closed.after < IO_TIMEOUT * 3,
        "a frame dripped a byte at a time held its connection for {:?} (io timeout {IO_TIMEOUT:?})",
        closed.after
    );
    assert_eq!(query_i64(&s.dir.db(), "SELECT count(*) FROM witness WHERE n = -1"), 0);

    assert_logged(
        &s.broker,
        &["unidentified client left: connection closed in the middle of a frame (14 of 104 bytes)"],
    );
    assert_logged(
        &s.broker,
        &["WARN", "disconnecting unidentified client: stalled in the middle of a frame"],
    );
    assert_logged(
        &s.broker,
        &["WARN", "disconnecting 'stalling-client'", "stalled in the middle of a frame"],
    );
    assert_logged(
        &s.broker,
        &["WARN", "disconnecting 'dripping-client'", "stalled in the middle of a frame"],
    );
    s.finish("truncated and stalled frames");
}

#[test]
fn forged_length_prefixes_get_limit_exceeded_and_a_close() {
    let s = Scenario::start();
    let t0 = Instant::now();
    let cases = [
        (u32::MAX, false),
        (HARD_MAX_FRAME + 1, false),
        (u32::MAX, true),
        (HARD_MAX_FRAME + 1, true),
        (DEFAULT_MAX_FRAME + 1, true),
    ];
    for (len, after_hello) in cases {
        let c = s.connect();
        if after_hello {
            c.handshake("forger");
        }
        c.send_bytes(&len.to_le_bytes()).unwrap();
        let closed = c.read_until_closed(t0);
        assert_eq!(closed.answers.len(), 1, "len {len}: {closed:?}");
        let (kind, msg) = answer_error(&closed.answers[0]);
        assert_eq!(kind, ErrorKind::LimitExceeded, "{msg}");
        assert!(msg.contains(&format!("frame of {len} bytes")) && msg.contains("--max-frame-bytes"), "{msg}");
        let rss = s.rss();
        assert!(rss < RSS_BOUND_KIB, "RSS after a {len}-byte prefix: {rss} KiB");
    }
    // Refused at once: nothing waits for the 4 GiB to arrive.
    assert!(t0.elapsed() < IO_TIMEOUT, "refusing forged lengths took {:?}", t0.elapsed());

    // The largest accepted length, then only 1 KiB and a stall: the broker must not
    // have reserved 16 MiB for it, and drops it at the io timeout (Unix only: the
    // stall is detected with the socket's receive timeout).
    if cfg!(unix) {
        let c = s.connect();
        c.handshake("forger");
        let rss_before = s.rss();
        c.send_bytes(&[&DEFAULT_MAX_FRAME.to_le_bytes()[..], &garbage(3, 1024)].concat()).unwrap();
        let closed = c.read_until_closed(Instant::now());
        assert!(closed.answers.is_empty() && closed.after >= IO_TIMEOUT.mul_f64(0.9), "{closed:?}");
        let grew = s.rss().saturating_sub(rss_before);
        assert!(grew < 4 * 1024, "a 16 MiB announcement with 1 KiB sent grew the broker by {grew} KiB");
    }

    // A full-size frame of garbage is read, refused, and the connection goes on.
    let c = s.connect();
    c.handshake("forger");
    c.send_bytes(&raw_frame(&garbage(4, DEFAULT_MAX_FRAME as usize))).unwrap();
    let (kind, msg) = answer_error(&c.recv());
    assert_eq!(kind, ErrorKind::Protocol, "{msg}");
    assert_eq!(c.round_trip(&Request::Ping), Response::Pong);
    let rss = s.rss();
    assert!(rss < RSS_BOUND_KIB, "RSS {rss} KiB while holding a connection that sent a 16 MiB frame");
    drop(c);
    assert_logged(
        &s.broker,
        &["WARN", "disconnecting unidentified client: frame of 4294967295 bytes exceeds"],
    );
    assert_logged(&s.broker, &["WARN", "disconnecting 'forger'", "frame of 67108865 bytes exceeds"]);
    s.finish("forged length prefixes");
}

#[test]
fn malformed_frames_after_the_handshake_get_protocol_errors_and_the_connection_stays_usable() {
    let s = Scenario::start();
    let c = s.connect();
    c.handshake("sloppy-client");
    let claim = 200 * 1024 * 1024;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("unknown request variant", vec![0xEE]),
        ("trailing bytes after a Ping", vec![1, 0, 0]),
        ("Execute whose SQL is invalid UTF-8", vec![2, 3, 0xC3, 0x28, 0x61, 0, 0, 0, 0]),
        ("Execute cut short", vec![2, 10, b'S']),
        ("unknown Value variant", vec![2, 1, b'?', 1, 9, 0, 0, 0]),
        ("SQL claiming 200 MiB", [vec![2], varint_u32(claim), b"INSERT".to_vec()].concat()),
        ("blob claiming 200 MiB", [vec![2, 0, 1, 4], varint_u32(claim), vec![1, 2, 3]].concat()),
        ("batch claiming 200 M statements", [vec![3], varint_u32(claim), vec![0, 0]].concat()),
        ("garbage", garbage(7, 500)),
    ];
    for (what, payload) in &cases {
        c.send_bytes(&raw_frame(payload)).unwrap();
        let (kind, msg) = answer_error(&c.recv());
        assert_eq!(kind, ErrorKind::Protocol, "{what}: {msg}");
        assert!(msg.contains("malformed frame"), "{what}: {msg}");
        assert_eq!(c.round_trip(&Request::Ping), Response::Pong, "after {what}");
    }
    let (kind, msg) = answer_error(&c.round_trip(&Request::Hello(hello("again"))));
    assert_eq!(kind, ErrorKind::Protocol);
    assert!(msg.contains("handshake already done"), "{msg}");
    // And the connection still writes.
    let r = c.round_trip(&Request::Execute {
        stmt: Statement::new("INSERT INTO witness (n) VALUES (?)", vec![Value::Integer(-7)]),
        opts: WriteOptions::default(),
    });
    assert!(matches!(&r, Response::Executed(e) if e.changes == 1), "{r:?}");
    assert_eq!(query_i64(&s.dir.db(), "SELECT count(*) FROM witness WHERE n = -7"), 1);
    drop(c);
    s.finish("malformed frames");
}

#[test]
fn a_foreign_protocol_version_gets_incompatible_with_advice() {
    let s = Scenario::start();
    let check = |c: &RawConn, version: u32| {
        let closed = c.read_until_closed(Instant::now());
        assert_eq!(closed.answers.len(), 1, "{closed:?}");
        let (kind, msg) = answer_error(&closed.answers[0]);
        assert_eq!(kind, ErrorKind::Incompatible, "{msg}");
        assert!(msg.contains(&format!("this client speaks protocol {version}")), "{msg}");
        assert!(msg.contains(&format!("speaks protocol {PROTOCOL_VERSION}")), "{msg}");
        // It must tell the user what to do, not only what went wrong.
        assert!(msg.contains("use a litebroker client and broker of the same version"), "{msg}");
        assert!(msg.contains("restart the broker after upgrading"), "{msg}");
    };
    // A newer client whose Hello still decodes.
    let c = s.connect();
    c.send_bytes(&frame_of(&Request::Hello(Hello { protocol: 99, ..hello("from-the-future") }))).unwrap();
    check(&c, 99);
    // An older client whose Hello body does not decode as today's Hello: variant 0,
    // protocol 2, then fields this version does not know.
    let c = s.connect();
    c.send_bytes(&raw_frame(&[0, 2, 0xFF, 0xFE, 0xFD, 9, 9, 9, 9])).unwrap();
    check(&c, 2);
    // Today's version with a broken body is a protocol error, not "incompatible".
    let c = s.connect();
    c.send_bytes(&raw_frame(&[0, PROTOCOL_VERSION as u8, 0xFF, 0xFE])).unwrap();
    let closed = c.read_until_closed(Instant::now());
    assert_eq!(closed.answers.len(), 1, "{closed:?}");
    let (kind, msg) = answer_error(&closed.answers[0]);
    assert_eq!(kind, ErrorKind::Protocol, "{msg}");
    assert!(msg.contains("expected a handshake"), "{msg}");
    // A request before any handshake.
    let c = s.connect();
    c.send_bytes(&frame_of(&Request::Ping)).unwrap();
    let closed = c.read_until_closed(Instant::now());
    assert_eq!(closed.answers.len(), 1, "{closed:?}");
    let (kind, msg) = answer_error(&closed.answers[0]);
    assert_eq!(kind, ErrorKind::Protocol);
    assert!(msg.contains("expected a handshake (Hello) as the first frame, got ping"), "{msg}");

    assert_logged(&s.broker, &["WARN", "refused client 'from-the-future'", "it speaks protocol 99"]);
    assert_logged(&s.broker, &["WARN", "refused an unidentified client: it speaks protocol 2,"]);
    assert_logged(
        &s.broker,
        &[
            "WARN",
            "disconnecting unidentified client: expected a handshake (Hello) as the first frame, got ping",
        ],
    );
    s.finish("foreign protocol versions");
}

#[test]
fn connection_churn_leaves_no_threads_or_descriptors_behind() {
    let s = Scenario::start();
    let pid = s.broker.pid();
    let mut status_client = Client::connect(s.dir.db()).unwrap();
    let clients_now = |c: &mut Client| c.status().unwrap().clients;
    // The CLI that created the table may still be on its way out.
    assert!(
        wait_until(Duration::from_secs(10), || clients_now(&mut status_client) == 2),
        "expected the witness and this client only: {:?}",
        status_client.connections().unwrap()
    );
    let (threads0, fds0) = (proc_status_field(pid, "Threads"), fd_count(pid));

    for i in 0..600 {
        let c = s.connect();
        match i % 4 {
            0 => {}
            1 => {
                c.handshake("churn");
            }
            2 => {
                let _ = c.send_bytes(&[7, 0]);
            }
            _ => {
                c.handshake("churn");
                assert_eq!(c.round_trip(&Request::Ping), Response::Pong);
            }
        }
    }
    // Many at once, all served, then all gone.
    let held: Vec<RawConn> = (0..100).map(|_| s.connect()).collect();
    for c in &held {
        c.handshake("held");
    }
    // The churn's last connections may still be on their way out.
    assert!(
        wait_until(Duration::from_secs(10), || clients_now(&mut status_client) == 102),
        "expected 100 held clients, the witness and this client: {} listed",
        clients_now(&mut status_client)
    );
    drop(held);

    assert!(
        wait_until(Duration::from_secs(10), || clients_now(&mut status_client) == 2),
        "clients still listed: {:?}",
        status_client.connections().unwrap()
    );
    if let (Some(threads0), Some(fds0)) = (threads0, fds0) {
        let settled = wait_until(Duration::from_secs(10), || {
            proc_status_field(pid, "Threads") <= Some(threads0) && fd_count(pid) <= Some(fds0)
        });
        assert!(
            settled,
            "threads {threads0} -> {:?}, descriptors {fds0} -> {:?}",
            proc_status_field(pid, "Threads"),
            fd_count(pid)
        );
    }
    drop(status_client);
    s.finish("connection churn");
}
