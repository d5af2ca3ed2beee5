//! Rate cards (SPEC §5): CSV rows of (effective_from, market, currency, rate per origin).
//! The row in effect at a conversation's `opened_at` (WABA-local date) prices it.

use rustc_hash::FxHashMap;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use thiserror::Error;

use super::origin::Origin;

pub const BUNDLED_SAMPLE_CARD: &str = include_str!("../../data/rates/sample-usd.csv");

const COLUMNS: [&str; 10] = [
    "effective_from",
    "market",
    "currency",
    "user_initiated",
    "business_initiated",
    "marketing",
    "utility",
    "authentication",
    "authentication_international",
    "service",
];

#[derive(Debug, Error)]
pub enum RateCardError {
    #[error("rate card: {0}")]
    Csv(#[from] csv::Error),
    #[error("rate card header must be `{}`, found `{found}`", COLUMNS.join(","))]
    Header { found: String },
    #[error("rate card row {row}: {reason}")]
    Row { row: u64, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RateError {
    #[error("no rate card row for market {market:?} in {currency} on or before {date}")]
    NoRow {
        market: String,
        currency: String,
        date: NaiveDate,
    },
    #[error("rate card row of {effective_from} for market {market:?} in {currency} has no {origin} rate")]
    NotApplicable {
        market: String,
        currency: String,
        effective_from: NaiveDate,
        origin: Origin,
    },
}

#[derive(Debug, Clone)]
struct Row {
    effective_from: NaiveDate,
    rates: [Option<Decimal>; 7],
}

/// All rate card rows, indexed by (currency, market) and sorted by `effective_from`.
#[derive(Debug, Clone, Default)]
pub struct RateCard {
    /// currency → market → rows by `effective_from`.
    rows: FxHashMap<String, FxHashMap<String, Vec<Row>>>,
}

fn slot(origin: Origin) -> usize {
    match origin {
        Origin::UserInitiated => 0,
        Origin::BusinessInitiated => 1,
        Origin::Marketing => 2,
        Origin::Utility => 3,
        Origin::Authentication => 4,
        Origin::Service => 6,
        // Never priced from the card: always free.
        Origin::FreeEntryPoint => 5,
    }
}

impl RateCard {
    pub fn bundled_sample() -> Result<Self, RateCardError> {
        Self::parse(BUNDLED_SAMPLE_CARD)
    }

    pub fn parse(text: &str) -> Result<Self, RateCardError> {
        let mut rdr = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let headers = rdr.headers()?.clone();
        if headers.iter().collect::<Vec<_>>() != COLUMNS {
            return Err(RateCardError::Header {
                found: headers.iter().collect::<Vec<_>>().join(","),
            });
        }
        let mut card = RateCard::default();
        for rec in rdr.records() {
            let rec = rec?;
            let row_no = rec.position().map(|p| p.line()).unwrap_or(0);
            let bad = |reason: String| RateCardError::Row { row: row_no, reason };
            let effective_from = NaiveDate::parse_from_str(&rec[0], "%Y-%m-%d")
                .map_err(|_| bad(format!("effective_from {:?} is not YYYY-MM-DD", &rec[0])))?;
            let market = rec[1].to_string();
            let currency = rec[2].to_ascii_uppercase();
            if market.is_empty() || currency.len() != 3 {
                return Err(bad("market and a 3-letter currency are required".into()));
            }
            let mut rates: [Option<Decimal>; 7] = Default::default();
            for (i, cell) in rec.iter().skip(3).enumerate() {
                let idx = i; // columns follow the slot order of `slot()`
                if cell.is_empty() || cell.eq_ignore_ascii_case("n/a") {
                    continue;
                }
                let d = Decimal::from_str(cell).map_err(|_| bad(format!("{:?} is not a decimal rate", cell)))?;
                if d.is_sign_negative() {
                    return Err(bad(format!("negative rate {cell}")));
                }
                rates[idx] = Some(d);
            }
            let rows = card.rows.entry(currency).or_default().entry(market).or_default();
            if rows.iter().any(|r| r.effective_from == effective_from) {
                return Err(bad("duplicate (effective_from, market, currency)".into()));
            }
            rows.push(Row { effective_from, rates });
        }
        for rows in card.rows.values_mut().flat_map(|m| m.values_mut()) {
            rows.sort_by_key(|r| r.effective_from);
        }
        Ok(card)
    }

    pub fn has_currency(&self, currency: &str) -> bool {
        self.rows.contains_key(currency)
    }

    /// The rate for `origin` in `market` on WABA-local `date`. Free entry point is never
    /// looked up (always 0).
    pub fn rate(&self, currency: &str, market: &str, origin: Origin, date: NaiveDate) -> Result<Decimal, RateError> {
        if origin == Origin::FreeEntryPoint {
            return Ok(Decimal::ZERO);
        }
        let no_row = || RateError::NoRow {
            market: market.to_string(),
            currency: currency.to_string(),
            date,
        };
        let rows = self.rows.get(currency).and_then(|m| m.get(market)).ok_or_else(no_row)?;
        let row = rows
            .iter()
            .rev()
            .find(|r| r.effective_from <= date)
            .ok_or_else(no_row)?;
        row.rates[slot(origin)].ok_or_else(|| RateError::NotApplicable {
            market: market.to_string(),
            currency: currency.to_string(),
            effective_from: row.effective_from,
            origin,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::time::date;

    #[test]
    fn sample_card_row_in_effect() {
        let card = RateCard::bundled_sample().unwrap();
        let r = |o, d| card.rate("USD", "North America", o, d);
        assert_eq!(
            r(Origin::BusinessInitiated, date(2022, 5, 1)).unwrap().to_string(),
            "0.0147"
        );
        assert_eq!(
            r(Origin::UserInitiated, date(2022, 5, 1)).unwrap().to_string(),
            "0.0088"
        );
        assert!(matches!(
            r(Origin::UserInitiated, date(2023, 6, 1)),
            Err(RateError::NotApplicable { .. })
        ));
        assert!(matches!(
            r(Origin::UserInitiated, date(2022, 1, 31)),
            Err(RateError::NoRow { .. })
        ));
        assert_eq!(r(Origin::FreeEntryPoint, date(2020, 1, 1)).unwrap(), Decimal::ZERO);
        // Every market of the mapping file, plus Other, is on the sample card.
        let markets = crate::billing::market::MarketMap::bundled();
        for m in markets.markets().chain(["Other"]) {
            assert!(
                card.rate("USD", m, Origin::UserInitiated, date(2022, 2, 1)).is_ok(),
                "{m}"
            );
        }
    }

    #[test]
    fn bad_cards_are_rejected_with_the_row() {
        let h = COLUMNS.join(",");
        assert!(matches!(RateCard::parse("a,b\n"), Err(RateCardError::Header { .. })));
        let e = RateCard::parse(&format!("{h}\n2022-13-01,X,USD,1,1,,,,,\n")).unwrap_err();
        assert!(e.to_string().contains("row 2"), "{e}");
        let e = RateCard::parse(&format!("{h}\n2022-01-01,X,USD,abc,1,,,,,\n")).unwrap_err();
        assert!(e.to_string().contains("not a decimal"), "{e}");
    }
}
