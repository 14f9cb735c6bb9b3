//! The `mysql` provider (MariaDB and MySQL): two login users that take turns, so the one
//! Vercel holds keeps working while the other gets a new password.
//!
//! - Admin connection: the URL in `admin-url-file` (a 0600 file) or `admin-url-credential`
//!   (a systemd credential), read at every call, parsed by
//!   `mysql_async`; `?require_ssl=true` turns TLS on, `verify_ca` / `verify_identity` tune it).
//!   The provider always talks TCP to the URL's host: `mysql_async` would otherwise switch a
//!   loopback connection to the unix socket, where another account (`root@localhost`) and no
//!   TLS apply. The admin session uses no database (the URL's database is only the default of
//!   the pushed `database` field), so the admin needs no privilege on it. Every call,
//!   connection included, is bounded by the config's `timeout`.
//! - Accounts: a MySQL user is a name *and* a host. `users` holds names only; each call looks
//!   the name up in `mysql.user` and acts on every account with that name (`orders_a@'%'` and
//!   `orders_a@'10.0.%'` get the same password and are locked together). A name with no account
//!   is an error, so a typo cannot go unnoticed. MariaDB's roles (rows with an empty host) are
//!   not accounts and are skipped.
//! - `create` alternates: it takes the user that is not `previous_handle` (the first one when
//!   there is none, or it is not one of the two), sets a fresh 32-character alphanumeric
//!   password and unlocks the account (`retire` locked it) in one `ALTER USER`. The handle is
//!   the user name. A repeated `create` with the same rotation id picks the same user and sets
//!   another password: "replace what that id made".
//! - `verify` logs in as that user with the new password (to the pushed `database`, when there
//!   is one) and runs `SELECT 1`.
//! - `retire` locks the old user's accounts (`ACCOUNT LOCK`) and sets a random password nobody
//!   keeps, so even a later `ACCOUNT UNLOCK` by hand does not bring the old one back. Open
//!   sessions are not killed. A handle that is not one of the two users is refused.
//! - Fields: `username`, `password`, and `host`, `port`, `database` from the admin URL unless
//!   the config sets them (`database` is empty when neither names one).
//!
//! # The password crosses the admin connection in clear
//!
//! `ALTER USER ... IDENTIFIED BY '<password>'` sends the plaintext to the server, unlike the
//! postgres provider's client-side SCRAM verifier. Chosen because it is the one form that works
//! on MariaDB and MySQL alike and keeps each account's authentication plugin
//! (`caching_sha2_password`, `mysql_native_password`, `ed25519`): MariaDB's
//! `IDENTIFIED BY PASSWORD '*<sha1(sha1(pw))>'` would force `mysql_native_password` (disabled
//! by default since MySQL 8.4, gone in 9) and needs SHA-1, which is not a dependency here.
//! What that means:
//! - On the wire: use TLS (`?require_ssl=true`) when the database is not on this host;
//!   `preflight` says when it is off.
//! - In the server: MySQL masks the password in its general, slow and binary logs. MariaDB
//!   writes the statement as sent to its general query log (checked on 10.11), so the provider
//!   turns that log off for its own session (`SET SESSION sql_log_off = ON`) when the admin
//!   may (MariaDB: SUPER); otherwise it goes on, and `preflight` reports whether the general
//!   log is on. MariaDB's binary log was not checked here. Users with the PROCESS privilege
//!   can see the statement while it runs.
//! - The MariaDB `ALTER USER` grammar takes no `?` placeholder for the password (a prepared
//!   statement is a syntax error), so it is a literal. It is only ever a value this module
//!   generated, which is alphanumeric; `password_literal` refuses anything else rather than
//!   depend on the session's `NO_BACKSLASH_ESCAPES` mode for escaping.
//!
//! # Errors
//!
//! Connection, I/O and timeouts, a server going away, too many connections, lock waits and a
//! read-only server (a failover) are transient; access denied, an unknown user, a syntax error,
//! TLS failures and a bad admin URL are permanent. No message holds a password or the admin
//! URL: server messages are scrubbed of every value the call held.

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder, UrlError};
use zeroize::Zeroizing;

