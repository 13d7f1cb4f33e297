//! Keys as the database can compare them.
//!
//! The type the query compares keys with is read once, at start-up, from
//! the prepared statement (PostgreSQL: the type of `$1`; MySQL and SQLite,
//! which do not say: the type of the key column of the result). Each key
//! is then converted to that type on its own: one that cannot be (a word
//! for an integer column, a NUL byte for PostgreSQL text, an integer out of
//! the column's range) is *not found* for itself alone — it never fails the
//! other keys of its batch, and never reaches the circuit breaker.

use crate::lookup::{FastMap, Found, Key};

/// What the database compares keys with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum KeyType {
    /// An integer column of this many bytes (2, 4 or 8).
    Int(u8),
    /// An unsigned integer column of this many bytes (MySQL's `UNSIGNED`).
    UInt(u8),
    /// Text; `nul_ok` when the database can store a NUL byte in it.
    Text { nul_ok: bool },
    /// Unknown (a type the lookup does not convert to): keys are sent as
    /// they are, integers as integers and the rest as text.
    Any,
}

impl KeyType {
    /// From a database type name (`INT8[]`, `INT4`, `BIGINT UNSIGNED`,
    /// `VARCHAR`, `TEXT`, `INTEGER`…).
    pub(super) fn from_type_name(name: &str, nul_ok: bool) -> KeyType {
        let name = name.trim_end_matches("[]").to_ascii_uppercase();
        let base = name.split_whitespace().next().unwrap_or("");
        let unsigned = name.contains("UNSIGNED");
        match base {
            "BIGINT" if unsigned => KeyType::UInt(8),
            "INT" | "INTEGER" | "MEDIUMINT" if unsigned => KeyType::UInt(4),
            "SMALLINT" | "TINYINT" if unsigned => KeyType::UInt(2),
            "INT8" | "BIGINT" | "BIGSERIAL" => KeyType::Int(8),
            // SQLite's INTEGER is 64-bit; MySQL's INT/INTEGER 32-bit.
            "INTEGER" if nul_ok => KeyType::Int(8),
            "INT4" | "INT" | "INTEGER" | "MEDIUMINT" | "SERIAL" => KeyType::Int(4),
            "INT2" | "SMALLINT" | "TINYINT" => KeyType::Int(2),
            "TEXT" | "VARCHAR" | "CHAR" | "BPCHAR" | "NAME" | "CITEXT" | "TINYTEXT"
            | "MEDIUMTEXT" | "LONGTEXT" | "CHARACTER" => KeyType::Text { nul_ok },
            _ => KeyType::Any,
        }
    }
}

/// A key converted for binding.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Bound {
    Int(i64),
    UInt(u64),
    Text(String),
    /// Only for [`KeyType::Any`]: a key kept as it came.
    Raw(Key),
}

impl Bound {
    /// The key the database's answer carries for this bound key.
    fn answer_key(&self) -> Key {
        match self {
            Bound::Int(i) => Key::Int(*i),
            Bound::UInt(u) => Key::from(*u),
            Bound::Text(s) => Key::from(s.as_str()),
            Bound::Raw(k) => k.clone(),
        }
    }
}

/// `key` as `ty` accepts it, or `None` when the database could not match it.
pub(super) fn convert(key: &Key, ty: KeyType) -> Option<Bound> {
    match ty {
        KeyType::Int(bytes) => {
            let i = match key {
                Key::Int(i) => *i,
                Key::UInt(_) | Key::Bool(_) => return None,
                // Strictly digits (and a sign): `7abc`, ` 7` and `7.0` are
                // not the row 7.
                Key::Str(s) => s.parse::<i64>().ok()?,
            };
            let fits = match bytes {
                2 => i16::try_from(i).is_ok(),
                4 => i32::try_from(i).is_ok(),
                _ => true,
            };
            fits.then_some(Bound::Int(i))
        }
        KeyType::UInt(bytes) => {
            let u = match key {
                Key::Int(i) => u64::try_from(*i).ok()?,
                Key::UInt(u) => *u,
                Key::Bool(_) => return None,
                Key::Str(s) => s.parse::<u64>().ok()?,
            };
            let fits = match bytes {
                // TINYINT UNSIGNED is one byte, SMALLINT two: both fit u16
                // checks here, the database answers not found beyond.
                2 => u16::try_from(u).is_ok(),
                4 => u32::try_from(u).is_ok(),
                _ => true,
            };
            fits.then_some(Bound::UInt(u))
        }
        KeyType::Text { nul_ok } => {
            let text = key.to_string();
            (nul_ok || !text.contains('\0')).then_some(Bound::Text(text))
        }
        KeyType::Any => Some(Bound::Raw(key.clone())),
    }
}

/// The keys of one batch as the database takes them, and the way back from
/// the database's answers to the keys that were asked for.
pub(super) struct Prepared {
    /// Distinct converted keys, in first-seen order.
    pub(super) bound: Vec<Bound>,
    /// For each converted key's answer key, the keys asked for.
    back: FastMap<Key, Asked>,
}

