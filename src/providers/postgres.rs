//! (placeholder so the crate compiles: the postgres provider work replaces this whole file)
use async_trait::async_trait;

use super::{Credential, Provider, ProviderError, Target};
use crate::config::DatabaseConfig;

pub struct PostgresProvider {
    _config: DatabaseConfig,
}

impl PostgresProvider {
    pub fn new(config: DatabaseConfig) -> Self {
        PostgresProvider { _config: config }
    }
}

#[async_trait]
impl Provider for PostgresProvider {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn create(
        &self,
        _t: &Target,
        _r: &str,
        _p: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        Err(ProviderError::Random(
            "the postgres provider is being written".into(),
        ))
    }
}
