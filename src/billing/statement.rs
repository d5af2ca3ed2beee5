//! Month statements (docs/billing-rules.md §10): per WABA and WABA-local month, conversations
//! by origin (by category in the category eras) and the WABA's free tier; messages by category
//! and pricing type, each business number's service free tier, and the volume band the
//! portfolio reached per market and tier counter; totals rounded half-even to the
//! currency's minor unit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::message::{MessageCategory, PricingType, TierCounter};
use super::money::round_total;
use super::policy::BillingUnit;
use super::{EraId, Origin};
use crate::pipeline::Billed;

/// A business number's service free tier in a month (`pmp-2026-10`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServiceFreeTier {
    /// Free service messages in this statement's records.
    pub in_records: u64,
    /// As the ledger counts them (may include earlier runs on the same state).
    pub used: u64,
    pub limit: u64,
}

/// The highest volume band a portfolio's charged messages reached in a (market, counter,
/// month), over every WABA of the portfolio in the records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BandReached {
    pub band: String,
    /// Lower bound of `band`, to compare bands.
    pub from: u64,
    /// Charged messages of the portfolio in the records for this (market, counter, month).
    pub charged: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthStatement {
    pub waba_id: String,
    pub month: String,
    pub currency: String,
    /// Eras of the month's conversations (one, except where a WABA's month straddles a
    /// switch it was configured across).
    pub eras: Vec<EraId>,
    pub conversations: u64,
    pub by_origin: BTreeMap<Origin, u64>,
    /// Free-tier conversations in this statement's records.
    pub free_tier_in_records: u64,
    /// Free-tier conversations used in the month, as the ledger counts them (may include
    /// earlier runs on the same state directory).
    pub free_tier_used: u64,
    pub free_tier_limit: u64,
    pub late: u64,
    /// Message charges (per-message eras).
    pub messages: u64,
    pub by_message: BTreeMap<(MessageCategory, PricingType), u64>,
    /// Per business number with service messages in an era with a service free tier.
    pub service_free: BTreeMap<String, ServiceFreeTier>,
    /// The WABA's portfolio (when it has message charges).
    pub portfolio: Option<String>,
    /// Per (market, counter): the band the portfolio reached in this month.
    pub bands: BTreeMap<(String, TierCounter), BandReached>,
    /// Exact sums; rounded only when shown.
    pub price_total: Decimal,
    pub billed_total: Decimal,
}

impl MonthStatement {
    pub fn free_tier_left(&self) -> u64 {
        self.free_tier_limit.saturating_sub(self.free_tier_used)
    }
    pub fn price_total_rounded(&self) -> Decimal {
        round_total(self.price_total, &self.currency)
    }
    pub fn billed_total_rounded(&self) -> Decimal {
        round_total(self.billed_total, &self.currency)
    }
}

