//! The daemon's Prometheus metrics, and their text encoding for `GET /metrics`.
//!
//! | name | type | labels |
//! |---|---|---|
//! | `vercel_secret_rotator_last_success_timestamp_seconds` | gauge | `policy`, `resource` |
//! | `vercel_secret_rotator_next_due_timestamp_seconds` | gauge | `policy`, `resource` |
//! | `vercel_secret_rotator_rotations_total` | counter | `policy`, `outcome` (`success`, `failure`) |
//! | `vercel_secret_rotator_retirements_pending` | gauge | |
//! | `vercel_secret_rotator_vercel_requests_total` | counter | `endpoint`, `code` |
//! | `vercel_secret_rotator_vercel_request_duration_seconds` | histogram | `endpoint` |
//!
//! One [`Metrics`] is made by the daemon and handed down (to the Vercel client, the
//! executor): no global registry, so tests and `run --once` each have their own.
//!
//! Cost at scale: the only per-resource series are the two timestamp gauges, kept in one
//! compact map of our own (policy name shared, the resource id shared with the caller's key,
//! two `f64`s)
//! rather than two `prometheus-client` families, which would hold each label set twice and an
//! `Arc` per series. Counters and the histogram have no per-resource label: their series are
//! bounded by the policies and the three endpoints. `examples/metrics_memory.rs` measures it.
//!
//! A leaf: imports nothing of the crate, so the Vercel client and the protocol may use it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::ops::Bound;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabel, EncodeLabelSet, LabelSetEncoder,
};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const LAST_SUCCESS: &str = "vercel_secret_rotator_last_success_timestamp_seconds";
const NEXT_DUE: &str = "vercel_secret_rotator_next_due_timestamp_seconds";

/// The Prometheus text format's `Content-Type` (version 0.0.4), for whoever serves
/// [`Metrics::encode`].
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds of the request-duration buckets, in seconds: from a fast local answer to
/// the client's default 30 s timeout.
const DURATION_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0,
];

/// How a rotation attempt ended, for `rotations_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RotationLabels {
    policy: Arc<str>,
    outcome: Outcome,
}

impl EncodeLabelSet for RotationLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("policy", &*self.policy).encode(encoder.encode_label())?;
        ("outcome", self.outcome.name()).encode(encoder.encode_label())
    }
}

/// A Vercel request's answer: its status, or none (no answer: a transport failure).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RequestLabels {
    endpoint: &'static str,
    code: Option<u16>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("endpoint", self.endpoint).encode(encoder.encode_label())?;
        match self.code {
            Some(code) => ("code", code).encode(encoder.encode_label()),
            None => ("code", "error").encode(encoder.encode_label()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct EndpointLabels {
    endpoint: &'static str,
}

impl EncodeLabelSet for EndpointLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("endpoint", self.endpoint).encode(encoder.encode_label())
    }
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// When a resource last rotated and is next due, as Unix seconds: what the two per-resource
/// gauges show.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Times {
    /// 0: never (yet) succeeded.
    last_success: f64,
    /// `+Inf`: nothing scheduled (stopped by a permanent failure).
    next_due: f64,
}

/// Policy (shared) -> resource -> times. Sorted, so a scrape lists each policy's resources
/// in order, and can resume after the last one it encoded.
type ByPolicy = BTreeMap<Arc<str>, BTreeMap<Arc<str>, Times>>;

/// One of the two per-resource gauge families: name, help, which time it shows.
type GaugeFamily = (&'static str, &'static str, fn(&Times) -> f64);

/// The per-resource gauges.
#[derive(Debug, Default)]
struct ResourceGauges {
    by_policy: Mutex<ByPolicy>,
}

