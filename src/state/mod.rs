//! Durable state: where each (policy, resource) is in its rotation, so a restart after a
//! crash, a reboot or a `kill -9` finishes or cleanly redoes what was in flight.
//!
//! The state holds handles (a role name, a key id), timestamps, fingerprints and scrubbed
//! error text: never a secret value. The records' data is [`record`]; it sits behind the small
//! [`StateStore`] trait, and [`open`] is the one place that picks the store from the config:
//! today the local file store of [`file`]; a shared PostgreSQL store slots in beside it later
//! (DESIGN, "Growing past one machine"). [`memory`] keeps records in memory only (dry runs,
//! tests).
//!
//! Beside the records, the store keeps the fleet inventory: per installation, what Vercel
//! last listed ([`inventory::Listing`]), so the last known resources survive a restart and a
//! failed listing changes nothing; the rotate requests Vercel sent lately, by idempotency key
//! ([`requests`]), so one sent again starts no second rotation; and the rotation history
//! ([`history`]): the last [`HISTORY_LIMIT`] rotation events, value-free, for
//! `vercel-secret-rotator history`.
//!
//! This module sits below the rotation protocol: it imports nothing of it.

pub mod file;
pub mod history;
pub mod inventory;
pub mod memory;
pub mod record;
pub mod requests;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;

pub use history::{HISTORY_LIMIT, HistoryEntry, HistoryFilter};
pub use inventory::{Listing, ListingFailure};
pub use record::{Failure, Key, Record, Retirement, Step, Stopped};
pub use requests::AnsweredRequest;

/// The version of the on-disk format this build reads and writes. A newer one stops the
/// start with an error; it is never reset or downgraded silently.
pub const STATE_VERSION: u32 = 1;

/// Why the state could not be read or written. Every variant names the file or directory.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state directory {dir} is locked by another vercel-secret-rotator (PID {pid}); stop it first, or use `run --once`, which hands its request to it", dir = .dir.display(), pid = .pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Locked { dir: PathBuf, pid: Option<u32> },
    /// A usage error ([`StateError::is_usage`]): run by the wrong user, typically root over
    /// the service's directory while the service is stopped. Nothing was changed.
    #[error("state directory {dir} belongs to uid {owner}, but this runs as uid {euid}: files written now would shut its owner (the service) out of its own state, so nothing was changed. With the service running, `run --once` hands its request to it: start the service (`systemctl start vercel-secret-rotator`) and run this again. Otherwise run it as the owner: `sudo -u '#{owner}' vercel-secret-rotator ...`, or for the systemd unit (DynamicUser=yes) `systemd-run --pty --wait --collect -p DynamicUser=yes -p User=vercel-secret-rotator -p StateDirectory=vercel-secret-rotator -p LoadCredential=... vercel-secret-rotator --config ... run --once` (see the README)", dir = .dir.display())]
    NotOwner { dir: PathBuf, owner: u32, euid: u32 },
    /// Something in the state directory's place or in it that must not be opened: a symbolic
    /// link, not a regular file or directory, another user's file, a hard link.
    #[error("refusing {path}: {reason}", path = .path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("state file {path} is corrupt{at}: {reason}; it was left as it is: move it aside to start afresh (every resource is then new)", path = .path.display(), at = .line.map_or_else(String::new, |l| format!(" at line {l}")))]
    Corrupt {
        path: PathBuf,
        line: Option<usize>,
        reason: String,
    },
    #[error("state file {path} has version {found}, newer than this build reads ({supported}); run the newer vercel-secret-rotator, or move the file aside", path = .path.display())]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("{path} is accessible by group or others (mode {mode:04o}); run `chmod {want:o} {path}`", path = .path.display())]
    Permissions { path: PathBuf, mode: u32, want: u32 },
    /// An installation id that cannot name its inventory file
    /// ([`crate::resource::is_file_safe_installation_id`]); it is never made into a path.
    #[error("installation id {id} cannot be kept in the inventory: an id that names a file is 1 to {max} of the characters A-Z a-z 0-9 _ -", max = crate::resource::MAX_INSTALLATION_ID_LEN)]
    BadInstallationId {
        /// Quoted and escaped, cut short when long.
        id: String,
    },
    #[error("state I/O on {path} failed: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Fatal ([`StateError::is_fatal`]): the store accepts no more changes; its
    /// [`StateStore::fatal`] says why.
    #[error("the state writer has stopped (an earlier write failed); restart the daemon")]
    WriterGone,
}

impl StateError {
    /// The command was run the wrong way (as another user than the state directory's owner,
    /// or beside a daemon that holds the directory): a usage error (exit 2), which trying
    /// again unchanged cannot fix. Everything else may clear by itself (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            StateError::NotOwner { .. } | StateError::Locked { .. }
        )
    }

    /// The store has stopped for good: nothing this process does can write the state again,
    /// only a restart (which re-reads the files) can. Not a transient failure to retry.
    pub fn is_fatal(&self) -> bool {
        matches!(self, StateError::WriterGone)
    }

    /// Refuses `id` as an inventory file's name unless it can be one.
    pub(crate) fn check_installation_id(id: &str) -> Result<(), StateError> {
        if crate::resource::is_file_safe_installation_id(id) {
            return Ok(());
        }
        const SHOWN: usize = 64;
        let mut shown = format!("{:?}", id.chars().take(SHOWN).collect::<String>());
        if id.chars().count() > SHOWN {
            shown.push_str("...");
        }
        Err(StateError::BadInstallationId { id: shown })
    }
}

