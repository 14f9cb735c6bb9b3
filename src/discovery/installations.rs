//! Where discovered installations come from: `installations-dir` or `installations-command`
//! (DESIGN, "Fleets"), read afresh at each [`find`].
//!
//! - **A directory**: every regular file `<id>.token` is an installation, whose token is that
//!   file (or, with `token-command`, the command's). The partner's backend writes one on
//!   Upsert Installation and deletes it on Delete Installation, so a file added or removed is
//!   seen at the next `find`. Names it writes on the way (`.name`, `name.tmp`, `name~`) are
//!   passed over silently; any other name, a link, a directory or another user's file is a
//!   problem (reported, skipped), not an error: it costs only its own installation. Whether a
//!   token can be read is not looked at here: the token module reads it at each push and
//!   fails that installation only.
//! - **A command**: run with the hardened child runner (`crate::child`, as the token command
//!   is), `{"action": "installations"}` on stdin, `{"installations": [{"id": "icfg_..."}]}` on
//!   stdout (other keys ignored); every installation's token comes from `token-command`.
//!
//! An id is taken only when it can name a file (`crate::resource::is_file_safe_installation_id`):
//! the inventory keeps `<id>.json`. When the source itself cannot be read (the directory is
//! missing, unsafe or unreadable; the command fails), [`find`] fails with a [`FindError`]:
//! the caller keeps the set it last knew, so a failure never reads as "no installations".

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

use crate::child::{ChildError, Invocation, Reply, Required, SecretBuf, SecretValues};
use crate::config::{CommandSpec, Discovery, InstallationSource, TokenSource};
use crate::error::{Classify, Persistence};
use crate::resource::{MAX_INSTALLATION_ID_LEN, is_file_safe_installation_id};

/// How long the installations command may take. It answers from the partner's own database;
/// past a minute it is stuck, and the last known set serves until the next pass.
pub const INSTALLATIONS_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

const ACTION: &str = "installations";
const TOKEN_SUFFIX: &str = ".token";

/// One installation found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Vercel's `integrationConfigurationId`.
    pub id: String,
    pub token: TokenSource,
}

/// What one look at the source saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Seen {
    /// Sorted by id, one per id.
    pub installations: Vec<Found>,
    /// What was passed over and why, each naming the entry and the fix: for the log and
    /// `check`. Each costs only its own entry.
    pub problems: Vec<String>,
}

/// Why the source could not be read at all. The caller keeps its last known set.
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    #[error("installations-dir {path} cannot be read: {source}", path = .path.display())]
    Unreadable {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A link, not a directory, open to writes by group or others, or another user's: whoever
    /// else can write there chooses the installations and their tokens.
    #[error("installations-dir {path} is refused: {reason}", path = .path.display())]
    Unsafe { path: PathBuf, reason: String },
    #[error("installations-command: {source}")]
    Command {
        #[source]
        source: ChildError,
    },
    /// The config makes `token-command` required with a command source; this guards a
    /// `Discovery` built otherwise.
    #[error(
        "installations-command `{program}` gives ids only: set `token-command` in [discovery] for their tokens"
    )]
    NoTokenCommand { program: String },
}

impl Classify for FindError {
    fn persistence(&self) -> Persistence {
        match self {
            FindError::Unreadable { source, .. } => match source.kind() {
                // Stays so until someone creates the directory or fixes its permissions.
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => Persistence::Permanent,
                _ => Persistence::Transient,
            },
            FindError::Unsafe { .. } | FindError::NoTokenCommand { .. } => Persistence::Permanent,
            // The child runner's rules, as for the token command: a timeout or a failing exit
            // may pass; a missing program, a broken answer or a sysexits "wrong call" will not.
            FindError::Command { source } => source.persistence(),
        }
    }
}

/// Reads the configured source once.
pub async fn find(discovery: &Discovery) -> Result<Seen, FindError> {
    find_in(
        &discovery.source,
        discovery.token_command.as_ref(),
        INSTALLATIONS_COMMAND_TIMEOUT,
    )
    .await
}

