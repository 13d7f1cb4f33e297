//! Which events `init`'s filter lets through: `RUST_LOG` (or the variable
//! named by `filter_env_var`) over `Builder::filter` over the `info`
//! default, a bad `RUST_LOG` failing `init` with a message naming it,
//! `ignore_filter_env`, and changing the filter at run time with
//! `Guard::set_filter`.
//!
//! `init` installs the process-wide subscriber, which a process can do
//! once, so each `init` case runs in a child process: the test re-runs this
//! binary on itself alone, with the environment it needs and
//! [`CASE_VAR`] naming it; the child does the work and prints what it
//! observed on one line, and the parent asserts on that line and on the
//! child's exit status.

mod support;

use std::process::Command;

use serde_json::{Value as Json, json};
use support::Collected;

/// Set in a child to the name of the test it is to act out.
const CASE_VAR: &str = "FAPILOG_FILTER_TEST_CASE";
/// Starts the one line of stdout on which a child reports.
const REPORT: &str = "@@fapilog-filter-report ";

/// In the parent, runs test `name` in a child process with `env` (every
/// filter variable this file uses is removed first, so a developer's
/// `RUST_LOG` cannot change the outcome; `None` leaves one unset) and
/// returns what the child reported. In the child (the one started for
/// `name`), runs `child`, prints its report and returns `None`.
///
/// A child that cannot be started, fails, or reports nothing fails the
/// test, with the child's output.
fn case(name: &str, env: &[(&str, Option<&str>)], child: impl FnOnce() -> Json) -> Option<Json> {
    if std::env::var(CASE_VAR).as_deref() == Ok(name) {
        let report = child();
        // On a line of its own: the harness has printed "test … " before.
        println!("\n{REPORT}{report}");
        return None;
    }

    let exe = std::env::current_exe().expect("path of the test binary");
    let mut cmd = Command::new(&exe);
    cmd.args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, name);
    for var in ["RUST_LOG", "APP_LOG"] {
        cmd.env_remove(var);
    }
    for (var, value) in env {
        match value {
            Some(v) => cmd.env(var, v),
            None => cmd.env_remove(var),
        };
    }
    let output = cmd
        .output()
        .unwrap_or_else(|e| panic!("could not run {} for `{name}`: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the child for `{name}` failed ({}):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        output.status
    );
    let reports: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_once(REPORT).map(|(_, report)| report))
        .collect();
    match reports.as_slice() {
        [one] => Some(serde_json::from_str(one).unwrap_or_else(|e| {
            panic!("the child for `{name}` printed a bad report ({e}): {one}")
        })),
        _ => panic!(
            "the child for `{name}` printed {} reports, expected 1 (did `--exact {name}` match this test?):\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
            reports.len()
        ),
    }
}

/// One event per level, each with its level's name as message.
fn log_each_level() {
    tracing::trace!("trace");
    tracing::debug!("debug");
    tracing::info!("info");
    tracing::warn!("warn");
    tracing::error!("error");
}

/// Shuts the pipeline down and returns the messages it wrote, in order.
fn captured(guard: fapilog::Guard, out: &Collected) -> Vec<String> {
    let report = guard.shutdown_blocking();
    assert_eq!(report.dropped, 0, "{report:?}");
    out.app_events()
        .iter()
        .map(|e| e.message().unwrap_or("").to_owned())
        .collect()
}

/// `init` with `configure` applied, logging once per level; the report
/// holds the messages captured.
fn init_and_log_each_level(configure: impl FnOnce(fapilog::Builder) -> fapilog::Builder) -> Json {
    let out = Collected::new();
    let guard = configure(fapilog::builder().sink(out.sink()))
        .init()
        .expect("init succeeds");
    log_each_level();
    json!({ "captured": captured(guard, &out) })
}

#[test]
fn rust_log_wins_over_the_builders_filter() {
    let Some(seen) = case(
        "rust_log_wins_over_the_builders_filter",
        &[("RUST_LOG", Some("debug"))],
        || init_and_log_each_level(|b| b.filter("warn")),
    ) else {
        return;
    };
    assert_eq!(seen["captured"], json!(["debug", "info", "warn", "error"]));
}

#[test]
fn without_rust_log_the_builders_filter_applies() {
    let Some(seen) = case(
        "without_rust_log_the_builders_filter_applies",
        &[("RUST_LOG", None)],
        || init_and_log_each_level(|b| b.filter("warn")),
    ) else {
        return;
    };
    assert_eq!(seen["captured"], json!(["warn", "error"]));
}

