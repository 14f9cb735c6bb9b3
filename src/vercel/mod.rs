//! The Vercel API client: the calls the daemon makes, for many installations at once.
//!
//! - `GET /v1/installations/{id}/resources` ([`VercelClient::list_resources`]): every resource
//!   of an installation (a read; `check --online` proves tokens and ids with it).
//! - `PUT /v1/installations/{id}/resources/{resourceId}/secrets` with `partial: true`
//!   ([`VercelClient::update_resource_secrets`]): the push.
//! - `PATCH /v1/installations/{id}/resources/{resourceId}` with only `notification`
//!   ([`VercelClient::notify_resource`]): the redeploy banner.
//!
//! For the two writes, any `2xx` is success: Vercel documents `201` for the PUT, but a `200` or `204`
//! says just as clearly that the change was made, and reading it as a refusal would retire a
//! credential Vercel now holds. An answer that does not say (a `3xx`, `408`, `5xx`, or none)
//! may have been applied ([`VercelError::may_have_applied`]).
//!
//! One [`VercelClient`] (one connection pool, timeout and User-Agent set once) serves every
//! installation; each call takes the [`InstallationRef`] whose token it sends, so a token can
//! only travel on its own installation's path. It also keeps `vercel.max-concurrent-requests`:
//! each attempt holds one of that many permits while it is on the wire (and only then, so a
//! rotation's provider calls, state commits, backoff sleeps and waits on an endpoint's pace
//! never take a request's place).
//!
//! Each call retries by itself: no answer, 429, 500, 502, 503 and 504 are tried again with
//! exponential backoff and full jitter (or when the server says), until
//! `vercel.retry-deadline` from the first attempt; each retry is logged at warn. Requests to
//! each endpoint start at the pace a shared limiter learns from Vercel's rate-limit headers
//! where they describe a window, and from its refusals (AIMD) where they do not.
//! What is left after the deadline (or never worth retrying) comes back as a [`VercelError`]
//! that says, through [`crate::error::Classify`] and [`VercelError::retry_after`], whether and
//! when the rotation's slower retry (with backoff, see `rotation::machine`) may succeed.
//!
//! With [`VercelClient::with_metrics`], every attempt is counted by endpoint template and
//! status (`error` for no answer), and timed ([`crate::metrics`]).
//!
//! # Layout
//!
//! - `body.rs`: [`PushSecret`], [`Notification`] and the JSON bodies (values exposed only
//!   inside serialization).
//! - `error.rs`: [`VercelError`], its messages and its classification.
//! - `response.rs`: reading an answer: the capped body, the server's message made safe,
//!   `Retry-After` and the rate-limit window.
//! - `retry.rs`: which failures are retried, and the backoff.
//! - `limiter.rs`: the shared pace of each endpoint (the algorithm is in its doc).
//! - `list.rs`: [`ListedResource`] and the parsing of the listing.

mod body;
mod error;
mod limiter;
mod list;
mod response;
mod retry;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use reqwest::{Method, Request};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use crate::config::VercelSettings;
use crate::metrics::Metrics;

pub use body::{Notification, NotificationLevel, PushSecret};
pub use error::{Operation, VercelError};
pub use list::ListedResource;

use body::{NotifyBody, UpdateSecretsBody};
use limiter::{EndpointLimiter, Observation, Outcome, RateWindow};
use response::{CODE_CAP, ERROR_BODY_CAP, MESSAGE_CAP};
use retry::RetryPolicy;

/// The shortest time an attempt is given when little is left before the deadline: less could
/// not get an answer even from a healthy server.
const MIN_ATTEMPT_TIMEOUT: Duration = Duration::from_millis(100);

/// The client for every installation: one `reqwest::Client`, the API's base URL, the retry
/// policy and one rate limiter per endpoint. Clones share the connection pool and the
/// limiters.
#[derive(Debug, Clone)]
pub struct VercelClient {
    http: reqwest::Client,
    /// `vercel.api-url`; any path it has is kept as a prefix of every call's path.
    base: Url,
    /// `vercel.request-timeout`: the most one attempt may take.
    request_timeout: Duration,
    retry: RetryPolicy,
    /// The pace of the secrets PUT, shared by every task.
    secrets_limiter: Arc<EndpointLimiter>,
    /// The pace of the resource PATCH, shared by every task.
    resource_limiter: Arc<EndpointLimiter>,
    /// The pace of the resource listing GET, shared by every task.
    list_limiter: Arc<EndpointLimiter>,
    /// `vercel.max-concurrent-requests`: one permit per attempt on the wire, shared by every
    /// installation and both endpoints.
    in_flight: Arc<Semaphore>,
    /// Where each attempt is counted and timed; `None`: nowhere.
    metrics: Option<Arc<Metrics>>,
}

