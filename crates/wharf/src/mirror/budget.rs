//! The cache budget: `[mirror] max_bytes` for the whole pull-through cache and `[[upstream]] max_bytes` per
//! upstream. When the blobs linked from mirror cache repositories (`<host>/<repo>` of a configured upstream)
//! add up to more, the least recently used cached images are evicted until they fit.
//!
//! - Access times: every mirror hit or fill notes (cache repository, digest) → now in a bounded in-memory map
//!   ([`MAX_TRACKED`](crate::access_log::MAX_TRACKED) entries, [`AccessLog`]); [`Mirror::flush_access`] merges it into one meta document per repository
//!   (`mirror/access/<repo>/@lru`) every few tens of seconds, so a GET never costs a write. Content with no
//!   recorded access counts as accessed when it was written (manifest or link time).
//! - The unit of eviction is an image: a manifest no index of its repository lists, with its child manifests
//!   and its referrers (signatures, SBOMs), last used at the newest access of any of them or their blobs. Blob
//!   links no manifest needs form units of their own.
//! - Never evicted: anything outside the cache prefixes (hosted repositories), an image containing a pinned
//!   manifest (sync pins everything it copies) and every blob a remaining manifest needs, an image one of
//!   whose blobs is being filled right now.
//! - Eviction deletes the image's manifests (`manifest_delete`: tags and referrer entries go with them) and
//!   unlinks the blobs no remaining manifest of the repository needs, under the repository's exclusive lock;
//!   the pool bytes then go through the garbage collector's pool phase ([`Collector::drop_unlinked`]: the
//!   gate, the re-checks, `gc.lock`), never a second deletion protocol. An evicted image is a plain miss next
//!   time and is fetched again.
//!
//! Usage is measured by each pass (one listing of the cache repositories' links and a `stat` per distinct
//! blob) and estimated in between from the bytes filled since, which is what the cheap periodic check in
//! `serve` (`tasks::start_cache_budget`) compares against the budgets.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use oci::{Digest, RepoName};
use serde::Serialize;

use super::{Mirror, MirrorError};
use crate::access_log::AccessLog;
use crate::gc::{Collector, GcError};
use crate::policy::routing::cache_host;
use crate::store::{ContentStore, StoreError};

/// Evicted blobs waiting for a pool phase that was busy (a collection running), at most this many.
const MAX_PENDING: usize = 100_000;

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Where the access times of cache repositories are kept (`mirror/access/<repo>/@lru`).
const ACCESS_PREFIX: &str = "mirror/access";
const ACCESS_LEAF: &str = "@lru";

/// The per-process budget state of a [`Mirror`].
pub(super) struct BudgetState {
    /// `[mirror] max_bytes` (0: none).
    total: AtomicU64,
    /// Whether any budget is configured (access times are only noted then).
    tracking: AtomicBool,
    access: AccessLog,
    pending: Mutex<Vec<Digest>>,
    cache_bytes: AtomicU64,
    /// One pass at a time.
    pass: tokio::sync::Mutex<()>,
    /// Woken by a fill that pushed the estimate over budget, so the pass starts at once instead of at the
    /// next periodic check (keeps the overshoot during a burst of pulls short).
    wake: tokio::sync::Notify,
}

impl Default for BudgetState {
    fn default() -> Self {
        BudgetState {
            total: AtomicU64::new(0),
            tracking: AtomicBool::new(false),
            access: AccessLog::new(ACCESS_PREFIX, ACCESS_LEAF),
            pending: Mutex::new(Vec::new()),
            cache_bytes: AtomicU64::new(0),
            pass: tokio::sync::Mutex::new(()),
            wake: tokio::sync::Notify::new(),
        }
    }
}

/// The whole cache's budget and usage, for `GET /_wharf/mirror`.
#[derive(Debug, Clone, Serialize)]
pub struct BudgetStatus {
    /// `[mirror] max_bytes`, if set.
    pub max_bytes: Option<u64>,
    /// Bytes of the blobs linked from every cache repository (each blob once), at the last pass.
    pub cache_bytes: u64,
}

