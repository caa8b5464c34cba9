//! `litebroker`: ad-hoc writes, reads and operations against a database served by
//! `litebrokerd`.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use litebroker_client::protocol::FrameError;
use litebroker_client::{
    Client, ClientError, ConnectOptions, ErrorKind, ExecResult, Reader, Value, LOCKED_USER_TEXT,
};
use serde_json::{json, Value as Json};

/// Writes through the database's broker, reads through a local read-only
/// connection, and operates the broker.
///
/// Parameters of exec and query: everything after the SQL is a parameter, never a
/// flag (also `-5`, `-`, `--`, `--x`), so give flags such as --json before the SQL. A
/// parameter is a JSON literal (42, 4.5, -1.5e3, null, true, "text") or, when not
/// valid JSON, text; an integer outside the 64-bit range stays text exactly as
/// typed (never a rounded REAL). Pass text that looks like a number or a flag as a
/// JSON string: '"007"', '"--x"'.
///
/// Exit codes: 0 ok, 1 SQL error, 2 usage, 3 broker not running or unreachable, or
/// refusing writes (reads still work), 4 database locked or timed out, 5
/// verification failed, 6 limit exceeded (too many clients, frame or answer too
/// large, too many parameters, statements or rows).
#[derive(Debug, Parser)]
#[command(name = "litebroker", version)]
struct Cli {
    /// The database file.
    #[arg(long, global = true, env = "LITEBROKER_DB", default_value = litebroker_client::DEFAULT_DB)]
    db: PathBuf,
    /// Socket path (Unix) or pipe name (Windows) of the broker; derived from --db by default.
    #[arg(long, global = true)]
    socket: Option<String>,
    /// Print one JSON document on stdout.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the broker: the total wait of a request, waiting for the
    /// writer and any lock included.
    #[arg(long, global = true, default_value_t = 30.0)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Write through the broker: prints changes and last insert rowid, or the rows of
    /// a statement that returns rows (`… RETURNING …`). Several `;`-separated
    /// statements run atomically.
    Exec {
        /// The SQL, then its positional parameters: everything after the SQL is a
        /// parameter, also `-5`, `-`, `--` or `--x` (give flags before the SQL). A
        /// parameter is a JSON literal (42, 4.5, null, "42", true) or, when not valid
        /// JSON, text; an integer beyond 64 bits stays text as typed.
        // One argument, so that clap takes everything after its first value (the SQL)
        // as values: with the SQL apart, a known flag right after it (`--json`) would
        // still be parsed as a flag.
        #[arg(required = true, num_args = 1.., value_names = ["SQL", "PARAMS"],
              allow_hyphen_values = true, trailing_var_arg = true)]
        sql_and_params: Vec<String>,
    },
    /// Read through a local read-only connection (works with no broker running).
    Query {
        /// The SQL, then its positional parameters, as for exec.
        #[arg(required = true, num_args = 1.., value_names = ["SQL", "PARAMS"],
              allow_hyphen_values = true, trailing_var_arg = true)]
        sql_and_params: Vec<String>,
    },
    /// Run the statements of FILE (or stdin with `-` or nothing) as one atomic transaction.
    Batch {
        /// A file of SQL statements, or `-` for stdin.
        file: Option<PathBuf>,
    },
    /// The broker serving this database: pid, socket, protocol, uptime, clients.
    Status,
    /// The broker's connected clients: pid, name, since, requests, writer.
    Connections,
    /// Ask the broker to shut down cleanly.
    Shutdown,
    /// Database and broker figures: schema version, tables, indices, sizes, row counts;
    /// broker pid, uptime, clients, commits, requests per commit, lock waits, last checkpoint.
    Stats,
    /// `PRAGMA integrity_check` and `foreign_key_check`: prints OK or each problem (exit 5 on problems).
    Verify,
    /// An online, consistent copy into `<db folder>/backups/<stem>_<YYYYMMDD_HHMMSS>_<LABEL>.db` (UTC), then checked.
    Backup {
        /// Label in the file name.
        #[arg(default_value = "manual")]
        label: String,
        /// Keep only the newest N backups of this database.
        #[arg(long)]
        keep: Option<u32>,
    },
    /// The backups of this database, oldest first.
    Backups,
    /// Replace the database's content with FILE: verified first (exit 5 when corrupt or
    /// not SQLite), a safety backup taken, then copied while the broker holds the writer.
    /// With --from-replica, FILE is fetched first through `litestream restore` (from
    /// URL, or from the replica the broker replicates to) into a temporary file next
    /// to the database; with no broker running it goes into the database file
    /// directly when no process has it open.
    Restore {
        /// The SQLite file to restore from.
        #[arg(required_unless_present = "from_replica")]
        file: Option<PathBuf>,
        /// Restore from the Litestream replica at URL (default: the broker's own replica).
        #[arg(long, value_name = "URL", num_args = 0..=1, default_missing_value = "", conflicts_with = "file")]
        from_replica: Option<String>,
        /// With --from-replica: the database as it was at TIMESTAMP (RFC 3339, e.g.
        /// 2026-12-03T10:00:00Z).
        #[arg(long, value_name = "TIMESTAMP", requires = "from_replica")]
        at: Option<String>,
    },
    /// Replication status: the supervised Litestream (running, restarting), the
    /// replica (secrets masked), replicated and local positions, lag, last error.
    Replication,
    /// Run a WAL checkpoint and report WAL frames, checkpointed frames and whether readers blocked it.
    Checkpoint {
        /// passive, full, restart or truncate.
        #[arg(value_enum, default_value = "truncate")]
        mode: ModeArg,
    },
    /// Apply the numbered migrations of DIR (`0001_init.sql`, `0002_add_sales.sql`, …)
    /// above the database's `PRAGMA user_version`, each in one transaction.
    Migrate {
        /// The folder of migration files.
        dir: PathBuf,
    },
    /// The troubleshooting steps, automated: broker, connections, WAL size,
    /// permissions, network filesystem, quick_check, backups. Exit 0 when healthy,
    /// 3 when only the broker is missing, 5 when another check failed.
    Doctor,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Passive,
    Full,
    Restart,
    Truncate,
}

