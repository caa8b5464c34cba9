//! Golden bytes: the exact frame of one message per `Request`, `Response` and
//! `Value` variant. bincode writes an enum variant as its index, so a reordered,
//! inserted or removed variant, or a changed field, changes these bytes and fails
//! here before it reaches users whose broker and clients were built apart.
//!
//! Variants may only be APPENDED, and fields never reordered. When you append a
//! variant, the exhaustive matches below stop compiling: add a sample and its
//! bytes (generate them once, check the first payload byte is the new index) —
//! never edit the bytes of an existing sample.
//!
//! One exception was made before protocol 1 was first released: fields were
//! appended to `BrokerStatus` (request ids, then the group-commit figures) and
//! `WriterFigures` (request ids). After a release a
//! struct gains fields only through a new variant carrying a new struct.

use litebroker_protocol::replication::{ReplicationReport, ReplicationState};
use litebroker_protocol::*;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn frame_of<T: serde::Serialize>(msg: &T) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf, HARD_MAX_FRAME).expect("encode");
    buf
}

/// Checks both directions, and that the frame's header and first payload byte are
/// what the wire rules say: little-endian length, then the variant index.
fn check<T>(msg: &T, golden: &str, index: u8)
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = frame_of(msg);
    assert_eq!(hex(&bytes), golden, "the encoding of {msg:?} changed: this breaks the wire protocol");
    let golden = unhex(golden);
    let len = u32::from_le_bytes(golden[..FRAME_HEADER_LEN].try_into().unwrap()) as usize;
    assert_eq!(len, golden.len() - FRAME_HEADER_LEN, "length prefix of {msg:?}");
    assert_eq!(golden[FRAME_HEADER_LEN], index, "variant index of {msg:?}");
    let back: T = read_frame(&mut &golden[..], HARD_MAX_FRAME, &mut Vec::new()).unwrap().unwrap();
    assert_eq!(&back, msg, "the golden bytes no longer decode to the same message");
}

/// The wire index of each variant. Exhaustive on purpose: appending a variant
/// breaks this match, which is the reminder to add its golden sample.
fn request_index(r: &Request) -> u8 {
    match r {
        Request::Hello(_) => 0,
        Request::Ping => 1,
        Request::Execute { .. } => 2,
        Request::Batch { .. } => 3,
        Request::Status => 4,
        Request::Shutdown => 5,
        Request::BeginSession { .. } => 6,
        Request::Commit => 7,
        Request::Rollback => 8,
        Request::Connections => 9,
        Request::Stats => 10,
        Request::Verify => 11,
        Request::Checkpoint { .. } => 12,
        Request::Backup { .. } => 13,
        Request::Restore { .. } => 14,
        Request::Migrate { .. } => 15,
        Request::Health => 16,
        Request::Watch { .. } => 17,
        Request::FeedStats => 18,
        Request::Metrics => 19,
        Request::Replication => 20,
        Request::ManyBegin { .. } => 21,
        Request::ManyRows { .. } => 22,
        Request::ManyEnd { .. } => 23,
        Request::BatchBegin { .. } => 24,
        Request::BatchPart { .. } => 25,
    }
}

fn response_index(r: &Response) -> u8 {
    match r {
        Response::Hello(_) => 0,
        Response::Error(_) => 1,
        Response::Pong => 2,
        Response::Executed(_) => 3,
        Response::Batch(_) => 4,
        Response::Status(_) => 5,
        Response::ShuttingDown => 6,
        Response::SessionStarted { .. } => 7,
        Response::SessionEnded { .. } => 8,
        Response::Connections(_) => 9,
        Response::Stats(_) => 10,
        Response::Verify(_) => 11,
        Response::Checkpoint(_) => 12,
        Response::Progress { .. } => 13,
        Response::Backup(_) => 14,
        Response::Restored(_) => 15,
        Response::Migrated(_) => 16,
        Response::Health(_) => 17,
        Response::Watching { .. } => 18,
        Response::Change(_) => 19,
        Response::FeedStats(_) => 20,
        Response::Metrics(_) => 21,
        Response::Replication(_) => 22,
        Response::SessionLeased { .. } => 23,
        Response::ExecutedMany(_) => 24,
        Response::ManyFailed { .. } => 25,
    }
}

