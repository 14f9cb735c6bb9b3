//! Masking of secrets in what the config loader prints: the snippet of the offending line and
//! every message. A config is meant to hold no secret (they come from files, the environment
//! or systemd credentials), but people paste them in anyway, and an error message is the
//! worst place to echo one: it lands in terminals, CI logs and the journal.
//!
//! The rule, applied to every snippet and message:
//!
//! - **Secret-bearing keys.** The value of a key whose name, read case-insensitively with `_`
//!   as `-`, contains [`SECRET_WORDS`] (`token`, `password`, `secret`, `admin-url`, ...) is
//!   shown as `[REDACTED]`, whole, across lines if it spans several; unless the name ends in
//!   `-file`, `-env` or `-credential`, which say where a secret is kept (`token-file`,
//!   `admin-url-file`), not the secret. Unknown keys count too: a misplaced
//!   `password = "..."` is exactly what must not be echoed by the "unknown key" error.
//! - **URL userinfo.** In `scheme://user:password@host` the password is shown as
//!   `[REDACTED]`; a user part alone (`https://TOKEN@host`) too, since tokens go there. A part
//!   made only of `{field}` placeholders is a template, not a secret, and is kept.
//!
//! The scan is tolerant: it runs on text that may not be valid TOML (a syntax error is one of
//! the things it helps print), and when unsure it masks more, never less.

use std::ops::Range;

/// What a key's name contains when its value is a secret.
pub const SECRET_WORDS: [&str; 10] = [
    "token",
    "password",
    "passwd",
    "secret",
    "credential",
    "api-key",
    "apikey",
    "private-key",
    "auth",
    "admin-url",
];

/// Endings of key names that say where a secret is kept rather than hold it.
const LOCATOR_SUFFIXES: [&str; 3] = ["-file", "-env", "-credential"];

pub const REDACTED: &str = "[REDACTED]";

/// Whether the value of `key` (one segment of a key, as written) is a secret.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase().replace('_', "-");
    SECRET_WORDS.iter().any(|w| key.contains(w))
        && !LOCATOR_SUFFIXES.iter().any(|s| key.ends_with(s))
}

/// `source` with every secret masked, line for line: the result has as many lines as
/// `source`, so line numbers computed on `source` index it.
pub fn mask_source(source: &str) -> Vec<String> {
    let mut scanner = Scanner {
        b: source.as_bytes(),
        i: 0,
        spans: Vec::new(),
    };
    scanner.document();
    let masked = replace_spans(source, scanner.spans);
    masked
        .split('\n')
        .map(|line| mask_urls(&mask_key_line(line)))
        .collect()
}

/// A message (or any text that is not TOML) with URL userinfo masked.
pub fn mask_message(text: &str) -> String {
    mask_urls(text)
}

/// Replaces each span with [`REDACTED`], keeping its line breaks (each non-blank line piece
/// of a span becomes one `[REDACTED]`). Spans may overlap or nest.
fn replace_spans(source: &str, mut spans: Vec<Range<usize>>) -> String {
    spans.sort_by_key(|s| (s.start, std::cmp::Reverse(s.end)));
    let mut out = String::with_capacity(source.len());
    let mut done = 0;
    for span in spans {
        let start = span.start.max(done);
        if start >= span.end {
            continue;
        }
        // Spans start and end at ASCII delimiters or the text's ends: char boundaries. If
        // not, mask from the previous boundary to the next: more, never less.
        let start = floor_boundary(source, start);
        let end = ceil_boundary(source, span.end);
        out.push_str(&source[done..start]);
        let pieces: Vec<&str> = source[start..end].split('\n').collect();
        for (i, piece) in pieces.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            if !piece.trim().is_empty() {
                out.push_str(REDACTED);
            }
        }
        done = end;
    }
    out.push_str(&source[done..]);
    out
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn ceil_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i += 1;
    }
    i
}

/// A second net for lines the scanner took for something else (inside a string or array
/// left open by a syntax error): a line that reads `secret-key = ...` has the rest masked.
fn mask_key_line(line: &str) -> String {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let key_len = trimmed
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(trimmed.len());
    let (key, rest) = trimmed.split_at(key_len);
    let after = rest.trim_start();
    if key.is_empty() || !is_secret_key(key) || !after.starts_with('=') || after.starts_with("==") {
        return line.to_owned();
    }
    let value = after[1..].trim_start();
    if value.is_empty() || value.starts_with(REDACTED) {
        return line.to_owned();
    }
    format!("{indent}{key} = {REDACTED}")
}