/// Aggregates records. `free_tier` gives (used, limit) of a (WABA, month)'s conversation
/// free tier; `service_free` (used, limit) of a (WABA, business number, month)'s service free
/// tier.
pub fn statements(
    records: &[Billed],
    mut free_tier: impl FnMut(&str, &str) -> (u64, u64),
    mut service_free: impl FnMut(&str, &str, &str) -> (u64, u64),
) -> Vec<MonthStatement> {
    let mut map: BTreeMap<(String, String, String), MonthStatement> = BTreeMap::new();
    // (portfolio, market, counter, month) → band reached.
    let mut reached: BTreeMap<(String, String, TierCounter, String), BandReached> = BTreeMap::new();
    for r in records {
        let (waba, month, currency) = match r {
            Billed::Conversation(c) => (&c.opened.waba_id, &c.month, &c.currency),
            Billed::Message(m) => (&m.delivered.waba_id, &m.month, &m.currency),
        };
        let key = (waba.clone(), month.clone(), currency.clone());
        let s = map.entry(key).or_insert_with(|| MonthStatement {
            waba_id: waba.clone(),
            month: month.clone(),
            currency: currency.clone(),
            eras: Vec::new(),
            conversations: 0,
            by_origin: BTreeMap::new(),
            free_tier_in_records: 0,
            free_tier_used: 0,
            free_tier_limit: 0,
            late: 0,
            messages: 0,
            by_message: BTreeMap::new(),
            service_free: BTreeMap::new(),
            portfolio: None,
            bands: BTreeMap::new(),
            price_total: Decimal::ZERO,
            billed_total: Decimal::ZERO,
        });
        let (era, late, price, billed) = match r {
            Billed::Conversation(c) => (c.opened.era, c.opened.late, c.price, c.billed_price),
            Billed::Message(m) => (m.delivered.era, m.delivered.late, m.price, m.billed_price),
        };
        if !s.eras.contains(&era) {
            s.eras.push(era);
            s.eras.sort();
        }
        s.late += u64::from(late);
        s.price_total += price;
        s.billed_total += billed;
        match r {
            Billed::Conversation(c) => {
                s.conversations += 1;
                *s.by_origin.entry(c.opened.origin).or_default() += 1;
                s.free_tier_in_records += u64::from(c.free_tier);
            }
            Billed::Message(m) => {
                let d = &m.delivered;
                s.messages += 1;
                s.portfolio = Some(m.portfolio.clone());
                *s.by_message.entry((d.category, m.pricing_type)).or_default() += 1;
                let has_service_tier =
                    crate::billing::policy::policy_for(d.era).is_some_and(|p| p.has_service_free_tier());
                if d.category == MessageCategory::Service && has_service_tier {
                    let t = s.service_free.entry(d.phone_number_id.clone()).or_default();
                    t.in_records += u64::from(m.pricing_type == PricingType::FreeCustomerService);
                }
                if let (Some(counter), true) = (d.category.tier_counter(), m.billable) {
                    let k = (m.portfolio.clone(), m.market.clone(), counter, m.month.clone());
                    let (label, from) = match &m.tier {
                        Some(t) => (t.clone(), band_from(t)),
                        None => ("untiered".to_string(), 0),
                    };
                    let e = reached.entry(k).or_insert(BandReached {
                        band: label.clone(),
                        from,
                        charged: 0,
                    });
                    e.charged += 1;
                    // A band beats "untiered" at the same lower bound (authentication-
                    // international messages without bands share the authentication counter).
                    if from > e.from || (from == e.from && m.tier.is_some() && e.band == "untiered") {
                        e.band = label;
                        e.from = from;
                    }
                }
            }
        }
    }
    let mut out: Vec<MonthStatement> = map.into_values().collect();
    for s in &mut out {
        if s.conversations > 0 {
            let (used, limit) = free_tier(&s.waba_id, &s.month);
            s.free_tier_used = used.max(s.free_tier_in_records);
            s.free_tier_limit = limit;
        }
        for (number, t) in &mut s.service_free {
            let (used, limit) = service_free(&s.waba_id, number, &s.month);
            t.used = used.max(t.in_records);
            t.limit = limit;
        }
        if let Some(p) = &s.portfolio {
            for ((portfolio, market, counter, month), b) in &reached {
                if portfolio == p && *month == s.month {
                    s.bands.insert((market.clone(), *counter), b.clone());
                }
            }
        }
    }
    out
}

/// Lower bound of a `from:to` band label.
fn band_from(label: &str) -> u64 {
    label.split(':').next().and_then(|f| f.parse().ok()).unwrap_or(0)
}

/// Human-readable statement text.
pub fn render(statements: &[MonthStatement]) -> String {
    let mut t = String::new();
    if statements.is_empty() {
        t.push_str("No conversations opened.\n");
    }
    for s in statements {
        let eras: Vec<&str> = s.eras.iter().map(|e| e.as_str()).collect();
        let _ = writeln!(
            t,
            "WABA {}  month {}  ({}, {})",
            s.waba_id,
            s.month,
            s.currency,
            eras.join(" + ")
        );
        if s.conversations > 0 {
            render_conversations(&mut t, s);
        }
        if s.messages > 0 {
            render_messages(&mut t, s);
        }
        if s.late > 0 {
            let label = if s.messages == 0 {
                "opened by late events"
            } else {
                "late units"
            };
            let _ = writeln!(t, "  {:<30}{:>10}", label, s.late);
        }
        let _ = writeln!(
            t,
            "  {:<30}{:>10} {}",
            "price total",
            to_output_2(s.price_total_rounded()),
            s.currency
        );
        let _ = writeln!(
            t,
            "  {:<30}{:>10} {}",
            "billed total",
            to_output_2(s.billed_total_rounded()),
            s.currency
        );
        t.push('\n');
    }
    t
}

