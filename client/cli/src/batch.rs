//! `litebroker batch FILE|-`: the statements of a file as one atomic
//! transaction at the broker, streamed (a streamed batch): the file is read a
//! block at a time, cut into statements where SQLite says each ends
//! (`statements::split_complete`), and the statements are sent while the file is
//! read, so a file of any size never sits in memory (on either side).
//!
//! - **All or nothing.** A failing statement fails the whole batch with the exit
//!   code of its error kind (as `exec`), the message naming the line of the file
//!   the statement starts on and SQLite's message; nothing is applied. A file
//!   that cannot be read (or is not UTF-8) is abandoned the same way.
//! - **A `BEGIN … COMMIT` around the file** is honoured (the batch is one
//!   transaction either way).
//! - **`sqlite3 .dump` output** starts `PRAGMA foreign_keys=OFF; BEGIN
//!   TRANSACTION;`. The broker never lets a client turn foreign keys off for the
//!   shared connection, so this pair is sent as `BEGIN TRANSACTION; PRAGMA
//!   defer_foreign_keys=ON;`: the dump's rows may reference rows that come later
//!   in the file, and the keys are checked once, at COMMIT: a consistent dump
//!   loads, an inconsistent one fails (where `sqlite3` would load it unchecked).
//! - **Output.** `changes: N, last insert rowid: R, statements: S` (`--json`:
//!   `{"changes","last_insert_rowid","statements"}`). Rows a statement returns are
//!   not printed: a streamed batch answers with a summary.
//! - **An older broker** (protocol minor below 3) gets the whole text as one
//!   request, as before streamed batches existed.

use std::fs::File;
use std::io::{self, BufRead, BufReader};
use std::path::Path;

use litebroker_client::{ClientError, ManySummary, Statement, Value, WriteOptions};
use serde_json::json;

use crate::linemap::LineMap;
use crate::statements::{has_statements, split_complete, Chunk, Classifier, Kind};
use crate::{client_failure, connect_for_write, fail, print_exec, print_rows, style, Cli, Failure};

/// Bytes of the file read before statements are cut off it (a statement longer
/// than this is read whole first).
const BLOCK: usize = 64 * 1024;

/// The protocol minor that brought streamed batches.
const STREAM_MINOR: u32 = 3;

/// Runs `litebroker batch` on `file` (stdin for `-` or none).
///
/// # Errors
/// The failure to report, with its exit code.
pub(crate) fn run(cli: &Cli, file: Option<&Path>) -> Result<(), Failure> {
    let (input, source): (Box<dyn BufRead>, String) = match file {
        None => (Box::new(io::stdin().lock()), "stdin".into()),
        Some(p) if p.as_os_str() == "-" => (Box::new(io::stdin().lock()), "stdin".into()),
        // A file that cannot be read is a wrong argument, like an empty one.
        Some(p) => match File::open(p) {
            Ok(f) => (Box::new(BufReader::new(f)), p.display().to_string()),
            Err(e) => return Err(fail(2, "usage", format!("batch: cannot read {}: {e}", p.display()))),
        },
    };
    let unreadable = |e: &io::Error| fail(2, "usage", format!("batch: cannot read {source}: {e}"));
    let mut script = Script::new(input);
    // The first statements are read before connecting: an empty file is a usage error.
    let mut head = Vec::new();
    for c in script.by_ref().take(2) {
        head.push(c.map_err(|e| unreadable(&e))?);
    }
    if head.is_empty() {
        return Err(fail(
            2,
            "usage",
            format!("batch: no statements in {source} (only whitespace or comments)"),
        ));
    }
    let mut client = connect_for_write(cli)?;
    if client.hello().minor < STREAM_MINOR {
        let mut sql: String = head.into_iter().map(|c| c.sql).collect();
        for c in script {
            sql.push_str(&c.map_err(|e| unreadable(&e))?.sql);
        }
        let r = client.execute(&sql, &[]).map_err(|e| client_failure(&e, Some(cli)))?;
        return print_exec(cli, &r);
    }
    dump_prelude(&mut head);
    let mut lines = LineMap::default();
    let mut read_error = None;
    let mut index = 0u64;
    let statements = head.into_iter().map(Ok).chain(script).map(|c| match c {
        Ok(c) => {
            lines.note(index, c.line as u64);
            index += 1;
            Ok(Statement::new(c.sql, Vec::new()))
        }
        Err(e) => {
            let abandon = ClientError::Io(io::Error::new(e.kind(), e.to_string()));
            read_error = Some(e);
            Err(abandon)
        }
    });
    let r = client.execute_batch_stream_with(statements, WriteOptions::default());
    match r {
        Ok(sum) => print_summary(cli, &sum),
        Err(_) if read_error.is_some() => {
            let e = read_error.unwrap_or_else(|| io::Error::other("unknown"));
            let mut f = unreadable(&e);
            f.message.push_str("; nothing was applied");
            Err(f)
        }
        Err(ClientError::StatementFailed { index, error }) => {
            // The exit code of the error kind, as `exec` has it.
            let mut f = client_failure(&ClientError::Broker(error.clone()), Some(cli));
            f.message = format!("batch: {source} line {}: {}", lines.line_of(index), error.message);
            Err(f)
        }
        Err(e) => Err(client_failure(&e, Some(cli))),
    }
}

