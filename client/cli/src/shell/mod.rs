//! `litebroker shell`: statements typed at a terminal or piped in, run one at
//! a time. SQLite tells what each statement is (see `statements`): a read runs
//! on this process's read-only connection, a write goes through the broker, and
//! `BEGIN` … `COMMIT` is one write session at the broker, which holds the writer
//! only from the BEGIN to the COMMIT or ROLLBACK.

mod dot;
mod editor;
mod interrupt;

use std::fs::File;
use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use litebroker_client::{Client, ClientError, ErrorKind, ExecResult, Reader, Value, WriteSession};
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Config, Editor};

use self::interrupt::CtrlC;
use crate::render::{self, Format, Style};
use crate::statements::{has_statements, is_complete, split_complete, Classifier, Kind};
use crate::{client_failure, connect_for_write, fail, output_width, Cli, Failure};

/// Runs the shell: interactive on a terminal, else the script on stdin.
pub(crate) fn run(cli: &Cli) -> Result<(), Failure> {
    let interactive = std::io::stdin().is_terminal();
    let mut sh = Shell::new(cli, interactive);
    if interactive {
        sh.interactive()
    } else {
        let stdin = std::io::stdin().lock();
        let r = sh.feed(stdin, "stdin");
        sh.finish_script(r)
    }
}

/// The local side: the reader that runs reads, and the connection SQLite is
/// asked through about each statement. Opened once the database exists.
struct Local {
    reader: Reader,
    classifier: Classifier,
}

/// The write session the shell is in, if any.
enum Txn {
    None,
    /// Between BEGIN and COMMIT/ROLLBACK: every statement runs in the session.
    Open {
        /// Boxed: a client is large, and `Txn` is mostly `None`.
        session: Box<WriteSession<Client>>,
        since: Instant,
        /// Where the BEGIN was (`stdin line 3`, `the terminal`), for messages.
        begun: String,
    },
    /// The broker ended the session (its lease ran out, the connection broke):
    /// statements are refused until COMMIT or ROLLBACK closes the block, so
    /// none of them runs outside the transaction it was typed for.
    Aborted(String),
}

/// Where results go.
enum Out {
    Stdout,
    File(BufWriter<File>, PathBuf),
}

/// What a line of input asked the loop to do next.
#[derive(Debug, PartialEq, Eq)]
enum Flow {
    Continue,
    Quit,
}

/// An error with the place it happened (`stdin line 7: …`); the exit code is
/// the error's own.
struct Located {
    failure: Failure,
}

/// The shell's state.
pub(crate) struct Shell<'a> {
    cli: &'a Cli,
    interactive: bool,
    local: Option<Local>,
    client: Option<Client>,
    txn: Txn,
    style: Style,
    timer: bool,
    out: Out,
    /// `.once FILE`: the file takes the next statement's results only.
    once: bool,
    /// Ctrl-C while a statement runs (interactive only).
    ctrl_c: Option<CtrlC>,
}

