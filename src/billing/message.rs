//! The vocabulary of the per-message eras (docs/billing-rules.md §5, §10): what a delivered
//! business message is billed as (`category`, Meta's `pricing.category` values) and on what
//! terms (`pricing_type`, Meta's `pricing.type` values).
//!
//! The decision is split where its state lives: the windows stage knows the pair (free
//! entry point windows, the customer service window) and the message's kind, so it decides
//! everything but the counters; the ledger owns the monthly counters (the business number's
//! service free tier, the portfolio's volume tiers) and finishes the price. `MessagePricing`
//! is what passes between them.

use super::rates::RateColumn;

/// Meta's `pricing.category` of a message charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageCategory {
    Marketing,
    MarketingLite,
    Utility,
    Authentication,
    AuthenticationInternational,
    Service,
    /// A message inside a free entry point window (its kind does not matter).
    ReferralConversion,
}

impl MessageCategory {
    pub const ALL: [MessageCategory; 7] = [
        MessageCategory::Marketing,
        MessageCategory::MarketingLite,
        MessageCategory::Utility,
        MessageCategory::Authentication,
        MessageCategory::AuthenticationInternational,
        MessageCategory::Service,
        MessageCategory::ReferralConversion,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MessageCategory::Marketing => "marketing",
            MessageCategory::MarketingLite => "marketing_lite",
            MessageCategory::Utility => "utility",
            MessageCategory::Authentication => "authentication",
            MessageCategory::AuthenticationInternational => "authentication_international",
            MessageCategory::Service => "service",
            MessageCategory::ReferralConversion => "referral_conversion",
        }
    }

    pub fn parse(s: &str) -> Option<MessageCategory> {
        MessageCategory::ALL.into_iter().find(|c| c.as_str() == s)
    }

    /// The card column that prices a charged message of this category (`marketing_lite`
    /// falls back to `marketing` inside the card); `None`: never charged.
    pub fn rate_column(self) -> Option<RateColumn> {
        Some(match self {
            MessageCategory::Marketing => RateColumn::Marketing,
            MessageCategory::MarketingLite => RateColumn::MarketingLite,
            MessageCategory::Utility => RateColumn::Utility,
            MessageCategory::Authentication => RateColumn::Authentication,
            MessageCategory::AuthenticationInternational => RateColumn::AuthenticationInternational,
            MessageCategory::Service => RateColumn::Service,
            MessageCategory::ReferralConversion => return None,
        })
    }

    /// The volume-tier counter a charged message of this category counts on
    /// (docs/billing-rules.md §5 rule 5): utility, or authentication for both
    /// authentication categories; `None` for untiered categories.
    pub fn tier_counter(self) -> Option<TierCounter> {
        match self {
            MessageCategory::Utility => Some(TierCounter::Utility),
            MessageCategory::Authentication | MessageCategory::AuthenticationInternational => {
                Some(TierCounter::Authentication)
            }
            _ => None,
        }
    }
}

/// The two volume-tier counters of a (portfolio, market, month).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TierCounter {
    Utility,
    Authentication,
}

impl TierCounter {
    pub fn as_str(self) -> &'static str {
        match self {
            TierCounter::Utility => "utility",
            TierCounter::Authentication => "authentication",
        }
    }
}

/// Meta's `pricing.type` of a message charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PricingType {
    Regular,
    FreeCustomerService,
    FreeEntryPoint,
}

impl PricingType {
    pub const ALL: [PricingType; 3] = [
        PricingType::Regular,
        PricingType::FreeCustomerService,
        PricingType::FreeEntryPoint,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PricingType::Regular => "regular",
            PricingType::FreeCustomerService => "free_customer_service",
            PricingType::FreeEntryPoint => "free_entry_point",
        }
    }

    pub fn parse(s: &str) -> Option<PricingType> {
        PricingType::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The windows stage's part of a message's price; the ledger finishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessagePricing {
    /// Free whatever the counters say (`free_entry_point`, or `free_customer_service` in
    /// `pmp-2025-07`).
    Free(PricingType),
    /// `regular`, at the category's rate (volume tiers where the category has bands).
    Charged,
    /// `pmp-2026-10` service: free while the business number's monthly service free tier
    /// lasts, then `regular` at the card's `service` rate.
    ServiceFreeTierThenCharged,
}

impl MessagePricing {
    pub fn as_str(self) -> &'static str {
        match self {
            MessagePricing::Free(PricingType::FreeEntryPoint) => "free_entry_point",
            MessagePricing::Free(PricingType::FreeCustomerService) => "free_customer_service",
            MessagePricing::Free(PricingType::Regular) | MessagePricing::Charged => "regular",
            MessagePricing::ServiceFreeTierThenCharged => "service_free_tier",
        }
    }

    pub fn parse(s: &str) -> Option<MessagePricing> {
        Some(match s {
            "free_entry_point" => MessagePricing::Free(PricingType::FreeEntryPoint),
            "free_customer_service" => MessagePricing::Free(PricingType::FreeCustomerService),
            "regular" => MessagePricing::Charged,
            "service_free_tier" => MessagePricing::ServiceFreeTierThenCharged,
            _ => return None,
        })
    }
}

/// What a policy of a message era decided at a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageVerdict {
    pub category: MessageCategory,
    pub pricing: MessagePricing,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for c in MessageCategory::ALL {
            assert_eq!(MessageCategory::parse(c.as_str()), Some(c));
        }
        for t in PricingType::ALL {
            assert_eq!(PricingType::parse(t.as_str()), Some(t));
        }
        for p in [
            MessagePricing::Free(PricingType::FreeEntryPoint),
            MessagePricing::Free(PricingType::FreeCustomerService),
            MessagePricing::Charged,
            MessagePricing::ServiceFreeTierThenCharged,
        ] {
            assert_eq!(MessagePricing::parse(p.as_str()), Some(p));
        }
    }

    #[test]
    fn both_authentication_categories_share_one_counter() {
        // docs/billing-rules.md §5 rule 5.
        assert_eq!(
            MessageCategory::AuthenticationInternational.tier_counter(),
            MessageCategory::Authentication.tier_counter()
        );
        assert_eq!(MessageCategory::Marketing.tier_counter(), None);
        assert_eq!(MessageCategory::Service.tier_counter(), None);
    }
}
