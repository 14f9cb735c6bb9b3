//! The daemon and crash recovery, with the real binary: periodic rotations and retirements,
//! SIGHUP with a broken then a valid config, SIGTERM, the state lock, `run --once` handed to
//! a running daemon, `status`, file modes, and a `kill` at every step of the protocol.
//!
//! The provider is a ledger: a Python program that keeps, in a JSON file, every credential
//! it has made live and not yet retired. After any crash, the checks are DESIGN's invariant 1:
//! Vercel (the fake) holds a credential the ledger says is live, and every credential that was
//! superseded is eventually retired.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::cli;
use crate::common::fake_vercel::{FakeVercel, Scripted};

const ACME: &str = "icfg_acme";
const ACME_TOKEN: &str = "tok_acme_DAEMON_1f0c";
/// Every value the ledger makes starts with this, so a leak is easy to find.
const CANARY: &str = "LEDGERCANARY";

struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
}

impl Scenario {
    async fn new(resources: &[&str]) -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        for r in resources {
            fake.add_resource(ACME, r);
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
        let s = Scenario { fake, dir };
        s.write_ledger();
        s
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn state_dir(&self) -> PathBuf {
        self.path("state")
    }

    /// The ledger provider: `live.json` maps handle -> value of every live credential.
    fn write_ledger(&self) {
        let script = format!(
            r#"import fcntl, json, os, secrets, sys
req = json.load(sys.stdin)
live_path = {live:?}
# Resources rotate concurrently: serialize the read-modify-write of the ledger.
lock = open(live_path + ".lock", "w")
fcntl.flock(lock, fcntl.LOCK_EX)
live = json.load(open(live_path)) if os.path.exists(live_path) else {{}}
with open({calls:?}, "a") as f:
    f.write(json.dumps({{"action": req["action"], "handle": req.get("handle"), "rotation_id": req.get("rotation_id"), "previous_handle": req.get("previous_handle")}}) + "\n")
if req["action"] == "create":
    handle = "h-" + req["rotation_id"][:8]
    live[handle] = "{CANARY}-" + secrets.token_hex(12)   # same id: replaced, not added
    out = {{"handle": handle, "fields": {{"password": live[handle]}}}}
elif req["action"] == "retire":
    live.pop(req["handle"], None)
    out = {{}}
else:
    sys.exit(3)
tmp = live_path + ".tmp"
json.dump(live, open(tmp, "w"))
os.replace(tmp, live_path)
json.dump(out, sys.stdout)
"#,
            live = self.path("live.json").display().to_string(),
            calls = self.path("calls.jsonl").display().to_string(),
        );
        std::fs::write(self.path("ledger.py"), script).unwrap_or_else(|e| panic!("{e}"));
    }

    fn live(&self) -> BTreeMap<String, String> {
        std::fs::read_to_string(self.path("live.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn calls(&self, action: &str) -> usize {
        std::fs::read_to_string(self.path("calls.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("\"action\": \"{action}\"")))
            .count()
    }

    /// A config with one policy over `resources`; `when` is its schedule line(s).
    fn write_config(&self, resources: &[&str], when: &str) -> PathBuf {
        let list = resources
            .iter()
            .map(|r| format!("\"{r}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "5s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[[policies]]
name = "db"
installation = "acme"
resources = [{list}]
{when}
provider = {{ kind = "command", command = ["/usr/bin/env", "python3", "{ledger}"], timeout = "20s" }}

[[policies.secrets]]
name = "DB_PASSWORD"
value = "{{password}}"
"#,
            url = self.fake.url(),
            state = self.state_dir().display(),
            token = self.path("acme.token").display(),
            ledger = self.path("ledger.py").display(),
        );
        let path = self.path("config.toml");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        path
    }

    fn pushed(&self, resource: &str) -> Option<String> {
        self.fake
            .secrets(ACME, resource)
            .get("DB_PASSWORD")
            .map(|s| s.value.clone())
    }

    fn puts(&self, resource: &str) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "PUT" && r.path.contains(&format!("/resources/{resource}/")))
            .count()
    }

    /// The state as `status --json` prints it: resource -> record.
    async fn status(&self, config: &Path) -> BTreeMap<String, Value> {
        let out = run(config, &["status", "--json"], &[]).await;
        assert_eq!(out.status.code(), Some(0), "status: {}", cli::stderr(&out));
        let json: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", cli::stdout(&out)));
        json["resources"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| (r["key"]["resource"].as_str().unwrap_or("").to_owned(), r))
            .collect()
    }

    /// Invariant 1 for one resource: Vercel holds the value of the credential the state
    /// calls current, and the ledger says it is live.
    async fn assert_consistent(&self, config: &Path, resource: &str) {
        let status = self.status(config).await;
        let record = &status[resource];
        let handle = record["current_handle"]
            .as_str()
            .unwrap_or_else(|| panic!("no current handle: {record}"));
        let live = self.live();
        let value = live
            .get(handle)
            .unwrap_or_else(|| panic!("current handle {handle} is not live: {live:?}"));
        assert_eq!(
            self.pushed(resource).as_deref(),
            Some(value.as_str()),
            "Vercel holds another value than the live current one"
        );
        assert_eq!(record["step"]["name"], "idle", "{record}");
    }
}

async fn run(config: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let mut all = vec!["--config".to_owned(), config.display().to_string()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    cli::run_async(
        all,
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .await
}

/// A daemon process, killed if a test ends without stopping it.
struct Daemon {
    child: Child,
    stderr: PathBuf,
}

impl Daemon {
    fn start(s: &Scenario, config: &Path) -> Daemon {
        Daemon::start_with(s, config, &[])
    }

    fn start_with(s: &Scenario, config: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_full(s, config, env, "text")
    }

    fn start_full(s: &Scenario, config: &Path, env: &[(&str, &str)], log_format: &str) -> Daemon {
        let stderr = s.path(&format!("daemon-{}.log", rand_suffix()));
        let log = std::fs::File::create(&stderr).unwrap_or_else(|e| panic!("{e}"));
        let child = cli::bin()
            .args([
                "--config",
                &config.display().to_string(),
                "--log-format",
                log_format,
                "run",
            ])
            .env("RUST_LOG", "info,vercel_secret_rotator=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the daemon: {e}"));
        Daemon { child, stderr }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill -{sig} failed");
    }

    async fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the daemon did not exit within {limit:?}; log:\n{}",
                self.log()
            );
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

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

/// Polls `cond` until it holds (or fails the test after `limit`, showing `context`).
async fn wait_for(
    limit: Duration,
    what: &str,
    context: impl Fn() -> String,
    cond: impl Fn() -> bool,
) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}:\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

const EVERY_2S: &str = "schedule = \"*/2 * * * * *\"\ngrace = \"1s\"";
const WEEKLY: &str = "schedule = \"0 3 * * 0\"\ngrace = \"1s\"";

#[tokio::test(flavor = "multi_thread")]
async fn the_daemon_rotates_on_schedule_retires_after_grace_and_stops_cleanly() {
    let s = Scenario::new(&["store_a1", "store_a2"]).await;
    let config = s.write_config(&["store_a1", "store_a2"], EVERY_2S);
    // Trace logging in JSON: the canary must stay out of even the most verbose log.
    let mut daemon = Daemon::start_full(&s, &config, &[("RUST_LOG", "trace")], "json");
    wait_for(
        Duration::from_secs(40),
        "three rotations of each resource and two retirements",
        || daemon.log(),
        || s.puts("store_a1") >= 3 && s.puts("store_a2") >= 3 && s.calls("retire") >= 2,
    )
    .await;
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(35)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    let log = daemon.log();
    assert!(
        log.contains("daemon started") && log.contains("stopped"),
        "{log}"
    );
    assert!(
        log.lines()
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "every log line is JSON"
    );

    for r in ["store_a1", "store_a2"] {
        s.assert_consistent(&config, r).await;
    }
    // At most the current credential and the one in its grace period are live per resource.
    assert!(s.live().len() <= 4, "{:?}", s.live());

    // State: owner-only, and no value anywhere in it.
    let state = s.state_dir();
    let mode = std::fs::metadata(&state)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    assert_eq!(mode, 0o700, "state dir mode {mode:o}");
    for entry in std::fs::read_dir(&state).unwrap_or_else(|e| panic!("{e}")) {
        let path = entry.unwrap_or_else(|e| panic!("{e}")).path();
        if path.is_file() {
            let mode = std::fs::metadata(&path)
                .map(|m| m.permissions().mode() & 0o777)
                .unwrap_or(0);
            assert_eq!(mode, 0o600, "{path:?} mode {mode:o}");
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            assert!(!text.contains(CANARY), "a value reached {path:?}");
            assert!(!text.contains(ACME_TOKEN), "the token reached {path:?}");
        }
    }
    assert!(
        !log.contains(CANARY) && !log.contains(ACME_TOKEN),
        "a value or the token reached the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_due_together_wait_for_a_slot_and_all_rotate() {
    // Eight resources due at the same instants, two rotation slots (max-concurrent-requests =
    // 1): the ones without a slot wait for one to free, and every resource keeps rotating.
    let resources = [
        "store_a1", "store_a2", "store_a3", "store_a4", "store_a5", "store_a6", "store_a7",
        "store_a8",
    ];
    let s = Scenario::new(&resources).await;
    let config = s.write_config(&resources, EVERY_2S);
    cli::limit_requests(&config, 1);
    let mut daemon = Daemon::start(&s, &config);
    wait_for(
        Duration::from_secs(40),
        "two rotations of every resource",
        || daemon.log(),
        || resources.iter().all(|r| s.puts(r) >= 2),
    )
    .await;
    daemon.signal("TERM");
    let status = daemon.wait_exit(Duration::from_secs(35)).await;
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log());
    for r in resources {
        s.assert_consistent(&config, r).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_refuses_a_broken_config_and_applies_a_valid_one() {
    let s = Scenario::new(&["store_a1", "store_a2"]).await;
    let config = s.write_config(&["store_a1"], EVERY_2S);
    // systemd's notification socket, as systemd would pass it.
    let notify_path = s.path("notify.sock");
    let notify =
        std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap_or_else(|e| panic!("{e}"));
    notify
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap_or_else(|e| panic!("{e}"));
    let notify_env = notify_path.display().to_string();
    let mut daemon = Daemon::start_with(&s, &config, &[("NOTIFY_SOCKET", notify_env.as_str())]);
    // Read as systemd does, all along: an unread datagram queue fills up and blocks the sender.
    let messages = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let reader_done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (messages, done) = (messages.clone(), reader_done.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(n) = notify.recv(&mut buf) {
                    let mut got = messages.lock().unwrap_or_else(|p| p.into_inner());
                    got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                }
            }
        })
    };
    let drain = || {
        reader_done.store(true, std::sync::atomic::Ordering::Relaxed);
        messages.lock().unwrap_or_else(|p| p.into_inner()).join("|")
    };
    wait_for(
        Duration::from_secs(20),
        "a first rotation",
        || daemon.log(),
        || s.puts("store_a1") >= 1,
    )
    .await;

