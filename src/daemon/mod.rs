//! The long-running daemon (`run`): sleep until the earliest due time, rotate and retire what
//! is due, survive everything.
//!
//! One loop owns the schedule: a sorted set of (next wake, key). It sleeps until the first
//! entry (or a signal, a finished task, a control request) and never polls. Each due key runs
//! as its own task, made only when one of twice `max-concurrent-requests` slots is free (the
//! client keeps the requests themselves to `max-concurrent-requests`), as one turn of the
//! rotation protocol ([`Executor::tend`]), which takes the key's lock and records every step
//! before its work. So a `kill -9` at any instant leaves state the next start finishes. The
//! records the config no longer names are scheduled too, for their retirements.
//!
//! With `[server]`, the loop also answers the rotate requests the listener hands over
//! (`daemon/vercel.rs`): the keys governing the resource get a forced turn with Vercel's
//! delay as their grace, or join the one under way.
//!
//! The daemon owns the [`Metrics`]: the Vercel client counts its requests in them, the
//! executor its rotations and pending retirements, and the loop keeps each governed
//! resource's last-success and next-due gauges (set whenever its record is looked at again,
//! removed when it leaves).
//!
//! Signals: SIGTERM/SIGINT take no new work, stop the listener, give rotations in flight up to
//! [`DRAIN_TIMEOUT`] to reach their end (each step is recorded before its work, so one cut
//! short is redone at the next start), flush the state and exit 0. SIGHUP re-reads the config:
//! an invalid one is logged and the running one stays; a valid one replaces it for work not
//! yet started, leaving rotations in flight alone.

mod fleet;
mod vercel;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::clock::Clock;
use crate::config::{self, Config};
use crate::control::{self, Answer};
use crate::discovery::{Lister, Update, VercelLister};
use crate::exit;
use crate::jobs::{self, Builders, Claims, Fleet, Providers, Selector};
use crate::metrics::Metrics;
use crate::rotation::batch::run_bounded;
use crate::rotation::executor::Executor;
use crate::rotation::locks::KeyLocks;
use crate::rotation::push::{Pusher, VercelPusher};
use crate::rotation::{Job, RotationReport, Turn};
use crate::server::RotateRequest;
use crate::state::{self, Key, Record, StateStore};
use crate::summary;
use crate::systemd::Notifier;
use crate::token::Tokens;
use crate::vercel::VercelClient;

/// How long a stop waits for rotations in flight.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest single sleep. The wall clock can jump (NTP, suspend) while tokio's monotonic
/// timer does not see it; waking this often re-reads the wall clock at negligible cost.
const MAX_SLEEP: Duration = Duration::from_secs(3600);
/// The least time between two runs of one key's task.
const RETRY_FLOOR: Duration = Duration::from_secs(1);
/// The most discovery updates applied in one go.
const UPDATE_BATCH: usize = 1024;

/// What stops or reloads the daemon; `main` wires signals to these, tests call them.
#[derive(Clone, Default)]
pub struct Triggers {
    pub shutdown: CancellationToken,
    pub reload: Arc<Notify>,
}

/// Everything built from one config: replaced whole on reload.
struct Generation {
    config: Arc<Config>,
    executor: Arc<Executor>,
    /// The configured and discovered keys, and the records neither names that still hold
    /// something to retire.
    jobs: HashMap<Key, Arc<Job>>,
    limit: Arc<Semaphore>,
    builders: Builders,
    /// Who alternates which database users and pushes which secret of which resource.
    claims: Claims,
    /// The discovered jobs (not the records they left), by installation id.
    by_installation: HashMap<String, HashSet<Key>>,
    /// Stops this generation's discovery task, if it has one.
    discovery: Option<CancellationToken>,
}

impl Drop for Generation {
    fn drop(&mut self) {
        if let Some(stop) = &self.discovery {
            stop.cancel();
        }
    }
}

/// What a config's jobs push through and list from.
pub struct Vercel {
    pub pusher: Arc<dyn Pusher>,
    pub lister: Arc<dyn Lister>,
}

