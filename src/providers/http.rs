//! The `http` provider: the partner's own API makes, checks and retires credentials. It is
//! the command protocol over HTTPS: each call POSTs to `url` exactly the JSON request a
//! `command` program gets on stdin, and the answer's body is parsed exactly as a program's
//! stdout (both are `protocol.rs`). The status code plays the exit status's part:
//!
//! | answer | `create` | `verify`, `retire` |
//! |---|---|---|
//! | 2xx | the body must be `{"handle", "fields"}` | the body must be a JSON object |
//! | 501 Not Implemented | permanent error: every provider must create | [`Outcome::Unsupported`] (exit 3) |
//! | 408, 429, other 5xx | transient error | transient error |
//! | 3xx | permanent error: redirects are not followed | same |
//! | other 4xx | permanent error | permanent error |
//!
//! No answer (connection refused or reset, TLS failure, the `timeout` passing) is transient.
//! A 2xx body that breaks the protocol is `BadOutput` (permanent) and is never quoted.
//!
//! - **One client** per provider: timeout, User-Agent and TLS set once; **redirects are never
//!   followed**, so the token and the request's values cannot be carried to another address
//!   (reqwest would resend the body on a 307 or 308, and a bearer token on a same-host one).
//!   Proxies follow [`crate::net`]: never for an `http://` (loopback) `url`, where a proxy
//!   would see the token and the values in clear; `HTTPS_PROXY` (tunnelled, TLS end to end)
//!   for an `https://` one.
//! - **The token** is read from `token-file` (0600, as every secret file) or `token-credential`
//!   (a systemd credential) at each call, so a token the partner rotates on disk is picked up
//!   without a reload. It travels only in an `Authorization: Bearer` header marked sensitive.
//!   Neither key: no header.
//! - **Bodies** are read up to [`BODY_CAP`] (1 MiB): past it the reading stops and the
//!   connection is dropped. The bytes are held in a zeroizing buffer.
//! - **Errors** never hold the token, a value or a body. A non-2xx answer's body may lend its
//!   message (`{"error": "..."}` or `{"error": {"message": "..."}}`), scrubbed of the token
//!   and of every value the request carried, with control characters flattened, cut to
//!   [`MESSAGE_CAP`] characters.

use std::time::Instant;

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::protocol::{self, Channel, Request, SecretBuf};
use super::{Credential, Outcome, Provider, ProviderError, Target};
use crate::config::{HttpConfig, SecretSource};
use crate::token::TokenError;

/// The most body one answer may have. An answer is a handle and a few fields; an API sending
/// more is broken, and the daemon must not buffer an unbounded amount for it.
pub const BODY_CAP: usize = 1024 * 1024;

/// Longest server message kept in an error, in characters.
pub const MESSAGE_CAP: usize = 500;

const KIND: &str = "http";

/// POSTs the protocol's requests to the configured URL.
#[derive(Debug, Clone)]
pub struct HttpProvider {
    config: HttpConfig,
    /// Built once. Building fails only if TLS cannot be set up (no usable root
    /// certificates); then every call says so, as a permanent error.
    client: Result<reqwest::Client, String>,
}

/// What a call got back that the protocol gives a meaning to.
enum Answer {
    /// A 2xx answer's body, read in full.
    Body(SecretBuf),
    /// 501: the API does not implement the action.
    NotImplemented,
}

impl HttpProvider {
    pub fn new(config: HttpConfig) -> Self {
        let client = crate::net::client(&config.url, config.timeout)
            .map_err(|e| crate::error::describe_chain(&e));
        HttpProvider { config, client }
    }

    /// The URL for messages. The config refuses user info, a query and a fragment; they are
    /// dropped here anyway, as they are where a URL would carry a secret.
    fn endpoint(&self) -> String {
        let mut url = self.config.url.clone();
        // Only fails for URLs that cannot have user info (not http or https).
        let _ = url.set_username("");
        let _ = url.set_password(None);
        url.set_query(None);
        url.set_fragment(None);
        url.to_string()
    }

    fn error(&self, action: &'static str, transient: bool, reason: String) -> ProviderError {
        ProviderError::Backend {
            kind: KIND,
            action,
            reason,
            transient,
        }
    }

    /// The token from `token-file` or `token-credential`, read now, and its `Bearer` header
    /// value, marked sensitive; `None` without either. Errors name the file or credential,
    /// never the token.
    fn authorization(
        &self,
        action: &'static str,
    ) -> Result<Option<(SecretString, HeaderValue)>, ProviderError> {
        const CONTEXT: &str = "cannot use the bearer token: ";
        let Some(source) = &self.config.token else {
            return Ok(None);
        };
        let token = super::read_secret(KIND, action, source, CONTEXT)?;
        let value = bearer(&token, source)
            .map_err(|e| self.error(action, false, format!("{CONTEXT}{e}")))?;
        Ok(Some((token, value)))
    }

