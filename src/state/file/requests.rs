//! The answered rotate requests' file, `requests.json` in the state directory, replaced whole
//! and atomically at each change (`StateDir::replace`: temporary file, fsync, rename,
//! directory fsync). It is small (the server keeps at most a bounded number of keys for a
//! day) and written once per rotate request Vercel sends, which a person starts.
//!
//! ```text
//! requests.json       {"version": 1, "requests": [AnsweredRequest, ...]}
//! requests.json.tmp   a write in progress (or cut short by a crash: removed at open)
//! ```
//!
//! Damage is not fatal, as with the inventory: a file that is corrupt, of a newer version or
//! unsafe to open is logged and read as empty (a request Vercel sends again may then rotate
//! once more, which is what it asked for), and the next write replaces it.

use std::io;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::warn;

use super::dir::{StateDir, io_error};
use super::format::json_reason;
use crate::state::{AnsweredRequest, StateError};

const REQUESTS: &str = "requests.json";
const REQUESTS_TMP: &str = "requests.json.tmp";
const REQUESTS_VERSION: u32 = 1;

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    requests: &'a [AnsweredRequest],
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    requests: Vec<AnsweredRequest>,
}

/// The answered requests of an open store, as of the last write.
pub(super) struct Requests {
    dir: Arc<StateDir>,
    current: Arc<RwLock<Vec<AnsweredRequest>>>,
    /// One write at a time, so the file and `current` change in the same order.
    writing: Mutex<()>,
}

impl Requests {
    /// Removes a temporary file left by a crash and loads the file. Blocking: called while
    /// the store opens.
    pub(super) fn open(state: &StateDir) -> Result<Requests, StateError> {
        state.remove(REQUESTS_TMP)?;
        Ok(Requests {
            current: Arc::new(RwLock::new(load(state))),
            dir: Arc::new(state.try_clone()?),
            writing: Mutex::new(()),
        })
    }

    pub(super) fn get(&self) -> Vec<AnsweredRequest> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the file with `requests`; durable when it returns.
    pub(super) async fn put(&self, requests: Vec<AnsweredRequest>) -> Result<(), StateError> {
        let _turn = self.writing.lock().await;
        let (dir, current) = (self.dir.clone(), self.current.clone());
        let path = dir.file_path(REQUESTS);
        let written = tokio::task::spawn_blocking(move || {
            dir.replace(REQUESTS, REQUESTS_TMP, |out| {
                serde_json::to_writer(
                    &mut *out,
                    &FileOut {
                        version: REQUESTS_VERSION,
                        requests: &requests,
                    },
                )
                .map_err(io::Error::from)
            })?;
            *current.write().unwrap_or_else(PoisonError::into_inner) = requests;
            Ok(())
        })
        .await;
        match written {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(io_error(&path)(io::Error::other(e))),
        }
    }
}

/// The file's requests; none when it is missing or damaged (logged).
fn load(dir: &StateDir) -> Vec<AnsweredRequest> {
    let path = dir.file_path(REQUESTS);
    let bytes = match dir.read_whole(REQUESTS) {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Vec::new(),
        Err(e) => {
            warn!(path = %path.display(), "the answered rotate requests cannot be read, so a request Vercel sends again may rotate once more: {e}");
            return Vec::new();
        }
    };
    match serde_json::from_slice::<FileIn>(&bytes) {
        Ok(file) if file.version == REQUESTS_VERSION => file.requests,
        Ok(file) => {
            warn!(path = %path.display(), version = file.version, "the answered rotate requests are of a newer version than this build reads; they are replaced at the next request");
            Vec::new()
        }
        Err(e) => {
            warn!(path = %path.display(), "the answered rotate requests are damaged ({}); they are replaced at the next request", json_reason(&e));
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use chrono::{TimeZone, Utc};

    use crate::state::StateStore;
    use crate::state::file::FileStore;

    use super::*;

    fn answered(key: &str) -> AnsweredRequest {
        AnsweredRequest {
            installation_id: "icfg_a".into(),
            resource_id: "store_1".into(),
            key: key.into(),
            answered_at: Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).single().unwrap(),
            status: 202,
        }
    }

    #[tokio::test]
    async fn answered_requests_survive_a_reopen_in_an_owner_only_file() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        let store = FileStore::open(&dir).await.unwrap();
        assert!(store.answered_requests().is_empty());
        store
            .put_answered_requests(vec![answered("k1"), answered("k2")])
            .await
            .unwrap();
        assert_eq!(store.answered_requests().len(), 2);
        drop(store);

        let mode = std::fs::metadata(dir.join(REQUESTS))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A write cut short by a crash leaves its temporary file: removed at open.
        std::fs::write(dir.join(REQUESTS_TMP), "{").unwrap();
        let store = FileStore::open(&dir).await.unwrap();
        assert_eq!(
            store.answered_requests(),
            vec![answered("k1"), answered("k2")]
        );
        assert!(!dir.join(REQUESTS_TMP).exists());
    }

    #[tokio::test]
    async fn a_damaged_or_newer_file_reads_as_empty_and_is_replaced_at_the_next_write() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("state");
        drop(FileStore::open(&dir).await.unwrap());
        for text in ["not json", r#"{"version": 99, "requests": []}"#] {
            std::fs::write(dir.join(REQUESTS), text).unwrap();
            std::fs::set_permissions(dir.join(REQUESTS), std::fs::Permissions::from_mode(0o600))
                .unwrap();
            let store = FileStore::open(&dir).await.unwrap();
            assert!(store.answered_requests().is_empty(), "{text}");
            store
                .put_answered_requests(vec![answered("k")])
                .await
                .unwrap();
            drop(store);
            let store = FileStore::open(&dir).await.unwrap();
            assert_eq!(store.answered_requests(), vec![answered("k")]);
        }
    }
}
