//! The `token-command` source: a program of the partner's that prints a (short-lived) token
//! for an installation, run with the hardened child-process runner (`crate::child`: pipes
//! only, cleared environment, timeout, parent-death signal, scrubbed stderr).
//!
//! Protocol (DESIGN, "Fleets"): `{"action": "token", "installation_id": "icfg_..."}` on stdin;
//! exit 0 with exactly `{"token": "...", "expires_in": 3600}` on stdout (`expires_in` in
//! seconds, optional: no expiry known). Any other answer is `BadOutput` (permanent), exit 3
//! says the program does not implement `token` (permanent), any other exit follows the
//! providers' rules (permanent for the sysexits codes 64, 65, 77, 78, transient otherwise).
//! Reasons never quote the answer: it holds the token.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use super::TokenError;
use super::cache::{Fresh, TokenFetcher};
use crate::child::{ChildError, Invocation, Reply, Required, SecretBuf, SecretValues};
use crate::config::CommandSpec;

/// How long one call may take. A token service answers in a second or two; past this it is
/// stuck, and the push that waits on it is better failed (transient) and retried.
pub const TOKEN_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

const ACTION: &str = "token";

/// One configured token program.
#[derive(Debug, Clone)]
pub struct TokenCommand {
    spec: CommandSpec,
    timeout: Duration,
}

#[derive(Serialize)]
struct TokenRequest<'a> {
    action: &'static str,
    installation_id: &'a str,
}

/// The answer. The token goes straight into a `SecretString` as serde reads it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenAnswer {
    token: SecretString,
    #[serde(default)]
    expires_in: Option<u64>,
}

const ANSWER_SHAPE: &str = "an object with `token` (a string) and optionally `expires_in` (whole seconds, not negative), and no other key";

impl SecretValues for Fresh {
    fn secret_values(&self) -> Vec<&SecretString> {
        vec![&self.token]
    }
}

impl TokenCommand {
    pub fn new(spec: CommandSpec) -> TokenCommand {
        TokenCommand {
            spec,
            timeout: TOKEN_COMMAND_TIMEOUT,
        }
    }

    pub fn spec(&self) -> &CommandSpec {
        &self.spec
    }

    fn failed(&self, installation_id: &str, source: ChildError) -> TokenError {
        TokenError::Command {
            installation_id: installation_id.to_owned(),
            source: Box::new(source),
        }
    }
}

#[async_trait]
impl TokenFetcher for TokenCommand {
    async fn fetch(&self, installation_id: &str) -> Result<Fresh, TokenError> {
        let request = SecretBuf::json(&TokenRequest {
            action: ACTION,
            installation_id,
        })
        .map_err(|e| {
            self.failed(
                installation_id,
                ChildError::Io {
                    program: self.spec.display_name(),
                    action: ACTION,
                    source: std::io::Error::other(format!(
                        "could not encode the request ({:?})",
                        e.classify()
                    )),
                },
            )
        })?;
        let invocation = Invocation {
            spec: &self.spec,
            action: ACTION,
            timeout: self.timeout,
            required: Required::Yes("the program does not implement `token`"),
        };
        tracing::debug!(program = %self.spec.display_name(), installation_id, "asking the token command for a token");
        match invocation.call(&request, &[], parse_answer).await {
            Ok(Reply::Done(fresh)) => Ok(fresh),
            // `Required::Yes` turns exit 3 into an error; this arm is never taken.
            Ok(Reply::Unsupported) => Err(self.failed(
                installation_id,
                ChildError::BadOutput {
                    program: self.spec.display_name(),
                    action: ACTION,
                    reason: "the program does not implement `token`".to_owned(),
                },
            )),
            Err(e) => Err(self.failed(installation_id, e)),
        }
    }
}

/// Parses the answer strictly; the reason never quotes it.
fn parse_answer(text: &str) -> Result<Fresh, String> {
    if !text.trim_start().starts_with('{') {
        return Err(format!(
            "stdout is not a JSON object; expected {ANSWER_SHAPE}"
        ));
    }
    let answer: TokenAnswer = serde_json::from_str(text).map_err(|e| {
        format!(
            "stdout is not the expected JSON: {ANSWER_SHAPE} (error at line {}, column {})",
            e.line(),
            e.column()
        )
    })?;
    let value = answer.token.expose_secret();
    if value.is_empty() {
        return Err("the token is empty".to_owned());
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(
            "the token holds whitespace or control characters, which cannot go in an HTTP header"
                .to_owned(),
        );
    }
    Ok(Fresh {
        token: answer.token,
        expires_in: answer.expires_in.map(Duration::from_secs),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_strictly_and_never_quote_the_token() {
        let ok = parse_answer(r#"{"token":"tok_canary","expires_in":3600}"#).unwrap();
        assert_eq!(ok.token.expose_secret(), "tok_canary");
        assert_eq!(ok.expires_in, Some(Duration::from_secs(3600)));
        let no_expiry = parse_answer(r#"{"token":"tok_canary"}"#).unwrap();
        assert_eq!(no_expiry.expires_in, None);
        let null_expiry = parse_answer(r#"{"token":"tok_canary","expires_in":null}"#).unwrap();
        assert_eq!(null_expiry.expires_in, None);
        for bad in [
            "",
            "tok_canary",
            "[\"tok_canary\"]",
            r#"{"token":"tok_canary","expires_in":-1}"#,
            r#"{"token":"tok_canary","expires_in":"3600"}"#,
            r#"{"token":"tok_canary","refresh_token":"tok_canary2"}"#,
            r#"{"token":"tok canary"}"#,
            r#"{"token":""}"#,
            r#"{"expires_in":3600}"#,
            r#"{"token":"tok_canary""#,
        ] {
            let reason = parse_answer(bad)
                .err()
                .unwrap_or_else(|| panic!("{bad:?} accepted"));
            assert!(!reason.contains("canary"), "{bad:?}: {reason}");
        }
    }

    #[test]
    fn the_request_is_the_protocol_s() {
        let buf = SecretBuf::json(&TokenRequest {
            action: ACTION,
            installation_id: "icfg_1",
        })
        .unwrap();
        assert_eq!(
            buf.as_bytes(),
            br#"{"action":"token","installation_id":"icfg_1"}"#
        );
    }
}
