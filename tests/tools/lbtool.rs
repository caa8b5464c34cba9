//! `lbtool`: the client processes that litebroker's integration tests and demo
//! scripts spawn. Each subcommand prints one JSON summary line on stdout and exits
//! non-zero when anything failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use litebroker_client::{Client, ConnectOptions, Reader, Statement, Value, WriteOptions};
use serde_json::json;

#[path = "lbtool/hostile.rs"]
mod hostile;

#[derive(Debug, Parser)]
#[command(name = "lbtool")]
struct Args {
    /// The database.
    #[arg(long)]
    db: PathBuf,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// THREADS threads of this process share one `Db` handle and each inserts COUNT
    /// rows `(process, thread, seq)` into table `db_rows` through it.
    DbWrites {
        #[arg(long)]
        process: i64,
        #[arg(long, default_value_t = 8)]
        threads: i64,
        #[arg(long)]
        count: i64,
    },
    /// Insert COUNT rows `(client, seq, payload)` into table `rows`, one request
    /// each; after each acknowledged write, check this process's own reader sees it.
    Write {
        #[arg(long)]
        client: i64,
        #[arg(long)]
        count: i64,
        /// Also check read-your-writes through this process's reader.
        #[arg(long)]
        verify_reads: bool,
    },
    /// Read `SELECT count(*) FROM rows` in a loop until FILE exists.
    ReadLoop {
        #[arg(long)]
        until: PathBuf,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 120)]
        max_secs: u64,
    },
    /// Connect to the broker, print the handshake, then hold the connection until
    /// stdin closes (tests SIGKILL it to play a crashed app).
    Hold,
    /// Open a write session, run each --sql in it, print `{"in_session":true}`, then
    /// wait for a line on stdin: `commit` or `rollback` (EOF rolls back by dropping).
    Session {
        #[arg(long)]
        sql: Vec<String>,
        /// Seconds to wait for the writer.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
    },
    /// The fault-test load: until FILE exists, alternate increments of this client's
    /// counter (`UPDATE counters SET qty = qty + 1`) and atomic 3-row batches with a
    /// marker, through a client that reconnects and resends with request ids. Prints
    /// what was acknowledged.
    Increments {
        #[arg(long)]
        client: i64,
        #[arg(long)]
        until: PathBuf,
        /// Seconds each request may take, reconnects included.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// Write one small row at a time into `probe(seq, payload)` until FILE exists,
    /// measuring each write's latency: how long the writer is ever stalled.
    Latency {
        #[arg(long)]
        until: PathBuf,
        #[arg(long, default_value_t = 600)]
        max_secs: u64,
    },
    /// A streamed executemany of ROWS rows `(seq, payload)` into table `many`:
    /// `INSERT INTO many (seq, payload) VALUES (?1, ?2)`, seq counting from 0.
    /// With --stall-at K, prints `{"stalled":K}` when row K is due and then
    /// waits for stdin to close before going on (tests kill it there to play a
    /// client that dies mid-stream, or leave it to stall past its deadline).
    Many {
        #[arg(long)]
        rows: u64,
        #[arg(long)]
        stall_at: Option<u64>,
        /// Seconds the whole stream may take.
        #[arg(long, default_value_t = 60.0)]
        timeout: f64,
    },
    /// Watch the change feed (TABLEs, or all) through `Db::watch`: prints
    /// `{"watching":CURSOR}` once subscribed, one `{"event":…}` line per event
    /// (the CLI's JSON form), then a summary once COUNT events came or FILE exists
    /// and the feed was quiet for QUIET_MS: events, resyncs, per-table totals,
    /// whether cursors only went up.
    Watch {
        #[arg(long = "table")]
        tables: Vec<String>,
        #[arg(long)]
        count: Option<u64>,
        #[arg(long)]
        until: Option<PathBuf>,
        #[arg(long, default_value_t = 300)]
        quiet_ms: u64,
        /// Stop reading for STALL_SECS after this many events (a slow watcher).
        #[arg(long)]
        stall_after: Option<u64>,
        #[arg(long, default_value_t = 0.0)]
        stall_secs: f64,
        #[arg(long, default_value_t = 120)]
        max_secs: u64,
    },
    /// Pipeline COUNT inserts of `(client, seq, payload)` into table `rows` on one
    /// connection (`Client::pipeline`, up to DEPTH unanswered), seq counting from
    /// 0; with --fail-at K, write K is sent with seq K-1 again (a constraint
    /// failure). Prints what was answered: ok, errors, the failing seqs, and
    /// whether each answer's rowid was above the one before (order kept). With
    /// --hold, sends them all with no answer read, prints `{"sent":COUNT}` and
    /// waits for stdin to close (tests kill it there: a client that dies with
    /// writes in flight).
    Pipeline {
        #[arg(long)]
        client: i64,
        #[arg(long)]
        count: i64,
        #[arg(long, default_value_t = 64)]
        depth: usize,
        #[arg(long)]
        fail_at: Option<i64>,
        #[arg(long)]
        hold: bool,
    },
    /// For SECS seconds, attack the broker the way a buggy or hostile client of the
    /// same user could: random, truncated, oversized, forged and out-of-order
    /// frames, stalls mid-frame, pipelining without reading, connection churn.
    /// Deterministic for a seed. Fails only when the broker became unreachable.
    Hostile {
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The broker's --max-frame-bytes, to send frames just over it.
        #[arg(long, default_value_t = litebroker_protocol::DEFAULT_MAX_FRAME)]
        max_frame: u32,
        /// The broker's socket, when not derived from --db.
        #[arg(long)]
        socket: Option<String>,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (summary, ok) = match args.cmd {
        Cmd::Write { client, count, verify_reads } => write(&args.db, client, count, verify_reads),
        Cmd::ReadLoop { until, max_secs } => read_loop(&args.db, &until, max_secs),
        Cmd::Hold => hold(&args.db),
        Cmd::Session { sql, timeout } => session(&args.db, &sql, timeout),
        Cmd::Latency { until, max_secs } => latency(&args.db, &until, max_secs),
        Cmd::Increments { client, until, timeout, max_secs } => {
            increments(&args.db, client, &until, timeout, max_secs)
        }
        Cmd::Hostile { secs, seed, max_frame, socket } => {
            hostile::run(&args.db, socket.as_deref(), secs, seed, max_frame)
        }
        Cmd::DbWrites { process, threads, count } => db_writes(&args.db, process, threads, count),
        Cmd::Pipeline { client, count, depth, fail_at, hold } => {
            pipeline(&args.db, client, count, depth, fail_at, hold)
        }
        Cmd::Many { rows, stall_at, timeout } => many(&args.db, rows, stall_at, timeout),
        Cmd::Watch { tables, count, until, quiet_ms, stall_after, stall_secs, max_secs } => watch(
            &args.db,
            &tables,
            count,
            until.as_deref(),
            Duration::from_millis(quiet_ms),
            stall_after.map(|n| (n, Duration::from_secs_f64(stall_secs))),
            max_secs,
        ),
    };
    println!("{summary}");
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn write(db: &Path, client_no: i64, count: i64, verify_reads: bool) -> (serde_json::Value, bool) {
    let opts = ConnectOptions::new(db).client_name(format!("lbtool-write-{client_no}"));
    let mut client = match Client::connect_with(&opts) {
        Ok(c) => c,
        Err(e) => return (json!({ "ok": 0, "errors": 1, "first_error": e.to_string() }), false),
    };
    let reader = if verify_reads { Reader::open(db).ok() } else { None };
    let (mut ok, mut errors, mut first_error, mut stale_reads) = (0, 0, None, 0);
    for seq in 0..count {
        let payload = format!("client {client_no} row {seq}");
        let r = client.execute(
            "INSERT INTO rows (client, seq, payload) VALUES (?1, ?2, ?3)",
            &[Value::Integer(client_no), Value::Integer(seq), Value::Text(payload)],
        );
        match r {
            Ok(_) => {
                ok += 1;
                if let Some(reader) = &reader {
                    let seen = reader.query_value(
                        "SELECT count(*) FROM rows WHERE client = ?1 AND seq = ?2",
                        &[Value::Integer(client_no), Value::Integer(seq)],
                    );
                    if !matches!(seen, Ok(Some(Value::Integer(1)))) {
                        stale_reads += 1;
                    }
                }
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let good = errors == 0 && stale_reads == 0;
    (json!({ "ok": ok, "errors": errors, "stale_reads": stale_reads, "first_error": first_error }), good)
}

fn many(db: &Path, rows: u64, stall_at: Option<u64>, timeout: f64) -> (serde_json::Value, bool) {
    let opts = ConnectOptions::new(db).client_name("lbtool-many");
    let mut client = match Client::connect_with(&opts) {
        Ok(c) => c,
        Err(e) => return (json!({ "ok": false, "error": e.to_string() }), false),
    };
    let stream = (0..rows).map(|seq| {
        if Some(seq) == stall_at {
            println!("{}", json!({ "stalled": seq }));
            let _ = std::io::Write::flush(&mut std::io::stdout());
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        }
        Ok(vec![Value::Integer(seq as i64), Value::Text(format!("row {seq}"))])
    });
    let wopts = WriteOptions { timeout_ms: (timeout * 1000.0) as u32, ..WriteOptions::default() };
    match client.execute_many_with("INSERT INTO many (seq, payload) VALUES (?1, ?2)", stream, wopts) {
        Ok(s) => (json!({ "ok": true, "rows": s.rows, "changes": s.changes }), true),
        Err(e) => {
            (json!({ "ok": false, "kind": e.kind().map(|k| k.as_str()), "error": e.to_string() }), false)
        }
    }
}

fn read_loop(db: &Path, until: &Path, max_secs: u64) -> (serde_json::Value, bool) {
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let (mut reads, mut errors, mut first_error, mut last) = (0u64, 0u64, None, 0i64);
    let reader = match Reader::open(db) {
        Ok(r) => r,
        Err(e) => return (json!({ "reads": 0, "errors": 1, "first_error": e.to_string() }), false),
    };
    while !until.exists() && Instant::now() < deadline {
        match reader.query_value("SELECT count(*) FROM rows", &[]) {
            Ok(Some(Value::Integer(n))) => {
                if n < last {
                    errors += 1;
                    first_error.get_or_insert_with(|| format!("count went backwards: {last} -> {n}"));
                }
                last = n;
                reads += 1;
            }
            Ok(other) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("unexpected result {other:?}"));
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    (json!({ "reads": reads, "errors": errors, "last_count": last, "first_error": first_error }), errors == 0)
}

fn say(v: serde_json::Value) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn pipeline(
    db: &Path,
    client_no: i64,
    count: i64,
    depth: usize,
    fail_at: Option<i64>,
    hold: bool,
) -> (serde_json::Value, bool) {
    let opts = ConnectOptions::new(db).client_name(format!("lbtool-pipeline-{client_no}"));
    let mut client = match Client::connect_with(&opts) {
        Ok(c) => c,
        Err(e) => return (json!({ "ok": 0, "errors": 1, "first_error": e.to_string() }), false),
    };
    let depth = if hold { count.max(1) as usize } else { depth };
    let mut p = client.pipeline().with_depth(depth);
    let mut pending = Vec::new();
    for i in 0..count {
        let seq = if fail_at == Some(i) { i - 1 } else { i };
        let params =
            [Value::Integer(client_no), Value::Integer(seq), Value::Text(format!("p{client_no}-{i}"))];
        match p.submit("INSERT INTO rows (client, seq, payload) VALUES (?1, ?2, ?3)", &params) {
            Ok(h) => pending.push((i, h)),
            Err(e) => return (json!({ "ok": 0, "errors": 1, "first_error": e.to_string() }), false),
        }
    }
    if hold {
        say(json!({ "sent": count, "pid": std::process::id() }));
        let mut sink = String::new();
        let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
    }
    let (mut ok, mut failed, mut in_order, mut last, mut first_error) = (0, Vec::new(), true, 0, None);
    for (i, h) in pending {
        match p.wait(h) {
            Ok(r) => {
                ok += 1;
                in_order &= r.last_insert_rowid > last;
                last = r.last_insert_rowid;
            }
            Err(e) => {
                failed.push(i);
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    let summary = json!({
        "ok": ok,
        "errors": failed.len(),
        "failed": failed,
        "in_order": in_order,
        "first_error": first_error,
    });
    (summary, in_order && failed.iter().all(|i| Some(*i) == fail_at))
}

fn hold(db: &Path) -> (serde_json::Value, bool) {
    let opts = ConnectOptions::new(db).client_name("lbtool-hold");
    match Client::connect_with(&opts) {
        Ok(c) => {
            say(json!({ "connected": true, "client_id": c.hello().client_id, "pid": std::process::id() }));
            let mut sink = String::new();
            let _ = std::io::Read::read_to_string(&mut std::io::stdin(), &mut sink);
            (json!({ "released": true }), true)
        }
        Err(e) => (json!({ "connected": false, "error": e.to_string() }), false),
    }
}

fn session(db: &Path, sql: &[String], timeout: f64) -> (serde_json::Value, bool) {
    let opts = ConnectOptions::new(db).client_name("lbtool-session");
    let run = || -> Result<&'static str, litebroker_client::ClientError> {
        let client = Client::connect_with(&opts)?;
        let mut s = client.into_session(Duration::from_secs_f64(timeout))?;
        for q in sql {
            s.execute(q, &[])?;
        }
        say(json!({ "in_session": true, "pid": std::process::id() }));
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        match line.trim() {
            "commit" => s.commit().map(|()| "committed"),
            _ => s.rollback().map(|()| "rolled back"),
        }
    };
    match run() {
        Ok(outcome) => (json!({ "outcome": outcome }), true),
        Err(e) => (json!({ "error": e.to_string(), "kind": e.kind().map(|k| k.as_str()) }), false),
    }
}

fn latency(db: &Path, until: &Path, max_secs: u64) -> (serde_json::Value, bool) {
    let opts = ConnectOptions::new(db).client_name("lbtool-latency");
    let mut client = match Client::connect_with(&opts) {
        Ok(c) => c,
        Err(e) => return (json!({ "writes": 0, "errors": 1, "first_error": e.to_string() }), false),
    };
    if let Err(e) =
        client.execute("CREATE TABLE IF NOT EXISTS probe (seq INTEGER PRIMARY KEY, payload TEXT)", &[])
    {
        return (json!({ "writes": 0, "errors": 1, "first_error": e.to_string() }), false);
    }
    say(json!({ "started": true }));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(max_secs);
    let (mut lat, mut errors, mut first_error) = (Vec::new(), 0u64, None);
    let (mut max_us, mut max_at_ms) = (0u64, 0u64);
    while !until.exists() && Instant::now() < deadline {
        let t = Instant::now();
        match client.execute("INSERT INTO probe (payload) VALUES ('latency probe row')", &[]) {
            Ok(_) => {
                let us = t.elapsed().as_micros() as u64;
                if us > max_us {
                    max_us = us;
                    max_at_ms = t.duration_since(started).as_millis() as u64;
                }
                lat.push(us);
            }
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| e.to_string());
            }
        }
    }
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1))).copied().unwrap_or(0)
    };
    (
        json!({
            "writes": lat.len(), "errors": errors, "first_error": first_error,
            "p50_us": pct(0.5), "p99_us": pct(0.99), "max_us": max_us, "max_at_ms": max_at_ms,
        }),
        errors == 0,
    )
}

fn increments(
    db: &Path,
    client_no: i64,
    until: &Path,
    timeout: f64,
    max_secs: u64,
) -> (serde_json::Value, bool) {
    let opts = ConnectOptions::new(db)
        .client_name(format!("lbtool-increments-{client_no}"))
        .request_timeout(Duration::from_secs_f64(timeout));
    let mut client = match Client::connect_with(&opts) {
        Ok(c) => c,
        Err(e) => return (json!({ "client": client_no, "errors": 1, "first_error": e.to_string() }), false),
    };
    say(json!({ "started": true }));
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let (mut acked_increments, mut acked_batches, mut errors, mut first_error) =
        (0u64, Vec::new(), 0u64, None);
    let mut reconnects = 0;
    let mut op = 0u64;
    while !until.exists() && Instant::now() < deadline {
        op += 1;
        let r = if op.is_multiple_of(4) {
            let marker = format!("c{client_no}-{op}");
            let rows = (1..=3)
                .map(|part| {
                    Statement::new(
                        "INSERT INTO batches (marker, part, counter_id) VALUES (?1, ?2, ?3)",
                        vec![Value::Text(marker.clone()), Value::Integer(part), Value::Integer(client_no)],
                    )
                })
                .collect();
            client.execute_batch(rows).map(|_| acked_batches.push(marker))
        } else {
            client
                .execute("UPDATE counters SET qty = qty + 1 WHERE id = ?1", &[Value::Integer(client_no)])
                .map(|_| acked_increments += 1)
        };
        if let Err(e) = r {
            errors += 1;
            first_error.get_or_insert_with(|| e.to_string());
            // The request's outcome is unknown; a new connection for what follows.
            if client.is_broken()
                && client.reconnect(Instant::now() + Duration::from_secs_f64(timeout)).is_err()
            {
                break;
            }
        }
        reconnects = reconnects.max(client.reconnects());
    }
    (
        json!({
            "client": client_no, "ops": op, "acked_increments": acked_increments, "acked_batches": acked_batches,
            "errors": errors, "first_error": first_error, "reconnects": reconnects,
        }),
        errors == 0,
    )
}

fn db_writes(db: &Path, process: i64, threads: i64, count: i64) -> (serde_json::Value, bool) {
    let handle = match litebroker_client::Db::builder(db).client_name("lbtool-db").open() {
        Ok(h) => h,
        Err(e) => return (json!({ "ok": 0, "errors": 1, "first_error": e.to_string() }), false),
    };
    let workers: Vec<_> = (0..threads)
        .map(|thread| {
            let handle = handle.clone();
            std::thread::spawn(move || {
                let (mut ok, mut first_error) = (0, None);
                for seq in 0..count {
                    match handle.execute("INSERT INTO db_rows VALUES (?1, ?2, ?3)", (process, thread, seq)) {
                        Ok(_) => ok += 1,
                        Err(e) => {
                            first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                (ok, first_error)
            })
        })
        .collect();
    let (mut ok, mut first_error) = (0, None);
    for w in workers {
        let (n, e) = w.join().unwrap_or((0, Some("a thread panicked".into())));
        ok += n;
        if first_error.is_none() {
            first_error = e;
        }
    }
    let errors = threads * count - ok;
    (json!({ "ok": ok, "errors": errors, "first_error": first_error }), errors == 0)
}

fn watch(
    db: &Path,
    tables: &[String],
    count: Option<u64>,
    until: Option<&Path>,
    quiet: Duration,
    mut stall: Option<(u64, Duration)>,
    max_secs: u64,
) -> (serde_json::Value, bool) {
    use std::collections::BTreeMap;
    use std::io::Write;
    let handle = match litebroker_client::Db::builder(db).client_name("lbtool-watch").open() {
        Ok(h) => h,
        Err(e) => return (json!({ "error": e.to_string() }), false),
    };
    let names: Vec<&str> = tables.iter().map(String::as_str).collect();
    let mut w = handle.watch(&names);
    let deadline = Instant::now() + Duration::from_secs(max_secs);
    let start = loop {
        match w.subscribe() {
            Ok(c) => break c,
            Err(e) if Instant::now() >= deadline => return (json!({ "error": e.to_string() }), false),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    };
    println!("{}", json!({ "watching": start.to_string() }));
    let _ = std::io::stdout().flush();
    let (mut events, mut resyncs, mut in_order, mut last) = (0u64, 0u64, true, None);
    let mut reasons: Vec<String> = Vec::new();
    let mut totals: BTreeMap<String, [u64; 3]> = BTreeMap::new();
    let mut rowids: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    let mut quiet_since = Instant::now();
    let mut error = None;
    while Instant::now() < deadline && count.is_none_or(|n| events < n) {
        if stall.is_some_and(|(n, _)| events == n) {
            std::thread::sleep(stall.map_or(Duration::ZERO, |s| s.1));
            stall.take();
        }
        match w.next_timeout(Duration::from_millis(50)) {
            Ok(Some(e)) => {
                quiet_since = Instant::now();
                events += 1;
                if let Some(l) = last {
                    if e.cursor <= l && !e.is_resync() {
                        in_order = false;
                    }
                }
                last = Some(e.cursor);
                if let Some(r) = e.resync {
                    resyncs += 1;
                    reasons.push(r.as_str().to_owned());
                }
                for t in &e.tables {
                    let s = totals.entry(t.table.clone()).or_default();
                    s[0] += t.inserted;
                    s[1] += t.updated;
                    s[2] += t.deleted;
                    rowids.entry(t.table.clone()).or_default().extend(&t.rowids);
                }
                let line = json!({ "event": {
                    "cursor": e.cursor.to_string(),
                    "resync": e.resync.map(|r| r.as_str()),
                    "tables": e.tables.iter().map(|t| json!({
                        "table": t.table, "inserted": t.inserted, "updated": t.updated,
                        "deleted": t.deleted, "rowids": t.rowids, "rowids_capped": t.rowids_capped,
                    })).collect::<Vec<_>>(),
                    "received_unix_ms": litebroker_protocol::host::unix_ms(),
                    "committed_unix_us": e.committed_unix_us,
                }});
                println!("{line}");
                let _ = std::io::stdout().flush();
            }
            Ok(None) => {
                if until.is_some_and(Path::exists) && quiet_since.elapsed() >= quiet {
                    break;
                }
            }
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    let totals: BTreeMap<_, _> = totals
        .into_iter()
        .map(|(t, [i, u, d])| (t, json!({ "inserted": i, "updated": u, "deleted": d })))
        .collect();
    let distinct: BTreeMap<_, _> = rowids
        .into_iter()
        .map(|(t, mut ids)| {
            let all = ids.len();
            ids.sort_unstable();
            ids.dedup();
            (t, json!({ "listed": all, "distinct": ids.len() }))
        })
        .collect();
    let ok = error.is_none() && in_order;
    (
        json!({
            "summary": true, "events": events, "resyncs": resyncs, "reasons": reasons,
            "in_order": in_order, "totals": totals, "rowids": distinct,
            "subscriptions": w.subscriptions(), "last": last.map(|c| c.to_string()), "error": error,
        }),
        ok,
    )
}
