//! Shared by the provider tests: a target, a credential, and assertions on provider errors.

use vercel_secret_rotator::error::Classify;
use vercel_secret_rotator::providers::{Credential, ProviderError, Target};
use vercel_secret_rotator::secret::{Fields, SecretString};

/// The resource every `command` and `http` provider test rotates.
pub fn target() -> Target {
    Target {
        policy: "orders-db".into(),
        installation: "acme".into(),
        resource: "store_abc".into(),
        installation_id: "icfg_test".into(),
        resource_info: None,
    }
}

/// A credential with `handle` and these (non-secret test) field values.
pub fn credential(handle: &str, fields: &[(&str, &str)]) -> Credential {
    let fields: Fields = fields
        .iter()
        .map(|(k, v)| (k.to_string(), SecretString::from(v.to_string())))
        .collect();
    Credential {
        handle: handle.into(),
        fields,
        supersedes: None,
    }
}

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