/// Masks the userinfo of every `scheme://userinfo@host` in `text` (see the module doc).
fn mask_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        // The URL runs to whitespace or a quote. Its userinfo ends at the last `@`: a
        // password may hold `/`, `#` or `@` unencoded, and masking a path that holds `@` too
        // is the safe mistake.
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(tail.len());
        let url = &tail[..end];
        match url.rfind('@') {
            Some(at) => {
                out.push_str(&mask_userinfo(&url[..at]));
                out.push_str(&url[at..]);
            }
            None => out.push_str(url),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn mask_userinfo(userinfo: &str) -> String {
    let keep = |part: &str| part.is_empty() || part == REDACTED || is_placeholders(part);
    match userinfo.split_once(':') {
        Some((user, password)) if !password.is_empty() => {
            if keep(password) {
                userinfo.to_owned()
            } else {
                format!("{user}:{REDACTED}")
            }
        }
        // `user:` or `user`: the user part may be a token.
        _ if keep(userinfo.trim_end_matches(':')) => userinfo.to_owned(),
        _ => REDACTED.to_owned(),
    }
}

/// Whether `s` is one or more `{field}` template placeholders and nothing else.
fn is_placeholders(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let Some(inner) = rest.strip_prefix('{') else {
            return false;
        };
        let Some(close) = inner.find('}') else {
            return false;
        };
        let name = &inner[..close];
        if name.is_empty() || name.contains('{') {
            return false;
        }
        rest = &inner[close + 1..];
    }
    true
}

