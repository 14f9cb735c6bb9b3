//! The config as written: serde structs that mirror the TOML one to one.
//!
//! Every struct denies unknown keys and uses kebab-case, so a typo is an error that names the
//! key, line and column. Values that `validate` checks keep their span (`Spanned`), so its
//! errors can point at the line too. Nothing here is checked beyond its TOML type.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use toml::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawConfig {
    #[serde(default)]
    pub vercel: RawVercel,
    #[serde(default)]
    pub state: RawState,
    #[serde(default)]
    pub installations: BTreeMap<String, Spanned<RawInstallation>>,
    #[serde(default)]
    pub policies: Vec<Spanned<RawPolicy>>,
    pub discovery: Option<Spanned<RawDiscovery>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDiscovery {
    pub installations_dir: Option<PathBuf>,
    pub installations_command: Option<Vec<String>>,
    pub token_command: Option<Vec<String>>,
    pub every: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawVercel {
    pub api_url: Option<Spanned<String>>,
    pub request_timeout: Option<Spanned<String>>,
    /// How long one push, with its retries, may take.
    pub retry_deadline: Option<Spanned<String>>,
    pub max_concurrent_requests: Option<Spanned<i64>>,
    /// Lets `api-url` use plain `http://` to a host that is not loopback.
    pub allow_insecure_http: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawState {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawInstallation {
    pub id: Spanned<String>,
    pub token_file: Option<PathBuf>,
    pub token_env: Option<String>,
    pub token_credential: Option<String>,
    /// A program that prints a short-lived token when asked (`token::command`).
    pub token_command: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPolicy {
    pub name: Spanned<String>,
    pub installation: Option<Spanned<String>>,
    /// `"*"` or a list of table names and ids; checked in `config::scope`.
    pub installations: Option<Spanned<toml::Value>>,
    /// A list of ids, a selector table or `"*"`; checked in `config::scope`.
    pub resources: Spanned<toml::Value>,
    pub schedule: Option<Spanned<String>>,
    pub every: Option<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub jitter: Option<Spanned<String>>,
    pub grace: Option<Spanned<String>>,
    pub provider: Spanned<RawProvider>,
    #[serde(default)]
    pub secrets: Vec<Spanned<RawSecret>>,
    #[serde(default)]
    pub notify_dashboard: bool,
}

/// `kind` selects the variant; each kind has its own keys, and a key of another kind is an
/// unknown key. An unknown `kind` is refused by serde with the list of known ones.
///
/// Kept in the checked config when its strings use resource variables: each resource's
/// provider is validated from a copy with the variables rendered (`config::provider`).
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RawProvider {
    Random(RawRandom),
    Command(RawCommand),
    Http(RawHttp),
    Postgres(RawDatabase),
    Mysql(RawDatabase),
    Redis(RawRedis),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHttp {
    pub url: String,
    pub token_file: Option<String>,
    /// A systemd credential name, instead of `token-file`.
    pub token_credential: Option<String>,
    pub timeout: Option<String>,
    pub fields: Option<Vec<String>>,
    pub max_concurrent_per_target: Option<i64>,
}

/// `postgres` and `mysql`: two alternating users, administered through the URL in
/// `admin-url-file` or `admin-url-credential` (exactly one; checked in `config::provider`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDatabase {
    pub admin_url_file: Option<String>,
    pub admin_url_credential: Option<String>,
    pub users: Vec<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub database: Option<String>,
    pub timeout: Option<String>,
    pub max_concurrent_per_target: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRedis {
    pub admin_url_file: Option<String>,
    pub admin_url_credential: Option<String>,
    pub user: String,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub timeout: Option<String>,
    pub max_concurrent_per_target: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRandom {
    pub length: Option<i64>,
    pub charset: Option<String>,
    pub apply: Option<Vec<String>>,
    pub apply_timeout: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCommand {
    pub command: Vec<String>,
    pub timeout: Option<String>,
    pub fields: Option<Vec<String>>,
    pub max_concurrent_per_target: Option<i64>,
}

impl RawProvider {
    /// Every string of the table that may hold a template, each with its key: paths, user
    /// names, hosts, databases, the URL and the programs and their arguments.
    pub fn template_strings_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        let mut out: Vec<(&'static str, &mut String)> = Vec::new();
        match self {
            RawProvider::Random(r) => {
                if let Some(apply) = &mut r.apply {
                    out.extend(apply.iter_mut().map(|s| ("apply", s)));
                }
            }
            RawProvider::Command(c) => out.extend(c.command.iter_mut().map(|s| ("command", s))),
            RawProvider::Http(h) => {
                out.push(("url", &mut h.url));
                if let Some(t) = &mut h.token_file {
                    out.push(("token-file", t));
                }
                if let Some(t) = &mut h.token_credential {
                    out.push(("token-credential", t));
                }
            }
            RawProvider::Postgres(d) | RawProvider::Mysql(d) => {
                if let Some(f) = &mut d.admin_url_file {
                    out.push(("admin-url-file", f));
                }
                if let Some(c) = &mut d.admin_url_credential {
                    out.push(("admin-url-credential", c));
                }
                out.extend(d.users.iter_mut().map(|s| ("users", s)));
                if let Some(h) = &mut d.host {
                    out.push(("host", h));
                }
                if let Some(db) = &mut d.database {
                    out.push(("database", db));
                }
            }
            RawProvider::Redis(r) => {
                if let Some(f) = &mut r.admin_url_file {
                    out.push(("admin-url-file", f));
                }
                if let Some(c) = &mut r.admin_url_credential {
                    out.push(("admin-url-credential", c));
                }
                out.push(("user", &mut r.user));
                if let Some(h) = &mut r.host {
                    out.push(("host", h));
                }
            }
        }
        out
    }

    /// Whether a secret of the table comes from a systemd credential (`*-credential`).
    pub fn uses_credential(&self) -> bool {
        match self {
            RawProvider::Random(_) | RawProvider::Command(_) => false,
            RawProvider::Http(h) => h.token_credential.is_some(),
            RawProvider::Postgres(d) | RawProvider::Mysql(d) => d.admin_url_credential.is_some(),
            RawProvider::Redis(r) => r.admin_url_credential.is_some(),
        }
    }

    /// `max-concurrent-per-target` as written, for the kinds that have it.
    pub fn max_concurrent_per_target(&self) -> Option<i64> {
        match self {
            RawProvider::Random(_) => None,
            RawProvider::Command(c) => c.max_concurrent_per_target,
            RawProvider::Http(h) => h.max_concurrent_per_target,
            RawProvider::Postgres(d) | RawProvider::Mysql(d) => d.max_concurrent_per_target,
            RawProvider::Redis(r) => r.max_concurrent_per_target,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            RawProvider::Random(_) => "random",
            RawProvider::Command(_) => "command",
            RawProvider::Http(_) => "http",
            RawProvider::Postgres(_) => "postgres",
            RawProvider::Mysql(_) => "mysql",
            RawProvider::Redis(_) => "redis",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawSecret {
    pub name: Spanned<String>,
    pub value: Spanned<String>,
    pub prefix: Option<Spanned<String>>,
    pub environment_overrides: Option<Spanned<RawOverrides>>,
}

/// Only Vercel's three environments; any other key is refused by `deny_unknown_fields`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverrides {
    pub production: Option<String>,
    pub preview: Option<String>,
    pub development: Option<String>,
}