mod doctor;
mod ops;
mod replication;

/// A failure with its exit code.
pub(crate) struct Failure {
    pub(crate) code: u8,
    pub(crate) kind: &'static str,
    pub(crate) message: String,
    /// The command already printed its result document (e.g. a failed `verify`):
    /// with `--json`, no second (error) document follows it.
    pub(crate) reported: bool,
}

fn fail(code: u8, kind: &'static str, message: impl Into<String>) -> Failure {
    Failure { code, kind, message: message.into(), reported: false }
}

/// A failure whose details the command already printed.
fn reported(code: u8, kind: &'static str, message: impl Into<String>) -> Failure {
    Failure { reported: true, ..fail(code, kind, message) }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        // Errors from the client library keep their exit code through the context chain.
        if let Some(ce) = e.downcast_ref::<ClientError>() {
            let mut f = client_failure(ce, None);
            f.message = format!("{e:#}");
            return f;
        }
        fail(1, "error", format!("{e:#}"))
    }
}

fn client_failure(e: &ClientError, cli: Option<&Cli>) -> Failure {
    match e {
        ClientError::NotRunning { .. } => {
            let db = cli.map_or_else(|| "data/app.db".into(), |c| c.db.display().to_string());
            fail(
                3,
                "not_running",
                format!(
                    "{e}.\nReads still work without it (read-only mode): litebroker --db {db} query \"SELECT …\"\n\
                     Start the broker with: litebrokerd --db {db}"
                ),
            )
        }
        ClientError::ConnectionLost { .. } => fail(3, "connection_lost", e.to_string()),
        ClientError::Frame(FrameError::TooLarge { .. }) => fail(6, "limit_exceeded", e.to_string()),
        ClientError::Untrusted(_) => fail(3, "untrusted_broker", e.to_string()),
        ClientError::Broker(info) => match info.kind {
            ErrorKind::VerificationFailed => fail(5, "verification_failed", info.message.clone()),
            ErrorKind::LimitExceeded => fail(6, "limit_exceeded", info.message.clone()),
            ErrorKind::WritesStopped => {
                let db = cli.map_or_else(|| "data/app.db".into(), |c| c.db.display().to_string());
                fail(
                    3,
                    "writes_stopped",
                    format!("{}\nReads still work: litebroker --db {db} query \"SELECT …\"", info.message),
                )
            }
            ErrorKind::SchemaMismatch => fail(1, "schema_mismatch", info.message.clone()),
            ErrorKind::Locked => {
                fail(4, "locked", format!("{LOCKED_USER_TEXT}\n\nDetails: {}", info.message))
            }
            ErrorKind::Timeout => fail(4, "timeout", info.message.clone()),
            ErrorKind::ShuttingDown | ErrorKind::Incompatible => {
                fail(3, info.kind.as_str(), info.message.clone())
            }
            k => fail(1, k.as_str(), info.message.clone()),
        },
        e if e.is_locked() => fail(4, "locked", format!("{LOCKED_USER_TEXT}\n\nDetails: {e}")),
        other => fail(1, "error", other.to_string()),
    }
}