/// Makes the pusher and lister for a config: Vercel with the config's tokens in production; a
/// fake in the daemon's own tests. Errors are for humans.
pub type PusherFactory = Arc<dyn Fn(&Config) -> Result<Vercel, String> + Send + Sync>;

/// What `run` pushes through and lists from: the Vercel API, with every configured
/// installation's token read now (one that cannot be read is logged and read again when its
/// calls need it); discovered installations' tokens are read when their calls need them.
/// Every request is counted in `metrics`.
pub fn vercel_pushers(metrics: Arc<Metrics>) -> PusherFactory {
    Arc::new(move |config: &Config| {
        let (tokens, failures) = Tokens::read_all(config);
        // One unreadable token must not hold up every other installation: its pushes fail
        // (and are retried, reading it again) while the others rotate.
        for (name, e) in failures {
            error!(installation = %name, "the installation's token cannot be read; its rotations fail until it can be, the others go on: {e}");
        }
        let client = VercelClient::new(&config.vercel)
            .map_err(|e| format!("cannot set up the Vercel client: {e}"))?
            .with_metrics(metrics.clone());
        let tokens = Arc::new(tokens);
        Ok(Vercel {
            pusher: Arc::new(VercelPusher {
                client: client.clone(),
                tokens: tokens.clone(),
            }),
            lister: Arc::new(VercelLister { client, tokens }),
        })
    })
}

/// What the daemon is made of besides its config: production's in [`run`], fakes in tests.
pub struct Parts {
    pub store: Arc<dyn StateStore>,
    pub pushers: PusherFactory,
    pub clock: Arc<dyn Clock>,
    /// What `GET /metrics` shows; the pushers count their requests in it too.
    pub metrics: Arc<Metrics>,
}

/// Runs the daemon until a stop signal. Returns the exit status.
pub async fn run(config_path: &Path, triggers: Triggers, clock: Arc<dyn Clock>) -> u8 {
    let config = match config::load(config_path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let store = match state::open(&config.state).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            // A full disk or an I/O error may clear: systemd restarts on 1, not on 2.
            return if e.is_usage() {
                exit::INVALID
            } else {
                exit::ROTATION_FAILED
            };
        }
    };
    let metrics = Arc::new(Metrics::new());
    let parts = Parts {
        store,
        pushers: vercel_pushers(metrics.clone()),
        clock,
        metrics,
    };
    serve(config_path, config, triggers, parts).await
}

/// Runs the daemon on `parts` until a stop signal (or a store that can no longer record).
pub async fn serve(config_path: &Path, config: Config, triggers: Triggers, parts: Parts) -> u8 {
    let state_dir = config.state.dir.clone();
    let server_settings = config.server.clone();
    let locks = Arc::new(KeyLocks::default());
    let fleet = crate::discovery::fleet::load(&config, &parts.store.listings());
    let (updates_tx, updates_rx) = mpsc::unbounded_channel();
    let generation = match build(config, &parts, &locks, &fleet, &updates_tx) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let (listening, rotate_requests) = match vercel::start(
        server_settings.as_ref(),
        &parts.store,
        &parts.metrics,
        &triggers.shutdown,
    )
    .await
    {
        Ok(started) => started,
        Err(status) => return status,
    };
    let listener = match control::Server::bind(&state_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot create the control socket in {}: {e}",
                state_dir.display()
            );
            if let Some(listening) = listening {
                listening.stop().await;
            }
            return exit::ROTATION_FAILED;
        }
    };
    let daemon = Daemon {
        store: parts.store.clone(),
        clock: parts.clock.clone(),
        pushers: parts.pushers.clone(),
        metrics: parts.metrics.clone(),
        generation,
        fleet,
        updates: updates_tx,
        locks,
        tracker: TaskTracker::new(),
        notifier: Notifier::from_env(),
        config_path: config_path.to_owned(),
        state_dir,
        listening,
        vercel_turns: HashSet::new(),
    };
    daemon
        .serve(triggers, listener, updates_rx, rotate_requests)
        .await
}

