//! (placeholder so the crate compiles: the http provider work replaces this whole file)
use async_trait::async_trait;

use super::{Credential, Provider, ProviderError, Target};
use crate::config::HttpConfig;

pub struct HttpProvider {
    _config: HttpConfig,
}

impl HttpProvider {
    pub fn new(config: HttpConfig) -> Self {
        HttpProvider { _config: config }
    }
}

#[async_trait]
impl Provider for HttpProvider {
    fn kind(&self) -> &'static str {
        "http"
    }

    async fn create(
        &self,
        _t: &Target,
        _r: &str,
        _p: Option<&str>,
    ) -> Result<Credential, ProviderError> {
        Err(ProviderError::Random(
            "the http provider is being written".into(),
        ))
    }
}
