//! Codec tests: every message survives a round trip, and every way a peer can send
//! broken bytes (EOF, truncation, garbage, forged lengths) ends in the documented
//! `FrameError`, without allocating what a forged length claims.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read};

use litebroker_protocol::frame::{parse_header, peek_hello_version};
use litebroker_protocol::*;

// ----- allocation probe ------------------------------------------------------------

/// Records the largest single allocation made by a thread while it is tracking.
/// Per thread, because the test harness runs other tests in parallel threads of the
/// same process; `const` thread-locals never allocate, so the allocator can use them.
struct Probe;

thread_local! {
    static TRACKING: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: allocations during thread teardown must not panic.
    let _ = TRACKING.try_with(|t| {
        if t.get() {
            let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
        }
    });
}

unsafe impl GlobalAlloc for Probe {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        System.alloc_zeroed(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Probe = Probe;

/// Runs `f` and returns its result with the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    TRACKING.with(|t| t.set(true));
    let r = f();
    TRACKING.with(|t| t.set(false));
    (r, LARGEST.with(Cell::get))
}

/// What decoding a forged frame may allocate at most. serde preallocates a
/// sequence of unknown honesty up to 1 MiB (`size_hint::cautious`); anything near
/// what the forged lengths below claim (hundreds of MiB) fails the tests.
const SMALL_ALLOCATION: usize = 1024 * 1024;

#[test]
fn probe_sees_allocations() {
    // Guards the probe itself: a probe that records nothing would pass every
    // allocation test below.
    let (v, largest) = largest_allocation(|| vec![1u8; 3 * SMALL_ALLOCATION]);
    assert_eq!(v.len(), 3 * SMALL_ALLOCATION);
    assert!(largest >= 3 * SMALL_ALLOCATION, "probe saw {largest} bytes");
}

// ----- samples ---------------------------------------------------------------------

fn hello() -> Hello {
    Hello {
        protocol: PROTOCOL_VERSION,
        minor: PROTOCOL_MINOR,
        client_name: "app-instance-1".into(),
        pid: 4242,
        expected_schema: Some(7),
    }
}

fn all_values() -> Vec<Value> {
    vec![
        Value::Null,
        Value::Integer(0),
        Value::Integer(i64::MIN),
        Value::Integer(i64::MAX),
        Value::Integer(-1),
        Value::Real(4.5),
        Value::Real(-0.0),
        Value::Real(f64::INFINITY),
        Value::Real(f64::MIN_POSITIVE),
        Value::Text(String::new()),
        Value::Text("ünïcode ✓ \0 nul".into()),
        Value::Blob(Vec::new()),
        Value::Blob((0..=255).collect()),
    ]
}

fn all_requests() -> Vec<Request> {
    let stmt = Statement::new("INSERT INTO t (a, b) VALUES (?, ?)", vec![Value::Integer(1), Value::Null]);
    vec![
        Request::Hello(hello()),
        Request::Hello(Hello { expected_schema: None, client_name: String::new(), ..hello() }),
        Request::Ping,
        Request::Execute { stmt: stmt.clone(), opts: WriteOptions::default() },
        Request::Execute {
            stmt: Statement::new("SELECT ?", all_values()),
            opts: WriteOptions { timeout_ms: u32::MAX, request_id: Some([0xAB; 16]), idempotent: true },
        },
        Request::Batch { statements: vec![stmt.clone(), stmt], opts: WriteOptions::default() },
        Request::Batch { statements: Vec::new(), opts: WriteOptions { timeout_ms: 1, ..Default::default() } },
        Request::Status,
        Request::Shutdown,
        Request::BeginSession { timeout_ms: 10_000 },
        Request::Commit,
        Request::Rollback,
        Request::Connections,
        Request::Stats,
        Request::Verify,
        Request::Checkpoint { mode: CheckpointMode::Passive },
        Request::Checkpoint { mode: CheckpointMode::Full },
        Request::Checkpoint { mode: CheckpointMode::Restart },
        Request::Checkpoint { mode: CheckpointMode::Truncate },
        Request::Backup { label: "before bulk delete".into(), keep: 0 },
        Request::Restore {
            path: "/home/u/app/data/backups/app_20261128_120000_manual.db".into(),
            timeout_ms: 0,
        },
        Request::Migrate { migrations: Vec::new(), timeout_ms: 0 },
        Request::Health,
        Request::Watch {
            tables: vec!["skus".into(), "ünïcode".into()],
            since: Some(Cursor { epoch: u64::MAX, seq: 0 }),
        },
        Request::Watch { tables: Vec::new(), since: None },
        Request::FeedStats,
        Request::Metrics,
        Request::ManyBegin { sql: "INSERT INTO t VALUES (?1, ?2)".into(), opts: WriteOptions::default() },
        Request::ManyRows { rows: Vec::new() },
        Request::ManyRows {
            rows: vec![
                vec![Value::Integer(i64::MIN), Value::Text("é\n\"".into())],
                vec![Value::Blob(vec![0; 3])],
            ],
        },
        Request::ManyEnd { rows: 0, commit: false },
        Request::ManyEnd { rows: u64::MAX, commit: true },
        Request::BatchBegin { opts: WriteOptions::default() },
        Request::BatchPart { statements: Vec::new() },
        Request::BatchPart {
            statements: vec![Statement::new("INSERT INTO t VALUES (?); SELECT 1", vec![Value::Null])],
        },
        Request::Migrate {
            migrations: vec![
                Migration { version: 1, name: "init".into(), sql: "CREATE TABLE skus (sku TEXT);".into() },
                Migration { version: u32::MAX, name: String::new(), sql: "BEGIN; COMMIT;".into() },
            ],
            timeout_ms: u32::MAX,
        },
    ]
}

fn exec_result() -> ExecResult {
    ExecResult {
        changes: 2,
        last_insert_rowid: -9,
        columns: vec!["id".into(), "sku".into()],
        rows: vec![vec![Value::Integer(1), Value::Text("A1".into())], vec![Value::Integer(2), Value::Null]],
    }
}

fn all_responses() -> Vec<Response> {
    let mut v = vec![
        Response::Hello(HelloAck {
            protocol: PROTOCOL_VERSION,
            minor: PROTOCOL_MINOR,
            broker_version: "0.1.0".into(),
            db_path: "/srv/app/data/app.db".into(),
            socket: "/run/user/1000/litebroker/app-0123456789abcdef.v1.sock".into(),
            pid: 77,
            client_id: u64::MAX,
            schema_version: 3,
        }),
        Response::Error(ErrorInfo {
            kind: ErrorKind::Constraint,
            message: "UNIQUE constraint failed: skus.sku".into(),
            sqlite: Some(SqliteCode { primary: 19, extended: 2067 }),
        }),
        Response::Pong,
        Response::Executed(ExecResult::default()),
        Response::Executed(exec_result()),
        Response::Batch(vec![exec_result(), ExecResult::default()]),
        Response::Batch(Vec::new()),
        Response::Status(BrokerStatus {
            pid: 1,
            socket: "s".into(),
            db_path: "d".into(),
            protocol: PROTOCOL_VERSION,
            minor: PROTOCOL_MINOR,
            broker_version: "0.1.0".into(),
            uptime_ms: 123_456,
            clients: 3,
            requests: 1 << 40,
            commits: 99,
            queue_depth: 0,
            synchronous: "full".into(),
            writer_holder: Some("client 2 (app, pid 9) for 1.5 s".into()),
            request_ids: true,
            group_commits: 90,
            group_requests: 1 << 33,
            max_group: 512,
            queue_waits: u64::MAX,
            queue_wait_us: 0,
            max_queue_wait_us: 1,
            commit_us: 123_456_789,
            max_commit_us: 250,
        }),
        Response::ShuttingDown,
        Response::SessionStarted { waited_ms: 0 },
        Response::SessionLeased { waited_ms: u64::MAX, lease_ms: 30_000 },
        Response::SessionEnded { committed: true },
        Response::SessionEnded { committed: false },
        Response::Connections(vec![ClientInfo {
            id: 1,
            name: "lbtool".into(),
            pid: 3,
            connected_unix_ms: 1_700_000_000_000,
            requests: 5,
            holds_writer: true,
        }]),
        Response::Connections(Vec::new()),
        Response::Stats(Box::new(DbStats {
            db_path: "/srv/app/data/app.db".into(),
            schema_version: 3,
            tables: 13,
            indices: 34,
            db_bytes: 12_450_000,
            wal_bytes: 4_152,
            page_size: 4096,
            page_count: 3040,
            free_pages: 2,
            journal_mode: "wal".into(),
            row_counts: vec![
                TableCount { name: "skus".into(), rows: 1_250 },
                TableCount { name: "sales".into(), rows: 123_456 },
            ],
            warnings: vec!["the WAL is 120.0 MB".into()],
            broker: None,
            writer: Some(WriterFigures {
                committed_requests: 5,
                max_requests_per_commit: 3,
                lock_waits: 0,
                lock_retries: 0,
                last_checkpoint: Some(CheckpointReport {
                    mode: CheckpointMode::Truncate,
                    blocked: false,
                    wal_frames: -1,
                    checkpointed_frames: -1,
                    wal_bytes_after: 0,
                    at_unix_ms: 1,
                }),
                wal_warn_bytes: u64::MAX,
                request_ids_recorded: 7,
                deduplicated: 1,
            }),
        })),
        Response::Verify(VerifyReport {
            path: "/srv/app/data/app.db".into(),
            integrity_problems: vec![
                "*** in database main ***".into(),
                "Page 7: btreeInitPage() returns error code 11".into(),
            ],
            foreign_key_problems: Vec::new(),
        }),
        Response::Checkpoint(CheckpointReport {
            mode: CheckpointMode::Restart,
            blocked: true,
            wal_frames: 1000,
            checkpointed_frames: 10,
            wal_bytes_after: 4_000_000,
            at_unix_ms: u64::MAX,
        }),
        Response::Progress { done: 0, total: 0 },
        Response::Progress { done: u64::MAX, total: u64::MAX },
        Response::Backup(BackupReport { path: "b".into(), bytes: 1, duration_ms: 2, removed: Vec::new() }),
        Response::Restored(RestoreReport {
            restored_from: "r".into(),
            safety_backup: "s".into(),
            pages: 3,
            duration_ms: 4,
        }),
        Response::Migrated(MigrationReport { from_version: 0, to_version: 0, applied: Vec::new() }),
        Response::Migrated(MigrationReport { from_version: 3, to_version: 7, applied: vec![4, 5, 7] }),
        Response::Health(HealthReport { exactly_once: true, exactly_once_off: None, writes_stopped: None }),
        Response::Health(HealthReport {
            exactly_once: false,
            exactly_once_off: Some("disabled".into()),
            writes_stopped: Some("the -wal file was deleted".into()),
        }),
        Response::Watching { cursor: Cursor { epoch: 1, seq: u64::MAX } },
        Response::Change(ChangeEvent {
            cursor: Cursor { epoch: 1, seq: 2 },
            committed_unix_us: u64::MAX,
            tables: vec![TableChange {
                table: "skus".into(),
                inserted: 3,
                updated: 0,
                deleted: u64::MAX,
                rowids: vec![i64::MIN, 0, i64::MAX],
                rowids_capped: true,
            }],
            resync: None,
        }),
        Response::Change(ChangeEvent {
            cursor: Cursor { epoch: 1, seq: 3 },
            committed_unix_us: 0,
            tables: Vec::new(),
            resync: Some(ResyncReason::ExternalWrite),
        }),
        Response::FeedStats(FeedFigures {
            epoch: 1,
            head: Cursor { epoch: 1, seq: 0 },
            subscribers: 0,
            ring_events: 0,
            ring_bytes: 0,
            ring_max_events: 10_000,
            ring_max_bytes: 16 << 20,
            oldest: None,
            published: 0,
            resyncs: 0,
            dropped_backlogs: 0,
        }),
        Response::Metrics(MetricsReport { at_unix_ms: 0, families: Vec::new() }),
        Response::Metrics(MetricsReport {
            at_unix_ms: 1_700_000_000_000,
            families: vec![
                MetricFamily {
                    name: "litebroker_requests_total".into(),
                    help: "Requests answered.".into(),
                    kind: MetricKind::Counter,
                    series: vec![MetricSeries {
                        labels: vec![("kind".into(), "execute".into()), ("outcome".into(), "ok".into())],
                        value: MetricValue::Number(1e15),
                    }],
                },
                MetricFamily {
                    name: "litebroker_write_latency_seconds".into(),
                    help: "ünïcode ✓ \n".into(),
                    kind: MetricKind::Histogram,
                    series: vec![MetricSeries {
                        labels: Vec::new(),
                        value: MetricValue::Histogram(HistogramValue {
                            bounds: vec![1e-5, 0.5, f64::MAX],
                            counts: vec![0, u64::MAX, 1, 2],
                            sum: -0.0,
                        }),
                    }],
                },
            ],
        }),
        Response::ExecutedMany(ManySummary::default()),
        Response::ExecutedMany(ManySummary {
            changes: 1 << 40,
            last_insert_rowid: i64::MIN,
            rows: 1_000_000,
        }),
        Response::ManyFailed {
            row: 500_000,
            error: ErrorInfo::new(
                ErrorKind::Constraint,
                "row 500000 (counting from 0): UNIQUE constraint failed",
            ),
        },
    ];
    v.extend(all_error_kinds().into_iter().map(|k| Response::error(k, format!("a {k} failure"))));
    v
}

/// Every `ErrorKind`. `ErrorKind` is `#[non_exhaustive]`, so no match here can
/// prove the list complete; `error_kind_list_is_complete` does it on the wire.
fn all_error_kinds() -> Vec<ErrorKind> {
    vec![
        ErrorKind::Sql,
        ErrorKind::Constraint,
        ErrorKind::Locked,
        ErrorKind::Timeout,
        ErrorKind::ShuttingDown,
        ErrorKind::Protocol,
        ErrorKind::Incompatible,
        ErrorKind::LimitExceeded,
        ErrorKind::NotAllowed,
        ErrorKind::LeaseExpired,
        ErrorKind::SessionState,
        ErrorKind::DiskFull,
        ErrorKind::Internal,
        ErrorKind::VerificationFailed,
        ErrorKind::SchemaMismatch,
        ErrorKind::WritesStopped,
    ]
}

fn frame_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf, HARD_MAX_FRAME).expect("encode");
    buf
}

