//! A standalone fake of the Vercel API for the benchmarks in `bench/` (see BENCHMARKS.md).
//!
//! Serves `PUT /v1/installations/{id}/resources/{resourceId}/secrets` and the listing
//! `GET /v1/installations/{id}/resources` the way the test fake (`tests/common/fake_vercel.rs`)
//! does, minus the recording and scripting, plus what a benchmark needs: an injected latency,
//! an optional rate limit, and counters.
//!
//! ```text
//! cargo run --release --example fake_vercel -- --port 0 --latency-ms 50 \
//!     --installations 8 --resources 10000 [--threads 1] \
//!     [--rate-limit 200 [--burst 10] [--bucket-headers limit|bare]] \
//!     [--window-limit 2000 [--window-secs 10]]
//! ```
//!
//! Rate limits (the bucket is checked first when both are on; both count PUTs and listings
//! alike, and every 429 counts in `rate_limited`, a listing's also in `listings_rate_limited`):
//! - `--rate-limit R`: a token bucket of `--burst` tokens refilled at R a second. Accepted
//!   requests get no rate-limit headers. A refused one gets `429` with Vercel's error body and,
//!   with `--bucket-headers limit` (the default), `Retry-After`, `X-RateLimit-Limit: R`,
//!   `X-RateLimit-Remaining: 0` and `X-RateLimit-Reset` (when the next token comes, whole
//!   seconds rounded down); with `--bucket-headers bare`, headers that describe no window:
//!   `Retry-After` rounded up to whole seconds, `X-RateLimit-Remaining: 0` and
//!   `X-RateLimit-Reset` when the bucket is full again (rounded up), and no limit.
//! - `--window-limit N`: Vercel-like fixed windows of `--window-secs` (aligned on Unix time),
//!   N requests each; every answer carries `X-RateLimit-Limit: N`, `X-RateLimit-Remaining` and
//!   `X-RateLimit-Reset` (the window's end, Unix seconds); past N, `429` with `Retry-After`
//!   until the window's end.
//!
//! - Installation `i` (0-based) has id `icfg_bench{i}` and token `benchtoken{i}`; resources
//!   are `res{k}` for `k < --resources`, resource `k` belonging to installation
//!   `k % --installations`. Anything else is a 404; a wrong token a 401.
//! - A listing answers the installation's resources (`partnerId` `res{k}`, status `ready`,
//!   product `iap_bench_db`, metadata `region`, `tier`, `shard`), valid against the OpenAPI
//!   operation. `__stats` counts listings (`listings`, `listings_ok`), installations listed at
//!   least once (`distinct_installations_listed`) and when the last of them first was
//!   (`all_listed_unix_ms`, 0 until then).
//! - The body is checked against the strict schema (`secrets` of `{name, value, prefix?,
//!   environmentOverrides?}`, `partial`, no other key); a PUT without `partial: true` is
//!   counted, as is a secret value that is not 40 alphanumeric characters.
//! - `GET /__stats` answers the counters as JSON; `POST /__reset` zeroes them. On SIGTERM or
//!   SIGINT the counters are printed to stdout and the process exits.
//!
//! First line on stdout: `listening on http://127.0.0.1:PORT`. Then it serves until killed.
//! Per request it does one atomic add or two and a JSON parse: no lock, no recording, so it
//! is not the bottleneck of a benchmark (BENCHMARKS.md measures its CPU).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::serve::ListenerExt;
use clap::Parser;
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(about = "A fake Vercel API for benchmarks")]
struct Args {
    /// Port on 127.0.0.1; 0 picks a free one (printed).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Added to every answer (including 429s), as a one-way-plus-server-time model.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Requests per second accepted (token bucket); 0 = unlimited.
    #[arg(long, default_value_t = 0.0)]
    rate_limit: f64,
    /// Bucket size: requests that may pass at once after an idle spell.
    #[arg(long, default_value_t = 10.0)]
    burst: f64,
    /// What the bucket's 429s say: `limit` (its rate as X-RateLimit-Limit, the next token's
    /// time as reset) or `bare` (no limit, the time it is full as reset, Retry-After rounded
    /// up).
    #[arg(long, value_enum, default_value_t = BucketHeaders::Limit)]
    bucket_headers: BucketHeaders,
    /// Requests per fixed window, with X-RateLimit-* on every answer; 0 = no window.
    #[arg(long, default_value_t = 0)]
    window_limit: u64,
    /// Length of a fixed window, in seconds.
    #[arg(long, default_value_t = 60)]
    window_secs: u64,
    /// Number of installations (ids icfg_bench0.., tokens benchtoken0..).
    #[arg(long, default_value_t = 8)]
    installations: u64,
    /// Number of resources in all (res0.., resource k in installation k % installations).
    #[arg(long, default_value_t = 10_000)]
    resources: u64,
    /// Tokio worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BucketHeaders {
    Limit,
    Bare,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    /// 201 answers to a PUT.
    puts_ok: AtomicU64,
    rate_limited: AtomicU64,
    /// 4xx other than 429 (bad token, unknown id, bad body).
    refused: AtomicU64,
    /// Accepted PUTs without `partial: true`.
    not_partial: AtomicU64,
    /// Accepted PUTs with a value that is not 40 alphanumeric characters.
    odd_values: AtomicU64,
    /// Listing GETs received, answered 429, answered 200.
    listings: AtomicU64,
    listings_rate_limited: AtomicU64,
    listings_ok: AtomicU64,
    /// Installations listed (200) at least once, and when (Unix ms) the last of them was.
    distinct_installations_listed: AtomicU64,
    all_listed_unix_ms: AtomicU64,
    in_flight: AtomicU64,
    max_in_flight: AtomicU64,
    /// Microseconds since the fake started: first and last 201.
    first_ok_us: AtomicU64,
    last_ok_us: AtomicU64,
    /// Total time the injected latency actually slept, in microseconds: Tokio's timer rounds
    /// a sleep up to its next millisecond tick, so the real network model is a little slower
    /// than `--latency-ms`, and the report says by how much.
    slept_us: AtomicU64,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The fixed window in force: its number (Unix seconds / window length) and requests in it.
#[derive(Default)]
struct Window {
    number: u64,
    used: u64,
}

/// What the fixed window said about one request.
struct WindowDecision {
    accepted: bool,
    limit: u64,
    remaining: u64,
    /// The window's end, in Unix seconds.
    reset: u64,
    /// Whole seconds from now to the window's end (at least 1).
    retry_after: u64,
}

impl WindowDecision {
    fn headers(&self) -> [(axum::http::HeaderName, String); 3] {
        [
            (
                axum::http::HeaderName::from_static("x-ratelimit-limit"),
                self.limit.to_string(),
            ),
            (
                axum::http::HeaderName::from_static("x-ratelimit-remaining"),
                self.remaining.to_string(),
            ),
            (
                axum::http::HeaderName::from_static("x-ratelimit-reset"),
                self.reset.to_string(),
            ),
        ]
    }
}

struct App {
    args: Args,
    started: Instant,
    counters: Counters,
    /// Per resource: how many PUTs it got (distinct resources updated = nonzero entries).
    per_resource: Vec<AtomicU64>,
    /// Per installation: how many times it was listed (200).
    per_installation: Vec<AtomicU64>,
    bucket: Mutex<Bucket>,
    window: Mutex<Window>,
}

impl App {
    fn stats(&self) -> Value {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let distinct = self
            .per_resource
            .iter()
            .filter(|n| n.load(Ordering::Relaxed) > 0)
            .count();
        let (first, last) = (get(&c.first_ok_us), get(&c.last_ok_us));
        let span = last.saturating_sub(first) as f64 / 1e6;
        json!({
            "requests": get(&c.requests),
            "puts_ok": get(&c.puts_ok),
            "rate_limited": get(&c.rate_limited),
            "refused": get(&c.refused),
            "not_partial": get(&c.not_partial),
            "odd_values": get(&c.odd_values),
            "distinct_resources_updated": distinct,
            "max_in_flight": get(&c.max_in_flight),
            "listings": get(&c.listings),
            "listings_rate_limited": get(&c.listings_rate_limited),
            "listings_ok": get(&c.listings_ok),
            "distinct_installations_listed": get(&c.distinct_installations_listed),
            "all_listed_unix_ms": get(&c.all_listed_unix_ms),
            "ok_span_s": span,
            "ok_per_s": if span > 0.0 { get(&c.puts_ok).saturating_sub(1) as f64 / span } else { 0.0 },
            "mean_latency_ms": get(&c.slept_us) as f64 / 1e3 / get(&c.requests).max(1) as f64,
        })
    }

