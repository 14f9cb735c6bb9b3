//! The `http` provider against a fake partner API: the command protocol's JSON byte for byte
//! over a POST, the bearer token from its file, what each status means, the limits on a
//! misbehaving API (timeout, body cap, redirects), and that no value and no token reaches an
//! error.
//!
//! The fake binds `127.0.0.1:0` (plain http to loopback, which the config allows), records
//! every request as received, and answers with what the test scripts for it.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::common::provider_helpers::{credential, target};
use axum::Router;
use axum::body::{Body, to_bytes};
use axum::extract::{Request, State};
use axum::http::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, LOCATION, USER_AGENT};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use url::Url;
use vercel_secret_rotator::config::{HttpConfig, SecretSource};
use vercel_secret_rotator::error::Classify;
use vercel_secret_rotator::providers::http::HttpProvider;
use vercel_secret_rotator::providers::{Outcome, Provider, ProviderError};
use vercel_secret_rotator::secret::ExposeSecret;

/// A value no fake makes up: wherever it appears, it came from a request or an answer.
const CANARY: &str = "canary-7d2e41b0-hunter2";

/// The bearer token in the token file; must never appear in an error.
const TOKEN: &str = "tok-http-3a9f0c55-swordfish";

/// One request as the fake received it.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path: String,
    authorization: Option<String>,
    content_type: Option<String>,
    accept: Option<String>,
    user_agent: Option<String>,
    /// The body as JSON; `Value::Null` if it did not parse.
    body: Value,
}

/// What the fake answers.
enum Reply {
    Json(u16, Value),
    Raw(u16, Vec<u8>),
    /// 302 Found, or the status given, to `location`.
    Redirect(u16, &'static str),
    /// Never answers.
    Hang,
}

type Script = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct Shared {
    recorded: Mutex<Vec<Recorded>>,
    script: Box<Script>,
}

struct FakeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl FakeApi {
    /// Starts a fake answering every request with what `script` says.
    async fn start(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> FakeApi {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            recorded: Mutex::new(Vec::new()),
            script: Box::new(script),
        });
        let app = Router::new().fallback(handle).with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi { addr, shared }
    }

    /// The fake's `/rotate` URL.
    fn url(&self) -> Url {
        Url::parse(&format!("http://{}/rotate", self.addr)).unwrap()
    }

    fn requests(&self) -> Vec<Recorded> {
        self.shared.recorded.lock().unwrap().clone()
    }

    fn bodies(&self) -> Vec<Value> {
        self.requests().into_iter().map(|r| r.body).collect()
    }
}

async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let header = |name| {
        parts
            .headers
            .get(name)
            .map(|v: &HeaderValue| v.to_str().unwrap().to_owned())
    };
    let bytes = to_bytes(body, 16 * 1024 * 1024).await.unwrap();
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.to_string(),
        authorization: header(AUTHORIZATION),
        content_type: header(CONTENT_TYPE),
        accept: header(ACCEPT),
        user_agent: header(USER_AGENT),
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    };
    shared.recorded.lock().unwrap().push(recorded.clone());
    match (shared.script)(&recorded) {
        Reply::Json(status, value) => (
            StatusCode::from_u16(status).unwrap(),
            [(CONTENT_TYPE, "application/json")],
            value.to_string(),
        )
            .into_response(),
        Reply::Raw(status, bytes) => {
            (StatusCode::from_u16(status).unwrap(), Body::from(bytes)).into_response()
        }
        Reply::Redirect(status, location) => (
            StatusCode::from_u16(status).unwrap(),
            [(LOCATION, location)],
        )
            .into_response(),
        Reply::Hang => {
            std::future::pending::<()>().await;
            StatusCode::OK.into_response()
        }
    }
}

/// The usual partner API: creates `key-42` with the canary as password, accepts the rest.
fn well_behaved(request: &Recorded) -> Reply {
    match request.body["action"].as_str() {
        Some("create") => Reply::Json(
            200,
            json!({"handle": "key-42", "fields": {"username": "orders_a", "password": CANARY}}),
        ),
        _ => Reply::Json(200, json!({})),
    }
}

/// A token file in its own directory, with `mode`.
struct TokenFile {
    _dir: TempDir,
    path: PathBuf,
}

