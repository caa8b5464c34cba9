//! `litebroker import FILE --table T`: CSV, TSV or JSON Lines into a table, as
//! one streamed executemany (one atomic transaction at the broker, the rows sent
//! while the file is read, so a file of any size never sits in memory).
//!
//! - **Formats.** `csv` (the `csv` crate: RFC 4180 quoting, fields may hold
//!   commas, quotes and newlines), `tsv` (the same reader with tabs between
//!   fields: a field may be quoted to hold a tab, a quote or a newline), `jsonl`
//!   (one JSON object or array per line; blank lines are skipped and counted). Guessed from
//!   the extension (`.csv`, `.tsv`/`.tab`, `.jsonl`/`.ndjson`); `-` is stdin and
//!   then `--format` is needed.
//! - **Columns.** CSV/TSV: the header row names them, unless `--no-header`: then
//!   the values go to the table's own columns in their order (the first N), or,
//!   with `--create` for a missing table, to columns `c1..cN`. JSONL: an object's
//!   keys name the columns (the first line's keys; a key missing on a later line
//!   is NULL, a key the first line lacks is an error); a line that is an array
//!   is positional, as `--no-header`.
//! - **Values** are typed as `litebroker exec` types its parameters (the CLI's
//!   one parameter function): a field that is a JSON literal is that value
//!   (`42` integer, `4.5` real, `null` NULL, `true` 1, `"007"` the text 007),
//!   anything else is text as it stands. An empty field is empty text, or NULL
//!   with `--empty-as-null`. JSONL values are their JSON values, typed the same.
//! - **`--create`** makes a missing table from the columns, without declared
//!   types (no type is inferred: every value keeps the type it was read as),
//!   before the rows are sent; a failed import drops the table it created. An
//!   existing table is imported into as it is.
//! - **All or nothing.** A malformed line, or a row the database refuses, fails
//!   the import with exit 1 naming the line number in the file (the line where
//!   the record starts, counting from 1); nothing is imported. A missing table
//!   without `--create` fails with exit 1 and creates nothing. `--timeout`
//!   bounds the whole import.
//! - **Output.** `imported N rows into T`, or `{"table":"T","rows":N}` with
//!   `--json`; a progress bar (rows, rows/s, ETA from the file size) on stderr
//!   when it is a terminal.

use std::cell::RefCell;
use std::fs::File;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use litebroker_client::{ClientError, Reader, Value, WriteOptions};
use serde_json::{json, Value as Json};

use crate::linemap::LineMap;
use crate::params::parse_param;
use crate::{client_failure, connect, fail, Cli, Failure};

/// The formats `import` reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Comma-separated values, RFC 4180 quoting.
    Csv,
    /// Tab-separated values (quoting as CSV).
    Tsv,
    /// One JSON object or array per line.
    Jsonl,
}

/// What `import` was asked to do.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The file to import, or `-` for stdin.
    file: PathBuf,
    /// The table to import into.
    #[arg(long)]
    table: String,
    /// CSV/TSV: the first line is data, not column names (the values go to the
    /// table's columns in order, or to c1..cN with --create).
    #[arg(long)]
    no_header: bool,
    /// Create the table when it is missing, from the column names, without
    /// declared types.
    #[arg(long)]
    create: bool,
    /// Import empty fields as NULL instead of empty text.
    #[arg(long)]
    empty_as_null: bool,
}

/// One record of the file: where it starts, and its fields (as text) or its
/// JSON values.
enum Record {
    Fields(Vec<String>),
    Json(Json),
}

/// Reads records one at a time.
enum Source {
    Delimited(csv::Reader<Box<dyn Read>>, csv::StringRecord),
    /// JSON Lines: the reader, the line number, the line, bytes read.
    Lines(Box<dyn BufRead>, u64, String, u64),
}

impl Source {
    /// The next record and its first line, None at the end.
    fn next(&mut self) -> Result<Option<(u64, Record)>, String> {
        match self {
            Source::Delimited(r, rec) => match r.read_record(rec) {
                Ok(false) => Ok(None),
                Ok(true) => {
                    let line = rec.position().map_or(0, csv::Position::line);
                    Ok(Some((line, Record::Fields(rec.iter().map(str::to_owned).collect()))))
                }
                Err(e) => {
                    let line = e.position().map_or(0, csv::Position::line);
                    Err(format!("line {line}: {}", describe_csv(&e)))
                }
            },
            Source::Lines(r, line, buf, bytes) => loop {
                buf.clear();
                *line += 1;
                match r.read_line(buf) {
                    Ok(0) => return Ok(None),
                    Ok(n) => {
                        *bytes += n as u64;
                        if buf.trim().is_empty() {
                            continue;
                        }
                        return serde_json::from_str::<Json>(buf.trim_end())
                            .map(|j| Some((*line, Record::Json(j))))
                            .map_err(|e| format!("line {line}: not valid JSON ({e})"));
                    }
                    Err(e) => return Err(format!("line {line}: {e}")),
                }
            },
        }
    }

