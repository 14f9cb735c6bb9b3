//! The rotation history, as data: one [`HistoryEntry`] per rotation event, what
//! `vercel-secret-rotator history` prints, and the [`HistoryFilter`] it reads with.
//!
//! Append-only and bounded: a store keeps the last [`HISTORY_LIMIT`] entries (oldest dropped).
//! Value-free like everything in the state: handles, ids, fingerprints and scrubbed error text,
//! each text field on one line and cut at [`TEXT_CAP`] characters.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::events::{EventKind, Trigger, one_line};

/// How many entries a store keeps: the oldest go first. At ~250 bytes an entry, ~25 MB.
pub const HISTORY_LIMIT: usize = 100_000;

/// The longest error or reason text kept, in characters.
pub const TEXT_CAP: usize = 500;

/// One rotation event of one (policy, resource).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub time: DateTime<Utc>,
    pub policy: String,
    pub resource: String,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotation_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<Trigger>,
    /// Of the values pushed: 32 bits of a SHA-256, never the values.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    /// The credential's handle (a user name, a key id): for retirements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handle: Option<String>,
    /// Scrubbed error text, one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why Vercel asked for the rotation (its request's `reason`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl HistoryEntry {
    /// An entry with only the fields every event has.
    pub fn new(time: DateTime<Utc>, policy: &str, resource: &str, event: EventKind) -> Self {
        HistoryEntry {
            time,
            policy: policy.to_owned(),
            resource: resource.to_owned(),
            event,
            rotation_id: None,
            trigger: None,
            fingerprint: None,
            handle: None,
            error: None,
            reason: None,
        }
    }

    /// Sets the error text: on one line, cut at [`TEXT_CAP`].
    pub fn with_error(mut self, error: &str) -> Self {
        self.error = Some(clip(error));
        self
    }

    /// Sets the reason text: on one line, cut at [`TEXT_CAP`].
    pub fn with_reason(mut self, reason: &str) -> Self {
        self.reason = Some(clip(reason));
        self
    }
}

fn clip(text: &str) -> String {
    let line = one_line(text);
    match line.char_indices().nth(TEXT_CAP) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.into_owned(),
    }
}

/// Which entries to read: all of them by default.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryFilter {
    /// `(policy, resource)`: entries of any of them (`None`: every resource of the policy).
    /// Empty: every policy.
    pub keys: Vec<(String, Option<String>)>,
    /// Entries at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl HistoryFilter {
    pub fn matches(&self, entry: &HistoryEntry) -> bool {
        let key = self.keys.is_empty()
            || self.keys.iter().any(|(policy, resource)| {
                *policy == entry.policy && resource.as_ref().is_none_or(|r| *r == entry.resource)
            });
        key && self.since.is_none_or(|since| entry.time >= since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(minute: i64, policy: &str, resource: &str) -> HistoryEntry {
        HistoryEntry::new(
            DateTime::from_timestamp(1_700_000_000 + minute * 60, 0).unwrap(),
            policy,
            resource,
            EventKind::Started,
        )
    }

    #[test]
    fn the_filter_selects_by_policy_resource_and_time() {
        let entries = [
            entry(0, "orders", "a"),
            entry(1, "orders", "b"),
            entry(2, "cache", "a"),
            entry(3, "orders", "a"),
        ];
        let pick = |filter: &HistoryFilter| -> Vec<(i64, String, String)> {
            entries
                .iter()
                .filter(|e| filter.matches(e))
                .map(|e| {
                    (
                        (e.time.timestamp() - 1_700_000_000) / 60,
                        e.policy.clone(),
                        e.resource.clone(),
                    )
                })
                .collect()
        };
        let key = |p: &str, r: Option<&str>| (p.to_owned(), r.map(str::to_owned));
        assert_eq!(pick(&HistoryFilter::default()).len(), 4);
        let orders = HistoryFilter {
            keys: vec![key("orders", None)],
            since: None,
        };
        assert_eq!(
            pick(&orders).iter().map(|e| e.0).collect::<Vec<_>>(),
            [0, 1, 3]
        );
        let orders_a = HistoryFilter {
            keys: vec![key("orders", Some("a"))],
            since: None,
        };
        assert_eq!(
            pick(&orders_a).iter().map(|e| e.0).collect::<Vec<_>>(),
            [0, 3]
        );
        let either = HistoryFilter {
            keys: vec![key("orders", Some("b")), key("cache", None)],
            since: None,
        };
        assert_eq!(
            pick(&either).iter().map(|e| e.0).collect::<Vec<_>>(),
            [1, 2]
        );
        let recent = HistoryFilter {
            keys: vec![key("orders", None)],
            since: Some(entries[1].time),
        };
        assert_eq!(
            pick(&recent).iter().map(|e| e.0).collect::<Vec<_>>(),
            [1, 3]
        );
    }

    #[test]
    fn text_is_one_line_and_capped() {
        let e = entry(0, "p", "r")
            .with_error("line one\nline two")
            .with_reason(&"x".repeat(TEXT_CAP + 10));
        assert_eq!(e.error.as_deref(), Some("line one line two"));
        let reason = e.reason.unwrap_or_default();
        assert_eq!(reason.chars().count(), TEXT_CAP + 3);
        assert!(reason.ends_with("..."));
    }

    /// Absent fields are left out of a line: most events have half of them.
    #[test]
    fn a_line_holds_only_what_the_event_has() {
        let line = serde_json::to_string(&entry(0, "p", "r")).unwrap();
        assert_eq!(
            line,
            r#"{"time":"2023-11-14T22:13:20Z","policy":"p","resource":"r","event":"started"}"#
        );
        let back: HistoryEntry = serde_json::from_str(&line).unwrap();
        assert_eq!(back, entry(0, "p", "r"));
    }
}
