//! The `redis` provider: one ACL user that holds several passwords at once, so the new one is
//! added beside the old and the old one is removed at retirement. Redis 6 or later (7 for
//! `preflight`'s permission check).
//!
//! - Admin connection: the URL in `admin-url-file` (0600, read at every call):
//!   `redis://admin:password@host:6379` or `rediss://` for TLS. Every call, connection
//!   included, is bounded by the config's `timeout`.
//! - `create` draws a 40-character alphanumeric password and adds it to `user` by its SHA-256
//!   (`ACL SETUSER <user> #<hex>`): the passwords the user already has stay valid, and the
//!   plaintext never crosses the admin connection (only `verify`'s login sends it, as any
//!   client of the user does). The handle is `sha256:<hex>`, the same lowercase hex the ACL
//!   keeps, so the state holds only a hash and `retire` can remove exactly that password. The
//!   user must exist and be `on`: the provider never creates a user (a user made by
//!   `ACL SETUSER` alone may run nothing) nor turns a disabled one back on (someone disabled
//!   it, maybe on purpose).
//! - `verify` opens a new connection, logs in as the user with the new password (`AUTH`) and
//!   sends `PING`; a user not allowed to `PING` has still proven the password by logging in.
//! - `retire` removes the password by its hash (`ACL SETUSER <user> !<hex>`). A hash the user no
//!   longer holds (retired before, removed by hand, or the user is gone) counts as done: that
//!   password logs in nowhere. `ACL GETUSER` tells, before anything is changed. Open
//!   connections are not closed.
//! - After each change the provider asks the server to save its ACL file (`ACL SAVE`). A server
//!   that keeps users in `redis.conf` instead (no `aclfile`), or an admin not allowed to save,
//!   keeps the change in memory only, and a restart would lose it: that is logged as a warning.
//!   ACLs are per server and are not replicated: point the admin URL at a standalone server.
//! - Fields: `username`, `password`, and `host`, `port` from the admin URL unless the config
//!   sets them (required when the admin URL is a unix socket).
//!
//! # Limitation: a redone `create` leaves the first password behind
//!
//! DESIGN asks a repeated `create` with the same rotation id to replace what the first call
//! made. Only the hash of a password identifies it, and the first call's password was never
//! stored anywhere (by design), so the second call cannot tell which password to remove: it
//! adds another one, and the first stays valid though nobody holds it. Removing "every password
//! but `previous_handle`'s" would be wrong when several resources share the user (each holds
//! its own password). Such leftovers are visible in `ACL GETUSER <user>` (and in `preflight`'s
//! password count) and can be removed with `ACL SETUSER <user> !<hash>`.
//!
//! # Errors
//!
//! I/O, timeouts, `LOADING`, `BUSY`, `TRYAGAIN`, `MASTERDOWN` are transient; a refused login
//! (`WRONGPASS`), `NOPERM`, a missing user and a bad admin URL are permanent. No message holds a
//! password or the admin URL.

use async_trait::async_trait;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    RedisConnectionInfo, RedisError, Value,
};
use sha2::{Digest, Sha256};

use super::mysql::generate_password;
use super::{Credential, Outcome, Provider, ProviderError, Target};
use crate::config::RedisConfig;
use crate::secret::{ExposeSecret, Fields, SecretString, scrub};

const KIND: &str = "redis";

/// 40 alphanumeric characters: about 238 bits.
const PASSWORD_LENGTH: usize = 40;

/// How a handle starts; the rest is the password's SHA-256 in lowercase hex.
const HANDLE_PREFIX: &str = "sha256:";

/// Adds and removes passwords of one ACL user.
#[derive(Debug, Clone)]
pub struct RedisProvider {
    config: RedisConfig,
}

/// What one call read from the admin URL.
struct Admin {
    info: ConnectionInfo,
    /// `host:port` or the socket path, for messages.
    addr: String,
    /// The file's text and the admin password: never in a message.
    secrets: Vec<SecretString>,
}

