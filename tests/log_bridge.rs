//! Records from the `log` crate reach the pipeline with their real target,
//! module, file and line. `init` installs the global subscriber and the
//! `log` bridge, which a process can do once: this binary has one test.

mod support;

use support::Collected;

#[test]
fn log_records_are_captured_with_their_real_location() {
    let out = Collected::new();
    let guard = fapilog::builder()
        .filter("info")
        .sink(out.sink())
        .init()
        .expect("first init succeeds");

    let warn_line = line!() + 1;
    log::warn!(target: "legacy::db", "pool at {}%", 95);
    let info_line = line!() + 1;
    log::info!("plain record");
    log::debug!("below the level");
    let tracing_line = line!() + 1;
    tracing::info!(native = true, "from tracing");

    // A second pipeline cannot take over the process.
    let second = fapilog::builder().sink(Collected::new().sink()).init();
    let err = second.expect_err("second init must fail");
    assert!(err.to_string().contains("already installed"), "{err}");

    let report = guard.shutdown_blocking();
    assert_eq!(report.dropped, 0, "{report:?}");

    let events = out.events();
    let messages: Vec<_> = events.iter().map(|e| e.message().unwrap_or("")).collect();
    assert_eq!(messages, ["pool at 95%", "plain record", "from tracing"]);

    let warn = &events[0];
    assert_eq!(warn.level(), tracing::Level::WARN);
    assert_eq!(warn.target(), "legacy::db");
    assert_eq!(warn.module_path(), Some(module_path!()));
    assert_eq!(warn.file(), Some(file!()));
    assert_eq!(warn.line(), Some(warn_line));
    // The bridge's own `log.*` fields are not passed on as event fields.
    let names: Vec<_> = warn.fields().map(|(k, _)| k).collect();
    assert!(
        names.iter().all(|k| !k.starts_with("log.")),
        "fields: {names:?}"
    );

    let info = &events[1];
    assert_eq!(info.level(), tracing::Level::INFO);
    assert_eq!(info.target(), module_path!(), "log's default target");
    assert_eq!(info.file(), Some(file!()));
    assert_eq!(info.line(), Some(info_line));
    assert_eq!(info.thread_name(), std::thread::current().name());

    let native = &events[2];
    assert_eq!(native.line(), Some(tracing_line));
    assert_eq!(native.field("native"), Some(&true.into()));
}
