//! Rows that came back from the broker (reads inside a write session, `RETURNING`),
//! read with the typed `get::<T>` rusqlite users know (any `FromSql` type).

use litebroker_protocol::Value;
use rusqlite::types::{FromSql, FromSqlError, ValueRef};

use crate::error::{ClientError, Result};

/// A column by position (0-based) or by name.
pub trait ColumnIndex {
    /// The column's position among `columns`.
    ///
    /// # Errors
    /// No such column.
    fn index(&self, columns: &[String]) -> Result<usize>;
}

impl ColumnIndex for usize {
    fn index(&self, columns: &[String]) -> Result<usize> {
        if *self < columns.len() {
            Ok(*self)
        } else {
            Err(ClientError::Column(format!("no column {self}: the row has {}", columns.len())))
        }
    }
}

impl ColumnIndex for &str {
    fn index(&self, columns: &[String]) -> Result<usize> {
        columns
            .iter()
            .position(|c| c.eq_ignore_ascii_case(self))
            .ok_or_else(|| ClientError::Column(format!("no column named {self}")))
    }
}

/// One row of a broker answer.
#[derive(Debug, Clone, Copy)]
pub struct Row<'a> {
    columns: &'a [String],
    values: &'a [Value],
}

impl<'a> Row<'a> {
    /// A row of `values` named by `columns`.
    pub fn new(columns: &'a [String], values: &'a [Value]) -> Row<'a> {
        Row { columns, values }
    }

    /// The value of a column, converted to `T`.
    ///
    /// # Errors
    /// No such column, or a value that does not convert (wrong type, out of range).
    ///
    /// ```no_run
    /// # use litebroker_client::Db;
    /// # let db = Db::open("data/app.db")?;
    /// let qty = db.write(|tx| tx.query_row("SELECT qty FROM skus WHERE sku = ?1", ["A1"], |r| r.get::<_, i64>(0)))?;
    /// # Ok::<(), litebroker_client::ClientError>(())
    /// ```
    pub fn get<I: ColumnIndex, T: FromSql>(&self, idx: I) -> Result<T> {
        let i = idx.index(self.columns)?;
        T::column_result(value_ref(&self.values[i])).map_err(|e| {
            let column = &self.columns[i];
            ClientError::Column(match e {
                FromSqlError::InvalidType => {
                    format!(
                        "column {column} holds {}, which does not convert to the type asked for",
                        kind(&self.values[i])
                    )
                }
                FromSqlError::OutOfRange(v) => {
                    format!("column {column}: {v} is out of range for the type asked for")
                }
                other => format!("column {column}: {other}"),
            })
        })
    }

    /// The raw values.
    pub fn values(&self) -> &'a [Value] {
        self.values
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "NULL",
        Value::Integer(_) => "an integer",
        Value::Real(_) => "a real",
        Value::Text(_) => "text",
        Value::Blob(_) => "a blob",
    }
}

fn value_ref(v: &Value) -> ValueRef<'_> {
    match v {
        Value::Null => ValueRef::Null,
        Value::Integer(i) => ValueRef::Integer(*i),
        Value::Real(f) => ValueRef::Real(*f),
        Value::Text(t) => ValueRef::Text(t.as_bytes()),
        Value::Blob(b) => ValueRef::Blob(b),
    }
}