/// A CLI parameter: a JSON literal, or text when it is not valid JSON. A JSON
/// integer that does not fit in 64 bits stays text exactly as typed: as a REAL it
/// would be rounded (two 20-digit barcodes would become the same number); numbers
/// with a fraction or an exponent are REAL.
fn parse_param(s: &str) -> Value {
    match serde_json::from_str::<Json>(s) {
        Ok(Json::Null) => Value::Null,
        Ok(Json::Bool(b)) => Value::Integer(i64::from(b)),
        Ok(Json::Number(n)) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None if is_integer_literal(s) => Value::Text(s.to_owned()),
            None => n.as_f64().map_or_else(|| Value::Text(s.to_owned()), Value::Real),
        },
        Ok(Json::String(t)) => Value::Text(t),
        _ => Value::Text(s.to_owned()),
    }
}

/// `-?digits` (JSON allows whitespace around it): no fraction, no exponent.
fn is_integer_literal(s: &str) -> bool {
    let digits = s.trim().strip_prefix('-').unwrap_or(s.trim());
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The SQL and the parameters of `exec`/`query`; a SQL without any statement
/// (empty, or only comments) is a usage error.
fn split_sql(sql_and_params: &[String]) -> Result<(&str, &[String]), Failure> {
    match sql_and_params.split_first() {
        Some((sql, params)) if has_statements(sql) => Ok((sql, params)),
        _ => Err(fail(2, "usage", "no SQL statement given (only whitespace or comments)")),
    }
}

/// Whether `sql` holds more than whitespace, comments and `;`: such SQL is a
/// usage error here, before it reaches the broker as an SQL error.
fn has_statements(sql: &str) -> bool {
    let mut rest = sql;
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ';');
        if let Some(r) = rest.strip_prefix("--") {
            rest = r.split_once('\n').map_or("", |(_, after)| after);
        } else if let Some(r) = rest.strip_prefix("/*") {
            // SQLite ends an unterminated comment at the end of the input.
            rest = r.split_once("*/").map_or("", |(_, after)| after);
        } else {
            return !rest.is_empty();
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn to_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Integer(i) => json!(i),
        Value::Real(r) => json!(r),
        Value::Text(t) => json!(t),
        Value::Blob(b) => json!({ "blob_hex": hex(b) }),
    }
}

fn to_text(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::Integer(i) => i.to_string(),
        Value::Real(r) => r.to_string(),
        Value::Text(t) => t.clone(),
        Value::Blob(b) => format!("x'{}'", hex(b)),
    }
}

fn rows_json(columns: &[String], rows: &[Vec<Value>]) -> Json {
    json!({
        "columns": columns,
        "rows": rows.iter().map(|r| r.iter().map(to_json).collect::<Vec<_>>()).collect::<Vec<_>>(),
    })
}

