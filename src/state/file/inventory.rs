//! The inventory's files: one per installation, `inventory/<installation_id>.json` in the
//! state directory, each holding what Vercel last listed for it.
//!
//! ```text
//! inventory/icfg_abc.json       {"version": 1, "listing": Listing}
//! inventory/icfg_abc.json.tmp   a write in progress (or cut short by a crash: removed at open)
//! ```
//!
//! One file per installation, not records in the journal: a pass over 20,000 installations
//! rewrites only those whose listing changed, and each is replaced whole and atomically
//! (`StateDir::replace`: temporary file, fsync, rename, directory fsync), so a crash leaves
//! the old listing or the new one. The files are opened the way every state file is
//! (`dir.rs`: relative to the directory, never through a link, checked once open), and only
//! an id that is a plain file name ([`crate::resource::is_file_safe_installation_id`]) ever
//! names one.
//!
//! Damage is not fatal here, unlike the records': a listing can always be had again from
//! Vercel. A file that is corrupt, of a newer version, or unsafe to open is logged (warn,
//! naming the file and what is wrong) and its installation reads as never listed; the file is
//! left as it is until a successful listing replaces it (the rename replaces a link or a
//! hard-linked name, never writing through it).

use std::collections::BTreeMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;
use tracing::{debug, warn};

use super::dir::{StateDir, io_error};
use super::format::json_reason;
use crate::state::{Listing, StateError};

/// The inventory's directory, in the state directory.
pub(super) const INVENTORY_DIR: &str = "inventory";

/// The version of an inventory file this build reads and writes. A file of a newer one is
/// skipped (its installation reads as never listed), and replaced by the next listing.
const INVENTORY_VERSION: u32 = 1;

const SUFFIX: &str = ".json";
const TMP_SUFFIX: &str = ".json.tmp";

/// Writes of one installation's file are one at a time; ids hash to one of this many locks,
/// so writes of different installations rarely wait for each other.
const WRITE_STRIPES: usize = 64;

type Listings = BTreeMap<String, Arc<Listing>>;

#[derive(Serialize)]
struct FileOut<'a> {
    version: u32,
    listing: &'a Listing,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileIn {
    version: u32,
    listing: Listing,
}

/// Read only when the whole file did not parse, to tell a newer version from damage.
#[derive(Deserialize)]
struct FileVersion {
    version: u32,
}

/// The inventory of an open store: every listing in memory, as of the last write, and the
/// directory they are written to.
pub(super) struct Inventory {
    /// `inventory/`, created at the first write: a store that never lists has none.
    dir: Arc<InventoryDir>,
    listings: Arc<RwLock<Listings>>,
    /// Held across a write, including its blocking part: a caller that gives up waiting
    /// does not let a second write of the same file start beside the first.
    stripes: Vec<Arc<Mutex<()>>>,
}

/// The inventory's directory, opened when the store opens if it exists, else made at the
/// first write.
struct InventoryDir {
    /// The state directory (a descriptor of its own), to make `inventory/` in.
    state: StateDir,
    opened: std::sync::Mutex<Option<Arc<StateDir>>>,
}

impl InventoryDir {
    /// `inventory/`, made (0700) if it is not there yet. Blocking.
    fn get_or_make(&self) -> Result<Arc<StateDir>, StateError> {
        let mut opened = self.opened.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(dir) = &*opened {
            return Ok(dir.clone());
        }
        let path = self.state.file_path(INVENTORY_DIR);
        let dir = Arc::new(
            self.state
                .open_subdir(INVENTORY_DIR, true)?
                // Made when missing: this is a guard, not a path taken.
                .ok_or_else(|| io_error(&path)(io::ErrorKind::NotFound.into()))?,
        );
        *opened = Some(dir.clone());
        Ok(dir)
    }

