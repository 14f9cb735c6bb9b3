//! The on-disk format: the journal's lines and the snapshot, encoded and decoded strictly
//! (see the store's head comment for the layout), and loading them into the records.
//!
//! Errors never quote the files' content: only serde's category and position.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::error::Category;

use super::dir::{Access, StateDir, io_error};
use super::{JOURNAL, Records, SNAPSHOT};
use crate::state::{Key, Record, STATE_VERSION, StateError};

/// One journal line as written. `v` comes first so a reader sees the version at once.
#[derive(Serialize)]
pub(super) struct EntryOut<'a> {
    v: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    put: Option<&'a Record>,
    #[serde(skip_serializing_if = "Option::is_none")]
    remove: Option<&'a Key>,
}

impl<'a> EntryOut<'a> {
    pub(super) fn put(record: &'a Record) -> EntryOut<'a> {
        EntryOut {
            v: STATE_VERSION,
            put: Some(record),
            remove: None,
        }
    }

    pub(super) fn remove(key: &'a Key) -> EntryOut<'a> {
        EntryOut {
            v: STATE_VERSION,
            put: None,
            remove: Some(key),
        }
    }
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
pub(super) struct SnapshotOut<'a> {
    version: u32,
    records: Vec<&'a Record>,
}

impl<'a> SnapshotOut<'a> {
    pub(super) fn new(records: Vec<&'a Record>) -> SnapshotOut<'a> {
        SnapshotOut {
            version: STATE_VERSION,
            records,
        }
    }
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

/// What a load found on disk.
pub(super) struct Loaded {
    pub(super) records: Records,
    /// Complete lines in the journal: the compaction trigger counts them.
    pub(super) journal_lines: usize,
    /// Bytes of the journal up to and including its last `\n`.
    pub(super) journal_complete: u64,
    /// Bytes read from the journal: more than `journal_complete` when the last line has no
    /// `\n` (cut short by a crash, or being written while `read_only` reads).
    pub(super) journal_read: u64,
}

/// Loads the snapshot and replays the journal over it. `journal`: the journal already open
/// (the store keeps appending to it); `None` opens it to read (`status`).
pub(super) fn load(dir: &StateDir, journal: Option<&File>) -> Result<Loaded, StateError> {
    // 100,000 records of a few policies and installations share those names.
    crate::intern::interning(|| load_records(dir, journal))
}

fn load_records(dir: &StateDir, journal: Option<&File>) -> Result<Loaded, StateError> {
    let snapshot_path = dir.file_path(SNAPSHOT);
    let mut records = match dir.open(SNAPSHOT, Access::Read)? {
        Some(file) => parse_snapshot(&snapshot_path, &read_all(&file, &snapshot_path)?)?,
        None => Records::new(),
    };
    let journal_path = dir.file_path(JOURNAL);
    let bytes = match journal {
        Some(file) => read_all(file, &journal_path)?,
        None => match dir.open(JOURNAL, Access::Read)? {
            Some(file) => read_all(&file, &journal_path)?,
            None => Vec::new(),
        },
    };
    let (journal_lines, journal_complete) = replay(&journal_path, &bytes, &mut records)?;
    Ok(Loaded {
        records,
        journal_lines,
        journal_complete: journal_complete as u64,
        journal_read: bytes.len() as u64,
    })
}

fn read_all(mut file: &File, path: &Path) -> Result<Vec<u8>, StateError> {
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io_error(path))?;
    Ok(bytes)
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
pub(super) fn json_reason(e: &serde_json::Error) -> String {
    let what = match e.classify() {
        Category::Syntax => "not valid JSON",
        Category::Eof => "JSON cut short",
        Category::Data => "valid JSON but not the state format",
        Category::Io => "unreadable",
    };
    format!("{what} (column {})", e.column())
}

#[cfg(test)]
pub(super) mod tests {
    use chrono::{TimeZone, Utc};

    use super::*;
    use crate::state::Step;

    /// A record of policy `db` for the store's tests, at a fixed time.
    pub(in crate::state::file) fn record(resource: &str, step: Step) -> Record {
        let at = Utc
            .with_ymd_and_hms(2025, 1, 2, 3, 4, 5)
            .single()
            .unwrap_or_default();
        let mut record = Record::new(Key::new("db", resource), "acme".to_owned(), at, at);
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
}