impl TokenFile {
    fn new(content: &str, mode: u32) -> TokenFile {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("partner.token");
        let file = TokenFile { _dir: dir, path };
        file.write(content);
        std::fs::set_permissions(&file.path, std::fs::Permissions::from_mode(mode)).unwrap();
        file
    }

    fn write(&self, content: &str) {
        std::fs::write(&self.path, content).unwrap();
    }
}

fn provider(url: Url, token_file: Option<&Path>) -> HttpProvider {
    provider_with(url, token_file, Duration::from_secs(10), None)
}

fn provider_with(
    url: Url,
    token_file: Option<&Path>,
    timeout: Duration,
    fields: Option<&[&str]>,
) -> HttpProvider {
    HttpProvider::new(HttpConfig {
        url,
        token: token_file.map(|p| SecretSource::File(p.to_owned())),
        timeout,
        fields: fields.map(|f| f.iter().map(|s| s.to_string()).collect()),
    })
}

/// The error's Display and Debug must be free of values and of the token.
fn assert_clean(error: &ProviderError) {
    let shown = format!("{error} / {error:?} / {error:#?}");
    for secret in [CANARY, TOKEN, "hunter2", "swordfish"] {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
}

fn bad_output_reason(error: ProviderError) -> String {
    assert_clean(&error);
    assert!(!error.is_transient(), "bad output is permanent: {error}");
    match error {
        ProviderError::BadOutput { reason, .. } => reason,
        other => panic!("expected BadOutput, got {other:?}"),
    }
}

/// A `Backend` error's reason, after checking that it is clean and classified as expected.
fn backend_reason(error: ProviderError, transient: bool) -> String {
    assert_clean(&error);
    assert_eq!(error.is_transient(), transient, "{error}");
    match error {
        ProviderError::Backend { kind, reason, .. } => {
            assert_eq!(kind, "http");
            reason
        }
        other => panic!("expected Backend, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------
// The protocol over HTTP

#[tokio::test]
async fn create_verify_and_retire_post_the_protocols_json_with_the_bearer_token() {
    let api = FakeApi::start(well_behaved).await;
    let token = TokenFile::new(&format!("{TOKEN}\n"), 0o600);
    let provider = provider(api.url(), Some(&token.path));
    assert_eq!(provider.kind(), "http");

    let made = provider.create(&target(), "rot-1", None).await.unwrap();
    assert_eq!(made.handle, "key-42");
    let fields: Vec<(&str, &str)> = made
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(fields, [("password", CANARY), ("username", "orders_a")]);
    let again = provider
        .create(&target(), "rot-2", Some("key-41"))
        .await
        .unwrap();
    assert_eq!(again.handle, "key-42");
    assert_eq!(
        provider.verify(&target(), "rot-1", &made).await.unwrap(),
        Outcome::Done
    );
    assert_eq!(
        provider.retire(&target(), "key-41").await.unwrap(),
        Outcome::Done
    );

    assert_eq!(
        api.bodies(),
        [
            json!({"action": "create", "rotation_id": "rot-1", "policy": "orders-db",
                   "installation": "acme", "installation_id": "icfg_test", "resource": "store_abc", "previous_handle": null}),
            json!({"action": "create", "rotation_id": "rot-2", "policy": "orders-db",
                   "installation": "acme", "installation_id": "icfg_test", "resource": "store_abc", "previous_handle": "key-41"}),
            json!({"action": "verify", "rotation_id": "rot-1", "policy": "orders-db",
                   "installation_id": "icfg_test", "resource": "store_abc", "handle": "key-42",
                   "fields": {"username": "orders_a", "password": CANARY}}),
            json!({"action": "retire", "policy": "orders-db", "installation_id": "icfg_test", "resource": "store_abc",
                   "handle": "key-41"}),
        ]
    );
    for request in api.requests() {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path, "/rotate");
        assert_eq!(
            request.authorization.as_deref(),
            Some(format!("Bearer {TOKEN}").as_str())
        );
        assert_eq!(request.content_type.as_deref(), Some("application/json"));
        assert_eq!(request.accept.as_deref(), Some("application/json"));
        assert_eq!(
            request.user_agent.as_deref(),
            Some(format!("vercel-secret-rotator/{}", env!("CARGO_PKG_VERSION")).as_str())
        );
    }
}

#[tokio::test]
async fn the_create_request_bytes_match_the_command_protocol() {
    // Key order and `null` are part of the protocol: compare the raw text, not parsed JSON.
    let raw: Arc<Mutex<Vec<u8>>> = Arc::default();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = raw.clone();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        // Headers, then the body of the announced length.
        loop {
            let n = socket.read(&mut chunk).await.unwrap();
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let length: usize = text
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length: ")
                            .map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap();
                if buf.len() >= end + 4 + length {
                    *seen.lock().unwrap() = buf[end + 4..end + 4 + length].to_vec();
                    break;
                }
            }
        }
        let answer = r#"{"handle":"h","fields":{"password":"p"}}"#;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
            answer.len()
        );
        socket.write_all(response.as_bytes()).await.unwrap();
    });
    let url = Url::parse(&format!("http://{addr}/")).unwrap();
    provider(url, None)
        .create(&target(), "rot-1", None)
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8(raw.lock().unwrap().clone()).unwrap(),
        r#"{"action":"create","rotation_id":"rot-1","policy":"orders-db","installation":"acme","installation_id":"icfg_test","resource":"store_abc","previous_handle":null}"#
    );
}

