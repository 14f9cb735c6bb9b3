//! Shared test helpers.
pub mod cli;
pub mod fake_vercel;
pub mod issuer;
pub mod pg_cluster;
pub mod provider_helpers;
pub mod services;