/// [`find`] with its parts, and the command's timeout: what the tests drive.
pub(crate) async fn find_in(
    source: &InstallationSource,
    token_command: Option<&CommandSpec>,
    timeout: Duration,
) -> Result<Seen, FindError> {
    match source {
        InstallationSource::Dir(path) => {
            let (path, token_command) = (path.clone(), token_command.cloned());
            // Blocking directory reads, a few thousand entries: off the runtime's threads.
            match tokio::task::spawn_blocking(move || read_dir(&path, token_command.as_ref())).await
            {
                Ok(result) => result,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Err(e) => Err(FindError::Unreadable {
                    path: PathBuf::new(),
                    source: io::Error::other(e),
                }),
            }
        }
        InstallationSource::Command(spec) => {
            let Some(token_command) = token_command else {
                return Err(FindError::NoTokenCommand {
                    program: spec.display_name(),
                });
            };
            ask_command(spec, token_command, timeout).await
        }
    }
}

/// The directory source. The directory is opened once, without following a link, and every
/// entry is looked at relative to that descriptor, so what is checked is what is listed.
fn read_dir(path: &Path, token_command: Option<&CommandSpec>) -> Result<Seen, FindError> {
    let unreadable = |source: io::Error| FindError::Unreadable {
        path: path.to_owned(),
        source,
    };
    let refuse = |reason: String| FindError::Unsafe {
        path: path.to_owned(),
        reason,
    };
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let dir = match rustix::fs::open(path, flags, Mode::empty()) {
        Ok(fd) => std::fs::File::from(fd),
        Err(errno @ (Errno::LOOP | Errno::NOTDIR)) => {
            return Err(match std::fs::symlink_metadata(path) {
                Ok(meta) if meta.file_type().is_symlink() => refuse(format!(
                    "it is a symbolic link; set installations-dir to the directory itself ({})",
                    std::fs::canonicalize(path)
                        .map_or_else(|_| "its target".to_owned(), |t| t.display().to_string())
                )),
                Ok(_) => refuse("it is not a directory".to_owned()),
                Err(_) => unreadable(errno.into()),
            });
        }
        Err(errno) => return Err(unreadable(errno.into())),
    };
    let meta = dir.metadata().map_err(unreadable)?;
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(refuse(format!(
            "it belongs to uid {}, who could put any installation and token in it; it must belong to uid {euid} (that runs this) or root: `chown {euid} {}`",
            meta.uid(),
            path.display()
        )));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(refuse(format!(
            "it is writable by group or others (mode {mode:04o}), who could put any installation and token in it; run `chmod go-w {}`",
            path.display()
        )));
    }

    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut problems = Vec::new();
    let entries = rustix::fs::Dir::read_from(&dir).map_err(|e| unreadable(e.into()))?;
    for entry in entries {
        let entry = entry.map_err(|e| unreadable(e.into()))?;
        let raw = entry.file_name().to_bytes();
        if raw == b"." || raw == b".." {
            continue;
        }
        let name = String::from_utf8_lossy(raw);
        // What a backend writing atomically leaves on the way, or an editor's backup.
        if name.starts_with('.') || name.ends_with(".tmp") || name.ends_with('~') {
            continue;
        }
        let entry_path = path.join(&*name);
        let Some(id) = name
            .strip_suffix(TOKEN_SUFFIX)
            // A name that is not UTF-8 holds U+FFFD here, which no id does.
            .filter(|id| is_file_safe_installation_id(id))
        else {
            problems.push(format!(
                "{}: not <integrationConfigurationId>.token, ignored",
                entry_path.display()
            ));
            continue;
        };
        let stat = match rustix::fs::statat(&dir, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => stat,
            // Deleted since the listing: the installation is gone.
            Err(Errno::NOENT) => continue,
            Err(errno) => {
                problems.push(format!(
                    "{}: cannot be inspected ({}), skipped",
                    entry_path.display(),
                    io::Error::from(errno)
                ));
                continue;
            }
        };
        let problem = match FileType::from_raw_mode(stat.st_mode) {
            FileType::RegularFile if stat.st_uid == euid || stat.st_uid == 0 => None,
            FileType::RegularFile => Some(format!(
                "it belongs to uid {}, not to uid {euid} that runs this or root; the backend writing it must run as one of them, or `chown {euid} {}`",
                stat.st_uid,
                entry_path.display()
            )),
            FileType::Symlink => Some(
                "it is a symbolic link; write the token file itself here (a link could point at any file)"
                    .to_owned(),
            ),
            FileType::Directory => Some("it is a directory; move it away".to_owned()),
            _ => Some("it is not a regular file; move it away".to_owned()),
        };
        if let Some(problem) = problem {
            problems.push(format!("{}: {problem}; skipped", entry_path.display()));
            continue;
        }
        let token = match token_command {
            Some(spec) => TokenSource::Command(spec.clone()),
            None => TokenSource::File(entry_path),
        };
        found.insert(
            id.to_owned(),
            Found {
                id: id.to_owned(),
                token,
            },
        );
    }
    problems.sort();
    Ok(Seen {
        installations: found.into_values().collect(),
        problems,
    })
}

