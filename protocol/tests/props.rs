//! Property tests of the codec, run with the normal test suite: every request and
//! response survives a round trip, and no byte sequence a peer can send (random,
//! or a valid frame with bytes flipped, cut or appended) makes decoding panic or
//! return anything but a typed `FrameError`. The libFuzzer targets in
//! `server/fuzz/` explore the same ground coverage-guided (`scripts/fuzz.sh`).

use litebroker_protocol::frame::peek_hello_version;
use litebroker_protocol::*;
use proptest::prelude::*;

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<i64>().prop_map(Value::Integer),
        any::<f64>().prop_filter("NaN is not equal to itself", |f| !f.is_nan()).prop_map(Value::Real),
        ".{0,40}".prop_map(Value::Text),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Blob),
    ]
}

fn statement() -> impl Strategy<Value = Statement> {
    (".{0,80}", proptest::collection::vec(value(), 0..6)).prop_map(|(sql, params)| Statement { sql, params })
}

fn options() -> impl Strategy<Value = WriteOptions> {
    (any::<u32>(), any::<Option<[u8; 16]>>(), any::<bool>())
        .prop_map(|(timeout_ms, request_id, idempotent)| WriteOptions { timeout_ms, request_id, idempotent })
}

fn request() -> impl Strategy<Value = Request> {
    let mode = prop_oneof![
        Just(CheckpointMode::Passive),
        Just(CheckpointMode::Full),
        Just(CheckpointMode::Restart),
        Just(CheckpointMode::Truncate),
    ];
    prop_oneof![
        (any::<u32>(), any::<u32>(), ".{0,20}", any::<u32>(), any::<Option<u32>>()).prop_map(
            |(protocol, minor, client_name, pid, expected_schema)| {
                Request::Hello(Hello { protocol, minor, client_name, pid, expected_schema })
            }
        ),
        Just(Request::Ping),
        (statement(), options()).prop_map(|(stmt, opts)| Request::Execute { stmt, opts }),
        (proptest::collection::vec(statement(), 0..5), options())
            .prop_map(|(statements, opts)| Request::Batch { statements, opts }),
        Just(Request::Status),
        Just(Request::Shutdown),
        any::<u32>().prop_map(|timeout_ms| Request::BeginSession { timeout_ms }),
        Just(Request::Commit),
        Just(Request::Rollback),
        Just(Request::Connections),
        Just(Request::Stats),
        Just(Request::Verify),
        mode.prop_map(|mode| Request::Checkpoint { mode }),
        (".{0,20}", any::<u32>()).prop_map(|(label, keep)| Request::Backup { label, keep }),
        (".{0,40}", any::<u32>()).prop_map(|(path, timeout_ms)| Request::Restore { path, timeout_ms }),
        (proptest::collection::vec(".{0,12}", 0..4), any::<Option<(u64, u64)>>()).prop_map(
            |(tables, since)| {
                Request::Watch { tables, since: since.map(|(epoch, seq)| Cursor { epoch, seq }) }
            }
        ),
        Just(Request::FeedStats),
        Just(Request::Metrics),
    ]
}

fn exec_result() -> impl Strategy<Value = ExecResult> {
    (
        any::<u64>(),
        any::<i64>(),
        proptest::collection::vec(".{0,8}", 0..3),
        proptest::collection::vec(proptest::collection::vec(value(), 0..3), 0..3),
    )
        .prop_map(|(changes, last_insert_rowid, columns, rows)| ExecResult {
            changes,
            last_insert_rowid,
            columns,
            rows,
        })
}

fn change_event() -> impl Strategy<Value = ChangeEvent> {
    let table =
        (".{0,12}", any::<(u64, u64, u64)>(), proptest::collection::vec(any::<i64>(), 0..5), any::<bool>())
            .prop_map(|(table, (inserted, updated, deleted), rowids, rowids_capped)| TableChange {
                table,
                inserted,
                updated,
                deleted,
                rowids,
                rowids_capped,
            });
    let reason = prop_oneof![
        Just(None),
        Just(Some(ResyncReason::CursorTooOld)),
        Just(Some(ResyncReason::OtherEpoch)),
        Just(Some(ResyncReason::ExternalWrite)),
        Just(Some(ResyncReason::Restore)),
        Just(Some(ResyncReason::FellBehind)),
    ];
    (any::<(u64, u64, u64)>(), proptest::collection::vec(table, 0..3), reason).prop_map(
        |((epoch, seq, committed_unix_us), tables, resync)| ChangeEvent {
            cursor: Cursor { epoch, seq },
            committed_unix_us,
            tables,
            resync,
        },
    )
}

/// A report of up to three families, each of one kind and up to three series
/// (finite values only: NaN never equals itself, and round trips compare).
fn metrics_report() -> impl Strategy<Value = MetricsReport> {
    let value = prop_oneof![
        (-1e18f64..1e18).prop_map(MetricValue::Number),
        (
            proptest::collection::vec(0f64..1e6, 0..4),
            proptest::collection::vec(any::<u64>(), 0..5),
            0f64..1e9
        )
            .prop_map(|(bounds, counts, sum)| MetricValue::Histogram(HistogramValue {
                bounds,
                counts,
                sum
            })),
    ];
    let kind = prop_oneof![Just(MetricKind::Counter), Just(MetricKind::Gauge), Just(MetricKind::Histogram)];
    let series = (proptest::collection::vec((".{0,6}", ".{0,6}"), 0..3), value)
        .prop_map(|(labels, value)| MetricSeries { labels, value });
    let family = (".{0,20}", ".{0,30}", kind, proptest::collection::vec(series, 0..3))
        .prop_map(|(name, help, kind, series)| MetricFamily { name, help, kind, series });
    (any::<u64>(), proptest::collection::vec(family, 0..3))
        .prop_map(|(at_unix_ms, families)| MetricsReport { at_unix_ms, families })
}

