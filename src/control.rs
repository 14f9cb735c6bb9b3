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

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

/// The socket's file name in the state directory.
pub const SOCKET_NAME: &str = "control.sock";
/// A request or answer larger than this is refused: they are a few lines of text.
const MAX_LINE: usize = 1024 * 1024;

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

/// Binds the socket (replacing a stale one left by a crash: the caller holds the state
/// lock, so no live daemon owns it) with owner-only permissions.
pub fn bind(state_dir: &Path) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(state_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
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
