//! Copying content by digest from an upstream to a destination (the local store, or another registry),
//! children before parents, so whatever points at a manifest only ever points at complete content.
//! Used by the sync engine; the mirror has its own streaming path for client requests.
//!
//! May import: `store`, `upstream`, `oci`. This is the one module that touches both.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use oci::{Descriptor, Digest, Manifest, ManifestBody, Platform, RefSpec, RepoName, Tag};

use crate::inflight::KeyedLocks;
use crate::store::{ByteStream, ContentStore, StoreError, StoredManifest};
use crate::upstream::{Upstream, UpstreamError};

/// Errors while copying.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// Reading from the upstream failed.
    #[error("upstream: {0}")]
    Upstream(#[from] UpstreamError),
    /// Writing to the local store failed (including a digest mismatch of fetched bytes).
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// Writing to a destination registry failed.
    #[error("destination: {0}")]
    Destination(UpstreamError),
    /// The upstream announced a manifest media type we cannot walk.
    #[error("{0}")]
    Unsupported(String),
}

/// Where copied content goes.
#[derive(Clone)]
pub enum Destination {
    /// Wharf's own store (the default).
    Local(Arc<dyn ContentStore>),
    /// Another registry, pushed to over HTTP.
    Remote(Arc<Upstream>),
}

impl Destination {
    /// Whether the blob is already there (linking it into `repo` when the local pool has it).
    pub async fn has_blob(&self, repo: &RepoName, d: &Digest) -> Result<bool, TransferError> {
        match self {
            Destination::Local(s) => {
                if s.blob_stat(d).await?.is_some() {
                    s.blob_link(repo, d).await?;
                    Ok(true)
                } else {
                    Ok(false)
                }
            }
            Destination::Remote(r) => Ok(r.head_blob(repo, d).await.map_err(TransferError::Destination)?.is_some()),
        }
    }

    async fn put_blob(&self, repo: &RepoName, d: &Digest, size: u64, body: ByteStream) -> Result<(), TransferError> {
        match self {
            Destination::Local(s) => {
                s.blob_put(d, Some(size), body).await?;
                s.blob_link(repo, d).await?;
                Ok(())
            }
            Destination::Remote(r) => r.push_blob(repo, d, size, body).await.map_err(TransferError::Destination),
        }
    }

    /// Whether a manifest is already there.
    pub async fn has_manifest(&self, repo: &RepoName, d: &Digest) -> Result<bool, TransferError> {
        match self {
            Destination::Local(s) => Ok(s.manifest_get(repo, d).await?.is_some()),
            Destination::Remote(r) => Ok(r
                .head_manifest(repo, &RefSpec::Digest(d.clone()))
                .await
                .map_err(TransferError::Destination)?
                .is_some()),
        }
    }

    async fn put_manifest(&self, repo: &RepoName, m: &Manifest) -> Result<(), TransferError> {
        match self {
            Destination::Local(s) => {
                let stored = StoredManifest { bytes: m.bytes.clone(), media_type: m.media_type.clone() };
                let subject = m.subject().map(|x| x.digest.clone());
                let desc = subject.as_ref().map(|_| m.descriptor());
                s.manifest_put(repo, &m.digest, &stored, subject.as_ref().zip(desc.as_ref())).await?;
                Ok(())
            }
            Destination::Remote(r) => r
                .put_manifest(repo, &RefSpec::Digest(m.digest.clone()), &m.media_type, m.bytes.clone())
                .await
                .map_err(TransferError::Destination),
        }
    }

    /// The digest a tag points at there.
    pub async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, TransferError> {
        match self {
            Destination::Local(s) => Ok(s.tag_get(repo, tag).await?),
            Destination::Remote(r) => match r.head_manifest(repo, &RefSpec::Tag(tag.clone())).await {
                Ok(h) => Ok(h.map(|h| h.digest)),
                Err(e) => Err(TransferError::Destination(e)),
            },
        }
    }

    /// Point a tag at a manifest that is already there.
    pub async fn tag_put(&self, repo: &RepoName, tag: &Tag, m: &Manifest) -> Result<(), TransferError> {
        match self {
            Destination::Local(s) => Ok(s.tag_put(repo, tag, &m.digest).await?),
            Destination::Remote(r) => r
                .put_manifest(repo, &RefSpec::Tag(tag.clone()), &m.media_type, m.bytes.clone())
                .await
                .map_err(TransferError::Destination),
        }
    }
}

/// `os/arch[/variant]` as written in sync configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformSpec {
    /// Operating system.
    pub os: String,
    /// Architecture.
    pub arch: String,
    /// Variant, when given.
    pub variant: Option<String>,
}

