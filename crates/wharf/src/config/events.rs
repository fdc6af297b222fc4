//! `[[webhook]]`: where Wharf sends events (CloudEvents JSON over HTTP POST), which ones, and how it signs them.

use std::path::PathBuf;

use serde::Deserialize;

use super::ConfigIssue;

/// One `[[webhook]]` endpoint, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// A name for logs and metrics [default: the URL's host:port].
    pub name: Option<String>,
    /// `http(s)://` URL events are POSTed to.
    pub url: String,
    /// HMAC-SHA256 key: each request carries `X-Wharf-Signature: sha256=<hex of HMAC(body)>`.
    pub secret: Option<String>,
    /// The key in a file (kept out of the configuration).
    pub secret_file: Option<PathBuf>,
    /// Event types sent, without the `io.wharf.` prefix (`manifest.pushed`, `tag.*`, `gc.finished`)
    /// [default: all].
    pub events: Vec<String>,
    /// Repository globs (`team/*`, `re:...`): events about other repositories are not sent [default: all].
    /// Events without a repository (gc, scrub, sync runs) are always sent.
    pub repositories: Vec<String>,
    /// Per-request timeout [default: 10s].
    pub timeout: Option<String>,
    /// Longest wait between retries (they back off from 1s, doubling) [default: 5m].
    pub retry_max: Option<String>,
    /// An event not delivered for this long is dropped and counted as failed [default: 24h].
    pub give_up_after: Option<String>,
}

impl WebhookConfig {
    /// The display name.
    pub fn display_name(&self) -> String {
        self.name.clone().unwrap_or_else(|| match reqwest::Url::parse(&self.url) {
            Ok(u) => format!("{}:{}", u.host_str().unwrap_or_default(), u.port_or_known_default().unwrap_or(0)),
            Err(_) => self.url.clone(),
        })
    }

    pub(super) fn issues(&self, prefix: &str) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut push = |key: &str, reason: String| out.push(ConfigIssue { key: format!("{prefix}.{key}"), reason });
        match reqwest::Url::parse(&self.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                if !u.username().is_empty() || u.password().is_some() {
                    push("url", "must not carry credentials; use secret for signing".into());
                }
            }
            Ok(_) => push("url", format!("{:?} is not an http(s) URL", self.url)),
            Err(e) => push("url", format!("{:?}: {e}", self.url)),
        }
        if self.secret.is_some() && self.secret_file.is_some() {
            push("secret_file", "set secret or secret_file, not both".into());
        }
        for (key, v) in
            [("timeout", &self.timeout), ("retry_max", &self.retry_max), ("give_up_after", &self.give_up_after)]
        {
            if let Some(v) = v {
                if let Err(e) = super::sync::parse_duration(v) {
                    push(key, e);
                }
            }
        }
        for (i, e) in self.events.iter().enumerate() {
            if !crate::policy::events::known_filter(e) {
                push(
                    &format!("events[{i}]"),
                    format!("{e:?} names no event type (one of {})", crate::policy::events::KINDS.join(", ")),
                );
            }
        }
        for (i, r) in self.repositories.iter().enumerate() {
            if let Err(e) = crate::policy::tags::TagPattern::parse(r.trim()) {
                push(&format!("repositories[{i}]"), e);
            }
        }
        out
    }
}
