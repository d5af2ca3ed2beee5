//! Volume tiers of the per-message eras (docs/billing-rules.md §5 rule 5, §7): the bands
//! Meta publishes next to each rate card, as a CSV of
//! `effective_from,market,currency,category,from,to,rate`.
//!
//! A band's `from`/`to` are inclusive message counts (`to` empty: no upper bound); messages
//! are numbered from 1 per (portfolio, market, counter, WABA-local month), so band `0:2`
//! holds the 1st and 2nd. The bands of one (effective_from, market, currency, category)
//! must be contiguous and not overlap: a gap or an overlap is an error at start-up, not a
//! price guessed at run time. Where a (market, category) has no bands in effect, the
//! card's rate prices every message (`lookup` says `None`).

use std::str::FromStr;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use rustc_hash::FxHashMap;
use thiserror::Error;

use super::message::MessageCategory;

pub const BUNDLED_SAMPLE_TIERS: &str = include_str!("../../data/rates/sample-tiers-usd.csv");

const HEADER: [&str; 7] = ["effective_from", "market", "currency", "category", "from", "to", "rate"];

#[derive(Debug, Error)]
pub enum TiersError {
    #[error("volume tiers: {0}")]
    Csv(#[from] csv::Error),
    #[error("volume tiers header must be `{}`, found `{found}`", HEADER.join(","))]
    Header { found: String },
    #[error("volume tiers row {row}: {reason}")]
    Row { row: u64, reason: String },
    #[error("volume tiers of {effective_from} for {market:?} {category} in {currency}: {reason}")]
    Bands {
        effective_from: NaiveDate,
        market: String,
        currency: String,
        category: &'static str,
        reason: String,
    },
}

/// One band: messages `from..=to` of the month cost `rate` each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Band {
    pub from: u64,
    /// `None`: no upper bound (`MAX`).
    pub to: Option<u64>,
    pub rate: Decimal,
}

impl Band {
    pub fn contains(&self, n: u64) -> bool {
        self.from <= n && self.to.is_none_or(|t| n <= t)
    }

    /// `"from:to"`, `to` = `MAX` when open (Meta's analytics spelling).
    pub fn label(&self) -> String {
        match self.to {
            Some(t) => format!("{}:{}", self.from, t),
            None => format!("{}:MAX", self.from),
        }
    }
}

/// What a tier lookup found for the n-th charged message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TierLookup {
    /// No bands in effect for the (market, category): the card's rate applies.
    Untiered,
    Band(Band),
    /// Bands are in effect but none holds n (the last band is closed below n).
    Beyond {
        effective_from: NaiveDate,
        n: u64,
    },
}

#[derive(Debug, Clone)]
struct Schedule {
    effective_from: NaiveDate,
    bands: Vec<Band>,
}

type Key = (String, String, MessageCategory);

/// Every band, indexed by (currency, market, category) and sorted by `effective_from`.
#[derive(Debug, Clone, Default)]
pub struct VolumeTiers {
    schedules: FxHashMap<Key, Vec<Schedule>>,
}

impl VolumeTiers {
    /// No bands at all: every message is priced from the card.
    pub fn none() -> Self {
        VolumeTiers::default()
    }

    pub fn bundled_sample() -> Result<Self, TiersError> {
        Self::parse(BUNDLED_SAMPLE_TIERS)
    }

    pub fn is_empty(&self) -> bool {
        self.schedules.is_empty()
    }

    pub fn parse(text: &str) -> Result<Self, TiersError> {
        let mut rdr = csv::ReaderBuilder::new()
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let header: Vec<String> = rdr.headers()?.iter().map(str::to_string).collect();
        if header != HEADER {
            return Err(TiersError::Header {
                found: header.join(","),
            });
        }
        let mut grouped: FxHashMap<(Key, NaiveDate), Vec<Band>> = FxHashMap::default();
        for rec in rdr.records() {
            let rec = rec?;
            let row = rec.position().map(|p| p.line()).unwrap_or(0);
            let bad = |reason: String| TiersError::Row { row, reason };
            let field = |i: usize| rec.get(i).unwrap_or("");
            let effective_from = NaiveDate::parse_from_str(field(0), "%Y-%m-%d")
                .map_err(|_| bad(format!("effective_from {:?} is not YYYY-MM-DD", field(0))))?;
            let market = field(1).to_string();
            if market.is_empty() {
                return Err(bad("empty market".into()));
            }
            let currency = field(2).to_ascii_uppercase();
            let category = match field(3).to_ascii_lowercase().replace('-', "_").as_str() {
                "utility" => MessageCategory::Utility,
                "authentication" => MessageCategory::Authentication,
                "authentication_international" => MessageCategory::AuthenticationInternational,
                other => {
                    return Err(bad(format!(
                    "category {other:?}: bands exist for utility, authentication and authentication_international only"
                )))
                }
            };
            let from = u64::from_str(field(4)).map_err(|_| bad(format!("from {:?} is not a count", field(4))))?;
            let to = match field(5) {
                "" | "MAX" => None,
                t => Some(u64::from_str(t).map_err(|_| bad(format!("to {t:?} is not a count")))?),
            };
            if to.is_some_and(|t| t < from) {
                return Err(bad(format!("band {from}:{} ends before it starts", field(5))));
            }
            let rate = Decimal::from_str(field(6)).map_err(|_| bad(format!("rate {:?} is not a decimal", field(6))))?;
            if rate.is_sign_negative() {
                return Err(bad(format!("negative rate {rate}")));
            }
            grouped
                .entry(((currency, market, category), effective_from))
                .or_default()
                .push(Band { from, to, rate });
        }
        let mut schedules: FxHashMap<Key, Vec<Schedule>> = FxHashMap::default();
        for ((key, effective_from), mut bands) in grouped {
            bands.sort_by_key(|b| b.from);
            let problem = |reason: String| TiersError::Bands {
                effective_from,
                market: key.1.clone(),
                currency: key.0.clone(),
                category: key.2.as_str(),
                reason,
            };
            if bands[0].from > 1 {
                return Err(problem(format!(
                    "the first band starts at {}: messages are numbered from 1",
                    bands[0].from
                )));
            }
            for w in bands.windows(2) {
                match w[0].to {
                    None => {
                        return Err(problem(format!(
                            "band {} is open but {} follows it",
                            w[0].label(),
                            w[1].label()
                        )))
                    }
                    Some(t) if t.checked_add(1) != Some(w[1].from) => {
                        return Err(problem(format!(
                            "bands {} and {} are not contiguous",
                            w[0].label(),
                            w[1].label()
                        )))
                    }
                    Some(_) => {}
                }
            }
            schedules
                .entry(key)
                .or_default()
                .push(Schedule { effective_from, bands });
        }
        for list in schedules.values_mut() {
            list.sort_by_key(|s| s.effective_from);
        }
        Ok(VolumeTiers { schedules })
    }

