//! (placeholder so the crate compiles: the mysql provider work replaces this whole file)
use async_trait::async_trait;

use super::{Credential, Provider, ProviderError, Target};
use crate::config::DatabaseConfig;

pub struct MysqlProvider {
    _config: DatabaseConfig,
}

impl MysqlProvider {
    pub fn new(config: DatabaseConfig) -> Self {
        MysqlProvider { _config: config }
    }
}

#[async_trait]
impl Provider for MysqlProvider {
    fn kind(&self) -> &'static str {
        "mysql"
    }

    async fn create(
        &self,
        _t: &Target,
        _r: &str,
        _p: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        Err(ProviderError::Random(
            "the mysql provider is being written".into(),
        ))
    }
}
