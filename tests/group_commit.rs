//! Group commit, proven against the real broker with many client connections:
//! a failing request fails alone, a constraint only COMMIT detects fails only its
//! request, groups are bounded, requests are applied in arrival order, each
//! client's pipelined requests are applied and answered in the order it sent them,
//! and a greedy client cannot starve a small one.
//!
//! Groups are formed deterministically: a write session holds the writer while the
//! other clients' requests queue (the test waits until `status` shows them queued),
//! then the session ends and the writer commits what queued.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use litebroker_client::protocol::BrokerStatus;
use litebroker_client::{
    Client, ClientError, ErrorKind, ExecResult, Statement, Value, WriteOptions, WriteSession,
};
use litebroker_protocol::{Request, Response};
use litebroker_tests::*;

const WAIT: Duration = Duration::from_secs(30);

fn status(c: &mut Client) -> BrokerStatus {
    c.status().expect("status")
}

/// Opens a write session on `holder`, then waits until nothing else is counted in
/// the queue: the session's own request is counted until the writer is done with
/// it, which may be just after its answer, and `wait_queued` counts from zero.
#[track_caller]
fn hold_writer<'a>(holder: &'a mut Client, admin: &mut Client) -> WriteSession<&'a mut Client> {
    let session = holder.session(WAIT).expect("session");
    let ok = wait_until(WAIT, || status(admin).queue_depth == 0);
    assert!(ok, "the queue never emptied: {:?}", status(admin));
    session
}

/// Sends one write from its own connection on a thread.
fn spawn_write(
    mut c: Client,
    sql: &'static str,
    params: Vec<Value>,
) -> JoinHandle<Result<ExecResult, ClientError>> {
    thread::spawn(move || c.execute(sql, &params))
}

fn setup(args: &[&str]) -> (TestDir, Broker, Client) {
    let t = TestDir::new();
    let b = Broker::start(&t.db(), args);
    let mut admin = b.client("admin");
    admin
        .execute(
            "CREATE TABLE t (id INTEGER PRIMARY KEY, who TEXT NOT NULL, v TEXT UNIQUE);
             CREATE TABLE parent (id INTEGER PRIMARY KEY);
             CREATE TABLE child (id INTEGER PRIMARY KEY,
                 parent_id INTEGER NOT NULL REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED);
             INSERT INTO parent (id) VALUES (1);",
            &[],
        )
        .expect("schema");
    (t, b, admin)
}

#[test]
fn a_failing_request_fails_alone_and_the_rest_of_its_group_commits() {
    let (t, b, mut admin) = setup(&[]);
    admin.execute("INSERT INTO t (who, v) VALUES ('seed', 'taken')", &[]).unwrap();
    let clients: Vec<Client> = (0..6).map(|i| b.client(&format!("c{i}"))).collect();
    let before = status(&mut admin);

    let mut holder = b.client("holder");
    let session = hold_writer(&mut holder, &mut admin);
    let mut handles = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        // Client 3 violates the UNIQUE constraint; the others are good.
        let v = if i == 3 { "taken".to_owned() } else { format!("v{i}") };
        handles.push(spawn_write(
            c,
            "INSERT INTO t (who, v) VALUES (?1, ?2)",
            vec![format!("c{i}").into(), v.into()],
        ));
    }
    wait_queued(&mut admin, 6);
    session.commit().expect("commit the session");

    for (i, h) in handles.into_iter().enumerate() {
        let r = h.join().expect("thread");
        if i == 3 {
            let e = r.expect_err("the duplicate must fail");
            assert_eq!(e.kind(), Some(ErrorKind::Constraint), "{e}");
            assert!(e.to_string().contains("UNIQUE constraint failed: t.v"), "{e}");
            // Its own error, not the group's.
            assert!(!e.to_string().contains("committed with"), "{e}");
        } else {
            let r = r.unwrap_or_else(|e| panic!("client {i} failed: {e}"));
            assert_eq!(r.changes, 1);
        }
    }
    assert_eq!(
        query_texts(&t.db(), "SELECT who FROM t ORDER BY who"),
        ["c0", "c1", "c2", "c4", "c5", "seed"]
    );
    let after = status(&mut admin);
    assert_eq!(after.group_commits - before.group_commits, 1, "one transaction for the six: {after:?}");
    assert_eq!(after.group_requests - before.group_requests, 6, "{after:?}");
    assert!(after.max_group >= 6, "{after:?}");
    assert!(after.queue_waits >= before.queue_waits + 6, "{after:?}");
    assert_eq!(integrity(&t.db()), "ok");
}

