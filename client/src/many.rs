//! Streams (a streamed executemany's parameter rows, a streamed batch's
//! statements) cut into parts: each part is one frame (`ManyRows`,
//! `BatchPart`), sent as soon as it is full, so that an iterator of a million
//! items never sits in memory whole (on either side: the broker runs one part at
//! a time while the next waits in the socket).

use std::time::Instant;

use litebroker_protocol::{
    ErrorInfo, ErrorKind, ManySummary, Request, Response, Statement, Value, WriteOptions,
};

use crate::client::{hex, timeout_of, Client, ANSWER_GRACE};
use crate::error::{unexpected, ClientError, Result};
use crate::params::{Bound, Params};

/// Items per part at most. Large enough that the broker's per-part hand-off to
/// its writer costs little next to the items, small enough to keep a part's
/// memory and the time between frames short (and below the broker's default
/// `--max-batch-statements`, which bounds a batch part).
pub(crate) const CHUNK_ROWS: usize = 2048;

/// Bytes per part at most (about; texts and blobs by their length), far below
/// the broker's default 16 MiB frame limit.
pub(crate) const CHUNK_BYTES: usize = 512 * 1024;

/// Bytes a value adds to a frame, about: a tag and a varint, or its bytes.
fn weight(v: &Value) -> usize {
    match v {
        Value::Text(t) => t.len() + 4,
        Value::Blob(b) => b.len() + 4,
        _ => 9,
    }
}

/// What a stream carries, and how its frames and failures look.
pub(crate) trait StreamItem: Sized {
    /// The request's name, for messages.
    const NAME: &'static str;
    /// What it carries, for messages ("rows").
    const ITEMS: &'static str;
    /// Bytes the item adds to a frame, about.
    fn weight(&self) -> usize;
    /// The frame carrying `items`.
    fn part(items: Vec<Self>) -> Request;
    /// The typed error of the failing item `index` (counting from 0).
    fn failed(index: u64, error: ErrorInfo) -> ClientError;
}

impl StreamItem for Vec<Value> {
    const NAME: &'static str = "executemany";
    const ITEMS: &'static str = "rows";
    fn weight(&self) -> usize {
        self.iter().map(weight).sum::<usize>() + 2
    }
    fn part(rows: Vec<Self>) -> Request {
        Request::ManyRows { rows }
    }
    fn failed(row: u64, error: ErrorInfo) -> ClientError {
        ClientError::RowFailed { row, error }
    }
}

impl StreamItem for Statement {
    const NAME: &'static str = "streamed batch";
    const ITEMS: &'static str = "statements";
    fn weight(&self) -> usize {
        self.sql.len() + self.params.iter().map(weight).sum::<usize>() + 4
    }
    fn part(statements: Vec<Self>) -> Request {
        Request::BatchPart { statements }
    }
    fn failed(index: u64, error: ErrorInfo) -> ClientError {
        ClientError::StatementFailed { index, error }
    }
}

/// Items gathered into parts.
#[derive(Debug)]
pub(crate) struct Chunker<T> {
    items: Vec<T>,
    bytes: usize,
    /// Items taken in all.
    pub(crate) total: u64,
}

impl<T> Default for Chunker<T> {
    fn default() -> Self {
        Chunker { items: Vec::new(), bytes: 0, total: 0 }
    }
}

impl<T: StreamItem> Chunker<T> {
    /// Adds an item; the part to send when this one filled it.
    pub(crate) fn push(&mut self, item: T) -> Option<Vec<T>> {
        self.bytes += item.weight();
        self.items.push(item);
        self.total += 1;
        (self.items.len() >= CHUNK_ROWS || self.bytes >= CHUNK_BYTES).then(|| self.take())
    }

