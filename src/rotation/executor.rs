//! Performs the protocol: each key's turn feeds [`machine::advance`] the events that come of
//! its actions (the provider's `create`, `verify` and `retire`, the [`Pusher`], the redeploy
//! reminder) and writes each record it returns before the action that follows. Nothing here
//! decides what comes next; the machine does.
//!
//! A turn holds its key's lock, so at most one turn per (policy, resource) runs at a time. The
//! new credential's fields live only inside a turn: rendered into the push and dropped
//! (zeroized by `secrecy`) when it is done.
//!
//! Each rotation event a turn meets (started, pushed, succeeded, failed, held back, retired,
//! retire failed, requested by Vercel) is told through [`super::observe`]: a log line with its
//! message id, a history entry, the metrics.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use tracing::{debug, error, info, warn};

use crate::events::{EventKind, Severity, Trigger, rotation_event};
use crate::metrics::Metrics;

use super::locks::KeyLocks;
use super::machine::{self, Action, Event, Fault, Finished, Rules, Transition, Write};
use super::observe::Observer;
use super::push::{self, Delivery, Pusher};
use super::{Job, Rotated, RotationError, RotationReport, Turn};
use crate::clock::Clock;
use crate::error::Classify;
use crate::fault;
use crate::providers::{Credential, Outcome};
use crate::secret;
use crate::state::{Key, Record, StateError, StateStore, Step};
use crate::vercel::{Notification, NotificationLevel, PushSecret};

/// What one turn holds between actions: never written anywhere.
#[derive(Default)]
struct Work {
    credential: Option<Credential>,
    secrets: Option<Vec<PushSecret>>,
    /// The error behind the last `Failed` event, for the report.
    error: Option<RotationError>,
    preview: Option<(String, String)>,
    rotation_id: String,
    /// The last retirement's provider had nothing to retire (its backend's business).
    nothing_to_retire: bool,
}

pub struct Executor {
    store: Arc<dyn StateStore>,
    pusher: Arc<dyn Pusher>,
    clock: Arc<dyn Clock>,
    locks: Arc<KeyLocks>,
    /// The daemon's metrics; `None` where nobody scrapes them (`run --once`).
    metrics: Option<Arc<Metrics>>,
    /// A dry run's: nothing is made or sent, so no rotation event but a failure is told.
    preview: bool,
}

impl Executor {
    /// `locks` outlive a config reload, so turns started under the old config still exclude
    /// those started under the new one.
    pub fn new(
        store: Arc<dyn StateStore>,
        pusher: Arc<dyn Pusher>,
        clock: Arc<dyn Clock>,
        locks: Arc<KeyLocks>,
    ) -> Executor {
        Executor {
            store,
            pusher,
            clock,
            locks,
            metrics: None,
            preview: false,
        }
    }

    /// For a dry run: what it previews is no rotation, so only failures are told (logged).
    pub fn previewing(mut self) -> Executor {
        self.preview = true;
        self
    }

