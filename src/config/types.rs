//! The checked config: what running code sees. Every value here has been validated; nothing
//! in this file parses or checks anything.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::scope::{InstallationScope, ResourceScope};
use crate::resource::ResourceInfo;
use crate::schedule::Schedule;
use crate::template::{Template, UnboundVariable};

/// The whole config after validation.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it was read from, for messages.
    pub path: PathBuf,
    pub vercel: VercelSettings,
    pub state: StateSettings,
    /// Keyed by the table name under `[installations]` (`acme` in `[installations.acme]`).
    pub installations: BTreeMap<String, Installation>,
    /// In file order.
    pub policies: Vec<Policy>,
    /// `[discovery]`: installations found at run time; `None` when the config has none.
    pub discovery: Option<Discovery>,
}

impl Config {
    /// Whether any secret comes from a systemd credential: a token, or a provider's admin URL
    /// or bearer token.
    pub fn uses_credentials(&self) -> bool {
        self.installations
            .values()
            .any(|i| matches!(i.token, TokenSource::Credential(_)))
            || self.policies.iter().any(|p| p.provider.uses_credential())
    }
}

/// `[discovery]`: where installations beyond the configured tables come from, how their
/// tokens are had, and how often they and their resources are looked at again.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub source: InstallationSource,
    /// The token source of every discovered installation when set; otherwise (only with
    /// [`InstallationSource::Dir`]) each installation's `<id>.token` file.
    pub token_command: Option<CommandSpec>,
    /// How often the installations are read again and each one's resources listed.
    pub every: Duration,
    /// Its table as written, in canonical form: what a discovered installation's part of
    /// [`Policy::digest`] hashes.
    pub(super) written: String,
}

/// Where discovered installations come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstallationSource {
    /// `installations-dir`: one owner-only `<integrationConfigurationId>.token` file each.
    Dir(PathBuf),
    /// `installations-command`: prints `{"installations": [{"id": "icfg_..."}, ...]}`.
    Command(CommandSpec),
}

#[derive(Debug, Clone)]
pub struct VercelSettings {
    pub api_url: Url,
    pub request_timeout: Duration,
    /// How long one call to Vercel, retries included, may take from its first attempt; always
    /// longer than `request_timeout`.
    pub retry_deadline: Duration,
    /// Upper bound on requests in flight to Vercel (kept by the client, per attempt).
    pub max_concurrent_requests: usize,
}

impl VercelSettings {
    /// How many rotations may be under way at once: twice the requests, so one rotation's
    /// provider call and state commits overlap another's request instead of leaving its
    /// request slot idle, while the provider's backend still sees a bounded number of
    /// credentials being made at once.
    pub fn max_rotations_in_flight(&self) -> usize {
        self.max_concurrent_requests.saturating_mul(2)
    }
}

#[derive(Debug, Clone)]
pub struct StateSettings {
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct Installation {
    /// The table name in the config (`acme`).
    pub name: String,
    /// Vercel's `integrationConfigurationId` (`icfg_...`).
    pub id: String,
    pub token: TokenSource,
    /// Its table as written, in canonical form: half of what [`Policy::digest`] hashes.
    pub(super) written: String,
}

/// Where an installation's bearer token comes from. Never the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A file that must not be readable by group or others.
    File(PathBuf),
    /// An environment variable of this process.
    Env(String),
    /// A systemd `LoadCredential=` name, read from `$CREDENTIALS_DIRECTORY`.
    Credential(String),
    /// A program asked for a (short-lived) token each time the cached one runs out, with
    /// DESIGN's `{"action": "token", ...}` protocol. Never run at load or by `check`.
    Command(CommandSpec),
}

