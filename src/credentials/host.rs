//! `check` on the host: which file systemd would read for a credential, from the unit's
//! `LoadCredential=` lines, so `check && systemctl reload` checks what the service will read.
//!
//! The unit is the installed one (`/etc/systemd/system`, `/run/systemd/system`,
//! `/lib/systemd/system`, `/usr/lib/systemd/system`, the first found) with its drop-ins
//! (`vercel-secret-rotator.service.d/*.conf` and `service.d/*.conf` in each of those, sorted
//! by name, a name in an earlier directory hiding the same name in a later one), or the file
//! `$VERCEL_SECRET_ROTATOR_UNIT` names with its drop-ins in `<that path>.d/*.conf`.
//!
//! Sources as systemd.exec(5) reads them: an absolute path is a file (or a directory whose
//! files become `ID_<file>`, or a socket, which is not connected to); a relative name is looked
//! for in the service manager's own credentials (`/run/credentials/@system`), then
//! `/etc/credstore`, `/run/credstore` and `/usr/lib/credstore`. What `check` cannot read as
//! systemd would (an encrypted credential, a socket, `SetCredential=`, `ImportCredential=`, a
//! file root alone may read, no line for the name) is [`Located::Unverified`], with why.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use secrecy::SecretString;

use super::unit::{self, Declarations, Load};
use super::{Failure, Mode, ReadError, read_opened};

/// Names the unit file `check` reads instead of the installed one (its drop-ins are in
/// `<path>.d/*.conf`).
pub const UNIT_ENV: &str = "VERCEL_SECRET_ROTATOR_UNIT";

/// The service's unit name.
pub const UNIT_NAME: &str = "vercel-secret-rotator.service";

/// Where systemd looks for system units, highest precedence first.
const UNIT_DIRS: [&str; 4] = [
    "/etc/systemd/system",
    "/run/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Where a relative `LoadCredential=` source is looked for, in order: the credentials the
/// service manager itself received, then the credential stores.
const SEARCH: [&str; 4] = [
    "/run/credentials/@system",
    "/etc/credstore",
    "/run/credstore",
    "/usr/lib/credstore",
];

/// Where `LoadCredentialEncrypted=` also looks.
const SEARCH_ENCRYPTED: [&str; 3] = [
    "/run/credstore.encrypted",
    "/etc/credstore.encrypted",
    "/usr/lib/credstore.encrypted",
];

/// How deep a `LoadCredential=` directory is searched.
const MAX_DEPTH: usize = 16;

/// The unit's credential declarations, as read from its files.
#[derive(Debug, Clone)]
pub struct HostCredentials {
    /// The unit files read, in the order systemd applies them.
    files: Vec<PathBuf>,
    /// Unit files that exist but could not be read, with why.
    unreadable: Vec<String>,
    /// Where the unit was looked for, when no file was found.
    looked_in: Vec<PathBuf>,
    declarations: Declarations,
    search: Vec<PathBuf>,
    search_encrypted: Vec<PathBuf>,
}

/// Where a credential comes from on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Located {
    /// The file systemd reads, and the unit's line that says so.
    File { path: PathBuf, declared: String },
    /// `check` cannot read it as systemd would: why.
    Unverified(String),
    /// The unit declares it so that the service would not get it: why.
    Broken(String),
}

impl HostCredentials {
    /// The installed unit, or the one `$VERCEL_SECRET_ROTATOR_UNIT` names.
    pub fn from_system() -> HostCredentials {
        let (files, looked_in) = match std::env::var_os(UNIT_ENV).filter(|p| !p.is_empty()) {
            Some(path) => unit_and_drop_ins(PathBuf::from(path)),
            None => installed_unit(),
        };
        HostCredentials::from_files(
            files,
            looked_in,
            SEARCH.iter().map(PathBuf::from).collect(),
            SEARCH_ENCRYPTED.iter().map(PathBuf::from).collect(),
        )
    }