    /// `inventory/` if it is there (nothing to remove from otherwise).
    fn get(&self) -> Option<Arc<StateDir>> {
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Inventory {
    /// Opens `inventory/` in the store's directory if it is there (refused when it is a
    /// link, not a directory, another user's, or open to group or others), removes temporary
    /// files left by a crash and loads every listing. Blocking: called while the store opens.
    pub(super) fn open(state: &StateDir) -> Result<Inventory, StateError> {
        let dir = state.open_subdir(INVENTORY_DIR, false)?;
        let started = std::time::Instant::now();
        let listings = match &dir {
            Some(dir) => load(dir, true)?,
            None => BTreeMap::new(),
        };
        debug!(
            dir = %state.file_path(INVENTORY_DIR).display(),
            listings = listings.len(),
            elapsed = ?started.elapsed(),
            "inventory loaded"
        );
        Ok(Inventory {
            dir: Arc::new(InventoryDir {
                state: state.try_clone()?,
                opened: std::sync::Mutex::new(dir.map(Arc::new)),
            }),
            listings: Arc::new(RwLock::new(
                listings
                    .into_iter()
                    .map(|(id, listing)| (id, Arc::new(listing)))
                    .collect(),
            )),
            stripes: (0..WRITE_STRIPES)
                .map(|_| Arc::new(Mutex::new(())))
                .collect(),
        })
    }

    /// Every listing as of the last write, sorted by installation id.
    pub(super) fn listings(&self) -> Vec<Arc<Listing>> {
        self.listings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Writes `listing` unless it equals the stored one; durable when it returns.
    pub(super) async fn put(&self, listing: Listing) -> Result<(), StateError> {
        StateError::check_installation_id(&listing.installation_id)?;
        let turn = self.stripe(&listing.installation_id).lock_owned().await;
        let stored = self
            .listings
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&listing.installation_id)
            .is_some_and(|stored| **stored == listing);
        if stored {
            return Ok(());
        }
        let (dir, listings) = (self.dir.clone(), self.listings.clone());
        run_blocking(&self.dir.state, move || {
            let _turn = turn;
            let inventory = dir.get_or_make()?;
            write_listing(&inventory, &listing)?;
            // Only now, with the file durable, is it what `listings` shows. Done here, not
            // after the await, so a caller that gives up waiting leaves no difference
            // between the map and the disk.
            listings
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(listing.installation_id.clone(), Arc::new(listing));
            Ok(())
        })
        .await
    }

    /// Removes an installation's file and listing, if there are any; durable when it returns.
    pub(super) async fn remove(&self, installation_id: &str) -> Result<(), StateError> {
        StateError::check_installation_id(installation_id)?;
        let turn = self.stripe(installation_id).lock_owned().await;
        let (dir, listings) = (self.dir.clone(), self.listings.clone());
        let id = installation_id.to_owned();
        run_blocking(&self.dir.state, move || {
            let _turn = turn;
            // A damaged file of this installation goes too: it was asked to be forgotten.
            if let Some(dir) = dir.get()
                && dir.remove_if_present(&format!("{id}{SUFFIX}"))?
            {
                dir.sync()?;
            }
            listings
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            Ok(())
        })
        .await
    }

    fn stripe(&self, installation_id: &str) -> Arc<Mutex<()>> {
        let mut hasher = DefaultHasher::new();
        installation_id.hash(&mut hasher);
        let index = (hasher.finish() % WRITE_STRIPES as u64) as usize;
        self.stripes[index].clone()
    }
}

/// Every listing in the state directory `state`, without writing anything (`status`, while
/// the daemon runs): none when there is no inventory yet. Whoever runs it, files are still
/// never read through a link; a damaged file is logged and left out.
pub(super) fn read(state: &StateDir) -> Result<Vec<Listing>, StateError> {
    match state.open_subdir(INVENTORY_DIR, false)? {
        Some(dir) => Ok(load(&dir, false)?.into_values().collect()),
        None => Ok(Vec::new()),
    }
}

/// Runs `work` (blocking file I/O) off the async runtime.
async fn run_blocking(
    dir: &StateDir,
    work: impl FnOnce() -> Result<(), StateError> + Send + 'static,
) -> Result<(), StateError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(e) => Err(io_error(dir.path())(io::Error::other(e))),
    }
}

fn write_listing(dir: &StateDir, listing: &Listing) -> Result<(), StateError> {
    let id = &listing.installation_id;
    dir.replace(
        &format!("{id}{SUFFIX}"),
        &format!("{id}{TMP_SUFFIX}"),
        |out| {
            serde_json::to_writer(
                &mut *out,
                &FileOut {
                    version: INVENTORY_VERSION,
                    listing,
                },
            )
            .map_err(io::Error::from)
        },
    )
}

