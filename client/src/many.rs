//! Streams (a streamed executemany's parameter rows, a streamed batch's
//! statements) cut into parts: each part is one frame (`ManyRows`,
//! `BatchPart`), sent as soon as it is full, so that an iterator of a million
//! items never sits in memory whole (on either side: the broker runs one part at
//! a time while the next waits in the socket).

use litebroker_protocol::{ErrorInfo, Request, Statement, Value};

use crate::error::ClientError;

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
