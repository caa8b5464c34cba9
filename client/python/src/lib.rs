//! `litebroker._litebroker`: the native half of the Python package `litebroker`.
//!
//! It is deliberately small: a `Db` (the client library's [`Db`] handle: reads on
//! this process's own read-only connections, one-shot writes at the broker exactly
//! once) and a `Session` (a write session on a broker connection kept across
//! commits). Everything `sqlite3`-shaped — connections, cursors, rows, the
//! exception classes, the retry decorator — is Python, in `python/litebroker/`.
//!
//! Every call that may block (the broker, SQLite, a lock wait) runs with the GIL
//! released. Errors are raised as the Python package's own exception classes,
//! which it hands over once at import (`_register_errors`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use litebroker_client::protocol::sql::bind_params;
use litebroker_client::{
    active_connections_count, AutoStart, ChangeEvent, Client, ClientError, ConnectOptions, Cursor, Db,
    ErrorKind, ExecResult, RetryPolicy, Value, Watch, LOCKED_USER_TEXT,
};
use pyo3::exceptions::{PyOverflowError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyMemoryView, PyString, PyTuple,
};

// ----- errors -------------------------------------------------------------------

/// The package's exception classes by name, handed over by `_register_errors`.
static ERRORS: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

/// An exception of the package's class `class` (falling back to RuntimeError
/// before the classes are registered), with `detail`, `kind` and
/// `sqlite_errorcode` attributes set.
fn raise(py: Python<'_>, class: &str, message: String, detail: &ClientError) -> PyErr {
    let Some(errors) = ERRORS.get(py) else {
        return PyRuntimeError::new_err(message);
    };
    let make = || -> PyResult<PyErr> {
        let cls =
            errors.bind(py).get_item(class)?.ok_or_else(|| PyRuntimeError::new_err(class.to_owned()))?;
        let exc = cls.call1((message.clone(),))?;
        exc.setattr("detail", detail.to_string())?;
        exc.setattr("kind", detail.kind().map(|k| k.as_str()))?;
        exc.setattr("sqlite_errorcode", detail.sqlite_code())?;
        Ok(PyErr::from_value(exc))
    };
    make().unwrap_or_else(|e| e)
}

/// The Python exception for a client error: the DB-API class `sqlite3` would
/// raise for the same failure, or one of the package's own subclasses.
fn py_err(py: Python<'_>, e: ClientError) -> PyErr {
    if e.is_locked() {
        return raise(py, "DatabaseLockedError", LOCKED_USER_TEXT.to_owned(), &e);
    }
    if e.is_broker_unavailable() || matches!(e, ClientError::AutoStart(_)) {
        return raise(py, "BrokerUnavailableError", e.to_string(), &e);
    }
    let class = match &e {
        ClientError::Broker(info)
        | ClientError::RowFailed { error: info, .. }
        | ClientError::StatementFailed { error: info, .. } => match info.kind {
            ErrorKind::Constraint => "IntegrityError",
            ErrorKind::Timeout => "WriterTimeoutError",
            ErrorKind::NotAllowed => "ProgrammingError",
            ErrorKind::LimitExceeded => "DataError",
            ErrorKind::Protocol | ErrorKind::Incompatible => "InterfaceError",
            ErrorKind::Internal => "InternalError",
            ErrorKind::VerificationFailed => "DatabaseError",
            _ => "OperationalError",
        },
        ClientError::Sqlite(s) => match s {
            rusqlite::Error::InvalidParameterCount(..)
            | rusqlite::Error::InvalidParameterName(_)
            | rusqlite::Error::MultipleStatement => "ProgrammingError",
            _ => match s.sqlite_error_code() {
                Some(rusqlite::ErrorCode::ConstraintViolation) => "IntegrityError",
                Some(rusqlite::ErrorCode::ApiMisuse) => "ProgrammingError",
                _ => "OperationalError",
            },
        },
        ClientError::Parameter(_) | ClientError::Column(_) => "ProgrammingError",
        ClientError::PoolExhausted(_) => "WriterTimeoutError",
        ClientError::Frame(_) | ClientError::Unexpected(_) => "InterfaceError",
        _ => "OperationalError",
    };
    let message = match &e {
        ClientError::Broker(info) => info.message.clone(),
        other => other.to_string(),
    };
    raise(py, class, message, &e)
}

