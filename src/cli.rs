//! The command line of DESIGN, and what each command does.
//!
//! ```text
//! vercel-secret-rotator [--config PATH] [--log-format text|json] <COMMAND>
//!   run [--once [--dry-run] [--policy NAME[/RESOURCE]]...]
//!   check [--online]
//!   status [--json]
//!   history [--policy NAME[/RESOURCE]]... [--since DURATION] [--json]
//! ```
//!
//! Exit status: 0 all good; 1 one or more rotations failed; 2 the config or the command line is
//! invalid (nothing was done). Human output (tables, previews) goes to stdout; logs to stderr.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use chrono::Utc;
use clap::{Parser, Subcommand};

use crate::clock::SystemClock;
use crate::config::{self, Config};
use crate::credentials;
use crate::daemon;
use crate::discovery::{self, ListError};
use crate::error::Classify;
use crate::exit;
use crate::history;
use crate::jobs::Selector;
use crate::logging::LogFormat;
use crate::once::{self, OnceOptions, OnceOutcome};
use crate::status;
use crate::summary;
use crate::token;
use crate::vercel::{VercelClient, VercelError};

/// SIGTERM (what systemd sends) and SIGINT stop the daemon; SIGHUP reloads its config.
fn watch_signals(triggers: &daemon::Triggers) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let shutdown = triggers.shutdown.clone();
    let reload = triggers.reload.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); shutdown.cancel(); }
                _ = int.recv() => { tracing::info!("SIGINT: stopping"); shutdown.cancel(); }
                _ = hup.recv() => { tracing::info!("SIGHUP: reloading the config"); reload.notify_one(); }
            }
        }
    });
    Ok(())
}

pub const DEFAULT_CONFIG: &str = "/etc/vercel-secret-rotator/config.toml";

/// The environment variable that names the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "VERCEL_SECRET_ROTATOR_CONFIG";

/// A part of the manual beyond the options: a heading and its (term, text) entries. `--help`
/// prints them after the options; the man page (`examples/gen_assets.rs`) gives each its own
/// section. One source, so the two never disagree.
pub struct ManualSection {
    pub heading: &'static str,
    pub entries: &'static [(&'static str, &'static str)],
}

/// The exit statuses (`crate::exit`), the environment and the files, for `--help` and the man
/// page.
pub const MANUAL: &[ManualSection] = &[
    ManualSection {
        heading: "EXIT STATUS",
        entries: &[
            ("0", "All good."),
            (
                "1",
                "One or more rotations failed (the others still completed), an installation's \
                 token could not be read, an I/O error stopped the start, or `check --online` \
                 could not list an installation or found a resource missing.",
            ),
            (
                "2",
                "The config or the command line is invalid, another daemon holds the state, or \
                 the command ran as another user than the state directory's owner: nothing was \
                 done. `check` also exits 2 for a token it cannot read and `check --online` for \
                 a token Vercel refused (naming the installations). systemd's \
                 RestartPreventExitStatus=2 keeps the service stopped for a human.",
            ),
        ],
    },
    ManualSection {
        heading: "ENVIRONMENT",
        entries: &[
            (CONFIG_ENV, "The config file, when --config is not given."),
            (
                "RUST_LOG",
                "The log level and filters (tracing's EnvFilter syntax); default info.",
            ),
            (
                "JOURNAL_STREAM",
                "Set by systemd when stderr goes to the journal: logs then go to journald \
                 natively, each field its own journal field (MESSAGE_ID, POLICY, RESOURCE, ...).",
            ),
            (
                "STATE_DIRECTORY",
                "Set by systemd's StateDirectory=: the state directory when the config has no \
                 [state] dir (else ./state).",
            ),
            (
                "CREDENTIALS_DIRECTORY",
                "Set by systemd's LoadCredential=: where the names of *-credential keys \
                 (token-credential, admin-url-credential) are read. When it is not set, `check` \
                 reads each credential from the unit's LoadCredential= source instead, as \
                 systemd will at the next start, and reports one it cannot find or read that \
                 way as not verified (exit status unaffected).",
            ),
            (
                credentials::host::UNIT_ENV,
                "For `check` on the host: the unit file whose LoadCredential= lines say where \
                 credentials are (its drop-ins in PATH.d/*.conf), instead of the installed \
                 vercel-secret-rotator.service and its drop-ins.",
            ),
            (
                "NOTIFY_SOCKET, WATCHDOG_USEC",
                "Set by systemd for Type=notify and WatchdogSec=: `run` reports readiness, \
                 reloads and stops, and pings the watchdog.",
            ),
        ],
    },
    ManualSection {
        heading: "FILES",
        entries: &[
            (
                DEFAULT_CONFIG,
                "The config (TOML, kebab-case keys; an unknown key is an error naming file, line \
                 and key). The package installs the commented example here; every key is \
                 explained in it and in /usr/share/doc/vercel-secret-rotator/README.md.",
            ),
            (
                "/var/lib/vercel-secret-rotator",
                "The state under systemd (StateDirectory=): handles, timestamps and \
                 fingerprints, never a secret value; the rotation history `history` prints \
                 (history.jsonl, the last 100,000 events); the lock; the control socket \
                 `run --once` hands requests to the daemon through.",
            ),
            (
                "/lib/systemd/system/vercel-secret-rotator.service",
                "The systemd unit: `run` under DynamicUser=, sandboxed. Tokens and providers' \
                 admin URLs reach it as credentials (LoadCredential= in a drop-in; \
                 token-credential, admin-url-credential in the config). `check` on the host \
                 reads them from there, with the drop-ins in \
                 /etc/systemd/system/vercel-secret-rotator.service.d/.",
            ),
        ],
    },
];

