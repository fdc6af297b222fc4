//! The sync engine: keeps declared images copied from an upstream — every architecture or a chosen subset —
//! verified and digest-preserving, into the local store (where the mirror would have cached them, so nodes
//! get them with no extra configuration) or into another registry.
//!
//! Each selected tag is resolved to a digest once (`HEAD`), then everything is copied by digest, children
//! before parents and the tag last. A re-run with nothing new upstream costs one `HEAD` per tag (plus a tag
//! listing when patterns are used). A tag that moved upstream is updated and recorded in the tag's history,
//! unless the tag is immutable for that upstream: then the old digest is kept and a conflict is reported.
//!
//! `wharf sync` (once) and the schedules in `wharf serve` call the same [`Syncer::run`].
//! May import: `transfer`, `history`, `policy`, `store`, `upstream`, `config`, `oci`.

pub mod progress;
pub mod report;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use oci::reference::{normalize_registry, normalize_repo};
use oci::{RefSpec, RepoName, Tag};

use self::progress::{EntryProgress, Progress};
use self::report::{Conflict, PlatformReport, Report, TagReport};
use crate::config::sync::{parse_every, SyncConfig};
use crate::config::upstream::UpstreamConfig;
use crate::config::Config;
use crate::history::{self, now_secs, TagEvent};
use crate::policy::routing::cache_repo;
use crate::policy::tags::{any_match, select, TagPattern, TagSelector};
use crate::store::ContentStore;
use crate::transfer::{Bandwidth, Copier, Counters, Destination, PlatformSpec, TransferError};
use crate::upstream::{Upstream, UpstreamError};

/// Entries synced at the same time by [`Syncer::run_all`].
const ENTRIES_AT_ONCE: usize = 4;

/// How a run treats differences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Copy what is missing or moved.
    Copy,
    /// Only print what would be copied.
    DryRun,
    /// Report drift without copying.
    Check,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Copy => "copy",
            Mode::DryRun => "dry-run",
            Mode::Check => "check",
        }
    }
}

/// A `[[sync]]` table, compiled.
pub struct SyncEntry {
    /// Display name.
    pub name: String,
    /// The configuration it came from.
    pub config: SyncConfig,
    /// Interval for `wharf serve`, if scheduled.
    pub every: Option<Duration>,
    upstream: Arc<Upstream>,
    upstream_name: String,
    immutable: Vec<TagPattern>,
    ratelimit_floor: Option<u64>,
    include: Vec<TagSelector>,
    exclude: Vec<TagSelector>,
    platforms: Vec<PlatformSpec>,
    remote: RepoName,
    dest_repo: RepoName,
    dest: Destination,
    /// `[[tags]]` rules, for the platforms they require of the destination's tags.
    tag_rules: Arc<crate::policy::tag_rules::TagRules>,
}

/// The engine over all entries.
pub struct Syncer {
    store: Arc<dyn ContentStore>,
    entries: Vec<SyncEntry>,
    /// Where results and conflicts are announced (webhooks), once the server has started them.
    events: std::sync::OnceLock<crate::events::Events>,
}

fn destination_client(cfg: &crate::config::sync::DestinationConfig) -> Result<Arc<Upstream>, String> {
    let up = UpstreamConfig {
        name: "destination".into(),
        url: cfg.url.clone(),
        username: cfg.username.clone(),
        password: cfg.password.clone(),
        password_env: cfg.password_env.clone(),
        password_file: cfg.password_file.clone(),
        ca_file: cfg.ca_file.clone(),
        insecure_skip_verify: cfg.insecure_skip_verify,
        timeout_secs: 120,
        ..UpstreamConfig::default()
    };
    Upstream::from_config(&up).map(Arc::new)
}

