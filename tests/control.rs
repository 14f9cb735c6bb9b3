//! The daemon's control socket under abuse, through the real binary: a peer that is neither
//! the daemon's user nor root is refused, and running out of file descriptors neither floods
//! the log nor spins, and the socket serves again once descriptors are free.
//!
//! The daemon runs as root here (the tests do), so "another user" is `nobody` (65534).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;

const ACME: &str = "icfg_acme";
const ACME_TOKEN: &str = "tok_acme_CONTROL_5e1b";
const NOBODY: u32 = 65534;

struct Scenario {
    fake: FakeVercel,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Scenario {
    /// One weekly policy over `store_a1` with the `random` provider: nothing is due at start,
    /// so the only rotations are the ones asked for over the socket.
    async fn new() -> Scenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        fake.add_resource(ACME, "store_a1");
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token = cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
        let config = dir.path().join("config.toml");
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
resources = ["store_a1"]
schedule = "0 3 * * 0"
grace = "1s"
provider = {{ kind = "random" }}

[[policies.secrets]]
name = "DB_PASSWORD"
value = "{{password}}"
"#,
            url = fake.url(),
            state = dir.path().join("state").display(),
            token = token.display(),
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        Scenario { fake, dir, config }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("state").join("control.sock")
    }

    fn puts(&self) -> usize {
        self.fake
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count()
    }

    /// `run --once --policy db/store_a1` as root: handed to the daemon, which rotates.
    async fn rotate_now(&self) -> std::process::Output {
        cli::run_async(
            vec![
                "--config".into(),
                self.config.display().to_string(),
                "run".into(),
                "--once".into(),
                "--policy".into(),
                "db/store_a1".into(),
            ],
            vec![],
        )
        .await
    }
}

/// A daemon process, killed if a test ends without stopping it.
struct Daemon {
    child: Child,
    log: PathBuf,
}

impl Daemon {
    /// Starts `run` and waits until it is serving ("daemon started" in its log).
    async fn start(s: &Scenario) -> Daemon {
        let log = s.dir.path().join("daemon.log");
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = cli::bin()
            .args(["--config", &s.config.display().to_string(), "run"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the daemon: {e}"));
        let mut daemon = Daemon { child, log };
        daemon.wait_for_log("daemon started").await;
        daemon
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_for_log(&mut self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.log().contains(text) {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the daemon exited ({status}):\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "no \"{text}\" in the daemon's log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGTERM, then the exit status (which must come within the drain time).
    async fn stop(&mut self) -> Option<i32> {
        rustix::process::kill_process(
            rustix::process::Pid::from_raw(self.pid() as i32).unwrap_or_else(|| panic!("pid 0")),
            rustix::process::Signal::TERM,
        )
        .unwrap_or_else(|e| panic!("kill: {e}"));
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.code();
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log());
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

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

/// A client run as `nobody`: connects, sends a rotation request, prints its own PID and then
/// whatever the daemon answered (nothing if it closed the connection).
const NOBODY_CLIENT: &str = r#"
import os, socket, sys
print("PID", os.getpid(), flush=True)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
answer = b""
try:
    s.sendall(b'{"policies": ["db/store_a1"]}\n')
    s.shutdown(socket.SHUT_WR)
    while chunk := s.recv(65536):
        answer += chunk
except (BrokenPipeError, ConnectionResetError):
    pass
print("ANSWER", answer.decode(errors="replace"), flush=True)
"#;

/// The socket's permissions keep other users out; should they be loosened (an ACL, a group
/// on the state directory), the daemon still refuses any peer but its own user and root.
#[tokio::test(flavor = "multi_thread")]
async fn another_user_is_refused_even_when_it_can_reach_the_socket() {
    let s = Scenario::new().await;
    let mut daemon = Daemon::start(&s).await;
    // Open the way to the socket for everyone.
    chmod(s.dir.path(), 0o711);
    chmod(&s.dir.path().join("state"), 0o711);
    chmod(&s.socket(), 0o777);

    let socket = s.socket();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("python3")
            .args(["-c", NOBODY_CLIENT, &socket.display().to_string()])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3: {e}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let stdout = cli::stdout(&out);
    assert!(out.status.success(), "{stdout}{}", cli::stderr(&out));
    let pid = stdout
        .lines()
        .find_map(|l| l.strip_prefix("PID "))
        .unwrap_or_else(|| panic!("{stdout}"))
        .to_owned();
    assert!(
        stdout.lines().any(|l| l == "ANSWER "),
        "nobody got an answer: {stdout}"
    );
    assert_eq!(s.puts(), 0, "nobody's request rotated");
    daemon.wait_for_log(&format!("uid {NOBODY}")).await;
    let log = daemon.log();
    let refusal = log
        .lines()
        .find(|l| l.contains(&format!("uid {NOBODY}")))
        .unwrap_or_default();
    assert!(
        refusal.contains("refused") && refusal.contains(&format!("pid {pid}")),
        "{log}"
    );

    // The daemon's own user (root here) is served as before (`run --once` wants the state
    // directory owner-only again).
    chmod(&s.dir.path().join("state"), 0o700);
    let out = s.rotate_now().await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    assert_eq!(s.puts(), 1);
    assert_eq!(daemon.stop().await, Some(0), "{}", daemon.log());
}

/// Out of file descriptors (EMFILE), accepting fails until some are closed. The daemon backs
/// off instead of retrying at once: it used to spin at full CPU and log millions of lines.
#[tokio::test(flavor = "multi_thread")]
async fn running_out_of_file_descriptors_neither_spins_nor_floods_the_log() {
    let s = Scenario::new().await;
    let mut daemon = Daemon::start(&s).await;
    let pid = daemon.pid();

    // Room for a few more descriptors than the idle daemon holds, fewer than the clients.
    let open = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap_or_else(|e| panic!("{e}"))
        .count() as u64;
    let limit = open + 6;
    rustix::process::prlimit(
        rustix::process::Pid::from_raw(pid as i32),
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .unwrap_or_else(|e| panic!("prlimit: {e}"));

    // Clients that connect and say nothing hold the daemon's descriptors until it gives up
    // on them, far longer than this test.
    let clients: Vec<std::os::unix::net::UnixStream> = (0..40)
        .map(|_| {
            std::os::unix::net::UnixStream::connect(s.socket())
                .unwrap_or_else(|e| panic!("connect: {e}"))
        })
        .collect();
    daemon.wait_for_log("os error 24").await;
    // A second in that state: the old loop logged over 250,000 lines a second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(clients);

    // Descriptors free again: the socket serves.
    let out = s.rotate_now().await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        cli::stdout(&out),
        cli::stderr(&out)
    );
    assert!(
        cli::stdout(&out).contains("1 rotated, 0 failed"),
        "{}",
        cli::stdout(&out)
    );
    assert_eq!(daemon.stop().await, Some(0), "{}", daemon.log());

    let log = daemon.log();
    let lines = log.lines().count();
    assert!(
        lines <= 40,
        "{lines} log lines; the first 40:\n{}",
        log.lines().take(40).collect::<Vec<_>>().join("\n")
    );
}
