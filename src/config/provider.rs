//! A policy's provider table: checking it, and rendering one whose strings use resource
//! variables (`admin-url-file = "/etc/acme/admin/{resource.id}.url"`) for one resource.
//!
//! Every string a template may appear in (paths, user names, hosts, databases, the URL, the
//! programs and their arguments) is parsed as a template at load: syntax, known variables, and
//! no provider field (`{password}` belongs in secret values). A table without variables is
//! checked whole and shared by every resource of its policy. A table with variables is checked
//! at load for everything that does not depend on the resource; each resource's copy is
//! rendered and checked whole by [`render`], with the same rules and messages, so a bad
//! rendering (an empty user name, two users that come out equal) fails that resource only.

use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;

use super::raw::*;
use super::types::*;
use super::validate::{
    DEFAULT_COMMAND_TIMEOUT, DEFAULT_RANDOM_LENGTH, MAX_ENV_VALUE_LEN, MIN_ENTROPY_BITS, Validator,
    check_api_url, is_credential_name, not_a_credential_name, parse_duration,
};
use super::{Problem, Source};
use crate::resource::ResourceInfo;
use crate::template::{Template, UnboundVariable, VARIABLES};

/// The default `max-concurrent-per-target` of the database kinds: enough to rotate a fleet on
/// one server briskly, far from its connection limit.
pub const DEFAULT_MAX_CONCURRENT_PER_TARGET: usize = 4;
/// A larger cap is a typo.
const MAX_CONCURRENT_PER_TARGET_LIMIT: i64 = 1024;

/// Which string checks [`validate_provider`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Strings {
    /// Every string is final: check each.
    Checked,
    /// Strings with a brace are templates: leave them to the check of each rendering.
    DeferBraced,
}

/// Checks a policy's provider table at load: its templates, its cap, then the table (whole,
/// or as far as it does not depend on the resource). `None` after a problem.
pub(super) fn validate_table(
    v: &mut Validator,
    key: &str,
    raw: &Spanned<RawProvider>,
) -> Option<(ProviderSpec, Option<usize>)> {
    let span = Some(raw.span());
    let before = v.problems.len();
    let kind = raw.get_ref().kind();
    // Templates without variables are rendered now (`{{` to `{`); those with variables stay
    // as written in this copy, for the checks that do not depend on the resource.
    let mut copy = raw.get_ref().clone();
    let mut has_variables = false;
    let nobody = ResourceInfo::configured("", "");
    for (field, text) in copy.template_strings_mut() {
        let tkey = format!("{key}: provider ({kind}).{field}");
        match Template::parse(text) {
            Err(e) => v.problem(span.clone(), tkey, e.to_string()),
            Ok(t) if !t.fields().is_empty() => {
                let names: Vec<String> = t.fields().iter().map(|f| format!("{{{f}}}")).collect();
                v.problem(span.clone(), tkey, format!("names {}, a provider's field: a provider table may use only the resource variables ({VARIABLES}); write {{{{ and }}}} for literal braces", names.join(", ")));
            }
            Ok(t) if t.has_variables() => has_variables = true,
            Ok(t) => {
                if let Ok(rendered) = t.render_text(&nobody) {
                    *text = rendered;
                }
            }
        }
    }
    let cap = target_limit(v, key, raw.get_ref(), span.clone());
    if v.problems.len() > before {
        return None;
    }
    if !has_variables {
        let config = validate_provider(v, key, &copy, span, Strings::Checked)?;
        return Some((ProviderSpec::Shared(config), cap));
    }
    validate_provider(v, key, &copy, span, Strings::DeferBraced);
    if v.problems.len() > before {
        return None;
    }
    let template = ProviderTemplate {
        raw: raw.get_ref().clone(),
        key: key.to_owned(),
        fields: fields_of(raw.get_ref()),
    };
    Some((ProviderSpec::PerResource(template), cap))
}