/// Expand a `lock = ...` entry into one entry per locked repository, each copying its references at their
/// locked digests (tags, or digests for references without one).
pub fn expand_lock(s: &SyncConfig, upstreams: &[UpstreamConfig]) -> Result<Vec<SyncConfig>, String> {
    let Some(path) = &s.lock else { return Ok(vec![s.clone()]) };
    let text = std::fs::read_to_string(path).map_err(|e| format!("lock file {}: {e}", path.display()))?;
    let lock = crate::images::Lock::parse(&text).map_err(|e| format!("lock file {}: {e}", path.display()))?;
    let mut by_repo: std::collections::BTreeMap<(String, String), std::collections::BTreeMap<String, String>> =
        Default::default();
    for (key, locked) in &lock.images {
        let r: oci::reference::Reference =
            key.parse().map_err(|e| format!("lock file {}: {key:?}: {e}", path.display()))?;
        let upstream = upstreams
            .iter()
            .find(|u| normalize_registry(&u.name) == r.registry)
            .ok_or_else(|| format!("lock file {}: {key:?}: no [[upstream]] named {:?}", path.display(), r.registry))?;
        let what = match &r.tag {
            Some(t) => t.to_string(),
            None => locked.digest.clone(),
        };
        by_repo.entry((upstream.name.clone(), r.repo.to_string())).or_default().insert(what, locked.digest.clone());
    }
    Ok(by_repo
        .into_iter()
        .map(|((upstream, repository), locked)| SyncConfig {
            name: Some(format!("{}:{upstream}/{repository}", s.display_name())),
            upstream,
            repository,
            lock: None,
            locked,
            ..s.clone()
        })
        .collect())
}

impl Syncer {
    /// Compile every `[[sync]]` entry against the upstream clients (same order as `config.upstreams`); an
    /// entry with `lock` becomes one entry per locked repository.
    pub fn new(store: Arc<dyn ContentStore>, config: &Config, upstreams: &[Arc<Upstream>]) -> Result<Syncer, String> {
        let mut entries = Vec::new();
        let mut rules = Vec::new();
        for (i, t) in config.tag_rules.iter().enumerate() {
            rules.push(crate::policy::tag_rules::TagRule::compile(t).map_err(|p| {
                p.into_iter().map(|(k, r)| format!("tags[{i}].{k}: {r}")).collect::<Vec<_>>().join("; ")
            })?);
        }
        let tag_rules = Arc::new(crate::policy::tag_rules::TagRules::new(rules));
        let mut syncs = Vec::new();
        for s in &config.syncs {
            syncs.extend(expand_lock(s, &config.upstreams).map_err(|e| format!("[[sync]] {}: {e}", s.display_name()))?);
        }
        for s in &syncs {
            let name = s.display_name();
            let err = |e: String| format!("[[sync]] {name}: {e}");
            let i = config
                .upstreams
                .iter()
                .position(|u| u.name == s.upstream)
                .ok_or_else(|| err(format!("no [[upstream]] named {:?}", s.upstream)))?;
            let ucfg = &config.upstreams[i];
            let host = normalize_registry(&ucfg.name);
            let remote: RepoName = normalize_repo(&host, &s.repository).parse().map_err(|e| err(format!("{e}")))?;
            // Locally, synced content goes exactly where the mirror looks for it (one cache-name formula).
            let (dest, dest_repo) = match &s.destination {
                None => (Destination::Local(store.clone()), cache_repo(&host, &remote)),
                Some(d) => (
                    Destination::Remote(destination_client(d).map_err(err)?),
                    match &d.repository {
                        Some(r) => r.parse(),
                        None => cache_repo(&host, &remote),
                    },
                ),
            };
            entries.push(SyncEntry {
                name: name.clone(),
                config: s.clone(),
                every: s.every.as_deref().map(parse_every).transpose().map_err(err)?,
                upstream: upstreams[i].clone(),
                upstream_name: ucfg.name.clone(),
                immutable: ucfg
                    .immutable_tags
                    .iter()
                    .map(|p| TagPattern::parse(p))
                    .collect::<Result<_, _>>()
                    .map_err(err)?,
                ratelimit_floor: ucfg.ratelimit_floor,
                include: s.tags.iter().map(|t| TagSelector::parse(t)).collect::<Result<_, _>>().map_err(err)?,
                exclude: s.exclude.iter().map(|t| TagSelector::parse(t)).collect::<Result<_, _>>().map_err(err)?,
                platforms: s
                    .platforms
                    .iter()
                    .map(|p| PlatformSpec::parse(p).ok_or_else(|| err(format!("bad platform {p:?}"))))
                    .collect::<Result<_, _>>()?,
                remote,
                dest_repo: dest_repo.map_err(|e| err(format!("destination repository: {e}")))?,
                dest,
                tag_rules: tag_rules.clone(),
            });
        }
        Ok(Syncer { store, entries, events: std::sync::OnceLock::new() })
    }

