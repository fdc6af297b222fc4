//! The storage layout, documented once and formatted in one place.
//!
//! ```text
//! blobs/<algo>/<2 hex>/<hex>                      committed blob bytes (global, deduplicated)
//! uploads/<id>/data                               bytes of an upload session (mtime = last activity)
//! uploads/<id>/repo                               repository the session belongs to
//! repos/<name>/_blobs/<algo>/<hex>                empty: the blob is visible in <name>
//! repos/<name>/_manifests/<algo>/<hex>            "<media type>\n" followed by the exact manifest bytes
//! repos/<name>/_refs/<algo>/<blob hex>/<algo>-<manifest hex>   empty: that manifest references the blob
//! repos/<name>/_refs/.complete                   empty: every manifest here has its `_refs` entries
//! repos/<name>/_tags/<tag>                        the digest the tag points at
//! repos/<name>/_referrers/<algo>-<subject hex>/<algo>-<hex>   descriptor JSON of a referrer
//! tmp/<pid>-<random>/<random>/data               bytes of an in-flight blob_put, per process
//! tmp/<pid>-<random>.lock                         flock held by that process while it lives
//! spool/<pid>-<random>/, spool/<pid>-<random>.lock   the mirror's blob fills, per `serve` process
//! serve.lock                                      flock held by the one `wharf serve` of this directory
//! gc.lock                                         flock held by the one garbage collection running here
//! scrub.lock                                      flock held by the one scrub running here
//! quarantine/<batch>/blobs/<algo>-<hex>           a corrupt pool blob the scrub moved aside (never served)
//! quarantine/<batch>/repos/<name>/<algo>-<hex>    a corrupt manifest of <name> (stored file, as it was)
//! meta/<key>                                     small documents: sync reports, tag history, pins
//! ```
//! Repository path components never start with `_` (name grammar), so the `_` directories cannot collide
//! with nested repository names. Temp files are `.<name>.<random>.tmp` in the target's directory.
//!
//! `_refs` is the reverse index a blob delete needs ("does a manifest here still use this blob?"): written
//! before the manifest at push, so a durable manifest always has its entries; an entry whose manifest is gone
//! (deleted, or a push that crashed) is ignored and removed with the manifest. Looking a blob up is one
//! directory read of the manifests that use it. Data directories from before the index have manifests without
//! entries: the first lookup in such a repository scans its manifests once, writes their entries, then the
//! `.complete` marker (a crash before the marker only means the scan runs again).

use std::path::{Path, PathBuf};

use oci::{Digest, RepoName, Tag};

use super::UploadId;

/// Path builder rooted at the data directory.
#[derive(Clone, Debug)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    /// Layout under `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Layout { root: root.into() }
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Committed blob bytes.
    pub fn blob(&self, d: &Digest) -> PathBuf {
        let hex = d.hex();
        self.root.join("blobs").join(d.algorithm().as_str()).join(&hex[..2]).join(hex)
    }

    /// Parent of the per-process scratch folders for in-flight `blob_put` writes.
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// Parent of the per-process mirror spool folders.
    pub fn spool(&self) -> PathBuf {
        self.root.join("spool")
    }

    /// The lock file that keeps a second `wharf serve` off this data directory.
    pub fn serve_lock(&self) -> PathBuf {
        self.root.join("serve.lock")
    }

    /// The lock file that keeps a second garbage collection off this data directory.
    pub fn gc_lock(&self) -> PathBuf {
        self.root.join("gc.lock")
    }

    /// The lock file that keeps a second scrub off this data directory.
    pub fn scrub_lock(&self) -> PathBuf {
        self.root.join("scrub.lock")
    }

    /// Where a scrub moves a corrupt pool blob (`batch` names the scrub, e.g. its start time).
    pub fn quarantined_blob(&self, batch: &str, d: &Digest) -> PathBuf {
        self.root.join("quarantine").join(batch).join("blobs").join(format!("{}-{}", d.algorithm(), d.hex()))
    }

    /// Where a scrub moves a corrupt manifest of `repo`.
    pub fn quarantined_manifest(&self, batch: &str, repo: &RepoName, d: &Digest) -> PathBuf {
        self.root.join("quarantine").join(batch).join("repos").join(repo.as_str()).join(format!(
            "{}-{}",
            d.algorithm(),
            d.hex()
        ))
    }

    /// A meta document (the key was validated by the caller).
    pub fn meta(&self, key: &str) -> PathBuf {
        self.root.join("meta").join(key)
    }

    /// Directory of all upload sessions.
    pub fn uploads(&self) -> PathBuf {
        self.root.join("uploads")
    }

    /// Directory of one upload session.
    pub fn upload_dir(&self, id: &UploadId) -> PathBuf {
        self.uploads().join(id.as_str())
    }

    /// Directory holding all repositories.
    pub fn repos(&self) -> PathBuf {
        self.root.join("repos")
    }

    /// A repository's directory.
    pub fn repo(&self, repo: &RepoName) -> PathBuf {
        self.repos().join(repo.as_str())
    }

    /// Link making a blob visible in a repository.
    pub fn blob_link(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo(repo).join("_blobs").join(d.algorithm().as_str()).join(d.hex())
    }

    /// A repository's manifest.
    pub fn manifest(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo(repo).join("_manifests").join(d.algorithm().as_str()).join(d.hex())
    }

    /// Directory of the manifests that reference blob `d` in a repository.
    pub fn blob_refs(&self, repo: &RepoName, d: &Digest) -> PathBuf {
        self.repo(repo).join("_refs").join(d.algorithm().as_str()).join(d.hex())
    }

    /// The entry saying manifest `m` references blob `d`.
    pub fn blob_ref(&self, repo: &RepoName, d: &Digest, m: &Digest) -> PathBuf {
        self.blob_refs(repo, d).join(format!("{}-{}", m.algorithm(), m.hex()))
    }

    /// Marker that the repository's `_refs` entries were rebuilt for manifests stored before the index.
    pub fn refs_complete(&self, repo: &RepoName) -> PathBuf {
        self.repo(repo).join("_refs").join(".complete")
    }

    /// Directory of a repository's tags.
    pub fn tags(&self, repo: &RepoName) -> PathBuf {
        self.repo(repo).join("_tags")
    }

    /// One tag.
    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> PathBuf {
        self.tags(repo).join(tag.as_str())
    }

    /// Directory of the referrers of `subject`.
    pub fn referrers(&self, repo: &RepoName, subject: &Digest) -> PathBuf {
        self.repo(repo).join("_referrers").join(format!("{}-{}", subject.algorithm(), subject.hex()))
    }

    /// One referrer entry.
    pub fn referrer(&self, repo: &RepoName, subject: &Digest, d: &Digest) -> PathBuf {
        self.referrers(repo, subject).join(format!("{}-{}", d.algorithm(), d.hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let l = Layout::new("/d");
        let d = Digest::sha256_of(b"");
        let r: RepoName = "a/b".parse().unwrap();
        assert_eq!(
            l.blob(&d).to_str().unwrap(),
            "/d/blobs/sha256/e3/e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(l.tag(&r, &"v1".parse().unwrap()).to_str().unwrap(), "/d/repos/a/b/_tags/v1");
        assert!(l.manifest(&r, &d).starts_with("/d/repos/a/b/_manifests/sha256"));
    }
}