/// Builds a generation from a config: pusher made, jobs made from the config and the fleet
/// (with the records neither names), discovery started. Discovery's first pass then lists
/// every installation; until it has, the fleet is what the persisted inventory says.
fn build(
    config: Config,
    parts: &Parts,
    locks: &Arc<KeyLocks>,
    fleet: &Fleet,
    updates: &mpsc::UnboundedSender<Update>,
) -> Result<Generation, String> {
    let vercel = (parts.pushers)(&config)?;
    let builders = Builders::new(&config, Providers::Live);
    let mut claims = Claims::default();
    let found = builders.all(&config, fleet, &mut claims);
    let jobs: HashMap<Key, Arc<Job>> =
        jobs::with_records(&config, fleet, found, parts.store.as_ref())
            .into_iter()
            .map(|job| (job.key.clone(), Arc::new(job)))
            .collect();
    let config = Arc::new(config);
    let discovery = fleet::start_discovery(&config, fleet, vercel.lister.clone(), updates.clone());
    parts
        .metrics
        .set_policies(config.policies.iter().map(|p| p.name.as_str()));
    Ok(Generation {
        limit: Arc::new(Semaphore::new(config.vercel.max_rotations_in_flight())),
        executor: Arc::new(
            Executor::new(
                parts.store.clone(),
                vercel.pusher,
                parts.clock.clone(),
                locks.clone(),
            )
            .with_metrics(parts.metrics.clone()),
        ),
        by_installation: fleet::by_installation(&jobs),
        config,
        jobs,
        builders,
        claims,
        discovery,
    })
}

struct Daemon {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    pushers: PusherFactory,
    metrics: Arc<Metrics>,
    generation: Generation,
    /// Every installation known, with its last listing: kept across reloads.
    fleet: Fleet,
    /// Where each generation's discovery task sends what it finds.
    updates: mpsc::UnboundedSender<Update>,
    locks: Arc<KeyLocks>,
    tracker: TaskTracker,
    notifier: Notifier,
    config_path: PathBuf,
    state_dir: PathBuf,
    /// The `[server]` listener, while it runs.
    listening: Option<vercel::Listening>,
    /// Keys with a turn Vercel asked for in flight: another request joins it.
    vercel_turns: HashSet<Key>,
}

/// The schedule: the next wake of every key not in flight, earliest first.
#[derive(Default)]
struct Wakes {
    order: BTreeSet<(DateTime<Utc>, Key)>,
    by_key: HashMap<Key, DateTime<Utc>>,
    /// Keys whose last attempt failed, for the status line (kept here so the status never
    /// needs a scan of every record).
    failing: HashSet<Key>,
}

impl Wakes {
    fn set(&mut self, key: Key, at: Option<DateTime<Utc>>) {
        if let Some(old) = self.by_key.remove(&key) {
            self.order.remove(&(old, key.clone()));
        }
        if let Some(at) = at {
            self.order.insert((at, key.clone()));
            self.by_key.insert(key, at);
        }
    }

