//! `litebroker`: ad-hoc writes, reads and operations against a database served by
//! `litebrokerd`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use litebroker_client::{AutoStart, Client, ClientError, ConnectOptions, Reader, Value};
use serde_json::{json, Value as Json};

pub(crate) use failure::{client_failure, fail, if_known, reported, Failure};
pub(crate) use output::{ms_to_text, output_width, print_exec, print_rows, ratio, rows_json, style};
use render::Format;

/// Writes through the database's broker, reads through a local read-only
/// connection, and operates the broker. Without a command, on a terminal: the
/// interactive shell (`litebroker shell`).
///
/// Parameters of exec and query: everything after the SQL is a parameter, never a
/// flag (also `-5`, `-`, `--`, `--x`), so give flags such as --json before the SQL. A
/// parameter is a JSON literal (42, 4.5, -1.5e3, null, true, "text") or, when not
/// valid JSON, text; an integer outside the 64-bit range stays text exactly as
/// typed (never a rounded REAL). Pass text that looks like a number or a flag as a
/// JSON string: '"007"', '"--x"'. `:name=value`, `@name=value` and `$name=value`
/// give the SQL's named parameters.
///
/// Exit codes: 0 ok, 1 SQL error, 2 usage, 3 broker not running or unreachable, or
/// refusing writes (reads still work), 4 database locked or timed out, 5
/// verification failed, 6 limit exceeded (too many clients, frame or answer too
/// large, too many parameters, statements or rows).
#[derive(Debug, Parser)]
#[command(name = "litebroker", version, after_help = EXAMPLES)]
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
    /// Output format of rows (query, exec … RETURNING, connections, backups, the shell);
    /// the default is table. --json stays one JSON document.
    #[arg(long, global = true, value_enum, value_name = "FORMAT")]
    format: Option<Format>,
    /// How NULL is shown (default: NULL in table, box and line; empty in csv and tsv).
    #[arg(long, global = true, value_name = "TEXT")]
    null: Option<String>,
    /// Fit table, box and line output to this many columns (0: never cut). Default:
    /// the terminal's width when stdout is a terminal, else never cut.
    #[arg(long, global = true, value_name = "COLS")]
    width: Option<usize>,
    /// A write with no broker running starts one (detached, race-safe: of several
    /// started at once, one serves) instead of exiting 3. The environment variable
    /// takes 1/0, true/false, yes/no, on/off.
    #[arg(long, global = true, env = "LITEBROKER_AUTOSTART",
          value_parser = clap::builder::BoolishValueParser::new())]
    autostart: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

const EXAMPLES: &str = "Examples:
  litebroker exec \"INSERT INTO skus (sku, qty) VALUES (?, ?)\" A1 -3
  litebroker --format csv query \"SELECT * FROM skus WHERE qty > :min\" :min=0
  litebroker shell";

