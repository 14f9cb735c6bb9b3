//! Running an external program for one call, with JSON on its pipes: the hardened
//! child-process runner behind the `command` provider, the `random` provider's `apply` and
//! the `token-command` token source (see `token`). It sits below both so they share one
//! runner; what the request and the answer hold is each caller's business.
//!
//! One call starts the program directly (no shell) with the config's arguments, writes one
//! JSON request to its stdin, closes stdin, and reads stdout and stderr until the child exits.
//! Values cross **only the pipes**: never argv, never the environment.
//!
//! - **Environment.** The child's environment is cleared and only [`ENV_ALLOWLIST`] is passed
//!   through. The daemon's own environment can hold Vercel tokens (`token-env`), systemd's
//!   `$CREDENTIALS_DIRECTORY` and whatever else the unit sets; none of that is a program's
//!   business, and an inherited token would be one `env > /tmp/debug` away from disk.
//! - **Timeout.** One deadline covers the whole call (write, read, wait). On expiry the child
//!   gets SIGKILL (not SIGTERM, so a child that ignores SIGTERM cannot outlive it) and is
//!   reaped; the error is [`ChildError::Timeout`]. `kill_on_drop` covers a call that is
//!   itself cancelled (shutdown). Only the direct child is killed: a program that leaves
//!   grandchildren holding its stdout open keeps the call waiting until the deadline.
//! - **stdout** is capped at [`STDOUT_CAP`] (1 MiB). Past that the reading stops, the child is
//!   killed, and the call fails with `BadOutput`; the rest is never buffered. The bytes read are
//!   held in a [`SecretBuf`], which zeroizes them on drop and on growth.
//! - **stderr** is read concurrently (a chatty child must not block on a full pipe while we
//!   wait for its stdout), only the last ~[`STDERR_TAIL`] bytes are kept, and it is never
//!   parsed. Before it is logged or put into an error it is scrubbed of every value sent or
//!   received in the call. When stdout held something that did not parse as the answer, the
//!   values the program made are unknown and cannot be scrubbed, so stderr is **withheld**
//!   whole ([`Stderr::Withheld`]: only its size is told), and no excerpt of stdout is shown
//!   either. A program that fails having printed nothing on stdout gave no values, and its
//!   stderr (scrubbed of the values sent) is shown: that is where it says why it failed.
//! - **Parent death.** The child asks the kernel for SIGKILL when its parent dies
//!   (`PR_SET_PDEATHSIG`, see [`die_with_parent`]), so a killed daemon leaves no program
//!   finishing a `create` that nobody will record.
//! - **Exit status.** 0: the answer on stdout counts. 3: the program does not know the action
//!   ([`Reply::Unsupported`], or an error where the action is required, see [`Required`]).
//!   Any other status is [`ChildError::Failed`], permanent for the sysexits codes that say
//!   the call itself is wrong (64 `EX_USAGE`, 65 `EX_DATAERR`, 77 `EX_NOPERM`,
//!   78 `EX_CONFIG`), transient for every other code and for death by a signal.

use std::fmt;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use zeroize::Zeroizing;

use crate::config::CommandSpec;
use crate::error::{Classify, Persistence};
use crate::secret;

/// The only environment variables a provider program inherits: what a script needs to find
/// its tools, its locale, its time zone and a scratch directory, and nothing that can hold a
/// credential.
pub(crate) const ENV_ALLOWLIST: [&str; 9] = [
    "PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "USER", "LOGNAME",
];

/// The most stdout one call may produce. An answer is a handle and a few fields; a program
/// writing more is broken, and the daemon must not buffer an unbounded amount for it.
pub(crate) const STDOUT_CAP: usize = 1024 * 1024;

/// How much of the end of stderr is kept: enough for the error a program dies with.
pub(crate) const STDERR_TAIL: usize = 2048;

const READ_CHUNK: usize = 8 * 1024;

/// The exit status that says "I do not know this action" (DESIGN).
const EXIT_UNSUPPORTED: i32 = 3;

