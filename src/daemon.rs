//! The long-running daemon (`run`): sleep until the earliest due time, rotate and retire what
//! is due, survive everything.
//!
//! One loop owns the schedule: a sorted set of (next wake, key). It sleeps until the first
//! entry (or a signal, a finished task, a control request) and never polls. Each due key runs
//! as its own task, made only when one of twice `max-concurrent-requests` slots is free (the
//! client keeps the requests themselves to `max-concurrent-requests`), under the key's lock,
//! through [`Engine::tend`], which records every step before its work. So a `kill -9` at any
//! instant leaves state the next start finishes.
//!
//! Signals: SIGTERM/SIGINT take no new work, give rotations in flight up to
//! [`DRAIN_TIMEOUT`] to reach their end (each step is recorded before its work, so one cut
//! short is redone at the next start), flush the state and exit 0. SIGHUP re-reads the config:
//! an invalid one is logged and the running one stays; a valid one replaces it for work not
//! yet started, leaving rotations in flight alone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::cli::exit;
use crate::clock::Clock;
use crate::config::{self, Config};
use crate::control::{self, Answer};
use crate::engine::{Engine, KeyLocks};
use crate::once::{self, OnceOptions, Selector};
use crate::rotation::Job;
use crate::state::file::FileStore;
use crate::state::{Key, StateStore};
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

/// What stops or reloads the daemon; `main` wires signals to these, tests call them.
#[derive(Clone, Default)]
pub struct Triggers {
    pub shutdown: CancellationToken,
    pub reload: Arc<Notify>,
}

/// Everything built from one config: replaced whole on reload.
struct Generation {
    config: Arc<Config>,
    engine: Arc<Engine>,
    jobs: HashMap<Key, Arc<Job>>,
    limit: Arc<Semaphore>,
}

fn key_of(job: &Job) -> Key {
    Key {
        policy: job.policy.name.clone(),
        resource: job.resource.clone(),
    }
}

/// Builds a generation from a config: tokens read, client made. Errors are for humans.
fn build(
    config: Config,
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
) -> Result<Generation, String> {
    let (tokens, failures) = Tokens::read_all(&config);
    if let Some((name, e)) = failures.into_iter().next() {
        return Err(format!("installation {name}: {e}"));
    }
    let client = VercelClient::new(&config.vercel)
        .map_err(|e| format!("cannot set up the Vercel client: {e}"))?;
    let jobs = once::all_jobs(&config)
        .into_iter()
        .map(|job| (key_of(&job), Arc::new(job)))
        .collect();
    Ok(Generation {
        limit: Arc::new(Semaphore::new(config.vercel.max_rotations_in_flight())),
        engine: Arc::new(Engine::new(store, client, tokens, clock)),
        config: Arc::new(config),
        jobs,
    })
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
    let state_dir = config.state.dir.clone();
    let store: Arc<dyn StateStore> = match FileStore::open(&state_dir).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let generation = match build(config, store.clone(), clock.clone()) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
    };
    let listener = match control::Server::bind(&state_dir) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "error: cannot create the control socket in {}: {e}",
                state_dir.display()
            );
            return exit::INVALID;
        }
    };
    let daemon = Daemon {
        store,
        clock,
        generation,
        locks: Arc::new(KeyLocks::default()),
        tracker: TaskTracker::new(),
        notifier: Notifier::from_env(),
        config_path: config_path.to_owned(),
        state_dir,
    };
    daemon.serve(triggers, listener).await
}

