//! From [`RawConfig`] to the checked [`Config`]: every semantic rule of the config lives here.
//!
//! Problems are collected, not returned at the first one, so a user fixing a config by hand
//! sees them all at once. Each names the key (`policies[0] "orders-db": schedule`) and, where
//! the TOML gave a span, the line and column.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use url::Url;

use super::canonical::canonical_at;
use super::raw::*;
use super::scope::{InstallationScope, ResourceScope};
use super::types::*;
use super::{ConfigError, Problem, Source};
use crate::resource::ResourceInfo;
use crate::schedule::Schedule;
use crate::template::Template;

/// Defaults for keys that may be left out.
const DEFAULT_API_URL: &str = "https://api.vercel.com";
const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_MAX_CONCURRENT: usize = 16;
/// Far beyond what one Vercel endpoint allows; a larger number is a typo.
const MAX_CONCURRENT_LIMIT: i64 = 1024;
const DEFAULT_GRACE: Duration = Duration::from_secs(24 * 3600);
pub(super) const DEFAULT_RANDOM_LENGTH: i64 = 40;
pub(super) const DEFAULT_COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
/// Generated secrets must be at least this strong (NIST's bar for symmetric keys).
pub(super) const MIN_ENTROPY_BITS: f64 = 128.0;
/// Vercel's limits on environment variables (VERCEL_API.md).
const MAX_ENV_NAME_LEN: usize = 256;
pub(super) const MAX_ENV_VALUE_LEN: usize = 65_536;
const RESERVED_ENV_NAMES: [&str; 11] = [
    "AWS_SECRET_KEY",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "NOW_REGION",
    "TZ",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

pub(super) struct Validator<'a> {
    pub(super) source: &'a Source<'a>,
    pub(super) problems: Vec<Problem>,
}

impl Validator<'_> {
    pub(super) fn problem(
        &mut self,
        span: Option<Range<usize>>,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.problems
            .push(Problem::at(self.source, span, key.into(), message.into()));
    }

    fn duration(
        &mut self,
        raw: Option<&Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Duration {
        let Some(raw) = raw else { return default };
        match parse_duration(raw.get_ref()) {
            Ok(d) => d,
            Err(why) => {
                self.problem(Some(raw.span()), key, why);
                default
            }
        }
    }
}

/// Whether `name` can name a systemd credential: a file name in `$CREDENTIALS_DIRECTORY`.
pub(super) fn is_credential_name(name: &str) -> bool {
    !(name.is_empty() || name.contains('/') || name == "." || name == "..")
}

/// The problem with a `*-credential` value that [`is_credential_name`] refuses.
pub(super) fn not_a_credential_name(name: &str) -> String {
    format!(
        "\"{name}\" is not a credential name (a file name in $CREDENTIALS_DIRECTORY, without `/`)"
    )
}

/// Parses `30s`, `10m`, `24h`, `30d`, `1h 30m` ([`crate::duration::parse`]).
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    crate::duration::parse(text)
}

