//! The inventory's files: round trips, writes that change nothing, links and damage, ids
//! that are not file names, and the time and memory 20,000 of them take to load.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex as StdMutex;
use std::time::Duration;

use chrono::{TimeZone, Utc};

use super::*;
use crate::resource::{MetadataValue, ResourceInfo};
use crate::state::StateStore;
use crate::state::file::FileStore;

fn listing(id: &str, resources: &[&str], hour: u32) -> Listing {
    let at = Utc
        .with_ymd_and_hms(2026, 3, 1, hour, 0, 0)
        .single()
        .unwrap();
    let listed = resources
        .iter()
        .map(|r| {
            let mut info = ResourceInfo::configured(id, r);
            info.name = Some(format!("name of {r}"));
            info.status = Some("ready".to_owned());
            info.metadata
                .insert("region".to_owned(), MetadataValue::String("eu".to_owned()));
            std::sync::Arc::new(info)
        })
        .collect();
    Listing::merge(None, id, at, listed)
}

struct Dir {
    _tmp: tempfile::TempDir,
    state: PathBuf,
}

impl Dir {
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path().join("state");
        Dir { _tmp: tmp, state }
    }

    fn inventory(&self) -> PathBuf {
        self.state.join(INVENTORY_DIR)
    }

    fn file(&self, id: &str) -> PathBuf {
        self.inventory().join(format!("{id}.json"))
    }

    async fn open(&self) -> FileStore {
        FileStore::open(&self.state).await.unwrap()
    }
}

fn ids(listings: &[Arc<Listing>]) -> Vec<&str> {
    listings
        .iter()
        .map(|l| l.installation_id.as_str())
        .collect()
}

/// (inode, mtime): a rewrite (a rename of a new file) changes it.
fn identity(path: &Path) -> (u64, i64, i64) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.ino(), meta.mtime(), meta.mtime_nsec())
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
}

/// Warnings logged on this thread while `f` runs.
fn logged<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone)]
    struct Sink(Arc<StdMutex<Vec<u8>>>);
    impl io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let buffer = Arc::new(StdMutex::new(Vec::new()));
    let sink = Sink(buffer.clone());
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let result = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8_lossy(&buffer.lock().unwrap()).into_owned();
    (result, text)
}

