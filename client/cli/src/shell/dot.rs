//! The shell's dot-commands, as sqlite3 users know them (`.help` lists them).

use std::fs::File;
use std::io::{BufReader, BufWriter};
use std::path::PathBuf;
use std::time::Instant;

use litebroker_client::{Statement, Value};

use super::editor::{history_path, DOT_COMMANDS};
use super::{Flow, Out, Shell, Txn};
use crate::render::Format;
use crate::{connect, fail, ms_to_text, ops, Failure};

/// The words of a dot-command line; `'…'` or `"…"` keep spaces inside one.
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote = None;
    let mut started = false;
    for c in line.chars() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => cur.push(c),
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                started = true;
            }
            None if c.is_whitespace() => {
                if started {
                    out.push(std::mem::take(&mut cur));
                    started = false;
                }
            }
            None => {
                cur.push(c);
                started = true;
            }
        }
    }
    if started {
        out.push(cur);
    }
    out
}

fn usage(what: &str) -> Failure {
    fail(1, "usage", format!("usage: {what}"))
}

fn on_off(arg: Option<&String>, what: &str) -> Result<bool, Failure> {
    match arg.map(|s| s.to_ascii_lowercase()).as_deref() {
        Some("on" | "1" | "yes" | "true") => Ok(true),
        Some("off" | "0" | "no" | "false") => Ok(false),
        _ => Err(usage(&format!("{what} on|off"))),
    }
}

