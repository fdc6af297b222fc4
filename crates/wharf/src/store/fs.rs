//! The local filesystem store: the embedded default and the hot path of every benchmark.
//!
//! Large bodies are streamed through a dedicated blocking thread (one per transfer) that hashes and writes,
//! or reads in large chunks, so the async workers never wait on the disk for bulk data. Small metadata
//! objects (tags, links, manifests) are *read* directly: they come from the page cache in microseconds and a
//! thread hop would cost more than the read. Every *write* that fsyncs (tags, links, manifests, meta, session
//! files) runs on the blocking pool: an fsync waits for the disk for milliseconds, and on a 2-core machine two
//! of them inline would stall every request on both async workers.
//!
//! Crash safety: every object becomes visible by `rename` of a fully written, fsynced temp file in the same
//! directory, and every directory level a write creates is fsynced in its parent; blobs are renamed out of
//! `uploads/` only after their digest and size check out. Order: a manifest's `_refs` entries, then the
//! manifest, then its referrer entry (then, in the service, the tag), each durable before the next appears.
//!
//! Several processes may share the data directory (see `scratch`): each writes its in-flight files under its
//! own locked `tmp/` folder, and only the sweeper of `wharf serve` removes anything that is not its own.

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

mod read;

use super::keys::Layout;
use super::scratch::{self, ProcessDir};
use super::{
    BlobMeta, BlobReader, ByteRange, ByteStream, ContentStore, GcGate, LinkEntry, ManifestEntry, Page, PoolEntry,
    RepoLocks, StoreError, StoredManifest, SweepReport, UploadId, UploadLimits, UploadState,
};

/// Chunk size for streaming reads: large enough for near-page-cache speed, small enough to bound memory.
const READ_CHUNK: usize = 128 * 1024;
/// Blobs up to this size are read in one call instead of through a reader thread.
const SMALL_BLOB: u64 = 64 * 1024;
/// Chunks buffered between the network and a writer or reader thread.
const CHANNEL_DEPTH: usize = 4;

/// A directory's mtime when read, and its sorted tags.
type CachedTags = (std::time::SystemTime, Arc<Vec<Tag>>);

/// Filesystem-backed [`ContentStore`].
pub struct FsStore {
    layout: Layout,
    /// This process's scratch folder under `tmp/`; `None` when the store is open read-only.
    scratch: Option<ProcessDir>,
    /// Expiry and cap of upload sessions.
    limits: UploadLimits,
    /// Upload sessions on disk, as last counted (start-up, sweeps) and kept current by our own starts and ends.
    open_uploads: std::sync::atomic::AtomicUsize,
    /// Orders manifest pushes against blob deletes per repository.
    repo_locks: RepoLocks,
    /// Orders link paths against the garbage collector's pool sweep.
    gc_gate: GcGate,
    /// Hash state of open upload sessions, so a chunked upload is hashed once as it streams. A cache only: after
    /// a restart the state is rebuilt from the bytes on disk.
    sessions: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Digester>>>>>,
    /// Sorted tag names per `_tags` directory, with the directory's mtime when read. Our own tag writes drop
    /// the entry; a changed mtime (another process) makes it stale too.
    tag_cache: Mutex<HashMap<PathBuf, CachedTags>>,
    /// Bumped by every tag change of ours, so a listing that raced with one is not cached.
    tag_generation: std::sync::atomic::AtomicU64,
    /// Tests only: the upload sweep signals the first after its scan and waits for the second.
    #[cfg(test)]
    sweep_pause: Mutex<Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>>,
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

/// `create_dir_all` that makes every level it creates durable: each new directory is fsynced in its parent, so
/// a file fsynced inside it cannot vanish with its directory after a crash.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    loop {
        match fs::metadata(cur) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} is a file", cur.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur);
                match cur.parent() {
                    Some(p) if !p.as_os_str().is_empty() => cur = p,
                    _ => break,
                }
            }
            Err(e) => return Err(e),
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Created by a concurrent writer, which may not have synced it yet: sync it regardless.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
        sync_dir(d)?;
    }
    Ok(())
}

fn create_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().expect("store paths have parents");
    create_dir_durable(parent).map_err(io_err(parent))
}

/// Write a small object crash-safely: temp file, fsync, rename, fsync the directory. Blocks on the disk: call
/// it on the blocking pool.
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
        // The write's own error is what the caller needs; a temp file that cannot be removed either is hidden
        // (`.` prefix) from every listing.
        let _ = fs::remove_file(&tmp);
    }
    res.map_err(io_err(path))
}

/// Create an empty marker file durably (links, reference entries). When it exists already, its directory is
/// still fsynced: a concurrent writer may have created it and not yet synced, and our caller acknowledges
/// on return. A directory with nothing unsynced costs no disk write to fsync.
fn touch_durable(path: &Path) -> Result<(), StoreError> {
    if path.exists() {
        return sync_dir(path).map_err(io_err(path));
    }
    create_parent(path)?;
    // An empty file has no data to flush; the directory entry is what must be durable.
    File::create(path).and_then(|_| sync_dir(path)).map_err(io_err(path))
}

/// A session's last activity: its data file's mtime (set on the store's clock at start and after every chunk),
/// or the folder's when a crash left no data file. `None`: no such session.
fn last_activity(session: &Path) -> Result<Option<std::time::SystemTime>, StoreError> {
    for p in [session.join("data"), session.to_owned()] {
        match fs::metadata(&p) {
            Ok(m) => return m.modified().map(Some).map_err(io_err(&p)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&p)(e)),
        }
    }
    Ok(None)
}

/// Remove a whole directory; `Ok(false)` when it was not there.
fn remove_dir_opt(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err(path)(e)),
    }
}

/// Entry names of a directory (hidden temp files left out); empty when it does not exist.
fn list_dir(dir: &Path) -> Result<Vec<String>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc_enotdir()) => {
            return Ok(Vec::new())
        }
        Err(e) => return Err(io_err(dir)(e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let name = e.map_err(io_err(dir))?.file_name();
        match name.into_string() {
            Ok(n) if !n.starts_with('.') => out.push(n),
            Ok(_) => {}
            Err(n) => return Err(StoreError::Corrupt(dir.join(n).display().to_string(), "not UTF-8".into())),
        }
    }
    Ok(out)
}

/// `<algo>-<hex>` file names (referrer and reference entries) back to digests.
fn digest_from_entry(dir: &Path, name: &str) -> Result<Digest, StoreError> {
    name.replacen('-', ":", 1)
        .parse()
        .map_err(|e: oci::DigestError| StoreError::Corrupt(dir.join(name).display().to_string(), e.to_string()))
}