    /// The compiled entries.
    pub fn entries(&self) -> &[SyncEntry] {
        &self.entries
    }

    /// Run every entry once, a few at a time (each upstream's own limits still apply); reports in entry order.
    pub async fn run_all(&self, mode: Mode, progress: &Progress) -> Vec<Report> {
        let runs: Vec<_> = self.entries.iter().map(|e| self.run(e, mode, progress)).collect();
        futures_util::stream::iter(runs).buffered(ENTRIES_AT_ONCE).collect().await
    }

    /// The last stored report of every entry that has run. A report that cannot be read or parsed is not
    /// skipped: it appears as a report whose error says why (so `wharf sync status` fails and shows it).
    pub async fn reports(&self) -> Vec<Report> {
        let mut out = Vec::new();
        for e in &self.entries {
            match self.stored_report(e).await {
                Ok(Some(r)) => out.push(r),
                Ok(None) => {}
                Err(why) => {
                    tracing::error!(entry = %e.name, error = %why, "unreadable sync report");
                    out.push(Report {
                        entry: e.name.clone(),
                        upstream: e.upstream_name.clone(),
                        repository: e.remote.to_string(),
                        destination: e.dest_repo.to_string(),
                        mode: "unreadable".into(),
                        errors: vec![why],
                        ..Report::default()
                    });
                }
            }
        }
        out
    }

    /// The entry's last stored report; `Err` says why it exists but cannot be read.
    async fn stored_report(&self, entry: &SyncEntry) -> Result<Option<Report>, String> {
        let key = Report::key(&entry.name);
        match self.store.meta_get(&key).await {
            Ok(None) => Ok(None),
            Ok(Some(b)) => serde_json::from_slice(&b)
                .map(Some)
                .map_err(|e| format!("the stored report meta/{key} is not a valid report: {e}")),
            Err(e) => Err(format!("the stored report meta/{key} cannot be read: {e}")),
        }
    }

    /// Announce results from now on (`[[webhook]]` events `sync.finished`, `sync.conflict`).
    pub fn set_events(&self, events: crate::events::Events) {
        let _ = self.events.set(events);
    }

    fn announce(&self, report: &Report) {
        let Some(events) = self.events.get() else { return };
        let repo = report.destination.as_str();
        for c in &report.conflicts {
            events.emit(crate::events::Event::about(
                "sync.conflict",
                repo,
                Some(format!("{repo}:{}", c.tag)),
                serde_json::json!({"entry": report.entry, "conflict": c}),
            ));
        }
        events.emit(crate::events::Event::about(
            "sync.finished",
            repo,
            None,
            serde_json::json!({
                "entry": report.entry,
                "upstream": report.upstream,
                "repository": report.repository,
                "destination": report.destination,
                "tags": report.tags.len(),
                "manifests_copied": report.manifests_copied,
                "blobs_copied": report.blobs_copied,
                "bytes_copied": report.bytes_copied,
                "conflicts": report.conflicts.len(),
                "errors": report.errors,
            }),
        ));
    }

    /// Run one entry once and store its report (except for dry runs).
    pub async fn run(&self, entry: &SyncEntry, mode: Mode, progress: &Progress) -> Report {
        // The previous report only supplies platform lists for unchanged tags; an unreadable one is logged and
        // the run goes on (its own report replaces it).
        let previous = self.stored_report(entry).await.unwrap_or_else(|why| {
            tracing::warn!(entry = %entry.name, error = %why, "ignoring the previous sync report");
            None
        });
        let mut report = Report {
            entry: entry.name.clone(),
            upstream: entry.upstream_name.clone(),
            repository: entry.remote.to_string(),
            destination: entry.dest_repo.to_string(),
            mode: mode.as_str().into(),
            started_at: now_secs(),
            ..Report::default()
        };
        match self.select_tags(entry).await {
            Ok(tags) => self.run_tags(entry, mode, progress, tags, previous, &mut report).await,
            Err(e) => report.errors.push(format!("listing tags of {}: {e}", entry.remote)),
        }
        report.finished_at = now_secs();
        for e in &report.errors {
            tracing::error!(entry = %entry.name, error = %e, "sync error");
        }
        for c in &report.conflicts {
            tracing::warn!(entry = %entry.name, tag = %c.tag, kept = %c.kept, upstream = %c.upstream, "immutable tag moved upstream; kept the old digest");
        }
        if mode != Mode::DryRun {
            let json = serde_json::to_vec_pretty(&report).expect("reports serialise");
            if let Err(e) = self.store.meta_put(&Report::key(&entry.name), Bytes::from(json)).await {
                tracing::error!(entry = %entry.name, error = %e, "could not store the sync report");
            }
            self.announce(&report);
        }
        report
    }

