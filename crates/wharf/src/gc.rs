//! Online mark-and-sweep garbage collection: removes manifests nobody can reach, the blob links only they
//! needed, and the pool blobs no repository links any more, while the registry keeps serving.
//!
//! Roots, per repository: every tagged manifest, every pinned one (`history::pin`, written by sync), every
//! manifest written within `grace`, and the referrers of anything live. Marking follows an index to its child
//! manifests and every manifest to its config and layers. Sweeping a repository deletes the unmarked manifests
//! (through `manifest_delete`, so tags, referrer entries and `_refs` stay consistent) and then the links no
//! live manifest needs that are older than `grace` (an upload whose manifest is not pushed yet is protected by
//! its fresh link). Then the pool: blobs no repository links and older than `grace` go, shard by shard.
//!
//! Concurrency (docs/ARCHITECTURE.md, "Garbage collection"): a repository is marked and swept under its
//! exclusive [`RepoLocks`](crate::store::RepoLocks) lock, which manifest pushes take shared; the pool sweep
//! holds the store's [`GcGate`](crate::store::GcGate) exclusively per batch and keeps every blob linked since
//! the collection began; across processes, linking refreshes the pool blob's mtime and the sweep re-checks it
//! right before each delete. One collector per data directory: `gc.lock`.
//!
//! May import: `store`, `history`, `oci`. Must not import: `api`, `service`, `mirror`, `sync`, `upstream`.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use oci::{Digest, RepoName};
use serde::{Deserialize, Serialize};

use crate::store::lease::{Lease, LeaseError};
use crate::store::scratch::DirLock;
use crate::store::{Clock, ContentStore, StoreError};

/// Where the last report is kept (a meta document, so every process on the store sees it).
pub const REPORT_KEY: &str = "gc/last";
/// The default grace: content written within this long is never collected.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);
/// Repositories listed per page (bounded memory for big stores).
const REPO_PAGE: usize = 100;
/// Pool candidates re-checked and deleted per exclusive hold of the gate (link paths wait at most this long).
const POOL_BATCH: usize = 64;
/// At most this many repositories are itemised in a report; the totals count them all.
const REPORT_REPOS: usize = 1000;

/// Why a collection did not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// Another collection holds the data directory's `gc.lock` (or runs in this process).
    #[error("another garbage collection is running on this store{0}; try again when it has finished")]
    Busy(String),
    /// The lock file could not be used.
    #[error("garbage collection lock: {0}")]
    Lock(String),
    /// The store failed outside a repository (listing repositories, writing the report).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The retention rules could not be applied (nothing was collected).
    #[error("retention: {0}")]
    Retention(String),
}

/// What runs under the collector's locks right before marking: retention removes tags and says how long
/// untagged manifests stay.
pub type Prepared = Result<(Vec<RemovedTag>, UntaggedDelays), String>;

/// How one collection runs.
#[derive(Clone, Debug)]
pub struct GcOptions {
    /// Content written (or linked) within this long before the collection started is kept.
    pub grace: Duration,
    /// Delete nothing; report what would go.
    pub dry_run: bool,
    /// Per repository, how long untagged manifests stay (`[[retention]] untagged_after`; never below `grace`).
    pub untagged_after: UntaggedDelays,
    /// Tags the retention rules removed (or would, in a dry run) right before, for the report.
    pub tags_removed: Vec<RemovedTag>,
}

impl GcOptions {
    /// A collection with `grace`, no retention.
    pub fn new(grace: Duration, dry_run: bool) -> GcOptions {
        GcOptions { grace, dry_run, untagged_after: UntaggedDelays::default(), tags_removed: Vec::new() }
    }
}

/// Per-repository delays for untagged manifests, decided by the retention rules (which this module does not
/// read: the service passes the decision in).
#[derive(Clone, Default)]
pub struct UntaggedDelays(Option<Arc<DelayFn>>);

type DelayFn = dyn Fn(&RepoName) -> Option<Duration> + Send + Sync;

impl UntaggedDelays {
    /// Delays given by `f` (None: the grace applies).
    pub fn new(f: impl Fn(&RepoName) -> Option<Duration> + Send + Sync + 'static) -> UntaggedDelays {
        UntaggedDelays(Some(Arc::new(f)))
    }

    fn for_repo(&self, repo: &RepoName) -> Option<Duration> {
        self.0.as_ref().and_then(|f| f(repo))
    }
}

impl std::fmt::Debug for UntaggedDelays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "UntaggedDelays(per repository)" } else { "UntaggedDelays(none)" })
    }
}

/// A tag removed by a retention rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemovedTag {
    /// The repository.
    pub repository: String,
    /// The tag.
    pub tag: String,
    /// The manifest it pointed at.
    pub digest: String,
    /// Which rule and why (`retention[0]: not among the newest 10, ...`).
    pub reason: String,
}