#[tokio::test]
async fn listings_survive_a_reopen_in_owner_only_files() {
    let dir = Dir::new();
    let store = dir.open().await;
    assert!(store.listings().is_empty());
    // A store that never lists has no inventory: it is made at the first write.
    store.remove_listing("icfg_a").await.unwrap();
    assert!(!dir.inventory().exists());
    let a = listing("icfg_a", &["r1", "r2"], 1);
    let b = listing("icfg_b", &[], 1);
    let gone = listing("icfg_c", &["r3"], 1)
        .departed_all(Utc.with_ymd_and_hms(2026, 3, 1, 2, 0, 0).single().unwrap());
    for l in [&b, &a, &gone] {
        store.put_listing(l.clone()).await.unwrap();
    }
    assert_eq!(ids(&store.listings()), ["icfg_a", "icfg_b", "icfg_c"]);
    drop(store);

    assert_eq!(mode(&dir.inventory()), 0o700);
    for id in ["icfg_a", "icfg_b", "icfg_c"] {
        assert_eq!(mode(&dir.file(id)), 0o600, "{id}");
    }
    let text = std::fs::read_to_string(dir.file("icfg_a")).unwrap();
    assert!(
        text.starts_with(r#"{"version":1,"listing":{"installation_id":"icfg_a","#),
        "{text}"
    );

    let store = dir.open().await;
    let reopened: Vec<Listing> = store.listings().iter().map(|l| (**l).clone()).collect();
    assert_eq!(reopened, [a.clone(), b.clone(), gone.clone()]);
    // Read beside the running store, without its lock.
    assert_eq!(
        FileStore::read_listings(&dir.state).unwrap(),
        [a.clone(), b, gone]
    );

    store.remove_listing("icfg_b").await.unwrap();
    store.remove_listing("icfg_b").await.unwrap();
    assert!(!dir.file("icfg_b").exists());
    drop(store);
    assert_eq!(ids(&dir.open().await.listings()), ["icfg_a", "icfg_c"]);
}

#[tokio::test]
async fn an_equal_listing_writes_nothing_and_a_changed_one_replaces_the_file() {
    let dir = Dir::new();
    let store = dir.open().await;
    let a = listing("icfg_a", &["r1"], 1);
    store.put_listing(a.clone()).await.unwrap();
    let before = identity(&dir.file("icfg_a"));
    store.put_listing(a.clone()).await.unwrap();
    assert_eq!(identity(&dir.file("icfg_a")), before);

    // The same resources at a later time is a change (`listed_at` is part of it).
    let later = Listing::merge(
        Some(&a),
        "icfg_a",
        listing("x", &[], 2).listed_at,
        a.resources.clone(),
    );
    store.put_listing(later.clone()).await.unwrap();
    assert_ne!(identity(&dir.file("icfg_a")), before);
    assert_eq!(*store.listings()[0], later);
    // Only the file: no temporary file is left behind.
    let mut names = std::fs::read_dir(dir.inventory())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect::<Vec<_>>();
    names.sort();
    assert_eq!(names, ["icfg_a.json"]);
}

#[tokio::test]
async fn ids_that_are_not_plain_file_names_are_refused_and_nothing_is_written() {
    let dir = Dir::new();
    let store = dir.open().await;
    for bad in [
        "../icfg_a",
        "icfg/a",
        "..",
        ".",
        "",
        "icfg.a",
        "icfg a",
        &"x".repeat(129),
    ] {
        match store.put_listing(listing(bad, &["r1"], 1)).await {
            Err(e @ StateError::BadInstallationId { .. }) => {
                let text = e.to_string();
                assert!(text.contains("A-Z a-z 0-9 _ -"), "{text}");
                assert!(!text.contains(&dir.state.display().to_string()), "{text}");
            }
            other => panic!("{bad:?}: {other:?}"),
        }
        assert!(matches!(
            store.remove_listing(bad).await,
            Err(StateError::BadInstallationId { .. })
        ));
    }
    assert!(store.listings().is_empty());
    assert!(!dir.inventory().exists());
    assert_eq!(
        std::fs::read_dir(&dir.state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.contains("icfg"))
            .count(),
        0
    );
}

#[tokio::test]
async fn damaged_files_are_skipped_with_a_warning_the_others_load_and_a_listing_replaces_them() {
    let dir = Dir::new();
    let store = dir.open().await;
    for id in [
        "icfg_good",
        "icfg_cut",
        "icfg_newer",
        "icfg_other",
        "icfg_hard",
    ] {
        store.put_listing(listing(id, &["r1"], 1)).await.unwrap();
    }
    drop(store);
    let good = std::fs::read(dir.file("icfg_good")).unwrap();
    let damage = [
        (
            "icfg_cut",
            good[..good.len() / 2].to_vec(),
            "JSON cut short",
        ),
        (
            "icfg_newer",
            br#"{"version": 2, "listing": {"shape": "unknown"}}"#.to_vec(),
            "version 2, newer than this build reads (1)",
        ),
        (
            "icfg_other",
            good.clone(),
            "another installation (\"icfg_good\")",
        ),
    ];
    for (id, bytes, _) in &damage {
        std::fs::write(dir.file(id), bytes).unwrap();
    }
    // A second name for a file: refused, as every state file with one is.
    let hard_before = std::fs::read(dir.file("icfg_hard")).unwrap();
    std::fs::hard_link(dir.file("icfg_hard"), dir.inventory().join("elsewhere")).unwrap();
    std::fs::write(dir.inventory().join("notes.txt"), "hello").unwrap();

    // What the daemon's open loads (here on this thread, to see its log).
    let (loaded, log) = logged(|| {
        Inventory::open(&StateDir::open_for_writing(&dir.state).unwrap())
            .unwrap()
            .listings()
    });
    assert_eq!(ids(&loaded), ["icfg_good"]);
    for (id, _, reason) in &damage {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("{id}.json")))
            .unwrap_or_else(|| panic!("no warning for {id}: {log}"));
        assert!(line.contains("WARN"), "{line}");
        assert!(line.contains(reason), "{line}");
        assert!(line.contains("reads as never listed"), "{line}");
    }
    assert!(
        log.contains("icfg_hard.json") && log.contains("hard links"),
        "{log}"
    );
    assert!(
        log.contains("notes.txt") && log.contains("not an inventory file"),
        "{log}"
    );
    // `status` skips the same damage; like `state::read`, it takes a second name as it is.
    let (read, log) = logged(|| FileStore::read_listings(&dir.state).unwrap());
    assert_eq!(
        read.iter()
            .map(|l| l.installation_id.as_str())
            .collect::<Vec<_>>(),
        ["icfg_good", "icfg_hard"]
    );
    for (id, _, _) in &damage {
        assert!(log.contains(&format!("{id}.json")), "{log}");
    }

    // The daemon's open does the same, and leaves the files as they are.
    let store = dir.open().await;
    assert_eq!(ids(&store.listings()), ["icfg_good"]);
    for (id, bytes, _) in &damage {
        assert_eq!(&std::fs::read(dir.file(id)).unwrap(), bytes, "{id}");
    }
    // Until a listing succeeds and replaces them.
    for id in ["icfg_cut", "icfg_newer", "icfg_hard"] {
        store.put_listing(listing(id, &["r2"], 3)).await.unwrap();
    }
    drop(store);
    let store = dir.open().await;
    assert_eq!(
        ids(&store.listings()),
        ["icfg_cut", "icfg_good", "icfg_hard", "icfg_newer"]
    );
    // The other name of the hard-linked file still holds what it held.
    assert_eq!(
        std::fs::read(dir.inventory().join("elsewhere")).unwrap(),
        hard_before
    );
}