fn value_index(v: &Value) -> u8 {
    match v {
        Value::Null => 0,
        Value::Integer(_) => 1,
        Value::Real(_) => 2,
        Value::Text(_) => 3,
        Value::Blob(_) => 4,
    }
}

fn golden_requests() -> Vec<(Request, &'static str)> {
    vec![
        (
            Request::Hello(Hello {
                protocol: 1,
                minor: 0,
                client_name: "app".into(),
                pid: 4242,
                expected_schema: Some(3),
            }),
            // 00 Hello, 01 protocol, 00 minor, 03 "app", fb 9210 pid (u16 varint), 01 03 Some(3)
            "0c00000000010003617070fb92100103",
        ),
        (Request::Ping, "0100000001"),
        (
            Request::Execute {
                stmt: Statement::new(
                    "INSERT INTO t VALUES (?, ?, ?, ?, ?)",
                    vec![
                        Value::Null,
                        Value::Integer(-2),
                        Value::Real(1.5),
                        Value::Text("é".into()),
                        Value::Blob(vec![0, 255]),
                    ],
                ),
                opts: WriteOptions { timeout_ms: 30_000, request_id: Some([7; 16]), idempotent: true },
            },
            "5000000002\
             24494e5345525420494e544f20742056414c55455320283f2c203f2c203f2c203f2c203f29\
             05 00 0103 02000000000000f83f 0302c3a9 040200ff\
             fb3075 0107070707070707070707070707070707 01",
        ),
        (
            Request::Batch {
                statements: vec![
                    Statement::new("DELETE FROM t", vec![]),
                    Statement::new("SELECT ?", vec![Value::Integer(300)]),
                ],
                opts: WriteOptions::default(),
            },
            "2200000003 02 0d44454c4554452046524f4d207400 0853454c454354203f 01 01fb5802 00 00 00",
        ),
        (Request::Status, "0100000004"),
        (Request::Shutdown, "0100000005"),
        (Request::BeginSession { timeout_ms: 10_000 }, "0400000006fb1027"),
        (Request::Commit, "0100000007"),
        (Request::Rollback, "0100000008"),
        (Request::Connections, "0100000009"),
        (Request::Stats, "010000000a"),
        (Request::Verify, "010000000b"),
        (Request::Checkpoint { mode: CheckpointMode::Truncate }, "020000000c 03"),
        (Request::Backup { label: "nightly".into(), keep: 7 }, "0a0000000d 076e696768746c79 07"),
        (
            Request::Restore { path: "/b/x.db".into(), timeout_ms: 30_000 },
            "0c0000000e 072f622f782e6462 fb3075",
        ),
        (
            Request::Migrate {
                migrations: vec![Migration {
                    version: 2,
                    name: "sales".into(),
                    sql: "CREATE TABLE s(x)".into(),
                }],
                timeout_ms: 10_000,
            },
            "1e0000000f 01 02 0573616c6573 11435245415445205441424c452073287829 fb1027",
        ),
        // Protocol minor 1.
        (Request::Health, "0100000010"),
        // Protocol minor 2.
        (
            Request::Watch { tables: vec!["skus".into()], since: Some(Cursor { epoch: 7, seq: 300 }) },
            "0c00000011 01 04736b75 73 01 07 fb2c01",
        ),
        (Request::FeedStats, "0100000012"),
        (Request::Metrics, "0100000013"),
        (Request::Replication, "0100000014"),
        // Protocol minor 2 (streamed executemany).
        (
            Request::ManyBegin {
                sql: "INSERT INTO t VALUES (?, ?)".into(),
                opts: WriteOptions { timeout_ms: 30_000, request_id: Some([9; 16]), idempotent: false },
            },
            "3200000015 1b494e5345525420494e544f20742056414c55455320283f2c203f29 fb3075 0109090909090909090909090909090909 00",
        ),
        (
            Request::ManyRows {
                rows: vec![
                    vec![Value::Integer(1), Value::Text("a".into())],
                    vec![Value::Null, Value::Real(2.5)],
                ],
            },
            "1300000016 02 02 0102 030161 02 00 020000000000000440",
        ),
        (Request::ManyEnd { rows: 300, commit: true }, "0500000017 fb2c01 01"),
        // Protocol minor 3 (streamed batch).
        (
            Request::BatchBegin {
                opts: WriteOptions { timeout_ms: 30_000, request_id: Some([9; 16]), idempotent: false },
            },
            "1600000018 fb3075 0109090909090909090909090909090909 00",
        ),
        (
            Request::BatchPart {
                statements: vec![
                    Statement::new("DELETE FROM t", vec![]),
                    Statement::new("SELECT ?", vec![Value::Integer(300)]),
                ],
            },
            "1f00000019 02 0d44454c4554452046524f4d207400 0853454c454354203f 01 01fb5802",
        ),
    ]
}

