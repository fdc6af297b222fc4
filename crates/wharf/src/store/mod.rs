//! The content store: registry semantics (blobs, upload sessions, manifests, tags, referrers) over a storage
//! back-end. All durable state lives here, so several Wharf processes over one store stay consistent.
//!
//! May import: `oci`, std, tokio, bytes/futures. Must not import: `api`, `service`, `upstream`, axum.
//! Every write hashes while it streams and becomes visible only after the digest and size check.

pub mod fs;
pub mod keys;
pub mod lease;
pub mod memory;
pub mod s3;
pub mod scratch;
#[cfg(test)]
pub mod testsuite;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use oci::{Descriptor, Digest, Manifest, MediaType, RepoName, Tag};

/// A stream of body bytes flowing into or out of the store (defined once, in [`crate::stream`]).
pub use crate::stream::ByteStream;

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

impl From<&Manifest> for StoredManifest {
    /// What the store keeps of a parsed manifest: its exact bytes and media type (never a re-serialisation).
    fn from(m: &Manifest) -> StoredManifest {
        StoredManifest { bytes: m.bytes.clone(), media_type: m.media_type.clone() }
    }
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
    /// The cap on open upload sessions is reached; the client should retry after others finish or expire.
    #[error("{open} upload sessions are open, the limit is {limit}: finish or cancel some, or retry later")]
    TooManyUploads {
        /// Sessions open now.
        open: usize,
        /// The configured cap (`[storage] max_uploads`).
        limit: usize,
    },
    /// A write on a store opened read-only (`wharf sync status`): a bug in the caller.
    #[error("the store at {0} is open read-only")]
    ReadOnly(String),
}

/// Reads the time; injectable so tests can age upload sessions without sleeping.
pub type Clock = Arc<dyn Fn() -> SystemTime + Send + Sync>;

/// Bounds on upload sessions: a client that starts uploads and walks away must not fill the disk or the
/// session table.
#[derive(Clone)]
pub struct UploadLimits {
    /// A session idle (no bytes received) this long is gone: requests get `BLOB_UPLOAD_UNKNOWN` and the sweeper
    /// removes its bytes.
    pub expiry: Duration,
    /// Most sessions open at once; one more is refused with [`StoreError::TooManyUploads`].
    pub max_open: usize,
    /// The time source for expiry.
    pub clock: Clock,
}

/// Default idle time after which an upload session expires (by last activity).
pub const DEFAULT_UPLOAD_EXPIRY: Duration = Duration::from_secs(24 * 3600);
/// Default cap on open upload sessions.
pub const DEFAULT_MAX_UPLOADS: usize = 1000;

impl Default for UploadLimits {
    fn default() -> Self {
        UploadLimits { expiry: DEFAULT_UPLOAD_EXPIRY, max_open: DEFAULT_MAX_UPLOADS, clock: Arc::new(SystemTime::now) }
    }
}

impl std::fmt::Debug for UploadLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadLimits").field("expiry", &self.expiry).field("max_open", &self.max_open).finish()
    }
}

impl UploadLimits {
    /// Whether a session last active at `last` has expired by now.
    pub fn expired(&self, last: SystemTime) -> bool {
        (self.clock)().duration_since(last).is_ok_and(|idle| idle > self.expiry)
    }
}

/// What a sweep removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Expired upload sessions removed (with their bytes).
    pub uploads: usize,
    /// Scratch folders or files of processes that are gone.
    pub scratch: usize,
}

/// Per-repository locks that order a manifest push against a blob delete in the same repository (in this
/// process). Pushes share the lock, so they never wait for each other; a blob delete takes it alone, so it
/// sees either no manifest or the manifest with its references recorded, never half of a push.
///
/// Other processes on the same data directory (`wharf sync`) write only to mirrored namespaces, where blob
/// deletes are refused, so a process-local lock is enough for deletes. The scheduled garbage collection in
/// `serve` takes it exclusive per repository too; a `wharf gc` in another process relies on file times and
/// re-checks instead (docs/ARCHITECTURE.md, "Garbage collection").
#[derive(Default)]
pub struct RepoLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::RwLock<()>>>>,
}

