//! The broker's metrics: `litebroker metrics` passes `promtool check metrics`
//! (the Prometheus project's own judge of the text format); a scrape of
//! `--metrics-listen` moves each counter by exactly the requests sent; a
//! non-loopback address is refused before anything is touched; slow and garbage
//! HTTP clients cost the writers nothing and are cut off, after which the scrape
//! answers; `litebroker top` in a real terminal shows moving figures and leaves
//! with `q` or Ctrl-C, giving the terminal back.
//!
//! The tests that need promtool or tmux fail, saying how to install them, when
//! they are missing (`.ci/run` installs both). Those and the HTTP ones are Unix
//! only; the exit-2 refusal and the CLI's counts run everywhere.

// The helpers of the Unix-only tests are unused elsewhere.
#![cfg_attr(not(unix), allow(unused))]

use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use litebroker_client::{Client, Statement, Value};
use litebroker_tests::*;
use serde_json::Value as Json;

fn setup(args: &[&str]) -> (TestDir, Broker) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), args);
    b.client("admin").execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT UNIQUE)", &[]).expect("schema");
    (t, b)
}

fn insert(c: &mut Client, v: &str) -> Result<(), litebroker_client::ClientError> {
    c.execute("INSERT INTO t (v) VALUES (?1)", &[Value::Text(v.into())]).map(drop)
}

/// The value of one sample of `litebroker --json metrics`' document: the series of
/// family `name` whose labels include `labels` (0 when absent).
fn json_value(doc: &Json, name: &str, labels: &[(&str, &str)]) -> f64 {
    let Some(family) = doc["families"].as_array().unwrap().iter().find(|f| f["name"] == name) else {
        return 0.0;
    };
    family["series"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .map(|s| s["value"].as_f64().unwrap_or(0.0))
        .sum()
}

#[test]
fn the_cli_counts_requests_by_kind_and_outcome() {
    let (t, b) = setup(&[]);
    let db = t.db();
    assert_exit(&cli(&db, &["exec", "INSERT INTO t (v) VALUES ('a')"]), 0);
    assert_exit(&cli(&db, &["exec", "INSERT INTO t (v) VALUES ('a')"]), 1);
    assert_exit(&cli(&db, &["exec", "ATTACH 'other.db' AS o"]), 1);
    let o = cli(&db, &["--json", "metrics"]);
    assert_exit(&o, 0);
    let doc = json_out(&o);
    let requests = |kind, outcome| {
        json_value(&doc, "litebroker_requests_total", &[("kind", kind), ("outcome", outcome)])
    };
    // The schema's write, then one of each outcome.
    assert_eq!(requests("execute", "ok"), 2.0, "{doc}");
    assert_eq!(requests("execute", "constraint"), 1.0, "{doc}");
    assert_eq!(requests("execute", "not_allowed"), 1.0, "{doc}");
    // Every connection's handshake (the admin client, three exec, this one).
    assert_eq!(requests("hello", "ok"), 5.0, "{doc}");
    assert_eq!(json_value(&doc, "litebroker_authorizer_denials_total", &[]), 1.0, "{doc}");
    assert_eq!(json_value(&doc, "litebroker_clients", &[]), 1.0, "the CLI itself: {doc}");
    if cfg!(any(target_os = "linux", windows)) {
        assert!(json_value(&doc, "litebroker_process_resident_memory_bytes", &[]) > 1e6, "{doc}");
        let fds =
            doc["families"].as_array().unwrap().iter().find(|f| f["name"] == "litebroker_process_open_fds");
        assert!(fds.is_some(), "{doc}");
        // Wine answers GetProcessHandleCount with 0 handles: the count is checked on Linux.
        if cfg!(target_os = "linux") {
            assert!(json_value(&doc, "litebroker_process_open_fds", &[]) >= 3.0, "{doc}");
        }
    }
    let text = stdout(&cli(&db, &["metrics"]));
    assert!(text.contains("# TYPE litebroker_write_latency_seconds histogram\n"), "{text}");
    assert!(
        text.contains("litebroker_requests_total{kind=\"execute\",outcome=\"constraint\"} 1\n"),
        "{text}"
    );
    drop(b);
}

#[test]
fn a_metrics_listen_address_that_is_not_loopback_is_refused_before_the_database_is_touched() {
    let t = TestDir::new();
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:9899", "example.com:80"] {
        let o = Command::new(bin("litebrokerd"))
            .arg("--db")
            .arg(t.db())
            .args(["--metrics-listen", addr])
            .stdin(Stdio::null())
            .output()
            .expect("litebrokerd");
        assert_exit(&o, 2);
        let err = stderr(&o);
        assert!(err.contains("--metrics-listen"), "{addr}: {err}");
        assert!(!t.db().parent().unwrap().exists(), "{addr}: the database's folder was created");
    }
}

