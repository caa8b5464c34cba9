//! What `litebroker` prints and takes, as a user of the `sqlite3` shell would try
//! it: parameters that look like flags or huge numbers, named parameters, every
//! `--format` on one result (golden files in `tests/golden/formats/`), a piped
//! script that stops at its first error, the dot-commands in a script (`.import`,
//! `.read`, `.output`, `.headers`, `.nullvalue`, `.timer`, `.status`), completions
//! for the four shells, and the examples at the end of each `--help`.
//!
//! `LITEBROKER_BLESS=1` rewrites the golden files from the output of the binary
//! (then review the diff).

use std::path::{Path, PathBuf};

use litebroker_tests::*;
use serde_json::{json, Value as Json};
use unicode_width::UnicodeWidthStr;

/// `quote(v), typeof(v)` of the rows of `t`, in insertion order.
fn typed_rows(db: &Path) -> Vec<(String, String)> {
    let c = open_ro(db);
    let mut st = c.prepare("SELECT quote(v), typeof(v) FROM t ORDER BY rowid").unwrap();
    st.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).unwrap().map(Result::unwrap).collect()
}

#[test]
fn parameters_are_values_even_when_they_look_like_flags_and_named_ones_go_where_sqlite_numbers_them() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    assert_exit(&cli(&db, &["exec", "CREATE TABLE t (k, v)"]), 0);
    // The issue's own example: a negative number right after the SQL.
    let o = cli(&db, &["exec", "INSERT INTO t VALUES (?, ?)", "B2", "-3"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "changes: 1, last insert rowid: 1\n");
    for p in ["-9223372036854775808", "-1.5", "-", "\"--x\"", "--x"] {
        assert_exit(&cli(&db, &["exec", "INSERT INTO t VALUES ('pos', ?)", p]), 0);
    }
    // Named: `:name=`, `@name=`, `$name=` (value after the first '='), mixed with
    // positional values, which fill the parameters not given by name in order.
    let o = cli(
        &db,
        &[
            "exec",
            "INSERT INTO t VALUES (:k, ?); INSERT INTO t VALUES (@k, $v)",
            "$v=-7",
            ":k=named",
            "=x",
            "@k=a=b",
        ],
    );
    assert_exit(&o, 0);
    assert_exit(&cli(&db, &["exec", "INSERT INTO t VALUES (:k, :v)", ":v=", ":k=empty"]), 0);
    let text = |s: &str| (format!("'{s}'"), "text".to_owned());
    assert_eq!(
        typed_rows(&db),
        vec![
            ("-3".to_owned(), "integer".to_owned()),
            ("-9223372036854775808".to_owned(), "integer".to_owned()),
            ("-1.5".to_owned(), "real".to_owned()),
            text("-"),
            text("--x"),
            text("--x"),
            text("=x"),
            ("-7".to_owned(), "integer".to_owned()),
            text(""),
        ]
    );
    // Reads take them the same way, on the local connection.
    let o = cli(&db, &["--json", "query", "SELECT k FROM t WHERE v = $v OR k = @k", "@k=a=b", "$v=-3"]);
    assert_exit(&o, 0);
    assert_eq!(json_out(&o)["rows"], json!([["B2"], ["a=b"]]));
    // A name the SQL does not have is a usage error that says how to pass such text.
    let o = cli(&db, &["--json", "exec", "INSERT INTO t VALUES (?, 1)", ":nope=1"]);
    let msg = assert_json_error(&o, 2, "usage");
    assert!(msg.contains("no parameter named :nope") && msg.contains(r#"'":nope=1"'"#), "{msg}");
    let o = cli(&db, &["exec", "INSERT INTO t VALUES (?, 1)", r#"":nope=1""#]);
    assert_exit(&o, 0);
    // Too few values for the parameters left over: the SQL error code, as the broker's count check.
    let o = cli(&db, &["exec", "INSERT INTO t VALUES (:a, :b)", ":a=1"]);
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("not given by name"), "{}", stderr(&o));
}

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("golden").join("formats")
}

#[track_caller]
fn assert_golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("LITEBROKER_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (LITEBROKER_BLESS=1 writes it)", path.display()));
    // Git may check text files out with CRLF on Windows; the CLI writes LF (CRLF in csv).
    let expected = if name.ends_with(".csv") { expected } else { expected.replace("\r\n", "\n") };
    assert_eq!(actual, expected, "{name} differs from {}", path.display());
}

