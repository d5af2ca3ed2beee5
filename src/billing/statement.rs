//! Month statements (docs/billing-rules.md §10): per WABA and WABA-local month, conversations by origin
//! (by category in the category eras), free tier used and left, and totals rounded
//! half-even to the currency's minor unit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use rust_decimal::Decimal;

use super::money::round_total;
use super::{EraId, Origin};
use crate::pipeline::ConversationBilled;

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

/// Aggregates records; `free_tier` gives (used, limit) for a (WABA, month).
pub fn statements(
    records: &[ConversationBilled],
    mut free_tier: impl FnMut(&str, &str) -> (u64, u64),
) -> Vec<MonthStatement> {
    let mut map: BTreeMap<(String, String, String), MonthStatement> = BTreeMap::new();
    for r in records {
        let key = (r.opened.waba_id.clone(), r.month.clone(), r.currency.clone());
        let s = map.entry(key).or_insert_with(|| MonthStatement {
            waba_id: r.opened.waba_id.clone(),
            month: r.month.clone(),
            currency: r.currency.clone(),
            eras: Vec::new(),
            conversations: 0,
            by_origin: BTreeMap::new(),
            free_tier_in_records: 0,
            free_tier_used: 0,
            free_tier_limit: 0,
            late: 0,
            price_total: Decimal::ZERO,
            billed_total: Decimal::ZERO,
        });
        s.conversations += 1;
        if !s.eras.contains(&r.opened.era) {
            s.eras.push(r.opened.era);
            s.eras.sort();
        }
        *s.by_origin.entry(r.opened.origin).or_default() += 1;
        s.free_tier_in_records += u64::from(r.free_tier);
        s.late += u64::from(r.opened.late);
        s.price_total += r.price;
        s.billed_total += r.billed_price;
    }
    let mut out: Vec<MonthStatement> = map.into_values().collect();
    for s in &mut out {
        let (used, limit) = free_tier(&s.waba_id, &s.month);
        s.free_tier_used = used.max(s.free_tier_in_records);
        s.free_tier_limit = limit;
    }
    out
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
        for (o, n) in &s.by_origin {
            let _ = writeln!(t, "  {:<22}{:>10}", o.as_str(), n);
        }
        let _ = writeln!(t, "  {:<22}{:>10}", "conversations", s.conversations);
        let free_tier_era = s
            .eras
            .iter()
            .any(|e| crate::billing::policy::policy_for(*e).is_some_and(|p| p.has_free_tier()));
        if free_tier_era {
            let _ = writeln!(
                t,
                "  {:<22}{:>10}  of {} (left {})",
                "free tier used",
                s.free_tier_used,
                s.free_tier_limit,
                s.free_tier_left()
            );
        } else {
            let _ = writeln!(t, "  {:<22}{:>10}", "free tier", "none in this era");
        }
        if s.late > 0 {
            let _ = writeln!(t, "  {:<22}{:>10}", "opened by late events", s.late);
        }
        let _ = writeln!(
            t,
            "  {:<22}{:>10} {}",
            "price total",
            to_output_2(s.price_total_rounded()),
            s.currency
        );
        let _ = writeln!(
            t,
            "  {:<22}{:>10} {}",
            "billed total",
            to_output_2(s.billed_total_rounded()),
            s.currency
        );
        t.push('\n');
    }
    t
}

fn to_output_2(d: Decimal) -> String {
    // Rounded totals keep the minor-unit scale ("12.30", not "12.3").
    d.to_string()
}