    fn pop_due(&mut self, now: DateTime<Utc>) -> Option<Key> {
        let (at, _) = self.order.first()?;
        if *at > now {
            return None;
        }
        let (_, key) = self.order.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    fn first(&self) -> Option<DateTime<Utc>> {
        self.order.first().map(|(at, _)| *at)
    }
}

impl Daemon {
    async fn serve(
        mut self,
        triggers: Triggers,
        mut listener: control::Server,
        mut updates: mpsc::UnboundedReceiver<Update>,
        mut rotate_requests: mpsc::Receiver<RotateRequest>,
    ) -> u8 {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Key>();
        let mut in_flight: HashSet<Key> = HashSet::new();
        let mut wakes = Wakes::default();

        if let Err(e) = self.sync().await {
            eprintln!("error: {e}");
            return exit::ROTATION_FAILED;
        }
        // From here on the executor moves the gauge by what each write changes.
        let mut pending = 0;
        self.store
            .visit(&mut |record| pending += record.retirements.len());
        self.metrics.set_retirements_pending(pending);
        self.rebuild_wakes(&mut wakes, &in_flight);
        let _watchdog = self.notifier.spawn_watchdog(triggers.shutdown.clone());
        self.notifier.ready();
        info!(
            resources = self.generation.jobs.len(),
            state = %self.state_dir.display(),
            "daemon started"
        );

        let mut last_status = String::new();
        let mut status = exit::OK;
        loop {
            // A store that can record nothing more makes every turn fail before it starts:
            // exit, so systemd restarts the daemon and the restart re-reads what is on disk.
            if let Some(reason) = self.store.fatal() {
                error!(
                    "the state can no longer be written ({reason}); stopping so that a restart re-reads it"
                );
                status = exit::ROTATION_FAILED;
                break;
            }
            let now = self.clock.now();
            // A due key gets a task only with a free slot: 10,000 keys due at once (one
            // schedule for all) must not be 10,000 parked tasks of ~4 KB each, which the
            // heap would keep after the burst.
            let limit = self.generation.limit.clone();
            while wakes.first().is_some_and(|at| at <= now) {
                let Ok(slot) = limit.clone().try_acquire_owned() else {
                    break;
                };
                let Some(key) = wakes.pop_due(now) else {
                    break;
                };
                let Some(job) = self.generation.jobs.get(&key).cloned() else {
                    continue;
                };
                in_flight.insert(key.clone());
                self.spawn_tend(job, key, slot, done_tx.clone());
            }
            let waiting_for_slot = wakes.first().is_some_and(|at| at <= now);
            let status = self.status_line(&wakes, &in_flight);
            if status != last_status {
                self.notifier.status(&status);
                last_status = status;
            }
            let wake_at = match wakes.first() {
                Some(at) => self
                    .clock
                    .instant_at(at)
                    .min(tokio::time::Instant::now() + MAX_SLEEP),
                None => tokio::time::Instant::now() + MAX_SLEEP,
            };
            tokio::select! {
                biased;
                _ = triggers.shutdown.cancelled() => break,
                Some(key) = done_rx.recv() => {
                    in_flight.remove(&key);
                    self.vercel_turns.remove(&key);
                    self.refresh(&mut wakes, &in_flight, key);
                }
                _ = triggers.reload.notified() => {
                    self.reload().await;
                    self.rebuild_wakes(&mut wakes, &in_flight);
                }
                Some(update) = updates.recv() => {
                    // Everything already sent is applied together: the first pass of a large
                    // fleet is thousands of listings, and each batch costs one sync.
                    let mut batch = vec![update];
                    while batch.len() < UPDATE_BATCH {
                        match updates.try_recv() {
                            Ok(update) => batch.push(update),
                            Err(_) => break,
                        }
                    }
                    self.apply(batch, &mut wakes, &in_flight).await;
                }
                stream = listener.next() => self.spawn_control(stream, done_tx.clone()),
                Some(request) = rotate_requests.recv(), if self.listening.is_some() => {
                    self.answer_rotate_request(request, &mut wakes, &mut in_flight, done_tx.clone());
                }
                // Due keys wait for a slot, which a scheduled task or a handed-over
                // `run --once` frees; the loop then takes it.
                Ok(_) = limit.acquire(), if waiting_for_slot => {}
                _ = tokio::time::sleep_until(wake_at), if !waiting_for_slot => {}
            }
        }

        self.notifier.stopping();
        // Rotate requests not yet answered get a 503 (Vercel sends them again); the listener
        // stops before the rotations in flight are waited for.
        drop(rotate_requests);
        if let Some(listening) = self.listening.take() {
            listening.stop().await;
        }
        info!(
            in_flight = in_flight.len(),
            "stopping: no new work; waiting for rotations in flight"
        );
        self.tracker.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, self.tracker.wait())
            .await
            .is_err()
        {
            warn!(
                "{} rotation(s) did not finish within {}s; each stopped at a recorded step and is finished at the next start",
                self.tracker.len(),
                DRAIN_TIMEOUT.as_secs()
            );
        }
        if let Err(e) = self.store.flush().await {
            error!("could not flush the state: {e}");
        }
        let _ = std::fs::remove_file(control::socket_path(&self.state_dir));
        info!("stopped");
        status
    }

