//! The local state store: one owner-only directory holding a snapshot (`state.json`), an
//! append-only journal (`journal.jsonl`) and the lock (`lock`) that keeps a second daemon out.
//!
//! Owns the on-disk format, loading it (strictly: damage stops the start, it is never reset),
//! the group-committing writer thread, compaction, and the lock.
//!
//! # Format (version [`STATE_VERSION`])
//!
//! ```text
//! state.json     {"version": 1, "records": [Record, ...]}
//! journal.jsonl  {"v":1,"put":Record}\n   or   {"v":1,"remove":Key}\n   one per line
//! lock           the holder's PID and "\n"
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
//! not be on disk, as with any failed write: the engine redoes the step, which the protocol
//! makes harmless). When the failed write could be cut off again the writer goes on, so a full
//! disk that clears is survived. When the journal is left in an unknown state (a failed fsync,
//! whose data the kernel may have dropped, or a failed cut), the writer stops and every later
//! call fails with [`StateError::WriterGone`]: only a restart, which re-reads the files, can
//! say what is on disk. A failed compaction loses nothing (the journal is kept); it fails a
//! `flush` and is retried later.

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions, TryLockError};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::error::Category;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, error, warn};

use super::{Key, Record, STATE_VERSION, StateError, StateStore};

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
}

/// One journal line as written. `v` comes first so a reader sees the version at once.
#[derive(Serialize)]
struct EntryOut<'a> {
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    put: Option<&'a Record>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remove: Option<&'a Key>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryIn {
    /// Already checked by [`EntryVersion`]; named so `deny_unknown_fields` accepts it.
    #[serde(rename = "v")]
    _version: u32,
    put: Option<Record>,
    remove: Option<Key>,
}

/// Read before the whole entry, so a newer line gives `NewerVersion`, not `Corrupt`.
#[derive(Deserialize)]
struct EntryVersion {
    v: u32,
}

#[derive(Serialize)]
struct SnapshotOut<'a> {
    version: u32,
    records: Vec<&'a Record>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SnapshotIn {
    /// Already checked by [`SnapshotVersion`]; named so `deny_unknown_fields` accepts it.
    #[serde(rename = "version")]
    _version: u32,
    records: Vec<Record>,
}

#[derive(Deserialize)]
struct SnapshotVersion {
    version: u32,
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
        match std::fs::metadata(dir) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(source) => {
                return Err(StateError::Io {
                    path: dir.to_owned(),
                    source,
                });
            }
        }
        let snapshot = dir.join(SNAPSHOT);
        let mut attempt = 1;
        loop {
            // A compaction renames a new snapshot in and then empties the journal. If one
            // happened while we read, the snapshot and journal we hold may not belong
            // together (or the journal read may straddle the cut): read again.
            // A Corrupt that persists while nothing changes is real damage.
            let before = file_identity(&snapshot)?;
            let result = load(dir);
            let settled = file_identity(&snapshot)? == before;
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
                    path: snapshot,
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

    async fn flush(&self) -> Result<(), StateError> {
        self.submit(Command::Flush).await
    }
}

fn open_blocking(dir: &Path) -> Result<FileStore, StateError> {
    ensure_dir(dir)?;
    let lock = take_lock(dir)?;
    let loaded = load(dir)?;

    let journal_path = dir.join(JOURNAL);
    // Append mode: after a failed write is cut off, the next write lands at the new end.
    let journal = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(FILE_MODE)
        .open(&journal_path)
        .map_err(io_error(&journal_path))?;
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
    remove_if_present(&dir.join(SNAPSHOT_TMP))?;
    // The journal and the lock file may have just been created: their names must survive a
    // crash as much as what is later written into them.
    sync_dir(dir)?;

    debug!(
        dir = %dir.display(),
        records = loaded.records.len(),
        journal_lines = loaded.journal_lines,
        "state loaded"
    );
    let records = Arc::new(RwLock::new(loaded.records));
    let commits = Arc::new(AtomicU64::new(0));
    let writer = Writer {
        dir: dir.to_owned(),
        journal_path,
        journal,
        journal_len: loaded.journal_complete,
        journal_lines: loaded.journal_lines,
        compaction_retry_at: 0,
        records: records.clone(),
        commits: commits.clone(),
    };
    let (queue, commands) = mpsc::unbounded_channel();
    let writer = std::thread::Builder::new()
        .name("state-writer".to_owned())
        .spawn(move || writer.run(commands))
        .map_err(io_error(dir))?;
    Ok(FileStore {
        records,
        queue: Some(queue),
        writer: Some(writer),
        commits,
        _lock: lock,
    })
}

