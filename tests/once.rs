//! `run --once` and `check` end to end: the real binary, a config written per test, the fake
//! Vercel. What a partner would notice: which values land where, with which token, what the
//! summary and exit status say, that failures stay contained, and that no value or token
//! shows up in any output.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use vercel_secret_rotator::secret::{self, SecretString};

use crate::common::cli;
use crate::common::fake_vercel::{FakeVercel, Scripted, StoredSecret};

const ACME: &str = "icfg_acme";
const ACME_TOKEN: &str = "tok_acme_CANARY_5b7e01";
const BETA: &str = "icfg_beta";
const BETA_TOKEN: &str = "tok_beta_CANARY_93ac44";

/// A temp dir with a config pointing at a fake Vercel with two installations: `acme` (token
/// file, resources store_a1 and store_a2) and `beta` (token in the environment, store_b1).
struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl Scenario {
    async fn new() -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        fake.add_installation(BETA, BETA_TOKEN);
        for (i, r) in [(ACME, "store_a1"), (ACME, "store_a2"), (BETA, "store_b1")] {
            fake.add_resource(i, r);
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token_file = cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
        Scenario {
            fake,
            dir,
            token_file,
        }
    }

    /// The `[vercel]` and `[installations]` part; policies are appended per test.
    fn head(&self) -> String {
        format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "2s"
# Short, so a scripted run of 5xx or 429 answers exhausts the client's retries quickly.
retry-deadline = "3s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[installations.beta]
id = "{BETA}"
token-env = "BETA_TOKEN"
"#,
            url = self.fake.url(),
            state = self.dir.path().join("state").display(),
            token = self.token_file.display(),
        )
    }

    fn write_config(&self, policies: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, format!("{}\n{policies}", self.head()))
            .unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// Writes an executable helper script into the temp dir and returns its path.
    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    async fn run(&self, config: &Path, args: &[&str]) -> Output {
        self.run_env(config, args, &[("BETA_TOKEN", BETA_TOKEN)])
            .await
    }

    async fn run_env(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        cli::run_async(all, env).await
    }
}

const RANDOM_POLICIES: &str = r#"
[[policies]]
name = "orders-db"
installation = "acme"
resources = ["store_a1", "store_a2"]
schedule = "0 3 * * 0"
provider = { kind = "random", length = 32, charset = "base64url" }

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://orders:{password}@db.example.com/orders"
prefix = "ACME"
environment-overrides = { preview = "postgres://orders:{password}@preview.example.com/orders" }

[[policies.secrets]]
name = "PGPASSWORD"
value = "{password}"

[[policies]]
name = "cache"
installation = "beta"
resources = ["store_b1"]
every = "30d"
grace = "1h"
provider = { kind = "random", length = 24, charset = "ascii-printable" }

[[policies.secrets]]
name = "REDIS_PASSWORD"
value = "{password}"
"#;

fn assert_exit(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        cli::stdout(out),
        cli::stderr(out)
    );
}

