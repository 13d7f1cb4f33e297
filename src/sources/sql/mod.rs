//! `SqlLookup`: values from PostgreSQL, MySQL/MariaDB or SQLite through
//! `sqlx` pools.
//!
//! The query fetches a whole batch of keys in one round trip; keys are
//! always bound parameters, never spliced into SQL:
//!
//! | database | batch query | binding |
//! | --- | --- | --- |
//! | PostgreSQL | `SELECT id, name FROM users WHERE id = ANY($1)` | one array parameter: one prepared statement for any batch size |
//! | MySQL, MariaDB, SQLite | `SELECT id, name FROM users WHERE id IN ({keys})` | `{keys}` becomes `?, ?, …`, one bound parameter per key |
//!
//! Each row becomes a JSON object of its columns, keyed by the
//! [`key_column`](SqlLookupBuilder::key_column) (default: the first
//! column). Types are kept: integers, floats and booleans stay numbers and
//! booleans; text stays text; timestamps become RFC 3339 strings (UTC);
//! JSON columns are embedded as JSON. Other types (PostgreSQL `NUMERIC`,
//! `UUID`, MySQL `DECIMAL`…) should be cast in the query (`price::float8`,
//! `id::text`, `CAST(price AS DOUBLE)`); the lookup fails with an error naming
//! the column otherwise. `NULL` columns are left out of the object, or kept
//! as `null` with [`nulls_as_null`](SqlLookupBuilder::nulls_as_null).
//!
//! Keys are converted, one by one, to what the query compares them with —
//! read once at start-up from the prepared statement (PostgreSQL: the type
//! of `$1`; MySQL/MariaDB and SQLite: the key column's type in the result):
//! an integer column takes integer keys and text holding an integer
//! (`"42"` finds row 42); a text column takes any key as text. A key the
//! column cannot hold (`7abc` or `true` for an integer column, a number out
//! of the column's range, a NUL byte in PostgreSQL text) is *not found* for
//! itself alone: it never fails the other keys of its batch and never
//! reaches the circuit breaker. Other key types (`UUID`, `NUMERIC`…) are
//! sent as they are; cast in the query (`WHERE id::text = ANY($1)`) to make
//! them text.
//!
//! The database URL is never written to a log record, an error message or a
//! `Debug` output with its password.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::TryStreamExt;
use sqlx::{AssertSqlSafe, ConnectOptions};
use tokio::sync::OnceCell;

mod decode;
mod keys;

use crate::enrich::EnrichError;
use crate::error::ConfigError;
use crate::lookup::{Found, Key, Lookup};
#[cfg(feature = "mysql")]
use decode::mysql_value;
#[cfg(feature = "postgres")]
use decode::pg_value;
use decode::row_to_json;
#[cfg(feature = "sqlite")]
use decode::sqlite_value;
use keys::{Bound, KeyType, Prepared};

/// Pool settings for a [`SqlLookup`].
///
/// | setting | default |
/// | --- | --- |
/// | `min_connections` | 0 |
/// | `max_connections` | 5 |
/// | `acquire_timeout` | 2 s |
/// | `idle_timeout` | 10 min |
/// | `test_before_acquire` | true |
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolSettings {
    /// Connections kept open even when idle.
    pub min_connections: u32,
    /// The most connections the pool opens.
    pub max_connections: u32,
    /// Longest a query waits for a free connection.
    pub acquire_timeout: Duration,
    /// Idle connections above the minimum are closed after this.
    pub idle_timeout: Duration,
    /// Ping a connection before handing it out (catches connections the
    /// server closed, at the cost of a round trip).
    pub test_before_acquire: bool,
}

impl PoolSettings {
    /// Connections kept open even when idle.
    #[must_use]
    pub fn min_connections(mut self, n: u32) -> Self {
        self.min_connections = n;
        self
    }

    /// The most connections the pool opens.
    #[must_use]
    pub fn max_connections(mut self, n: u32) -> Self {
        self.max_connections = n;
        self
    }

