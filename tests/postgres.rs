//! The postgres provider against a real server that checks passwords (a throwaway cluster
//! per test, `common::pg_cluster`): zero downtime over two rotations and the grace period,
//! no plaintext in the server's statement log, quoted role names, `preflight` and the least
//! privileges the README grants, error classification without a secret in any message, and
//! crash recovery through the real binary with a kill at every step of a rotation.
//!
//! Every test starts with `PgCluster::start_or_skip`: without PostgreSQL it prints why and
//! passes, except under `CI=true`, where it fails.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use vercel_secret_rotator::config::{DatabaseConfig, SecretSource};
use vercel_secret_rotator::providers::postgres::PostgresProvider;
use vercel_secret_rotator::providers::{Credential, Outcome, Provider, ProviderError, Target};
use vercel_secret_rotator::secret::{ExposeSecret, Fields, SecretString};

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;
use crate::common::pg_cluster::{PgCluster, quote_ident, skip};
use crate::common::provider_helpers;

const USERS: [&str; 2] = ["orders_a", "orders_b"];

fn target() -> Target {
    Target {
        policy: "orders-db".to_owned(),
        installation: "acme".to_owned(),
        resource: "store_pg".to_owned(),
        installation_id: "icfg_test".into(),
        resource_info: None,
    }
}

/// Writes `text` to `dir/name` with mode `mode` and returns the path.
fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap_or_else(|e| panic!("{e}"));
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("{e}"));
    path
}

fn provider_with(admin_url_file: &Path, users: [&str; 2], timeout: Duration) -> PostgresProvider {
    PostgresProvider::new(DatabaseConfig {
        admin_url: SecretSource::File(admin_url_file.to_owned()),
        users: users.map(str::to_owned),
        host: None,
        port: None,
        database: None,
        timeout,
    })
}

fn provider(admin_url_file: &Path, users: [&str; 2]) -> PostgresProvider {
    provider_with(admin_url_file, users, Duration::from_secs(10))
}

fn field(credential: &Credential, name: &str) -> String {
    credential
        .fields
        .get(name)
        .unwrap_or_else(|| panic!("no field {name}"))
        .expose_secret()
        .to_owned()
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_owned()).unwrap_or_default()
}

/// Asserts a login is refused because of the password (SQLSTATE 28P01).
async fn assert_refused(pg: &PgCluster, user: &str, password: &str) {
    match pg.login(user, password).await {
        Ok(()) => panic!("{user} still logs in"),
        Err(e) => assert_eq!(sqlstate(&e), "28P01", "{user}: {e:?}"),
    }
}

async fn assert_logs_in(pg: &PgCluster, user: &str, password: &str) {
    if let Err(e) = pg.login(user, password).await {
        panic!("{user} cannot log in: {e:?}");
    }
}

