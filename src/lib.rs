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
//! - [`credentials`]: reading every secret file and systemd credential (tokens, admin URLs,
//!   bearer tokens) into a `SecretString`: owner-only files, `$CREDENTIALS_DIRECTORY`, and for
//!   `check` on the host the files the unit's `LoadCredential=` lines name ([`credentials::host`]).
//! - [`token`]: each installation's Vercel token, into a `SecretString`: read from a file, an
//!   environment variable or a systemd credential, or asked of a token command and cached
//!   until near its end ([`token::cache`], keyed by installation id).
//! - [`discovery`]: where discovered installations come from (`installations-dir` or
//!   `installations-command`), read afresh at each pass; a failure is never an empty set.
//! - [`schedule`]: cron (crontab semantics) and `every` schedules in a time zone, DST-correct.
//! - [`resource`]: what is known of one resource (ids, and for a discovered one its name,
//!   product, status and metadata); not secret, imports nothing of the crate.
//! - [`template`]: `{field}` and `{resource.*}` templates: a provider's fields and the
//!   resource's variables into secret values, variables into provider-table strings.
//! - [`secret`]: secret fields, fingerprints, scrubbing of text that may echo a value.
//! - [`providers`]: the `Provider` trait and one file per kind (`random`, `command`, `http`,
//!   `postgres`, `mysql`, `redis`), the protocol `command` and `http` share, and the dry-run
//!   wrapper.
//! - [`child`]: running an external program for one call, hardened (pipes only, cleared
//!   environment, timeout, parent-death signal, scrubbed stderr): shared by the `command`
//!   provider, `random`'s `apply` and the `token-command` token source.
//! - [`vercel`]: the Vercel API client (update resource secrets, dashboard notification).
//! - [`net`]: how every HTTP client is built: User-Agent, no redirects, proxies only over TLS
//!   and never for loopback.
//! - [`rotation`]: the rotation protocol in one place: [`rotation::machine`] (every
//!   transition as a pure function), [`rotation::executor`] (performs its actions: provider,
//!   pusher, store; one turn per key under a lock), [`rotation::push`] (the `Pusher` trait:
//!   Vercel, or a dry run's preview), [`rotation::batch`] (many turns within a bound).
//! - [`jobs`]: which (policy, resource) keys a run tends, with their providers: the config's
//!   listed resources, what the [`jobs::Fleet`] (installations and their last listings)
//!   holds that policies select, and the records neither names; shared by `run --once`, the
//!   daemon and `status`.
//! - [`discovery`]: installations and resources found at run time: where installations come
//!   from (a directory of token files or a command), listing each one's resources, the fleet
//!   a run starts from (config plus persisted inventory), and the daemon's discovery task.
//! - [`once`]: `run --once`: select, rotate concurrently, report; hand the request to the
//!   daemon when it holds the state.
//! - [`daemon`]: `run`: the scheduler loop, signals, reload, the control socket server,
//!   applying what discovery finds (`daemon/fleet.rs`) and answering Vercel's rotate requests
//!   (`daemon/vercel.rs`).
//! - [`summary`]: the `run --once` summary table and dry-run previews.
//! - [`exit`]: the exit statuses.
//! - [`state`]: the durable state: the record as data ([`state::record`]), the bounded
//!   rotation history ([`state::history`]), the store trait, the factory that opens the
//!   configured store; [`state::file`] is the local store (snapshot + group-committed
//!   journal, history file, lock), [`state::memory`] an in-memory one. It imports nothing of
//!   the protocol above it.
//! - [`control`]: the daemon's owner-only unix socket for `run --once` hand-offs.
//! - [`server`]: the `[server]` HTTP listener: Vercel's rotate requests (token verified
//!   against Vercel's keys, idempotency keys kept in the state), handed to the daemon over a
//!   channel; `/metrics` and `/healthz` from the daemon's probe.
//! - [`status`]: `status`: the state as a table or JSON.
//! - [`history`]: `history`: the state's rotation history as a table or JSON.
//! - [`table`]: plain-text tables (the `run --once` summary, `status`).
//! - [`clock`]: "now", from one place, so tests can run the scheduler on tokio's paused clock.
//! - [`fault`]: crash injection for the recovery tests, compiled into debug builds only.
//! - [`systemd`]: sd_notify(3) messages to systemd (READY, RELOADING, STOPPING, STATUS, WATCHDOG).
//! - [`logging`]: tracing set-up (text or JSON to stderr, or journald under systemd; level
//!   from `RUST_LOG`).
//! - [`events`]: the rotation events' kinds, their stable `message_id`s and how one is logged.
//! - [`metrics`]: the Prometheus metrics and their text encoding (the daemon owns one).
//! - [`error`]: the transient/permanent classification every retry decision reads.
//! - [`duration`]: durations for people, written as the config writes them (`7d`, `24h`).

// A panic in the daemon loses the rotations in flight; errors are values here. Tests may unwrap.
#![cfg_attr(not(test), deny(clippy::unwrap_used, clippy::expect_used))]

pub mod child;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod credentials;
pub mod daemon;
pub mod discovery;
pub mod duration;
pub mod error;
pub mod events;
pub mod exit;
pub mod fault;
pub mod history;
pub mod intern;
pub mod jobs;
pub mod logging;
pub mod metrics;
pub mod net;
pub mod once;
pub mod providers;
pub mod resource;
pub mod rotation;
pub mod schedule;
pub mod secret;
pub mod server;
pub mod state;
pub mod status;
pub mod summary;
pub mod systemd;
pub mod table;
pub mod template;
pub mod token;
pub mod vercel;
