//! Last-access times of (repository, manifest or blob), noted in memory on every read and written to the store
//! in batches: one meta document per repository, merged at each flush. A GET never costs a write. Two users:
//! the mirror's cache budget (least recently used eviction) and hosted retention (`keep_within` counts pulls).
//!
//! May import: `store`, `oci`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use oci::{Digest, RepoName};

use crate::store::{ContentStore, StoreError};

/// Most (repository, digest) access times held in memory between flushes; past it new keys wait for the
/// next flush (which is requested at once).
pub const MAX_TRACKED: usize = 100_000;
/// Most entries kept per repository's document (the oldest go first).
const DOC_KEEP: usize = 20_000;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One family of access documents (`<prefix>/<repo>/<leaf>`) and the times not yet flushed to them.
pub struct AccessLog {
    prefix: &'static str,
    leaf: &'static str,
    noted: Mutex<HashMap<(RepoName, Digest), u64>>,
    flush_soon: AtomicBool,
}

impl AccessLog {
    /// A log whose documents are `<prefix>/<repo>/<leaf>`; `leaf` starts with `@`, which cannot start a
    /// repository name component, so a document never collides with a nested repository.
    pub fn new(prefix: &'static str, leaf: &'static str) -> AccessLog {
        AccessLog { prefix, leaf, noted: Mutex::new(HashMap::new()), flush_soon: AtomicBool::new(false) }
    }

    fn key(&self, repo: &RepoName) -> String {
        format!("{}/{repo}/{}", self.prefix, self.leaf)
    }

    fn noted(&self) -> std::sync::MutexGuard<'_, HashMap<(RepoName, Digest), u64>> {
        self.noted.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Note an access now (memory only).
    pub fn note(&self, repo: &RepoName, digest: &Digest) {
        self.note_at(repo, digest, now_ms());
    }

    /// Note an access at `ms` (memory only); past [`MAX_TRACKED`] keys a new one is dropped and a flush asked.
    pub fn note_at(&self, repo: &RepoName, digest: &Digest, ms: u64) {
        let mut map = self.noted();
        let key = (repo.clone(), digest.clone());
        if map.len() >= MAX_TRACKED && !map.contains_key(&key) {
            self.flush_soon.store(true, Ordering::Relaxed);
            return;
        }
        let e = map.entry(key).or_insert(0);
        *e = (*e).max(ms);
        if map.len() >= MAX_TRACKED / 2 {
            self.flush_soon.store(true, Ordering::Relaxed);
        }
    }

    /// Whether the in-memory map asks to be flushed before the regular interval.
    pub fn flush_due(&self) -> bool {
        self.flush_soon.load(Ordering::Relaxed)
    }

    /// Merge the noted times into each repository's document (one write per repository touched). On a failed
    /// write the times of that repository are put back for the next flush.
    pub async fn flush(&self, store: &dyn ContentStore) -> Result<(), StoreError> {
        self.flush_soon.store(false, Ordering::Relaxed);
        let taken = std::mem::take(&mut *self.noted());
        let mut by_repo: HashMap<RepoName, Vec<(Digest, u64)>> = HashMap::new();
        for ((r, d), t) in taken {
            by_repo.entry(r).or_default().push((d, t));
        }
        let mut first_error = None;
        for (repo, entries) in by_repo {
            let written = async {
                let mut doc = self.stored(store, &repo).await?;
                for (d, t) in &entries {
                    let e = doc.entry(d.to_string()).or_insert(0);
                    *e = (*e).max(*t);
                }
                if doc.len() > DOC_KEEP {
                    let mut times: Vec<u64> = doc.values().copied().collect();
                    times.sort_unstable();
                    let floor = times[doc.len() - DOC_KEEP];
                    doc.retain(|_, t| *t >= floor);
                }
                let json = serde_json::to_vec(&doc).expect("access times serialise");
                store.meta_put(&self.key(&repo), Bytes::from(json)).await
            }
            .await;
            if let Err(e) = written {
                for (d, t) in entries {
                    self.note_at(&repo, &d, t);
                }
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    async fn stored(&self, store: &dyn ContentStore, repo: &RepoName) -> Result<HashMap<String, u64>, StoreError> {
        Ok(match store.meta_get(&self.key(repo)).await? {
            // A damaged document only loses access times: start over rather than block what reads them.
            Some(b) => serde_json::from_slice(&b).unwrap_or_default(),
            None => HashMap::new(),
        })
    }

    /// The last access (ms) of everything `repo` has a time for: the stored document and what this process
    /// noted since its last flush.
    pub async fn times(&self, store: &dyn ContentStore, repo: &RepoName) -> Result<HashMap<Digest, u64>, StoreError> {
        let mut out: HashMap<Digest, u64> =
            self.stored(store, repo).await?.into_iter().filter_map(|(d, t)| Some((d.parse().ok()?, t))).collect();
        for ((r, d), t) in self.noted().iter() {
            if r == repo {
                let e = out.entry(d.clone()).or_insert(0);
                *e = (*e).max(*t);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    fn d(s: &str) -> Digest {
        Digest::sha256_of(s.as_bytes())
    }

    #[tokio::test]
    async fn times_merge_the_document_and_what_is_not_flushed_yet() {
        let store = MemoryStore::new();
        let log = AccessLog::new("test/access", "@t");
        let repo: RepoName = "team/app".parse().unwrap();
        log.note_at(&repo, &d("a"), 10);
        log.note_at(&repo, &d("a"), 5); // older: ignored
        log.flush(&store).await.unwrap();
        assert!(store.meta_get("test/access/team/app/@t").await.unwrap().is_some(), "one document per repository");
        log.note_at(&repo, &d("b"), 20);
        let t = log.times(&store, &repo).await.unwrap();
        assert_eq!(t.get(&d("a")), Some(&10));
        assert_eq!(t.get(&d("b")), Some(&20));
        // A second process reading the store sees only what was flushed.
        let other = AccessLog::new("test/access", "@t");
        assert_eq!(other.times(&store, &repo).await.unwrap().len(), 1);
    }
}
