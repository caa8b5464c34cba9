//! Result sets as text: `table` (the default), `box`, `csv`, `tsv`, `json`,
//! `jsonl` and `line`. Display formats (table, box, line) fit the width they are
//! given: a cell too wide is cut with `…`, never wrapped, and control characters
//! are shown escaped so a cell stays on its line. Data formats (csv, tsv, json,
//! jsonl) are never cut and keep every value whole.

use std::io::{self, Write};

use litebroker_client::Value;
use serde_json::{json, Value as Json};
use unicode_width::{UnicodeWidthChar, UnicodeWidthStr};

/// An output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Aligned columns under a header and a rule, then `(N rows)`.
    Table,
    /// Columns in a box of line-drawing characters.
    Box,
    /// RFC 4180 comma-separated values, a header row first.
    Csv,
    /// Tab-separated values (`\t`, `\n`, `\r`, `\\` escaped), a header row first.
    Tsv,
    /// One JSON array of objects, one object per row.
    Json,
    /// One JSON object per row, one per line.
    Jsonl,
    /// `column = value`, one line per column, a blank line between rows.
    Line,
}

impl Format {
    /// The name used by `--format` and `.mode`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Format::Table => "table",
            Format::Box => "box",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Json => "json",
            Format::Jsonl => "jsonl",
            Format::Line => "line",
        }
    }

    /// Parses a `.mode` argument.
    pub(crate) fn parse(s: &str) -> Option<Format> {
        <Format as clap::ValueEnum>::from_str(s, true).ok()
    }

    /// Whether the format is for programs (no cutting, counters as a row).
    pub(crate) fn is_data(self) -> bool {
        matches!(self, Format::Csv | Format::Tsv | Format::Json | Format::Jsonl)
    }
}

/// How results are printed.
#[derive(Debug, Clone)]
pub(crate) struct Style {
    pub(crate) format: Format,
    /// Header row (table, box, csv, tsv).
    pub(crate) headers: bool,
    /// What NULL is shown as; `None`: `NULL` in display formats, empty in csv/tsv.
    pub(crate) null: Option<String>,
    /// Fit display formats to this many columns; `None`: never cut.
    pub(crate) width: Option<usize>,
}

