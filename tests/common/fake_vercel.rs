//! A fake Vercel API for tests and benchmarks: the marketplace calls the daemon makes,
//! with Vercel's authentication, its strict request schema and its error shape, plus
//! recording and scripted failures.
//!
//! - `PUT /v1/installations/{id}/resources/{resourceId}/secrets`: checks the bearer token of
//!   that installation, validates the body by hand against
//!   `../shared/vercel/openapi-update-resource-secrets.json` (`null` is a type error, unknown
//!   keys are refused), merges (`partial: true`) or replaces the resource's secrets, answers
//!   `201` with an empty body.
//! - `PATCH /v1/installations/{id}/resources/{resourceId}`: checks the token, validates
//!   `notification`, records it, answers `200 {"name": ...}`.
//! - `GET /v1/installations/{id}/resources`: checks the token, answers `200 {"resources": [...]}`
//!   with every resource of the installation, valid against
//!   `../shared/vercel/openapi-get-integration-resources.json` (a copy is in
//!   `tests/fixtures/vercel/`): `partnerId`, `internalId`, `name`, `productId`, `status`,
//!   `metadata` and a `billingPlanId` (set per resource with [`FakeVercel::set_listing`]).
//!   Scripts for it are keyed by (installation, `""`): [`FakeVercel::script_list`].
//!
//! Every request is recorded as received (raw path, headers, body) before anything else, so a
//! test can assert on exactly what the client sent, including requests the fake refused.
//! Scripted answers ([`Scripted`]) replace the normal handling one request at a time: a status
//! with headers and body, a delay, a dropped connection, a hang, a body cut off midway or a
//! body that trickles forever.
//!
//! Two modes act on every request, for resilience tests:
//! - [`FakeVercel::set_rate_limit`]: a token bucket per endpoint kind (secrets PUT, resource
//!   PATCH), checked first. A refused request gets Vercel's 429 (`Retry-After`, the
//!   `X-RateLimit-*` headers and `error.limit` in the body); an accepted one gets the
//!   `X-RateLimit-*` headers on whatever answer follows.
//! - [`FakeVercel::set_bare_token_bucket`]: the same bucket, but the headers do not describe
//!   a window: none on accepted requests, and on a 429 only `Retry-After` (whole seconds,
//!   rounded up), `X-RateLimit-Remaining: 0` and an `X-RateLimit-Reset` at which the bucket is
//!   full again, with no `X-RateLimit-Limit`.
//! - [`FakeVercel::set_faults`]: seeded random faults on requests with no script: a share
//!   answered 5xx, a share dropped (before handling, after handling so the change is made but
//!   the answer lost, or midway through a 5xx body), a share hung.
//!
//! Every answer is also recorded with its status ([`FakeVercel::answers`]).
//!
//! Self-contained (axum, tokio, tokio-util, serde_json and std only) so benchmarks can reuse it. It binds
//! `127.0.0.1:0` and hands back its URL: no fixed port, no waiting for readiness.

// Shared by every test module and by benchmarks; no one binary uses every helper.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::serve::{IncomingStream, Listener};
use serde_json::{Map, Value, json};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::io::ReaderStream;

/// Largest request body the fake reads; more is a 413. Far above anything the client sends.
const REQUEST_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Keys the update-resource PATCH schema allows at the top level (`additionalProperties:
/// false`). Only `notification` is validated in depth: it is the only one the client sends.
const PATCH_KEYS: [&str; 8] = [
    "ownership",
    "name",
    "status",
    "metadata",
    "billingPlan",
    "notification",
    "extras",
    "secrets",
];

/// A running fake. Stops when dropped (or on [`FakeVercel::shutdown`]).
pub struct FakeVercel {
    addr: SocketAddr,
    state: Arc<Shared>,
}

/// One secret as the fake stores it for a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSecret {
    pub value: String,
    pub prefix: Option<String>,
    /// Environment name (`production`, `preview`, `development`) to value; only those sent.
    pub environment_overrides: BTreeMap<String, String>,
}

/// A dashboard notification as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredNotification {
    pub level: String,
    pub title: String,
    pub message: Option<String>,
    pub href: Option<String>,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// `PUT`, `PATCH`, ...
    pub method: String,
    /// Path and query exactly as received, still percent-encoded (`/v1/installations/a%2Fb/...`).
    pub path: String,
    /// The raw `Authorization` header, if any (`Bearer ...`).
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub body: RecordedBody,
    /// When the request arrived (before any latency or scripted delay).
    pub at: Instant,
}

/// A request body: parsed when it was JSON, else the raw text (lossy UTF-8; empty if none).
#[derive(Debug, Clone, PartialEq)]
pub enum RecordedBody {
    Json(Value),
    Text(String),
}

impl RecordedBody {
    /// The body as JSON, if it parsed.
    pub fn json(&self) -> Option<&Value> {
        match self {
            RecordedBody::Json(v) => Some(v),
            RecordedBody::Text(_) => None,
        }
    }
}