#[derive(Debug, Subcommand)]
enum Command {
    /// Write through the broker: prints changes and last insert rowid, or the rows of
    /// a statement that returns rows (`… RETURNING …`). Several `;`-separated
    /// statements run atomically.
    #[command(after_help = "Examples:
  litebroker exec \"INSERT INTO skus (sku, qty) VALUES (?, ?)\" B2 -3
  litebroker exec \"UPDATE skus SET qty = :qty WHERE sku = :sku\" :sku=A1 :qty=7
  litebroker --format csv exec \"DELETE FROM skus WHERE qty < 0 RETURNING sku\"")]
    Exec {
        /// The SQL, then its parameters: everything after the SQL is a parameter,
        /// also `-5`, `-`, `--` or `--x` (give flags before the SQL). A parameter is
        /// a JSON literal (42, 4.5, null, "42", true) or, when not valid JSON, text;
        /// an integer beyond 64 bits stays text as typed; text that looks like a
        /// flag or a number is given as a JSON string ('"--x"'). `:name=value`,
        /// `@name=value` and `$name=value` give the SQL's named parameters.
        // One argument, so that clap takes everything after its first value (the SQL)
        // as values: with the SQL apart, a known flag right after it (`--json`) would
        // still be parsed as a flag.
        #[arg(required = true, num_args = 1.., value_names = ["SQL", "PARAMS"],
              allow_hyphen_values = true, trailing_var_arg = true)]
        sql_and_params: Vec<String>,
    },
    /// Read through a local read-only connection (works with no broker running).
    #[command(after_help = "Examples:
  litebroker query \"SELECT * FROM skus WHERE qty > ?\" -1
  litebroker --format box query \"SELECT sku, qty FROM skus WHERE sku = @sku\" @sku=A1
  litebroker --format jsonl query \"SELECT * FROM skus\" > skus.jsonl")]
    Query {
        /// The SQL, then its parameters, as for exec.
        #[arg(required = true, num_args = 1.., value_names = ["SQL", "PARAMS"],
              allow_hyphen_values = true, trailing_var_arg = true)]
        sql_and_params: Vec<String>,
    },
    /// Run the statements of FILE (or stdin with `-` or nothing) as one atomic
    /// transaction, streamed: the file is read and sent while it runs, so any size
    /// loads. Prints changes, the last insert rowid and the statement count; a
    /// failing statement applies nothing and its line is named.
    #[command(after_help = "Examples:
  litebroker batch load.sql
  generate-sql | litebroker batch -
  sqlite3 old.db .dump | litebroker --db new.db batch -")]
    Batch {
        /// A file of SQL statements, or `-` for stdin.
        file: Option<PathBuf>,
    },
    /// The interactive shell: statements ended by `;` (reads on the local
    /// connection, writes through the broker, `BEGIN … COMMIT` as one write
    /// session), dot-commands (`.help`), history. With stdin not a terminal it runs
    /// the script on stdin statement by statement and stops at the first error
    /// (exit code of that error, its line named).
    #[command(after_help = "Examples:
  litebroker shell
  litebroker --db data/app.db shell < script.sql
  litebroker --format csv shell < report.sql > report.csv")]
    Shell,
    /// The broker serving this database: pid, socket, protocol, uptime, clients.
    #[command(after_help = "Examples:
  litebroker status
  litebroker --json status")]
    Status,
    /// The broker's connected clients: pid, name, since, requests, writer.
    #[command(after_help = "Examples:
  litebroker connections
  litebroker --format csv connections")]
    Connections,
    /// Ask the broker to shut down cleanly.
    #[command(after_help = "Examples:
  litebroker shutdown
  litebroker --db ~/app/data/app.db shutdown")]
    Shutdown,
    /// Database and broker figures: schema version, tables, indices, sizes, row counts;
    /// broker pid, uptime, clients, commits, requests per commit, lock waits, last checkpoint.
    #[command(after_help = "Examples:
  litebroker stats
  litebroker --json stats")]
    Stats,
    /// `PRAGMA integrity_check` and `foreign_key_check`: prints OK or each problem (exit 5 on problems).
    #[command(after_help = "Examples:
  litebroker verify
  litebroker --json verify || echo \"damaged: exit $?\"")]
    Verify,
    /// An online, consistent copy into `<db folder>/backups/<stem>_<YYYYMMDD_HHMMSS>_<LABEL>.db` (UTC), then checked.
    #[command(after_help = "Examples:
  litebroker backup
  litebroker backup before_cleanup --keep 10")]
    Backup {
        /// Label in the file name.
        #[arg(default_value = "manual")]
        label: String,
        /// Keep only the newest N backups of this database.
        #[arg(long)]
        keep: Option<u32>,
    },
    /// The backups of this database, oldest first.
    #[command(after_help = "Examples:
  litebroker backups
  litebroker --format tsv backups")]
    Backups,
    /// Replace the database's content with FILE: verified first (exit 5 when corrupt or
    /// not SQLite), a safety backup taken, then copied while the broker holds the writer.
    /// With --from-replica, FILE is fetched first through `litestream restore` (from
    /// URL, or from the replica the broker replicates to) into a temporary file next
    /// to the database; with no broker running it goes into the database file
    /// directly when no process has it open.
    #[command(after_help = "Examples:
  litebroker restore data/backups/app_20261202_202911_manual.db
  litebroker --timeout 300 restore big-copy.db
  litebroker restore --from-replica --at 2026-12-03T10:00:00Z")]
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
    #[command(after_help = "Examples:
  litebroker replication
  litebroker --json replication")]
    Replication,
    /// Run a WAL checkpoint and report WAL frames, checkpointed frames and whether readers blocked it.
    #[command(after_help = "Examples:
  litebroker checkpoint
  litebroker checkpoint passive")]
    Checkpoint {
        /// passive, full, restart or truncate.
        #[arg(value_enum, default_value = "truncate")]
        mode: ModeArg,
    },
    /// Apply the numbered migrations of DIR (`0001_init.sql`, `0002_add_sales.sql`, …)
    /// above the database's `PRAGMA user_version`, each in one transaction.
    #[command(after_help = "Examples:
  litebroker migrate migrations/
  litebroker --autostart migrate migrations/")]
    Migrate {
        /// The folder of migration files.
        dir: PathBuf,
    },
    /// Import a CSV, TSV or JSON Lines file (or stdin with `-`) into table T as one
    /// atomic transaction: `imported N rows into T`. A malformed line or a refused
    /// row fails it (exit 1, naming the line), and nothing is imported.
    #[command(after_help = "Examples:
  litebroker import skus.csv --table skus
  litebroker import events.jsonl --table events --create
  litebroker import --format tsv - --table skus < skus.tsv")]
    Import(import::ImportArgs),
    /// Print the change feed: one line per committed transaction that touched a
    /// watched table (all tables when none is named), flushed at once; `--json`: one
    /// JSON object per line. Exits 0 after --count events or on Ctrl-C; 3 when no
    /// broker runs.
    #[command(after_help = "Examples:
  litebroker watch skus
  litebroker --json watch skus sales --count 10
  litebroker watch --since 1796300000000000-42")]
    Watch {
        /// Tables to watch (none: all).
        tables: Vec<String>,
        /// Resume after this cursor (`<epoch>-<seq>`, as printed): missed events are
        /// replayed, or a resync says they cannot be.
        #[arg(long)]
        since: Option<String>,
        /// Exit after this many events.
        #[arg(long)]
        count: Option<u64>,
        /// Print the broker's feed figures (subscribers, the ring) instead.
        #[arg(long)]
        stats: bool,
    },
    /// The troubleshooting steps, automated: broker, connections, WAL size,
    /// permissions, network filesystem, quick_check, backups. Exit 0 when healthy,
    /// 3 when only the broker is missing, 5 when another check failed.
    #[command(after_help = "Examples:
  litebroker doctor
  litebroker --json doctor")]
    Doctor,
    /// Print the completion script of a shell (bash, zsh, fish, powershell, elvish).
    #[command(after_help = "Examples:
  litebroker completions bash > ~/.local/share/bash-completion/completions/litebroker
  litebroker completions zsh > \"${fpath[1]}/_litebroker\"
  litebroker completions fish > ~/.config/fish/completions/litebroker.fish")]
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The broker's figures in the Prometheus text format (requests, latency
    /// histograms, queue, sessions, locks, WAL, checkpoints, memory); --json: one document.
    #[command(after_help = "Examples:
  litebroker metrics
  litebroker metrics | promtool check metrics")]
    Metrics,
    /// A live view of the broker, refreshed every second: writes/s, p50/p99 latency,
    /// queue depth, clients, WAL, last checkpoint. Leave with q or Ctrl-C.
    #[command(after_help = "Examples:
  litebroker top
  litebroker --db other/app.db top")]
    Top,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum ModeArg {
    Passive,
    Full,
    Restart,
    Truncate,
}

