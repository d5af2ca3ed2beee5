//! Stage 2, `windows`: per (business number, user) state machine → `ConversationOpened`.
//!
//! Deterministic: the output depends only on the events and the store's contents, and
//! expired state reads as absent, so whether compaction already dropped it never matters.

use std::sync::Arc;

use super::records::{ConversationOpened, Rejected};
use super::reorder::{Admit, ReorderBuffer};
use crate::billing::ids::conversation_id;
use crate::billing::policy::policy_for;
use crate::billing::window::{DeliveryDecision, ScopeState};
use crate::billing::Ts;
use crate::config::Profiles;
use crate::ingest::{EventKind, MessageEvent, Referral, StatusKind};
use crate::state::codec::{MessageSeen, DELIVERY_APPLIED};
use crate::state::{Backend, Family, StoreError, Table, WriteSet};

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
    /// Events before 2022-02-01, billed under `cbp-2022` (SPEC §2).
    pub before_first_era: u64,
    pub unsupported_era: u64,
    /// A second delivered/read of a message already delivered.
    pub redelivered: u64,
}

type EventKey = (Ts, u8, String);

pub struct WindowsStage {
    profiles: Arc<Profiles>,
    dedupe_horizon: Ts,
    reorder: ReorderBuffer<EventKey, (MessageEvent, u64)>,
    scopes: Table<ScopeState>,
    messages: Table<MessageSeen>,
    key: Vec<u8>,
    pub stats: WindowStats,
}

/// Everything a stage emits for one input.
#[derive(Debug, Default)]
pub struct WindowsOutput {
    pub opened: Vec<ConversationOpened>,
    pub rejected: Vec<Rejected>,
}

impl WindowsStage {
    pub fn new(
        profiles: Arc<Profiles>,
        lateness: Ts,
        dedupe_horizon: Ts,
        cache_entries: usize,
    ) -> Self {
        WindowsStage {
            profiles,
            dedupe_horizon,
            reorder: ReorderBuffer::new(lateness),
            scopes: Table::new(Family::Scopes, cache_entries),
            messages: Table::new(Family::Messages, cache_entries),
            key: Vec::with_capacity(64),
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
        let key = (ev.ts, ev.kind.rank(), ev.message_id.clone());
        match self.reorder.admit(ev.ts, key, (ev, position)) {
            Admit::Late((ev, pos)) => {
                self.stats.late += 1;
                self.apply(backend, &ev, pos, true, out)?;
            }
            Admit::Buffered => {}
        }
        while let Some((ev, pos)) = self.reorder.pop_ready(|k| k.0) {
            self.apply(backend, &ev, pos, false, out)?;
        }
        Ok(())
    }

    /// Applies everything still buffered (end of input, or an idle partition).
    pub fn flush(
        &mut self,
        backend: Option<&dyn Backend>,
        out: &mut WindowsOutput,
    ) -> Result<(), StoreError> {
        while let Some((ev, pos)) = self.reorder.pop_any() {
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
            self.stats.unsupported_era += 1;
            out.rejected.push(Rejected {
                reason: format!(
                    "era not supported yet: {} (event at {}, WABA {} in {})",
                    era_at.era.id.as_str(),
                    crate::billing::time::format_ts(ev.ts),
                    ev.waba_id,
                    profile.time_zone
                ),
                record: serde_json::to_string(ev).unwrap_or_default(),
                position,
            });
            return Ok(());
        };
        let bit = ev.kind.bit();
        let mut seen = self
            .messages
            .get(backend, ev.message_id.as_bytes())?
            .filter(|m| m.expires_at > ev.ts)
            .unwrap_or_default();
        if seen.seen & bit != 0 {
            self.stats.duplicates += 1;
            return Ok(());
        }
        if era_at.before_first {
            self.stats.before_first_era += 1;
        }
        seen.seen |= bit;
        seen.expires_at = seen
            .expires_at
            .max(ev.ts.saturating_add(self.dedupe_horizon));
        match ev.kind {
            EventKind::Inbound { referral } => {
                self.stats.inbound += 1;
                scope_key(&mut self.key, ev);
                let mut scope = self
                    .scopes
                    .get(backend, &self.key)?
                    .unwrap_or_default()
                    .live_at(ev.ts);
                policy.on_inbound(&mut scope, ev.ts, referral == Referral::Ad);
                self.scopes.put(&self.key, Some(scope));
            }
            EventKind::Status {
                status: StatusKind::Sent,
            } => self.stats.sent += 1,
            EventKind::Status {
                status: StatusKind::Failed,
            } => self.stats.failed += 1,
            EventKind::Status { status } => {
                if status == StatusKind::Delivered {
                    self.stats.delivered += 1;
                } else {
                    self.stats.read += 1;
                }
                if seen.seen & DELIVERY_APPLIED != 0 {
                    self.stats.redelivered += 1;
                } else {
                    seen.seen |= DELIVERY_APPLIED;
                    scope_key(&mut self.key, ev);
                    let mut scope = self
                        .scopes
                        .get(backend, &self.key)?
                        .unwrap_or_default()
                        .live_at(ev.ts);
                    let decision = policy.on_delivery(&mut scope, ev.ts, &profile.calendar);
                    self.scopes.put(&self.key, Some(scope));
                    match decision {
                        DeliveryDecision::Joined(_) => self.stats.joined += 1,
                        DeliveryDecision::Opened(c) => {
                            self.stats.opened += 1;
                            out.opened.push(ConversationOpened {
                                conversation_id: conversation_id(
                                    &ev.phone_number_id,
                                    &ev.user,
                                    policy.category(),
                                    c.opened_at,
                                ),
                                waba_id: ev.waba_id.clone(),
                                phone_number_id: ev.phone_number_id.clone(),
                                user: ev.user.clone(),
                                era: policy.era(),
                                origin: c.origin,
                                opened_at: c.opened_at,
                                expires_at: c.expires_at,
                                opening_message_id: ev.message_id.clone(),
                                country: ev.country,
                                late,
                            });
                        }
                    }
                }
            }
        }
        self.messages.put(ev.message_id.as_bytes(), Some(seen));
        Ok(())
    }

    /// Moves dirty state into `set` and trims the cache. `purge_before` is stream time
    /// minus a safety margin: state that expired before it is dropped from memory.
    pub fn drain(&mut self, set: &mut WriteSet, purge_before: Ts, has_backend: bool) {
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

    pub fn cached_entries(&self) -> usize {
        self.scopes.len() + self.messages.len()
    }
}

/// Store key of a scope: business number, NUL, user.
fn scope_key(key: &mut Vec<u8>, ev: &MessageEvent) {
    key.clear();
    key.extend_from_slice(ev.phone_number_id.as_bytes());
    key.push(0);
    key.extend_from_slice(ev.user.as_bytes());
}
