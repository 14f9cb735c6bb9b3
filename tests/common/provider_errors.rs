//! Assertions on provider errors, shared by the database and cache provider tests.

use vercel_secret_rotator::error::Classify;
use vercel_secret_rotator::providers::ProviderError;

/// `err` is a `kind` backend error, transient or not as said (both in the variant and in its
/// classification), and its message contains `contains`.
pub fn assert_backend(err: &ProviderError, kind: &str, transient: bool, contains: &str) {
    match err {
        ProviderError::Backend {
            kind: k,
            transient: t,
            ..
        } if *k == kind => {
            assert_eq!(*t, transient, "{err}");
            assert_eq!(err.is_transient(), transient, "{err}");
        }
        other => panic!("not a {kind} Backend error: {other:?}"),
    }
    assert!(err.to_string().contains(contains), "{err}");
}

/// Neither the message nor the debug form of `err` holds any of `secrets`.
pub fn assert_no_secret(err: &ProviderError, secrets: &[&str]) {
    let text = format!("{err} {err:?}");
    for s in secrets {
        assert!(!text.contains(s), "a secret in: {text}");
    }
}