fn golden_responses() -> Vec<(Response, &'static str)> {
    vec![
        (
            Response::Hello(HelloAck {
                protocol: 1,
                minor: 0,
                broker_version: "0.1.0".into(),
                db_path: "/d/app.db".into(),
                socket: "/s.sock".into(),
                pid: 77,
                client_id: 5,
                schema_version: 3,
            }),
            "1e00000000 01 00 05302e312e30 092f642f6170702e6462 072f732e736f636b 4d 05 03",
        ),
        (
            Response::Error(ErrorInfo {
                kind: ErrorKind::Constraint,
                message: "UNIQUE".into(),
                sqlite: Some(SqliteCode { primary: 19, extended: 2067 }),
            }),
            // 01 Error, 01 Constraint, "UNIQUE", Some, zigzag(19) = 0x26, zigzag(2067) = fb 2610
            "0e00000001 01 06554e49515545 01 26 fb2610",
        ),
        (Response::Pong, "0100000002"),
        (
            Response::Executed(ExecResult {
                changes: 1,
                last_insert_rowid: 7,
                columns: vec!["id".into()],
                rows: vec![vec![Value::Integer(7)]],
            }),
            "0b00000003 01 0e 01026964 01 01 010e",
        ),
        (
            Response::Batch(vec![ExecResult {
                changes: 2,
                last_insert_rowid: 0,
                columns: vec![],
                rows: vec![],
            }]),
            "0600000004 01 02 00 00 00",
        ),
        (
            Response::Status(BrokerStatus {
                pid: 77,
                socket: "/s.sock".into(),
                db_path: "/d/app.db".into(),
                protocol: 1,
                minor: 0,
                broker_version: "0.1.0".into(),
                uptime_ms: 1000,
                clients: 2,
                requests: 300,
                commits: 250,
                queue_depth: 0,
                synchronous: "normal".into(),
                writer_holder: None,
                request_ids: true,
                group_commits: 200,
                group_requests: 290,
                max_group: 7,
                queue_waits: 290,
                queue_wait_us: 5_800,
                max_queue_wait_us: 410,
                commit_us: 2_000,
                max_commit_us: 95,
            }),
            "4000000005 4d 072f732e736f636b 092f642f6170702e6462 01 00 05302e312e30\
             fbe803 02 fb2c01 fa 00 066e6f726d616c 00 01 c8 fb2201 07 fb2201 fba816 fb9a01 fbd007 5f",
        ),
        (Response::ShuttingDown, "0100000006"),
        (Response::SessionStarted { waited_ms: 12 }, "02000000070c"),
        (Response::SessionEnded { committed: true }, "020000000801"),
        (
            Response::Connections(vec![ClientInfo {
                id: 5,
                name: "app".into(),
                pid: 4242,
                connected_unix_ms: 1_700_000_000_000,
                requests: 9,
                holds_writer: false,
            }]),
            "1500000009 01 05 03617070 fb9210 fd0068e5cf8b010000 09 00",
        ),
        (
            Response::Stats(Box::new(DbStats {
                db_path: "/d/app.db".into(),
                schema_version: 3,
                tables: 2,
                indices: 1,
                db_bytes: 8192,
                wal_bytes: 0,
                page_size: 4096,
                page_count: 2,
                free_pages: 0,
                journal_mode: "wal".into(),
                row_counts: vec![TableCount { name: "skus".into(), rows: 1250 }],
                warnings: vec![],
                broker: None,
                writer: Some(WriterFigures {
                    committed_requests: 10,
                    max_requests_per_commit: 4,
                    lock_waits: 1,
                    lock_retries: 2,
                    last_checkpoint: None,
                    wal_warn_bytes: 100_000_000,
                    request_ids_recorded: 7,
                    deduplicated: 1,
                }),
            })),
            "330000000a 092f642f6170702e6462 03 02 01 fb0020 00 fb0010 02 00 0377616c 01 04736b7573 fbe204 00 00 01 0a 04 01 02 00 fc00e1f505 07 01",
        ),
        (
            Response::Verify(VerifyReport {
                path: "/d/app.db".into(),
                integrity_problems: vec![],
                foreign_key_problems: vec!["c row 2".into()],
            }),
            "150000000b 092f642f6170702e6462 00 01 076320726f772032",
        ),
        (
            Response::Checkpoint(CheckpointReport {
                mode: CheckpointMode::Passive,
                blocked: true,
                wal_frames: 10,
                checkpointed_frames: 4,
                wal_bytes_after: 41_232,
                at_unix_ms: 1_700_000_000_000,
            }),
            "110000000c 00 01 14 08 fb10a1 fd0068e5cf8b010000",
        ),
        (Response::Progress { done: 4096, total: 8192 }, "070000000d fb0010 fb0020"),
        (
            Response::Backup(BackupReport {
                path: "/d/backups/app.db".into(),
                bytes: 8192,
                duration_ms: 12,
                removed: vec!["/d/backups/old.db".into()],
            }),
            "2a0000000e 112f642f6261636b7570732f6170702e6462 fb0020 0c 01 112f642f6261636b7570732f6f6c642e6462",
        ),
        (
            Response::Restored(RestoreReport {
                restored_from: "/b/x.db".into(),
                safety_backup: "/d/backups/pre.db".into(),
                pages: 2,
                duration_ms: 3,
            }),
            "1d0000000f 072f622f782e6462 112f642f6261636b7570732f7072652e6462 02 03",
        ),
        (Response::Migrated(MigrationReport { from_version: 1, to_version: 3, applied: vec![2, 3] }), "0600000010 01 03 02 02 03"),
        // Protocol minor 1.
        (
            Response::Health(HealthReport {
                exactly_once: false,
                exactly_once_off: Some("off".into()),
                writes_stopped: None,
            }),
            "0800000011 00 01 036f6666 00",
        ),
        // Protocol minor 2.
        (Response::Watching { cursor: Cursor { epoch: 7, seq: 0 } }, "0300000012 07 00"),
        (
            Response::Change(ChangeEvent {
                cursor: Cursor { epoch: 7, seq: 1 },
                committed_unix_us: 1000,
                tables: vec![TableChange {
                    table: "skus".into(),
                    inserted: 1,
                    updated: 2,
                    deleted: 0,
                    rowids: vec![7, -1],
                    rowids_capped: false,
                }],
                resync: None,
            }),
            "1400000013 07 01 fbe803 01 04736b7573 01 02 00 02 0e01 00 00",
        ),
        (
            Response::FeedStats(FeedFigures {
                epoch: 7,
                head: Cursor { epoch: 7, seq: 2 },
                subscribers: 3,
                ring_events: 2,
                ring_bytes: 200,
                ring_max_events: 10,
                ring_max_bytes: 1000,
                oldest: Some(Cursor { epoch: 7, seq: 1 }),
                published: 2,
                resyncs: 1,
                dropped_backlogs: 1,
            }),
            "1100000014 07 07 02 03 02 c80a fbe803 01 0701 02 01 01",
        ),
        // Protocol minor 2 (metrics): one family of each kind, both kinds of value.
        (
            Response::Metrics(MetricsReport {
                at_unix_ms: 1_700_000_000_000,
                families: vec![
                    MetricFamily {
                        name: "a_total".into(),
                        help: "A.".into(),
                        kind: MetricKind::Counter,
                        series: vec![MetricSeries {
                            labels: vec![("k".into(), "v".into())],
                            value: MetricValue::Number(3.0),
                        }],
                    },
                    MetricFamily {
                        name: "g".into(),
                        help: String::new(),
                        kind: MetricKind::Gauge,
                        series: vec![MetricSeries { labels: Vec::new(), value: MetricValue::Number(-0.5) }],
                    },
                    MetricFamily {
                        name: "h_seconds".into(),
                        help: "H.".into(),
                        kind: MetricKind::Histogram,
                        series: vec![MetricSeries {
                            labels: Vec::new(),
                            value: MetricValue::Histogram(HistogramValue {
                                bounds: vec![0.25],
                                counts: vec![2, 1],
                                sum: 1.0,
                            }),
                        }],
                    },
                ],
            }),
            // 15 Metrics, at_unix_ms, 3 families; then each family:
            // "a_total", "A.", 00 Counter, 1 series, 1 label (k, v), 00 Number 3.0;
            // "g", "", 01 Gauge, 1 series, no labels, 00 Number -0.5;
            // "h_seconds", "H.", 02 Histogram, 1 series, no labels, 01 Histogram,
            // bounds [0.25], counts [2, 1], sum 1.0
            concat!(
                "5a00000015 fd0068e5cf8b010000 03",
                "07615f746f74616c 02412e 00 01 01 016b0176 00 0000000000000840",
                "0167 00 01 01 00 00 000000000000e0bf",
                "09685f7365636f6e6473 02482e 02 01 00 01 01 000000000000d03f 02 02 01 000000000000f03f"
            ),
        ),
        (
            Response::Replication(ReplicationReport {
                state: ReplicationState::Running,
                replica_url: "file:///r".into(),
                program: "ls".into(),
                pid: Some(7),
                restarts: 1,
                local_txid: 5,
                replica_txid: 4,
                lag_ms: 250,
                last_sync_unix_ms: None,
                last_error: Some("e".into()),
                last_error_unix_ms: Some(9),
                sync_interval_ms: 1000,
            }),
            "1e00000016 01 0966696c653a2f2f2f72 026c73 0107 01 05 04 fa 00 010165 0109 fbe803",
        ),
        // Protocol minor 2: a session's start with its lease (30 s).
        (Response::SessionLeased { waited_ms: 12, lease_ms: 30_000 }, "0500000017 0c fb3075"),
        // Protocol minor 2 (streamed executemany).
        (Response::ExecutedMany(ManySummary { changes: 300, last_insert_rowid: -1, rows: 300 }), "0800000018 fb2c01 01 fb2c01"),
        (
            Response::ManyFailed {
                row: 5,
                error: ErrorInfo {
                    kind: ErrorKind::Constraint,
                    message: "row 5".into(),
                    sqlite: Some(SqliteCode { primary: 19, extended: 2067 }),
                },
            },
            "0e00000019 05 01 05726f772035 01 26 fb2610",
        ),
    ]
}

