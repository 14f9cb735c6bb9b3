//! The `postgres` provider: two login roles that take turns. `create` gives the role that is
//! not in use a new password; the other keeps working until `retire` removes its password
//! after the grace period.
//!
//! - The admin connection URL is read from `admin-url-file` (owner-only, checked) or
//!   `admin-url-credential` (a systemd credential) at every call, so a rotated admin password
//!   is picked up without a restart. Its `sslmode` is honoured: `disable` is plain TCP, `prefer` and `require` use rustls with the system's
//!   root certificates (the server's certificate is verified, unlike libpq's `require`).
//! - The password is 32 alphanumeric characters from the OS random source, drawn without
//!   bias. It never reaches the server: `create` computes its SCRAM-SHA-256 verifier here and
//!   sends `ALTER ROLE ... PASSWORD '<verifier>'`, so neither the server log
//!   (`log_statement`), nor `pg_stat_statements`, nor `pg_stat_activity` ever holds it.
//! - The handle is the role's name. A repeated `create` with the same rotation id sets a new
//!   password on the same role again (the previous handle has not changed, so the same role
//!   is picked): that is "replace what that id made".
//! - `verify` logs in as the role with the new password (same host, port, database and TLS
//!   as the admin URL) and runs `SELECT 1`. `retire` sets `PASSWORD NULL`: the role can no
//!   longer log in with a password; its open sessions are not killed. It refuses a role the
//!   config does not name.
//! - Errors are `Backend` errors built from the SQLSTATE and the server's message (scrubbed
//!   of every value this call holds), never from the admin URL. Connection trouble, timeouts
//!   and SQLSTATE classes 08, 53 and 57P (and a few retryable codes) are transient; the rest
//!   (bad password 28P01, unknown role 42704, missing privilege 42501, ...) is permanent.

use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls, SimpleQueryMessage};
use tokio_postgres_rustls::MakeRustlsConnect;
use zeroize::Zeroizing;

use super::{Credential, Outcome, Provider, ProviderError, Target};
use crate::config::DatabaseConfig;
use crate::secret::{ExposeSecret, Fields, SecretString};

const KIND: &str = "postgres";

/// Length of a generated password: 32 of 62 symbols, about 190 bits.
const PASSWORD_LENGTH: usize = 32;

/// PostgreSQL's default port, for an admin URL that names none.
const DEFAULT_PORT: u16 = 5432;

/// Shown in `pg_stat_activity` for the provider's own sessions, unless the admin URL sets one.
const APPLICATION_NAME: &str = "vercel-secret-rotator";

/// PostgreSQL 16 made CREATEROLE need ADMIN OPTION on the role it alters.
const ADMIN_OPTION_SINCE: i32 = 160_000;

/// Rotates the passwords of two alternating login roles through an admin connection.
pub struct PostgresProvider {
    config: DatabaseConfig,
    /// The rustls connector, built on first TLS use (loading the system roots reads files).
    tls: OnceLock<Tls>,
}

