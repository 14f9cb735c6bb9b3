//! What an operator sees of rotations, through the real binary and the fake Vercel: the
//! `history` command (JSON and table, filtered by `--policy` and `--since`), the levels and
//! `message_id`s of the event log lines, and that no value reaches any of it.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use serde_json::Value;
use vercel_secret_rotator::events::EventKind;

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;

const ACME: &str = "icfg_observe";
const TOKEN: &str = "tok_OBSERVE_canary_1f2e3d";
/// Every password the provider makes starts with this: it must appear nowhere but at Vercel.
const CANARY: &str = "OBSVALUECANARY";

struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
}

impl Scenario {
    async fn new(resources: &[&str]) -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, TOKEN);
        for r in resources {
            fake.add_resource(ACME, r);
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        cli::write_token(dir.path(), "acme.token", TOKEN);
        let script = dir.path().join("provider.py");
        // create: a fresh credential named after the rotation id; retire: nothing to do.
        std::fs::write(
            &script,
            format!(
                r#"import json, secrets, sys
req = json.load(sys.stdin)
if req["action"] == "create":
    json.dump({{"handle": "key-" + req["rotation_id"][:8], "fields": {{"password": "{CANARY}" + secrets.token_hex(12)}}}}, sys.stdout)
else:
    json.dump({{}}, sys.stdout)
"#
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Scenario { fake, dir }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// A config with the policy `orders` over `resources` (grace 1 s) and `extra` appended.
    fn config(&self, resources: &[&str], extra: &str) -> PathBuf {
        let list = resources
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "2s"
retry-deadline = "3s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[[policies]]
name = "orders"
installation = "acme"
resources = [{list}]
every = "30d"
grace = "1s"
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{script}"], timeout = "20s" }}

[[policies.secrets]]
name = "PASSWORD"
value = "{{password}}"
{extra}"#,
            url = self.fake.url(),
            state = self.state().display(),
            token = self.dir.path().join("acme.token").display(),
            script = self.dir.path().join("provider.py").display(),
        );
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    async fn run(&self, config: &Path, args: &[&str]) -> Output {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        cli::run_async(all, vec![]).await
    }

    /// `history --json` with `args`, parsed.
    async fn history(&self, config: &Path, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["history", "--json"];
        all.extend(args);
        let out = self.run(config, &all).await;
        assert_exit(&out, 0);
        match serde_json::from_str::<Value>(&cli::stdout(&out)) {
            Ok(Value::Array(entries)) => entries,
            other => panic!("not a JSON array: {other:?}\n{}", cli::stdout(&out)),
        }
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

fn field<'a>(entry: &'a Value, key: &str) -> &'a str {
    entry[key].as_str().unwrap_or_default()
}

/// Three `run --once` a grace period apart: three rotations of each resource, and the third
/// retires what the second replaced. The history says so, per resource, filtered and not,
/// and holds no value.
#[tokio::test(flavor = "multi_thread")]
async fn history_lists_rotations_and_retirements_with_trigger_and_rotation_id() {
    let s = Scenario::new(&["store_a", "store_b"]).await;
    let config = s.config(&["store_a", "store_b"], "");
    let mut outputs = String::new();
    for round in 0..3 {
        if round > 0 {
            // Past the 1 s grace of what the round before replaced.
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        let out = s.run(&config, &["run", "--once"]).await;
        assert_exit(&out, 0);
        outputs.push_str(&cli::stdout(&out));
        outputs.push_str(&cli::stderr(&out));
    }

    let all = s.history(&config, &[]).await;
    let store_a: Vec<&Value> = all
        .iter()
        .filter(|e| field(e, "resource") == "store_a")
        .collect();
    let events: Vec<&str> = store_a.iter().map(|e| field(e, "event")).collect();
    let count = |name: &str| events.iter().filter(|e| **e == name).count();
    assert_eq!(count("started"), 3, "{events:?}");
    assert_eq!(count("pushed"), 3, "{events:?}");
    assert_eq!(count("succeeded"), 3, "{events:?}");
    assert!(count("retired") >= 1, "{events:?}");
    for entry in &store_a {
        assert_eq!(field(entry, "policy"), "orders");
        assert_eq!(field(entry, "trigger"), "manual", "{entry}");
        // Every key is there, `null` where the event has nothing.
        for key in [
            "time",
            "rotation_id",
            "fingerprint",
            "handle",
            "error",
            "reason",
        ] {
            assert!(entry.get(key).is_some(), "{key} missing: {entry}");
        }
    }

    // Each rotation's started, pushed and succeeded share its id; pushed and succeeded carry
    // the fingerprint of what was pushed.
    let rotations: Vec<&str> = store_a
        .iter()
        .filter(|e| field(e, "event") == "started")
        .map(|e| field(e, "rotation_id"))
        .collect();
    assert_eq!(rotations.len(), 3);
    for id in &rotations {
        assert_eq!(id.len(), 36, "a uuid: {id}");
        let of: Vec<&str> = store_a
            .iter()
            .filter(|e| field(e, "rotation_id") == *id)
            .map(|e| field(e, "event"))
            .collect();
        assert_eq!(of, ["started", "pushed", "succeeded"], "{id}");
        let fingerprints: Vec<&str> = store_a
            .iter()
            .filter(|e| field(e, "rotation_id") == *id && field(e, "event") != "started")
            .map(|e| field(e, "fingerprint"))
            .collect();
        assert_eq!(fingerprints.len(), 2);
        assert_eq!(fingerprints[0], fingerprints[1]);
        assert_eq!(fingerprints[0].len(), 8, "{fingerprints:?}");
    }
    // What the first rotation made was retired (the second replaced it, a grace period
    // before the third); what the third made, Vercel holds, is never retired. (The second's
    // may be too, if the third turn outlasted its grace.)
    let handle = |i: usize| format!("key-{}", &rotations[i][..8]);
    let retired: Vec<&str> = store_a
        .iter()
        .filter(|e| field(e, "event") == "retired")
        .map(|e| field(e, "handle"))
        .collect();
    assert_eq!(retired.first(), Some(&handle(0).as_str()), "{store_a:#?}");
    assert!(!retired.contains(&handle(2).as_str()), "{store_a:#?}");

    // --policy NAME/RESOURCE: that resource only; NAME: all of the policy's.
    let only_b = s.history(&config, &["--policy", "orders/store_b"]).await;
    assert!(!only_b.is_empty());
    assert!(only_b.iter().all(|e| field(e, "resource") == "store_b"));
    let orders = s.history(&config, &["--policy", "orders"]).await;
    assert_eq!(orders.len(), all.len());
    let other = s.history(&config, &["--policy", "cache"]).await;
    assert!(other.is_empty(), "{other:?}");

    // --since: an event from long ago is left out, and shown without it.
    let old = r#"{"time":"2020-01-01T00:00:00Z","policy":"orders","resource":"store_a","event":"failed","trigger":"schedule","error":"long ago"}"#;
    let history_file = s.state().join("history.jsonl");
    let mut text = std::fs::read_to_string(&history_file).unwrap_or_else(|e| panic!("{e}"));
    text.insert_str(0, &format!("{old}\n"));
    std::fs::write(&history_file, &text).unwrap_or_else(|e| panic!("{e}"));
    let with_old = s.history(&config, &[]).await;
    assert_eq!(with_old.len(), all.len() + 1);
    assert_eq!(field(&with_old[0], "error"), "long ago");
    let recent = s.history(&config, &["--since", "7d"]).await;
    assert_eq!(recent.len(), all.len());
    assert!(recent.iter().all(|e| field(e, "error") != "long ago"));
    let bad = s.run(&config, &["history", "--since", "lately"]).await;
    assert_exit(&bad, 2);
    assert!(
        cli::stderr(&bad).contains("is not a duration"),
        "{}",
        cli::stderr(&bad)
    );

    // The table: a header, a row per event, oldest first.
    let out = s
        .run(&config, &["history", "--policy", "orders/store_a"])
        .await;
    assert_exit(&out, 0);
    let table = cli::stdout(&out);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TIME") && lines[0].contains("ROTATION ID"),
        "{table}"
    );
    assert_eq!(lines.len(), 1 + store_a.len() + 1, "{table}");
    assert!(lines[1].contains("long ago"), "{table}");
    let retired_row = lines
        .iter()
        .find(|l| l.contains(" retired "))
        .unwrap_or_else(|| panic!("no retired row:\n{table}"));
    assert!(
        retired_row.contains(&format!("handle {}", handle(0))),
        "{retired_row}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains(" succeeded ") && l.contains("manual") && l.contains(rotations[2])),
        "{table}"
    );
    outputs.push_str(&table);
    outputs.push_str(&serde_json::to_string(&with_old).unwrap_or_default());

    // No value, no token: in the history file, its outputs, the logs.
    let pushed = s
        .fake
        .secrets(ACME, "store_a")
        .get("PASSWORD")
        .map(|p| p.value.clone())
        .unwrap_or_default();
    assert!(
        pushed.starts_with(CANARY),
        "the provider's value was pushed"
    );
    let file = std::fs::read_to_string(&history_file).unwrap_or_default();
    for (what, text) in [("history file", &file), ("output", &outputs)] {
        assert!(!text.contains(CANARY), "a value reached the {what}");
        assert!(!text.contains(TOKEN), "the token reached the {what}");
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&history_file)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or_default();
    assert_eq!(mode, 0o600, "the history is owner-only");
}

/// JSON logs: one object per line, whatever the text; a permanent failure at ERROR with the
/// failed event's message id, a success and the redeploy reminder at INFO with theirs, each
/// with the structured fields.
#[tokio::test(flavor = "multi_thread")]
async fn events_log_at_alertable_levels_with_their_message_ids() {
    let s = Scenario::new(&["store_a"]).await;
    // `gone` is not a resource of the installation: Vercel answers 404, a permanent failure.
    let config = s.config(
        &["store_a"],
        r#"
[[policies]]
name = "broken"
installation = "acme"
resources = ["gone"]
every = "30d"
provider = { kind = "random" }

[[policies.secrets]]
name = "OTHER"
value = "{password}"
"#,
    );
    let out = s
        .run(&config, &["--log-format", "json", "run", "--once"])
        .await;
    assert_exit(&out, 1);
    let stderr = cli::stderr(&out);
    let lines: Vec<Value> = stderr
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not one JSON object ({e}): {l}"))
        })
        .collect();
    let find = |kind: EventKind, resource: &str| -> &Value {
        lines
            .iter()
            .find(|l| {
                field(l, "message_id") == kind.message_id() && field(l, "resource") == resource
            })
            .unwrap_or_else(|| panic!("no {kind} line for {resource}:\n{stderr}"))
    };

    let failed = find(EventKind::Failed, "gone");
    assert_eq!(field(failed, "level"), "ERROR", "{failed}");
    assert_eq!(field(failed, "event"), "failed");
    assert_eq!(field(failed, "policy"), "broken");
    assert_eq!(field(failed, "trigger"), "manual");
    assert!(field(failed, "error").contains("404"), "{failed}");
    assert_eq!(field(failed, "rotation_id").len(), 36, "{failed}");
    assert_eq!(failed["transient"], Value::Bool(false));

    let succeeded = find(EventKind::Succeeded, "store_a");
    assert_eq!(field(succeeded, "level"), "INFO", "{succeeded}");
    assert_eq!(field(succeeded, "policy"), "orders");
    assert_eq!(field(succeeded, "fingerprint").len(), 8, "{succeeded}");
    let started = find(EventKind::Started, "store_a");
    assert_eq!(field(started, "level"), "INFO");
    assert_eq!(
        field(started, "rotation_id"),
        field(succeeded, "rotation_id")
    );
    let pushed = find(EventKind::Pushed, "store_a");
    assert_eq!(
        field(pushed, "fingerprint"),
        field(succeeded, "fingerprint")
    );

    // The reminder is no warning: every success has one.
    let reminder = find(EventKind::RedeployReminder, "store_a");
    assert_eq!(field(reminder, "level"), "INFO", "{reminder}");
    assert_eq!(field(reminder, "policy"), "orders");
    assert!(
        field(reminder, "message").contains("redeploy"),
        "{reminder}"
    );

    // Nothing of a success is logged above INFO.
    let loud: Vec<&Value> = lines
        .iter()
        .filter(|l| field(l, "resource") == "store_a" && field(l, "level") != "INFO")
        .filter(|l| !matches!(field(l, "level"), "DEBUG" | "TRACE"))
        .collect();
    assert!(loud.is_empty(), "{loud:?}");
    assert!(!stderr.contains(CANARY) && !stderr.contains(TOKEN));

    // The failure is in the history too, with its error.
    let history = s.history(&config, &["--policy", "broken"]).await;
    let failed: Vec<&Value> = history
        .iter()
        .filter(|e| field(e, "event") == "failed")
        .collect();
    assert_eq!(failed.len(), 1, "{history:?}");
    assert!(field(failed[0], "error").contains("404"), "{history:?}");
}

