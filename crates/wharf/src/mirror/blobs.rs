//! Mirrored blobs: one fill per digest, streamed to every waiting client while it is written to a spool
//! file, verified, then moved into the store.
//!
//! The fill runs as its own task, so it finishes even when every client has gone. Clients read the spool
//! file behind the writer (following a `watch` of the bytes written), so a slow client never slows the fill
//! or makes it buffer. A client's stream ends successfully only after the digest has been verified; on a
//! mismatch it ends with an error (the client sees a broken body) and nothing is stored.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Digest, Digester};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::{mpsc, watch};

use super::{absent_as_none, bump, is_absent, Key, Mirror, MirrorError, Mirrored};
use crate::policy::routing::MirrorRoute;
use crate::store::ByteStream;
use crate::upstream::UpstreamError;

const READ_CHUNK: usize = 256 * 1024;
/// Bytes gathered from the upstream before they go to the spool writer.
const HAND_OFF: usize = 128 * 1024;

/// How a mirrored blob request is answered.
pub enum MirrorBlob {
    /// The blob is (now) in the store and linked in the repository: serve it from there.
    Local,
    /// The blob is being fetched: stream it as it arrives.
    Streaming {
        /// Total size.
        size: u64,
        /// Bytes, verified before the stream ends.
        body: ByteStream,
    },
    /// Answer to a `HEAD` of a blob that is not cached: the upstream's size.
    Head {
        /// Size announced upstream.
        size: u64,
    },
}

#[derive(Clone, Debug)]
pub(super) enum FillState {
    Connecting,
    Streaming {
        size: Option<u64>,
        written: u64,
    },
    /// Every byte is in the spool file and the digest checked out: followers may finish; the move into the
    /// store happens next, off the clients' critical path.
    Verified,
    Done,
    NotFound,
    Failed(String),
}

pub(super) struct Fill {
    path: PathBuf,
    state: watch::Receiver<FillState>,
}

impl Mirror {
    /// Answer a blob read for a mirrored repository. `Ok(None)`: the upstream does not have it.
    pub async fn blob(
        &self,
        route: &MirrorRoute,
        digest: &Digest,
        head: bool,
        whole_only: bool,
    ) -> Result<Option<MirrorBlob>, MirrorError> {
        let answer = self.blob_answer(route, digest, head, whole_only).await;
        if let Ok(Some(MirrorBlob::Local | MirrorBlob::Streaming { .. })) = &answer {
            self.touch(&route.local, digest);
        }
        answer
    }

    /// Whether the blob is cached and visible for this route; a hit is counted and noted for the cache
    /// budget like a local read (the caller redirects the client to the store instead of streaming).
    pub async fn cached_hit(&self, route: &MirrorRoute, digest: &Digest) -> Result<bool, MirrorError> {
        if !self.cached(route, digest).await? {
            return Ok(false);
        }
        bump(&self.upstream(route.upstream).stats.hits);
        self.touch(&route.local, digest);
        Ok(true)
    }

