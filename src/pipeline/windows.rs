//! Stage 2, `windows`: per (business number, user) state machine → `ConversationOpened`.
//!
//! Deterministic: the output depends only on the events and the store's contents, and
//! expired state reads as absent, so whether compaction already dropped it never matters.
//!
//! The stage knows no era: it finds the policy of each event's era (`billing::policy`),
//! keeps what every era may need (the pair's state, the dedupe memory and each message's
//! kind from the send log or Meta's pricing object) and lets the policy decide.

use std::sync::Arc;

use super::pending::{load_pending, meta_i64, read_meta_i64, PendingJournal};
use super::records::{ConversationOpened, MessageDelivered, RejectClass, Rejected, Unit};
use super::reorder::{Admit, ReorderBuffer};
use crate::billing::ids::{charge_id, conversation_id};
use crate::billing::policy::{decide_delivery, policy_for, Delivery};
use crate::billing::rates::RateColumn;
use crate::billing::time::local_date;
use crate::billing::window::{DeliveryDecision, ScopeState};
use crate::billing::{MarketMap, MessageKind, Origin, RateCard, Ts};
use crate::config::Profiles;
use crate::ingest::{EventKind, MessageEvent, Referral, StatusKind};
use crate::state::codec::{MessageSeen, DELIVERY_APPLIED};
use crate::state::{Backend, Family, StoreError, Table, WriteSet};

const STREAM_TIME_KEY: &str = "windows.stream_time";

/// A waiting event as stored: position (8 bytes) + Avro single-object MessageEvent.
fn encode_pending(ev: &MessageEvent, position: u64) -> Vec<u8> {
    let mut b = Vec::with_capacity(256);
    b.extend_from_slice(&position.to_be_bytes());
    crate::codec::avro::encode_event(ev, &crate::codec::avro::Framing::SingleObject, &mut b);
    b
}

fn decode_pending(b: &[u8]) -> Option<(MessageEvent, u64)> {
    let pos = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
    let ev = crate::codec::avro::decode_event(b.get(8..)?).ok()?;
    Some((ev, pos))
}

/// Counters the stage keeps (exported as metrics by `ops`).
#[derive(Debug, Default, Clone, Copy)]
pub struct WindowStats {
    pub events: u64,
    pub inbound: u64,
    pub sent: u64,
    pub delivered: u64,
    pub read: u64,
    pub failed: u64,
    pub duplicates: u64,
    pub late: u64,
    /// Deliveries that joined an open conversation.
    pub joined: u64,
    pub opened: u64,
    /// Deliveries billed as messages (the per-message eras).
    pub messages: u64,
    /// Events before 2022-02-01, billed under `cbp-2022` (docs/billing-rules.md §2).
    pub before_first_era: u64,
    pub unsupported_era: u64,
    /// A second delivered/read of a message already delivered.
    pub redelivered: u64,
    pub send_logs: u64,
    /// The send log and Meta's `pricing.category` disagree on a message's kind (the send
    /// log decides, docs/billing-rules.md §6).
    pub kind_disagreements: u64,
    /// Deliveries dead-lettered because their kind was needed and unknown.
    pub unknown_kind: u64,
    /// Service conversations opened by a non-template delivered outside the CSW (Meta
    /// should have refused to send it, docs/billing-rules.md §4).
    pub service_outside_csw: u64,
}

/// Application order (docs/billing-rules.md §3): timestamp, inbound messages before statuses, message id;
/// the status kind last, so two statuses of one message at one second apply in lifecycle
/// order.
type EventKey = (Ts, u8, String, u8);

pub struct WindowsStage {
    profiles: Arc<Profiles>,
    markets: Arc<MarketMap>,
    card: Arc<RateCard>,
    dedupe_horizon: Ts,
    reorder: ReorderBuffer<EventKey, (MessageEvent, u64)>,
    scopes: Table<ScopeState>,
    messages: Table<MessageSeen>,
    key: Vec<u8>,
    journal: PendingJournal,
    pub stats: WindowStats,
}

/// Everything a stage emits for one input.
#[derive(Debug, Default)]
pub struct WindowsOutput {
    /// Opened conversations and delivered messages, each with the source position of its
    /// delivery.
    pub units: Vec<(Unit, u64)>,
    pub rejected: Vec<Rejected>,
}

