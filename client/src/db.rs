//! [`Db`]: the one handle an app opens and shares. Reads run on this process's
//! own read-only connections, writes go to the broker; exactly-once, reconnects
//! and retries of a locked database are the handle's job, not the caller's.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use litebroker_protocol::{ExecResult, ManySummary, Statement, Value, WriteOptions};

use crate::autostart::AutoStart;
use crate::client::{Client, WriteSession};
use crate::error::{ClientError, Result};
use crate::options::ConnectOptions;
use crate::params::{bind_all, Bound, Params};
use crate::pool::{Pool, Pooled};
use crate::reader::Reader;
use crate::retry::RetryPolicy;
use crate::row::Row;
use crate::{migrate::Migration, MigrationReport};

/// What a write did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Executed {
    /// Rows inserted, updated or deleted.
    pub changes: u64,
    /// `last_insert_rowid()` after the write.
    pub last_insert_rowid: i64,
}

impl From<&ExecResult> for Executed {
    fn from(r: &ExecResult) -> Self {
        Executed { changes: r.changes, last_insert_rowid: r.last_insert_rowid }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Broker connections a handle keeps at most, by default.
const DEFAULT_CONNECTIONS: usize = 4;

/// Readers kept for reuse; more are opened while threads read at once.
const IDLE_READERS: usize = 8;

#[derive(Debug)]
struct Inner {
    opts: ConnectOptions,
    policy: RetryPolicy,
    pool: Pool,
    readers: Mutex<Vec<Reader>>,
}

/// The database, as an app sees it: open it once, clone it into every thread.
///
/// - **Reads** (`query_row`, `query_map`, [`Db::read`]) run on this process's own
///   read-only connections: they never wait for the broker and work without one.
/// - **Writes** (`execute`, `execute_batch`, [`Db::write`] sessions) go to the
///   database's broker. Each write that is not marked idempotent carries a
///   request id kept across the handle's reconnects and resends, so it applies
///   exactly once; a write answered "database locked" (nothing applied) is tried
///   again with the [`RetryPolicy`] within the call's deadline.
/// - `Db` is `Clone + Send + Sync`; its threads share a small pool of broker
///   connections instead of one socket.
///
/// ```no_run
/// use litebroker_client::{params, Db};
///
/// let db = Db::open("data/app.db")?;
/// db.execute("INSERT INTO skus (sku, qty) VALUES (?1, ?2)", params!["A1", 5])?;
/// let qty: i64 = db.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get(0))?;
/// let left = db.write(|tx| {
///     tx.execute("UPDATE skus SET qty = qty - ?1 WHERE sku = ?2", params![2, "A1"])?;
///     tx.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get::<_, i64>(0))
/// })?;
/// assert_eq!(left, qty - 2);
/// # Ok::<(), litebroker_client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Db {
    inner: Arc<Inner>,
}

/// Builds a [`Db`] with options beyond the defaults.
///
/// ```no_run
/// use std::time::Duration;
/// use litebroker_client::{AutoStart, Db};
///
/// let db = Db::builder("data/app.db")
///     .client_name("inventory")
///     .timeout(Duration::from_secs(10))
///     .autostart(AutoStart::default())
///     .open()?;
/// # Ok::<(), litebroker_client::ClientError>(())
/// ```
#[derive(Debug, Clone)]
pub struct DbBuilder {
    opts: ConnectOptions,
    policy: RetryPolicy,
    connections: usize,
}

impl DbBuilder {
    /// The name the broker shows for this app's connections.
    pub fn client_name(mut self, name: impl Into<String>) -> Self {
        self.opts.client_name = name.into();
        self
    }

    /// How long each call may take by default, waits and retries included (30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.opts.request_timeout = timeout;
        self
    }

    /// Starts a broker when none runs (see [`AutoStart`]).
    pub fn autostart(mut self, auto: AutoStart) -> Self {
        self.opts.autostart = Some(auto);
        self
    }

    /// The schema version this app was built for: the broker refuses its writes
    /// while the database is older.
    pub fn expected_schema(mut self, version: u32) -> Self {
        self.opts.expected_schema = Some(version);
        self
    }

    /// An explicit socket (or pipe) name instead of the one derived from the path.
    pub fn socket(mut self, socket: impl Into<String>) -> Self {
        self.opts.socket = Some(socket.into());
        self
    }

