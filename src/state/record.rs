//! The durable record of one (policy, resource), as data: where its rotation is ([`Step`]),
//! the credential Vercel holds, the old credentials waiting to be retired, failures.
//!
//! The data lives here, below the protocol, so the state store imports nothing above it;
//! `rotation::machine` owns every change to a record. A rotation's progress is [`Step`] and
//! nothing else; each retirement's progress is on its own [`Retirement`] entry, so a
//! retirement falling due in the middle of a rotation can never overwrite it.
//!
//! Handles, ids, timestamps, fingerprints and scrubbed error text only: never a value.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::intern;

/// One (policy, resource): the unit of rotation.
///
/// Shared strings: a fleet's 100,000 keys are each held by the store, the jobs and the
/// schedule, and a copy must not be two more allocations each time.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Key {
    #[serde(deserialize_with = "intern::string")]
    pub policy: Arc<str>,
    pub resource: Arc<str>,
}

impl Key {
    pub fn new(policy: impl Into<Arc<str>>, resource: impl Into<Arc<str>>) -> Key {
        Key {
            policy: policy.into(),
            resource: resource.into(),
        }
    }
}

impl std::fmt::Display for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.policy, self.resource)
    }
}

/// Where a (policy, resource) is in its rotation. Stored as
/// `{"name": "creating", "rotation_id": "..."}`.
///
/// ```text
/// idle -> creating(rotation_id) -> created(handle) -> pushing -> pushed(at) -> [reminder] -> idle
/// ```
///
/// Retirements are not a step: they are [`Record::retirements`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "name",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "StepOnDisk"
)]
pub enum Step {
    /// Nothing in flight; the next rotation waits for its due time.
    Idle,
    /// The due time has come; nothing has been asked of the provider yet. (Written by older
    /// builds; recovers like `idle` with the rotation due.)
    Due,
    /// `create` was (or is about to be) called with this id. A restart redoes `create` with
    /// the same id, which the provider treats as "replace what that id made".
    Creating {
        rotation_id: String,
        /// The credential an earlier try of this rotation made, when the redo may make another
        /// one: retired (after the grace period) unless the redo hands back the same handle.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        earlier: Option<String>,
    },
    /// The provider made a credential live; it is not yet in Vercel.
    Created {
        rotation_id: String,
        handle: String,
        /// The credential this one replaces, as the provider knows it, when nothing was known
        /// before (the other user of a pair on the first rotation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        supersedes: Option<String>,
    },
    /// The push is (or was) in flight: Vercel may hold the new values.
    Pushing {
        rotation_id: String,
        handle: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        supersedes: Option<String>,
    },
    /// Vercel holds the new values; the reminder has not gone out yet.
    Pushed {
        rotation_id: String,
        handle: String,
        at: DateTime<Utc>,
        /// Of the values pushed (not secret: 32 bits of a SHA-256).
        fingerprint: String,
    },
    /// The redeploy reminder went out. (Written by older builds; recovers like a finished
    /// rotation.)
    Notified {
        handle: String,
        pushed_at: DateTime<Utc>,
    },
}

/// What older state files may hold: the steps above plus `retiring`, which kept a
/// retirement's progress in the rotation's field. Its retirement entry is still in
/// `retirements` (it was removed only after the retirement succeeded), so it reads as `idle`
/// and the entry is retried.
#[derive(Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
enum StepOnDisk {
    Idle,
    Due,
    Creating {
        rotation_id: String,
        #[serde(default)]
        earlier: Option<String>,
    },
    Created {
        rotation_id: String,
        handle: String,
        #[serde(default)]
        supersedes: Option<String>,
    },
    Pushing {
        rotation_id: String,
        handle: String,
        #[serde(default)]
        supersedes: Option<String>,
    },
    Pushed {
        rotation_id: String,
        handle: String,
        at: DateTime<Utc>,
        fingerprint: String,
    },
    Notified {
        handle: String,
        pushed_at: DateTime<Utc>,
    },
    Retiring {
        #[allow(dead_code)]
        previous_handle: String,
    },
}