mod batch;
mod doctor;
mod failure;
mod import;
mod linemap;
mod metrics;
mod ops;
mod output;
mod params;
mod render;
mod replication;
mod shell;
mod statements;
mod top;
mod watch;

/// The SQL and the parameters of `exec`/`query`; a SQL without any statement
/// (empty, or only comments) is a usage error.
fn split_sql(sql_and_params: &[String]) -> Result<(&str, &[String]), Failure> {
    match sql_and_params.split_first() {
        Some((sql, params)) if statements::has_statements(sql) => Ok((sql, params)),
        _ => Err(fail(2, "usage", "no SQL statement given (only whitespace or comments)")),
    }
}

/// The values of `args` for `sql`: positional as typed, or, when any is named
/// (`:name=value`), placed where SQLite numbers each name, asked of a local
/// read-only connection.
fn param_values(cli: &Cli, sql: &str, args: &[String]) -> Result<Vec<Value>, Failure> {
    if !params::any_named(args) {
        return Ok(args.iter().map(|p| params::parse_param(p)).collect());
    }
    let reader = Reader::open(&cli.db).map_err(|e| client_failure(&e, Some(cli)))?;
    let classifier = statements::Classifier::open(reader.path()).map_err(|e| {
        fail(1, "error", format!("cannot open {} to resolve named parameters: {e}", reader.path().display()))
    })?;
    let prepared = classifier.prepare_all(sql).map_err(|e| {
        fail(
            1,
            "sql",
            format!(
                "cannot resolve named parameters: {e} (named parameters need each statement to prepare on \
                 its own against the database as it is now)"
            ),
        )
    })?;
    params::resolve(args, &prepared)
}

