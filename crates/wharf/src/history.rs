//! Tag history and pins: small records kept beside the content (in the store's meta documents), so that
//! "the same tag now points at different content" is never silent and synced content is never evicted.
//!
//! May import: `store`, `oci`.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use oci::{Digest, RepoName, Tag};
use serde::{Deserialize, Serialize};

use crate::store::{ContentStore, StoreError};

/// One change of a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEvent {
    /// Unix seconds.
    pub time: u64,
    /// Digest before the change (`None` when the tag was created).
    pub old: Option<Digest>,
    /// Digest after the change.
    pub new: Digest,
    /// Who changed it (`sync:<entry>`, `mirror`, …).
    pub source: String,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn history_key(repo: &RepoName, tag: &Tag) -> String {
    format!("history/{repo}/{tag}.json")
}

/// A tag's changes, oldest first.
pub async fn tag_history(store: &dyn ContentStore, repo: &RepoName, tag: &Tag) -> Result<Vec<TagEvent>, StoreError> {
    let key = history_key(repo, tag);
    match store.meta_get(&key).await? {
        Some(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Corrupt(key, e.to_string())),
        None => Ok(Vec::new()),
    }
}

/// Record a change of a tag.
pub async fn record_tag_event(
    store: &dyn ContentStore,
    repo: &RepoName,
    tag: &Tag,
    event: TagEvent,
) -> Result<(), StoreError> {
    let mut all = tag_history(store, repo, tag).await?;
    all.push(event);
    let json = serde_json::to_vec_pretty(&all).expect("events serialise");
    store.meta_put(&history_key(repo, tag), Bytes::from(json)).await
}

/// Why a manifest must be kept.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pin {
    /// Who pinned it (`sync:<entry>`).
    pub owner: String,
    /// Unix seconds.
    pub time: u64,
}

fn pin_key(repo: &RepoName, digest: &Digest) -> String {
    format!("pins/{repo}/{}-{}", digest.algorithm(), digest.hex())
}

/// Pin a manifest (and so everything it references) against future eviction.
pub async fn pin(store: &dyn ContentStore, repo: &RepoName, digest: &Digest, owner: &str) -> Result<(), StoreError> {
    let json = serde_json::to_vec(&Pin { owner: owner.to_owned(), time: now_secs() }).expect("pins serialise");
    store.meta_put(&pin_key(repo, digest), Bytes::from(json)).await
}

/// The pin on a manifest, if any.
pub async fn pinned(store: &dyn ContentStore, repo: &RepoName, digest: &Digest) -> Result<Option<Pin>, StoreError> {
    let key = pin_key(repo, digest);
    match store.meta_get(&key).await? {
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(|e| StoreError::Corrupt(key, e.to_string())),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test]
    async fn history_and_pins() {
        let s = MemoryStore::new();
        let (r, t) = ("docker.io/library/a".parse().unwrap(), "latest".parse().unwrap());
        let (d1, d2) = (Digest::sha256_of(b"1"), Digest::sha256_of(b"2"));
        record_tag_event(&s, &r, &t, TagEvent { time: 1, old: None, new: d1.clone(), source: "sync:x".into() })
            .await
            .unwrap();
        record_tag_event(
            &s,
            &r,
            &t,
            TagEvent { time: 2, old: Some(d1.clone()), new: d2.clone(), source: "sync:x".into() },
        )
        .await
        .unwrap();
        let h = tag_history(&s, &r, &t).await.unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!((h[1].old.as_ref(), &h[1].new), (Some(&d1), &d2));
        assert!(pinned(&s, &r, &d1).await.unwrap().is_none());
        pin(&s, &r, &d1, "sync:x").await.unwrap();
        assert_eq!(pinned(&s, &r, &d1).await.unwrap().unwrap().owner, "sync:x");
    }
}