impl From<StepOnDisk> for Step {
    fn from(step: StepOnDisk) -> Step {
        match step {
            StepOnDisk::Idle | StepOnDisk::Retiring { .. } => Step::Idle,
            StepOnDisk::Due => Step::Due,
            StepOnDisk::Creating {
                rotation_id,
                earlier,
            } => Step::Creating {
                rotation_id,
                earlier,
            },
            StepOnDisk::Created {
                rotation_id,
                handle,
                supersedes,
            } => Step::Created {
                rotation_id,
                handle,
                supersedes,
            },
            StepOnDisk::Pushing {
                rotation_id,
                handle,
                supersedes,
            } => Step::Pushing {
                rotation_id,
                handle,
                supersedes,
            },
            StepOnDisk::Pushed {
                rotation_id,
                handle,
                at,
                fingerprint,
            } => Step::Pushed {
                rotation_id,
                handle,
                at,
                fingerprint,
            },
            StepOnDisk::Notified { handle, pushed_at } => Step::Notified { handle, pushed_at },
        }
    }
}

impl Step {
    /// The protocol's name for the step, as `status` and logs show it.
    pub fn name(&self) -> &'static str {
        match self {
            Step::Idle => "idle",
            Step::Due => "due",
            Step::Creating { .. } => "creating",
            Step::Created { .. } => "created",
            Step::Pushing { .. } => "pushing",
            Step::Pushed { .. } => "pushed",
            Step::Notified { .. } => "notified",
        }
    }

    /// The rotation id of a rotation that was started and not finished.
    pub fn unfinished(&self) -> Option<&str> {
        match self {
            Step::Creating { rotation_id, .. }
            | Step::Created { rotation_id, .. }
            | Step::Pushing { rotation_id, .. } => Some(rotation_id),
            _ => None,
        }
    }

    /// The handle of the credential an unfinished rotation made (live, maybe at Vercel).
    pub fn attempt_handle(&self) -> Option<&str> {
        match self {
            Step::Creating { earlier, .. } => earlier.as_deref(),
            Step::Created { handle, .. } | Step::Pushing { handle, .. } => Some(handle),
            _ => None,
        }
    }
}

/// Everything the daemon knows about one (policy, resource).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub key: Key,
    /// The installation's config name when the record was last written (for `status`).
    #[serde(deserialize_with = "intern::string")]
    pub installation: Arc<str>,
    /// Vercel's id of that installation (`icfg_...`): with `resource` and `secrets`, what the
    /// pushes of this record overwrite, so a renamed policy's push can supersede this one.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "intern::optional"
    )]
    pub installation_id: Option<Arc<str>>,
    /// `PREFIX_NAME` of every secret the policy pushes. (Shared strings: see
    /// [`intern`].)
    #[serde(
        default = "no_secrets",
        skip_serializing_if = "is_empty",
        deserialize_with = "intern::list"
    )]
    pub secrets: Arc<[String]>,
    /// Where the rotation is. `Idle` between rotations.
    pub step: Step,
    /// When the daemon first saw this resource in its config.
    pub first_seen: DateTime<Utc>,
    /// When the next rotation starts, jitter included. `None` while one is in flight.
    pub next_due: Option<DateTime<Utc>>,
    /// The handle of the credential Vercel holds now (after the last successful push).
    pub current_handle: Option<String>,
    /// Old credentials waiting for their grace period to end, oldest first.
    #[serde(default)]
    pub retirements: Vec<Retirement>,
    /// When the last rotation completed its push.
    pub last_success: Option<DateTime<Utc>>,
    /// Fingerprint of the values last pushed (`secret::fingerprint_all`).
    pub fingerprint: Option<String>,
    /// Failed rotation attempts since the last success.
    pub consecutive_failures: u32,
    /// Boxed, as `stopped`: rare, and a fleet holds 100,000 records.
    pub last_error: Option<Box<Failure>>,
    /// After a transient failure: when to try again (backoff), ahead of the schedule.
    pub retry_at: Option<DateTime<Utc>>,
    /// After a permanent failure: the rotation stays stopped until the policy's config
    /// changes (its digest differs from the one recorded here).
    pub stopped: Option<Box<Stopped>>,
    /// The grace Vercel asked for with the rotation in flight (its
    /// `delayOldSecretsExpirationHours`), in milliseconds, instead of the policy's: kept here so
    /// a restart mid-rotation still honours it; cleared at the push.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_grace_ms: Option<u64>,
}