    /// The band of the `n`-th charged message of the month (numbered from 1) of `category`
    /// in `market`, under the bands in effect on `date` (WABA-local).
    pub fn lookup(
        &self,
        currency: &str,
        market: &str,
        category: MessageCategory,
        date: NaiveDate,
        n: u64,
    ) -> TierLookup {
        let key = (currency.to_string(), market.to_string(), category);
        let Some(list) = self.schedules.get(&key) else {
            return TierLookup::Untiered;
        };
        let idx = list.partition_point(|s| s.effective_from <= date);
        let Some(schedule) = idx.checked_sub(1).and_then(|i| list.get(i)) else {
            return TierLookup::Untiered;
        };
        match schedule.bands.iter().find(|b| b.contains(n)) {
            Some(b) => TierLookup::Band(b.clone()),
            None => TierLookup::Beyond {
                effective_from: schedule.effective_from,
                n,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HDR: &str = "effective_from,market,currency,category,from,to,rate\n";

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn graduated_lookup_by_count_and_date() {
        let t = VolumeTiers::parse(&format!(
            "{HDR}2025-07-01,India,USD,utility,0,2,0.10\n2025-07-01,India,USD,utility,3,,0.05\n\
             2026-01-01,India,USD,utility,1,10,0.09\n2026-01-01,India,USD,utility,11,MAX,0.04\n"
        ))
        .unwrap();
        let band = |date, n| match t.lookup("USD", "India", MessageCategory::Utility, d(date), n) {
            TierLookup::Band(b) => (b.label(), b.rate),
            other => panic!("{other:?}"),
        };
        // "0:2" holds the 1st and 2nd message; the 3rd is in the open band.
        assert_eq!(band("2025-08-15", 1), ("0:2".into(), Decimal::new(10, 2)));
        assert_eq!(band("2025-08-15", 2), ("0:2".into(), Decimal::new(10, 2)));
        assert_eq!(band("2025-08-15", 3), ("3:MAX".into(), Decimal::new(5, 2)));
        // The 2026 bands replace the 2025 ones from their date.
        assert_eq!(band("2026-01-01", 3), ("1:10".into(), Decimal::new(9, 2)));
        assert_eq!(
            t.lookup("USD", "India", MessageCategory::Utility, d("2025-06-30"), 1),
            TierLookup::Untiered
        );
        assert_eq!(
            t.lookup("USD", "Brazil", MessageCategory::Utility, d("2025-08-01"), 1),
            TierLookup::Untiered
        );
        assert_eq!(
            t.lookup("USD", "India", MessageCategory::Authentication, d("2025-08-01"), 1),
            TierLookup::Untiered
        );
    }

    #[test]
    fn gaps_overlaps_and_bad_rows_fail_at_load() {
        let gap = format!("{HDR}2025-07-01,India,USD,utility,0,2,0.1\n2025-07-01,India,USD,utility,4,,0.05\n");
        assert!(matches!(VolumeTiers::parse(&gap), Err(TiersError::Bands { .. })));
        let overlap = format!("{HDR}2025-07-01,India,USD,utility,0,5,0.1\n2025-07-01,India,USD,utility,4,,0.05\n");
        assert!(matches!(VolumeTiers::parse(&overlap), Err(TiersError::Bands { .. })));
        let open_mid = format!("{HDR}2025-07-01,India,USD,utility,0,,0.1\n2025-07-01,India,USD,utility,4,,0.05\n");
        assert!(matches!(VolumeTiers::parse(&open_mid), Err(TiersError::Bands { .. })));
        let marketing = format!("{HDR}2025-07-01,India,USD,marketing,0,,0.1\n");
        assert!(matches!(VolumeTiers::parse(&marketing), Err(TiersError::Row { .. })));
        assert!(matches!(VolumeTiers::parse("a,b\n"), Err(TiersError::Header { .. })));
        let closed = VolumeTiers::parse(&format!("{HDR}2025-07-01,India,USD,utility,1,2,0.1\n")).unwrap();
        assert!(matches!(
            closed.lookup("USD", "India", MessageCategory::Utility, d("2025-07-02"), 3),
            TierLookup::Beyond { n: 3, .. }
        ));
    }

    #[test]
    fn bundled_sample_loads() {
        let t = VolumeTiers::bundled_sample().unwrap();
        assert!(!t.is_empty());
    }
}
