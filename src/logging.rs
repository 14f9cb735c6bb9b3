//! Logging set-up: tracing to stderr, text for people or JSON for machines, level from
//! `RUST_LOG` (default `info`); under systemd, straight to journald.
//!
//! When `JOURNAL_STREAM` names the file stderr is (systemd connected stderr to the journal),
//! events go to journald natively instead, each field its own journal field, upper-cased
//! (`MESSAGE_ID`, `POLICY`, `RESOURCE`, `ROTATION_ID`, ...), so `journalctl MESSAGE_ID=...`
//! finds every event of a kind ([`crate::events`]). stderr is then left alone: the same line
//! twice in the journal helps nobody. If the journal's socket cannot be reached, logging stays
//! on stderr.
//!
//! Nothing logged anywhere in the crate holds a secret value: values are `SecretString`s,
//! whose `Debug` is redacted, and text from outside is scrubbed before it is logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The `--log-format` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

fn filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    if stderr_is_journal(std::env::var("JOURNAL_STREAM").ok().as_deref())
        && let Ok(journald) = tracing_journald::layer()
    {
        let journald = journald
            // Field names as they are (upper-cased by the layer): `MESSAGE_ID`, not `F_MESSAGE_ID`.
            .with_field_prefix(None)
            .with_syslog_identifier("vercel-secret-rotator".to_owned());
        let _ = tracing_subscriber::registry()
            .with(filter())
            .with(journald)
            .try_init();
        return;
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter())
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into the journal or a file.
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    // A second init (tests calling the library twice) is harmless: keep the first.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// Whether `journal_stream` (`JOURNAL_STREAM`: `DEVICE:INODE`, set by systemd) names the file
/// stderr is. A variable inherited from a parent whose stderr went to the journal, by a
/// process whose stderr does not, names another file: stderr is used then.
fn stderr_is_journal(journal_stream: Option<&str>) -> bool {
    let Some((dev, ino)) = journal_stream.and_then(|v| v.trim().split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    match rustix::fs::fstat(std::io::stderr()) {
        Ok(stat) => stat.st_dev == dev && stat.st_ino == ino,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!stderr_is_journal(None));
        assert!(!stderr_is_journal(Some("")));
        assert!(!stderr_is_journal(Some("garbage")));
        assert!(!stderr_is_journal(Some("1:x")));
        let stat = rustix::fs::fstat(std::io::stderr()).unwrap();
        let this = format!("{}:{}", stat.st_dev, stat.st_ino);
        assert!(stderr_is_journal(Some(&this)));
        let other = format!("{}:{}", stat.st_dev, stat.st_ino + 1);
        assert!(!stderr_is_journal(Some(&other)));
    }
}
