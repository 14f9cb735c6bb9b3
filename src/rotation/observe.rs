//! What a turn tells an operator about each rotation event: one log line with the event's
//! stable `message_id` ([`crate::events`]) at a level an SRE can alert on, one entry in the
//! state's history, and the metrics.
//!
//! Levels: ERROR for what needs a human (a permanent failure that stops the key, a retirement
//! still failing after [`RETIRE_ATTEMPTS_BEFORE_ERROR`] tries), WARN for what is degraded but
//! retrying, INFO for progress and success (the redeploy reminder included).
//!
//! Nothing here changes the rotation: a history entry that cannot be appended is logged and
//! dropped.

use chrono::{DateTime, Utc};
use tracing::warn;

use super::{Job, RotationError};
use crate::error::Classify;
use crate::events::{EventKind, Severity, Trigger, one_line, rotation_event};
use crate::metrics::{Metrics, Outcome};
use crate::state::{HistoryEntry, Record, StateStore};

/// A retirement that has failed this many times in a row is logged at ERROR: by then
/// (backoff from one minute, doubling) it has failed for about half an hour, and the old
/// credential outlives its grace period until someone looks.
pub const RETIRE_ATTEMPTS_BEFORE_ERROR: u32 = 5;

/// Tells the events of one turn of one key.
pub(super) struct Observer<'a> {
    pub store: &'a dyn StateStore,
    pub metrics: Option<&'a Metrics>,
    pub job: &'a Job,
    pub trigger: Trigger,
    /// Why Vercel asked, for a Vercel-triggered turn.
    pub reason: Option<&'a str>,
    /// A dry run's turn: its progress is no rotation's and is not told; failures are.
    pub preview: bool,
}

