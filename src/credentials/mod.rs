//! Reading a secret from where an operator keeps it, into a `SecretString`: a file only its
//! owner may read (`token-file`, `admin-url-file`) or a systemd credential (`token-credential`,
//! `admin-url-credential`). Every secret file and credential of the crate is read here: the
//! installations' tokens ([`crate::token`]) and the providers' admin URLs and bearer tokens.
//!
//! - A file is refused when group or others may read it (as ssh refuses a private key).
//! - A credential is read from `$CREDENTIALS_DIRECTORY` when it is set (the unit's
//!   `LoadCredential=`). systemd owns that directory, so the file's owner and mode are its
//!   business; a symbolic link, or anything but a regular file, is refused.
//! - Without `$CREDENTIALS_DIRECTORY` a credential cannot be read, except by `check` on the
//!   host: after [`read_as_the_unit_would`], [`host`] finds the file the unit's
//!   `LoadCredential=` lines name, so `check` reads what the service would. A credential it
//!   cannot find (or read) that way is [`ReadError::Unverified`], which `check` reports without
//!   failing.
//!
//! A trailing newline (editors and `echo` add one) is not part of the value. Errors name the
//! file or credential, never the value.

pub mod host;
mod unit;

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

use self::host::HostCredentials;
use crate::config::SecretSource;

/// The variable systemd sets to the directory holding the unit's credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// Refuses a secret larger than this: a token or a URL is a few dozen bytes, a bigger file is
/// the wrong file.
pub const MAX_SECRET_BYTES: u64 = 16 * 1024;

/// Why a secret could not be read. Never holds the value.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("secret file {path} is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`", path = .path.display())]
    FilePermissions { path: PathBuf, mode: u32 },
    #[error("cannot read secret file {path}: {source}", path = .path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret file {path} is larger than {MAX_SECRET_BYTES} bytes: is it the right file?", path = .path.display())]
    TooLarge { path: PathBuf },
    #[error("the secret from {source_name} is empty")]
    Empty { source_name: String },
    #[error(
        "CREDENTIALS_DIRECTORY is not set, so credential {name} cannot be read (`*-credential` keys work under systemd's LoadCredential=)"
    )]
    NoCredentialsDirectory { name: String },
    #[error(
        "systemd credential {name} is not in $CREDENTIALS_DIRECTORY ({dir}): the unit needs LoadCredential={name}:PATH, and a new LoadCredential= line takes effect at a restart (systemctl daemon-reload, then restart), not at a reload", dir = .dir.display()
    )]
    CredentialMissing { name: String, dir: PathBuf },
    #[error("systemd credential {name}: {path} is a symbolic link, not a file systemd put there: refused", path = .path.display())]
    CredentialSymlink { name: String, path: PathBuf },
    #[error("systemd credential {name}: {path} is not a regular file", path = .path.display())]
    CredentialNotFile { name: String, path: PathBuf },
    #[error("cannot read systemd credential {name} ({path}): {source}", path = .path.display())]
    CredentialRead {
        name: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// On the host (`check`): the unit declares the credential so that the service would not
    /// get it, or its file cannot be read.
    #[error("systemd credential {name}: {problem}")]
    OnHost { name: String, problem: String },
    /// On the host (`check`): the credential cannot be found or read as systemd would, for a
    /// reason that need not be a fault (not root, an encrypted credential, no such line).
    #[error("systemd credential {name} not verified on this host: {reason}")]
    Unverified { name: String, reason: String },
}

impl ReadError {
    /// Whether `check` could not verify the credential, rather than found it wrong.
    pub fn is_unverified(&self) -> bool {
        matches!(self, ReadError::Unverified { .. })
    }
}

/// Reads a provider's secret (an admin URL, a bearer token) from its file or credential,
/// refused when empty.
pub fn read_secret(source: &SecretSource) -> Result<SecretString, ReadError> {
    let value = match source {
        SecretSource::File(path) => read_file(path)?,
        SecretSource::Credential(name) => read_credential(name)?,
    };
    if value.expose_secret().is_empty() {
        return Err(ReadError::Empty {
            source_name: source.describe(),
        });
    }
    Ok(value)
}

