//! Stage 3, `ledger`: the monthly counters, price and markup, per business portfolio.
//!
//! Units are applied in (instant, id) order within the allowed lateness — conversations by
//! (`opened_at`, `conversation_id`), messages by (D, message id) — so the first N of a month
//! take the free tier and the n-th charged message gets the n-th band, whatever order
//! upstream partitions deliver them in. The counters: free-tier conversations per WABA and
//! month (conversation eras); free service messages per business number and month, and
//! volume-tier counts per (portfolio, market, counter, month) (message eras). A unit id
//! seen before is a duplicate (a replayed upstream batch) and changes nothing: no counter
//! is ever taken twice.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::pending::{load_pending, meta_i64, read_meta_i64, PendingJournal};
use super::privacy::UserHasher;
use super::records::{
    Billed, ConversationBilled, ConversationOpened, MessageCharged, MessageDelivered, RejectClass, Rejected, Unit,
};
use super::reorder::{Admit, ReorderBuffer};
use crate::billing::money::with_markup;
use chrono::Datelike;

use crate::billing::message::{MessagePricing, PricingType};
use crate::billing::policy::{policy_for, Pricing};
use crate::billing::tiers::TierLookup;
use crate::billing::time::{local_date, month_label, Ts, DAY};
use crate::billing::{MarketMap, RateCard, VolumeTiers};
use crate::config::Profiles;
use crate::state::codec::Counter;
use crate::state::{Backend, Family, StoreError, Table, WriteSet};

const LEDGER_STREAM_TIME_KEY: &str = "ledger.stream_time";

/// A waiting unit as journaled: source position (8 bytes) + Avro single-object
/// ConversationOpened or MessageDelivered (the fingerprint says which). State format 1
/// journaled a ConversationOpened alone.
fn encode_unit_pending(u: &Unit, position: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(&position.to_be_bytes());
    let f = crate::codec::avro::Framing::SingleObject;
    crate::codec::avro::encode_unit(u, &f, &f, &mut b);
    b
}