pub(super) fn validate(
    path: &Path,
    source: &Source,
    raw: RawConfig,
    written: &toml::Table,
) -> Result<Config, ConfigError> {
    let mut v = Validator {
        source,
        problems: Vec::new(),
    };
    let vercel = validate_vercel(&mut v, &raw.vercel);
    let state = StateSettings {
        dir: raw.state.dir.clone().unwrap_or_else(default_state_dir),
    };

    let mut installations = BTreeMap::new();
    let mut ids: HashMap<String, String> = HashMap::new();
    for (name, inst) in &raw.installations {
        let key = format!("installations.{name}");
        let span = Some(inst.span());
        let inst = inst.get_ref();
        let id = inst.id.get_ref().trim().to_owned();
        if id.is_empty() {
            v.problem(
                Some(inst.id.span()),
                format!("{key}.id"),
                "is empty: give the installation's integrationConfigurationId (icfg_...)",
            );
        } else if let Some(other) = ids.insert(id.clone(), name.clone()) {
            v.problem(
                Some(inst.id.span()),
                format!("{key}.id"),
                format!(
                    "\"{id}\" is also the id of installations.{other}: one table per installation"
                ),
            );
        }
        let command = inst.token_command.as_ref().map(|argv| {
            super::provider::validate_command(
                &mut v,
                &format!("{key}.token-command"),
                span.clone(),
                argv,
            )
        });
        let sources: Vec<TokenSource> = [
            inst.token_file.clone().map(TokenSource::File),
            inst.token_env.clone().map(TokenSource::Env),
            inst.token_credential.clone().map(TokenSource::Credential),
            // An empty command is reported above; it still counts as a source here, so it is
            // not also called "no token source".
            command.map(|c| {
                TokenSource::Command(c.unwrap_or_else(|| CommandSpec {
                    program: PathBuf::new(),
                    args: Vec::new(),
                }))
            }),
        ]
        .into_iter()
        .flatten()
        .collect();
        let token = match sources.as_slice() {
            [one] => Some(one.clone()),
            [] => {
                v.problem(span.clone(), key.clone(), "has no token source: set exactly one of token-file, token-env, token-credential, token-command");
                None
            }
            _ => {
                v.problem(span.clone(), key.clone(), "has several token sources: set exactly one of token-file, token-env, token-credential, token-command");
                None
            }
        };
        match &token {
            Some(TokenSource::Env(var))
                if var.is_empty() || var.contains('=') || var.contains('\0') =>
            {
                v.problem(
                    span.clone(),
                    format!("{key}.token-env"),
                    format!("\"{var}\" is not an environment variable name"),
                );
            }
            Some(TokenSource::Credential(cred)) if !is_credential_name(cred) => {
                v.problem(
                    span.clone(),
                    format!("{key}.token-credential"),
                    not_a_credential_name(cred),
                );
            }
            Some(TokenSource::File(p)) if p.as_os_str().is_empty() => {
                v.problem(span.clone(), format!("{key}.token-file"), "is empty");
            }
            _ => {}
        }
        if let Some(token) = token {
            installations.insert(
                name.clone(),
                Installation {
                    name: name.clone(),
                    id,
                    token,
                    written: canonical_at(written, &["installations", name]),
                },
            );
        }
    }

    let mut policies = Vec::new();
    let mut names: HashMap<String, usize> = HashMap::new();
    // (admin URL source, users sorted) -> the (policy, resource) whose two users they are.
    let mut user_pairs: HashMap<(SecretSource, Vec<String>), (String, String)> = HashMap::new();
    // (installation id, resource, secret name) -> the policy that owns it.
    let mut owners: HashMap<(String, String, String), String> = HashMap::new();
    for (index, raw_policy) in raw.policies.iter().enumerate() {
        let p = raw_policy.get_ref();
        let name = p.name.get_ref().clone();
        let key = format!("policies[{index}] \"{}\"", shorten(&name));
        if name.is_empty()
            || name.contains('/')
            || name.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            v.problem(Some(p.name.span()), format!("{key}: name"), "must be non-empty, without `/`, spaces or control characters (it is used as NAME in --policy NAME/RESOURCE)");
        }
        if let Some(first) = names.insert(name.clone(), index) {
            v.problem(
                Some(p.name.span()),
                format!("{key}: name"),
                format!("duplicate policy name: policies[{first}] is also called \"{name}\""),
            );
        }
        if let Some(mut policy) = validate_policy(
            &mut v,
            &key,
            p,
            &raw.installations,
            &installations,
            raw_policy.span(),
        ) {
            policy.written = canonical_at(written, &["policies", &index.to_string()]);
            if let Some((name, resources)) = policy.configured()
                && let Some(inst) = installations.get(name)
            {
                check_user_pairs(
                    &mut v,
                    &key,
                    raw_policy.get_ref(),
                    &policy,
                    inst,
                    &mut user_pairs,
                );
                for resource in resources {
                    for secret in &policy.secrets {
                        let owner_key = (inst.id.clone(), resource.clone(), secret.name.clone());
                        if let Some(other) = owners.insert(owner_key, policy.name.clone())
                            && other != policy.name
                        {
                            v.problem(Some(raw_policy.span()), format!("{key}: secrets"), format!("secret {} of resource \"{resource}\" in installation \"{}\" is also pushed by policy \"{other}\": each secret of a resource belongs to one policy", secret.name, inst.name));
                        }
                    }
                }
            }
            policies.push(policy);
        }
    }

    let discovery = raw
        .discovery
        .as_ref()
        .and_then(|d| super::discovery::validate(&mut v, d, canonical_at(written, &["discovery"])));

    let server = raw
        .server
        .as_ref()
        .and_then(|s| super::server::validate(&mut v, s));

    match vercel {
        Some(vercel) if v.problems.is_empty() => Ok(Config {
            path: path.to_owned(),
            vercel,
            state,
            installations,
            policies,
            discovery,
            server,
        }),
        _ => Err(ConfigError::Invalid {
            path: path.to_owned(),
            problems: v.problems,
        }),
    }
}