    /// Counts rotations and pending retirements in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Executor {
        self.metrics = Some(metrics);
        self
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    /// Gives every configured job without a record one, first due at its schedule's next time
    /// after now (cron semantics: a new resource is not rotated at once; `run --once` does
    /// that). One commit for all of them.
    pub async fn sync<'a>(
        &self,
        jobs: impl IntoIterator<Item = &'a Job>,
    ) -> Result<usize, StateError> {
        let now = self.clock.now();
        let new: Vec<Record> = jobs
            .into_iter()
            .filter(|job| job.in_config && !self.store.contains(&job.key))
            .map(|job| new_record(job, now))
            .collect();
        let added = new.len();
        if added > 0 {
            self.store.put_all(new).await?;
        }
        Ok(added)
    }

    /// When something is next to do for this job, from its record.
    pub fn next_wake(&self, job: &Job, record: &Record) -> Option<DateTime<Utc>> {
        machine::next_wake(record, &self.rules(job, "", None, 0.0))
    }

    /// One turn of one key: everything due for it now; with `turn.force`, a rotation whatever
    /// the schedule says (a `run --once`, Vercel's request). Returns the report of the
    /// rotation, if one ran (or was held back, for a forced turn).
    pub async fn tend(&self, job: &Job, turn: Turn) -> Option<RotationReport> {
        let force = turn.force;
        let _turn = self.locks.lock(&job.key).await;
        let report = |result| {
            Some(RotationReport {
                target: job.target(),
                secret_names: job.secret_names(),
                result,
            })
        };
        // A store that can record nothing must not let a provider make anything.
        if let Some(reason) = self.store.fatal() {
            return report(Err(record_error(&job.key, "start", reason, true)));
        }
        let mut record = self
            .store
            .get(&job.key)
            .unwrap_or_else(|| new_record(job, self.clock.now()));
        let tell = Observer {
            store: self.store.as_ref(),
            metrics: self.metrics.as_deref(),
            job,
            trigger: trigger_of(&turn, &record),
            reason: turn.reason.as_deref(),
            preview: self.preview,
        };
        if tell.trigger == Trigger::Vercel {
            tell.requested_by_vercel(self.clock.now()).await;
        }
        // Drawn once per turn: where a finished or failed rotation's next one falls, the id a
        // rotation started now gets, where a retry lands in its backoff window.
        let fresh_id = uuid::Uuid::new_v4().to_string();
        let next = next_due(job, self.clock.now());
        let jitter = rand::rng().random_range(0.0..=1.0);
        let mut work = Work::default();
        let mut result = None;
        // The rotation in progress (or just finished), for the events that name it.
        let mut rotation_id = rotation_of(&record.step).map(str::to_owned);
        let mut event = Event::Wake {
            force,
            grace: turn.grace.filter(|_| force).map(delta),
        };
        loop {
            let told = Told::of(&event);
            let previewed = matches!(event, Event::Previewed);
            let rules = self.rules(job, &fresh_id, next, jitter);
            let mut t = machine::advance(&record, event, &rules);
            if job.in_config && t.write != Write::None {
                stamp(job, &mut t.record);
            }
            if let Err(e) = self.write(&job.key, &t).await {
                // A store that stopped for good was logged at ERROR by `record_error`.
                if !matches!(e, RotationError::Record { fatal: true, .. }) {
                    warn!(policy = %job.policy.name, resource = %job.resource(), "{e}");
                }
                result = Some(Err(e));
                break;
            }
            self.count_retirements(&record, &t.record);
            record = t.record;
            if let Some(id) = rotation_of(&record.step) {
                rotation_id = Some(id.to_owned());
            }
            let now = self.clock.now();
            match told {
                Told::Failed => {
                    if let Some(e) = &work.error {
                        tell.failed(now, rotation_id.as_deref(), e, &record).await;
                    }
                    result = work.error.take().map(Err);
                }
                Told::Pushed(fingerprint) => {
                    tell.pushed(
                        now,
                        rotation_id.as_deref().unwrap_or_default(),
                        &fingerprint,
                    )
                    .await;
                }
                Told::Retired(handle) => {
                    tell.retired(now, &handle, !work.nothing_to_retire).await;
                }
                Told::RetireFailed(handle, message) => {
                    let attempts = record
                        .retirements
                        .iter()
                        .find(|x| x.handle == handle)
                        .map_or(1, |x| x.attempts);
                    tell.retire_failed(now, &handle, &message, attempts).await;
                }
                Told::Nothing => {}
            }
            if previewed && let Some((request_line, preview)) = work.preview.take() {
                result = Some(Ok(Rotated::DryRun {
                    request_line,
                    preview,
                }));
            }
            match t.finished {
                Some(Finished::Rotated {
                    handle,
                    fingerprint,
                    pushed_at,
                    retire_at,
                }) => {
                    tell.succeeded(now, rotation_id.as_deref(), &fingerprint, retire_at)
                        .await;
                    result = Some(Ok(Rotated::Pushed {
                        handle,
                        fingerprint,
                        pushed_at,
                        retire_at,
                    }));
                }
                Some(Finished::Held { until }) => {
                    tell.held_back(now, until).await;
                    if force {
                        result = Some(Err(RotationError::HeldBack { until }));
                    }
                }
                None => {}
            }
            let Some(action) = t.action else { break };
            if let Action::Create { rotation_id, .. } = &action {
                tell.started(now, rotation_id, *rotation_id != fresh_id)
                    .await;
            }
            event = self.perform(job, action, &mut work).await;
        }
        self.supersede(job, &record).await;
        if !job.in_config && machine::can_forget(&record, job.replaced_later) {
            match self.store.remove(&job.key).await {
                Ok(()) => {
                    info!(policy = %job.key.policy, resource = %job.key.resource, "forgot a record the config no longer names: nothing of it is live any more")
                }
                Err(e) => warn!(key = %job.key, "could not forget a record: {e}"),
            }
        }
        result.and_then(report)
    }

    /// Moves the pending-retirements gauge by what a written record changed.
    fn count_retirements(&self, before: &Record, after: &Record) {
        if let Some(metrics) = &self.metrics {
            let delta = after.retirements.len() as i64 - before.retirements.len() as i64;
            if delta != 0 {
                metrics.add_retirements_pending(delta);
            }
        }
    }

    fn rules<'a>(
        &self,
        job: &'a Job,
        fresh_id: &'a str,
        next_due: Option<DateTime<Utc>>,
        jitter: f64,
    ) -> Rules<'a> {
        Rules {
            now: self.clock.now(),
            grace: delta(job.policy.grace),
            alternates: job.provider.alternates(),
            digest: &job.digest,
            in_config: job.in_config,
            next_due,
            fresh_id,
            jitter,
        }
    }

    /// Writes a transition's record as it asks, before its action starts.
    async fn write(&self, key: &Key, t: &Transition) -> Result<(), RotationError> {
        let written = match t.write {
            Write::None => return Ok(()),
            Write::Lazy => self.store.put_lazy(t.record.clone()).await,
            Write::Durable => self.store.put(t.record.clone()).await,
        };
        written.map_err(|e| {
            let fatal = self.store.fatal().is_some();
            record_error(key, t.record.step.name(), e.to_string(), fatal)
        })?;
        // Crash points, right after the step they name is recorded.
        match (&t.record.step, &t.action) {
            (Step::Creating { .. }, Some(Action::Create { .. })) => fault::point("creating"),
            (Step::Created { .. }, _) => fault::point("created"),
            (Step::Pushing { .. }, _) => fault::point("pushing"),
            (Step::Pushed { .. }, _) => fault::point("pushed"),
            _ => {}
        }
        Ok(())
    }

    async fn perform(&self, job: &Job, action: Action, work: &mut Work) -> Event {
        let target = job.target();
        let provider = job.provider.as_ref();
        let kind = provider.kind();
        match action {
            Action::Create {
                rotation_id,
                previous_handle,
            } => {
                work.rotation_id.clone_from(&rotation_id);
                let permit = target_permit(job).await;
                let created = provider
                    .create(&target, &rotation_id, previous_handle.as_deref())
                    .await;
                drop(permit);
                match created {
                    Ok(credential) => {
                        let event = Event::Created {
                            handle: credential.handle.clone(),
                            supersedes: credential.supersedes.clone(),
                        };
                        work.credential = Some(credential);
                        event
                    }
                    Err(source) => fail(
                        work,
                        RotationError::Provider {
                            kind,
                            action: "create",
                            source: Box::new(source),
                        },
                    ),
                }
            }
            Action::Prepare => {
                let Some(credential) = &work.credential else {
                    return fail(work, RotationError::Aborted("no credential to push".into()));
                };
                let permit = target_permit(job).await;
                let verified = provider
                    .verify(&target, &work.rotation_id, credential)
                    .await;
                drop(permit);
                match verified {
                    Ok(Outcome::Done) => {
                        debug!(policy = %target.policy, resource = %target.resource, "new credential verified")
                    }
                    Ok(Outcome::Unsupported) => {}
                    Err(source) => {
                        return fail(
                            work,
                            RotationError::Provider {
                                kind,
                                action: "verify",
                                source: Box::new(source),
                            },
                        );
                    }
                }
                match push::render(&job.policy.secrets, credential, &job.resource_info()) {
                    Ok(secrets) => {
                        work.secrets = Some(secrets);
                        Event::Prepared
                    }
                    Err(e) => fail(work, e),
                }
            }
            Action::Push => {
                let Some(secrets) = work.secrets.take() else {
                    return fail(
                        work,
                        RotationError::Aborted("nothing rendered to push".into()),
                    );
                };
                match self.pusher.push(job, &secrets).await {
                    Ok(Delivery::Sent) => {
                        fault::point("pushed-unrecorded");
                        let fingerprint = secret::fingerprint_all(push::push_values(&secrets));
                        drop(secrets);
                        work.credential = None;
                        Event::Pushed { fingerprint }
                    }
                    Ok(Delivery::Previewed {
                        request_line,
                        preview,
                    }) => {
                        work.preview = Some((request_line, preview));
                        Event::Previewed
                    }
                    Err(e) => {
                        if e.may_have_applied() {
                            warn!(policy = %target.policy, resource = %target.resource, "the push may or may not have reached Vercel, so the new credential stays live; the retry redoes create with the same rotation id");
                        }
                        fail(work, e)
                    }
                }
            }
            Action::Remind { retire_at } => {
                self.remind(job, retire_at).await;
                // The reminder went out; the record still says `pushed`.
                fault::point("notified");
                Event::Reminded
            }
            Action::Retire { handle } => {
                let permit = target_permit(job).await;
                let retired = provider.retire(&target, &handle).await;
                drop(permit);
                fault::point("retiring");
                // Told (logged, kept in the history) once the outcome is recorded.
                work.nothing_to_retire = matches!(retired, Ok(Outcome::Unsupported));
                match retired {
                    Ok(_) => Event::Retired { handle },
                    Err(e) => Event::RetireFailed {
                        handle,
                        message: e.to_string(),
                    },
                }
            }
        }
    }

    /// After this job's push: records of other keys whose credentials it replaced at the
    /// resource (a renamed policy's) start their grace. Checked at every turn, so one that
    /// could not be written is caught up later.
    async fn supersede(&self, job: &Job, record: &Record) {
        let Some(pushed_at) = record.last_success else {
            return;
        };
        for key in job.supersedes.iter().filter(|k| **k != job.key) {
            let _turn = self.locks.lock(key).await;
            let Some(other) = self.store.get(key) else {
                continue;
            };
            if other.last_success.is_some_and(|t| t > pushed_at) {
                continue;
            }
            let Some(updated) = machine::supersede(&other, pushed_at, delta(job.policy.grace))
            else {
                continue;
            };
            let written = self.store.put(updated.clone()).await;
            if written.is_ok() {
                self.count_retirements(&other, &updated);
            }
            match written {
                Ok(()) => {
                    info!(policy = %key.policy, resource = %key.resource, by = %job.key.policy, "the credentials of a record the config no longer names start their grace period: a configured policy now pushes the same secrets to that resource")
                }
                Err(e) => {
                    warn!(key = %key, "could not record that its credentials were superseded (retried at the next turn): {e}")
                }
            }
        }
    }

    /// The redeploy reminder: always a log line; a dashboard banner when the policy asks for
    /// one. A failed banner is logged and never fails the rotation. It names the retirement
    /// time only when the push replaced a credential (`retire_at`): after a first rotation
    /// nothing is retired, and saying otherwise would send users racing a deadline that is not.
    async fn remind(&self, job: &Job, retire_at: Option<DateTime<Utc>>) {
        let names = job.secret_names().join(", ");
        let (installation, resource) = (&job.installation.name, job.resource());
        // INFO: the reminder is part of every success; an alert on WARN must not fire on it.
        match retire_at {
            Some(retire_at) => rotation_event!(
                Severity::Info,
                EventKind::RedeployReminder,
                policy = %job.key.policy,
                installation = %installation,
                installation_id = %job.installation.id,
                resource = %resource,
                secrets = %names,
                retire_at = %retire_at.to_rfc3339(),
                "pushed new values of {names} to resource {resource} of installation {installation}: running deployments keep the old values until the projects connected to it are redeployed; redeploy them before {retire_at}, when the old credential is retired",
                retire_at = retire_at.format("%Y-%m-%d %H:%M UTC"),
            ),
            None => rotation_event!(
                Severity::Info,
                EventKind::RedeployReminder,
                policy = %job.key.policy,
                installation = %installation,
                installation_id = %job.installation.id,
                resource = %resource,
                secrets = %names,
                "pushed new values of {names} to resource {resource} of installation {installation}: running deployments keep the values they started with until the projects connected to it are redeployed; this was the first rotation, so no earlier credential of this policy is retired",
            ),
        }
        if !job.policy.notify_dashboard {
            return;
        }
        let verb = if job.policy.secrets.len() == 1 {
            "was"
        } else {
            "were"
        };
        let message = match retire_at {
            Some(retire_at) => format!(
                "{names} {verb} rotated. Running deployments keep the old values until you redeploy; the old credential stops working at {}.",
                retire_at.format("%Y-%m-%d %H:%M UTC"),
            ),
            None => format!(
                "{names} {verb} rotated. Running deployments keep the values they started with until you redeploy."
            ),
        };
        let notification = Notification {
            level: NotificationLevel::Warn,
            title: "Redeploy to use the rotated credentials".to_owned(),
            message,
            href: None,
        };
        if let Err(e) = self.pusher.notify(job, &notification).await {
            warn!(resource = %resource, "the dashboard notification failed (the rotation itself succeeded): {e}");
        }
    }
}

