//! Wire formats. JSON lines for `wabill replay` now; Avro (schemas/*.avsc) for Kafka.

pub mod avro;
pub mod json;
pub mod registry;
