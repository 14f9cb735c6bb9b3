//! More of fleets end to end (issue 11), through the real binary against the fake Vercel:
//! installations from a command with tokens from a command, a 401 on the listing, templates
//! in a provider's arguments, `check` with `[discovery]`, the config's refusals, a postgres
//! policy serving several discovered resources, and two policies on one secret.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::str::FromStr;

use serde_json::{Map, Value, json};

use crate::common::cli;
use crate::common::fake_vercel::{FakeVercel, Listing};
use crate::common::pg_cluster::PgCluster;
use crate::common::services::{unique_id, write_file};

const A: &str = "icfg_moreA";
const B: &str = "icfg_moreB";
/// The token command's answer for an installation in `per-id` mode.
fn token(id: &str) -> String {
    format!("tok_{id}_CANARY_5d1e")
}
/// In `counter` mode the token command answers this followed by its call number.
const COUNTER_PREFIX: &str = "tok_counter_CANARY_93b7_";

fn listing(product: &str, metadata: &[(&str, &str)]) -> Listing {
    let mut map = Map::new();
    for (k, v) in metadata {
        map.insert((*k).into(), json!(v));
    }
    Listing {
        name: None,
        product_id: Some(product.into()),
        status: Some("ready".into()),
        metadata: map,
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

fn write_program(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700)).unwrap();
}

/// A fleet whose installations come from a python3 stand-in for the partner's
/// `installations-command` (answering the ids in `ids.txt`, failing while `fail` exists) and
/// whose tokens come from a stand-in `token-command`.
struct Scene {
    fake: FakeVercel,
    dir: tempfile::TempDir,
}

