//! Helpers for the Redis tests: the shared server, private servers a test
//! can stop and restart, unique key prefixes cleaned up afterwards, and the
//! server's own command counters.
//!
//! The shared server comes from `FAPILOG_TEST_REDIS_URL` (default
//! `redis://127.0.0.1:6379`). Its absence fails the tests, with a message
//! saying how to start one.

#![allow(dead_code)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use redis::aio::MultiplexedConnection;

/// The shared server's URL.
pub fn redis_url() -> String {
    std::env::var("FAPILOG_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

const HOW_TO_START: &str = "these tests need a real Redis: start one with \
    `redis-server --port 6379 --save '' --appendonly no` (Debian/Ubuntu: `apt-get install redis-server`) \
    or `docker run --rm -p 6379:6379 redis:7`, or set FAPILOG_TEST_REDIS_URL to a server the tests may write keys to";

/// A connection to the shared server; panics saying how to start one.
pub async fn shared() -> MultiplexedConnection {
    let url = redis_url();
    connect(&url)
        .await
        .unwrap_or_else(|e| panic!("Redis is not reachable at {url} ({e}); {HOW_TO_START}"))
}

/// One connection attempt, bounded.
pub async fn connect(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| e.to_string())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    let mut conn = client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .map_err(|e| e.to_string())?;
    redis::cmd("PING")
        .query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())?;
    Ok(conn)
}

/// A key prefix no other test (in this process or another) uses:
/// `fapilog-test:<test>:<pid>-<n>-<nanos>:`.
pub fn unique_prefix(test: &str) -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "fapilog-test:{test}:{}-{}-{nanos}:",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Deletes every key under a prefix when dropped (also when the test
/// panics). The prefix must hold no glob characters; the keys under it may.
pub struct Cleanup {
    url: String,
    prefix: String,
}

impl Cleanup {
    pub fn new(url: &str, prefix: &str) -> Cleanup {
        assert!(
            !prefix.contains(['*', '?', '[', ']', '\\']),
            "prefix {prefix:?} must not hold glob characters"
        );
        Cleanup {
            url: url.to_owned(),
            prefix: prefix.to_owned(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let pattern = format!("{}*", self.prefix);
        let mut cursor: u64 = 0;
        loop {
            let Ok((next, keys)) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query::<(u64, Vec<Vec<u8>>)>(&mut con)
            else {
                return;
            };
            if !keys.is_empty() {
                let mut del = redis::cmd("DEL");
                for k in &keys {
                    del.arg(k.as_slice());
                }
                let _ = del.query::<i64>(&mut con);
            }
            if next == 0 {
                return;
            }
            cursor = next;
        }
    }
}

/// Calls of `command` the server has counted since it started (or since
/// `CONFIG RESETSTAT`), from `INFO commandstats`: the
/// `cmdstat_<command>:calls=N,…` line; 0 when the command never ran.
pub async fn command_calls(conn: &mut MultiplexedConnection, command: &str) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .expect("INFO commandstats");
    let prefix = format!("cmdstat_{}:", command.to_ascii_lowercase());
    info.lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(|stats| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or_else(|| panic!("no calls= in {stats:?}"))
        })
        .unwrap_or(0)
}

/// A `redis-server` of the test's own on a free loopback port, without
/// persistence, that the test may kill and restart on the same port.
pub struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    /// Starts a server on a free port and waits until it answers.
    pub async fn start() -> PrivateRedis {
        let port = free_port();
        let mut server = PrivateRedis { port, child: None };
        server.restart().await;
        server
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and waits for it to
    /// exit; its data is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port and waits until it
    /// answers; panics after 5 s.
    pub async fn restart(&mut self) {
        self.kill();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "could not run `redis-server` ({e}): this test runs a private Redis it can stop and restart; \
                     install it with `apt-get install redis-server` (or `brew install redis`) so that it is on PATH"
                )
            });
        self.child = Some(child);
        let url = self.url();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match connect(&url).await {
                Ok(_) => return,
                Err(e) if Instant::now() >= deadline => {
                    panic!(
                        "private redis-server on port {} did not answer within 5 s: {e}",
                        self.port
                    )
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port nothing listens on (now).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("bind a loopback port")
}