impl std::fmt::Debug for PostgresProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresProvider")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl PostgresProvider {
    pub fn new(config: DatabaseConfig) -> Self {
        PostgresProvider {
            config,
            tls: OnceLock::new(),
        }
    }

    /// Reads and parses the admin URL; done at each call so a rotated admin password is used.
    fn admin(&self, action: &'static str) -> Result<Admin, ProviderError> {
        let source = &self.config.admin_url;
        let url = super::read_secret(KIND, action, source, "")?;
        let mut config = Config::from_str(url.expose_secret()).map_err(|e| {
            let reason = format!(
                "the admin URL from {} is not a valid connection string: {}",
                source.describe(),
                crate::error::describe_chain(&e)
            );
            backend(action, crate::secret::scrub(&reason, [&url]), false)
        })?;
        if config.get_application_name().is_none() {
            config.application_name(APPLICATION_NAME);
        }
        let password = config
            .get_password()
            .map(|p| SecretString::from(String::from_utf8_lossy(p).into_owned()));
        Ok(Admin {
            config,
            url,
            password,
        })
    }

    /// What the pushed `host`, `port` and `database` fields say.
    fn endpoint(&self, admin: &Config) -> Result<Endpoint, String> {
        let host = match (&self.config.host, admin.get_hosts().first()) {
            (Some(h), _) => h.clone(),
            (None, Some(Host::Tcp(h))) => h.clone(),
            (None, Some(Host::Unix(dir))) => {
                return Err(format!(
                    "the admin URL connects through a Unix socket ({}), which deployments cannot use: set the provider's `host` to the address they connect to",
                    dir.display()
                ));
            }
            (None, None) => match admin.get_hostaddrs().first() {
                Some(addr) => addr.to_string(),
                None => {
                    return Err(
                        "the admin URL names no host: give one there or set the provider's `host`"
                            .to_owned(),
                    );
                }
            },
        };
        let port = self
            .config
            .port
            .or_else(|| admin.get_ports().first().copied())
            .unwrap_or(DEFAULT_PORT);
        let database = match &self.config.database {
            Some(d) => d.clone(),
            None => effective_dbname(admin).ok_or_else(|| {
                "the admin URL names neither a database nor a user: set `database`".to_owned()
            })?,
        };
        Ok(Endpoint {
            host,
            port,
            database,
        })
    }

    /// The rustls connector: the ring provider explicitly (no process default needed) and
    /// the system's root certificates, with how many of those were loaded. With none, a
    /// server that offers TLS is refused under `prefer` too (its certificate cannot be
    /// checked), while one that does not still works under `prefer`.
    fn tls(&self) -> Result<&Tls, String> {
        if let Some(tls) = self.tls.get() {
            return Ok(tls);
        }
        let mut roots = rustls::RootCertStore::empty();
        let (roots_loaded, _unparsable) =
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(self.tls.get_or_init(|| Tls {
            connector: MakeRustlsConnect::new(config),
            roots_loaded,
        }))
    }

    /// Opens a session per `config` (its `sslmode` decides TLS) and drives it in a task.
    async fn connect(
        &self,
        config: &Config,
        action: &'static str,
        what: &str,
        held: &[&SecretString],
    ) -> Result<Client, ProviderError> {
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(
                self.tls()
                    .map_err(|reason| backend(action, format!("{what}: {reason}"), false))?,
            ),
        };
        let connected = match tls {
            None => config.connect(NoTls).await.map(|(client, connection)| {
                tokio::spawn(async move {
                    // Ends when the client is dropped; an error here has already reached the
                    // caller through the client.
                    let _ = connection.await;
                });
                client
            }),
            Some(tls) => config
                .connect(tls.connector.clone())
                .await
                .map(|(client, connection)| {
                    tokio::spawn(async move {
                        let _ = connection.await;
                    });
                    client
                }),
        };
        connected.map_err(|e| {
            let mut err = db_failure(action, what, &e, held);
            if let (Some(tls), ProviderError::Backend { reason, .. }) = (tls, &mut err)
                && has_tls_failure(&e)
            {
                reason.push_str(&format!(
                    " (sslmode prefer and require check the server's certificate against the system's root certificates; {} loaded)",
                    tls.roots_loaded
                ));
            }
            err
        })
    }

    /// Runs `work` within the configured timeout. A statement it abandons may still finish
    /// on the server: a late `ALTER ROLE` on the idle role (the retry sets it again) or a late
    /// `PASSWORD NULL` on a retiring one, both harmless.
    async fn bounded<T>(
        &self,
        action: &'static str,
        work: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        super::within(
            KIND,
            action,
            self.config.timeout,
            |t| format!("no answer from the database within {t} (the provider's `timeout`)"),
            work,
        )
        .await
    }

    async fn create_inner(&self, role: &str) -> Result<Credential, ProviderError> {
        const ACTION: &str = "create";
        let admin = self.admin(ACTION)?;
        let endpoint = self
            .endpoint(&admin.config)
            .map_err(|reason| backend(ACTION, reason, false))?;
        let password = generate_password()?;
        // Computed here so only the verifier crosses the wire: the server, its log and
        // pg_stat_statements never see the password.
        let verifier = SecretString::from(postgres_protocol::password::scram_sha_256(
            password.expose_secret().as_bytes(),
        ));
        let held = admin.held_with(&[&password, &verifier]);
        let client = self
            .connect(
                &admin.config,
                ACTION,
                "connecting with the admin URL",
                &held,
            )
            .await?;
        let sql = set_password_sql(role, Some(verifier.expose_secret()));
        client.batch_execute(&sql).await.map_err(|e| {
            db_failure(
                ACTION,
                &format!("setting the password of role \"{role}\""),
                &e,
                &held,
            )
        })?;
        drop(client);

        let mut fields = Fields::new();
        fields.insert("username".to_owned(), SecretString::from(role.to_owned()));
        fields.insert("password".to_owned(), password);
        fields.insert("host".to_owned(), SecretString::from(endpoint.host));
        fields.insert(
            "port".to_owned(),
            SecretString::from(endpoint.port.to_string()),
        );
        fields.insert("database".to_owned(), SecretString::from(endpoint.database));
        Ok(Credential {
            handle: role.to_owned(),
            fields,
            supersedes: None,
        })
    }

    async fn verify_inner(&self, credential: &Credential) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "verify";
        let role = credential.handle.as_str();
        let password = credential.fields.get("password").ok_or_else(|| {
            backend(
                ACTION,
                "the credential has no `password` field".to_owned(),
                false,
            )
        })?;
        let admin = self.admin(ACTION)?;
        let mut config = admin.config.clone();
        // The admin's database: the one the admin URL proves reachable. Without a name in
        // the URL that is the admin's own (libpq's default), not the role's.
        if let Some(db) = effective_dbname(&admin.config) {
            config.dbname(db);
        }
        config.user(role).password(password.expose_secret());
        let held = admin.held_with(&[password]);
        let what = format!("logging in as role \"{role}\" with the new password");
        // Any failure here may be the new password not having reached a replica or a pooler
        // yet: try again later rather than give up.
        let retry = |e: ProviderError| match e {
            ProviderError::Backend { reason, .. } => backend(ACTION, reason, true),
            other => other,
        };
        let client = self
            .connect(&config, ACTION, &what, &held)
            .await
            .map_err(retry)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|e| db_failure(ACTION, &what, &e, &held))
            .map_err(retry)?;
        Ok(Outcome::Done)
    }

    async fn retire_inner(&self, role: &str) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "retire";
        let admin = self.admin(ACTION)?;
        let held = admin.held_with(&[]);
        let client = self
            .connect(
                &admin.config,
                ACTION,
                "connecting with the admin URL",
                &held,
            )
            .await?;
        let sql = set_password_sql(role, None);
        client.batch_execute(&sql).await.map_err(|e| {
            db_failure(
                ACTION,
                &format!("removing the password of role \"{role}\""),
                &e,
                &held,
            )
        })?;
        Ok(Outcome::Done)
    }

    async fn preflight_inner(&self) -> Result<Vec<String>, ProviderError> {
        const ACTION: &str = "preflight";
        let admin = self.admin(ACTION)?;
        let endpoint = self
            .endpoint(&admin.config)
            .map_err(|reason| backend(ACTION, reason, false))?;
        let held = admin.held_with(&[]);
        let client = self
            .connect(
                &admin.config,
                ACTION,
                "connecting with the admin URL",
                &held,
            )
            .await?;
        let failed = |what: &str, e: tokio_postgres::Error| db_failure(ACTION, what, &e, &held);

        // The simple query protocol throughout (no prepared statements), so this also works
        // through a pooler in transaction mode.
        const ADMIN: &str = "reading the admin role";
        let row = one_row(
            &client,
            "SELECT current_user, r.rolsuper, r.rolcreaterole, \
             current_setting('server_version_num'), current_setting('server_version') \
             FROM pg_roles r WHERE r.rolname = current_user",
        )
        .await
        .map_err(|e| failed(ADMIN, e))?
        .ok_or_else(|| {
            backend(
                ACTION,
                format!("{ADMIN}: pg_roles has no row for it"),
                false,
            )
        })?;
        let me = AdminRole {
            name: row.text(0),
            superuser: row.flag(1),
            createrole: row.flag(2),
            version_num: row.text(3).parse().unwrap_or(0),
        };
        let version = row.text(4);

        let mut facts = vec![format!(
            "admin connection works: PostgreSQL {version}, connected as \"{}\" ({})",
            me.name,
            me.describe()
        )];
        let mut problems = Vec::new();
        for role in &self.config.users {
            let what = format!("reading role \"{role}\"");
            let mut sql = String::from(
                "SELECT r.rolcanlogin, r.rolsuper, r.rolreplication, \
                 pg_has_role(r.oid, 'MEMBER WITH ADMIN OPTION'), \
                 COALESCE(r.rolvaliduntil < now(), false) \
                 FROM pg_roles r WHERE r.rolname = ",
            );
            push_literal(&mut sql, role);
            let row = one_row(&client, &sql).await.map_err(|e| failed(&what, e))?;
            let Some(row) = row else {
                problems.push(format!("role \"{role}\" does not exist"));
                continue;
            };
            let target = TargetRole {
                can_login: row.flag(0),
                superuser: row.flag(1),
                replication: row.flag(2),
                admin_option: row.flag(3),
                expired: row.flag(4),
            };
            match assess(role, &me, &target) {
                Ok(fact) => facts.push(fact),
                Err(problem) => problems.push(problem),
            }
        }
        if !problems.is_empty() {
            return Err(backend(ACTION, problems.join("; "), false));
        }
        facts.push(format!(
            "pushed fields: host {}, port {}, database {}",
            endpoint.host, endpoint.port, endpoint.database
        ));
        Ok(facts)
    }
}

