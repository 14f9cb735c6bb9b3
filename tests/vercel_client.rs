//! `VercelClient` against the fake Vercel of `common::fake_vercel`: which token goes where,
//! the exact bodies, what every status and every malformed answer becomes, timeouts and
//! dropped connections, percent-encoded ids, and that no value or token leaks into an error.
//!
//! A few tests call the fake directly with reqwest, to prove that its schema check really
//! refuses what Vercel refuses; otherwise a client bug could pass against a lenient fake.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use url::Url;
use vercel_secret_rotator::config::{EnvironmentOverrides, VercelSettings};
use vercel_secret_rotator::error::{Classify, Persistence};
use vercel_secret_rotator::net::USER_AGENT;
use vercel_secret_rotator::secret::SecretString;
use vercel_secret_rotator::vercel::{
    InstallationRef, Notification, NotificationLevel, PushSecret, VercelClient, VercelError,
};

use crate::common::fake_vercel::{FakeVercel, RecordedBody, Scripted, StoredSecret};

const ACME: &str = "icfg_acme";
const ACME_TOKEN: &str = "tok-acme-4f1d8a0c9b";
const BETA: &str = "icfg_beta";
const BETA_TOKEN: &str = "tok-beta-77e2c5d103";

/// A fake with two installations (different tokens, two resources each) and a client for it.
struct Setup {
    fake: FakeVercel,
    client: VercelClient,
    acme_token: SecretString,
    beta_token: SecretString,
}

impl Setup {
    async fn new() -> Setup {
        Setup::with_timeout(Duration::from_secs(10)).await
    }

    async fn with_timeout(request_timeout: Duration) -> Setup {
        Setup::with_deadline(request_timeout, Duration::from_secs(60)).await
    }

    /// A client whose retries end after `retry_deadline`: for tests that want a transient
    /// failure to come back as an error.
    async fn with_deadline(request_timeout: Duration, retry_deadline: Duration) -> Setup {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        fake.add_installation(BETA, BETA_TOKEN);
        for (installation, resource) in [
            (ACME, "store_a1"),
            (ACME, "store_a2"),
            (BETA, "store_b1"),
            (BETA, "store_b2"),
        ] {
            fake.add_resource(installation, resource);
        }
        let client = client_with(&fake.url(), request_timeout, retry_deadline);
        Setup {
            fake,
            client,
            acme_token: secret(ACME_TOKEN),
            beta_token: secret(BETA_TOKEN),
        }
    }

    fn acme(&self) -> InstallationRef<'_> {
        InstallationRef {
            name: "acme",
            id: ACME,
            token: &self.acme_token,
        }
    }

    fn beta(&self) -> InstallationRef<'_> {
        InstallationRef {
            name: "beta",
            id: BETA,
            token: &self.beta_token,
        }
    }

    /// Pushes one plain secret to acme's `store_a1` and returns the error it must give.
    async fn push_err(&self, secrets: &[PushSecret]) -> VercelError {
        self.client
            .update_resource_secrets(&self.acme(), "store_a1", secrets)
            .await
            .expect_err("the push must fail")
    }
}

fn client_for(url: &str, request_timeout: Duration) -> VercelClient {
    client_with(url, request_timeout, Duration::from_secs(60))
}

fn client_with(url: &str, request_timeout: Duration, retry_deadline: Duration) -> VercelClient {
    VercelClient::new(&VercelSettings {
        api_url: Url::parse(url).expect("url"),
        request_timeout,
        retry_deadline,
        max_concurrent_requests: 8,
    })
    .expect("client")
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn plain(name: &str, value: &str) -> PushSecret {
    PushSecret {
        name: name.to_owned(),
        value: secret(value),
        prefix: None,
        environment_overrides: EnvironmentOverrides::default(),
    }
}

fn stored(value: &str) -> StoredSecret {
    StoredSecret {
        value: value.to_owned(),
        prefix: None,
        environment_overrides: BTreeMap::new(),
    }
}

fn redeploy() -> Notification {
    Notification {
        level: NotificationLevel::Warn,
        title: "Redeploy to use the new credentials".to_owned(),
        message: "The secrets of this resource were rotated.".to_owned(),
        href: Some(Url::parse("https://example.com/rotation").expect("url")),
    }
}

/// Display and Debug of an error, for leak checks.
fn shown(err: &VercelError) -> String {
    format!("{err}\n{err:?}\n{err:#?}")
}

#[tokio::test]
async fn each_request_carries_its_own_installations_token_only() {
    let s = Setup::new().await;
    let (acme, beta) = (s.acme(), s.beta());
    let calls = [
        (acme, "store_a1"),
        (acme, "store_a2"),
        (beta, "store_b1"),
        (beta, "store_b2"),
    ];
    // Concurrent, as the daemon runs them, so requests of both installations interleave.
    async fn push(
        client: &VercelClient,
        (installation, resource): (InstallationRef<'_>, &str),
    ) -> Result<(), VercelError> {
        let secrets = [plain("PGPASSWORD", &format!("pw-{resource}"))];
        client
            .update_resource_secrets(&installation, resource, &secrets)
            .await
    }
    let c = &s.client;
    let results = tokio::join!(
        push(c, calls[0]),
        push(c, calls[1]),
        push(c, calls[2]),
        push(c, calls[3])
    );
    for result in [results.0, results.1, results.2, results.3] {
        result.expect("push");
    }
    for (installation, resource) in &calls {
        s.client
            .notify_resource(installation, resource, &redeploy())
            .await
            .expect("notify");
        assert_eq!(
            s.fake.secrets(installation.id, resource)["PGPASSWORD"].value,
            format!("pw-{resource}")
        );
    }

    let requests = s.fake.requests();
    assert_eq!(requests.len(), 8);
    for request in &requests {
        let (own, other) = if request
            .path
            .starts_with(&format!("/v1/installations/{ACME}/"))
        {
            (ACME_TOKEN, BETA_TOKEN)
        } else {
            assert!(
                request
                    .path
                    .starts_with(&format!("/v1/installations/{BETA}/"))
            );
            (BETA_TOKEN, ACME_TOKEN)
        };
        let authorization = request.authorization.as_deref().expect("authorization");
        assert_eq!(authorization, format!("Bearer {own}"), "{}", request.path);
        assert!(!authorization.contains(other));
        assert_eq!(request.user_agent.as_deref(), Some(USER_AGENT));
    }
}

#[tokio::test]
async fn partial_push_merges_and_keeps_other_secrets() {
    let s = Setup::new().await;
    s.fake.set_secrets(
        ACME,
        "store_a1",
        BTreeMap::from([
            ("OWNED_BY_SOMEONE_ELSE".to_owned(), stored("keep-me")),
            ("PGPASSWORD".to_owned(), stored("old")),
        ]),
    );
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("PGPASSWORD", "new")])
        .await
        .expect("push");
    let secrets = s.fake.secrets(ACME, "store_a1");
    assert_eq!(secrets["OWNED_BY_SOMEONE_ELSE"], stored("keep-me"));
    assert_eq!(secrets["PGPASSWORD"], stored("new"));
    assert_eq!(secrets.len(), 2);
    // The other resources were not touched.
    assert!(s.fake.secrets(ACME, "store_a2").is_empty());
}