/// The installation a call is made for: whose token is sent, and what messages name.
#[derive(Debug, Clone, Copy)]
pub struct InstallationRef<'a> {
    /// The config table name (`acme`), for messages.
    pub name: &'a str,
    /// Vercel's `integrationConfigurationId` (`icfg_...`), a path segment of every call.
    pub id: &'a str,
    /// This installation's access token; sent to this installation's paths only.
    pub token: &'a SecretString,
}

impl VercelClient {
    /// Builds the one HTTP client ([`crate::net::client`]): timeout `settings.request_timeout`
    /// per attempt (connect, send and read, body included, so a hanging or trickling server
    /// cannot stall a rotation), User-Agent [`crate::net::USER_AGENT`], no redirects (the API
    /// does not redirect; a 3xx is reported, not followed with the token and the body), and no
    /// proxy but an `HTTPS_PROXY` tunnel for an `https://` API. Retries of one call end at
    /// `settings.retry_deadline`.
    pub fn new(settings: &VercelSettings) -> Result<VercelClient, VercelError> {
        let base = settings.api_url.clone();
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") {
            return Err(VercelError::BaseUrl {
                url: base.as_str().into(),
            });
        }
        let http = crate::net::client(&base, settings.request_timeout).map_err(|e| {
            VercelError::Client {
                detail: crate::error::describe_chain(&e).into(),
            }
        })?;
        Ok(VercelClient {
            http,
            base,
            request_timeout: settings.request_timeout,
            retry: RetryPolicy {
                base: retry::BACKOFF_BASE,
                cap: retry::BACKOFF_CAP,
                deadline: settings.retry_deadline,
            },
            secrets_limiter: Arc::default(),
            resource_limiter: Arc::default(),
            list_limiter: Arc::default(),
            in_flight: Arc::new(Semaphore::new(settings.max_concurrent_requests)),
            metrics: None,
        })
    }

    /// Counts and times every attempt in `metrics` (the daemon's).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> VercelClient {
        self.metrics = Some(metrics);
        self
    }

    /// One attempt at `call`'s endpoint answered `code` (`None`: no answer) after `elapsed`.
    fn observe(&self, call: &Call<'_>, code: Option<u16>, elapsed: Duration) {
        if let Some(metrics) = &self.metrics {
            metrics.observe_vercel_request(call.operation.endpoint(), code, elapsed);
        }
    }

    /// Pushes `secrets` to a resource: `PUT .../resources/{resourceId}/secrets` with
    /// `partial: true`, so the resource's other secrets stay as they are. Any `2xx` is success
    /// (any body is ignored); every other answer is a [`VercelError`]. Retried as the module
    /// `retry` says (the PUT is idempotent: the same body twice gives the same state) until
    /// `vercel.retry-deadline`; the error is the last attempt's.
    pub async fn update_resource_secrets(
        &self,
        installation: &InstallationRef<'_>,
        resource_id: &str,
        secrets: &[PushSecret],
    ) -> Result<(), VercelError> {
        let call = Call {
            operation: Operation::UpdateSecrets,
            installation,
            resource: resource_id,
        };
        let url = self.endpoint(&call, Some("secrets"))?;
        let body = serde_json::to_vec(&UpdateSecretsBody { secrets })
            .map_err(|_| call.error(ErrorKind::Encode))?;
        // Anything the server says back is scrubbed of every value sent, and of the token.
        let scrub: Vec<&SecretString> = secrets
            .iter()
            .flat_map(PushSecret::values)
            .chain([installation.token])
            .collect();
        self.send(
            &call,
            &self.secrets_limiter,
            Method::PUT,
            url,
            Some(body),
            &scrub,
        )
        .await
        .map(drop)
    }

    /// Shows a banner on the resource in the user's dashboard: `PATCH .../resources/{resourceId}`
    /// with `{"notification": {...}}` and nothing else. Any `2xx` is success. Retried like
    /// [`VercelClient::update_resource_secrets`] (setting the same banner twice is harmless).
    pub async fn notify_resource(
        &self,
        installation: &InstallationRef<'_>,
        resource_id: &str,
        notification: &Notification,
    ) -> Result<(), VercelError> {
        let call = Call {
            operation: Operation::Notify,
            installation,
            resource: resource_id,
        };
        let url = self.endpoint(&call, None)?;
        let body = serde_json::to_vec(&NotifyBody { notification })
            .map_err(|_| call.error(ErrorKind::Encode))?;
        self.send(
            &call,
            &self.resource_limiter,
            Method::PATCH,
            url,
            Some(body),
            &[installation.token],
        )
        .await
        .map(drop)
    }

    /// Every resource of an installation: `GET /v1/installations/{id}/resources`, one answer
    /// (Vercel does not page it). Retried like the writes (always safe: it changes nothing);
    /// a `2xx` whose body does not parse is [`VercelError::InvalidAnswer`].
    pub async fn list_resources(
        &self,
        installation: &InstallationRef<'_>,
    ) -> Result<Vec<ListedResource>, VercelError> {
        let call = Call {
            operation: Operation::ListResources,
            installation,
            resource: "",
        };
        let url = self.endpoint(&call, None)?;
        let body = self
            .send(
                &call,
                &self.list_limiter,
                Method::GET,
                url,
                None,
                &[installation.token],
            )
            .await?;
        list::parse(&body).map_err(|detail| call.invalid_answer(detail))
    }

    /// `{base}/v1/installations/{id}/resources/{resourceId}[/{tail}]` (the listing:
    /// `{base}/v1/installations/{id}/resources`), each id pushed as one percent-encoded path
    /// segment (so `/`, `?`, `#`, `%` in an id stay inside it).
    fn endpoint(&self, call: &Call<'_>, tail: Option<&str>) -> Result<Url, VercelError> {
        let listing = call.operation == Operation::ListResources;
        let ids: &[&str] = if listing {
            &[call.installation.id]
        } else {
            &[call.installation.id, call.resource]
        };
        // The URL library silently drops "." and ".." segments: such an id would send the call
        // to another path (".." as a resource id would PUT to .../resources/secrets).
        if ids.iter().any(|id| matches!(*id, "" | "." | "..")) {
            return Err(call.error(ErrorKind::InvalidId));
        }
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        {
            let mut segments = url.path_segments_mut().map_err(|()| VercelError::BaseUrl {
                url: self.base.as_str().into(),
            })?;
            segments.pop_if_empty().extend([
                "v1",
                "installations",
                call.installation.id,
                "resources",
            ]);
            if !listing {
                segments.push(call.resource);
            }
            if let Some(tail) = tail {
                segments.push(tail);
            }
        }
        Ok(url)
    }

    /// Sends one call: attempts and retries until success, an error not worth retrying, or
    /// the retry deadline. The request (headers and body) is built once; each attempt sends a
    /// cheap clone of it. `scrub` holds every secret that must not come back in an error.
    /// Returns the success's body for a call that reads one ([`Operation::ListResources`]),
    /// else nothing.
    async fn send(
        &self,
        call: &Call<'_>,
        limiter: &EndpointLimiter,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        scrub: &[&SecretString],
    ) -> Result<Vec<u8>, VercelError> {
        let authorization = call.authorization()?;
        let mut request = self
            .http
            .request(method, url)
            .header(AUTHORIZATION, authorization);
        if let Some(body) = body {
            request = request.header(CONTENT_TYPE, "application/json").body(body);
        }
        let request = request.build().map_err(|e| {
            call.error(ErrorKind::Transport {
                timeout: false,
                detail: describe_reqwest_error(e).into(),
            })
        })?;
        let deadline = Instant::now() + self.retry.deadline;
        let mut last: Option<VercelError> = None;
        // Whether an earlier attempt may have been applied: then so may the call, whatever
        // the last attempt says, and the error must say so.
        let mut uncertain = false;
        let finish = |error: VercelError, uncertain: bool| {
            if uncertain {
                error.after_uncertain_attempt()
            } else {
                error
            }
        };
        for attempt in 1u32.. {
            // The endpoint's pace first, then a request permit: a call waiting out a 429's
            // rest on one endpoint must not hold a permit the other endpoint could use. A
            // call whose turn came before a rest began, and that then waited for its permit,
            // queues again instead of sending into the rest.
            let (turn, permit) = loop {
                let turn = match limiter.acquire(deadline).await {
                    Ok(turn) => turn,
                    Err(ready) => {
                        let retry_after = ready.saturating_duration_since(Instant::now());
                        return Err(finish(
                            last.unwrap_or_else(|| {
                                call.error(ErrorKind::Throttled { retry_after })
                            }),
                            uncertain,
                        ));
                    }
                };
                // The semaphore is never closed; should acquiring fail anyway, the call
                // still goes.
                let permit = self.in_flight.acquire().await.ok();
                if !limiter.is_paused() {
                    break (turn, permit);
                }
            };
            // A body made of bytes always clones; the fallback only keeps this panic-free.
            let Some(mut this) = request.try_clone() else {
                return Err(last.unwrap_or_else(|| call.error(ErrorKind::Encode)));
            };
            let left = deadline.saturating_duration_since(Instant::now());
            *this.timeout_mut() = Some(self.request_timeout.min(left.max(MIN_ATTEMPT_TIMEOUT)));
            let (result, window) = self.attempt(call, attempt, this, scrub).await;
            drop(permit);
            let seen = |outcome| Observation {
                turn,
                window,
                outcome,
            };
            let error = match result {
                Ok(body) => {
                    limiter.observe(seen(Outcome::Success));
                    return Ok(body);
                }
                Err(e) => e,
            };
            if !retry::is_retryable(&error) {
                limiter.observe(seen(Outcome::Other));
                return Err(finish(error, uncertain));
            }
            // A read changes nothing, whatever its attempts got back.
            uncertain |= call.operation.changes() && error.may_have_applied();
            let status = error.status();
            let delay = error
                .retry_after()
                .unwrap_or_else(|| self.retry.backoff(attempt, rand::random::<f64>()));
            // A 429 rests the whole endpoint, not just this call, and slows its pace.
            limiter.observe(seen(if status == Some(429) {
                Outcome::Throttled(delay)
            } else {
                Outcome::Other
            }));
            let retry_at = Instant::now().checked_add(delay);
            if retry_at.is_none_or(|at| at >= deadline) {
                tracing::warn!(
                    installation = call.installation.name,
                    resource = call.resource,
                    attempt,
                    status = %retry::outcome_label(&error),
                    wait = %crate::duration::format_millis(delay),
                    "Vercel call failed; not retrying: the next attempt would start after vercel.retry-deadline"
                );
                return Err(finish(error, uncertain));
            }
            tracing::warn!(
                installation = call.installation.name,
                resource = call.resource,
                attempt,
                status = %retry::outcome_label(&error),
                delay = %crate::duration::format_millis(delay),
                "Vercel call failed; retrying"
            );
            tokio::time::sleep(delay).await;
            last = Some(error);
        }
        // `1u32..` ends only after u32::MAX attempts, which the deadline never allows.
        Err(last.unwrap_or_else(|| call.error(ErrorKind::Encode)))
    }

    /// One attempt: sends the request and turns the answer into `Ok` or a [`VercelError`],
    /// with the rate-limit window the answer described (if it did).
    async fn attempt(
        &self,
        call: &Call<'_>,
        attempt: u32,
        request: Request,
        scrub: &[&SecretString],
    ) -> (Result<Vec<u8>, VercelError>, Option<RateWindow>) {
        let started = Instant::now();
        let mut response = match self.http.execute(request).await {
            Ok(response) => response,
            Err(e) => {
                self.observe(call, None, started.elapsed());
                let timeout = e.is_timeout();
                tracing::debug!(
                    installation = call.installation.name,
                    resource = call.resource,
                    attempt,
                    timeout,
                    elapsed = ?started.elapsed(),
                    "Vercel call failed without an answer"
                );
                let error = call.error(ErrorKind::Transport {
                    timeout,
                    detail: response::sanitize(
                        &describe_reqwest_error(e),
                        scrub.iter().copied(),
                        MESSAGE_CAP,
                    )
                    .into(),
                });
                return (Err(error), None);
            }
        };
        let status = response.status();
        tracing::debug!(
            installation = call.installation.name,
            resource = call.resource,
            attempt,
            status = status.as_u16(),
            elapsed = ?started.elapsed(),
            "Vercel answered"
        );
        let now = SystemTime::now();
        let window = response::rate_window(response.headers(), now);
        if status.is_success() {
            if call.operation == Operation::ListResources {
                // Timed with its body: a listing is only had once it is read.
                let listing = self.read_listing(call, &mut response).await;
                let code = listing.as_ref().ok().map(|_| status.as_u16());
                self.observe(call, code, started.elapsed());
                return (listing, window);
            }
            self.observe(call, Some(status.as_u16()), started.elapsed());
            // The body is not read: a success body carries nothing the daemon needs, and a
            // server that sends 201 and then stalls must not turn a done push into a failure.
            return (Ok(Vec::new()), window);
        }
        let headers = response.headers().clone();
        // Capped, and bounded in time by the attempt's timeout (which covers the body): a
        // trickling body ends there, and the status alone says what happened.
        let raw = response::read_capped(&mut response, ERROR_BODY_CAP).await;
        drop(response);
        self.observe(call, Some(status.as_u16()), started.elapsed());
        let parsed = response::parse_error_body(&raw);
        let retry_after = response::retry_after(status.as_u16(), &headers, &parsed, now);
        let clean = |text: &str, cap| response::sanitize(text, scrub.iter().copied(), cap);
        let error = call.error(ErrorKind::Status {
            status: status.as_u16(),
            code: parsed.code.as_deref().map(|c| clean(c, CODE_CAP).into()),
            message: parsed
                .message
                .as_deref()
                .map(|m| clean(m, MESSAGE_CAP).into()),
            retry_after,
        });
        (Err(error), window)
    }
}

