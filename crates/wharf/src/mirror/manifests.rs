//! Mirrored manifests: digests served locally once cached; tags by freshness policy, stale-if-error.

use std::time::Instant;

use oci::{Digest, Manifest, RefSpec, Tag};

use super::{bump, Key, Mirror, MirrorError, Mirrored};
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
        match reference {
            RefSpec::Digest(d) => self.by_digest(up, route, d).await,
            RefSpec::Tag(t) => self.by_tag(up, route, t).await,
        }
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
            Err(UpstreamError::NotFound) => {
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
    async fn keep(&self, route: &MirrorRoute, m: Manifest) -> Result<MirrorManifest, MirrorError> {
        let stored = StoredManifest { bytes: m.bytes.clone(), media_type: m.media_type.clone() };
        let subject = m.subject().map(|s| s.digest.clone());
        let desc = subject.as_ref().map(|_| m.descriptor());
        self.store.manifest_put(&route.local, &m.digest, &stored, subject.as_ref().zip(desc.as_ref())).await?;
        Ok(MirrorManifest { digest: m.digest, manifest: stored, warning: None })
    }

    fn is_fresh(&self, up: &Mirrored, key: &Key, tag: &Tag) -> bool {
        if any_match(&up.immutable, tag.as_str()) {
            return true;
        }
        let checked = self.checked.lock().expect("checked lock");
        checked.get(key).is_some_and(|t| t.elapsed() < up.tag_ttl)
    }

    fn mark_checked(&self, key: Key) {
        let mut map = self.checked.lock().expect("checked lock");
        if map.len() >= super::MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, Instant::now());
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
        if self.is_fresh(up, &key, tag) {
            if let Some(c) = self.cached_tag(route, tag).await? {
                return Ok(hit(c));
            }
        }
        // Revalidate: one request per tag at a time; the others wait and then see its result.
        let flight = self.flight(&key);
        let _guard = flight.lock().await;
        let cached = self.cached_tag(route, tag).await?;
        if let Some(c) = cached.clone().filter(|_| self.is_fresh(up, &key, tag)) {
            return Ok(hit(c));
        }
        if cached.is_none() && self.negative_hit(up, &key) {
            return Ok(None);
        }
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
        let head = match up.client.head_manifest(&route.remote, &RefSpec::Tag(tag.clone())).await {
            Ok(h) => h,
            Err(e) => return outage(e, cached),
        };
        let Some(head) = head else {
            return match cached {
                Some(c) => Ok(stale("the tag no longer exists upstream".into(), c)),
                None => {
                    self.remember_not_found(up, key);
                    Ok(None)
                }
            };
        };
        if let Some(c) = cached.clone().filter(|(d, _)| *d == head.digest) {
            self.mark_checked(key);
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
        }
        self.store.tag_put(&route.local, tag, &fetched.digest).await?;
        let event = TagEvent {
            time: history::now_secs(),
            old: cached.map(|(d, _)| d),
            new: fetched.digest.clone(),
            source: format!("mirror:{}", up.client.name),
        };
        history::record_tag_event(self.store.as_ref(), &route.local, tag, event).await?;
        self.mark_checked(key);
        Ok(Some(fetched))
    }
}
