//! Mirrored manifests: digests served locally once cached; tags by freshness policy, stale-if-error.

use std::time::Instant;

use oci::{Digest, Manifest, ManifestBody, RefSpec, Tag};

use super::{bump, is_absent, Key, Mirror, MirrorError, Mirrored};
use crate::history::{self, TagEvent};
use crate::policy::routing::MirrorRoute;
use crate::policy::tags::any_match;
use crate::store::StoredManifest;
use crate::upstream::UpstreamError;

/// A manifest answered by the mirror.
#[derive(Debug)]
pub struct MirrorManifest {
    /// Its digest.
    pub digest: Digest,
    /// Exact bytes and media type.
    pub manifest: StoredManifest,
    /// Set when the answer is a cached copy served because the upstream could not confirm it.
    pub warning: Option<String>,
}

impl Mirror {
    /// Resolve `reference` in a mirrored repository. `Ok(None)`: neither the cache nor the upstream has it.
    pub async fn manifest(
        &self,
        route: &MirrorRoute,
        reference: &RefSpec,
    ) -> Result<Option<MirrorManifest>, MirrorError> {
        let up = self.upstream(route.upstream);
        let answer = match reference {
            RefSpec::Digest(d) => self.by_digest(up, route, d).await,
            RefSpec::Tag(t) => self.by_tag(up, route, t).await,
        };
        if let Ok(Some(m)) = &answer {
            self.touch(&route.local, &m.digest);
        }
        answer
    }

    async fn local(&self, route: &MirrorRoute, d: &Digest) -> Result<Option<StoredManifest>, MirrorError> {
        Ok(self.store.manifest_get(&route.local, d).await?)
    }

    async fn by_digest(
        &self,
        up: &Mirrored,
        route: &MirrorRoute,
        d: &Digest,
    ) -> Result<Option<MirrorManifest>, MirrorError> {
        if let Some(m) = self.local(route, d).await? {
            bump(&up.stats.hits);
            return Ok(Some(MirrorManifest { digest: d.clone(), manifest: m, warning: None }));
        }
        let key: Key = (route.local.clone(), format!("m:{d}"));
        if self.negative_hit(up, &key) {
            return Ok(None);
        }
        let flight = self.flight(&key);
        let _guard = flight.lock().await;
        if let Some(m) = self.local(route, d).await? {
            bump(&up.stats.hits);
            return Ok(Some(MirrorManifest { digest: d.clone(), manifest: m, warning: None }));
        }
        bump(&up.stats.misses);
        match up.client.get_manifest(&route.remote, &RefSpec::Digest(d.clone())).await {
            Ok(m) => Ok(Some(self.keep(route, m).await?)),
            Err(e) if is_absent(&e) => {
                self.remember_not_found(up, key);
                Ok(None)
            }
            Err(e) => {
                if let UpstreamError::DigestMismatch { .. } = e {
                    bump(&up.stats.corrupt);
                    tracing::error!(upstream = %up.client.name, repo = %route.remote, error = %e, "discarded corrupt manifest");
                }
                Err(self.upstream_error(up, e))
            }
        }
    }

