//! `Idempotency-Key`: Vercel may send a rotate request again (a timeout on its side, a
//! retry); the same key for the same resource gets the answer the first one got and starts
//! no second rotation, after a restart too.
//!
//! Only accepted requests (202) are remembered: a 404 or a refusal started nothing, so a
//! request sent again is simply judged again (a resource discovery has found since then is
//! then served). Keys are kept for [`KEEP`], at most [`MAX_KEYS`] of them (the oldest go
//! first), in the state ([`StateStore::answered_requests`]), written before the answer goes
//! out. Requests with a key are handled one at a time, from the look-up to the write, so two
//! copies arriving together cannot both start a rotation.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::sync::{Mutex, MutexGuard};
use tracing::error;

use crate::state::{AnsweredRequest, StateStore};

/// How long an answered request's key is remembered: Vercel's retries come within minutes.
pub const KEEP: TimeDelta = TimeDelta::hours(24);
/// The most keys remembered; beyond it the oldest are forgotten first.
pub const MAX_KEYS: usize = 10_000;
/// The longest `Idempotency-Key` accepted.
pub const MAX_KEY_LEN: usize = 255;

type Id = (String, String, String);

/// The answered requests, shared by every handler.
pub struct Ledger {
    store: Arc<dyn StateStore>,
    answered: Mutex<HashMap<Id, AnsweredRequest>>,
}

/// The ledger, held from a request's look-up to its write.
pub struct Held<'a> {
    store: &'a Arc<dyn StateStore>,
    answered: MutexGuard<'a, HashMap<Id, AnsweredRequest>>,
}

impl Ledger {
    /// The ledger of the requests `store` remembers.
    pub fn load(store: Arc<dyn StateStore>) -> Ledger {
        let answered = store
            .answered_requests()
            .into_iter()
            .map(|r| (id(&r.installation_id, &r.resource_id, &r.key), r))
            .collect();
        Ledger {
            store,
            answered: Mutex::new(answered),
        }
    }

    pub async fn hold(&self) -> Held<'_> {
        Held {
            store: &self.store,
            answered: self.answered.lock().await,
        }
    }
}

impl Held<'_> {
    /// The earlier answer to `key` for this resource, if it is still remembered at `now`.
    pub fn find(
        &self,
        installation_id: &str,
        resource_id: &str,
        key: &str,
        now: DateTime<Utc>,
    ) -> Option<&AnsweredRequest> {
        self.answered
            .get(&id(installation_id, resource_id, key))
            .filter(|r| now - r.answered_at < KEEP)
    }

    /// Remembers `request` (forgetting expired keys, and the oldest beyond [`MAX_KEYS`]) and
    /// writes the ledger to the state. A failed write is logged: the key is still remembered
    /// until the daemon stops.
    pub async fn remember(&mut self, request: AnsweredRequest) {
        let now = request.answered_at;
        self.answered.retain(|_, r| now - r.answered_at < KEEP);
        if self.answered.len() >= MAX_KEYS {
            let mut by_age: Vec<(DateTime<Utc>, Id)> = self
                .answered
                .iter()
                .map(|(k, r)| (r.answered_at, k.clone()))
                .collect();
            by_age.sort();
            let excess = self.answered.len() + 1 - MAX_KEYS;
            for (_, k) in by_age.into_iter().take(excess) {
                self.answered.remove(&k);
            }
        }
        self.answered.insert(
            id(&request.installation_id, &request.resource_id, &request.key),
            request,
        );
        let mut list: Vec<AnsweredRequest> = self.answered.values().cloned().collect();
        list.sort_by(|a, b| a.answered_at.cmp(&b.answered_at).then(a.key.cmp(&b.key)));
        if let Err(e) = self.store.put_answered_requests(list).await {
            error!(
                "could not record an answered rotate request's idempotency key; if Vercel sends it again after a restart, it rotates again: {e}"
            );
        }
    }
}