fn password_of(url: &str) -> &str {
    url.trim_start_matches("postgres://orders:")
        .split('@')
        .next()
        .unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn rotates_every_resource_of_every_installation_with_its_own_token() {
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);
    // A secret the resource already had, which the policy does not own: partial keeps it.
    let mut existing = BTreeMap::new();
    existing.insert(
        "UNRELATED".to_owned(),
        StoredSecret {
            value: "keep-me".into(),
            prefix: None,
            environment_overrides: BTreeMap::new(),
        },
    );
    s.fake.set_secrets(ACME, "store_a1", existing);

    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);

    let a1 = s.fake.secrets(ACME, "store_a1");
    let a2 = s.fake.secrets(ACME, "store_a2");
    let b1 = s.fake.secrets(BETA, "store_b1");
    assert_eq!(
        a1["UNRELATED"].value, "keep-me",
        "partial: true keeps what the policy does not own"
    );
    for stored in [&a1, &a2] {
        let url = &stored["DATABASE_URL"];
        assert_eq!(url.prefix.as_deref(), Some("ACME"));
        let password = password_of(&url.value);
        assert_eq!(password.len(), 32);
        assert_eq!(
            stored["PGPASSWORD"].value, password,
            "both secrets render one credential"
        );
        assert_eq!(
            url.environment_overrides.get("preview").map(String::as_str),
            Some(format!("postgres://orders:{password}@preview.example.com/orders").as_str())
        );
        assert_eq!(url.environment_overrides.len(), 1);
    }
    assert_ne!(
        a1["PGPASSWORD"].value, a2["PGPASSWORD"].value,
        "each resource gets its own credential"
    );
    assert_eq!(b1["REDIS_PASSWORD"].value.len(), 24);

    // Each request carried its own installation's token and only on its own paths.
    let requests = s.fake.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    for r in &requests {
        assert_eq!(r.method, "PUT");
        let want = if r.path.starts_with(&format!("/v1/installations/{ACME}/")) {
            ACME_TOKEN
        } else {
            assert!(
                r.path.starts_with(&format!("/v1/installations/{BETA}/")),
                "{}",
                r.path
            );
            BETA_TOKEN
        };
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {want}").as_str()),
            "{}",
            r.path
        );
        let body = r
            .body
            .json()
            .unwrap_or_else(|| panic!("not JSON: {:?}", r.body));
        assert_eq!(body["partial"], Value::Bool(true));
    }

    // The summary: a row per resource, with a fingerprint of exactly what Vercel now holds.
    let stdout = cli::stdout(&out);
    assert!(stdout.contains("3 rotated, 0 failed"), "{stdout}");
    let fp = |stored: &BTreeMap<String, StoredSecret>| {
        let url = &stored["DATABASE_URL"];
        let values = [
            url.value.clone(),
            url.environment_overrides["preview"].clone(),
            stored["PGPASSWORD"].value.clone(),
        ]
        .map(SecretString::from);
        secret::fingerprint_all(values.iter())
    };
    for (resource, stored) in [("store_a1", &a1), ("store_a2", &a2)] {
        let row = stdout
            .lines()
            .find(|l| l.contains(resource) && l.contains("rotated"))
            .unwrap_or_else(|| panic!("no row for {resource}:\n{stdout}"));
        assert!(row.contains("ACME_DATABASE_URL,PGPASSWORD"), "{row}");
        assert!(row.ends_with(&fp(stored)), "{row} vs {}", fp(stored));
    }

    // The redeploy reminder names installation, resource and secrets, and the retirement time.
    let stderr = cli::stderr(&out);
    let reminder = stderr
        .lines()
        .find(|l| l.contains("INFO") && l.contains("store_a1") && l.contains("redeploy"))
        .unwrap_or_else(|| panic!("no reminder for store_a1:\n{stderr}"));
    assert!(
        reminder.contains("acme") && reminder.contains("ACME_DATABASE_URL, PGPASSWORD"),
        "{reminder}"
    );
    // A first rotation replaced nothing, so nothing is retired and no deadline is promised.
    assert!(reminder.contains("first rotation"), "{reminder}");
    assert!(
        !reminder.contains("old credential is retired"),
        "{reminder}"
    );
    assert!(
        stdout.contains("store_a1: redeploy connected projects to use the new values (first rotation: no earlier credential is retired)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("when the old credential is retired"),
        "{stdout}"
    );

    // No value and no token in any output.
    let all = format!("{stdout}{stderr}");
    for value in [
        password_of(&a1["DATABASE_URL"].value),
        &a2["PGPASSWORD"].value,
        &b1["REDIS_PASSWORD"].value,
    ] {
        assert!(!all.contains(value), "a pushed value was printed");
    }
    assert!(
        !all.contains(ACME_TOKEN) && !all.contains(BETA_TOKEN),
        "a token was printed"
    );

    // The second rotation replaces the first one's credential: now its retirement is named.
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("store_a1: redeploy connected projects before ")
            && stdout.contains("when the old credential is retired"),
        "{stdout}"
    );
    let stderr = cli::stderr(&out);
    let reminder = stderr
        .lines()
        .find(|l| l.contains("INFO") && l.contains("store_a1") && l.contains("redeploy"))
        .unwrap_or_else(|| panic!("no reminder for store_a1:\n{stderr}"));
    assert!(reminder.contains("old credential is retired"), "{reminder}");
}

