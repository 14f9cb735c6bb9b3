//! A store that keeps records (and the inventory's listings) in memory only: a dry run's
//! (which must touch no state on disk) and the tests' (the protocol and the daemon's loop run
//! without files or threads).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{
    AnsweredRequest, HISTORY_LIMIT, HistoryEntry, HistoryFilter, Key, Listing, Record, StateError,
    StateStore,
};

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<Key, Record>>,
    /// By installation id.
    listings: Mutex<BTreeMap<String, Arc<Listing>>>,
    /// Listing writes that changed something, for tests of "an equal listing writes nothing".
    listing_writes: AtomicU64,
    answered: Mutex<Vec<AnsweredRequest>>,
    /// Set by tests to make every later write fail as a stopped writer does.
    broken: Mutex<Option<String>>,
    /// The newest [`HISTORY_LIMIT`] entries.
    history: Mutex<VecDeque<HistoryEntry>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Every later write fails and [`StateStore::fatal`] says why: a dead writer, for tests.
    pub fn break_writes(&self, reason: &str) {
        *self.broken.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
    }

    /// How many `put_listing` and `remove_listing` calls changed something.
    #[doc(hidden)]
    pub fn listing_writes(&self) -> u64 {
        self.listing_writes.load(Ordering::Relaxed)
    }

    fn listing_map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<Listing>>> {
        self.listings.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn map(&self) -> MutexGuard<'_, BTreeMap<Key, Record>> {
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn writable(&self) -> Result<(), StateError> {
        match self.fatal() {
            Some(_) => Err(StateError::WriterGone),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl StateStore for MemoryStore {
    fn records(&self) -> BTreeMap<Key, Record> {
        self.map().clone()
    }

    fn visit(&self, visit: &mut dyn FnMut(&Record)) {
        self.map().values().for_each(visit);
    }

    fn get(&self, key: &Key) -> Option<Record> {
        self.map().get(key).cloned()
    }

    fn contains(&self, key: &Key) -> bool {
        self.map().contains_key(key)
    }

    async fn put(&self, record: Record) -> Result<(), StateError> {
        self.writable()?;
        self.map().insert(record.key.clone(), record);
        Ok(())
    }

    async fn remove(&self, key: &Key) -> Result<(), StateError> {
        self.writable()?;
        self.map().remove(key);
        Ok(())
    }

    fn listings(&self) -> Vec<Arc<Listing>> {
        self.listing_map().values().cloned().collect()
    }

    async fn put_listing(&self, listing: Listing) -> Result<(), StateError> {
        self.writable()?;
        StateError::check_installation_id(&listing.installation_id)?;
        let mut listings = self.listing_map();
        if listings
            .get(&listing.installation_id)
            .is_some_and(|stored| **stored == listing)
        {
            return Ok(());
        }
        listings.insert(listing.installation_id.clone(), Arc::new(listing));
        self.listing_writes.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    async fn remove_listing(&self, installation_id: &str) -> Result<(), StateError> {
        self.writable()?;
        StateError::check_installation_id(installation_id)?;
        if self.listing_map().remove(installation_id).is_some() {
            self.listing_writes.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn answered_requests(&self) -> Vec<AnsweredRequest> {
        self.answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn put_answered_requests(
        &self,
        requests: Vec<AnsweredRequest>,
    ) -> Result<(), StateError> {
        self.writable()?;
        *self.answered.lock().unwrap_or_else(PoisonError::into_inner) = requests;
        Ok(())
    }

    async fn flush(&self) -> Result<(), StateError> {
        self.writable()
    }

    async fn append_history(&self, entries: Vec<HistoryEntry>) -> Result<(), StateError> {
        self.writable()?;
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        for entry in entries {
            if history.len() == HISTORY_LIMIT {
                history.pop_front();
            }
            history.push_back(entry);
        }
        Ok(())
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StateError> {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(history
            .iter()
            .filter(|e| filter.matches(e))
            .cloned()
            .collect())
    }

    fn fatal(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::resource::ResourceInfo;

    fn listing(id: &str, resources: &[&str]) -> Listing {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single().unwrap();
        let listed = resources
            .iter()
            .map(|r| std::sync::Arc::new(ResourceInfo::configured(id, r)))
            .collect();
        Listing::merge(None, id, at, listed)
    }

    #[tokio::test]
    async fn listings_are_kept_by_installation_and_equal_ones_write_nothing() {
        let store = MemoryStore::new();
        store.put_listing(listing("icfg_b", &["r1"])).await.unwrap();
        store.put_listing(listing("icfg_a", &["r2"])).await.unwrap();
        store.put_listing(listing("icfg_a", &["r2"])).await.unwrap();
        assert_eq!(store.listing_writes(), 2);
        let ids: Vec<String> = store
            .listings()
            .iter()
            .map(|l| l.installation_id.clone())
            .collect();
        assert_eq!(ids, ["icfg_a", "icfg_b"]);

        store.put_listing(listing("icfg_a", &["r3"])).await.unwrap();
        assert_eq!(&*store.listings()[0].resources[0].id, "r3");
        store.remove_listing("icfg_a").await.unwrap();
        store.remove_listing("icfg_a").await.unwrap();
        assert_eq!(store.listing_writes(), 4);
        assert_eq!(store.listings().len(), 1);
    }

    #[tokio::test]
    async fn listings_refuse_bad_ids_and_fail_like_records_once_writes_break() {
        let store = MemoryStore::new();
        for bad in ["../icfg_a", "icfg/a", ""] {
            match store.put_listing(listing(bad, &[])).await {
                Err(StateError::BadInstallationId { .. }) => {}
                other => panic!("{bad:?}: {other:?}"),
            }
        }
        store.put_listing(listing("icfg_a", &["r1"])).await.unwrap();
        store.break_writes("test");
        assert!(matches!(
            store.put_listing(listing("icfg_b", &[])).await,
            Err(StateError::WriterGone)
        ));
        assert!(matches!(
            store.remove_listing("icfg_a").await,
            Err(StateError::WriterGone)
        ));
        assert_eq!(store.listings().len(), 1);
    }
}