/// What one budget pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct EvictionReport {
    /// Cache bytes measured before evicting.
    pub bytes_before: u64,
    /// Cache bytes after the evictions.
    pub bytes_after: u64,
    /// Images (and stray links) evicted.
    pub evicted: u64,
    /// Bytes that left the cache.
    pub bytes_evicted: u64,
    /// Pool blobs deleted by the collector's pool phase.
    pub blobs_deleted: u64,
    /// Pool bytes freed.
    pub bytes_freed: u64,
}

/// One manifest of a cache repository, as the planner sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ManifestInfo {
    /// When it was written (ms).
    pub modified: u64,
    /// Child manifests (an index's entries).
    pub children: Vec<Digest>,
    /// Config, layers, and an index's non-manifest entries.
    pub blobs: Vec<Digest>,
    /// The manifest it refers to (signatures, SBOMs).
    pub subject: Option<Digest>,
}

/// One cache repository, as the planner sees it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RepoView {
    pub repo: Option<RepoName>,
    pub upstream: usize,
    pub manifests: HashMap<Digest, ManifestInfo>,
    /// Blob links and when they were made (ms).
    pub links: HashMap<Digest, u64>,
    pub pinned: HashSet<Digest>,
    /// Last access (ms) of manifests and blobs.
    pub access: HashMap<Digest, u64>,
}

/// One planned eviction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Eviction {
    /// Index into the views.
    pub repo: usize,
    /// Manifests to delete, the image's top manifest first.
    pub manifests: Vec<Digest>,
    /// Links to remove afterwards.
    pub unlink: Vec<Digest>,
    /// Bytes leaving the upstream's usage.
    pub bytes: u64,
}

/// What to evict, and the usage before and after.
#[derive(Debug, Clone, Default)]
pub(crate) struct Plan {
    pub evictions: Vec<Eviction>,
    pub total_before: u64,
    pub total_after: u64,
    pub upstream_after: Vec<u64>,
    /// Blobs no cache repository links any more (pool candidates).
    pub dropped: Vec<Digest>,
}

struct Unit {
    repo: usize,
    top: Option<Digest>,
    orphan: Option<Digest>,
    last: u64,
}

