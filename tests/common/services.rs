//! The machine's MariaDB (or MySQL) and Redis, for the `mysql` and `redis` provider tests.
//!
//! Both servers check passwords as they run, so the tests use them directly (no throwaway
//! server as for PostgreSQL). Addresses come from `VSR_TEST_MYSQL_URL` (default
//! `mysql://root@127.0.0.1:3306`, an account that may create users and grant) and
//! `VSR_TEST_REDIS_URL` (default `redis://127.0.0.1:6379`, a user that may run `ACL`).
//!
//! The servers are shared by tests running at once: every test makes its own users, named with
//! [`unique_id`], and a guard drops them when it goes out of scope, panics included.
//!
//! Skip rule (README, "Tests"): when the server cannot be reached, a test prints why and
//! passes, except under `CI=true`, where it fails: CI never passes by skipping.

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Opts, OptsBuilder};
use redis::aio::MultiplexedConnection;
use redis::{ConnectionInfo, IntoConnectionInfo, RedisConnectionInfo, RedisError};

/// How long a test waits to reach a server before it skips (or, under CI, fails).
const REACH_TIMEOUT: Duration = Duration::from_secs(5);

/// A short random suffix for user names, so concurrent tests never share one.
pub fn unique_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..10].to_owned()
}

/// Writes `text` to `dir/name` with `mode` and returns the path.
pub fn write_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A TCP port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A listener that accepts connections and never says a word: a server that hangs. Kept
/// alive as long as the returned value.
pub fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn skip_or_fail<T>(test: &str, server: &str, why: String) -> Option<T> {
    if ci() {
        panic!("{test}: {server} is required under CI=true: {why}");
    }
    eprintln!("skipping {test}: {server} is not reachable: {why}");
    None
}

/// Runs `cleanup` to completion from a `Drop`, inside or outside a runtime: on a thread of its
/// own with its own small runtime.
fn run_cleanup<F>(cleanup: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    let done = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let _ = tokio::time::timeout(Duration::from_secs(10), cleanup).await;
        });
    })
    .join();
    if done.is_err() {
        eprintln!("test clean-up panicked");
    }
}

// ---------------------------------------------------------------------------------------
// MariaDB / MySQL
// ---------------------------------------------------------------------------------------

/// The machine's MariaDB or MySQL, reached as an account that may create users.
#[derive(Clone)]
pub struct Mysql {
    url: url::Url,
    opts: Opts,
}

impl Mysql {
    pub async fn connect_or_skip(test: &str) -> Option<Mysql> {
        let raw = std::env::var("VSR_TEST_MYSQL_URL")
            .unwrap_or_else(|_| "mysql://root@127.0.0.1:3306".to_owned());
        let (url, opts) = match (url::Url::parse(&raw), Opts::from_url(&raw)) {
            (Ok(url), Ok(opts)) => (url, opts),
            _ => panic!("VSR_TEST_MYSQL_URL is not a valid mysql:// URL"),
        };
        let mysql = Mysql {
            url,
            opts: OptsBuilder::from_opts(opts).prefer_socket(false).into(),
        };
        match tokio::time::timeout(REACH_TIMEOUT, Conn::new(mysql.opts.clone())).await {
            Ok(Ok(conn)) => {
                let _ = conn.disconnect().await;
                Some(mysql)
            }
            Ok(Err(e)) => skip_or_fail(test, "MariaDB/MySQL", e.to_string()),
            Err(_) => skip_or_fail(test, "MariaDB/MySQL", "no answer within 5s".to_owned()),
        }
    }

    pub fn host(&self) -> String {
        self.opts.ip_or_hostname().to_owned()
    }

    pub fn port(&self) -> u16 {
        self.opts.tcp_port()
    }

    /// The test URL with another user and password (its host, port and parameters kept).
    pub fn url_as(&self, user: &str, password: &str) -> String {
        let mut url = self.url.clone();
        url.set_username(user).unwrap();
        url.set_password(Some(password)).unwrap();
        url.to_string()
    }

