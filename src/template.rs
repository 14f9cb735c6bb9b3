//! Templates: `postgres://{username}:{password}@{resource.id}.db.example.com/orders`.
//!
//! A template is parsed once, at config load, into literal text, field references and
//! resource variables, so a bad template is a config error rather than a failed rotation.
//! `{name}` is replaced by the provider's field `name`; `{installation.id}`, `{resource.id}`,
//! `{resource.internal_id}`, `{resource.name}`, `{resource.product_id}` and
//! `{resource.metadata.KEY}` by what is known of the resource ([`ResourceInfo`]); `{{` and
//! `}}` are literal braces. Secret values render into a `SecretString` directly: the rendered
//! value is never an ordinary `String` that outlives it. Provider-table strings (paths, user
//! names, arguments) use variables only and render into plain text ([`Template::render_text`]).
//!
//! What a resource lacks (`{resource.metadata.tier}` on a resource without it,
//! `{resource.name}` on one the config lists by id) is known only per resource:
//! [`Template::check_resource`] says so before anything is made, as an [`UnboundVariable`].

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

use crate::resource::ResourceInfo;
use crate::secret::Fields;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Field(String),
    Variable(Variable),
}

/// The variables every template may use, for messages.
pub const VARIABLES: &str = "{installation.id}, {resource.id}, {resource.internal_id}, {resource.name}, {resource.product_id}, {resource.metadata.KEY}";

/// What a template may know of the resource it is rendered for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Variable {
    InstallationId,
    ResourceId,
    ResourceInternalId,
    ResourceName,
    ResourceProductId,
    ResourceMetadata(String),
}

impl Variable {
    /// `installation.id`, `resource.metadata.tier`, ...: `None` for any other name.
    fn parse(name: &str) -> Option<Variable> {
        Some(match name {
            "installation.id" => Variable::InstallationId,
            "resource.id" => Variable::ResourceId,
            "resource.internal_id" => Variable::ResourceInternalId,
            "resource.name" => Variable::ResourceName,
            "resource.product_id" => Variable::ResourceProductId,
            _ => {
                let key = name.strip_prefix("resource.metadata.")?;
                let ok = !key.is_empty()
                    && key
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !ok {
                    return None;
                }
                Variable::ResourceMetadata(key.to_owned())
            }
        })
    }

    /// Whether every resource has it, including one the config lists by id only.
    pub fn always_known(&self) -> bool {
        matches!(self, Variable::InstallationId | Variable::ResourceId)
    }

    /// Its value for `resource`, or why there is none.
    fn value<'a>(&self, resource: &'a ResourceInfo) -> Result<Cow<'a, str>, UnboundVariable> {
        let known = match self {
            Variable::InstallationId => Some(Cow::Borrowed(&*resource.installation_id)),
            Variable::ResourceId => Some(Cow::Borrowed(&*resource.id)),
            Variable::ResourceInternalId => resource.internal_id.as_deref().map(Cow::Borrowed),
            Variable::ResourceName => resource.name.as_deref().map(Cow::Borrowed),
            Variable::ResourceProductId => resource.product_id.as_deref().map(Cow::Borrowed),
            Variable::ResourceMetadata(key) => resource
                .metadata
                .get(key)
                .map(|v| Cow::Owned(v.to_string())),
        };
        known.ok_or_else(|| {
            let why = if !resource.is_discovered() {
                "the config lists it by id, so only {installation.id} and {resource.id} are known of it (the rest comes from discovery)".to_owned()
            } else if let Variable::ResourceMetadata(key) = self {
                let keys: Vec<&str> = resource.metadata.keys().map(String::as_str).collect();
                format!(
                    "its metadata has no key `{key}` (it has: {})",
                    if keys.is_empty() {
                        "none".to_owned()
                    } else {
                        keys.join(", ")
                    }
                )
            } else {
                "Vercel's listing gave none".to_owned()
            };
            UnboundVariable {
                variable: self.to_string(),
                resource: resource.id.to_string(),
                installation: resource.installation_id.to_string(),
                why,
            }
        })
    }
}

impl fmt::Display for Variable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Variable::InstallationId => f.write_str("{installation.id}"),
            Variable::ResourceId => f.write_str("{resource.id}"),
            Variable::ResourceInternalId => f.write_str("{resource.internal_id}"),
            Variable::ResourceName => f.write_str("{resource.name}"),
            Variable::ResourceProductId => f.write_str("{resource.product_id}"),
            Variable::ResourceMetadata(key) => write!(f, "{{resource.metadata.{key}}}"),
        }
    }
}

/// A template names a variable the resource it is rendered for has no value for. Permanent
/// for that resource (until the config or the resource changes); other resources go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable} has no value for resource \"{resource}\" (installation {installation}): {why}")]
pub struct UnboundVariable {
    pub variable: String,
    pub resource: String,
    pub installation: String,
    pub why: String,
}

/// Rendering a secret value failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    MissingField(#[from] MissingField),
    #[error(transparent)]
    Unbound(#[from] UnboundVariable),
}