    async fn sync(&self) -> Result<usize, crate::state::StateError> {
        self.generation
            .executor
            .sync(self.generation.jobs.values().map(Arc::as_ref))
            .await
    }

    fn refresh(&self, wakes: &mut Wakes, in_flight: &HashSet<Key>, key: Key) {
        if in_flight.contains(&key) {
            return;
        }
        let record = self.store.get(&key);
        if record
            .as_ref()
            .is_some_and(|r| r.consecutive_failures > 0 || r.stopped.is_some())
        {
            wakes.failing.insert(key.clone());
        } else {
            wakes.failing.remove(&key);
        }
        let job = self.generation.jobs.get(&key);
        match (job, &record) {
            (Some(job), Some(record)) if job.in_config => self.show(record),
            _ => self.metrics.remove_resource(&key.policy, &key.resource),
        }
        let at = match (job, record) {
            (Some(job), Some(record)) => self.generation.executor.next_wake(job, &record),
            _ => None,
        };
        // A key that is due again the moment its task ended made no progress (its state could
        // not be written, say): wait a little rather than spin on it.
        let earliest =
            self.clock.now() + chrono::TimeDelta::from_std(RETRY_FLOOR).unwrap_or_default();
        wakes.set(key, at.map(|at| at.max(earliest)));
    }

    /// Sets a governed resource's gauges from its record.
    fn show(&self, record: &Record) {
        let next = if record.stopped.is_some() {
            None
        } else {
            record.retry_at.or(record.next_due)
        };
        // The key's own ids: a new series shares them.
        self.metrics.set_resource(
            record.key.policy.clone(),
            record.key.resource.clone(),
            record.last_success,
            next,
        );
    }

    fn rebuild_wakes(&self, wakes: &mut Wakes, in_flight: &HashSet<Key>) {
        *wakes = Wakes::default();
        let now = self.clock.now();
        // The governed resources' gauges, afresh: one a reload or discovery removed goes.
        let jobs = &self.generation.jobs;
        self.metrics.retain_resources(|policy, resource| {
            let key = Key::new(policy.clone(), resource.clone());
            jobs.get(&key).is_some_and(|j| j.in_config)
        });
        // One walk over the records: `sync` made a record for every configured job before
        // this. A job without one (its `sync` failed after a reload, which was logged) gets no
        // wake until the next reload or restart records it. A record with no job at all is one
        // nobody can retire: `jobs::with_records` logged it.
        self.store.visit(&mut |record| {
            let Some((key, job)) = self.generation.jobs.get_key_value(&record.key) else {
                return;
            };
            if record.consecutive_failures > 0 || record.stopped.is_some() {
                wakes.failing.insert(key.clone());
            }
            if job.in_config {
                self.show(record);
            }
            if !in_flight.contains(key) {
                let at = self.generation.executor.next_wake(job, record);
                // A record the config no longer names gets one turn at start even with
                // nothing due: the turn forgets it if nothing of it is live.
                let at = if job.in_config { at } else { at.or(Some(now)) };
                wakes.set(key.clone(), at);
            }
        });
    }

    fn spawn_tend(
        &self,
        job: Arc<Job>,
        key: Key,
        slot: OwnedSemaphorePermit,
        done: mpsc::UnboundedSender<Key>,
    ) {
        let executor = self.generation.executor.clone();
        self.tracker.spawn(async move {
            // Tells the loop the key is free however the turn ends, a panic included: a key
            // left "in flight" would never be scheduled again. The slot is released first, so
            // a waiting handed-over `run --once` may take it (the semaphore is fair).
            let _done = Done {
                key: Some(key),
                slot: Some(slot),
                done,
            };
            executor.tend(&job, Turn::scheduled()).await;
        });
    }

