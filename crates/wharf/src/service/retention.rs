//! Retention of hosted repositories: gathers each tag's push time (tag history), pull time (noted on manifest
//! reads, batched) and protections (immutable rules, sync pins), asks `policy::retention` which tags go, and
//! removes them through [`Registry::tag_remove`] (history records `retention:<rule>`). What they pointed at
//! is then garbage: the collection that follows frees it, and keeps untagged manifests for `untagged_after`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use oci::{Digest, RepoName, Tag};

use super::tags::TagWrite;
use super::{Error, Registry, Result};
use crate::access_log::{now_ms, AccessLog};
use crate::gc::{Collector, GcError, GcOptions, GcReport, RemovedTag, UntaggedDelays};
use crate::history;
use crate::policy::retention::{judge, RetentionRules, TagFacts};
use crate::policy::routing::cache_host;

/// The retention rules a registry applies, and the pull times they read.
pub struct Retention {
    rules: RetentionRules,
    /// First path components of mirror caches (never hosted, never subject to retention).
    cache_hosts: Vec<String>,
    /// Manifest reads of hosted repositories whose rule has `keep_within` (`pulls/<repo>/@pulls`).
    pulls: AccessLog,
}

impl Default for Retention {
    fn default() -> Self {
        Retention::new(RetentionRules::default(), &[])
    }
}

impl Retention {
    /// Rules and the configured upstream names (their cache repositories are left alone).
    pub fn new(rules: RetentionRules, upstreams: &[String]) -> Retention {
        Retention {
            rules,
            cache_hosts: upstreams.iter().map(|u| cache_host(u)).collect(),
            pulls: AccessLog::new("pulls", "@pulls"),
        }
    }

    fn hosted_rule(&self, repo: &RepoName) -> bool {
        let first = repo.as_str().split('/').next().unwrap_or_default();
        !self.cache_hosts.iter().any(|h| h == first)
    }
}