#[tokio::test]
async fn push_body_has_exactly_the_expected_keys() {
    let s = Setup::new().await;
    let full = PushSecret {
        name: "DATABASE_URL".to_owned(),
        value: secret("postgres://u:p@db/orders"),
        prefix: Some("ACME".to_owned()),
        environment_overrides: EnvironmentOverrides {
            production: Some(secret("postgres://u:p@prod/orders")),
            preview: None,
            development: Some(secret("postgres://u:p@dev/orders")),
        },
    };
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[full, plain("PGUSER", "u")])
        .await
        .expect("push");
    let requests = s.fake.requests();
    let [request] = requests.as_slice() else {
        panic!("one request, got {requests:?}");
    };
    assert_eq!(request.method, "PUT");
    assert_eq!(
        request.path,
        "/v1/installations/icfg_acme/resources/store_a1/secrets"
    );
    assert_eq!(request.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        request.body,
        RecordedBody::Json(json!({
            "secrets": [
                {"name": "DATABASE_URL", "value": "postgres://u:p@db/orders", "prefix": "ACME",
                 "environmentOverrides": {"production": "postgres://u:p@prod/orders",
                                          "development": "postgres://u:p@dev/orders"}},
                {"name": "PGUSER", "value": "u"}
            ],
            "partial": true
        }))
    );
    let stored = &s.fake.secrets(ACME, "store_a1")["DATABASE_URL"];
    assert_eq!(stored.prefix.as_deref(), Some("ACME"));
    assert_eq!(stored.environment_overrides.len(), 2);
}

/// The fake must refuse what Vercel's strict schema refuses, or the body tests prove nothing.
#[tokio::test]
async fn fake_enforces_the_secrets_schema() {
    let s = Setup::new().await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1/installations/{ACME}/resources/store_a1/secrets",
        s.fake.url()
    );
    let bearer = format!("Bearer {ACME_TOKEN}");
    let table: [(&str, &str, &str); 12] = [
        (
            r#"{"secrets":[{"name":"A","value":"x","prefix":null}]}"#,
            "application/json",
            "secrets[0].prefix",
        ),
        (
            r#"{"secrets":[{"name":"A","value":"x"}],"partial":true,"extra":1}"#,
            "application/json",
            "extra",
        ),
        (
            r#"{"secrets":[{"name":"A","value":"x","comment":"hi"}]}"#,
            "application/json",
            "secrets[0].comment",
        ),
        (
            r#"{"secrets":[{"name":"A","value":"x","environmentOverrides":{"staging":"y"}}]}"#,
            "application/json",
            "secrets[0].environmentOverrides.staging",
        ),
        (
            r#"{"secrets":[{"name":"A","value":"x","environmentOverrides":{"preview":null}}]}"#,
            "application/json",
            "secrets[0].environmentOverrides.preview",
        ),
        (
            r#"{"secrets":[{"name":"A","value":"x","environmentOverrides":null}]}"#,
            "application/json",
            "secrets[0].environmentOverrides",
        ),
        (
            r#"{"secrets":[{"name":"A"}]}"#,
            "application/json",
            "secrets[0].value",
        ),
        (
            r#"{"secrets":[{"name":"A","value":7}]}"#,
            "application/json",
            "secrets[0].value",
        ),
        (
            r#"{"secrets":[],"partial":"yes"}"#,
            "application/json",
            "partial",
        ),
        (r#"{"partial":true}"#, "application/json", "secrets"),
        (
            r#"{"secrets":[{"name":"A","value":"x"}"#,
            "application/json",
            "not valid JSON",
        ),
        (
            r#"{"secrets":[{"name":"A","value":"x"}]}"#,
            "text/plain",
            "application/json",
        ),
    ];
    for (body, content_type, names) in table {
        let response = http
            .put(&url)
            .header("authorization", &bearer)
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.expect("json error body");
        assert_eq!(answer["error"]["code"], "bad_request", "{body}");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(names), "{body}: {message}");
    }
    assert!(
        s.fake.secrets(ACME, "store_a1").is_empty(),
        "nothing refused was stored"
    );

    // And the fake's own semantics: without `partial`, the sent list replaces everything.
    s.fake.set_secrets(
        ACME,
        "store_a1",
        BTreeMap::from([("OLD".to_owned(), stored("o"))]),
    );
    let response = http
        .put(&url)
        .header("authorization", &bearer)
        .header("content-type", "application/json")
        .body(r#"{"secrets":[{"name":"NEW","value":"n"}]}"#)
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 201);
    assert_eq!(
        s.fake.secrets(ACME, "store_a1"),
        BTreeMap::from([("NEW".to_owned(), stored("n"))])
    );
}

#[tokio::test]
async fn fake_enforces_the_notification_schema() {
    let s = Setup::new().await;
    let http = reqwest::Client::new();
    let url = format!(
        "{}/v1/installations/{ACME}/resources/store_a1",
        s.fake.url()
    );
    for (body, names) in [
        (
            json!({"notification": {"level": "loud", "title": "t"}}),
            "notification.level",
        ),
        (
            json!({"notification": {"level": "info"}}),
            "notification.title",
        ),
        (
            json!({"notification": {"level": "info", "title": "t", "message": null}}),
            "notification.message",
        ),
        (
            json!({"notification": {"level": "info", "title": "t", "href": "/relative"}}),
            "notification.href",
        ),
        (
            json!({"notification": {"level": "info", "title": "t"}, "colour": "red"}),
            "colour",
        ),
    ] {
        let response = http
            .patch(&url)
            .bearer_auth(ACME_TOKEN)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await.expect("json");
        let message = answer["error"]["message"].as_str().expect("message");
        assert!(message.contains(names), "{body}: {message}");
    }
    assert!(s.fake.notifications(ACME, "store_a1").is_empty());
}