    /// Runs statements as the test's admin account.
    pub async fn run(&self, statements: &[String]) {
        let mut conn = Conn::new(self.opts.clone()).await.unwrap();
        for sql in statements {
            conn.query_drop(sql.as_str())
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        let _ = conn.disconnect().await;
    }

    /// The first column of `sql` (one `?` parameter), run as the test's admin account.
    pub async fn strings(&self, sql: &str, param: &str) -> Vec<String> {
        let mut conn = Conn::new(self.opts.clone()).await.unwrap();
        let rows: Vec<String> = conn
            .exec(sql, (param,))
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let _ = conn.disconnect().await;
        rows
    }

    /// A session as `user` with `password`, or the server's refusal.
    pub async fn session(&self, user: &str, password: &str) -> Result<Conn, mysql_async::Error> {
        let opts = OptsBuilder::from_opts(self.opts.clone())
            .user(Some(user))
            .pass(Some(password))
            .db_name(None::<String>);
        let mut conn = Conn::new(opts).await?;
        conn.query_drop("SELECT 1").await?;
        Ok(conn)
    }

    /// Logs in as `user` with `password` and runs `SELECT 1`; the server's error code if not.
    pub async fn login(&self, user: &str, password: &str) -> Result<(), u16> {
        match self.session(user, password).await {
            Ok(conn) => {
                let _ = conn.disconnect().await;
                Ok(())
            }
            Err(mysql_async::Error::Server(e)) => Err(e.code),
            Err(other) => panic!("{user}: not a server refusal: {other}"),
        }
    }

    /// Creates `user@'%'` for each `(name, password)`; they are dropped when the guard is.
    pub async fn create_users(&self, users: &[(&str, &str)]) -> MysqlUsers {
        let guard = MysqlUsers {
            mysql: self.clone(),
            names: users.iter().map(|(n, _)| (*n).to_owned()).collect(),
            databases: Vec::new(),
        };
        let statements: Vec<String> = users
            .iter()
            .map(|(name, password)| format!("CREATE USER '{name}'@'%' IDENTIFIED BY '{password}'"))
            .collect();
        self.run(&statements).await;
        guard
    }
}

/// Users (all their accounts) and databases a test made; dropped with the guard.
pub struct MysqlUsers {
    mysql: Mysql,
    names: Vec<String>,
    databases: Vec<String>,
}

impl MysqlUsers {
    /// Adds users created some other way to the clean-up.
    pub fn also(&mut self, name: &str) {
        self.names.push(name.to_owned());
    }