    /// Longest a query waits for a free connection.
    #[must_use]
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = timeout;
        self
    }

    /// Idle connections above the minimum are closed after this.
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Whether to ping a connection before handing it out.
    #[must_use]
    pub fn test_before_acquire(mut self, on: bool) -> Self {
        self.test_before_acquire = on;
        self
    }
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            min_connections: 0,
            max_connections: 5,
            acquire_timeout: Duration::from_secs(2),
            idle_timeout: Duration::from_secs(600),
            test_before_acquire: true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    #[cfg(feature = "postgres")]
    Postgres,
    #[cfg(feature = "mysql")]
    MySql,
    #[cfg(feature = "sqlite")]
    Sqlite,
}

#[derive(Debug, Clone)]
enum Pool {
    #[cfg(feature = "postgres")]
    Postgres(sqlx::PgPool),
    #[cfg(feature = "mysql")]
    MySql(sqlx::MySqlPool),
    #[cfg(feature = "sqlite")]
    Sqlite(sqlx::SqlitePool),
}

/// Configures a [`SqlLookup`].
#[derive(Clone)]
pub struct SqlLookupBuilder {
    url: String,
    query: Option<String>,
    key_column: Option<String>,
    nulls_as_null: bool,
    pool: PoolSettings,
    health_query: String,
}

impl fmt::Debug for SqlLookupBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlLookupBuilder")
            .field("url", &redact_url(&self.url))
            .field("query", &self.query)
            .field("key_column", &self.key_column)
            .field("pool", &self.pool)
            .finish_non_exhaustive()
    }
}

/// A [`Lookup`] that runs one query per batch of keys on a connection pool.
///
/// ```no_run
/// use fapilog::lookup::LookupEnricher;
/// use fapilog::sources::SqlLookup;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let users = SqlLookup::builder("postgres://app@localhost/app")
///     .query("SELECT id, name, tier FROM users WHERE id = ANY($1)")
///     .build()?;
/// let enricher = LookupEnricher::builder("user", users)
///     .key_field("user_id")
///     .build();
/// let guard = fapilog::builder().async_enricher(enricher).init()?;
/// # drop(guard); Ok(()) }
/// ```
pub struct SqlLookup {
    url: String,
    backend: Backend,
    query: Arc<str>,
    key_column: Option<String>,
    nulls_as_null: bool,
    pool_settings: PoolSettings,
    health_query: Arc<str>,
    pool: OnceCell<Pool>,
    /// What the query compares keys with, read from the statement at
    /// start-up.
    key_type: std::sync::OnceLock<KeyType>,
}

impl fmt::Debug for SqlLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlLookup")
            .field("url", &redact_url(&self.url))
            .field("backend", &self.backend)
            .field("query", &self.query)
            .field("pool", &self.pool_settings)
            .finish_non_exhaustive()
    }
}

/// The URL with its password (and password-like query parameters) hidden.
pub(crate) fn redact_url(url: &str) -> String {
    crate::enrich::redact::url(url, crate::enrich::redact::Query::HidePasswords)
}

impl SqlLookup {
    /// Starts configuring a lookup on the database at `url`
    /// (`postgres://…`, `mysql://…`, `mariadb://…` or `sqlite:…`).
    #[must_use]
    pub fn builder(url: impl Into<String>) -> SqlLookupBuilder {
        SqlLookupBuilder {
            url: url.into(),
            query: None,
            key_column: None,
            nulls_as_null: false,
            pool: PoolSettings::default(),
            health_query: "SELECT 1".to_owned(),
        }
    }

