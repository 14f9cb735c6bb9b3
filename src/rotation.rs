//! One rotation of one (policy, resource), walked through the steps of DESIGN's protocol.
//!
//! ```text
//! due -> creating(rotation_id) -> created(handle) -> pushing -> pushed(at) -> notified
//!     -> [grace elapses] -> retiring(previous handle) -> idle
//! ```
//!
//! Each step is handed to a [`StepRecorder`] *before* the work it names, so a durable recorder
//! lets a restart know where it was. `run --once` and (later) the daemon both drive
//! [`Rotator::rotate`]. The new credential's fields live only inside `rotate`: they are
//! rendered into the push and dropped (zeroized by `secrecy`) when it returns.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tracing::{debug, info, warn};

use crate::clock::Clock;
use crate::config::{Installation, Policy};
use crate::error::{Classify, Persistence};
use crate::fault;
use crate::providers::{Credential, Outcome, Provider, ProviderError, Target};
use crate::secret::{self, ExposeSecret, SecretString};
use crate::template::MissingField;
use crate::token::Tokens;
use crate::vercel::{
    InstallationRef, Notification, NotificationLevel, PushSecret, VercelClient, VercelError,
};

/// Where a (policy, resource) is in its rotation. Handles and ids only: never a value.
/// Stored in the state file as `{"name": "creating", "rotation_id": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "name", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Nothing in flight; the next rotation waits for its due time.
    Idle,
    /// The due time has come; nothing has been asked of the provider yet.
    Due,
    /// `create` was (or is about to be) called with this id. A restart redoes `create` with
    /// the same id, which the provider treats as "replace what that id made".
    Creating { rotation_id: String },
    /// The provider made a credential live; it is not yet in Vercel.
    Created { rotation_id: String, handle: String },
    /// The push is (or was) in flight.
    Pushing { rotation_id: String, handle: String },
    /// Vercel holds the new values; the previous credential retires at `at + grace`.
    Pushed {
        rotation_id: String,
        handle: String,
        at: DateTime<Utc>,
        /// Of the values pushed (not secret: 32 bits of a SHA-256).
        fingerprint: String,
    },
    /// The redeploy reminder went out.
    Notified {
        handle: String,
        pushed_at: DateTime<Utc>,
    },
    /// The grace period is over; the previous credential is being retired.
    Retiring { previous_handle: String },
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
            Step::Retiring { .. } => "retiring",
        }
    }
}

/// Receives each step before its work starts. The durable state (a later issue) implements
/// this; `run --once` without state uses [`LogRecorder`].
#[async_trait]
pub trait StepRecorder: Send + Sync {
    async fn record(&self, job: &Job, step: &Step) -> Result<(), RecordError>;
}

#[derive(Debug, thiserror::Error)]
#[error("could not record step {step} of {policy}/{resource}: {reason}")]
pub struct RecordError {
    pub policy: String,
    pub resource: String,
    pub step: &'static str,
    pub reason: String,
}

/// Records steps in the log only (debug level): what a one-shot run without durable state has.
pub struct LogRecorder;

#[async_trait]
impl StepRecorder for LogRecorder {
    async fn record(&self, job: &Job, step: &Step) -> Result<(), RecordError> {
        debug!(policy = %job.policy.name, resource = %job.resource, step = step.name(), "step");
        Ok(())
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
        source: MissingField,
    },
    #[error("the push to Vercel failed: {0}")]
    Vercel(#[source] VercelError),
    #[error("no token for installation {0} (it could not be read at start)")]
    NoToken(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("held back until {}: the other user's credential is still in its grace period, and rotating now would overwrite it while running deployments may still use it", .until.format("%Y-%m-%d %H:%M:%S UTC"))]
    HeldBack { until: DateTime<Utc> },
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
            RotationError::NoToken(_) => Persistence::Permanent,
            // A full disk or a lost lease may clear; the step will be redone.
            RotationError::Record(_) => Persistence::Transient,
            RotationError::HeldBack { .. } => Persistence::Transient,
        }
    }
}

/// What a finished rotation reports. Holds no value, only fingerprints.
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
        /// When the previous credential is to be retired: `pushed_at + grace`.
        retire_at: DateTime<Utc>,
    },
    /// Dry run: the request that would have been sent, with every value redacted.
    DryRun {
        /// `PUT /v1/installations/{id}/resources/{resourceId}/secrets`, ids as configured.
        request_line: String,
        preview: String,
    },
}