impl ResourceGauges {
    fn lock(&self) -> std::sync::MutexGuard<'_, ByPolicy> {
        // Every change is one insert or remove: a panic elsewhere leaves the map usable.
        self.by_policy
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Series encoded per hold of the lock: a scrape of 100,000 resources never keeps the
/// daemon's loop (which sets gauges after every turn) waiting for more than one such slice.
const ENCODE_SLICE: usize = 1024;

impl Collector for ResourceGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let families: [GaugeFamily; 2] = [
            (
                LAST_SUCCESS,
                "When each resource's last rotation succeeded (Unix seconds; 0: never)",
                |t| t.last_success,
            ),
            (
                NEXT_DUE,
                "When each resource's next rotation (or retry) is due (Unix seconds; +Inf: none, stopped)",
                |t| t.next_due,
            ),
        ];
        let policies: Vec<Arc<str>> = self.lock().keys().cloned().collect();
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for policy in &policies {
                // Slice by slice, each resuming after the last resource encoded.
                let mut after: Option<Arc<str>> = None;
                loop {
                    let gauges = self.lock();
                    let Some(resources) = gauges.get(policy) else {
                        break;
                    };
                    let from = match &after {
                        Some(last) => Bound::Excluded(last),
                        None => Bound::Unbounded,
                    };
                    let mut encoded = 0;
                    let mut last = None;
                    for (resource, times) in resources
                        .range::<Arc<str>, _>((from, Bound::Unbounded))
                        .take(ENCODE_SLICE)
                    {
                        let labels = [("policy", &**policy), ("resource", &**resource)];
                        family.encode_family(&labels)?.encode_gauge(&value(times))?;
                        encoded += 1;
                        last = Some(resource);
                    }
                    if encoded < ENCODE_SLICE {
                        break;
                    }
                    after = last.cloned();
                }
            }
        }
        Ok(())
    }
}

/// The metrics of one daemon (or one `run --once`). Cheap to update from any task.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    resources: Arc<ResourceGauges>,
    rotations: Family<RotationLabels, Counter>,
    retirements_pending: Gauge,
    requests: Family<RequestLabels, Counter>,
    durations: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// The policies [`Metrics::set_policies`] last named: their counters exist.
    policies: Mutex<Vec<Arc<str>>>,
}

