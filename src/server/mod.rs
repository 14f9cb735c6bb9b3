//! The HTTP listener of `[server]`: Vercel's rotate requests, `/metrics` and `/healthz`.
//!
//! - `POST /v1/installations/{installationId}/resources/{resourceId}/secrets/rotate`:
//!   [`rotate`] checks the bearer token ([`auth`]), the body and the `Idempotency-Key`
//!   ([`idempotency`]), then hands a [`RotateRequest`] to the daemon over a channel; the
//!   daemon, which knows which policies govern the resource, answers 202 or 404.
//! - `GET /metrics` and `GET /healthz` answer what the daemon's [`Probe`] says, so this
//!   module knows nothing of how metrics are kept.
//!
//! One plain-HTTP listener (TLS ends at the partner's proxy). It sits below the daemon and
//! imports nothing of it. Limits, so a flood or a slow client cannot hurt the daemon: request
//! headers must arrive within [`HEADER_TIMEOUT`], a whole request is answered within
//! [`REQUEST_TIMEOUT`], bodies are cut at [`BODY_LIMIT`], at most [`MAX_CONNECTIONS`]
//! connections are open and [`MAX_IN_FLIGHT`] requests handled at once (more are answered
//! 503 at once rather than queued).

pub mod auth;
pub mod idempotency;
pub mod rotate;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::ServerSettings;
use crate::error::{Classify, Persistence};
use crate::state::StateStore;

/// The largest request body read: Vercel's is a reason and a number.
pub const BODY_LIMIT: usize = 16 * 1024;
/// How long a client may take to send a request's headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one request may take, body and hand-over to the daemon included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests handled at once; one more is answered 503 at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Connections open at once; one more is closed as soon as it is accepted.
pub const MAX_CONNECTIONS: usize = 256;
/// How long a stop waits for requests in flight.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// What the daemon tells the server about itself, so the server need not know how metrics
/// are kept or what "healthy" takes.
pub trait Probe: Send + Sync {
    /// The Prometheus text exposition of every metric.
    fn metrics(&self) -> String;
    /// Whether the scheduler runs and the state is writable (`/healthz`: 200 or 503).
    fn healthy(&self) -> bool;
}

/// Vercel asking for a rotation, its token, body and idempotency key checked: what the
/// daemon gets. Holds no token.
#[derive(Debug)]
pub struct RotateRequest {
    pub installation_id: String,
    pub resource_id: String,
    /// `delayOldSecretsExpirationHours`: the grace of the credentials this rotation
    /// replaces, instead of the policy's.
    pub grace: Option<Duration>,
    /// Vercel's `reason`, for the log and the history.
    pub reason: Option<Arc<str>>,
    /// The `Idempotency-Key` header, for the log.
    pub idempotency_key: Option<String>,
    /// Who asked: `user <id>` or `system`, for the log.
    pub caller: String,
    /// Where the daemon answers.
    pub answer: oneshot::Sender<RotateAnswer>,
}

/// The daemon's answer to a [`RotateRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotateAnswer {
    /// A rotation runs for each of these (policy) names, started now or joined: 202.
    Accepted { policies: Vec<String> },
    /// No policy governs the resource: 404.
    NotGoverned,
}

/// Why the server could not start. Nothing was served.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} ([server] listen): {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot set up the client that fetches Vercel's keys ([server] jwks-url): {0}")]
    Client(#[from] crate::net::ClientError),
}

impl Classify for ServerError {
    fn persistence(&self) -> Persistence {
        match self {
            // Another process holding the port may go away; a restart can then succeed.
            ServerError::Bind { source, .. } if source.kind() == std::io::ErrorKind::AddrInUse => {
                Persistence::Transient
            }
            ServerError::Bind { .. } | ServerError::Client(_) => Persistence::Permanent,
        }
    }
}

