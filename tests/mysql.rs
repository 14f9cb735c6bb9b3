//! The mysql provider against the machine's MariaDB (or MySQL; `VSR_TEST_MYSQL_URL`), which
//! checks passwords: zero downtime over two rotations and the grace period, with the least
//! privileges the README grants the admin; `preflight`; refusals and error classes; no
//! password in any error.
//!
//! Every test makes its own users (`rot_a_<id>`, ...) and drops them at the end. Tests that
//! need the server start with `Mysql::connect_or_skip`: unreachable, it prints why and passes,
//! except under `CI=true`, where it fails.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tempfile::TempDir;
use vercel_secret_rotator::config::{DatabaseConfig, SecretSource};
use vercel_secret_rotator::providers::mysql::MysqlProvider;
use vercel_secret_rotator::providers::{Credential, Outcome, Provider, ProviderError, Target};
use vercel_secret_rotator::secret::{ExposeSecret, SecretString};

use crate::common::provider_helpers::{self, assert_no_secret};
use crate::common::services::{
    Mysql, MysqlUsers, closed_port, silent_server, unique_id, write_file,
};

/// ER_ACCESS_DENIED_ERROR: a wrong password.
const ACCESS_DENIED: u16 = 1045;
/// ER_ACCOUNT_HAS_BEEN_LOCKED (MariaDB 4151, MySQL 3118).
const LOCKED: [u16; 2] = [4151, 3118];

fn target() -> Target {
    Target {
        policy: "orders-db".to_owned(),
        installation: "acme".to_owned(),
        resource: "store_my".to_owned(),
        installation_id: "icfg_test".into(),
        resource_info: None,
    }
}