/// Whether `dir` holds a visible entry (`depth` 1) or a subdirectory holding one (`depth` 2), stopping at the
/// first: an emptied `_tags` or `_blobs/sha256` directory left behind by deletes is no content.
fn has_entry(dir: &Path, depth: u32) -> Result<bool, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc_enotdir()) => return Ok(false),
        Err(e) => return Err(io_err(dir)(e)),
    };
    for e in entries {
        let e = e.map_err(io_err(dir))?;
        if e.file_name().as_encoded_bytes().starts_with(b".") {
            continue; // temp files
        }
        if depth <= 1 || has_entry(&e.path(), depth - 1)? {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Split a stored manifest file into its media type line and the manifest bytes.
fn parse_stored(path: &Path, raw: Vec<u8>) -> Result<StoredManifest, StoreError> {
    let Some(nl) = raw.iter().position(|&b| b == b'\n') else {
        return Err(StoreError::Corrupt(path.display().to_string(), "no media type line".into()));
    };
    let media_type = MediaType::parse(&String::from_utf8_lossy(&raw[..nl]));
    let mut bytes = Bytes::from(raw);
    let bytes = bytes.split_off(nl + 1);
    Ok(StoredManifest { bytes, media_type })
}

/// Call `f` with every stored manifest of a repository and the blobs it references. `Ok(false)`: the
/// repository has no manifest directory. Files that are not readable manifests reference nothing.
fn scan_manifests(
    layout: &Layout,
    repo: &RepoName,
    mut f: impl FnMut(&Digest, Vec<Digest>) -> Result<(), StoreError>,
) -> Result<bool, StoreError> {
    let root = layout.repo(repo).join("_manifests");
    if !root.is_dir() {
        return Ok(false);
    }
    for algo in list_dir(&root)? {
        for hex in list_dir(&root.join(&algo))? {
            let Ok(m) = format!("{algo}:{hex}").parse::<Digest>() else { continue };
            let path = layout.manifest(repo, &m);
            let Some(raw) = read_opt(&path)? else { continue }; // deleted meanwhile
            let Ok(stored) = parse_stored(&path, raw) else { continue };
            f(&m, super::blob_references(&stored, m.algorithm()))?;
        }
    }
    Ok(true)
}

/// Rebuild the `_refs` entries of manifests stored before the index existed, once per repository: every
/// entry durable, then the marker. Blocks on the disk.
fn index_refs(layout: &Layout, repo: &RepoName) -> Result<(), StoreError> {
    let marker = layout.refs_complete(repo);
    if marker.exists() {
        return Ok(());
    }
    let found = scan_manifests(layout, repo, |m, blobs| {
        for b in blobs {
            touch_durable(&layout.blob_ref(repo, &b, m))?;
        }
        Ok(())
    })?;
    if found {
        touch_durable(&marker)?;
    }
    Ok(())
}

/// Make a rename or creation in `path`'s directory durable.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if dir.as_os_str().is_empty() => File::open(".")?.sync_all(), // a relative `name`
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Removes a scratch directory when dropped, also when the future using it is cancelled (client gone).
struct ScratchDir(PathBuf);

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // Normally already removed (with its error reported) by the caller; this covers cancellation, where
        // nobody is left to report to. What stays is swept with the process's scratch folder.
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Move verified bytes into place and make the rename durable. The file's modified time becomes now: the
/// garbage collector's grace for a blob runs from its commit (or its last link), not from its upload's start.
fn commit_file(from: &Path, to: &Path) -> Result<(), StoreError> {
    create_parent(to)?;
    File::open(from)
        .and_then(|f| {
            f.set_modified(std::time::SystemTime::now())?;
            f.sync_all()
        })
        .map_err(io_err(from))?;
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

impl FsStore {
    /// Open (creating if needed) a store under `root` for writing, with default upload limits.
    pub fn open(root: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        Self::open_with(root, UploadLimits::default())
    }

    /// Open (creating if needed) a store under `root` for writing. Nothing of other processes is removed here
    /// (they may be running): leftovers go in [`ContentStore::sweep`], which only `wharf serve` calls.
    pub fn open_with(root: impl Into<PathBuf>, limits: UploadLimits) -> Result<FsStore, StoreError> {
        let layout = Layout::new(root);
        for dir in [layout.root().join("blobs"), layout.uploads(), layout.repos(), layout.root().join("meta")] {
            create_dir_durable(&dir).map_err(io_err(&dir))?;
        }
        let scratch = ProcessDir::create(&layout.tmp())?;
        let open = list_dir(&layout.uploads())?.len();
        Ok(Self::new(layout, Some(scratch), limits, open))
    }

    /// Open for reading only (`wharf sync status`): creates, locks and deletes nothing; writes fail.
    pub fn open_read_only(root: impl Into<PathBuf>) -> FsStore {
        Self::new(Layout::new(root), None, UploadLimits::default(), 0)
    }

    fn new(layout: Layout, scratch: Option<ProcessDir>, limits: UploadLimits, open: usize) -> FsStore {
        FsStore {
            layout,
            scratch,
            limits,
            open_uploads: open.into(),
            repo_locks: RepoLocks::default(),
            gc_gate: GcGate::default(),
            sessions: Mutex::new(HashMap::new()),
            tag_cache: Mutex::new(HashMap::new()),
            tag_generation: Default::default(),
            #[cfg(test)]
            sweep_pause: Mutex::new(None),
        }
    }

    fn writable(&self) -> Result<&ProcessDir, StoreError> {
        self.scratch.as_ref().ok_or_else(|| StoreError::ReadOnly(self.layout.root().display().to_string()))
    }

    /// The session's last activity.
    fn last_activity(&self, id: &UploadId) -> Result<Option<std::time::SystemTime>, StoreError> {
        last_activity(&self.layout.upload_dir(id))
    }

    /// Remove expired sessions on the blocking pool. Each is removed holding its session slot, taken with
    /// `try_lock` after the scan: a request in progress keeps its session (it is swept next time), and one
    /// waiting for the slot finds the session gone (unknown) instead of losing its directory mid-write. The
    /// open count goes down by one per removal, so concurrent starts are never overwritten.
    async fn sweep_uploads(&self) -> Result<usize, StoreError> {
        let (dir, limits) = (self.layout.uploads(), self.limits.clone());
        let candidates = blocking(move || {
            let mut out = Vec::new();
            for name in list_dir(&dir)? {
                // Other names are not ours to judge.
                if let Some(id) = UploadId::parse(&name) {
                    if last_activity(&dir.join(&name))?.is_some_and(|t| limits.expired(t)) {
                        out.push(id);
                    }
                }
            }
            Ok(out)
        })
        .await?;
        #[cfg(test)]
        {
            let pause = self.sweep_pause.lock().expect("pause lock").clone();
            if let Some((scanned, go)) = pause {
                scanned.notify_one();
                go.notified().await;
            }
        }
        let mut held = Vec::new();
        for id in candidates {
            if let Ok(guard) = self.session(&id).try_lock_owned() {
                held.push((id, guard));
            }
        }
        let (dir, limits) = (self.layout.uploads(), self.limits.clone());
        let ids: Vec<UploadId> = held.iter().map(|(id, _)| id.clone()).collect();
        let (removed, gone) = blocking(move || {
            let (mut removed, mut gone) = (Vec::new(), Vec::new());
            for id in ids {
                let session = dir.join(id.as_str());
                // Again under the slot: a request may have added bytes between the scan and the lock.
                match last_activity(&session)? {
                    Some(t) if limits.expired(t) => {
                        if remove_dir_opt(&session)? {
                            removed.push(id);
                        } else {
                            gone.push(id);
                        }
                    }
                    Some(_) => {}
                    None => gone.push(id), // finished or aborted meanwhile
                }
            }
            Ok((removed, gone))
        })
        .await?;
        // Slots of sessions that stay are kept (a request may hold a clone of one); only their guards go.
        for id in &removed {
            self.upload_ended();
            self.forget_session(id);
        }
        for id in &gone {
            self.forget_session(id);
        }
        drop(held);
        Ok(removed.len())
    }

    /// One session fewer, after we removed its folder.
    fn upload_ended(&self) {
        // Err only when the count is already 0 (a sweep recounted meanwhile): nothing to take away then.
        let _ = self.open_uploads.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| n.checked_sub(1),
        );
    }

    fn session(&self, id: &UploadId) -> Arc<tokio::sync::Mutex<Option<Digester>>> {
        self.sessions.lock().expect("session map lock").entry(id.as_str().to_owned()).or_default().clone()
    }

    fn forget_session(&self, id: &UploadId) {
        self.sessions.lock().expect("session map lock").remove(id.as_str());
    }

    /// Pass a session lookup through, dropping the hash-state slot of an unknown id, so requests for made-up
    /// or expired ids cannot grow the slot table.
    fn known<T>(&self, id: &UploadId, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(StoreError::UploadUnknown(_)) = &r {
            self.forget_session(id);
        }
        r
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
        // Every file here was written under a validated tag name, so one that does not parse is not a tag of
        // ours (e.g. left by hand) and is skipped rather than failing the listing.
        let mut names: Vec<Tag> = list_dir(dir)?.into_iter().filter_map(|n| n.parse().ok()).collect();
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
        let unknown = || StoreError::UploadUnknown(id.as_str().to_owned());
        let Some(repo) = read_opt(&repo_file)? else { return Err(unknown()) };
        if self.last_activity(id)?.is_none_or(|t| self.limits.expired(t)) {
            return Err(unknown()); // expired: the sweeper removes its bytes
        }
        let repo = String::from_utf8_lossy(&repo)
            .parse::<RepoName>()
            .map_err(|e| StoreError::Corrupt(repo_file.display().to_string(), e.to_string()))?;
        let data = dir.join("data");
        let size = match fs::metadata(&data) {
            Ok(m) => m.len(),
            // `upload_finish` moved the bytes into the store and was stopped (kill, crash) before it removed
            // the session directory, or the sweeper removed it meanwhile: the session is over.
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(unknown()),
            Err(e) => return Err(io_err(&data)(e)),
        };
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
            read::stream(path, start, len)
        };
        Ok(Some(BlobReader { meta, range, body }))
    }

    async fn blob_put(&self, expected: &Digest, size: Option<u64>, body: ByteStream) -> Result<BlobMeta, StoreError> {
        let dir = self.writable()?.path().join(UploadId::random().as_str());
        fs::create_dir(&dir).map_err(io_err(&dir))?;
        let _scratch = ScratchDir(dir.clone());
        let data = dir.join("data");
        let target = self.layout.blob(expected);
        let exists = target.exists();
        let result = async {
            let sink = (!exists).then(|| data.clone());
            let hasher = stream_to_file(sink, Digester::new(expected.algorithm()), body).await?;
            let meta = check(expected, size, hasher)?;
            if exists {
                // Renamed into place by a concurrent writer that may not have synced the directory yet (the
                // bytes were synced before the rename): make the entry durable before acknowledging.
                blocking(move || sync_dir(&target).map_err(io_err(&target))).await?;
            } else {
                let from = data.clone();
                blocking(move || commit_file(&from, &target)).await?;
            }
            Ok(meta)
        }
        .await;
        let cleanup = remove_dir_opt(&dir);
        let meta = result?;
        cleanup?;
        Ok(meta)
    }

    async fn blob_import(&self, expected: &Digest, path: &Path) -> Result<BlobMeta, StoreError> {
        self.writable()?;
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
        // Gone already when it was renamed into place.
        let cleanup = remove_opt(path);
        let meta = result?;
        cleanup?;
        Ok(meta)
    }

    async fn blob_delete(&self, digest: &Digest) -> Result<bool, StoreError> {
        self.writable()?;
        remove_opt(&self.layout.blob(digest))
    }

    async fn blob_link(&self, repo: &RepoName, digest: &Digest) -> Result<(), StoreError> {
        self.writable()?;
        let guard = self.gc_gate.link().await;
        guard.record(digest);
        let (path, blob, d) = (self.layout.blob_link(repo, digest), self.layout.blob(digest), digest.clone());
        let r = blocking(move || {
            // The pool blob first: a collector in another process re-checks this time right before deleting.
            let now = std::time::SystemTime::now();
            match File::open(&blob).and_then(|f| f.set_modified(now)) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::BlobUnknown(d)),
                Err(e) => return Err(io_err(&blob)(e)),
            }
            match File::open(&path).and_then(|f| f.set_modified(now)) {
                Ok(()) => sync_dir(&path).map_err(io_err(&path)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => touch_durable(&path),
                Err(e) => Err(io_err(&path)(e)),
            }
        })
        .await;
        drop(guard);
        r
    }

    async fn blob_linked(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        Ok(self.layout.blob_link(repo, digest).exists())
    }

    async fn blob_seen(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        let path = self.layout.blob_link(repo, digest);
        let modified = match fs::metadata(&path) {
            Ok(m) => m.modified().map_err(io_err(&path))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc_enotdir()) => {
                return Ok(false)
            }
            Err(e) => return Err(io_err(&path)(e)),
        };
        let now = std::time::SystemTime::now();
        if self.scratch.is_some() && now.duration_since(modified).is_ok_and(|age| age > super::LINK_REFRESH) {
            // A time, not content: no fsync. Best effort: the answer stands either way.
            let _ = File::open(&path).and_then(|f| f.set_modified(now));
        }
        Ok(true)
    }

    async fn blob_unlink(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        self.writable()?;
        let path = self.layout.blob_link(repo, digest);
        blocking(move || {
            let found = remove_opt(&path)?;
            if found {
                sync_dir(&path).map_err(io_err(&path))?;
            }
            Ok(found)
        })
        .await
    }

    async fn blob_unlink_many(&self, repo: &RepoName, digests: &[Digest]) -> Result<u64, StoreError> {
        self.writable()?;
        let paths: Vec<PathBuf> = digests.iter().map(|d| self.layout.blob_link(repo, d)).collect();
        blocking(move || {
            let mut found = 0;
            let mut dirs = std::collections::BTreeSet::new();
            for p in &paths {
                if remove_opt(p)? {
                    found += 1;
                    dirs.insert(p.parent().map(Path::to_path_buf).unwrap_or_default());
                }
            }
            // One sync per directory touched makes every removal in it durable.
            for d in dirs {
                File::open(&d).and_then(|f| f.sync_all()).map_err(io_err(&d))?;
            }
            Ok(found)
        })
        .await
    }

    async fn blob_referenced_by(&self, repo: &RepoName, digest: &Digest) -> Result<Option<Digest>, StoreError> {
        if !self.layout.refs_complete(repo).exists() {
            let (layout, r) = (self.layout.clone(), repo.clone());
            if self.scratch.is_some() {
                blocking(move || index_refs(&layout, &r)).await?;
            } else {
                // Read-only: answer from the manifests themselves, writing nothing.
                let want = digest.clone();
                return blocking(move || {
                    let mut users = Vec::new();
                    scan_manifests(&layout, &r, |m, blobs| {
                        if blobs.contains(&want) {
                            users.push(m.clone());
                        }
                        Ok(())
                    })?;
                    Ok(users.into_iter().min())
                })
                .await;
            }
        }
        let dir = self.layout.blob_refs(repo, digest);
        let mut names = list_dir(&dir)?;
        names.sort();
        for name in names {
            let m = digest_from_entry(&dir, &name)?;
            // An entry outlives its manifest only after a crash mid-push or mid-delete: not a reference.
            if self.layout.manifest(repo, &m).exists() {
                return Ok(Some(m));
            }
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
        let (root, after) = (self.layout.repos(), after.map(str::to_owned));
        blocking(move || list_repos(&root, after.as_deref(), limit, true)).await
    }

    async fn manifest_list(&self, repo: &RepoName) -> Result<Vec<ManifestEntry>, StoreError> {
        let dir = self.layout.repo(repo).join("_manifests");
        let found = blocking(move || timed_entries(&dir)).await?;
        Ok(found.into_iter().map(|(digest, _, modified)| ManifestEntry { digest, modified }).collect())
    }

    async fn blob_link_list(&self, repo: &RepoName) -> Result<Vec<LinkEntry>, StoreError> {
        let dir = self.layout.repo(repo).join("_blobs");
        let found = blocking(move || timed_entries(&dir)).await?;
        Ok(found.into_iter().map(|(digest, _, modified)| LinkEntry { digest, modified }).collect())
    }

    async fn pool_list(&self, shard: u8) -> Result<Vec<PoolEntry>, StoreError> {
        let root = self.layout.root().join("blobs");
        let shard = super::shard_name(shard);
        blocking(move || {
            let mut out = Vec::new();
            for algo in list_dir(&root)? {
                let dir = root.join(&algo).join(&shard);
                for hex in list_dir(&dir)? {
                    let Ok(digest) = format!("{algo}:{hex}").parse::<Digest>() else { continue };
                    let p = dir.join(&hex);
                    match fs::metadata(&p) {
                        Ok(m) => {
                            out.push(PoolEntry { digest, size: m.len(), modified: m.modified().map_err(io_err(&p))? })
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&p)(e)),
                    }
                }
            }
            out.sort_by(|a, b| a.digest.cmp(&b.digest));
            Ok(out)
        })
        .await
    }

    async fn pool_delete_if_older(
        &self,
        digest: &Digest,
        cutoff: std::time::SystemTime,
    ) -> Result<Option<u64>, StoreError> {
        self.writable()?;
        let path = self.layout.blob(digest);
        blocking(move || {
            let m = match fs::metadata(&path) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(io_err(&path)(e)),
            };
            if m.modified().map_err(io_err(&path))? > cutoff {
                return Ok(None); // linked (or committed) again since the collection started
            }
            Ok(remove_opt(&path)?.then_some(m.len()))
        })
        .await
    }

    async fn blob_quarantine(&self, digest: &Digest, batch: &str) -> Result<Option<String>, StoreError> {
        self.writable()?;
        let (from, to) = (self.layout.blob(digest), self.layout.quarantined_blob(batch, digest));
        blocking(move || quarantine_file(&from, &to)).await
    }

    async fn manifest_quarantine(
        &self,
        repo: &RepoName,
        digest: &Digest,
        batch: &str,
    ) -> Result<Option<String>, StoreError> {
        self.writable()?;
        let (from, to) = (self.layout.manifest(repo, digest), self.layout.quarantined_manifest(batch, repo, digest));
        let referrers = self.layout.repo(repo).join("_referrers");
        let entry = format!("{}-{}", digest.algorithm(), digest.hex());
        blocking(move || {
            let Some(moved) = quarantine_file(&from, &to)? else { return Ok(None) };
            // Its referrer entry (under whichever subject it named; the bytes may not parse any more).
            for subject in list_dir(&referrers)? {
                let p = referrers.join(subject).join(&entry);
                if remove_opt(&p)? {
                    sync_dir(&p).map_err(io_err(&p))?;
                }
            }
            Ok(Some(moved))
        })
        .await
    }

    async fn upload_start(&self, repo: &RepoName) -> Result<UploadId, StoreError> {
        self.writable()?;
        let limit = self.limits.max_open;
        let count = || self.open_uploads.load(std::sync::atomic::Ordering::SeqCst);
        if count() >= limit {
            self.sweep_uploads().await?; // expired sessions make room first
        }
        let reserved = self.open_uploads.fetch_update(
            std::sync::atomic::Ordering::SeqCst,
            std::sync::atomic::Ordering::SeqCst,
            |n| (n < limit).then_some(n + 1),
        );
        if let Err(open) = reserved {
            return Err(StoreError::TooManyUploads { open, limit });
        }
        let id = UploadId::random();
        let dir = self.layout.upload_dir(&id);
        let repo = repo.as_str().to_owned();
        let now = (self.limits.clock)();
        let created = blocking(move || {
            create_dir_durable(&dir).map_err(io_err(&dir))?;
            let data = dir.join("data");
            File::create(&data).and_then(|f| f.set_modified(now)).map_err(io_err(&data))?;
            write_atomic(&dir.join("repo"), &[repo.as_bytes()])
        })
        .await;
        if let Err(e) = created {
            self.upload_ended();
            let leftover = remove_dir_opt(&self.layout.upload_dir(&id));
            return Err(leftover.err().unwrap_or(e));
        }
        Ok(id)
    }

    async fn upload_state(&self, id: &UploadId) -> Result<UploadState, StoreError> {
        self.read_state(id)
    }

    async fn upload_append(&self, id: &UploadId, offset: u64, body: ByteStream) -> Result<u64, StoreError> {
        self.writable()?;
        let slot = self.session(id);
        let mut slot = slot.lock().await;
        let state = self.known(id, self.read_state(id))?;
        if offset != state.size {
            return Err(StoreError::UploadOffset { given: offset, current: state.size });
        }
        let hasher = self.hasher_for(&mut slot, id, state.size, Algorithm::Sha256).await?;
        let data = self.data_path(id);
        let hasher = stream_to_file(Some(data.clone()), hasher, body).await?;
        // The data file's mtime is the session's last activity, on the store's clock.
        OpenOptions::new()
            .write(true)
            .open(&data)
            .and_then(|f| f.set_modified((self.limits.clock)()))
            .map_err(io_err(&data))?;
        let len = hasher.len();
        *slot = Some(hasher);
        Ok(len)
    }

    async fn upload_finish(&self, id: &UploadId, expected: &Digest) -> Result<BlobMeta, StoreError> {
        self.writable()?;
        let slot = self.session(id);
        let mut slot = slot.lock().await;
        let state = self.known(id, self.read_state(id))?;
        let hasher = self.hasher_for(&mut slot, id, state.size, expected.algorithm()).await?;
        let dir = self.layout.upload_dir(id);
        let result = match check(expected, None, hasher) {
            Ok(meta) => {
                let (from, target) = (dir.join("data"), self.layout.blob(expected));
                blocking(move || commit_file(&from, &target)).await.map(|()| meta)
            }
            Err(e) => Err(e),
        };
        let cleanup = {
            let dir = dir.clone();
            blocking(move || remove_dir_opt(&dir)).await
        };
        if matches!(cleanup, Ok(true)) {
            self.upload_ended();
        }
        drop(slot);
        self.forget_session(id);
        let meta = result?;
        cleanup?;
        Ok(meta)
    }

    async fn upload_abort(&self, id: &UploadId) -> Result<(), StoreError> {
        self.writable()?;
        let slot = self.session(id);
        let _slot = slot.lock().await;
        self.known(id, self.read_state(id))?;
        let dir = self.layout.upload_dir(id);
        if blocking(move || remove_dir_opt(&dir)).await? {
            self.upload_ended();
        }
        self.forget_session(id);
        Ok(())
    }

    async fn sweep(&self) -> Result<SweepReport, StoreError> {
        if self.scratch.is_none() {
            return Ok(SweepReport::default()); // read-only: deletes nothing
        }
        let uploads = self.sweep_uploads().await?;
        let now = std::time::SystemTime::now();
        let (tmp, spool) = (self.layout.tmp(), self.layout.spool());
        let scratch = blocking(move || {
            let a = scratch::sweep(&tmp, scratch::STALE_AFTER, now);
            let b = scratch::sweep(&spool, scratch::STALE_AFTER, now);
            Ok(a? + b?)
        })
        .await?;
        Ok(SweepReport { uploads, scratch })
    }

    async fn manifest_get(&self, repo: &RepoName, digest: &Digest) -> Result<Option<StoredManifest>, StoreError> {
        let path = self.layout.manifest(repo, digest);
        let Some(raw) = read_opt(&path)? else { return Ok(None) };
        parse_stored(&path, raw).map(Some)
    }

    async fn manifest_put(
        &self,
        repo: &RepoName,
        digest: &Digest,
        manifest: &StoredManifest,
        referrer: Option<(&Digest, &Descriptor)>,
    ) -> Result<(), StoreError> {
        self.writable()?;
        let refs: Vec<PathBuf> = super::blob_references(manifest, digest.algorithm())
            .iter()
            .map(|b| self.layout.blob_ref(repo, b, digest))
            .collect();
        let referrer = referrer.map(|(subject, desc)| {
            (self.layout.referrer(repo, subject, digest), serde_json::to_vec(desc).expect("descriptors serialise"))
        });
        let path = self.layout.manifest(repo, digest);
        let manifest = manifest.clone();
        // A repository whose first manifest arrives now has had every reference recorded at push from the
        // start: its index is complete without the one-time scan (and its fsync per entry) of older stores.
        let first = path.parent().and_then(Path::parent).is_some_and(|dir| !dir.exists());
        let marker = self.layout.refs_complete(repo);
        blocking(move || {
            for r in &refs {
                touch_durable(r)?;
            }
            if first {
                touch_durable(&marker)?;
            }
            write_atomic(&path, &[manifest.media_type.as_str().as_bytes(), b"\n", &manifest.bytes])?;
            if let Some((entry, json)) = referrer {
                write_atomic(&entry, &[&json])?;
            }
            Ok(())
        })
        .await
    }

    async fn manifest_delete_many(&self, repo: &RepoName, digests: &[Digest]) -> Result<u64, StoreError> {
        self.writable()?;
        // What each manifest's delete removes besides itself: its referrer entry and its reference entries.
        let mut plans = Vec::new();
        for d in digests {
            let Some(m) = self.manifest_get(repo, d).await? else { continue };
            let algo = d.algorithm();
            let subject = oci::Manifest::parse(m.bytes.clone(), Some(&m.media_type), algo)
                .ok()
                .and_then(|p| p.subject().map(|s| s.digest.clone()));
            let referrer = subject.map(|s| self.layout.referrer(repo, &s, d));
            let refs: Vec<PathBuf> =
                super::blob_references(&m, algo).iter().map(|b| self.layout.blob_ref(repo, b, d)).collect();
            plans.push((self.layout.manifest(repo, d), d.to_string(), referrer, refs));
        }
        if plans.is_empty() {
            return Ok(0);
        }
        let tags = self.layout.tags(repo);
        let result = blocking(move || {
            // Tags first, read once for the batch, and durable before any manifest goes.
            let doomed: std::collections::HashSet<&str> = plans.iter().map(|(_, d, _, _)| d.as_str()).collect();
            let mut untagged = false;
            for name in list_dir(&tags)? {
                let p = tags.join(&name);
                if read_opt(&p)?.is_some_and(|b| std::str::from_utf8(b.trim_ascii()).is_ok_and(|t| doomed.contains(t)))
                {
                    untagged |= remove_opt(&p)?;
                }
            }
            if untagged {
                File::open(&tags).and_then(|d| d.sync_all()).map_err(io_err(&tags))?;
            }
            let mut dirs = std::collections::BTreeSet::new();
            for (_, _, referrer, _) in &plans {
                if let Some(entry) = referrer {
                    if remove_opt(entry)? {
                        dirs.insert(entry.parent().map(Path::to_path_buf).unwrap_or_default());
                    }
                }
            }
            for d in std::mem::take(&mut dirs) {
                File::open(&d).and_then(|f| f.sync_all()).map_err(io_err(&d))?;
            }
            let mut found = 0;
            for (manifest, _, _, _) in &plans {
                if remove_opt(manifest)? {
                    found += 1;
                    dirs.insert(manifest.parent().map(Path::to_path_buf).unwrap_or_default());
                }
            }
            for d in dirs {
                File::open(&d).and_then(|f| f.sync_all()).map_err(io_err(&d))?;
            }
            for (_, _, _, refs) in &plans {
                for r in refs {
                    remove_opt(r)?;
                }
            }
            Ok(found)
        })
        .await;
        self.forget_tags(repo);
        result
    }

    async fn manifest_delete(&self, repo: &RepoName, digest: &Digest) -> Result<bool, StoreError> {
        self.writable()?;
        let Some(m) = self.manifest_get(repo, digest).await? else { return Ok(false) };
        let algo = digest.algorithm();
        // Bytes we stored parsed when they were pushed; if they no longer do, there is no referrer entry or
        // reference to find, and the manifest itself still goes.
        let subject = oci::Manifest::parse(m.bytes.clone(), Some(&m.media_type), algo)
            .ok()
            .and_then(|p| p.subject().map(|s| s.digest.clone()));
        let referrer = subject.map(|s| self.layout.referrer(repo, &s, digest));
        let refs: Vec<PathBuf> =
            super::blob_references(&m, algo).iter().map(|b| self.layout.blob_ref(repo, b, digest)).collect();
        let (tags, manifest, want) = (self.layout.tags(repo), self.layout.manifest(repo, digest), digest.to_string());
        let result = blocking(move || {
            // Tags first (and durably), so no crash leaves a tag pointing at a deleted manifest; a tag directory
            // that cannot be read stops the delete before anything is removed.
            let mut untagged = false;
            for name in list_dir(&tags)? {
                let p = tags.join(&name);
                if read_opt(&p)?.is_some_and(|b| b.trim_ascii() == want.as_bytes()) {
                    untagged |= remove_opt(&p)?;
                }
            }
            if untagged {
                File::open(&tags).and_then(|d| d.sync_all()).map_err(io_err(&tags))?;
            }
            if let Some(entry) = &referrer {
                if remove_opt(entry)? {
                    sync_dir(entry).map_err(io_err(entry))?;
                }
            }
            let found = remove_opt(&manifest)?;
            if found {
                sync_dir(&manifest).map_err(io_err(&manifest))?;
            }
            for r in &refs {
                remove_opt(r)?;
            }
            Ok(found)
        })
        .await;
        self.forget_tags(repo);
        result
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
        self.writable()?;
        let (path, value) = (self.layout.tag(repo, tag), digest.to_string());
        let r = blocking(move || write_atomic(&path, &[value.as_bytes()])).await;
        self.forget_tags(repo);
        r
    }

    async fn tag_delete(&self, repo: &RepoName, tag: &Tag) -> Result<bool, StoreError> {
        self.writable()?;
        let path = self.layout.tag(repo, tag);
        let r = blocking(move || {
            let found = remove_opt(&path)?;
            if found {
                sync_dir(&path).map_err(io_err(&path))?;
            }
            Ok(found)
        })
        .await;
        self.forget_tags(repo);
        r
    }

    async fn tag_list(
        &self,
        repo: &RepoName,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Option<Page<Tag>>, StoreError> {
        // A repository with any content (a blob link is enough) lists its tags, perhaps none.
        if !self.repo_exists(repo).await? {
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
        self.writable()?;
        let path = self.meta_path(key)?;
        blocking(move || write_atomic(&path, &[&value])).await
    }

    async fn meta_delete(&self, key: &str) -> Result<bool, StoreError> {
        self.writable()?;
        let path = self.meta_path(key)?;
        blocking(move || match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err(&path)(e)),
        })
        .await
    }

    async fn meta_list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let dir = self.meta_path(prefix)?;
        let mut keys = Vec::new();
        for name in list_dir(&dir)? {
            let p = dir.join(&name);
            let is_file = match fs::metadata(&p) {
                Ok(m) => m.is_file(),
                Err(e) if e.kind() == io::ErrorKind::NotFound => false, // removed meanwhile
                Err(e) => return Err(io_err(&p)(e)),
            };
            if is_file {
                keys.push(format!("{prefix}/{name}"));
            }
        }
        keys.sort();
        Ok(keys)
    }

    async fn repo_exists(&self, repo: &RepoName) -> Result<bool, StoreError> {
        // Real content, like the other back-ends: deletes leave emptied directories behind, and a name whose
        // hosted content is all gone must fall back to the default upstream again.
        let dir = self.layout.repo(repo);
        Ok(has_entry(&dir.join("_tags"), 1)?
            || has_entry(&dir.join("_manifests"), 2)?
            || has_entry(&dir.join("_blobs"), 2)?)
    }

    async fn repo_list(&self, after: Option<&str>, limit: usize) -> Result<Page<RepoName>, StoreError> {
        let (root, after) = (self.layout.repos(), after.map(str::to_owned));
        blocking(move || list_repos(&root, after.as_deref(), limit, false)).await
    }
}

