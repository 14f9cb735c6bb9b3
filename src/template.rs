//! Secret templates: `postgres://{username}:{password}@db.example.com/orders`.
//!
//! A template is parsed once, at config load, into literal text and field references, so a
//! bad template is a config error rather than a failed rotation. `{name}` is replaced by the
//! provider's field `name`; `{{` and `}}` are literal braces. Rendering produces a
//! `SecretString` directly: the rendered value is never an ordinary `String` that outlives it.

use std::collections::BTreeSet;

use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroize;

use crate::secret::Fields;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Field(String),
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
                    if !name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                    {
                        return Err(TemplateError::BadFieldName {
                            name,
                            column: i + 1,
                        });
                    }
                    if !literal.is_empty() {
                        segments.push(Segment::Literal(std::mem::take(&mut literal)));
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
                Segment::Literal(_) => None,
            })
            .collect()
    }

    /// Renders the template over a provider's fields.
    pub fn render(&self, fields: &Fields) -> Result<SecretString, MissingField> {
        let mut out = String::new();
        for segment in &self.segments {
            match segment {
                Segment::Literal(text) => out.push_str(text),
                Segment::Field(name) => match fields.get(name) {
                    Some(value) => out.push_str(value.expose_secret()),
                    None => {
                        // `out` may already hold part of a value: wipe it before returning.
                        out.zeroize();
                        return Err(MissingField {
                            field: name.clone(),
                            returned: fields.keys().cloned().collect::<Vec<_>>().join(", "),
                        });
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
            assert_eq!(t.render(&f).unwrap().expose_secret(), want, "{template}");
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
            .render(&f)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the provider returned no field `username` (it returned: password)"
        );
        assert!(!format!("{err:?}").contains("canary"));
    }
}