impl VercelClient {
    /// The whole body of a listing's `2xx`, up to [`list::LIST_BODY_CAP`]. A body cut off or
    /// timed out midway is a transport error (retried: the read is safe to repeat).
    async fn read_listing(
        &self,
        call: &Call<'_>,
        response: &mut reqwest::Response,
    ) -> Result<Vec<u8>, VercelError> {
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > list::LIST_BODY_CAP {
                        return Err(call.invalid_answer(format!(
                            "the body is larger than {} MiB",
                            list::LIST_BODY_CAP / (1024 * 1024)
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    return Err(call.error(ErrorKind::Transport {
                        timeout: e.is_timeout(),
                        detail: format!("the answer was cut off: {}", describe_reqwest_error(e))
                            .into(),
                    }));
                }
            }
        }
    }
}

/// One call in progress: what it is and for whom, to build its header and its errors.
struct Call<'a> {
    operation: Operation,
    installation: &'a InstallationRef<'a>,
    resource: &'a str,
}

/// The variant-specific part of a [`VercelError`] made by [`Call::error`].
enum ErrorKind {
    InvalidId,
    InvalidToken,
    Encode,
    Status {
        status: u16,
        code: Option<Box<str>>,
        message: Option<Box<str>>,
        retry_after: Option<Duration>,
    },
    Throttled {
        retry_after: Duration,
    },
    Transport {
        timeout: bool,
        detail: Box<str>,
    },
}

