//! The storage layout, documented once and formatted in one place.
//!
//! ```text
//! blobs/<algo>/<2 hex>/<hex>                      committed blob bytes (global, deduplicated)
//! uploads/<id>/data                               bytes of an upload session or an in-flight blob_put
//! uploads/<id>/repo                               repository the session belongs to
//! repos/<name>/_blobs/<algo>/<hex>                empty: the blob is visible in <name>
//! repos/<name>/_manifests/<algo>/<hex>            "<media type>\n" followed by the exact manifest bytes
//! repos/<name>/_tags/<tag>                        the digest the tag points at
//! repos/<name>/_referrers/<algo>-<subject hex>/<algo>-<hex>   descriptor JSON of a referrer
//! tmp/<random>                                   bytes of an in-flight blob_put (emptied when the store opens)
//! meta/<key>                                     small documents: sync reports, tag history, pins
//! ```
//! Repository path components never start with `_` (name grammar), so the `_` directories cannot collide
//! with nested repository names. Temp files are `.<name>.<random>.tmp` in the target's directory.

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

    /// Scratch directory for in-flight `blob_put` writes (never resumed, so emptied at open).
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
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