#[derive(Serialize)]
struct Request {
    action: &'static str,
}

/// The answer; keys beyond these are ignored, so the partner's program can say more.
#[derive(Deserialize)]
struct Answer {
    installations: Vec<AnswerEntry>,
}

#[derive(Deserialize)]
struct AnswerEntry {
    id: String,
}

impl SecretValues for Answer {
    fn secret_values(&self) -> Vec<&SecretString> {
        Vec::new()
    }
}

const ANSWER_SHAPE: &str =
    "an object with `installations`, a list of objects each with `id` (a string)";

/// The command source.
async fn ask_command(
    spec: &CommandSpec,
    token_command: &CommandSpec,
    timeout: Duration,
) -> Result<Seen, FindError> {
    let failed = |source: ChildError| FindError::Command { source };
    let request = SecretBuf::json(&Request { action: ACTION }).map_err(|e| {
        failed(ChildError::Io {
            program: spec.display_name(),
            action: ACTION,
            source: io::Error::other(format!("could not encode the request ({:?})", e.classify())),
        })
    })?;
    let invocation = Invocation {
        spec,
        action: ACTION,
        timeout,
        // Exit 3 is no "nothing to do" here: a program that cannot list installations is
        // the wrong program, and an empty answer would retire every installation.
        required: Required::Yes("the program does not implement `installations`"),
    };
    tracing::debug!(program = %spec.display_name(), "asking the installations command");
    let answer = match invocation.call(&request, &[], parse_answer).await {
        Ok(Reply::Done(answer)) => answer,
        // `Required::Yes` makes exit 3 an error; this arm is never taken.
        Ok(Reply::Unsupported) => {
            return Err(failed(ChildError::BadOutput {
                program: spec.display_name(),
                action: ACTION,
                reason: "the program does not implement `installations`".to_owned(),
            }));
        }
        Err(e) => return Err(failed(e)),
    };

    let mut found: BTreeMap<String, Found> = BTreeMap::new();
    let mut problems = Vec::new();
    for (index, entry) in answer.installations.into_iter().enumerate() {
        if !is_file_safe_installation_id(&entry.id) {
            let shown: String = entry.id.chars().take(MAX_INSTALLATION_ID_LEN).collect();
            problems.push(format!(
                "installations-command `{}`: installations[{index}].id {shown:?} is not an integrationConfigurationId (1 to {MAX_INSTALLATION_ID_LEN} of A-Z a-z 0-9 _ -), ignored",
                spec.display_name()
            ));
            continue;
        }
        found.entry(entry.id.clone()).or_insert_with(|| Found {
            id: entry.id,
            token: TokenSource::Command(token_command.clone()),
        });
    }
    Ok(Seen {
        installations: found.into_values().collect(),
        problems,
    })
}