/// What a turn tells once the transition an event caused is recorded.
enum Told {
    Failed,
    Pushed(String),
    Retired(String),
    RetireFailed(String, String),
    Nothing,
}

impl Told {
    fn of(event: &Event) -> Told {
        match event {
            Event::Failed(_) => Told::Failed,
            Event::Pushed { fingerprint } => Told::Pushed(fingerprint.clone()),
            Event::Retired { handle } => Told::Retired(handle.clone()),
            Event::RetireFailed { handle, message } => {
                Told::RetireFailed(handle.clone(), message.clone())
            }
            _ => Told::Nothing,
        }
    }
}

/// What started a turn, as the history tells it: the turn's own trigger, except that a
/// scheduled turn of a record that waits for a retry (or holds an unfinished rotation) is the
/// retry.
fn trigger_of(turn: &Turn, record: &Record) -> Trigger {
    match turn.trigger {
        Trigger::Schedule if record.retry_at.is_some() || record.step.unfinished().is_some() => {
            Trigger::Retry
        }
        trigger => trigger,
    }
}

/// The rotation id a step names, finished or not.
fn rotation_of(step: &Step) -> Option<&str> {
    match step {
        Step::Pushed { rotation_id, .. } => Some(rotation_id),
        step => step.unfinished(),
    }
}