fn print_table(columns: &[String], rows: &[Vec<Value>]) {
    let cells: Vec<Vec<String>> = rows.iter().map(|r| r.iter().map(to_text).collect()).collect();
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for r in &cells {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |vals: &mut dyn Iterator<Item = &str>| {
        let parts: Vec<String> = vals.zip(&widths).map(|(v, w)| format!("{v:<w$}")).collect();
        println!("{}", parts.join("  ").trim_end());
    };
    line(&mut columns.iter().map(String::as_str));
    line(&mut widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().iter().map(String::as_str));
    for r in &cells {
        line(&mut r.iter().map(String::as_str));
    }
    println!("({} row{})", rows.len(), if rows.len() == 1 { "" } else { "s" });
}

fn print_exec(json: bool, r: &ExecResult) {
    if json {
        let mut doc = json!({ "changes": r.changes, "last_insert_rowid": r.last_insert_rowid });
        if !r.columns.is_empty() {
            let rows = rows_json(&r.columns, &r.rows);
            doc["columns"] = rows["columns"].clone();
            doc["rows"] = rows["rows"].clone();
        }
        println!("{doc}");
    } else {
        if !r.columns.is_empty() {
            print_table(&r.columns, &r.rows);
        }
        // After rows the counters are noise (the rowid is the connection's last
        // insert, from any earlier statement) unless the statement changed rows too
        // (`INSERT … RETURNING`).
        if r.columns.is_empty() || r.changes > 0 {
            println!("changes: {}, last insert rowid: {}", r.changes, r.last_insert_rowid);
        }
    }
}

fn connect(cli: &Cli) -> Result<Client, Failure> {
    let mut opts = ConnectOptions::new(&cli.db).client_name("litebroker-cli");
    opts.socket = cli.socket.clone();
    opts.request_timeout = Duration::from_secs_f64(cli.timeout);
    opts.connect_timeout = opts.connect_timeout.min(opts.request_timeout);
    Client::connect_with(&opts).map_err(|e| client_failure(&e, Some(cli)))
}

/// `total / count`, 0 when nothing was counted yet.
fn ratio(total: u64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total as f64 / count as f64
    }
}

fn ms_to_text(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{:.1} s", ms as f64 / 1000.0),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, (s % 3600) / 60),
    }
}