/// Creates the directory owner-only if missing; refuses one that others can get into.
fn ensure_dir(dir: &Path) -> Result<(), StateError> {
    let metadata = match std::fs::metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(io_error(dir))?;
            // The new directory's entry in its parent must survive a crash, or the journal
            // in it goes too.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            std::fs::metadata(dir).map_err(io_error(dir))?
        }
        Err(source) => {
            return Err(StateError::Io {
                path: dir.to_owned(),
                source,
            });
        }
    };
    if !metadata.is_dir() {
        return Err(StateError::Io {
            path: dir.to_owned(),
            source: io::Error::from(io::ErrorKind::NotADirectory),
        });
    }
    let mode = metadata.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(StateError::Permissions {
            path: dir.to_owned(),
            mode,
            want: DIR_MODE,
        });
    }
    Ok(())
}

/// Takes the exclusive lock (flock: released by the kernel when the process dies, so a
/// `kill -9` leaves no stale lock) and writes our PID into it for the next one to name.
fn take_lock(dir: &Path) -> Result<File, StateError> {
    let path = dir.join(LOCK);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(FILE_MODE)
        .open(&path)
        .map_err(io_error(&path))?;
    let locked = file.try_lock();
    match locked {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            return Err(StateError::Locked {
                dir: dir.to_owned(),
                pid: read_holder_pid(&path),
            });
        }
        Err(TryLockError::Error(source)) => return Err(StateError::Io { path, source }),
    }
    file.set_len(0)
        .and_then(|()| file.write_all(format!("{}\n", std::process::id()).as_bytes()))
        .and_then(|()| file.sync_all())
        .map_err(io_error(&path))?;
    Ok(file)
}