#[tokio::test]
async fn a_token_rotated_on_disk_is_sent_with_the_next_call() {
    let api = FakeApi::start(well_behaved).await;
    let token = TokenFile::new("tok-first", 0o600);
    let provider = provider(api.url(), Some(&token.path));
    provider.retire(&target(), "key-1").await.unwrap();
    token.write("tok-second\n");
    provider.retire(&target(), "key-2").await.unwrap();
    let sent: Vec<Option<String>> = api
        .requests()
        .into_iter()
        .map(|r| r.authorization)
        .collect();
    assert_eq!(
        sent,
        [
            Some("Bearer tok-first".to_owned()),
            Some("Bearer tok-second".to_owned())
        ]
    );
}

#[tokio::test]
async fn without_a_token_file_no_authorization_header_is_sent() {
    let api = FakeApi::start(well_behaved).await;
    let provider = provider(api.url(), None);
    provider.create(&target(), "rot-1", None).await.unwrap();
    provider.retire(&target(), "key-1").await.unwrap();
    let requests = api.requests();
    assert_eq!(requests.len(), 2);
    assert!(
        requests.iter().all(|r| r.authorization.is_none()),
        "{requests:?}"
    );
}

#[tokio::test]
async fn a_token_file_others_may_read_is_refused_with_the_fix_and_nothing_is_sent() {
    let api = FakeApi::start(well_behaved).await;
    let token = TokenFile::new(TOKEN, 0o644);
    let provider = provider(api.url(), Some(&token.path));
    let reason = backend_reason(
        provider.create(&target(), "rot-1", None).await.unwrap_err(),
        false,
    );
    assert!(reason.contains("mode 0644"), "{reason}");
    assert!(
        reason.contains(&format!("chmod 600 {}", token.path.display())),
        "{reason}"
    );
    let error = provider.preflight().await.unwrap_err();
    assert!(
        error
            .to_string()
            .contains(&format!("chmod 600 {}", token.path.display())),
        "{error}"
    );
    assert_clean(&error);

    let missing = provider_with(
        api.url(),
        Some(Path::new("/nonexistent/partner.token")),
        Duration::from_secs(5),
        None,
    );
    let reason = backend_reason(missing.retire(&target(), "key-1").await.unwrap_err(), false);
    assert!(reason.contains("/nonexistent/partner.token"), "{reason}");
    assert!(api.requests().is_empty(), "{:?}", api.requests());
}

#[tokio::test]
async fn a_token_a_header_cannot_carry_is_refused_without_showing_it() {
    let api = FakeApi::start(well_behaved).await;
    let token = TokenFile::new(&format!("{TOKEN} {TOKEN}\n"), 0o600);
    let provider = provider(api.url(), Some(&token.path));
    let reason = backend_reason(
        provider.create(&target(), "rot-1", None).await.unwrap_err(),
        false,
    );
    assert!(
        reason.contains("whitespace or control characters"),
        "{reason}"
    );
    assert!(api.requests().is_empty());
}

