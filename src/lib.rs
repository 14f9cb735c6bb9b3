//! vercel-secret-rotator: rotates the credentials behind Vercel Marketplace resources.
//!
//! For each (policy, resource) it gets a new credential from a provider, renders the policy's
//! secret templates over it, pushes them to Vercel with `partial: true`, reminds the user to
//! redeploy, and retires the old credential after the grace period. `../shared/DESIGN.md` (in
//! the repository's sibling folder) fixes the interface; this crate is its implementation.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap) and what each command does; `main.rs` only wires it.
//! - [`config`]: the TOML config, read in two steps: raw serde structs, then validation into
//!   checked types that the rest of the crate uses.
//! - [`token`]: reading each installation's Vercel token from a file, an environment variable
//!   or a systemd credential, into a `SecretString`.
//! - [`schedule`]: cron (crontab semantics) and `every` schedules in a time zone, DST-correct.
//! - [`template`]: `{field}` templates that turn a provider's fields into secret values.
//! - [`secret`]: secret fields, fingerprints, scrubbing of text that may echo a value.
//! - [`providers`]: the `Provider` trait and one file per kind (`random`, `command`, `http`,
//!   `postgres`, `mysql`, `redis`), the protocol `command` and `http` share, and the dry-run
//!   wrapper.
//! - [`vercel`]: the Vercel API client (update resource secrets, dashboard notification).
//! - [`net`]: how every HTTP client is built: User-Agent, no redirects, proxies only over TLS
//!   and never for loopback.
//! - [`rotation`]: the rotation steps of DESIGN as a type, and one rotation walked through
//!   them (with its retirement).
//! - [`once`]: `run --once`: pick targets, rotate them concurrently, print the summary; hand
//!   the request to the daemon when it holds the state.
//! - [`daemon`]: `run`: the scheduler loop, signals, reload, the control socket server.
//! - [`engine`]: what is due for a (policy, resource), doing it, keeping its record true;
//!   shared by `run --once` and the daemon. Backoff and the per-key locks live here.
//! - [`state`]: the durable state behind a small trait; [`state::file`] is the local store
//!   (snapshot + group-committed journal, lock).
//! - [`control`]: the daemon's owner-only unix socket for `run --once` hand-offs.
//! - [`status`]: `status`: the state as a table or JSON.
//! - [`table`]: plain-text tables (the `run --once` summary, `status`).
//! - [`clock`]: "now", from one place, so tests can run the scheduler on tokio's paused clock.
//! - [`fault`]: crash injection for the recovery tests, compiled into debug builds only.
//! - [`systemd`]: sd_notify(3) messages to systemd (READY, RELOADING, STOPPING, STATUS, WATCHDOG).
//! - [`logging`]: tracing set-up (text or JSON to stderr, level from `RUST_LOG`).
//! - [`error`]: the transient/permanent classification every retry decision reads.

// A panic in the daemon loses the rotations in flight; errors are values here. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod engine;
pub mod error;
pub mod fault;
pub mod logging;
pub mod net;
pub mod once;
pub mod providers;
pub mod rotation;
pub mod schedule;
pub mod secret;
pub mod state;
pub mod status;
pub mod systemd;
pub mod table;
pub mod template;
pub mod token;
pub mod vercel;