/// Held while a repository write that must not interleave is in progress.
pub enum RepoGuard {
    /// A manifest push (many at once).
    Shared(#[allow(dead_code)] tokio::sync::OwnedRwLockReadGuard<()>),
    /// A blob delete (alone).
    Exclusive(#[allow(dead_code)] tokio::sync::OwnedRwLockWriteGuard<()>),
}

impl RepoLocks {
    fn lock_for(&self, repo: &RepoName) -> Arc<tokio::sync::RwLock<()>> {
        let mut map = self.locks.lock().expect("repo lock table");
        if let Some(l) = map.get(repo.as_str()).and_then(Weak::upgrade) {
            return l;
        }
        if map.len() >= 1024 {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let l = Arc::new(tokio::sync::RwLock::new(()));
        map.insert(repo.as_str().to_owned(), Arc::downgrade(&l));
        l
    }

    /// Lock for a write that adds references (manifest push); shared with other such writes.
    pub async fn shared(&self, repo: &RepoName) -> RepoGuard {
        RepoGuard::Shared(self.lock_for(repo).read_owned().await)
    }

    /// Lock for a write that must see every reference (blob delete); waits for pushes in flight.
    pub async fn exclusive(&self, repo: &RepoName) -> RepoGuard {
        RepoGuard::Exclusive(self.lock_for(repo).write_owned().await)
    }
}

/// The most digests [`GcGate`] records during one collection. A collection that sees more links created while
/// it runs than this (a huge concurrent import) cannot be sure of its pool candidates and skips its pool phase.
pub const GC_RECORD_LIMIT: usize = 100_000;

/// What the link paths and the garbage collector's pool sweep share, so a link made while a collection runs is
/// never to a blob the collection then deletes (in this process; other processes are covered by mtimes).
///
/// Link paths ([`ContentStore::blob_link`]) hold the gate *shared* around "the pool blob exists → refresh its
/// mtime → write the link", and record the digest while a collection is active. The pool sweep holds it
/// *exclusive* while it re-checks a batch of candidates against the recorded digests and deletes them. So a
/// link either finished before the batch (recorded: the candidate is kept) or starts after it (the blob is
/// gone: the link fails with `BlobUnknown`, never dangles).
#[derive(Default)]
pub struct GcGate {
    gate: tokio::sync::RwLock<()>,
    /// `Some` while a collection runs: digests linked since it began; `None` in the set means it overflowed.
    recorded: Mutex<Option<Recorded>>,
}

/// Digests linked while a collection runs.
#[derive(Default)]
struct Recorded {
    digests: std::collections::HashSet<Digest>,
    overflowed: bool,
    /// Collections running (one per data directory normally; counted so an overlapping one cannot end another's
    /// recording).
    collections: usize,
}

/// Held by a link path while it checks a pool blob and writes a link.
pub struct LinkGuard<'a> {
    gate: &'a GcGate,
    _guard: tokio::sync::RwLockReadGuard<'a, ()>,
}

impl LinkGuard<'_> {
    /// Note that `digest` is being linked (kept by an active collection's pool sweep).
    pub fn record(&self, digest: &Digest) {
        let mut rec = self.gate.recorded.lock().expect("gc gate lock");
        if let Some(r) = rec.as_mut() {
            if r.digests.len() >= GC_RECORD_LIMIT {
                r.overflowed = true;
            } else {
                r.digests.insert(digest.clone());
            }
        }
    }
}

impl GcGate {
    /// Taken by every path that links a pool blob into a repository.
    pub async fn link(&self) -> LinkGuard<'_> {
        LinkGuard { gate: self, _guard: self.gate.read().await }
    }