/// A frame around arbitrary payload bytes.
fn raw_frame(payload: &[u8]) -> Vec<u8> {
    let mut f = (payload.len() as u32).to_le_bytes().to_vec();
    f.extend_from_slice(payload);
    f
}

fn read_one<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<Option<T>, FrameError> {
    let mut buf = Vec::new();
    read_frame(&mut io::Cursor::new(bytes), DEFAULT_MAX_FRAME, &mut buf)
}

// ----- round trips -----------------------------------------------------------------

#[test]
fn every_request_round_trips() {
    for req in all_requests() {
        let bytes = frame_of(&req);
        let back: Request = read_one(&bytes).expect("read").expect("a frame");
        assert_eq!(back, req);
    }
}

#[test]
fn every_response_round_trips() {
    for resp in all_responses() {
        let bytes = frame_of(&resp);
        let back: Response = read_one(&bytes).expect("read").expect("a frame");
        assert_eq!(back, resp);
    }
}

#[test]
fn every_value_round_trips_bit_exactly() {
    for v in all_values() {
        let back: Value = read_one(&frame_of(&v)).unwrap().unwrap();
        match (&v, &back) {
            // -0.0 == 0.0 in f64 comparison; the wire must keep the sign bit.
            (Value::Real(a), Value::Real(b)) => assert_eq!(a.to_bits(), b.to_bits()),
            _ => assert_eq!(back, v),
        }
    }
    // NaN is never equal to itself; its bits must survive anyway.
    let back: Value = read_one(&frame_of(&Value::Real(f64::NAN))).unwrap().unwrap();
    assert!(matches!(back, Value::Real(x) if x.to_bits() == f64::NAN.to_bits()), "{back:?}");
}

