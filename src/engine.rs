//! The engine: what is due for a (policy, resource), doing it, and keeping its state record
//! true. `run --once` and the daemon both go through [`Engine::tend`], so a rotation behaves
//! the same whoever starts it.
//!
//! Per record, in order: an unfinished rotation (a crash or a transient failure left it in
//! `creating`, `created` or `pushing`) is redone from `create` with the same rotation id; one
//! left in `pushed` or `notified` is finished; a rotation whose time has come (schedule,
//! backoff retry, or a forced `run --once`) runs; old credentials whose grace is over are
//! retired. A permanent failure stops the record until its policy's config changes.
//!
//! The engine assumes one task per key at a time; callers hold that key's [`KeyLocks`] lock.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use rand::Rng;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::clock::Clock;
use crate::error::Classify;
use crate::providers::Outcome;
use crate::rotation::{
    Job, RecordError, Rotated, RotationError, RotationReport, Rotator, Start, Step, StepRecorder,
};
use crate::state::{Failure, Key, Record, Retirement, StateError, StateStore, Stopped};
use crate::token::Tokens;
use crate::vercel::VercelClient;

/// First retry after a transient failure; doubles per failure up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(60);
pub const BACKOFF_CAP: Duration = Duration::from_secs(6 * 3600);

/// How long to wait before attempt `failures + 1`: exponential, capped, with jitter in the
/// upper half so a burst of failures does not retry in lockstep.
pub fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP);
    let half = full / 2;
    let extra = rand::rng().random_range(0..=half.as_millis() as u64);
    half + Duration::from_millis(extra)
}

