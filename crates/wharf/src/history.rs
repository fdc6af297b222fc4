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
    /// Who changed it (`sync:<entry>`, `mirror`, `push:<user>`, `alias`, `rollback:<user>`, …).
    pub source: String,
    /// The tag was deleted (`new` is then the digest it pointed at).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
}

/// Seconds since the Unix epoch.
pub fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Seconds since the epoch as RFC 3339 (UTC).
pub fn rfc3339(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

fn history_key(repo: &RepoName, tag: &Tag) -> String {
    format!("history/{repo}/{tag}.json")
}

/// A tag's changes, oldest first.
pub async fn tag_history(store: &dyn ContentStore, repo: &RepoName, tag: &Tag) -> Result<Vec<TagEvent>, StoreError> {
    Ok(crate::store::meta_json(store, &history_key(repo, tag)).await?.unwrap_or_default())
}

/// Record a change of a tag (keeping the default number of events).
pub async fn record_tag_event(
    store: &dyn ContentStore,
    repo: &RepoName,
    tag: &Tag,
    event: TagEvent,
) -> Result<(), StoreError> {
    record_tag_event_keeping(store, repo, tag, event, crate::config::tags::DEFAULT_HISTORY_KEEP).await
}

/// Record a change of a tag, keeping the last `keep` events (`[history] keep`).
pub async fn record_tag_event_keeping(
    store: &dyn ContentStore,
    repo: &RepoName,
    tag: &Tag,
    event: TagEvent,
    keep: usize,
) -> Result<(), StoreError> {
    let mut all = tag_history(store, repo, tag).await?;
    all.push(event);
    let excess = all.len().saturating_sub(keep.max(1));
    all.drain(..excess);
    let json = serde_json::to_vec_pretty(&all).expect("events serialise");
    store.meta_put(&history_key(repo, tag), Bytes::from(json)).await
}

/// Every tag of `repo` with recorded history, and its events (oldest first).
pub async fn repo_history(
    store: &dyn ContentStore,
    repo: &RepoName,
) -> Result<std::collections::BTreeMap<String, Vec<TagEvent>>, StoreError> {
    let mut out = std::collections::BTreeMap::new();
    for key in store.meta_list(&format!("history/{repo}")).await? {
        let Some(tag) = key.rsplit('/').next().and_then(|n| n.strip_suffix(".json")) else { continue };
        let Ok(tag) = tag.parse::<Tag>() else { continue };
        out.insert(tag.to_string(), tag_history(store, repo, &tag).await?);
    }
    Ok(out)
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
    crate::store::meta_json(store, &pin_key(repo, digest)).await
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
        record_tag_event(
            &s,
            &r,
            &t,
            TagEvent { time: 1, old: None, new: d1.clone(), source: "sync:x".into(), deleted: false },
        )
        .await
        .unwrap();
        record_tag_event(
            &s,
            &r,
            &t,
            TagEvent { time: 2, old: Some(d1.clone()), new: d2.clone(), source: "sync:x".into(), deleted: false },
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
