//! `inventory-demo`: one instance of an inventory application (SKUs, stock
//! transactions, daily sales), written the way a real app links litebroker.
//!
//! It opens one `Db` (optionally starting a broker on demand), migrates the
//! schema (`skus`, `transactions`, `sales`) through it, then runs a mix of
//! operations: reads through its own read-only connection, single writes through
//! the broker (a sales UPSERT that adds, which the handle makes exactly-once with
//! a request id kept across its resends and retries), and multi-step changes in
//! write sessions. It prints one JSON
//! summary line on stdout, which `scripts/launch-instances.sh` adds up and compares
//! with the database.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use litebroker_client::{
    params, AutoStart, Client, ClientError, ConnectOptions, Db, Migration, StartOutcome,
};
use serde_json::json;

/// One instance of the inventory application: migrate, then `--ops` operations,
/// then a JSON summary on stdout. Exit 0 when no operation failed.
#[derive(Debug, Parser)]
#[command(name = "inventory-demo")]
struct Args {
    /// The database file.
    #[arg(long, env = "LITEBROKER_DB", default_value = litebroker_client::DEFAULT_DB)]
    db: PathBuf,
    /// This instance's number (client name `inventory-<N>`, random seed).
    #[arg(long, default_value_t = 1)]
    instance: u32,
    /// Operations to run after migrating.
    #[arg(long, default_value_t = 50)]
    ops: u32,
    /// Start a broker when none runs (detached; see litebroker_client::autostart).
    #[arg(long)]
    autostart: bool,
    /// The litebrokerd to start with --autostart (default: LITEBROKERD, next to this program, PATH).
    #[arg(long)]
    broker: Option<PathBuf>,
    /// Print `{"waiting":…}`, then wait until FILE exists before connecting, so a
    /// launcher can release many instances at the same instant.
    #[arg(long, value_name = "FILE")]
    wait_for: Option<PathBuf>,
    /// Give up waiting for --wait-for after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    wait_secs: f64,
    /// Random seed (default: the instance number).
    #[arg(long)]
    seed: Option<u64>,
    /// Log level (error, warn, info, debug) or a tracing filter; logs go to stderr.
    #[arg(long, default_value = "warn")]
    log_level: String,
    /// Report this many units more than were sold (tests that the launcher's check can fail).
    #[arg(long, hide = true, default_value_t = 0)]
    misreport_units: i64,
}

/// The schema this build of the app needs: the broker refuses its writes until the
/// database is at this version, so an old database is migrated before use.
const SCHEMA_VERSION: u32 = 3;

fn migrations() -> Vec<Migration> {
    vec![
        Migration::new(
            1,
            "skus",
            "CREATE TABLE skus (
                id INTEGER PRIMARY KEY,
                sku TEXT NOT NULL UNIQUE,
                description TEXT NOT NULL,
                qty INTEGER NOT NULL DEFAULT 0
            );",
        ),
        Migration::new(
            2,
            "transactions",
            "CREATE TABLE transactions (
                id INTEGER PRIMARY KEY,
                sku TEXT NOT NULL REFERENCES skus(sku),
                delta INTEGER NOT NULL,
                kind TEXT NOT NULL CHECK (kind IN ('receipt', 'adjustment')),
                instance INTEGER NOT NULL,
                created_at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP
            );
            CREATE INDEX transactions_sku ON transactions(sku);",
        ),
        Migration::new(
            3,
            "sales",
            "CREATE TABLE sales (
                date TEXT NOT NULL,
                sku TEXT NOT NULL REFERENCES skus(sku),
                qty INTEGER NOT NULL CHECK (qty > 0),
                UNIQUE (date, sku)
            );",
        ),
    ]
}

/// The sales UPSERT: one row per (date, sku), quantities added up.
const SALE_UPSERT: &str = "INSERT INTO sales (date, sku, qty) VALUES (?1, ?2, ?3) \
                           ON CONFLICT(date, sku) DO UPDATE SET qty = qty + excluded.qty";

/// How many distinct SKUs instances draw from: small, so instances collide on the
/// same SKUs and (date, sku) rows, which is what the UPSERT is for.
const CATALOG: u64 = 24;

fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match run(&args) {
        Ok((summary, ok)) => {
            println!("{summary}");
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            println!(
                "{}",
                json!({ "instance": args.instance, "errors": 1, "first_error": format!("{e:#}") })
            );
            eprintln!("inventory-demo {}: {e:#}", args.instance);
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<(serde_json::Value, bool)> {
    if let Some(go) = &args.wait_for {
        wait_for_file(args, go)?;
    }
    let started = Instant::now();
    let mut app = App::connect(args)?;
    let report = app.db.migrate(&migrations()).with_context(|| format!("migrating {}", args.db.display()))?;
    let mut rng = Rng::new(args.seed.unwrap_or(u64::from(args.instance)));
    let dates = recent_dates(3);
    for n in 0..args.ops {
        // The first operation adds a SKU, so sales and movements have one to use.
        let kind = if n == 0 { Op::AddSku } else { Op::pick(&mut rng) };
        let result = match kind {
            Op::AddSku => app.add_sku(&mut rng),
            Op::Sale => app.sale(&mut rng, &dates),
            Op::Movement => app.movement(&mut rng, args.instance),
            Op::Read => app.read_check(),
        };
        *app.stats.ops.entry(kind.name()).or_default() += 1;
        if let Err(e) = result {
            app.stats.errors += 1;
            tracing::error!(op = kind.name(), "{e:#}");
            app.stats.first_error.get_or_insert_with(|| format!("{}: {e:#}", kind.name()));
        }
    }
    let s = &app.stats;
    let sold: BTreeMap<String, i64> = s.sold.iter().map(|((d, k), q)| (format!("{d}|{k}"), *q)).collect();
    let summary = json!({
        "instance": args.instance,
        "pid": std::process::id(),
        "broker_pid": app.client.hello().pid,
        "broker": app.outcome.as_str(),
        "schema_version": report.to_version,
        "migrations_applied": report.applied,
        "ops": s.ops,
        "skus_added": s.skus_added,
        "units_sold": s.units_sold + args.misreport_units,
        "sold": sold,
        "movements": s.movements,
        "stock_delta": s.stock_delta,
        "reads": s.reads,
        "retries": s.retries,
        "errors": s.errors,
        "first_error": s.first_error,
        "elapsed_ms": started.elapsed().as_millis() as u64,
    });
    Ok((summary, s.errors == 0))
}

fn wait_for_file(args: &Args, go: &Path) -> anyhow::Result<()> {
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "{}",
            json!({ "waiting": true, "instance": args.instance, "pid": std::process::id() })
        )?;
        out.flush()?;
    }
    let deadline = Instant::now() + Duration::try_from_secs_f64(args.wait_secs).context("--wait-secs")?;
    while !go.exists() {
        if Instant::now() >= deadline {
            bail!("{} did not appear within {} s", go.display(), args.wait_secs);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Op {
    AddSku,
    Sale,
    Movement,
    Read,
}

impl Op {
    /// Mostly sales, as in a shop: 15 % new SKUs, 50 % sales, 25 % stock movements,
    /// 10 % consistency reads.
    fn pick(rng: &mut Rng) -> Op {
        match rng.below(100) {
            0..=14 => Op::AddSku,
            15..=64 => Op::Sale,
            65..=89 => Op::Movement,
            _ => Op::Read,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Op::AddSku => "add_sku",
            Op::Sale => "sale",
            Op::Movement => "movement",
            Op::Read => "read",
        }
    }
}

#[derive(Debug, Default)]
struct Stats {
    ops: BTreeMap<&'static str, u64>,
    skus_added: u64,
    units_sold: i64,
    sold: BTreeMap<(String, String), i64>,
    movements: u64,
    stock_delta: i64,
    reads: u64,
    /// Retries are the `Db` handle's job now (locks, lost answers); the field stays
    /// in the summary for the launcher, always 0.
    retries: u64,
    errors: u64,
    first_error: Option<String>,
}

struct App {
    db: Db,
    /// The connection that found (or started) the broker: admin facts only.
    client: Client,
    outcome: StartOutcome,
    stats: Stats,
}

impl App {
    fn connect(args: &Args) -> anyhow::Result<App> {
        let mut opts = ConnectOptions::new(&args.db)
            .client_name(format!("inventory-{}", args.instance))
            .expected_schema(SCHEMA_VERSION);
        let (client, outcome) = if args.autostart {
            let auto = AutoStart { broker_path: args.broker.clone(), ..AutoStart::default() };
            opts = opts.autostart(auto.clone());
            litebroker_client::connect_or_start(&opts, &auto)
        } else {
            Client::connect_with(&opts).map(|c| (c, StartOutcome::AlreadyRunning))
        }
        .with_context(|| format!("connecting to the broker of {}", args.db.display()))?;
        Ok(App { db: Db::from_options(opts), client, outcome, stats: Stats::default() })
    }

    fn add_sku(&mut self, rng: &mut Rng) -> anyhow::Result<()> {
        let n = rng.below(CATALOG);
        // DO NOTHING on a known SKU: applying it twice has no further effect.
        let r = self.db.idempotent().execute(
            "INSERT INTO skus (sku, description) VALUES (?1, ?2) ON CONFLICT(sku) DO NOTHING",
            (format!("SKU-{n:03}"), format!("Catalog item {n}")),
        )?;
        self.stats.skus_added += r.changes;
        Ok(())
    }

    fn sale(&mut self, rng: &mut Rng, dates: &[String]) -> anyhow::Result<()> {
        let sku = self.pick_sku(rng)?;
        let date = dates[rng.below(dates.len() as u64) as usize].clone();
        let qty = 1 + rng.below(5) as i64;
        // The UPSERT adds to the quantity, so a repeat would count twice: the handle
        // sends it with one request id across its attempts, and the broker answers
        // a repeat from its record.
        self.db.execute(SALE_UPSERT, params![date, sku, qty])?;
        self.stats.units_sold += qty;
        *self.stats.sold.entry((date, sku)).or_default() += qty;
        Ok(())
    }

    /// A stock movement is two writes that must land together: the ledger row and the
    /// SKU's quantity. One write session makes them atomic; if anything fails the
    /// session is rolled back and neither is visible.
    fn movement(&mut self, rng: &mut Rng, instance: u32) -> anyhow::Result<()> {
        let sku = self.pick_sku(rng)?;
        let (kind, delta) = if rng.below(10) < 7 {
            ("receipt", 1 + rng.below(10) as i64)
        } else {
            ("adjustment", -(1 + rng.below(3) as i64))
        };
        self.db.write(|tx| {
            tx.execute(
                "INSERT INTO transactions (sku, delta, kind, instance) VALUES (?1, ?2, ?3, ?4)",
                params![sku, delta, kind, instance],
            )?;
            let updated = tx.execute("UPDATE skus SET qty = qty + ?1 WHERE sku = ?2", params![delta, sku])?;
            if updated.changes != 1 {
                // Cannot happen with the foreign key in place; an error rolls back
                // rather than commit half a movement if it ever does.
                return Err(ClientError::Unexpected(format!("SKU {sku} vanished during a movement")));
            }
            Ok(())
        })?;
        self.stats.movements += 1;
        self.stats.stock_delta += delta;
        Ok(())
    }

    /// Reads through this instance's own connection, never the broker. Every
    /// movement is atomic, so any snapshot has each SKU's quantity equal to the sum
    /// of its ledger; a mismatch would be a torn (half-committed) movement.
    fn read_check(&mut self) -> anyhow::Result<()> {
        let torn: i64 = self.db.query_row(
            "SELECT count(*) FROM skus s \
             WHERE s.qty <> (SELECT coalesce(sum(delta), 0) FROM transactions t WHERE t.sku = s.sku)",
            (),
            |r| r.get(0),
        )?;
        self.stats.reads += 1;
        if torn != 0 {
            bail!("stock does not match the ledger for {torn} SKUs");
        }
        Ok(())
    }

    /// A SKU that exists, chosen through this instance's own read-only connection.
    fn pick_sku(&self, rng: &mut Rng) -> anyhow::Result<String> {
        let skus = self.db.query_map("SELECT sku FROM skus ORDER BY sku", (), |r| r.get::<_, String>(0))?;
        if skus.is_empty() {
            bail!("no SKU exists yet");
        }
        Ok(skus[rng.below(skus.len() as u64) as usize].clone())
    }
}

/// Today and the days before it (UTC, `YYYY-MM-DD`): sales of several instances
/// land on the same few days, so their UPSERTs meet on the same rows.
fn recent_dates(n: i64) -> Vec<String> {
    let days = (litebroker_client::protocol::host::unix_ms() / 86_400_000) as i64;
    (0..n).map(|back| civil_date(days - back)).collect()
}

/// Days since 1970-01-01 to a calendar date.
fn civil_date(days: i64) -> String {
    let (y, m, d) = litebroker_server::ops::civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

/// xorshift64*: reproducible per instance, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_date(0), "1970-01-01");
        assert_eq!(civil_date(19_782), "2024-02-29");
        assert_eq!(civil_date(20_000), "2024-10-04");
    }
}