/// Reads a file that only its owner may read.
pub fn read_file(path: &Path) -> Result<SecretString, ReadError> {
    let failed = |source| ReadError::FileRead {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(failed)?;
    read_opened(&mut file, Mode::OwnerOnly).map_err(|failure| match failure {
        Failure::Io(source) => failed(source),
        Failure::TooLarge => ReadError::TooLarge {
            path: path.to_owned(),
        },
        Failure::Mode(mode) => ReadError::FilePermissions {
            path: path.to_owned(),
            mode,
        },
    })
}

/// Reads systemd credential `name`: from `$CREDENTIALS_DIRECTORY`, or (only after
/// [`read_as_the_unit_would`]) from where the unit's `LoadCredential=` says.
pub fn read_credential(name: &str) -> Result<SecretString, ReadError> {
    match credentials_directory() {
        Some(dir) => read_in_directory(&dir, name),
        None => match ON_HOST.get() {
            Some(host) => host.read(name),
            None => Err(ReadError::NoCredentialsDirectory {
                name: name.to_owned(),
            }),
        },
    }
}

/// Where a credential is read from when `$CREDENTIALS_DIRECTORY` is not set: nowhere (the
/// daemon and `run --once` run under systemd, or fail), or, once `check` asked for it, the
/// host's unit.
static ON_HOST: OnceLock<HostCredentials> = OnceLock::new();

/// For `check` on the host: from now on a credential is read from the file the unit's
/// `LoadCredential=` lines name, as systemd would read it at start. Returns the unit as read,
/// or `None` when `$CREDENTIALS_DIRECTORY` is set (it wins: `check` runs as the service).
pub fn read_as_the_unit_would() -> Option<&'static HostCredentials> {
    if credentials_directory().is_some() {
        return None;
    }
    Some(ON_HOST.get_or_init(HostCredentials::from_system))
}

/// Where credential `name` is read from, for `check` to say: on the host, the unit's line
/// and the file; under systemd, `None` (it is `$CREDENTIALS_DIRECTORY/name`).
pub fn whereabouts(name: &str) -> Option<String> {
    if credentials_directory().is_some() {
        return None;
    }
    match ON_HOST.get()?.locate(name) {
        host::Located::File { declared, .. } => Some(declared),
        _ => None,
    }
}

fn credentials_directory() -> Option<PathBuf> {
    std::env::var_os(CREDENTIALS_DIRECTORY)
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
}

/// Reads credential `name` from `dir`, systemd's copy: a regular file, never followed through
/// a link.
fn read_in_directory(dir: &Path, name: &str) -> Result<SecretString, ReadError> {
    let path = dir.join(name);
    let read_failed = |source| ReadError::CredentialRead {
        name: name.to_owned(),
        path: path.clone(),
        source,
    };
    let meta = match std::fs::symlink_metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ReadError::CredentialMissing {
                name: name.to_owned(),
                dir: dir.to_owned(),
            });
        }
        Err(e) => return Err(read_failed(e)),
    };
    if meta.file_type().is_symlink() {
        return Err(ReadError::CredentialSymlink {
            name: name.to_owned(),
            path,
        });
    }
    if !meta.is_file() {
        return Err(ReadError::CredentialNotFile {
            name: name.to_owned(),
            path,
        });
    }
    // O_NOFOLLOW: a link put there between the look and the open is refused too.
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
        .open(&path)
        .map_err(read_failed)?;
    read_opened(&mut file, Mode::AnyOwner).map_err(|failure| match failure {
        Failure::TooLarge => ReadError::TooLarge { path: path.clone() },
        Failure::Io(e) => read_failed(e),
        // Not checked for a credential.
        Failure::Mode(_) => read_failed(std::io::Error::other("unexpected mode check")),
    })
}

/// Whether a file's mode is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Refused when group or others may read it.
    OwnerOnly,
    /// Its owner (systemd) decides.
    AnyOwner,
}