fn programming(py: Python<'_>, message: String) -> PyErr {
    let e = ClientError::Parameter(message.clone());
    raise(py, "ProgrammingError", message, &e)
}

// ----- values -------------------------------------------------------------------

/// One Python parameter as a SQLite value. `at` names it in errors: `1` for the
/// first positional parameter (as `sqlite3` counts), `:name` for a named one.
fn to_value(v: &Bound<'_, PyAny>, at: &str) -> PyResult<Value> {
    if v.is_none() {
        Ok(Value::Null)
    } else if let Ok(b) = v.cast::<PyBool>() {
        Ok(Value::Integer(i64::from(b.is_true())))
    } else if v.is_instance_of::<PyInt>() {
        v.extract::<i64>().map(Value::Integer).map_err(|_| {
            PyOverflowError::new_err(format!(
                "parameter {at}: Python int too large to convert to SQLite INTEGER (64-bit signed, \
                 -9223372036854775808 to 9223372036854775807)"
            ))
        })
    } else if v.is_instance_of::<PyFloat>() {
        Ok(Value::Real(v.extract::<f64>()?))
    } else if let Ok(s) = v.cast::<PyString>() {
        Ok(Value::Text(s.to_cow()?.into_owned()))
    } else if let Ok(b) = v.cast::<PyBytes>() {
        Ok(Value::Blob(b.as_bytes().to_vec()))
    } else if let Ok(b) = v.cast::<PyByteArray>() {
        Ok(Value::Blob(b.to_vec()))
    } else if v.cast::<PyMemoryView>().is_ok() {
        let bytes = v.call_method0("tobytes")?;
        Ok(Value::Blob(bytes.cast::<PyBytes>()?.as_bytes().to_vec()))
    } else {
        let ty = v.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
        Err(PyTypeError::new_err(format!(
            "parameter {at} is of unsupported type '{ty}': use int, float, str, bytes, bytearray, \
             memoryview, bool or None"
        )))
    }
}

fn to_py<'py>(py: Python<'py>, v: &Value) -> PyResult<Bound<'py, PyAny>> {
    Ok(match v {
        Value::Null => py.None().into_bound(py),
        Value::Integer(i) => i.into_pyobject(py)?.into_any(),
        Value::Real(f) => f.into_pyobject(py)?.into_any(),
        Value::Text(t) => PyString::new(py, t).into_any(),
        Value::Blob(b) => PyBytes::new(py, b).into_any(),
    })
}

/// The names of a statement's parameters in SQLite's numbering (`None` for an
/// anonymous `?`), from preparing it on this process's read connection; when the
/// statement cannot be prepared there (a table created earlier in the same write
/// session), from scanning the SQL.
fn parameter_names(db: &Db, sql: &str) -> Vec<Option<String>> {
    let prepared = db.read(|c| {
        let stmt = c.prepare_cached(sql)?;
        Ok((1..=stmt.parameter_count()).map(|i| stmt.parameter_name(i).map(str::to_owned)).collect())
    });
    prepared.unwrap_or_else(|_| scan_parameter_names(sql))
}