use super::{Credential, Outcome, Provider, ProviderError, Target};
use crate::config::DatabaseConfig;
use crate::secret::{ExposeSecret, Fields, SecretString, scrub};

const KIND: &str = "mysql";

/// Length of a generated password: 32 alphanumeric characters are about 190 bits.
const PASSWORD_LENGTH: usize = 32;

/// Alternates the two configured users through `ALTER USER`.
#[derive(Debug, Clone)]
pub struct MysqlProvider {
    config: DatabaseConfig,
}

/// What one call read from the admin URL.
struct Admin {
    /// Connection options, without a database: the admin needs none.
    opts: Opts,
    /// The database the URL names: the default of the pushed `database` field.
    database: Option<String>,
    /// `host:port`, for messages.
    addr: String,
    /// The file's text and the admin password: never in a message.
    secrets: Vec<SecretString>,
}

impl MysqlProvider {
    pub fn new(config: DatabaseConfig) -> Self {
        MysqlProvider { config }
    }

    /// Refuses a handle that is not one of the two configured users (permanently: the state
    /// and the config disagree, and acting on another account could lock out anybody).
    fn check_handle<'h>(
        &self,
        action: &'static str,
        handle: &'h str,
    ) -> Result<&'h str, ProviderError> {
        if self.config.is_user(handle) {
            Ok(handle)
        } else {
            Err(backend(
                action,
                format!(
                    "handle \"{handle}\" is not one of the configured users ({}); refusing to touch it",
                    self.users_list()
                ),
                false,
            ))
        }
    }

    fn users_list(&self) -> String {
        let [a, b] = &self.config.users;
        format!("\"{a}\", \"{b}\"")
    }

    /// Reads and parses the admin URL: at each call, so a rotated admin password is picked
    /// up without a restart.
    fn admin(&self, action: &'static str) -> Result<Admin, ProviderError> {
        let source = &self.config.admin_url;
        let url = super::read_secret(KIND, action, source, "")?;
        // The parse error may quote the URL, password included: only its kind is kept.
        let opts = Opts::from_url(url.expose_secret()).map_err(|e| {
            backend(
                action,
                format!(
                    "the admin URL from {} is not a valid mysql:// URL ({})",
                    source.describe(),
                    url_problem(&e)
                ),
                false,
            )
        })?;
        let mut secrets = vec![url];
        if let Some(pass) = opts.pass().filter(|p| !p.is_empty()) {
            secrets.push(SecretString::from(pass.to_owned()));
        }
        let addr = format!("{}:{}", opts.ip_or_hostname(), opts.tcp_port());
        let database = opts.db_name().map(str::to_owned);
        // The URL's database is what the pushed credential is for; the admin connection
        // itself uses none, so the admin needs no privilege on it.
        let opts = OptsBuilder::from_opts(opts)
            .prefer_socket(false)
            .db_name(None::<String>)
            .into();
        Ok(Admin {
            opts,
            database,
            addr,
            secrets,
        })
    }

    /// Runs `work` within the config's timeout.
    async fn bounded<T>(
        &self,
        action: &'static str,
        work: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        super::within(
            KIND,
            action,
            self.config.timeout,
            |t| format!("the database did not answer within {t}"),
            work,
        )
        .await
    }

    fn fields(&self, admin: &Admin, user: &str, password: SecretString) -> Fields {
        let (host, port, database) = self.endpoint(admin);
        let mut fields = Fields::new();
        fields.insert("username".to_owned(), secret(user));
        fields.insert("password".to_owned(), password);
        fields.insert("host".to_owned(), secret(&host));
        fields.insert("port".to_owned(), secret(&port.to_string()));
        fields.insert("database".to_owned(), secret(database));
        fields
    }

    /// The pushed `host`, `port` and `database`: the config's, else the admin URL's (the
    /// database is empty when neither names one).
    fn endpoint<'a>(&'a self, admin: &'a Admin) -> (String, u16, &'a str) {
        let host = self
            .config
            .host
            .clone()
            .unwrap_or_else(|| admin.opts.ip_or_hostname().to_owned());
        let port = self.config.port.unwrap_or_else(|| admin.opts.tcp_port());
        (host, port, self.database(admin).unwrap_or(""))
    }

    /// The database the pushed credential is for: the config's, else the admin URL's.
    fn database<'a>(&'a self, admin: &'a Admin) -> Option<&'a str> {
        self.config
            .database
            .as_deref()
            .or(admin.database.as_deref())
            .filter(|d| !d.is_empty())
    }
}

