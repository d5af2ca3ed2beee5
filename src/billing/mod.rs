//! Pure billing rules (docs/billing-rules.md §2–§6): no I/O, no clock. Time comes from events.

pub mod era;
pub mod ids;
pub mod kind;
pub mod market;
pub mod message;
pub mod money;
pub mod origin;
pub mod policy;
pub mod rates;
pub mod statement;
pub mod tiers;
pub mod time;
pub mod window;

pub use era::{EraCalendar, EraId};
pub use kind::{MessageKind, TemplateCategory};
pub use market::{Country, CountryResolver, MarketMap};
pub use message::{MessageCategory, MessagePricing, PricingType};
pub use origin::Origin;
pub use rates::RateCard;
pub use tiers::VolumeTiers;
pub use time::{Ts, DAY as DAY_SECS};