impl Style {
    fn null_text(&self) -> &str {
        match (&self.null, self.format) {
            (Some(t), _) => t,
            (None, Format::Csv | Format::Tsv) => "",
            (None, _) => "NULL",
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A value as `--json` has always written it (blobs as `{"blob_hex": …}`).
pub(crate) fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(r) => json!(r),
        Value::Text(t) => json!(t),
        Value::Blob(b) => json!({ "blob_hex": hex(b) }),
    }
}

/// Blobs up to this many bytes are shown whole in display formats.
const BLOB_WHOLE: usize = 16;
/// Of a longer blob, this many first bytes are shown, then its length.
const BLOB_SHOWN: usize = 8;

/// A blob in a display format: whole when short, else its first bytes and its
/// length, so one big blob does not fill the screen.
fn blob_display(b: &[u8]) -> String {
    if b.len() <= BLOB_WHOLE {
        format!("x'{}'", hex(b))
    } else {
        format!("x'{}…' ({} bytes)", hex(&b[..BLOB_SHOWN]), b.len())
    }
}

/// A display cell cut to `max` columns: a blob keeps its length and loses hex
/// digits (`x'0a1b…' (40 bytes)`), anything else is cut at its end.
fn cut(value: Option<&Value>, text: &str, max: usize) -> String {
    if let Some(Value::Blob(b)) = value {
        if width_of(text) > max {
            let tail = format!("…' ({} bytes)", b.len());
            // Whole bytes only: two hex digits each.
            let digits = max.saturating_sub(2 + width_of(&tail)) / 2 * 2;
            if digits > 0 {
                return format!("x'{}{tail}", &hex(&b[..(digits / 2).min(b.len())]));
            }
        }
    }
    truncate(text, max)
}

/// A REAL as text that reads back to the same value: the shortest decimal
/// form, with a `.0` on whole numbers (Rust prints 1.0 as "1"; SQLite keeps the
/// point so a REAL reads as one), and an exponent for very large or small ones.
fn real_text(r: f64) -> String {
    let a = r.abs();
    if !r.is_finite() {
        r.to_string()
    } else if a != 0.0 && !(1e-5..1e16).contains(&a) {
        format!("{r:e}")
    } else if r.fract() == 0.0 {
        format!("{r:.1}")
    } else {
        r.to_string()
    }
}

/// A value in a display format, one line: control characters escaped.
fn display_text(v: &Value, null: &str) -> String {
    match v {
        Value::Null => null.to_owned(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => real_text(*r),
        Value::Text(t) => escape_controls(t),
        Value::Blob(b) => blob_display(b),
    }
}

/// A value in csv (whole, as typed; blobs as an SQLite literal).
fn data_text(v: &Value, null: &str) -> String {
    match v {
        Value::Null => null.to_owned(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => real_text(*r),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => format!("x'{}'", hex(b)),
    }
}

/// Newlines, tabs and other control characters as visible escapes: a cell must
/// not break its line, and escape sequences from the data must not reach the
/// terminal.
fn escape_controls(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    out
}

fn tsv_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
    out
}

fn width_of(s: &str) -> usize {
    UnicodeWidthStr::width(s)
}

/// `s` cut to at most `max` display columns, ending in `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if width_of(s) <= max {
        return s.to_owned();
    }
    if max == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in s.chars() {
        let w = UnicodeWidthChar::width(c).unwrap_or(0);
        if used + w > max - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// `s` padded with spaces to `w` display columns.
fn pad(s: &str, w: usize) -> String {
    let mut out = s.to_owned();
    out.extend(std::iter::repeat_n(' ', w.saturating_sub(width_of(s))));
    out
}

/// The narrowest a cut column gets: room for a few characters and the `…`.
const MIN_COLUMN: usize = 4;

/// Column widths that fit `budget` display columns: columns narrower than an
/// even share keep their width, the wider ones share what is left equally. When
/// even the narrowest widths do not fit, those are used and the line overflows
/// (a cell is still never wrapped).
pub(crate) fn fit_widths(natural: &[usize], budget: usize) -> Vec<usize> {
    if natural.iter().sum::<usize>() <= budget {
        return natural.to_vec();
    }
    let mut order: Vec<usize> = (0..natural.len()).collect();
    order.sort_by_key(|&i| natural[i]);
    let mut out = vec![0; natural.len()];
    let mut left = budget;
    for (k, &i) in order.iter().enumerate() {
        let share = left / (natural.len() - k);
        let w = natural[i].min(share.max(MIN_COLUMN.min(natural[i])));
        out[i] = w;
        left = left.saturating_sub(w);
    }
    out
}

/// Writes a result set in `style`.
///
/// # Errors
/// When the output cannot be written.
pub(crate) fn write_rows(
    out: &mut dyn Write,
    columns: &[String],
    rows: &[Vec<Value>],
    style: &Style,
) -> io::Result<()> {
    match style.format {
        Format::Table => table(out, columns, rows, style),
        Format::Box => boxed(out, columns, rows, style),
        Format::Line => line_mode(out, columns, rows, style),
        Format::Csv => csv_mode(out, columns, rows, style),
        Format::Tsv => tsv_mode(out, columns, rows, style),
        Format::Json => json_mode(out, columns, rows),
        Format::Jsonl => jsonl_mode(out, columns, rows),
    }
}

/// Display cells and their fitted widths; `overhead` is what the format adds
/// besides the cells on each line.
fn display_grid(
    columns: &[String],
    rows: &[Vec<Value>],
    style: &Style,
    overhead: usize,
) -> (Vec<String>, Vec<Vec<String>>, Vec<usize>) {
    let null = style.null_text();
    let header: Vec<String> = columns.iter().map(|c| escape_controls(c)).collect();
    let cells: Vec<Vec<String>> =
        rows.iter().map(|r| r.iter().map(|v| display_text(v, null)).collect()).collect();
    let mut natural: Vec<usize> =
        if style.headers { header.iter().map(|h| width_of(h)).collect() } else { vec![0; header.len()] };
    for r in &cells {
        for (w, c) in natural.iter_mut().zip(r) {
            *w = (*w).max(width_of(c));
        }
    }
    let widths = match style.width {
        Some(total) => fit_widths(&natural, total.saturating_sub(overhead)),
        None => natural,
    };
    (header, cells, widths)
}

/// A row's cells cut to their column's width and padded to it (`values`: the
/// row's values, which say how a cell may be cut; None for the header).
fn fitted(vals: &[String], values: Option<&[Value]>, widths: &[usize]) -> Vec<String> {
    vals.iter()
        .zip(widths)
        .enumerate()
        .map(|(i, (v, w))| pad(&cut(values.and_then(|r| r.get(i)), v, *w), *w))
        .collect()
}

fn table(out: &mut dyn Write, columns: &[String], rows: &[Vec<Value>], style: &Style) -> io::Result<()> {
    let (header, cells, widths) = display_grid(columns, rows, style, 2 * columns.len().saturating_sub(1));
    let mut line = |vals: &[String], values: Option<&[Value]>| -> io::Result<()> {
        writeln!(out, "{}", fitted(vals, values, &widths).join("  ").trim_end())
    };
    if style.headers {
        line(&header, None)?;
        line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>(), None)?;
    }
    for (r, values) in cells.iter().zip(rows) {
        line(r, Some(values))?;
    }
    writeln!(out, "({} row{})", rows.len(), if rows.len() == 1 { "" } else { "s" })
}

fn boxed(out: &mut dyn Write, columns: &[String], rows: &[Vec<Value>], style: &Style) -> io::Result<()> {
    // "│ " + cells joined by " │ " + " │"
    let overhead = 4 + 3 * columns.len().saturating_sub(1);
    let (header, cells, widths) = display_grid(columns, rows, style, overhead);
    let rule = |l: &str, m: &str, r: &str| {
        let parts: Vec<String> = widths.iter().map(|w| "─".repeat(w + 2)).collect();
        format!("{l}{}{r}", parts.join(m))
    };
    let line = |vals: &[String], values: Option<&[Value]>| {
        format!("│ {} │", fitted(vals, values, &widths).join(" │ "))
    };
    writeln!(out, "{}", rule("┌", "┬", "┐"))?;
    if style.headers {
        writeln!(out, "{}", line(&header, None))?;
        writeln!(out, "{}", rule("├", "┼", "┤"))?;
    }
    for (r, values) in cells.iter().zip(rows) {
        writeln!(out, "{}", line(r, Some(values)))?;
    }
    writeln!(out, "{}", rule("└", "┴", "┘"))
}

fn line_mode(out: &mut dyn Write, columns: &[String], rows: &[Vec<Value>], style: &Style) -> io::Result<()> {
    let null = style.null_text();
    let names: Vec<String> = columns.iter().map(|c| escape_controls(c)).collect();
    let name_w = names.iter().map(|n| width_of(n)).max().unwrap_or(0);
    let value_w = style.width.map(|w| w.saturating_sub(name_w + 3).max(MIN_COLUMN));
    for (i, r) in rows.iter().enumerate() {
        if i > 0 {
            writeln!(out)?;
        }
        for (n, v) in names.iter().zip(r) {
            let text = display_text(v, null);
            let text = value_w.map_or_else(|| text.clone(), |w| cut(Some(v), &text, w));
            writeln!(out, "{}{n} = {text}", " ".repeat(name_w - width_of(n)))?;
        }
    }
    Ok(())
}

fn csv_mode(out: &mut dyn Write, columns: &[String], rows: &[Vec<Value>], style: &Style) -> io::Result<()> {
    let null = style.null_text();
    let mut w = csv::WriterBuilder::new().terminator(csv::Terminator::CRLF).from_writer(out);
    if style.headers {
        w.write_record(columns)?;
    }
    for r in rows {
        w.write_record(r.iter().map(|v| data_text(v, null)))?;
    }
    w.flush()
}

fn tsv_mode(out: &mut dyn Write, columns: &[String], rows: &[Vec<Value>], style: &Style) -> io::Result<()> {
    let null = style.null_text();
    if style.headers {
        let h: Vec<String> = columns.iter().map(|c| tsv_escape(c)).collect();
        writeln!(out, "{}", h.join("\t"))?;
    }
    for r in rows {
        let cells: Vec<String> = r.iter().map(|v| tsv_escape(&data_text(v, null))).collect();
        writeln!(out, "{}", cells.join("\t"))?;
    }
    Ok(())
}

/// One row as a JSON object, keys in column order (also when two columns share
/// a name, as SQLite allows).
fn json_object(columns: &[String], row: &[Value]) -> String {
    let fields: Vec<String> =
        columns.iter().zip(row).map(|(c, v)| format!("{}:{}", Json::String(c.clone()), to_json(v))).collect();
    format!("{{{}}}", fields.join(","))
}

fn json_mode(out: &mut dyn Write, columns: &[String], rows: &[Vec<Value>]) -> io::Result<()> {
    if rows.is_empty() {
        return writeln!(out, "[]");
    }
    for (i, r) in rows.iter().enumerate() {
        let open = if i == 0 { "[" } else { "" };
        let close = if i + 1 == rows.len() { "]" } else { "," };
        writeln!(out, "{open}{}{close}", json_object(columns, r))?;
    }
    Ok(())
}

fn jsonl_mode(out: &mut dyn Write, columns: &[String], rows: &[Vec<Value>]) -> io::Result<()> {
    for r in rows {
        writeln!(out, "{}", json_object(columns, r))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(format: Format, width: Option<usize>) -> String {
        let columns = vec!["id".to_owned(), "name".to_owned(), "data".to_owned()];
        let rows = vec![
            vec![Value::Integer(1), Value::Text("a\tb".into()), Value::Null],
            vec![Value::Real(2.0), Value::Text("日本".into()), Value::Blob(vec![0xab; 20])],
        ];
        let mut out = Vec::new();
        let style = Style { format, headers: true, null: None, width };
        write_rows(&mut out, &columns, &rows, &style).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn cells_are_cut_by_display_width_with_an_ellipsis() {
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("日本語", 4), "日…");
        assert_eq!(width_of(&truncate("日本語", 4)), 3);
        assert_eq!(fit_widths(&[2, 50, 100], 40), vec![2, 19, 19]);
        assert_eq!(fit_widths(&[2, 5], 40), vec![2, 5]);
        assert_eq!(fit_widths(&[10, 10, 10], 6), vec![4, 4, 4], "too narrow: the minimum, overflowing");
        // A blob cut to fit keeps its length and whole bytes of its start.
        let blob = Value::Blob((0..40).collect());
        let shown = blob_display(&[0; 40]);
        assert_eq!(shown, "x'0000000000000000…' (40 bytes)");
        assert_eq!(cut(Some(&blob), &shown, 23), "x'00010203…' (40 bytes)");
        assert_eq!(cut(Some(&blob), &shown, 20), "x'0001…' (40 bytes)");
        assert_eq!(cut(Some(&blob), &shown, 18), "x'00…' (40 bytes)");
        assert_eq!(cut(Some(&blob), &shown, 16), "x'0000000000000…", "no room for a byte: cut as text");
        let short = Value::Blob(vec![0xab; 16]);
        assert_eq!(cut(Some(&short), &blob_display(&[0xab; 16]), 24), "x'abababab…' (16 bytes)");
        assert_eq!(cut(None, "abcdef", 4), "abc…");
    }

    #[test]
    fn display_formats_escape_and_shorten_data_formats_keep_it_whole() {
        let t = render(Format::Table, None);
        assert_eq!(
            t,
            "id   name  data\n---  ----  -------------------------------\n1    a\\tb  NULL\n2.0  日本  x'abababababababab…' (20 bytes)\n(2 rows)\n"
        );
        let csv = render(Format::Csv, None);
        assert_eq!(csv, format!("id,name,data\r\n1,a\tb,\r\n2.0,日本,x'{}'\r\n", "ab".repeat(20)));
        let tsv = render(Format::Tsv, None);
        assert!(tsv.starts_with("id\tname\tdata\n1\ta\\tb\t\n"), "{tsv}");
        assert_eq!(
            render(Format::Jsonl, None),
            format!(
                "{{\"id\":1,\"name\":\"a\\tb\",\"data\":null}}\n{{\"id\":2.0,\"name\":\"日本\",\"data\":{{\"blob_hex\":\"{}\"}}}}\n",
                "ab".repeat(20)
            )
        );
        let narrow = render(Format::Box, Some(30));
        for l in narrow.lines() {
            assert!(width_of(l) <= 30, "{l:?} is wider than 30");
        }
    }
}