/// One (policy, resource) to rotate, with what it needs from the config.
pub struct Job {
    pub policy: Arc<Policy>,
    pub installation: Arc<Installation>,
    pub resource: String,
    pub provider: Arc<dyn Provider>,
}

impl Job {
    pub fn target(&self) -> Target {
        Target {
            policy: self.policy.name.clone(),
            installation: self.installation.name.clone(),
            resource: self.resource.clone(),
        }
    }
}

/// Where a rotation starts: afresh, or where a crash or a failure left it.
#[derive(Debug, Clone, Default)]
pub struct Start {
    /// Redo `create` with this id: a restart found the rotation in creating, created or
    /// pushing, or a transient failure left it there. `None`: a fresh id.
    pub rotation_id: Option<String>,
    /// The handle of the credential Vercel holds now, handed to `create` so a provider can
    /// alternate (two database roles) and know what it replaces.
    pub previous_handle: Option<String>,
}

/// Drives rotations. `client` is `None` in a dry run: nothing can be sent.
pub struct Rotator {
    pub client: Option<VercelClient>,
    pub tokens: Tokens,
    pub recorder: Arc<dyn StepRecorder>,
    pub clock: Arc<dyn Clock>,
}

impl Rotator {
    /// Rotates one (policy, resource) from `due` to `notified`.
    pub async fn rotate(&self, job: &Job, start: Start) -> RotationReport {
        let target = job.target();
        let secret_names = job.policy.secrets.iter().map(|s| s.env_name()).collect();
        let result = self.walk(job, &target, start).await;
        if let Err(e) = &result {
            warn!(
                policy = %target.policy,
                resource = %target.resource,
                transient = e.is_transient(),
                "rotation failed: {e}"
            );
        }
        RotationReport {
            target,
            secret_names,
            result,
        }
    }

    /// Finishes a rotation a restart found in `pushed`: Vercel holds the new values, the
    /// reminder may not have gone out. The values are gone (never stored), so only the
    /// reminder and the `notified` step remain.
    pub async fn finish_pushed(
        &self,
        job: &Job,
        handle: &str,
        pushed_at: DateTime<Utc>,
    ) -> Result<(), RotationError> {
        let target = job.target();
        let retire_at = pushed_at + chrono_duration(job.policy.grace);
        self.remind(job, &target, retire_at).await;
        self.recorder
            .record(
                job,
                &Step::Notified {
                    handle: handle.to_owned(),
                    pushed_at,
                },
            )
            .await?;
        Ok(())
    }

    /// Retires an old credential whose grace period is over. The `retiring` step is
    /// recorded first, so a crash mid-way redoes it (retiring twice is harmless).
    pub async fn retire(&self, job: &Job, handle: &str) -> Result<Outcome, RotationError> {
        let target = job.target();
        self.recorder
            .record(
                job,
                &Step::Retiring {
                    previous_handle: handle.to_owned(),
                },
            )
            .await?;
        let provider = job.provider.as_ref();
        let outcome =
            provider
                .retire(&target, handle)
                .await
                .map_err(|source| RotationError::Provider {
                    kind: provider.kind(),
                    action: "retire",
                    source: Box::new(source),
                })?;
        match outcome {
            Outcome::Done => {
                info!(policy = %target.policy, resource = %target.resource, handle, "retired the old credential: its grace period is over")
            }
            Outcome::Unsupported => {
                debug!(policy = %target.policy, resource = %target.resource, handle, "the provider has nothing to retire")
            }
        }
        Ok(outcome)
    }