fn decode_unit_pending(version: u8, b: &[u8]) -> Result<(Unit, u64), String> {
    let (position, avro) = match version {
        1 => (0, b),
        _ => {
            let pos = b
                .get(..8)
                .and_then(|p| p.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or("journal entry shorter than its position")?;
            (pos, &b[8..])
        }
    };
    let u = crate::codec::avro::decode_unit(avro, &crate::codec::avro::no_registry).map_err(|e| e.to_string())?;
    Ok((u, position))
}

/// How long a conversation id is remembered, and a month counter kept, after the
/// conversation opened: long past any retry or late arrival.
pub const LEDGER_RETENTION: Ts = 100 * DAY;

#[derive(Debug, Default, Clone, Copy)]
pub struct LedgerStats {
    pub conversations: u64,
    pub duplicates: u64,
    pub free_tier: u64,
    /// Message charges emitted (every pricing type).
    pub messages: u64,
    /// Service messages that took a business number's free tier.
    pub service_free_tier: u64,
    /// Conversations that reached the ledger behind its watermark.
    pub late: u64,
    pub rejected: u64,
}

#[derive(Debug, Default)]
pub struct LedgerOutput {
    pub billed: Vec<Billed>,
    pub rejected: Vec<Rejected>,
}

pub struct LedgerStage {
    profiles: Arc<Profiles>,
    markets: Arc<MarketMap>,
    card: Arc<RateCard>,
    tiers: Arc<VolumeTiers>,
    reorder: ReorderBuffer<(Ts, String), (Unit, u64)>,
    seen: Table<Counter>,
    counters: Table<Counter>,
    key: Vec<u8>,
    journal: PendingJournal,
    /// The last WABA-local (year, month) and its `YYYY-MM` label.
    last_month: Option<((i32, u32), String)>,
    /// `[privacy] hash_users`: applied to every record as it leaves the stage.
    user_hasher: Option<Arc<UserHasher>>,
    pub stats: LedgerStats,
}

impl LedgerStage {
    pub fn new(
        profiles: Arc<Profiles>,
        markets: Arc<MarketMap>,
        card: Arc<RateCard>,
        tiers: Arc<VolumeTiers>,
        lateness: Ts,
        cache_entries: usize,
    ) -> Self {
        LedgerStage {
            profiles,
            markets,
            card,
            tiers,
            reorder: ReorderBuffer::new(lateness),
            seen: Table::new(Family::Conversations, cache_entries),
            counters: Table::new(Family::Counters, cache_entries),
            key: Vec::with_capacity(64),
            journal: PendingJournal::default(),
            last_month: None,
            user_hasher: None,
            stats: LedgerStats::default(),
        }
    }

    /// Records leave the stage with users as keyed hashes (pipeline/privacy.rs).
    pub fn with_user_hasher(mut self, hasher: Option<Arc<UserHasher>>) -> Self {
        self.user_hasher = hasher;
        self
    }

    pub fn stream_time(&self) -> Ts {
        self.reorder.stream_time()
    }

    /// Admits one unit; `position` is its source position (the input line in replay, the
    /// conversations-topic offset on Kafka), kept for its dead letter.
    pub fn push(
        &mut self,
        backend: Option<&dyn Backend>,
        u: Unit,
        position: u64,
        out: &mut LedgerOutput,
    ) -> Result<(), StoreError> {
        let encoded = self.journal.enabled.then(|| encode_unit_pending(&u, position));
        let mut u = u;
        // The id moves into the ordering key while waiting and comes back on release.
        let key = (u.ts(), u.take_order_id());
        match self.reorder.admit(key.0, key, (u, position)) {
            Admit::Late(key, (mut u, position)) => {
                u.restore_order_id(key.1);
                self.stats.late += 1;
                self.apply(backend, u, position, out)?;
            }
            Admit::Buffered(seq) => {
                if let Some(bytes) = encoded {
                    self.journal.added(seq, || bytes);
                }
            }
        }
        self.release(backend, out)
    }

    fn release(&mut self, backend: Option<&dyn Backend>, out: &mut LedgerOutput) -> Result<(), StoreError> {
        while let Some((seq, key, (mut u, position))) = self.reorder.pop_ready(|k| k.0) {
            u.restore_order_id(key.1);
            self.journal.removed(seq);
            self.apply(backend, u, position, out)?;
        }
        Ok(())
    }

    /// Kafka path: the watermark comes from upstream (the minimum over the windows
    /// partitions), so the free tier goes in (`opened_at`, id) order across them.
    pub fn advance_watermark(
        &mut self,
        backend: Option<&dyn Backend>,
        w: Ts,
        out: &mut LedgerOutput,
    ) -> Result<(), StoreError> {
        self.reorder.set_external_watermark(w);
        self.release(backend, out)
    }

    pub fn memory_only(&mut self) {
        self.seen.untracked();
        self.counters.untracked();
    }

    pub fn assume_fresh_store(&mut self) {
        self.seen.assume_complete();
        self.counters.assume_complete();
    }

    pub fn enable_persistence(&mut self) {
        self.journal.enabled = true;
    }

    pub fn restore(&mut self, backend: &dyn Backend) -> Result<usize, StoreError> {
        if let Some(v) = backend.get(Family::Meta, LEDGER_STREAM_TIME_KEY.as_bytes())? {
            if let Some(t) = read_meta_i64(&v) {
                self.reorder.set_stream_time(t);
            }
        }
        let waiting = load_pending(backend, decode_unit_pending)?;
        let n = waiting.len();
        for (seq, (mut u, position)) in waiting {
            let key = (u.ts(), u.take_order_id());
            self.reorder.restore(seq, key, (u, position));
        }
        Ok(n)
    }

    pub fn buffered(&self) -> usize {
        self.reorder.len()
    }

    pub fn flush(&mut self, backend: Option<&dyn Backend>, out: &mut LedgerOutput) -> Result<(), StoreError> {
        while let Some((seq, key, (mut u, position))) = self.reorder.pop_any() {
            u.restore_order_id(key.1);
            self.journal.removed(seq);
            self.apply(backend, u, position, out)?;
        }
        Ok(())
    }

    /// Free-tier conversations used so far in (WABA, month).
    pub fn used(&mut self, backend: Option<&dyn Backend>, waba_id: &str, month: &str) -> Result<u64, StoreError> {
        counter_key(&mut self.key, waba_id, month);
        Ok(self.counters.get(backend, &self.key)?.map(|c| c.value).unwrap_or(0))
    }

    /// Service messages of a business number that took its free tier in `month`.
    pub fn service_free_used(
        &mut self,
        backend: Option<&dyn Backend>,
        phone_number_id: &str,
        month: &str,
    ) -> Result<u64, StoreError> {
        counter_key_of(&mut self.key, &[SERVICE_TAG, phone_number_id, month]);
        Ok(self.counters.get(backend, &self.key)?.map(|c| c.value).unwrap_or(0))
    }

    fn apply(
        &mut self,
        backend: Option<&dyn Backend>,
        u: Unit,
        position: u64,
        out: &mut LedgerOutput,
    ) -> Result<(), StoreError> {
        match u {
            Unit::Conversation(c) => self.apply_conversation(backend, c, position, out),
            Unit::Message(m) => self.apply_message(backend, m, position, out),
        }
    }

    fn apply_conversation(
        &mut self,
        backend: Option<&dyn Backend>,
        c: ConversationOpened,
        position: u64,
        out: &mut LedgerOutput,
    ) -> Result<(), StoreError> {
        let seen = self.seen.entry(backend, c.conversation_id.as_bytes())?;
        if seen.get().is_some() {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let tz = self.profiles.get(&c.waba_id).time_zone;
        let (date, month) = local_month(&mut self.last_month, &tz, c.opened_at);
        let profile = self.profiles.get(&c.waba_id);
        let market = self.markets.market(c.country, date).to_string();
        // The era that opened the conversation says how it is priced (docs/billing-rules.md §3 rule 5,
        // §4 rule 4); the windows stage only emits conversations of implemented eras.
        let pricing = match policy_for(c.era) {
            Some(p) => p.pricing(c.origin),
            None => {
                self.stats.rejected += 1;
                out.rejected.push(Rejected {
                    class: RejectClass::UnsupportedEra,
                    reason: format!("era not supported yet: {}", c.era.as_str()),
                    record: opened_json(&c),
                    position,
                });
                return Ok(());
            }
        };
        let billable = !matches!(pricing, Pricing::NotBillable | Pricing::Free);
        // Price first: a conversation the card cannot price is rejected before it can
        // take free tier. Free conversations need no rate.
        let rate = match pricing {
            Pricing::NotBillable | Pricing::Free => Ok(Decimal::ZERO),
            Pricing::Charged | Pricing::FreeTierThenCharged => {
                self.card.rate(&profile.currency, &market, c.origin, date)
            }
        };
        let rate = match rate {
            Ok(r) => r,
            Err(e) => {
                self.stats.rejected += 1;
                out.rejected.push(Rejected {
                    class: RejectClass::Unpriceable,
                    reason: format!("cannot price conversation: {e}"),
                    record: opened_json(&c),
                    position,
                });
                return Ok(());
            }
        };
        let mut free_tier = false;
        if pricing == Pricing::FreeTierThenCharged && profile.free_tier > 0 {
            counter_key(&mut self.key, &c.waba_id, &month);
            let slot = self.counters.entry(backend, &self.key)?;
            let mut counter = slot.get().unwrap_or_default();
            if counter.value < u64::from(profile.free_tier) {
                counter.value += 1;
                counter.expires_at = counter.expires_at.max(c.opened_at.saturating_add(LEDGER_RETENTION));
                slot.set(Some(counter));
                free_tier = true;
                self.stats.free_tier += 1;
            }
        }
        let price = if free_tier || !billable { Decimal::ZERO } else { rate };
        seen.set(Some(Counter {
            expires_at: c.opened_at.saturating_add(LEDGER_RETENTION),
            value: 1,
        }));
        self.stats.conversations += 1;
        // The privacy seam: every record the ledger emits passes here, after every
        // decision (the rules, the dedupe above and the state keep the number and the
        // unhashed id).
        let mut c = c;
        if let Some(h) = &self.user_hasher {
            h.pseudonymise(&mut c);
        }
        out.billed.push(Billed::Conversation(ConversationBilled {
            month,
            market,
            free_tier,
            billable,
            price,
            billed_price: with_markup(price, profile.markup_percent),
            currency: profile.currency.clone(),
            opened: c,
        }));
        Ok(())
    }

    /// docs/billing-rules.md §5: the windows stage decided what the message is billed as;
    /// here its counters finish the price. A message the card (or the bands) cannot price
    /// is rejected before it can take a free service message or a band.
    fn apply_message(
        &mut self,
        backend: Option<&dyn Backend>,
        m: MessageDelivered,
        position: u64,
        out: &mut LedgerOutput,
    ) -> Result<(), StoreError> {
        let seen = self.seen.entry(backend, m.charge_id.as_bytes())?;
        if seen.get().is_some() {
            self.stats.duplicates += 1;
            return Ok(());
        }
        let tz = self.profiles.get(&m.waba_id).time_zone;
        let (date, month) = local_month(&mut self.last_month, &tz, m.delivered_at);
        let profile = self.profiles.get(&m.waba_id);
        let portfolio = self.profiles.portfolio_of(&m.waba_id).to_string();
        let market = self.markets.market(m.country, date).to_string();
        let expires_at = m.delivered_at.saturating_add(LEDGER_RETENTION);
        let at = MessageContext {
            profile,
            portfolio: &portfolio,
            market: &market,
            date,
            month: &month,
            expires_at,
        };
        let counters = MessageCounters {
            table: &mut self.counters,
            key: &mut self.key,
            stats: &mut self.stats,
        };
        let (pricing_type, tier, price) = match price_message(&self.card, &self.tiers, counters, backend, &m, &at) {
            Ok(priced) => priced,
            Err(PriceError::Store(e)) => return Err(e),
            Err(PriceError::Unpriceable(reason)) => {
                self.stats.rejected += 1;
                out.rejected.push(Rejected {
                    class: RejectClass::Unpriceable,
                    reason: format!("cannot price message {}: {reason}", m.message_id),
                    record: delivered_json(&m),
                    position,
                });
                return Ok(());
            }
        };
        seen.set(Some(Counter { expires_at, value: 1 }));
        self.stats.messages += 1;
        // The privacy seam (see `apply_conversation`).
        let mut m = m;
        if let Some(h) = &self.user_hasher {
            h.pseudonymise_message(&mut m);
        }
        out.billed.push(Billed::Message(MessageCharged {
            portfolio,
            month,
            market,
            pricing_type,
            tier,
            billable: pricing_type == PricingType::Regular,
            price,
            billed_price: with_markup(price, profile.markup_percent),
            currency: profile.currency.clone(),
            delivered: m,
        }));
        Ok(())
    }

    /// State that expired before this may go (tables, and the backend's compaction
    /// filter): `LEDGER_RETENTION` before the earliest instant a unit can still be
    /// applied in order — the earliest waiting unit, or the watermark. Not the stream
    /// time: on Kafka the watermark is the minimum over the windows partitions and can
    /// trail the stream time by far (a windows partition that lags or restores while
    /// another one's units already moved stream time on, or a gap in the traffic), and
    /// a month's counters purged from the stream time were gone for the units still
    /// waiting in that month: their volume band restarted at 1.
    pub fn purge_before(&self) -> Ts {
        let applied = self.reorder.watermark().min(self.reorder.stream_time());
        let from = match self.reorder.min_waiting(|k| k.0) {
            Some(t) => t.min(applied),
            None => applied,
        };
        from.saturating_sub(LEDGER_RETENTION)
    }

    /// Moves the changed state into `set` and drops what expired before
    /// `purge_before()`, which it returns for the backend's compaction filter.
    pub fn drain(&mut self, set: &mut WriteSet, has_backend: bool) -> Ts {
        let purge_before = self.purge_before();
        if self.journal.enabled {
            self.journal.drain(set);
            meta_i64(set, LEDGER_STREAM_TIME_KEY, self.reorder.stream_time());
        }
        let mut sink = WriteSet::default();
        let target = if has_backend { set } else { &mut sink };
        self.seen.drain_dirty(target);
        self.counters.drain_dirty(target);
        self.seen.evict(purge_before, has_backend);
        self.counters.evict(purge_before, has_backend);
        purge_before
    }
}

/// A priced message: pricing type, the band that priced it, price.
type Priced = (PricingType, Option<String>, Decimal);

/// Why `price_message` gave no price: the message cannot be priced (a dead letter with
/// this reason), or the store failed (the stage stops).
enum PriceError {
    Unpriceable(String),
    Store(StoreError),
}

impl From<StoreError> for PriceError {
    fn from(e: StoreError) -> Self {
        PriceError::Store(e)
    }
}

/// Where and when a message is priced: its WABA, portfolio, market and WABA-local month.
struct MessageContext<'a> {
    profile: &'a crate::config::WabaProfile,
    portfolio: &'a str,
    market: &'a str,
    date: chrono::NaiveDate,
    month: &'a str,
    /// When the counters it touches may be forgotten.
    expires_at: Ts,
}

/// The ledger's parts a message's price takes counters from.
struct MessageCounters<'a> {
    table: &'a mut Table<Counter>,
    key: &'a mut Vec<u8>,
    stats: &'a mut LedgerStats,
}