/// What the kind yields (see [`ProviderConfig::fields`]), from the table as written.
fn fields_of(raw: &RawProvider) -> Option<Vec<String>> {
    let names = |n: &[&str]| Some(n.iter().map(|f| (*f).to_owned()).collect());
    match raw {
        RawProvider::Random(_) => names(&["password"]),
        RawProvider::Command(c) => c.fields.clone(),
        RawProvider::Http(h) => h.fields.clone(),
        RawProvider::Postgres(_) | RawProvider::Mysql(_) => names(&DATABASE_FIELDS),
        RawProvider::Redis(_) => names(&REDIS_FIELDS),
    }
}

/// `max-concurrent-per-target`: default [`DEFAULT_MAX_CONCURRENT_PER_TARGET`] for the kinds
/// with an admin connection, none for `command` and `http` unless set.
fn target_limit(
    v: &mut Validator,
    key: &str,
    raw: &RawProvider,
    span: Option<Range<usize>>,
) -> Option<usize> {
    let default = match raw {
        RawProvider::Postgres(_) | RawProvider::Mysql(_) | RawProvider::Redis(_) => {
            Some(DEFAULT_MAX_CONCURRENT_PER_TARGET)
        }
        RawProvider::Random(_) | RawProvider::Command(_) | RawProvider::Http(_) => None,
    };
    match raw.max_concurrent_per_target() {
        None => default,
        Some(n) if (1..=MAX_CONCURRENT_PER_TARGET_LIMIT).contains(&n) => Some(n as usize),
        Some(n) => {
            v.problem(
                span,
                format!("{key}: provider ({}).max-concurrent-per-target", raw.kind()),
                format!("{n} is out of range 1-{MAX_CONCURRENT_PER_TARGET_LIMIT}"),
            );
            default
        }
    }
}

/// Renders a templated table for `resource` and checks the result as a table is checked at
/// load, reporting to `v` under `key`. `Ok(None)`: the rendering is invalid (problems added).
pub(super) fn render_into(
    v: &mut Validator,
    key: &str,
    template: &ProviderTemplate,
    resource: &ResourceInfo,
    span: Option<Range<usize>>,
) -> Result<Option<ProviderConfig>, UnboundVariable> {
    let mut copy = template.raw.clone();
    let kind = copy.kind();
    for (field, text) in copy.template_strings_mut() {
        match Template::parse(text) {
            Ok(t) => *text = t.render_text(resource)?,
            // Checked at load; reported rather than assumed.
            Err(e) => {
                v.problem(
                    span.clone(),
                    format!("{key}: provider ({kind}).{field}"),
                    e.to_string(),
                );
                return Ok(None);
            }
        }
    }
    Ok(validate_provider(v, key, &copy, span, Strings::Checked))
}

/// The provider config of a templated table for one resource.
pub(super) fn render(
    template: &ProviderTemplate,
    resource: &ResourceInfo,
) -> Result<ProviderConfig, ResourceTemplateError> {
    let source = Source::new("");
    let mut v = Validator {
        source: &source,
        problems: Vec::new(),
    };
    let config = render_into(&mut v, &template.key, template, resource, None)?;
    match config {
        Some(config) if v.problems.is_empty() => Ok(config),
        _ => Err(ResourceTemplateError::Invalid {
            resource: resource.id.to_string(),
            installation: resource.installation_id.to_string(),
            problems: describe(&v.problems),
        }),
    }
}