/// Parses the answer; the reason says where it broke, without quoting it.
fn parse_answer(text: &str) -> Result<Answer, String> {
    if !text.trim_start().starts_with('{') {
        return Err(format!(
            "stdout is not a JSON object; expected {ANSWER_SHAPE}"
        ));
    }
    serde_json::from_str(text).map_err(|e| {
        format!(
            "stdout is not the expected JSON: {ANSWER_SHAPE} (error at line {}, column {})",
            e.line(),
            e.column()
        )
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn dir_source(dir: &Path) -> InstallationSource {
        InstallationSource::Dir(dir.to_owned())
    }

    /// An owner-only directory of installations, as the partner's backend keeps it.
    fn installations_dir() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("installations");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        (tmp, dir)
    }

    fn write_token(dir: &Path, name: &str) {
        let path = dir.join(name);
        std::fs::write(&path, "tok_value\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    async fn find_dir(dir: &Path, token_command: Option<&CommandSpec>) -> Seen {
        find_in(&dir_source(dir), token_command, Duration::from_secs(5))
            .await
            .unwrap()
    }

    fn ids(seen: &Seen) -> Vec<&str> {
        seen.installations.iter().map(|f| f.id.as_str()).collect()
    }

    #[tokio::test]
    async fn token_files_added_and_removed_are_seen_at_the_next_find() {
        let (_tmp, dir) = installations_dir();
        assert_eq!(find_dir(&dir, None).await, Seen::default());

        write_token(&dir, "icfg_b.token");
        write_token(&dir, "icfg_a.token");
        let seen = find_dir(&dir, None).await;
        assert_eq!(
            seen.installations,
            [
                Found {
                    id: "icfg_a".to_owned(),
                    token: TokenSource::File(dir.join("icfg_a.token")),
                },
                Found {
                    id: "icfg_b".to_owned(),
                    token: TokenSource::File(dir.join("icfg_b.token")),
                },
            ]
        );
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);

        std::fs::remove_file(dir.join("icfg_a.token")).unwrap();
        write_token(&dir, "icfg_c.token");
        assert_eq!(ids(&find_dir(&dir, None).await), ["icfg_b", "icfg_c"]);
    }

    #[tokio::test]
    async fn with_a_token_command_every_installation_asks_it() {
        let (_tmp, dir) = installations_dir();
        write_token(&dir, "icfg_a.token");
        let spec = CommandSpec {
            program: PathBuf::from("/usr/local/libexec/acme-vercel-token"),
            args: vec!["--fleet".to_owned()],
        };
        let seen = find_dir(&dir, Some(&spec)).await;
        assert_eq!(
            seen.installations,
            [Found {
                id: "icfg_a".to_owned(),
                token: TokenSource::Command(spec),
            }]
        );
    }

    #[tokio::test]
    async fn a_token_file_is_not_read_here() {
        let (_tmp, dir) = installations_dir();
        // Unreadable (group-readable, and empty): the token module's business at each push.
        let path = dir.join("icfg_a.token");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let seen = find_dir(&dir, None).await;
        assert_eq!(ids(&seen), ["icfg_a"]);
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
    }

    #[tokio::test]
    async fn names_written_on_the_way_pass_silently_other_names_are_problems() {
        let (_tmp, dir) = installations_dir();
        write_token(&dir, "icfg_a.token");
        for quiet in [
            ".icfg_b.token",
            "icfg_b.token.tmp",
            "icfg_b.tmp",
            "icfg_b.token~",
        ] {
            write_token(&dir, quiet);
        }
        for noisy in [
            "README",
            "icfg_c.tok",
            "icfg.c.token",
            ".token",
            "icfg_c.TOKEN",
        ] {
            write_token(&dir, noisy);
        }
        let seen = find_dir(&dir, None).await;
        assert_eq!(ids(&seen), ["icfg_a"]);
        let mut want: Vec<String> = ["README", "icfg_c.tok", "icfg.c.token", "icfg_c.TOKEN"]
            .iter()
            .map(|n| {
                format!(
                    "{}: not <integrationConfigurationId>.token, ignored",
                    dir.join(n).display()
                )
            })
            .collect();
        want.sort();
        // `.token` starts with a dot: passed over like any hidden name.
        assert_eq!(seen.problems, want);
    }

    #[tokio::test]
    async fn links_directories_and_fifos_are_skipped_naming_the_fix() {
        let (tmp, dir) = installations_dir();
        write_token(&dir, "icfg_a.token");
        let elsewhere = tmp.path().join("stolen");
        std::fs::write(&elsewhere, "tok_other").unwrap();
        std::os::unix::fs::symlink(&elsewhere, dir.join("icfg_link.token")).unwrap();
        std::fs::create_dir(dir.join("icfg_dir.token")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("icfg_fifo.token"),
            FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        let seen = find_dir(&dir, None).await;
        assert_eq!(ids(&seen), ["icfg_a"]);
        let problem = |id: &str| {
            seen.problems
                .iter()
                .find(|p| p.starts_with(&dir.join(format!("{id}.token")).display().to_string()))
                .unwrap_or_else(|| panic!("no problem for {id}: {:?}", seen.problems))
                .clone()
        };
        assert!(problem("icfg_link").contains("symbolic link; write the token file itself"));
        assert!(problem("icfg_dir").contains("is a directory"));
        assert!(problem("icfg_fifo").contains("not a regular file"));
        assert_eq!(seen.problems.len(), 3, "{:?}", seen.problems);
    }

    #[tokio::test]
    async fn another_users_token_file_is_skipped_naming_the_fix() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give a file to another user");
            return;
        }
        let (_tmp, dir) = installations_dir();
        write_token(&dir, "icfg_a.token");
        write_token(&dir, "icfg_b.token");
        std::os::unix::fs::chown(dir.join("icfg_b.token"), Some(65534), None).unwrap();
        let seen = find_dir(&dir, None).await;
        assert_eq!(ids(&seen), ["icfg_a"]);
        assert_eq!(seen.problems.len(), 1);
        assert!(
            seen.problems[0].contains("belongs to uid 65534")
                && seen.problems[0].contains("chown 0"),
            "{:?}",
            seen.problems
        );
    }

    #[tokio::test]
    async fn a_directory_that_cannot_be_trusted_or_read_is_an_error_not_an_empty_set() {
        let (tmp, dir) = installations_dir();
        write_token(&dir, "icfg_a.token");
        let err = |source: InstallationSource| async move {
            find_in(&source, None, Duration::from_secs(5))
                .await
                .err()
                .unwrap_or_else(|| panic!("{source:?} was read"))
        };

        let missing = err(dir_source(&tmp.path().join("missing"))).await;
        assert!(
            matches!(missing, FindError::Unreadable { .. }),
            "{missing:?}"
        );
        assert!(!missing.is_transient());

        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let linked = err(dir_source(&link)).await;
        assert!(matches!(linked, FindError::Unsafe { .. }), "{linked:?}");
        assert!(linked.to_string().contains("symbolic link"), "{linked}");
        assert!(!linked.is_transient());

        let file = tmp.path().join("file");
        std::fs::write(&file, "").unwrap();
        let not_dir = err(dir_source(&file)).await;
        assert!(not_dir.to_string().contains("not a directory"), "{not_dir}");

        for mode in [0o770, 0o702, 0o1777] {
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
            let open = err(dir_source(&dir)).await;
            let text = open.to_string();
            assert!(matches!(open, FindError::Unsafe { .. }), "{open:?}");
            assert!(text.contains("chmod go-w"), "{text}");
            assert!(!open.is_transient());
        }
        // Readable by others is fine: it is the token files that must be owner-only.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(ids(&find_dir(&dir, None).await), ["icfg_a"]);
    }

    #[tokio::test]
    async fn a_directory_of_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: needs root to give a directory to another user");
            return;
        }
        let (_tmp, dir) = installations_dir();
        std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
        match find_in(&dir_source(&dir), None, Duration::from_secs(5)).await {
            Err(e @ FindError::Unsafe { .. }) => {
                assert!(e.to_string().contains("belongs to uid 65534"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    /// A command running `body` with /bin/sh, its first argument `--fleet`. Run through the
    /// interpreter, not executed: executing a file just written can fail with ETXTBSY while
    /// another test thread forks (see tests/providers.rs).
    fn script(tmp: &Path, body: &str) -> CommandSpec {
        let path = tmp.join("installations.sh");
        std::fs::write(&path, format!("{body}\n")).unwrap();
        CommandSpec {
            program: PathBuf::from("/bin/sh"),
            args: vec![path.display().to_string(), "--fleet".to_owned()],
        }
    }

    fn token_command() -> CommandSpec {
        CommandSpec {
            program: PathBuf::from("/usr/local/libexec/acme-vercel-token"),
            args: Vec::new(),
        }
    }

    async fn ask(spec: &CommandSpec, timeout: Duration) -> Result<Seen, FindError> {
        find_in(
            &InstallationSource::Command(spec.clone()),
            Some(&token_command()),
            timeout,
        )
        .await
    }

    #[tokio::test]
    async fn the_command_s_answer_is_the_set_sorted_and_deduplicated() {
        let tmp = tempfile::tempdir().unwrap();
        let request = tmp.path().join("request.json");
        let spec = script(
            tmp.path(),
            &format!(
                r#"cat > '{}'
echo "$1" >> '{}'
echo '{{"installations": [{{"id": "icfg_b", "plan": "pro"}}, {{"id": "icfg_a"}}, {{"id": "icfg_b"}}], "generated_at": 5}}'"#,
                request.display(),
                request.display()
            ),
        );
        let seen = ask(&spec, Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            seen.installations,
            ["icfg_a", "icfg_b"].map(|id| Found {
                id: id.to_owned(),
                token: TokenSource::Command(token_command()),
            })
        );
        assert!(seen.problems.is_empty(), "{:?}", seen.problems);
        assert_eq!(
            std::fs::read_to_string(&request).unwrap(),
            "{\"action\":\"installations\"}--fleet\n"
        );
    }

    #[tokio::test]
    async fn ids_that_cannot_name_a_file_are_refused_the_others_kept() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = script(
            tmp.path(),
            r#"echo '{"installations": [{"id": "icfg_a"}, {"id": "../icfg_b"}, {"id": "icfg/c"}, {"id": ".."}, {"id": ""}]}'"#,
        );
        let seen = ask(&spec, Duration::from_secs(10)).await.unwrap();
        assert_eq!(ids(&seen), ["icfg_a"]);
        assert_eq!(seen.problems.len(), 4, "{:?}", seen.problems);
        assert!(
            seen.problems[0]
                .contains("installations[1].id \"../icfg_b\" is not an integrationConfigurationId"),
            "{:?}",
            seen.problems
        );
        assert!(
            seen.problems[0].contains("`/bin/sh`"),
            "{:?}",
            seen.problems
        );
    }

    #[tokio::test]
    async fn an_empty_answer_is_an_empty_set() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = script(tmp.path(), r#"echo '{"installations": []}'"#);
        assert_eq!(
            ask(&spec, Duration::from_secs(10)).await.unwrap(),
            Seen::default()
        );
    }

    #[tokio::test]
    async fn a_failing_command_is_an_error_naming_it_never_an_empty_set() {
        let tmp = tempfile::tempdir().unwrap();
        // (script, what the message says, transient)
        let cases = [
            (
                "echo 'not json'",
                "answered with invalid output: stdout is not a JSON object",
                false,
            ),
            (
                "echo '{\"installations\": {\"id\": \"icfg_a\"}}'",
                "stdout is not the expected JSON",
                false,
            ),
            ("echo '{}'", "stdout is not the expected JSON", false),
            (
                "echo 'database down' >&2; exit 1",
                "failed with exit status 1; stderr: database down",
                true,
            ),
            ("exit 3", "exit status 3", false),
            ("exit 78", "exit status 78", false),
        ];
        for (body, says, transient) in cases {
            let spec = script(tmp.path(), body);
            let e = ask(&spec, Duration::from_secs(10))
                .await
                .err()
                .unwrap_or_else(|| panic!("{body}: no error"));
            let text = e.to_string();
            assert!(
                text.starts_with("installations-command: `/bin/sh` (installations)"),
                "{body}: {text}"
            );
            assert!(text.contains(says), "{body}: {text}");
            assert_eq!(e.is_transient(), transient, "{body}: {text}");
        }
        let exit3 = ask(&script(tmp.path(), "exit 3"), Duration::from_secs(10))
            .await
            .err()
            .unwrap();
        assert!(
            exit3
                .to_string()
                .contains("does not implement `installations`"),
            "{exit3}"
        );

        let missing = CommandSpec {
            program: tmp.path().join("no-such-program"),
            args: Vec::new(),
        };
        let e = ask(&missing, Duration::from_secs(10)).await.err().unwrap();
        assert!(e.to_string().contains("could not start"), "{e}");
    }

    #[tokio::test]
    async fn a_command_that_hangs_is_killed_at_the_timeout() {
        let tmp = tempfile::tempdir().unwrap();
        let spec = script(tmp.path(), "exec sleep 30");
        let e = ask(&spec, Duration::from_millis(300)).await.err().unwrap();
        assert!(
            matches!(
                e,
                FindError::Command {
                    source: ChildError::Timeout { .. }
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("did not finish within 300ms"), "{e}");
        assert!(e.is_transient());
    }

    #[tokio::test]
    async fn a_command_source_without_a_token_command_is_refused() {
        let spec = token_command();
        match find_in(
            &InstallationSource::Command(spec),
            None,
            Duration::from_secs(1),
        )
        .await
        {
            Err(e @ FindError::NoTokenCommand { .. }) => {
                assert!(e.to_string().contains("set `token-command`"), "{e}");
                assert!(!e.is_transient());
            }
            other => panic!("{other:?}"),
        }
    }
}
