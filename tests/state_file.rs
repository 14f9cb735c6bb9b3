//! The file state store through its public API: round trips, the lock, modes, every kind of
//! damage (the one tolerated and those refused), compaction, group commit, the crash window
//! between a compaction's rename and the journal's truncation, `read_only` beside a
//! running store, and what may not be opened: links and other users' files or directories.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use serde_json::{Value, json};
use tempfile::TempDir;
use vercel_secret_rotator::rotation::Step;
use vercel_secret_rotator::state::file::FileStore;
use vercel_secret_rotator::state::{
    Failure, Key, Record, Retirement, STATE_VERSION, StateError, StateStore, Stopped,
};

fn at(minute: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 12, 0, 0)
        .single()
        .unwrap_or_default()
        + Duration::minutes(minute)
}

fn key(resource: &str) -> Key {
    Key::new("orders-db", resource)
}

fn record(resource: &str, step: Step) -> Record {
    let mut record = Record::new(key(resource), "acme".to_owned(), at(0), at(60));
    record.step = step;
    record
}

/// One record per step, the later ones with every optional field filled in.
fn every_step() -> Vec<Record> {
    let steps = vec![
        Step::Idle,
        Step::Due,
        Step::Creating {
            rotation_id: "rot-1".to_owned(),
            earlier: None,
        },
        Step::Created {
            rotation_id: "rot-2".to_owned(),
            handle: "orders_a".to_owned(),
            supersedes: None,
        },
        Step::Pushing {
            rotation_id: "rot-3".to_owned(),
            handle: "orders_b".to_owned(),
            supersedes: None,
        },
        Step::Pushed {
            rotation_id: "rot-4".to_owned(),
            handle: "key-42".to_owned(),
            at: at(5),
            fingerprint: "a1b2c3d4".to_owned(),
        },
        Step::Notified {
            handle: "key-43".to_owned(),
            pushed_at: at(6),
        },
        Step::Creating {
            rotation_id: "rot-5".to_owned(),
            earlier: Some("key-40".to_owned()),
        },
    ];
    steps
        .into_iter()
        .enumerate()
        .map(|(i, step)| {
            let mut r = record(&format!("store_{i}_{}", step.name()), step);
            if i >= 4 {
                r.next_due = None;
                r.current_handle = Some("key-41".to_owned());
                r.retirements = vec![Retirement {
                    handle: "key-40".to_owned(),
                    due: at(1440),
                    attempts: 2,
                    retry_at: Some(at(1500)),
                    last_error: Some("provider command, retire: exit status 1".to_owned()),
                }];
                r.last_success = Some(at(-10_000));
                r.fingerprint = Some("deadbeef".to_owned());
                r.consecutive_failures = 3;
                r.last_error = Some(Box::new(Failure {
                    at: at(2),
                    step: "pushing".to_owned(),
                    message: "Vercel answered 503".to_owned(),
                    transient: true,
                }));
                r.retry_at = Some(at(30));
                r.stopped = Some(Box::new(Stopped {
                    at: at(3),
                    reason: "Vercel answered 403".to_owned(),
                    policy_digest: "sha256:0123".to_owned(),
                }));
            }
            r
        })
        .collect()
}

fn by_key(records: &[Record]) -> BTreeMap<Key, Record> {
    records.iter().map(|r| (r.key.clone(), r.clone())).collect()
}

struct Dir {
    tmp: TempDir,
    path: PathBuf,
}