/// What `ACL GETUSER` says about a user.
#[derive(Debug, PartialEq, Eq)]
struct AclUser {
    on: bool,
    /// SHA-256 hex of each password.
    passwords: Vec<String>,
}

impl RedisProvider {
    pub fn new(config: RedisConfig) -> Self {
        RedisProvider { config }
    }

    /// Reads and parses the admin URL (`admin-url-file` or `admin-url-credential`), at each
    /// call.
    fn admin(&self, action: &'static str) -> Result<Admin, ProviderError> {
        let source = &self.config.admin_url;
        let url = super::read_secret(KIND, action, source, "")?;
        let scheme_ok = ["redis://", "rediss://", "redis+unix://", "unix://"]
            .iter()
            .any(|s| url.expose_secret().starts_with(s));
        // The parse error is not kept: it could quote the URL.
        let info = scheme_ok
            .then(|| url.expose_secret().into_connection_info().ok())
            .flatten()
            .ok_or_else(|| {
                backend(
                    action,
                    format!(
                        "the admin URL from {} is not a valid redis:// or rediss:// URL",
                        source.describe()
                    ),
                    false,
                )
            })?;
        // ACLs are server-wide: no SELECT of the URL's database, which the admin may lack.
        let mut info = info;
        info.redis.db = 0;
        let mut secrets = vec![url];
        if let Some(pass) = info.redis.password.as_ref().filter(|p| !p.is_empty()) {
            secrets.push(SecretString::from(pass.clone()));
        }
        Ok(Admin {
            addr: addr_text(&info.addr),
            info,
            secrets,
        })
    }

    async fn connect(&self, info: &ConnectionInfo) -> Result<MultiplexedConnection, RedisError> {
        let client = redis::Client::open(info.clone())?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.config.timeout)
            .set_response_timeout(self.config.timeout);
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
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
            |t| format!("Redis did not answer within {t}"),
            work,
        )
        .await
    }

    /// Saves the ACLs after a change, if the server and the admin's permissions allow it.
    /// Never fails the call: the change is made, and it holds until the server restarts.
    async fn save_acl(&self, conn: &mut MultiplexedConnection) {
        let saved = tokio::time::timeout(
            self.config.timeout,
            redis::cmd("ACL").arg("SAVE").query_async::<()>(conn),
        )
        .await;
        let why = match saved {
            Ok(Ok(())) => return,
            Ok(Err(e)) if e.code() == Some("NOPERM") => "the admin may not run ACL SAVE",
            Ok(Err(e)) if e.detail().is_some_and(|d| d.contains("ACL file")) => {
                "the server has no aclfile (save its users with CONFIG REWRITE)"
            }
            Ok(Err(_)) => "ACL SAVE failed",
            Err(_) => "ACL SAVE did not answer in time",
        };
        tracing::warn!(
            user = %self.config.user,
            "redis: the ACL change is in memory only ({why}); a restart of the server would undo it"
        );
    }

    fn fields(&self, admin: &Admin, password: SecretString) -> Result<Fields, String> {
        let (host, port) = self.endpoint(admin)?;
        let mut fields = Fields::new();
        fields.insert("username".to_owned(), secret(&self.config.user));
        fields.insert("password".to_owned(), password);
        fields.insert("host".to_owned(), secret(&host));
        fields.insert("port".to_owned(), secret(&port.to_string()));
        Ok(fields)
    }

    /// The pushed `host` and `port`: the config's, else the admin URL's.
    fn endpoint(&self, admin: &Admin) -> Result<(String, u16), String> {
        let (url_host, url_port) = match &admin.info.addr {
            ConnectionAddr::Tcp(host, port) => (Some(host.clone()), Some(*port)),
            ConnectionAddr::TcpTls { host, port, .. } => (Some(host.clone()), Some(*port)),
            ConnectionAddr::Unix(_) => (None, None),
        };
        match (self.config.host.clone().or(url_host), self.config.port.or(url_port)) {
            (Some(host), Some(port)) => Ok((host, port)),
            _ => Err(
                "the admin URL is a unix socket: set the provider's `host` and `port` for the pushed fields"
                    .to_owned(),
            ),
        }
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

fn addr_text(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
    }
}