fn run(cli: &Cli) -> Result<(), Failure> {
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(fail(
            2,
            "usage",
            format!("--timeout must be a positive number of seconds, got {}", cli.timeout),
        ));
    }
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    match &cli.command {
        Command::Exec { sql_and_params } => {
            let (sql, params) = split_sql(sql_and_params)?;
            let params: Vec<Value> = params.iter().map(|p| parse_param(p)).collect();
            let r = connect(cli)?.execute(sql, &params).map_err(on_client)?;
            print_exec(cli.json, &r);
        }
        Command::Query { sql_and_params } => {
            let (sql, params) = split_sql(sql_and_params)?;
            let params: Vec<Value> = params.iter().map(|p| parse_param(p)).collect();
            let reader = Reader::open(&cli.db).map_err(on_client)?;
            let rows = reader.query(sql, &params).map_err(on_client)?;
            if cli.json {
                println!("{}", rows_json(&rows.columns, &rows.rows));
            } else {
                print_table(&rows.columns, &rows.rows);
            }
        }
        Command::Batch { file } => {
            let (sql, source) = match file.as_deref() {
                None => (read_stdin()?, "stdin".to_owned()),
                Some(p) if p.as_os_str() == "-" => (read_stdin()?, "stdin".to_owned()),
                // A file that cannot be read is a wrong argument, like an empty one.
                Some(p) => (
                    std::fs::read_to_string(p)
                        .map_err(|e| fail(2, "usage", format!("batch: cannot read {}: {e}", p.display())))?,
                    p.display().to_string(),
                ),
            };
            if !has_statements(&sql) {
                return Err(fail(
                    2,
                    "usage",
                    format!("batch: no statements in {source} (only whitespace or comments)"),
                ));
            }
            let r = connect(cli)?.execute(&sql, &[]).map_err(on_client)?;
            print_exec(cli.json, &r);
        }
        Command::Status => {
            let mut client = connect(cli)?;
            let s = client.status().map_err(on_client)?;
            let health = ops::health(&mut client).map_err(on_client)?;
            let repl = replication::report(&mut client).map_err(on_client)?;
            if cli.json {
                println!(
                    "{}",
                    json!({
                        "pid": s.pid, "socket": s.socket, "db": s.db_path, "protocol": s.protocol,
                        "protocol_minor": s.minor, "version": s.broker_version, "uptime_ms": s.uptime_ms,
                        "clients": s.clients, "requests": s.requests, "commits": s.commits,
                        "queue_depth": s.queue_depth, "synchronous": s.synchronous,
                        "writer_holder": s.writer_holder,
                        "group_commits": s.group_commits, "group_requests": s.group_requests,
                        "requests_per_commit": ratio(s.group_requests, s.group_commits),
                        "max_group": s.max_group,
                        "queue_wait_mean_us": ratio(s.queue_wait_us, s.queue_waits),
                        "queue_wait_max_us": s.max_queue_wait_us,
                        "commit_mean_us": ratio(s.commit_us, s.group_commits),
                        "commit_max_us": s.max_commit_us,
                        "health": ops::health_json(health.as_ref()),
                        "replication": replication::to_json(repl.as_ref()),
                    })
                );
            } else {
                println!("Broker for {}", s.db_path);
                println!("  pid:          {}", s.pid);
                println!("  socket:       {}", s.socket);
                println!(
                    "  version:      litebrokerd {} (protocol {}.{})",
                    s.broker_version, s.protocol, s.minor
                );
                println!("  uptime:       {}", ms_to_text(s.uptime_ms));
                println!("  clients:      {}", s.clients);
                println!("  requests:     {}", s.requests);
                println!("  commits:      {}", s.commits);
                println!("  queue depth:  {}", s.queue_depth);
                println!("  synchronous:  {}", s.synchronous);
                println!("  writer:       {}", s.writer_holder.as_deref().unwrap_or("free"));
                println!(
                    "  group commit: {} transactions, {:.2} requests each (max {})",
                    s.group_commits,
                    ratio(s.group_requests, s.group_commits),
                    s.max_group
                );
                println!(
                    "  queue wait:   mean {:.1} µs, max {} µs",
                    ratio(s.queue_wait_us, s.queue_waits),
                    s.max_queue_wait_us
                );
                println!(
                    "  commit time:  mean {:.1} µs, max {} µs",
                    ratio(s.commit_us, s.group_commits),
                    s.max_commit_us
                );
                if let Some(h) = &health {
                    let (exactly_once, writes) = ops::health_text(h);
                    println!("  exactly-once: {exactly_once}");
                    println!("  writes:       {writes}");
                }
                if let Some(r) = &repl {
                    println!("  replication:  {}", replication::line(r));
                }
            }
        }
        Command::Connections => {
            let list = connect(cli)?.connections().map_err(on_client)?;
            let now = litebroker_client::protocol::host::unix_ms();
            if cli.json {
                let items: Vec<Json> = list
                    .iter()
                    .map(|c| {
                        json!({
                            "id": c.id, "name": c.name, "pid": c.pid,
                            "connected_unix_ms": c.connected_unix_ms, "requests": c.requests,
                            "holds_writer": c.holds_writer,
                        })
                    })
                    .collect();
                println!("{}", json!({ "connections": items }));
            } else {
                let columns: Vec<String> =
                    ["id", "pid", "name", "connected", "requests", "writer"].map(String::from).to_vec();
                let rows: Vec<Vec<Value>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            Value::Integer(c.id as i64),
                            Value::Integer(i64::from(c.pid)),
                            Value::Text(c.name.clone()),
                            Value::Text(format!(
                                "{} ago",
                                ms_to_text(now.saturating_sub(c.connected_unix_ms))
                            )),
                            Value::Integer(c.requests as i64),
                            Value::Text(if c.holds_writer { "holds" } else { "" }.into()),
                        ]
                    })
                    .collect();
                print_table(&columns, &rows);
            }
        }
        Command::Stats => ops::stats(cli)?,
        Command::Verify => ops::verify(cli)?,
        Command::Backup { label, keep } => ops::backup(cli, Some(label), *keep)?,
        Command::Backups => ops::backups(cli)?,
        Command::Restore { file: Some(file), .. } => ops::restore(cli, file)?,
        Command::Restore { file: None, from_replica, at } => replication::restore_from_replica(
            cli,
            from_replica.as_deref().filter(|u| !u.is_empty()),
            at.as_deref(),
        )?,
        Command::Replication => replication::replication(cli)?,
        Command::Checkpoint { mode } => {
            use litebroker_client::protocol::CheckpointMode;
            let mode = match mode {
                ModeArg::Passive => CheckpointMode::Passive,
                ModeArg::Full => CheckpointMode::Full,
                ModeArg::Restart => CheckpointMode::Restart,
                ModeArg::Truncate => CheckpointMode::Truncate,
            };
            ops::checkpoint(cli, mode)?;
        }
        Command::Doctor => doctor::doctor(cli)?,
        Command::Migrate { dir } => {
            let migrations = litebroker_client::migrations_from_dir(dir).map_err(|e| {
                fail(2, "usage", format!("cannot read migrations from {}: {e}", dir.display()))
            })?;
            let r = connect(cli)?.migrate(&migrations).map_err(on_client)?;
            if cli.json {
                println!(
                    "{}",
                    json!({ "from_version": r.from_version, "to_version": r.to_version, "applied": r.applied })
                );
            } else if r.applied.is_empty() {
                println!("Schema is at version {}: nothing to apply.", r.to_version);
            } else {
                let names: Vec<String> = migrations
                    .iter()
                    .filter(|m| r.applied.contains(&m.version))
                    .map(|m| format!("{} ({})", m.version, m.name))
                    .collect();
                println!(
                    "Migrated from version {} to {}: applied {}.",
                    r.from_version,
                    r.to_version,
                    names.join(", ")
                );
            }
        }
        Command::Shutdown => {
            let mut c = connect(cli)?;
            let pid = c.hello().pid;
            c.shutdown().map_err(on_client)?;
            if cli.json {
                println!("{}", json!({ "shutting_down": true, "pid": pid }));
            } else {
                println!("broker (pid {pid}) is shutting down");
            }
        }
    }
    Ok(())
}

