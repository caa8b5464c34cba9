//! `replication` (the broker's replication status), the replication lines of
//! `status` and `doctor`, and `restore --from-replica`: fetch the database
//! through `litestream restore` into a temporary file next to it, verify it,
//! then restore it through the broker's verified path, or, with no broker,
//! into the database file directly when no process has it open.

use std::path::{Path, PathBuf};
use std::process::Command;

use litebroker_client::protocol::replication::{ReplicationReport, ReplicationState};
use litebroker_client::{Client, ClientError, Location};
use litebroker_server::ops;
use litebroker_server::replication::{config_path, Replication};
use serde_json::json;

use crate::{client_failure, connect, fail, Cli, Failure};

/// The broker's replication report; None from a broker too old to report it.
pub(crate) fn report(client: &mut Client) -> Result<Option<ReplicationReport>, ClientError> {
    crate::if_known(client.replication())
}

/// The report as JSON (null when unknown).
pub(crate) fn to_json(r: Option<&ReplicationReport>) -> serde_json::Value {
    r.map_or(serde_json::Value::Null, |r| {
        json!({
            "state": r.state.as_str(), "replica_url": r.replica_url, "program": r.program, "pid": r.pid,
            "restarts": r.restarts, "local_txid": r.local_txid, "replica_txid": r.replica_txid,
            "lag_seconds": r.lag_ms as f64 / 1000.0, "last_sync_unix_ms": r.last_sync_unix_ms,
            "last_error": r.last_error, "last_error_unix_ms": r.last_error_unix_ms,
            "sync_interval_seconds": r.sync_interval_ms as f64 / 1000.0,
        })
    })
}

/// One line for `status`: `off`, or state, replica, positions, lag, error.
pub(crate) fn line(r: &ReplicationReport) -> String {
    if r.state == ReplicationState::Off {
        return "off".into();
    }
    let mut s = format!(
        "{} to {} (replica at {}, local {}, lag {:.1} s)",
        r.state.as_str(),
        r.replica_url,
        r.replica_txid,
        r.local_txid,
        r.lag_ms as f64 / 1000.0
    );
    if let Some(e) = &r.last_error {
        s.push_str(&format!("; last error: {e}"));
    }
    s
}

/// What `doctor` says about replication: (is a problem, detail, action); None
/// when replication is off.
pub(crate) fn doctor(r: &ReplicationReport) -> Option<(bool, String, Option<String>)> {
    if r.state == ReplicationState::Off {
        return None;
    }
    let problem = r.last_error.is_some() || r.state != ReplicationState::Running;
    let action = problem.then(|| {
        "check the replica URL, its credentials and that it can be written; `litebroker replication` shows \
         the last error, the broker's log (target litestream) the rest"
            .to_owned()
    });
    Some((problem, line(r), action))
}

/// `litebroker replication`.
pub fn replication(cli: &Cli) -> Result<(), Failure> {
    let mut client = connect(cli)?;
    let r = client.replication().map_err(|e| client_failure(&e, Some(cli)))?;
    if cli.json {
        println!("{}", to_json(Some(&r)));
        return Ok(());
    }
    if r.state == ReplicationState::Off {
        println!("Replication is off (start litebrokerd with --replicate URL).");
        return Ok(());
    }
    let ago = |ms: Option<u64>| {
        ms.map_or_else(
            || "never".to_owned(),
            |t| {
                let now = litebroker_client::protocol::host::unix_ms();
                format!("{:.1} s ago", now.saturating_sub(t) as f64 / 1000.0)
            },
        )
    };
    println!("Replication to {}", r.replica_url);
    println!("  state:         {}", r.state.as_str());
    println!("  litestream:    {} (pid {})", r.program, r.pid.map_or("-".into(), |p| p.to_string()));
    println!("  restarts:      {}", r.restarts);
    println!("  position:      replica {}, local {}", r.replica_txid, r.local_txid);
    println!("  lag:           {:.1} s", r.lag_ms as f64 / 1000.0);
    println!("  last sync:     {}", ago(r.last_sync_unix_ms));
    println!("  sync interval: {:.1} s", r.sync_interval_ms as f64 / 1000.0);
    match &r.last_error {
        Some(e) => println!("  last error:    {e} ({})", ago(r.last_error_unix_ms)),
        None => println!("  last error:    none"),
    }
    Ok(())
}

/// Removes a file and its `-wal`/`-shm` companions, ignoring missing ones.
fn remove_with_companions(p: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut s = p.as_os_str().to_owned();
        s.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(s));
    }
}

