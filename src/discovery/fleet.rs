//! The fleet and the state's inventory: the fleet a run starts from (the configured
//! installations and what earlier runs listed), what of an installation is persisted, and
//! `run --once`'s one pass (read the installations, list each one, persist, then rotate).

use std::sync::Arc;

use chrono::Utc;
use tokio::sync::Semaphore;
use tracing::{info, warn};

use super::installations;
use super::list::Lister;
use crate::config::Config;
use crate::jobs::{self, Fleet};
use crate::resource::ResourceInfo;
use crate::state::{Listing, StateStore};

/// The fleet as the config and the persisted inventory know it, before any listing: what a
/// run starts from, so a Vercel that fails at start changes nothing.
pub fn load(config: &Config, listings: &[Arc<Listing>]) -> Fleet {
    let mut fleet = Fleet::from_config(config);
    for listing in listings {
        for r in &listing.departed {
            fleet.add_departed(r.clone());
        }
        if listing.gone {
            continue;
        }
        let id = &listing.installation_id;
        if fleet.get(id).is_none() {
            // A discovered installation, known again with the token source the config gives
            // it now; one the config no longer discovers has left (its records retire).
            let installation = config
                .discovery
                .as_ref()
                .and_then(|discovery| discovery.installation_by_id(id));
            match installation {
                Some(installation) => fleet.add_discovered(installation),
                None => {
                    for r in &listing.resources {
                        fleet.add_departed(r.clone());
                    }
                    continue;
                }
            }
        }
        // The inventory's own resources, shared (not copied) by the fleet and the jobs.
        let resources = listing.resources.clone();
        fleet.set_listed_at(id, resources, listing.listed_at);
        if let Some(failure) = &listing.failure {
            fleet.restore_failure(id, failure.clone());
        }
    }
    fleet
}

/// What is persisted of one installation: its listing (none, and gone, when the fleet no
/// longer has it or it has no listing), and what left it that records may still need.
pub fn listing_of(fleet: &Fleet, id: &str) -> Listing {
    let member = fleet.get(id);
    let resources: Vec<Arc<ResourceInfo>> = member
        .and_then(|m| m.listed.as_ref())
        .map(|l| l.to_vec())
        .unwrap_or_default();
    let mut departed: Vec<Arc<ResourceInfo>> = fleet
        .departed_resources()
        .filter(|r| &*r.installation_id == id)
        .cloned()
        .collect();
    departed.sort_by(|a, b| a.id.cmp(&b.id));
    Listing {
        installation_id: id.to_owned(),
        listed_at: member.and_then(|m| m.listed_at).unwrap_or_else(Utc::now),
        resources,
        departed,
        gone: member.is_none_or(|m| m.listed.is_none() && m.failure.is_none()),
        failure: member.and_then(|m| m.failure.clone()),
    }
}

/// `run --once`: reads the installations and lists every one a policy needs, at once within
/// the client's bounds, updating `fleet` and the state's inventory with what succeeded. A
/// failure leaves what was known.
pub async fn refresh(
    config: &Config,
    fleet: &mut Fleet,
    lister: &Arc<dyn Lister>,
    store: Option<&dyn StateStore>,
) {
    if let Some(discovery) = &config.discovery {
        match installations::find(discovery).await {
            Ok(seen) => {
                for problem in &seen.problems {
                    warn!("installations: {problem}");
                }
                let ids: std::collections::HashSet<String> =
                    seen.installations.iter().map(|f| f.id.clone()).collect();
                let vanished: Vec<String> = fleet
                    .members()
                    .filter(|m| !m.configured && !ids.contains(&m.installation.id))
                    .map(|m| m.installation.id.clone())
                    .collect();
                for id in vanished {
                    fleet.remove(&id);
                    persist(fleet, &id, store).await;
                }
                for found in seen.installations {
                    fleet.add_discovered(discovery.installation(&found.id, found.token));
                }
            }
            Err(e) => warn!(
                "could not read the installations ({e}); going on with the {} known",
                fleet.members().filter(|m| !m.configured).count()
            ),
        }
    }
    let wanted: Vec<Arc<crate::config::Installation>> = fleet
        .members()
        .filter(|m| jobs::needs_listing(config, &m.installation))
        .map(|m| m.installation.clone())
        .collect();
    if wanted.is_empty() {
        return;
    }
    info!(installations = wanted.len(), "listing resources");
    let limit = Arc::new(Semaphore::new(config.vercel.max_concurrent_requests.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for installation in wanted {
        let (lister, limit) = (lister.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let result = lister.list(&installation).await;
            (installation, result)
        });
    }
    while let Some(done) = tasks.join_next().await {
        let Ok((installation, result)) = done else {
            continue;
        };
        let id = &installation.id;
        match result {
            Ok(resources) => {
                fleet.set_listed(id, resources.into_iter().map(Arc::new).collect());
                persist(fleet, id, store).await;
            }
            Err(e) if e.is_gone() => {
                warn!(installation_id = %id, "Vercel says the installation does not exist ({e}); its resources get no new rotation");
                fleet.remove(id);
                persist(fleet, id, store).await;
            }
            Err(e) => {
                warn!(installation_id = %id, "listing the installation's resources failed; going on with the last known list: {e}");
                if fleet.set_failure(id, e.to_string()) {
                    persist(fleet, id, store).await;
                }
            }
        }
    }
}

async fn persist(fleet: &Fleet, id: &str, store: Option<&dyn StateStore>) {
    let Some(store) = store else { return };
    if let Err(e) = store.put_listing(listing_of(fleet, id)).await {
        warn!(installation_id = %id, "could not record the installation's listing: {e}");
    }
}
