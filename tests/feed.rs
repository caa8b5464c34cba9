//! The change feed with real processes: watcher processes (`lbtool watch`, the
//! `litebroker watch` CLI, `Db::watch` in this process) and writer processes
//! through one broker; what they see against what the database holds; resyncs
//! (another program writing the file, a watcher that stops reading, a broker
//! restart); `since` after a short disconnect.

use std::process::Command;
use std::time::{Duration, Instant};

use litebroker_client::{Cursor, Db, ResyncReason};
use litebroker_tests::*;
use serde_json::Value as Json;

const LONG: Duration = Duration::from_secs(120);

fn setup(t: &TestDir, args: &[&str]) -> Broker {
    let b = Broker::start(&t.db(), args);
    let o = cli(
        &t.db(),
        &[
            "exec",
            "CREATE TABLE rows (id INTEGER PRIMARY KEY, client INTEGER, seq INTEGER, payload TEXT);
             CREATE TABLE other (id INTEGER PRIMARY KEY, x)",
        ],
    );
    assert_exit(&o, 0);
    b
}

/// Waits for a watcher's `{"watching":…}` line.
fn subscribed(w: &Proc) -> String {
    let v = w.json_line(LONG);
    v["watching"].as_str().unwrap_or_else(|| panic!("expected the watching line, got {v}")).to_owned()
}

/// Reads a watcher's lines up to its summary: (events, summary).
fn drain(w: &Proc) -> (Vec<Json>, Json) {
    let mut events = Vec::new();
    loop {
        let v = w.json_line(LONG);
        if v.get("summary").is_some() {
            return (events, v);
        }
        events.push(v["event"].clone());
    }
}

#[test]
fn three_watchers_see_every_commit_of_eight_writer_processes_once_in_order() {
    let t = TestDir::new();
    let _b = setup(&t, &[]);
    let db = t.db();
    let done = t.path().join("done");
    let until = done.to_str().unwrap();
    let watchers = [
        Proc::lbtool(&db, &["watch", "--until", until, "--quiet-ms", "500"]),
        Proc::lbtool(&db, &["watch", "--until", until, "--quiet-ms", "500"]),
        Proc::lbtool(&db, &["watch", "--table", "other", "--until", until, "--quiet-ms", "500"]),
    ];
    for w in &watchers {
        subscribed(w);
    }
    let writers: Vec<_> =
        (0..8).map(|i| spawn_lbtool(&db, &["write", "--client", &i.to_string(), "--count", "60"])).collect();
    // What never commits, while the writers run: failing requests (most share a
    // group with the writers' requests), a rolled-back session, a pasted ROLLBACK.
    for i in 0..20 {
        let o = cli(
            &db,
            &[
                "exec",
                &format!("INSERT INTO rows (client, seq) VALUES (-1, {i}); INSERT INTO nosuch VALUES (1)"),
            ],
        );
        assert_exit(&o, 1);
    }
    let mut session =
        Proc::lbtool(&db, &["session", "--sql", "INSERT INTO rows (client, seq) VALUES (-2, 0)"]);
    assert_eq!(session.json_line(LONG)["in_session"], true);
    session.send("rollback");
    session.wait_exit(LONG);
    let o = cli(&db, &["exec", "BEGIN; INSERT INTO rows (client, seq) VALUES (-3, 0); ROLLBACK"]);
    assert_ne!(o.status.code(), Some(0));
    // The filtered watcher's only table.
    assert_exit(&cli(&db, &["exec", "INSERT INTO other (x) VALUES (1)"]), 0);
    for w in writers {
        let o = wait_output(w, LONG, "writer");
        assert!(o.status.success(), "writer failed: {}", String::from_utf8_lossy(&o.stdout));
    }
    std::fs::write(&done, "").unwrap();
    let rows = query_i64(&db, "SELECT count(*) FROM rows");
    assert_eq!(rows, 480);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM rows WHERE client < 0"), 0);
    for (i, w) in watchers.iter().enumerate() {
        let (events, summary) = drain(w);
        assert_eq!(summary["in_order"], true, "{summary}");
        assert_eq!(summary["resyncs"], 0, "{summary}");
        let cursors: Vec<&str> = events.iter().map(|e| e["cursor"].as_str().unwrap()).collect();
        let mut sorted = cursors.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), cursors.len(), "an event seen twice");
        if i < 2 {
            // Every row once, as many as the database holds; nothing of the
            // rolled-back work.
            assert_eq!(summary["totals"]["rows"]["inserted"], rows, "{summary}");
            assert_eq!(summary["rowids"]["rows"]["distinct"], rows, "{summary}");
            assert_eq!(summary["rowids"]["rows"]["listed"], rows, "{summary}");
            assert_eq!(summary["totals"]["other"]["inserted"], 1, "{summary}");
        } else {
            // The table filter passes nothing else.
            assert_eq!(summary["events"], 1, "{summary}");
            assert!(summary["totals"].get("rows").is_none(), "{summary}");
        }
    }
}