#[tokio::test]
async fn preflight_reads_the_token_file_and_calls_nothing() {
    let api = FakeApi::start(well_behaved).await;
    let token = TokenFile::new(TOKEN, 0o600);
    let lines = provider(api.url(), Some(&token.path))
        .preflight()
        .await
        .unwrap();
    assert_eq!(
        lines,
        [format!(
            "POSTs to {} (not called by check); bearer token from file {}: readable",
            api.url(),
            token.path.display()
        )]
    );
    let lines = provider(api.url(), None).preflight().await.unwrap();
    assert_eq!(
        lines,
        [format!(
            "POSTs to {} (not called by check); no token-file, so no Authorization header",
            api.url()
        )]
    );
    assert!(api.requests().is_empty());
}

// ---------------------------------------------------------------------------------------
// Status codes

#[tokio::test]
async fn not_implemented_is_unsupported_for_verify_and_retire_and_an_error_for_create() {
    let api = FakeApi::start(|_| Reply::Json(501, json!({"error": "not here"}))).await;
    let provider = provider(api.url(), None);
    let made = credential("key-42", &[("password", CANARY)]);
    assert_eq!(
        provider.verify(&target(), "rot-1", &made).await.unwrap(),
        Outcome::Unsupported
    );
    assert_eq!(
        provider.retire(&target(), "key-41").await.unwrap(),
        Outcome::Unsupported
    );
    let reason = backend_reason(
        provider.create(&target(), "rot-1", None).await.unwrap_err(),
        false,
    );
    assert!(reason.contains("501 Not Implemented"), "{reason}");
    assert!(reason.contains("does not implement `create`"), "{reason}");
    assert_eq!(api.requests().len(), 3);
}

#[tokio::test]
async fn statuses_that_may_pass_are_transient_the_rest_permanent() {
    let table = [
        (500, true, "500 Internal Server Error"),
        (502, true, "502 Bad Gateway"),
        (503, true, "503 Service Unavailable"),
        (504, true, "504 Gateway Timeout"),
        (408, true, "408 Request Timeout"),
        (429, true, "429 Too Many Requests"),
        (400, false, "400 Bad Request"),
        (401, false, "401 Unauthorized"),
        (403, false, "403 Forbidden"),
        (404, false, "404 Not Found"),
        (409, false, "409 Conflict"),
        (422, false, "422 Unprocessable Entity"),
    ];
    for (status, transient, line) in table {
        let api = FakeApi::start(move |_| {
            Reply::Json(
                status,
                json!({"error": format!("failed on purpose ({status})")}),
            )
        })
        .await;
        let provider = provider(api.url(), None);
        let made = credential("key-42", &[("password", CANARY)]);
        let errors = [
            provider.create(&target(), "rot-1", None).await.unwrap_err(),
            provider
                .verify(&target(), "rot-1", &made)
                .await
                .unwrap_err(),
            provider.retire(&target(), "key-41").await.unwrap_err(),
        ];
        for error in errors {
            let action = match &error {
                ProviderError::Backend { action, .. } => *action,
                other => panic!("{status}: expected Backend, got {other:?}"),
            };
            let reason = backend_reason(error, transient);
            assert_eq!(
                reason,
                format!(
                    "POST {} answered {line}: failed on purpose ({status})",
                    api.url()
                ),
                "{action}"
            );
        }
    }
}

#[tokio::test]
async fn an_error_body_without_a_message_gives_the_status_alone() {
    let api = FakeApi::start(|_| Reply::Raw(502, b"<html>bad gateway</html>".to_vec())).await;
    let reason = backend_reason(
        provider(api.url(), None)
            .create(&target(), "rot-1", None)
            .await
            .unwrap_err(),
        true,
    );
    assert_eq!(
        reason,
        format!("POST {} answered 502 Bad Gateway", api.url())
    );
}

