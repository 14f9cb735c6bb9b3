//! What the process does to protect the secrets in its memory, through the real binary.
//!
//! The daemon holds every installation's Vercel token and each new credential in memory. A
//! core dump (systemd's watchdog kills a hung daemon with SIGABRT) would write them to disk,
//! and a dumpable process lets other processes of its user (the provider programs it runs)
//! ptrace it or read `/proc/PID/mem`. So `main` makes the process non-dumpable first thing.
//! The kernel shows it: the entries in `/proc/PID/` of a non-dumpable process belong to root
//! whatever user it runs as, so a daemon run as `nobody` has them owned by root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::common::cli;

/// `nobody`: an unprivileged user the tests (which run as root) can switch to.
const NOBODY: u32 = 65534;

/// A child process killed when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory only `nobody` can use, inside a temporary directory it can pass through,
/// holding a config (one weekly policy: nothing is due at start, nothing talks to Vercel)
/// and its token file. Returns the config's path.
fn nobody_home(dir: &Path) -> std::path::PathBuf {
    let chmod = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
    };
    let chown = |path: &Path| {
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
            .unwrap_or_else(|e| panic!("chown {path:?}: {e}"));
    };
    chmod(dir, 0o711);
    let home = dir.join("home");
    std::fs::create_dir(&home).unwrap_or_else(|e| panic!("{e}"));
    chmod(&home, 0o700);
    chown(&home);
    let token = cli::write_token(&home, "acme.token", "tok_HARDENING_never_on_disk");
    chown(&token);
    let config = home.join("config.toml");
    let text = format!(
        r#"[vercel]
api-url = "http://127.0.0.1:9"

[state]
dir = "{state}"

[installations.acme]
id = "icfg_acme"
token-file = "{token}"

[[policies]]
name = "db"
installation = "acme"
resources = ["store_a1"]
schedule = "0 3 * * 0"
provider = {{ kind = "random" }}

[[policies.secrets]]
name = "PASSWORD"
value = "{{password}}"
"#,
        state = home.join("state").display(),
        token = token.display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    chown(&config);
    home.join("config.toml")
}

/// The real user id in `/proc/PID/status`: who the process runs as.
fn real_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn the_daemon_is_not_dumpable() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = nobody_home(dir.path());
    let home = config.parent().unwrap_or_else(|| panic!("no parent"));
    let log_path = home.join("daemon.log");
    let log = std::fs::File::create(&log_path).unwrap_or_else(|e| panic!("{e}"));
    let mut daemon = Reaped(
        cli::bin()
            .current_dir(home)
            .args(["--config", &config.display().to_string(), "run"])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the daemon: {e}")),
    );
    let pid = daemon.0.id();
    let read_log = || std::fs::read_to_string(&log_path).unwrap_or_default();

    // Ready once the control socket exists: the process has long passed `main`'s start.
    let socket = home.join("state").join("control.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            panic!("the daemon exited ({status}):\n{}", read_log());
        }
        assert!(
            Instant::now() < deadline,
            "the daemon did not start:\n{}",
            read_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    assert_eq!(real_uid(pid), Some(NOBODY), "the daemon runs as nobody");
    // The kernel gives these to root for a non-dumpable process (all but the `/proc/PID`
    // directory itself, which keeps the process's user).
    for entry in ["mem", "environ", "fd"] {
        let path = format!("/proc/{pid}/{entry}");
        let owner = std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("{path}: {e}"))
            .uid();
        assert_eq!(
            owner, 0,
            "{path} belongs to uid {owner}: the daemon is dumpable (a core dump would hold its \
             tokens, and its user's other processes can read its memory)"
        );
    }
}