/// What a scripted answer does once its delay has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScriptedAction {
    /// Answer with the scripted status, headers and body.
    Respond,
    /// Handle the request normally (a way to put a delay, or a success, into a sequence).
    Normal,
    /// Close the connection without answering.
    DropConnection,
    /// Never answer (until the fake shuts down): for client timeouts.
    Hang,
    /// Handle the request normally (the change is made), then cut the connection instead of
    /// answering: the answer is lost.
    HandleThenDrop,
    /// Answer the scripted status and headers, send the first half of the scripted body, then
    /// cut the connection.
    DropMidBody,
    /// Answer the scripted status and headers, then send the body one byte every 100 ms,
    /// forever (until the fake shuts down): for a client's timeout on reading the body.
    Trickle,
}

/// One canned answer, consumed by one request. Build with [`Scripted::status`],
/// [`Scripted::vercel_error`], [`Scripted::normal`], [`Scripted::drop_connection`] or
/// [`Scripted::hang`], then adjust with the builder methods.
#[derive(Debug, Clone)]
pub struct Scripted {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Waited before acting (on top of the fake's latency).
    pub delay: Duration,
    pub action: ScriptedAction,
}

impl Scripted {
    /// Answer `status` with an empty body.
    pub fn status(status: u16) -> Scripted {
        Scripted {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: Duration::ZERO,
            action: ScriptedAction::Respond,
        }
    }

    /// Answer `status` with Vercel's error shape, `{"error":{"code":...,"message":...}}`.
    pub fn vercel_error(status: u16, code: &str, message: &str) -> Scripted {
        Scripted::status(status).json(&json!({"error": {"code": code, "message": message}}))
    }

    /// Handle the request as usual.
    pub fn normal() -> Scripted {
        Scripted {
            action: ScriptedAction::Normal,
            ..Scripted::status(200)
        }
    }

    /// Close the connection without an answer.
    pub fn drop_connection() -> Scripted {
        Scripted {
            action: ScriptedAction::DropConnection,
            ..Scripted::status(200)
        }
    }

    /// Make the change, lose the answer.
    pub fn handle_then_drop() -> Scripted {
        Scripted {
            action: ScriptedAction::HandleThenDrop,
            ..Scripted::status(200)
        }
    }

    /// Never answer.
    pub fn hang() -> Scripted {
        Scripted {
            action: ScriptedAction::Hang,
            ..Scripted::status(200)
        }
    }

    /// Send the status and headers, half the body, then cut the connection.
    pub fn drop_mid_body(status: u16, body: impl Into<Vec<u8>>) -> Scripted {
        Scripted {
            action: ScriptedAction::DropMidBody,
            ..Scripted::status(status).body(body)
        }
    }

    /// Send the status and headers, then a body that never ends.
    pub fn trickle(status: u16) -> Scripted {
        Scripted {
            action: ScriptedAction::Trickle,
            ..Scripted::status(status)
        }
    }

    /// Adds a response header.
    pub fn header(mut self, name: &str, value: &str) -> Scripted {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the raw response body (no content type is added).
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Scripted {
        self.body = body.into();
        self
    }

    /// Sets a JSON response body and its content type.
    pub fn json(self, body: &Value) -> Scripted {
        self.header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
    }

    /// Waits this long before acting.
    pub fn delay(mut self, delay: Duration) -> Scripted {
        self.delay = delay;
        self
    }
}

/// State shared by the handle and the server.
struct Shared {
    inner: Mutex<Inner>,
    /// Flipped to `true` once, on shutdown: ends hanging answers and the server.
    shutdown: watch::Sender<bool>,
}

#[derive(Default)]
struct Inner {
    installations: BTreeMap<String, FakeInstallation>,
    requests: Vec<RecordedRequest>,
    scripts: HashMap<(String, String), VecDeque<Scripted>>,
    script_all: VecDeque<Scripted>,
    latency: Duration,
    answers: Vec<Answer>,
    /// Token buckets by endpoint kind, when rate limiting is on.
    rate_limit: Option<RateLimit>,
    faults: Option<(Faults, Rng)>,
}

/// One answer as the fake gave it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub method: String,
    pub path: String,
    /// When the request arrived.
    pub at: Instant,
    /// When its answer was ready (after any latency or scripted delay).
    pub done: Instant,
    /// The status sent, or `None` when the connection was cut or hung without an answer.
    pub status: Option<u16>,
}

/// Random faults on requests with no script, as percentages of all such requests.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub seed: u64,
    /// Answered 500, 502, 503 or 504 (a JSON error body), nothing changed.
    pub server_error_percent: u32,
    /// Connection cut: a third before handling, a third after handling (the change is made,
    /// the answer lost), a third midway through a 5xx body.
    pub drop_percent: u32,
    /// Never answered (until shutdown).
    pub hang_percent: u32,
}

/// A token bucket per endpoint kind: `per_second` tokens a second, as many at most.
struct RateLimit {
    per_second: f64,
    /// Only refusals carry rate-limit headers, and no limit ([`FakeVercel::set_bare_token_bucket`]).
    bare: bool,
    /// (tokens, when last refilled), by endpoint kind ("secrets", "resource").
    buckets: HashMap<&'static str, (f64, Instant)>,
}