/// Why a call of a program failed. Messages never hold a value: text that came from the
/// child is scrubbed of the values it was given or returned before it gets here. Callers wrap
/// it in their own error (`ProviderError`, `TokenError`) with the same classification.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("could not start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{program}` ({action}) did not finish within {}; it was killed", crate::duration::format(*.after))]
    Timeout {
        program: String,
        action: &'static str,
        after: Duration,
    },
    #[error("`{program}` ({action}) failed with {status}{}", stderr_suffix(.stderr))]
    Failed {
        program: String,
        action: &'static str,
        /// "exit status 1" or "signal 9".
        status: String,
        /// Whether the exit status asks for a retry (anything but the sysexits permanent ones).
        transient: bool,
        /// What may be shown of the child's stderr.
        stderr: Stderr,
    },
    #[error("`{program}` ({action}) answered with invalid output: {reason}")]
    BadOutput {
        program: String,
        action: &'static str,
        reason: String,
    },
    #[error("I/O with `{program}` ({action}) failed: {source}")]
    Io {
        program: String,
        action: &'static str,
        #[source]
        source: io::Error,
    },
}

impl Classify for ChildError {
    fn persistence(&self) -> Persistence {
        match self {
            // A missing or non-executable program stays that way until the config changes.
            ChildError::Spawn { .. } => Persistence::Permanent,
            ChildError::Timeout { .. } => Persistence::Transient,
            ChildError::Failed {
                transient: true, ..
            } => Persistence::Transient,
            ChildError::Failed {
                transient: false, ..
            } => Persistence::Permanent,
            // A program that breaks the protocol will do it again.
            ChildError::BadOutput { .. } => Persistence::Permanent,
            ChildError::Io { .. } => Persistence::Transient,
        }
    }
}

/// What an error or a log line shows of a program's stderr.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stderr {
    /// Its end, cut short and scrubbed of every value of the call (may be empty).
    Shown(String),
    /// Nothing of it: the answer did not parse, so the values the program made (which stderr
    /// may echo) are unknown and could not be scrubbed out. Only its size is told.
    Withheld { bytes: usize },
}

impl Stderr {
    /// Whether there is nothing to show or withhold.
    pub fn is_empty(&self) -> bool {
        match self {
            Stderr::Shown(text) => text.trim().is_empty(),
            Stderr::Withheld { bytes } => *bytes == 0,
        }
    }
}

impl fmt::Display for Stderr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stderr::Shown(text) => f.write_str(text.trim()),
            Stderr::Withheld { bytes } => write!(
                f,
                "withheld: the answer did not parse, so values in it could not be scrubbed ({bytes} bytes)"
            ),
        }
    }
}

/// `; stderr: ...` for an error message, or nothing when there is nothing to tell.
pub(crate) fn stderr_suffix(stderr: &Stderr) -> String {
    match stderr {
        _ if stderr.is_empty() => String::new(),
        Stderr::Shown(_) => format!("; stderr: {stderr}"),
        Stderr::Withheld { .. } => format!("; stderr {stderr}"),
    }
}

/// An answer's bytes as text, or a reason (safe to show) when they are not UTF-8; `noun`
/// says where they came from ("stdout", "the response body").
pub(crate) fn utf8_text<'a>(bytes: &'a [u8], noun: &str) -> Result<&'a str, String> {
    std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "{noun} is not UTF-8 (invalid byte at offset {})",
            e.valid_up_to()
        )
    })
}

/// A byte buffer for values in transit (a request, an answer) that leaves no copy behind:
/// growing it zeroizes the old allocation, and dropping it zeroizes the contents. A plain
/// `Vec` would leave every outgrown allocation in freed memory.
#[derive(Default)]
pub(crate) struct SecretBuf(Zeroizing<Vec<u8>>);

impl SecretBuf {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn extend_from_slice(&mut self, bytes: &[u8]) {
        let needed = self.0.len() + bytes.len();
        if needed > self.0.capacity() {
            let mut grown = Zeroizing::new(Vec::with_capacity(
                needed.max(2 * self.0.capacity()).max(256),
            ));
            grown.extend_from_slice(&self.0);
            // The old allocation is zeroized when `grown`'s predecessor drops here.
            self.0 = grown;
        }
        self.0.extend_from_slice(bytes);
    }

    /// Serializes `value` as JSON straight into a new buffer.
    pub fn json(value: &impl Serialize) -> Result<SecretBuf, serde_json::Error> {
        let mut buf = SecretBuf::new();
        serde_json::to_writer(&mut buf, value)?;
        Ok(buf)
    }
}

impl io::Write for SecretBuf {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl fmt::Debug for SecretBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretBuf([REDACTED {} bytes])", self.0.len())
    }
}

