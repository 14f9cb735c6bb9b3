//! The fleet: every installation jobs may come from (the configured tables and the
//! discovered ones), each with the resources its last successful listing held, and the
//! resources that left but whose records may still need what was known of them to retire.
//!
//! Discovery fills it (`crate::discovery`); the daemon, `run --once` and `status` make jobs
//! and keys from it. A listing that failed never reaches it: the last known one stands.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::config::{Config, Installation};
use crate::resource::ResourceInfo;
use crate::state::ListingFailure;

/// What is known of one installation.
#[derive(Clone)]
pub struct Member {
    pub installation: Arc<Installation>,
    /// From a `[installations.*]` table, not discovery.
    pub configured: bool,
    /// What its last successful listing held; `None`: never listed.
    pub listed: Option<Arc<[Arc<ResourceInfo>]>>,
    /// When that listing was had.
    pub listed_at: Option<DateTime<Utc>>,
    /// Why listing it fails, since when; cleared by a listing that succeeds.
    pub failure: Option<ListingFailure>,
}

/// Every installation by id.
#[derive(Clone, Default)]
pub struct Fleet {
    members: BTreeMap<String, Member>,
    /// (installation id, resource id) of resources that left: their records' retirements
    /// render their providers with what was known of them.
    departed: HashMap<(Arc<str>, Arc<str>), Arc<ResourceInfo>>,
}

impl Fleet {
    /// The configured installations, none listed yet.
    pub fn from_config(config: &Config) -> Fleet {
        let mut fleet = Fleet::default();
        for installation in config.installations.values() {
            fleet.members.insert(
                installation.id.clone(),
                Member {
                    installation: Arc::new(installation.clone()),
                    configured: true,
                    listed: None,
                    listed_at: None,
                    failure: None,
                },
            );
        }
        fleet
    }

    /// Adds (or updates the token source of) a discovered installation. One the config has a
    /// table for stays the configured one.
    pub fn add_discovered(&mut self, installation: Installation) {
        match self.members.get_mut(&installation.id) {
            Some(member) if member.configured => {}
            Some(member) => {
                if member.installation.token != installation.token {
                    member.installation = Arc::new(installation);
                }
            }
            None => {
                self.members.insert(
                    installation.id.clone(),
                    Member {
                        installation: Arc::new(installation),
                        configured: false,
                        listed: None,
                        listed_at: None,
                        failure: None,
                    },
                );
            }
        }
    }

    /// Sets what an installation's listing holds; resources it no longer holds are kept as
    /// departed.
    pub fn set_listed(&mut self, id: &str, resources: Vec<Arc<ResourceInfo>>) {
        self.set_listed_at(id, resources, Utc::now());
    }

    /// [`set_listed`](Self::set_listed) with the time of the listing (one read back from the
    /// inventory keeps its own).
    pub fn set_listed_at(
        &mut self,
        id: &str,
        resources: Vec<Arc<ResourceInfo>>,
        at: DateTime<Utc>,
    ) {
        let Some(member) = self.members.get_mut(id) else {
            return;
        };
        if let Some(old) = &member.listed {
            for r in old.iter() {
                if !resources.iter().any(|n| n.id == r.id) {
                    self.departed.insert((id.into(), r.id.clone()), r.clone());
                }
            }
        }
        for r in &resources {
            self.departed.remove(&(Arc::from(id), r.id.clone()));
        }
        member.listed = Some(resources.into());
        member.listed_at = Some(at);
        member.failure = None;
    }

    /// Listing the installation failed: kept (with the time it began) for `status`. Returns
    /// whether that changed what is known (a new or different error).
    pub fn set_failure(&mut self, id: &str, error: String) -> bool {
        let Some(member) = self.members.get_mut(id) else {
            return false;
        };
        if member.failure.as_ref().is_some_and(|f| f.error == error) {
            return false;
        }
        member.failure = Some(ListingFailure {
            since: Utc::now(),
            error,
        });
        true
    }

    /// A failure read back from the inventory.
    pub fn restore_failure(&mut self, id: &str, failure: ListingFailure) {
        if let Some(member) = self.members.get_mut(id) {
            member.failure = Some(failure);
        }
    }

    /// A discovered installation is gone: every resource it had is departed. A configured
    /// one stays (its table says it exists) but loses its listing.
    pub fn remove(&mut self, id: &str) {
        let Some(member) = self.members.get(id) else {
            return;
        };
        if let Some(old) = &member.listed {
            for r in old.iter() {
                self.departed.insert((id.into(), r.id.clone()), r.clone());
            }
        }
        if member.configured {
            if let Some(member) = self.members.get_mut(id) {
                member.listed = None;
                member.listed_at = None;
                member.failure = None;
            }
        } else {
            self.members.remove(id);
        }
    }

    /// Remembers what was known of a resource that left before this process started.
    pub fn add_departed(&mut self, resource: Arc<ResourceInfo>) {
        self.departed.insert(
            (resource.installation_id.clone(), resource.id.clone()),
            resource,
        );
    }

    /// Forgets departed resources for which `keep` says no record needs them.
    pub fn prune_departed(&mut self, mut keep: impl FnMut(&ResourceInfo) -> bool) {
        self.departed.retain(|_, r| keep(r));
    }

    pub fn get(&self, id: &str) -> Option<&Member> {
        self.members.get(id)
    }

    /// The installation known by table name (configured) or id (discovered).
    pub fn by_name(&self, name: &str) -> Option<&Member> {
        self.members
            .get(name)
            .or_else(|| self.members.values().find(|m| m.installation.name == name))
    }

    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values()
    }

    /// What was known of a resource that left.
    pub fn departed(&self, installation_id: &str, resource: &str) -> Option<&Arc<ResourceInfo>> {
        self.departed
            .get(&(Arc::from(installation_id), Arc::from(resource)))
    }

    pub fn departed_resources(&self) -> impl Iterator<Item = &Arc<ResourceInfo>> {
        self.departed.values()
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}
