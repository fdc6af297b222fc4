//! The local filesystem store: the embedded default and the hot path of every benchmark.
//!
//! Large bodies are streamed through a dedicated blocking thread (one per transfer) that hashes and writes,
//! or reads in large chunks, so the async workers never wait on the disk for bulk data. Small metadata
//! objects (tags, links, manifests) are read and written directly: they come from the page cache in
//! microseconds and a thread hop would cost more than the read.
//!
//! Crash safety: every object becomes visible by `rename` of a fully written, fsynced temp file in the same
//! directory; blobs are renamed out of `uploads/` only after their digest and size check out.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Algorithm, Descriptor, Digest, Digester, MediaType, RepoName, Tag};
use tokio::sync::mpsc;

use super::keys::Layout;
use super::{
    BlobMeta, BlobReader, ByteRange, ByteStream, ContentStore, Page, StoreError, StoredManifest, UploadId, UploadState,
};

/// Chunk size for streaming reads: large enough for near-page-cache speed, small enough to bound memory.
const READ_CHUNK: usize = 128 * 1024;
/// Blobs up to this size are read in one call instead of through a reader thread.
const SMALL_BLOB: u64 = 64 * 1024;
/// Chunks buffered between the network and a writer or reader thread.
const CHANNEL_DEPTH: usize = 4;
/// Chunks read ahead of a download: enough to keep the socket busy, few enough to bound memory per client.
const READ_DEPTH: usize = 2;

/// A directory's mtime when read, and its sorted tags.
type CachedTags = (std::time::SystemTime, Arc<Vec<Tag>>);

/// Filesystem-backed [`ContentStore`].
pub struct FsStore {
    layout: Layout,
    /// Hash state of open upload sessions, so a chunked upload is hashed once as it streams. A cache only: after
    /// a restart the state is rebuilt from the bytes on disk.
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Digester>>>>>,
    /// Sorted tag names per `_tags` directory, with the directory's mtime when read. Our own tag writes drop
    /// the entry; a changed mtime (another process) makes it stale too.
    tag_cache: Mutex<HashMap<PathBuf, CachedTags>>,
    /// Bumped by every tag change of ours, so a listing that raced with one is not cached.
    tag_generation: std::sync::atomic::AtomicU64,
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io { path: path.display().to_string(), source }
}

fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc_enotdir()) => Ok(None),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// ENOTDIR: a path component is a file (e.g. a repo name that is a prefix of a tag path); same as not found.
fn libc_enotdir() -> i32 {
    20
}

fn remove_opt(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

fn tmp_name(path: &Path) -> PathBuf {
    let mut r = [0u8; 6];
    getrandom::getrandom(&mut r).expect("the OS random source is available");
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", hex::encode(r)))
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().expect("store paths have parents");
    fs::create_dir_all(parent).map_err(io_err(parent))
}

/// Write a small object crash-safely: temp file, fsync, rename.
fn write_atomic(path: &Path, parts: &[&[u8]]) -> Result<(), StoreError> {
    create_parent(path)?;
    let tmp = tmp_name(path);
    let res = (|| {
        let mut f = File::create(&tmp)?;
        for p in parts {
            f.write_all(p)?;
        }
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(path)
    })();
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

/// Make a rename or creation in `path`'s directory durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Removes a scratch directory when dropped, also when the future using it is cancelled (client gone).
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Move verified bytes into place and make the rename durable.
fn commit_file(from: &Path, to: &Path) -> Result<(), StoreError> {
    create_parent(to)?;
    File::open(from).and_then(|f| f.sync_all()).map_err(io_err(from))?;
    fs::rename(from, to).map_err(io_err(to))?;
    if let Some(dir) = to.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
    }
    Ok(())
}

fn hash_file(path: &Path, algo: Algorithm) -> Result<Digester, StoreError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut h = Digester::new(algo);
    let mut buf = vec![0u8; READ_CHUNK];
    loop {
        let n = f.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            return Ok(h);
        }
        h.update(&buf[..n]);
    }
}

/// Written bytes after which their write-back to the disk is started (without waiting), so the fsync before
/// the rename finds little left to do.
const WRITEBACK_EVERY: u64 = 8 * 1024 * 1024;