/// Named parameters (`:a`, `@a`, `$a`) in order of first appearance, outside
/// quotes and comments: SQLite's numbering when the SQL has no `?NNN`.
fn scan_parameter_names(sql: &str) -> Vec<Option<String>> {
    let b = sql.as_bytes();
    let mut out: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < b.len() && b[i] != q {
                    i += 1;
                }
            }
            b'[' => {
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
            }
            b'-' if b.get(i + 1) == Some(&b'-') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                    i += 1;
                }
                i += 1;
            }
            b'?' => out.push(None),
            b':' | b'@' | b'$' => {
                let start = i;
                i += 1;
                while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] >= 0x80) {
                    i += 1;
                }
                let name = String::from_utf8_lossy(&b[start..i]).into_owned();
                if i > start + 1 && !out.iter().any(|n| n.as_deref() == Some(&name)) {
                    out.push(Some(name));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Python parameters (a sequence, a mapping, or None) as positional values for `sql`.
fn bind(py: Python<'_>, db: &Db, sql: &str, params: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<Value>> {
    let Some(params) = params.filter(|p| !p.is_none()) else {
        return Ok(Vec::new());
    };
    if let Ok(t) = params.cast::<PyTuple>() {
        return t.iter().enumerate().map(|(i, v)| to_value(&v, &(i + 1).to_string())).collect();
    }
    if let Ok(l) = params.cast::<PyList>() {
        return l.iter().enumerate().map(|(i, v)| to_value(&v, &(i + 1).to_string())).collect();
    }
    if params.is_instance_of::<PyString>() || params.is_instance_of::<PyBytes>() {
        return Err(PyTypeError::new_err(
            "parameters must be a sequence (tuple, list) or a mapping (dict), not a str or bytes",
        ));
    }
    let is_mapping = params.hasattr("keys")? && params.hasattr("__getitem__")?;
    if is_mapping {
        let names = py.detach(|| parameter_names(db, sql));
        return names
            .into_iter()
            .enumerate()
            .map(|(i, name)| {
                let Some(name) = name else {
                    return Err(programming(
                        py,
                        format!(
                            "parameter {} is a '?' placeholder, but the parameters are a mapping: use \
                             :name placeholders or a sequence",
                            i + 1
                        ),
                    ));
                };
                let key = &name[1..];
                match params.get_item(key) {
                    Ok(v) => to_value(&v, &name),
                    Err(e) if e.is_instance_of::<pyo3::exceptions::PyKeyError>(py) => Err(programming(
                        py,
                        format!("You did not supply a value for binding parameter {name}."),
                    )),
                    Err(e) => Err(e),
                }
            })
            .collect();
    }
    match params.try_iter() {
        Ok(it) => it.enumerate().map(|(i, v)| to_value(&v?, &(i + 1).to_string())).collect(),
        Err(_) => {
            let ty = params.get_type().name().map(|n| n.to_string()).unwrap_or_else(|_| "?".into());
            Err(PyTypeError::new_err(format!(
                "parameters must be a sequence (tuple, list) or a mapping (dict), not '{ty}'"
            )))
        }
    }
}

/// `(columns or None, rows, changes, lastrowid)`: what a cursor is filled from.
type Answer = (Option<Vec<String>>, Vec<Vec<Value>>, u64, i64);

fn answer(r: ExecResult) -> Answer {
    let columns = (!r.columns.is_empty()).then_some(r.columns);
    (columns, r.rows, r.changes, r.last_insert_rowid)
}

fn answer_to_py<'py>(py: Python<'py>, a: Answer) -> PyResult<Bound<'py, PyTuple>> {
    let (columns, rows, changes, rowid) = a;
    let rows_py = PyList::empty(py);
    for row in &rows {
        let items = row.iter().map(|v| to_py(py, v)).collect::<PyResult<Vec<_>>>()?;
        rows_py.append(PyTuple::new(py, items)?)?;
    }
    let columns = columns.map(|c| PyTuple::new(py, c)).transpose()?;
    PyTuple::new(
        py,
        [
            columns.into_pyobject(py)?.into_any(),
            rows_py.into_any(),
            changes.into_pyobject(py)?.into_any(),
            rowid.into_pyobject(py)?.into_any(),
        ],
    )
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn secs(s: f64) -> PyResult<Duration> {
    Duration::try_from_secs_f64(s).map_err(|_| PyValueError::new_err(format!("not a valid timeout: {s}")))
}

// ----- the handle ---------------------------------------------------------------

/// Broker connections kept for write sessions and admin calls.
const SPARE_CLIENTS: usize = 4;

#[derive(Default)]
struct Spare(Mutex<Vec<Client>>);

impl Spare {
    fn take(&self, opts: &ConnectOptions) -> Result<Client, ClientError> {
        match lock(&self.0).pop() {
            Some(c) => Ok(c),
            None => Client::connect_with(opts),
        }
    }

    fn give(&self, c: Client) {
        let mut idle = lock(&self.0);
        if !c.is_broken() && idle.len() < SPARE_CLIENTS {
            idle.push(c);
        }
    }
}