/// A tolerant reader of TOML's shape: enough to know which bytes are the value of which
/// key, on text that may be broken. It records the spans of secret-bearing keys' values.
struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    spans: Vec<Range<usize>>,
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn at(&self, s: &[u8]) -> bool {
        self.b.get(self.i..).is_some_and(|rest| rest.starts_with(s))
    }

    fn advance(&mut self, n: usize) {
        self.i = (self.i + n).min(self.b.len());
    }

    fn skip_blank(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r')) {
            self.i += 1;
        }
    }

    /// To the end of the line, not past its `\n`.
    fn skip_line(&mut self) {
        while self.peek().is_some_and(|c| c != b'\n') {
            self.i += 1;
        }
    }

    fn document(&mut self) {
        while self.i < self.b.len() {
            self.skip_blank();
            match self.peek() {
                None => break,
                Some(b'\n') => self.i += 1,
                // Comments and table headers hold no value.
                Some(b'#' | b'[') => self.skip_line(),
                Some(_) => {
                    let before = self.i;
                    self.keyval();
                    self.skip_line();
                    if self.i == before {
                        self.i += 1;
                    }
                }
            }
        }
    }

    /// A key, dotted or not; returns its segments.
    fn key(&mut self) -> Vec<String> {
        let mut segments = Vec::new();
        loop {
            self.skip_blank();
            let start = self.i;
            match self.peek() {
                Some(b'"') => {
                    self.basic_string();
                    segments.push(self.text(start + 1, self.i.saturating_sub(1)));
                }
                Some(b'\'') => {
                    self.literal_string();
                    segments.push(self.text(start + 1, self.i.saturating_sub(1)));
                }
                Some(c) if is_bare_key_byte(c) => {
                    while self.peek().is_some_and(is_bare_key_byte) {
                        self.i += 1;
                    }
                    segments.push(self.text(start, self.i));
                }
                _ => return segments,
            }
            self.skip_blank();
            if self.peek() == Some(b'.') {
                self.i += 1;
            } else {
                return segments;
            }
        }
    }

    fn text(&self, start: usize, end: usize) -> String {
        let end = end.max(start).min(self.b.len());
        String::from_utf8_lossy(&self.b[start.min(end)..end]).into_owned()
    }

    fn keyval(&mut self) {
        let key = self.key();
        self.skip_blank();
        if key.is_empty() || self.peek() != Some(b'=') {
            return;
        }
        self.i += 1;
        self.skip_blank();
        let start = self.i;
        self.value();
        // A dotted key is secret when any segment is: `db.password`, `token.value`.
        if self.i > start && key.iter().any(|k| is_secret_key(k)) {
            self.spans.push(start..self.i);
        }
    }

    fn value(&mut self) {
        match self.peek() {
            Some(b'"') if self.at(b"\"\"\"") => self.multiline(b'"'),
            Some(b'\'') if self.at(b"'''") => self.multiline(b'\''),
            Some(b'"') => self.basic_string(),
            Some(b'\'') => self.literal_string(),
            Some(b'[') => self.array(),
            Some(b'{') => self.inline_table(),
            _ => {
                while self.peek().is_some_and(|c| {
                    !matches!(c, b' ' | b'\t' | b'\r' | b'\n' | b',' | b']' | b'}' | b'#')
                }) {
                    self.i += 1;
                }
            }
        }
    }

    /// `"..."` with escapes; an unclosed one ends at the end of the line.
    fn basic_string(&mut self) {
        self.i += 1;
        while let Some(c) = self.peek() {
            match c {
                b'\\' => self.advance(2),
                b'"' => {
                    self.i += 1;
                    return;
                }
                b'\n' => return,
                _ => self.i += 1,
            }
        }
    }

    /// `'...'`; an unclosed one ends at the end of the line.
    fn literal_string(&mut self) {
        self.i += 1;
        while let Some(c) = self.peek() {
            match c {
                b'\'' => {
                    self.i += 1;
                    return;
                }
                b'\n' => return,
                _ => self.i += 1,
            }
        }
    }

    /// `"""..."""` (with escapes) or `'''...'''`; an unclosed one runs to the end.
    fn multiline(&mut self, quote: u8) {
        let delimiter = [quote; 3];
        self.advance(3);
        while self.i < self.b.len() {
            if quote == b'"' && self.peek() == Some(b'\\') {
                self.advance(2);
            } else if self.at(&delimiter) {
                self.advance(3);
                // Up to two more quotes belong to the content: `""""x"""""`.
                let mut extra = 0;
                while extra < 2 && self.peek() == Some(quote) {
                    self.i += 1;
                    extra += 1;
                }
                return;
            } else {
                self.i += 1;
            }
        }
    }

    /// `[...]`, over several lines if need be. A line that reads `key = ...` ends an array
    /// left open by a syntax error, so the keys after it are still seen as keys.
    fn array(&mut self) {
        self.i += 1;
        loop {
            self.skip_blank();
            match self.peek() {
                None => return,
                Some(b'\n') => {
                    // Left at the `\n`, so the caller's skip to the end of the line is a no-op.
                    if self.line_starts_with_keyval(self.i + 1) {
                        return;
                    }
                    self.i += 1;
                }
                Some(b'#') => self.skip_line(),
                Some(b']') => {
                    self.i += 1;
                    return;
                }
                Some(b',') => self.i += 1,
                Some(_) => {
                    let before = self.i;
                    self.value();
                    if self.i == before {
                        self.i += 1;
                    }
                }
            }
        }
    }

    /// `{ key = value, ... }` on one line.
    fn inline_table(&mut self) {
        self.i += 1;
        loop {
            self.skip_blank();
            match self.peek() {
                None | Some(b'\n') => return,
                Some(b'}') => {
                    self.i += 1;
                    return;
                }
                Some(b',') => self.i += 1,
                Some(_) => {
                    let before = self.i;
                    self.keyval();
                    if self.i == before {
                        self.i += 1;
                    }
                }
            }
        }
    }

    fn line_starts_with_keyval(&self, from: usize) -> bool {
        let rest = self.b.get(from..).unwrap_or_default();
        let rest = &rest[rest
            .iter()
            .position(|c| !matches!(c, b' ' | b'\t'))
            .unwrap_or(rest.len())..];
        let key_len = rest
            .iter()
            .position(|c| !is_bare_key_byte(*c))
            .unwrap_or(rest.len());
        if key_len == 0 {
            return false;
        }
        let after = &rest[key_len..];
        let after = &after[after
            .iter()
            .position(|c| !matches!(c, b' ' | b'\t'))
            .unwrap_or(after.len())..];
        after.starts_with(b"=") && !after.starts_with(b"==")
    }
}

