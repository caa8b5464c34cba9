//! Cutting a streamed executemany's parameter rows into chunks: each chunk is one
//! `ManyRows` frame, sent as soon as it is full, so that an iterator of a million
//! rows never sits in memory whole (on either side: the broker runs one chunk at
//! a time while the next waits in the socket).

use litebroker_protocol::Value;

/// Rows per chunk at most. Large enough that the broker's per-chunk hand-off to
/// its writer costs little next to the rows, small enough to keep a chunk's
/// memory and the time between frames short.
pub(crate) const CHUNK_ROWS: usize = 2048;

/// Bytes of values per chunk at most (about; texts and blobs by their length),
/// far below the broker's default 16 MiB frame limit.
pub(crate) const CHUNK_BYTES: usize = 512 * 1024;

/// Bytes a value adds to a frame, about: a tag and a varint, or its bytes.
fn weight(v: &Value) -> usize {
    match v {
        Value::Text(t) => t.len() + 4,
        Value::Blob(b) => b.len() + 4,
        _ => 9,
    }
}

/// Rows gathered into chunks.
#[derive(Debug, Default)]
pub(crate) struct Chunker {
    rows: Vec<Vec<Value>>,
    bytes: usize,
    /// Rows taken in all.
    pub(crate) total: u64,
}

impl Chunker {
    /// Adds a row; the chunk to send when this one filled it.
    pub(crate) fn push(&mut self, row: Vec<Value>) -> Option<Vec<Vec<Value>>> {
        self.bytes += row.iter().map(weight).sum::<usize>() + 2;
        self.rows.push(row);
        self.total += 1;
        (self.rows.len() >= CHUNK_ROWS || self.bytes >= CHUNK_BYTES).then(|| self.take())
    }

    /// The rows not sent yet, if any.
    pub(crate) fn rest(&mut self) -> Option<Vec<Vec<Value>>> {
        (!self.rows.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> Vec<Vec<Value>> {
        self.bytes = 0;
        std::mem::replace(&mut self.rows, Vec::with_capacity(CHUNK_ROWS.min(256)))
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
}
