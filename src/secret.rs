//! Secret values: the named fields a provider returns, fingerprints that identify a value
//! without revealing it, and scrubbing of text that might echo a value back.
//!
//! Every value lives in a [`SecretString`] from the moment it exists; `expose_secret()` is
//! called only where the value must leave the process (a pipe to a child, the body sent to
//! Vercel) or be hashed.

use std::collections::BTreeMap;

pub use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};

/// A provider's answer: field name (`password`, `username`, ...) to value.
pub type Fields = BTreeMap<String, SecretString>;

/// A short, stable identifier of a value: the first 8 hex digits (32 bits) of its SHA-256.
///
/// 32 bits say "same value or not" to a human comparing runs, and are far too few to help
/// guess a value that has the 128 bits of entropy the config demands of generated secrets.
pub fn fingerprint(value: &SecretString) -> String {
    let digest = Sha256::digest(value.expose_secret().as_bytes());
    digest[..4].iter().map(|b| format!("{b:02x}")).collect()
}

/// A fingerprint over several values at once, in the order given (for a whole push).
pub fn fingerprint_all<'a>(values: impl IntoIterator<Item = &'a SecretString>) -> String {
    let mut hasher = Sha256::new();
    for value in values {
        let bytes = value.expose_secret().as_bytes();
        // Length-prefix each value so ("ab","c") and ("a","bc") differ.
        hasher.update((bytes.len() as u64).to_be_bytes());
        hasher.update(bytes);
    }
    hasher.finalize()[..4]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces every occurrence of any of `values` in `text` with `[REDACTED]`.
///
/// Used on text that came from outside (a child's stderr, a server's error message) before it
/// is logged or put in an error, in case it echoes a value back. Empty values are skipped:
/// they would match everywhere and reveal nothing.
pub fn scrub<'a>(text: &str, values: impl IntoIterator<Item = &'a SecretString>) -> String {
    let mut out = text.to_owned();
    for value in values {
        let v = value.expose_secret();
        if !v.is_empty() && out.contains(v) {
            out = out.replace(v, "[REDACTED]");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    #[test]
    fn fingerprint_is_short_stable_and_not_the_value() {
        let a = fingerprint(&s("correct horse battery staple"));
        assert_eq!(a.len(), 8);
        assert_eq!(a, fingerprint(&s("correct horse battery staple")));
        assert_ne!(a, fingerprint(&s("correct horse battery stapler")));
        assert!(!"correct horse battery staple".contains(&a));
    }

    #[test]
    fn fingerprint_all_separates_values() {
        assert_ne!(
            fingerprint_all([&s("ab"), &s("c")]),
            fingerprint_all([&s("a"), &s("bc")])
        );
    }

    #[test]
    fn scrub_removes_every_value_and_ignores_empty() {
        let vals = [s("hunter2"), s(""), s("swordfish")];
        let out = scrub("pw hunter2 and swordfish, hunter2 again", vals.iter());
        assert_eq!(out, "pw [REDACTED] and [REDACTED], [REDACTED] again");
    }

    #[test]
    fn debug_of_a_secret_is_redacted() {
        let out = format!("{:?}", s("hunter2"));
        assert!(!out.contains("hunter2"), "{out}");
    }
}
