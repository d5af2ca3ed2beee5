//! Shared support for integration tests that need real components (a Tansu broker).
//! Each test binary uses only part of it, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod broker;
