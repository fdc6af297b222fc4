//! The object-storage back-end: the same registry semantics as the filesystem store, over an S3-compatible
//! bucket, so several Wharf processes (replicas on different machines) share one store. Every durable fact is
//! an object; this process keeps only the locks that order its own writes ([`RepoLocks`], [`GcGate`]).
//!
//! Key layout under the configured prefix (the filesystem layout of [`super::keys`], adapted):
//!
//! ```text
//! blobs/<algo>/<2 hex>/<hex>                          committed blob bytes (written only after the digest check)
//! touch/<algo>/<2 hex>/<hex>                          empty: rewritten when the blob is linked (its time is
//!                                                     the pool blob's "modified" for the collector's grace)
//! uploads/<id>/state                                  JSON: repository, bytes so far, last activity
//! uploads/<id>/<offset, 20 digits>                    one object per chunk received
//! repos/<name>/_blobs/<algo>/<hex>                    empty: the blob is visible in <name>
//! repos/<name>/_manifests/<algo>/<hex>                "<media type>\n" + exact manifest bytes
//! repos/<name>/_refs/<algo>/<blob hex>/<algo>-<manifest hex>   empty: that manifest references the blob
//! repos/<name>/_tags/<tag>                            the digest the tag points at
//! repos/<name>/_referrers/<algo>-<subject hex>/<algo>-<hex>    descriptor JSON of a referrer
//! quarantine/<batch>/blobs/<algo>-<hex>, quarantine/<batch>/repos/<name>/<algo>-<hex>
//! meta/<key>                                          small documents
//! ```
//!
//! Objects appear whole or not at all (a single PUT, or a multipart upload completed only after the bytes
//! hashed to the expected digest), so nothing half-written is ever served. A repository "exists" while one of
//! `_blobs/`, `_manifests/` or `_tags/` holds an object: object stores have no empty directories, so an emptied
//! repository disappears by itself.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::buffered::BufWriter;
use object_store::path::Path as Key;
use object_store::{GetOptions, GetRange, ObjectMeta, ObjectStore, PutPayload};
use oci::{Algorithm, Descriptor, Digest, Digester, MediaType, RepoName, Tag};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use super::{
    BlobMeta, BlobReader, ByteRange, ByteStream, ContentStore, GcGate, LinkEntry, ManifestEntry, Page, PoolEntry,
    RepoLocks, StoreError, StoredManifest, SweepReport, UploadId, UploadLimits, UploadState,
};

/// Multipart part size: S3's minimum is 5 MiB; a few parts in flight bound the memory a large push uses.
const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once per writer.
const PARTS_IN_FLIGHT: usize = 2;

/// Where to find the bucket (from `[storage]`).
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    /// Bucket name.
    pub bucket: String,
    /// Endpoint URL (`None` for AWS).
    pub endpoint: Option<String>,
    /// Region (`None`: the AWS sources, else `us-east-1`).
    pub region: Option<String>,
    /// Key prefix (`prod/`), possibly empty.
    pub prefix: String,
    /// Path-style requests.
    pub path_style: bool,
    /// Static credentials (else the AWS sources).
    pub credentials: Option<(String, String)>,
    /// Sign request bodies (SHA-256 of every part in the signature, so the server checks what it received);
    /// `false` sends `UNSIGNED-PAYLOAD`, leaving transport integrity to TLS.
    pub sign_payload: bool,
}

/// [`ContentStore`] over an S3-compatible bucket.
pub struct S3Store {
    store: Arc<dyn ObjectStore>,
    /// Signs presigned GET URLs for blob redirects (the same client as `store`).
    signer: Option<Arc<object_store::aws::AmazonS3>>,
    /// Key prefix with no leading or trailing `/` (empty for the bucket's root).
    prefix: String,
    limits: UploadLimits,
    repo_locks: RepoLocks,
    gc_gate: GcGate,
}

/// An upload session's state object.
#[derive(Serialize, Deserialize)]
struct SessionState {
    repo: String,
    size: u64,
    /// Last activity, seconds since the epoch by the store's clock.
    last: u64,
    /// SHA-256 of the bytes when they arrived in one chunk (the common monolithic `PATCH`): finishing then
    /// copies that chunk instead of reading it back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<Digest>,
}

/// Kinds of S3 request, as `/metrics` counts them.
const OPS: [&str; 10] = [
    "head",
    "get",
    "put",
    "delete",
    "list",
    "copy",
    "multipart_create",
    "multipart_part",
    "multipart_complete",
    "multipart_abort",
];

/// S3 requests this process made, by [`OPS`] index (one store per process; read by `/metrics`).
static REQUESTS: [std::sync::atomic::AtomicU64; 10] = [const { std::sync::atomic::AtomicU64::new(0) }; 10];

fn count(op: &str) {
    if let Some(i) = OPS.iter().position(|o| *o == op) {
        REQUESTS[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

/// S3 requests made so far by kind (a listing counts once per call, whatever its pages).
pub fn request_counts() -> Vec<(&'static str, u64)> {
    OPS.iter().zip(&REQUESTS).map(|(op, n)| (*op, n.load(std::sync::atomic::Ordering::Relaxed))).collect()
}

/// The object store client with every request counted (the signer is not: signing makes no request).
#[derive(Debug)]
struct Counted(Arc<dyn ObjectStore>);

impl std::fmt::Display for Counted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "counted {}", self.0)
    }
}

