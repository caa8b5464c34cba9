//! `stats`, `verify`, `backup`, `backups`, `restore`, `checkpoint`.

use std::io::IsTerminal;
use std::path::Path;

use litebroker_client::protocol::replication::ReplicationReport;
use litebroker_client::protocol::{CheckpointMode, DbStats, FeedFigures, HealthReport, VerifyReport};
use litebroker_client::{Client, ClientError, Location, Value};
use litebroker_server::ops;
use serde_json::json;

use crate::{client_failure, connect, fail, ms_to_text, print_rows, reported, style, Cli, Failure};

/// Connects, or reports that no broker runs (so the caller can fall back to a
/// local read-only operation).
fn broker_or_local(cli: &Cli) -> Result<Option<Client>, Failure> {
    match connect(cli) {
        Ok(c) => Ok(Some(c)),
        Err(f) if f.code == 3 && f.kind == "not_running" => Ok(None),
        Err(f) => Err(f),
    }
}

fn mb(bytes: u64) -> String {
    format!("{:.2} MB", bytes as f64 / 1e6)
}

fn local_path(cli: &Cli) -> Result<std::path::PathBuf, Failure> {
    let loc = Location::resolve(&cli.db, cli.socket.as_deref())
        .map_err(|e| fail(1, "error", format!("{}: {e}", cli.db.display())))?;
    if !loc.db_path.exists() {
        return Err(fail(1, "error", format!("database {} does not exist", loc.db_path.display())));
    }
    Ok(loc.db_path)
}

/// The broker's health; None from a broker too old to report it (protocol minor 0).
pub(crate) fn health(client: &mut Client) -> Result<Option<HealthReport>, ClientError> {
    crate::if_known(client.health())
}

/// `{"exactly_once", "exactly_once_off", "writes_stopped"}`, null when unknown.
pub(crate) fn health_json(h: Option<&HealthReport>) -> serde_json::Value {
    h.map_or(serde_json::Value::Null, |h| {
        json!({
            "exactly_once": h.exactly_once, "exactly_once_off": h.exactly_once_off,
            "writes_stopped": h.writes_stopped,
        })
    })
}

/// The exactly-once and writes lines of `status` and `stats`.
pub(crate) fn health_text(h: &HealthReport) -> (String, String) {
    let exactly_once = match (&h.exactly_once_off, h.exactly_once) {
        (Some(why), _) => format!("OFF: {why}"),
        (None, true) => "on".to_owned(),
        (None, false) => "OFF".to_owned(),
    };
    let writes = match &h.writes_stopped {
        Some(why) => format!("REFUSED: {why}"),
        None => "accepted".to_owned(),
    };
    (exactly_once, writes)
}

pub fn stats(cli: &Cli) -> Result<(), Failure> {
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    let (stats, extra) = match broker_or_local(cli)? {
        Some(mut c) => {
            let stats = c.stats().map_err(on_client)?;
            let extra = BrokerExtra {
                health: health(&mut c).map_err(on_client)?,
                replication: crate::replication::report(&mut c).map_err(on_client)?,
                feed: crate::watch::feed_report(&mut c).map_err(on_client)?,
            };
            (stats, extra)
        }
        None => {
            let path = local_path(cli)?;
            let conn = ops::open_read_only(&path).map_err(|e| on_client(e.into()))?;
            let stats =
                ops::db_stats(&conn, &path, ops::DEFAULT_WAL_WARN_BYTES).map_err(|e| on_client(e.into()))?;
            (stats, BrokerExtra::default())
        }
    };
    if cli.json {
        let mut doc = stats_json(&stats);
        if doc["broker"].is_object() {
            doc["broker"]["health"] = health_json(extra.health.as_ref());
            doc["broker"]["replication"] = crate::replication::to_json(extra.replication.as_ref());
            doc["broker"]["feed"] = crate::watch::feed_json(extra.feed.as_ref());
        }
        println!("{doc}");
    } else {
        print_stats(&stats, &extra);
    }
    Ok(())
}

/// What `stats` adds from the broker's other reports (each None from a broker
/// too old to give it, or with no broker).
#[derive(Default)]
struct BrokerExtra {
    health: Option<HealthReport>,
    replication: Option<ReplicationReport>,
    feed: Option<FeedFigures>,
}

