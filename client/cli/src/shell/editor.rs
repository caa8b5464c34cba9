//! The shell's line editor: rustyline with multi-line statements (Enter runs
//! the entry once SQLite says it is complete) and history in the user's data
//! folder.

use std::borrow::Cow;
use std::path::PathBuf;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::{ValidationContext, ValidationResult, Validator};
use rustyline::{Context, Helper};

use crate::statements::{has_statements, is_complete};

/// The dot-commands, for completion and `.help`.
pub(crate) const DOT_COMMANDS: &[(&str, &str)] = &[
    (".help", "this list"),
    (".tables [PATTERN]", "tables and views (names LIKE PATTERN)"),
    (".schema [PATTERN]", "CREATE statements (of objects of tables LIKE PATTERN)"),
    (".indexes [TABLE]", "indexes (of TABLE)"),
    (".mode [table|box|csv|tsv|json|jsonl|line]", "how results are printed; no argument: the current one"),
    (".headers on|off", "column names over table, box, csv and tsv output"),
    (".nullvalue TEXT", "what NULL is shown as"),
    (".timer on|off", "the run time of each statement, and where it ran"),
    (".read FILE", "run the statements of FILE, stopping at its first error"),
    (
        ".import [--csv|--tsv] [--skip N] FILE TABLE",
        "rows of FILE into TABLE in one transaction (TABLE created from the header row when missing)",
    ),
    (".output [FILE]", "results into FILE (truncated first); no argument: back to stdout"),
    (".once FILE", "the next statement's results into FILE (truncated first)"),
    (".status", "the broker, this shell's write session, output settings"),
    (".quit", "leave (also .exit and Ctrl-D); an open transaction is rolled back"),
];

/// Where the shell keeps its history: `LITEBROKER_HISTORY` (empty: none), else
/// `litebroker/history` in the user's data folder (`$XDG_DATA_HOME` or
/// `~/.local/share` on Linux, `~/Library/Application Support` on macOS,
/// `%APPDATA%` on Windows).
pub(crate) fn history_path() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LITEBROKER_HISTORY") {
        return (!p.is_empty()).then(|| PathBuf::from(p));
    }
    data_dir().map(|d| d.join("litebroker").join("history"))
}

#[cfg(windows)]
fn data_dir() -> Option<PathBuf> {
    std::env::var_os("APPDATA").map(PathBuf::from)
}

#[cfg(target_os = "macos")]
fn data_dir() -> Option<PathBuf> {
    home().map(|h| h.join("Library").join("Application Support"))
}

#[cfg(all(unix, not(target_os = "macos")))]
fn data_dir() -> Option<PathBuf> {
    // The XDG rules: a relative $XDG_DATA_HOME is to be ignored.
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .or_else(|| home().map(|h| h.join(".local").join("share")))
}

#[cfg(unix)]
fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// Creates the history file's folder, readable by this user only on Unix: the
/// history holds the SQL typed, values included.
pub(crate) fn prepare_history_dir(path: &std::path::Path) -> std::io::Result<()> {
    let Some(dir) = path.parent() else { return Ok(()) };
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Multi-line entry and dot-command completion.
pub(crate) struct ShellHelper;

impl Validator for ShellHelper {
    fn validate(&self, ctx: &mut ValidationContext<'_>) -> rustyline::Result<ValidationResult> {
        let input = ctx.input();
        let done = input.trim_start().starts_with('.')
            || !has_statements(input)
            || is_complete(&format!("{input}\n"));
        Ok(if done { ValidationResult::Valid(None) } else { ValidationResult::Incomplete })
    }
}

impl Completer for ShellHelper {
    type Candidate = Pair;

    fn complete(&self, line: &str, pos: usize, _ctx: &Context<'_>) -> rustyline::Result<(usize, Vec<Pair>)> {
        let typed = &line[..pos];
        if !typed.starts_with('.') || typed.contains(char::is_whitespace) {
            return Ok((pos, Vec::new()));
        }
        let found = DOT_COMMANDS
            .iter()
            .map(|(usage, _)| usage.split_whitespace().next().unwrap_or(usage))
            .filter(|name| name.starts_with(typed))
            .map(|name| Pair { display: name.to_owned(), replacement: format!("{name} ") })
            .collect();
        Ok((0, found))
    }
}

impl Hinter for ShellHelper {
    type Hint = String;
}

impl Highlighter for ShellHelper {
    fn highlight<'l>(&self, line: &'l str, _pos: usize) -> Cow<'l, str> {
        Cow::Borrowed(line)
    }
}

impl Helper for ShellHelper {}
