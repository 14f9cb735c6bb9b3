//! Logging set-up: tracing to stderr, text for people or JSON for machines, level from
//! `RUST_LOG` (default `info`).
//!
//! Nothing logged anywhere in the crate holds a secret value: values are `SecretString`s,
//! whose `Debug` is redacted, and text from outside is scrubbed before it is logged.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// The `--log-format` choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