fn stats_json(s: &DbStats) -> serde_json::Value {
    let mut doc = json!({
        "db": s.db_path, "schema_version": s.schema_version, "tables": s.tables, "indices": s.indices,
        "db_bytes": s.db_bytes, "wal_bytes": s.wal_bytes, "page_size": s.page_size,
        "page_count": s.page_count, "free_pages": s.free_pages, "journal_mode": s.journal_mode,
        "row_counts": s.row_counts.iter().map(|t| (t.name.clone(), json!(t.rows))).collect::<serde_json::Map<_, _>>(),
        "warnings": s.warnings, "broker": null,
    });
    if let (Some(b), Some(w)) = (&s.broker, &s.writer) {
        // Requests per group transaction: sessions, migrations and restores commit
        // too (`commits`) but are not groups.
        let per_commit = crate::ratio(b.group_requests, b.group_commits);
        doc["broker"] = json!({
            "pid": b.pid, "socket": b.socket, "uptime_ms": b.uptime_ms, "clients": b.clients,
            "requests": b.requests, "commits": b.commits, "committed_requests": w.committed_requests,
            "mean_requests_per_commit": per_commit, "max_requests_per_commit": w.max_requests_per_commit,
            "group_commits": b.group_commits,
            "queue_wait_mean_us": crate::ratio(b.queue_wait_us, b.queue_waits),
            "queue_wait_max_us": b.max_queue_wait_us,
            "commit_mean_us": crate::ratio(b.commit_us, b.group_commits), "commit_max_us": b.max_commit_us,
            "queue_depth": b.queue_depth, "lock_waits": w.lock_waits, "lock_retries": w.lock_retries,
            "last_checkpoint": w.last_checkpoint.as_ref().map(|c| json!({
                "mode": c.mode.as_str(), "blocked": c.blocked, "wal_frames": c.wal_frames,
                "checkpointed_frames": c.checkpointed_frames, "at_unix_ms": c.at_unix_ms,
            })),
            "wal_warn_bytes": w.wal_warn_bytes,
            "request_ids_enabled": b.request_ids, "request_ids_recorded": w.request_ids_recorded,
            "deduplicated": w.deduplicated,
        });
    }
    doc
}

fn print_stats(s: &DbStats, extra: &BrokerExtra) {
    println!("Database Statistics:");
    println!("  Database: {}", s.db_path);
    println!("  Schema version: {}", s.schema_version);
    println!("  Tables: {}", s.tables);
    println!("  Indices: {}", s.indices);
    println!("  Database size: {}", mb(s.db_bytes));
    println!("  WAL size: {}", mb(s.wal_bytes));
    println!(
        "  Page size: {} bytes ({} pages, {} free)",
        s.page_size,
        thousands(s.page_count),
        thousands(s.free_pages)
    );
    println!("  Journal mode: {}", s.journal_mode);
    println!();
    println!("  Row counts:");
    for t in &s.row_counts {
        println!("    {}: {}", t.name, thousands(t.rows));
    }
    match (&s.broker, &s.writer) {
        (Some(b), Some(w)) => {
            let per_commit = crate::ratio(b.group_requests, b.group_commits);
            println!();
            println!("Broker:");
            println!("  pid: {} (up {}), socket {}", b.pid, ms_to_text(b.uptime_ms), b.socket);
            println!("  Clients: {}", b.clients);
            println!("  Requests served: {}", thousands(b.requests));
            println!("  Commits: {}", thousands(b.commits));
            println!("  Requests per commit: mean {per_commit:.2}, max {}", w.max_requests_per_commit);
            println!(
                "  Queue wait: mean {:.1} µs, max {} µs; COMMIT: mean {:.1} µs, max {} µs",
                crate::ratio(b.queue_wait_us, b.queue_waits),
                b.max_queue_wait_us,
                crate::ratio(b.commit_us, b.group_commits),
                b.max_commit_us
            );
            println!("  Queue depth: {}", b.queue_depth);
            println!("  Lock waits: {} ({} retries)", w.lock_waits, w.lock_retries);
            if let Some(h) = &extra.health {
                let (exactly_once, writes) = health_text(h);
                println!("  Exactly-once writes: {exactly_once}");
                println!("  Writes: {writes}");
            }
            if let Some(r) = &extra.replication {
                println!("  Replication: {}", crate::replication::line(r));
            }
            if let Some(f) = &extra.feed {
                println!("  Change feed: {}", crate::watch::feed_line(f));
            }
            if b.request_ids {
                println!(
                    "  Request ids: {} recorded, {} resends answered from them",
                    thousands(w.request_ids_recorded),
                    thousands(w.deduplicated)
                );
            } else {
                println!("  Request ids: disabled (--request-id-retention-hours 0)");
            }
            match &w.last_checkpoint {
                Some(c) => println!(
                    "  Last checkpoint: {} — {} of {} WAL frames{}",
                    c.mode.as_str(),
                    c.checkpointed_frames,
                    c.wal_frames,
                    if c.blocked { " (readers blocked part of it)" } else { "" }
                ),
                None => println!("  Last checkpoint: none yet"),
            }
        }
        _ => {
            println!();
            println!("Broker: not running (figures read directly, read-only)");
        }
    }
    for w in &s.warnings {
        println!();
        println!("WARNING: {w}");
    }
}