/// A digest of everything in the config that shapes a policy's rotations; a permanently
/// failed record restarts when it changes.
pub fn policy_digest(job: &Job) -> String {
    let text = format!("{:?}\n{:?}", job.policy, job.installation);
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

fn key_of(job: &Job) -> Key {
    Key {
        policy: job.policy.name.clone(),
        resource: job.resource.clone(),
    }
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

/// One async lock per key: at most one rotation or retirement per (policy, resource) at a
/// time, whoever asks (the scheduler, or a `run --once` handed to the daemon). An entry lives
/// only while someone holds or waits for its lock, so a daemon that has rotated 10,000
/// resources does not keep 10,000 idle locks.
#[derive(Default)]
pub struct KeyLocks {
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

/// The key's turn; dropping it lets the next waiter in (or forgets the lock if none waits).
pub struct KeyGuard<'a> {
    locks: &'a KeyLocks,
    key: Key,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl KeyLocks {
    pub async fn lock(&self, key: &Key) -> KeyGuard<'_> {
        let lock = {
            let mut map = self.map();
            map.entry(key.clone()).or_default().clone()
        };
        // Made before the wait, so a caller that gives up waiting (its future dropped)
        // still runs the clean-up and does not leave the entry behind.
        let mut turn = KeyGuard {
            locks: self,
            key: key.clone(),
            guard: None,
        };
        turn.guard = Some(lock.lock_owned().await);
        turn
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<tokio::sync::Mutex<()>>>> {
        self.locks.lock().unwrap_or_else(|p| p.into_inner())
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.map().len()
    }
}

impl Drop for KeyGuard<'_> {
    fn drop(&mut self) {
        // Under the map's lock nobody can take a new handle on this key's lock, so a count of
        // one (the map's own) means nobody holds or waits for it.
        let mut map = self.locks.map();
        drop(self.guard.take());
        if map
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            map.remove(&self.key);
        }
    }
}

/// Writes each step into the key's record before its work starts.
struct StateRecorder {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
}

#[async_trait]
impl StepRecorder for StateRecorder {
    async fn record(&self, job: &Job, step: &Step) -> Result<(), RecordError> {
        let key = key_of(job);
        let now = self.clock.now();
        let mut record = self
            .store
            .get(&key)
            .unwrap_or_else(|| Record::new(key.clone(), job.installation.name.clone(), now, now));
        if let Step::Pushed {
            handle,
            at,
            fingerprint,
            ..
        } = step
        {
            // A handle that comes back (two alternating users) is current again: its pending
            // retirement would cut off the credential Vercel now holds.
            record.retirements.retain(|r| r.handle != *handle);
            // The credential Vercel held until now starts its grace period.
            if let Some(old) = record.current_handle.replace(handle.clone())
                && old != *handle
                && !record.retirements.iter().any(|r| r.handle == old)
            {
                record.retirements.push(Retirement {
                    handle: old,
                    due: *at + delta(job.policy.grace),
                    attempts: 0,
                    retry_at: None,
                    last_error: None,
                });
            }
            record.last_success = Some(*at);
            record.fingerprint = Some(fingerprint.clone());
            record.consecutive_failures = 0;
            record.last_error = None;
            record.retry_at = None;
            record.stopped = None;
        }
        record.step = step.clone();
        record.installation = job.installation.name.clone();
        // Only these steps must be on disk before their work goes on: `creating` (the id a
        // redo must reuse), `created` (the handle), `pushed` (Vercel holds it: without it a
        // restart would redo create and replace the credential Vercel holds) and `retiring`.
        // Losing `due`, `pushing` or `notified` in a crash changes nothing about recovery
        // (`due` and `pushing` recover like the step before them; `notified` like `pushed`,
        // which only repeats the reminder), so they are written without waiting for an
        // fsync: three waits per rotation instead of six.
        let durable = matches!(
            step,
            Step::Creating { .. }
                | Step::Created { .. }
                | Step::Pushed { .. }
                | Step::Retiring { .. }
        );
        let written = if durable {
            self.store.put(record).await
        } else {
            self.store.put_lazy(record).await
        };
        written.map_err(|e| RecordError {
            policy: key.policy,
            resource: key.resource,
            step: step.name(),
            reason: e.to_string(),
        })
    }
}

/// Until when a rotation must wait so it does not overwrite a credential still in its grace
/// period: with two alternating users (postgres, mysql) the next rotation takes the user whose
/// retirement is pending. `None`: nothing to wait for.
fn held_until(job: &Job, record: &Record, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let alternates = matches!(
        job.policy.provider,
        crate::config::ProviderConfig::Postgres(_) | crate::config::ProviderConfig::Mysql(_)
    );
    if !alternates {
        return None;
    }
    record
        .retirements
        .iter()
        .map(|r| r.due)
        .max()
        .filter(|due| *due > now)
}

pub struct Engine {
    store: Arc<dyn StateStore>,
    rotator: Rotator,
    clock: Arc<dyn Clock>,
}

impl Engine {
    pub fn new(
        store: Arc<dyn StateStore>,
        client: VercelClient,
        tokens: Tokens,
        clock: Arc<dyn Clock>,
    ) -> Engine {
        let recorder = Arc::new(StateRecorder {
            store: store.clone(),
            clock: clock.clone(),
        });
        Engine {
            store,
            rotator: Rotator {
                client: Some(client),
                tokens,
                recorder,
                clock: clock.clone(),
            },
            clock,
        }
    }

    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.store
    }

    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Gives every job without a record one, first due at its schedule's next time after
    /// now (cron semantics: a new resource is not rotated at once; `run --once` does that).
    pub async fn sync<'a>(
        &self,
        jobs: impl IntoIterator<Item = &'a Job>,
    ) -> Result<usize, StateError> {
        let now = self.clock.now();
        let mut new = Vec::new();
        for job in jobs {
            let key = key_of(job);
            if self.store.get(&key).is_none() {
                let due = next_due(job, now).unwrap_or(DateTime::<Utc>::MAX_UTC);
                new.push(Record::new(key, job.installation.name.clone(), now, due));
            }
        }
        let added = new.len();
        if added > 0 {
            self.store.put_all(new).await?;
        }
        Ok(added)
    }

    /// When something is next to do for this job, from its record; `None` when nothing ever
    /// is (stopped by a permanent failure with an unchanged config, or no due time left).
    pub fn next_wake(job: &Job, record: &Record) -> Option<DateTime<Utc>> {
        let now_ish = DateTime::<Utc>::MIN_UTC;
        let stopped = record
            .stopped
            .as_ref()
            .is_some_and(|s| s.policy_digest == policy_digest(job));
        let rotation = match &record.step {
            _ if stopped => None,
            Step::Due | Step::Creating { .. } | Step::Created { .. } | Step::Pushing { .. } => {
                Some(record.retry_at.unwrap_or(now_ish))
            }
            Step::Pushed { .. } | Step::Notified { .. } | Step::Retiring { .. } => {
                Some(record.retry_at.unwrap_or(now_ish))
            }
            Step::Idle => match (record.next_due, record.retry_at) {
                (Some(d), Some(r)) => Some(d.min(r)),
                (d, r) => d.or(r),
            },
        };
        // A rotation that would overwrite a credential in its grace period waits for it.
        let rotation = match (&record.step, rotation) {
            (Step::Idle | Step::Due, Some(at)) => {
                Some(held_until(job, record, DateTime::<Utc>::MIN_UTC).map_or(at, |h| h.max(at)))
            }
            (_, r) => r,
        };
        let retirement = record
            .retirements
            .iter()
            .map(|r| r.retry_at.map_or(r.due, |t| t.max(r.due)))
            .min();
        match (rotation, retirement) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does everything due for `job` now; with `force`, rotates whatever the schedule says
    /// (a `run --once`). Returns the report of the rotation if one ran. The caller holds the
    /// key's lock.
    pub async fn tend(&self, job: &Job, force: bool) -> Option<RotationReport> {
        let key = key_of(job);
        let now = self.clock.now();
        let mut record = match self.store.get(&key) {
            Some(r) => r,
            None => {
                let due = next_due(job, now).unwrap_or(DateTime::<Utc>::MAX_UTC);
                Record::new(key.clone(), job.installation.name.clone(), now, due)
            }
        };

        // A rotation that got as far as Vercel is finished first: only bookkeeping is left.
        if let Step::Pushed {
            handle,
            at: pushed_at,
            ..
        } = &record.step
        {
            info!(policy = %key.policy, resource = %key.resource, "finishing a rotation a restart found in `pushed`");
            if let Err(e) = self.rotator.finish_pushed(job, handle, *pushed_at).await {
                self.fail(job, "pushed", &e).await;
                return None;
            }
            record = self.store.get(&key).unwrap_or(record);
        }
        // A rotation a crash interrupted after its push is the rotation a `run --once` asked
        // for: it is reported as done, and no second one is started.
        let mut finished = None;
        if let Step::Notified { handle, pushed_at } = record.step.clone() {
            record = self.settle(job, record).await;
            finished = Some(RotationReport {
                target: job.target(),
                secret_names: job.policy.secrets.iter().map(|s| s.env_name()).collect(),
                result: Ok(Rotated::Pushed {
                    handle,
                    fingerprint: record.fingerprint.clone().unwrap_or_else(|| "-".to_owned()),
                    pushed_at,
                    retire_at: pushed_at + delta(job.policy.grace),
                }),
            });
        }
        if let Step::Retiring { previous_handle } = record.step.clone() {
            self.retire_one(job, &previous_handle).await;
            record = self.store.get(&key).unwrap_or(record);
        }

        let mut report = None;
        if force && finished.is_some() {
            report = finished;
        }
        let stopped = record
            .stopped
            .as_ref()
            .is_some_and(|s| s.policy_digest == policy_digest(job));
        let unfinished = match &record.step {
            Step::Creating { rotation_id }
            | Step::Created { rotation_id, .. }
            | Step::Pushing { rotation_id, .. } => Some(rotation_id.clone()),
            _ => None,
        };
        let due = match &record.step {
            _ if force && report.is_some() => false,
            _ if force => true,
            _ if stopped => false,
            Step::Due | Step::Creating { .. } | Step::Created { .. } | Step::Pushing { .. } => {
                record.retry_at.is_none_or(|t| t <= now)
            }
            Step::Idle => {
                record.next_due.is_some_and(|t| t <= now)
                    || record.retry_at.is_some_and(|t| t <= now)
            }
            _ => false,
        };
        let held = match record.step {
            Step::Idle | Step::Due => held_until(job, &record, now),
            _ => None,
        };
        if due && let Some(until) = held {
            info!(policy = %key.policy, resource = %key.resource, %until, "rotation held back: the other user's credential is still in its grace period");
            if force {
                report = Some(RotationReport {
                    target: job.target(),
                    secret_names: job.policy.secrets.iter().map(|s| s.env_name()).collect(),
                    result: Err(RotationError::HeldBack { until }),
                });
            }
        } else if due {
            let start = Start {
                rotation_id: unfinished,
                previous_handle: record.current_handle.clone(),
            };
            let r = self.rotator.rotate(job, start).await;
            match &r.result {
                Ok(Rotated::Pushed { .. }) => {
                    if let Some(rec) = self.store.get(&key) {
                        self.settle(job, rec).await;
                    }
                }
                Ok(Rotated::DryRun { .. }) => {}
                Err(e) => self.fail(job, "rotation", e).await,
            }
            report = Some(r);
        }

        // Old credentials whose grace is over.
        let now = self.clock.now();
        let handles: Vec<String> = self
            .store
            .get(&key)
            .map(|r| r.retirements)
            .unwrap_or_default()
            .into_iter()
            .filter(|r| r.due <= now && r.retry_at.is_none_or(|t| t <= now))
            .map(|r| r.handle)
            .collect();
        for handle in handles {
            self.retire_one(job, &handle).await;
        }
        report
    }

    /// After `notified`: back to idle, next due from the schedule.
    async fn settle(&self, job: &Job, mut record: Record) -> Record {
        let now = self.clock.now();
        record.step = Step::Idle;
        record.next_due = next_due(job, now);
        record.retry_at = None;
        // Lazy: lost in a crash, the record is `notified` again, which settles the same way.
        if let Err(e) = self.store.put_lazy(record.clone()).await {
            warn!(policy = %job.policy.name, resource = %job.resource, "could not record the end of the rotation (it is redone as `notified` at the next start): {e}");
        }
        record
    }

    /// Records a failed rotation: backoff for a transient one, a stop for a permanent one.
    async fn fail(&self, job: &Job, step: &str, error: &RotationError) {
        let key = key_of(job);
        let now = self.clock.now();
        let Some(mut record) = self.store.get(&key) else {
            return;
        };
        record.consecutive_failures = record.consecutive_failures.saturating_add(1);
        let transient = error.is_transient();
        record.last_error = Some(Failure {
            at: now,
            step: match &record.step {
                Step::Idle => step.to_owned(),
                s => s.name().to_owned(),
            },
            message: error.to_string(),
            transient,
        });
        if transient {
            let wait = backoff(record.consecutive_failures);
            record.retry_at = Some(now + delta(wait));
            warn!(policy = %key.policy, resource = %key.resource, failures = record.consecutive_failures, retry_in = %humantime::format_duration(Duration::from_secs(wait.as_secs())), "rotation will be retried");
        } else {
            record.retry_at = None;
            record.stopped = Some(Stopped {
                at: now,
                reason: error.to_string(),
                policy_digest: policy_digest(job),
            });
            warn!(policy = %key.policy, resource = %key.resource, "rotation stopped by a permanent failure; it stays stopped until the policy's config changes (or `run --once` forces it)");
        }
        if let Err(e) = self.store.put(record).await {
            warn!(policy = %key.policy, resource = %key.resource, "could not record the failure: {e}");
        }
    }

    /// Retires one old credential and updates its record either way.
    async fn retire_one(&self, job: &Job, handle: &str) {
        let key = key_of(job);
        let result = self.rotator.retire(job, handle).await;
        crate::fault::point("retiring");
        let now = self.clock.now();
        let Some(mut record) = self.store.get(&key) else {
            return;
        };
        match result {
            Ok(Outcome::Done | Outcome::Unsupported) => {
                record.retirements.retain(|r| r.handle != handle);
                record.step = Step::Idle;
            }
            Err(e) => {
                warn!(policy = %key.policy, resource = %key.resource, handle, "retiring the old credential failed; it is retried: {e}");
                record.step = Step::Idle;
                if let Some(r) = record.retirements.iter_mut().find(|r| r.handle == handle) {
                    r.attempts = r.attempts.saturating_add(1);
                    r.retry_at = Some(now + delta(backoff(r.attempts)));
                    r.last_error = Some(e.to_string());
                } else {
                    // A `retiring` step whose retirement entry is gone: keep it listed.
                    record.retirements.push(Retirement {
                        handle: handle.to_owned(),
                        due: now,
                        attempts: 1,
                        retry_at: Some(now + delta(backoff(1))),
                        last_error: Some(e.to_string()),
                    });
                }
            }
        }
        if let Err(e) = self.store.put(record).await {
            warn!(policy = %key.policy, resource = %key.resource, "could not record the retirement: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn job(schedule: &str) -> Job {
        let text = format!(
            "[installations.a]\nid = \"icfg_1\"\ntoken-env = \"T\"\n[[policies]]\nname = \"p\"\ninstallation = \"a\"\nresources = [\"r\"]\n{schedule}\ngrace = \"1h\"\nprovider = {{ kind = \"random\" }}\n[[policies.secrets]]\nname = \"P\"\nvalue = \"{{password}}\"\n"
        );
        let config = crate::config::parse(Path::new("test.toml"), &text).unwrap();
        crate::once::all_jobs(&config).pop().unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[tokio::test]
    async fn key_locks_exclude_per_key_and_are_forgotten_when_free() {
        let locks = Arc::new(KeyLocks::default());
        let key = |r: &str| Key {
            policy: "p".into(),
            resource: r.into(),
        };
        let first = locks.lock(&key("a")).await;
        // Another key is not held up.
        drop(locks.lock(&key("b")).await);
        assert_eq!(locks.len(), 1, "b is forgotten once free; a is held");
        // A second taker of `a` waits until the first lets go, and the entry outlives the
        // first guard while it waits.
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _second = locks.lock(&key("a")).await;
            }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(first);
        assert_eq!(locks.len(), 1, "the waiter keeps a's lock alive");
        waiter.await.unwrap();
        assert_eq!(locks.len(), 0);

        // A waiter that gives up (its task cancelled) after the holder let go does not leave
        // the entry behind.
        let first = locks.lock(&key("a")).await;
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _second = locks.lock(&key("a")).await;
                std::future::pending::<()>().await;
            }
        });
        tokio::task::yield_now().await;
        drop(first);
        assert_eq!(locks.len(), 1, "the waiter still counts");
        waiter.abort();
        assert!(waiter.await.is_err_and(|e| e.is_cancelled()));
        assert_eq!(locks.len(), 0);
    }

    fn record(step: Step) -> Record {
        let mut r = Record::new(
            Key {
                policy: "p".into(),
                resource: "r".into(),
            },
            "a".into(),
            at("2026-01-01T00:00:00Z"),
            at("2026-01-04T03:00:00Z"),
        );
        r.step = step;
        r
    }

    #[test]
    fn next_wake_follows_the_protocol() {
        let job = job("schedule = \"0 3 * * *\"");
        let soon = DateTime::<Utc>::MIN_UTC;
        let due = at("2026-01-04T03:00:00Z");
        let retry = at("2026-01-02T00:00:00Z");
        let id = || "rot-1".to_owned();
        let cases: Vec<(&str, Record, Option<DateTime<Utc>>)> = vec![
            ("idle waits for its due time", record(Step::Idle), Some(due)),
            (
                "an unfinished rotation is redone at once",
                record(Step::Creating { rotation_id: id() }),
                Some(soon),
            ),
            (
                "created too",
                record(Step::Created {
                    rotation_id: id(),
                    handle: "h".into(),
                }),
                Some(soon),
            ),
            (
                "pushing too",
                record(Step::Pushing {
                    rotation_id: id(),
                    handle: "h".into(),
                }),
                Some(soon),
            ),
            (
                "pushed is finished at once",
                record(Step::Pushed {
                    rotation_id: id(),
                    handle: "h".into(),
                    at: retry,
                    fingerprint: "f".into(),
                }),
                Some(soon),
            ),
            (
                "notified is settled at once",
                record(Step::Notified {
                    handle: "h".into(),
                    pushed_at: retry,
                }),
                Some(soon),
            ),
            (
                "retiring is redone at once",
                record(Step::Retiring {
                    previous_handle: "h".into(),
                }),
                Some(soon),
            ),
            (
                "a transient failure waits for its retry",
                {
                    let mut r = record(Step::Pushing {
                        rotation_id: id(),
                        handle: "h".into(),
                    });
                    r.retry_at = Some(retry);
                    r
                },
                Some(retry),
            ),
            (
                "a retry before the due time comes first",
                {
                    let mut r = record(Step::Idle);
                    r.retry_at = Some(retry);
                    r
                },
                Some(retry),
            ),
            (
                "a retirement before the due time comes first",
                {
                    let mut r = record(Step::Idle);
                    r.retirements.push(Retirement {
                        handle: "old".into(),
                        due: retry,
                        attempts: 0,
                        retry_at: None,
                        last_error: None,
                    });
                    r
                },
                Some(retry),
            ),
            (
                "a failed retirement waits for its retry",
                {
                    let mut r = record(Step::Idle);
                    r.retirements.push(Retirement {
                        handle: "old".into(),
                        due: retry,
                        attempts: 1,
                        retry_at: Some(at("2026-01-03T00:00:00Z")),
                        last_error: None,
                    });
                    r
                },
                Some(at("2026-01-03T00:00:00Z")),
            ),
            (
                "stopped with the same config: never",
                {
                    let mut r = record(Step::Idle);
                    r.stopped = Some(Stopped {
                        at: retry,
                        reason: "401".into(),
                        policy_digest: policy_digest(&job),
                    });
                    r
                },
                None,
            ),
            (
                "stopped, but the config changed: due again",
                {
                    let mut r = record(Step::Idle);
                    r.stopped = Some(Stopped {
                        at: retry,
                        reason: "401".into(),
                        policy_digest: "old".into(),
                    });
                    r
                },
                Some(due),
            ),
            (
                "stopped still retires old credentials",
                {
                    let mut r = record(Step::Idle);
                    r.stopped = Some(Stopped {
                        at: retry,
                        reason: "401".into(),
                        policy_digest: policy_digest(&job),
                    });
                    r.retirements.push(Retirement {
                        handle: "old".into(),
                        due: retry,
                        attempts: 0,
                        retry_at: None,
                        last_error: None,
                    });
                    r
                },
                Some(retry),
            ),
        ];
        for (what, record, want) in cases {
            assert_eq!(Engine::next_wake(&job, &record), want, "{what}");
        }
    }

    #[test]
    fn alternating_users_wait_for_the_pending_retirement() {
        let text = "[installations.a]\nid = \"icfg_1\"\ntoken-env = \"T\"\n[[policies]]\nname = \"p\"\ninstallation = \"a\"\nresources = [\"r\"]\nschedule = \"0 3 * * *\"\ngrace = \"1h\"\nprovider = { kind = \"postgres\", admin-url-file = \"/x\", users = [\"a\", \"b\"] }\n[[policies.secrets]]\nname = \"P\"\nvalue = \"{password}\"\n";
        let config = crate::config::parse(Path::new("test.toml"), text).unwrap();
        let pg = crate::once::all_jobs(&config).pop().unwrap();
        let random = job("schedule = \"0 3 * * *\"");
        let mut r = record(Step::Idle);
        r.next_due = Some(at("2026-01-04T03:00:00Z"));
        let pending = at("2026-01-04T05:00:00Z");
        r.retirements.push(Retirement {
            handle: "a".into(),
            due: pending,
            attempts: 0,
            retry_at: None,
            last_error: None,
        });
        // The rotation would give the new password to the user still in its grace period.
        assert_eq!(Engine::next_wake(&pg, &r), Some(pending));
        assert_eq!(
            held_until(&pg, &r, at("2026-01-04T03:00:00Z")),
            Some(pending)
        );
        assert_eq!(held_until(&pg, &r, pending), None, "once the grace is over");
        // Providers that make a new credential each time need not wait.
        assert_eq!(
            Engine::next_wake(&random, &r),
            Some(at("2026-01-04T03:00:00Z"))
        );
        assert_eq!(held_until(&random, &r, at("2026-01-04T03:00:00Z")), None);
    }

    #[test]
    fn a_missed_due_time_is_made_up_once() {
        // Down for three weeks over a weekly schedule: one run at start, then the schedule.
        let job = job("schedule = \"0 3 * * 0\"");
        let mut r = record(Step::Idle);
        r.next_due = Some(at("2026-01-04T03:00:00Z"));
        let now = at("2026-01-25T12:00:00Z");
        assert!(
            Engine::next_wake(&job, &r).is_some_and(|t| t <= now),
            "due at start"
        );
        // After that run, the next due time is the schedule's next after now, not a backlog.
        assert_eq!(next_due(&job, now), Some(at("2026-02-01T03:00:00Z")));
    }

    #[test]
    fn jitter_stays_within_its_bound() {
        let job = job("schedule = \"0 3 * * *\"\njitter = \"10m\"");
        let after = at("2026-01-01T00:00:00Z");
        let base = at("2026-01-01T03:00:00Z");
        let mut spread = std::collections::BTreeSet::new();
        for _ in 0..200 {
            let due = next_due(&job, after).unwrap();
            assert!(due >= base && due < base + TimeDelta::minutes(10), "{due}");
            spread.insert(due);
        }
        assert!(spread.len() > 100, "jitter spreads resources");
    }

    #[test]
    fn backoff_doubles_from_a_minute_to_six_hours_with_jitter() {
        for (failures, full) in [
            (1u32, 60u64),
            (2, 120),
            (3, 240),
            (9, 15_360),
            (30, 6 * 3600),
        ] {
            let full = Duration::from_secs(full.min(6 * 3600));
            for _ in 0..50 {
                let d = backoff(failures);
                assert!(
                    d >= full / 2 && d <= full,
                    "{failures}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }
}
