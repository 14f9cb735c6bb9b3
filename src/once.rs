//! `run --once`: rotate now, every policy or the ones selected, and report.
//!
//! Picks the (policy, resource) targets, reads the tokens they need, rotates them
//! concurrently (at most twice `max-concurrent-requests` rotations, and `max-concurrent-requests`
//! requests, at a time; one failing never stops the others) and returns one report per target,
//! which [`print_summary`] turns into the table.

use std::collections::BTreeSet;
use std::io::Write;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::control;
use crate::engine::Engine;
use crate::providers::{self, Provider, dry_run::DryRunProvider};
use crate::rotation::{Job, LogRecorder, Rotated, RotationReport, Rotator, Start};
use crate::state::file::FileStore;
use crate::state::{Key, StateError, StateStore};
use crate::token::{self, Tokens};
use crate::vercel::VercelClient;

/// A `--policy` argument: `NAME` or `NAME/RESOURCE_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub policy: String,
    pub resource: Option<String>,
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.resource {
            Some(r) => write!(f, "{}/{r}", self.policy),
            None => write!(f, "{}", self.policy),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Selector, String> {
        // Policy names cannot hold `/` (the config refuses it); resource ids might.
        let (policy, resource) = match s.split_once('/') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        if policy.is_empty() || resource.is_some_and(str::is_empty) {
            return Err(format!("\"{s}\" is not NAME or NAME/RESOURCE_ID"));
        }
        Ok(Selector {
            policy: policy.to_owned(),
            resource: resource.map(str::to_owned),
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct OnceOptions {
    /// Empty: every policy.
    pub selectors: Vec<Selector>,
    pub dry_run: bool,
}

/// Refusals before anything is done: exit 2.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    #[error("--policy {selector}: no policy is named \"{policy}\" (policies: {known})")]
    UnknownPolicy {
        selector: String,
        policy: String,
        known: String,
    },
    #[error(
        "--policy {selector}: policy \"{policy}\" has no resource \"{resource}\" (its resources: {known})"
    )]
    UnknownResource {
        selector: String,
        policy: String,
        resource: String,
        known: String,
    },
    #[error("installation {installation}: {source}")]
    Token {
        installation: String,
        #[source]
        source: token::TokenError,
    },
    #[error("cannot set up the Vercel client: {0}")]
    Client(#[source] crate::vercel::VercelError),
    #[error(transparent)]
    State(crate::state::StateError),
    #[error("the daemon (PID {}) holds the state, but the request could not be handed to it: {source}", pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Control {
        pid: Option<u32>,
        #[source]
        source: control::ControlError,
    },
}

/// The jobs the selectors pick, in config order, each once.
pub fn select_jobs(config: &Config, options: &OnceOptions) -> Result<Vec<Job>, UsageError> {
    for sel in &options.selectors {
        let selector = match &sel.resource {
            Some(r) => format!("{}/{r}", sel.policy),
            None => sel.policy.clone(),
        };
        let Some(policy) = config.policies.iter().find(|p| p.name == sel.policy) else {
            return Err(UsageError::UnknownPolicy {
                selector,
                policy: sel.policy.clone(),
                known: config
                    .policies
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        if let Some(resource) = &sel.resource
            && !policy.resources.contains(resource)
        {
            return Err(UsageError::UnknownResource {
                selector,
                policy: policy.name.clone(),
                resource: resource.clone(),
                known: policy.resources.join(", "),
            });
        }
    }
    let wanted = |policy: &str, resource: &str| {
        options.selectors.is_empty()
            || options
                .selectors
                .iter()
                .any(|s| s.policy == policy && s.resource.as_deref().is_none_or(|r| r == resource))
    };
    let mut jobs = Vec::new();
    for policy in &config.policies {
        let Some(installation) = config.installations.get(&policy.installation) else {
            continue; // validation guarantees it exists
        };
        let resources: Vec<&String> = policy
            .resources
            .iter()
            .filter(|r| wanted(&policy.name, r))
            .collect();
        if resources.is_empty() {
            continue;
        }
        let provider: Arc<dyn Provider> = if options.dry_run {
            // Dry run never calls a provider: it yields placeholders for the fields the
            // templates use, so the preview shows each value's shape and nothing else.
            let fields: BTreeSet<String> = policy
                .secrets
                .iter()
                .flat_map(|s| s.templates())
                .flat_map(|t| t.fields())
                .map(str::to_owned)
                .collect();
            Arc::new(DryRunProvider::new(
                policy.provider.kind(),
                fields.into_iter().collect(),
            ))
        } else {
            Arc::from(providers::build(&policy.provider))
        };
        let policy_arc = Arc::new(policy.clone());
        let installation = Arc::new(installation.clone());
        for resource in resources {
            jobs.push(Job {
                policy: policy_arc.clone(),
                installation: installation.clone(),
                resource: resource.clone(),
                provider: provider.clone(),
            });
        }
    }
    Ok(jobs)
}

/// What `run --once` did.
pub enum OnceOutcome {
    /// It rotated itself: one report per target, in config order.
    Rotated(Vec<RotationReport>),
    /// The daemon holds the state, so the request went to it; this is its answer.
    HandedOver(control::Answer),
}

/// Every (policy, resource) of the config, with live providers: the daemon's work list.
pub fn all_jobs(config: &Config) -> Vec<Job> {
    // No selectors: nothing to refuse.
    select_jobs(config, &OnceOptions::default()).unwrap_or_default()
}

/// The keys the selectors pick, in config order.
pub fn select_keys(config: &Config, options: &OnceOptions) -> Result<Vec<Key>, UsageError> {
    Ok(select_jobs(config, options)?
        .iter()
        .map(|j| Key {
            policy: j.policy.name.clone(),
            resource: j.resource.clone(),
        })
        .collect())
}

/// Rotates every selected target now. A real run records every step in the state (taking
/// its lock), finishes what a crash left unfinished, and retires what is due; when the daemon
/// holds the lock, the request is handed to it instead. A dry run touches no state.
pub async fn run_once(
    config: &Config,
    options: &OnceOptions,
    clock: Arc<dyn Clock>,
) -> Result<OnceOutcome, UsageError> {
    let jobs = select_jobs(config, options)?;
    if options.dry_run {
        return Ok(OnceOutcome::Rotated(dry_run(config, jobs, clock).await));
    }
    let store: Arc<dyn StateStore> = match FileStore::open(&config.state.dir).await {
        Ok(store) => Arc::new(store),
        Err(StateError::Locked { pid, .. }) => {
            info!(daemon_pid = ?pid, "the daemon holds the state; handing the request to it");
            let request = control::Request {
                policies: options.selectors.iter().map(Selector::to_string).collect(),
            };
            let answer = control::request(&config.state.dir, &request)
                .await
                .map_err(|source| UsageError::Control { pid, source })?;
            return Ok(OnceOutcome::HandedOver(answer));
        }
        Err(e) => return Err(UsageError::State(e)),
    };

    // Tokens are read up front, so a missing one stops the run before any rotation.
    let installations: BTreeSet<&str> = jobs.iter().map(|j| j.installation.name.as_str()).collect();
    let (tokens, failures) = Tokens::read_all(config);
    if let Some((installation, source)) = failures
        .into_iter()
        .find(|(name, _)| installations.contains(name.as_str()))
    {
        return Err(UsageError::Token {
            installation,
            source,
        });
    }
    let client = VercelClient::new(&config.vercel).map_err(UsageError::Client)?;
    let engine = Arc::new(Engine::new(store.clone(), client, tokens, clock));
    engine.sync(&jobs).await.map_err(UsageError::State)?;

    let limit = Arc::new(Semaphore::new(config.vercel.max_rotations_in_flight()));
    let reports = run_bounded(jobs, &limit, |job| {
        let engine = engine.clone();
        async move { engine.tend(&job, true).await }
    })
    .await;
    if let Err(e) = store.flush().await {
        warn!("could not flush the state: {e}");
    }
    Ok(OnceOutcome::Rotated(reports))
}

/// Dry run: placeholders instead of credentials, nothing sent, no state, no tokens needed.
async fn dry_run(config: &Config, jobs: Vec<Job>, clock: Arc<dyn Clock>) -> Vec<RotationReport> {
    let installations: BTreeSet<&str> = jobs.iter().map(|j| j.installation.name.as_str()).collect();
    for (name, installation) in &config.installations {
        if installations.contains(name.as_str())
            && let Err(e) = token::read(&installation.token)
        {
            warn!(installation = %name, "dry run: the token cannot be read ({e}); a real run would stop here");
        }
    }
    let rotator = Arc::new(Rotator {
        client: None,
        tokens: Tokens::default(),
        recorder: Arc::new(LogRecorder),
        clock,
    });
    let limit = Arc::new(Semaphore::new(config.vercel.max_rotations_in_flight()));
    run_bounded(jobs, &limit, |job| {
        let rotator = rotator.clone();
        async move { Some(rotator.rotate(&job, Start::default()).await) }
    })
    .await
}

/// Runs `rotate` on every item as its own task, each in a slot of `limit`, and returns the
/// reports in item order. A task is spawned only once its slot is free, and finished tasks
/// are reaped while the rest are spawned: a parked rotation task is ~4 KB, and 10,000 of them
/// made up front would outlive the run in the daemon's heap (the allocator keeps what it grew
/// to).
pub(crate) async fn run_bounded<T, F, Fut>(
    items: Vec<T>,
    limit: &Arc<Semaphore>,
    rotate: F,
) -> Vec<RotationReport>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = Option<RotationReport>> + Send + 'static,
{
    let mut reports: Vec<Option<RotationReport>> = (0..items.len()).map(|_| None).collect();
    let mut keep = |joined: Result<(usize, Option<RotationReport>), tokio::task::JoinError>| {
        match joined {
            Ok((index, report)) => reports[index] = report,
            // A panic in one rotation is a bug; the others' reports still count.
            Err(e) => warn!("a rotation task ended abnormally: {e}"),
        }
    };
    let mut set = JoinSet::new();
    for (index, item) in items.into_iter().enumerate() {
        // The semaphore is never closed, so acquire cannot fail; if it somehow did, the
        // rotation still runs rather than being lost.
        let slot = limit.clone().acquire_owned().await.ok();
        let rotation = rotate(item);
        set.spawn(async move {
            let _slot = slot;
            (index, rotation.await)
        });
        while let Some(joined) = set.try_join_next() {
            keep(joined);
        }
    }
    while let Some(joined) = set.join_next().await {
        keep(joined);
    }
    reports.into_iter().flatten().collect()
}

/// Prints the summary table (and each failure's full reason below it).
pub fn print_summary(out: &mut impl Write, reports: &[RotationReport]) -> std::io::Result<()> {
    let rows: Vec<[String; 5]> = reports
        .iter()
        .map(|r| {
            let (outcome, fingerprint) = match &r.result {
                Ok(Rotated::Pushed { fingerprint, .. }) => {
                    ("rotated".to_owned(), fingerprint.clone())
                }
                Ok(Rotated::DryRun { .. }) => ("dry run".to_owned(), "-".to_owned()),
                Err(e) if crate::error::Classify::is_transient(e) => {
                    ("FAILED (transient)".to_owned(), "-".to_owned())
                }
                Err(_) => ("FAILED (permanent)".to_owned(), "-".to_owned()),
            };
            [
                r.target.policy.clone(),
                r.target.resource.clone(),
                outcome,
                r.secret_names.join(","),
                fingerprint,
            ]
        })
        .collect();
    let header = ["POLICY", "RESOURCE", "OUTCOME", "SECRETS", "FINGERPRINT"];
    crate::table::write(out, header, &rows)?;
    let failed: Vec<&RotationReport> = reports.iter().filter(|r| r.result.is_err()).collect();
    let rotated = reports
        .iter()
        .filter(|r| matches!(r.result, Ok(Rotated::Pushed { .. })))
        .count();
    writeln!(out)?;
    let dry = reports
        .iter()
        .filter(|r| matches!(r.result, Ok(Rotated::DryRun { .. })))
        .count();
    if dry > 0 {
        writeln!(
            out,
            "dry run: {dry} would be rotated, {} failed; nothing was sent",
            failed.len()
        )?;
    } else {
        writeln!(
            out,
            "{rotated} rotated, {} failed, {} in all",
            failed.len(),
            reports.len()
        )?;
    }
    for r in &failed {
        if let Err(e) = &r.result {
            writeln!(out, "  {}/{}: {e}", r.target.policy, r.target.resource)?;
        }
    }
    for r in reports {
        if let Ok(Rotated::Pushed { retire_at, .. }) = &r.result {
            writeln!(
                out,
                "  {}/{}: redeploy connected projects before {}, when the old credential is retired",
                r.target.policy,
                r.target.resource,
                retire_at.format("%Y-%m-%d %H:%M UTC")
            )?;
        }
    }
    Ok(())
}

/// Prints each dry run's would-be request.
pub fn print_previews(out: &mut impl Write, reports: &[RotationReport]) -> std::io::Result<()> {
    for r in reports {
        if let Ok(Rotated::DryRun {
            request_line,
            preview,
        }) = &r.result
        {
            writeln!(
                out,
                "{}/{} would send (installation {}, values redacted):\n{request_line}\n{preview}\n",
                r.target.policy, r.target.resource, r.target.installation
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        let s: Selector = "orders-db".parse().unwrap();
        assert_eq!(
            s,
            Selector {
                policy: "orders-db".into(),
                resource: None
            }
        );
        let s: Selector = "orders-db/store/abc".parse().unwrap();
        assert_eq!(s.resource.as_deref(), Some("store/abc"));
        assert!("".parse::<Selector>().is_err());
        assert!("a/".parse::<Selector>().is_err());
        assert!("/r".parse::<Selector>().is_err());
    }
}