pub fn verify(cli: &Cli) -> Result<(), Failure> {
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    let (report, local) = match broker_or_local(cli)? {
        Some(mut c) => (c.verify().map_err(on_client)?, false),
        None => {
            let path = local_path(cli)?;
            let conn = ops::open_read_only(&path).map_err(|e| on_client(e.into()))?;
            (ops::verify(&conn, &path).map_err(|e| on_client(e.into()))?, true)
        }
    };
    print_verify(cli.json, &report, local);
    if report.ok() {
        Ok(())
    } else {
        Err(reported(5, "verification_failed", format!("{} failed verification", report.path)))
    }
}

fn print_verify(as_json: bool, r: &VerifyReport, local: bool) {
    if as_json {
        println!(
            "{}",
            json!({
                "ok": r.ok(), "db": r.path, "integrity_problems": r.integrity_problems,
                "foreign_key_problems": r.foreign_key_problems, "checked_by": if local { "local" } else { "broker" },
            })
        );
        return;
    }
    if r.integrity_problems.is_empty() {
        println!("integrity_check: OK");
    } else {
        println!("integrity_check: FAIL");
        for p in &r.integrity_problems {
            println!("  {p}");
        }
    }
    if r.foreign_key_problems.is_empty() {
        println!("foreign_key_check: OK");
    } else {
        println!("foreign_key_check: FAIL ({} violations)", r.foreign_key_problems.len());
        for p in &r.foreign_key_problems {
            println!("  {p}");
        }
    }
    if !r.ok() {
        println!("The database may be corrupted: restore from a backup (litebroker backups; litebroker restore FILE).");
    }
}

