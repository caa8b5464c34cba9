//! The file-load scenarios, each one 1,000,000-row file loaded through a fresh
//! broker by the `litebroker` CLI and into a fresh database of its own by the
//! sqlite3 CLI, the same file in the same run, alternately:
//!
//! - `import`: a CSV file (`sku,qty,note`, about 40 bytes a row) by `litebroker
//!   import FILE --table t --create` and `sqlite3 DB -cmd ".mode csv" ".import
//!   FILE t"`, both creating the table from the header;
//! - `batch`: an SQL file (`BEGIN;`, `CREATE TABLE`, one `INSERT` a row,
//!   `COMMIT;`, about 70 bytes a row) by `litebroker batch FILE` (a streamed
//!   batch) and `sqlite3 DB ".read FILE"`, both one transaction.
//!
//! The sqlite3 database gets the broker's journal mode and `synchronous` first
//! (`-cmd "PRAGMA …"`), so that both commit the same way. Each side's time is its
//! whole process, start to exit; the broker's peak RSS (VmHWM, a fresh broker each
//! time) is read after its load.

use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value as Json};

use crate::broker;
use crate::scenario::SyncMode;
use crate::stats::median;

/// Rows of each file.
pub const LOAD_ROWS: u64 = 1_000_000;

/// A file-load scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// `litebroker import` of a CSV file against `sqlite3 .import`.
    Import,
    /// `litebroker batch` of an SQL file against `sqlite3 .read`.
    Batch,
}

impl Load {
    /// The scenario's name (`--only`, the report).
    pub fn name(self) -> &'static str {
        match self {
            Load::Import => "import",
            Load::Batch => "batch",
        }
    }

    /// The two sides, as the report names them.
    pub fn sides(self) -> (&'static str, &'static str) {
        match self {
            Load::Import => ("litebroker import", "sqlite3 .import"),
            Load::Batch => ("litebroker batch", "sqlite3 .read"),
        }
    }

    /// What the file is, for the report.
    pub fn file_kind(self) -> &'static str {
        match self {
            Load::Import => "CSV",
            Load::Batch => "SQL",
        }
    }

    /// Writes the file the scenario loads; its size.
    fn write_file(self, path: &Path) -> Result<u64> {
        let mut w = BufWriter::new(std::fs::File::create(path)?);
        match self {
            Load::Import => {
                writeln!(w, "sku,qty,note")?;
                for i in 0..LOAD_ROWS {
                    writeln!(w, "sku-{i:07},{},note for row {i}", i % 1000)?;
                }
            }
            Load::Batch => {
                writeln!(w, "BEGIN;\nCREATE TABLE t (sku TEXT, qty INTEGER, note TEXT);")?;
                for i in 0..LOAD_ROWS {
                    writeln!(w, "INSERT INTO t VALUES ('sku-{i:07}', {}, 'note for row {i}');", i % 1000)?;
                }
                writeln!(w, "COMMIT;")?;
            }
        }
        w.flush()?;
        Ok(std::fs::metadata(path)?.len())
    }

    /// The `litebroker` command loading `file` into `db`'s table `t`.
    fn litebroker(self, db: &Path, file: &Path) -> Command {
        let mut cli = Command::new(litebroker_tests::bin("litebroker"));
        cli.arg("--db").arg(db).args(["--timeout", "600"]);
        match self {
            Load::Import => cli.arg("import").arg(file).args(["--table", "t", "--create"]),
            Load::Batch => cli.arg("batch").arg(file),
        };
        cli
    }

    /// The sqlite3 CLI's command doing the same into `db`.
    fn sqlite3(self, db: &Path, file: &Path, sync: SyncMode) -> Command {
        let mut sqlite3 = Command::new("sqlite3");
        sqlite3
            .arg(db)
            .args(["-cmd", "PRAGMA journal_mode = WAL", "-cmd"])
            .arg(format!("PRAGMA synchronous = {}", sync.as_str()));
        match self {
            Load::Import => sqlite3.args(["-cmd", ".mode csv"]).arg(format!(".import {} t", file.display())),
            Load::Batch => sqlite3.arg(format!(".read {}", file.display())),
        };
        sqlite3
    }
}

/// A file-load scenario's figures, one sample per repetition.
#[derive(Debug)]
pub struct LoadFigures {
    pub load: Load,
    pub sync: SyncMode,
    /// The `litebroker` side's rows/s.
    pub litebroker: Vec<f64>,
    /// The sqlite3 CLI's rows/s.
    pub sqlite3: Vec<f64>,
    /// The broker's peak RSS during the load, KiB.
    pub rss_kb: Vec<u64>,
    /// The file's size, bytes.
    pub file_bytes: u64,
}