struct Tls {
    connector: MakeRustlsConnect,
    roots_loaded: usize,
}

/// The admin connection as read for one call.
struct Admin {
    config: Config,
    /// The whole URL, and the password in it: scrubbed from every message.
    url: SecretString,
    password: Option<SecretString>,
}

impl Admin {
    /// The values a message must never show: the admin URL and password, plus `more`.
    fn held_with<'a>(&'a self, more: &[&'a SecretString]) -> Vec<&'a SecretString> {
        let mut held = vec![&self.url];
        held.extend(self.password.as_ref());
        held.extend_from_slice(more);
        held
    }
}

/// Where deployments connect: the non-secret fields of a credential.
#[derive(Debug, PartialEq, Eq)]
struct Endpoint {
    host: String,
    port: u16,
    database: String,
}

/// The admin role's powers, for `preflight`.
struct AdminRole {
    name: String,
    superuser: bool,
    createrole: bool,
    version_num: i32,
}

impl AdminRole {
    fn describe(&self) -> &'static str {
        match (self.superuser, self.createrole) {
            (true, _) => "superuser",
            (false, true) => "CREATEROLE",
            (false, false) => "neither superuser nor CREATEROLE",
        }
    }
}

/// A configured role as `pg_roles` shows it.
struct TargetRole {
    can_login: bool,
    superuser: bool,
    replication: bool,
    /// The admin holds ADMIN OPTION on it (always true for a superuser admin).
    admin_option: bool,
    /// `VALID UNTIL` is in the past: no password login works.
    expired: bool,
}

