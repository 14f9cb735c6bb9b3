//! The rotation protocol as pure functions: from (record, event, rules) to (record, what to
//! write, the next action). No I/O, no clock, no randomness: the executor brings `now`, a
//! fresh rotation id and the jitter in [`Rules`], performs the [`Action`] and feeds back
//! what came of it as the next [`Event`].
//!
//! ```text
//! Wake ──> Create ──Created──> Prepare ──Prepared──> Push ──Pushed──> Remind ──Reminded──> idle
//!            │                   │                     │
//!            └──Failed           └──Failed (not sent)  └──Failed (sent? unknown / refused)
//! then, in the same turn: Retire ──Retired / RetireFailed──> Retire ... (each due retirement)
//! ```
//!
//! The rules that keep invariant 1 (nothing a provider made is orphaned) and 3 (the old
//! credential outlives its grace), all here:
//! - A rotation's progress is the record's `step`; each retirement's is its own entry. A
//!   retirement never touches the step, so one falling due mid-rotation cannot erase it.
//! - A credential is retired only through an entry, and an entry never names the credential
//!   Vercel holds (`current_handle`) or the one an unfinished rotation made.
//! - A redo of an unfinished rotation reuses its id; if the provider hands back another handle
//!   than the earlier try's, the earlier one (which may have reached Vercel) gets its grace.
//! - A credential proven never to have reached Vercel (verify or render failed, a definite
//!   refusal) is retired at once; one that may have (timeout, dropped connection, 5xx, 3xx,
//!   408) stays, and the retry redoes `create` with the same id.
//! - A push makes the new handle current; the one it replaces (or, on a pair's first
//!   rotation, the one the provider says it supersedes) retires at `pushed_at + grace`.
//! - Providers that alternate two users wait while a retirement is in its grace: rotating
//!   would overwrite the credential running deployments still use.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::state::{Failure, Record, Retirement, Step, Stopped};

/// First retry after a transient failure; doubles per failure up to [`BACKOFF_CAP`].
pub const BACKOFF_BASE: Duration = Duration::from_secs(60);
pub const BACKOFF_CAP: Duration = Duration::from_secs(6 * 3600);

/// How long to wait before attempt `failures + 1`: exponential, capped, and placed by
/// `jitter` (0 to 1) in the upper half, so a burst of failures does not retry in lockstep.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let full = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_CAP);
    let half = full / 2;
    half + half.mul_f64(jitter.clamp(0.0, 1.0))
}

/// What a transition needs to know besides the record: the policy's settings and what the
/// executor drew for this moment.
#[derive(Debug, Clone)]
pub struct Rules<'a> {
    pub now: DateTime<Utc>,
    /// How long a replaced credential stays valid after the push that replaced it.
    pub grace: TimeDelta,
    /// The provider alternates two users: a rotation waits for pending retirements.
    pub alternates: bool,
    /// The policy's config digest: a rotation stopped under this digest stays stopped.
    pub digest: &'a str,
    /// False for a record the config no longer names: it finishes what reached Vercel and
    /// retires what is due, and never starts or redoes a rotation.
    pub in_config: bool,
    /// The schedule's next due time after the turn began, jitter included: where the next
    /// rotation falls once this one is done or has failed.
    pub next_due: Option<DateTime<Utc>>,
    /// The id a rotation started by this event gets.
    pub fresh_id: &'a str,
    /// In [0, 1]: where a retry lands within its backoff window.
    pub jitter: f64,
}

/// What happened: the start of a turn, or what came of the last action.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The key's turn: its due time came, a restart, or (`force`) a `run --once`.
    Wake {
        force: bool,
        /// The grace the rotation a forced wake starts gets instead of the policy's (Vercel's
        /// `delayOldSecretsExpirationHours`); kept in the record until its push.
        grace: Option<TimeDelta>,
    },
    /// `create` made a credential live.
    Created {
        handle: String,
        supersedes: Option<String>,
    },
    /// The new credential was verified and the secrets rendered.
    Prepared,
    /// Vercel answered the push with a 2xx.
    Pushed {
        fingerprint: String,
    },
    /// A dry run: the push was only previewed; nothing was made or sent.
    Previewed,
    /// The redeploy reminder went out.
    Reminded,
    /// The action failed.
    Failed(Fault),
    Retired {
        handle: String,
    },
    RetireFailed {
        handle: String,
        message: String,
    },
}