impl PlatformSpec {
    /// Parse `linux/arm64` or `linux/arm/v7`.
    pub fn parse(s: &str) -> Option<PlatformSpec> {
        let p: Vec<&str> = s.split('/').collect();
        match p.as_slice() {
            [os, arch] => Some(PlatformSpec { os: (*os).into(), arch: (*arch).into(), variant: None }),
            [os, arch, v] => Some(PlatformSpec { os: (*os).into(), arch: (*arch).into(), variant: Some((*v).into()) }),
            _ => None,
        }
    }

    /// Whether an index entry's platform is this one (a spec without variant matches every variant).
    pub fn matches(&self, p: &Platform) -> bool {
        p.os == self.os
            && p.architecture == self.arch
            && self.variant.as_ref().is_none_or(|v| p.variant.as_ref() == Some(v))
    }
}

/// Counters of one copy run, shared by its tasks.
#[derive(Debug, Default)]
pub struct Counters {
    /// Blob bytes fetched and written.
    pub bytes: AtomicU64,
    /// Blobs copied.
    pub blobs_copied: AtomicU64,
    /// Blobs already present.
    pub blobs_skipped: AtomicU64,
    /// Manifests written.
    pub manifests_copied: AtomicU64,
}

/// A shared bandwidth cap.
pub struct Bandwidth {
    bytes_per_sec: u64,
    state: Mutex<(Instant, u64)>,
}

impl Bandwidth {
    /// A cap of `bytes_per_sec` (0: unlimited).
    pub fn new(bytes_per_sec: u64) -> Bandwidth {
        Bandwidth { bytes_per_sec, state: Mutex::new((Instant::now(), 0)) }
    }

    async fn take(&self, n: usize) {
        if self.bytes_per_sec == 0 {
            return;
        }
        let due = {
            let mut s = self.state.lock().expect("bandwidth lock");
            s.1 += n as u64;
            s.0 + Duration::from_secs_f64(s.1 as f64 / self.bytes_per_sec as f64)
        };
        tokio::time::sleep_until(due.into()).await;
    }
}

/// What a copy needs: where from, where to, and how.
pub struct Copier {
    /// The source.
    pub upstream: Arc<Upstream>,
    /// The destination.
    pub dest: Destination,
    /// Repository at the source.
    pub remote: RepoName,
    /// Repository at the destination.
    pub local: RepoName,
    /// Platforms to copy from indexes (empty: all).
    pub platforms: Vec<PlatformSpec>,
    /// Copy referrers too.
    pub referrers: bool,
    /// Blobs in flight at once.
    pub concurrency: usize,
    /// Shared bandwidth cap.
    pub bandwidth: Arc<Bandwidth>,
    /// Progress counters.
    pub counters: Arc<Counters>,
    /// Called with every chunk size (progress bars).
    pub on_bytes: Arc<dyn Fn(u64) + Send + Sync>,
    /// One copy per digest at a time, across the run's concurrent tags.
    pub inflight: Arc<KeyedLocks<Digest>>,
}

/// What a copied tree contained.
#[derive(Debug, Default, Clone)]
pub struct Copied {
    /// Per index entry: platform, child digest, and whether it was copied.
    pub platforms: Vec<(String, Digest, bool)>,
    /// Every manifest digest written or already present (to pin).
    pub manifests: Vec<Digest>,
}

