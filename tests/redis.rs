//! The redis provider against the machine's Redis (`VSR_TEST_REDIS_URL`), whose ACL users
//! check passwords: zero downtime over two rotations and the grace period, with the least ACL
//! the README grants the admin; the handle is only a hash; `preflight`; refusals and error
//! classes; no password in any error.
//!
//! Every test makes its own ACL users (`rot_<id>`, ...) and deletes them at the end. Tests
//! that need the server start with `Redis::connect_or_skip`: unreachable, it prints why and
//! passes, except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tempfile::TempDir;
use vercel_secret_rotator::config::{RedisConfig, SecretSource};
use vercel_secret_rotator::error::Classify;
use vercel_secret_rotator::providers::redis::RedisProvider;
use vercel_secret_rotator::providers::{Credential, Outcome, Provider, ProviderError, Target};
use vercel_secret_rotator::secret::{ExposeSecret, SecretString};

use crate::common::provider_helpers::{self, assert_no_secret};
use crate::common::services::{
    Redis, RedisUsers, closed_port, silent_server, unique_id, write_file,
};

/// What the README grants the admin user, as `ACL SETUSER` rules.
const ADMIN_RULES: &[&str] = &[
    "on",
    "resetkeys",
    "resetchannels",
    "-@all",
    "+acl|setuser",
    "+acl|getuser",
    "+acl|whoami",
    "+acl|dryrun",
    "+acl|save",
];

fn target() -> Target {
    Target {
        policy: "cache".to_owned(),
        installation: "acme".to_owned(),
        resource: "store_redis".to_owned(),
        installation_id: "icfg_test".into(),
        resource_info: None,
    }
}

fn provider(admin_url_file: &Path, user: &str, timeout: Duration) -> RedisProvider {
    RedisProvider::new(RedisConfig {
        admin_url: SecretSource::File(admin_url_file.to_owned()),
        user: user.to_owned(),
        host: None,
        port: None,
        timeout,
    })
}