/// Width of the label column of the message-era blocks (`authentication_international`
/// fits, indented).
const MSG_LABEL: usize = 33;
/// Width of the market column of the volume bands ("Rest of Central & Eastern Europe").
const MARKET: usize = 34;

fn render_messages(t: &mut String, s: &MonthStatement) {
    // Messages: one row per category, one column per pricing type (Meta's names, as in
    // the records), and a total per row and per column.
    let _ = write!(t, "  {:<w$}", "messages", w = MSG_LABEL - 2);
    for p in PricingType::ALL {
        let _ = write!(t, "{:>w$}", p.as_str(), w = pricing_column(p));
    }
    let _ = writeln!(t, "{:>8}", "total");
    let mut categories: Vec<MessageCategory> = s.by_message.keys().map(|(c, _)| *c).collect();
    categories.dedup();
    let mut column_totals = [0u64; PricingType::ALL.len()];
    for c in categories {
        let _ = write!(t, "    {:<w$}", c.as_str(), w = MSG_LABEL - 4);
        let mut row = 0;
        for (i, p) in PricingType::ALL.into_iter().enumerate() {
            let n = s.by_message.get(&(c, p)).copied().unwrap_or(0);
            row += n;
            column_totals[i] += n;
            let cell = if n == 0 { String::new() } else { n.to_string() };
            let _ = write!(t, "{cell:>w$}", w = pricing_column(p));
        }
        let _ = writeln!(t, "{row:>8}");
    }
    let _ = write!(t, "    {:<w$}", "all categories", w = MSG_LABEL - 4);
    for (i, p) in PricingType::ALL.into_iter().enumerate() {
        let _ = write!(t, "{:>w$}", column_totals[i], w = pricing_column(p));
    }
    let _ = writeln!(t, "{:>8}", s.messages);
    // The service free tier of each business number (pmp-2026-10).
    if !s.service_free.is_empty() {
        let _ = writeln!(
            t,
            "  {:<w$}{:>9}{:>8}{:>8}",
            "service free tier",
            "used",
            "of",
            "left",
            w = MSG_LABEL - 2
        );
        for (number, f) in &s.service_free {
            let _ = writeln!(
                t,
                "    {:<w$}{:>9}{:>8}{:>8}",
                format!("number {number}"),
                f.used,
                f.limit,
                f.limit.saturating_sub(f.used),
                w = MSG_LABEL - 4
            );
        }
    }
    // The band the portfolio's charged messages reached this month, per market and counter.
    if let (Some(p), false) = (&s.portfolio, s.bands.is_empty()) {
        let _ = writeln!(t, "  volume bands, portfolio {p} (its charged messages this month)");
        let _ = writeln!(
            t,
            "    {:<w$}{:<16}{:>8}  band",
            "market",
            "counter",
            "charged",
            w = MARKET
        );
        let mut last_market = "";
        for ((market, counter), b) in &s.bands {
            let shown = if market == last_market { "" } else { market.as_str() };
            last_market = market;
            let band = if b.band == "untiered" {
                "no bands (card rate)"
            } else {
                b.band.as_str()
            };
            let _ = writeln!(
                t,
                "    {:<w$}{:<16}{:>8}  {}",
                shown,
                counter.as_str(),
                b.charged,
                band,
                w = MARKET
            );
        }
    }
}

/// Width of a pricing type's column: its name and two spaces.
fn pricing_column(p: PricingType) -> usize {
    p.as_str().len() + 2
}

fn render_conversations(t: &mut String, s: &MonthStatement) {
    {
        for (o, n) in &s.by_origin {
            let _ = writeln!(t, "  {:<30}{:>10}", o.as_str(), n);
        }
        let _ = writeln!(t, "  {:<30}{:>10}", "conversations", s.conversations);
        let free_tier_era = s.eras.iter().any(|e| {
            crate::billing::policy::policy_for(*e)
                .is_some_and(|p| p.unit() == BillingUnit::Conversation && p.has_free_tier())
        });
        if free_tier_era {
            let _ = writeln!(
                t,
                "  {:<30}{:>10}  of {} (left {})",
                "free tier used",
                s.free_tier_used,
                s.free_tier_limit,
                s.free_tier_left()
            );
        } else {
            let _ = writeln!(t, "  {:<30}{:>10}", "free tier", "none in this era");
        }
    }
}