/// Choose the least recently used images to evict until every budget holds. Pure: the views say what is
/// cached, `sizes` the blob sizes, `in_flight` the (upstream, digest) fills in progress.
pub(crate) fn plan(
    views: &[RepoView],
    sizes: &HashMap<Digest, u64>,
    in_flight: &HashSet<(usize, Digest)>,
    total: Option<u64>,
    per_upstream: &[Option<u64>],
) -> Plan {
    let size = |d: &Digest| sizes.get(d).copied().unwrap_or(0);
    let mut per_up: Vec<HashMap<Digest, u32>> = vec![HashMap::new(); per_upstream.len()];
    let mut all: HashMap<Digest, u32> = HashMap::new();
    for v in views {
        for d in v.links.keys() {
            *per_up[v.upstream].entry(d.clone()).or_default() += 1;
            *all.entry(d.clone()).or_default() += 1;
        }
    }
    let mut usage_up: Vec<u64> = per_up.iter().map(|m| m.keys().map(size).sum()).collect();
    let mut usage = all.keys().map(size).sum::<u64>();
    let mut out = Plan { total_before: usage, ..Plan::default() };
    let over = |usage: u64, usage_up: &[u64], up: usize| {
        total.is_some_and(|b| usage > b) || per_upstream[up].is_some_and(|b| usage_up[up] > b)
    };
    let any_over = |usage: u64, usage_up: &[u64]| (0..usage_up.len()).any(|u| over(usage, usage_up, u));

    // Reference counts per repository: blobs needed by manifests, children listed by indexes, referrers.
    let mut needed: Vec<HashMap<Digest, u32>> = Vec::new();
    let mut child_refs: Vec<HashMap<Digest, u32>> = Vec::new();
    let mut referrers: Vec<HashMap<Digest, Vec<Digest>>> = Vec::new();
    let mut units: Vec<Unit> = Vec::new();
    for (i, v) in views.iter().enumerate() {
        let (mut need, mut kids, mut refs) = (HashMap::new(), HashMap::new(), HashMap::<Digest, Vec<Digest>>::new());
        for (d, m) in &v.manifests {
            for b in &m.blobs {
                *need.entry(b.clone()).or_insert(0u32) += 1;
            }
            for c in m.children.iter().filter(|c| v.manifests.contains_key(*c)) {
                *kids.entry(c.clone()).or_insert(0u32) += 1;
            }
            if let Some(s) = m.subject.as_ref().filter(|s| v.manifests.contains_key(*s)) {
                refs.entry(s.clone()).or_default().push(d.clone());
            }
        }
        for (d, m) in &v.manifests {
            let is_top = !kids.contains_key(d) && !m.subject.as_ref().is_some_and(|s| v.manifests.contains_key(s));
            if !is_top {
                continue;
            }
            // The image: the manifest, its children and referrers, transitively.
            let (mut seen, mut stack, mut last, mut protected) = (HashSet::new(), vec![d.clone()], 0u64, false);
            while let Some(x) = stack.pop() {
                let Some(info) = v.manifests.get(&x) else { continue };
                if !seen.insert(x.clone()) {
                    continue;
                }
                last = last.max(info.modified).max(v.access.get(&x).copied().unwrap_or(0));
                protected |= v.pinned.contains(&x) || in_flight.contains(&(v.upstream, x.clone()));
                for b in &info.blobs {
                    last = last.max(v.access.get(b).copied().unwrap_or(0));
                    protected |= in_flight.contains(&(v.upstream, b.clone()));
                }
                stack.extend(info.children.iter().cloned());
                stack.extend(refs.get(&x).into_iter().flatten().cloned());
            }
            if !protected {
                units.push(Unit { repo: i, top: Some(d.clone()), orphan: None, last });
            }
        }
        for (d, t) in &v.links {
            if !need.contains_key(d) && !in_flight.contains(&(v.upstream, d.clone())) {
                let last = (*t).max(v.access.get(d).copied().unwrap_or(0));
                units.push(Unit { repo: i, top: None, orphan: Some(d.clone()), last });
            }
        }
        needed.push(need);
        child_refs.push(kids);
        referrers.push(refs);
    }
    units.sort_by(|a, b| {
        a.last.cmp(&b.last).then(a.repo.cmp(&b.repo)).then(a.top.cmp(&b.top)).then(a.orphan.cmp(&b.orphan))
    });
    let mut gone: Vec<HashSet<Digest>> = vec![HashSet::new(); views.len()];
    for u in units {
        if !any_over(usage, &usage_up) {
            break;
        }
        let v = &views[u.repo];
        if !over(usage, &usage_up, v.upstream) {
            continue;
        }
        let mut ev = Eviction { repo: u.repo, manifests: Vec::new(), unlink: Vec::new(), bytes: 0 };
        if let Some(top) = u.top {
            let mut stack = vec![top];
            while let Some(x) = stack.pop() {
                let Some(info) = v.manifests.get(&x) else { continue };
                if !gone[u.repo].insert(x.clone()) {
                    continue;
                }
                ev.manifests.push(x.clone());
                for b in &info.blobs {
                    let n = needed[u.repo].get_mut(b).expect("counted above");
                    *n -= 1;
                    if *n == 0 && v.links.contains_key(b) && !ev.unlink.contains(b) {
                        ev.unlink.push(b.clone());
                    }
                }
                for c in info.children.iter().filter(|c| v.manifests.contains_key(*c)) {
                    let n = child_refs[u.repo].get_mut(c).expect("counted above");
                    *n -= 1;
                    if *n == 0 {
                        stack.push(c.clone());
                    }
                }
                stack.extend(referrers[u.repo].get(&x).into_iter().flatten().cloned());
            }
        }
        if let Some(d) = u.orphan {
            ev.unlink.push(d);
        }
        for b in &ev.unlink {
            let up = per_up[v.upstream].get_mut(b).expect("linked");
            *up -= 1;
            if *up == 0 {
                usage_up[v.upstream] -= size(b);
                ev.bytes += size(b);
            }
            let n = all.get_mut(b).expect("linked");
            *n -= 1;
            if *n == 0 {
                usage -= size(b);
                out.dropped.push(b.clone());
            }
        }
        if !ev.manifests.is_empty() || !ev.unlink.is_empty() {
            out.evictions.push(ev);
        }
    }
    out.total_after = usage;
    out.upstream_after = usage_up;
    out
}