fn describe(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

pub(super) fn validate_command(
    v: &mut Validator,
    key: &str,
    span: Option<Range<usize>>,
    argv: &[String],
) -> Option<CommandSpec> {
    match argv.split_first() {
        Some((program, args)) if !program.trim().is_empty() => Some(CommandSpec {
            program: PathBuf::from(program),
            args: args.to_vec(),
        }),
        _ => {
            v.problem(span, key, "is empty: give the program and its arguments, e.g. [\"/usr/local/libexec/acme-rotate\", \"--db\", \"orders\"]");
            None
        }
    }
}

fn validate_provider(
    v: &mut Validator,
    key: &str,
    raw: &RawProvider,
    span: Option<Range<usize>>,
    strings: Strings,
) -> Option<ProviderConfig> {
    // A string with a brace still holds a template: what it renders to is checked per
    // resource, not here.
    let deferred =
        |s: &str| strings == Strings::DeferBraced && (s.contains('{') || s.contains('}'));
    let before = v.problems.len();
    let provider = match raw {
        RawProvider::Random(r) => {
            let pkey = format!("{key}: provider (random)");
            let charset = match r.charset.as_deref() {
                None => Charset::Alphanumeric,
                Some(name) => match Charset::from_name(name) {
                    Some(c) => c,
                    None => {
                        v.problem(
                            span.clone(),
                            format!("{pkey}.charset"),
                            format!(
                                "unknown charset \"{name}\": use one of {}",
                                Charset::NAMES.join(", ")
                            ),
                        );
                        Charset::Alphanumeric
                    }
                },
            };
            let length = r.length.unwrap_or(DEFAULT_RANDOM_LENGTH);
            if length < 1 || length as usize > MAX_ENV_VALUE_LEN {
                v.problem(
                    span.clone(),
                    format!("{pkey}.length"),
                    format!("{length} is out of range 1-{MAX_ENV_VALUE_LEN}"),
                );
            } else {
                let bits = length as f64 * charset.bits_per_char();
                if bits < MIN_ENTROPY_BITS {
                    let needed = (MIN_ENTROPY_BITS / charset.bits_per_char()).ceil();
                    v.problem(span.clone(), format!("{pkey}.length"), format!("{length} characters of {} give {bits:.0} bits of entropy, under the {MIN_ENTROPY_BITS:.0} required: use length = {needed} or more", Charset::NAMES[charset as usize]));
                }
            }
            let apply = match &r.apply {
                None => None,
                Some(argv) => validate_command(v, &format!("{pkey}.apply"), span.clone(), argv),
            };
            let apply_timeout = match &r.apply_timeout {
                None => DEFAULT_COMMAND_TIMEOUT,
                Some(t) => match parse_duration(t) {
                    Ok(d) if !d.is_zero() => d,
                    Ok(_) => {
                        v.problem(
                            span.clone(),
                            format!("{pkey}.apply-timeout"),
                            "must be more than 0s",
                        );
                        DEFAULT_COMMAND_TIMEOUT
                    }
                    Err(why) => {
                        v.problem(span.clone(), format!("{pkey}.apply-timeout"), why);
                        DEFAULT_COMMAND_TIMEOUT
                    }
                },
            };
            ProviderConfig::Random(RandomConfig {
                length: length.max(1) as usize,
                charset,
                apply,
                apply_timeout,
            })
        }
        RawProvider::Command(c) => {
            let pkey = format!("{key}: provider (command)");
            let command = validate_command(v, &format!("{pkey}.command"), span.clone(), &c.command);
            let timeout = match &c.timeout {
                None => DEFAULT_COMMAND_TIMEOUT,
                Some(t) => match parse_duration(t) {
                    Ok(d) if !d.is_zero() => d,
                    Ok(_) => {
                        v.problem(
                            span.clone(),
                            format!("{pkey}.timeout"),
                            "must be more than 0s",
                        );
                        DEFAULT_COMMAND_TIMEOUT
                    }
                    Err(why) => {
                        v.problem(span.clone(), format!("{pkey}.timeout"), why);
                        DEFAULT_COMMAND_TIMEOUT
                    }
                },
            };
            if let Some(fields) = &c.fields {
                check_field_list(v, &format!("{pkey}.fields"), span.clone(), fields);
            }
            let command = command?;
            ProviderConfig::Command(CommandConfig {
                command,
                timeout,
                fields: c.fields.clone(),
            })
        }
        RawProvider::Http(h) => {
            let pkey = format!("{key}: provider (http)");
            let timeout = provider_timeout(
                v,
                &format!("{pkey}.timeout"),
                span.clone(),
                h.timeout.as_ref(),
                Duration::from_secs(30),
            );
            if let Some(fields) = &h.fields {
                check_field_list(v, &format!("{pkey}.fields"), span.clone(), fields);
            }
            // Same rule as Vercel's api-url: the request carries a token and the answer values.
            let url = match check_api_url(&h.url, false) {
                Err(_) if deferred(&h.url) => None,
                Ok(url) => Some(url),
                Err(why) => {
                    v.problem(
                        span.clone(),
                        format!("{pkey}.url"),
                        why.replace(", or set vercel.allow-insecure-http = true", ""),
                    );
                    None
                }
            };
            let token = secret_source(
                v,
                &pkey,
                span.clone(),
                "token",
                [h.token_file.as_ref(), h.token_credential.as_ref()],
                Need::Optional,
                strings,
            );
            ProviderConfig::Http(HttpConfig {
                url: url?,
                token: token?,
                timeout,
                fields: h.fields.clone(),
            })
        }
        RawProvider::Postgres(d) | RawProvider::Mysql(d) => {
            let kind = if matches!(raw, RawProvider::Postgres(_)) {
                "postgres"
            } else {
                "mysql"
            };
            let pkey = format!("{key}: provider ({kind})");
            let timeout = provider_timeout(
                v,
                &format!("{pkey}.timeout"),
                span.clone(),
                d.timeout.as_ref(),
                Duration::from_secs(30),
            );
            let port = provider_port(v, &format!("{pkey}.port"), span.clone(), d.port);
            for u in d.users.iter().filter(|u| !deferred(u)) {
                provider_identifier(v, &format!("{pkey}.users"), span.clone(), u);
            }
            let users: Option<[String; 2]> = match d.users.as_slice() {
                [a, b] if a != b => Some([a.clone(), b.clone()]),
                [a, b] if a == b => {
                    v.problem(
                        span.clone(),
                        format!("{pkey}.users"),
                        format!(
                            "names \"{a}\" twice: the two users alternate, so they must differ"
                        ),
                    );
                    None
                }
                other => {
                    v.problem(span.clone(), format!("{pkey}.users"), format!("lists {} user(s): give exactly two, which take turns (one keeps working while the other gets the new password)", other.len()));
                    None
                }
            };
            let admin_url = secret_source(
                v,
                &pkey,
                span.clone(),
                "admin-url",
                [d.admin_url_file.as_ref(), d.admin_url_credential.as_ref()],
                Need::Required,
                strings,
            );
            let config = DatabaseConfig {
                admin_url: admin_url??,
                users: users?,
                host: d.host.clone(),
                port,
                database: d.database.clone(),
                timeout,
            };
            if kind == "postgres" {
                ProviderConfig::Postgres(config)
            } else {
                ProviderConfig::Mysql(config)
            }
        }
        RawProvider::Redis(r) => {
            let pkey = format!("{key}: provider (redis)");
            let timeout = provider_timeout(
                v,
                &format!("{pkey}.timeout"),
                span.clone(),
                r.timeout.as_ref(),
                Duration::from_secs(30),
            );
            let port = provider_port(v, &format!("{pkey}.port"), span.clone(), r.port);
            if !deferred(&r.user) {
                provider_identifier(v, &format!("{pkey}.user"), span.clone(), &r.user);
            }
            if !deferred(&r.user) && r.user.chars().any(char::is_whitespace) {
                v.problem(
                    span.clone(),
                    format!("{pkey}.user"),
                    "holds whitespace, which Redis ACL user names cannot",
                );
            }
            let admin_url = secret_source(
                v,
                &pkey,
                span.clone(),
                "admin-url",
                [r.admin_url_file.as_ref(), r.admin_url_credential.as_ref()],
                Need::Required,
                strings,
            );
            ProviderConfig::Redis(RedisConfig {
                admin_url: admin_url??,
                user: r.user.clone(),
                host: r.host.clone(),
                port,
                timeout,
            })
        }
    };
    (v.problems.len() == before).then_some(provider)
}

/// Whether a provider must have the secret [`secret_source`] checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    Required,
    Optional,
}

