//! The store's own tests: group commit and the writer's failure policy.

use std::time::Instant;

use super::*;
use crate::error::Classify;
use crate::state::Step;

use super::format::tests::record;

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

/// A store whose journal handle cannot write (opened read-only) stands in for a full
/// disk on which the failed write cannot be cut back either: the journal's content is
/// then unknown, and the store must say so (issue 10, item 6) instead of failing every
/// later change with a retryable error while the daemon looks alive.
#[test]
fn a_failed_write_that_cannot_be_cut_back_stops_the_store_and_says_why() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let store = runtime.block_on(FileStore::open(&state)).unwrap();
    runtime
        .block_on(store.put(record("a", Step::Idle)))
        .unwrap();
    assert_eq!(store.fatal(), None);
    drop(store);

    let journal_path = state.join(JOURNAL);
    let len = std::fs::metadata(&journal_path).unwrap().len();
    let dir = StateDir::open_for_writing(&state).unwrap();
    let lock = dir.take_lock().unwrap();
    let journal = File::open(&journal_path).unwrap();
    let loaded = format::load(&dir, Some(&journal)).unwrap();
    let inventory = Inventory::open(&dir).unwrap();
    let requests = Requests::open(&dir).unwrap();
    let history = HistoryFile::open(&dir, HISTORY_LIMIT).unwrap();
    let store = start(dir, lock, journal, loaded, inventory, requests, history).unwrap();

    match runtime.block_on(store.put(record("b", Step::Due))) {
        Err(StateError::Io { path, .. }) => assert_eq!(path, journal_path),
        other => panic!("{other:?}"),
    }
    // Not applied; the reason is there as soon as the failed change's caller hears.
    assert_eq!(store.records().len(), 1);
    let reason = store.fatal().unwrap_or_else(|| panic!("no fatal reason"));
    assert!(reason.contains("journal.jsonl"), "{reason}");
    assert!(reason.contains("cutting it back failed too"), "{reason}");

    // Every later change fails with the fatal kind, never a transient one.
    let later = [
        runtime.block_on(store.put(record("c", Step::Due))),
        runtime.block_on(store.put_all(vec![record("d", Step::Due)])),
        runtime.block_on(store.remove(&record("a", Step::Idle).key)),
        runtime.block_on(store.flush()),
        runtime.block_on(store.put(record("e", Step::Due))),
    ];
    for result in later {
        match result {
            Err(e) => {
                assert!(e.is_fatal(), "{e:?}");
                assert!(!e.is_transient(), "{e:?}");
                assert!(!e.is_usage(), "{e:?}");
            }
            Ok(()) => panic!("a change was accepted after the writer stopped"),
        }
    }
    assert_eq!(store.fatal(), Some(reason));
    assert_eq!(std::fs::metadata(&journal_path).unwrap().len(), len);
}