    /// Start recording links. Taken exclusively for a moment, so a link in progress either finished before
    /// (and its link is on disk for the collection to list) or records its digest.
    pub async fn begin(&self) {
        let _g = self.gate.write().await;
        self.recorded.lock().expect("gc gate lock").get_or_insert_with(Recorded::default).collections += 1;
    }

    /// Stop recording when the last running collection is over.
    pub fn end(&self) {
        let mut rec = self.recorded.lock().expect("gc gate lock");
        if let Some(r) = rec.as_mut() {
            r.collections = r.collections.saturating_sub(1);
            if r.collections == 0 {
                *rec = None;
            }
        }
    }

    /// Exclusive against every link path, for the pool sweep's re-check and delete of one batch.
    pub async fn sweep(&self) -> tokio::sync::RwLockWriteGuard<'_, ()> {
        self.gate.write().await
    }

    /// Whether `digest` was linked since [`GcGate::begin`]; `None` when too many links were recorded to know.
    pub fn linked_since_begin(&self, digest: &Digest) -> Option<bool> {
        let rec = self.recorded.lock().expect("gc gate lock");
        match rec.as_ref() {
            Some(r) if r.overflowed => None,
            Some(r) => Some(r.digests.contains(digest)),
            None => Some(false),
        }
    }
}

/// A stored manifest's digest and when it was last written (the garbage collector's grace is by this time).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestEntry {
    /// The manifest's digest.
    pub digest: Digest,
    /// When it was last written (file mtime on disk).
    pub modified: SystemTime,
}

/// A blob link of a repository and when it was last made or refreshed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkEntry {
    /// The linked blob.
    pub digest: Digest,
    /// When the link was last written (file mtime on disk).
    pub modified: SystemTime,
}

/// A blob of the global pool, as the garbage collector lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolEntry {
    /// The blob's digest.
    pub digest: Digest,
    /// Its size in bytes.
    pub size: u64,
    /// When it was committed or last linked (file mtime on disk).
    pub modified: SystemTime,
}

/// A link seen by a pusher is refreshed when older than this (bounds the writes a stream of `HEAD`s causes).
pub const LINK_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// Number of pool shards: blobs are listed by the first byte of their hex digest (`blobs/<algo>/<2 hex>/`).
pub const POOL_SHARDS: u16 = 256;

/// The two-hex-digit name of a pool shard.
pub fn shard_name(shard: u8) -> String {
    format!("{shard:02x}")
}