/// The database as this process sees it (see the module docs).
#[pyclass(module = "litebroker._litebroker", name = "Db", frozen)]
struct PyDb {
    db: Db,
    spare: Arc<Spare>,
    policy: RetryPolicy,
}

#[pymethods]
impl PyDb {
    #[new]
    #[pyo3(signature = (path, client_name=None, timeout=30.0, socket=None, autostart=false, broker=None))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        client_name: Option<String>,
        timeout: f64,
        socket: Option<String>,
        autostart: bool,
        broker: Option<PathBuf>,
    ) -> PyResult<Self> {
        let mut b = Db::builder(&path).timeout(secs(timeout)?);
        if let Some(name) = client_name {
            b = b.client_name(name);
        }
        if let Some(s) = socket {
            b = b.socket(s);
        }
        if autostart || broker.is_some() {
            let mut auto = AutoStart::default();
            if let Some(p) = broker {
                auto = auto.broker_path(p);
            }
            b = b.autostart(auto);
        }
        let db = py.detach(|| b.open()).map_err(|e| py_err(py, e))?;
        Ok(PyDb { db, spare: Arc::default(), policy: RetryPolicy::default() })
    }

    /// A subscription to the change feed for `tables` (empty: all), resuming
    /// after `since` (a cursor's text form) when given. Nothing is sent before
    /// the first `next`.
    #[pyo3(signature = (tables, since=None))]
    fn watch(&self, tables: Vec<String>, since: Option<&str>) -> PyResult<PyWatch> {
        let names: Vec<&str> = tables.iter().map(String::as_str).collect();
        let mut w = self.db.watch(&names);
        if let Some(text) = since {
            let cursor = Cursor::parse(text).map_err(PyValueError::new_err)?;
            w = w.since(cursor);
        }
        Ok(PyWatch { watch: Mutex::new(w) })
    }

    /// The canonical database path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.db.options().db.clone()
    }

    /// A read on this process's own read-only connection: `(columns, rows, 0, 0)`.
    #[pyo3(signature = (sql, params=None))]
    fn query<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let values = bind(py, &self.db, sql, params)?;
        let out = py.detach(|| {
            self.db.read(|c| {
                let mut stmt = c.prepare_cached(sql)?;
                if stmt.parameter_count() != values.len() {
                    return Err(ClientError::Parameter(format!(
                        "Incorrect number of bindings supplied. The current statement uses {}, and there are {} supplied.",
                        stmt.parameter_count(),
                        values.len()
                    )));
                }
                bind_params(&mut stmt, &values)?;
                let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
                let n = columns.len();
                let mut rows = Vec::new();
                let mut it = stmt.raw_query();
                while let Some(row) = it.next()? {
                    rows.push((0..n).map(|i| row.get::<_, Value>(i)).collect::<rusqlite::Result<Vec<_>>>()?);
                }
                Ok(((n > 0).then_some(columns), rows, 0, 0))
            })
        });
        answer_to_py(py, out.map_err(|e| py_err(py, e))?)
    }

    /// Whether `sql` only reads (SQLite's own verdict, from preparing it on the
    /// read connection); `None` when it cannot be prepared there.
    fn is_read_only(&self, py: Python<'_>, sql: &str) -> Option<bool> {
        py.detach(|| self.db.read(|c| Ok(c.prepare_cached(sql)?.readonly())).ok())
    }

    /// One write at the broker, exactly once (a request id kept across the
    /// handle's resends and retries), unless `idempotent`.
    #[pyo3(signature = (sql, params=None, idempotent=false, timeout=None))]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Option<&Bound<'py, PyAny>>,
        idempotent: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let values = bind(py, &self.db, sql, params)?;
        let timeout = timeout.map(secs).transpose()?.unwrap_or(self.db.options().request_timeout);
        let out = py.detach(|| {
            let call = self.db.with_timeout(timeout);
            let call = if idempotent { call.idempotent() } else { call };
            if !returns_rows(&self.db, sql) {
                let done = call.execute(sql, values)?;
                return Ok((None, Vec::new(), done.changes, done.last_insert_rowid));
            }
            let mut rows = Vec::new();
            call.execute_returning(sql, values, |r| {
                rows.push(r.values().to_vec());
                Ok(())
            })?;
            let columns: Vec<String> =
                self.db.read(|c| Ok(c.prepare_cached(sql)?.column_names().map(str::to_owned).collect()))?;
            let n = rows.len() as u64;
            Ok(((!columns.is_empty()).then_some(columns), rows, n, 0))
        });
        answer_to_py(py, out.map_err(|e| py_err(py, e))?)
    }

    /// One statement once per parameter set, streamed to the broker as one
    /// transaction, exactly once: `(changes, last_insert_rowid, rows)`. A failing
    /// row fails the whole call (its index in the error) and nothing is applied.
    #[pyo3(signature = (sql, seq, timeout=None))]
    fn execute_many(
        &self,
        py: Python<'_>,
        sql: &str,
        seq: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<(u64, i64, u64)> {
        // Converted while the GIL is held; streamed without it.
        let mut all = Vec::new();
        for params in seq.try_iter()? {
            all.push(bind(py, &self.db, sql, Some(&params?))?);
        }
        let timeout = timeout.map(secs).transpose()?.unwrap_or(self.db.options().request_timeout);
        let out = py.detach(|| self.db.with_timeout(timeout).execute_many(sql, all));
        let sum = out.map_err(|e| py_err(py, e))?;
        Ok((sum.changes, sum.last_insert_rowid, sum.rows))
    }

    /// Several `;`-separated statements as one transaction at the broker, exactly once.
    fn execute_script(&self, py: Python<'_>, sql: &str) -> PyResult<(u64, i64)> {
        let out = py.detach(|| self.db.execute_batch(sql));
        let done = out.map_err(|e| py_err(py, e))?;
        Ok((done.changes, done.last_insert_rowid))
    }

    /// A write session (not yet begun) on a broker connection of this handle.
    #[pyo3(signature = (timeout=10.0))]
    fn session(&self, timeout: f64) -> PyResult<PySession> {
        Ok(PySession {
            db: self.db.clone(),
            spare: self.spare.clone(),
            policy: self.policy,
            timeout: secs(timeout)?,
            state: Mutex::new(SessionState::default()),
        })
    }

    /// An admin call on a broker connection: `what` is status, stats, verify,
    /// connections, checkpoint:<mode> or backup:<label>. Returns its report as JSON.
    fn admin(&self, py: Python<'_>, what: &str) -> PyResult<String> {
        let out = py.detach(|| -> Result<String, ClientError> {
            let mut c = self.spare.take(self.db.options())?;
            let (op, arg) = what.split_once(':').unwrap_or((what, ""));
            let json = |v: Result<serde_json::Value, serde_json::Error>| {
                v.map(|v| v.to_string()).map_err(|e| ClientError::Unexpected(e.to_string()))
            };
            let r = match op {
                "status" => c.status().and_then(|r| json(serde_json::to_value(r))),
                "stats" => c.stats().and_then(|r| json(serde_json::to_value(r))),
                "verify" => c.verify().and_then(|r| json(serde_json::to_value(r))),
                "connections" => c.connections().and_then(|r| json(serde_json::to_value(r))),
                "checkpoint" => {
                    let mode = match arg {
                        "" | "passive" => litebroker_client::protocol::CheckpointMode::Passive,
                        "full" => litebroker_client::protocol::CheckpointMode::Full,
                        "restart" => litebroker_client::protocol::CheckpointMode::Restart,
                        "truncate" => litebroker_client::protocol::CheckpointMode::Truncate,
                        other => {
                            return Err(ClientError::Parameter(format!(
                                "checkpoint mode {other:?}: use passive, full, restart or truncate"
                            )))
                        }
                    };
                    c.checkpoint(mode).and_then(|r| json(serde_json::to_value(r)))
                }
                "backup" => c.backup(arg, 0, &mut |_, _| {}).and_then(|r| json(serde_json::to_value(r))),
                other => Err(ClientError::Parameter(format!("no admin call named {other}"))),
            };
            self.spare.give(c);
            r
        });
        out.map_err(|e| py_err(py, e))
    }
}

