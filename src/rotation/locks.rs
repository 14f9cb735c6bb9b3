//! One lock per (policy, resource), so at most one task tends a key at a time, whoever asks
//! (the scheduler, a handed-over `run --once`, a push superseding a renamed policy's record).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::state::Key;

/// One async lock per key: at most one rotation or retirement per (policy, resource) at a
/// time, whoever asks (the scheduler, or a `run --once` handed to the daemon). An entry lives
/// only while someone holds or waits for its lock, so a daemon that has rotated 10,000
/// resources does not keep 10,000 idle locks.
#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// The key's turn; dropping it lets the next waiter in (or forgets the lock if none waits).
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub async fn lock(&self, key: &Key) -> KeyGuard<'_> {
        let lock = {
            let mut map = self.map();
            map.entry(key.clone()).or_default().clone()
        };
        // Made before the wait, so a caller that gives up waiting (its future dropped)
        // still runs the clean-up and does not leave the entry behind.
        let mut turn = KeyGuard {
            locks: self,
            key: key.clone(),
            guard: None,
        };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        // Under the map's lock nobody can take a new handle on this key's lock, so a count of
        // one (the map's own) means nobody holds or waits for it.
        let mut map = self.locks.map();
        drop(self.guard.take());
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn key_locks_exclude_per_key_and_are_forgotten_when_free() {
        let locks = Arc::new(KeyLocks::default());
        let key = |r: &str| Key {
            policy: "p".into(),
            resource: r.into(),
        };
        let first = locks.lock(&key("a")).await;
        // Another key is not held up.
        drop(locks.lock(&key("b")).await);
        assert_eq!(locks.len(), 1, "b is forgotten once free; a is held");
        // A second taker of `a` waits until the first lets go, and the entry outlives the
        // first guard while it waits.
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _second = locks.lock(&key("a")).await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(locks.len(), 1, "the waiter keeps a's lock alive");
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);

        // A waiter that gives up (its task cancelled) after the holder let go does not leave
        // the entry behind.
        let first = locks.lock(&key("a")).await;
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _second = locks.lock(&key("a")).await;
                std::future::pending::<()>().await;
            }
        });
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(locks.len(), 1, "the waiter still counts");
        waiter.abort();
        assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(locks.len(), 0);
    }
}
