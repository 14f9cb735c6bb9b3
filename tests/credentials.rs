//! Secrets from systemd credentials, through the binary: a postgres admin URL from
//! `admin-url-credential` rotating on a real server (under `$CREDENTIALS_DIRECTORY`, and
//! `check` on the host reading it where the unit's `LoadCredential=` says), a missing
//! credential named, and `check` on the host with the unit given by
//! `VERCEL_SECRET_ROTATOR_UNIT`: what it can read is said readable with the unit line it came
//! from, what it cannot find is named with why and leaves the exit status 0. No canary value
//! reaches any output.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::str::FromStr;

use tempfile::TempDir;

use crate::common::cli;
use crate::common::fake_vercel::FakeVercel;
use crate::common::pg_cluster::{PgCluster, SUPERUSER_PASSWORD};

const UNIT_ENV: &str = "VERCEL_SECRET_ROTATOR_UNIT";
const ACME: &str = "icfg_cred_acme";
const ACME_TOKEN: &str = "tok_acme_CANARY_cred_5d1e";
const RESOURCE: &str = "store_pg";
const USERS: [&str; 2] = ["orders_a", "orders_b"];

/// A config whose acme token and `orders-db` admin URL are systemd credentials.
fn write_config(dir: &Path, api_url: &str) -> String {
    let text = format!(
        r#"[vercel]
api-url = "{api_url}"
request-timeout = "5s"

[state]
dir = "{state}"

[installations.acme]
id = "{ACME}"
token-credential = "acme.token"

[[policies]]
name = "orders-db"
installation = "acme"
resources = ["{RESOURCE}"]
schedule = "0 3 * * 0"
grace = "1s"
provider = {{ kind = "postgres", admin-url-credential = "pg-admin", users = ["orders_a", "orders_b"], timeout = "10s" }}

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://{{username}}:{{password}}@{{host}}:{{port}}/{{database}}"
"#,
        state = dir.join("state").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

async fn run(config: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut all = vec!["--config".to_owned(), config.to_owned()];
    all.extend(args.iter().map(|s| (*s).to_owned()));
    cli::run_async(
        all,
        env.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
    .await
}

fn assert_no_canary(out: &Output, canaries: &[&str]) {
    let text = format!("{}{}", cli::stdout(out), cli::stderr(out));
    for canary in canaries {
        assert!(!text.contains(canary), "{canary} in the output:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_admin_url_from_a_credential_rotates_on_the_real_server() {
    let Some(pg) = PgCluster::start_or_skip("postgres_admin_url_from_a_credential") else {
        return;
    };
    pg.create_login_roles(&USERS).await;
    let fake = FakeVercel::start().await;
    fake.add_installation(ACME, ACME_TOKEN);
    fake.add_resource(ACME, RESOURCE);
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(dir.path(), &fake.url());
    // What systemd makes of LoadCredential=: a directory of plain copies, their mode its own.
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap_or_else(|e| panic!("{e}"));
    cli::write_token(&creds, "acme.token", ACME_TOKEN);
    let admin = cli::write_token(&creds, "pg-admin", &pg.superuser_url());
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o440))
        .unwrap_or_else(|e| panic!("{e}"));
    let creds_dir = creds.display().to_string();
    let env = [("CREDENTIALS_DIRECTORY", creds_dir.as_str())];
    let canaries = [SUPERUSER_PASSWORD, ACME_TOKEN];

    let out = run(&config, &["check"], &env).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    assert!(
        cli::stdout(&out).contains("policy orders-db: provider postgres: admin connection"),
        "{}",
        cli::stdout(&out)
    );
    assert_no_canary(&out, &canaries);

    // At the most talkative log level too: neither the admin URL nor the token is logged.
    let traced = [env[0], ("RUST_LOG", "trace")];
    let out = run(&config, &["run", "--once"], &traced).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    assert_no_canary(&out, &canaries);
    let secrets = fake.secrets(ACME, RESOURCE);
    let url = &secrets
        .get("DATABASE_URL")
        .unwrap_or_else(|| panic!("Vercel holds no DATABASE_URL: {secrets:?}"))
        .value;
    let pushed = tokio_postgres::Config::from_str(url).unwrap_or_else(|e| panic!("{e}"));
    let user = pushed.get_user().unwrap_or_default().to_owned();
    let password = String::from_utf8_lossy(pushed.get_password().unwrap_or_default()).into_owned();
    assert!(USERS.contains(&user.as_str()), "{user}");
    if let Err(e) = pg.login(&user, &password).await {
        panic!("the pushed credential ({user}) does not log in: {e:?}");
    }

    // On the host, without $CREDENTIALS_DIRECTORY: `check` finds the admin URL where the
    // unit's LoadCredential= says (a root-only file it reads as systemd would) and connects.
    let store = dir.path().join("credstore");
    std::fs::create_dir(&store).unwrap_or_else(|e| panic!("{e}"));
    let token = cli::write_token(&store, "acme.token", ACME_TOKEN);
    let admin = cli::write_token(&store, "orders-pg-admin", &pg.superuser_url());
    let unit = dir.path().join("vercel-secret-rotator.service");
    std::fs::write(
        &unit,
        format!(
            "[Service]\nLoadCredential=acme.token:{}\nLoadCredential=pg-admin:{}\n",
            token.display(),
            admin.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let unit = unit.display().to_string();
    let out = run(&config, &["check"], &[(UNIT_ENV, unit.as_str())]).await;
    assert_eq!(out.status.code(), Some(0), "{}", cli::stderr(&out));
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains(&format!(
            "policy orders-db: provider postgres: admin URL from systemd credential pg-admin: \
             on this host LoadCredential=pg-admin:{} ({unit}:3)",
            admin.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("policy orders-db: provider postgres: admin connection"),
        "{stdout}"
    );
    assert_no_canary(&out, &canaries);
}

/// Under systemd, a credential the unit does not load is named, with the fix, and nothing
/// is pushed; the other checks still run.
#[tokio::test(flavor = "multi_thread")]
async fn a_missing_credential_is_a_clear_error_naming_it() {
    let fake = FakeVercel::start().await;
    fake.add_installation(ACME, ACME_TOKEN);
    fake.add_resource(ACME, RESOURCE);
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let config = write_config(dir.path(), &fake.url());
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap_or_else(|e| panic!("{e}"));
    cli::write_token(&creds, "acme.token", ACME_TOKEN);
    let creds_dir = creds.display().to_string();
    let env = [("CREDENTIALS_DIRECTORY", creds_dir.as_str())];
    let missing = format!(
        "systemd credential pg-admin is not in $CREDENTIALS_DIRECTORY ({creds_dir}): the unit \
         needs LoadCredential=pg-admin:PATH"
    );

    let out = run(&config, &["check"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", cli::stdout(&out));
    assert!(
        cli::stderr(&out).contains(&missing),
        "{}",
        cli::stderr(&out)
    );
    assert!(
        cli::stdout(&out).contains("policy orders-db: provider postgres: NOT READY"),
        "{}",
        cli::stdout(&out)
    );

    let out = run(&config, &["run", "--once"], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", cli::stdout(&out));
    let text = format!("{}{}", cli::stdout(&out), cli::stderr(&out));
    assert!(text.contains(&missing), "{text}");
    assert!(fake.secrets(ACME, RESOURCE).is_empty());
    assert_no_canary(&out, &[ACME_TOKEN]);

    // A link in the directory is not what systemd puts there: refused, named.
    let elsewhere = cli::write_token(
        dir.path(),
        "elsewhere",
        "postgres://u:CANARY_link@127.0.0.1/x",
    );
    std::os::unix::fs::symlink(&elsewhere, creds.join("pg-admin"))
        .unwrap_or_else(|e| panic!("{e}"));
    let out = run(&config, &["check"], &env).await;
    assert_eq!(out.status.code(), Some(2), "{}", cli::stdout(&out));
    assert!(
        cli::stderr(&out).contains("systemd credential pg-admin: ")
            && cli::stderr(&out).contains("is a symbolic link"),
        "{}",
        cli::stderr(&out)
    );
    assert_no_canary(&out, &["CANARY_link", ACME_TOKEN]);
}

/// A config for the host checks: acme's token and an http provider's bearer token are
/// credentials the unit loads; globex's token and a postgres admin URL are credentials it
/// has no usable line for.
fn write_host_config(dir: &Path) -> String {
    let text = format!(
        r#"[state]
dir = "{state}"

[installations.acme]
id = "icfg_1"
token-credential = "acme.token"

[installations.globex]
id = "icfg_2"
token-credential = "globex.token"

[installations.initech]
id = "icfg_3"
token-credential = "initech.token"

[[policies]]
name = "orders-api"
installation = "acme"
resources = ["store_abc"]
every = "7d"
provider = {{ kind = "http", url = "https://internal.acme.example/rotate", token-credential = "internal.token" }}

[[policies.secrets]]
name = "API_KEY"
value = "{{secret}}"

[[policies]]
name = "orders-db"
installation = "acme"
resources = ["store_def"]
every = "7d"
provider = {{ kind = "postgres", admin-url-credential = "pg-admin", users = ["orders_a", "orders_b"] }}

[[policies.secrets]]
name = "DATABASE_URL"
value = "postgres://{{username}}:{{password}}@{{host}}/{{database}}"
"#,
        state = dir.join("state").display(),
    );
    let path = dir.join("config.toml");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    path.display().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn check_on_the_host_reads_the_units_credentials_and_names_what_it_cannot() {
    let dir = TempDir::new().unwrap_or_else(|e| panic!("{e}"));
    let config = write_host_config(dir.path());
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap_or_else(|e| panic!("{e}"));
    let acme = cli::write_token(&store, "acme.token", "tok_CANARY_acme_host");
    // Root-only files are what systemd reads; check reads them whatever their mode.
    let internal = cli::write_token(&store, "internal.token", "tok_CANARY_internal");
    std::fs::set_permissions(&internal, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let unit = dir.path().join("vsr.service");
    std::fs::write(
        &unit,
        format!(
            "[Unit]\nDescription=test\n\n[Service]\nExecStart=/usr/bin/true\n\
             LoadCredential=acme.token:{}\nSetCredential=globex.token:CANARY_in_unit\n",
            acme.display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The http provider's token comes from a drop-in, as `systemctl edit` writes it.
    let drop_ins = dir.path().join("vsr.service.d");
    std::fs::create_dir(&drop_ins).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        drop_ins.join("override.conf"),
        format!(
            "[Service]\nLoadCredential=internal.token:{}\nLoadCredentialEncrypted=pg-admin:{}\n",
            internal.display(),
            store.join("pg-admin.cred").display()
        ),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let unit_path = unit.display().to_string();
    let canaries = ["CANARY"];

    let out = run(
        &config,
        &["check"],
        &[(UNIT_ENV, unit_path.as_str()), ("RUST_LOG", "trace")],
    )
    .await;
    let (stdout, stderr) = (cli::stdout(&out), cli::stderr(&out));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_no_canary(&out, &canaries);
    for expected in [
        format!(
            "installation acme (icfg_1): token from systemd credential acme.token: readable (on \
             this host: LoadCredential=acme.token:{} ({unit_path}:6))",
            acme.display()
        ),
        "installation globex (icfg_2): token from systemd credential globex.token: NOT VERIFIED \
         on this host"
            .to_owned(),
        "installation initech (icfg_3): token from systemd credential initech.token: NOT \
         VERIFIED on this host"
            .to_owned(),
        format!(
            "policy orders-api: provider http: bearer token from systemd credential \
             internal.token: on this host LoadCredential=internal.token:{} ({}:2)",
            internal.display(),
            drop_ins.join("override.conf").display()
        ),
        "policy orders-db: provider postgres: NOT VERIFIED on this host".to_owned(),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    // Each credential it could not verify is named, with why.
    for expected in [
        "warning: installation globex: systemd credential globex.token not verified on this \
         host: set by SetCredential=globex.token:...",
        &format!(
            "warning: installation initech: systemd credential initech.token not verified on \
             this host: no LoadCredential=initech.token:PATH in {unit_path}, {}",
            drop_ins.join("override.conf").display()
        ),
        "warning: policy orders-db: postgres provider, preflight: systemd credential pg-admin \
         not verified on this host: LoadCredentialEncrypted=pg-admin:",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }

    // A LoadCredential= path that does not exist: systemd would not start the service.
    std::fs::remove_file(&acme).unwrap_or_else(|e| panic!("{e}"));
    let out = run(&config, &["check"], &[(UNIT_ENV, unit_path.as_str())]).await;
    assert_eq!(out.status.code(), Some(2), "{}", cli::stdout(&out));
    assert!(
        cli::stderr(&out).contains(&format!(
            "error: installation acme: systemd credential acme.token: \
             LoadCredential=acme.token:{} ({unit_path}:6): {} does not exist, so systemd would \
             not start the service",
            acme.display(),
            acme.display()
        )),
        "{}",
        cli::stderr(&out)
    );

    // $CREDENTIALS_DIRECTORY wins over the unit: what is there is read, and only there.
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap_or_else(|e| panic!("{e}"));
    for name in [
        "acme.token",
        "globex.token",
        "initech.token",
        "internal.token",
    ] {
        cli::write_token(&creds, name, "tok_CANARY_from_directory");
    }
    let creds_dir = creds.display().to_string();
    let out = run(
        &config,
        &["check"],
        &[
            (UNIT_ENV, unit_path.as_str()),
            ("CREDENTIALS_DIRECTORY", creds_dir.as_str()),
        ],
    )
    .await;
    let stdout = cli::stdout(&out);
    assert!(
        stdout.contains("token from systemd credential acme.token: readable\n")
            && !stdout.contains("on this host"),
        "{stdout}"
    );
    // pg-admin is not in the directory: under systemd that is an error, not a "not verified".
    assert_eq!(out.status.code(), Some(2), "{stdout}");
    assert!(
        cli::stderr(&out).contains("systemd credential pg-admin is not in $CREDENTIALS_DIRECTORY"),
        "{}",
        cli::stderr(&out)
    );
    assert_no_canary(&out, &canaries);
}
