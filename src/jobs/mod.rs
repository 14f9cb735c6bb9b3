//! Job selection: which (policy, resource) keys a run tends, each with its provider, for both
//! `run --once` and the daemon.
//!
//! Besides the configured keys, the state may hold records the config no longer names (a
//! policy renamed, a resource removed). Their pending retirements still run: [`with_records`]
//! gives each one a job, with the provider of the policy of the same name or of the policy that
//! now pushes the same secrets to the same resource, and tells that policy's job to supersede
//! the old record's credentials when it pushes.
//!
//! The keys come from the config (`installation` with `resources = [...]`) and from the
//! [`Fleet`]: the installations discovery found and what their listings hold, matched by each
//! policy's installation scope and resource selector.
//!
//! Each job's provider comes from [`PolicyJobs`] (`build.rs`): one shared by the policy's
//! resources when its provider table is the same for all, one per resource when the table is
//! templated (`{resource.id}`), and for a resource the templates cannot serve a provider whose
//! every call fails, naming the key and the resource, so only that resource fails. Jobs
//! against one backend (the same rendered `admin-url-file`) share one semaphore of
//! `max-concurrent-per-target` permits. [`Claims`] keeps two jobs from alternating one pair of
//! database users or pushing one secret of one resource.

mod build;
mod fleet;

use std::collections::HashMap;
use std::sync::Arc;

use tracing::error;

pub use build::{Claim, Claims, InstallationJobs, PolicyJobs, provider_config};
pub use fleet::{Fleet, Member};

use crate::config::{Config, Installation};
use crate::resource::ResourceInfo;
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

/// Each policy's [`PolicyJobs`], built once per config, in config order.
pub struct Builders {
    policies: Vec<PolicyJobs>,
}

impl Builders {
    pub fn new(config: &Config, providers: Providers) -> Builders {
        let mut pushers: HashMap<String, usize> = HashMap::new();
        for policy in &config.policies {
            for secret in &policy.secrets {
                *pushers.entry(secret.env_name()).or_default() += 1;
            }
        }
        Builders {
            policies: config
                .policies
                .iter()
                .map(|p| {
                    let contested = p
                        .secrets
                        .iter()
                        .map(|s| s.env_name())
                        .filter(|n| pushers.get(n).is_some_and(|&count| count > 1))
                        .collect();
                    PolicyJobs::contesting(Arc::new(p.clone()), providers, contested)
                })
                .collect(),
        }
    }

    /// Every job the config and the fleet make: each policy's listed resources, then what
    /// each policy selects from the listings of the installations it covers; each job's
    /// claims recorded in `claims` (a later job that claims what an earlier one holds fails
    /// every call, naming the holder).
    pub fn all(&self, config: &Config, fleet: &Fleet, claims: &mut Claims) -> Vec<Job> {
        let mut jobs = Vec::new();
        let mut keys: HashMap<Key, String> = HashMap::new();
        for builder in &self.policies {
            let policy = builder.policy();
            if let Some((name, ids)) = policy.configured() {
                let Some(installation) = config.installations.get(name) else {
                    continue; // validation guarantees it exists
                };
                let member = fleet.get(&installation.id);
                let installation = member.map_or_else(
                    || Arc::new(installation.clone()),
                    |m| m.installation.clone(),
                );
                let in_installation = builder.in_installation(installation.clone());
                for id in ids {
                    let info = Arc::new(ResourceInfo::configured(&installation.id, id));
                    let (mut job, job_claims) = in_installation.job(info);
                    claims.claim(&mut job, job_claims);
                    keys.insert(job.key.clone(), installation.id.clone());
                    jobs.push(job);
                }
                continue;
            }
            for member in fleet.members() {
                for job in Self::discovered(builder, member, claims) {
                    match keys.get(&job.key) {
                        Some(other) => {
                            duplicate(&job, other);
                            claims.release(&job.key);
                        }
                        None => {
                            keys.insert(job.key.clone(), member.installation.id.clone());
                            jobs.push(job);
                        }
                    }
                }
            }
        }
        jobs
    }

    /// The jobs every policy makes from one installation's listing. `taken` says whether a
    /// key is already another installation's (a resource id both list under one policy):
    /// such a job is left out and logged.
    pub fn of_installation(
        &self,
        member: &Member,
        claims: &mut Claims,
        taken: &dyn Fn(&Key) -> Option<String>,
    ) -> Vec<Job> {
        let mut jobs = Vec::new();
        for builder in &self.policies {
            for job in Self::discovered(builder, member, claims) {
                match taken(&job.key) {
                    Some(other) => {
                        duplicate(&job, &other);
                        claims.release(&job.key);
                    }
                    None => jobs.push(job),
                }
            }
        }
        jobs
    }