/// A pusher that accepts every push and banner: the executor's view of a healthy Vercel.
struct Accepting;

#[async_trait::async_trait]
impl vercel_secret_rotator::rotation::push::Pusher for Accepting {
    async fn push(
        &self,
        _job: &vercel_secret_rotator::rotation::Job,
        _secrets: &[vercel_secret_rotator::vercel::PushSecret],
    ) -> Result<
        vercel_secret_rotator::rotation::push::Delivery,
        vercel_secret_rotator::rotation::RotationError,
    > {
        Ok(vercel_secret_rotator::rotation::push::Delivery::Sent)
    }

    async fn notify(
        &self,
        _job: &vercel_secret_rotator::rotation::Job,
        _n: &vercel_secret_rotator::vercel::Notification,
    ) -> Result<(), vercel_secret_rotator::rotation::RotationError> {
        Ok(())
    }
}

/// A rotation Vercel asked for: its request, with the reason, opens the history, and every
/// event of it says `vercel`; the metrics count it and the retirement it leaves pending.
#[tokio::test(flavor = "multi_thread")]
async fn a_vercel_requested_rotation_is_told_with_its_reason() {
    use std::sync::Arc;
    use vercel_secret_rotator::clock::SystemClock;
    use vercel_secret_rotator::jobs::{self, Fleet, Providers};
    use vercel_secret_rotator::metrics::Metrics;
    use vercel_secret_rotator::rotation::executor::Executor;
    use vercel_secret_rotator::rotation::locks::KeyLocks;
    use vercel_secret_rotator::rotation::{Trigger, Turn};
    use vercel_secret_rotator::state::memory::MemoryStore;
    use vercel_secret_rotator::state::{HistoryFilter, StateStore};

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        format!(
            r#"[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-env = "OBSERVE_TEST_TOKEN_UNUSED"

[[policies]]
name = "p"
installation = "acme"
resources = ["store_v"]
every = "30d"
provider = {{ kind = "random", length = 24 }}

[[policies.secrets]]
name = "P"
value = "{{password}}"
"#,
            state = dir.path().join("state").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let config = vercel_secret_rotator::config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let fleet = Fleet::from_config(&config);
    let jobs =
        jobs::select(&config, &fleet, &[], Providers::Live).unwrap_or_else(|e| panic!("{e}"));
    let store = Arc::new(MemoryStore::new());
    let metrics = Arc::new(Metrics::new());
    metrics.set_policies(["p"]);
    let executor = Executor::new(
        store.clone(),
        Arc::new(Accepting),
        Arc::new(SystemClock),
        Arc::new(KeyLocks::default()),
    )
    .with_metrics(metrics.clone());
    let reason: Arc<str> = Arc::from("a key leaked\ninto a build log");
    for _ in 0..2 {
        let turn = Turn::vercel(Some(Duration::from_secs(3600)), Some(reason.clone()));
        let report = executor.tend(&jobs[0], turn).await;
        assert!(
            report.as_ref().is_some_and(|r| r.result.is_ok()),
            "{report:?}"
        );
    }

    let history = store
        .history(&HistoryFilter::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let events: Vec<&str> = history.iter().map(|e| e.event.name()).collect();
    assert_eq!(
        events,
        [
            "requested_by_vercel",
            "started",
            "pushed",
            "succeeded",
            "requested_by_vercel",
            "started",
            "pushed",
            "succeeded"
        ]
    );
    assert!(history.iter().all(|e| e.trigger == Some(Trigger::Vercel)));
    // Kept on one line.
    assert_eq!(
        history[0].reason.as_deref(),
        Some("a key leaked into a build log")
    );

    let scrape = metrics.encode();
    assert!(
        scrape.contains(
            "vercel_secret_rotator_rotations_total{policy=\"p\",outcome=\"success\"} 2\n"
        ),
        "{scrape}"
    );
    // The second rotation replaced the first one's credential: it waits out the hour.
    assert!(
        scrape.contains("vercel_secret_rotator_retirements_pending 1\n"),
        "{scrape}"
    );
}
