//! `[[sync]]` tables: images to keep copied from an upstream, every architecture, on a schedule.
//! The keys `upstream`, `repository` and `tags` are a contract scripts rely on.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigIssue;
use crate::policy::tags::TagSelector;

/// One sync entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncConfig {
    /// Name for reports and logs [default: `<upstream>/<repository>`].
    pub name: Option<String>,
    /// The `[[upstream]]` to copy from (its `name`).
    pub upstream: String,
    /// Repository at the upstream (`library/alpine` or `alpine` for Docker Hub).
    pub repository: String,
    /// Tags to copy: exact tags, globs (`3.*`), regexes (`re:^v1\.2[0-9]$`) or semver ranges
    /// (`semver:>=1.29, <1.32`).
    pub tags: Vec<String>,
    /// Tags matching any of these are skipped (same pattern syntax).
    pub exclude: Vec<String>,
    /// Keep only the newest N matching tags (semantic-version order where tags parse, else lexical).
    pub newest: Option<usize>,
    /// Platforms to copy (`linux/amd64`, `linux/arm/v7`); empty means all. The index is kept byte for byte
    /// either way.
    pub platforms: Vec<String>,
    /// Copy referrers (signatures, SBOMs, attestations) of every copied manifest.
    pub referrers: bool,
    /// How often `wharf serve` runs the entry: `90s`, `30m`, `6h`, `1d` [default: no schedule].
    pub every: Option<String>,
    /// Blobs copied at once for this entry.
    pub concurrency: usize,
    /// Bandwidth cap for this entry, bytes per second (0: none).
    pub max_bytes_per_sec: u64,
    /// Copy into another registry instead of the local store.
    pub destination: Option<DestinationConfig>,
    /// A lock file written by `wharf images lock`: every image in it is copied at its locked digest (all
    /// platforms, or `platforms`), tagged with its tag and pinned. Replaces `upstream`, `repository`, `tags`.
    pub lock: Option<PathBuf>,
    /// For an entry expanded from a lock file: tag (or digest, for a reference without a tag) → locked digest.
    #[serde(skip)]
    pub locked: std::collections::BTreeMap<String, String>,
}

impl Default for SyncConfig {
    fn default() -> Self {
        SyncConfig {
            name: None,
            upstream: String::new(),
            repository: String::new(),
            tags: Vec::new(),
            exclude: Vec::new(),
            newest: None,
            platforms: Vec::new(),
            referrers: true,
            every: None,
            concurrency: 4,
            max_bytes_per_sec: 0,
            destination: None,
            lock: None,
            locked: Default::default(),
        }
    }
}

/// `destination = { url = "...", repository = "...", username = "...", password_env = "..." }`
#[derive(Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct DestinationConfig {
    /// Registry base URL.
    pub url: String,
    /// Repository there [default: `<upstream name>/<repository>`].
    pub repository: Option<String>,
    /// Username.
    pub username: Option<String>,
    /// Password inline.
    pub password: Option<String>,
    /// Environment variable with the password.
    pub password_env: Option<String>,
    /// File with the password.
    pub password_file: Option<PathBuf>,
    /// Extra CA certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate (testing only).
    pub insecure_skip_verify: bool,
}

impl std::fmt::Debug for DestinationConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationConfig")
            .field("url", &self.url)
            .field("repository", &self.repository)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
}

/// Parse `90s`, `30m`, `6h`, `1d` (or plain seconds).
pub fn parse_every(s: &str) -> Result<Duration, String> {
    let d = parse_duration(s)?;
    if d.is_zero() {
        return Err("the interval must be longer than zero".into());
    }
    Ok(d)
}

/// A duration like [`parse_every`]'s, where zero is allowed (`"0s"`: a garbage collection grace of none).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 30m, 6h or 1d"))?;
    let scale: u64 = match unit.trim() {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("{s:?} has an unknown unit (use s, m, h or d)")),
    };
    // A year bounds every schedule and expiry: larger values are typos, and would overflow timer arithmetic.
    const MAX_SECS: u64 = 366 * 86_400;
    let secs = n.checked_mul(scale).filter(|&v| v <= MAX_SECS).ok_or_else(|| format!("{s:?} is longer than a year"))?;
    Ok(Duration::from_secs(secs))
}

impl SyncConfig {
    /// The entry's display name.
    pub fn display_name(&self) -> String {
        match (&self.name, &self.lock) {
            (Some(n), _) => n.clone(),
            (None, Some(lock)) => format!("lock:{}", lock.display()),
            (None, None) => format!("{}/{}", self.upstream, self.repository),
        }
    }