    /// Reads `files` (the unit, then its drop-ins in order); relative sources are looked for
    /// in `search` (and `search_encrypted` too for encrypted ones).
    fn from_files(
        files: Vec<PathBuf>,
        looked_in: Vec<PathBuf>,
        search: Vec<PathBuf>,
        search_encrypted: Vec<PathBuf>,
    ) -> HostCredentials {
        let mut declarations = Declarations::default();
        let mut read = Vec::new();
        let mut unreadable = Vec::new();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => {
                    for setting in unit::settings(&text, &file) {
                        declarations.apply(&setting, UNIT_NAME);
                    }
                    read.push(file);
                }
                Err(e) => unreadable.push(format!("{}: {e}", file.display())),
            }
        }
        HostCredentials {
            files: read,
            unreadable,
            looked_in,
            declarations,
            search,
            search_encrypted,
        }
    }

    /// The unit files read, for `check`'s report: `none found in ...` when there are none.
    pub fn describe(&self) -> String {
        let mut text = if self.files.is_empty() {
            format!(
                "no unit file found (looked for {}; {UNIT_ENV} names another)",
                self.looked_in
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            self.files
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        if !self.unreadable.is_empty() {
            text.push_str(&format!(" (not readable: {})", self.unreadable.join("; ")));
        }
        text
    }

    /// Where systemd would read credential `name` from.
    pub fn locate(&self, name: &str) -> Located {
        if self.files.is_empty() {
            return Located::Unverified(self.describe());
        }
        let set = self.declarations.set.iter().rev().find(|s| s.id == name);
        let fallback = set.map(|s| {
            format!(
                "; systemd then falls back to {}={name}:... ({}), which check does not read",
                if s.encrypted {
                    "SetCredentialEncrypted"
                } else {
                    "SetCredential"
                },
                s.origin
            )
        });
        if let Some(load) = self.declarations.load.iter().find(|l| l.id == name) {
            return self.locate_load(load, fallback.as_deref());
        }
        if let Some(found) = self.in_directories(name) {
            return found;
        }
        if let Some(s) = set {
            return Located::Unverified(if s.encrypted {
                format!(
                    "set by SetCredentialEncrypted={name}:... ({}), which check does not decrypt",
                    s.origin
                )
            } else {
                format!(
                    "set by SetCredential={name}:... ({}), a value in the unit itself, readable \
                     by every user over D-Bus: use LoadCredential= for a secret",
                    s.origin
                )
            });
        }
        let imports: Vec<&unit::Import> = self
            .declarations
            .import
            .iter()
            .filter(|i| unit::glob_matches(&i.glob, name))
            .collect();
        if let Some(import) = imports.last() {
            return Located::Unverified(format!(
                "it may come from ImportCredential={} ({}), which check does not resolve",
                import.glob, import.origin
            ));
        }
        Located::Unverified(format!(
            "no LoadCredential={name}:PATH in {}",
            self.describe()
        ))
    }

    /// Reads credential `name` as systemd would: the file [`locate`](Self::locate) finds,
    /// whatever its owner and mode, through links as systemd follows them.
    pub fn read(&self, name: &str) -> Result<SecretString, ReadError> {
        let unverified = |reason| ReadError::Unverified {
            name: name.to_owned(),
            reason,
        };
        let (path, declared) = match self.locate(name) {
            Located::File { path, declared } => (path, declared),
            Located::Unverified(reason) => return Err(unverified(reason)),
            Located::Broken(problem) => {
                return Err(ReadError::OnHost {
                    name: name.to_owned(),
                    problem,
                });
            }
        };
        let failed = |e: std::io::Error| {
            if e.kind() == ErrorKind::PermissionDenied {
                unverified(format!(
                    "{declared}: cannot read {} as this user ({e}); systemd reads it as root: \
                     run check as root to verify it",
                    path.display()
                ))
            } else {
                ReadError::OnHost {
                    name: name.to_owned(),
                    problem: format!("{declared}: cannot read {}: {e}", path.display()),
                }
            }
        };
        let mut file = std::fs::File::open(&path).map_err(failed)?;
        read_opened(&mut file, Mode::AnyOwner).map_err(|failure| match failure {
            Failure::Io(e) => failed(e),
            Failure::TooLarge => ReadError::TooLarge { path: path.clone() },
            Failure::Mode(_) => failed(std::io::Error::other("unexpected mode check")),
        })
    }

    fn locate_load(&self, load: &Load, fallback: Option<&str>) -> Located {
        let declared = &load.declared;
        let fallback = fallback.unwrap_or("");
        let path = match &load.path {
            Ok(path) => path.trim(),
            Err(why) => return Located::Unverified(format!("{declared} {why}")),
        };
        if load.encrypted {
            let found = if Path::new(path).is_absolute() {
                Path::new(path).exists().then(|| PathBuf::from(path))
            } else {
                self.search_encrypted
                    .iter()
                    .chain(&self.search)
                    .map(|dir| dir.join(path))
                    .find(|p| p.exists())
            };
            return Located::Unverified(match found {
                Some(p) => format!(
                    "{declared}: an encrypted credential ({}), which check does not decrypt",
                    p.display()
                ),
                None => format!(
                    "{declared}: an encrypted credential, which check does not decrypt, and \
                     {path} was not found{fallback}"
                ),
            });
        }
        if Path::new(path).is_absolute() {
            return match std::fs::metadata(path) {
                Ok(meta) if meta.is_file() => Located::File {
                    path: PathBuf::from(path),
                    declared: declared.clone(),
                },
                Ok(meta) if meta.is_dir() => Located::Broken(format!(
                    "{declared}: {path} is a directory, whose files become credentials named \
                     {}_<file>, not {}",
                    load.id, load.id
                )),
                Ok(meta) if is_socket(&meta) => Located::Unverified(format!(
                    "{declared}: {path} is a socket, which systemd reads once at start; check \
                     does not connect to it"
                )),
                Ok(_) => Located::Broken(format!("{declared}: {path} is not a regular file")),
                Err(e) if e.kind() == ErrorKind::NotFound && !fallback.is_empty() => {
                    Located::Unverified(format!("{declared}: {path} does not exist{fallback}"))
                }
                Err(e) if e.kind() == ErrorKind::NotFound => Located::Broken(format!(
                    "{declared}: {path} does not exist, so systemd would not start the service"
                )),
                Err(e) => Located::Unverified(format!(
                    "{declared}: cannot look at {path} as this user ({e}); systemd reads it as \
                     root: run check as root to verify it"
                )),
            };
        }
        if path.is_empty() || path.contains('/') || path == "." || path == ".." {
            return Located::Unverified(format!(
                "{declared}: \"{path}\" is neither an absolute path nor a credential name, so \
                 systemd ignores the line"
            ));
        }
        let mut blocked = Vec::new();
        for dir in &self.search {
            let candidate = dir.join(path);
            match std::fs::metadata(&candidate) {
                Ok(meta) if meta.is_file() => {
                    return Located::File {
                        declared: format!("{declared}, found in {}", dir.display()),
                        path: candidate,
                    };
                }
                Ok(_) => {
                    return Located::Broken(format!(
                        "{declared}: {} is not a regular file",
                        candidate.display()
                    ));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => blocked.push(format!("{} ({e})", dir.display())),
            }
        }
        let searched = self
            .search
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let mut reason = format!(
            "{declared}: {path} is in none of {searched}, so systemd starts the service without it"
        );
        if !blocked.is_empty() {
            reason.push_str(&format!(
                " (could not look in {}: run check as root to verify it)",
                blocked.join(", ")
            ));
        }
        reason.push_str(fallback);
        Located::Unverified(reason)
    }

    /// `ID_<file>` from a `LoadCredential=ID:/directory` line.
    fn in_directories(&self, name: &str) -> Option<Located> {
        for load in self.declarations.load.iter().rev() {
            let Some(file_name) = name
                .strip_prefix(load.id.as_str())
                .and_then(|rest| rest.strip_prefix('_'))
            else {
                continue;
            };
            let Ok(path) = &load.path else { continue };
            let dir = Path::new(path.trim());
            if !dir.is_absolute() || !dir.is_dir() {
                continue;
            }
            if load.encrypted {
                return Some(Located::Unverified(format!(
                    "{}: an encrypted credential directory, which check does not decrypt",
                    load.declared
                )));
            }
            if let Some(found) = find_file(dir, file_name, 0) {
                return Some(Located::File {
                    declared: format!("{}, file {}", load.declared, found.display()),
                    path: found,
                });
            }
        }
        None
    }
}

fn is_socket(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    meta.file_type().is_socket()
}

/// A regular file named `name` in `dir` or below, links ignored (as systemd ignores them).
fn find_file(dir: &Path, name: &str, depth: usize) -> Option<PathBuf> {
    if depth > MAX_DEPTH {
        return None;
    }
    let mut entries: Vec<_> = std::fs::read_dir(dir).ok()?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in &entries {
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_file() && entry.file_name() == name {
            return Some(entry.path());
        }
    }
    entries
        .iter()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .find_map(|e| find_file(&e.path(), name, depth + 1))
}

/// The unit file at `path` and its drop-ins, `<path>.d/*.conf` sorted by name.
fn unit_and_drop_ins(path: PathBuf) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let looked_in = vec![path.clone()];
    if !path.exists() {
        return (Vec::new(), looked_in);
    }
    let mut drop_in_dir = path.clone().into_os_string();
    drop_in_dir.push(".d");
    let mut files = vec![path];
    files.extend(drop_ins(&[PathBuf::from(drop_in_dir)]));
    (files, looked_in)
}

/// The installed unit: the first of [`UNIT_DIRS`] that has it, then every drop-in.
fn installed_unit() -> (Vec<PathBuf>, Vec<PathBuf>) {
    let candidates: Vec<PathBuf> = UNIT_DIRS
        .iter()
        .map(|d| Path::new(d).join(UNIT_NAME))
        .collect();
    let Some(main) = candidates.iter().find(|p| p.exists()).cloned() else {
        return (Vec::new(), candidates);
    };
    let dirs: Vec<PathBuf> = UNIT_DIRS
        .iter()
        .flat_map(|d| {
            [
                Path::new(d).join(format!("{UNIT_NAME}.d")),
                Path::new(d).join("service.d"),
            ]
        })
        .collect();
    let mut files = vec![main];
    files.extend(drop_ins(&dirs));
    (files, candidates)
}

/// The `*.conf` files of `dirs` sorted by file name; a name in an earlier directory hides
/// the same name in a later one.
fn drop_ins(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let mut by_name: std::collections::BTreeMap<std::ffi::OsString, PathBuf> =
        std::collections::BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            if Path::new(&name).extension().is_some_and(|e| e == "conf") {
                by_name.entry(name).or_insert_with(|| entry.path());
            }
        }
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::os::unix::fs::PermissionsExt;

    struct Host {
        dir: tempfile::TempDir,
    }

    impl Host {
        fn new() -> Host {
            let host = Host {
                dir: tempfile::tempdir().unwrap(),
            };
            for d in ["units", "units/x.service.d", "system", "credstore", "enc"] {
                std::fs::create_dir_all(host.path(d)).unwrap();
            }
            host
        }

        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }

        fn write(&self, rel: &str, text: &str) -> PathBuf {
            let path = self.path(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        }

        fn unit(&self, text: &str) -> HostCredentials {
            let unit = self.write("units/x.service", text);
            let (files, looked_in) = unit_and_drop_ins(unit);
            HostCredentials::from_files(
                files,
                looked_in,
                vec![self.path("system"), self.path("credstore")],
                vec![self.path("enc")],
            )
        }
    }

    fn unverified(located: Located) -> String {
        match located {
            Located::Unverified(why) => why,
            other => panic!("not unverified: {other:?}"),
        }
    }

    #[test]
    fn an_absolute_source_is_read_whatever_its_mode() {
        let host = Host::new();
        let secret = host.write("etc/pg.url", "postgres://canary-abs\n");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let unit = host.unit(&format!(
            "[Service]\nLoadCredential=pg-admin:{}\n",
            secret.display()
        ));
        match unit.locate("pg-admin") {
            Located::File { path, declared } => {
                assert_eq!(path, secret);
                assert!(
                    declared.starts_with("LoadCredential=pg-admin:"),
                    "{declared}"
                );
                assert!(declared.ends_with("x.service:2)"), "{declared}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            unit.read("pg-admin").unwrap().expose_secret(),
            "postgres://canary-abs"
        );
    }

    #[test]
    fn a_relative_source_is_searched_in_order_and_the_name_alone_too() {
        let host = Host::new();
        host.write("credstore/acme.token", "tok-store\n");
        host.write("system/acme.token", "tok-system\n");
        host.write("credstore/other", "tok-other\n");
        let unit = host.unit("[Service]\nLoadCredential=acme.token\nLoadCredential=b:other\n");
        assert_eq!(
            unit.read("acme.token").unwrap().expose_secret(),
            "tok-system"
        );
        match unit.locate("b") {
            Located::File { path, declared } => {
                assert_eq!(path, host.path("credstore/other"));
                assert!(declared.contains("found in"), "{declared}");
            }
            other => panic!("{other:?}"),
        }
        let why = unverified(unit.locate("nowhere-declared"));
        assert!(
            why.starts_with("no LoadCredential=nowhere-declared:PATH in "),
            "{why}"
        );
    }

    #[test]
    fn a_relative_source_found_nowhere_is_unverified_and_says_where_it_looked() {
        let host = Host::new();
        let unit = host.unit("[Service]\nLoadCredential=pg:pg-admin\n");
        let why = unverified(unit.locate("pg"));
        assert!(why.contains("pg-admin is in none of"), "{why}");
        assert!(
            why.contains(&host.path("credstore").display().to_string()),
            "{why}"
        );
    }

    #[test]
    fn a_missing_absolute_source_is_broken_unless_set_credential_backs_it() {
        let host = Host::new();
        let unit = host.unit("[Service]\nLoadCredential=a:/nonexistent/a\n");
        match unit.locate("a") {
            Located::Broken(why) => assert!(why.contains("does not exist"), "{why}"),
            other => panic!("{other:?}"),
        }
        let err = unit.read("a").unwrap_err();
        assert!(!err.is_unverified(), "{err}");

        let unit =
            host.unit("[Service]\nLoadCredential=a:/nonexistent/a\nSetCredential=a:canary-set\n");
        let why = unverified(unit.locate("a"));
        assert!(why.contains("falls back to SetCredential=a"), "{why}");
        assert!(!why.contains("canary"), "{why}");
    }

    #[test]
    fn encrypted_set_and_imported_credentials_are_reported_not_read() {
        let host = Host::new();
        host.write("enc/sealed", "k6-encrypted-blob");
        let unit = host.unit(
            "[Service]\nLoadCredentialEncrypted=sealed\nSetCredential=plain:canary-in-unit\n\
             SetCredentialEncrypted=sealed2:blob\nImportCredential=acme.*\n",
        );
        let why = unverified(unit.locate("sealed"));
        assert!(
            why.contains("does not decrypt") && why.contains("enc/sealed"),
            "{why}"
        );
        let why = unverified(unit.locate("plain"));
        assert!(
            why.contains("SetCredential=plain") && !why.contains("canary"),
            "{why}"
        );
        let why = unverified(unit.locate("sealed2"));
        assert!(why.contains("SetCredentialEncrypted=sealed2"), "{why}");
        let why = unverified(unit.locate("acme.token"));
        assert!(why.contains("ImportCredential=acme.*"), "{why}");
    }

    #[test]
    fn a_directory_source_gives_id_underscore_file_credentials() {
        let host = Host::new();
        host.write("etc/creds/sub/pg", "postgres://canary-dir\n");
        let unit = host.unit(&format!(
            "[Service]\nLoadCredential=db:{}\n",
            host.path("etc/creds").display()
        ));
        assert_eq!(
            unit.read("db_pg").unwrap().expose_secret(),
            "postgres://canary-dir"
        );
        match unit.locate("db") {
            Located::Broken(why) => assert!(why.contains("db_<file>"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_drop_in_overrides_and_no_unit_is_said() {
        let host = Host::new();
        let first = host.write("etc/first", "one\n");
        let second = host.write("etc/second", "two\n");
        host.write(
            "units/x.service.d/50-creds.conf",
            &format!("[Service]\nLoadCredential=t:{}\n", second.display()),
        );
        let unit = host.unit(&format!(
            "[Service]\nLoadCredential=t:{}\n",
            first.display()
        ));
        assert_eq!(unit.read("t").unwrap().expose_secret(), "two");
        assert!(
            unit.describe().contains("50-creds.conf"),
            "{}",
            unit.describe()
        );

        let none = HostCredentials::from_files(
            Vec::new(),
            vec![PathBuf::from("/nonexistent/x.service")],
            Vec::new(),
            Vec::new(),
        );
        let why = unverified(none.locate("t"));
        assert!(
            why.starts_with("no unit file found (looked for /nonexistent/x.service;"),
            "{why}"
        );
    }
}