#[test]
fn a_constraint_only_commit_detects_fails_only_its_request() {
    let (t, b, mut admin) = setup(&[]);
    let clients: Vec<Client> = (0..5).map(|i| b.client(&format!("c{i}"))).collect();

    let mut holder = b.client("holder");
    let session = hold_writer(&mut holder, &mut admin);
    let mut handles = Vec::new();
    for (i, c) in clients.into_iter().enumerate() {
        // A DEFERRABLE INITIALLY DEFERRED foreign key is only checked at COMMIT:
        // client 2 references a parent that does not exist.
        let parent = if i == 2 { 99 } else { 1 };
        handles.push(spawn_write(
            c,
            "INSERT INTO child (id, parent_id) VALUES (?1, ?2)",
            vec![Value::Integer(10 + i as i64), Value::Integer(parent)],
        ));
    }
    wait_queued(&mut admin, 5);
    session.commit().expect("commit the session");

    for (i, h) in handles.into_iter().enumerate() {
        let r = h.join().expect("thread");
        if i == 2 {
            let e = r.expect_err("the dangling reference must fail");
            assert_eq!(e.kind(), Some(ErrorKind::Constraint), "{e}");
            assert!(e.to_string().contains("FOREIGN KEY constraint failed"), "{e}");
        } else {
            r.unwrap_or_else(|e| panic!("client {i} failed: {e}"));
        }
    }
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM child"), 4);
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM child WHERE parent_id = 99"), 0);
    assert_eq!(foreign_key_violations(&t.db()), 0);

    // Alone (no savepoint), the same violation fails the same way, and a request
    // that creates and resolves the violation itself is fine.
    let e = admin.execute("INSERT INTO child (id, parent_id) VALUES (50, 98)", &[]).expect_err("dangling");
    assert_eq!(e.kind(), Some(ErrorKind::Constraint), "{e}");
    assert!(e.to_string().contains("FOREIGN KEY constraint failed"), "{e}");
    admin
        .execute(
            "INSERT INTO child (id, parent_id) VALUES (51, 97); INSERT INTO parent (id) VALUES (97)",
            &[],
        )
        .expect("resolved within the request");
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM child"), 5);
    assert_eq!(foreign_key_violations(&t.db()), 0);
}

#[test]
fn groups_are_bounded_by_max_group_requests() {
    let (t, b, mut admin) = setup(&["--max-group-requests", "3"]);
    let clients: Vec<Client> = (0..7).map(|i| b.client(&format!("c{i}"))).collect();
    let before = status(&mut admin);
    let mut holder = b.client("holder");
    let session = hold_writer(&mut holder, &mut admin);
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(i, c)| spawn_write(c, "INSERT INTO t (who) VALUES (?1)", vec![format!("c{i}").into()]))
        .collect();
    wait_queued(&mut admin, 7);
    session.rollback().expect("roll back the session");
    for h in handles {
        h.join().expect("thread").expect("write");
    }
    let after = status(&mut admin);
    // 7 requests, at most 3 per transaction: 3 + 3 + 1.
    assert_eq!(after.group_commits - before.group_commits, 3, "{after:?}");
    assert_eq!(after.max_group, 3, "{after:?}");
    assert_eq!(query_i64(&t.db(), "SELECT count(*) FROM t"), 7);
}

#[test]
fn queued_requests_are_applied_in_arrival_order() {
    let (t, b, mut admin) = setup(&[]);
    let clients: Vec<Client> = (0..8).map(|i| b.client(&format!("c{i}"))).collect();
    let mut holder = b.client("holder");
    let session = hold_writer(&mut holder, &mut admin);
    let mut handles = Vec::new();
    // Client 7 arrives first, client 0 last: the order of arrival, not of
    // connection or id, decides.
    for (n, (i, c)) in clients.into_iter().enumerate().rev().enumerate() {
        handles.push(spawn_write(c, "INSERT INTO t (who) VALUES (?1)", vec![format!("c{i}").into()]));
        wait_queued(&mut admin, n as u32 + 1);
    }
    session.commit().expect("commit the session");
    for h in handles {
        h.join().expect("thread").expect("write");
    }
    assert_eq!(
        query_texts(&t.db(), "SELECT who FROM t ORDER BY id"),
        ["c7", "c6", "c5", "c4", "c3", "c2", "c1", "c0"]
    );
}

