//! `ConnectionFactory`: the shape of a connection factory many apps were written
//! against (`reader()` for reads, `writer()` for an exclusive write), as a thin
//! layer over [`Db`]: `reader()` opens this process's own read-only connection,
//! `writer()` an exclusive write session at the broker.

use std::path::Path;
use std::time::Duration;

use crate::client::{Client, WriteSession, DEFAULT_WRITER_TIMEOUT};
use crate::db::Db;
use crate::error::Result;
use crate::options::ConnectOptions;
use crate::reader::Reader;

/// Hands out readers and writers for one database. New code can use [`Db`]
/// directly; [`ConnectionFactory::db`] gives the handle this factory wraps.
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
    db: Db,
}

impl ConnectionFactory {
    /// A factory for `db` with default connect options.
    pub fn new(db: impl AsRef<Path>) -> Self {
        Self::with_options(ConnectOptions::new(db))
    }

    /// A factory with explicit connect options. The folder is checked when the
    /// first reader or connection is opened.
    pub fn with_options(opts: ConnectOptions) -> Self {
        ConnectionFactory { db: Db::from_options(opts) }
    }

    /// The [`Db`] handle behind this factory.
    pub fn db(&self) -> &Db {
        &self.db
    }

    /// The connect options in use.
    pub fn options(&self) -> &ConnectOptions {
        self.db.options()
    }

    /// A read-only connection of this process (works without a broker).
    ///
    /// # Errors
    /// When the database cannot be opened.
    pub fn reader(&self) -> Result<Reader> {
        Reader::open(&self.options().db)
    }

    /// A new broker connection for one-shot writes and admin requests.
    ///
    /// # Errors
    /// As [`Client::connect_with`].
    pub fn client(&self) -> Result<Client> {
        self.db.client()
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