    /// Bytes read so far (for the progress bar).
    fn bytes(&self) -> u64 {
        match self {
            Source::Delimited(r, _) => r.position().byte(),
            Source::Lines(.., bytes) => *bytes,
        }
    }
}

fn describe_csv(e: &csv::Error) -> String {
    match e.kind() {
        csv::ErrorKind::UnequalLengths { expected_len, len, .. } => {
            format!("{len} fields where the first line has {expected_len}")
        }
        csv::ErrorKind::Utf8 { .. } => "not valid UTF-8".into(),
        _ => e.to_string(),
    }
}

/// The format: the global `--format` (csv, tsv or jsonl: the output formats
/// that are also input formats), or guessed from the file's extension.
fn format_of(cli: &Cli, args: &ImportArgs) -> Result<Format, Failure> {
    match cli.format {
        Some(crate::render::Format::Csv) => return Ok(Format::Csv),
        Some(crate::render::Format::Tsv) => return Ok(Format::Tsv),
        Some(crate::render::Format::Jsonl) => return Ok(Format::Jsonl),
        Some(other) => {
            return Err(fail(
                2,
                "usage",
                format!("import: --format {} is not a format import reads: csv, tsv or jsonl", other.name()),
            ))
        }
        None => {}
    }
    let ext = args.file.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("csv") => Ok(Format::Csv),
        Some("tsv" | "tab") => Ok(Format::Tsv),
        Some("jsonl" | "ndjson") => Ok(Format::Jsonl),
        _ => Err(fail(
            2,
            "usage",
            format!(
                "import: cannot tell the format of {} from its name: give --format csv, tsv or jsonl",
                args.file.display()
            ),
        )),
    }
}

fn open(path: &Path) -> Result<(Box<dyn Read>, Option<u64>), Failure> {
    if path.as_os_str() == "-" {
        return Ok((Box::new(std::io::stdin().lock()), None));
    }
    let f = File::open(path)
        .map_err(|e| fail(2, "usage", format!("import: cannot read {}: {e}", path.display())))?;
    let size = f.metadata().ok().map(|m| m.len());
    Ok((Box::new(f), size))
}

/// `"name"`, for SQL: the identifier quoted, inner quotes doubled.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The table's columns in order (empty when there is no such table), read on a
/// local read-only connection.
fn table_columns(cli: &Cli, table: &str) -> Result<Vec<String>, Failure> {
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    let reader = Reader::open(&cli.db).map_err(on_client)?;
    let rows = reader
        .query("SELECT name FROM pragma_table_info(?1)", &[Value::Text(table.to_owned())])
        .map_err(on_client)?;
    // pragma_table_info's `name` is always text.
    Ok(rows
        .rows
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(Value::Text(name)) => Some(name),
            _ => None,
        })
        .collect())
}

