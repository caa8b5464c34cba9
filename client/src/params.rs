//! Statement parameters, written as rusqlite users write them: [`params!`],
//! [`named_params!`], arrays, tuples, slices, `()` — any value rusqlite can bind
//! (`ToSql`: i8…i64, u8…u32, u64 when it fits, f32/f64, bool, `&str`/`String`,
//! `&[u8]`/`Vec<u8>`, `Option<T>`, [`Value`]).
//!
//! Writes travel to the broker as wire [`Value`]s; reads bind on this process's
//! own connection. Named parameters (`:name`, `@name`, `$name`) are numbered the
//! way SQLite numbers them: by preparing the statement (see `Bound::positional`).
//!
//! [`params!`]: crate::params
//! [`named_params!`]: crate::named_params

use litebroker_protocol::Value;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::ToSql;

use crate::error::{ClientError, Result};

/// Parameters converted to wire values, by position or by name.
#[derive(Debug, Clone, PartialEq)]
pub enum Bound {
    /// `?`, `?NNN`: in order.
    Positional(Vec<Value>),
    /// `:name`, `@name`, `$name`, each with its name as written (prefix included).
    Named(Vec<(String, Value)>),
}

impl Bound {
    /// True when no parameter is given.
    pub fn is_empty(&self) -> bool {
        match self {
            Bound::Positional(v) => v.is_empty(),
            Bound::Named(v) => v.is_empty(),
        }
    }

    /// The values by position, for a caller that has no statement to number
    /// named ones by (a [`crate::Client`]).
    ///
    /// # Errors
    /// Named parameters.
    pub fn into_positional(self) -> Result<Vec<Value>> {
        match self {
            Bound::Positional(v) => Ok(v),
            Bound::Named(_) => Err(ClientError::Parameter(
                "named parameters are numbered on a read connection: use positional ones with a Client, or \
                 the Db handle"
                    .into(),
            )),
        }
    }

    /// The values by position. Named ones are placed where SQLite numbers them in
    /// `stmt`, a statement prepared from the same SQL.
    ///
    /// # Errors
    /// A name the statement does not have, or a parameter of the statement left
    /// without a value.
    pub fn positional_for(self, stmt: &rusqlite::Statement<'_>) -> Result<Vec<Value>> {
        match self {
            Bound::Positional(v) => Ok(v),
            Bound::Named(named) => {
                let mut out = vec![None; stmt.parameter_count()];
                for (name, value) in named {
                    let i = stmt.parameter_index(&name)?.ok_or_else(|| {
                        ClientError::Parameter(format!("the statement has no parameter named {name}"))
                    })?;
                    out[i - 1] = Some(value);
                }
                out.into_iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.ok_or_else(|| {
                            let name = stmt.parameter_name(i + 1).unwrap_or("?");
                            ClientError::Parameter(format!("no value given for parameter {name}"))
                        })
                    })
                    .collect()
            }
        }
    }
}

/// What can be given as a statement's parameters.
pub trait Params {
    /// Converts the parameters into wire values.
    ///
    /// # Errors
    /// A value that cannot be represented (e.g. a `u64` above `i64::MAX`).
    fn bind(self) -> Result<Bound>;
}

/// One value as it crosses the wire.
///
/// # Errors
/// When the value cannot be converted (rusqlite's own check, e.g. `u64` overflow).
pub fn to_value(v: &dyn ToSql) -> Result<Value> {
    let out = v.to_sql().map_err(|e| ClientError::Parameter(e.to_string()))?;
    Ok(match out {
        ToSqlOutput::Borrowed(r) => from_ref(r),
        ToSqlOutput::Owned(v) => from_owned(v),
        other => {
            return Err(ClientError::Parameter(format!(
                "a parameter of a kind the broker cannot take: {other:?}"
            )))
        }
    })
}

