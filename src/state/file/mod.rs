//! The local state store: one owner-only directory holding a snapshot (`state.json`), an
//! append-only journal (`journal.jsonl`), the lock (`lock`) that keeps a second daemon out,
//! the fleet inventory (`inventory/`, one file per installation), the rotate requests
//! answered lately (`requests.json`) and the rotation history (`history.jsonl`).
//!
//! Owns the on-disk format, loading it (strictly: damage stops the start, it is never reset),
//! the group-committing writer thread, compaction, and the lock. This file holds the store and
//! its writer; `format.rs` encodes and loads the files; `dir.rs` opens them safely;
//! `inventory.rs` keeps the listings (written apart from the journal, each file replaced
//! whole, and damage there only logged: a listing can be had again from Vercel);
//! `history.rs` keeps the history file (appended by the writer in the journal's batches,
//! bounded, damage only skipped).
//!
//! # Format (version [`STATE_VERSION`](super::STATE_VERSION))
//!
//! ```text
//! state.json     {"version": 1, "records": [Record, ...]}
//! journal.jsonl  {"v":1,"put":Record}\n   or   {"v":1,"remove":Key}\n   one per line
//! lock           the holder's PID and "\n"
//! requests.json  the rotate requests answered lately (`requests.rs`)
//! ```
//!
//! The state is the snapshot (missing: empty) with the journal replayed over it in order. The
//! only damage tolerated is a final journal line without its `\n`: a write cut short by a crash,
//! never acknowledged, so it is ignored (and cut off before the next append).
//!
//! # Crash safety
//!
//! A change is acknowledged only after its line is in the journal and the journal is fsynced;
//! the in-memory map that [`StateStore::records`] reads is updated in between, so it never
//! shows what is not durable. Compaction writes the whole map to `state.json.tmp`, fsyncs it,
//! renames it over `state.json`, fsyncs the directory and only then empties the journal. At
//! every instant, snapshot + journal therefore give the last acknowledged state:
//! - before the rename: the old snapshot and the full journal;
//! - after the rename, before the journal is emptied: the new snapshot, which already holds
//!   every journal entry, and the journal replayed over it. Replay is idempotent over a
//!   snapshot that includes it (a put replaces the record with the value the snapshot already
//!   has; a remove of a missing key does nothing; for each key the last entry decides, as it
//!   did when the snapshot was made);
//! - after: the new snapshot and an empty journal.
//!
//! # Writer failure policy
//!
//! If appending a batch fails, every change in it fails with [`StateError::Io`] (it may or may
//! not be on disk, as with any failed write: the rotation redoes the step, which the protocol
//! makes harmless). When the failed write could be cut off again the writer goes on, so a full
//! disk that clears is survived. When the journal is left in an unknown state (a failed fsync,
//! whose data the kernel may have dropped, or a failed cut), the writer stops and every later
//! call fails with [`StateError::WriterGone`]: only a restart, which re-reads the files, can
//! say what is on disk; [`StateStore::fatal`] then says why, so the daemon can exit rather
//! than retry forever. A failed compaction loses nothing (the journal is kept); it fails a
//! `flush` and is retried later.
//!
//! # Who may open it, and how
//!
//! See `dir.rs`: files are opened relative to the directory, never through a symbolic link,
//! and only when owned by the user this process runs as; a directory owned by another user
//! is refused whole ([`StateError::NotOwner`]), except to read it for `status`.

mod dir;
mod format;
mod history;
mod inventory;
mod requests;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use self::dir::{Access, StateDir, io_error};
use self::format::{EntryOut, Loaded, SnapshotOut};
use self::history::HistoryFile;
use self::inventory::Inventory;
use self::requests::Requests;
use super::{
    AnsweredRequest, HISTORY_LIMIT, HistoryEntry, HistoryFilter, Key, Listing, Record, StateError,
    StateStore,
};

const SNAPSHOT: &str = "state.json";
const SNAPSHOT_TMP: &str = "state.json.tmp";
const JOURNAL: &str = "journal.jsonl";
const LOCK: &str = "lock";

