//! Many writers and readers at once, through the real broker: every acknowledged
//! write is stored exactly once, and a process sees its own acknowledged writes in
//! its own read-only connection at once (read-your-writes).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use litebroker_client::{Client, ConnectOptions, Reader, Value};
use litebroker_tests::*;

const WRITERS: i64 = 8;
const ROWS_PER_WRITER: i64 = 200;
const READERS: usize = 2;
/// Far above what the whole test takes (about a second on 2 vCPUs, debug build).
const DEADLINE: Duration = Duration::from_secs(90);

fn create_rows_table(db: &Path) {
    assert_exit(
        &cli(
            db,
            &[
                "exec",
                "CREATE TABLE rows (client INTEGER, seq INTEGER, payload TEXT, PRIMARY KEY (client, seq))",
            ],
        ),
        0,
    );
}

#[test]
fn eight_writer_processes_and_two_readers_store_every_row_once() {
    let started = Instant::now();
    let t = TestDir::new();
    let mut broker = Broker::start(&t.db(), &[]);
    create_rows_table(&t.db());

    let stop_file = t.path().join("stop-readers");
    let stop = stop_file.to_str().unwrap();
    let readers: Vec<_> = (0..READERS)
        .map(|_| spawn_lbtool(&t.db(), &["read-loop", "--until", stop, "--max-secs", "90"]))
        .collect();
    // All eight at once: spawned back to back, before any is waited for.
    let writers: Vec<_> = (0..WRITERS)
        .map(|c| {
            let (client, count) = (c.to_string(), ROWS_PER_WRITER.to_string());
            spawn_lbtool(&t.db(), &["write", "--client", &client, "--count", &count, "--verify-reads"])
        })
        .collect();

    for (c, child) in writers.into_iter().enumerate() {
        let o = wait_output(child, DEADLINE, &format!("writer {c}"));
        let j = json_summary(&o);
        assert!(o.status.success(), "writer {c} failed: {j}\nstderr:\n{}", stderr(&o));
        assert_eq!(j["ok"], ROWS_PER_WRITER, "writer {c}: {j}");
        assert_eq!(j["errors"], 0, "writer {c}: {j}");
        // A write the broker acknowledged was missing from the same process's reader.
        assert_eq!(j["stale_reads"], 0, "writer {c}: {j}");
        assert!(j["first_error"].is_null(), "writer {c}: {j}");
    }
    let writers_done = started.elapsed();

    std::fs::write(&stop_file, b"").unwrap();
    let mut total_reads = 0;
    for (r, child) in readers.into_iter().enumerate() {
        let o = wait_output(child, DEADLINE, &format!("reader {r}"));
        let j = json_summary(&o);
        assert!(o.status.success(), "reader {r} failed: {j}\nstderr:\n{}", stderr(&o));
        assert_eq!(j["errors"], 0, "reader {r} (a count going backwards is an error too): {j}");
        assert!(j["first_error"].is_null(), "reader {r}: {j}");
        let last = j["last_count"].as_i64().unwrap();
        assert!((0..=WRITERS * ROWS_PER_WRITER).contains(&last), "reader {r}: {j}");
        assert!(j["reads"].as_u64().unwrap() > 0, "reader {r} never read: {j}");
        total_reads += j["reads"].as_u64().unwrap();
    }

    // The exact set: every (client, seq) once, with its own payload, nothing else.
    let conn = open_ro(&t.db());
    let mut st = conn.prepare("SELECT client, seq, payload FROM rows").unwrap();
    let rows: Vec<(i64, i64, String)> =
        st.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
    let got: BTreeSet<(i64, i64)> = rows.iter().map(|(c, s, _)| (*c, *s)).collect();
    let want: BTreeSet<(i64, i64)> =
        (0..WRITERS).flat_map(|c| (0..ROWS_PER_WRITER).map(move |s| (c, s))).collect();
    assert_eq!(rows.len(), want.len(), "duplicate or extra rows");
    assert_eq!(got, want);
    for (c, s, payload) in &rows {
        assert_eq!(payload, &format!("client {c} row {s}"));
    }
    drop(st);
    drop(conn);
    assert_eq!(integrity(&t.db()), "ok");
    assert!(broker.running(), "the broker died; log:\n{}", broker.log());
    let log = broker.log();
    assert!(!log.contains("ERROR") && !log.contains("panicked"), "{log}");

    let status = json_summary(&cli(&t.db(), &["--json", "status"]));
    // The group-commit figures: every row was one committed request.
    let group_requests = status["group_requests"].as_u64().unwrap();
    let group_commits = status["group_commits"].as_u64().unwrap();
    assert!(group_requests >= (WRITERS * ROWS_PER_WRITER) as u64, "{status}");
    assert!(group_commits >= 1 && group_commits <= group_requests, "{status}");
    let per_commit = status["requests_per_commit"].as_f64().unwrap();
    assert!((per_commit - group_requests as f64 / group_commits as f64).abs() < 1e-9, "{status}");
    assert!(status["max_group"].as_u64().unwrap() >= 1, "{status}");
    assert!(status["commit_mean_us"].as_f64().unwrap() > 0.0, "{status}");
    assert!(status["queue_wait_max_us"].as_u64().is_some(), "{status}");
    let text = stdout(&cli(&t.db(), &["status"]));
    assert!(text.contains("group commit:") && text.contains("requests each"), "{text}");
    eprintln!(
        "8 writers x {ROWS_PER_WRITER} rows done after {writers_done:?}, whole test {:?}; {total_reads} reads; \
         broker: {} requests in {} commits",
        started.elapsed(),
        status["requests"],
        status["commits"]
    );
}

