//! Secrets never reach a sink: fields, span fields and enriched values named
//! like secrets are hidden by default, configurably; connection strings are
//! redacted wherever a source shows them, whatever their password holds.

mod support;

use std::time::Duration;

use fapilog::enrich::{EnricherOptions, REDACTED, Redaction};
use fapilog::lookup::{Found, Key, Lookup, LookupEnricher};
use fapilog::{Settings, enrich::EnrichError};
use serde_json::json;
use support::{Collected, start};

/// Logs one event full of secrets inside a span holding one too.
fn log_secrets() {
    let span = tracing::info_span!("request", cookie = "session=abc123", path = "/login");
    let _entered = span.enter();
    tracing::info!(
        user = "ada",
        password = "hunter2",
        api_key = "k3y-9f8e",
        authorization = "Bearer xyz.abc",
        "X-Refresh-Token" = "r3fr3sh",
        "login as postgres://app:pw123@db/app"
    );
}

#[test]
fn secrets_are_hidden_by_default_in_what_a_file_sink_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.log");
    let (dispatch, guard) = start(fapilog::builder().file(fapilog::sink::FileSink::builder(&path)));
    tracing::dispatcher::with_default(&dispatch, log_secrets);
    assert_eq!(guard.shutdown_blocking().emitted, 1);

    let text = std::fs::read_to_string(&path).unwrap();
    for secret in ["hunter2", "k3y-9f8e", "xyz.abc", "r3fr3sh", "abc123"] {
        assert!(!text.contains(secret), "{secret} reached the file: {text}");
    }
    let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(line["fields"]["user"], "ada", "other fields are kept");
    assert_eq!(line["fields"]["password"], REDACTED);
    assert_eq!(line["fields"]["X-Refresh-Token"], REDACTED);
    assert_eq!(line["spans"][0]["fields"]["cookie"], REDACTED);
    assert_eq!(line["spans"][0]["fields"]["path"], "/login");
    // Values are not scanned by default: the message is as logged.
    assert_eq!(line["message"], "login as postgres://app:pw123@db/app");
}

#[test]
fn value_scanning_hides_credentials_inside_text() {
    let out = Collected::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .redaction(Redaction::default().values(true))
            .sink(out.sink()),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(
            note = "retry with Bearer abc.def",
            "login as postgres://app:pw123@db/app"
        );
    });
    guard.shutdown_blocking();
    let e = &out.app_events()[0];
    assert_eq!(e.message(), Some("login as postgres://app:***@db/app"));
    assert_eq!(
        e.field("note"),
        Some(&json!("retry with Bearer [REDACTED]"))
    );
}

#[test]
fn redaction_can_be_extended_replaced_or_turned_off() {
    let run = |redaction: Redaction| {
        let out = Collected::new();
        let (dispatch, guard) = start(fapilog::builder().redaction(redaction).sink(out.sink()));
        tracing::dispatcher::with_default(&dispatch, || {
            tracing::info!(password = "hunter2", customer_ssn = "078-05-1120", "m");
        });
        guard.shutdown_blocking();
        let e = out.app_events().remove(0);
        (
            e.field("password").cloned(),
            e.field("customer_ssn").cloned(),
        )
    };
    assert_eq!(
        run(Redaction::default().key("ssn").replacement("***")),
        (Some(json!("***")), Some(json!("***")))
    );
    assert_eq!(
        run(Redaction::default().keys(["ssn"])),
        (Some(json!("hunter2")), Some(json!(REDACTED)))
    );
    assert_eq!(
        run(Redaction::none()),
        (Some(json!("hunter2")), Some(json!("078-05-1120")))
    );

    let err = fapilog::builder()
        .redaction(Redaction::default().key("x"))
        .build()
        .expect_err("a one-letter secret word would hide nearly everything");
    assert!(err.to_string().contains("redaction"), "{err}");
}

#[test]
fn redaction_from_settings() {
    let s = Settings::from_toml_str("[redaction]\nextra_keys = [\"ssn\"]\n").unwrap();
    let out = Collected::new();
    let (dispatch, guard) = start(fapilog::builder().settings(&s).sink(out.sink()));
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(password = "hunter2", ssn = "078-05-1120", "m");
    });
    guard.shutdown_blocking();
    let e = out.app_events().remove(0);
    assert_eq!(e.field("password"), Some(&json!(REDACTED)));
    assert_eq!(e.field("ssn"), Some(&json!(REDACTED)));

    let off = Settings::from_toml_str("[redaction]\nenabled = false\n").unwrap();
    let out = Collected::new();
    let (dispatch, guard) = start(fapilog::builder().settings(&off).sink(out.sink()));
    tracing::dispatcher::with_default(&dispatch, || tracing::info!(password = "hunter2", "m"));
    guard.shutdown_blocking();
    assert_eq!(
        out.app_events()[0].field("password"),
        Some(&json!("hunter2"))
    );

    let err = Settings::from_toml_str("[redaction]\nkeys = [\"a\"]\n").unwrap_err();
    assert_eq!(err.key(), Some("redaction.keys"), "{err}");
}

