//! The `command` provider: an external program makes, checks and retires credentials, spoken
//! to with DESIGN's JSON protocol (one JSON object on stdin, one on stdout, exit status).
//!
//! The protocol's messages (the requests and the strict parsing of the answers) are
//! `protocol.rs`'s, shared with the `http` provider. Running the program (no shell, cleared
//! environment, timeout, output caps, stderr scrubbing, exit-status meaning) is `process.rs`,
//! shared with `random`'s `apply`. This file maps one onto the other:
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

use super::process::{self, Invocation, Reply, Required, SecretBuf};
use super::protocol::{self, Channel, Request};
use super::{Credential, Outcome, Provider, ProviderError, Target};
use crate::config::CommandConfig;

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

    fn encode(&self, request: &Request<'_>) -> Result<SecretBuf, ProviderError> {
        request.encode().map_err(|e| ProviderError::Io {
            program: self.config.command.display_name(),
            action: request.action(),
            source: std::io::Error::other(format!(
                "could not encode the request ({:?})",
                e.classify()
            )),
        })
    }

    /// Runs an optional action (`verify`, `retire`): any JSON object answers it, exit 3 says
    /// the program does not implement it.
    async fn call_optional(&self, request: Request<'_>) -> Result<Outcome, ProviderError> {
        let encoded = self.encode(&request)?;
        let reply = self
            .invocation(request.action(), Required::No)
            .call(&encoded, &request.secrets(), |stdout| {
                protocol::parse_any_object(stdout, Channel::Stdout)
            })
            .await?;
        Ok(match reply {
            Reply::Done(()) => Outcome::Done,
            Reply::Unsupported => Outcome::Unsupported,
        })
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
        let request = Request::Create {
            target,
            rotation_id,
            previous_handle,
        };
        let action = request.action();
        let encoded = self.encode(&request)?;
        let invocation = self.invocation(
            action,
            Required::Yes("the program does not implement `create`, which every provider must"),
        );
        let promised = self.config.fields.as_deref();
        let reply = invocation
            .call(&encoded, &[], |stdout| {
                protocol::parse_create(stdout, Channel::Stdout, promised)
            })
            .await?;
        match reply {
            Reply::Done(credential) => Ok(credential),
            // `Required::Yes` turns exit 3 into an error; this arm is never taken.
            Reply::Unsupported => Err(ProviderError::BadOutput {
                program: self.config.command.display_name(),
                action,
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
        self.call_optional(Request::Verify {
            target,
            rotation_id,
            credential,
        })
        .await
    }

    async fn retire(&self, target: &Target, handle: &str) -> Result<Outcome, ProviderError> {
        self.call_optional(Request::Retire { target, handle }).await
    }

    /// The program can be run: a rotation would otherwise fail, permanently, at its first
    /// `create`. Nothing is run.
    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        let found = process::resolve_program(&self.config.command.program).map_err(|reason| {
            ProviderError::ProgramUnusable {
                key: "provider.command",
                reason,
            }
        })?;
        Ok(vec![format!("program {} is executable", found.display())])
    }
}