/// What one repository lost.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoReport {
    /// The repository.
    pub repository: String,
    /// Unreachable manifests deleted (or that would be, in a dry run).
    pub manifests_deleted: u64,
    /// Blob links deleted.
    pub links_deleted: u64,
}

/// The result of one collection, kept as [`REPORT_KEY`] and shown by `wharf gc status` and `GET /_wharf/gc`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcReport {
    /// Unix seconds at the start.
    pub started_at: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// Nothing was deleted; the counts say what would have gone.
    pub dry_run: bool,
    /// The grace in seconds.
    pub grace_secs: u64,
    /// Repositories looked at.
    pub repositories_scanned: u64,
    /// Manifests deleted, all repositories.
    pub manifests_deleted: u64,
    /// Blob links deleted, all repositories.
    pub links_deleted: u64,
    /// Pool blobs deleted.
    pub blobs_deleted: u64,
    /// Bytes of pool blobs deleted.
    pub bytes_freed: u64,
    /// Repositories where something was deleted (at most 1000 listed).
    pub repositories: Vec<RepoReport>,
    /// Pool blobs and their bytes as the pool phase listed them (before its deletes): the store's usage.
    #[serde(default)]
    pub pool_blobs: u64,
    /// See `pool_blobs`.
    #[serde(default)]
    pub pool_bytes: u64,
    /// Tags removed by retention rules right before the collection (at most 1000 listed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags_removed: Vec<RemovedTag>,
    /// Tags removed by retention rules, all repositories.
    #[serde(default)]
    pub tags_removed_count: u64,
    /// What went wrong; a failed repository is left as it was and the pool phase is skipped.
    pub errors: Vec<String>,
}

/// Counters for `/metrics` (deletions of real runs only).
#[derive(Debug, Default)]
pub struct GcStats {
    /// Collections finished (dry runs included).
    pub runs: AtomicU64,
    /// Manifests deleted.
    pub manifests_deleted: AtomicU64,
    /// Blob links deleted.
    pub links_deleted: AtomicU64,
    /// Pool blobs deleted.
    pub blobs_deleted: AtomicU64,
    /// Pool bytes freed.
    pub bytes_freed: AtomicU64,
    /// Duration of the last collection in milliseconds.
    pub last_duration_ms: AtomicU64,
}

impl GcStats {
    fn add(&self, r: &GcReport) {
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.last_duration_ms.store(r.duration_ms, Ordering::Relaxed);
        if !r.dry_run {
            self.manifests_deleted.fetch_add(r.manifests_deleted, Ordering::Relaxed);
            self.links_deleted.fetch_add(r.links_deleted, Ordering::Relaxed);
            self.blobs_deleted.fetch_add(r.blobs_deleted, Ordering::Relaxed);
            self.bytes_freed.fetch_add(r.bytes_freed, Ordering::Relaxed);
        }
    }
}

/// Test pause points: the collector signals the first `Notify` and waits for the second.
#[cfg(test)]
#[derive(Default)]
struct Pauses {
    /// After a repository is marked (under its lock), before it is swept.
    repo_marked: std::sync::Mutex<Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>>,
    /// In the pool phase, after the first shard with candidates was listed, before its re-check and deletes.
    pool: std::sync::Mutex<Option<(Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>)>>,
}

/// Runs collections over one store; one at a time per process, and per data directory with a lock file.
pub struct Collector {
    store: Arc<dyn ContentStore>,
    clock: Clock,
    /// `gc.lock` of the data directory (file-backed stores), taken without waiting for each run.
    lock_file: Option<PathBuf>,
    /// Time to live of the store lease taken for each run when several processes on several machines share
    /// the store (object storage); `None` when the lock file is enough.
    lease: Option<Duration>,
    running: tokio::sync::Mutex<()>,
    stats: Arc<GcStats>,
    #[cfg(test)]
    pauses: Pauses,
}

/// Stops the gate's recording however the collection ends (error, cancellation).
struct Recording<'a>(&'a dyn ContentStore);

