//! `status`: what the state says, as a table or JSON. Reads the state files without taking
//! the lock, so it works while the daemon runs.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::discovery;
use crate::jobs;
use crate::state::{self, Key, Listing, Record, StateError, Step};

#[derive(Serialize)]
struct JsonStatus<'a> {
    state_dir: String,
    resources: Vec<JsonRecord<'a>>,
    /// What each listed installation's last listing says (discovery's inventory).
    installations: Vec<JsonInstallation<'a>>,
}

#[derive(Serialize)]
struct JsonInstallation<'a> {
    installation_id: &'a str,
    listed_at: DateTime<Utc>,
    resources: usize,
    gone: bool,
    /// Why listing it fails now (`error`), since when (`since`); absent while it works.
    #[serde(skip_serializing_if = "Option::is_none")]
    failure: Option<&'a state::ListingFailure>,
}

#[derive(Serialize)]
struct JsonRecord<'a> {
    #[serde(flatten)]
    record: &'a Record,
    /// False for a record whose (policy, resource) is no longer in the config.
    in_config: bool,
}

fn time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(
        || "-".to_owned(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

/// What `status` reads: the records, and the inventory (what each installation listed last),
/// which says which discovered resources are still served.
pub struct Snapshot {
    pub records: BTreeMap<Key, Record>,
    pub listings: Vec<Arc<Listing>>,
}

/// Prints the state of every (policy, resource) the config, the inventory or the state
/// knows.
pub fn print(
    out: &mut impl Write,
    config: &Config,
    snapshot: &Snapshot,
    json: bool,
) -> std::io::Result<()> {
    let records = &snapshot.records;
    let fleet = discovery::fleet::load(config, &snapshot.listings);
    let configured = jobs::keys(config, &fleet);
    if json {
        let status = JsonStatus {
            state_dir: config.state.dir.display().to_string(),
            resources: records
                .values()
                .map(|record| JsonRecord {
                    record,
                    in_config: configured.contains(&record.key),
                })
                .collect(),
            installations: snapshot
                .listings
                .iter()
                .map(|l| JsonInstallation {
                    installation_id: &l.installation_id,
                    listed_at: l.listed_at,
                    resources: l.resources.len(),
                    gone: l.gone,
                    failure: l.failure.as_ref(),
                })
                .collect(),
        };
        // `From` keeps an I/O error's kind (a closed pipe stays BrokenPipe).
        serde_json::to_writer_pretty(&mut *out, &status).map_err(std::io::Error::from)?;
        return writeln!(out);
    }

    let header = [
        "POLICY",
        "RESOURCE",
        "STEP",
        "LAST SUCCESS",
        "NEXT DUE",
        "RETIRING",
        "FAILURES",
        "LAST ERROR",
    ];
    let mut rows: Vec<[String; 8]> = Vec::new();
    for key in configured
        .iter()
        .chain(records.keys().filter(|k| !configured.contains(*k)))
    {
        let Some(r) = records.get(key) else {
            rows.push([
                key.policy.to_string(),
                key.resource.to_string(),
                "new".into(),
                "-".into(),
                "(first due once the daemon sees it)".into(),
                "-".into(),
                "0".into(),
                "-".into(),
            ]);
            continue;
        };
        let mut step = r.step.name().to_owned();
        if !configured.contains(key) {
            step.push_str(" (not in config)");
        } else if r.stopped.is_some() {
            step = "STOPPED".into();
        }
        let next = match (&r.step, r.retry_at, r.next_due) {
            (_, _, _) if r.stopped.is_some() => "until the config changes".to_owned(),
            (Step::Idle, Some(retry), _) => format!("{} (retry)", time(Some(retry))),
            (Step::Idle, None, due) => time(due),
            (_, Some(retry), _) => format!("{} (retry)", time(Some(retry))),
            _ => "in flight".to_owned(),
        };
        let retiring = r
            .retirements
            .iter()
            .map(|t| format!("{} at {}", t.handle, time(Some(t.due))))
            .collect::<Vec<_>>()
            .join("; ");
        let error = r
            .stopped
            .as_ref()
            .map(|s| s.reason.clone())
            .or_else(|| r.last_error.as_ref().map(|e| e.message.clone()))
            .unwrap_or_else(|| "-".into());
        rows.push([
            key.policy.to_string(),
            key.resource.to_string(),
            step,
            time(r.last_success),
            next,
            if retiring.is_empty() {
                "-".into()
            } else {
                retiring
            },
            r.consecutive_failures.to_string(),
            error,
        ]);
    }
    crate::table::write(out, header, &rows)?;
    // Installations whose listing fails: their resources are the last known ones, and one
    // never listed has none yet (an unreadable token file, say).
    let failing: Vec<[String; 4]> = snapshot
        .listings
        .iter()
        .filter_map(|l| {
            let f = l.failure.as_ref()?;
            Some([
                l.installation_id.clone(),
                time(Some(f.since)),
                l.resources.len().to_string(),
                f.error.clone(),
            ])
        })
        .collect();
    if !failing.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "Installations whose listing fails (their last known resources stand):"
        )?;
        crate::table::write(
            out,
            ["INSTALLATION", "FAILING SINCE", "RESOURCES KNOWN", "ERROR"],
            &failing,
        )?;
    }
    Ok(())
}

/// Reads the state for `status`, without the lock.
pub fn read(config: &Config) -> Result<Snapshot, StateError> {
    Ok(Snapshot {
        records: state::read(&config.state)?,
        listings: state::read_listings(&config.state)?
            .into_iter()
            .map(Arc::new)
            .collect(),
    })
}