#[test]
fn every_error_kind_round_trips() {
    let kinds = all_error_kinds();
    for &kind in &kinds {
        let resp = Response::error(kind, kind.as_str());
        let back: Response = read_one(&frame_of(&resp)).unwrap().unwrap();
        assert_eq!(back, resp);
    }
    let mut names: Vec<_> = kinds.iter().map(|k| k.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), kinds.len(), "ErrorKind names must be distinct");
}

/// Encodes `Response::Error` with an `ErrorKind` variant index (and no message).
fn error_with_kind_index(index: u8) -> Vec<u8> {
    // Response::Error = 1, kind, message "" (length 0), sqlite None (0).
    vec![1, index, 0, 0]
}

#[test]
fn error_kind_list_is_complete() {
    let n = all_error_kinds().len();
    for i in 0..n {
        let r = decode_payload::<Response>(&error_with_kind_index(i as u8));
        assert!(r.is_ok(), "ErrorKind index {i}: {r:?}");
    }
    // When this starts decoding, a variant was appended: add it to all_error_kinds().
    let r = decode_payload::<Response>(&error_with_kind_index(n as u8));
    assert!(matches!(r, Err(FrameError::Decode(_))), "ErrorKind has a variant past index {}: {r:?}", n - 1);
}

#[test]
fn frames_follow_each_other_and_eof_between_frames_is_none() {
    let mut stream = Vec::new();
    for req in all_requests() {
        stream.extend(frame_of(&req));
    }
    let mut cur = io::Cursor::new(stream);
    let mut buf = Vec::new();
    for req in all_requests() {
        let got: Request = read_frame(&mut cur, DEFAULT_MAX_FRAME, &mut buf).unwrap().unwrap();
        assert_eq!(got, req);
    }
    let end: Option<Request> = read_frame(&mut cur, DEFAULT_MAX_FRAME, &mut buf).unwrap();
    assert!(end.is_none());
    // And an empty stream is a peer that left before sending anything.
    assert!(read_one::<Request>(&[]).unwrap().is_none());
}