impl Drop for Recording<'_> {
    fn drop(&mut self) {
        self.0.gc_gate().end();
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Collector {
    /// A collector over `store` reading time from the system clock; `lock_file` is the data directory's
    /// `gc.lock` (None for stores without a directory), `stats` the counters `/metrics` shows.
    pub fn new(store: Arc<dyn ContentStore>, lock_file: Option<PathBuf>, stats: Arc<GcStats>) -> Collector {
        Collector::with_clock(store, lock_file, stats, Arc::new(SystemTime::now))
    }

    /// [`Collector::new`] with an injected clock (tests age content without sleeping).
    pub fn with_clock(
        store: Arc<dyn ContentStore>,
        lock_file: Option<PathBuf>,
        stats: Arc<GcStats>,
        clock: Clock,
    ) -> Collector {
        Collector {
            store,
            clock,
            lock_file,
            lease: None,
            running: tokio::sync::Mutex::new(()),
            stats,
            #[cfg(test)]
            pauses: Pauses::default(),
        }
    }

    /// Tests: pause once after the next repository is marked; returns (reached, resume).
    #[cfg(test)]
    pub fn pause_after_repo_mark(&self) -> (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
        let pair = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        *self.pauses.repo_marked.lock().expect("pause lock") = Some(pair.clone());
        pair
    }

    /// Tests: pause once in the pool phase between listing candidates and deleting them.
    #[cfg(test)]
    pub fn pause_in_pool(&self) -> (Arc<tokio::sync::Notify>, Arc<tokio::sync::Notify>) {
        let pair = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
        *self.pauses.pool.lock().expect("pause lock") = Some(pair.clone());
        pair
    }

    /// Also take the store's `gc` lease for each run (replicas over one bucket: one collector among them).
    pub fn with_lease(mut self, ttl: Duration) -> Collector {
        self.lease = Some(ttl);
        self
    }

    /// The counters this collector updates.
    pub fn stats(&self) -> &Arc<GcStats> {
        &self.stats
    }

    /// The last stored report, if a collection ever finished on this store.
    pub async fn last_report(&self) -> Result<Option<GcReport>, StoreError> {
        last_report(self.store.as_ref()).await
    }

    /// Run one collection; the report is stored as [`REPORT_KEY`] and returned. Fails with
    /// [`GcError::Busy`] when another collection holds the data directory.
    pub async fn run(&self, opts: GcOptions) -> Result<GcReport, GcError> {
        self.run_prepared(opts, || async { Ok((Vec::new(), UntaggedDelays::default())) }).await
    }

    /// [`Collector::run`], with `prepare` run once the collection holds its locks (so two collectors never
    /// apply retention at once, and nothing is removed when the collection cannot run). Its results extend
    /// `opts`.
    pub async fn run_prepared<F, Fut>(&self, mut opts: GcOptions, prepare: F) -> Result<GcReport, GcError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Prepared>,
    {
        let Ok(_running) = self.running.try_lock() else {
            return Err(GcError::Busy(" (in this process)".into()));
        };
        let _lock = match &self.lock_file {
            Some(path) => match DirLock::try_acquire(path).map_err(GcError::Lock)? {
                Some(l) => Some(l),
                None => {
                    let holder = std::fs::read_to_string(path).unwrap_or_default();
                    let holder = holder.trim();
                    let who = if holder.is_empty() { String::new() } else { format!(" (pid {holder})") };
                    return Err(GcError::Busy(format!("{who}: {} is locked", path.display())));
                }
            },
            None => None,
        };
        let lease = match self.lease {
            Some(ttl) => Some(Lease::acquire(self.store.clone(), "gc", ttl).await.map_err(|e| match e {
                LeaseError::Store(e) => GcError::Store(e),
                other => GcError::Busy(format!(" (its lease is {other})")),
            })?),
            None => None,
        };
        let lease_lost = || lease.as_ref().is_some_and(Lease::lost);
        let started = Instant::now();
        let (removed, delays) = prepare().await.map_err(GcError::Retention)?;
        opts.tags_removed.extend(removed);
        if delays.0.is_some() {
            opts.untagged_after = delays;
        }
        let start = (self.clock)();
        let cutoff = start.checked_sub(opts.grace).unwrap_or(UNIX_EPOCH);
        let store = self.store.as_ref();
        store.gc_gate().begin().await;
        let recording = Recording(store);
        let mut report = GcReport {
            started_at: unix(start),
            dry_run: opts.dry_run,
            grace_secs: opts.grace.as_secs(),
            tags_removed_count: opts.tags_removed.len() as u64,
            tags_removed: opts.tags_removed.iter().take(REPORT_REPOS).cloned().collect(),
            ..GcReport::default()
        };
        // Blobs some repository still links after its sweep: the pool's mark set (digests only).
        let mut linked: HashSet<Digest> = HashSet::new();
        let mut pool_safe = true;
        let mut after: Option<String> = None;
        loop {
            let page = store.repo_list_all(after.as_deref(), REPO_PAGE).await?;
            for repo in &page {
                if lease_lost() {
                    return Err(GcError::Busy(" (this collection lost its lease and stopped)".into()));
                }
                report.repositories_scanned += 1;
                // Untagged manifests of a repository with a longer `untagged_after` stay as roots that long.
                let manifest_cutoff = match opts.untagged_after.for_repo(repo) {
                    Some(d) if d > opts.grace => start.checked_sub(d).unwrap_or(UNIX_EPOCH),
                    _ => cutoff,
                };
                match self.collect_repo(repo, cutoff, manifest_cutoff, opts.dry_run, &mut linked).await {
                    Ok(r) => {
                        report.manifests_deleted += r.manifests_deleted;
                        report.links_deleted += r.links_deleted;
                        if (r.manifests_deleted > 0 || r.links_deleted > 0) && report.repositories.len() < REPORT_REPOS
                        {
                            report.repositories.push(r);
                        }
                    }
                    Err(e) => {
                        pool_safe = false;
                        report.errors.push(format!("repository {repo}: {e}"));
                    }
                }
            }
            if page.len() < REPO_PAGE {
                break;
            }
            after = page.last().map(|r| r.to_string());
        }
        if lease_lost() {
            return Err(GcError::Busy(" (this collection lost its lease and stopped)".into()));
        }
        if pool_safe {
            if let Err(e) = self.collect_pool(&linked, cutoff, opts.dry_run, &mut report).await {
                report.errors.push(format!("pool: {e}"));
            }
        } else {
            report.errors.push("pool: skipped, a repository could not be collected".into());
        }
        drop(linked);
        drop(recording);
        report.duration_ms = started.elapsed().as_millis() as u64;
        let json = serde_json::to_vec_pretty(&report).expect("reports serialise");
        store.meta_put(REPORT_KEY, Bytes::from(json)).await?;
        self.stats.add(&report);
        if let Some(lease) = lease {
            lease.release().await;
        }
        Ok(report)
    }

    /// Mark and sweep one repository under its exclusive lock; adds the links that stay to `linked`. Manifests
    /// written after `manifest_cutoff` are roots (it is `cutoff`, or earlier under `untagged_after`).
    async fn collect_repo(
        &self,
        repo: &RepoName,
        cutoff: SystemTime,
        manifest_cutoff: SystemTime,
        dry_run: bool,
        linked: &mut HashSet<Digest>,
    ) -> Result<RepoReport, StoreError> {
        let store = self.store.as_ref();
        let _guard = store.repo_locks().exclusive(repo).await;
        let manifests: HashMap<Digest, SystemTime> =
            store.manifest_list(repo).await?.into_iter().map(|m| (m.digest, m.modified)).collect();
        let mut roots: Vec<Digest> =
            manifests.iter().filter(|(_, t)| **t > manifest_cutoff).map(|(d, _)| d.clone()).collect();
        let mut after: Option<String> = None;
        loop {
            let Some(tags) = store.tag_list(repo, after.as_deref(), 1000).await? else { break };
            for t in &tags {
                if let Some(d) = store.tag_get(repo, t).await? {
                    roots.push(d);
                }
            }
            if tags.len() < 1000 {
                break;
            }
            after = tags.last().map(|t| t.to_string());
        }
        for key in store.meta_list(&format!("pins/{repo}")).await? {
            let name = key.rsplit('/').next().unwrap_or_default();
            if let Ok(d) = name.replacen('-', ":", 1).parse::<Digest>() {
                roots.push(d);
            }
        }
        // Mark: each live manifest is read and parsed once; its referrers come from the store's index.
        let mut marked: HashSet<Digest> = HashSet::new();
        let mut needed: HashSet<Digest> = HashSet::new();
        let mut unreadable = false;
        while let Some(d) = roots.pop() {
            if !manifests.contains_key(&d) || !marked.insert(d.clone()) {
                continue; // a tag or pin naming nothing stored here, or seen already
            }
            for r in store.referrers(repo, &d).await? {
                roots.push(r.digest);
            }
            let Some(stored) = store.manifest_get(repo, &d).await? else { continue };
            match oci::Manifest::parse(stored.bytes, Some(&stored.media_type), d.algorithm()) {
                Ok(m) => {
                    let is_index = m.media_type.is_index();
                    for desc in m.references() {
                        if is_index && desc.media_type.is_manifest() {
                            roots.push(desc.digest.clone());
                        } else {
                            needed.insert(desc.digest.clone());
                        }
                    }
                }
                // Stored manifests were validated at push; one that no longer parses keeps every link here.
                Err(_) => unreadable = true,
            }
        }
        #[cfg(test)]
        {
            let pause = self.pauses.repo_marked.lock().expect("pause lock").take();
            if let Some((reached, resume)) = pause {
                reached.notify_one();
                resume.notified().await;
            }
        }
        let mut report = RepoReport { repository: repo.to_string(), ..RepoReport::default() };
        let unmarked: Vec<&Digest> = manifests.keys().filter(|d| !marked.contains(*d)).collect();
        if dry_run {
            report.manifests_deleted = unmarked.len() as u64;
        } else if !unmarked.is_empty() {
            // Another process (a `wharf sync`, or the server beside a `wharf gc`) may have rewritten one since
            // the listing (a push of the same bytes under a tag): its new time keeps it.
            let now: HashMap<Digest, SystemTime> =
                store.manifest_list(repo).await?.into_iter().map(|m| (m.digest, m.modified)).collect();
            let doomed: Vec<Digest> = unmarked
                .into_iter()
                .filter(|d| !matches!(now.get(*d), Some(t) if *t > manifest_cutoff))
                .cloned()
                .collect();
            report.manifests_deleted += store.manifest_delete_many(repo, &doomed).await?;
        }
        let mut unlink = Vec::new();
        for link in store.blob_link_list(repo).await? {
            let keep = unreadable
                || needed.contains(&link.digest)
                || link.modified > cutoff
                // A manifest written by another process after our listing (its references go in first).
                || (!dry_run && store.blob_referenced_by(repo, &link.digest).await?.is_some());
            if keep {
                linked.insert(link.digest);
            } else {
                unlink.push(link.digest);
            }
        }
        // Still under the repository's lock: no push here can be checking these links meanwhile.
        report.links_deleted +=
            if dry_run { unlink.len() as u64 } else { store.blob_unlink_many(repo, &unlink).await? };
        Ok(report)
    }

    /// Delete the pool blobs no repository links, older than the cutoff, shard by shard.
    async fn collect_pool(
        &self,
        linked: &HashSet<Digest>,
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<(), StoreError> {
        let store = self.store.as_ref();
        for shard in 0..crate::store::POOL_SHARDS {
            let listed = store.pool_list(shard as u8).await?;
            report.pool_blobs += listed.len() as u64;
            report.pool_bytes += listed.iter().map(|e| e.size).sum::<u64>();
            let candidates: Vec<_> =
                listed.into_iter().filter(|e| !linked.contains(&e.digest) && e.modified <= cutoff).collect();
            #[cfg(test)]
            if !candidates.is_empty() {
                let pause = self.pauses.pool.lock().expect("pause lock").take();
                if let Some((reached, resume)) = pause {
                    reached.notify_one();
                    resume.notified().await;
                }
            }
            if !self.delete_batches(&candidates, cutoff, dry_run, report).await? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// Re-check and delete pool candidates, [`POOL_BATCH`] at a time, each batch holding the gate exclusively:
    /// a blob linked since the collection began is kept, and one modified after `cutoff` (linked by another
    /// process) survives `pool_delete_if_older`. Returns false when the gate's record overflowed (stop).
    async fn delete_batches(
        &self,
        candidates: &[crate::store::PoolEntry],
        cutoff: SystemTime,
        dry_run: bool,
        report: &mut GcReport,
    ) -> Result<bool, StoreError> {
        let store = self.store.as_ref();
        let gate = store.gc_gate();
        for batch in candidates.chunks(POOL_BATCH) {
            let _exclusive = gate.sweep().await;
            for c in batch {
                match gate.linked_since_begin(&c.digest) {
                    Some(false) => {}
                    Some(true) => continue, // linked while we ran
                    None => {
                        report.errors.push(format!(
                            "pool: stopped, more than {} links were made during the collection",
                            crate::store::GC_RECORD_LIMIT
                        ));
                        return Ok(false);
                    }
                }
                let freed = if dry_run { Some(c.size) } else { store.pool_delete_if_older(&c.digest, cutoff).await? };
                if let Some(size) = freed {
                    report.blobs_deleted += 1;
                    report.bytes_freed += size;
                }
            }
        }
        Ok(true)
    }

    /// The pool phase for a few named blobs (the mirror cache budget's evictions): each of `digests` that no
    /// repository links any more and that was not linked or written after `cutoff` is deleted, through the same
    /// gate, re-checks and lock as a full collection. Returns (blobs deleted, bytes freed); [`GcError::Busy`]
    /// when a collection runs (the caller retries later).
    pub async fn drop_unlinked(&self, digests: &[Digest], cutoff: SystemTime) -> Result<(u64, u64), GcError> {
        if digests.is_empty() {
            return Ok((0, 0));
        }
        let Ok(_running) = self.running.try_lock() else {
            return Err(GcError::Busy(" (in this process)".into()));
        };
        let _lock = match &self.lock_file {
            Some(path) => match DirLock::try_acquire(path).map_err(GcError::Lock)? {
                Some(l) => Some(l),
                None => return Err(GcError::Busy(format!(": {} is locked", path.display()))),
            },
            None => None,
        };
        let store = self.store.as_ref();
        store.gc_gate().begin().await;
        let _recording = Recording(store);
        let mut wanted: HashSet<Digest> = digests.iter().cloned().collect();
        let mut after: Option<String> = None;
        // Every repository's links, after begin(): a link made later is recorded by the gate.
        'repos: loop {
            let page = store.repo_list_all(after.as_deref(), REPO_PAGE).await?;
            for repo in &page {
                for link in store.blob_link_list(repo).await? {
                    wanted.remove(&link.digest);
                }
                if wanted.is_empty() {
                    break 'repos;
                }
            }
            if page.len() < REPO_PAGE {
                break;
            }
            after = page.last().map(|r| r.to_string());
        }
        let mut candidates = Vec::new();
        for d in wanted {
            if let Some(meta) = store.blob_stat(&d).await? {
                candidates.push(crate::store::PoolEntry { digest: d, size: meta.size, modified: UNIX_EPOCH });
            }
        }
        let mut report = GcReport::default();
        self.delete_batches(&candidates, cutoff, false, &mut report).await?;
        Ok((report.blobs_deleted, report.bytes_freed))
    }
}

/// The last stored report of `store`, if any.
pub async fn last_report(store: &dyn ContentStore) -> Result<Option<GcReport>, StoreError> {
    crate::store::meta_json(store, REPORT_KEY).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use oci::Descriptor;

    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::testsuite::TestClock;
    use crate::store::StoredManifest;

    const HOUR: Duration = Duration::from_secs(3600);
    const MT: &str = "application/vnd.oci.image.manifest.v1+json";

    struct Fixture {
        store: Arc<dyn ContentStore>,
        clock: TestClock,
        gc: Collector,
    }

    fn fixture() -> Fixture {
        let clock = TestClock::default();
        let limits = clock.limits(24 * HOUR, 100);
        let time = limits.clock.clone();
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::with_limits(limits));
        let gc = Collector::with_clock(store.clone(), None, Arc::new(GcStats::default()), time);
        Fixture { store, clock, gc }
    }

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

    /// Push an image (config + one layer, optionally with a subject) the way the service stores it.
    async fn image(
        s: &dyn ContentStore,
        r: &RepoName,
        layer: &[u8],
        subject: Option<&Digest>,
        tag: Option<&str>,
    ) -> (Digest, Digest, Digest) {
        let config = blob(s, r, format!("config of {}", String::from_utf8_lossy(layer)).as_bytes()).await;
        let l = blob(s, r, layer).await;
        let subject_json = subject
            .map(|d| format!(r#","subject":{{"mediaType":"{MT}","digest":"{d}","size":1}}"#))
            .unwrap_or_default();
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{MT}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{l}","size":1}}]{subject_json}}}"#
        );
        let bytes = Bytes::from(json);
        let md = Digest::sha256_of(&bytes);
        let desc = Descriptor::new(oci::MediaType::OciManifest, md.clone(), bytes.len() as u64);
        let stored = StoredManifest { bytes, media_type: oci::MediaType::OciManifest };
        s.manifest_put(r, &md, &stored, subject.map(|sd| (sd, &desc))).await.unwrap();
        if let Some(t) = tag {
            s.tag_put(r, &t.parse().unwrap(), &md).await.unwrap();
        }
        (md, config, l)
    }

    async fn run(f: &Fixture, dry_run: bool) -> GcReport {
        let r = f.gc.run(GcOptions::new(HOUR, dry_run)).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        r
    }

    async fn complete(s: &dyn ContentStore, r: &RepoName, md: &Digest, blobs: &[&Digest]) -> bool {
        s.manifest_get(r, md).await.unwrap().is_some()
            && futures_util::future::join_all(
                blobs.iter().map(|b| async move {
                    s.blob_linked(r, b).await.unwrap() && s.blob_stat(b).await.unwrap().is_some()
                }),
            )
            .await
            .into_iter()
            .all(|x| x)
    }

    #[tokio::test]
    async fn tagged_images_stay_whole_and_old_untagged_ones_go_with_their_blobs() {
        let f = fixture();
        let s = f.store.as_ref();
        let r = repo("team/app");
        let (kept, kc, kl) = image(s, &r, b"kept layer", None, Some("v1")).await;
        let (gone, gc_, gl) = image(s, &r, b"gone layer", None, None).await;
        f.clock.advance(2 * HOUR);
        let report = run(&f, false).await;
        assert!(complete(s, &r, &kept, &[&kc, &kl]).await);
        assert!(s.manifest_get(&r, &gone).await.unwrap().is_none());
        for b in [&gc_, &gl] {
            assert!(!s.blob_linked(&r, b).await.unwrap());
            assert!(s.blob_stat(b).await.unwrap().is_none(), "unreferenced pool blob collected");
        }
        assert_eq!((report.manifests_deleted, report.links_deleted, report.blobs_deleted), (1, 2, 2));
        assert_eq!(report.bytes_freed, (b"gone layer".len() + b"config of gone layer".len()) as u64);
        assert_eq!(last_report(s).await.unwrap().unwrap(), report, "the report is kept in the store");
        assert_eq!(f.gc.stats().blobs_deleted.load(Ordering::Relaxed), 2);
        // A second run finds nothing more.
        let again = run(&f, false).await;
        assert_eq!((again.manifests_deleted, again.links_deleted, again.blobs_deleted), (0, 0, 0));
    }

    #[tokio::test]
    async fn young_content_is_kept_for_the_grace() {
        let f = fixture();
        let s = f.store.as_ref();
        let r = repo("team/app");
        let (md, c, l) = image(s, &r, b"young", None, None).await;
        // An upload whose manifest is not pushed yet.
        let pending = blob(s, &r, b"uploaded, manifest not pushed yet").await;
        f.clock.advance(HOUR / 2);
        let report = run(&f, false).await;
        assert_eq!((report.manifests_deleted, report.links_deleted, report.blobs_deleted), (0, 0, 0));
        assert!(complete(s, &r, &md, &[&c, &l, &pending]).await);
        f.clock.advance(HOUR);
        let report = run(&f, false).await;
        assert_eq!((report.manifests_deleted, report.links_deleted, report.blobs_deleted), (1, 3, 3));
    }

    /// A pusher that saw an old blob here (`HEAD`) and skipped its upload still finds it linked when its
    /// manifest comes within the grace.
    #[tokio::test]
    async fn a_blob_a_pusher_just_saw_is_kept_for_the_grace() {
        let f = fixture();
        let s = f.store.as_ref();
        let r = repo("team/app");
        let (old, _, layer) = image(s, &r, b"layer pushed long ago", None, None).await;
        s.manifest_delete(&r, &old).await.unwrap();
        f.clock.advance(2 * HOUR);
        assert!(s.blob_seen(&r, &layer).await.unwrap());
        let report = run(&f, false).await;
        assert_eq!(report.links_deleted, 1, "only the config, which nobody looked at");
        assert!(s.blob_linked(&r, &layer).await.unwrap() && s.blob_stat(&layer).await.unwrap().is_some());
    }

    #[tokio::test]
    async fn an_index_keeps_its_children() {
        let f = fixture();
        let s = f.store.as_ref();
        let r = repo("team/multi");
        let (a, ac, al) = image(s, &r, b"amd64", None, None).await;
        let (b, bc, bl) = image(s, &r, b"arm64", None, None).await;
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{{"mediaType":"{MT}","digest":"{a}","size":1}},{{"mediaType":"{MT}","digest":"{b}","size":1}}]}}"#
        );
        let bytes = Bytes::from(json);
        let id = Digest::sha256_of(&bytes);
        let stored = StoredManifest { bytes, media_type: oci::MediaType::OciIndex };
        s.manifest_put(&r, &id, &stored, None).await.unwrap();
        s.tag_put(&r, &"latest".parse().unwrap(), &id).await.unwrap();
        f.clock.advance(2 * HOUR);
        let report = run(&f, false).await;
        assert_eq!((report.manifests_deleted, report.links_deleted, report.blobs_deleted), (0, 0, 0));
        assert!(s.manifest_get(&r, &id).await.unwrap().is_some());
        assert!(complete(s, &r, &a, &[&ac, &al]).await && complete(s, &r, &b, &[&bc, &bl]).await);
    }

    #[tokio::test]
    async fn a_blob_another_repository_uses_stays_in_the_pool() {
        let f = fixture();
        let s = f.store.as_ref();
        let (dead, live) = (repo("team/dead"), repo("team/live"));
        let (_, _, shared) = image(s, &dead, b"shared layer", None, None).await;
        let (md, c, l) = image(s, &live, b"shared layer", None, Some("v1")).await;
        assert_eq!(l, shared);
        f.clock.advance(2 * HOUR);
        let report = run(&f, false).await;
        assert!(!s.blob_linked(&dead, &shared).await.unwrap(), "the dead repository's link goes");
        assert!(s.blob_stat(&shared).await.unwrap().is_some(), "the bytes stay for the live one");
        assert!(complete(s, &live, &md, &[&c, &l]).await);
        // The config is shared too (same bytes): nothing leaves the pool.
        assert_eq!((report.manifests_deleted, report.links_deleted, report.blobs_deleted), (1, 2, 0));
    }

    #[tokio::test]
    async fn pinned_manifests_and_referrers_of_live_subjects_are_kept() {
        let f = fixture();
        let s = f.store.as_ref();
        let r = repo("docker.io/library/app");
        let (pinned, pc, pl) = image(s, &r, b"pinned", None, None).await;
        crate::history::pin(s, &r, &pinned, "sync:test").await.unwrap();
        let (subject, _, _) = image(s, &r, b"subject", None, Some("v1")).await;
        let (sig, sc, sl) = image(s, &r, b"signature", Some(&subject), None).await;
        let (orphan_subject, _, _) = image(s, &r, b"orphan subject", None, None).await;
        let (orphan, _, _) = image(s, &r, b"orphan signature", Some(&orphan_subject), None).await;
        f.clock.advance(2 * HOUR);
        let report = run(&f, false).await;
        assert!(complete(s, &r, &pinned, &[&pc, &pl]).await, "pinned");
        assert!(complete(s, &r, &sig, &[&sc, &sl]).await, "referrer of a live subject");
        assert_eq!(s.referrers(&r, &subject).await.unwrap().len(), 1);
        assert!(s.manifest_get(&r, &orphan_subject).await.unwrap().is_none());
        assert!(s.manifest_get(&r, &orphan).await.unwrap().is_none(), "referrer of a collected subject");
        assert_eq!(report.manifests_deleted, 2);
    }

    #[tokio::test]
    async fn a_dry_run_deletes_nothing_and_counts_the_same() {
        let f = fixture();
        let s = f.store.as_ref();
        let (dead, live) = (repo("team/dead"), repo("team/live"));
        image(s, &dead, b"shared", None, None).await;
        image(s, &dead, b"only dead", None, None).await;
        let (md, c, l) = image(s, &live, b"shared", None, Some("v1")).await;
        f.clock.advance(2 * HOUR);
        let dry = run(&f, true).await;
        assert!(dry.dry_run);
        // "shared" (config and layer) stays for the live repository; "only dead" leaves the pool.
        assert_eq!((dry.manifests_deleted, dry.links_deleted, dry.blobs_deleted), (2, 4, 2));
        assert_eq!(s.manifest_list(&dead).await.unwrap().len(), 2, "nothing deleted");
        assert_eq!(s.blob_link_list(&dead).await.unwrap().len(), 4);
        assert_eq!(f.gc.stats().blobs_deleted.load(Ordering::Relaxed), 0);
        let real = run(&f, false).await;
        assert_eq!(
            (real.manifests_deleted, real.links_deleted, real.blobs_deleted, real.bytes_freed),
            (dry.manifests_deleted, dry.links_deleted, dry.blobs_deleted, dry.bytes_freed)
        );
        assert!(complete(s, &live, &md, &[&c, &l]).await);
        // The pool as listed: 4 blobs before the real sweep, 2 (the shared ones) at the next collection.
        assert_eq!(real.pool_blobs, 4);
        let after = run(&f, false).await;
        assert_eq!((after.pool_blobs, after.blobs_deleted), (2, 0));
        assert_eq!(after.pool_bytes, real.pool_bytes - real.bytes_freed, "usage drops by what was freed");
    }

    /// On disk the grace is by file times: age one image's files by hand and only it goes.
    #[tokio::test]
    async fn on_disk_the_grace_is_by_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Arc::new(crate::store::fs::FsStore::open(dir.path()).unwrap());
        let store: Arc<dyn ContentStore> = fs.clone();
        let s = store.as_ref();
        let r = repo("team/app");
        let (old, oc, ol) = image(s, &r, b"old layer", None, None).await;
        let (young, yc, yl) = image(s, &r, b"young layer", None, None).await;
        let layout = crate::store::keys::Layout::new(dir.path());
        let ago = SystemTime::now() - 2 * HOUR;
        let age = |p: PathBuf| std::fs::File::open(&p).unwrap().set_modified(ago).unwrap();
        age(layout.manifest(&r, &old));
        for b in [&oc, &ol] {
            age(layout.blob_link(&r, b));
            age(layout.blob(b));
        }
        let gc = Collector::new(store.clone(), Some(layout.gc_lock()), Arc::new(GcStats::default()));
        let report = gc.run(GcOptions::new(HOUR, false)).await.unwrap();
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!((report.manifests_deleted, report.links_deleted, report.blobs_deleted), (1, 2, 2));
        assert!(s.manifest_get(&r, &old).await.unwrap().is_none());
        assert!(!layout.blob(&ol).exists() && !layout.blob(&oc).exists());
        assert!(complete(s, &r, &young, &[&yc, &yl]).await, "written within the grace");
        assert_eq!(last_report(s).await.unwrap().unwrap(), report);
    }

    #[tokio::test]
    async fn one_collection_at_a_time() {
        let f = fixture();
        let r = repo("team/app");
        image(f.store.as_ref(), &r, b"x", None, None).await;
        let (reached, resume) = f.gc.pause_after_repo_mark();
        let gc = Arc::new(f.gc);
        let first = tokio::spawn({
            let gc = gc.clone();
            async move { gc.run(GcOptions::new(HOUR, false)).await }
        });
        reached.notified().await;
        assert!(matches!(gc.run(GcOptions::new(HOUR, false)).await, Err(GcError::Busy(_))));
        resume.notify_one();
        first.await.unwrap().unwrap();
        // Across processes: the lock file.
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("gc.lock");
        let held = DirLock::try_acquire(&lock).unwrap().unwrap();
        // flock locks are per open file, so a second open in this process conflicts like another process.
        let other = Collector::new(f.store.clone(), Some(lock.clone()), Arc::new(GcStats::default()));
        match other.run(GcOptions::new(HOUR, false)).await {
            Err(GcError::Busy(msg)) => assert!(msg.contains("gc.lock"), "{msg}"),
            other => panic!("expected Busy, got {other:?}"),
        }
        drop(held);
        other.run(GcOptions::new(HOUR, true)).await.unwrap();
    }
}