/// The state names resources, handles and schedules: nobody but the daemon's user reads it.
const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// The journal is written through a buffer of this size (a batch is never held whole).
const JOURNAL_BUFFER: usize = 64 * 1024;
/// The journal is compacted once it holds more lines than this, or than twice the records,
/// whichever is more: a small state is not rewritten every few commits, a large one not
/// replayed from a journal much longer than itself.
const MIN_COMPACTION_LINES: usize = 1000;

/// `read_only` races the daemon's compactions; it reads again when one happened meanwhile.
const READ_ATTEMPTS: u32 = 5;

type Records = BTreeMap<Key, Record>;
type Ack = oneshot::Sender<Result<(), StateError>>;

/// The state in a local directory, locked for the store's lifetime.
pub struct FileStore {
    /// As of the last journal fsync; only the writer thread changes it.
    records: Arc<RwLock<Records>>,
    /// `None` only while dropping: closing the queue is what stops the writer.
    queue: Option<mpsc::UnboundedSender<Command>>,
    writer: Option<JoinHandle<()>>,
    /// Journal commits (one fsync each), for the group-commit tests.
    commits: Arc<AtomicU64>,
    /// Why the writer stopped, set before it stops taking changes.
    fatal: Arc<OnceLock<String>>,
    /// The listings, written apart from the journal.
    inventory: Inventory,
    /// The rotate requests answered lately, in a file of their own.
    requests: Requests,
    /// The state directory's path, to read the history from.
    dir_path: PathBuf,
    /// Holds the flock. Declared after `writer`, which `Drop` joins first, so the lock is
    /// released only once no write is in flight.
    _lock: File,
}

enum Command {
    /// Boxed: a record is ten times the size of the other variants.
    Put(Box<Record>, Ack),
    /// A put nobody waits for: already in the map, durable with this batch's fsync.
    PutLazy(Box<Record>),
    /// Many puts in one command, so they share one append and one fsync.
    PutAll(Vec<Record>, Ack),
    Remove(Key, Ack),
    Flush(Ack),
    /// History entries nobody waits for: appended and fsynced with this batch.
    History(Vec<HistoryEntry>),
}

impl FileStore {
    /// Opens (creating it 0700 if missing) the state directory, takes its lock and loads the
    /// state. Refuses a directory that group or others can access, a held lock (naming the
    /// holder's PID), and any damage other than a final journal line cut short.
    pub async fn open(dir: &Path) -> Result<FileStore, StateError> {
        let owned = dir.to_owned();
        match tokio::task::spawn_blocking(move || open_blocking(&owned)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(StateError::Io {
                path: dir.to_owned(),
                source: io::Error::other(e),
            }),
        }
    }