#[derive(Debug, Clone)]
pub struct Policy {
    pub name: String,
    /// Which installations it serves: one configured table, or several (discovered ones
    /// too).
    pub installations: InstallationScope,
    /// Which of their resources; each is rotated on its own.
    pub resources: ResourceScope,
    pub schedule: Schedule,
    /// Random delay in `[0, jitter)` added per resource to each due time.
    pub jitter: Duration,
    /// How long the old credential stays valid after a successful push.
    pub grace: Duration,
    pub provider: ProviderSpec,
    /// At most this many provider calls at once against one target (the rendered
    /// `admin-url-file`, command line or URL: [`ProviderConfig::target_key`]), over every
    /// job with the same cap; `None`: no cap.
    pub max_concurrent_per_target: Option<usize>,
    /// What is pushed. Non-empty, names unique within the policy.
    pub secrets: Vec<SecretSpec>,
    /// Also show a redeploy banner on the resource in the Vercel dashboard.
    pub notify_dashboard: bool,
    /// Its table as written, in canonical form: what [`Policy::digest`] hashes.
    pub(super) written: String,
}

impl Policy {
    /// The resources it names by id in one configured installation, rotated without any
    /// listing: `installation = "acme"` with `resources = [...]`. `None` for a policy whose
    /// resources come from Vercel's listings.
    pub fn configured(&self) -> Option<(&str, &[String])> {
        match (&self.installations, &self.resources) {
            (InstallationScope::One(name), ResourceScope::Listed(ids)) => Some((name, ids)),
            _ => None,
        }
    }

    /// Whether its resources come from the listings of the installations it covers.
    pub fn is_discovered(&self) -> bool {
        self.configured().is_none()
    }

    /// Whether every template of the policy (its secrets and its provider table) has a value
    /// for `resource`. A resource that fails this is not rotated, and nothing else is held up.
    pub fn check_resource(&self, resource: &ResourceInfo) -> Result<(), ResourceTemplateError> {
        for secret in &self.secrets {
            for template in secret.templates() {
                template.check_resource(resource).map_err(|source| {
                    ResourceTemplateError::Secret {
                        secret: secret.env_name(),
                        source,
                    }
                })?;
            }
        }
        Ok(())
    }
}

/// A policy's provider table: the same for every resource, or with strings templated per
/// resource (`admin-url-file = "/etc/acme/admin/{resource.id}.url"`).
#[derive(Debug, Clone)]
pub enum ProviderSpec {
    Shared(ProviderConfig),
    PerResource(ProviderTemplate),
}

/// A provider table whose strings use resource variables. Its templates and every setting
/// that is not such a string were checked at load; the rendered strings are checked per
/// resource by [`ProviderSpec::for_resource`].
#[derive(Debug, Clone)]
pub struct ProviderTemplate {
    /// The table as written.
    pub(super) raw: super::raw::RawProvider,
    /// The policy's key in messages (`policies[0] "orders-db"`).
    pub(super) key: String,
    pub(super) fields: Option<Vec<String>>,
}

impl ProviderSpec {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderSpec::Shared(c) => c.kind(),
            ProviderSpec::PerResource(t) => t.raw.kind(),
        }
    }

    /// See [`ProviderConfig::fields`].
    pub fn fields(&self) -> Option<Vec<String>> {
        match self {
            ProviderSpec::Shared(c) => c.fields(),
            ProviderSpec::PerResource(t) => t.fields.clone(),
        }
    }

    /// Whether a secret of the provider comes from a systemd credential.
    pub fn uses_credential(&self) -> bool {
        match self {
            ProviderSpec::Shared(c) => c
                .secret_sources()
                .iter()
                .any(|(_, s)| matches!(s, SecretSource::Credential(_))),
            ProviderSpec::PerResource(t) => t.raw.uses_credential(),
        }
    }

    /// Whether each resource gets a provider of its own.
    pub fn is_per_resource(&self) -> bool {
        matches!(self, ProviderSpec::PerResource(_))
    }

    /// The provider config for `resource`: the shared one, or the table rendered for it and
    /// checked as the config checks a table at load. An error concerns this resource only.
    pub fn for_resource(
        &self,
        resource: &ResourceInfo,
    ) -> Result<std::borrow::Cow<'_, ProviderConfig>, ResourceTemplateError> {
        match self {
            ProviderSpec::Shared(c) => Ok(std::borrow::Cow::Borrowed(c)),
            ProviderSpec::PerResource(t) => {
                super::provider::render(t, resource).map(std::borrow::Cow::Owned)
            }
        }
    }
}