    /// A `run --once` handed over the control socket: rotate the selected keys now, answer
    /// with the summary and exit status a direct `run --once` would have printed.
    fn spawn_control(&self, mut stream: control::Connection, done: mpsc::UnboundedSender<Key>) {
        let config = self.generation.config.clone();
        let jobs = self.generation.jobs.clone();
        let executor = self.generation.executor.clone();
        let limit = self.generation.limit.clone();
        self.tracker.spawn(async move {
            let targets = match handed_over(&mut stream, &config, &jobs).await {
                Ok(targets) => targets,
                Err(output) => {
                    // A bad or empty request (a client that went away, say): answered if the
                    // client still listens, and not worth a log line otherwise.
                    let answer = Answer {
                        exit: exit::INVALID,
                        output,
                    };
                    let _ = control::write_answer(&mut stream, &answer).await;
                    return;
                }
            };
            info!(
                resources = targets.len(),
                "rotating now, as asked over the control socket"
            );
            let reports = run_bounded(targets, &limit, |job| {
                let (executor, done) = (executor.clone(), done.clone());
                async move {
                    let _done = Done {
                        key: Some(job.key.clone()),
                        slot: None,
                        done,
                    };
                    executor.tend(&job, Turn::manual()).await
                }
            })
            .await;
            let answer = answer_for(&reports);
            if let Err(e) = control::write_answer(&mut stream, &answer).await {
                warn!("control socket: could not answer (the rotations themselves are done): {e}");
            }
        });
    }

    /// SIGHUP: a valid new config replaces the running one for work not yet started; an
    /// invalid one is logged and changes nothing.
    async fn reload(&mut self) {
        self.notifier.reloading();
        let result = config::load(&self.config_path)
            .map_err(|e| e.to_string())
            .and_then(|config| {
                if config.state.dir != self.state_dir {
                    return Err(format!(
                        "[state] dir changed from {} to {}: that takes a restart",
                        self.state_dir.display(),
                        config.state.dir.display()
                    ));
                }
                let parts = Parts {
                    store: self.store.clone(),
                    pushers: self.pushers.clone(),
                    clock: self.clock.clone(),
                    metrics: self.metrics.clone(),
                };
                // The fleet keeps what discovery knows; the new config decides which of it
                // is served (a policy added with `installations = "*"` serves every listing
                // already known, without waiting for the next pass).
                if config.server.as_ref() != self.listening.as_ref().map(|l| &l.settings) {
                    warn!("[server] changed: that takes a restart; the listener keeps its settings until then");
                }
                let fleet = rebase_fleet(&self.fleet, &config);
                let generation = build(config, &parts, &self.locks, &fleet, &self.updates)?;
                Ok((generation, fleet))
            });
        match result {
            Ok((generation, fleet)) => {
                self.fleet = fleet;
                let old: HashSet<&Key> = self.generation.jobs.keys().collect();
                let new: HashSet<&Key> = generation.jobs.keys().collect();
                let added = new.difference(&old).count();
                let removed = old.difference(&new).count();
                self.generation = generation;
                match self.sync().await {
                    Ok(_) => info!(
                        added,
                        removed,
                        resources = self.generation.jobs.len(),
                        "config reloaded"
                    ),
                    Err(e) => {
                        error!("config reloaded, but new resources could not be recorded: {e}")
                    }
                }
            }
            Err(e) => error!("config reload refused; the running config stays: {e}"),
        }
        self.notifier.ready();
    }

    fn status_line(&self, wakes: &Wakes, in_flight: &HashSet<Key>) -> String {
        let failing = wakes.failing.len();
        let next = wakes.first().map_or_else(
            || "none".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        );
        format!(
            "{} resources, {} in flight, next due {next}, {failing} failing",
            self.generation.jobs.len(),
            in_flight.len()
        )
    }
}

/// Ends a key's turn for the loop: frees its slot, then says the key is done. On drop, so a
/// turn that panics still ends.
struct Done {
    key: Option<Key>,
    slot: Option<OwnedSemaphorePermit>,
    done: mpsc::UnboundedSender<Key>,
}

impl Drop for Done {
    fn drop(&mut self) {
        drop(self.slot.take());
        if let Some(key) = self.key.take() {
            let _ = self.done.send(key);
        }
    }
}

