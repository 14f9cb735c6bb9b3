//! `POST /v1/installations/{installationId}/resources/{resourceId}/secrets/rotate`: Vercel
//! asking for a rotation.
//!
//! In order: the token ([`super::auth`]; 401, 403, or 503 when Vercel's keys cannot be had),
//! then the body (400), then the `Idempotency-Key` (400 when malformed; an earlier answer to
//! it is given again), then the daemon decides: 202 `{"sync": false}` when a policy governs
//! the resource (the rotation runs after the answer; the new values reach Vercel with the
//! usual PUT), 404 when none does. Errors are `{"error": {"code", "message"}}`, and each
//! refusal is one log line saying why, never with the token.
//!
//! The body is `{"reason"?: string, "delayOldSecretsExpirationHours"?: number}`, the delay
//! 0 to 720 hours, fractional. Keys this server does not know are ignored rather than
//! refused: Vercel may add some, and refusing would break every partner's rotate button.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::auth::Caller;
use super::idempotency::{self, Held};
use super::{App, RotateAnswer, RotateRequest};
use crate::state::AnsweredRequest;

/// The most hours Vercel may ask the old credentials to stay valid.
pub const MAX_DELAY_HOURS: f64 = 720.0;
/// The longest installation or resource id accepted in the path.
const MAX_ID_LEN: usize = 256;
/// The longest reason kept (longer ones are cut, not refused: it is only logged).
const MAX_REASON_CHARS: usize = 500;

/// What Vercel asked for, from the body.
#[derive(Debug, Clone, PartialEq)]
pub struct RotateBody {
    pub reason: Option<String>,
    /// `delayOldSecretsExpirationHours` as a duration.
    pub grace: Option<Duration>,
}

/// Parses the body; `Err` says what is wrong with it. An empty body asks for nothing
/// special.
pub fn parse_body(bytes: &[u8]) -> Result<RotateBody, String> {
    const SHAPE: &str = "{\"reason\"?: string, \"delayOldSecretsExpirationHours\"?: number}";
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(RotateBody {
            reason: None,
            grace: None,
        });
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| format!("the body is not JSON ({e}); this request takes {SHAPE}"))?;
    let serde_json::Value::Object(object) = value else {
        return Err(format!(
            "the body is {}, not the object this request takes: {SHAPE}",
            json_kind(&value)
        ));
    };
    let grace = match object.get("delayOldSecretsExpirationHours") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::Number(n)) => {
            let hours = n
                .as_f64()
                .filter(|h| h.is_finite() && (0.0..=MAX_DELAY_HOURS).contains(h))
                .ok_or_else(|| {
                    format!("delayOldSecretsExpirationHours is {n}: it must be 0 to {MAX_DELAY_HOURS} hours")
                })?;
            Some(Duration::from_secs_f64(hours * 3600.0))
        }
        Some(other) => {
            return Err(format!(
                "delayOldSecretsExpirationHours must be a number of hours (0 to {MAX_DELAY_HOURS}), not {}",
                json_kind(other)
            ));
        }
    };
    let reason = match object.get("reason") {
        None | Some(serde_json::Value::Null) => None,
        // Control characters become spaces: the reason goes into log lines.
        Some(serde_json::Value::String(r)) => Some(
            r.trim()
                .chars()
                .take(MAX_REASON_CHARS)
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect::<String>(),
        )
        .filter(|r| !r.trim().is_empty()),
        Some(other) => {
            return Err(format!("reason must be a string, not {}", json_kind(other)));
        }
    };
    Ok(RotateBody { reason, grace })
}

fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// An error answer: `{"error": {"code", "message"}}`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    (status, Json(body)).into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"sync": false})),
    )
        .into_response()
}

/// A refusal: logged with why, answered with a message that never holds the token.
fn refuse(ids: &Ids, status: StatusCode, code: &str, message: &str) -> Response {
    warn!(
        installation_id = %ids.installation,
        resource_id = %ids.resource,
        status = status.as_u16(),
        "refused a rotate request: {message}"
    );
    error(status, code, message)
}

struct Ids {
    installation: String,
    resource: String,
}

