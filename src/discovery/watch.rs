//! The daemon's discovery task: reads the installations again (a directory every
//! [`REFIND`] at most, a command every `every`) and lists each installation's resources,
//! sending what changed to the daemon's loop as [`Update`]s.
//!
//! The first pass lists every installation at once, as fast as the client's limiter allows
//! (the daemon needs its inventory); after it, each installation is listed once per `every`
//! at its own phase (a hash of its id), so later passes spread evenly instead of bursting.
//! An installation found later is listed at once. A failed listing (or a failed read of the
//! installations) sends nothing: the last known state stands. Only Vercel's 404 or 410 for
//! an installation, or its disappearance from the source, says it is gone.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::installations;
use super::list::Lister;
use crate::config::{Config, Installation};
use crate::resource::ResourceInfo;

/// How often a directory of token files is read again, at most: a file the partner's backend
/// writes is seen within this, whatever `every` is.
pub const REFIND: Duration = Duration::from_secs(30);

/// What discovery learned of one installation.
#[derive(Debug)]
pub enum Update {
    /// Found for the first time, or its token source changed.
    Found(Installation),
    /// Its resources, as Vercel listed them just now.
    Listed {
        id: String,
        resources: Vec<Arc<ResourceInfo>>,
    },
    /// It is gone: no longer in the source, or Vercel answered 404/410 for it.
    Gone { id: String, why: String },
    /// Listing it failed; what was known of it stands.
    Failed { id: String, error: String },
}

/// Runs discovery until `stop`: `known` are the discovered installations the daemon knows
/// already (from the persisted inventory), `needs_listing` says which installations any
/// policy lists.
pub async fn run(
    config: Arc<Config>,
    lister: Arc<dyn Lister>,
    known: Vec<Installation>,
    needs_listing: Arc<dyn Fn(&Installation) -> bool + Send + Sync>,
    updates: mpsc::UnboundedSender<Update>,
    stop: CancellationToken,
) {
    let every = config
        .discovery
        .as_ref()
        .map_or(crate::config::DEFAULT_EVERY, |d| d.every);
    let refind = match config.discovery.as_ref().map(|d| &d.source) {
        Some(crate::config::InstallationSource::Dir(_)) => every.min(REFIND),
        _ => every,
    };
    let started = Instant::now();
    let mut state = Watch {
        config,
        lister,
        updates,
        needs_listing,
        every,
        started,
        discovered: known.into_iter().map(|i| (i.id.clone(), i)).collect(),
        due: BTreeSet::new(),
        due_at: HashMap::new(),
        gone: HashSet::new(),
        last_problems: Vec::new(),
    };
    // Everything known is listed at once: the first pass.
    let first: Vec<String> = state
        .configured()
        .map(|i| i.id)
        .chain(state.discovered.keys().cloned())
        .collect();
    for id in first {
        state.schedule(&id, started);
    }
    let permits = Arc::new(Semaphore::new(
        state.config.vercel.max_concurrent_requests.max(1),
    ));
    let mut listings: JoinSet<(String, Result<Vec<ResourceInfo>, super::ListError>)> =
        JoinSet::new();
    let mut next_find = started;
    loop {
        let now = Instant::now();
        if now >= next_find {
            state.find().await;
            next_find = now + refind;
        }
        // Start every listing that is due, within the permits; each holds one until it ends.
        while let Some(&(at, _)) = state.due.first() {
            if at > Instant::now() {
                break;
            }
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let Some((_, id)) = state.due.pop_first() else {
                break;
            };
            state.due_at.remove(&id);
            let Some(installation) = state.installation(&id) else {
                continue;
            };
            let lister = state.lister.clone();
            listings.spawn(async move {
                let result = lister.list(&installation).await;
                drop(permit);
                (installation.id.clone(), result)
            });
        }
        let next_due = state.due.first().map(|(at, _)| *at);
        let waiting_for_permit = next_due.is_some_and(|at| at <= Instant::now());
        let wake = next_due.map_or(next_find, |at| at.min(next_find));
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(done) = listings.join_next() => {
                if let Ok((id, result)) = done {
                    state.listed(id, result);
                }
            }
            _ = tokio::time::sleep_until(wake), if !waiting_for_permit => {}
        }
    }
    listings.abort_all();
}

struct Watch {
    config: Arc<Config>,
    lister: Arc<dyn Lister>,
    updates: mpsc::UnboundedSender<Update>,
    needs_listing: Arc<dyn Fn(&Installation) -> bool + Send + Sync>,
    every: Duration,
    started: Instant,
    /// Discovered installations by id.
    discovered: HashMap<String, Installation>,
    /// When each installation is listed next.
    due: BTreeSet<(Instant, String)>,
    due_at: HashMap<String, Instant>,
    /// Installations Vercel said are gone while their source still names them: not listed
    /// again until a restart or reload.
    gone: HashSet<String>,
    /// The source's last problems, logged only when they change.
    last_problems: Vec<String>,
}

