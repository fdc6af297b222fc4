//! Blob reads, deletes and uploads (monolithic, chunked, cross-repository mount).

use oci::{Digest, RepoName};

use super::{Error, Registry, Result, Source};
use crate::mirror::MirrorBlob;
use crate::policy::routing::{MirrorRoute, Route};
use crate::store::{BlobMeta, BlobReader, ByteRange, ByteStream, StoreError, UploadId};

/// How `POST /blobs/uploads/` ended.
#[derive(Debug)]
pub enum BlobStart {
    /// The blob is now in the repository (monolithic push or successful mount).
    Created(BlobMeta),
    /// A session was opened; the client continues with PATCH/PUT.
    Session(UploadId),
}

/// Where an upload session stands.
#[derive(Debug, Clone, Copy)]
pub struct UploadProgress {
    /// Bytes received so far.
    pub size: u64,
}

/// A requested range before it is checked against the blob size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeRequest {
    /// `bytes=start-end` or `bytes=start-`.
    From {
        /// First byte.
        start: u64,
        /// Last byte, if given.
        end: Option<u64>,
    },
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeRequest {
    fn resolve(self, size: u64) -> Result<ByteRange> {
        let unsat = || Error::RangeNotSatisfiable { size };
        match self {
            RangeRequest::From { start, end } => {
                if start >= size {
                    return Err(unsat());
                }
                let end = end.map_or(size - 1, |e| e.min(size - 1));
                if end < start {
                    return Err(unsat());
                }
                Ok(ByteRange { start, end })
            }
            RangeRequest::Suffix(n) => {
                if n == 0 || size == 0 {
                    return Err(unsat());
                }
                Ok(ByteRange { start: size.saturating_sub(n), end: size - 1 })
            }
        }
    }
}

impl Registry {
    /// A blob's metadata, if it is visible in the repository (asking the upstream for mirrored ones).
    pub async fn blob_stat(&self, repo: &RepoName, ns: Option<&str>, digest: &Digest) -> Result<BlobMeta> {
        // The HEAD a pusher sends before uploading to a new repository goes to the default upstream (the
        // name has no hosted content yet): when that upstream is down, "not here" lets the push go on.
        let by_default = matches!(self.route(repo, ns)?, Route::HostedOrMirror(..));
        match self.source(repo, ns).await? {
            Source::Hosted(r) => self.hosted_blob_stat(&r, digest, true).await,
            Source::Mirror(m) => match self.mirrored_blob_stat(&m, digest).await {
                Err(Error::Upstream { upstream, error }) if by_default => {
                    tracing::debug!(%upstream, %error, repo = %m.local, %digest, "blob HEAD: default upstream unavailable, answered not found");
                    Err(Error::BlobUnknown { repo: repo.clone(), digest: digest.clone() })
                }
                other => other,
            },
            Source::Nothing(repo) => Err(Error::BlobUnknown { repo, digest: digest.clone() }),
        }
    }

    /// `head`: a pusher's existence check, which refreshes an old link (see `ContentStore::blob_seen`).
    async fn hosted_blob_stat(&self, repo: &RepoName, digest: &Digest, head: bool) -> Result<BlobMeta> {
        let unknown = || Error::BlobUnknown { repo: repo.clone(), digest: digest.clone() };
        let linked =
            if head { self.store.blob_seen(repo, digest).await? } else { self.store.blob_linked(repo, digest).await? };
        if !linked {
            return Err(unknown());
        }
        self.store.blob_stat(digest).await?.ok_or_else(unknown)
    }

    async fn mirrored_blob_stat(&self, m: &MirrorRoute, digest: &Digest) -> Result<BlobMeta> {
        let mirror = self.mirror.as_ref().expect("mirror routes exist only with a mirror");
        match mirror.blob(m, digest, true, false).await? {
            Some(MirrorBlob::Head { size }) => Ok(BlobMeta { digest: digest.clone(), size }),
            Some(_) => self.hosted_blob_stat(&m.local, digest, false).await,
            None => Err(Error::BlobUnknown { repo: m.local.clone(), digest: digest.clone() }),
        }
    }