/// The blobs a manifest references (config and layers; for an index, the entries that are not manifests),
/// recorded at push so a blob delete can tell whether the repository still needs the blob. Bytes that do not
/// parse as a manifest reference nothing the store can know of.
pub fn blob_references(manifest: &StoredManifest, algo: oci::Algorithm) -> Vec<Digest> {
    let Ok(m) = oci::Manifest::parse(manifest.bytes.clone(), Some(&manifest.media_type), algo) else {
        return Vec::new();
    };
    let is_index = m.media_type.is_index();
    let mut out: Vec<Digest> =
        m.references().filter(|d| !(is_index && d.media_type.is_manifest())).map(|d| d.digest.clone()).collect();
    out.sort();
    out.dedup();
    out
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
        let meta = self.blob_put(expected, None, body).await?;
        match tokio::fs::remove_file(path).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(StoreError::Io { path: path.display().to_string(), source: e })
            }
            _ => Ok(meta),
        }
    }
    /// Remove a blob from the global pool.
    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StoreError>;
    /// A URL a client can GET the committed blob from directly for `expires` (a presigned object-store
    /// URL), or `None` when the back-end has no such thing (the blob is then streamed through Wharf).
    async fn blob_url(&self, _digest: &Digest, _expires: Duration) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    // --- per-repository blob links (visibility) ---
    /// Make a committed blob visible in a repository. Fails with `BlobUnknown` when the pool does not hold the
    /// blob (a garbage collection removed it), so no link ever names missing bytes. Refreshes the link's and
    /// the pool blob's modified times (they protect a blob whose manifest is not pushed yet for the garbage
    /// collector's grace), under the [`GcGate`] and recorded while a collection runs.
    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError>;
    /// Whether the blob is visible in the repository.
    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;
    /// Whether the blob is visible in the repository, as a pusher asks before uploading (`HEAD`): an old link
    /// is refreshed, so a push that skips the upload because the blob is here finds it still linked when its
    /// manifest arrives (the garbage collector keeps links younger than its grace). A link is refreshed at
    /// most once a minute; a read-only store only answers.
    async fn blob_seen(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;
    /// Hide a blob from a repository; returns whether it was linked.
    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;
    /// Hide many blobs from a repository at once (the garbage collector's sweep); returns how many were
    /// linked. Durable when it returns, like [`ContentStore::blob_unlink`], but a back-end may make the whole
    /// batch durable together (one directory sync instead of one per link).
    async fn blob_unlink_many(&self, repo: &RepoName, digests: &[Digest]) -> Result<u64, StoreError> {
        let mut n = 0;
        for d in digests {
            n += u64::from(self.blob_unlink(repo, d).await?);
        }
        Ok(n)
    }
    /// A manifest in the repository that references the blob (config, layer, or non-manifest index entry),
    /// if any. Recorded at `manifest_put`, so this is a lookup, not a scan of the repository's manifests.
    async fn blob_referenced_by(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Digest>, StoreError>;
    /// The per-repository locks that order manifest pushes against blob deletes.
    fn repo_locks(&self) -> &RepoLocks;
    /// The gate that orders link paths against the garbage collector's pool sweep.
    fn gc_gate(&self) -> &GcGate;

    // --- garbage collection listings (bounded: one repository or one pool shard at a time) ---
    /// Repositories with any content, blob links alone included, in lexical order after `after`, at most
    /// `limit` (the catalog's [`ContentStore::repo_list`] leaves out names holding only links).
    async fn repo_list_all(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError>;
    /// Every manifest of a repository with its modified time (digests only, never the bytes).
    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<ManifestEntry>, StoreError>;
    /// Every blob link of a repository with its modified time.
    async fn blob_link_list(&self, repo: &RepoName) -> Result<Vec<LinkEntry>, StoreError>;
    /// The pool blobs whose hex digest starts with the shard's two hex digits, every algorithm.
    async fn pool_list(&self, shard: u8) -> Result<Vec<PoolEntry>, StoreError>;
    /// Delete a pool blob only if it was last modified at or before `cutoff`, checked right before the delete
    /// (another process may have linked it meanwhile, refreshing its time). Returns the freed size.
    async fn pool_delete_if_older(&self, digest: &Digest, cutoff: SystemTime) -> Result<Option<u64>, StoreError>;

    // --- scrub: corrupt objects leave the store (kept aside for inspection, never served) ---
    /// Move a pool blob into the quarantine folder `batch` (e.g. the scrub's start time) so it is no longer
    /// served or linked; returns where it went (a path under the data directory), `None` when it is not in the
    /// pool. Links to it stay: the scrub removes them repository by repository.
    async fn blob_quarantine(&self, digest: &Digest, batch: &str) -> Result<Option<String>, StoreError>;
    /// Move a repository's manifest into the quarantine folder `batch` (with the repository in its path) and
    /// remove its referrer entry; tags naming it stay (a mirror fetches the manifest again, a hosted repository
    /// needs a new push). Returns where it went, `None` when the repository does not hold it.
    async fn manifest_quarantine(
        &self,
        repo: &RepoName,
        digest: &Digest,
        batch: &str,
    ) -> Result<Option<String>, StoreError>;

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
    /// Remove expired upload sessions (idle longer than the configured expiry) and the scratch space of
    /// processes that are gone. Sessions in the middle of a request are left alone.
    async fn sweep(&self) -> Result<SweepReport, StoreError>;

    // --- manifests, referrers ---
    /// A manifest stored in the repository.
    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StoreError>;
    /// Store exact manifest bytes; records the blobs it references and, when `subject` is given, the referrer
    /// link. The manifest is durable before the referrer entry appears, so no listing shows a referrer whose
    /// manifest could be lost.
    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
        referrer: Option<(&Digest, &Descriptor)>,
    ) -> Result<(), StoreError>;
    /// Remove a manifest (and its referrer entry, and the tags pointing at it); returns whether it existed.
    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError>;
    /// Remove many manifests of a repository (the garbage collector's sweep); returns how many existed. The
    /// same guarantees as [`ContentStore::manifest_delete`] (tags go durably before their manifests), but a
    /// back-end may read the tags once and sync each directory once for the whole batch.
    async fn manifest_delete_many(&self, repo: &RepoName, digests: &[Digest]) -> Result<u64, StoreError> {
        let mut n = 0;
        for d in digests {
            n += u64::from(self.manifest_delete(repo, d).await?);
        }
        Ok(n)
    }
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
    /// Whether the repository holds anything here (a blob link, a manifest or a tag). Routing asks this to
    /// decide, per repository, whether a name is hosted (and so never consults the default upstream).
    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError>;
    /// Repositories in lexical order after `after`, at most `limit`.
    async fn repo_list(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError>;

    // --- small documents beside the content (sync reports, tag history, pins) ---
    /// A document by key (`/`-separated segments, see [`valid_meta_key`]).
    async fn meta_get(&self, key: &str) -> Result<Option<Bytes>, StoreError>;
    /// Write a document atomically.
    async fn meta_put(&self, key: &str, value: Bytes) -> Result<(), StoreError>;
    /// Keys directly under `prefix/`, sorted.
    async fn meta_list(&self, prefix: &str) -> Result<Vec<String>, StoreError>;
    /// Remove a small document; false when there was none (queues drop what they have delivered).
    async fn meta_delete(&self, key: &str) -> Result<bool, StoreError>;
}

/// A JSON meta document, `None` when there is none; one that does not parse is [`StoreError::Corrupt`] naming
/// its key (reports, history, pins are all read this way).
pub async fn meta_json<T: serde::de::DeserializeOwned>(
    store: &dyn ContentStore,
    key: &str,
) -> Result<Option<T>, StoreError> {
    match store.meta_get(key).await? {
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| StoreError::Corrupt(key.to_owned(), e.to_string())),
        None => Ok(None),
    }
}

/// Meta keys: non-empty segments of `[A-Za-z0-9._:@_-]` not starting with `.`, so they are safe as paths
/// (`_` because repository names use it, also every cache repository of an upstream with a port).
pub fn valid_meta_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.starts_with('.')
                && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b"._:@_-".contains(&b))
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

#[cfg(test)]
mod gate_tests {
    use super::*;

    #[tokio::test]
    async fn a_record_past_its_bound_says_it_cannot_know() {
        let gate = GcGate::default();
        let first = Digest::sha256_of(b"0");
        // Nothing is recorded while no collection runs.
        gate.link().await.record(&first);
        assert_eq!(gate.linked_since_begin(&first), Some(false));
        gate.begin().await;
        {
            let guard = gate.link().await;
            for i in 0..GC_RECORD_LIMIT {
                guard.record(&Digest::sha256_of(i.to_string().as_bytes()));
            }
        }
        assert_eq!(gate.linked_since_begin(&first), Some(true));
        assert_eq!(gate.linked_since_begin(&Digest::sha256_of(b"never")), Some(false));
        gate.link().await.record(&Digest::sha256_of(b"one too many"));
        assert_eq!(gate.linked_since_begin(&first), None, "the pool sweep must stop");
        gate.end();
        assert_eq!(gate.linked_since_begin(&first), Some(false));
    }
}
