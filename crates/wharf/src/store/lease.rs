//! A lease in the store: at most one holder at a time among every process on the store, whatever machine it
//! runs on (replicas over one bucket), for jobs that must not run twice at once (the garbage collector).
//!
//! Object stores without conditional writes (Garage ignores `If-None-Match`) offer no compare-and-swap, so
//! the lease follows Fischer's timed mutual exclusion over plain reads and writes, which needs only
//! read-after-write consistency and a bound on how long one read-then-write takes:
//!
//! 1. read the lease; a live one held by someone else means busy;
//! 2. write our claim; if the read and the write together took longer than [`MAX_CLAIM`], give up (our
//!    write may have landed after a rival checked; the claim then expires unused);
//! 3. wait [`SETTLE`] (longer than [`MAX_CLAIM`]), read again: still ours means held.
//!
//! A rival that read before our write landed has finished its own write within [`MAX_CLAIM`], so by the time
//! we read again we see its claim (or it sees ours): two claimants never both find their own. A holder
//! rewrites the lease every third of its time to live; one that cannot (the store is unreachable, or it finds
//! another holder) reports the lease lost and stops its work before it expires. Expiry is by wall-clock
//! time, so replicas' clocks must agree to well within the time to live (NTP does).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ContentStore, StoreError};

/// The longest a claim (read, then write) may take to count.
pub const MAX_CLAIM: Duration = Duration::from_secs(1);
/// How long a claimant waits before reading its claim back.
pub const SETTLE: Duration = Duration::from_secs(3);

/// The lease document.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Claim {
    /// Random id of this claim.
    holder: String,
    /// Who holds it, for people (`host pid`).
    owner: String,
    /// Unix seconds after which the lease is free.
    expires: u64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A held lease: renewed in the background, released when dropped.
pub struct Lease {
    store: Arc<dyn ContentStore>,
    key: String,
    holder: String,
    lost: Arc<AtomicBool>,
    renew: tokio::task::JoinHandle<()>,
}

/// Why the lease could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// Someone else holds it (their owner string, and until when).
    #[error("held by {owner} for {secs} s more")]
    Held {
        /// Who holds it.
        owner: String,
        /// Seconds until it expires unless renewed.
        secs: u64,
    },
    /// Two claimants raced and this one lost, or its claim was too slow to be safe.
    #[error("another process claimed it at the same time")]
    Contended,
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn read(store: &dyn ContentStore, key: &str) -> Result<Option<Claim>, StoreError> {
    Ok(super::meta_json::<Claim>(store, key).await.ok().flatten())
}

async fn write(store: &dyn ContentStore, key: &str, claim: &Claim) -> Result<(), StoreError> {
    store.meta_put(key, Bytes::from(serde_json::to_vec(claim).expect("claims serialise"))).await
}

impl Lease {
    /// Take the lease `leases/<name>` for `ttl` (renewed while held), or say why not.
    pub async fn acquire(store: Arc<dyn ContentStore>, name: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        let key = format!("leases/{name}");
        let started = Instant::now();
        if let Some(c) = read(store.as_ref(), &key).await? {
            let now = unix_now();
            if c.expires > now {
                return Err(LeaseError::Held { owner: c.owner, secs: c.expires - now });
            }
        }
        let mut id = [0u8; 16];
        getrandom::getrandom(&mut id).expect("the OS random source is available");
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let claim = Claim {
            holder: hex::encode(id),
            owner: format!("{} pid {}", host.trim(), std::process::id()),
            expires: unix_now() + ttl.as_secs(),
        };
        write(store.as_ref(), &key, &claim).await?;
        if started.elapsed() > MAX_CLAIM {
            return Err(LeaseError::Contended);
        }
        tokio::time::sleep(SETTLE).await;
        if read(store.as_ref(), &key).await?.as_ref().map(|c| &c.holder) != Some(&claim.holder) {
            return Err(LeaseError::Contended);
        }
        let lost = Arc::new(AtomicBool::new(false));
        let renew = tokio::spawn(renew(store.clone(), key.clone(), claim.clone(), ttl, lost.clone()));
        Ok(Lease { store, key, holder: claim.holder, lost, renew })
    }

