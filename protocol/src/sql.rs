//! Conversions between wire [`Value`]s and rusqlite's types (feature `rusqlite`),
//! shared by the client's reader and the broker.

use crate::Value;
use rusqlite::types::{FromSql, FromSqlResult, ToSqlOutput, ValueRef};
use rusqlite::ToSql;

/// Borrows a wire value as a SQLite parameter.
#[derive(Debug)]
pub struct Param<'a>(pub &'a Value);

impl ToSql for Param<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        self.0.to_sql()
    }
}

/// Copies a SQLite column value into a wire value. Text that is not valid UTF-8
/// (SQLite does not enforce it) is converted lossily rather than failing the read.
pub fn from_value_ref(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// Binds `params` to `stmt`'s positional placeholders `?1…?N`.
///
/// # Errors
/// SQLite's error when a value cannot be bound.
pub fn bind_params(stmt: &mut rusqlite::Statement<'_>, params: &[Value]) -> rusqlite::Result<()> {
    for (i, v) in params.iter().enumerate() {
        stmt.raw_bind_parameter(i + 1, Param(v))?;
    }
    Ok(())
}

/// Runs a prepared, bound statement to completion, collecting its column names
/// and at most `max_rows` rows; one more row fails with the error `overflow`
/// builds, so callers can name the limit.
///
/// # Errors
/// SQLite's error, or `overflow` when more than `max_rows` rows come back.
pub fn collect_rows(
    stmt: &mut rusqlite::Statement<'_>,
    max_rows: usize,
    overflow: impl FnOnce() -> rusqlite::Error,
) -> rusqlite::Result<(Vec<String>, Vec<Vec<Value>>)> {
    let columns: Vec<String> = stmt.column_names().map(str::to_owned).collect();
    let ncol = columns.len();
    let mut out = Vec::new();
    let mut rows = stmt.raw_query();
    while let Some(row) = rows.next()? {
        if out.len() >= max_rows {
            return Err(overflow());
        }
        let mut r = Vec::with_capacity(ncol);
        for i in 0..ncol {
            r.push(from_value_ref(row.get_ref(i)?));
        }
        out.push(r);
    }
    Ok((columns, out))
}

/// A wire value binds like any other SQLite value.
impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(ToSqlOutput::Borrowed(match self {
            Value::Null => ValueRef::Null,
            Value::Integer(i) => ValueRef::Integer(*i),
            Value::Real(r) => ValueRef::Real(*r),
            Value::Text(s) => ValueRef::Text(s.as_bytes()),
            Value::Blob(b) => ValueRef::Blob(b),
        }))
    }
}

impl FromSql for Value {
    /// Text that is not valid UTF-8 (SQLite does not enforce it) is converted
    /// lossily rather than failing the read.
    fn column_result(v: ValueRef<'_>) -> FromSqlResult<Self> {
        Ok(from_value_ref(v))
    }
}
