//! The registry service: the one path for repository reads and writes. It validates content (manifest
//! references, digests, sizes) and applies the registry's rules before anything reaches the store.
//!
//! Mirrored repositories are routed (`policy::routing`) to the `mirror`, which fetches and caches; hosted ones
//! go straight to the store. Mirrored namespaces are read-only.
//!
//! May import: `mirror`, `policy`, `store`, `oci`. Must not import: `api` or axum — HTTP details stay in `api`.

mod blobs;
mod manifests;
pub mod read_cache;
pub mod retention;
pub mod tags;

use std::sync::Arc;

use oci::{Digest, RepoName};

pub use self::blobs::{BlobStart, RangeRequest, UploadProgress};
pub use self::manifests::{ManifestAnswer, PutOutcome};
use crate::mirror::{Mirror, MirrorError};
use crate::policy::routing::{MirrorRoute, Route, Router};
use crate::store::{ContentStore, StoreError};
use crate::upstream::UpstreamError;

/// Largest manifest accepted; defined once in `oci` (the same limit applies to manifests fetched upstream).
pub use oci::MAX_MANIFEST_BYTES;

/// Errors from registry operations, each one a distinct wire outcome (mapped in `api::errors`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed or rejected content.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The repository has no content.
    #[error("repository {0} is not known to this registry")]
    NameUnknown(RepoName),
    /// No manifest under that tag or digest.
    #[error("manifest {reference} is not known in repository {repo}")]
    ManifestUnknown {
        /// Repository.
        repo: RepoName,
        /// Tag or digest asked for.
        reference: String,
    },
    /// The blob is not visible in the repository.
    #[error("blob {digest} is not known in repository {repo}")]
    BlobUnknown {
        /// Repository.
        repo: RepoName,
        /// Digest asked for.
        digest: Digest,
    },
    /// The manifest document is not acceptable.
    #[error("{0}")]
    ManifestInvalid(String),
    /// The manifest points at content that is not in the repository.
    #[error("manifest references {0}, which is not in the repository")]
    ManifestBlobUnknown(Digest),
    /// The manifest is over the size limit.
    #[error("manifest is larger than the {MAX_MANIFEST_BYTES}-byte limit")]
    ManifestTooLarge,
    /// A digest did not match the content, or was malformed.
    #[error("{0}")]
    DigestInvalid(String),
    /// The name is valid but its mirror cache name would not be (too long).
    #[error("{0}")]
    NameInvalid(String),
    /// A write to a read-only (mirrored) repository, or one a tag rule forbids.
    #[error("{0}")]
    Denied(String),
    /// A conditional tag write (`If-Match` / `If-None-Match`) whose condition does not hold.
    #[error("{0}")]
    PreconditionFailed(String),
    /// A mirrored read failed upstream and nothing usable is cached.
    #[error("upstream {upstream} failed and nothing is cached: {error}")]
    Upstream {
        /// Upstream name.
        upstream: String,
        /// What went wrong.
        error: UpstreamError,
    },
    /// A requested byte range lies outside the blob.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// Blob size, reported in `Content-Range`.
        size: u64,
    },
}

/// Shorthand for service results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<MirrorError> for Error {
    fn from(e: MirrorError) -> Self {
        match e {
            MirrorError::Store(s) => Error::Store(s),
            MirrorError::Upstream { upstream, error } => Error::Upstream { upstream, error },
        }
    }
}

/// The registry: content rules over a [`ContentStore`], with mirrored repositories served by the [`Mirror`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn ContentStore>,
    mirror: Option<Arc<Mirror>>,
    router: Router,
    tag_policy: Arc<tags::TagPolicy>,
    retention: Arc<retention::Retention>,
    events: crate::events::Events,
    /// Answer blob GETs with a redirect to a presigned object-store URL valid this long (`None`: stream).
    blob_redirects: Option<std::time::Duration>,
    /// Short-lived cache of hosted manifest reads (object storage only).
    read_cache: Option<Arc<read_cache::ReadCache>>,
    /// Conditional tag writes hold the tag's lease in the store (replicas sharing an object store).
    tag_leases: bool,
}

