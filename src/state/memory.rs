//! A store that keeps records in memory only: a dry run's (which must touch no state on disk)
//! and the tests' (the protocol and the daemon's loop run without files or threads).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::{Key, Record, StateError, StateStore};

#[derive(Default)]
pub struct MemoryStore {
    records: Mutex<BTreeMap<Key, Record>>,
    /// Set by tests to make every later write fail as a stopped writer does.
    broken: Mutex<Option<String>>,
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore::default()
    }

    /// Every later write fails and [`StateStore::fatal`] says why: a dead writer, for tests.
    pub fn break_writes(&self, reason: &str) {
        *self.broken.lock().unwrap_or_else(PoisonError::into_inner) = Some(reason.to_owned());
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

    async fn flush(&self) -> Result<(), StateError> {
        self.writable()
    }

    fn fatal(&self) -> Option<String> {
        self.broken
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