    async fn walk(
        &self,
        job: &Job,
        target: &Target,
        start: Start,
    ) -> Result<Rotated, RotationError> {
        let provider = job.provider.as_ref();
        let kind = provider.kind();
        let rotation_id = match start.rotation_id {
            Some(id) => {
                info!(policy = %target.policy, resource = %target.resource, rotation_id = %id, "redoing an unfinished rotation from create, with the same rotation id");
                id
            }
            None => {
                let id = uuid::Uuid::new_v4().to_string();
                self.recorder.record(job, &Step::Due).await?;
                id
            }
        };
        self.recorder
            .record(
                job,
                &Step::Creating {
                    rotation_id: rotation_id.clone(),
                },
            )
            .await?;
        fault::point("creating");
        let credential = provider
            .create(target, &rotation_id, start.previous_handle.as_deref())
            .await
            .map_err(|source| RotationError::Provider {
                kind,
                action: "create",
                source: Box::new(source),
            })?;
        let handle = credential.handle.clone();
        self.recorder
            .record(
                job,
                &Step::Created {
                    rotation_id: rotation_id.clone(),
                    handle: handle.clone(),
                },
            )
            .await?;
        fault::point("created");

        // From here on a live credential exists that Vercel does not hold. Any failure that
        // proves it never reached Vercel retires it, so nothing is left live and unknown.
        let pushed = self
            .verify_render_push(job, target, &rotation_id, &credential)
            .await;
        let secrets = match pushed {
            Ok(secrets) => secrets,
            Err((e, sent_maybe)) => {
                if !sent_maybe {
                    if self.retire_unpushed(provider, target, &handle).await {
                        // Nothing of this rotation is live any more: the next attempt starts
                        // afresh. If recording that fails, a retry redoes create with the old
                        // id, which is harmless.
                        let _ = self.recorder.record(job, &Step::Idle).await;
                    }
                } else {
                    warn!(
                        policy = %target.policy,
                        resource = %target.resource,
                        handle = %handle,
                        "the push may or may not have reached Vercel, so the new credential stays live; the retry redoes create with the same rotation id, which replaces it"
                    );
                }
                return Err(e);
            }
        };
        let Some(secrets) = secrets else {
            return Ok(Rotated::DryRun {
                request_line: format!(
                    "PUT /v1/installations/{}/resources/{}/secrets",
                    job.installation.id, target.resource
                ),
                preview: preview(&job.policy.secrets, &credential)?,
            });
        };
        fault::point("pushed-unrecorded");

        let pushed_at = self.clock.now();
        let fingerprint = secret::fingerprint_all(secrets.iter().flat_map(push_values));
        drop(secrets);
        drop(credential);
        self.recorder
            .record(
                job,
                &Step::Pushed {
                    rotation_id,
                    handle: handle.clone(),
                    at: pushed_at,
                    fingerprint: fingerprint.clone(),
                },
            )
            .await?;
        fault::point("pushed");
        let retire_at = pushed_at + chrono_duration(job.policy.grace);
        self.remind(job, target, retire_at).await;
        self.recorder
            .record(
                job,
                &Step::Notified {
                    handle: handle.clone(),
                    pushed_at,
                },
            )
            .await?;
        fault::point("notified");
        Ok(Rotated::Pushed {
            handle,
            fingerprint,
            pushed_at,
            retire_at,
        })
    }

    /// Verifies, renders and pushes. `Ok(None)` in a dry run (nothing sent). On error, the
    /// flag says whether Vercel may have applied the push (then the credential must stay).
    async fn verify_render_push(
        &self,
        job: &Job,
        target: &Target,
        rotation_id: &str,
        credential: &Credential,
    ) -> Result<Option<Vec<PushSecret>>, (RotationError, bool)> {
        let provider = job.provider.as_ref();
        let kind = provider.kind();
        match provider.verify(target, rotation_id, credential).await {
            Ok(Outcome::Done) => {
                debug!(policy = %target.policy, resource = %target.resource, "new credential verified")
            }
            Ok(Outcome::Unsupported) => {}
            Err(source) => {
                return Err((
                    RotationError::Provider {
                        kind,
                        action: "verify",
                        source: Box::new(source),
                    },
                    false,
                ));
            }
        }
        let secrets = render(&job.policy.secrets, credential).map_err(|e| (e, false))?;
        let Some(client) = &self.client else {
            return Ok(None);
        };
        let token = self
            .tokens
            .get(&job.installation.name)
            .ok_or_else(|| (RotationError::NoToken(job.installation.name.clone()), false))?;
        self.recorder
            .record(
                job,
                &Step::Pushing {
                    rotation_id: rotation_id.to_owned(),
                    handle: credential.handle.clone(),
                },
            )
            .await
            .map_err(|e| (e.into(), false))?;
        fault::point("pushing");
        let installation = InstallationRef {
            name: &job.installation.name,
            id: &job.installation.id,
            token,
        };
        match client
            .update_resource_secrets(&installation, &target.resource, &secrets)
            .await
        {
            Ok(()) => Ok(Some(secrets)),
            Err(e) => {
                // A definite refusal (a 4xx, with no unclear attempt before it) means Vercel
                // kept the old values; a timeout, a dropped connection or a 5xx leaves it
                // unknown.
                let sent_maybe = e.may_have_applied();
                Err((RotationError::Vercel(e), sent_maybe))
            }
        }
    }

