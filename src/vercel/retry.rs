//! When a failed call is tried again, and after how long.
//!
//! Retried: no answer (connection errors, timeouts), 429, 500, 502, 503 and 504. Everything
//! else fails at once: a 4xx would get the same answer again, and the other transient statuses
//! (408, 501, 505+) are rare enough to leave to the rotation's slower backoff. The waits are
//! exponential with full jitter (uniform in `[0, min(cap, base * 2^(retry - 1))]`), unless the
//! server said when to come back (`Retry-After`, a 429's reset), and all retries of one call
//! end at its deadline (`vercel.retry-deadline`).

use std::time::Duration;

use super::VercelError;

/// First backoff ceiling: the first retry waits up to this long.
pub(crate) const BACKOFF_BASE: Duration = Duration::from_millis(200);
/// Largest backoff ceiling, reached after about eight retries.
pub(crate) const BACKOFF_CAP: Duration = Duration::from_secs(30);

/// How one call retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RetryPolicy {
    pub(crate) base: Duration,
    pub(crate) cap: Duration,
    /// From the first attempt: no retry starts after this.
    pub(crate) deadline: Duration,
}

impl RetryPolicy {
    /// The wait before retry number `retry` (1 for the first retry), full jitter: `unit` is a
    /// uniform random number in `[0, 1)`.
    pub(crate) fn backoff(&self, retry: u32, unit: f64) -> Duration {
        let doublings = retry.saturating_sub(1).min(31);
        let ceiling = self.base.saturating_mul(1u32 << doublings).min(self.cap);
        ceiling.mul_f64(unit.clamp(0.0, 1.0))
    }
}

/// Whether another attempt of the same call may succeed.
pub(crate) fn is_retryable(error: &VercelError) -> bool {
    match error {
        VercelError::Transport { .. } => true,
        VercelError::Status { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
        _ => false,
    }
}

/// How a failed attempt is named in the retry log line: its status, or `timeout` /
/// `connection` when there was no answer.
pub(crate) fn outcome_label(error: &VercelError) -> String {
    match error {
        VercelError::Status { status, .. } => status.to_string(),
        VercelError::Transport { timeout: true, .. } => "timeout".to_owned(),
        VercelError::Transport { .. } => "connection".to_owned(),
        _ => "error".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vercel::Operation;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            base: BACKOFF_BASE,
            cap: BACKOFF_CAP,
            deadline: Duration::from_secs(300),
        }
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_full_jitter() {
        let p = policy();
        let ms = Duration::from_millis;
        let table = [
            (1, 1.0, ms(200)),
            (2, 1.0, ms(400)),
            (3, 1.0, ms(800)),
            (8, 1.0, ms(25_600)),
            (9, 1.0, ms(30_000)),
            (1_000, 1.0, ms(30_000)),
            (3, 0.5, ms(400)),
            (3, 0.0, ms(0)),
            (0, 1.0, ms(200)),
        ];
        for (retry, unit, want) in table {
            assert_eq!(p.backoff(retry, unit), want, "retry {retry} unit {unit}");
        }
    }

    fn status(status: u16) -> VercelError {
        VercelError::Status {
            operation: Operation::UpdateSecrets,
            installation: "acme".into(),
            installation_id: "icfg_1".into(),
            resource: "r".into(),
            status,
            code: None,
            message: None,
            retry_after: None,
        }
    }

    #[test]
    fn which_failures_are_retried() {
        for s in [429, 500, 502, 503, 504] {
            assert!(is_retryable(&status(s)), "{s}");
        }
        for s in [200, 302, 400, 401, 403, 404, 408, 409, 410, 422, 501, 505] {
            assert!(!is_retryable(&status(s)), "{s}");
        }
        let transport = |timeout| VercelError::Transport {
            operation: Operation::Notify,
            installation: "acme".into(),
            installation_id: "icfg_1".into(),
            resource: "r".into(),
            timeout,
            detail: "x".into(),
        };
        assert!(is_retryable(&transport(true)) && is_retryable(&transport(false)));
        assert_eq!(outcome_label(&transport(true)), "timeout");
        assert_eq!(outcome_label(&transport(false)), "connection");
        assert_eq!(outcome_label(&status(503)), "503");
        let local = VercelError::BaseUrl { url: "x".into() };
        assert!(!is_retryable(&local));
    }
}
