//! Each installation's Vercel token, from its source into a `SecretString`.
//!
//! Tokens are credentials: they come from a file (refused if group or others may read it, as
//! ssh refuses a private key), an environment variable, a systemd credential
//! (`LoadCredential=`, read from `$CREDENTIALS_DIRECTORY`), or a token command; never from the
//! command line. Files and credentials are read by [`crate::credentials`], as every secret is. The first three are read at start (and by `check`, which refuses a missing
//! one); one that cannot be read fails its installation's pushes only, and is read again at
//! each attempt, so a file the partner's backend writes later is picked up. A token command ([`command`]) is run only when a push needs a
//! token, its answer cached ([`cache`]) until near its end; one that fails fails that
//! installation's pushes, never the start nor another installation. Errors name the source,
//! never the value.

pub mod cache;
pub mod command;

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use self::cache::{CachedToken, TokenCache};
use self::command::TokenCommand;
use crate::child::ChildError;
use crate::config::{Config, Installation, TokenSource};
use crate::credentials::{self, ReadError};
use crate::error::{Classify, Persistence};

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Its file or credential could not be read ([`credentials`] says why).
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("environment variable {name} is not set")]
    EnvMissing { name: String },
    #[error("environment variable {name} is not valid UTF-8")]
    EnvNotUnicode { name: String },
    #[error("the token from {source_name} is empty")]
    Empty { source_name: String },
    #[error(
        "the token from {source_name} holds whitespace or control characters, which cannot go in an HTTP header"
    )]
    BadCharacters { source_name: String },
    /// The token command failed, or its answer was not a token.
    #[error("the token command for installation {installation_id} failed: {source}")]
    Command {
        installation_id: String,
        #[source]
        source: Box<ChildError>,
    },
    /// A failure that several pushes waited for: each reports it.
    #[error(transparent)]
    Shared(Arc<TokenError>),
    /// A file, variable or credential that could not be read at start, nor when a push asked
    /// for it again: it fails its installation's pushes only, and is read again at the retry
    /// (a partner's backend may write the file later; someone may fix its mode).
    #[error("{0} (read again at the next attempt; other installations are not held up)")]
    StillUnreadable(Box<TokenError>),
    /// A token command's token is only asked for when a push needs it.
    #[error("{source_name} is run only when a push needs a token")]
    NotReadNow { source_name: String },
}

impl TokenError {
    /// Whether `check` on the host could not verify a credential, rather than found it wrong.
    pub fn is_unverified(&self) -> bool {
        matches!(self, TokenError::Read(e) if e.is_unverified())
    }
}

impl Classify for TokenError {
    fn persistence(&self) -> Persistence {
        match self {
            // The providers' rules: what the program's exit status says.
            TokenError::Command { source, .. } => source.persistence(),
            TokenError::Shared(inner) => inner.persistence(),
            TokenError::StillUnreadable(_) => Persistence::Transient,
            // A file, variable or credential stays wrong until someone fixes it.
            _ => Persistence::Permanent,
        }
    }
}

/// Describes a source for messages: `file /etc/x.token`, `environment variable X`.
pub fn describe(source: &TokenSource) -> String {
    match source {
        TokenSource::File(p) => format!("file {}", p.display()),
        TokenSource::Env(name) => format!("environment variable {name}"),
        TokenSource::Credential(name) => format!("systemd credential {name}"),
        TokenSource::Command(spec) => format!("token command {}", spec.display_name()),
    }
}

/// What `check` can say of a source it has read without an error: a token command is not
/// run (it may be costly or rate-limited), so of it nothing is known yet; a credential read
/// on the host says which line of the unit and which file.
pub fn readiness(source: &TokenSource) -> String {
    match source {
        TokenSource::Command(_) => "not run by check (asked when a push needs a token)".to_owned(),
        TokenSource::Credential(name) => match credentials::whereabouts(name) {
            Some(declared) => format!("readable (on this host: {declared})"),
            None => "readable".to_owned(),
        },
        _ => "readable".to_owned(),
    }
}

/// Reads a token that can be read now (file, environment, credential), to see that it can;
/// a token command is not run, and passes.
pub fn check_readable(source: &TokenSource) -> Result<(), TokenError> {
    match source {
        TokenSource::Command(_) => Ok(()),
        _ => read(source).map(drop),
    }
}