    fn reset(&self) {
        let c = &self.counters;
        for a in [
            &c.requests,
            &c.puts_ok,
            &c.rate_limited,
            &c.refused,
            &c.not_partial,
            &c.odd_values,
            &c.max_in_flight,
            &c.listings,
            &c.listings_rate_limited,
            &c.listings_ok,
            &c.distinct_installations_listed,
            &c.all_listed_unix_ms,
            &c.first_ok_us,
            &c.last_ok_us,
            &c.slept_us,
        ] {
            a.store(0, Ordering::Relaxed);
        }
        for n in self.per_resource.iter().chain(&self.per_installation) {
            n.store(0, Ordering::Relaxed);
        }
    }

    /// Takes a token from the bucket, or says how long until one is there and until the
    /// bucket is full.
    fn admit(&self) -> Result<(), (Duration, Duration)> {
        if self.args.rate_limit <= 0.0 {
            return Ok(());
        }
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let refill = now.duration_since(b.at).as_secs_f64() * self.args.rate_limit;
        b.tokens = (b.tokens + refill).min(self.args.burst);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let rate = self.args.rate_limit;
            Err((
                Duration::from_secs_f64((1.0 - b.tokens) / rate),
                Duration::from_secs_f64((self.args.burst - b.tokens) / rate),
            ))
        }
    }