/// What every handler shares.
pub(crate) struct App {
    pub(crate) verifier: auth::Verifier,
    pub(crate) ledger: idempotency::Ledger,
    pub(crate) requests: mpsc::Sender<RotateRequest>,
    pub(crate) probe: Arc<dyn Probe>,
}

/// A running listener: stops when the token given to [`start`] is cancelled.
pub struct Server {
    addr: SocketAddr,
    done: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address it listens on (the port chosen when `listen` gave port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits until the listener has stopped and its requests have been answered (at most
    /// [`DRAIN_TIMEOUT`] after the stop).
    pub async fn stopped(self) {
        let _ = self.done.await;
    }
}

/// Binds `settings.listen` and serves until `shutdown` is cancelled. Rotate requests go to
/// `requests`; the answered ones' idempotency keys are kept in `store`. Vercel's keys are
/// fetched once now, in the background: a failure is logged and retried when a request
/// needs them, and never stops the daemon.
pub async fn start(
    settings: &ServerSettings,
    probe: Arc<dyn Probe>,
    store: Arc<dyn StateStore>,
    requests: mpsc::Sender<RotateRequest>,
    shutdown: CancellationToken,
) -> Result<Server, ServerError> {
    let verifier = auth::Verifier::new(settings)?;
    let listener =
        TcpListener::bind(settings.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: settings.listen,
                source,
            })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: settings.listen,
        source,
    })?;
    let app = Arc::new(App {
        verifier,
        ledger: idempotency::Ledger::load(store),
        requests,
        probe,
    });
    {
        let app = app.clone();
        tokio::spawn(async move { app.verifier.prefetch().await });
    }
    let router = router(app);
    info!(
        listen = %addr,
        audience = %settings.client_id,
        issuer = %settings.issuer,
        jwks = %settings.jwks_url,
        "listening for Vercel's rotate requests, /metrics and /healthz on {addr}"
    );
    let done = tokio::spawn(accept(listener, router, shutdown));
    Ok(Server { addr, done })
}

/// The routes, with the body limit and the request limits.
pub(crate) fn router(app: Arc<App>) -> Router {
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    Router::new()
        .route(
            "/v1/installations/{installation_id}/resources/{resource_id}/secrets/rotate",
            post(rotate::handle),
        )
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .fallback(|| async { rotate::error(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn_with_state(in_flight, limit))
        .with_state(app)
}

/// At most [`MAX_IN_FLIGHT`] requests at once, each answered within [`REQUEST_TIMEOUT`].
async fn limit(State(in_flight): State<Arc<Semaphore>>, request: Request, next: Next) -> Response {
    let Ok(_permit) = in_flight.try_acquire() else {
        warn!("refused a request: {MAX_IN_FLIGHT} are already being handled");
        return busy("too many requests at once; try again shortly");
    };
    match tokio::time::timeout(REQUEST_TIMEOUT, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            warn!(
                "a request took longer than {}s and was answered 503",
                REQUEST_TIMEOUT.as_secs()
            );
            busy("the request took too long; try again")
        }
    }
}

fn busy(message: &str) -> Response {
    let mut response = rotate::error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
    response
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        app.probe.metrics(),
    )
        .into_response()
}

async fn healthz(State(app): State<Arc<App>>) -> Response {
    if app.probe.healthy() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "unhealthy\n").into_response()
    }
}

/// Accepts connections until `shutdown`, each served on its own task (HTTP/1.1, headers
/// within [`HEADER_TIMEOUT`]); then lets the open ones finish their request, for at most
/// [`DRAIN_TIMEOUT`].
async fn accept(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors, say: wait a little rather than spin.
                    warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            debug!(%peer, "closed a connection: {MAX_CONNECTIONS} are open");
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        debug!(%peer, "connection ended: {e}");
                    }
                }
                _ = shutdown.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
        .await
        .is_err()
    {
        warn!(
            "{} connection(s) still open {}s after the stop were dropped",
            tracker.len(),
            DRAIN_TIMEOUT.as_secs()
        );
    }
    info!("the HTTP listener stopped");
}
