//! `check --online` end to end: the real binary against the fake Vercel. One listing per
//! installation proves its token; each resource a policy names is looked up in it. What an
//! operator sees: a line per installation and per resource, the exit status, and errors that
//! name what to fix, never a token.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;

const ACME: &str = "icfg_acme";
const ACME_TOKEN: &str = "tok_acme_CANARY_online_7d1e";
const BETA: &str = "icfg_beta";
const BETA_TOKEN: &str = "tok_beta_CANARY_online_c403";

/// A fake with acme (token file; store_a1, store_a2) and beta (token in the environment;
/// store_b1), and a temp dir for the config.
struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
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
        Scenario { fake, dir }
    }

    /// A config against `api_url` with acme and beta, `extra` installations and one policy
    /// per installation listed in `policies` as (name, installation, resources).
    fn config(&self, api_url: &str, extra: &str, policies: &[(&str, &str, &[&str])]) -> PathBuf {
        let token = cli::write_token(self.dir.path(), "acme.token", ACME_TOKEN);
        let mut text = format!(
            r#"[vercel]
api-url = "{api_url}"
request-timeout = "1s"
retry-deadline = "2s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[installations.beta]
id = "{BETA}"
token-env = "BETA_TOKEN"
{extra}
"#,
            state = self.dir.path().join("state").display(),
            token = token.display(),
        );
        for (name, installation, resources) in policies {
            let resources: Vec<String> = resources.iter().map(|r| format!("{r:?}")).collect();
            text.push_str(&format!(
                r#"
[[policies]]
name = "{name}"
installation = "{installation}"
resources = [{}]
schedule = "0 3 * * 0"
provider = {{ kind = "random", length = 32, charset = "base64url" }}

[[policies.secrets]]
name = "API_KEY"
value = "{{password}}"
"#,
                resources.join(", ")
            ));
        }
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn standard(&self, extra: &str) -> PathBuf {
        self.config(
            &self.fake.url(),
            extra,
            &[
                ("orders", "acme", &["store_a1", "store_a2"]),
                ("cache", "beta", &["store_b1"]),
            ],
        )
    }

    async fn check(&self, config: &Path, args: &[&str], beta_token: &str) -> Output {
        let mut all = vec![
            "--config".to_owned(),
            config.display().to_string(),
            "check".to_owned(),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        cli::run_async(all, vec![("BETA_TOKEN".to_owned(), beta_token.to_owned())]).await
    }

    /// Nothing was changed at Vercel: every request the fake saw was a listing.
    fn only_listings(&self) {
        for request in self.fake.requests() {
            assert_eq!(request.method, "GET", "{request:?}");
            assert!(request.path.ends_with("/resources"), "{request:?}");
        }
    }
}

/// stdout and stderr together, checked for both tokens.
fn output_without_tokens(out: &Output) -> String {
    let text = format!("{}\n{}", cli::stdout(out), cli::stderr(out));
    for token in [ACME_TOKEN, BETA_TOKEN, "CANARY"] {
        assert!(!text.contains(token), "a token leaked:\n{text}");
    }
    text
}

#[tokio::test]
async fn check_online_all_ok() {
    let s = Scenario::new().await;
    let config = s.standard("");
    let out = s.check(&config, &["--online"], BETA_TOKEN).await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let stdout = cli::stdout(&out);
    for line in [
        "installation acme (icfg_acme): online: ok (2 resources)",
        "installation beta (icfg_beta): online: ok (1 resource)",
        "policy orders: resource store_a1 (installation acme): online: ok",
        "policy orders: resource store_a2 (installation acme): online: ok",
        "policy cache: resource store_b1 (installation beta): online: ok",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    assert_eq!(s.fake.requests().len(), 2);
    s.only_listings();
}

#[tokio::test]
async fn check_without_online_does_not_call_vercel() {
    let s = Scenario::new().await;
    let config = s.standard("");
    let out = s.check(&config, &[], BETA_TOKEN).await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(!text.contains("online:"), "{text}");
    assert!(s.fake.requests().is_empty());
}

#[tokio::test]
async fn check_online_a_refused_token_exits_2_and_names_the_installation() {
    let s = Scenario::new().await;
    let config = s.standard("");
    let out = s
        .check(&config, &["--online"], "tok_beta_wrong_CANARY_1")
        .await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(2), "{text}");
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("installation beta (icfg_beta): online: token refused"),
        "{stdout}"
    );
    assert!(
        stdout.contains("installation acme (icfg_acme): online: ok (2 resources)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy cache: resource store_b1 (installation beta): online: not checked"),
        "{stdout}"
    );
    let stderr = cli::stderr(&out);
    assert!(
        stderr
            .lines()
            .any(|l| l == "error: Vercel refused the token of installation beta"),
        "{stderr}"
    );
    s.only_listings();
}