    /// The pool, once started (for tests and for sharing with the
    /// application).
    #[cfg(feature = "postgres")]
    pub fn pg_pool(&self) -> Option<&sqlx::PgPool> {
        match self.pool.get() {
            Some(Pool::Postgres(p)) => Some(p),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    fn pool(&self) -> Result<&Pool, EnrichError> {
        self.pool
            .get()
            .ok_or_else(|| EnrichError::msg("sql lookup used before start-up"))
    }
}

impl SqlLookupBuilder {
    /// The batch query (see the module docs for each database's form).
    #[must_use]
    pub fn query(mut self, sql: impl Into<String>) -> Self {
        self.query = Some(sql.into());
        self
    }

    /// The column holding the key in each row (default: the first column).
    #[must_use]
    pub fn key_column(mut self, column: impl Into<String>) -> Self {
        self.key_column = Some(column.into());
        self
    }

    /// Keep `NULL` columns as JSON `null` instead of leaving them out.
    #[must_use]
    pub fn nulls_as_null(mut self) -> Self {
        self.nulls_as_null = true;
        self
    }

    /// Pool settings.
    #[must_use]
    pub fn pool(mut self, settings: PoolSettings) -> Self {
        self.pool = settings;
        self
    }

    /// The health-check query (default `SELECT 1`).
    #[must_use]
    pub fn health_query(mut self, sql: impl Into<String>) -> Self {
        self.health_query = sql.into();
        self
    }

    /// Checks the settings. Connecting happens at the enricher's start-up.
    pub fn build(self) -> Result<SqlLookup, ConfigError> {
        let backend = backend_of(&self.url)?;
        let query = self.query.ok_or_else(|| {
            ConfigError::msg("sql lookup needs a query: call `.query(\"SELECT … WHERE id = ANY($1)\")` (PostgreSQL) or `.query(\"SELECT … WHERE id IN ({keys})\")` (MySQL, SQLite)".to_owned())
        })?;
        match backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => {
                if !query.contains("$1") || query.contains("{keys}") {
                    return Err(ConfigError::msg(format!(
                        "postgresql lookup query must bind the keys as one array parameter, `= ANY($1)`; got {query:?}"
                    )));
                }
            }
            #[allow(unreachable_patterns)]
            _ => {
                if !query.contains("{keys}") {
                    return Err(ConfigError::msg(format!(
                        "mysql and sqlite lookup queries must contain `IN ({{keys}})`, which becomes one bound parameter per key; got {query:?}"
                    )));
                }
            }
        }
        if self.pool.max_connections == 0 || self.pool.min_connections > self.pool.max_connections {
            return Err(ConfigError::msg(format!(
                "pool needs 1 <= max_connections and min_connections <= max_connections; got min {} max {}",
                self.pool.min_connections, self.pool.max_connections
            )));
        }
        Ok(SqlLookup {
            url: self.url,
            backend,
            query: Arc::from(query),
            key_column: self.key_column,
            nulls_as_null: self.nulls_as_null,
            pool_settings: self.pool,
            health_query: Arc::from(self.health_query),
            pool: OnceCell::new(),
            key_type: std::sync::OnceLock::new(),
        })
    }
}

fn backend_of(url: &str) -> Result<Backend, ConfigError> {
    let scheme = url.split(':').next().unwrap_or("");
    match scheme {
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => Ok(Backend::Postgres),
        #[cfg(feature = "mysql")]
        "mysql" | "mariadb" => Ok(Backend::MySql),
        #[cfg(feature = "sqlite")]
        "sqlite" => Ok(Backend::Sqlite),
        other => Err(ConfigError::msg(format!(
            "unsupported database url scheme {other:?} in {}: expected postgres://, mysql://, mariadb:// or sqlite: (each needs its cargo feature: `postgres`, `mysql`, `sqlite`)",
            redact_url(url)
        ))),
    }
}

fn connect_error(url: &str, e: sqlx::Error) -> EnrichError {
    // sqlx errors do not carry the password; the URL we add is redacted.
    EnrichError::new(format!("could not connect to {}", redact_url(url)), e)
}

fn query_error(e: sqlx::Error) -> EnrichError {
    match e {
        sqlx::Error::PoolTimedOut => {
            EnrichError::msg("no free database connection (pool acquire timed out)")
        }
        sqlx::Error::PoolClosed => EnrichError::msg("database pool closed"),
        other => EnrichError::new("database query failed", other),
    }
}

macro_rules! pool_options {
    ($opts:ty, $s:expr) => {
        <$opts>::new()
            .min_connections($s.min_connections)
            .max_connections($s.max_connections)
            .acquire_timeout($s.acquire_timeout)
            .idle_timeout(Some($s.idle_timeout))
            .test_before_acquire($s.test_before_acquire)
    };
}

impl Lookup for SqlLookup {
    async fn startup(&self) -> Result<(), EnrichError> {
        let s = self.pool_settings;
        let url = self.url.as_str();
        // The lookup's own statements are internals: keep them out of the
        // application's log stream (sqlx logs them through `tracing`, also
        // on threads the pipeline does not own, e.g. SQLite's workers).
        macro_rules! connect {
            ($opts:ty, $pool:ty, $url:expr, $variant:ident) => {{
                let url: &str = $url;
                let opts = <$opts>::from_str(url)
                    .map_err(|e| connect_error(url, e))?
                    .disable_statement_logging();
                let pool = pool_options!($pool, s)
                    .connect_with(opts)
                    .await
                    .map_err(|e| connect_error(url, e))?;
                Pool::$variant(pool)
            }};
        }
        let pool = match self.backend {
            #[cfg(feature = "postgres")]
            Backend::Postgres => connect!(
                sqlx::postgres::PgConnectOptions,
                sqlx::postgres::PgPoolOptions,
                url,
                Postgres
            ),
            #[cfg(feature = "mysql")]
            Backend::MySql => connect!(
                sqlx::mysql::MySqlConnectOptions,
                sqlx::mysql::MySqlPoolOptions,
                &url.replacen("mariadb://", "mysql://", 1),
                MySql
            ),
            #[cfg(feature = "sqlite")]
            Backend::Sqlite => connect!(
                sqlx::sqlite::SqliteConnectOptions,
                sqlx::sqlite::SqlitePoolOptions,
                url,
                Sqlite
            ),
        };
        let key_type = match self.key_type_of(&pool).await {
            Ok(t) => t,
            Err(e) => {
                close(&pool).await;
                return Err(e);
            }
        };
        let _ = self.key_type.set(key_type);
        // A retried start-up after a failure may race nobody: start-up runs
        // once at a time. Keep the first pool if one exists.
        if self.pool.set(pool.clone()).is_err() {
            close(&pool).await;
        }
        Ok(())
    }

