//! Stage 3, `ledger`: per WABA and WABA-local month, free tier, price and markup.
//!
//! Conversations are applied in (`opened_at`, `conversation_id`) order within the allowed
//! lateness, so the free tier goes to the first N of the month whatever order upstream
//! partitions deliver them in. A conversation id seen before is a duplicate (a replayed
//! upstream batch) and changes nothing: free tier is never taken twice.

use std::sync::Arc;

use rust_decimal::Decimal;

use super::pending::{load_pending, meta_i64, read_meta_i64, PendingJournal};
use super::privacy::UserHasher;
use super::records::{ConversationBilled, ConversationOpened, RejectClass, Rejected};
use super::reorder::{Admit, ReorderBuffer};
use crate::billing::money::with_markup;
use chrono::Datelike;

use crate::billing::policy::{policy_for, Pricing};
use crate::billing::time::{local_date, month_label, Ts, DAY};
use crate::billing::{MarketMap, RateCard};
use crate::config::Profiles;
use crate::state::codec::Counter;
use crate::state::{Backend, Family, StoreError, Table, WriteSet};

const LEDGER_STREAM_TIME_KEY: &str = "ledger.stream_time";

/// A waiting conversation as journaled: source position (8 bytes) + Avro single-object
/// ConversationOpened. (State format 1 journaled the Avro record alone.)
fn encode_opened_pending(c: &ConversationOpened, position: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(&position.to_be_bytes());
    crate::codec::avro::encode_opened(c, &crate::codec::avro::Framing::SingleObject, &mut b);
    b
}

fn decode_opened_pending(version: u8, b: &[u8]) -> Result<(ConversationOpened, u64), String> {
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
    let c = crate::codec::avro::decode_opened(avro).map_err(|e| e.to_string())?;
    Ok((c, position))
}

/// How long a conversation id is remembered, and a month counter kept, after the
/// conversation opened: long past any retry or late arrival.
pub const LEDGER_RETENTION: Ts = 100 * DAY;

#[derive(Debug, Default, Clone, Copy)]
pub struct LedgerStats {
    pub conversations: u64,
    pub duplicates: u64,
    pub free_tier: u64,
    /// Conversations that reached the ledger behind its watermark.
    pub late: u64,
    pub rejected: u64,
}

#[derive(Debug, Default)]
pub struct LedgerOutput {
    pub billed: Vec<ConversationBilled>,
    pub rejected: Vec<Rejected>,
}

pub struct LedgerStage {
    profiles: Arc<Profiles>,
    markets: Arc<MarketMap>,
    card: Arc<RateCard>,
    reorder: ReorderBuffer<(Ts, String), (ConversationOpened, u64)>,
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
        lateness: Ts,
        cache_entries: usize,
    ) -> Self {
        LedgerStage {
            profiles,
            markets,
            card,
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

    /// Admits one conversation; `position` is its source position (the input line in
    /// replay, the conversations-topic offset on Kafka), kept for its dead letter.
    pub fn push(
        &mut self,
        backend: Option<&dyn Backend>,
        c: ConversationOpened,
        position: u64,
        out: &mut LedgerOutput,
    ) -> Result<(), StoreError> {
        let encoded = self.journal.enabled.then(|| encode_opened_pending(&c, position));
        let mut c = c;
        // The id moves into the ordering key while waiting and comes back on release.
        let key = (c.opened_at, std::mem::take(&mut c.conversation_id));
        match self.reorder.admit(key.0, key, (c, position)) {
            Admit::Late(key, (mut c, position)) => {
                c.conversation_id = key.1;
                self.stats.late += 1;
                self.apply(backend, c, position, out)?;
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
        while let Some((seq, key, (mut c, position))) = self.reorder.pop_ready(|k| k.0) {
            c.conversation_id = key.1;
            self.journal.removed(seq);
            self.apply(backend, c, position, out)?;
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
        let waiting = load_pending(backend, decode_opened_pending)?;
        let n = waiting.len();
        for (seq, (mut c, position)) in waiting {
            let key = (c.opened_at, std::mem::take(&mut c.conversation_id));
            self.reorder.restore(seq, key, (c, position));
        }
        Ok(n)
    }

    pub fn buffered(&self) -> usize {
        self.reorder.len()
    }

    pub fn flush(&mut self, backend: Option<&dyn Backend>, out: &mut LedgerOutput) -> Result<(), StoreError> {
        while let Some((seq, key, (mut c, position))) = self.reorder.pop_any() {
            c.conversation_id = key.1;
            self.journal.removed(seq);
            self.apply(backend, c, position, out)?;
        }
        Ok(())
    }

    /// Free-tier conversations used so far in (WABA, month).
    pub fn used(&mut self, backend: Option<&dyn Backend>, waba_id: &str, month: &str) -> Result<u64, StoreError> {
        counter_key(&mut self.key, waba_id, month);
        Ok(self.counters.get(backend, &self.key)?.map(|c| c.value).unwrap_or(0))
    }

    fn apply(
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
        let profile = self.profiles.get(&c.waba_id);
        let tz = profile.time_zone;
        // `local_month`, with the label of the last (year, month) reused.
        let date = local_date(&tz, c.opened_at);
        let ym = (date.year(), date.month());
        let month = match &self.last_month {
            Some((k, label)) if *k == ym => label.clone(),
            _ => {
                let label = month_label(date);
                self.last_month = Some((ym, label.clone()));
                label
            }
        };
        let market = self.markets.market(c.country).to_string();
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
        out.billed.push(ConversationBilled {
            month,
            market,
            free_tier,
            billable,
            price,
            billed_price: with_markup(price, profile.markup_percent),
            currency: profile.currency.clone(),
            opened: c,
        });
        Ok(())
    }

    pub fn drain(&mut self, set: &mut WriteSet, purge_before: Ts, has_backend: bool) {
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
    }
}

fn counter_key(key: &mut Vec<u8>, waba_id: &str, month: &str) {
    key.clear();
    key.extend_from_slice(waba_id.as_bytes());
    key.push(0);
    key.extend_from_slice(month.as_bytes());
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
