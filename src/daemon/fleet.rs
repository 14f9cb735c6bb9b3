//! The daemon's side of discovery: the discovery task of each generation, and
//! applying what it finds: new installations and resources get jobs (first due at their
//! schedule's next time), departed ones keep theirs only to finish and retire, and every
//! change of an installation's listing is persisted before it is acted on.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{Daemon, Generation, Wakes};
use crate::config::Config;
use crate::discovery::{self, Lister, Update, watch};
use crate::jobs::{self, Fleet, Orphan};
use crate::rotation::Job;
use crate::state::Key;

/// How many installations' listings are written to the state at once when a batch of
/// updates is applied.
const PERSIST_AT_ONCE: usize = 32;

/// Starts a generation's discovery task, when any policy lists resources or the config
/// discovers installations. Its updates arrive on `updates`; `stop` ends it.
pub(super) fn start_discovery(
    config: &Arc<Config>,
    fleet: &Fleet,
    lister: Arc<dyn Lister>,
    updates: mpsc::UnboundedSender<Update>,
) -> Option<CancellationToken> {
    if config.discovery.is_none() && !config.policies.iter().any(|p| p.is_discovered()) {
        return None;
    }
    let stop = CancellationToken::new();
    let known = fleet
        .members()
        .filter(|m| !m.configured)
        .map(|m| (*m.installation).clone())
        .collect();
    let for_listing = config.clone();
    let needs_listing =
        Arc::new(move |i: &crate::config::Installation| jobs::needs_listing(&for_listing, i));
    tokio::spawn(watch::run(
        config.clone(),
        lister,
        known,
        needs_listing,
        updates,
        stop.clone(),
    ));
    Some(stop)
}

impl Daemon {
    /// Applies a batch of discovery's updates: the fleet first, then each changed
    /// installation's listing persisted, then its jobs rebuilt and scheduled.
    pub(super) async fn apply(
        &mut self,
        updates: Vec<Update>,
        wakes: &mut Wakes,
        in_flight: &HashSet<Key>,
    ) {
        let mut changed: Vec<String> = Vec::new();
        let mut departures = false;
        for update in updates {
            match update {
                Update::Found(installation) => {
                    let id = installation.id.clone();
                    let had = self.fleet.get(&id).map(|m| m.installation.token.clone());
                    self.fleet.add_discovered(installation);
                    let now = self.fleet.get(&id).map(|m| m.installation.token.clone());
                    if had.is_some() && had != now {
                        changed.push(id);
                    }
                }
                Update::Listed { id, resources } => {
                    let same = self.fleet.get(&id).is_some_and(|m| {
                        m.listed.as_ref().is_some_and(|old| {
                            old.len() == resources.len()
                                && old.iter().zip(&resources).all(|(a, b)| a == b)
                        })
                    });
                    if same {
                        continue;
                    }
                    if let Some(old) = self.fleet.get(&id).and_then(|m| m.listed.clone()) {
                        departures |= old.iter().any(|o| !resources.iter().any(|n| n.id == o.id));
                    }
                    self.fleet.set_listed(&id, resources);
                    changed.push(id);
                }
                Update::Failed { id, error } => {
                    // Kept for `status`; the jobs stand as they are.
                    if self.fleet.set_failure(&id, error) {
                        let listing = discovery::fleet::listing_of(&self.fleet, &id);
                        if let Err(e) = self.store.put_listing(listing).await {
                            error!(installation_id = %id, "could not record the installation's failing listing: {e}");
                        }
                    }
                }
                Update::Gone { id, why } => {
                    if self.fleet.get(&id).is_none() {
                        continue;
                    }
                    info!(installation_id = %id, "installation gone ({why}): its resources get no new rotation; pending retirements still run");
                    self.fleet.remove(&id);
                    departures = true;
                    changed.push(id);
                }
            }
        }
        changed.sort();
        changed.dedup();
        if changed.is_empty() {
            return;
        }
        // Persisted before anything is done on it: a restart starts from this listing. The
        // files are independent (the inventory takes writes of different installations side
        // by side), so up to PERSIST_AT_ONCE are written at once: one after another, each
        // write's fsyncs made the first pass over 2,000 installations wait ~8 ms apiece.
        let mut writes = JoinSet::new();
        let mut pending = changed.iter();
        loop {
            while writes.len() < PERSIST_AT_ONCE {
                let Some(id) = pending.next() else { break };
                let (store, id) = (self.store.clone(), id.clone());
                let listing = discovery::fleet::listing_of(&self.fleet, &id);
                writes.spawn(async move {
                    let result = store.put_listing(listing).await;
                    (id, result)
                });
            }
            let Some(done) = writes.join_next().await else {
                break;
            };
            match done {
                Ok((_, Ok(()))) => {}
                Ok((id, Err(e))) => {
                    error!(installation_id = %id, "could not record the installation's listing; going on with it in memory (a restart lists again): {e}");
                }
                Err(e) => {
                    error!(
                        "recording an installation's listing stopped short; going on with it in memory (a restart lists again): {e}"
                    );
                }
            }
        }
        let mut added: Vec<Arc<Job>> = Vec::new();
        let mut touched: Vec<Key> = Vec::new();
        let config = self.generation.config.clone();
        for id in &changed {
            let (new, keys) = rebuild_installation(&mut self.generation, &self.fleet, &config, id);
            added.extend(new);
            touched.extend(keys);
        }
        if !added.is_empty()
            && let Err(e) = self
                .generation
                .executor
                .sync(added.iter().map(Arc::as_ref))
                .await
        {
            error!("new resources could not be recorded; they are scheduled once they are: {e}");
        }
        for key in touched {
            self.refresh(wakes, in_flight, key.clone());
            if self.generation.jobs.get(&key).is_some_and(|j| !j.in_config)
                && !in_flight.contains(&key)
            {
                // A departed resource's record gets a turn now: it retires what is due and is
                // forgotten once nothing of it is live.
                wakes.set(key, Some(self.clock.now()));
            }
        }
        if departures {
            let needed: HashSet<(&str, &str)> = self
                .generation
                .jobs
                .values()
                .filter(|j| !j.in_config)
                .map(|j| (j.installation.id.as_str(), &*j.key.resource))
                .collect();
            self.fleet
                .prune_departed(|r| needed.contains(&(&*r.installation_id, &*r.id)));
        }
        info!(
            installations = changed.len(),
            resources = self.generation.jobs.len(),
            "fleet updated"
        );
    }
}

