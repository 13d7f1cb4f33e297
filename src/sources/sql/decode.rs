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
    let ty = info.name();
    Ok(match ty {
        "BOOL" => get!(row, i, col, bool, Value::Bool),
        "INT2" => get!(row, i, col, i16, Value::from),
        "INT4" => get!(row, i, col, i32, Value::from),
        "INT8" => get!(row, i, col, i64, Value::from),
        "FLOAT4" => get!(row, i, col, f32, |f| float(f as f64)),
        "FLOAT8" => get!(row, i, col, f64, float),
        "TEXT" | "VARCHAR" | "BPCHAR" | "NAME" | "CHAR" | "CITEXT" => {
            get!(row, i, col, String, Value::String)
        }
        "TIMESTAMPTZ" => get!(row, i, col, DateTime<Utc>, ts),
        "TIMESTAMP" => get!(row, i, col, chrono::NaiveDateTime, naive_ts),
        "DATE" => get!(row, i, col, NaiveDate, |d| Value::String(d.to_string())),
        "TIME" => get!(row, i, col, NaiveTime, |t| Value::String(t.to_string())),
        "JSON" | "JSONB" => get!(row, i, col, serde_json::Value, |v| v),
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
        "BOOLEAN" => get!(row, i, col, bool, Value::Bool),
        "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT" | "BIGINT" => {
            get!(row, i, col, i64, Value::from)
        }
        "TINYINT UNSIGNED" | "SMALLINT UNSIGNED" | "MEDIUMINT UNSIGNED" | "INT UNSIGNED"
        | "BIGINT UNSIGNED" => get!(row, i, col, u64, Value::from),
        "FLOAT" => get!(row, i, col, f32, |f| float(f as f64)),
        "DOUBLE" => get!(row, i, col, f64, float),
        "VARCHAR" | "CHAR" | "TEXT" | "TINYTEXT" | "MEDIUMTEXT" | "LONGTEXT" | "ENUM" => {
            get!(row, i, col, String, Value::String)
        }
        "TIMESTAMP" => get!(row, i, col, DateTime<Utc>, ts),
        "DATETIME" => get!(row, i, col, chrono::NaiveDateTime, naive_ts),
        "DATE" => get!(row, i, col, NaiveDate, |d| Value::String(d.to_string())),
        "TIME" => get!(row, i, col, NaiveTime, |t| Value::String(t.to_string())),
        "JSON" => get!(row, i, col, serde_json::Value, |v| v),
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
