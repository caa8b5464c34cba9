//! The broker answers small one-shot writes from whichever thread commits them,
//! straight onto the client's socket, while the client's connection thread goes
//! back to reading. These tests pin what must not change with that: deadlines of
//! queued writes, answer order for a client that does not wait for its answers,
//! and that a client that never reads its answers stalls nobody else.
#![cfg(unix)]

use std::thread;
use std::time::{Duration, Instant};

use litebroker_client::{ErrorKind, Statement, Value, WriteOptions};
use litebroker_protocol::{Request, Response};
use litebroker_tests::*;

const WAIT: Duration = Duration::from_secs(30);

fn setup(args: &[&str]) -> (TestDir, Broker) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), args);
    b.client("admin").execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)", &[]).expect("schema");
    (t, b)
}

/// A raw protocol connection, after the handshake.
fn raw(b: &Broker) -> RawConn {
    let s = RawConn::connect(&b.socket);
    s.set_recv_timeout(Some(WAIT));
    s.handshake("raw");
    s
}

fn insert(v: &str) -> Request {
    Request::Execute {
        stmt: Statement::new("INSERT INTO t (v) VALUES (?1)", vec![Value::Text(v.into())]),
        opts: WriteOptions::default(),
    }
}

#[test]
fn a_queued_write_past_its_deadline_times_out_naming_the_holder_and_is_not_applied() {
    let (t, b) = setup(&[]);
    let mut holder = b.client("holder");
    let session = holder.session(WAIT).expect("session");
    let mut c = b.client("waiter");
    let started = Instant::now();
    let e = c
        .execute_with(
            Statement::new("INSERT INTO t (v) VALUES ('late')", vec![]),
            WriteOptions { timeout_ms: 300, ..Default::default() },
        )
        .expect_err("the writer is held");
    assert_eq!(e.kind(), Some(ErrorKind::Timeout), "{e}");
    assert!(e.to_string().contains("'holder'"), "names the holder: {e}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered near its deadline");
    session.rollback().expect("rollback");
    // The connection goes on, and the timed-out write never ran.
    c.execute("INSERT INTO t (v) VALUES ('next')", &[]).expect("next write");
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t WHERE v = 'late'"), 0);
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t WHERE v = 'next'"), 1);
}

#[test]
fn a_client_that_sends_before_reading_gets_its_answers_in_order() {
    let (t, b) = setup(&[]);
    let s = raw(&b);
    for i in 0..200 {
        s.send(&insert(&format!("p{i}")));
    }
    // A request of another kind in between waits for the writes' answers.
    s.send(&Request::Ping);
    for i in 0..200i64 {
        match s.recv() {
            Response::Executed(x) => assert_eq!(x.last_insert_rowid, i + 1, "answer {i} out of order"),
            other => panic!("answer {i}: {other:?}"),
        }
    }
    assert!(matches!(s.recv(), Response::Pong));
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t"), 200);
}

#[test]
fn a_client_that_never_reads_its_answers_stalls_nobody_else() {
    let (t, b) = setup(&["--io-timeout-secs", "1"]);
    let s = raw(&b);
    // Fill the socket with answers nobody reads; the broker must keep serving
    // others, and drop this client once it stalls.
    let flooder = thread::spawn(move || {
        let frames: Vec<u8> = (0..50_000).flat_map(|i| frame_of(&insert(&format!("f{i}")))).collect();
        // Fails once the broker gives up on this connection.
        let _ = s.send_bytes(&frames);
        // Kept open, never read, until the test ends.
        s
    });
    let mut c = b.client("polite");
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let t0 = Instant::now();
        c.execute("INSERT INTO t (v) VALUES (?1)", &[format!("ok{i}").into()]).expect("polite write");
        worst = worst.max(t0.elapsed());
    }
    assert!(worst < Duration::from_secs(5), "a polite client waited {worst:?}");
    let _flooder = flooder.join().expect("flooder");
    assert!(
        wait_until(WAIT, || b.log().contains("not reading answers")),
        "the flooding client was not disconnected:\n{}",
        b.log()
    );
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t WHERE v LIKE 'ok%'"), 200);
    // The broker still serves new clients.
    b.client("after").execute("INSERT INTO t (v) VALUES ('after')", &[]).expect("after");
}

#[test]
fn writes_committed_by_connection_threads_still_get_the_idle_checkpoint() {
    let (t, b) = setup(&["--idle-checkpoint-ms", "200"]);
    let idle_checkpoints = || b.log().matches("idle checkpoint").count();
    assert!(
        wait_until(WAIT, || idle_checkpoints() >= 1),
        "no idle checkpoint after the schema:\n{}",
        b.log()
    );
    let before = idle_checkpoints();
    // Single INSERTs on an idle broker: each is committed by its own connection
    // thread and answered on the socket directly, while the writer thread sleeps.
    let mut c = b.client("direct");
    for i in 0..50 {
        c.execute("INSERT INTO t (v) VALUES (?1)", &[format!("d{i}").into()]).expect("write");
    }
    let wal = litebroker_server::ops::wal_path(&t.db());
    assert!(
        wait_until(WAIT, || idle_checkpoints() > before
            && std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(1) == 0),
        "the writes were not followed by an idle checkpoint:\n{}",
        b.log()
    );
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t"), 50);
}