/// The holder writes its PID just after locking: give it a moment if we came in between.
fn read_holder_pid(path: &Path) -> Option<u32> {
    for _ in 0..5 {
        let pid = std::fs::read_to_string(path)
            .ok()
            .and_then(|text| text.trim().parse().ok());
        if pid.is_some() {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

/// What a load found on disk.
struct Loaded {
    records: Records,
    /// Complete lines in the journal: the compaction trigger counts them.
    journal_lines: usize,
    /// Bytes of the journal up to and including its last `\n`.
    journal_complete: u64,
    /// Bytes read from the journal: more than `journal_complete` when the last line has no
    /// `\n` (cut short by a crash, or being written while `read_only` reads).
    journal_read: u64,
}

fn load(dir: &Path) -> Result<Loaded, StateError> {
    let snapshot_path = dir.join(SNAPSHOT);
    let mut records = match read_if_present(&snapshot_path)? {
        Some(bytes) => parse_snapshot(&snapshot_path, &bytes)?,
        None => Records::new(),
    };
    let journal_path = dir.join(JOURNAL);
    let journal = read_if_present(&journal_path)?.unwrap_or_default();
    let (journal_lines, journal_complete) = replay(&journal_path, &journal, &mut records)?;
    Ok(Loaded {
        records,
        journal_lines,
        journal_complete: journal_complete as u64,
        journal_read: journal.len() as u64,
    })
}

fn parse_snapshot(path: &Path, bytes: &[u8]) -> Result<Records, StateError> {
    let corrupt = |e: serde_json::Error| StateError::Corrupt {
        path: path.to_owned(),
        line: Some(e.line()),
        reason: json_reason(&e),
    };
    let probe: SnapshotVersion = serde_json::from_slice(bytes).map_err(corrupt)?;
    check_version(path, None, probe.version)?;
    let snapshot: SnapshotIn = serde_json::from_slice(bytes).map_err(corrupt)?;
    Ok(snapshot
        .records
        .into_iter()
        .map(|record| (record.key.clone(), record))
        .collect())
}

/// Replays the journal's complete lines over `records`. Returns how many there were and
/// where the last one ends; anything after that is a line cut short, left to the caller.
fn replay(path: &Path, bytes: &[u8], records: &mut Records) -> Result<(usize, usize), StateError> {
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let mut lines = 0;
    for (index, line) in bytes[..complete]
        .split_inclusive(|&b| b == b'\n')
        .enumerate()
    {
        let number = index + 1;
        let corrupt = |e: serde_json::Error| StateError::Corrupt {
            path: path.to_owned(),
            line: Some(number),
            reason: json_reason(&e),
        };
        let line = line.strip_suffix(b"\n").unwrap_or(line);
        let probe: EntryVersion = serde_json::from_slice(line).map_err(corrupt)?;
        check_version(path, Some(number), probe.v)?;
        let entry: EntryIn = serde_json::from_slice(line).map_err(corrupt)?;
        match (entry.put, entry.remove) {
            (Some(record), None) => {
                records.insert(record.key.clone(), record);
            }
            // A key already missing is fine: this entry may already be in the snapshot.
            (None, Some(key)) => {
                records.remove(&key);
            }
            _ => {
                return Err(StateError::Corrupt {
                    path: path.to_owned(),
                    line: Some(number),
                    reason: "an entry holds exactly one of \"put\" and \"remove\"".to_owned(),
                });
            }
        }
        lines += 1;
    }
    Ok((lines, complete))
}

fn check_version(path: &Path, line: Option<usize>, found: u32) -> Result<(), StateError> {
    if found > STATE_VERSION {
        return Err(StateError::NewerVersion {
            path: path.to_owned(),
            found,
            supported: STATE_VERSION,
        });
    }
    if found == 0 {
        return Err(StateError::Corrupt {
            path: path.to_owned(),
            line,
            reason: "version 0 was never written".to_owned(),
        });
    }
    Ok(())
}

/// serde's category and position only: its message may quote the file's content.
fn json_reason(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        Category::Syntax => "not valid JSON",
        Category::Eof => "JSON cut short",
        Category::Data => "valid JSON but not the state format",
        Category::Io => "unreadable",
    };
    format!("{what} (column {})", e.column())
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

fn file_identity(path: &Path) -> Result<Option<FileIdentity>, StateError> {
    match std::fs::metadata(path) {
        Ok(m) => Ok(Some(FileIdentity {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
        })),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn read_if_present(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

fn remove_if_present(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Makes the directory's entries (new names, renames) durable.
fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// io::Error is not Clone; every waiter of a failed batch gets its own copy.
fn copy_io_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

/// The writer stopped because the journal's content on disk is no longer known.
struct Fatal;

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
    dir: PathBuf,
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
}

impl Writer {
    fn run(mut self, mut commands: mpsc::UnboundedReceiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            // Everything that queued up during the last fsync shares the next one.
            let mut batch = vec![first];
            while let Ok(more) = commands.try_recv() {
                batch.push(more);
            }
            if self.commit(batch).is_err() {
                error!(
                    path = %self.journal_path.display(),
                    "the state journal is in an unknown state after a failed write; no more changes are accepted until a restart"
                );
                // Dropping the receiver fails every queued and later call with WriterGone.
                return;
            }
        }
    }

    fn commit(&mut self, batch: Vec<Command>) -> Result<(), Fatal> {
        let mut flushes = Vec::new();
        // Each command as the change it makes and who waits for it; a PutAll stays one
        // change (its records are never copied one by one) and one ack.
        let mut changes: Vec<(Change, Option<Ack>)> = Vec::with_capacity(batch.len());
        for command in batch {
            match command {
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
                    for ack in changes.into_iter().filter_map(|(_, ack)| ack) {
                        let _ = ack.send(Err(StateError::Io {
                            path: self.journal_path.clone(),
                            source: copy_io_error(&source),
                        }));
                    }
                    if fatal {
                        return Err(Fatal);
                    }
                }
            }
        }

        if flushes.is_empty() && !self.compaction_due() {
            return Ok(());
        }
        let result = self.compact();
        match &result {
            Ok(()) => {}
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
            Err((_, true)) => Err(Fatal),
            _ => Ok(()),
        }
    }

    /// Appends the changes' journal lines and fsyncs them. On error: the error, and whether
    /// the journal is now in an unknown state.
    ///
    /// The lines go out through one buffer as they are encoded: a first start with 10,000
    /// new resources is one batch of ~4 MB, and holding it whole would leave the daemon's
    /// heap that much bigger for the rest of its life (the allocator keeps what it grew to).
    fn append(&mut self, changes: &[(Change, Option<Ack>)]) -> Result<(), (io::Error, bool)> {
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
        let put = |record| EntryOut {
            v: STATE_VERSION,
            put: Some(record),
            remove: None,
        };
        let written = changes.iter().try_for_each(|(change, _)| match change {
            Change::Put(record) | Change::PutLazy(record) => write_line(&put(record)),
            Change::PutMany(records) => records.iter().try_for_each(|r| write_line(&put(r))),
            Change::Remove(key) => write_line(&EntryOut {
                v: STATE_VERSION,
                put: None,
                remove: Some(key),
            }),
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
            return Err((e, cut.is_err()));
        }
        // After a failed fsync the kernel may have dropped the pages while marking them
        // clean, so a retry can "succeed" over lost data: stop instead (PostgreSQL's lesson).
        self.journal.sync_data().map_err(|e| (e, true))?;
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
    /// why every instant in between is safe). On error: whether the writer must stop.
    fn compact(&mut self) -> Result<(), (StateError, bool)> {
        if self.journal_len == 0 {
            // The snapshot (or its absence, for an empty state) already says everything.
            return Ok(());
        }
        // Serialized straight into the file: a snapshot of 10,000 records is ~5 MB, and
        // building it in memory first would leave the daemon's heap that much bigger for the
        // rest of its life (the allocator keeps what it once grew to). The read lock is held
        // only while encoding and writing to the page cache, and released before the fsyncs:
        // `put_lazy` takes the write lock on a runtime thread, which must not wait on a disk.
        write_snapshot(&self.dir, |out| {
            let records = self.records.read().unwrap_or_else(PoisonError::into_inner);
            serde_json::to_writer_pretty(
                &mut *out,
                &SnapshotOut {
                    version: STATE_VERSION,
                    records: records.values().collect(),
                },
            )?;
            out.write_all(b"\n")?;
            out.flush()
        })
        .map_err(|e| (e, false))?;

        // Only now, with the new snapshot's name durable, is the journal redundant.
        self.journal
            .set_len(0)
            .map_err(|e| (io_error(&self.journal_path)(e), false))?;
        self.journal
            .sync_data()
            .map_err(|e| (io_error(&self.journal_path)(e), true))?;
        debug!(lines = self.journal_lines, "state compacted");
        self.journal_len = 0;
        self.journal_lines = 0;
        self.compaction_retry_at = 0;
        Ok(())
    }
}

/// `state.json.tmp` (0600), fsync, rename over `state.json`, fsync the directory.
/// `contents` writes the whole snapshot; whatever it locks is released before the fsyncs.
fn write_snapshot(
    dir: &Path,
    contents: impl FnOnce(&mut BufWriter<&File>) -> io::Result<()>,
) -> Result<(), StateError> {
    let tmp = dir.join(SNAPSHOT_TMP);
    let written = remove_if_present(&tmp).and_then(|()| {
        // create_new: the mode applies only to a file created now.
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(FILE_MODE)
            .open(&tmp)
            .and_then(|file| {
                let mut out = BufWriter::new(&file);
                contents(&mut out)?;
                out.flush()?;
                drop(out);
                file.sync_all()
            })
            .map_err(io_error(&tmp))
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let target = dir.join(SNAPSHOT);
    std::fs::rename(&tmp, &target).map_err(io_error(&target))?;
    sync_dir(dir)
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
mod tests {
    use std::time::Instant;

    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::rotation::Step;

    fn record(resource: &str, step: Step) -> Record {
        let at = Utc
            .with_ymd_and_hms(2025, 1, 2, 3, 4, 5)
            .single()
            .unwrap_or_default();
        let mut record = Record::new(
            Key {
                policy: "db".to_owned(),
                resource: resource.to_owned(),
            },
            "acme".to_owned(),
            at,
            at,
        );
        record.step = step;
        record
    }

    fn line(entry: &EntryOut<'_>) -> String {
        serde_json::to_string(entry).unwrap()
    }

    fn put_line(record: &Record) -> String {
        line(&EntryOut {
            v: 1,
            put: Some(record),
            remove: None,
        })
    }

    fn remove_line(key: &Key) -> String {
        line(&EntryOut {
            v: 1,
            put: None,
            remove: Some(key),
        })
    }

    #[test]
    fn journal_lines_have_the_documented_shape() {
        let r = record("store_a", Step::Idle);
        let put = put_line(&r);
        assert!(
            put.starts_with(r#"{"v":1,"put":{"key":{"policy":"db","resource":"store_a"}"#),
            "{put}"
        );
        assert_eq!(
            remove_line(&r.key),
            r#"{"v":1,"remove":{"policy":"db","resource":"store_a"}}"#
        );
    }

    #[test]
    fn replay_applies_in_order_and_reports_a_cut_line() {
        let a = record("a", Step::Due);
        let b = record("b", Step::Idle);
        let journal = format!(
            "{}\n{}\n{}\n{}",
            put_line(&a),
            put_line(&b),
            remove_line(&a.key),
            &put_line(&a)[..20]
        );
        let mut records = Records::new();
        let (lines, complete) = replay(Path::new("j"), journal.as_bytes(), &mut records).unwrap();
        assert_eq!(lines, 3);
        assert_eq!(
            &journal.as_bytes()[complete..],
            &put_line(&a).as_bytes()[..20]
        );
        assert_eq!(records.into_values().collect::<Vec<_>>(), vec![b]);
    }

    #[test]
    fn replay_over_a_snapshot_that_holds_it_changes_nothing() {
        let a1 = record("a", Step::Due);
        let a2 = record(
            "a",
            Step::Creating {
                rotation_id: "r1".to_owned(),
                earlier: None,
            },
        );
        let b = record("b", Step::Idle);
        let c = record("c", Step::Idle);
        let journal = [
            put_line(&a1),
            put_line(&b),
            put_line(&c),
            remove_line(&b.key),
            put_line(&a2),
        ]
        .map(|l| l + "\n")
        .concat();
        let mut from_empty = Records::new();
        replay(Path::new("j"), journal.as_bytes(), &mut from_empty).unwrap();
        let mut again = from_empty.clone();
        replay(Path::new("j"), journal.as_bytes(), &mut again).unwrap();
        assert_eq!(again, from_empty);
        assert_eq!(again.values().cloned().collect::<Vec<_>>(), vec![a2, c]);
    }

    #[test]
    fn damage_is_refused_with_file_line_and_a_content_free_reason() {
        let a = record("a", Step::Idle);
        let secretish = "hunter2-looks-like-a-value";
        // (journal, line, reason starts with)
        let cases = [
            (
                format!("{}\n{{\"v\":1,\"put\":\"{secretish}\"}}\n", put_line(&a)),
                2,
                "valid JSON but not",
            ),
            (
                format!("{}\n{secretish}\n{}\n", put_line(&a), put_line(&a)),
                2,
                "not valid JSON",
            ),
            ("{\"v\":1}\n".to_owned(), 1, "an entry holds exactly one"),
            (
                format!(
                    "{{\"v\":1,\"put\":{},\"remove\":{}}}\n",
                    serde_json::to_string(&a).unwrap(),
                    serde_json::to_string(&a.key).unwrap()
                ),
                1,
                "an entry holds exactly one",
            ),
            ("\n".to_owned(), 1, "JSON cut short"),
            (
                "{\"v\":0,\"remove\":{\"policy\":\"p\",\"resource\":\"r\"}}\n".to_owned(),
                1,
                "version 0",
            ),
        ];
        for (journal, want_line, want_reason) in cases {
            match replay(
                Path::new("dir/journal.jsonl"),
                journal.as_bytes(),
                &mut Records::new(),
            ) {
                Err(StateError::Corrupt { path, line, reason }) => {
                    assert_eq!(path, Path::new("dir/journal.jsonl"));
                    assert_eq!(line, Some(want_line), "{journal}");
                    assert!(reason.starts_with(want_reason), "{reason} for {journal}");
                    assert!(!reason.contains(secretish), "{reason}");
                }
                other => panic!("{journal}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_newer_entry_is_newer_version_even_when_its_shape_is_unknown() {
        let journal = "{\"v\":2,\"upsert\":[1,2,3]}\n";
        match replay(
            Path::new("journal.jsonl"),
            journal.as_bytes(),
            &mut Records::new(),
        ) {
            Err(StateError::NewerVersion {
                found: 2,
                supported: 1,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn snapshot_damage_names_the_line() {
        let text = "{\n  \"version\": 1,\n  \"records\": [\n    {\"key\": 5}\n  ]\n}\n";
        match parse_snapshot(Path::new("state.json"), text.as_bytes()) {
            Err(StateError::Corrupt {
                line: Some(4),
                reason,
                ..
            }) => {
                assert!(reason.starts_with("valid JSON but not"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }

    /// Changes queued while a commit is in flight share the next one: holding the map's lock
    /// stalls the writer right after its first fsync, while 999 more changes queue.
    #[test]
    fn changes_queued_during_a_commit_share_the_next_fsync() {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime
            .block_on(FileStore::open(&dir.path().join("state")))
            .unwrap();
        let queue = store.queue.clone().unwrap();
        let send = |resource: String| {
            let (ack, done) = oneshot::channel();
            queue
                .send(Command::Put(Box::new(record(&resource, Step::Idle)), ack))
                .map_err(|_| ())
                .unwrap();
            done
        };

        let stall = store.records.write().unwrap();
        let first = send("first".to_owned());
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.commit_count() == 0 {
            assert!(Instant::now() < deadline, "the first commit never happened");
            std::thread::sleep(Duration::from_millis(1));
        }
        let rest: Vec<_> = (0..999).map(|i| send(format!("r{i:03}"))).collect();
        drop(stall);

        runtime.block_on(async {
            first.await.unwrap().unwrap();
            for done in rest {
                done.await.unwrap().unwrap();
            }
        });
        assert_eq!(store.commit_count(), 2);
        assert_eq!(store.records().len(), 1000);
    }

    #[test]
    fn a_failed_write_that_cannot_be_cut_back_fails_its_waiters_and_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let store = runtime.block_on(FileStore::open(&state)).unwrap();
        runtime
            .block_on(store.put(record("a", Step::Idle)))
            .unwrap();

        // A writer whose journal handle cannot write (opened read-only) stands in for a full disk.
        let (queue, commands) = mpsc::unbounded_channel();
        let journal_path = state.join(JOURNAL);
        let len = std::fs::metadata(&journal_path).unwrap().len();
        let writer = Writer {
            dir: state.clone(),
            journal_path: journal_path.clone(),
            journal: File::open(&journal_path).unwrap(),
            journal_len: len,
            journal_lines: 1,
            compaction_retry_at: 0,
            records: Arc::new(RwLock::new(store.records())),
            commits: Arc::new(AtomicU64::new(0)),
        };
        let records = writer.records.clone();
        let thread = std::thread::spawn(move || writer.run(commands));
        let (ack, done) = oneshot::channel();
        queue
            .send(Command::Put(Box::new(record("b", Step::Due)), ack))
            .map_err(|_| ())
            .unwrap();
        match runtime.block_on(done).unwrap() {
            Err(StateError::Io { path, .. }) => assert_eq!(path, journal_path),
            other => panic!("{other:?}"),
        }
        // Not applied, and (cutting back a read-only handle fails too) the writer stopped.
        assert_eq!(records.read().unwrap().len(), 1);
        thread.join().unwrap();
        let (ack, done) = oneshot::channel();
        assert!(queue.send(Command::Flush(ack)).is_err());
        drop(done);
        assert_eq!(std::fs::metadata(&journal_path).unwrap().len(), len);
    }
}
