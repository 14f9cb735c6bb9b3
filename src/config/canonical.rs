//! What the user wrote for a policy and its installation, in a canonical form, and the digest
//! over it ([`Policy::digest`]) that says whether a policy changed.
//!
//! A permanently failed policy restarts when its config changes, so the digest must change
//! exactly when what the user wrote changes: not when a crate upgrade changes how a parsed
//! value prints (`Debug` of a cron schedule), nor when the file is reformatted. So it hashes
//! the tables as TOML parsed them, before any interpretation: the schedule as written, the
//! provider table as written, every key the user set and none that a default filled in.
//!
//! The canonical form is this module's own, so no dependency can change it: a table is `{`
//! then its entries sorted by key (as bytes), each `"key":value`, separated by `,`, then `}`;
//! an array is `[` values separated by `,` `]`; a string is quoted with `"` and `\` escaped
//! and every control character written `\u{XX}`; integers in decimal; floats as Rust's `{:?}`
//! (shortest round-trip); booleans `true`/`false`; dates as TOML writes them. Inline tables
//! and `[sub.tables]`, key order, whitespace, comments and quoting style all vanish.
//! Changing this form restarts every stopped policy once: the pinned digest in the tests
//! guards against doing it by accident.

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use super::types::{Installation, Policy};

/// Names the canonical form inside the hash, so a deliberate new form can never collide
/// with this one.
const DIGEST_DOMAIN: &[u8] = b"vercel-secret-rotator policy digest v1\n";

/// The canonical text of `value` (see the module doc).
pub(super) fn canonical(value: &toml::Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

/// The canonical text of the table at `path` in `document` (`["policies", "0"]` indexes an
/// array), or `{}` when there is none.
pub(super) fn canonical_at(document: &toml::Table, path: &[&str]) -> String {
    let mut value: Option<&toml::Value> = None;
    for (i, part) in path.iter().enumerate() {
        value = if i == 0 {
            document.get(*part)
        } else {
            match value {
                Some(toml::Value::Table(t)) => t.get(*part),
                Some(toml::Value::Array(a)) => part.parse::<usize>().ok().and_then(|n| a.get(n)),
                _ => None,
            }
        };
    }
    value.map_or_else(|| "{}".to_owned(), canonical)
}

fn write_value(out: &mut String, value: &toml::Value) {
    match value {
        toml::Value::String(s) => write_string(out, s),
        toml::Value::Integer(n) => {
            let _ = write!(out, "{n}");
        }
        toml::Value::Float(f) => {
            let _ = write!(out, "{f:?}");
        }
        toml::Value::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        toml::Value::Datetime(d) => write_string(out, &d.to_string()),
        toml::Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        toml::Value::Table(table) => {
            let mut entries: Vec<(&String, &toml::Value)> = table.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, key);
                out.push(':');
                write_value(out, value);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

impl Policy {
    /// A digest of what the user wrote for this policy and for `installation` (its
    /// installation): 16 hex digits (64 bits of SHA-256) over their canonical forms. Equal
    /// for the same tables however they are formatted; different when any key or value in
    /// either changes. A permanently failed record restarts when it changes.
    pub fn digest(&self, installation: &Installation) -> String {
        let mut hasher = Sha256::new();
        hasher.update(DIGEST_DOMAIN);
        for part in [&self.written, &installation.written] {
            // Length-prefixed, so the boundary between the two parts is unambiguous.
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part.as_bytes());
        }
        hasher.finalize()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, parse};

    const BASE: &str = r#"
[installations.acme]
id = "icfg_1"
token-env = "ACME_TOKEN"

[[policies]]
name = "orders-db"
installation = "acme"
resources = ["store_abc"]
schedule = "0 3 * * 0"
grace = "24h"
provider = { kind = "command", command = ["/usr/local/libexec/acme-rotate", "--db", "orders"], timeout = "60s" }

[[policies.secrets]]
name = "PASSWORD"
value = "{password}"
"#;

    fn config(text: &str) -> Config {
        parse(Path::new("digest.toml"), text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn digest(text: &str) -> String {
        let config = config(text);
        let policy = &config.policies[0];
        let (name, _) = policy.configured().unwrap();
        policy.digest(&config.installations[name])
    }

    #[test]
    fn the_digest_ignores_key_order_whitespace_comments_and_table_style() {
        let reordered = r#"
# the same policy, written differently
[[policies]]
provider.timeout   = "60s"
provider.command = [ "/usr/local/libexec/acme-rotate" , "--db" , 'orders' ]
provider.kind = "command"
grace="24h"
schedule   =   '0 3 * * 0'
resources = [
  "store_abc",
]
installation = "acme"
name = "orders-db"

  [[policies.secrets]]
  value = "{password}"   # a template
  name = "PASSWORD"

[installations.acme]
token-env = "ACME_TOKEN"
id = "icfg_1"
"#;
        assert_eq!(digest(BASE), digest(reordered));
        // Another policy or installation elsewhere in the file is none of its business.
        let more =
            format!("{BASE}\n[installations.other]\nid = \"icfg_2\"\ntoken-env = \"OTHER\"\n");
        assert_eq!(digest(BASE), digest(&more));
    }

    #[test]
    fn the_digest_changes_with_any_setting_of_the_policy_or_its_installation() {
        let base = digest(BASE);
        let changes = [
            ("grace = \"24h\"", "grace = \"25h\""),
            ("schedule = \"0 3 * * 0\"", "schedule = \"0 4 * * 0\""),
            // The same times in another spelling: the digest follows what was written.
            ("schedule = \"0 3 * * 0\"", "schedule = \"0 3 * * 7\""),
            ("timeout = \"60s\"", "timeout = \"61s\""),
            ("\"--db\", \"orders\"", "\"--db\", \"invoices\""),
            ("value = \"{password}\"", "value = \"pw={password}\""),
            ("resources = [\"store_abc\"]", "resources = [\"store_abd\"]"),
            ("token-env = \"ACME_TOKEN\"", "token-env = \"ACME_TOKEN_2\""),
            ("id = \"icfg_1\"", "id = \"icfg_9\""),
            ("grace = \"24h\"", "grace = \"24h\"\njitter = \"0s\""),
        ];
        for (from, to) in changes {
            assert!(BASE.contains(from), "{from}");
            let changed = BASE.replacen(from, to, 1);
            assert_ne!(digest(&changed), base, "{from} -> {to}");
        }
    }

    #[test]
    fn the_digest_of_a_fixed_config_is_pinned() {
        // If this fails, the canonical form or the hash changed, and every daemon upgraded
        // to this code restarts every stopped policy once. Change it only on purpose.
        assert_eq!(digest(BASE), "57fe25b95818d352");
    }

    #[test]
    fn canonical_form_sorts_keys_and_escapes_strings() {
        let table: toml::Table = toml::from_str(
            "b = [1, 2.5, true]\na = { y = \"q\\\"\\\\\\u0001\", x = 1979-05-27T07:32:00Z }\n",
        )
        .unwrap();
        assert_eq!(
            canonical(&toml::Value::Table(table)),
            r#"{"a":{"x":"1979-05-27T07:32:00Z","y":"q\"\\\u{1}"},"b":[1,2.5,true]}"#
        );
    }
}