/// Two alternating database users serve one resource: a second resource (of this policy or
/// another) on the same pair would set the password the first one's deployments still use.
/// Each listed resource's table is rendered (a templated one, with the variables a listed
/// resource has) and checked; a rendering that needs more (`{resource.name}`) fails that
/// resource when it rotates, not the config.
fn check_user_pairs(
    v: &mut Validator,
    key: &str,
    raw: &RawPolicy,
    policy: &Policy,
    installation: &Installation,
    pairs: &mut HashMap<(SecretSource, Vec<String>), (String, String)>,
) {
    let span = Some(raw.provider.span());
    let Some((_, resources)) = policy.configured() else {
        return;
    };
    for resource in resources {
        let info = ResourceInfo::configured(&installation.id, resource);
        let rendered = match &policy.provider {
            ProviderSpec::Shared(config) => Some(config.clone()),
            ProviderSpec::PerResource(template) => {
                let rkey = format!("{key}, resource \"{}\"", shorten(resource));
                // An unbound variable fails the resource at run time, not the config.
                super::provider::render_into(v, &rkey, template, &info, span.clone())
                    .unwrap_or_default()
            }
        };
        let Some(ProviderConfig::Postgres(d) | ProviderConfig::Mysql(d)) = &rendered else {
            continue;
        };
        let mut users = d.users.to_vec();
        users.sort();
        let pair = (d.admin_url.clone(), users);
        let Some((other_policy, other_resource)) =
            pairs.insert(pair, (policy.name.clone(), resource.clone()))
        else {
            continue;
        };
        let users = d.users.join(", ");
        let through = d.admin_url.key("admin-url");
        let message = if other_policy == policy.name {
            format!(
                "resources \"{other_resource}\" and \"{resource}\" would share the users {users} (through the same {through}), but a postgres or mysql policy's two users take turns for one resource only: template them per resource (users = [\"{{resource.id}}_a\", \"{{resource.id}}_b\"]) or give each resource its own policy and its own pair of users"
            )
        } else {
            format!(
                "the same users {users} (through the same {through}) are rotated by policy \"{other_policy}\" for resource \"{other_resource}\": each pair of users serves one resource"
            )
        };
        let span = if other_policy == policy.name {
            Some(raw.resources.span())
        } else {
            span.clone()
        };
        let field = if other_policy == policy.name {
            "resources"
        } else {
            "provider.users"
        };
        v.problem(span, format!("{key}: {field}"), message);
    }
}

fn default_state_dir() -> PathBuf {
    // systemd's StateDirectory= sets $STATE_DIRECTORY, a colon-separated list when several
    // directories are configured; the first is ours.
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|dirs| {
            dirs.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("./state"))
}