    /// How "database locked" answers are retried (default: 3 retries, 0.5 s
    /// doubling, capped at 5 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Most broker connections the handle keeps open at once (default 4).
    pub fn connections(mut self, n: usize) -> Self {
        self.connections = n.max(1);
        self
    }

    /// The lower-level connect options, for what the builder does not name.
    pub fn connect_options(mut self, opts: ConnectOptions) -> Self {
        self.opts = opts;
        self
    }

    /// Opens the handle. No broker is contacted yet (reads never need one).
    ///
    /// # Errors
    /// When the database's folder does not exist.
    pub fn open(self) -> Result<Db> {
        litebroker_protocol::rendezvous::canonical_db_path(&self.opts.db)?;
        Ok(Db::new(self.opts, self.policy, self.connections))
    }
}

/// Options of one call (see [`Db::with_timeout`], [`Db::idempotent`]).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    db: &'a Db,
    timeout: Duration,
    idempotent: bool,
}

impl Call<'_> {
    /// This call's deadline, waits and retries included.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The write has the same effect applied twice as once (an UPSERT that sets
    /// values): it is sent without a request id and may be resent freely.
    pub fn idempotent(mut self) -> Self {
        self.idempotent = true;
        self
    }

    /// As [`Db::execute`].
    ///
    /// # Errors
    /// As [`Db::execute`].
    pub fn execute(self, sql: &str, params: impl Params) -> Result<Executed> {
        let r = self.db.send(sql, params.bind()?, &self)?;
        Ok(Executed::from(&r))
    }

    /// As [`Db::execute_batch`].
    ///
    /// # Errors
    /// As [`Db::execute_batch`].
    pub fn execute_batch(self, sql: &str) -> Result<Executed> {
        let r = self.db.send(sql, Bound::Positional(Vec::new()), &self)?;
        Ok(Executed::from(&r))
    }

    /// As [`Db::execute_many`].
    ///
    /// # Errors
    /// As [`Db::execute_many`].
    pub fn execute_many<P: Params>(
        self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<ManySummary> {
        let (deadline, opts) = self.stream_options();
        let db = self.db;
        let rows = rows.into_iter().map(|p| p.bind().and_then(|b| db.positional(sql, b)));
        let mut pooled = db.checkout(deadline)?;
        pooled.client().execute_many_with(sql, rows, opts)
    }

    /// The deadline and options of a stream (executemany, streamed batch): the
    /// call's timeout over the whole stream, and always a request id: a stream
    /// is exactly-once whatever `idempotent` says, as it is never resent.
    fn stream_options(&self) -> (Instant, WriteOptions) {
        let opts = WriteOptions {
            timeout_ms: u32::try_from(self.timeout.as_millis()).unwrap_or(u32::MAX).max(1),
            request_id: Some(crate::ids::new_request_id()),
            idempotent: false,
        };
        (Instant::now() + self.timeout, opts)
    }

    /// As [`Db::execute_batch_stream`].
    ///
    /// # Errors
    /// As [`Db::execute_batch_stream`].
    pub fn execute_batch_stream(
        self,
        statements: impl IntoIterator<Item = Statement>,
    ) -> Result<ManySummary> {
        let (deadline, opts) = self.stream_options();
        let mut pooled = self.db.checkout(deadline)?;
        pooled.client().execute_batch_stream_with(statements.into_iter().map(Ok), opts)
    }

    /// As [`Db::execute_returning`].
    ///
    /// # Errors
    /// As [`Db::execute_returning`].
    pub fn execute_returning<T>(
        self,
        sql: &str,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let r = self.db.send(sql, params.bind()?, &self)?;
        r.rows.iter().map(|v| f(&Row::new(&r.columns, v))).collect()
    }
}