/// Repositories under `root` in lexical order after `after`, at most `limit`: names with a manifest or a tag,
/// and with `links` also names holding only blob links. Blocks on the disk.
fn list_repos(root: &Path, after: Option<&str>, limit: usize, links: bool) -> Result<Page<RepoName>, StoreError> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue, // removed meanwhile
            Err(e) => return Err(io_err(&dir)(e)),
        };
        let mut is_repo = false;
        for e in entries {
            let e = e.map_err(io_err(&dir))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if (name == "_manifests" && has_entry(&e.path(), 2)?)
                || (name == "_tags" && has_entry(&e.path(), 1)?)
                || (links && name == "_blobs" && has_entry(&e.path(), 2)?)
            {
                is_repo = true;
            } else if !name.starts_with(['_', '.']) && e.file_type().map_err(io_err(&e.path()))?.is_dir() {
                let child = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                stack.push((e.path(), child));
            }
        }
        if is_repo {
            found.push(prefix);
        }
    }
    found.retain(|n| after.is_none_or(|a| n.as_str() > a));
    found.sort_unstable();
    found.truncate(limit);
    // Folders were created under validated names; one that does not parse was not made by Wharf.
    Ok(found.into_iter().filter_map(|n| n.parse().ok()).collect())
}

/// Move a stored file aside (same filesystem: a rename), durably in both directories. `None`: not there.
fn quarantine_file(from: &Path, to: &Path) -> Result<Option<String>, StoreError> {
    if !from.exists() {
        return Ok(None);
    }
    if let Some(dir) = to.parent() {
        create_dir_durable(dir).map_err(io_err(dir))?;
    }
    match fs::rename(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None), // deleted meanwhile (gc)
        Err(e) => return Err(io_err(to)(e)),
    }
    sync_dir(from).map_err(io_err(from))?;
    sync_dir(to).map_err(io_err(to))?;
    Ok(Some(to.display().to_string()))
}