impl Observer<'_> {
    fn policy(&self) -> &str {
        &self.job.key.policy
    }

    fn resource(&self) -> &str {
        &self.job.key.resource
    }

    fn entry(&self, now: DateTime<Utc>, event: EventKind) -> HistoryEntry {
        let mut entry = HistoryEntry::new(now, self.policy(), self.resource(), event);
        entry.trigger = Some(self.trigger);
        entry
    }

    async fn append(&self, entry: HistoryEntry) {
        if let Err(e) = self.store.append_history(vec![entry]).await {
            warn!(policy = %self.policy(), resource = %self.resource(), "could not append to the rotation history (the rotation is unaffected): {e}");
        }
    }

    /// Vercel asked for this rotation (its rotate request), with its reason.
    pub async fn requested_by_vercel(&self, now: DateTime<Utc>) {
        if self.preview {
            return;
        }
        rotation_event!(
            Severity::Info,
            EventKind::RequestedByVercel,
            policy = %self.policy(),
            resource = %self.resource(),
            trigger = %self.trigger,
            reason = self.reason.map(one_line).as_deref(),
            "Vercel asked for a rotation"
        );
        let mut entry = self.entry(now, EventKind::RequestedByVercel);
        if let Some(reason) = self.reason {
            entry = entry.with_reason(reason);
        }
        self.append(entry).await;
    }

    /// `create` is about to be asked; `redo` when it redoes an unfinished rotation.
    pub async fn started(&self, now: DateTime<Utc>, rotation_id: &str, redo: bool) {
        if self.preview {
            return;
        }
        let message = if redo {
            "redoing an unfinished rotation from create, with the same rotation id"
        } else {
            "rotation started"
        };
        rotation_event!(
            Severity::Info,
            EventKind::Started,
            policy = %self.policy(),
            resource = %self.resource(),
            rotation_id,
            trigger = %self.trigger,
            redo,
            "{message}"
        );
        let mut entry = self.entry(now, EventKind::Started);
        entry.rotation_id = Some(rotation_id.to_owned());
        self.append(entry).await;
    }

    /// Vercel holds the new values.
    pub async fn pushed(&self, now: DateTime<Utc>, rotation_id: &str, fingerprint: &str) {
        if self.preview {
            return;
        }
        rotation_event!(
            Severity::Info,
            EventKind::Pushed,
            policy = %self.policy(),
            resource = %self.resource(),
            rotation_id,
            trigger = %self.trigger,
            fingerprint,
            "pushed the new values to Vercel"
        );
        let mut entry = self.entry(now, EventKind::Pushed);
        entry.rotation_id = Some(rotation_id.to_owned());
        entry.fingerprint = Some(fingerprint.to_owned());
        self.append(entry).await;
    }

    /// The rotation is done: pushed, and the reminder sent.
    pub async fn succeeded(
        &self,
        now: DateTime<Utc>,
        rotation_id: Option<&str>,
        fingerprint: &str,
        retire_at: Option<DateTime<Utc>>,
    ) {
        if self.preview {
            return;
        }
        if let Some(metrics) = self.metrics {
            metrics.count_rotation(&self.job.policy.name, Outcome::Success);
        }
        rotation_event!(
            Severity::Info,
            EventKind::Succeeded,
            policy = %self.policy(),
            resource = %self.resource(),
            rotation_id,
            trigger = %self.trigger,
            fingerprint,
            retire_at = retire_at.map(|t| t.to_rfc3339()).as_deref(),
            "rotation succeeded"
        );
        let mut entry = self.entry(now, EventKind::Succeeded);
        entry.rotation_id = rotation_id.map(str::to_owned);
        entry.fingerprint = Some(fingerprint.to_owned());
        self.append(entry).await;
    }

    /// An attempt failed; `record` is as written after it (stopped, or when it is retried).
    pub async fn failed(
        &self,
        now: DateTime<Utc>,
        rotation_id: Option<&str>,
        error: &RotationError,
        record: &Record,
    ) {
        if let Some(metrics) = self.metrics {
            metrics.count_rotation(&self.job.policy.name, Outcome::Failure);
        }
        let text = one_line(&error.to_string()).into_owned();
        let (policy, resource, trigger) = (self.policy(), self.resource(), self.trigger);
        let transient = error.is_transient();
        let failures = record.consecutive_failures;
        if record.stopped.is_some() {
            rotation_event!(
                Severity::Error,
                EventKind::Failed,
                policy = %policy,
                resource = %resource,
                rotation_id,
                trigger = %trigger,
                error = %text,
                transient,
                failures,
                stopped = true,
                "rotation failed and is stopped: it stays stopped until the policy's config changes (or `run --once` forces it): {text}"
            );
        } else if let Some(retry) = record.retry_at {
            let wait = (retry - now).to_std().unwrap_or_default();
            let retry_in = crate::duration::format(std::time::Duration::from_secs(wait.as_secs()));
            rotation_event!(
                Severity::Warn,
                EventKind::Failed,
                policy = %policy,
                resource = %resource,
                rotation_id,
                trigger = %trigger,
                error = %text,
                transient,
                failures,
                retry_in = %retry_in,
                "rotation failed; it will be retried in {retry_in}: {text}"
            );
        } else {
            // A forced turn's failure with nothing scheduled (a dry run, say).
            let severity = if transient {
                Severity::Warn
            } else {
                Severity::Error
            };
            rotation_event!(
                severity,
                EventKind::Failed,
                policy = %policy,
                resource = %resource,
                rotation_id,
                trigger = %trigger,
                error = %text,
                transient,
                failures,
                "rotation failed: {text}"
            );
        }
        let mut entry = self.entry(now, EventKind::Failed).with_error(&text);
        entry.rotation_id = rotation_id.map(str::to_owned);
        self.append(entry).await;
    }

    /// A due rotation waits for another credential's grace period.
    pub async fn held_back(&self, now: DateTime<Utc>, until: DateTime<Utc>) {
        if self.preview {
            return;
        }
        let why = RotationError::HeldBack { until }.to_string();
        rotation_event!(
            Severity::Info,
            EventKind::HeldBack,
            policy = %self.policy(),
            resource = %self.resource(),
            trigger = %self.trigger,
            until = %until.to_rfc3339(),
            "rotation {why}"
        );
        let entry = self.entry(now, EventKind::HeldBack).with_error(&why);
        self.append(entry).await;
    }

    /// An old credential's grace period is over and it was retired (`by_provider`), or the
    /// provider had nothing to retire (the backend's own business, like `random` without an
    /// `apply` command).
    pub async fn retired(&self, now: DateTime<Utc>, handle: &str, by_provider: bool) {
        if self.preview {
            return;
        }
        let message = if by_provider {
            "retired an old credential: its grace period is over"
        } else {
            "an old credential's grace period is over; the provider has nothing to retire"
        };
        rotation_event!(
            Severity::Info,
            EventKind::Retired,
            policy = %self.policy(),
            resource = %self.resource(),
            trigger = %self.trigger,
            handle,
            by_provider,
            "{message}"
        );
        let mut entry = self.entry(now, EventKind::Retired);
        entry.handle = Some(handle.to_owned());
        self.append(entry).await;
    }

    /// Retiring an old credential failed `attempts` times in a row; it is retried.
    pub async fn retire_failed(
        &self,
        now: DateTime<Utc>,
        handle: &str,
        error: &str,
        attempts: u32,
    ) {
        let text = one_line(error).into_owned();
        let severity = if attempts >= RETIRE_ATTEMPTS_BEFORE_ERROR {
            Severity::Error
        } else {
            Severity::Warn
        };
        rotation_event!(
            severity,
            EventKind::RetireFailed,
            policy = %self.policy(),
            resource = %self.resource(),
            trigger = %self.trigger,
            handle,
            error = %text,
            attempts,
            "retiring an old credential failed ({attempts} time(s) in a row); it is retried: {text}"
        );
        let mut entry = self.entry(now, EventKind::RetireFailed).with_error(&text);
        entry.handle = Some(handle.to_owned());
        self.append(entry).await;
    }
}