    async fn select_tags(&self, entry: &SyncEntry) -> Result<Vec<String>, UpstreamError> {
        if !entry.config.locked.is_empty() {
            return Ok(entry.config.locked.keys().cloned().collect());
        }
        let exact: Vec<String> = entry.include.iter().filter_map(|s| s.exact().map(str::to_owned)).collect();
        let available =
            if exact.len() == entry.include.len() { exact } else { entry.upstream.list_tags(&entry.remote).await? };
        Ok(select(&available, &entry.include, &entry.exclude, entry.config.newest))
    }

    async fn run_tags(
        &self,
        entry: &SyncEntry,
        mode: Mode,
        progress: &Progress,
        tags: Vec<String>,
        previous: Option<Report>,
        report: &mut Report,
    ) {
        let bar = progress.entry(&entry.name, tags.len() as u64);
        let counters = Arc::new(Counters::default());
        let on_bytes: Arc<dyn Fn(u64) + Send + Sync> = {
            let bar = bar.clone();
            Arc::new(move |n| bar.bytes(n))
        };
        let copier = Copier {
            upstream: entry.upstream.clone(),
            dest: entry.dest.clone(),
            remote: entry.remote.clone(),
            local: entry.dest_repo.clone(),
            platforms: entry.platforms.clone(),
            referrers: entry.config.referrers,
            concurrency: entry.config.concurrency,
            bandwidth: Arc::new(Bandwidth::new(entry.config.max_bytes_per_sec)),
            counters: counters.clone(),
            on_bytes,
            inflight: Default::default(),
        };
        let stop = AtomicBool::new(false);
        let prev = previous.as_ref();
        let jobs: Vec<_> = tags
            .iter()
            .map(|t| {
                let (copier, stop, bar) = (&copier, &stop, &bar);
                async move {
                    if stop.load(Ordering::Relaxed) {
                        return Outcome::skipped(t);
                    }
                    let mut out = self.sync_tag(entry, mode, copier, t, prev, bar).await;
                    if let Some(t) = out.tag.as_mut() {
                        check_required_platforms(entry, t);
                    }
                    if let (Some(floor), Some(left)) = (entry.ratelimit_floor, entry.upstream.ratelimit_remaining()) {
                        if left < floor {
                            stop.store(true, Ordering::Relaxed);
                        }
                    }
                    out
                }
            })
            .collect();
        let outcomes: Vec<Outcome> =
            futures_util::stream::iter(jobs).buffered(entry.config.concurrency.clamp(1, 4)).collect().await;
        bar.finish();
        for o in outcomes {
            if let Some(e) = o.error {
                report.errors.push(e);
            }
            if let Some(c) = o.conflict {
                report.conflicts.push(c);
            }
            if let Some(t) = o.tag {
                report.tags.push(t);
            }
        }
        if stop.load(Ordering::Relaxed) {
            report.stopped_early = Some(format!(
                "upstream {} ratelimit-remaining fell below the floor of {}; stopped to keep the quota",
                entry.upstream_name,
                entry.ratelimit_floor.unwrap_or_default()
            ));
        }
        report.bytes_copied = counters.bytes.load(Ordering::Relaxed);
        report.blobs_copied = counters.blobs_copied.load(Ordering::Relaxed);
        report.blobs_skipped = counters.blobs_skipped.load(Ordering::Relaxed);
        report.manifests_copied = counters.manifests_copied.load(Ordering::Relaxed);
    }