    /// Creates a database, dropped with the guard.
    pub async fn create_database(&mut self, name: &str) {
        self.databases.push(name.to_owned());
        self.mysql.run(&[format!("CREATE DATABASE `{name}`")]).await;
    }
}

impl Drop for MysqlUsers {
    fn drop(&mut self) {
        let opts = self.mysql.opts.clone();
        let names = std::mem::take(&mut self.names);
        let databases = std::mem::take(&mut self.databases);
        run_cleanup(async move {
            let Ok(mut conn) = Conn::new(opts).await else {
                return;
            };
            for db in databases {
                let _ = conn
                    .query_drop(format!("DROP DATABASE IF EXISTS `{db}`"))
                    .await;
            }
            for name in names {
                let hosts: Vec<String> = conn
                    .exec("SELECT Host FROM mysql.user WHERE User = ?", (&name,))
                    .await
                    .unwrap_or_default();
                for host in hosts {
                    let _ = conn
                        .query_drop(format!("DROP USER IF EXISTS '{name}'@'{host}'"))
                        .await;
                }
            }
            let _ = conn.disconnect().await;
        });
    }
}

// ---------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------

/// The machine's Redis, reached as a user that may run `ACL`.
#[derive(Clone)]
pub struct Redis {
    url: url::Url,
    info: ConnectionInfo,
}

impl Redis {
    pub async fn connect_or_skip(test: &str) -> Option<Redis> {
        let raw = std::env::var("VSR_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
        let (url, info) = match (url::Url::parse(&raw), raw.as_str().into_connection_info()) {
            (Ok(url), Ok(info)) => (url, info),
            _ => panic!("VSR_TEST_REDIS_URL is not a valid redis:// URL"),
        };
        let redis = Redis { url, info };
        match tokio::time::timeout(REACH_TIMEOUT, redis.conn()).await {
            Ok(Ok(_)) => Some(redis),
            Ok(Err(e)) => skip_or_fail(test, "Redis", e.to_string()),
            Err(_) => skip_or_fail(test, "Redis", "no answer within 5s".to_owned()),
        }
    }

    pub fn host(&self) -> String {
        self.url.host_str().unwrap_or("127.0.0.1").to_owned()
    }

    pub fn port(&self) -> u16 {
        self.url.port().unwrap_or(6379)
    }

    /// The test URL with another user and password.
    pub fn url_as(&self, user: &str, password: &str) -> String {
        let mut url = self.url.clone();
        url.set_username(user).unwrap();
        url.set_password(Some(password)).unwrap();
        url.to_string()
    }

    /// A connection as the test's admin user.
    pub async fn conn(&self) -> Result<MultiplexedConnection, RedisError> {
        redis::Client::open(self.info.clone())?
            .get_multiplexed_async_connection()
            .await
    }

    /// Runs `ACL <args...>` as the test's admin user.
    pub async fn acl(&self, args: &[&str]) -> redis::Value {
        let mut conn = self.conn().await.unwrap();
        let mut cmd = redis::cmd("ACL");
        for a in args {
            cmd.arg(*a);
        }
        cmd.query_async(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("ACL {}: {e}", args.join(" ")))
    }

    /// The SHA-256 hex of each password `user` holds, or `None` when there is no such user.
    pub async fn password_hashes(&self, user: &str) -> Option<Vec<String>> {
        let reply = self.acl(&["GETUSER", user]).await;
        let redis::Value::Array(items) = reply else {
            return None;
        };
        let at = items
            .iter()
            .position(|v| matches!(v, redis::Value::BulkString(b) if b == b"passwords"))?;
        let redis::Value::Array(hashes) = &items[at + 1] else {
            panic!("passwords is not an array");
        };
        Some(
            hashes
                .iter()
                .map(|h| redis::from_redis_value::<String>(h).unwrap())
                .collect(),
        )
    }

    /// A connection logged in as `user` with `password` that has answered `PING`.
    pub async fn session(
        &self,
        user: &str,
        password: &str,
    ) -> Result<MultiplexedConnection, RedisError> {
        let info = ConnectionInfo {
            addr: self.info.addr.clone(),
            redis: RedisConnectionInfo {
                username: Some(user.to_owned()),
                password: Some(password.to_owned()),
                ..RedisConnectionInfo::default()
            },
        };
        let mut conn = redis::Client::open(info)?
            .get_multiplexed_async_connection()
            .await?;
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(conn)
    }

    /// Whether `user` logs in with `password`.
    pub async fn logs_in(&self, user: &str, password: &str) -> bool {
        match self.session(user, password).await {
            Ok(_) => true,
            Err(e) if e.kind() == redis::ErrorKind::AuthenticationFailed => false,
            Err(e) => panic!("{user}: not an authentication refusal: {e}"),
        }
    }

    /// Creates each ACL user with `rules` (`on`, `>password`, `+ping`, ...); they are deleted
    /// when the guard is dropped.
    pub async fn create_users(&self, users: &[(&str, &[&str])]) -> RedisUsers {
        let guard = RedisUsers {
            redis: self.clone(),
            names: users.iter().map(|(n, _)| (*n).to_owned()).collect(),
        };
        for (name, rules) in users {
            let mut args = vec!["SETUSER", name];
            args.extend_from_slice(rules);
            self.acl(&args).await;
        }
        guard
    }
}

/// ACL users a test made; deleted with the guard.
pub struct RedisUsers {
    redis: Redis,
    names: Vec<String>,
}

impl RedisUsers {
    /// Adds users created some other way to the clean-up.
    pub fn also(&mut self, name: &str) {
        self.names.push(name.to_owned());
    }
}

impl Drop for RedisUsers {
    fn drop(&mut self) {
        let redis = self.redis.clone();
        let names = std::mem::take(&mut self.names);
        run_cleanup(async move {
            if let Ok(mut conn) = redis.conn().await {
                let _ = redis::cmd("ACL")
                    .arg("DELUSER")
                    .arg(&names)
                    .query_async::<i64>(&mut conn)
                    .await;
            }
        });
    }
}