/// The SHA-256 of a password in lowercase hex: how the ACL names it.
fn password_hash(password: &SecretString) -> String {
    Sha256::digest(password.expose_secret().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash inside a handle, if it is `sha256:` and 64 lowercase hex digits.
fn parse_handle(handle: &str) -> Option<&str> {
    let hex = handle.strip_prefix(HANDLE_PREFIX)?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))).then_some(hex)
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        _ => None,
    }
}

fn texts(value: &Value) -> Option<Vec<String>> {
    match value {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        _ => None,
    }
}

/// Reads an `ACL GETUSER` reply: `None` when there is no such user. RESP2 sends a flat array
/// of names and values, RESP3 a map.
fn parse_getuser(reply: &Value) -> Result<Option<AclUser>, String> {
    let pairs: Vec<(&Value, &Value)> = match reply {
        Value::Nil => return Ok(None),
        Value::Array(items) if items.len() % 2 == 0 => {
            items.chunks(2).map(|kv| (&kv[0], &kv[1])).collect()
        }
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (k, v)).collect(),
        _ => return Err("ACL GETUSER answered something other than a user description".into()),
    };
    let mut flags = None;
    let mut passwords = None;
    for (key, value) in pairs {
        match text(key).as_deref() {
            Some("flags") => flags = texts(value),
            Some("passwords") => passwords = texts(value),
            _ => {}
        }
    }
    match (flags, passwords) {
        (Some(flags), Some(passwords)) => Ok(Some(AclUser {
            on: flags.iter().any(|f| f == "on"),
            passwords,
        })),
        _ => Err("ACL GETUSER answered without `flags` and `passwords`".into()),
    }
}

async fn get_user(
    conn: &mut MultiplexedConnection,
    user: &str,
) -> Result<Result<Option<AclUser>, String>, RedisError> {
    let reply: Value = redis::cmd("ACL")
        .arg("GETUSER")
        .arg(user)
        .query_async(conn)
        .await?;
    Ok(parse_getuser(&reply))
}

/// Whether Redis refused to remove a password because the user does not hold it.
fn is_already_gone(err: &RedisError) -> bool {
    err.detail().is_some_and(|d| {
        d.contains("password you are trying to remove") && d.contains("does not exist")
    })
}

/// Turns a client error into a provider error whose reason holds none of `secrets`.
fn redis_error(
    action: &'static str,
    addr: &str,
    err: &RedisError,
    secrets: &[&SecretString],
) -> ProviderError {
    let code = err.code().unwrap_or("");
    let transient = err.is_io_error()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::BusyLoadingError
                | ErrorKind::TryAgain
                | ErrorKind::ClusterDown
                | ErrorKind::MasterDown
                | ErrorKind::ReadOnly
        )
        || code == "BUSY";
    let reason = match err.kind() {
        // The crate's own text for this adds nothing ("Password authentication failed").
        ErrorKind::AuthenticationFailed => {
            format!("{addr} refused the login: wrong user name or password, or the user is off")
        }
        ErrorKind::IoError => format!("cannot talk to {addr}: {err}"),
        _ => match err.detail() {
            Some(detail) if !code.is_empty() => format!("{addr} answered {code}: {detail}"),
            _ => format!("{addr}: {err}"),
        },
    };
    let hint = if code == "NOPERM" {
        " (see the README for the ACL the admin user needs)"
    } else {
        ""
    };
    backend(
        action,
        scrub(&format!("{reason}{hint}"), secrets.iter().copied()),
        transient,
    )
}

