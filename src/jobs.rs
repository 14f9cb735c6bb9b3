//! Job selection: which (policy, resource) keys a run tends, each with its provider, for both
//! `run --once` and the daemon.
//!
//! Besides the configured keys, the state may hold records the config no longer names (a
//! policy renamed, a resource removed). Their pending retirements still run: [`with_records`]
//! gives each one a job, with the provider of the policy of the same name or of the policy that
//! now pushes the same secrets to the same resource, and tells that policy's job to supersede
//! the old record's credentials when it pushes.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use tracing::error;

use crate::config::{Config, Installation, Policy};
use crate::providers::{self, Provider, dry_run::DryRunProvider};
use crate::rotation::Job;
use crate::state::{Key, Record, StateStore};

/// A `--policy` argument: `NAME` or `NAME/RESOURCE_ID`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub policy: String,
    pub resource: Option<String>,
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.resource {
            Some(r) => write!(f, "{}/{r}", self.policy),
            None => write!(f, "{}", self.policy),
        }
    }
}

impl std::str::FromStr for Selector {
    type Err = String;

    fn from_str(s: &str) -> Result<Selector, String> {
        // Policy names cannot hold `/` (the config refuses it); resource ids might.
        let (policy, resource) = match s.split_once('/') {
            Some((p, r)) => (p, Some(r)),
            None => (s, None),
        };
        if policy.is_empty() || resource.is_some_and(str::is_empty) {
            return Err(format!("\"{s}\" is not NAME or NAME/RESOURCE_ID"));
        }
        Ok(Selector {
            policy: policy.to_owned(),
            resource: resource.map(str::to_owned),
        })
    }
}

/// A selector that names nothing in the config: a usage error.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    #[error("--policy {selector}: no policy is named \"{policy}\" (policies: {known})")]
    UnknownPolicy {
        selector: String,
        policy: String,
        known: String,
    },
    #[error(
        "--policy {selector}: policy \"{policy}\" has no resource \"{resource}\" (its resources: {known})"
    )]
    UnknownResource {
        selector: String,
        policy: String,
        resource: String,
        known: String,
    },
}

/// Whether providers are real or a dry run's placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Providers {
    Live,
    DryRun,
}

/// The configured jobs the selectors pick (all, when there are none), in config order.
pub fn select(
    config: &Config,
    selectors: &[Selector],
    providers: Providers,
) -> Result<Vec<Job>, SelectError> {
    for sel in selectors {
        let Some(policy) = config.policies.iter().find(|p| p.name == sel.policy) else {
            return Err(SelectError::UnknownPolicy {
                selector: sel.to_string(),
                policy: sel.policy.clone(),
                known: names(config.policies.iter().map(|p| p.name.as_str())),
            });
        };
        if let Some(resource) = &sel.resource
            && !policy.resources.contains(resource)
        {
            return Err(SelectError::UnknownResource {
                selector: sel.to_string(),
                policy: policy.name.clone(),
                resource: resource.clone(),
                known: names(policy.resources.iter().map(String::as_str)),
            });
        }
    }
    let wanted = |policy: &str, resource: &str| {
        selectors.is_empty()
            || selectors
                .iter()
                .any(|s| s.policy == policy && s.resource.as_deref().is_none_or(|r| r == resource))
    };
    let mut jobs = Vec::new();
    for policy in &config.policies {
        let Some(installation) = config.installations.get(&policy.installation) else {
            continue; // validation guarantees it exists
        };
        let resources: Vec<&String> = policy
            .resources
            .iter()
            .filter(|r| wanted(&policy.name, r))
            .collect();
        if resources.is_empty() {
            continue;
        }
        let provider = build_provider(policy, providers);
        let policy_arc = Arc::new(policy.clone());
        let installation = Arc::new(installation.clone());
        let digest = policy.digest(&installation);
        for resource in resources {
            jobs.push(Job {
                key: Key {
                    policy: policy.name.clone(),
                    resource: resource.clone(),
                },
                policy: policy_arc.clone(),
                installation: installation.clone(),
                provider: provider.clone(),
                in_config: true,
                supersedes: Vec::new(),
                replaced_later: false,
                digest: digest.clone(),
            });
        }
    }
    Ok(jobs)
}

