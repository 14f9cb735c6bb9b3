//! A throwaway PostgreSQL cluster that checks passwords, for the postgres provider's tests.
//!
//! The machine's own PostgreSQL trusts local logins, so a password test against it proves
//! nothing. Each test starts its own cluster instead: `initdb --auth=scram-sha-256` (every
//! `pg_hba.conf` line, sockets and TCP), listening on 127.0.0.1 at a free port, its socket
//! in its own temporary directory, `log_statement = 'all'` into a log file the test can read.
//! initdb and pg_ctl come from `VSR_TEST_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`,
//! else `pg_config --bindir`. PostgreSQL refuses to run as root, so when the tests do, the
//! cluster belongs to and runs as the `postgres` OS user (`runuser`).
//!
//! Clean-up: a guardian process (in its own process group, so a Ctrl-C at the terminal does
//! not reach it) waits for its stdin to close, then stops the server (`-m immediate`) and
//! removes the directory. Dropping the cluster closes that pipe and waits; if the test
//! process dies instead, the kernel closes it. No cluster outlives its test.
//!
//! Skip rule (README, "Tests"): without PostgreSQL binaries, or when the cluster cannot
//! start, a test prints why and passes, except under `CI=true`, where it fails.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

/// The cluster superuser's password (a test value: nothing else uses it).
pub const SUPERUSER_PASSWORD: &str = "pg-test-superuser-7c41d0";
pub const SUPERUSER: &str = "postgres";
pub const HOST: &str = "127.0.0.1";

pub struct PgCluster {
    bin: PathBuf,
    /// The cluster's directory: `data/`, `server.log`, the password file and the socket.
    dir: PathBuf,
    port: u16,
    /// Run PostgreSQL's programs as the `postgres` OS user (the tests run as root).
    as_postgres: bool,
    guardian: Option<(Child, ChildStdin)>,
}

impl PgCluster {
    /// Starts a cluster for `test`, or prints why it cannot and returns `None` (the test
    /// then returns early). Under `CI=true` a cluster that cannot start fails the test.
    pub fn start_or_skip(test: &str) -> Option<PgCluster> {
        match PgCluster::start() {
            Ok(pg) => Some(pg),
            Err(why) => {
                skip(test, &why);
                None
            }
        }
    }

    pub fn start() -> Result<PgCluster, String> {
        let bin = find_bin()?;
        let as_postgres = running_as_root()?;
        let dir = tempfile::Builder::new()
            .prefix("vsr-pg-")
            .tempdir()
            .map_err(|e| format!("cannot make a temporary directory: {e}"))?
            // The guardian removes it, also when this process dies without unwinding.
            .keep();
        let mut pg = PgCluster {
            bin,
            dir,
            port: 0,
            as_postgres,
            guardian: None,
        };
        pg.guardian = Some(pg.spawn_guardian()?);
        pg.init()?;
        // The port is free when picked; another process may take it before the server
        // binds it, so try a few.
        let mut last = String::new();
        for _ in 0..5 {
            pg.port = free_port()?;
            match pg.start_server() {
                Ok(()) => return Ok(pg),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn host(&self) -> &'static str {
        HOST
    }

    /// `postgres://postgres:...@127.0.0.1:<port>/postgres?sslmode=disable`.
    pub fn superuser_url(&self) -> String {
        self.url(SUPERUSER, SUPERUSER_PASSWORD)
    }

    /// A URL for `user` with `password` (both must be URL-safe) to the `postgres` database.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@{HOST}:{}/postgres?sslmode=disable",
            self.port
        )
    }

