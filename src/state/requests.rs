//! Vercel's rotate requests answered lately, by `Idempotency-Key`: a request Vercel sends
//! again (the same key for the same resource) gets the answer the first one got and starts no
//! second rotation, after a restart too. Data only: ids, a key Vercel chose, a time and a
//! status; never a token or a value. Which to keep, and for how long, is the server's call.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One answered request that carried an `Idempotency-Key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnsweredRequest {
    pub installation_id: String,
    pub resource_id: String,
    /// The `Idempotency-Key` header as Vercel sent it.
    pub key: String,
    pub answered_at: DateTime<Utc>,
    /// The HTTP status it was answered with.
    pub status: u16,
}