#[test]
fn every_format_prints_nulls_blobs_unicode_and_long_cells_as_its_golden_file() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    let long: String = "0123456789".repeat(20);
    assert_exit(
        &cli(&db, &["exec", "CREATE TABLE g (id INTEGER, name TEXT, note TEXT, data BLOB, price REAL)"]),
        0,
    );
    assert_exit(
        &cli(
            &db,
            &[
                "exec",
                "INSERT INTO g VALUES (1, ?, ?, x'', NULL), (2, ?, ?, zeroblob(40), -2.5), (3, NULL, '', x'00ff', 1e100)",
                "Zoë 日本 🚀",
                &long,
                "\"a \\\"quoted\\\", comma\"",
                "\"tab\\there\\nnext\"",
            ],
        ),
        0,
    );
    let sql = "SELECT id, name, note, data, price FROM g ORDER BY id";
    let run = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["query", sql]);
        let o = cli(&db, &all);
        assert_exit(&o, 0);
        stdout(&o)
    };
    // Display formats, fitted to 80 columns and, for the table, also whole.
    assert_golden("table.txt", &run(&["--format", "table"]));
    assert_golden("table-80.txt", &run(&["--width", "80"]));
    assert_golden("box-80.txt", &run(&["--format", "box", "--width", "80"]));
    assert_golden("line-80.txt", &run(&["--format", "line", "--width", "80"]));
    // Data formats: never cut.
    assert_golden("rows.csv", &run(&["--format", "csv", "--width", "80"]));
    assert_golden("rows.tsv", &run(&["--format", "tsv"]));
    assert_golden("rows.json", &run(&["--format", "json"]));
    assert_golden("rows.jsonl", &run(&["--format", "jsonl"]));
    assert_golden("table-null-dash.txt", &run(&["--null", "-", "--width", "60"]));

    for format in ["table", "box", "line"] {
        for line in run(&["--format", format, "--width", "80"]).lines() {
            assert!(UnicodeWidthStr::width(line) <= 80, "{format}: wider than 80 columns: {line}");
        }
    }
    // The data formats hold every value whole: the JSON lines read back to the rows.
    let jsonl = run(&["--format", "jsonl"]);
    let rows: Vec<Json> = jsonl.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows[0]["note"], json!(long));
    assert_eq!(rows[1]["note"], json!("tab\there\nnext"));
    assert_eq!(rows[2]["data"], json!({"blob_hex": "00ff"}));
    assert_eq!(rows[0]["price"], Json::Null);

    // `exec … RETURNING`, `connections` and `backups` take the same formats.
    let o = cli(&db, &["--format", "csv", "exec", "UPDATE g SET price = 9 WHERE id = 3 RETURNING id, price"]);
    assert_exit(&o, 0);
    assert_eq!(stdout(&o), "id,price\r\n3,9.0\r\n");
    // A write without rows is its counters, as one row of the format.
    let o = cli(&db, &["--format", "jsonl", "exec", "DELETE FROM g WHERE id = 99"]);
    assert_exit(&o, 0);
    let counters = json_out(&o);
    assert_eq!(counters["changes"], 0, "{counters}");
    assert!(counters["last_insert_rowid"].is_i64(), "{counters}");
    let o = cli(&db, &["--format", "csv", "connections"]);
    assert_exit(&o, 0);
    assert!(
        stdout(&o).starts_with("id,name,pid,connected_unix_ms,requests,holds_writer\r\n"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains(",litebroker-cli,"), "{}", stdout(&o));
    assert_exit(&cli(&db, &["backup", "fmt"]), 0);
    let o = cli(&db, &["--format", "jsonl", "backups"]);
    assert_exit(&o, 0);
    let b = json_out(&o);
    assert!(b["path"].as_str().unwrap().ends_with("_fmt.db") && b["bytes"].as_u64().unwrap() > 0, "{b}");
    // --json stays one document and does not mix with --format.
    let o = cli(&db, &["--json", "--format", "csv", "query", "SELECT 1"]);
    assert_json_error(&o, 2, "usage");
}