/// The keys that asked for one answer key.
enum Asked {
    /// Only the answer key itself (the common case: no copy kept).
    Same,
    /// One other key.
    Other(Key),
    /// Several keys.
    Many(Vec<Key>),
}

impl Asked {
    fn add(&mut self, answer: &Key, key: &Key) {
        let first = match std::mem::replace(self, Asked::Same) {
            Asked::Same => answer.clone(),
            Asked::Other(k) => k,
            Asked::Many(mut keys) => {
                keys.push(key.clone());
                *self = Asked::Many(keys);
                return;
            }
        };
        *self = Asked::Many(vec![first, key.clone()]);
    }
}

impl Prepared {
    pub(super) fn new(keys: &[Key], ty: KeyType) -> Self {
        let mut bound = Vec::with_capacity(keys.len());
        let mut back: FastMap<Key, Asked> =
            FastMap::with_capacity_and_hasher(keys.len(), Default::default());
        for key in keys {
            let Some(b) = convert(key, ty) else { continue };
            let answer = b.answer_key();
            match back.get_mut(&answer) {
                Some(asked) => asked.add(&answer, key),
                None => {
                    let asked = if answer == *key {
                        Asked::Same
                    } else {
                        Asked::Other(key.clone())
                    };
                    back.insert(answer, asked);
                    bound.push(b);
                }
            }
        }
        Prepared { bound, back }
    }

    /// Files one answer row under every key that asked for it.
    pub(super) fn answer(&self, found: &mut Found, row_key: Key, value: crate::event::Value) {
        match self.back.get(&row_key) {
            Some(Asked::Same) => {
                found.insert(row_key, value);
            }
            Some(Asked::Other(k)) => {
                found.insert(k.clone(), value);
            }
            Some(Asked::Many(asked)) => {
                for k in &asked[1..] {
                    found.insert(k.clone(), value.clone());
                }
                found.insert(asked[0].clone(), value);
            }
            // A row for a key nobody asked for as such (a case-insensitive
            // collation, say): keep it under its own key, as before.
            None => {
                found.insert(row_key, value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_map_to_key_types() {
        assert_eq!(KeyType::from_type_name("INT8[]", false), KeyType::Int(8));
        assert_eq!(KeyType::from_type_name("INT4[]", false), KeyType::Int(4));
        assert_eq!(
            KeyType::from_type_name("TEXT[]", false),
            KeyType::Text { nul_ok: false }
        );
        assert_eq!(KeyType::from_type_name("BIGINT", true), KeyType::Int(8));
        assert_eq!(
            KeyType::from_type_name("BIGINT UNSIGNED", true),
            KeyType::UInt(8)
        );
        assert_eq!(
            KeyType::from_type_name("INT UNSIGNED", true),
            KeyType::UInt(4)
        );
        assert_eq!(
            KeyType::from_type_name("SMALLINT UNSIGNED", true),
            KeyType::UInt(2)
        );
        assert_eq!(KeyType::from_type_name("INTEGER", true), KeyType::Int(8));
        assert_eq!(
            KeyType::from_type_name("VARCHAR", true),
            KeyType::Text { nul_ok: true }
        );
        assert_eq!(KeyType::from_type_name("UUID[]", false), KeyType::Any);
    }

    #[test]
    fn keys_the_column_cannot_hold_are_dropped_alone() {
        let keys = [
            Key::from(7i64),
            Key::from("8"),
            Key::from("7abc"),
            Key::from(" 9"),
            Key::from("nul\0byte"),
            Key::Bool(true),
            Key::from(1i64 << 40),
        ];
        let p = Prepared::new(&keys, KeyType::Int(4));
        assert_eq!(p.bound, vec![Bound::Int(7), Bound::Int(8)]);
        let p = Prepared::new(&keys, KeyType::Text { nul_ok: false });
        assert_eq!(p.bound.len(), 6, "all but the NUL key: {:?}", p.bound);
    }

    #[test]
    fn unsigned_columns_take_text_ids_and_their_whole_range() {
        let keys = [
            Key::from("42"),
            Key::from(40_000i64),
            Key::from(-1i64),
            Key::from("x"),
        ];
        let p = Prepared::new(&keys, KeyType::UInt(2));
        assert_eq!(p.bound, vec![Bound::UInt(42), Bound::UInt(40_000)]);
        let mut found = Found::new();
        p.answer(&mut found, Key::Int(42), serde_json::json!(1));
        assert_eq!(
            found[&Key::from("42")],
            serde_json::json!(1),
            "a text id finds its row"
        );
    }

    #[test]
    fn one_answer_reaches_every_key_that_asked_for_it() {
        let keys = [Key::from(7i64), Key::from("7"), Key::from("07")];
        let p = Prepared::new(&keys, KeyType::Int(8));
        assert_eq!(p.bound, vec![Bound::Int(7)], "one row asked for once");
        let mut found = Found::new();
        p.answer(&mut found, Key::Int(7), serde_json::json!("seven"));
        assert_eq!(found.len(), 3);
        for k in &keys {
            assert_eq!(found[k], serde_json::json!("seven"));
        }
    }
}