    async fn shutdown(&self) -> Result<(), EnrichError> {
        if let Some(pool) = self.pool.get() {
            close(pool).await;
        }
        Ok(())
    }

    async fn health_check(&self) -> Result<(), EnrichError> {
        let sql = AssertSqlSafe(self.health_query.clone());
        match self.pool()? {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            #[cfg(feature = "mysql")]
            Pool::MySql(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p) => sqlx::query(sql).execute(p).await.map(|_| ()),
        }
        .map_err(query_error)
    }

    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        let ty = self.key_type.get().copied().unwrap_or(KeyType::Any);
        let prepared = Prepared::new(keys, ty);
        let mut found = Found::with_capacity(prepared.bound.len());
        if prepared.bound.is_empty() {
            // None of these keys can match: not found, without a query.
            return Ok(found);
        }
        let key_col = self.key_column.as_deref();
        let nulls = self.nulls_as_null;
        let bound = &prepared.bound;
        match self.pool()? {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                // The SQL comes from the application's configuration; the keys
                // are bound as one array parameter of the type `$1` has,
                // never spliced in.
                let q = sqlx::query(AssertSqlSafe(self.query.clone()));
                let ints = || {
                    bound.iter().filter_map(|b| match b {
                        Bound::Int(i) => Some(*i),
                        _ => None,
                    })
                };
                let q = match ty {
                    // `convert` has checked the range.
                    KeyType::Int(2) => q.bind(ints().map(|i| i as i16).collect::<Vec<i16>>()),
                    KeyType::Int(4) => q.bind(ints().map(|i| i as i32).collect::<Vec<i32>>()),
                    KeyType::Int(_) => q.bind(ints().collect::<Vec<i64>>()),
                    KeyType::Text { .. } => q.bind(
                        bound
                            .iter()
                            .filter_map(|b| match b {
                                Bound::Text(s) => Some(s.clone()),
                                _ => None,
                            })
                            .collect::<Vec<String>>(),
                    ),
                    // PostgreSQL has no unsigned types; send them as text.
                    KeyType::UInt(_) => {
                        q.bind(bound.iter().map(bound_text).collect::<Vec<String>>())
                    }
                    KeyType::Any => {
                        if bound.iter().all(|b| matches!(b, Bound::Raw(Key::Int(_)))) {
                            q.bind(
                                bound
                                    .iter()
                                    .filter_map(|b| match b {
                                        Bound::Raw(Key::Int(i)) => Some(*i),
                                        _ => None,
                                    })
                                    .collect::<Vec<i64>>(),
                            )
                        } else {
                            q.bind(bound.iter().map(bound_text).collect::<Vec<String>>())
                        }
                    }
                };
                // Rows are decoded as they arrive, not gathered first.
                let mut rows = q.fetch(p);
                while let Some(row) = rows.try_next().await.map_err(query_error)? {
                    let (k, v) = row_to_json(&row, key_col, nulls, pg_value)?;
                    prepared.answer(&mut found, k, v);
                }
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(p) => {
                let sql = expand_keys(&self.query, bound.len());
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for b in bound {
                    q = match b {
                        Bound::Int(i) | Bound::Raw(Key::Int(i)) => q.bind(*i),
                        Bound::UInt(u) | Bound::Raw(Key::UInt(u)) => q.bind(*u),
                        Bound::Raw(Key::Bool(v)) => q.bind(*v),
                        Bound::Text(_) | Bound::Raw(Key::Str(_)) => q.bind(bound_text(b)),
                    };
                }
                // Rows are decoded as they arrive, not gathered first.
                let mut rows = q.fetch(p);
                while let Some(row) = rows.try_next().await.map_err(query_error)? {
                    let (k, v) = row_to_json(&row, key_col, nulls, mysql_value)?;
                    prepared.answer(&mut found, k, v);
                }
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p) => {
                let sql = expand_keys(&self.query, bound.len());
                let mut q = sqlx::query(AssertSqlSafe(sql));
                for b in bound {
                    q = match b {
                        Bound::Int(i) | Bound::Raw(Key::Int(i)) => q.bind(*i),
                        Bound::Raw(Key::Bool(v)) => q.bind(*v),
                        Bound::UInt(_)
                        | Bound::Raw(Key::UInt(_) | Key::Str(_))
                        | Bound::Text(_) => q.bind(bound_text(b)),
                    };
                }
                // Rows are decoded as they arrive, not gathered first.
                let mut rows = q.fetch(p);
                while let Some(row) = rows.try_next().await.map_err(query_error)? {
                    let (k, v) = row_to_json(&row, key_col, nulls, sqlite_value)?;
                    prepared.answer(&mut found, k, v);
                }
            }
        }
        Ok(found)
    }
}