fn provider(admin_url_file: &Path, users: [&str; 2], timeout: Duration) -> MysqlProvider {
    MysqlProvider::new(DatabaseConfig {
        admin_url: SecretSource::File(admin_url_file.to_owned()),
        users: users.map(str::to_owned),
        host: None,
        port: None,
        database: None,
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

fn assert_backend(err: &ProviderError, transient: bool, contains: &str) {
    provider_helpers::assert_backend(err, "mysql", transient, contains);
}

async fn assert_logs_in(db: &Mysql, user: &str, password: &str) {
    if let Err(code) = db.login(user, password).await {
        panic!("{user} cannot log in: error {code}");
    }
}

/// Refused: a wrong password (1045), or a locked account when `locked` allows it.
async fn assert_refused(db: &Mysql, user: &str, password: &str) {
    match db.login(user, password).await {
        Ok(()) => panic!("{user} still logs in"),
        Err(code) => assert!(
            code == ACCESS_DENIED || LOCKED.contains(&code),
            "{user}: error {code}"
        ),
    }
}

/// Two rotating users and an admin holding only what the README grants (CREATE USER on *.*
/// and SELECT on mysql.user), plus the admin-url file that names it.
struct Setup {
    db: Mysql,
    users: [String; 2],
    database: String,
    admin_user: String,
    admin_password: String,
    /// The users' passwords before any rotation: what Vercel held at the start.
    initial: [String; 2],
    _guard: MysqlUsers,
    dir: TempDir,
    admin_url_file: PathBuf,
}

impl Setup {
    async fn new(db: Mysql) -> Setup {
        let id = unique_id();
        let users = [format!("rot_a_{id}"), format!("rot_b_{id}")];
        let admin_user = format!("rot_admin_{id}");
        let admin_password = format!("Admin{id}");
        let initial = [format!("InitA{id}"), format!("InitB{id}")];
        let database = format!("rot_db_{id}");
        let mut guard = db
            .create_users(&[
                (&users[0], &initial[0]),
                (&users[1], &initial[1]),
                (&admin_user, &admin_password),
            ])
            .await;
        guard.create_database(&database).await;
        // The admin gets no privilege on the application's database: it needs none.
        db.run(&[
            format!("GRANT CREATE USER ON *.* TO '{admin_user}'@'%'"),
            format!("GRANT SELECT ON mysql.user TO '{admin_user}'@'%'"),
            format!(
                "GRANT SELECT ON `{database}`.* TO '{}'@'%', '{}'@'%'",
                users[0], users[1]
            ),
        ])
        .await;
        let dir = TempDir::new().unwrap();
        // The URL names the application's database: the pushed `database` field.
        let mut url = url::Url::parse(&db.url_as(&admin_user, &admin_password)).unwrap();
        url.set_path(&database);
        let admin_url_file = write_file(dir.path(), "admin.url", url.as_str(), 0o600);
        Setup {
            db,
            users,
            database,
            admin_user,
            admin_password,
            initial,
            _guard: guard,
            dir,
            admin_url_file,
        }
    }

    fn users(&self) -> [&str; 2] {
        [&self.users[0], &self.users[1]]
    }

    fn provider(&self) -> MysqlProvider {
        provider(&self.admin_url_file, self.users(), Duration::from_secs(10))
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_two_rotations_then_retirement_keep_a_working_credential_throughout() {
    let Some(db) = Mysql::connect_or_skip("mysql_two_rotations").await else {
        return;
    };
    let s = Setup::new(db).await;
    let [a, b] = s.users();
    let p = s.provider();
    let t = target();

    // Rotation 1: the first user, fields from the admin URL; it logs in right away.
    let first = p.create(&t, "rot-1", None).await.unwrap();
    assert_eq!(first.handle, a);
    // The caller knew no previous credential: the other user is the live one it replaces.
    assert_eq!(first.supersedes.as_deref(), Some(b));
    let pw1 = field(&first, "password");
    assert_eq!(pw1.len(), 32);
    assert!(pw1.bytes().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(field(&first, "username"), a);
    assert_eq!(field(&first, "host"), s.db.host());
    assert_eq!(field(&first, "port"), s.db.port().to_string());
    assert_eq!(field(&first, "database"), s.database);
    assert_eq!(p.verify(&t, "rot-1", &first).await.unwrap(), Outcome::Done);
    assert_logs_in(&s.db, a, &pw1).await;
    assert_refused(&s.db, a, &s.initial[0]).await;
    // Vercel's credential before the first rotation was the other user's: untouched.
    assert_logs_in(&s.db, b, &s.initial[1]).await;

    // Rotation 2: the other user. A crash before the push redoes `create` with the same id:
    // same user, and the first attempt's password is replaced.
    let attempt = p.create(&t, "rot-2", Some(a)).await.unwrap();
    assert_eq!(attempt.handle, b);
    let second = p.create(&t, "rot-2", Some(a)).await.unwrap();
    assert_eq!(second.handle, b);
    assert_eq!(
        second.supersedes, None,
        "the caller named the previous user"
    );
    let pw2 = field(&second, "password");
    assert_ne!(pw2, field(&attempt, "password"));
    assert_refused(&s.db, b, &field(&attempt, "password")).await;
    assert_eq!(p.verify(&t, "rot-2", &second).await.unwrap(), Outcome::Done);
    assert_logs_in(&s.db, b, &pw2).await;

    // Grace period: the previous credential still works, and a deployment's open session
    // lives on through the retirement.
    assert_logs_in(&s.db, a, &pw1).await;
    let mut open = s.db.session(a, &pw1).await.unwrap();

    assert_eq!(p.retire(&t, a).await.unwrap(), Outcome::Done);
    assert_refused(&s.db, a, &pw1).await;
    assert_logs_in(&s.db, b, &pw2).await;
    {
        use mysql_async::prelude::Queryable;
        let one: Option<i64> = open.query_first("SELECT 1").await.unwrap();
        assert_eq!(one, Some(1), "retire must not kill open sessions");
    }
    let _ = open.disconnect().await;

    // Rotation 3 takes the retired user back: create unlocks it.
    let third = p.create(&t, "rot-3", Some(b)).await.unwrap();
    assert_eq!(third.handle, a);
    let pw3 = field(&third, "password");
    assert_eq!(p.verify(&t, "rot-3", &third).await.unwrap(), Outcome::Done);
    assert_logs_in(&s.db, a, &pw3).await;
    assert_logs_in(&s.db, b, &pw2).await;
    assert_eq!(p.retire(&t, b).await.unwrap(), Outcome::Done);
    assert_refused(&s.db, b, &pw2).await;
    assert_logs_in(&s.db, a, &pw3).await;
    // Retiring again is harmless.
    assert_eq!(p.retire(&t, b).await.unwrap(), Outcome::Done);
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_user_with_several_hosts_gets_the_password_on_every_account() {
    let Some(db) = Mysql::connect_or_skip("mysql_several_hosts").await else {
        return;
    };
    let s = Setup::new(db).await;
    let [a, _] = s.users();
    s.db.run(&[format!(
        "CREATE USER '{a}'@'localhost' IDENTIFIED BY 'Other123'"
    )])
    .await;
    let p = s.provider();
    let lines = p.preflight().await.unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l.contains(&format!("{a}@'%'")) && l.contains(&format!("{a}@'localhost'"))),
        "{lines:#?}"
    );
    let distinct_hashes = "SELECT DISTINCT authentication_string FROM mysql.user WHERE User = ?";
    assert_eq!(s.db.strings(distinct_hashes, a).await.len(), 2);
    p.create(&target(), "rot-1", None).await.unwrap();
    // Both accounts now hold the same hash.
    let hashes = s.db.strings(distinct_hashes, a).await;
    assert_eq!(hashes.len(), 1, "{hashes:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_preflight_reports_each_fact_and_names_a_missing_user() {
    let Some(db) = Mysql::connect_or_skip("mysql_preflight").await else {
        return;
    };
    let s = Setup::new(db).await;
    let [a, b] = s.users();

    let lines = s.provider().preflight().await.unwrap();
    let all = lines.join("\n");
    assert!(
        lines[0].contains("admin connection to") && lines[0].contains(&s.admin_user),
        "{all}"
    );
    assert!(
        all.contains(&format!(
            "pushed fields: host {}, port {}, database {}",
            s.db.host(),
            s.db.port(),
            s.database
        )),
        "{all}"
    );
    assert!(
        all.contains(&format!("user \"{a}\" exists: {a}@'%'")),
        "{all}"
    );
    assert!(
        all.contains(&format!("user \"{b}\" exists: {b}@'%'")),
        "{all}"
    );
    assert!(
        all.contains("may alter the users: it holds CREATE USER"),
        "{all}"
    );
    assert!(all.contains("general query log"), "{all}");
    assert!(!all.contains(&s.admin_password), "{all}");

    let missing = format!("rot_missing_{}", unique_id());
    let p = provider(&s.admin_url_file, [a, &missing], Duration::from_secs(10));
    let err = p.preflight().await.unwrap_err();
    assert_backend(&err, false, &format!("user \"{missing}\" does not exist"));
    // And create refuses the missing user without touching anything.
    let err = p.create(&target(), "rot-1", Some(a)).await.unwrap_err();
    assert_backend(&err, false, &format!("user \"{missing}\" does not exist"));

    // An admin that may read mysql.user but not alter users.
    let weak = format!("rot_weak_{}", unique_id());
    let weak_password = format!("Weak{}", unique_id());
    let _weak_guard = s.db.create_users(&[(&weak, &weak_password)]).await;
    s.db.run(&[format!("GRANT SELECT ON mysql.user TO '{weak}'@'%'")])
        .await;
    let weak_url = write_file(
        s.dir.path(),
        "weak.url",
        &s.db.url_as(&weak, &weak_password),
        0o600,
    );
    let p = provider(&weak_url, [a, b], Duration::from_secs(10));
    let err = p.preflight().await.unwrap_err();
    assert_backend(&err, false, "may not alter users");
    assert!(
        err.to_string().contains("GRANT CREATE USER ON *.*"),
        "{err}"
    );
    // Trying anyway is a permanent privilege error that points at the README.
    let err = p.create(&target(), "rot-1", None).await.unwrap_err();
    assert_backend(&err, false, "README");
    assert_no_secret(&err, &[&weak_password]);
}

#[tokio::test]
async fn mysql_admin_url_file_readable_by_others_is_refused_with_the_fix() {
    let dir = TempDir::new().unwrap();
    let canary = "Canary0123456789";
    let path = write_file(
        dir.path(),
        "admin.url",
        &format!("mysql://root:{canary}@127.0.0.1:3306"),
        0o644,
    );
    let p = provider(&path, ["rot_a", "rot_b"], Duration::from_secs(5));
    for err in [
        p.create(&target(), "rot-1", None).await.unwrap_err(),
        p.preflight().await.unwrap_err(),
        p.retire(&target(), "rot_a").await.unwrap_err(),
    ] {
        assert_backend(&err, false, &format!("chmod 600 {}", path.display()));
        assert_no_secret(&err, &[canary]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_wrong_admin_password_is_permanent_and_never_echoed() {
    let Some(db) = Mysql::connect_or_skip("mysql_wrong_admin_password").await else {
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
    let p = provider(&url, s.users(), Duration::from_secs(10));
    for err in [
        p.create(&target(), "rot-1", None).await.unwrap_err(),
        p.preflight().await.unwrap_err(),
        p.retire(&target(), s.users()[0]).await.unwrap_err(),
    ] {
        assert_backend(&err, false, &ACCESS_DENIED.to_string());
        assert_no_secret(&err, &[canary, &s.db.url_as(&s.admin_user, canary)]);
    }
    // Nothing changed: the users' passwords are the ones they had.
    assert_logs_in(&s.db, s.users()[0], &s.initial[0]).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mysql_verify_with_a_wrong_password_fails_without_echoing_it() {
    let Some(db) = Mysql::connect_or_skip("mysql_verify_wrong").await else {
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
    assert_backend(&err, false, &ACCESS_DENIED.to_string());
    assert_no_secret(&err, &[canary, &s.admin_password]);
}

#[tokio::test]
async fn mysql_unreachable_server_is_transient() {
    let dir = TempDir::new().unwrap();
    let canary = "Canary0123456789";
    let port = closed_port();
    let path = write_file(
        dir.path(),
        "admin.url",
        &format!("mysql://root:{canary}@127.0.0.1:{port}"),
        0o600,
    );
    let p = provider(&path, ["rot_a", "rot_b"], Duration::from_secs(5));
    for err in [
        p.create(&target(), "rot-1", None).await.unwrap_err(),
        p.preflight().await.unwrap_err(),
        p.retire(&target(), "rot_b").await.unwrap_err(),
    ] {
        assert_backend(&err, true, &format!("127.0.0.1:{port}"));
        assert_no_secret(&err, &[canary]);
    }
}

#[tokio::test]
async fn mysql_a_server_that_never_answers_times_out_as_transient() {
    let (_listener, port) = silent_server();
    let dir = TempDir::new().unwrap();
    let path = write_file(
        dir.path(),
        "admin.url",
        &format!("mysql://root:Canary0123456789@127.0.0.1:{port}"),
        0o600,
    );
    let p = provider(&path, ["rot_a", "rot_b"], Duration::from_millis(300));
    let started = Instant::now();
    let err = p.create(&target(), "rot-1", None).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_backend(&err, true, "did not answer within 300ms");
}

#[tokio::test]
async fn mysql_retire_refuses_a_handle_that_is_not_a_configured_user() {
    // Refused before the admin URL is even read: no server needed.
    let p = provider(
        Path::new("/nonexistent/admin.url"),
        ["rot_a", "rot_b"],
        Duration::from_secs(5),
    );
    for handle in ["root", "rot_c", "", "rot_a@'%'"] {
        let err = p.retire(&target(), handle).await.unwrap_err();
        assert_backend(&err, false, "not one of the configured users");
    }
}
