//! Dependencies between async enrichers: a dependent runs after what it
//! depends on and sees its fields; same-level results are applied in
//! declared order; cycles, unknown names, self-dependencies, duplicates and
//! dependencies on later enrichers are rejected at build, naming the
//! enrichers involved.

mod support;

use std::time::Duration;

use fapilog::Event;
use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, EnricherOptions, Patch};
use serde_json::{Value, json};
use support::async_support::{Emitted, Running, TestEnricher, errors, inserted, pipeline};

/// Copies what it finds under `from` (via `Event::field`, as any enricher
/// reads an event) into `to`; `null` when there is nothing.
struct CopyField {
    name: &'static str,
    from: &'static str,
    to: &'static str,
    latency: Duration,
}

impl CopyField {
    fn new(name: &'static str, from: &'static str, to: &'static str) -> Self {
        CopyField {
            name,
            from,
            to,
            latency: Duration::ZERO,
        }
    }
}

impl AsyncEnricher for CopyField {
    fn name(&self) -> &str {
        self.name
    }

    async fn enrich(
        &self,
        events: &[Event],
        out: &mut [Patch],
        _ctx: &EnrichContext,
    ) -> Result<(), EnrichError> {
        tokio::time::sleep(self.latency).await;
        for (e, p) in events.iter().zip(out.iter_mut()) {
            p.insert(self.to, e.field(self.from).cloned().unwrap_or(Value::Null));
        }
        Ok(())
    }
}

fn depends_on(name: &str) -> EnricherOptions {
    EnricherOptions::new().depends_on(name)
}

async fn one_event(builder: fapilog::Builder, out: &Emitted) -> Event {
    let running = Running::start(builder).await;
    tracing::info!("hello");
    let e = out.wait_for(1).await.remove(0);
    running.shutdown().await;
    e
}

#[tokio::test(start_paused = true)]
async fn a_dependent_sees_the_fields_of_what_it_depends_on() {
    let out = Emitted::new();
    // Declared dependent first: the order comes from the dependency.
    let e = one_event(
        pipeline(out.sink())
            .async_enricher_with(CopyField::new("b", "account", "b_saw"), depends_on("a"))
            .async_enricher(TestEnricher::new("a", "account", "acme")),
        &out,
    )
    .await;

    assert_eq!(inserted(&e, "account"), Some(json!("acme")));
    assert_eq!(inserted(&e, "b_saw"), Some(json!("acme")));
    assert!(errors(&e).is_empty(), "{:?}", errors(&e));
}

#[tokio::test(start_paused = true)]
async fn a_chain_of_dependencies_runs_level_by_level() {
    let out = Emitted::new();
    let mut slow_a = CopyField::new("a", "message_id", "a_out");
    slow_a.latency = Duration::from_millis(30);
    let e = one_event(
        pipeline(out.sink())
            .async_enricher_with(CopyField::new("c", "b_out", "c_out"), depends_on("b"))
            .async_enricher_with(CopyField::new("b", "a_out", "b_out"), depends_on("a"))
            .async_enricher(TestEnricher::new("x", "message_id", 99))
            .async_enricher_with(slow_a, depends_on("x")),
        &out,
    )
    .await;

    assert_eq!(inserted(&e, "a_out"), Some(json!(99)));
    assert_eq!(inserted(&e, "b_out"), Some(json!(99)));
    assert_eq!(inserted(&e, "c_out"), Some(json!(99)));
}

#[tokio::test(start_paused = true)]
async fn a_dependency_on_an_earlier_stage_is_satisfied() {
    let out = Emitted::new();
    let e = one_event(
        pipeline(out.sink())
            .async_enricher(TestEnricher::new("a", "account", "acme"))
            .enricher(|e: &mut Event| {
                let seen = e.field("account").cloned().unwrap_or(Value::Null);
                e.insert("sync_saw", seen);
            })
            .async_enricher_with(CopyField::new("b", "sync_saw", "b_saw"), depends_on("a")),
        &out,
    )
    .await;

    assert_eq!(inserted(&e, "sync_saw"), Some(json!("acme")));
    assert_eq!(inserted(&e, "b_saw"), Some(json!("acme")));
}