impl Watch {
    fn configured(&self) -> impl Iterator<Item = Installation> + use<> {
        let needs = self.needs_listing.clone();
        self.config
            .installations
            .values()
            .filter(move |i| needs(i))
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn installation(&self, id: &str) -> Option<Installation> {
        self.discovered.get(id).cloned().or_else(|| {
            self.config
                .installations
                .values()
                .find(|i| i.id == id)
                .cloned()
        })
    }

    fn schedule(&mut self, id: &str, at: Instant) {
        if let Some(old) = self.due_at.remove(id) {
            self.due.remove(&(old, id.to_owned()));
        }
        self.due.insert((at, id.to_owned()));
        self.due_at.insert(id.to_owned(), at);
    }

    fn unschedule(&mut self, id: &str) {
        if let Some(old) = self.due_at.remove(id) {
            self.due.remove(&(old, id.to_owned()));
        }
    }

    /// The next time after now at the installation's phase: later passes spread over `every`.
    fn next_slot(&self, id: &str) -> Instant {
        next_slot(self.started, Instant::now(), self.every, id)
    }

    /// Reads the installations again: new ones are listed at once, vanished ones are gone.
    async fn find(&mut self) {
        let Some(discovery) = self.config.discovery.clone() else {
            return;
        };
        let seen = match installations::find(&discovery).await {
            Ok(seen) => seen,
            Err(e) => {
                warn!(
                    "could not read the installations ({e}); the last known {} stand",
                    self.discovered.len()
                );
                return;
            }
        };
        if seen.problems != self.last_problems {
            for problem in &seen.problems {
                warn!("installations: {problem}");
            }
            self.last_problems = seen.problems.clone();
        }
        let mut now_seen = HashSet::new();
        for found in seen.installations {
            now_seen.insert(found.id.clone());
            if self.gone.contains(&found.id) {
                continue;
            }
            let installation = discovery.installation(&found.id, found.token);
            let is_new = match self.discovered.get(&found.id) {
                None => true,
                Some(old) => old.token != installation.token,
            };
            if is_new {
                let listed_now = !self.discovered.contains_key(&found.id);
                self.discovered
                    .insert(found.id.clone(), installation.clone());
                let _ = self.updates.send(Update::Found(installation.clone()));
                if listed_now && (self.needs_listing)(&installation) {
                    info!(installation_id = %found.id, "found a new installation; listing its resources");
                    self.schedule(&found.id, Instant::now());
                }
            }
        }
        self.gone.retain(|id| now_seen.contains(id));
        let vanished: Vec<String> = self
            .discovered
            .keys()
            .filter(|id| !now_seen.contains(*id))
            .cloned()
            .collect();
        for id in vanished {
            self.discovered.remove(&id);
            self.unschedule(&id);
            self.lister.forget(&id);
            let _ = self.updates.send(Update::Gone {
                id,
                why: "no longer among the installations".to_owned(),
            });
        }
    }

    fn listed(&mut self, id: String, result: Result<Vec<ResourceInfo>, super::ListError>) {
        let known = self.discovered.contains_key(&id)
            || self.config.installations.values().any(|i| i.id == id);
        if !known {
            return; // it left while its listing was in flight
        }
        match result {
            Ok(resources) => {
                let _ = self.updates.send(Update::Listed {
                    id: id.clone(),
                    resources: resources.into_iter().map(Arc::new).collect(),
                });
                let at = self.next_slot(&id);
                self.schedule(&id, at);
            }
            Err(e) if e.is_gone() => {
                warn!(installation_id = %id, "Vercel says the installation does not exist ({e}); its resources get no new rotation, their pending retirements still run");
                self.discovered.remove(&id);
                self.gone.insert(id.clone());
                self.lister.forget(&id);
                let _ = self.updates.send(Update::Gone {
                    id,
                    why: e.to_string(),
                });
            }
            Err(e) => {
                warn!(installation_id = %id, "listing the installation's resources failed; the last known list stands: {e}");
                let _ = self.updates.send(Update::Failed {
                    id: id.clone(),
                    error: e.to_string(),
                });
                let at = self.next_slot(&id).min(Instant::now() + RETRY_LISTING);
                self.schedule(&id, at);
            }
        }
    }
}

/// The first time after `now` at the installation's phase (a hash of its id, within `every`)
/// counted from `started`: the installation's slot in every later pass.
fn next_slot(started: Instant, now: Instant, every: Duration, id: &str) -> Instant {
    let every = every.as_nanos().max(1);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    id.hash(&mut hasher);
    let phase = u128::from(hasher.finish()) % every;
    let since_start = now.saturating_duration_since(started).as_nanos();
    // The first k >= 0 with started + phase + k * every > now: a phase still ahead in the
    // first period is this period's slot (k = 0), not the next one's, or the installations
    // listed in the first pass would wait up to twice `every` for their second listing.
    let k = if since_start < phase {
        0
    } else {
        (since_start - phase) / every + 1
    };
    let offset = phase + k * every;
    started + Duration::from_nanos(u64::try_from(offset).unwrap_or(u64::MAX))
}

/// A listing that failed is tried again this soon (or at its next slot, if sooner).
const RETRY_LISTING: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    /// After the first pass, every installation is listed again within `every`, at its own
    /// phase, and from then on once per `every`: the inventory is never older than that.
    #[test]
    fn every_installation_is_listed_again_within_every_of_the_first_pass() {
        let started = Instant::now();
        let every = Duration::from_secs(600);
        let first_pass_done = started + Duration::from_secs(10);
        let mut slots: Vec<Duration> = Vec::new();
        for i in 0..2_000 {
            let id = format!("icfg_bench{i}");
            let next = next_slot(started, first_pass_done, every, &id);
            assert!(next > first_pass_done, "{id}: slot not after now");
            assert!(
                next <= first_pass_done + every,
                "{id}: listed again only {:?} after the first pass",
                next - first_pass_done
            );
            // Listed at its slot: the one after is exactly `every` later.
            assert_eq!(next_slot(started, next, every, &id), next + every);
            slots.push(next - started);
        }
        // Spread over the period, not bunched at its start: about a tenth in each tenth.
        let in_first_tenth = slots.iter().filter(|s| **s < every / 10).count();
        assert!((100..=300).contains(&in_first_tenth), "{in_first_tenth}");
    }
}
