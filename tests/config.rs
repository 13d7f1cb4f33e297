//! Settings from TOML and the environment: mistakes are reported with the
//! key at fault, environment variables override the file, and valid
//! settings drive a working pipeline.

mod support;

use fapilog::{ConfigError, Overflow, Settings};
use support::{Collected, start_filtered};

/// Parses `toml`, expecting an error at `key` that the message names.
fn expect_error(toml: &str, key: &str) -> ConfigError {
    let err = Settings::from_toml_str(toml).expect_err(toml);
    assert_eq!(err.key(), Some(key), "{toml:?} gave: {err}");
    let shown = err.to_string();
    assert!(
        shown.contains(key),
        "{toml:?}: message {shown:?} does not name `{key}`"
    );
    err
}

#[test]
fn unknown_top_level_key_is_named() {
    let err = expect_error("levle = \"info\"\n", "levle");
    // The message helps: it lists what is accepted.
    assert!(err.to_string().contains("`level`"), "{err}");
}

#[test]
fn unknown_nested_keys_are_named_with_their_path() {
    let err = expect_error("[queue]\ncapacit = 5\n", "queue.capacit");
    assert!(err.to_string().contains("`capacity`"), "{err}");
    expect_error(
        "[sinks.file]\npath = \"app.log\"\nkeeep = 3\n",
        "sinks.file.keeep",
    );
    expect_error("[bogus]\nx = 1\n", "bogus");
}

#[test]
fn wrong_type_is_named() {
    let err = expect_error("[queue]\ncapacity = \"lots\"\n", "queue.capacity");
    assert!(err.to_string().contains("lots"), "{err}");
    expect_error("[batch]\nlinger = \"soon\"\n", "batch.linger");
    expect_error("hostname = \"yes please\"\n", "hostname");
}

#[test]
fn bad_level_is_named() {
    let err = expect_error("level = \"verbose\"\n", "level");
    assert!(err.to_string().contains("verbose"), "{err}");
    expect_error("level = \"info,my_crate=loud\"\n", "level");
}

#[test]
fn bad_choice_names_the_accepted_values() {
    let err = expect_error("[queue]\noverflow = \"sometimes\"\n", "queue.overflow");
    let shown = err.to_string();
    for choice in ["block", "drop_newest", "drop_oldest"] {
        assert!(shown.contains(choice), "{shown:?} does not list `{choice}`");
    }
}

#[test]
fn sink_timeout_and_retries_are_read_and_checked() {
    let s = Settings::from_toml_str("[sinks]\ntimeout = \"250ms\"\nretries = 0\n").unwrap();
    assert_eq!(s.sinks.timeout, std::time::Duration::from_millis(250));
    assert_eq!(s.sinks.retries, 0);
    expect_error("[sinks]\ntimeout = \"0s\"\n", "sinks.timeout");
}

#[test]
fn zero_capacity_is_rejected() {
    expect_error("[queue]\ncapacity = 0\n", "queue.capacity");
    expect_error("[batch]\nsize = 0\n", "batch.size");
}

