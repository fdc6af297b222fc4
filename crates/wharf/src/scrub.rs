//! Scrub: re-hash every stored object and move the corrupt ones aside, so bit rot is found before a client
//! pulls it and a mirror can fetch a good copy again.
//!
//! One pass: the pool shard by shard (each blob streamed through its digest's hash, never held in memory),
//! then every repository: the links to the blobs found corrupt are removed (a mirrored repository then treats
//! the blob as a miss and fetches it again; a hosted one answers 404 until it is pushed again, and a pusher's
//! `HEAD` no longer says it is there), and every stored manifest's bytes are hashed against its digest. A
//! corrupt object is moved into `quarantine/<start time>/` of the data directory (`ContentStore::
//! blob_quarantine`, `manifest_quarantine`), logged, counted and listed in the report (`meta scrub/last`,
//! `wharf scrub status`, `GET /_wharf/scrub`). Bytes re-hashed per second are bounded by a [`Pacer`].
//!
//! May import: `store`, `oci`. Must not import: `api`, `service`, `mirror`, `sync`, `upstream`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use oci::{Digest, Digester, RepoName};
use serde::{Deserialize, Serialize};

use crate::store::lease::{Lease, LeaseError};
use crate::store::scratch::DirLock;
use crate::store::{ContentStore, StoreError};

/// Where the last report is kept (a meta document, so every process on the store sees it).
pub const REPORT_KEY: &str = "scrub/last";
/// Repositories listed per page.
const REPO_PAGE: usize = 100;
/// At most this many corrupt objects are itemised in a report; the counters count them all.
const REPORT_CORRUPT: usize = 1000;
/// Shorter waits are carried over to the next chunk (the pacing is cumulative, so nothing is lost).
const MIN_SLEEP: Duration = Duration::from_millis(5);

/// Why a scrub did not run.
#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    /// Another scrub holds the data directory's `scrub.lock` (or runs in this process).
    #[error("another scrub is running on this store{0}; try again when it has finished")]
    Busy(String),
    /// The lock file could not be used.
    #[error("scrub lock: {0}")]
    Lock(String),
    /// The store failed outside one object (listing, writing the report).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How one scrub runs.
#[derive(Clone, Copy, Debug, Default)]
pub struct ScrubOptions {
    /// Bytes re-hashed per second at most; `None`: as fast as the disk and one core go.
    pub rate: Option<u64>,
}

/// One corrupt object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorruptObject {
    /// `blob` or `manifest`.
    pub kind: String,
    /// The digest it is stored under.
    pub digest: String,
    /// For a manifest: its repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    /// What the bytes hash to instead (or why they could not be read as a stored object).
    pub found: String,
    /// Bytes checked.
    pub size: u64,
    /// Where it was moved (`None`: it could not be moved; see `errors`).
    pub quarantined_to: Option<String>,
    /// For a blob: the repositories whose link to it was removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unlinked_from: Vec<String>,
    /// What happens next.
    pub note: String,
}

/// The result of one scrub, kept as [`REPORT_KEY`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScrubReport {
    /// Unix seconds at the start (also the quarantine folder's name).
    pub started_at: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The rate limit in bytes per second, if any.
    pub rate_bytes_per_sec: Option<u64>,
    /// Pool blobs re-hashed.
    pub blobs_checked: u64,
    /// Stored manifests re-hashed (one per repository holding it).
    pub manifests_checked: u64,
    /// Objects checked, all kinds.
    pub objects_checked: u64,
    /// Bytes re-hashed.
    pub bytes_checked: u64,
    /// Corrupt objects found (at most 1000 listed; `corrupt_found` counts them all).
    pub corrupt: Vec<CorruptObject>,
    /// Corrupt objects found.
    pub corrupt_found: u64,
    /// What could not be checked or moved (I/O errors).
    pub errors: Vec<String>,
}