/// A parsed template. Its text comes from the config and is not secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    segments: Vec<Segment>,
}

/// What is wrong with a template. Positions are 1-based character columns in the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unclosed `{{` at column {column}: write `{{{{` for a literal brace")]
    Unclosed { column: usize },
    #[error("`}}` at column {column} closes nothing: write `}}}}` for a literal brace")]
    UnmatchedClose { column: usize },
    #[error("empty field name `{{}}` at column {column}")]
    EmptyField { column: usize },
    #[error("field name `{name}` at column {column} may hold only letters, digits, `_` and `-`")]
    BadFieldName { name: String, column: usize },
    #[error("`{{{name}}}` at column {column} is not a variable: use {VARIABLES}")]
    UnknownVariable { name: String, column: usize },
}

/// Rendering found a field the provider did not return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the provider returned no field `{field}` (it returned: {returned})")]
pub struct MissingField {
    pub field: String,
    /// The names the provider did return, comma-separated (names are not secret).
    pub returned: String,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut segments = Vec::new();
        let mut literal = String::new();
        let mut chars = source.chars().enumerate().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    literal.push('}');
                }
                '}' => return Err(TemplateError::UnmatchedClose { column: i + 1 }),
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for (_, c) in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        if c == '{' {
                            return Err(TemplateError::Unclosed { column: i + 1 });
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(TemplateError::Unclosed { column: i + 1 });
                    }
                    if name.is_empty() {
                        return Err(TemplateError::EmptyField { column: i + 1 });
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
                    }
                    // A dotted name is a variable (`resource.id`); any other, a field.
                    if name.contains('.') {
                        match Variable::parse(&name) {
                            Some(variable) => segments.push(Segment::Variable(variable)),
                            None => {
                                return Err(TemplateError::UnknownVariable {
                                    name,
                                    column: i + 1,
                                });
                            }
                        }
                        continue;
                    }
                    if !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(TemplateError::BadFieldName {
                            name,
                            column: i + 1,
                        });
                    }
                    segments.push(Segment::Field(name));
                }
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            segments.push(Segment::Literal(literal));
        }
        Ok(Template {
            source: source.to_owned(),
            segments,
        })
    }

    /// The template as written in the config.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The field names it refers to, each once, sorted.
    pub fn fields(&self) -> BTreeSet<&str> {
        self.segments
            .iter()
            .filter_map(|s| match s {
                Segment::Field(name) => Some(name.as_str()),
                Segment::Literal(_) | Segment::Variable(_) => None,
            })
            .collect()
    }

    /// The resource variables it uses, in order, repeats included.
    pub fn variables(&self) -> impl Iterator<Item = &Variable> {
        self.segments.iter().filter_map(|s| match s {
            Segment::Variable(v) => Some(v),
            Segment::Literal(_) | Segment::Field(_) => None,
        })
    }

    /// Whether it differs from resource to resource.
    pub fn has_variables(&self) -> bool {
        self.variables().next().is_some()
    }

    /// Whether `resource` has a value for each of its variables.
    pub fn check_resource(&self, resource: &ResourceInfo) -> Result<(), UnboundVariable> {
        self.variables()
            .try_for_each(|v| v.value(resource).map(drop))
    }

    /// Renders a template of a provider table, which names no field (the config refuses
    /// them there), over `resource`. The text is not secret.
    pub fn render_text(&self, resource: &ResourceInfo) -> Result<String, UnboundVariable> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable(v) => out.push_str(&v.value(resource)?),
                // Unreachable after validation; written back as it was rather than lost.
                Segment::Field(name) => {
                    out.push('{');
                    out.push_str(name);
                    out.push('}');
                }
            }
        }
        Ok(out)
    }

    /// Renders the template over a provider's fields and the resource it is pushed to.
    pub fn render(
        &self,
        fields: &Fields,
        resource: &ResourceInfo,
    ) -> Result<SecretString, RenderError> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Variable(v) => match v.value(resource) {
                    Ok(value) => out.push_str(&value),
                    Err(e) => {
                        out.zeroize();
                        return Err(e.into());
                    }
                },
                Segment::Field(name) => match fields.get(name) {
                    Some(value) => out.push_str(value.expose_secret()),
                    None => {
                        // `out` may already hold part of a value: wipe it before returning.
                        out.zeroize();
                        return Err(MissingField {
                            field: name.clone(),
                            returned: fields.keys().cloned().collect::<Vec<_>>().join(", "),
                        }
                        .into());
                    }
                },
            }
        }
        Ok(SecretString::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn configured() -> ResourceInfo {
        ResourceInfo::configured("icfg_1", "res_1")
    }

    fn discovered() -> ResourceInfo {
        let mut info = configured();
        info.internal_id = Some("int_9".into());
        info.name = Some("orders".into());
        info.product_id = Some("prod_pg".into());
        info.status = Some("ready".into());
        info.metadata.insert(
            "tier".into(),
            crate::resource::MetadataValue::String("pro".into()),
        );
        info
    }

    #[test]
    fn renders_resource_variables_beside_fields() {
        let f = fields(&[("password", "pw")]);
        let t = Template::parse(
            "{installation.id}/{resource.id}/{resource.internal_id}/{resource.name}/{resource.product_id}/{resource.metadata.tier}:{password}",
        )
        .unwrap();
        assert_eq!(
            t.render(&f, &discovered()).unwrap().expose_secret(),
            "icfg_1/res_1/int_9/orders/prod_pg/pro:pw"
        );
        assert!(t.has_variables());
        assert_eq!(t.fields().into_iter().collect::<Vec<_>>(), ["password"]);
        let text = Template::parse("/etc/admin/{resource.id}.url").unwrap();
        assert_eq!(
            text.render_text(&configured()).unwrap(),
            "/etc/admin/res_1.url"
        );
        assert!(!Template::parse("{password}").unwrap().has_variables());
    }

    #[test]
    fn a_value_the_resource_lacks_is_an_error_naming_it_and_the_resource() {
        let t = Template::parse("{resource.metadata.size}").unwrap();
        assert_eq!(
            t.check_resource(&discovered()).unwrap_err().to_string(),
            "{resource.metadata.size} has no value for resource \"res_1\" (installation icfg_1): its metadata has no key `size` (it has: tier)"
        );
        let t = Template::parse("{resource.name}").unwrap();
        let err = t.render_text(&configured()).unwrap_err().to_string();
        assert!(
            err.starts_with("{resource.name} has no value for resource \"res_1\" (installation icfg_1): the config lists it by id"),
            "{err}"
        );
        assert!(
            Template::parse("{installation.id}{resource.id}")
                .unwrap()
                .check_resource(&configured())
                .is_ok()
        );
    }

    #[test]
    fn refuses_unknown_variables() {
        for name in [
            "resource.foo",
            "installation.name",
            "resource.metadata.",
            "resource.metadata.a b",
            "x.y",
        ] {
            let err = Template::parse(&format!("a{{{name}}}")).unwrap_err();
            assert!(
                matches!(err, TemplateError::UnknownVariable { column: 2, .. }),
                "{name}: {err:?}"
            );
        }
        assert_eq!(
            Template::parse("{resource.foo}").unwrap_err().to_string(),
            "`{resource.foo}` at column 1 is not a variable: use {installation.id}, {resource.id}, {resource.internal_id}, {resource.name}, {resource.product_id}, {resource.metadata.KEY}"
        );
    }

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
            .collect()
    }

    #[test]
    fn renders_fields_and_literal_braces() {
        let f = fields(&[("username", "orders_a"), ("password", "p@ss{1}")]);
        let cases = [
            ("{password}", "p@ss{1}"),
            (
                "postgres://{username}:{password}@db/orders",
                "postgres://orders_a:p@ss{1}@db/orders",
            ),
            ("{{literal}}", "{literal}"),
            ("{{{password}}}", "{p@ss{1}}"),
            ("no fields", "no fields"),
            ("", ""),
            ("ünïcode {username} ✓", "ünïcode orders_a ✓"),
        ];
        for (template, want) in cases {
            let t = Template::parse(template).unwrap();
            assert_eq!(
                t.render(&f, &configured()).unwrap().expose_secret(),
                want,
                "{template}"
            );
        }
    }

    #[test]
    fn lists_fields_once() {
        let t = Template::parse("{a}{b}{a}{{c}}").unwrap();
        assert_eq!(t.fields().into_iter().collect::<Vec<_>>(), vec!["a", "b"]);
    }

    #[test]
    fn refuses_bad_templates_with_a_column() {
        let cases = [
            ("abc{password", TemplateError::Unclosed { column: 4 }),
            ("abc}", TemplateError::UnmatchedClose { column: 4 }),
            ("x{}", TemplateError::EmptyField { column: 2 }),
            ("{a{b}}", TemplateError::Unclosed { column: 1 }),
            (
                "{pass word}",
                TemplateError::BadFieldName {
                    name: "pass word".into(),
                    column: 1,
                },
            ),
        ];
        for (template, want) in cases {
            assert_eq!(Template::parse(template).unwrap_err(), want, "{template}");
        }
    }

    #[test]
    fn error_messages_are_pinned() {
        assert_eq!(
            Template::parse("a{b").unwrap_err().to_string(),
            "unclosed `{` at column 2: write `{{` for a literal brace"
        );
        assert_eq!(
            Template::parse("a}b").unwrap_err().to_string(),
            "`}` at column 2 closes nothing: write `}}` for a literal brace"
        );
    }

    #[test]
    fn missing_field_names_what_was_returned_but_no_value() {
        let f = fields(&[("password", "canary-value-123")]);
        let err = Template::parse("{username}:{password}")
            .unwrap()
            .render(&f, &configured())
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the provider returned no field `username` (it returned: password)"
        );
        assert!(!format!("{err:?}").contains("canary"));
    }
}