/// Sets environment variables for the life of the value, removing them on
/// drop (even when an assertion fails).
struct EnvVars(Vec<&'static str>);

impl EnvVars {
    fn set(vars: &[(&'static str, &str)]) -> Self {
        for (k, v) in vars {
            // SAFETY: this is the only test in this binary that reads or
            // writes the environment, and nothing else in it calls into C
            // code that reads it.
            unsafe { std::env::set_var(k, v) };
        }
        EnvVars(vars.iter().map(|(k, _)| *k).collect())
    }
}

impl Drop for EnvVars {
    fn drop(&mut self) {
        for k in &self.0 {
            // SAFETY: as in `EnvVars::set`.
            unsafe { std::env::remove_var(k) };
        }
    }
}

/// Environment variables are process-wide, so every check that uses them
/// is in this one test.
#[test]
fn environment_overrides_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fapilog.toml");
    std::fs::write(
        &path,
        "level = \"debug\"\nservice = \"from-file\"\n[queue]\ncapacity = 10\nblock_timeout = \"1s\"\n",
    )
    .unwrap();

    {
        let _env = EnvVars::set(&[
            ("FAPILOG__QUEUE__CAPACITY", "77"),
            ("FAPILOG__QUEUE__OVERFLOW", "drop_oldest"),
            ("FAPILOG__QUEUE__BLOCK_TIMEOUT", "250ms"),
            ("FAPILOG__LEVEL", "warn"),
        ]);
        let s = Settings::load(Some(&path)).expect("valid file and environment");
        assert_eq!(s.queue.capacity, 77, "environment beats the file");
        assert_eq!(s.queue.overflow, Overflow::DropOldest);
        assert_eq!(s.queue.block_timeout, std::time::Duration::from_millis(250));
        assert_eq!(s.level, "warn");
        assert_eq!(s.service.as_deref(), Some("from-file"), "file value kept");

        let s = Settings::from_env().expect("environment alone");
        assert_eq!(s.queue.capacity, 77);
        assert_eq!(s.service, None);
    }

    {
        let _env = EnvVars::set(&[("FAPILOG__QUEUE__CAPACITY", "lots")]);
        let err = Settings::load(Some(&path)).expect_err("capacity = lots");
        assert_eq!(err.key(), Some("queue.capacity"), "{err}");
        assert!(err.to_string().contains("queue.capacity"), "{err}");
    }

    {
        let _env = EnvVars::set(&[("FAPILOG__QUEUE__CAPACIT", "5")]);
        let err = Settings::load(Some(&path)).expect_err("unknown key");
        assert_eq!(err.key(), Some("queue.capacit"), "{err}");
        assert!(err.to_string().contains("queue.capacit"), "{err}");
    }

    {
        // Values are read by the setting's type: text stays text, exactly
        // as written, whatever it looks like.
        let _env = EnvVars::set(&[
            ("FAPILOG__VERSION", "1.10"),
            ("FAPILOG__SERVICE", "007"),
            ("FAPILOG__ENVIRONMENT", "true"),
            ("FAPILOG__STATIC_FIELDS__BUILD", "0042"),
            ("FAPILOG__STATIC_FIELDS__RATIO", "1e3"),
            ("FAPILOG__HOSTNAME", "true"),
            ("FAPILOG__BATCH__SIZE", "64"),
        ]);
        let s = Settings::load(Some(&path)).expect("valid environment");
        assert_eq!(s.version.as_deref(), Some("1.10"));
        assert_eq!(s.service.as_deref(), Some("007"));
        assert_eq!(s.environment.as_deref(), Some("true"));
        assert_eq!(s.static_fields["build"], serde_json::json!("0042"));
        assert_eq!(s.static_fields["ratio"], serde_json::json!("1e3"));
        assert!(s.hostname, "a boolean setting still reads `true`");
        assert_eq!(s.batch.size, 64, "a number setting still reads `64`");
    }

    // Without the variables, the file alone applies again.
    let s = Settings::load(Some(&path)).unwrap();
    assert_eq!(s.queue.capacity, 10);
    assert_eq!(s.level, "debug");
}

#[test]
fn valid_settings_configure_a_running_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("logs").join("app.log");
    let toml = format!(
        r#"
level = "info,noisy=error"
service = "checkout"
version = "1.4.2"
environment = "test"
pid = true

[queue]
capacity = 321
overflow = "drop_newest"
block_timeout = "2s"

[batch]
size = 7
linger = "0ms"

[shutdown]
timeout = "10s"

[static_fields]
region = "eu-west-1"

[sinks.file]
path = '{}'
max_bytes = 1000000
keep = 3
"#,
        log_path.display()
    );
    let settings = Settings::from_toml_str(&toml).expect("valid settings");
    assert_eq!(settings.queue.capacity, 321);
    assert_eq!(settings.batch.size, 7);

    let out = Collected::new();
    let (dispatch, guard) = start_filtered(fapilog::builder().settings(&settings).sink(out.sink()));
    assert_eq!(guard.stats().queue_capacity, 321);
    tracing::dispatcher::with_default(&dispatch, || {
        tracing::info!(order_id = 7, "kept");
        tracing::debug!("below the level");
        tracing::warn!(target: "noisy", "below this target's level");
        tracing::error!(target: "noisy", "kept too");
    });
    let report = guard.shutdown_blocking();
    assert_eq!(report.emitted, 2, "{report:?}");

    let events = out.events();
    let messages: Vec<_> = events.iter().map(|e| e.message().unwrap()).collect();
    assert_eq!(messages, ["kept", "kept too"]);
    let e = &events[0];
    assert_eq!(e.field("service"), Some(&"checkout".into()));
    assert_eq!(e.field("version"), Some(&"1.4.2".into()));
    assert_eq!(e.field("environment"), Some(&"test".into()));
    assert_eq!(e.field("region"), Some(&"eu-west-1".into()));
    assert_eq!(e.field("pid"), Some(&std::process::id().into()));

    // The file sink from the settings got the same two lines.
    let text = std::fs::read_to_string(&log_path).expect("file sink wrote its file");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["message"], "kept");
    assert_eq!(lines[0]["service"], "checkout");
    assert_eq!(lines[0]["fields"]["order_id"], 7);
    assert_eq!(lines[1]["target"], "noisy");
}