/// splitmix64: small, seeded, good enough to pick faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct FakeInstallation {
    token: String,
    resources: BTreeMap<String, FakeResource>,
}

#[derive(Default)]
struct FakeResource {
    secrets: BTreeMap<String, StoredSecret>,
    notifications: Vec<StoredNotification>,
    listing: Listing,
}

/// What the listing says of one resource beyond its id. Defaults: name the resource id,
/// product `iap_fake_db`, status `ready`, no metadata.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// `None`: the resource id.
    pub name: Option<String>,
    /// `None`: `iap_fake_db`.
    pub product_id: Option<String>,
    /// `None`: `ready`. `Some("")`: no `status` key at all (it is optional).
    pub status: Option<String>,
    /// Values as Vercel sends them: strings, numbers, booleans, arrays of either.
    pub metadata: Map<String, Value>,
}

impl FakeVercel {
    /// Starts a fake on `127.0.0.1:0` with no installations, serving in a task of the current
    /// Tokio runtime.
    pub async fn start() -> FakeVercel {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("fake vercel: bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("fake vercel: local address");
        let (shutdown, mut stopped) = watch::channel(false);
        let state = Arc::new(Shared {
            inner: Mutex::new(Inner::default()),
            shutdown,
        });
        let app = Router::new()
            .fallback(handle)
            .with_state(state.clone())
            .into_make_service_with_connect_info::<Connection>();
        let server = axum::serve(KillableListener { inner: listener }, app).with_graceful_shutdown(
            async move {
                let _ = stopped.wait_for(|stop| *stop).await;
            },
        );
        tokio::spawn(async move {
            let _ = server.await;
        });
        FakeVercel { addr, state }
    }

    /// The base URL to give the client (`http://127.0.0.1:PORT`, no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The socket address the fake listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Adds (or replaces the token of) an installation. Requests for it must carry
    /// `Authorization: Bearer <token>`.
    pub fn add_installation(&self, id: &str, token: &str) {
        let mut inner = self.lock();
        match inner.installations.get_mut(id) {
            Some(installation) => installation.token = token.to_owned(),
            None => {
                inner.installations.insert(
                    id.to_owned(),
                    FakeInstallation {
                        token: token.to_owned(),
                        resources: BTreeMap::new(),
                    },
                );
            }
        }
    }

    /// Adds a resource, with no secrets, to an installation added before.
    pub fn add_resource(&self, installation_id: &str, resource_id: &str) {
        let mut inner = self.lock();
        let installation = inner
            .installations
            .get_mut(installation_id)
            .unwrap_or_else(|| panic!("fake vercel: add_installation({installation_id:?}) first"));
        installation
            .resources
            .entry(resource_id.to_owned())
            .or_default();
    }

    /// Sets what the listing says of a resource added before.
    pub fn set_listing(&self, installation_id: &str, resource_id: &str, listing: Listing) {
        self.with_resource(installation_id, resource_id, |r| r.listing = listing)
            .unwrap_or_else(|| panic!("fake vercel: add_resource({resource_id:?}) first"));
    }

    /// Queues canned answers for the listing of one installation (like [`FakeVercel::script`]).
    pub fn script_list(&self, installation_id: &str, answers: Vec<Scripted>) {
        self.script(installation_id, "", answers);
    }

    /// Removes a resource (later calls for it get 404), as if the user deleted it.
    pub fn remove_resource(&self, installation_id: &str, resource_id: &str) {
        if let Some(installation) = self.lock().installations.get_mut(installation_id) {
            installation.resources.remove(resource_id);
        }
    }

    /// Delay added to every request before it is handled (benchmarks: a realistic round trip).
    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    /// Queues canned answers for calls on one (installation, resource), consumed one per call
    /// before normal handling and before the [`FakeVercel::script_all`] queue.
    pub fn script(&self, installation_id: &str, resource_id: &str, answers: Vec<Scripted>) {
        self.lock()
            .scripts
            .entry((installation_id.to_owned(), resource_id.to_owned()))
            .or_default()
            .extend(answers);
    }

    /// Queues canned answers consumed by any request (after that request's own
    /// (installation, resource) queue is empty), one per request.
    pub fn script_all(&self, answers: Vec<Scripted>) {
        self.lock().script_all.extend(answers);
    }

    /// Turns on a token bucket of `per_second` requests a second (and as many at once) for
    /// each endpoint kind, starting full.
    pub fn set_rate_limit(&self, per_second: u32) {
        self.lock().rate_limit = Some(RateLimit {
            per_second: f64::from(per_second),
            bare: false,
            buckets: HashMap::new(),
        });
    }

    /// Like [`FakeVercel::set_rate_limit`], but with headers that describe no window: none on
    /// an accepted request; on a 429, `Retry-After` rounded up to whole seconds,
    /// `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` when the bucket is full again, and
    /// no `X-RateLimit-Limit`.
    pub fn set_bare_token_bucket(&self, per_second: u32) {
        self.lock().rate_limit = Some(RateLimit {
            per_second: f64::from(per_second),
            bare: true,
            buckets: HashMap::new(),
        });
    }

    /// Turns on seeded random faults for requests with no script.
    pub fn set_faults(&self, faults: Faults) {
        self.lock().faults = Some((faults, Rng(faults.seed)));
    }

    /// Every answer given so far, in the order the answers were decided.
    pub fn answers(&self) -> Vec<Answer> {
        self.lock().answers.clone()
    }

    /// The most requests that were being handled at one moment.
    pub fn max_in_flight(&self) -> usize {
        let answers = self.answers();
        answers
            .iter()
            .map(|a| {
                answers
                    .iter()
                    .filter(|b| b.at <= a.at && a.at < b.done)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    /// Forgets every queued script (per resource and global).
    pub fn clear_scripts(&self) {
        let mut inner = self.lock();
        inner.scripts.clear();
        inner.script_all.clear();
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// A resource's secrets as stored now, by name (empty for an unknown resource).
    pub fn secrets(
        &self,
        installation_id: &str,
        resource_id: &str,
    ) -> BTreeMap<String, StoredSecret> {
        self.with_resource(installation_id, resource_id, |r| r.secrets.clone())
            .unwrap_or_default()
    }

    /// Sets a resource's secrets directly, as if pushed earlier by someone else.
    pub fn set_secrets(
        &self,
        installation_id: &str,
        resource_id: &str,
        secrets: BTreeMap<String, StoredSecret>,
    ) {
        self.with_resource(installation_id, resource_id, |r| r.secrets = secrets)
            .unwrap_or_else(|| panic!("fake vercel: add_resource({resource_id:?}) first"));
    }

    /// The notifications a resource received, oldest first.
    pub fn notifications(
        &self,
        installation_id: &str,
        resource_id: &str,
    ) -> Vec<StoredNotification> {
        self.with_resource(installation_id, resource_id, |r| r.notifications.clone())
            .unwrap_or_default()
    }

    /// Stops accepting, ends hanging answers and lets open connections close. Also done on
    /// drop; calling it twice is harmless.
    pub fn shutdown(&self) {
        self.state.shutdown.send_replace(true);
    }

    fn with_resource<T>(
        &self,
        installation_id: &str,
        resource_id: &str,
        f: impl FnOnce(&mut FakeResource) -> T,
    ) -> Option<T> {
        let mut inner = self.lock();
        let resource = inner
            .installations
            .get_mut(installation_id)?
            .resources
            .get_mut(resource_id)?;
        Some(f(resource))
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        lock(&self.state)
    }
}

impl Drop for FakeVercel {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A panicking test must not poison the fake for the tests' own assertions after it.
fn lock(state: &Shared) -> MutexGuard<'_, Inner> {
    state.inner.lock().unwrap_or_else(|p| p.into_inner())
}

// ---------------------------------------------------------------------------------------------
// Requests

/// Which call a path names.
enum Route {
    Secrets {
        installation: String,
        resource: String,
    },
    Resource {
        installation: String,
        resource: String,
    },
    List {
        installation: String,
    },
}

impl Route {
    /// Splits the raw path; ids are percent-decoded. `None`: not a marketplace path.
    fn parse(raw_path: &str) -> Option<Route> {
        let parts: Vec<&str> = raw_path.split('/').collect();
        match parts.as_slice() {
            ["", "v1", "installations", i, "resources"] => Some(Route::List {
                installation: percent_decode(i)?,
            }),
            ["", "v1", "installations", i, "resources", r] => Some(Route::Resource {
                installation: percent_decode(i)?,
                resource: percent_decode(r)?,
            }),
            ["", "v1", "installations", i, "resources", r, "secrets"] => Some(Route::Secrets {
                installation: percent_decode(i)?,
                resource: percent_decode(r)?,
            }),
            _ => None,
        }
    }

    /// The endpoint kind, for rate limiting: Vercel limits each endpoint separately.
    fn kind(&self) -> &'static str {
        match self {
            Route::Secrets { .. } => "secrets",
            Route::Resource { .. } => "resource",
            Route::List { .. } => "list",
        }
    }

    fn ids(&self) -> (&str, &str) {
        match self {
            Route::Secrets {
                installation,
                resource,
            }
            | Route::Resource {
                installation,
                resource,
            } => (installation, resource),
            Route::List { installation } => (installation, ""),
        }
    }
}

/// `%XX` decoding of one path segment; `None` for a bad escape or invalid UTF-8. Written here
/// to keep the fake free of extra dependencies.
fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

async fn handle(
    State(state): State<Arc<Shared>>,
    ConnectInfo(connection): ConnectInfo<Connection>,
    request: Request,
) -> Response {
    let at = Instant::now();
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (response, answered) = respond(&state, connection, request, at).await;
    lock(&state).answers.push(Answer {
        method,
        path,
        at,
        done: Instant::now(),
        status: answered.then(|| response.status().as_u16()),
    });
    response
}

/// The answer to one request, and whether it is really sent (false: the connection is cut).
async fn respond(
    state: &Arc<Shared>,
    connection: Connection,
    request: Request,
    at: Instant,
) -> (Response, bool) {
    let (parts, body) = request.into_parts();
    let header = |name: HeaderName| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let body = match to_bytes(body, REQUEST_BODY_LIMIT).await {
        Ok(body) => body,
        Err(_) => {
            let response = vercel_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large",
            );
            return (response, true);
        }
    };
    let recorded_body = match serde_json::from_slice::<Value>(&body) {
        Ok(json) => RecordedBody::Json(json),
        Err(_) => RecordedBody::Text(String::from_utf8_lossy(&body).into_owned()),
    };
    let route = Route::parse(parts.uri.path());
    let (latency, scripted, rate) = {
        let mut inner = lock(state);
        inner.requests.push(RecordedRequest {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
            authorization: header(AUTHORIZATION),
            content_type: header(CONTENT_TYPE),
            user_agent: header(USER_AGENT),
            body: recorded_body.clone(),
            at,
        });
        let rate = match (&mut inner.rate_limit, &route) {
            (Some(limit), Some(route)) => Some(limit.take(route.kind(), Instant::now())),
            _ => None,
        };
        if let Some(rate) = rate.filter(|r| !r.accepted) {
            return (rate.refusal(), true);
        }
        let own = route.as_ref().and_then(|route| {
            let (i, r) = route.ids();
            inner
                .scripts
                .get_mut(&(i.to_owned(), r.to_owned()))
                .and_then(VecDeque::pop_front)
        });
        let scripted = own.or_else(|| inner.script_all.pop_front()).or_else(|| {
            inner
                .faults
                .as_mut()
                .and_then(|(f, rng)| pick_fault(f, rng))
        });
        (inner.latency, scripted, rate)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let with_rate = |mut response: Response| {
        if let Some(rate) = rate {
            rate.add_headers(response.headers_mut());
        }
        response
    };
    let mut then_drop = false;
    if let Some(scripted) = scripted {
        if !scripted.delay.is_zero() {
            tokio::time::sleep(scripted.delay).await;
        }
        match scripted.action {
            ScriptedAction::Respond => return (with_rate(scripted_response(&scripted)), true),
            ScriptedAction::Normal => {}
            ScriptedAction::HandleThenDrop => then_drop = true,
            ScriptedAction::DropConnection => {
                connection.kill();
                return (StatusCode::INTERNAL_SERVER_ERROR.into_response(), false);
            }
            ScriptedAction::Hang => {
                let mut stopped = state.shutdown.subscribe();
                let _ = stopped.wait_for(|stop| *stop).await;
                connection.kill();
                return (StatusCode::SERVICE_UNAVAILABLE.into_response(), false);
            }
            ScriptedAction::DropMidBody => {
                let half = scripted.body[..scripted.body.len() / 2].to_vec();
                let reader = CutBody {
                    first: Some(half),
                    connection,
                };
                let mut response = scripted_response(&scripted);
                *response.body_mut() = Body::from_stream(ReaderStream::new(reader));
                return (with_rate(response), false);
            }
            ScriptedAction::Trickle => {
                let reader = TrickleBody {
                    tick: Box::pin(tokio::time::sleep(Duration::ZERO)),
                    stopped: state.shutdown.subscribe(),
                };
                let mut response = scripted_response(&scripted);
                *response.body_mut() = Body::from_stream(ReaderStream::new(reader));
                return (with_rate(response), true);
            }
        }
    }
    let Some(route) = route else {
        let response = vercel_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "The requested path was not found",
        );
        return (with_rate(response), true);
    };
    let response = handle_route(
        state,
        &parts.method,
        &parts.headers,
        route,
        &body,
        recorded_body,
    );
    if then_drop {
        connection.kill();
        return (response, false);
    }
    (with_rate(response), true)
}

/// The fault for one request with no script, if any.
fn pick_fault(faults: &Faults, rng: &mut Rng) -> Option<Scripted> {
    let roll = rng.below(100) as u32;
    let error_until = faults.server_error_percent;
    let drop_until = error_until + faults.drop_percent;
    let hang_until = drop_until + faults.hang_percent;
    let status = [500, 502, 503, 504][rng.below(4) as usize];
    let body = json!({"error": {"code": "internal_server_error",
        "message": "An unexpected error occurred (fault injected by the fake)"}})
    .to_string();
    if roll < error_until {
        Some(Scripted::vercel_error(
            status,
            "internal_server_error",
            "fault injected",
        ))
    } else if roll < drop_until {
        Some(match rng.below(3) {
            0 => Scripted::drop_connection(),
            1 => Scripted::handle_then_drop(),
            _ => Scripted::drop_mid_body(status, body),
        })
    } else if roll < hang_until {
        Some(Scripted::hang())
    } else {
        None
    }
}

/// What the token bucket decided for one request.
#[derive(Debug, Clone, Copy)]
struct RateDecision {
    accepted: bool,
    /// Headers on refusals only, and no limit.
    bare: bool,
    limit: u64,
    remaining: u64,
    /// When the bucket is full again, in ms since the Unix epoch.
    reset_ms: u64,
    /// For a refusal: whole seconds until the next token (at least 1).
    retry_after_secs: u64,
}

impl RateLimit {
    fn take(&mut self, kind: &'static str, now: Instant) -> RateDecision {
        let rate = self.per_second;
        let (tokens, last) = self.buckets.entry(kind).or_insert((rate, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
        *last = now;
        let accepted = *tokens >= 1.0;
        if accepted {
            *tokens -= 1.0;
        }
        let epoch_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let full_in_ms = ((rate - *tokens) / rate * 1000.0).ceil() as u64;
        let next_token_secs = ((1.0 - *tokens).max(0.0) / rate).ceil() as u64;
        RateDecision {
            accepted,
            bare: self.bare,
            limit: rate as u64,
            remaining: tokens.floor() as u64,
            reset_ms: epoch_ms + full_in_ms,
            retry_after_secs: next_token_secs.max(1),
        }
    }
}

impl RateDecision {
    /// `X-RateLimit-Reset` is in whole Unix seconds (rounded up), as Vercel sends it.
    fn reset_secs(&self) -> u64 {
        self.reset_ms.div_ceil(1000)
    }

    /// The `X-RateLimit-*` headers of an accepted request's answer (none for a bare bucket).
    fn add_headers(&self, headers: &mut HeaderMap) {
        if self.bare {
            return;
        }
        self.add_window(headers);
    }

    fn add_window(&self, headers: &mut HeaderMap) {
        for (name, value) in [
            ("x-ratelimit-limit", self.limit),
            ("x-ratelimit-remaining", self.remaining),
            ("x-ratelimit-reset", self.reset_secs()),
        ] {
            headers.insert(name, HeaderValue::from(value));
        }
    }

    /// Vercel's 429: headers, `Retry-After` and the window in the body. A bare bucket's has
    /// `Retry-After`, `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` (when it is full
    /// again), and no limit anywhere.
    fn refusal(&self) -> Response {
        let mut limit = json!({"remaining": self.remaining, "reset": self.reset_secs(),
                               "resetMs": self.reset_ms});
        if !self.bare {
            limit["total"] = json!(self.limit);
        }
        let mut response = vercel_json(
            StatusCode::TOO_MANY_REQUESTS,
            &json!({"error": {"code": "rate_limited",
                "message": "Rate limit exceeded (fake token bucket)", "limit": limit}}),
        );
        if self.bare {
            let headers = response.headers_mut();
            headers.insert("x-ratelimit-remaining", HeaderValue::from(self.remaining));
            headers.insert("x-ratelimit-reset", HeaderValue::from(self.reset_secs()));
        } else {
            self.add_window(response.headers_mut());
        }
        response
            .headers_mut()
            .insert("retry-after", HeaderValue::from(self.retry_after_secs));
        response
    }
}

/// A body that yields its first part, then fails and cuts the connection.
struct CutBody {
    first: Option<Vec<u8>>,
    connection: Connection,
}

impl AsyncRead for CutBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.first.take() {
            Some(first) if !first.is_empty() => {
                let n = first.len().min(buf.remaining());
                buf.put_slice(&first[..n]);
                Poll::Ready(Ok(()))
            }
            _ => {
                self.connection.kill();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::ConnectionAborted,
                    "fake vercel: cut mid-body",
                )))
            }
        }
    }
}