    /// Problems with a `lock = ...` table: the file must parse and every image's registry must be an upstream.
    fn lock_issues(&self, lock: &std::path::Path, upstreams: &[&str], issue: &mut dyn FnMut(&str, String)) {
        for (key, set) in [("upstream", !self.upstream.is_empty()), ("repository", !self.repository.is_empty())] {
            if set {
                issue(key, "comes from the lock file: leave it out with `lock`".into());
            }
        }
        if !self.tags.is_empty() || !self.exclude.is_empty() || self.newest.is_some() {
            issue("tags", "come from the lock file: leave tags, exclude and newest out with `lock`".into());
        }
        match std::fs::read_to_string(lock) {
            Err(e) => issue("lock", format!("{}: {e}", lock.display())),
            Ok(text) => match crate::images::Lock::parse(&text) {
                Err(e) => issue("lock", format!("{}: {e}", lock.display())),
                Ok(l) => {
                    for r in l.images.keys() {
                        let registry = r.parse::<oci::reference::Reference>().map(|x| x.registry).unwrap_or_default();
                        if !upstreams.iter().any(|u| oci::reference::normalize_registry(u) == registry) {
                            issue(
                                "lock",
                                format!(
                                    "{}: {r:?}: no [[upstream]] named {registry:?} to copy it from",
                                    lock.display()
                                ),
                            );
                        }
                    }
                }
            },
        }
    }

    /// Problems with this table; `upstreams` are the configured upstream names.
    pub fn issues(&self, at: &str, upstreams: &[&str]) -> Vec<ConfigIssue> {
        let mut out = Vec::new();
        let mut issue = |key: &str, reason: String| out.push(ConfigIssue { key: format!("{at}.{key}"), reason });
        if let Some(lock) = &self.lock {
            self.lock_issues(lock, upstreams, &mut issue);
        } else if self.upstream.is_empty() {
            issue("upstream", "is required (the name of an [[upstream]])".into());
        } else if !upstreams.contains(&self.upstream.as_str()) {
            issue("upstream", format!("{:?} is not the name of any [[upstream]]", self.upstream));
        }
        if self.lock.is_none() && self.repository.is_empty() {
            issue("repository", "is required (e.g. \"library/alpine\")".into());
        } else if self.lock.is_none() && self.repository.parse::<oci::RepoName>().is_err() {
            issue("repository", format!("{:?} is not a valid repository name", self.repository));
        }
        if self.tags.is_empty() && self.lock.is_none() {
            issue("tags", "list at least one tag or pattern".into());
        }
        for (i, t) in self.tags.iter().enumerate() {
            if let Err(e) = TagSelector::parse(t) {
                issue(&format!("tags[{i}]"), e);
            }
        }
        for (i, t) in self.exclude.iter().enumerate() {
            if let Err(e) = TagSelector::parse(t) {
                issue(&format!("exclude[{i}]"), e);
            }
        }
        if self.newest == Some(0) {
            issue("newest", "must be at least 1".into());
        }
        for (i, p) in self.platforms.iter().enumerate() {
            let parts: Vec<&str> = p.split('/').collect();
            if !(2..=3).contains(&parts.len()) || parts.iter().any(|x| x.is_empty()) {
                issue(&format!("platforms[{i}]"), format!("{p:?} is not os/arch or os/arch/variant"));
            }
        }
        if let Some(e) = &self.every {
            if let Err(err) = parse_every(e) {
                issue("every", err);
            }
        }
        if self.concurrency == 0 {
            issue("concurrency", "must be at least 1".into());
        }
        if let Some(d) = &self.destination {
            match reqwest::Url::parse(&d.url) {
                Ok(u)
                    if (u.scheme() == "http" || u.scheme() == "https")
                        && u.username().is_empty()
                        && u.password().is_none() => {}
                _ => issue(
                    "destination.url",
                    format!("{:?} is not an http:// or https:// URL without credentials", d.url),
                ),
            }
            if !self.platforms.is_empty() {
                issue(
                    "platforms",
                    "a platform subset cannot be pushed to another registry (it would refuse an index whose children are missing); copy all platforms or sync locally".into(),
                );
            }
            if let Some(r) = &d.repository {
                if r.parse::<oci::RepoName>().is_err() {
                    issue("destination.repository", format!("{r:?} is not a valid repository name"));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_every("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_every("30m").unwrap(), Duration::from_secs(1800));
        assert_eq!(parse_every("6h").unwrap(), Duration::from_secs(21600));
        assert_eq!(parse_every("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse_every("15").unwrap(), Duration::from_secs(15));
        for bad in ["", "0s", "5w", "h", "-1m", "213503982334601d", "18446744073709551615s", "367d"] {
            assert!(parse_every(bad).is_err(), "{bad}");
        }
    }
}
