//! Hiding the secrets of a URL: the password of its user info, and secret
//! query parameters.
//!
//! Works on the text, not a parse, so it also hides what a URL parser
//! would reject — passwords holding `@`, `/`, `?`, `#` or `:` as people
//! paste them. The user info runs to the *last* `@` after `://` (whatever
//! precedes it), so a stray `@` later in the URL over-hides, never
//! under-hides.

/// What to do with a URL's query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Query {
    /// Replace it whole with `…` (HTTP: API keys travel there).
    #[cfg_attr(not(feature = "http"), allow(dead_code))]
    Hide,
    /// Keep it, but hide the values of password-like parameters
    /// (`password`, `pass`, `pwd`, `secret`, `token`, `sslpassword`, …).
    HidePasswords,
}

/// `scheme://user:password@host/path?query#fragment` →
/// `scheme://user:***@host/path?…`.
pub(crate) fn url(url: &str, query: Query) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return tail(url, query);
    };
    let Some(at) = rest.rfind('@') else {
        return format!("{scheme}://{}", tail(rest, query));
    };
    let (userinfo, host) = (&rest[..at], &rest[at + 1..]);
    // What stands before the last `@` is the user info only if it holds no
    // URL delimiter before its first `:`; otherwise the `@` is further on
    // (a query value, say) and all of it is hidden.
    let shown = match userinfo.split_once(':') {
        Some((user, _)) if !user.contains(['/', '?', '#', '@']) => format!("{user}:***"),
        None if !userinfo.contains(['/', '?', '#', '@']) => userinfo.to_owned(),
        _ => "***".to_owned(),
    };
    format!("{scheme}://{shown}@{}", tail(host, query))
}

/// Host, path and query: the fragment is hidden, the query as asked.
fn tail(text: &str, query: Query) -> String {
    let (body, fragment) = match text.split_once('#') {
        Some((b, _)) => (b, "#…"),
        None => (text, ""),
    };
    let (base, q) = match body.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (body, None),
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

/// A query parameter whose value is hidden: exactly `pass`, `key` or
/// `auth`, or a name that (lower-cased, `-` `_` `.` left out) contains
/// `password`, `passwd`, `pwd`, `secret`, `token`, `apikey`, `signature`
/// or `credential` (`X-Amz-Signature`, `client_secret`, `access_token`).
fn is_secret_param(k: &str) -> bool {
    if ["pass", "key", "auth", "sig"]
        .iter()
        .any(|s| k.eq_ignore_ascii_case(s))
    {
        return true;
    }
    let normal: String = k
        .chars()
        .filter(|c| !matches!(c, '-' | '_' | '.'))
        .map(|c| c.to_ascii_lowercase())
        .collect();
    [
        "password",
        "passwd",
        "pwd",
        "secret",
        "token",
        "apikey",
        "signature",
        "credential",
    ]
    .iter()
    .any(|s| normal.contains(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

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
                "postgres://app:Zq9Xw7?Kv4Mn2@host/db",
                "postgres://app:***@host/db",
            ),
            ("postgres://app:ab#cd@host/db", "postgres://app:***@host/db"),
            (
                "postgres://app@db/app?password=s3cret&sslmode=require",
                "postgres://app@db/app?password=***&sslmode=require",
            ),
            (
                "postgres://app@db/app?password=s3cret&mail=a@b",
                "postgres://***@b",
            ),
            (
                "redis://:pw@127.0.0.1:6379/0",
                "redis://:***@127.0.0.1:6379/0",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            (
                "https://s3.test/b?X-Amz-Signature=abc&X-Amz-Security-Token=def&client_secret=g&v=1",
                "https://s3.test/b?X-Amz-Signature=***&X-Amz-Security-Token=***&client_secret=***&v=1",
            ),
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

    /// A password of any printable characters, marked so that it cannot
    /// occur in the rest of the URL by chance.
    fn password() -> impl Strategy<Value = String> {
        proptest::string::string_regex("[ -~]{0,24}")
            .expect("valid regex")
            .prop_map(|s| format!("Zq9{s}"))
    }

    proptest! {
        #[test]
        fn no_user_info_password_is_ever_shown(
            pw in password(),
            user in "[a-z]{0,8}",
            host in "[a-z]{1,8}(\\.[a-z]{1,5})?(:[0-9]{1,5})?",
            path in "(/[a-z]{0,8}){0,3}",
            query in "(\\?[a-z]{1,5}=[a-z0-9]{0,5}(&[a-z]{1,5}=[a-z0-9@]{0,5}){0,2})?",
            scheme in "(postgres|mysql|redis|https?)",
        ) {
            let input = format!("{scheme}://{user}:{pw}@{host}{path}{query}");
            for mode in [Query::Hide, Query::HidePasswords] {
                let out = url(&input, mode);
                prop_assert!(!out.contains(&pw), "{input:?} -> {out:?}");
            }
        }

        #[test]
        fn no_password_parameter_is_ever_shown(
            pw in "Zq9[!-~&&[^&#]]{0,16}",
            name in "(password|PASSWORD|pwd|secret|token|sslpassword)",
            before in "([a-z]{1,5}=[a-z0-9]{0,5}&)?",
        ) {
            let input = format!("postgres://app@db/app?{before}{name}={pw}&sslmode=require");
            let out = url(&input, Query::HidePasswords);
            prop_assert!(!out.contains(&pw), "{input:?} -> {out:?}");
        }
    }
}