impl Db {
    /// Opens the database at `path` with default options.
    ///
    /// # Errors
    /// When the database's folder does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        Db::builder(path).open()
    }

    /// A handle with explicit connect options; the database's folder is checked
    /// when the handle is first used.
    pub fn from_options(opts: ConnectOptions) -> Db {
        Db::new(opts, RetryPolicy::default(), DEFAULT_CONNECTIONS)
    }

    fn new(opts: ConnectOptions, policy: RetryPolicy, connections: usize) -> Db {
        Db {
            inner: Arc::new(Inner {
                pool: Pool::new(connections),
                opts,
                policy,
                readers: Mutex::new(Vec::new()),
            }),
        }
    }

    /// A builder for options beyond the defaults.
    pub fn builder(path: impl AsRef<Path>) -> DbBuilder {
        DbBuilder {
            opts: ConnectOptions::new(path),
            policy: RetryPolicy::default(),
            connections: DEFAULT_CONNECTIONS,
        }
    }

    /// The canonical path of the database and how its broker is reached.
    pub fn options(&self) -> &ConnectOptions {
        &self.inner.opts
    }

    fn call(&self) -> Call<'_> {
        Call { db: self, timeout: self.inner.opts.request_timeout, idempotent: false }
    }

    /// One call with its own deadline: `db.with_timeout(d).execute(…)`.
    pub fn with_timeout(&self, timeout: Duration) -> Call<'_> {
        self.call().with_timeout(timeout)
    }

    /// One idempotent call: `db.idempotent().execute(…)` (see [`Call::idempotent`]).
    pub fn idempotent(&self) -> Call<'_> {
        self.call().idempotent()
    }

    // ----- writes ------------------------------------------------------------------

    /// Runs one statement at the broker, exactly once.
    ///
    /// # Errors
    /// [`ClientError::Broker`] with SQLite's error (nothing applied);
    /// [`ClientError::is_locked`] once the retry policy gave up;
    /// [`ClientError::is_broker_unavailable`] when no broker serves the database.
    ///
    /// ```no_run
    /// # use litebroker_client::{params, Db};
    /// # let db = Db::open("data/app.db")?;
    /// let done = db.execute("UPDATE skus SET qty = qty + ?1 WHERE sku = ?2", params![1, "A1"])?;
    /// println!("{} row(s) changed", done.changes);
    /// # Ok::<(), litebroker_client::ClientError>(())
    /// ```
    pub fn execute(&self, sql: &str, params: impl Params) -> Result<Executed> {
        self.call().execute(sql, params)
    }

    /// Pipelines one-shot writes on one of this `Db`'s broker connections for
    /// the span of `f` (see [`Pipeline`](crate::Pipeline)): each `submit` is sent
    /// without waiting for its answer, and the broker commits the writes in
    /// flight together. Answers not waited for inside `f` are read (and dropped)
    /// before the connection goes back to the pool. Not retried when the
    /// database is locked, nor resent after a lost connection: each write's
    /// error says so, naming its request id.
    ///
    /// # Errors
    /// No broker connection could be had, or `f`'s error.
    ///
    /// ```no_run
    /// # use litebroker_client::{Db, Value};
    /// # let db = Db::open("data/app.db")?;
    /// let applied = db.pipeline(|p| {
    ///     for i in 0..1000 {
    ///         let _ = p.submit("INSERT INTO events (n) VALUES (?1)", &[Value::Integer(i)])?;
    ///     }
    ///     Ok(p.wait_all().into_iter().filter(Result::is_ok).count())
    /// })?;
    /// # Ok::<(), litebroker_client::ClientError>(())
    /// ```
    pub fn pipeline<T>(&self, f: impl FnOnce(&mut crate::Pipeline<'_>) -> Result<T>) -> Result<T> {
        let deadline = Instant::now() + self.inner.opts.request_timeout;
        let mut pooled = self.checkout(deadline)?;
        let mut pipeline = pooled.client().pipeline();
        f(&mut pipeline)
    }

    /// Runs several `;`-separated statements as one transaction, exactly once.
    ///
    /// # Errors
    /// As [`Db::execute`]; nothing is applied when any statement fails.
    pub fn execute_batch(&self, sql: &str) -> Result<Executed> {
        self.call().execute_batch(sql)
    }

    /// Runs `sql`, one statement, once per row of `rows` as one transaction,
    /// exactly once: the rows stream to the broker in chunks while the iterator
    /// yields them (a million rows never sit in memory whole) and the answer is a
    /// summary. Each row converts as [`Db::execute`]'s parameters do. Not retried
    /// when the database is locked, nor resent after a lost answer: the rows were
    /// consumed (see [`Client::execute_many_with`]).
    ///
    /// # Errors
    /// [`ClientError::RowFailed`] naming the first failing row, counting from 0;
    /// otherwise as [`Db::execute`]. Nothing of the rows is applied then.
    ///
    /// ```no_run
    /// # use litebroker_client::{Db, Value};
    /// # let db = Db::open("data/app.db")?;
    /// let rows = (0..1_000_000i64).map(|i| vec![Value::from(format!("sku-{i}")), Value::from(i % 7)]);
    /// let done = db.execute_many("INSERT INTO skus (sku, qty) VALUES (?1, ?2)", rows)?;
    /// assert_eq!(done.rows, 1_000_000);
    /// # Ok::<(), litebroker_client::ClientError>(())
    /// ```
    pub fn execute_many<P: Params>(
        &self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<ManySummary> {
        self.call().execute_many(sql, rows)
    }

    /// Runs `statements` in order as one transaction, exactly once, streamed to
    /// the broker in parts while the iterator yields them (a load of a million
    /// statements never sits in memory whole); the answer is a summary
    /// ([`ManySummary::rows`]: statements applied), where [`Db::execute_batch`]
    /// answers for one SQL text. Each [`Statement`] may hold several
    /// `;`-separated statements; a `BEGIN … COMMIT` around the whole stream is
    /// honoured. Not retried when the database is locked, nor resent after a
    /// lost answer (see [`Client::execute_batch_stream_with`]).
    ///
    /// # Errors
    /// [`ClientError::StatementFailed`] naming the first failing statement,
    /// counting from 0; otherwise as [`Db::execute`]. Nothing is applied then.
    ///
    /// ```no_run
    /// # use litebroker_client::{Db, Statement};
    /// # let db = Db::open("data/app.db")?;
    /// let load = std::fs::read_to_string("skus.sql")?;
    /// let statements = load.lines().map(|line| Statement::new(line, vec![]));
    /// let done = db.execute_batch_stream(statements)?;
    /// println!("{} statements, {} rows changed", done.rows, done.changes);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn execute_batch_stream(
        &self,
        statements: impl IntoIterator<Item = Statement>,
    ) -> Result<ManySummary> {
        self.call().execute_batch_stream(statements)
    }

    /// Runs a write whose rows come back (`… RETURNING …`), exactly once, and maps
    /// each row with `f`.
    ///
    /// # Errors
    /// As [`Db::execute`], or `f`'s error.
    pub fn execute_returning<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        self.call().execute_returning(sql, params, f)
    }

    /// A write session: `f` runs with the writer held for this handle (the
    /// broker's `BEGIN IMMEDIATE`); reads inside it go through the broker and see
    /// its own writes. Committed when `f` returns `Ok`; rolled back when it
    /// returns `Err` or panics — nothing of it is then visible.
    ///
    /// # Errors
    /// `f`'s error; a failed commit; [`ClientError::is_locked`] when the writer
    /// could not be had within the deadline.
    ///
    /// ```no_run
    /// # use litebroker_client::{params, ClientError, Db};
    /// # let db = Db::open("data/app.db")?;
    /// db.write(|tx| {
    ///     let qty: i64 = tx.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get(0))?;
    ///     if qty < 2 {
    ///         return Err(ClientError::Parameter("not enough stock".into())); // rolls back
    ///     }
    ///     tx.execute("UPDATE skus SET qty = qty - 2 WHERE sku = ?1", ["A1"])?;
    ///     Ok(())
    /// })?;
    /// # Ok::<(), litebroker_client::ClientError>(())
    /// ```
    pub fn write<T, E>(
        &self,
        f: impl FnOnce(&mut Tx<'_>) -> std::result::Result<T, E>,
    ) -> std::result::Result<T, E>
    where
        E: From<ClientError>,
    {
        let timeout = self.inner.opts.request_timeout;
        let deadline = Instant::now() + timeout;
        let mut pooled = self.checkout(deadline)?;
        let start = self.retry_locked(deadline, || {
            pooled.client().begin_session(deadline.saturating_duration_since(Instant::now()))
        })?;
        let session = WriteSession::opened(pooled.client(), start);
        let mut tx = Tx { session: Some(session), db: self };
        let out = f(&mut tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Applies the migrations above the database's schema version, each once.
    ///
    /// # Errors
    /// The failing migration's error (it was rolled back; earlier ones stay).
    pub fn migrate(&self, migrations: &[Migration]) -> Result<MigrationReport> {
        let deadline = Instant::now() + self.inner.opts.request_timeout;
        self.checkout(deadline)?.client().migrate(migrations)
    }

    /// Watches `tables` through the change feed: a blocking iterator of the
    /// committed transactions that touched them, on a broker connection of its
    /// own (not the pool's), reconnecting by itself (see [`crate::watch`]).
    pub fn watch(&self, tables: &[&str]) -> crate::Watch {
        crate::Watch::new(self.inner.opts.clone(), tables.iter().map(|t| (*t).to_owned()).collect())
    }

    /// Watches every table (see [`Db::watch`]).
    pub fn watch_all(&self) -> crate::Watch {
        crate::Watch::new(self.inner.opts.clone(), Vec::new())
    }

    /// A broker connection of its own, for admin calls (status, stats, backup…).
    ///
    /// # Errors
    /// As [`Client::connect_with`].
    pub fn client(&self) -> Result<Client> {
        Client::connect_with(&self.inner.opts)
    }

    fn send(&self, sql: &str, bound: Bound, call: &Call<'_>) -> Result<ExecResult> {
        let deadline = Instant::now() + call.timeout;
        let params = self.positional(sql, bound)?;
        let stmt = Statement::new(sql, params);
        // One id for every attempt: a resend after a lost answer, or a retry after
        // "locked", is answered from the broker's record if it was applied.
        let id = (!call.idempotent).then(crate::ids::new_request_id);
        let mut pooled = self.checkout(deadline)?;
        self.retry_locked(deadline, || {
            let left = deadline.saturating_duration_since(Instant::now());
            let opts = WriteOptions {
                timeout_ms: u32::try_from(left.as_millis()).unwrap_or(u32::MAX).max(1),
                request_id: id,
                idempotent: call.idempotent,
            };
            pooled.client().execute_with(stmt.clone(), opts)
        })
    }

    /// Retries `attempt` while it is answered "database locked" (nothing applied),
    /// with the policy's delays, as long as the deadline allows another try.
    fn retry_locked<T>(&self, deadline: Instant, mut attempt: impl FnMut() -> Result<T>) -> Result<T> {
        let policy = self.inner.policy;
        let mut retry = 0;
        loop {
            match attempt() {
                Err(e) if e.is_locked() && retry < policy.max_attempts => {
                    retry += 1;
                    let delay = policy.delay(retry);
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    tracing::warn!(retry, delay_ms = delay.as_millis() as u64, "database locked; retrying");
                    std::thread::sleep(delay);
                }
                other => return other,
            }
        }
    }

    /// Named parameters numbered the way SQLite numbers them, by preparing the
    /// statement on this process's read connection.
    fn positional(&self, sql: &str, bound: Bound) -> Result<Vec<Value>> {
        match bound {
            Bound::Positional(v) => Ok(v),
            named => self.read(|c| {
                let stmt = c.prepare(sql)?;
                Ok(named.positional_for(&stmt))
            })?,
        }
    }

    fn checkout(&self, deadline: Instant) -> Result<Pooled<'_>> {
        self.inner.pool.checkout(&self.inner.opts, deadline)
    }

    // ----- reads -------------------------------------------------------------------

    /// Runs `f` on one of this process's read-only connections (the escape hatch to
    /// rusqlite's API). Finish every statement inside `f`: one left unfinished
    /// would keep a read transaction open and pin the WAL.
    ///
    /// # Errors
    /// When no read connection can be opened, or `f`'s error.
    pub fn read<T>(&self, f: impl FnOnce(&rusqlite::Connection) -> Result<T>) -> Result<T> {
        let reader = lock(&self.inner.readers).pop();
        let reader = match reader {
            Some(r) => r,
            None => Reader::open(&self.inner.opts.db)?,
        };
        let out = f(reader.connection());
        let mut idle = lock(&self.inner.readers);
        if idle.len() < IDLE_READERS {
            idle.push(reader);
        }
        out
    }

    /// The first row of a read, mapped with `f` (rusqlite's `Row`, typed `get`).
    ///
    /// # Errors
    /// SQLite's error; `QueryReturnedNoRows` when nothing matched.
    ///
    /// ```no_run
    /// # use litebroker_client::Db;
    /// # let db = Db::open("data/app.db")?;
    /// let qty: i64 = db.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get(0))?;
    /// # Ok::<(), litebroker_client::ClientError>(())
    /// ```
    pub fn query_row<T>(
        &self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let bound = params.bind()?;
        self.read(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            bind_bound(&mut stmt, bound)?;
            let mut rows = stmt.raw_query();
            match rows.next()? {
                Some(row) => Ok(f(row)?),
                None => Err(rusqlite::Error::QueryReturnedNoRows.into()),
            }
        })
    }

    /// Every row of a read, each mapped with `f`.
    ///
    /// # Errors
    /// SQLite's error or `f`'s.
    pub fn query_map<T>(
        &self,
        sql: &str,
        params: impl Params,
        mut f: impl FnMut(&rusqlite::Row<'_>) -> rusqlite::Result<T>,
    ) -> Result<Vec<T>> {
        let bound = params.bind()?;
        self.read(|c| {
            let mut stmt = c.prepare_cached(sql)?;
            bind_bound(&mut stmt, bound)?;
            let mut rows = stmt.raw_query();
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(f(row)?);
            }
            Ok(out)
        })
    }
}