    async fn sync_tag(
        &self,
        entry: &SyncEntry,
        mode: Mode,
        copier: &Copier,
        tag_str: &str,
        previous: Option<&Report>,
        bar: &EntryProgress,
    ) -> Outcome {
        let out = self.sync_tag_inner(entry, mode, copier, tag_str, previous).await;
        let out = out.unwrap_or_else(|e| Outcome {
            tag: Some(TagReport { tag: tag_str.into(), action: "error".into(), ..TagReport::default() }),
            error: Some(format!("{tag_str}: {e}")),
            conflict: None,
        });
        bar.image_done(tag_str, out.tag.as_ref().map_or("skipped", |t| t.action.as_str()));
        out
    }

    async fn sync_tag_inner(
        &self,
        entry: &SyncEntry,
        mode: Mode,
        copier: &Copier,
        tag_str: &str,
        previous: Option<&Report>,
    ) -> Result<Outcome, TransferError> {
        // From a lock file: the locked digest, whatever the tag says upstream today (a reference locked by digest
        // alone is copied and pinned without a tag).
        if let Some(locked) = entry.config.locked.get(tag_str) {
            let digest: oci::Digest =
                locked.parse().map_err(|e: oci::DigestError| TransferError::Unsupported(e.to_string()))?;
            if tag_str.parse::<Tag>().is_err() {
                return self.sync_digest(entry, mode, copier, tag_str, digest).await;
            }
        }
        let tag: Tag = tag_str.parse().map_err(|e: oci::NameError| TransferError::Unsupported(e.to_string()))?;
        let upstream_digest = match entry.config.locked.get(tag_str) {
            Some(locked) => locked.parse().map_err(|e: oci::DigestError| TransferError::Unsupported(e.to_string()))?,
            None => {
                entry
                    .upstream
                    .head_manifest(&entry.remote, &RefSpec::Tag(tag.clone()))
                    .await?
                    .ok_or(TransferError::Upstream(UpstreamError::NotFound))?
                    .digest
            }
        };
        let local = entry.dest.tag_get(&entry.dest_repo, &tag).await?;
        let mut t =
            TagReport { tag: tag_str.into(), digest: Some(upstream_digest.to_string()), ..TagReport::default() };
        // Locally, "unchanged" needs the pin a completed sync leaves: the mirror may have cached the same
        // manifest without its layers or other platforms.
        let complete = match &entry.dest {
            Destination::Local(store) => {
                history::pinned(store.as_ref(), &entry.dest_repo, &upstream_digest).await?.is_some()
            }
            Destination::Remote(_) => true,
        };
        if local.as_ref() == Some(&upstream_digest) && complete {
            t.action = "unchanged".into();
            t.platforms = previous
                .and_then(|p| p.tags.iter().find(|x| x.tag == tag_str && x.digest == t.digest))
                .map(|x| x.platforms.clone())
                .unwrap_or_default();
            return Ok(Outcome::tag(t));
        }
        if let Some(old) = local.as_ref().filter(|old| **old != upstream_digest) {
            if any_match(&entry.immutable, tag_str) {
                t.action = "conflict".into();
                t.previous = Some(old.to_string());
                t.digest = Some(old.to_string());
                let conflict =
                    Conflict { tag: tag_str.into(), kept: old.to_string(), upstream: upstream_digest.to_string() };
                return Ok(Outcome { tag: Some(t), error: None, conflict: Some(conflict) });
            }
        }
        t.previous = local.as_ref().filter(|old| **old != upstream_digest).map(ToString::to_string);
        match mode {
            Mode::DryRun => {
                t.action = "would-copy".into();
                return Ok(Outcome::tag(t));
            }
            Mode::Check => {
                t.action = match &local {
                    None => "missing",
                    Some(old) if *old == upstream_digest => "incomplete",
                    Some(_) => "drift",
                }
                .into();
                return Ok(Outcome::tag(t));
            }
            Mode::Copy => {}
        }
        let (manifest, copied) = copier.copy_tree(&upstream_digest, None).await?;
        entry.dest.tag_put(&entry.dest_repo, &tag, &manifest).await?;
        t.action = match &local {
            None => "created",
            Some(old) if *old == upstream_digest => "completed",
            Some(_) => "updated",
        }
        .into();
        t.platforms = copied
            .platforms
            .iter()
            .map(|(p, d, present)| PlatformReport { platform: p.clone(), digest: d.to_string(), present: *present })
            .collect();
        if let Destination::Local(store) = &entry.dest {
            let source = format!("sync:{}", entry.name);
            let event = TagEvent {
                time: now_secs(),
                old: local.clone(),
                new: upstream_digest.clone(),
                source: source.clone(),
                deleted: false,
            };
            history::record_tag_event(store.as_ref(), &entry.dest_repo, &tag, event).await?;
            for d in &copied.manifests {
                history::pin(store.as_ref(), &entry.dest_repo, d, &source).await?;
            }
        }
        if let Some(old) = local.as_ref().filter(|old| **old != upstream_digest) {
            tracing::info!(entry = %entry.name, tag = %tag_str, from = %old, to = %upstream_digest, "tag moved upstream; followed");
        }
        Ok(Outcome::tag(t))
    }
}

