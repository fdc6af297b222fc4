//! The registry service: the one path for repository reads and writes. It validates content (manifest
//! references, digests, sizes) and applies the registry's rules before anything reaches the store.
//!
//! Mirrored repositories are routed (`policy::routing`) to the `mirror`, which fetches and caches; hosted ones
//! go straight to the store. Mirrored namespaces are read-only.
//!
//! May import: `mirror`, `policy`, `store`, `oci`. Must not import: `api` or axum — HTTP details stay in `api`.

mod blobs;
mod manifests;

use std::sync::Arc;

use oci::{Digest, RepoName};

pub use self::blobs::{BlobStart, RangeRequest, UploadProgress};
pub use self::manifests::{ManifestAnswer, PutOutcome};
use crate::mirror::{Mirror, MirrorError};
use crate::policy::routing::{Route, Router};
use crate::store::{ContentStore, StoreError};
use crate::upstream::UpstreamError;

/// Largest manifest accepted (the distribution spec asks registries to take at least 4 MiB).
pub const MAX_MANIFEST_BYTES: usize = 4 * 1024 * 1024;

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
    /// A write to a read-only (mirrored) repository.
    #[error("{0}")]
    Denied(String),
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
}

impl Registry {
    /// A registry over a store, hosting every repository.
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Registry { store, mirror: None, router: Router::default() }
    }

    /// A registry that also mirrors the upstreams named in `router`.
    pub fn with_mirror(store: Arc<dyn ContentStore>, mirror: Arc<Mirror>, router: Router) -> Self {
        Registry { store, mirror: Some(mirror), router }
    }

    /// The mirror, for status views.
    pub fn mirror(&self) -> Option<&Arc<Mirror>> {
        self.mirror.as_ref()
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

    /// Whether `ns` names a mirrored upstream (so responses echo it in `OCI-Namespace`).
    pub fn serves_namespace(&self, ns: &str) -> bool {
        self.mirror.is_some()
            && self
                .router
                .resolve(&"x".parse().expect("valid name"), Some(ns))
                .is_some_and(|r| matches!(r, Route::Mirror(_)))
    }

    /// The repository a write goes to; mirrored namespaces refuse writes.
    pub fn writable(&self, repo: &RepoName, ns: Option<&str>) -> Result<RepoName> {
        match self.route(repo, ns)? {
            Route::Hosted(r) | Route::HostedOrMirror(r, _) => Ok(r),
            Route::Mirror(m) => Err(Error::Denied(format!(
                "repository {repo} is a read-only mirror of {} (cached as {}); push to a repository outside mirrored namespaces",
                self.mirror.as_ref().map_or("an upstream", |mi| mi.upstream(m.upstream).client.name.as_str()),
                m.local
            ))),
        }
    }

    /// The local repository holding content for reads that list or look up cached data (tags, referrers).
    pub fn readable(&self, repo: &RepoName, ns: Option<&str>) -> Result<RepoName> {
        Ok(match self.route(repo, ns)? {
            Route::Hosted(r) | Route::HostedOrMirror(r, _) => r,
            Route::Mirror(m) => m.local,
        })
    }
}
