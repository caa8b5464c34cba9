#![warn(missing_docs)]
//! Client library of litebroker.
//!
//! App instances link this crate. Writes go to the database's one broker
//! (`litebrokerd`) as request frames through [`Client`] or a [`WriteSession`];
//! reads go through the app's own read-only connection, [`Reader`], so they never
//! wait for the broker and keep working when no broker runs.
//! [`ConnectionFactory`] hands out both (`reader()`, `writer()`, `client()`), and
//! [`active_connections_count`] tracks what this process has open.
//! [`ConnectOptions::autostart`] (opt-in) starts a detached broker when none runs.
//!
//! # An app instance
//! (The README's "Use it in your app" shows the same code.)
//!
//! ```no_run
//! use std::time::Duration;
//! use litebroker_client::{
//!     new_request_id, retry_on_locked, AutoStart, ConnectOptions, ConnectionFactory, Idempotency,
//!     Migration, RetryPolicy, Statement, WriteOptions,
//! };
//!
//! fn main() -> Result<(), litebroker_client::ClientError> {
//!     let opts = ConnectOptions::new("data/app.db")
//!         .client_name("inventory") // shown by `litebroker connections`
//!         .expected_schema(2) // the broker refuses this app's writes below version 2
//!         .autostart(AutoStart::default()); // opt-in: start litebrokerd when none runs
//!     let factory = ConnectionFactory::with_options(opts);
//!
//!     // Applied once, by whichever instance asks first; the others find nothing to do.
//!     let mut client = factory.client()?;
//!     client.migrate(&[
//!         Migration::new(1, "skus", "CREATE TABLE skus (sku TEXT PRIMARY KEY, qty INTEGER NOT NULL DEFAULT 0)"),
//!         Migration::new(2, "sales", "CREATE TABLE sales (date TEXT NOT NULL, \
//!             sku TEXT NOT NULL REFERENCES skus(sku), qty INTEGER NOT NULL, UNIQUE (date, sku))"),
//!     ])?;
//!
//!     // Several writes that must land together: a write session
//!     // (`factory.writer()`); dropping it without commit() rolls everything back.
//!     let mut w = factory.writer(Some(Duration::from_secs(10)))?;
//!     w.execute("INSERT INTO skus (sku) VALUES (?1) ON CONFLICT DO NOTHING", &["A1".into()])?;
//!     w.execute("UPDATE skus SET qty = qty + 10 WHERE sku = ?1", &["A1".into()])?;
//!     w.commit()?;
//!
//!     // One atomic write, retried when the database is locked (backoff 0.5 s,
//!     // doubling, capped at 5 s, 3 retries). It adds to the quantity, so a repeat
//!     // would count twice: one request id kept across attempts makes it
//!     // exactly-once (the broker answers a repeat from its record instead of
//!     // applying it again).
//!     let sale = Statement::new(
//!         "INSERT INTO sales (date, sku, qty) VALUES (?1, ?2, ?3) \
//!          ON CONFLICT(date, sku) DO UPDATE SET qty = qty + excluded.qty",
//!         vec!["2026-11-28".into(), "A1".into(), 2_i64.into()],
//!     );
//!     let once = WriteOptions { request_id: Some(new_request_id()), ..WriteOptions::default() };
//!     retry_on_locked(&RetryPolicy::default(), Idempotency::WithRequestId, |_| {
//!         if client.is_broken() {
//!             client = factory.client()?;
//!         }
//!         client.execute_with(sale.clone(), once.clone())
//!     })?;
//!
//!     // Reads: this process's own read-only connection; they work without a broker.
//!     let reader = factory.reader()?;
//!     let rows = reader.query("SELECT sku, qty FROM skus WHERE qty > ?1", &[0_i64.into()])?;
//!     println!("{} SKUs in stock", rows.rows.len());
//!     Ok(())
//! }
//! ```

pub mod autostart;
mod client;
mod connect;
mod db;
mod env;
mod error;
mod factory;
mod ids;
pub mod migrate;
mod options;
mod params;
mod reader;
mod retry;
mod row;
mod tracking;
mod trust;

pub use autostart::StartOutcome;
pub use client::{connect_or_start, Client, WriteSession, DEFAULT_WRITER_TIMEOUT};
pub use db::{named_params, params, Call, Db, DbBuilder, Executed, Tx};
pub use env::TRUST_UID_ENV;
pub use error::{ClientError, Result, Untrusted, LOCKED_USER_TEXT};
pub use factory::ConnectionFactory;
pub use ids::{new_request_id, request_id_millis};
pub use litebroker_protocol as protocol;
pub use litebroker_protocol::rendezvous::{Location, DEFAULT_DB};
pub use litebroker_protocol::{ErrorKind, ExecResult, Statement, Value, WriteOptions};
pub use migrate::{migrations_from_dir, Migration, MigrationReport};
pub use options::{AutoStart, ConnectOptions, DEFAULT_TIMEOUT};
pub use params::{Bound, Params};
pub use reader::{Reader, Rows, READER_BUSY_TIMEOUT};
pub use retry::{is_retryable, retry_on_locked, Idempotency, RetryPolicy};
pub use row::{ColumnIndex, Row};
/// rusqlite, as this library uses it: its `Row`, `FromSql`/`ToSql` and `Connection`
/// in [`Db::read`], [`Db::query_row`] and parameters.
pub use rusqlite;
pub use rusqlite::types::FromSql;
pub use rusqlite::ToSql;
pub use tracking::active_connections_count;