/// Whether the admin may set `role`'s password and the role can then log in with it: one
/// line saying what was checked, or the problem.
fn assess(role: &str, admin: &AdminRole, target: &TargetRole) -> Result<String, String> {
    if role == admin.name {
        return Err(format!(
            "role \"{role}\" is the admin role itself: rotating it would lock the provider out; use a separate admin role"
        ));
    }
    if !target.can_login {
        return Err(format!(
            "role \"{role}\" cannot log in (NOLOGIN): run ALTER ROLE ... LOGIN"
        ));
    }
    if target.expired {
        return Err(format!(
            "role \"{role}\" has a VALID UNTIL in the past, so no password login works: run ALTER ROLE ... VALID UNTIL 'infinity'"
        ));
    }
    let how = if admin.superuser {
        "the admin is superuser".to_owned()
    } else if !admin.createrole {
        return Err(format!(
            "the admin role \"{}\" may not set the password of role \"{role}\": it needs CREATEROLE",
            admin.name
        ));
    } else if target.superuser || target.replication {
        return Err(format!(
            "role \"{role}\" is a superuser or replication role, whose password only a superuser may set"
        ));
    } else if admin.version_num >= ADMIN_OPTION_SINCE {
        if !target.admin_option {
            return Err(format!(
                "the admin role \"{}\" may not set the password of role \"{role}\": since PostgreSQL 16, CREATEROLE also needs ADMIN OPTION on the role (GRANT ... TO {} WITH ADMIN OPTION)",
                admin.name,
                quote_ident(&admin.name)
            ));
        }
        "CREATEROLE with ADMIN OPTION on it".to_owned()
    } else {
        "CREATEROLE; before PostgreSQL 16 no ADMIN OPTION is needed".to_owned()
    };
    Ok(format!(
        "role \"{role}\" exists, can log in, and the admin may set its password ({how})"
    ))
}

