//! Shared test helpers.
pub mod cli;
pub mod fake_vercel;
