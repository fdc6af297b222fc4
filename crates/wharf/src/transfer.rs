//! Copying content by digest from an upstream to a destination (the local store, or another registry),
//! children before parents, so whatever points at a manifest only ever points at complete content.
//! Used by the sync engine; the mirror has its own streaming path for client requests.
//!
//! The walk is bounded against crafted graphs: each manifest is visited once per copy, index nesting and
//! referrer chains have depth limits, and referrers are copied only after the whole image is written (the
//! referrers API is not content-addressed, so an upstream can claim any graph, cycles included). No lock is
//! held while walking, so no graph can make two walks wait for each other. Manifests the local store already
//! holds are read from it, not fetched again.
//!
//! May import: `store`, `upstream`, `oci`. This is the one module that touches both.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
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
    /// The manifest graph is not one Wharf copies: a cycle, nesting deeper than [`MAX_INDEX_DEPTH`], or more
    /// than [`MAX_TREE_MANIFESTS`] manifests.
    #[error("{0}")]
    Graph(String),
}

/// Deepest nesting of indexes followed (an index listing indexes listing ...): real images use one level.
pub const MAX_INDEX_DEPTH: usize = 8;

/// How far referrers of referrers are followed (a signature of an SBOM of an image is depth 2).
pub const MAX_REFERRER_DEPTH: u32 = 3;

