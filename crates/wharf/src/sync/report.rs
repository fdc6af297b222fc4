//! What a sync run did, as a document kept in the store (`meta/sync/<entry>.json`) for `wharf sync status`
//! and `GET /_wharf/sync`.

use serde::{Deserialize, Serialize};

/// The result of one run of one entry.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// Entry name.
    pub entry: String,
    /// Upstream name.
    pub upstream: String,
    /// Repository at the upstream.
    pub repository: String,
    /// Repository written to (local name, or the destination's).
    pub destination: String,
    /// `copy`, `dry-run` or `check`.
    pub mode: String,
    /// Unix seconds.
    pub started_at: u64,
    /// Unix seconds.
    pub finished_at: u64,
    /// Per selected tag.
    pub tags: Vec<TagReport>,
    /// Blob bytes copied.
    pub bytes_copied: u64,
    /// Blobs copied.
    pub blobs_copied: u64,
    /// Blobs already present.
    pub blobs_skipped: u64,
    /// Manifests written.
    pub manifests_copied: u64,
    /// Errors (the run exits non-zero).
    pub errors: Vec<String>,
    /// Immutable tags that moved upstream (the run exits non-zero).
    pub conflicts: Vec<Conflict>,
    /// Why the run stopped before the end (rate-limit floor), if it did.
    pub stopped_early: Option<String>,
}

/// One tag's outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TagReport {
    /// The tag.
    pub tag: String,
    /// Digest upstream (what the tag points at after the run, except for conflicts).
    pub digest: Option<String>,
    /// `created`, `updated`, `completed` (was cached without everything), `unchanged`, `conflict`, `error`,
    /// `skipped`; for dry runs `would-copy`; for checks `missing`, `drift`, `incomplete`.
    pub action: String,
    /// The digest before, when it changed (or the kept one in a conflict).
    pub previous: Option<String>,
    /// Index entries: platform, digest and whether it is present.
    pub platforms: Vec<PlatformReport>,
    /// Platforms `[[tags]] required_platforms` asks for that the upstream image lacks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing_platforms: Vec<String>,
}

/// One platform of an index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PlatformReport {
    /// `os/arch[/variant]`.
    pub platform: String,
    /// The platform manifest's digest.
    pub digest: String,
    /// Whether it was copied (false in a sparse copy).
    pub present: bool,
}

/// An immutable tag that points at different content upstream than here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Conflict {
    /// The tag.
    pub tag: String,
    /// The digest kept here.
    pub kept: String,
    /// The digest upstream now.
    pub upstream: String,
}

impl Report {
    /// True when the run should exit non-zero.
    pub fn failed(&self) -> bool {
        !self.errors.is_empty() || !self.conflicts.is_empty() || self.stopped_early.is_some()
    }

    /// True when a `--check` run found tags that differ from the upstream.
    pub fn drifted(&self) -> bool {
        self.tags.iter().any(|t| matches!(t.action.as_str(), "drift" | "missing" | "incomplete" | "would-copy"))
    }

    /// The store key of an entry's last report.
    pub fn key(entry: &str) -> String {
        let safe: String =
            entry.chars().map(|c| if c.is_ascii_alphanumeric() || "_-".contains(c) { c } else { '_' }).collect();
        // The readable part can collide (`a/b` and `a_b`); the hash cannot.
        let hash = oci::Digest::sha256_of(entry.as_bytes());
        format!("sync/{safe}-{}.json", &hash.hex()[..12])
    }
}