    /// Loads the state without the lock and without writing anything: `status` while the
    /// daemon runs. A final journal line being written is ignored; a missing directory is an
    /// empty state (the daemon has not run yet).
    pub fn read_only(dir: &Path) -> Result<BTreeMap<Key, Record>, StateError> {
        let Some(dir) = StateDir::open_for_reading(dir)? else {
            return Ok(BTreeMap::new());
        };
        let mut attempt = 1;
        loop {
            // A compaction renames a new snapshot in and then empties the journal. If one
            // happened while we read, the snapshot and journal we hold may not belong
            // together (or the journal read may straddle the cut): read again.
            // A Corrupt that persists while nothing changes is real damage.
            let before = snapshot_identity(&dir)?;
            let result = format::load(&dir, None);
            let settled = snapshot_identity(&dir)? == before;
            let corrupt = matches!(result, Err(StateError::Corrupt { .. }));
            if settled && (!corrupt || attempt >= READ_ATTEMPTS) {
                return result.map(|loaded| {
                    if loaded.journal_read > loaded.journal_complete {
                        debug!("ignored a journal line still being written");
                    }
                    loaded.records
                });
            }
            if attempt >= READ_ATTEMPTS {
                // Never combine files from both sides of a compaction: better no answer.
                return Err(StateError::Io {
                    path: dir.file_path(SNAPSHOT),
                    source: io::Error::new(
                        io::ErrorKind::Interrupted,
                        format!(
                            "replaced by the daemon during each of {READ_ATTEMPTS} reads; try again"
                        ),
                    ),
                });
            }
            attempt += 1;
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Every installation's listing in `dir`'s inventory without the lock and without
    /// writing anything, sorted by installation id; a missing directory or inventory is none.
    /// Damaged files are logged and left out, as at open.
    pub fn read_listings(dir: &Path) -> Result<Vec<Listing>, StateError> {
        match StateDir::open_for_reading(dir)? {
            Some(dir) => inventory::read(&dir),
            None => Ok(Vec::new()),
        }
    }

    /// The history entries `filter` selects among the newest [`HISTORY_LIMIT`] in `dir`,
    /// oldest first, without the lock and without writing anything: `history` while the
    /// daemon runs. A missing directory or file is an empty history; lines that cannot be
    /// read are skipped and logged.
    pub fn read_history(
        dir: &Path,
        filter: &HistoryFilter,
    ) -> Result<Vec<HistoryEntry>, StateError> {
        let Some(dir) = StateDir::open_for_reading(dir)? else {
            return Ok(Vec::new());
        };
        let (entries, skipped) = history::read(&dir, filter, HISTORY_LIMIT)?;
        if skipped > 0 {
            warn!(
                path = %dir.file_path(history::HISTORY).display(),
                lines = skipped,
                "skipped history lines that could not be read (damaged, or written by a newer version)"
            );
        }
        Ok(entries)
    }

    /// Journal commits (fsyncs) so far: many concurrent changes share one.
    #[doc(hidden)]
    pub fn commit_count(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    async fn submit(&self, command: impl FnOnce(Ack) -> Command) -> Result<(), StateError> {
        let (ack, done) = oneshot::channel();
        let queue = self.queue.as_ref().ok_or(StateError::WriterGone)?;
        queue
            .send(command(ack))
            .map_err(|_| StateError::WriterGone)?;
        // Dropping this future after the send does not withdraw the change: it is committed
        // (or not) like any other, only nobody hears about it.
        done.await.unwrap_or(Err(StateError::WriterGone))
    }

    fn read_records(&self) -> std::sync::RwLockReadGuard<'_, Records> {
        // The writer never leaves the map half-changed (each update is a plain insert or
        // remove), so a panic elsewhere while holding the lock leaves it usable.
        self.records.read().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for FileStore {
    fn drop(&mut self) {
        // Every acknowledged change is already durable; closing the queue lets the writer
        // finish what is queued (changes whose callers gave up waiting), and joining it keeps
        // the lock until it has.
        drop(self.queue.take());
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            error!("the state writer panicked");
        }
    }
}

#[async_trait]
impl StateStore for FileStore {
    fn records(&self) -> BTreeMap<Key, Record> {
        self.read_records().clone()
    }

    fn get(&self, key: &Key) -> Option<Record> {
        self.read_records().get(key).cloned()
    }

    fn contains(&self, key: &Key) -> bool {
        self.read_records().contains_key(key)
    }

    fn visit(&self, visit: &mut dyn FnMut(&Record)) {
        self.read_records().values().for_each(visit);
    }

    async fn put(&self, record: Record) -> Result<(), StateError> {
        self.submit(|ack| Command::Put(Box::new(record), ack)).await
    }

    async fn put_all(&self, records: Vec<Record>) -> Result<(), StateError> {
        // One command: the writer appends them all and fsyncs once.
        self.submit(|ack| Command::PutAll(records, ack)).await
    }

    async fn put_lazy(&self, record: Record) -> Result<(), StateError> {
        let queue = self.queue.as_ref().ok_or(StateError::WriterGone)?;
        if self.fatal.get().is_some() {
            // Never shown as state when it can no longer become durable.
            return Err(StateError::WriterGone);
        }
        // Visible to this process at once; on disk, in order, with the next commit. Callers
        // hold the key's lock, so no other put of this key races with it.
        self.records
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(record.key.clone(), record.clone());
        queue
            .send(Command::PutLazy(Box::new(record)))
            .map_err(|_| StateError::WriterGone)
    }

    async fn remove(&self, key: &Key) -> Result<(), StateError> {
        let key = key.clone();
        self.submit(|ack| Command::Remove(key, ack)).await
    }

    fn listings(&self) -> Vec<Arc<Listing>> {
        self.inventory.listings()
    }

    async fn put_listing(&self, listing: Listing) -> Result<(), StateError> {
        // A stopped store accepts no change of any kind (see `fatal`).
        if self.fatal.get().is_some() {
            return Err(StateError::WriterGone);
        }
        self.inventory.put(listing).await
    }

    async fn remove_listing(&self, installation_id: &str) -> Result<(), StateError> {
        if self.fatal.get().is_some() {
            return Err(StateError::WriterGone);
        }
        self.inventory.remove(installation_id).await
    }

    fn answered_requests(&self) -> Vec<AnsweredRequest> {
        self.requests.get()
    }

    async fn put_answered_requests(
        &self,
        requests: Vec<AnsweredRequest>,
    ) -> Result<(), StateError> {
        if self.fatal.get().is_some() {
            return Err(StateError::WriterGone);
        }
        self.requests.put(requests).await
    }

    async fn flush(&self) -> Result<(), StateError> {
        self.submit(Command::Flush).await
    }

    async fn append_history(&self, entries: Vec<HistoryEntry>) -> Result<(), StateError> {
        let queue = self.queue.as_ref().ok_or(StateError::WriterGone)?;
        if self.fatal.get().is_some() {
            return Err(StateError::WriterGone);
        }
        queue
            .send(Command::History(entries))
            .map_err(|_| StateError::WriterGone)
    }

    async fn history(&self, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StateError> {
        let (dir, filter) = (self.dir_path.clone(), filter.clone());
        match tokio::task::spawn_blocking(move || FileStore::read_history(&dir, &filter)).await {
            Ok(result) => result,
            Err(e) => Err(StateError::Io {
                path: self.dir_path.clone(),
                source: io::Error::other(e),
            }),
        }
    }

    fn fatal(&self) -> Option<String> {
        self.fatal.get().cloned()
    }
}

fn open_blocking(path: &Path) -> Result<FileStore, StateError> {
    let dir = StateDir::open_for_writing(path)?;
    let lock = dir.take_lock()?;
    let journal_path = dir.file_path(JOURNAL);
    // Append mode: after a failed write is cut off, the next write lands at the new end.
    let Some(journal) = dir.open(JOURNAL, Access::Append)? else {
        return Err(io_error(&journal_path)(io::ErrorKind::NotFound.into()));
    };
    let loaded = format::load(&dir, Some(&journal))?;
    if loaded.journal_read > loaded.journal_complete {
        warn!(
            path = %journal_path.display(),
            bytes = loaded.journal_read - loaded.journal_complete,
            "ignored the journal's last line, cut short by a crash before it was acknowledged"
        );
        // Otherwise the next append would glue a complete line onto the fragment.
        journal
            .set_len(loaded.journal_complete)
            .and_then(|()| journal.sync_all())
            .map_err(io_error(&journal_path))?;
    }
    // A compaction cut short by a crash; the next one writes it afresh.
    dir.remove(SNAPSHOT_TMP)?;
    let inventory = Inventory::open(&dir)?;
    let requests = Requests::open(&dir)?;
    let history = HistoryFile::open(&dir, HISTORY_LIMIT)?;
    // The journal and the lock file may have just been created: their names must survive a
    // crash as much as what is later written into them.
    dir.sync()?;
    debug!(
        dir = %dir.path().display(),
        records = loaded.records.len(),
        journal_lines = loaded.journal_lines,
        "state loaded"
    );
    start(dir, lock, journal, loaded, inventory, requests, history)
}

/// Starts the writer over what was loaded; the store holds `lock` until it is dropped.
fn start(
    dir: StateDir,
    lock: File,
    journal: File,
    loaded: Loaded,
    inventory: Inventory,
    requests: Requests,
    history: HistoryFile,
) -> Result<FileStore, StateError> {
    let records = Arc::new(RwLock::new(loaded.records));
    let commits = Arc::new(AtomicU64::new(0));
    let fatal = Arc::new(OnceLock::new());
    let dir_path = dir.path().to_owned();
    let writer = Writer {
        journal_path: dir.file_path(JOURNAL),
        dir,
        journal,
        journal_len: loaded.journal_complete,
        journal_lines: loaded.journal_lines,
        compaction_retry_at: 0,
        records: records.clone(),
        commits: commits.clone(),
        fatal: fatal.clone(),
        history,
    };
    let (queue, commands) = mpsc::unbounded_channel();
    let writer = std::thread::Builder::new()
        .name("state-writer".to_owned())
        .spawn(move || writer.run(commands))
        .map_err(io_error(&dir_path))?;
    Ok(FileStore {
        records,
        queue: Some(queue),
        writer: Some(writer),
        commits,
        fatal,
        inventory,
        requests,
        dir_path,
        _lock: lock,
    })
}

/// Tells versions of a file apart: a compaction's rename gives the path a new inode (and, if
/// an inode number is reused, a new mtime or size).
#[derive(PartialEq)]
struct FileIdentity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
}

fn snapshot_identity(dir: &StateDir) -> Result<Option<FileIdentity>, StateError> {
    let Some(file) = dir.open(SNAPSHOT, Access::Read)? else {
        return Ok(None);
    };
    let m = file
        .metadata()
        .map_err(io_error(&dir.file_path(SNAPSHOT)))?;
    Ok(Some(FileIdentity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
    }))
}

/// io::Error is not Clone; every waiter of a failed batch gets its own copy.
fn copy_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// Why the writer stopped: the journal's content on disk is no longer known.
struct Fatal(String);

/// A change encoded into its journal line, waiting for the commit.
enum Change {
    Put(Box<Record>),
    /// A `PutAll`: one ack for all of them.
    PutMany(Vec<Record>),
    /// Already in the in-memory map (applied when it was sent): only written here.
    PutLazy(Box<Record>),
    Remove(Key),
}

/// The one thread that writes the state files. A plain thread, not a tokio task: every call
/// it makes blocks (write, fsync, rename), and it then works under any runtime flavour.
struct Writer {
    dir: StateDir,
    journal_path: PathBuf,
    journal: File,
    /// Bytes in the journal that are committed: where a failed append is cut back to.
    journal_len: u64,
    journal_lines: usize,
    /// After a failed automatic compaction, the next is tried only once the journal has
    /// grown this long, so a full disk is not hit with a whole snapshot at every commit.
    compaction_retry_at: usize,
    records: Arc<RwLock<Records>>,
    commits: Arc<AtomicU64>,
    /// Set with the reason when the writer stops, before the failed batch's callers hear.
    fatal: Arc<OnceLock<String>>,
    history: HistoryFile,
}

impl Writer {
    fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            // Everything that queued up during the last fsync shares the next one.
            let mut batch = vec![first];
            while let Ok(more) = commands.try_recv() {
                batch.push(more);
            }
            if let Err(Fatal(reason)) = self.commit(batch) {
                error!(
                    "the state writer has stopped: {reason}; no more changes are accepted until a restart"
                );
                // Dropping the receiver fails every queued and later call with WriterGone.
                return;
            }
        }
    }