#[test]
fn an_empty_rust_log_counts_as_unset() {
    let Some(seen) = case(
        "an_empty_rust_log_counts_as_unset",
        &[("RUST_LOG", Some(""))],
        || init_and_log_each_level(|b| b.filter("warn")),
    ) else {
        return;
    };
    assert_eq!(seen["captured"], json!(["warn", "error"]));
}

#[test]
fn without_rust_log_or_a_filter_the_default_is_info() {
    let Some(seen) = case(
        "without_rust_log_or_a_filter_the_default_is_info",
        &[("RUST_LOG", None)],
        || init_and_log_each_level(|b| b),
    ) else {
        return;
    };
    assert_eq!(seen["captured"], json!(["info", "warn", "error"]));
}

#[test]
fn a_bad_rust_log_fails_init_with_a_message_naming_it() {
    let Some(seen) = case(
        "a_bad_rust_log_fails_init_with_a_message_naming_it",
        &[("RUST_LOG", Some("inof"))],
        || {
            let out = Collected::new();
            let err = fapilog::builder()
                .filter("info")
                .sink(out.sink())
                .init()
                .expect_err("a bad RUST_LOG must fail init");
            let installed_after_failure = tracing::dispatcher::has_been_set();
            // Nothing was left installed: a corrected init succeeds.
            let guard = fapilog::builder()
                .filter("info")
                .ignore_filter_env()
                .sink(out.sink())
                .init()
                .expect("init after the failed one succeeds");
            tracing::info!("after retry");
            json!({
                "error": err.to_string(),
                "installed_after_failure": installed_after_failure,
                "captured": captured(guard, &out),
            })
        },
    ) else {
        return;
    };
    let error = seen["error"].as_str().expect("error text");
    assert!(error.contains("RUST_LOG"), "{error}");
    assert!(error.contains("inof"), "{error}");
    assert_eq!(seen["installed_after_failure"], json!(false));
    assert_eq!(seen["captured"], json!(["after retry"]));
}

#[test]
fn filter_env_var_reads_the_named_variable_instead_of_rust_log() {
    let Some(seen) = case(
        "filter_env_var_reads_the_named_variable_instead_of_rust_log",
        &[("APP_LOG", Some("debug")), ("RUST_LOG", Some("error"))],
        || init_and_log_each_level(|b| b.filter_env_var("APP_LOG")),
    ) else {
        return;
    };
    assert_eq!(seen["captured"], json!(["debug", "info", "warn", "error"]));
}

#[test]
fn ignore_filter_env_applies_the_builders_filter_whatever_rust_log_says() {
    let Some(seen) = case(
        "ignore_filter_env_applies_the_builders_filter_whatever_rust_log_says",
        &[("RUST_LOG", Some("debug"))],
        || init_and_log_each_level(|b| b.filter("warn").ignore_filter_env()),
    ) else {
        return;
    };
    assert_eq!(seen["captured"], json!(["warn", "error"]));
}

#[test]
fn set_filter_changes_inits_filter_from_the_next_event_and_rejects_bad_directives() {
    let Some(seen) = case(
        "set_filter_changes_inits_filter_from_the_next_event_and_rejects_bad_directives",
        &[("RUST_LOG", None)],
        || {
            let out = Collected::new();
            let guard = fapilog::builder()
                .filter("info")
                .sink(out.sink())
                .init()
                .expect("init succeeds");
            let initial = guard.filter();
            tracing::debug!("debug at info");
            tracing::info!("info at info");

            guard.set_filter("debug").expect("valid directives");
            let after_debug = guard.filter();
            tracing::debug!("debug at debug");
            log::debug!("log debug at debug");

            let rejected = guard
                .set_filter("verbose")
                .expect_err("`verbose` is not a level")
                .to_string();
            let after_rejected = guard.filter();
            tracing::debug!("debug after rejected");

            guard.set_filter("warn").expect("valid directives");
            let after_warn = guard.filter();
            tracing::info!("info at warn");
            log::info!("log info at warn");
            tracing::warn!("warn at warn");

            json!({
                "initial": initial,
                "after_debug": after_debug,
                "rejected": rejected,
                "after_rejected": after_rejected,
                "after_warn": after_warn,
                "captured": captured(guard, &out),
            })
        },
    ) else {
        return;
    };
    assert_eq!(seen["initial"], json!("info"));
    assert_eq!(seen["after_debug"], json!("debug"));
    let rejected = seen["rejected"].as_str().expect("error text");
    assert!(rejected.contains("verbose"), "{rejected}");
    assert_eq!(
        seen["after_rejected"],
        json!("debug"),
        "a rejected change leaves the filter in force"
    );
    assert_eq!(seen["after_warn"], json!("warn"));
    assert_eq!(
        seen["captured"],
        json!([
            "info at info",
            "debug at debug",
            "log debug at debug",
            "debug after rejected",
            "warn at warn",
        ])
    );
}