fn from_ref(r: ValueRef<'_>) -> Value {
    match r {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(f) => Value::Real(f),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn from_owned(v: rusqlite::types::Value) -> Value {
    match v {
        rusqlite::types::Value::Null => Value::Null,
        rusqlite::types::Value::Integer(i) => Value::Integer(i),
        rusqlite::types::Value::Real(f) => Value::Real(f),
        rusqlite::types::Value::Text(t) => Value::Text(t),
        rusqlite::types::Value::Blob(b) => Value::Blob(b),
    }
}

impl Params for () {
    fn bind(self) -> Result<Bound> {
        Ok(Bound::Positional(Vec::new()))
    }
}

impl Params for &[&dyn ToSql] {
    fn bind(self) -> Result<Bound> {
        self.iter().map(|v| to_value(*v)).collect::<Result<_>>().map(Bound::Positional)
    }
}

impl<T: ToSql, const N: usize> Params for [T; N] {
    fn bind(self) -> Result<Bound> {
        self.iter().map(|v| to_value(v)).collect::<Result<_>>().map(Bound::Positional)
    }
}

impl<T: ToSql, const N: usize> Params for &[T; N] {
    fn bind(self) -> Result<Bound> {
        self.iter().map(|v| to_value(v)).collect::<Result<_>>().map(Bound::Positional)
    }
}

impl Params for &[Value] {
    fn bind(self) -> Result<Bound> {
        Ok(Bound::Positional(self.to_vec()))
    }
}

impl Params for Vec<Value> {
    fn bind(self) -> Result<Bound> {
        Ok(Bound::Positional(self))
    }
}

impl Params for &[(&str, &dyn ToSql)] {
    fn bind(self) -> Result<Bound> {
        self.iter()
            .map(|(name, v)| Ok(((*name).to_owned(), to_value(*v)?)))
            .collect::<Result<_>>()
            .map(Bound::Named)
    }
}

macro_rules! tuple_params {
    ($($t:ident $i:tt),+) => {
        impl<$($t: ToSql),+> Params for ($($t,)+) {
            fn bind(self) -> Result<Bound> {
                Ok(Bound::Positional(vec![$(to_value(&self.$i)?),+]))
            }
        }
    };
}
tuple_params!(A 0);
tuple_params!(A 0, B 1);
tuple_params!(A 0, B 1, C 2);
tuple_params!(A 0, B 1, C 2, D 3);
tuple_params!(A 0, B 1, C 2, D 3, E 4);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_params!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

/// Binds wire values to a statement of this process's own connection.
pub(crate) fn bind_all(stmt: &mut rusqlite::Statement<'_>, values: &[Value]) -> Result<()> {
    Ok(litebroker_protocol::sql::bind_params(stmt, values)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_parameter_becomes_its_wire_value() {
        let b = (1_i8, 2_u32, u64::MAX / 4, 1.5_f32, true, "t", vec![0_u8, 255], None::<i64>).bind().unwrap();
        assert_eq!(
            b,
            Bound::Positional(vec![
                Value::Integer(1),
                Value::Integer(2),
                Value::Integer((u64::MAX / 4) as i64),
                Value::Real(1.5),
                Value::Integer(1),
                Value::Text("t".into()),
                Value::Blob(vec![0, 255]),
                Value::Null,
            ])
        );
        let e = [u64::MAX].bind().unwrap_err();
        assert!(matches!(e, ClientError::Parameter(_)), "{e:?}");
        let named = (&[(":a", &1 as &dyn ToSql), ("@b", &"x")]).bind().unwrap();
        assert_eq!(
            named,
            Bound::Named(vec![(":a".into(), Value::Integer(1)), ("@b".into(), Value::Text("x".into()))])
        );
        assert_eq!(().bind().unwrap(), Bound::Positional(vec![]));
    }

    #[test]
    fn names_are_numbered_as_sqlite_numbers_them() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let stmt = c.prepare("SELECT :b, @a, :b, ?5").unwrap();
        let named = Bound::Named(vec![
            ("@a".into(), Value::Integer(2)),
            (":b".into(), Value::Integer(1)),
            ("?5".into(), Value::Integer(5)),
        ]);
        // ?5 makes the statement have 5 parameters; 3 and 4 are left unnamed.
        let e = named.clone().positional_for(&stmt).unwrap_err();
        assert!(e.to_string().contains("no value given"), "{e}");
        let stmt = c.prepare("SELECT :b, @a, :b").unwrap();
        let got = Bound::Named(vec![("@a".into(), Value::Integer(2)), (":b".into(), Value::Integer(1))])
            .positional_for(&stmt)
            .unwrap();
        assert_eq!(got, vec![Value::Integer(1), Value::Integer(2)]);
        let e = Bound::Named(vec![(":zz".into(), Value::Null)]).positional_for(&stmt).unwrap_err();
        assert!(e.to_string().contains(":zz"), "{e}");
    }
}
