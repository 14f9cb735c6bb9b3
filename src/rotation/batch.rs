//! Many keys' turns at once, within a bound: `run --once`, its dry run, and a `run --once`
//! handed to the daemon.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::error;

use super::{Job, RotationError, RotationReport};

/// Runs `tend` on every job as its own task, each in a slot of `limit`, and returns the
/// reports in job order. A task is spawned only once its slot is free, and finished tasks are
/// reaped while the rest are spawned: a parked rotation task is ~4 KB, and 10,000 of them
/// made up front would outlive the run in the daemon's heap (the allocator keeps what it grew
/// to). A task that panics (a bug) is reported as a failed rotation, never dropped silently.
pub async fn run_bounded<F, Fut>(
    jobs: Vec<Arc<Job>>,
    limit: &Arc<Semaphore>,
    tend: F,
) -> Vec<RotationReport>
where
    F: Fn(Arc<Job>) -> Fut,
    Fut: Future<Output = Option<RotationReport>> + Send + 'static,
{
    let mut reports: Vec<Option<RotationReport>> = (0..jobs.len()).map(|_| None).collect();
    let mut ids = std::collections::HashMap::new();
    let mut set = JoinSet::new();
    let keep =
        |reports: &mut Vec<Option<RotationReport>>,
         ids: &std::collections::HashMap<tokio::task::Id, usize>,
         joined: Result<(usize, Option<RotationReport>), tokio::task::JoinError>| {
            match joined {
                Ok((index, report)) => reports[index] = report,
                Err(e) => {
                    error!("a rotation task ended abnormally: {e}");
                    if let Some(&index) = ids.get(&e.id()) {
                        reports[index] = Some(aborted(&jobs[index], &e));
                    }
                }
            }
        };
    for (index, job) in jobs.iter().enumerate() {
        // The semaphore is never closed, so acquire cannot fail; if it somehow did, the
        // rotation still runs rather than being lost.
        let slot = limit.clone().acquire_owned().await.ok();
        let turn = tend(job.clone());
        let handle = set.spawn(async move {
            let _slot = slot;
            (index, turn.await)
        });
        ids.insert(handle.id(), index);
        while let Some(joined) = set.try_join_next() {
            keep(&mut reports, &ids, joined);
        }
    }
    while let Some(joined) = set.join_next().await {
        keep(&mut reports, &ids, joined);
    }
    reports.into_iter().flatten().collect()
}

fn aborted(job: &Job, e: &tokio::task::JoinError) -> RotationReport {
    RotationReport {
        target: job.target(),
        secret_names: job.secret_names(),
        result: Err(RotationError::Aborted(e.to_string())),
    }
}
