//! Conversation origins (docs/billing-rules.md §10 `origin`) and how Meta's spellings map onto them.

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    UserInitiated,
    BusinessInitiated,
    FreeEntryPoint,
    Marketing,
    Utility,
    Authentication,
    /// docs/billing-rules.md §4 rule 3: an authentication template to a user abroad, where configured.
    AuthenticationInternational,
    Service,
}

impl Origin {
    pub const ALL: [Origin; 8] = [
        Origin::UserInitiated,
        Origin::BusinessInitiated,
        Origin::FreeEntryPoint,
        Origin::Marketing,
        Origin::Utility,
        Origin::Authentication,
        Origin::Service,
        Origin::AuthenticationInternational,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Origin::UserInitiated => "user_initiated",
            Origin::BusinessInitiated => "business_initiated",
            Origin::FreeEntryPoint => "free_entry_point",
            Origin::Marketing => "marketing",
            Origin::Utility => "utility",
            Origin::Authentication => "authentication",
            Origin::AuthenticationInternational => "authentication_international",
            Origin::Service => "service",
        }
    }

    /// Stable one-byte code for the state store and Avro-free encodings.
    pub fn code(self) -> u8 {
        match self {
            Origin::UserInitiated => 1,
            Origin::BusinessInitiated => 2,
            Origin::FreeEntryPoint => 3,
            Origin::Marketing => 4,
            Origin::Utility => 5,
            Origin::Authentication => 6,
            Origin::Service => 7,
            Origin::AuthenticationInternational => 8,
        }
    }

    pub fn from_code(c: u8) -> Option<Origin> {
        Origin::ALL.into_iter().find(|o| o.code() == c)
    }

    /// Normalises the spellings seen in Meta payloads and third-party exports
    /// (reference §7.4 item 9): `customer_initiated`, `business_initated`,
    /// `referral_conversion`, `FREE_ENTRY`, ... Unknown spellings give `None`.
    pub fn normalise(s: &str) -> Option<Origin> {
        // Meta's own spellings are already normal: recognised without building a string
        // (this runs for nearly every status).
        Self::spelling(s).or_else(|| Self::spelling(&s.trim().to_ascii_lowercase().replace('-', "_")))
    }

    fn spelling(l: &str) -> Option<Origin> {
        Some(match l {
            "user_initiated" | "customer_initiated" | "uic" => Origin::UserInitiated,
            "business_initiated" | "business_initated" | "bic" => Origin::BusinessInitiated,
            "free_entry_point" | "free_entry" | "referral_conversion" | "fep" => Origin::FreeEntryPoint,
            "marketing" | "marketing_lite" => Origin::Marketing,
            "utility" => Origin::Utility,
            "authentication" => Origin::Authentication,
            "authentication_international" => Origin::AuthenticationInternational,
            "service" => Origin::Service,
            _ => return None,
        })
    }
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_normalise() {
        assert_eq!(Origin::normalise("customer_initiated"), Some(Origin::UserInitiated));
        assert_eq!(Origin::normalise("business_initated"), Some(Origin::BusinessInitiated));
        assert_eq!(Origin::normalise("FREE_ENTRY"), Some(Origin::FreeEntryPoint));
        assert_eq!(Origin::normalise("referral_conversion"), Some(Origin::FreeEntryPoint));
        assert_eq!(
            Origin::normalise("authentication-international"),
            Some(Origin::AuthenticationInternational)
        );
        assert_eq!(Origin::normalise(" User-Initiated "), Some(Origin::UserInitiated));
        assert_eq!(Origin::normalise("nonsense"), None);
        for o in Origin::ALL {
            assert_eq!(Origin::from_code(o.code()), Some(o));
            assert_eq!(Origin::normalise(o.as_str()), Some(o));
        }
    }
}