impl Record {
    /// A resource seen for the first time, first due at `next_due`.
    pub fn new(
        key: Key,
        installation: impl Into<Arc<str>>,
        now: DateTime<Utc>,
        next_due: DateTime<Utc>,
    ) -> Record {
        Record {
            key,
            installation: installation.into(),
            installation_id: None,
            secrets: no_secrets(),
            step: Step::Idle,
            first_seen: now,
            next_due: Some(next_due),
            current_handle: None,
            retirements: Vec::new(),
            last_success: None,
            fingerprint: None,
            consecutive_failures: 0,
            last_error: None,
            retry_at: None,
            stopped: None,
            requested_grace_ms: None,
        }
    }

    /// Whether anything a provider made for this record may still be live and not at
    /// Vercel as its current credential: a pending retirement or an unfinished rotation.
    pub fn holds_live_credentials(&self) -> bool {
        !self.retirements.is_empty() || !matches!(self.step, Step::Idle | Step::Due)
    }
}

fn no_secrets() -> Arc<[String]> {
    Arc::new([])
}

fn is_empty(secrets: &Arc<[String]>) -> bool {
    secrets.is_empty()
}

/// An old credential to retire once its grace period is over. Its progress (attempts, the
/// next try) lives here and nowhere else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retirement {
    pub handle: String,
    /// `pushed_at + grace` of the push that superseded it (or the moment it was known to have
    /// never reached Vercel).
    pub due: DateTime<Utc>,
    pub attempts: u32,
    /// After a failed attempt: when to try again.
    pub retry_at: Option<DateTime<Utc>>,
    /// Scrubbed text of the last failure.
    pub last_error: Option<String>,
}

impl Retirement {
    pub fn new(handle: String, due: DateTime<Utc>) -> Retirement {
        Retirement {
            handle,
            due,
            attempts: 0,
            retry_at: None,
            last_error: None,
        }
    }

    /// When it is next to be tried: its due time, or later after a failure.
    pub fn next_try(&self) -> DateTime<Utc> {
        self.retry_at.map_or(self.due, |t| t.max(self.due))
    }
}

/// A failed attempt, as `status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Failure {
    pub at: DateTime<Utc>,
    /// The step the rotation was in (`creating`, `pushing`, ...).
    pub step: String,
    /// The error's message. Error messages in this crate never hold a value.
    pub message: String,
    pub transient: bool,
}

/// A rotation stopped by a permanent failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stopped {
    pub at: DateTime<Utc>,
    pub reason: String,
    /// Digest of the policy's config when it stopped; a different digest restarts it.
    pub policy_digest: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_old_retiring_step_reads_as_idle_and_keeps_its_retirement_entry() {
        let text = r#"{"key":{"policy":"p","resource":"r"},"installation":"a",
            "step":{"name":"retiring","previous_handle":"old"},
            "first_seen":"2026-01-01T00:00:00Z","next_due":null,"current_handle":"new",
            "retirements":[{"handle":"old","due":"2026-01-02T00:00:00Z","attempts":0,
            "retry_at":null,"last_error":null}],"last_success":null,"fingerprint":null,
            "consecutive_failures":0,"last_error":null,"retry_at":null,"stopped":null}"#;
        let record: Record = serde_json::from_str(text).unwrap();
        assert_eq!(record.step, Step::Idle);
        assert_eq!(record.retirements[0].handle, "old");
        // Written back, it is in today's form and reads the same.
        let again: Record = serde_json::from_str(&serde_json::to_string(&record).unwrap()).unwrap();
        assert_eq!(again, record);
    }

    #[test]
    fn steps_round_trip_and_optional_fields_stay_off_disk() {
        let step = Step::Creating {
            rotation_id: "r1".into(),
            earlier: None,
        };
        let text = serde_json::to_string(&step).unwrap();
        assert_eq!(text, r#"{"name":"creating","rotation_id":"r1"}"#);
        let step = Step::Pushing {
            rotation_id: "r1".into(),
            handle: "h".into(),
            supersedes: Some("b".into()),
        };
        let back: Step = serde_json::from_str(&serde_json::to_string(&step).unwrap()).unwrap();
        assert_eq!(back, step);
        assert!(
            serde_json::from_str::<Step>(r#"{"name":"creating","rotation_id":"r","extra":1}"#)
                .is_err()
        );
    }
}