    fn commit(&mut self, batch: Vec<Command>) -> Result<(), Fatal> {
        let mut flushes = Vec::new();
        let mut events = Vec::new();
        // Each command as the change it makes and who waits for it; a PutAll stays one
        // change (its records are never copied one by one) and one ack.
        let mut changes: Vec<(Change, Option<Ack>)> = Vec::with_capacity(batch.len());
        for command in batch {
            match command {
                Command::History(entries) => events.extend(entries),
                Command::PutAll(records, ack) => {
                    changes.push((Change::PutMany(records), Some(ack)))
                }
                Command::Put(record, ack) => changes.push((Change::Put(record), Some(ack))),
                Command::PutLazy(record) => changes.push((Change::PutLazy(record), None)),
                Command::Remove(key, ack) => changes.push((Change::Remove(key), Some(ack))),
                Command::Flush(ack) => flushes.push(ack),
            }
        }

        if !changes.is_empty() {
            match self.append(&changes) {
                Ok(()) => {
                    let mut records = self.records.write().unwrap_or_else(PoisonError::into_inner);
                    let mut acks = Vec::with_capacity(changes.len());
                    for (change, ack) in changes {
                        match change {
                            Change::Put(record) => {
                                records.insert(record.key.clone(), *record);
                            }
                            Change::PutMany(many) => {
                                for record in many {
                                    records.insert(record.key.clone(), record);
                                }
                            }
                            // Applied when sent; applying it again now could undo a newer
                            // lazy put of the same key.
                            Change::PutLazy(_) => {}
                            Change::Remove(key) => {
                                records.remove(&key);
                            }
                        }
                        acks.extend(ack);
                    }
                    drop(records);
                    for ack in acks {
                        let _ = ack.send(Ok(()));
                    }
                }
                Err((source, fatal)) => {
                    warn!(path = %self.journal_path.display(), changes = changes.len(), "state write failed: {source}");
                    if let Some(Fatal(reason)) = &fatal {
                        self.stop(reason);
                    }
                    for ack in changes.into_iter().filter_map(|(_, ack)| ack) {
                        let _ = ack.send(Err(StateError::Io {
                            path: self.journal_path.clone(),
                            source: copy_io_error(&source),
                        }));
                    }
                    if let Some(fatal) = fatal {
                        return Err(fatal);
                    }
                }
            }
        }

        // After the records' callers have heard: the history never holds them back, and a
        // failed append is logged and dropped.
        if let Err(e) = self.history.append(&self.dir, &events) {
            warn!(
                entries = events.len(),
                "could not append to the rotation history (the rotations are unaffected): {e}"
            );
        }

        if flushes.is_empty() && !self.compaction_due() {
            return Ok(());
        }
        let result = self.compact();
        match &result {
            Ok(()) => {}
            Err((_, Some(Fatal(reason)))) => self.stop(reason),
            Err((e, _)) if flushes.is_empty() => {
                self.compaction_retry_at = self.journal_lines + MIN_COMPACTION_LINES;
                warn!("state compaction failed (the journal keeps everything; retried later): {e}");
            }
            Err(_) => {}
        }
        for ack in flushes {
            let _ = ack.send(match &result {
                Ok(()) => Ok(()),
                Err((e, _)) => Err(copy_state_error(e)),
            });
        }
        match result {
            Err((_, Some(fatal))) => Err(fatal),
            _ => Ok(()),
        }
    }

