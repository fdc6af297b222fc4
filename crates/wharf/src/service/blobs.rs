//! Blob reads, deletes and uploads (monolithic, chunked, cross-repository mount).

use oci::{Digest, RepoName};

use super::{Error, Registry, Result};
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
        match self.route(repo, ns)? {
            Route::Hosted(r) => self.hosted_blob_stat(&r, digest).await,
            Route::Mirror(m) => self.mirrored_blob_stat(&m, digest).await,
            Route::HostedOrMirror(r, m) => match self.hosted_blob_stat(&r, digest).await {
                Err(Error::BlobUnknown { .. }) => self.mirrored_blob_stat(&m, digest).await,
                other => other,
            },
        }
    }

    async fn hosted_blob_stat(&self, repo: &RepoName, digest: &Digest) -> Result<BlobMeta> {
        let unknown = || Error::BlobUnknown { repo: repo.clone(), digest: digest.clone() };
        if !self.store.blob_linked(repo, digest).await? {
            return Err(unknown());
        }
        self.store.blob_stat(digest).await?.ok_or_else(unknown)
    }

    async fn mirrored_blob_stat(&self, m: &MirrorRoute, digest: &Digest) -> Result<BlobMeta> {
        let mirror = self.mirror.as_ref().expect("mirror routes exist only with a mirror");
        match mirror.blob(m, digest, true, false).await? {
            Some(MirrorBlob::Head { size }) => Ok(BlobMeta { digest: digest.clone(), size }),
            Some(_) => self.hosted_blob_stat(&m.local, digest).await,
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
        match self.route(repo, ns)? {
            Route::Hosted(r) => self.hosted_blob_open(&r, digest, range).await,
            Route::Mirror(m) => self.mirrored_blob_open(&m, digest, range).await,
            Route::HostedOrMirror(r, m) => match self.hosted_blob_open(&r, digest, range).await {
                Err(Error::BlobUnknown { .. }) => self.mirrored_blob_open(&m, digest, range).await,
                other => other,
            },
        }
    }

    async fn hosted_blob_open(
        &self,
        repo: &RepoName,
        digest: &Digest,
        range: Option<RangeRequest>,
    ) -> Result<BlobReader> {
        let meta = self.hosted_blob_stat(repo, digest).await?;
        let range = range.map(|r| r.resolve(meta.size)).transpose()?;
        self.store
            .blob_open(digest, range)
            .await?
            .ok_or_else(|| Error::BlobUnknown { repo: repo.clone(), digest: digest.clone() })
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

    /// Remove a blob from a repository (the shared bytes stay until garbage collection).
    pub async fn blob_delete(&self, repo: &RepoName, ns: Option<&str>, digest: &Digest) -> Result<()> {
        let repo = &self.writable(repo, ns)?;
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
                    self.store.blob_link(repo, &digest).await?;
                    return Ok(BlobStart::Created(meta));
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
    use super::*;

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