#[test]
fn set_filter_after_build_is_an_error_because_the_filter_is_the_users() {
    // `build` installs nothing, so this runs in the test process itself.
    let (_layer, guard) = fapilog::builder()
        .sink(Collected::new().sink())
        .build()
        .expect("pipeline starts");
    let err = guard
        .set_filter("debug")
        .expect_err("a hand-composed layer's filter is not fapilog's");
    let message = err.to_string();
    assert!(message.contains("build()"), "{message}");
    assert!(message.contains("reload"), "{message}");
    assert_eq!(guard.filter(), None);
    let report = guard.shutdown_blocking();
    assert_eq!(report.dropped, 0, "{report:?}");
}

#[test]
fn a_bad_filter_env_var_is_named_in_the_error() {
    let Some(seen) = case(
        "a_bad_filter_env_var_is_named_in_the_error",
        &[("APP_LOG", Some("inof"))],
        || {
            let err = fapilog::builder()
                .filter_env_var("APP_LOG")
                .sink(Collected::new().sink())
                .init()
                .expect_err("a bad APP_LOG must fail init");
            json!({ "error": err.to_string() })
        },
    ) else {
        return;
    };
    let error = seen["error"].as_str().expect("error text");
    assert!(error.contains("`APP_LOG`"), "{error}");
    assert!(error.contains("inof"), "{error}");
    assert!(
        error.contains("inof=trace"),
        "the fix is suggested: {error}"
    );
}

#[test]
fn the_filter_reads_back_as_it_was_given() {
    let Some(seen) = case(
        "the_filter_reads_back_as_it_was_given",
        &[("RUST_LOG", Some("info,sqlx=warn"))],
        || {
            let guard = fapilog::builder()
                .sink(Collected::new().sink())
                .init()
                .expect("init succeeds");
            let from_env = guard.filter();
            guard
                .set_filter("warn,my_crate::db=trace")
                .expect("valid directives");
            let after = guard.filter();
            guard.shutdown_blocking();
            json!({ "from_env": from_env, "after": after })
        },
    ) else {
        return;
    };
    assert_eq!(seen["from_env"], json!("info,sqlx=warn"));
    assert_eq!(seen["after"], json!("warn,my_crate::db=trace"));
}

#[cfg(unix)]
#[test]
fn a_rust_log_that_is_not_utf8_fails_init_instead_of_being_ignored() {
    use std::os::unix::ffi::OsStrExt;
    const NAME: &str = "a_rust_log_that_is_not_utf8_fails_init_instead_of_being_ignored";
    if std::env::var(CASE_VAR).as_deref() == Ok(NAME) {
        let err = fapilog::builder()
            .filter("info")
            .sink(Collected::new().sink())
            .init()
            .expect_err("a RUST_LOG that is not UTF-8 must fail init");
        println!("\n{REPORT}{}", json!({ "error": err.to_string() }));
        return;
    }
    // `case` takes text values; this one is bytes, so the child is started
    // here the same way.
    let exe = std::env::current_exe().expect("path of the test binary");
    let output = Command::new(&exe)
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CASE_VAR, NAME)
        .env_remove("APP_LOG")
        .env("RUST_LOG", std::ffi::OsStr::from_bytes(b"info,\xff"))
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "child failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = stdout
        .lines()
        .find_map(|l| l.split_once(REPORT).map(|(_, r)| r.to_owned()))
        .expect("the child reports");
    let seen: Json = serde_json::from_str(&report).expect("a JSON report");
    let error = seen["error"].as_str().expect("error text");
    assert!(
        error.contains("RUST_LOG") && error.contains("UTF-8"),
        "{error}"
    );
}