    /// Makes the reason visible to [`StateStore::fatal`]; the caller then stops the writer.
    fn stop(&self, reason: &str) {
        let _ = self.fatal.set(reason.to_owned());
    }

    /// After a failed fsync the kernel may have dropped the pages while marking them clean,
    /// so a retry can "succeed" over lost data: the writer stops (PostgreSQL's lesson).
    fn fsync_failed(&self, e: &io::Error) -> Fatal {
        Fatal(format!(
            "fsync of {} failed ({e}): the kernel may have dropped what was written",
            self.journal_path.display()
        ))
    }

    /// Appends the changes' journal lines and fsyncs them. On error: the error, and why the
    /// journal is now in an unknown state if it is.
    ///
    /// The lines go out through one buffer as they are encoded: a first start with 10,000
    /// new resources is one batch of ~4 MB, and holding it whole would leave the daemon's
    /// heap that much bigger for the rest of its life (the allocator keeps what it grew to).
    fn append(
        &mut self,
        changes: &[(Change, Option<Ack>)],
    ) -> Result<(), (io::Error, Option<Fatal>)> {
        let mut out = BufWriter::with_capacity(JOURNAL_BUFFER, &self.journal);
        let mut line = Vec::new();
        let (mut bytes, mut count) = (0u64, 0usize);
        let mut write_line = |entry: &EntryOut<'_>| -> io::Result<()> {
            line.clear();
            // Cannot fail for these types (string keys only); should it, the batch fails
            // as a write would, and nothing of it counts.
            serde_json::to_writer(&mut line, entry)?;
            line.push(b'\n');
            out.write_all(&line)?;
            bytes += line.len() as u64;
            count += 1;
            Ok(())
        };
        let written = changes.iter().try_for_each(|(change, _)| match change {
            Change::Put(record) | Change::PutLazy(record) => write_line(&EntryOut::put(record)),
            Change::PutMany(records) => records
                .iter()
                .try_for_each(|r| write_line(&EntryOut::put(r))),
            Change::Remove(key) => write_line(&EntryOut::remove(key)),
        });
        let written = written.and_then(|()| out.flush());
        // Never flushed again on drop: after an error, what is buffered must not follow.
        let _ = out.into_parts();
        if let Err(e) = written {
            // Part of the batch may be in the file: cut it back to the last commit, so the
            // next batch starts on a line boundary.
            let cut = self
                .journal
                .set_len(self.journal_len)
                .and_then(|()| self.journal.sync_data());
            let fatal = cut.err().map(|cut| {
                Fatal(format!(
                    "a write to {} failed ({e}), and cutting it back failed too ({cut}): what the journal holds is unknown",
                    self.journal_path.display()
                ))
            });
            return Err((e, fatal));
        }
        if let Err(e) = self.journal.sync_data() {
            let fatal = self.fsync_failed(&e);
            return Err((e, Some(fatal)));
        }
        self.journal_len += bytes;
        self.journal_lines += count;
        self.commits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn compaction_due(&self) -> bool {
        let records = self
            .records
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        self.journal_lines > MIN_COMPACTION_LINES.max(2 * records)
            && self.journal_lines >= self.compaction_retry_at
    }