#[tokio::test(flavor = "multi_thread")]
async fn dry_run_sends_nothing_needs_no_token_and_redacts_values() {
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);
    std::fs::remove_file(&s.token_file).unwrap_or_else(|e| panic!("{e}"));
    // No BETA_TOKEN in the environment either.
    let out = s
        .run_env(&config, &["run", "--once", "--dry-run"], &[])
        .await;
    assert_exit(&out, 0);
    assert!(
        s.fake.requests().is_empty(),
        "a dry run sent {:?}",
        s.fake.requests()
    );
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains(&format!(
            "PUT /v1/installations/{ACME}/resources/store_a1/secrets"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("\"value\": \"postgres://orders:<password>@db.example.com/orders\""),
        "{stdout}"
    );
    assert!(stdout.contains("\"partial\": true"), "{stdout}");
    assert!(
        stdout.contains("dry run: 3 would be rotated, 0 failed; nothing was sent"),
        "{stdout}"
    );
    let stderr = cli::stderr(&out);
    assert!(
        stderr.contains("token cannot be read"),
        "the missing tokens are warned about: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_selectors_pick_policies_and_single_resources() {
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);

    let out = s
        .run(
            &config,
            &["run", "--once", "--policy", "orders-db/store_a2"],
        )
        .await;
    assert_exit(&out, 0);
    let paths: Vec<String> = s.fake.requests().into_iter().map(|r| r.path).collect();
    assert_eq!(
        paths,
        vec![format!(
            "/v1/installations/{ACME}/resources/store_a2/secrets"
        )]
    );

    s.fake.clear_requests();
    let out = s
        .run(
            &config,
            &[
                "run",
                "--once",
                "--policy",
                "cache",
                "--policy",
                "orders-db/store_a1",
            ],
        )
        .await;
    assert_exit(&out, 0);
    let mut paths: Vec<String> = s.fake.requests().into_iter().map(|r| r.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        vec![
            format!("/v1/installations/{ACME}/resources/store_a1/secrets"),
            format!("/v1/installations/{BETA}/resources/store_b1/secrets"),
        ]
    );

    // Unknown names are usage errors: exit 2 and nothing sent.
    s.fake.clear_requests();
    for selector in ["nope", "orders-db/store_zz", "orders-db/"] {
        let out = s
            .run(&config, &["run", "--once", "--policy", selector])
            .await;
        assert_exit(&out, 2);
        assert!(s.fake.requests().is_empty(), "{selector}");
    }
    let out = s.run(&config, &["run", "--once", "--policy", "nope"]).await;
    assert!(
        cli::stderr(&out).contains("no policy is named \"nope\" (policies: orders-db, cache)"),
        "{}",
        cli::stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_refusal_fails_only_its_resource_with_its_reason() {
    let cases: [(u16, &str, bool); 9] = [
        (400, "bad_request", false),
        (401, "forbidden", false),
        (403, "forbidden", false),
        (404, "not_found", false),
        (409, "conflict", false),
        (410, "gone", false),
        (422, "unprocessable", false),
        (429, "rate_limited", true),
        (503, "internal_server_error", true),
    ];
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);
    for (status, code, transient) in cases {
        s.fake.clear_requests();
        s.fake.clear_scripts();
        s.fake.script(
            ACME,
            "store_a2",
            // Retried statuses are answered the same way until the client's retries run out.
            (0..if transient { 60 } else { 1 })
                .map(|_| Scripted::vercel_error(status, code, "scripted refusal"))
                .collect(),
        );
        let out = s.run(&config, &["run", "--once"]).await;
        assert_exit(&out, 1);
        let stdout = cli::stdout(&out);
        let kind = if transient {
            "FAILED (transient)"
        } else {
            "FAILED (permanent)"
        };
        let row = stdout
            .lines()
            .find(|l| l.contains("store_a2"))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(row.contains(kind), "{status}: {row}");
        assert!(
            stdout.contains("2 rotated, 1 failed"),
            "{status}: the others still complete:\n{stdout}"
        );
        let reason = stdout
            .lines()
            .find(|l| l.trim_start().starts_with("orders-db/store_a2:"))
            .unwrap_or_else(|| panic!("{stdout}"));
        assert!(
            reason.contains(&status.to_string()) && reason.contains(code),
            "{status}: {reason}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_token_is_named_by_installation() {
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);
    let out = s
        .run_env(
            &config,
            &["run", "--once", "--policy", "cache"],
            &[("BETA_TOKEN", "tok_wrong_CANARY_0000")],
        )
        .await;
    assert_exit(&out, 1);
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("401") && stdout.contains("\"beta\""),
        "{stdout}"
    );
    assert!(
        !stdout.contains("tok_wrong_CANARY") && !cli::stderr(&out).contains("tok_wrong_CANARY")
    );
}

/// Issue 11: one installation's unreadable token used to stop the whole run (and the daemon's
/// start) before anything was sent. It fails that installation's rotations only; the others
/// rotate, and `status` says why.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_token_fails_only_its_installation() {
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);
    let out = s.run_env(&config, &["run", "--once"], &[]).await;
    assert_exit(&out, 1);
    assert!(
        cli::stderr(&out).contains("environment variable BETA_TOKEN is not set"),
        "{}",
        cli::stderr(&out)
    );
    let stdout = cli::stdout(&out);
    assert!(stdout.contains("2 rotated, 1 failed"), "{stdout}");
    assert!(
        stdout.contains("cache/store_b1") && stdout.contains("BETA_TOKEN is not set"),
        "{stdout}"
    );
    let puts: Vec<String> = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "PUT")
        .map(|r| r.path.clone())
        .collect();
    assert_eq!(puts.len(), 2, "acme's two resources were pushed: {puts:?}");
    assert!(puts.iter().all(|p| !p.contains("store_b1")), "{puts:?}");
    let out = s.run(&config, &["status"]).await;
    assert!(
        cli::stdout(&out).contains("BETA_TOKEN is not set"),
        "{}",
        cli::stdout(&out)
    );
    // Once it can be read, the next run rotates that installation too.
    let out = s
        .run(&config, &["run", "--once", "--policy", "cache"])
        .await;
    assert_exit(&out, 0);

    // A token file others can read is refused with the fix, as ssh does.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&s.token_file, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = s.run(&config, &["check"]).await;
    assert_exit(&out, 2);
    let stderr = cli::stderr(&out);
    assert!(
        stderr.contains(&format!("chmod 600 {}", s.token_file.display())),
        "{stderr}"
    );
    assert!(!stderr.contains(ACME_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn check_confirms_tokens_and_prints_three_due_times_per_policy() {
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);
    let out = s.run(&config, &["check"]).await;
    assert_exit(&out, 0);
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains(&format!(
            "token from file {}: readable",
            s.token_file.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("token from environment variable BETA_TOKEN: readable"),
        "{stdout}"
    );
    for policy in ["orders-db", "cache"] {
        let lines: Vec<&str> = stdout
            .lines()
            .skip_while(|l| !l.starts_with(&format!("policy {policy} ")))
            .skip(1)
            .take_while(|l| l.starts_with("  "))
            .collect();
        assert_eq!(lines.len(), 3, "{policy}:\n{stdout}");
    }
    // "0 3 * * 0" is crontab: Sunday.
    let first_sunday = stdout
        .lines()
        .skip_while(|l| !l.starts_with("policy orders-db "))
        .nth(1)
        .unwrap_or("");
    let date = first_sunday.trim().split(' ').next().unwrap_or("");
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d")
        .unwrap_or_else(|e| panic!("{date}: {e}"));
    assert_eq!(
        chrono::Datelike::weekday(&day),
        chrono::Weekday::Sun,
        "{first_sunday}"
    );
    assert!(s.fake.requests().is_empty(), "check sends nothing");
    assert!(!stdout.contains(ACME_TOKEN) && !stdout.contains(BETA_TOKEN));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_notification_goes_out_and_its_failure_never_fails_the_rotation() {
    let s = Scenario::new().await;
    let policies = RANDOM_POLICIES.replacen(
        "schedule = \"0 3 * * 0\"",
        "schedule = \"0 3 * * 0\"\nnotify-dashboard = true",
        1,
    );
    let config = s.write_config(&policies);
    // store_a2: the push succeeds, then the PATCH is refused.
    s.fake.script(
        ACME,
        "store_a2",
        vec![
            Scripted::normal(),
            Scripted::vercel_error(403, "forbidden", "no banners for you"),
        ],
    );
    let out = s
        .run(&config, &["run", "--once", "--policy", "orders-db"])
        .await;
    assert_exit(&out, 0);
    let notes = s.fake.notifications(ACME, "store_a1");
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(notes[0].level, "warn");
    assert!(
        notes[0].title.to_lowercase().contains("redeploy"),
        "{notes:?}"
    );
    let message = notes[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("ACME_DATABASE_URL") && message.contains("redeploy"),
        "{message}"
    );
    let patch = s
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "PATCH")
        .unwrap_or_else(|| panic!("no PATCH"));
    let body = patch.body.json().cloned().unwrap_or_default();
    assert_eq!(
        body.as_object().map(|o| o.len()),
        Some(1),
        "only `notification` is sent: {body}"
    );
    assert!(s.fake.secrets(ACME, "store_a2").contains_key("PGPASSWORD"));
    assert!(
        cli::stderr(&out).contains("dashboard notification failed"),
        "{}",
        cli::stderr(&out)
    );
    // The policy without notify-dashboard sent no PATCH.
    assert!(s.fake.notifications(BETA, "store_b1").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_in_flight_never_exceed_max_concurrent_requests() {
    let s = Scenario::new().await;
    let resources: Vec<String> = (0..8).map(|i| format!("store_c{i}")).collect();
    for r in &resources {
        s.fake.add_resource(ACME, r);
    }
    let latency = Duration::from_millis(150);
    s.fake.set_latency(latency);
    let list = resources
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let policies = format!(
        r#"[[policies]]
name = "many"
installation = "acme"
resources = [{list}]
every = "30d"
provider = {{ kind = "random" }}

[[policies.secrets]]
name = "PASSWORD"
value = "{{password}}"
"#
    );
    let config = s.write_config(&policies);
    cli::limit_requests(&config, 2);
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    let mut arrivals: Vec<_> = s.fake.requests().into_iter().map(|r| r.at).collect();
    arrivals.sort();
    assert_eq!(arrivals.len(), 8);
    // With at most 2 in flight, request i+2 can only start after request i has finished,
    // which takes at least the fake's latency.
    for w in arrivals.windows(3) {
        assert!(
            w[2] - w[0] >= latency,
            "3 requests in flight at once: {:?}",
            w[2] - w[0]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn provider_work_overlaps_requests_up_to_twice_max_concurrent_requests() {
    // With max-concurrent-requests = 1, two rotations are under way at once, so one's
    // provider call overlaps the other's request; never three.
    let s = Scenario::new().await;
    let resources: Vec<String> = (0..6).map(|i| format!("store_p{i}")).collect();
    for r in &resources {
        s.fake.add_resource(ACME, r);
    }
    let active = s.dir.path().join("active");
    std::fs::create_dir(&active).unwrap_or_else(|e| panic!("{e}"));
    let seen = s.dir.path().join("seen.log");
    // Each create marks itself active for 0.4 s and logs how many creates it saw active.
    let script = s.script(
        "provider.py",
        &format!(
            r#"import json, os, sys, time
req = json.load(sys.stdin)
if req["action"] == "create":
    mine = os.path.join({active:?}, req["rotation_id"])
    open(mine, "w").close()
    for _ in range(4):
        with open({seen:?}, "a") as f:
            f.write(str(len(os.listdir({active:?}))) + "\n")
        time.sleep(0.1)
    os.remove(mine)
    json.dump({{"handle": "h-" + req["rotation_id"][:8], "fields": {{"password": "pw"}}}}, sys.stdout)
else:
    json.dump({{}}, sys.stdout)
"#,
            active = active.display().to_string(),
            seen = seen.display().to_string(),
        ),
    );
    let list = resources
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let config = s.write_config(&format!(
        r#"[[policies]]
name = "slow"
installation = "acme"
resources = [{list}]
every = "30d"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}"], timeout = "20s" }}

[[policies.secrets]]
name = "PASSWORD"
value = "{{password}}"
"#,
        script = script.display()
    ));
    cli::limit_requests(&config, 1);
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    assert_eq!(s.fake.requests().len(), 6);
    let most = std::fs::read_to_string(&seen)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.parse::<usize>().ok())
        .max();
    assert_eq!(most, Some(2), "creates under way at once");
}

/// A command provider in Python that logs every call it gets to `calls.jsonl` (action, handle
/// and rotation id; never a value), answers `create` with `password` and a `username`, echoes
/// the password to stderr on `verify` (to prove stderr is scrubbed) and exits `verify_exit`.
fn recording_provider(s: &Scenario, password: &str, verify_exit: i32) -> PathBuf {
    let log = s.dir.path().join("calls.jsonl");
    s.script(
        "provider.py",
        &format!(
            r#"import json, sys
req = json.load(sys.stdin)
with open({log:?}, "a") as f:
    f.write(json.dumps({{"action": req["action"], "handle": req.get("handle"), "rotation_id": req.get("rotation_id")}}) + "\n")
if req["action"] == "create":
    json.dump({{"handle": "key-" + req["rotation_id"][:8], "fields": {{"username": "svc_" + req["resource"], "password": {password:?}}}}}, sys.stdout)
elif req["action"] == "verify":
    sys.stderr.write("verifying password " + req["fields"]["password"] + "\n")
    if {verify_exit} != 0:
        sys.exit({verify_exit})
    json.dump({{}}, sys.stdout)
elif req["action"] == "retire":
    json.dump({{}}, sys.stdout)
"#,
            log = log.display().to_string(),
        ),
    )
}

fn calls(s: &Scenario) -> Vec<Value> {
    std::fs::read_to_string(s.dir.path().join("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn command_policy(script: &Path, value: &str) -> String {
    format!(
        r#"[[policies]]
name = "api"
installation = "acme"
resources = ["store_a1"]
every = "30d"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}"], timeout = "20s" }}

[[policies.secrets]]
name = "API_URL"
value = "{value}"
"#,
        script = script.display()
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_canary_from_a_command_provider_reaches_vercel_and_no_output_at_trace() {
    const CANARY: &str = "pw-CANARY-7d1e55aa90";
    let s = Scenario::new().await;
    let script = recording_provider(&s, CANARY, 0);
    let config = s.write_config(&command_policy(
        &script,
        "https://{username}:{password}@api.example.com",
    ));
    for format in ["text", "json"] {
        let out = s
            .run_env(
                &config,
                &["--log-format", format, "run", "--once"],
                &[("RUST_LOG", "trace"), ("BETA_TOKEN", BETA_TOKEN)],
            )
            .await;
        assert_exit(&out, 0);
        let stored = s.fake.secrets(ACME, "store_a1");
        assert_eq!(
            stored["API_URL"].value,
            format!("https://svc_store_a1:{CANARY}@api.example.com")
        );
        let (stdout, stderr) = (cli::stdout(&out), cli::stderr(&out));
        assert!(stderr.lines().count() > 5, "trace logging is on: {stderr}");
        if format == "json" {
            assert!(
                stderr
                    .lines()
                    .all(|l| serde_json::from_str::<Value>(l).is_ok()),
                "{stderr}"
            );
        }
        for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(
                !text.contains(CANARY),
                "{format}: the value leaked to {what}:\n{text}"
            );
            assert!(
                !text.contains(ACME_TOKEN),
                "{format}: the token leaked to {what}"
            );
        }
        // The provider's own stderr (which echoes the password) was logged, scrubbed.
        assert!(
            stderr.contains("[REDACTED]") || !stderr.contains("verifying password"),
            "{stderr}"
        );
    }
    let actions: Vec<String> = calls(&s)
        .iter()
        .map(|c| c["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["create", "verify", "create", "verify"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_verify_pushes_nothing_and_retires_the_new_credential() {
    let s = Scenario::new().await;
    let script = recording_provider(&s, "pw-verify-fails", 1);
    let config = s.write_config(&command_policy(&script, "{password}"));
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    assert!(
        s.fake.requests().is_empty(),
        "nothing is pushed when verify fails"
    );
    let calls = calls(&s);
    let actions: Vec<&str> = calls
        .iter()
        .map(|c| c["action"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(actions, ["create", "verify", "retire"], "{calls:?}");
    let rotation_id = calls[0]["rotation_id"].as_str().unwrap_or("");
    assert_eq!(
        calls[2]["handle"].as_str(),
        Some(format!("key-{}", &rotation_id[..8]).as_str())
    );
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("FAILED (transient)") && stdout.contains("verify"),
        "{stdout}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_template_field_the_provider_never_returned_fails_permanently_and_retires() {
    let s = Scenario::new().await;
    let script = recording_provider(&s, "pw-missing-field", 0);
    let config = s.write_config(&command_policy(&script, "{password}:{api_key}"));
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    assert!(s.fake.requests().is_empty());
    let stdout = cli::stdout(&out);
    assert!(stdout.contains("FAILED (permanent)"), "{stdout}");
    assert!(
        stdout.contains("no field `api_key` (it returned: password, username)"),
        "{stdout}"
    );
    assert!(!stdout.contains("pw-missing-field"));
    let actions: Vec<String> = calls(&s)
        .iter()
        .map(|c| c["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["create", "verify", "retire"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_push_retires_the_new_credential_but_an_ambiguous_one_keeps_it() {
    let s = Scenario::new().await;
    let script = recording_provider(&s, "pw-push-refused", 0);
    let config = s.write_config(&command_policy(&script, "{password}"));

    // 422: Vercel definitely kept the old values, so the new credential is retired.
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::vercel_error(422, "unprocessable", "no")],
    );
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    let actions: Vec<String> = calls(&s)
        .iter()
        .map(|c| c["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["create", "verify", "retire"]);

    // 503: Vercel may have applied it; retiring would leave Vercel holding a dead credential.
    std::fs::remove_file(s.dir.path().join("calls.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    s.fake.clear_scripts();
    s.fake.script(
        ACME,
        "store_a1",
        (0..60).map(|_| Scripted::status(503)).collect(),
    );
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    let actions: Vec<String> = calls(&s)
        .iter()
        .map(|c| c["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["create", "verify"]);

    // 503 then 422: the refusal comes after an attempt that may have been applied, so the
    // new credential stays live too.
    std::fs::remove_file(s.dir.path().join("calls.jsonl")).unwrap_or_else(|e| panic!("{e}"));
    s.fake.clear_scripts();
    s.fake.script(
        ACME,
        "store_a1",
        vec![
            Scripted::status(503),
            Scripted::vercel_error(422, "unprocessable", "no"),
        ],
    );
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    let stdout = cli::stdout(&out);
    assert!(stdout.contains("may hold the new values"), "{stdout}");
    let actions: Vec<String> = calls(&s)
        .iter()
        .map(|c| c["action"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(actions, ["create", "verify"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_usage_exits_2() {
    let s = Scenario::new().await;
    let config = s.write_config(RANDOM_POLICIES);
    for args in [
        &["run", "--dry-run"][..],
        &["frobnicate"][..],
        &["run", "--once", "--policy"][..],
    ] {
        let out = s.run(&config, args).await;
        assert_exit(&out, 2);
    }
    let out = s
        .run(Path::new("/nonexistent/config.toml"), &["check"])
        .await;
    assert_exit(&out, 2);
    assert!(cli::stderr(&out).contains("cannot read config /nonexistent/config.toml"));
    assert!(s.fake.requests().is_empty());
}
