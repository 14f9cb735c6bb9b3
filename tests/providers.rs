//! Providers against real child processes: the `command` protocol byte for byte, the limits
//! on a misbehaving program (timeout, output cap, exit statuses), that no value leaks into an
//! error, argv or the environment, and `random`'s `apply`. The last part drives the built
//! binary: what a user sees of a program whose answer does not parse, a program that
//! outlives a killed `run --once`, and `check` on a program that does not exist.
//!
//! Test programs are small Python or sh scripts written into a temporary directory. Most run
//! through their interpreter (`/usr/bin/python3 script.py`) rather than being executed
//! themselves: executing a file just written can fail with ETXTBSY while another test thread
//! is forking, a flake that has nothing to do with the code under test. One test executes a
//! script directly, to cover the ordinary configuration.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;
use crate::common::provider_helpers::{credential, target};
use serde_json::{Value, json};
use tempfile::TempDir;
use vercel_secret_rotator::config::{Charset, CommandConfig, CommandSpec, RandomConfig};
use vercel_secret_rotator::error::Classify;
use vercel_secret_rotator::providers::command::CommandProvider;
use vercel_secret_rotator::providers::random::RandomProvider;
use vercel_secret_rotator::providers::{Outcome, Provider, ProviderError, Stderr};
use vercel_secret_rotator::secret::ExposeSecret;

const PYTHON: &str = "/usr/bin/python3";
const SH: &str = "/bin/sh";

/// Read by every Python test program: the request is parsed and appended to the log file
/// named by the first argument, so tests can assert on exactly what the program received.
const PRELUDE: &str = r#"
import json, os, sys
LOG = sys.argv[1]
raw = sys.stdin.read()
req = json.loads(raw)
with open(LOG, "a") as f:
    f.write(json.dumps(req) + "\n")
action = req["action"]
def answer(obj):
    sys.stdout.write(json.dumps(obj))
"#;

/// A value no test program makes up: wherever it appears, it came from the request or the
/// answer.
const CANARY: &str = "canary-5f1d0c9e-hunter2";

struct Scripts {
    dir: TempDir,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.path(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A Python program: [`PRELUDE`] then `body`, run as `python3 script log`.
    fn python(&self, body: &str) -> CommandSpec {
        let script = self.write("provider.py", &format!("{PRELUDE}\n{body}\n"));
        CommandSpec {
            program: PYTHON.into(),
            args: vec![path_arg(&script), path_arg(&self.path("requests.jsonl"))],
        }
    }

    /// A sh program run as `sh script`.
    fn sh(&self, body: &str) -> CommandSpec {
        let script = self.write("provider.sh", &format!("#!/bin/sh\n{body}\n"));
        CommandSpec {
            program: SH.into(),
            args: vec![path_arg(&script)],
        }
    }

    /// Every request the Python program logged, in order.
    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.path("requests.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }
}

fn path_arg(path: &Path) -> String {
    path.to_str().unwrap().to_owned()
}

fn command(spec: CommandSpec) -> CommandProvider {
    command_with(spec, Duration::from_secs(20), None)
}

fn command_with(spec: CommandSpec, timeout: Duration, fields: Option<&[&str]>) -> CommandProvider {
    CommandProvider::new(CommandConfig {
        command: spec,
        timeout,
        fields: fields.map(|f| f.iter().map(|s| s.to_string()).collect()),
    })
}

/// The error's Display and Debug, both of which must be free of values.
fn shown(error: &ProviderError) -> String {
    format!("{error} / {error:?}")
}

fn assert_no_canary(error: &ProviderError) {
    let shown = shown(error);
    assert!(!shown.contains(CANARY), "a value leaked: {shown}");
    assert!(
        !shown.contains("hunter2"),
        "part of a value leaked: {shown}"
    );
}

fn bad_output_reason(error: ProviderError) -> String {
    assert_no_canary(&error);
    assert!(!error.is_transient(), "bad output is permanent: {error}");
    match error {
        ProviderError::BadOutput { reason, .. } => reason,
        other => panic!("expected BadOutput, got {other:?}"),
    }
}

/// Whether a process with this pid still exists (as anything but a zombie nobody reaped).
fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

fn read_pid(path: &Path) -> u32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------------------
// The protocol

const ROUND_TRIP: &str = r#"
if action == "create":
    answer({"handle": "key-42", "fields": {"username": "orders_a", "password": "canary-5f1d0c9e-hunter2"}})
else:
    answer({})
"#;

#[tokio::test]
async fn create_verify_retire_send_exactly_the_documented_requests() {
    let scripts = Scripts::new();
    let provider = command(scripts.python(ROUND_TRIP));
    assert_eq!(provider.kind(), "command");

    let made = provider.create(&target(), "rot-1", None).await.unwrap();
    assert_eq!(made.handle, "key-42");
    let fields: Vec<(&str, &str)> = made
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.expose_secret()))
        .collect();
    assert_eq!(fields, [("password", CANARY), ("username", "orders_a")]);