/// Whether `key` may be an `Idempotency-Key`: 1 to [`MAX_KEY_LEN`] visible ASCII characters
/// (it is kept in the state and named in logs).
pub fn valid_key(key: &str) -> bool {
    (1..=MAX_KEY_LEN).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

fn id(installation_id: &str, resource_id: &str, key: &str) -> Id {
    (
        installation_id.to_owned(),
        resource_id.to_owned(),
        key.to_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::memory::MemoryStore;

    fn at(minutes: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp(1_800_000_000, 0).unwrap() + TimeDelta::minutes(minutes)
    }

    fn answered(resource: &str, key: &str, minutes: i64) -> AnsweredRequest {
        AnsweredRequest {
            installation_id: "icfg_a".into(),
            resource_id: resource.into(),
            key: key.into(),
            answered_at: at(minutes),
            status: 202,
        }
    }

    #[tokio::test]
    async fn a_key_is_found_for_its_resource_only_until_it_expires_and_survives_a_reload() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let ledger = Ledger::load(store.clone());
        ledger.hold().await.remember(answered("r1", "k1", 0)).await;
        let held = ledger.hold().await;
        assert_eq!(
            held.find("icfg_a", "r1", "k1", at(5)).map(|r| r.status),
            Some(202)
        );
        assert!(
            held.find("icfg_a", "r2", "k1", at(5)).is_none(),
            "another resource"
        );
        assert!(
            held.find("icfg_b", "r1", "k1", at(5)).is_none(),
            "another installation"
        );
        assert!(
            held.find("icfg_a", "r1", "k2", at(5)).is_none(),
            "another key"
        );
        assert!(
            held.find("icfg_a", "r1", "k1", at(24 * 60)).is_none(),
            "expired"
        );
        drop(held);

        // A restart: the store still holds it.
        let reloaded = Ledger::load(store.clone());
        assert!(
            reloaded
                .hold()
                .await
                .find("icfg_a", "r1", "k1", at(10))
                .is_some()
        );
    }

    #[tokio::test]
    async fn expired_keys_are_dropped_and_the_oldest_go_beyond_the_cap() {
        let store: Arc<dyn StateStore> = Arc::new(MemoryStore::new());
        let ledger = Ledger::load(store.clone());
        let mut held = ledger.hold().await;
        held.remember(answered("r", "old", 0)).await;
        held.remember(answered("r", "new", 24 * 60 + 1)).await;
        let keys: Vec<String> = store
            .answered_requests()
            .into_iter()
            .map(|r| r.key)
            .collect();
        assert_eq!(keys, ["new"]);

        // At the cap, remembering one more forgets the oldest.
        let mut many: HashMap<Id, AnsweredRequest> = HashMap::new();
        for i in 0..MAX_KEYS {
            let r = answered("r", &format!("k{i}"), 30 * 60 + i as i64 % 60);
            many.insert(id(&r.installation_id, &r.resource_id, &r.key), r);
        }
        *held.answered = many;
        held.answered.insert(
            id("icfg_a", "r", "oldest"),
            answered("r", "oldest", 29 * 60),
        );
        held.remember(answered("r", "latest", 31 * 60)).await;
        assert_eq!(store.answered_requests().len(), MAX_KEYS);
        assert!(held.find("icfg_a", "r", "oldest", at(31 * 60)).is_none());
        assert!(held.find("icfg_a", "r", "latest", at(31 * 60)).is_some());
    }

    #[test]
    fn keys_are_short_visible_ascii() {
        assert!(valid_key("5f0c0f1e-2b7a-4c1e-9d7e-0a1b2c3d4e5f"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key("new\nline"));
        assert!(!valid_key("é"));
        assert!(!valid_key(&"k".repeat(MAX_KEY_LEN + 1)));
        assert!(valid_key(&"k".repeat(MAX_KEY_LEN)));
    }
}
