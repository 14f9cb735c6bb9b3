//! Why a call to Vercel failed, said for a human (what, where, what to do) and classified for
//! the retry loop (transient or permanent).
//!
//! Nothing here holds a token or a pushed value: the server's message is scrubbed before it is
//! stored (see `response.rs`), the request body is never copied in, and transport errors are
//! described from reqwest's error chain without the URL.

use std::fmt;
use std::time::Duration;

use reqwest::StatusCode;

use crate::error::{Classify, Persistence};

/// Which call failed, for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// `PUT /v1/installations/{id}/resources/{resourceId}/secrets`.
    UpdateSecrets,
    /// `PATCH /v1/installations/{id}/resources/{resourceId}` with a notification.
    Notify,
    /// `GET /v1/installations/{id}/resources`: a read, which changes nothing.
    ListResources,
}

impl Operation {
    /// A verb phrase: "updating the secrets of resource "store_abc"".
    fn doing(self, resource: &str) -> String {
        match self {
            Operation::UpdateSecrets => format!("updating the secrets of resource \"{resource}\""),
            Operation::Notify => {
                format!("sending a dashboard notification to resource \"{resource}\"")
            }
            Operation::ListResources => "listing the resources".to_owned(),
        }
    }

    /// The route template, as metrics label requests: never a path with ids in it.
    pub fn endpoint(self) -> &'static str {
        match self {
            Operation::UpdateSecrets => "PUT /v1/installations/{id}/resources/{resourceId}/secrets",
            Operation::Notify => "PATCH /v1/installations/{id}/resources/{resourceId}",
            Operation::ListResources => "GET /v1/installations/{id}/resources",
        }
    }

    /// Whether the call changes anything at Vercel (an attempt without a clear answer may
    /// then have been applied).
    pub(crate) fn changes(self) -> bool {
        !matches!(self, Operation::ListResources)
    }
}

/// A failed call to the Vercel API.
///
/// `installation` is the config table name (`acme`), `installation_id` Vercel's
/// `integrationConfigurationId`, `resource` the resource id: every message names all three so
/// a user with many installations knows which one to look at.
///
/// Text fields are `Box<str>` rather than `String` to keep the error under clippy's
/// `result_large_err` limit (128 bytes), here and in every error enum that wraps it.
#[derive(Debug, thiserror::Error)]
pub enum VercelError {
    /// The HTTP client could not be built (TLS set-up). Nothing was sent.
    Client { detail: Box<str> },
    /// `vercel.api-url` cannot have a path appended (`mailto:x`, not http or https).
    BaseUrl { url: Box<str> },
    /// An id that would not name one path segment: empty, `.` or `..` (the URL library drops
    /// dot segments, which would send the call to another endpoint). Nothing was sent.
    InvalidId {
        operation: Operation,
        installation: Box<str>,
        installation_id: Box<str>,
        resource: Box<str>,
    },
    /// The token has characters an HTTP header cannot carry (a newline, say). Nothing was
    /// sent; the token itself is not in the error.
    InvalidToken {
        operation: Operation,
        installation: Box<str>,
        installation_id: Box<str>,
        resource: Box<str>,
    },
    /// The body could not be encoded. Not expected with the types sent; kept so it is an error
    /// and not a panic.
    Encode {
        operation: Operation,
        installation: Box<str>,
        installation_id: Box<str>,
        resource: Box<str>,
    },
    /// Vercel answered with a status that is not a success (not `2xx`).
    Status {
        operation: Operation,
        installation: Box<str>,
        installation_id: Box<str>,
        resource: Box<str>,
        status: u16,
        /// `error.code` of the body, when it parsed.
        code: Option<Box<str>>,
        /// `error.message` of the body, when it parsed: scrubbed of every pushed value and of
        /// the token, control characters replaced, cut to a readable length.
        message: Option<Box<str>>,
        /// When the server says to try again: `Retry-After`, else (429 only) the body's
        /// `error.limit.resetMs`/`reset`, else `X-RateLimit-Reset`. Read by the retry loop.
        retry_after: Option<Duration>,
    },
    /// The call was not attempted (again): Vercel's rate limit holds requests to this endpoint
    /// back until after the call's `vercel.retry-deadline`. Only when no attempt was made;
    /// otherwise the last attempt's error is returned.
    Throttled {
        operation: Operation,
        installation: Box<str>,
        installation_id: Box<str>,
        resource: Box<str>,
        /// How long until the endpoint takes requests again.
        retry_after: Duration,
    },
    /// No answer: connection refused or reset, TLS failure, timeout.
    Transport {
        operation: Operation,
        installation: Box<str>,
        installation_id: Box<str>,
        resource: Box<str>,
        /// The request ran out of `vercel.request-timeout`.
        timeout: bool,
        /// reqwest's error chain, without the URL; it never holds headers or the body.
        detail: Box<str>,
    },
    /// Vercel answered `2xx` but the body is not what the call expects (the listing does not
    /// parse, or is too large). `detail` says what and where, never what the body holds.
    InvalidAnswer {
        operation: Operation,
        installation: Box<str>,
        installation_id: Box<str>,
        detail: Box<str>,
    },
    /// The call failed with `last`, after an earlier attempt whose outcome is unknown (a
    /// timeout, a dropped connection, a 5xx): Vercel may hold the values all the same, so the
    /// new credential must not be retired as if it had never been delivered.
    Uncertain { last: Box<VercelError> },
}

