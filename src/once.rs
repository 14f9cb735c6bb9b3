//! `run --once`: rotate now, every policy or the ones selected, and report.
//!
//! Picks the jobs ([`crate::jobs`]), reads the tokens they need, and gives each key a forced
//! turn of the protocol (at most twice `max-concurrent-requests` at a time; one failing never
//! stops the others). Without selectors it also tends the records the config no longer names,
//! so their due retirements run. When the daemon holds the state, the request is handed to it
//! over the control socket instead. A dry run goes through the same protocol with placeholder
//! credentials, a preview instead of a push, and state kept in memory only.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::Config;
use crate::control;
use crate::discovery::{self, Lister, VercelLister};
use crate::jobs::{self, Providers, SelectError, Selector};
use crate::rotation::batch::run_bounded;
use crate::rotation::executor::Executor;
use crate::rotation::locks::KeyLocks;
use crate::rotation::push::{PreviewPusher, VercelPusher};
use crate::rotation::{Job, RotationReport, Turn};
use crate::state::memory::MemoryStore;
use crate::state::{self, Listing, StateError};
use crate::token::{self, Tokens};
use crate::vercel::VercelClient;

#[derive(Debug, Clone, Default)]
pub struct OnceOptions {
    /// Empty: every policy.
    pub selectors: Vec<Selector>,
    pub dry_run: bool,
}

