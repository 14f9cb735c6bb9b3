//! Service notifications to systemd (`Type=notify`): readiness, reload, stop, status, watchdog.
//!
//! The daemon tells systemd `READY=1` once the config is loaded and the state recovered,
//! `RELOADING=1`/`READY=1` around a SIGHUP reload, `STOPPING=1` on shutdown, a one-line `STATUS=`,
//! and `WATCHDOG=1` every half `WatchdogSec=` when systemd asks for it. Outside systemd
//! (`NOTIFY_SOCKET` unset: a shell, `run --once`, tests) every call is a no-op.
//!
//! A notification that cannot be sent is logged at debug and otherwise ignored: systemd is an
//! observer here, and no rotation should fail because its socket is briefly unreachable.
//!
//! The `sd-notify` crate gives the message format, `MONOTONIC_USEC` and the `WATCHDOG_USEC`/
//! `WATCHDOG_PID` check, but its `notify` only sends to `$NOTIFY_SOCKET` (tests would have to
//! set the variable, which is `unsafe` and racy across test threads) and passes the address
//! straight to `connect`, so an abstract socket (`@name`, which sd_notify(3) allows) fails. The
//! datagram send is therefore ours: one `UnixDatagram` per message, as libsystemd does.
//!
//! The environment is left as it is (no `*_and_unset_env`): provider programs are started with a
//! cleared environment, so they never see `NOTIFY_SOCKET` anyway.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use sd_notify::NotifyState;
use tokio::task::JoinHandle;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

/// Bounds a send: systemd reads its socket promptly, but a full queue must not stall the
/// runtime thread (or the watchdog task) for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(2);

/// Where notifications go: the two address forms of `$NOTIFY_SOCKET` that sd_notify(3) defines
/// for services.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NotifyAddress {
    /// A socket file, e.g. `/run/systemd/notify`.
    Path(PathBuf),
    /// A Linux abstract socket: the name after the leading `@`.
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Abstract(Vec<u8>),
}

impl NotifyAddress {
    /// Parses `$NOTIFY_SOCKET`; anything but an absolute path or `@name` is refused, as
    /// libsystemd refuses it.
    fn parse(value: &OsStr) -> Option<Self> {
        match value.as_bytes().first()? {
            b'/' => Some(Self::Path(PathBuf::from(value))),
            #[cfg(any(target_os = "linux", target_os = "android"))]
            b'@' => Some(Self::Abstract(value.as_bytes()[1..].to_vec())),
            _ => None,
        }
    }

    fn connect(&self) -> io::Result<UnixDatagram> {
        let socket = UnixDatagram::unbound()?;
        match self {
            Self::Path(path) => socket.connect(path)?,
            #[cfg(any(target_os = "linux", target_os = "android"))]
            Self::Abstract(name) => {
                #[cfg(target_os = "android")]
                use std::os::android::net::SocketAddrExt;
                #[cfg(target_os = "linux")]
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                socket.connect_addr(&addr)?;
            }
        }
        Ok(socket)
    }
}

/// Sends sd_notify(3) messages to systemd; a no-op when not running under `Type=notify`.
///
/// Cheap to clone: it holds only the address, and opens a socket per message.
#[derive(Clone, Debug, Default)]
pub struct Notifier {
    /// `None` outside systemd: every method then does nothing.
    address: Option<NotifyAddress>,
    /// systemd's watchdog timeout (`WatchdogSec=`); `None` when the watchdog is off.
    watchdog: Option<Duration>,
}

impl Notifier {
    /// The notifier the daemon uses: `$NOTIFY_SOCKET` and `$WATCHDOG_USEC` (honoured only when
    /// `$WATCHDOG_PID`, if set, is this process). No socket means a no-op notifier.
    pub fn from_env() -> Self {
        let Some(value) = std::env::var_os("NOTIFY_SOCKET").filter(|v| !v.is_empty()) else {
            return Self::disabled();
        };
        let notifier =
            Self::with_socket(&value).with_watchdog_timeout(sd_notify::watchdog_enabled());
        tracing::debug!(
            socket = %value.to_string_lossy(),
            // "none" rather than Debug's `None`/`Some(60s)`: log fields are read by people.
            watchdog = %notifier.watchdog.map_or_else(|| "none".to_owned(), crate::duration::format),
            enabled = notifier.is_enabled(),
            "systemd notifications"
        );
        notifier
    }

    /// A notifier that sends to `address` (a socket path, or `@name` for an abstract socket),
    /// without a watchdog. Tests use it in place of setting `NOTIFY_SOCKET`. An address of
    /// another form is logged at warn and gives a no-op notifier: under systemd that would
    /// leave the start waiting for READY=1 until `TimeoutStartSec=`, so it deserves a trace.
    pub fn with_socket(address: impl AsRef<OsStr>) -> Self {
        let address = address.as_ref();
        let parsed = NotifyAddress::parse(address);
        if parsed.is_none() {
            tracing::warn!(
                socket = %address.to_string_lossy(),
                "NOTIFY_SOCKET is neither an absolute path nor @name; systemd notifications are off"
            );
        }
        Self {
            address: parsed,
            watchdog: None,
        }
    }

