//! Pipelined writes, through the real processes: clients that send many one-shot
//! writes before reading the answers get each answered once, in the order sent,
//! each with its own outcome; a client killed with writes in flight hurts nobody
//! else; a pipelined write resent with its request id after its answer was lost
//! applies once.

use std::time::Duration;

use litebroker_client::{Db, ErrorKind, Statement, Value, WriteOptions};
use litebroker_protocol::Request;
use litebroker_tests::*;

const WAIT: Duration = Duration::from_secs(60);

const SCHEMA: &str =
    "CREATE TABLE rows (client INTEGER, seq INTEGER, payload TEXT, PRIMARY KEY (client, seq))";

fn setup() -> (TestDir, Broker) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), &[]);
    b.client("admin").execute(SCHEMA, &[]).expect("schema");
    (t, b)
}

fn rows_of(t: &TestDir, client: i64) -> i64 {
    query_i64(&t.db(), &format!("SELECT count(*) FROM rows WHERE client = {client}"))
}

#[test]
fn pipelined_writes_of_four_clients_are_each_answered_once_in_order_and_a_failing_one_fails_alone() {
    let (t, _b) = setup();
    let db = t.db();
    let tools: Vec<Proc> = (1..=4)
        .map(|c| {
            let c = c.to_string();
            let mut args = vec!["pipeline", "--client", &c, "--count", "500"];
            if c == "2" {
                args.extend(["--fail-at", "250"]);
            }
            Proc::lbtool(&db, &args)
        })
        .collect();
    for (i, tool) in tools.iter().enumerate() {
        let client = i as i64 + 1;
        let s = tool.json_line(WAIT);
        let failing = client == 2;
        assert_eq!(s["ok"], if failing { 499 } else { 500 }, "client {client}: {s}");
        assert_eq!(s["in_order"], true, "client {client}'s answers in the order sent: {s}");
        if failing {
            assert_eq!(s["failed"], serde_json::json!([250]), "only the duplicate failed: {s}");
            assert!(s["first_error"].as_str().unwrap_or("").contains("UNIQUE"), "its own error: {s}");
        } else {
            assert_eq!(s["errors"], 0, "client {client}: {s}");
        }
        assert_eq!(rows_of(&t, client), if failing { 499 } else { 500 }, "client {client}'s rows");
    }
    // The write after the failing one ran: it is the failing one's successor.
    assert_eq!(query_i64(&db, "SELECT count(*) FROM rows WHERE client = 2 AND payload = 'p2-251'"), 1);
}