impl WindowsStage {
    pub fn new(
        profiles: Arc<Profiles>,
        markets: Arc<MarketMap>,
        card: Arc<RateCard>,
        lateness: Ts,
        dedupe_horizon: Ts,
        cache_entries: usize,
    ) -> Self {
        WindowsStage {
            profiles,
            markets,
            card,
            dedupe_horizon,
            reorder: ReorderBuffer::new(lateness),
            scopes: Table::new(Family::Scopes, cache_entries),
            messages: Table::new(Family::Messages, cache_entries),
            key: Vec::with_capacity(64),
            journal: PendingJournal::default(),
            stats: WindowStats::default(),
        }
    }

    pub fn stream_time(&self) -> Ts {
        self.reorder.stream_time()
    }

    pub fn buffered(&self) -> usize {
        self.reorder.len()
    }

    /// Admits one event; applies every event that became ready.
    pub fn push(
        &mut self,
        backend: Option<&dyn Backend>,
        ev: MessageEvent,
        position: u64,
        out: &mut WindowsOutput,
    ) -> Result<(), StoreError> {
        let class = u8::from(!matches!(ev.kind, EventKind::Inbound { .. }));
        // An event of an era not implemented yet is rejected before it can move stream
        // time: a far-future timestamp must not make every later event late.
        let era = self.profiles.get(&ev.waba_id).calendar.era_at(ev.ts).era.id;
        if policy_for(era).is_none() {
            self.stats.events += 1;
            self.reject_era(&ev, position, out);
            return Ok(());
        }
        let encoded = self.journal.enabled.then(|| encode_pending(&ev, position));
        // The message id moves into the ordering key while the event waits (no clone)
        // and is put back when it is released.
        let mut ev = ev;
        let key = (ev.ts, class, std::mem::take(&mut ev.message_id), ev.kind.rank());
        match self.reorder.admit(key.0, key, (ev, position)) {
            Admit::Late(key, (mut ev, pos)) => {
                ev.message_id = key.2;
                self.stats.late += 1;
                self.apply(backend, &ev, pos, true, out)?;
            }
            Admit::Buffered(seq) => {
                if let Some(bytes) = encoded {
                    self.journal.added(seq, || bytes);
                }
            }
        }
        while let Some((seq, key, (mut ev, pos))) = self.reorder.pop_ready(|k| k.0) {
            ev.message_id = key.2;
            self.journal.removed(seq);
            self.apply(backend, &ev, pos, false, out)?;
        }
        Ok(())
    }

    /// Applies everything still buffered (end of input, or an idle partition).
    pub fn flush(&mut self, backend: Option<&dyn Backend>, out: &mut WindowsOutput) -> Result<(), StoreError> {
        while let Some((seq, key, (mut ev, pos))) = self.reorder.pop_any() {
            ev.message_id = key.2;
            self.journal.removed(seq);
            self.apply(backend, &ev, pos, false, out)?;
        }
        Ok(())
    }