/// A bound key as text.
fn bound_text(b: &Bound) -> String {
    match b {
        Bound::Int(i) => i.to_string(),
        Bound::UInt(u) => u.to_string(),
        Bound::Text(s) => s.clone(),
        Bound::Raw(k) => k.to_string(),
    }
}

impl SqlLookup {
    /// The key type from the key column of the result: MySQL and SQLite do
    /// not type their parameters, so the column the keys are compared with
    /// is read off what the query returns.
    #[cfg(any(feature = "mysql", feature = "sqlite"))]
    fn key_column_type<'c>(&self, columns: impl Iterator<Item = (&'c str, &'c str)>) -> KeyType {
        let mut columns = columns;
        let found = match &self.key_column {
            Some(k) => columns.find(|(n, _)| n == k),
            None => columns.next(),
        };
        found.map_or(KeyType::Any, |(_, t)| KeyType::from_type_name(t, true))
    }

    /// Reads what the query compares keys with from its prepared form.
    async fn key_type_of(&self, pool: &Pool) -> Result<KeyType, EnrichError> {
        use sqlx::{Executor, SqlSafeStr, Statement, TypeInfo};
        let prepare_error = |e: sqlx::Error| {
            EnrichError::new("the lookup query does not prepare; check its SQL", e)
        };
        let ty = match pool {
            #[cfg(feature = "postgres")]
            Pool::Postgres(p) => {
                let st = p
                    .prepare(AssertSqlSafe(self.query.to_string()).into_sql_str())
                    .await
                    .map_err(prepare_error)?;
                match st.parameters() {
                    Some(sqlx::Either::Left([first, ..])) => {
                        KeyType::from_type_name(first.name(), false)
                    }
                    _ => KeyType::Any,
                }
            }
            #[cfg(feature = "mysql")]
            Pool::MySql(p) => {
                let st = p
                    .prepare(AssertSqlSafe(expand_keys(&self.query, 1)).into_sql_str())
                    .await
                    .map_err(prepare_error)?;
                self.key_column_type(st.columns().iter().map(|c| {
                    use sqlx::Column;
                    (c.name(), c.type_info().name())
                }))
            }
            #[cfg(feature = "sqlite")]
            Pool::Sqlite(p) => {
                let st = p
                    .prepare(AssertSqlSafe(expand_keys(&self.query, 1)).into_sql_str())
                    .await
                    .map_err(prepare_error)?;
                self.key_column_type(st.columns().iter().map(|c| {
                    use sqlx::Column;
                    (c.name(), c.type_info().name())
                }))
            }
        };
        Ok(ty)
    }
}