#[test]
#[cfg_attr(litebroker_wine, ignore = "drives the sqlite3 CLI, a Linux program Wine cannot start")]
fn a_write_by_the_sqlite3_cli_gives_watchers_a_resync_within_a_second() {
    let t = TestDir::new();
    let _b = setup(&t, &[]);
    let db = t.db();
    let w = Proc::lbtool(&db, &["watch", "--count", "1"]);
    subscribed(&w);
    let st =
        Command::new("sqlite3").arg(&db).arg("INSERT INTO other (x) VALUES (42)").status().expect("sqlite3");
    assert!(st.success());
    // From the commit (the sqlite3 process has exited): starting a process on a
    // loaded machine is not the broker's time.
    let t0 = Instant::now();
    let e = w.json_line(Duration::from_secs(5));
    let took = t0.elapsed();
    assert_eq!(e["event"]["resync"], "external_write", "{e}");
    assert!(took < Duration::from_secs(1), "resync after {took:?}");
}

#[test]
fn a_watcher_that_stops_reading_gets_a_resync_and_writers_keep_their_pace() {
    let t = TestDir::new();
    let _b = setup(&t, &["--watch-buffer-events", "16"]);
    let db = t.db();
    let timed = |client: &str| {
        let t0 = Instant::now();
        let o =
            wait_output(spawn_lbtool(&db, &["write", "--client", client, "--count", "1500"]), LONG, "writer");
        assert!(o.status.success());
        t0.elapsed()
    };
    let alone = timed("1");
    let done = t.path().join("done");
    let stall = Duration::from_secs(6);
    let w = Proc::lbtool(
        &db,
        &[
            "watch",
            "--until",
            done.to_str().unwrap(),
            "--stall-after",
            "1",
            "--stall-secs",
            &stall.as_secs().to_string(),
            "--quiet-ms",
            "500",
        ],
    );
    subscribed(&w);
    // The first event starts the watcher's stall; the writer's 1500 commits
    // then all happen while it reads nothing.
    assert_exit(&cli(&db, &["exec", "INSERT INTO other (x) VALUES (1)"]), 0);
    w.json_line(LONG);
    let stalled_at = Instant::now();
    let with_stalled = timed("2");
    // A writer that waited for the watcher would have taken the whole stall.
    assert!(
        stalled_at.elapsed() < stall,
        "1500 writes took {with_stalled:?} next to a stalled watcher ({alone:?} alone)"
    );
    std::fs::write(&done, "").unwrap();
    let (events, summary) = drain(&w);
    assert_eq!(summary["error"], Json::Null, "{summary}");
    let resyncs: Vec<&Json> = events.iter().filter(|e| !e["resync"].is_null()).collect();
    // One resync per overflow of its buffer: one when the stall outlasts the
    // writes, more when a loaded machine lets the stall end while the writer still
    // writes faster than this debug-built watcher reads.
    assert!(!resyncs.is_empty(), "no resync: {summary}");
    assert!(resyncs.iter().all(|r| r["resync"] == "fell_behind"), "{summary}");
    // After the resync the watcher follows again: the last event is the last write.
    let last = events.last().unwrap();
    assert_eq!(last["tables"][0]["rowids"][0], query_i64(&db, "SELECT max(id) FROM rows"));
}

