//! The rotation protocol of DESIGN, in one place.
//!
//! ```text
//! idle -> creating(rotation_id) -> created(handle) -> pushing -> pushed(at) -> [reminder] -> idle
//!         and, beside the step, each replaced credential: due at pushed_at + grace -> retired
//! ```
//!
//! - [`machine`]: every transition as a pure function of (record, event, rules); the rules
//!   that keep nothing orphaned are written down there, and tested table-driven with no I/O.
//! - [`executor`]: performs the machine's actions (the provider, the [`Pusher`], the store),
//!   one key at a time under [`locks::KeyLocks`]; `run --once`, the daemon and a handed-over
//!   `run --once` all go through [`executor::Executor::tend`].
//! - [`push`]: the [`Pusher`] trait the executor pushes through (Vercel, or a dry run's
//!   preview), and rendering secrets from a credential.
//! - [`batch`]: running many keys' turns at once, within a bound.
//! - `observe`: what a turn tells of each rotation event: a log line with its message id, a
//!   history entry, the metrics.
//!
//! The record it works on is data in [`crate::state`], below this module.

pub mod batch;
pub mod executor;
pub mod locks;
pub mod machine;
mod observe;
pub mod push;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::config::{Installation, Policy};
use crate::error::{Classify, Persistence};
use crate::providers::{Provider, ProviderError, Target};
use crate::resource::ResourceInfo;
use crate::template::RenderError;
use crate::vercel::VercelError;

pub use crate::state::{Key, Step};
pub use push::Pusher;

/// Why a key's turn runs: for the logs and the history (one type with [`crate::events`]).
pub use crate::events::Trigger;

/// What one turn of one key is asked for.
#[derive(Debug, Clone, Default)]
pub struct Turn {
    /// Rotate whatever the schedule says.
    pub force: bool,
    pub trigger: Trigger,
    /// The grace of the credentials this rotation replaces, instead of the policy's (Vercel's
    /// `delayOldSecretsExpirationHours`). Only with `force`.
    pub grace: Option<Duration>,
    /// Why it was asked for (Vercel's `reason`): logged, kept in the history, never a value.
    pub reason: Option<Arc<str>>,
}

impl Turn {
    /// A due time came: whatever is due, nothing forced.
    pub fn scheduled() -> Turn {
        Turn::default()
    }

    /// `run --once`: a rotation now.
    pub fn manual() -> Turn {
        Turn {
            force: true,
            trigger: Trigger::Manual,
            ..Turn::default()
        }
    }

    /// Vercel's rotate request: a rotation now, with its grace and reason.
    pub fn vercel(grace: Option<Duration>, reason: Option<Arc<str>>) -> Turn {
        Turn {
            force: true,
            trigger: Trigger::Vercel,
            grace,
            reason,
        }
    }
}

/// One (policy, resource) to tend, with what it needs from the config.
#[derive(Clone)]
pub struct Job {
    /// The record's key. Usually (policy name, resource); for a record the config no longer
    /// names, that record's key, tended with the policy that took it over.
    pub key: Key,
    pub policy: Arc<Policy>,
    pub installation: Arc<Installation>,
    pub provider: Arc<dyn Provider>,
    /// What discovery knows of the resource beyond its ids (`None` for a configured one,
    /// whose ids are the installation's and the key's: 10,000 configured resources need not
    /// carry 10,000 copies of them). See [`Job::resource_info`].
    pub discovered: Option<Arc<ResourceInfo>>,
    /// Shared by every job against the same backend (one rendered `admin-url-file`): each
    /// provider call holds a permit, so one server sees at most its cap of rotations at once.
    pub target_limit: Option<Arc<tokio::sync::Semaphore>>,
    /// False for a record the config no longer names: its retirements run, nothing else.
    pub in_config: bool,
    /// Records of other keys (a renamed policy's) whose credentials this job's push replaces
    /// at the same resource.
    pub supersedes: Vec<Key>,
    /// For a record the config no longer names: a configured job's push will replace the
    /// credential it left at Vercel, so the record is kept until then.
    pub replaced_later: bool,
    /// The policy's config digest: a permanently failed record restarts when it changes.
    /// Shared by the policy's jobs.
    pub digest: Arc<str>,
}