    /// Retires a credential that never reached Vercel. True when nothing of it is live any
    /// more (retired, or the provider has nothing to retire).
    async fn retire_unpushed(
        &self,
        provider: &dyn Provider,
        target: &Target,
        handle: &str,
    ) -> bool {
        match provider.retire(target, handle).await {
            Ok(Outcome::Done) => {
                info!(policy = %target.policy, resource = %target.resource, handle, "retired the new credential, which was never pushed");
                true
            }
            Ok(Outcome::Unsupported) => true,
            Err(e) => {
                warn!(policy = %target.policy, resource = %target.resource, handle, "could not retire the new credential, which was never pushed (the retry redoes create with the same rotation id, which replaces it): {e}");
                false
            }
        }
    }

    /// The redeploy reminder: always a warn-level log line; a dashboard banner when the
    /// policy asks for one. A failed banner is logged and never fails the rotation.
    async fn remind(&self, job: &Job, target: &Target, retire_at: DateTime<Utc>) {
        let names: Vec<String> = job.policy.secrets.iter().map(|s| s.env_name()).collect();
        let names = names.join(", ");
        warn!(
            installation = %job.installation.name,
            installation_id = %job.installation.id,
            resource = %target.resource,
            secrets = %names,
            retire_at = %retire_at.to_rfc3339(),
            "pushed new values of {names} to resource {resource} of installation {installation}: running deployments keep the old values until the projects connected to it are redeployed; redeploy them before {retire_at}, when the old credential is retired",
            resource = target.resource,
            installation = job.installation.name,
            retire_at = retire_at.format("%Y-%m-%d %H:%M UTC"),
        );
        if !job.policy.notify_dashboard {
            return;
        }
        let (Some(client), Some(token)) = (&self.client, self.tokens.get(&job.installation.name))
        else {
            return;
        };
        let notification = Notification {
            level: NotificationLevel::Warn,
            title: "Redeploy to use the rotated credentials".to_owned(),
            message: format!(
                "{names} {} rotated. Running deployments keep the old values until you redeploy; the old credential stops working at {}.",
                if job.policy.secrets.len() == 1 {
                    "was"
                } else {
                    "were"
                },
                retire_at.format("%Y-%m-%d %H:%M UTC"),
            ),
            href: None,
        };
        let installation = InstallationRef {
            name: &job.installation.name,
            id: &job.installation.id,
            token,
        };
        if let Err(e) = client
            .notify_resource(&installation, &target.resource, &notification)
            .await
        {
            warn!(resource = %target.resource, "the dashboard notification failed (the rotation itself succeeded): {e}");
        }
    }
}

fn push_values(secret: &PushSecret) -> impl Iterator<Item = &SecretString> {
    std::iter::once(&secret.value).chain(secret.environment_overrides.iter().map(|(_, v)| v))
}

fn chrono_duration(d: Duration) -> chrono::TimeDelta {
    chrono::TimeDelta::from_std(d).unwrap_or(chrono::TimeDelta::MAX)
}

/// Renders every secret of a policy over a credential's fields.
pub fn render(
    specs: &[crate::config::SecretSpec],
    credential: &Credential,
) -> Result<Vec<PushSecret>, RotationError> {
    specs
        .iter()
        .map(|spec| {
            let err = |source| RotationError::Template {
                secret: spec.env_name(),
                source,
            };
            Ok(PushSecret {
                name: spec.name.clone(),
                value: spec.value.render(&credential.fields).map_err(err)?,
                prefix: spec.prefix.clone(),
                environment_overrides: spec
                    .environment_overrides
                    .try_map(|t| t.render(&credential.fields))
                    .map_err(err)?,
            })
        })
        .collect()
}

/// The body a dry run would have sent. The credential is the dry-run provider's, whose
/// fields are placeholders (`<password>`), so the rendered text reveals no value.
fn preview(
    specs: &[crate::config::SecretSpec],
    credential: &Credential,
) -> Result<String, RotationError> {
    let secrets = render(specs, credential)?;
    let items: Vec<serde_json::Value> = secrets
        .iter()
        .map(|s| {
            let mut item = serde_json::Map::new();
            item.insert("name".into(), s.name.clone().into());
            item.insert("value".into(), s.value.expose_secret().into());
            if let Some(prefix) = &s.prefix {
                item.insert("prefix".into(), prefix.clone().into());
            }
            if !s.environment_overrides.is_empty() {
                let overrides: serde_json::Map<String, serde_json::Value> = s
                    .environment_overrides
                    .iter()
                    .map(|(env, v)| (env.to_owned(), v.expose_secret().into()))
                    .collect();
                item.insert("environmentOverrides".into(), overrides.into());
            }
            item.into()
        })
        .collect();
    let body = serde_json::json!({ "secrets": items, "partial": true });
    Ok(serde_json::to_string_pretty(&body).unwrap_or_default())
}