impl Mirror {
    /// Set `[mirror] max_bytes`; access times are noted from now on if this or any upstream has a budget.
    pub fn set_budget(&self, total: Option<u64>) {
        self.budget.total.store(total.unwrap_or(0), Ordering::Relaxed);
        let any = total.is_some() || self.upstreams.iter().any(|u| u.max_bytes.is_some());
        self.budget.tracking.store(any, Ordering::Relaxed);
    }

    /// Wait until a fill pushes the cache over budget (see [`Mirror::note_fill`]).
    pub async fn over_budget_signal(&self) {
        self.budget.wake.notified().await
    }

    /// After a fill stored `bytes` for upstream `up`: wake the budget task when the estimate is now over.
    pub(super) fn note_fill(&self, up: &super::Mirrored, bytes: u64) {
        up.stats.filled_since_pass.fetch_add(bytes, Ordering::Relaxed);
        if self.has_budget() && self.over_budget_estimate() {
            self.budget.wake.notify_one();
        }
    }

    /// Whether a cache budget is configured.
    pub fn has_budget(&self) -> bool {
        self.budget.tracking.load(Ordering::Relaxed)
    }

    fn total_budget(&self) -> Option<u64> {
        Some(self.budget.total.load(Ordering::Relaxed)).filter(|b| *b > 0)
    }

    /// The whole cache's budget and last measured usage.
    pub fn budget_status(&self) -> BudgetStatus {
        BudgetStatus { max_bytes: self.total_budget(), cache_bytes: self.budget.cache_bytes.load(Ordering::Relaxed) }
    }

    /// Note a hit or fill of `digest` in the cache repository `repo` (memory only; flushed in batches).
    pub(super) fn touch(&self, repo: &RepoName, digest: &Digest) {
        if self.has_budget() {
            self.budget.access.note(repo, digest);
        }
    }

    /// Whether the access map asks to be flushed before the regular interval.
    pub fn flush_due(&self) -> bool {
        self.budget.access.flush_due()
    }

    /// Merge the noted access times into each repository's document (one write per repository touched).
    pub async fn flush_access(&self) -> Result<(), StoreError> {
        self.budget.access.flush(self.store.as_ref()).await
    }

    /// The cheap check: the last measured usage plus what was filled since is over a budget.
    pub fn over_budget_estimate(&self) -> bool {
        let filled: Vec<u64> =
            self.upstreams.iter().map(|u| u.stats.filled_since_pass.load(Ordering::Relaxed)).collect();
        if filled.iter().all(|f| *f == 0) {
            return false; // nothing new since a pass (which did what it could)
        }
        let total = self.budget.cache_bytes.load(Ordering::Relaxed) + filled.iter().sum::<u64>();
        self.total_budget().is_some_and(|b| total > b)
            || self
                .upstreams
                .iter()
                .zip(&filled)
                .any(|(u, f)| u.max_bytes.is_some_and(|b| u.stats.cache_bytes.load(Ordering::Relaxed) + f > b))
    }

    fn fills_in_flight(&self) -> HashSet<(usize, Digest)> {
        let fills = self.fills.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        fills.keys().map(|(u, _, d)| (*u, d.clone())).collect()
    }