    fn discovered(builder: &PolicyJobs, member: &Member, claims: &mut Claims) -> Vec<Job> {
        let policy = builder.policy();
        let installation = &member.installation;
        if !policy.is_discovered()
            || !policy
                .installations
                .covers(&installation.name, &installation.id)
        {
            return Vec::new();
        }
        let Some(listed) = &member.listed else {
            return Vec::new();
        };
        let in_installation = builder.in_installation(installation.clone());
        let mut jobs = Vec::new();
        for resource in listed.iter().filter(|r| policy.resources.matches(r)) {
            let (mut job, job_claims) = in_installation.job(resource.clone());
            claims.claim(&mut job, job_claims);
            jobs.push(job);
        }
        jobs
    }
}

fn duplicate(job: &Job, other: &str) {
    error!(
        policy = %job.key.policy,
        resource = %job.key.resource,
        installation_id = %job.installation.id,
        other_installation_id = %other,
        "two installations list a resource with the same id under one policy; only the first is rotated (its key, policy/resource, must name one resource)"
    );
}

/// The keys the config and the fleet make, without building a provider: what `status`
/// calls "in config". Matches [`Builders::all`] key for key.
pub fn keys(config: &Config, fleet: &Fleet) -> std::collections::BTreeSet<Key> {
    let mut keys = std::collections::BTreeSet::new();
    for policy in &config.policies {
        let name: Arc<str> = policy.name.as_str().into();
        let key = |resource: &str| Key::new(name.clone(), resource);
        if let Some((_, ids)) = policy.configured() {
            keys.extend(ids.iter().map(|id| key(id)));
            continue;
        }
        for member in fleet.members() {
            let installation = &member.installation;
            if !policy
                .installations
                .covers(&installation.name, &installation.id)
            {
                continue;
            }
            if let Some(listed) = &member.listed {
                keys.extend(
                    listed
                        .iter()
                        .filter(|r| policy.resources.matches(r))
                        .map(|r| key(&r.id)),
                );
            }
        }
    }
    keys
}

/// Whether any policy needs the installation's listing.
pub fn needs_listing(config: &Config, installation: &Installation) -> bool {
    config
        .policies
        .iter()
        .any(|p| p.is_discovered() && p.installations.covers(&installation.name, &installation.id))
}

/// The jobs the selectors pick (all, when there are none), in config order: configured
/// resources and those the fleet's listings hold.
pub fn select(
    config: &Config,
    fleet: &Fleet,
    selectors: &[Selector],
    providers: Providers,
) -> Result<Vec<Job>, SelectError> {
    check_policies(config, selectors)?;
    let jobs = Builders::new(config, providers).all(config, fleet, &mut Claims::default());
    check_resources(selectors, jobs.iter().map(|j| &j.key))?;
    Ok(jobs
        .into_iter()
        .filter(|j| is_selected(selectors, &j.key))
        .collect())
}

/// Every selector names a policy of the config.
pub fn check_policies(config: &Config, selectors: &[Selector]) -> Result<(), SelectError> {
    for sel in selectors {
        if !config.policies.iter().any(|p| p.name == sel.policy) {
            return Err(SelectError::UnknownPolicy {
                selector: sel.to_string(),
                policy: sel.policy.clone(),
                known: names(config.policies.iter().map(|p| p.name.as_str())),
            });
        }
    }
    Ok(())
}

/// Every `NAME/RESOURCE_ID` selector names one of `keys` (the jobs there are).
pub fn check_resources<'a>(
    selectors: &[Selector],
    keys: impl Iterator<Item = &'a Key> + Clone,
) -> Result<(), SelectError> {
    for sel in selectors {
        let Some(resource) = &sel.resource else {
            continue;
        };
        let mut of_policy = keys.clone().filter(|k| *k.policy == *sel.policy);
        if of_policy.clone().any(|k| *k.resource == **resource) {
            continue;
        }
        let mut known: Vec<&str> = of_policy.by_ref().map(|k| &*k.resource).collect();
        known.sort_unstable();
        let more = known.len().saturating_sub(KNOWN_SHOWN);
        known.truncate(KNOWN_SHOWN);
        let mut known = if known.is_empty() {
            "none known yet".to_owned()
        } else {
            names(known.into_iter())
        };
        if more > 0 {
            known.push_str(&format!(" and {more} more"));
        }
        return Err(SelectError::UnknownResource {
            selector: sel.to_string(),
            policy: sel.policy.clone(),
            resource: resource.clone(),
            known,
        });
    }
    Ok(())
}

/// Whether the selectors pick `key` (all do, when there are none).
pub fn is_selected(selectors: &[Selector], key: &Key) -> bool {
    selectors.is_empty()
        || selectors.iter().any(|s| {
            *s.policy == *key.policy && s.resource.as_deref().is_none_or(|r| r == &*key.resource)
        })
}