#[tokio::test(start_paused = true)]
async fn same_level_results_are_applied_in_declared_order_whatever_finished_first() {
    for (first_latency, second_latency) in [(0, 50), (50, 0)] {
        let first = TestEnricher::new("first", "tier", "from-first");
        first.latency(Duration::from_millis(first_latency));
        let second = TestEnricher::new("second", "tier", "from-second");
        second.latency(Duration::from_millis(second_latency));
        let out = Emitted::new();
        let e = one_event(
            pipeline(out.sink())
                .async_enricher(first)
                .async_enricher(second),
            &out,
        )
        .await;
        assert_eq!(
            inserted(&e, "tier"),
            Some(json!("from-second")),
            "latencies {first_latency} / {second_latency} ms"
        );
    }
}

fn build_error(builder: fapilog::Builder) -> String {
    match builder.sink(Emitted::new().sink()).build() {
        Ok(_) => panic!("build succeeded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_cycle_is_rejected_naming_its_enrichers() {
    let msg = build_error(
        fapilog::builder()
            .async_enricher(TestEnricher::new("standalone", "s", 1))
            .async_enricher_with(TestEnricher::new("alpha", "a", 1), depends_on("beta"))
            .async_enricher_with(TestEnricher::new("beta", "b", 1), depends_on("alpha")),
    );
    assert!(msg.contains("`alpha`"), "{msg}");
    assert!(msg.contains("`beta`"), "{msg}");
    assert!(msg.contains("cycle"), "{msg}");
    assert!(!msg.contains("`standalone`"), "{msg}");
}

#[test]
fn an_unknown_dependency_is_rejected_naming_both() {
    let msg = build_error(
        fapilog::builder()
            .async_enricher_with(TestEnricher::new("billing", "b", 1), depends_on("acounts")),
    );
    assert!(msg.contains("`billing`"), "{msg}");
    assert!(msg.contains("`acounts`"), "{msg}");
}

#[test]
fn a_self_dependency_is_rejected() {
    let msg = build_error(
        fapilog::builder()
            .async_enricher_with(TestEnricher::new("loop", "l", 1), depends_on("loop")),
    );
    assert!(msg.contains("`loop`"), "{msg}");
    assert!(msg.contains("itself"), "{msg}");
}

#[test]
fn a_dependency_on_an_enricher_that_runs_later_is_rejected() {
    let msg = build_error(
        fapilog::builder()
            .async_enricher_with(TestEnricher::new("early", "e", 1), depends_on("late"))
            .enricher(|_: &mut Event| {})
            .async_enricher(TestEnricher::new("late", "l", 1)),
    );
    assert!(msg.contains("`early`"), "{msg}");
    assert!(msg.contains("`late`"), "{msg}");
}

#[test]
fn two_async_enrichers_with_one_name_are_rejected() {
    let msg = build_error(
        fapilog::builder()
            .async_enricher(TestEnricher::new("geo", "a", 1))
            .async_enricher(TestEnricher::new("geo", "b", 1)),
    );
    assert!(msg.contains("`geo`"), "{msg}");
    assert!(msg.contains("unique"), "{msg}");
}

#[tokio::test(start_paused = true)]
async fn health_and_stats_list_enrichers_in_declared_order() {
    let out = Emitted::new();
    let running = Running::start(
        pipeline(out.sink())
            .async_enricher_with(
                CopyField::new("dependent", "account", "saw"),
                depends_on("source"),
            )
            .async_enricher(TestEnricher::new("source", "account", "acme"))
            .async_enricher(TestEnricher::new("independent", "x", 1)),
    )
    .await;

    let declared = ["dependent", "source", "independent"];
    let health: Vec<String> = running.guard.health().into_iter().map(|h| h.name).collect();
    let stats: Vec<String> = running
        .guard
        .stats()
        .enrichers
        .into_iter()
        .map(|s| s.name)
        .collect();
    running.shutdown().await;
    assert_eq!(
        health, declared,
        "Guard::health is documented as in declared order"
    );
    assert_eq!(
        stats, declared,
        "Stats::enrichers is documented as in declared order"
    );
}
