//! Memory is bounded whatever the input: the lookup cache in bytes as well
//! as entries, remote values by a size limit, and the queue and batch
//! settings by limits that are checked instead of aborting the process.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use fapilog::enrich::{AsyncEnricher, EnrichContext, EnrichError, Patch};
use fapilog::lookup::{Found, Key, Lookup, LookupEnricher};
use fapilog::resilience::BreakerState;
use fapilog::{Event, Settings};

/// Answers every key with a string of `bytes` bytes.
#[derive(Clone)]
struct Giant {
    bytes: usize,
    fetches: Arc<AtomicU64>,
}

impl Lookup for Giant {
    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        self.fetches.fetch_add(1, Ordering::SeqCst);
        let value = serde_json::Value::String("x".repeat(self.bytes));
        Ok(keys.iter().map(|k| (k.clone(), value.clone())).collect())
    }
}

fn events(keys: std::ops::Range<i64>) -> Vec<Event> {
    keys.map(|k| Event::new(tracing::Level::INFO, "t", "m").with_field("user_id", k))
        .collect()
}

async fn enrich<L: Lookup>(
    e: &LookupEnricher<L>,
    ctx: &EnrichContext,
    batch: &[Event],
) -> Vec<Patch> {
    let mut out = vec![Patch::default(); batch.len()];
    e.enrich(batch, &mut out, ctx)
        .await
        .expect("per-key failures are in the patches");
    out
}

#[tokio::test]
async fn the_cache_holds_large_values_up_to_its_byte_bound() {
    let lookup = Giant {
        bytes: 256 << 10,
        fetches: Arc::default(),
    };
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .max_bytes(8 << 20)
        .build();
    let ctx = EnrichContext::detached("user");
    for chunk in 0..10 {
        let batch = events(chunk * 100..(chunk + 1) * 100);
        let patches = enrich(&enricher, &ctx, &batch).await;
        assert!(
            patches.iter().all(|p| p.error().is_none()),
            "256 KiB values are within the value limit"
        );
    }
    // 1 000 values of 256 KiB is 250 MiB; the cache may keep 8 MiB of them.
    let held = enricher.cached_entries().await;
    assert!(
        (1..=32).contains(&held),
        "{held} values of 256 KiB cached under an 8 MiB bound"
    );
}

#[tokio::test]
async fn the_default_byte_bound_applies_without_configuration() {
    let lookup = Giant {
        bytes: 512 << 10,
        fetches: Arc::default(),
    };
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let ctx = EnrichContext::detached("user");
    for chunk in 0..4 {
        enrich(&enricher, &ctx, &events(chunk * 100..(chunk + 1) * 100)).await;
    }
    // 400 values of 512 KiB is 200 MiB; the default bound is 64 MiB.
    let held = enricher.cached_entries().await;
    assert!(
        held <= 128,
        "{held} values of 512 KiB cached under the default 64 MiB"
    );
}

#[tokio::test]
async fn a_value_over_the_limit_is_an_error_for_its_key_alone() {
    let fetches = Arc::new(AtomicU64::new(0));
    let lookup = Giant {
        bytes: 2 << 20,
        fetches: fetches.clone(),
    };
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let ctx = EnrichContext::detached("user");
    for round in 1..=6 {
        let patches = enrich(&enricher, &ctx, &events(0..3)).await;
        for p in &patches {
            assert_eq!(p.fields().count(), 0, "a 2 MiB value is not merged");
            let reason = p.error().expect("the key has an error entry");
            assert!(reason.contains("max_value_bytes"), "{reason}");
        }
        assert_eq!(
            fetches.load(Ordering::SeqCst),
            round,
            "not cached: fetched again"
        );
    }
    assert_eq!(enricher.cached_entries().await, 0);
    // The source answered every time: the breaker has nothing against it.
    assert_eq!(ctx.breaker_state(), BreakerState::Closed);
    assert_eq!(ctx.stats().failures, 0);

    // A higher limit lets the same value through.
    let lookup = Giant {
        bytes: 2 << 20,
        fetches: Arc::default(),
    };
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .max_value_bytes(4 << 20)
        .build();
    let patches = enrich(&enricher, &ctx, &events(0..1)).await;
    assert_eq!(patches[0].error(), None);
}

#[test]
fn huge_queue_and_batch_settings_are_errors_naming_the_setting() {
    for (builder, setting) in [
        (fapilog::builder().queue_capacity(1 << 40), "queue_capacity"),
        (fapilog::builder().batch_size(1_000_000_000), "batch_size"),
        (fapilog::builder().pipeline_depth(1 << 30), "pipeline_depth"),
    ] {
        let err = builder.build().expect_err("over the limit");
        let message = err.to_string();
        assert!(message.contains(setting), "{message}");
        assert!(message.contains("at most"), "the limit is named: {message}");
    }
    // At the limit it starts.
    let (_layer, guard) = fapilog::builder()
        .queue_capacity(1 << 20)
        .batch_size(1 << 16)
        .sink(fapilog::sink::StdoutSink::json())
        .build()
        .expect("the largest allowed settings start");
    guard.shutdown_blocking();

    for (toml, key) in [
        ("[queue]\ncapacity = 1099511627776\n", "queue.capacity"),
        ("[batch]\nsize = 1000000000\n", "batch.size"),
    ] {
        let err = Settings::from_toml_str(toml).expect_err(toml);
        assert_eq!(err.key(), Some(key), "{err}");
        assert!(err.to_string().contains("at most"), "{err}");
    }
}

#[tokio::test]
async fn empty_and_overlong_text_keys_are_not_looked_up() {
    let fetches = Arc::new(AtomicU64::new(0));
    let lookup = Giant {
        bytes: 8,
        fetches: fetches.clone(),
    };
    let enricher = LookupEnricher::builder("user", lookup)
        .key_field("user_id")
        .build();
    let ctx = EnrichContext::detached("user");
    let batch: Vec<Event> = ["", &"k".repeat(1025)]
        .iter()
        .map(|k| Event::new(tracing::Level::INFO, "t", "m").with_field("user_id", *k))
        .collect();
    let patches = enrich(&enricher, &ctx, &batch).await;
    for p in &patches {
        assert_eq!(
            (p.fields().count(), p.error()),
            (0, None),
            "not found, no error"
        );
    }
    assert_eq!(
        fetches.load(Ordering::SeqCst),
        0,
        "the source was not asked"
    );
    let ok = enrich(&enricher, &ctx, &events(1..2)).await;
    assert_eq!(ok[0].fields().count(), 1);
}
