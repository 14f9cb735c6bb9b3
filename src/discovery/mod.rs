//! Discovery (DESIGN, "Fleets"): the installations found at run time, beside the configured
//! tables.
//!
//! [`installations`] reads where they come from, `installations-dir` (one
//! `<integrationConfigurationId>.token` file each) or `installations-command`, into a list of
//! ids with their token sources. A failure is an error, never an empty list: the caller keeps
//! the set it last knew. What each installation's resources are comes from Vercel's listing
//! (`vercel`), and what was last listed is kept in the state (`state::inventory`).
//!
//! It sits beside the token sources: it imports the config's types and the child runner, and
//! nothing above them.

pub mod installations;

pub use installations::{FindError, Found, Seen, find};