/// Where a provider's secret is kept: exactly one of `{stem}-file` and `{stem}-credential`
/// (`written`, in that order). `Ok(None)`: neither, for an optional one; `None`: a problem
/// was reported. A value with a brace is a template, whose rendering is checked per resource.
fn secret_source(
    v: &mut Validator,
    pkey: &str,
    span: Option<Range<usize>>,
    stem: &str,
    written: [Option<&String>; 2],
    need: Need,
    strings: Strings,
) -> Option<Option<SecretSource>> {
    let deferred = strings == Strings::DeferBraced;
    let braced = |s: &str| deferred && (s.contains('{') || s.contains('}'));
    let (file_key, credential_key) = (format!("{stem}-file"), format!("{stem}-credential"));
    match written {
        [Some(_), Some(_)] => {
            v.problem(
                span,
                pkey,
                format!("sets both {file_key} and {credential_key}: set exactly one"),
            );
            None
        }
        [None, None] if need == Need::Required => {
            v.problem(
                span,
                pkey,
                format!(
                    "has neither {file_key} nor {credential_key}: set exactly one (a file only \
                     its owner may read, or the name of a systemd credential from the unit's \
                     LoadCredential=)"
                ),
            );
            None
        }
        [None, None] => Some(None),
        [Some(file), None] if file.trim().is_empty() => {
            v.problem(span, format!("{pkey}.{file_key}"), "is empty");
            None
        }
        [Some(file), None] => Some(Some(SecretSource::File(PathBuf::from(file)))),
        [None, Some(name)] if !braced(name) && !is_credential_name(name) => {
            v.problem(
                span,
                format!("{pkey}.{credential_key}"),
                not_a_credential_name(name),
            );
            None
        }
        [None, Some(name)] => Some(Some(SecretSource::Credential(name.clone()))),
    }
}

