//! What the client sends: the secrets of one push and a dashboard notification, and their
//! JSON bodies.
//!
//! Vercel's schema is strict (`additionalProperties: false` at both levels of the secrets body),
//! so an absent optional is omitted, never `null`, and nothing else is ever sent. The values
//! leave their `SecretString` only inside [`Serialize::serialize`] of the private wire types:
//! the body is built straight into the bytes sent, and no type here prints a value in `Debug`.

use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use url::Url;

use crate::config::EnvironmentOverrides;

/// One secret of a push, with its rendered values.
///
/// `Debug` is safe: every value is a `SecretString`, which prints `[REDACTED]`.
#[derive(Debug)]
pub struct PushSecret {
    /// The variable name without the prefix (`PGPASSWORD`).
    pub name: String,
    /// What environments without an override get.
    pub value: SecretString,
    /// Vercel prepends it with an underscore (`ACME` + `PGPASSWORD` = `ACME_PGPASSWORD`).
    pub prefix: Option<String>,
    /// Per-environment values; only those present are sent.
    pub environment_overrides: EnvironmentOverrides<SecretString>,
}

impl PushSecret {
    /// Every value of this secret: the value, then each override present. The client scrubs
    /// all of them from any text the server sends back.
    pub(crate) fn values(&self) -> impl Iterator<Item = &SecretString> {
        std::iter::once(&self.value).chain(self.environment_overrides.iter().map(|(_, v)| v))
    }
}

/// How loud a dashboard notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotificationLevel {
    Info,
    Warn,
    Error,
}

impl NotificationLevel {
    /// Vercel's name for the level.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationLevel::Info => "info",
            NotificationLevel::Warn => "warn",
            NotificationLevel::Error => "error",
        }
    }
}

/// A banner on the resource in the user's Vercel dashboard (the redeploy reminder).
///
/// Holds no secret: it is text for the user.
#[derive(Debug, Clone)]
pub struct Notification {
    pub level: NotificationLevel,
    pub title: String,
    /// Omitted from the request when empty (the field is optional for Vercel).
    pub message: String,
    /// Where the banner links to, if anywhere.
    pub href: Option<Url>,
}

/// `{"secrets":[...],"partial":true}`: the body of the update-resource-secrets call.
///
/// `partial` is always `true` (DESIGN invariant 5): without it Vercel would replace every secret
/// of the resource with the ones sent, deleting those the policy does not own.
pub(crate) struct UpdateSecretsBody<'a> {
    pub(crate) secrets: &'a [PushSecret],
}

impl fmt::Debug for UpdateSecretsBody<'_> {
    // Names only: enough to tell which push it was, and the values stay out by construction
    // rather than by relying on each field's own Debug.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpdateSecretsBody")
            .field(
                "secrets",
                &self
                    .secrets
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .field("partial", &true)
            .finish_non_exhaustive()
    }
}

impl Serialize for UpdateSecretsBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("secrets", &WireSecrets(self.secrets))?;
        map.serialize_entry("partial", &true)?;
        map.end()
    }
}

struct WireSecrets<'a>(&'a [PushSecret]);

impl Serialize for WireSecrets<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for secret in self.0 {
            seq.serialize_element(&WireSecret(secret))?;
        }
        seq.end()
    }
}

struct WireSecret<'a>(&'a PushSecret);

impl Serialize for WireSecret<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let secret = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("name", &secret.name)?;
        map.serialize_entry("value", secret.value.expose_secret())?;
        if let Some(prefix) = &secret.prefix {
            map.serialize_entry("prefix", prefix)?;
        }
        // An empty object would be valid, but "omit what is absent" keeps the body minimal and
        // identical to what a push without overrides always looked like.
        if !secret.environment_overrides.is_empty() {
            map.serialize_entry(
                "environmentOverrides",
                &WireOverrides(&secret.environment_overrides),
            )?;
        }
        map.end()
    }
}

struct WireOverrides<'a>(&'a EnvironmentOverrides<SecretString>);

impl Serialize for WireOverrides<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for (environment, value) in self.0.iter() {
            map.serialize_entry(environment, value.expose_secret())?;
        }
        map.end()
    }
}