#[test]
fn a_piped_script_runs_statement_by_statement_and_stops_at_its_first_error_naming_the_line() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    let script = "\
CREATE TABLE s (n INTEGER PRIMARY KEY, v TEXT NOT NULL);
INSERT INTO s (v) VALUES ('one');
SELECT v FROM s;
-- a comment, then a statement over two lines
INSERT INTO s (v)
  VALUES ('two');
INSERT INTO s (v) VALUES (NULL);
INSERT INTO s (v) VALUES ('never');
";
    let o = cli_with_stdin(&db, &["shell"], Some(script));
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("stdin line 7: NOT NULL constraint failed: s.v"), "{}", stderr(&o));
    assert!(stderr(&o).contains("statements before it stay applied"), "{}", stderr(&o));
    // Results are printed as they come, as sqlite3 does; writes print nothing.
    assert_eq!(stdout(&o), "v\n---\none\n(1 row)\n");
    assert_eq!(query_i64(&db, "SELECT count(*) FROM s"), 2, "lines 1-6 applied, line 8 never ran");

    // An error inside BEGIN … rolls back the open transaction; the statements
    // before the BEGIN stay.
    let script = "INSERT INTO s (v) VALUES ('before');\nBEGIN;\nINSERT INTO s (v) VALUES ('inside');\nINSERT INTO nowhere VALUES (1);\nCOMMIT;\n";
    let o = cli_with_stdin(&db, &["--format", "csv", "shell"], Some(script));
    assert_exit(&o, 1);
    assert!(stderr(&o).contains("stdin line 4: no such table: nowhere"), "{}", stderr(&o));
    assert!(stderr(&o).contains("begun at stdin line 2 was rolled back"), "{}", stderr(&o));
    assert_eq!(query_i64(&db, "SELECT count(*) FROM s WHERE v = 'before'"), 1);
    assert_eq!(query_i64(&db, "SELECT count(*) FROM s WHERE v = 'inside'"), 0);

    // Dot-commands in a script; an input that ends inside a transaction commits nothing.
    let script = ".mode jsonl\nSELECT n, v FROM s WHERE v = 'one';\nBEGIN;\nINSERT INTO s (v) VALUES ('unfinished');\n";
    let o = cli_with_stdin(&db, &["shell"], Some(script));
    assert_exit(&o, 1);
    assert_eq!(stdout(&o), "{\"n\":1,\"v\":\"one\"}\n");
    assert!(stderr(&o).contains("ended inside the transaction begun at stdin line 3"), "{}", stderr(&o));
    assert_eq!(query_i64(&db, "SELECT count(*) FROM s WHERE v = 'unfinished'"), 0);

    // Without a broker a write fails with the contract's code (3) and names its line; reads still run.
    drop(_b);
    let o = cli_with_stdin(
        &db,
        &["shell"],
        Some("SELECT count(*) AS n FROM s;\nINSERT INTO s (v) VALUES ('x');\n"),
    );
    assert_exit(&o, 3);
    assert!(stdout(&o).contains("n\n-\n3\n"), "{}", stdout(&o));
    assert!(stderr(&o).contains("stdin line 2: no broker is serving"), "{}", stderr(&o));
}