fn secret(value: &str) -> SecretString {
    SecretString::from(value.to_owned())
}

fn backend(action: &'static str, reason: String, transient: bool) -> ProviderError {
    ProviderError::Backend {
        kind: KIND,
        action,
        reason,
        transient,
    }
}

/// What is wrong with an admin URL, in words that never quote it.
fn url_problem(e: &UrlError) -> &'static str {
    match e {
        UrlError::UnsupportedScheme { .. } => "the scheme must be mysql://",
        UrlError::Invalid | UrlError::Parse(_) => "not a URL with a host",
        UrlError::UnknownParameter { .. } => "it has an unknown query parameter",
        UrlError::InvalidParamValue { .. } => "a query parameter has an invalid value",
        UrlError::FeatureRequired { .. } => "a query parameter needs a feature this build lacks",
        UrlError::InvalidPoolConstraints { .. } => "pool_min is above pool_max",
    }
}

/// A fresh password of `length` ASCII letters and digits: the `random` provider's generator
/// (OS CSPRNG, unbiased, an error rather than a panic when the source fails).
pub(super) fn generate_password(length: usize) -> Result<SecretString, ProviderError> {
    super::random::generate(length, crate::config::Charset::Alphanumeric)
}

/// `'value'` for a password this module generated. Anything but ASCII letters and digits is
/// refused: those need no escaping whatever the session's SQL mode.
fn password_literal(value: &SecretString) -> Option<Zeroizing<String>> {
    let v = value.expose_secret();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_alphanumeric()))
        .then(|| Zeroizing::new(format!("'{v}'")))
}

/// A backtick-quoted identifier (a user or host name). Backticks are doubled; nothing else is
/// special inside them, in any SQL mode.
fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

/// `ALTER USER` for every account of a user: each gets `auth` (`IDENTIFIED BY '...'`), then
/// the lock option applies to all of them.
fn alter_user(
    user: &str,
    hosts: &[String],
    password: &SecretString,
    lock: &str,
) -> Option<Zeroizing<String>> {
    let literal = password_literal(password)?;
    let mut sql = Zeroizing::new(String::from("ALTER USER "));
    for (i, host) in hosts.iter().enumerate() {
        if i > 0 {
            sql.push_str(", ");
        }
        sql.push_str(&quote_ident(user));
        sql.push('@');
        sql.push_str(&quote_ident(host));
        sql.push_str(" IDENTIFIED BY ");
        sql.push_str(&literal);
    }
    sql.push(' ');
    sql.push_str(lock);
    Some(sql)
}

/// The hosts of `user`'s accounts, from `mysql.user` (MariaDB's roles, host `''`, skipped).
async fn hosts_of(conn: &mut Conn, user: &str) -> Result<Vec<String>, mysql_async::Error> {
    let hosts: Vec<String> = conn
        .exec(
            "SELECT Host FROM mysql.user WHERE User = ? ORDER BY Host",
            (user,),
        )
        .await?;
    Ok(hosts.into_iter().filter(|h| !h.is_empty()).collect())
}