/// Start writing a file range back to the disk without waiting for it (Linux `sync_file_range`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn start_writeback(f: &File, offset: u64, len: u64) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the duration of the call; the flag only queues write-back.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), offset as i64, len as i64, libc::SYNC_FILE_RANGE_WRITE);
    }
}

#[cfg(not(target_os = "linux"))]
fn start_writeback(_: &File, _: u64, _: u64) {}

/// Bytes gathered from small network frames before they go to the hasher and the disk: fewer hand-offs and
/// fewer `write` calls, at a bounded cost in memory.
const COALESCE: usize = 512 * 1024;

/// Stream `body` onto the end of `path`: one thread hashes while another writes, so a push runs at close to
/// the speed of SHA-256 on one core. Returns the updated hasher.
/// With `path` `None` the bytes are only hashed (the blob is already stored: the push is verified, not
/// written twice).
async fn stream_to_file(
    path: Option<PathBuf>,
    mut hasher: Digester,
    mut body: ByteStream,
) -> Result<Digester, StoreError> {
    let (hash_tx, mut hash_rx) = mpsc::channel::<Bytes>(CHANNEL_DEPTH);
    let (write_tx, write_rx) = std::sync::mpsc::sync_channel::<Bytes>(CHANNEL_DEPTH);
    let writer_path = path.clone();
    let path = path.unwrap_or_default();
    let writer = tokio::task::spawn_blocking(move || -> Result<(), StoreError> {
        let Some(writer_path) = writer_path else {
            write_rx.into_iter().for_each(drop);
            return Ok(());
        };
        let mut f = OpenOptions::new().create(true).append(true).open(&writer_path).map_err(io_err(&writer_path))?;
        let (mut written, mut started) = (0u64, 0u64);
        for chunk in write_rx {
            f.write_all(&chunk).map_err(io_err(&writer_path))?;
            written += chunk.len() as u64;
            if written - started >= WRITEBACK_EVERY {
                start_writeback(&f, started, written - started);
                started = written;
            }
        }
        Ok(())
    });
    let hashing = tokio::task::spawn_blocking(move || {
        while let Some(chunk) = hash_rx.blocking_recv() {
            hasher.update(&chunk);
            if write_tx.send(chunk).is_err() {
                break; // the writer failed; its error is reported below
            }
        }
        hasher
    });
    let mut body_error = None;
    let mut buf = bytes::BytesMut::new();
    loop {
        let item = body.next().await;
        let flush = match &item {
            None | Some(Err(_)) => !buf.is_empty(),
            Some(Ok(chunk)) => {
                if buf.is_empty() && chunk.len() >= COALESCE {
                    false
                } else {
                    buf.extend_from_slice(chunk);
                    buf.len() >= COALESCE
                }
            }
        };
        let out = match (&item, flush) {
            (_, true) => Some(buf.split().freeze()),
            (Some(Ok(chunk)), false) if buf.is_empty() => Some(chunk.clone()),
            _ => None,
        };
        if let Some(out) = out {
            if hash_tx.send(out).await.is_err() {
                break;
            }
        }
        match item {
            None => break,
            Some(Err(e)) => {
                body_error = Some(e);
                break;
            }
            Some(Ok(_)) => {}
        }
    }
    drop(hash_tx);
    let join_err =
        |e: tokio::task::JoinError| StoreError::Io { path: path.display().to_string(), source: io::Error::other(e) };
    let hasher = hashing.await.map_err(join_err)?;
    writer.await.map_err(join_err)??;
    match body_error {
        Some(e) => Err(StoreError::Body(e)),
        None => Ok(hasher),
    }
}

fn check(expected: &Digest, size: Option<u64>, got: Digester) -> Result<BlobMeta, StoreError> {
    let len = got.len();
    let actual = got.finish();
    if &actual != expected {
        return Err(StoreError::DigestMismatch { expected: expected.clone(), actual });
    }
    if let Some(s) = size {
        if s != len {
            return Err(StoreError::SizeMismatch { expected: s, actual: len });
        }
    }
    Ok(BlobMeta { digest: actual, size: len })
}