#[test]
fn dot_commands_in_a_script_import_read_redirect_and_report() {
    let t = TestDir::new();
    let db = t.db();
    let _b = Broker::start(&db, &[]);
    let dir = t.path();
    let file = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let csv_in = file("in.csv", "sku,qty,note\nA1,5,first\n\"B,2\",7,\n");
    let more = file("more.tsv", "C3\t1\tthird\n");
    let bad = file("bad.csv", "D4,1,x\nE5,2\n");
    let sub =
        file("sub.sql", "SELECT 'from read' AS r;\n\n-- line 3\nSELECT nope FROM skus;\nSELECT 'never';\n");
    let out = dir.join("out.csv");
    let once = dir.join("once.txt");
    let script = format!(
        "\
.import {csv_in} skus
.import --tsv {more} skus
.import {bad} skus
"
    );
    // .import: a missing table is created from the header row; rows go in through
    // the broker in one transaction; a row of the wrong width imports nothing.
    let o = cli_with_stdin(&db, &["shell"], Some(&script));
    assert_exit(&o, 1);
    assert!(
        stderr(&o).contains("stdin line 3: ")
            && stderr(&o).contains("line 2: 2 fields, skus takes 3; nothing was imported"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        query_texts(&db, "SELECT sku || '|' || qty || '|' || note FROM skus ORDER BY sku"),
        ["A1|5|first", "B,2|7|", "C3|1|third"]
    );

    let script = format!(
        "\
.headers off
SELECT sku, qty FROM skus ORDER BY sku LIMIT 1;
.headers on
.nullvalue (none)
SELECT sku, nullif(note, '') AS note FROM skus WHERE sku < 'C' ORDER BY sku;
.timer on
SELECT count(*) AS n FROM skus;
INSERT INTO skus VALUES ('F6', 0, NULL);
.timer off
.output {out}
.mode csv
SELECT sku, qty FROM skus ORDER BY sku;
.output
.mode line
SELECT sku FROM skus WHERE sku = 'F6';
.once {once}
SELECT 'once' AS o;
SELECT 'after' AS a;
.status
.read {sub}
SELECT 'not run either';
",
        out = out.display(),
        once = once.display()
    );
    let o = cli_with_stdin(&db, &["shell"], Some(&script));
    assert_exit(&o, 1);
    // .headers off: rows without the header and rule; .nullvalue: NULL's text;
    // .output: the csv went to the file, and back to stdout after; .once: one
    // statement's results to a file; .read: the
    // file's statements in order, its first error named by file and line, the
    // script stopped there.
    let text = stdout(&o);
    let Some((before_status, status)) = text.split_once("database: ") else {
        panic!("no .status report\nstdout:\n{text}\nstderr:\n{}", stderr(&o))
    };
    assert_eq!(
        before_status,
        "A1  5\n(1 row)\nsku  note\n---  ------\nA1   first\nB,2  (none)\n(2 rows)\nn\n-\n3\n(1 row)\nsku = F6\na = after\n"
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "sku,qty\r\nA1,5\r\n\"B,2\",7\r\nC3,1\r\nF6,0\r\n");
    // .once: the next statement's results only.
    assert_eq!(std::fs::read_to_string(&once).unwrap(), "o = once\n");
    // .status: the database, its broker, the session, the output settings.
    let pid = json_out(&cli(&db, &["--json", "status"]))["pid"].clone();
    assert!(status.starts_with(&format!("{}\nbroker:   pid {pid} on ", db.display())), "{status}");
    assert!(status.contains("session:  none (each write commits on its own)\n"), "{status}");
    assert!(
        status.contains("output:   stdout, mode line, headers on, null \"(none)\", timer off\n"),
        "{status}"
    );
    assert!(status.contains("history:  off (not a terminal)\n"), "{status}");
    assert!(status.ends_with("history:  off (not a terminal)\nr = from read\n"), "{status}");
    // .timer: each statement's time and where it ran, on stderr.
    let err = stderr(&o);
    let timers: Vec<&str> = err.lines().filter(|l| l.starts_with("Run Time: ")).collect();
    assert_eq!(timers.len(), 2, "{err}");
    assert!(timers[0].ends_with(" ms (read on the local connection)"), "{err}");
    assert!(timers[1].ends_with(" ms (write through the broker)"), "{err}");
    assert!(err.contains(&format!("stdin line 20: {sub} line 4: no such column: nope")), "{err}");
    assert!(!text.contains("never") && !text.contains("not run either"), "{text}");

    // .schema and .indexes of one table, and .help listing every dot-command.
    assert_exit(&cli(&db, &["exec", "CREATE INDEX skus_qty ON skus (qty)"]), 0);
    let o = cli_with_stdin(&db, &["shell"], Some(".schema skus\n.indexes skus\n.help\n"));
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.starts_with(
            "CREATE TABLE \"skus\" (\"sku\" TEXT, \"qty\" TEXT, \"note\" TEXT);\n\
             CREATE INDEX skus_qty ON skus (qty);\nskus_qty\n.help "
        ),
        "{text}"
    );
    for dot in [".tables", ".mode", ".headers", ".timer", ".read", ".import", ".output", ".status", ".quit"] {
        assert!(text.contains(&format!("\n{dot} ")), ".help does not list {dot}:\n{text}");
    }

    // A broker-less .status says so; reads still work.
    drop(_b);
    let o = cli_with_stdin(&db, &["shell"], Some(".status\nSELECT count(*) AS n FROM skus;\n"));
    assert_exit(&o, 0);
    assert!(
        stdout(&o).contains("broker:   none (") && stdout(&o).ends_with("n\n-\n4\n(1 row)\n"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_bare_litebroker_without_a_terminal_stays_a_usage_error() {
    let t = TestDir::new();
    let o = cli_with_stdin(&t.db(), &[], Some("SELECT 1;\n"));
    assert_exit(&o, 2);
    assert!(stderr(&o).contains("litebroker shell"), "{}", stderr(&o));
    let o = cli(&t.db(), &["--json"]);
    assert_json_error(&o, 2, "usage");
}

#[test]
fn completions_are_generated_for_bash_zsh_fish_and_powershell() {
    let t = TestDir::new();
    for (shell, marker) in [
        ("bash", "complete -F _litebroker"),
        ("zsh", "#compdef litebroker"),
        ("fish", "complete -c litebroker"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let o = cli(&t.db(), &["completions", shell]);
        assert_exit(&o, 0);
        let script = stdout(&o);
        assert!(script.contains(marker), "{shell}: no {marker:?} in\n{script}");
        for command in ["exec", "query", "shell", "completions", "format", "autostart"] {
            assert!(script.contains(command), "{shell}: {command} is not completed");
        }
        #[cfg(unix)]
        if shell == "bash" {
            // The script must at least parse.
            let file = t.path().join("litebroker.bash");
            std::fs::write(&file, &script).unwrap();
            let check = std::process::Command::new("bash").arg("-n").arg(&file).output().expect("bash");
            assert!(check.status.success(), "bash -n: {}", String::from_utf8_lossy(&check.stderr));
        }
    }
    let o = cli(&t.db(), &["completions", "tcsh"]);
    assert_exit(&o, 2);
}

#[test]
fn every_command_help_ends_with_examples() {
    let t = TestDir::new();
    let commands = [
        "exec",
        "query",
        "batch",
        "shell",
        "status",
        "connections",
        "shutdown",
        "stats",
        "verify",
        "backup",
        "backups",
        "restore",
        "checkpoint",
        "migrate",
        "doctor",
        "completions",
        "watch",
        "metrics",
        "top",
        "replication",
        "import",
    ];
    for c in commands {
        let o = cli(&t.db(), &[c, "--help"]);
        assert_exit(&o, 0);
        let help = stdout(&o);
        let tail: Vec<&str> = help.trim_end().lines().rev().take_while(|l| *l != "Examples:").collect();
        assert!(
            (2..=3).contains(&tail.len())
                && tail.iter().all(|l| l.starts_with("  litebroker ") || l.contains("| litebroker ")),
            "{c} --help does not end with two or three examples:\n{help}"
        );
    }
}
