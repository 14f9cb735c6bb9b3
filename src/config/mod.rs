//! The config file: reading, validating, and the checked types running code uses.
//!
//! Two steps, as in ripgrep: `raw` deserializes with serde (`deny_unknown_fields`, kebab-case),
//! so syntax errors and unknown keys carry file, line and column; `validate` turns that into
//! the [`Config`] of `types`, naming the key of every semantic error. Running code never sees
//! an unchecked config.

mod types;

pub use types::*;