/// The database a session of `config` lands in: its `dbname`, else (libpq's default) its user.
fn effective_dbname(config: &Config) -> Option<String> {
    config
        .get_dbname()
        .or_else(|| config.get_user())
        .map(str::to_owned)
}

/// The first row of a simple query, as text (what the simple protocol returns).
async fn one_row(client: &Client, sql: &str) -> Result<Option<TextRow>, tokio_postgres::Error> {
    let messages = client.simple_query(sql).await?;
    Ok(messages.into_iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => Some(TextRow(
            (0..row.len())
                .map(|i| row.get(i).map(str::to_owned))
                .collect(),
        )),
        _ => None,
    }))
}

/// A row of text values; NULL is `None`.
struct TextRow(Vec<Option<String>>);

impl TextRow {
    fn text(&self, i: usize) -> String {
        self.0.get(i).cloned().flatten().unwrap_or_default()
    }

    /// A boolean column: PostgreSQL's text form is `t` or `f`.
    fn flag(&self, i: usize) -> bool {
        self.text(i) == "t"
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// The next rotation sets the role whose retirement is pending.
    fn alternates(&self) -> bool {
        true
    }

    async fn create(
        &self,
        _target: &Target,
        _rotation_id: &str,
        previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        let role = self.config.next_user(previous_handle);
        let mut credential = self.bounded("create", self.create_inner(role)).await?;
        credential.supersedes = self
            .config
            .superseded_unknown(previous_handle)
            .map(str::to_owned);
        Ok(credential)
    }

    async fn verify(
        &self,
        _target: &Target,
        _rotation_id: &str,
        credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        // A timeout is transient; `verify_inner` makes its other failures so.
        self.bounded("verify", self.verify_inner(credential)).await
    }

    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        self.bounded("preflight", self.preflight_inner()).await
    }

    async fn retire(&self, _target: &Target, handle: &str) -> Result<Outcome, ProviderError> {
        if !self.config.is_user(handle) {
            let [a, b] = &self.config.users;
            return Err(backend(
                "retire",
                format!(
                    "\"{handle}\" is not one of this policy's users (\"{a}\", \"{b}\"): a role the config does not name is never altered"
                ),
                false,
            ));
        }
        self.bounded("retire", self.retire_inner(handle)).await
    }
}

fn backend(action: &'static str, reason: String, transient: bool) -> ProviderError {
    ProviderError::Backend {
        kind: KIND,
        action,
        reason,
        transient,
    }
}

/// Maps a tokio-postgres error to a `Backend` error: transient or not (see
/// [`retryable`]), the reason from the SQLSTATE and the server's message or from the
/// client's error chain, scrubbed of every value in `held`.
fn db_failure(
    action: &'static str,
    what: &str,
    e: &tokio_postgres::Error,
    held: &[&SecretString],
) -> ProviderError {
    let detail = match e.as_db_error() {
        Some(db) => {
            let mut text = format!("SQLSTATE {}: {}", db.code().code(), db.message());
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            if let Some(hint) = db.hint() {
                text.push_str(&format!("; hint: {hint}"));
            }
            text
        }
        None => crate::error::describe_chain(e),
    };
    let reason = crate::secret::scrub(&format!("{what}: {detail}"), held.iter().copied());
    backend(action, reason, retryable(e))
}

