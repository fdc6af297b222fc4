//! Pure OCI domain types for Wharf.
//!
//! Everything a registry, a mirror or a client needs to *name* content — digests, repository names, tags,
//! references, media types, descriptors, manifests and the wire error codes — without doing any I/O.
//! This crate must never depend on tokio, axum, reqwest or any storage library, so that it compiles in
//! seconds, can be tested exhaustively and can be reused by any Wharf tool.
#![deny(missing_docs)]

pub mod descriptor;
pub mod digest;
pub mod error_code;
pub mod manifest;
pub mod media_type;
pub mod name;
pub mod reference;

pub use descriptor::{Descriptor, Platform};
pub use digest::{Algorithm, Digest, DigestError, Digester};
pub use error_code::{ErrorBody, ErrorCode, ErrorInfo};
pub use manifest::{ImageIndex, ImageManifest, Manifest, ManifestBody, ManifestError, MAX_MANIFEST_BYTES};
pub use media_type::MediaType;
pub use name::{NameError, RefSpec, RepoName, Tag};
pub use reference::{Reference, ReferenceError};
