//! The rotation events an operator sees: each kind's name and its stable `message_id`, what
//! started a turn ([`Trigger`]), and [`rotation_event!`], the one way such an event is logged.
//!
//! Every event is one log line carrying `message_id` (a fixed 128-bit id in 32 lowercase hex
//! digits, as journald's `MESSAGE_ID=` wants, so `journalctl MESSAGE_ID=...` finds every
//! failed rotation however its text changes), `event` (the kind's name) and the structured
//! fields `policy`, `resource`, `rotation_id`, `trigger`, `fingerprint`, `error` where they
//! apply. No field or message spans lines ([`one_line`]). The ids are part of the interface:
//! never change one; a new kind gets a new id.
//!
//! A leaf: imports nothing of the crate, so the protocol, the state's history and the server
//! all name events the same way.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

/// A kind of rotation event. Its [`EventKind::name`] is what logs, the history and
/// `history --json` show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// `create` is asked of the provider: a rotation (or the redo of an unfinished one)
    /// begins under its rotation id.
    Started,
    /// Vercel answered the push with a 2xx: it holds the new values.
    Pushed,
    /// The rotation is done: pushed, and the redeploy reminder sent.
    Succeeded,
    /// An attempt failed (transient: retried later; permanent: the key stops).
    Failed,
    /// An old credential was retired after its grace period.
    Retired,
    /// Retiring an old credential failed; it is retried with backoff.
    RetireFailed,
    /// A due rotation waits: the other user of a pair is still in its grace period.
    HeldBack,
    /// Vercel asked for the rotation (the Partner API's rotate request).
    RequestedByVercel,
    /// The reminder that connected projects keep the old values until redeployed.
    RedeployReminder,
}

impl EventKind {
    /// Every kind, in the order a rotation meets them.
    pub const ALL: [EventKind; 9] = [
        EventKind::RequestedByVercel,
        EventKind::Started,
        EventKind::Pushed,
        EventKind::RedeployReminder,
        EventKind::Succeeded,
        EventKind::Failed,
        EventKind::HeldBack,
        EventKind::Retired,
        EventKind::RetireFailed,
    ];

    pub fn name(self) -> &'static str {
        match self {
            EventKind::Started => "started",
            EventKind::Pushed => "pushed",
            EventKind::Succeeded => "succeeded",
            EventKind::Failed => "failed",
            EventKind::Retired => "retired",
            EventKind::RetireFailed => "retire_failed",
            EventKind::HeldBack => "held_back",
            EventKind::RequestedByVercel => "requested_by_vercel",
            EventKind::RedeployReminder => "redeploy_reminder",
        }
    }

    /// The journald `MESSAGE_ID` of this kind: fixed for good (drawn once at random).
    pub fn message_id(self) -> &'static str {
        match self {
            EventKind::Started => "22c1b6cc1fbb416d9bf2d53d4ce8e0ca",
            EventKind::Pushed => "ecab69de273642208a691f24808fc636",
            EventKind::Succeeded => "dc5a6fcbff38470cb4f433a9744221e1",
            EventKind::Failed => "84bd5488614549f882cb0fe0b2934c5b",
            EventKind::Retired => "376dccf2d01241a1b1292694985cddf2",
            EventKind::RetireFailed => "d1d59a7311ad499690d74d6d16e87a15",
            EventKind::HeldBack => "ecfbd9dd3b6a457db4a4b243a06831b2",
            EventKind::RequestedByVercel => "4fdb3275845644f683fb8b5d02e36cd7",
            EventKind::RedeployReminder => "e6e5e91b4c704464ae48da6a01225bb1",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What started a turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The schedule's due time came (or a restart found it due).
    #[default]
    Schedule,
    /// `run --once` (direct or handed to the daemon).
    Manual,
    /// Vercel's rotate request.
    Vercel,
    /// The retry after a failed attempt.
    Retry,
}

impl Trigger {
    /// The name the history and logs use.
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
            Trigger::Vercel => "vercel",
            Trigger::Retry => "retry",
        }
    }
}

impl std::fmt::Display for Trigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How loud an event is, for an operator who alerts on the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Needs a human: a permanent failure, a stopped policy, a retirement failing past its
    /// retries, state that cannot be written.
    Error,
    /// Degraded, and retrying by itself.
    Warn,
    /// Progress and success, the redeploy reminder included.
    Info,
}

/// `text` on one line: line breaks and other control characters become spaces, so a
/// multi-line error (a program's stderr, say) stays one journald entry and one JSON string
/// without embedded newlines. Borrowed when there is nothing to change.
pub fn one_line(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.trim().chars() {
        let c = if c.is_control() { ' ' } else { c };
        // A CR LF pair (or a blank line) becomes one space, not several.
        if c == ' ' && last_space {
            continue;
        }
        last_space = c == ' ';
        out.push(c);
    }
    Cow::Owned(out)
}

/// Logs one rotation event at `severity` with its kind's `message_id` and `event` name:
///
/// ```ignore
/// rotation_event!(Severity::Info, EventKind::Pushed, policy = %p, resource = %r, "pushed");
/// ```
///
/// The rest is what `tracing`'s macros take (fields, then the message). tracing fixes a
/// call site's level at compile time, so each severity is its own call site.
macro_rules! rotation_event {
    ($severity:expr, $kind:expr, $($rest:tt)+) => {{
        let kind: $crate::events::EventKind = $kind;
        match $severity {
            $crate::events::Severity::Error => ::tracing::error!(
                message_id = kind.message_id(), event = kind.name(), $($rest)+
            ),
            $crate::events::Severity::Warn => ::tracing::warn!(
                message_id = kind.message_id(), event = kind.name(), $($rest)+
            ),
            $crate::events::Severity::Info => ::tracing::info!(
                message_id = kind.message_id(), event = kind.name(), $($rest)+
            ),
        }
    }};
}

pub(crate) use rotation_event;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        let mut seen = std::collections::BTreeSet::new();
        for kind in EventKind::ALL {
            let id = kind.message_id();
            assert_eq!(id.len(), 32, "{kind}");
            assert!(
                id.chars()
                    .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c)),
                "{kind}: {id}"
            );
            assert!(seen.insert(id), "{kind}: id used twice");
        }
        let names: std::collections::BTreeSet<_> =
            EventKind::ALL.iter().map(|k| k.name()).collect();
        assert_eq!(names.len(), EventKind::ALL.len());
    }

    #[test]
    fn names_are_what_serde_writes() {
        for kind in EventKind::ALL {
            assert_eq!(
                serde_json::to_string(&kind).unwrap(),
                format!("\"{}\"", kind.name())
            );
        }
        for trigger in [
            Trigger::Schedule,
            Trigger::Manual,
            Trigger::Vercel,
            Trigger::Retry,
        ] {
            assert_eq!(
                serde_json::to_string(&trigger).unwrap(),
                format!("\"{trigger}\"")
            );
        }
    }

    #[test]
    fn one_line_flattens_control_characters() {
        let cases = [
            ("plain text", "plain text"),
            ("a\nb", "a b"),
            ("a\r\nb\n\nc", "a b c"),
            ("tab\there", "tab here"),
            ("\nleading and trailing\n", "leading and trailing"),
        ];
        for (input, want) in cases {
            assert_eq!(one_line(input), want, "{input:?}");
        }
        assert!(matches!(one_line("fine"), Cow::Borrowed(_)));
    }
}