/// docs/billing-rules.md §5: finishes the windows stage's `MessagePricing` with the card,
/// the bands and the counters: (pricing type, band, price), or why it cannot be priced.
/// Price first: a message the card or the bands cannot price takes no free service
/// message and no band (its counters are untouched).
fn price_message(
    card: &RateCard,
    tiers: &VolumeTiers,
    c: MessageCounters<'_>,
    backend: Option<&dyn Backend>,
    m: &MessageDelivered,
    at: &MessageContext<'_>,
) -> Result<Priced, PriceError> {
    let currency = at.profile.currency.as_str();
    let rate = |column| {
        card.column_rate(currency, at.market, column, at.date)
            .map_err(|e| PriceError::Unpriceable(e.to_string()))
    };
    match m.pricing {
        MessagePricing::Free(t) => Ok((t, None, Decimal::ZERO)),
        MessagePricing::ServiceFreeTierThenCharged => {
            let rate = rate(crate::billing::rates::RateColumn::Service)?;
            let limit = u64::from(at.profile.service_free_tier);
            if limit > 0 {
                counter_key_of(c.key, &[SERVICE_TAG, &m.phone_number_id, at.month]);
                let slot = c.table.entry(backend, c.key)?;
                let mut counter = slot.get().unwrap_or_default();
                if counter.value < limit {
                    counter.value += 1;
                    counter.expires_at = counter.expires_at.max(at.expires_at);
                    slot.set(Some(counter));
                    c.stats.service_free_tier += 1;
                    return Ok((PricingType::FreeCustomerService, None, Decimal::ZERO));
                }
            }
            // No volume tiers for service (docs/billing-rules.md §5 rule 3).
            Ok((PricingType::Regular, None, rate))
        }
        MessagePricing::Charged => {
            let Some(column) = m.category.rate_column() else {
                return Err(PriceError::Unpriceable(format!(
                    "category {} is never charged",
                    m.category.as_str()
                )));
            };
            let Some(counter) = m.category.tier_counter() else {
                return Ok((PricingType::Regular, None, rate(column)?));
            };
            // docs/billing-rules.md §5 rule 5: the n-th charged message of the portfolio's
            // (market, counter, month), graduated.
            counter_key_of(c.key, &[TIER_TAG, at.portfolio, at.market, counter.as_str(), at.month]);
            let slot = c.table.entry(backend, c.key)?;
            let mut count = slot.get().unwrap_or_default();
            let n = count.value + 1;
            let priced = match tiers.lookup(currency, at.market, m.category, at.date, n) {
                TierLookup::Band(b) => (Some(b.label()), b.rate),
                TierLookup::Untiered => (None, rate(column)?),
                TierLookup::Beyond { effective_from, n } => {
                    return Err(PriceError::Unpriceable(format!(
                        "no volume band of {effective_from} for {:?} {} holds message {n} of {}",
                        at.market,
                        m.category.as_str(),
                        at.month
                    )))
                }
            };
            count.value = n;
            count.expires_at = count.expires_at.max(at.expires_at);
            slot.set(Some(count));
            Ok((PricingType::Regular, priced.0, priced.1))
        }
    }
}

