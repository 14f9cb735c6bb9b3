//! Where pushes go: the [`Pusher`] trait, so the protocol runs without HTTP in tests; Vercel
//! ([`VercelPusher`]) in a real run; a redacted preview ([`PreviewPusher`]) in a dry run.
//! Also rendering a policy's secrets from a credential's fields.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Job, RotationError};
use crate::providers::Credential;
use crate::secret::{ExposeSecret, SecretString};
use crate::token::{HeldToken, Tokens};
use crate::vercel::{InstallationRef, Notification, PushSecret, VercelClient, VercelError};

/// What came of a push that did not fail.
#[derive(Debug)]
pub enum Delivery {
    /// Vercel answered with a 2xx: it holds the values.
    Sent,
    /// A dry run: nothing was sent; this is what would have been.
    Previewed {
        request_line: String,
        preview: String,
    },
}

#[async_trait]
pub trait Pusher: Send + Sync {
    /// Sends the rendered secrets to the job's resource (`partial: true`). On failure,
    /// [`RotationError::may_have_applied`] says whether Vercel may hold them all the same.
    async fn push(&self, job: &Job, secrets: &[PushSecret]) -> Result<Delivery, RotationError>;

    /// Shows the redeploy banner on the resource; a failure never fails the rotation.
    async fn notify(&self, job: &Job, notification: &Notification) -> Result<(), RotationError>;
}

/// Pushes to Vercel with each installation's own token.
///
/// A token from a token command that Vercel refuses (401) is dropped and asked for once more,
/// and the call is made once more with the new one; a second 401 is the call's error. A fixed
/// token (file, environment, credential) is not asked for again: the first 401 is the error.
pub struct VercelPusher {
    pub client: VercelClient,
    /// Shared with discovery's listings.
    pub tokens: Arc<Tokens>,
}

/// The two calls a pusher makes, so both share the token handling.
#[derive(Clone, Copy)]
enum Call<'a> {
    Push(&'a [PushSecret]),
    Notify(&'a Notification),
}

impl VercelPusher {
    async fn token(&self, job: &Job) -> Result<HeldToken, RotationError> {
        self.tokens
            .get(&job.installation)
            .await
            .map_err(|source| RotationError::Token {
                installation: job.installation.name.clone(),
                source: Box::new(source),
            })
    }

    async fn send(&self, job: &Job, token: &HeldToken, call: Call<'_>) -> Result<(), VercelError> {
        let installation = InstallationRef {
            name: &job.installation.name,
            id: &job.installation.id,
            token: token.token(),
        };
        match call {
            Call::Push(secrets) => {
                self.client
                    .update_resource_secrets(&installation, job.resource(), secrets)
                    .await
            }
            Call::Notify(notification) => {
                self.client
                    .notify_resource(&installation, job.resource(), notification)
                    .await
            }
        }
    }

    /// Makes `call` with the installation's token, and once more with a new one if Vercel
    /// refused a token command's token.
    async fn call(&self, job: &Job, call: Call<'_>) -> Result<(), RotationError> {
        let token = self.token(job).await?;
        let first = match self.send(job, &token, call).await {
            Err(e) if e.status() == Some(401) => e,
            other => return other.map_err(RotationError::Vercel),
        };
        if !self.tokens.refused(&token).await {
            return Err(RotationError::Vercel(first));
        }
        tracing::info!(
            installation = %job.installation.name,
            resource = %job.resource(),
            "Vercel refused the installation's token (401); asking its token command for a new one"
        );
        let token = match self.token(job).await {
            Ok(token) => token,
            // An earlier attempt that may have been applied must stay on record: it decides
            // whether the new credential may be retired as never delivered.
            Err(e) if first.may_have_applied() => {
                tracing::warn!(installation = %job.installation.name, error = %e, "could not get a new token after Vercel refused the old one");
                return Err(RotationError::Vercel(first));
            }
            Err(e) => return Err(e),
        };
        match self.send(job, &token, call).await {
            Ok(()) => Ok(()),
            Err(second) => {
                if second.status() == Some(401) {
                    self.tokens.refused(&token).await;
                }
                Err(RotationError::Vercel(if first.may_have_applied() {
                    second.after_uncertain_attempt()
                } else {
                    second
                }))
            }
        }
    }
}

#[async_trait]
impl Pusher for VercelPusher {
    async fn push(&self, job: &Job, secrets: &[PushSecret]) -> Result<Delivery, RotationError> {
        self.call(job, Call::Push(secrets))
            .await
            .map(|()| Delivery::Sent)
    }

    async fn notify(&self, job: &Job, notification: &Notification) -> Result<(), RotationError> {
        self.call(job, Call::Notify(notification)).await
    }
}

/// A dry run's pusher: sends nothing and answers with the request that would have gone out.
/// The credential is the dry-run provider's, whose fields are placeholders (`<password>`), so
/// the preview reveals no value.
pub struct PreviewPusher;

#[async_trait]
impl Pusher for PreviewPusher {
    async fn push(&self, job: &Job, secrets: &[PushSecret]) -> Result<Delivery, RotationError> {
        Ok(Delivery::Previewed {
            request_line: format!(
                "PUT /v1/installations/{}/resources/{}/secrets",
                job.installation.id,
                job.resource()
            ),
            preview: preview(secrets),
        })
    }

    async fn notify(&self, _job: &Job, _notification: &Notification) -> Result<(), RotationError> {
        Ok(())
    }
}

/// Renders every secret of a policy over a credential's fields and the resource's variables.
pub fn render(
    specs: &[crate::config::SecretSpec],
    credential: &Credential,
    resource: &crate::resource::ResourceInfo,
) -> Result<Vec<PushSecret>, RotationError> {
    specs
        .iter()
        .map(|spec| {
            let err = |source| RotationError::Template {
                secret: spec.env_name(),
                source,
            };
            Ok(PushSecret {
                name: spec.name.clone(),
                value: spec
                    .value
                    .render(&credential.fields, resource)
                    .map_err(err)?,
                prefix: spec.prefix.clone(),
                environment_overrides: spec
                    .environment_overrides
                    .try_map(|t| t.render(&credential.fields, resource))
                    .map_err(err)?,
            })
        })
        .collect()
}

/// Every value pushed, in order: what the fingerprint is taken over.
pub fn push_values(secrets: &[PushSecret]) -> impl Iterator<Item = &SecretString> {
    secrets.iter().flat_map(|s| {
        std::iter::once(&s.value).chain(s.environment_overrides.iter().map(|(_, v)| v))
    })
}

/// The body a dry run would have sent, pretty-printed.
fn preview(secrets: &[PushSecret]) -> String {
    let items: Vec<serde_json::Value> = secrets
        .iter()
        .map(|s| {
            let mut item = serde_json::Map::new();
            item.insert("name".into(), s.name.clone().into());
            item.insert("value".into(), s.value.expose_secret().into());
            if let Some(prefix) = &s.prefix {
                item.insert("prefix".into(), prefix.clone().into());
            }
            if !s.environment_overrides.is_empty() {
                let overrides: serde_json::Map<String, serde_json::Value> = s
                    .environment_overrides
                    .iter()
                    .map(|(env, v)| (env.to_owned(), v.expose_secret().into()))
                    .collect();
                item.insert("environmentOverrides".into(), overrides.into());
            }
            item.into()
        })
        .collect();
    let body = serde_json::json!({ "secrets": items, "partial": true });
    serde_json::to_string_pretty(&body).unwrap_or_default()
}
