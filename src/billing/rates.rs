//! Rate cards (docs/billing-rules.md §7): CSV rows of (effective_from, market, currency, rate per origin).
//! The row in effect at a conversation's `opened_at` (WABA-local date) prices it.

use rustc_hash::FxHashMap;
use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use thiserror::Error;

use super::origin::Origin;

pub const BUNDLED_SAMPLE_CARD: &str = include_str!("../../data/rates/sample-usd.csv");

/// The columns every card has, in the order of the header wabill documents.
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

/// Optional columns (docs/billing-rules.md §7): `marketing_lite` prices Marketing Messages API traffic in
/// the message eras, and falls back to `marketing` when absent or empty.
const OPTIONAL_COLUMNS: [&str; 1] = ["marketing_lite"];

/// A rate column of the card (one per origin/category that can be priced).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateColumn {
    UserInitiated,
    BusinessInitiated,
    Marketing,
    Utility,
    Authentication,
    AuthenticationInternational,
    Service,
    MarketingLite,
}

impl RateColumn {
    const SLOTS: usize = 8;

    fn slot(self) -> usize {
        self as usize
    }

    fn from_header(name: &str) -> Option<RateColumn> {
        Some(match name {
            "user_initiated" => RateColumn::UserInitiated,
            "business_initiated" => RateColumn::BusinessInitiated,
            "marketing" => RateColumn::Marketing,
            "utility" => RateColumn::Utility,
            "authentication" => RateColumn::Authentication,
            "authentication_international" => RateColumn::AuthenticationInternational,
            "service" => RateColumn::Service,
            "marketing_lite" => RateColumn::MarketingLite,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RateColumn::UserInitiated => "user_initiated",
            RateColumn::BusinessInitiated => "business_initiated",
            RateColumn::Marketing => "marketing",
            RateColumn::Utility => "utility",
            RateColumn::Authentication => "authentication",
            RateColumn::AuthenticationInternational => "authentication_international",
            RateColumn::Service => "service",
            RateColumn::MarketingLite => "marketing_lite",
        }
    }

    /// The column that prices a conversation of `origin`; `None` for free entry point
    /// (never priced from the card).
    pub fn for_origin(origin: Origin) -> Option<RateColumn> {
        Some(match origin {
            Origin::UserInitiated => RateColumn::UserInitiated,
            Origin::BusinessInitiated => RateColumn::BusinessInitiated,
            Origin::Marketing => RateColumn::Marketing,
            Origin::Utility => RateColumn::Utility,
            Origin::Authentication => RateColumn::Authentication,
            Origin::AuthenticationInternational => RateColumn::AuthenticationInternational,
            Origin::Service => RateColumn::Service,
            Origin::FreeEntryPoint => return None,
        })
    }
}

impl std::fmt::Display for RateColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error)]
pub enum RateCardError {
    #[error("rate card: {0}")]
    Csv(#[from] csv::Error),
    #[error("rate card header must be `{}` (plus optionally `marketing_lite`), found `{found}`", COLUMNS.join(","))]
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
    #[error("rate card row of {effective_from} for market {market:?} in {currency} has no {column} rate")]
    NotApplicable {
        market: String,
        currency: String,
        effective_from: NaiveDate,
        column: RateColumn,
    },
}

#[derive(Debug, Clone)]
struct Row {
    effective_from: NaiveDate,
    rates: [Option<Decimal>; RateColumn::SLOTS],
}

/// All rate card rows, indexed by (currency, market) and sorted by `effective_from`.
#[derive(Debug, Clone, Default)]
pub struct RateCard {
    /// currency → market → rows by `effective_from`.
    rows: FxHashMap<String, FxHashMap<String, Vec<Row>>>,
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
        // Columns are found by name: the documented header loads as before, and an
        // optional column may sit anywhere after the first three.
        let names: Vec<&str> = headers.iter().collect();
        let header_error = || RateCardError::Header { found: names.join(",") };
        if names.get(..3) != Some(&COLUMNS[..3]) {
            return Err(header_error());
        }
        let mut columns: Vec<RateColumn> = Vec::with_capacity(names.len() - 3);
        for name in &names[3..] {
            let col = RateColumn::from_header(name).ok_or_else(header_error)?;
            if columns.contains(&col) {
                return Err(header_error());
            }
            columns.push(col);
        }
        let required = COLUMNS[3..].iter().all(|c| names.contains(c));
        let known = names[3..]
            .iter()
            .all(|n| COLUMNS.contains(n) || OPTIONAL_COLUMNS.contains(n));
        if !required || !known {
            return Err(header_error());
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
            let mut rates: [Option<Decimal>; RateColumn::SLOTS] = Default::default();
            for (i, cell) in rec.iter().skip(3).enumerate() {
                let Some(col) = columns.get(i) else {
                    return Err(bad(format!("more cells than the header's {} columns", names.len())));
                };
                let idx = col.slot();
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
        match RateColumn::for_origin(origin) {
            None => Ok(Decimal::ZERO),
            Some(col) => self.column_rate(currency, market, col, date),
        }
    }

    /// The rate of one column in the row in effect on WABA-local `date`. `marketing_lite`
    /// falls back to `marketing` when the row has none (docs/billing-rules.md §7).
    pub fn column_rate(
        &self,
        currency: &str,
        market: &str,
        column: RateColumn,
        date: NaiveDate,
    ) -> Result<Decimal, RateError> {
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
        let mut rate = row.rates[column.slot()];
        if rate.is_none() && column == RateColumn::MarketingLite {
            rate = row.rates[RateColumn::Marketing.slot()];
        }
        rate.ok_or_else(|| RateError::NotApplicable {
            market: market.to_string(),
            currency: currency.to_string(),
            effective_from: row.effective_from,
            column,
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
        // Every market of the mapping file, plus Other, is on the sample card from the day
        // the mapping first names it (dated rows: docs/billing-rules.md §7).
        let markets = crate::billing::market::MarketMap::bundled();
        for (m, from) in markets.markets().chain([("Other", NaiveDate::MIN)]) {
            let day = from.max(date(2022, 2, 1));
            let column = if day < date(2023, 6, 1) {
                RateColumn::UserInitiated
            } else {
                RateColumn::Marketing
            };
            assert!(card.column_rate("USD", m, column, day).is_ok(), "{m} from {day}");
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
        // An unknown column, or a required one missing, is a header error.
        assert!(matches!(
            RateCard::parse(&format!("{h},surprise\n")),
            Err(RateCardError::Header { .. })
        ));
        assert!(matches!(
            RateCard::parse("effective_from,market,currency,marketing\n"),
            Err(RateCardError::Header { .. })
        ));
    }

    #[test]
    fn marketing_lite_column_is_optional_and_falls_back_to_marketing() {
        // docs/billing-rules.md §7: marketing_lite is priced from its own column, or from marketing when the
        // row has none.
        let h = "effective_from,market,currency,user_initiated,business_initiated,marketing,marketing_lite,utility,authentication,authentication_international,service";
        let card = RateCard::parse(&format!(
            "{h}\n2025-07-01,Brazil,USD,,,0.0625,0.05,0.0068,0.0068,,\n2025-07-01,India,USD,,,0.0107,,0.0014,0.0014,0.0280,\n"
        ))
        .unwrap();
        let d = date(2025, 8, 1);
        let lite = |m| {
            card.column_rate("USD", m, RateColumn::MarketingLite, d)
                .unwrap()
                .to_string()
        };
        assert_eq!(lite("Brazil"), "0.05");
        assert_eq!(lite("India"), "0.0107");
        assert_eq!(
            card.rate("USD", "India", Origin::AuthenticationInternational, d)
                .unwrap()
                .to_string(),
            "0.0280"
        );
        assert!(matches!(
            card.rate("USD", "Brazil", Origin::AuthenticationInternational, d),
            Err(RateError::NotApplicable { .. })
        ));
        // The documented header without marketing_lite still loads (the bundled card).
        assert!(RateCard::bundled_sample().is_ok());
    }
}