async fn close(pool: &Pool) {
    match pool {
        #[cfg(feature = "postgres")]
        Pool::Postgres(p) => p.close().await,
        #[cfg(feature = "mysql")]
        Pool::MySql(p) => p.close().await,
        #[cfg(feature = "sqlite")]
        Pool::Sqlite(p) => p.close().await,
    }
}

/// `IN ({keys})` → `IN (?, ?, ?)`.
#[allow(dead_code)]
fn expand_keys(sql: &str, n: usize) -> String {
    let mut params = String::with_capacity(n * 3);
    for i in 0..n {
        if i > 0 {
            params.push_str(", ");
        }
        params.push('?');
    }
    sql.replace("{keys}", &params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/app"),
            "postgres://app:***@db:5432/app"
        );
        assert_eq!(redact_url("sqlite::memory:"), "sqlite::memory:");
        let b =
            SqlLookup::builder("postgres://app:s3cret@db/app").query("SELECT 1 WHERE 1 = ANY($1)");
        assert!(!format!("{b:?}").contains("s3cret"));
    }

    #[test]
    fn keys_placeholder_expands_to_bound_parameters() {
        assert_eq!(
            expand_keys("SELECT * FROM t WHERE id IN ({keys})", 3),
            "SELECT * FROM t WHERE id IN (?, ?, ?)"
        );
    }

    #[test]
    fn bad_settings_are_named() {
        let e = SqlLookup::builder("oracle://x")
            .query("q")
            .build()
            .unwrap_err();
        assert!(
            e.to_string().contains("unsupported database url scheme"),
            "{e}"
        );
        let e = SqlLookup::builder("sqlite::memory:").build().unwrap_err();
        assert!(e.to_string().contains("needs a query"), "{e}");
        let e = SqlLookup::builder("sqlite::memory:")
            .query("SELECT * FROM t WHERE id = ?")
            .build()
            .unwrap_err();
        assert!(e.to_string().contains("{keys}"), "{e}");
    }
}