/// `{"notification":{...}}`: the body of the update-resource call, with nothing else, so the
/// PATCH changes only the banner and never the resource's name, status or secrets.
pub(crate) struct NotifyBody<'a> {
    pub(crate) notification: &'a Notification,
}

impl Serialize for NotifyBody<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("notification", &WireNotification(self.notification))?;
        map.end()
    }
}

struct WireNotification<'a>(&'a Notification);

impl Serialize for WireNotification<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let n = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("level", n.level.as_str())?;
        map.serialize_entry("title", &n.title)?;
        if !n.message.is_empty() {
            map.serialize_entry("message", &n.message)?;
        }
        if let Some(href) = &n.href {
            map.serialize_entry("href", href.as_str())?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> SecretString {
        SecretString::from(v.to_owned())
    }

    fn plain(name: &str, value: &str) -> PushSecret {
        PushSecret {
            name: name.to_owned(),
            value: s(value),
            prefix: None,
            environment_overrides: EnvironmentOverrides::default(),
        }
    }

    fn to_json(secrets: &[PushSecret]) -> String {
        serde_json::to_string(&UpdateSecretsBody { secrets }).expect("serializes")
    }

    #[test]
    fn body_without_optionals_omits_them() {
        assert_eq!(
            to_json(&[plain("PGPASSWORD", "p4ss")]),
            r#"{"secrets":[{"name":"PGPASSWORD","value":"p4ss"}],"partial":true}"#
        );
    }

    #[test]
    fn body_with_optionals_sends_only_those_present() {
        let full = PushSecret {
            name: "DATABASE_URL".to_owned(),
            value: s("postgres://u:p@h/db"),
            prefix: Some("ACME".to_owned()),
            environment_overrides: EnvironmentOverrides {
                production: Some(s("prod-v")),
                preview: None,
                development: Some(s("dev-\"v\"")),
            },
        };
        assert_eq!(
            to_json(&[full, plain("PGUSER", "u")]),
            concat!(
                r#"{"secrets":[{"name":"DATABASE_URL","value":"postgres://u:p@h/db","prefix":"ACME","#,
                r#""environmentOverrides":{"production":"prod-v","development":"dev-\"v\""}},"#,
                r#"{"name":"PGUSER","value":"u"}],"partial":true}"#
            )
        );
    }

    #[test]
    fn empty_push_is_still_a_valid_body() {
        assert_eq!(to_json(&[]), r#"{"secrets":[],"partial":true}"#);
    }

    #[test]
    fn debug_never_shows_a_value() {
        let secret = PushSecret {
            name: "PGPASSWORD".to_owned(),
            value: s("canary-value-1"),
            prefix: Some("ACME".to_owned()),
            environment_overrides: EnvironmentOverrides {
                production: Some(s("canary-value-2")),
                preview: Some(s("canary-value-3")),
                development: None,
            },
        };
        let pushed = format!("{secret:?} {secret:#?}");
        let secrets = [secret];
        let body = format!("{:?}", UpdateSecretsBody { secrets: &secrets });
        for out in [pushed, body] {
            assert!(!out.contains("canary-value"), "{out}");
            assert!(out.contains("PGPASSWORD"), "{out}");
        }
    }

    #[test]
    fn notification_body_shape() {
        let mut n = Notification {
            level: NotificationLevel::Warn,
            title: "Redeploy".to_owned(),
            message: "New credentials".to_owned(),
            href: Some(Url::parse("https://example.com/docs").expect("url")),
        };
        let body = |n: &Notification| {
            serde_json::to_string(&NotifyBody { notification: n }).expect("serializes")
        };
        assert_eq!(
            body(&n),
            r#"{"notification":{"level":"warn","title":"Redeploy","message":"New credentials","href":"https://example.com/docs"}}"#
        );
        n.level = NotificationLevel::Info;
        n.message.clear();
        n.href = None;
        assert_eq!(
            body(&n),
            r#"{"notification":{"level":"info","title":"Redeploy"}}"#
        );
    }
}
