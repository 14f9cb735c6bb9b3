//! Whether an error is worth retrying: the one question every retry loop asks.
//!
//! Each module keeps its own `thiserror` enum (config, provider, Vercel, template); each
//! implements [`Classify`], and retry decisions read only [`Persistence`], never message text.
//! [`describe_chain`] is how every module words an error from a library with its causes.

/// What trying again can do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persistence {
    /// May succeed later unchanged: a 5xx, a 429, a timeout, a backend briefly down.
    Transient,
    /// Will fail the same way until someone changes the config or the remote side: a 401,
    /// a 404, a template naming a field the provider never yields.
    Permanent,
}

/// An error and its sources, joined with `: `, each thing said once (some layers repeat their
/// source in their own message). For messages that name the failing layer's cause.
pub fn describe_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(error);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    if parts.is_empty() {
        "unknown error".to_owned()
    } else {
        parts.join(": ")
    }
}

/// Implemented by every error that can end a rotation.
pub trait Classify {
    fn persistence(&self) -> Persistence;

    fn is_transient(&self) -> bool {
        self.persistence() == Persistence::Transient
    }
}