    /// Everything the server logged so far (`log_statement = 'all'`: every statement).
    pub fn log_text(&self) -> String {
        std::fs::read(self.dir.join("server.log"))
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// A session as `user` with `password`, over TCP (where the scram-sha-256 rule applies).
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let mut config = Config::new();
        config
            .host(HOST)
            .port(self.port)
            .user(user)
            .password(password)
            .dbname("postgres")
            .ssl_mode(SslMode::Disable);
        let (client, connection) = config.connect(NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// Logs in as `user` with `password` and runs `SELECT 1`.
    pub async fn login(&self, user: &str, password: &str) -> Result<(), tokio_postgres::Error> {
        let client = self.connect(user, password).await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }

    pub async fn superuser(&self) -> Client {
        self.connect(SUPERUSER, SUPERUSER_PASSWORD)
            .await
            .unwrap_or_else(|e| panic!("superuser login: {e:?}"))
    }

    /// Runs `sql` (one or more statements) as the superuser.
    pub async fn exec(&self, sql: &str) {
        self.superuser()
            .await
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    /// Creates login roles without a password (they cannot log in until one is set).
    pub async fn create_login_roles(&self, names: &[&str]) {
        let sql: String = names
            .iter()
            .map(|n| format!("CREATE ROLE {} LOGIN;", quote_ident(n)))
            .collect();
        self.exec(&sql).await;
    }

    /// The roles (other than the superuser) that have a password, sorted.
    pub async fn roles_with_password(&self) -> Vec<String> {
        self.superuser()
            .await
            .query(
                "SELECT rolname::text FROM pg_authid WHERE rolpassword IS NOT NULL AND rolname <> $1 ORDER BY 1",
                &[&SUPERUSER],
            )
            .await
            .unwrap_or_else(|e| panic!("pg_authid: {e:?}"))
            .iter()
            .map(|row| row.get::<_, String>(0))
            .collect()
    }

    /// `SHOW server_version_num`, e.g. 150020.
    pub async fn version_num(&self) -> i32 {
        let row = self
            .superuser()
            .await
            .query_one("SELECT current_setting('server_version_num')::int", &[])
            .await
            .unwrap_or_else(|e| panic!("server_version_num: {e:?}"));
        row.get(0)
    }

    /// Turns TLS on: a throwaway CA and a server certificate for 127.0.0.1 and localhost
    /// (openssl), `ssl = on`, `log_connections = on` (the log then says which sessions used
    /// TLS), applied by a restart. Returns the CA certificate's path, for clients to trust.
    pub fn enable_tls(&self) -> Result<PathBuf, String> {
        let tls = self.dir.join("tls");
        std::fs::create_dir_all(&tls).map_err(|e| format!("{}: {e}", tls.display()))?;
        let ext = tls.join("server.ext");
        std::fs::write(
            &ext,
            "subjectAltName = IP:127.0.0.1, DNS:localhost\n\
             basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n",
        )
        .map_err(|e| format!("{}: {e}", ext.display()))?;
        let openssl = |args: &[&str]| {
            run(
                Command::new("openssl").current_dir(&tls).args(args),
                &format!("openssl {}", args.first().copied().unwrap_or_default()),
            )
        };
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        openssl(
            &[
                &["req", "-x509", "-days", "2", "-subj", "/CN=vsr test CA"][..],
                &ec,
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                    "-addext",
                    "keyUsage=critical,keyCertSign,cRLSign",
                ],
            ]
            .concat(),
        )?;
        openssl(
            &[
                &["req", "-subj", "/CN=127.0.0.1"][..],
                &ec,
                &["-keyout", "server.key", "-out", "server.csr"],
            ]
            .concat(),
        )?;
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ])?;
        let key = tls.join("server.key");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("{}: {e}", key.display()))?;
        if self.as_postgres {
            run(
                Command::new("chown").args(["-R", "postgres:"]).arg(&tls),
                "chown",
            )?;
        }
        let conf = format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\nlog_connections = on\n",
            tls.join("server.crt").display(),
            key.display()
        );
        let path = self.dir.join("data").join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| format!("cannot append to {}: {e}", path.display()))?;
        // A restart rather than a reload: when it returns, every new session gets TLS.
        self.stop();
        self.start_server()?;
        Ok(tls.join("ca.pem"))
    }

    /// Stops the server now (`-m immediate`), as a crash or an outage would.
    pub fn stop(&self) {
        let out = self
            .pg_command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.dir.join("data"))
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => panic!("pg_ctl stop: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => panic!("pg_ctl stop: {e}"),
        }
    }

    /// Starts the server again after [`PgCluster::stop`], on the same port.
    pub fn restart(&self) {
        self.start_server()
            .unwrap_or_else(|e| panic!("restarting PostgreSQL: {e}"));
    }

    /// A `Command` for one of PostgreSQL's programs, as the right OS user.
    fn pg_command(&self, program: &str) -> Command {
        let path = self.bin.join(program);
        let mut cmd = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        cmd.current_dir(&self.dir)
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        cmd
    }

    fn init(&self) -> Result<(), String> {
        let pwfile = self.dir.join("pwfile");
        std::fs::write(&pwfile, format!("{SUPERUSER_PASSWORD}\n"))
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        if self.as_postgres {
            run(
                Command::new("chown")
                    .args(["-R", "postgres:"])
                    .arg(&self.dir),
                "chown",
            )?;
        }
        run(
            self.pg_command("initdb")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args([
                    "--auth=scram-sha-256",
                    "-U",
                    SUPERUSER,
                    "--no-sync",
                    "--no-locale",
                    "-E",
                    "UTF8",
                ])
                .arg(format!("--pwfile={}", pwfile.display())),
            "initdb",
        )?;
        let conf = format!(
            "\n# vercel-secret-rotator tests\n\
             listen_addresses = '{HOST}'\n\
             unix_socket_directories = '{}'\n\
             log_statement = 'all'\n\
             logging_collector = off\n\
             password_encryption = 'scram-sha-256'\n\
             fsync = off\n\
             synchronous_commit = off\n\
             full_page_writes = off\n\
             shared_buffers = '16MB'\n\
             max_connections = 40\n",
            self.dir.display()
        );
        let path = self.dir.join("data").join("postgresql.conf");
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(conf.as_bytes()))
            .map_err(|e| format!("cannot append to {}: {e}", path.display()))
    }

    fn start_server(&self) -> Result<(), String> {
        let started = run(
            self.pg_command("pg_ctl")
                .args(["start", "-w", "-t", "60", "-D"])
                .arg(self.dir.join("data"))
                .arg("-l")
                .arg(self.dir.join("server.log"))
                .arg("-o")
                .arg(format!("-p {}", self.port))
                // The server inherits this group: a Ctrl-C at the terminal leaves it to the
                // guardian, which stops it cleanly.
                .process_group(0),
            "pg_ctl start",
        );
        started.map_err(|e| {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(15).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("{e}\nserver log (end):\n{}", tail.join("\n"))
        })
    }

    /// The process that stops the server and removes the directory once its stdin closes.
    fn spawn_guardian(&self) -> Result<(Child, ChildStdin), String> {
        let mut stop: Vec<String> = Vec::new();
        if self.as_postgres {
            stop.extend(["runuser", "-u", "postgres", "--"].map(str::to_owned));
        }
        stop.push(self.bin.join("pg_ctl").display().to_string());
        stop.extend(["stop", "-m", "immediate", "-D"].map(str::to_owned));
        stop.push(self.dir.join("data").display().to_string());
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(r#"cat >/dev/null; "$@" >/dev/null 2>&1; rm -rf "$VSR_PG_DIR""#)
            .arg("guardian")
            .args(&stop)
            .env("VSR_PG_DIR", &self.dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("cannot start the clean-up guardian: {e}"))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| "the guardian has no stdin".to_owned())?;
        Ok((child, stdin))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        match self.guardian.take() {
            Some((mut child, stdin)) => {
                drop(stdin);
                let _ = child.wait();
            }
            None => {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        }
    }
}