#[tokio::test]
async fn notification_patch_sends_only_the_notification() {
    let s = Setup::new().await;
    s.client
        .notify_resource(&s.beta(), "store_b2", &redeploy())
        .await
        .expect("notify");
    let requests = s.fake.requests();
    let [request] = requests.as_slice() else {
        panic!("one request, got {requests:?}");
    };
    assert_eq!(request.method, "PATCH");
    assert_eq!(
        request.path,
        "/v1/installations/icfg_beta/resources/store_b2"
    );
    assert_eq!(
        request.authorization.as_deref(),
        Some("Bearer tok-beta-77e2c5d103")
    );
    assert_eq!(
        request.body.json(),
        Some(&json!({"notification": {
            "level": "warn",
            "title": "Redeploy to use the new credentials",
            "message": "The secrets of this resource were rotated.",
            "href": "https://example.com/rotation"
        }}))
    );
    let notifications = s.fake.notifications(BETA, "store_b2");
    assert_eq!(notifications.len(), 1);
    assert_eq!(notifications[0].level, "warn");

    // Any 2xx is success for the PATCH, with or without a body.
    let minimal = Notification {
        level: NotificationLevel::Info,
        title: "t".to_owned(),
        message: String::new(),
        href: None,
    };
    s.fake.script(BETA, "store_b2", vec![Scripted::status(204)]);
    s.client
        .notify_resource(&s.beta(), "store_b2", &minimal)
        .await
        .expect("204 is success");
    s.client
        .notify_resource(&s.beta(), "store_b2", &minimal)
        .await
        .expect("notify");
    assert_eq!(
        s.fake.requests()[2].body.json(),
        Some(&json!({"notification": {"level": "info", "title": "t"}}))
    );
}

#[tokio::test]
async fn permanent_statuses_carry_status_code_and_message() {
    let s = Setup::new().await;
    let table = [
        (
            400,
            "bad_request",
            "Invalid request: `secrets[0].name` is invalid.",
            "Vercel rejected updating the secrets of resource \"store_a1\"",
        ),
        (
            401,
            "forbidden",
            "Not authorized",
            "Vercel refused the token of installation \"acme\" (icfg_acme) with 401 Unauthorized (forbidden: Not authorized)",
        ),
        (
            403,
            "forbidden",
            "You do not have permission",
            "lacks permission",
        ),
        (
            404,
            "not_found",
            "Resource not found",
            "unknown installation or resource",
        ),
        (
            409,
            "conflict",
            "A concurrent update is in progress",
            "409 Conflict (conflict: A concurrent update is in progress)",
        ),
        (
            410,
            "gone",
            "The resource was deleted",
            "gone: the installation or resource was removed; the policy stays stopped until the config changes",
        ),
        (
            422,
            "unprocessable",
            "Cannot update secrets of a suspended resource",
            "422 Unprocessable Entity",
        ),
    ];
    for (status, code, message, phrase) in table {
        s.fake.script(
            ACME,
            "store_a1",
            vec![Scripted::vercel_error(status, code, message)],
        );
        let err = s.push_err(&[plain("PGPASSWORD", "pw")]).await;
        assert!(matches!(err, VercelError::Status { .. }), "{err:?}");
        assert_eq!(err.status(), Some(status));
        assert_eq!(err.code(), Some(code));
        assert_eq!(err.message(), Some(message));
        assert_eq!(err.persistence(), Persistence::Permanent, "{status}");
        let text = err.to_string();
        assert!(text.contains(phrase), "{status}: {text}");
        assert!(text.contains(message), "{status}: {text}");
        assert!(
            text.contains("icfg_acme") && text.contains("store_a1"),
            "{text}"
        );
    }
}

#[tokio::test]
async fn the_fakes_own_refusals_map_to_permanent_errors() {
    let s = Setup::new().await;
    // Acme's path with beta's token: refused, and it names acme.
    let crossed = InstallationRef {
        token: &s.beta_token,
        ..s.acme()
    };
    let err = s
        .client
        .update_resource_secrets(&crossed, "store_a1", &[plain("A", "x")])
        .await
        .expect_err("wrong token");
    assert_eq!((err.status(), err.code()), (Some(401), Some("forbidden")));
    assert!(
        err.to_string().contains("check that installation's token"),
        "{err}"
    );
    assert!(!err.is_transient());

    for (installation, resource) in [(s.acme(), "store_zz"), (s.acme(), "store_b1")] {
        let err = s
            .client
            .update_resource_secrets(&installation, resource, &[plain("A", "x")])
            .await
            .expect_err("unknown resource");
        assert_eq!((err.status(), err.code()), (Some(404), Some("not_found")));
        assert!(!err.is_transient());
    }
    let nobody = InstallationRef {
        name: "nobody",
        id: "icfg_nobody",
        token: &s.acme_token,
    };
    let err = s
        .client
        .notify_resource(&nobody, "store_a1", &redeploy())
        .await
        .expect_err("unknown installation");
    assert_eq!(err.status(), Some(404));
    assert!(
        err.to_string().contains("sending a dashboard notification"),
        "{err}"
    );
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retried_until_the_deadline() {
    let s = Setup::with_deadline(Duration::from_secs(5), Duration::from_millis(800)).await;
    // 429 last: it rests the endpoint, which would eat into the next call's deadline.
    for status in [500, 502, 503, 504, 429] {
        s.fake.clear_requests();
        s.fake
            .script(ACME, "store_a1", vec![Scripted::status(status); 200]);
        let started = Instant::now();
        let err = s.push_err(&[plain("A", "x")]).await;
        let elapsed = started.elapsed();
        s.fake.clear_scripts();
        // The last answer, still classified.
        assert_eq!(err.status(), Some(status));
        assert_eq!(err.persistence(), Persistence::Transient, "{status}");
        let attempts = s.fake.requests().len();
        assert!(attempts >= 2, "{status}: {attempts} attempts");
        assert!(elapsed < Duration::from_secs(3), "{status}: {elapsed:?}");
        let text = err.to_string();
        let phrase = if status == 429 {
            "rate limited"
        } else {
            "server error"
        };
        assert!(text.contains(phrase), "{text}");
    }
    // 408 is transient for the rotation, but not retried here: one attempt. A fresh client:
    // the last 429 rested this one's endpoint for its backoff, which jitter can make several
    // seconds long (a fixed 1 s sleep here failed once in a CI run).
    let s = Setup::with_deadline(Duration::from_secs(5), Duration::from_millis(800)).await;
    s.fake.script(ACME, "store_a1", vec![Scripted::status(408)]);
    let err = s.push_err(&[plain("A", "x")]).await;
    assert_eq!(err.persistence(), Persistence::Transient);
    assert_eq!(s.fake.requests().len(), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_with_the_same_body_until_success() {
    let s = Setup::with_timeout(Duration::from_millis(300)).await;
    s.fake.script(
        ACME,
        "store_a1",
        vec![
            Scripted::status(503),
            Scripted::status(500).json(&json!({"error": {"message": "oops"}})),
            Scripted::drop_connection(),
            Scripted::status(502),
            Scripted::hang(),
            Scripted::drop_mid_body(504, "{\"error\":{\"code\":\"gateway\"}}"),
            Scripted::status(429),
        ],
    );
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("PGPASSWORD", "pw-1")])
        .await
        .expect("the eighth attempt gets through");
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 8);
    for r in &requests {
        assert_eq!(r.body, requests[0].body, "the same body every attempt");
        assert_eq!(r.authorization, requests[0].authorization);
    }
    assert_eq!(s.fake.secrets(ACME, "store_a1")["PGPASSWORD"].value, "pw-1");

    // The PATCH retries too.
    s.fake
        .script(BETA, "store_b1", vec![Scripted::status(503); 2]);
    s.client
        .notify_resource(&s.beta(), "store_b1", &redeploy())
        .await
        .expect("notify after two 503s");
    assert_eq!(s.fake.notifications(BETA, "store_b1").len(), 1);
}

