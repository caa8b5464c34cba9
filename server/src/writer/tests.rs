//! The writer's group commit, through the real writer on a database file.

use std::sync::atomic::AtomicUsize;
use std::sync::mpsc::{self, Receiver};

use litebroker_protocol::Statement;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use litebroker_protocol::{ErrorKind, Response, WriteOptions};

use super::open::open_writer;
use super::Writer;
use crate::config::Config;
use crate::job::{Job, JobKind, JobLine, Reply, ReplyTx, WriteBody};
use crate::queue::JobQueue;
use crate::request_ids;
use crate::shared::Shared;

fn writer(dir: &Path) -> Writer {
    let config = Config::new(dir.join("w.db"));
    let conn = open_writer(&config.db, &config).expect("open");
    request_ids::ensure_table(&conn).expect("request-id table");
    let (stop_tx, _) = mpsc::channel();
    let db = config.db.to_string_lossy().into_owned();
    let shared = Arc::new(Shared::new(config, db, "w.sock".into(), stop_tx));
    shared.set_exactly_once_off(None);
    let mut w = Writer::new(conn, shared, Arc::new(JobQueue::new(16)));
    w.start();
    w
}

/// A one-shot write as the writer holds it once it put it in a group (taken).
fn job(w: &Writer, sql: &str, id: Option<u8>) -> (Job, Receiver<Reply>) {
    let (tx, rx) = mpsc::sync_channel(1);
    let client = w.core.shared.register("test".into(), 1, None, litebroker_protocol::PROTOCOL_MINOR);
    let kind = JobKind::Write(WriteBody::Execute(Statement::new(sql, vec![])));
    let opts = WriteOptions { request_id: id.map(|b| [b; 16]), ..Default::default() };
    let job =
        JobLine::new(ReplyTx::new(tx)).next(kind, opts, &client, Instant::now() + Duration::from_secs(10));
    assert!(job.claim());
    (job, rx)
}

/// Runs `sqls` as one group (the i-th with request id `[i; 16]`) and returns
/// each answer.
fn group(w: &mut Writer, sqls: &[&str]) -> Vec<Response> {
    let (jobs, replies): (Vec<Job>, Vec<_>) =
        sqls.iter().enumerate().map(|(i, s)| job(w, s, Some(i as u8 + 1))).unzip();
    w.execute_group(&jobs);
    replies
        .iter()
        .map(|r| match r.try_recv().expect("every request is answered") {
            Reply::Response(resp) => resp,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn count(w: &Writer, sql: &str) -> i64 {
    w.connection().query_row(sql, [], |r| r.get(0)).expect("count")
}

/// Makes the next `n` COMMITs fail (a commit hook turns them into ROLLBACKs).
fn fail_commits(w: &mut Writer, n: usize) {
    let left = AtomicUsize::new(n);
    w.core
        .db
        .conn_mut()
        .commit_hook(Some(move || {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1)).is_ok()
        }))
        .expect("commit hook");
}

fn group_commits(w: &Writer) -> u64 {
    w.core.shared.metrics.group_size.count()
}

#[test]
fn a_failed_commit_reruns_each_request_in_its_own_transaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = writer(dir.path());
    let (create, _r) = job(&w, "CREATE TABLE t (v UNIQUE)", None);
    w.execute_group(std::slice::from_ref(&create));
    fail_commits(&mut w, 1);
    let answers =
        group(&mut w, &["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)", "INSERT INTO t VALUES (3)"]);
    assert!(answers.iter().all(|a| matches!(a, Response::Executed(r) if r.changes == 1)), "{answers:?}");
    assert_eq!(count(&w, "SELECT count(*) FROM t"), 3);
    // The request ids recorded in the failed transaction rolled back with it:
    // each is recorded once, by its re-run.
    assert_eq!(count(&w, "SELECT count(*) FROM _litebroker_requests"), 3);
    // The create, then one transaction per re-run request.
    assert_eq!(group_commits(&w), 4);
}

#[test]
fn a_commit_that_keeps_failing_fails_every_request_and_applies_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = writer(dir.path());
    let (create, _r) = job(&w, "CREATE TABLE t (v UNIQUE)", None);
    w.execute_group(std::slice::from_ref(&create));
    fail_commits(&mut w, usize::MAX);
    let answers = group(&mut w, &["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]);
    for a in &answers {
        let Response::Error(e) = a else { panic!("answered before a successful COMMIT: {a:?}") };
        assert_eq!(e.kind, ErrorKind::Constraint, "{e:?}");
    }
    w.core.db.conn_mut().commit_hook(None::<fn() -> bool>).expect("remove hook");
    assert_eq!(count(&w, "SELECT count(*) FROM t"), 0);
    assert_eq!(count(&w, "SELECT count(*) FROM _litebroker_requests"), 0);
    assert_eq!(group_commits(&w), 1);
}

#[test]
fn a_deferred_violation_fails_only_its_request() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = writer(dir.path());
    let (create, _r) = job(
        &w,
        "CREATE TABLE p (id INTEGER PRIMARY KEY);
         CREATE TABLE t (p INTEGER REFERENCES p(id) DEFERRABLE INITIALLY DEFERRED);
         INSERT INTO p VALUES (1)",
        None,
    );
    w.execute_group(std::slice::from_ref(&create));
    let answers = group(
        &mut w,
        &[
            "INSERT INTO t VALUES (1)",
            "INSERT INTO t VALUES (2)",
            "INSERT INTO t VALUES (2); INSERT INTO p VALUES (2)",
        ],
    );
    assert!(matches!(answers[0], Response::Executed(_)), "{answers:?}");
    assert!(
        matches!(&answers[1], Response::Error(e) if e.message == "FOREIGN KEY constraint failed"),
        "{answers:?}"
    );
    assert!(matches!(answers[2], Response::Executed(_)), "{answers:?}");
    assert_eq!(count(&w, "SELECT count(*) FROM t"), 2);
    // The failed request's id was not recorded: a resend runs it again.
    assert_eq!(count(&w, "SELECT count(*) FROM _litebroker_requests"), 2);
    // One transaction: the violation never reached the COMMIT.
    assert_eq!(group_commits(&w), 2);
}

#[test]
fn a_resend_answered_from_its_record_is_counted_once_even_when_its_group_reruns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut w = writer(dir.path());
    let (create, _r) = job(&w, "CREATE TABLE t (v)", None);
    w.execute_group(std::slice::from_ref(&create));
    group(&mut w, &["INSERT INTO t VALUES (1)"]);
    fail_commits(&mut w, 1);
    // Id [1; 16] again: answered from its record, in a group whose COMMIT fails.
    let answers = group(&mut w, &["INSERT INTO t VALUES (1)", "INSERT INTO t VALUES (2)"]);
    assert!(answers.iter().all(|a| matches!(a, Response::Executed(_))), "{answers:?}");
    assert_eq!(count(&w, "SELECT count(*) FROM t"), 2);
    assert_eq!(w.core.shared.counters.deduplicated.load(Ordering::Relaxed), 1);
}
