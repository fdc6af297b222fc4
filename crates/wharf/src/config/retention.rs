//! `[[retention]]`: which tags of hosted repositories are kept, and how long untagged manifests stay. The keys
//! `repositories`, `keep_last`, `keep_within`, `keep_tags` and `untagged_after` are a contract scripts rely on.

use serde::Deserialize;

use super::ConfigIssue;

/// One `[[retention]]` entry, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Repository globs (`team/*`; `*` also matches `/`) or `re:<regex>`. The first entry matching a
    /// repository is the one that applies to it.
    pub repositories: Vec<String>,
    /// Keep the newest N tags by push time.
    pub keep_last: Option<usize>,
    /// Keep tags pushed or pulled within this long (`30d`, `12h`).
    pub keep_within: Option<String>,
    /// Keep tags matching these patterns (exact, glob, `re:`, `semver:`).
    pub keep_tags: Vec<String>,
    /// Untagged manifests stay this long after they were written (at least the `[gc] grace`).
    pub untagged_after: Option<String>,
}

impl RetentionConfig {
    pub(super) fn issues(&self, prefix: &str) -> Vec<ConfigIssue> {
        match crate::policy::retention::RetentionRule::compile(self) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .into_iter()
                .map(|(key, reason)| ConfigIssue { key: format!("{prefix}.{key}"), reason })
                .collect(),
        }
    }
}