/// A templated provider table cannot serve one resource. Permanent for that resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResourceTemplateError {
    #[error("secret {secret}: {source}")]
    Secret {
        secret: String,
        #[source]
        source: UnboundVariable,
    },
    #[error("provider table: {0}")]
    Unbound(#[from] UnboundVariable),
    #[error(
        "provider table rendered for resource \"{resource}\" (installation {installation}) is invalid: {problems}"
    )]
    Invalid {
        resource: String,
        installation: String,
        /// Each problem with its key, `; `-separated.
        problems: String,
    },
}

/// One secret of a policy: a name and templates over the provider's fields.
#[derive(Debug, Clone)]
pub struct SecretSpec {
    pub name: String,
    pub prefix: Option<String>,
    pub value: Template,
    pub environment_overrides: EnvironmentOverrides<Template>,
}

impl SecretSpec {
    /// The variable name as Vercel will create it in connected projects.
    pub fn env_name(&self) -> String {
        match &self.prefix {
            Some(p) => format!("{p}_{}", self.name),
            None => self.name.clone(),
        }
    }

    /// Every template of this secret: the value, then each override present.
    pub fn templates(&self) -> impl Iterator<Item = &Template> {
        std::iter::once(&self.value).chain(self.environment_overrides.iter().map(|(_, t)| t))
    }
}

/// Per-environment values; an absent one is omitted from the request (never `null`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvironmentOverrides<T> {
    pub production: Option<T>,
    pub preview: Option<T>,
    pub development: Option<T>,
}

impl<T> Default for EnvironmentOverrides<T> {
    fn default() -> Self {
        EnvironmentOverrides {
            production: None,
            preview: None,
            development: None,
        }
    }
}

impl<T> EnvironmentOverrides<T> {
    pub fn is_empty(&self) -> bool {
        self.production.is_none() && self.preview.is_none() && self.development.is_none()
    }

    /// The overrides present, with Vercel's name for each environment.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &T)> {
        [
            ("production", self.production.as_ref()),
            ("preview", self.preview.as_ref()),
            ("development", self.development.as_ref()),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
    }

    /// Applies `f` to each override present, stopping at the first error.
    pub fn try_map<U, E>(
        &self,
        mut f: impl FnMut(&T) -> Result<U, E>,
    ) -> Result<EnvironmentOverrides<U>, E> {
        Ok(EnvironmentOverrides {
            production: self.production.as_ref().map(&mut f).transpose()?,
            preview: self.preview.as_ref().map(&mut f).transpose()?,
            development: self.development.as_ref().map(&mut f).transpose()?,
        })
    }
}

/// A program and its arguments, run directly (no shell).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: PathBuf,
    pub args: Vec<String>,
}

impl CommandSpec {
    /// The program as it was written in the config, for messages.
    pub fn display_name(&self) -> String {
        self.program.display().to_string()
    }
}

/// Which provider makes a policy's credentials, with its settings.
#[derive(Debug, Clone)]
pub enum ProviderConfig {
    Random(RandomConfig),
    Command(CommandConfig),
    Http(HttpConfig),
    Postgres(DatabaseConfig),
    Mysql(DatabaseConfig),
    Redis(RedisConfig),
}