/// A body that sends one byte every 100 ms until the fake shuts down.
struct TrickleBody {
    tick: Pin<Box<tokio::time::Sleep>>,
    stopped: watch::Receiver<bool>,
}

impl AsyncRead for TrickleBody {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if *self.stopped.borrow() {
            return Poll::Ready(Err(io::Error::other("fake vercel: shut down")));
        }
        match self.tick.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                let next = tokio::time::Instant::now() + Duration::from_millis(100);
                self.tick.as_mut().reset(next);
                buf.put_slice(b" ");
                Poll::Ready(Ok(()))
            }
        }
    }
}

/// The normal handling: method, installation, token, resource, content type, schema, effect.
fn handle_route(
    state: &Shared,
    method: &Method,
    headers: &HeaderMap,
    route: Route,
    raw_body: &[u8],
    body: RecordedBody,
) -> Response {
    let expected = match route {
        Route::Secrets { .. } => Method::PUT,
        Route::Resource { .. } => Method::PATCH,
        Route::List { .. } => Method::GET,
    };
    if method != expected {
        return vercel_error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("This endpoint only accepts {expected}"),
        );
    }
    let (installation_id, resource_id) = route.ids();
    let mut inner = lock(state);
    let Some(installation) = inner.installations.get_mut(installation_id) else {
        return vercel_error(StatusCode::NOT_FOUND, "not_found", "Installation not found");
    };
    // Vercel's two 401 bodies: no token at all, and a token it does not accept.
    match headers.get(AUTHORIZATION).map(HeaderValue::as_bytes) {
        None => {
            return vercel_json(
                StatusCode::UNAUTHORIZED,
                &json!({"error": {"code": "forbidden",
                    "message": "The request is missing an authentication token",
                    "missingToken": true}}),
            );
        }
        Some(value) if value != format!("Bearer {}", installation.token).as_bytes() => {
            return vercel_json(
                StatusCode::UNAUTHORIZED,
                &json!({"error": {"code": "forbidden", "message": "Not authorized",
                    "invalidToken": true}}),
            );
        }
        Some(_) => {}
    }
    if let Route::List { .. } = route {
        let resources: Vec<Value> = installation
            .resources
            .iter()
            .map(|(id, r)| listed_resource(id, &r.listing))
            .collect();
        return vercel_json(StatusCode::OK, &json!({ "resources": resources }));
    }
    let Some(resource) = installation.resources.get_mut(resource_id) else {
        return vercel_error(StatusCode::NOT_FOUND, "not_found", "Resource not found");
    };
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return bad_request("Invalid request: the body must be sent as application/json");
    }
    let RecordedBody::Json(json) = body else {
        return bad_request(&format!(
            "Invalid request: the body is not valid JSON ({} bytes)",
            raw_body.len()
        ));
    };
    match route {
        Route::Secrets { .. } => match validate_secrets_body(&json) {
            Ok((secrets, partial)) => {
                if !partial {
                    resource.secrets.clear();
                }
                resource.secrets.extend(secrets);
                StatusCode::CREATED.into_response()
            }
            Err(message) => bad_request(&message),
        },
        Route::Resource { .. } => match validate_patch_body(&json) {
            Ok(notification) => {
                resource.notifications.extend(notification);
                vercel_json(StatusCode::OK, &json!({"name": resource_id}))
            }
            Err(message) => bad_request(&message),
        },
        // Answered above, before the resource and the body are looked at.
        Route::List { .. } => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// One item of the listing, as Vercel's schema has it.
fn listed_resource(id: &str, listing: &Listing) -> Value {
    let mut item = json!({
        "partnerId": id,
        "internalId": format!("res_{}", id.replace(|c: char| !c.is_ascii_alphanumeric(), "_")),
        "name": listing.name.as_deref().unwrap_or(id),
        "productId": listing.product_id.as_deref().unwrap_or("iap_fake_db"),
        "billingPlanId": "bp_fake_free",
        "metadata": listing.metadata,
    });
    match listing.status.as_deref() {
        Some("") => {}
        status => item["status"] = json!(status.unwrap_or("ready")),
    }
    item
}

// ---------------------------------------------------------------------------------------------
// Schema checks, by hand, on the JSON value. Messages name the offending key the way Vercel's
// do: `Invalid request: `secrets[0].prefix` should be string.`

/// The name JSON Schema uses for a value's type.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn expect_object<'a>(value: &'a Value, at: &str) -> Result<&'a Map<String, Value>, String> {
    value.as_object().ok_or_else(|| {
        format!(
            "Invalid request: `{at}` should be object, got {}.",
            type_name(value)
        )
    })
}