#[tokio::test]
async fn a_link_in_place_of_an_inventory_file_is_never_followed() {
    let dir = Dir::new();
    let store = dir.open().await;
    store
        .put_listing(listing("icfg_a", &["r1"], 1))
        .await
        .unwrap();
    drop(store);
    // A valid listing elsewhere: were the link followed, it would load.
    let elsewhere = dir._tmp.path().join("planted.json");
    std::fs::copy(dir.file("icfg_a"), &elsewhere).unwrap();
    let planted = std::fs::read(&elsewhere).unwrap();
    std::fs::remove_file(dir.file("icfg_a")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.file("icfg_a")).unwrap();

    let (loaded, log) = logged(|| FileStore::read_listings(&dir.state).unwrap());
    assert!(loaded.is_empty(), "{loaded:?}");
    assert!(
        log.contains("icfg_a.json") && log.contains("symbolic link"),
        "{log}"
    );

    let store = dir.open().await;
    assert!(store.listings().is_empty());
    // The next listing replaces the link itself; its target is untouched.
    store
        .put_listing(listing("icfg_a", &["r2"], 2))
        .await
        .unwrap();
    assert!(
        std::fs::symlink_metadata(dir.file("icfg_a"))
            .unwrap()
            .is_file()
    );
    assert_eq!(std::fs::read(&elsewhere).unwrap(), planted);
    assert_eq!(&*store.listings()[0].resources[0].id, "r2");
}

