//! The client's retries and rate limiting end to end: the real binary (`run --once`) pushing
//! 200 resources to a fake Vercel that fails a large share of requests at random, or enforces a
//! token bucket. Nothing may be lost: every resource ends up holding what the run says it
//! pushed, and the run exits 0.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Output;
use std::time::Instant;

use vercel_secret_rotator::secret::{self, SecretString};

use crate::common::cli;
use crate::common::fake_vercel::{FakeVercel, Faults};

const INSTALLATION: &str = "icfg_many";
const TOKEN: &str = "tok_many_CANARY_0c1d2e";
const RESOURCES: usize = 200;

fn resource(i: usize) -> String {
    format!("store_{i:03}")
}

/// A fake with one installation of 200 resources, and a config for it in a temp dir.
struct Fleet {
    fake: FakeVercel,
    /// Holds the config, token and state until the test ends.
    _dir: tempfile::TempDir,
    config: PathBuf,
}

impl Fleet {
    async fn new(vercel_extra: &str) -> Fleet {
        let fake = FakeVercel::start().await;
        fake.add_installation(INSTALLATION, TOKEN);
        for i in 0..RESOURCES {
            fake.add_resource(INSTALLATION, &resource(i));
        }
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let token = cli::write_token(dir.path(), "many.token", TOKEN);
        let resources: Vec<String> = (0..RESOURCES)
            .map(|i| format!("\"{}\"", resource(i)))
            .collect();
        let config = dir.path().join("config.toml");
        let text = format!(
            r#"[vercel]
api-url = "{url}"
{vercel_extra}

[state]
dir = "{state}"

[installations.many]
id = "{INSTALLATION}"
token-file = "{token}"

[[policies]]
name = "fleet"
installation = "many"
resources = [{resources}]
every = "30d"
provider = {{ kind = "random", length = 32, charset = "base64url" }}

[[policies.secrets]]
name = "PGPASSWORD"
value = "{{password}}"
"#,
            url = fake.url(),
            state = dir.path().join("state").display(),
            token = token.display(),
            resources = resources.join(", "),
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        Fleet {
            fake,
            _dir: dir,
            config,
        }
    }

    async fn run_once(&self) -> Output {
        let args = vec![
            "--config".to_owned(),
            self.config.display().to_string(),
            "run".to_owned(),
            "--once".to_owned(),
        ];
        cli::run_async(args, Vec::new()).await
    }

    /// Exit 0, every resource holds a fresh 32-character base64url value, and the summary's
    /// fingerprint for each resource is the fingerprint of what the fake holds.
    fn assert_all_rotated(&self, out: &Output) {
        let stdout = cli::stdout(out);
        let stderr = cli::stderr(out);
        assert_eq!(
            out.status.code(),
            Some(0),
            "stdout:\n{stdout}\nstderr (tail):\n{}",
            tail(&stderr, 40)
        );
        assert!(
            stdout.contains(&format!("{RESOURCES} rotated, 0 failed")),
            "{stdout}"
        );
        let rows: BTreeMap<&str, &str> = stdout
            .lines()
            .filter(|l| l.starts_with("fleet ") && l.contains("rotated"))
            .filter_map(|l| {
                let mut cells = l.split_whitespace();
                let resource = cells.nth(1)?;
                Some((resource, cells.last()?))
            })
            .collect();
        assert_eq!(rows.len(), RESOURCES, "{stdout}");
        for i in 0..RESOURCES {
            let id = resource(i);
            let stored = self.fake.secrets(INSTALLATION, &id);
            let value = &stored
                .get("PGPASSWORD")
                .unwrap_or_else(|| panic!("{id} holds nothing"))
                .value;
            assert!(
                value.len() == 32
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
                "{id}: not a fresh credential"
            );
            let want = secret::fingerprint_all([SecretString::from(value.clone())].iter());
            assert_eq!(
                rows[id.as_str()],
                want,
                "{id}: the summary and Vercel disagree"
            );
        }
        assert!(
            !format!("{stdout}{stderr}").contains(TOKEN),
            "the token leaked"
        );
    }
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// 30% of requests answered 5xx, 10% of connections dropped (before handling, after handling
/// with the answer lost, or midway through a 5xx body), 2% hung past the 1 s request timeout.
#[tokio::test(flavor = "multi_thread")]
async fn every_resource_is_rotated_through_random_faults() {
    let fleet = Fleet::new("request-timeout = \"1s\"\nmax-concurrent-requests = 32").await;
    fleet.fake.set_faults(Faults {
        seed: 0x5eed_0001,
        server_error_percent: 30,
        drop_percent: 10,
        hang_percent: 2,
    });
    let started = Instant::now();
    let out = fleet.run_once().await;
    let elapsed = started.elapsed();
    fleet.assert_all_rotated(&out);

    let answers = fleet.fake.answers();
    let failed = answers
        .iter()
        .filter(|a| a.status.is_none_or(|s| s >= 500))
        .count();
    let stderr = cli::stderr(&out);
    let retries = stderr.lines().filter(|l| l.contains("retrying")).count();
    eprintln!(
        "faults: {} requests, {failed} failed or cut, {retries} retries logged, {elapsed:?}",
        answers.len()
    );
    assert!(failed >= 40, "the faults happened: {failed}");
    assert!(
        retries >= failed / 2,
        "retries are logged at warn: {retries}"
    );
    let line = stderr
        .lines()
        .find(|l| l.contains("retrying"))
        .unwrap_or_default();
    assert!(
        line.contains("WARN") && line.contains("store_") && line.contains("attempt"),
        "{line}"
    );
}

/// A token bucket of 20 requests/s and 64 rotations in flight: after the first burst the
/// client settles at the bucket's rate instead of hammering it.
#[tokio::test(flavor = "multi_thread")]
async fn a_429_storm_settles_at_the_allowed_rate() {
    let fleet = Fleet::new("request-timeout = \"5s\"\nmax-concurrent-requests = 64").await;
    fleet.fake.set_rate_limit(20);
    let started = Instant::now();
    let out = fleet.run_once().await;
    let elapsed = started.elapsed();
    fleet.assert_all_rotated(&out);

    let answers = fleet.fake.answers();
    let puts: Vec<_> = answers.iter().filter(|a| a.method == "PUT").collect();
    let refused = puts.iter().filter(|a| a.status == Some(429)).count();
    let accepted: Vec<Instant> = puts
        .iter()
        .filter(|a| a.status == Some(201))
        .map(|a| a.at)
        .collect();
    assert_eq!(accepted.len(), RESOURCES);
    let first = accepted.iter().min().copied().unwrap_or_else(Instant::now);
    let last = accepted.iter().max().copied().unwrap_or_else(Instant::now);
    let span = last.duration_since(first);
    // N accepted requests span N - 1 intervals.
    let rate = (accepted.len() - 1) as f64 / span.as_secs_f64();
    eprintln!(
        "429 storm: {} requests, {refused} answered 429, {} accepted over {span:?} = {rate:.1}/s, run {elapsed:?}",
        puts.len(),
        accepted.len()
    );
    assert!(refused < 100, "{refused} requests got a 429");
    assert!(rate >= 0.8 * 20.0, "{rate:.1}/s is under 80% of 20/s");
}