impl Registry {
    /// A registry over a store, hosting every repository.
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Registry {
            store,
            mirror: None,
            router: Router::default(),
            tag_policy: Default::default(),
            retention: Default::default(),
            events: Default::default(),
            blob_redirects: None,
            read_cache: None,
            tag_leases: false,
        }
    }

    /// Apply `[[tags]]` rules and the `[history] keep` bound to hosted tags.
    pub fn with_tag_policy(mut self, policy: tags::TagPolicy) -> Self {
        self.tag_policy = Arc::new(policy);
        self
    }

    /// Send blob GETs (whole blobs, hosted or cached) to the object store with a presigned URL valid for
    /// `expiry`, when the store can make one: clients then fetch from the store directly.
    pub fn with_blob_redirects(mut self, expiry: Option<std::time::Duration>) -> Self {
        self.blob_redirects = expiry;
        self
    }

    /// Keep hosted manifest reads (tag → digest, digest → bytes) for `ttl` in memory: for object storage,
    /// where each read is a round trip; other replicas' writes are seen within `ttl`.
    pub fn with_read_cache(mut self, ttl: std::time::Duration) -> Self {
        self.read_cache = Some(Arc::new(read_cache::ReadCache::new(ttl)));
        self
    }

    /// Make conditional tag writes (`If-Match`, `If-None-Match: *`) hold the tag's lease in the store, so
    /// replicas racing on one tag give exactly one winner even where the store has no conditional writes.
    pub fn with_tag_leases(mut self) -> Self {
        self.tag_leases = true;
        self
    }

    /// Drop cached reads of a repository after this process changed it.
    fn forget_reads(&self, repo: &RepoName) {
        if let Some(c) = &self.read_cache {
            c.forget(repo);
        }
    }

    /// Emit events (webhooks) for pushes, tag moves, deletes and collections.
    pub fn with_events(mut self, events: crate::events::Events) -> Self {
        self.events = events;
        self
    }

    /// The event handle (disabled without webhooks), for background tasks that announce results.
    pub fn events(&self) -> &crate::events::Events {
        &self.events
    }

    /// A registry that also mirrors the upstreams named in `router`.
    pub fn with_mirror(store: Arc<dyn ContentStore>, mirror: Arc<Mirror>, router: Router) -> Self {
        Registry {
            store,
            mirror: Some(mirror),
            router,
            tag_policy: Default::default(),
            retention: Default::default(),
            events: Default::default(),
            blob_redirects: None,
            read_cache: None,
            tag_leases: false,
        }
    }

    /// The mirror, for status views.
    pub fn mirror(&self) -> Option<&Arc<Mirror>> {
        self.mirror.as_ref()
    }

    /// The content store, for read-only checks beside the registry paths (`GET /_wharf/verify/...`).
    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }

    /// Route a repository request (with the client's `ns`, if any).
    pub fn route(&self, repo: &RepoName, ns: Option<&str>) -> Result<Route> {
        if self.mirror.is_none() {
            return Ok(Route::Hosted(repo.clone()));
        }
        self.router.resolve(repo, ns).ok_or_else(|| {
            Error::NameInvalid(format!("repository {repo} is too long to cache under its registry host"))
        })
    }

    /// Where a read of `repo` is answered from, decided per repository: a name with hosted content never
    /// consults an upstream (so a miss in a hosted repository is a plain 404, never another registry's
    /// content of the same name); the default upstream serves only names with no hosted content.
    pub(crate) async fn source(&self, repo: &RepoName, ns: Option<&str>) -> Result<Source> {
        Ok(match self.route(repo, ns)? {
            Route::Hosted(r) => Source::Hosted(r),
            Route::Mirror(m) => Source::Mirror(m),
            Route::HostedOrMirror(r, m) => {
                if self.store.repo_exists(&r).await? {
                    Source::Hosted(r)
                } else {
                    Source::Mirror(m)
                }
            }
            Route::Foreign { repo, .. } => Source::Nothing(repo),
        })
    }

    /// The registry hosts whose content is mirrored (empty without a mirror): token scopes name repositories
    /// without `ns`, so the token endpoint also consults the rules for `<host>/<name>`.
    pub fn mirror_namespaces(&self) -> &[String] {
        match self.mirror {
            Some(_) => self.router.names(),
            None => &[],
        }
    }

    /// Whether `ns` names a mirrored upstream (so responses echo it in `OCI-Namespace`).
    pub fn serves_namespace(&self, ns: &str) -> bool {
        self.mirror.is_some()
            && self
                .router
                .resolve(&"x".parse().expect("valid name"), Some(ns))
                .is_some_and(|r| matches!(r, Route::Mirror(_)))
    }

    /// The repository a write goes to; mirrored namespaces refuse writes, and so do names whose first
    /// component reads as a registry host (`ghcr.io/org/app`): those are where a mirror of that registry keeps
    /// its cache, and content planted there today would be served as that registry's once it is configured.
    pub fn writable(&self, repo: &RepoName, ns: Option<&str>) -> Result<RepoName> {
        match self.route(repo, ns)? {
            Route::Hosted(r) | Route::HostedOrMirror(r, _) => {
                let first = r.as_str().split('/').next().unwrap_or_default();
                if r.as_str().contains('/') && oci::reference::looks_like_host(first) {
                    return Err(Error::Denied(format!(
                        "repository {r} starts with the registry host {first}, which is reserved for mirroring \
                         that registry; push to a name without a host-like first component"
                    )));
                }
                Ok(r)
            }
            Route::Mirror(m) => Err(Error::Denied(format!(
                "repository {repo} is a read-only mirror of {} (cached as {}); push to a repository outside mirrored namespaces",
                self.mirror.as_ref().map_or("an upstream", |mi| mi.upstream(m.upstream).client.name.as_str()),
                m.local
            ))),
            Route::Foreign { repo, ns } => Err(Error::Denied(format!(
                "repository {repo} is in a mirrored namespace, and ns={ns} names no upstream configured here"
            ))),
        }
    }

    /// The local repository holding content for reads that list cached data (tags); `None` when nothing
    /// can be there.
    pub(crate) async fn readable(&self, repo: &RepoName, ns: Option<&str>) -> Result<Option<RepoName>> {
        Ok(match self.source(repo, ns).await? {
            Source::Hosted(r) => Some(r),
            Source::Mirror(m) => Some(m.local),
            Source::Nothing(_) => None,
        })
    }
}

/// Where a read is answered from (see [`Registry::source`]).
pub(crate) enum Source {
    /// The hosted repository of that name.
    Hosted(RepoName),
    /// An upstream, through the mirror's cache.
    Mirror(MirrorRoute),
    /// Nowhere: a mirrored namespace asked for with an unconfigured `ns`.
    Nothing(RepoName),
}