impl ProviderConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::Random(_) => "random",
            ProviderConfig::Command(_) => "command",
            ProviderConfig::Http(_) => "http",
            ProviderConfig::Postgres(_) => "postgres",
            ProviderConfig::Mysql(_) => "mysql",
            ProviderConfig::Redis(_) => "redis",
        }
    }

    /// What [`Policy::max_concurrent_per_target`] caps calls against: the admin connection's
    /// file or credential (`postgres`, `mysql`, `redis`), the command line (`command`), the
    /// URL (`http`). Resources on one server share one rendered `admin-url-file`.
    pub fn target_key(&self) -> Option<String> {
        match self {
            ProviderConfig::Random(_) => None,
            ProviderConfig::Command(c) => Some(format!(
                "command {:?} {:?}",
                c.command.program, c.command.args
            )),
            ProviderConfig::Http(c) => Some(format!("url {}", c.url)),
            ProviderConfig::Postgres(DatabaseConfig { admin_url, .. })
            | ProviderConfig::Mysql(DatabaseConfig { admin_url, .. })
            | ProviderConfig::Redis(RedisConfig { admin_url, .. }) => {
                Some(format!("admin URL from {}", admin_url.describe()))
            }
        }
    }

    /// The secrets the provider reads, each with what it is (`admin URL`, `bearer token`).
    pub fn secret_sources(&self) -> Vec<(&'static str, &SecretSource)> {
        match self {
            ProviderConfig::Random(_) | ProviderConfig::Command(_) => Vec::new(),
            ProviderConfig::Http(c) => c.token.iter().map(|s| ("bearer token", s)).collect(),
            ProviderConfig::Postgres(DatabaseConfig { admin_url, .. })
            | ProviderConfig::Mysql(DatabaseConfig { admin_url, .. })
            | ProviderConfig::Redis(RedisConfig { admin_url, .. }) => {
                vec![("admin URL", admin_url)]
            }
        }
    }

    /// The field names this provider is known to yield, or `None` when only the provider's
    /// answer at run time can tell (a `command` without a `fields` list).
    pub fn fields(&self) -> Option<Vec<String>> {
        match self {
            ProviderConfig::Random(_) => Some(vec!["password".to_owned()]),
            ProviderConfig::Command(c) => c.fields.clone(),
            ProviderConfig::Http(c) => c.fields.clone(),
            ProviderConfig::Postgres(_) | ProviderConfig::Mysql(_) => {
                Some(DATABASE_FIELDS.iter().map(|f| (*f).to_owned()).collect())
            }
            ProviderConfig::Redis(_) => {
                Some(REDIS_FIELDS.iter().map(|f| (*f).to_owned()).collect())
            }
        }
    }
}

#[derive(Debug, Clone)]
pub struct RandomConfig {
    pub length: usize,
    pub charset: Charset,
    /// Run with the new value on stdin before the push; exit 0 means the backend accepts it.
    pub apply: Option<CommandSpec>,
    /// How long `apply` may take before it is killed.
    pub apply_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Charset {
    Alphanumeric,
    Hex,
    Base64Url,
    AsciiPrintable,
}

impl Charset {
    pub const NAMES: [&'static str; 4] = ["alphanumeric", "hex", "base64url", "ascii-printable"];

    pub fn from_name(name: &str) -> Option<Charset> {
        match name {
            "alphanumeric" => Some(Charset::Alphanumeric),
            "hex" => Some(Charset::Hex),
            "base64url" => Some(Charset::Base64Url),
            "ascii-printable" => Some(Charset::AsciiPrintable),
            _ => None,
        }
    }

    /// The characters a value is drawn from, each equally likely.
    pub fn alphabet(self) -> &'static [u8] {
        match self {
            Charset::Alphanumeric => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
            }
            Charset::Hex => b"0123456789abcdef",
            Charset::Base64Url => {
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
            }
            // Printable ASCII without space: '!' (0x21) to '~' (0x7e), 94 characters.
            Charset::AsciiPrintable => {
                b"!\"#$%&'()*+,-./0123456789:;<=>?@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~"
            }
        }
    }

    /// Entropy of one character, in bits.
    pub fn bits_per_char(self) -> f64 {
        (self.alphabet().len() as f64).log2()
    }
}

#[derive(Debug, Clone)]
pub struct CommandConfig {
    pub command: CommandSpec,
    /// How long one call may take before the child is killed.
    pub timeout: Duration,
    /// Field names the program promises to return; lets `check` validate templates.
    pub fields: Option<Vec<String>>,
}