pub(super) async fn handle(
    State(app): State<Arc<App>>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let ids = match path {
        Ok(Path((installation, resource))) if valid_id(&installation) && valid_id(&resource) => {
            Ids {
                installation,
                resource,
            }
        }
        _ => {
            warn!(
                "refused a rotate request: its path does not name an installation and a resource"
            );
            return error(
                StatusCode::NOT_FOUND,
                "not_found",
                "the path does not name an installation and a resource",
            );
        }
    };
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let caller = match app.verifier.verify(authorization, &ids.installation).await {
        Ok(caller) => caller,
        Err(e) => {
            let (status, code) = match e.status() {
                403 => (StatusCode::FORBIDDEN, "forbidden"),
                503 => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
                _ => (StatusCode::UNAUTHORIZED, "unauthorized"),
            };
            let mut response = refuse(&ids, status, code, &e.to_string());
            if status == StatusCode::SERVICE_UNAVAILABLE {
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from_static("60"));
            }
            return response;
        }
    };
    let body = match body {
        Ok(bytes) => bytes,
        Err(BytesRejection::FailedToBufferBody(e))
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE =>
        {
            let message = format!("the body is larger than {} bytes", super::BODY_LIMIT);
            return refuse(
                &ids,
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                &message,
            );
        }
        Err(e) => {
            return refuse(
                &ids,
                StatusCode::BAD_REQUEST,
                "bad_request",
                &format!("the body could not be read ({e})"),
            );
        }
    };
    let asked = match parse_body(&body) {
        Ok(asked) => asked,
        Err(why) => return refuse(&ids, StatusCode::BAD_REQUEST, "bad_request", &why),
    };
    let key = match idempotency_key(&headers) {
        Ok(key) => key,
        Err(why) => return refuse(&ids, StatusCode::BAD_REQUEST, "bad_request", &why),
    };
    let Some(key) = key else {
        return hand_over(&app, &ids, asked, None, &caller).await;
    };
    let mut ledger = app.ledger.hold().await;
    if let Some(earlier) = ledger.find(&ids.installation, &ids.resource, &key, Utc::now()) {
        info!(
            installation_id = %ids.installation,
            resource_id = %ids.resource,
            idempotency_key = %key,
            first_answered_at = %earlier.answered_at.to_rfc3339(),
            "a rotate request sent again with the same Idempotency-Key: answered as the first time, and nothing more is rotated"
        );
        return accepted();
    }
    let response = hand_over(&app, &ids, asked, Some(&key), &caller).await;
    if response.status() == StatusCode::ACCEPTED {
        remember(&mut ledger, &ids, key).await;
    }
    response
}

async fn remember(ledger: &mut Held<'_>, ids: &Ids, key: String) {
    ledger
        .remember(AnsweredRequest {
            installation_id: ids.installation.clone(),
            resource_id: ids.resource.clone(),
            key,
            answered_at: Utc::now(),
            status: StatusCode::ACCEPTED.as_u16(),
        })
        .await;
}

/// Gives the request to the daemon and answers what it decides.
async fn hand_over(
    app: &App,
    ids: &Ids,
    asked: RotateBody,
    key: Option<&str>,
    caller: &Caller,
) -> Response {
    let (answer, answered) = oneshot::channel();
    let request = RotateRequest {
        installation_id: ids.installation.clone(),
        resource_id: ids.resource.clone(),
        grace: asked.grace,
        reason: asked.reason.map(Arc::from),
        idempotency_key: key.map(str::to_owned),
        caller: caller.to_string(),
        answer,
    };
    let stopping = || {
        refuse(
            ids,
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the daemon is stopping; try again",
        )
    };
    if app.requests.send(request).await.is_err() {
        return stopping();
    }
    match answered.await {
        Ok(RotateAnswer::Accepted { .. }) => accepted(),
        Ok(RotateAnswer::NotGoverned) => refuse(
            ids,
            StatusCode::NOT_FOUND,
            "not_found",
            &format!(
                "no policy rotates resource {:?} of installation {:?}",
                ids.resource, ids.installation
            ),
        ),
        Err(_) => stopping(),
    }
}

