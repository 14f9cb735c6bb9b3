//! Secret hygiene across every provider kind, through the real binary: `run --once` at
//! `RUST_LOG=trace` in both log formats, then the value Vercel now holds (the provider's fresh
//! password, pushed alone so the pushed value *is* the secret) and the Vercel token must be
//! absent from stdout, stderr, every file of the state directory and `status --json`.
//!
//! Providers needing a server (postgres, mysql, redis) skip when it is unreachable and fail
//! under `CI=true`, like their own tests.

use std::path::{Path, PathBuf};

use axum::Json;
use axum::routing::post;
use serde_json::{Value, json};

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;
use crate::common::pg_cluster::PgCluster;
use crate::common::services::{self, Mysql, Redis};

const INSTALLATION: &str = "icfg_hygiene";
const TOKEN: &str = "tok_HYGIENE_canary_77aa";

struct Run {
    fake: FakeVercel,
    dir: tempfile::TempDir,
}

impl Run {
    async fn new() -> Run {
        let fake = FakeVercel::start().await;
        fake.add_installation(INSTALLATION, TOKEN);
        fake.add_resource(INSTALLATION, "res_h");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        cli::write_token(dir.path(), "vercel.token", TOKEN);
        Run { fake, dir }
    }

    fn config(&self, provider: &str) -> PathBuf {
        let text = format!(
            r#"[vercel]
api-url = "{url}"

[state]
dir = "{state}"

[installations.h]
id = "{INSTALLATION}"
token-file = "{token}"

[[policies]]
name = "hyg"
installation = "h"
resources = ["res_h"]
every = "30d"
grace = "1s"
provider = {provider}

[[policies.secrets]]
name = "SECRET_VALUE"
value = "{{password}}"
"#,
            url = self.fake.url(),
            state = self.dir.path().join("state").display(),
            token = self.dir.path().join("vercel.token").display(),
        );
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    /// Two rotations (text, then JSON logs, both at trace) and a `status --json`; then every
    /// value Vercel was given, and the token, must be absent from all of it and the state.
    async fn rotate_and_check(&self, config: &Path) {
        let mut outputs = String::new();
        let mut values = Vec::new();
        for format in ["text", "json"] {
            // Past the 1 s grace, so providers with two alternating users rotate again.
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            let out = cli::run_async(
                vec![
                    "--config".into(),
                    config.display().to_string(),
                    "--log-format".into(),
                    format.into(),
                    "run".into(),
                    "--once".into(),
                ],
                vec![("RUST_LOG".into(), "trace".into())],
            )
            .await;
            assert_eq!(
                out.status.code(),
                Some(0),
                "{format}: {}\n{}",
                cli::stdout(&out),
                cli::stderr(&out)
            );
            outputs.push_str(&cli::stdout(&out));
            outputs.push_str(&cli::stderr(&out));
            let value = self
                .fake
                .secrets(INSTALLATION, "res_h")
                .get("SECRET_VALUE")
                .map(|s| s.value.clone())
                .unwrap_or_else(|| panic!("{format}: nothing pushed"));
            assert!(value.len() >= 16, "{format}: a real credential was pushed");
            values.push(value);
        }
        assert_ne!(values[0], values[1], "each run made a new credential");
        let status = cli::run_async(
            vec![
                "--config".into(),
                config.display().to_string(),
                "status".into(),
                "--json".into(),
            ],
            vec![],
        )
        .await;
        outputs.push_str(&cli::stdout(&status));
        outputs.push_str(&cli::stderr(&status));
        let mut state = String::new();
        for entry in
            std::fs::read_dir(self.dir.path().join("state")).unwrap_or_else(|e| panic!("{e}"))
        {
            let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
            if path.is_file() {
                state.push_str(&String::from_utf8_lossy(
                    &std::fs::read(&path).unwrap_or_default(),
                ));
            }
        }
        assert!(outputs.lines().count() > 20, "trace logging was on");
        for value in &values {
            assert!(
                !outputs.contains(value.as_str()),
                "a pushed value reached the output"
            );
            assert!(
                !state.contains(value.as_str()),
                "a pushed value reached the state"
            );
        }
        assert!(
            !outputs.contains(TOKEN) && !state.contains(TOKEN),
            "the token leaked"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn random_with_apply_leaks_nothing() {
    let run = Run::new().await;
    let apply = services::write_file(
        run.dir.path(),
        "apply.py",
        "import json, sys\njson.load(sys.stdin)\nsys.stderr.write('applied\\n')",
        0o600,
    );
    let config = run.config(&format!(
        "{{ kind = \"random\", apply = [\"/usr/bin/env\", \"python3\", \"{}\"] }}",
        apply.display()
    ));
    run.rotate_and_check(&config).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn http_leaks_nothing() {
    let run = Run::new().await;
    let app = axum::Router::new().route(
        "/rotate",
        post(|Json(req): Json<Value>| async move {
            match req["action"].as_str() {
                Some("create") => Json(json!({
                    "handle": format!("k-{}", &req["rotation_id"].as_str().unwrap_or("x")[..8]),
                    "fields": {"password": format!("HTTPCANARY{}", services::unique_id())},
                })),
                _ => Json(json!({})),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    let token = services::write_file(run.dir.path(), "partner.token", "partner_tok_CANARY", 0o600);
    let config = run.config(&format!(
        "{{ kind = \"http\", url = \"http://{addr}/rotate\", token-file = \"{}\" }}",
        token.display()
    ));
    run.rotate_and_check(&config).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_leaks_nothing() {
    let Some(redis) = Redis::connect_or_skip("redis_leaks_nothing").await else {
        return;
    };
    let run = Run::new().await;
    let user = format!("hyg_{}", services::unique_id());
    redis
        .acl(&[
            "SETUSER",
            &user,
            "on",
            ">initial-password-1234",
            "~*",
            "+@all",
        ])
        .await;
    let admin = services::write_file(
        run.dir.path(),
        "redis.url",
        &redis.url_as("default", ""),
        0o600,
    );
    let config = run.config(&format!(
        "{{ kind = \"redis\", admin-url-file = \"{}\", user = \"{user}\" }}",
        admin.display()
    ));
    run.rotate_and_check(&config).await;
    redis.acl(&["DELUSER", &user]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_leaks_nothing() {
    let Some(mysql) = Mysql::connect_or_skip("mysql_leaks_nothing").await else {
        return;
    };
    let run = Run::new().await;
    let id = services::unique_id();
    let (a, b) = (format!("hyg_a_{id}"), format!("hyg_b_{id}"));
    let _users = mysql
        .create_users(&[(a.as_str(), "initialA1"), (b.as_str(), "initialB1")])
        .await;
    let admin = services::write_file(
        run.dir.path(),
        "mysql.url",
        &mysql.url_as("root", ""),
        0o600,
    );
    let config = run.config(&format!(
        "{{ kind = \"mysql\", admin-url-file = \"{}\", users = [\"{a}\", \"{b}\"] }}",
        admin.display()
    ));
    run.rotate_and_check(&config).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_leaks_nothing() {
    let Some(pg) = PgCluster::start_or_skip("postgres_leaks_nothing") else {
        return;
    };
    pg.create_login_roles(&["hyg_a", "hyg_b"]).await;
    let run = Run::new().await;
    let admin = services::write_file(run.dir.path(), "pg.url", &pg.superuser_url(), 0o600);
    let config = run.config(&format!(
        "{{ kind = \"postgres\", admin-url-file = \"{}\", users = [\"hyg_a\", \"hyg_b\"] }}",
        admin.display()
    ));
    run.rotate_and_check(&config).await;
    // The plaintext never reaches the server either: only a SCRAM verifier is sent.
    let value = run
        .fake
        .secrets(INSTALLATION, "res_h")
        .get("SECRET_VALUE")
        .map(|s| s.value.clone())
        .unwrap_or_default();
    assert!(
        !pg.log_text().contains(&value),
        "the plaintext reached the server log"
    );
}
