//! The command line's small promises, through the binary: `--version`, the config from
//! `VERCEL_SECRET_ROTATOR_CONFIG`, commands (`history` too) quiet on a closed pipe, durations
//! printed as a config writes them, and the shipped example leaving the state directory to
//! systemd.

use std::path::Path;
use std::process::Stdio;

use serde_json::Value;

use crate::common::cli;

const CONFIG_ENV: &str = "VERCEL_SECRET_ROTATOR_CONFIG";

/// A valid config with one `every` policy, its token from `ACME_TOKEN`.
fn write_config(dir: &Path, policy_extra: &str) -> String {
    let path = dir.join("config.toml");
    let text = format!(
        r#"[state]
dir = "{state}"

[installations.acme]
id = "icfg_1"
token-env = "ACME_TOKEN"

[[policies]]
name = "orders-db"
installation = "acme"
resources = ["store_abc", "store_def"]
{policy_extra}
provider = {{ kind = "random" }}

[[policies.secrets]]
name = "PASSWORD"
value = "{{password}}"
"#,
        state = dir.join("state").display()
    );
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

#[test]
fn version_prints_the_crate_version() {
    let out = cli::run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        cli::stdout(&out).trim(),
        format!("vercel-secret-rotator {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn the_config_path_comes_from_the_environment_unless_given() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(dir.path(), "every = \"7d\"");

    // The variable alone: that config is read.
    let out = cli::run_with(&["status", "--json"], |cmd| {
        cmd.env(CONFIG_ENV, &config);
    });
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        status["state_dir"],
        Value::String(dir.path().join("state").display().to_string())
    );

    // A path that does not exist is named, and nothing is done.
    let missing = dir.path().join("nowhere.toml").display().to_string();
    let out = cli::run_with(&["status"], |cmd| {
        cmd.env(CONFIG_ENV, &missing);
    });
    assert_eq!(out.status.code(), Some(2));
    assert!(
        cli::stderr(&out).contains(&missing),
        "{}",
        cli::stderr(&out)
    );

    // --config wins over the variable.
    let out = cli::run_with(&["--config", &config, "status"], |cmd| {
        cmd.env(CONFIG_ENV, &missing);
    });
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
}

/// Runs the binary with `args` (and `ACME_TOKEN` set) writing to a pipe whose reader has
/// gone, as `... | head -1` does to it: closed before the binary starts, so its first write
/// fails with EPIPE, every time.
fn run_with_reader_gone(args: &[&str]) -> std::process::Output {
    let (reader, writer) = std::io::pipe().unwrap_or_else(|e| panic!("{e}"));
    drop(reader);
    cli::bin()
        .args(args)
        .env("ACME_TOKEN", "tok-CANARY-pipe")
        .stdout(Stdio::from(writer))
        .stderr(Stdio::piped())
        .output()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// `status | head -1`, `history | head -1`, `check | head -1` and
/// `run --once --dry-run | head -1`: the reader is gone before the command writes. That is not an error: no broken-pipe message, and the exit
/// status is the command's.
#[test]
fn commands_are_quiet_when_their_reader_has_gone() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(dir.path(), "every = \"7d\"");
    for command in [
        &["status"][..],
        &["status", "--json"][..],
        &["history"][..],
        &["history", "--json"][..],
        &["check"][..],
        &["run", "--once", "--dry-run"][..],
    ] {
        let mut args = vec!["--config", config.as_str()];
        args.extend_from_slice(command);
        let out = run_with_reader_gone(&args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{command:?}: {}",
            cli::stderr(&out)
        );
        assert_eq!(cli::stderr(&out), "", "{command:?}");
    }
}

/// `check` prints intervals and jitter as a config writes them, not as `7days` or `1day`.
#[test]
fn check_prints_durations_as_written() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(dir.path(), "every = \"7d\"\njitter = \"24h\"");
    let out = cli::run_with(&["--config", &config, "check"], |cmd| {
        cmd.env("ACME_TOKEN", "token-for-check");
    });
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains(
            "every 7d, provider random): next due (each resource up to 24h later: jitter)"
        ),
        "{stdout}"
    );
    assert!(
        !stdout.contains("days") && !stdout.contains("1day"),
        "{stdout}"
    );
}

/// The example, copied unedited to /etc as the package does, keeps its state where systemd's
/// StateDirectory= says, not in a `./state` relative to the service's working directory (/).
#[test]
fn the_shipped_example_leaves_the_state_directory_to_systemd() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let state = dir.path().display().to_string();
    let example = cli::root()
        .join("config/example.toml")
        .display()
        .to_string();
    let out = cli::run_with(&["--config", &example, "status", "--json"], |cmd| {
        cmd.env("STATE_DIRECTORY", &state);
    });
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let status: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status["state_dir"], Value::String(state));
}
