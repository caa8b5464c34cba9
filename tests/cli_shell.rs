//! `litebroker shell` driven through a real terminal (the kit's [`Terminal`]: tmux
//! in a detached 120x40 session, `send-keys` types, `paste-buffer -p` pastes,
//! `capture-pane` reads the screen). Each test has its own tmux server (a socket in
//! its temp folder), its own broker and database.
//!
//! Unix only: tmux does not run on Windows, and under Wine there is no terminal.
//! The piped-script mode, which works everywhere, is tested in `cli_output`.
#![cfg(unix)]

use std::path::Path;
use std::time::{Duration, Instant};

use litebroker_tests::*;
use serde_json::Value as Json;

/// Time for the shell to answer a key press (debug build, loaded machine).
const ANSWER: Duration = Duration::from_secs(20);

/// The shell in a terminal of its own (the kit's [`Terminal`]), with the waits a
/// line editor needs.
struct Tmux {
    term: Terminal,
}

impl Tmux {
    /// Runs `litebroker --db <db> <args>` in a new 120x40 terminal, with its
    /// history in `history`; when it exits, the terminal shows `[exit N]`.
    fn start(dir: &Path, db: &Path, args: &[&str], history: &Path) -> Tmux {
        let mut all = vec!["--db", db.to_str().expect("a UTF-8 path")];
        all.extend_from_slice(args);
        let term = Terminal::start_with_env(
            dir,
            &bin("litebroker"),
            &all,
            (120, 40),
            &[("LITEBROKER_HISTORY", history)],
        );
        Tmux { term }
    }

    /// Types `text` literally and waits for its echo on the last line.
    ///
    /// Nothing is typed ahead: the line editor reads the terminal in chunks, and
    /// what a chunk holds after the Enter that ends an entry is dropped with it. So
    /// keys are sent once the prompt they are for shows ([`Tmux::wait_prompt`]), and
    /// Enter once the entry's text is seen, which also makes the prompt that
    /// follows tell apart from the one before.
    #[track_caller]
    fn type_text(&self, text: &str) {
        self.term.text(text);
        self.wait_last_line(&format!("the echo of {text:?}"), |l| l.ends_with(text.trim_end()));
    }

    /// Types a line and presses Enter.
    #[track_caller]
    fn type_line(&self, text: &str) {
        self.type_text(text);
        self.keys(&["Enter"]);
    }

    /// Presses keys by tmux name: `Enter`, `C-c`, `C-d`, `Up`.
    fn keys(&self, keys: &[&str]) {
        self.term.keys(keys);
    }

    /// Pastes `text` as a terminal does: bracketed, when the program asked for it.
    fn paste(&self, text: &str) {
        self.term.paste(text);
    }

    /// The whole screen and its scrollback, wrapped lines joined.
    fn screen(&self) -> String {
        self.term.scrollback()
    }

    /// The last line with text: the prompt and what is typed after it.
    fn last_line(&self) -> String {
        self.screen().lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("").trim_end().to_owned()
    }

    /// Polls the screen and its scrollback until `ok` holds; fails showing it
    /// after [`ANSWER`].
    #[track_caller]
    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let mut screen = String::new();
        if wait_until(ANSWER, || {
            screen = self.screen();
            ok(&screen)
        }) {
            return screen;
        }
        panic!("the screen never showed {what}:\n{screen}");
    }

    /// Waits for the prompt on the last line, outside a transaction. Keys are
    /// sent only once it shows: the line editor switches the terminal to raw mode
    /// for each entry, and what is typed before may be lost.
    #[track_caller]
    fn wait_prompt(&self) {
        self.wait_last_line("an empty prompt", |l| l == "litebroker>");
    }

    /// Waits for the prompt of a write session (`litebroker [txn 3s, lease 27s left]>`),
    /// nothing typed after it.
    #[track_caller]
    fn wait_txn_prompt(&self) {
        self.wait_last_line("an empty session prompt", |l| {
            l.starts_with("litebroker [txn ") && l.ends_with("]>")
        });
    }

    #[track_caller]
    fn wait_last_line(&self, what: &str, ok: impl Fn(&str) -> bool) {
        let mut last = String::new();
        if !wait_until(ANSWER, || {
            last = self.last_line();
            ok(&last)
        }) {
            panic!("no {what}; the last line is {last:?}; the screen:\n{}", self.screen());
        }
    }
}

fn count(db: &Path, table: &str) -> i64 {
    query_i64(db, &format!("SELECT count(*) FROM {table}"))
}

fn writer_holder(db: &Path) -> Json {
    let o = cli(db, &["--json", "status"]);
    assert_exit(&o, 0);
    json_out(&o)["writer_holder"].clone()
}

