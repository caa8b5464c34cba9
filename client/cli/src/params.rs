//! The parameters typed after the SQL of `exec` and `query`: each a JSON
//! literal or text, positional or named (`:name=value`, `@name=value`,
//! `$name=value`). Names are resolved the way SQLite numbers them: the
//! statement is prepared on a local read-only connection and SQLite is asked
//! for each parameter's name.

use litebroker_client::Value;
use serde_json::Value as Json;

use crate::statements::Prepared;
use crate::{fail, Failure};

/// A CLI parameter: a JSON literal, or text when it is not valid JSON. A JSON
/// integer that does not fit in 64 bits stays text exactly as typed: as a REAL it
/// would be rounded (two 20-digit barcodes would become the same number); numbers
/// with a fraction or an exponent are REAL.
pub(crate) fn parse_param(s: &str) -> Value {
    match serde_json::from_str::<Json>(s) {
        Ok(Json::Null) => Value::Null,
        Ok(Json::Bool(b)) => Value::Integer(i64::from(b)),
        Ok(Json::Number(n)) => match n.as_i64() {
            Some(i) => Value::Integer(i),
            None if is_integer_literal(s) => Value::Text(s.to_owned()),
            None => n.as_f64().map_or_else(|| Value::Text(s.to_owned()), Value::Real),
        },
        Ok(Json::String(t)) => Value::Text(t),
        _ => Value::Text(s.to_owned()),
    }
}

/// `-?digits` (JSON allows whitespace around it): no fraction, no exponent.
fn is_integer_literal(s: &str) -> bool {
    let digits = s.trim().strip_prefix('-').unwrap_or(s.trim());
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `:name=value`, `@name=value` or `$name=value` split into the parameter's
/// name as SQLite spells it (with its prefix) and the value's text.
fn named(arg: &str) -> Option<(&str, &str)> {
    if !arg.starts_with([':', '@', '$']) {
        return None;
    }
    let (name, value) = arg.split_once('=')?;
    let valid = name.len() > 1 && !name[1..].contains(|c: char| c.is_whitespace() || c == '\'' || c == '"');
    valid.then_some((name, value))
}

/// Whether any argument has the named form; only then is the SQL prepared
/// locally (positional parameters are counted by the broker, which also takes
/// SQL whose later statements use tables its earlier ones create).
pub(crate) fn any_named(args: &[String]) -> bool {
    args.iter().any(|a| named(a).is_some())
}

/// The values of `args` in the order SQLite numbers the parameters of the
/// statements in `prepared` (statement after statement, as the broker hands them
/// out): each named argument goes to every parameter of that name, the
/// positional ones fill the remaining parameters in order.
///
/// # Errors
/// A usage error (exit 2) for a name the SQL does not have or one given twice;
/// an SQL error (exit 1, as the broker reports a count mismatch) when the
/// positional values do not match the parameters left.
pub(crate) fn resolve(args: &[String], prepared: &[Prepared]) -> Result<Vec<Value>, Failure> {
    let slots: Vec<Option<&str>> =
        prepared.iter().flat_map(|p| p.params.iter().map(Option::as_deref)).collect();
    let mut values: Vec<Option<Value>> = vec![None; slots.len()];
    let mut positional = Vec::new();
    for arg in args {
        let Some((name, text)) = named(arg) else {
            positional.push(arg);
            continue;
        };
        let mut found = false;
        for (slot, value) in slots.iter().zip(values.iter_mut()) {
            if *slot == Some(name) {
                if value.is_some() {
                    return Err(fail(2, "usage", format!("the parameter {name} is given twice")));
                }
                *value = Some(parse_param(text));
                found = true;
            }
        }
        if !found {
            let known: Vec<&str> = slots.iter().flatten().copied().filter(|n| !n.starts_with('?')).collect();
            let known = if known.is_empty() { "none".to_owned() } else { known.join(", ") };
            return Err(fail(
                2,
                "usage",
                format!(
                    "the SQL has no parameter named {name} (its named parameters: {known}); to pass the \
                     text {arg:?} as a positional parameter, give it as a JSON string: '{}'",
                    Json::String(arg.clone())
                ),
            ));
        }
    }
    let open = values.iter().filter(|v| v.is_none()).count();
    if open != positional.len() {
        return Err(fail(
            1,
            "sql",
            format!(
                "the SQL has {} parameter placeholder(s); {} are not given by name but {} positional \
                 parameter(s) were given",
                slots.len(),
                open,
                positional.len()
            ),
        ));
    }
    let mut positional = positional.into_iter();
    Ok(values
        .into_iter()
        .map(|v| v.unwrap_or_else(|| positional.next().map_or(Value::Null, |p| parse_param(p))))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::statements::Kind;

    #[test]
    fn parameters_are_typed_by_their_json_form() {
        assert_eq!(parse_param("42"), Value::Integer(42));
        assert_eq!(parse_param("-5"), Value::Integer(-5));
        assert_eq!(parse_param("4.5"), Value::Real(4.5));
        assert_eq!(parse_param("-1.5e3"), Value::Real(-1500.0));
        assert_eq!(parse_param("12345678901234567890"), Value::Text("12345678901234567890".into()));
        assert_eq!(parse_param("-9223372036854775809"), Value::Text("-9223372036854775809".into()));
        assert_eq!(parse_param("-9223372036854775808"), Value::Integer(i64::MIN));
        assert_eq!(parse_param("\"42\""), Value::Text("42".into()));
        assert_eq!(parse_param("007"), Value::Text("007".into()));
        assert_eq!(parse_param("true"), Value::Integer(1));
        assert_eq!(parse_param("null"), Value::Null);
        assert_eq!(parse_param("--x"), Value::Text("--x".into()));
        assert_eq!(parse_param("-"), Value::Text("-".into()));
    }

    fn prep(names: &[&[Option<&str>]]) -> Vec<Prepared> {
        names
            .iter()
            .map(|n| Prepared {
                kind: Kind::Read,
                params: n.iter().map(|s| s.map(str::to_owned)).collect(),
                pragma: None,
            })
            .collect()
    }

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn named_parameters_go_where_sqlite_numbered_them() {
        // SELECT :a, ?, @b ; SELECT $c, :a
        let p = prep(&[&[Some(":a"), None, Some("@b")], &[Some("$c"), Some(":a")]]);
        let v = resolve(&strings(&["@b=x", ":a=1", "7", "$c=null"]), &p)
            .unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(
            v,
            [Value::Integer(1), Value::Integer(7), Value::Text("x".into()), Value::Null, Value::Integer(1)]
        );
        // A positional value fills a named parameter not given by name.
        let v = resolve(&strings(&[":a=", "2", "3"]), &p[..1]).unwrap_or_else(|f| panic!("{}", f.message));
        assert_eq!(v, [Value::Text(String::new()), Value::Integer(2), Value::Integer(3)]);
        assert_eq!(resolve(&strings(&[":nope=1"]), &p).err().map(|f| f.code), Some(2));
        assert_eq!(resolve(&strings(&[":a=1", ":a=2", "1", "2", "3"]), &p).err().map(|f| f.code), Some(2));
        assert_eq!(resolve(&strings(&[":a=1"]), &p).err().map(|f| f.code), Some(1));
        assert!(!any_named(&strings(&["-5", "--x", ":", "=1", "a=1", ": x=1"])));
        assert!(any_named(&strings(&["$x=1"])));
    }
}