impl VercelError {
    /// The error of the last attempt (itself, unless wrapped by [`VercelError::Uncertain`]).
    fn last(&self) -> &VercelError {
        match self {
            VercelError::Uncertain { last } => last.last(),
            other => other,
        }
    }

    /// Whether Vercel may have applied the call although it failed: no answer (timeout,
    /// dropped connection), a 408 or 5xx (the change may be made before the error), a 3xx
    /// (not followed: something between us and Vercel answered, and whether the request went
    /// on is unknown), or such an attempt earlier in the call's retries. A 429 or another 4xx
    /// is a definite refusal.
    pub fn may_have_applied(&self) -> bool {
        match self {
            VercelError::Uncertain { .. } | VercelError::Transport { .. } => true,
            VercelError::Status { status, .. } => matches!(status, 300..=399 | 408 | 500..=599),
            _ => false,
        }
    }

    /// Marks `self` as the end of a call in which an earlier attempt may have been applied.
    pub(crate) fn after_uncertain_attempt(self) -> VercelError {
        if self.may_have_applied() {
            self
        } else {
            VercelError::Uncertain {
                last: Box::new(self),
            }
        }
    }

    /// The HTTP status Vercel answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self.last() {
            VercelError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Vercel's `error.code` (`forbidden`, `rate_limited`, ...), if the body carried one.
    pub fn code(&self) -> Option<&str> {
        match self.last() {
            VercelError::Status { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// Vercel's `error.message`, scrubbed, if the body carried one.
    pub fn message(&self) -> Option<&str> {
        match self.last() {
            VercelError::Status { message, .. } => message.as_deref(),
            _ => None,
        }
    }

    /// How long the server asked to wait before trying again, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self.last() {
            VercelError::Status { retry_after, .. } => *retry_after,
            VercelError::Throttled { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether the request timed out.
    pub fn is_timeout(&self) -> bool {
        matches!(self.last(), VercelError::Transport { timeout: true, .. })
    }
}

/// Transient: 408, 429 and 5xx, which may pass unchanged. Permanent: everything else,
/// including a 3xx (redirects are not followed, so a retry would get the same answer). A
/// `2xx` never gets here: it is a success.
pub(crate) fn classify_status(status: u16) -> Persistence {
    match status {
        408 | 429 | 500..=599 => Persistence::Transient,
        _ => Persistence::Permanent,
    }
}

impl Classify for VercelError {
    fn persistence(&self) -> Persistence {
        match self {
            VercelError::Status { status, .. } => classify_status(*status),
            // An answer that does not parse is Vercel's (or a proxy's) glitch more likely
            // than a lasting change: worth asking again later.
            VercelError::Transport { .. }
            | VercelError::Throttled { .. }
            | VercelError::InvalidAnswer { .. } => Persistence::Transient,
            VercelError::Uncertain { last } => last.persistence(),
            VercelError::Client { .. }
            | VercelError::BaseUrl { .. }
            | VercelError::InvalidId { .. }
            | VercelError::InvalidToken { .. }
            | VercelError::Encode { .. } => Persistence::Permanent,
        }
    }
}

/// `401 Unauthorized`, or just `599` for a status without a standard reason.
fn status_line(status: u16) -> String {
    match StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
    {
        Some(reason) => format!("{status} {reason}"),
        None => status.to_string(),
    }
}

/// ` (code: message)`, ` (message)`, ` (code)` or nothing.
fn server_detail(code: Option<&str>, message: Option<&str>) -> String {
    match (code, message) {
        (Some(c), Some(m)) => format!(" ({c}: {m})"),
        (Some(x), None) | (None, Some(x)) => format!(" ({x})"),
        (None, None) => String::new(),
    }
}

impl fmt::Display for VercelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VercelError::Client { detail } => {
                write!(f, "could not set up the HTTP client for Vercel: {detail}")
            }
            VercelError::Uncertain { last } => write!(
                f,
                "{last} (an earlier attempt got no clear answer, so Vercel may hold the new values)"
            ),
            VercelError::BaseUrl { url } => write!(
                f,
                "vercel.api-url {url:?} cannot be used as a base URL: use an http or https URL"
            ),
            VercelError::InvalidId {
                operation,
                installation,
                installation_id,
                resource,
            } => write!(
                f,
                "refusing to call Vercel for {} of installation \"{installation}\" \
                 ({installation_id:?}): an id is empty, \".\" or \"..\"",
                operation.doing(resource)
            ),
            VercelError::InvalidToken {
                operation,
                installation,
                installation_id,
                resource,
            } => write!(
                f,
                "the token of installation \"{installation}\" ({installation_id}) cannot be sent \
                 in an HTTP header (it has a control or non-ASCII character; a stray newline?), \
                 so {} was not attempted: check that installation's token",
                operation.doing(resource)
            ),
            VercelError::Encode {
                operation,
                installation,
                installation_id,
                resource,
            } => write!(
                f,
                "could not encode the request body for {} of installation \"{installation}\" \
                 ({installation_id})",
                operation.doing(resource)
            ),
            VercelError::Status {
                operation,
                installation,
                installation_id,
                resource,
                status,
                code,
                message,
                retry_after,
            } => {
                let line = status_line(*status);
                let detail = server_detail(code.as_deref(), message.as_deref());
                let doing = operation.doing(resource);
                let inst = format!("installation \"{installation}\" ({installation_id})");
                match status {
                    401 => write!(
                        f,
                        "Vercel refused the token of {inst} with {line}{detail} when {doing}: \
                         check that installation's token"
                    )?,
                    403 => write!(
                        f,
                        "the token of {inst} lacks permission when {doing}: Vercel answered \
                         {line}{detail}; check that the resource belongs to that installation"
                    )?,
                    404 => write!(
                        f,
                        "Vercel reports an unknown installation or resource when {doing} of \
                         {inst}: {line}{detail}; check the ids in the config"
                    )?,
                    410 => write!(
                        f,
                        "Vercel answered {line}{detail} when {doing} of {inst}: gone: the \
                         installation or resource was removed; the policy stays stopped until \
                         the config changes"
                    )?,
                    400 | 409 | 422 => {
                        write!(f, "Vercel rejected {doing} of {inst} with {line}{detail}")?
                    }
                    408 => write!(
                        f,
                        "Vercel timed out waiting for the request when {doing} of {inst}: \
                         {line}{detail}"
                    )?,
                    429 => write!(f, "Vercel rate limited {doing} of {inst}: {line}{detail}")?,
                    500..=599 => write!(
                        f,
                        "Vercel server error when {doing} of {inst}: {line}{detail}"
                    )?,
                    _ => write!(
                        f,
                        "unexpected answer from Vercel when {doing} of {inst}: {line}{detail}"
                    )?,
                }
                if let Some(wait) = retry_after {
                    // Whole seconds (rounded up) read better than "6s 998ms 311us".
                    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    write!(
                        f,
                        "; Vercel asks to retry in {}",
                        crate::duration::format(Duration::from_secs(secs))
                    )?;
                }
                Ok(())
            }
            VercelError::Throttled {
                operation,
                installation,
                installation_id,
                resource,
                retry_after,
            } => {
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                write!(
                    f,
                    "did not call Vercel for {} of installation \"{installation}\" \
                     ({installation_id}): its rate limit holds this endpoint back for another {}, \
                     past vercel.retry-deadline",
                    operation.doing(resource),
                    crate::duration::format(Duration::from_secs(secs))
                )
            }
            VercelError::InvalidAnswer {
                operation,
                installation,
                installation_id,
                detail,
            } => write!(
                f,
                "Vercel's answer to {} of installation \"{installation}\" ({installation_id}) \
                 cannot be used: {detail}",
                operation.doing("")
            ),
            VercelError::Transport {
                operation,
                installation,
                installation_id,
                resource,
                timeout,
                detail,
            } => {
                let doing = operation.doing(resource);
                if *timeout {
                    write!(
                        f,
                        "no answer from Vercel within vercel.request-timeout when {doing} of \
                         installation \"{installation}\" ({installation_id}): {detail}"
                    )
                } else {
                    write!(
                        f,
                        "could not reach Vercel when {doing} of installation \"{installation}\" \
                         ({installation_id}): {detail}"
                    )
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_error(status: u16) -> VercelError {
        VercelError::Status {
            operation: Operation::UpdateSecrets,
            installation: "acme".into(),
            installation_id: "icfg_123".into(),
            resource: "store_abc".into(),
            status,
            code: Some("some_code".into()),
            message: Some("some message".into()),
            retry_after: None,
        }
    }

    #[test]
    fn small_enough_to_return_and_wrap() {
        assert!(std::mem::size_of::<VercelError>() <= 128);
    }

    #[test]
    fn status_classification_table() {
        use Persistence::{Permanent, Transient};
        let table = [
            (301, Permanent),
            (302, Permanent),
            (400, Permanent),
            (401, Permanent),
            (403, Permanent),
            (404, Permanent),
            (405, Permanent),
            (408, Transient),
            (409, Permanent),
            (410, Permanent),
            (413, Permanent),
            (422, Permanent),
            (429, Transient),
            (500, Transient),
            (501, Transient),
            (502, Transient),
            (503, Transient),
            (504, Transient),
            (599, Transient),
        ];
        for (status, want) in table {
            assert_eq!(classify_status(status), want, "{status}");
            assert_eq!(status_error(status).persistence(), want, "{status}");
        }
    }

    /// Only an answer that refuses (4xx) says the values were not taken; a redirect, a 408, a
    /// 5xx or no answer leaves it open, so the new credential must stay live.
    #[test]
    fn which_answers_may_have_been_applied() {
        for status in [
            300, 301, 302, 303, 304, 307, 308, 408, 500, 502, 503, 504, 599,
        ] {
            assert!(status_error(status).may_have_applied(), "{status}");
        }
        for status in [400, 401, 403, 404, 405, 409, 410, 413, 422, 429] {
            assert!(!status_error(status).may_have_applied(), "{status}");
        }
        let refused_after_unclear = status_error(422).after_uncertain_attempt();
        assert!(refused_after_unclear.may_have_applied());
        assert_eq!(refused_after_unclear.status(), Some(422));
    }

    #[test]
    fn transport_errors_are_transient_and_local_ones_permanent() {
        let transport = VercelError::Transport {
            operation: Operation::Notify,
            installation: "acme".into(),
            installation_id: "icfg_123".into(),
            resource: "store_abc".into(),
            timeout: true,
            detail: "operation timed out".into(),
        };
        assert!(transport.is_transient());
        assert!(transport.is_timeout());
        let token = VercelError::InvalidToken {
            operation: Operation::Notify,
            installation: "acme".into(),
            installation_id: "icfg_123".into(),
            resource: "store_abc".into(),
        };
        assert_eq!(token.persistence(), Persistence::Permanent);
        let throttled = VercelError::Throttled {
            operation: Operation::UpdateSecrets,
            installation: "acme".into(),
            installation_id: "icfg_123".into(),
            resource: "store_abc".into(),
            retry_after: Duration::from_millis(41_500),
        };
        assert!(throttled.is_transient());
        assert_eq!(throttled.retry_after(), Some(Duration::from_millis(41_500)));
        assert_eq!(
            throttled.to_string(),
            "did not call Vercel for updating the secrets of resource \"store_abc\" of \
             installation \"acme\" (icfg_123): its rate limit holds this endpoint back for \
             another 42s, past vercel.retry-deadline"
        );
    }

    #[test]
    fn messages_say_what_and_where() {
        let table = [
            (
                401,
                "Vercel refused the token of installation \"acme\" (icfg_123) with 401 Unauthorized (some_code: some message) when updating the secrets of resource \"store_abc\": check that installation's token",
            ),
            (403, "lacks permission"),
            (404, "unknown installation or resource"),
            (
                410,
                "gone: the installation or resource was removed; the policy stays stopped until the config changes",
            ),
            (
                400,
                "Vercel rejected updating the secrets of resource \"store_abc\" of installation \"acme\" (icfg_123) with 400 Bad Request (some_code: some message)",
            ),
            (409, "409 Conflict (some_code: some message)"),
            (422, "422 Unprocessable Entity (some_code: some message)"),
            (429, "rate limited"),
            (503, "server error"),
            (302, "unexpected answer"),
        ];
        for (status, want) in table {
            let text = status_error(status).to_string();
            assert!(text.contains(want), "{status}: {text}");
            assert!(
                text.contains("icfg_123") && text.contains("store_abc"),
                "{text}"
            );
        }
    }

    #[test]
    fn retry_hint_is_rounded_up_to_seconds() {
        let mut e = status_error(429);
        if let VercelError::Status { retry_after, .. } = &mut e {
            *retry_after = Some(Duration::from_millis(6_200));
        }
        assert!(
            e.to_string().ends_with("; Vercel asks to retry in 7s"),
            "{e}"
        );
    }
}
