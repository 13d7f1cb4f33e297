//! An axum service as a fleet runs it: every request gets a request id and
//! a W3C trace context (continued from `traceparent` or started), every
//! event logged while serving it carries them, a lookup on an embedded
//! SQLite database enriches each record with the user it is about, and one
//! access record per request says how it went.
//!
//! Records go to an OpenTelemetry Collector over OTLP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (protocol from
//! `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or, by default, `http/protobuf`),
//! and as JSON lines to stdout otherwise.
//!
//! On start it sends itself a few requests, so that one command shows
//! enriched, trace-correlated access records at once; then it serves until
//! Ctrl-C (or exits at once with `--self-test`).
//!
//! ```text
//! cargo run --example service --features "sqlite tower otlp http"
//! OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 OTEL_EXPORTER_OTLP_PROTOCOL=grpc \
//!     cargo run --example service --features "sqlite tower otlp http"
//! ```
//!
//! `FAPILOG_EXAMPLE_ADDR` sets the address to listen on (default
//! `127.0.0.1:3000`; port 0 picks a free one).

use std::time::Duration;

use axum::Router;
use axum::extract::{MatchedPath, Path};
use axum::http::StatusCode;
use axum::routing::get;
use fapilog::enrich::EnricherOptions;
use fapilog::lookup::LookupEnricher;
use fapilog::middleware::RequestLayer;
use fapilog::sources::SqlLookup;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let self_test = std::env::args().any(|a| a == "--self-test");

    // An embedded database with a `users` table, standing in for yours.
    let dir = std::env::temp_dir().join(format!("fapilog-service-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let url = format!("sqlite://{}?mode=rwc", dir.join("users.db").display());
    seed(&url).await?;
    let users = SqlLookup::builder(&url)
        .query("SELECT id, name, tier FROM users WHERE id IN ({keys})")
        .build()?;

    let mut pipeline = fapilog::builder()
        .filter("info")
        .service("orders-api")
        .version(env!("CARGO_PKG_VERSION"))
        .environment("dev")
        // A sync enricher, declared first so that the lookup sees what it
        // adds: the user id of `/users/{id}/…` paths, taken from the
        // request span's `path`.
        .enricher(|e: &mut fapilog::Event| {
            let id = e
                .field("path")
                .and_then(|p| p.as_str())
                .and_then(|p| p.strip_prefix("/users/"))
                .and_then(|rest| rest.split('/').next())
                .and_then(|id| id.parse::<u64>().ok());
            if let Some(id) = id {
                e.insert("user_id", id);
            }
        })
        .async_enricher_with(
            LookupEnricher::builder("user", users)
                .key_field("user_id")
                .ttl(Duration::from_secs(60))
                .build(),
            EnricherOptions::new().call_timeout(Duration::from_millis(250)),
        );
    let otlp = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_some()
        || std::env::var_os("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT").is_some();
    if otlp {
        // Endpoint, protocol, headers, timeout and compression from the
        // standard OTEL_EXPORTER_OTLP_* variables.
        pipeline = pipeline.otlp(fapilog::OtlpSinkBuilder::new());
    }
    let guard = pipeline.init_async().await?;

    let app = Router::new()
        .route("/users/{id}/orders", get(orders))
        .route("/health", get(|| async { "ok" }))
        .layer(
            RequestLayer::new().route_with(|req: &axum::http::Request<axum::body::Body>| {
                req.extensions()
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_owned())
            }),
        );
    let addr = std::env::var("FAPILOG_EXAMPLE_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let local = listener.local_addr()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });

    // A few requests of its own: one continuing a caller's trace and
    // keeping its request id, one starting fresh, one for an unknown user,
    // one for a route that does not exist.
    let client = reqwest::Client::new();
    let base = format!("http://{local}");
    let calls = [
        ("/users/1/orders", true),
        ("/users/2/orders", false),
        ("/users/42/orders", false),
        ("/nowhere", false),
    ];
    for (path, continued) in calls {
        let mut req = client.get(format!("{base}{path}"));
        if continued {
            req = req.header("x-request-id", "checkout-7f3a").header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            );
        }
        let res = req.send().await?;
        eprintln!(
            "GET {path} -> {} (x-request-id: {})",
            res.status(),
            res.headers()
                .get("x-request-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
        );
    }

    if !self_test {
        eprintln!(
            "serving on {base} ({}); Ctrl-C to stop",
            if otlp {
                "records to OTLP"
            } else {
                "records to stdout"
            }
        );
        tokio::signal::ctrl_c().await?;
    }
    let _ = stop.send(());
    server.await??;
    let report = guard.shutdown().await;
    eprintln!(
        "shutdown: emitted={} dropped={} undelivered={}",
        report.emitted, report.dropped, report.undelivered
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

async fn orders(Path(id): Path<u64>) -> Result<String, StatusCode> {
    if id > 3 {
        tracing::warn!("no such user");
        return Err(StatusCode::NOT_FOUND);
    }
    tracing::info!(orders = id * 2, "orders listed");
    Ok(format!("{} orders\n", id * 2))
}

async fn seed(url: &str) -> Result<(), sqlx::Error> {
    let db = sqlx::SqlitePool::connect(url).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT, tier TEXT)")
        .execute(&db)
        .await?;
    sqlx::query(
        "INSERT OR REPLACE INTO users VALUES (1, 'Ada', 'gold'), (2, 'Grace', 'standard'), (3, 'Edsger', 'gold')",
    )
    .execute(&db)
    .await?;
    db.close().await;
    Ok(())
}
