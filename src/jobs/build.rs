//! Building one job: a policy's provider for a resource (shared by every resource when the
//! provider table is the same for all, rendered per resource when it is templated, and for a
//! resource the templates cannot serve one whose every call fails, naming why), and the
//! semaphore of its backend.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, LazyLock, Mutex, Weak};

use tokio::sync::Semaphore;

use super::Providers;
use crate::config::{Installation, Policy, ProviderConfig, ProviderSpec, SecretSource};
use crate::providers::{self, Provider, dry_run::DryRunProvider, per_resource::Unrenderable};
use crate::resource::ResourceInfo;
use crate::rotation::Job;
use crate::state::Key;

/// A job's provider and its backend's semaphore.
type ProviderAndLimit = (Arc<dyn Provider>, Option<Arc<Semaphore>>);

/// What two jobs must not share: the pair of database users one resource alternates (through
/// one admin file), and each secret of a resource.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Claim {
    Users {
        admin_url: SecretSource,
        users: Vec<String>,
    },
    Secret {
        installation_id: String,
        resource: String,
        name: String,
    },
}

/// Builds the jobs of one policy: the provider shared by its resources is built once, for
/// every installation it serves.
pub struct PolicyJobs {
    policy: Arc<Policy>,
    /// The policy's name, shared by its jobs' keys.
    name: Arc<str>,
    providers: Providers,
    /// The provider (and its backend's semaphore) every resource shares, when the provider
    /// table is not templated.
    shared: Option<ProviderAndLimit>,
    /// Its secret names that another policy pushes too: only those can clash, so only those
    /// are claimed (100,000 jobs need not hold 100,000 claims that never can).
    contested: Vec<String>,
}

impl PolicyJobs {
    pub fn new(policy: Arc<Policy>, providers: Providers) -> PolicyJobs {
        PolicyJobs::contesting(policy, providers, Vec::new())
    }

    /// A policy's jobs that claim `contested`, the names of its secrets that other policies
    /// push too.
    pub fn contesting(
        policy: Arc<Policy>,
        providers: Providers,
        contested: Vec<String>,
    ) -> PolicyJobs {
        let shared = match &policy.provider {
            ProviderSpec::Shared(config) => Some((
                build_provider(&policy, config, providers),
                target_limit(&policy, config),
            )),
            ProviderSpec::PerResource(_) => None,
        };
        PolicyJobs {
            name: policy.name.as_str().into(),
            policy,
            providers,
            shared,
            contested,
        }
    }

    pub fn policy(&self) -> &Arc<Policy> {
        &self.policy
    }

    /// The jobs of this policy in one installation: they share its digest.
    pub fn in_installation(&self, installation: Arc<Installation>) -> InstallationJobs<'_> {
        InstallationJobs {
            digest: self.policy.digest(&installation).into(),
            jobs: self,
            installation,
        }
    }
}

/// A policy's jobs in one installation.
pub struct InstallationJobs<'a> {
    jobs: &'a PolicyJobs,
    installation: Arc<Installation>,
    digest: Arc<str>,
}

