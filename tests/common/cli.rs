//! Running the real binary: the entry point users and systemd run.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The crate's root, where `config/` and `tests/fixtures/` live.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A `Command` for the built binary, run from the crate root with a clean, predictable
/// environment: no RUST_LOG from the developer's shell, no systemd variables.
pub fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vercel-secret-rotator"));
    cmd.current_dir(root())
        .env_remove("RUST_LOG")
        .env_remove("STATE_DIRECTORY")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("VERCEL_SECRET_ROTATOR_CONFIG")
        .stdin(Stdio::null());
    cmd
}

/// Runs the binary with `args` and returns its output.
pub fn run(args: &[&str]) -> Output {
    run_with(args, |_| {})
}

/// Runs the binary with `args`, letting `setup` add environment variables first.
pub fn run_with(args: &[&str], setup: impl FnOnce(&mut Command)) -> Output {
    let mut cmd = bin();
    cmd.args(args);
    setup(&mut cmd);
    match cmd.output() {
        Ok(out) => out,
        Err(e) => panic!("cannot run the binary: {e}"),
    }
}

/// Runs the binary on a tokio test without blocking the runtime (the fake Vercel runs on it).
pub async fn run_async(args: Vec<String>, envs: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_with(&args, |cmd| {
            cmd.envs(envs);
        })
    })
    .await
    .unwrap_or_else(|e| panic!("the binary's runner panicked: {e}"))
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Writes a token file with owner-only permissions and returns its path.
pub fn write_token(dir: &Path, name: &str, token: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
    path
}

/// Sets `[vercel] max-concurrent-requests = n` in a config file that has a `[vercel]` table
/// without that key.
pub fn limit_requests(config: &Path, n: usize) {
    let text = std::fs::read_to_string(config).unwrap_or_else(|e| panic!("read {config:?}: {e}"));
    assert!(
        text.contains("[vercel]\n"),
        "no [vercel] table in {config:?}"
    );
    let text = text.replacen(
        "[vercel]\n",
        &format!("[vercel]\nmax-concurrent-requests = {n}\n"),
        1,
    );
    std::fs::write(config, text).unwrap_or_else(|e| panic!("write {config:?}: {e}"));
}
