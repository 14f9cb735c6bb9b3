//! The daemon's control socket: how `run --once` on a host where the daemon runs hands its
//! request to the daemon, so "rotate now" works the same with or without the service.
//!
//! A unix stream socket `control.sock` in the state directory (which is 0700, and the socket
//! itself 0600: only the daemon's user can talk to it). One request per connection, one JSON
//! line each way:
//!
//! ```text
//! -> {"policies": ["orders-db", "cache/store_b1"]}
//! <- {"exit": 0, "output": "POLICY  RESOURCE ...\n"}
//! ```
//!
//! The output is the same summary `run --once` prints; the exit status is the one it would
//! have had. Neither side ever carries a secret value.
//!
//! The daemon's side is [`Server`], which holds up when the socket is reached or flooded:
//! - Only the daemon's own user and root are served (`SO_PEERCRED`), should the file modes
//!   ever let someone else reach the socket; anyone else is closed on and logged.
//! - At most [`MAX_CLIENTS`] connections at once; more wait in the socket's backlog.
//! - A failing `accept` (out of file descriptors: the pending connection stays queued, so it
//!   fails again at once) is retried after a doubling pause, logged once per step, not in a
//!   loop that would spin at full CPU and flood the log.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::{info, warn};

/// The socket's file name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// A request or answer larger than this is refused: they are a few lines of text.
const MAX_LINE: usize = 1024 * 1024;
/// Connections served at once. Each is one `run --once` waiting for its rotations; a person
/// starts those, so 16 is plenty, and it bounds the descriptors and tasks a flood can take.
pub const MAX_CLIENTS: usize = 16;
/// The pause after the first failed `accept`; it doubles with each failure in a row.
const ACCEPT_PAUSE_FIRST: Duration = Duration::from_millis(100);
/// The longest pause between two `accept` attempts: how late the socket may serve again once
/// the cause (descriptors in use) is gone.
const ACCEPT_PAUSE_MAX: Duration = Duration::from_secs(5);
/// At the longest pause, one log line per this many failures (once a minute).
const ACCEPT_FAILURES_PER_LOG_AT_MAX: u32 = 12;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// `NAME` or `NAME/RESOURCE_ID`; empty: every policy.
    pub policies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    pub exit: u8,
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("cannot reach the daemon's control socket {path}: {source}", path = .path.display())]
    Connect {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("talking to the daemon over {path} failed: {reason}", path = .path.display())]
    Exchange { path: PathBuf, reason: String },
}

pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join(SOCKET_NAME)
}

/// Sends a request to the daemon and waits for its answer (as long as the rotations take).
pub async fn request(state_dir: &Path, request: &Request) -> Result<Answer, ControlError> {
    let path = socket_path(state_dir);
    let stream = UnixStream::connect(&path)
        .await
        .map_err(|source| ControlError::Connect {
            path: path.clone(),
            source,
        })?;
    let exchange = |reason: String| ControlError::Exchange {
        path: path.clone(),
        reason,
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(|e| exchange(e.to_string()))?;
    line.push(b'\n');
    write
        .write_all(&line)
        .await
        .map_err(|e| exchange(e.to_string()))?;
    write
        .shutdown()
        .await
        .map_err(|e| exchange(e.to_string()))?;
    let answer = read_line(read)
        .await
        .map_err(exchange)?
        .ok_or_else(|| exchange("the daemon closed the connection without answering".into()))?;
    serde_json::from_str(&answer).map_err(|e| exchange(format!("unreadable answer: {e}")))
}

/// The daemon's end of the socket: hands out the connections to serve.
pub struct Server {
    listener: UnixListener,
    slots: Arc<Semaphore>,
    pause: AcceptPause,
    /// The daemon's effective uid: peers with it (or root's) are served.
    uid: u32,
}

/// One accepted connection from an allowed peer. It holds one of the [`MAX_CLIENTS`] slots
/// until dropped.
pub struct Connection {
    stream: UnixStream,
    _slot: OwnedSemaphorePermit,
}

impl Deref for Connection {
    type Target = UnixStream;
    fn deref(&self) -> &UnixStream {
        &self.stream
    }
}

impl DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut UnixStream {
        &mut self.stream
    }
}

impl Server {
    /// Binds the socket (replacing a stale one left by a crash: the caller holds the state
    /// lock, so no live daemon owns it) with owner-only permissions.
    pub fn bind(state_dir: &Path) -> std::io::Result<Server> {
        use std::os::unix::fs::PermissionsExt;
        let path = socket_path(state_dir);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixListener::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        Ok(Server {
            listener,
            slots: Arc::new(Semaphore::new(MAX_CLIENTS)),
            pause: AcceptPause::default(),
            uid: rustix::process::geteuid().as_raw(),
        })
    }