    /// Writes the map as the new snapshot, then empties the journal (see the head comment for
    /// why every instant in between is safe). On error: why the writer must stop, if it must.
    fn compact(&mut self) -> Result<(), (StateError, Option<Fatal>)> {
        if self.journal_len == 0 {
            // The snapshot (or its absence, for an empty state) already says everything.
            return Ok(());
        }
        // Serialized straight into the file: a snapshot of 10,000 records is ~5 MB, and
        // building it in memory first would leave the daemon's heap that much bigger for the
        // rest of its life (the allocator keeps what it once grew to). The read lock is held
        // only while encoding and writing to the page cache, and released before the fsyncs:
        // `put_lazy` takes the write lock on a runtime thread, which must not wait on a disk.
        self.dir
            .replace(SNAPSHOT, SNAPSHOT_TMP, |out| {
                let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
                serde_json::to_writer_pretty(
                    &mut *out,
                    &SnapshotOut::new(records.values().collect()),
                )?;
                out.write_all(b"\n")?;
                out.flush()
            })
            .map_err(|e| (e, None))?;

        // Only now, with the new snapshot's name durable, is the journal redundant.
        self.journal
            .set_len(0)
            .map_err(|e| (io_error(&self.journal_path)(e), None))?;
        if let Err(e) = self.journal.sync_data() {
            let fatal = self.fsync_failed(&e);
            return Err((io_error(&self.journal_path)(e), Some(fatal)));
        }
        debug!(lines = self.journal_lines, "state compacted");
        self.journal_len = 0;
        self.journal_lines = 0;
        self.compaction_retry_at = 0;
        Ok(())
    }
}

/// StateError is not Clone (it holds io::Error); every flush waiter gets its own copy.
fn copy_state_error(e: &StateError) -> StateError {
    match e {
        StateError::Io { path, source } => StateError::Io {
            path: path.clone(),
            source: copy_io_error(source),
        },
        _ => StateError::WriterGone,
    }
}

#[cfg(test)]
mod tests;