/// The WABA-local date of `ts` and its `YYYY-MM`; `last` keeps the last label for reuse.
fn local_month(last: &mut Option<((i32, u32), String)>, tz: &chrono_tz::Tz, ts: Ts) -> (chrono::NaiveDate, String) {
    let date = local_date(tz, ts);
    let ym = (date.year(), date.month());
    let month = match last {
        Some((k, label)) if *k == ym => label.clone(),
        _ => {
            let label = month_label(date);
            *last = Some((ym, label.clone()));
            label
        }
    };
    (date, month)
}

/// Counter keys of the message eras start with a byte no WABA id (the conversation free
/// tier's keys, unchanged since state format 1) can start with.
const SERVICE_TAG: &str = "\u{1}service";
const TIER_TAG: &str = "\u{1}tier";

/// `parts` joined by NUL.
fn counter_key_of(key: &mut Vec<u8>, parts: &[&str]) {
    key.clear();
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(p.as_bytes());
    }
}

fn counter_key(key: &mut Vec<u8>, waba_id: &str, month: &str) {
    key.clear();
    key.extend_from_slice(waba_id.as_bytes());
    key.push(0);
    key.extend_from_slice(month.as_bytes());
}

fn delivered_json(m: &MessageDelivered) -> String {
    serde_json::json!({
        "charge_id": m.charge_id,
        "waba_id": m.waba_id,
        "phone_number_id": m.phone_number_id,
        "user": m.user,
        "era": m.era.as_str(),
        "message_id": m.message_id,
        "delivered_at": crate::billing::time::format_ts(m.delivered_at),
        "country": m.country.as_str(),
        "category": m.category.as_str(),
        "pricing": m.pricing.as_str(),
        "late": m.late,
    })
    .to_string()
}

