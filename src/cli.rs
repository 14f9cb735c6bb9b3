//! The command line of DESIGN, and what each command does.
//!
//! ```text
//! vercel-secret-rotator [--config PATH] [--log-format text|json] <COMMAND>
//!   run [--once [--dry-run] [--policy NAME[/RESOURCE]]...]
//!   check
//! ```
//!
//! Exit status: 0 all good; 1 one or more rotations failed; 2 the config or the command line is
//! invalid (nothing was done). Human output (tables, previews) goes to stdout; logs to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use chrono::Utc;
use clap::{Parser, Subcommand};

use crate::config::{self, Config};
use crate::logging::LogFormat;
use crate::once::{self, OnceOptions, Selector};
use crate::token;

pub const DEFAULT_CONFIG: &str = "/etc/vercel-secret-rotator/config.toml";

#[derive(Debug, Parser)]
#[command(name = "vercel-secret-rotator", version, about = "Rotates the credentials behind Vercel Marketplace resources", long_about = None)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG, value_name = "PATH")]
    pub config: PathBuf,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Rotate: `--once` rotates now and exits.
    Run {
        /// Rotate now and exit, instead of running as a daemon.
        #[arg(long)]
        once: bool,
        /// With --once: do everything but side effects; print what would be pushed, values redacted.
        #[arg(long, requires = "once")]
        dry_run: bool,
        /// With --once: rotate only this policy (NAME) or one resource of it (NAME/RESOURCE_ID). Repeatable.
        #[arg(long = "policy", value_name = "NAME[/RESOURCE_ID]", requires = "once")]
        policies: Vec<Selector>,
    },
    /// Validate the config and the tokens' readability; print each policy's next three due times.
    Check,
}

/// Exit statuses, as DESIGN fixes them.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ROTATION_FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
}

/// Runs a parsed command line. `main` only parses, sets up logging and calls this.
pub async fn run(cli: Cli) -> ExitCode {
    let mut stdout = std::io::stdout().lock();
    ExitCode::from(execute(cli, &mut stdout).await)
}

/// Like [`run`], writing human output to `out`; returns the exit status.
pub async fn execute(cli: Cli, out: &mut impl Write) -> u8 {
    let config = match config::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            // The config error is the whole message; print it as-is (it spans lines).
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    match cli.command {
        Command::Check => check(&config, out),
        Command::Run { once: false, .. } => {
            eprintln!(
                "error: the long-running daemon (`run` without `--once`) is not part of this build yet; use `run --once` (from cron or a systemd timer) to rotate now"
            );
            exit::INVALID
        }
        Command::Run {
            once: true,
            dry_run,
            policies,
        } => {
            let options = OnceOptions {
                selectors: policies,
                dry_run,
            };
            match once::run_once(&config, &options).await {
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::INVALID
                }
                Ok(reports) => {
                    let printed = if dry_run {
                        once::print_previews(out, &reports)
                    } else {
                        Ok(())
                    }
                    .and_then(|()| once::print_summary(out, &reports));
                    if let Err(e) = printed {
                        eprintln!("error: cannot write the summary: {e}");
                    }
                    if reports.iter().any(|r| r.result.is_err()) {
                        exit::ROTATION_FAILED
                    } else {
                        exit::OK
                    }
                }
            }
        }
    }
}

/// `check`: the config is valid (it was loaded), every token source is readable, and each
/// policy's next three due times.
fn check(config: &Config, out: &mut impl Write) -> u8 {
    let mut status = exit::OK;
    let (_tokens, failures) = token::Tokens::read_all(config);
    let mut lines = Vec::new();
    lines.push(format!("config {}: valid", config.path.display()));
    for (name, installation) in &config.installations {
        match failures.iter().find(|(n, _)| n == name) {
            None => lines.push(format!(
                "installation {name} ({}): token from {}: readable",
                installation.id,
                token::describe(&installation.token)
            )),
            Some((_, e)) => {
                status = exit::INVALID;
                eprintln!("error: installation {name}: {e}");
                lines.push(format!(
                    "installation {name} ({}): token from {}: NOT READABLE",
                    installation.id,
                    token::describe(&installation.token)
                ));
            }
        }
    }
    let now = Utc::now();
    for policy in &config.policies {
        lines.push(format!(
            "policy {} ({} resource{}, {}, provider {}): next due",
            policy.name,
            policy.resources.len(),
            if policy.resources.len() == 1 { "" } else { "s" },
            policy.schedule.describe(),
            policy.provider.kind(),
        ));
        let tz = policy.schedule.timezone();
        for due in policy.schedule.upcoming(now, 3) {
            lines.push(format!(
                "  {}  ({})",
                due.format("%Y-%m-%d %H:%M:%S UTC"),
                due.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z")
            ));
        }
    }
    for line in lines {
        if writeln!(out, "{line}").is_err() {
            return exit::INVALID;
        }
    }
    status
}
