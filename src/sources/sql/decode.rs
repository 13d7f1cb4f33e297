//! Rows to JSON: each column decoded by its database type, so numbers stay
//! numbers, timestamps become RFC 3339 strings and JSON columns are
//! embedded as they are.

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};
use serde_json::Map;
use sqlx::{Column, Row, TypeInfo, ValueRef};

use crate::enrich::EnrichError;
use crate::event::Value;
use crate::lookup::Key;

type ColumnDecoder<R> = fn(&R, usize, &str) -> Result<Option<Value>, EnrichError>;

/// One row → (key, object of its columns).
pub(super) fn row_to_json<R: Row>(
    row: &R,
    key_column: Option<&str>,
    nulls_as_null: bool,
    decode: ColumnDecoder<R>,
) -> Result<(Key, Value), EnrichError> {
    let mut obj = Map::with_capacity(row.columns().len());
    let mut key = None;
    for (i, col) in row.columns().iter().enumerate() {
        let name = col.name();
        let value = decode(row, i, name)?;
        let is_key = match key_column {
            Some(k) => k == name,
            None => i == 0,
        };
        if is_key {
            key = value.as_ref().and_then(Key::from_value);
        }
        match value {
            Some(v) => {
                obj.insert(name.to_owned(), v);
            }
            None if nulls_as_null => {
                obj.insert(name.to_owned(), Value::Null);
            }
            None => {}
        }
    }
    let key = key.ok_or_else(|| {
        EnrichError::msg(format!(
            "query result has no usable key column {:?} (integer or text, not null)",
            key_column.unwrap_or("<first column>")
        ))
    })?;
    Ok((key, Value::Object(obj)))
}

fn unsupported(column: &str, ty: &str) -> EnrichError {
    EnrichError::msg(format!(
        "column {column:?} has type {ty}, which the sql lookup does not convert: cast it in the query to an integer, float, boolean, text, timestamp or json type"
    ))
}

fn decode_err(column: &str, e: sqlx::Error) -> EnrichError {
    EnrichError::new(format!("could not read column {column:?}"), e)
}

fn ts(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::AutoSi, true))
}

#[cfg(any(feature = "postgres", feature = "mysql"))]
fn naive_ts(t: chrono::NaiveDateTime) -> Value {
    ts(t.and_utc())
}

fn float(f: f64) -> Value {
    serde_json::Number::from_f64(f)
        .map(Value::Number)
        .unwrap_or_else(|| Value::String(f.to_string()))
}

/// Decodes a value whose database type the caller has matched by name, so
/// the type check `Row::try_get` repeats (and the second index lookup) is
/// skipped: it was a tenth of the worker's time per cold row.
#[cfg(any(feature = "postgres", feature = "mysql"))]
macro_rules! dec {
    ($db:ty, $raw:expr, $col:expr, $t:ty, $map:expr) => {
        <$t as sqlx::Decode<$db>>::decode($raw)
            .map(|v| Some($map(v)))
            .map_err(|e| decode_err($col, sqlx::Error::Decode(e)))?
    };
}

/// `Row::try_get`, type check included: SQLite's values are typed one by
/// one, and its decoders would coerce a mistyped value (text in an
/// INTEGER column) rather than fail.
#[cfg(feature = "sqlite")]
macro_rules! get {
    ($row:expr, $i:expr, $col:expr, $t:ty, $map:expr) => {
        $row.try_get::<Option<$t>, _>($i)
            .map_err(|e| decode_err($col, e))?
            .map($map)
    };
}

/// A column of a type not listed: text under another name (a `_bin`
/// collation reported as VARBINARY, a domain over text) is read as text;
/// anything else is an error naming the column.
macro_rules! text_or_unsupported {
    ($row:expr, $i:expr, $col:expr, $ty:expr) => {
        match $row.try_get::<Option<String>, _>($i) {
            Ok(v) => v.map(Value::String),
            Err(_) => return Err(unsupported($col, $ty)),
        }
    };
}

