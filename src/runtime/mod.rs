//! Drivers: they read inputs, call the pipeline and persist its effects.

pub mod kafka;
pub mod replay;