/// How many of a policy's resources an unknown-resource error lists.
const KNOWN_SHOWN: usize = 20;

/// Every configured (policy, resource) and every one the fleet's listings hold, with live
/// providers.
pub fn all(config: &Config, fleet: &Fleet) -> Vec<Job> {
    // No selectors: nothing to refuse.
    select(config, fleet, &[], Providers::Live).unwrap_or_default()
}

/// `jobs` (the configured and discovered ones) plus a job for each record they do not name
/// and that still holds something to finish or retire; jobs learn which of those records
/// their push supersedes. A record nobody can retire is logged as an error and left for
/// `status` to show.
pub fn with_records(
    config: &Config,
    fleet: &Fleet,
    mut jobs: Vec<Job>,
    store: &dyn StateStore,
) -> Vec<Job> {
    // The records no job names, copied out while the jobs' keys are borrowed.
    let others: Vec<Record> = {
        let named: std::collections::HashSet<&Key> = jobs.iter().map(|j| &j.key).collect();
        let mut others = Vec::new();
        store.visit(&mut |record| {
            if !named.contains(&record.key) {
                others.push(record.clone());
            }
        });
        others
    };
    let mut extra = Vec::new();
    for record in others {
        match orphan_job(config, fleet, &jobs, &record) {
            Orphan::Job(job, successor) => {
                if let Some(i) = successor {
                    jobs[i].supersedes.push(record.key.clone());
                }
                extra.push(job);
            }
            Orphan::Nobody if record.holds_live_credentials() => error!(
                policy = %record.key.policy,
                resource = %record.key.resource,
                retirements = record.retirements.len(),
                "the state holds credentials of a policy no longer in the config, and no policy there can retire them: put the policy back (or one that pushes the same secrets to that resource), or retire them by hand (`status` lists them)"
            ),
            Orphan::Nobody => {}
        }
    }
    jobs.extend(extra);
    jobs
}

/// What becomes of a record no job names.
pub enum Orphan {
    /// A job that finishes and retires what it left, tended by the policy of the same name or
    /// the one that now pushes the same secrets to the same resource (its index in the jobs:
    /// that job supersedes the record).
    Job(Job, Option<usize>),
    /// No policy can retire it.
    Nobody,
}

/// The job of a record that `jobs` do not name (a renamed policy's, a removed or departed
/// resource's). Its installation is the fleet's, the config's or, for a departed discovered
/// one, rebuilt from `[discovery]`; its resource is what was known of it when it left.
pub fn orphan_job(config: &Config, fleet: &Fleet, jobs: &[Job], record: &Record) -> Orphan {
    let installation_id: Option<String> = record
        .installation_id
        .as_deref()
        .map(str::to_owned)
        .or_else(|| {
            config
                .installations
                .get(&*record.installation)
                .map(|i| i.id.clone())
        });
    // The job that pushes the same secret names to the same resource.
    let successor = installation_id.as_ref().and_then(|id| {
        jobs.iter().position(|j| {
            j.in_config
                && j.installation.id == *id
                && j.resource() == &*record.key.resource
                && j.secret_names().iter().any(|n| record.secrets.contains(n))
        })
    });
    let installation: Option<Arc<Installation>> = installation_id
        .as_ref()
        .and_then(|id| fleet.get(id).map(|m| m.installation.clone()))
        .or_else(|| {
            config
                .installations
                .get(&*record.installation)
                .map(|i| Arc::new(i.clone()))
        })
        .or_else(|| {
            let id = installation_id.as_ref()?;
            Some(Arc::new(config.discovery.as_ref()?.installation_by_id(id)?))
        });
    let same_name = config
        .policies
        .iter()
        .find(|p| *p.name == *record.key.policy);
    let source = match (same_name, successor) {
        (Some(policy), _) => installation.map(|i| (Arc::new(policy.clone()), i)),
        (None, Some(i)) => Some((jobs[i].policy.clone(), jobs[i].installation.clone())),
        (None, None) => None,
    };
    let Some((policy, installation)) = source else {
        return Orphan::Nobody;
    };
    let resource = fleet
        .departed(&installation.id, &record.key.resource)
        .cloned()
        .unwrap_or_else(|| {
            Arc::new(ResourceInfo::configured(
                &installation.id,
                &record.key.resource,
            ))
        });
    let builder = PolicyJobs::new(policy, Providers::Live);
    let (mut job, _) =
        builder
            .in_installation(installation)
            .job_keyed(record.key.clone(), resource, false);
    job.replaced_later = successor.is_some();
    Orphan::Job(job, successor)
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