/// [`MANUAL`] as plain text, after the options in `--help`.
fn manual_text() -> String {
    let mut text = String::new();
    for section in MANUAL {
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(section.heading);
        text.push_str(":\n");
        for (term, body) in section.entries {
            text.push_str(&format!("  {term}\n          {body}\n"));
        }
    }
    text
}

#[derive(Debug, Parser)]
#[command(
    name = "vercel-secret-rotator",
    version,
    about = "Rotates the credentials behind Vercel Marketplace resources",
    long_about = "Rotates the credentials behind Vercel Marketplace resources. For each resource \
        a policy names, on its schedule (or at once with `run --once`), it gets a new credential \
        from a provider (random, an external command, an HTTP API, PostgreSQL, MySQL/MariaDB or \
        Redis), pushes the policy's secrets to Vercel with `partial: true`, reminds the user to \
        redeploy the connected projects, and retires the old credential after the grace period. \
        No secret value is written to disk or a log.",
    after_long_help = manual_text()
)]
pub struct Cli {
    /// The config file.
    #[arg(long, global = true, env = CONFIG_ENV, default_value = DEFAULT_CONFIG, value_name = "PATH")]
    pub config: PathBuf,
    /// Log format on stderr; the level comes from RUST_LOG (default info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon (systemd Type=notify; SIGTERM/SIGINT stop, SIGHUP reloads), or with
    /// `--once` rotate now and exit.
    ///
    /// The daemon rotates each resource when its schedule comes due (a resource it has never
    /// seen first at the schedule's next time), retires old credentials after their grace,
    /// and records every step before doing it, so a restart finishes or redoes what was in
    /// flight. SIGTERM and SIGINT stop it after the step in flight; SIGHUP re-reads the config
    /// (a bad one is refused and the running one kept). With --once it rotates every selected
    /// resource now, prints a summary table and exits; when the daemon holds the state, the
    /// request is handed to it.
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
    ///
    /// Also asks each provider what it can check without changing anything (its admin
    /// connection, its users, that its program exists). Safe before `systemctl reload`.
    Check {
        /// Also prove each installation's token and each configured resource against Vercel,
        /// with one read call (the resource listing) per installation. Changes nothing; runs
        /// token commands.
        #[arg(long)]
        online: bool,
    },
    /// Read the state: last success, next due, step in flight, pending retirements, failures.
    ///
    /// Reads the state files without the lock, so it works while the daemon runs.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Past rotation events: started, pushed, succeeded, failed, retired, retire failed, held
    /// back, requested by Vercel; oldest first.
    ///
    /// Each with its time, policy, resource, rotation id, trigger (schedule, manual, vercel,
    /// retry), fingerprint of the values pushed, and error or reason; never a value. The state
    /// keeps the last 100,000 events. Reads the history file without the lock, so it works
    /// while the daemon runs.
    History {
        /// Only this policy (NAME) or one resource of it (NAME/RESOURCE_ID). Repeatable.
        #[arg(long = "policy", value_name = "NAME[/RESOURCE_ID]")]
        policies: Vec<Selector>,
        /// Only events of the last DURATION, written as in the config (30m, 24h, 7d).
        #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
        since: Option<std::time::Duration>,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
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
        Command::Check { online } => check(&config, online, out).await,
        Command::Status { json } => match status::read(&config) {
            Ok(snapshot) => match status::print(out, &config, &snapshot, json) {
                Ok(()) => exit::OK,
                Err(e) if reader_gone(&e) => exit::OK,
                Err(e) => {
                    eprintln!("error: cannot write the status: {e}");
                    exit::ROTATION_FAILED
                }
            },
            Err(e) => {
                eprintln!("error: {e}");
                if e.is_usage() {
                    exit::INVALID
                } else {
                    exit::ROTATION_FAILED
                }
            }
        },
        Command::History {
            policies,
            since,
            json,
        } => {
            let filter = history::filter(&policies, since, Utc::now());
            match history::read(&config, &filter) {
                Ok(entries) => match history::print(out, &entries, json) {
                    Ok(()) => exit::OK,
                    // The reader went away (`history | head`): it had what it wanted.
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => exit::OK,
                    Err(e) => {
                        eprintln!("error: cannot write the history: {e}");
                        exit::ROTATION_FAILED
                    }
                },
                Err(e) => {
                    eprintln!("error: {e}");
                    if e.is_usage() {
                        exit::INVALID
                    } else {
                        exit::ROTATION_FAILED
                    }
                }
            }
        }
        Command::Run { once: false, .. } => {
            drop(config);
            let triggers = daemon::Triggers::default();
            if let Err(e) = watch_signals(&triggers) {
                eprintln!("error: cannot install signal handlers: {e}");
                return exit::ROTATION_FAILED;
            }
            daemon::run(&cli.config, triggers, Arc::new(SystemClock)).await
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
            match once::run_once(&config, &options, Arc::new(SystemClock)).await {
                Err(e) => {
                    eprintln!("error: {e}");
                    if e.is_usage() {
                        exit::INVALID
                    } else {
                        exit::ROTATION_FAILED
                    }
                }
                Ok(OnceOutcome::HandedOver(answer)) => {
                    match out.write_all(answer.output.as_bytes()) {
                        Err(e) if !reader_gone(&e) => {
                            eprintln!("error: cannot write the summary: {e}");
                        }
                        _ => {}
                    }
                    answer.exit
                }
                Ok(OnceOutcome::Rotated(reports)) => {
                    let printed = if dry_run {
                        summary::print_previews(out, &reports)
                    } else {
                        Ok(())
                    }
                    .and_then(|()| summary::print_summary(out, &reports));
                    match printed {
                        Err(e) if !reader_gone(&e) => {
                            eprintln!("error: cannot write the summary: {e}");
                        }
                        _ => {}
                    }
                    summary::exit_status(&reports)
                }
            }
        }
    }
}