impl LoadFigures {
    /// Median rows/s of the `litebroker` side and of the sqlite3 CLI, their ratio.
    pub fn medians(&self) -> (f64, f64, f64) {
        let (l, s) = (median(self.litebroker.clone()), median(self.sqlite3.clone()));
        (l, s, l / s.max(1.0))
    }

    /// The largest peak RSS, MiB.
    pub fn peak_rss_mib(&self) -> f64 {
        self.rss_kb.iter().copied().max().unwrap_or(0) as f64 / 1024.0
    }

    /// The report's line for the scenario.
    pub fn line(&self) -> String {
        let (l, s, ratio) = self.medians();
        let (lb, sq) = self.load.sides();
        format!(
            "{} ({} rows, {:.1} MB {}, synchronous {}, median of {}): {lb} {l:.0} rows/s, {sq} {s:.0} rows/s, \
             ratio {ratio:.2}; broker peak RSS {:.1} MiB",
            self.load.name(),
            LOAD_ROWS,
            self.file_bytes as f64 / 1e6,
            self.load.file_kind(),
            self.sync.as_str(),
            self.litebroker.len(),
            self.peak_rss_mib()
        )
    }

    /// The scenario in the report's JSON line.
    pub fn to_json(&self) -> Json {
        let (l, s, ratio) = self.medians();
        json!({
            "name": self.load.name(),
            "rows": LOAD_ROWS,
            "file_bytes": self.file_bytes,
            "sync": self.sync.as_str(),
            "litebroker_rows_per_s": l.round(),
            "litebroker_rows_per_s_all": self.litebroker.iter().map(|v| v.round()).collect::<Vec<_>>(),
            "sqlite3_rows_per_s": s.round(),
            "sqlite3_rows_per_s_all": self.sqlite3.iter().map(|v| v.round()).collect::<Vec<_>>(),
            "ratio": (ratio * 100.0).round() / 100.0,
            "broker_peak_rss_kb": self.rss_kb.iter().copied().max(),
        })
    }
}

/// Runs `cmd` to completion, failing with its output when it fails; its time.
fn timed(mut cmd: Command, what: &str) -> Result<Duration> {
    let t = Instant::now();
    let out = cmd.output().with_context(|| {
        format!("run {what} (the file-load scenarios need the sqlite3 CLI; --only leaves them out)")
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
fn once(work: &Path, file: &Path, round: usize, f: &mut LoadFigures) -> Result<()> {
    let name = f.load.name();
    let (lb, sq) = f.load.sides();
    let db = work.join(format!("{name}-lb-{round}.db"));
    let b = broker::start(&db, f.sync, &[])?;
    let took = timed(f.load.litebroker(&db, file), lb)?;
    f.rss_kb.push(b.peak_rss_kb());
    b.stop()?;
    f.litebroker.push(LOAD_ROWS as f64 / took.as_secs_f64());

    let plain = work.join(format!("{name}-sqlite3-{round}.db"));
    let took = timed(f.load.sqlite3(&plain, file, f.sync), sq)?;
    f.sqlite3.push(LOAD_ROWS as f64 / took.as_secs_f64());
    // A figure counts only when both loaded the whole file.
    for p in [&db, &plain] {
        let n: i64 = rusqlite::Connection::open(p)?.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?;
        if n != LOAD_ROWS as i64 {
            bail!("{} holds {n} rows after its load, not {LOAD_ROWS}", p.display());
        }
    }
    for p in [db, plain] {
        for suffix in ["", "-wal", "-shm", "-broker.lock"] {
            std::fs::remove_file(format!("{}{suffix}", p.display())).ok();
        }
    }
    Ok(())
}

/// Measures `load` `repeats` times with `synchronous = sync`.
pub fn measure(load: Load, work: &Path, sync: SyncMode, repeats: usize) -> Result<LoadFigures> {
    let file = work.join(format!("{}.{}", load.name(), load.file_kind().to_ascii_lowercase()));
    let mut f = LoadFigures {
        load,
        sync,
        litebroker: Vec::new(),
        sqlite3: Vec::new(),
        rss_kb: Vec::new(),
        file_bytes: load.write_file(&file)?,
    };
    let (lb, sq) = load.sides();
    for round in 1..=repeats {
        once(work, &file, round, &mut f)?;
        eprintln!(
            "round {round}/{repeats} {:<17} {:<6} rows={LOAD_ROWS}  {lb} {:.0} rows/s  {sq} {:.0} rows/s  broker peak RSS {:.1} MiB",
            load.name(),
            sync.as_str(),
            f.litebroker.last().copied().unwrap_or(0.0),
            f.sqlite3.last().copied().unwrap_or(0.0),
            f.rss_kb.last().copied().unwrap_or(0) as f64 / 1024.0
        );
    }
    std::fs::remove_file(&file).ok();
    Ok(f)
}
