//! An in-memory store: the second back-end that keeps the [`ContentStore`] contract honest (the shared test
//! suite runs against it) and a quick fixture for service tests. Not for production: nothing survives a restart.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use oci::{Descriptor, Digest, Digester, RepoName, Tag};

use super::{
    BlobMeta, BlobReader, ByteRange, ByteStream, ContentStore, Page, StoreError, StoredManifest, UploadId, UploadState,
};

#[derive(Default)]
struct Repo {
    blobs: std::collections::HashSet<Digest>,
    manifests: HashMap<Digest, StoredManifest>,
    tags: BTreeMap<String, Digest>,
    referrers: HashMap<Digest, BTreeMap<Digest, Descriptor>>,
}

#[derive(Default)]
struct Inner {
    blobs: HashMap<Digest, Bytes>,
    uploads: HashMap<String, (RepoName, BytesMut)>,
    repos: BTreeMap<String, Repo>,
    meta: BTreeMap<String, Bytes>,
}

/// In-memory [`ContentStore`].
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> T) -> T {
        f(&mut self.inner.lock().expect("memory store lock"))
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
        self.with(|i| i.blobs.insert(expected.clone(), buf.freeze()));
        Ok(meta)
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|i| i.blobs.remove(digest).is_some()))
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        self.with(|i| i.repos.entry(repo.to_string()).or_default().blobs.insert(digest.clone()));
        Ok(())
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|i| i.repos.get(repo.as_str()).is_some_and(|r| r.blobs.contains(digest))))
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.with(|i| i.repos.get_mut(repo.as_str()).is_some_and(|r| r.blobs.remove(digest))))
    }

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadId, StoreError> {
        let id = UploadId::random();
        self.with(|i| i.uploads.insert(id.as_str().to_owned(), (repo.clone(), BytesMut::new())));
        Ok(id)
    }

    async fn upload_state(&self, id: &UploadId) -> Result<UploadState, StoreError> {
        self.with(|i| {
            i.uploads.get(id.as_str()).map(|(repo, b)| UploadState { repo: repo.clone(), size: b.len() as u64 })
        })
        .ok_or_else(|| StoreError::UploadUnknown(id.as_str().to_owned()))
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64, StoreError> {
        let current = self.upload_state(id).await?.size;
        if offset != current {
            return Err(StoreError::UploadOffset { given: offset, current });
        }
        let mut chunk = BytesMut::new();
        collect(body, &mut chunk).await?;
        self.with(|i| match i.uploads.get_mut(id.as_str()) {
            Some((_, b)) => {
                b.extend_from_slice(&chunk);
                Ok(b.len() as u64)
            }
            None => Err(StoreError::UploadUnknown(id.as_str().to_owned())),
        })
    }

    async fn upload_finish(&self, id: &UploadId, expected: &Digest) -> Result<BlobMeta, StoreError> {
        let (_, bytes) = self
            .with(|i| i.uploads.remove(id.as_str()))
            .ok_or_else(|| StoreError::UploadUnknown(id.as_str().to_owned()))?;
        let meta = verify(expected, None, &bytes)?;
        self.with(|i| i.blobs.insert(expected.clone(), bytes.freeze()));
        Ok(meta)
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<(), StoreError> {
        self.with(|i| i.uploads.remove(id.as_str()))
            .map(drop)
            .ok_or_else(|| StoreError::UploadUnknown(id.as_str().to_owned()))
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
        self.with(|i| {
            let r = i.repos.entry(repo.to_string()).or_default();
            r.manifests.insert(digest.clone(), manifest.clone());
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
            let r = i.repos.get(repo.as_str()).filter(|r| !r.manifests.is_empty() || !r.tags.is_empty())?;
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

    async fn meta_list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let p = format!("{prefix}/");
        Ok(self.with(|i| {
            i.meta.keys().filter(|k| k.strip_prefix(&p).is_some_and(|rest| !rest.contains('/'))).cloned().collect()
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
        crate::store::testsuite::run_all(|| Arc::new(MemoryStore::new()) as Arc<dyn ContentStore>).await;
    }
}