/// A failed action, as the protocol needs it: the text for `status`, whether a retry can
/// help, and whether Vercel may hold the values although the push failed.
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub message: String,
    pub transient: bool,
    pub may_have_applied: bool,
}

/// What the executor is to do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the provider for a credential with this id (a redo reuses the id).
    Create {
        rotation_id: String,
        previous_handle: Option<String>,
    },
    /// Verify the new credential and render the secrets from it.
    Prepare,
    /// Send the rendered secrets to Vercel.
    Push,
    /// Tell the user to redeploy, before `retire_at` when the push replaced a credential
    /// (`None`: a first rotation, nothing will be retired).
    Remind { retire_at: Option<DateTime<Utc>> },
    /// Make an old credential stop working.
    Retire { handle: String },
}

/// How the transition's record must be written before its action starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// Nothing changed.
    None,
    /// Visible at once, on disk with the next commit: losing it in a crash changes nothing
    /// about recovery.
    Lazy,
    /// On disk before the action: recovery depends on it.
    Durable,
}

/// How a turn's rotation ended, when it did in this transition.
#[derive(Debug, Clone, PartialEq)]
pub enum Finished {
    /// Vercel holds the new values and the reminder went out.
    Rotated {
        handle: String,
        fingerprint: String,
        pushed_at: DateTime<Utc>,
        /// When the replaced credential is retired; `None` when the push replaced none.
        retire_at: Option<DateTime<Utc>>,
    },
    /// The rotation is due but waits for a credential's grace period to end.
    Held { until: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub record: Record,
    pub write: Write,
    pub action: Option<Action>,
    pub finished: Option<Finished>,
}

/// The one entry point: applies `event` to `record` and plans what comes next.
pub fn advance(record: &Record, event: Event, rules: &Rules) -> Transition {
    let mut r = record.clone();
    let now = rules.now;
    match event {
        Event::Wake { force, grace } => wake(r, force, grace, rules),
        Event::Created { handle, supersedes } => {
            let Step::Creating {
                rotation_id,
                earlier,
            } = r.step.clone()
            else {
                return unexpected(r, rules);
            };
            if let Some(earlier) = earlier
                && earlier != handle
            {
                // The earlier try's credential may have reached Vercel: it gets the grace a
                // replaced credential gets.
                let due = now + grace_of(&r, rules);
                schedule_retirement(&mut r, earlier, due);
            }
            // The provider reused a handle that was waiting to retire (the idle user of a
            // pair): `create` replaced its old credential, and retiring it would cut off the
            // new one.
            r.retirements.retain(|x| x.handle != handle);
            r.step = Step::Created {
                rotation_id,
                handle,
                supersedes,
            };
            act(r, Write::Durable, Action::Prepare)
        }
        Event::Prepared => {
            let Step::Created {
                rotation_id,
                handle,
                supersedes,
            } = r.step.clone()
            else {
                return unexpected(r, rules);
            };
            r.step = Step::Pushing {
                rotation_id,
                handle,
                supersedes,
            };
            // Lost in a crash, the record says `created`, which recovers the same way.
            act(r, Write::Lazy, Action::Push)
        }
        Event::Pushed { fingerprint } => {
            let Step::Pushing {
                rotation_id,
                handle,
                supersedes,
            } = r.step.clone()
            else {
                return unexpected(r, rules);
            };
            let retire_at = now + grace_of(&r, rules);
            // Every credential this rotation replaces now has its retirement time.
            r.requested_grace_ms = None;
            let replaced = r.current_handle.replace(handle.clone()).or(supersedes);
            if let Some(old) = replaced
                && old != handle
            {
                schedule_retirement(&mut r, old, retire_at);
            }
            r.retirements.retain(|x| x.handle != handle);
            r.last_success = Some(now);
            r.fingerprint = Some(fingerprint.clone());
            r.consecutive_failures = 0;
            r.last_error = None;
            r.retry_at = None;
            r.stopped = None;
            let retire_at = replaced_retires_at(&r, &handle, now);
            r.step = Step::Pushed {
                rotation_id,
                handle,
                at: now,
                fingerprint,
            };
            act(r, Write::Durable, Action::Remind { retire_at })
        }
        Event::Reminded => {
            let Step::Pushed {
                handle,
                at,
                fingerprint,
                ..
            } = r.step.clone()
            else {
                return unexpected(r, rules);
            };
            settle(&mut r, rules);
            let retire_at = replaced_retires_at(&r, &handle, at);
            let finished = Finished::Rotated {
                handle,
                fingerprint,
                pushed_at: at,
                retire_at,
            };
            // Lost in a crash, the record says `pushed`: the reminder is repeated.
            retire_next(r, Write::Lazy, Some(finished), rules)
        }
        Event::Previewed => {
            // Nothing was made or sent: back to where the turn started.
            r.step = record_before_preview(&r);
            Transition {
                record: r,
                write: Write::None,
                action: None,
                finished: None,
            }
        }
        Event::Failed(fault) => {
            fail(&mut r, &fault, rules);
            retire_next(r, Write::Durable, None, rules)
        }
        Event::Retired { handle } => {
            r.retirements.retain(|x| x.handle != handle);
            // Lost in a crash, the retirement is redone: retiring twice is harmless.
            retire_next(r, Write::Lazy, None, rules)
        }
        Event::RetireFailed { handle, message } => {
            if let Some(x) = r.retirements.iter_mut().find(|x| x.handle == handle) {
                x.attempts = x.attempts.saturating_add(1);
                x.retry_at = Some(now + delta(backoff(x.attempts, rules.jitter)));
                x.last_error = Some(message);
            }
            retire_next(r, Write::Lazy, None, rules)
        }
    }
}

/// The start of a key's turn: finish what reached Vercel, start or redo the rotation if it is
/// due (or forced), then retire what is due.
fn wake(mut r: Record, force: bool, grace: Option<TimeDelta>, rules: &Rules) -> Transition {
    let now = rules.now;
    match r.step.clone() {
        Step::Pushed { at, handle, .. } if rules.in_config => {
            let retire_at = replaced_retires_at(&r, &handle, at);
            return act(r, Write::None, Action::Remind { retire_at });
        }
        Step::Pushed {
            handle,
            at: pushed_at,
            ..
        }
        | Step::Notified { handle, pushed_at } => {
            // A rotation a crash interrupted after its push is this turn's rotation: reported
            // as done, and no second one is started. (Not in the config: no reminder either.)
            r.current_handle = Some(handle.clone());
            settle(&mut r, rules);
            let retire_at = replaced_retires_at(&r, &handle, pushed_at);
            let finished = rules.in_config.then(|| Finished::Rotated {
                handle,
                fingerprint: r.fingerprint.clone().unwrap_or_else(|| "-".to_owned()),
                pushed_at,
                retire_at,
            });
            return retire_next(r, Write::Lazy, finished, rules);
        }
        _ => {}
    }
    if !rules.in_config {
        return retire_next(r, Write::None, None, rules);
    }
    let stopped = is_stopped(&r, rules.digest);
    if let Some(rotation_id) = r.step.unfinished().map(str::to_owned) {
        if force || (!stopped && r.retry_at.is_none_or(|t| t <= now)) {
            if force {
                // A new request for this rotation: its grace, not an earlier request's.
                r.requested_grace_ms = grace.map(millis);
            }
            let earlier = r.step.attempt_handle().map(str::to_owned);
            let previous_handle = r.current_handle.clone();
            r.step = Step::Creating {
                rotation_id: rotation_id.clone(),
                earlier,
            };
            return act(
                r,
                Write::Durable,
                Action::Create {
                    rotation_id,
                    previous_handle,
                },
            );
        }
        return retire_next(r, Write::None, None, rules);
    }
    let due = force
        || (!stopped
            && (r.next_due.is_some_and(|t| t <= now) || r.retry_at.is_some_and(|t| t <= now)));
    if due {
        if let Some(until) = held_until(&r, rules.alternates, now) {
            return retire_next(r, Write::None, Some(Finished::Held { until }), rules);
        }
        let previous_handle = r.current_handle.clone();
        r.step = Step::Creating {
            rotation_id: rules.fresh_id.to_owned(),
            earlier: None,
        };
        r.requested_grace_ms = grace.filter(|_| force).map(millis);
        r.next_due = None;
        return act(
            r,
            Write::Durable,
            Action::Create {
                rotation_id: rules.fresh_id.to_owned(),
                previous_handle,
            },
        );
    }
    retire_next(r, Write::None, None, rules)
}

/// The first retirement that is due, if any, as the transition's action.
fn retire_next(r: Record, write: Write, finished: Option<Finished>, rules: &Rules) -> Transition {
    let action = due_retirement(&r, rules.now).map(|handle| Action::Retire { handle });
    Transition {
        record: r,
        write,
        action,
        finished,
    }
}

/// A handle whose retirement is due now. Never the credential Vercel holds or the one an
/// unfinished rotation made, whatever the entries say.
fn due_retirement(r: &Record, now: DateTime<Utc>) -> Option<String> {
    r.retirements
        .iter()
        .filter(|x| x.next_try() <= now)
        .find(|x| retirable(r, &x.handle))
        .map(|x| x.handle.clone())
}

fn retirable(r: &Record, handle: &str) -> bool {
    r.current_handle.as_deref() != Some(handle) && r.step.attempt_handle() != Some(handle)
}

fn act(record: Record, write: Write, action: Action) -> Transition {
    Transition {
        record,
        write,
        action: Some(action),
        finished: None,
    }
}

/// An event that does not fit the step (a bug in the executor): change nothing and go on
/// with retirements, so at least nothing is lost.
fn unexpected(r: Record, rules: &Rules) -> Transition {
    retire_next(r, Write::None, None, rules)
}

/// A dry run's turn leaves the step as it found it; the executor also never writes it.
fn record_before_preview(r: &Record) -> Step {
    match &r.step {
        Step::Created { .. } | Step::Pushing { .. } | Step::Creating { .. } => Step::Idle,
        other => other.clone(),
    }
}

/// After a rotation: idle, next due from the schedule.
/// The grace of the credentials the rotation in flight replaces: what Vercel asked for with
/// it, or the policy's.
fn grace_of(r: &Record, rules: &Rules) -> TimeDelta {
    r.requested_grace_ms
        .map(|ms| TimeDelta::milliseconds(i64::try_from(ms).unwrap_or(i64::MAX)))
        .unwrap_or(rules.grace)
}

fn millis(grace: TimeDelta) -> u64 {
    u64::try_from(grace.num_milliseconds()).unwrap_or(0)
}

fn settle(r: &mut Record, rules: &Rules) {
    r.step = Step::Idle;
    r.next_due = rules.next_due;
    r.retry_at = None;
}

/// Records a failed action: the credential it made is kept or retired (see the module
/// head), and the rotation backs off (transient) or stops until the config changes.
fn fail(r: &mut Record, fault: &Fault, rules: &Rules) {
    let now = rules.now;
    let step_name = r.step.name();
    match r.step.clone() {
        Step::Created { handle, .. } => {
            // Verify or render failed: nothing was sent.
            schedule_retirement(r, handle, now);
            r.step = Step::Idle;
        }
        Step::Pushing { handle, .. } if !fault.may_have_applied => {
            // A definite refusal: Vercel kept the old values.
            schedule_retirement(r, handle, now);
            r.step = Step::Idle;
        }
        // `creating` (the provider failed) and a push that may have applied stay as they
        // are: the retry redoes `create` with the same id.
        _ => {}
    }
    if r.step.unfinished().is_none() {
        r.requested_grace_ms = None;
    }
    r.consecutive_failures = r.consecutive_failures.saturating_add(1);
    r.last_error = Some(Box::new(Failure {
        at: now,
        step: step_name.to_owned(),
        message: fault.message.clone(),
        transient: fault.transient,
    }));
    // Where an idle rotation is due once the failure is behind it: the schedule's next time.
    r.next_due = rules.next_due;
    if fault.transient {
        r.retry_at = Some(now + delta(backoff(r.consecutive_failures, rules.jitter)));
    } else {
        r.retry_at = None;
        r.stopped = Some(Box::new(Stopped {
            at: now,
            reason: fault.message.clone(),
            policy_digest: rules.digest.to_owned(),
        }));
    }
}

/// When the credential a push at `pushed_at` replaced is retired: the latest retirement of
/// another handle still pending from the push on (a push scheduled it at `pushed_at + grace`,
/// or later if it was already waiting). `None` when the push replaced nothing: a first rotation
/// (or a provider whose handle never changes) retires nothing, so no reminder may promise it.
fn replaced_retires_at(
    r: &Record,
    handle: &str,
    pushed_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    r.retirements
        .iter()
        .filter(|x| x.handle != handle && x.due >= pushed_at)
        .map(|x| x.due)
        .max()
}

fn schedule_retirement(r: &mut Record, handle: String, due: DateTime<Utc>) {
    match r.retirements.iter_mut().find(|x| x.handle == handle) {
        // Already waiting: the later due time wins, so no grace is ever cut short.
        Some(x) => x.due = x.due.max(due),
        None => r.retirements.push(Retirement::new(handle, due)),
    }
}

fn is_stopped(r: &Record, digest: &str) -> bool {
    r.stopped
        .as_ref()
        .is_some_and(|s| s.policy_digest == digest)
}

/// Until when a rotation must wait so it does not overwrite a credential still in its grace
/// period: with two alternating users the next rotation takes the user whose retirement is
/// pending. `None`: nothing to wait for.
pub fn held_until(r: &Record, alternates: bool, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if !alternates {
        return None;
    }
    r.retirements
        .iter()
        .map(|x| x.due)
        .max()
        .filter(|due| *due > now)
}

/// When something is next to do for this record; `None` when nothing ever is (stopped with
/// an unchanged config and nothing to retire, or no due time left). `MIN_UTC` means now.
pub fn next_wake(r: &Record, rules: &Rules) -> Option<DateTime<Utc>> {
    let soon = DateTime::<Utc>::MIN_UTC;
    let rotation = match &r.step {
        Step::Pushed { .. } | Step::Notified { .. } => Some(soon),
        _ if !rules.in_config || is_stopped(r, rules.digest) => None,
        step if step.unfinished().is_some() => Some(r.retry_at.unwrap_or(soon)),
        _ => {
            let at = match (r.next_due, r.retry_at) {
                (Some(d), Some(t)) => Some(d.min(t)),
                (d, t) => d.or(t),
            };
            at.map(|at| held_until(r, rules.alternates, soon).map_or(at, |h| h.max(at)))
        }
    };
    let retirement = r
        .retirements
        .iter()
        .filter(|x| retirable(r, &x.handle))
        .map(Retirement::next_try)
        .min();
    match (rotation, retirement) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Another key pushed the same secrets to the same resource (a renamed policy): what this
/// record left live there starts its grace at `at`. `None` when nothing changes.
pub fn supersede(record: &Record, at: DateTime<Utc>, grace: TimeDelta) -> Option<Record> {
    let mut r = record.clone();
    let due = at + grace;
    if let Some(handle) = r.current_handle.take() {
        schedule_retirement(&mut r, handle, due);
    }
    match r.step.clone() {
        Step::Created { handle, .. }
        | Step::Pushing { handle, .. }
        | Step::Pushed { handle, .. }
        | Step::Notified { handle, .. }
        | Step::Creating {
            earlier: Some(handle),
            ..
        } => {
            schedule_retirement(&mut r, handle, due);
            r.step = Step::Idle;
        }
        // `creating` without a handle: what it made (if anything) is unknown; the record
        // stays, and `status` shows it.
        _ => {}
    }
    (r != *record).then_some(r)
}

/// Whether a record the config no longer names can be forgotten: nothing of it is live but
/// (maybe) the credential Vercel holds, and no configured push will replace that one.
pub fn can_forget(r: &Record, superseded_later: bool) -> bool {
    matches!(r.step, Step::Idle | Step::Due)
        && r.retirements.is_empty()
        && (r.current_handle.is_none() || !superseded_later)
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

#[cfg(test)]
mod tests;