    /// Store fetched bytes exactly as received (an index is kept whole; its children come when asked for).
    /// The blobs it names that are already in the store are linked into the cache repository: a verified
    /// manifest from this upstream repository is the proof that they belong there.
    async fn keep(&self, route: &MirrorRoute, m: Manifest) -> Result<MirrorManifest, MirrorError> {
        let stored = StoredManifest::from(&m);
        if let ManifestBody::Image(img) = &m.body {
            // Descriptors with `urls` are skipped: registries accept a manifest naming such a layer without
            // holding it, so it proves nothing (they go through the upstream HEAD check like any other).
            for d in std::iter::once(&img.config).chain(&img.layers).filter(|d| d.urls.is_empty()) {
                if self.store.blob_stat(&d.digest).await?.is_some() {
                    // Collected meanwhile (garbage collection): it is fetched when asked for, like any miss.
                    match self.store.blob_link(&route.local, &d.digest).await {
                        Ok(()) | Err(crate::store::StoreError::BlobUnknown(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        let referrer = m.referrer();
        self.store.manifest_put(&route.local, &m.digest, &stored, referrer.as_ref().map(|(s, d)| (s, d))).await?;
        if let Some(up) = self.upstreams.get(route.upstream) {
            self.announce_fill(&up.client.name, &route.local, &m.digest, "manifest", m.bytes.len() as u64);
        }
        Ok(MirrorManifest { digest: m.digest, manifest: stored, warning: None })
    }

    /// The tag's answer without asking the upstream: for an immutable tag the cached copy, otherwise the
    /// digest the upstream confirmed within `tag_ttl` (which may differ from the stored tag when a pinned tag
    /// was not moved; see `by_tag`).
    async fn fresh(
        &self,
        up: &Mirrored,
        route: &MirrorRoute,
        key: &Key,
        tag: &Tag,
    ) -> Result<Option<(Digest, StoredManifest)>, MirrorError> {
        if any_match(&up.immutable, tag.as_str()) {
            return self.cached_tag(route, tag).await;
        }
        let confirmed = {
            let checked = self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            checked.get(key).filter(|(t, _)| t.elapsed() < up.tag_ttl).map(|(_, d)| d.clone())
        };
        let Some(d) = confirmed else { return Ok(None) };
        Ok(self.local(route, &d).await?.map(|m| (d, m)))
    }

    pub(super) fn mark_checked(&self, key: Key, digest: Digest) {
        let mut map = self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= super::MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, (Instant::now(), digest));
    }

    /// Whether everything `digest` needs is in the cache repository, so nodes can pull it with the upstream
    /// gone: a sync's pin says so; otherwise the children and blobs are looked up.
    async fn complete(&self, route: &MirrorRoute, digest: &Digest, depth: u32) -> Result<bool, MirrorError> {
        if history::pinned(self.store.as_ref(), &route.local, digest).await?.is_some() {
            return Ok(true);
        }
        let Some(stored) = self.local(route, digest).await? else { return Ok(false) };
        let Ok(m) = Manifest::parse(stored.bytes, Some(&stored.media_type), digest.algorithm()) else {
            return Ok(false);
        };
        match &m.body {
            ManifestBody::Image(img) => {
                for d in std::iter::once(&img.config).chain(&img.layers) {
                    let elsewhere = !d.urls.is_empty() && d.media_type.is_non_distributable();
                    if !elsewhere && !self.store.blob_linked(&route.local, &d.digest).await? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            ManifestBody::Index(idx) => {
                if depth >= 2 {
                    return Ok(false);
                }
                for child in &idx.manifests {
                    if !Box::pin(self.complete(route, &child.digest, depth + 1)).await? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
        }
    }

    async fn cached_tag(
        &self,
        route: &MirrorRoute,
        tag: &Tag,
    ) -> Result<Option<(Digest, StoredManifest)>, MirrorError> {
        let Some(d) = self.store.tag_get(&route.local, tag).await? else { return Ok(None) };
        Ok(self.local(route, &d).await?.map(|m| (d, m)))
    }

    async fn by_tag(
        &self,
        up: &Mirrored,
        route: &MirrorRoute,
        tag: &Tag,
    ) -> Result<Option<MirrorManifest>, MirrorError> {
        let key: Key = (route.local.clone(), format!("m:{tag}"));
        let hit = |(digest, manifest): (Digest, StoredManifest)| {
            bump(&up.stats.hits);
            Some(MirrorManifest { digest, manifest, warning: None })
        };
        if let Some(c) = self.fresh(up, route, &key, tag).await? {
            return Ok(hit(c));
        }
        // Revalidate: one request per tag at a time; the others wait and then see its result.
        let flight = self.flight(&key);
        let _guard = flight.lock().await;
        if let Some(c) = self.fresh(up, route, &key, tag).await? {
            return Ok(hit(c));
        }
        let cached = self.cached_tag(route, tag).await?;
        let stale = |why: String, cached: (Digest, StoredManifest)| {
            bump(&up.stats.stale_served);
            tracing::warn!(upstream = %up.client.name, repo = %route.local, %tag, reason = %why, "serving cached manifest stale");
            Some(MirrorManifest {
                digest: cached.0,
                manifest: cached.1,
                warning: Some(format!(
                    "cached copy served: upstream {} could not confirm the tag ({why})",
                    up.client.name
                )),
            })
        };
        // An upstream failure: the cached copy, stale, if there is one.
        let outage = |e: UpstreamError, cached: Option<(Digest, StoredManifest)>| {
            let msg = e.to_string();
            let err = self.upstream_error(up, e);
            match cached {
                Some(c) => Ok(stale(msg, c)),
                None => Err(err),
            }
        };
        const GONE: &str = "the tag no longer exists upstream";
        // A tag the upstream said is gone is not asked for again inside the negative window.
        if self.negative_hit(up, &key) {
            return Ok(cached.and_then(|c| stale(GONE.into(), c)));
        }
        let head = match up.client.head_manifest(&route.remote, &RefSpec::Tag(tag.clone())).await {
            Ok(h) => h,
            // Registries answer 401/403 for repositories that do not exist (Docker Hub does): that is a
            // not-found for this name, not an outage, unless a cached copy says the name did exist.
            Err(e) if is_absent(&e) && cached.is_none() => None,
            Err(e) => return outage(e, cached),
        };
        let Some(head) = head else {
            self.remember_not_found(up, key);
            return Ok(cached.and_then(|c| stale(GONE.into(), c)));
        };
        if let Some(c) = cached.clone().filter(|(d, _)| *d == head.digest) {
            self.mark_checked(key, head.digest);
            return Ok(hit(c));
        }
        bump(&up.stats.misses);
        let fetched = match self.local(route, &head.digest).await? {
            Some(m) => MirrorManifest { digest: head.digest.clone(), manifest: m, warning: None },
            None => match up.client.get_manifest(&route.remote, &RefSpec::Digest(head.digest.clone())).await {
                Ok(m) => self.keep(route, m).await?,
                Err(e) => return outage(e, cached),
            },
        };
        if let Some((old, _)) = &cached {
            tracing::info!(upstream = %up.client.name, repo = %route.local, %tag, from = %old, to = %fetched.digest, "tag moved upstream");
            // A tag that sync pinned to complete content keeps pointing at it until the new content is
            // complete too (sync moves it then): with the upstream gone, nodes must still get a whole image.
            // Clients are answered with the new digest meanwhile.
            if history::pinned(self.store.as_ref(), &route.local, old).await?.is_some()
                && !self.complete(route, &fetched.digest, 0).await?
            {
                tracing::info!(upstream = %up.client.name, repo = %route.local, %tag, pinned = %old, "pinned tag kept until the new content is complete");
                self.mark_checked(key, fetched.digest.clone());
                return Ok(Some(fetched));
            }
        }
        self.store.tag_put(&route.local, tag, &fetched.digest).await?;
        let event = TagEvent {
            time: history::now_secs(),
            old: cached.map(|(d, _)| d),
            new: fetched.digest.clone(),
            source: format!("mirror:{}", up.client.name),
            deleted: false,
        };
        history::record_tag_event(self.store.as_ref(), &route.local, tag, event).await?;
        self.mark_checked(key, fetched.digest.clone());
        Ok(Some(fetched))
    }
}
