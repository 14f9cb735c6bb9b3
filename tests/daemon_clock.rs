//! The daemon's loop on tokio's paused clock: due times, retirements, reload, a panicking
//! turn and a store that stops writing, driven through hours of simulated time without a
//! single real sleep. The daemon runs as in production but for its parts: an in-memory store
//! and a pusher that records instead of calling Vercel (the `random` provider is real).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use vercel_secret_rotator::clock::{Clock, TokioClock};
use vercel_secret_rotator::config;
use vercel_secret_rotator::config::Installation;
use vercel_secret_rotator::daemon::{self, Parts, Triggers, Vercel};
use vercel_secret_rotator::discovery::{ListError, Lister};
use vercel_secret_rotator::metrics::Metrics;
use vercel_secret_rotator::resource::ResourceInfo;
use vercel_secret_rotator::rotation::push::{Delivery, Pusher};
use vercel_secret_rotator::rotation::{Job, RotationError};
use vercel_secret_rotator::state::memory::MemoryStore;
use vercel_secret_rotator::state::{Key, StateStore, Step};
use vercel_secret_rotator::vercel::{Notification, PushSecret};

/// These configs list nothing: a listing would be a bug of the daemon.
struct NoListings;

#[async_trait]
impl Lister for NoListings {
    async fn list(&self, installation: &Installation) -> Result<Vec<ResourceInfo>, ListError> {
        panic!(
            "no policy lists resources, yet {} was listed",
            installation.id
        )
    }
}

/// Records every push: (resource, when).
#[derive(Default)]
struct RecordingPusher {
    pushes: Mutex<Vec<(String, DateTime<Utc>)>>,
    clock: Mutex<Option<TokioClock>>,
    /// The first push panics (a bug in a turn), once.
    panic_once: AtomicBool,
}

impl RecordingPusher {
    fn pushes_of(&self, resource: &str) -> usize {
        self.pushes
            .lock()
            .unwrap()
            .iter()
            .filter(|(r, _)| r == resource)
            .count()
    }

    fn total(&self) -> usize {
        self.pushes.lock().unwrap().len()
    }
}

#[async_trait]
impl Pusher for RecordingPusher {
    async fn push(&self, job: &Job, _secrets: &[PushSecret]) -> Result<Delivery, RotationError> {
        if self.panic_once.swap(false, Ordering::SeqCst) {
            panic!("a bug in a rotation turn");
        }
        let now = self.clock.lock().unwrap().map(|c| c.now()).unwrap();
        self.pushes
            .lock()
            .unwrap()
            .push((job.resource().to_owned(), now));
        Ok(Delivery::Sent)
    }

    async fn notify(&self, _job: &Job, _n: &Notification) -> Result<(), RotationError> {
        Ok(())
    }
}

const HOUR: Duration = Duration::from_secs(3600);

fn write_config(dir: &Path, resources: &[&str]) -> PathBuf {
    let list = resources
        .iter()
        .map(|r| format!("\"{r}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let text = format!(
        r#"[state]
dir = "{state}"

[installations.acme]
id = "icfg_acme"
token-env = "DAEMON_CLOCK_TEST_TOKEN_UNUSED"

[[policies]]
name = "p"
installation = "acme"
resources = [{list}]
every = "1h"
grace = "30m"
provider = {{ kind = "random", length = 24 }}

[[policies.secrets]]
name = "P"
value = "{{password}}"
"#,
        state = dir.join("state").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Rig {
    _dir: tempfile::TempDir,
    path: PathBuf,
    store: Arc<MemoryStore>,
    pusher: Arc<RecordingPusher>,
    clock: TokioClock,
    triggers: Triggers,
    metrics: Arc<Metrics>,
}

impl Rig {
    fn new(resources: &[&str]) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), resources);
        // The file store would make it; the control socket lives there.
        std::fs::create_dir(dir.path().join("state")).unwrap();
        let clock = TokioClock::starting_at(
            DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
        );
        let pusher = Arc::new(RecordingPusher::default());
        *pusher.clock.lock().unwrap() = Some(clock);
        Rig {
            _dir: dir,
            path,
            store: Arc::new(MemoryStore::new()),
            pusher,
            clock,
            triggers: Triggers::default(),
            metrics: Arc::default(),
        }
    }

    async fn serve(&self) -> u8 {
        let pusher = self.pusher.clone();
        let parts = Parts {
            store: self.store.clone(),
            pushers: Arc::new(move |_| {
                Ok(Vercel {
                    pusher: pusher.clone() as Arc<dyn Pusher>,
                    lister: Arc::new(NoListings),
                })
            }),
            clock: Arc::new(self.clock),
            metrics: self.metrics.clone(),
        };
        let config = config::load(&self.path).unwrap();
        daemon::serve(&self.path, config, self.triggers.clone(), parts).await
    }

    fn retirements(&self, resource: &str) -> usize {
        self.store
            .get(&Key {
                policy: "p".into(),
                resource: resource.into(),
            })
            .map_or(0, |r| r.retirements.len())
    }
}

