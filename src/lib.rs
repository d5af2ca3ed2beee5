//! wabill: meters WhatsApp Business Platform conversations from Meta webhooks.
//!
//! The crate is split so that the billing rules can be tested without any I/O:
//! `billing` and `pipeline` read no clock and touch no file or socket; `ingest`
//! turns Meta's JSON into normalised events; `state` persists the engine's state
//! (RocksDB); `runtime` drives it all from files (replay) or Kafka.

pub mod billing;
pub mod codec;
pub mod config;
pub mod ingest;
pub mod ops;
pub mod pipeline;
pub mod runtime;
pub mod sim;
pub mod state;
