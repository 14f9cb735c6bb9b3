//! `token-command` end to end: the real binary, a python3 stand-in for the partner's token
//! service, the fake Vercel. What a partner would notice: the command's token reaches Vercel,
//! it is asked for once per run (not per resource), a refused token is asked for once more, a
//! failing command fails only its installation, `check` and dry runs leave it alone, and the
//! token shows up nowhere.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;

const ACME: &str = "icfg_acme";
const BETA: &str = "icfg_beta";
const BETA_TOKEN: &str = "tok_beta_CANARY_1c9e02";
/// The command answers this followed by its call number: `..._1`, `..._2`.
const TOKEN_PREFIX: &str = "tok_cmd_CANARY_4f2a91_";

/// Installation `acme` takes its token from a command (resources store_a1, store_a2);
/// `beta` from the environment (store_b1).
struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
    program: PathBuf,
}

impl Scenario {
    /// `acme_token` is the token the fake accepts for `acme`.
    async fn new(acme_token: &str) -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, acme_token);
        fake.add_installation(BETA, BETA_TOKEN);
        for (i, r) in [(ACME, "store_a1"), (ACME, "store_a2"), (BETA, "store_b1")] {
            fake.add_resource(i, r);
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let program = dir.path().join("acme-vercel-token");
        let script = format!(
            r#"#!/usr/bin/env python3
import json, os, sys
req = json.load(sys.stdin)
log = {log:?}
with open(log, "a") as f:
    f.write(json.dumps({{"request": req, "argv": sys.argv[1:], "env": sorted(os.environ)}}) + "\n")
n = sum(1 for _ in open(log))
if sys.argv[1] == "fail":
    sys.stderr.write("token service down\n")
    sys.exit(1)
token = {prefix:?} + str(n)
# Echoed on stderr, which the daemon may log: it must come out scrubbed.
sys.stderr.write("issued " + token + "\n")
json.dump({{"token": token, "expires_in": 3600}}, sys.stdout)
"#,
            log = dir.path().join("token-calls.jsonl").display().to_string(),
            prefix = TOKEN_PREFIX,
        );
        std::fs::write(&program, script).unwrap_or_else(|e| panic!("{e}"));
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("{e}"));
        Scenario { fake, dir, program }
    }

    /// A config whose token command runs in `mode` (`ok` or `fail`).
    fn write_config(&self, mode: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        let config = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "2s"
retry-deadline = "3s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-command = ["{program}", "{mode}"]

[installations.beta]
id = "{BETA}"
token-env = "BETA_TOKEN"

[[policies]]
name = "orders-db"
installation = "acme"
resources = ["store_a1", "store_a2"]
every = "30d"
provider = {{ kind = "random", length = 32, charset = "base64url" }}

[[policies.secrets]]
name = "PGPASSWORD"
value = "{{password}}"

[[policies]]
name = "cache"
installation = "beta"
resources = ["store_b1"]
every = "30d"
provider = {{ kind = "random", length = 24, charset = "base64url" }}

[[policies.secrets]]
name = "REDIS_PASSWORD"
value = "{{password}}"
"#,
            url = self.fake.url(),
            state = self.state_dir().display(),
            program = self.program.display(),
        );
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Every call the token command got, in order.
    fn calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("token-calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
            .collect()
    }

    fn forget_calls(&self) {
        let _ = std::fs::remove_file(self.dir.path().join("token-calls.jsonl"));
    }

    async fn run(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        let mut env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        env.push(("BETA_TOKEN".to_owned(), BETA_TOKEN.to_owned()));
        cli::run_async(all, env).await
    }

    /// Whether `resource` of `installation` holds a secret named `name`.
    fn has_secret(&self, installation: &str, resource: &str, name: &str) -> bool {
        self.fake.secrets(installation, resource).contains_key(name)
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

#[tokio::test(flavor = "multi_thread")]
async fn a_command_token_pushes_and_is_asked_for_once_for_two_resources() {
    let s = Scenario::new(&format!("{TOKEN_PREFIX}1")).await;
    let config = s.write_config("ok");
    let out = s.run(&config, &["run", "--once"], &[]).await;
    assert_exit(&out, 0);
    for resource in ["store_a1", "store_a2"] {
        assert!(s.has_secret(ACME, resource, "PGPASSWORD"), "{resource}");
    }
    assert!(s.has_secret(BETA, "store_b1", "REDIS_PASSWORD"));
    let calls = s.calls();
    assert_eq!(calls.len(), 1, "one call for two resources: {calls:?}");
    // The protocol's request, the config's arguments, and an environment without the
    // daemon's tokens.
    assert_eq!(
        calls[0]["request"],
        serde_json::json!({"action": "token", "installation_id": ACME})
    );
    assert_eq!(calls[0]["argv"], serde_json::json!(["ok"]));
    let env = calls[0]["env"].to_string();
    assert!(!env.contains("BETA_TOKEN"), "{env}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_drops_the_token_and_asks_once_more() {
    // The fake takes only the second token the command hands out.
    let s = Scenario::new(&format!("{TOKEN_PREFIX}2")).await;
    let config = s.write_config("ok");
    let out = s.run(&config, &["run", "--once"], &[]).await;
    assert_exit(&out, 0);
    for resource in ["store_a1", "store_a2"] {
        assert!(s.has_secret(ACME, resource, "PGPASSWORD"), "{resource}");
    }
    // Both resources were refused the first token; one new token serves both.
    assert_eq!(s.calls().len(), 2, "{:?}", s.calls());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_401_fails_permanently_with_the_usual_message() {
    let s = Scenario::new("tok_the_fake_takes_no_command_token").await;
    let config = s.write_config("ok");
    let out = s
        .run(
            &config,
            &["run", "--once", "--policy", "orders-db/store_a1"],
            &[],
        )
        .await;
    assert_exit(&out, 1);
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("Vercel refused the token of installation \"acme\""),
        "{stdout}"
    );
    // Asked once more after the first 401, and not again: the second 401 is permanent.
    assert_eq!(s.calls().len(), 2, "{:?}", s.calls());
    let puts = s
        .fake
        .requests()
        .iter()
        .filter(|r| r.path.ends_with("/secrets"))
        .count();
    assert_eq!(puts, 2);
    assert!(!s.has_secret(ACME, "store_a1", "PGPASSWORD"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_token_command_fails_only_its_installation() {
    let s = Scenario::new(&format!("{TOKEN_PREFIX}1")).await;
    let config = s.write_config("fail");
    let out = s.run(&config, &["run", "--once"], &[]).await;
    assert_exit(&out, 1);
    assert!(s.has_secret(BETA, "store_b1", "REDIS_PASSWORD"));
    assert!(!s.has_secret(ACME, "store_a1", "PGPASSWORD"));
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("token command for installation icfg_acme failed")
            && stdout.contains("token service down"),
        "{stdout}"
    );
    assert!(
        s.fake.requests().iter().all(|r| !r.path.contains(ACME)),
        "nothing is sent for acme without a token"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn check_and_dry_run_do_not_run_the_token_command() {
    let s = Scenario::new(&format!("{TOKEN_PREFIX}1")).await;
    let config = s.write_config("ok");
    let out = s.run(&config, &["check"], &[]).await;
    assert_exit(&out, 0);
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains(&format!(
            "installation acme ({ACME}): token from token command {}: not run by check",
            s.program.display()
        )),
        "{stdout}"
    );
    let out = s.run(&config, &["run", "--once", "--dry-run"], &[]).await;
    assert_exit(&out, 0);
    assert!(
        !cli::stderr(&out).contains("token cannot be read"),
        "{}",
        cli::stderr(&out)
    );
    assert!(s.calls().is_empty(), "{:?}", s.calls());
    assert!(s.fake.requests().is_empty());
}

/// Every file under `dir`, read whole.
fn files_under(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push((path, bytes));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_command_token_shows_in_no_output_log_or_state() {
    // The refused first token and the accepted second one both go through every path: the
    // 401, the retry, the command's stderr (which echoes the token).
    let s = Scenario::new(&format!("{TOKEN_PREFIX}2")).await;
    let config = s.write_config("ok");
    for format in ["text", "json"] {
        s.forget_calls();
        let out = s
            .run(
                &config,
                &["--log-format", format, "run", "--once"],
                &[("RUST_LOG", "trace")],
            )
            .await;
        assert_exit(&out, 0);
        assert_eq!(s.calls().len(), 2, "{format}: {:?}", s.calls());
        let (stdout, stderr) = (cli::stdout(&out), cli::stderr(&out));
        assert!(stderr.lines().count() > 5, "trace logging is on: {stderr}");
        assert!(
            stderr.contains("issued [REDACTED]"),
            "{format}: the command's stderr is logged, scrubbed: {stderr}"
        );
        for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
            assert!(
                !text.contains("CANARY_4f2a91") && !text.contains(BETA_TOKEN),
                "{format}: a token leaked to {what}:\n{text}"
            );
        }
    }
    let state = files_under(&s.state_dir());
    assert!(!state.is_empty(), "the run left a state");
    for (path, bytes) in state {
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("CANARY_4f2a91"),
            "a token leaked to {}",
            path.display()
        );
    }
}