#[tokio::test]
async fn check_online_an_unknown_installation_is_reported() {
    let s = Scenario::new().await;
    let config = s.standard(
        r#"
[installations.gone]
id = "icfg_gone"
token-env = "BETA_TOKEN"
"#,
    );
    let out = s.check(&config, &["--online"], BETA_TOKEN).await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        cli::stdout(&out).contains("installation gone (icfg_gone): online: unknown installation"),
        "{text}"
    );
    assert!(
        cli::stderr(&out).contains("error: installation gone:"),
        "{text}"
    );
}

#[tokio::test]
async fn check_online_a_resource_missing_from_the_listing_fails_naming_the_policy() {
    let s = Scenario::new().await;
    let config = s.config(
        &s.fake.url(),
        "",
        &[("orders", "acme", &["store_a1", "store_a9"])],
    );
    let out = s.check(&config, &["--online"], BETA_TOKEN).await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("policy orders: resource store_a9 (installation acme): online: missing"),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy orders: resource store_a1 (installation acme): online: ok"),
        "{stdout}"
    );
    assert!(
        cli::stderr(&out).contains(
            "error: policy orders: resource store_a9 is missing from the listing of installation acme"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn check_online_an_unreachable_api_is_reported() {
    let s = Scenario::new().await;
    // A port that was just free: nothing listens there.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    };
    let config = s.config(
        &format!("http://{closed}"),
        "",
        &[("orders", "acme", &["store_a1"])],
    );
    let out = s.check(&config, &["--online"], BETA_TOKEN).await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let stdout = cli::stdout(&out);
    for line in [
        "installation acme (icfg_acme): online: unreachable",
        "installation beta (icfg_beta): online: unreachable",
        "policy orders: resource store_a1 (installation acme): online: not checked (installation not listed)",
    ] {
        assert!(
            stdout.lines().any(|l| l == line),
            "no {line:?} in:\n{stdout}"
        );
    }
    assert!(
        cli::stderr(&out).contains("could not reach Vercel"),
        "{text}"
    );
}

#[tokio::test]
async fn check_online_runs_a_token_command_and_asks_again_after_a_401() {
    use std::os::unix::fs::PermissionsExt;
    let s = Scenario::new().await;
    s.fake
        .add_installation("icfg_gamma", "tok_gamma_CANARY_good");
    s.fake.add_resource("icfg_gamma", "store_g1");
    // The first token it gives is stale (Vercel refuses it); the second is good.
    let count = s.dir.path().join("count");
    let program = s.dir.path().join("gamma-token");
    std::fs::write(
        &program,
        format!(
            r#"#!/bin/sh
/bin/cat >/dev/null
if [ -e {count:?} ]; then
  echo '{{"token": "tok_gamma_CANARY_good", "expires_in": 3600}}'
else
  : > {count:?}
  echo '{{"token": "tok_gamma_CANARY_stale", "expires_in": 3600}}'
fi
"#,
            count = count.display().to_string()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700))
        .unwrap_or_else(|e| panic!("{e}"));
    let config = s.standard(&format!(
        "\n[installations.gamma]\nid = \"icfg_gamma\"\ntoken-command = [{:?}]\n",
        program.display().to_string()
    ));
    let out = s.check(&config, &["--online"], BETA_TOKEN).await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        cli::stdout(&out).contains("installation gamma (icfg_gamma): online: ok (1 resource)"),
        "{text}"
    );
    let gamma_calls: Vec<Option<String>> = s
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("icfg_gamma"))
        .map(|r| r.authorization)
        .collect();
    assert_eq!(
        gamma_calls,
        [
            Some("Bearer tok_gamma_CANARY_stale".to_owned()),
            Some("Bearer tok_gamma_CANARY_good".to_owned())
        ]
    );
}

/// A fleet's `check --online` lists its installations at once (within the client's
/// `max-concurrent-requests`), not one after another: with six installations answering
/// slowly, the fake sees several listings in flight together.
#[tokio::test]
async fn check_online_lists_installations_concurrently() {
    let s = Scenario::new().await;
    s.fake.set_latency(std::time::Duration::from_millis(300));
    let mut extra = String::new();
    for i in 0..6 {
        let (id, token) = (format!("icfg_fleet{i}"), format!("tok_fleet{i}_77ab"));
        s.fake.add_installation(&id, &token);
        let file = cli::write_token(s.dir.path(), &format!("fleet{i}.token"), &token);
        extra.push_str(&format!(
            "\n[installations.fleet{i}]\nid = \"{id}\"\ntoken-file = \"{}\"\n",
            file.display()
        ));
    }
    let config = s.standard(&extra);
    let out = s.check(&config, &["--online"], BETA_TOKEN).await;
    let text = output_without_tokens(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(s.fake.requests().len(), 8);
    let most = s.fake.max_in_flight();
    assert!(most >= 4, "at most {most} listings were in flight at once");
}
