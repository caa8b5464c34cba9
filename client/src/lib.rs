#![warn(missing_docs)]
//! Client library of litebroker.
//!
//! App instances link this crate and open one [`Db`]: writes go to the
//! database's one broker (`litebrokerd`), exactly once, with retries of a
//! locked database handled for them; reads run on the app's own read-only
//! connections with rusqlite's API, so they never wait for the broker and keep
//! working when no broker runs. [`Db::write`] holds the writer for a closure (a
//! write session). The lower-level [`Client`] carries admin requests (status,
//! stats, backup, …); [`ConnectionFactory`] keeps the `reader()`/`writer()` shape
//! over a `Db`; [`active_connections_count`] tracks what this process has open;
//! [`DbBuilder::autostart`] (opt-in) starts a detached broker when none runs.
//!
//! # An app instance
//!
//! ```no_run
//! use std::time::Duration;
//! use litebroker_client::{params, AutoStart, Db, Migration};
//!
//! fn main() -> Result<(), litebroker_client::ClientError> {
//!     let db = Db::builder("data/app.db")
//!         .client_name("inventory") // shown by `litebroker connections`
//!         .expected_schema(2) // the broker refuses this app's writes below version 2
//!         .autostart(AutoStart::default()) // opt-in: start litebrokerd when none runs
//!         .timeout(Duration::from_secs(30)) // each call, waits and retries included
//!         .open()?;
//!
//!     // Applied once, by whichever instance asks first.
//!     db.migrate(&[
//!         Migration::new(1, "skus", "CREATE TABLE skus (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL DEFAULT 0)"),
//!         Migration::new(2, "sales", "CREATE TABLE sales (date TEXT NOT NULL, \
//!             sku TEXT NOT NULL REFERENCES skus(sku), qty INTEGER NOT NULL, UNIQUE (date, sku))"),
//!     ])?;
//!
//!     // Adds to a total, so applying it twice would count twice: the handle sends
//!     // it with a request id kept across its resends and retries — exactly once.
//!     db.execute(
//!         "INSERT INTO sales (date, sku, qty) VALUES (?1, ?2, ?3) \
//!          ON CONFLICT(date, sku) DO UPDATE SET qty = qty + excluded.qty",
//!         params!["2026-11-28", "A1", 2],
//!     )?;
//!
//!     // Several writes that must land together.
//!     db.write(|tx| {
//!         tx.execute("INSERT INTO skus (sku) VALUES (?1) ON CONFLICT DO NOTHING", ["A1"])?;
//!         tx.execute("UPDATE skus SET qty = qty + 10 WHERE sku = ?1", ["A1"])
//!     })?;
//!
//!     let in_stock: i64 = db.query_row("SELECT count(*) FROM skus WHERE qty > ?1", [0], |r| r.get(0))?;
//!     println!("{in_stock} SKUs in stock");
//!     Ok(())
//! }
//! ```

mod admin;
pub mod autostart;
mod client;
mod connect;
mod db;
mod env;
mod error;
mod factory;
mod ids;
mod many;
pub mod migrate;
mod options;
mod params;
mod pipeline;
mod pool;
mod reader;
mod retry;
mod row;
mod tracking;
mod trust;
pub mod watch;

pub use autostart::StartOutcome;
pub use client::{connect_or_start, Client, SessionStart, WriteSession, DEFAULT_WRITER_TIMEOUT};
pub use db::{named_params, params, Call, Db, DbBuilder, Executed, Tx};
pub use env::TRUST_UID_ENV;
pub use error::{ClientError, Result, Untrusted, LOCKED_USER_TEXT};
pub use factory::ConnectionFactory;
pub use ids::{new_request_id, request_id_millis};
pub use litebroker_protocol as protocol;
pub use litebroker_protocol::rendezvous::{Location, DEFAULT_DB};
pub use litebroker_protocol::{ChangeEvent, Cursor, ResyncReason, TableChange};
pub use litebroker_protocol::{ErrorKind, ExecResult, ManySummary, Statement, Value, WriteOptions};
pub use migrate::{migrations_from_dir, Migration, MigrationReport};
pub use options::{AutoStart, ConnectOptions, DEFAULT_TIMEOUT};
pub use params::{Bound, Params};
pub use pipeline::{Pending, Pipeline, DEFAULT_DEPTH as PIPELINE_DEPTH};
pub use reader::{Reader, Rows, READER_BUSY_TIMEOUT};
pub use retry::{is_retryable, retry_on_locked, Idempotency, RetryPolicy};
pub use row::{ColumnIndex, Row};
/// rusqlite, as this library uses it: its `Row`, `FromSql`/`ToSql` and `Connection`
/// in [`Db::read`], [`Db::query_row`] and parameters.
pub use rusqlite;
pub use rusqlite::types::FromSql;
pub use rusqlite::ToSql;
pub use tracking::active_connections_count;
pub use watch::Watch;

/// The README's example compiles against this library.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeExample;
