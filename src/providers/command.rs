//! The `command` provider: an external program makes, checks and retires credentials, spoken
//! to with DESIGN's JSON protocol (one JSON object on stdin, one on stdout, exit status).
//!
//! This file owns the protocol's messages: the requests it writes and the strict parsing of
//! the answers. Running the program (no shell, cleared environment, timeout, output caps,
//! stderr scrubbing, exit-status meaning) is `process.rs`, shared with `random`'s
//! `apply`.
//!
//! - `create` must be implemented: exit 3 fails the call (permanently). Its answer is exactly
//!   `{"handle": "<non-empty>", "fields": {"name": "value", ...}}` with at least one field;
//!   any other key, a non-string value or a missing key is `BadOutput`. If the config lists
//!   `fields`, every listed name must be present.
//! - `verify` and `retire` are optional: exit 3 is [`Outcome::Unsupported`]. Their answer must
//!   be a JSON object; its keys are ignored.
//! - Any other non-zero exit is `Failed`: permanent for the sysexits codes 64, 65, 77 and 78
//!   (the call or the setup is wrong), transient for any other code or a signal.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::process::{
    ExposedFields, Invocation, Reply, Required, SecretBuf, SecretValues, describe_json_error,
};
use super::{Credential, Outcome, Provider, ProviderError, Target};
use crate::config::CommandConfig;
use crate::secret::{Fields, SecretString};

/// Runs the configured program once per call.
#[derive(Debug, Clone)]
pub struct CommandProvider {
    config: CommandConfig,
}

impl CommandProvider {
    pub fn new(config: CommandConfig) -> Self {
        CommandProvider { config }
    }

    fn invocation(&self, action: &'static str, required: Required) -> Invocation<'_> {
        Invocation {
            spec: &self.config.command,
            action,
            timeout: self.config.timeout,
            required,
        }
    }

    fn encode(
        &self,
        action: &'static str,
        request: &impl Serialize,
    ) -> Result<SecretBuf, ProviderError> {
        // Serializing strings and maps into memory cannot fail; this only keeps the `?` honest.
        SecretBuf::json(request).map_err(|e| ProviderError::Io {
            program: self.config.command.display_name(),
            action,
            source: std::io::Error::other(format!(
                "could not encode the request ({:?})",
                e.classify()
            )),
        })
    }

    /// Checks a create answer beyond its shape: what serde cannot say.
    fn check_created(&self, answer: &CreateAnswer) -> Result<(), String> {
        if answer.handle.is_empty() {
            return Err("`handle` is empty".to_owned());
        }
        if answer.fields.is_empty() {
            return Err("`fields` is empty; a credential needs at least one field".to_owned());
        }
        if let Some(promised) = &self.config.fields {
            // Names are not secret: they are what templates refer to.
            let missing: Vec<String> = promised
                .iter()
                .filter(|name| !answer.fields.contains_key(name.as_str()))
                .map(|name| format!("`{name}`"))
                .collect();
            if !missing.is_empty() {
                return Err(format!(
                    "`fields` lacks {} that the config's `fields` list promises",
                    missing.join(", ")
                ));
            }
        }
        Ok(())
    }
}

#[derive(Serialize)]
struct CreateRequest<'a> {
    action: &'static str,
    rotation_id: &'a str,
    policy: &'a str,
    installation: &'a str,
    resource: &'a str,
    /// `null` on the first rotation: the protocol always sends the key.
    previous_handle: Option<&'a str>,
}

#[derive(Serialize)]
struct VerifyRequest<'a> {
    action: &'static str,
    rotation_id: &'a str,
    policy: &'a str,
    resource: &'a str,
    handle: &'a str,
    fields: ExposedFields<'a>,
}

#[derive(Serialize)]
struct RetireRequest<'a> {
    action: &'static str,
    policy: &'a str,
    resource: &'a str,
    handle: &'a str,
}

/// A create answer. Values go straight into `SecretString`s as serde reads them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateAnswer {
    handle: String,
    fields: Fields,
}

impl SecretValues for CreateAnswer {
    fn secret_values(&self) -> Vec<&SecretString> {
        self.fields.values().collect()
    }
}

const CREATE_SHAPE: &str =
    "an object with exactly `handle` (a string) and `fields` (an object mapping names to strings)";

/// Parses a create answer, strictly, without ever quoting it in the reason.
fn parse_create(stdout: &str) -> Result<CreateAnswer, String> {
    require_object(stdout)?;
    serde_json::from_str::<CreateAnswer>(stdout).map_err(|e| {
        let expected = match e.classify() {
            serde_json::error::Category::Data => diagnose_create(stdout),
            _ => CREATE_SHAPE,
        };
        describe_json_error(expected, &e)
    })
}

/// Which part of the create shape a well-formed but wrong answer broke. Only names of keys
/// the protocol defines appear, never a value or a key the program made up.
fn diagnose_create(stdout: &str) -> &'static str {
    let Ok(mut value) = serde_json::from_str::<serde_json::Value>(stdout) else {
        return CREATE_SHAPE;
    };
    let verdict = match value.as_object() {
        None => CREATE_SHAPE,
        Some(map) if map.keys().any(|k| k != "handle" && k != "fields") => {
            "only the keys `handle` and `fields` are allowed"
        }
        Some(map) => match (map.get("handle"), map.get("fields")) {
            (None, _) => "`handle` is missing",
            (Some(h), _) if !h.is_string() => "`handle` must be a string",
            (_, None) => "`fields` is missing",
            (_, Some(serde_json::Value::Object(fields)))
                if fields.values().all(|v| v.is_string()) =>
            {
                CREATE_SHAPE
            }
            (_, Some(_)) => "`fields` must map names to strings",
        },
    };
    zeroize_strings(&mut value);
    verdict
}

