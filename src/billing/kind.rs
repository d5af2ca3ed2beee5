//! What a delivered business message *is* (docs/billing-rules.md §4, §7.2): a template of a category, or a
//! non-template (free-form) message. The category eras decide by it; the 2022 era does
//! not need it. It comes from the BSP's send log, or failing that from Meta's
//! `pricing.category` on a status of the same message; unknown is a value of its own
//! (`Option::None` at the call sites), never a guess.

use serde::Serialize;

/// Template categories as the send log and Meta spell them. `authentication-international`
/// is an authentication template: whether it is *billed* as international is decided by
/// docs/billing-rules.md §4 rule 3 alone (settled readings, docs/billing-rules.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TemplateCategory {
    Marketing,
    /// Marketing Messages API: billed as marketing in the conversation eras.
    MarketingLite,
    Utility,
    Authentication,
}

/// The kind of a business message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageKind {
    Template(TemplateCategory),
    NonTemplate,
}

impl TemplateCategory {
    pub const ALL: [TemplateCategory; 4] = [
        TemplateCategory::Marketing,
        TemplateCategory::MarketingLite,
        TemplateCategory::Utility,
        TemplateCategory::Authentication,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TemplateCategory::Marketing => "marketing",
            TemplateCategory::MarketingLite => "marketing_lite",
            TemplateCategory::Utility => "utility",
            TemplateCategory::Authentication => "authentication",
        }
    }

    /// A send-log template category, in any case; `authentication-international` and
    /// `authentication_international` are authentication. Unknown names give `None`.
    pub fn parse(s: &str) -> Option<TemplateCategory> {
        let l = s.trim().to_ascii_lowercase().replace('-', "_");
        Some(match l.as_str() {
            "marketing" => TemplateCategory::Marketing,
            "marketing_lite" => TemplateCategory::MarketingLite,
            "utility" => TemplateCategory::Utility,
            "authentication" | "authentication_international" => TemplateCategory::Authentication,
            _ => return None,
        })
    }
}

impl MessageKind {
    pub const ALL: [MessageKind; 5] = [
        MessageKind::Template(TemplateCategory::Marketing),
        MessageKind::Template(TemplateCategory::MarketingLite),
        MessageKind::Template(TemplateCategory::Utility),
        MessageKind::Template(TemplateCategory::Authentication),
        MessageKind::NonTemplate,
    ];

    /// The spelling on the events topic and in dead letters: a category name, or
    /// `non_template`.
    pub fn as_str(self) -> &'static str {
        match self {
            MessageKind::Template(c) => c.as_str(),
            MessageKind::NonTemplate => "non_template",
        }
    }

    pub fn parse(s: &str) -> Option<MessageKind> {
        if s == "non_template" {
            return Some(MessageKind::NonTemplate);
        }
        TemplateCategory::parse(s).map(MessageKind::Template)
    }

    /// Stable one-byte code for the state store (0 is "unknown").
    pub fn code(self) -> u8 {
        match self {
            MessageKind::Template(TemplateCategory::Marketing) => 1,
            MessageKind::Template(TemplateCategory::MarketingLite) => 2,
            MessageKind::Template(TemplateCategory::Utility) => 3,
            MessageKind::Template(TemplateCategory::Authentication) => 4,
            MessageKind::NonTemplate => 5,
        }
    }

    pub fn from_code(c: u8) -> Option<MessageKind> {
        MessageKind::ALL.into_iter().find(|k| k.code() == c)
    }

    /// The fallback source (docs/billing-rules.md §6): Meta's `pricing.category` of a status. `service`
    /// is a non-template message; `referral_conversion` (and anything else) says nothing
    /// of the kind.
    pub fn from_pricing_category(s: &str) -> Option<MessageKind> {
        let l = s.trim().to_ascii_lowercase().replace('-', "_");
        if l == "service" {
            return Some(MessageKind::NonTemplate);
        }
        TemplateCategory::parse(&l).map(MessageKind::Template)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings() {
        // docs/billing-rules.md §6: any case; both authentication-international spellings are authentication.
        assert_eq!(TemplateCategory::parse("UTILITY"), Some(TemplateCategory::Utility));
        assert_eq!(
            TemplateCategory::parse("AUTHENTICATION-INTERNATIONAL"),
            Some(TemplateCategory::Authentication)
        );
        assert_eq!(
            TemplateCategory::parse("authentication_international"),
            Some(TemplateCategory::Authentication)
        );
        assert_eq!(
            TemplateCategory::parse("Marketing_Lite"),
            Some(TemplateCategory::MarketingLite)
        );
        assert_eq!(TemplateCategory::parse("service"), None);
        // Meta's pricing.category: service is a non-template; referral_conversion is unknown.
        assert_eq!(
            MessageKind::from_pricing_category("service"),
            Some(MessageKind::NonTemplate)
        );
        assert_eq!(MessageKind::from_pricing_category("referral_conversion"), None);
        assert_eq!(MessageKind::from_pricing_category("business_initiated"), None);
        assert_eq!(
            MessageKind::from_pricing_category("marketing_lite"),
            Some(MessageKind::Template(TemplateCategory::MarketingLite))
        );
        for k in MessageKind::ALL {
            assert_eq!(MessageKind::from_code(k.code()), Some(k));
            assert_eq!(MessageKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(MessageKind::from_code(0), None);
    }
}