impl InstallationJobs<'_> {
    /// The job of `resource` (key: the policy's name and the resource id), and what it
    /// claims.
    pub fn job(&self, resource: Arc<ResourceInfo>) -> (Job, Vec<Claim>) {
        let key = Key {
            policy: self.jobs.name.clone(),
            resource: resource.id.clone(),
        };
        self.job_keyed(key, resource, true)
    }

    /// The job of a record keyed `key`, tended by this policy: `in_config` false for a
    /// record the config no longer names.
    pub fn job_keyed(
        &self,
        key: Key,
        resource: Arc<ResourceInfo>,
        in_config: bool,
    ) -> (Job, Vec<Claim>) {
        let policy = &self.jobs.policy;
        let (provider, target_limit, users) = self.provider_for(&resource);
        // A record the config no longer names only retires what it left: it claims nothing,
        // so its successor may take the same users and secrets.
        let mut claims: Vec<Claim> = Vec::new();
        if in_config {
            claims.extend(users);
            claims.extend(self.jobs.contested.iter().map(|name| Claim::Secret {
                installation_id: self.installation.id.clone(),
                resource: resource.id.to_string(),
                name: name.clone(),
            }));
        }
        let job = Job {
            key,
            policy: policy.clone(),
            installation: self.installation.clone(),
            provider,
            discovered: resource.is_discovered().then_some(resource),
            target_limit,
            in_config,
            supersedes: Vec::new(),
            replaced_later: false,
            digest: self.digest.clone(),
        };
        (job, claims)
    }

    /// The provider for `resource`, its backend's semaphore and the pair of users it
    /// alternates; for a resource the templates cannot serve, one that fails every call
    /// saying why.
    fn provider_for(
        &self,
        resource: &ResourceInfo,
    ) -> (Arc<dyn Provider>, Option<Arc<Semaphore>>, Option<Claim>) {
        let policy = &self.jobs.policy;
        let built = policy.check_resource(resource).and_then(|()| {
            let config = policy.provider.for_resource(resource)?;
            let users = users_claim(&config);
            if let Some((provider, limit)) = &self.jobs.shared {
                return Ok((provider.clone(), limit.clone(), users));
            }
            Ok((
                build_provider(policy, &config, self.jobs.providers),
                target_limit(policy, &config),
                users,
            ))
        });
        match built {
            Ok(built) => built,
            Err(e) => (
                Arc::new(Unrenderable::new(policy.provider.kind(), e.to_string())),
                None,
                None,
            ),
        }
    }
}

fn users_claim(config: &ProviderConfig) -> Option<Claim> {
    let (ProviderConfig::Postgres(d) | ProviderConfig::Mysql(d)) = config else {
        return None;
    };
    let mut users = d.users.to_vec();
    users.sort();
    Some(Claim::Users {
        admin_url: d.admin_url.clone(),
        users,
    })
}

/// Who holds each [`Claim`]: the first job to claim a thing keeps it; a later one fails
/// every call, naming the holder. Kept across discovery's updates, so a resource that arrives
/// later cannot take what another already serves.
#[derive(Default)]
pub struct Claims {
    holders: HashMap<Claim, Key>,
    by_key: HashMap<Key, Vec<Claim>>,
}

impl Claims {
    /// Records `job`'s claims; when one is held by another key, the job is made to fail
    /// every call saying which (and claims nothing).
    pub fn claim(&mut self, job: &mut Job, claims: Vec<Claim>) {
        let conflict = claims.iter().find_map(|c| {
            self.holders
                .get(c)
                .filter(|holder| **holder != job.key)
                .map(|holder| (c.clone(), holder.clone()))
        });
        if let Some((claim, holder)) = conflict {
            let reason = match claim {
                Claim::Users { users, admin_url } => format!(
                    "the users {} (through the same {}) already serve {holder}: each pair of users serves one resource; template the users per resource (users = [\"{{resource.id}}_a\", \"{{resource.id}}_b\"])",
                    users.join(", "),
                    admin_url.key("admin-url")
                ),
                Claim::Secret { name, resource, .. } => format!(
                    "secret {name} of resource \"{resource}\" is also pushed by policy \"{}\" ({holder}): each secret of a resource belongs to one policy",
                    holder.policy
                ),
            };
            job.provider = Arc::new(Unrenderable::new(job.provider.kind(), reason));
            job.target_limit = None;
            return;
        }
        if claims.is_empty() {
            return;
        }
        for claim in &claims {
            self.holders.insert(claim.clone(), job.key.clone());
        }
        self.by_key.insert(job.key.clone(), claims);
    }

    /// Gives up what `key` held (its resource left, or its job is rebuilt).
    pub fn release(&mut self, key: &Key) {
        for claim in self.by_key.remove(key).unwrap_or_default() {
            if self.holders.get(&claim) == Some(key) {
                self.holders.remove(&claim);
            }
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
