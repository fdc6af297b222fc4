//! Air-gap bundles: images carried across a gap on a disk, as an OCI image layout in one tar file.
//!
//! `wharf bundle export` writes `oci-layout`, every blob under `blobs/<alg>/<hex>` (manifests included, each
//! hashed again while it is written), then `index.json` (one entry per image, named by the
//! `org.opencontainers.image.ref.name` annotation `repo:tag`, plus one unnamed entry per referrer) and
//! `wharf-bundle.json` (what the bundle holds, for people). skopeo (`oci-archive:FILE:repo:tag`) and other
//! OCI layout readers take it as it is. `wharf bundle import` reads the tar twice without unpacking it: once
//! for the headers, `index.json` and the manifests (small, read by offset), once to stream each blob into the
//! store, checked against its digest before it becomes visible; then manifests children first, tags, pins.
//!
//! May import: `store`, `verify` (its `Source` reads the store or a registry), `transfer` (its
//! `Destination` writes them), `history`, `oci`.

pub mod export;
pub mod import;

use oci::{Digest, RefSpec, RepoName};

/// The annotation naming an image in `index.json`.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
/// The inventory's file name in the tar.
pub const INVENTORY: &str = "wharf-bundle.json";
/// Most manifest bytes one export or import holds in memory (manifests are small; this bounds a hostile
/// or enormous bundle).
pub const MAX_MANIFEST_BYTES_HELD: usize = 256 * 1024 * 1024;
/// Largest `index.json` or inventory read.
pub const MAX_INDEX_BYTES: u64 = 16 * 1024 * 1024;

/// Why an export or import stopped.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Reading the source or writing the destination failed.
    #[error("{0}")]
    Source(String),
    /// The bundle file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// The bundle's content is not what it claims (a digest, a size, a missing blob, a bad index).
    #[error("{0}")]
    Invalid(String),
    /// An image asked for is not in the source.
    #[error("{0} is not in the source")]
    NotFound(String),
    /// Importing would move an existing tag to other content (`--force` allows it).
    #[error("{0}")]
    TagExists(String),
}

impl From<crate::verify::VerifyError> for BundleError {
    fn from(e: crate::verify::VerifyError) -> Self {
        BundleError::Source(e.to_string())
    }
}

impl From<crate::transfer::TransferError> for BundleError {
    fn from(e: crate::transfer::TransferError) -> Self {
        BundleError::Source(e.to_string())
    }
}

impl From<crate::store::StoreError> for BundleError {
    fn from(e: crate::store::StoreError) -> Self {
        BundleError::Source(e.to_string())
    }
}

/// The path of a blob inside the layout.
pub fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// `repo:tag` or `repo@digest` as given on the command line.
pub fn parse_ref(s: &str) -> Result<(RepoName, RefSpec), String> {
    let (repo, reference) = if let Some((r, d)) = s.split_once('@') {
        (r, RefSpec::Digest(d.parse().map_err(|e| format!("{s:?}: {e}"))?))
    } else {
        let slash = s.rfind('/').map_or(0, |i| i + 1);
        match s[slash..].rfind(':') {
            Some(i) => {
                let (r, t) = s.split_at(slash + i);
                (r, RefSpec::Tag(t[1..].parse().map_err(|e| format!("{s:?}: {e}"))?))
            }
            None => return Err(format!("{s:?}: expected repo:tag or repo@digest")),
        }
    };
    Ok((repo.parse().map_err(|e| format!("{s:?}: {e}"))?, reference))
}

/// What a bundle holds, written as [`INVENTORY`].
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Inventory {
    /// Format version (1).
    pub version: u32,
    /// Unix seconds.
    pub created: u64,
    /// The images, in command-line order.
    pub images: Vec<InventoryImage>,
    /// Blob files in the bundle (manifests included).
    pub blobs: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Blobs left out because the other side has them (an incremental bundle; import needs them present).
    #[serde(default)]
    pub omitted_blobs: u64,
}

/// One image of a bundle.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct InventoryImage {
    /// `repo:tag` (or `repo@digest`).
    pub name: String,
    /// The top manifest's digest.
    pub digest: String,
    /// Its media type.
    #[serde(rename = "mediaType")]
    pub media_type: String,
    /// Platforms carried (`linux/arm64/v8`), for an index.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platforms: Vec<String>,
    /// Referrers carried (signatures, SBOMs), all depths.
    pub referrers: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_at_the_last_colon_after_the_last_slash() {
        let (r, t) = parse_ref("docker.io/library/alpine:3.20").unwrap();
        assert_eq!((r.as_str(), t.to_string().as_str()), ("docker.io/library/alpine", "3.20"));
        let d = Digest::sha256_of(b"x");
        let (r, t) = parse_ref(&format!("team/app@{d}")).unwrap();
        assert_eq!((r.as_str(), t), ("team/app", RefSpec::Digest(d)));
        assert!(parse_ref("team/app").is_err());
    }
}