fn check_field_list(v: &mut Validator, key: &str, span: Option<Range<usize>>, fields: &[String]) {
    if fields.is_empty() {
        v.problem(
            span.clone(),
            key,
            "is empty: list the field names the provider returns, or leave fields out",
        );
    }
    for f in fields {
        if f.is_empty()
            || !f
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            v.problem(
                span.clone(),
                key,
                format!("\"{f}\" is not a field name (letters, digits, `_`, `-`)"),
            );
        }
    }
}

fn provider_timeout(
    v: &mut Validator,
    key: &str,
    span: Option<Range<usize>>,
    raw: Option<&String>,
    default: Duration,
) -> Duration {
    match raw {
        None => default,
        Some(t) => match parse_duration(t) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                v.problem(span, key, "must be more than 0s");
                default
            }
            Err(why) => {
                v.problem(span, key, why);
                default
            }
        },
    }
}

fn provider_port(
    v: &mut Validator,
    key: &str,
    span: Option<Range<usize>>,
    raw: Option<i64>,
) -> Option<u16> {
    let port = raw?;
    match u16::try_from(port) {
        Ok(p) if p > 0 => Some(p),
        _ => {
            v.problem(span, key, format!("{port} is out of range 1-65535"));
            None
        }
    }
}

fn provider_identifier(v: &mut Validator, key: &str, span: Option<Range<usize>>, name: &str) {
    if name.is_empty() || name.len() > 63 || name.chars().any(|c| c.is_control()) {
        v.problem(
            span,
            key,
            format!(
                "\"{name}\" is not a usable user name (1-63 characters, no control characters)"
            ),
        );
    }
}
