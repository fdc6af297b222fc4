//! The content store: registry semantics (blobs, upload sessions, manifests, tags, referrers) over a storage
//! back-end. All durable state lives here, so several Wharf processes over one store stay consistent.
//!
//! May import: `oci`, std, tokio, bytes/futures. Must not import: `api`, `service`, `upstream`, axum.
//! Every write hashes while it streams and becomes visible only after the digest and size check.

pub mod fs;
pub mod keys;
pub mod memory;
#[cfg(test)]
pub mod testsuite;

use std::pin::Pin;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::Stream;
use oci::{Descriptor, Digest, MediaType, RepoName, Tag};

/// A stream of body bytes flowing into or out of the store.
pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// What the store knows about a committed blob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobMeta {
    /// Content digest (verified at write time).
    pub digest: Digest,
    /// Size in bytes.
    pub size: u64,
}

/// An inclusive byte range, already checked against the blob size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ByteRange {
    /// First byte.
    pub start: u64,
    /// Last byte (inclusive).
    pub end: u64,
}

impl ByteRange {
    /// Number of bytes in the range.
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }

    /// Never true for a checked range; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// An open blob: its metadata and a stream of the requested bytes.
pub struct BlobReader {
    /// The whole blob's metadata.
    pub meta: BlobMeta,
    /// The range being streamed, if partial.
    pub range: Option<ByteRange>,
    /// The bytes.
    pub body: ByteStream,
}

/// A manifest as stored: exact bytes plus the media type it was pushed with.
#[derive(Clone, Debug)]
pub struct StoredManifest {
    /// Exact bytes.
    pub bytes: Bytes,
    /// Media type recorded at push time.
    pub media_type: MediaType,
}

/// Identifier of an upload session (opaque to clients).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UploadId(String);

impl UploadId {
    /// A fresh random id.
    pub fn random() -> UploadId {
        let mut b = [0u8; 16];
        getrandom::getrandom(&mut b).expect("the OS random source is available");
        UploadId(hex::encode(b))
    }

    /// Parse an id from a URL; only ids of our own shape are accepted, so they are safe as path components.
    pub fn parse(s: &str) -> Option<UploadId> {
        (s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()))
            .then(|| UploadId(s.to_owned()))
    }

    /// The id as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// State of an upload session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadState {
    /// Repository the upload was started in.
    pub repo: RepoName,
    /// Bytes received so far.
    pub size: u64,
}

/// Errors from the content store. Callers map them to wire codes in one place (`api::errors`).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The content does not hash to the digest it was announced under.
    #[error("content digest {actual} does not match the expected {expected}")]
    DigestMismatch {
        /// What the client claimed.
        expected: Digest,
        /// What the bytes hash to.
        actual: Digest,
    },
    /// The content's length differs from the announced size.
    #[error("content size {actual} does not match the expected {expected}")]
    SizeMismatch {
        /// What was announced.
        expected: u64,
        /// What arrived.
        actual: u64,
    },
    /// No such upload session.
    #[error("upload session {0} is unknown")]
    UploadUnknown(String),
    /// The upload session belongs to another repository.
    #[error("upload session {id} belongs to repository {repo}")]
    UploadRepo {
        /// Session id.
        id: String,
        /// Its repository.
        repo: RepoName,
    },
    /// A chunk did not start where the previous one ended.
    #[error("chunk starts at byte {given} but the upload has {current} bytes")]
    UploadOffset {
        /// Start offset of the chunk.
        given: u64,
        /// Bytes received so far.
        current: u64,
    },
    /// The blob is not in the store.
    #[error("blob {0} is unknown")]
    BlobUnknown(Digest),
    /// A body ended early or failed while it was streamed in.
    #[error("request body failed: {0}")]
    Body(std::io::Error),
    /// The back-end failed.
    #[error("storage I/O error at {path}: {source}")]
    Io {
        /// Key or path being accessed.
        path: String,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Stored data could not be decoded (a bug or outside tampering).
    #[error("stored object {0} is corrupt: {1}")]
    Corrupt(String, String),
}

/// One page of a listing plus whether more follow.
pub type Page<T> = Vec<T>;

