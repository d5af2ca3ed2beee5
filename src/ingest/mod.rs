//! Input adapters: Meta webhook JSON (Cloud API and On-Premises) → normalised events.

pub mod event;
mod fast;
pub mod meta;

pub use event::{EventKind, MessageEvent, MetaPricing, Referral, StatusKind};
pub use meta::{BadEvent, Normaliser, OnPremises, PayloadError, PayloadStats};