/// Stream a file region through a reader thread.
fn read_stream(path: PathBuf, start: u64, len: u64) -> ByteStream {
    let (tx, mut rx) = mpsc::channel::<io::Result<Bytes>>(READ_DEPTH);
    tokio::task::spawn_blocking(move || {
        let run = || -> io::Result<()> {
            let mut f = File::open(&path)?;
            f.seek(SeekFrom::Start(start))?;
            let mut left = len;
            while left > 0 {
                let want = left.min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                f.read_exact(&mut buf)?;
                left -= want as u64;
                if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                    return Ok(()); // the client went away
                }
            }
            Ok(())
        };
        if let Err(e) = run() {
            let _ = tx.blocking_send(Err(e));
        }
    });
    Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
}

impl FsStore {
    /// Open (creating if needed) a store under `root`.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        let layout = Layout::new(root);
        for dir in [layout.root().join("blobs"), layout.uploads(), layout.repos(), layout.root().join("meta")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        // Leftovers of interrupted blob_put writes are incomplete by definition.
        let tmp = layout.tmp();
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        Ok(FsStore {
            layout,
            sessions: Mutex::new(HashMap::new()),
            tag_cache: Mutex::new(HashMap::new()),
            tag_generation: Default::default(),
        })
    }

    fn session(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<Option<Digester>>> {
        self.sessions.lock().expect("session map lock").entry(id.as_str().to_owned()).or_default().clone()
    }

    fn forget_session(&self, id: &UploadId) {
        self.sessions.lock().expect("session map lock").remove(id.as_str());
    }

    fn forget_tags(&self, repo: &RepoName) {
        let mut cache = self.tag_cache.lock().expect("tag cache lock");
        self.tag_generation.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        cache.remove(&self.layout.tags(repo));
    }

    /// All tag names of a repository, sorted, from the cache when the directory has not changed.
    fn sorted_tags(&self, dir: &Path) -> Result<Arc<Vec<Tag>>, StoreError> {
        let generation = self.tag_generation.load(std::sync::atomic::Ordering::SeqCst);
        let mtime = match fs::metadata(dir) {
            Ok(m) => m.modified().map_err(io_err(dir))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Arc::new(Vec::new())),
            Err(e) => return Err(io_err(dir)(e)),
        };
        if let Some((t, tags)) = self.tag_cache.lock().expect("tag cache lock").get(dir) {
            if *t == mtime {
                return Ok(tags.clone());
            }
        }
        let mut names: Vec<Tag> = fs::read_dir(dir)
            .map_err(io_err(dir))?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| !n.starts_with('.'))
            .filter_map(|n| n.parse().ok())
            .collect();
        names.sort_unstable();
        let names = Arc::new(names);
        let mut cache = self.tag_cache.lock().expect("tag cache lock");
        if self.tag_generation.load(std::sync::atomic::Ordering::SeqCst) != generation {
            return Ok(names); // a tag changed while we listed: correct now, but not worth keeping
        }
        if cache.len() >= 4096 {
            cache.clear();
        }
        cache.insert(dir.to_owned(), (mtime, names.clone()));
        Ok(names)
    }

    fn data_path(&self, id: &UploadId) -> PathBuf {
        self.layout.upload_dir(id).join("data")
    }

    fn read_state(&self, id: &UploadId) -> Result<UploadState, StoreError> {
        let dir = self.layout.upload_dir(id);
        let repo_file = dir.join("repo");
        let Some(repo) = read_opt(&repo_file)? else { return Err(StoreError::UploadUnknown(id.as_str().to_owned())) };
        let repo = String::from_utf8_lossy(&repo)
            .parse::<RepoName>()
            .map_err(|e| StoreError::Corrupt(repo_file.display().to_string(), e.to_string()))?;
        let data = dir.join("data");
        let size = fs::metadata(&data).map_err(io_err(&data))?.len();
        Ok(UploadState { repo, size })
    }

    /// The hasher for a session's bytes so far, from the cache or by re-reading the file.
    async fn hasher_for(
        &self,
        slot: &mut Option<Digester>,
        id: &UploadId,
        size: u64,
        algo: Algorithm,
    ) -> Result<Digester, StoreError> {
        match slot.take() {
            Some(h) if h.len() == size && h.algorithm() == algo => Ok(h),
            _ => {
                let path = self.data_path(id);
                blocking(move || hash_file(&path, algo)).await
            }
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StoreError::Io { path: "<blocking task>".into(), source: io::Error::other(e) })?
}

