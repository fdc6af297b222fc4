//! Referrers of mirrored subjects (signatures, SBOMs, attestations). The answer comes from the upstream (its
//! referrers API or the tag-schema fallback), is kept for `tag_ttl` and stored, and is served stale with a
//! warning when the upstream is down. It is never an empty list that only means "nothing cached": a
//! signature checker must not read "no signatures exist" into a cache miss.

use bytes::Bytes;
use oci::{Descriptor, Digest};
use serde::{Deserialize, Serialize};

use super::{is_absent, Key, Mirror, MirrorError, Mirrored};
use crate::history::now_secs;
use crate::policy::routing::MirrorRoute;
use crate::store::StoreError;

/// The referrers answered for a mirrored subject.
#[derive(Debug)]
pub struct MirrorReferrers {
    /// The referrer descriptors.
    pub descriptors: Vec<Descriptor>,
    /// Set when the list is a kept copy served because the upstream could not be asked.
    pub warning: Option<String>,
}

/// The upstream's last answer, kept in the store so it survives restarts and upstream outages.
#[derive(Serialize, Deserialize)]
struct Kept {
    /// Unix seconds of the answer.
    time: u64,
    manifests: Vec<Descriptor>,
}

fn meta_key(route: &MirrorRoute, subject: &Digest) -> String {
    format!("mirror/referrers/{}/{}-{}", route.local, subject.algorithm(), subject.hex())
}

impl Mirror {
    /// Referrers of `subject` in a mirrored repository.
    pub async fn referrers(&self, route: &MirrorRoute, subject: &Digest) -> Result<MirrorReferrers, MirrorError> {
        let up = self.upstream(route.upstream);
        let key: Key = (route.local.clone(), format!("r:{subject}"));
        let fresh = |kept: Option<Kept>| kept.map(|k| MirrorReferrers { descriptors: k.manifests, warning: None });
        if self.referrers_fresh(up, &key) {
            if let Some(answer) = fresh(self.kept_referrers(route, subject).await?) {
                return Ok(answer);
            }
        }
        let flight = self.flight(&key);
        let _guard = flight.lock().await;
        let kept = self.kept_referrers(route, subject).await?;
        if self.referrers_fresh(up, &key) {
            if let Some(answer) = fresh(kept) {
                return Ok(answer);
            }
            return self.ask_referrers(up, route, subject, key, None).await;
        }
        self.ask_referrers(up, route, subject, key, kept).await
    }

    async fn ask_referrers(
        &self,
        up: &Mirrored,
        route: &MirrorRoute,
        subject: &Digest,
        key: Key,
        kept: Option<Kept>,
    ) -> Result<MirrorReferrers, MirrorError> {
        let list = match up.client.referrers(&route.remote, subject).await {
            Ok(list) => list,
            // The repository (or subject) is unknown upstream: it has no referrers there.
            Err(e) if is_absent(&e) => Vec::new(),
            Err(e) => {
                let why = e.to_string();
                let err = self.upstream_error(up, e);
                // The kept answer, or else the referrer manifests cached in this repository (sync copies them).
                let descriptors = match kept {
                    Some(k) => k.manifests,
                    None => {
                        let local = self.store.referrers(&route.local, subject).await?;
                        if local.is_empty() {
                            return Err(err);
                        }
                        local
                    }
                };
                super::bump(&up.stats.stale_served);
                tracing::warn!(upstream = %up.client.name, repo = %route.local, %subject, reason = %why, "serving kept referrers stale");
                let warning =
                    Some(format!("kept referrers list served: upstream {} could not be asked ({why})", up.client.name));
                return Ok(MirrorReferrers { descriptors, warning });
            }
        };
        // Kept only when there is something to keep (or a kept list changed): an empty answer for a name or
        // subject nobody asked about before must not leave a file behind (any GET could otherwise fill the
        // disk); it is remembered in memory for the TTL like a tag check.
        let changed = match &kept {
            Some(k) => k.manifests != list,
            None => !list.is_empty(),
        };
        if changed {
            let doc = Kept { time: now_secs(), manifests: list };
            let json = serde_json::to_vec(&doc).expect("descriptors serialise");
            self.store.meta_put(&meta_key(route, subject), Bytes::from(json)).await?;
            self.mark_checked(key, subject.clone());
            return Ok(MirrorReferrers { descriptors: doc.manifests, warning: None });
        }
        self.mark_checked(key, subject.clone());
        Ok(MirrorReferrers { descriptors: list, warning: None })
    }

    fn referrers_fresh(&self, up: &Mirrored, key: &Key) -> bool {
        let checked = self.checked.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        checked.get(key).is_some_and(|(t, _)| t.elapsed() < up.tag_ttl)
    }

    async fn kept_referrers(&self, route: &MirrorRoute, subject: &Digest) -> Result<Option<Kept>, MirrorError> {
        let key = meta_key(route, subject);
        match self.store.meta_get(&key).await? {
            Some(b) => match serde_json::from_slice(&b) {
                Ok(k) => Ok(Some(k)),
                Err(e) => Err(StoreError::Corrupt(key, e.to_string()).into()),
            },
            None => Ok(None),
        }
    }
}