/// Loads every listing in `dir`, by installation id. `writing`: the store's own directory,
/// where temporary files left by a crash are removed. Only a failure to list the directory
/// is an error; a file that cannot be had is logged and left out.
fn load(dir: &StateDir, writing: bool) -> Result<BTreeMap<String, Listing>, StateError> {
    let mut wanted = Vec::new();
    for name in dir.names()? {
        if let Some(id) = name.strip_suffix(TMP_SUFFIX)
            && crate::resource::is_file_safe_installation_id(id)
        {
            // A write cut short by a crash, never acknowledged: the file beside it holds the
            // last listing that was. Left there if it cannot go: the next write replaces it.
            if writing && let Err(e) = dir.remove(&name) {
                warn!("could not remove a temporary inventory file left by a crash: {e}");
            }
            continue;
        }
        if name
            .strip_suffix(SUFFIX)
            .is_some_and(crate::resource::is_file_safe_installation_id)
        {
            wanted.push(name);
        } else {
            warn!(
                path = %dir.file_path(&name).display(),
                "not an inventory file (<installation id>.json); ignored"
            );
        }
    }

    let mut listings = BTreeMap::new();
    for (name, loaded) in wanted.iter().zip(load_all(dir, &wanted)) {
        match loaded {
            Ok(Some(listing)) => {
                listings.insert(listing.installation_id.clone(), listing);
            }
            // Removed since the directory was listed (by the daemon, for `status`).
            Ok(None) => {}
            // Logged here, on the caller's thread, whichever thread read the file.
            Err(problem) => warn!(
                path = %dir.file_path(name).display(),
                problem = %problem,
                "inventory file skipped: its installation reads as never listed until a listing succeeds and replaces the file"
            ),
        }
    }
    Ok(listings)
}

/// Below this many files one thread reads them all: a thread costs more than it saves.
const PARALLEL_FROM: usize = 1000;
/// At most this many threads read at start (system calls and parsing, no locks).
const MAX_LOAD_THREADS: usize = 4;

type Loaded = Result<Option<Listing>, String>;

/// Reads and parses the files `names` (each `<id>.json`), each result in its name's place:
/// on several threads when there are many, so 20,000 installations do not hold up the start
/// (most of the time is the kernel's, opening and reading each file).
fn load_all(dir: &StateDir, names: &[String]) -> Vec<Loaded> {
    let work = |names: &[String]| -> Vec<Loaded> {
        // Each thread shares the strings its files repeat (installation ids).
        crate::intern::interning(|| names.iter().map(|name| load_one(dir, name)).collect())
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(MAX_LOAD_THREADS);
    if threads < 2 || names.len() < PARALLEL_FROM {
        return work(names);
    }
    std::thread::scope(|scope| {
        let parts: Vec<_> = names
            .chunks(names.len().div_ceil(threads))
            .map(|chunk| {
                std::thread::Builder::new()
                    .name("inventory-load".to_owned())
                    .spawn_scoped(scope, move || work(chunk))
                    // A thread that does not start: its share is read on this one.
                    .map_err(|_| chunk)
            })
            .collect();
        let mut loaded = Vec::with_capacity(names.len());
        for part in parts {
            match part {
                Ok(handle) => match handle.join() {
                    Ok(done) => loaded.extend(done),
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(chunk) => loaded.extend(work(chunk)),
            }
        }
        loaded
    })
}

/// One file's listing; the error says what is wrong with it, never quoting its content.
fn load_one(dir: &StateDir, name: &str) -> Result<Option<Listing>, String> {
    let id = name.strip_suffix(SUFFIX).unwrap_or(name);
    let Some(bytes) = dir.read_whole(name).map_err(|e| e.to_string())? else {
        return Ok(None);
    };
    let listing = decode(&bytes)?;
    if listing.installation_id != id {
        return Err(format!(
            "it holds the listing of another installation ({:?})",
            listing.installation_id
        ));
    }
    Ok(Some(listing))
}

/// Parses a file, once in the common case; the version is read on its own only to tell a
/// newer file from a damaged one.
fn decode(bytes: &[u8]) -> Result<Listing, String> {
    let newer =
        |found: u32| format!("version {found}, newer than this build reads ({INVENTORY_VERSION})");
    match serde_json::from_slice::<FileIn>(bytes) {
        Ok(file) if file.version == INVENTORY_VERSION => Ok(file.listing),
        Ok(file) if file.version > INVENTORY_VERSION => Err(newer(file.version)),
        Ok(file) => Err(format!("version {} was never written", file.version)),
        Err(e) => match serde_json::from_slice::<FileVersion>(bytes) {
            Ok(probe) if probe.version > INVENTORY_VERSION => Err(newer(probe.version)),
            _ => Err(format!("corrupt: {} at line {}", json_reason(&e), e.line())),
        },
    }
}

#[cfg(test)]
mod tests;