#[tokio::test]
async fn a_429_waits_for_retry_after_and_holds_back_the_whole_endpoint() {
    let s = Setup::new().await;
    // One request permit: the PUT waiting out the rest must not hold it from the PATCH.
    let client = VercelClient::new(&VercelSettings {
        api_url: Url::parse(&s.fake.url()).expect("url"),
        request_timeout: Duration::from_secs(5),
        retry_deadline: Duration::from_secs(60),
        max_concurrent_requests: 1,
    })
    .expect("client");
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::status(429).header("Retry-After", "1")],
    );
    let started = Instant::now();
    let (acme, pushed) = (s.acme(), [plain("A", "x")]);
    let first = client.update_resource_secrets(&acme, "store_a1", &pushed);
    let second = async {
        // Starts after the 429 came back: it waits for the same reset, without a 429 of its own.
        tokio::time::sleep(Duration::from_millis(300)).await;
        client
            .update_resource_secrets(&s.beta(), "store_b1", &[plain("A", "y")])
            .await
    };
    let other_endpoint = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let result = client
            .notify_resource(&s.acme(), "store_a2", &redeploy())
            .await;
        (result, started.elapsed())
    };
    let (first, second, (notified, notify_at)) = tokio::join!(first, second, other_endpoint);
    first.expect("after Retry-After");
    second.expect("after the pause");
    notified.expect("the PATCH is limited separately");
    assert!(notify_at < Duration::from_millis(900), "{notify_at:?}");
    let requests = s.fake.requests();
    let puts: Vec<_> = requests.iter().filter(|r| r.method == "PUT").collect();
    assert_eq!(puts.len(), 3, "{puts:?}");
    for later in &puts[1..] {
        let after = later.at.duration_since(puts[0].at);
        assert!(after >= Duration::from_millis(950), "{after:?}");
    }
}

/// 122 pushes, 32 under way and 16 on the wire at once (as `run --once` with
/// `max-concurrent-requests = 16`), against a 20/s token bucket that says nothing on success
/// and, on its 429s, gives no limit: the client learns a pace from the refusals instead of
/// rushing in after each pause (regression: 115 429s for 122 pushes). Counts, not times.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_bucket_without_a_window_is_met_with_few_429s() {
    const PUSHES: usize = 122;
    let fake = FakeVercel::start().await;
    fake.add_installation(ACME, ACME_TOKEN);
    for i in 0..PUSHES {
        fake.add_resource(ACME, &format!("store_{i:03}"));
    }
    fake.set_bare_token_bucket(20);
    let client = VercelClient::new(&VercelSettings {
        api_url: Url::parse(&fake.url()).expect("url"),
        request_timeout: Duration::from_secs(10),
        retry_deadline: Duration::from_secs(120),
        max_concurrent_requests: 16,
    })
    .expect("client");
    let under_way = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut tasks = Vec::new();
    for i in 0..PUSHES {
        let (client, slot) = (
            client.clone(),
            under_way.clone().acquire_owned().await.expect("slot"),
        );
        tasks.push(tokio::spawn(async move {
            let _slot = slot;
            let token = secret(ACME_TOKEN);
            let acme = InstallationRef {
                name: "acme",
                id: ACME,
                token: &token,
            };
            client
                .update_resource_secrets(&acme, &format!("store_{i:03}"), &[plain("A", "v")])
                .await
        }));
    }
    for task in tasks {
        task.await.expect("task").expect("pushed");
    }
    let refused = fake
        .answers()
        .iter()
        .filter(|a| a.status == Some(429))
        .count();
    for i in 0..PUSHES {
        assert_eq!(fake.secrets(ACME, &format!("store_{i:03}"))["A"].value, "v");
    }
    assert!(refused <= PUSHES / 2, "{refused} answers were 429s");
}