    /// Measure the cache and evict least recently used images until every budget holds; the pool bytes go
    /// through `collector`'s pool phase (retried at the next pass when a collection holds the lock).
    pub async fn enforce_budget(&self, collector: &Collector) -> Result<EvictionReport, MirrorError> {
        let _one = self.budget.pass.lock().await;
        let started = SystemTime::now();
        for u in &self.upstreams {
            u.stats.filled_since_pass.store(0, Ordering::Relaxed);
        }
        self.flush_access().await?;
        let store = self.store.as_ref();
        let (views, sizes) = self.cache_views(store).await?;
        let in_flight = self.fills_in_flight();
        let per_up: Vec<Option<u64>> = self.upstreams.iter().map(|u| u.max_bytes).collect();
        let plan = plan(&views, &sizes, &in_flight, self.total_budget(), &per_up);
        let mut report =
            EvictionReport { bytes_before: plan.total_before, bytes_after: plan.total_after, ..Default::default() };
        for ev in &plan.evictions {
            let v = &views[ev.repo];
            let repo = v.repo.as_ref().expect("views from the store name their repository");
            let up = &self.upstreams[v.upstream];
            {
                let _excl = store.repo_locks().exclusive(repo).await;
                for m in &ev.manifests {
                    store.manifest_delete(repo, m).await?;
                }
                let now_filling = self.fills_in_flight();
                for b in &ev.unlink {
                    // A fill that started meanwhile, or a manifest cached meanwhile that needs the blob.
                    if now_filling.contains(&(v.upstream, b.clone()))
                        || store.blob_referenced_by(repo, b).await?.is_some()
                    {
                        continue;
                    }
                    store.blob_unlink(repo, b).await?;
                }
            }
            tracing::info!(upstream = %up.client.name, repo = %repo, manifests = ev.manifests.len(), links = ev.unlink.len(), bytes = ev.bytes, "evicted from the mirror cache (least recently used)");
            up.stats.evictions.fetch_add(1, Ordering::Relaxed);
            up.stats.bytes_evicted.fetch_add(ev.bytes, Ordering::Relaxed);
            report.evicted += 1;
            report.bytes_evicted += ev.bytes;
        }
        for (u, after) in self.upstreams.iter().zip(&plan.upstream_after) {
            u.stats.cache_bytes.store(*after, Ordering::Relaxed);
        }
        self.budget.cache_bytes.store(plan.total_after, Ordering::Relaxed);
        let pending = {
            let mut p = self.budget.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            p.extend(plan.dropped);
            p.sort();
            p.dedup();
            if p.len() > MAX_PENDING {
                let excess = p.len() - MAX_PENDING;
                p.drain(..excess); // the garbage collector still finds them
            }
            p.clone()
        };
        match collector.drop_unlinked(&pending, started).await {
            Ok((blobs, bytes)) => {
                report.blobs_deleted = blobs;
                report.bytes_freed = bytes;
                let mut p = self.budget.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                p.retain(|d| !pending.contains(d));
            }
            Err(GcError::Busy(who)) => {
                tracing::info!("cache budget: pool deletes wait for the next pass, a collection is running{who}")
            }
            Err(GcError::Store(e)) => return Err(e.into()),
            Err(GcError::Lock(e)) => tracing::warn!(error = %e, "cache budget: gc.lock unusable"),
            Err(GcError::Retention(e)) => tracing::warn!(error = %e, "cache budget: pool deletes failed"),
        }
        Ok(report)
    }