#[tokio::test]
async fn an_error_message_echoing_a_value_or_the_token_is_scrubbed() {
    let api = FakeApi::start(|request| {
        let password = request.body["fields"]["password"].as_str().unwrap_or("");
        let token = request.authorization.clone().unwrap_or_default();
        Reply::Json(
            422,
            json!({"error": format!("password {password} refused\nfor {token}; token {}", TOKEN)}),
        )
    })
    .await;
    let token = TokenFile::new(TOKEN, 0o600);
    let made = credential("key-42", &[("password", CANARY)]);
    let error = provider(api.url(), Some(&token.path))
        .verify(&target(), "rot-1", &made)
        .await
        .unwrap_err();
    let reason = backend_reason(error, false);
    assert!(
        reason.ends_with(
            "answered 422 Unprocessable Entity: password [REDACTED] refused for Bearer [REDACTED]; token [REDACTED]"
        ),
        "{reason}"
    );
}

#[tokio::test]
async fn a_long_error_message_is_cut_short() {
    let api =
        FakeApi::start(|_| Reply::Json(400, json!({"error": {"message": "x".repeat(10_000)}})))
            .await;
    let reason = backend_reason(
        provider(api.url(), None)
            .retire(&target(), "key-1")
            .await
            .unwrap_err(),
        false,
    );
    assert!(reason.len() < 700, "{} bytes", reason.len());
    assert!(reason.ends_with("xxx…"), "{reason}");
}

#[tokio::test]
async fn redirects_are_not_followed() {
    for status in [301, 302, 303, 307, 308] {
        let api = FakeApi::start(move |request| {
            if request.path == "/rotate" {
                Reply::Redirect(status, "/elsewhere")
            } else {
                well_behaved(request)
            }
        })
        .await;
        let token = TokenFile::new(TOKEN, 0o600);
        let made = credential("key-42", &[("password", CANARY)]);
        let error = provider(api.url(), Some(&token.path))
            .verify(&target(), "rot-1", &made)
            .await
            .unwrap_err();
        let reason = backend_reason(error, false);
        assert!(reason.contains("redirects are not followed"), "{reason}");
        assert!(!reason.contains("/elsewhere"), "{reason}");
        let paths: Vec<String> = api.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/rotate"], "{status}");
    }
}

// ---------------------------------------------------------------------------------------
// No answer

