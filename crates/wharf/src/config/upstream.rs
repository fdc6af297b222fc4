//! `[[upstream]]` tables: the registries Wharf mirrors. Only these hosts are ever dialled.

use std::path::PathBuf;

use oci::reference::valid_host;
use serde::Deserialize;

use super::ConfigIssue;
use crate::policy::tags::TagPattern;

/// One upstream registry. `Debug` redacts the password.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamConfig {
    /// Registry host clients use for it (`docker.io`, `registry.k8s.io`): the `ns` value and path prefix.
    pub name: String,
    /// Base URL Wharf dials (`https://registry-1.docker.io`); `http://` for plain-HTTP registries.
    pub url: String,
    /// Serve requests that carry neither `ns` nor a host prefix (the Docker daemon's `registry-mirrors`).
    pub default: bool,
    /// Username for Basic auth or the token endpoint.
    pub username: Option<String>,
    /// Password, inline (prefer `password_env` or `password_file`).
    pub password: Option<String>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
    /// File holding the password (trailing newline ignored).
    pub password_file: Option<PathBuf>,
    /// PEM file with extra CA certificates to trust (besides the system roots).
    pub ca_file: Option<PathBuf>,
    /// Accept any TLS certificate (testing only).
    pub insecure_skip_verify: bool,
    /// TCP connect timeout, seconds.
    pub connect_timeout_secs: u64,
    /// Timeout for a whole manifest or metadata request, seconds (blob streams have no total limit).
    pub timeout_secs: u64,
    /// Most requests in flight to this upstream at once.
    pub max_concurrent: usize,
    /// How long a tag that was checked upstream is served without asking again, seconds.
    pub tag_ttl_secs: u64,
    /// Tags matching these patterns never move upstream, so once cached they are never revalidated (and sync
    /// reports a move as a conflict instead of following it). Globs (`v*`), or regular expressions written
    /// `re:<regex>`. Empty by default: Docker Hub re-pushes release tags when a base image is rebuilt, and a
    /// frozen tag would never receive that security rebuild. Set it for registries that enforce immutable
    /// tags (registry.k8s.io), e.g. to [`SEMVER_RELEASES`].
    pub immutable_tags: Vec<String>,
    /// How long an upstream "not found" is remembered, seconds.
    pub negative_ttl_secs: u64,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long an open breaker refuses to dial the upstream, seconds.
    pub breaker_open_secs: u64,
    /// Attempts for a request answered 429 or 5xx (with backoff, honouring `Retry-After`).
    pub max_attempts: u32,
    /// Most requests per second sent to this upstream (0: no limit).
    pub requests_per_second: f64,
    /// Stop syncing from this upstream when its `ratelimit-remaining` header (Docker Hub) drops below this.
    pub ratelimit_floor: Option<u64>,
    /// `max_bytes = "20GiB"`: a sub-budget for this upstream's cache repositories (least recently used
    /// cached images are evicted beyond it; see `[mirror] max_bytes` for the whole cache).
    pub max_bytes: Option<super::size::SizeValue>,
}

/// The URL with any `user:password@` part replaced, for debug output (validation refuses such URLs, but a
/// configuration is printed before it is validated).
fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_username("<redacted>");
            let _ = u.set_password(None);
            u.to_string()
        }
        Ok(_) => url.to_owned(),
        Err(_) if url.contains('@') => "<unparsable url, not shown>".to_owned(),
        Err(_) => url.to_owned(),
    }
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("name", &self.name)
            .field("url", &redact_url(&self.url))
            .field("default", &self.default)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .finish_non_exhaustive()
    }
}

/// Semantic-version tags (`1.2.3`, `v1.29.0`): the releases a registry with immutable tags never moves. A
/// suggestion for `immutable_tags`, not a default.
pub const SEMVER_RELEASES: &str = r"re:^v?[0-9]+\.[0-9]+\.[0-9]+$";

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            name: String::new(),
            url: String::new(),
            default: false,
            username: None,
            password: None,
            password_env: None,
            password_file: None,
            ca_file: None,
            insecure_skip_verify: false,
            connect_timeout_secs: 5,
            timeout_secs: 30,
            max_concurrent: 32,
            tag_ttl_secs: 300,
            immutable_tags: Vec::new(),
            negative_ttl_secs: 30,
            breaker_threshold: 3,
            breaker_open_secs: 30,
            max_attempts: 3,
            requests_per_second: 0.0,
            ratelimit_floor: None,
            max_bytes: None,
        }
    }
}