#[test]
fn a_broker_restart_gives_the_watcher_a_resync_of_a_new_epoch() {
    let t = TestDir::new();
    let mut b = setup(&t, &[]);
    let db = t.db();
    let w = Proc::lbtool(&db, &["watch", "--count", "3"]);
    let start = Cursor::parse(&subscribed(&w)).unwrap();
    assert_exit(&cli(&db, &["exec", "INSERT INTO other (x) VALUES (1)"]), 0);
    let first = w.json_line(LONG);
    assert_eq!(first["event"]["tables"][0]["table"], "other");
    assert_exit(&b.request_shutdown(), 0);
    b.wait_exit(LONG).expect("broker stops");
    let _b2 = Broker::start(&db, &[]);
    let second = w.json_line(LONG);
    assert_eq!(second["event"]["resync"], "other_epoch", "{second}");
    let epoch2 = Cursor::parse(second["event"]["cursor"].as_str().unwrap()).unwrap().epoch;
    assert_ne!(epoch2, start.epoch);
    assert_exit(&cli(&db, &["exec", "INSERT INTO other (x) VALUES (2)"]), 0);
    let third = w.json_line(LONG);
    assert_eq!(third["event"]["tables"][0]["rowids"][0], 2, "{third}");
}

#[test]
fn since_after_a_short_disconnect_replays_exactly_the_missed_events() {
    let t = TestDir::new();
    let _b = setup(&t, &[]);
    let db_path = t.db();
    let db = Db::open(&db_path).unwrap();
    let mut w = db.watch(&["rows"]);
    w.subscribe().unwrap();
    db.execute("INSERT INTO rows (seq) VALUES (1)", ()).unwrap();
    let seen = w.next_timeout(LONG).unwrap().expect("the first event");
    let cursor = seen.cursor;
    drop(w);
    // Missed while away: three commits on the table, one elsewhere.
    for seq in 2..=4 {
        db.execute("INSERT INTO rows (seq) VALUES (?1)", [seq]).unwrap();
    }
    db.execute("INSERT INTO other (x) VALUES (1)", ()).unwrap();
    let mut again = db.watch(&["rows"]).since(cursor);
    let mut got = Vec::new();
    while let Some(e) = again.next_timeout(Duration::from_millis(700)).unwrap() {
        assert!(!e.is_resync(), "{e:?}");
        got.push(e.table("rows").unwrap().rowids.clone());
    }
    assert_eq!(got, [[2], [3], [4]]);
    // The CLI resumes the same way, from the text form.
    let o = cli(&db_path, &["--json", "watch", "rows", "--since", &cursor.to_string(), "--count", "3"]);
    assert_exit(&o, 0);
    let lines: Vec<Json> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let ids: Vec<&Json> = lines.iter().map(|l| &l["tables"]["rows"]["rowids"][0]).collect();
    assert_eq!(ids, [2, 3, 4]);
    assert!(stderr(&o).contains(&format!("watching rows from {cursor}")), "{}", stderr(&o));
    // A cursor of another run of the broker: one resync.
    let mut stale = db.watch(&["rows"]).since(Cursor { epoch: 1, seq: 1 });
    let e = stale.next_timeout(LONG).unwrap().unwrap();
    assert_eq!(e.resync, Some(ResyncReason::OtherEpoch));
}