fn golden_values() -> Vec<(Value, &'static str)> {
    vec![
        (Value::Null, "0100000000"),
        (Value::Integer(-3), "020000000105"),
        (Value::Real(-0.5), "0900000002000000000000e0bf"),
        (Value::Text("hé".into()), "05000000030368c3a9"),
        (Value::Blob(vec![1, 2, 255]), "0500000004 03 0102ff"),
    ]
}

/// Golden strings are written with spaces between fields for reading; the wire
/// has none.
fn compact(s: &str) -> String {
    s.chars().filter(|c| !c.is_whitespace()).collect()
}

/// One sample per index 0..n, in order: nothing skipped, nothing doubled.
fn assert_covers_every_index(indexes: &[u8], what: &str) {
    let want: Vec<u8> = (0..indexes.len() as u8).collect();
    assert_eq!(indexes, want, "{what}: the golden samples must cover every variant once, in order");
}

#[test]
fn request_frames_are_unchanged() {
    let samples = golden_requests();
    for (req, golden) in &samples {
        check(req, &compact(golden), request_index(req));
    }
    assert_covers_every_index(&samples.iter().map(|(r, _)| request_index(r)).collect::<Vec<_>>(), "Request");
}

#[test]
fn response_frames_are_unchanged() {
    let samples = golden_responses();
    for (resp, golden) in &samples {
        check(resp, &compact(golden), response_index(resp));
    }
    assert_covers_every_index(
        &samples.iter().map(|(r, _)| response_index(r)).collect::<Vec<_>>(),
        "Response",
    );
}