/// What a call does when the program exits 3.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Required {
    /// The action is optional: exit 3 is [`Reply::Unsupported`], a no-op.
    No,
    /// The action must be implemented: exit 3 is a permanent `Failed` whose status says this
    /// (the text is appended to "exit status 3").
    Yes(&'static str),
}

/// A successful call's result.
#[derive(Debug)]
pub(crate) enum Reply<T> {
    Done(T),
    /// The program exited 3 for an optional action.
    Unsupported,
}

/// The secret values in a parsed answer, so stderr can be scrubbed of them.
pub(crate) trait SecretValues {
    fn secret_values(&self) -> Vec<&SecretString>;
}

impl SecretValues for () {
    fn secret_values(&self) -> Vec<&SecretString> {
        Vec::new()
    }
}

/// One call of a program: which program, for which action, with how long to finish.
pub(crate) struct Invocation<'a> {
    pub spec: &'a CommandSpec,
    pub action: &'static str,
    pub timeout: Duration,
    pub required: Required,
}

impl Invocation<'_> {
    /// Runs the program with `request` on stdin and turns its stdout into `T` with `parse`,
    /// which gets valid UTF-8 and returns a reason (safe to show) on failure. On exit 0 the
    /// parsed answer is the call's result; on another exit it is parsed only to learn which
    /// values stderr may echo.
    ///
    /// `sent` are the secret values in the request; they and the values of the parsed answer
    /// are scrubbed from stderr before it is logged or returned. When stdout held something
    /// that did not parse, stderr is withheld whole (see [`Stderr::Withheld`]).
    pub async fn call<T: SecretValues>(
        &self,
        request: &SecretBuf,
        sent: &[&SecretString],
        parse: impl FnOnce(&str) -> Result<T, String>,
    ) -> Result<Reply<T>, ChildError> {
        let program = self.spec.display_name();
        let mut child = self.spawn()?;
        let mut stdout = SecretBuf::new();
        let mut stderr = StderrTail::new();
        let outcome = tokio::time::timeout(
            self.timeout,
            exchange(&mut child, request, &mut stdout, &mut stderr),
        )
        .await;

        let status = match outcome {
            Ok(Ok(status)) => status,
            Ok(Err(failure)) => {
                kill_and_reap(&mut child).await;
                let error = match failure {
                    Exchange::Overflow => ChildError::BadOutput {
                        program: program.clone(),
                        action: self.action,
                        reason: format!(
                            "more than {} MiB on stdout; the program was killed",
                            STDOUT_CAP / (1024 * 1024)
                        ),
                    },
                    Exchange::Io(source) => ChildError::Io {
                        program: program.clone(),
                        action: self.action,
                        source,
                    },
                };
                // Whatever stdout holds was cut off: it was never an answer to parse.
                self.log_failure(&stderr.unless_answered(&stdout, sent), "killed");
                return Err(error);
            }
            Err(_elapsed) => {
                kill_and_reap(&mut child).await;
                let tail = stderr.unless_answered(&stdout, sent);
                self.log_failure(&tail, "timed out, killed");
                return Err(ChildError::Timeout {
                    program,
                    action: self.action,
                    after: self.timeout,
                });
            }
        };

        // A failed program that printed nothing gave no answer, so there is no value of its
        // making to know about; otherwise its answer is parsed, if only to scrub stderr of it.
        let answer = (status.success() || !stdout.is_empty())
            .then(|| utf8_text(stdout.as_bytes(), "stdout").and_then(parse));
        let tail = match &answer {
            Some(Ok(answer)) => {
                Stderr::Shown(stderr.finish(sent.iter().copied().chain(answer.secret_values())))
            }
            _ => stderr.unless_answered(&stdout, sent),
        };

        match status.code() {
            Some(0) => {}
            Some(EXIT_UNSUPPORTED) => {
                return match self.required {
                    Required::No => {
                        tracing::debug!(
                            program = %program,
                            action = self.action,
                            stderr = %tail,
                            "the program does not implement this action (exit status 3)"
                        );
                        Ok(Reply::Unsupported)
                    }
                    Required::Yes(why) => {
                        let status = format!("exit status 3 ({why})");
                        self.log_failure(&tail, &status);
                        Err(ChildError::Failed {
                            program,
                            action: self.action,
                            status,
                            transient: false,
                            stderr: tail,
                        })
                    }
                };
            }
            _ => {
                let status_text = describe_status(status);
                self.log_failure(&tail, &status_text);
                return Err(ChildError::Failed {
                    program,
                    action: self.action,
                    status: status_text,
                    transient: is_transient(status),
                    stderr: tail,
                });
            }
        }

        match answer {
            Some(Ok(answer)) => {
                if !tail.is_empty() {
                    tracing::debug!(program = %program, action = self.action, stderr = %tail, "external program's stderr");
                }
                Ok(Reply::Done(answer))
            }
            Some(Err(reason)) => {
                self.log_failure(&tail, "exit status 0 with an invalid answer");
                Err(ChildError::BadOutput {
                    program,
                    action: self.action,
                    reason,
                })
            }
            // Exit 0 always parses (`answer` is `Some`); this arm is never taken.
            None => Err(ChildError::BadOutput {
                program,
                action: self.action,
                reason: "no answer was read".to_owned(),
            }),
        }
    }

    fn spawn(&self) -> Result<Child, ChildError> {
        let mut command = Command::new(&self.spec.program);
        command
            .args(&self.spec.args)
            // See the module doc: the daemon's environment may hold Vercel tokens.
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for name in ENV_ALLOWLIST {
            if let Some(value) = std::env::var_os(name) {
                command.env(name, value);
            }
        }
        let parent = rustix::process::getpid();
        // SAFETY: the closure runs in the forked child before exec, where only
        // async-signal-safe work is allowed: it makes two system calls (prctl, getppid) and
        // neither allocates nor takes a lock. It captures only a `Pid` (a plain integer).
        unsafe {
            command.pre_exec(move || die_with_parent(parent));
        }
        command.spawn().map_err(|source| ChildError::Spawn {
            program: self.spec.display_name(),
            source,
        })
    }

    fn log_failure(&self, stderr: &Stderr, status: &str) {
        // A program's stderr spans lines; a log line does not.
        let stderr = stderr.to_string();
        tracing::warn!(
            program = %self.spec.display_name(),
            action = self.action,
            status,
            stderr = %crate::events::one_line(&stderr),
            "external program failed"
        );
    }
}

