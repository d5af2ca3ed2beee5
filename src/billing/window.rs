//! The per-scope state machine of SPEC §3 for one (business number, user): the customer
//! service window, the open conversation and free-entry-point eligibility.
//!
//! Everything here is a pure function of the state and an event time; the pipeline calls
//! it in event-time order, which is what makes replay and the Kafka path agree.

use super::origin::Origin;
use super::time::{Ts, DAY};

/// A conversation as the window state remembers it (the rest of the record is rebuilt
/// from the event that opened it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenConversation {
    pub opened_at: Ts,
    pub expires_at: Ts,
    pub origin: Origin,
}

impl OpenConversation {
    /// Half-open: `[opened_at, expires_at)`.
    pub fn is_open_at(&self, ts: Ts) -> bool {
        self.opened_at <= ts && ts < self.expires_at
    }
}

/// State of one scope. `Default` is "never seen", and a state whose timers have all run
/// out behaves exactly like the default: that is what lets the store drop it by expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeState {
    /// End of the customer service window (exclusive); `Ts::MIN` when none.
    pub csw_until: Ts,
    /// Timestamp of the latest inbound message; `Ts::MIN` when none.
    pub last_inbound_at: Ts,
    /// Whether that latest inbound message carried an ad referral (`source_type = "ad"`).
    pub last_inbound_ad: bool,
    /// Whether a free entry point conversation was already opened from that referral.
    pub fep_consumed: bool,
    /// The latest conversation opened in this scope, open or not.
    pub conv: Option<OpenConversation>,
}

impl Default for ScopeState {
    fn default() -> Self {
        ScopeState {
            csw_until: Ts::MIN,
            last_inbound_at: Ts::MIN,
            last_inbound_ad: false,
            fep_consumed: false,
            conv: None,
        }
    }
}

/// What a delivery did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryDecision {
    /// Joined the conversation already open; costs nothing more.
    Joined(OpenConversation),
    /// Opened a new conversation.
    Opened(OpenConversation),
}

impl ScopeState {
    /// The instant after which this state can no longer influence any decision, so the
    /// store may forget it (SPEC: expiry lives in the value, compaction drops it).
    pub fn expires_at(&self) -> Ts {
        let mut e = self.csw_until;
        if let Some(c) = self.conv {
            e = e.max(c.expires_at);
        }
        if self.last_inbound_at != Ts::MIN {
            e = e.max(self.last_inbound_at.saturating_add(DAY));
        }
        e
    }

    /// The state as seen by an event at `ts`: an expired state reads as empty, so the
    /// outcome never depends on whether compaction already removed it.
    pub fn live_at(self, ts: Ts) -> ScopeState {
        if self.expires_at() <= ts {
            ScopeState::default()
        } else {
            self
        }
    }

    /// Rule 1: an inbound user message at `t` (re)opens the customer service window; rule 3
    /// remembers whether it came from an ad for the free entry point.
    pub fn on_inbound(&mut self, t: Ts, referral_ad: bool) {
        self.csw_until = self.csw_until.max(t.saturating_add(DAY));
        if t >= self.last_inbound_at {
            self.last_inbound_at = t;
            self.last_inbound_ad = referral_ad;
            self.fep_consumed = false;
        }
    }