impl Registry {
    /// Apply `[[retention]]` to hosted repositories.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = Arc::new(retention);
        self
    }

    /// Note a read of a hosted manifest when its repository's rule counts pulls (memory only).
    pub(super) fn note_pull(&self, repo: &RepoName, digest: &Digest) {
        if !self.retention.rules.is_empty() && self.retention.rules.counts_pulls(repo.as_str()) {
            self.retention.pulls.note(repo, digest);
        }
    }

    /// Write the noted pull times to the store (a `wharf gc` in another process reads them from there).
    pub async fn flush_pulls(&self) -> Result<()> {
        Ok(self.retention.pulls.flush(self.store.as_ref()).await?)
    }

    /// Whether any retention rule counts pulls (then the server flushes pull times periodically).
    pub fn counts_pulls(&self) -> bool {
        self.retention.rules.counts_any_pulls()
    }

    /// Remove the tags the retention rules do not keep (or list them, in a dry run).
    pub async fn apply_retention(&self, dry_run: bool) -> Result<Vec<RemovedTag>> {
        let mut removed = Vec::new();
        if self.retention.rules.is_empty() {
            return Ok(removed);
        }
        let store = self.store.as_ref();
        let mut after: Option<String> = None;
        loop {
            let page = store.repo_list_all(after.as_deref(), 100).await?;
            for repo in &page {
                if self.retention.hosted_rule(repo) {
                    self.retain_repo(repo, dry_run, &mut removed).await?;
                }
            }
            if page.len() < 100 {
                break;
            }
            after = page.last().map(|r| r.to_string());
        }
        Ok(removed)
    }

    async fn retain_repo(&self, repo: &RepoName, dry_run: bool, removed: &mut Vec<RemovedTag>) -> Result<()> {
        let Some((name, rule)) = self.retention.rules.for_repo(repo.as_str()) else { return Ok(()) };
        if !rule.removes_tags() {
            return Ok(());
        }
        let store = self.store.as_ref();
        let tags = store.tag_list(repo, None, usize::MAX).await?.unwrap_or_default();
        if tags.is_empty() {
            return Ok(());
        }
        let written: HashMap<Digest, u64> = store
            .manifest_list(repo)
            .await?
            .into_iter()
            .map(|m| (m.digest, m.modified.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)))
            .collect();
        let pulls = if rule.counts_pulls() { self.retention.pulls.times(store, repo).await? } else { HashMap::new() };
        let mut facts = Vec::new();
        let mut current: HashMap<String, (Tag, Digest)> = HashMap::new();
        for tag in tags {
            let Some(digest) = store.tag_get(repo, &tag).await? else { continue };
            // Pushed: the last history event that pointed the tag at its current digest; without history
            // (content older than it), when the manifest was written.
            let events = history::tag_history(store, repo, &tag).await?;
            let pushed_ms = events
                .iter()
                .rev()
                .find(|e| !e.deleted && e.new == digest)
                .map(|e| e.time * 1000)
                .unwrap_or_else(|| written.get(&digest).copied().unwrap_or(0));
            let protected = match self.tag_policy.rules.immutable(repo.as_str(), tag.as_str()) {
                Some(r) => Some(format!("immutable ({r})")),
                None => history::pinned(store, repo, &digest).await?.map(|p| format!("pinned by {}", p.owner)),
            };
            facts.push(TagFacts { tag: tag.to_string(), pushed_ms, pulled_ms: pulls.get(&digest).copied(), protected });
            current.insert(tag.to_string(), (tag, digest));
        }
        for v in judge(rule, &name, &facts, now_ms()) {
            if v.keep {
                continue;
            }
            let Some((tag, digest)) = current.remove(&v.tag) else { continue };
            if !dry_run {
                // Only if it still points where it did when judged: a push since then makes it new again.
                let w = TagWrite { if_match: Some(digest.clone()), ..TagWrite::by(format!("retention:{name}")) };
                match self.tag_remove(repo, &tag, &w).await {
                    Ok(true) => {}
                    Ok(false) | Err(Error::PreconditionFailed(_)) | Err(Error::Denied(_)) => continue,
                    Err(e) => return Err(e),
                }
                tracing::info!(%repo, %tag, %digest, reason = %v.reason, "retention removed a tag");
            }
            removed.push(RemovedTag {
                repository: repo.to_string(),
                tag: tag.to_string(),
                digest: digest.to_string(),
                reason: v.reason,
            });
        }
        Ok(())
    }

    /// One collection with retention: pull times are flushed, the rules remove tags, then `collector` frees
    /// what nothing references any more, keeping untagged manifests for their `untagged_after`.
    pub async fn collect(
        &self,
        collector: &Collector,
        grace: std::time::Duration,
        dry_run: bool,
    ) -> std::result::Result<GcReport, GcError> {
        let report = self.collect_inner(collector, grace, dry_run).await?;
        if !report.dry_run {
            self.events.emit(crate::events::Event::global(
                "gc.finished",
                serde_json::json!({
                    "manifests_deleted": report.manifests_deleted,
                    "links_deleted": report.links_deleted,
                    "blobs_deleted": report.blobs_deleted,
                    "bytes_freed": report.bytes_freed,
                    "tags_removed": report.tags_removed_count,
                    "duration_ms": report.duration_ms,
                    "errors": report.errors,
                }),
            ));
        }
        Ok(report)
    }

    async fn collect_inner(
        &self,
        collector: &Collector,
        grace: std::time::Duration,
        dry_run: bool,
    ) -> std::result::Result<GcReport, GcError> {
        let opts = GcOptions::new(grace, dry_run);
        if self.retention.rules.is_empty() {
            return collector.run(opts).await;
        }
        collector
            .run_prepared(opts, || async {
                if let Err(e) = self.flush_pulls().await {
                    tracing::warn!(error = %e, "writing pull times failed before retention");
                }
                let removed = self.apply_retention(dry_run).await.map_err(|e| e.to_string())?;
                let rules = self.retention.rules.clone();
                Ok((removed, UntaggedDelays::new(move |repo| rules.untagged_after(repo.as_str()))))
            })
            .await
    }
}