fn read_stdin() -> Result<String, Failure> {
    let mut s = String::new();
    std::io::stdin().read_to_string(&mut s).context("cannot read statements from stdin")?;
    Ok(s)
}

/// Whether `--json` was given, for a command line clap refused: scanned up to
/// the first `--`, after which nothing is a flag.
fn json_requested() -> bool {
    std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json")
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            if e.use_stderr() && json_requested() {
                let text = e.render().to_string();
                let message = text.trim().strip_prefix("error: ").unwrap_or(text.trim());
                println!("{}", json!({ "error": { "kind": "usage", "message": message, "exit_code": 2 } }));
            }
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            if cli.json && !f.reported {
                println!(
                    "{}",
                    json!({ "error": { "kind": f.kind, "message": f.message, "exit_code": f.code } })
                );
            }
            eprintln!("litebroker: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use litebroker_client::protocol::ErrorInfo;

    #[test]
    fn each_broker_refusal_gets_its_exit_code() {
        let code = |kind, msg: &str| {
            let f = client_failure(&ClientError::Broker(ErrorInfo::new(kind, msg)), None);
            (f.code, f.kind, f.message)
        };
        let (c, k, m) = code(ErrorKind::WritesStopped, "the -wal file was deleted; restart the broker");
        assert_eq!((c, k), (3, "writes_stopped"));
        assert!(
            m.starts_with("the -wal file was deleted; restart the broker") && m.contains("Reads still work"),
            "{m}"
        );
        assert_eq!(code(ErrorKind::LimitExceeded, "too many clients").0, 6);
        assert_eq!(code(ErrorKind::Sql, "no such table").0, 1);
        let too_big = ClientError::Frame(FrameError::TooLarge { len: 1 << 30, max: 1 << 24 });
        assert_eq!(client_failure(&too_big, None).code, 6);
    }

    #[test]
    fn parameters_are_typed_by_their_json_form() {
        assert_eq!(parse_param("42"), Value::Integer(42));
        assert_eq!(parse_param("-5"), Value::Integer(-5));
        assert_eq!(parse_param("4.5"), Value::Real(4.5));
        assert_eq!(parse_param("-1.5e3"), Value::Real(-1500.0));
        assert_eq!(parse_param("12345678901234567890"), Value::Text("12345678901234567890".into()));
        assert_eq!(parse_param("-9223372036854775809"), Value::Text("-9223372036854775809".into()));
        assert_eq!(parse_param("\"42\""), Value::Text("42".into()));
        assert_eq!(parse_param("007"), Value::Text("007".into()));
        assert_eq!(parse_param("true"), Value::Integer(1));
        assert_eq!(parse_param("null"), Value::Null);
        assert_eq!(parse_param("--x"), Value::Text("--x".into()));
    }

    #[test]
    fn comments_and_semicolons_are_no_statements() {
        assert!(!has_statements(""));
        assert!(!has_statements(" ;\n-- a\n/* b */ ; -- c"));
        assert!(!has_statements("/* unterminated"));
        assert!(has_statements("-- a\nSELECT 1"));
        assert!(has_statements("/* a */ SELECT 1 -- b"));
    }
}
