//! The registry service: the one path for repository reads and writes. It validates content (manifest
//! references, digests, sizes) and applies the registry's rules before anything reaches the store.
//!
//! May import: `store`, `oci`. Must not import: `api` or axum — HTTP details stay in `api`.

mod blobs;
mod manifests;

use std::sync::Arc;

use oci::{Digest, RepoName};

pub use self::blobs::{BlobStart, RangeRequest, UploadProgress};
pub use self::manifests::PutOutcome;
use crate::store::{ContentStore, StoreError};

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
    /// A requested byte range lies outside the blob.
    #[error("range not satisfiable for a blob of {size} bytes")]
    RangeNotSatisfiable {
        /// Blob size, reported in `Content-Range`.
        size: u64,
    },
}

/// Shorthand for service results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The registry: content rules over a [`ContentStore`].
#[derive(Clone)]
pub struct Registry {
    store: Arc<dyn ContentStore>,
}

impl Registry {
    /// A registry over a store.
    pub fn new(store: Arc<dyn ContentStore>) -> Self {
        Registry { store }
    }

    /// The underlying store, for front doors that copy content directly (sync, verification).
    pub fn store(&self) -> &Arc<dyn ContentStore> {
        &self.store
    }
}