struct Daemon {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    generation: Generation,
    locks: Arc<KeyLocks>,
    tracker: TaskTracker,
    notifier: Notifier,
    config_path: PathBuf,
    state_dir: PathBuf,
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
    async fn serve(mut self, triggers: Triggers, mut listener: control::Server) -> u8 {
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Key>();
        let mut in_flight: HashSet<Key> = HashSet::new();
        let mut wakes = Wakes::default();

        if let Err(e) = self.sync().await {
            eprintln!("error: {e}");
            return exit::INVALID;
        }
        self.rebuild_wakes(&mut wakes, &in_flight);
        let _watchdog = self.notifier.spawn_watchdog(triggers.shutdown.clone());
        self.notifier.ready();
        info!(
            resources = self.generation.jobs.len(),
            state = %self.state_dir.display(),
            "daemon started"
        );

        let mut last_status = String::new();
        loop {
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
                    self.refresh(&mut wakes, &in_flight, key);
                }
                _ = triggers.reload.notified() => {
                    self.reload().await;
                    self.rebuild_wakes(&mut wakes, &in_flight);
                }
                stream = listener.next() => self.spawn_control(stream, done_tx.clone()),
                // Due keys wait for a slot, which a scheduled task or a handed-over
                // `run --once` frees; the loop then takes it.
                Ok(_) = limit.acquire(), if waiting_for_slot => {}
                _ = tokio::time::sleep_until(wake_at), if !waiting_for_slot => {}
            }
        }

        self.notifier.stopping();
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
        exit::OK
    }

    async fn sync(&self) -> Result<usize, crate::state::StateError> {
        self.generation
            .engine
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
        let at = match (self.generation.jobs.get(&key), record) {
            (Some(job), Some(record)) => Engine::next_wake(job, &record),
            _ => None,
        };
        // A key that is due again the moment its task ended made no progress (its state could
        // not be written, say): wait a little rather than spin on it.
        let earliest =
            self.clock.now() + chrono::TimeDelta::from_std(RETRY_FLOOR).unwrap_or_default();
        wakes.set(key, at.map(|at| at.max(earliest)));
    }

    fn rebuild_wakes(&self, wakes: &mut Wakes, in_flight: &HashSet<Key>) {
        *wakes = Wakes::default();
        let mut orphans = 0;
        // One walk over the records: `sync` made a record for every job before this. A job
        // without one (its `sync` failed after a reload, which was logged) gets no wake until
        // the next reload or restart records it, as before.
        self.store.visit(&mut |record| {
            let Some((key, job)) = self.generation.jobs.get_key_value(&record.key) else {
                orphans += 1;
                return;
            };
            if record.consecutive_failures > 0 || record.stopped.is_some() {
                wakes.failing.insert(key.clone());
            }
            if !in_flight.contains(key) {
                wakes.set(key.clone(), Engine::next_wake(job, record));
            }
        });
        if orphans > 0 {
            warn!(
                orphans,
                "the state holds resources no longer in the config; they are left alone (see `status`)"
            );
        }
    }

    fn spawn_tend(
        &self,
        job: Arc<Job>,
        key: Key,
        slot: OwnedSemaphorePermit,
        done: mpsc::UnboundedSender<Key>,
    ) {
        let (engine, locks) = (self.generation.engine.clone(), self.locks.clone());
        self.tracker.spawn(async move {
            tend_exclusive(&engine, &locks, &job, &key, false).await;
            // Released before the loop hears of the end. A waiting handed-over `run --once`
            // may take it first (the semaphore is fair); the loop then waits for the next.
            drop(slot);
            let _ = done.send(key);
        });
    }

    /// A `run --once` handed over the control socket: rotate the selected keys now, answer
    /// with the summary and exit status a direct `run --once` would have printed.
    fn spawn_control(&self, mut stream: control::Connection, done: mpsc::UnboundedSender<Key>) {
        let config = self.generation.config.clone();
        let jobs = self.generation.jobs.clone();
        let engine = self.generation.engine.clone();
        let limit = self.generation.limit.clone();
        let locks = self.locks.clone();
        self.tracker.spawn(async move {
            let request = match control::read_request(&mut stream).await {
                Ok(r) => r,
                Err(reason) => {
                    let _ = control::write_answer(
                        &mut stream,
                        &Answer {
                            exit: exit::INVALID,
                            output: format!("error: {reason}\n"),
                        },
                    )
                    .await;
                    return;
                }
            };
            let selectors: Result<Vec<Selector>, String> =
                request.policies.iter().map(|p| p.parse()).collect();
            let options = match selectors {
                Ok(selectors) => OnceOptions {
                    selectors,
                    dry_run: false,
                },
                Err(e) => {
                    let _ = control::write_answer(
                        &mut stream,
                        &Answer {
                            exit: exit::INVALID,
                            output: format!("error: --policy {e}\n"),
                        },
                    )
                    .await;
                    return;
                }
            };
            let keys = match once::select_keys(&config, &options) {
                Ok(keys) => keys,
                Err(e) => {
                    let _ = control::write_answer(
                        &mut stream,
                        &Answer {
                            exit: exit::INVALID,
                            output: format!("error: {e}\n"),
                        },
                    )
                    .await;
                    return;
                }
            };
            info!(
                resources = keys.len(),
                "rotating now, as asked over the control socket"
            );
            let targets: Vec<(Key, Arc<Job>)> = keys
                .into_iter()
                .filter_map(|key| jobs.get(&key).cloned().map(|job| (key, job)))
                .collect();
            let reports = once::run_bounded(targets, &limit, |(key, job)| {
                let (engine, locks, done) = (engine.clone(), locks.clone(), done.clone());
                async move {
                    let report = tend_exclusive(&engine, &locks, &job, &key, true).await;
                    let _ = done.send(key);
                    report
                }
            })
            .await;
            let mut output = Vec::new();
            let _ = once::print_summary(&mut output, &reports);
            let code = if reports.iter().any(|r| r.result.is_err()) {
                exit::ROTATION_FAILED
            } else {
                exit::OK
            };
            let answer = Answer {
                exit: code,
                output: String::from_utf8_lossy(&output).into_owned(),
            };
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
                build(config, self.store.clone(), self.clock.clone())
            });
        match result {
            Ok(generation) => {
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

/// One key's turn, in a slot among [`crate::config::VercelSettings::max_rotations_in_flight`]
/// that the caller holds: the key's lock (one task per key, whoever asks), then whatever is
/// due (everything, with `force`).
async fn tend_exclusive(
    engine: &Engine,
    locks: &KeyLocks,
    job: &Job,
    key: &Key,
    force: bool,
) -> Option<crate::rotation::RotationReport> {
    let _guard = locks.lock(key).await;
    engine.tend(job, force).await
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