fn is_bare_key_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'-' || c == b'_'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys_follow_the_rule() {
        for key in [
            "token",
            "api-token",
            "API_TOKEN",
            "password",
            "db_passwd",
            "client-secret",
            "secrets",
            "credentials",
            "api-key",
            "apikey",
            "private_key",
            "auth",
            "authorization",
            "admin-url",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "token-file",
            "token-env",
            "token-credential",
            "admin-url-file",
            "url",
            "api-url",
            "name",
            "users",
            "value",
            "kind",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    fn masked(source: &str) -> String {
        mask_source(source).join("\n")
    }

    #[test]
    fn values_of_secret_keys_are_masked_wherever_they_are() {
        let cases = [
            ("token = \"tok_1\"", "token = [REDACTED]"),
            ("password = 'pw' # note", "password = [REDACTED] # note"),
            ("  api_key=abc123", "  api_key=[REDACTED]"),
            ("db.password = \"x\"", "db.password = [REDACTED]"),
            ("\"password\" = \"x\"", "\"password\" = [REDACTED]"),
            (
                "provider = { kind = \"postgres\", admin-url = \"postgres://a:b@h/d\", users = [\"a\", \"b\"] }",
                "provider = { kind = \"postgres\", admin-url = [REDACTED], users = [\"a\", \"b\"] }",
            ),
            ("token = { value = \"x\" }", "token = [REDACTED]"),
            ("secret = [\"a\", \"b\"]", "secret = [REDACTED]"),
            // Unclosed strings end at the line's end; the next line is its own.
            (
                "password = \"hunter2\nname = \"n\"",
                "password = [REDACTED]\nname = \"n\"",
            ),
            // Not secret: locations of secrets, and ordinary keys.
            ("token-file = \"/etc/t\"", "token-file = \"/etc/t\""),
            ("admin-url-file = \"/etc/u\"", "admin-url-file = \"/etc/u\""),
            ("name = \"token\"", "name = \"token\""),
        ];
        for (source, want) in cases {
            assert_eq!(masked(source), want, "{source}");
        }
    }

    #[test]
    fn multi_line_values_are_masked_line_for_line() {
        let source = "a = 1\ntoken = \"\"\"\n  line one\n\n  line \\\"\"\" two\"\"\"\nb = 2\nsecret = [\n  \"x\",\n  \"y\",\n]\nc = 3";
        let lines = mask_source(source);
        assert_eq!(
            lines,
            [
                "a = 1",
                "token = [REDACTED]",
                "[REDACTED]",
                "",
                "[REDACTED]",
                "b = 2",
                "secret = [REDACTED]",
                "[REDACTED]",
                "[REDACTED]",
                "[REDACTED]",
                "c = 3",
            ]
        );
        assert_eq!(lines.len(), source.lines().count());
    }

    #[test]
    fn a_broken_array_does_not_hide_the_keys_after_it() {
        let source = "resources = [\"a\", \"b\"\ntoken = \"tok_1\"\n[x]\nname = 1";
        assert_eq!(
            masked(source),
            "resources = [\"a\", \"b\"\ntoken = [REDACTED]\n[x]\nname = 1"
        );
        // An unclosed multi-line string of an ordinary key still gets the line net.
        let source = "value = \"\"\"\npassword = \"pw\"\n";
        assert_eq!(masked(source), "value = \"\"\"\npassword = [REDACTED]\n");
    }

    #[test]
    fn url_userinfo_is_masked_unless_it_is_a_template() {
        let cases = [
            (
                "url = \"https://u:hunter2@h.example/x\"",
                "url = \"https://u:[REDACTED]@h.example/x\"",
            ),
            (
                "git+https://ghp_tok@github.com",
                "git+https://[REDACTED]@github.com",
            ),
            ("https://u:p/w#d@h/x", "https://u:[REDACTED]@h/x"),
            ("x://u:p@q@h", "x://u:[REDACTED]@h"),
            ("https://h.example/x", "https://h.example/x"),
            (
                "postgres://{username}:{password}@{host}/db",
                "postgres://{username}:{password}@{host}/db",
            ),
            (
                "postgres://orders:{password}@db",
                "postgres://orders:{password}@db",
            ),
            (
                "postgres://orders:pw{password}@db",
                "postgres://orders:[REDACTED]@db",
            ),
            (
                "\"ftp://a:b@c\" has scheme ftp",
                "\"ftp://a:[REDACTED]@c\" has scheme ftp",
            ),
            ("no url here: a@b", "no url here: a@b"),
        ];
        for (text, want) in cases {
            assert_eq!(mask_message(text), want, "{text}");
        }
    }

    #[test]
    fn garbage_never_panics_and_keeps_the_line_count() {
        for source in [
            "",
            "\"",
            "'''",
            "\"\"\"\\",
            "[[",
            "= = =",
            "a = [[[{{{",
            "token = \"é\\",
            "k = é\ntoken = 'ü",
            "x = {\ny = 1",
        ] {
            let lines = mask_source(source);
            assert_eq!(lines.len(), source.split('\n').count(), "{source:?}");
        }
    }
}