fn opened_json(c: &ConversationOpened) -> String {
    serde_json::json!({
        "conversation_id": c.conversation_id,
        "waba_id": c.waba_id,
        "phone_number_id": c.phone_number_id,
        "user": c.user,
        "era": c.era.as_str(),
        "origin": c.origin.as_str(),
        "opened_at": crate::billing::time::format_ts(c.opened_at),
        "expires_at": crate::billing::time::format_ts(c.expires_at),
        "opening_message_id": c.opening_message_id,
        "country": c.country.as_str(),
        "late": c.late,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::{Country, EraId, MessageCategory};
    use crate::config::Config;
    use crate::pipeline::engine::Setup;
    use crate::state::RocksBackend;

    const JUL_2: Ts = 1_751_414_400; // 2025-07-02T00:00:00Z
    const DAY_S: Ts = 86_400;

    fn utility(id: &str, delivered_at: Ts) -> Unit {
        Unit::Message(MessageDelivered {
            charge_id: format!("charge-{id}"),
            waba_id: "1".into(),
            phone_number_id: "2".into(),
            user: "16505551234".into(),
            era: EraId::Pmp2025_07,
            message_id: id.into(),
            delivered_at,
            country: Country::new("US").unwrap(),
            category: MessageCategory::Utility,
            pricing: MessagePricing::Charged,
            late: false,
        })
    }

    fn tier_of(out: &mut LedgerOutput) -> Vec<(String, Option<String>)> {
        out.billed
            .drain(..)
            .filter_map(|b| b.message().map(|m| (m.delivered.message_id.clone(), m.tier.clone())))
            .collect()
    }

    /// The Kafka ledger releases units below the minimum of the windows partitions'
    /// watermarks, so a unit can wait while units of a windows partition far ahead move
    /// the stream time on (here: a partition already in 2026-09 while another is still in
    /// 2025-07). The batch end's purge must not take the month's volume counter from the
    /// unit still waiting in it: it is the 2nd charged message of the month, band `2:MAX`.
    #[test]
    fn a_waiting_unit_keeps_its_months_counters_when_stream_time_runs_ahead() {
        let cfg: Config = toml::from_str("[[waba]]\nid = \"1\"\n").unwrap();
        let tiers = VolumeTiers::parse(
            "effective_from,market,currency,category,from,to,rate\n\
             2025-07-01,North America,USD,utility,0,1,0.05\n\
             2025-07-01,North America,USD,utility,2,,0.04\n",
        )
        .unwrap();
        let setup = Setup::new(&cfg, RateCard::bundled_sample().unwrap(), MarketMap::bundled())
            .unwrap()
            .with_tiers(tiers);
        let dir = tempfile::tempdir().unwrap();
        let mut backend = RocksBackend::open(dir.path()).unwrap();
        // As a Kafka ledger task on a brand-new store opens it.
        let mut stage = setup.ledger_stage();
        stage.enable_persistence();
        stage
            .advance_watermark(None, Ts::MIN, &mut LedgerOutput::default())
            .unwrap();
        stage.assume_fresh_store();
        let mut out = LedgerOutput::default();
        let batch_end = |stage: &mut LedgerStage, backend: &mut RocksBackend| {
            let mut set = WriteSet::default();
            let purge = stage.drain(&mut set, true);
            backend.set_purge_before(Family::Counters, purge);
            backend.write(&mut set).unwrap();
        };

        stage.push(Some(&backend), utility("a", JUL_2), 1, &mut out).unwrap();
        stage.advance_watermark(Some(&backend), JUL_2 + 1, &mut out).unwrap();
        assert_eq!(tier_of(&mut out), [("a".to_string(), Some("0:1".to_string()))]);
        batch_end(&mut stage, &mut backend);

        // A unit of the lagging partition waits; one of the partition ahead arrives.
        stage
            .push(Some(&backend), utility("b", JUL_2 + DAY_S), 2, &mut out)
            .unwrap();
        stage
            .push(Some(&backend), utility("c", JUL_2 + 450 * DAY_S), 3, &mut out)
            .unwrap();
        assert!(out.billed.is_empty());
        batch_end(&mut stage, &mut backend);

        stage
            .advance_watermark(Some(&backend), JUL_2 + DAY_S + 1, &mut out)
            .unwrap();
        assert_eq!(tier_of(&mut out), [("b".to_string(), Some("2:MAX".to_string()))]);
    }
}
