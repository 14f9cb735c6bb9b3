//! Whether an error is worth retrying: the one question every retry loop asks.
//!
//! Each module keeps its own `thiserror` enum (config, provider, Vercel, template); each
//! implements [`Classify`], and retry decisions read only [`Persistence`], never message text.

/// What trying again can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// May succeed later unchanged: a 5xx, a 429, a timeout, a backend briefly down.
    Transient,
    /// Will fail the same way until someone changes the config or the remote side: a 401,
    /// a 404, a template naming a field the provider never yields.
    Permanent,
}

/// Implemented by every error that can end a rotation.
pub trait Classify {
    fn persistence(&self) -> Persistence;

    fn is_transient(&self) -> bool {
        self.persistence() == Persistence::Transient
    }
}