    let good = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(&config, good.replace("schedule =", "schedul ="))
        .unwrap_or_else(|e| panic!("{e}"));
    daemon.signal("HUP");
    wait_for(
        Duration::from_secs(10),
        "the refusal",
        || daemon.log(),
        || daemon.log().contains("config reload refused"),
    )
    .await;
    let before = s.puts("store_a1");
    wait_for(
        Duration::from_secs(20),
        "rotations to go on under the old config",
        || daemon.log(),
        || s.puts("store_a1") > before,
    )
    .await;

    s.write_config(&["store_a1", "store_a2"], EVERY_2S);
    daemon.signal("HUP");
    wait_for(
        Duration::from_secs(10),
        "the reload",
        || daemon.log(),
        || daemon.log().contains("config reloaded"),
    )
    .await;
    wait_for(
        Duration::from_secs(20),
        "the added resource to rotate",
        || daemon.log(),
        || s.puts("store_a2") >= 1,
    )
    .await;

    daemon.signal("INT");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(35)).await.code(),
        Some(0),
        "{}",
        daemon.log()
    );
    // Log fields read as values, never as Rust's `Some(..)`/`None` (debug level included).
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains("systemd notifications"))
        .unwrap_or_else(|| panic!("no notifier line:\n{log}"));
    assert!(line.contains("watchdog=none"), "{line}");
    assert!(!log.contains("Some(") && !log.contains("=None"), "{log}");
    // READY once started, RELOADING around each reload (then READY again), a STATUS line,
    // STOPPING at the end.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = drain();
    let _ = reader.join();
    let order: Vec<&str> = seen
        .split('|')
        .filter_map(|m| m.lines().next())
        .filter(|l| ["READY=1", "RELOADING=1", "STOPPING=1"].contains(l))
        .collect();
    assert_eq!(
        order,
        [
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "RELOADING=1",
            "READY=1",
            "STOPPING=1"
        ],
        "{seen}"
    );
    assert!(seen.contains("MONOTONIC_USEC="), "{seen}");
    assert!(
        seen.contains("STATUS=") && seen.contains("resources,"),
        "{seen}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_daemon_per_state_dir_and_run_once_is_handed_to_it() {
    let s = Scenario::new(&["store_a1", "store_a2"]).await;
    let config = s.write_config(&["store_a1", "store_a2"], WEEKLY);
    let mut daemon = Daemon::start(&s, &config);
    let socket = s.state_dir().join("control.sock");
    wait_for(
        Duration::from_secs(20),
        "the daemon to be ready",
        || daemon.log(),
        || socket.exists(),
    )
    .await;

    // A second daemon on the same state exits 2 at once, naming the holder.
    let out = run(&config, &["run"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", cli::stderr(&out));
    let pid = daemon.child.id().to_string();
    assert!(
        cli::stderr(&out).contains(&format!("PID {pid}")),
        "{}",
        cli::stderr(&out)
    );

    // `run --once` while the daemon holds the state: the daemon does it, the caller prints.
    let out = run(&config, &["run", "--once", "--policy", "db/store_a2"], &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        cli::stdout(&out),
        cli::stderr(&out)
    );
    assert!(
        cli::stdout(&out).contains("1 rotated, 0 failed"),
        "{}",
        cli::stdout(&out)
    );
    assert_eq!((s.puts("store_a1"), s.puts("store_a2")), (0, 1));
    assert!(daemon.log().contains("control socket"), "{}", daemon.log());

    // Its failures come back with the same exit status.
    s.fake.script(
        ACME,
        "store_a1",
        vec![Scripted::vercel_error(403, "forbidden", "no")],
    );
    let out = run(&config, &["run", "--once", "--policy", "db/store_a1"], &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", cli::stdout(&out));
    assert!(
        cli::stdout(&out).contains("FAILED (permanent)"),
        "{}",
        cli::stdout(&out)
    );
    let out = run(&config, &["run", "--once", "--policy", "nope"], &[]).await;
    assert_eq!(out.status.code(), Some(2), "{}", cli::stdout(&out));

    // `status` works while the daemon runs, as a table and as JSON.
    let out = run(&config, &["status"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let table = cli::stdout(&out);
    assert!(
        table.contains("store_a2") && table.contains("STOPPED"),
        "{table}"
    );
    let status = s.status(&config).await;
    assert_eq!(
        status["store_a1"]["stopped"]["reason"]
            .as_str()
            .map(|r| r.contains("403")),
        Some(true),
        "{:?}",
        status["store_a1"]
    );
    assert!(status["store_a2"]["last_success"].is_string());

    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(35)).await.code(),
        Some(0),
        "{}",
        daemon.log()
    );
    assert!(!socket.exists(), "the socket is removed at exit");
}

/// Kills `run --once` at each step of the protocol, then checks that the next run finishes
/// the job and that no credential is lost or left live.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_at_every_step_is_recovered_by_the_next_start() {
    for point in [
        "creating",
        "created",
        "pushing",
        "pushed-unrecorded",
        "pushed",
        "notified",
        "retiring",
    ] {
        let s = Scenario::new(&["store_a1"]).await;
        let config = s.write_config(&["store_a1"], WEEKLY);
        let once = ["run", "--once"];

        // An established credential, and (for `retiring`) one whose grace is over.
        let out = run(&config, &once, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{point}: {}", cli::stderr(&out));
        if point == "retiring" {
            let out = run(&config, &once, &[]).await;
            assert_eq!(out.status.code(), Some(0), "{point}: {}", cli::stderr(&out));
            tokio::time::sleep(Duration::from_millis(1200)).await;
        }

        let out = run(&config, &once, &[("VSR_FAULT_KILL_AT", point)]).await;
        assert_eq!(
            out.status.code(),
            None,
            "{point}: the process should have died: {}",
            cli::stderr(&out)
        );
        assert!(
            cli::stderr(&out).contains(&format!("dying at {point}")),
            "{point}: {}",
            cli::stderr(&out)
        );

        // The next start finishes or redoes it.
        let out = run(&config, &once, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{point}: {}\n{}",
            cli::stdout(&out),
            cli::stderr(&out)
        );
        s.assert_consistent(&config, "store_a1").await;

        // Every superseded credential is retired once its grace is over: let the daemon do it.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let mut daemon = Daemon::start(&s, &config);
        let status_cfg = config.clone();
        // The daemon must be up (its signal handlers installed) before the TERM below, even
        // when nothing is left for it to retire: an early TERM kills it with no log at all.
        wait_for(
            Duration::from_secs(20),
            "retirements",
            || format!("{point}: live {:?}\n{}", s.live(), daemon.log()),
            || daemon.log().contains("daemon started") && s.live().len() == 1,
        )
        .await;
        daemon.signal("TERM");
        assert_eq!(
            daemon.wait_exit(Duration::from_secs(35)).await.code(),
            Some(0),
            "{point}: {}",
            daemon.log()
        );
        s.assert_consistent(&status_cfg, "store_a1").await;
        let status = s.status(&config).await;
        assert_eq!(
            status["store_a1"]["retirements"].as_array().map(Vec::len),
            Some(0),
            "{point}: {:?}",
            status["store_a1"]
        );
    }
}

/// Issue 10, item 1: a retirement that falls due while a rotation is unfinished (its push may
/// have reached Vercel) used to overwrite the rotation's step, so the next run started a new
/// rotation and the credential of the failed try was never retired nor pushed again.
#[tokio::test(flavor = "multi_thread")]
async fn a_retirement_falling_due_mid_rotation_never_orphans_its_credential() {
    let s = Scenario::new(&["store_a1"]).await;
    let config = s.write_config(&["store_a1"], WEEKLY);
    // Short retries, so the dropped pushes give up quickly.
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        &config,
        text.replace(
            "request-timeout = \"5s\"",
            "request-timeout = \"1s\"\nretry-deadline = \"2s\"",
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let once = ["run", "--once"];
    for _ in 0..2 {
        let out = run(&config, &once, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    }
    // The first credential's grace (1s) is over: its retirement is due.
    tokio::time::sleep(Duration::from_millis(1200)).await;

    // Vercel applies the push and the answer is lost, every time: may have applied.
    s.fake.script(
        ACME,
        "store_a1",
        (0..40).map(|_| Scripted::handle_then_drop()).collect(),
    );
    let out = run(&config, &once, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", cli::stderr(&out));
    s.fake.clear_scripts();
    let failed_id = last_create_id(&s);

    // The next run redoes that rotation (same id), and nothing it made is left live.
    let out = run(&config, &once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    assert_eq!(
        last_create_id(&s),
        failed_id,
        "the unfinished rotation was forgotten: a new rotation id was used"
    );
    s.assert_consistent(&config, "store_a1").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = run(&config, &once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    // A turn with nothing to rotate but the retirements: the daemon.
    let mut daemon = Daemon::start(&s, &config);
    wait_for(
        Duration::from_secs(20),
        "the daemon to start and only Vercel's credential to be live",
        || format!("live {:?}\n{}", s.live(), daemon.log()),
        // A TERM before the daemon's handlers are installed would kill it, not stop it.
        || daemon.log().contains("daemon started") && s.live().len() == 1,
    )
    .await;
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(35)).await.code(),
        Some(0)
    );
    s.assert_consistent(&config, "store_a1").await;
}

fn last_create_id(s: &Scenario) -> String {
    std::fs::read_to_string(s.path("calls.jsonl"))
        .unwrap_or_default()
        .lines()
        .rev()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|c| c["action"] == "create")
        .find_map(|c| c["rotation_id"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// Issue 10, item 3: a resource removed from the config and a renamed policy used to leave
/// their credentials live forever: keys no longer in the config got no turns, so their due
/// retirements never ran, and the credential Vercel held until the renamed policy's first
/// push was never scheduled for retirement.
#[tokio::test(flavor = "multi_thread")]
async fn removed_resources_and_renamed_policies_still_retire_what_they_left() {
    let s = Scenario::new(&["store_a1", "store_a2"]).await;
    let both = s.write_config(&["store_a1", "store_a2"], WEEKLY);
    let once = ["run", "--once"];
    let out = run(&both, &once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let a2_first = s.pushed("store_a2").unwrap_or_default();
    let out = run(&both, &once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    assert_eq!(s.live().len(), 4, "two current, two in their grace");

    // store_a2 leaves the config while its old credential waits out its grace.
    let one = s.write_config(&["store_a1"], WEEKLY);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = run(&one, &once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let live: Vec<String> = s.live().into_values().collect();
    assert!(
        live.contains(&s.pushed("store_a2").unwrap_or_default()),
        "Vercel's credential of the removed resource stays: {live:?}"
    );
    // a2's old one is retired (its grace was over). a1's current is live; the one it just
    // replaced too, unless the turn outlasted its 1 s grace on a loaded machine.
    assert!(!live.contains(&a2_first), "{live:?}");
    assert!(
        live.contains(&s.pushed("store_a1").unwrap_or_default()),
        "{live:?}"
    );
    assert!((2..=3).contains(&live.len()), "{live:?}");
    let status = s.status(&one).await;
    assert!(
        !status.contains_key("store_a2"),
        "nothing of the removed resource is left to do, so its record is forgotten: {status:?}"
    );

    // The policy is renamed: its first push supersedes what the old name left at Vercel.
    let text = std::fs::read_to_string(&one).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&one, text.replace("name = \"db\"", "name = \"db-renamed\""))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = run(&one, &once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let out = run(&one, &["status"], &[]).await;
    assert!(
        cli::stdout(&out).contains("not in config"),
        "status shows the old name's record while its credentials are live:\n{}",
        cli::stdout(&out)
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = run(&one, &once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut daemon = Daemon::start(&s, &one);
    wait_for(
        Duration::from_secs(20),
        "the daemon to start and only Vercel's two credentials to be live",
        || format!("live {:?}\n{}", s.live(), daemon.log()),
        || daemon.log().contains("daemon started") && s.live().len() == 2,
    )
    .await;
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(35)).await.code(),
        Some(0)
    );
    let live: Vec<String> = s.live().into_values().collect();
    for resource in ["store_a1", "store_a2"] {
        assert!(
            live.contains(&s.pushed(resource).unwrap_or_default()),
            "{resource}"
        );
    }
    let out = run(&one, &["status", "--json"], &[]).await;
    let json: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let policies: Vec<&str> = json["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["key"]["policy"].as_str())
        .collect();
    assert_eq!(
        policies,
        ["db-renamed"],
        "the old name's record is forgotten once nothing of it is live"
    );
}

/// Issue 10, item 7: exit 2 is for config and usage errors only; a state directory that
/// cannot be created (an I/O error, like a full disk) exits 1, so systemd restarts.
#[tokio::test(flavor = "multi_thread")]
async fn an_unusable_state_directory_at_start_exits_1_not_2() {
    let s = Scenario::new(&["store_a1"]).await;
    let config = s.write_config(&["store_a1"], WEEKLY);
    std::fs::write(s.path("not-a-dir"), "").unwrap_or_else(|e| panic!("{e}"));
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let bad = s.path("not-a-dir").join("state");
    std::fs::write(
        &config,
        text.replace(
            &s.state_dir().display().to_string(),
            &bad.display().to_string(),
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    for args in [&["run"][..], &["run", "--once"][..]] {
        let out = run(&config, args, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            cli::stderr(&out)
        );
        assert!(
            cli::stderr(&out).contains(&bad.display().to_string()),
            "{args:?}: the error names the directory: {}",
            cli::stderr(&out)
        );
    }
}

/// Issue 11: one installation's unreadable token used to refuse the daemon's start (exit 2,
/// which systemd does not restart). Now the daemon starts, the other installations rotate,
/// and that installation's token is read again when its rotation is next tried.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_token_holds_up_only_its_own_installation() {
    let s = Scenario::new(&["store_a1"]).await;
    s.fake.add_installation("icfg_beta", "tok_beta_DAEMON_77c1");
    s.fake.add_resource("icfg_beta", "store_b1");
    let config = s.write_config(&["store_a1"], EVERY_2S);
    let beta_token = s.path("beta.token");
    let text = std::fs::read_to_string(&config).unwrap_or_else(|e| panic!("{e}"));
    let beta = format!(
        r#"
[installations.beta]
id = "icfg_beta"
token-file = "{token}"

[[policies]]
name = "db-beta"
installation = "beta"
resources = ["store_b1"]
schedule = "*/2 * * * * *"
grace = "1s"
provider = {{ kind = "random", length = 24 }}

[[policies.secrets]]
name = "DB_PASSWORD"
value = "{{password}}"
"#,
        token = beta_token.display()
    );
    std::fs::write(&config, format!("{text}{beta}")).unwrap_or_else(|e| panic!("{e}"));

    let mut daemon = Daemon::start(&s, &config);
    wait_for(
        Duration::from_secs(20),
        "acme's resource to rotate",
        || daemon.log(),
        || s.puts("store_a1") >= 1,
    )
    .await;
    assert!(
        daemon.log().contains("token cannot be read"),
        "{}",
        daemon.log()
    );
    assert_eq!(s.puts("store_b1"), 0);

    // The partner's backend writes the token: a rotation of beta now goes through.
    cli::write_token(s.dir.path(), "beta.token", "tok_beta_DAEMON_77c1");
    let out = run(&config, &["run", "--once", "--policy", "db-beta"], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stdout(&out));
    assert_eq!(s.puts("store_b1"), 1);
    daemon.signal("TERM");
    assert_eq!(
        daemon.wait_exit(Duration::from_secs(35)).await.code(),
        Some(0)
    );
    assert!(!daemon.log().contains("tok_beta_DAEMON_77c1"));
}
