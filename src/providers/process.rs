//! The providers' side of the child-process runner (`crate::child`), which the `command`
//! provider and the `random` provider's `apply` share with the `token-command` token source:
//! a credential's fields are the values to scrub from a program's stderr, and the runner's
//! errors are provider errors with the same meaning.

pub(crate) use super::protocol::{Exposed, SecretBuf};
pub(crate) use crate::child::{Invocation, Reply, Required, SecretValues, resolve_program};

use super::{Credential, ProviderError};
use crate::child::ChildError;
use crate::secret::SecretString;

impl SecretValues for Credential {
    fn secret_values(&self) -> Vec<&SecretString> {
        self.fields.values().collect()
    }
}

impl From<ChildError> for ProviderError {
    fn from(error: ChildError) -> Self {
        match error {
            ChildError::Spawn { program, source } => ProviderError::Spawn { program, source },
            ChildError::Timeout {
                program,
                action,
                after,
            } => ProviderError::Timeout {
                program,
                action,
                after,
            },
            ChildError::Failed {
                program,
                action,
                status,
                transient,
                stderr,
            } => ProviderError::Failed {
                program,
                action,
                status,
                transient,
                stderr,
            },
            ChildError::BadOutput {
                program,
                action,
                reason,
            } => ProviderError::BadOutput {
                program,
                action,
                reason,
            },
            ChildError::Io {
                program,
                action,
                source,
            } => ProviderError::Io {
                program,
                action,
                source,
            },
        }
    }
}