    /// The next connection to serve: waits for a free slot, then for an allowed peer.
    ///
    /// Cancel-safe (the daemon awaits it in a `select!`): a pause after a failed `accept` is
    /// kept here and finished by the next call, and nothing is accepted then dropped.
    pub async fn next(&mut self) -> Connection {
        loop {
            // The semaphore is never closed, so this never fails.
            let Ok(slot) = self.slots.clone().acquire_owned().await else {
                return std::future::pending().await;
            };
            let listener = &self.listener;
            let (stream, _) = self.pause.retry(|| listener.accept()).await;
            if self.allowed(&stream) {
                return Connection {
                    stream,
                    _slot: slot,
                };
            }
        }
    }

    /// Whether the peer is the daemon's user or root; logs a refusal.
    fn allowed(&self, stream: &UnixStream) -> bool {
        match stream.peer_cred() {
            Ok(peer) if peer.uid() == self.uid || peer.uid() == 0 => true,
            Ok(peer) => {
                let pid = peer
                    .pid()
                    .map_or_else(|| "unknown".to_owned(), |p| p.to_string());
                warn!(
                    "control socket: refused a connection from uid {} (pid {pid}): only the daemon's user (uid {}) and root may use it",
                    peer.uid(),
                    self.uid
                );
                false
            }
            Err(e) => {
                warn!("control socket: refused a connection whose peer is unknown: {e}");
                false
            }
        }
    }
}

/// The pause between failed `accept` attempts: from [`ACCEPT_PAUSE_FIRST`], doubling up to
/// [`ACCEPT_PAUSE_MAX`], back to none after a success.
#[derive(Debug, Default)]
struct AcceptPause {
    /// Failures in a row.
    failures: u32,
    /// The current pause; zero before the first failure.
    pause: Duration,
    /// When the next attempt may be made, if the last one failed.
    retry_at: Option<Instant>,
}

impl AcceptPause {
    /// Calls `accept` until it succeeds, pausing after each failure.
    async fn retry<T, F, Fut>(&mut self, mut accept: F) -> T
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = std::io::Result<T>>,
    {
        loop {
            if let Some(at) = self.retry_at {
                tokio::time::sleep_until(at).await;
                self.retry_at = None;
            }
            match accept().await {
                Ok(accepted) => {
                    if self.failures > 0 {
                        info!(failures = self.failures, "control socket: accepting again");
                    }
                    *self = AcceptPause::default();
                    return accepted;
                }
                Err(e) => self.failed(&e),
            }
        }
    }

    fn failed(&mut self, e: &std::io::Error) {
        self.failures = self.failures.saturating_add(1);
        let longer = (self.pause * 2).clamp(ACCEPT_PAUSE_FIRST, ACCEPT_PAUSE_MAX);
        // A log line for each new pause length, then one a minute at the longest.
        let log =
            longer > self.pause || self.failures.is_multiple_of(ACCEPT_FAILURES_PER_LOG_AT_MAX);
        self.pause = longer;
        if log {
            warn!(
                failures = self.failures,
                "control socket: accept failed: {e}; next attempt in {}",
                crate::duration::format(self.pause)
            );
        }
        self.retry_at = Some(Instant::now() + self.pause);
    }
}

/// Reads one request from a connection; `Err` with a reason to send back on bad input.
pub async fn read_request(stream: &mut UnixStream) -> Result<Request, String> {
    let (read, _) = stream.split();
    let line = tokio::time::timeout(Duration::from_secs(10), read_line(read))
        .await
        .map_err(|_| "no request within 10 s".to_owned())??
        .ok_or_else(|| "empty request".to_owned())?;
    serde_json::from_str(&line).map_err(|e| format!("not a request: {e}"))
}

pub async fn write_answer(stream: &mut UnixStream, answer: &Answer) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(answer).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await?;
    stream.shutdown().await
}