impl Job {
    pub fn resource(&self) -> &str {
        &self.key.resource
    }

    pub fn target(&self) -> Target {
        Target {
            policy: self.policy.name.clone(),
            installation: self.installation.name.clone(),
            resource: self.key.resource.to_string(),
            installation_id: self.installation.id.clone(),
            resource_info: self.discovered.clone(),
        }
    }

    /// What is known of the resource: its templates' variables.
    pub fn resource_info(&self) -> std::borrow::Cow<'_, ResourceInfo> {
        match &self.discovered {
            Some(info) => std::borrow::Cow::Borrowed(info),
            None => std::borrow::Cow::Owned(ResourceInfo::configured(
                &self.installation.id,
                &self.key.resource,
            )),
        }
    }

    /// `PREFIX_NAME` of every secret the policy pushes.
    pub fn secret_names(&self) -> Vec<String> {
        self.policy.secrets.iter().map(|s| s.env_name()).collect()
    }
}

/// Why a rotation failed. Each says whether trying again later can help.
#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error("provider {kind}, {action}: {source}")]
    Provider {
        kind: &'static str,
        action: &'static str,
        #[source]
        source: Box<ProviderError>,
    },
    #[error("secret {secret}: {source}")]
    Template {
        secret: String,
        #[source]
        source: RenderError,
    },
    #[error("the push to Vercel failed: {0}")]
    Vercel(#[source] VercelError),
    #[error("no token for installation {installation}: {source}")]
    Token {
        installation: String,
        #[source]
        source: Box<crate::token::TokenError>,
    },
    #[error("could not record step {step} of {key}: {reason}")]
    Record {
        key: Key,
        step: &'static str,
        reason: String,
        /// The store can record nothing more (its writer stopped): the process must exit.
        fatal: bool,
    },
    #[error("held back until {}: the other user's credential is still in its grace period, and rotating now would overwrite it while running deployments may still use it", .until.format("%Y-%m-%d %H:%M:%S UTC"))]
    HeldBack { until: DateTime<Utc> },
    #[error("the rotation task ended abnormally (a bug): {0}")]
    Aborted(String),
}

impl RotationError {
    /// Whether Vercel may hold the pushed values although this error ended the push.
    pub fn may_have_applied(&self) -> bool {
        match self {
            RotationError::Vercel(e) => e.may_have_applied(),
            _ => false,
        }
    }
}

impl Classify for RotationError {
    fn persistence(&self) -> Persistence {
        match self {
            // A credential that does not work yet is not pushed; whatever the reason, the
            // next attempt makes a new one, so it is always worth retrying (with backoff).
            RotationError::Provider {
                action: "verify", ..
            } => Persistence::Transient,
            RotationError::Provider { source, .. } => source.persistence(),
            RotationError::Template { .. } => Persistence::Permanent,
            RotationError::Vercel(e) => e.persistence(),
            RotationError::Token { source, .. } => source.persistence(),
            // A full disk may clear; the step will be redone.
            RotationError::Record { .. } => Persistence::Transient,
            RotationError::HeldBack { .. } => Persistence::Transient,
            RotationError::Aborted(_) => Persistence::Transient,
        }
    }
}

/// What a turn's rotation reports. Holds no value, only fingerprints.
#[derive(Debug)]
pub struct RotationReport {
    pub target: Target,
    /// `PREFIX_NAME` of each secret pushed (or that would be).
    pub secret_names: Vec<String>,
    pub result: Result<Rotated, RotationError>,
}

#[derive(Debug)]
pub enum Rotated {
    /// Vercel holds the new values.
    Pushed {
        handle: String,
        /// Over all values pushed, in order: tells runs apart without revealing anything.
        fingerprint: String,
        pushed_at: DateTime<Utc>,
        /// When the previous credential is to be retired: `pushed_at + grace`. `None` when
        /// there was none (a first rotation): nothing is retired.
        retire_at: Option<DateTime<Utc>>,
    },
    /// Dry run: the request that would have been sent, with every value redacted.
    DryRun {
        /// `PUT /v1/installations/{id}/resources/{resourceId}/secrets`, ids as configured.
        request_line: String,
        preview: String,
    },
}