/// An identifier quoted for SQL.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl Shell<'_> {
    /// Runs one dot-command line.
    pub(super) fn dot(&mut self, line: &str) -> Result<Flow, Failure> {
        let w = words(line);
        let Some(cmd) = w.first() else { return Ok(Flow::Continue) };
        let args = &w[1..];
        match cmd.as_str() {
            ".quit" | ".exit" => return Ok(Flow::Quit),
            ".help" => {
                let width = DOT_COMMANDS.iter().map(|(u, _)| u.chars().count()).max().unwrap_or(0);
                let mut text = String::new();
                for (u, what) in DOT_COMMANDS {
                    text.push_str(&format!("{u:<width$}  {what}\n"));
                }
                text.push_str(
                    "\nStatements end with ';' and may span lines. Reads run on this process's read-only \
                     connection,\nwrites through the broker; BEGIN … COMMIT is one write session (the \
                     prompt shows how long\nthe writer has been held and the lease left). Ctrl-C drops the line being typed, or stops a running read.\n",
                );
                self.write_out(|o| o.write_all(text.as_bytes()))?;
            }
            ".tables" => {
                let pattern = args.first().cloned().unwrap_or_else(|| "%".to_owned());
                let rows = self.read_column(
                    "SELECT name FROM sqlite_schema WHERE type IN ('table', 'view') \
                     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name LIKE ?1 ORDER BY name",
                    &[Value::Text(pattern)],
                )?;
                self.show_names(&rows)?;
            }
            ".indexes" | ".indices" => {
                let pattern = args.first().cloned().unwrap_or_else(|| "%".to_owned());
                let rows = self.read_column(
                    "SELECT name FROM sqlite_schema WHERE type = 'index' AND tbl_name LIKE ?1 ORDER BY name",
                    &[Value::Text(pattern)],
                )?;
                self.show_names(&rows)?;
            }
            ".schema" => {
                let pattern = args.first().cloned().unwrap_or_else(|| "%".to_owned());
                let rows = self.read_column(
                    "SELECT sql || ';' FROM sqlite_schema WHERE sql IS NOT NULL \
                     AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND (tbl_name LIKE ?1 OR name LIKE ?1) \
                     ORDER BY tbl_name, type = 'index', type = 'trigger', name",
                    &[Value::Text(pattern)],
                )?;
                let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
                self.write_out(|o| o.write_all(text.as_bytes()))?;
            }
            ".mode" => match args.first() {
                None => {
                    let text = format!("current output mode: {}\n", self.style.format.name());
                    self.write_out(|o| o.write_all(text.as_bytes()))?;
                }
                Some(m) => {
                    self.style.format =
                        Format::parse(m).ok_or_else(|| usage(".mode table|box|csv|tsv|json|jsonl|line"))?;
                }
            },
            ".headers" | ".header" => self.style.headers = on_off(args.first(), ".headers")?,
            ".timer" => self.timer = on_off(args.first(), ".timer")?,
            ".nullvalue" => {
                self.style.null = Some(args.first().cloned().ok_or_else(|| usage(".nullvalue TEXT"))?);
            }
            ".output" | ".once" => {
                let once = cmd == ".once";
                if once && args.is_empty() {
                    return Err(usage(".once FILE"));
                }
                self.flush_out();
                self.out = match args.first().map(String::as_str) {
                    None | Some("stdout") => Out::Stdout,
                    Some(path) => {
                        let f = File::create(path)
                            .map_err(|e| fail(1, "error", format!("cannot open {path} for writing: {e}")))?;
                        Out::File(BufWriter::new(f), PathBuf::from(path))
                    }
                };
                self.once = once && matches!(self.out, Out::File(..));
            }
            ".read" => {
                let [path] = args else { return Err(usage(".read FILE")) };
                let f = File::open(path).map_err(|e| fail(1, "error", format!("cannot open {path}: {e}")))?;
                return self.feed(BufReader::new(f), path).map_err(|e| e.failure);
            }
            ".import" => self.import(args)?,
            ".status" => self.status()?,
            other => {
                return Err(fail(1, "usage", format!("unknown command {other}: .help lists the commands")));
            }
        }
        Ok(Flow::Continue)
    }

    /// The first column of a local read, as text.
    fn read_column(&mut self, sql: &str, params: &[Value]) -> Result<Vec<String>, Failure> {
        let rows = self.reader()?.query(sql, params).map_err(|e| self.failure(&e))?;
        Ok(rows
            .rows
            .into_iter()
            .filter_map(|r| match r.into_iter().next() {
                Some(Value::Text(t)) => Some(t),
                _ => None,
            })
            .collect())
    }

    /// Names in columns across the output's width, as sqlite3 lists tables.
    fn show_names(&mut self, names: &[String]) -> Result<(), Failure> {
        let widest = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
        let width = self.current_style().width.unwrap_or(80);
        let per_line = (width / (widest + 2)).max(1);
        let mut text = String::new();
        for row in names.chunks(per_line) {
            let cells: Vec<String> = row.iter().map(|n| format!("{n:<widest$}")).collect();
            text.push_str(cells.join("  ").trim_end());
            text.push('\n');
        }
        self.write_out(|o| o.write_all(text.as_bytes()))
    }

    /// `.import [--csv|--tsv] [--skip N] FILE TABLE`: all rows in one transaction
    /// (or in the open write session); a missing TABLE is created from the header
    /// row, whose columns are then TEXT.
    fn import(&mut self, args: &[String]) -> Result<(), Failure> {
        const USAGE: &str = ".import [--csv|--tsv] [--skip N] FILE TABLE";
        let mut tsv = self.style.format == Format::Tsv;
        let mut skip = 0usize;
        let mut rest = Vec::new();
        let mut it = args.iter();
        while let Some(a) = it.next() {
            match a.as_str() {
                "--csv" => tsv = false,
                "--tsv" => tsv = true,
                "--skip" => {
                    skip = it.next().and_then(|n| n.parse().ok()).ok_or_else(|| usage(USAGE))?;
                }
                _ => rest.push(a),
            }
        }
        let [file, table] = rest[..] else { return Err(usage(USAGE)) };
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .delimiter(if tsv { b'\t' } else { b',' })
            .from_path(file)
            .map_err(|e| fail(1, "error", format!("cannot read {file}: {e}")))?;
        let mut records = Vec::new();
        for (i, rec) in reader.records().enumerate() {
            let rec = rec.map_err(|e| fail(1, "error", format!("{file}: {e}")))?;
            if i >= skip {
                let line = rec.position().map_or(0, csv::Position::line);
                records.push((line, rec.iter().map(str::to_owned).collect::<Vec<String>>()));
            }
        }
        let exists = match self.local()? {
            Some(local) => local
                .reader
                .query_value(
                    "SELECT count(*) FROM sqlite_schema WHERE type IN ('table', 'view') AND name = ?1 COLLATE NOCASE",
                    &[Value::Text(table.clone())],
                )
                .map_err(|e| self.failure(&e))?
                .is_some_and(|v| v != Value::Integer(0)),
            None => false,
        };
        let mut statements = Vec::new();
        let columns = if exists {
            records.first().map_or(0, |(_, r)| r.len())
        } else {
            if records.is_empty() {
                return Err(fail(1, "error", format!("{file} has no header row to create {table} from")));
            }
            let (_, header) = records.remove(0);
            let cols: Vec<String> = header.iter().map(|h| format!("{} TEXT", quote_ident(h))).collect();
            statements.push(Statement::new(
                format!("CREATE TABLE {} ({})", quote_ident(table), cols.join(", ")),
                vec![],
            ));
            header.len()
        };
        let insert = format!(
            "INSERT INTO {} VALUES ({})",
            quote_ident(table),
            (1..=columns).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
        );
        for (line, r) in &records {
            if r.len() != columns {
                return Err(fail(
                    1,
                    "error",
                    format!(
                        "{file} line {line}: {} fields, {table} takes {columns}; nothing was imported",
                        r.len()
                    ),
                ));
            }
            statements.push(Statement::new(insert.clone(), r.iter().cloned().map(Value::Text).collect()));
        }
        let n = records.len();
        let started = Instant::now();
        match &mut self.txn {
            Txn::Open { session, .. } => {
                for s in statements {
                    session
                        .execute(&s.sql, &s.params)
                        .map_err(|e| crate::client_failure(&e, Some(self.cli)))?;
                }
            }
            Txn::Aborted(why) => return Err(fail(1, "lease_expired", why.clone())),
            Txn::None => {
                let client = self.client()?;
                let r = client.execute_batch(statements);
                r.map_err(|e| self.failure(&e))?;
            }
        }
        if self.interactive {
            eprintln!("imported {n} rows into {table} in {:.0} ms", started.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    }

    /// `.status`: the database, its broker, this shell's session and settings.
    fn status(&mut self) -> Result<(), Failure> {
        let mut text = format!("database: {}\n", self.cli.db.display());
        match connect(self.cli) {
            Ok(mut c) => match c.status() {
                Ok(s) => {
                    text.push_str(&format!(
                        "broker:   pid {} on {}, up {}, {} clients, writer {}\n",
                        s.pid,
                        s.socket,
                        ms_to_text(s.uptime_ms),
                        s.clients,
                        s.writer_holder
                            .as_deref()
                            .map_or_else(|| "free".to_owned(), |h| format!("held by {h}")),
                    ));
                    if let Ok(Some(h)) = ops::health(&mut c) {
                        let (exactly_once, writes) = ops::health_text(&h);
                        text.push_str(&format!("          exactly-once {exactly_once}, writes {writes}\n"));
                    }
                }
                Err(e) => text.push_str(&format!("broker:   {}\n", self.failure(&e).message)),
            },
            Err(f) => text.push_str(&format!(
                "broker:   none ({}); reads work, writes fail\n",
                f.message.lines().next().unwrap_or("")
            )),
        }
        text.push_str(&match &self.txn {
            Txn::None => "session:  none (each write commits on its own)\n".to_owned(),
            Txn::Open { since, begun, .. } => format!(
                "session:  write session begun at {begun}, writer held {}; the broker rolls it back \
                 when held past its lease (litebrokerd --lease-secs, default 30 s)\n",
                ms_to_text(since.elapsed().as_millis() as u64)
            ),
            Txn::Aborted(why) => format!("session:  aborted ({why}); COMMIT or ROLLBACK ends the block\n"),
        });
        let null = self.style.null.clone().unwrap_or_else(|| "NULL (empty in csv, tsv)".to_owned());
        text.push_str(&format!(
            "output:   {}, mode {}, headers {}, null {null:?}, timer {}\n",
            self.out_name(),
            self.style.format.name(),
            if self.style.headers { "on" } else { "off" },
            if self.timer { "on" } else { "off" },
        ));
        let history = match history_path() {
            // Script mode reads no history and keeps none.
            _ if !self.interactive => "off (not a terminal)".to_owned(),
            Some(p) => p.display().to_string(),
            None => "off".to_owned(),
        };
        text.push_str(&format!("history:  {history}\n"));
        self.write_out(|o| o.write_all(text.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_command_words_keep_quoted_spaces() {
        assert_eq!(words(".import 'my file.csv' t"), [".import", "my file.csv", "t"]);
        assert_eq!(words("  .mode   csv "), [".mode", "csv"]);
        assert_eq!(words(".nullvalue ''"), [".nullvalue", ""]);
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
