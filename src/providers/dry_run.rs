//! The dry-run provider: stands in for a policy's real provider under `run --once --dry-run`.
//!
//! A dry run does everything but side effects, and a provider's `create` *is* a side effect
//! (a role's password changes, a program runs, `apply` tells a backend). So instead of an
//! `if dry_run` in every kind, the caller swaps the real provider for this one (STYLE:
//! cross-cutting behaviour is a wrapper): it keeps the real kind's name for messages and its
//! field names, and makes nothing live. Each field's value is the placeholder `<name>`, so a
//! rendered template shows its shape (`postgres://<username>:<password>@db/orders`) with every
//! value redacted. `verify` and `retire` do nothing and say so ([`Outcome::Unsupported`]).

use async_trait::async_trait;

use super::{Credential, Outcome, Provider, ProviderError, Target};
use crate::secret::{Fields, SecretString};

/// The handle every dry-run credential carries; nothing by that name exists anywhere.
pub const DRY_RUN_HANDLE: &str = "dry-run";

#[derive(Debug, Clone)]
pub struct DryRunProvider {
    /// The kind of the provider a real run would use, for messages.
    kind: &'static str,
    /// The fields that provider yields, each answered with a placeholder.
    field_names: Vec<String>,
    /// Whether that provider alternates (see [`Provider::alternates`]): a dry run is held
    /// back when a real run would be.
    alternates: bool,
}

impl DryRunProvider {
    /// A stand-in for a provider of `kind` that does not alternate; prefer
    /// [`standing_in_for`](Self::standing_in_for), which asks the real provider.
    pub fn new(kind: &'static str, field_names: Vec<String>) -> Self {
        DryRunProvider {
            kind,
            field_names,
            alternates: false,
        }
    }

    /// A stand-in for `real`: its kind and whether it alternates, and placeholders for
    /// `field_names`. `real` is only asked, never called.
    pub fn standing_in_for(real: &dyn Provider, field_names: Vec<String>) -> Self {
        DryRunProvider {
            kind: real.kind(),
            field_names,
            alternates: real.alternates(),
        }
    }
}

#[async_trait]
impl Provider for DryRunProvider {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn alternates(&self) -> bool {
        self.alternates
    }

    async fn create(
        &self,
        _target: &Target,
        _rotation_id: &str,
        _previous_handle: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        let fields: Fields = self
            .field_names
            .iter()
            .map(|name| (name.clone(), SecretString::from(format!("<{name}>"))))
            .collect();
        Ok(Credential {
            handle: DRY_RUN_HANDLE.to_owned(),
            fields,
            supersedes: None,
        })
    }

    async fn verify(
        &self,
        _target: &Target,
        _rotation_id: &str,
        _credential: &Credential,
    ) -> Result<Outcome, ProviderError> {
        Ok(Outcome::Unsupported)
    }

    async fn retire(&self, _target: &Target, _handle: &str) -> Result<Outcome, ProviderError> {
        Ok(Outcome::Unsupported)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SecretSource;
    use crate::secret::ExposeSecret;

    fn target() -> Target {
        Target {
            policy: "orders-db".into(),
            installation: "acme".into(),
            resource: "store_abc".into(),
            installation_id: "icfg_test".into(),
            resource_info: None,
        }
    }

    #[tokio::test]
    async fn create_answers_placeholders_named_after_each_field() {
        let provider = DryRunProvider::new("postgres", vec!["username".into(), "password".into()]);
        let credential = provider
            .create(&target(), "rot-1", Some("old"))
            .await
            .unwrap();
        assert_eq!(credential.handle, "dry-run");
        let fields: Vec<(&str, &str)> = credential
            .fields
            .iter()
            .map(|(k, v)| (k.as_str(), v.expose_secret()))
            .collect();
        assert_eq!(
            fields,
            [("password", "<password>"), ("username", "<username>")]
        );
        assert_eq!(provider.kind(), "postgres");
    }

    #[test]
    fn a_stand_in_alternates_as_the_real_provider_does() {
        use crate::config::{DatabaseConfig, ProviderConfig, RandomConfig};
        let database = DatabaseConfig {
            admin_url: SecretSource::File("/etc/admin.url".into()),
            users: ["a".into(), "b".into()],
            host: None,
            port: None,
            database: None,
            timeout: std::time::Duration::from_secs(5),
        };
        let random = ProviderConfig::Random(RandomConfig {
            length: 40,
            charset: crate::config::Charset::Alphanumeric,
            apply: None,
            apply_timeout: std::time::Duration::from_secs(5),
        });
        for (config, alternates) in [
            (ProviderConfig::Postgres(database.clone()), true),
            (ProviderConfig::Mysql(database), true),
            (random, false),
        ] {
            let real = crate::providers::build(&config);
            let stand_in = DryRunProvider::standing_in_for(real.as_ref(), vec!["password".into()]);
            assert_eq!(stand_in.kind(), config.kind());
            assert_eq!(stand_in.alternates(), alternates, "{}", config.kind());
            assert_eq!(real.alternates(), alternates, "{}", config.kind());
        }
    }

    #[tokio::test]
    async fn verify_and_retire_do_nothing() {
        let provider = DryRunProvider::new("command", vec!["token".into()]);
        let credential = provider.create(&target(), "rot-1", None).await.unwrap();
        assert_eq!(
            provider
                .verify(&target(), "rot-1", &credential)
                .await
                .unwrap(),
            Outcome::Unsupported
        );
        assert_eq!(
            provider.retire(&target(), "old").await.unwrap(),
            Outcome::Unsupported
        );
    }
}