/// The `Idempotency-Key` header, if there is one; `Err` when it is malformed or repeated.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, String> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err("the request has more than one Idempotency-Key header".to_owned());
    }
    match value.to_str() {
        Ok(key) if idempotency::valid_key(key) => Ok(Some(key.to_owned())),
        _ => Err(format!(
            "the Idempotency-Key header must be 1 to {} visible ASCII characters",
            idempotency::MAX_KEY_LEN
        )),
    }
}

fn valid_id(id: &str) -> bool {
    (1..=MAX_ID_LEN).contains(&id.len()) && !id.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hours(h: f64) -> Option<Duration> {
        Some(Duration::from_secs_f64(h * 3600.0))
    }

    #[test]
    fn bodies_that_parse() {
        let cases: [(&str, Option<&str>, Option<Duration>); 10] = [
            ("", None, None),
            ("  \n", None, None),
            ("{}", None, None),
            (
                r#"{"reason": "leaked in a log"}"#,
                Some("leaked in a log"),
                None,
            ),
            (r#"{"delayOldSecretsExpirationHours": 0}"#, None, hours(0.0)),
            (
                r#"{"delayOldSecretsExpirationHours": 720}"#,
                None,
                hours(720.0),
            ),
            (
                r#"{"delayOldSecretsExpirationHours": 1.5, "reason": " r "}"#,
                Some("r"),
                hours(1.5),
            ),
            (
                r#"{"delayOldSecretsExpirationHours": null, "reason": null}"#,
                None,
                None,
            ),
            // A key Vercel may add later is ignored.
            (r#"{"reason": "x", "somethingNew": true}"#, Some("x"), None),
            // The reason is logged: no line breaks in it.
            (r#"{"reason": "two\nlines"}"#, Some("two lines"), None),
        ];
        for (body, reason, grace) in cases {
            let parsed = parse_body(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            assert_eq!(parsed.reason.as_deref(), reason, "{body}");
            assert_eq!(parsed.grace, grace, "{body}");
        }
        assert_eq!(
            parse_body(br#"{"delayOldSecretsExpirationHours": 0.0003}"#)
                .unwrap()
                .grace,
            Some(Duration::from_secs_f64(1.08))
        );
    }

    #[test]
    fn bodies_that_are_refused_say_why() {
        let cases = [
            (r#"{"delayOldSecretsExpirationHours": -1}"#, "0 to 720"),
            (r#"{"delayOldSecretsExpirationHours": 720.5}"#, "0 to 720"),
            (r#"{"delayOldSecretsExpirationHours": 1e400}"#, "not JSON"),
            (
                r#"{"delayOldSecretsExpirationHours": "24"}"#,
                "not a string",
            ),
            (
                r#"{"delayOldSecretsExpirationHours": true}"#,
                "not a boolean",
            ),
            (r#"{"reason": 5}"#, "reason must be a string, not a number"),
            ("[]", "the body is an array"),
            ("null", "the body is null"),
            ("not json", "not JSON"),
        ];
        for (body, want) in cases {
            let err = parse_body(body.as_bytes()).expect_err(body);
            assert!(err.contains(want), "{body}: {err}");
        }
    }

    #[test]
    fn a_long_reason_is_cut_not_refused() {
        let body = serde_json::json!({"reason": "x".repeat(2000)}).to_string();
        let parsed = parse_body(body.as_bytes()).unwrap();
        assert_eq!(parsed.reason.map(|r| r.len()), Some(MAX_REASON_CHARS));
    }

    #[test]
    fn idempotency_keys_are_checked() {
        let mut headers = HeaderMap::new();
        assert_eq!(idempotency_key(&headers), Ok(None));
        headers.insert("idempotency-key", "abc-123".parse().unwrap());
        assert_eq!(idempotency_key(&headers), Ok(Some("abc-123".to_owned())));
        headers.append("idempotency-key", "other".parse().unwrap());
        assert!(idempotency_key(&headers).is_err());
        let mut spaced = HeaderMap::new();
        spaced.insert("idempotency-key", "a b".parse().unwrap());
        assert!(idempotency_key(&spaced).is_err());
    }
}
