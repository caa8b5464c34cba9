#![warn(missing_docs)]
//! Client library of litebroker.
//!
//! App instances link this crate. Writes go to the database's one broker
//! (`litebrokerd`) as request frames through [`Client`] or a [`WriteSession`];
//! reads go through the app's own read-only connection, [`Reader`], so they never
//! wait for the broker and keep working when no broker runs.
//! [`ConnectionFactory`] bundles both in the shape of the notes' factory, and
//! [`active_connections_count`] tracks what this process has open.

mod client;
mod error;
mod factory;
mod ids;
pub mod locate;
pub mod migrate;
pub mod ops;
mod reader;
mod retry;
pub mod sqlvalue;
mod tracking;
#[cfg(windows)]
#[doc(hidden)]
pub mod windows;

pub use client::{Client, ConnectOptions, WriteSession, DEFAULT_TIMEOUT, DEFAULT_WRITER_TIMEOUT};
pub use error::{ClientError, Result, LOCKED_USER_TEXT};
pub use factory::ConnectionFactory;
pub use ids::new_request_id;
pub use litebroker_protocol as protocol;
pub use litebroker_protocol::{ErrorKind, ExecResult, Statement, Value, WriteOptions};
pub use locate::{Location, DEFAULT_DB};
pub use migrate::{migrations_from_dir, Migration, MigrationReport};
pub use reader::{Reader, Rows, READER_BUSY_TIMEOUT};
pub use retry::{is_retryable, retry_on_locked, Idempotency, RetryPolicy};
pub use tracking::active_connections_count;