#[test]
fn a_taken_metrics_port_is_exit_2_but_a_second_broker_is_told_the_database_is_served() {
    let t = TestDir::new();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let addr = format!("127.0.0.1:{port}");
    let mut first = Broker::spawn(&t.db(), &["--metrics-listen", &addr]);
    assert_eq!(first.wait_exit(READY_TIMEOUT).and_then(|s| s.code()), Some(2), "{}", first.log());
    assert!(first.log().contains(&format!("cannot serve metrics on {addr}")), "{}", first.log());
    drop(taken);
    let b = Broker::start(&t.db(), &["--metrics-listen", &addr]);
    assert_eq!(b.metrics_addr().port(), port);
    let mut second = Broker::spawn(&t.db(), &["--metrics-listen", &addr]);
    assert_eq!(second.wait_exit(READY_TIMEOUT).and_then(|s| s.code()), Some(3), "{}", second.log());
}

/// The Prometheus text format of `addr`'s `/metrics`, checked as HTTP.
#[cfg(unix)]
fn scrape(addr: SocketAddr) -> std::collections::BTreeMap<String, f64> {
    let a = http_get(addr, "/metrics").unwrap_or_else(|e| panic!("scrape: {e}"));
    assert_eq!(a.status, 200, "{a:?}");
    assert!(a.head.contains("Content-Type: text/plain; version=0.0.4"), "{}", a.head);
    assert!(a.head.contains("Connection: close"), "{}", a.head);
    samples(&a.body)
}

#[cfg(unix)]
fn promtool_check(text: &str, what: &str) {
    use std::io::Write;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run promtool ({e}): install it (apt-get install prometheus; .ci/run does)")
        });
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics on {what}: exit {:?}\n{}{}\n--- the text:\n{text}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
}