/// The fields the `postgres` and `mysql` providers yield.
pub const DATABASE_FIELDS: [&str; 5] = ["username", "password", "host", "port", "database"];
/// The fields the `redis` provider yields.
pub const REDIS_FIELDS: [&str; 4] = ["username", "password", "host", "port"];

/// Where a provider keeps a secret it needs (an admin URL, a bearer token): exactly one of
/// its `*-file` and `*-credential` keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SecretSource {
    /// A file only its owner may read (`admin-url-file`, `token-file`).
    File(PathBuf),
    /// A systemd credential name (`admin-url-credential`, `token-credential`): a file in
    /// `$CREDENTIALS_DIRECTORY`, put there by the unit's `LoadCredential=`.
    Credential(String),
}

impl SecretSource {
    /// The source for messages: `file /etc/x.url`, `systemd credential pg-admin`.
    pub fn describe(&self) -> String {
        match self {
            SecretSource::File(p) => format!("file {}", p.display()),
            SecretSource::Credential(name) => format!("systemd credential {name}"),
        }
    }

    /// The config key that set it, given the key's stem (`admin-url`, `token`).
    pub fn key(&self, stem: &str) -> String {
        match self {
            SecretSource::File(_) => format!("{stem}-file"),
            SecretSource::Credential(_) => format!("{stem}-credential"),
        }
    }
}

/// `http`: the partner's own API makes the credential (the command protocol over HTTPS).
#[derive(Debug, Clone)]
pub struct HttpConfig {
    pub url: Url,
    /// Bearer token for `url`, from a 0600 file or a systemd credential; none: no
    /// Authorization header.
    pub token: Option<SecretSource>,
    pub timeout: Duration,
    /// Field names the API promises to return; lets `check` validate templates.
    pub fields: Option<Vec<String>>,
}

/// `postgres` and `mysql`: two login users that alternate, so the one Vercel holds keeps
/// working while the other gets the new password.
#[derive(Debug, Clone)]
pub struct DatabaseConfig {
    /// Where the admin connection URL is kept (it holds a password): a 0600 file or a
    /// systemd credential.
    pub admin_url: SecretSource,
    /// Exactly two, different.
    pub users: [String; 2],
    /// What the pushed `host`, `port` and `database` fields say; default: the admin URL's.
    pub host: Option<String>,
    pub port: Option<u16>,
    pub database: Option<String>,
    /// For each database call.
    pub timeout: Duration,
}

impl DatabaseConfig {
    /// The user `create` sets next: the one that is not `previous`. On the first rotation,
    /// or when `previous` is no user of this config (the users were changed), the first.
    pub fn next_user(&self, previous: Option<&str>) -> &str {
        let [a, b] = &self.users;
        if previous == Some(a.as_str()) { b } else { a }
    }

    /// The user that a rotation setting [`next_user`](Self::next_user)`(previous)` replaces
    /// without the caller knowing it: when `previous` is `None` or no user of this config,
    /// the other user of the pair, which deployments may still use (the first rotation sets
    /// one user; the other was the live one). `None` when the caller named the previous user.
    pub fn superseded_unknown(&self, previous: Option<&str>) -> Option<&str> {
        if previous.is_some_and(|p| self.is_user(p)) {
            return None;
        }
        let next = self.next_user(previous);
        self.users.iter().map(String::as_str).find(|u| *u != next)
    }

    /// Whether `name` is one of the two users: a handle that is not is never touched.
    pub fn is_user(&self, name: &str) -> bool {
        self.users.iter().any(|u| u == name)
    }
}

/// `redis`: one ACL user holding several passwords at once.
#[derive(Debug, Clone)]
pub struct RedisConfig {
    /// Where the admin connection URL (`redis://` or `rediss://`) is kept: a 0600 file or a
    /// systemd credential.
    pub admin_url: SecretSource,
    pub user: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeout: Duration,
}
