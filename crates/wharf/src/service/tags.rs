//! Tag moves in hosted repositories: compare-and-swap (`If-Match` / `If-None-Match`), the `[[tags]]` rules
//! (immutable tags, required platforms) and the tag history. Every move of a hosted tag goes through
//! [`Registry::tag_move`], one tag at a time (a per-tag lock), so two writers racing on one tag give exactly
//! one winner and one history event.

use crate::store::lease::{Lease, LeaseError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use oci::{Digest, Manifest, ManifestBody, RepoName, Tag};

use super::{Error, Registry, Result};
use crate::history::{self, TagEvent};
use crate::policy::tag_rules::TagRules;
use crate::transfer::PlatformSpec;
use crate::verify::platforms;

/// The hosted-tag policy a registry applies.
pub struct TagPolicy {
    /// `[[tags]]`.
    pub rules: TagRules,
    /// `[history] keep`.
    pub keep: usize,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl Default for TagPolicy {
    fn default() -> Self {
        TagPolicy::new(TagRules::default(), crate::config::tags::DEFAULT_HISTORY_KEEP)
    }
}

impl TagPolicy {
    /// The policy from the compiled rules and the history bound.
    pub fn new(rules: TagRules, keep: usize) -> TagPolicy {
        TagPolicy { rules, keep, locks: Mutex::new(HashMap::new()) }
    }

    fn lock_for(&self, repo: &RepoName, tag: &Tag) -> Arc<tokio::sync::Mutex<()>> {
        let key = format!("{repo}:{tag}");
        let mut map = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(l) = map.get(&key).and_then(Weak::upgrade) {
            return l;
        }
        if map.len() >= 4096 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(key, Arc::downgrade(&l));
        l
    }
}

/// Conditions and attribution of a tag write.
#[derive(Debug, Clone, Default)]
pub struct TagWrite {
    /// `If-Match: "<digest>"`: move the tag only if it points at this digest now.
    pub if_match: Option<Digest>,
    /// `If-None-Match: *`: create the tag only if it does not exist.
    pub if_none_match: bool,
    /// Who writes, for the history (`push:alice`, `alias`, `rollback:cli`).
    pub source: String,
}

impl TagWrite {
    /// A write attributed to `source`, without conditions.
    pub fn by(source: impl Into<String>) -> TagWrite {
        TagWrite { source: source.into(), ..TagWrite::default() }
    }
}

fn precondition(what: String) -> Error {
    Error::PreconditionFailed(what)
}

/// How long a conditional tag write on a shared store waits for another replica's write of the same tag.
const TAG_LEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(20);
/// Time to live of a tag's lease (held for one check-and-write).
const TAG_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(30);

impl Registry {
    /// The platforms an image manifest's config names (read from the store; the push already checked it is
    /// linked), or `None` when it cannot be read.
    async fn config_platform(&self, img: &oci::ImageManifest) -> Result<Option<oci::Platform>> {
        let Some(mut reader) = self.store.blob_open(&img.config.digest, None).await? else { return Ok(None) };
        // A config is small; one over 1 MiB is not read (and names no platform).
        if reader.meta.size > 1024 * 1024 {
            return Ok(None);
        }
        let mut buf = Vec::new();
        use futures_util::StreamExt as _;
        while let Some(chunk) = reader.body.next().await {
            let chunk = chunk.map_err(|e| {
                Error::Store(crate::store::StoreError::Io { path: img.config.digest.to_string(), source: e })
            })?;
            buf.extend_from_slice(&chunk);
        }
        Ok(serde_json::from_slice::<oci::Platform>(&buf).ok())
    }

    /// Check `[[tags]] required_platforms` for a push of `manifest` under `tag`: an error when an enforcing
    /// rule is not met, a note for the history when only a reporting one is not.
    pub(super) async fn check_required_platforms(
        &self,
        repo: &RepoName,
        tag: &Tag,
        manifest: &Manifest,
    ) -> Result<Option<String>> {
        let Some(req) = self.tag_policy.rules.required(repo.as_str(), tag.as_str()) else { return Ok(None) };
        let specs: Vec<PlatformSpec> = req.platforms.iter().filter_map(|p| PlatformSpec::parse(p)).collect();
        // The same rule as `wharf verify --require` (attestation manifests are not platforms).
        let (missing, present): (Vec<String>, Vec<String>) = match &manifest.body {
            ManifestBody::Index(i) => {
                let offered = platforms::index_platforms(i);
                (platforms::missing_platforms(i, &specs), offered.iter().map(|p| p.to_string()).collect())
            }
            ManifestBody::Image(img) => match self.config_platform(img).await? {
                Some(p) => (platforms::missing_from(&[&p], &specs), vec![p.to_string()]),
                None => (specs.iter().map(platforms::spec_name).collect(), Vec::new()),
            },
        };
        if missing.is_empty() {
            return Ok(None);
        }
        let what = format!(
            "{repo}:{tag} lacks required platform(s) {} (required by {}; it has {})",
            missing.join(", "),
            req.rules.join(", "),
            if present.is_empty() { "none that can be read".to_owned() } else { present.join(", ") }
        );
        if req.enforce {
            return Err(Error::Denied(what));
        }
        tracing::warn!(%repo, %tag, "{what}");
        Ok(Some(format!("missing {}", missing.join(","))))
    }

    /// On a store shared by replicas (`with_tag_leases`), a conditional write holds the tag's lease in the
    /// store while it checks and writes: two replicas racing with `If-Match` on one tag give exactly one
    /// winner (the other then finds the tag moved). Unconditional writes do not wait for it.
    async fn conditional_lease(&self, repo: &RepoName, tag: &Tag, w: &TagWrite) -> Result<Option<Lease>> {
        if !self.tag_leases || (w.if_match.is_none() && !w.if_none_match) {
            return Ok(None);
        }
        let name = format!("tags/{repo}/{tag}");
        let deadline = std::time::Instant::now() + TAG_LEASE_WAIT;
        loop {
            match Lease::acquire(self.store.clone(), &name, TAG_LEASE_TTL).await {
                Ok(l) => return Ok(Some(l)),
                Err(LeaseError::Store(e)) => return Err(e.into()),
                Err(e) if std::time::Instant::now() >= deadline => {
                    return Err(precondition(format!(
                        "{repo}:{tag} is being changed by another replica ({e}); read it again and retry"
                    )))
                }
                Err(_) => {
                    let mut r = [0u8; 1];
                    getrandom::getrandom(&mut r).expect("the OS random source is available");
                    tokio::time::sleep(std::time::Duration::from_millis(200 + 2 * u64::from(r[0]))).await;
                }
            }
        }
    }

    /// Refuse early, before anything is stored, a write whose conditions already fail (checked again under the
    /// tag's lock by [`Registry::tag_move`]).
    pub(super) async fn precheck_tag(&self, repo: &RepoName, tag: &Tag, new: &Digest, w: &TagWrite) -> Result<()> {
        let current = self.store.tag_get(repo, tag).await?;
        self.conditions(repo, tag, current.as_ref(), Some(new), w)
    }

    fn conditions(
        &self,
        repo: &RepoName,
        tag: &Tag,
        current: Option<&Digest>,
        new: Option<&Digest>,
        w: &TagWrite,
    ) -> Result<()> {
        if w.if_none_match && current.is_some() {
            return Err(precondition(format!("{repo}:{tag} exists (If-None-Match: *)")));
        }
        if let Some(expected) = &w.if_match {
            if current != Some(expected) {
                let now = current.map_or("nothing".to_owned(), ToString::to_string);
                return Err(precondition(format!("{repo}:{tag} points at {now}, not {expected} (If-Match)")));
            }
        }
        if let (Some(cur), Some(rule)) = (current, self.tag_policy.rules.immutable(repo.as_str(), tag.as_str())) {
            if new != Some(cur) {
                let action = if new.is_some() { "moved" } else { "deleted" };
                return Err(Error::Denied(format!(
                    "{repo}:{tag} is immutable ({rule} in the configuration) and cannot be {action}; it points at {cur}"
                )));
            }
        }
        Ok(())
    }

    /// Point `tag` at `new` (a manifest already in the repository), under the tag's lock: conditions, rules,
    /// then the history event when the tag actually moved. Returns the previous digest.
    pub async fn tag_move(&self, repo: &RepoName, tag: &Tag, new: &Digest, w: &TagWrite) -> Result<Option<Digest>> {
        self.tag_move_noted(repo, tag, new, w, None).await
    }

    pub(super) async fn tag_move_noted(
        &self,
        repo: &RepoName,
        tag: &Tag,
        new: &Digest,
        w: &TagWrite,
        note: Option<String>,
    ) -> Result<Option<Digest>> {
        if self.store.manifest_get(repo, new).await?.is_none() {
            return Err(Error::ManifestUnknown { repo: repo.clone(), reference: new.to_string() });
        }
        let lock = self.tag_policy.lock_for(repo, tag);
        let _held = lock.lock().await;
        let lease = self.conditional_lease(repo, tag, w).await?;
        let moved = self.tag_move_held(repo, tag, new, w, note).await;
        if let Some(l) = lease {
            l.release().await;
        }
        moved
    }

    /// [`Registry::tag_move`] once the tag's locks are held.
    async fn tag_move_held(
        &self,
        repo: &RepoName,
        tag: &Tag,
        new: &Digest,
        w: &TagWrite,
        note: Option<String>,
    ) -> Result<Option<Digest>> {
        let current = self.store.tag_get(repo, tag).await?;
        self.conditions(repo, tag, current.as_ref(), Some(new), w)?;
        if current.as_ref() == Some(new) {
            return Ok(current);
        }
        self.store.tag_put(repo, tag, new).await?;
        self.forget_reads(repo);
        let source = match note {
            Some(n) => format!("{} ({n})", w.source),
            None => w.source.clone(),
        };
        let event =
            TagEvent { time: history::now_secs(), old: current.clone(), new: new.clone(), source, deleted: false };
        history::record_tag_event_keeping(self.store.as_ref(), repo, tag, event, self.tag_policy.keep).await?;
        self.events.emit(crate::events::Event::about(
            "tag.moved",
            repo.as_str(),
            Some(format!("{repo}:{tag}")),
            serde_json::json!({
                "repository": repo.to_string(),
                "tag": tag.to_string(),
                "old": current.as_ref().map(ToString::to_string),
                "new": new.to_string(),
                "by": w.source,
            }),
        ));
        Ok(current)
    }

    /// Delete a tag under its lock (conditions and immutability apply); recorded in the history.
    pub async fn tag_remove(&self, repo: &RepoName, tag: &Tag, w: &TagWrite) -> Result<bool> {
        let lock = self.tag_policy.lock_for(repo, tag);
        let _held = lock.lock().await;
        let lease = self.conditional_lease(repo, tag, w).await?;
        let removed = self.tag_remove_held(repo, tag, w).await;
        if let Some(l) = lease {
            l.release().await;
        }
        removed
    }

    /// [`Registry::tag_remove`] once the tag's locks are held.
    async fn tag_remove_held(&self, repo: &RepoName, tag: &Tag, w: &TagWrite) -> Result<bool> {
        let Some(current) = self.store.tag_get(repo, tag).await? else {
            if w.if_match.is_some() {
                return Err(precondition(format!("{repo}:{tag} does not exist (If-Match)")));
            }
            return Ok(false);
        };
        self.conditions(repo, tag, Some(&current), None, w)?;
        let found = self.store.tag_delete(repo, tag).await?;
        self.forget_reads(repo);
        if found {
            let event = TagEvent {
                time: history::now_secs(),
                old: Some(current.clone()),
                new: current.clone(),
                source: w.source.clone(),
                deleted: true,
            };
            history::record_tag_event_keeping(self.store.as_ref(), repo, tag, event, self.tag_policy.keep).await?;
            self.events.emit(crate::events::Event::about(
                "tag.deleted",
                repo.as_str(),
                Some(format!("{repo}:{tag}")),
                serde_json::json!({
                    "repository": repo.to_string(),
                    "tag": tag.to_string(),
                    "digest": current.to_string(),
                    "by": w.source,
                }),
            ));
        }
        Ok(found)
    }

    /// Immutable tags that point at `digest` (a manifest delete would remove them, so it is refused).
    pub(super) async fn immutable_tags_on(&self, repo: &RepoName, digest: &Digest) -> Result<Vec<String>> {
        if self.tag_policy.rules.is_empty() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let tags = self.store.tag_list(repo, None, usize::MAX).await?.unwrap_or_default();
        for t in tags {
            if self.tag_policy.rules.immutable(repo.as_str(), t.as_str()).is_some()
                && self.store.tag_get(repo, &t).await?.as_ref() == Some(digest)
            {
                out.push(t.to_string());
            }
        }
        Ok(out)
    }

    /// A tag's recorded moves, oldest first.
    pub async fn tag_history(&self, repo: &RepoName, tag: &Tag) -> Result<Vec<TagEvent>> {
        Ok(history::tag_history(self.store.as_ref(), repo, tag).await?)
    }

    /// Every tag of `repo` with recorded moves.
    pub async fn repo_history(&self, repo: &RepoName) -> Result<std::collections::BTreeMap<String, Vec<TagEvent>>> {
        Ok(history::repo_history(self.store.as_ref(), repo).await?)
    }

    /// Point `alias` at what `target` points at now (`wharf tag alias repo:1.29 repo:1.29.3`), atomically
    /// against other writers of the alias.
    pub async fn tag_alias(&self, repo: &RepoName, alias: &Tag, target: &Tag, source: &str) -> Result<Digest> {
        let digest = self
            .store
            .tag_get(repo, target)
            .await?
            .ok_or_else(|| Error::ManifestUnknown { repo: repo.clone(), reference: target.to_string() })?;
        self.tag_move(repo, alias, &digest, &TagWrite::by(format!("alias:{source} -> {target}"))).await?;
        Ok(digest)
    }

    /// Move `tag` back: to `to`, or to the digest it pointed at before its last move.
    pub async fn tag_rollback(&self, repo: &RepoName, tag: &Tag, to: Option<&Digest>, source: &str) -> Result<Digest> {
        let target = match to {
            Some(d) => d.clone(),
            None => {
                let events = history::tag_history(self.store.as_ref(), repo, tag).await?;
                let current = self.store.tag_get(repo, tag).await?;
                events
                    .iter()
                    .rev()
                    .filter(|e| !e.deleted && Some(&e.new) == current.as_ref())
                    .find_map(|e| e.old.clone())
                    .ok_or_else(|| Error::Denied(format!("{repo}:{tag} has no earlier digest in its history")))?
            }
        };
        let current = self.store.tag_get(repo, tag).await?;
        let w = TagWrite { if_match: current, if_none_match: false, source: format!("rollback:{source}") };
        self.tag_move(repo, tag, &target, &w).await?;
        Ok(target)
    }
}
