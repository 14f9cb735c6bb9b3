//! The config file: reading, validating, and the checked types running code uses.
//!
//! Two steps, as in ripgrep: [`raw`] deserializes with serde (`deny_unknown_fields`,
//! kebab-case) straight from the text, so syntax errors and unknown keys keep their line and
//! column; [`validate`] turns that into the [`Config`] of [`types`], naming the key of every
//! semantic error. Running code never sees an unchecked config, and a config with any problem
//! is refused whole.

mod canonical;
mod discovery;
mod mask;
mod provider;
mod raw;
mod scope;
mod server;
mod types;
mod validate;

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

pub use discovery::DEFAULT_EVERY;
pub use scope::{InstallationScope, ResourceScope, ResourceSelector};
pub use server::{DEFAULT_ISSUER, DEFAULT_JWKS_URL};
pub use types::*;

/// One thing wrong with a config, located as precisely as the TOML allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based line and column of the offending value, when known.
    pub line: Option<usize>,
    pub column: Option<usize>,
    /// The key, as a user would find it: `policies[0] "orders-db": schedule`.
    pub key: String,
    pub message: String,
    /// The config line the problem is on, for context.
    pub snippet: Option<String>,
}

impl Problem {
    /// A problem at `span` of `source`. The snippet and the message are masked (see
    /// [`mask`]): neither may echo a secret someone wrote into the config.
    fn at(source: &Source, span: Option<Range<usize>>, key: String, message: String) -> Problem {
        let (line, column, snippet) = match span {
            Some(span) => {
                let (line, column) = line_column(source.text, span.start);
                (Some(line), Some(column), source.snippet(line))
            }
            None => (None, None, None),
        };
        Problem {
            line,
            column,
            key,
            message: mask::mask_message(&message),
            snippet,
        }
    }
}

/// The config text problems point into, with its masked lines for snippets (computed once,
/// when the first problem needs one).
struct Source<'a> {
    text: &'a str,
    masked: std::cell::OnceCell<Vec<String>>,
}

impl<'a> Source<'a> {
    fn new(text: &'a str) -> Self {
        Source {
            text,
            masked: std::cell::OnceCell::new(),
        }
    }

    /// Line `line` (1-based), masked, without trailing whitespace.
    fn snippet(&self, line: usize) -> Option<String> {
        self.masked
            .get_or_init(|| mask::mask_source(self.text))
            .get(line.checked_sub(1)?)
            .map(|l| l.trim_end().to_owned())
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(source.len());
    let before = source.get(..offset).unwrap_or(source);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    (line, column)
}

/// Why a config was refused. Every variant means: nothing was done, exit 2.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config {}: {source}", path.display())
            }
            ConfigError::Invalid { path, problems } => {
                let n = problems.len();
                write!(
                    f,
                    "config {} is invalid ({n} problem{}); nothing was done",
                    path.display(),
                    if n == 1 { "" } else { "s" }
                )?;
                for p in problems {
                    write!(f, "\n{}", path.display())?;
                    if let (Some(line), Some(column)) = (p.line, p.column) {
                        write!(f, ":{line}:{column}")?;
                    }
                    write!(f, ": ")?;
                    if !p.key.is_empty() {
                        write!(f, "{}: ", p.key)?;
                    }
                    write!(f, "{}", p.message)?;
                    if let (Some(line), Some(snippet)) = (p.line, &p.snippet) {
                        write!(f, "\n  {line:>4} | {snippet}")?;
                    }
                }
                Ok(())
            }
        }
    }
}

impl ConfigError {
    pub fn problems(&self) -> &[Problem] {
        match self {
            ConfigError::Invalid { problems, .. } => problems,
            ConfigError::Read { .. } => &[],
        }
    }
}

/// The table a byte offset lies in, named as validation names keys (`policies[1]`,
/// `policies[0].secrets[2]`, `vercel`), or "" at the top level. serde's errors (unknown keys,
/// wrong types) carry a position but not the path, so it is recovered from the headers above.
fn enclosing_table(source: &str, offset: usize) -> String {
    let before = source.get(..offset.min(source.len())).unwrap_or(source);
    // Each array-of-tables header seen so far, with how many times; a parent header resets
    // the counts of its children (a new [[policies]] starts its secrets at 0).
    let mut counts: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    let mut current: Vec<(String, Option<usize>)> = Vec::new();
    for line in before.lines() {
        let line = line.trim();
        let (name, is_array) = if let Some(inner) = line.strip_prefix("[[") {
            (inner.split("]]").next().unwrap_or("").trim(), true)
        } else if let Some(inner) = line.strip_prefix('[') {
            (inner.split(']').next().unwrap_or("").trim(), false)
        } else {
            continue;
        };
        let parts: Vec<&str> = name.split('.').map(str::trim).collect();
        if is_array {
            let n = counts.entry(name.to_owned()).or_insert(0);
            *n += 1;
            let index = *n - 1;
            counts.retain(|k, _| !k.starts_with(&format!("{name}.")));
            let mut path: Vec<(String, Option<usize>)> = Vec::new();
            for (i, part) in parts.iter().enumerate() {
                let last = i + 1 == parts.len();
                let prefix = parts[..=i].join(".");
                let idx = if last {
                    Some(index)
                } else {
                    counts.get(&prefix).map(|n| n.saturating_sub(1))
                };
                path.push(((*part).to_owned(), idx));
            }
            current = path;
        } else {
            current = parts.iter().map(|p| ((*p).to_owned(), None)).collect();
        }
    }
    current
        .iter()
        .map(|(name, idx)| match idx {
            Some(i) => format!("{name}[{i}]"),
            None => name.clone(),
        })
        .collect::<Vec<_>>()
        .join(".")
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(path, &text)
}

/// Validates config text; `path` is only used in messages and [`Config::path`].
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let source = Source::new(text);
    let refused = |e: toml::de::Error| {
        let key = e
            .span()
            .map(|span| enclosing_table(text, span.start))
            .unwrap_or_default();
        ConfigError::Invalid {
            path: path.to_owned(),
            problems: vec![Problem::at(
                &source,
                e.span(),
                key,
                e.message().trim_end().to_owned(),
            )],
        }
    };
    let raw: raw::RawConfig = toml::from_str(text).map_err(refused)?;
    // The same text as plain tables: what the user wrote, for the digests (`canonical`).
    let written: toml::Table = toml::from_str(text).map_err(refused)?;
    validate::validate(path, &source, raw, &written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enclosing_table_names_array_entries() {
        let src = "[vercel]\na = 1\n[[policies]]\nx = 1\n[[policies.secrets]]\ny = 1\n[[policies]]\nz = 1\n[[policies.secrets]]\nw = 1\n";
        let at = |needle: &str| enclosing_table(src, src.find(needle).unwrap());
        assert_eq!(at("a = 1"), "vercel");
        assert_eq!(at("x = 1"), "policies[0]");
        assert_eq!(at("y = 1"), "policies[0].secrets[0]");
        assert_eq!(at("z = 1"), "policies[1]");
        assert_eq!(at("w = 1"), "policies[1].secrets[0]");
        assert_eq!(enclosing_table("top = 1", 0), "");
    }

    #[test]
    fn line_column_counts_characters() {
        let src = "a = 1\nbé = \"x\"\n";
        assert_eq!(line_column(src, 0), (1, 1));
        assert_eq!(line_column(src, 6), (2, 1));
        // 'é' is two bytes but one column.
        assert_eq!(line_column(src, 11), (2, 5));
    }
}