#[tokio::test]
async fn a_link_in_place_of_the_inventory_directory_is_refused_and_its_target_untouched() {
    let dir = Dir::new();
    let store = dir.open().await;
    let target = dir._tmp.path().join("elsewhere");
    std::fs::create_dir(&target).unwrap();
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
    // Planted before the first write of a running store.
    std::os::unix::fs::symlink(&target, dir.inventory()).unwrap();
    match store.put_listing(listing("icfg_a", &["r1"], 1)).await {
        Err(StateError::Unsafe { path, reason }) => {
            assert_eq!(path, dir.inventory());
            assert!(reason.contains("symbolic link"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(store.listings().is_empty());
    drop(store);

    // Found at open, or by `status`.
    for result in [
        FileStore::open(&dir.state).await.map(|_| ()),
        FileStore::read_listings(&dir.state).map(|_| ()),
    ] {
        match result {
            Err(StateError::Unsafe { path, reason }) => {
                assert_eq!(path, dir.inventory());
                assert!(reason.contains("symbolic link"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(std::fs::read_dir(&target).unwrap().count(), 0);

    // Not a directory at all: refused too.
    std::fs::remove_file(dir.inventory()).unwrap();
    std::fs::write(dir.inventory(), "").unwrap();
    match FileStore::open(&dir.state).await.map(|_| ()) {
        Err(StateError::Unsafe { reason, .. }) => {
            assert!(reason.contains("not a directory"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn an_inventory_directory_open_to_others_is_refused() {
    let dir = Dir::new();
    let store = dir.open().await;
    store
        .put_listing(listing("icfg_a", &["r1"], 1))
        .await
        .unwrap();
    drop(store);
    std::fs::set_permissions(dir.inventory(), std::fs::Permissions::from_mode(0o750)).unwrap();
    match FileStore::open(&dir.state).await.map(|_| ()) {
        Err(e @ StateError::Permissions { .. }) => {
            let text = e.to_string();
            assert!(text.contains("chmod 700"), "{text}");
            assert!(
                text.contains(&dir.inventory().display().to_string()),
                "{text}"
            );
        }
        other => panic!("{other:?}"),
    }
    // `status` reads it whatever its mode.
    assert_eq!(FileStore::read_listings(&dir.state).unwrap().len(), 1);
}

#[tokio::test]
async fn another_users_file_is_skipped_and_replaced_by_the_next_listing() {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to give a file to another user");
        return;
    }
    let dir = Dir::new();
    let store = dir.open().await;
    for id in ["icfg_a", "icfg_b"] {
        store.put_listing(listing(id, &["r1"], 1)).await.unwrap();
    }
    drop(store);
    std::os::unix::fs::chown(dir.file("icfg_a"), Some(65534), Some(65534)).unwrap();
    let store = dir.open().await;
    assert_eq!(ids(&store.listings()), ["icfg_b"]);
    // `status` (no owner to check against) reads it.
    assert_eq!(FileStore::read_listings(&dir.state).unwrap().len(), 2);
    store
        .put_listing(listing("icfg_a", &["r1"], 2))
        .await
        .unwrap();
    assert_eq!(std::fs::metadata(dir.file("icfg_a")).unwrap().uid(), 0);
}

#[tokio::test]
async fn a_write_cut_short_by_a_crash_is_removed_at_open_and_never_read() {
    let dir = Dir::new();
    let store = dir.open().await;
    let a = listing("icfg_a", &["r1"], 1);
    store.put_listing(a.clone()).await.unwrap();
    drop(store);
    let tmp = dir.inventory().join("icfg_a.json.tmp");
    std::fs::write(&tmp, r#"{"version":1,"listing":{"install"#).unwrap();
    // `status` ignores it and removes nothing.
    let (loaded, log) = logged(|| FileStore::read_listings(&dir.state).unwrap());
    assert_eq!(loaded, std::slice::from_ref(&a));
    assert!(log.is_empty(), "{log}");
    assert!(tmp.exists());

    let store = dir.open().await;
    assert_eq!(*store.listings()[0], a);
    assert!(!tmp.exists());
}

#[test]
fn no_state_or_no_inventory_reads_as_none() {
    let dir = Dir::new();
    assert!(FileStore::read_listings(&dir.state).unwrap().is_empty());
    std::fs::create_dir(&dir.state).unwrap();
    assert!(FileStore::read_listings(&dir.state).unwrap().is_empty());
    assert!(!dir.inventory().exists());
}

/// 20,000 installations (100,000 resources) load at open, on several threads, each file
/// once and under its own id, a damaged one among them skipped. The time is printed (run
/// with `--nocapture`), never asserted: the goal is well under a second in a release
/// build (`cargo test --release --lib twenty_thousand -- --nocapture`).
#[tokio::test]
async fn twenty_thousand_listings_load_at_open() {
    const INSTALLATIONS: usize = 20_000;
    let dir = Dir::new();
    drop(dir.open().await);
    std::fs::create_dir(dir.inventory()).unwrap();
    std::fs::set_permissions(dir.inventory(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let template = serde_json::to_string(&FileOut {
        version: INVENTORY_VERSION,
        listing: &listing("icfg_ID", &["r1", "r2", "r3", "r4", "r5"], 1),
    })
    .unwrap();
    for i in 0..INSTALLATIONS {
        let id = format!("icfg_{i:05}");
        std::fs::write(dir.file(&id), template.replace("icfg_ID", &id)).unwrap();
    }
    std::fs::write(dir.file("icfg_12345"), &template[..100]).unwrap();

    // Wall time depends on what else the machine runs; the CPU the process spent (all its
    // threads, from /proc) tells the cost itself.
    let cpu = || {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        let fields: Vec<&str> = stat
            .rsplit(')')
            .next()
            .unwrap()
            .split_whitespace()
            .collect();
        // utime and stime, in clock ticks (fields 14 and 15; 12 and 13 after the name).
        let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        // USER_HZ, 100 on every Linux architecture.
        Duration::from_millis(ticks * 10)
    };
    // The whole process's resident memory, in KiB: run this test alone to read it.
    let rss = || {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|kb| kb.trim().trim_end_matches(" kB").parse::<u64>().ok())
            .unwrap()
    };
    let (started, cpu_before, rss_before) = (std::time::Instant::now(), cpu(), rss());
    let store = dir.open().await;
    let (elapsed, cpu_spent) = (started.elapsed(), cpu() - cpu_before);
    let rss_grown = rss().saturating_sub(rss_before);
    let listings = store.listings();
    assert_eq!(listings.len(), INSTALLATIONS - 1);
    for (i, l) in (0..INSTALLATIONS).filter(|&i| i != 12345).zip(&listings) {
        let id = format!("icfg_{i:05}");
        assert_eq!(l.installation_id, id);
        assert_eq!(l.resources.len(), 5);
        assert_eq!(&*l.resources[4].installation_id, id);
    }
    println!(
        "opened a store with {INSTALLATIONS} inventory files ({} bytes each, 5 resources) in {elapsed:?}, {cpu_spent:?} of CPU, resident memory grown by {rss_grown} KiB ({} bytes a resource) ({} build)",
        template.len(),
        rss_grown * 1024 / (5 * INSTALLATIONS as u64),
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
