//! Money: exact decimals for every per-conversation amount, rounding only in statements.

use rust_decimal::{Decimal, RoundingStrategy};

/// `price × (1 + markup/100)`, exact. rust_decimal keeps 28 significant digits, far more
/// than any rate card and markup need, so nothing is rounded here.
pub fn with_markup(price: Decimal, markup_percent: Decimal) -> Decimal {
    let factor = Decimal::ONE + markup_percent / Decimal::ONE_HUNDRED;
    (price * factor).normalize()
}

/// ISO 4217 minor units for the currencies Meta bills in; 2 for anything else.
pub fn minor_units(currency: &str) -> u32 {
    match currency {
        "JPY" | "KRW" | "CLP" | "VND" | "ISK" | "UGX" | "XAF" | "XOF" => 0,
        "BHD" | "KWD" | "OMR" | "JOD" | "IQD" | "TND" | "LYD" => 3,
        _ => 2,
    }
}

/// Statement totals: half-even to the currency's minor unit (docs/billing-rules.md §3 rule 6).
pub fn round_total(total: Decimal, currency: &str) -> Decimal {
    let dp = minor_units(currency);
    let mut d = total.round_dp_with_strategy(dp, RoundingStrategy::MidpointNearestEven);
    d.rescale(dp);
    d
}

/// Canonical decimal string for output: no trailing zeros, "0" for zero.
pub fn to_output(d: Decimal) -> String {
    let n = d.normalize();
    if n.is_zero() {
        "0".to_string()
    } else {
        n.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn markup_is_exact() {
        assert_eq!(with_markup(d("0.0147"), d("12.5")).to_string(), "0.0165375");
        assert_eq!(with_markup(d("0.0088"), d("0")).to_string(), "0.0088");
        assert_eq!(to_output(with_markup(d("0"), d("20"))), "0");
    }

    #[test]
    fn totals_round_half_even() {
        assert_eq!(round_total(d("0.125"), "USD").to_string(), "0.12");
        assert_eq!(round_total(d("0.135"), "USD").to_string(), "0.14");
        assert_eq!(round_total(d("12.5"), "JPY").to_string(), "12");
    }
}