#[async_trait]
impl Provider for RedisProvider {
    fn kind(&self) -> &'static str {
        KIND
    }

    async fn create(
        &self,
        _target: &Target,
        _rotation_id: &str,
        _previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        const ACTION: &str = "create";
        let user = self.config.user.as_str();
        let admin = self.admin(ACTION)?;
        let password = generate_password(PASSWORD_LENGTH)?;
        let hash = password_hash(&password);
        let fields = self
            .fields(&admin, password)
            .map_err(|reason| backend(ACTION, reason, false))?;
        // Only the password: the other fields (host, port, user) are not secret, and
        // scrubbing them would blank out the address in every message.
        let secrets: Vec<&SecretString> =
            admin.secrets.iter().chain(fields.get("password")).collect();
        let fail = |e: RedisError| redis_error(ACTION, &admin.addr, &e, &secrets);

        let mut conn = self
            .bounded(ACTION, async {
                let mut conn = self.connect(&admin.info).await.map_err(fail)?;
                let found = get_user(&mut conn, user).await.map_err(fail)?;
                match found.map_err(|reason| backend(ACTION, reason, false))? {
                    None => {
                        return Err(backend(
                            ACTION,
                            format!("ACL user \"{user}\" does not exist on {} (see the README to create it)", admin.addr),
                            false,
                        ));
                    }
                    Some(AclUser { on: false, .. }) => {
                        return Err(backend(
                            ACTION,
                            format!(
                                "ACL user \"{user}\" is off on {}: no password of it logs in; turn it on \
                                 (ACL SETUSER {user} on) if it was not disabled on purpose",
                                admin.addr
                            ),
                            false,
                        ));
                    }
                    Some(_) => {}
                }
                redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(user)
                    .arg(format!("#{hash}"))
                    .query_async::<()>(&mut conn)
                    .await
                    .map_err(fail)?;
                Ok(conn)
            })
            .await?;
        tracing::debug!(user, "redis: added a password");
        self.save_acl(&mut conn).await;

        Ok(Credential {
            handle: format!("{HANDLE_PREFIX}{hash}"),
            fields,
            // Each password is added beside the others: none is replaced.
            supersedes: None,
        })
    }

    async fn verify(
        &self,
        _target: &Target,
        _rotation_id: &str,
        credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "verify";
        let password = credential.fields.get("password").ok_or_else(|| {
            backend(
                ACTION,
                "the credential has no `password` field".to_owned(),
                false,
            )
        })?;
        let admin = self.admin(ACTION)?;
        let secrets: Vec<&SecretString> = admin.secrets.iter().chain([password]).collect();
        let fail = |e: RedisError| redis_error(ACTION, &admin.addr, &e, &secrets);
        // The admin's route and TLS settings; database 0, so no SELECT the user may lack.
        let info = ConnectionInfo {
            addr: admin.info.addr.clone(),
            redis: RedisConnectionInfo {
                db: 0,
                username: Some(self.config.user.clone()),
                password: Some(password.expose_secret().to_owned()),
                protocol: admin.info.redis.protocol,
            },
        };

        self.bounded(ACTION, async {
            // Connecting sends AUTH <user> <password>: a refusal fails here.
            let mut conn = self.connect(&info).await.map_err(fail)?;
            match redis::cmd("PING").query_async::<String>(&mut conn).await {
                Ok(_) => Ok(Outcome::Done),
                Err(e) if e.code() == Some("NOPERM") => Ok(Outcome::Done),
                Err(e) => Err(fail(e)),
            }
        })
        .await
    }

    async fn preflight(&self) -> Result<Vec<String>, ProviderError> {
        const ACTION: &str = "preflight";
        let user = self.config.user.as_str();
        let admin = self.admin(ACTION)?;
        let secrets: Vec<&SecretString> = admin.secrets.iter().collect();
        let fail = |e: RedisError| redis_error(ACTION, &admin.addr, &e, &secrets);

        self.bounded(ACTION, async {
            let mut lines = Vec::new();
            let mut conn = self.connect(&admin.info).await.map_err(fail)?;
            let me: String = redis::cmd("ACL")
                .arg("WHOAMI")
                .query_async(&mut conn)
                .await
                .map_err(fail)?;
            let tls = match admin.info.addr {
                ConnectionAddr::TcpTls { .. } => "TLS",
                ConnectionAddr::Unix(_) => "unix socket",
                ConnectionAddr::Tcp(..) => {
                    "no TLS: new passwords cross the network in clear when verified; use rediss:// unless the server is on this host"
                }
            };
            lines.push(format!("admin connection to {} as {me} works ({tls})", admin.addr));
            let (host, port) = self
                .endpoint(&admin)
                .map_err(|reason| backend(ACTION, reason, false))?;
            lines.push(format!(
                "pushed fields: username {user}, host {host}, port {port}"
            ));

            match get_user(&mut conn, user)
                .await
                .map_err(fail)?
                .map_err(|reason| backend(ACTION, reason, false))?
            {
                None => {
                    return Err(backend(
                        ACTION,
                        format!("ACL user \"{user}\" does not exist on {} (see the README to create it)", admin.addr),
                        false,
                    ));
                }
                Some(AclUser { on: false, .. }) => {
                    return Err(backend(
                        ACTION,
                        format!("ACL user \"{user}\" is off on {}: turn it on (ACL SETUSER {user} on)", admin.addr),
                        false,
                    ));
                }
                Some(AclUser { passwords, .. }) => lines.push(format!(
                    "ACL user \"{user}\" exists, is on and holds {} password(s)",
                    passwords.len()
                )),
            }

            // What the admin may do, asked of the server itself (ACL DRYRUN, Redis 7).
            let dryrun = |args: &[&str]| {
                let mut cmd = redis::cmd("ACL");
                cmd.arg("DRYRUN").arg(&me).arg("ACL");
                for a in args {
                    cmd.arg(*a);
                }
                cmd
            };
            match dryrun(&["SETUSER", user]).query_async::<String>(&mut conn).await {
                Ok(answer) if answer == "OK" => {
                    lines.push(format!("admin {me} may run ACL SETUSER on \"{user}\""))
                }
                Ok(answer) => {
                    return Err(backend(
                        ACTION,
                        format!(
                            "admin {me} may not run ACL SETUSER: {} (see the README for the ACL it needs)",
                            scrub(&answer, secrets.iter().copied())
                        ),
                        false,
                    ));
                }
                Err(e) if e.detail().is_some_and(|d| d.contains("nknown subcommand")) => lines.push(
                    "admin's permission to run ACL SETUSER not checked: ACL DRYRUN needs Redis 7".to_owned(),
                ),
                Err(e) => return Err(fail(e)),
            }
            let save = dryrun(&["SAVE"]).query_async::<String>(&mut conn).await;
            lines.push(match save {
                Ok(answer) if answer == "OK" => format!(
                    "admin {me} may run ACL SAVE: changes are saved when the server has an aclfile"
                ),
                _ => format!(
                    "admin {me} may not run ACL SAVE: changes stay in memory until the server saves its ACLs otherwise"
                ),
            });
            Ok(lines)
        })
        .await
    }

    async fn retire(&self, _target: &Target, handle: &str) -> Result<Outcome, ProviderError> {
        const ACTION: &str = "retire";
        let user = self.config.user.as_str();
        let hash = parse_handle(handle).ok_or_else(|| {
            backend(
                ACTION,
                format!(
                    "handle \"{handle}\" is not a redis password hash (sha256: and 64 lowercase hex digits); refusing it"
                ),
                false,
            )
        })?;
        let admin = self.admin(ACTION)?;
        let secrets: Vec<&SecretString> = admin.secrets.iter().collect();
        let fail = |e: RedisError| redis_error(ACTION, &admin.addr, &e, &secrets);

        let changed = self
            .bounded(ACTION, async {
                let mut conn = self.connect(&admin.info).await.map_err(fail)?;
                // Asked first, so "already gone" rests on what the user holds rather than on
                // the wording of the server's error, and so no `ACL SETUSER` names a user
                // that is gone (Redis 6.0 would create it). An admin not allowed
                // `ACL GETUSER` still retires through the error below.
                match get_user(&mut conn, user).await {
                    Ok(Ok(None)) => return Ok(None),
                    Ok(Ok(Some(acl))) if !acl.passwords.iter().any(|p| p == hash) => {
                        return Ok(None);
                    }
                    Ok(_) => {}
                    Err(e) if e.code() == Some("NOPERM") => {}
                    Err(e) => return Err(fail(e)),
                }
                let removed = redis::cmd("ACL")
                    .arg("SETUSER")
                    .arg(user)
                    .arg(format!("!{hash}"))
                    .query_async::<()>(&mut conn)
                    .await;
                match removed {
                    Ok(()) => Ok(Some(conn)),
                    Err(e) if is_already_gone(&e) => Ok(None),
                    Err(e) => Err(fail(e)),
                }
            })
            .await?;
        match changed {
            Some(mut conn) => {
                tracing::debug!(user, "redis: removed a password");
                self.save_acl(&mut conn).await;
            }
            None => tracing::info!(
                user,
                handle,
                "redis: the password to retire was already gone; nothing to do"
            ),
        }
        Ok(Outcome::Done)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::SecretSource;

    #[test]
    fn handles_are_the_acl_hash_and_only_that_parses() {
        let pw = secret("foobar");
        // printf foobar | sha256sum
        let hex = "c3ab8ff13720e8ad9047dd39466b3c8974e592c2fa383d4a3960714caef0c4f2";
        assert_eq!(password_hash(&pw), hex);
        assert_eq!(parse_handle(&format!("sha256:{hex}")), Some(hex));
        for bad in [
            hex.to_owned(),
            format!("sha256:{}", hex.to_uppercase()),
            format!("sha256:{}", &hex[1..]),
            format!("sha256:{hex}0"),
            format!("sha1:{hex}"),
            "sha256:".to_owned(),
            format!("sha256:{}", hex.replace('c', "g")),
        ] {
            assert_eq!(parse_handle(&bad), None, "{bad}");
        }
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn getuser_replies_parse_in_resp2_and_resp3() {
        let resp2 = Value::Array(vec![
            bulk("flags"),
            Value::Array(vec![bulk("on")]),
            bulk("passwords"),
            Value::Array(vec![bulk("ab"), bulk("cd")]),
            bulk("commands"),
            bulk("+@all"),
        ]);
        assert_eq!(
            parse_getuser(&resp2),
            Ok(Some(AclUser {
                on: true,
                passwords: vec!["ab".into(), "cd".into()]
            }))
        );
        let resp3 = Value::Map(vec![
            (
                Value::SimpleString("flags".into()),
                Value::Set(vec![Value::SimpleString("off".into())]),
            ),
            (bulk("passwords"), Value::Array(vec![])),
        ]);
        assert_eq!(
            parse_getuser(&resp3),
            Ok(Some(AclUser {
                on: false,
                passwords: vec![]
            }))
        );
        assert_eq!(parse_getuser(&Value::Nil), Ok(None));
        assert!(parse_getuser(&Value::Int(1)).is_err());
        assert!(parse_getuser(&Value::Array(vec![bulk("flags")])).is_err());
    }

    #[test]
    fn errors_are_classified_and_scrubbed() {
        let canary = secret("Canary0123456789");
        let server = |line: &str| -> RedisError {
            let (code, detail) = line.split_once(' ').unwrap();
            redis::make_extension_error(code.to_owned(), Some(detail.to_owned()))
        };
        let cases: Vec<(RedisError, bool)> = vec![
            (
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused).into(),
                true,
            ),
            ((ErrorKind::BusyLoadingError, "loading").into(), true),
            (server("BUSY Redis is busy running a script"), true),
            (
                (
                    ErrorKind::AuthenticationFailed,
                    "Password authentication failed",
                )
                    .into(),
                false,
            ),
            (
                server("NOPERM User x has no permissions to run the 'acl|setuser' command"),
                false,
            ),
            (
                server("WRONGPASS invalid username-password pair Canary0123456789"),
                false,
            ),
            (
                (
                    ErrorKind::ResponseError,
                    "An error was signalled by the server",
                    "Canary0123456789".to_owned(),
                )
                    .into(),
                false,
            ),
        ];
        for (err, transient) in cases {
            let shown = err.to_string();
            let got = redis_error("create", "cache:6379", &err, &[&canary]);
            assert!(
                matches!(got, ProviderError::Backend { transient: t, .. } if t == transient),
                "{shown}: {got}"
            );
            let text = format!("{got} {got:?}");
            assert!(!text.contains("Canary"), "{text}");
            assert!(text.contains("cache:6379"), "{text}");
        }
    }

    #[test]
    fn already_gone_is_recognised_by_redis_wording() {
        let gone: RedisError = (
            ErrorKind::ResponseError,
            "An error was signalled by the server",
            "Error in ACL SETUSER modifier '!ab': The password you are trying to remove from the user does not exist".to_owned(),
        )
            .into();
        assert!(is_already_gone(&gone));
        let other: RedisError = (
            ErrorKind::ResponseError,
            "An error was signalled by the server",
            "Error in ACL SETUSER modifier '!zz': The password hash must be exactly 64 characters"
                .to_owned(),
        )
            .into();
        assert!(!is_already_gone(&other));
    }

    fn provider(url_file: std::path::PathBuf) -> RedisProvider {
        RedisProvider::new(RedisConfig {
            admin_url: SecretSource::File(url_file),
            user: "orders".into(),
            host: None,
            port: None,
            timeout: Duration::from_secs(5),
        })
    }

    fn url_file(dir: &tempfile::TempDir, url: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.path().join("admin.url");
        std::fs::write(&path, url).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        path
    }

    #[test]
    fn an_unparsable_admin_url_is_named_but_never_quoted() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            "mysql://admin:Canary0123456789@cache:6379",
            "redis://admin:Canary0123456789@",
            "redis://admin:Canary0123456789@cache:6379/notanumber",
            "Canary0123456789",
        ] {
            let p = provider(url_file(&dir, bad));
            let err = p.admin("create").err().unwrap();
            let text = format!("{err} {err:?}");
            assert!(
                text.contains("is not a valid redis:// or rediss:// URL"),
                "{text}"
            );
            assert!(!text.contains("Canary"), "{text}");
        }
    }

    #[test]
    fn fields_come_from_the_admin_url_unless_the_config_overrides_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = provider(url_file(&dir, "rediss://admin:pw@cache.internal:6380/2"));
        let admin = p.admin("create").unwrap();
        assert_eq!(admin.addr, "cache.internal:6380");
        let f = p.fields(&admin, secret("pw1")).unwrap();
        let get = |f: &Fields, k: &str| f[k].expose_secret().to_owned();
        assert_eq!(get(&f, "username"), "orders");
        assert_eq!(get(&f, "password"), "pw1");
        assert_eq!(get(&f, "host"), "cache.internal");
        assert_eq!(get(&f, "port"), "6380");
        let mut want = crate::config::REDIS_FIELDS.to_vec();
        want.sort_unstable();
        assert_eq!(f.keys().map(String::as_str).collect::<Vec<_>>(), want);

        p.config.host = Some("cache.example.com".into());
        p.config.port = Some(6379);
        let f = p.fields(&admin, secret("pw2")).unwrap();
        assert_eq!(get(&f, "host"), "cache.example.com");
        assert_eq!(get(&f, "port"), "6379");

        let unix = provider(url_file(&dir, "unix:///run/redis.sock"));
        let admin = unix.admin("create").unwrap();
        assert!(
            unix.fields(&admin, secret("pw"))
                .unwrap_err()
                .contains("unix socket")
        );
    }
}