/// Says why `test` cannot run and lets it pass, except under `CI=true`, where it fails:
/// CI must never pass by skipping.
pub fn skip(test: &str, why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: PostgreSQL is required under CI=true: {why}");
    }
    eprintln!("skipping {test}: PostgreSQL is not usable here: {why}");
}

pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The directory holding `initdb` and `pg_ctl`.
fn find_bin() -> Result<PathBuf, String> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("VSR_TEST_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_tools(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "VSR_TEST_PG_BIN={} holds no initdb and pg_ctl",
                dir.display()
            ))
        };
    }
    // The newest installed major version.
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    found.sort();
    if let Some((_, bin)) = found.pop() {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|dir| has_tools(dir));
    from_pg_config.ok_or_else(|| {
        "no initdb/pg_ctl found (looked in VSR_TEST_PG_BIN, /usr/lib/postgresql/*/bin, pg_config --bindir)"
            .to_owned()
    })
}

/// Whether this process runs as root (then PostgreSQL must run as `postgres`).
fn running_as_root() -> Result<bool, String> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("cannot run `id -u`: {e}"))?;
    let root = String::from_utf8_lossy(&out.stdout).trim() == "0";
    if root {
        let has_user = Command::new("id")
            .args(["-u", "postgres"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !has_user {
            return Err(
                "running as root, and there is no `postgres` OS user to run PostgreSQL as"
                    .to_owned(),
            );
        }
    }
    Ok(root)
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind((HOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}
