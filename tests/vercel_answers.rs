//! What the daemon makes of Vercel's answer to the push, end to end (`run --once` of the real
//! binary, a command provider in Python, the fake Vercel): any `2xx` is a push, so the new
//! credential Vercel now holds stays live; an answer that does not say (a redirect, a `408`)
//! fails the run but keeps the new credential too, since Vercel may hold it. And the route the
//! push takes: never through a proxy for a loopback API.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

use crate::common::cli;
use crate::common::fake_vercel::{FakeVercel, Scripted};

const INSTALLATION: &str = "icfg_answers";
const TOKEN: &str = "tok_answers_CANARY_61d0";
const RESOURCE: &str = "store_1";
const PASSWORD: &str = "pw-answers-CANARY-3e9f";

/// A fake with one resource, a temp dir with a config for it whose policy uses a command
/// provider that logs each call it gets (action and handle, never a value).
struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scenario {
    async fn new() -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(INSTALLATION, TOKEN);
        fake.add_resource(INSTALLATION, RESOURCE);
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token = cli::write_token(dir.path(), "answers.token", TOKEN);
        let log = dir.path().join("calls.jsonl");
        let script = dir.path().join("provider.py");
        std::fs::write(
            &script,
            format!(
                r#"import json, sys
req = json.load(sys.stdin)
with open({log:?}, "a") as f:
    f.write(json.dumps({{"action": req["action"], "handle": req.get("handle")}}) + "\n")
if req["action"] == "create":
    json.dump({{"handle": "key-" + req["rotation_id"][:8], "fields": {{"password": {PASSWORD:?}}}}}, sys.stdout)
else:
    json.dump({{}}, sys.stdout)
"#,
                log = log.display().to_string(),
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"[vercel]
api-url = "{url}"
request-timeout = "2s"
retry-deadline = "3s"

[state]
dir = "{state}"

[installations.acme]
id = "{INSTALLATION}"
token-file = "{token}"

[[policies]]
name = "api"
installation = "acme"
resources = ["{RESOURCE}"]
every = "30d"
notify-dashboard = true
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}"], timeout = "20s" }}

[[policies.secrets]]
name = "API_KEY"
value = "{{password}}"
"#,
                url = fake.url(),
                state = dir.path().join("state").display(),
                token = token.display(),
                script = script.display(),
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Scenario { fake, dir, config }
    }

    async fn run_once(&self, env: Vec<(String, String)>) -> Output {
        let args = vec![
            "--config".to_owned(),
            self.config.display().to_string(),
            "run".to_owned(),
            "--once".to_owned(),
        ];
        cli::run_async(args, env).await
    }

    /// The provider's calls, as `(action, handle)`.
    fn calls(&self) -> Vec<(String, Option<String>)> {
        std::fs::read_to_string(self.dir.path().join("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|c| {
                (
                    c["action"].as_str().unwrap_or("").to_owned(),
                    c["handle"].as_str().map(str::to_owned),
                )
            })
            .collect()
    }
}

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        cli::stdout(out),
        cli::stderr(out)
    );
}

fn assert_quiet(out: &Output) {
    let all = format!("{}{}", cli::stdout(out), cli::stderr(out));
    assert!(!all.contains(PASSWORD) && !all.contains(TOKEN), "{all}");
}

/// Vercel documents `201`, but a `200` or `204` to the PUT says as clearly that it holds the
/// new values: the rotation succeeded, and the new credential is never retired (it used to
/// be read as a refusal, and the credential Vercel now held was retired).
#[tokio::test(flavor = "multi_thread")]
async fn a_200_or_204_to_the_push_is_a_rotation_and_the_new_credential_stays() {
    for status in [200, 204] {
        let s = Scenario::new().await;
        // The PUT, then the dashboard PATCH, each answered `status`.
        s.fake.script(
            INSTALLATION,
            RESOURCE,
            vec![Scripted::status(status), Scripted::status(status)],
        );
        let out = s.run_once(Vec::new()).await;
        assert_exit(&out, 0);
        let stdout = cli::stdout(&out);
        assert!(stdout.contains("1 rotated, 0 failed"), "{status}: {stdout}");
        let actions: Vec<String> = s.calls().into_iter().map(|(a, _)| a).collect();
        assert_eq!(actions, ["create", "verify"], "{status}: nothing retired");
        let methods: Vec<String> = s.fake.requests().into_iter().map(|r| r.method).collect();
        assert_eq!(
            methods,
            ["PUT", "PATCH"],
            "{status}: pushed once, notified once"
        );
        assert_quiet(&out);
    }
}

/// A redirect (not followed) or a `408` does not say whether Vercel took the values: the run
/// fails, and the new credential is not retired, since Vercel may hold it.
#[tokio::test(flavor = "multi_thread")]
async fn an_unclear_answer_to_the_push_fails_the_run_and_keeps_the_new_credential() {
    for scripted in [
        Scripted::status(302).header("location", "https://elsewhere.example/"),
        Scripted::status(307).header("location", "https://elsewhere.example/"),
        Scripted::status(408),
    ] {
        let status = scripted.status;
        let s = Scenario::new().await;
        s.fake.script(INSTALLATION, RESOURCE, vec![scripted]);
        let out = s.run_once(Vec::new()).await;
        assert_exit(&out, 1);
        let actions: Vec<String> = s.calls().into_iter().map(|(a, _)| a).collect();
        assert_eq!(actions, ["create", "verify"], "{status}: nothing retired");
        let stdout = cli::stdout(&out);
        assert!(stdout.contains("FAILED"), "{status}: {stdout}");
        assert_quiet(&out);
    }
}

/// A TCP listener standing in for a proxy: it counts connections and answers none.
struct FakeProxy {
    url: String,
    connections: Arc<AtomicUsize>,
}

impl FakeProxy {
    fn start() -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        let url = format!(
            "http://{}",
            listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
        );
        let connections = Arc::new(AtomicUsize::new(0));
        let seen = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                seen.fetch_add(1, Ordering::SeqCst);
                // Closed at once: a client that went this way fails instead of hanging.
                drop(stream);
            }
        });
        FakeProxy { url, connections }
    }
}

/// With every proxy variable pointing at a listener, a push to a loopback (plain HTTP) API
/// goes straight to it: a proxy would have read the token and the values in clear.
#[tokio::test(flavor = "multi_thread")]
async fn a_loopback_api_is_never_reached_through_a_proxy() {
    let s = Scenario::new().await;
    let proxy = FakeProxy::start();
    let env: Vec<(String, String)> = [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .map(|v| ((*v).to_owned(), proxy.url.clone()))
    .chain([
        ("NO_PROXY".to_owned(), String::new()),
        ("no_proxy".to_owned(), String::new()),
    ])
    .collect();
    let out = s.run_once(env).await;
    assert_eq!(
        proxy.connections.load(Ordering::SeqCst),
        0,
        "the proxy was used:\n{}",
        cli::stderr(&out)
    );
    assert_exit(&out, 0);
    assert_eq!(
        s.fake.secrets(INSTALLATION, RESOURCE)["API_KEY"].value,
        PASSWORD
    );
    assert_quiet(&out);
}
