//! (placeholder so the crate compiles; the providers work replaces this file)
use async_trait::async_trait;
use crate::config::RandomConfig;
use super::{Credential, Provider, ProviderError, Target};
pub struct RandomProvider;
impl RandomProvider { pub fn new(_c: RandomConfig) -> Self { RandomProvider } }
#[async_trait]
impl Provider for RandomProvider {
    fn kind(&self) -> &'static str { "random" }
    async fn create(&self, _t: &Target, _r: &str, _p: Option<&str>) -> Result<Credential, ProviderError> {
        Err(ProviderError::Random("placeholder".into()))
    }
}