/// Keeps this session's statements, passwords included, out of MariaDB's general query log
/// (`sql_log_off`), when the admin may: it takes SUPER on MariaDB and SYSTEM_VARIABLES_ADMIN
/// on MySQL (which masks passwords in its logs anyway). Without that privilege the server's
/// refusal is expected and the call goes on.
async fn quiet_general_log(conn: &mut Conn) -> Result<(), mysql_async::Error> {
    match conn.query_drop("SET SESSION sql_log_off = ON").await {
        Err(mysql_async::Error::Server(e)) => {
            tracing::debug!(
                code = e.code,
                "mysql: sql_log_off not permitted; a general log, if on, sees ALTER USER"
            );
            Ok(())
        }
        other => other,
    }
}

fn accounts(user: &str, hosts: &[String]) -> String {
    hosts
        .iter()
        .map(|h| format!("{user}@'{h}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Server error codes worth retrying: the server is busy, going away or briefly read-only.
const TRANSIENT_SERVER_CODES: &[u16] = &[
    1040, // ER_CON_COUNT_ERROR: too many connections
    1053, // ER_SERVER_SHUTDOWN
    1152, // ER_ABORTING_CONNECTION
    1158, // ER_NET_READ_ERROR
    1159, // ER_NET_READ_INTERRUPTED
    1160, // ER_NET_ERROR_ON_WRITE
    1161, // ER_NET_WRITE_INTERRUPTED
    1203, // ER_TOO_MANY_USER_CONNECTIONS
    1205, // ER_LOCK_WAIT_TIMEOUT
    1213, // ER_LOCK_DEADLOCK
    1290, // ER_OPTION_PREVENTS_STATEMENT: --read-only, as during a failover
    1836, // ER_READ_ONLY_MODE
    1927, // ER_CONNECTION_KILLED (MariaDB)
    3169, // ER_SESSION_WAS_KILLED (MySQL)
    4031, // ER_CLIENT_INTERACTION_TIMEOUT (MySQL)
];

/// Codes that mean the admin account lacks a privilege: the message points at the README.
const PRIVILEGE_CODES: &[u16] = &[1044, 1142, 1227];

/// Turns a driver error into a provider error whose reason holds none of `secrets`.
fn db_error(
    action: &'static str,
    addr: &str,
    err: mysql_async::Error,
    secrets: &[&SecretString],
) -> ProviderError {
    use mysql_async::{DriverError, Error, IoError};
    let (reason, transient) = match &err {
        Error::Server(e) => {
            let hint = if PRIVILEGE_CODES.contains(&e.code) {
                " (see the README for the privileges the admin account needs)"
            } else {
                ""
            };
            (
                format!(
                    "{addr} answered error {} ({}): {}{hint}",
                    e.code, e.state, e.message
                ),
                TRANSIENT_SERVER_CODES.contains(&e.code),
            )
        }
        Error::Io(IoError::Io(e)) => (format!("cannot talk to {addr}: {e}"), true),
        // A certificate the client rejects stays rejected until someone changes it.
        Error::Io(IoError::Tls(e)) => (format!("TLS with {addr} failed: {e}"), false),
        Error::Driver(DriverError::ConnectionClosed | DriverError::PacketOutOfOrder) => {
            (format!("the connection to {addr} broke: {err}"), true)
        }
        Error::Driver(DriverError::NoClientSslFlagFromServer) => (
            format!("the admin URL asks for TLS, but {addr} does not offer it"),
            false,
        ),
        Error::Driver(e) => (format!("{addr}: {e}"), false),
        Error::Url(e) => (
            format!("a connection setting is invalid ({})", url_problem(e)),
            false,
        ),
        Error::Other(e) => (format!("{addr}: {e}"), false),
    };
    backend(action, scrub(&reason, secrets.iter().copied()), transient)
}

#[async_trait]
impl Provider for MysqlProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    /// The next rotation sets the user whose retirement is pending.
    fn alternates(&self) -> bool {
        true
    }

    async fn create(
        &self,
        _target: &Target,
        _rotation_id: &str,
        previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        const ACTION: &str = "create";
        let user = self.config.next_user(previous_handle);
        let admin = self.admin(ACTION)?;
        let password = generate_password(PASSWORD_LENGTH)?;
        let secrets: Vec<&SecretString> = admin.secrets.iter().chain([&password]).collect();
        let fail = |e| db_error(ACTION, &admin.addr, e, &secrets);

        self.bounded(ACTION, async {
            let mut conn = Conn::new(admin.opts.clone()).await.map_err(fail)?;
            let hosts = hosts_of(&mut conn, user).await.map_err(fail)?;
            if hosts.is_empty() {
                return Err(backend(
                    ACTION,
                    format!(
                        "user \"{user}\" does not exist on {} (no account in mysql.user)",
                        admin.addr
                    ),
                    false,
                ));
            }
            quiet_general_log(&mut conn).await.map_err(fail)?;
            let sql = alter_user(user, &hosts, &password, "ACCOUNT UNLOCK").ok_or_else(|| {
                backend(
                    ACTION,
                    "the generated password is not alphanumeric".to_owned(),
                    false,
                )
            })?;
            conn.query_drop(sql.as_str()).await.map_err(fail)?;
            tracing::debug!(user, accounts = hosts.len(), "mysql: set a new password");
            // The password is set: a failed goodbye must not fail the call.
            let _ = conn.disconnect().await;
            Ok(())
        })
        .await?;

        Ok(Credential {
            handle: user.to_owned(),
            fields: self.fields(&admin, user, password),
            supersedes: self
                .config
                .superseded_unknown(previous_handle)
                .map(str::to_owned),
        })
    }

    async fn verify(
        &self,
        _target: &Target,
        _rotation_id: &str,
        credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "verify";
        let user = self.check_handle(ACTION, &credential.handle)?;
        let password = credential.fields.get("password").ok_or_else(|| {
            backend(
                ACTION,
                "the credential has no `password` field".to_owned(),
                false,
            )
        })?;
        let admin = self.admin(ACTION)?;
        let secrets: Vec<&SecretString> = admin.secrets.iter().chain([password]).collect();
        let fail = |e| db_error(ACTION, &admin.addr, e, &secrets);
        // Same route and TLS settings as the admin connection; the pushed database, so a user
        // that may not use it fails here rather than in the deployment.
        let opts = OptsBuilder::from_opts(admin.opts.clone())
            .user(Some(user))
            .pass(Some(password.expose_secret()))
            .db_name(self.database(&admin));

        self.bounded(ACTION, async {
            let mut conn = Conn::new(opts).await.map_err(fail)?;
            let one: Option<i64> = conn.query_first("SELECT 1").await.map_err(fail)?;
            let _ = conn.disconnect().await;
            match one {
                Some(1) => Ok(Outcome::Done),
                _ => Err(backend(
                    ACTION,
                    "SELECT 1 did not answer 1".to_owned(),
                    true,
                )),
            }
        })
        .await
    }

    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        const ACTION: &str = "preflight";
        let admin = self.admin(ACTION)?;
        let secrets: Vec<&SecretString> = admin.secrets.iter().collect();
        let fail = |e| db_error(ACTION, &admin.addr, e, &secrets);

        self.bounded(ACTION, async {
            let mut lines = Vec::new();
            let mut conn = Conn::new(admin.opts.clone()).await.map_err(fail)?;
            let (version, current_user, general_log): (String, String, i64) = conn
                .query_first("SELECT VERSION(), CURRENT_USER(), @@general_log")
                .await
                .map_err(fail)?
                .unwrap_or_default();
            let tls = if admin.opts.ssl_opts().is_some() {
                "TLS"
            } else {
                "no TLS: new passwords cross the network in clear; add ?require_ssl=true unless the server is on this host"
            };
            lines.push(format!(
                "admin connection to {} as {current_user} works (server {version}; {tls})",
                admin.addr
            ));
            let (host, port, database) = self.endpoint(&admin);
            let database = if database.is_empty() { "(none)" } else { database };
            lines.push(format!(
                "pushed fields: host {host}, port {port}, database {database}"
            ));

            let mut missing = Vec::new();
            for user in &self.config.users {
                let hosts = hosts_of(&mut conn, user).await.map_err(fail)?;
                if hosts.is_empty() {
                    missing.push(format!("\"{user}\""));
                } else {
                    lines.push(format!("user \"{user}\" exists: {}", accounts(user, &hosts)));
                }
            }
            if !missing.is_empty() {
                return Err(backend(
                    ACTION,
                    format!(
                        "user {} does not exist on {} (no account in mysql.user); create it (see the README)",
                        missing.join(" and "),
                        admin.addr
                    ),
                    false,
                ));
            }

            // ALTER USER needs the global CREATE USER privilege or UPDATE on the mysql schema.
            // Only privileges granted to the account itself are seen, not those of a role.
            let (name, host) = current_user.rsplit_once('@').unwrap_or((current_user.as_str(), ""));
            let grantee = format!("'{name}'@'{host}'");
            let privileges: Vec<String> = conn
                .exec(
                    "SELECT PRIVILEGE_TYPE FROM information_schema.USER_PRIVILEGES \
                     WHERE GRANTEE = ? AND PRIVILEGE_TYPE IN ('CREATE USER', 'UPDATE') \
                     UNION ALL SELECT 'UPDATE ON mysql.*' FROM information_schema.SCHEMA_PRIVILEGES \
                     WHERE GRANTEE = ? AND TABLE_SCHEMA = 'mysql' AND PRIVILEGE_TYPE = 'UPDATE'",
                    (&grantee, &grantee),
                )
                .await
                .map_err(fail)?;
            match privileges.first() {
                Some(p) => lines.push(format!("admin {current_user} may alter the users: it holds {p}")),
                None => {
                    return Err(backend(
                        ACTION,
                        format!(
                            "admin {current_user} may not alter users: it needs the global CREATE USER privilege \
                             (GRANT CREATE USER ON *.* TO {grantee}); privileges held through a role are not seen"
                        ),
                        false,
                    ));
                }
            }

            let mariadb = version.contains("MariaDB");
            lines.push(match (general_log != 0, mariadb) {
                (false, _) => "general query log is off".to_owned(),
                (true, false) => "general query log is on (MySQL masks passwords in it)".to_owned(),
                (true, true) => "general query log is ON: MariaDB writes ALTER USER into it with the new password \
                                 in clear, unless the admin may set sql_log_off (SUPER)"
                    .to_owned(),
            });
            let _ = conn.disconnect().await;
            Ok(lines)
        })
        .await
    }

    async fn retire(&self, _target: &Target, handle: &str) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "retire";
        let user = self.check_handle(ACTION, handle)?;
        let admin = self.admin(ACTION)?;
        // Nobody keeps this one: it only makes sure a manual unlock does not revive the old
        // password.
        let unknown = generate_password(PASSWORD_LENGTH)?;
        let secrets: Vec<&SecretString> = admin.secrets.iter().chain([&unknown]).collect();
        let fail = |e| db_error(ACTION, &admin.addr, e, &secrets);

        self.bounded(ACTION, async {
            let mut conn = Conn::new(admin.opts.clone()).await.map_err(fail)?;
            let hosts = hosts_of(&mut conn, user).await.map_err(fail)?;
            if hosts.is_empty() {
                // Dropped by hand: its password logs in nowhere, which is what retiring wants.
                // Nothing is wrong and nothing is retried: not a warning.
                tracing::info!(
                    user,
                    "mysql: the user to retire no longer exists; nothing to do"
                );
                let _ = conn.disconnect().await;
                return Ok(Outcome::Done);
            }
            quiet_general_log(&mut conn).await.map_err(fail)?;
            let sql = alter_user(user, &hosts, &unknown, "ACCOUNT LOCK").ok_or_else(|| {
                backend(
                    ACTION,
                    "the generated password is not alphanumeric".to_owned(),
                    false,
                )
            })?;
            conn.query_drop(sql.as_str()).await.map_err(fail)?;
            tracing::debug!(user, accounts = hosts.len(), "mysql: locked the old user");
            let _ = conn.disconnect().await;
            Ok(Outcome::Done)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SecretSource;

    fn provider() -> MysqlProvider {
        MysqlProvider::new(DatabaseConfig {
            admin_url: SecretSource::File("/nonexistent/admin.url".into()),
            users: ["orders_a".to_owned(), "orders_b".to_owned()],
            host: None,
            port: None,
            database: None,
            timeout: Duration::from_secs(5),
        })
    }

    #[test]
    fn create_takes_the_user_that_is_not_the_previous_one() {
        let p = provider();
        let cases = [
            (None, "orders_a"),
            (Some("orders_a"), "orders_b"),
            (Some("orders_b"), "orders_a"),
            (Some("someone_else"), "orders_a"),
            (Some(""), "orders_a"),
        ];
        for (previous, want) in cases {
            assert_eq!(p.config.next_user(previous), want, "{previous:?}");
        }
    }

    #[test]
    fn a_first_rotation_supersedes_the_other_user_and_alternates() {
        let p = provider();
        let cases = [
            (None, Some("orders_b")),
            (Some("someone_else"), Some("orders_b")),
            (Some("orders_a"), None),
            (Some("orders_b"), None),
        ];
        for (previous, want) in cases {
            assert_eq!(p.config.superseded_unknown(previous), want, "{previous:?}");
        }
        assert!(p.alternates());
    }

    #[test]
    fn only_the_configured_users_are_accepted_as_handles() {
        let p = provider();
        assert!(p.check_handle("retire", "orders_b").is_ok());
        for bad in ["root", "", "orders_a ", "ORDERS_A"] {
            let err = p.check_handle("retire", bad).unwrap_err();
            assert!(
                matches!(
                    err,
                    ProviderError::Backend {
                        transient: false,
                        ..
                    }
                ),
                "{bad}"
            );
            assert!(
                err.to_string().contains("not one of the configured users"),
                "{err}"
            );
        }
    }

    #[test]
    fn passwords_are_alphanumeric_of_the_length_asked_and_differ() {
        let a = generate_password(PASSWORD_LENGTH).unwrap();
        let b = generate_password(PASSWORD_LENGTH).unwrap();
        for v in [&a, &b] {
            assert_eq!(v.expose_secret().len(), PASSWORD_LENGTH);
            assert!(v.expose_secret().bytes().all(|c| c.is_ascii_alphanumeric()));
        }
        assert_ne!(a.expose_secret(), b.expose_secret());
        assert_eq!(generate_password(1000).unwrap().expose_secret().len(), 1000);
    }

    #[test]
    fn every_character_is_drawn_about_equally_often() {
        let n = crate::config::Charset::Alphanumeric.alphabet().len() * 2000;
        let value = generate_password(n).unwrap();
        let mut counts = [0u32; 256];
        for b in value.expose_secret().bytes() {
            counts[usize::from(b)] += 1;
        }
        let expected = 2000.0;
        let chi2: f64 = crate::config::Charset::Alphanumeric
            .alphabet()
            .iter()
            .map(|&b| (f64::from(counts[usize::from(b)]) - expected).powi(2) / expected)
            .sum();
        // 61 degrees of freedom: mean 61, sd 11; ten sd out is never reached by a fair source.
        assert!(chi2 < 61.0 + 10.0 * 122f64.sqrt(), "chi-squared {chi2}");
    }

    #[test]
    fn the_alter_statement_quotes_names_and_takes_only_safe_passwords() {
        let pw = secret("Abc123");
        let sql = alter_user(
            "we`ird",
            &["%".to_owned(), "10.0.%".to_owned()],
            &pw,
            "ACCOUNT UNLOCK",
        )
        .unwrap();
        assert_eq!(
            sql.as_str(),
            "ALTER USER `we``ird`@`%` IDENTIFIED BY 'Abc123', `we``ird`@`10.0.%` IDENTIFIED BY 'Abc123' ACCOUNT UNLOCK"
        );
        for bad in ["", "a'b", "a\\b", "a b", "é"] {
            assert!(
                alter_user("u", &["%".to_owned()], &secret(bad), "ACCOUNT LOCK").is_none(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn server_errors_are_classified_by_code_and_scrubbed() {
        let canary = secret("Canary0123456789");
        let cases = [
            (
                1045,
                false,
                "Access denied for user 'x'@'h' (using password: YES)",
            ),
            (
                1044,
                false,
                "Access denied for user 'x'@'%' to database 'd'",
            ),
            (1396, false, "Operation ALTER USER failed for 'x'@'%'"),
            (
                1064,
                false,
                "You have an error in your SQL syntax; near 'Canary0123456789'",
            ),
            (1040, true, "Too many connections"),
            (1205, true, "Lock wait timeout exceeded"),
            (
                1290,
                true,
                "The MariaDB server is running with the --read-only option",
            ),
        ];
        for (code, transient, message) in cases {
            let err = mysql_async::Error::Server(mysql_async::ServerError {
                code,
                message: message.to_owned(),
                state: "HY000".to_owned(),
            });
            let err = db_error("create", "db:3306", err, &[&canary]);
            assert!(
                matches!(err, ProviderError::Backend { transient: t, .. } if t == transient),
                "{code}: {err}"
            );
            let text = format!("{err} {err:?}");
            assert!(text.contains(&code.to_string()), "{text}");
            assert!(!text.contains("Canary0123456789"), "{text}");
        }
        let refused = mysql_async::Error::Io(mysql_async::IoError::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert!(matches!(
            db_error("create", "db:3306", refused, &[]),
            ProviderError::Backend {
                transient: true,
                ..
            }
        ));
    }

    #[test]
    fn an_unparsable_admin_url_is_named_but_never_quoted() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.url");
        for bad in [
            "postgres://admin:Canary0123456789@db:5432/x",
            "mysql://admin:Canary0123456789@db/x?require_ssl=Canary0123456789",
            "mysql://admin:Canary0123456789@db/x?Canary0123456789=1",
            "Canary0123456789",
        ] {
            std::fs::write(&path, bad).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            let mut p = provider();
            p.config.admin_url = SecretSource::File(path.clone());
            let err = p.admin("create").err().unwrap();
            let text = format!("{err} {err:?}");
            assert!(text.contains("is not a valid mysql:// URL"), "{text}");
            assert!(text.contains(&path.display().to_string()), "{text}");
            assert!(!text.contains("Canary"), "{text}");
            assert!(matches!(
                err,
                ProviderError::Backend {
                    transient: false,
                    ..
                }
            ));
        }
    }

    #[test]
    fn fields_come_from_the_admin_url_unless_the_config_overrides_them() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.url");
        std::fs::write(&path, "mysql://admin:pw@db.internal:3307/orders\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut p = provider();
        p.config.admin_url = SecretSource::File(path);
        let admin = p.admin("create").unwrap();
        assert_eq!(admin.addr, "db.internal:3307");
        // The admin connection itself goes to no database.
        assert_eq!(admin.opts.db_name(), None);
        let f = p.fields(&admin, "orders_a", secret("pw1"));
        let get = |f: &Fields, k: &str| f[k].expose_secret().to_owned();
        assert_eq!(get(&f, "username"), "orders_a");
        assert_eq!(get(&f, "password"), "pw1");
        assert_eq!(get(&f, "host"), "db.internal");
        assert_eq!(get(&f, "port"), "3307");
        assert_eq!(get(&f, "database"), "orders");
        let names: Vec<&str> = f.keys().map(String::as_str).collect();
        let mut want = crate::config::DATABASE_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(names, want);

        p.config.host = Some("db.example.com".into());
        p.config.port = Some(3306);
        p.config.database = Some("shop".into());
        let f = p.fields(&admin, "orders_b", secret("pw2"));
        assert_eq!(get(&f, "host"), "db.example.com");
        assert_eq!(get(&f, "port"), "3306");
        assert_eq!(get(&f, "database"), "shop");
    }
}
