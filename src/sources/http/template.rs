//! The per-key URL template: `https://api.example/users/{key}`, the key
//! percent-encoded into it, and the checks that make a bad URL a
//! configuration error rather than a failure per event.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::Url;

use super::redact_url;
use crate::enrich::EnrichError;
use crate::error::ConfigError;
use crate::lookup::Key;

/// Bytes left as they are in a key; everything else is percent-encoded.
const KEY_SET: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

const KEY_PLACEHOLDER: &str = "{key}";

/// The per-key URL, split around its `{key}` placeholders.
#[derive(Debug)]
pub(super) struct UrlTemplate {
    parts: Vec<String>,
    key_in_path: bool,
    pub(super) shown: String,
}

impl UrlTemplate {
    pub(super) fn parse(template: &str) -> Result<Self, ConfigError> {
        if !template.contains(KEY_PLACEHOLDER) {
            return Err(ConfigError::msg(format!(
                "http lookup url {} has no `{{key}}` placeholder: write where the key goes, e.g. \"https://api.example/users/{{key}}\"",
                redact_url(template)
            )));
        }
        check_url("url", &template.replace(KEY_PLACEHOLDER, "key"))?;
        let end_of_path = template.find(['?', '#']).unwrap_or(template.len());
        let key_in_path = template
            .find(KEY_PLACEHOLDER)
            .is_some_and(|i| i < end_of_path);
        Ok(UrlTemplate {
            parts: template.split(KEY_PLACEHOLDER).map(str::to_owned).collect(),
            key_in_path,
            shown: redact_url(template),
        })
    }

    /// The URL for one key; `None` when the key cannot be a path segment.
    pub(super) fn url_for(&self, key: &Key) -> Option<Result<Url, EnrichError>> {
        let raw = key.to_string();
        if self.key_in_path && matches!(raw.as_str(), "" | "." | "..") {
            return None;
        }
        let encoded = utf8_percent_encode(&raw, KEY_SET).to_string();
        let url = self.parts.join(&encoded);
        Some(Url::parse(&url).map_err(|e| {
            EnrichError::msg(format!(
                "http lookup: a key makes {} an invalid url: {e}",
                self.shown
            ))
        }))
    }
}

pub(super) fn check_url(what: &str, url: &str) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url).map_err(|e| {
        ConfigError::msg(format!(
            "http lookup {what} {} is not a valid url: {e}",
            redact_url(url)
        ))
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(ConfigError::msg(format!(
            "http lookup {what} {} must be an http:// or https:// url with a host",
            redact_url(url)
        )));
    }
    Ok(parsed)
}
