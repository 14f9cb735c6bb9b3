//! Providers make, check and retire credentials. One file per kind; [`build`] is the one
//! factory `match` from the checked config to a `Box<dyn Provider>`.
//!
//! A provider's `create` returns a non-secret handle (a key id, a role name) that the state
//! may keep, and named secret fields that nobody keeps: they are rendered into the push and
//! dropped. Dry run is a wrapper ([`dry_run::DryRunProvider`]), not an `if` in each kind.

pub mod command;
pub mod dry_run;
pub mod http;
pub mod mysql;
pub mod per_resource;
pub mod postgres;
mod process;
mod protocol;
pub mod random;
pub mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

pub use crate::child::Stderr;
use crate::child::stderr_suffix;
use crate::config::{ProviderConfig, SecretSource};
use crate::credentials::{self, ReadError};
use crate::error::{Classify, Persistence};
use crate::resource::ResourceInfo;
use crate::secret::{Fields, SecretString};

/// Which rotation a provider call is for. Sent to external programs as-is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub policy: String,
    /// The installation's table name in the config (`acme`).
    pub installation: String,
    pub resource: String,
    /// Vercel's id of the installation (`icfg_...`): the `installation_id` of requests.
    pub installation_id: String,
    /// What Vercel's listing says of a discovered resource (the `resource_info` of
    /// requests); `None` for one the config lists by id, of which nothing more is known.
    pub resource_info: Option<Arc<ResourceInfo>>,
}

/// A new credential: a handle that may be stored, and fields that never are.
#[derive(Debug)]
pub struct Credential {
    /// Identifies the credential to the provider later (for `retire`). Not secret.
    pub handle: String,
    pub fields: Fields,
    /// The handle of the credential this one replaces, when the caller did not know it
    /// (`previous_handle` was `None` or not one the provider recognises) but the provider
    /// does: with two alternating users (postgres, mysql), the other user of the pair, which
    /// deployments still use and which must get its grace period like any previous
    /// credential. `None` for every other kind, and whenever the caller named the previous
    /// credential itself.
    pub supersedes: Option<String>,
}

/// What happened to a call of an optional action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// The provider does not implement this action (a command exiting 3); treated as a no-op.
    Unsupported,
}

#[async_trait]
pub trait Provider: Send + Sync {
    /// The config's `kind`, for messages.
    fn kind(&self) -> &'static str;

    /// Whether the next rotation reuses the handle that is pending retirement (two users
    /// taking turns: postgres, mysql). Such a rotation must wait until that retirement is
    /// done, or it would overwrite a credential still in its grace period. Default: `false`,
    /// every rotation makes a credential of its own.
    fn alternates(&self) -> bool {
        false
    }

    /// Makes a new credential live. A repeated call with the same `rotation_id` replaces what
    /// the earlier call made, so redoing it after a crash is safe.
    async fn create(
        &self,
        target: &Target,
        rotation_id: &str,
        previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError>;

    /// Confirms the new credential works before it is pushed. Default: nothing to check.
    async fn verify(
        &self,
        _target: &Target,
        _rotation_id: &str,
        _credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        Ok(Outcome::Unsupported)
    }

    /// For `check`: confirms, without changing anything, that the provider can do its job
    /// (its admin connection works, its users exist and may be altered) and says what it
    /// checked, one line each. Default: nothing to check beyond the config.
    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        Ok(Vec::new())
    }

    /// Makes an old credential stop working, after the grace period. Default: nothing to do.
    async fn retire(&self, _target: &Target, _handle: &str) -> Result<Outcome, ProviderError> {
        Ok(Outcome::Unsupported)
    }
}

