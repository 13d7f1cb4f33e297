//! Hiding secrets in URLs before they reach a `Debug` output, an error
//! message, health's `last_error` or an event.

// Used by the feature-gated lookups; a build may have none or some of them.
#![allow(dead_code)]

/// What to do with a URL's query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// Replace it whole with `…` (HTTP: API keys travel there).
    Hide,
    /// Keep it, but hide the values of password-like parameters
    /// (`password`, `pass`, `pwd`, `secret`, `token`, `sslpassword`).
    HidePasswords,
}

/// `scheme://user:password@host/path?query#fragment` →
/// `scheme://user:***@host/path?…`.
///
/// Works on the text, not a parse, so it also hides what a URL parser
/// would reject (a password holding `@` or `/`): the user info runs to
/// the last `@` before the query, so a stray `@` in a path over-hides,
/// never under-hides.
pub(crate) fn url(url: &str, query: Query) -> String {
    let (body, fragment) = match url.split_once('#') {
        Some((b, _)) => (b, "#…"),
        None => (url, ""),
    };
    let (base, q) = match body.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (body, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rfind('@') {
            Some(at) => {
                let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
                match userinfo.split_once(':') {
                    Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                    None => base.to_owned(),
                }
            }
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    let q = match (q, query) {
        (None, _) => String::new(),
        (Some(_), Query::Hide) => "?…".to_owned(),
        (Some(q), Query::HidePasswords) => {
            let pairs: Vec<String> = q
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((k, _)) if is_secret_param(k) => format!("{k}=***"),
                    _ => pair.to_owned(),
                })
                .collect();
            format!("?{}", pairs.join("&"))
        }
    };
    format!("{base}{q}{fragment}")
}

fn is_secret_param(k: &str) -> bool {
    ["password", "pass", "pwd", "secret", "token", "sslpassword"]
        .iter()
        .any(|s| k.eq_ignore_ascii_case(s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_wherever_they_sit() {
        let cases = [
            (
                "postgres://app:s3cret@db:5432/app",
                "postgres://app:***@db:5432/app",
            ),
            ("postgres://app:p@ss@db/app", "postgres://app:***@db/app"),
            ("https://u:ab/cd@host/x", "https://u:***@host/x"),
            (
                "postgres://app@db/app?password=s3cret&sslmode=require",
                "postgres://app@db/app?password=***&sslmode=require",
            ),
            (
                "redis://:pw@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            ("http://api.test/u/{key}", "http://api.test/u/{key}"),
        ];
        for (input, want) in cases {
            assert_eq!(url(input, Query::HidePasswords), want, "{input}");
        }
        assert_eq!(
            url(
                "https://app:pw@api.test/u/{key}?api_key=k3y#frag",
                Query::Hide
            ),
            "https://app:***@api.test/u/{key}?…#…"
        );
    }
}
