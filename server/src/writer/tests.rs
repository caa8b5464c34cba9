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
use crate::job::{Job, JobKind, JobLine, Reply, ReplyTx, Tagged, WriteBody};
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
fn job(w: &Writer, sql: &str, id: Option<u8>) -> (Job, Receiver<Tagged>) {
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
            (_, Reply::Response(resp)) => resp,
            (_, other) => panic!("unexpected {other:?}"),
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

// ----- the change feed: what the writer publishes

/// The events published since `sub` subscribed: (table, inserted, updated,
/// deleted, rowids, capped) per table, one Vec per event; a resync as its reason.
type Seen = Vec<Result<Vec<(String, u64, u64, u64, Vec<i64>, bool)>, litebroker_protocol::ResyncReason>>;

fn events(sub: &crate::feed::Subscriber) -> Seen {
    let b = sub.take(Duration::ZERO);
    let mut out: Seen = b.resync.map(|(_, r)| Err(r)).into_iter().collect();
    for e in b.events {
        out.push(match e.resync {
            Some(r) => Err(r),
            None => Ok(e
                .tables
                .iter()
                .map(|t| {
                    (t.table.clone(), t.inserted, t.updated, t.deleted, t.rowids.clone(), t.rowids_capped)
                })
                .collect()),
        });
    }
    out
}

fn one(table: &str, i: u64, u: u64, d: u64, rowids: &[i64], capped: bool) -> Seen {
    vec![Ok(vec![(table.to_owned(), i, u, d, rowids.to_vec(), capped)])]
}

/// Runs `sqls` as one group, without request ids (the ids `group` gives would
/// answer a later group's first request from the record of an earlier one).
fn plain(w: &mut Writer, sqls: &[&str]) -> Vec<Response> {
    let (jobs, replies): (Vec<Job>, Vec<_>) = sqls.iter().map(|s| job(w, s, None)).unzip();
    w.execute_group(&jobs);
    replies
        .iter()
        .map(|r| match r.try_recv().expect("every request is answered") {
            (_, Reply::Response(resp)) => resp,
            (_, other) => panic!("unexpected {other:?}"),
        })
        .collect()
}

fn watched(dir: &Path, schema: &str) -> (Writer, Arc<crate::feed::Subscriber>) {
    let mut w = writer(dir);
    assert!(matches!(plain(&mut w, &[schema])[0], Response::Executed(_)));
    let (sub, _) = w.core.shared.feed.subscribe(Vec::new(), None);
    (w, sub)
}

#[test]
fn feed_reports_without_rowid_tables_with_counts_and_no_rowids() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(dir.path(), "CREATE TABLE kv (k TEXT PRIMARY KEY, v) WITHOUT ROWID");
    plain(&mut w, &["INSERT INTO kv VALUES ('a', 1), ('b', 2); UPDATE kv SET v = 3 WHERE k = 'a'; DELETE FROM kv WHERE k = 'b'"]);
    // update_hook is never called for WITHOUT ROWID tables; the preupdate hook is.
    assert_eq!(events(&sub), one("kv", 2, 1, 1, &[], true));
}

#[test]
fn feed_counts_every_row_of_a_delete_without_where() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(dir.path(), "CREATE TABLE t (id INTEGER PRIMARY KEY, x)");
    plain(&mut w, &["INSERT INTO t (x) VALUES (1), (2), (3)"]);
    assert_eq!(events(&sub), one("t", 3, 0, 0, &[1, 2, 3], false));
    // The truncate optimisation would delete these without any hook call; SQLite
    // does not use it while a preupdate hook is registered.
    plain(&mut w, &["DELETE FROM t"]);
    assert_eq!(events(&sub), one("t", 0, 0, 3, &[1, 2, 3], false));
    assert_eq!(count(&w, "SELECT count(*) FROM t"), 0);
}

#[test]
fn feed_reports_rows_deleted_by_a_replace_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(dir.path(), "CREATE TABLE t (id INTEGER PRIMARY KEY, sku TEXT UNIQUE)");
    plain(&mut w, &["INSERT INTO t VALUES (1, 'a'), (5, 'b')"]);
    events(&sub);
    // Row 1 goes because of the UNIQUE conflict: update_hook never hears of it.
    plain(&mut w, &["REPLACE INTO t VALUES (2, 'a')"]);
    assert_eq!(events(&sub), one("t", 1, 0, 1, &[1, 2], false));
    // Same rowid: deleted and inserted again.
    plain(&mut w, &["INSERT OR REPLACE INTO t VALUES (5, 'c')"]);
    assert_eq!(events(&sub), one("t", 1, 0, 1, &[5], false));
}