/// Reads one token from a file, the environment or a credential. A token command's is not
/// read here (see [`Tokens`]).
pub fn read(source: &TokenSource) -> Result<SecretString, TokenError> {
    let token = match source {
        TokenSource::Command(_) => {
            return Err(TokenError::NotReadNow {
                source_name: describe(source),
            });
        }
        TokenSource::File(path) => credentials::read_file(path)?,
        TokenSource::Env(name) => match std::env::var(name) {
            Ok(v) => SecretString::from(v),
            Err(std::env::VarError::NotPresent) => {
                return Err(TokenError::EnvMissing { name: name.clone() });
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(TokenError::EnvNotUnicode { name: name.clone() });
            }
        },
        TokenSource::Credential(name) => credentials::read_credential(name)?,
    };
    check(&token, source)?;
    Ok(token)
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

/// Every installation's token, keyed by installation name: read at start for a file, a
/// variable or a credential; asked of its command (and cached) when a push needs it.
#[derive(Default)]
pub struct Tokens {
    slots: BTreeMap<String, Slot>,
    /// Command tokens, by installation id.
    cache: TokenCache,
}

enum Slot {
    Fixed(Arc<SecretString>),
    /// Could not be read at start: read again whenever a push needs it.
    Unread(TokenSource),
    Command {
        installation_id: String,
        command: TokenCommand,
    },
}

/// A token for one push: where it came from decides whether a refusal can be answered by
/// asking for a new one.
pub struct HeldToken {
    token: Arc<SecretString>,
    /// For a command's token: the installation id and the cache's handle to drop it by.
    cached: Option<(String, CachedToken)>,
}

impl HeldToken {
    pub fn token(&self) -> &SecretString {
        &self.token
    }
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("installations", &self.slots.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Reads the token of every installation whose token can be read now; returns them and an
    /// error per failure (that installation's token is read again when a push needs it).
    /// Token commands are not run.
    pub fn read_all(config: &Config) -> (Tokens, Vec<(String, TokenError)>) {
        let mut tokens = Tokens::default();
        let mut failures = Vec::new();
        for (name, installation) in &config.installations {
            let slot = match &installation.token {
                TokenSource::Command(spec) => Slot::Command {
                    installation_id: installation.id.clone(),
                    command: TokenCommand::new(spec.clone()),
                },
                source => match read(source) {
                    Ok(token) => Slot::Fixed(Arc::new(token)),
                    Err(e) => {
                        failures.push((name.clone(), e));
                        Slot::Unread(source.clone())
                    }
                },
            };
            tokens.slots.insert(name.clone(), slot);
        }
        (tokens, failures)
    }

    /// The installation's token for a push or a listing. A configured one whose token could
    /// not be read at start is read again now (and fails only its own calls while it cannot
    /// be). A discovered one (no slot) is read from its source each time, so a token file its
    /// partner's backend rewrites is picked up at once. A token command is run only when its
    /// cached token is missing or near its end.
    pub async fn get(&self, installation: &Installation) -> Result<HeldToken, TokenError> {
        let fixed = |token| HeldToken {
            token: Arc::new(token),
            cached: None,
        };
        match self.slots.get(&installation.name) {
            Some(Slot::Fixed(token)) => Ok(HeldToken {
                token: token.clone(),
                cached: None,
            }),
            Some(Slot::Unread(source)) => read(source)
                .map(fixed)
                .map_err(|e| TokenError::StillUnreadable(Box::new(e))),
            Some(Slot::Command {
                installation_id,
                command,
            }) => self.command_token(installation_id, command).await,
            None => match &installation.token {
                TokenSource::Command(spec) => {
                    self.command_token(&installation.id, &TokenCommand::new(spec.clone()))
                        .await
                }
                source => read(source)
                    .map(fixed)
                    .map_err(|e| TokenError::StillUnreadable(Box::new(e))),
            },
        }
    }

    async fn command_token(
        &self,
        installation_id: &str,
        command: &TokenCommand,
    ) -> Result<HeldToken, TokenError> {
        self.cache
            .get(installation_id, command)
            .await
            .map(|cached| HeldToken {
                token: cached.token.clone(),
                cached: Some((installation_id.to_owned(), cached)),
            })
    }

    /// Forgets a departed installation's cached token.
    pub fn forget(&self, installation_id: &str) {
        self.cache.forget(installation_id);
    }

    /// Vercel refused `held`: a command's token is dropped, and `true` says a new one may be
    /// asked for; a fixed token stays what it is (`false`).
    pub async fn refused(&self, held: &HeldToken) -> bool {
        match &held.cached {
            Some((installation_id, cached)) => {
                self.cache.refused(installation_id, cached).await;
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

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
        tokens.slots.insert(
            "acme".into(),
            Slot::Fixed(Arc::new(SecretString::from("tok_canary_123".to_owned()))),
        );
        let out = format!("{tokens:?}");
        assert!(out.contains("acme") && !out.contains("canary"), "{out}");
    }
}