/// Whether trying again later may help.
///
/// Server errors: by SQLSTATE ([`transient_sqlstate`]). Client errors: a certificate or TLS
/// setup problem, an authentication step the client cannot do (no password given, an
/// unsupported method) and a bad configuration stay until someone changes something;
/// anything else (refused or dropped connections, I/O, a closed session) is transient.
/// tokio-postgres keeps its error kind private; its `Display` for a kind is a fixed phrase,
/// which is what is compared here.
fn retryable(e: &tokio_postgres::Error) -> bool {
    if let Some(db) = e.as_db_error() {
        return transient_sqlstate(db.code().code());
    }
    if e.is_closed() {
        return true;
    }
    if has_tls_failure(e) {
        return false;
    }
    !matches!(
        e.to_string().as_str(),
        "authentication error" | "invalid configuration" | "invalid connection string"
    )
}

/// A rustls error anywhere in the chain, directly or inside an `io::Error` (which is how
/// tokio-rustls reports a rejected certificate).
fn has_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(e);
    while let Some(err) = current {
        if err.is::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return true;
        }
        current = err.source();
    }
    false
}

/// SQLSTATEs worth a retry: connection exceptions (08), insufficient resources (53), the
/// server shutting down or starting (57P0x), a cancelled statement (57014, e.g.
/// `statement_timeout`), serialization failures and deadlocks (40001, 40P01), a lock not
/// available (55P03). Everything else (28xxx authentication, 42501, 42704, 3D000, ...) is
/// permanent.
fn transient_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("53")
        || code.starts_with("57P0")
        || matches!(code, "57014" | "40001" | "40P01" | "55P03")
}

/// `ALTER ROLE "role" PASSWORD '<verifier>'`, or `PASSWORD NULL`. In a buffer that is wiped
/// when dropped, as it holds the verifier.
fn set_password_sql(role: &str, verifier: Option<&str>) -> Zeroizing<String> {
    let capacity = 32 + 2 * role.len() + verifier.map_or(0, |v| 2 * v.len() + 3);
    let mut sql = Zeroizing::new(String::with_capacity(capacity));
    sql.push_str("ALTER ROLE ");
    push_ident(&mut sql, role);
    sql.push_str(" PASSWORD ");
    match verifier {
        Some(v) => push_literal(&mut sql, v),
        None => sql.push_str("NULL"),
    }
    sql
}

/// An identifier, always double-quoted (so the name is taken exactly as configured, case
/// included), double quotes doubled.
fn quote_ident(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    push_ident(&mut out, name);
    out
}

fn push_ident(out: &mut String, name: &str) {
    out.push('"');
    for c in name.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
}

/// A string literal, single quotes doubled. A backslash (a verifier has none) switches to
/// the `E'...'` form with backslashes doubled, which reads the same whatever
/// `standard_conforming_strings` says.
fn push_literal(out: &mut String, value: &str) {
    let escape_backslashes = value.contains('\\');
    if escape_backslashes {
        out.push('E');
    }
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || (escape_backslashes && c == '\\') {
            out.push(c);
        }
        out.push(c);
    }
    out.push('\'');
}