impl Call<'_> {
    /// `Bearer <token>` of this call's installation, marked sensitive so that `http` and
    /// reqwest print it as `Sensitive` in any Debug. The token is exposed only here.
    fn authorization(&self) -> Result<HeaderValue, VercelError> {
        let token = self.installation.token.expose_secret();
        let mut raw = Zeroizing::new(String::with_capacity("Bearer ".len() + token.len()));
        raw.push_str("Bearer ");
        raw.push_str(token);
        // The parse error is dropped: it says nothing useful, and the token must not follow.
        let mut value =
            HeaderValue::from_str(&raw).map_err(|_| self.error(ErrorKind::InvalidToken))?;
        value.set_sensitive(true);
        Ok(value)
    }

    fn invalid_answer(&self, detail: String) -> VercelError {
        VercelError::InvalidAnswer {
            operation: self.operation,
            installation: self.installation.name.into(),
            installation_id: self.installation.id.into(),
            detail: detail.into(),
        }
    }

    fn error(&self, kind: ErrorKind) -> VercelError {
        let operation = self.operation;
        let installation = self.installation.name.into();
        let installation_id = self.installation.id.into();
        let resource = self.resource.into();
        match kind {
            ErrorKind::InvalidId => VercelError::InvalidId {
                operation,
                installation,
                installation_id,
                resource,
            },
            ErrorKind::InvalidToken => VercelError::InvalidToken {
                operation,
                installation,
                installation_id,
                resource,
            },
            ErrorKind::Encode => VercelError::Encode {
                operation,
                installation,
                installation_id,
                resource,
            },
            ErrorKind::Status {
                status,
                code,
                message,
                retry_after,
            } => VercelError::Status {
                operation,
                installation,
                installation_id,
                resource,
                status,
                code,
                message,
                retry_after,
            },
            ErrorKind::Throttled { retry_after } => VercelError::Throttled {
                operation,
                installation,
                installation_id,
                resource,
                retry_after,
            },
            ErrorKind::Transport { timeout, detail } => VercelError::Transport {
                operation,
                installation,
                installation_id,
                resource,
                timeout,
                detail,
            },
        }
    }
}

