//! The `[server]` listener through the binary: Vercel's rotate request with a test issuer's
//! tokens (RSA keys made in the test, a JWKS served by `common::issuer`), the fake Vercel
//! seeing the push, a ledger provider seeing create and retire.
//!
//! Every forged or misdirected token is refused with its status and rotates nothing; ADMIN
//! and system tokens rotate; the delay becomes the grace (the retirement comes at the
//! shortened time); a repeated Idempotency-Key rotates once, after a restart too; a resource
//! no policy governs is a 404; a JWKS outage is a 503 and stops nothing.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;
use crate::common::issuer::{self, CLIENT_ID, ISSUER, Issuer, keys};

const ACME: &str = "icfg_acme";
const ACME_TOKEN: &str = "tok_acme_SERVER_5e1d";
/// Every value the ledger makes starts with this.
const CANARY: &str = "SERVERCANARY";

struct Scenario {
    fake: FakeVercel,
    issuer: Issuer,
    dir: tempfile::TempDir,
}

impl Scenario {
    /// A fake Vercel with two resources, an issuer publishing key A, a ledger provider.
    async fn new() -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        for r in ["store_a1", "store_a2"] {
            fake.add_resource(ACME, r);
        }
        let issuer = Issuer::start(&[&keys()[0]]).await;
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
        let s = Scenario { fake, issuer, dir };
        s.write_ledger();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// A provider that records each call (action, handle, time) and makes values that
    /// start with the canary.
    fn write_ledger(&self) {
        let script = format!(
            r#"import fcntl, json, secrets, sys, time
req = json.load(sys.stdin)
lock = open({calls:?} + ".lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
# create: the handle it makes; retire: the handle it retires.
handle = "h-" + req["rotation_id"][:8] if req["action"] == "create" else req.get("handle")
with open({calls:?}, "a") as f:
    f.write(json.dumps({{"action": req["action"], "resource": req.get("resource"), "handle": handle, "at": time.time()}}) + "\n")
if req["action"] == "create":
    out = {{"handle": handle, "fields": {{"password": "{CANARY}-" + secrets.token_hex(12)}}}}
elif req["action"] == "retire":
    out = {{}}
else:
    sys.exit(3)
json.dump(out, sys.stdout)
"#,
            calls = self.path("calls.jsonl").display().to_string(),
        );
        std::fs::write(self.path("ledger.py"), script).unwrap_or_else(|e| panic!("{e}"));
    }

    /// The provider's calls of `action`, in order: (resource, handle, unix time).
    fn calls(&self, action: &str) -> Vec<(String, String, f64)> {
        std::fs::read_to_string(self.path("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|c| c["action"] == action)
            .map(|c| {
                (
                    c["resource"].as_str().unwrap_or("").to_owned(),
                    c["handle"].as_str().unwrap_or("").to_owned(),
                    c["at"].as_f64().unwrap_or(0.0),
                )
            })
            .collect()
    }

    fn puts(&self, resource: &str) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.contains(&format!("/resources/{resource}/")))
            .count()
    }

    /// One weekly policy over both resources with `grace`, and `[server]` on a free port.
    fn write_config(&self, grace: &str) -> PathBuf {
        let text = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "5s"

[state]
dir = "{state}"

[server]
listen = "127.0.0.1:0"
client-id = "{CLIENT_ID}"
jwks-url = "{jwks}"
issuer = "{ISSUER}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[[policies]]
name = "db"
installation = "acme"
resources = ["store_a1", "store_a2"]
schedule = "0 3 * * 0"
grace = "{grace}"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{ledger}"], timeout = "20s" }}

[[policies.secrets]]
name = "DB_PASSWORD"
value = "{{password}}"
"#,
            url = self.fake.url(),
            state = self.path("state").display(),
            jwks = self.issuer.jwks_url(),
            token = self.path("acme.token").display(),
            ledger = self.path("ledger.py").display(),
        );
        let path = self.path("config.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }
}

/// A daemon process with its listener's address; killed if a test ends without stopping it.
struct Daemon {
    child: Child,
    stderr: PathBuf,
    addr: SocketAddr,
    http: reqwest::Client,
}

impl Daemon {
    /// Starts the daemon (JSON logs) and waits until it listens and has fetched the keys.
    async fn start(s: &Scenario, config: &Path) -> Daemon {
        let fetches = s.issuer.fetches();
        let stderr = s.path(&format!("daemon-{}.log", unique()));
        let log = std::fs::File::create(&stderr).unwrap_or_else(|e| panic!("{e}"));
        let child = cli::bin()
            .args([
                "--config",
                &config.display().to_string(),
                "--log-format",
                "json",
                "run",
            ])
            .env("RUST_LOG", "info,vercel_secret_rotator=debug")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the daemon: {e}"));
        let mut daemon = Daemon {
            child,
            stderr,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: reqwest::Client::new(),
        };
        wait_for(
            "the listener",
            || daemon.log(),
            || daemon.listen_addr().is_some(),
        )
        .await;
        daemon.addr = daemon.listen_addr().unwrap_or(daemon.addr);
        wait_for(
            "the first fetch of the keys",
            || daemon.log(),
            || s.issuer.fetches() > fetches && daemon.log().contains("daemon started"),
        )
        .await;
        daemon
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The log as JSON lines.
    fn events(&self) -> Vec<Value> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    fn listen_addr(&self) -> Option<SocketAddr> {
        self.events()
            .iter()
            .find_map(|e| e["listen"].as_str().and_then(|a| a.parse().ok()))
    }

    /// POSTs a rotate request; returns the status and the JSON body (`Null` if none).
    async fn rotate(
        &self,
        installation: &str,
        resource: &str,
        token: Option<&str>,
        body: &Value,
        key: Option<&str>,
    ) -> (u16, Value) {
        let url = format!(
            "http://{}/v1/installations/{installation}/resources/{resource}/secrets/rotate",
            self.addr
        );
        let mut request = self.http.post(url).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(key) = key {
            request = request.header("Idempotency-Key", key);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("rotate request: {e}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = self
            .http
            .get(format!("http://{}{path}", self.addr))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    /// SIGTERM, then the exit status.
    async fn stop(&mut self) -> Option<i32> {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unique() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

async fn wait_for(what: &str, context: impl Fn() -> String, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn with(mut claims: Value, key: &str, value: Value) -> Value {
    claims[key] = value;
    claims
}

/// An answer's error code, checking the error shape on the way.
fn code(body: &Value) -> &str {
    body["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.message: {body}"));
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("no error.code: {body}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_and_misdirected_tokens_are_refused_and_rotate_nothing() {
    let s = Scenario::new().await;
    let config = s.write_config("24h");
    let mut daemon = Daemon::start(&s, &config).await;
    let [a, b, c] = keys();
    let good = issuer::system_claims(ACME);
    let now = issuer::now();

    let tampered = {
        // Key A's signature over other claims: the claims are swapped after signing.
        let signed = a.sign(&good);
        let other = a.sign(&with(good.clone(), "installation_id", json!("icfg_x")));
        let parts: Vec<&str> = signed.split('.').collect();
        let other_parts: Vec<&str> = other.split('.').collect();
        format!("{}.{}.{}", parts[0], other_parts[1], parts[2])
    };
    // Key B signing, its header naming key A.
    let b_as_a = b.sign_as(&a.kid, &good);

    let cases: Vec<(&str, Option<String>, u16)> = vec![
        ("missing header", None, 401),
        ("garbage", Some("not-a-jwt".to_owned()), 401),
        ("bad signature (claims swapped)", Some(tampered), 401),
        (
            "bad signature (another key under A's kid)",
            Some(b_as_a),
            401,
        ),
        ("unpublished key", Some(c.sign(&good)), 401),
        (
            "alg none",
            Some(issuer::unsigned("none", &a.kid, &good, "")),
            401,
        ),
        (
            "HS256 keyed with the public key",
            Some(issuer::hmac(&a.public_der, &a.kid, &good)),
            401,
        ),
        (
            "expired",
            Some(a.sign(&with(good.clone(), "exp", json!(now - 3600)))),
            401,
        ),
        (
            "not yet valid",
            Some(a.sign(&with(good.clone(), "nbf", json!(now + 3600)))),
            401,
        ),
        (
            "wrong aud",
            Some(a.sign(&with(good.clone(), "aud", json!("oac_SOMEONEELSE")))),
            401,
        ),
        (
            "wrong iss",
            Some(a.sign(&with(good.clone(), "iss", json!("https://evil.example")))),
            401,
        ),
        (
            "other installation",
            Some(a.sign(&issuer::system_claims("icfg_other"))),
            403,
        ),
        (
            "USER role",
            Some(a.sign(&issuer::user_claims(ACME, "USER"))),
            403,
        ),
        (
            "user without a role",
            Some(a.sign(&with(
                issuer::user_claims(ACME, "ADMIN"),
                "user_role",
                Value::Null,
            ))),
            403,
        ),
    ];
    let mut tokens = Vec::new();
    for (name, token, want) in &cases {
        let (status, body) = daemon
            .rotate(ACME, "store_a1", token.as_deref(), &json!({}), None)
            .await;
        assert_eq!(status, *want, "{name}: {body}");
        let expected_code = if *want == 401 {
            "unauthorized"
        } else {
            "forbidden"
        };
        assert_eq!(code(&body), expected_code, "{name}: {body}");
        if let Some(token) = token {
            assert!(
                !body.to_string().contains(token.as_str()),
                "{name}: the answer echoes the token"
            );
            tokens.push(token.clone());
        }
    }

    // An unknown kid fetched the keys once more; a second one within the minute does not.
    let fetches = s.issuer.fetches();
    let (status, _) = daemon
        .rotate(ACME, "store_a1", Some(&c.sign(&good)), &json!({}), None)
        .await;
    assert_eq!(status, 401);
    assert_eq!(s.issuer.fetches(), fetches, "refetched within a minute");

    // A good token with a bad body: 400, nothing rotated.
    let token = a.sign(&good);
    for body in [
        json!({"delayOldSecretsExpirationHours": 721}),
        json!({"delayOldSecretsExpirationHours": -0.5}),
        json!({"delayOldSecretsExpirationHours": "24"}),
        json!({"reason": 42}),
    ] {
        let (status, answer) = daemon
            .rotate(ACME, "store_a1", Some(&token), &body, None)
            .await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(code(&answer), "bad_request", "{answer}");
    }

    // A body past the cap is refused before it is parsed.
    let (status, answer) = daemon
        .rotate(
            ACME,
            "store_a1",
            Some(&token),
            &json!({"reason": "x".repeat(20_000)}),
            None,
        )
        .await;
    assert_eq!(status, 413, "{answer}");
    assert_eq!(code(&answer), "payload_too_large");

    // Nothing rotated, and the daemon is fine.
    assert_eq!(daemon.get("/healthz").await.0, 200);
    assert_eq!(s.calls("create").len(), 0);
    assert_eq!(s.puts("store_a1") + s.puts("store_a2"), 0);
    assert_eq!(daemon.stop().await, Some(0), "{}", daemon.log());
    let log = daemon.log();
    assert!(log.contains("refused a rotate request"), "{log}");
    for token in tokens.iter().chain([&token]) {
        // Every token, and every dot-separated part long enough to be distinctive.
        for part in token.split('.').filter(|p| p.len() > 16) {
            assert!(!log.contains(part), "a token reached the log");
        }
    }
    assert!(!log.contains(ACME_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_and_system_tokens_rotate_and_the_delay_becomes_the_grace() {
    let s = Scenario::new().await;
    let config = s.write_config("24h");
    let mut daemon = Daemon::start(&s, &config).await;
    let [a, _, c] = keys();

    // A key Vercel published after the daemon fetched: the unknown kid fetches again.
    s.issuer.publish(&[a, c]);
    let system = c.sign(&issuer::system_claims(ACME));
    let (status, body) = daemon
        .rotate(
            ACME,
            "store_a1",
            Some(&system),
            &json!({"reason": "leaked in CI logs"}),
            None,
        )
        .await;
    assert_eq!((status, &body), (202, &json!({"sync": false})));
    wait_for(
        "the first push",
        || daemon.log(),
        || s.puts("store_a1") == 1,
    )
    .await;
    let pushed = s
        .fake
        .secrets(ACME, "store_a1")
        .get("DB_PASSWORD")
        .map(|v| v.value.clone())
        .unwrap_or_default();
    assert!(pushed.starts_with(CANARY), "{pushed}");
    let first_handle = s.calls("create")[0].1.clone();

    // An ADMIN asks again with a delay of about a second instead of the policy's 24 hours:
    // the first credential is retired a second after the push, not tomorrow.
    let admin = a.sign(&issuer::user_claims(ACME, "ADMIN"));
    let (status, body) = daemon
        .rotate(
            ACME,
            "store_a1",
            Some(&admin),
            &json!({"delayOldSecretsExpirationHours": 0.0003, "reason": "routine"}),
            None,
        )
        .await;
    assert_eq!((status, &body), (202, &json!({"sync": false})));
    wait_for(
        "the retirement of the first credential",
        || daemon.log(),
        || !s.calls("retire").is_empty(),
    )
    .await;
    let retired = s.calls("retire");
    assert_eq!(retired.len(), 1, "{retired:?}");
    assert_eq!(retired[0].1, first_handle);
    let second_create = s.calls("create")[1].2;
    assert!(
        retired[0].2 - second_create < 20.0,
        "retired {}s after the second rotation",
        retired[0].2 - second_create
    );
    assert_eq!(s.puts("store_a1"), 2);
    assert_eq!(s.puts("store_a2"), 0, "only the asked-for resource rotates");

    // A resource no policy governs, and an installation none serves: 404.
    let (status, body) = daemon
        .rotate(ACME, "store_zz", Some(&admin), &json!({}), None)
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(code(&body), "not_found");
    let other = a.sign(&issuer::system_claims("icfg_other"));
    let (status, _) = daemon
        .rotate("icfg_other", "store_a1", Some(&other), &json!({}), None)
        .await;
    assert_eq!(status, 404);

    // Health and metrics are served beside it.
    let (status, _) = daemon.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, scrape) = daemon.get("/metrics").await;
    assert_eq!(status, 200);
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&scrape)
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e:?}):\n{scrape}"));
    let rotations = parsed
        .families
        .get("vercel_secret_rotator_rotations_total")
        .unwrap_or_else(|| panic!("no rotations counter:\n{scrape}"));
    let names = rotations.get_label_names();
    let values: Vec<String> = names
        .iter()
        .map(|n| if n == "policy" { "db" } else { "success" }.to_owned())
        .collect();
    let success = match rotations
        .get_sample_by_label_values(&values)
        .map(|s| &s.value)
    {
        Some(openmetrics_parser::PrometheusValue::Counter(c)) => c.value.as_f64(),
        other => panic!("rotations_total{{policy=db,outcome=success}}: {other:?}\n{scrape}"),
    };
    assert_eq!(success, 2.0, "the two rotations Vercel asked for\n{scrape}");
    for gauge in [
        "vercel_secret_rotator_last_success_timestamp_seconds",
        "vercel_secret_rotator_next_due_timestamp_seconds",
    ] {
        let family = parsed
            .families
            .get(gauge)
            .unwrap_or_else(|| panic!("no {gauge}:\n{scrape}"));
        assert_eq!(family.get_label_names(), ["policy", "resource"], "{gauge}");
    }
    assert!(scrape.contains("vercel_secret_rotator_vercel_request_duration_seconds_bucket"));
    assert!(
        !scrape.contains("store_a1\",outcome"),
        "no per-resource label on a counter"
    );

    assert_eq!(daemon.stop().await, Some(0), "{}", daemon.log());
    let events = daemon.events();
    let asked: Vec<&Value> = events
        .iter()
        .filter(|e| {
            e["message"]
                .as_str()
                .is_some_and(|m| m.contains("as Vercel asked"))
        })
        .collect();
    assert_eq!(asked.len(), 2, "{}", daemon.log());
    assert!(
        asked[0].to_string().contains("leaked in CI logs"),
        "{}",
        asked[0]
    );
    assert!(
        asked[1].to_string().contains("user user_4567"),
        "{}",
        asked[1]
    );
    let log = daemon.log();
    assert!(!log.contains(CANARY), "a value reached the log");

    // The history tells the rotations Vercel asked for, with their reason.
    let out = cli::run_async(
        vec![
            "--config".into(),
            config.display().to_string(),
            "history".into(),
            "--json".into(),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let history: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let asked: Vec<&Value> = history
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["trigger"] == "vercel" && e["event"] == "succeeded")
        .collect();
    assert_eq!(asked.len(), 2, "{}", cli::stdout(&out));
    assert!(
        history
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["trigger"] == "vercel" && e["reason"] == "routine"),
        "{}",
        cli::stdout(&out)
    );
    assert!(!cli::stdout(&out).contains(CANARY));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_repeated_idempotency_key_rotates_once_also_after_a_restart() {
    let s = Scenario::new().await;
    let config = s.write_config("24h");
    let mut daemon = Daemon::start(&s, &config).await;
    let a = &keys()[0];
    let token = a.sign(&issuer::system_claims(ACME));
    const KEY: &str = "5f0c0f1e-2b7a-4c1e-9d7e-0a1b2c3d4e5f";

    let (status, body) = daemon
        .rotate(ACME, "store_a1", Some(&token), &json!({}), Some(KEY))
        .await;
    assert_eq!((status, &body), (202, &json!({"sync": false})));
    wait_for("the push", || daemon.log(), || s.puts("store_a1") == 1).await;

    // Sent again: the same answer. A request through the daemon's loop afterwards (a 404)
    // shows nothing more was started.
    let (status, body) = daemon
        .rotate(ACME, "store_a1", Some(&token), &json!({}), Some(KEY))
        .await;
    assert_eq!((status, &body), (202, &json!({"sync": false})));
    let (status, _) = daemon
        .rotate(ACME, "store_zz", Some(&token), &json!({}), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(s.calls("create").len(), 1);
    assert_eq!(daemon.stop().await, Some(0), "{}", daemon.log());

    // The key is in the state: owner-only, and nothing secret in it.
    let requests = s.path("state").join("requests.json");
    let mode = std::fs::metadata(&requests)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o600);
    let text = std::fs::read_to_string(&requests).unwrap_or_default();
    assert!(text.contains(KEY), "{text}");
    assert!(!text.contains(&token) && !text.contains(CANARY) && !text.contains(ACME_TOKEN));

    // After a restart, the same key is still answered without a rotation.
    let mut daemon = Daemon::start(&s, &config).await;
    let (status, body) = daemon
        .rotate(ACME, "store_a1", Some(&token), &json!({}), Some(KEY))
        .await;
    assert_eq!((status, &body), (202, &json!({"sync": false})));
    let (status, _) = daemon
        .rotate(ACME, "store_zz", Some(&token), &json!({}), None)
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        s.calls("create").len(),
        1,
        "rotated again after the restart"
    );
    assert!(
        daemon.log().contains("answered as the first time"),
        "{}",
        daemon.log()
    );

    // The same key for another resource is another request.
    let (status, _) = daemon
        .rotate(ACME, "store_a2", Some(&token), &json!({}), Some(KEY))
        .await;
    assert_eq!(status, 202);
    wait_for(
        "the other resource's push",
        || daemon.log(),
        || s.puts("store_a2") == 1,
    )
    .await;
    assert_eq!(s.puts("store_a1"), 1);
    assert_eq!(daemon.stop().await, Some(0), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_jwks_outage_answers_503_and_stops_nothing() {
    let s = Scenario::new().await;
    s.issuer.set_failing(true);
    let config = s.write_config("24h");
    let mut daemon = Daemon::start(&s, &config).await;
    let token = keys()[0].sign(&issuer::system_claims(ACME));
    for _ in 0..3 {
        let (status, body) = daemon
            .rotate(ACME, "store_a1", Some(&token), &json!({}), None)
            .await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(code(&body), "unavailable");
    }
    // The start-up fetch and one by the first request; the others wait a minute.
    assert_eq!(s.issuer.fetches(), 2);
    assert_eq!(daemon.get("/healthz").await.0, 200);
    assert!(
        daemon.log().contains("cannot fetch Vercel's signing keys"),
        "{}",
        daemon.log()
    );
    assert_eq!(s.calls("create").len(), 0);
    assert_eq!(daemon.stop().await, Some(0), "{}", daemon.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_port_in_use_is_a_clear_start_up_error() {
    let s = Scenario::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let port = taken.local_addr().map(|a| a.port()).unwrap_or(0);
    let config = s.write_config("24h");
    let text = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(
        &config,
        text.replace("127.0.0.1:0", &format!("127.0.0.1:{port}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let out = cli::run_async(
        vec![
            "--config".into(),
            config.display().to_string(),
            "run".into(),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", cli::stderr(&out));
    let stderr = cli::stderr(&out);
    assert!(
        stderr.contains(&format!(
            "cannot listen on 127.0.0.1:{port} ([server] listen)"
        )),
        "{stderr}"
    );
    drop(taken);
}

#[tokio::test(flavor = "multi_thread")]
async fn check_prints_the_server_section() {
    let s = Scenario::new().await;
    let config = s.write_config("24h");
    let out = cli::run_async(
        vec![
            "--config".into(),
            config.display().to_string(),
            "check".into(),
        ],
        vec![],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let stdout = cli::stdout(&out);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("server:"))
        .unwrap_or_else(|| panic!("no server line:\n{stdout}"));
    assert!(line.contains("listens on 127.0.0.1:0"), "{line}");
    assert!(line.contains(CLIENT_ID) && line.contains(ISSUER), "{line}");
    assert!(line.contains(&s.issuer.jwks_url()), "{line}");
    // `check` fetches nothing.
    assert_eq!(s.issuer.fetches(), 0);
}