    /// Counts the request in the fixed window in force, if windows are on.
    fn count_in_window(&self) -> Option<WindowDecision> {
        let limit = self.args.window_limit;
        if limit == 0 {
            return None;
        }
        let secs = self.args.window_secs.max(1);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let number = now.as_secs() / secs;
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        if w.number != number {
            *w = Window { number, used: 0 };
        }
        let accepted = w.used < limit;
        if accepted {
            w.used += 1;
        }
        let reset = (number + 1) * secs;
        let left = Duration::from_secs(reset).saturating_sub(now);
        Some(WindowDecision {
            accepted,
            limit,
            remaining: limit - w.used,
            reset,
            retry_after: left.as_secs_f64().ceil().max(1.0) as u64,
        })
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        [(CONTENT_TYPE, "application/json; charset=utf-8")],
        json!({"error": {"code": code, "message": message}}).to_string(),
    )
        .into_response()
}

/// Decrements the in-flight gauge however the handler ends (a client may hang up).
struct InFlight<'a>(&'a Counters);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What every request goes through before it is looked at: the gauges, the rate limits (one
/// bucket and one window for all endpoints, as Vercel counts per token and team), and the
/// injected latency. `Err` is the 429 to answer; `Ok` the window's verdict, whose headers go
/// on the answer.
async fn gate(app: &App) -> Result<Option<WindowDecision>, Response> {
    let c = &app.counters;
    let admitted = app.admit();
    // The window counts only what the bucket let through.
    let window = admitted.is_ok().then(|| app.count_in_window()).flatten();
    if app.args.latency_ms > 0 {
        let slept = Instant::now();
        tokio::time::sleep(Duration::from_millis(app.args.latency_ms)).await;
        c.slept_us
            .fetch_add(slept.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
    if let Err((next_token, full_in)) = admitted {
        c.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(bucket_refusal(&app.args, next_token, full_in));
    }
    if let Some(w) = window.as_ref().filter(|w| !w.accepted) {
        c.rate_limited.fetch_add(1, Ordering::Relaxed);
        let body = json!({"error": {"code": "rate_limited",
            "message": "Rate limit exceeded",
            "limit": {"remaining": 0, "reset": w.reset, "resetMs": w.reset * 1000,
                      "total": w.limit}}});
        let mut response = (
            StatusCode::TOO_MANY_REQUESTS,
            [
                (CONTENT_TYPE, "application/json; charset=utf-8".to_owned()),
                (RETRY_AFTER, w.retry_after.to_string()),
            ],
            body.to_string(),
        )
            .into_response();
        response.headers_mut().extend(
            w.headers()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.parse().ok()?))),
        );
        return Err(response);
    }
    Ok(window)
}

/// Starts counting a request: total, in flight (until the guard drops) and the most at once.
fn enter(c: &Counters) -> InFlight<'_> {
    c.requests.fetch_add(1, Ordering::Relaxed);
    let now_in_flight = c.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
    c.max_in_flight.fetch_max(now_in_flight, Ordering::Relaxed);
    InFlight(c)
}

/// A window's headers go on every answer, as Vercel sends them.
fn with_window(mut response: Response, window: Option<WindowDecision>) -> Response {
    if let Some(w) = window {
        response.headers_mut().extend(
            w.headers()
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.parse().ok()?))),
        );
    }
    response
}

