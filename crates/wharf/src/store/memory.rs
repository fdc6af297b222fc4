//! An in-memory store: the second back-end that keeps the [`ContentStore`] contract honest (the shared test
//! suite runs against it) and a quick fixture for service tests. Not for production: nothing survives a restart.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use oci::{Descriptor, Digest, Digester, RepoName, Tag};

use super::{
    BlobMeta, BlobReader, ByteRange, ByteStream, ContentStore, GcGate, LinkEntry, ManifestEntry, Page, PoolEntry,
    RepoLocks, StoreError, StoredManifest, SweepReport, UploadId, UploadLimits, UploadState,
};

#[derive(Default)]
struct Repo {
    blobs: std::collections::HashSet<Digest>,
    manifests: HashMap<Digest, StoredManifest>,
    tags: BTreeMap<String, Digest>,
    referrers: HashMap<Digest, BTreeMap<Digest, Descriptor>>,
    /// blob → manifests here that reference it.
    refs: HashMap<Digest, BTreeSet<Digest>>,
    /// When each link was last made (the garbage collector's grace).
    link_times: HashMap<Digest, SystemTime>,
    /// When each manifest was last written.
    manifest_times: HashMap<Digest, SystemTime>,
}

/// An upload session: repository, bytes so far, last activity.
struct Session {
    repo: RepoName,
    bytes: BytesMut,
    last: SystemTime,
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<Digest, Bytes>,
    /// When each pool blob was committed or last linked.
    blob_times: HashMap<Digest, SystemTime>,
    uploads: HashMap<String, Session>,
    repos: BTreeMap<String, Repo>,
    meta: BTreeMap<String, Bytes>,
    /// Objects a scrub moved aside, by their quarantine name.
    quarantine: BTreeMap<String, Bytes>,
}

/// In-memory [`ContentStore`].
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
    limits: UploadLimits,
    repo_locks: RepoLocks,
    gc_gate: GcGate,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store with these upload limits.
    pub fn with_limits(limits: UploadLimits) -> Self {
        MemoryStore { limits, ..Self::default() }
    }

    /// Tests: overwrite a pool blob's bytes in place (bit rot), bypassing every check.
    #[cfg(test)]
    pub fn tamper_blob(&self, digest: &Digest, f: impl FnOnce(&mut Vec<u8>)) {
        self.with(|i| {
            let b = i.blobs.get_mut(digest).expect("blob to tamper with");
            let mut v = b.to_vec();
            f(&mut v);
            *b = Bytes::from(v);
        })
    }

    /// Tests: overwrite a stored manifest's bytes in place.
    #[cfg(test)]
    pub fn tamper_manifest(&self, repo: &RepoName, digest: &Digest, f: impl FnOnce(&mut Vec<u8>)) {
        self.with(|i| {
            let m = i.repos.get_mut(repo.as_str()).and_then(|r| r.manifests.get_mut(digest)).expect("manifest");
            let mut v = m.bytes.to_vec();
            f(&mut v);
            m.bytes = Bytes::from(v);
        })
    }

    /// A live (not expired) session, or `UploadUnknown`.
    fn live<'a>(&self, i: &'a mut Inner, id: &UploadId) -> Result<&'a mut Session, StoreError> {
        match i.uploads.get_mut(id.as_str()) {
            Some(s) if !self.limits.expired(s.last) => Ok(s),
            _ => Err(StoreError::UploadUnknown(id.as_str().to_owned())),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("memory store lock"))
    }

    /// The store's clock (the upload limits' one, so tests age content without sleeping).
    fn now(&self) -> SystemTime {
        (self.limits.clock)()
    }

    /// Whether a repository holds anything (a blob link, a manifest or a tag).
    fn has_content(r: &Repo) -> bool {
        !r.blobs.is_empty() || !r.manifests.is_empty() || !r.tags.is_empty()
    }
}

async fn collect(mut body: ByteStream, into: &mut BytesMut) -> Result<(), StoreError> {
    while let Some(chunk) = body.next().await {
        into.extend_from_slice(&chunk.map_err(StoreError::Body)?);
    }
    Ok(())
}

fn verify(expected: &Digest, size: Option<u64>, bytes: &[u8]) -> Result<BlobMeta, StoreError> {
    let mut h = Digester::new(expected.algorithm());
    h.update(bytes);
    let actual = h.finish();
    if &actual != expected {
        return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
    }
    if let Some(s) = size.filter(|s| *s != bytes.len() as u64) {
        return Err(StoreError::SizeMismatch { expected: s, actual: bytes.len() as u64 });
    }
    Ok(BlobMeta { digest: actual, size: bytes.len() as u64 })
}

