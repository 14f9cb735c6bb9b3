//! Providers of policies whose templates depend on the resource.
//!
//! - [`Unrenderable`] stands in for the provider of a resource the policy's templates cannot
//!   serve (`{resource.metadata.tier}` on a resource without it): every call fails, naming
//!   the key and the resource, permanently, before anything is made. Only that resource's
//!   rotation fails; the policy's other resources go on.
//! - [`for_check`] gives `check` one provider per policy: for a templated provider table, one
//!   that runs each listed resource's preflight on its rendered table (its own admin file, its
//!   own program), since a path with `{resource.id}` in it is no file to look at.

use async_trait::async_trait;

use super::{Credential, Outcome, Provider, ProviderError, Target, build};
use crate::config::{Config, Policy, ProviderSpec};
use crate::resource::ResourceInfo;

/// The provider of a resource the policy's templates cannot serve.
#[derive(Debug, Clone)]
pub struct Unrenderable {
    kind: &'static str,
    alternates: bool,
    reason: String,
}

impl Unrenderable {
    /// For a policy of provider `kind`; `reason` names the key and the resource.
    pub fn new(kind: &'static str, reason: String) -> Unrenderable {
        Unrenderable {
            kind,
            alternates: matches!(kind, "postgres" | "mysql"),
            reason,
        }
    }

    fn error(&self) -> ProviderError {
        ProviderError::Resource {
            reason: self.reason.clone(),
        }
    }
}

#[async_trait]
impl Provider for Unrenderable {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn alternates(&self) -> bool {
        self.alternates
    }

    async fn create(
        &self,
        _target: &Target,
        _rotation_id: &str,
        _previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        Err(self.error())
    }

    async fn verify(
        &self,
        _target: &Target,
        _rotation_id: &str,
        _credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        Err(self.error())
    }

    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        Err(self.error())
    }

    async fn retire(&self, _target: &Target, _handle: &str) -> Result<Outcome, ProviderError> {
        Err(self.error())
    }
}

/// The provider `check` preflights for `policy`: the shared one, or for a templated table one
/// that checks each listed resource's rendering.
pub fn for_check(config: &Config, policy: &Policy) -> Box<dyn Provider> {
    match &policy.provider {
        ProviderSpec::Shared(c) => build(c),
        ProviderSpec::PerResource(_) => {
            // Only the resources a policy lists by id can be checked before a listing.
            let (name, ids) = policy.configured().unwrap_or(("", &[]));
            let installation_id = config
                .installations
                .get(name)
                .map(|i| i.id.clone())
                .unwrap_or_default();
            let resources = ids
                .iter()
                .map(|resource| {
                    let info = ResourceInfo::configured(&installation_id, resource);
                    let provider = match policy.check_resource(&info) {
                        Err(e) => Err(e.to_string()),
                        Ok(()) => match policy.provider.for_resource(&info) {
                            Ok(c) => Ok(build(&c)),
                            Err(e) => Err(e.to_string()),
                        },
                    };
                    (resource.clone(), provider)
                })
                .collect();
            Box::new(EachResource {
                kind: policy.provider.kind(),
                resources,
            })
        }
    }
}

type Rendered = Result<Box<dyn Provider>, String>;

/// `check`'s view of a templated provider table: each listed resource's own provider.
struct EachResource {
    kind: &'static str,
    /// Each listed resource with its provider, or why its table cannot be rendered.
    resources: Vec<(String, Rendered)>,
}

#[async_trait]
impl Provider for EachResource {
    fn kind(&self) -> &'static str {
        self.kind
    }

    async fn create(
        &self,
        _target: &Target,
        _rotation_id: &str,
        _previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        Err(ProviderError::Resource {
            reason: "a templated provider table is built per resource (a bug: check's view was asked to create)".to_owned(),
        })
    }

    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        if self.resources.is_empty() {
            return Ok(vec![
                "templated per resource: each resource's table is checked as it is rotated"
                    .to_owned(),
            ]);
        }
        let mut facts = Vec::new();
        for (resource, provider) in &self.resources {
            let provider = provider
                .as_ref()
                .map_err(|reason| ProviderError::Resource {
                    reason: reason.clone(),
                })?;
            match provider.preflight().await {
                Ok(lines) => facts.extend(
                    lines
                        .into_iter()
                        .map(|l| format!("resource {resource}: {l}")),
                ),
                // `check` on the host: said, and the other resources are still checked.
                Err(e) if e.is_unverified() => {
                    facts.push(format!(
                        "resource {resource}: NOT VERIFIED on this host: {e}"
                    ));
                }
                Err(e) => {
                    return Err(ProviderError::Resource {
                        reason: format!("resource {resource}: {e}"),
                    });
                }
            }
        }
        Ok(facts)
    }
}
