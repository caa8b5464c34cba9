//! The `import` scenario: one 1,000,000-row CSV file (`sku,qty,note`, about 40
//! bytes a row) loaded by `litebroker import FILE --table t --create` through a
//! fresh broker, and by the sqlite3 CLI (`sqlite3 DB -cmd ".mode csv" ".import
//! FILE t"`) into a fresh database of its own, the same file in the same run,
//! alternately. Both create the table from the header; the sqlite3 database gets
//! the broker's journal mode and `synchronous` first (`-cmd "PRAGMA …"`), so that
//! both commit the same way. Each side's time is its whole process, start to
//! exit; the broker's peak RSS (VmHWM, a fresh broker each time) is read after
//! its import.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value as Json};

use crate::broker;
use crate::scenario::SyncMode;
use crate::stats::median;

/// Rows of the file.
pub const IMPORT_ROWS: u64 = 1_000_000;

/// The scenario's figures, one sample per repetition.
#[derive(Debug, Default)]
pub struct ImportFigures {
    pub sync: Option<SyncMode>,
    /// `litebroker import` rows/s.
    pub litebroker: Vec<f64>,
    /// `sqlite3 .import` rows/s.
    pub sqlite3: Vec<f64>,
    /// The broker's peak RSS during the import, KiB.
    pub rss_kb: Vec<u64>,
    /// The file's size, bytes.
    pub file_bytes: u64,
}

impl ImportFigures {
    /// Median rows/s of `litebroker import` and of `sqlite3 .import`, their ratio.
    pub fn medians(&self) -> (f64, f64, f64) {
        let (l, s) = (median(self.litebroker.clone()), median(self.sqlite3.clone()));
        (l, s, l / s.max(1.0))
    }

    /// The largest peak RSS, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.rss_kb.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    }

    /// The scenario in the report's JSON line.
    pub fn to_json(&self) -> Json {
        let (l, s, ratio) = self.medians();
        json!({
            "name": "import",
            "rows": IMPORT_ROWS,
            "file_bytes": self.file_bytes,
            "sync": self.sync.map(SyncMode::as_str),
            "litebroker_rows_per_s": l.round(),
            "litebroker_rows_per_s_all": self.litebroker.iter().map(|v| v.round()).collect::<Vec<_>>(),
            "sqlite3_rows_per_s": s.round(),
            "sqlite3_rows_per_s_all": self.sqlite3.iter().map(|v| v.round()).collect::<Vec<_>>(),
            "ratio": (ratio * 100.0).round() / 100.0,
            "broker_peak_rss_kb": self.rss_kb.iter().copied().max(),
        })
    }
}

/// Writes the CSV file the scenario imports.
fn write_csv(path: &Path) -> Result<u64> {
    let mut w = BufWriter::new(std::fs::File::create(path)?);
    writeln!(w, "sku,qty,note")?;
    for i in 0..IMPORT_ROWS {
        writeln!(w, "sku-{i:07},{},note for row {i}", i % 1000)?;
    }
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Runs `cmd` to completion, failing with its output when it fails; its time.
fn timed(mut cmd: Command, what: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| {
        format!("run {what} (the import scenario needs the sqlite3 CLI; --only leaves it out)")
    })?;
    let took = t.elapsed();
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

/// One repetition of both sides, each into a fresh database under `work`.
fn once(work: &Path, csv: &Path, sync: SyncMode, round: usize, f: &mut ImportFigures) -> Result<()> {
    let db = work.join(format!("import-lb-{round}.db"));
    let b = broker::start(&db, sync, &[])?;
    let mut cli = Command::new(litebroker_tests::bin("litebroker"));
    cli.arg("--db").arg(&db).args(["--timeout", "600", "import"]).arg(csv).args(["--table", "t", "--create"]);
    let took = timed(cli, "litebroker import")?;
    f.rss_kb.push(b.peak_rss_kb());
    b.stop()?;
    f.litebroker.push(IMPORT_ROWS as f64 / took.as_secs_f64());

    let plain = work.join(format!("import-sqlite3-{round}.db"));
    let mut sqlite3 = Command::new("sqlite3");
    sqlite3
        .arg(&plain)
        .args(["-cmd", "PRAGMA journal_mode = WAL", "-cmd"])
        .arg(format!("PRAGMA synchronous = {}", sync.as_str()))
        .args(["-cmd", ".mode csv"])
        .arg(format!(".import {} t", csv.display()));
    let took = timed(sqlite3, "sqlite3 .import")?;
    f.sqlite3.push(IMPORT_ROWS as f64 / took.as_secs_f64());
    // A figure counts only when both imported the whole file.
    for p in [&db, &plain] {
        let n: i64 = rusqlite::Connection::open(p)?.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        if n != IMPORT_ROWS as i64 {
            bail!("{} holds {n} rows after its import, not {IMPORT_ROWS}", p.display());
        }
    }
    for p in [db, plain] {
        for suffix in ["", "-wal", "-shm", "-broker.lock"] {
            std::fs::remove_file(format!("{}{suffix}", p.display())).ok();
        }
    }
    Ok(())
}

/// Measures the scenario `repeats` times with `synchronous = sync`.
pub fn measure_import(work: &Path, sync: SyncMode, repeats: usize) -> Result<ImportFigures> {
    let csv = work.join("import.csv");
    let mut f = ImportFigures { sync: Some(sync), file_bytes: write_csv(&csv)?, ..ImportFigures::default() };
    for round in 1..=repeats {
        once(work, &csv, sync, round, &mut f)?;
        eprintln!(
            "round {round}/{repeats} import            {:<6} rows={IMPORT_ROWS}  litebroker import {:.0} rows/s  sqlite3 .import {:.0} rows/s  broker peak RSS {:.1} MiB",
            sync.as_str(),
            f.litebroker.last().copied().unwrap_or(0.0),
            f.sqlite3.last().copied().unwrap_or(0.0),
            f.rss_kb.last().copied().unwrap_or(0) as f64 / 1024.0
        );
    }
    std::fs::remove_file(&csv).ok();
    Ok(f)
}
