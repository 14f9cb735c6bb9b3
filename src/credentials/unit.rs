//! The unit file syntax (systemd.syntax(7)) as far as `check` needs it: the credential
//! settings of the `[Service]` section (`LoadCredential=`, `LoadCredentialEncrypted=`,
//! `SetCredential=`, `SetCredentialEncrypted=`, `ImportCredential=`), with their file and
//! line, applied in the order systemd applies them (an empty assignment resets the list, a
//! later line for an id replaces an earlier one), and the specifiers their values may use.
//!
//! A `SetCredential=` value is a secret someone put in a unit: it is never kept, only its id.

use std::path::Path;

/// Which credential setting a line is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Load,
    LoadEncrypted,
    Set,
    SetEncrypted,
    Import,
}

impl Kind {
    fn from_key(key: &str) -> Option<Kind> {
        match key {
            "LoadCredential" => Some(Kind::Load),
            "LoadCredentialEncrypted" => Some(Kind::LoadEncrypted),
            "SetCredential" => Some(Kind::Set),
            "SetCredentialEncrypted" => Some(Kind::SetEncrypted),
            "ImportCredential" => Some(Kind::Import),
            _ => None,
        }
    }

    pub fn key(self) -> &'static str {
        match self {
            Kind::Load => "LoadCredential",
            Kind::LoadEncrypted => "LoadCredentialEncrypted",
            Kind::Set => "SetCredential",
            Kind::SetEncrypted => "SetCredentialEncrypted",
            Kind::Import => "ImportCredential",
        }
    }
}

/// One credential setting as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub kind: Kind,
    pub value: String,
    /// `FILE:LINE`, for messages.
    pub origin: String,
}

/// The credential settings of one unit file or drop-in, in file order. Only `[Service]`
/// counts; comments, other sections and other keys are skipped; a line ending in `\` goes
/// on on the next (comment lines in between are skipped, as systemd does).
pub fn settings(text: &str, file: &Path) -> Vec<Setting> {
    let mut out = Vec::new();
    let mut in_service = false;
    let mut lines = text.lines().enumerate();
    while let Some((index, line)) = lines.next() {
        let mut logical = line.trim().to_owned();
        if logical.starts_with('#') || logical.starts_with(';') {
            continue;
        }
        while logical.ends_with('\\') {
            logical.pop();
            logical.push(' ');
            let Some((_, next)) = lines.find(|(_, l)| {
                let l = l.trim_start();
                !(l.starts_with('#') || l.starts_with(';'))
            }) else {
                break;
            };
            logical.push_str(next.trim());
        }
        let logical = logical.trim();
        if logical.starts_with('[') && logical.ends_with(']') {
            in_service = &logical[1..logical.len() - 1] == "Service";
            continue;
        }
        if !in_service {
            continue;
        }
        let Some((key, value)) = logical.split_once('=') else {
            continue;
        };
        if let Some(kind) = Kind::from_key(key.trim()) {
            out.push(Setting {
                kind,
                value: value.trim().to_owned(),
                origin: format!("{}:{}", file.display(), index + 1),
            });
        }
    }
    out
}

/// A `LoadCredential=` or `LoadCredentialEncrypted=` line, in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    pub id: String,
    /// The source as systemd reads it (specifiers expanded; the id when none is written), or
    /// why `check` cannot tell.
    pub path: Result<String, String>,
    pub encrypted: bool,
    /// The line as written, with its `FILE:LINE`: `LoadCredential=a:/etc/a (FILE:3)`.
    pub declared: String,
}

/// A `SetCredential=` or `SetCredentialEncrypted=` line in effect: its id, never its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub id: String,
    pub encrypted: bool,
    pub origin: String,
}

/// An `ImportCredential=` line in effect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    pub glob: String,
    pub origin: String,
}

/// What a unit's files declare, after systemd's rules.
#[derive(Debug, Default, Clone)]
pub struct Declarations {
    pub load: Vec<Load>,
    pub set: Vec<Set>,
    pub import: Vec<Import>,
}

