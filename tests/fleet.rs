//! Fleets end to end (issue 11): the real binary, the fake Vercel's listing, installations
//! found in a directory of token files. What a partner would notice: discovered resources are
//! rotated with their metadata in the secrets, selectors pick what they say, installations and
//! resources that arrive or leave under a running daemon are picked up or wound down, and a
//! failed listing changes nothing, also across a restart.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};

use crate::common::cli;
use crate::common::fake_vercel::{FakeVercel, Listing, Scripted};

const A: &str = "icfg_fleetA";
const B: &str = "icfg_fleetB";
const C: &str = "icfg_fleetC";

struct Fleet {
    fake: FakeVercel,
    dir: tempfile::TempDir,
}

fn token(id: &str) -> String {
    format!("tok_{id}_CANARY_77")
}

fn listing(product: &str, status: &str, tier: &str) -> Listing {
    let mut metadata = Map::new();
    metadata.insert("tier".into(), json!(tier));
    metadata.insert("host".into(), json!(format!("{tier}.db.example")));
    Listing {
        name: None,
        product_id: Some(product.into()),
        status: Some(status.into()),
        metadata,
    }
}

impl Fleet {
    async fn new() -> Fleet {
        let fake = FakeVercel::start().await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("installations")).unwrap();
        std::fs::set_permissions(
            dir.path().join("installations"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        Fleet { fake, dir }
    }

    /// An installation at Vercel with its resources, and its token file in the directory.
    fn install(&self, id: &str, resources: &[(&str, Listing)]) {
        self.fake.add_installation(id, &token(id));
        for (r, l) in resources {
            self.fake.add_resource(id, r);
            self.fake.set_listing(id, r, l.clone());
        }
        self.write_token(id);
    }

    fn write_token(&self, id: &str) {
        let path = self.installations().join(format!("{id}.token"));
        std::fs::write(&path, token(id)).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    fn installations(&self) -> PathBuf {
        self.dir.path().join("installations")
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `schedule`: the policy's schedule lines.
    fn config(&self, schedule: &str, every: &str) -> PathBuf {
        let path = self.dir.path().join("config.toml");
        let text = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "2s"
retry-deadline = "3s"

[state]
dir = "{state}"

[discovery]
installations-dir = "{dir}"
every = "{every}"

[[policies]]
name = "pg-pro"
installations = "*"
resources = {{ product-ids = ["prod_pg"], metadata = {{ tier = "pro" }} }}
{schedule}
provider = {{ kind = "random", length = 32, charset = "hex" }}

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://u:{{password}}@{{resource.metadata.host}}/{{resource.id}}?i={{installation.id}}"
"#,
            url = self.fake.url(),
            state = self.state().display(),
            dir = self.installations().display(),
        );
        std::fs::write(&path, text).unwrap();
        path
    }

    fn url_of(&self, installation: &str, resource: &str) -> Option<String> {
        self.fake
            .secrets(installation, resource)
            .get("DATABASE_URL")
            .map(|s| s.value.clone())
    }

    fn status_json(&self, config: &Path) -> Value {
        let out = cli::run(&[
            "--config",
            &config.display().to_string(),
            "status",
            "--json",
        ]);
        assert!(out.status.success(), "{}", cli::stderr(&out));
        serde_json::from_str(&cli::stdout(&out)).unwrap()
    }
}

fn in_config(status: &Value, policy: &str, resource: &str) -> Option<bool> {
    status["resources"].as_array()?.iter().find_map(|r| {
        (r["key"]["policy"] == policy && r["key"]["resource"] == resource)
            .then(|| r["in_config"].as_bool().unwrap_or(false))
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn run_once_lists_the_directorys_installations_and_rotates_what_the_selector_picks() {
    let f = Fleet::new().await;
    f.install(
        A,
        &[
            ("db_a1", listing("prod_pg", "ready", "pro")),
            ("db_a2", listing("prod_pg", "ready", "free")),
            ("kv_a3", listing("prod_redis", "ready", "pro")),
        ],
    );
    f.install(
        B,
        &[
            ("db_b1", listing("prod_pg", "resumed", "pro")),
            ("db_b2", listing("prod_pg", "suspended", "pro")),
        ],
    );
    let config = f.config("every = \"30d\"", "10m");
    let out = cli::run(&["--config", &config.display().to_string(), "run", "--once"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        cli::stdout(&out),
        cli::stderr(&out)
    );
    // Selected: pro postgres resources that are ready or resumed.
    let url = f.url_of(A, "db_a1").expect("db_a1 rotated");
    assert!(
        url.starts_with("postgres://u:") && url.ends_with("@pro.db.example/db_a1?i=icfg_fleetA"),
        "{url}"
    );
    assert!(f.url_of(B, "db_b1").is_some(), "db_b1 (resumed) rotated");
    for (i, r) in [(A, "db_a2"), (A, "kv_a3"), (B, "db_b2")] {
        assert!(
            f.url_of(i, r).is_none(),
            "{r} is not selected, yet was pushed"
        );
    }
    // Only the right token on each installation's calls, and never in any output.
    let all = format!("{}{}", cli::stdout(&out), cli::stderr(&out));
    assert!(!all.contains("CANARY"), "{all}");
    // `--policy NAME/RESOURCE_ID` names a discovered resource.
    let out = cli::run(&[
        "--config",
        &config.display().to_string(),
        "run",
        "--once",
        "--policy",
        "pg-pro/db_b1",
    ]);
    assert!(out.status.success(), "{}", cli::stderr(&out));
    let out = cli::run(&[
        "--config",
        &config.display().to_string(),
        "run",
        "--once",
        "--policy",
        "pg-pro/db_a2",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", cli::stderr(&out));
    assert!(cli::stderr(&out).contains("db_a1"), "{}", cli::stderr(&out));
    // `status` knows them as in the config.
    let status = f.status_json(&config);
    assert_eq!(
        in_config(&status, "pg-pro", "db_a1"),
        Some(true),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_listing_changes_nothing_even_across_a_restart() {
    let f = Fleet::new().await;
    f.install(A, &[("db_a1", listing("prod_pg", "ready", "pro"))]);
    let config = f.config("every = \"30d\"", "10m");
    let c = config.display().to_string();
    let out = cli::run(&["--config", &c, "run", "--once"]);
    assert!(out.status.success(), "{}", cli::stderr(&out));
    let first = f.url_of(A, "db_a1").expect("rotated");
    // Vercel now fails every listing: the inventory kept from the last run stands.
    f.fake.script_list(A, vec![Scripted::status(500); 20]);
    let out = cli::run(&["--config", &c, "run", "--once"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        cli::stdout(&out),
        cli::stderr(&out)
    );
    let second = f.url_of(A, "db_a1").expect("still rotated");
    assert_ne!(first, second, "the known resource was rotated again");
    assert_eq!(
        in_config(&f.status_json(&config), "pg-pro", "db_a1"),
        Some(true)
    );
    // A listing that does not parse changes nothing either.
    f.fake.clear_scripts();
    f.fake.script_list(
        A,
        vec![Scripted::status(200).body("{\"resources\": 7}"); 20],
    );
    let out = cli::run(&["--config", &c, "run", "--once"]);
    assert!(out.status.success(), "{}", cli::stderr(&out));
    assert_ne!(f.url_of(A, "db_a1").unwrap(), second);
}

/// A daemon process, killed if the test ends without stopping it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn start(f: &Fleet, config: &Path, name: &str) -> Daemon {
        let log = f.dir.path().join(format!("{name}.log"));
        let child = cli::bin()
            .args(["--config", &config.display().to_string(), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Daemon { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not stop:\n{}", self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn installations_and_resources_that_come_and_go_under_a_running_daemon() {
    let f = Fleet::new().await;
    f.install(A, &[("db_a1", listing("prod_pg", "ready", "pro"))]);
    // Every 2 seconds, grace 1s; listings every 2s.
    let config = f.config("schedule = \"*/2 * * * * *\"\ngrace = \"1s\"", "2s");
    let d = Daemon::start(&f, &config, "daemon");
    wait_for(
        Duration::from_secs(20),
        "db_a1 rotated",
        || d.log(),
        || f.url_of(A, "db_a1").is_some(),
    )
    .await;

    // A new installation file, and a new resource at A: both picked up without a restart.
    f.install(B, &[("db_b1", listing("prod_pg", "ready", "pro"))]);
    f.fake.add_resource(A, "db_a9");
    f.fake
        .set_listing(A, "db_a9", listing("prod_pg", "ready", "pro"));
    wait_for(
        Duration::from_secs(40),
        "db_b1 and db_a9 rotated",
        || d.log(),
        || f.url_of(B, "db_b1").is_some() && f.url_of(A, "db_a9").is_some(),
    )
    .await;

    // One unreadable token (mode 0644 from the start) leaves the others rotating.
    f.fake.add_installation(C, &token(C));
    f.fake.add_resource(C, "db_c1");
    f.fake
        .set_listing(C, "db_c1", listing("prod_pg", "ready", "pro"));
    let c_file = f.installations().join(format!("{C}.token.tmp"));
    std::fs::write(&c_file, token(C)).unwrap();
    std::fs::set_permissions(&c_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::rename(&c_file, f.installations().join(format!("{C}.token"))).unwrap();
    let before = f.url_of(B, "db_b1");
    wait_for(
        Duration::from_secs(20),
        "db_b1 rotated again",
        || d.log(),
        || f.url_of(B, "db_b1") != before,
    )
    .await;
    assert!(f.url_of(C, "db_c1").is_none());
    // `status` says which installation fails and why, without the token.
    let c = config.display().to_string();
    wait_for(
        Duration::from_secs(20),
        "status naming the failing installation",
        || d.log(),
        || {
            let out = cli::stdout(&cli::run(&["--config", &c, "status"]));
            out.contains("Installations whose listing fails") && out.contains(C)
        },
    )
    .await;
    let status = f.status_json(&config);
    let failing = status["installations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["installation_id"] == C)
        .unwrap_or_else(|| panic!("{status}"));
    let error = failing["failure"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("chmod 600"), "{status}");
    assert!(!status.to_string().contains("CANARY"), "{status}");
    assert!(
        d.log().contains(C),
        "the unreadable installation is named:\n{}",
        d.log()
    );

    // B's file is removed (Delete Installation) and db_a9 leaves A's listing: neither is
    // rotated any more, and once nothing of them is live their records go.
    std::fs::remove_file(f.installations().join(format!("{B}.token"))).unwrap();
    f.fake.remove_resource(A, "db_a9");
    let gone = |s: &Value, r: &str| in_config(s, "pg-pro", r) != Some(true);
    wait_for(
        Duration::from_secs(40),
        "db_b1 and db_a9 out of the config",
        || d.log(),
        || {
            let s = f.status_json(&config);
            gone(&s, "db_b1") && gone(&s, "db_a9")
        },
    )
    .await;
    let b1 = f.url_of(B, "db_b1");
    let a1 = f.url_of(A, "db_a1");
    wait_for(
        Duration::from_secs(20),
        "db_a1 rotated again",
        || d.log(),
        || f.url_of(A, "db_a1") != a1,
    )
    .await;
    assert_eq!(f.url_of(B, "db_b1"), b1, "a departed resource was rotated");
    d.stop();
    let out = cli::run(&["--config", &config.display().to_string(), "status"]);
    assert!(!cli::stdout(&out).contains("CANARY") && !cli::stderr(&out).contains("CANARY"));
}