impl Scene {
    async fn new() -> Scene {
        let fake = FakeVercel::start().await;
        let dir = tempfile::tempdir().unwrap();
        let s = Scene { fake, dir };
        write_program(
            &s.path("installations-cmd"),
            &format!(
                r#"#!/usr/bin/env python3
import json, os, sys
req = json.load(sys.stdin)
assert req == {{"action": "installations"}}, req
if os.path.exists({fail:?}):
    sys.stderr.write("inventory service down\n")
    sys.exit(1)
ids = [l.strip() for l in open({ids:?}) if l.strip()]
json.dump({{"installations": [{{"id": i}} for i in ids], "generated_at": 1}}, sys.stdout)
"#,
                fail = s.path("fail").display().to_string(),
                ids = s.path("ids.txt").display().to_string(),
            ),
        );
        write_program(
            &s.path("token-cmd"),
            &format!(
                r#"#!/usr/bin/env python3
import json, sys
req = json.load(sys.stdin)
log = {log:?}
with open(log, "a") as f:
    f.write(json.dumps(req) + "\n")
n = sum(1 for _ in open(log))
if sys.argv[1] == "counter":
    token = {prefix:?} + str(n)
else:
    token = "tok_" + req["installation_id"] + "_CANARY_5d1e"
sys.stderr.write("issued " + token + "\n")
json.dump({{"token": token, "expires_in": 3600}}, sys.stdout)
"#,
                log = s.path("token-calls.jsonl").display().to_string(),
                prefix = COUNTER_PREFIX,
            ),
        );
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The installations the command answers from now on.
    fn answer(&self, ids: &[&str]) {
        std::fs::write(self.path("ids.txt"), ids.join("\n")).unwrap();
    }

    fn fail_command(&self, fail: bool) {
        if fail {
            std::fs::write(self.path("fail"), "").unwrap();
        } else {
            let _ = std::fs::remove_file(self.path("fail"));
        }
    }

    fn token_calls(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("token-calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// A config with `[discovery]` from the two commands (`token_mode`: `per-id` or
    /// `counter`), followed by `policies`.
    fn config(&self, token_mode: &str, policies: &str) -> PathBuf {
        let path = self.path("config.toml");
        let text = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "2s"
retry-deadline = "3s"

[state]
dir = "{state}"

[discovery]
installations-command = ["{icmd}"]
token-command = ["{tcmd}", "{token_mode}"]
every = "10m"

{policies}"#,
            url = self.fake.url(),
            state = self.path("state").display(),
            icmd = self.path("installations-cmd").display(),
            tcmd = self.path("token-cmd").display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    async fn run(&self, config: &Path, args: &[&str]) -> Output {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        cli::run_async(all, vec![("RUST_LOG".to_owned(), "debug".to_owned())]).await
    }

    fn secret(&self, installation: &str, resource: &str, name: &str) -> Option<String> {
        self.fake
            .secrets(installation, resource)
            .get(name)
            .map(|s| s.value.clone())
    }

    async fn status_json(&self, config: &Path) -> Value {
        let out = self.run(config, &["status", "--json"]).await;
        assert_exit(&out, 0);
        serde_json::from_str(&cli::stdout(&out)).unwrap()
    }
}

fn in_config(status: &Value, policy: &str, resource: &str) -> Option<bool> {
    status["resources"].as_array()?.iter().find_map(|r| {
        (r["key"]["policy"] == policy && r["key"]["resource"] == resource)
            .then(|| r["in_config"].as_bool().unwrap_or(false))
    })
}

const RANDOM_POLICY: &str = r#"[[policies]]
name = "pg-all"
installations = "*"
resources = { product-ids = ["prod_pg"] }
every = "30d"
provider = { kind = "random", length = 32, charset = "hex" }

[[policies.secrets]]
name = "DB_PASSWORD"
value = "{password}"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn installations_from_a_command_are_listed_rotated_and_wound_down_when_dropped() {
    let s = Scene::new().await;
    for (i, r) in [(A, "db_a1"), (B, "db_b1")] {
        s.fake.add_installation(i, &token(i));
        s.fake.add_resource(i, r);
        s.fake.set_listing(i, r, listing("prod_pg", &[]));
    }
    s.fake.add_resource(A, "kv_a2");
    s.fake.set_listing(A, "kv_a2", listing("prod_redis", &[]));
    s.answer(&[A, B]);
    let config = s.config("per-id", RANDOM_POLICY);

    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    let a1 = s.secret(A, "db_a1", "DB_PASSWORD").expect("db_a1 rotated");
    let b1 = s.secret(B, "db_b1", "DB_PASSWORD").expect("db_b1 rotated");
    assert!(
        s.secret(A, "kv_a2", "DB_PASSWORD").is_none(),
        "not selected"
    );
    // Each installation asked the token command with its own id (the fake takes only that).
    let mut asked: Vec<String> = s
        .token_calls()
        .iter()
        .map(|c| c["installation_id"].as_str().unwrap().to_owned())
        .collect();
    asked.sort();
    asked.dedup();
    assert_eq!(asked, [A, B]);
    let all = format!("{}{}", cli::stdout(&out), cli::stderr(&out));
    assert!(!all.contains("CANARY"), "a token leaked:\n{all}");

    // The command stops answering B: B's resource gets no new rotation and leaves the config.
    s.answer(&[A]);
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    let a1_again = s.secret(A, "db_a1", "DB_PASSWORD").unwrap();
    assert_ne!(a1_again, a1, "db_a1 is rotated again");
    assert_eq!(
        s.secret(B, "db_b1", "DB_PASSWORD").as_deref(),
        Some(b1.as_str()),
        "a dropped installation's resource was rotated"
    );
    let status = s.status_json(&config).await;
    assert_eq!(
        in_config(&status, "pg-all", "db_a1"),
        Some(true),
        "{status}"
    );
    assert_ne!(
        in_config(&status, "pg-all", "db_b1"),
        Some(true),
        "{status}"
    );

    // A failing installations-command changes nothing: A is still known and rotated, and
    // B does not come back.
    s.fail_command(true);
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    assert!(
        cli::stderr(&out).contains("inventory service down"),
        "the failure is logged:\n{}",
        cli::stderr(&out)
    );
    assert_ne!(s.secret(A, "db_a1", "DB_PASSWORD").unwrap(), a1_again);
    assert_eq!(s.secret(B, "db_b1", "DB_PASSWORD"), Some(b1));
    let status = s.status_json(&config).await;
    assert_eq!(
        in_config(&status, "pg-all", "db_a1"),
        Some(true),
        "{status}"
    );
    assert_ne!(
        in_config(&status, "pg-all", "db_b1"),
        Some(true),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_401_on_the_listing_asks_the_token_command_once_more() {
    let s = Scene::new().await;
    // The fake takes only the second token the command hands out.
    s.fake.add_installation(A, &format!("{COUNTER_PREFIX}2"));
    s.fake.add_resource(A, "db_a1");
    s.fake.set_listing(A, "db_a1", listing("prod_pg", &[]));
    s.answer(&[A]);
    let config = s.config("counter", RANDOM_POLICY);
    let mut all = vec!["--config".to_owned(), config.display().to_string()];
    all.extend(["run", "--once"].map(str::to_owned));
    let out = cli::run_async(all, vec![("RUST_LOG".to_owned(), "trace".to_owned())]).await;
    assert_exit(&out, 0);
    assert!(s.secret(A, "db_a1", "DB_PASSWORD").is_some(), "rotated");
    assert_eq!(s.token_calls().len(), 2, "{:?}", s.token_calls());
    // The listing was refused once, then taken.
    let lists: Vec<_> = s
        .fake
        .answers()
        .into_iter()
        .filter(|a| a.method == "GET" && a.path.ends_with("/resources"))
        .map(|a| a.status)
        .collect();
    assert_eq!(lists, [Some(401), Some(200)]);
    let (stdout, stderr) = (cli::stdout(&out), cli::stderr(&out));
    assert!(stderr.lines().count() > 5, "trace logging is on: {stderr}");
    for (what, text) in [("stdout", &stdout), ("stderr", &stderr)] {
        assert!(
            !text.contains("CANARY"),
            "a token leaked to {what}:\n{text}"
        );
    }
}

/// Issue 11: one postgres policy serves every discovered `prod_pg` resource of the fleet
/// (three, in two installations) on the real server, with one admin file and users templated
/// per resource; each resource's pushed password logs in as its own user and as no other's.
#[tokio::test(flavor = "multi_thread")]
async fn a_postgres_policy_serves_several_discovered_resources_each_as_its_own_users() {
    let Some(pg) = PgCluster::start_or_skip("fleet_postgres_several_discovered_resources") else {
        return;
    };
    let uid = unique_id();
    let resources = [
        (A, format!("db_{uid}_1")),
        (A, format!("db_{uid}_2")),
        (B, format!("db_{uid}_3")),
    ];
    let roles: Vec<String> = resources
        .iter()
        .flat_map(|(_, r)| [format!("{r}_a"), format!("{r}_b")])
        .collect();
    pg.create_login_roles(&roles.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let s = Scene::new().await;
    for i in [A, B] {
        s.fake.add_installation(i, &token(i));
    }
    for (i, r) in &resources {
        s.fake.add_resource(i, r);
        s.fake.set_listing(i, r, listing("prod_pg", &[]));
    }
    // Another product in the same installation: not selected (it has no roles to rotate).
    s.fake.add_resource(A, "kv_other");
    s.fake
        .set_listing(A, "kv_other", listing("prod_redis", &[]));
    s.answer(&[A, B]);
    let admin = write_file(s.dir.path(), "admin.url", &pg.superuser_url(), 0o600);
    let config = s.config(
        "per-id",
        &format!(
            r#"[[policies]]
name = "pg-fleet"
installations = "*"
resources = {{ product-ids = ["prod_pg"] }}
every = "30d"
grace = "1s"
provider = {{ kind = "postgres", admin-url-file = "{admin}", users = ["{{resource.id}}_a", "{{resource.id}}_b"], timeout = "10s" }}

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://{{username}}:{{password}}@{{host}}:{{port}}/{{database}}"
"#,
            admin = admin.display(),
        ),
    );
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    assert!(s.fake.secrets(A, "kv_other").is_empty(), "not selected");
    let pushed: Vec<(String, String)> = resources
        .iter()
        .map(|(i, r)| {
            let url = s
                .secret(i, r, "DATABASE_URL")
                .unwrap_or_else(|| panic!("{r}: nothing pushed"));
            let parsed = tokio_postgres::Config::from_str(&url).unwrap();
            let user = parsed.get_user().unwrap_or_default().to_owned();
            let password =
                String::from_utf8_lossy(parsed.get_password().unwrap_or_default()).into_owned();
            assert_eq!(user, format!("{r}_a"), "{r} pushes its own first user");
            (user, password)
        })
        .collect();
    for (n, (user, password)) in pushed.iter().enumerate() {
        if let Err(e) = pg.login(user, password).await {
            panic!("{user} cannot log in with its pushed password: {e:?}");
        }
        for (m, (other, _)) in pushed.iter().enumerate() {
            if m != n {
                assert!(
                    pg.login(other, password).await.is_err(),
                    "{user}'s password logs in as {other}"
                );
            }
        }
    }
    // Only the users the three rotations named got a password.
    let mut want: Vec<String> = pushed.iter().map(|(u, _)| u.clone()).collect();
    want.sort();
    assert_eq!(pg.roles_with_password().await, want);
}

/// A command provider that records its argv and request per resource and answers with a
/// credential named after the resource.
const RECORDING_PROVIDER: &str = r#"
import json, os, sys
request = json.load(sys.stdin)
out = os.path.join(os.path.dirname(os.path.abspath(sys.argv[0])), "calls")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, request["action"] + "-" + request["resource"] + ".json"), "w") as f:
    json.dump({"argv": sys.argv[1:], "request": request}, f)
if request["action"] == "create":
    print(json.dumps({"handle": "key-" + request["rotation_id"], "fields": {"password": "pw-" + request["resource"]}}))
else:
    print("{}")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn a_metadata_template_in_a_providers_argument_and_a_resource_lacking_the_key() {
    let s = Scene::new().await;
    s.fake.add_installation(A, &token(A));
    for (r, region) in [
        ("api_r1", Some("eu-west")),
        ("api_r2", Some("us-east")),
        ("api_r3", None),
    ] {
        s.fake.add_resource(A, r);
        let metadata: Vec<(&str, &str)> = region.map(|v| ("region", v)).into_iter().collect();
        s.fake.set_listing(A, r, listing("prod_api", &metadata));
    }
    s.answer(&[A]);
    let script = s.path("provider.py");
    std::fs::write(&script, RECORDING_PROVIDER).unwrap();
    let config = s.config(
        "per-id",
        &format!(
            r#"[[policies]]
name = "api-keys"
installations = "*"
resources = {{ product-ids = ["prod_api"] }}
every = "30d"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}", "--region={{resource.metadata.region}}", "{{resource.id}}"] }}

[[policies.secrets]]
name = "API_KEY"
value = "{{password}}"
"#,
            script = script.display()
        ),
    );
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    for (r, region) in [("api_r1", "eu-west"), ("api_r2", "us-east")] {
        let path = s.path("calls").join(format!("create-{r}.json"));
        let call: Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| {
                panic!(
                    "{r}: the provider was not called ({e})\n{}",
                    cli::stdout(&out)
                )
            }))
            .unwrap();
        assert_eq!(
            call["argv"],
            json!([format!("--region={region}"), r]),
            "{call}"
        );
        assert_eq!(call["request"]["installation_id"], A, "{call}");
        assert_eq!(
            call["request"]["resource_info"]["metadata"]["region"], region,
            "{call}"
        );
        assert_eq!(call["request"]["resource_info"]["product_id"], "prod_api");
        assert_eq!(
            s.secret(A, r, "API_KEY").as_deref(),
            Some(format!("pw-{r}").as_str())
        );
    }
    // The resource without the key fails alone, before its provider runs.
    assert!(!s.path("calls").join("create-api_r3.json").exists());
    assert!(s.secret(A, "api_r3", "API_KEY").is_none());
    let stdout = cli::stdout(&out);
    let line = stdout
        .lines()
        .find(|l| l.contains("api-keys/api_r3:"))
        .unwrap_or_else(|| panic!("no error for api_r3:\n{stdout}"));
    assert!(
        line.contains("{resource.metadata.region} has no value for resource \"api_r3\""),
        "{stdout}"
    );
}

/// A config discovering installations in `dir` (token files), with one random policy.
fn dir_config(s: &Scene, dir: &Path) -> PathBuf {
    let path = s.path("dir-config.toml");
    let text = format!(
        r#"[vercel]
api-url = "{url}"

[state]
dir = "{state}"

[discovery]
installations-dir = "{dir}"
every = "15m"

{RANDOM_POLICY}"#,
        url = s.fake.url(),
        state = s.path("state").display(),
        dir = dir.display(),
    );
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn check_reports_discovery_without_calling_vercel() {
    let s = Scene::new().await;
    let dir = s.path("installations");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    const C: &str = "icfg_moreC";
    for i in [A, B, C] {
        s.fake.add_installation(i, &token(i));
        cli::write_token(&dir, &format!("{i}.token"), &token(i));
    }
    std::fs::set_permissions(
        dir.join(format!("{C}.token")),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let config = dir_config(&s, &dir);
    let out = s.run(&config, &["check"]).await;
    assert_exit(&out, 0);
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains(&format!("installations from directory {}", dir.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!(
            "3 installations seen, 1 with an unreadable token ({C}"
        )),
        "{stdout}"
    );
    assert!(cli::stderr(&out).contains(C), "{}", cli::stderr(&out));
    let all = format!("{stdout}{}", cli::stderr(&out));
    assert!(!all.contains("CANARY"), "a token leaked:\n{all}");
    assert!(
        s.fake.requests().is_empty(),
        "check called Vercel: {:?}",
        s.fake.requests()
    );

    // A missing directory is an error of the config's, naming it.
    let missing = s.path("no-such-dir");
    let config = dir_config(&s, &missing);
    let out = s.run(&config, &["check"]).await;
    assert_exit(&out, 2);
    assert!(
        cli::stderr(&out).contains(&missing.display().to_string()),
        "{}",
        cli::stderr(&out)
    );
    assert!(s.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn fleet_configs_that_cannot_work_are_refused_naming_the_key() {
    let s = Scene::new().await;
    let dir = s.path("installations");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let discovery_dir = format!(
        "[discovery]\ninstallations-dir = \"{}\"\nevery = \"15m\"\n",
        dir.display()
    );
    let secret = "\n[[policies.secrets]]\nname = \"PASSWORD\"\nvalue = \"{password}\"\n";
    let cases: Vec<(&str, String, Vec<&str>)> = vec![
        (
            "postgres users shared by every selected resource",
            format!(
                r#"{discovery_dir}
[[policies]]
name = "pg-fleet"
installations = "*"
resources = {{ product-ids = ["prod_pg"] }}
every = "30d"
provider = {{ kind = "postgres", admin-url-file = "/etc/vsr/admin.url", users = ["app_a", "app_b"] }}
{secret}"#
            ),
            vec!["\"pg-fleet\": provider.users:", "app_a, app_b"],
        ),
        (
            "installation and installations",
            format!(
                r#"{discovery_dir}
[installations.acme]
id = "icfg_1"
token-env = "ACME_TOKEN"

[[policies]]
name = "both"
installation = "acme"
installations = "*"
resources = "*"
every = "30d"
provider = {{ kind = "random" }}
{secret}"#
            ),
            vec!["\"both\": installation: set either installation or installations"],
        ),
        (
            "a selector's unknown key",
            format!(
                r#"{discovery_dir}
[[policies]]
name = "typo"
installations = "*"
resources = {{ product-id = ["prod_pg"] }}
every = "30d"
provider = {{ kind = "random" }}
{secret}"#
            ),
            vec!["\"typo\": resources.product-id: unknown key"],
        ),
        (
            "installations-command without token-command",
            format!(
                r#"[discovery]
installations-command = ["/usr/local/libexec/acme-installations"]
every = "15m"

[[policies]]
name = "cmd"
installations = "*"
resources = "*"
every = "30d"
provider = {{ kind = "random" }}
{secret}"#
            ),
            vec!["discovery.token-command: is required with installations-command"],
        ),
    ];
    for (what, text, names) in cases {
        let config = s.path("refused.toml");
        std::fs::write(&config, text).unwrap();
        let out = s.run(&config, &["check"]).await;
        assert_eq!(
            out.status.code(),
            Some(2),
            "{what}: stdout:\n{}\nstderr:\n{}",
            cli::stdout(&out),
            cli::stderr(&out)
        );
        let stderr = cli::stderr(&out);
        for name in names {
            assert!(
                stderr.contains(name),
                "{what}: {name} is not named:\n{stderr}"
            );
        }
    }
    assert!(s.fake.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_policies_pushing_one_secret_to_a_discovered_resource_the_second_is_refused() {
    let s = Scene::new().await;
    s.fake.add_installation(A, &token(A));
    s.fake.add_resource(A, "db_x");
    s.fake.set_listing(A, "db_x", listing("prod_pg", &[]));
    s.fake.add_resource(A, "kv_y");
    s.fake.set_listing(A, "kv_y", listing("prod_redis", &[]));
    s.answer(&[A]);
    // A provider answering "from-<its argument>".
    let script = s.path("labelled.py");
    std::fs::write(
        &script,
        "import json, sys\nreq = json.load(sys.stdin)\nprint(json.dumps({'handle': 'h', 'fields': {'password': 'from-' + sys.argv[1]}} if req['action'] == 'create' else {}))\n",
    )
    .unwrap();
    let policy = |name: &str, resources: &str| {
        format!(
            r#"[[policies]]
name = "{name}"
installations = "*"
resources = {resources}
every = "30d"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}", "{name}"] }}

[[policies.secrets]]
name = "DB_PASSWORD"
value = "{{password}}"
"#,
            script = script.display()
        )
    };
    let config = s.config(
        "per-id",
        &format!(
            "{}\n{}",
            policy("pg-only", r#"{ product-ids = ["prod_pg"] }"#),
            policy("everything", r#""*""#)
        ),
    );
    // Only a listing can tell that both select db_x: the config itself is fine.
    let out = s.run(&config, &["check"]).await;
    assert_exit(&out, 0);
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    assert_eq!(
        s.secret(A, "db_x", "DB_PASSWORD").as_deref(),
        Some("from-pg-only"),
        "the first policy rotates db_x:\n{}",
        cli::stdout(&out)
    );
    assert_eq!(
        s.secret(A, "kv_y", "DB_PASSWORD").as_deref(),
        Some("from-everything"),
        "the second policy still serves what only it selects:\n{}",
        cli::stdout(&out)
    );
    let stdout = cli::stdout(&out);
    let line = stdout
        .lines()
        .find(|l| l.contains("everything/db_x"))
        .unwrap_or_else(|| panic!("no error for everything/db_x:\n{stdout}"));
    assert!(
        line.contains("DB_PASSWORD") && line.contains("pg-only"),
        "the refusal names the secret and both policies:\n{stdout}"
    );
}
