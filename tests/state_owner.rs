//! Who may write the state (issue 10, item 4), with the real binary: a root `run --once` over
//! the service user's state directory used to rewrite `state.json` as root:root 0600, and the
//! service then failed to start with "permission denied" and was never restarted. Now it is
//! refused with how to do it right, changing nothing; run as the owner it works, and beside
//! the owner's running daemon it is handed over.
//!
//! These run the binary as uid 65534 (nobody) and so need root; without it they skip.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;

const ACME: &str = "icfg_acme";
const ACME_TOKEN: &str = "tok_acme_OWNER_7c21d0";
/// The service's user in these tests.
const SERVICE_UID: u32 = 65534;

/// A temp dir that uid 65534 can enter, holding a config it can read, a token file it owns
/// (0600) and a state directory it owns (0700), against a fake Vercel with one resource.
struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scenario {
    async fn new() -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        fake.add_resource(ACME, "store_a1");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        set_mode(dir.path(), 0o755);
        let token = cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
        chown(&token, SERVICE_UID);
        let state = dir.path().join("state");
        std::fs::create_dir(&state).unwrap_or_else(|e| panic!("{e}"));
        set_mode(&state, 0o700);
        chown(&state, SERVICE_UID);
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                r#"[vercel]
api-url = "{url}"
request-timeout = "2s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[[policies]]
name = "db"
installation = "acme"
resources = ["store_a1"]
schedule = "0 3 * * 0"
grace = "1h"
provider = {{ kind = "random", length = 32, charset = "base64url" }}

[[policies.secrets]]
name = "PASSWORD"
value = "{{password}}"
"#,
                url = fake.url(),
                state = state.display(),
                token = token.display(),
            ),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        set_mode(&config, 0o644);
        Scenario { fake, dir, config }
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Runs the binary with `args` after `--config`, as `uid` (`None`: as we are).
    async fn run(&self, uid: Option<u32>, args: &[&str]) -> Output {
        let mut cmd = cli::bin();
        cmd.arg("--config").arg(&self.config).args(args);
        if let Some(uid) = uid {
            cmd.uid(uid).gid(uid);
        }
        tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|e| panic!("cannot run the binary: {e}"))
    }
}

/// Secret pushes the fake received.
fn puts(fake: &FakeVercel) -> usize {
    fake.requests().iter().filter(|r| r.method == "PUT").count()
}

fn running_as_root() -> bool {
    let root = rustix::process::geteuid().is_root();
    if !root {
        eprintln!("skipped: needs root to run the binary as another user");
    }
    root
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{path:?}: {e}"));
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap_or_else(|e| panic!("{e}"));
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

/// Every entry of the state directory: name, owner, group, mode and content.
fn listing(dir: &Path) -> Vec<(String, u32, u32, u32, Vec<u8>)> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("{e}"));
            let meta = std::fs::symlink_metadata(entry.path()).unwrap_or_else(|e| panic!("{e}"));
            (
                entry.file_name().to_string_lossy().into_owned(),
                meta.uid(),
                meta.gid(),
                meta.mode(),
                std::fs::read(entry.path()).unwrap_or_default(),
            )
        })
        .collect();
    entries.sort();
    entries
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_run_once_over_the_service_users_state_is_refused_and_changes_nothing() {
    if !running_as_root() {
        return;
    }
    let s = Scenario::new().await;

    // The service's user rotates: its state is in place, all of it its own.
    let out = s.run(Some(SERVICE_UID), &["run", "--once"]).await;
    assert_exit(&out, 0);
    assert_eq!(puts(&s.fake), 1);
    let before = listing(&s.state());
    assert!(
        before.iter().any(|(name, ..)| name == "journal.jsonl"),
        "{before:?}"
    );
    assert!(
        before
            .iter()
            .all(|(_, uid, gid, ..)| (*uid, *gid) == (SERVICE_UID, SERVICE_UID)),
        "{before:?}"
    );

    // Root, with the service stopped: refused, saying whose it is and what to run instead.
    let out = s.run(None, &["run", "--once"]).await;
    assert_exit(&out, 2);
    let stderr = cli::stderr(&out);
    for want in [
        format!(
            "state directory {} belongs to uid 65534",
            s.state().display()
        ),
        "runs as uid 0".to_owned(),
        "nothing was changed".to_owned(),
        "hands its request to it".to_owned(),
        "sudo -u '#65534'".to_owned(),
        "systemd-run --pty --wait".to_owned(),
        "-p DynamicUser=yes".to_owned(),
        "-p StateDirectory=vercel-secret-rotator".to_owned(),
    ] {
        assert!(stderr.contains(&want), "{want:?} not in:\n{stderr}");
    }
    assert!(!stderr.contains(ACME_TOKEN), "{stderr}");
    assert_eq!(listing(&s.state()), before, "the state directory changed");
    assert_eq!(
        (std::fs::metadata(s.state())
            .map(|m| (m.uid(), m.mode() & 0o7777))
            .ok()),
        Some((SERVICE_UID, 0o700))
    );
    assert_eq!(puts(&s.fake), 1, "nothing was sent");

    // `status` only reads: root may.
    let out = s.run(None, &["status"]).await;
    assert_exit(&out, 0);
    assert!(
        cli::stdout(&out).contains("store_a1"),
        "{}",
        cli::stdout(&out)
    );
    assert_eq!(listing(&s.state()), before);

    // And the service's user still can, as if root had never tried.
    let out = s.run(Some(SERVICE_UID), &["run", "--once"]).await;
    assert_exit(&out, 0);
    assert_eq!(puts(&s.fake), 2);
}

/// A daemon run by the directory's owner.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_root_run_once_beside_the_service_users_daemon_is_handed_to_it() {
    if !running_as_root() {
        return;
    }
    let s = Scenario::new().await;
    let log = s.dir.path().join("daemon.log");
    let child = cli::bin()
        .arg("--config")
        .arg(&s.config)
        .arg("run")
        .uid(SERVICE_UID)
        .gid(SERVICE_UID)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}")))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start the daemon: {e}"));
    let daemon = Daemon { child, log };
    // The daemon binds its control socket once the state is loaded: that is readiness.
    let socket = s.state().join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "never ready:\n{}", daemon.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let out = s.run(None, &["run", "--once"]).await;
    assert_exit(&out, 0);
    assert!(
        cli::stdout(&out).contains("1 rotated, 0 failed"),
        "{}",
        cli::stdout(&out)
    );
    assert_eq!(puts(&s.fake), 1);
    // The daemon did it, as the service's user: every file is still its own.
    for (name, uid, ..) in listing(&s.state()) {
        assert_eq!(uid, SERVICE_UID, "{name} belongs to {uid}");
    }
    drop(daemon);
}