    let verified = provider.verify(&target(), "rot-1", &made).await.unwrap();
    assert_eq!(verified, Outcome::Done);
    let retired = provider.retire(&target(), "key-41").await.unwrap();
    assert_eq!(retired, Outcome::Done);

    assert_eq!(
        scripts.requests(),
        [
            json!({"action": "create", "rotation_id": "rot-1", "policy": "orders-db",
                   "installation": "acme", "installation_id": "icfg_test", "resource": "store_abc", "previous_handle": null}),
            json!({"action": "verify", "rotation_id": "rot-1", "policy": "orders-db",
                   "installation_id": "icfg_test", "resource": "store_abc", "handle": "key-42",
                   "fields": {"username": "orders_a", "password": CANARY}}),
            json!({"action": "retire", "policy": "orders-db", "installation_id": "icfg_test", "resource": "store_abc",
                   "handle": "key-41"}),
        ]
    );
}

#[tokio::test]
async fn previous_handle_is_null_on_a_first_rotation_and_the_handle_afterwards() {
    let scripts = Scripts::new();
    let provider = command(scripts.python(ROUND_TRIP));
    provider.create(&target(), "rot-1", None).await.unwrap();
    provider
        .create(&target(), "rot-2", Some("key-42"))
        .await
        .unwrap();
    let previous: Vec<Value> = scripts
        .requests()
        .iter()
        .map(|r| r["previous_handle"].clone())
        .collect();
    assert_eq!(previous, [Value::Null, json!("key-42")]);
    // The key is always there, even when null: the protocol fixes the request's shape.
    assert!(
        scripts.requests()[0]
            .as_object()
            .unwrap()
            .contains_key("previous_handle")
    );
}

#[tokio::test]
async fn a_program_configured_as_an_executable_script_runs_directly() {
    let scripts = Scripts::new();
    let log = scripts.path("requests.jsonl");
    let script = scripts.write(
        "rotate",
        &format!("#!/usr/bin/env python3\n{PRELUDE}\n{ROUND_TRIP}\n"),
    );
    let provider = command(CommandSpec {
        program: script,
        args: vec![path_arg(&log)],
    });
    let made = provider.create(&target(), "rot-1", None).await.unwrap();
    assert_eq!(made.handle, "key-42");
    assert_eq!(scripts.requests().len(), 1);
}

#[tokio::test]
async fn a_chatty_stderr_does_not_block_the_answer() {
    let scripts = Scripts::new();
    // 4 MiB of stderr before the answer: far beyond a pipe's buffer, so this only finishes
    // if stderr is drained while stdout is awaited.
    let provider = command(scripts.python(
        r#"
for _ in range(64):
    sys.stderr.write("progress " * 7000 + "\n")
answer({"handle": "h-1", "fields": {"token": "t-123456"}})
"#,
    ));
    let made = provider.create(&target(), "rot-1", None).await.unwrap();
    assert_eq!(made.handle, "h-1");
}

// ---------------------------------------------------------------------------------------
// Exit statuses

#[tokio::test]
async fn exit_3_means_unsupported_for_verify_and_retire() {
    let scripts = Scripts::new();
    let provider = command(scripts.sh("exit 3"));
    let made = credential("key-42", &[("password", CANARY)]);
    assert_eq!(
        provider.verify(&target(), "rot-1", &made).await.unwrap(),
        Outcome::Unsupported
    );
    assert_eq!(
        provider.retire(&target(), "key-41").await.unwrap(),
        Outcome::Unsupported
    );
}

