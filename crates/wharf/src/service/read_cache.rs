//! A short-lived cache of hosted manifest reads, for stores where every read is a network round trip
//! (object storage): a manifest GET by tag costs two S3 requests without it, and clients pull the same few
//! tags over and over. Entries live [`ReadCache::ttl`] (a second by default), so what another replica writes
//! is seen within that; this process's own tag moves and manifest deletes drop the repository's entries at
//! once. Only positive answers are kept (a push elsewhere is never hidden by a cached "not found").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oci::{Digest, RepoName, Tag};

use crate::store::StoredManifest;

/// Most tags kept; past it, expired entries go, and if that is not enough, all of them.
const MAX_TAGS: usize = 10_000;
/// Most manifest bytes kept (manifests are at most 4 MiB each).
const MAX_MANIFEST_BYTES: usize = 64 * 1024 * 1024;

/// The cache; see the module documentation.
pub struct ReadCache {
    ttl: Duration,
    tags: Mutex<HashMap<(String, String), (Digest, Instant)>>,
    manifests: Mutex<Manifests>,
}

#[derive(Default)]
struct Manifests {
    entries: HashMap<(String, Digest), (StoredManifest, Instant)>,
    bytes: usize,
}

impl ReadCache {
    /// A cache whose entries live `ttl`.
    pub fn new(ttl: Duration) -> ReadCache {
        ReadCache { ttl, tags: Mutex::new(HashMap::new()), manifests: Mutex::new(Manifests::default()) }
    }

    fn fresh(&self, at: Instant) -> bool {
        at.elapsed() < self.ttl
    }

    /// The digest a tag pointed at less than a TTL ago.
    pub fn tag(&self, repo: &RepoName, tag: &Tag) -> Option<Digest> {
        let tags = self.tags.lock().expect("read cache lock");
        tags.get(&(repo.to_string(), tag.to_string())).filter(|(_, at)| self.fresh(*at)).map(|(d, _)| d.clone())
    }

    /// Keep what the store said a tag points at.
    pub fn put_tag(&self, repo: &RepoName, tag: &Tag, digest: &Digest) {
        let mut tags = self.tags.lock().expect("read cache lock");
        if tags.len() >= MAX_TAGS {
            tags.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if tags.len() >= MAX_TAGS {
                tags.clear();
            }
        }
        tags.insert((repo.to_string(), tag.to_string()), (digest.clone(), Instant::now()));
    }

    /// A manifest read less than a TTL ago.
    pub fn manifest(&self, repo: &RepoName, digest: &Digest) -> Option<StoredManifest> {
        let m = self.manifests.lock().expect("read cache lock");
        m.entries.get(&(repo.to_string(), digest.clone())).filter(|(_, at)| self.fresh(*at)).map(|(m, _)| m.clone())
    }

    /// Keep a manifest read from the store.
    pub fn put_manifest(&self, repo: &RepoName, digest: &Digest, manifest: &StoredManifest) {
        let mut m = self.manifests.lock().expect("read cache lock");
        if m.bytes + manifest.bytes.len() > MAX_MANIFEST_BYTES {
            let ttl = self.ttl;
            m.entries.retain(|_, (_, at)| at.elapsed() < ttl);
            m.bytes = m.entries.values().map(|(e, _)| e.bytes.len()).sum();
            if m.bytes + manifest.bytes.len() > MAX_MANIFEST_BYTES {
                m.entries.clear();
                m.bytes = 0;
            }
        }
        let old = m.entries.insert((repo.to_string(), digest.clone()), (manifest.clone(), Instant::now()));
        m.bytes += manifest.bytes.len();
        if let Some((o, _)) = old {
            m.bytes -= o.bytes.len();
        }
    }

    /// Drop everything kept for a repository (this process moved a tag or deleted a manifest there).
    pub fn forget(&self, repo: &RepoName) {
        let name = repo.as_str();
        self.tags.lock().expect("read cache lock").retain(|(r, _), _| r != name);
        let mut m = self.manifests.lock().expect("read cache lock");
        m.entries.retain(|(r, _), _| r != name);
        m.bytes = m.entries.values().map(|(e, _)| e.bytes.len()).sum();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use oci::MediaType;

    use super::*;

    #[test]
    fn entries_expire_and_writes_forget_the_repository() {
        let cache = ReadCache::new(Duration::from_millis(50));
        let (repo, other) = ("team/app".parse().unwrap(), "team/other".parse().unwrap());
        let tag: Tag = "v1".parse().unwrap();
        let m = StoredManifest { bytes: Bytes::from_static(b"{}"), media_type: MediaType::OciManifest };
        let d = Digest::sha256_of(b"{}");
        cache.put_tag(&repo, &tag, &d);
        cache.put_manifest(&repo, &d, &m);
        cache.put_tag(&other, &tag, &d);
        assert_eq!(cache.tag(&repo, &tag), Some(d.clone()));
        assert!(cache.manifest(&repo, &d).is_some());
        cache.forget(&repo);
        assert_eq!(cache.tag(&repo, &tag), None);
        assert!(cache.manifest(&repo, &d).is_none());
        assert_eq!(cache.tag(&other, &tag), Some(d.clone()), "other repositories stay");
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(cache.tag(&other, &tag), None, "expired");
    }
}
