//! Filter directives: `info`, `info,my_crate=debug,hyper=warn`,
//! `my_crate[request{user_id=42}]=trace` — `tracing-subscriber`'s
//! `EnvFilter` syntax, checked strictly first.
//!
//! `EnvFilter` takes a bare word as a target, so a mistyped level
//! (`inof`, `verbose`) would silently enable everything under a target of
//! that name. Here a directive without `=` must be a level, and the part
//! after the last `=` of a directive must be a level too.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::LevelFilter;

/// Parses `directives` into an `EnvFilter`, or says what is wrong.
pub(crate) fn parse(directives: &str) -> Result<EnvFilter, String> {
    let normalized = check(directives)?;
    EnvFilter::builder()
        .parse(&normalized)
        .map_err(|e| e.to_string())
}

/// The strict check alone (for settings, which are parsed before use).
/// Returns the directives with the blanks around them and around their
/// level's `=` removed, which `EnvFilter` would not accept.
pub(crate) fn check(directives: &str) -> Result<String, String> {
    if directives.trim().is_empty() {
        return Err("no directives given".to_owned());
    }
    let mut normalized = Vec::new();
    for directive in split(directives) {
        let directive = directive.trim();
        if directive.is_empty() {
            continue;
        }
        // A span selector (`target[span{field=value}]`) may hold `=` of its
        // own: the level is whatever follows the selector's `]`.
        let (selector, level) = match directive.rfind(']') {
            Some(end) => match directive[end + 1..].strip_prefix('=') {
                Some(level) => (&directive[..=end], Some(level)),
                None if directive[end + 1..].trim().is_empty() => (directive, None),
                None => return Err(format!("directive {directive:?} has text after `]`")),
            },
            None => match directive.rsplit_once('=') {
                Some((target, level)) => (target, Some(level)),
                None => ("", Some(directive)),
            },
        };
        if level.is_some() && selector.is_empty() && directive.contains('=') {
            return Err(format!("directive {directive:?} has no target before `=`"));
        }
        match level {
            Some(level) => {
                let level = level.trim();
                if level.is_empty() {
                    // `EnvFilter` would read `hyper=` as trace.
                    return Err(format!("directive {directive:?} has no level after `=`"));
                }
                level.parse::<LevelFilter>().map_err(|_| {
                    if selector.trim().is_empty() {
                        format!(
                            "{level:?} is not a level (for every level of a target, write `{level}=trace`)"
                        )
                    } else {
                        format!("{level:?} is not a level")
                    }
                })?;
                match selector.trim() {
                    "" => normalized.push(level.to_owned()),
                    selector => normalized.push(format!("{selector}={level}")),
                }
            }
            None => normalized.push(selector.trim().to_owned()),
        }
    }
    Ok(normalized.join(","))
}

/// Splits at the commas that separate directives (not those inside a span
/// selector's `{…}`).
fn split(directives: &str) -> impl Iterator<Item = &str> {
    let mut depth = 0usize;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in directives.char_indices() {
        match c {
            '[' | '{' => depth += 1,
            ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&directives[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&directives[start..]);
    parts.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_levels_and_directives() {
        for ok in [
            "info",
            "warn,my_crate=debug,other::m=off",
            "my_crate[request{user_id=42}]=trace",
            "[request]=debug,info",
            "my_crate[request]",
            " info , sqlx = warn ",
        ] {
            assert!(parse(ok).is_ok(), "{ok}: {:?}", parse(ok).err());
        }
    }

    #[test]
    fn rejects_what_env_filter_would_misread() {
        for bad in [
            "verbose",
            "my_crate=loud",
            "=info",
            "",
            "  ",
            "a[b]c",
            "info,hyper=",
            "[span]=",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
        assert_eq!(
            parse("inof").unwrap_err(),
            "\"inof\" is not a level (for every level of a target, write `inof=trace`)"
        );
    }
}