/// In the child, before exec: asks the kernel to SIGKILL it when its parent goes, so a
/// program never outlives a daemon or `run --once` that was killed (SIGKILL, OOM killer)
/// and finishes a `create` nobody records, racing the restarted run's redo. `kill_on_drop`
/// only covers a parent that lives to drop the `Child`.
///
/// The parent-death signal follows the *thread* that forked the child, not the process: it
/// fires when that thread exits. Provider calls run on the tokio runtime's worker threads
/// (or the thread blocking on the runtime), which live as long as the runtime; never make a
/// call from `spawn_blocking`, whose idle threads exit after a few seconds and would kill a
/// child in the middle of its call.
///
/// If the parent died between fork and the prctl, no signal will ever come: the child has
/// already been re-parented, so `getppid` no longer names `parent`, and it must not run.
fn die_with_parent(parent: rustix::process::Pid) -> io::Result<()> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    if rustix::process::getppid() != Some(parent) {
        return Err(io::Error::from(rustix::io::Errno::SRCH));
    }
    Ok(())
}

/// Checks, without running it, that `program` can be run: a path with a `/` must be a file
/// this user may execute; a bare name must be one on `PATH` (the `PATH` the program is
/// started with, see [`ENV_ALLOWLIST`]). The reason names the program as written.
pub(crate) fn resolve_program(program: &Path) -> Result<PathBuf, String> {
    let shown = program.display();
    if program.as_os_str().as_bytes().contains(&b'/') {
        return match check_executable(program) {
            Ok(()) => Ok(program.to_owned()),
            Err(why) => Err(format!("program `{shown}` {why}")),
        };
    }
    // execvp's default when PATH is unset (glibc's confstr(_CS_PATH)).
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| check_executable(candidate).is_ok())
        .ok_or_else(|| {
            format!(
                "program `{shown}` is not found on PATH ({}): give an absolute path, or install it",
                path.to_string_lossy()
            )
        })
}

/// Whether `path` is a regular file (after symlinks) that this user may execute.
fn check_executable(path: &Path) -> Result<(), &'static str> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err("does not exist"),
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return Err("cannot be reached: permission denied on a directory of its path");
        }
        Err(_) => return Err("cannot be inspected"),
        Ok(meta) if !meta.is_file() => return Err("is not a regular file"),
        Ok(_) => {}
    }
    rustix::fs::access(path, rustix::fs::Access::EXEC_OK)
        .map_err(|_| "is not executable by this user")
}