fn expect_string<'a>(value: &'a Value, at: &str) -> Result<&'a str, String> {
    value.as_str().ok_or_else(|| {
        format!(
            "Invalid request: `{at}` should be string, got {}.",
            type_name(value)
        )
    })
}

fn refuse_unknown_keys(
    object: &Map<String, Value>,
    allowed: &[&str],
    at: &str,
) -> Result<(), String> {
    match object.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(key) => {
            let path = if at.is_empty() {
                key.clone()
            } else {
                format!("{at}.{key}")
            };
            Err(format!(
                "Invalid request: `{path}` is not an allowed property."
            ))
        }
        None => Ok(()),
    }
}

fn require<'a>(object: &'a Map<String, Value>, key: &str, at: &str) -> Result<&'a Value, String> {
    object.get(key).ok_or_else(|| {
        let path = if at.is_empty() {
            key.to_owned()
        } else {
            format!("{at}.{key}")
        };
        format!("Invalid request: missing required property `{path}`.")
    })
}

/// The update-resource-secrets body: `{"secrets": [...], "partial"?: bool}` and nothing else.
///
/// One place is stricter than the spec: the spec leaves `environmentOverrides` open to other
/// keys, the fake accepts only `production`, `preview` and `development`, so a client typo
/// (which Vercel would silently ignore) fails a test instead.
fn validate_secrets_body(body: &Value) -> Result<(Vec<(String, StoredSecret)>, bool), String> {
    let top = expect_object(body, "body")?;
    refuse_unknown_keys(top, &["secrets", "partial"], "")?;
    let partial = match top.get("partial") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => {
            return Err(format!(
                "Invalid request: `partial` should be boolean, got {}.",
                type_name(other)
            ));
        }
    };
    let secrets = require(top, "secrets", "")?;
    let Some(items) = secrets.as_array() else {
        return Err(format!(
            "Invalid request: `secrets` should be array, got {}.",
            type_name(secrets)
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let at = format!("secrets[{i}]");
        let item = expect_object(item, &at)?;
        refuse_unknown_keys(
            item,
            &["name", "value", "prefix", "environmentOverrides"],
            &at,
        )?;
        let name = expect_string(require(item, "name", &at)?, &format!("{at}.name"))?;
        let value = expect_string(require(item, "value", &at)?, &format!("{at}.value"))?;
        let prefix = item
            .get("prefix")
            .map(|p| expect_string(p, &format!("{at}.prefix")))
            .transpose()?;
        let mut environment_overrides = BTreeMap::new();
        if let Some(overrides) = item.get("environmentOverrides") {
            let at = format!("{at}.environmentOverrides");
            let overrides = expect_object(overrides, &at)?;
            refuse_unknown_keys(overrides, &["production", "preview", "development"], &at)?;
            for (environment, v) in overrides {
                let v = expect_string(v, &format!("{at}.{environment}"))?;
                environment_overrides.insert(environment.clone(), v.to_owned());
            }
        }
        out.push((
            name.to_owned(),
            StoredSecret {
                value: value.to_owned(),
                prefix: prefix.map(str::to_owned),
                environment_overrides,
            },
        ));
    }
    Ok((out, partial))
}

/// The update-resource body: only the spec's top-level keys; `notification`, when present,
/// must have `level` (info, warn or error) and `title`, and optional string `message` and
/// `href` (an absolute URI). As for overrides, the fake refuses other notification keys,
/// which the spec leaves open.
fn validate_patch_body(body: &Value) -> Result<Option<StoredNotification>, String> {
    let top = expect_object(body, "body")?;
    refuse_unknown_keys(top, &PATCH_KEYS, "")?;
    let Some(notification) = top.get("notification") else {
        return Ok(None);
    };
    let n = expect_object(notification, "notification")?;
    refuse_unknown_keys(n, &["level", "title", "message", "href"], "notification")?;
    let level = expect_string(require(n, "level", "notification")?, "notification.level")?;
    if !["info", "warn", "error"].contains(&level) {
        return Err(format!(
            "Invalid request: `notification.level` should be one of info, warn, error, got {level:?}."
        ));
    }
    let title = expect_string(require(n, "title", "notification")?, "notification.title")?;
    let message = n
        .get("message")
        .map(|m| expect_string(m, "notification.message"))
        .transpose()?;
    let href = n
        .get("href")
        .map(|h| expect_string(h, "notification.href"))
        .transpose()?;
    if let Some(href) = href
        && !is_absolute_uri(href)
    {
        return Err(format!(
            "Invalid request: `notification.href` should match format \"uri\", got {href:?}."
        ));
    }
    Ok(Some(StoredNotification {
        level: level.to_owned(),
        title: title.to_owned(),
        message: message.map(str::to_owned),
        href: href.map(str::to_owned),
    }))
}

/// `scheme:rest` with an RFC 3986 scheme and no whitespace: enough of `format: uri` to catch
/// a relative or mangled link.
fn is_absolute_uri(text: &str) -> bool {
    let Some((scheme, rest)) = text.split_once(':') else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        && !rest.is_empty()
        && !text.chars().any(char::is_whitespace)
}

// ---------------------------------------------------------------------------------------------
// Responses

fn vercel_json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json; charset=utf-8")],
        body.to_string(),
    )
        .into_response()
}