#[tokio::test]
async fn a_wait_past_the_deadline_fails_at_once() {
    let s = Setup::with_deadline(Duration::from_secs(1), Duration::from_secs(3)).await;
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::status(429).header("Retry-After", "60")],
    );
    let started = Instant::now();
    let err = s.push_err(&[plain("A", "x")]).await;
    assert_eq!(err.status(), Some(429));
    assert_eq!(err.retry_after(), Some(Duration::from_secs(60)));
    // Another call to the endpoint is not even attempted: the limiter holds it back 60 s.
    let err = s
        .client
        .update_resource_secrets(&s.beta(), "store_b1", &[plain("A", "x")])
        .await
        .expect_err("throttled");
    assert!(matches!(err, VercelError::Throttled { .. }), "{err:?}");
    assert!(err.is_transient());
    assert!(err.retry_after() > Some(Duration::from_secs(55)), "{err:?}");
    assert!(err.to_string().contains("vercel.retry-deadline"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(s.fake.requests().len(), 1);
}

#[tokio::test]
async fn a_trickling_error_body_ends_at_the_request_timeout() {
    let s = Setup::with_timeout(Duration::from_millis(500)).await;
    s.fake
        .script(ACME, "store_a1", vec![Scripted::trickle(400)]);
    let started = Instant::now();
    let err = s.push_err(&[plain("A", "x")]).await;
    let elapsed = started.elapsed();
    assert_eq!(err.status(), Some(400), "{err:?}");
    assert!(
        elapsed >= Duration::from_millis(450) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    // A retryable status that trickles is retried, each attempt cut at the timeout.
    let s = Setup::with_deadline(Duration::from_millis(300), Duration::from_secs(1)).await;
    s.fake
        .script(ACME, "store_a1", vec![Scripted::trickle(503); 50]);
    let started = Instant::now();
    let err = s.push_err(&[plain("A", "x")]).await;
    assert_eq!(err.status(), Some(503));
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn retry_after_comes_from_header_date_body_or_rate_limit_header() {
    let s = Setup::new().await;
    // Each wait is longer than the deadline, so the 429 comes back at once with its hint; a
    // fresh client each time, as the limiter would otherwise hold the next call back.
    let push_err = || async {
        client_with(
            &s.fake.url(),
            Duration::from_secs(1),
            Duration::from_secs(5),
        )
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect_err("rate limited")
    };
    let rate_limited = || {
        Scripted::status(429)
            .json(&json!({"error": {"code": "rate_limited", "message": "slow down"}}))
    };

    s.fake.script(
        ACME,
        "store_a1",
        vec![rate_limited().header("Retry-After", "7")],
    );
    let err = push_err().await;
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
    assert_eq!(err.code(), Some("rate_limited"));
    assert!(err.to_string().ends_with("retry in 7s"), "{err}");

    let at = chrono::Utc::now() + chrono::TimeDelta::seconds(30);
    let date = at.format("%a, %d %b %Y %H:%M:%S GMT").to_string();
    s.fake.script(
        ACME,
        "store_a1",
        vec![rate_limited().header("Retry-After", &date)],
    );
    let wait = push_err().await.retry_after().expect("date");
    assert!(
        wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );

    let reset_ms = (chrono::Utc::now() + chrono::TimeDelta::seconds(12)).timestamp_millis();
    let body = json!({"error": {"code": "rate_limited", "message": "slow down",
        "limit": {"remaining": 0, "reset": reset_ms / 1000, "resetMs": reset_ms, "total": 6}}});
    s.fake
        .script(ACME, "store_a1", vec![Scripted::status(429).json(&body)]);
    let wait = push_err().await.retry_after().expect("resetMs");
    assert!(
        wait > Duration::from_secs(10) && wait <= Duration::from_secs(12),
        "{wait:?}"
    );

    let reset = (chrono::Utc::now() + chrono::TimeDelta::seconds(20)).timestamp();
    s.fake.script(
        ACME,
        "store_a1",
        vec![rate_limited().header("X-RateLimit-Reset", &reset.to_string())],
    );
    let wait = push_err().await.retry_after().expect("x-ratelimit-reset");
    assert!(
        wait > Duration::from_secs(17) && wait <= Duration::from_secs(20),
        "{wait:?}"
    );

    // No hint at all: backoff, until the deadline; the last 429 has no hint either.
    let short = Setup::with_deadline(Duration::from_secs(1), Duration::from_millis(800)).await;
    short
        .fake
        .script(ACME, "store_a1", vec![rate_limited(); 100]);
    assert_eq!(short.push_err(&[plain("A", "x")]).await.retry_after(), None);
    assert!(short.fake.requests().len() >= 2);
}

#[tokio::test]
async fn malformed_error_bodies_give_clean_errors() {
    let s = Setup::with_deadline(Duration::from_secs(5), Duration::from_millis(500)).await;
    let html = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>";
    let huge = {
        // Starts like Vercel's shape so that reading it whole would put 5 MiB in the message.
        let mut body = br#"{"error":{"code":"bad_request","message":""#.to_vec();
        body.resize(5 * 1024 * 1024, b'A');
        body.extend_from_slice(br#""}}"#);
        body
    };
    let long_message = "M".repeat(50_000);
    let table = [
        (
            Scripted::status(502)
                .header("content-type", "text/html")
                .body(html),
            502,
        ),
        (Scripted::status(400), 400),
        (
            Scripted::status(400)
                .header("content-type", "application/json")
                .body("not json at all {"),
            400,
        ),
        (
            Scripted::status(400).json(&json!({"error": "a string"})),
            400,
        ),
        (Scripted::status(413).json(&json!([1, 2, 3])), 413),
        (
            Scripted::status(500)
                .header("content-type", "application/json")
                .body(huge),
            500,
        ),
    ];
    for (scripted, status) in table {
        // Enough copies for every retry of a retryable status within the deadline.
        s.fake.script(ACME, "store_a1", vec![scripted; 20]);
        let started = Instant::now();
        let err = s.push_err(&[plain("A", "x")]).await;
        s.fake.clear_scripts();
        assert_eq!(err.status(), Some(status), "{err:?}");
        assert_eq!((err.code(), err.message()), (None, None), "{err:?}");
        let text = shown(&err);
        assert!(text.len() < 2_000, "{} bytes: {}", text.len(), &text[..200]);
        assert!(!text.contains("nginx") && !text.contains("AAAA"), "{text}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    // A valid but very long message is kept, cut to a readable length.
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::vercel_error(400, "bad_request", &long_message)],
    );
    let err = s.push_err(&[plain("A", "x")]).await;
    let message = err.message().expect("message");
    assert!(message.len() <= 600 && message.starts_with("MMMM") && message.ends_with('…'));
}

#[tokio::test]
async fn success_statuses() {
    let s = Setup::new().await;
    // 201 with a body is still success: the body is ignored.
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::status(201).json(&json!({"unexpected": "body"}))],
    );
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect("201 with a body");

    // Any 2xx says the change was made: success for the PUT and the PATCH alike.
    for status in [200, 202, 204] {
        s.fake
            .script(ACME, "store_a1", vec![Scripted::status(status); 2]);
        s.client
            .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
            .await
            .unwrap_or_else(|e| panic!("{status} is a push: {e}"));
        s.client
            .notify_resource(&s.acme(), "store_a1", &redeploy())
            .await
            .unwrap_or_else(|e| panic!("{status} is a notification: {e}"));
    }
    assert_eq!(s.fake.requests().len(), 7, "each answered at once");
}

/// An answer that says neither yes nor no (a redirect, which is not followed; a 408) fails
/// the call, and says Vercel may hold the values: the caller must not retire the new
/// credential. A definite refusal says it may not.
#[tokio::test]
async fn unclear_answers_may_have_been_applied() {
    let s = Setup::with_deadline(Duration::from_secs(5), Duration::from_millis(300)).await;
    for (scripted, unclear) in [
        (
            Scripted::status(302).header("location", "https://elsewhere.example/"),
            true,
        ),
        (Scripted::status(301), true),
        (Scripted::status(307), true),
        (Scripted::status(308), true),
        (Scripted::status(408), true),
        (Scripted::status(400), false),
        (Scripted::status(409), false),
        (Scripted::status(422), false),
    ] {
        let status = scripted.status;
        s.fake.clear_requests();
        s.fake.script(ACME, "store_a1", vec![scripted]);
        let err = s.push_err(&[plain("A", "x")]).await;
        assert_eq!(err.status(), Some(status));
        assert_eq!(err.may_have_applied(), unclear, "{status}: {err}");
        assert_eq!(
            s.fake.requests().len(),
            1,
            "{status}: not retried, not followed"
        );
    }
    // A 503 until the deadline: unclear too.
    s.fake
        .script(ACME, "store_a1", vec![Scripted::status(503); 50]);
    let err = s.push_err(&[plain("A", "x")]).await;
    s.fake.clear_scripts();
    assert!(err.may_have_applied(), "{err}");
}

#[tokio::test]
async fn a_hanging_answer_times_out_as_transient() {
    let s = Setup::with_deadline(Duration::from_millis(300), Duration::from_millis(700)).await;
    s.fake.script(ACME, "store_a1", vec![Scripted::hang(); 20]);
    let started = Instant::now();
    let err = s.push_err(&[plain("A", "x")]).await;
    let elapsed = started.elapsed();
    s.fake.clear_scripts();
    assert!(err.is_timeout(), "{err:?}");
    assert!(matches!(err, VercelError::Transport { timeout: true, .. }));
    assert_eq!(err.persistence(), Persistence::Transient);
    assert!(
        elapsed >= Duration::from_millis(600) && elapsed < Duration::from_secs(3),
        "{elapsed:?}"
    );
    assert!(s.fake.requests().len() >= 2, "retried");
    assert!(err.to_string().contains("vercel.request-timeout"), "{err}");
    assert!(
        !err.to_string().contains("127.0.0.1"),
        "no URL in the detail: {err}"
    );

    // One hang, then the retry gets through.
    s.fake.script(ACME, "store_a1", vec![Scripted::hang()]);
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect("retried after the timeout");

    // A slow answer within the timeout is fine.
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::normal().delay(Duration::from_millis(100))],
    );
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect("slow but in time");
}

