//! `history`: past rotation events from the state's history ([`crate::state::history`]), as
//! a table or JSON, filtered by `--policy NAME[/RESOURCE]` and `--since DURATION`. Reads the
//! history file without the lock, so it works while the daemon runs.

use std::io::Write;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::events::{EventKind, Trigger};
use crate::jobs::Selector;
use crate::state::{self, HistoryEntry, HistoryFilter, StateError};

/// `history --json` prints an array of these: every key present, `null` when the event has
/// no such thing, so a script need not test for missing keys.
#[derive(Serialize)]
struct JsonEntry<'a> {
    time: DateTime<Utc>,
    policy: &'a str,
    resource: &'a str,
    event: EventKind,
    rotation_id: Option<&'a str>,
    trigger: Option<Trigger>,
    fingerprint: Option<&'a str>,
    handle: Option<&'a str>,
    error: Option<&'a str>,
    reason: Option<&'a str>,
}

impl<'a> From<&'a HistoryEntry> for JsonEntry<'a> {
    fn from(e: &'a HistoryEntry) -> Self {
        JsonEntry {
            time: e.time,
            policy: &e.policy,
            resource: &e.resource,
            event: e.event,
            rotation_id: e.rotation_id.as_deref(),
            trigger: e.trigger,
            fingerprint: e.fingerprint.as_deref(),
            handle: e.handle.as_deref(),
            error: e.error.as_deref(),
            reason: e.reason.as_deref(),
        }
    }
}

/// The filter of `--policy` selectors (any of them) and `--since` (from `now`).
pub fn filter(
    selectors: &[Selector],
    since: Option<std::time::Duration>,
    now: DateTime<Utc>,
) -> HistoryFilter {
    HistoryFilter {
        keys: selectors
            .iter()
            .map(|s| (s.policy.clone(), s.resource.clone()))
            .collect(),
        since: since.map(|d| {
            chrono::TimeDelta::from_std(d)
                .ok()
                .and_then(|d| now.checked_sub_signed(d))
                .unwrap_or(DateTime::<Utc>::MIN_UTC)
        }),
    }
}

/// Reads the entries `filter` selects, oldest first.
pub fn read(config: &Config, filter: &HistoryFilter) -> Result<Vec<HistoryEntry>, StateError> {
    state::read_history(&config.state, filter)
}

/// Prints `entries` as a table (oldest first) or as a JSON array.
pub fn print(out: &mut impl Write, entries: &[HistoryEntry], json: bool) -> std::io::Result<()> {
    if json {
        let entries: Vec<JsonEntry<'_>> = entries.iter().map(JsonEntry::from).collect();
        // `From` keeps an I/O error's kind (a closed pipe stays BrokenPipe).
        serde_json::to_writer_pretty(&mut *out, &entries).map_err(std::io::Error::from)?;
        return writeln!(out);
    }
    let header = [
        "TIME",
        "POLICY",
        "RESOURCE",
        "EVENT",
        "TRIGGER",
        "ROTATION ID",
        "FINGERPRINT",
        "DETAIL",
    ];
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    let rows: Vec<[String; 8]> = entries
        .iter()
        .map(|e| {
            let detail = [
                e.handle.as_deref().map(|h| format!("handle {h}")),
                e.reason.as_deref().map(|r| format!("reason: {r}")),
                e.error.clone(),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join("; ");
            [
                e.time.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
                e.policy.clone(),
                e.resource.clone(),
                e.event.name().to_owned(),
                dash(e.trigger.map(Trigger::as_str)),
                dash(e.rotation_id.as_deref()),
                dash(e.fingerprint.as_deref()),
                if detail.is_empty() {
                    "-".into()
                } else {
                    detail
                },
            ]
        })
        .collect();
    if rows.is_empty() {
        return writeln!(out, "no rotation events recorded (for this selection)");
    }
    crate::table::write(out, header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_counts_back_from_now() {
        let now = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let f = filter(&[], Some(std::time::Duration::from_secs(3600)), now);
        assert_eq!(f.since, Some(now - chrono::TimeDelta::hours(1)));
        // Further back than time goes: everything.
        let f = filter(&[], Some(std::time::Duration::MAX), now);
        assert_eq!(f.since, Some(DateTime::<Utc>::MIN_UTC));
        let selectors = ["orders/store_a".parse().unwrap(), "cache".parse().unwrap()];
        let f = filter(&selectors, None, now);
        assert_eq!(
            f.keys,
            [
                ("orders".to_owned(), Some("store_a".to_owned())),
                ("cache".to_owned(), None)
            ]
        );
    }

    #[test]
    fn the_table_says_what_each_event_was() {
        let time = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap();
        let mut retired = HistoryEntry::new(time, "p", "r", EventKind::Retired);
        retired.handle = Some("user_b".into());
        retired.trigger = Some(Trigger::Schedule);
        let failed = HistoryEntry::new(time, "p", "r", EventKind::Failed).with_error("boom");
        let mut out = Vec::new();
        print(&mut out, &[retired, failed], false).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("TIME"), "{text}");
        assert!(
            lines[1].contains("retired")
                && lines[1].contains("schedule")
                && lines[1].ends_with("handle user_b"),
            "{text}"
        );
        assert!(
            lines[2].contains("failed") && lines[2].ends_with("boom"),
            "{text}"
        );

        let mut out = Vec::new();
        print(&mut out, &[], false).unwrap();
        assert!(
            String::from_utf8(out)
                .unwrap()
                .starts_with("no rotation events")
        );
    }
}
