//! Single flight per key: concurrent tasks that want the same content (a blob, a manifest) take turns, so
//! the second one finds the first one's result instead of fetching again.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// A lock per key, created on demand and dropped when nobody holds or waits for it.
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks { locks: Mutex::new(HashMap::new()) }
    }
}

/// Held while working on a key.
pub struct KeyGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Wait for our turn on `key`.
    pub async fn lock(&self, key: &K) -> KeyGuard {
        let m = {
            let mut map = self.locks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.retain(|_, m| Arc::strong_count(m) > 1);
            map.entry(key.clone()).or_default().clone()
        };
        KeyGuard { _guard: m.lock_owned().await }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn one_at_a_time_per_key() {
        let locks = Arc::new(KeyedLocks::<u32>::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (locks, inside, max) = (locks.clone(), inside.clone(), max.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock(&1).await;
                let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(n, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max.load(Ordering::SeqCst), 1);
        let _a = locks.lock(&1).await;
        let _b = locks.lock(&2).await; // other keys are independent
    }
}