#[async_trait]
impl ContentStore for MemoryStore {
    async fn blob_stat(&self, digest: &Digest) -> Result<Option<BlobMeta>, StoreError> {
        Ok(self.with(|i| i.blobs.get(digest).map(|b| BlobMeta { digest: digest.clone(), size: b.len() as u64 })))
    }

    async fn blob_open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Option<BlobReader>, StoreError> {
        let Some(bytes) = self.with(|i| i.blobs.get(digest).cloned()) else { return Ok(None) };
        let meta = BlobMeta { digest: digest.clone(), size: bytes.len() as u64 };
        let part = match range {
            Some(r) => bytes.slice(r.start as usize..=r.end as usize),
            None => bytes,
        };
        Ok(Some(BlobReader { meta, range, body: Box::pin(futures_util::stream::once(async move { Ok(part) })) }))
    }

    async fn blob_put(&self, expected: &Digest, size: Option<u64>, body: ByteStream) -> Result<BlobMeta, StoreError> {
        let mut buf = BytesMut::new();
        collect(body, &mut buf).await?;
        let meta = verify(expected, size, &buf)?;
        let now = self.now();
        self.with(|i| {
            i.blobs.insert(expected.clone(), buf.freeze());
            i.blob_times.insert(expected.clone(), now);
        });
        Ok(meta)
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|i| {
            i.blob_times.remove(digest);
            i.blobs.remove(digest).is_some()
        }))
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        let guard = self.gc_gate.link().await;
        guard.record(digest);
        let now = self.now();
        self.with(|i| {
            if !i.blobs.contains_key(digest) {
                return Err(StoreError::BlobUnknown(digest.clone()));
            }
            i.blob_times.insert(digest.clone(), now);
            let r = i.repos.entry(repo.to_string()).or_default();
            r.blobs.insert(digest.clone());
            r.link_times.insert(digest.clone(), now);
            Ok(())
        })
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|i| i.repos.get(repo.as_str()).is_some_and(|r| r.blobs.contains(digest))))
    }

    async fn blob_seen(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        let now = self.now();
        Ok(self.with(|i| {
            let Some(r) = i.repos.get_mut(repo.as_str()).filter(|r| r.blobs.contains(digest)) else { return false };
            let t = r.link_times.entry(digest.clone()).or_insert(now);
            if now.duration_since(*t).is_ok_and(|age| age > super::LINK_REFRESH) {
                *t = now;
            }
            true
        }))
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|i| {
            i.repos.get_mut(repo.as_str()).is_some_and(|r| {
                r.link_times.remove(digest);
                r.blobs.remove(digest)
            })
        }))
    }

    async fn blob_referenced_by(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Digest>, StoreError> {
        Ok(self.with(|i| {
            i.repos.get(repo.as_str()).and_then(|r| r.refs.get(digest)).and_then(|m| m.iter().next().cloned())
        }))
    }

    fn repo_locks(&self) -> &RepoLocks {
        &self.repo_locks
    }

    fn gc_gate(&self) -> &GcGate {
        &self.gc_gate
    }

    async fn repo_list_all(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError> {
        Ok(self.with(|i| {
            i.repos
                .iter()
                .filter(|(n, r)| after.is_none_or(|a| n.as_str() > a) && Self::has_content(r))
                .take(limit)
                .filter_map(|(n, _)| n.parse().ok())
                .collect()
        }))
    }

    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<ManifestEntry>, StoreError> {
        let now = self.now();
        Ok(self.with(|i| {
            let Some(r) = i.repos.get(repo.as_str()) else { return Vec::new() };
            let mut out: Vec<ManifestEntry> = r
                .manifests
                .keys()
                .map(|d| ManifestEntry { digest: d.clone(), modified: r.manifest_times.get(d).copied().unwrap_or(now) })
                .collect();
            out.sort_by(|a, b| a.digest.cmp(&b.digest));
            out
        }))
    }

    async fn blob_link_list(&self, repo: &RepoName) -> Result<Vec<LinkEntry>, StoreError> {
        let now = self.now();
        Ok(self.with(|i| {
            let Some(r) = i.repos.get(repo.as_str()) else { return Vec::new() };
            let mut out: Vec<LinkEntry> = r
                .blobs
                .iter()
                .map(|d| LinkEntry { digest: d.clone(), modified: r.link_times.get(d).copied().unwrap_or(now) })
                .collect();
            out.sort_by(|a, b| a.digest.cmp(&b.digest));
            out
        }))
    }

    async fn pool_list(&self, shard: u8) -> Result<Vec<PoolEntry>, StoreError> {
        let prefix = super::shard_name(shard);
        let now = self.now();
        Ok(self.with(|i| {
            let mut out: Vec<PoolEntry> = i
                .blobs
                .iter()
                .filter(|(d, _)| d.hex().starts_with(&prefix))
                .map(|(d, b)| PoolEntry {
                    digest: d.clone(),
                    size: b.len() as u64,
                    modified: i.blob_times.get(d).copied().unwrap_or(now),
                })
                .collect();
            out.sort_by(|a, b| a.digest.cmp(&b.digest));
            out
        }))
    }

    async fn pool_delete_if_older(&self, digest: &Digest, cutoff: SystemTime) -> Result<Option<u64>, StoreError> {
        Ok(self.with(|i| {
            let t = i.blob_times.get(digest).copied()?;
            if t > cutoff {
                return None;
            }
            i.blob_times.remove(digest);
            i.blobs.remove(digest).map(|b| b.len() as u64)
        }))
    }

    async fn blob_quarantine(&self, digest: &Digest, batch: &str) -> Result<Option<String>, StoreError> {
        Ok(self.with(|i| {
            i.blob_times.remove(digest);
            let bytes = i.blobs.remove(digest)?;
            let name = format!("quarantine/{batch}/blobs/{}-{}", digest.algorithm(), digest.hex());
            i.quarantine.insert(name.clone(), bytes);
            Some(name)
        }))
    }

    async fn manifest_quarantine(
        &self,
        repo: &RepoName,
        digest: &Digest,
        batch: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self.with(|i| {
            let r = i.repos.get_mut(repo.as_str())?;
            let m = r.manifests.remove(digest)?;
            r.manifest_times.remove(digest);
            for refs in r.referrers.values_mut() {
                refs.remove(digest);
            }
            let name = format!("quarantine/{batch}/repos/{repo}/{}-{}", digest.algorithm(), digest.hex());
            i.quarantine.insert(name.clone(), m.bytes);
            Some(name)
        }))
    }

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadId, StoreError> {
        let id = UploadId::random();
        let now = (self.limits.clock)();
        self.with(|i| {
            let limit = self.limits.max_open;
            if i.uploads.len() >= limit {
                i.uploads.retain(|_, s| !self.limits.expired(s.last));
            }
            if i.uploads.len() >= limit {
                return Err(StoreError::TooManyUploads { open: i.uploads.len(), limit });
            }
            let session = Session { repo: repo.clone(), bytes: BytesMut::new(), last: now };
            i.uploads.insert(id.as_str().to_owned(), session);
            Ok(())
        })?;
        Ok(id)
    }

    async fn upload_state(&self, id: &UploadId) -> Result<UploadState, StoreError> {
        self.with(|i| self.live(i, id).map(|s| UploadState { repo: s.repo.clone(), size: s.bytes.len() as u64 }))
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64, StoreError> {
        let current = self.upload_state(id).await?.size;
        if offset != current {
            return Err(StoreError::UploadOffset { given: offset, current });
        }
        let mut chunk = BytesMut::new();
        collect(body, &mut chunk).await?;
        let now = (self.limits.clock)();
        self.with(|i| {
            let s = self.live(i, id)?;
            s.bytes.extend_from_slice(&chunk);
            s.last = now;
            Ok(s.bytes.len() as u64)
        })
    }

    async fn upload_finish(&self, id: &UploadId, expected: &Digest) -> Result<BlobMeta, StoreError> {
        let bytes = self.with(|i| {
            self.live(i, id)?;
            Ok::<_, StoreError>(i.uploads.remove(id.as_str()).map(|s| s.bytes).unwrap_or_default())
        })?;
        let meta = verify(expected, None, &bytes)?;
        let now = self.now();
        self.with(|i| {
            i.blobs.insert(expected.clone(), bytes.freeze());
            i.blob_times.insert(expected.clone(), now);
        });
        Ok(meta)
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<(), StoreError> {
        self.with(|i| {
            self.live(i, id)?;
            i.uploads.remove(id.as_str());
            Ok(())
        })
    }

    async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let uploads = self.with(|i| {
            let before = i.uploads.len();
            i.uploads.retain(|_, s| !self.limits.expired(s.last));
            before - i.uploads.len()
        });
        Ok(SweepReport { uploads, scratch: 0 })
    }

    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StoreError> {
        Ok(self.with(|i| i.repos.get(repo.as_str()).and_then(|r| r.manifests.get(digest).cloned())))
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
        referrer: Option<(&Digest, &Descriptor)>,
    ) -> Result<(), StoreError> {
        let blobs = super::blob_references(manifest, digest.algorithm());
        let now = self.now();
        self.with(|i| {
            let r = i.repos.entry(repo.to_string()).or_default();
            for b in blobs {
                r.refs.entry(b).or_default().insert(digest.clone());
            }
            r.manifests.insert(digest.clone(), manifest.clone());
            r.manifest_times.insert(digest.clone(), now);
            if let Some((subject, desc)) = referrer {
                r.referrers.entry(subject.clone()).or_default().insert(digest.clone(), desc.clone());
            }
        });
        Ok(())
    }

    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|i| {
            let Some(r) = i.repos.get_mut(repo.as_str()) else { return false };
            r.tags.retain(|_, d| d != digest);
            for refs in r.referrers.values_mut() {
                refs.remove(digest);
            }
            for users in r.refs.values_mut() {
                users.remove(digest);
            }
            r.refs.retain(|_, users| !users.is_empty());
            r.manifest_times.remove(digest);
            r.manifests.remove(digest).is_some()
        }))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        Ok(self.with(|i| {
            i.repos
                .get(repo.as_str())
                .and_then(|r| r.referrers.get(subject))
                .map(|m| m.values().cloned().collect())
                .unwrap_or_default()
        }))
    }

    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StoreError> {
        Ok(self.with(|i| i.repos.get(repo.as_str()).and_then(|r| r.tags.get(tag.as_str()).cloned())))
    }

    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StoreError> {
        self.with(|i| i.repos.entry(repo.to_string()).or_default().tags.insert(tag.to_string(), digest.clone()));
        Ok(())
    }

    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        Ok(self.with(|i| i.repos.get_mut(repo.as_str()).is_some_and(|r| r.tags.remove(tag.as_str()).is_some())))
    }

    async fn tag_list(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page<Tag>>, StoreError> {
        Ok(self.with(|i| {
            let r = i
                .repos
                .get(repo.as_str())
                .filter(|r| !r.blobs.is_empty() || !r.manifests.is_empty() || !r.tags.is_empty())?;
            Some(
                r.tags
                    .keys()
                    .filter(|t| after.is_none_or(|a| t.as_str() > a))
                    .take(limit)
                    .filter_map(|t| t.parse().ok())
                    .collect(),
            )
        }))
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        super::check_meta_key(key)?;
        Ok(self.with(|i| i.meta.get(key).cloned()))
    }

    async fn meta_put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        super::check_meta_key(key)?;
        self.with(|i| i.meta.insert(key.to_owned(), value));
        Ok(())
    }

    async fn meta_delete(&self, key: &str) -> Result<bool, StoreError> {
        super::check_meta_key(key)?;
        Ok(self.with(|i| i.meta.remove(key).is_some()))
    }

    async fn meta_list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = format!("{prefix}/");
        Ok(self.with(|i| {
            i.meta.keys().filter(|k| k.strip_prefix(&p).is_some_and(|rest| !rest.contains('/'))).cloned().collect()
        }))
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        Ok(self.with(|i| {
            i.repos
                .get(repo.as_str())
                .is_some_and(|r| !r.blobs.is_empty() || !r.manifests.is_empty() || !r.tags.is_empty())
        }))
    }

    async fn repo_list(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError> {
        Ok(self.with(|i| {
            i.repos
                .iter()
                .filter(|(n, r)| {
                    after.is_none_or(|a| n.as_str() > a) && (!r.manifests.is_empty() || !r.tags.is_empty())
                })
                .take(limit)
                .filter_map(|(n, _)| n.parse().ok())
                .collect()
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn conformance() {
        crate::store::testsuite::run_all(|limits| Arc::new(MemoryStore::with_limits(limits)) as Arc<dyn ContentStore>)
            .await;
    }
}