#[tokio::test]
async fn dropped_and_refused_connections_are_transient() {
    let s = Setup::with_deadline(Duration::from_secs(5), Duration::from_millis(600)).await;
    s.fake
        .script(ACME, "store_a1", vec![Scripted::drop_connection(); 50]);
    let err = s.push_err(&[plain("A", "x")]).await;
    s.fake.clear_scripts();
    assert!(
        matches!(err, VercelError::Transport { timeout: false, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    // One drop: the retry gets through on a new connection.
    s.fake.clear_requests();
    s.fake
        .script(ACME, "store_a1", vec![Scripted::drop_connection()]);
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect("after a drop");
    assert_eq!(s.fake.requests().len(), 2);
    // The change was made but the answer lost: the retry sends the same body, same state.
    s.fake
        .script(ACME, "store_a1", vec![Scripted::handle_then_drop()]);
    s.client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "z")])
        .await
        .expect("after a lost answer");
    assert_eq!(s.fake.secrets(ACME, "store_a1")["A"].value, "z");

    // Nothing listens on a port just freed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let client = client_with(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(5),
        Duration::from_millis(500),
    );
    let err = client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect_err("refused");
    assert!(
        matches!(err, VercelError::Transport { timeout: false, .. }),
        "{err:?}"
    );
    assert!(err.is_transient());
    assert!(
        err.to_string().starts_with("could not reach Vercel"),
        "{err}"
    );
}

#[tokio::test]
async fn ids_that_need_percent_encoding_reach_the_fake_intact() {
    let s = Setup::new().await;
    let id = "icfg/a b?c#d%e";
    let resource = "res/1 ?#%2F";
    s.fake.add_installation(id, "tok-odd");
    s.fake.add_resource(id, resource);
    let token = secret("tok-odd");
    let installation = InstallationRef {
        name: "odd",
        id,
        token: &token,
    };
    s.client
        .update_resource_secrets(&installation, resource, &[plain("A", "x")])
        .await
        .expect("push");
    s.client
        .notify_resource(&installation, resource, &redeploy())
        .await
        .expect("notify");
    assert_eq!(s.fake.secrets(id, resource)["A"].value, "x");
    let paths: Vec<String> = s.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/installations/icfg%2Fa%20b%3Fc%23d%25e/resources/res%2F1%20%3F%23%252F/secrets",
            "/v1/installations/icfg%2Fa%20b%3Fc%23d%25e/resources/res%2F1%20%3F%23%252F",
        ]
    );
}

#[tokio::test]
async fn a_base_url_with_a_path_keeps_it() {
    let s = Setup::new().await;
    let client = client_for(&format!("{}/", s.fake.url()), Duration::from_secs(5));
    client
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect("trailing slash");
    let prefixed = client_for(&format!("{}/proxy/", s.fake.url()), Duration::from_secs(5));
    let err = prefixed
        .update_resource_secrets(&s.acme(), "store_a1", &[plain("A", "x")])
        .await
        .expect_err("the fake serves no /proxy");
    assert_eq!(err.status(), Some(404));
    let paths: Vec<String> = s.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        [
            "/v1/installations/icfg_acme/resources/store_a1/secrets",
            "/proxy/v1/installations/icfg_acme/resources/store_a1/secrets",
        ]
    );
}

#[tokio::test]
async fn an_echoed_secret_value_is_scrubbed_from_errors() {
    let s = Setup::new().await;
    let canary = "canary-9f8e7d6c5b4a";
    let override_canary = "override-canary-1a2b3c";
    let secrets = [PushSecret {
        name: "PGPASSWORD".to_owned(),
        value: secret(canary),
        prefix: None,
        environment_overrides: EnvironmentOverrides {
            preview: Some(secret(override_canary)),
            ..EnvironmentOverrides::default()
        },
    }];
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::vercel_error(
            400,
            &format!("bad_{canary}"),
            &format!("value {canary:?} is invalid (preview: {override_canary})"),
        )],
    );
    let err = s.push_err(&secrets).await;
    let text = shown(&err);
    assert!(!text.contains("canary"), "{text}");
    assert_eq!(
        err.message(),
        Some("value \"[REDACTED]\" is invalid (preview: [REDACTED])")
    );
}

#[tokio::test]
async fn the_token_never_appears_in_an_error() {
    let s = Setup::with_deadline(Duration::from_millis(300), Duration::from_millis(500)).await;
    let echo = format!("token {ACME_TOKEN} is not valid\nsecond line");
    let answers = vec![
        Scripted::vercel_error(401, "forbidden", &echo),
        Scripted::vercel_error(403, ACME_TOKEN, &echo),
        Scripted::status(500).json(&json!({"error": {"message": echo}})),
        Scripted::drop_connection(),
        Scripted::hang(),
    ];
    let count = answers.len();
    let mut errors = Vec::new();
    for answer in answers {
        // Enough copies for every retry within the deadline.
        s.fake.script(ACME, "store_a1", vec![answer; 20]);
        errors.push(s.push_err(&[plain("A", "x")]).await);
        s.fake.clear_scripts();
    }
    // The fake's own 401, for a token it does not know.
    let stranger = secret("tok-stranger-5a5a5a");
    let err = s
        .client
        .update_resource_secrets(
            &InstallationRef {
                token: &stranger,
                ..s.acme()
            },
            "store_a1",
            &[plain("A", "x")],
        )
        .await
        .expect_err("401");
    errors.push(err);
    // A token that cannot be a header value is refused before anything is sent.
    let sent_before = s.fake.requests().len();
    let broken = secret(&format!("{ACME_TOKEN}\n"));
    let err = s
        .client
        .update_resource_secrets(
            &InstallationRef {
                token: &broken,
                ..s.acme()
            },
            "store_a1",
            &[plain("A", "x")],
        )
        .await
        .expect_err("invalid header");
    assert!(matches!(err, VercelError::InvalidToken { .. }), "{err:?}");
    errors.push(err);

    for err in &errors {
        let text = shown(err);
        for token in [ACME_TOKEN, "tok-stranger", BETA_TOKEN] {
            assert!(!text.contains(token), "{text}");
        }
        assert!(!err.to_string().contains('\n'), "one line: {err}");
    }
    assert_eq!(errors.len(), count + 2);
    assert_eq!(
        s.fake.requests().len(),
        sent_before,
        "the broken token was never sent"
    );
}