#[async_trait]
impl ContentStore for FsStore {
    async fn blob_stat(&self, digest: &Digest) -> Result<Option<BlobMeta>, StoreError> {
        let path = self.layout.blob(digest);
        match fs::metadata(&path) {
            Ok(m) => Ok(Some(BlobMeta { digest: digest.clone(), size: m.len() })),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    async fn blob_open(&self, digest: &Digest, range: Option<ByteRange>) -> Result<Option<BlobReader>, StoreError> {
        let Some(meta) = self.blob_stat(digest).await? else { return Ok(None) };
        let path = self.layout.blob(digest);
        let (start, len) = range.map_or((0, meta.size), |r| (r.start, r.len()));
        let body: ByteStream = if len <= SMALL_BLOB {
            let bytes = blocking(move || {
                let mut f = File::open(&path).map_err(io_err(&path))?;
                f.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
                let mut buf = vec![0u8; len as usize];
                f.read_exact(&mut buf).map_err(io_err(&path))?;
                Ok(Bytes::from(buf))
            })
            .await?;
            Box::pin(futures_util::stream::once(async move { Ok(bytes) }))
        } else {
            read_stream(path, start, len)
        };
        Ok(Some(BlobReader { meta, range, body }))
    }

    async fn blob_put(&self, expected: &Digest, size: Option<u64>, body: ByteStream) -> Result<BlobMeta, StoreError> {
        let dir = self.layout.tmp().join(UploadId::random().as_str());
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let _scratch = ScratchDir(dir.clone());
        let data = dir.join("data");
        let target = self.layout.blob(expected);
        let exists = target.exists();
        let result = async {
            let sink = (!exists).then(|| data.clone());
            let hasher = stream_to_file(sink, Digester::new(expected.algorithm()), body).await?;
            let meta = check(expected, size, hasher)?;
            if !exists {
                let from = data.clone();
                blocking(move || commit_file(&from, &target)).await?;
            }
            Ok(meta)
        }
        .await;
        let _ = fs::remove_dir_all(&dir);
        result
    }

    async fn blob_import(&self, expected: &Digest, path: &Path) -> Result<BlobMeta, StoreError> {
        let (from, target, expected) = (path.to_owned(), self.layout.blob(expected), expected.clone());
        let result = blocking(move || {
            let meta = check(&expected, None, hash_file(&from, expected.algorithm())?)?;
            match commit_file(&from, &target) {
                Err(StoreError::Io { source, .. }) if source.raw_os_error() == Some(18) => {
                    // EXDEV: the spool is on another filesystem; copy into uploads/ first.
                    let tmp = tmp_name(&target);
                    fs::copy(&from, &tmp).map_err(io_err(&tmp))?;
                    commit_file(&tmp, &target)?;
                }
                other => other?,
            }
            Ok(meta)
        })
        .await;
        let _ = fs::remove_file(path);
        result
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        remove_opt(&self.layout.blob(digest))
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        let path = self.layout.blob_link(repo, digest);
        if path.exists() {
            return Ok(());
        }
        create_parent(&path)?;
        // An empty file has no data to flush; the directory entry is what must be durable.
        File::create(&path).and_then(|_| sync_dir(&path)).map_err(io_err(&path))
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.layout.blob_link(repo, digest).exists())
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        remove_opt(&self.layout.blob_link(repo, digest))
    }

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadId, StoreError> {
        let id = UploadId::random();
        let dir = self.layout.upload_dir(&id);
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        File::create(dir.join("data")).map_err(io_err(&dir))?;
        write_atomic(&dir.join("repo"), &[repo.as_str().as_bytes()])?;
        Ok(id)
    }

    async fn upload_state(&self, id: &UploadId) -> Result<UploadState, StoreError> {
        self.read_state(id)
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64, StoreError> {
        let slot = self.session(id);
        let mut slot = slot.lock().await;
        let state = self.read_state(id)?;
        if offset != state.size {
            return Err(StoreError::UploadOffset { given: offset, current: state.size });
        }
        let hasher = self.hasher_for(&mut slot, id, state.size, Algorithm::Sha256).await?;
        let hasher = stream_to_file(Some(self.data_path(id)), hasher, body).await?;
        let len = hasher.len();
        *slot = Some(hasher);
        Ok(len)
    }

    async fn upload_finish(&self, id: &UploadId, expected: &Digest) -> Result<BlobMeta, StoreError> {
        let slot = self.session(id);
        let mut slot = slot.lock().await;
        let state = self.read_state(id)?;
        let hasher = self.hasher_for(&mut slot, id, state.size, expected.algorithm()).await?;
        let dir = self.layout.upload_dir(id);
        let result = match check(expected, None, hasher) {
            Ok(meta) => {
                let (from, target) = (dir.join("data"), self.layout.blob(expected));
                blocking(move || commit_file(&from, &target)).await.map(|()| meta)
            }
            Err(e) => Err(e),
        };
        let _ = fs::remove_dir_all(&dir);
        drop(slot);
        self.forget_session(id);
        result
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<(), StoreError> {
        self.read_state(id)?;
        let dir = self.layout.upload_dir(id);
        fs::remove_dir_all(&dir).map_err(io_err(&dir))?;
        self.forget_session(id);
        Ok(())
    }

    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StoreError> {
        let path = self.layout.manifest(repo, digest);
        let Some(raw) = read_opt(&path)? else { return Ok(None) };
        let Some(nl) = raw.iter().position(|&b| b == b'\n') else {
            return Err(StoreError::Corrupt(path.display().to_string(), "no media type line".into()));
        };
        let media_type = MediaType::parse(&String::from_utf8_lossy(&raw[..nl]));
        let mut bytes = Bytes::from(raw);
        let bytes = bytes.split_off(nl + 1);
        Ok(Some(StoredManifest { bytes, media_type }))
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
        referrer: Option<(&Digest, &Descriptor)>,
    ) -> Result<(), StoreError> {
        if let Some((subject, desc)) = referrer {
            let json = serde_json::to_vec(desc).expect("descriptors serialise");
            write_atomic(&self.layout.referrer(repo, subject, digest), &[&json])?;
        }
        let path = self.layout.manifest(repo, digest);
        write_atomic(&path, &[manifest.media_type.as_str().as_bytes(), b"\n", &manifest.bytes])
    }

    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        let Some(m) = self.manifest_get(repo, digest).await? else { return Ok(false) };
        if let Ok(parsed) = oci::Manifest::parse(m.bytes, Some(&m.media_type), digest.algorithm()) {
            if let Some(subject) = parsed.subject() {
                remove_opt(&self.layout.referrer(repo, &subject.digest, digest))?;
            }
        }
        let tags = self.layout.tags(repo);
        if let Ok(entries) = fs::read_dir(&tags) {
            for e in entries.flatten() {
                let p = e.path();
                if read_opt(&p)?.is_some_and(|b| b.trim_ascii() == digest.to_string().as_bytes()) {
                    remove_opt(&p)?;
                }
            }
        }
        self.forget_tags(repo);
        remove_opt(&self.layout.manifest(repo, digest))
    }

    async fn referrers(&self, repo: &RepoName, subject: &Digest) -> Result<Vec<Descriptor>, StoreError> {
        let dir = self.layout.referrers(repo, subject);
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut out = Vec::new();
        for e in entries {
            let p = e.map_err(io_err(&dir))?.path();
            if p.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.')) {
                continue;
            }
            if let Some(raw) = read_opt(&p)? {
                let d: Descriptor = serde_json::from_slice(&raw)
                    .map_err(|e| StoreError::Corrupt(p.display().to_string(), e.to_string()))?;
                out.push(d);
            }
        }
        out.sort_by(|a, b| a.digest.cmp(&b.digest));
        Ok(out)
    }

    async fn tag_get(&self, repo: &RepoName, tag: &Tag) -> Result<Option<Digest>, StoreError> {
        let path = self.layout.tag(repo, tag);
        let Some(raw) = read_opt(&path)? else { return Ok(None) };
        let s = String::from_utf8_lossy(&raw);
        s.trim()
            .parse()
            .map(Some)
            .map_err(|e: oci::DigestError| StoreError::Corrupt(path.display().to_string(), e.to_string()))
    }

    async fn tag_put(&self, repo: &RepoName, tag: &Tag, digest: &Digest) -> Result<(), StoreError> {
        let r = write_atomic(&self.layout.tag(repo, tag), &[digest.to_string().as_bytes()]);
        self.forget_tags(repo);
        r
    }

    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        let r = remove_opt(&self.layout.tag(repo, tag));
        self.forget_tags(repo);
        r
    }

