//! Job selection: which (policy, resource) keys a run tends, each with its provider, for both
//! `run --once` and the daemon.
//!
//! Besides the configured keys, the state may hold records the config no longer names (a
//! policy renamed, a resource removed). Their pending retirements still run: [`with_records`]
//! gives each one a job, with the provider of the policy of the same name or of the policy that
//! now pushes the same secrets to the same resource, and tells that policy's job to supersede
//! the old record's credentials when it pushes.
//!
//! Each job's provider comes from [`PolicyJobs`]: one shared by the policy's resources when its
//! provider table is the same for all, one per resource when the table is templated
//! (`{resource.id}`), and for a resource the templates cannot serve a provider whose every
//! call fails, naming the key and the resource ([`Unrenderable`]), so only that resource
//! fails. Jobs against one backend (the same rendered `admin-url-file`) share one semaphore
//! of `max-concurrent-per-target` permits.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock, Mutex, Weak};

use tokio::sync::Semaphore;
use tracing::error;

use crate::config::{Config, Installation, Policy, ProviderConfig, ProviderSpec};
use crate::providers::{self, Provider, dry_run::DryRunProvider, per_resource::Unrenderable};
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
        let builder = PolicyJobs::new(policy, installation, providers);
        for resource in resources {
            let info = ResourceInfo::configured(&installation.id, resource);
            jobs.push(builder.job(info));
        }
    }
    refuse_shared_pairs(&mut jobs);
    Ok(jobs)
}

/// A job's provider and its backend's semaphore.
type ProviderAndLimit = (Arc<dyn Provider>, Option<Arc<Semaphore>>);

/// Builds the jobs of one policy, one resource at a time: the configured ones here, the
/// discovered ones as discovery finds them.
pub struct PolicyJobs {
    policy: Arc<Policy>,
    installation: Arc<Installation>,
    digest: Arc<str>,
    providers: Providers,
    /// The provider (and its backend's semaphore) every resource shares, when the provider
    /// table is not templated.
    shared: Option<ProviderAndLimit>,
}

impl PolicyJobs {
    pub fn new(policy: &Policy, installation: &Installation, providers: Providers) -> PolicyJobs {
        let shared = match &policy.provider {
            ProviderSpec::Shared(config) => Some((
                build_provider(policy, config, providers),
                target_limit(policy, config),
            )),
            ProviderSpec::PerResource(_) => None,
        };
        PolicyJobs {
            digest: policy.digest(installation).into(),
            policy: Arc::new(policy.clone()),
            installation: Arc::new(installation.clone()),
            providers,
            shared,
        }
    }

    /// The job of `resource` under this policy (key: the policy's name and the resource id).
    pub fn job(&self, resource: ResourceInfo) -> Job {
        let key = Key {
            policy: self.policy.name.clone(),
            resource: resource.id.clone(),
        };
        self.job_keyed(key, resource, true)
    }

    fn job_keyed(&self, key: Key, resource: ResourceInfo, in_config: bool) -> Job {
        let (provider, target_limit) = self.provider_for(&resource);
        Job {
            key,
            policy: self.policy.clone(),
            installation: self.installation.clone(),
            provider,
            discovered: resource.is_discovered().then(|| Arc::new(resource)),
            target_limit,
            in_config,
            supersedes: Vec::new(),
            replaced_later: false,
            digest: self.digest.clone(),
        }
    }

    /// The provider for `resource` and its backend's semaphore; for a resource the
    /// templates cannot serve, one that fails every call saying why.
    fn provider_for(&self, resource: &ResourceInfo) -> ProviderAndLimit {
        let built = self.policy.check_resource(resource).and_then(|()| {
            if let Some((provider, limit)) = &self.shared {
                return Ok((provider.clone(), limit.clone()));
            }
            let config = self.policy.provider.for_resource(resource)?;
            Ok((
                build_provider(&self.policy, &config, self.providers),
                target_limit(&self.policy, &config),
            ))
        });
        match built {
            Ok(built) => built,
            Err(e) => (
                Arc::new(Unrenderable::new(
                    self.policy.provider.kind(),
                    e.to_string(),
                )),
                None,
            ),
        }
    }
}

/// The rendered provider config of `policy` for `resource` (or why it cannot serve it), for
/// callers that need the config itself rather than a job.
pub fn provider_config(
    policy: &Policy,
    resource: &ResourceInfo,
) -> Result<ProviderConfig, crate::config::ResourceTemplateError> {
    policy.check_resource(resource)?;
    Ok(policy.provider.for_resource(resource)?.into_owned())
}

/// Two resources whose postgres or mysql tables render to the same pair of users (through the
/// same admin file) would set the password the other's deployments use. The config refuses
/// this for listed resources; for discovered ones, the first job in order keeps the pair and
/// every later one fails, naming the one that has it.
pub fn refuse_shared_pairs(jobs: &mut [Job]) {
    let mut owners: HashMap<(PathBuf, Vec<String>), Key> = HashMap::new();
    for job in jobs.iter_mut().filter(|j| j.in_config) {
        let Ok(config) = job.policy.provider.for_resource(&job.resource_info()) else {
            continue;
        };
        let (ProviderConfig::Postgres(d) | ProviderConfig::Mysql(d)) = config.as_ref() else {
            continue;
        };
        let mut users = d.users.to_vec();
        users.sort();
        let pair = (d.admin_url_file.clone(), users);
        match owners.get(&pair) {
            None => {
                owners.insert(pair, job.key.clone());
            }
            Some(owner) => {
                let reason = format!(
                    "the users {} (through the same admin-url-file) already serve {owner}: each pair of users serves one resource; template the users per resource (users = [\"{{resource.id}}_a\", \"{{resource.id}}_b\"])",
                    d.users.join(", ")
                );
                job.provider = Arc::new(Unrenderable::new(job.provider.kind(), reason));
                job.target_limit = None;
            }
        }
    }
}

/// Every job against one backend shares its semaphore: keyed by the target and the cap (a
/// reload that changes the cap starts a new one), held weakly so a backend no job names any
/// more leaves nothing behind. Process-wide, so jobs rebuilt at a reload share the permits
/// of the turns still running under the old config.
static TARGET_LIMITS: LazyLock<Mutex<TargetLimits>> = LazyLock::new(|| Mutex::new(HashMap::new()));

/// (target key, permits) -> the semaphore, while a job holds it.
type TargetLimits = HashMap<(String, usize), Weak<Semaphore>>;

fn target_limit(policy: &Policy, config: &ProviderConfig) -> Option<Arc<Semaphore>> {
    let permits = policy.max_concurrent_per_target?;
    let key = (config.target_key()?, permits);
    // A poisoned lock only means another thread panicked mid-insert; the map is still sound.
    let mut limits = TARGET_LIMITS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(semaphore) = limits.get(&key).and_then(Weak::upgrade) {
        return Some(semaphore);
    }
    limits.retain(|_, weak| weak.strong_count() > 0);
    let semaphore = Arc::new(Semaphore::new(permits));
    limits.insert(key, Arc::downgrade(&semaphore));
    Some(semaphore)
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
    let resource = ResourceInfo::configured(&installation.id, &key.resource);
    let mut job =
        PolicyJobs::new(policy, installation, Providers::Live).job_keyed(key, resource, false);
    job.replaced_later = replaced_later;
    job
}

fn build_provider(
    policy: &Policy,
    config: &ProviderConfig,
    providers: Providers,
) -> Arc<dyn Provider> {
    match providers {
        Providers::Live => Arc::from(providers::build(config)),
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
            let real = providers::build(config);
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