impl Default for Metrics {
    fn default() -> Metrics {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let resources = Arc::new(ResourceGauges::default());
        registry.register_collector(Box::new(resources.clone()));
        let rotations = Family::<RotationLabels, Counter>::default();
        // The counter suffix `_total` is the encoder's.
        registry.register(
            "vercel_secret_rotator_rotations",
            "Rotation attempts that ended, by policy and outcome",
            rotations.clone(),
        );
        let retirements_pending = Gauge::default();
        registry.register(
            "vercel_secret_rotator_retirements_pending",
            "Old credentials waiting for their grace period to end (or for a retry) to be retired",
            retirements_pending.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "vercel_secret_rotator_vercel_requests",
            "Requests sent to the Vercel API (each attempt), by endpoint and status code (`error`: no answer)",
            requests.clone(),
        );
        let durations =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "vercel_secret_rotator_vercel_request_duration_seconds",
            "How long each request to the Vercel API took, by endpoint",
            durations.clone(),
        );
        Metrics {
            registry,
            resources,
            rotations,
            retirements_pending,
            requests,
            durations,
            policies: Mutex::default(),
        }
    }

    /// Everything, in the Prometheus text format (version 0.0.4): what `GET /metrics`
    /// answers with [`CONTENT_TYPE`].
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail; a metric's encoder cannot either.
        if prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry).is_err() {
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    /// Makes both `rotations_total` series of each policy exist (at 0), so a rate or an
    /// alert over them has a series before the first rotation; forgets policies not named
    /// (a reload removed or renamed them).
    pub fn set_policies<'a>(&self, policies: impl IntoIterator<Item = &'a str>) {
        let names: Vec<Arc<str>> = policies.into_iter().map(Arc::from).collect();
        for policy in &names {
            for outcome in [Outcome::Success, Outcome::Failure] {
                // Made at 0 by the lookup.
                drop(self.rotations.get_or_create(&RotationLabels {
                    policy: policy.clone(),
                    outcome,
                }));
            }
        }
        let mut known = self.policies.lock().unwrap_or_else(PoisonError::into_inner);
        for gone in known.iter().filter(|p| !names.contains(p)) {
            for outcome in [Outcome::Success, Outcome::Failure] {
                self.rotations.remove(&RotationLabels {
                    policy: gone.clone(),
                    outcome,
                });
            }
        }
        *known = names;
    }

    /// Counts a rotation attempt that ended.
    pub fn count_rotation(&self, policy: &str, outcome: Outcome) {
        self.rotations
            .get_or_create(&RotationLabels {
                policy: Arc::from(policy),
                outcome,
            })
            .inc();
    }

    /// Sets (creating them) one resource's two gauges. Given the `Arc<str>` of the daemon's
    /// key, a new series shares it: the id is not copied.
    pub fn set_resource<P, R>(
        &self,
        policy: P,
        resource: R,
        last_success: Option<DateTime<Utc>>,
        next_due: Option<DateTime<Utc>>,
    ) where
        P: AsRef<str> + Into<Arc<str>>,
        R: AsRef<str> + Into<Arc<str>>,
    {
        let times = Times {
            last_success: last_success.map_or(0.0, seconds),
            next_due: next_due.map_or(f64::INFINITY, seconds),
        };
        let mut gauges = self.resources.lock();
        let resources = match gauges.get_mut(policy.as_ref()) {
            Some(resources) => resources,
            None => gauges.entry(policy.into()).or_default(),
        };
        match resources.get_mut(resource.as_ref()) {
            Some(t) => *t = times,
            None => {
                resources.insert(resource.into(), times);
            }
        }
    }

    /// Removes one resource's gauges (it is no longer governed).
    pub fn remove_resource(&self, policy: &str, resource: &str) {
        let mut gauges = self.resources.lock();
        if let Some(resources) = gauges.get_mut(policy) {
            resources.remove(resource);
            if resources.is_empty() {
                gauges.remove(policy);
            }
        }
    }

    /// Keeps the gauges of the resources `keep` says yes to, and removes the others.
    pub fn retain_resources(&self, mut keep: impl FnMut(&Arc<str>, &Arc<str>) -> bool) {
        let mut gauges = self.resources.lock();
        gauges.retain(|policy, resources| {
            resources.retain(|resource, _| keep(policy, resource));
            !resources.is_empty()
        });
    }

    /// How many resources have gauges.
    pub fn resource_count(&self) -> usize {
        self.resources.lock().values().map(BTreeMap::len).sum()
    }

    pub fn set_retirements_pending(&self, pending: usize) {
        self.retirements_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// Adds `delta` (negative: retirements done) to the pending retirements.
    pub fn add_retirements_pending(&self, delta: i64) {
        self.retirements_pending.inc_by(delta);
    }

    /// Counts one request to the Vercel API and how long it took. `endpoint` is the route
    /// template (`PUT /v1/installations/{id}/resources/{resourceId}/secrets`), never a path
    /// with ids in it; `code` the answer's status, `None` when none came.
    pub fn observe_vercel_request(
        &self,
        endpoint: &'static str,
        code: Option<u16>,
        elapsed: Duration,
    ) {
        self.requests
            .get_or_create(&RequestLabels { endpoint, code })
            .inc();
        self.durations
            .get_or_create(&EndpointLabels { endpoint })
            .observe(elapsed.as_secs_f64());
    }
}

fn seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp() as f64 + f64::from(t.timestamp_subsec_millis()) / 1000.0
}

#[cfg(test)]
mod tests {
    use openmetrics_parser::prometheus::parse_prometheus;
    use openmetrics_parser::{MetricFamily, PrometheusType, PrometheusValue};

    use super::*;

    const PUT: &str = "PUT /v1/installations/{id}/resources/{resourceId}/secrets";

    type Family = MetricFamily<PrometheusType, PrometheusValue>;

    /// The scrape, parsed by a Prometheus text-format parser (a grammar, not a regex: it
    /// refuses what Prometheus would refuse).
    fn scrape(metrics: &Metrics) -> std::collections::HashMap<String, Family> {
        let text = metrics.encode();
        match parse_prometheus(&text) {
            Ok(parsed) => parsed.families,
            Err(e) => panic!("not the Prometheus text format ({e:?}):\n{text}"),
        }
    }

    /// The value of the sample with these labels (in any order), if there is one.
    fn sample(family: &Family, labels: &[(&str, &str)]) -> Option<PrometheusValue> {
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
        family
            .get_sample_by_label_values(&values)
            .map(|s| s.value.clone())
    }