impl Dir {
    /// A state directory that does not exist yet, inside an owner-only temporary one.
    fn new() -> Dir {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let path = tmp.path().join("state");
        Dir { tmp, path }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.file(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
    }

    fn write(&self, name: &str, text: &str) {
        std::fs::write(self.file(name), text).unwrap_or_else(|e| panic!("{name}: {e}"));
    }

    fn append(&self, name: &str, text: &str) {
        let old = std::fs::read_to_string(self.file(name)).unwrap_or_default();
        self.write(name, &(old + text));
    }

    fn journal_lines(&self) -> Vec<String> {
        self.read("journal.jsonl")
            .lines()
            .map(str::to_owned)
            .collect()
    }

    async fn open(&self) -> FileStore {
        FileStore::open(&self.path)
            .await
            .unwrap_or_else(|e| panic!("open: {e}"))
    }

    async fn open_err(&self) -> StateError {
        match FileStore::open(&self.path).await {
            Ok(_) => panic!("open succeeded"),
            Err(e) => e,
        }
    }

    /// A store holding `records`, written through the journal, then closed.
    async fn with(&self, records: &[Record]) {
        let store = self.open().await;
        for r in records {
            store
                .put(r.clone())
                .await
                .unwrap_or_else(|e| panic!("put: {e}"));
        }
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .map(|m| m.permissions().mode() & 0o7777)
        .unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

#[tokio::test]
async fn every_step_round_trips_and_survives_a_reopen() {
    let dir = Dir::new();
    let records = every_step();
    {
        let store = dir.open().await;
        for r in &records {
            store.put(r.clone()).await.unwrap_or_else(|e| panic!("{e}"));
        }
        assert_eq!(store.records(), by_key(&records));
        assert_eq!(store.get(&records[5].key).as_ref(), Some(&records[5]));
        assert_eq!(store.get(&key("nope")), None);
    }
    let store = dir.open().await;
    assert_eq!(store.records(), by_key(&records));

    // Updates and removes, including of a key that is not there, survive too.
    let mut updated = records[2].clone();
    updated.step = Step::Created {
        rotation_id: "rot-1".to_owned(),
        handle: "h".to_owned(),
        supersedes: None,
    };
    store
        .put(updated.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .remove(&records[0].key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .remove(&key("never-there"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut want = by_key(&records);
    want.insert(updated.key.clone(), updated);
    want.remove(&records[0].key);
    assert_eq!(store.records(), want);
    drop(store);
    assert_eq!(dir.open().await.records(), want);
    assert_eq!(
        FileStore::read_only(&dir.path).unwrap_or_else(|e| panic!("{e}")),
        want
    );
}

#[tokio::test]
async fn a_second_open_is_locked_naming_our_pid_until_the_first_is_dropped() {
    let dir = Dir::new();
    let store = dir.open().await;
    match dir.open_err().await {
        StateError::Locked { dir: locked, pid } => {
            assert_eq!(locked, dir.path);
            assert_eq!(pid, Some(std::process::id()));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(dir.read("lock"), format!("{}\n", std::process::id()));
    drop(store);
    drop(dir.open().await);
}

#[tokio::test]
async fn the_directory_is_0700_and_every_file_0600() {
    let dir = Dir::new();
    let store = dir.open().await;
    for r in every_step() {
        store.put(r).await.unwrap_or_else(|e| panic!("{e}"));
    }
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    store
        .put(record("after-flush", Step::Due))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // The history too, written with the next commit.
    let event = vercel_secret_rotator::state::HistoryEntry::new(
        Utc::now(),
        "p",
        "r",
        vercel_secret_rotator::events::EventKind::Started,
    );
    store
        .append_history(vec![event])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mode(&dir.path), 0o700);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir.path).unwrap_or_else(|e| panic!("{e}")) {
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(mode(&entry.path()), 0o600, "{:?}", entry.path());
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    assert_eq!(
        names,
        ["history.jsonl", "journal.jsonl", "lock", "state.json"]
    );
}

#[tokio::test]
async fn missing_parents_are_created_owner_only() {
    let dir = Dir::new();
    let deep = dir.path.join("a/b");
    drop(
        FileStore::open(&deep)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
    );
    assert_eq!(mode(&deep), 0o700);
    assert_eq!(mode(&dir.path), 0o700);
}

#[tokio::test]
async fn a_directory_others_can_enter_is_refused_untouched() {
    for bad in [0o750, 0o701, 0o755, 0o777] {
        let dir = Dir::new();
        std::fs::create_dir(&dir.path).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&dir.path, std::fs::Permissions::from_mode(bad))
            .unwrap_or_else(|e| panic!("{e}"));
        match dir.open_err().await {
            StateError::Permissions { path, mode, want } => {
                assert_eq!((path, mode, want), (dir.path.clone(), bad, 0o700));
            }
            other => panic!("{bad:o}: {other:?}"),
        }
        assert_eq!(
            std::fs::read_dir(&dir.path)
                .map(Iterator::count)
                .unwrap_or(99),
            0
        );
    }
}

#[tokio::test]
async fn a_final_line_cut_short_is_ignored_cut_off_and_appended_after() {
    let dir = Dir::new();
    let records = every_step();
    dir.with(&records[..3]).await;
    let clean = dir.read("journal.jsonl");
    let cut = dir.journal_lines()[0].clone();
    dir.append("journal.jsonl", &cut[..cut.len() / 2]);

    // `status` while a line is being written sees the complete ones.
    assert_eq!(
        FileStore::read_only(&dir.path).unwrap_or_else(|e| panic!("{e}")),
        by_key(&records[..3])
    );

    let store = dir.open().await;
    assert_eq!(store.records(), by_key(&records[..3]));
    assert_eq!(
        dir.read("journal.jsonl"),
        clean,
        "the fragment is cut off at open"
    );
    store
        .put(records[3].clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    drop(store);

    let lines = dir.journal_lines();
    assert_eq!(lines.len(), 4);
    assert!(dir.read("journal.jsonl").ends_with('\n'));
    for line in &lines {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{e}: {line}"));
    }
    assert_eq!(dir.open().await.records(), by_key(&records[..4]));
}

#[tokio::test]
async fn a_corrupt_middle_line_stops_the_start_naming_journal_and_line() {
    let dir = Dir::new();
    dir.with(&every_step()[..3]).await;
    let mut lines = dir.journal_lines();
    lines[1] = lines[1].replace("\"key\"", "\"kee\"");
    let damaged = lines.join("\n") + "\n";
    dir.write("journal.jsonl", &damaged);

    for err in [
        dir.open_err().await,
        FileStore::read_only(&dir.path)
            .err()
            .unwrap_or_else(|| panic!("read_only succeeded")),
    ] {
        match err {
            StateError::Corrupt { path, line, reason } => {
                assert_eq!(path, dir.file("journal.jsonl"));
                assert_eq!(line, Some(2));
                assert!(!reason.contains("kee"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        dir.read("journal.jsonl"),
        damaged,
        "nothing is reset or repaired"
    );

    // Syntax damage, too, and the message says where and what to do.
    lines[1] = "{\"v\":1,\"put\":".to_owned();
    dir.write("journal.jsonl", &(lines.join("\n") + "\n"));
    let message = dir.open_err().await.to_string();
    assert!(
        message.contains("journal.jsonl is corrupt at line 2: JSON cut short"),
        "{message}"
    );
}

#[tokio::test]
async fn a_corrupt_snapshot_stops_the_start_naming_state_json() {
    let dir = Dir::new();
    dir.with(&every_step()[..2]).await;
    let store = dir.open().await;
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    let good = dir.read("state.json");
    for damaged in [
        good[..good.len() / 2].to_owned(),
        good.replace("\"records\"", "\"recs\""),
        String::new(),
        "[]".to_owned(),
    ] {
        dir.write("state.json", &damaged);
        match dir.open_err().await {
            StateError::Corrupt { path, .. } => assert_eq!(path, dir.file("state.json")),
            other => panic!("{other:?}"),
        }
        assert_eq!(dir.read("state.json"), damaged);
    }
}

#[tokio::test]
async fn a_newer_version_is_refused_not_called_corrupt() {
    let dir = Dir::new();
    dir.with(&every_step()[..1]).await;
    let journal = dir.read("journal.jsonl");

    dir.write(
        "state.json",
        r#"{"version": 99, "records": [{"shape": "unknown to us"}], "extra": true}"#,
    );
    match dir.open_err().await {
        StateError::NewerVersion {
            path,
            found,
            supported,
        } => {
            assert_eq!(
                (path, found, supported),
                (dir.file("state.json"), 99, STATE_VERSION)
            );
        }
        other => panic!("{other:?}"),
    }
    std::fs::remove_file(dir.file("state.json")).unwrap_or_else(|e| panic!("{e}"));

    dir.write(
        "journal.jsonl",
        &format!("{journal}{{\"v\":2,\"rename\":{{}}}}\n{journal}"),
    );
    match FileStore::read_only(&dir.path) {
        Err(StateError::NewerVersion { path, found: 2, .. }) => {
            assert_eq!(path, dir.file("journal.jsonl"))
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_missing_directory_reads_as_empty() {
    let dir = Dir::new();
    assert_eq!(
        FileStore::read_only(&dir.path).unwrap_or_else(|e| panic!("{e}")),
        BTreeMap::new()
    );
    assert!(!dir.path.exists(), "read_only creates nothing");
}

/// The files hold the records' JSON and nothing else: the journal one entry per change, the
/// snapshot after a flush exactly the map.
#[tokio::test]
async fn the_files_hold_exactly_the_records_json() {
    let dir = Dir::new();
    let records = every_step();
    let store = dir.open().await;
    for r in &records {
        store.put(r.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    store
        .remove(&records[1].key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut want: Vec<Value> = records.iter().map(|r| json!({"v": 1, "put": r})).collect();
    want.push(json!({"v": 1, "remove": records[1].key}));
    let lines: Vec<Value> = dir
        .journal_lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(lines, want);

    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(dir.read("journal.jsonl"), "");
    let snapshot: Value =
        serde_json::from_str(&dir.read("state.json")).unwrap_or_else(|e| panic!("{e}"));
    let values: Vec<Value> = store.records().values().map(|r| json!(r)).collect();
    assert_eq!(values.len(), records.len() - 1);
    assert_eq!(snapshot, json!({"version": 1, "records": values}));
    drop(store);
    assert_eq!(dir.open().await.records().len(), records.len() - 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_journal_is_compacted_when_long_and_the_state_survives() {
    let dir = Dir::new();
    let store = dir.open().await;
    // 10 records, 1,500 updates: past max(1000, 2 x 10) lines the journal becomes a snapshot.
    let mut want = BTreeMap::new();
    for i in 0..1500 {
        let mut r = record(
            &format!("store_{}", i % 10),
            Step::Creating {
                rotation_id: format!("rot-{i}"),
                earlier: None,
            },
        );
        r.consecutive_failures = i;
        want.insert(r.key.clone(), r.clone());
        store.put(r).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let lines = dir.journal_lines().len();
    assert!(lines < 1000, "journal still has {lines} lines");
    let snapshot: Value =
        serde_json::from_str(&dir.read("state.json")).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(snapshot["records"].as_array().map(Vec::len), Some(10));
    assert_eq!(store.records(), want);
    assert!(!dir.file("state.json.tmp").exists());
    drop(store);
    assert_eq!(dir.open().await.records(), want);
}

#[tokio::test]
async fn a_crash_between_snapshot_rename_and_journal_truncation_reloads_the_same_state() {
    let dir = Dir::new();
    let records = every_step();
    let store = dir.open().await;
    for r in &records {
        store.put(r.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let mut later = records[3].clone();
    later.step = Step::Idle;
    store.put(later).await.unwrap_or_else(|e| panic!("{e}"));
    store
        .remove(&records[0].key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .remove(&records[0].key)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let want = store.records();
    drop(store);

    // What the compaction had renamed into place before the crash: every journal entry is
    // in the snapshot, and the journal was not yet emptied.
    let journal = dir.read("journal.jsonl");
    let values: Vec<&Record> = want.values().collect();
    dir.write(
        "state.json",
        &serde_json::to_string_pretty(&json!({"version": 1, "records": values}))
            .unwrap_or_default(),
    );
    assert_eq!(
        FileStore::read_only(&dir.path).unwrap_or_else(|e| panic!("{e}")),
        want
    );
    let store = dir.open().await;
    assert_eq!(store.records(), want);
    assert_eq!(dir.read("journal.jsonl"), journal);
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    drop(store);
    assert_eq!(dir.open().await.records(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_puts_land_and_share_fsyncs() {
    let dir = Dir::new();
    let store = Arc::new(dir.open().await);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000 {
        let store = store.clone();
        tasks.spawn(async move { store.put(record(&format!("store_{i:04}"), Step::Due)).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    assert_eq!(store.records().len(), 1000);
    let commits = store.commit_count();
    assert!(commits < 500, "{commits} fsyncs for 1,000 puts");
    assert_eq!(dir.journal_lines().len(), 1000);
    drop(store);
    assert_eq!(dir.open().await.records().len(), 1000);
}

#[tokio::test]
async fn read_only_beside_an_open_store_sees_what_it_acknowledged() {
    let dir = Dir::new();
    let records = every_step();
    let store = dir.open().await;
    for r in &records[..4] {
        store.put(r.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    for r in &records[4..] {
        store.put(r.clone()).await.unwrap_or_else(|e| panic!("{e}"));
    }
    let journal = dir.read("journal.jsonl");
    let snapshot = dir.read("state.json");
    assert_eq!(
        FileStore::read_only(&dir.path).unwrap_or_else(|e| panic!("{e}")),
        store.records()
    );
    assert_eq!(store.records(), by_key(&records));
    assert_eq!(
        (dir.read("journal.jsonl"), dir.read("state.json")),
        (journal, snapshot),
        "read_only writes nothing"
    );
    // And the lock is still ours.
    assert!(matches!(dir.open_err().await, StateError::Locked { .. }));
}

/// `status` reads while the daemon compacts: a snapshot and a journal from either side of a
/// compaction must never be combined (stale entries replayed over a newer snapshot would show
/// a record going back in time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_during_compactions_never_goes_back_in_time() {
    let dir = Dir::new();
    let store = dir.open().await;
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (path, stop) = (dir.path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen: BTreeMap<Key, u32> = BTreeMap::new();
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) {
                let records = FileStore::read_only(&path).unwrap_or_else(|e| panic!("{e}"));
                for (key, r) in records {
                    let before = seen.insert(key.clone(), r.consecutive_failures);
                    assert!(
                        before <= Some(r.consecutive_failures),
                        "{key} went from {before:?} to {}",
                        r.consecutive_failures
                    );
                }
                reads += 1;
            }
            reads
        })
    };
    // 500 keys: a snapshot slow enough to parse that reads overlap the compactions (one
    // every 1,000 puts), which is when a careless reader combines the wrong files.
    for i in 0..6000 {
        let mut r = record(&format!("store_{}", i % 500), Step::Due);
        r.consecutive_failures = i;
        store.put(r).await.unwrap_or_else(|e| panic!("{e}"));
    }
    stop.store(true, Ordering::Relaxed);
    let reads = reader
        .join()
        .unwrap_or_else(|_| panic!("the reader panicked"));
    assert!(reads > 10, "only {reads} reads");
    assert!(dir.journal_lines().len() < 1000, "no compaction happened");
}

/// The load of the issue: 10,000 resources, six steps each, 64 rotations at a time. A debug
/// build, so the time is an upper bound. `cargo test --test integration state_file::measure
/// -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, not a check"]
async fn measure_60000_puts_from_64_tasks() {
    let dir = Dir::new();
    let store = Arc::new(dir.open().await);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for task in 0..64 {
        let store = store.clone();
        tasks.spawn(async move {
            for resource in (task..10_000).step_by(64) {
                // due, creating, created, pushing, pushed, notified
                for step in every_step().into_iter().skip(1).take(6).map(|r| r.step) {
                    store
                        .put(record(&format!("store_{resource:05}"), step))
                        .await?;
                }
            }
            Ok::<(), StateError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let elapsed = started.elapsed();
    let commits = store.commit_count();
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let flushed = started.elapsed();
    assert_eq!(store.records().len(), 10_000);
    println!(
        "60,000 puts from 64 tasks: {elapsed:.2?} ({:.0} puts/s), {commits} journal fsyncs ({:.1} puts each); flush {:.2?}, snapshot {} KiB",
        60_000.0 / elapsed.as_secs_f64(),
        60_000.0 / commits as f64,
        flushed - elapsed,
        dir.read("state.json").len() / 1024,
    );
}

/// A lazy put is visible at once, is not undone by the commit of an older lazy put of the
/// same key, and reaches the disk with the next commit (or at drop).
#[tokio::test]
async fn lazy_puts_are_visible_at_once_kept_in_order_and_written() {
    let dir = Dir::new();
    let first = record("lazy", Step::Due);
    let second = record(
        "lazy",
        Step::Pushing {
            rotation_id: "rot-1".to_owned(),
            handle: "h".to_owned(),
            supersedes: None,
        },
    );
    {
        let store = dir.open().await;
        store
            .put_lazy(first.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.get(&first.key).as_ref(), Some(&first));
        store
            .put_lazy(second.clone())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        // A durable put of another key commits both lazy lines before it returns.
        store
            .put(record("other", Step::Idle))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(store.get(&second.key).as_ref(), Some(&second));
        let journal = std::fs::read_to_string(dir.path.join("journal.jsonl")).unwrap_or_default();
        assert_eq!(journal.lines().count(), 3, "{journal}");
        // And one only followed by the drop.
        store
            .put_lazy(record("last", Step::Idle))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let store = dir.open().await;
    assert_eq!(store.get(&second.key).as_ref(), Some(&second));
    assert!(store.get(&key("last")).is_some());
}

/// The first start with thousands of new resources records them in one commit, not one
/// fsync each.
#[tokio::test]
async fn put_all_commits_many_records_together() {
    let dir = Dir::new();
    let store = dir.open().await;
    let before = store.commit_count();
    let records: Vec<Record> = (0..2000)
        .map(|i| record(&format!("bulk-{i}"), Step::Idle))
        .collect();
    store
        .put_all(records.clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        store.commit_count() - before <= 3,
        "{} commits",
        store.commit_count() - before
    );
    assert_eq!(store.records().len(), 2000);
    // `visit` walks the same records, in key order, without a copy of the map.
    let mut visited = Vec::new();
    store.visit(&mut |r| visited.push(r.clone()));
    assert_eq!(visited, by_key(&records).into_values().collect::<Vec<_>>());
    drop(store);
    // The batch (~0.7 MB of lines) went out through the journal's buffer in many writes;
    // reopening replays every line intact.
    assert_eq!(dir.open().await.records(), by_key(&records));
}

// Issue 10, item 5: a symbolic link (or a hard link) placed in the state directory, by a
// provider program running as the service's user for instance, must never make a run (maybe
// as root) read or write another file through it.

const VICTIM: &str = "precious: not the state\n";

/// A file outside the state directory that a link in it points at.
fn victim(dir: &Dir) -> PathBuf {
    let path = dir.tmp.path().join("victim");
    std::fs::write(&path, VICTIM).unwrap_or_else(|e| panic!("{e}"));
    path
}

fn assert_refused_naming(err: &StateError, path: &Path, what: &str) {
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()) && message.contains(what),
        "wanted {path:?} and {what:?} in: {message}"
    );
}

#[tokio::test]
async fn a_link_in_place_of_a_state_file_is_refused_and_its_target_untouched() {
    for name in ["lock", "journal.jsonl", "state.json"] {
        let dir = Dir::new();
        dir.with(&every_step()[..2]).await;
        let store = dir.open().await;
        store.flush().await.unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        let victim = victim(&dir);
        std::fs::remove_file(dir.file(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        std::os::unix::fs::symlink(&victim, dir.file(name)).unwrap_or_else(|e| panic!("{e}"));

        let err = dir.open_err().await;
        assert_refused_naming(&err, &dir.file(name), "symbolic link");
        assert!(!err.is_usage(), "{err}");
        if name != "lock" {
            // `status` reads without the lock: it must not read through the link either.
            let err = FileStore::read_only(&dir.path)
                .err()
                .unwrap_or_else(|| panic!("{name}: read_only succeeded"));
            assert_refused_naming(&err, &dir.file(name), "symbolic link");
        }
        assert_eq!(
            std::fs::read_to_string(&victim).ok().as_deref(),
            Some(VICTIM)
        );
        assert!(
            std::fs::symlink_metadata(dir.file(name)).is_ok_and(|m| m.file_type().is_symlink()),
            "{name}: the link itself is left for the user to see"
        );
    }
}

/// `state.json.tmp` is removed at open and created anew (`O_EXCL`) by each compaction, so a
/// link there, even one placed while the store runs, is replaced, never written through.
#[tokio::test]
async fn a_link_at_the_temporary_snapshot_is_replaced_never_written_through() {
    let dir = Dir::new();
    dir.with(&every_step()[..2]).await;
    let victim = victim(&dir);
    std::os::unix::fs::symlink(&victim, dir.file("state.json.tmp"))
        .unwrap_or_else(|e| panic!("{e}"));
    let store = dir.open().await;
    assert!(!dir.file("state.json.tmp").exists());

    store
        .put(every_step()[3].clone())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&victim, dir.file("state.json.tmp"))
        .unwrap_or_else(|e| panic!("{e}"));
    // And at the snapshot itself: the compaction's rename replaces the link.
    std::os::unix::fs::symlink(&victim, dir.file("state.json")).unwrap_or_else(|e| panic!("{e}"));
    store.flush().await.unwrap_or_else(|e| panic!("{e}"));
    let want = store.records();
    drop(store);

    assert_eq!(
        std::fs::read_to_string(&victim).ok().as_deref(),
        Some(VICTIM)
    );
    assert!(
        std::fs::symlink_metadata(dir.file("state.json")).is_ok_and(|m| m.file_type().is_file())
    );
    assert!(!dir.file("state.json.tmp").exists());
    assert_eq!(dir.open().await.records(), want);
}

/// A hard link is a second name for another file: `lock` hard-linked to a file elsewhere
/// would be truncated by the open that writes the PID into it.
#[tokio::test]
async fn a_hard_link_in_place_of_a_state_file_is_refused_and_its_target_untouched() {
    for name in ["lock", "journal.jsonl"] {
        let dir = Dir::new();
        dir.with(&every_step()[..1]).await;
        let victim = victim(&dir);
        std::fs::remove_file(dir.file(name)).unwrap_or_else(|e| panic!("{e}"));
        std::fs::hard_link(&victim, dir.file(name)).unwrap_or_else(|e| panic!("{e}"));
        let err = dir.open_err().await;
        assert_refused_naming(&err, &dir.file(name), "hard links");
        assert_eq!(
            std::fs::read_to_string(&victim).ok().as_deref(),
            Some(VICTIM)
        );
    }
}

#[tokio::test]
async fn a_state_directory_that_is_a_link_or_a_file_is_refused() {
    // A link elsewhere: whoever made it would choose where the state goes.
    let dir = Dir::new();
    let elsewhere = dir.tmp.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&elsewhere, std::fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink(&elsewhere, &dir.path).unwrap_or_else(|e| panic!("{e}"));
    assert_refused_naming(&dir.open_err().await, &dir.path, "symbolic link");
    let err = FileStore::read_only(&dir.path)
        .err()
        .unwrap_or_else(|| panic!("read_only succeeded"));
    assert_refused_naming(&err, &dir.path, "symbolic link");
    assert_eq!(
        std::fs::read_dir(&elsewhere).map(Iterator::count).ok(),
        Some(0)
    );

    // A file.
    let dir = Dir::new();
    std::fs::write(&dir.path, VICTIM).unwrap_or_else(|e| panic!("{e}"));
    assert_refused_naming(&dir.open_err().await, &dir.path, "not a directory");
    assert_eq!(
        std::fs::read_to_string(&dir.path).ok().as_deref(),
        Some(VICTIM)
    );
}

/// The one link accepted: systemd's `StateDirectory=` under `DynamicUser=yes` makes
/// `/var/lib/NAME` a link to `private/NAME`, and `$STATE_DIRECTORY` names the link.
#[tokio::test]
async fn the_link_systemd_makes_for_a_dynamic_user_is_followed() {
    let dir = Dir::new();
    let private = dir.tmp.path().join("private");
    std::fs::create_dir_all(private.join("state")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(
        private.join("state"),
        std::fs::Permissions::from_mode(0o700),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::os::unix::fs::symlink("private/state", &dir.path).unwrap_or_else(|e| panic!("{e}"));
    let records = every_step();
    dir.with(&records).await;
    assert!(private.join("state/journal.jsonl").is_file());
    assert_eq!(dir.open().await.records(), by_key(&records));
    assert_eq!(
        FileStore::read_only(&dir.path).unwrap_or_else(|e| panic!("{e}")),
        by_key(&records)
    );
}

// Issue 10, item 4: a run as another user than the state directory's owner (root while the
// service is stopped) must not leave files the owner cannot open. These need root (to chown).

fn running_as_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to give files to another user");
    }
    root
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("{e}"));
}

/// What a directory holds, to show a refused open changed nothing.
fn listing(dir: &Path) -> Vec<(String, u32, u32, Vec<u8>)> {
    use std::os::unix::fs::MetadataExt;
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let meta = entry.metadata().unwrap_or_else(|e| panic!("{e}"));
            (
                entry.file_name().to_string_lossy().into_owned(),
                meta.uid(),
                meta.mode(),
                std::fs::read(entry.path()).unwrap_or_default(),
            )
        })
        .collect();
    entries.sort();
    entries
}

#[tokio::test]
async fn another_users_state_directory_is_refused_whole_but_read_for_status() {
    if !running_as_root() {
        return;
    }
    let dir = Dir::new();
    let records = every_step();
    dir.with(&records).await;
    chown(&dir.path, 65534);
    for entry in std::fs::read_dir(&dir.path).unwrap_or_else(|e| panic!("{e}")) {
        chown(&entry.unwrap_or_else(|e| panic!("{e}")).path(), 65534);
    }
    let before = listing(&dir.path);

    let err = dir.open_err().await;
    match &err {
        StateError::NotOwner {
            dir: refused,
            owner,
            euid,
        } => assert_eq!((refused, *owner, *euid), (&dir.path, 65534, 0)),
        other => panic!("{other:?}"),
    }
    assert!(err.is_usage());
    assert!(!err.is_fatal());
    assert_eq!(listing(&dir.path), before, "nothing in it changed");
    // `status` as root reads it: that changes nothing either.
    assert_eq!(
        FileStore::read_only(&dir.path).unwrap_or_else(|e| panic!("{e}")),
        by_key(&records)
    );
    assert_eq!(listing(&dir.path), before);
}

/// When the directory's own daemon runs, the refusal is `Locked` instead, which `run --once`
/// answers by handing its request to the daemon: a root `run --once` beside the service works.
#[tokio::test]
async fn another_users_directory_whose_daemon_runs_is_locked_not_refused() {
    if !running_as_root() {
        return;
    }
    let dir = Dir::new();
    let store = dir.open().await;
    chown(&dir.path, 65534);
    match dir.open_err().await {
        StateError::Locked { dir: locked, pid } => {
            assert_eq!((locked, pid), (dir.path.clone(), Some(std::process::id())));
        }
        other => panic!("{other:?}"),
    }
    drop(store);
    assert!(matches!(dir.open_err().await, StateError::NotOwner { .. }));
}

/// A file left by an earlier run as another user (root) in our own directory: refused with
/// the `chown` that fixes it, rather than a bare "permission denied".
#[tokio::test]
async fn a_state_file_owned_by_another_user_is_refused_naming_the_fix() {
    if !running_as_root() {
        return;
    }
    for name in ["lock", "journal.jsonl", "state.json"] {
        let dir = Dir::new();
        dir.with(&every_step()[..1]).await;
        let store = dir.open().await;
        store.flush().await.unwrap_or_else(|e| panic!("{e}"));
        drop(store);
        chown(&dir.file(name), 65534);
        let err = dir.open_err().await;
        assert_refused_naming(&err, &dir.file(name), "belongs to uid 65534");
        assert!(err.to_string().contains("chown 0 "), "{err}");
    }
}