/// `sqlite3 .dump`'s opening `PRAGMA foreign_keys=OFF; BEGIN TRANSACTION;` as
/// the broker can honour it (see the module's doc): the same two statements'
/// places, so statement indexes and lines stay the file's.
fn dump_prelude(head: &mut [Chunk]) {
    let [pragma, begin] = head else { return };
    let Ok(classifier) = Classifier::open_in_memory() else { return };
    let fk_off = classifier.prepare(&pragma.sql).ok().and_then(|p| p.pragma).is_some_and(|(name, value)| {
        name.eq_ignore_ascii_case("foreign_keys")
            && value.is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "off" | "0" | "false" | "no"))
    });
    let is_begin = classifier.prepare(&begin.sql).is_ok_and(|p| p.kind == Kind::Begin);
    if fk_off && is_begin {
        std::mem::swap(&mut pragma.sql, &mut begin.sql);
        std::mem::swap(&mut pragma.line, &mut begin.line);
        begin.sql = "PRAGMA defer_foreign_keys = ON;".into();
    }
}

/// Prints what the batch did.
fn print_summary(cli: &Cli, s: &ManySummary) -> Result<(), Failure> {
    if cli.json {
        println!(
            "{}",
            json!({ "changes": s.changes, "last_insert_rowid": s.last_insert_rowid, "statements": s.rows })
        );
        return Ok(());
    }
    let style = style(cli);
    if style.format.is_data() {
        let columns = ["changes".to_owned(), "last_insert_rowid".to_owned(), "statements".to_owned()];
        let row = vec![
            Value::Integer(s.changes as i64),
            Value::Integer(s.last_insert_rowid),
            Value::Integer(s.rows as i64),
        ];
        return print_rows(&columns, &[row], &style);
    }
    println!("changes: {}, last insert rowid: {}, statements: {}", s.changes, s.last_insert_rowid, s.rows);
    Ok(())
}

/// The statements of a script, read a block at a time.
struct Script {
    input: Box<dyn BufRead>,
    /// Text read and not yet cut into statements.
    buf: String,
    /// The line `buf` starts on.
    line: usize,
    ready: std::collections::VecDeque<Chunk>,
    done: bool,
}

impl Script {
    fn new(input: Box<dyn BufRead>) -> Script {
        Script { input, buf: String::new(), line: 1, ready: Default::default(), done: false }
    }

    /// Reads the next block and cuts the complete statements off it.
    fn fill(&mut self) -> io::Result<()> {
        let start = self.buf.len();
        while self.buf.len() - start < BLOCK {
            if self.input.read_line(&mut self.buf)? == 0 {
                self.done = true;
                break;
            }
        }
        let (chunks, rest) = split_complete(&self.buf, self.line);
        let cut = self.buf.len() - rest.len();
        self.line += self.buf[..cut].bytes().filter(|&b| b == b'\n').count();
        self.ready.extend(chunks);
        self.buf.drain(..cut);
        if self.done && has_statements(&self.buf) {
            // The last statement may lack its `;`, as SQLite's shell allows.
            let rest = std::mem::take(&mut self.buf);
            let (mut last, _) = split_complete(&format!("{rest};"), self.line);
            match last.pop() {
                Some(c) if last.is_empty() => self.ready.push_back(Chunk { sql: rest, line: c.line }),
                _ => self.ready.push_back(Chunk { sql: rest, line: self.line }),
            }
        }
        Ok(())
    }
}

impl Iterator for Script {
    type Item = io::Result<Chunk>;

    fn next(&mut self) -> Option<io::Result<Chunk>> {
        loop {
            if let Some(c) = self.ready.pop_front() {
                return Some(Ok(c));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fill() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}