/// Runs `import`.
pub fn run(cli: &Cli, args: &ImportArgs) -> Result<(), Failure> {
    let format = format_of(cli, args)?;
    let (input, size) = open(&args.file)?;
    let mut source = match format {
        Format::Csv | Format::Tsv => {
            let r = csv::ReaderBuilder::new()
                .delimiter(if format == Format::Tsv { b'\t' } else { b',' })
                .has_headers(false)
                .from_reader(input);
            Source::Delimited(r, csv::StringRecord::new())
        }
        Format::Jsonl => {
            Source::Lines(Box::new(BufReader::with_capacity(1 << 16, input)), 0, String::new(), 0)
        }
    };
    let malformed = |msg: String| fail(1, "malformed", format!("import: {}: {msg}", args.file.display()));

    // The first record: the header, or the first row (which tells the columns).
    let first = source.next().map_err(malformed)?;
    let (header, first_row): (Option<Vec<String>>, Option<(u64, Record)>) = match first {
        None => (None, None),
        Some((_, Record::Fields(f))) if !args.no_header => (Some(f), None),
        Some((line, Record::Json(Json::Object(o)))) => {
            (Some(o.keys().cloned().collect()), Some((line, Record::Json(Json::Object(o)))))
        }
        Some(rec) => (None, Some(rec)),
    };
    let width = match (&header, &first_row) {
        (Some(h), _) => h.len(),
        (None, Some((_, Record::Fields(f)))) => f.len(),
        (None, Some((_, Record::Json(Json::Array(a))))) => a.len(),
        (None, Some((line, Record::Json(_)))) => {
            return Err(malformed(format!("line {line}: a JSON Lines record is an object or an array")))
        }
        (None, None) => 0,
    };
    if width == 0 && first_row.is_none() && header.is_none() {
        return Err(malformed("no records to import".into()));
    }

    let existing = table_columns(cli, &args.table)?;
    let created = existing.is_empty();
    if created && !args.create {
        return Err(fail(
            1,
            "no_such_table",
            format!(
                "import: no table {} in {} (nothing was imported; --create makes it from the columns)",
                args.table,
                cli.db.display()
            ),
        ));
    }
    let columns: Vec<String> = match &header {
        Some(h) => h.clone(),
        None if created => (1..=width).map(|i| format!("c{i}")).collect(),
        None if width > existing.len() => {
            return Err(malformed(format!(
                "rows have {width} values but table {} has {} columns",
                args.table,
                existing.len()
            )))
        }
        None => existing[..width].to_vec(),
    };
    if columns.is_empty() {
        return Err(malformed("no columns".into()));
    }

    let mut client = connect(cli)?;
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    if created {
        let cols: Vec<String> = columns.iter().map(|c| ident(c)).collect();
        let sql = format!("CREATE TABLE {} ({})", ident(&args.table), cols.join(", "));
        client.execute(&sql, &[]).map_err(on_client)?;
    }
    let placeholders: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
    let insert = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        ident(&args.table),
        columns.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", "),
        placeholders.join(", ")
    );

    let pb = progress(cli, size);
    // Set by the row iterator when the file itself is at fault; the stream is then
    // abandoned (nothing applied) and this is the error reported.
    let file_error: RefCell<Option<String>> = RefCell::default();
    let lines = RefCell::new(LineMap::default());
    let started = Instant::now();
    let convert = |field: &str| -> Value {
        if field.is_empty() {
            if args.empty_as_null {
                Value::Null
            } else {
                Value::Text(String::new())
            }
        } else {
            parse_param(field)
        }
    };
    let to_row = |line: u64, rec: Record| -> Result<Vec<Value>, String> {
        match rec {
            Record::Fields(f) => Ok(f.iter().map(|s| convert(s)).collect()),
            Record::Json(Json::Array(a)) if a.len() == columns.len() => {
                Ok(a.iter().map(|v| parse_param(&v.to_string())).collect())
            }
            Record::Json(Json::Array(a)) => {
                Err(format!("line {line}: {} values where the first line has {}", a.len(), columns.len()))
            }
            Record::Json(Json::Object(mut o)) => {
                let row =
                    columns.iter().map(|c| o.remove(c).map_or(Value::Null, |v| parse_param(&v.to_string())));
                let row = row.collect();
                match o.keys().next() {
                    Some(k) => Err(format!("line {line}: key {k:?} is not a column of the first line")),
                    None => Ok(row),
                }
            }
            Record::Json(_) => Err(format!("line {line}: a JSON Lines record is an object or an array")),
        }
    };
    let mut index: u64 = 0;
    let mut pending = first_row;
    let rows = std::iter::from_fn(|| {
        let next = match pending.take() {
            Some(r) => Ok(Some(r)),
            None => source.next(),
        };
        let (line, rec) = match next {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err(msg) => {
                *file_error.borrow_mut() = Some(msg);
                return Some(Err(ClientError::Parameter("malformed input".into())));
            }
        };
        lines.borrow_mut().note(index, line);
        index += 1;
        if let Some(pb) = &pb {
            if index.is_multiple_of(4096) {
                let per_s = index as f64 / started.elapsed().as_secs_f64().max(1e-3);
                pb.set_position(source.bytes());
                pb.set_message(format!("{index} rows, {per_s:.0} rows/s"));
            }
        }
        Some(to_row(line, rec).map_err(|msg| {
            *file_error.borrow_mut() = Some(msg);
            ClientError::Parameter("malformed input".into())
        }))
    });
    let timeout = Duration::from_secs_f64(cli.timeout);
    let opts = WriteOptions {
        timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
        ..Default::default()
    };
    let r = client.execute_many_with(&insert, rows, opts);
    if let Some(pb) = &pb {
        pb.finish_and_clear();
    }
    let summary = match r {
        Ok(s) => s,
        Err(e) => {
            if created {
                // The table was made for this import only.
                let _ = client.execute(&format!("DROP TABLE IF EXISTS {}", ident(&args.table)), &[]);
            }
            if let Some(msg) = file_error.borrow_mut().take() {
                return Err(malformed(format!("{msg}; nothing was imported")));
            }
            if let ClientError::RowFailed { row, error } = &e {
                let line = lines.borrow().line_of(*row);
                let mut f = client_failure(&e, Some(cli));
                f.message = format!("import: {}: line {line}: {}", args.file.display(), error.message);
                f.code = 1;
                return Err(f);
            }
            return Err(on_client(e));
        }
    };
    if cli.json {
        println!("{}", json!({ "table": args.table, "rows": summary.rows }));
    } else {
        println!("imported {} rows into {}", summary.rows, args.table);
    }
    Ok(())
}

/// A progress bar on stderr when it is a terminal (not with --json): rows,
/// rows/s, and the ETA from the file's size when it has one.
fn progress(cli: &Cli, size: Option<u64>) -> Option<indicatif::ProgressBar> {
    if cli.json || !std::io::stderr().is_terminal() {
        return None;
    }
    let pb = indicatif::ProgressBar::new(size.unwrap_or(0));
    let template = if size.is_some() {
        "import {msg} [{bar:30}] {bytes}/{total_bytes} ETA {eta}"
    } else {
        "import {msg} {spinner}"
    };
    pb.set_style(
        indicatif::ProgressStyle::with_template(template)
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    Some(pb)
}