async fn read_line(read: impl tokio::io::AsyncRead + Unpin) -> Result<Option<String>, String> {
    let mut reader = BufReader::new(read.take(MAX_LINE as u64 + 1));
    let mut line = String::new();
    let n = reader
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    if n == 0 {
        return Ok(None);
    }
    if line.len() > MAX_LINE {
        return Err(format!("a line longer than {MAX_LINE} bytes"));
    }
    Ok(Some(line))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Log lines written while the returned guard lives (this thread only: the tests run on
    /// a current-thread runtime).
    fn capture_logs() -> (Arc<Mutex<Vec<u8>>>, tracing::subscriber::DefaultGuard) {
        #[derive(Clone)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buffer.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        (buffer, tracing::subscriber::set_default(subscriber))
    }

    fn lines(buffer: &Mutex<Vec<u8>>) -> Vec<String> {
        String::from_utf8_lossy(&buffer.lock().unwrap())
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// An `accept` that counts its calls and fails with EMFILE before `healthy_from`. It also
    /// succeeds after 1,000 calls, so a retry loop that never pauses ends (and fails the
    /// test) instead of spinning forever on the paused clock.
    fn accept_failing_until(
        healthy_from: Instant,
        calls: &AtomicU32,
    ) -> impl FnMut() -> std::future::Ready<std::io::Result<&'static str>> {
        move || {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            std::future::ready(if Instant::now() >= healthy_from {
                Ok("connection")
            } else if n > 1000 {
                Ok("spun")
            } else {
                Err(std::io::Error::from_raw_os_error(24))
            })
        }
    }

    /// Out of descriptors, `accept` fails at once every time. Ten simulated minutes of that
    /// take a bounded number of attempts and log lines (the old loop made millions of both),
    /// and the first success is taken at most one longest pause after the cause is gone.
    #[tokio::test(start_paused = true)]
    async fn failing_accepts_back_off_and_log_once_per_step() {
        let (logs, _guard) = capture_logs();
        let attempts = AtomicU32::new(0);
        let healthy_from = Instant::now() + Duration::from_secs(600);
        let mut pause = AcceptPause::default();
        let start = Instant::now();
        let accepted = pause
            .retry(accept_failing_until(healthy_from, &attempts))
            .await;
        assert_eq!(accepted, "connection");
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(600)
                && waited <= Duration::from_secs(600) + ACCEPT_PAUSE_MAX,
            "served {waited:?} after the start"
        );

        // 0.1 + 0.2 + ... + 3.2 s (6.3 s), then one attempt every 5 s: about 126.
        let attempts = attempts.load(Ordering::Relaxed);
        assert!((110..=130).contains(&attempts), "{attempts} attempts");
        let lines = lines(&logs);
        let failures = lines.iter().filter(|l| l.contains("accept failed")).count();
        // One per pause length (100ms ... 5s: 7), then one a minute at 5 s (about 10).
        assert!(
            (7..=20).contains(&failures),
            "{failures} lines:\n{lines:#?}"
        );
        assert!(
            lines[0].contains("Too many open files") && lines[0].contains("next attempt in 100ms"),
            "{lines:#?}"
        );
        assert!(
            lines.last().is_some_and(|l| l.contains("accepting again")),
            "{lines:#?}"
        );

        // After a success the pause starts over at the shortest.
        let before = Instant::now();
        let calls = AtomicU32::new(0);
        pause
            .retry(accept_failing_until(
                before + Duration::from_millis(1),
                &calls,
            ))
            .await;
        assert_eq!(before.elapsed(), ACCEPT_PAUSE_FIRST);
    }

    /// The daemon's loop drops `Server::next` whenever something else wakes it: the pause
    /// carries over to the next call instead of starting a new attempt at once.
    #[tokio::test(start_paused = true)]
    async fn a_pause_survives_a_cancelled_wait() {
        let attempts = AtomicU32::new(0);
        let mut accept = accept_failing_until(Instant::now() + Duration::from_secs(60), &attempts);
        let mut pause = AcceptPause::default();
        // Three failures (at 0, 0.1 and 0.3 s), then a 400 ms pause, cut short at 0.5 s.
        let cut = tokio::time::timeout(Duration::from_millis(500), pause.retry(&mut accept)).await;
        assert!(cut.is_err());
        assert_eq!(attempts.load(Ordering::Relaxed), 3);
        // Called again at once: the next attempt still waits for 0.7 s.
        let cut = tokio::time::timeout(Duration::from_millis(199), pause.retry(&mut accept)).await;
        assert!(cut.is_err());
        assert_eq!(
            attempts.load(Ordering::Relaxed),
            3,
            "retried before the pause ended"
        );
        let cut = tokio::time::timeout(Duration::from_millis(2), pause.retry(&mut accept)).await;
        assert!(cut.is_err());
        assert_eq!(attempts.load(Ordering::Relaxed), 4);
    }

    /// [`MAX_CLIENTS`] connections at once; the next waits (in the socket's backlog) until
    /// one of them is dropped, then is served.
    #[tokio::test(start_paused = true)]
    async fn at_most_max_clients_connections_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut server = Server::bind(dir.path()).unwrap();
        let path = socket_path(dir.path());
        let mut clients = Vec::new();
        for _ in 0..=MAX_CLIENTS {
            clients.push(UnixStream::connect(&path).await.unwrap());
        }
        let mut served = Vec::new();
        for _ in 0..MAX_CLIENTS {
            served.push(server.next().await);
        }
        // Paused clock: this hour passes at once unless a connection is handed out.
        let waiting = tokio::time::timeout(Duration::from_secs(3600), server.next()).await;
        assert!(waiting.is_err(), "a 17th connection was served");

        drop(served.pop());
        let mut last = server.next().await;
        // It is the 17th client: what it sends arrives.
        clients[MAX_CLIENTS]
            .write_all(b"{\"policies\": []}\n")
            .await
            .unwrap();
        let request = read_request(&mut last).await.unwrap();
        assert!(request.policies.is_empty());
    }
}