fn vercel_error(status: StatusCode, code: &str, message: &str) -> Response {
    vercel_json(
        status,
        &json!({"error": {"code": code, "message": message}}),
    )
}

fn bad_request(message: &str) -> Response {
    vercel_error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn scripted_response(scripted: &Scripted) -> Response {
    let status = StatusCode::from_u16(scripted.status)
        .unwrap_or_else(|_| panic!("fake vercel: bad scripted status {}", scripted.status));
    let mut response = Response::new(Body::from(scripted.body.clone()));
    *response.status_mut() = status;
    for (name, value) in &scripted.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .unwrap_or_else(|_| panic!("fake vercel: bad scripted header name {name:?}"));
        let value = HeaderValue::from_str(value)
            .unwrap_or_else(|_| panic!("fake vercel: bad scripted header value {value:?}"));
        response.headers_mut().append(name, value);
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Connections that a handler can cut: axum gives a handler no access to its socket, so the
// listener wraps each stream with a kill switch and hands the switch to the handler as
// connect info. Once killed, every read and write fails, hyper drops the connection, and the
// client sees it closed without an answer.

struct KillableListener {
    inner: TcpListener,
}

/// The kill switch of one accepted connection (the handler's `ConnectInfo`).
#[derive(Debug, Clone)]
struct Connection {
    killed: Arc<AtomicBool>,
}

impl Connection {
    fn kill(&self) {
        self.killed.store(true, Ordering::SeqCst);
    }
}

impl Listener for KillableListener {
    type Io = KillableStream;
    type Addr = Connection;

    async fn accept(&mut self) -> (KillableStream, Connection) {
        loop {
            match self.inner.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let killed = Arc::new(AtomicBool::new(false));
                    let connection = Connection {
                        killed: killed.clone(),
                    };
                    return (KillableStream { stream, killed }, connection);
                }
                // Out of file descriptors or a reset before accept: wait a little, go on.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<Connection> {
        self.inner.local_addr().map(|_| Connection {
            killed: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, KillableListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, KillableListener>) -> Connection {
        stream.remote_addr().clone()
    }
}

struct KillableStream {
    stream: TcpStream,
    killed: Arc<AtomicBool>,
}

impl KillableStream {
    fn check(&self) -> io::Result<()> {
        if self.killed.load(Ordering::SeqCst) {
            Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "fake vercel: dropped",
            ))
        } else {
            Ok(())
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
