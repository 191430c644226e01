//! placeholder
pub mod assets;