impl UpstreamConfig {
    /// Problems with this table; `at` is its key path (e.g. `upstream[1]`).
    pub fn issues(&self, at: &str) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut issue = |key: &str, reason: String| out.push(ConfigIssue { key: format!("{at}.{key}"), reason });
        if self.name.is_empty() {
            issue("name", "is required (the registry host clients use, e.g. \"docker.io\")".into());
        } else if !valid_host(&self.name) || self.name != self.name.to_ascii_lowercase() {
            issue("name", format!("{:?} is not a lowercase registry host name", self.name));
        }
        match reqwest::Url::parse(&self.url) {
            _ if self.url.is_empty() => issue("url", "is required (e.g. \"https://registry-1.docker.io\")".into()),
            // Checked first, and the URL is never echoed: it holds a secret that must not reach logs.
            Ok(u) if !u.username().is_empty() || u.password().is_some() => issue(
                "url",
                "must not contain credentials (user:password@); put them in username and password, \
                 password_env or password_file"
                    .into(),
            ),
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ if self.url.contains('@') => {
                issue("url", "is not an http:// or https:// URL (not shown: it may contain credentials)".into())
            }
            _ => issue("url", format!("{:?} is not an http:// or https:// URL", self.url)),
        }
        let sources = [self.password.is_some(), self.password_env.is_some(), self.password_file.is_some()];
        if sources.iter().filter(|s| **s).count() > 1 {
            issue("password", "set only one of password, password_env, password_file".into());
        }
        if sources.iter().any(|s| *s) && self.username.is_none() {
            issue("username", "is required when a password is set".into());
        }
        if let Some(var) = &self.password_env {
            if std::env::var_os(var).is_none() {
                issue("password_env", format!("environment variable {var} is not set"));
            }
        }
        if let Some(f) = &self.password_file {
            if let Err(e) = std::fs::metadata(f) {
                issue("password_file", format!("{}: {e}", f.display()));
            }
        }
        if let Some(f) = &self.ca_file {
            if let Err(e) = std::fs::metadata(f) {
                issue("ca_file", format!("{}: {e}", f.display()));
            }
        }
        for (i, p) in self.immutable_tags.iter().enumerate() {
            if let Err(e) = TagPattern::parse(p) {
                issue(&format!("immutable_tags[{i}]"), e);
            }
        }
        if self.max_concurrent == 0 {
            issue("max_concurrent", "must be at least 1".into());
        }
        if self.max_attempts == 0 {
            issue("max_attempts", "must be at least 1".into());
        }
        if !(self.requests_per_second >= 0.0 && self.requests_per_second.is_finite()) {
            issue("requests_per_second", "must be a non-negative number".into());
        }
        if self.timeout_secs == 0 || self.connect_timeout_secs == 0 {
            issue("timeout_secs", "timeouts must be at least 1 second".into());
        }
        if let Err(e) = self.max_bytes() {
            issue("max_bytes", e);
        }
        out
    }

    /// The cache sub-budget in bytes, if set (validated by [`UpstreamConfig::issues`]).
    pub fn max_bytes(&self) -> Result<Option<u64>, String> {
        self.max_bytes.as_ref().map(super::size::SizeValue::bytes).transpose()
    }

    /// The password from whichever source is configured (never logged).
    pub fn resolve_password(&self) -> Option<String> {
        if let Some(p) = &self.password {
            return Some(p.clone());
        }
        if let Some(v) = &self.password_env {
            return std::env::var(v).ok();
        }
        if let Some(f) = &self.password_file {
            return std::fs::read_to_string(f).ok().map(|s| s.trim_end_matches(['\n', '\r']).to_owned());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url_issues(url: &str) -> Vec<ConfigIssue> {
        let cfg = UpstreamConfig { name: "r.io".into(), url: url.into(), ..Default::default() };
        cfg.issues("upstream[3]").into_iter().filter(|i| i.key == "upstream[3].url").collect()
    }

    #[test]
    fn credentials_in_the_url_are_refused_and_never_shown() {
        for url in ["https://alice:s3cret@r.io", "https://alice@r.io/v2", "http://:s3cret@r.io:5000"] {
            let issues = url_issues(url);
            assert_eq!(issues.len(), 1, "{url}: {issues:?}");
            let text = issues[0].to_string();
            assert!(text.contains("must not contain credentials") && text.contains("username"), "{text}");
            assert!(!text.contains("s3cret") && !text.contains("alice"), "{text}");
        }
        assert!(url_issues("https://r.io").is_empty());
        assert!(!url_issues("ftp://alice:s3cret@r.io").is_empty());
        assert!(!url_issues("ftp://alice:s3cret@r.io")[0].reason.contains("s3cret"));
        let cfg = UpstreamConfig { url: "https://alice:s3cret@r.io".into(), ..Default::default() };
        let debug = format!("{cfg:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("alice"), "{debug}");
    }
}