    fn number(value: Option<PrometheusValue>) -> f64 {
        match value {
            Some(PrometheusValue::Gauge(n)) => n.as_f64(),
            Some(PrometheusValue::Counter(c)) => c.value.as_f64(),
            other => panic!("not a gauge or counter: {other:?}"),
        }
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).unwrap()
    }

    #[test]
    fn a_fresh_scrape_names_every_family_with_its_type() {
        let metrics = Metrics::new();
        metrics.set_policies(["orders-db"]);
        metrics.set_resource("orders-db", "store_a", None, Some(at(1_800_000_000)));
        metrics.observe_vercel_request(PUT, Some(201), Duration::from_millis(30));
        let families = scrape(&metrics);
        let want = [
            (LAST_SUCCESS, PrometheusType::Gauge),
            (NEXT_DUE, PrometheusType::Gauge),
            (
                "vercel_secret_rotator_rotations_total",
                PrometheusType::Counter,
            ),
            (
                "vercel_secret_rotator_retirements_pending",
                PrometheusType::Gauge,
            ),
            (
                "vercel_secret_rotator_vercel_requests_total",
                PrometheusType::Counter,
            ),
            (
                "vercel_secret_rotator_vercel_request_duration_seconds",
                PrometheusType::Histogram,
            ),
        ];
        for (name, kind) in want.clone() {
            let family = families
                .get(name)
                .unwrap_or_else(|| panic!("{name} missing: {:?}", families.keys()));
            assert_eq!(family.family_type, kind, "{name}");
            assert!(!family.help.is_empty(), "{name} has no help");
        }
        assert_eq!(families.len(), want.len(), "{:?}", families.keys());
    }

    #[test]
    fn series_are_pre_initialised_per_policy_and_resource() {
        let metrics = Metrics::new();
        metrics.set_policies(["orders-db", "cache"]);
        metrics.set_resource("orders-db", "store_a", None, Some(at(1_800_000_000)));
        metrics.set_resource(
            "orders-db",
            "store_b",
            Some(at(1_700_000_000)),
            Some(at(1_800_000_100)),
        );
        metrics.set_resource("cache", "store_c", Some(at(1_700_000_500)), None);
        let families = scrape(&metrics);

        let rotations = &families["vercel_secret_rotator_rotations_total"];
        for policy in ["orders-db", "cache"] {
            for outcome in ["success", "failure"] {
                let labels = [("policy", policy), ("outcome", outcome)];
                assert_eq!(number(sample(rotations, &labels)), 0.0, "{labels:?}");
            }
        }
        let last = &families[LAST_SUCCESS];
        let next = &families[NEXT_DUE];
        let labels = |p, r| [("policy", p), ("resource", r)];
        assert_eq!(number(sample(last, &labels("orders-db", "store_a"))), 0.0);
        assert_eq!(
            number(sample(last, &labels("orders-db", "store_b"))),
            1_700_000_000.0
        );
        assert_eq!(
            number(sample(next, &labels("orders-db", "store_b"))),
            1_800_000_100.0
        );
        assert!(number(sample(next, &labels("cache", "store_c"))).is_infinite());
        assert_eq!(
            number(sample(
                &families["vercel_secret_rotator_retirements_pending"],
                &[]
            )),
            0.0
        );

        // A resource that leaves loses its series; a policy that leaves, its counters.
        metrics.remove_resource("orders-db", "store_a");
        metrics.retain_resources(|policy, _| &**policy != "cache");
        metrics.set_policies(["orders-db"]);
        let families = scrape(&metrics);
        let last = &families[LAST_SUCCESS];
        assert_eq!(last.iter_samples().count(), 1);
        assert!(sample(last, &labels("orders-db", "store_b")).is_some());
        assert_eq!(metrics.resource_count(), 1);
        let rotations = &families["vercel_secret_rotator_rotations_total"];
        assert_eq!(rotations.iter_samples().count(), 2);
        assert!(sample(rotations, &[("policy", "cache"), ("outcome", "success")]).is_none());
    }

    #[test]
    fn a_request_is_counted_under_its_endpoint_template_and_code() {
        let metrics = Metrics::new();
        metrics.observe_vercel_request(PUT, Some(201), Duration::from_millis(40));
        metrics.observe_vercel_request(PUT, Some(201), Duration::from_millis(60));
        metrics.observe_vercel_request(PUT, Some(429), Duration::from_millis(5));
        metrics.observe_vercel_request(PUT, None, Duration::from_secs(2));
        let families = scrape(&metrics);
        let requests = &families["vercel_secret_rotator_vercel_requests_total"];
        let count = |code| number(sample(requests, &[("endpoint", PUT), ("code", code)]));
        assert_eq!(count("201"), 2.0);
        assert_eq!(count("429"), 1.0);
        assert_eq!(count("error"), 1.0);
        let durations = &families["vercel_secret_rotator_vercel_request_duration_seconds"];
        assert_eq!(durations.get_label_names(), ["endpoint".to_owned()]);
        match sample(durations, &[("endpoint", PUT)]) {
            Some(PrometheusValue::Histogram(h)) => {
                assert_eq!(h.count, Some(4));
                let sum = h.sum.map(|s| s.as_f64()).unwrap_or_default();
                assert!((sum - 2.105).abs() < 1e-9, "{sum}");
                let le = |bound: f64| {
                    h.buckets
                        .iter()
                        .find(|b| b.upper_bound == bound)
                        .map(|b| b.count.as_f64())
                };
                assert_eq!(le(0.005), Some(1.0));
                assert_eq!(le(0.05), Some(2.0));
                assert_eq!(le(0.1), Some(3.0));
                assert_eq!(le(f64::INFINITY), Some(4.0));
            }
            other => panic!("no histogram for the endpoint: {other:?}"),
        }
        // The text names the template, never an id.
        assert!(metrics.encode().contains("{resourceId}"));
    }

    #[test]
    fn counts_rotations_and_pending_retirements() {
        let metrics = Metrics::new();
        metrics.set_policies(["p"]);
        metrics.count_rotation("p", Outcome::Success);
        metrics.count_rotation("p", Outcome::Failure);
        metrics.count_rotation("p", Outcome::Failure);
        metrics.set_retirements_pending(3);
        metrics.add_retirements_pending(-1);
        metrics.add_retirements_pending(2);
        let families = scrape(&metrics);
        let rotations = &families["vercel_secret_rotator_rotations_total"];
        let n = |o| number(sample(rotations, &[("policy", "p"), ("outcome", o)]));
        assert_eq!((n("success"), n("failure")), (1.0, 2.0));
        assert_eq!(
            number(sample(
                &families["vercel_secret_rotator_retirements_pending"],
                &[]
            )),
            4.0
        );
    }

    /// A scrape is encoded a slice at a time (the lock is let go in between): every series
    /// once, in order, however many slices it takes.
    #[test]
    fn many_resources_are_each_encoded_once() {
        let metrics = Metrics::new();
        let n = 2 * ENCODE_SLICE + 7;
        for i in 0..n {
            metrics.set_resource("big", format!("r{i:05}"), Some(at(i as i64)), None);
        }
        metrics.set_resource("small", "only", Some(at(1)), None);
        let families = scrape(&metrics);
        let last = &families[LAST_SUCCESS];
        assert_eq!(last.iter_samples().count(), n + 1);
        for i in [0, ENCODE_SLICE - 1, ENCODE_SLICE, n - 1] {
            let labels = [("policy", "big"), ("resource", &*format!("r{i:05}"))];
            assert_eq!(number(sample(last, &labels)), i as f64, "{labels:?}");
        }
        assert_eq!(families[NEXT_DUE].iter_samples().count(), n + 1);
    }

    /// Label values are escaped: a resource id may hold a quote or a backslash.
    #[test]
    fn awkward_resource_ids_stay_one_label_value() {
        let metrics = Metrics::new();
        let id = r#"we"ird\id,x="y"}"#;
        metrics.set_resource("p", id, Some(at(5)), None);
        let families = scrape(&metrics);
        let last = &families[LAST_SUCCESS];
        assert_eq!(
            number(sample(last, &[("policy", "p"), ("resource", id)])),
            5.0
        );
    }
}