/// Every configured (policy, resource), with live providers.
pub fn all(config: &Config) -> Vec<Job> {
    // No selectors: nothing to refuse.
    select(config, &[], Providers::Live).unwrap_or_default()
}

/// `jobs` (the configured ones) plus a job for each record the config no longer names and
/// that still holds something to finish or retire; configured jobs learn which of those
/// records their push supersedes. A record nobody can retire is logged as an error and left
/// for `status` to show.
pub fn with_records(config: &Config, mut jobs: Vec<Job>, store: &dyn StateStore) -> Vec<Job> {
    let configured: HashMap<Key, usize> = jobs
        .iter()
        .enumerate()
        .map(|(i, j)| (j.key.clone(), i))
        .collect();
    let mut others: Vec<Record> = Vec::new();
    store.visit(&mut |record| {
        if !configured.contains_key(&record.key) {
            others.push(record.clone());
        }
    });
    let mut extra = Vec::new();
    for record in others {
        let installation_id = record.installation_id.clone().or_else(|| {
            config
                .installations
                .get(&record.installation)
                .map(|i| i.id.clone())
        });
        // The configured job that pushes the same secret names to the same resource.
        let successor = installation_id.as_ref().and_then(|id| {
            jobs.iter().position(|j| {
                j.installation.id == *id
                    && j.resource() == record.key.resource
                    && j.secret_names().iter().any(|n| record.secrets.contains(n))
            })
        });
        if let Some(i) = successor {
            jobs[i].supersedes.push(record.key.clone());
        }
        // Whose provider retires what it left: the policy of the same name, else the
        // successor's.
        let same_name = config.policies.iter().find(|p| p.name == record.key.policy);
        let source = match (same_name, successor) {
            (Some(policy), _) => config
                .installations
                .get(&policy.installation)
                .map(|i| (policy, i)),
            (None, Some(i)) => Some((jobs[i].policy.as_ref(), jobs[i].installation.as_ref())),
            (None, None) => None,
        };
        match source {
            Some((policy, installation)) => extra.push(orphan_job(
                record.key,
                policy,
                installation,
                successor.is_some(),
            )),
            None if record.holds_live_credentials() => error!(
                policy = %record.key.policy,
                resource = %record.key.resource,
                retirements = record.retirements.len(),
                "the state holds credentials of a policy no longer in the config, and no policy there can retire them: put the policy back (or one that pushes the same secrets to that resource), or retire them by hand (`status` lists them)"
            ),
            None => {}
        }
    }
    jobs.extend(extra);
    jobs
}

fn orphan_job(key: Key, policy: &Policy, installation: &Installation, replaced_later: bool) -> Job {
    Job {
        key,
        digest: policy.digest(installation),
        provider: build_provider(policy, Providers::Live),
        policy: Arc::new(policy.clone()),
        installation: Arc::new(installation.clone()),
        in_config: false,
        supersedes: Vec::new(),
        replaced_later,
    }
}

fn build_provider(policy: &Policy, providers: Providers) -> Arc<dyn Provider> {
    match providers {
        Providers::Live => Arc::from(providers::build(&policy.provider)),
        Providers::DryRun => {
            // Dry run never calls a provider: it yields placeholders for the fields the
            // templates use, so the preview shows each value's shape and nothing else.
            let fields: BTreeSet<String> = policy
                .secrets
                .iter()
                .flat_map(|s| s.templates())
                .flat_map(|t| t.fields())
                .map(str::to_owned)
                .collect();
            // It stands in for the real provider (building one calls nothing), so a dry run is
            // held back where a real one would be.
            let real = providers::build(&policy.provider);
            Arc::new(DryRunProvider::standing_in_for(
                real.as_ref(),
                fields.into_iter().collect(),
            ))
        }
    }
}

fn names<'a>(names: impl Iterator<Item = &'a str>) -> String {
    names.collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse() {
        let s: Selector = "orders-db".parse().unwrap();
        assert_eq!(
            s,
            Selector {
                policy: "orders-db".into(),
                resource: None
            }
        );
        let s: Selector = "orders-db/store/abc".parse().unwrap();
        assert_eq!(s.resource.as_deref(), Some("store/abc"));
        assert!("".parse::<Selector>().is_err());
        assert!("a/".parse::<Selector>().is_err());
        assert!("/r".parse::<Selector>().is_err());
    }
}