#[tokio::test(start_paused = true)]
async fn due_times_retirements_and_reload_on_a_paused_clock() {
    let rig = Rig::new(&["r1", "r2"]);
    let driver = async {
        // Nothing before the first due time (an hour after the resources are first seen).
        tokio::time::sleep(HOUR - Duration::from_secs(1)).await;
        assert_eq!(rig.pusher.total(), 0, "rotated before its due time");
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert_eq!(rig.pusher.pushes_of("r1"), 1);
        assert_eq!(rig.pusher.pushes_of("r2"), 1);

        // The second rotation makes the first credential a retirement, due 30 minutes later.
        tokio::time::sleep(HOUR).await;
        assert_eq!(rig.pusher.pushes_of("r1"), 2);
        assert_eq!(rig.retirements("r1"), 1);
        tokio::time::sleep(Duration::from_secs(31 * 60)).await;
        assert_eq!(rig.retirements("r1"), 0, "retired once its grace was over");

        // SIGHUP with a third resource: first due an hour after the reload.
        write_config(rig.path.parent().unwrap(), &["r1", "r2", "r3"]);
        rig.triggers.reload.notify_one();
        tokio::time::sleep(HOUR + Duration::from_secs(60)).await;
        assert_eq!(rig.pusher.pushes_of("r3"), 1);
        assert_eq!(rig.pusher.pushes_of("r1"), 3);
        rig.triggers.shutdown.cancel();
    };
    let (code, ()) = tokio::join!(rig.serve(), driver);
    assert_eq!(code, 0);
}

/// Issue 10, item 15: a turn that panics used to leave its key "in flight" forever: never
/// scheduled again, even on reload.
#[tokio::test(start_paused = true)]
async fn a_panicking_turn_releases_its_key() {
    let rig = Rig::new(&["r1"]);
    rig.pusher.panic_once.store(true, Ordering::SeqCst);
    let driver = async {
        tokio::time::sleep(HOUR + Duration::from_secs(1)).await;
        assert_eq!(rig.pusher.total(), 0, "the first push panicked");
        // The key is free again: the unfinished rotation is redone shortly after.
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(rig.pusher.pushes_of("r1"), 1, "the key was never released");
        let record = rig
            .store
            .get(&Key {
                policy: "p".into(),
                resource: "r1".into(),
            })
            .unwrap();
        assert_eq!(record.step, Step::Idle);
        rig.triggers.shutdown.cancel();
    };
    let (code, ()) = tokio::join!(rig.serve(), driver);
    assert_eq!(code, 0);
}

/// Issue 10, item 6: a store whose writer has stopped used to leave the daemon alive and
/// useless (every turn failing, the watchdog happy). It exits 1, so systemd restarts it, and
/// it starts nothing it could not record.
#[tokio::test(start_paused = true)]
async fn a_store_that_stops_writing_ends_the_daemon_with_status_1() {
    let rig = Rig::new(&["r1", "r2"]);
    let driver = async {
        tokio::time::sleep(HOUR + Duration::from_secs(1)).await;
        assert_eq!(rig.pusher.total(), 2);
        rig.store.break_writes("an fsync failed");
    };
    let serve = async {
        // Bounded: a daemon that never notices would otherwise sleep on forever.
        let code = tokio::time::timeout(10 * HOUR, rig.serve())
            .await
            .expect("the daemon went on with a store that cannot write");
        (code, rig.clock.now())
    };
    let ((code, stopped_at), ()) = tokio::join!(serve, driver);
    assert_eq!(code, 1);
    assert_eq!(
        rig.pusher.total(),
        2,
        "nothing was pushed after the store broke"
    );
    // It stopped at the next turn, not hours later.
    let started = DateTime::parse_from_rfc3339("2026-06-01T00:00:00Z").unwrap();
    assert!(
        stopped_at <= started + chrono::TimeDelta::hours(2) + chrono::TimeDelta::minutes(1),
        "{stopped_at}"
    );
}