impl Copier {
    /// Copy one blob unless the destination has it.
    pub async fn copy_blob(&self, desc: &Descriptor) -> Result<(), TransferError> {
        let _turn = self.inflight.lock(&desc.digest).await;
        if self.dest.has_blob(&self.local, &desc.digest).await? {
            self.counters.blobs_skipped.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        let resp = self.upstream.get_blob(&self.remote, &desc.digest).await?;
        let (bw, counters, on_bytes) = (self.bandwidth.clone(), self.counters.clone(), self.on_bytes.clone());
        let body: ByteStream = Box::pin(resp.body.and_then(move |chunk: Bytes| {
            let (bw, counters, on_bytes) = (bw.clone(), counters.clone(), on_bytes.clone());
            async move {
                bw.take(chunk.len()).await;
                counters.bytes.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                on_bytes(chunk.len() as u64);
                Ok(chunk)
            }
        }));
        self.dest.put_blob(&self.local, &desc.digest, desc.size, body).await?;
        self.counters.blobs_copied.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn copy_blobs(&self, descs: &[Descriptor]) -> Result<(), TransferError> {
        let mut seen = HashSet::new();
        let unique: Vec<&Descriptor> =
            descs.iter().filter(|d| d.urls.is_empty() && seen.insert(d.digest.clone())).collect();
        let copies: Vec<_> = unique.into_iter().map(|d| self.copy_blob(d)).collect();
        futures_util::stream::iter(copies).buffer_unordered(self.concurrency.max(1)).try_collect::<Vec<()>>().await?;
        Ok(())
    }

    /// Copy the manifest `digest` and everything under it (children, config, layers; referrers when asked),
    /// writing children before parents. `manifest` is the already fetched top-level manifest, if any.
    pub async fn copy_tree(
        &self,
        digest: &Digest,
        manifest: Option<Manifest>,
    ) -> Result<(Manifest, Copied), TransferError> {
        let mut copied = Copied::default();
        let m = self.copy_manifest(digest, manifest, &mut copied, 0).await?;
        Ok((m, copied))
    }

    fn copy_manifest<'a>(
        &'a self,
        digest: &'a Digest,
        manifest: Option<Manifest>,
        copied: &'a mut Copied,
        depth: u32,
    ) -> futures_util::future::BoxFuture<'a, Result<Manifest, TransferError>> {
        Box::pin(async move {
            let m = match manifest {
                Some(m) => m,
                None => self.upstream.get_manifest(&self.remote, &RefSpec::Digest(digest.clone())).await?,
            };
            let turn = self.inflight.lock(digest).await;
            let present = self.dest.has_manifest(&self.local, digest).await?;
            match &m.body {
                ManifestBody::Image(img) => {
                    // Blobs are checked even when the manifest is present: the mirror caches manifests before
                    // (and without) their layers.
                    let mut blobs = vec![img.config.clone()];
                    blobs.extend(img.layers.iter().cloned());
                    self.copy_blobs(&blobs).await?;
                }
                ManifestBody::Index(idx) => {
                    // Children are always walked (cheap when present), so a changed platform list fills in.
                    for child in &idx.manifests {
                        let wanted = self.platforms.is_empty()
                            || child.platform.as_ref().is_none_or(|p| self.platforms.iter().any(|s| s.matches(p)));
                        if let Some(p) = &child.platform {
                            copied.platforms.push((p.to_string(), child.digest.clone(), wanted));
                        }
                        if !wanted {
                            continue;
                        }
                        if !child.media_type.is_manifest() {
                            return Err(TransferError::Unsupported(format!(
                                "index {digest} lists {} of type {}, which is not a manifest",
                                child.digest, child.media_type
                            )));
                        }
                        let mut sub = Copied::default();
                        self.copy_manifest(&child.digest, None, &mut sub, depth + 1).await?;
                        copied.manifests.extend(sub.manifests);
                    }
                }
            }
            if !present {
                self.dest.put_manifest(&self.local, &m).await?;
                self.counters.manifests_copied.fetch_add(1, Ordering::Relaxed);
            }
            copied.manifests.push(digest.clone());
            drop(turn);
            if self.referrers && depth < 3 {
                // Referrers are extras: a registry that cannot list them must not stop the image itself.
                let referrers = match self.upstream.referrers(&self.remote, digest).await {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(repo = %self.remote, %digest, error = %e, "could not list referrers; skipped");
                        Vec::new()
                    }
                };
                for r in referrers {
                    if r.media_type.is_manifest() && r.digest != *digest && !copied.manifests.contains(&r.digest) {
                        let mut sub = Copied::default();
                        self.copy_manifest(&r.digest, None, &mut sub, depth + 1).await?;
                        copied.manifests.extend(sub.manifests);
                    }
                }
            }
            Ok(m)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_specs() {
        let p = |os: &str, arch: &str, v: Option<&str>| Platform {
            architecture: arch.into(),
            os: os.into(),
            os_version: None,
            os_features: vec![],
            variant: v.map(Into::into),
            features: vec![],
        };
        let arm = PlatformSpec::parse("linux/arm").unwrap();
        assert!(arm.matches(&p("linux", "arm", Some("v7"))) && arm.matches(&p("linux", "arm", None)));
        let v7 = PlatformSpec::parse("linux/arm/v7").unwrap();
        assert!(v7.matches(&p("linux", "arm", Some("v7"))) && !v7.matches(&p("linux", "arm", Some("v6"))));
        assert!(!PlatformSpec::parse("linux/amd64").unwrap().matches(&p("windows", "amd64", None)));
        assert!(PlatformSpec::parse("linux").is_none());
    }
}