/// Registry semantics over a storage back-end. Blobs are global and content-addressed; manifests, tags,
/// blob links and referrers are per repository.
#[async_trait]
pub trait ContentStore: Send + Sync + 'static {
    // --- blobs (global pool) ---
    /// Size of a committed blob, if present.
    async fn blob_stat(&self, digest: &Digest) -> Result<Option<BlobMeta>, StoreError>;
    /// Open a committed blob, optionally for a range already validated against its size.
    async fn blob_open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Option<BlobReader>, StoreError>;
    /// Stream bytes in; commit them under `expected` only if they hash to it (and have `size`, when known).
    async fn blob_put(&self, expected: &Digest, size: Option<u64>, body: ByteStream) -> Result<BlobMeta, StoreError>;
    /// Take over a local file (e.g. a mirror's spool file) as the blob `expected`, verifying it first. The
    /// file is consumed: moved where the back-end can, copied otherwise.
    async fn blob_import(&self, expected: &Digest, path: &std::path::Path) -> Result<BlobMeta, StoreError> {
        let file = tokio::fs::File::open(path)
            .await
            .map_err(|source| StoreError::Io { path: path.display().to_string(), source })?;
        let body: ByteStream = Box::pin(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024));
        let meta = self.blob_put(expected, None, body).await;
        let _ = tokio::fs::remove_file(path).await;
        meta
    }
    /// Remove a blob from the global pool.
    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StoreError>;

    // --- per-repository blob links (visibility) ---
    /// Make a committed blob visible in a repository.
    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError>;
    /// Whether the blob is visible in the repository.
    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;
    /// Hide a blob from a repository; returns whether it was linked.
    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;

    // --- upload sessions ---
    /// Start a session in a repository.
    async fn upload_start(&self, repo: &RepoName) -> Result<UploadId, StoreError>;
    /// Current state of a session.
    async fn upload_state(&self, id: &UploadId) -> Result<UploadState, StoreError>;
    /// Append a chunk that must start at `offset`; returns the new size.
    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64, StoreError>;
    /// Verify the session's bytes against `expected` and commit them as a blob; the session ends.
    async fn upload_finish(&self, id: &UploadId, expected: &Digest) -> Result<BlobMeta, StoreError>;
    /// Drop a session and its bytes.
    async fn upload_abort(&self, id: &UploadId) -> Result<(), StoreError>;

    // --- manifests, referrers ---
    /// A manifest stored in the repository.
    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StoreError>;
    /// Store exact manifest bytes; records the referrer link when `subject` is given.
    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
        referrer: Option<(&Digest, &Descriptor)>,
    ) -> Result<(), StoreError>;
    /// Remove a manifest (and its referrer entry, and the tags pointing at it); returns whether it existed.
    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;
    /// Descriptors of the manifests whose subject is `subject`.
    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StoreError>;

    // --- tags and listings ---
    /// The digest a tag points at.
    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StoreError>;
    /// Point a tag at a digest.
    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StoreError>;
    /// Remove a tag; returns whether it existed.
    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError>;
    /// Tags in lexical order after `after`, at most `limit`. `None` when the repository has no content at all.
    async fn tag_list(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page<Tag>>, StoreError>;
    /// Repositories in lexical order after `after`, at most `limit`.
    async fn repo_list(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError>;

    // --- small documents beside the content (sync reports, tag history, pins) ---
    /// A document by key (`/`-separated segments, see [`valid_meta_key`]).
    async fn meta_get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// Write a document atomically.
    async fn meta_put(&self, key: &str, value: Bytes) -> Result<(), StoreError>;
    /// Keys directly under `prefix/`, sorted.
    async fn meta_list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
}

/// Meta keys: non-empty segments of `[A-Za-z0-9._:@-]`, never `.` or `..`, so they are safe as paths.
pub fn valid_meta_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.starts_with('.')
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@-".contains(&b))
        })
}

/// `Ok` for a valid meta key, the store error every back-end returns otherwise.
fn check_meta_key(key: &str) -> Result<(), StoreError> {
    if valid_meta_key(key) {
        Ok(())
    } else {
        Err(StoreError::Corrupt(key.to_owned(), "invalid meta key".into()))
    }
}