fn field(credential: &Credential, name: &str) -> String {
    credential
        .fields
        .get(name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .expose_secret()
        .to_owned()
}

fn sha256_hex(value: &str) -> String {
    Sha256::digest(value.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_backend(err: &ProviderError, transient: bool, contains: &str) {
    provider_helpers::assert_backend(err, "redis", transient, contains);
}

/// An application user holding one initial password, and an admin user with only the README's
/// ACL, plus the admin-url file that names it.
struct Setup {
    db: Redis,
    user: String,
    initial: String,
    admin_user: String,
    admin_password: String,
    _guard: RedisUsers,
    dir: TempDir,
    admin_url_file: PathBuf,
}

impl Setup {
    async fn new(db: Redis) -> Setup {
        let id = unique_id();
        let user = format!("rot_{id}");
        let initial = format!("Init{id}");
        let admin_user = format!("rot_admin_{id}");
        let admin_password = format!("Admin{id}");
        let user_rules = ["on".to_owned(), format!(">{initial}"), "+ping".to_owned()];
        let mut admin_rules: Vec<String> = ADMIN_RULES.iter().map(|r| (*r).to_owned()).collect();
        admin_rules.push(format!(">{admin_password}"));
        let user_rules: Vec<&str> = user_rules.iter().map(String::as_str).collect();
        let admin_rules: Vec<&str> = admin_rules.iter().map(String::as_str).collect();
        let guard = db
            .create_users(&[(&user, &user_rules), (&admin_user, &admin_rules)])
            .await;
        let dir = TempDir::new().unwrap();
        // A database number in the URL: the admin may not SELECT, and needs not.
        let mut url = url::Url::parse(&db.url_as(&admin_user, &admin_password)).unwrap();
        url.set_path("/3");
        let admin_url_file = write_file(dir.path(), "admin.url", url.as_str(), 0o600);
        Setup {
            db,
            user,
            initial,
            admin_user,
            admin_password,
            _guard: guard,
            dir,
            admin_url_file,
        }
    }

    fn provider(&self) -> RedisProvider {
        provider(&self.admin_url_file, &self.user, Duration::from_secs(10))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_two_rotations_then_retirement_keep_a_working_credential_throughout() {
    let Some(db) = Redis::connect_or_skip("redis_two_rotations").await else {
        return;
    };
    let s = Setup::new(db).await;
    let user = s.user.as_str();
    let p = s.provider();
    let t = target();

    // Rotation 1: a new password beside the initial one; the handle is only its hash.
    let first = p.create(&t, "rot-1", None).await.unwrap();
    let pw1 = field(&first, "password");
    assert_eq!(pw1.len(), 40);
    assert!(pw1.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(first.handle, format!("sha256:{}", sha256_hex(&pw1)));
    assert!(!first.handle.contains(&pw1));
    assert_eq!(field(&first, "username"), user);
    assert_eq!(field(&first, "host"), s.db.host());
    assert_eq!(field(&first, "port"), s.db.port().to_string());
    assert_eq!(p.verify(&t, "rot-1", &first).await.unwrap(), Outcome::Done);
    assert!(s.db.logs_in(user, &pw1).await);
    assert!(
        s.db.logs_in(user, &s.initial).await,
        "the old password must stay"
    );

    // Rotation 2: the previous password keeps working through the grace period.
    let second = p.create(&t, "rot-2", Some(&first.handle)).await.unwrap();
    let pw2 = field(&second, "password");
    assert_ne!(pw1, pw2);
    assert_eq!(p.verify(&t, "rot-2", &second).await.unwrap(), Outcome::Done);
    assert!(s.db.logs_in(user, &pw2).await);
    assert!(s.db.logs_in(user, &pw1).await);
    let open = s.db.session(user, &pw1).await.unwrap();

    // Grace over: the previous one is refused, the current one works, open connections live.
    assert_eq!(p.retire(&t, &first.handle).await.unwrap(), Outcome::Done);
    assert!(!s.db.logs_in(user, &pw1).await);
    assert!(s.db.logs_in(user, &pw2).await);
    let mut open = open;
    let pong: String = ::redis::cmd("PING").query_async(&mut open).await.unwrap();
    assert_eq!(pong, "PONG", "retire must not close open connections");
    let hashes = s.db.password_hashes(user).await.unwrap();
    assert!(hashes.contains(&sha256_hex(&pw2)), "{hashes:?}");
    assert!(!hashes.contains(&sha256_hex(&pw1)), "{hashes:?}");

    // Retiring it again (a retry after a lost answer) is done, not an error.
    assert_eq!(p.retire(&t, &first.handle).await.unwrap(), Outcome::Done);
    assert!(s.db.logs_in(user, &pw2).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_preflight_reports_each_fact_and_names_a_missing_user() {
    let Some(db) = Redis::connect_or_skip("redis_preflight").await else {
        return;
    };
    let s = Setup::new(db).await;
    let lines = s.provider().preflight().await.unwrap();
    let all = lines.join("\n");
    assert!(
        lines[0].contains("admin connection to") && lines[0].contains(&s.admin_user),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "ACL user \"{}\" exists, is on and holds 1 password(s)",
            s.user
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "pushed fields: username {}, host {}, port {}",
            s.user,
            s.db.host(),
            s.db.port()
        )),
        "{all}"
    );
    assert!(all.contains("may run ACL SETUSER"), "{all}");
    assert!(all.contains("may run ACL SAVE"), "{all}");
    assert!(!all.contains(&s.admin_password), "{all}");

    // A user that does not exist: named, permanent; create neither adds it nor fails late.
    let missing = format!("rot_missing_{}", unique_id());
    let p = provider(&s.admin_url_file, &missing, Duration::from_secs(10));
    let err = p.preflight().await.unwrap_err();
    assert_backend(
        &err,
        false,
        &format!("ACL user \"{missing}\" does not exist"),
    );
    let err = p.create(&target(), "rot-1", None).await.unwrap_err();
    assert_backend(
        &err,
        false,
        &format!("ACL user \"{missing}\" does not exist"),
    );
    assert_eq!(
        s.db.password_hashes(&missing).await,
        None,
        "create made the user"
    );

    // A disabled user stays disabled.
    let off = format!("rot_off_{}", unique_id());
    let _off_guard = s.db.create_users(&[(&off, &["off", ">Whatever1"])]).await;
    let p = provider(&s.admin_url_file, &off, Duration::from_secs(10));
    assert_backend(&p.preflight().await.unwrap_err(), false, "is off");
    assert_backend(
        &p.create(&target(), "rot-1", None).await.unwrap_err(),
        false,
        "is off",
    );
    assert_eq!(s.db.password_hashes(&off).await.unwrap().len(), 1);

    // An admin that may read users but not change them.
    let weak = format!("rot_weak_{}", unique_id());
    let weak_password = format!("Weak{}", unique_id());
    let rule = format!(">{weak_password}");
    let _weak_guard =
        s.db.create_users(&[(
            &weak,
            &[
                "on",
                &rule,
                "-@all",
                "+acl|getuser",
                "+acl|whoami",
                "+acl|dryrun",
            ],
        )])
        .await;
    let weak_url = write_file(
        s.dir.path(),
        "weak.url",
        &s.db.url_as(&weak, &weak_password),
        0o600,
    );
    let p = provider(&weak_url, &s.user, Duration::from_secs(10));
    let err = p.preflight().await.unwrap_err();
    assert_backend(&err, false, "may not run ACL SETUSER");
    let err = p.create(&target(), "rot-1", None).await.unwrap_err();
    assert_backend(&err, false, "NOPERM");
    assert_no_secret(&err, &[&weak_password]);
    assert_eq!(s.db.password_hashes(&s.user).await.unwrap().len(), 1);
}

#[tokio::test]
async fn redis_admin_url_file_readable_by_others_is_refused_with_the_fix() {
    let dir = TempDir::new().unwrap();
    let canary = "Canary0123456789";
    let path = write_file(
        dir.path(),
        "admin.url",
        &format!("redis://admin:{canary}@127.0.0.1:6379"),
        0o644,
    );
    let p = provider(&path, "orders", Duration::from_secs(5));
    let handle = format!("sha256:{}", sha256_hex("x"));
    for err in [
        p.create(&target(), "rot-1", None).await.unwrap_err(),
        p.preflight().await.unwrap_err(),
        p.retire(&target(), &handle).await.unwrap_err(),
    ] {
        assert_backend(&err, false, &format!("chmod 600 {}", path.display()));
        assert_no_secret(&err, &[canary]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_wrong_admin_password_is_permanent_and_never_echoed() {
    let Some(db) = Redis::connect_or_skip("redis_wrong_admin_password").await else {
        return;
    };
    let s = Setup::new(db).await;
    let canary = "Canary0123456789";
    let url = write_file(
        s.dir.path(),
        "wrong.url",
        &s.db.url_as(&s.admin_user, canary),
        0o600,
    );
    let p = provider(&url, &s.user, Duration::from_secs(10));
    let handle = format!("sha256:{}", sha256_hex(&s.initial));
    for err in [
        p.create(&target(), "rot-1", None).await.unwrap_err(),
        p.preflight().await.unwrap_err(),
        p.retire(&target(), &handle).await.unwrap_err(),
    ] {
        assert_backend(&err, false, "refused the login");
        assert_no_secret(&err, &[canary, &s.db.url_as(&s.admin_user, canary)]);
    }
    assert!(
        s.db.logs_in(&s.user, &s.initial).await,
        "nothing may change"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_verify_with_a_wrong_password_fails_without_echoing_it() {
    let Some(db) = Redis::connect_or_skip("redis_verify_wrong").await else {
        return;
    };
    let s = Setup::new(db).await;
    let p = s.provider();
    let mut credential = p.create(&target(), "rot-1", None).await.unwrap();
    let canary = "Canary0123456789";
    credential
        .fields
        .insert("password".to_owned(), SecretString::from(canary.to_owned()));
    let err = p.verify(&target(), "rot-1", &credential).await.unwrap_err();
    assert_backend(&err, false, "refused the login");
    assert_no_secret(&err, &[canary, &s.admin_password]);
}

#[tokio::test]
async fn redis_unreachable_server_is_transient() {
    let dir = TempDir::new().unwrap();
    let canary = "Canary0123456789";
    let port = closed_port();
    let path = write_file(
        dir.path(),
        "admin.url",
        &format!("redis://admin:{canary}@127.0.0.1:{port}"),
        0o600,
    );
    let p = provider(&path, "orders", Duration::from_secs(5));
    let handle = format!("sha256:{}", sha256_hex("x"));
    for err in [
        p.create(&target(), "rot-1", None).await.unwrap_err(),
        p.preflight().await.unwrap_err(),
        p.retire(&target(), &handle).await.unwrap_err(),
    ] {
        assert_backend(&err, true, &format!("127.0.0.1:{port}"));
        assert_no_secret(&err, &[canary]);
    }
}

#[tokio::test]
async fn redis_a_server_that_never_answers_times_out_as_transient() {
    let (_listener, port) = silent_server();
    let dir = TempDir::new().unwrap();
    let path = write_file(
        dir.path(),
        "admin.url",
        &format!("redis://admin:Canary0123456789@127.0.0.1:{port}"),
        0o600,
    );
    let p = provider(&path, "orders", Duration::from_millis(300));
    let started = Instant::now();
    let err = p.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.is_transient(), "{err}");
    assert_no_secret(&err, &["Canary0123456789"]);
}

#[tokio::test]
async fn redis_retire_refuses_a_handle_that_is_not_a_password_hash() {
    // Refused before the admin URL is even read: no server needed.
    let p = provider(
        Path::new("/nonexistent/admin.url"),
        "orders",
        Duration::from_secs(5),
    );
    let hex = sha256_hex("x");
    for handle in [
        "orders".to_owned(),
        hex.clone(),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}", &hex[2..]),
        format!("sha256:{hex} on"),
    ] {
        let err = p.retire(&target(), &handle).await.unwrap_err();
        assert_backend(&err, false, "is not a redis password hash");
    }
}

/// Retiring is idempotent: a password the user no longer holds, for whatever reason, is
/// retired already; nothing else about the user changes, and a user that is gone is not
/// brought back.
#[tokio::test(flavor = "multi_thread")]
async fn redis_retiring_a_password_the_user_no_longer_holds_is_done() {
    let Some(db) = Redis::connect_or_skip("redis_retire_gone").await else {
        return;
    };
    let s = Setup::new(db).await;
    let user = s.user.as_str();
    let p = s.provider();
    let t = target();

    // A hash the user never held.
    let never = format!("sha256:{}", sha256_hex("never-set-on-this-user"));
    assert_eq!(p.retire(&t, &never).await.unwrap(), Outcome::Done);
    assert_eq!(
        s.db.password_hashes(user).await.unwrap(),
        [sha256_hex(&s.initial)]
    );

    // A password someone removed by hand before its retirement was due.
    let made = p.create(&t, "rot-1", None).await.unwrap();
    let pw = field(&made, "password");
    s.db.acl(&["SETUSER", user, &format!("!{}", sha256_hex(&pw))])
        .await;
    assert_eq!(p.retire(&t, &made.handle).await.unwrap(), Outcome::Done);
    assert!(s.db.logs_in(user, &s.initial).await, "other passwords stay");

    // The user itself is gone: done, and the user stays gone.
    s.db.acl(&["DELUSER", user]).await;
    assert_eq!(p.retire(&t, &made.handle).await.unwrap(), Outcome::Done);
    assert_eq!(s.db.password_hashes(user).await, None, "the user came back");
}

/// Issue 10, item 8: redis' `create` adds a new password on every call (it cannot replace
/// what an earlier call with the same rotation id added), and a redone rotation used to drop
/// the earlier try's handle: after a push that may have applied, that password stayed on the
/// user with nobody to retire it. Through the binary: the earlier try's password is retired
/// once its grace is over.
#[tokio::test(flavor = "multi_thread")]
async fn redis_a_redone_rotation_retires_the_password_of_the_earlier_try() {
    use crate::common::cli;
    use crate::common::fake_vercel::{FakeVercel, Scripted};
    let Some(db) = Redis::connect_or_skip("redis_a_redone_rotation").await else {
        return;
    };
    let s = Setup::new(db).await;
    let fake = FakeVercel::start().await;
    fake.add_installation("icfg_redis", "tok_REDIS_redo_77aa");
    fake.add_resource("icfg_redis", "store_redis");
    let token = cli::write_token(s.dir.path(), "acme.token", "tok_REDIS_redo_77aa");
    let config = s.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "1s"
retry-deadline = "2s"

[state]
dir = "{state}"

[installations.acme]
id = "icfg_redis"
token-file = "{token}"

[[policies]]
name = "cache"
installation = "acme"
resources = ["store_redis"]
schedule = "0 3 * * 0"
grace = "1s"
provider = {{ kind = "redis", admin-url-file = "{admin}", user = "{user}" }}

[[policies.secrets]]
name = "REDIS_PASSWORD"
value = "{{password}}"
"#,
            url = fake.url(),
            state = s.dir.path().join("state").display(),
            token = token.display(),
            admin = s.admin_url_file.display(),
            user = s.user,
        ),
    )
    .unwrap();
    let run = |args: &'static [&'static str]| {
        let mut all = vec!["--config".to_owned(), config.display().to_string()];
        all.extend(args.iter().map(|a| (*a).to_owned()));
        cli::run_async(all, Vec::new())
    };
    let hashes = || s.db.password_hashes(&s.user);

    // The push applies, and its answer is lost every time: it may have applied.
    fake.script(
        "icfg_redis",
        "store_redis",
        (0..40).map(|_| Scripted::handle_then_drop()).collect(),
    );
    let out = run(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(1), "{}", cli::stderr(&out));
    fake.clear_scripts();
    let earlier: Vec<String> = hashes()
        .await
        .unwrap()
        .into_iter()
        .filter(|h| *h != sha256_hex(&s.initial))
        .collect();
    assert_eq!(earlier.len(), 1, "the first try added one password");

    // The redo makes another password and pushes it; the earlier one gets its grace.
    let out = run(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    assert!(hashes().await.unwrap().contains(&earlier[0]));
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = run(&["run", "--once"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let left = hashes().await.unwrap();
    assert!(
        !left.contains(&earlier[0]),
        "the earlier try's password is still on the user: {left:?}"
    );
}
