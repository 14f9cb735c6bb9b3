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
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawPolicy {
    pub name: Spanned<String>,
    pub installation: Spanned<String>,
    pub resources: Spanned<Vec<Spanned<String>>>,
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
#[derive(Debug, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum RawProvider {
    Random(RawRandom),
    Command(RawCommand),
    Http(RawHttp),
    Postgres(RawDatabase),
    Mysql(RawDatabase),
    Redis(RawRedis),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawHttp {
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub timeout: Option<String>,
    pub fields: Option<Vec<String>>,
}

/// `postgres` and `mysql`: two alternating users, administered through `admin-url-file`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawDatabase {
    pub admin_url_file: PathBuf,
    pub users: Vec<String>,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub database: Option<String>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRedis {
    pub admin_url_file: PathBuf,
    pub user: String,
    pub host: Option<String>,
    pub port: Option<i64>,
    pub timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawRandom {
    pub length: Option<i64>,
    pub charset: Option<String>,
    pub apply: Option<Vec<String>>,
    pub apply_timeout: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct RawCommand {
    pub command: Vec<String>,
    pub timeout: Option<String>,
    pub fields: Option<Vec<String>>,
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
