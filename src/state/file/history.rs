//! The history file, `history.jsonl` in the state directory: one
//! [`HistoryEntry`](crate::state::HistoryEntry) per line, oldest first.
//!
//! ```text
//! history.jsonl       {"time":"...","policy":"...","resource":"...","event":"pushed",...}\n
//! history.jsonl.tmp   a trim in progress (or cut short by a crash: removed at open)
//! ```
//!
//! Appended by the store's writer thread, in the batch that commits the journal (so a burst
//! of events shares its fsyncs), never rewritten per append. It is bounded: once it holds half
//! again as many lines as the limit, the newest `limit` lines are copied (streamed, never held
//! whole) into `history.jsonl.tmp`, which replaces it atomically (`StateDir::replace`), so the
//! cost of trimming is spread over `limit / 2` appends. Opened like every state file
//! (`dir.rs`: relative to the directory, never through a link, owner-only, checked once open).
//!
//! The history matters less than the records: a failed append is logged, cut back and
//! dropped, and never fails or stops a rotation. A reader skips a line it cannot parse (a
//! newer build's, or damage) and the final one while it is being written.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::PathBuf;

use super::dir::{Access, StateDir, io_error};
use crate::state::{HistoryEntry, HistoryFilter, StateError};

pub(super) const HISTORY: &str = "history.jsonl";
pub(super) const HISTORY_TMP: &str = "history.jsonl.tmp";

const BUFFER: usize = 64 * 1024;

/// The writer's handle on the history file.
pub(super) struct HistoryFile {
    file: File,
    path: PathBuf,
    /// Bytes that hold complete lines: where a failed append is cut back to.
    len: u64,
    lines: usize,
    /// The entries kept; the file is trimmed to these once it holds half again as many.
    limit: usize,
}

impl HistoryFile {
    /// Opens (creating it 0600) the history file, counts its lines and cuts off a last line
    /// a crash left unfinished; removes a trim's leftover temporary file.
    pub(super) fn open(dir: &StateDir, limit: usize) -> Result<HistoryFile, StateError> {
        let path = dir.file_path(HISTORY);
        dir.remove(HISTORY_TMP)?;
        let Some(mut file) = dir.open(HISTORY, Access::Append)? else {
            return Err(io_error(&path)(io::ErrorKind::NotFound.into()));
        };
        let (lines, complete, total) = count_lines(&mut file).map_err(io_error(&path))?;
        if total > complete {
            file.set_len(complete)
                .and_then(|()| file.sync_data())
                .map_err(io_error(&path))?;
        }
        Ok(HistoryFile {
            file,
            path,
            len: complete,
            lines,
            limit: limit.max(1),
        })
    }

    /// Appends `entries`, one line each, and makes them durable; trims the file when due.
    /// On a failed write, what was written of them is cut off again.
    pub(super) fn append(&mut self, dir: &StateDir, entries: &[HistoryEntry]) -> io::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut out = BufWriter::with_capacity(BUFFER, &self.file);
        let mut bytes = 0u64;
        let mut line = Vec::new();
        let written = entries.iter().try_for_each(|entry| {
            line.clear();
            serde_json::to_writer(&mut line, entry)?;
            line.push(b'\n');
            bytes += line.len() as u64;
            out.write_all(&line)
        });
        let written = written.and_then(|()| out.flush());
        // Never flushed again on drop: after an error, what is buffered must not follow.
        let _ = out.into_parts();
        if let Err(e) = written.and_then(|()| self.file.sync_data()) {
            // Best effort: the next append must start on a line of its own.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += bytes;
        self.lines += entries.len();
        if self.lines > self.limit + self.limit / 2 {
            self.trim(dir).map_err(io::Error::other)?;
        }
        Ok(())
    }

    /// Replaces the file with its newest `limit` lines.
    fn trim(&mut self, dir: &StateDir) -> Result<(), StateError> {
        let drop_lines = self.lines.saturating_sub(self.limit);
        let mut source = self.file.try_clone().map_err(io_error(&self.path))?;
        let start = offset_of_line(&mut source, drop_lines).map_err(io_error(&self.path))?;
        source
            .seek(SeekFrom::Start(start))
            .map_err(io_error(&self.path))?;
        let mut kept = (&mut source).take(self.len - start);
        dir.replace(HISTORY, HISTORY_TMP, |out| {
            io::copy(&mut kept, out).map(drop)
        })?;
        // The old file is gone from the directory: append to the new one from now on.
        let Some(file) = dir.open(HISTORY, Access::Append)? else {
            return Err(io_error(&self.path)(io::ErrorKind::NotFound.into()));
        };
        self.file = file;
        self.len -= start;
        self.lines -= drop_lines;
        Ok(())
    }
}

/// Lines in `file` (from its start), the end of the last complete one, and its length.
fn count_lines(file: &mut File) -> io::Result<(usize, u64, u64)> {
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(BUFFER, file);
    let (mut lines, mut complete, mut total) = (0usize, 0u64, 0u64);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok((lines, complete, total));
        }
        for (i, byte) in chunk.iter().enumerate() {
            if *byte == b'\n' {
                lines += 1;
                complete = total + i as u64 + 1;
            }
        }
        let n = chunk.len();
        total += n as u64;
        reader.consume(n);
    }
}

/// The byte offset where line `n` (0-based) starts.
fn offset_of_line(file: &mut File, n: usize) -> io::Result<u64> {
    if n == 0 {
        return Ok(0);
    }
    file.seek(SeekFrom::Start(0))?;
    let mut reader = BufReader::with_capacity(BUFFER, file);
    let (mut seen, mut offset) = (0usize, 0u64);
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(offset);
        }
        for (i, byte) in chunk.iter().enumerate() {
            if *byte == b'\n' {
                seen += 1;
                if seen == n {
                    return Ok(offset + i as u64 + 1);
                }
            }
        }
        let len = chunk.len();
        offset += len as u64;
        reader.consume(len);
    }
}