/// `litebroker restore --from-replica [URL] [--at TIMESTAMP]`.
pub fn restore_from_replica(cli: &Cli, url: Option<&str>, at: Option<&str>) -> Result<(), Failure> {
    let loc = Location::resolve(&cli.db, cli.socket.as_deref())
        .map_err(|e| fail(1, "error", format!("{}: {e}", cli.db.display())))?;
    let program =
        Replication { program: std::env::var_os("LITESTREAM").map(PathBuf::from), ..Replication::new("") }
            .find_program()
            .map_err(|m| {
                fail(2, "usage", m.replacen("--replicate needs", "restoring from a replica needs", 1))
            })?;
    let name = loc.db_path.file_name().unwrap_or_default().to_string_lossy().into_owned();
    let temp = loc.db_path.with_file_name(format!(".{name}.from-replica-{}.db", std::process::id()));
    remove_with_companions(&temp);
    let mut cmd = Command::new(&program);
    cmd.arg("restore").arg("-o").arg(&temp);
    if let Some(ts) = at {
        cmd.arg("-timestamp").arg(ts);
    }
    match url {
        Some(u) => {
            cmd.arg(u);
        }
        None => {
            let config = config_path(&loc);
            if !config.is_file() {
                return Err(fail(
                    2,
                    "usage",
                    format!(
                        "no replica URL given, and no broker replicating {} left its Litestream configuration \
                         ({}); give the URL: restore --from-replica URL",
                        loc.db_path.display(),
                        config.display()
                    ),
                ));
            }
            cmd.arg("-config").arg(&config).arg(&loc.db_path);
        }
    }
    let out = cmd.output().map_err(|e| fail(1, "error", format!("cannot run {}: {e}", program.display())))?;
    if !out.status.success() || !temp.is_file() {
        remove_with_companions(&temp);
        let text = String::from_utf8_lossy(&out.stderr);
        let secrets = url.map(litebroker_server::replication::config::secrets_of).unwrap_or_default();
        let mut text = text.trim().to_owned();
        for s in secrets {
            text = text.replace(&s, "***");
        }
        return Err(fail(1, "error", format!("litestream restore failed ({}): {text}", out.status)));
    }
    let result = verify_then_restore(cli, &loc, &temp);
    remove_with_companions(&temp);
    result
}

fn verify_then_restore(cli: &Cli, loc: &Location, temp: &Path) -> Result<(), Failure> {
    ops::check_restore_source(temp)
        .map_err(|m| fail(5, "verification_failed", format!("the copy from the replica is refused: {m}")))?;
    match connect(cli) {
        Ok(mut client) => {
            let r = client.restore(temp).map_err(|e| client_failure(&e, Some(cli)))?;
            if cli.json {
                println!(
                    "{}",
                    json!({ "restored_from": "replica", "safety_backup": r.safety_backup, "pages": r.pages,
                            "duration_ms": r.duration_ms, "through_broker": true })
                );
            } else {
                println!("Restored from the replica through the broker ({} pages).", r.pages);
                println!("The database as it was before is saved in {}", r.safety_backup);
            }
            Ok(())
        }
        Err(f) if f.code == 3 && f.kind == "not_running" => restore_offline(cli, loc, temp),
        Err(f) => Err(f),
    }
}

/// No broker: the file goes in place of the database when no process has it open,
/// after a safety backup of the database as it was.
fn restore_offline(cli: &Cli, loc: &Location, temp: &Path) -> Result<(), Failure> {
    let db = &loc.db_path;
    if let Some(pids) = processes_with_open(db)? {
        if !pids.is_empty() {
            return Err(fail(
                4,
                "locked",
                format!(
                    "no broker runs, but processes {pids:?} have {} open; stop them (or start the broker, \
                     which restores while they run) and try again",
                    db.display()
                ),
            ));
        }
    }
    let mut safety = None;
    if db.exists() {
        let dest = ops::new_backup_path(db, "pre-restore")
            .map_err(|e| fail(1, "error", format!("cannot name a safety backup: {e}")))?;
        ops::write_backup(db, &dest, &mut |_, _| {})
            .map_err(|e| fail(1, "error", format!("cannot take a safety backup of {}: {e}", db.display())))?;
        safety = Some(dest);
    }
    // The old -wal/-shm belong to the old content: they go before the new file comes.
    for suffix in ["-wal", "-shm"] {
        let mut s = db.as_os_str().to_owned();
        s.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(s));
    }
    std::fs::rename(temp, db)
        .map_err(|e| fail(1, "error", format!("cannot move the restored file into place: {e}")))?;
    let safety = safety.map(|p| p.display().to_string());
    if cli.json {
        println!(
            "{}",
            json!({ "restored_from": "replica", "safety_backup": safety, "through_broker": false })
        );
    } else {
        println!("Restored {} from the replica (no broker was running).", db.display());
        if let Some(s) = safety {
            println!("The database as it was before is saved in {s}");
        }
    }
    Ok(())
}

/// Process ids that have `db` (or its `-wal`/`-shm`) open, from /proc on Linux;
/// None where the system does not tell (the restore then refuses nothing).
fn processes_with_open(db: &Path) -> Result<Option<Vec<u32>>, Failure> {
    #[cfg(target_os = "linux")]
    {
        let names: Vec<PathBuf> = ["", "-wal", "-shm"]
            .iter()
            .map(|s| {
                let mut p = db.as_os_str().to_owned();
                p.push(s);
                PathBuf::from(p)
            })
            .collect();
        let me = std::process::id();
        let mut pids = Vec::new();
        for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else { continue };
            if pid == me {
                continue;
            }
            let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else { continue };
            if fds.flatten().any(|fd| std::fs::read_link(fd.path()).is_ok_and(|t| names.contains(&t))) {
                pids.push(pid);
            }
        }
        Ok(Some(pids))
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = db;
        Err(fail(
            2,
            "usage",
            "without a broker, restoring from a replica needs Linux (to see that no process has the file \
             open); start the broker and run the restore again",
        ))
    }
}