/// Rebuilds the discovered jobs of one installation; returns the new jobs (to be recorded)
/// and every key whose job changed (to be scheduled again).
fn rebuild_installation(
    generation: &mut Generation,
    fleet: &Fleet,
    config: &Arc<Config>,
    id: &str,
) -> (Vec<Arc<Job>>, Vec<Key>) {
    let old: HashSet<Key> = generation.by_installation.remove(id).unwrap_or_default();
    for key in &old {
        generation.claims.release(key);
    }
    let new_jobs = match fleet.get(id) {
        Some(member) => {
            let jobs_map = &generation.jobs;
            let taken = |key: &Key| {
                jobs_map
                    .get(key)
                    .filter(|j| j.in_config && j.installation.id != id)
                    .map(|j| j.installation.id.clone())
            };
            generation
                .builders
                .of_installation(member, &mut generation.claims, &taken)
        }
        None => Vec::new(),
    };
    let mut touched = Vec::new();
    let mut added = Vec::new();
    let new_keys: HashSet<Key> = new_jobs.iter().map(|j| j.key.clone()).collect();
    for key in old.difference(&new_keys) {
        touched.push(key.clone());
        // It left: its record (if any) only finishes and retires, as a record the config no
        // longer names does.
        let record = generation.executor.store().get(key);
        match record {
            Some(record) => {
                let departed: Vec<Job> = Vec::new();
                match jobs::orphan_job(config, fleet, &departed, &record) {
                    Orphan::Job(job, _) => {
                        generation.jobs.insert(key.clone(), Arc::new(job));
                    }
                    Orphan::Nobody => {
                        generation.jobs.remove(key);
                    }
                }
            }
            None => {
                generation.jobs.remove(key);
            }
        }
    }
    for job in new_jobs {
        let key = job.key.clone();
        touched.push(key.clone());
        let job = Arc::new(job);
        generation.jobs.insert(key, job.clone());
        added.push(job);
    }
    if !new_keys.is_empty() {
        generation.by_installation.insert(id.to_owned(), new_keys);
    }
    (added, touched)
}

/// The discovered jobs of a generation, by installation id.
pub(super) fn by_installation(jobs: &HashMap<Key, Arc<Job>>) -> HashMap<String, HashSet<Key>> {
    let mut by: HashMap<String, HashSet<Key>> = HashMap::new();
    for job in jobs.values() {
        if job.in_config && job.policy.is_discovered() {
            by.entry(job.installation.id.clone())
                .or_default()
                .insert(job.key.clone());
        }
    }
    by
}
