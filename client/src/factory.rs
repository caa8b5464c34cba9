//! The `ConnectionFactory` an app asks for its connections: `reader()` opens the
//! app's own read-only connection, `writer()` an exclusive write session at the
//! broker.

use std::path::Path;
use std::time::Duration;

use crate::client::{Client, WriteSession, DEFAULT_WRITER_TIMEOUT};
use crate::error::Result;
use crate::options::ConnectOptions;
use crate::reader::Reader;

/// Hands out readers and writers for one database.
///
/// ```no_run
/// use litebroker_client::ConnectionFactory;
/// let factory = ConnectionFactory::new("data/app.db");
/// let rows = factory.reader()?.query("SELECT count(*) FROM skus", &[])?;
/// let mut w = factory.writer(None)?;
/// w.execute("INSERT INTO skus (sku, description) VALUES (?1, ?2)", &["A1".into(), "Test".into()])?;
/// w.commit()?;
/// # Ok::<(), litebroker_client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConnectionFactory {
    opts: ConnectOptions,
}

impl ConnectionFactory {
    /// A factory for `db` with default connect options.
    pub fn new(db: impl AsRef<Path>) -> Self {
        ConnectionFactory { opts: ConnectOptions::new(db) }
    }

    /// A factory with explicit connect options.
    pub fn with_options(opts: ConnectOptions) -> Self {
        ConnectionFactory { opts }
    }

    /// The connect options in use.
    pub fn options(&self) -> &ConnectOptions {
        &self.opts
    }

    /// A read-only connection of this process (works without a broker).
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn reader(&self) -> Result<Reader> {
        Reader::open(&self.opts.db)
    }

    /// A new broker connection for one-shot writes and admin requests.
    ///
    /// # Errors
    /// As [`Client::connect_with`].
    pub fn client(&self) -> Result<Client> {
        Client::connect_with(&self.opts)
    }

    /// An exclusive write session, waiting up to `timeout` (default 10 s) for the
    /// writer.
    ///
    /// # Errors
    /// As [`Client::session`].
    pub fn writer(&self, timeout: Option<Duration>) -> Result<WriteSession<Client>> {
        self.client()?.into_session(timeout.unwrap_or(DEFAULT_WRITER_TIMEOUT))
    }
}