fn validate_vercel(v: &mut Validator, raw: &RawVercel) -> Option<VercelSettings> {
    let allow_insecure = raw.allow_insecure_http.unwrap_or(false);
    let default_url = Url::parse(DEFAULT_API_URL).ok();
    let api_url = match &raw.api_url {
        None => default_url,
        Some(text) => match check_api_url(text.get_ref(), allow_insecure) {
            Ok(url) => Some(url),
            Err(why) => {
                v.problem(Some(text.span()), "vercel.api-url", why);
                None
            }
        },
    };
    let request_timeout = v.duration(
        raw.request_timeout.as_ref(),
        "vercel.request-timeout",
        DEFAULT_REQUEST_TIMEOUT,
    );
    if request_timeout.is_zero() {
        let span = raw.request_timeout.as_ref().map(|s| s.span());
        v.problem(span, "vercel.request-timeout", "must be more than 0s");
    }
    // Unset, it is 5m, or twice the request timeout if that is longer (so a long timeout alone
    // is never an error); set, it must leave room for more than one attempt.
    const DEFAULT_RETRY_DEADLINE: Duration = Duration::from_secs(5 * 60);
    let retry_deadline = match &raw.retry_deadline {
        None => DEFAULT_RETRY_DEADLINE.max(request_timeout.saturating_mul(2)),
        Some(text) => {
            let deadline = v.duration(Some(text), "vercel.retry-deadline", DEFAULT_RETRY_DEADLINE);
            if deadline <= request_timeout {
                v.problem(
                    Some(text.span()),
                    "vercel.retry-deadline",
                    format!(
                        "must be longer than vercel.request-timeout ({})",
                        crate::duration::format(request_timeout)
                    ),
                );
            }
            deadline
        }
    };
    let max_concurrent_requests = match &raw.max_concurrent_requests {
        None => DEFAULT_MAX_CONCURRENT,
        Some(n) if (1..=MAX_CONCURRENT_LIMIT).contains(n.get_ref()) => *n.get_ref() as usize,
        Some(n) => {
            v.problem(
                Some(n.span()),
                "vercel.max-concurrent-requests",
                format!("{} is out of range 1-{MAX_CONCURRENT_LIMIT}", n.get_ref()),
            );
            DEFAULT_MAX_CONCURRENT
        }
    };
    Some(VercelSettings {
        api_url: api_url?,
        request_timeout,
        retry_deadline,
        max_concurrent_requests,
    })
}

