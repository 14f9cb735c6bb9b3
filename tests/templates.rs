//! Per-resource templates and the per-target cap, through the binary against the fake Vercel:
//! `{installation.id}` and `{resource.id}` in secret values and in a command provider's
//! arguments, a value a resource lacks failing that resource only, and
//! `max-concurrent-per-target` holding calls against one target to its cap while another
//! target's run beside them.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;

const ACME: &str = "icfg_tmpl_acme";
const ACME_TOKEN: &str = "tok_tmpl_acme_3c9d";

struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
    token_file: PathBuf,
}

impl Scenario {
    async fn new(resources: &[&str]) -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        for r in resources {
            fake.add_resource(ACME, r);
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token_file = cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
        Scenario {
            fake,
            dir,
            token_file,
        }
    }

    fn write_config(&self, policies: &str) -> PathBuf {
        let text = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "5s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

{policies}"#,
            url = self.fake.url(),
            state = self.dir.path().join("state").display(),
            token = self.token_file.display(),
        );
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    async fn run(&self, config: &Path, args: &[&str]) -> Output {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        cli::run_async(all, Vec::new()).await
    }

    fn pushed(&self, resource: &str, name: &str) -> Option<String> {
        self.fake
            .secrets(ACME, resource)
            .get(name)
            .map(|s| s.value.clone())
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
async fn templates_secret_values_get_each_resources_id_and_the_installations_id() {
    let s = Scenario::new(&["store_t1", "store_t2"]).await;
    let config = s.write_config(
        r#"[[policies]]
name = "orders"
installation = "acme"
resources = ["store_t1", "store_t2"]
every = "30d"
provider = { kind = "random", length = 32 }

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://{resource.id}:{password}@{installation.id}.db.example.com/{resource.id}"
environment-overrides = { preview = "{{preview}}-{resource.id}-{password}" }
"#,
    );
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    for resource in ["store_t1", "store_t2"] {
        let value = s
            .pushed(resource, "DATABASE_URL")
            .unwrap_or_else(|| panic!("nothing pushed to {resource}"));
        let want_start = format!("postgres://{resource}:");
        let want_end = format!("@{ACME}.db.example.com/{resource}");
        assert!(
            value.starts_with(&want_start) && value.ends_with(&want_end),
            "{resource}: {value}"
        );
        let stored = s.fake.secrets(ACME, resource);
        let preview = stored["DATABASE_URL"]
            .environment_overrides
            .get("preview")
            .unwrap_or_else(|| panic!("no preview override: {stored:?}"));
        assert!(
            preview.starts_with(&format!("{{preview}}-{resource}-")),
            "{preview}"
        );
    }
}

/// A command provider that records its argv and its request per resource, and answers with a
/// fixed credential.
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
async fn templates_a_command_providers_arguments_get_each_resources_id() {
    let s = Scenario::new(&["store_c1", "store_c2"]).await;
    let script = s.script("provider.py", RECORDING_PROVIDER);
    let config = s.write_config(&format!(
        r#"[[policies]]
name = "api"
installation = "acme"
resources = ["store_c1", "store_c2"]
every = "30d"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}", "--resource={{resource.id}}", "--installation", "{{installation.id}}", "{{{{literal}}}}"] }}

[[policies.secrets]]
name = "API_KEY"
value = "{{password}}"
"#,
        script = script.display()
    ));
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    for resource in ["store_c1", "store_c2"] {
        let path = s
            .dir
            .path()
            .join("calls")
            .join(format!("create-{resource}.json"));
        let call: Value = serde_json::from_str(
            &std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}")),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            call["argv"],
            serde_json::json!([
                format!("--resource={resource}"),
                "--installation",
                ACME,
                "{literal}"
            ]),
            "{call}"
        );
        // The request names Vercel's installation id; a listed resource has no resource_info.
        assert_eq!(call["request"]["installation_id"], ACME, "{call}");
        assert_eq!(call["request"]["installation"], "acme", "{call}");
        assert!(call["request"].get("resource_info").is_none(), "{call}");
        assert_eq!(
            s.pushed(resource, "API_KEY").as_deref(),
            Some(format!("pw-{resource}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn templates_a_value_a_resource_lacks_fails_that_resource_and_the_others_rotate() {
    let s = Scenario::new(&["store_m1", "store_m2", "store_m3"]).await;
    let config = s.write_config(
        r#"[[policies]]
name = "tiered"
installation = "acme"
resources = ["store_m1"]
every = "30d"
provider = { kind = "random", length = 32 }

[[policies.secrets]]
name = "TIERED_URL"
value = "https://{resource.metadata.tier}.example.com/?key={password}"

[[policies]]
name = "plain"
installation = "acme"
resources = ["store_m2", "store_m3"]
every = "30d"
provider = { kind = "random", length = 32 }

[[policies.secrets]]
name = "PLAIN_KEY"
value = "{resource.id}-{password}"
"#,
    );
    // Loading the config is fine: only the resource can tell what it lacks.
    let out = s.run(&config, &["check"]).await;
    assert_exit(&out, 0);

    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 1);
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains(
            "secret TIERED_URL: {resource.metadata.tier} has no value for resource \"store_m1\" (installation icfg_tmpl_acme)"
        ),
        "{stdout}"
    );
    assert!(s.pushed("store_m1", "TIERED_URL").is_none());
    for resource in ["store_m2", "store_m3"] {
        let value = s
            .pushed(resource, "PLAIN_KEY")
            .unwrap_or_else(|| panic!("{resource} was not rotated:\n{stdout}"));
        assert!(value.starts_with(&format!("{resource}-")), "{value}");
    }
    // Permanent: the failed resource is not retried as if the next try could help.
    let status = s.run(&config, &["status", "--json"]).await;
    assert_exit(&status, 0);
    let json: Value = serde_json::from_slice(&status.stdout).unwrap_or_else(|e| panic!("{e}"));
    let tiered = json["resources"]
        .as_array()
        .and_then(|rs| rs.iter().find(|r| r["key"]["policy"] == "tiered"))
        .cloned()
        .unwrap_or(Value::Null);
    assert!(
        tiered.to_string().contains("\"transient\":false"),
        "the failure should be recorded as permanent: {tiered}"
    );
}

/// A command provider whose `create` counts, under flock, how many calls run at once per
/// target (its first argument) and overall; each call waits (10 s at most) until the overall
/// count has reached `want`, so calls that may overlap do.
const COUNTING_PROVIDER: &str = r#"
import fcntl, json, os, sys, time
request = json.load(sys.stdin)
target, want = sys.argv[1], int(sys.argv[2])
here = os.path.dirname(os.path.abspath(sys.argv[0]))
def update(change):
    with open(os.path.join(here, "counts.lock"), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = os.path.join(here, "counts.json")
        state = json.load(open(path)) if os.path.exists(path) else {"now": {}, "max": {}, "max_total": 0}
        change(state)
        with open(path, "w") as f:
            json.dump(state, f)
        return state
def enter(state):
    state["now"][target] = state["now"].get(target, 0) + 1
    state["max"][target] = max(state["max"].get(target, 0), state["now"][target])
    state["max_total"] = max(state["max_total"], sum(state["now"].values()))
def leave(state):
    state["now"][target] -= 1
if request["action"] == "create":
    update(enter)
    deadline = time.time() + 10
    while time.time() < deadline and update(lambda s: None)["max_total"] < want:
        time.sleep(0.05)
    update(leave)
    print(json.dumps({"handle": "key-" + request["rotation_id"], "fields": {"password": "pw-" + request["resource"]}}))
else:
    print("{}")
"#;

#[tokio::test(flavor = "multi_thread")]
async fn templates_max_concurrent_per_target_caps_calls_against_one_target_only() {
    let a: Vec<String> = (1..=5).map(|i| format!("store_a{i}")).collect();
    let b: Vec<String> = (1..=5).map(|i| format!("store_b{i}")).collect();
    let all: Vec<&str> = a.iter().chain(&b).map(String::as_str).collect();
    let s = Scenario::new(&all).await;
    let script = s.script("counting.py", COUNTING_PROVIDER);
    let policy = |name: &str, target: &str, resources: &[String]| {
        format!(
            r#"[[policies]]
name = "{name}"
installation = "acme"
resources = {resources:?}
every = "30d"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}", "{target}", "4"], max-concurrent-per-target = 2 }}

[[policies.secrets]]
name = "KEY_{target}"
value = "{{password}}"
"#,
            script = script.display()
        )
    };
    let config = s.write_config(&format!(
        "{}\n{}",
        policy("api-a", "A", &a),
        policy("api-b", "B", &b)
    ));
    let out = s.run(&config, &["run", "--once"]).await;
    assert_exit(&out, 0);
    let counts: Value = serde_json::from_str(
        &std::fs::read_to_string(s.dir.path().join("counts.json"))
            .unwrap_or_else(|e| panic!("{e}")),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for target in ["A", "B"] {
        let max = counts["max"][target].as_u64().unwrap_or(0);
        assert!(
            (1..=2).contains(&max),
            "target {target}: {max} calls at once, cap 2: {counts}"
        );
    }
    // The cap is per target: both targets' calls ran side by side.
    assert!(
        counts["max_total"].as_u64().unwrap_or(0) >= 3,
        "calls against two targets should overlap: {counts}"
    );
    for resource in &all {
        assert!(s.pushed(resource, "KEY_A").is_some() || s.pushed(resource, "KEY_B").is_some());
    }
}