/// Whether a write returns rows (`… RETURNING …`), from preparing it on the read
/// connection (a statement that cannot be prepared there is taken as not).
fn returns_rows(db: &Db, sql: &str) -> bool {
    db.read(|c| Ok(c.prepare_cached(sql)?.column_count() > 0)).unwrap_or(false)
}

// ----- write sessions -----------------------------------------------------------

#[derive(Default)]
struct SessionState {
    client: Option<Client>,
    /// A transaction is open at the broker.
    open: bool,
}

/// A write session at the broker, kept on one connection across commits: after
/// `commit()` the next statement begins the next transaction.
#[pyclass(module = "litebroker._litebroker", name = "Session", frozen)]
struct PySession {
    db: Db,
    spare: Arc<Spare>,
    policy: RetryPolicy,
    timeout: Duration,
    state: Mutex<SessionState>,
}

impl PySession {
    /// Begins a transaction unless one is open: waits for the writer up to the
    /// session's timeout, retrying "locked" with the policy's schedule.
    fn ensure_open(&self, st: &mut SessionState) -> Result<(), ClientError> {
        if st.open {
            return Ok(());
        }
        let deadline = Instant::now() + self.timeout;
        if st.client.is_none() {
            st.client = Some(self.spare.take(self.db.options())?);
        }
        let client = st.client.as_mut().expect("set above");
        let mut retry = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            match client.begin_session(left) {
                Ok(_) => break,
                Err(e) if e.is_locked() && retry < self.policy.max_attempts => {
                    retry += 1;
                    let delay = self.policy.delay(retry);
                    if Instant::now() + delay >= deadline {
                        return Err(e);
                    }
                    std::thread::sleep(delay);
                }
                Err(e) => {
                    if client.is_broken() {
                        st.client = None;
                    }
                    return Err(e);
                }
            }
        }
        st.open = true;
        Ok(())
    }

    fn run(&self, st: &mut SessionState, sql: &str, values: &[Value]) -> Result<ExecResult, ClientError> {
        self.ensure_open(st)?;
        let client = st.client.as_mut().expect("an open session has its connection");
        let r = client.execute_in_session(sql, values);
        if let Err(e) = &r {
            if matches!(e.kind(), Some(ErrorKind::LeaseExpired | ErrorKind::ShuttingDown))
                || client.is_broken()
            {
                st.open = false;
            }
        }
        r
    }

    fn end(&self, st: &mut SessionState, commit: bool) -> Result<(), ClientError> {
        if !st.open {
            return Ok(());
        }
        st.open = false;
        let client = st.client.as_mut().expect("an open session has its connection");
        client.end_session(commit)
    }
}