#[test]
fn feed_sees_trigger_and_cascade_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(
        dir.path(),
        "CREATE TABLE p (id INTEGER PRIMARY KEY); CREATE TABLE c (id INTEGER PRIMARY KEY, p REFERENCES p ON DELETE CASCADE);
         CREATE TABLE log (id INTEGER PRIMARY KEY, what); CREATE TRIGGER tp AFTER DELETE ON p BEGIN INSERT INTO log (what) VALUES ('p'); END",
    );
    plain(&mut w, &["INSERT INTO p VALUES (1); INSERT INTO c VALUES (7, 1)"]);
    events(&sub);
    plain(&mut w, &["DELETE FROM p WHERE id = 1"]);
    let mut got = events(&sub).remove(0).unwrap();
    got.sort();
    assert_eq!(
        got,
        [
            ("c".to_owned(), 0, 0, 1, vec![7], false),
            ("log".to_owned(), 1, 0, 0, vec![1], false),
            ("p".to_owned(), 0, 0, 1, vec![1], false)
        ]
    );
}

#[test]
fn feed_publishes_only_what_the_commit_contains() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(dir.path(), "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    // A failing member is rolled back to its savepoint; the request ids the
    // broker records (its own table) are never shown.
    let r = group(
        &mut w,
        &[
            "INSERT INTO t VALUES (10)",
            "INSERT INTO t VALUES (11); INSERT INTO nosuch VALUES (1)",
            "INSERT INTO t VALUES (12)",
        ],
    );
    assert!(matches!(r[1], Response::Error(_)));
    assert_eq!(events(&sub), one("t", 2, 0, 0, &[10, 12], false));
    // A lone request that fails, and a pasted ROLLBACK: nothing.
    plain(&mut w, &["INSERT INTO t VALUES (20); INSERT INTO nosuch VALUES (1)"]);
    plain(&mut w, &["BEGIN; INSERT INTO t VALUES (21); ROLLBACK"]);
    assert_eq!(events(&sub), Seen::new());
    // A group whose COMMIT fails runs again, each request alone: one event per
    // transaction that committed, none for the one that did not.
    fail_commits(&mut w, 1);
    plain(&mut w, &["INSERT INTO t VALUES (30)", "INSERT INTO t VALUES (31)"]);
    w.core.db.conn_mut().commit_hook(None::<fn() -> bool>).unwrap();
    assert_eq!(events(&sub), [one("t", 1, 0, 0, &[30], false), one("t", 1, 0, 0, &[31], false)].concat());
    assert_eq!(count(&w, "SELECT count(*) FROM t"), 4);
}

#[test]
fn feed_caps_rowids_per_table_and_transaction() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(dir.path(), "CREATE TABLE t (id INTEGER PRIMARY KEY, x)");
    plain(&mut w, &["WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) INSERT INTO t SELECT i, i FROM n; UPDATE t SET x = 0 WHERE id <= 10"]);
    let got = events(&sub).remove(0).unwrap();
    let (_, i, u, d, rowids, capped) = &got[0];
    assert_eq!((*i, *u, *d, rowids.len(), *capped), (1500, 10, 0, 1000, true));
    assert_eq!(rowids[..3], [1, 2, 3]);
}

#[test]
fn feed_resyncs_after_another_program_writes_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(dir.path(), "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    w.idle();
    assert_eq!(events(&sub), Seen::new(), "the broker's own commits are not someone else's");
    let other = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
    other.execute("INSERT INTO t VALUES (1)", []).unwrap();
    w.idle();
    assert_eq!(events(&sub), vec![Err(litebroker_protocol::ResyncReason::ExternalWrite)]);
    // Also seen before the next transaction, ahead of its own event.
    other.execute("INSERT INTO t VALUES (2)", []).unwrap();
    plain(&mut w, &["INSERT INTO t VALUES (3)"]);
    let mut want = vec![Err(litebroker_protocol::ResyncReason::ExternalWrite)];
    want.extend(one("t", 1, 0, 0, &[3], false));
    assert_eq!(events(&sub), want);
}

#[test]
fn feed_forgets_what_a_client_rolled_back_to_its_own_savepoint() {
    let dir = tempfile::tempdir().unwrap();
    let (mut w, sub) = watched(dir.path(), "CREATE TABLE t (id INTEGER PRIMARY KEY)");
    plain(
        &mut w,
        &["INSERT INTO t VALUES (1); SAVEPOINT a; INSERT INTO t VALUES (2); SAVEPOINT b; INSERT INTO t VALUES (3);
           ROLLBACK TO a; INSERT INTO t VALUES (4); RELEASE a; INSERT INTO t VALUES (5)"],
    );
    assert_eq!(events(&sub), one("t", 3, 0, 0, &[1, 4, 5], false));
    assert_eq!(count(&w, "SELECT count(*) FROM t"), 3);
}
