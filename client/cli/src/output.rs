//! What the commands print on stdout: rows in the chosen format, fitted to the
//! terminal, `exec`'s and `batch`'s counters, and the small figures of reports.

use std::io::{IsTerminal, Write};

use litebroker_client::{ExecResult, Value};
use serde_json::{json, Value as Json};

use crate::failure::{fail, Failure};
use crate::render::{self, Format, Style};
use crate::Cli;

/// The rows of a result as a JSON document: `{"columns", "rows"}`.
pub(crate) fn rows_json(columns: &[String], rows: &[Vec<Value>]) -> Json {
    json!({
        "columns": columns,
        "rows": rows.iter().map(|r| r.iter().map(render::to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
}

/// The width display formats fit: `--width`, else the terminal's when stdout is one.
pub(crate) fn output_width(cli: &Cli) -> Option<usize> {
    match cli.width {
        Some(0) => None,
        Some(w) => Some(w),
        None if std::io::stdout().is_terminal() => {
            console::Term::stdout().size_checked().map(|(_rows, cols)| usize::from(cols))
        }
        None => None,
    }
}

/// How rows are printed on stdout.
pub(crate) fn style(cli: &Cli) -> Style {
    Style {
        format: cli.format.unwrap_or(Format::Table),
        headers: true,
        null: cli.null.clone(),
        width: output_width(cli),
    }
}

/// Prints rows on stdout in `style`.
pub(crate) fn print_rows(columns: &[String], rows: &[Vec<Value>], style: &Style) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    render::write_rows(&mut out, columns, rows, style)
        .and_then(|()| out.flush())
        .map_err(|e| fail(1, "error", format!("cannot write the output: {e}")))
}

/// Prints what `exec` or `batch` did: the rows of a statement returning rows, and
/// the counters. In data formats (csv, tsv, json, jsonl) a result without rows is
/// the one row `changes, last_insert_rowid`, so the output stays parseable.
pub(crate) fn print_exec(cli: &Cli, r: &ExecResult) -> Result<(), Failure> {
    if cli.json {
        let mut doc = json!({ "changes": r.changes, "last_insert_rowid": r.last_insert_rowid });
        if !r.columns.is_empty() {
            let rows = rows_json(&r.columns, &r.rows);
            doc["columns"] = rows["columns"].clone();
            doc["rows"] = rows["rows"].clone();
        }
        println!("{doc}");
        return Ok(());
    }
    let style = style(cli);
    if style.format.is_data() {
        return if r.columns.is_empty() {
            let columns = ["changes".to_owned(), "last_insert_rowid".to_owned()];
            print_rows(
                &columns,
                &[vec![Value::Integer(r.changes as i64), Value::Integer(r.last_insert_rowid)]],
                &style,
            )
        } else {
            print_rows(&r.columns, &r.rows, &style)
        };
    }
    if !r.columns.is_empty() {
        print_rows(&r.columns, &r.rows, &style)?;
    }
    // After rows the counters are noise (the rowid is the connection's last
    // insert, from any earlier statement) unless the statement changed rows too
    // (`INSERT … RETURNING`).
    if r.columns.is_empty() || r.changes > 0 {
        println!("changes: {}, last insert rowid: {}", r.changes, r.last_insert_rowid);
    }
    Ok(())
}

/// `total / count`, 0 when nothing was counted yet.
pub(crate) fn ratio(total: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total as f64 / count as f64
    }
}

pub(crate) fn ms_to_text(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}