#[tokio::test]
async fn a_hanging_api_times_out_as_transient() {
    let api = FakeApi::start(|_| Reply::Hang).await;
    let provider = provider_with(api.url(), None, Duration::from_millis(300), None);
    let started = Instant::now();
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let reason = backend_reason(error, true);
    assert!(reason.contains("no answer within 300ms"), "{reason}");
    assert_eq!(api.requests().len(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = Url::parse(&format!("http://{addr}/rotate")).unwrap();
    let reason = backend_reason(
        provider(url, None)
            .retire(&target(), "key-1")
            .await
            .unwrap_err(),
        true,
    );
    assert!(reason.contains("could not connect"), "{reason}");
}

// ---------------------------------------------------------------------------------------
// Bad answers: each is refused, and the refusal never quotes the answer

/// Makes the same answer to every request.
type Answerer = Box<dyn Fn() -> Reply + Send + Sync>;

async fn create_answering(reply: impl Fn() -> Reply + Send + Sync + 'static) -> ProviderError {
    let api = FakeApi::start(move |_| reply()).await;
    provider_with(
        api.url(),
        None,
        Duration::from_secs(10),
        Some(&["password"]),
    )
    .create(&target(), "rot-1", None)
    .await
    .unwrap_err()
}

#[tokio::test]
async fn bad_create_answers_are_refused_without_quoting_them() {
    let raw = |text: &str| {
        let bytes = text.as_bytes().to_vec();
        move || Reply::Raw(200, bytes.clone())
    };
    let table: [(Answerer, &str); 11] = [
        (
            Box::new(raw(&format!(
                r#"{{"handle": "h", "fields": {{"password": {CANARY}}}}}"#
            ))),
            "the response body is not the expected JSON",
        ),
        (
            Box::new(|| Reply::Json(200, json!({"fields": {"password": CANARY}}))),
            "`handle` is missing",
        ),
        (
            Box::new(|| Reply::Json(200, json!({"handle": "h"}))),
            "`fields` is missing",
        ),
        (
            Box::new(|| {
                Reply::Json(
                    200,
                    json!({"handle": "h", "fields": {"password": CANARY}, "note": CANARY}),
                )
            }),
            "only the keys `handle` and `fields` are allowed",
        ),
        (
            Box::new(|| {
                Reply::Json(
                    200,
                    json!({"handle": "h", "fields": {"password": CANARY, "port": 5432}}),
                )
            }),
            "`fields` must map names to strings",
        ),
        (
            Box::new(|| Reply::Json(200, json!({"handle": 42, "fields": {"password": CANARY}}))),
            "`handle` must be a string",
        ),
        (
            Box::new(|| Reply::Json(200, json!(["h", {"password": CANARY}]))),
            "the response body is not a JSON object",
        ),
        (
            Box::new(raw("")),
            "the response body is empty; expected a JSON object",
        ),
        (
            Box::new(|| Reply::Json(200, json!({"handle": "", "fields": {"password": CANARY}}))),
            "`handle` is empty",
        ),
        (
            Box::new(|| Reply::Json(200, json!({"handle": "h", "fields": {"username": CANARY}}))),
            "`fields` lacks `password` that the config's `fields` list promises",
        ),
        (
            Box::new(|| {
                let mut bytes =
                    format!(r#"{{"handle": "h", "fields": {{"password": "{CANARY}"#).into_bytes();
                bytes.extend_from_slice(b"\xff\"}}");
                Reply::Raw(200, bytes)
            }),
            "the response body is not UTF-8",
        ),
    ];
    for (reply, want) in table {
        let reason = bad_output_reason(create_answering(reply).await);
        assert!(reason.contains(want), "want {want:?}, got {reason:?}");
    }
}

#[tokio::test]
async fn verify_and_retire_answers_must_be_json_objects() {
    let api = FakeApi::start(|request| match request.body["action"].as_str() {
        Some("verify") => Reply::Json(200, json!(["not", "an", "object"])),
        // 204 No Content is not an answer: the protocol's answer is `{}`.
        _ => Reply::Raw(204, Vec::new()),
    })
    .await;
    let provider = provider(api.url(), None);
    let made = credential("key-42", &[("password", CANARY)]);
    let reason = bad_output_reason(
        provider
            .verify(&target(), "rot-1", &made)
            .await
            .unwrap_err(),
    );
    assert_eq!(reason, "the response body is not a JSON object");
    let reason = bad_output_reason(provider.retire(&target(), "key-41").await.unwrap_err());
    assert_eq!(reason, "the response body is empty; expected a JSON object");

    let api = FakeApi::start(|_| Reply::Json(201, json!({"retired": true, "note": "fine"}))).await;
    assert_eq!(
        self::provider(api.url(), None)
            .retire(&target(), "key-41")
            .await
            .unwrap(),
        Outcome::Done
    );
}

#[tokio::test]
async fn an_answer_over_1_mib_is_refused() {
    let error = create_answering(|| {
        let mut body = format!(r#"{{"handle": "h", "fields": {{"password": "{CANARY}"#);
        body.push_str(&"x".repeat(2 * 1024 * 1024));
        body.push_str(r#""}}"#);
        Reply::Raw(200, body.into_bytes())
    })
    .await;
    let reason = bad_output_reason(error);
    assert!(reason.contains("more than 1 MiB"), "{reason}");
}

#[tokio::test]
async fn an_endless_answer_stops_being_read_at_1_mib() {
    // No Content-Length: only the cap ends the reading, long before the timeout.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut request = [0u8; 64 * 1024];
        let _ = socket.read(&mut request).await;
        let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let opening = format!(r#"{{"handle": "h", "fields": {{"password": "{CANARY}"#);
        let mut chunk = format!("{:x}\r\n{opening}\r\n", opening.len());
        let filler = CANARY.repeat(1000);
        loop {
            chunk.push_str(&format!("{:x}\r\n{filler}\r\n", filler.len()));
            if socket.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
            chunk.clear();
        }
    });
    let url = Url::parse(&format!("http://{addr}/rotate")).unwrap();
    let started = Instant::now();
    let error = provider_with(url, None, Duration::from_secs(30), None)
        .create(&target(), "rot-1", None)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let reason = bad_output_reason(error);
    assert!(reason.contains("more than 1 MiB"), "{reason}");
}