    /// Give the lease up now (the work is done): the next claimant need not wait for it to expire. A
    /// process about to exit must call this; dropping only schedules the release on the runtime.
    pub async fn release(mut self) {
        self.renew.abort();
        let holder = std::mem::take(&mut self.holder);
        if read(self.store.as_ref(), &self.key).await.ok().flatten().is_some_and(|c| c.holder == holder) {
            let _ = self.store.meta_delete(&self.key).await;
        }
    }

    /// Whether the lease can no longer be trusted (stop the work it guards).
    pub fn lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }
}

/// Rewrite the claim every third of `ttl`; mark it lost when another holder appears or the renewals fail
/// for longer than half the time to live.
async fn renew(store: Arc<dyn ContentStore>, key: String, mut claim: Claim, ttl: Duration, lost: Arc<AtomicBool>) {
    let every = (ttl / 3).max(Duration::from_secs(1));
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        let current = read(store.as_ref(), &key).await;
        match current {
            Ok(Some(c)) if c.holder != claim.holder => {
                tracing::error!(%key, other = %c.owner, "lease taken over by another process; stopping");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(_) => {
                claim.expires = unix_now() + ttl.as_secs();
                if write(store.as_ref(), &key, &claim).await.is_ok() {
                    last_ok = Instant::now();
                }
            }
            Err(_) => {}
        }
        if last_ok.elapsed() > ttl / 2 {
            tracing::error!(%key, "lease could not be renewed; stopping");
            lost.store(true, Ordering::SeqCst);
            return;
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renew.abort();
        if self.holder.is_empty() {
            return; // released already
        }
        let (store, key, holder) = (self.store.clone(), self.key.clone(), self.holder.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                if read(store.as_ref(), &key).await.ok().flatten().is_some_and(|c| c.holder == holder) {
                    let _ = store.meta_delete(&key).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[tokio::test(start_paused = true)]
    async fn one_holder_at_a_time_and_free_again_after_release() {
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let ttl = Duration::from_secs(60);
        let a = Lease::acquire(store.clone(), "gc", ttl).await.unwrap();
        assert!(matches!(Lease::acquire(store.clone(), "gc", ttl).await, Err(LeaseError::Held { .. })));
        // Other names are independent.
        let _other = Lease::acquire(store.clone(), "scrub", ttl).await.unwrap();
        // Renewals keep it (time here is the runtime's; expiry is by the wall clock).
        tokio::time::sleep(Duration::from_secs(150)).await;
        assert!(!a.lost());
        assert!(matches!(Lease::acquire(store.clone(), "gc", ttl).await, Err(LeaseError::Held { .. })));
        a.release().await;
        let b = Lease::acquire(store.clone(), "gc", ttl).await.unwrap();
        // Dropping releases too, on the runtime.
        drop(b);
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(10)).await;
        Lease::acquire(store.clone(), "gc", ttl).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn two_claimants_at_once_never_both_hold_it() {
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let ttl = Duration::from_secs(60);
        let (a, b) = tokio::join!(Lease::acquire(store.clone(), "gc", ttl), Lease::acquire(store.clone(), "gc", ttl));
        assert!(a.is_ok() != b.is_ok(), "exactly one of two simultaneous claimants holds the lease");
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_finds_another_claim_reports_the_lease_lost() {
        let store: Arc<dyn ContentStore> = Arc::new(MemoryStore::new());
        let ttl = Duration::from_secs(30);
        let a = Lease::acquire(store.clone(), "gc", ttl).await.unwrap();
        let rogue = Claim { holder: "rogue".into(), owner: "elsewhere".into(), expires: unix_now() + 600 };
        write(store.as_ref(), "leases/gc", &rogue).await.unwrap();
        tokio::time::sleep(ttl).await;
        assert!(a.lost());
    }
}