fn bind_bound(stmt: &mut rusqlite::Statement<'_>, bound: Bound) -> Result<()> {
    let values = bound.positional_for(stmt)?;
    if values.len() != stmt.parameter_count() {
        return Err(ClientError::Parameter(format!(
            "the SQL has {} parameter placeholder(s) but {} parameter(s) were given",
            stmt.parameter_count(),
            values.len()
        )));
    }
    bind_all(stmt, &values)
}

/// A write session in progress (see [`Db::write`]).
pub struct Tx<'a> {
    session: Option<WriteSession<&'a mut Client>>,
    db: &'a Db,
}

impl std::fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tx").field("open", &self.session.is_some()).finish()
    }
}

impl<'a> Tx<'a> {
    fn session(&mut self) -> Result<&mut WriteSession<&'a mut Client>> {
        self.session.as_mut().ok_or_else(|| ClientError::Unexpected("the session has ended".into()))
    }

    fn run(&mut self, sql: &str, params: impl Params) -> Result<ExecResult> {
        let values = self.db.positional(sql, params.bind()?)?;
        self.session()?.execute(sql, &values)
    }

    /// Runs a statement in the session.
    ///
    /// # Errors
    /// SQLite's error (the session goes on without the statement's effects).
    pub fn execute(&mut self, sql: &str, params: impl Params) -> Result<Executed> {
        self.run(sql, params).map(|r| Executed::from(&r))
    }

    /// Runs several `;`-separated statements in the session, atomically.
    ///
    /// # Errors
    /// As [`Tx::execute`].
    pub fn execute_batch(&mut self, sql: &str) -> Result<Executed> {
        self.run(sql, ()).map(|r| Executed::from(&r))
    }

    /// The first row of a read in the session (it sees the session's writes).
    ///
    /// # Errors
    /// SQLite's error; `QueryReturnedNoRows` when nothing matched; `f`'s error.
    pub fn query_row<T>(
        &mut self,
        sql: &str,
        params: impl Params,
        f: impl FnOnce(&Row<'_>) -> Result<T>,
    ) -> Result<T> {
        let r = self.run(sql, params)?;
        let first = r.rows.first().ok_or(ClientError::Sqlite(rusqlite::Error::QueryReturnedNoRows))?;
        f(&Row::new(&r.columns, first))
    }

    /// Every row of a read in the session, each mapped with `f`.
    ///
    /// # Errors
    /// SQLite's error or `f`'s.
    pub fn query_map<T>(
        &mut self,
        sql: &str,
        params: impl Params,
        mut f: impl FnMut(&Row<'_>) -> Result<T>,
    ) -> Result<Vec<T>> {
        let r = self.run(sql, params)?;
        r.rows.iter().map(|v| f(&Row::new(&r.columns, v))).collect()
    }

    fn commit(&mut self) -> Result<()> {
        match self.session.take() {
            Some(s) => s.commit(),
            None => Ok(()),
        }
    }
}

impl Drop for Tx<'_> {
    /// A session not committed (an `Err` from the closure, or a panic) rolls back.
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.rollback();
        }
    }
}

/// A parameter list of any mix of types: `params![1, "A1", None::<i64>]`
/// (rusqlite's macro, re-exported).
pub use rusqlite::params;

/// Named parameters: `named_params! { ":sku": "A1", ":qty": 5 }` (rusqlite's
/// macro, re-exported).
pub use rusqlite::named_params;