fn assert_backend(err: &ProviderError, transient: bool, contains: &str) {
    provider_helpers::assert_backend(err, "postgres", transient, contains);
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_two_rotations_then_retirement_keep_a_working_credential_throughout() {
    let Some(pg) = PgCluster::start_or_skip("postgres_two_rotations") else {
        return;
    };
    pg.create_login_roles(&USERS).await;
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let admin = write_file(dir.path(), "admin.url", &pg.superuser_url(), 0o600);
    let p = provider(&admin, USERS);
    let t = target();
    let mut plaintexts = Vec::new();

    // Rotation 1: the first role, its fields from the admin URL; it logs in right away.
    let first = p
        .create(&t, "rot-1", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.handle, "orders_a");
    // The caller knew no previous credential: the other role is the live one it replaces.
    assert_eq!(first.supersedes.as_deref(), Some("orders_b"));
    assert_eq!(field(&first, "username"), "orders_a");
    assert_eq!(field(&first, "host"), "127.0.0.1");
    assert_eq!(field(&first, "port"), pg.port().to_string());
    assert_eq!(field(&first, "database"), "postgres");
    let pw = field(&first, "password");
    assert!(pw.len() >= 32 && pw.bytes().all(|b| b.is_ascii_alphanumeric()));
    plaintexts.push(pw.clone());
    // Redoing create with the same rotation id (a crash before the push) replaces the
    // password of the same role.
    let redo = p
        .create(&t, "rot-1", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(redo.handle, "orders_a");
    let pw1 = field(&redo, "password");
    assert_ne!(pw, pw1);
    plaintexts.push(pw1.clone());
    assert_refused(&pg, "orders_a", &pw).await;
    assert_eq!(
        p.verify(&t, "rot-1", &redo)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    assert_logs_in(&pg, "orders_a", &pw1).await;
    assert_eq!(pg.roles_with_password().await, ["orders_a"]);

    // Rotation 2: the other role; the newest and the previous credential both work.
    let second = p
        .create(&t, "rot-2", Some("orders_a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second.handle, "orders_b");
    assert_eq!(
        second.supersedes, None,
        "the caller named the previous role"
    );
    let pw2 = field(&second, "password");
    plaintexts.push(pw2.clone());
    assert_eq!(
        p.verify(&t, "rot-2", &second)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    assert_logs_in(&pg, "orders_b", &pw2).await;
    assert_logs_in(&pg, "orders_a", &pw1).await;

    // A deployment still running with the old credential holds a session.
    let running = pg
        .connect("orders_a", &pw1)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));

    // Grace is over: the previous credential is refused, the current one keeps working, and
    // the open session is not killed.
    assert_eq!(
        p.retire(&t, "orders_a")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    assert_refused(&pg, "orders_a", &pw1).await;
    assert_logs_in(&pg, "orders_b", &pw2).await;
    running
        .simple_query("SELECT 1")
        .await
        .unwrap_or_else(|e| panic!("the open session was cut: {e:?}"));
    assert_eq!(pg.roles_with_password().await, ["orders_b"]);

    // Rotation 3 goes back to the first role.
    let third = p
        .create(&t, "rot-3", Some("orders_b"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(third.handle, "orders_a");
    let pw3 = field(&third, "password");
    plaintexts.push(pw3.clone());
    assert_logs_in(&pg, "orders_a", &pw3).await;
    assert_logs_in(&pg, "orders_b", &pw2).await;

    // The server saw verifiers, never a password: not in its statement log, not stored.
    let log = pg.log_text();
    assert!(
        log.contains("ALTER ROLE \"orders_b\" PASSWORD 'SCRAM-SHA-256$4096:"),
        "log_statement=all did not record the verifier; log:\n{log}"
    );
    for pw in &plaintexts {
        assert!(
            !log.contains(pw.as_str()),
            "a plaintext password reached the server log"
        );
    }
    let stored = pg
        .superuser()
        .await
        .query(
            "SELECT rolpassword FROM pg_authid WHERE rolname = ANY($1)",
            &[&USERS.to_vec()],
        )
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(stored.len(), 2);
    for row in stored {
        let verifier: Option<String> = row.get(0);
        if let Some(v) = verifier {
            assert!(v.starts_with("SCRAM-SHA-256$4096:"), "{v}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_role_names_that_need_quoting_are_rotated_exactly() {
    let Some(pg) = PgCluster::start_or_skip("postgres_role_names_that_need_quoting") else {
        return;
    };
    let odd = ["Orders-B \"x\"", "orders a'q;"];
    // Decoys that an unquoted or case-folded name would hit.
    let decoys = ["orders-b \"x\"", "Orders-B"];
    pg.create_login_roles(&odd).await;
    pg.create_login_roles(&decoys).await;
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let admin = write_file(dir.path(), "admin.url", &pg.superuser_url(), 0o600);
    let p = provider(&admin, odd);
    let t = target();

    let a = p
        .create(&t, "r1", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(a.handle, odd[0]);
    assert_eq!(field(&a, "username"), odd[0]);
    assert_eq!(
        p.verify(&t, "r1", &a)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    let b = p
        .create(&t, "r2", Some(odd[0]))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(b.handle, odd[1]);
    assert_eq!(
        p.verify(&t, "r2", &b)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    assert_logs_in(&pg, odd[0], &field(&a, "password")).await;
    assert_logs_in(&pg, odd[1], &field(&b, "password")).await;
    let mut with_password = pg.roles_with_password().await;
    with_password.sort();
    let mut want = odd.map(str::to_owned).to_vec();
    want.sort();
    assert_eq!(with_password, want, "a decoy was touched");

    assert_eq!(
        p.retire(&t, odd[0]).await.unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    assert_refused(&pg, odd[0], &field(&a, "password")).await;
    assert_logs_in(&pg, odd[1], &field(&b, "password")).await;

    let lines = p.preflight().await.unwrap_or_else(|e| panic!("{e}"));
    assert!(lines.iter().any(|l| l.contains(odd[0])), "{lines:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_preflight_reports_the_roles_and_names_what_is_wrong() {
    let Some(pg) = PgCluster::start_or_skip("postgres_preflight") else {
        return;
    };
    pg.create_login_roles(&USERS).await;
    pg.exec(
        "CREATE ROLE orders_nologin NOLOGIN; CREATE ROLE weak_admin LOGIN PASSWORD 'weakAdminPw1';",
    )
    .await;
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let superuser = write_file(dir.path(), "su.url", &pg.superuser_url(), 0o600);

    let lines = provider(&superuser, USERS)
        .preflight()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let text = lines.join("\n");
    assert!(text.contains("admin connection works"), "{text}");
    for role in USERS {
        assert!(
            text.contains(&format!(
                "role \"{role}\" exists, can log in, and the admin may set its password"
            )),
            "{text}"
        );
    }
    assert!(
        text.contains(&format!(
            "host 127.0.0.1, port {}, database postgres",
            pg.port()
        )),
        "{text}"
    );

    let err = provider(&superuser, ["orders_a", "orders_missing"])
        .preflight()
        .await
        .unwrap_err();
    assert_backend(&err, false, "role \"orders_missing\" does not exist");
    let err = provider(&superuser, ["orders_nologin", "orders_a"])
        .preflight()
        .await
        .unwrap_err();
    assert_backend(&err, false, "role \"orders_nologin\" cannot log in");

    // An admin without CREATEROLE: `check` says so; `create` fails, permanently.
    let weak = write_file(
        dir.path(),
        "weak.url",
        &pg.url("weak_admin", "weakAdminPw1"),
        0o600,
    );
    let err = provider(&weak, USERS).preflight().await.unwrap_err();
    assert_backend(&err, false, "may not set the password of role \"orders_a\"");
    let err = provider(&weak, USERS)
        .create(&target(), "r", None)
        .await
        .unwrap_err();
    assert_backend(&err, false, "SQLSTATE 42501");

    // The least privileges the README grants are enough for every action.
    pg.exec("CREATE ROLE rotator_admin LOGIN CREATEROLE PASSWORD 'rotatorAdminPw1';")
        .await;
    if pg.version_num().await >= 160_000 {
        pg.exec("GRANT orders_a, orders_b TO rotator_admin WITH ADMIN OPTION;")
            .await;
    }
    let least = write_file(
        dir.path(),
        "least.url",
        &pg.url("rotator_admin", "rotatorAdminPw1"),
        0o600,
    );
    let p = provider(&least, USERS);
    let text = p
        .preflight()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .join("\n");
    assert!(text.contains("CREATEROLE"), "{text}");
    let t = target();
    let c = p
        .create(&t, "r1", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        p.verify(&t, "r1", &c)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    assert_logs_in(&pg, "orders_a", &field(&c, "password")).await;
    assert_eq!(
        p.retire(&t, "orders_a")
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Outcome::Done
    );
    assert_refused(&pg, "orders_a", &field(&c, "password")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_errors_are_classified_and_never_show_a_secret() {
    let Some(pg) = PgCluster::start_or_skip("postgres_errors") else {
        return;
    };
    const ADMIN_PW: &str = "Canary0Admin0Pw0b5e";
    const WRONG_PW: &str = "Canary0Wrong0Pw0d2a";
    pg.create_login_roles(&USERS).await;
    pg.exec(&format!(
        "CREATE ROLE canary_admin LOGIN SUPERUSER PASSWORD '{ADMIN_PW}';"
    ))
    .await;
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let t = target();
    let mut errors: Vec<ProviderError> = Vec::new();
    let mut made: Vec<String> = Vec::new();

    let good_url = pg.url("canary_admin", ADMIN_PW);
    let good = write_file(dir.path(), "good.url", &good_url, 0o600);
    let c = provider(&good, USERS)
        .create(&t, "r1", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    made.push(field(&c, "password"));

    // Wrong admin password: the server says 28P01, which retrying does not fix.
    let wrong = write_file(
        dir.path(),
        "wrong.url",
        &pg.url("canary_admin", WRONG_PW),
        0o600,
    );
    let err = provider(&wrong, USERS)
        .create(&t, "r", None)
        .await
        .unwrap_err();
    assert_backend(&err, false, "SQLSTATE 28P01");
    errors.push(err);
    let err = provider(&wrong, USERS).preflight().await.unwrap_err();
    assert_backend(&err, false, "28P01");
    errors.push(err);

    // Nothing listens on the port: transient.
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let refused = write_file(
        dir.path(),
        "refused.url",
        &format!(
            "postgres://canary_admin:{ADMIN_PW}@127.0.0.1:{closed_port}/postgres?sslmode=disable"
        ),
        0o600,
    );
    let err = provider(&refused, USERS)
        .create(&t, "r", None)
        .await
        .unwrap_err();
    assert_backend(&err, true, "connecting with the admin URL");
    errors.push(err);
    let err = provider(&refused, USERS)
        .retire(&t, "orders_a")
        .await
        .unwrap_err();
    assert_backend(&err, true, "");
    errors.push(err);

    // A server that accepts but never answers: the provider's timeout, transient.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let silent_port = silent
        .local_addr()
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let hung = write_file(
        dir.path(),
        "hung.url",
        &format!(
            "postgres://canary_admin:{ADMIN_PW}@127.0.0.1:{silent_port}/postgres?sslmode=disable"
        ),
        0o600,
    );
    let started = Instant::now();
    let err = provider_with(&hung, USERS, Duration::from_millis(400))
        .create(&t, "r", None)
        .await
        .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_backend(&err, true, "no answer from the database within 400ms");
    errors.push(err);
    drop(silent);

    // A readable-by-others admin file is refused with the fix, before any connection.
    let open = write_file(dir.path(), "open.url", &good_url, 0o644);
    let err = provider(&open, USERS)
        .create(&t, "r", None)
        .await
        .unwrap_err();
    assert_backend(&err, false, &format!("chmod 600 {}", open.display()));
    errors.push(err);

    // A broken URL: permanent, and the message does not quote it.
    let broken = write_file(
        dir.path(),
        "broken.url",
        &format!("postgres://canary_admin:{ADMIN_PW}@127.0.0.1:notaport/postgres"),
        0o600,
    );
    let err = provider(&broken, USERS)
        .create(&t, "r", None)
        .await
        .unwrap_err();
    assert_backend(&err, false, "not a valid connection string");
    errors.push(err);

    // Roles that do not exist: 42704, permanent.
    let err = provider(&good, ["ghost_a", "ghost_b"])
        .create(&t, "r", None)
        .await
        .unwrap_err();
    assert_backend(&err, false, "SQLSTATE 42704");
    errors.push(err);

    // `verify` with a password the role does not have: transient (a replica may lag).
    let mut fields = Fields::new();
    fields.insert(
        "password".to_owned(),
        SecretString::from(WRONG_PW.to_owned()),
    );
    let bogus = Credential {
        handle: "orders_b".to_owned(),
        fields,
        supersedes: None,
    };
    let err = provider(&good, USERS)
        .verify(&t, "r", &bogus)
        .await
        .unwrap_err();
    assert_backend(&err, true, "logging in as role \"orders_b\"");
    errors.push(err);

    // A role the config does not name is never touched.
    let err = provider(&good, USERS)
        .retire(&t, "canary_admin")
        .await
        .unwrap_err();
    assert_backend(&err, false, "not one of this policy's users");
    errors.push(err);

    // The server goes down: transient; back up: the rotation goes through.
    pg.stop();
    let err = provider(&good, USERS)
        .create(&t, "r2", Some("orders_a"))
        .await
        .unwrap_err();
    assert_backend(&err, true, "connecting with the admin URL");
    errors.push(err);
    pg.restart();
    let c = provider(&good, USERS)
        .create(&t, "r2", Some("orders_a"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    made.push(field(&c, "password"));
    assert_logs_in(&pg, "orders_b", &field(&c, "password")).await;

    for err in &errors {
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains("Canary0"),
            "a password in an error: {shown}"
        );
        for pw in &made {
            assert!(
                !shown.contains(pw.as_str()),
                "a made password in an error: {shown}"
            );
        }
        assert!(
            !shown.contains("postgres://"),
            "the admin URL in an error: {shown}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Crash recovery with the real binary.

const ACME: &str = "icfg_pg_acme";
const ACME_TOKEN: &str = "tok_acme_POSTGRES_8e21";
const RESOURCE: &str = "store_pg";

struct CrashScenario {
    fake: FakeVercel,
    dir: TempDir,
    config: PathBuf,
}

impl CrashScenario {
    async fn new(admin_url: &str) -> CrashScenario {
        let fake = FakeVercel::start().await;
        fake.add_installation(ACME, ACME_TOKEN);
        fake.add_resource(ACME, RESOURCE);
        let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
        let token = cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
        let admin = write_file(dir.path(), "admin.url", admin_url, 0o600);
        let text = format!(
            r#"[vercel]
api-url = "{url}"
request-timeout = "5s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[[policies]]
name = "orders-db"
installation = "acme"
resources = ["{RESOURCE}"]
schedule = "0 3 * * 0"
grace = "1s"
provider = {{ kind = "postgres", admin-url-file = "{admin}", users = ["orders_a", "orders_b"], timeout = "10s" }}

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://{{username}}:{{password}}@{{host}}:{{port}}/{{database}}"
"#,
            url = fake.url(),
            state = dir.path().join("state").display(),
            token = token.display(),
            admin = admin.display(),
        );
        let config = dir.path().join("config.toml");
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
        CrashScenario { fake, dir, config }
    }

    async fn run(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
        let mut all = vec!["--config".to_owned(), self.config.display().to_string()];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        cli::run_async(
            all,
            env.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
        .await
    }

    /// The user and password of the DATABASE_URL Vercel holds.
    fn pushed(&self) -> (String, String) {
        let secrets = self.fake.secrets(ACME, RESOURCE);
        let url = &secrets
            .get("DATABASE_URL")
            .unwrap_or_else(|| panic!("Vercel holds no DATABASE_URL: {secrets:?}"))
            .value;
        let config = tokio_postgres::Config::from_str(url).unwrap_or_else(|e| panic!("{e}"));
        let user = config.get_user().unwrap_or_default().to_owned();
        let password =
            String::from_utf8_lossy(config.get_password().unwrap_or_default()).into_owned();
        (user, password)
    }

    async fn status(&self) -> Value {
        let out = self.run(&["status", "--json"], &[]).await;
        assert_eq!(out.status.code(), Some(0), "status: {}", cli::stderr(&out));
        let json: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", cli::stdout(&out)));
        json["resources"]
            .as_array()
            .and_then(|rs| rs.iter().find(|r| r["key"]["resource"] == RESOURCE))
            .cloned()
            .unwrap_or(Value::Null)
    }

    /// Vercel's credential logs in, and it is the one the state calls current.
    async fn assert_vercel_works(&self, pg: &PgCluster, context: &str) -> String {
        let (user, password) = self.pushed();
        if let Err(e) = pg.login(&user, &password).await {
            panic!("{context}: the credential Vercel holds ({user}) does not log in: {e:?}");
        }
        let status = self.status().await;
        assert_eq!(
            status["current_handle"],
            user.as_str(),
            "{context}: {status}"
        );
        user
    }

    fn daemon(&self, env: &[(&str, &str)]) -> DaemonProcess {
        let log = self.dir.path().join(format!(
            "daemon-{}.log",
            Instant::now().elapsed().as_nanos()
        ));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let child = cli::bin()
            .args(["--config", &self.config.display().to_string(), "run"])
            .env("RUST_LOG", "info,vercel_secret_rotator=debug")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start the daemon: {e}"));
        DaemonProcess { child, log }
    }

    /// Runs the daemon until no retirement is pending, then stops it with SIGTERM.
    async fn retire_with_daemon(&self, context: &str) {
        let mut daemon = self.daemon(&[]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status().await;
            if status["retirements"].as_array().is_some_and(Vec::is_empty)
                && status["step"]["name"] == "idle"
            {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: retirements still pending: {status}\n{}",
                daemon.log()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        daemon.terminate(context).await;
    }
}

struct DaemonProcess {
    child: Child,
    log: PathBuf,
}

impl DaemonProcess {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn wait_exit(&mut self, limit: Duration, context: &str) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{context}: the daemon did not exit within {limit:?}:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn terminate(&mut self, context: &str) {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(sent, "{context}: kill -TERM failed");
        let status = self.wait_exit(Duration::from_secs(35), context).await;
        assert_eq!(status.code(), Some(0), "{context}:\n{}", self.log());
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Kills `run --once` at each step of a postgres rotation, restarts, and checks DESIGN's
/// invariant 1 against the real server: Vercel holds a credential that logs in, and once
/// the grace period is over only that role still has a password.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_kill_at_every_step_leaves_vercel_with_a_working_credential() {
    let Some(pg) = PgCluster::start_or_skip("postgres_a_kill_at_every_step") else {
        return;
    };
    pg.create_login_roles(&USERS).await;
    let once = ["run", "--once"];
    for point in [
        "creating",
        "created",
        "pushing",
        "pushed-unrecorded",
        "pushed",
        "notified",
    ] {
        // Each point from scratch: no password on either role, a fresh state and Vercel.
        pg.exec(&format!(
            "ALTER ROLE {a} PASSWORD NULL; ALTER ROLE {b} PASSWORD NULL;",
            a = quote_ident(USERS[0]),
            b = quote_ident(USERS[1])
        ))
        .await;
        let s = CrashScenario::new(&pg.superuser_url()).await;

        // An established credential, so the rotation that dies has a previous one.
        let out = s.run(&once, &[]).await;
        assert_eq!(out.status.code(), Some(0), "{point}: {}", cli::stderr(&out));
        // The other role's grace (1s) must be over, or the next rotation is held back.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        s.assert_vercel_works(&pg, &format!("{point}: established"))
            .await;

        let out = s.run(&once, &[("VSR_FAULT_KILL_AT", point)]).await;
        assert_eq!(
            out.status.code(),
            None,
            "{point}: should have died: {}",
            cli::stderr(&out)
        );
        assert!(
            cli::stderr(&out).contains(&format!("dying at {point}")),
            "{point}: {}",
            cli::stderr(&out)
        );
        // Two roles: at most two credentials can be live, whatever the crash left.
        assert!(pg.roles_with_password().await.len() <= 2);

        let out = s.run(&once, &[]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{point}: {}\n{}",
            cli::stdout(&out),
            cli::stderr(&out)
        );
        // `creating` to `pushed-unrecorded` redo the rotation (the other role); after
        // `pushed` and `notified` it is finished and `--once` rotates again (back to the
        // first role). Either way Vercel's credential must log in.
        s.assert_vercel_works(&pg, &format!("{point}: after the restart"))
            .await;
        let rotations = s
            .fake
            .requests()
            .iter()
            .filter(|r| r.method == "PUT")
            .count();
        assert!(rotations >= 2, "{point}: {rotations} pushes");

        // Grace over: the daemon retires the previous role; only Vercel's role keeps a
        // password, and it still logs in.
        tokio::time::sleep(Duration::from_millis(1200)).await;
        s.retire_with_daemon(point).await;
        let after = s
            .assert_vercel_works(&pg, &format!("{point}: after the retirements"))
            .await;
        assert_eq!(
            pg.roles_with_password().await,
            [after],
            "{point}: only the current role may keep a password"
        );

        // No plaintext password reached the server's statement log.
        let (_, password) = s.pushed();
        assert!(
            !pg.log_text().contains(&password),
            "{point}: plaintext in the server log"
        );
    }

    // A kill while retiring, in the daemon: the restarted daemon finishes the retirement.
    pg.exec(&format!(
        "ALTER ROLE {a} PASSWORD NULL; ALTER ROLE {b} PASSWORD NULL;",
        a = quote_ident(USERS[0]),
        b = quote_ident(USERS[1])
    ))
    .await;
    let s = CrashScenario::new(&pg.superuser_url()).await;
    let out = s.run(&once, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "retiring: {}",
        cli::stderr(&out)
    );
    // The other role's grace must be over before the second rotation may take it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = s.run(&once, &[]).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "retiring: {}",
        cli::stderr(&out)
    );
    let current = s.assert_vercel_works(&pg, "retiring").await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut dying = s.daemon(&[("VSR_FAULT_KILL_AT", "retiring")]);
    let status = dying.wait_exit(Duration::from_secs(30), "retiring").await;
    assert_eq!(
        status.code(),
        None,
        "retiring: should have died:\n{}",
        dying.log()
    );
    assert!(dying.log().contains("dying at retiring"), "{}", dying.log());
    s.assert_vercel_works(&pg, "retiring").await;
    s.retire_with_daemon("retiring").await;
    assert_eq!(s.assert_vercel_works(&pg, "retiring").await, current);
    assert_eq!(pg.roles_with_password().await, [current]);
}

/// Issue 10, item 18: after the first rotation of a pair nothing used to be pending, so a
/// second forced `run --once` at once rewrote the other role, which running deployments still
/// used (the rotator never saw it, but it is what Vercel held before). The role not rotated
/// first keeps its grace like any replaced credential: the second run is held back.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_the_first_rotation_gives_the_other_role_its_grace() {
    let Some(pg) = PgCluster::start_or_skip("postgres_first_rotation_grace") else {
        return;
    };
    pg.create_login_roles(&USERS).await;
    // Before the rotator, deployments use orders_b with a password the partner set.
    let before = "pre-rotator-password-1f9e";
    pg.exec(&format!(
        "ALTER ROLE {a} PASSWORD NULL; ALTER ROLE {b} PASSWORD '{before}';",
        a = quote_ident(USERS[0]),
        b = quote_ident(USERS[1])
    ))
    .await;
    let s = CrashScenario::new(&pg.superuser_url()).await;
    let text = std::fs::read_to_string(&s.config).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(&s.config, text.replace("grace = \"1s\"", "grace = \"1h\""))
        .unwrap_or_else(|e| panic!("{e}"));
    let once = ["run", "--once"];

    let out = s.run(&once, &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    assert_eq!(s.assert_vercel_works(&pg, "first rotation").await, USERS[0]);
    let status = s.status().await;
    assert_eq!(status["retirements"][0]["handle"], USERS[1], "{status}");

    let out = s.run(&once, &[]).await;
    assert_eq!(out.status.code(), Some(1), "{}", cli::stdout(&out));
    assert!(
        cli::stdout(&out).contains("held back until"),
        "{}",
        cli::stdout(&out)
    );
    assert_logs_in(&pg, USERS[1], before).await;
    assert_eq!(s.assert_vercel_works(&pg, "held back").await, USERS[0]);
}

/// `sslmode` is honoured: `require` and `prefer` speak TLS and check the server's certificate
/// against the system's roots (a certificate they cannot check is a permanent failure, with
/// the hint); with the test CA as the system's roots (`SSL_CERT_FILE`, read by
/// rustls-native-certs) the binary's `check` and a whole rotation go through over TLS.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_tls_follows_sslmode_and_checks_the_certificate() {
    const TEST: &str = "postgres_tls_follows_sslmode";
    let Some(pg) = PgCluster::start_or_skip(TEST) else {
        return;
    };
    let ca = match pg.enable_tls() {
        Ok(ca) => ca,
        Err(why) => return skip(TEST, &why),
    };
    pg.create_login_roles(&USERS).await;
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let with_mode = |mode: &str| {
        pg.superuser_url()
            .replace("sslmode=disable", &format!("sslmode={mode}"))
    };

    for mode in ["require", "prefer"] {
        let admin = write_file(dir.path(), &format!("{mode}.url"), &with_mode(mode), 0o600);
        let err = provider(&admin, USERS).preflight().await.unwrap_err();
        assert_backend(&err, false, "error performing TLS handshake");
        assert!(
            err.to_string().contains("root certificates"),
            "{mode}: {err}"
        );
        assert!(
            !err.to_string()
                .contains(crate::common::pg_cluster::SUPERUSER_PASSWORD)
        );
    }
    let plain = write_file(dir.path(), "disable.url", &with_mode("disable"), 0o600);
    provider(&plain, USERS)
        .preflight()
        .await
        .unwrap_or_else(|e| panic!("sslmode=disable: {e}"));

    let s = CrashScenario::new(&with_mode("require")).await;
    let trust = [("SSL_CERT_FILE", ca.to_str().unwrap_or_default())];
    let out = s.run(&["check"], &trust).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        cli::stdout(&out),
        cli::stderr(&out)
    );
    assert!(
        cli::stdout(&out).contains("admin connection works"),
        "{}",
        cli::stdout(&out)
    );
    let out = s.run(&["run", "--once"], &trust).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{}",
        cli::stdout(&out),
        cli::stderr(&out)
    );
    let user = s.assert_vercel_works(&pg, "tls").await;
    // The admin session and the verifying login both used TLS (log_connections).
    let log = pg.log_text();
    for who in [crate::common::pg_cluster::SUPERUSER, user.as_str()] {
        assert!(
            log.lines().any(|l| l.contains("connection authorized")
                && l.contains(&format!("user={who} "))
                && l.contains("application_name=vercel-secret-rotator")
                && l.contains("SSL enabled")),
            "no TLS session of {who} in the log:\n{log}"
        );
    }
}

/// Issue 11: one policy serves three resources on one server, each with its own pair of
/// roles and its own admin file (`{resource.id}` in `users` and `admin-url-file`); each
/// alternates its own pair, and no resource's rotation touches another's roles.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_a_templated_policy_serves_several_resources_each_with_its_own_pair() {
    let Some(pg) = PgCluster::start_or_skip("postgres_templated_policy") else {
        return;
    };
    let resources = ["store_p1", "store_p2", "store_p3"];
    let roles: Vec<String> = resources
        .iter()
        .flat_map(|r| [format!("{r}_a"), format!("{r}_b")])
        .collect();
    pg.create_login_roles(&roles.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    let fake = FakeVercel::start().await;
    fake.add_installation(ACME, ACME_TOKEN);
    for r in resources {
        fake.add_resource(ACME, r);
    }
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let token = cli::write_token(dir.path(), "acme.token", ACME_TOKEN);
    for r in resources {
        write_file(
            dir.path(),
            &format!("admin-{r}.url"),
            &pg.superuser_url(),
            0o600,
        );
    }
    let config = dir.path().join("config.toml");
    let text = format!(
        r#"[vercel]
api-url = "{url}"
request-timeout = "5s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-file = "{token}"

[[policies]]
name = "pg-fleet"
installation = "acme"
resources = {resources:?}
schedule = "0 3 * * 0"
grace = "1s"
provider = {{ kind = "postgres", admin-url-file = "{dir}/admin-{{resource.id}}.url", users = ["{{resource.id}}_a", "{{resource.id}}_b"], timeout = "10s", max-concurrent-per-target = 2 }}

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://{{username}}:{{password}}@{{host}}:{{port}}/{{database}}?application_name={{resource.id}}"
"#,
        url = fake.url(),
        state = dir.path().join("state").display(),
        token = token.display(),
        dir = dir.path().display(),
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{e}"));
    let run = || {
        cli::run_async(
            vec![
                "--config".to_owned(),
                config.display().to_string(),
                "run".to_owned(),
                "--once".to_owned(),
            ],
            Vec::new(),
        )
    };
    let pushed = |r: &str| -> (String, String, String) {
        let secrets = fake.secrets(ACME, r);
        let url = &secrets
            .get("DATABASE_URL")
            .unwrap_or_else(|| panic!("{r}: Vercel holds no DATABASE_URL: {secrets:?}"))
            .value;
        let config = tokio_postgres::Config::from_str(url).unwrap_or_else(|e| panic!("{e}"));
        (
            config.get_user().unwrap_or_default().to_owned(),
            String::from_utf8_lossy(config.get_password().unwrap_or_default()).into_owned(),
            config.get_application_name().unwrap_or_default().to_owned(),
        )
    };

    let out = run().await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let mut first = Vec::new();
    for r in resources {
        let (user, password, app) = pushed(r);
        assert_eq!(user, format!("{r}_a"), "{r}");
        assert_eq!(app, r);
        assert_logs_in(&pg, &user, &password).await;
        first.push((user, password));
    }
    // Each resource's first rotation gave its other role its grace (1s); then each turns to
    // its own second role, and the first one keeps working until it is retired.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let out = run().await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    for (r, (old_user, old_password)) in resources.iter().zip(&first) {
        let (user, password, _) = pushed(r);
        assert_eq!(user, format!("{r}_b"), "{r}");
        assert_logs_in(&pg, &user, &password).await;
        assert_logs_in(&pg, old_user, old_password).await;
    }
    let mut with_password = pg.roles_with_password().await;
    with_password.sort();
    let mut want = roles.clone();
    want.sort();
    assert_eq!(with_password, want);
}