    /// A notifier that sends nothing (outside systemd).
    pub fn disabled() -> Self {
        Self::default()
    }

    /// Sets the watchdog timeout (what `WATCHDOG_USEC` says); `None` or zero turns it off, as
    /// libsystemd treats `WATCHDOG_USEC=0` as invalid.
    pub fn with_watchdog_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.watchdog = timeout.filter(|t| !t.is_zero());
        self
    }

    /// Whether notifications go anywhere.
    pub fn is_enabled(&self) -> bool {
        self.address.is_some()
    }

    /// The watchdog timeout systemd set, if notifications are on and the watchdog too.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.address.as_ref().and(self.watchdog)
    }

    /// `READY=1`: start-up is done (config loaded, state recovered), or a reload is.
    pub fn ready(&self) {
        self.send(&[NotifyState::Ready]);
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=`: systemd 253 and later want the time with it (for
    /// `Type=notify-reload` a reload without it fails); older ones ignore the extra field.
    /// Follow with [`ready`](Self::ready) once the reload is done, whether or not it applied.
    pub fn reloading(&self) {
        if self.address.is_none() {
            return;
        }
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(error) => {
                tracing::debug!(%error, "cannot read CLOCK_MONOTONIC; sending RELOADING=1 alone");
                self.send(&[NotifyState::Reloading]);
            }
        }
    }

    /// `STOPPING=1`: shutdown has begun (in-flight rotations are draining).
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping]);
    }

    /// `STATUS=`: one line for `systemctl status`. Line breaks and other control characters
    /// become spaces, since a newline would start another (unintended) field.
    pub fn status(&self, line: &str) {
        if self.address.is_none() {
            return;
        }
        let line: String = line
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self.send(&[NotifyState::Status(&line)]);
    }

    /// Sends `WATCHDOG=1` every half the watchdog timeout (sd_watchdog_enabled(3) advises
    /// half) until `token` is cancelled, from a task on the current Tokio runtime. `None` when
    /// the watchdog is off or there is no runtime. The pings prove the runtime still runs tasks;
    /// they do not prove the scheduler loop is not stuck.
    pub fn spawn_watchdog(&self, token: CancellationToken) -> Option<JoinHandle<()>> {
        let period = self.watchdog_timeout()? / 2;
        if period.is_zero() {
            // Only a sub-microsecond timeout from `with_watchdog_timeout` gets here (systemd's
            // are whole µs), but a zero interval would panic in Tokio.
            return None;
        }
        let runtime = match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime,
            Err(error) => {
                tracing::debug!(%error, "no Tokio runtime: systemd watchdog pings are off");
                return None;
            }
        };
        let notifier = self.clone();
        Some(runtime.spawn(async move {
            let mut ticks = tokio::time::interval(period);
            // After a stall, ping once and keep the period, rather than a burst.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    biased;
                    () = token.cancelled() => break,
                    _ = ticks.tick() => notifier.send(&[NotifyState::Watchdog]),
                }
            }
        }))
    }

    /// Sends one datagram with one `KEY=value` line per state; errors are logged at debug.
    fn send(&self, states: &[NotifyState<'_>]) {
        let Some(address) = &self.address else {
            return;
        };
        let mut message = String::new();
        for state in states {
            message.push_str(&state.to_string());
            message.push('\n');
        }
        if let Err(error) = send_datagram(address, message.as_bytes()) {
            tracing::debug!(
                %error,
                message = %message.trim_end().replace('\n', " "),
                "systemd notification not sent"
            );
        }
    }
}

fn send_datagram(address: &NotifyAddress, message: &[u8]) -> io::Result<()> {
    let socket = address.connect()?;
    socket.set_write_timeout(Some(SEND_TIMEOUT))?;
    let sent = socket.send(message)?;
    if sent != message.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("sent {sent} of {} bytes", message.len()),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for systemd's notify socket, bound in a temporary directory.
    struct FakeSystemd {
        socket: UnixDatagram,
        _dir: tempfile::TempDir,
        path: PathBuf,
    }

    impl FakeSystemd {
        fn bind() -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("notify");
            let socket = UnixDatagram::bind(&path).unwrap();
            // A missing message fails the test instead of hanging it.
            socket
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            Self {
                socket,
                _dir: dir,
                path,
            }
        }

        fn notifier(&self) -> Notifier {
            Notifier::with_socket(&self.path)
        }

        fn recv(&self) -> String {
            recv_text(&self.socket)
        }

        fn assert_nothing_queued(&self) {
            self.socket.set_nonblocking(true).unwrap();
            let mut buf = [0u8; 256];
            let err = self.socket.recv(&mut buf).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::WouldBlock);
            self.socket.set_nonblocking(false).unwrap();
        }
    }

    fn recv_text(socket: &UnixDatagram) -> String {
        let mut buf = [0u8; 4096];
        let len = socket.recv(&mut buf).unwrap();
        String::from_utf8(buf[..len].to_vec()).unwrap()
    }

    fn monotonic_now() -> i128 {
        match NotifyState::monotonic_usec_now().unwrap() {
            NotifyState::MonotonicUsec(usec) => usec,
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn ready_status_stopping_arrive_as_single_lines() {
        let systemd = FakeSystemd::bind();
        let notifier = systemd.notifier();
        assert!(notifier.is_enabled());

        notifier.ready();
        assert_eq!(systemd.recv(), "READY=1\n");
        notifier.status("12 resources, next due 2025-01-05T03:00:00Z, 0 failing");
        assert_eq!(
            systemd.recv(),
            "STATUS=12 resources, next due 2025-01-05T03:00:00Z, 0 failing\n"
        );
        notifier.status("two\nlines\r\tand a tab");
        assert_eq!(systemd.recv(), "STATUS=two lines  and a tab\n");
        notifier.stopping();
        assert_eq!(systemd.recv(), "STOPPING=1\n");
        systemd.assert_nothing_queued();
    }

    #[test]
    fn reloading_carries_the_monotonic_time() {
        let systemd = FakeSystemd::bind();
        let notifier = systemd.notifier();

        let before = monotonic_now();
        notifier.reloading();
        let after = monotonic_now();

        let message = systemd.recv();
        let usec = message
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .and_then(|rest| rest.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        let usec: i128 = usec.parse().unwrap();
        assert!(
            before <= usec && usec <= after,
            "{before} <= {usec} <= {after}"
        );

        notifier.ready();
        assert_eq!(systemd.recv(), "READY=1\n");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn abstract_socket_address_is_supported() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("vercel-secret-rotator-test-{}", uuid::Uuid::new_v4());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();

        let notifier = Notifier::with_socket(format!("@{name}"));
        assert!(notifier.is_enabled());
        notifier.ready();
        assert_eq!(recv_text(&socket), "READY=1\n");
    }

    #[test]
    fn addresses_other_than_absolute_path_or_abstract_are_refused() {
        for address in ["", "relative/notify", "vsock:2:1234"] {
            let notifier = Notifier::with_socket(address);
            assert!(!notifier.is_enabled(), "{address:?}");
        }
        assert!(Notifier::with_socket("/run/systemd/notify").is_enabled());
    }

    #[tokio::test]
    async fn disabled_notifier_does_nothing() {
        let notifier = Notifier::disabled().with_watchdog_timeout(Some(Duration::from_secs(1)));
        assert!(!notifier.is_enabled());
        assert_eq!(notifier.watchdog_timeout(), None);
        notifier.ready();
        notifier.reloading();
        notifier.status("idle");
        notifier.stopping();
        assert!(notifier.spawn_watchdog(CancellationToken::new()).is_none());
    }

    #[test]
    fn send_failure_is_not_an_error() {
        let dir = tempfile::tempdir().unwrap();
        // Nothing listens there: every send fails, and is only logged.
        let notifier = Notifier::with_socket(dir.path().join("absent"));
        notifier.ready();
        notifier.reloading();
        notifier.status("still fine");
        notifier.stopping();
    }

    #[tokio::test]
    async fn no_watchdog_task_without_a_timeout() {
        let systemd = FakeSystemd::bind();
        for timeout in [None, Some(Duration::ZERO), Some(Duration::from_nanos(1))] {
            let notifier = systemd.notifier().with_watchdog_timeout(timeout);
            assert!(
                notifier.spawn_watchdog(CancellationToken::new()).is_none(),
                "{timeout:?}"
            );
        }
        systemd.assert_nothing_queued();
    }

    #[test]
    fn no_watchdog_task_outside_a_runtime() {
        let systemd = FakeSystemd::bind();
        let notifier = systemd
            .notifier()
            .with_watchdog_timeout(Some(Duration::from_secs(1)));
        assert!(notifier.spawn_watchdog(CancellationToken::new()).is_none());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watchdog_pings_every_half_timeout_until_cancelled() {
        let systemd = FakeSystemd::bind();
        let notifier = systemd
            .notifier()
            .with_watchdog_timeout(Some(Duration::from_millis(40)));
        assert_eq!(notifier.watchdog_timeout(), Some(Duration::from_millis(40)));

        let token = CancellationToken::new();
        let started = std::time::Instant::now();
        let task = notifier.spawn_watchdog(token.clone()).unwrap();
        let systemd = tokio::task::spawn_blocking(move || {
            for _ in 0..3 {
                assert_eq!(systemd.recv(), "WATCHDOG=1\n");
            }
            systemd
        })
        .await
        .unwrap();
        // The first ping is immediate, then one per 20 ms: three take at least 40 ms.
        assert!(started.elapsed() >= Duration::from_millis(40));

        token.cancel();
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .unwrap()
            .unwrap();
        // Whatever was sent before the cancel is a ping, and nothing else.
        systemd.socket.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        while let Ok(len) = systemd.socket.recv(&mut buf) {
            assert_eq!(&buf[..len], b"WATCHDOG=1\n");
        }
    }
}