/// Why a provider call failed. Messages never hold a field value: text that came from a child
/// is scrubbed of the values it was given or returned before it gets here.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    #[error("could not start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` ({action}) did not finish within {}; it was killed", crate::duration::format(*.after))]
    Timeout {
        program: String,
        action: &'static str,
        after: Duration,
    },
    /// A configured program cannot be run: `check` finds this before a rotation does.
    #[error("{key}: {reason}")]
    ProgramUnusable {
        /// The provider key that names the program: `provider.command`, `provider.apply`.
        key: &'static str,
        /// What is wrong, naming the program as the config writes it.
        reason: String,
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
        source: std::io::Error,
    },
    #[error("the operating system's random source failed: {0}")]
    Random(String),
    /// The policy's provider table cannot serve this resource: a template names a value the
    /// resource lacks, or renders into an invalid table. Nothing was called.
    #[error("{reason}")]
    Resource { reason: String },
    /// `check` on the host could not verify a secret the provider needs: a systemd
    /// credential it cannot find or read as systemd would. Nothing was called. Only `check`
    /// meets this (elsewhere a missing credential is a `Backend` error).
    #[error("{kind} provider, {action}: {source}")]
    Unverified {
        kind: &'static str,
        action: &'static str,
        #[source]
        source: ReadError,
    },
    /// A backend the provider talks to itself (a database, the partner's API) failed or
    /// refused. `reason` never holds a value, a password or an admin URL: providers build it
    /// from error kinds and codes, or scrub it.
    #[error("{kind} provider, {action}: {reason}")]
    Backend {
        kind: &'static str,
        action: &'static str,
        reason: String,
        transient: bool,
    },
}

impl Classify for ProviderError {
    fn persistence(&self) -> Persistence {
        match self {
            // A missing or non-executable program stays that way until the config changes.
            ProviderError::Spawn { .. } => Persistence::Permanent,
            ProviderError::ProgramUnusable { .. } => Persistence::Permanent,
            ProviderError::Timeout { .. } => Persistence::Transient,
            ProviderError::Failed {
                transient: true, ..
            } => Persistence::Transient,
            ProviderError::Failed {
                transient: false, ..
            } => Persistence::Permanent,
            // A program that breaks the protocol will do it again.
            ProviderError::BadOutput { .. } => Persistence::Permanent,
            ProviderError::Io { .. } => Persistence::Transient,
            ProviderError::Random(_) => Persistence::Transient,
            // Until the config or the resource changes.
            ProviderError::Resource { .. } => Persistence::Permanent,
            ProviderError::Unverified { .. } => Persistence::Permanent,
            ProviderError::Backend {
                transient: true, ..
            } => Persistence::Transient,
            ProviderError::Backend {
                transient: false, ..
            } => Persistence::Permanent,
        }
    }
}

impl ProviderError {
    /// Whether `check` on the host could not verify a credential, rather than found a fault.
    pub fn is_unverified(&self) -> bool {
        matches!(self, ProviderError::Unverified { .. })
    }
}

/// Reads a secret the provider needs (its admin URL, its bearer token) from its file or
/// systemd credential, at each call, so a secret replaced on disk is used at once. A failure
/// is the provider's permanent `Backend` error, its reason `context` and what
/// [`credentials`] says (never the value); a credential `check` could not verify on the host
/// is [`ProviderError::Unverified`].
pub(crate) fn read_secret(
    kind: &'static str,
    action: &'static str,
    source: &SecretSource,
    context: &str,
) -> Result<SecretString, ProviderError> {
    credentials::read_secret(source).map_err(|e| {
        if e.is_unverified() {
            ProviderError::Unverified {
                kind,
                action,
                source: e,
            }
        } else {
            ProviderError::Backend {
                kind,
                action,
                reason: format!("{context}{e}"),
                transient: false,
            }
        }
    })
}

/// Runs a provider's backend `work` within its `timeout`; past it, the call fails as a
/// transient `Backend` error whose reason `late` words for that backend.
pub(crate) async fn within<T>(
    kind: &'static str,
    action: &'static str,
    timeout: Duration,
    late: impl FnOnce(String) -> String,
    work: impl std::future::Future<Output = Result<T, ProviderError>>,
) -> Result<T, ProviderError> {
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(ProviderError::Backend {
            kind,
            action,
            reason: late(crate::duration::format(timeout)),
            transient: true,
        }),
    }
}

/// Builds the provider a policy's config names.
pub fn build(config: &ProviderConfig) -> Box<dyn Provider> {
    match config {
        ProviderConfig::Random(c) => Box::new(random::RandomProvider::new(c.clone())),
        ProviderConfig::Command(c) => Box::new(command::CommandProvider::new(c.clone())),
        ProviderConfig::Http(c) => Box::new(http::HttpProvider::new(c.clone())),
        ProviderConfig::Postgres(c) => Box::new(postgres::PostgresProvider::new(c.clone())),
        ProviderConfig::Mysql(c) => Box::new(mysql::MysqlProvider::new(c.clone())),
        ProviderConfig::Redis(c) => Box::new(self::redis::RedisProvider::new(c.clone())),
    }
}