#[test]
fn on_a_terminal_multi_line_statements_dot_commands_ctrl_c_history_and_ctrl_d_work() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE skus (sku TEXT PRIMARY KEY, qty INT)"]), 0);
    assert_exit(&cli(&db, &["exec", "INSERT INTO skus VALUES ('A1', 5), ('B2', 7), ('C3', 0)"]), 0);
    let history = t.path().join("state").join("history");
    let tm = Tmux::start(t.path(), &db, &["shell"], &history);
    tm.wait_prompt();

    // One statement over three lines: Enter runs it once SQLite says it is complete.
    tm.type_line("SELECT sku,");
    tm.type_line("  qty FROM skus");
    tm.type_line("WHERE qty > 1 ORDER BY sku;");
    let s = tm.wait_for("the two rows", |s| s.contains("(2 rows)"));
    assert!(s.contains("sku  qty\n---  ---\nA1   5\nB2   7\n(2 rows)"), "{s}");
    tm.wait_prompt();

    tm.type_line(".tables");
    // Every table of the file, the broker's own request-id table included.
    tm.wait_for("the table list", |s| {
        s.split_once(".tables\n")
            .is_some_and(|(_, after)| after.lines().next().unwrap_or("").contains("skus"))
    });
    tm.wait_prompt();
    // A 200-character cell is cut with `…` to fit the 120 columns, never wrapped
    // (the screen is read with wrapped lines joined).
    tm.type_line(
        "SELECT sku, replace(hex(zeroblob(100)), '0', 'x') AS wide, qty FROM skus WHERE sku = 'A1';",
    );
    let s =
        tm.wait_for("the wide row", |s| s.split_once("AS wide").is_some_and(|(_, r)| r.contains("(1 row)")));
    let row = s.lines().rev().find(|l| l.starts_with("A1 ")).expect("the wide row");
    assert!(row.ends_with("…  5") && row.chars().count() <= 120, "not fitted to 120 columns: {row:?}");
    tm.wait_prompt();

    tm.type_line(".mode csv");
    tm.wait_prompt();
    tm.type_line("SELECT sku, qty FROM skus ORDER BY sku;");
    tm.wait_for("CSV rows", |s| s.contains("sku,qty\nA1,5\nB2,7\nC3,0"));
    tm.wait_prompt();

    // Ctrl-C drops a half-typed line: nothing of it runs, and it does not stick
    // to the next statement.
    tm.type_text("INSERT INTO skus VALUES ('HALF', 1");
    tm.wait_for("the half-typed line", |s| s.contains("('HALF', 1"));
    tm.keys(&["C-c"]);
    tm.wait_prompt();
    tm.type_line("SELECT count(*) AS n FROM skus;");
    tm.wait_for("the count", |s| s.contains("SELECT count(*) AS n FROM skus;\nn\n3"));
    tm.wait_prompt();
    assert!(!tm.screen().contains("Error"), "{}", tm.screen());
    assert_eq!(count(&db, "skus"), 3);

    // History: Up recalls the last entry; Enter runs it again.
    tm.keys(&["Up"]);
    tm.wait_for("the recalled statement", |_| {
        tm.last_line() == "litebroker> SELECT count(*) AS n FROM skus;"
    });
    tm.keys(&["Enter"]);
    tm.wait_for("the count a second time", |s| s.matches("\nn\n3\n").count() == 2);

    // Ctrl-D leaves with exit 0.
    tm.wait_prompt();
    tm.keys(&["C-d"]);
    tm.wait_for("the exit status", |s| s.contains("[exit 0]"));
    drop(tm);

    // The history is a file in its own folder, readable by this user only, with
    // the multi-line statement and without the line dropped by Ctrl-C.
    let kept = std::fs::read_to_string(&history).expect("the history file");
    assert!(kept.contains("SELECT sku,\\n  qty FROM skus\\nWHERE qty > 1 ORDER BY sku;"), "{kept}");
    assert!(kept.contains(".mode csv") && !kept.contains("HALF"), "{kept}");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&history).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "history mode {mode:o}");
    let dir_mode = std::fs::metadata(history.parent().unwrap()).unwrap().permissions().mode() & 0o777;
    assert_eq!(dir_mode, 0o700, "history folder mode {dir_mode:o}");

    // A new shell (a bare `litebroker` on a terminal is one) recalls the last session's entries.
    let tm = Tmux::start(t.path(), &db, &[], &history);
    tm.wait_for("the banner", |s| s.contains("shell on") && s.contains(".help lists the commands"));
    tm.wait_prompt();
    tm.keys(&["Up"]);
    tm.wait_for("the previous session's last entry", |_| {
        tm.last_line() == "litebroker> SELECT count(*) AS n FROM skus;"
    });
    tm.keys(&["C-c"]);
    tm.wait_prompt();
    tm.type_line(".quit");
    tm.wait_for("the exit status", |s| s.contains("[exit 0]"));
}