#[test]
fn read_your_writes_in_process() {
    let t = TestDir::new();
    let _broker = Broker::start(&t.db(), &[]);
    // The reader opens before the table exists: it must pick up schema changes made
    // by the broker after it opened.
    let early_reader = Reader::open(t.db()).unwrap();
    let mut setup = Client::connect(t.db()).unwrap();
    setup
        .execute(
            "CREATE TABLE rows (client INTEGER, seq INTEGER, payload TEXT, PRIMARY KEY (client, seq)); \
             CREATE TABLE counters (id INTEGER PRIMARY KEY, n INTEGER NOT NULL)",
            &[],
        )
        .unwrap();
    assert_eq!(
        early_reader
            .query_value("SELECT count(*) FROM sqlite_schema WHERE name IN ('rows', 'counters')", &[])
            .unwrap(),
        Some(Value::Integer(2))
    );

    const THREADS: i64 = 4;
    const ROUNDS: i64 = 150;
    let barrier = Arc::new(Barrier::new(THREADS as usize));
    let handles: Vec<_> = (0..THREADS)
        .map(|c| {
            let (db, barrier) = (t.db(), barrier.clone());
            thread::spawn(move || {
                let opts = ConnectOptions::new(&db).client_name(format!("ryw-{c}"));
                let mut client = Client::connect_with(&opts).unwrap();
                let reader = Reader::open(&db).unwrap();
                client.execute("INSERT INTO counters (id, n) VALUES (?, 0)", &[Value::Integer(c)]).unwrap();
                barrier.wait();
                for seq in 0..ROUNDS {
                    let payload = format!("c{c} s{seq}");
                    let r = client
                        .execute(
                            "INSERT INTO rows (client, seq, payload) VALUES (?, ?, ?)",
                            &[Value::Integer(c), Value::Integer(seq), Value::Text(payload.clone())],
                        )
                        .unwrap();
                    assert_eq!(r.changes, 1);
                    let seen = reader
                        .query_value(
                            "SELECT payload FROM rows WHERE client = ? AND seq = ?",
                            &[Value::Integer(c), Value::Integer(seq)],
                        )
                        .unwrap();
                    assert_eq!(
                        seen,
                        Some(Value::Text(payload)),
                        "thread {c} row {seq} not visible after its ack"
                    );

                    let r = client
                        .execute(
                            "UPDATE counters SET n = n + 1 WHERE id = ? RETURNING n",
                            &[Value::Integer(c)],
                        )
                        .unwrap();
                    assert_eq!(r.rows, vec![vec![Value::Integer(seq + 1)]]);
                    let n = reader
                        .query_value("SELECT n FROM counters WHERE id = ?", &[Value::Integer(c)])
                        .unwrap();
                    assert_eq!(n, Some(Value::Integer(seq + 1)), "thread {c}: counter read back stale");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a read-your-writes thread failed");
    }
    assert_eq!(
        early_reader.query_value("SELECT count(*) FROM rows", &[]).unwrap(),
        Some(Value::Integer(THREADS * ROUNDS))
    );
    assert_eq!(
        early_reader.query_value("SELECT sum(n) FROM counters", &[]).unwrap(),
        Some(Value::Integer(THREADS * ROUNDS))
    );
    assert_eq!(integrity(&t.db()), "ok");
}