#[test]
fn write_frame_writes_exactly_the_encoded_frame() {
    let (mut out, mut buf) = (Vec::new(), Vec::new());
    write_frame(&mut out, &Request::Ping, &mut buf, DEFAULT_MAX_FRAME).unwrap();
    assert_eq!(out, frame_of(&Request::Ping));
    assert_eq!(&out[..FRAME_HEADER_LEN], &((out.len() - FRAME_HEADER_LEN) as u32).to_le_bytes());
}

// ----- broken input ----------------------------------------------------------------

#[test]
fn eof_inside_the_header_is_truncated() {
    let frame = frame_of(&Request::Ping);
    for cut in 1..FRAME_HEADER_LEN {
        match read_one::<Request>(&frame[..cut]) {
            Err(e @ FrameError::Truncated { got, expected }) => {
                assert_eq!((got, expected), (cut, FRAME_HEADER_LEN));
                assert!(e.is_fatal());
            }
            other => panic!("cut at {cut}: {other:?}"),
        }
    }
}

#[test]
fn eof_inside_the_payload_is_truncated() {
    let frame = frame_of(&Request::Hello(hello()));
    for cut in FRAME_HEADER_LEN..frame.len() {
        match read_one::<Request>(&frame[..cut]) {
            Err(FrameError::Truncated { got, expected }) => assert_eq!((got, expected), (cut, frame.len())),
            other => panic!("cut at {cut} of {}: {other:?}", frame.len()),
        }
    }
}