async fn put_secrets(
    State(app): State<Arc<App>>,
    Path((installation, resource)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let c = &app.counters;
    let _guard = enter(c);
    let window = match gate(&app).await {
        Ok(window) => window,
        Err(refusal) => return refusal,
    };
    let response = match check(&app, &installation, &resource, &headers, &body) {
        Ok(k) => {
            app.per_resource[k].fetch_add(1, Ordering::Relaxed);
            let us = app.started.elapsed().as_micros() as u64;
            if c.puts_ok.fetch_add(1, Ordering::Relaxed) == 0 {
                c.first_ok_us.store(us, Ordering::Relaxed);
            }
            c.last_ok_us.fetch_max(us, Ordering::Relaxed);
            StatusCode::CREATED.into_response()
        }
        Err(response) => {
            c.refused.fetch_add(1, Ordering::Relaxed);
            response
        }
    };
    with_window(response, window)
}

/// The bucket's 429: Vercel's error body, `Retry-After`, and the headers `--bucket-headers`
/// says. `next_token`: until a token is there; `full_in`: until the bucket is full.
fn bucket_refusal(args: &Args, next_token: Duration, full_in: Duration) -> Response {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let header = axum::http::HeaderName::from_static;
    let (reset_ms, reset_secs, limit) = match args.bucket_headers {
        BucketHeaders::Limit => {
            let reset_ms = now.saturating_add(next_token).as_millis() as u64;
            (reset_ms, reset_ms / 1000, Some(args.rate_limit))
        }
        BucketHeaders::Bare => {
            let reset_ms = now.saturating_add(full_in).as_millis() as u64;
            (reset_ms, reset_ms.div_ceil(1000), None)
        }
    };
    // Retry-After is whole seconds (RFC 9110): at least 1.
    let retry_after = next_token.as_secs_f64().ceil().max(1.0) as u64;
    let mut limit_body = json!({"remaining": 0, "reset": reset_secs, "resetMs": reset_ms});
    let mut headers = vec![
        (CONTENT_TYPE, "application/json; charset=utf-8".to_owned()),
        (RETRY_AFTER, retry_after.to_string()),
        (header("x-ratelimit-remaining"), "0".to_owned()),
        (header("x-ratelimit-reset"), reset_secs.to_string()),
    ];
    if let Some(limit) = limit {
        limit_body["total"] = json!(limit);
        headers.push((header("x-ratelimit-limit"), limit.to_string()));
    }
    let body = json!({"error": {"code": "rate_limited", "message": "Rate limit exceeded",
        "limit": limit_body}});
    let mut response = (StatusCode::TOO_MANY_REQUESTS, body.to_string()).into_response();
    response.headers_mut().extend(
        headers
            .into_iter()
            .filter_map(|(k, v)| Some((k, v.parse().ok()?))),
    );
    response
}

/// The installation's index, if it exists and the bearer token is its own.
#[allow(clippy::result_large_err)]
fn authorize(app: &App, installation: &str, headers: &HeaderMap) -> Result<u64, Response> {
    let i: u64 = installation
        .strip_prefix("icfg_bench")
        .and_then(|n| n.parse().ok())
        .filter(|i| *i < app.args.installations)
        .ok_or_else(|| error(StatusCode::NOT_FOUND, "not_found", "Installation not found"))?;
    let want = format!("Bearer benchtoken{i}");
    if headers.get(AUTHORIZATION).map(|v| v.as_bytes()) != Some(want.as_bytes()) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "forbidden",
            "Not authorized",
        ));
    }
    Ok(i)
}