#[async_trait]
impl ObjectStore for Counted {
    async fn put_opts(
        &self,
        location: &Key,
        payload: PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        count("put");
        self.0.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Key,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        count("multipart_create");
        Ok(Box::new(CountedUpload(self.0.put_multipart_opts(location, opts).await?)))
    }

    async fn get_opts(&self, location: &Key, options: GetOptions) -> object_store::Result<object_store::GetResult> {
        count(if options.head { "head" } else { "get" });
        self.0.get_opts(location, options).await
    }

    async fn head(&self, location: &Key) -> object_store::Result<ObjectMeta> {
        count("head");
        self.0.head(location).await
    }

    async fn delete(&self, location: &Key) -> object_store::Result<()> {
        count("delete");
        self.0.delete(location).await
    }

    fn list(&self, prefix: Option<&Key>) -> futures_util::stream::BoxStream<'static, object_store::Result<ObjectMeta>> {
        count("list");
        self.0.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Key>) -> object_store::Result<object_store::ListResult> {
        count("list");
        self.0.list_with_delimiter(prefix).await
    }

    async fn copy(&self, from: &Key, to: &Key) -> object_store::Result<()> {
        count("copy");
        self.0.copy(from, to).await
    }

    async fn copy_if_not_exists(&self, from: &Key, to: &Key) -> object_store::Result<()> {
        count("copy");
        self.0.copy_if_not_exists(from, to).await
    }
}

/// A multipart upload with its requests counted.
#[derive(Debug)]
struct CountedUpload(Box<dyn object_store::MultipartUpload>);

#[async_trait]
impl object_store::MultipartUpload for CountedUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        count("multipart_part");
        self.0.put_part(data)
    }

    async fn complete(&mut self) -> object_store::Result<object_store::PutResult> {
        count("multipart_complete");
        self.0.complete().await
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        count("multipart_abort");
        self.0.abort().await
    }
}

fn io_error(key: &str, e: object_store::Error) -> StoreError {
    StoreError::Io { path: key.to_owned(), source: std::io::Error::other(e.to_string()) }
}

fn epoch_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn modified(meta: &ObjectMeta) -> SystemTime {
    SystemTime::from(meta.last_modified)
}

impl S3Store {
    /// Connect to the bucket (no request is made until the first operation).
    pub fn connect(settings: &S3Settings, limits: UploadLimits) -> Result<S3Store, String> {
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        if let Some(e) = &settings.endpoint {
            b = b.with_endpoint(e).with_allow_http(e.starts_with("http://"));
        }
        match &settings.region {
            Some(r) => b = b.with_region(r),
            None if std::env::var_os("AWS_REGION").is_none() && std::env::var_os("AWS_DEFAULT_REGION").is_none() => {
                b = b.with_region("us-east-1")
            }
            None => {}
        }
        if let Some((id, secret)) = &settings.credentials {
            b = b.with_access_key_id(id).with_secret_access_key(secret);
        }
        b = b.with_virtual_hosted_style_request(!settings.path_style).with_unsigned_payload(!settings.sign_payload);
        let s3 = Arc::new(b.build().map_err(|e| format!("storage: cannot set up the S3 client: {e}"))?);
        let mut store = S3Store::over(Arc::new(Counted(s3.clone())), &settings.prefix, limits);
        store.signer = Some(s3);
        Ok(store)
    }

    /// A store over any object store (tests, other providers later).
    pub fn over(store: Arc<dyn ObjectStore>, prefix: &str, limits: UploadLimits) -> S3Store {
        S3Store {
            store,
            signer: None,
            prefix: prefix.trim_matches('/').to_owned(),
            limits,
            repo_locks: RepoLocks::default(),
            gc_gate: GcGate::default(),
        }
    }

    /// Whether the server honours `If-None-Match: *` on PUT (S3 conditional writes): two creates of one
    /// probe object, the second must be refused. Garage, for one, accepts both.
    pub async fn honours_conditional_writes(&self) -> Result<bool, StoreError> {
        use object_store::{PutMode, PutOptions};
        let mut id = [0u8; 8];
        getrandom::getrandom(&mut id).expect("the OS random source is available");
        let rel = format!("probe/conditional-{}", hex::encode(id));
        let create = || PutOptions { mode: PutMode::Create, ..Default::default() };
        let key = self.key(&rel);
        self.store.put_opts(&key, PutPayload::from_static(b"1"), create()).await.map_err(|e| io_error(&rel, e))?;
        let second = self.store.put_opts(&key, PutPayload::from_static(b"2"), create()).await;
        self.delete(&rel).await?;
        match second {
            Err(object_store::Error::AlreadyExists { .. }) => Ok(true),
            Ok(_) | Err(object_store::Error::NotImplemented) => Ok(false),
            Err(e) => Err(io_error(&rel, e)),
        }
    }

    fn key(&self, rel: &str) -> Key {
        if self.prefix.is_empty() {
            Key::from(rel)
        } else {
            Key::from(format!("{}/{rel}", self.prefix))
        }
    }

