//! (being written: placeholder type so the crate compiles)
#[derive(Debug, Clone)]
pub struct Template;