/// A permit of the job's backend, held around one provider call (never the push), so that
/// one server sees at most its `max-concurrent-per-target` calls at once. `None`: no cap.
async fn target_permit(job: &Job) -> Option<tokio::sync::OwnedSemaphorePermit> {
    // The semaphore is never closed, so acquiring fails never.
    job.target_limit.clone()?.acquire_owned().await.ok()
}

/// Keeps the error for the report and words it for the record.
fn fail(work: &mut Work, error: RotationError) -> Event {
    let fault = Fault {
        message: error.to_string(),
        transient: error.is_transient(),
        may_have_applied: error.may_have_applied(),
    };
    work.error = Some(error);
    Event::Failed(fault)
}

fn record_error(key: &Key, step: &'static str, reason: String, fatal: bool) -> RotationError {
    if fatal {
        error!(key = %key, "the state can no longer be written: {reason}");
    }
    RotationError::Record {
        key: key.clone(),
        step,
        reason,
        fatal,
    }
}

/// What a configured job's record says about where its pushes go.
fn stamp(job: &Job, record: &mut Record) {
    // Only what changed is replaced: a record loaded from the state keeps the strings it
    // shares with its neighbours (`state::intern`).
    if *record.installation != *job.installation.name {
        record.installation = job.installation.name.as_str().into();
    }
    if record.installation_id.as_deref() != Some(job.installation.id.as_str()) {
        record.installation_id = Some(job.installation.id.as_str().into());
    }
    let secrets = job.secret_names();
    if *record.secrets != *secrets {
        record.secrets = secrets.into();
    }
}

fn new_record(job: &Job, now: DateTime<Utc>) -> Record {
    let due = next_due(job, now).unwrap_or(DateTime::<Utc>::MAX_UTC);
    let mut record = Record::new(job.key.clone(), job.installation.name.clone(), now, due);
    if job.in_config {
        stamp(job, &mut record);
    }
    record
}

/// The next due time of a job after `after`, with the policy's jitter.
pub fn next_due(job: &Job, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let due = job.policy.schedule.next_after(after)?;
    let jitter = job.policy.jitter;
    if jitter.is_zero() {
        return Some(due);
    }
    let ms = rand::rng().random_range(0..jitter.as_millis().max(1) as u64);
    Some(due + TimeDelta::milliseconds(ms as i64))
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}