/// The diagnosis above reparsed the answer into plain `String`s; wipe them before they drop.
fn zeroize_strings(value: &mut serde_json::Value) {
    use zeroize::Zeroize;
    match value {
        serde_json::Value::String(s) => s.zeroize(),
        serde_json::Value::Array(items) => items.iter_mut().for_each(zeroize_strings),
        serde_json::Value::Object(map) => map.values_mut().for_each(zeroize_strings),
        _ => {}
    }
}

/// A verify or retire answer: any JSON object, contents ignored.
struct AnyObject;

impl SecretValues for AnyObject {
    fn secret_values(&self) -> Vec<&SecretString> {
        Vec::new()
    }
}

fn parse_any_object(stdout: &str) -> Result<AnyObject, String> {
    require_object(stdout)?;
    serde_json::from_str::<serde::de::IgnoredAny>(stdout)
        .map(|_| AnyObject)
        .map_err(|e| describe_json_error("a JSON object", &e))
}

/// Rejects anything but `{...}` up front: serde's derived structs would also take an array.
fn require_object(stdout: &str) -> Result<(), String> {
    match stdout.trim_start().chars().next() {
        None => Err("stdout is empty; expected a JSON object".to_owned()),
        Some('{') => Ok(()),
        Some(_) => Err("stdout is not a JSON object".to_owned()),
    }
}

#[async_trait]
impl Provider for CommandProvider {
    fn kind(&self) -> &'static str {
        "command"
    }

    async fn create(
        &self,
        target: &Target,
        rotation_id: &str,
        previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        const ACTION: &str = "create";
        let request = self.encode(
            ACTION,
            &CreateRequest {
                action: ACTION,
                rotation_id,
                policy: &target.policy,
                installation: &target.installation,
                resource: &target.resource,
                previous_handle,
            },
        )?;
        let invocation = self.invocation(
            ACTION,
            Required::Yes("the program does not implement `create`, which every provider must"),
        );
        let reply = invocation
            .call(&request, &[], |stdout| {
                let answer = parse_create(stdout)?;
                self.check_created(&answer)?;
                Ok(answer)
            })
            .await?;
        match reply {
            Reply::Done(CreateAnswer { handle, fields }) => Ok(Credential { handle, fields }),
            // `Required::Yes` turns exit 3 into an error; this arm is never taken.
            Reply::Unsupported => Err(ProviderError::BadOutput {
                program: self.config.command.display_name(),
                action: ACTION,
                reason: "the program does not implement `create`".to_owned(),
            }),
        }
    }

    async fn verify(
        &self,
        target: &Target,
        rotation_id: &str,
        credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "verify";
        let request = self.encode(
            ACTION,
            &VerifyRequest {
                action: ACTION,
                rotation_id,
                policy: &target.policy,
                resource: &target.resource,
                handle: &credential.handle,
                fields: ExposedFields(&credential.fields),
            },
        )?;
        let sent: Vec<&SecretString> = credential.fields.values().collect();
        let reply = self
            .invocation(ACTION, Required::No)
            .call(&request, &sent, parse_any_object)
            .await?;
        Ok(outcome(reply))
    }

    async fn retire(&self, target: &Target, handle: &str) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "retire";
        let request = self.encode(
            ACTION,
            &RetireRequest {
                action: ACTION,
                policy: &target.policy,
                resource: &target.resource,
                handle,
            },
        )?;
        let reply = self
            .invocation(ACTION, Required::No)
            .call(&request, &[], parse_any_object)
            .await?;
        Ok(outcome(reply))
    }
}

fn outcome<T>(reply: Reply<T>) -> Outcome {
    match reply {
        Reply::Done(_) => Outcome::Done,
        Reply::Unsupported => Outcome::Unsupported,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::ExposeSecret;

    fn reason(stdout: &str) -> String {
        match parse_create(stdout) {
            Ok(_) => panic!("accepted {stdout}"),
            Err(reason) => reason,
        }
    }

    #[test]
    fn create_answers_parse_strictly_and_reasons_name_the_broken_part() {
        let ok = parse_create(r#" {"handle":"key-42","fields":{"password":"pw","username":"u"}}"#)
            .unwrap();
        assert_eq!(ok.handle, "key-42");
        assert_eq!(ok.fields["password"].expose_secret(), "pw");

        let cases = [
            (
                r#"{"fields":{"password":"canary-1"}}"#,
                "`handle` is missing",
            ),
            (r#"{"handle":"h"}"#, "`fields` is missing"),
            (
                r#"{"handle":7,"fields":{"password":"canary-1"}}"#,
                "`handle` must be a string",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1"},"x":"canary-1"}"#,
                "only the keys",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1","n":5}}"#,
                "`fields` must map names to strings",
            ),
            (
                r#"{"handle":"h","fields":["canary-1"]}"#,
                "`fields` must map names to strings",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1"}"#,
                "unexpected end",
            ),
            (
                r#"{"handle":"h","fields":{"password":"canary-1"}} canary-1"#,
                "syntax error",
            ),
            (r#"["h",{"password":"canary-1"}]"#, "not a JSON object"),
            ("", "stdout is empty"),
        ];
        for (stdout, want) in cases {
            let got = reason(stdout);
            assert!(got.contains(want), "{stdout}: {got}");
            assert!(!got.contains("canary"), "{stdout}: {got}");
        }
    }

    #[test]
    fn verify_and_retire_answers_must_be_objects_of_any_content() {
        assert!(parse_any_object("{}").is_ok());
        assert!(parse_any_object(r#"{"note":"fine","n":[1]}"#).is_ok());
        for bad in ["", "[]", "null", "\"ok\"", "{", "{} {}"] {
            assert!(parse_any_object(bad).is_err(), "{bad:?} accepted");
        }
    }
}