#[cfg(unix)]
#[test]
fn the_exposition_passes_promtool_check_metrics() {
    let (t, b) = setup(&["--metrics-listen", "127.0.0.1:0", "--lease-secs", "0.3"]);
    // Something in every family: writes and their failures, a batch, sessions
    // (one outlives its lease), a checkpoint, a backup, a frame that does not
    // decode, a denial.
    let mut c = b.client("filler");
    insert(&mut c, "a").unwrap();
    insert(&mut c, "a").unwrap_err();
    c.execute_batch(vec![Statement::new("INSERT INTO t (v) VALUES ('b')", vec![])]).unwrap();
    let mut s = c.session(Duration::from_secs(10)).unwrap();
    s.execute("INSERT INTO t (v) VALUES ('c')", &[]).unwrap();
    s.commit().unwrap();
    let mut expired = b.client("sleeper");
    let s = expired.session(Duration::from_secs(10)).unwrap();
    assert!(
        wait_until(READY_TIMEOUT, || c.status().unwrap().writer_holder.is_none()),
        "the lease never ran out"
    );
    drop(s);
    c.checkpoint(litebroker_client::protocol::CheckpointMode::Passive).unwrap();
    c.backup("metrics", 0, &mut |_, _| {}).unwrap();
    assert_exit(&cli(&t.db(), &["exec", "ATTACH 'x.db' AS x"]), 1);
    let raw = RawConn::connect(&b.socket);
    raw.handshake("raw");
    raw.send_bytes(&raw_frame(&[0xEE])).unwrap();
    let _ = raw.recv();

    let o = cli(&t.db(), &["metrics"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    promtool_check(&text, "litebroker metrics");
    let sample = samples(&text);
    for (key, at_least) in [
        ("litebroker_requests_total{kind=\"unknown\",outcome=\"protocol\"}", 1.0),
        ("litebroker_write_session_lease_expiries_total", 1.0),
        ("litebroker_write_session_hold_seconds_count", 2.0),
        ("litebroker_checkpoints_total{mode=\"passive\",result=\"complete\"}", 1.0),
        ("litebroker_backups_total{result=\"ok\"}", 1.0),
        ("litebroker_authorizer_denials_total", 1.0),
        ("litebroker_write_commit_seconds_count", 2.0),
    ] {
        assert!(sample.get(key).copied().unwrap_or(0.0) >= at_least, "{key} below {at_least}:\n{text}");
    }
    let body = http_get(b.metrics_addr(), "/metrics").unwrap().body;
    promtool_check(&body, "GET /metrics");
}

#[cfg(unix)]
#[test]
fn a_scrape_moves_each_counter_by_exactly_the_requests_sent() {
    let (_t, b) = setup(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = b.metrics_addr();
    let mut status = b.client("status");
    let status_before = status.status().unwrap();
    let before = scrape(addr);
    // 7 one-row INSERTs (answered on the socket by whoever commits them), 2 that
    // fail on the unique key, 3 batches, 4 pings, all from one new client.
    let mut c = b.client("counted");
    for i in 0..7 {
        insert(&mut c, &format!("v{i}")).unwrap();
    }
    for _ in 0..2 {
        insert(&mut c, "v0").unwrap_err();
    }
    for i in 0..3 {
        c.execute_batch(vec![Statement::new(
            "UPDATE t SET v = v || ?1 WHERE id = 1",
            vec![Value::Integer(i)],
        )])
        .unwrap();
    }
    for _ in 0..4 {
        c.ping().unwrap();
    }
    let after = scrape(addr);
    let status_after = status.status().unwrap();
    let delta = |key: &str| after.get(key).copied().unwrap_or(0.0) - before.get(key).copied().unwrap_or(0.0);
    let requests = |kind: &str, outcome: &str| {
        delta(&format!("litebroker_requests_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"))
    };
    assert_eq!(requests("execute", "ok"), 7.0);
    assert_eq!(requests("execute", "constraint"), 2.0);
    assert_eq!(requests("batch", "ok"), 3.0);
    assert_eq!(requests("ping", "ok"), 4.0);
    assert_eq!(requests("hello", "ok"), 1.0);
    assert_eq!(
        requests("status", "ok"),
        0.0,
        "the status client asked before the first scrape and after the second"
    );
    // The writes: 12 answered by the writer, 10 committed, each in its own
    // transaction (one client, one at a time), each with a request id recorded.
    assert_eq!(delta("litebroker_write_latency_seconds_count"), 12.0);
    assert_eq!(delta("litebroker_write_execute_seconds_count"), 12.0);
    assert_eq!(delta("litebroker_write_queue_wait_seconds_count"), 12.0);
    assert_eq!(delta("litebroker_commits_total"), 10.0);
    assert_eq!(delta("litebroker_group_commit_requests_count"), 10.0);
    assert_eq!(delta("litebroker_group_commit_requests_sum"), 10.0);
    assert_eq!(delta("litebroker_write_commit_seconds_count"), 10.0);
    assert_eq!(delta("litebroker_request_ids_recorded_total"), 10.0);
    assert_eq!(delta("litebroker_metrics_http_requests_total{code=\"200\"}"), 1.0, "the first scrape");
    // status shares the histograms: the same figures.
    assert_eq!((status_after.group_commits - status_before.group_commits) as f64, 10.0);
    assert_eq!((status_after.queue_waits - status_before.queue_waits) as f64, 12.0);
    assert_eq!(after["litebroker_group_commit_requests_count"], status_after.group_commits as f64);
}

/// A raw client of the endpoint: sends `request`, then reads until the server
/// closes; returns the status code (None: closed without an answer) and when.
#[cfg(unix)]
fn raw_http(
    addr: SocketAddr,
    request: &[u8],
    then: impl FnOnce(&mut std::net::TcpStream),
) -> (Option<u16>, Instant) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    // A server that closes while bytes are unread may reset: what was sent still
    // counts as sent.
    let _ = s.write_all(request);
    then(&mut s);
    let mut raw = Vec::new();
    let _ = s.read_to_end(&mut raw);
    (parse_answer(&raw).ok().map(|a| a.status), Instant::now())
}

#[cfg(unix)]
#[test]
fn slow_and_garbage_http_clients_cost_the_writers_nothing_and_the_scrape_answers_after_them() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};

    let (_t, b) = setup(&["--metrics-listen", "127.0.0.1:0"]);
    let addr = b.metrics_addr();
    // A writer in a closed loop, noting when each write was answered and how long
    // it took.
    let stop = Arc::new(AtomicBool::new(false));
    let writes: Arc<Mutex<Vec<(Instant, Duration)>>> = Arc::default();
    let writer = {
        let (stop, writes, mut c) = (stop.clone(), writes.clone(), b.client("writer"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                insert(&mut c, &format!("w{i}")).expect("write");
                writes.lock().unwrap().push((Instant::now(), t0.elapsed()));
                i += 1;
            }
        })
    };
    // A slow loris: the start of a request head, then a byte now and then, which
    // never completes it.
    let loris_started = Instant::now();
    let loris = std::thread::spawn(move || {
        raw_http(addr, b"GET /metrics HTTP/1.1\r\nX-Slow: ", |s| {
            use std::io::Write;
            for _ in 0..40 {
                std::thread::sleep(Duration::from_millis(250));
                if s.write_all(b"a").is_err() {
                    return;
                }
            }
        })
    });
    // Garbage, behind it in the endpoint's queue (the slow client connects first):
    // a head too large, bytes without an end (never a line feed), a request line
    // that is not HTTP, another path, another method.
    std::thread::sleep(Duration::from_millis(200));
    let mut garbage = Rng::new(7);
    let too_large: Vec<u8> = (0..20_000).map(|_| b'a' + garbage.below(26) as u8).collect();
    let truncated: Vec<u8> = garbage.bytes(100).into_iter().map(|b| b | 0x80).collect();
    let queued: Vec<_> = [
        (too_large, Some(431)),
        (truncated, Some(408)),
        (b"\x16\x03\x01 hello\r\n\r\n".to_vec(), Some(400)),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), Some(404)),
        (b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(), Some(405)),
    ]
    .into_iter()
    .map(|(bytes, want)| std::thread::spawn(move || (raw_http(addr, &bytes, |_| {}), want)))
    .collect();

    let (loris_answer, loris_cut) = loris.join().unwrap();
    let held = loris_cut - loris_started;
    assert_eq!(loris_answer, Some(408), "the slow client is told it was too slow");
    assert!(held < Duration::from_secs(6), "the slow client held the endpoint {held:?}");
    {
        // While the slow client held the endpoint, the writer went on.
        let w = writes.lock().unwrap();
        let during: Vec<_> = w.iter().filter(|(at, _)| *at > loris_started && *at < loris_cut).collect();
        assert!(during.len() >= 10, "{} writes while the slow client was served", during.len());
        let slowest = during.iter().map(|(_, took)| *took).max().unwrap();
        assert!(slowest < Duration::from_secs(1), "a write took {slowest:?} meanwhile");
    }
    for q in queued {
        let ((got, _), want) = q.join().unwrap();
        // A server that closes on unread bytes may reset before its answer is read.
        assert!(got == want || got.is_none(), "got {got:?}, want {want:?}");
    }
    // After them, the scrape answers, and counts what it refused.
    let t0 = Instant::now();
    let m = scrape(addr);
    assert!(t0.elapsed() < Duration::from_secs(5), "the scrape took {:?}", t0.elapsed());
    for (code, at_least) in [("408", 2.0), ("400", 1.0), ("404", 1.0), ("405", 1.0), ("431", 1.0)] {
        let key = format!("litebroker_metrics_http_requests_total{{code=\"{code}\"}}");
        assert!(m[&key] >= at_least, "{key}: {}", m[&key]);
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[cfg(unix)]
#[test]
fn top_in_a_terminal_shows_moving_figures_and_leaves_with_q_or_ctrl_c() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let (t, b) = setup(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, mut c) = (stop.clone(), b.client("writer"));
        std::thread::spawn(move || {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                insert(&mut c, &format!("w{i}")).expect("write");
                i += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let db = t.db().display().to_string();
    let line_value = |screen: &str, label: &str| -> Option<f64> {
        let line = screen.lines().find(|l| l.starts_with(label))?;
        line[label.len()..].split_whitespace().next()?.parse().ok()
    };
    for leave in ["q", "C-c"] {
        let term = Terminal::start(t.path(), &bin("litebroker"), &["--db", &db, "top"], (110, 30));
        let wait = Duration::from_secs(30);
        let first =
            term.wait_for("a write rate", wait, |s| line_value(s, "writes/s").is_some_and(|r| r > 0.0));
        assert!(first.contains("write latency p50 ") && !first.contains("p50 —"), "{first}");
        assert!(first.contains("clients ") && first.contains("WAL "), "{first}");
        let requests = line_value(&first, "requests").expect("the requests line");
        let later = term.wait_for("the request count moving", wait, |s| {
            line_value(s, "requests").is_some_and(|n| n > requests)
        });
        assert!(later.contains("litebroker top — "), "{later}");
        term.keys(&[leave]);
        let (code, settings) = term.wait_exit(wait);
        assert_eq!(code, 0, "top left with {leave}");
        let words: Vec<&str> = settings.split_whitespace().collect();
        assert!(words.contains(&"icanon") && words.contains(&"echo"), "terminal not restored: {settings}");
        assert!(!term.screen().contains("litebroker top — "), "still on the alternate screen");
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
}

#[test]
fn the_change_feed_figures_are_families_that_move_with_watchers_and_commits() {
    let (t, b) = setup(&[]);
    let figures = || json_out(&cli(&t.db(), &["--json", "metrics"]));
    let value = |doc: &Json, name: &str| json_value(doc, name, &[]);
    let before = figures();
    assert_eq!(value(&before, "litebroker_feed_subscribers"), 0.0);
    let db = litebroker_client::Db::open(t.db()).expect("open the Db");
    let mut watch = db.watch(&["t"]);
    watch.subscribe().expect("subscribed");
    let mut c = b.client("writer");
    insert(&mut c, "watched").unwrap();
    let event = watch.next_timeout(Duration::from_secs(20)).expect("watch").expect("an event");
    assert_eq!(event.tables[0].inserted, 1);
    let after = figures();
    assert_eq!(value(&after, "litebroker_feed_subscribers"), 1.0);
    let published = |doc: &Json| value(doc, "litebroker_feed_events_published_total");
    assert_eq!(published(&after) - published(&before), 1.0);
    assert!(
        value(&after, "litebroker_feed_ring_events") >= 1.0
            && value(&after, "litebroker_feed_ring_bytes") > 0.0
    );
    assert_eq!(value(&after, "litebroker_feed_resyncs_total"), 0.0);
    drop(watch);
    // The broker forgets a watcher that left at its next look at the socket
    // (Unix, every second) or, on Windows, when writing an event to it fails: the
    // first write after the client left may still land in the pipe's buffer, so
    // each look here commits one more event.
    let mut n = 0;
    assert!(
        wait_until(Duration::from_secs(20), || {
            n += 1;
            insert(&mut c, &format!("after the watcher left {n}")).unwrap();
            value(&figures(), "litebroker_feed_subscribers") == 0.0
        }),
        "the subscriber was not dropped"
    );
}
