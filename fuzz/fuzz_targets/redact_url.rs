//! `cargo fuzz run redact_url`: the URL redactor never panics, and a
//! password put into a URL's user info never shows in its output, whatever
//! bytes the password and the rest of the URL hold.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Any text at all: no panic.
    let _ = fapilog::enrich::redact_url(text);

    // The first line is a password, the rest the host and what follows.
    let (password, rest) = text.split_once('\n').unwrap_or((text, "db:5432/app"));
    // Skip passwords that the rest of the output holds anyway.
    let skeleton = format!("postgres://app:***@{rest}");
    if password.len() < 4 || skeleton.contains(password) {
        return;
    }
    let url = format!("postgres://app:{password}@{rest}");
    let shown = fapilog::enrich::redact_url(&url);
    assert!(!shown.contains(password), "{url:?} showed its password: {shown:?}");
});
