//! The on-demand pull-through cache: answers reads for mirrored repositories from the store, fetching from
//! the upstream on a miss and storing exactly what it fetched (bytes and media types unchanged).
//!
//! Manifests by digest are immutable and served locally once cached; tags follow the upstream's freshness
//! policy (immutable patterns never revalidated, others revalidated with a `HEAD` after a TTL, concurrent
//! revalidations collapsed). Blobs stream to the client while they are written to a spool file; one fill per
//! digest serves every concurrent client and keeps going when clients leave; the blob becomes visible only
//! after its digest checks out. When the upstream fails, cached content is served stale with a warning.
//!
//! May import: `store`, `upstream`, `policy`, `oci`. Must not import `service` or `api`: the mirror returns
//! what it fetched and the service decides what to do with it.

mod blobs;
pub mod budget;
mod manifests;
mod referrers;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use oci::RepoName;
use serde::Serialize;

pub use self::blobs::MirrorBlob;
pub use self::manifests::MirrorManifest;
pub use self::referrers::MirrorReferrers;
use crate::config::upstream::UpstreamConfig;
use crate::policy::tags::TagPattern;
use crate::store::{ContentStore, StoreError};
use crate::upstream::breaker::Health;
use crate::upstream::{Upstream, UpstreamError};

/// Errors of a mirrored read.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// The upstream failed and nothing usable is cached.
    #[error("upstream {upstream}: {error}")]
    Upstream {
        /// Upstream name.
        upstream: String,
        /// What went wrong.
        error: UpstreamError,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters per upstream, exported on the status endpoint.
#[derive(Default, Debug)]
pub struct Stats {
    /// Requests answered from the cache.
    pub hits: AtomicU64,
    /// Requests that had to go upstream.
    pub misses: AtomicU64,
    /// Cached answers given because the upstream failed.
    pub stale_served: AtomicU64,
    /// Upstream "not found" answers (including negative-cache hits).
    pub not_found: AtomicU64,
    /// Upstream failures.
    pub errors: AtomicU64,
    /// Blobs discarded because their bytes did not match their digest.
    pub corrupt: AtomicU64,
    /// Blob bytes fetched from the upstream.
    pub bytes_fetched: AtomicU64,
    /// Blob fills started (one per digest however many clients ask).
    pub blob_fills: AtomicU64,
    /// Bytes of the blobs linked from this upstream's cache repositories, as the last budget pass measured.
    pub cache_bytes: AtomicU64,
    /// Blob bytes filled since the last budget pass (the cheap over-budget estimate adds them).
    pub filled_since_pass: AtomicU64,
    /// Cached images (or stray blob links) evicted by the cache budget.
    pub evictions: AtomicU64,
    /// Bytes that left this upstream's cache through evictions.
    pub bytes_evicted: AtomicU64,
}

/// An upstream answer that means "this name has no such content": 404, and the 401/403 registries give,
/// with a token they issued, for repositories that do not exist (Docker Hub does). A cached not-found,
/// never an outage. Rejected credentials stay an outage the operator sees.
fn is_absent(e: &UpstreamError) -> bool {
    matches!(e, UpstreamError::NotFound | UpstreamError::Denied { name_refused: true, .. })
}

/// A lookup's result with [`is_absent`] errors turned into "not there".
fn absent_as_none<T>(r: Result<Option<T>, UpstreamError>) -> Result<Option<T>, UpstreamError> {
    match r {
        Err(e) if is_absent(&e) => Ok(None),
        other => other,
    }
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// One upstream with its cache policy.
pub struct Mirrored {
    /// The client (shared with sync, so they share tokens, limits and the breaker).
    pub client: Arc<Upstream>,
    immutable: Vec<TagPattern>,
    tag_ttl: Duration,
    negative_ttl: Duration,
    /// `[[upstream]] max_bytes`: this upstream's cache sub-budget.
    pub max_bytes: Option<u64>,
    /// Counters.
    pub stats: Stats,
}

/// Status of one upstream, for `GET /_wharf/mirror` and `wharf mirror status`.
#[derive(Debug, Serialize)]
pub struct UpstreamStatus {
    /// Registry host name.
    pub name: String,
    /// Base URL.
    pub url: String,
    /// Circuit-breaker health.
    pub health: Health,
    /// Cache hits.
    pub hits: u64,
    /// Cache misses.
    pub misses: u64,
    /// Stale answers.
    pub stale_served: u64,
    /// Upstream not-found answers.
    pub not_found: u64,
    /// Upstream failures.
    pub errors: u64,
    /// Corrupt blobs discarded.
    pub corrupt: u64,
    /// Bytes fetched.
    pub bytes_fetched: u64,
    /// Blob fills started.
    pub blob_fills: u64,
    /// This upstream's cache sub-budget (`[[upstream]] max_bytes`), if any.
    pub max_bytes: Option<u64>,
    /// Bytes of blobs linked from its cache repositories (measured by the last budget pass).
    pub cache_bytes: u64,
    /// Cached images evicted by the budget.
    pub evictions: u64,
    /// Bytes evicted.
    pub bytes_evicted: u64,
}

/// (local repository, what) — `what` is `m:<ref>` for manifests, `b:<digest>` for blobs.
type Key = (RepoName, String);

/// Bound on each per-process map (negative cache, tag freshness): beyond it the map is emptied, which only
/// costs a few extra upstream requests.
const MAX_ENTRIES: usize = 100_000;

/// The pull-through cache over all configured upstreams.
pub struct Mirror {
    store: Arc<dyn ContentStore>,
    upstreams: Vec<Mirrored>,
    spool: PathBuf,
    /// When each (local repo, tag) was last confirmed upstream, and the digest the upstream confirmed. A
    /// per-process cache: after a restart the first request revalidates.
    checked: Mutex<HashMap<Key, (Instant, oci::Digest)>>,
    /// Upstream "not found" answers and when they expire.
    negative: Mutex<HashMap<Key, Instant>>,
    /// One lock per (local repo, reference) being fetched or revalidated, so concurrent requests collapse.
    flights: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
    /// Blob fills in progress, by (upstream, remote repository, digest): a fill answers only for the
    /// repository it fetches from.
    fills: Mutex<HashMap<(usize, RepoName, oci::Digest), Arc<blobs::Fill>>>,
    /// The cache budget: access times, the whole-cache limit, blobs waiting for the pool phase.
    budget: budget::BudgetState,
    /// Handle to ourselves for the detached fill tasks.
    me: Weak<Mirror>,
    /// Where fills are announced (webhooks), once the server has started them.
    events: std::sync::OnceLock<crate::events::Events>,
}

impl Mirror {
    /// Announce fills from now on (`[[webhook]]` events `mirror.filled`).
    pub fn set_events(&self, events: crate::events::Events) {
        let _ = self.events.set(events);
    }

    /// Announce that `digest` (a blob or a manifest) was fetched from upstream into `repo`'s cache.
    pub(crate) fn announce_fill(&self, upstream: &str, repo: &RepoName, digest: &oci::Digest, kind: &str, size: u64) {
        if let Some(e) = self.events.get() {
            e.emit(crate::events::Event::about(
                "mirror.filled",
                repo.as_str(),
                Some(format!("{repo}@{digest}")),
                serde_json::json!({
                    "upstream": upstream,
                    "repository": repo.to_string(),
                    "digest": digest.to_string(),
                    "kind": kind,
                    "size": size,
                }),
            ));
        }
    }

    /// Build the clients for every `[[upstream]]`; `spool` is a local directory for blobs being fetched
    /// (on the data directory's filesystem, so finished blobs are renamed, not copied).
    pub fn new(
        store: Arc<dyn ContentStore>,
        configs: &[UpstreamConfig],
        clients: &[Arc<Upstream>],
        spool: PathBuf,
    ) -> Result<Arc<Mirror>, String> {
        std::fs::create_dir_all(&spool).map_err(|e| format!("{}: {e}", spool.display()))?;
        // Spool files of a previous process are incomplete by definition.
        if let Ok(entries) = std::fs::read_dir(&spool) {
            for e in entries.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let mut upstreams = Vec::new();
        for (c, client) in configs.iter().zip(clients) {
            let client = client.clone();
            let immutable = c.immutable_tags.iter().map(|p| TagPattern::parse(p)).collect::<Result<_, _>>()?;
            upstreams.push(Mirrored {
                client,
                immutable,
                tag_ttl: Duration::from_secs(c.tag_ttl_secs),
                negative_ttl: Duration::from_secs(c.negative_ttl_secs),
                max_bytes: c.max_bytes()?,
                stats: Stats::default(),
            });
        }
        Ok(Arc::new_cyclic(|me| Mirror {
            store,
            upstreams,
            spool,
            checked: Mutex::default(),
            negative: Mutex::default(),
            flights: Mutex::default(),
            fills: Mutex::default(),
            budget: budget::BudgetState::default(),
            me: me.clone(),
            events: std::sync::OnceLock::new(),
        }))
    }

    fn self_ref(&self) -> Arc<Mirror> {
        self.me.upgrade().expect("the mirror outlives its own requests")
    }

    /// The upstream with index `i`.
    pub fn upstream(&self, i: usize) -> &Mirrored {
        &self.upstreams[i]
    }

    /// Status of every upstream.
    pub fn status(&self) -> Vec<UpstreamStatus> {
        self.upstreams
            .iter()
            .map(|u| {
                let s = &u.stats;
                let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
                UpstreamStatus {
                    name: u.client.name.clone(),
                    url: u.client.url().to_owned(),
                    health: u.client.health(),
                    hits: g(&s.hits),
                    misses: g(&s.misses),
                    stale_served: g(&s.stale_served),
                    not_found: g(&s.not_found),
                    errors: g(&s.errors),
                    corrupt: g(&s.corrupt),
                    bytes_fetched: g(&s.bytes_fetched),
                    blob_fills: g(&s.blob_fills),
                    max_bytes: u.max_bytes,
                    cache_bytes: g(&s.cache_bytes),
                    evictions: g(&s.evictions),
                    bytes_evicted: g(&s.bytes_evicted),
                }
            })
            .collect()
    }

    fn flight(&self, key: &Key) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.flights.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() > 10_000 {
            map.retain(|_, m| Arc::strong_count(m) > 1);
        }
        // (a flight is only in the map while someone holds or waits for it, after the retain above)
        map.entry(key.clone()).or_default().clone()
    }

    fn negative_hit(&self, up: &Mirrored, key: &Key) -> bool {
        let mut map = self.negative.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match map.get(key) {
            Some(until) if *until > Instant::now() => {
                bump(&up.stats.not_found);
                true
            }
            Some(_) => {
                map.remove(key);
                false
            }
            None => false,
        }
    }

    fn remember_not_found(&self, up: &Mirrored, key: Key) {
        bump(&up.stats.not_found);
        if up.negative_ttl > Duration::ZERO {
            let mut map = self.negative.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if map.len() >= MAX_ENTRIES {
                let now = Instant::now();
                map.retain(|_, until| *until > now);
                if map.len() >= MAX_ENTRIES {
                    map.clear();
                }
            }
            map.insert(key, Instant::now() + up.negative_ttl);
        }
    }

    fn upstream_error(&self, up: &Mirrored, error: UpstreamError) -> MirrorError {
        bump(&up.stats.errors);
        MirrorError::Upstream { upstream: up.client.name.clone(), error }
    }
}