fn response() -> impl Strategy<Value = Response> {
    prop_oneof![
        (".{0,40}", any::<Option<(i32, i32)>>()).prop_map(|(message, codes)| Response::Error(ErrorInfo {
            kind: ErrorKind::NotAllowed,
            message,
            sqlite: codes.map(|(primary, extended)| SqliteCode { primary, extended }),
        })),
        Just(Response::Pong),
        exec_result().prop_map(Response::Executed),
        proptest::collection::vec(exec_result(), 0..3).prop_map(Response::Batch),
        any::<u64>().prop_map(|waited_ms| Response::SessionStarted { waited_ms }),
        any::<(u64, u64)>().prop_map(|(waited_ms, lease_ms)| Response::SessionLeased { waited_ms, lease_ms }),
        any::<bool>().prop_map(|committed| Response::SessionEnded { committed }),
        (any::<u64>(), any::<u64>()).prop_map(|(done, total)| Response::Progress { done, total }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(epoch, seq)| Response::Watching { cursor: Cursor { epoch, seq } }),
        change_event().prop_map(Response::Change),
        metrics_report().prop_map(Response::Metrics),
    ]
}

fn encoded(msg: &impl serde::Serialize) -> Vec<u8> {
    let mut buf = Vec::new();
    encode_frame(msg, &mut buf, HARD_MAX_FRAME).unwrap();
    buf
}

/// Reads frames from `bytes` until the end or the first error, as the broker
/// would; must never panic.
fn read_all<T: serde::de::DeserializeOwned>(bytes: &[u8], max: u32) -> usize {
    let mut r = std::io::Cursor::new(bytes);
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        match read_frame::<_, T>(&mut r, max, &mut buf) {
            Ok(Some(_)) => n += 1,
            Ok(None) => return n,
            Err(e) if e.is_fatal() => return n,
            // A malformed frame was consumed whole: the stream goes on.
            Err(FrameError::Decode(_) | FrameError::TrailingBytes { .. }) => {}
            Err(e) => panic!("unexpected error kind: {e:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_round_trip(req in request()) {
        let bytes = encoded(&req);
        let back: Option<Request> = read_frame(&mut std::io::Cursor::new(&bytes), HARD_MAX_FRAME, &mut Vec::new()).unwrap();
        prop_assert_eq!(back, Some(req));
    }

    #[test]
    fn responses_round_trip(resp in response()) {
        let bytes = encoded(&resp);
        let back: Option<Response> = read_frame(&mut std::io::Cursor::new(&bytes), HARD_MAX_FRAME, &mut Vec::new()).unwrap();
        prop_assert_eq!(back, Some(resp));
    }

    #[test]
    fn random_payloads_decode_to_a_typed_error_or_a_message(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode_payload::<Request>(&payload);
        let _ = decode_payload::<Response>(&payload);
        let _ = peek_hello_version(&payload);
        read_all::<Request>(&payload, 1024);
    }

    #[test]
    fn damaged_frames_never_panic(
        reqs in proptest::collection::vec(request(), 1..4),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
    ) {
        let mut bytes: Vec<u8> = reqs.iter().flat_map(encoded).collect();
        for (at, x) in &flips {
            let i = at.index(bytes.len());
            bytes[i] ^= x;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        bytes.extend(&tail);
        let n = read_all::<Request>(&bytes, DEFAULT_MAX_FRAME);
        prop_assert!(n <= reqs.len() + 2);
        if flips.is_empty() && tail.is_empty() && bytes.len() == reqs.iter().map(|r| encoded(r).len()).sum::<usize>() {
            prop_assert_eq!(n, reqs.len());
        }
    }
}

/// Found by the `decode_request` fuzz target (kept in
/// `protocol/tests/fuzz-regressions/`): bincode accepts a non-canonical varint, here
/// `fb 04 00` (a u16 marker) for variant 4, so the same request has several
/// encodings. Harmless, but no check may assume decoding is one-to-one.
#[test]
fn a_non_canonical_varint_decodes_like_the_canonical_one() {
    let bytes = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fuzz-regressions/decode_request-noncanonical-varint"
    ))
    .unwrap();
    assert_eq!(bytes, [0xfb, 0x04, 0x00]);
    assert_eq!(decode_payload::<Request>(&bytes).unwrap(), decode_payload::<Request>(&[4]).unwrap());
    assert_eq!(decode_payload::<Request>(&bytes).unwrap(), Request::Status);
}

/// Every input kept in `protocol/tests/fuzz-regressions/` goes through the decoders
/// without a panic.
#[test]
fn fuzz_regression_inputs_decode_without_panic() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fuzz-regressions");
    for entry in std::fs::read_dir(dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let _ = decode_payload::<Request>(&data);
        let _ = decode_payload::<Response>(&data);
        let _ = peek_hello_version(&data);
        read_all::<Request>(&data, 4096);
    }
}