/// Hands out its bytes one at a time, like a peer whose frame arrives in pieces.
struct Trickle<'a>(&'a [u8]);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match (self.0.split_first(), buf.is_empty()) {
            (Some((b, rest)), false) => {
                buf[0] = *b;
                self.0 = rest;
                Ok(1)
            }
            _ => Ok(0),
        }
    }
}

#[test]
fn a_frame_arriving_byte_by_byte_decodes() {
    let req = Request::Execute { stmt: Statement::new("SELECT 1", vec![]), opts: WriteOptions::default() };
    let bytes = frame_of(&req);
    let mut buf = Vec::new();
    let got: Request = read_frame(&mut Trickle(&bytes), DEFAULT_MAX_FRAME, &mut buf).unwrap().unwrap();
    assert_eq!(got, req);
}

/// Fails with `Interrupted` once before each chunk, then with `kind` at the end.
struct Flaky<'a> {
    data: &'a [u8],
    interrupt_next: bool,
    end: io::ErrorKind,
}

impl Read for Flaky<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.interrupt_next = !self.interrupt_next;
        if !self.interrupt_next {
            return Err(io::ErrorKind::Interrupted.into());
        }
        if self.data.is_empty() {
            return Err(self.end.into());
        }
        let n = buf.len().min(self.data.len()).min(3);
        buf[..n].copy_from_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Ok(n)
    }
}

#[test]
fn interrupted_reads_are_retried_and_io_errors_surface() {
    let bytes = frame_of(&Request::Hello(hello()));
    let mut buf = Vec::new();
    let mut r = Flaky { data: &bytes, interrupt_next: true, end: io::ErrorKind::ConnectionReset };
    let got: Request = read_frame(&mut r, DEFAULT_MAX_FRAME, &mut buf).unwrap().unwrap();
    assert_eq!(got, Request::Hello(hello()));
    // Between frames, an I/O error is an error (not a clean EOF).
    match read_frame::<_, Request>(&mut r, DEFAULT_MAX_FRAME, &mut buf) {
        Err(e @ FrameError::Io(_)) => assert!(e.is_fatal()),
        other => panic!("{other:?}"),
    }
    // Part-way through a frame too.
    let mut r = Flaky { data: &bytes[..6], interrupt_next: true, end: io::ErrorKind::TimedOut };
    match read_frame::<_, Request>(&mut r, DEFAULT_MAX_FRAME, &mut buf) {
        Err(FrameError::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::TimedOut),
        other => panic!("{other:?}"),
    }
}