    /// Sends `request` and returns what the protocol makes of the answer, or an error that
    /// says whether a retry may help.
    async fn call(&self, request: &Request<'_>) -> Result<Answer, ProviderError> {
        let action = request.action();
        let client = self.client.as_ref().map_err(|detail| {
            self.error(
                action,
                false,
                format!("could not set up the HTTP client: {detail}"),
            )
        })?;
        let authorization = self.authorization(action)?;
        let encoded = request.encode().map_err(|e| {
            self.error(
                action,
                false,
                format!("could not encode the request ({:?})", e.classify()),
            )
        })?;
        // What the server may echo back and must not reach a message: the request's values
        // and the token.
        let mut scrub = request.secrets();
        scrub.extend(authorization.as_ref().map(|(token, _)| token));

        let mut builder = client
            .post(self.config.url.clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(ACCEPT, HeaderValue::from_static("application/json"));
        if let Some((_, value)) = &authorization {
            builder = builder.header(AUTHORIZATION, value.clone());
        }
        // reqwest takes ownership of the bytes and frees them without zeroizing; `encoded`
        // (the copy this process built) is zeroized when it drops.
        let builder = builder.body(encoded.as_bytes().to_vec());
        drop(encoded);

        let started = Instant::now();
        let mut response = match builder.send().await {
            Ok(response) => response,
            Err(e) => {
                tracing::debug!(
                    url = %self.endpoint(),
                    action,
                    timeout = e.is_timeout(),
                    elapsed = ?started.elapsed(),
                    "the http provider's API did not answer"
                );
                return Err(self.no_answer(action, &e, &scrub));
            }
        };
        let status = response.status();
        tracing::debug!(
            url = %self.endpoint(),
            action,
            status = status.as_u16(),
            elapsed = ?started.elapsed(),
            "the http provider's API answered"
        );

        if status.is_success() {
            return match read_capped(&mut response, BODY_CAP).await {
                Ok(body) => Ok(Answer::Body(body)),
                Err(BodyFailure::TooLarge) => Err(ProviderError::BadOutput {
                    program: self.endpoint(),
                    action,
                    reason: format!(
                        "more than {} MiB in the response body; the rest was not read",
                        BODY_CAP / (1024 * 1024)
                    ),
                }),
                Err(BodyFailure::Transport(e)) => Err(self.error(
                    action,
                    true,
                    format!(
                        "POST {} answered {} but its body could not be read: {}",
                        self.endpoint(),
                        status_line(status),
                        clean(&describe_reqwest_error(&e), &scrub)
                    ),
                )),
            };
        }
        if status == StatusCode::NOT_IMPLEMENTED {
            return Ok(Answer::NotImplemented);
        }
        if status.is_redirection() {
            // The Location header is not quoted: it comes from the server and the fix is the
            // config's `url` anyway.
            return Err(self.error(
                action,
                false,
                format!(
                    "POST {} answered {}: redirects are not followed, so the token and the \
                     request stay with `url`; set `url` to the address that answers",
                    self.endpoint(),
                    status_line(status)
                ),
            ));
        }
        // An error body is only ever mined for a message; one past the cap has none.
        let message = match read_capped(&mut response, BODY_CAP).await {
            Ok(body) => error_message(body.as_bytes(), &scrub),
            Err(_) => None,
        };
        drop(response);
        Err(self.error(
            action,
            is_transient(status),
            format!(
                "POST {} answered {}{}",
                self.endpoint(),
                status_line(status),
                message.map(|m| format!(": {m}")).unwrap_or_default()
            ),
        ))
    }

    /// The error for a call that got no answer: always transient (the server may come back,
    /// the network may heal), except a request reqwest could not even build.
    fn no_answer(
        &self,
        action: &'static str,
        error: &reqwest::Error,
        scrub: &[&SecretString],
    ) -> ProviderError {
        let url = self.endpoint();
        let detail = clean(&describe_reqwest_error(error), scrub);
        if error.is_timeout() {
            return self.error(
                action,
                true,
                format!(
                    "POST {url}: no answer within {} (the provider's `timeout`)",
                    crate::duration::format(self.config.timeout)
                ),
            );
        }
        if error.is_builder() {
            return self.error(action, false, format!("POST {url}: {detail}"));
        }
        let what = if error.is_connect() {
            "could not connect"
        } else {
            "no answer"
        };
        self.error(action, true, format!("POST {url}: {what}: {detail}"))
    }

    /// Runs an optional action (`verify`, `retire`): any JSON object answers it, 501 says the
    /// API does not implement it.
    async fn call_optional(&self, request: Request<'_>) -> Result<Outcome, ProviderError> {
        let action = request.action();
        match self.call(&request).await? {
            Answer::NotImplemented => {
                tracing::debug!(
                    url = %self.endpoint(),
                    action,
                    "the API does not implement this action (501 Not Implemented)"
                );
                Ok(Outcome::Unsupported)
            }
            Answer::Body(body) => protocol::text_of(body.as_bytes(), Channel::ResponseBody)
                .and_then(|text| protocol::parse_any_object(text, Channel::ResponseBody))
                .map(|()| Outcome::Done)
                .map_err(|reason| self.bad_answer(action, reason)),
        }
    }

    fn bad_answer(&self, action: &'static str, reason: String) -> ProviderError {
        ProviderError::BadOutput {
            program: self.endpoint(),
            action,
            reason,
        }
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn create(
        &self,
        target: &Target,
        rotation_id: &str,
        previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        let request = Request::Create {
            target,
            rotation_id,
            previous_handle,
        };
        let action = request.action();
        match self.call(&request).await? {
            Answer::NotImplemented => Err(self.error(
                action,
                false,
                format!(
                    "POST {} answered {}: the API does not implement `create`, which every \
                     provider must",
                    self.endpoint(),
                    status_line(StatusCode::NOT_IMPLEMENTED)
                ),
            )),
            // `body` (the answer's bytes) is zeroized when it drops, after the parse moved
            // the values into `SecretString`s.
            Answer::Body(body) => protocol::text_of(body.as_bytes(), Channel::ResponseBody)
                .and_then(|text| {
                    protocol::parse_create(
                        text,
                        Channel::ResponseBody,
                        self.config.fields.as_deref(),
                    )
                })
                .map_err(|reason| self.bad_answer(action, reason)),
        }
    }

    async fn verify(
        &self,
        target: &Target,
        rotation_id: &str,
        credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        self.call_optional(Request::Verify {
            target,
            rotation_id,
            credential,
        })
        .await
    }

    async fn retire(&self, target: &Target, handle: &str) -> Result<Outcome, ProviderError> {
        self.call_optional(Request::Retire { target, handle }).await
    }

    /// There is no read-only action in the protocol, so nothing is sent: this checks what can
    /// be checked without one, that the client can be built and the token file is readable.
    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        const ACTION: &str = "check";
        if let Err(detail) = &self.client {
            return Err(self.error(
                ACTION,
                false,
                format!("could not set up the HTTP client: {detail}"),
            ));
        }
        let token = match &self.config.token {
            None => "no token-file, so no Authorization header".to_owned(),
            Some(source) => {
                self.authorization(ACTION)?;
                format!("bearer token from {}: readable", source.describe())
            }
        };
        Ok(vec![format!(
            "POSTs to {} (not called by check); {token}",
            self.endpoint()
        )])
    }
}

/// `Bearer <token>` as a sensitive header value, so that `http` and reqwest print it as
/// `Sensitive` in any Debug. A token a header cannot carry is refused without showing it.
fn bearer(token: &SecretString, source: &SecretSource) -> Result<HeaderValue, TokenError> {
    let token = token.expose_secret();
    let refused = || TokenError::BadCharacters {
        source_name: source.describe(),
    };
    if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(refused());
    }
    let mut raw = Zeroizing::new(String::with_capacity("Bearer ".len() + token.len()));
    raw.push_str("Bearer ");
    raw.push_str(token);
    // The parse error is dropped: it says nothing useful, and the token must not follow.
    let mut value = HeaderValue::from_str(&raw).map_err(|_| refused())?;
    value.set_sensitive(true);
    Ok(value)
}