#[cfg(feature = "postgres")]
pub(super) fn pg_value(
    row: &sqlx::postgres::PgRow,
    i: usize,
    col: &str,
) -> Result<Option<Value>, EnrichError> {
    let raw = row.try_get_raw(i).map_err(|e| decode_err(col, e))?;
    if raw.is_null() {
        return Ok(None);
    }
    let info = raw.type_info();
    Ok(match info.name() {
        "BOOL" => dec!(sqlx::Postgres, raw.clone(), col, bool, Value::Bool),
        "INT2" => dec!(sqlx::Postgres, raw.clone(), col, i16, Value::from),
        "INT4" => dec!(sqlx::Postgres, raw.clone(), col, i32, Value::from),
        "INT8" => dec!(sqlx::Postgres, raw.clone(), col, i64, Value::from),
        "FLOAT4" => dec!(sqlx::Postgres, raw.clone(), col, f32, |f| float(f as f64)),
        "FLOAT8" => dec!(sqlx::Postgres, raw.clone(), col, f64, float),
        // Text is UTF-8 in both wire formats.
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => Some(Value::String(
            raw.as_str()
                .map_err(|e| decode_err(col, sqlx::Error::Decode(e)))?
                .to_owned(),
        )),
        "TIMESTAMPTZ" => dec!(sqlx::Postgres, raw.clone(), col, DateTime<Utc>, ts),
        "TIMESTAMP" => dec!(
            sqlx::Postgres,
            raw.clone(),
            col,
            chrono::NaiveDateTime,
            naive_ts
        ),
        "DATE" => dec!(
            sqlx::Postgres,
            raw.clone(),
            col,
            NaiveDate,
            |d: NaiveDate| Value::String(d.to_string())
        ),
        "TIME" => dec!(
            sqlx::Postgres,
            raw.clone(),
            col,
            NaiveTime,
            |t: NaiveTime| Value::String(t.to_string())
        ),
        "JSON" | "JSONB" => dec!(sqlx::Postgres, raw.clone(), col, serde_json::Value, |v| v),
        other => text_or_unsupported!(row, i, col, other),
    })
}

#[cfg(feature = "mysql")]
pub(super) fn mysql_value(
    row: &sqlx::mysql::MySqlRow,
    i: usize,
    col: &str,
) -> Result<Option<Value>, EnrichError> {
    let raw = row.try_get_raw(i).map_err(|e| decode_err(col, e))?;
    if raw.is_null() {
        return Ok(None);
    }
    let info = raw.type_info();
    let ty = info.name();
    Ok(match ty {
        "BOOLEAN" => dec!(sqlx::MySql, raw.clone(), col, bool, Value::Bool),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            dec!(sqlx::MySql, raw.clone(), col, i64, Value::from)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => dec!(sqlx::MySql, raw.clone(), col, u64, Value::from),
        "FLOAT" => dec!(sqlx::MySql, raw.clone(), col, f32, |f| float(f as f64)),
        "DOUBLE" => dec!(sqlx::MySql, raw.clone(), col, f64, float),
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" => {
            dec!(sqlx::MySql, raw.clone(), col, String, Value::String)
        }
        "TIMESTAMP" => dec!(sqlx::MySql, raw.clone(), col, DateTime<Utc>, ts),
        "DATETIME" => dec!(
            sqlx::MySql,
            raw.clone(),
            col,
            chrono::NaiveDateTime,
            naive_ts
        ),
        "DATE" => dec!(sqlx::MySql, raw.clone(), col, NaiveDate, |d: NaiveDate| {
            Value::String(d.to_string())
        }),
        "TIME" => dec!(sqlx::MySql, raw.clone(), col, NaiveTime, |t: NaiveTime| {
            Value::String(t.to_string())
        }),
        "JSON" => dec!(sqlx::MySql, raw.clone(), col, serde_json::Value, |v| v),
        other => text_or_unsupported!(row, i, col, other),
    })
}

#[cfg(feature = "sqlite")]
pub(super) fn sqlite_value(
    row: &sqlx::sqlite::SqliteRow,
    i: usize,
    col: &str,
) -> Result<Option<Value>, EnrichError> {
    let raw = row.try_get_raw(i).map_err(|e| decode_err(col, e))?;
    if raw.is_null() {
        return Ok(None);
    }
    // SQLite values are dynamically typed: prefer the column's declared type
    // (`BOOLEAN`, `DATETIME`), else the value's storage class.
    let declared = row.columns()[i].type_info().name();
    let ty = if declared == "NULL" {
        raw.type_info().name().to_owned()
    } else {
        declared.to_owned()
    };
    Ok(match ty.as_str() {
        "BOOLEAN" => get!(row, i, col, bool, Value::Bool),
        "INTEGER" => get!(row, i, col, i64, Value::from),
        "REAL" => get!(row, i, col, f64, float),
        "TEXT" => get!(row, i, col, String, Value::String),
        "DATETIME" => get!(row, i, col, DateTime<Utc>, ts),
        "DATE" => get!(row, i, col, NaiveDate, |d| Value::String(d.to_string())),
        "TIME" => get!(row, i, col, NaiveTime, |t| Value::String(t.to_string())),
        other => text_or_unsupported!(row, i, col, other),
    })
}