impl Declarations {
    /// Applies one setting, in file order. The unit is `unit` (`x.service`), for specifiers.
    pub fn apply(&mut self, setting: &Setting, unit: &str) {
        let value = setting.value.as_str();
        match setting.kind {
            Kind::Load | Kind::LoadEncrypted => {
                // Both kinds share one list in systemd: an empty one of either resets both.
                if value.is_empty() {
                    self.load.clear();
                    return;
                }
                let (id, path) = value.split_once(':').unwrap_or((value, ""));
                let declared = format!("{}={value} ({})", setting.kind.key(), setting.origin);
                let id = match expand(id, unit) {
                    Ok(id) => id,
                    Err(why) => {
                        // systemd ignores a line whose id it cannot make; its name is unknown.
                        self.load.push(Load {
                            id: id.to_owned(),
                            path: Err(why),
                            encrypted: setting.kind == Kind::LoadEncrypted,
                            declared,
                        });
                        return;
                    }
                };
                let path = if path.is_empty() {
                    Ok(id.clone())
                } else {
                    expand(path, unit)
                };
                self.load.retain(|l| l.id != id);
                self.load.push(Load {
                    id,
                    path,
                    encrypted: setting.kind == Kind::LoadEncrypted,
                    declared,
                });
            }
            Kind::Set | Kind::SetEncrypted => {
                if value.is_empty() {
                    self.set.clear();
                    return;
                }
                let id = value.split_once(':').map_or(value, |(id, _)| id);
                let id = expand(id, unit).unwrap_or_else(|_| id.to_owned());
                self.set.retain(|s| s.id != id);
                self.set.push(Set {
                    id,
                    encrypted: setting.kind == Kind::SetEncrypted,
                    origin: setting.origin.clone(),
                });
            }
            Kind::Import => {
                if value.is_empty() {
                    self.import.clear();
                    return;
                }
                self.import.push(Import {
                    glob: value.to_owned(),
                    origin: setting.origin.clone(),
                });
            }
        }
    }
}

/// Expands the specifiers of systemd.unit(5) that a credential's id or path may use in a
/// system unit; an unknown one is named, not guessed.
pub fn expand(text: &str, unit: &str) -> Result<String, String> {
    let name = unit.rsplit_once('.').map_or(unit, |(n, _)| n);
    let prefix = name.split_once('@').map_or(name, |(p, _)| p);
    let instance = name.split_once('@').map_or("", |(_, i)| i);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let expanded = match chars.next() {
            Some('%') => "%",
            Some('n') => unit,
            Some('N') => name,
            Some('p') => prefix,
            Some('i' | 'I') => instance,
            Some('E') => "/etc",
            Some('S') => "/var/lib",
            Some('C') => "/var/cache",
            Some('L') => "/var/log",
            Some('t') => "/run",
            Some('T') => "/tmp",
            Some('V') => "/var/tmp",
            Some(other) => {
                return Err(format!(
                    "uses the specifier %{other}, which check does not expand"
                ));
            }
            None => return Err("ends in a lone %".to_owned()),
        };
        out.push_str(expanded);
    }
    Ok(out)
}

/// Whether `name` matches an `ImportCredential=` glob (`*`, `?`; no classes).
pub fn glob_matches(glob: &str, name: &str) -> bool {
    fn matches(g: &[char], n: &[char]) -> bool {
        match g.split_first() {
            None => n.is_empty(),
            Some(('*', rest)) => (0..=n.len()).any(|i| matches(rest, &n[i..])),
            Some(('?', rest)) => !n.is_empty() && matches(rest, &n[1..]),
            Some((c, rest)) => n.first() == Some(c) && matches(rest, &n[1..]),
        }
    }
    let g: Vec<char> = glob.chars().collect();
    let n: Vec<char> = name.chars().collect();
    matches(&g, &n)
}