/// Why reading a body stopped early.
enum BodyFailure {
    TooLarge,
    Transport(reqwest::Error),
}

/// Reads the whole body into a zeroizing buffer, or stops as soon as more than `cap` bytes
/// came (the rest is never received: the connection is dropped with the response).
async fn read_capped(
    response: &mut reqwest::Response,
    cap: usize,
) -> Result<SecretBuf, BodyFailure> {
    let mut body = SecretBuf::new();
    if response.content_length().is_some_and(|n| n > cap as u64) {
        return Err(BodyFailure::TooLarge);
    }
    while let Some(chunk) = response.chunk().await.map_err(BodyFailure::Transport)? {
        if body.len() + chunk.len() > cap {
            return Err(BodyFailure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The message of an error body, `{"error": "..."}` or `{"error": {"message": "..."}}`, made
/// safe to show; `None` for any other body.
fn error_message(body: &[u8], scrub: &[&SecretString]) -> Option<String> {
    let mut json = serde_json::from_slice::<serde_json::Value>(body).ok()?;
    let message = match json.get("error") {
        Some(serde_json::Value::String(m)) => Some(m.as_str()),
        Some(serde_json::Value::Object(e)) => e.get("message").and_then(|m| m.as_str()),
        _ => None,
    }
    .map(|m| clean(m, scrub))
    .filter(|m| !m.trim().is_empty());
    // The parsed body may hold values in plain `String`s.
    protocol::zeroize_strings(&mut json);
    message
}

/// Makes text from the server safe for a message and a log line: every secret replaced by
/// `[REDACTED]`, control characters (newlines too, which could forge log lines) replaced by
/// spaces, cut to [`MESSAGE_CAP`] characters. Scrubbing comes first, so a cut cannot leave
/// half a value behind.
fn clean(text: &str, scrub: &[&SecretString]) -> String {
    let scrubbed = crate::secret::scrub(text, scrub.iter().copied());
    let mut out: String = scrubbed
        .trim()
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MESSAGE_CAP)
        .collect();
    if scrubbed.trim().chars().nth(MESSAGE_CAP).is_some() {
        out.push('…');
    }
    out
}

/// Transient: 408, 429 and 5xx (501 never gets here: it means "not implemented"), which may
/// pass unchanged. Permanent: every other status, which a retry would get again.
fn is_transient(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500..=599)
}

/// `503 Service Unavailable`, or just `599` for a status without a standard reason.
fn status_line(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// reqwest's error and its sources, without the URL (messages name it already). None of
/// reqwest's, hyper's or rustls' messages include a header or a body.
fn describe_reqwest_error(error: &reqwest::Error) -> String {
    let text = crate::error::describe_chain(error);
    match error.url() {
        // reqwest's own message ends with " for url (...)".
        Some(url) => text.replace(&format!(" for url ({url})"), ""),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[test]
    fn statuses_that_may_pass_are_transient() {
        for (code, transient) in [
            (400, false),
            (401, false),
            (403, false),
            (404, false),
            (409, false),
            (422, false),
            (408, true),
            (429, true),
            (500, true),
            (502, true),
            (503, true),
            (504, true),
            (599, true),
        ] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(is_transient(status), transient, "{code}");
        }
        assert_eq!(
            status_line(StatusCode::NOT_IMPLEMENTED),
            "501 Not Implemented"
        );
        assert_eq!(status_line(StatusCode::from_u16(599).unwrap()), "599");
    }

    #[test]
    fn error_messages_are_scrubbed_flattened_and_cut() {
        let secret = s("hunter2-canary");
        let scrub = [&secret];
        let table: [(&[u8], Option<&str>); 8] = [
            (
                br#"{"error":"bad password hunter2-canary\nFAKE LOG LINE"}"#,
                Some("bad password [REDACTED] FAKE LOG LINE"),
            ),
            (
                br#"{"error":{"code":"x","message":"no such key"}}"#,
                Some("no such key"),
            ),
            (br#"{"error":"  "}"#, None),
            (br#"{"error":7}"#, None),
            (br#"{"message":"elsewhere"}"#, None),
            (b"<html>502</html>", None),
            (b"", None),
            (b"\xff\xfe", None),
        ];
        for (body, want) in table {
            assert_eq!(error_message(body, &scrub).as_deref(), want, "{body:?}");
        }
        let long = format!(r#"{{"error":"{}"}}"#, "é".repeat(MESSAGE_CAP + 1));
        let cut = error_message(long.as_bytes(), &scrub).unwrap();
        assert_eq!(cut.chars().count(), MESSAGE_CAP + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn bearer_is_sensitive_and_refuses_what_a_header_cannot_carry() {
        let path = &SecretSource::File("/etc/acme.token".into());
        let value = bearer(&s("tok-canary-123"), path).unwrap();
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().unwrap(), "Bearer tok-canary-123");
        assert!(!format!("{value:?}").contains("canary"));
        for bad in ["tok canary", "tok-canary\n123", "tok\u{7f}canary"] {
            let err = bearer(&s(bad), path).unwrap_err().to_string();
            assert!(!err.contains("canary"), "{err}");
            assert!(err.contains("file /etc/acme.token"), "{err}");
        }
    }
}
