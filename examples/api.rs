//! Enrichment from an HTTP API: a small user service runs on loopback, an
//! `HttpLookup` behind a `LookupEnricher` adds each event's user (cached,
//! batched, under a circuit breaker), the events go to stdout as JSON lines
//! and the enricher's numbers go to stderr at the end.
//!
//! Run with `cargo run --example api --features http`.

use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use fapilog::lookup::LookupEnricher;
use fapilog::sources::HttpLookup;
use serde_json::json;

/// The user service: ids 1 to 5 exist, every other id is a 404.
async fn user(Path(id): Path<u64>) -> Response {
    const TIERS: [&str; 3] = ["free", "pro", "enterprise"];
    if (1..=5).contains(&id) {
        // A little latency, so the percentiles have something to show.
        tokio::time::sleep(Duration::from_millis(2 * id)).await;
        Json(json!({"name": format!("user-{id}"), "tier": TIERS[id as usize % 3]})).into_response()
    } else {
        StatusCode::NOT_FOUND.into_response()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = Router::new().route("/users/{id}", get(user));
    tokio::spawn(async move { axum::serve(listener, app).await });

    let users = HttpLookup::builder(format!("http://{addr}/users/{{key}}"))
        .timeout(Duration::from_millis(300))
        .build()?;
    let enricher = LookupEnricher::builder("user", users)
        .key_field("user_id")
        .ttl(Duration::from_secs(60))
        .build();
    let guard = fapilog::builder()
        .service("api-example")
        .runtime(tokio::runtime::Handle::current())
        .async_enricher(enricher)
        .sink(fapilog::sink::StdoutSink::json())
        .init_async()
        .await?;

    // Hot users repeat (cache hits); user 9 does not exist (404: logged
    // without a `user` field, and negatively cached).
    let ids = [1u64, 2, 1, 3, 9, 2, 4, 1, 5, 9, 3, 1];
    for (n, user_id) in ids.into_iter().enumerate() {
        {
            let span = tracing::info_span!("request", user_id, request_id = format!("req-{n}"));
            let _entered = span.enter();
            tracing::info!(path = "/orders", "order placed");
        }
        // Requests arrive over time, not all in one batch.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }

    // Wait (bounded) until every event has been written, then report.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while guard.stats().emitted < ids.len() as u64 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for e in guard.stats().enrichers {
        eprintln!(
            "enricher {}: calls={} successes={} failures={} cache_hits={} cache_misses={} \
             negative_hits={} latency p50={:?} p99={:?}",
            e.name,
            e.calls,
            e.successes,
            e.failures,
            e.cache_hits,
            e.cache_misses,
            e.negative_hits,
            e.latency.p50,
            e.latency.p99,
        );
    }
    let report = guard.shutdown().await;
    eprintln!(
        "shutdown: emitted={} dropped={}",
        report.emitted, report.dropped
    );
    Ok(())
}