/// The entries `filter` selects among the newest `limit` of the file, oldest first. A
/// missing file is an empty history. Lines that do not parse are skipped (counted in the
/// second value), as is a last line still being written.
pub(super) fn read(
    dir: &StateDir,
    filter: &HistoryFilter,
    limit: usize,
) -> Result<(Vec<HistoryEntry>, usize), StateError> {
    let path = dir.file_path(HISTORY);
    let Some(mut file) = dir.open(HISTORY, Access::Read)? else {
        return Ok((Vec::new(), 0));
    };
    // The file may hold more than `limit` lines (up to the next trim): skip the oldest.
    let (lines, complete, _) = count_lines(&mut file).map_err(io_error(&path))?;
    file.seek(SeekFrom::Start(0)).map_err(io_error(&path))?;
    let reader = BufReader::with_capacity(BUFFER, file.take(complete));
    let mut skipped = 0;
    let mut selected = Vec::new();
    for line in reader.split(b'\n').skip(lines.saturating_sub(limit)) {
        let line = line.map_err(io_error(&path))?;
        match serde_json::from_slice::<HistoryEntry>(&line) {
            Ok(entry) if filter.matches(&entry) => selected.push(entry),
            Ok(_) => {}
            Err(_) => skipped += 1,
        }
    }
    Ok((selected, skipped))
}

#[cfg(test)]
mod tests {
    use chrono::{DateTime, Utc};

    use super::*;
    use crate::events::EventKind;

    fn entry(i: i64) -> HistoryEntry {
        HistoryEntry::new(
            DateTime::<Utc>::from_timestamp(1_700_000_000 + i, 0).unwrap(),
            "p",
            &format!("r{i}"),
            EventKind::Pushed,
        )
    }

    fn resources(entries: &[HistoryEntry]) -> Vec<String> {
        entries.iter().map(|e| e.resource.clone()).collect()
    }

    fn open_dir(tmp: &tempfile::TempDir) -> StateDir {
        StateDir::open_for_writing(&tmp.path().join("state")).unwrap()
    }

    #[test]
    fn appends_survive_a_reopen_and_the_file_stays_bounded() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(&tmp);
        let mut file = HistoryFile::open(&dir, 10).unwrap();
        for i in 0..14 {
            file.append(&dir, &[entry(i)]).unwrap();
        }
        // 14 lines: under the trim threshold (15), so nothing was dropped from the file...
        assert_eq!(file.lines, 14);
        // ...but a reader sees only the newest 10.
        let (all, skipped) = read(&dir, &HistoryFilter::default(), 10).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(resources(&all).first().map(String::as_str), Some("r4"));
        assert_eq!(all.len(), 10);

        // The 16th line trims the file to the newest 10, and appends go on after it.
        file.append(&dir, &[entry(14), entry(15)]).unwrap();
        assert_eq!(file.lines, 10);
        file.append(&dir, &[entry(16)]).unwrap();
        drop(file);
        let text = std::fs::read_to_string(tmp.path().join("state").join(HISTORY)).unwrap();
        assert_eq!(text.lines().count(), 11);
        let file = HistoryFile::open(&dir, 10).unwrap();
        assert_eq!(file.lines, 11);
        let (all, _) = read(&dir, &HistoryFilter::default(), 10).unwrap();
        assert_eq!(
            resources(&all),
            (7..17).map(|i| format!("r{i}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_line_cut_short_is_ignored_then_cut_off() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(&tmp);
        let mut file = HistoryFile::open(&dir, 100).unwrap();
        file.append(&dir, &[entry(0), entry(1)]).unwrap();
        drop(file);
        let path = tmp.path().join("state").join(HISTORY);
        let mut raw = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        raw.write_all(br#"{"time":"2023-11-"#).unwrap();
        drop(raw);
        let (all, skipped) = read(&dir, &HistoryFilter::default(), 100).unwrap();
        assert_eq!(
            (resources(&all), skipped),
            (vec!["r0".into(), "r1".into()], 0)
        );

        let mut file = HistoryFile::open(&dir, 100).unwrap();
        file.append(&dir, &[entry(2)]).unwrap();
        let (all, skipped) = read(&dir, &HistoryFilter::default(), 100).unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(resources(&all), ["r0", "r1", "r2"]);
    }

    #[test]
    fn a_damaged_line_is_skipped_not_fatal() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(&tmp);
        let mut file = HistoryFile::open(&dir, 100).unwrap();
        file.append(&dir, &[entry(0)]).unwrap();
        drop(file);
        let path = tmp.path().join("state").join(HISTORY);
        let mut raw = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        raw.write_all(b"not json\n").unwrap();
        drop(raw);
        let mut file = HistoryFile::open(&dir, 100).unwrap();
        file.append(&dir, &[entry(1)]).unwrap();
        let (all, skipped) = read(&dir, &HistoryFilter::default(), 100).unwrap();
        assert_eq!(
            (resources(&all), skipped),
            (vec!["r0".into(), "r1".into()], 1)
        );
    }

    #[test]
    fn the_file_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = open_dir(&tmp);
        let mut file = HistoryFile::open(&dir, 2).unwrap();
        for i in 0..5 {
            // Past a trim too: the replacement is made owner-only as well.
            file.append(&dir, &[entry(i)]).unwrap();
        }
        let mode = std::fs::metadata(tmp.path().join("state").join(HISTORY))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