    /// The part of a listed key after the prefix.
    fn rel<'a>(&self, key: &'a Key) -> &'a str {
        let s = key.as_ref();
        if self.prefix.is_empty() {
            s
        } else {
            s.strip_prefix(self.prefix.as_str()).and_then(|r| r.strip_prefix('/')).unwrap_or(s)
        }
    }

    fn now(&self) -> SystemTime {
        (self.limits.clock)()
    }

    fn blob_key(d: &Digest) -> String {
        format!("blobs/{}/{}/{}", d.algorithm(), &d.hex()[..2], d.hex())
    }

    fn touch_key(d: &Digest) -> String {
        format!("touch/{}/{}/{}", d.algorithm(), &d.hex()[..2], d.hex())
    }

    fn repo_key(repo: &RepoName, rest: &str) -> String {
        format!("repos/{repo}/{rest}")
    }

    fn link_key(repo: &RepoName, d: &Digest) -> String {
        Self::repo_key(repo, &format!("_blobs/{}/{}", d.algorithm(), d.hex()))
    }

    fn manifest_key(repo: &RepoName, d: &Digest) -> String {
        Self::repo_key(repo, &format!("_manifests/{}/{}", d.algorithm(), d.hex()))
    }

    fn tag_key(repo: &RepoName, t: &str) -> String {
        Self::repo_key(repo, &format!("_tags/{t}"))
    }

    fn refs_prefix(repo: &RepoName, blob: &Digest) -> String {
        Self::repo_key(repo, &format!("_refs/{}/{}", blob.algorithm(), blob.hex()))
    }

    fn referrers_prefix(repo: &RepoName, subject: &Digest) -> String {
        Self::repo_key(repo, &format!("_referrers/{}-{}", subject.algorithm(), subject.hex()))
    }

    fn digest_file(d: &Digest) -> String {
        format!("{}-{}", d.algorithm(), d.hex())
    }

    // --- object primitives: not-found is `None`/`false`, everything else an error naming the key ---

    async fn head(&self, rel: &str) -> Result<Option<ObjectMeta>, StoreError> {
        match self.store.head(&self.key(rel)).await {
            Ok(m) => Ok(Some(m)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(rel, e)),
        }
    }

    async fn get(&self, rel: &str) -> Result<Option<Bytes>, StoreError> {
        match self.store.get(&self.key(rel)).await {
            Ok(r) => Ok(Some(r.bytes().await.map_err(|e| io_error(rel, e))?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(rel, e)),
        }
    }

    async fn put(&self, rel: &str, value: Bytes) -> Result<(), StoreError> {
        self.store.put(&self.key(rel), PutPayload::from(value)).await.map(|_| ()).map_err(|e| io_error(rel, e))
    }

    /// Delete, ignoring an object that is already gone (S3 deletes are idempotent anyway).
    async fn delete(&self, rel: &str) -> Result<(), StoreError> {
        match self.store.delete(&self.key(rel)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(io_error(rel, e)),
        }
    }

    /// Delete when present; whether it was.
    async fn delete_existing(&self, rel: &str) -> Result<bool, StoreError> {
        if self.head(rel).await?.is_none() {
            return Ok(false);
        }
        self.delete(rel).await?;
        Ok(true)
    }

    /// Every object under `rel/` (recursively), keys relative to the store's prefix.
    async fn list(&self, rel: &str) -> Result<Vec<(String, ObjectMeta)>, StoreError> {
        let prefix = self.key(rel);
        let metas: Vec<ObjectMeta> =
            self.store.list(Some(&prefix)).try_collect().await.map_err(|e| io_error(rel, e))?;
        Ok(metas.into_iter().map(|m| (self.rel(&m.location).to_owned(), m)).collect())
    }

    /// One level under `rel/`: the objects there and the names of the "folders".
    async fn list_level(&self, rel: &str) -> Result<(Vec<(String, ObjectMeta)>, Vec<String>), StoreError> {
        let prefix = self.key(rel);
        let r = self.store.list_with_delimiter(Some(&prefix)).await.map_err(|e| io_error(rel, e))?;
        let objects = r.objects.into_iter().map(|m| (self.rel(&m.location).to_owned(), m)).collect();
        let folders = r.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect::<Vec<String>>();
        Ok((objects, folders))
    }

    fn last_segment(rel: &str) -> &str {
        rel.rsplit('/').next().unwrap_or(rel)
    }

    /// Stream `body` into the object `rel`, hashing as it goes; the object appears only when the bytes hash
    /// to `expected` (and have `size`); otherwise the upload is abandoned and nothing is visible.
    async fn write_verified(
        &self,
        rel: &str,
        expected: &Digest,
        size: Option<u64>,
        mut body: ByteStream,
    ) -> Result<BlobMeta, StoreError> {
        let mut writer = BufWriter::with_capacity(self.store.clone(), self.key(rel), PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let mut hasher = Digester::new(expected.algorithm());
        let outcome: Result<(), StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Body)?;
                hasher.update(&chunk);
                if let Some(limit) = size.filter(|l| hasher.len() > *l) {
                    return Err(StoreError::SizeMismatch { expected: limit, actual: hasher.len() });
                }
                writer.put(chunk).await.map_err(|e| io_error(rel, e))?;
            }
            Ok(())
        }
        .await;
        let len = hasher.len();
        let checked = outcome.and_then(|()| {
            let actual = hasher.finish();
            if &actual != expected {
                return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
            }
            match size {
                Some(s) if s != len => Err(StoreError::SizeMismatch { expected: s, actual: len }),
                _ => Ok(()),
            }
        });
        match checked {
            Ok(()) => {
                writer.shutdown().await.map_err(|e| StoreError::Io { path: rel.to_owned(), source: e })?;
                Ok(BlobMeta { digest: expected.clone(), size: len })
            }
            Err(e) => {
                let _ = writer.abort().await;
                Err(e)
            }
        }
    }

    async fn session(&self, id: &UploadId) -> Result<SessionState, StoreError> {
        let rel = format!("uploads/{}/state", id.as_str());
        let unknown = || StoreError::UploadUnknown(id.as_str().to_owned());
        let bytes = self.get(&rel).await?.ok_or_else(unknown)?;
        let state: SessionState =
            serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(rel.clone(), e.to_string()))?;
        let last = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(state.last);
        if self.limits.expired(last) {
            return Err(unknown());
        }
        Ok(state)
    }

    async fn save_session(&self, id: &UploadId, state: &SessionState) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(state).expect("session state serialises");
        self.put(&format!("uploads/{}/state", id.as_str()), Bytes::from(bytes)).await
    }

    async fn remove_session(&self, id: &str) -> Result<(), StoreError> {
        for (rel, _) in self.list(&format!("uploads/{id}")).await? {
            self.delete(&rel).await?;
        }
        Ok(())
    }

    /// Open sessions (live or expired but not swept) with their state; unreadable ones count as expired.
    async fn sessions(&self) -> Result<Vec<(String, Option<SessionState>)>, StoreError> {
        let (_, ids) = self.list_level("uploads").await?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            let state = self
                .get(&format!("uploads/{id}/state"))
                .await?
                .and_then(|b| serde_json::from_slice::<SessionState>(&b).ok());
            out.push((id, state));
        }
        Ok(out)
    }

    fn session_expired(&self, state: &Option<SessionState>) -> bool {
        state
            .as_ref()
            .is_none_or(|s| self.limits.expired(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s.last)))
    }

    /// Whether the repository holds a blob link, a manifest or a tag.
    async fn has_content(&self, repo: &RepoName) -> Result<bool, StoreError> {
        let (_, folders) = self.list_level(&format!("repos/{repo}")).await?;
        Ok(folders.iter().any(|f| matches!(f.as_str(), "_blobs" | "_manifests" | "_tags")))
    }

    /// Every repository under `repos/` with its kinds of content, in lexical order of the full name.
    async fn all_repos(&self) -> Result<Vec<(String, bool)>, StoreError> {
        // (name, hosts a manifest or tag); a name holding only links has `false`.
        let mut out = Vec::new();
        let mut pending = vec![String::new()];
        while let Some(parent) = pending.pop() {
            let rel = if parent.is_empty() { "repos".to_owned() } else { format!("repos/{parent}") };
            let (_, folders) = self.list_level(&rel).await?;
            let mut links = false;
            let mut hosted = false;
            for f in &folders {
                match f.as_str() {
                    "_blobs" => links = true,
                    "_manifests" | "_tags" => hosted = true,
                    name if name.starts_with('_') => {}
                    name => pending.push(if parent.is_empty() { name.to_owned() } else { format!("{parent}/{name}") }),
                }
            }
            if !parent.is_empty() && (links || hosted) {
                out.push((parent, hosted));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Tags of a repository with the digests they point at.
    async fn tags_with_targets(&self, repo: &RepoName) -> Result<Vec<(String, Option<Digest>)>, StoreError> {
        let mut out = Vec::new();
        for (rel, _) in self.list(&Self::repo_key(repo, "_tags")).await? {
            let target = self.get(&rel).await?.and_then(|b| std::str::from_utf8(&b).ok()?.trim().parse().ok());
            out.push((Self::last_segment(&rel).to_owned(), target));
        }
        Ok(out)
    }

    /// Remove the referrer entries that name `digest` (whatever their subject).
    async fn remove_referrer_entries(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        let name = Self::digest_file(digest);
        for (rel, _) in self.list(&Self::repo_key(repo, "_referrers")).await? {
            if Self::last_segment(&rel) == name {
                self.delete(&rel).await?;
            }
        }
        Ok(())
    }

    /// Remove the `_refs` entries of a manifest (read from its bytes).
    async fn remove_refs(&self, repo: &RepoName, digest: &Digest, manifest: &StoredManifest) -> Result<(), StoreError> {
        for blob in super::blob_references(manifest, digest.algorithm()) {
            self.delete(&format!("{}/{}", Self::refs_prefix(repo, &blob), Self::digest_file(digest))).await?;
        }
        Ok(())
    }

    /// Copy an object to `to` and remove it (a server-side move).
    async fn move_object(&self, from: &str, to: &str) -> Result<(), StoreError> {
        self.store.copy(&self.key(from), &self.key(to)).await.map_err(|e| io_error(from, e))?;
        self.delete(from).await
    }
}

fn parse_manifest_object(rel: &str, bytes: Bytes) -> Result<StoredManifest, StoreError> {
    let nl = bytes
        .iter()
        .position(|b| *b == b'\n')
        .ok_or_else(|| StoreError::Corrupt(rel.to_owned(), "no media type line".into()))?;
    let media_type = std::str::from_utf8(&bytes[..nl])
        .map_err(|_| StoreError::Corrupt(rel.to_owned(), "media type is not UTF-8".into()))?;
    Ok(StoredManifest { media_type: MediaType::parse(media_type), bytes: bytes.slice(nl + 1..) })
}

fn parse_digest_file(name: &str) -> Option<Digest> {
    let (algo, hex) = name.split_once('-')?;
    format!("{algo}:{hex}").parse().ok()
}

fn parse_algo_hex(algo: &str, hex: &str) -> Option<Digest> {
    format!("{algo}:{hex}").parse().ok()
}

#[async_trait]
impl ContentStore for S3Store {
    async fn blob_stat(&self, digest: &Digest) -> Result<Option<BlobMeta>, StoreError> {
        Ok(self.head(&Self::blob_key(digest)).await?.map(|m| BlobMeta { digest: digest.clone(), size: m.size }))
    }

    async fn blob_open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Option<BlobReader>, StoreError> {
        // One GET: its answer carries the whole object's size (Content-Length, or Content-Range for a range).
        let rel = Self::blob_key(digest);
        let opts = GetOptions { range: range.map(|r| GetRange::Bounded(r.start..r.end + 1)), ..Default::default() };
        match self.store.get_opts(&self.key(&rel), opts).await {
            Ok(r) => {
                let size = r.meta.size;
                let key = rel.clone();
                let body = r.into_stream().map_err(move |e| std::io::Error::other(format!("{key}: {e}")));
                Ok(Some(BlobReader { meta: BlobMeta { digest: digest.clone(), size }, range, body: Box::pin(body) }))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(io_error(&rel, e)),
        }
    }

    async fn blob_put(&self, expected: &Digest, size: Option<u64>, body: ByteStream) -> Result<BlobMeta, StoreError> {
        let rel = Self::blob_key(expected);
        if let Some(m) = self.head(&rel).await? {
            // Stored already: the bytes are still checked (the caller may rely on a digest error), not rewritten.
            let mut hasher = Digester::new(expected.algorithm());
            let mut body = body;
            while let Some(chunk) = body.next().await {
                hasher.update(&chunk.map_err(StoreError::Body)?);
            }
            let len = hasher.len();
            let actual = hasher.finish();
            if &actual != expected {
                return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
            }
            if let Some(s) = size.filter(|s| *s != len) {
                return Err(StoreError::SizeMismatch { expected: s, actual: len });
            }
            self.put(&Self::touch_key(expected), Bytes::new()).await?;
            return Ok(BlobMeta { digest: expected.clone(), size: m.size });
        }
        // A new object's own time is the pool time: no touch marker needed yet.
        self.write_verified(&rel, expected, size, body).await
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        let existed = self.delete_existing(&Self::blob_key(digest)).await?;
        self.delete(&Self::touch_key(digest)).await?;
        Ok(existed)
    }

    async fn blob_url(&self, digest: &Digest, expires: std::time::Duration) -> Result<Option<String>, StoreError> {
        use object_store::signer::Signer;
        let Some(signer) = &self.signer else { return Ok(None) };
        let rel = Self::blob_key(digest);
        let url =
            signer.signed_url(reqwest::Method::GET, &self.key(&rel), expires).await.map_err(|e| io_error(&rel, e))?;
        Ok(Some(url.to_string()))
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        let guard = self.gc_gate.link().await;
        guard.record(digest);
        if self.head(&Self::blob_key(digest)).await?.is_none() {
            return Err(StoreError::BlobUnknown(digest.clone()));
        }
        self.put(&Self::touch_key(digest), Bytes::new()).await?;
        self.put(&Self::link_key(repo, digest), Bytes::new()).await
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.head(&Self::link_key(repo, digest)).await?.is_some())
    }

    async fn blob_seen(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        let rel = Self::link_key(repo, digest);
        let Some(meta) = self.head(&rel).await? else { return Ok(false) };
        if self.now().duration_since(modified(&meta)).is_ok_and(|age| age > super::LINK_REFRESH) {
            self.put(&rel, Bytes::new()).await?;
        }
        Ok(true)
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        self.delete_existing(&Self::link_key(repo, digest)).await
    }

    async fn blob_referenced_by(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Digest>, StoreError> {
        for (rel, _) in self.list(&Self::refs_prefix(repo, digest)).await? {
            let Some(m) = parse_digest_file(Self::last_segment(&rel)) else { continue };
            if self.head(&Self::manifest_key(repo, &m)).await?.is_some() {
                return Ok(Some(m));
            }
            // The manifest is gone (deleted, or its push never finished): the entry is stale.
            self.delete(&rel).await?;
        }
        Ok(None)
    }

    fn repo_locks(&self) -> &RepoLocks {
        &self.repo_locks
    }

    fn gc_gate(&self) -> &GcGate {
        &self.gc_gate
    }

    async fn repo_list_all(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError> {
        Ok(self
            .all_repos()
            .await?
            .into_iter()
            .filter(|(n, _)| after.is_none_or(|a| n.as_str() > a))
            .take(limit)
            .filter_map(|(n, _)| n.parse().ok())
            .collect())
    }

    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<ManifestEntry>, StoreError> {
        let mut out = Vec::new();
        for (rel, meta) in self.list(&Self::repo_key(repo, "_manifests")).await? {
            let mut parts = rel.rsplit('/');
            let (Some(hex), Some(algo)) = (parts.next(), parts.next()) else { continue };
            if let Some(digest) = parse_algo_hex(algo, hex) {
                out.push(ManifestEntry { digest, modified: modified(&meta) });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn blob_link_list(&self, repo: &RepoName) -> Result<Vec<LinkEntry>, StoreError> {
        let mut out = Vec::new();
        for (rel, meta) in self.list(&Self::repo_key(repo, "_blobs")).await? {
            let mut parts = rel.rsplit('/');
            let (Some(hex), Some(algo)) = (parts.next(), parts.next()) else { continue };
            if let Some(digest) = parse_algo_hex(algo, hex) {
                out.push(LinkEntry { digest, modified: modified(&meta) });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn pool_list(&self, shard: u8) -> Result<Vec<PoolEntry>, StoreError> {
        let shard = super::shard_name(shard);
        let mut out = Vec::new();
        for algo in [Algorithm::Sha256, Algorithm::Sha512] {
            let touched: std::collections::HashMap<String, SystemTime> = self
                .list(&format!("touch/{algo}/{shard}"))
                .await?
                .into_iter()
                .map(|(rel, m)| (Self::last_segment(&rel).to_owned(), modified(&m)))
                .collect();
            for (rel, meta) in self.list(&format!("blobs/{algo}/{shard}")).await? {
                let hex = Self::last_segment(&rel);
                let Some(digest) = parse_algo_hex(algo.as_str(), hex) else { continue };
                let written = modified(&meta);
                let linked = touched.get(hex).copied().unwrap_or(written);
                out.push(PoolEntry { digest, size: meta.size, modified: written.max(linked) });
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn pool_delete_if_older(&self, digest: &Digest, cutoff: SystemTime) -> Result<Option<u64>, StoreError> {
        let Some(meta) = self.head(&Self::blob_key(digest)).await? else { return Ok(None) };
        let touched = self.head(&Self::touch_key(digest)).await?.map(|m| modified(&m));
        let newest = touched.map_or(modified(&meta), |t| t.max(modified(&meta)));
        if newest > cutoff {
            return Ok(None);
        }
        self.delete(&Self::blob_key(digest)).await?;
        self.delete(&Self::touch_key(digest)).await?;
        Ok(Some(meta.size))
    }

    async fn blob_quarantine(&self, digest: &Digest, batch: &str) -> Result<Option<String>, StoreError> {
        let rel = Self::blob_key(digest);
        if self.head(&rel).await?.is_none() {
            return Ok(None);
        }
        let to = format!("quarantine/{batch}/blobs/{}", Self::digest_file(digest));
        self.move_object(&rel, &to).await?;
        self.delete(&Self::touch_key(digest)).await?;
        Ok(Some(self.key(&to).to_string()))
    }

    async fn manifest_quarantine(
        &self,
        repo: &RepoName,
        digest: &Digest,
        batch: &str,
    ) -> Result<Option<String>, StoreError> {
        let rel = Self::manifest_key(repo, digest);
        if self.head(&rel).await?.is_none() {
            return Ok(None);
        }
        self.remove_referrer_entries(repo, digest).await?;
        let to = format!("quarantine/{batch}/repos/{repo}/{}", Self::digest_file(digest));
        self.move_object(&rel, &to).await?;
        Ok(Some(self.key(&to).to_string()))
    }

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadId, StoreError> {
        let limit = self.limits.max_open;
        let mut open = self.sessions().await?;
        if open.len() >= limit {
            let (expired, live): (Vec<_>, Vec<_>) = open.into_iter().partition(|(_, s)| self.session_expired(s));
            for (id, _) in expired {
                self.remove_session(&id).await?;
            }
            open = live;
        }
        if open.len() >= limit {
            return Err(StoreError::TooManyUploads { open: open.len(), limit });
        }
        let id = UploadId::random();
        let state = SessionState { repo: repo.to_string(), size: 0, last: epoch_secs(self.now()), sha256: None };
        self.save_session(&id, &state).await?;
        Ok(id)
    }

    async fn upload_state(&self, id: &UploadId) -> Result<UploadState, StoreError> {
        let s = self.session(id).await?;
        let repo = s.repo.parse().map_err(|_| StoreError::Corrupt(format!("uploads/{}", id.as_str()), s.repo))?;
        Ok(UploadState { repo, size: s.size })
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, mut body: ByteStream) -> Result<u64, StoreError> {
        let mut state = self.session(id).await?;
        if offset != state.size {
            return Err(StoreError::UploadOffset { given: offset, current: state.size });
        }
        let rel = format!("uploads/{}/{offset:020}", id.as_str());
        let mut writer = BufWriter::with_capacity(self.store.clone(), self.key(&rel), PART_SIZE)
            .with_max_concurrency(PARTS_IN_FLIGHT);
        let mut hasher = Digester::new(Algorithm::Sha256);
        let copied: Result<(), StoreError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(StoreError::Body)?;
                hasher.update(&chunk);
                writer.put(chunk).await.map_err(|e| io_error(&rel, e))?;
            }
            writer.shutdown().await.map_err(|e| StoreError::Io { path: rel.clone(), source: e })
        }
        .await;
        if let Err(e) = copied {
            let _ = writer.abort().await;
            return Err(e);
        }
        let n = hasher.len();
        state.sha256 = (offset == 0).then(|| hasher.finish());
        state.size += n;
        state.last = epoch_secs(self.now());
        self.save_session(id, &state).await?;
        Ok(state.size)
    }

    async fn upload_finish(&self, id: &UploadId, expected: &Digest) -> Result<BlobMeta, StoreError> {
        let state = self.session(id).await?;
        let mut chunks: Vec<(String, ObjectMeta)> = self
            .list(&format!("uploads/{}", id.as_str()))
            .await?
            .into_iter()
            .filter(|(rel, _)| !rel.ends_with("/state"))
            .collect();
        chunks.sort_by(|a, b| a.0.cmp(&b.0));
        let target = Self::blob_key(expected);
        let result = if chunks.len() == 1 && state.sha256.as_ref() == Some(expected) {
            // One chunk, already hashed on arrival: a server-side copy, no bytes through this process.
            let (rel, meta) = &chunks[0];
            self.store.copy(&self.key(rel), &self.key(&target)).await.map_err(|e| io_error(rel, e))?;
            Ok(BlobMeta { digest: expected.clone(), size: meta.size })
        } else if chunks.is_empty() {
            self.write_verified(&target, expected, Some(0), Box::pin(futures_util::stream::empty())).await
        } else {
            // Read the chunks back in order, hashing while the concatenation streams into the blob.
            let store = self.store.clone();
            let keys: Vec<Key> = chunks.iter().map(|(rel, _)| self.key(rel)).collect();
            let body = futures_util::stream::iter(keys)
                .then(move |k| {
                    let store = store.clone();
                    async move { store.get(&k).await.map_err(|e| std::io::Error::other(e.to_string())) }
                })
                .map_ok(|r| r.into_stream().map_err(|e| std::io::Error::other(e.to_string())))
                .try_flatten();
            self.write_verified(&target, expected, Some(state.size), Box::pin(body)).await
        };
        self.remove_session(id.as_str()).await?;
        result
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<(), StoreError> {
        self.session(id).await?;
        self.remove_session(id.as_str()).await
    }

    async fn sweep(&self) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for (id, state) in self.sessions().await? {
            if self.session_expired(&state) {
                self.remove_session(&id).await?;
                report.uploads += 1;
            }
        }
        Ok(report)
    }

    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StoreError> {
        let rel = Self::manifest_key(repo, digest);
        match self.get(&rel).await? {
            Some(bytes) => parse_manifest_object(&rel, bytes).map(Some),
            None => Ok(None),
        }
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
        referrer: Option<(&Digest, &Descriptor)>,
    ) -> Result<(), StoreError> {
        // The reverse index first: a durable manifest always has its entries.
        for blob in super::blob_references(manifest, digest.algorithm()) {
            let rel = format!("{}/{}", Self::refs_prefix(repo, &blob), Self::digest_file(digest));
            self.put(&rel, Bytes::new()).await?;
        }
        let mut object = Vec::with_capacity(manifest.media_type.as_str().len() + 1 + manifest.bytes.len());
        object.extend_from_slice(manifest.media_type.as_str().as_bytes());
        object.push(b'\n');
        object.extend_from_slice(&manifest.bytes);
        self.put(&Self::manifest_key(repo, digest), Bytes::from(object)).await?;
        if let Some((subject, desc)) = referrer {
            let rel = format!("{}/{}", Self::referrers_prefix(repo, subject), Self::digest_file(digest));
            let json = serde_json::to_vec(desc).expect("descriptor serialises");
            self.put(&rel, Bytes::from(json)).await?;
        }
        Ok(())
    }

    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.manifest_delete_many(repo, std::slice::from_ref(digest)).await? == 1)
    }

    async fn manifest_delete_many(&self, repo: &RepoName, digests: &[Digest]) -> Result<u64, StoreError> {
        let doomed: BTreeSet<&Digest> = digests.iter().collect();
        // Tags go first, so no tag ever names a manifest that is gone.
        for (tag, target) in self.tags_with_targets(repo).await? {
            if target.as_ref().is_some_and(|t| doomed.contains(t)) {
                self.delete(&Self::tag_key(repo, &tag)).await?;
            }
        }
        let mut removed = 0;
        for d in doomed {
            let rel = Self::manifest_key(repo, d);
            let Some(bytes) = self.get(&rel).await? else { continue };
            self.remove_referrer_entries(repo, d).await?;
            self.delete(&rel).await?;
            if let Ok(m) = parse_manifest_object(&rel, bytes) {
                self.remove_refs(repo, d, &m).await?;
            }
            removed += 1;
        }
        Ok(removed)
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        let mut out = Vec::new();
        for (rel, _) in self.list(&Self::referrers_prefix(repo, subject)).await? {
            let Some(bytes) = self.get(&rel).await? else { continue };
            let desc: Descriptor =
                serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt(rel.clone(), e.to_string()))?;
            out.push(desc);
        }
        Ok(out)
    }

    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StoreError> {
        let rel = Self::tag_key(repo, tag.as_str());
        match self.get(&rel).await? {
            Some(b) => std::str::from_utf8(&b)
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .map(Some)
                .ok_or_else(|| StoreError::Corrupt(rel, "not a digest".into())),
            None => Ok(None),
        }
    }

    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StoreError> {
        self.put(&Self::tag_key(repo, tag.as_str()), Bytes::from(digest.to_string())).await
    }

    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        self.delete_existing(&Self::tag_key(repo, tag.as_str())).await
    }

    async fn tag_list(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page<Tag>>, StoreError> {
        let (_, folders) = self.list_level(&format!("repos/{repo}")).await?;
        if !folders.iter().any(|f| matches!(f.as_str(), "_blobs" | "_manifests" | "_tags")) {
            return Ok(None);
        }
        let mut names: Vec<String> = if folders.iter().any(|f| f == "_tags") {
            self.list(&Self::repo_key(repo, "_tags"))
                .await?
                .into_iter()
                .map(|(rel, _)| Self::last_segment(&rel).to_owned())
                .collect()
        } else {
            Vec::new()
        };
        names.sort();
        Ok(Some(
            names
                .into_iter()
                .filter(|t| after.is_none_or(|a| t.as_str() > a))
                .take(limit)
                .filter_map(|t| t.parse().ok())
                .collect(),
        ))
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        self.has_content(repo).await
    }

    async fn repo_list(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError> {
        Ok(self
            .all_repos()
            .await?
            .into_iter()
            .filter(|(n, hosted)| *hosted && after.is_none_or(|a| n.as_str() > a))
            .take(limit)
            .filter_map(|(n, _)| n.parse().ok())
            .collect())
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        super::check_meta_key(key)?;
        self.get(&format!("meta/{key}")).await
    }

    async fn meta_put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        super::check_meta_key(key)?;
        self.put(&format!("meta/{key}"), value).await
    }

    async fn meta_list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let (objects, _) = self.list_level(&format!("meta/{prefix}")).await?;
        let mut out: Vec<String> =
            objects.into_iter().filter_map(|(rel, _)| rel.strip_prefix("meta/").map(str::to_owned)).collect();
        out.sort();
        Ok(out)
    }

    async fn meta_delete(&self, key: &str) -> Result<bool, StoreError> {
        super::check_meta_key(key)?;
        self.delete_existing(&format!("meta/{key}")).await
    }
}

/// A throw-away Garage server for tests (`scripts/s3-server.sh`), stopped when dropped.
#[cfg(test)]
pub(crate) mod test_server {
    use std::collections::HashMap;

    /// A running server and the settings that reach its bucket.
    pub(crate) struct Garage {
        pub(crate) settings: super::S3Settings,
        pid: u32,
        _dir: tempfile::TempDir,
    }

    impl Drop for Garage {
        fn drop(&mut self) {
            let _ = std::process::Command::new("kill").arg(self.pid.to_string()).status();
        }
    }

    /// Start one, or `None` (with a message) when no Garage binary is installed and the run does not
    /// require one (`WHARF_REQUIRE_S3=1`, set by `scripts/test.sh`, turns a missing server into a failure).
    pub(crate) fn start() -> Option<Garage> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scripts/s3-server.sh");
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(script).arg(dir.path().join("garage")).output().unwrap();
        if !out.status.success() {
            let why = String::from_utf8_lossy(&out.stderr);
            if std::env::var_os("WHARF_REQUIRE_S3").is_some() || !why.contains("no garage binary") {
                panic!("the S3 test server did not start: {why}");
            }
            eprintln!("SKIPPED: no S3 test server (run scripts/install-s3-server.sh): {why}");
            return None;
        }
        let env: HashMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())))
            .collect();
        let settings = super::S3Settings {
            bucket: env["S3_BUCKET"].clone(),
            endpoint: Some(env["S3_ENDPOINT"].clone()),
            region: Some(env["S3_REGION"].clone()),
            prefix: String::new(),
            path_style: true,
            credentials: Some((env["AWS_ACCESS_KEY_ID"].clone(), env["AWS_SECRET_ACCESS_KEY"].clone())),
            sign_payload: true,
        };
        Some(Garage { settings, pid: env["GARAGE_PID"].parse().unwrap(), _dir: dir })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let Some(garage) = test_server::start() else { return };
        // Every store of the suite starts empty: its own prefix in the one bucket.
        let n = AtomicUsize::new(0);
        let settings = garage.settings.clone();
        crate::store::testsuite::run_all(|limits| {
            let mut s = settings.clone();
            let i = n.fetch_add(1, Ordering::SeqCst);
            s.prefix = format!("suite-{i}/");
            // Signed and unsigned request bodies, by turns.
            s.sign_payload = i.is_multiple_of(2);
            Arc::new(S3Store::connect(&s, limits).unwrap()) as Arc<dyn ContentStore>
        })
        .await;
    }
}