    /// Rules 2–4 of `cbp-2022` at delivery instant `d`. `fep_duration` is 24 h or 72 h
    /// depending on the date (decided by the caller's era calendar).
    pub fn on_delivery_2022(&mut self, d: Ts, fep_duration: Ts) -> DeliveryDecision {
        let current = self.conv;
        let fep_eligible = self.last_inbound_ad
            && !self.fep_consumed
            && self.last_inbound_at <= d
            && d < self.last_inbound_at.saturating_add(DAY);

        if let Some(c) = current {
            // An open free entry point suppresses every other conversation.
            if c.origin == Origin::FreeEntryPoint && c.is_open_at(d) {
                return DeliveryDecision::Joined(c);
            }
        }
        let opened = if fep_eligible {
            self.fep_consumed = true;
            OpenConversation {
                opened_at: d,
                expires_at: d.saturating_add(fep_duration),
                origin: Origin::FreeEntryPoint,
            }
        } else {
            if let Some(c) = current {
                if c.is_open_at(d) {
                    return DeliveryDecision::Joined(c);
                }
            }
            let origin = if d < self.csw_until {
                Origin::UserInitiated
            } else {
                Origin::BusinessInitiated
            };
            OpenConversation {
                opened_at: d,
                expires_at: d.saturating_add(DAY),
                origin,
            }
        };
        // A late delivery from before the current conversation opens its own (late)
        // conversation but never replaces the newer one the state already decided on.
        match current {
            Some(c) if c.opened_at > d => {}
            _ => self.conv = Some(opened),
        }
        DeliveryDecision::Opened(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: Ts = 3600;

    #[test]
    fn csw_is_half_open_and_rolling() {
        let mut s = ScopeState::default();
        s.on_inbound(0, false);
        s.on_inbound(10 * H, false);
        assert_eq!(s.csw_until, 34 * H);
        // Exactly at csw_until the window is closed: business-initiated.
        match s.on_delivery_2022(34 * H, 24 * H) {
            DeliveryDecision::Opened(c) => assert_eq!(c.origin, Origin::BusinessInitiated),
            d => panic!("{d:?}"),
        }
    }

    #[test]
    fn conversation_is_half_open() {
        let mut s = ScopeState::default();
        let DeliveryDecision::Opened(first) = s.on_delivery_2022(0, 24 * H) else {
            panic!()
        };
        assert!(matches!(
            s.on_delivery_2022(24 * H - 1, 24 * H),
            DeliveryDecision::Joined(_)
        ));
        let DeliveryDecision::Opened(second) = s.on_delivery_2022(24 * H, 24 * H) else {
            panic!()
        };
        assert_eq!(second.opened_at, first.expires_at);
    }

    #[test]
    fn fep_preempts_open_conversation_and_is_used_once() {
        let mut s = ScopeState::default();
        s.on_inbound(0, false);
        let DeliveryDecision::Opened(uic) = s.on_delivery_2022(H, 24 * H) else {
            panic!()
        };
        assert_eq!(uic.origin, Origin::UserInitiated);
        s.on_inbound(2 * H, true);
        let DeliveryDecision::Opened(fep) = s.on_delivery_2022(3 * H, 72 * H) else {
            panic!()
        };
        assert_eq!(fep.origin, Origin::FreeEntryPoint);
        assert_eq!(fep.expires_at, 75 * H);
        // Inside the FEP everything joins it, even after the referral's 24 h.
        assert!(matches!(s.on_delivery_2022(74 * H, 72 * H), DeliveryDecision::Joined(c) if c == fep));
        // After it: the referral was used, so a normal conversation opens.
        let DeliveryDecision::Opened(next) = s.on_delivery_2022(75 * H, 72 * H) else {
            panic!()
        };
        assert_eq!(next.origin, Origin::BusinessInitiated);
    }

    #[test]
    fn fep_needs_reply_within_24h_and_ad_source() {
        let mut s = ScopeState::default();
        s.on_inbound(0, true);
        let DeliveryDecision::Opened(c) = s.on_delivery_2022(24 * H, 72 * H) else {
            panic!()
        };
        assert_eq!(c.origin, Origin::BusinessInitiated);
    }

    #[test]
    fn expired_state_reads_as_empty() {
        let mut s = ScopeState::default();
        s.on_inbound(0, true);
        s.on_delivery_2022(H, 72 * H);
        let e = s.expires_at();
        assert_eq!(s.live_at(e), ScopeState::default());
        assert_eq!(s.live_at(e - 1), s);
    }
}