#[pymethods]
impl PySession {
    /// Begins a transaction now (waiting for the writer) unless one is open.
    fn begin(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.ensure_open(&mut lock(&self.state))).map_err(|e| py_err(py, e))
    }

    /// Whether a transaction is open at the broker.
    #[getter]
    fn in_transaction(&self) -> bool {
        lock(&self.state).open
    }

    /// One statement in the session (beginning a transaction when none is open).
    #[pyo3(signature = (sql, params=None))]
    fn execute<'py>(
        &self,
        py: Python<'py>,
        sql: &str,
        params: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let values = bind(py, &self.db, sql, params)?;
        let out = py.detach(|| self.run(&mut lock(&self.state), sql, &values));
        answer_to_py(py, answer(out.map_err(|e| py_err(py, e))?))
    }

    /// The statement once per parameter set; `(changes, lastrowid)` summed / last.
    fn execute_many(&self, py: Python<'_>, sql: &str, seq: &Bound<'_, PyAny>) -> PyResult<(u64, i64)> {
        let mut all = Vec::new();
        for params in seq.try_iter()? {
            all.push(bind(py, &self.db, sql, Some(&params?))?);
        }
        let out = py.detach(|| {
            let mut st = lock(&self.state);
            let (mut changes, mut rowid) = (0, 0);
            for values in &all {
                let r = self.run(&mut st, sql, values)?;
                changes += r.changes;
                rowid = r.last_insert_rowid;
            }
            Ok((changes, rowid))
        });
        out.map_err(|e| py_err(py, e))
    }

    /// Commits the open transaction, if any; the session goes on.
    fn commit(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.end(&mut lock(&self.state), true)).map_err(|e| py_err(py, e))
    }

    /// Rolls the open transaction back, if any; the session goes on.
    fn rollback(&self, py: Python<'_>) -> PyResult<()> {
        py.detach(|| self.end(&mut lock(&self.state), false)).map_err(|e| py_err(py, e))
    }

    /// Ends the session: commits (or rolls back) what is open and gives the
    /// connection back to the handle.
    #[pyo3(signature = (commit=true))]
    fn close(&self, py: Python<'_>, commit: bool) -> PyResult<()> {
        let out = py.detach(|| {
            let mut st = lock(&self.state);
            let r = self.end(&mut st, commit);
            if let Some(c) = st.client.take() {
                self.spare.give(c);
            }
            r
        });
        out.map_err(|e| py_err(py, e))
    }
}