/// Most manifests one copy walks (image, platforms, referrers): bounds what a hostile referrers list costs.
pub const MAX_TREE_MANIFESTS: usize = 10_000;

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
                if s.blob_stat(d).await?.is_none() {
                    return Ok(false);
                }
                // A garbage collection may remove the bytes between the two calls: then they are copied.
                match s.blob_link(repo, d).await {
                    Ok(()) => Ok(true),
                    Err(crate::store::StoreError::BlobUnknown(_)) => Ok(false),
                    Err(e) => Err(e.into()),
                }
            }
            Destination::Remote(r) => Ok(r.head_blob(repo, d).await.map_err(TransferError::Destination)?.is_some()),
        }
    }

    /// Store a blob (checked against its digest and size) and make it part of `repo`.
    pub async fn put_blob(
        &self,
        repo: &RepoName,
        d: &Digest,
        size: u64,
        body: ByteStream,
    ) -> Result<(), TransferError> {
        match self {
            Destination::Local(s) => {
                s.blob_put(d, Some(size), body).await?;
                s.blob_link(repo, d).await?;
                Ok(())
            }
            Destination::Remote(r) => r.push_blob(repo, d, size, body).await.map_err(TransferError::Destination),
        }
    }

    /// The manifest as the local store holds it, parsed and checked against its digest; always `None` for a
    /// remote destination (its copy is not read back). A stored copy that fails the check is treated as absent.
    pub async fn stored_manifest(&self, repo: &RepoName, d: &Digest) -> Result<Option<Manifest>, TransferError> {
        let Destination::Local(s) = self else { return Ok(None) };
        let Some(stored) = s.manifest_get(repo, d).await? else { return Ok(None) };
        match Manifest::parse(stored.bytes, Some(&stored.media_type), d.algorithm()) {
            Ok(m) if m.digest == *d => Ok(Some(m)),
            Ok(m) => {
                tracing::warn!(%repo, digest = %d, actual = %m.digest, "stored manifest does not hash to its digest; fetching it again");
                Ok(None)
            }
            Err(e) => {
                tracing::warn!(%repo, digest = %d, error = %e, "stored manifest does not parse; fetching it again");
                Ok(None)
            }
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

    /// Store a manifest whose references are already there.
    pub async fn put_manifest(&self, repo: &RepoName, m: &Manifest) -> Result<(), TransferError> {
        match self {
            Destination::Local(s) => {
                let referrer = m.referrer();
                s.manifest_put(repo, &m.digest, &StoredManifest::from(m), referrer.as_ref().map(|(s, d)| (s, d)))
                    .await?;
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
            let mut s = self.state.lock().unwrap_or_else(PoisonError::into_inner);
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
    /// Per entry of the top-level index: platform, child digest, and whether it was copied.
    pub platforms: Vec<(String, Digest, bool)>,
    /// Every manifest digest written or already present (to pin), each once.
    pub manifests: Vec<Digest>,
}

/// State of one [`Copier::copy_tree`] walk.
#[derive(Default)]
struct Walk {
    copied: Copied,
    /// Manifests finished in this walk: never fetched or walked twice.
    done: HashSet<Digest>,
    /// The index chain being walked (parents of the current manifest): a child in it is a cycle.
    path: Vec<Digest>,
    /// Manifests whose referrers are still to be listed, with their referrer depth.
    referrers: VecDeque<(Digest, u32)>,
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
        let mut walk = Walk::default();
        let top = self.copy_manifest(digest, manifest, &mut walk, 0).await?;
        let top = top.expect("the first manifest of a walk is never already done");
        // Referrers last: everything they point at is written by now, whatever graph the upstream claims.
        while let Some((subject, depth)) = walk.referrers.pop_front() {
            // Referrers are extras: a registry that cannot list them must not stop the image itself.
            let listed = match self.upstream.referrers(&self.remote, &subject).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(repo = %self.remote, digest = %subject, error = %e, "could not list referrers; skipped");
                    continue;
                }
            };
            for r in listed {
                if !r.media_type.is_manifest() || walk.done.contains(&r.digest) {
                    continue;
                }
                let before = walk.referrers.len();
                self.copy_manifest(&r.digest, None, &mut walk, 0).await?;
                // copy_manifest queued the new manifests at depth 0; they are referrers one level down.
                let queued: Vec<_> = walk.referrers.drain(before..).collect();
                if depth + 1 < MAX_REFERRER_DEPTH {
                    walk.referrers.extend(queued.into_iter().map(|(d, _)| (d, depth + 1)));
                }
            }
        }
        Ok((top, walk.copied))
    }

    /// Copy one manifest and its children (recursively, children first); `None` when this walk already did.
    fn copy_manifest<'a>(
        &'a self,
        digest: &'a Digest,
        manifest: Option<Manifest>,
        walk: &'a mut Walk,
        depth: usize,
    ) -> futures_util::future::BoxFuture<'a, Result<Option<Manifest>, TransferError>> {
        Box::pin(async move {
            if walk.done.contains(digest) {
                return Ok(None);
            }
            if walk.path.contains(digest) {
                return Err(TransferError::Graph(format!("manifest {digest} lists itself through its children")));
            }
            if depth > MAX_INDEX_DEPTH {
                return Err(TransferError::Graph(format!(
                    "manifest {digest} is nested more than {MAX_INDEX_DEPTH} indexes deep"
                )));
            }
            if walk.done.len() >= MAX_TREE_MANIFESTS {
                return Err(TransferError::Graph(format!(
                    "more than {MAX_TREE_MANIFESTS} manifests under one tag (children and referrers); stopped"
                )));
            }
            // One fetch per digest at a time across concurrent tags; the turn is not held while walking.
            let (m, present) = {
                let _turn = self.inflight.lock(digest).await;
                match self.dest.stored_manifest(&self.local, digest).await? {
                    Some(held) => (held, true),
                    None => {
                        let present = match self.dest {
                            Destination::Local(_) => false,
                            Destination::Remote(_) => self.dest.has_manifest(&self.local, digest).await?,
                        };
                        let m = match manifest {
                            Some(m) => m,
                            None => self.upstream.get_manifest(&self.remote, &RefSpec::Digest(digest.clone())).await?,
                        };
                        (m, present)
                    }
                }
            };
            walk.path.push(digest.clone());
            let walked = self.copy_children(digest, &m, walk, depth).await;
            walk.path.pop();
            walked?;
            if !present {
                let _turn = self.inflight.lock(digest).await;
                // Another tag's walk may have written it meanwhile (cheap to ask the local store; a remote
                // registry simply takes the same bytes twice).
                let written = match self.dest {
                    Destination::Local(_) => self.dest.has_manifest(&self.local, digest).await?,
                    Destination::Remote(_) => false,
                };
                if !written {
                    self.dest.put_manifest(&self.local, &m).await?;
                    self.counters.manifests_copied.fetch_add(1, Ordering::Relaxed);
                }
            }
            walk.done.insert(digest.clone());
            walk.copied.manifests.push(digest.clone());
            if self.referrers {
                walk.referrers.push_back((digest.clone(), 0));
            }
            Ok(Some(m))
        })
    }

    /// The blobs of an image, or the wanted children of an index.
    async fn copy_children(
        &self,
        digest: &Digest,
        m: &Manifest,
        walk: &mut Walk,
        depth: usize,
    ) -> Result<(), TransferError> {
        match &m.body {
            ManifestBody::Image(img) => {
                // Blobs are checked even when the manifest is present: the mirror caches manifests before
                // (and without) their layers.
                let mut blobs = vec![img.config.clone()];
                blobs.extend(img.layers.iter().cloned());
                self.copy_blobs(&blobs).await
            }
            ManifestBody::Index(idx) => {
                // Children are always walked (read from the store when held), so a changed platform list
                // fills in.
                for child in &idx.manifests {
                    let wanted = self.platforms.is_empty()
                        || child.platform.as_ref().is_none_or(|p| self.platforms.iter().any(|s| s.matches(p)));
                    if let (Some(p), 0) = (&child.platform, depth) {
                        walk.copied.platforms.push((p.to_string(), child.digest.clone(), wanted));
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
                    self.copy_manifest(&child.digest, None, walk, depth + 1).await?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::upstream::UpstreamConfig;
    use crate::store::memory::MemoryStore;
    use crate::upstream::fake::FakeRegistry;

    async fn copier(fake: &Arc<FakeRegistry>, store: &Arc<MemoryStore>) -> Copier {
        let url = fake.clone().serve().await;
        let cfg = UpstreamConfig { name: "fake.io".into(), url, ..Default::default() };
        Copier {
            upstream: Arc::new(Upstream::from_config(&cfg).unwrap()),
            dest: Destination::Local(store.clone()),
            remote: "a/b".parse().unwrap(),
            local: "fake.io/a/b".parse().unwrap(),
            platforms: Vec::new(),
            referrers: true,
            concurrency: 2,
            bandwidth: Arc::new(Bandwidth::new(0)),
            counters: Arc::default(),
            on_bytes: Arc::new(|_| {}),
            inflight: Arc::default(),
        }
    }

    /// Copy, with a guard that turns a deadlock (the old behaviour) into a failure instead of a hang.
    async fn copy(c: &Copier, d: &Digest) -> Result<(Manifest, Copied), TransferError> {
        tokio::time::timeout(Duration::from_secs(120), c.copy_tree(d, None)).await.expect("the copy deadlocked")
    }

    #[tokio::test]
    async fn crafted_referrer_graphs_neither_deadlock_nor_loop() {
        let fake = Arc::new(FakeRegistry::default());
        let child = fake.image(None, "amd64");
        let index = fake.index(Some("v1"), "v1", &[&child]);
        let sig = fake.image(None, "signature");
        let sig_index = fake.index(None, "signature bundle", &[&index]);
        // The child claims its parent as a referrer; the parent claims its child; the signature claims
        // itself and the image; an index referrer lists the image it refers to as its child.
        fake.referrer(&child.digest, &index);
        fake.referrer(&index.digest, &child);
        fake.referrer(&index.digest, &sig);
        fake.referrer(&index.digest, &sig_index);
        fake.referrer(&sig.digest, &sig);
        fake.referrer(&sig.digest, &index);
        fake.referrer(&sig_index.digest, &sig_index);
        let store = Arc::new(MemoryStore::new());
        let c = copier(&fake, &store).await;
        let (m, copied) = copy(&c, &index.digest).await.unwrap();
        assert_eq!(m.digest, index.digest);
        for d in [&index, &child, &sig, &sig_index] {
            assert!(store.manifest_get(&c.local, &d.digest).await.unwrap().is_some(), "{} stored", d.digest);
            assert_eq!(fake.gets(&format!("/manifests/{}", d.digest)), 1, "{} fetched once", d.digest);
            assert_eq!(copied.manifests.iter().filter(|x| **x == d.digest).count(), 1);
        }
        assert_eq!(c.counters.manifests_copied.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn child_manifests_already_held_are_not_fetched_again() {
        let fake = Arc::new(FakeRegistry::default());
        let (amd, arm) = (fake.image(None, "amd64"), fake.image(None, "arm64"));
        let v1 = fake.index(None, "v1", &[&amd, &arm]);
        let store = Arc::new(MemoryStore::new());
        let c = copier(&fake, &store).await;
        copy(&c, &v1.digest).await.unwrap();
        // The tag moves to a new index over the same platform images: only the new index is fetched.
        let v2 = fake.index(None, "v2", &[&amd, &arm]);
        let (_, copied) = copy(&c, &v2.digest).await.unwrap();
        assert_eq!(fake.gets(&format!("/manifests/{}", v2.digest)), 1);
        for d in [&amd, &arm] {
            assert_eq!(fake.gets(&format!("/manifests/{}", d.digest)), 1, "{} was fetched again", d.digest);
        }
        assert_eq!(copied.manifests, vec![amd.digest.clone(), arm.digest.clone(), v2.digest.clone()]);
        // A repeated child within one index is walked once.
        let twice = fake.index(None, "twice", &[&amd, &amd]);
        let (_, copied) = copy(&c, &twice.digest).await.unwrap();
        assert_eq!(copied.manifests, vec![amd.digest.clone(), twice.digest.clone()]);
    }

    #[tokio::test]
    async fn nesting_deeper_than_the_limit_is_refused() {
        let fake = Arc::new(FakeRegistry::default());
        let mut top = fake.image(None, "leaf");
        for i in 0..=MAX_INDEX_DEPTH {
            top = fake.index(None, &format!("level {i}"), &[&top]);
        }
        let store = Arc::new(MemoryStore::new());
        let c = copier(&fake, &store).await;
        let r = copy(&c, &top.digest).await;
        assert!(matches!(&r, Err(TransferError::Graph(m)) if m.contains("nested")), "{:?}", r.err());
        assert!(store.manifest_get(&c.local, &top.digest).await.unwrap().is_none(), "nothing points at a partial tree");
    }

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