    async fn tag_list(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page<Tag>>, StoreError> {
        let repo_dir = self.layout.repo(repo);
        if !repo_dir.join("_manifests").is_dir() && !repo_dir.join("_tags").is_dir() {
            return Ok(None);
        }
        let all = self.sorted_tags(&self.layout.tags(repo))?;
        let start = after.map_or(0, |a| all.partition_point(|t| t.as_str() <= a));
        Ok(Some(all[start..].iter().take(limit).cloned().collect()))
    }

    async fn meta_get(&self, key: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(read_opt(&self.meta_path(key)?)?.map(Bytes::from))
    }

    async fn meta_put(&self, key: &str, value: Bytes) -> Result<(), StoreError> {
        write_atomic(&self.meta_path(key)?, &[&value])
    }

    async fn meta_list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.meta_path(prefix)?;
        let mut keys: Vec<String> = match fs::read_dir(&dir) {
            Ok(entries) => entries
                .filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.'))
                .map(|n| format!("{prefix}/{n}"))
                .collect(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io_err(&dir)(e)),
        };
        keys.sort();
        Ok(keys)
    }

    async fn repo_list(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError> {
        let root = self.layout.repos();
        let after = after.map(str::to_owned);
        blocking(move || {
            let mut found = Vec::new();
            let mut stack = vec![(root.clone(), String::new())];
            while let Some((dir, prefix)) = stack.pop() {
                let Ok(entries) = fs::read_dir(&dir) else { continue };
                let mut is_repo = false;
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if name == "_manifests" || name == "_tags" {
                        is_repo = true;
                    } else if !name.starts_with(['_', '.']) && e.file_type().is_ok_and(|t| t.is_dir()) {
                        let child = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                        stack.push((e.path(), child));
                    }
                }
                if is_repo {
                    found.push(prefix);
                }
            }
            found.retain(|n| after.as_deref().is_none_or(|a| n.as_str() > a));
            found.sort_unstable();
            found.truncate(limit);
            Ok(found.into_iter().filter_map(|n| n.parse().ok()).collect())
        })
        .await
    }
}