/// Why the exchange with a child stopped before it exited on its own.
enum Exchange {
    Overflow,
    Io(io::Error),
}

/// Writes the request, reads stdout (capped) and stderr (tail) concurrently, then waits for
/// the exit. Runs under the call's deadline; the caller kills the child on any error.
async fn exchange(
    child: &mut Child,
    request: &SecretBuf,
    stdout_buf: &mut SecretBuf,
    stderr_tail: &mut StderrTail,
) -> Result<ExitStatus, Exchange> {
    let (Some(mut stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        return Err(Exchange::Io(io::Error::other(
            "the child's pipes were not set up",
        )));
    };

    let write = async move {
        let written = stdin.write_all(request.as_bytes()).await;
        // Dropping stdin closes it: the program sees EOF after the one request.
        drop(stdin);
        match written {
            // A program may exit (say, 3 for an unknown action) without reading its request;
            // its exit status is the answer, not our failed write.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
            other => other.map_err(Exchange::Io),
        }
    };
    let read_out = read_capped(stdout, stdout_buf, STDOUT_CAP);
    let read_err = async { stderr_tail.read_all(stderr).await.map_err(Exchange::Io) };

    tokio::try_join!(write, read_out, read_err)?;
    child.wait().await.map_err(Exchange::Io)
}

/// Reads `from` into `into` until EOF, or fails with `Overflow` as soon as more than `cap`
/// bytes came, without reading further.
async fn read_capped(
    mut from: impl AsyncRead + Unpin,
    into: &mut SecretBuf,
    cap: usize,
) -> Result<(), Exchange> {
    let mut chunk = Zeroizing::new([0u8; READ_CHUNK]);
    loop {
        let n = from.read(&mut chunk[..]).await.map_err(Exchange::Io)?;
        if n == 0 {
            return Ok(());
        }
        if into.len() + n > cap {
            return Err(Exchange::Overflow);
        }
        into.extend_from_slice(&chunk[..n]);
    }
}

/// SIGKILL and reap. Errors are only logged: the child may already have exited, and
/// `kill_on_drop` plus tokio's orphan reaping are the backstop.
async fn kill_and_reap(child: &mut Child) {
    if let Err(e) = child.start_kill() {
        tracing::debug!(error = %e, "could not kill a program (it may have exited)");
    }
    if let Err(e) = child.wait().await {
        tracing::debug!(error = %e, "could not reap a program");
    }
}

/// "exit status 1" or "signal 9", as [`ChildError::Failed`] shows it.
fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => "an unknown status".to_owned(),
    }
}

/// Whether a failed exit is worth retrying. The sysexits codes below say the request or the
/// program's setup is wrong, which a retry cannot fix; everything else (1, a crash, a signal
/// such as the OOM killer's) may pass.
fn is_transient(status: ExitStatus) -> bool {
    const EX_USAGE: i32 = 64;
    const EX_DATAERR: i32 = 65;
    const EX_NOPERM: i32 = 77;
    const EX_CONFIG: i32 = 78;
    !matches!(
        status.code(),
        Some(EX_USAGE | EX_DATAERR | EX_NOPERM | EX_CONFIG)
    )
}

/// The end of a child's stderr, in bounded memory.
struct StderrTail {
    /// Holds between `STDERR_TAIL` and twice that once there is that much, so a value cut at
    /// the front can still be recognised (see `finish`). Allocated once: never reallocated,
    /// zeroized on drop.
    window: Zeroizing<Vec<u8>>,
    /// Whether bytes were dropped from the front.
    cut: bool,
    /// How many bytes the child wrote in all.
    total: usize,
}

impl StderrTail {
    fn new() -> Self {
        StderrTail {
            window: Zeroizing::new(Vec::with_capacity(2 * STDERR_TAIL + READ_CHUNK)),
            cut: false,
            total: 0,
        }
    }

    async fn read_all(&mut self, mut from: impl AsyncRead + Unpin) -> io::Result<()> {
        let mut chunk = Zeroizing::new([0u8; READ_CHUNK]);
        loop {
            let n = from.read(&mut chunk[..]).await?;
            if n == 0 {
                return Ok(());
            }
            self.total = self.total.saturating_add(n);
            self.window.extend_from_slice(&chunk[..n]);
            if self.window.len() > 2 * STDERR_TAIL {
                let excess = self.window.len() - STDERR_TAIL;
                self.window.drain(..excess);
                self.cut = true;
            }
        }
    }