#[test]
fn garbage_payload_is_a_decode_error() {
    let cases: &[&[u8]] = &[
        &[0xEE],                               // no Request variant 238
        &[250],                                // the last single-byte varint value, not a variant either
        &[0xFF, 0, 0, 0, 0, 0, 0, 0, 0],       // a u128 varint marker where a u32 tag belongs
        &[2],                                  // Execute with no body
        &[2, 3, 0xC3, 0x28, 0x61, 0, 0, 0, 0], // Execute whose SQL is invalid UTF-8
        &[0, 1],                               // Hello cut short inside a frame
        &[3, 0, 5],                            // Batch whose options end after timeout_ms
        &[2, 0, 0, 0, 0, 2, 1],                // Execute with 2 where a bool belongs
        &[2, 0, 0, 0, 0, 7],                   // Execute with 7 as the Option tag of request_id
    ];
    for (i, payload) in cases.iter().enumerate() {
        match read_one::<Request>(&raw_frame(payload)) {
            Err(e @ FrameError::Decode(_)) => {
                assert!(!e.is_fatal(), "a bad payload leaves the stream in sync")
            }
            other => panic!("case {i} {payload:?}: {other:?}"),
        }
    }
    match read_one::<Response>(&raw_frame(&[0xEE, 1, 2, 3])) {
        Err(FrameError::Decode(_)) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn trailing_bytes_are_an_error() {
    let mut payload = frame_of(&Request::Ping)[FRAME_HEADER_LEN..].to_vec();
    payload.extend_from_slice(&[0, 0, 7]);
    match read_one::<Request>(&raw_frame(&payload)) {
        Err(e @ FrameError::TrailingBytes { extra: 3 }) => assert!(!e.is_fatal()),
        other => panic!("{other:?}"),
    }
    assert!(matches!(decode_payload::<Request>(&payload), Err(FrameError::TrailingBytes { extra: 3 })));
}

#[test]
fn empty_frame_is_a_decode_error() {
    match read_one::<Request>(&[0, 0, 0, 0]) {
        Err(FrameError::Decode(m)) => assert!(m.contains("empty frame"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(decode_payload::<Request>(&[]), Err(FrameError::Decode(_))));
}

#[test]
fn oversize_messages_are_refused_when_encoding() {
    let big =
        Request::Execute { stmt: Statement::new("x".repeat(2000), vec![]), opts: WriteOptions::default() };
    let mut buf = Vec::new();
    match encode_frame(&big, &mut buf, 1024) {
        Err(FrameError::TooLarge { len, max: 1024 }) => assert!(len > 2000),
        other => panic!("{other:?}"),
    }
    // A configured maximum above the hard cap is clamped to it.
    assert!(parse_header(HARD_MAX_FRAME.to_le_bytes(), u32::MAX).is_ok());
    assert!(matches!(
        parse_header((HARD_MAX_FRAME + 1).to_le_bytes(), u32::MAX),
        Err(FrameError::TooLarge { max: HARD_MAX_FRAME, .. })
    ));
}

/// A peer that sends a length prefix and then nothing more, while the connection
/// stays open: reading past the header would block forever, so it panics instead.
struct HeaderOnly {
    header: [u8; FRAME_HEADER_LEN],
    pos: usize,
}

impl Read for HeaderOnly {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        assert!(self.pos < FRAME_HEADER_LEN, "the reader asked for the payload of a frame it should refuse");
        let n = buf.len().min(FRAME_HEADER_LEN - self.pos);
        buf[..n].copy_from_slice(&self.header[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn forged_length_prefixes_are_too_large_without_allocating() {
    let cases = [
        (u32::MAX, DEFAULT_MAX_FRAME),
        (DEFAULT_MAX_FRAME + 1, DEFAULT_MAX_FRAME),
        (HARD_MAX_FRAME + 1, HARD_MAX_FRAME),
        (HARD_MAX_FRAME + 1, u32::MAX), // clamped to the hard cap
        (1025, 1024),
    ];
    for (len, max) in cases {
        let mut buf = Vec::new();
        let mut r = HeaderOnly { header: len.to_le_bytes(), pos: 0 };
        let (res, largest) = largest_allocation(|| read_frame::<_, Request>(&mut r, max, &mut buf));
        match res {
            Err(e @ FrameError::TooLarge { .. }) => {
                let FrameError::TooLarge { len: got, max: m } = e else { unreachable!() };
                assert_eq!(got, u64::from(len));
                assert_eq!(m, max.min(HARD_MAX_FRAME));
                assert!(e.is_fatal(), "the stream cannot be resynchronised after a refused length");
                assert!(e.to_string().contains(&len.to_string()), "{e}");
            }
            other => panic!("len {len} max {max}: {other:?}"),
        }
        assert!(largest < 1024, "refusing a {len}-byte frame allocated {largest} bytes");
        assert_eq!(buf.capacity(), 0, "the payload buffer must stay untouched");
    }
}

#[test]
fn an_accepted_length_allocates_only_as_data_arrives() {
    // 16 MiB announced, 10 bytes sent, then the peer closes: the reader must not
    // have reserved the announced size up front.
    let mut bytes = DEFAULT_MAX_FRAME.to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0; 10]);
    let mut buf = Vec::new();
    let (res, largest) = largest_allocation(|| {
        read_frame::<_, Request>(&mut io::Cursor::new(&bytes), DEFAULT_MAX_FRAME, &mut buf)
    });
    match res {
        Err(FrameError::Truncated { got: 14, expected }) => {
            assert_eq!(expected, FRAME_HEADER_LEN + DEFAULT_MAX_FRAME as usize)
        }
        other => panic!("{other:?}"),
    }
    assert!(largest < 64 * 1024, "a 10-byte body made the reader allocate {largest} bytes");
}

/// Varint (bincode `standard()`) of a u64 above 2^32: marker 253, then 8 bytes LE.
fn varint_u64(v: u64) -> Vec<u8> {
    let mut out = vec![253];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

/// Varint of a u32-sized value: marker 252, then 4 bytes LE.
fn varint_u32(v: u32) -> Vec<u8> {
    let mut out = vec![252];
    out.extend_from_slice(&v.to_le_bytes());
    out
}

#[test]
fn forged_container_lengths_inside_small_frames_do_not_allocate() {
    // Within what a whole-frame decode limit allows, so only a limit tied to the
    // payload's own length stops it.
    let claim = 200 * 1024 * 1024;
    let requests: Vec<(&str, Vec<u8>)> = vec![
        // Execute { stmt: { sql: <200 MiB>, … } }
        ("Execute.sql (String)", [vec![2], varint_u32(claim), b"INSERT".to_vec()].concat()),
        ("Execute.sql (String), u64 length", [vec![2], varint_u64(u64::MAX / 2), b"x".to_vec()].concat()),
        // Execute { stmt: { sql: "", params: <200 Mi values> } }
        ("Execute.params (Vec<Value>)", [vec![2, 0], varint_u32(claim), vec![0, 0, 0]].concat()),
        // Execute { stmt: { sql: "", params: [Blob(<200 MiB>)] } }
        ("Value::Blob (Vec<u8>)", [vec![2, 0, 1, 4], varint_u32(claim), vec![1, 2, 3]].concat()),
        // Execute { stmt: { sql: "", params: [Text(<200 MiB>)] } }
        ("Value::Text (String)", [vec![2, 0, 1, 3], varint_u32(claim), b"abc".to_vec()].concat()),
        // Batch { statements: <200 Mi statements> }
        ("Batch.statements", [vec![3], varint_u32(claim), vec![0, 0]].concat()),
        // Hello { protocol: 1, minor: 0, client_name: <200 MiB> }
        ("Hello.client_name", [vec![0, 1, 0], varint_u32(claim), b"app".to_vec()].concat()),
    ];
    for (what, payload) in requests {
        let frame = raw_frame(&payload);
        assert!(frame.len() < 64);
        let mut buf = Vec::new();
        let (res, largest) = largest_allocation(|| {
            read_frame::<_, Request>(&mut io::Cursor::new(&frame), DEFAULT_MAX_FRAME, &mut buf)
        });
        assert!(matches!(res, Err(FrameError::Decode(_))), "{what}: {res:?}");
        assert!(
            largest <= SMALL_ALLOCATION,
            "{what}: a {}-byte frame made the decoder allocate {largest} bytes",
            frame.len()
        );
    }
    // The client decodes answers with the same code: a forged answer is as harmless.
    let responses: Vec<(&str, Vec<u8>)> = vec![
        // Executed { changes: 1, last_insert_rowid: 0, columns: [<200 MiB>] }
        ("Executed.columns[0]", [vec![3, 1, 0, 1], varint_u32(claim), b"id".to_vec()].concat()),
        // Executed { …, columns: [], rows: <200 Mi rows> }
        ("Executed.rows", [vec![3, 1, 0, 0], varint_u32(claim), vec![0]].concat()),
        // Error { kind: Sql, message: <200 MiB> }
        ("Error.message", [vec![1, 0], varint_u32(claim), b"msg".to_vec()].concat()),
    ];
    for (what, payload) in responses {
        let (res, largest) = largest_allocation(|| decode_payload::<Response>(&payload));
        assert!(matches!(res, Err(FrameError::Decode(_))), "{what}: {res:?}");
        assert!(largest <= SMALL_ALLOCATION, "{what}: a forged answer allocated {largest} bytes");
    }
}

#[test]
fn large_honest_payloads_still_decode() {
    // The allocation bounds above must not cost legitimate big messages.
    let blob = Value::Blob(vec![7; 5 * 1024 * 1024]);
    let text = Value::Text("t".repeat(3 * 1024 * 1024));
    let req = Request::Execute {
        stmt: Statement::new("INSERT INTO t VALUES (?, ?)", vec![blob, text]),
        opts: WriteOptions::default(),
    };
    let got: Request = read_one(&frame_of(&req)).unwrap().unwrap();
    assert_eq!(got, req);
    let many = Request::Batch {
        statements: (0..50_000).map(|i| Statement::new("", vec![Value::Integer(i), Value::Null])).collect(),
        opts: WriteOptions::default(),
    };
    let got: Request = read_one(&frame_of(&many)).unwrap().unwrap();
    assert_eq!(got, many);
}

// ----- handshake peeking -----------------------------------------------------------

#[test]
fn peek_hello_version_reads_a_foreign_handshake() {
    let future = Request::Hello(Hello { protocol: 99, ..hello() });
    let payload = &frame_of(&future)[FRAME_HEADER_LEN..];
    assert_eq!(peek_hello_version(payload), Some(99));
    // A handshake of another version whose body no longer decodes as today's Hello:
    // variant 0, protocol 2, then fields this version does not know.
    let foreign = [0, 2, 0xFF, 0xFE, 0xFD, 0xFC, 9, 9, 9];
    assert!(decode_payload::<Request>(&foreign).is_err());
    assert_eq!(peek_hello_version(&foreign), Some(2));
    // Large versions use a multi-byte varint.
    let big = [vec![0], varint_u32(70_000), vec![0xFF]].concat();
    assert_eq!(peek_hello_version(&big), Some(70_000));
    // Anything that is not a Hello is not a handshake.
    assert_eq!(peek_hello_version(&frame_of(&Request::Ping)[FRAME_HEADER_LEN..]), None);
    assert_eq!(peek_hello_version(&[]), None);
    assert_eq!(peek_hello_version(&[0]), None);
    assert_eq!(peek_hello_version(&[0xEE, 1]), None);
    // Today's handshake peeks as today's version.
    assert_eq!(
        peek_hello_version(&frame_of(&Request::Hello(hello()))[FRAME_HEADER_LEN..]),
        Some(PROTOCOL_VERSION)
    );
}

#[test]
fn honest_payloads_with_the_highest_claim_ratio_decode_at_every_size() {
    // An empty statement is 2 payload bytes that the decoder counts as 16 (two
    // one-byte lengths decoded as u64): the densest honest message there is. It
    // must decode at every size, whatever size class its decode limit falls in.
    // Every small size, then sizes 10 % apart, so that each size class is met both
    // near its bottom and near its top.
    let sizes = (0..300)
        .chain(std::iter::successors(Some(300usize), |n| Some(n + n / 10)).take_while(|&n| n < 80_000));
    for n in sizes {
        let req =
            Request::Batch { statements: vec![Statement::new("", vec![]); n], opts: WriteOptions::default() };
        let bytes = frame_of(&req);
        let got: Request = read_one(&bytes)
            .unwrap_or_else(|e| panic!("{n} statements ({} bytes): {e}", bytes.len()))
            .unwrap();
        assert_eq!(got, req);
    }
}

#[test]
fn cursor_text_form_round_trips_and_rejects_garbage() {
    let c = Cursor { epoch: 1_733_059_200_123_456, seq: 42 };
    assert_eq!(c.to_string(), "1733059200123456-42");
    assert_eq!(Cursor::parse(&c.to_string()), Ok(c));
    assert_eq!(" 5-0 ".parse::<Cursor>(), Ok(Cursor { epoch: 5, seq: 0 }));
    for bad in ["", "5", "5-", "-5", "a-1", "1-b", "1-2-3", "-1-2"] {
        assert!(Cursor::parse(bad).is_err(), "{bad:?} parsed");
    }
}