    /// Every cache repository's manifests, links, pins and access times, and the sizes of the linked blobs.
    async fn cache_views(&self, store: &dyn ContentStore) -> Result<(Vec<RepoView>, HashMap<Digest, u64>), StoreError> {
        let hosts: Vec<String> = self.upstreams.iter().map(|u| cache_host(&u.client.name)).collect();
        let mut views = Vec::new();
        let mut sizes: HashMap<Digest, u64> = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.repo_list_all(after.as_deref(), 100).await?;
            for repo in &page {
                let first = repo.as_str().split('/').next().unwrap_or_default();
                let Some(upstream) = hosts.iter().position(|h| h == first) else { continue };
                let mut v = RepoView { repo: Some(repo.clone()), upstream, ..RepoView::default() };
                for m in store.manifest_list(repo).await? {
                    let Some(stored) = store.manifest_get(repo, &m.digest).await? else { continue };
                    let mut info = ManifestInfo { modified: ms(m.modified), ..ManifestInfo::default() };
                    if let Ok(p) = oci::Manifest::parse(stored.bytes, Some(&stored.media_type), m.digest.algorithm()) {
                        let is_index = p.media_type.is_index();
                        for d in p.references() {
                            if is_index && d.media_type.is_manifest() {
                                info.children.push(d.digest.clone());
                            } else {
                                info.blobs.push(d.digest.clone());
                            }
                        }
                        info.blobs.sort();
                        info.blobs.dedup();
                        info.subject = p.subject().map(|s| s.digest.clone());
                    }
                    v.manifests.insert(m.digest, info);
                }
                for l in store.blob_link_list(repo).await? {
                    if let std::collections::hash_map::Entry::Vacant(e) = sizes.entry(l.digest.clone()) {
                        e.insert(store.blob_stat(&l.digest).await?.map_or(0, |b| b.size));
                    }
                    v.links.insert(l.digest, ms(l.modified));
                }
                for key in store.meta_list(&format!("pins/{repo}")).await? {
                    let name = key.rsplit('/').next().unwrap_or_default();
                    if let Ok(d) = name.replacen('-', ":", 1).parse::<Digest>() {
                        v.pinned.insert(d);
                    }
                }
                v.access = self.budget.access.times(store, repo).await?;
                views.push(v);
            }
            if page.len() < 100 {
                break;
            }
            after = page.last().map(|r| r.to_string());
        }
        Ok((views, sizes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    const MIB: u64 = 1 << 20;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    /// A cache repository holding `images`: (name, last access, layer size); each image is a manifest with a
    /// config and one layer of its own.
    fn view(upstream: usize, images: &[(&str, u64)], sizes: &mut HashMap<Digest, u64>) -> RepoView {
        let mut v = RepoView { upstream, ..RepoView::default() };
        for (name, at) in images {
            let (m, c, l) = (d(&format!("m{name}")), d(&format!("c{name}")), d(&format!("l{name}")));
            v.manifests.insert(
                m.clone(),
                ManifestInfo { modified: 1, blobs: vec![c.clone(), l.clone()], ..Default::default() },
            );
            for b in [&c, &l] {
                v.links.insert(b.clone(), 1);
            }
            sizes.insert(c, 0);
            sizes.insert(l, MIB);
            v.access.insert(m, *at);
        }
        v
    }

    fn evicted(p: &Plan) -> Vec<Digest> {
        p.evictions.iter().flat_map(|e| e.manifests.clone()).collect()
    }

    #[test]
    fn least_recently_used_images_go_first_until_the_budget_holds() {
        let mut sizes = HashMap::new();
        let v = view(0, &[("a", 50), ("b", 10), ("c", 40), ("d", 20), ("e", 30)], &mut sizes);
        let p = plan(&[v], &sizes, &HashSet::new(), Some(5 * MIB / 2), &[None]);
        assert_eq!(evicted(&p), [d("mb"), d("md"), d("me")], "oldest access first");
        assert_eq!((p.total_before, p.total_after), (5 * MIB, 2 * MIB));
        assert_eq!(p.evictions.iter().map(|e| e.bytes).sum::<u64>(), 3 * MIB);
        assert_eq!(p.evictions[0].unlink.len(), 2, "config and layer");
        assert_eq!(p.dropped.len(), 6);
        // Under budget: nothing.
        let v = view(0, &[("a", 1)], &mut sizes);
        assert!(plan(&[v], &sizes, &HashSet::new(), Some(MIB), &[None]).evictions.is_empty());
    }

    #[test]
    fn pinned_and_in_flight_images_are_never_chosen() {
        let mut sizes = HashMap::new();
        let mut v = view(0, &[("synced", 1), ("filling", 2), ("old", 3), ("new", 4)], &mut sizes);
        v.pinned.insert(d("msynced"));
        let in_flight = HashSet::from([(0, d("lfilling"))]);
        let p = plan(&[v], &sizes, &in_flight, Some(MIB), &[None]);
        assert_eq!(evicted(&p), [d("mold"), d("mnew")], "over budget still, but the rest is protected");
        assert_eq!(p.total_after, 2 * MIB);
    }

    #[test]
    fn a_blob_a_pinned_manifest_needs_stays_linked() {
        let mut sizes = HashMap::new();
        let mut v = view(0, &[("old", 1), ("pinned", 9)], &mut sizes);
        // The pinned image shares the old one's layer.
        v.manifests.get_mut(&d("mpinned")).unwrap().blobs.push(d("lold"));
        v.pinned.insert(d("mpinned"));
        let p = plan(&[v], &sizes, &HashSet::new(), Some(MIB), &[None]);
        assert_eq!(evicted(&p), [d("mold")]);
        assert_eq!(p.evictions[0].unlink, [d("cold")], "the shared layer stays");
    }

    #[test]
    fn an_index_goes_with_its_children_and_referrers() {
        let mut sizes = HashMap::new();
        let mut v = view(0, &[("amd64", 5), ("arm64", 5), ("sig", 5), ("other", 100)], &mut sizes);
        let idx = d("index");
        v.manifests.insert(
            idx.clone(),
            ManifestInfo { modified: 1, children: vec![d("mamd64"), d("marm64")], ..Default::default() },
        );
        v.manifests.get_mut(&d("msig")).unwrap().subject = Some(idx.clone());
        let p = plan(&[v], &sizes, &HashSet::new(), Some(2 * MIB), &[None]);
        assert_eq!(p.evictions.len(), 1, "one image");
        let mut gone = evicted(&p);
        assert_eq!(gone[0], idx, "the index first: its tags go before its children");
        gone.sort();
        let mut want = vec![idx, d("mamd64"), d("marm64"), d("msig")];
        want.sort();
        assert_eq!(gone, want);
        assert_eq!(p.total_after, MIB);
    }

    #[test]
    fn per_upstream_budgets_only_evict_that_upstreams_images() {
        let mut sizes = HashMap::new();
        let hub = view(0, &[("h1", 1), ("h2", 2)], &mut sizes);
        let k8s = view(1, &[("k1", 3), ("k2", 4), ("k3", 5)], &mut sizes);
        let p = plan(&[hub, k8s], &sizes, &HashSet::new(), None, &[None, Some(MIB)]);
        assert_eq!(evicted(&p), [d("mk1"), d("mk2")]);
        assert_eq!(p.upstream_after, [2 * MIB, MIB]);
    }

    #[test]
    fn stray_links_are_evicted_by_their_own_age_and_a_blob_another_cache_repo_links_frees_nothing() {
        let mut sizes = HashMap::new();
        let mut a = view(0, &[("a", 10)], &mut sizes);
        a.links.insert(d("stray"), 5);
        sizes.insert(d("stray"), MIB);
        let mut b = view(0, &[("b", 20)], &mut sizes);
        // b's image also uses a's layer.
        b.links.insert(d("la"), 1);
        b.manifests.get_mut(&d("mb")).unwrap().blobs.push(d("la"));
        let p = plan(&[a, b], &sizes, &HashSet::new(), Some(3 * MIB / 2), &[None]);
        assert_eq!(p.evictions[0].unlink, [d("stray")]);
        assert_eq!(evicted(&p), [d("ma"), d("mb")], "a's layer is still linked from b, so b goes too");
        assert!(p.dropped.contains(&d("la")) && p.dropped.contains(&d("stray")));
    }

    /// A real pass over a store: only cached images go, least recently used first, their pool bytes through
    /// the collector; pinned and hosted content stays, access times reach the store in one document.
    #[tokio::test]
    async fn a_pass_evicts_cached_images_only_and_frees_their_pool_bytes() {
        use std::sync::Arc;

        use crate::config::upstream::UpstreamConfig;
        use crate::store::memory::MemoryStore;
        use crate::store::StoredManifest;

        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let s = store.as_ref();
        let spool = tempfile::tempdir().unwrap();
        let cfg = UpstreamConfig { name: "docker.io".into(), url: "http://127.0.0.1:9".into(), ..Default::default() };
        // A second upstream with a port: its cache repositories are `registry.local_5000/...`.
        let cfg2 =
            UpstreamConfig { name: "registry.local:5000".into(), url: "http://127.0.0.1:9".into(), ..cfg.clone() };
        let clients: Vec<_> =
            [&cfg, &cfg2].iter().map(|c| Arc::new(crate::upstream::Upstream::from_config(c).unwrap())).collect();
        let mirror = Mirror::new(store.clone(), &[cfg, cfg2], &clients, spool.path().to_owned()).unwrap();
        mirror.set_budget(Some(2500));
        async fn put(s: &dyn ContentStore, repo: &RepoName, bytes: &[u8]) -> Digest {
            let d = Digest::sha256_of(bytes);
            let body: crate::store::ByteStream =
                Box::pin(futures_util::stream::iter([Ok(Bytes::copy_from_slice(bytes))]));
            s.blob_put(&d, None, body).await.unwrap();
            s.blob_link(repo, &d).await.unwrap();
            d
        }
        async fn image(s: &dyn ContentStore, repo: &str, layer_len: usize) -> (RepoName, Digest, Digest) {
            let r: RepoName = repo.parse().unwrap();
            let layer = put(s, &r, &vec![repo.len() as u8; layer_len]).await;
            let config = put(s, &r, repo.as_bytes()).await;
            let mt = "application/vnd.oci.image.manifest.v1+json";
            let json = format!(
                r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer}","size":1}}]}}"#
            );
            let bytes = Bytes::from(json);
            let md = Digest::sha256_of(&bytes);
            let stored = StoredManifest { bytes, media_type: oci::MediaType::OciManifest };
            s.manifest_put(&r, &md, &stored, None).await.unwrap();
            s.tag_put(&r, &"v1".parse().unwrap(), &md).await.unwrap();
            (r, md, layer)
        }
        let hosted = image(s, "team/app", 5000).await;
        let synced = image(s, "docker.io/library/synced", 1000).await;
        crate::history::pin(s, &synced.0, &synced.1, "sync:test").await.unwrap();
        let old = image(s, "docker.io/library/old", 1001).await;
        let mid = image(s, "registry.local_5000/team/my_mid", 1002).await;
        let new = image(s, "docker.io/library/new", 1003).await;
        for (r, m, _) in [&synced, &old, &mid, &new, &hosted] {
            mirror.touch(r, m);
            std::thread::sleep(std::time::Duration::from_millis(3));
        }
        mirror.flush_access().await.unwrap();
        let doc = s
            .meta_get(&format!("{ACCESS_PREFIX}/{}/{ACCESS_LEAF}", old.0))
            .await
            .unwrap()
            .expect("access times flushed");
        assert!(String::from_utf8_lossy(&doc).contains(&old.1.to_string()));

        let gc = Collector::new(store.clone(), None, Arc::new(crate::gc::GcStats::default()));
        let r = mirror.enforce_budget(&gc).await.unwrap();
        assert_eq!(r.evicted, 2, "{r:?}");
        assert!(r.bytes_after <= 2500 && r.bytes_before > 4000, "{r:?}");
        assert_eq!((r.blobs_deleted, mirror.budget_status().cache_bytes), (4, r.bytes_after));
        for (repo, m, layer) in [&old, &mid] {
            assert!(s.manifest_get(repo, m).await.unwrap().is_none());
            assert!(s.tag_get(repo, &"v1".parse().unwrap()).await.unwrap().is_none());
            assert!(!s.blob_linked(repo, layer).await.unwrap() && s.blob_stat(layer).await.unwrap().is_none());
        }
        for (repo, m, layer) in [&synced, &new, &hosted] {
            assert!(s.manifest_get(repo, m).await.unwrap().is_some(), "{repo}");
            assert!(s.blob_linked(repo, layer).await.unwrap() && s.blob_stat(layer).await.unwrap().is_some());
        }
        let evictions = |i: usize| mirror.upstream(i).stats.evictions.load(Ordering::Relaxed);
        assert_eq!((evictions(0), evictions(1)), (1, 1));
        // Within the budget now: a second pass evicts nothing.
        assert_eq!(mirror.enforce_budget(&gc).await.unwrap().evicted, 0);
    }
}