/// The `<algo>/<hex>` files under `dir` (manifests, links) as digests with size and modified time, sorted.
/// Names that are not digests were not written by Wharf and are left out. Blocks on the disk.
fn timed_entries(dir: &Path) -> Result<Vec<(Digest, u64, std::time::SystemTime)>, StoreError> {
    let mut out = Vec::new();
    for algo in list_dir(dir)? {
        let sub = dir.join(&algo);
        for hex in list_dir(&sub)? {
            let Ok(digest) = format!("{algo}:{hex}").parse::<Digest>() else { continue };
            let p = sub.join(&hex);
            match fs::metadata(&p) {
                Ok(m) => out.push((digest, m.len(), m.modified().map_err(io_err(&p))?)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {} // deleted meanwhile
                Err(e) => return Err(io_err(&p)(e)),
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
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
        crate::store::testsuite::run_all(move |limits| {
            n += 1;
            Arc::new(FsStore::open_with(root.join(n.to_string()), limits).unwrap()) as Arc<dyn ContentStore>
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
        assert_eq!(fs::read_dir(store.writable().unwrap().path()).unwrap().count(), 0);
        assert!(store.blob_stat(&want).await.unwrap().is_none());
    }

    fn one(b: &'static [u8]) -> ByteStream {
        Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b))]))
    }

    #[tokio::test]
    async fn a_second_process_leaves_in_flight_scratch_alone() {
        let dir = tempfile::tempdir().unwrap();
        let first = FsStore::open(dir.path()).unwrap();
        let in_flight = first.writable().unwrap().path().join("blob").join("data");
        fs::create_dir_all(in_flight.parent().unwrap()).unwrap();
        fs::write(&in_flight, b"half a blob").unwrap();
        // `wharf sync` opening the same directory, and a sweep long after (the first process is alive).
        let second = FsStore::open(dir.path()).unwrap();
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(86_400);
        assert_eq!(scratch::sweep(&dir.path().join("tmp"), scratch::STALE_AFTER, later).unwrap(), 0);
        second.sweep().await.unwrap();
        assert_eq!(fs::read(&in_flight).unwrap(), b"half a blob");
        assert!(second.writable().unwrap().path().exists());
        // Each process writes in its own folder.
        assert_ne!(first.writable().unwrap().path(), second.writable().unwrap().path());
    }

    #[tokio::test]
    async fn sweep_removes_expired_sessions_and_their_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let old = store.upload_start(&repo).await.unwrap();
        store.upload_append(&old, 0, one(b"abandoned")).await.unwrap();
        let fresh = store.upload_start(&repo).await.unwrap();
        let day_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(25 * 3600);
        File::options().write(true).open(store.data_path(&old)).unwrap().set_modified(day_ago).unwrap();
        // Expired sessions are unknown before any sweep.
        assert!(matches!(store.upload_state(&old).await, Err(StoreError::UploadUnknown(_))));
        assert!(store.layout.upload_dir(&old).exists());
        // A restarted server sweeps them (and only them) at start-up.
        drop(store);
        let store = FsStore::open(dir.path()).unwrap();
        assert_eq!(store.sweep().await.unwrap().uploads, 1);
        assert!(!store.layout.upload_dir(&old).exists(), "the bytes are gone");
        assert_eq!(store.upload_state(&fresh).await.unwrap().size, 0);
    }

    #[tokio::test]
    async fn manifest_delete_stops_when_the_tags_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let m = StoredManifest { bytes: Bytes::from_static(b"{}"), media_type: oci::MediaType::OciManifest };
        let d = Digest::sha256_of(b"{}");
        store.manifest_put(&repo, &d, &m, None).await.unwrap();
        // A tags directory that cannot be listed (a symlink loop: ELOOP, which even root gets).
        let tags = store.layout.tags(&repo);
        std::os::unix::fs::symlink(&tags, &tags).unwrap();
        assert!(matches!(store.manifest_delete(&repo, &d).await, Err(StoreError::Io { .. })));
        assert!(store.manifest_get(&repo, &d).await.unwrap().is_some(), "no tag may be left pointing at nothing");
    }

    #[tokio::test]
    async fn a_referrer_never_appears_before_its_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let subject = Digest::sha256_of(b"subject");
        let m = StoredManifest { bytes: Bytes::from_static(b"{}"), media_type: oci::MediaType::OciManifest };
        let d = Digest::sha256_of(b"{}");
        let desc = Descriptor::new(oci::MediaType::OciManifest, d.clone(), 2);
        // Make the manifest write fail: its directory's place is taken by a file.
        let manifests = store.layout.repo(&repo).join("_manifests");
        fs::create_dir_all(&manifests).unwrap();
        fs::write(manifests.join("sha256"), b"in the way").unwrap();
        assert!(store.manifest_put(&repo, &d, &m, Some((&subject, &desc))).await.is_err());
        assert!(store.referrers(&repo, &subject).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn read_only_open_creates_and_deletes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        let store = FsStore::open_read_only(&root);
        assert_eq!(store.meta_get("sync/x.json").await.unwrap(), None);
        assert!(matches!(store.meta_put("sync/x.json", Bytes::new()).await, Err(StoreError::ReadOnly(_))));
        assert!(matches!(store.upload_start(&"a".parse().unwrap()).await, Err(StoreError::ReadOnly(_))));
        assert_eq!(store.sweep().await.unwrap(), SweepReport::default());
        assert!(!root.exists());
    }

    #[test]
    fn durable_mkdir_creates_every_level_once() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        create_dir_durable(&deep).unwrap();
        create_dir_durable(&deep).unwrap();
        assert!(deep.is_dir());
        fs::write(dir.path().join("f"), b"").unwrap();
        assert!(create_dir_durable(&dir.path().join("f/g")).is_err());
        // A relative path with no `./` (e.g. `--data-dir data`): its parent is "".
        let cwd = std::env::current_dir().unwrap();
        let rel = format!("wharf-mkdir-test-{}", std::process::id());
        create_dir_durable(Path::new(&rel)).unwrap();
        fs::remove_dir(cwd.join(&rel)).unwrap();
    }

    #[tokio::test]
    async fn a_session_stopped_between_commit_and_cleanup_is_over() {
        // `upload_finish` renames `data` into the store, then removes the session directory; a kill between
        // the two leaves the directory with `repo` only.
        let dir = tempfile::tempdir().unwrap();
        let store = FsStore::open(dir.path()).unwrap();
        let id = store.upload_start(&"a/b".parse().unwrap()).await.unwrap();
        fs::remove_file(store.data_path(&id)).unwrap();
        assert!(matches!(store.upload_state(&id).await, Err(StoreError::UploadUnknown(_))));
        let body: ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::from_static(b"x"))]));
        assert!(matches!(store.upload_append(&id, 0, body).await, Err(StoreError::UploadUnknown(_))));
    }

    /// A manifest referencing `config` and `layer`, as pushed.
    fn image(config: &Digest, layer: &Digest) -> (Digest, StoredManifest) {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":6}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":5}}]}}"#
        );
        let bytes = Bytes::from(json);
        (Digest::sha256_of(&bytes), StoredManifest { bytes, media_type: oci::MediaType::OciManifest })
    }

    #[tokio::test]
    async fn manifests_stored_before_the_reference_index_still_protect_their_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "old/app".parse().unwrap();
        let (config, layer) = (Digest::sha256_of(b"config"), Digest::sha256_of(b"layer"));
        let (md, m) = image(&config, &layer);
        {
            let store = FsStore::open(dir.path()).unwrap();
            store.manifest_put(&repo, &md, &m, None).await.unwrap();
            // The layout of earlier versions: manifests without `_refs`.
            fs::remove_dir_all(store.layout.repo(&repo).join("_refs")).unwrap();
        }
        // `wharf sync status` (read-only) answers from the manifests and writes nothing.
        let ro = FsStore::open_read_only(dir.path());
        assert_eq!(ro.blob_referenced_by(&repo, &layer).await.unwrap(), Some(md.clone()));
        assert_eq!(ro.blob_referenced_by(&repo, &Digest::sha256_of(b"other")).await.unwrap(), None);
        assert!(!ro.layout.repo(&repo).join("_refs").exists());
        // The upgraded server refuses the delete (the service checks `blob_referenced_by` first) and rebuilds
        // the index once.
        let store = FsStore::open(dir.path()).unwrap();
        assert_eq!(store.blob_referenced_by(&repo, &layer).await.unwrap(), Some(md.clone()));
        assert_eq!(store.blob_referenced_by(&repo, &config).await.unwrap(), Some(md.clone()));
        assert!(store.layout.blob_ref(&repo, &layer, &md).exists());
        assert!(store.layout.refs_complete(&repo).exists());
        // From then on the index is kept by pushes and deletes as usual.
        assert!(store.manifest_delete(&repo, &md).await.unwrap());
        assert_eq!(store.blob_referenced_by(&repo, &layer).await.unwrap(), None);
        // A repository without manifests is not touched by the lookup.
        let empty: RepoName = "never/pushed".parse().unwrap();
        assert_eq!(store.blob_referenced_by(&empty, &layer).await.unwrap(), None);
        assert!(!store.layout.repo(&empty).exists());
    }

    #[tokio::test]
    async fn read_only_refuses_every_write_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let d = Digest::sha256_of(b"blob");
        let (md, m) = image(&d, &d);
        let t: Tag = "v1".parse().unwrap();
        let session = {
            let store = FsStore::open(dir.path()).unwrap();
            store.blob_put(&d, None, one(b"blob")).await.unwrap();
            store.blob_link(&repo, &d).await.unwrap();
            store.manifest_put(&repo, &md, &m, None).await.unwrap();
            store.tag_put(&repo, &t, &md).await.unwrap();
            let id = store.upload_start(&repo).await.unwrap();
            store.upload_append(&id, 0, one(b"blob")).await.unwrap();
            id
        };
        let spool = dir.path().join("spool-file");
        fs::write(&spool, b"new blob").unwrap();
        let new = Digest::sha256_of(b"new blob");
        let other: RepoName = "c".parse().unwrap();
        let s = FsStore::open_read_only(dir.path());
        let ro = |r: Result<(), StoreError>, what: &str| assert!(matches!(r, Err(StoreError::ReadOnly(_))), "{what}");
        ro(s.blob_put(&new, None, one(b"new blob")).await.map(drop), "blob_put");
        ro(s.blob_import(&new, &spool).await.map(drop), "blob_import");
        ro(s.blob_delete(&d).await.map(drop), "blob_delete");
        ro(s.blob_link(&other, &d).await, "blob_link");
        ro(s.blob_unlink(&repo, &d).await.map(drop), "blob_unlink");
        ro(s.upload_start(&repo).await.map(drop), "upload_start");
        ro(s.upload_append(&session, 4, one(b"more")).await.map(drop), "upload_append");
        ro(s.upload_finish(&session, &d).await.map(drop), "upload_finish");
        ro(s.upload_abort(&session).await, "upload_abort");
        ro(s.manifest_put(&other, &md, &m, None).await, "manifest_put");
        ro(s.manifest_delete(&repo, &md).await.map(drop), "manifest_delete");
        ro(s.tag_put(&repo, &"v2".parse().unwrap(), &md).await, "tag_put");
        ro(s.tag_delete(&repo, &t).await.map(drop), "tag_delete");
        ro(s.meta_put("sync/x.json", Bytes::new()).await, "meta_put");
        // Everything is as the writer left it.
        assert!(s.blob_stat(&d).await.unwrap().is_some());
        assert!(s.blob_stat(&new).await.unwrap().is_none());
        assert_eq!(fs::read(&spool).unwrap(), b"new blob");
        assert!(s.blob_linked(&repo, &d).await.unwrap());
        assert!(!s.repo_exists(&other).await.unwrap());
        assert_eq!(s.upload_state(&session).await.unwrap().size, 4);
        assert_eq!(s.tag_get(&repo, &t).await.unwrap(), Some(md.clone()));
        assert!(s.manifest_get(&repo, &md).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn the_upload_sweep_spares_sessions_locked_after_its_scan_and_keeps_concurrent_starts() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
        let clock = crate::store::testsuite::TestClock::default();
        let hour = std::time::Duration::from_secs(3600);
        let store = Arc::new(FsStore::open_with(dir.path(), clock.limits(hour, 100)).unwrap());
        let busy = store.upload_start(&repo).await.unwrap();
        let idle = store.upload_start(&repo).await.unwrap();
        clock.advance(hour * 2);
        let (scanned, go) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        *store.sweep_pause.lock().unwrap() = Some((scanned.clone(), go.clone()));
        let sweeper = tokio::spawn({
            let store = store.clone();
            async move { store.sweep_uploads().await }
        });
        scanned.notified().await;
        // Both sessions were expired when scanned. Now a request takes `busy`'s slot (as one that passed its
        // expiry check an instant earlier would) and another client starts a session.
        let request = store.session(&busy).lock_owned().await;
        let started = store.upload_start(&repo).await.unwrap();
        go.notify_one();
        assert_eq!(sweeper.await.unwrap().unwrap(), 1);
        assert!(store.layout.upload_dir(&busy).join("data").exists(), "removed under a request");
        assert!(!store.layout.upload_dir(&idle).exists());
        assert!(!store.sessions.lock().unwrap().contains_key(idle.as_str()), "its slot is dropped too");
        assert_eq!(store.upload_state(&started).await.unwrap().size, 0);
        let open = || store.open_uploads.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(open(), 2, "busy and started are open");
        // Once the request is over, the next sweep takes the expired session.
        drop(request);
        *store.sweep_pause.lock().unwrap() = None;
        assert_eq!(store.sweep_uploads().await.unwrap(), 1);
        assert_eq!(open(), 1);
    }

    #[tokio::test]
    async fn chunked_upload_resumes_after_restart() {
        let dir = tempfile::tempdir().unwrap();
        let repo: RepoName = "a/b".parse().unwrap();
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