/// The reader of stdout went away (`check | head -1`): it had what it wanted, and that is
/// no error of the command.
fn reader_gone(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::BrokenPipe
}

/// `check`: the config is valid (it was loaded), every token source is readable, and each
/// policy's next three due times; with `online`, what Vercel says of each token and resource.
///
/// Run on the host (no `$CREDENTIALS_DIRECTORY`), it reads each systemd credential from the
/// file the unit's `LoadCredential=` names, as systemd will at the next start; one it cannot
/// find or read that way is reported as not verified, which does not change the exit status.
async fn check(config: &Config, online: bool, out: &mut impl Write) -> u8 {
    let mut status = exit::OK;
    let mut lines = Vec::new();
    lines.push(format!("config {}: valid", config.path.display()));
    if config.uses_credentials()
        && let Some(unit) = credentials::read_as_the_unit_would()
    {
        lines.push(format!(
            "credentials: $CREDENTIALS_DIRECTORY is not set, so each is read from the unit's \
             LoadCredential= source, as systemd will at the next start: {}",
            unit.describe()
        ));
    }
    let (tokens, failures) = token::Tokens::read_all(config);
    for (name, installation) in &config.installations {
        match failures.iter().find(|(n, _)| n == name) {
            None => lines.push(format!(
                "installation {name} ({}): token from {}: {}",
                installation.id,
                token::describe(&installation.token),
                token::readiness(&installation.token)
            )),
            Some((_, e)) if e.is_unverified() => {
                eprintln!("warning: installation {name}: {e}");
                lines.push(format!(
                    "installation {name} ({}): token from {}: NOT VERIFIED on this host \
                     (not an error: see the warning)",
                    installation.id,
                    token::describe(&installation.token)
                ));
            }
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
    if let Some(d) = &config.discovery {
        status = status.max(check_discovery(d, &mut lines).await);
    }
    if let Some(server) = &config.server {
        lines.push(format!(
            "server: listens on {} for Vercel's rotate requests (tokens for client id {} from issuer {}, keys from {}), /metrics and /healthz",
            server.listen, server.client_id, server.issuer, server.jwks_url
        ));
    }
    let now = Utc::now();
    for policy in &config.policies {
        // What the provider can check without changing anything: its admin connection, its
        // users. A provider that cannot do its job fails `check` here rather than at 3 a.m.
        if let config::ProviderSpec::Shared(c) = &policy.provider {
            for (what, source) in c.secret_sources() {
                if let config::SecretSource::Credential(name) = source
                    && let Some(declared) = credentials::whereabouts(name)
                {
                    lines.push(format!(
                        "policy {}: provider {}: {what} from systemd credential {name}: on this \
                         host {declared}",
                        policy.name,
                        policy.provider.kind()
                    ));
                }
            }
        }
        let provider = crate::providers::per_resource::for_check(config, policy);
        match provider.preflight().await {
            Ok(facts) => {
                for fact in facts {
                    lines.push(format!(
                        "policy {}: provider {}: {fact}",
                        policy.name,
                        policy.provider.kind()
                    ));
                }
            }
            Err(e) if e.is_unverified() => {
                eprintln!("warning: policy {}: {e}", policy.name);
                lines.push(format!(
                    "policy {}: provider {}: NOT VERIFIED on this host (not an error: see the \
                     warning)",
                    policy.name,
                    policy.provider.kind()
                ));
            }
            Err(e) => {
                status = exit::INVALID;
                eprintln!("error: policy {}: {e}", policy.name);
                lines.push(format!(
                    "policy {}: provider {}: NOT READY",
                    policy.name,
                    policy.provider.kind()
                ));
            }
        }
        let scope = match policy.configured() {
            Some((_, ids)) => format!(
                "{} resource{}",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            ),
            None => "resources from Vercel's listings".to_owned(),
        };
        lines.push(format!(
            "policy {} ({scope}, {}, provider {}): next due{}",
            policy.name,
            policy.schedule.describe(),
            policy.provider.kind(),
            if policy.jitter.is_zero() {
                String::new()
            } else {
                format!(
                    " (each resource up to {} later: jitter)",
                    crate::duration::format(policy.jitter)
                )
            },
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
    if online {
        let unreadable: BTreeMap<&str, &str> = failures
            .iter()
            .map(|(n, e)| {
                let why = if e.is_unverified() {
                    "token not verified on this host"
                } else {
                    "token not readable"
                };
                (n.as_str(), why)
            })
            .collect();
        let tokens = std::sync::Arc::new(tokens);
        status = status.max(check_online(config, &tokens, &unreadable, &mut lines).await);
    }
    for line in lines {
        match writeln!(out, "{line}") {
            Ok(()) => {}
            Err(e) if reader_gone(&e) => return status,
            Err(e) => {
                eprintln!("error: cannot write check's report: {e}");
                return exit::ROTATION_FAILED.max(status);
            }
        }
    }
    status
}

/// `check`'s view of `[discovery]`: where installations come from and which it can see now,
/// with the tokens it can read. Calls nothing at Vercel and runs no token command. A
/// discovered installation's unreadable token fails only that installation, so it is
/// reported, not an error of `check`; a source that cannot be read at all is.
async fn check_discovery(d: &config::Discovery, lines: &mut Vec<String>) -> u8 {
    let source = match &d.source {
        config::InstallationSource::Dir(dir) => format!("directory {}", dir.display()),
        config::InstallationSource::Command(c) => format!("command {}", c.display_name()),
    };
    let tokens = match &d.token_command {
        Some(c) => format!("token command {}", c.display_name()),
        None => "each installation's <id>.token file".to_owned(),
    };
    lines.push(format!(
        "discovery: installations from {source}, tokens from {tokens}, every {}",
        crate::duration::format(d.every)
    ));
    let seen = match discovery::installations::find(d).await {
        Ok(seen) => seen,
        Err(e) => {
            eprintln!("error: discovery: {e}");
            lines.push("discovery: installations NOT READABLE".to_owned());
            return exit::INVALID;
        }
    };
    let mut unreadable = Vec::new();
    for found in &seen.installations {
        if let Err(e) = token::check_readable(&found.token) {
            eprintln!("warning: discovered installation {}: {e}", found.id);
            unreadable.push(found.id.as_str());
        }
    }
    let n = seen.installations.len();
    lines.push(format!(
        "discovery: {n} installation{} seen, {} with an unreadable token{}",
        if n == 1 { "" } else { "s" },
        unreadable.len(),
        if unreadable.is_empty() {
            String::new()
        } else {
            format!(" ({}: each fails alone until fixed)", unreadable.join(", "))
        }
    ));
    for problem in &seen.problems {
        lines.push(format!("discovery: {problem}"));
    }
    exit::OK
}

/// `check --online`: one listing per installation (its token proven), then each resource a
/// policy lists by id looked up in its installation's listing. Only GETs: nothing changes at
/// Vercel. Exit 2 when Vercel refused a token (they are named), 1 when an installation could
/// not be listed or a resource is missing, else 0.
async fn check_online(
    config: &Config,
    tokens: &std::sync::Arc<token::Tokens>,
    unreadable: &BTreeMap<&str, &str>,
    lines: &mut Vec<String>,
) -> u8 {
    let client = match VercelClient::new(&config.vercel) {
        Ok(client) => std::sync::Arc::new(client),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::ROTATION_FAILED;
        }
    };
    let mut status = exit::OK;
    let mut refused = Vec::new();
    // The partner ids each listed installation holds; absent: not listed.
    let mut listings: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    // Every installation's listing at once (the client keeps the requests in flight to
    // `max-concurrent-requests`): a fleet's check takes about one round trip per
    // `max-concurrent-requests` installations, not one per installation.
    let mut calls = tokio::task::JoinSet::new();
    for (name, installation) in &config.installations {
        if unreadable.contains_key(name.as_str()) {
            continue;
        }
        let (client, tokens) = (client.clone(), tokens.clone());
        let (name, installation) = (name.clone(), installation.clone());
        calls.spawn(async move {
            let listed = discovery::list::list_resources(&client, &tokens, &installation)
                .await
                .map(|listed| {
                    listed
                        .into_iter()
                        .map(|r| r.partner_id)
                        .collect::<BTreeSet<String>>()
                });
            (name, listed)
        });
    }
    let mut answers = BTreeMap::new();
    while let Some(joined) = calls.join_next().await {
        // A listing task cannot panic short of a bug; its installation then reads "failed".
        if let Ok((name, listed)) = joined {
            answers.insert(name, listed);
        }
    }
    for (name, installation) in &config.installations {
        let label = format!("installation {name} ({}): online:", installation.id);
        if let Some(why) = unreadable.get(name.as_str()) {
            lines.push(format!("{label} not checked ({why})"));
            continue;
        }
        let Some(listed) = answers.remove(name) else {
            status = exit::ROTATION_FAILED;
            lines.push(format!("{label} failed"));
            continue;
        };
        let error = match listed {
            Ok(ids) => {
                let n = ids.len();
                lines.push(format!(
                    "{label} ok ({n} resource{})",
                    if n == 1 { "" } else { "s" }
                ));
                listings.insert(name, ids);
                continue;
            }
            Err(e) => e,
        };
        eprintln!("error: installation {name}: {error}");
        let verdict = match &error {
            ListError::Token(_) => "token not available",
            ListError::Vercel(e) => match e.status() {
                Some(401 | 403) => {
                    refused.push(name.as_str());
                    "token refused"
                }
                Some(404 | 410) => "unknown installation",
                _ if matches!(e, VercelError::InvalidAnswer { .. }) => "unusable answer",
                _ if e.is_transient() => "unreachable",
                _ => "failed",
            },
        };
        status = exit::ROTATION_FAILED;
        lines.push(format!("{label} {verdict}"));
    }
    for policy in &config.policies {
        let Some((installation, resources)) = policy.configured() else {
            continue;
        };
        for resource in resources {
            let label = format!(
                "policy {}: resource {resource} (installation {installation}): online:",
                policy.name
            );
            match listings.get(installation) {
                Some(ids) if ids.contains(resource) => lines.push(format!("{label} ok")),
                Some(_) => {
                    status = exit::ROTATION_FAILED;
                    eprintln!(
                        "error: policy {}: resource {resource} is missing from the listing of \
                         installation {installation}: check the id, or whether it was deleted",
                        policy.name
                    );
                    lines.push(format!("{label} missing"));
                }
                None => lines.push(format!("{label} not checked (installation not listed)")),
            }
        }
    }
    if !refused.is_empty() {
        eprintln!(
            "error: Vercel refused the token of installation{} {}",
            if refused.len() == 1 { "" } else { "s" },
            refused.join(", ")
        );
        return exit::INVALID;
    }
    status
}