/// Counters for `/metrics`, updated as the scrub goes (a long background pass shows progress).
#[derive(Debug, Default)]
pub struct ScrubStats {
    /// Scrubs finished.
    pub runs: AtomicU64,
    /// Objects re-hashed.
    pub objects_checked: AtomicU64,
    /// Bytes re-hashed.
    pub bytes_checked: AtomicU64,
    /// Corrupt objects found (and quarantined).
    pub corrupt_found: AtomicU64,
}

/// How long to wait after `done` bytes, `elapsed` into a pass limited to `rate` bytes per second, so the
/// pass never runs ahead of the rate: `done / rate` seconds must have passed.
pub fn pace_delay(done: u64, rate: u64, elapsed: Duration) -> Duration {
    if rate == 0 {
        return Duration::ZERO;
    }
    let nanos = u128::from(done) * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX)).saturating_sub(elapsed)
}

/// Paces the bytes of one pass (cumulative: a slow disk earns no burst beyond what the rate allows overall).
pub struct Pacer {
    rate: Option<u64>,
    start: Instant,
    done: u64,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(rate: Option<u64>) -> Pacer {
        Pacer { rate, start: Instant::now(), done: 0 }
    }

    /// Account for `n` bytes just hashed, sleeping as long as the rate requires.
    pub async fn consumed(&mut self, n: u64) {
        self.done += n;
        if let Some(rate) = self.rate {
            let wait = pace_delay(self.done, rate, self.start.elapsed());
            if wait >= MIN_SLEEP {
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// Runs scrubs over one store; one at a time per process, and per data directory with a lock file.
pub struct Scrubber {
    store: Arc<dyn ContentStore>,
    lock_file: Option<PathBuf>,
    /// Time to live of the store lease taken per pass when replicas share the store (object storage).
    lease: Option<std::time::Duration>,
    running: tokio::sync::Mutex<()>,
    stats: Arc<ScrubStats>,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What hashing one object found.
enum Checked {
    /// Gone meanwhile (collected, or quarantined by another scrub): nothing to say.
    Gone,
    /// Hashes to its digest.
    Good(u64),
    /// Does not: what it hashes to (or why it is unreadable) and the bytes read.
    Bad(String, u64),
}

const BLOB_NOTE: &str =
    "moved to quarantine and unlinked: a mirrored repository fetches it again from its upstream at \
                         the next pull; in a hosted repository it is gone until it is pushed again";
const MANIFEST_NOTE: &str = "moved to quarantine (its tags stay): a mirrored repository fetches it again from its \
                             upstream at the next pull; in a hosted repository it is gone until it is pushed again";

impl Scrubber {
    /// A scrubber over `store`; `lock_file` is the data directory's `scrub.lock` (None for stores without a
    /// directory), `stats` the counters `/metrics` shows.
    pub fn new(store: Arc<dyn ContentStore>, lock_file: Option<PathBuf>, stats: Arc<ScrubStats>) -> Scrubber {
        Scrubber { store, lock_file, lease: None, running: tokio::sync::Mutex::new(()), stats }
    }

    /// Also take the store's `scrub` lease for each pass (replicas over one bucket: one scrub among them).
    pub fn with_lease(mut self, ttl: std::time::Duration) -> Scrubber {
        self.lease = Some(ttl);
        self
    }

    /// The counters this scrubber updates.
    pub fn stats(&self) -> &Arc<ScrubStats> {
        &self.stats
    }

    /// The last stored report, if a scrub ever finished on this store.
    pub async fn last_report(&self) -> Result<Option<ScrubReport>, StoreError> {
        last_report(self.store.as_ref()).await
    }

    /// Run one pass; the report is stored as [`REPORT_KEY`] and returned.
    pub async fn run(&self, opts: ScrubOptions) -> Result<ScrubReport, ScrubError> {
        let Ok(_running) = self.running.try_lock() else {
            return Err(ScrubError::Busy(" (in this process)".into()));
        };
        let _lock = match &self.lock_file {
            Some(path) => match DirLock::try_acquire(path).map_err(ScrubError::Lock)? {
                Some(l) => Some(l),
                None => return Err(ScrubError::Busy(format!(": {} is locked", path.display()))),
            },
            None => None,
        };
        let lease = match self.lease {
            Some(ttl) => Some(Lease::acquire(self.store.clone(), "scrub", ttl).await.map_err(|e| match e {
                LeaseError::Store(e) => ScrubError::Store(e),
                other => ScrubError::Busy(format!(" (its lease is {other})")),
            })?),
            None => None,
        };
        let started = Instant::now();
        let mut report = ScrubReport {
            started_at: unix(SystemTime::now()),
            rate_bytes_per_sec: opts.rate,
            ..ScrubReport::default()
        };
        let batch = report.started_at.to_string();
        let mut pacer = Pacer::new(opts.rate);
        let store = self.store.as_ref();
        // Pool blobs found corrupt this pass (their links go in the repository phase); bounded by what rots.
        let mut bad_blobs: Vec<(Digest, usize)> = Vec::new();
        for shard in 0..crate::store::POOL_SHARDS {
            if lease.as_ref().is_some_and(Lease::lost) {
                return Err(ScrubError::Busy(" (this scrub lost its lease and stopped)".into()));
            }
            let entries = match store.pool_list(shard as u8).await {
                Ok(e) => e,
                Err(e) => {
                    report.errors.push(format!("pool shard {}: {e}", crate::store::shard_name(shard as u8)));
                    continue;
                }
            };
            for e in entries {
                match self.check_blob(&e.digest, &mut pacer).await {
                    Ok(Checked::Gone) => {}
                    Ok(Checked::Good(n)) => self.count(&mut report, n, true),
                    Ok(Checked::Bad(found, n)) => {
                        self.count(&mut report, n, true);
                        let moved = match store.blob_quarantine(&e.digest, &batch).await {
                            Ok(m) => m,
                            Err(err) => {
                                report.errors.push(format!("quarantining blob {}: {err}", e.digest));
                                None
                            }
                        };
                        tracing::error!(
                            digest = %e.digest, found = %found, quarantined_to = ?moved,
                            "scrub: corrupt blob (its bytes do not hash to its digest)"
                        );
                        let c = CorruptObject {
                            kind: "blob".into(),
                            digest: e.digest.to_string(),
                            repository: None,
                            found,
                            size: n,
                            quarantined_to: moved,
                            unlinked_from: Vec::new(),
                            note: BLOB_NOTE.into(),
                        };
                        // Not itemised past the report's limit: its links still go.
                        let i = self.corrupt(&mut report, c).unwrap_or(usize::MAX);
                        bad_blobs.push((e.digest.clone(), i));
                    }
                    Err(err) => report.errors.push(format!("blob {}: {err}", e.digest)),
                }
            }
        }
        let mut after: Option<String> = None;
        loop {
            let page = store.repo_list_all(after.as_deref(), REPO_PAGE).await?;
            for repo in &page {
                if let Err(e) = self.scrub_repo(repo, &batch, &bad_blobs, &mut pacer, &mut report).await {
                    report.errors.push(format!("repository {repo}: {e}"));
                }
            }
            if page.len() < REPO_PAGE {
                break;
            }
            after = page.last().map(|r| r.to_string());
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        let json = serde_json::to_vec_pretty(&report).expect("reports serialise");
        store.meta_put(REPORT_KEY, Bytes::from(json)).await?;
        self.stats.runs.fetch_add(1, Ordering::Relaxed);
        if let Some(lease) = lease {
            lease.release().await;
        }
        Ok(report)
    }

    fn count(&self, report: &mut ScrubReport, bytes: u64, blob: bool) {
        if blob {
            report.blobs_checked += 1;
        } else {
            report.manifests_checked += 1;
        }
        report.objects_checked += 1;
        report.bytes_checked += bytes;
        self.stats.objects_checked.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_checked.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Record a corrupt object; its index in the report's list, if it was itemised.
    fn corrupt(&self, report: &mut ScrubReport, c: CorruptObject) -> Option<usize> {
        report.corrupt_found += 1;
        self.stats.corrupt_found.fetch_add(1, Ordering::Relaxed);
        (report.corrupt.len() < REPORT_CORRUPT).then(|| {
            report.corrupt.push(c);
            report.corrupt.len() - 1
        })
    }

    /// Stream a pool blob through its digest's hash.
    async fn check_blob(&self, digest: &Digest, pacer: &mut Pacer) -> Result<Checked, StoreError> {
        let Some(mut reader) = self.store.blob_open(digest, None).await? else { return Ok(Checked::Gone) };
        let mut h = Digester::new(digest.algorithm());
        while let Some(chunk) = reader.body.next().await {
            let chunk = chunk.map_err(|source| StoreError::Io { path: digest.to_string(), source })?;
            h.update(&chunk);
            pacer.consumed(chunk.len() as u64).await;
        }
        let n = h.len();
        let actual = h.finish();
        Ok(if actual == *digest { Checked::Good(n) } else { Checked::Bad(actual.to_string(), n) })
    }

    /// Hash a stored manifest's bytes against its digest.
    async fn check_manifest(&self, repo: &RepoName, digest: &Digest) -> Result<Checked, StoreError> {
        match self.store.manifest_get(repo, digest).await {
            Ok(None) => Ok(Checked::Gone),
            Ok(Some(m)) => {
                let mut h = Digester::new(digest.algorithm());
                h.update(&m.bytes);
                let n = h.len();
                let actual = h.finish();
                Ok(if actual == *digest { Checked::Good(n) } else { Checked::Bad(actual.to_string(), n) })
            }
            Err(StoreError::Corrupt(_, why)) => Ok(Checked::Bad(format!("unreadable: {why}"), 0)),
            Err(e) => Err(e),
        }
    }

    /// Unlink the corrupt blobs from one repository and check its manifests.
    async fn scrub_repo(
        &self,
        repo: &RepoName,
        batch: &str,
        bad_blobs: &[(Digest, usize)],
        pacer: &mut Pacer,
        report: &mut ScrubReport,
    ) -> Result<(), StoreError> {
        let store = self.store.as_ref();
        for (d, i) in bad_blobs {
            if store.blob_linked(repo, d).await? && store.blob_unlink(repo, d).await? {
                if let Some(c) = report.corrupt.get_mut(*i) {
                    c.unlinked_from.push(repo.to_string());
                }
            }
        }
        for m in store.manifest_list(repo).await? {
            let checked = match self.check_manifest(repo, &m.digest).await {
                Ok(c) => c,
                Err(e) => {
                    report.errors.push(format!("manifest {repo}@{}: {e}", m.digest));
                    continue;
                }
            };
            match checked {
                Checked::Gone => {}
                Checked::Good(n) => {
                    self.count(report, n, false);
                    pacer.consumed(n).await;
                }
                Checked::Bad(found, n) => {
                    self.count(report, n, false);
                    // Under the repository's lock, look again: a push of the right bytes may have replaced it.
                    let moved = {
                        let _guard = store.repo_locks().exclusive(repo).await;
                        match self.check_manifest(repo, &m.digest).await? {
                            Checked::Bad(..) => store.manifest_quarantine(repo, &m.digest, batch).await,
                            Checked::Good(_) | Checked::Gone => continue,
                        }
                    };
                    let moved = match moved {
                        Ok(m) => m,
                        Err(e) => {
                            report.errors.push(format!("quarantining manifest {repo}@{}: {e}", m.digest));
                            None
                        }
                    };
                    tracing::error!(
                        repository = %repo, digest = %m.digest, found = %found, quarantined_to = ?moved,
                        "scrub: corrupt manifest (its bytes do not hash to its digest)"
                    );
                    let c = CorruptObject {
                        kind: "manifest".into(),
                        digest: m.digest.to_string(),
                        repository: Some(repo.to_string()),
                        found,
                        size: n,
                        quarantined_to: moved,
                        unlinked_from: Vec::new(),
                        note: MANIFEST_NOTE.into(),
                    };
                    self.corrupt(report, c);
                }
            }
        }
        Ok(())
    }
}

/// The last stored report of `store`, if any.
pub async fn last_report(store: &dyn ContentStore) -> Result<Option<ScrubReport>, StoreError> {
    crate::store::meta_json(store, REPORT_KEY).await
}

#[cfg(test)]
mod tests {
    use oci::MediaType;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::StoredManifest;

    const MT: &str = "application/vnd.oci.image.manifest.v1+json";

    fn repo(s: &str) -> RepoName {
        s.parse().unwrap()
    }

    async fn blob(s: &dyn ContentStore, r: &RepoName, bytes: &[u8]) -> Digest {
        let d = Digest::sha256_of(bytes);
        let body: crate::store::ByteStream = Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]));
        s.blob_put(&d, None, body).await.unwrap();
        s.blob_link(r, &d).await.unwrap();
        d
    }

    /// An image (config + layer) tagged `v1`; returns (manifest, config, layer).
    async fn image(s: &dyn ContentStore, r: &RepoName, layer: &[u8]) -> (Digest, Digest, Digest) {
        let config = blob(s, r, b"{\"config\":1}").await;
        let l = blob(s, r, layer).await;
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":12}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":{}}}]}}"#,
            layer.len()
        );
        let bytes = Bytes::from(json);
        let md = Digest::sha256_of(&bytes);
        let stored = StoredManifest { bytes, media_type: MediaType::OciManifest };
        s.manifest_put(r, &md, &stored, None).await.unwrap();
        s.tag_put(r, &"v1".parse().unwrap(), &md).await.unwrap();
        (md, config, l)
    }

    fn scrubber(store: Arc<dyn ContentStore>) -> Scrubber {
        Scrubber::new(store, None, Arc::new(ScrubStats::default()))
    }

    #[tokio::test]
    async fn a_clean_store_reports_nothing() {
        let mem = Arc::new(MemoryStore::new());
        let s: Arc<dyn ContentStore> = mem.clone();
        image(s.as_ref(), &repo("team/app"), b"layer bytes").await;
        let r = scrubber(s.clone()).run(ScrubOptions::default()).await.unwrap();
        assert!(r.corrupt.is_empty() && r.errors.is_empty(), "{r:?}");
        assert_eq!((r.blobs_checked, r.manifests_checked, r.objects_checked, r.corrupt_found), (2, 1, 3, 0));
        assert!(r.bytes_checked > 11 + 12);
        assert_eq!(last_report(s.as_ref()).await.unwrap().unwrap(), r);
    }

    #[tokio::test]
    async fn flipped_bytes_are_found_once_quarantined_and_reported() {
        let mem = Arc::new(MemoryStore::new());
        let s: Arc<dyn ContentStore> = mem.clone();
        let (app, other) = (repo("team/app"), repo("team/other"));
        let (md, config, layer) = image(s.as_ref(), &app, b"layer bytes").await;
        s.blob_link(&other, &layer).await.unwrap();
        mem.tamper_blob(&layer, |b| b[0] ^= 0x01);
        mem.tamper_manifest(&app, &md, |b| {
            let last = b.len() - 1;
            b[last - 1] ^= 0x20;
        });
        let sc = scrubber(s.clone());
        let r = sc.run(ScrubOptions::default()).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.corrupt_found, 2, "{:?}", r.corrupt);
        let b = r.corrupt.iter().find(|c| c.kind == "blob").unwrap();
        assert_eq!(b.digest, layer.to_string());
        assert_eq!(b.unlinked_from, ["team/app", "team/other"]);
        assert!(b.quarantined_to.as_deref().unwrap().contains(layer.hex()));
        let m = r.corrupt.iter().find(|c| c.kind == "manifest").unwrap();
        assert_eq!((m.digest.as_str(), m.repository.as_deref()), (md.to_string().as_str(), Some("team/app")));
        assert!(m.quarantined_to.as_deref().unwrap().contains("team/app"));
        // No longer served or linked; the good config stays.
        assert!(s.blob_stat(&layer).await.unwrap().is_none());
        assert!(!s.blob_linked(&app, &layer).await.unwrap() && !s.blob_linked(&other, &layer).await.unwrap());
        assert!(s.manifest_get(&app, &md).await.unwrap().is_none());
        assert!(s.blob_linked(&app, &config).await.unwrap() && s.blob_stat(&config).await.unwrap().is_some());
        assert_eq!(last_report(s.as_ref()).await.unwrap().unwrap(), r);
        assert_eq!(sc.stats().corrupt_found.load(Ordering::Relaxed), 2);
        // Found exactly once: the next pass is clean.
        let again = sc.run(ScrubOptions::default()).await.unwrap();
        assert_eq!((again.corrupt_found, again.objects_checked), (0, 1), "{again:?}");
        assert_eq!(sc.stats().objects_checked.load(Ordering::Relaxed), 4);
    }

    #[tokio::test]
    async fn on_disk_the_files_move_into_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn ContentStore> = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
        let s = store.as_ref();
        let r = repo("team/app");
        let (md, _, layer) = image(s, &r, &vec![7u8; 300_000]).await;
        let layout = crate::store::keys::Layout::new(dir.path());
        let flip = |p: PathBuf, at: usize| {
            let mut b = std::fs::read(&p).unwrap();
            b[at] ^= 0x01;
            std::fs::write(&p, b).unwrap();
        };
        flip(layout.blob(&layer), 200_000);
        let mpath = layout.manifest(&r, &md);
        let len = std::fs::metadata(&mpath).unwrap().len() as usize;
        flip(mpath.clone(), len - 3);
        let sc = Scrubber::new(store.clone(), Some(layout.scrub_lock()), Arc::new(ScrubStats::default()));
        let rep = sc.run(ScrubOptions { rate: Some(1 << 30) }).await.unwrap();
        assert!(rep.errors.is_empty(), "{:?}", rep.errors);
        assert_eq!(rep.corrupt_found, 2);
        let batch = rep.started_at.to_string();
        assert!(!layout.blob(&layer).exists() && layout.quarantined_blob(&batch, &layer).exists());
        assert!(!mpath.exists() && layout.quarantined_manifest(&batch, &r, &md).exists());
        assert!(!layout.blob_link(&r, &layer).exists());
        let again = sc.run(ScrubOptions::default()).await.unwrap();
        assert_eq!(again.corrupt_found, 0);
        // One scrub at a time per data directory.
        let held = DirLock::try_acquire(&layout.scrub_lock()).unwrap().unwrap();
        assert!(matches!(sc.run(ScrubOptions::default()).await, Err(ScrubError::Busy(_))));
        drop(held);
    }

    #[test]
    fn the_pacer_never_runs_ahead_of_the_rate() {
        const MIB: u64 = 1 << 20;
        // 100 MiB at 50 MiB/s are due at 2 s: after 0.5 s, wait 1.5 s; after 3 s, not at all.
        assert_eq!(pace_delay(100 * MIB, 50 * MIB, Duration::from_millis(500)), Duration::from_millis(1500));
        assert_eq!(pace_delay(100 * MIB, 50 * MIB, Duration::from_secs(3)), Duration::ZERO);
        assert_eq!(pace_delay(1, 3, Duration::ZERO), Duration::from_nanos(333_333_333));
        // Whatever the chunk sizes and however fast the hashing, bytes / (time + wait) stays within the rate.
        let rate = 7 * MIB;
        let (mut done, mut now) = (0u64, Duration::ZERO);
        for i in 1..2000u64 {
            done += (i * 7919) % (4 * MIB) + 1;
            now += Duration::from_micros(i % 300); // hashing time
            now += pace_delay(done, rate, now);
            assert!(done as f64 / now.as_secs_f64() <= rate as f64 * 1.000_001, "at {i}");
        }
        // A huge rate never waits.
        assert_eq!(pace_delay(MIB, u64::MAX, Duration::ZERO), Duration::ZERO);
    }
}