#[tokio::test]
async fn latency_and_global_scripts_apply_to_every_resource() {
    let s = Setup::new().await;
    s.fake.set_latency(Duration::from_millis(150));
    s.fake
        .script_all(vec![Scripted::status(503), Scripted::status(503)]);
    s.fake.script(BETA, "store_b1", vec![Scripted::normal()]);
    let started = Instant::now();
    // beta's own queue comes first; the two global answers go to the next two requests.
    s.client
        .update_resource_secrets(&s.beta(), "store_b1", &[plain("A", "x")])
        .await
        .expect("own script: normal");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(s.fake.requests().len(), 1);
    // Both global 503s go to acme's store_a2 call, whose third attempt gets through.
    s.client
        .update_resource_secrets(&s.acme(), "store_a2", &[plain("A", "x")])
        .await
        .expect("after two global 503s");
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 4);
    assert!(requests[1..].iter().all(|r| r.path.contains("store_a2")));
    let statuses: Vec<Option<u16>> = s.fake.answers().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(201), Some(503), Some(503), Some(201)]);
    assert!(requests.windows(2).all(|w| w[0].at <= w[1].at));
}

// ---------------------------------------------------------------------------------------------
// The listing: `GET /v1/installations/{id}/resources`

use crate::common::fake_vercel::Listing;
use vercel_secret_rotator::resource::MetadataValue;

/// A `200` listing body as Vercel could send it, with fields the client does not know.
fn listing_body(resources: Value) -> Scripted {
    Scripted::status(200)
        .header("content-type", "application/json; charset=utf-8")
        .json(&json!({"resources": resources, "pagination": {"next": null}}))
}

#[tokio::test]
async fn listing_sends_one_get_with_the_installations_token() {
    let s = Setup::new().await;
    let listed = s.client.list_resources(&s.beta()).await.expect("listed");
    let ids: Vec<&str> = listed.iter().map(|r| r.partner_id.as_str()).collect();
    assert_eq!(ids, ["store_b1", "store_b2"]);
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.path, format!("/v1/installations/{BETA}/resources"));
    assert_eq!(
        request.authorization.as_deref(),
        Some(format!("Bearer {BETA_TOKEN}").as_str())
    );
    assert_eq!(request.user_agent.as_deref(), Some(USER_AGENT));
    assert!(matches!(&request.body, RecordedBody::Text(t) if t.is_empty()));
}

#[tokio::test]
async fn listing_parses_every_metadata_kind_and_ignores_unknown_fields() {
    let s = Setup::new().await;
    s.fake.script_list(
        ACME,
        vec![listing_body(json!([
            {"partnerId": "store_a1", "internalId": "res_1", "name": "orders",
             "productId": "iap_pg", "status": "ready", "billingPlanId": "bp_1",
             "notification": {"level": "info", "title": "hi"},
             "protocolSettings": {"experimentation": {"edgeConfigId": "ecfg_1"}},
             "someFieldFromTheFuture": {"deep": [1, 2, {"x": null}]},
             "metadata": {"region": "eu", "size": 3, "ratio": 1.5, "ha": true,
                          "zones": ["a", "b"], "ports": [5432, 6432]}},
            {"partnerId": "store_a2", "internalId": "res_2", "name": "events",
             "productId": "iap_pg", "status": "hibernating"},
        ]))],
    );
    let listed = s.client.list_resources(&s.acme()).await.expect("listed");
    assert_eq!(listed.len(), 2);
    let first = &listed[0];
    assert_eq!(
        (
            first.partner_id.as_str(),
            first.internal_id.as_str(),
            first.name.as_str(),
            first.product_id.as_str(),
            first.status.as_deref()
        ),
        ("store_a1", "res_1", "orders", "iap_pg", Some("ready"))
    );
    let n = |v: Value| match v {
        Value::Number(n) => n,
        other => panic!("not a number: {other}"),
    };
    let want: vercel_secret_rotator::resource::Metadata = [
        ("region", MetadataValue::String("eu".into())),
        ("size", MetadataValue::Number(n(json!(3)))),
        ("ratio", MetadataValue::Number(n(json!(1.5)))),
        ("ha", MetadataValue::Bool(true)),
        (
            "zones",
            MetadataValue::Strings(vec!["a".into(), "b".into()]),
        ),
        (
            "ports",
            MetadataValue::Numbers(vec![n(json!(5432)), n(json!(6432))]),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(first.metadata, want);
    // A status outside today's enum is kept as written; no metadata is an empty map.
    assert_eq!(listed[1].status.as_deref(), Some("hibernating"));
    assert!(listed[1].metadata.is_empty());
    let info = listed[0].clone().into_info(&ACME.into());
    assert_eq!(&*info.installation_id, ACME);
    assert_eq!(&*info.id, "store_a1");
    assert_eq!(info.internal_id.as_deref(), Some("res_1"));
    assert!(info.is_discovered());
}

#[tokio::test]
async fn a_listing_that_does_not_parse_is_an_error_that_does_not_quote_it() {
    let s = Setup::new().await;
    for body in [
        json!([{"partnerId": "canary-listing-91f3", "internalId": "res_1", "name": "n"}]),
        json!([{"partnerId": 7, "internalId": "canary-listing-91f3", "name": "n", "productId": "p"}]),
        json!("canary-listing-91f3"),
    ] {
        s.fake.script_list(ACME, vec![listing_body(body)]);
        let err = s
            .client
            .list_resources(&s.acme())
            .await
            .expect_err("bad body");
        assert!(matches!(err, VercelError::InvalidAnswer { .. }), "{err:?}");
        let text = shown(&err);
        assert!(!text.contains("canary"), "{text}");
        assert!(!text.contains(ACME_TOKEN), "{text}");
        assert!(err.to_string().contains("listing the resources"), "{err}");
        assert!(err.to_string().contains("\"acme\""), "{err}");
    }
    s.fake.script_list(
        ACME,
        vec![Scripted::status(200).body("<html>canary-listing-91f3</html>")],
    );
    let err = s.client.list_resources(&s.acme()).await.expect_err("html");
    assert!(err.to_string().contains("not valid JSON"), "{err}");
    assert!(!shown(&err).contains("canary"));
}

#[tokio::test]
async fn a_listing_retries_a_429_then_reads_the_200() {
    let s = Setup::new().await;
    s.fake.script_list(
        ACME,
        vec![
            Scripted::vercel_error(429, "rate_limited", "slow down").header("Retry-After", "0"),
            Scripted::status(503),
        ],
    );
    let listed = s.client.list_resources(&s.acme()).await.expect("listed");
    assert_eq!(listed.len(), 2);
    let statuses: Vec<Option<u16>> = s.fake.answers().iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(429), Some(503), Some(200)]);
}