    fn apply(
        &mut self,
        backend: Option<&dyn Backend>,
        ev: &MessageEvent,
        position: u64,
        late: bool,
        out: &mut WindowsOutput,
    ) -> Result<(), StoreError> {
        self.stats.events += 1;
        let profile = self.profiles.get(&ev.waba_id);
        let era_at = profile.calendar.era_at(ev.ts);
        let Some(policy) = policy_for(era_at.era.id) else {
            self.reject_era(ev, position, out);
            return Ok(());
        };
        let bit = ev.kind.bit();
        let seen_slot = self.messages.entry(backend, ev.message_id.as_bytes())?;
        let mut seen = seen_slot.get().filter(|m| m.expires_at > ev.ts).unwrap_or_default();
        if seen.seen & bit != 0 {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if era_at.before_first {
            self.stats.before_first_era += 1;
        }
        seen.seen |= bit;
        seen.expires_at = seen.expires_at.max(ev.ts.saturating_add(self.dedupe_horizon));
        let mut deliver = false;
        match ev.kind {
            EventKind::Inbound { referral } => {
                self.stats.inbound += 1;
                scope_key(&mut self.key, ev);
                let slot = self.scopes.entry(backend, &self.key)?;
                let mut scope = slot.get().unwrap_or_default().live_at(ev.ts);
                policy.on_inbound(&mut scope, ev.ts, referral == Referral::Ad);
                slot.set(Some(scope));
            }
            EventKind::SendLog => {
                self.stats.send_logs += 1;
                if let Some(k) = ev.message_kind {
                    if seen.kind != 0 && seen.kind != k.code() && !seen.kind_from_send_log {
                        disagree(&mut self.stats, &mut seen);
                    }
                    seen.kind = k.code();
                    seen.kind_from_send_log = true;
                }
            }
            EventKind::Status {
                status: StatusKind::Sent,
            } => {
                self.stats.sent += 1;
                learn_kind(&mut self.stats, &mut seen, ev.message_kind);
            }
            EventKind::Status {
                status: StatusKind::Failed,
            } => self.stats.failed += 1,
            EventKind::Status { status } => {
                if status == StatusKind::Delivered {
                    self.stats.delivered += 1;
                } else {
                    self.stats.read += 1;
                }
                learn_kind(&mut self.stats, &mut seen, ev.message_kind);
                if seen.seen & DELIVERY_APPLIED != 0 {
                    self.stats.redelivered += 1;
                } else {
                    seen.seen |= DELIVERY_APPLIED;
                    deliver = true;
                }
            }
        }
        // The message's memory is complete before the delivery is decided (which reads,
        // never writes, it), so the slot is written back first.
        seen_slot.set(Some(seen));
        if deliver {
            self.deliver(backend, ev, position, late, policy, seen.kind(), out)?;
        }
        Ok(())
    }

    /// The first delivery of a business message: the era policies decide.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        backend: Option<&dyn Backend>,
        ev: &MessageEvent,
        position: u64,
        late: bool,
        policy: &'static dyn crate::billing::policy::EraPolicy,
        kind: Option<MessageKind>,
        out: &mut WindowsOutput,
    ) -> Result<(), StoreError> {
        let profile = self.profiles.get(&ev.waba_id);
        let (markets, card) = (&self.markets, &self.card);
        let auth_international = || {
            let date = local_date(&profile.time_zone, ev.ts);
            profile.auth_international_applies(ev.ts, ev.country)
                && card
                    .column_rate(
                        &profile.currency,
                        markets.market(ev.country, date),
                        RateColumn::AuthenticationInternational,
                        date,
                    )
                    .is_ok()
        };
        scope_key(&mut self.key, ev);
        let slot = self.scopes.entry(backend, &self.key)?;
        let mut scope = slot.get().unwrap_or_default().live_at(ev.ts);
        let delivery = Delivery {
            d: ev.ts,
            kind,
            calendar: &profile.calendar,
            auth_international: &auth_international,
        };
        let decision = decide_delivery(&mut scope, policy, &delivery);
        let outside_csw = ev.ts >= scope.csw_until;
        slot.set(Some(scope));
        match decision {
            DeliveryDecision::Joined(_) => self.stats.joined += 1,
            DeliveryDecision::Message(v) => {
                self.stats.messages += 1;
                out.units.push((
                    Unit::Message(MessageDelivered {
                        charge_id: charge_id(&ev.phone_number_id, &ev.user, &ev.message_id),
                        waba_id: ev.waba_id.clone(),
                        phone_number_id: ev.phone_number_id.clone(),
                        user: ev.user.clone(),
                        era: policy.era(),
                        message_id: ev.message_id.clone(),
                        delivered_at: ev.ts,
                        country: ev.country,
                        category: v.category,
                        pricing: v.pricing,
                        late,
                    }),
                    position,
                ));
            }
            DeliveryDecision::NeedsKind => {
                self.stats.unknown_kind += 1;
                out.rejected.push(Rejected {
                    class: RejectClass::UnknownCategory,
                    reason: format!(
                        "unknown message category: the delivery of {} at {} ({}) needs to know whether it is a template and of which category; no send-log record and no status with pricing.category said so",
                        ev.message_id,
                        crate::billing::time::format_ts(ev.ts),
                        policy.era().as_str()
                    ),
                    record: serde_json::to_string(ev).unwrap_or_default(),
                    position,
                });
            }
            DeliveryDecision::Opened(c) => {
                self.stats.opened += 1;
                if c.origin == Origin::Service && outside_csw {
                    self.stats.service_outside_csw += 1;
                }
                // The conversation's own era names its category (it may differ from
                // D's era only for joins, so here it is D's).
                let era_policy = policy_for(c.era).unwrap_or(policy);
                out.units.push((
                    Unit::Conversation(ConversationOpened {
                        conversation_id: conversation_id(
                            &ev.phone_number_id,
                            &ev.user,
                            era_policy.id_category(c.origin),
                            c.opened_at,
                        ),
                        waba_id: ev.waba_id.clone(),
                        phone_number_id: ev.phone_number_id.clone(),
                        user: ev.user.clone(),
                        era: c.era,
                        origin: c.origin,
                        opened_at: c.opened_at,
                        expires_at: c.expires_at(),
                        opening_message_id: ev.message_id.clone(),
                        country: ev.country,
                        late,
                    }),
                    position,
                ));
            }
        }
        Ok(())
    }