/// `PASSWORD_LENGTH` alphanumeric characters from the OS random source. Unbiased:
/// `Alphanumeric` samples by rejection.
fn generate_password() -> Result<SecretString, ProviderError> {
    // The `random` provider's generator: OS CSPRNG, unbiased, no panic on a failing source.
    super::random::generate(PASSWORD_LENGTH, crate::config::Charset::Alphanumeric)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;
    use std::path::PathBuf;
    use std::time::Duration;

    fn provider(users: [&str; 2]) -> PostgresProvider {
        PostgresProvider::new(DatabaseConfig {
            admin_url: SecretSource::File(PathBuf::from("/nonexistent/admin-url")),
            users: users.map(str::to_owned),
            host: None,
            port: None,
            database: None,
            timeout: Duration::from_secs(5),
        })
    }

    #[test]
    fn roles_alternate_and_an_unknown_previous_starts_over() {
        let p = provider(["orders_a", "orders_b"]);
        let cases = [
            (None, "orders_a"),
            (Some("orders_a"), "orders_b"),
            (Some("orders_b"), "orders_a"),
            (Some("legacy"), "orders_a"),
            (Some(""), "orders_a"),
        ];
        for (previous, want) in cases {
            assert_eq!(p.config.next_user(previous), want, "{previous:?}");
        }
        assert!(p.config.is_user("orders_b") && !p.config.is_user("Orders_B"));
    }

    #[test]
    fn a_first_rotation_supersedes_the_other_role_and_alternates() {
        let p = provider(["orders_a", "orders_b"]);
        let cases = [
            // Nothing known: the role not set now is the one deployments still use.
            (None, Some("orders_b")),
            (Some("legacy"), Some("orders_b")),
            (Some(""), Some("orders_b")),
            // The caller named the previous role; it retires that one itself.
            (Some("orders_a"), None),
            (Some("orders_b"), None),
        ];
        for (previous, want) in cases {
            assert_eq!(p.config.superseded_unknown(previous), want, "{previous:?}");
        }
        assert!(p.alternates());
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        let cases = [
            ("orders_a", "\"orders_a\""),
            ("Orders-B \"x\"", "\"Orders-B \"\"x\"\"\""),
            ("a'b", "\"a'b\""),
            ("", "\"\""),
        ];
        for (name, want) in cases {
            assert_eq!(quote_ident(name), want);
        }
        let literal = |v: &str| {
            let mut s = String::new();
            push_literal(&mut s, v);
            s
        };
        assert_eq!(
            literal("SCRAM-SHA-256$4096:a+/=$b:c"),
            "'SCRAM-SHA-256$4096:a+/=$b:c'"
        );
        assert_eq!(literal("it's"), "'it''s'");
        assert_eq!(literal("a\\'b"), "E'a\\\\''b'");
    }

    #[test]
    fn the_statement_sets_a_verifier_or_null() {
        let sql = set_password_sql("Orders \"B\"", Some("SCRAM-SHA-256$4096:x$y:z"));
        assert_eq!(
            sql.as_str(),
            "ALTER ROLE \"Orders \"\"B\"\"\" PASSWORD 'SCRAM-SHA-256$4096:x$y:z'"
        );
        let sql = set_password_sql("orders_a", None);
        assert_eq!(sql.as_str(), "ALTER ROLE \"orders_a\" PASSWORD NULL");
    }

    #[test]
    fn the_verifier_is_scram_and_not_the_password() {
        let password = generate_password().unwrap();
        let verifier =
            postgres_protocol::password::scram_sha_256(password.expose_secret().as_bytes());
        assert!(verifier.starts_with("SCRAM-SHA-256$4096:"), "{verifier}");
        assert!(!verifier.contains(password.expose_secret()));
        assert!(!verifier.contains('\''));
    }

    #[test]
    fn passwords_are_long_alphanumeric_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        for p in [&a, &b] {
            let p = p.expose_secret();
            assert_eq!(p.len(), PASSWORD_LENGTH);
            assert!(p.bytes().all(|c| c.is_ascii_alphanumeric()), "{p}");
        }
        assert_ne!(a.expose_secret(), b.expose_secret());
        // Over many draws every one of the 62 symbols shows up.
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..100 {
            seen.extend(generate_password().unwrap().expose_secret().bytes());
        }
        assert_eq!(seen.len(), 62);
    }

    #[test]
    fn sqlstates_are_classified() {
        let transient = [
            "08006", "08001", "53300", "57P01", "57P03", "57014", "40001", "40P01",
        ];
        let permanent = [
            "28P01", "28000", "42704", "42501", "3D000", "42601", "XX000",
        ];
        for code in transient {
            assert!(transient_sqlstate(code), "{code}");
        }
        for code in permanent {
            assert!(!transient_sqlstate(code), "{code}");
        }
    }

    #[test]
    fn fields_come_from_the_admin_url_unless_overridden() {
        let parse = |url: &str| Config::from_str(url).unwrap();
        let p = provider(["a", "b"]);
        let cases = [
            (
                "postgres://adm:pw@db.acme:6543/orders",
                ("db.acme", 6543, "orders"),
            ),
            (
                "postgres://adm:pw@db.acme/orders",
                ("db.acme", 5432, "orders"),
            ),
            ("postgres://adm:pw@db.acme", ("db.acme", 5432, "adm")),
            ("host=h1,h2 port=7000 user=adm dbname=x", ("h1", 7000, "x")),
        ];
        for (url, (host, port, database)) in cases {
            assert_eq!(
                p.endpoint(&parse(url)),
                Ok(Endpoint {
                    host: host.to_owned(),
                    port,
                    database: database.to_owned()
                }),
                "{url}"
            );
        }

        let mut overridden = provider(["a", "b"]);
        overridden.config.host = Some("public.acme".to_owned());
        overridden.config.port = Some(6432);
        overridden.config.database = Some("app".to_owned());
        assert_eq!(
            overridden.endpoint(&parse("host=/run/postgresql user=adm")),
            Ok(Endpoint {
                host: "public.acme".to_owned(),
                port: 6432,
                database: "app".to_owned()
            })
        );
        let err = p
            .endpoint(&parse("host=/run/postgresql user=adm"))
            .unwrap_err();
        assert!(
            err.contains("Unix socket") && err.contains("`host`"),
            "{err}"
        );
    }

    #[test]
    fn preflight_assessment_follows_the_version_rules() {
        let admin = |superuser, createrole, version_num| AdminRole {
            name: "rotator_admin".to_owned(),
            superuser,
            createrole,
            version_num,
        };
        let role = |admin_option| TargetRole {
            can_login: true,
            superuser: false,
            replication: false,
            admin_option,
            expired: false,
        };
        assert!(assess("a", &admin(true, false, 170_000), &role(true)).is_ok());
        assert!(assess("a", &admin(false, true, 150_000), &role(false)).is_ok());
        assert!(assess("a", &admin(false, true, 160_000), &role(true)).is_ok());
        let err = assess("a", &admin(false, true, 160_000), &role(false)).unwrap_err();
        assert!(
            err.contains("ADMIN OPTION") && err.contains("\"a\""),
            "{err}"
        );
        let err = assess("a", &admin(false, false, 150_000), &role(true)).unwrap_err();
        assert!(err.contains("CREATEROLE"), "{err}");
        let mut nologin = role(true);
        nologin.can_login = false;
        let err = assess("a", &admin(true, false, 150_000), &nologin).unwrap_err();
        assert!(err.contains("NOLOGIN") && err.contains("\"a\""), "{err}");
        let err = assess("rotator_admin", &admin(true, false, 150_000), &role(true)).unwrap_err();
        assert!(err.contains("admin role itself"), "{err}");
        let mut su = role(true);
        su.superuser = true;
        assert!(assess("a", &admin(false, true, 150_000), &su).is_err());
        assert!(assess("a", &admin(true, false, 150_000), &su).is_ok());
    }

    #[tokio::test]
    async fn retire_refuses_a_role_the_config_does_not_name() {
        let p = provider(["orders_a", "orders_b"]);
        let target = Target {
            policy: "p".to_owned(),
            installation: "i".to_owned(),
            resource: "r".to_owned(),
            installation_id: "icfg_test".into(),
            resource_info: None,
        };
        let err = p.retire(&target, "postgres").await.unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::Backend {
                    transient: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("\"postgres\" is not one of"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_missing_admin_url_file_is_permanent_and_named() {
        let p = provider(["orders_a", "orders_b"]);
        let err = p.preflight().await.unwrap_err();
        assert!(
            matches!(
                err,
                ProviderError::Backend {
                    transient: false,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("/nonexistent/admin-url"), "{err}");
    }
}