/// Every client sends all its writes before reading any answer (pipelined, on one
/// connection), while the others do the same, starting together behind a held
/// writer so that the groups mix clients: the broker must apply each client's
/// writes in the order they were sent, and answer them in that order. A client
/// that waited for each answer before sending its next write could never have two
/// of them in the broker at once, so it could not catch a reordering; these can.
#[test]
fn each_clients_pipelined_requests_are_applied_and_answered_in_order_under_concurrency() {
    const CLIENTS: usize = 6;
    const WRITES: usize = 150;
    let (t, b, mut admin) = setup(&[]);
    let conns: Vec<RawConn> = (0..CLIENTS)
        .map(|i| {
            let c = RawConn::connect(&b.socket);
            c.set_recv_timeout(Some(WAIT));
            c.handshake(&format!("c{i}"));
            c
        })
        .collect();
    let mut holder = b.client("holder");
    let session = hold_writer(&mut holder, &mut admin);
    let start = Arc::new(Barrier::new(CLIENTS));
    let handles: Vec<JoinHandle<Vec<i64>>> = conns
        .into_iter()
        .enumerate()
        .map(|(i, c)| {
            let start = start.clone();
            thread::spawn(move || {
                let frames: Vec<u8> = (0..WRITES)
                    .flat_map(|seq| {
                        frame_of(&Request::Execute {
                            stmt: Statement::new(
                                "INSERT INTO t (who, v) VALUES (?1, ?2)",
                                vec![format!("c{i}").into(), format!("c{i}-{seq}").into()],
                            ),
                            opts: WriteOptions::default(),
                        })
                    })
                    .collect();
                start.wait();
                // About 9 KiB: one write puts every request in the socket at once.
                c.send_bytes(&frames).expect("send every write before reading an answer");
                (0..WRITES)
                    .map(|seq| match c.recv() {
                        Response::Executed(r) if r.changes == 1 => r.last_insert_rowid,
                        other => panic!("client {i}, answer {seq}: {other:?}"),
                    })
                    .collect()
            })
        })
        .collect();
    // Each client's first write waits for the writer; the rest wait behind it.
    wait_queued(&mut admin, CLIENTS as u32);
    session.commit().expect("commit the session");
    let answered: Vec<Vec<i64>> = handles.into_iter().map(|h| h.join().expect("client thread")).collect();

    let c = open_ro(&t.db());
    let mut rows = c.prepare("SELECT id, v FROM t WHERE who = ?1 ORDER BY id").unwrap();
    for (i, ids) in answered.iter().enumerate() {
        let stored: Vec<(i64, String)> = rows
            .query_map([format!("c{i}")], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        // Applied in the order sent: row ids rise with the client's sequence.
        let values: Vec<&str> = stored.iter().map(|(_, v)| v.as_str()).collect();
        let sent: Vec<String> = (0..WRITES).map(|seq| format!("c{i}-{seq}")).collect();
        assert_eq!(values, sent, "client {i}'s writes were applied out of order");
        // Answered in the order sent: the n-th answer is the n-th write's row.
        let stored_ids: Vec<i64> = stored.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, &stored_ids, "client {i}'s answers came out of order");
    }
    let after = status(&mut admin);
    assert!(after.max_group >= CLIENTS as u64, "the clients' writes never shared a group: {after:?}");
    assert_eq!(integrity(&t.db()), "ok");
}

#[test]
fn a_greedy_client_cannot_starve_a_small_one() {
    const GREEDY: i64 = 3;
    const BATCH: usize = 2000;
    let (t, b, _admin) = setup(&[]);
    let stop = Arc::new(AtomicBool::new(false));
    let greedy: Vec<_> = (0..GREEDY)
        .map(|g| {
            let mut c = b.client(&format!("greedy{g}"));
            let stop = stop.clone();
            thread::spawn(move || {
                let mut batches = 0i64;
                while !stop.load(Ordering::Relaxed) {
                    let stmts: Vec<Statement> = (0..BATCH)
                        .map(|_| {
                            Statement::new(
                                "INSERT INTO t (who, v) VALUES (?1, NULL)",
                                vec![format!("g{g}-{batches}").into()],
                            )
                        })
                        .collect();
                    c.execute_batch(stmts).expect("greedy batch");
                    batches += 1;
                }
                batches
            })
        })
        .collect();
    // Let the flood start before the small client measures.
    let mut small = b.client("small");
    assert!(wait_until(WAIT, || query_i64(&t.db(), "SELECT count(*) FROM t") >= GREEDY * BATCH as i64));
    let mut worst = Duration::ZERO;
    let started = Instant::now();
    let mut n = 0;
    while n < 30 || started.elapsed() < Duration::from_secs(2) {
        let t0 = Instant::now();
        small
            .execute("INSERT INTO t (who, v) VALUES ('small', ?1)", &[format!("s{n}").into()])
            .expect("small write");
        worst = worst.max(t0.elapsed());
        n += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let batches: i64 = greedy.into_iter().map(|h| h.join().expect("greedy thread")).sum();
    assert!(batches >= GREEDY, "the greedy clients did not run");
    // FIFO bound, independent of speed: between two consecutive small writes, each
    // greedy client can have at most two batches applied (one in the small write's
    // group after it, one queued before the next small write arrived).
    let c = open_ro(&t.db());
    let ids: Vec<i64> = c
        .prepare("SELECT id FROM t WHERE who = 'small' ORDER BY id")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(ids.len(), n);
    let mut st = c.prepare("SELECT count(DISTINCT who) FROM t WHERE id > ?1 AND id < ?2").unwrap();
    for w in ids.windows(2) {
        let between: i64 = st.query_row([w[0], w[1]], |r| r.get(0)).unwrap();
        assert!(
            between <= 2 * GREEDY,
            "{between} greedy batches overtook the small client between rows {w:?}"
        );
    }
    // Generous sanity bound (debug build, loaded CI): never a starvation-length wait.
    assert!(worst < Duration::from_secs(10), "small client waited {worst:?}");
}