#[test]
fn value_frames_are_unchanged() {
    let samples = golden_values();
    for (v, golden) in &samples {
        check(v, &compact(golden), value_index(v));
    }
    assert_covers_every_index(&samples.iter().map(|(v, _)| value_index(v)).collect::<Vec<_>>(), "Value");
}

#[test]
fn no_variant_exists_past_the_golden_ones() {
    // Unit-variant payloads one past the last known index must not decode. This
    // holds the exhaustive matches above to the real enums.
    assert!(decode_payload::<Request>(&[golden_requests().len() as u8]).is_err());
    assert!(decode_payload::<Response>(&[golden_responses().len() as u8]).is_err());
    assert!(decode_payload::<Value>(&[golden_values().len() as u8]).is_err());
}

#[test]
fn error_kind_indexes_are_unchanged() {
    // ErrorKind is `#[non_exhaustive]`, so it has no exhaustive match here; its
    // indexes are pinned one by one inside a frozen `Response::Error`.
    let kinds = [
        (ErrorKind::Sql, 0u8),
        (ErrorKind::Constraint, 1),
        (ErrorKind::Locked, 2),
        (ErrorKind::Timeout, 3),
        (ErrorKind::ShuttingDown, 4),
        (ErrorKind::Protocol, 5),
        (ErrorKind::Incompatible, 6),
        (ErrorKind::LimitExceeded, 7),
        (ErrorKind::NotAllowed, 8),
        (ErrorKind::LeaseExpired, 9),
        (ErrorKind::SessionState, 10),
        (ErrorKind::DiskFull, 11),
        (ErrorKind::Internal, 12),
        (ErrorKind::VerificationFailed, 13),
        (ErrorKind::SchemaMismatch, 14),
        (ErrorKind::WritesStopped, 15),
    ];
    for (kind, index) in kinds {
        // 01 Error, kind, message "x", sqlite None.
        let golden = format!("0500000001{index:02x}017800");
        check(&Response::Error(ErrorInfo::new(kind, "x")), &golden, 1);
    }
    assert!(decode_payload::<Response>(&[1, kinds.len() as u8, 0, 0]).is_err(), "add the new ErrorKind here");
}

