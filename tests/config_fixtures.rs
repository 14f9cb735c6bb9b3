//! Every config fixture is its own case: each invalid one exits 2 with its message pinned
//! (tests/fixtures/invalid/NAME.toml beside NAME.stderr), each valid one and the shipped
//! example pass `check` once their tokens exist. The loops assert they found files, so an
//! emptied or moved folder cannot make them pass vacuously.
//!
//! To re-pin the messages after an intended change: `UPDATE_SNAPSHOTS=1 cargo test config_fixtures`,
//! then read the diff.
//!
//! Fixtures that write a secret into the config (`secret-*.toml`) spell it with `CANARY`;
//! no message, pinned or not, may hold that word.

use std::path::{Path, PathBuf};

use crate::common::cli;

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let dir = cli::root().join("tests/fixtures").join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir:?}: {e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn relative(path: &Path) -> String {
    path.strip_prefix(cli::root())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn every_invalid_fixture_exits_2_with_its_pinned_message() {
    let files = fixtures("invalid");
    assert!(
        files.len() >= 25,
        "expected at least 25 invalid fixtures, found {}",
        files.len()
    );
    let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
    let mut failures = Vec::new();
    for file in &files {
        let rel = relative(file);
        // Both commands load the config first; neither may get further.
        for command in [&["check"][..], &["run", "--once", "--dry-run"][..]] {
            let mut args = vec!["--config", rel.as_str()];
            args.extend_from_slice(command);
            let out = cli::run(&args);
            let stderr = cli::stderr(&out);
            if out.status.code() != Some(2) {
                failures.push(format!(
                    "{rel} {command:?}: exit {:?}, stderr:\n{stderr}",
                    out.status.code()
                ));
                continue;
            }
            if !cli::stdout(&out).is_empty() {
                failures.push(format!(
                    "{rel} {command:?}: printed to stdout: {}",
                    cli::stdout(&out)
                ));
            }
            if stderr.contains("panicked") {
                failures.push(format!("{rel} {command:?}: panicked:\n{stderr}"));
            }
            // Fixtures write secrets as CANARY-...: no message may echo one, whatever
            // the pinned text says.
            if stderr.to_ascii_lowercase().contains("canary") {
                failures.push(format!("{rel} {command:?}: echoed a secret:\n{stderr}"));
            }
            let pinned = file.with_extension("stderr");
            if update {
                std::fs::write(&pinned, &stderr)
                    .unwrap_or_else(|e| panic!("write {pinned:?}: {e}"));
                continue;
            }
            match std::fs::read_to_string(&pinned) {
                Ok(want) if want == stderr => {}
                Ok(want) => failures.push(format!(
                    "{rel} {command:?}: message changed\n--- pinned\n{want}--- got\n{stderr}"
                )),
                Err(_) => failures.push(format!(
                    "{rel}: no pinned message {}; run with UPDATE_SNAPSHOTS=1",
                    relative(&pinned)
                )),
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn every_pinned_message_has_its_fixture() {
    let dir = cli::root().join("tests/fixtures/invalid");
    let orphans: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{e}"))
        .map(|e| e.unwrap_or_else(|e| panic!("{e}")).path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "stderr") && !p.with_extension("toml").exists()
        })
        .map(|p| relative(&p))
        .collect();
    assert!(
        orphans.is_empty(),
        "pinned messages without a fixture: {orphans:?}"
    );
}

#[test]
fn every_valid_fixture_and_the_example_pass_check_once_tokens_exist() {
    let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let acme = cli::write_token(tmp.path(), "acme.token", "tok_acme_fixture");
    let mut files = fixtures("valid");
    assert!(!files.is_empty(), "no valid fixtures found");
    files.push(cli::root().join("config/example.toml"));
    for file in &files {
        // The example names /etc paths; point them at the test's own token file instead.
        let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{e}"));
        let text = text.replace(
            "/etc/vercel-secret-rotator/acme.token",
            &acme.display().to_string(),
        );
        // `check` makes sure each provider program can run: the example's stand for the
        // partner's own, which this machine does not have.
        let text = text
            .replace("/usr/local/bin/set-orders-password", "/bin/sh")
            .replace("/usr/local/libexec/globex-rotate-key", "/bin/sh");
        let copy = tmp.path().join(file.file_name().unwrap_or_default());
        std::fs::write(&copy, text).unwrap_or_else(|e| panic!("{e}"));
        let out = cli::run_with(&["--config", &copy.display().to_string(), "check"], |cmd| {
            cmd.env("ACME_TOKEN", "tok_acme_env")
                .env("GLOBEX_VERCEL_TOKEN", "tok_globex_env");
        });
        let stdout = cli::stdout(&out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}: stdout:\n{stdout}\nstderr:\n{}",
            relative(file),
            cli::stderr(&out)
        );
        assert!(stdout.contains("valid"), "{stdout}");
        assert!(stdout.contains("next due"), "{stdout}");
        for token in ["tok_acme_fixture", "tok_acme_env", "tok_globex_env"] {
            assert!(
                !stdout.contains(token) && !cli::stderr(&out).contains(token),
                "check printed a token"
            );
        }
    }
}