impl Syncer {
    /// A reference locked by digest alone: copy it and pin it (nothing to tag).
    async fn sync_digest(
        &self,
        entry: &SyncEntry,
        mode: Mode,
        copier: &Copier,
        label: &str,
        digest: oci::Digest,
    ) -> Result<Outcome, TransferError> {
        let mut t = TagReport { tag: label.into(), digest: Some(digest.to_string()), ..TagReport::default() };
        let pinned = match &entry.dest {
            Destination::Local(store) => history::pinned(store.as_ref(), &entry.dest_repo, &digest).await?.is_some(),
            Destination::Remote(_) => false,
        };
        if pinned {
            t.action = "unchanged".into();
            return Ok(Outcome::tag(t));
        }
        match mode {
            Mode::DryRun => t.action = "would-copy".into(),
            Mode::Check => t.action = "missing".into(),
            Mode::Copy => {
                let (_, copied) = copier.copy_tree(&digest, None).await?;
                if let Destination::Local(store) = &entry.dest {
                    for d in &copied.manifests {
                        history::pin(store.as_ref(), &entry.dest_repo, d, &format!("sync:{}", entry.name)).await?;
                    }
                }
                t.action = "created".into();
                t.platforms = copied
                    .platforms
                    .iter()
                    .map(|(p, d, present)| PlatformReport {
                        platform: p.clone(),
                        digest: d.to_string(),
                        present: *present,
                    })
                    .collect();
            }
        }
        Ok(Outcome::tag(t))
    }
}

/// `[[tags]] required_platforms` for the destination tag: the platforms the upstream image lacks, recorded in
/// the tag's report (and logged). Only known platform lists are judged (an index's entries).
fn check_required_platforms(entry: &SyncEntry, t: &mut TagReport) {
    let Some(req) = entry.tag_rules.required(entry.dest_repo.as_str(), &t.tag) else { return };
    if t.platforms.is_empty() || t.action == "error" {
        return;
    }
    let offered: Vec<oci::Platform> = t
        .platforms
        .iter()
        .filter_map(|p| {
            let parts: Vec<&str> = p.platform.split('/').collect();
            let json = match parts.as_slice() {
                [os, arch] => serde_json::json!({"os": os, "architecture": arch}),
                [os, arch, v] => serde_json::json!({"os": os, "architecture": arch, "variant": v}),
                _ => return None,
            };
            serde_json::from_value(json).ok()
        })
        .collect();
    let offered: Vec<&oci::Platform> = offered.iter().collect();
    let specs: Vec<PlatformSpec> = req.platforms.iter().filter_map(|p| PlatformSpec::parse(p)).collect();
    t.missing_platforms = crate::verify::platforms::missing_from(&offered, &specs);
    if !t.missing_platforms.is_empty() {
        tracing::warn!(
            entry = %entry.name, tag = %t.tag, missing = %t.missing_platforms.join(","), rules = %req.rules.join(","),
            "the upstream image lacks platforms the [[tags]] rules require"
        );
    }
}

struct Outcome {
    tag: Option<TagReport>,
    error: Option<String>,
    conflict: Option<Conflict>,
}

impl Outcome {
    fn tag(t: TagReport) -> Outcome {
        Outcome { tag: Some(t), error: None, conflict: None }
    }

    fn skipped(tag: &str) -> Outcome {
        Outcome {
            tag: Some(TagReport { tag: tag.into(), action: "skipped".into(), ..TagReport::default() }),
            error: None,
            conflict: None,
        }
    }
}