impl FsStore {
    fn meta_path(&self, key: &str) -> Result<PathBuf, StoreError> {
        super::check_meta_key(key)?;
        Ok(self.layout.meta(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_owned();
        let mut n = 0;
        crate::store::testsuite::run_all(move || {
            n += 1;
            Arc::new(FsStore::open(root.join(n.to_string())).unwrap()) as Arc<dyn ContentStore>
        })
        .await;
    }

    #[tokio::test]
    async fn failed_put_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let want = Digest::sha256_of(b"right");
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b"wrong"))]));
        assert!(matches!(store.blob_put(&want, None, body).await, Err(StoreError::DigestMismatch { .. })));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
        assert!(store.blob_stat(&want).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn chunked_upload_resumes_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let one =
            |b: &'static [u8]| -> ByteStream { Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b))])) };
        let id = {
            let store = FsStore::open(dir.path()).unwrap();
            let id = store.upload_start(&repo).await.unwrap();
            assert_eq!(store.upload_append(&id, 0, one(b"hello ")).await.unwrap(), 6);
            id
        };
        // A new process has no cached hash state and must rebuild it from disk.
        let store = FsStore::open(dir.path()).unwrap();
        assert_eq!(store.upload_state(&id).await.unwrap().size, 6);
        assert_eq!(store.upload_append(&id, 6, one(b"world")).await.unwrap(), 11);
        let meta = store.upload_finish(&id, &Digest::sha256_of(b"hello world")).await.unwrap();
        assert_eq!(meta.size, 11);
    }
}