#[cfg(test)]
mod tests {
    use super::*;

    const UNIT: &str = "vercel-secret-rotator.service";

    fn declarations(files: &[&str]) -> Declarations {
        let mut d = Declarations::default();
        for (i, text) in files.iter().enumerate() {
            for s in settings(text, Path::new(&format!("f{i}"))) {
                d.apply(&s, UNIT);
            }
        }
        d
    }

    #[test]
    fn only_service_settings_count_with_their_lines() {
        let text = "[Unit]\nLoadCredential=wrong:/x\n\n[Service]\n# LoadCredential=commented:/x\n; LoadCredential=too:/x\n  LoadCredential = pg-admin:/etc/credstore/pg \nExecStart=/usr/bin/x\n[Install]\nLoadCredential=also-wrong:/x\n";
        let s = settings(text, Path::new("/u.service"));
        assert_eq!(
            s,
            vec![Setting {
                kind: Kind::Load,
                value: "pg-admin:/etc/credstore/pg".into(),
                origin: "/u.service:7".into(),
            }]
        );
    }

    #[test]
    fn continued_lines_join_and_skip_comments_between() {
        let text = "[Service]\nLoadCredential=a:\\\n# a comment\n  /etc/a\n";
        let s = settings(text, Path::new("u"));
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].value, "a: /etc/a");
        assert_eq!(s[0].origin, "u:2");
    }

    #[test]
    fn drop_ins_replace_reset_and_add_in_order() {
        let d = declarations(&[
            "[Service]\nLoadCredential=a:/etc/a\nLoadCredential=b:/etc/b\nSetCredential=s:canary-value\n",
            "[Service]\nLoadCredential=a:/etc/a2\nLoadCredentialEncrypted=c\n",
            "[Service]\nLoadCredential=\nLoadCredential=d:%E/credstore/%N.d\nSetCredential=\n",
        ]);
        assert_eq!(d.load.len(), 1, "{d:?}");
        assert_eq!(d.load[0].id, "d");
        assert_eq!(
            d.load[0].path,
            Ok("/etc/credstore/vercel-secret-rotator.d".to_owned())
        );
        assert_eq!(
            d.load[0].declared,
            "LoadCredential=d:%E/credstore/%N.d (f2:3)"
        );
        assert!(d.set.is_empty());

        let d = declarations(&[
            "[Service]\nLoadCredential=a:/etc/a\nSetCredential=s:canary-value\n",
            "[Service]\nLoadCredential=a:/etc/a2\nLoadCredentialEncrypted=c\nImportCredential=acme.*\n",
        ]);
        let ids: Vec<(&str, Option<&str>, bool)> = d
            .load
            .iter()
            .map(|l| (l.id.as_str(), l.path.as_deref().ok(), l.encrypted))
            .collect();
        assert_eq!(ids, [("a", Some("/etc/a2"), false), ("c", Some("c"), true)]);
        assert_eq!(d.set.len(), 1);
        assert_eq!(d.set[0].id, "s");
        assert!(
            !format!("{d:?}").contains("canary"),
            "a SetCredential value kept"
        );
        assert_eq!(d.import[0].glob, "acme.*");
    }

    #[test]
    fn specifiers_expand_or_are_named() {
        assert_eq!(
            expand("%S/%p/%i%%", "x@inst.service"),
            Ok("/var/lib/x/inst%".to_owned())
        );
        assert_eq!(
            expand("/home/%u/x", UNIT),
            Err("uses the specifier %u, which check does not expand".to_owned())
        );
    }

    #[test]
    fn globs() {
        for (glob, name, expected) in [
            ("acme.*", "acme.token", true),
            ("acme.*", "acme", false),
            ("*", "x", true),
            ("a?c", "abc", true),
            ("a?c", "ac", false),
            ("exact", "exact", true),
        ] {
            assert_eq!(glob_matches(glob, name), expected, "{glob} {name}");
        }
    }
}