impl<'a> Shell<'a> {
    fn new(cli: &'a Cli, interactive: bool) -> Shell<'a> {
        let style = Style {
            format: cli.format.unwrap_or(Format::Table),
            headers: true,
            null: cli.null.clone(),
            width: None,
        };
        Shell {
            cli,
            interactive,
            local: None,
            client: None,
            txn: Txn::None,
            style,
            timer: false,
            out: Out::Stdout,
            once: false,
            ctrl_c: None,
        }
    }

    /// The prompt; in a write session it shows how long the writer has been held
    /// and how much of the session's lease is left (when the broker says).
    fn prompt(&self) -> String {
        match &self.txn {
            Txn::None => "litebroker> ".to_owned(),
            Txn::Open { since, session, .. } => match session.lease_left() {
                Some(left) => {
                    format!(
                        "litebroker [txn {}s, lease {}s left]> ",
                        since.elapsed().as_secs(),
                        left.as_secs()
                    )
                }
                None => format!("litebroker [txn {}s]> ", since.elapsed().as_secs()),
            },
            Txn::Aborted(_) => "litebroker [txn aborted]> ".to_owned(),
        }
    }

    fn interactive(&mut self) -> Result<(), Failure> {
        self.ctrl_c = CtrlC::install();
        let config = Config::builder()
            .max_history_size(1000)
            .and_then(|b| b.history_ignore_dups(true))
            .map_err(|e| fail(1, "error", format!("line editor: {e}")))?
            .history_ignore_space(true)
            .auto_add_history(false)
            .build();
        let mut ed: Editor<editor::ShellHelper, FileHistory> =
            Editor::with_config(config).map_err(|e| fail(1, "error", format!("line editor: {e}")))?;
        ed.set_helper(Some(editor::ShellHelper));
        let history = editor::history_path();
        if let Some(h) = &history {
            // A missing file is a first start; other failures only cost the history.
            if h.exists() {
                if let Err(e) = ed.load_history(h) {
                    eprintln!("litebroker: cannot read the history {}: {e}", h.display());
                }
            }
        }
        println!(
            "litebroker {} shell on {}: statements end with ';', .help lists the commands, Ctrl-D leaves.",
            env!("CARGO_PKG_VERSION"),
            self.cli.db.display()
        );
        loop {
            match ed.readline(&self.prompt()) {
                Ok(entry) => {
                    if entry.trim().is_empty() {
                        continue;
                    }
                    if let Some(h) = &history {
                        self.remember(&mut ed, h, entry.trim_end());
                    }
                    match self.entry(&entry) {
                        Ok(Flow::Quit) => break,
                        Ok(Flow::Continue) => {}
                        Err(e) => eprintln!("Error: {}", e.failure.message),
                    }
                }
                // Ctrl-C: the entry is dropped, the shell goes on.
                Err(ReadlineError::Interrupted) => {}
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(fail(1, "error", format!("reading the terminal: {e}"))),
            }
        }
        self.leave();
        Ok(())
    }

    /// Adds an entry to the history and appends it to the file at once, so a
    /// shell that is killed keeps what was typed before.
    fn remember(
        &self,
        ed: &mut Editor<editor::ShellHelper, FileHistory>,
        path: &std::path::Path,
        entry: &str,
    ) {
        if matches!(ed.add_history_entry(entry), Ok(true)) {
            let saved = editor::prepare_history_dir(path)
                .map_err(|e| e.to_string())
                .and_then(|()| ed.append_history(path).map_err(|e| e.to_string()));
            if let Err(e) = saved {
                eprintln!("litebroker: cannot write the history {}: {e}", path.display());
            }
        }
    }

    /// Leaving the shell: an open session is rolled back, and said so.
    fn leave(&mut self) {
        if let Txn::Open { session, begun, .. } = std::mem::replace(&mut self.txn, Txn::None) {
            let _ = session.rollback();
            eprintln!(
                "litebroker: the transaction begun at {begun} was rolled back: nothing of it was committed"
            );
        }
        self.flush_out();
    }

    /// Script mode's end: the first error, or a transaction left open, is the
    /// exit status.
    fn finish_script(&mut self, r: Result<Flow, Located>) -> Result<(), Failure> {
        let open = match std::mem::replace(&mut self.txn, Txn::None) {
            Txn::Open { session, begun, .. } => {
                let _ = session.rollback();
                Some(begun)
            }
            _ => None,
        };
        self.flush_out();
        match (r, open) {
            (Err(mut e), Some(begun)) => {
                e.failure.message.push_str(&format!(
                    "\nThe transaction begun at {begun} was rolled back; the statements before it stay applied."
                ));
                Err(e.failure)
            }
            (Err(mut e), None) => {
                e.failure.message.push_str("\nThe statements before it stay applied.");
                Err(e.failure)
            }
            (Ok(_), Some(begun)) => Err(fail(
                1,
                "error",
                format!(
                    "the input ended inside the transaction begun at {begun}: it was rolled back, nothing \
                     of it was committed (end it with COMMIT;)"
                ),
            )),
            (Ok(_), None) => Ok(()),
        }
    }

    /// Reads `input` line by line, running each statement as soon as it is
    /// complete and each dot-command line; stops at the first error, naming
    /// `source` and the line.
    fn feed(&mut self, input: impl BufRead, source: &str) -> Result<Flow, Located> {
        let mut pending = String::new();
        let mut pending_line = 1;
        let mut line_no = 0;
        for line in input.lines() {
            line_no += 1;
            let line = line.map_err(|e| Located {
                failure: fail(1, "error", format!("{source} line {line_no}: cannot read: {e}")),
            })?;
            if !has_statements(&pending) && line.trim_start().starts_with('.') {
                pending.clear();
                let flow = self.dot(line.trim()).map_err(|f| at(f, source, line_no))?;
                if flow == Flow::Quit {
                    return Ok(Flow::Quit);
                }
                continue;
            }
            if pending.is_empty() {
                pending_line = line_no;
            }
            pending.push_str(&line);
            pending.push('\n');
            if is_complete(&pending) {
                let text = std::mem::take(&mut pending);
                let (chunks, rest) = split_complete(&text, pending_line);
                for c in chunks {
                    self.statement(&c.sql, &format!("{source} line {}", c.line))
                        .map_err(|f| at(f, source, c.line))?;
                }
                if has_statements(rest) {
                    pending = rest.to_owned();
                    pending_line = line_no;
                }
            }
        }
        if has_statements(&pending) {
            // The last statement lacks its ';': SQLite runs it as it is (or says
            // what is incomplete).
            self.statement(&pending, &format!("{source} line {pending_line}"))
                .map_err(|f| at(f, source, pending_line))?;
        }
        Ok(Flow::Continue)
    }

    /// Runs one interactive entry (one or several statements, or a dot-command);
    /// the statements after a failing one are not run.
    fn entry(&mut self, text: &str) -> Result<Flow, Located> {
        if text.trim_start().starts_with('.') {
            return self.dot(text.trim()).map_err(|failure| Located { failure });
        }
        let (mut chunks, rest) = split_complete(text, 1);
        if has_statements(rest) {
            chunks.push(crate::statements::Chunk { sql: rest.to_owned(), line: 1 });
        }
        let total = chunks.len();
        for (i, c) in chunks.iter().enumerate() {
            if let Err(mut failure) = self.statement(&c.sql, "the terminal") {
                let skipped = total - i - 1;
                if skipped > 0 {
                    failure.message.push_str(&format!(
                        "\n({skipped} statement{} after it not run)",
                        if skipped == 1 { " was" } else { "s were" }
                    ));
                }
                return Err(Located { failure });
            }
        }
        self.flush_out();
        Ok(Flow::Continue)
    }

    /// The local reader and classifier, opened on first use once the database
    /// exists; `None` while it does not (the broker creates it).
    fn local(&mut self) -> Result<Option<&Local>, Failure> {
        if self.local.is_none() {
            let reader = match Reader::open(&self.cli.db) {
                Ok(r) => r,
                Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(client_failure(&e, Some(self.cli))),
            };
            let classifier = Classifier::open(reader.path())
                .map_err(|e| fail(1, "error", format!("cannot open {}: {e}", reader.path().display())))?;
            self.local = Some(Local { reader, classifier });
        }
        Ok(self.local.as_ref())
    }

    /// The reader, for dot-commands; an error when the database does not exist.
    fn reader(&mut self) -> Result<&Reader, Failure> {
        let db = self.cli.db.display().to_string();
        match self.local()? {
            Some(l) => Ok(&l.reader),
            None => Err(fail(
                1,
                "error",
                format!(
                    "database {db} does not exist yet; start the broker to create it: litebrokerd --db {db}"
                ),
            )),
        }
    }

    /// The broker connection for one-shot writes, made (or remade, after it
    /// broke) when needed.
    fn client(&mut self) -> Result<&mut Client, Failure> {
        if self.client.as_ref().is_none_or(Client::is_broken) {
            self.client = Some(connect_for_write(self.cli)?);
        }
        Ok(self.client.as_mut().expect("just connected"))
    }

    /// Runs one statement where it belongs; after it, output set by `.once`
    /// goes back to stdout.
    fn statement(&mut self, sql: &str, place: &str) -> Result<(), Failure> {
        let r = self.run_statement(sql, place);
        if std::mem::take(&mut self.once) {
            self.flush_out();
            self.out = Out::Stdout;
        }
        r
    }

    fn run_statement(&mut self, sql: &str, place: &str) -> Result<(), Failure> {
        let started = Instant::now();
        let ctrl_c = self.ctrl_c.clone();
        let in_session = matches!(self.txn, Txn::Open { .. });
        let kind = match self.local()? {
            Some(local) => match local.classifier.prepare(sql) {
                Ok(p) => Some(p.kind),
                // In a session the statement may use what the session created
                // and the committed schema lacks: the broker decides.
                Err(_) if in_session => None,
                // Outside one, the broker reads the same committed schema:
                // SQLite's answer here is the answer.
                Err(e) => return Err(fail(1, "sql", e.to_string())),
            },
            // No database yet: only the broker (which creates it) can run anything.
            None => None,
        };
        let ran = match (kind, &mut self.txn) {
            (Some(Kind::Begin), Txn::None) => {
                let timeout = Duration::from_secs_f64(self.cli.timeout);
                let client = match self.client.take() {
                    Some(c) if !c.is_broken() => c,
                    _ => connect_for_write(self.cli)?,
                };
                let session =
                    as_write(&ctrl_c, || client.into_session(timeout)).map_err(|e| self.failure(&e))?;
                if self.interactive {
                    eprintln!(
                        "write session open: the broker's writer is held for this shell until COMMIT or \
                         ROLLBACK (waited {} ms)",
                        session.waited().as_millis()
                    );
                }
                self.txn =
                    Txn::Open { session: Box::new(session), since: Instant::now(), begun: place.to_owned() };
                "BEGIN: write session at the broker"
            }
            (Some(Kind::Begin), Txn::Open { begun, .. }) => {
                return Err(fail(
                    1,
                    "sql",
                    format!("cannot start a transaction within a transaction (the one begun at {begun})"),
                ));
            }
            (Some(Kind::Commit), Txn::Open { .. }) => {
                let Txn::Open { session, .. } = std::mem::replace(&mut self.txn, Txn::None) else {
                    unreachable!()
                };
                as_write(&ctrl_c, || session.commit()).map_err(|e| self.failure(&e))?;
                "COMMIT: write session committed"
            }
            (Some(Kind::Rollback), Txn::Open { .. }) => {
                let Txn::Open { session, .. } = std::mem::replace(&mut self.txn, Txn::None) else {
                    unreachable!()
                };
                as_write(&ctrl_c, || session.rollback()).map_err(|e| self.failure(&e))?;
                "ROLLBACK: write session rolled back"
            }
            (Some(Kind::Commit | Kind::Rollback), Txn::Aborted(why)) => {
                let why = why.clone();
                self.txn = Txn::None;
                if kind == Some(Kind::Rollback) {
                    "ROLLBACK: the session had already been rolled back"
                } else {
                    return Err(fail(1, "lease_expired", format!("nothing was committed: {why}")));
                }
            }
            (Some(Kind::Commit), Txn::None) => {
                return Err(fail(1, "sql", "cannot commit - no transaction is active"));
            }
            (Some(Kind::Rollback), Txn::None) => {
                return Err(fail(1, "sql", "cannot rollback - no transaction is active"));
            }
            (_, Txn::Aborted(why)) => {
                return Err(fail(
                    1,
                    "lease_expired",
                    format!(
                        "{why}\nStatements are refused until COMMIT or ROLLBACK ends the transaction block."
                    ),
                ));
            }
            (_, Txn::Open { session, .. }) => {
                let r = as_write(&ctrl_c, || session.execute(sql, &[]));
                match r {
                    Ok(r) => {
                        self.show_exec(&r)?;
                        "in the write session at the broker"
                    }
                    Err(e) => {
                        let f = self.failure(&e);
                        let ended =
                            matches!(e.kind(), Some(ErrorKind::LeaseExpired | ErrorKind::ShuttingDown))
                                || matches!(e, ClientError::ConnectionLost { .. });
                        if ended {
                            // The broker rolled the session back; dropping it sends nothing.
                            self.txn = Txn::Aborted(f.message.clone());
                        }
                        return Err(f);
                    }
                }
            }
            (Some(Kind::Read), Txn::None) => {
                let rows = {
                    let local = self.local.as_ref().expect("classified on the local connection");
                    let query = || local.reader.query(sql, &[]);
                    match &ctrl_c {
                        Some(c) => c.read(local.reader.connection().get_interrupt_handle(), query),
                        None => query(),
                    }
                };
                let rows = rows.map_err(|e| self.failure(&e))?;
                if !rows.columns.is_empty() {
                    self.show_rows(&rows.columns, &rows.rows)?;
                }
                "read on the local connection"
            }
            (Some(Kind::Write) | None, Txn::None) => {
                let client = self.client()?;
                let r = as_write(&ctrl_c, || client.execute(sql, &[]));
                let r = r.map_err(|e| self.failure(&e))?;
                self.show_exec(&r)?;
                "write through the broker"
            }
        };
        if self.timer {
            eprintln!("Run Time: {:.3} ms ({ran})", started.elapsed().as_secs_f64() * 1000.0);
        }
        Ok(())
    }

    fn failure(&self, e: &ClientError) -> Failure {
        client_failure(e, Some(self.cli))
    }

    /// The style for the current output: fitted to the terminal when results go to one.
    fn current_style(&self) -> Style {
        let width = match self.out {
            Out::Stdout => output_width(self.cli),
            Out::File(..) => None,
        };
        Style { width, ..self.style.clone() }
    }

    /// Writes to the current output.
    fn write_out(&mut self, f: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> Result<(), Failure> {
        let r = match &mut self.out {
            Out::Stdout => {
                let mut o = std::io::stdout().lock();
                f(&mut o).and_then(|()| o.flush())
            }
            Out::File(w, _) => f(w),
        };
        r.map_err(|e| fail(1, "error", format!("cannot write to {}: {e}", self.out_name())))
    }

    fn show_rows(&mut self, columns: &[String], rows: &[Vec<Value>]) -> Result<(), Failure> {
        let style = self.current_style();
        self.write_out(|w| render::write_rows(w, columns, rows, &style))
    }

    /// What a write did: its rows, and on a terminal its counters.
    fn show_exec(&mut self, r: &ExecResult) -> Result<(), Failure> {
        if !r.columns.is_empty() {
            self.show_rows(&r.columns, &r.rows)?;
        }
        if self.interactive && (r.columns.is_empty() || r.changes > 0) {
            eprintln!("changes: {}, last insert rowid: {}", r.changes, r.last_insert_rowid);
        }
        Ok(())
    }

    fn out_name(&self) -> String {
        match &self.out {
            Out::Stdout => "stdout".to_owned(),
            Out::File(_, p) => p.display().to_string(),
        }
    }

    fn flush_out(&mut self) {
        let _ = self.write_out(|w| w.flush());
    }
}

/// `failure` located at `line` of `source`.
/// Runs `f`, a call to the broker, telling a Ctrl-C meanwhile why it waits.
fn as_write<T>(ctrl_c: &Option<CtrlC>, f: impl FnOnce() -> T) -> T {
    match ctrl_c {
        Some(c) => c.write(f),
        None => f(),
    }
}

fn at(mut failure: Failure, source: &str, line: usize) -> Located {
    failure.message = format!("{source} line {line}: {}", failure.message);
    Located { failure }
}