/// reqwest's error and its sources, without the URL (messages already name the installation
/// and the resource). None of reqwest's, hyper's or rustls' messages include a header or a
/// body.
fn describe_reqwest_error(error: reqwest::Error) -> String {
    crate::error::describe_chain(&error.without_url())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> VercelClient {
        VercelClient::new(&VercelSettings {
            api_url: Url::parse(base).expect("url"),
            request_timeout: Duration::from_secs(1),
            retry_deadline: Duration::from_secs(5),
            max_concurrent_requests: 1,
        })
        .expect("client")
    }

    fn endpoint(base: &str, id: &str, resource: &str) -> Result<String, VercelError> {
        let token = SecretString::from("t".to_owned());
        let installation = InstallationRef {
            name: "acme",
            id,
            token: &token,
        };
        let call = Call {
            operation: Operation::UpdateSecrets,
            installation: &installation,
            resource,
        };
        client(base)
            .endpoint(&call, Some("secrets"))
            .map(|u| u.to_string())
    }

    #[test]
    fn ids_are_one_percent_encoded_segment_each() {
        let table = [
            (
                "https://api.vercel.com",
                "icfg_1",
                "store_1",
                "https://api.vercel.com/v1/installations/icfg_1/resources/store_1/secrets",
            ),
            (
                "https://api.vercel.com",
                "a/b c",
                "r?x#y%z",
                "https://api.vercel.com/v1/installations/a%2Fb%20c/resources/r%3Fx%23y%25z/secrets",
            ),
            (
                "https://api.vercel.com",
                "%2e%2e",
                "..a", // dot look-alikes stay literal
                "https://api.vercel.com/v1/installations/%252e%252e/resources/..a/secrets",
            ),
            (
                "https://api.vercel.com",
                "a\\b",
                "é",
                "https://api.vercel.com/v1/installations/a%5Cb/resources/%C3%A9/secrets",
            ),
            // A base path is kept, with or without its trailing slash; query and fragment not.
            (
                "http://127.0.0.1:9/prefix/",
                "i",
                "r",
                "http://127.0.0.1:9/prefix/v1/installations/i/resources/r/secrets",
            ),
            (
                "http://127.0.0.1:9/prefix?q=1#f",
                "i",
                "r",
                "http://127.0.0.1:9/prefix/v1/installations/i/resources/r/secrets",
            ),
        ];
        for (base, id, resource, want) in table {
            assert_eq!(endpoint(base, id, resource).expect("endpoint"), want);
        }
    }

    #[test]
    fn dot_and_empty_ids_are_refused() {
        for (id, resource) in [("", "r"), ("i", ""), (".", "r"), ("i", ".."), ("..", "r")] {
            let err = endpoint("https://api.vercel.com", id, resource).expect_err("refused");
            assert!(matches!(err, VercelError::InvalidId { .. }), "{err:?}");
        }
    }

    #[test]
    fn base_url_must_be_http() {
        for base in ["mailto:someone@example.com", "ftp://example.com/"] {
            let err = VercelClient::new(&VercelSettings {
                api_url: Url::parse(base).expect("url"),
                request_timeout: Duration::from_secs(1),
                retry_deadline: Duration::from_secs(5),
                max_concurrent_requests: 1,
            })
            .expect_err("refused");
            assert!(matches!(err, VercelError::BaseUrl { .. }), "{err:?}");
        }
    }

    #[test]
    fn authorization_is_sensitive_and_checked() {
        let token = SecretString::from("tok-canary-123".to_owned());
        let installation = InstallationRef {
            name: "acme",
            id: "icfg_1",
            token: &token,
        };
        let call = Call {
            operation: Operation::Notify,
            installation: &installation,
            resource: "r",
        };
        let value = call.authorization().expect("valid token");
        assert!(value.is_sensitive());
        assert_eq!(value.to_str().expect("ascii"), "Bearer tok-canary-123");
        assert!(!format!("{value:?} {installation:?}").contains("canary"));

        let bad = SecretString::from("tok-canary-123\n".to_owned());
        let installation = InstallationRef {
            token: &bad,
            ..installation
        };
        let call = Call {
            installation: &installation,
            ..call
        };
        let err = call.authorization().expect_err("newline refused");
        assert!(matches!(err, VercelError::InvalidToken { .. }));
        assert!(!format!("{err} {err:?}").contains("canary"), "{err}");
    }
}