    /// Open a blob visible in the repository, optionally a range of it; mirrored blobs stream from the upstream
    /// on a miss.
    pub async fn blob_open(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobReader> {
        match self.source(repo, ns).await? {
            Source::Hosted(r) => self.hosted_blob_open(&r, digest, range).await,
            Source::Mirror(m) => self.mirrored_blob_open(&m, digest, range).await,
            Source::Nothing(repo) => Err(Error::BlobUnknown { repo, digest: digest.clone() }),
        }
    }

    async fn hosted_blob_open(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobReader> {
        let unknown = || Error::BlobUnknown { repo: repo.clone(), digest: digest.clone() };
        let range = match range {
            // A range is checked against the size first; a whole blob's open says its size itself.
            Some(r) => Some(r.resolve(self.hosted_blob_stat(repo, digest, false).await?.size)?),
            None if self.store.blob_linked(repo, digest).await? => None,
            None => return Err(unknown()),
        };
        self.store.blob_open(digest, range).await?.ok_or_else(unknown)
    }

    /// Where to send a client for the whole blob instead of streaming it (`[storage] redirect`): a presigned
    /// URL of the object store, once the blob is known to be visible in the repository. `None` streams.
    /// Blobs a mirror has not cached yet are streamed (the fill goes on as usual).
    pub async fn blob_redirect(&self, repo: &RepoName, ns: Option<&str>, digest: &Digest) -> Result<Option<String>> {
        let Some(expiry) = self.blob_redirects else { return Ok(None) };
        match self.source(repo, ns).await? {
            Source::Hosted(r) => {
                self.hosted_blob_stat(&r, digest, false).await?;
            }
            Source::Mirror(m) => {
                let mirror = self.mirror.as_ref().expect("mirror routes exist only with a mirror");
                if !mirror.cached_hit(&m, digest).await? {
                    return Ok(None);
                }
            }
            Source::Nothing(repo) => return Err(Error::BlobUnknown { repo, digest: digest.clone() }),
        }
        Ok(self.store.blob_url(digest, expiry).await?)
    }

    async fn mirrored_blob_open(
        &self,
        m: &MirrorRoute,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobReader> {
        let mirror = self.mirror.as_ref().expect("mirror routes exist only with a mirror");
        match mirror.blob(m, digest, false, range.is_some()).await? {
            Some(MirrorBlob::Streaming { size, body }) => {
                Ok(BlobReader { meta: BlobMeta { digest: digest.clone(), size }, range: None, body })
            }
            Some(_) => self.hosted_blob_open(&m.local, digest, range).await,
            None => Err(Error::BlobUnknown { repo: m.local.clone(), digest: digest.clone() }),
        }
    }

    /// Remove a blob from a repository (the shared bytes stay until garbage collection). Refused with `DENIED`
    /// while a manifest of the repository references it: pulling that manifest would fail. The repository's
    /// exclusive lock makes the check and the unlink one step against concurrent manifest pushes.
    pub async fn blob_delete(&self, repo: &RepoName, ns: Option<&str>, digest: &Digest) -> Result<()> {
        let repo = &self.writable(repo, ns)?;
        let _guard = self.store.repo_locks().exclusive(repo).await;
        if let Some(manifest) = self.store.blob_referenced_by(repo, digest).await? {
            return Err(Error::Denied(format!(
                "blob {digest} is still referenced by manifest {manifest} in repository {repo}; delete the \
                 manifest(s) that use it first"
            )));
        }
        if self.store.blob_unlink(repo, digest).await? {
            Ok(())
        } else {
            Err(Error::BlobUnknown { repo: repo.clone(), digest: digest.clone() })
        }
    }

    /// Start an upload: a monolithic push when `digest` and a body are given, a mount when `mount` names a
    /// blob in another repository, otherwise a session.
    pub async fn upload_start(
        &self,
        repo: &RepoName,
        ns: Option<&str>,
        monolithic: Option<(Digest, Option<u64>, ByteStream)>,
        mount: Option<(Digest, Option<RepoName>)>,
    ) -> Result<BlobStart> {
        let repo = &self.writable(repo, ns)?;
        if let Some((digest, from)) = mount {
            let mountable = match &from {
                Some(from) => self.store.blob_linked(from, &digest).await?,
                None => false,
            };
            if mountable {
                if let Some(meta) = self.store.blob_stat(&digest).await? {
                    // A garbage collection may remove the bytes in between: then the client uploads them.
                    match self.store.blob_link(repo, &digest).await {
                        Ok(()) => return Ok(BlobStart::Created(meta)),
                        Err(StoreError::BlobUnknown(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        if let Some((digest, size, body)) = monolithic {
            let meta = self.store.blob_put(&digest, size, body).await.map_err(digest_error)?;
            self.store.blob_link(repo, &digest).await?;
            return Ok(BlobStart::Created(meta));
        }
        Ok(BlobStart::Session(self.store.upload_start(repo).await?))
    }

    async fn session(&self, repo: &RepoName, id: &UploadId) -> Result<UploadProgress> {
        let state = self.store.upload_state(id).await?;
        if &state.repo != repo {
            return Err(StoreError::UploadRepo { id: id.as_str().to_owned(), repo: state.repo }.into());
        }
        Ok(UploadProgress { size: state.size })
    }

    /// Where a session stands.
    pub async fn upload_status(&self, repo: &RepoName, id: &UploadId) -> Result<UploadProgress> {
        self.session(repo, id).await
    }

    /// Append a chunk; `start` is the chunk's first byte from `Content-Range`, if the client sent one.
    pub async fn upload_patch(
        &self,
        repo: &RepoName,
        id: &UploadId,
        start: Option<u64>,
        body: ByteStream,
    ) -> Result<UploadProgress> {
        let current = self.session(repo, id).await?.size;
        let size = self.store.upload_append(id, start.unwrap_or(current), body).await?;
        Ok(UploadProgress { size })
    }

    /// Finish a session with an optional last chunk; the blob is committed only if it hashes to `digest`.
    pub async fn upload_finish(
        &self,
        repo: &RepoName,
        id: &UploadId,
        digest: &Digest,
        last_chunk: Option<(Option<u64>, ByteStream)>,
    ) -> Result<BlobMeta> {
        let current = self.session(repo, id).await?.size;
        if let Some((start, body)) = last_chunk {
            self.store.upload_append(id, start.unwrap_or(current), body).await?;
        }
        let meta = self.store.upload_finish(id, digest).await.map_err(digest_error)?;
        self.store.blob_link(repo, digest).await?;
        Ok(meta)
    }

    /// Abandon a session.
    pub async fn upload_cancel(&self, repo: &RepoName, id: &UploadId) -> Result<()> {
        self.session(repo, id).await?;
        Ok(self.store.upload_abort(id).await?)
    }
}

fn digest_error(e: StoreError) -> Error {
    match e {
        StoreError::DigestMismatch { expected, actual } => {
            Error::DigestInvalid(format!("uploaded content hashes to {actual}, not to the given digest {expected}"))
        }
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use oci::{MediaType, RefSpec};

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{ContentStore, StoredManifest};

    fn once(b: &'static [u8]) -> ByteStream {
        Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b))]))
    }

    async fn settle() {
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
    }

    /// Deterministic: the test holds the repository lock where the other side would, and checks that the
    /// contender cannot get past it (a task blocked on a lock cannot finish however it is scheduled).
    #[tokio::test]
    async fn a_blob_delete_and_a_manifest_push_do_not_interleave() {
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let reg = Arc::new(Registry::new(store.clone()));
        let repo: RepoName = "team/app".parse().unwrap();
        let (config, layer) = (Digest::sha256_of(b"{}"), Digest::sha256_of(b"layer"));
        for (d, b) in [(&config, once(b"{}")), (&layer, once(b"layer"))] {
            reg.upload_start(&repo, None, Some((d.clone(), None, b)), None).await.unwrap();
        }
        let manifest = Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
        ));

        // A delete is between its check and its unlink: a push waits, then finds the blob gone.
        let delete = store.repo_locks().exclusive(&repo).await;
        let push = tokio::spawn({
            let (reg, repo, manifest) = (reg.clone(), repo.clone(), manifest.clone());
            async move {
                let tag = RefSpec::Tag("v1".parse().unwrap());
                reg.manifest_put(&repo, None, &tag, Some(&MediaType::OciManifest), manifest).await
            }
        });
        settle().await;
        assert!(!push.is_finished(), "the push waits for the delete");
        assert!(store.blob_unlink(&repo, &layer).await.unwrap());
        drop(delete);
        assert!(matches!(push.await.unwrap(), Err(Error::ManifestBlobUnknown(d)) if d == layer));

        // A push is between its check and its write: a delete waits, then sees the reference and refuses.
        store.blob_link(&repo, &layer).await.unwrap();
        let push = store.repo_locks().shared(&repo).await;
        let del = tokio::spawn({
            let (reg, repo, layer) = (reg.clone(), repo.clone(), layer.clone());
            async move { reg.blob_delete(&repo, None, &layer).await }
        });
        settle().await;
        assert!(!del.is_finished(), "the delete waits for the push");
        let md = Digest::sha256_of(&manifest);
        let stored = StoredManifest { bytes: manifest, media_type: MediaType::OciManifest };
        store.manifest_put(&repo, &md, &stored, None).await.unwrap();
        drop(push);
        match del.await.unwrap() {
            Err(Error::Denied(msg)) => assert!(msg.contains(&md.to_string()), "{msg}"),
            other => panic!("expected DENIED, got {other:?}"),
        }
        assert!(store.blob_linked(&repo, &layer).await.unwrap());
        // Pushes share the lock: two at once do not wait for each other.
        let _a = store.repo_locks().shared(&repo).await;
        let _b = store.repo_locks().shared(&repo).await;
    }

    /// A manifest delete waits for a push in progress (which may be re-pushing the same digest), so the push's
    /// tag and blob references cannot be removed half-way.
    #[tokio::test]
    async fn a_manifest_delete_waits_for_a_push_in_progress() {
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let reg = Arc::new(Registry::new(store.clone()));
        let repo: RepoName = "team/app".parse().unwrap();
        let bytes = Bytes::from_static(
            br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#,
        );
        let d = Digest::sha256_of(&bytes);
        reg.manifest_put(&repo, None, &RefSpec::Digest(d.clone()), Some(&MediaType::OciIndex), bytes).await.unwrap();
        let push = store.repo_locks().shared(&repo).await;
        let del = tokio::spawn({
            let (reg, repo, d) = (reg.clone(), repo.clone(), d.clone());
            async move { reg.manifest_delete(&repo, None, &RefSpec::Digest(d)).await }
        });
        settle().await;
        assert!(!del.is_finished(), "the delete waits for the push");
        drop(push);
        del.await.unwrap().unwrap();
        assert!(store.manifest_get(&repo, &d).await.unwrap().is_none());
    }

    fn image_json(config: &Digest, layer: &Digest) -> Bytes {
        Bytes::from(format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":2}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
        ))
    }

    async fn pull_whole(reg: &Registry, repo: &RepoName, tag: &str) -> bool {
        let Ok(m) = reg.manifest_get(repo, None, &RefSpec::Tag(tag.parse().unwrap())).await else { return false };
        for d in crate::store::blob_references(&m.manifest, m.digest.algorithm()) {
            if reg.blob_open(repo, None, &d, None).await.is_err() {
                return false;
            }
        }
        true
    }

    /// A collector whose clock is two hours ahead: everything in the store is older than its grace, so only
    /// the gate's record of links made during the collection protects a blob linked after the pool listing.
    fn collector_ahead(store: &Arc<dyn ContentStore>) -> crate::gc::Collector {
        let clock: crate::store::Clock =
            Arc::new(|| std::time::SystemTime::now() + std::time::Duration::from_secs(7200));
        crate::gc::Collector::with_clock(store.clone(), None, Default::default(), clock)
    }

    fn hour_grace() -> crate::gc::GcOptions {
        crate::gc::GcOptions::new(std::time::Duration::from_secs(3600), false)
    }

    /// Deterministic: the collection stops between listing the pool and deleting; meanwhile a push links a
    /// blob that only a dead repository had (the dedup path: the bytes are already in the pool) and pushes a
    /// manifest naming it. The blob must survive and the image pull whole.
    #[tokio::test]
    async fn a_blob_linked_during_the_pool_phase_survives() {
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let reg = Arc::new(Registry::new(store.clone()));
        let (dead, fresh): (RepoName, RepoName) = ("team/dead".parse().unwrap(), "team/fresh".parse().unwrap());
        let (old_config, layer) = (Digest::sha256_of(b"[]"), Digest::sha256_of(b"layer"));
        reg.upload_start(&dead, None, Some((old_config.clone(), None, once(b"[]"))), None).await.unwrap();
        reg.upload_start(&dead, None, Some((layer.clone(), None, once(b"layer"))), None).await.unwrap();
        let old = image_json(&old_config, &layer);
        reg.manifest_put(&dead, None, &RefSpec::Digest(Digest::sha256_of(&old)), None, old).await.unwrap();

        let gc = Arc::new(collector_ahead(&store));
        let (reached, resume) = gc.pause_in_pool();
        let run = tokio::spawn({
            let gc = gc.clone();
            async move { gc.run(hour_grace()).await }
        });
        reached.notified().await;
        // The dead repository is swept: neither blob is linked anywhere, both are pool candidates.
        assert!(!store.blob_linked(&dead, &layer).await.unwrap());
        let config = Digest::sha256_of(b"{}");
        for (d, b) in [(&layer, once(b"layer")), (&config, once(b"{}"))] {
            reg.upload_start(&fresh, None, Some((d.clone(), None, b)), None).await.unwrap();
        }
        let tag = RefSpec::Tag("v1".parse().unwrap());
        reg.manifest_put(&fresh, None, &tag, None, image_json(&config, &layer)).await.unwrap();
        resume.notify_one();
        let report = run.await.unwrap().unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(store.blob_stat(&layer).await.unwrap().is_some(), "the re-linked blob survives");
        assert!(pull_whole(&reg, &fresh, "v1").await);
        assert!(store.blob_stat(&old_config).await.unwrap().is_none(), "the collection did run its pool phase");
    }

    /// Deterministic: the collection stops between a repository's mark and its sweep; a manifest push into
    /// that repository waits for the sweep, then either succeeds with every blob present or is refused.
    #[tokio::test]
    async fn a_push_during_a_repository_collection_waits_and_never_loses_blobs() {
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let reg = Arc::new(Registry::new(store.clone()));
        let repo: RepoName = "team/app".parse().unwrap();
        let (config, layer) = (Digest::sha256_of(b"{}"), Digest::sha256_of(b"layer"));
        for (d, b) in [(&config, once(b"{}")), (&layer, once(b"layer"))] {
            reg.upload_start(&repo, None, Some((d.clone(), None, b)), None).await.unwrap();
        }
        let gc = Arc::new(collector_ahead(&store));
        let (reached, resume) = gc.pause_after_repo_mark();
        let run = tokio::spawn({
            let gc = gc.clone();
            async move { gc.run(hour_grace()).await }
        });
        reached.notified().await;
        let push = tokio::spawn({
            let (reg, repo) = (reg.clone(), repo.clone());
            async move {
                let tag = RefSpec::Tag("v1".parse().unwrap());
                reg.manifest_put(&repo, None, &tag, None, image_json(&config, &layer)).await
            }
        });
        settle().await;
        assert!(!push.is_finished(), "the push waits for the repository's sweep");
        resume.notify_one();
        run.await.unwrap().unwrap();
        match push.await.unwrap() {
            Ok(_) => assert!(pull_whole(&reg, &repo, "v1").await, "an accepted manifest is whole"),
            Err(Error::ManifestBlobUnknown(_)) => {
                assert!(reg.manifest_get(&repo, None, &RefSpec::Tag("v1".parse().unwrap())).await.is_err())
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        // And the other order: a push that finished before the mark is seen and kept whole.
        for (d, b) in [(Digest::sha256_of(b"{}"), once(b"{}")), (Digest::sha256_of(b"layer"), once(b"layer"))] {
            reg.upload_start(&repo, None, Some((d, None, b)), None).await.unwrap();
        }
        let tag = RefSpec::Tag("v2".parse().unwrap());
        reg.manifest_put(&repo, None, &tag, None, image_json(&Digest::sha256_of(b"{}"), &Digest::sha256_of(b"layer")))
            .await
            .unwrap();
        gc.run(hour_grace()).await.unwrap();
        assert!(pull_whole(&reg, &repo, "v2").await);
    }

    #[test]
    fn ranges() {
        let r = |s, e| RangeRequest::From { start: s, end: e };
        assert_eq!(r(0, Some(9)).resolve(100).unwrap(), ByteRange { start: 0, end: 9 });
        assert_eq!(r(90, None).resolve(100).unwrap(), ByteRange { start: 90, end: 99 });
        assert_eq!(r(90, Some(500)).resolve(100).unwrap(), ByteRange { start: 90, end: 99 });
        assert_eq!(RangeRequest::Suffix(10).resolve(100).unwrap(), ByteRange { start: 90, end: 99 });
        assert_eq!(RangeRequest::Suffix(1000).resolve(100).unwrap(), ByteRange { start: 0, end: 99 });
        assert!(r(100, None).resolve(100).is_err());
        assert!(r(5, Some(4)).resolve(100).is_err());
        assert!(RangeRequest::Suffix(0).resolve(100).is_err());
        assert!(r(0, None).resolve(0).is_err());
    }
}