/// A lookup whose rows carry secrets of their own.
struct Accounts;

impl Lookup for Accounts {
    async fn fetch(&self, keys: &[Key]) -> Result<Found, EnrichError> {
        Ok(keys
            .iter()
            .map(|k| {
                let row = json!({
                    "id": k.to_value(),
                    "plan": "pro",
                    "api_token": "t0k3n",
                    "owners": [{"name": "ada", "password_hash": "$argon2id$..."}],
                });
                (k.clone(), row)
            })
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enriched_values_are_redacted_nested_objects_included() {
    let out = Collected::new();
    let builder = fapilog::builder()
        .async_enricher_with(
            LookupEnricher::builder("account", Accounts)
                .key_field("account_id")
                .build(),
            EnricherOptions::new().call_timeout(Duration::from_secs(5)),
        )
        .sink(out.sink());
    let (dispatch, guard) = support::start_async(builder).await;
    // The first event of each id is a miss, the rest are served from the
    // cache: shared with it, and redacted all the same (in the batch of
    // the miss and in later ones).
    for id in [7, 7, 8, 7] {
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(account_id = id, "m"));
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    for id in [8, 7] {
        tracing::dispatcher::with_default(&dispatch, || tracing::info!(account_id = id, "m"));
    }
    guard.shutdown().await;
    let events = out.app_events();
    assert_eq!(events.len(), 6);
    for (e, id) in events.iter().zip([7, 7, 8, 7, 8, 7]) {
        assert_eq!(
            e.field("account"),
            Some(&json!({
                "id": id,
                "plan": "pro",
                "api_token": REDACTED,
                "owners": [{"name": "ada", "password_hash": REDACTED}],
            }))
        );
    }
}

/// Passwords as people paste them: with `?`, `#`, `@`, `/` and `:`.
const PASSWORDS: &[&str] = &[
    "Zq9Xw7?Kv4Mn2",
    "Zq9Xw7#Kv4Mn2",
    "Zq9@x/y:z?w#v",
    "Zq9%3F&x=y",
];

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_connection_strings_never_show_their_password() {
    use fapilog::sources::SqlLookup;
    for pw in PASSWORDS {
        // Nothing listens on port 1: start-up fails at once.
        let url = format!("postgres://app:{pw}@127.0.0.1:1/db");
        let no_query = SqlLookup::builder(&url).build().expect_err("no query");
        assert!(!no_query.to_string().contains(pw), "{no_query}");
        let lookup = SqlLookup::builder(&url)
            .query("SELECT id, name FROM users WHERE id = ANY($1)")
            .build()
            .unwrap();
        let shown = format!("{lookup:?}");
        assert!(!shown.contains(pw), "{shown}");
        let enricher = LookupEnricher::builder("user", lookup).build();

        let err = fapilog::builder()
            .async_enricher_with(enricher, EnricherOptions::new().required())
            .sink(Collected::new().sink())
            .build_async()
            .await
            .expect_err("nothing listens there");
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(pw), "{shown}");

        let lookup = SqlLookup::builder(&url)
            .query("SELECT id, name FROM users WHERE id = ANY($1)")
            .build()
            .unwrap();
        let (_layer, guard) = fapilog::builder()
            .async_enricher(LookupEnricher::builder("user", lookup).build())
            .startup_timeout(Duration::from_secs(5))
            .sink(Collected::new().sink())
            .build_async()
            .await
            .unwrap();
        let health = guard.health();
        let last_error = health[0].last_error.clone().expect("start-up failed");
        assert!(!last_error.contains(pw), "{last_error}");
        assert!(
            last_error.contains("127.0.0.1:1"),
            "still says where: {last_error}"
        );
        guard.shutdown().await;
    }
}

#[cfg(feature = "http")]
#[test]
fn http_urls_never_show_their_password() {
    use fapilog::sources::HttpLookup;
    for pw in PASSWORDS {
        let url = format!("https://app:{pw}@api.test/users/{{key}}");
        // A password a URL parser rejects is a configuration error; either
        // way, what is shown hides it.
        let shown = match HttpLookup::builder(&url).build() {
            Ok(lookup) => format!("{lookup:?}"),
            Err(e) => e.to_string(),
        };
        assert!(!shown.contains(pw), "{shown}");
        assert!(shown.contains("api.test"), "still says where: {shown}");
        let bad = HttpLookup::builder(format!("https://app:{pw}@api.test/users"))
            .build()
            .expect_err("no placeholder");
        assert!(!bad.to_string().contains(pw), "{bad}");
    }
}

#[cfg(feature = "redis")]
#[test]
fn redis_urls_never_show_their_password() {
    use fapilog::sources::RedisLookup;
    for pw in PASSWORDS {
        let url = format!("redis://default:{pw}@127.0.0.1:1/0");
        if let Ok(lookup) = RedisLookup::builder(&url).build() {
            let shown = format!("{lookup:?}");
            assert!(!shown.contains(pw), "{shown}");
        }
        let bad = RedisLookup::builder(&url)
            .response_timeout(Duration::ZERO)
            .build()
            .expect_err("a zero timeout is refused");
        assert!(!bad.to_string().contains(pw), "{bad}");
    }
}

/// A span is judged once for all the events logged in it, and judged
/// again when it records a field later.
#[test]
fn a_secret_recorded_on_a_span_later_is_hidden_from_then_on() {
    let out = Collected::new();
    let (dispatch, guard) = start(
        fapilog::builder()
            .batch_size(1)
            .redaction(Redaction::default().values(true))
            .sink(out.sink()),
    );
    tracing::dispatcher::with_default(&dispatch, || {
        let span = tracing::info_span!(
            "request",
            path = "/login",
            session_token = tracing::field::Empty,
            upstream = tracing::field::Empty
        );
        let _entered = span.enter();
        // Each event written before the span changes: the span has been
        // judged (and kept its verdict) by then.
        tracing::info!(seq = 0u64, "before");
        assert!(support::wait_until(|| out.app_events().len() == 1));
        span.record("session_token", "s3cr3t-t0k3n");
        tracing::info!(seq = 1u64, "after a secret name");
        assert!(support::wait_until(|| out.app_events().len() == 2));
        span.record("upstream", "https://svc:pa55w0rd@api.internal/v1");
        tracing::info!(seq = 2u64, "after a secret value");
    });
    guard.shutdown_blocking();
    let events = out.app_events();
    assert_eq!(events.len(), 3);
    let span_field = |i: usize, name: &str| {
        events[i]
            .spans()
            .next()
            .and_then(|s| s.field(name))
            .cloned()
    };
    assert_eq!(span_field(0, "path"), Some(json!("/login")));
    assert_eq!(span_field(0, "session_token"), None);
    assert_eq!(span_field(1, "session_token"), Some(json!(REDACTED)));
    assert_eq!(span_field(2, "session_token"), Some(json!(REDACTED)));
    let upstream = span_field(2, "upstream").expect("recorded");
    let upstream = upstream.as_str().expect("text");
    assert!(!upstream.contains("pa55w0rd"), "{upstream}");
    assert!(upstream.contains("api.internal"), "{upstream}");
}

/// One call site, logged into two pipelines whose workers run on the same
/// application thread: each judges the call site's names by its own rules
/// (the verdict a thread remembers is per redactor).
#[tokio::test(flavor = "current_thread")]
async fn pipelines_sharing_a_thread_each_redact_by_their_own_rules() {
    fn log_password(dispatch: &tracing::Dispatch, seq: u64) {
        tracing::dispatcher::with_default(dispatch, || {
            tracing::info!(seq, password = "hunter2", note = "n", "m");
        });
    }
    let start_on_this_runtime = |redaction: Redaction, out: &Collected| {
        support::start_async(
            fapilog::builder()
                .runtime(tokio::runtime::Handle::current())
                .redaction(redaction)
                .sink(out.sink()),
        )
    };
    let (hidden, shown) = (Collected::new(), Collected::new());
    let (hiding, hiding_guard) = start_on_this_runtime(Redaction::default(), &hidden).await;
    let (showing, showing_guard) = start_on_this_runtime(Redaction::none(), &shown).await;
    let keeping_password = Redaction::default().keys(["ssn"]);
    let kept = Collected::new();
    let (keeping, keeping_guard) = start_on_this_runtime(keeping_password, &kept).await;
    for seq in 0..20 {
        // Either redactor may be the first to judge the call site on this
        // thread; the sleeps let the workers (on this thread) take each
        // event as it comes.
        let order = if seq % 2 == 0 {
            [&keeping, &hiding, &showing]
        } else {
            [&hiding, &keeping, &showing]
        };
        for dispatch in order {
            log_password(dispatch, seq);
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    hiding_guard.shutdown().await;
    showing_guard.shutdown().await;
    keeping_guard.shutdown().await;
    for (out, want) in [
        (&hidden, json!(REDACTED)),
        (&shown, json!("hunter2")),
        (&kept, json!("hunter2")),
    ] {
        let events = out.app_events();
        assert_eq!(events.len(), 20);
        for e in &events {
            assert_eq!(e.field("password"), Some(&want));
            assert_eq!(e.field("note"), Some(&json!("n")));
        }
    }
}