impl crate::error::Classify for StateError {
    fn persistence(&self) -> crate::error::Persistence {
        match self {
            // A full disk or an I/O hiccup may clear; the step is redone after it.
            StateError::Io { .. } => crate::error::Persistence::Transient,
            // WriterGone too is permanent for this process: see `is_fatal`.
            _ => crate::error::Persistence::Permanent,
        }
    }
}

/// Where rotation state lives. Writes are durable when `put` returns; concurrent writers are
/// committed together (one fsync for many), so 10,000 rotations in one run do not mean
/// 60,000 fsyncs of a large file.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Every record as of the last commit, by key (a copy: for tests and small states).
    fn records(&self) -> BTreeMap<Key, Record>;
    /// Calls `visit` with every record as of the last commit, in key order, without copying
    /// them: the daemon's start-up walks 10,000 records this way, where a copy of the map
    /// would double its memory for a moment and leave the heap that big for good. Writes
    /// wait while it runs, so `visit` must be quick and must not call the store.
    fn visit(&self, visit: &mut dyn FnMut(&Record));
    /// One record as of the last commit.
    fn get(&self, key: &Key) -> Option<Record>;
    /// Whether there is a record for `key`, without copying it (100,000 checks at start).
    fn contains(&self, key: &Key) -> bool {
        self.get(key).is_some()
    }
    /// Writes (inserts or replaces) a record; durable when it returns.
    async fn put(&self, record: Record) -> Result<(), StateError>;
    /// Writes many records as one commit (first start with thousands of new resources).
    /// The default writes them one by one; stores that can batch should.
    async fn put_all(&self, records: Vec<Record>) -> Result<(), StateError> {
        for record in records {
            self.put(record).await?;
        }
        Ok(())
    }
    /// Writes a record without waiting for it to be durable: for steps whose loss in a
    /// crash changes nothing about recovery (see `rotation::machine`, `Write::Lazy`). It is visible to `get` at once and
    /// reaches the disk, in order, with the next commit. The default is a durable `put`.
    async fn put_lazy(&self, record: Record) -> Result<(), StateError> {
        self.put(record).await
    }
    /// Forgets a record (a resource removed from the config with nothing left to retire).
    async fn remove(&self, key: &Key) -> Result<(), StateError>;
    /// Every installation's listing as of the last write, sorted by installation id. Cheap
    /// to call (the listings are shared, not copied): the daemon reads it at each pass.
    fn listings(&self) -> Vec<Arc<Listing>>;
    /// Stores `listing` as its installation's, replacing the one before; durable when it
    /// returns. A listing equal to the stored one (`listed_at` included) writes nothing.
    /// An installation id that cannot name a file is refused
    /// ([`StateError::BadInstallationId`]).
    async fn put_listing(&self, listing: Listing) -> Result<(), StateError>;
    /// Forgets an installation's listing (nothing of it is needed any more); durable when it
    /// returns. Forgetting one that is not there is no error.
    async fn remove_listing(&self, installation_id: &str) -> Result<(), StateError>;
    /// The rotate requests answered lately, as last written ([`requests`]).
    fn answered_requests(&self) -> Vec<AnsweredRequest>;
    /// Replaces the answered rotate requests with `requests`; durable when it returns.
    async fn put_answered_requests(&self, requests: Vec<AnsweredRequest>)
    -> Result<(), StateError>;
    /// Makes everything durable and compacts; called at shutdown.
    async fn flush(&self) -> Result<(), StateError>;
    /// Appends rotation events to the history, which keeps the last [`HISTORY_LIMIT`]. Does
    /// not wait for the disk: the entries are durable with the next commit (a crash may
    /// lose the last few). A failure here must never fail a rotation: callers log it.
    async fn append_history(&self, entries: Vec<HistoryEntry>) -> Result<(), StateError>;
    /// The history entries `filter` selects, oldest first, as of the last commit.
    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StateError>;
    /// Why the store has stopped accepting changes, once it has (every later write fails
    /// with a fatal error, [`StateError::is_fatal`]): nothing may then be started that would
    /// need recording, and the daemon exits so that a restart re-reads the disk. `None` while
    /// it works.
    fn fatal(&self) -> Option<String> {
        None
    }
}

/// Opens the store the config names, taking its lock: what `run` and `run --once` use.
pub async fn open(
    settings: &crate::config::StateSettings,
) -> Result<Arc<dyn StateStore>, StateError> {
    Ok(Arc::new(file::FileStore::open(&settings.dir).await?))
}

/// Reads every record without the lock and without writing: what `status` uses while the
/// daemon runs.
pub fn read(settings: &crate::config::StateSettings) -> Result<BTreeMap<Key, Record>, StateError> {
    file::FileStore::read_only(&settings.dir)
}

/// Reads the history entries `filter` selects, oldest first, without the lock and without
/// writing: what `history` uses while the daemon runs.
pub fn read_history(
    settings: &crate::config::StateSettings,
    filter: &HistoryFilter,
) -> Result<Vec<HistoryEntry>, StateError> {
    file::FileStore::read_history(&settings.dir, filter)
}

/// Reads every installation's listing without the lock and without writing, sorted by
/// installation id: what `status` and `check` use while the daemon runs. A damaged listing is
/// logged and left out (its installation reads as never listed), as the daemon does.
pub fn read_listings(settings: &crate::config::StateSettings) -> Result<Vec<Listing>, StateError> {
    file::FileStore::read_listings(&settings.dir)
}