    fn reject_era(&mut self, ev: &MessageEvent, position: u64, out: &mut WindowsOutput) {
        let profile = self.profiles.get(&ev.waba_id);
        self.stats.unsupported_era += 1;
        out.rejected.push(Rejected {
            class: RejectClass::UnsupportedEra,
            reason: format!(
                "era not supported yet: {} (event at {}, WABA {} in {})",
                profile.calendar.era_at(ev.ts).era.id.as_str(),
                crate::billing::time::format_ts(ev.ts),
                ev.waba_id,
                profile.time_zone
            ),
            record: serde_json::to_string(ev).unwrap_or_default(),
            position,
        });
    }

    /// Moves dirty state into `set` and trims the cache. `purge_before` is stream time
    /// minus a safety margin: state that expired before it is dropped from memory.
    pub fn drain(&mut self, set: &mut WriteSet, purge_before: Ts, has_backend: bool) {
        if self.journal.enabled {
            self.journal.drain(set);
            meta_i64(set, STREAM_TIME_KEY, self.reorder.stream_time());
        }
        if has_backend {
            self.scopes.drain_dirty(set);
            self.messages.drain_dirty(set);
        } else {
            self.scopes.drain_dirty(&mut WriteSet::default());
            self.messages.drain_dirty(&mut WriteSet::default());
        }
        self.scopes.evict(purge_before, has_backend);
        self.messages.evict(purge_before, has_backend);
    }

    /// No backend at all (tests, the pure-engine benchmark): skip dirty bookkeeping.
    pub fn memory_only(&mut self) {
        self.scopes.untracked();
        self.messages.untracked();
    }

    pub fn assume_fresh_store(&mut self) {
        self.scopes.assume_complete();
        self.messages.assume_complete();
    }

    /// Kafka path: from now on, events waiting for the watermark are journaled into the
    /// state (family `pending`) so a restart resumes exactly where the store stands.
    pub fn enable_persistence(&mut self) {
        self.journal.enabled = true;
    }

    /// Reloads waiting events and stream time from a restored store.
    pub fn restore(&mut self, backend: &dyn Backend) -> Result<usize, StoreError> {
        if let Some(v) = backend.get(Family::Meta, STREAM_TIME_KEY.as_bytes())? {
            if let Some(t) = read_meta_i64(&v) {
                self.reorder.set_stream_time(t);
            }
        }
        // Format 1 and 2 journal the same payload (position + Avro, which says its own
        // schema version).
        let waiting = load_pending(backend, |_version, b| {
            decode_pending(b).ok_or_else(|| "event does not decode".to_string())
        })?;
        let n = waiting.len();
        for (seq, (mut ev, pos)) in waiting {
            let class = u8::from(!matches!(ev.kind, EventKind::Inbound { .. }));
            let key = (ev.ts, class, std::mem::take(&mut ev.message_id), ev.kind.rank());
            self.reorder.restore(seq, key, (ev, pos));
        }
        Ok(n)
    }

    /// Everything below this event time has been applied (for downstream watermarks).
    pub fn watermark(&self) -> Ts {
        match self.reorder.min_waiting(|k| k.0) {
            Some(t) => t.min(self.reorder.watermark()),
            None => self.reorder.watermark(),
        }
    }

    pub fn cached_entries(&self) -> usize {
        self.scopes.len() + self.messages.len()
    }
}

/// A status's `pricing.category` is the fallback source of a message's kind: it fills an
/// unknown kind, never overrides the send log, and a disagreement is counted.
fn learn_kind(stats: &mut WindowStats, seen: &mut MessageSeen, hint: Option<MessageKind>) {
    let Some(k) = hint else { return };
    if seen.kind == 0 {
        seen.kind = k.code();
    } else if seen.kind_from_send_log && seen.kind != k.code() {
        disagree(stats, seen);
    }
}

/// Counts a send-log/pricing disagreement once per message.
fn disagree(stats: &mut WindowStats, seen: &mut MessageSeen) {
    if !seen.kind_disagreed {
        seen.kind_disagreed = true;
        stats.kind_disagreements += 1;
    }
}

/// Store key of a scope: business number, NUL, user.
fn scope_key(key: &mut Vec<u8>, ev: &MessageEvent) {
    key.clear();
    key.extend_from_slice(ev.phone_number_id.as_bytes());
    key.push(0);
    key.extend_from_slice(ev.user.as_bytes());
}
