//! Exit statuses, as DESIGN fixes them, in one place.
//!
//! 2 is for what a restart cannot fix (a config or command-line error; a run refused before it
//! did anything): systemd's `RestartPreventExitStatus=2` then leaves the service stopped for a
//! human. Everything that may clear by itself (I/O, a full disk, a store that stopped writing)
//! is 1, so systemd restarts the daemon.

/// All good.
pub const OK: u8 = 0;
/// One or more rotations failed, or the process could not go on (transient).
pub const ROTATION_FAILED: u8 = 1;
/// The config or the command line is invalid: nothing was done.
pub const INVALID: u8 = 2;