    async fn blob_answer(
        &self,
        route: &MirrorRoute,
        digest: &Digest,
        head: bool,
        whole_only: bool,
    ) -> Result<Option<MirrorBlob>, MirrorError> {
        let up = self.upstream(route.upstream);
        if self.cached(route, digest).await? {
            bump(&up.stats.hits);
            return Ok(Some(MirrorBlob::Local));
        }
        let key: Key = (route.local.clone(), format!("b:{digest}"));
        if self.negative_hit(up, &key) {
            return Ok(None);
        }
        if let Some(meta) = self.store.blob_stat(digest).await? {
            // The same bytes are here for another repository (perhaps a private hosted one). Content
            // addressing makes them safe to share, but only once the upstream confirms this repository has
            // the blob: otherwise any name would reveal what other repositories hold.
            return match absent_as_none(up.client.head_blob(&route.remote, digest).await) {
                Ok(Some(size)) if size == meta.size => {
                    self.store.blob_link(&route.local, digest).await?;
                    bump(&up.stats.hits);
                    Ok(Some(MirrorBlob::Local))
                }
                Ok(Some(size)) => Err(self.upstream_error(
                    up,
                    UpstreamError::Invalid(format!("{digest} announced as {size} bytes, not {}", meta.size)),
                )),
                Ok(None) => {
                    self.remember_not_found(up, key);
                    Ok(None)
                }
                Err(e) => Err(self.upstream_error(up, e)),
            };
        }
        let fill_key = (route.upstream, route.remote.clone(), digest.clone());
        let existing = self.fills.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&fill_key).cloned();
        if existing.is_none() && self.cached(route, digest).await? {
            // A fill for this repository finished between the first look and now.
            bump(&up.stats.hits);
            return Ok(Some(MirrorBlob::Local));
        }
        if head && existing.is_none() {
            return match absent_as_none(up.client.head_blob(&route.remote, digest).await) {
                Ok(Some(size)) => Ok(Some(MirrorBlob::Head { size })),
                Ok(None) => {
                    self.remember_not_found(up, key);
                    Ok(None)
                }
                Err(e) => Err(self.upstream_error(up, e)),
            };
        }
        let fill = match existing {
            Some(f) => f,
            None => self.start_fill(route, digest, fill_key),
        };
        let mut rx = fill.state.clone();
        loop {
            let state = rx.borrow_and_update().clone();
            match state {
                FillState::Connecting => {}
                FillState::Streaming { size: Some(size), .. } if !whole_only => {
                    if head {
                        return Ok(Some(MirrorBlob::Head { size }));
                    }
                    // If the open fails, the file was just renamed into the store: wait for Done.
                    if let Ok(file) = tokio::fs::File::open(&fill.path).await {
                        let body = follow(file, fill.state.clone(), size);
                        return Ok(Some(MirrorBlob::Streaming { size, body }));
                    }
                }
                FillState::Streaming { .. } | FillState::Verified => {}
                FillState::Done => {
                    self.store.blob_link(&route.local, digest).await?;
                    return Ok(Some(MirrorBlob::Local));
                }
                FillState::NotFound => {
                    self.remember_not_found(up, key);
                    return Ok(None);
                }
                FillState::Failed(why) => {
                    return Err(MirrorError::Upstream {
                        upstream: up.client.name.clone(),
                        error: UpstreamError::Unavailable(why),
                    })
                }
            }
            if rx.changed().await.is_err() {
                return Err(MirrorError::Upstream {
                    upstream: up.client.name.clone(),
                    error: UpstreamError::Unavailable("blob fill ended unexpectedly".into()),
                });
            }
        }
    }

    /// Linked in the cache repository and its bytes in the pool. A link whose pool file is gone (a scrub
    /// moved corrupt bytes to quarantine, or a crash) is a miss: the blob is fetched again, never a 404.
    async fn cached(&self, route: &MirrorRoute, digest: &Digest) -> Result<bool, MirrorError> {
        Ok(self.store.blob_linked(&route.local, digest).await? && self.store.blob_stat(digest).await?.is_some())
    }

    fn start_fill(&self, route: &MirrorRoute, digest: &Digest, fill_key: (usize, oci::RepoName, Digest)) -> Arc<Fill> {
        let mut fills = self.fills.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(f) = fills.get(&fill_key) {
            return f.clone();
        }
        let mut r = [0u8; 6];
        getrandom::getrandom(&mut r).expect("the OS random source is available");
        let path = self.spool.join(format!("{}.{}.part", digest.hex(), hex::encode(r)));
        let (tx, rx) = watch::channel(FillState::Connecting);
        let fill = Arc::new(Fill { path: path.clone(), state: rx });
        fills.insert(fill_key.clone(), fill.clone());
        drop(fills);
        let up = self.upstream(route.upstream);
        bump(&up.stats.blob_fills);
        let job = FillJob { route: route.clone(), digest: digest.clone(), path, tx };
        let mirror = self.self_ref();
        tokio::spawn(async move {
            let m = mirror;
            let outcome = m.run_fill(&job).await;
            // Leave the map before announcing the end, so late arrivals find the blob in the store.
            m.fills.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&fill_key);
            let _ = std::fs::remove_file(&job.path);
            let _ = job.tx.send(outcome);
        });
        fill
    }

    async fn run_fill(&self, job: &FillJob) -> FillState {
        let up: &Mirrored = self.upstream(job.route.upstream);
        let resp = match up.client.get_blob(&job.route.remote, &job.digest).await {
            Ok(r) => r,
            Err(e) if is_absent(&e) => return FillState::NotFound,
            Err(e) => {
                bump(&up.stats.errors);
                return FillState::Failed(e.to_string());
            }
        };
        bump(&up.stats.misses);
        match self.spool_and_verify(up, job, resp.size, resp.body).await {
            Ok(()) => {
                let _ = job.tx.send(FillState::Verified);
            }
            Err(why) => {
                tracing::error!(upstream = %up.client.name, repo = %job.route.remote, digest = %job.digest, reason = %why, "blob fill failed");
                return FillState::Failed(why);
            }
        }
        match self.store.blob_import(&job.digest, &job.path).await {
            Ok(meta) => {
                self.note_fill(up, meta.size);
            }
            Err(e) => return FillState::Failed(format!("storing {}: {e}", job.digest)),
        }
        if let Err(e) = self.store.blob_link(&job.route.local, &job.digest).await {
            return FillState::Failed(format!("linking {}: {e}", job.digest));
        }
        self.announce_fill(&up.client.name, &job.route.local, &job.digest, "blob", resp.size.unwrap_or(0));
        FillState::Done
    }

    async fn spool_and_verify(
        &self,
        up: &Mirrored,
        job: &FillJob,
        size: Option<u64>,
        mut body: ByteStream,
    ) -> Result<(), String> {
        let file = std::fs::File::create(&job.path).map_err(|e| format!("{}: {e}", job.path.display()))?;
        let _ = job.tx.send(FillState::Streaming { size, written: 0 });
        let (chunks_tx, mut chunks_rx) = mpsc::channel::<Bytes>(4);
        let tx = job.tx.clone();
        let algo = job.digest.algorithm();
        let writer = tokio::task::spawn_blocking(move || -> io::Result<Digester> {
            let mut file = file;
            let mut h = Digester::new(algo);
            let mut written = 0u64;
            while let Some(chunk) = chunks_rx.blocking_recv() {
                file.write_all(&chunk)?;
                written += chunk.len() as u64;
                // Followers may read these bytes while they are hashed (the last one waits for the digest).
                let _ = tx.send(FillState::Streaming { size, written });
                h.update(&chunk);
            }
            Ok(h) // durability comes with the move into the store (fsync before rename)
        });
        let mut failure = None;
        // Network chunks are small; hand the writer (and the followers' wake-ups) larger pieces.
        let mut buf = bytes::BytesMut::new();
        loop {
            match body.next().await {
                Some(Ok(chunk)) => {
                    up.stats.bytes_fetched.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                    buf.extend_from_slice(&chunk);
                    if buf.len() >= HAND_OFF && chunks_tx.send(buf.split().freeze()).await.is_err() {
                        break;
                    }
                }
                Some(Err(e)) => {
                    failure = Some(format!("upstream stream broke: {e}"));
                    break;
                }
                None => {
                    if !buf.is_empty() {
                        let _ = chunks_tx.send(buf.split().freeze()).await;
                    }
                    break;
                }
            }
        }
        drop(chunks_tx);
        let h = writer.await.map_err(|e| e.to_string())?.map_err(|e| format!("spool write: {e}"))?;
        if let Some(f) = failure {
            bump(&up.stats.errors);
            return Err(f);
        }
        let len = h.len();
        let actual = h.finish();
        if actual != job.digest || size.is_some_and(|s| s != len) {
            bump(&up.stats.corrupt);
            return Err(format!("content hashes to {actual} ({len} bytes), not {}; discarded", job.digest));
        }
        Ok(())
    }
}

