//! Listing one installation's resources with its token: the call `run --once`, the daemon's
//! discovery and `check --online` share. A token command's token that Vercel refuses (401) is
//! dropped and asked for once more, as a push does.

use async_trait::async_trait;

use crate::config::Installation;
use crate::error::{Classify, Persistence};
use crate::resource::ResourceInfo;
use crate::token::{TokenError, Tokens};
use crate::vercel::{InstallationRef, ListedResource, VercelClient, VercelError};

/// Why a listing failed. Only [`ListError::is_gone`] changes what is known; every other
/// failure leaves the last known listing standing.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Vercel(#[from] VercelError),
}

impl ListError {
    /// Vercel says the installation does not exist (404) or no longer does (410).
    pub fn is_gone(&self) -> bool {
        matches!(self, ListError::Vercel(e) if matches!(e.status(), Some(404 | 410)))
    }
}

impl Classify for ListError {
    fn persistence(&self) -> Persistence {
        match self {
            ListError::Token(e) => e.persistence(),
            ListError::Vercel(e) => e.persistence(),
        }
    }
}

/// Lists one installation's resources, with its token from `tokens`.
pub async fn list_resources(
    client: &VercelClient,
    tokens: &Tokens,
    installation: &Installation,
) -> Result<Vec<ListedResource>, ListError> {
    let mut asked_again = false;
    loop {
        let held = tokens.get(installation).await?;
        let call = InstallationRef {
            name: &installation.name,
            id: &installation.id,
            token: held.token(),
        };
        match client.list_resources(&call).await {
            Ok(listed) => return Ok(listed),
            Err(e) if e.status() == Some(401) && !asked_again && tokens.refused(&held).await => {
                tracing::info!(
                    installation = %installation.name,
                    "Vercel refused the installation's token (401) while listing; asking its token command for a new one"
                );
                asked_again = true;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Where the daemon's discovery lists from: Vercel, or a fake in tests.
#[async_trait]
pub trait Lister: Send + Sync {
    /// The installation's resources as Vercel lists them now.
    async fn list(&self, installation: &Installation) -> Result<Vec<ResourceInfo>, ListError>;

    /// The installation left the fleet: forget what is cached for it (its token).
    fn forget(&self, _installation_id: &str) {}
}

/// Lists through the Vercel client (and its limiter, which pushes share).
pub struct VercelLister {
    pub client: VercelClient,
    pub tokens: std::sync::Arc<Tokens>,
}

#[async_trait]
impl Lister for VercelLister {
    async fn list(&self, installation: &Installation) -> Result<Vec<ResourceInfo>, ListError> {
        let listed = list_resources(&self.client, &self.tokens, installation).await?;
        let id: std::sync::Arc<str> = installation.id.as_str().into();
        Ok(listed.into_iter().map(|r| r.into_info(&id)).collect())
    }

    fn forget(&self, installation_id: &str) {
        self.tokens.forget(installation_id);
    }
}
