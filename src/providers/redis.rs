//! (placeholder so the crate compiles: the redis provider work replaces this whole file)
use async_trait::async_trait;

use super::{Credential, Provider, ProviderError, Target};
use crate::config::RedisConfig;

pub struct RedisProvider {
    _config: RedisConfig,
}

impl RedisProvider {
    pub fn new(config: RedisConfig) -> Self {
        RedisProvider { _config: config }
    }
}

#[async_trait]
impl Provider for RedisProvider {
    fn kind(&self) -> &'static str {
        "redis"
    }

    async fn create(
        &self,
        _t: &Target,
        _r: &str,
        _p: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        Err(ProviderError::Random(
            "the redis provider is being written".into(),
        ))
    }
}
