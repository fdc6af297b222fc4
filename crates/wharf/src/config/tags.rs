//! `[[tags]]` (tag rules for hosted repositories) and `[history]` (how much tag history is kept). The keys
//! `repositories`, `tags`, `immutable` and `required_platforms` are a contract scripts rely on.

use serde::Deserialize;

use super::ConfigIssue;

/// One `[[tags]]` entry, as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TagRuleConfig {
    /// Repository globs (`prod/*`; `*` also matches `/`) or `re:<regex>`.
    pub repositories: Vec<String>,
    /// Tag patterns, as in `[[sync]]`: exact, glob, `re:`, `semver:` (empty: every tag).
    pub tags: Vec<String>,
    /// Tags matching these are not covered by this entry.
    pub exclude: Vec<String>,
    /// A push that would move an existing tag (or a delete of it) is refused; re-pushing the same digest is fine.
    pub immutable: bool,
    /// Platforms (`linux/amd64`, `linux/arm/v7`) an image pushed under a covered tag must carry.
    pub required_platforms: Vec<String>,
    /// With `required_platforms`: `false` only reports a missing platform (log and tag history) instead of
    /// refusing the push [default: true].
    pub enforce_platforms: Option<bool>,
}

impl TagRuleConfig {
    pub(super) fn issues(&self, prefix: &str) -> Vec<ConfigIssue> {
        match crate::policy::tag_rules::TagRule::compile(self) {
            Ok(_) => Vec::new(),
            Err(problems) => problems
                .into_iter()
                .map(|(key, reason)| ConfigIssue { key: format!("{prefix}.{key}"), reason })
                .collect(),
        }
    }
}

/// Default for [`HistoryConfig::keep`].
pub const DEFAULT_HISTORY_KEEP: usize = 100;

/// `[history]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HistoryConfig {
    /// Moves kept per tag (the oldest are dropped).
    pub keep: usize,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig { keep: DEFAULT_HISTORY_KEEP }
    }
}

impl HistoryConfig {
    pub(super) fn issues(&self) -> Vec<ConfigIssue> {
        if (1..=100_000).contains(&self.keep) {
            Vec::new()
        } else {
            vec![ConfigIssue { key: "history.keep".into(), reason: "must be between 1 and 100000".into() }]
        }
    }
}
