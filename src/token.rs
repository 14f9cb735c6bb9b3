//! Each installation's Vercel token, read from its source into a `SecretString`.
//!
//! Tokens are credentials: they come from a file (refused if group or others may read it, as
//! ssh refuses a private key), an environment variable, or a systemd credential
//! (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`); never from the command line. They
//! are read at start (and by `check`), so a missing one stops the run before any rotation.
//! Errors name the source, never the value.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

use crate::config::{Config, TokenSource};

/// Refuses a token file larger than this: a token is a few dozen bytes, a bigger file is the
/// wrong file.
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("secret file {path} is accessible by group or others (mode {mode:04o}); run `chmod 600 {path}`", path = .path.display())]
    FilePermissions { path: PathBuf, mode: u32 },
    #[error("cannot read secret file {path}: {source}", path = .path.display())]
    FileRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error(
        "CREDENTIALS_DIRECTORY is not set, so credential {name} cannot be read (token-credential works under systemd's LoadCredential=)"
    )]
    NoCredentialsDirectory { name: String },
    #[error("the token from {source_name} is empty")]
    Empty { source_name: String },
    #[error(
        "the token from {source_name} holds whitespace or control characters, which cannot go in an HTTP header"
    )]
    BadCharacters { source_name: String },
    #[error("secret file {path} is larger than {MAX_TOKEN_BYTES} bytes: is it the right file?", path = .path.display())]
    TooLarge { path: PathBuf },
}

/// Describes a source for messages: `file /etc/x.token`, `environment variable X`.
pub fn describe(source: &TokenSource) -> String {
    match source {
        TokenSource::File(p) => format!("file {}", p.display()),
        TokenSource::Env(name) => format!("environment variable {name}"),
        TokenSource::Credential(name) => format!("systemd credential {name}"),
    }
}

/// Reads one token.
pub fn read(source: &TokenSource) -> Result<SecretString, TokenError> {
    let raw = match source {
        TokenSource::File(path) => read_file(path, true)?,
        TokenSource::Env(name) => match std::env::var(name) {
            Ok(v) => v,
            Err(std::env::VarError::NotPresent) => {
                return Err(TokenError::EnvMissing { name: name.clone() });
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(TokenError::EnvNotUnicode { name: name.clone() });
            }
        },
        TokenSource::Credential(name) => {
            let dir = std::env::var_os("CREDENTIALS_DIRECTORY")
                .filter(|d| !d.is_empty())
                .ok_or_else(|| TokenError::NoCredentialsDirectory { name: name.clone() })?;
            // systemd makes credential files readable by the service only; their mode is
            // systemd's business, so it is not checked here.
            read_file(&Path::new(&dir).join(name), false)?
        }
    };
    let token = SecretString::from(raw);
    check(&token, source)?;
    Ok(token)
}

/// Reads a secret from a file that only its owner may read (an `admin-url-file`, an http
/// provider's `token-file`), trailing newline trimmed, refused when empty.
pub fn read_secret_file(path: &Path) -> Result<SecretString, TokenError> {
    let value = SecretString::from(read_file(path, true)?);
    if value.expose_secret().is_empty() {
        return Err(TokenError::Empty {
            source_name: format!("file {}", path.display()),
        });
    }
    Ok(value)
}

fn check(token: &SecretString, source: &TokenSource) -> Result<(), TokenError> {
    let value = token.expose_secret();
    if value.is_empty() {
        return Err(TokenError::Empty {
            source_name: describe(source),
        });
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(TokenError::BadCharacters {
            source_name: describe(source),
        });
    }
    Ok(())
}

fn read_file(path: &Path, check_mode: bool) -> Result<String, TokenError> {
    let file_err = |source| TokenError::FileRead {
        path: path.to_owned(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(file_err)?;
    let meta = file.metadata().map_err(file_err)?;
    let mode = meta.permissions().mode() & 0o7777;
    if check_mode && mode & 0o077 != 0 {
        return Err(TokenError::FilePermissions {
            path: path.to_owned(),
            mode,
        });
    }
    if meta.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut bytes = Vec::new();
    (&mut file)
        .take(MAX_TOKEN_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(file_err)?;
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            // Editors and `echo` add a trailing newline; it is not part of the token.
            while text.ends_with('\n') || text.ends_with('\r') {
                text.pop();
            }
            Ok(text)
        }
        Err(e) => {
            e.into_bytes().zeroize();
            Err(file_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "not valid UTF-8",
            )))
        }
    }
}

/// Every installation's token, keyed by installation name.
#[derive(Default)]
pub struct Tokens {
    tokens: BTreeMap<String, SecretString>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("installations", &self.tokens.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads the token of every installation; returns the ones read and an error per failure.
    pub fn read_all(config: &Config) -> (Tokens, Vec<(String, TokenError)>) {
        let mut tokens = Tokens::default();
        let mut failures = Vec::new();
        for (name, installation) in &config.installations {
            match read(&installation.token) {
                Ok(token) => {
                    tokens.tokens.insert(name.clone(), token);
                }
                Err(e) => failures.push((name.clone(), e)),
            }
        }
        (tokens, failures)
    }

    pub fn get(&self, installation: &str) -> Option<&SecretString> {
        self.tokens.get(installation)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file_with(mode: u32, content: &[u8]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.token");
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(content).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        (dir, path)
    }

    #[test]
    fn file_token_trims_trailing_newline() {
        let (_d, path) = file_with(0o600, b"tok_canary_123\r\n");
        let t = read(&TokenSource::File(path)).unwrap();
        assert_eq!(t.expose_secret(), "tok_canary_123");
    }

    #[test]
    fn group_readable_file_is_refused_with_the_fix() {
        let (_d, path) = file_with(0o640, b"tok_canary_123\n");
        let err = read(&TokenSource::File(path.clone()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("mode 0640"), "{err}");
        assert!(
            err.contains(&format!("chmod 600 {}", path.display())),
            "{err}"
        );
        assert!(!err.contains("canary"), "{err}");
    }

    #[test]
    fn empty_and_whitespace_tokens_are_refused() {
        let (_d, path) = file_with(0o600, b"\n");
        let err = read(&TokenSource::File(path)).unwrap_err();
        assert!(matches!(err, TokenError::Empty { .. }), "{err}");
        let (_d, path) = file_with(0o400, b"two words\n");
        let err = read(&TokenSource::File(path)).unwrap_err();
        assert!(matches!(err, TokenError::BadCharacters { .. }), "{err}");
    }

    #[test]
    fn missing_sources_say_which() {
        let err = read(&TokenSource::File("/nonexistent/x.token".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("cannot read secret file /nonexistent/x.token"),
            "{err}"
        );
        let err = read(&TokenSource::Env("VSR_SURELY_UNSET_VAR_42".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "environment variable VSR_SURELY_UNSET_VAR_42 is not set"
        );
    }

    #[test]
    fn debug_of_tokens_shows_no_value() {
        let mut tokens = Tokens::default();
        tokens.tokens.insert(
            "acme".into(),
            SecretString::from("tok_canary_123".to_owned()),
        );
        let out = format!("{tokens:?}");
        assert!(out.contains("acme") && !out.contains("canary"), "{out}");
    }
}