fn connect_options(cli: &Cli) -> ConnectOptions {
    let mut opts = ConnectOptions::new(&cli.db).client_name("litebroker-cli");
    opts.socket = cli.socket.clone();
    opts.request_timeout = Duration::from_secs_f64(cli.timeout);
    opts.connect_timeout = opts.connect_timeout.min(opts.request_timeout);
    opts
}

/// A broker connection for status and operations: never starts a broker.
fn connect(cli: &Cli) -> Result<Client, Failure> {
    Client::connect_with(&connect_options(cli)).map_err(|e| client_failure(&e, Some(cli)))
}

/// A broker connection for writes: with `--autostart`, a broker is started when
/// none runs (the library's on-demand start: of several started at once, the
/// database's lock lets one serve and all connect to it).
pub(crate) fn connect_for_write(cli: &Cli) -> Result<Client, Failure> {
    let mut opts = connect_options(cli);
    if cli.autostart {
        opts.autostart = Some(AutoStart::default());
    }
    Client::connect_with(&opts).map_err(|e| client_failure(&e, Some(cli)))
}

fn run(cli: &Cli) -> Result<(), Failure> {
    if !(cli.timeout.is_finite() && cli.timeout > 0.0) {
        return Err(fail(
            2,
            "usage",
            format!("--timeout must be a positive number of seconds, got {}", cli.timeout),
        ));
    }
    if cli.json && cli.format.is_some() {
        return Err(fail(2, "usage", "--json and --format exclude each other: --json is one JSON document"));
    }
    let on_client = |e: ClientError| client_failure(&e, Some(cli));
    let Some(command) = &cli.command else {
        // main() sends a bare `litebroker` to the shell only on a terminal.
        return shell::run(cli);
    };
    match command {
        Command::Exec { sql_and_params } => {
            let (sql, params) = split_sql(sql_and_params)?;
            let params = param_values(cli, sql, params)?;
            let r = connect_for_write(cli)?.execute(sql, &params).map_err(on_client)?;
            print_exec(cli, &r)?;
        }
        Command::Query { sql_and_params } => {
            let (sql, params) = split_sql(sql_and_params)?;
            let params = param_values(cli, sql, params)?;
            let reader = Reader::open(&cli.db).map_err(on_client)?;
            let rows = reader.query(sql, &params).map_err(on_client)?;
            if cli.json {
                println!("{}", rows_json(&rows.columns, &rows.rows));
            } else {
                print_rows(&rows.columns, &rows.rows, &style(cli))?;
            }
        }
        Command::Shell => {
            if cli.json {
                return Err(fail(
                    2,
                    "usage",
                    "the shell prints each result in its --format (or .mode); --json is one document \
                     of one command",
                ));
            }
            shell::run(cli)?;
        }
        Command::Completions { shell } => {
            clap_complete::generate(*shell, &mut Cli::command(), "litebroker", &mut std::io::stdout());
        }
        Command::Batch { file } => batch::run(cli, file.as_deref())?,
        Command::Status => {
            let mut client = connect(cli)?;
            let s = client.status().map_err(on_client)?;
            let health = ops::health(&mut client).map_err(on_client)?;
            let repl = replication::report(&mut client).map_err(on_client)?;
            let feed = watch::feed_report(&mut client).map_err(on_client)?;
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
                        "feed": watch::feed_json(feed.as_ref()),
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
                if let Some(f) = &feed {
                    println!("  change feed:  {}", watch::feed_line(f));
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
            } else if cli.format.is_some() {
                // --format prints the fields of --json, in that format.
                let columns: Vec<String> =
                    ["id", "name", "pid", "connected_unix_ms", "requests", "holds_writer"]
                        .map(String::from)
                        .to_vec();
                let rows: Vec<Vec<Value>> = list
                    .iter()
                    .map(|c| {
                        vec![
                            Value::Integer(c.id as i64),
                            Value::Text(c.name.clone()),
                            Value::Integer(i64::from(c.pid)),
                            Value::Integer(c.connected_unix_ms as i64),
                            Value::Integer(c.requests as i64),
                            Value::Integer(i64::from(c.holds_writer)),
                        ]
                    })
                    .collect();
                print_rows(&columns, &rows, &style(cli))?;
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
                print_rows(&columns, &rows, &style(cli))?;
            }
        }
        Command::Stats => ops::stats(cli)?,
        Command::Watch { tables, since, count, stats } => {
            watch::run(cli, tables, since.as_deref(), *count, *stats)?
        }
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
        Command::Import(args) => import::run(cli, args)?,
        Command::Doctor => doctor::doctor(cli)?,
        Command::Metrics => metrics::metrics(cli)?,
        Command::Top => top::top(cli)?,
        Command::Migrate { dir } => {
            let migrations = litebroker_client::migrations_from_dir(dir).map_err(|e| {
                fail(2, "usage", format!("cannot read migrations from {}: {e}", dir.display()))
            })?;
            let r = connect_for_write(cli)?.migrate(&migrations).map_err(on_client)?;
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

/// Whether `--json` was given, for a command line clap refused: scanned up to
/// the first `--`, after which nothing is a flag.
fn json_requested() -> bool {
    std::env::args_os().skip(1).take_while(|a| a != "--").any(|a| a == "--json")
}

fn main() -> ExitCode {
    let parsed = Cli::try_parse().and_then(|c| {
        // A bare `litebroker` is the shell on a terminal; elsewhere (a script, a
        // pipe) it stays the usage error it always was, never a read of stdin.
        let on_terminal = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
        if c.command.is_none() && !on_terminal {
            return Err(Cli::command().error(
                clap::error::ErrorKind::MissingSubcommand,
                "a command is required when stdin and stdout are not a terminal (the shell: litebroker shell)",
            ));
        }
        Ok(c)
    });
    let cli = match parsed {
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
    use litebroker_client::protocol::FrameError;
    use litebroker_client::ErrorKind;

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
    fn comments_and_semicolons_are_no_statements() {
        use statements::has_statements;
        assert!(!has_statements(""));
        assert!(!has_statements(" ;\n-- a\n/* b */ ; -- c"));
        assert!(!has_statements("/* unterminated"));
        assert!(has_statements("-- a\nSELECT 1"));
        assert!(has_statements("/* a */ SELECT 1 -- b"));
    }

    #[test]
    fn every_help_ends_with_two_or_three_examples() {
        let cli = Cli::command();
        let mut commands: Vec<&clap::Command> = cli.get_subcommands().collect();
        commands.push(&cli);
        for c in commands {
            let help = c.get_after_help().map(|h| h.to_string()).unwrap_or_default();
            let examples: Vec<&str> = help.lines().skip_while(|l| *l != "Examples:").skip(1).collect();
            assert!(
                (2..=3).contains(&examples.len()) && examples.iter().all(|l| l.starts_with("  ")),
                "{}: --help must end with two or three examples, has {help:?}",
                c.get_name()
            );
        }
        Cli::command().debug_assert();
    }
}