/// What went wrong reading an opened file; the caller names the file.
#[derive(Debug)]
enum Failure {
    Io(std::io::Error),
    TooLarge,
    /// Group or others may access it: the mode.
    Mode(u32),
}

/// Reads an opened secret file: checked as `mode` says, at most [`MAX_SECRET_BYTES`], UTF-8,
/// trailing line breaks trimmed.
fn read_opened(file: &mut File, mode: Mode) -> Result<SecretString, Failure> {
    let meta = file.metadata().map_err(Failure::Io)?;
    let bits = meta.permissions().mode() & 0o7777;
    if mode == Mode::OwnerOnly && bits & 0o077 != 0 {
        return Err(Failure::Mode(bits));
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(Failure::TooLarge);
    }
    let mut bytes = Vec::new();
    let read = file.take(MAX_SECRET_BYTES + 1).read_to_end(&mut bytes);
    if let Err(e) = read {
        bytes.zeroize();
        return Err(Failure::Io(e));
    }
    if bytes.len() as u64 > MAX_SECRET_BYTES {
        bytes.zeroize();
        return Err(Failure::TooLarge);
    }
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            while text.ends_with('\n') || text.ends_with('\r') {
                text.pop();
            }
            Ok(SecretString::from(text))
        }
        Err(e) => {
            e.into_bytes().zeroize();
            Err(Failure::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not valid UTF-8",
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(dir: &Path, name: &str, mode: u32, content: &[u8]) -> PathBuf {
        let path = dir.join(name);
        let mut f = File::create(&path).unwrap();
        f.write_all(content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_file_is_trimmed_and_an_open_one_refused_with_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(dir.path(), "a.url", 0o600, b"canary-a1b2\r\n");
        assert_eq!(read_file(&path).unwrap().expose_secret(), "canary-a1b2");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("mode 0644") && err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        assert!(!err.contains("canary"), "{err}");
    }

    #[test]
    fn an_empty_secret_and_a_huge_file_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let empty = file_with(dir.path(), "e", 0o600, b"\n");
        let err = read_secret(&SecretSource::File(empty.clone())).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("the secret from file {} is empty", empty.display())
        );
        let huge = file_with(dir.path(), "h", 0o600, &vec![b'x'; 20_000]);
        assert!(matches!(
            read_file(&huge).unwrap_err(),
            ReadError::TooLarge { .. }
        ));
    }

    #[test]
    fn a_credential_in_a_directory_is_read_whatever_its_mode_but_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        file_with(dir.path(), "pg-admin", 0o444, b"postgres://canary-9f\n");
        let value = read_in_directory(dir.path(), "pg-admin").unwrap();
        assert_eq!(value.expose_secret(), "postgres://canary-9f");

        let target = file_with(dir.path(), "elsewhere", 0o400, b"canary-link\n");
        std::os::unix::fs::symlink(&target, dir.path().join("linked")).unwrap();
        let err = read_in_directory(dir.path(), "linked").unwrap_err();
        assert!(matches!(err, ReadError::CredentialSymlink { .. }), "{err}");
        assert!(err.to_string().contains("linked"), "{err}");

        std::fs::create_dir(dir.path().join("adir")).unwrap();
        let err = read_in_directory(dir.path(), "adir").unwrap_err();
        assert!(matches!(err, ReadError::CredentialNotFile { .. }), "{err}");

        let err = read_in_directory(dir.path(), "absent")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("systemd credential absent is not in $CREDENTIALS_DIRECTORY")
                && err.contains("LoadCredential=absent:PATH")
                && err.contains("restart"),
            "{err}"
        );
    }

    #[test]
    fn an_unreadable_credential_is_named() {
        if rustix::process::geteuid().is_root() {
            // root reads a 000 file: nothing to see.
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        file_with(dir.path(), "locked", 0o000, b"canary\n");
        let err = read_in_directory(dir.path(), "locked")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read systemd credential locked"),
            "{err}"
        );
    }
}