#[tokio::test]
async fn a_listing_refused_or_unknown_is_permanent_and_never_shows_the_token() {
    let s = Setup::new().await;
    let wrong = secret("tok-wrong-canary-5521");
    let refused = InstallationRef {
        name: "acme",
        id: ACME,
        token: &wrong,
    };
    let err = s.client.list_resources(&refused).await.expect_err("401");
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.persistence(), Persistence::Permanent);
    assert!(err.to_string().contains("refused the token"), "{err}");
    assert!(!shown(&err).contains("canary"), "{}", shown(&err));
    let unknown = InstallationRef {
        name: "gone",
        id: "icfg_gone",
        token: &s.acme_token,
    };
    let err = s.client.list_resources(&unknown).await.expect_err("404");
    assert_eq!(err.status(), Some(404));
    assert_eq!(err.persistence(), Persistence::Permanent);
    assert!(!shown(&err).contains(ACME_TOKEN));
    // One attempt each: neither is retried.
    assert_eq!(s.fake.requests().len(), 2);
}

#[tokio::test]
async fn a_listing_cut_off_midway_is_retried() {
    let s = Setup::new().await;
    s.fake.script_list(
        ACME,
        vec![Scripted::drop_mid_body(
            200,
            br#"{"resources": [{"partnerId": "x""#.to_vec(),
        )],
    );
    let listed = s.client.list_resources(&s.acme()).await.expect("listed");
    assert_eq!(listed.len(), 2);
    assert_eq!(s.fake.requests().len(), 2);
}

/// The fake's listing, validated by hand against the schema of the OpenAPI operation
/// (`tests/fixtures/vercel/openapi-get-integration-resources.json`, copied verbatim): a lenient
/// fake would let a client that expects more than Vercel sends pass.
#[tokio::test]
async fn the_fakes_listing_is_valid_against_the_openapi_schema() {
    let s = Setup::new().await;
    s.fake.set_listing(
        ACME,
        "store_a1",
        Listing {
            name: Some("orders".into()),
            product_id: Some("iap_pg".into()),
            status: Some("suspended".into()),
            metadata: json!({"region": "eu", "size": 3, "ha": false, "zones": ["a"], "ports": [1]})
                .as_object()
                .cloned()
                .expect("object"),
        },
    );
    s.fake.set_listing(
        ACME,
        "store_a2",
        Listing {
            status: Some(String::new()),
            ..Listing::default()
        },
    );
    let response = reqwest::Client::new()
        .get(format!(
            "{}/v1/installations/{ACME}/resources",
            s.fake.url()
        ))
        .bearer_auth(ACME_TOKEN)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status().as_u16(), 200);
    let body: Value = response.json().await.expect("json");
    let path = crate::common::cli::root()
        .join("tests/fixtures/vercel/openapi-get-integration-resources.json");
    let spec: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("spec")).expect("spec json");
    let schema = &spec["paths"]["/v1/installations/{integrationConfigurationId}/resources"]["get"]
        ["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(schema.is_object(), "schema not found in {path:?}");
    let errors = validate(schema, &body, "$");
    assert!(errors.is_empty(), "{errors:#?}\n{body:#}");
    assert_eq!(body["resources"].as_array().map(Vec::len), Some(2));
    // The validator itself refuses what the schema refuses.
    let bad = json!({"resources": [{"partnerId": "r", "name": 1, "productId": "p",
        "status": "sleeping", "metadata": {"k": null}}]});
    let errors = validate(schema, &bad, "$");
    for want in ["internalId", "$.resources[0].name", "status", "metadata.k"] {
        assert!(
            errors.iter().any(|e| e.contains(want)),
            "{want}: {errors:#?}"
        );
    }
}

/// The subset of JSON Schema the operation uses: `type`, `properties`, `required`, `items`,
/// `enum`, `additionalProperties` and `oneOf`. Returns every violation, by path.
fn validate(schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let mut errors = Vec::new();
    if let Some(options) = schema["oneOf"].as_array() {
        let matching = options
            .iter()
            .filter(|o| validate(o, value, at).is_empty())
            .count();
        if matching != 1 {
            errors.push(format!("{at}: matches {matching} of oneOf, not 1"));
        }
    }
    if let Some(kind) = schema["type"].as_str() {
        let ok = match kind {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "number" => value.is_number(),
            "integer" => value.is_i64() || value.is_u64(),
            "boolean" => value.is_boolean(),
            other => panic!("type {other} not handled"),
        };
        if !ok {
            errors.push(format!("{at}: should be {kind}, is {value}"));
            return errors;
        }
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        errors.push(format!("{at}: {value} is not one of {allowed:?}"));
    }
    if let Some(object) = value.as_object() {
        for key in schema["required"].as_array().into_iter().flatten() {
            let key = key.as_str().expect("required names");
            if !object.contains_key(key) {
                errors.push(format!("{at}: lacks required {key}"));
            }
        }
        for (key, item) in object {
            let child = format!("{at}.{key}");
            match schema["properties"].get(key) {
                Some(sub) => errors.extend(validate(sub, item, &child)),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{child}: not allowed")),
                    sub @ Value::Object(_) => errors.extend(validate(sub, item, &child)),
                    _ => {}
                },
            }
        }
    }
    if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
        for (i, item) in array.iter().enumerate() {
            errors.extend(validate(items, item, &format!("{at}[{i}]")));
        }
    }
    errors
}

/// A read changes nothing: after a 503, a 401 is a plain refusal, not "Vercel may hold the new
/// values" (which a push would rightly say).
#[tokio::test]
async fn a_failed_listing_never_claims_vercel_may_hold_values() {
    let s = Setup::new().await;
    s.fake
        .script_list(ACME, vec![Scripted::status(503), Scripted::status(401)]);
    let err = s.client.list_resources(&s.acme()).await.expect_err("401");
    assert!(
        matches!(err, VercelError::Status { status: 401, .. }),
        "{err:?}"
    );
    assert!(!err.may_have_applied());
    assert!(!err.to_string().contains("may hold"), "{err}");
}