impl Drop for PySession {
    /// A session dropped open (never closed) rolls back.
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(std::sync::PoisonError::into_inner);
        if st.open {
            if let Some(c) = st.client.as_mut() {
                let _ = c.end_session(false);
            }
        }
    }
}

// ----- the module ---------------------------------------------------------------

/// Hands the package's exception classes (name -> class) to the native module.
#[pyfunction]
fn _register_errors(py: Python<'_>, classes: Bound<'_, PyDict>) -> PyResult<()> {
    ERRORS
        .set(py, classes.unbind())
        .map_err(|_| PyRuntimeError::new_err("the exception classes are registered already"))
}

/// Broker connections and read connections open in this process now.
#[pyfunction]
fn active_connections() -> usize {
    active_connections_count()
}

// ----- the change feed ----------------------------------------------------------

/// A change-feed subscription (the client library's [`Watch`]: reconnects and
/// resumes by itself).
#[pyclass(module = "litebroker._litebroker", name = "Watch", frozen)]
struct PyWatch {
    watch: Mutex<Watch>,
}

#[pymethods]
impl PyWatch {
    /// Waits up to `timeout` seconds for the next event: a dict, or None when
    /// none came. Subscribes first when not subscribed yet.
    fn next<'py>(&self, py: Python<'py>, timeout: f64) -> PyResult<Option<Bound<'py, PyDict>>> {
        let wait = secs(timeout)?;
        let event = py.detach(|| lock(&self.watch).next_timeout(wait)).map_err(|e| py_err(py, e))?;
        event.map(|e| event_to_py(py, &e)).transpose()
    }

    /// Subscribes now (unless subscribed); returns the cursor the stream starts at.
    fn subscribe(&self, py: Python<'_>) -> PyResult<String> {
        let c = py.detach(|| lock(&self.watch).subscribe()).map_err(|e| py_err(py, e))?;
        Ok(c.to_string())
    }

    /// The last cursor returned (resume after it with `since`), if any.
    #[getter]
    fn cursor(&self) -> Option<String> {
        lock(&self.watch).cursor().map(|c| c.to_string())
    }
}

/// An event as the Python layer reads it.
fn event_to_py<'py>(py: Python<'py>, e: &ChangeEvent) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("cursor", e.cursor.to_string())?;
    d.set_item("committed_unix_us", e.committed_unix_us)?;
    d.set_item("resync", e.resync.map(|r| r.as_str()))?;
    let tables = PyDict::new(py);
    for t in &e.tables {
        let c = PyDict::new(py);
        c.set_item("inserted", t.inserted)?;
        c.set_item("updated", t.updated)?;
        c.set_item("deleted", t.deleted)?;
        c.set_item("rowids", t.rowids.clone())?;
        c.set_item("rowids_capped", t.rowids_capped)?;
        tables.set_item(&t.table, c)?;
    }
    d.set_item("tables", tables)?;
    Ok(d)
}

#[pymodule]
fn _litebroker(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyDb>()?;
    m.add_class::<PySession>()?;
    m.add_class::<PyWatch>()?;
    m.add_function(wrap_pyfunction!(_register_errors, m)?)?;
    m.add_function(wrap_pyfunction!(active_connections, m)?)?;
    m.add("LOCKED_USER_TEXT", LOCKED_USER_TEXT)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