struct FillJob {
    route: MirrorRoute,
    digest: Digest,
    path: PathBuf,
    tx: watch::Sender<FillState>,
}

/// Read a spool file behind its writer until the fill is verified.
fn follow(file: tokio::fs::File, state: watch::Receiver<FillState>, size: u64) -> ByteStream {
    struct Reader {
        file: tokio::fs::File,
        state: watch::Receiver<FillState>,
        pos: u64,
        size: u64,
        done: bool,
    }
    let r = Reader { file, state, pos: 0, size, done: false };
    Box::pin(futures_util::stream::unfold(r, |mut r| async move {
        if r.done {
            return None;
        }
        loop {
            let st = r.state.borrow_and_update().clone();
            let available = match &st {
                // The last byte is held back until the digest is verified, so a client can never receive a
                // complete body of unverified content.
                FillState::Streaming { written, .. } => (*written).min(r.size.saturating_sub(1)),
                FillState::Verified | FillState::Done => r.size,
                FillState::Failed(why) => {
                    r.done = true;
                    return Some((Err(io::Error::other(why.clone())), r));
                }
                FillState::NotFound | FillState::Connecting => 0,
            };
            if r.pos < available {
                let want = (available - r.pos).min(READ_CHUNK as u64) as usize;
                let mut buf = vec![0u8; want];
                let res = async {
                    r.file.seek(io::SeekFrom::Start(r.pos)).await?;
                    r.file.read_exact(&mut buf).await
                }
                .await;
                return match res {
                    Ok(_) => {
                        r.pos += want as u64;
                        Some((Ok(Bytes::from(buf)), r))
                    }
                    Err(e) => {
                        r.done = true;
                        Some((Err(e), r))
                    }
                };
            }
            if matches!(st, FillState::Verified | FillState::Done) && r.pos >= r.size {
                return None;
            }
            if r.state.changed().await.is_err() {
                r.done = true;
                return Some((Err(io::Error::other("blob fill ended unexpectedly")), r));
            }
        }
    }))
}