pub(super) fn check_api_url(text: &str, allow_insecure: bool) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("\"{text}\" is not a URL ({e})"))?;
    let host = url.host_str().unwrap_or("");
    if host.is_empty() {
        return Err(format!("\"{text}\" has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not hold a user name or password: tokens come from token-file, token-env or token-credential".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(format!("\"{text}\" must not have a query or fragment"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if allow_insecure || is_loopback(&url) => Ok(url),
        "http" => Err(format!(
            "\"{text}\" is plain http to a host that is not loopback: tokens and secrets would cross the network unencrypted (use https, or set vercel.allow-insecure-http = true)"
        )),
        other => Err(format!("\"{text}\" has scheme {other}: use https")),
    }
}

pub(super) fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

fn validate_policy(
    v: &mut Validator,
    key: &str,
    p: &RawPolicy,
    raw_installations: &BTreeMap<String, Spanned<RawInstallation>>,
    installations: &BTreeMap<String, Installation>,
    policy_span: Range<usize>,
) -> Option<Policy> {
    let before = v.problems.len();
    let installations_scope = super::scope::installation_scope(
        v,
        key,
        p.installation.as_ref(),
        p.installations.as_ref(),
        policy_span,
    );
    if let Some(InstallationScope::One(installation)) = &installations_scope
        && !raw_installations.contains_key(installation)
    {
        let known: Vec<&str> = raw_installations.keys().map(String::as_str).collect();
        let known = if known.is_empty() {
            "none are defined".to_owned()
        } else {
            format!("defined: {}", known.join(", "))
        };
        v.problem(
            p.installation.as_ref().map(|i| i.span()),
            format!("{key}: installation"),
            format!("no [installations.{installation}] table ({known})"),
        );
    }
    if let Some(InstallationScope::Listed(list)) = &installations_scope {
        for entry in list {
            if !raw_installations.contains_key(entry)
                && !crate::resource::is_file_safe_installation_id(entry)
            {
                v.problem(
                    p.installations.as_ref().map(|i| i.span()),
                    format!("{key}: installations"),
                    format!("\"{entry}\" is neither an [installations.*] table name nor an installation id (icfg_...)"),
                );
            }
        }
    }
    let resources = super::scope::resource_scope(v, key, &p.resources);
    let timezone = match &p.timezone {
        None => chrono_tz::UTC,
        Some(tz) => match tz.get_ref().parse::<chrono_tz::Tz>() {
            Ok(tz) => tz,
            Err(_) => {
                v.problem(Some(tz.span()), format!("{key}: timezone"), format!("\"{}\" is not an IANA time zone name (e.g. \"Europe/Berlin\", \"America/New_York\", \"UTC\")", tz.get_ref()));
                chrono_tz::UTC
            }
        },
    };
    let schedule = match (&p.schedule, &p.every) {
        (Some(_), Some(every)) => {
            v.problem(
                Some(every.span()),
                format!("{key}: every"),
                "set either schedule or every, not both",
            );
            None
        }
        (None, None) => {
            v.problem(Some(p.name.span()), key.to_owned(), "has neither schedule nor every: set one (e.g. schedule = \"0 3 * * 0\" or every = \"30d\")");
            None
        }
        (Some(expr), None) => match Schedule::cron(expr.get_ref(), timezone) {
            Ok(s) => Some(s),
            Err(e) => {
                v.problem(
                    Some(expr.span()),
                    format!("{key}: schedule"),
                    format!("\"{}\": {e}", expr.get_ref()),
                );
                None
            }
        },
        (None, Some(every)) => match parse_duration(every.get_ref()) {
            Ok(d) => match Schedule::every(d) {
                Ok(s) => Some(s),
                Err(e) => {
                    v.problem(Some(every.span()), format!("{key}: every"), e.to_string());
                    None
                }
            },
            Err(why) => {
                v.problem(Some(every.span()), format!("{key}: every"), why);
                None
            }
        },
    };
    let jitter = v.duration(p.jitter.as_ref(), &format!("{key}: jitter"), Duration::ZERO);
    let grace = v.duration(p.grace.as_ref(), &format!("{key}: grace"), DEFAULT_GRACE);
    if let Some(schedule) = &schedule
        && let Some(gap) = schedule.min_gap(chrono::Utc::now())
        && grace + jitter >= gap
    {
        let span = p.grace.as_ref().map(|g| g.span()).or(Some(p.name.span()));
        v.problem(span, format!("{key}: grace"), format!(
                    "grace {} plus jitter {} is not shorter than the shortest gap between two due times ({}): a rotation would overwrite a credential still in its grace period",
                    crate::duration::format(grace), crate::duration::format(jitter), crate::duration::format(gap)));
    }

    let provider = super::provider::validate_table(v, key, &p.provider);

    let mut secrets = Vec::new();
    let mut secret_names: HashMap<String, usize> = HashMap::new();
    if p.secrets.is_empty() {
        v.problem(
            Some(p.name.span()),
            format!("{key}: secrets"),
            "is empty: add at least one [[policies.secrets]] with a name and a value",
        );
    }
    let provider_fields = provider.as_ref().and_then(|(p, _)| p.fields());
    for (i, raw_secret) in p.secrets.iter().enumerate() {
        let s = raw_secret.get_ref();
        let name = s.name.get_ref().clone();
        let skey = format!("{key}: secrets[{i}] \"{}\"", shorten(&name));
        let prefix = s.prefix.as_ref().map(|p| p.get_ref().clone());
        if let Some(prefix) = &s.prefix
            && let Err(why) = check_env_chars(prefix.get_ref())
        {
            v.problem(Some(prefix.span()), format!("{skey}.prefix"), why);
        }
        let env_name = match &prefix {
            Some(p) => format!("{p}_{name}"),
            None => name.clone(),
        };
        if let Err(why) = check_env_chars(&name) {
            v.problem(Some(s.name.span()), format!("{skey}.name"), why);
        } else if env_name.len() > MAX_ENV_NAME_LEN {
            v.problem(Some(s.name.span()), format!("{skey}.name"), format!("{} is {} characters long counting the prefix and `_`; Vercel allows at most {MAX_ENV_NAME_LEN}", shorten(&env_name), env_name.len()));
        } else if RESERVED_ENV_NAMES
            .iter()
            .any(|r| r.eq_ignore_ascii_case(&env_name))
        {
            v.problem(
                Some(s.name.span()),
                format!("{skey}.name"),
                format!("{env_name} is a name Vercel reserves for its runtime"),
            );
        }
        if let Some(first) = secret_names.insert(name.clone(), i) {
            v.problem(
                Some(s.name.span()),
                format!("{skey}.name"),
                format!("duplicate secret name: secrets[{first}] is also {name}"),
            );
        }

        let mut template = |text: &str, span: Range<usize>, tkey: String| -> Option<Template> {
            if text.len() > MAX_ENV_VALUE_LEN {
                v.problem(
                    Some(span),
                    tkey,
                    format!(
                        "is {} bytes long; Vercel allows values of at most {MAX_ENV_VALUE_LEN}",
                        text.len()
                    ),
                );
                return None;
            }
            match Template::parse(text) {
                Ok(t) => {
                    if let Some(known) = &provider_fields {
                        for field in t.fields() {
                            if !known.iter().any(|k| k == field) {
                                v.problem(Some(span.clone()), tkey.clone(), format!("names field {{{field}}}, which the {} provider does not yield (it yields: {})", provider.as_ref().map(|(p, _)| p.kind()).unwrap_or("?"), known.join(", ")));
                            }
                        }
                    }
                    Some(t)
                }
                Err(e) => {
                    v.problem(Some(span), tkey, e.to_string());
                    None
                }
            }
        };
        let value = template(s.value.get_ref(), s.value.span(), format!("{skey}.value"));
        let overrides = match &s.environment_overrides {
            None => Some(EnvironmentOverrides::default()),
            Some(o) => {
                let span = o.span();
                let raw = o.get_ref();
                let mut one = |text: &Option<String>, env: &str| -> Result<Option<Template>, ()> {
                    match text {
                        None => Ok(None),
                        Some(t) => template(
                            t,
                            span.clone(),
                            format!("{skey}.environment-overrides.{env}"),
                        )
                        .map(Some)
                        .ok_or(()),
                    }
                };
                let production = one(&raw.production, "production");
                let preview = one(&raw.preview, "preview");
                let development = one(&raw.development, "development");
                match (production, preview, development) {
                    (Ok(production), Ok(preview), Ok(development)) => Some(EnvironmentOverrides {
                        production,
                        preview,
                        development,
                    }),
                    _ => None,
                }
            }
        };
        if let (Some(value), Some(environment_overrides)) = (value, overrides) {
            secrets.push(SecretSpec {
                name,
                prefix,
                value,
                environment_overrides,
            });
        }
    }

    if v.problems.len() > before {
        return None;
    }
    let (Some(schedule), Some((provider, max_concurrent_per_target))) = (schedule, provider) else {
        return None;
    };
    let (Some(installations_scope), Some(resources)) = (installations_scope, resources) else {
        return None;
    };
    let discovered = !matches!(
        (&installations_scope, &resources),
        (InstallationScope::One(_), ResourceScope::Listed(_))
    );
    if discovered
        && let ProviderSpec::Shared(ProviderConfig::Postgres(d) | ProviderConfig::Mysql(d)) =
            &provider
    {
        v.problem(
            Some(p.provider.span()),
            format!("{key}: provider.users"),
            format!(
                "the users {} would serve every resource this policy finds, but a {} policy's two users take turns for one resource only: template them per resource (users = [\"{{resource.id}}_a\", \"{{resource.id}}_b\"]), and the admin-url-file too if each resource has its own server",
                d.users.join(", "),
                provider.kind()
            ),
        );
        return None;
    }
    if let InstallationScope::One(name) = &installations_scope {
        // The installation exists: a missing one was a problem above.
        installations.get(name)?;
    }
    Some(Policy {
        name: p.name.get_ref().clone(),
        installations: installations_scope,
        resources,
        schedule,
        jitter,
        grace,
        provider,
        max_concurrent_per_target,
        secrets,
        notify_dashboard: p.notify_dashboard,
        written: String::new(),
    })
}

/// A name as it appears in a key: long ones are cut, so a message stays readable.
fn shorten(name: &str) -> String {
    const MAX: usize = 40;
    if name.chars().count() <= MAX {
        name.to_owned()
    } else {
        format!("{}...", name.chars().take(MAX).collect::<String>())
    }
}

/// Vercel's rule for environment variable names: letters, digits and `_`, at least one.
fn check_env_chars(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_'))
    {
        return Err(format!(
            "\"{name}\" holds {bad:?}: Vercel allows only letters, digits and `_` in variable names"
        ));
    }
    Ok(())
}
