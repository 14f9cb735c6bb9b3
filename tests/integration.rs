//! The integration tests: one binary, one module per area, helpers in `common/`.
//!
//! They drive the real entry points: the library's provider and client types, and the built
//! binary (`CARGO_BIN_EXE_vercel-secret-rotator`) against the fake Vercel in `common/`.

mod common;

mod check_online;
mod command_line;
mod config_fixtures;
mod config_fuzz;
mod control;
mod credentials;
mod daemon;
mod daemon_clock;
mod fleet;
mod fleet_more;
mod http_provider;
mod hygiene;
mod mysql;
mod observe;
mod once;
mod postgres;
mod process_hardening;
mod providers;
mod redis;
mod resilience;
mod server;
mod state_file;
mod state_owner;
mod templates;
mod token_command;
mod vercel_answers;
mod vercel_client;