    /// The items not sent yet, if any.
    pub(crate) fn rest(&mut self) -> Option<Vec<T>> {
        (!self.items.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<T> {
        self.bytes = 0;
        std::mem::replace(&mut self.items, Vec::with_capacity(CHUNK_ROWS.min(256)))
    }
}

// The streams are sent by the client, and live here with their parts: the
// client's own file knows nothing of them.
impl Client {
    /// Runs `sql`, one statement, once per row of `rows`, in one transaction at
    /// the broker (a streamed executemany): the rows are sent in chunks as the
    /// iterator yields them, and run while they arrive, so a million rows never
    /// sit in memory whole. Answers with a summary, not one result per row.
    /// Each row's parameters convert as [`Client::execute`]'s do (positional
    /// only here: [`crate::Db::execute_many`] takes named ones).
    ///
    /// # Errors
    /// [`ClientError::RowFailed`] naming the first failing row (counting from 0);
    /// [`ClientError::Parameter`] for a row that does not convert; a broker too
    /// old for executemany (protocol minor below 2); the errors of
    /// [`Client::execute`]. Nothing of the rows is applied then.
    pub fn execute_many<P: Params>(
        &mut self,
        sql: &str,
        rows: impl IntoIterator<Item = P>,
    ) -> Result<ManySummary> {
        let rows = rows.into_iter().map(|p| p.bind().and_then(Bound::into_positional));
        self.execute_many_with(sql, rows, WriteOptions::default())
    }

    /// [`Client::execute_many`] with rows already converted, and explicit options:
    /// the timeout covers the whole stream, and the request id the whole stream
    /// (a new one unless given). The first `Err` row abandons the stream (nothing
    /// applied) and is returned.
    ///
    /// Not resent after a lost connection (the rows were consumed): when the
    /// answer was lost after the whole stream was sent, the error says so;
    /// sending the same rows again with the same request id is then answered
    /// from the broker's record if the first attempt committed, and applies them
    /// once if it did not.
    ///
    /// # Errors
    /// As [`Client::execute_many`].
    pub fn execute_many_with(
        &mut self,
        sql: &str,
        rows: impl IntoIterator<Item = Result<Vec<Value>>>,
        opts: WriteOptions,
    ) -> Result<ManySummary> {
        self.stream(|opts| Request::ManyBegin { sql: sql.to_owned(), opts }, rows, opts)
    }

    /// Runs `statements` in order as one transaction at the broker (a streamed
    /// batch): they are sent in parts as the iterator yields them and run while
    /// they arrive, so a file of a million statements never sits in memory
    /// whole. Each [`Statement`] may hold several `;`-separated statements (run
    /// as [`Client::execute`] runs its SQL), and a `BEGIN … COMMIT` around the
    /// whole stream is honoured. Answers with a summary ([`ManySummary::rows`]
    /// counts the statements applied; rows they return are dropped), where
    /// [`Client::execute_batch`] answers one result per statement.
    ///
    /// # Errors
    /// [`ClientError::StatementFailed`] naming the first failing statement
    /// (counting from 0); a broker too old for it (protocol minor below 3); the
    /// errors of [`Client::execute`]. Nothing of the statements is applied then.
    ///
    /// ```no_run
    /// # use litebroker_client::{Client, ConnectOptions, Statement, Value};
    /// let mut client = Client::connect_with(&ConnectOptions::new("data/app.db"))?;
    /// let load = (0..1_000_000i64)
    ///     .map(|i| Statement::new("INSERT INTO skus (sku, qty) VALUES (?, ?)", vec![format!("sku-{i}").into(), Value::from(i % 7)]));
    /// let done = client.execute_batch_stream(load)?;
    /// assert_eq!(done.rows, 1_000_000);
    /// # Ok::<(), litebroker_client::ClientError>(())
    /// ```
    pub fn execute_batch_stream(
        &mut self,
        statements: impl IntoIterator<Item = Statement>,
    ) -> Result<ManySummary> {
        self.execute_batch_stream_with(statements.into_iter().map(Ok), WriteOptions::default())
    }

    /// [`Client::execute_batch_stream`] with explicit options; the first `Err`
    /// item abandons the stream (nothing applied) and is returned. Not resent,
    /// as [`Client::execute_many_with`].
    ///
    /// # Errors
    /// As [`Client::execute_batch_stream`].
    pub fn execute_batch_stream_with(
        &mut self,
        statements: impl IntoIterator<Item = Result<Statement>>,
        opts: WriteOptions,
    ) -> Result<ManySummary> {
        self.stream(|opts| Request::BatchBegin { opts }, statements, opts)
    }

    /// Sends a stream: the frame `begin` makes with the options, the items in
    /// parts, then `ManyEnd`; one answer. The first `Err` item abandons it.
    fn stream<T: StreamItem>(
        &mut self,
        begin: impl FnOnce(WriteOptions) -> Request,
        items: impl IntoIterator<Item = Result<T>>,
        mut opts: WriteOptions,
    ) -> Result<ManySummary> {
        let wait = timeout_of(&mut opts, self.timeout);
        let deadline = Instant::now() + wait;
        self.assign_request_id(&mut opts);
        let id = opts.request_id;
        let begin = begin(opts);
        // An older broker could not decode the stream's frames.
        if self.hello.minor < begin.since_minor() {
            return Err(ClientError::Broker(ErrorInfo::new(
                ErrorKind::Incompatible,
                format!(
                    "this broker speaks protocol {}.{}, and {} needs {}.{}: upgrade the broker",
                    self.hello.protocol,
                    self.hello.minor,
                    T::NAME,
                    self.hello.protocol,
                    begin.since_minor()
                ),
            )));
        }
        self.send_part(&begin)?;
        let mut chunks = Chunker::default();
        let mut failure = None;
        for item in items {
            match item {
                Ok(item) => {
                    if let Some(chunk) = chunks.push(item) {
                        self.send_part(&T::part(chunk))?;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(chunk) = chunks.rest().filter(|_| failure.is_none()) {
            self.send_part(&T::part(chunk))?;
        }
        let end = Request::ManyEnd { rows: chunks.total, commit: failure.is_none() };
        let left = deadline.saturating_duration_since(Instant::now());
        let answer = self.round_trip(&end, left + ANSWER_GRACE);
        if let Some(e) = failure {
            // Abandoned: the broker rolled the stream back (or the connection broke
            // before it committed anything).
            return Err(e);
        }
        match answer {
            Ok(Response::ExecutedMany(s)) => Ok(s),
            Ok(Response::ManyFailed { row, error }) => Err(T::failed(row, error)),
            Ok(other) => Err(unexpected(T::NAME, &other)),
            Err(ClientError::ConnectionLost { sent: true, reason }) => Err(ClientError::ConnectionLost {
                sent: true,
                reason: match id {
                    Some(id) => format!(
                        "{reason}; the {} is not resent by the client: send the same {} again with \
                         request id {} and the broker applies them once",
                        T::NAME,
                        T::ITEMS,
                        hex(&id)
                    ),
                    None => reason,
                },
            }),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_bounded_by_rows_and_by_bytes() {
        let mut c = Chunker::default();
        let full: Vec<_> =
            (0..CHUNK_ROWS * 2 + 5).filter_map(|i| c.push(vec![Value::Integer(i as i64)])).collect();
        assert_eq!(full.iter().map(Vec::len).collect::<Vec<_>>(), [CHUNK_ROWS, CHUNK_ROWS]);
        assert_eq!(c.rest().map(|r| r.len()), Some(5));
        assert_eq!(c.rest(), None);
        let big = "x".repeat(CHUNK_BYTES / 3);
        let sent: Vec<_> = (0..4).filter_map(|_| c.push(vec![Value::Text(big.clone())])).collect();
        assert_eq!(sent.len(), 1, "three rows of a third of the byte bound fill a chunk");
        assert_eq!(c.total, (CHUNK_ROWS * 2 + 5 + 4) as u64);
    }

    #[test]
    fn statements_are_weighed_by_their_text() {
        let mut c = Chunker::default();
        let big = format!("INSERT INTO t VALUES ('{}');", "x".repeat(CHUNK_BYTES / 2));
        assert!(c.push(Statement::new(big.clone(), vec![])).is_none());
        assert_eq!(c.push(Statement::new(big, vec![])).map(|p| p.len()), Some(2));
    }
}