fn progress_bar(cli: &Cli, what: &str) -> Option<indicatif::ProgressBar> {
    if cli.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(0);
    pb.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {bytes}/{total_bytes} ({eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(what.to_owned());
    Some(pb)
}

pub fn backup(cli: &Cli, label: Option<&str>, keep: Option<u32>) -> Result<(), Failure> {
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    let label = label.unwrap_or("manual");
    let mut client = connect(cli)?;
    let pb = progress_bar(cli, "backup");
    let mut on_progress = |done: u64, total: u64| {
        if let Some(pb) = &pb {
            pb.set_length(total);
            pb.set_position(done);
        }
    };
    let r = client.backup(label, keep.unwrap_or(0), &mut on_progress);
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let r = r.map_err(on_client)?;
    if cli.json {
        println!(
            "{}",
            json!({ "path": r.path, "bytes": r.bytes, "duration_ms": r.duration_ms, "integrity": "ok", "removed": r.removed })
        );
    } else {
        println!("Backup written: {} ({}, {} ms, integrity_check ok)", r.path, mb(r.bytes), r.duration_ms);
        for p in &r.removed {
            println!("  removed old backup {p}");
        }
    }
    Ok(())
}

pub fn backups(cli: &Cli) -> Result<(), Failure> {
    let loc = Location::resolve(&cli.db, cli.socket.as_deref())
        .map_err(|e| fail(1, "error", format!("{}: {e}", cli.db.display())))?;
    let debris = ops::sweep_backup_debris(&loc.db_path)
        .map_err(|e| fail(1, "error", format!("cannot read the backups folder: {e}")))?;
    let list =
        ops::list_backups(&loc.db_path).map_err(|e| fail(1, "error", format!("cannot list backups: {e}")))?;
    if cli.json {
        let items: Vec<_> = list
            .iter()
            .map(|b| json!({ "path": b.path.to_string_lossy(), "bytes": b.bytes, "modified_unix": b.modified_unix }))
            .collect();
        let debris: Vec<_> = debris.iter().map(|p| p.to_string_lossy()).collect();
        println!("{}", json!({ "backups": items, "removed_debris": debris }));
        return Ok(());
    }
    if cli.format.is_some() {
        // --format prints the fields of --json, in that format (debris goes to stderr).
        for p in &debris {
            eprintln!("removed {} (left by an interrupted backup)", p.display());
        }
        let columns = ["path", "bytes", "modified_unix"].map(String::from);
        let rows: Vec<Vec<Value>> = list
            .iter()
            .map(|b| {
                vec![
                    Value::Text(b.path.to_string_lossy().into_owned()),
                    Value::Integer(b.bytes as i64),
                    Value::Integer(b.modified_unix as i64),
                ]
            })
            .collect();
        return print_rows(&columns, &rows, &style(cli));
    }
    for p in &debris {
        println!("removed {} (left by an interrupted backup)", p.display());
    }
    if list.is_empty() {
        println!(
            "No backups in {} yet (litebroker backup [LABEL]).",
            ops::backup_dir(&loc.db_path).display()
        );
    } else {
        for b in &list {
            println!("{}  {}", b.path.display(), mb(b.bytes));
        }
        println!("({} backup{})", list.len(), if list.len() == 1 { "" } else { "s" });
    }
    Ok(())
}

pub fn restore(cli: &Cli, file: &Path) -> Result<(), Failure> {
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    // Refuse a bad file before involving the broker at all.
    let canonical = litebroker_client::protocol::rendezvous::canonicalize(file)
        .map_err(|e| fail(5, "verification_failed", format!("cannot restore {}: {e}", file.display())))?;
    ops::check_restore_source(&canonical)
        .map_err(|m| fail(5, "verification_failed", format!("refusing to restore: {m}")))?;
    let mut client = connect(cli)?;
    let spinner = progress_bar(cli, "restore");
    let r = client.restore(&canonical);
    if let Some(pb) = &spinner {
        pb.finish_and_clear();
    }
    let r = r.map_err(on_client)?;
    if cli.json {
        println!(
            "{}",
            json!({ "restored_from": r.restored_from, "safety_backup": r.safety_backup, "pages": r.pages, "duration_ms": r.duration_ms })
        );
    } else {
        println!(
            "Restored {} ({} pages, writer held {} ms).",
            r.restored_from,
            thousands(r.pages),
            r.duration_ms
        );
        println!("The database as it was before is saved in {}", r.safety_backup);
    }
    Ok(())
}

pub fn checkpoint(cli: &Cli, mode: CheckpointMode) -> Result<(), Failure> {
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    let r = connect(cli)?.checkpoint(mode).map_err(on_client)?;
    if cli.json {
        println!(
            "{}",
            json!({
                "mode": r.mode.as_str(), "wal_frames": r.wal_frames, "checkpointed_frames": r.checkpointed_frames,
                "blocked_by_readers": r.blocked, "wal_bytes_after": r.wal_bytes_after,
            })
        );
    } else {
        println!(
            "Checkpoint {}: {} of {} WAL frames checkpointed; WAL now {}",
            r.mode.as_str(),
            r.checkpointed_frames,
            r.wal_frames,
            mb(r.wal_bytes_after)
        );
        if r.blocked {
            println!("Readers blocked part of it: some connection keeps an old snapshot open (a long read transaction or an unfinished statement).");
        }
    }
    Ok(())
}

/// `1234567` → `1,234,567`, as row counts and sizes are printed for people.
fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated_by_commas() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_250), "1,250");
        assert_eq!(thousands(123_456), "123,456");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