#[test]
fn cli_watch_prints_json_lines_and_exits_as_documented() {
    let t = TestDir::new();
    let db = t.db();
    // No broker: exit 3.
    std::fs::create_dir_all(db.parent().unwrap()).unwrap();
    let o = cli(&db, &["watch", "--count", "1"]);
    assert_exit(&o, 3);
    let _b = setup(&t, &[]);
    let mut child = Command::new(bin("litebroker"))
        .arg("--db")
        .arg(&db)
        .args(["--json", "watch", "skus", "rows", "--count", "2"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Subscribed once the stderr line is there; wait for it through the feed's
    // subscriber count.
    assert!(wait_until(LONG, || {
        let o = cli(&db, &["--json", "watch", "--stats"]);
        o.status.success() && json_out(&o)["subscribers"] == 1
    }));
    assert_exit(&cli(&db, &["exec", "INSERT INTO other (x) VALUES (1)"]), 0);
    assert_exit(&cli(&db, &["exec", "INSERT INTO rows (seq) VALUES (1), (2)"]), 0);
    assert_exit(
        &cli(&db, &["exec", "UPDATE rows SET seq = 3 WHERE id = 1; DELETE FROM rows WHERE id = 2"]),
        0,
    );
    let deadline = Instant::now() + LONG;
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    assert_exit(&o, 0);
    assert!(stderr(&o).starts_with("watching skus, rows from "), "{}", stderr(&o));
    let lines: Vec<Json> = stdout(&o).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{}", stdout(&o));
    assert_eq!(
        lines[0]["tables"],
        serde_json::json!({"rows": {"inserted": 2, "updated": 0, "deleted": 0, "rowids": [1, 2], "rowids_capped": false}})
    );
    assert_eq!(
        lines[1]["tables"],
        serde_json::json!({"rows": {"inserted": 0, "updated": 1, "deleted": 1, "rowids": [1, 2], "rowids_capped": false}})
    );
    let at = lines[0]["committed_at"].as_str().unwrap();
    assert!(at.len() == 24 && at.ends_with('Z'), "{at}");
    Cursor::parse(lines[0]["cursor"].as_str().unwrap()).unwrap();
    let stats = json_out(&cli(&db, &["--json", "watch", "--stats"]));
    assert_eq!(stats["published"], 3, "{stats}");
}

#[test]
fn status_and_stats_show_the_feeds_subscribers_and_ring() {
    let t = TestDir::new();
    let b = setup(&t, &["--feed-ring-events", "50"]);
    let db = Db::open(t.db()).expect("open");
    let mut watch = db.watch(&["rows"]);
    watch.subscribe().expect("subscribed");
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO rows (client, seq) VALUES (1, 1)"]), 0);
    assert!(watch.next_timeout(LONG).expect("watch").is_some());

    let status = json_out(&cli(&t.db(), &["--json", "status"]));
    let feed = &status["feed"];
    assert_eq!(feed["subscribers"], 1, "{status}");
    assert_eq!(feed["ring_max_events"], 50, "{status}");
    assert!(feed["ring_events"].as_u64() >= Some(1) && feed["published"].as_u64() >= Some(1), "{status}");
    let stats = json_out(&cli(&t.db(), &["--json", "stats"]));
    assert_eq!(stats["broker"]["feed"]["subscribers"], 1, "{stats}");
    assert_eq!(stats["broker"]["replication"]["state"], "off", "{stats}");
    let text = stdout(&cli(&t.db(), &["status"]));
    assert!(text.contains("change feed:  1 watching; ring "), "{text}");
    let text = stdout(&cli(&t.db(), &["stats"]));
    assert!(text.contains("Change feed: 1 watching; ring ") && text.contains("Replication: off"), "{text}");
    drop((watch, b));
}

#[test]
fn a_streamed_executemany_is_one_event_and_a_failed_one_is_none() {
    let t = TestDir::new();
    let _b = setup(&t, &[]);
    let db = Db::open(t.db()).expect("open");
    let mut watch = db.watch(&["rows"]);
    watch.subscribe().expect("subscribed");
    let rows = (0..5000i64).map(|i| (1i64, i));
    let sum = db.execute_many("INSERT INTO rows (client, seq) VALUES (?1, ?2)", rows).expect("executemany");
    assert_eq!(sum.rows, 5000);
    // A stream into the watched table whose row 2 fails (a duplicate key) applies
    // nothing, so it publishes nothing.
    let bad = [100_000i64, 100_001, 100_001, 100_002].into_iter().map(|id| (id,));
    db.execute_many("INSERT INTO rows (id, client, seq) VALUES (?1, 3, 0)", bad).expect_err("row 2 fails");
    assert_exit(&cli(&t.db(), &["exec", "INSERT INTO rows (client, seq) VALUES (2, 0)"]), 0);

    let first = watch.next_timeout(LONG).expect("watch").expect("the stream's event");
    let rows_change = first.table("rows").expect("rows changed");
    assert_eq!((rows_change.inserted, rows_change.updated, rows_change.deleted), (5000, 0, 0));
    assert!(rows_change.rowids_capped, "5000 rowids are past the default cap of 1000");
    let second = watch.next_timeout(LONG).expect("watch").expect("the next write's event");
    assert_eq!(second.table("rows").expect("rows").inserted, 1, "the failed stream published nothing");
}
