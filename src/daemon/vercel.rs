//! The daemon's side of `[server]`: starting the listener, answering the rotate requests it
//! hands over, and the [`Probe`] it asks for `/metrics` and `/healthz`.
//!
//! A rotate request names an installation and a resource. Every configured or discovered
//! job (policy, resource) for them is rotated now, as `run --once` would (a forced turn),
//! with Vercel's delay as the grace of the credentials it replaces and its reason logged;
//! none is a 404. A key whose rotation is already under way and not yet pushed (or that
//! Vercel already asked for) joins it rather than starting a second one.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{Daemon, Done, Wakes};
use crate::config::ServerSettings;
use crate::exit;
use crate::metrics::Metrics;
use crate::rotation::{Job, Turn};
use crate::server::{self, Probe, RotateAnswer, RotateRequest, Server};
use crate::state::{Key, StateStore};

/// Rotate requests waiting for the loop; more wait in the server (within its timeout).
const QUEUE: usize = 64;

/// What `/healthz` and `/metrics` read of the daemon.
pub(super) struct DaemonProbe {
    store: Arc<dyn StateStore>,
    metrics: Arc<Metrics>,
    /// True while the scheduler loop runs.
    running: Arc<AtomicBool>,
}

impl Probe for DaemonProbe {
    fn metrics(&self) -> String {
        self.metrics.encode()
    }

    fn healthy(&self) -> bool {
        self.running.load(Ordering::Relaxed) && self.store.fatal().is_none()
    }
}

/// The listener while it runs, and how to stop it.
pub(super) struct Listening {
    server: Server,
    stop: CancellationToken,
    /// The settings it was started with: a reload cannot change them.
    pub(super) settings: ServerSettings,
    pub(super) running: Arc<AtomicBool>,
}

impl Listening {
    /// Stops accepting, lets the requests in flight be answered, and waits for that.
    pub(super) async fn stop(self) {
        self.running.store(false, Ordering::Relaxed);
        self.stop.cancel();
        self.server.stopped().await;
    }
}

/// Starts the listener when the config has `[server]`. `Err` is the exit status, after the
/// error was printed: a port in use may clear (1), a bad address or a refused bind does not
/// (2).
pub(super) async fn start(
    settings: Option<&ServerSettings>,
    store: &Arc<dyn StateStore>,
    metrics: &Arc<Metrics>,
    shutdown: &CancellationToken,
) -> Result<(Option<Listening>, mpsc::Receiver<RotateRequest>), u8> {
    let (requests, received) = mpsc::channel(QUEUE);
    let Some(settings) = settings else {
        return Ok((None, received));
    };
    let running = Arc::new(AtomicBool::new(true));
    let probe = Arc::new(DaemonProbe {
        store: store.clone(),
        metrics: metrics.clone(),
        running: running.clone(),
    });
    let stop = shutdown.child_token();
    match server::start(settings, probe, store.clone(), requests, stop.clone()).await {
        Ok(server) => Ok((
            Some(Listening {
                server,
                stop,
                settings: settings.clone(),
                running,
            }),
            received,
        )),
        Err(e) => {
            eprintln!("error: {e}");
            Err(if crate::error::Classify::is_transient(&e) {
                exit::ROTATION_FAILED
            } else {
                exit::INVALID
            })
        }
    }
}

impl Daemon {
    /// Answers a rotate request and starts (or joins) the rotations it asks for.
    pub(super) fn answer_rotate_request(
        &mut self,
        request: RotateRequest,
        wakes: &mut Wakes,
        in_flight: &mut HashSet<Key>,
        done: mpsc::UnboundedSender<Key>,
    ) {
        let governed: Vec<Arc<Job>> = self
            .generation
            .jobs
            .values()
            .filter(|j| {
                j.in_config
                    && *j.key.resource == *request.resource_id
                    && j.installation.id == request.installation_id
            })
            .cloned()
            .collect();
        if governed.is_empty() {
            let _ = request.answer.send(RotateAnswer::NotGoverned);
            return;
        }
        let mut policies: Vec<String> = governed.iter().map(|j| j.policy.name.clone()).collect();
        policies.sort();
        let grace = request
            .grace
            .map(crate::duration::format)
            .unwrap_or_else(|| "the policy's".to_owned());
        let (mut started, mut joined) = (Vec::new(), Vec::new());
        for job in governed {
            if self.rotating(&job.key, in_flight) {
                joined.push(job.policy.name.clone());
                continue;
            }
            started.push(job.policy.name.clone());
            let turn = Turn::vercel(request.grace, request.reason.clone());
            wakes.set(job.key.clone(), None);
            in_flight.insert(job.key.clone());
            self.vercel_turns.insert(job.key.clone());
            self.spawn_vercel_turn(job, turn, done.clone());
        }
        info!(
            installation_id = %request.installation_id,
            resource_id = %request.resource_id,
            trigger = "vercel",
            caller = %request.caller,
            reason = request.reason.as_deref().unwrap_or(""),
            grace = %grace,
            idempotency_key = request.idempotency_key.as_deref().unwrap_or(""),
            started = %started.join(", "),
            joined = %joined.join(", "),
            "rotating now, as Vercel asked: policies {}",
            policies.join(", ")
        );
        let _ = request.answer.send(RotateAnswer::Accepted { policies });
    }

    /// Whether a rotation of `key` is already under way and not yet pushed, or is one
    /// Vercel already asked for: a request joins it rather than rotating twice.
    fn rotating(&self, key: &Key, in_flight: &HashSet<Key>) -> bool {
        self.vercel_turns.contains(key)
            || (in_flight.contains(key)
                && self
                    .store
                    .get(key)
                    .is_some_and(|r| r.step.unfinished().is_some()))
    }

    fn spawn_vercel_turn(&self, job: Arc<Job>, turn: Turn, done: mpsc::UnboundedSender<Key>) {
        let executor = self.generation.executor.clone();
        let limit = self.generation.limit.clone();
        self.tracker.spawn(async move {
            let _done = Done {
                key: Some(job.key.clone()),
                slot: None,
                done,
            };
            // A slot like any turn's, waited for: the request was already answered.
            let _slot = limit.acquire_owned().await.ok();
            executor.tend(&job, turn).await;
        });
    }
}