/// Why `run --once` did nothing.
#[derive(Debug, thiserror::Error)]
pub enum OnceError {
    #[error(transparent)]
    Select(#[from] SelectError),
    #[error("cannot set up the Vercel client: {0}")]
    Client(#[source] crate::vercel::VercelError),
    #[error(transparent)]
    State(StateError),
    #[error("the daemon (PID {}) holds the state, but the request could not be handed to it: {source}", pid.map_or_else(|| "unknown".to_owned(), |p| p.to_string()))]
    Control {
        pid: Option<u32>,
        #[source]
        source: control::ControlError,
    },
}

impl OnceError {
    /// Whether it is the config's or the command line's fault (exit 2), as opposed to
    /// something that may clear by itself (exit 1).
    pub fn is_usage(&self) -> bool {
        match self {
            OnceError::Select(_) | OnceError::Client(_) => true,
            OnceError::State(e) => e.is_usage(),
            OnceError::Control { .. } => false,
        }
    }
}

/// What `run --once` did.
pub enum OnceOutcome {
    /// It rotated itself: one report per target, in config order.
    Rotated(Vec<RotationReport>),
    /// The daemon holds the state, so the request went to it; this is its answer.
    HandedOver(control::Answer),
}

/// Rotates every selected target now. A real run records every step in the state (taking
/// its lock), finishes what a crash left unfinished, and retires what is due; when the daemon
/// holds the lock, the request is handed to it instead. A dry run touches no state.
pub async fn run_once(
    config: &Config,
    options: &OnceOptions,
    clock: Arc<dyn Clock>,
) -> Result<OnceOutcome, OnceError> {
    jobs::check_policies(config, &options.selectors)?;
    if options.dry_run {
        // Listing is a read, so a dry run lists too, from the inventory the state has (if it
        // can be read); it writes nothing.
        let listings: Vec<Arc<Listing>> = state::read_listings(&config.state)
            .unwrap_or_default()
            .into_iter()
            .map(Arc::new)
            .collect();
        let mut fleet = discovery::fleet::load(config, &listings);
        if lists_anything(config) {
            let (tokens, _) = Tokens::read_all(config);
            let client = VercelClient::new(&config.vercel).map_err(OnceError::Client)?;
            let lister: Arc<dyn Lister> = Arc::new(VercelLister {
                client,
                tokens: Arc::new(tokens),
            });
            discovery::fleet::refresh(config, &mut fleet, &lister, None).await;
        }
        let jobs = jobs::select(config, &fleet, &options.selectors, Providers::DryRun)?;
        return Ok(OnceOutcome::Rotated(dry_run(config, jobs, clock).await));
    }
    let store = match state::open(&config.state).await {
        Ok(store) => store,
        Err(StateError::Locked { pid, .. }) => {
            info!(
                daemon_pid = pid.unwrap_or_default(),
                "the daemon holds the state; handing the request to it"
            );
            let request = control::Request {
                policies: options.selectors.iter().map(Selector::to_string).collect(),
            };
            let answer = control::request(&config.state.dir, &request)
                .await
                .map_err(|source| OnceError::Control { pid, source })?;
            return Ok(OnceOutcome::HandedOver(answer));
        }
        Err(e) => return Err(OnceError::State(e)),
    };

    // A token that cannot be read fails its installation's rotations only; the others go on.
    let (tokens, failures) = Tokens::read_all(config);
    let tokens = Arc::new(tokens);
    let client = VercelClient::new(&config.vercel).map_err(OnceError::Client)?;
    // Lists first: the inventory the state kept, then every installation listed now.
    let mut fleet = discovery::fleet::load(config, &store.listings());
    if lists_anything(config) {
        let lister: Arc<dyn Lister> = Arc::new(VercelLister {
            client: client.clone(),
            tokens: tokens.clone(),
        });
        discovery::fleet::refresh(config, &mut fleet, &lister, Some(store.as_ref())).await;
    }
    let jobs = jobs::select(config, &fleet, &options.selectors, Providers::Live)?;
    let installations: BTreeSet<&str> = jobs.iter().map(|j| j.installation.name.as_str()).collect();
    for (installation, e) in failures {
        if installations.contains(installation.as_str()) {
            error!(%installation, "the installation's token cannot be read; its rotations fail, the others go on: {e}");
        }
    }
    let pusher = Arc::new(VercelPusher { client, tokens });
    let executor = Arc::new(Executor::new(
        store.clone(),
        pusher,
        clock,
        Arc::new(KeyLocks::default()),
    ));
    executor.sync(&jobs).await.map_err(OnceError::State)?;
    let jobs = if options.selectors.is_empty() {
        jobs::with_records(config, &fleet, jobs, store.as_ref())
    } else {
        jobs
    };

    let reports = tend_all(&executor, jobs, config).await;
    if let Err(e) = store.flush().await {
        warn!("could not flush the state: {e}");
    }
    Ok(OnceOutcome::Rotated(reports))
}

/// Whether any installation must be found or listed before the jobs are known.
fn lists_anything(config: &Config) -> bool {
    config.discovery.is_some() || config.policies.iter().any(|p| p.is_discovered())
}

/// Dry run: placeholders instead of credentials, a preview instead of a push, state in
/// memory only, no tokens needed.
async fn dry_run(config: &Config, jobs: Vec<Job>, clock: Arc<dyn Clock>) -> Vec<RotationReport> {
    let installations: BTreeSet<&str> = jobs.iter().map(|j| j.installation.name.as_str()).collect();
    for (name, installation) in &config.installations {
        if installations.contains(name.as_str())
            && let Err(e) = token::check_readable(&installation.token)
        {
            warn!(installation = %name, "dry run: the token cannot be read ({e}); a real run would stop here");
        }
    }
    let executor = Arc::new(
        Executor::new(
            Arc::new(MemoryStore::new()),
            Arc::new(PreviewPusher),
            clock,
            Arc::new(KeyLocks::default()),
        )
        .previewing(),
    );
    tend_all(&executor, jobs, config).await
}

async fn tend_all(
    executor: &Arc<Executor>,
    jobs: Vec<Job>,
    config: &Config,
) -> Vec<RotationReport> {
    let limit = Arc::new(Semaphore::new(config.vercel.max_rotations_in_flight()));
    let jobs = jobs.into_iter().map(Arc::new).collect();
    run_bounded(jobs, &limit, |job| {
        let executor = executor.clone();
        async move { executor.tend(&job, Turn::manual()).await }
    })
    .await
}