#[test]
fn handshake_prefix_is_frozen() {
    // A broker of any version reads a client's Hello up to its protocol field
    // (`peek_hello_version`): variant 0, then the major version as a varint.
    let bytes = frame_of(&Request::Hello(Hello {
        protocol: PROTOCOL_VERSION,
        minor: PROTOCOL_MINOR,
        client_name: String::new(),
        pid: 0,
        expected_schema: None,
    }));
    assert_eq!(bytes[FRAME_HEADER_LEN], 0);
    assert_eq!(u32::from(bytes[FRAME_HEADER_LEN + 1]), PROTOCOL_VERSION);
}

#[test]
fn resync_reason_indexes_are_unchanged() {
    let all = [
        ResyncReason::CursorTooOld,
        ResyncReason::OtherEpoch,
        ResyncReason::ExternalWrite,
        ResyncReason::Restore,
        ResyncReason::FellBehind,
    ];
    for (i, r) in all.iter().enumerate() {
        let mut buf = Vec::new();
        encode_frame(r, &mut buf, HARD_MAX_FRAME).unwrap();
        assert_eq!(buf[FRAME_HEADER_LEN..], [i as u8], "index of {r:?}");
    }
    assert!(decode_payload::<ResyncReason>(&[all.len() as u8]).is_err());
    // A resync event: no tables, the reason's index after the `Some` tag.
    let resync = Response::Change(ChangeEvent {
        cursor: Cursor { epoch: 7, seq: 2 },
        committed_unix_us: 1001,
        tables: vec![],
        resync: Some(ResyncReason::FellBehind),
    });
    check(&resync, &compact("0900000013 07 02 fbe903 00 01 04"), 19);
}