#[tokio::test]
async fn exit_3_on_create_is_a_permanent_error_because_create_is_required() {
    let scripts = Scripts::new();
    let provider = command(scripts.sh("cat >/dev/null; echo 'unknown action' >&2; exit 3"));
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(text.contains("exit status 3"), "{text}");
    assert!(text.contains("does not implement `create`"), "{text}");
    assert!(text.contains("unknown action"), "{text}");
}

#[tokio::test]
async fn a_failing_exit_is_transient_except_the_sysexits_that_say_the_call_is_wrong() {
    let scripts = Scripts::new();
    for (code, transient) in [
        (1, true),
        (2, true),
        (75, true),
        (64, false),
        (65, false),
        (77, false),
        (78, false),
    ] {
        let provider = command(scripts.sh(&format!("echo 'failed on purpose' >&2; exit {code}")));
        let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
        assert_eq!(error.is_transient(), transient, "exit {code}: {error}");
        match &error {
            ProviderError::Failed {
                status,
                stderr,
                action,
                ..
            } => {
                assert_eq!(status, &format!("exit status {code}"));
                assert_eq!(stderr, &Stderr::Shown("failed on purpose".into()));
                assert_eq!(*action, "create");
            }
            other => panic!("exit {code}: expected Failed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn death_by_a_signal_is_a_transient_failure() {
    let scripts = Scripts::new();
    let provider = command(scripts.sh("kill -9 $$"));
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(error.is_transient());
    assert!(error.to_string().contains("signal 9"), "{error}");
}

#[tokio::test]
async fn a_missing_program_is_a_permanent_spawn_error() {
    let provider = command(CommandSpec {
        program: "/nonexistent/acme-rotate".into(),
        args: vec![],
    });
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(matches!(error, ProviderError::Spawn { .. }), "{error:?}");
    assert!(!error.is_transient());
    assert!(
        error.to_string().contains("/nonexistent/acme-rotate"),
        "{error}"
    );
}

// ---------------------------------------------------------------------------------------
// Timeouts

#[tokio::test]
async fn a_program_past_its_timeout_is_killed_and_reaped() {
    let scripts = Scripts::new();
    let pidfile = scripts.path("pid");
    let provider = command_with(
        scripts.sh(&format!("echo $$ > {}; exec sleep 30", pidfile.display())),
        Duration::from_millis(500),
        None,
    );
    let started = Instant::now();
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    // Liveness, not performance: the call must not have waited for the 30 s sleep.
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error:?}");
    assert!(error.is_transient());
    assert!(error.to_string().contains("500ms"), "{error}");
    assert!(
        !process_exists(read_pid(&pidfile)),
        "the child outlived its timeout"
    );
}

#[tokio::test]
async fn a_program_that_ignores_sigterm_is_still_killed() {
    let scripts = Scripts::new();
    let pidfile = scripts.path("pid");
    let provider = command_with(
        scripts.python(&format!(
            r#"
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
with open({pidfile:?}, "w") as f:
    f.write(str(os.getpid()))
time.sleep(30)
"#,
            pidfile = path_arg(&pidfile)
        )),
        // Long enough for Python to start and write its pid even on a loaded machine.
        Duration::from_secs(3),
        None,
    );
    let started = Instant::now();
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(matches!(error, ProviderError::Timeout { .. }), "{error:?}");
    assert!(
        !process_exists(read_pid(&pidfile)),
        "the child outlived its timeout"
    );
}

// ---------------------------------------------------------------------------------------
// Bad answers: each is refused, and the refusal never quotes the answer

async fn create_answering(stdout_python: &str) -> ProviderError {
    let scripts = Scripts::new();
    let provider = command(scripts.python(stdout_python));
    provider.create(&target(), "rot-1", None).await.unwrap_err()
}

#[tokio::test]
async fn invalid_json_is_refused_without_quoting_it() {
    let reason = bad_output_reason(
        create_answering(r#"sys.stdout.write('{"handle": "h", "fields": {"password": canary-5f1d0c9e-hunter2}}')"#)
            .await,
    );
    assert!(reason.contains("syntax error at line 1"), "{reason}");
}

#[tokio::test]
async fn non_utf8_stdout_is_refused() {
    let reason = bad_output_reason(
        create_answering(
            r#"sys.stdout.buffer.write(b'{"handle": "h", "fields": {"password": "canary-5f1d0c9e-hunter2\xff"}}')"#,
        )
        .await,
    );
    let offset = r#"{"handle": "h", "fields": {"password": ""#.len() + CANARY.len();
    assert_eq!(
        reason,
        format!("stdout is not UTF-8 (invalid byte at offset {offset})")
    );
}

#[tokio::test]
async fn more_than_1_mib_on_stdout_is_refused_without_reading_the_rest() {
    // An endless writer: the call only ends because reading stops at the cap.
    let started = Instant::now();
    let reason = bad_output_reason(
        create_answering(
            r#"
chunk = "canary-5f1d0c9e-hunter2" * 4096
while True:
    sys.stdout.write(chunk)
"#,
        )
        .await,
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(reason.contains("more than 1 MiB on stdout"), "{reason}");
}

#[tokio::test]
async fn a_create_answer_without_handle_is_refused() {
    let reason = bad_output_reason(
        create_answering(r#"answer({"fields": {"password": "canary-5f1d0c9e-hunter2"}})"#).await,
    );
    assert!(reason.contains("`handle` is missing"), "{reason}");
}

#[tokio::test]
async fn a_create_answer_without_fields_is_refused() {
    let reason = bad_output_reason(create_answering(r#"answer({"handle": "key-42"})"#).await);
    assert!(reason.contains("`fields` is missing"), "{reason}");
}

#[tokio::test]
async fn a_create_answer_with_extra_keys_is_refused() {
    let reason = bad_output_reason(
        create_answering(
            r#"answer({"handle": "h", "fields": {"password": "pw-123456"}, "note": "canary-5f1d0c9e-hunter2"})"#,
        )
        .await,
    );
    assert!(
        reason.contains("only the keys `handle` and `fields` are allowed"),
        "{reason}"
    );
}

#[tokio::test]
async fn a_field_that_is_not_a_string_is_refused_without_quoting_its_neighbours() {
    let reason = bad_output_reason(
        create_answering(
            r#"answer({"handle": "h", "fields": {"password": "canary-5f1d0c9e-hunter2", "port": 5432}})"#,
        )
        .await,
    );
    assert!(
        reason.contains("`fields` must map names to strings"),
        "{reason}"
    );
    assert!(reason.contains("data error at line 1"), "{reason}");
}

#[tokio::test]
async fn a_canary_inside_a_wrongly_typed_value_never_reaches_the_error() {
    // serde_json's own message here would be `invalid type: string "canary-...", expected ...`.
    let reason = bad_output_reason(
        create_answering(r#"answer({"handle": "h", "fields": "canary-5f1d0c9e-hunter2"})"#).await,
    );
    assert!(
        reason.contains("`fields` must map names to strings"),
        "{reason}"
    );
}

#[tokio::test]
async fn empty_handle_and_empty_fields_are_refused() {
    let reason = bad_output_reason(
        create_answering(
            r#"answer({"handle": "", "fields": {"password": "canary-5f1d0c9e-hunter2"}})"#,
        )
        .await,
    );
    assert_eq!(reason, "`handle` is empty");
    let reason =
        bad_output_reason(create_answering(r#"answer({"handle": "h", "fields": {}})"#).await);
    assert!(reason.contains("`fields` is empty"), "{reason}");
}

#[tokio::test]
async fn a_create_answer_missing_a_promised_field_names_it() {
    let scripts = Scripts::new();
    let provider = command_with(
        scripts.python(
            r#"answer({"handle": "h", "fields": {"password": "canary-5f1d0c9e-hunter2"}})"#,
        ),
        Duration::from_secs(20),
        Some(&["username", "password", "host"]),
    );
    let reason = bad_output_reason(provider.create(&target(), "rot-1", None).await.unwrap_err());
    assert_eq!(
        reason,
        "`fields` lacks `username`, `host` that the config's `fields` list promises"
    );
}

#[tokio::test]
async fn verify_and_retire_answers_must_be_json_objects() {
    let scripts = Scripts::new();
    let provider = command(scripts.python(r#"answer(["not", "an", "object"])"#));
    let made = credential("key-42", &[("password", CANARY)]);
    let reason = bad_output_reason(
        provider
            .verify(&target(), "rot-1", &made)
            .await
            .unwrap_err(),
    );
    assert_eq!(reason, "stdout is not a JSON object");

    let scripts = Scripts::new();
    let provider = command(scripts.python(r#"answer({"retired": True, "note": "fine"})"#));
    assert_eq!(
        provider.retire(&target(), "key-41").await.unwrap(),
        Outcome::Done
    );
}

// ---------------------------------------------------------------------------------------
// Values stay in the pipes

#[tokio::test]
async fn stderr_echoing_a_value_it_was_sent_is_scrubbed() {
    let scripts = Scripts::new();
    let provider = command(scripts.python(
        r#"
sys.stderr.write("could not log in with password " + req["fields"]["password"] + "\n")
sys.exit(1)
"#,
    ));
    let made = credential("key-42", &[("password", CANARY)]);
    let error = provider
        .verify(&target(), "rot-1", &made)
        .await
        .unwrap_err();
    assert_no_canary(&error);
    assert!(error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("could not log in with password [REDACTED]"),
        "{text}"
    );
}

#[tokio::test]
async fn stderr_echoing_a_value_it_answered_is_scrubbed() {
    let scripts = Scripts::new();
    // A program that made a credential, said so on stderr, then failed a later step.
    let provider = command(scripts.python(
        r#"
answer({"handle": "h", "fields": {"password": "canary-5f1d0c9e-hunter2"}})
sys.stderr.write("created canary-5f1d0c9e-hunter2 but could not save it\n")
sys.exit(75)
"#,
    ));
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    assert_no_canary(&error);
    assert!(
        error
            .to_string()
            .contains("created [REDACTED] but could not save it"),
        "{error}"
    );
}

/// A program that made a credential, said it on stderr, and answered with broken JSON.
const MALFORMED_WITH_STDERR: &str = r#"
sys.stderr.write("made the password canary-5f1d0c9e-hunter2 for you\n")
sys.stdout.write('{"handle": "h", "fields": {"password": "canary-5f1d0c9e-hunter2"')
sys.exit(int(sys.argv[2]))
"#;

#[tokio::test]
async fn stderr_is_withheld_when_the_answer_did_not_parse() {
    for code in [0, 1, 3, 78] {
        let scripts = Scripts::new();
        let mut spec = scripts.python(MALFORMED_WITH_STDERR);
        spec.args.push(code.to_string());
        let error = command(spec)
            .create(&target(), "rot-1", None)
            .await
            .unwrap_err();
        assert_no_canary(&error);
        match &error {
            ProviderError::BadOutput { .. } => assert_eq!(code, 0, "{error}"),
            ProviderError::Failed { stderr, .. } => {
                let bytes = "made the password canary-5f1d0c9e-hunter2 for you\n".len();
                assert_eq!(stderr, &Stderr::Withheld { bytes }, "exit {code}");
                let text = error.to_string();
                assert!(
                    text.ends_with(&format!("; stderr withheld: the answer did not parse, so values in it could not be scrubbed ({bytes} bytes)")),
                    "{text}"
                );
            }
            other => panic!("exit {code}: {other:?}"),
        }
    }
}

#[tokio::test]
async fn stderr_of_a_failure_with_nothing_on_stdout_is_shown() {
    let scripts = Scripts::new();
    let provider = command(scripts.sh("cat >/dev/null; echo 'database unreachable' >&2; exit 1"));
    let error = provider.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(
        error
            .to_string()
            .ends_with("; stderr: database unreachable"),
        "{error}"
    );
}

#[tokio::test]
async fn the_program_gets_no_value_in_argv_and_only_allowlisted_environment() {
    const ALLOWED: [&str; 9] = [
        "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
    ];
    // Cargo sets these for the test process; the parent's environment is not empty of
    // things a child must not see, so an inherited environment would show here.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());

    let scripts = Scripts::new();
    let dump = scripts.path("seen.json");
    let provider = command(scripts.python(&format!(
        r#"
env = open("/proc/self/environ", "rb").read().split(b"\0")
with open({dump:?}, "w") as f:
    json.dump({{"argv": open("/proc/self/cmdline", "rb").read().decode("utf-8", "replace"),
               "env": [e.decode("utf-8", "replace") for e in env if e]}}, f)
answer({{}})
"#,
        dump = path_arg(&dump)
    )));
    let made = credential("key-42", &[("password", CANARY)]);
    assert_eq!(
        provider.verify(&target(), "rot-1", &made).await.unwrap(),
        Outcome::Done
    );
    // The value did reach the program, through stdin.
    assert_eq!(scripts.requests()[0]["fields"]["password"], CANARY);

    let seen: Value = serde_json::from_str(&std::fs::read_to_string(&dump).unwrap()).unwrap();
    let argv = seen["argv"].as_str().unwrap();
    assert!(!argv.contains(CANARY), "argv: {argv}");
    for entry in seen["env"].as_array().unwrap() {
        let entry = entry.as_str().unwrap();
        let name = entry.split('=').next().unwrap();
        assert!(ALLOWED.contains(&name), "the child saw {name}");
        assert!(
            !entry.contains(CANARY),
            "a value in the environment: {name}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// random with apply

fn random_with_apply(spec: Option<CommandSpec>) -> RandomProvider {
    RandomProvider::new(RandomConfig {
        length: 40,
        charset: Charset::Alphanumeric,
        apply: spec,
        apply_timeout: Duration::from_secs(20),
    })
}

#[tokio::test]
async fn random_apply_gets_the_new_password_on_stdin() {
    let scripts = Scripts::new();
    let provider = random_with_apply(Some(scripts.python("answer({})")));
    let made = provider
        .create(&target(), "rot-7", Some("rot-6"))
        .await
        .unwrap();
    assert_eq!(made.handle, "rot-7");
    let password = made.fields["password"].expose_secret().to_owned();
    assert_eq!(password.len(), 40);
    assert_eq!(
        scripts.requests(),
        [
            json!({"action": "apply", "rotation_id": "rot-7", "policy": "orders-db",
                "resource": "store_abc", "fields": {"password": password}})
        ]
    );
}

#[tokio::test]
async fn random_apply_that_fails_fails_create_and_scrubs_the_value() {
    let scripts = Scripts::new();
    let provider = random_with_apply(Some(scripts.python(
        r#"
sys.stderr.write("backend refused " + req["fields"]["password"] + "\n")
sys.exit(1)
"#,
    )));
    let error = provider.create(&target(), "rot-7", None).await.unwrap_err();
    assert!(error.is_transient());
    let text = shown(&error);
    assert!(text.contains("(apply) failed with exit status 1"), "{text}");
    assert!(text.contains("backend refused [REDACTED]"), "{text}");
    let sent = scripts.requests()[0]["fields"]["password"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!text.contains(&sent), "the password leaked: {text}");
}

#[tokio::test]
async fn random_apply_exiting_3_fails_create_saying_the_value_was_not_applied() {
    let scripts = Scripts::new();
    let provider = random_with_apply(Some(scripts.sh("exit 3")));
    let error = provider.create(&target(), "rot-7", None).await.unwrap_err();
    assert!(!error.is_transient());
    let text = error.to_string();
    assert!(
        text.contains("does not implement `apply`, so the new value was not applied"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// Through the binary

/// A temp dir with a token and a config for the built binary, against the fake Vercel.
struct Binary {
    fake: FakeVercel,
    dir: TempDir,
}

const INSTALLATION: &str = "icfg_providers";
const TOKEN: &str = "tok_providers_7c1e";

impl Binary {
    async fn new(resources: &[&str]) -> Binary {
        let fake = FakeVercel::start().await;
        fake.add_installation(INSTALLATION, TOKEN);
        for resource in resources {
            fake.add_resource(INSTALLATION, resource);
        }
        let dir = tempfile::tempdir().unwrap();
        cli::write_token(dir.path(), "vercel.token", TOKEN);
        Binary { fake, dir }
    }

    /// Writes a config whose policies are `(name, resource, provider table)`, each pushing
    /// `{password}` as its own secret, and returns its path.
    fn config(&self, policies: &[(&str, &str, String)]) -> PathBuf {
        let mut text = format!(
            "[vercel]\napi-url = \"{url}\"\n\n[state]\ndir = \"{state}\"\n\n\
             [installations.p]\nid = \"{INSTALLATION}\"\ntoken-file = \"{token}\"\n",
            url = self.fake.url(),
            state = self.state_dir().display(),
            token = self.dir.path().join("vercel.token").display(),
        );
        for (i, (name, resource, provider)) in policies.iter().enumerate() {
            text.push_str(&format!(
                "\n[[policies]]\nname = \"{name}\"\ninstallation = \"p\"\nresources = [\"{resource}\"]\n\
                 every = \"30d\"\ngrace = \"1h\"\nprovider = {provider}\n\n\
                 [[policies.secrets]]\nname = \"SECRET_{i}\"\nvalue = \"{{password}}\"\n"
            ));
        }
        let path = self.dir.path().join("config.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// Every file of the state directory, as text.
    fn state_text(&self) -> String {
        let mut text = String::new();
        for entry in std::fs::read_dir(self.state_dir()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                text.push_str(&String::from_utf8_lossy(&std::fs::read(&path).unwrap()));
            }
        }
        text
    }

    async fn run(&self, config: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut all = vec!["--config".to_owned(), path_arg(config)];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        let env = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        cli::run_async(all, env).await
    }
}

fn command_table(argv: &[&str], timeout: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| format!("{a:?}")).collect();
    format!(
        "{{ kind = \"command\", command = [{}], timeout = \"{timeout}\" }}",
        argv.join(", ")
    )
}

/// Regression (issue 10, item 11): a program's stderr was logged unscrubbed when its stdout
/// did not parse, since only the values of a parsed answer were known to scrub.
#[tokio::test(flavor = "multi_thread")]
async fn a_program_whose_answer_does_not_parse_leaks_no_value_through_the_binary() {
    let run = Binary::new(&["res_ok", "res_fail"]).await;
    let script = run.dir.path().join("malformed.py");
    std::fs::write(
        &script,
        format!("import sys\nsys.stdin.read()\nLOG = None\n{MALFORMED_WITH_STDERR}"),
    )
    .unwrap();
    // argv[1] is unused (the Python tests' log path); argv[2] is the exit status.
    let table = |code: &str| command_table(&[PYTHON, &path_arg(&script), "-", code], "20s");
    let config = run.config(&[
        ("answers-0", "res_ok", table("0")),
        ("answers-1", "res_fail", table("1")),
    ]);
    let mut seen = String::new();
    for format in ["text", "json"] {
        let out = run
            .run(
                &config,
                &["--log-format", format, "run", "--once"],
                &[("RUST_LOG", "debug")],
            )
            .await;
        assert_eq!(out.status.code(), Some(1), "{}", cli::stderr(&out));
        seen.push_str(&cli::stdout(&out));
        seen.push_str(&cli::stderr(&out));
    }
    let status = run.run(&config, &["status", "--json"], &[]).await;
    seen.push_str(&cli::stdout(&status));
    seen.push_str(&cli::stderr(&status));
    let state = run.state_text();

    assert!(!seen.contains("hunter2"), "a value in the output:\n{seen}");
    assert!(!state.contains("hunter2"), "a value in the state:\n{state}");
    // Not vacuous: both programs ran and their stderr was withheld, which the user is told.
    let bytes = "made the password canary-5f1d0c9e-hunter2 for you\n".len();
    let withheld = format!(
        "withheld: the answer did not parse, so values in it could not be scrubbed ({bytes} bytes)"
    );
    assert!(seen.matches(&withheld).count() >= 4, "{seen}");
    assert!(state.contains(&withheld), "{state}");
    assert!(run.fake.secrets(INSTALLATION, "res_ok").is_empty());
}

/// Whether `pid` is a live process: it exists and is not a zombie (an orphan's zombie waits
/// for whoever adopted it, which may never reap it).
fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(stat) => !matches!(
            stat.rsplit(')')
                .next()
                .map(str::trim_start)
                .and_then(|s| s.chars().next()),
            Some('Z' | 'X') | None
        ),
    }
}

/// Regression (issue 10, item 14): a provider program outlived a SIGKILLed `run --once` and
/// could finish a `create` nobody records.
#[tokio::test(flavor = "multi_thread")]
async fn a_provider_program_dies_with_a_killed_run_once() {
    let run = Binary::new(&["res_slow"]).await;
    let pidfile = run.dir.path().join("pid");
    let script = run.dir.path().join("slow.sh");
    // The pid is written whole (rename) before the long sleep; `exec` keeps the pid.
    std::fs::write(
        &script,
        format!(
            "echo $$ > {p}.tmp && mv {p}.tmp {p}\nexec sleep 300\n",
            p = pidfile.display()
        ),
    )
    .unwrap();
    let config = run.config(&[(
        "slow",
        "res_slow",
        command_table(&[SH, &path_arg(&script)], "600s"),
    )]);
    let mut binary = cli::bin()
        .args(["--config", &path_arg(&config), "run", "--once"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let pid = loop {
        if let Ok(text) = std::fs::read_to_string(&pidfile) {
            break text.trim().parse::<u32>().unwrap();
        }
        if let Some(status) = binary.try_wait().unwrap() {
            panic!("run --once ended ({status}) before the program started");
        }
        assert!(Instant::now() < deadline, "the program never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(process_alive(pid));

    binary.kill().unwrap(); // SIGKILL: nothing of the binary runs after this.
    binary.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while process_alive(pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let survived = process_alive(pid);
    if survived {
        // Do not leave it sleeping for minutes after a failed test.
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid as i32).unwrap(),
            rustix::process::Signal::KILL,
        );
    }
    assert!(!survived, "the provider program outlived the killed run");
}

/// Regression (issue 10, item 19): `check` passed a command provider whose program does
/// not exist, and the run then failed as permanent.
#[tokio::test(flavor = "multi_thread")]
async fn check_refuses_a_provider_program_that_cannot_run_and_names_it() {
    let run = Binary::new(&["res_c"]).await;
    let not_executable = run.dir.path().join("rotate.sh");
    std::fs::write(&not_executable, "#!/bin/sh\n").unwrap();
    let random_apply =
        |program: &str| format!("{{ kind = \"random\", apply = [{program:?}, \"--db\"] }}");
    let missing = [
        (
            command_table(&["/nonexistent/acme-rotate", "--x"], "60s"),
            "provider.command: program `/nonexistent/acme-rotate` does not exist",
        ),
        (
            command_table(&["acme-rotate-not-installed"], "60s"),
            "provider.command: program `acme-rotate-not-installed` is not found on PATH",
        ),
        (
            command_table(&[&path_arg(&not_executable)], "60s"),
            &format!(
                "provider.command: program `{}` is not executable by this user",
                not_executable.display()
            ),
        ),
        (
            random_apply("/nonexistent/set-password"),
            "provider.apply: program `/nonexistent/set-password` does not exist",
        ),
    ];
    for (table, want) in missing {
        let config = run.config(&[("rotator", "res_c", table.clone())]);
        let out = run.run(&config, &["check"], &[]).await;
        let stderr = cli::stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{table}: {stderr}");
        assert!(
            stderr.contains(&format!("error: policy rotator: {want}")),
            "{table}: {stderr}"
        );
    }
    // The same configs with programs that exist pass, by absolute path or on PATH.
    for table in [
        command_table(&[SH, "-c", "exit 0"], "60s"),
        command_table(&["sh", "-c", "exit 0"], "60s"),
        random_apply(SH),
    ] {
        let config = run.config(&[("rotator", "res_c", table.clone())]);
        let out = run.run(&config, &["check"], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{table}: {}", cli::stderr(&out));
        assert!(
            cli::stdout(&out).contains("is executable"),
            "{}",
            cli::stdout(&out)
        );
    }
}