#[test]
fn a_pasted_transaction_holds_the_writer_until_commit_and_another_process_sees_all_of_it_or_nothing() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE items (n INTEGER PRIMARY KEY, v TEXT)"]), 0);
    let tm = Tmux::start(t.path(), &db, &["shell"], &t.path().join("history"));
    tm.wait_prompt();

    // Pasted without its COMMIT: the session is open, the prompt says so.
    tm.paste("BEGIN;\nINSERT INTO items (v) VALUES ('a');\nINSERT INTO items (v) VALUES ('b');\n");
    tm.keys(&["Enter"]);
    tm.wait_txn_prompt();
    // The session began before its prompt showed.
    let began = Instant::now();
    // Another process sees nothing of it; the broker names the shell as the writer's holder.
    let o = cli(&db, &["--json", "query", "SELECT count(*) FROM items"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("\"rows\":[[0]]"), "{}", stdout(&o));
    let holder = writer_holder(&db);
    assert!(holder.as_str().is_some_and(|h| h.contains("litebroker-cli")), "writer holder: {holder}");
    // The prompt counts the seconds the writer has been held and shows the lease
    // the broker granted (30 s by default) running down: a second later, a new
    // prompt (Enter on an empty line) shows both moved.
    let first = tm.last_line();
    assert!(first.contains(", lease ") && first.ends_with("s left]>"), "{first}");
    assert!(wait_until(ANSWER, || began.elapsed() > Duration::from_millis(1100)));
    tm.keys(&["Enter"]);
    tm.wait_for("a held time of a second or more and less lease left", |_| {
        let last = tm.last_line();
        last.starts_with("litebroker [txn ")
            && last.ends_with("s left]>")
            && !last.starts_with("litebroker [txn 0s")
            && !last.contains("lease 30s left")
    });

    tm.type_line("COMMIT;");
    tm.wait_prompt();
    assert_eq!(count(&db, "items"), 2);
    assert_eq!(writer_holder(&db), Json::Null, "the writer is released at COMMIT");

    // A whole pasted transaction of 200 inserts, while this process reads in a loop:
    // it sees the rows before it or all of them, never a part.
    let (first_read, first_read_done) = std::sync::mpsc::channel();
    let reader = {
        let db = db.clone();
        std::thread::spawn(move || {
            let c = open_ro(&db);
            let mut seen = std::collections::BTreeSet::new();
            let mut polls = 0u64;
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                let n: i64 = c.query_row("SELECT count(*) FROM items", [], |r| r.get(0)).unwrap();
                seen.insert(n);
                if polls == 0 {
                    let _ = first_read.send(());
                }
                polls += 1;
                if n == 202 {
                    break;
                }
            }
            (seen, polls)
        })
    };
    // The paste starts once the reader has seen the rows before it.
    first_read_done.recv_timeout(ANSWER).expect("the reader's first read");
    let mut script = String::from("BEGIN;\n");
    for i in 0..200 {
        script.push_str(&format!("INSERT INTO items (v) VALUES ('p{i}');\n"));
    }
    script.push_str("COMMIT;\n");
    tm.paste(&script);
    tm.keys(&["Enter"]);
    let (seen, polls) = reader.join().unwrap();
    assert_eq!(seen, [2, 202].into(), "a reader saw part of the transaction ({polls} reads)");
    tm.wait_prompt();
    assert!(!tm.screen().contains("Error"), "{}", tm.screen());

    // Ctrl-D inside a transaction rolls it back and still exits 0.
    tm.type_line("BEGIN;");
    tm.wait_txn_prompt();
    tm.type_line("DELETE FROM items;");
    tm.wait_for("the delete's counters", |s| s.contains("changes: 202"));
    tm.wait_txn_prompt();
    tm.keys(&["C-d"]);
    let s = tm.wait_for("the exit status", |s| s.contains("[exit 0]"));
    assert!(s.contains("was rolled back: nothing of it was committed"), "{s}");
    assert_eq!(count(&db, "items"), 202);
    assert_eq!(writer_holder(&db), Json::Null);
}

#[test]
fn ctrl_c_while_a_read_runs_stops_that_read_and_the_shell_goes_on() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE skus (sku TEXT PRIMARY KEY, qty INT)"]), 0);
    let history = t.path().join("history");
    let tm = Tmux::start(t.path(), &db, &["shell"], &history);
    tm.wait_prompt();

    // A read that never ends on its own.
    tm.type_line("WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT count(*) FROM c;");
    // The key may reach the shell before the query is under way (then it is
    // ignored): press again until the query reports its interruption.
    let stopped = wait_until(ANSWER, || {
        tm.keys(&["C-c"]);
        wait_until(Duration::from_secs(2), || tm.screen().contains("interrupted"))
    });
    assert!(stopped, "the read was not interrupted:\n{}", tm.screen());
    tm.wait_prompt();
    assert!(!tm.screen().contains("[exit"), "the shell ended:\n{}", tm.screen());

    // The shell, its reader and its broker connection still work.
    tm.type_line("INSERT INTO skus VALUES ('A1', 5);");
    tm.wait_prompt();
    tm.type_line("SELECT count(*) AS n FROM skus;");
    tm.wait_for("the count", |s| s.contains("SELECT count(*) AS n FROM skus;\nn\n-\n1\n(1 row)"));
    tm.wait_prompt();
    tm.keys(&["C-d"]);
    tm.wait_for("the exit status", |s| s.contains("[exit 0]"));
}