/// `GET /v1/installations/{id}/resources`: every resource of the installation, each valid
/// against the OpenAPI operation (`partnerId`, `internalId`, `name`, `productId` required;
/// `status`, `billingPlanId` and `metadata` as Vercel fills them).
async fn list_resources(
    State(app): State<Arc<App>>,
    Path(installation): Path<String>,
    headers: HeaderMap,
) -> Response {
    let c = &app.counters;
    let _guard = enter(c);
    c.listings.fetch_add(1, Ordering::Relaxed);
    let window = match gate(&app).await {
        Ok(window) => window,
        Err(refusal) => {
            c.listings_rate_limited.fetch_add(1, Ordering::Relaxed);
            return refusal;
        }
    };
    let i = match authorize(&app, &installation, &headers) {
        Ok(i) => i,
        Err(response) => {
            c.refused.fetch_add(1, Ordering::Relaxed);
            return with_window(response, window);
        }
    };
    let (n, step) = (app.args.resources, app.args.installations);
    let resources: Vec<Value> = (i..n)
        .step_by(usize::try_from(step).unwrap_or(usize::MAX))
        .map(|k| {
            json!({
                "partnerId": format!("res{k}"),
                "internalId": format!("ires_{k}"),
                "name": format!("bench-db-{k}"),
                "status": "ready",
                "productId": "iap_bench_db",
                "billingPlanId": "bp_bench",
                "metadata": {"region": "iad1", "tier": "pro", "shard": k % 16},
            })
        })
        .collect();
    c.listings_ok.fetch_add(1, Ordering::Relaxed);
    if app.per_installation[i as usize].fetch_add(1, Ordering::Relaxed) == 0 {
        let distinct = c
            .distinct_installations_listed
            .fetch_add(1, Ordering::Relaxed)
            + 1;
        if distinct == app.args.installations {
            c.all_listed_unix_ms.store(unix_ms(), Ordering::Relaxed);
        }
    }
    with_window(
        (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json; charset=utf-8")],
            json!({ "resources": resources }).to_string(),
        )
            .into_response(),
        window,
    )
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

/// Token, ids, content type and schema; the resource's index when all is well.
#[allow(clippy::result_large_err)]
fn check(
    app: &App,
    installation: &str,
    resource: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<usize, Response> {
    let not_found = |what: &str| error(StatusCode::NOT_FOUND, "not_found", what);
    let i = authorize(app, installation, headers)?;
    let k: u64 = resource
        .strip_prefix("res")
        .and_then(|n| n.parse().ok())
        .filter(|k| *k < app.args.resources && k % app.args.installations == i)
        .ok_or_else(|| not_found("Resource not found"))?;
    let bad = |m: &str| error(StatusCode::BAD_REQUEST, "bad_request", m);
    let is_json = headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|e| e.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(bad(
            "Invalid request: the body must be sent as application/json",
        ));
    }
    let body: Value =
        serde_json::from_slice(body).map_err(|_| bad("Invalid request: invalid JSON"))?;
    let top = body
        .as_object()
        .ok_or_else(|| bad("Invalid request: `body` should be object"))?;
    if top.keys().any(|k| k != "secrets" && k != "partial") {
        return Err(bad("Invalid request: unknown top-level property"));
    }
    let partial = match top.get("partial") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("Invalid request: `partial` should be boolean")),
    };
    let secrets = top
        .get("secrets")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("Invalid request: `secrets` should be array"))?;
    let mut odd = false;
    for s in secrets {
        let s = s
            .as_object()
            .ok_or_else(|| bad("Invalid request: secret should be object"))?;
        if s.keys()
            .any(|k| !["name", "value", "prefix", "environmentOverrides"].contains(&k.as_str()))
        {
            return Err(bad("Invalid request: unknown secret property"));
        }
        if !s.get("name").is_some_and(Value::is_string) {
            return Err(bad("Invalid request: `name` should be string"));
        }
        let value = s
            .get("value")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("Invalid request: `value` should be string"))?;
        if s.get("prefix").is_some_and(|p| !p.is_string()) {
            return Err(bad("Invalid request: `prefix` should be string"));
        }
        if let Some(o) = s.get("environmentOverrides") {
            let o = o
                .as_object()
                .ok_or_else(|| bad("Invalid request: `environmentOverrides` should be object"))?;
            if o.iter().any(|(k, v)| {
                !["production", "preview", "development"].contains(&k.as_str()) || !v.is_string()
            }) {
                return Err(bad("Invalid request: bad environmentOverrides"));
            }
        }
        odd |= value.len() != 40 || !value.bytes().all(|b| b.is_ascii_alphanumeric());
    }
    if !partial {
        app.counters.not_partial.fetch_add(1, Ordering::Relaxed);
    }
    if odd {
        app.counters.odd_values.fetch_add(1, Ordering::Relaxed);
    }
    Ok(k as usize)
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let app = Arc::new(App {
        per_resource: (0..args.resources).map(|_| AtomicU64::new(0)).collect(),
        per_installation: (0..args.installations).map(|_| AtomicU64::new(0)).collect(),
        bucket: Mutex::new(Bucket {
            tokens: args.burst,
            at: Instant::now(),
        }),
        window: Mutex::new(Window::default()),
        started: Instant::now(),
        counters: Counters::default(),
        args,
    });
    let router = Router::new()
        .route(
            "/v1/installations/{installation}/resources/{resource}/secrets",
            put(put_secrets),
        )
        .route(
            "/v1/installations/{installation}/resources",
            get(list_resources),
        )
        .route(
            "/__stats",
            get(|State(app): State<Arc<App>>| async move { axum::Json(app.stats()) }),
        )
        .route(
            "/__reset",
            post(|State(app): State<Arc<App>>| async move {
                app.reset();
                StatusCode::NO_CONTENT
            }),
        )
        .fallback(|| async {
            error(
                StatusCode::NOT_FOUND,
                "not_found",
                "The requested path was not found",
            )
        })
        .with_state(app.clone());
    println!("listening on http://{addr}");
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let stop = async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    tokio::select! {
        r = axum::serve(listener, router).into_future() => r?,
        () = stop => {}
    }
    println!("{}", app.stats());
    Ok(())
}
