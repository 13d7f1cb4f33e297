//! The quickstart: structured events with span context, enriched off the
//! caller's thread, written as JSON lines to stdout, then a clean shutdown
//! with its report.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let guard = fapilog::builder()
        .level("info")
        .service("quickstart")
        .version(env!("CARGO_PKG_VERSION"))
        .environment("dev")
        .with_hostname()
        .with_pid()
        // A sync enricher: runs on the worker, in declared order.
        .enricher(|e: &mut fapilog::Event| {
            if let Some(id) = e.field("user_id").and_then(|v| v.as_u64()) {
                e.insert("user_tier", if id % 2 == 0 { "gold" } else { "standard" });
            }
        })
        .linger(Duration::from_millis(2))
        .init()?;

    for user_id in 1..=3u64 {
        let span = tracing::info_span!("request", user_id, path = "/orders");
        let _entered = span.enter();
        tracing::info!(order_id = user_id * 100, amount = 12.5, "order placed");
        if user_id == 2 {
            tracing::warn!(retry = true, "payment provider slow");
        }
    }
    // Records from the `log` crate are bridged too.
    log::info!(target: "legacy", "a record from the log crate");

    let report = guard.shutdown_blocking();
    eprintln!(
        "shutdown: emitted={} dropped={} sink_failures={}",
        report.emitted, report.dropped, report.sink_failures
    );
    Ok(())
}
