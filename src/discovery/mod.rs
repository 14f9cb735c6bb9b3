//! Discovery: the installations and resources found at run time (DESIGN, "Fleets").
//!
//! - [`installations`]: where discovered installations come from (a directory of token
//!   files, or a command).
//! - [`list`]: listing one installation's resources with its token ([`Lister`]).
//! - [`fleet`]: the fleet a run starts from (config plus persisted inventory), what is
//!   persisted of an installation, and `run --once`'s single pass.
//! - [`watch`]: the daemon's discovery task: reads again and lists, spread over `every`.
//!
//! It sits beside the rotation protocol, below the daemon and `run --once`: it feeds the
//! [`crate::jobs::Fleet`] that jobs are made from, and imports nothing above it.

pub mod fleet;
pub mod installations;
pub mod list;
pub mod watch;

pub use installations::{FindError, Found, Seen, find};
pub use list::{ListError, Lister, VercelLister};
pub use watch::Update;