#[test]
fn a_client_killed_with_writes_in_flight_leaves_the_others_unaffected() {
    let (t, b) = setup();
    let db = t.db();
    let mut doomed = Proc::lbtool(&db, &["pipeline", "--client", "9", "--count", "64", "--hold"]);
    assert_eq!(doomed.json_line(WAIT)["sent"], 64);
    let others: Vec<Proc> = (1..=3)
        .map(|c| Proc::lbtool(&db, &["pipeline", "--client", &c.to_string(), "--count", "300"]))
        .collect();
    doomed.kill9();
    for (i, tool) in others.iter().enumerate() {
        let s = tool.json_line(WAIT);
        assert_eq!((s["ok"].as_i64(), s["errors"].as_i64()), (Some(300), Some(0)), "client {}: {s}", i + 1);
        assert_eq!(s["in_order"], true, "{s}");
    }
    // The broker serves on; what the killed client sent ran at most once each.
    b.client("after").execute("INSERT INTO rows VALUES (5, 0, 'after')", &[]).expect("a write after");
    assert!(rows_of(&t, 9) <= 64);
    let log = b.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_pipelined_write_resent_with_its_request_id_after_a_lost_answer_applies_once() {
    let (t, b) = setup();
    let stmt = |i: i64| {
        Statement::new("INSERT INTO rows (client, seq, payload) VALUES (7, ?1, 'x')", vec![Value::Integer(i)])
    };
    let opts = |i: i64| WriteOptions { request_id: Some([i as u8 + 1; 16]), ..WriteOptions::default() };
    // Sent pipelined on a raw connection that goes away without reading an answer.
    {
        let raw = RawConn::connect(&b.socket);
        raw.set_recv_timeout(Some(WAIT));
        raw.handshake("lost-answers");
        for i in 0..20 {
            raw.send(&Request::Execute { stmt: stmt(i), opts: opts(i) });
        }
    }
    // Resent, pipelined again, with the same ids: each is answered (from the
    // record, or by running once if the first attempt never ran).
    let mut c = b.client("resender");
    let mut p = c.pipeline();
    let pending: Vec<_> = (0..20).map(|i| p.submit_with(stmt(i), opts(i)).expect("submit")).collect();
    for (i, h) in pending.into_iter().enumerate() {
        assert_eq!(h.request_id(), Some([i as u8 + 1; 16]));
        let r = p.wait(h).unwrap_or_else(|e| panic!("resend {i}: {e}"));
        assert_eq!(r.changes, 1, "resend {i}");
    }
    drop(p);
    assert_eq!(rows_of(&t, 7), 20, "each applied once");
    // Without its id, the same row again is a plain duplicate.
    let e = c.execute("INSERT INTO rows (client, seq, payload) VALUES (7, 0, 'x')", &[]).expect_err("dup");
    assert_eq!(e.kind(), Some(ErrorKind::Constraint), "{e}");
}

#[test]
fn db_pipeline_answers_each_write_and_keeps_other_requests_in_order() {
    let (t, b) = setup();
    let db = Db::open(t.db()).expect("open");
    let answers = db
        .pipeline(|p| {
            for i in 0..200 {
                let _ = p.submit(
                    "INSERT INTO rows (client, seq, payload) VALUES (3, ?1, 'db')",
                    &[Value::Integer(i % 150)],
                )?;
            }
            Ok(p.wait_all())
        })
        .expect("pipeline");
    assert_eq!(answers.len(), 200);
    let failed: Vec<usize> = answers.iter().enumerate().filter(|(_, r)| r.is_err()).map(|(i, _)| i).collect();
    assert_eq!(failed, (150..200).collect::<Vec<_>>(), "the duplicates fail, each alone");
    assert_eq!(rows_of(&t, 3), 150);
    // A status request after pipelined writes sees them all committed.
    let mut c = b.client("status");
    {
        let mut p = c.pipeline();
        for i in 0..50 {
            let _ =
                p.submit("INSERT INTO rows (client, seq, payload) VALUES (4, ?1, 's')", &[Value::Integer(i)]);
        }
    }
    assert!(c.status().expect("status").commits > 0);
    assert_eq!(rows_of(&t, 4), 50);
}

#[test]
fn queued_pipelined_writes_past_their_deadlines_time_out_each_in_order_and_none_is_applied() {
    let (t, b) = setup();
    let mut holder = b.client("holder");
    let session = holder.session(WAIT).expect("session");
    let mut c = b.client("pipeliner");
    let started = std::time::Instant::now();
    let answers = {
        let mut p = c.pipeline();
        // Increasing deadlines: the queue is cancelled entry by entry as each passes.
        for i in 0..5 {
            let stmt = Statement::new(
                "INSERT INTO rows (client, seq, payload) VALUES (8, ?1, 'late')",
                vec![Value::Integer(i)],
            );
            let opts = WriteOptions { timeout_ms: 300 + 100 * i as u32, ..WriteOptions::default() };
            let _ = p.submit_with(stmt, opts).expect("submit");
        }
        p.wait_all()
    };
    assert_eq!(answers.len(), 5);
    for (i, a) in answers.iter().enumerate() {
        let e = a.as_ref().expect_err("the writer is held");
        assert_eq!(e.kind(), Some(ErrorKind::Timeout), "write {i}: {e}");
        assert!(e.to_string().contains("'holder'"), "write {i} names the holder: {e}");
    }
    assert!(started.elapsed() < Duration::from_secs(10), "answered near their deadlines");
    // The holder commits afterwards: nothing cancelled runs then.
    session.commit().expect("commit");
    b.client("after").execute("INSERT INTO rows VALUES (8, 100, 'after')", &[]).expect("a write after");
    assert_eq!(rows_of(&t, 8), 1, "only the write after: the timed-out ones were never applied");
    // The connection goes on: a pipelined write after the timeouts is applied.
    let mut p = c.pipeline();
    let h = p.submit("INSERT INTO rows VALUES (8, 101, 'again')", &[]).expect("submit");
    assert_eq!(p.wait(h).expect("applied").changes, 1);
}