/// Reads a handed-over request and picks its jobs; `Err` is the error text to answer with.
async fn handed_over(
    stream: &mut tokio::net::UnixStream,
    config: &Config,
    jobs: &HashMap<Key, Arc<Job>>,
) -> Result<Vec<Arc<Job>>, String> {
    let request = control::read_request(stream)
        .await
        .map_err(|reason| format!("error: {reason}\n"))?;
    let selectors = request
        .policies
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<Selector>, String>>()
        .map_err(|e| format!("error: --policy {e}\n"))?;
    let fail = |e: jobs::SelectError| format!("error: {e}\n");
    jobs::check_policies(config, &selectors).map_err(fail)?;
    let in_config = jobs.values().filter(|j| j.in_config).map(|j| &j.key);
    jobs::check_resources(&selectors, in_config).map_err(fail)?;
    let order: HashMap<&str, usize> = config
        .policies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.name.as_str(), i))
        .collect();
    let mut targets: Vec<Arc<Job>> = jobs
        .values()
        .filter(|j| j.in_config && jobs::is_selected(&selectors, &j.key))
        .cloned()
        .collect();
    // In config order, as a direct `run --once` reports them.
    targets.sort_by(|a, b| {
        let rank = |j: &Job| order.get(&*j.key.policy).copied().unwrap_or(usize::MAX);
        rank(a).cmp(&rank(b)).then_with(|| a.key.cmp(&b.key))
    });
    if selectors.is_empty() {
        // As a direct `run --once`: also the records the config no longer names.
        targets.extend(jobs.values().filter(|j| !j.in_config).cloned());
    }
    Ok(targets)
}

/// The fleet after a reload: the new config's installation tables, the discovered
/// installations still discovered, and every listing and departed resource known.
fn rebase_fleet(old: &Fleet, config: &Config) -> Fleet {
    let mut fleet = Fleet::from_config(config);
    for member in old.members() {
        if !member.configured && config.discovery.is_some() {
            fleet.add_discovered((*member.installation).clone());
        }
        if let Some(listed) = &member.listed {
            fleet.set_listed(&member.installation.id, listed.to_vec());
        }
    }
    for departed in old.departed_resources() {
        fleet.add_departed(departed.clone());
    }
    fleet
}

fn answer_for(reports: &[RotationReport]) -> Answer {
    let mut output = Vec::new();
    let _ = summary::print_summary(&mut output, reports);
    Answer {
        exit: summary::exit_status(reports),
        output: String::from_utf8_lossy(&output).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::TokioClock;

    fn key(r: &str) -> Key {
        Key {
            policy: "p".into(),
            resource: r.into(),
        }
    }

    #[test]
    fn wakes_pop_in_time_order_and_replace_per_key() {
        let t = |h: i64| DateTime::<Utc>::from_timestamp(h * 3600, 0).unwrap();
        let mut w = Wakes::default();
        w.set(key("a"), Some(t(5)));
        w.set(key("b"), Some(t(2)));
        w.set(key("c"), Some(t(9)));
        w.set(key("a"), Some(t(1))); // replaces a's 5
        w.set(key("c"), None); // c has nothing due
        assert_eq!(w.first(), Some(t(1)));
        assert_eq!(w.pop_due(t(3)), Some(key("a")));
        assert_eq!(w.pop_due(t(3)), Some(key("b")));
        assert_eq!(w.pop_due(t(3)), None);
        assert_eq!(w.first(), None);
    }

    /// The loop sleeps until the earliest due time: with tokio's clock paused, a wake three
    /// days out fires exactly then and not a moment before.
    #[tokio::test(start_paused = true)]
    async fn sleeping_until_a_due_time_wakes_exactly_then() {
        let clock =
            TokioClock::starting_at(DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap());
        let due = clock.now() + chrono::TimeDelta::days(3);
        let sleep = tokio::time::sleep_until(clock.instant_at(due));
        tokio::pin!(sleep);
        tokio::time::advance(Duration::from_secs(3 * 86400 - 1)).await;
        assert!(futures_poll(&mut sleep).is_pending(), "woke early");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            futures_poll(&mut sleep).is_ready(),
            "did not wake at the due time"
        );
        assert_eq!(clock.now(), due);
    }

    fn futures_poll<F: std::future::Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        std::pin::Pin::new(f).poll(&mut cx)
    }
}