    /// What may be shown when no answer parsed: the kept text scrubbed of the values `sent`
    /// if stdout is empty (the program answered nothing, so it told of no value of its own),
    /// else nothing but the size, since the values in that stdout are unknown.
    fn unless_answered(&self, stdout: &SecretBuf, sent: &[&SecretString]) -> Stderr {
        if stdout.is_empty() || self.total == 0 {
            Stderr::Shown(self.finish(sent.iter().copied()))
        } else {
            Stderr::Withheld { bytes: self.total }
        }
    }

    /// The kept text, scrubbed of `values` and cut to about `STDERR_TAIL` bytes, trimmed.
    fn finish<'a>(&self, values: impl IntoIterator<Item = &'a SecretString>) -> String {
        let values: Vec<&SecretString> = values.into_iter().collect();
        let text = String::from_utf8_lossy(&self.window);
        let mut text: &str = &text;
        if self.cut {
            // The front was dropped mid-stream: it may start mid-character or mid-value, and
            // the end of a value is not matched by scrubbing the whole value.
            text = text.trim_start_matches('\u{FFFD}');
            text = &text[cut_value_suffix(text, &values)..];
        }
        let scrubbed = secret::scrub(text, values.iter().copied());
        let trimmed = scrubbed.trim();
        if trimmed.len() <= STDERR_TAIL && !self.cut {
            return trimmed.to_owned();
        }
        let mut start = trimmed.len().saturating_sub(STDERR_TAIL);
        while !trimmed.is_char_boundary(start) {
            start += 1;
        }
        format!("...{}", &trimmed[start..])
    }
}

/// The length of the longest proper suffix of any value that `text` starts with.
fn cut_value_suffix(text: &str, values: &[&SecretString]) -> usize {
    values
        .iter()
        .flat_map(|value| {
            let value = value.expose_secret();
            value
                .char_indices()
                .skip(1)
                .map(move |(i, _)| &value[i..])
                .filter(|suffix| text.starts_with(suffix))
                .map(str::len)
                .max()
        })
        .max()
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[test]
    fn secret_buf_keeps_every_byte_across_growth() {
        let mut buf = SecretBuf::new();
        for i in 0..5000u32 {
            buf.extend_from_slice(&i.to_le_bytes());
        }
        assert_eq!(buf.len(), 20_000);
        assert_eq!(&buf.as_bytes()[4..8], &1u32.to_le_bytes());
        assert!(!format!("{buf:?}").contains('\u{1}'));
    }

    #[test]
    fn sysexits_for_a_wrong_call_are_permanent_the_rest_transient() {
        let code = |c: i32| ExitStatus::from_raw(c << 8);
        for (c, transient) in [
            (1, true),
            (2, true),
            (75, true),
            (64, false),
            (65, false),
            (77, false),
            (78, false),
        ] {
            assert_eq!(is_transient(code(c)), transient, "exit {c}");
            assert_eq!(describe_status(code(c)), format!("exit status {c}"));
        }
        let killed = ExitStatus::from_raw(9);
        assert!(is_transient(killed));
        assert_eq!(describe_status(killed), "signal 9");
    }

    #[test]
    fn stderr_tail_keeps_a_bounded_window_of_the_end() {
        let mut tail = StderrTail::new();
        let mut text = "x".repeat(100_000);
        text.push_str("the last words");
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(tail.read_all(text.as_bytes()))
            .unwrap();
        assert!(
            tail.window.len() <= 2 * STDERR_TAIL,
            "{}",
            tail.window.len()
        );
        let out = tail.finish([]);
        assert!(out.len() <= STDERR_TAIL + 3, "{}", out.len());
        assert!(out.starts_with("...x"), "{out}");
        assert!(out.ends_with("the last words"), "{out}");
    }

    #[test]
    fn stderr_tail_scrubs_a_value_cut_at_the_front() {
        let secret = s("0123456789-canary-ABCDEFGHIJ");
        let mut window = Zeroizing::new(Vec::new());
        // What is left of the value after the window's front was dropped mid-value.
        window.extend_from_slice(b"canary-ABCDEFGHIJ and later 0123456789-canary-ABCDEFGHIJ end");
        let total = window.len();
        let tail = StderrTail {
            window,
            cut: true,
            total,
        };
        let out = tail.finish([&secret]);
        assert_eq!(out, "...and later [REDACTED] end");
    }
}