/// The value of the sample of `name` with exactly `labels` in a scrape, parsed by a
/// Prometheus text-format parser; `None` when there is no such series.
fn sample(scrape: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    use openmetrics_parser::PrometheusValue;
    let parsed = openmetrics_parser::prometheus::parse_prometheus(scrape)
        .unwrap_or_else(|e| panic!("not the Prometheus text format ({e:?}):\n{scrape}"));
    let family = parsed.families.get(name)?;
    let names = family.get_label_names();
    if names.len() != labels.len() {
        return None;
    }
    let values: Vec<String> = names
        .iter()
        .map(|n| {
            labels
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| (*v).to_owned())
        })
        .collect::<Option<_>>()?;
    match &family.get_sample_by_label_values(&values)?.value {
        PrometheusValue::Gauge(n) => Some(n.as_f64()),
        PrometheusValue::Counter(c) => Some(c.value.as_f64()),
        other => panic!("{name}: {other:?}"),
    }
}

/// The metrics the daemon keeps: every governed resource's gauges from the start, moved by
/// each rotation; the rotations and pending retirements counted; a resource the config drops
/// loses its series at the reload.
#[tokio::test(start_paused = true)]
async fn the_daemon_keeps_each_resource_s_metrics() {
    let rig = Rig::new(&["r1", "r2"]);
    let start = rig.clock.now().timestamp() as f64;
    let h = HOUR.as_secs() as f64;
    let last = |scrape: &str, r: &str| {
        sample(
            scrape,
            "vercel_secret_rotator_last_success_timestamp_seconds",
            &[("policy", "p"), ("resource", r)],
        )
    };
    let next = |scrape: &str, r: &str| {
        sample(
            scrape,
            "vercel_secret_rotator_next_due_timestamp_seconds",
            &[("policy", "p"), ("resource", r)],
        )
    };
    let rotations = |scrape: &str, outcome: &str| {
        sample(
            scrape,
            "vercel_secret_rotator_rotations_total",
            &[("policy", "p"), ("outcome", outcome)],
        )
    };
    let pending = |scrape: &str| sample(scrape, "vercel_secret_rotator_retirements_pending", &[]);
    let driver = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let scrape = rig.metrics.encode();
        for r in ["r1", "r2"] {
            assert_eq!(last(&scrape, r), Some(0.0), "{r}: never rotated\n{scrape}");
            assert_eq!(next(&scrape, r), Some(start + h), "{r}\n{scrape}");
        }
        assert_eq!(rotations(&scrape, "success"), Some(0.0));
        assert_eq!(rotations(&scrape, "failure"), Some(0.0));
        assert_eq!(pending(&scrape), Some(0.0));

        // Two rotations each: the second leaves the first's credential to retire.
        tokio::time::sleep(2 * HOUR).await;
        let scrape = rig.metrics.encode();
        for r in ["r1", "r2"] {
            assert_eq!(last(&scrape, r), Some(start + 2.0 * h), "{r}\n{scrape}");
            assert_eq!(next(&scrape, r), Some(start + 3.0 * h), "{r}\n{scrape}");
        }
        assert_eq!(rotations(&scrape, "success"), Some(4.0));
        assert_eq!(pending(&scrape), Some(2.0));
        tokio::time::sleep(Duration::from_secs(31 * 60)).await;
        assert_eq!(pending(&rig.metrics.encode()), Some(0.0), "retired");

        // r2 leaves the config: its series go with it.
        write_config(rig.path.parent().unwrap(), &["r1"]);
        rig.triggers.reload.notify_one();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let scrape = rig.metrics.encode();
        assert!(last(&scrape, "r1").is_some());
        assert_eq!(last(&scrape, "r2"), None, "{scrape}");
        assert_eq!(next(&scrape, "r2"), None, "{scrape}");
        rig.triggers.shutdown.cancel();
    };
    let (code, ()) = tokio::join!(rig.serve(), driver);
    assert_eq!(code, 0);
}