fn to_output_2(d: Decimal) -> String {
    // Rounded totals keep the minor-unit scale ("12.30", not "12.3").
    d.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message_month() -> MonthStatement {
        let mut by_message = BTreeMap::new();
        by_message.insert((MessageCategory::Marketing, PricingType::Regular), 46);
        by_message.insert((MessageCategory::AuthenticationInternational, PricingType::Regular), 1);
        by_message.insert((MessageCategory::Service, PricingType::Regular), 14);
        by_message.insert((MessageCategory::Service, PricingType::FreeCustomerService), 78);
        by_message.insert((MessageCategory::ReferralConversion, PricingType::FreeEntryPoint), 9);
        let mut service_free = BTreeMap::new();
        service_free.insert(
            "106540352242923".to_string(),
            ServiceFreeTier {
                in_records: 40,
                used: 40,
                limit: 40,
            },
        );
        let band = |band: &str, charged| BandReached {
            band: band.to_string(),
            from: band_from(band),
            charged,
        };
        let mut bands = BTreeMap::new();
        bands.insert(
            ("Rest of Central & Eastern Europe".to_string(), TierCounter::Utility),
            band("0:750000", 5),
        );
        bands.insert(("India".to_string(), TierCounter::Utility), band("750001:2000000", 8));
        bands.insert(("India".to_string(), TierCounter::Authentication), band("untiered", 2));
        MonthStatement {
            waba_id: "102290129340398".into(),
            month: "2026-10".into(),
            currency: "USD".into(),
            eras: vec![EraId::Pmp2026_10],
            conversations: 0,
            by_origin: BTreeMap::new(),
            free_tier_in_records: 0,
            free_tier_used: 0,
            free_tier_limit: 0,
            late: 0,
            messages: 148,
            by_message,
            service_free,
            portfolio: Some("740296618114455".into()),
            bands,
            price_total: Decimal::new(605, 2),
            billed_total: Decimal::new(680, 2),
        }
    }

    #[test]
    fn message_statement_reads_as_tables() {
        let text = render(&[message_month()]);
        let lines: Vec<&str> = text.lines().collect();
        // Category rows under the pricing-type columns, right-aligned at the headers' ends.
        let header = lines.iter().find(|l| l.trim_start().starts_with("messages")).unwrap();
        let end_of = |h: &str| header.find(h).unwrap() + h.len();
        let service = lines.iter().find(|l| l.trim_start().starts_with("service ")).unwrap();
        assert_eq!(service.find("14").unwrap() + 2, end_of("regular"), "{text}");
        assert_eq!(
            service.find("78").unwrap() + 2,
            end_of("free_customer_service"),
            "{text}"
        );
        assert!(service.ends_with("      92"), "{text}");
        let total = lines
            .iter()
            .find(|l| l.trim_start().starts_with("all categories"))
            .unwrap();
        assert!(total.ends_with("     148"), "{text}");
        // No label runs into its number.
        assert!(text.contains("    authentication_international         1"), "{text}");
        assert!(
            text.contains("    number 106540352242923              40      40       0"),
            "{text}"
        );
        // Volume bands: the market once, then its counters; untiered said in words.
        assert!(text.contains("  volume bands, portfolio 740296618114455"), "{text}");
        assert!(
            text.contains("    India                             utility                8  750001:2000000"),
            "{text}"
        );
        assert!(
            text.contains("                                      authentication         2  no bands (card rate)"),
            "{text}"
        );
        assert!(
            text.contains("    Rest of Central & Eastern Europe  utility                5  0:750000"),
            "{text}"
        );
        assert!(
            text.contains("  billed total                        6.80 USD"),
            "{text}"
        );
        assert!(lines.iter().all(|l| l.chars().count() <= 92), "{text}");
    }
}
