//! The state of one (business number, user) pair: the customer service window, free entry
//! point eligibility and the conversations open between them (docs/billing-rules.md §3, §4).
//!
//! One record per pair, not per conversation scope, because the rules that cross scopes
//! are per pair: the CSW, and a free entry point that closes every other conversation of
//! the pair. Inside it, conversations live in *slots*: the pair-wide slot holds `cbp-2022`
//! conversations (whose scope is the pair) and every free entry point; the category eras
//! (scope: pair + category) use one slot per category. Each conversation remembers the era
//! it opened in, so an open conversation runs to its expiry under that era's rules
//! (`policy::decide_delivery`).
//!
//! The decisions themselves are in `policy.rs` (one policy per era); this file holds the
//! state and the primitives every policy shares. All pure functions of state and event time.

use super::era::EraId;
use super::message::MessageVerdict;
use super::origin::Origin;
use super::time::{Ts, DAY};
use super::TemplateCategory;

/// A conversation as the window state remembers it (the rest of the record is rebuilt
/// from the event that opened it). 16 bytes: a pair holds five.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenConversation {
    pub opened_at: Ts,
    /// Length in seconds (24 h, or 24/72 h for a free entry point).
    pub duration: u32,
    pub origin: Origin,
    pub era: EraId,
}

impl OpenConversation {
    pub fn new(opened_at: Ts, duration: Ts, origin: Origin, era: EraId) -> Self {
        OpenConversation {
            opened_at,
            duration: u32::try_from(duration.max(0)).unwrap_or(u32::MAX),
            origin,
            era,
        }
    }

    pub fn expires_at(&self) -> Ts {
        self.opened_at.saturating_add(Ts::from(self.duration))
    }

    /// Half-open: `[opened_at, expires_at)`.
    pub fn is_open_at(&self, ts: Ts) -> bool {
        self.opened_at <= ts && ts < self.expires_at()
    }
}

/// Where a conversation lives in `ScopeState::convs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// `cbp-2022` conversations and every free entry point: scope = the pair.
    Pair = 0,
    Marketing = 1,
    Utility = 2,
    /// `authentication` and `authentication_international` share one scope (docs/billing-rules.md §9).
    Authentication = 3,
    Service = 4,
}

pub const SLOTS: usize = 5;

impl Slot {
    pub const ALL: [Slot; SLOTS] = [
        Slot::Pair,
        Slot::Marketing,
        Slot::Utility,
        Slot::Authentication,
        Slot::Service,
    ];

    /// The category slot of a template (`marketing_lite` is marketing in the
    /// conversation eras, docs/billing-rules.md §9).
    pub fn of_template(c: TemplateCategory) -> Slot {
        match c {
            TemplateCategory::Marketing | TemplateCategory::MarketingLite => Slot::Marketing,
            TemplateCategory::Utility => Slot::Utility,
            TemplateCategory::Authentication => Slot::Authentication,
        }
    }

    /// The slot a conversation of `origin` lives in.
    pub fn of_origin(o: Origin) -> Slot {
        match o {
            Origin::UserInitiated | Origin::BusinessInitiated | Origin::FreeEntryPoint => Slot::Pair,
            Origin::Marketing => Slot::Marketing,
            Origin::Utility => Slot::Utility,
            Origin::Authentication | Origin::AuthenticationInternational => Slot::Authentication,
            Origin::Service => Slot::Service,
        }
    }
}

/// State of one pair. `Default` is "never seen", and a state whose timers have all run
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
    /// The latest conversation opened in each slot, open or not.
    pub convs: [Option<OpenConversation>; SLOTS],
}

impl Default for ScopeState {
    fn default() -> Self {
        ScopeState {
            csw_until: Ts::MIN,
            last_inbound_at: Ts::MIN,
            last_inbound_ad: false,
            fep_consumed: false,
            convs: [None; SLOTS],
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
    /// The decision depends on the message's kind (template of which category, or not),
    /// and it is unknown: nothing changed; the caller dead-letters the delivery.
    NeedsKind,
    /// A per-message era billed the message itself (docs/billing-rules.md §5): what it is
    /// billed as; the ledger finishes the price.
    Message(MessageVerdict),
}

impl ScopeState {
    /// The instant after which this state can no longer influence any decision, so the
    /// store may forget it (design: expiry lives in the value, compaction drops it).
    pub fn expires_at(&self) -> Ts {
        let mut e = self.csw_until;
        for c in self.convs.iter().flatten() {
            e = e.max(c.expires_at());
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

    pub fn slot(&self, s: Slot) -> Option<OpenConversation> {
        self.convs[s as usize]
    }

    /// The conversation of slot `s` open at `d`, if any.
    pub fn open_in(&self, s: Slot, d: Ts) -> Option<OpenConversation> {
        self.slot(s).filter(|c| c.is_open_at(d))
    }

    /// Every conversation open at `d`, pair slot first.
    pub fn open_at(&self, d: Ts) -> impl Iterator<Item = OpenConversation> + '_ {
        self.convs.iter().flatten().copied().filter(move |c| c.is_open_at(d))
    }

    /// The open free entry point conversation at `d`: it suppresses every other one.
    pub fn fep_open_at(&self, d: Ts) -> Option<OpenConversation> {
        self.open_in(Slot::Pair, d)
            .filter(|c| c.origin == Origin::FreeEntryPoint)
    }

    /// Rule 3: a delivery at `d` opens a free entry point when the latest inbound message
    /// (at or before `d`, less than 24 h before it) came from an ad and no free entry
    /// point was opened from it yet.
    pub fn fep_eligible(&self, d: Ts) -> bool {
        self.last_inbound_ad
            && !self.fep_consumed
            && self.last_inbound_at <= d
            && d < self.last_inbound_at.saturating_add(DAY)
    }

    /// Records a conversation opened at `c.opened_at` in slot `s`. A late delivery from
    /// before the slot's current conversation opens its own (late) conversation but never
    /// replaces the newer one the state already decided on.
    pub fn place(&mut self, s: Slot, c: OpenConversation) {
        match self.convs[s as usize] {
            Some(cur) if cur.opened_at > c.opened_at => {}
            _ => self.convs[s as usize] = Some(c),
        }
    }

    /// Opens a free entry point at `d` in the pair slot (rule 3), using up the referral.
    /// With `closes_others` (the category eras: it "closes every other open conversation"),
    /// the conversations of the other slots that opened at or before `d` are forgotten:
    /// they stay charged, and their records are not rewritten.
    pub fn open_fep(&mut self, d: Ts, duration: Ts, era: EraId, closes_others: bool) -> OpenConversation {
        self.fep_consumed = true;
        let fep = OpenConversation::new(d, duration, Origin::FreeEntryPoint, era);
        if closes_others {
            for s in &mut self.convs[1..] {
                if s.is_some_and(|c| c.opened_at <= d) {
                    *s = None;
                }
            }
        }
        self.place(Slot::Pair, fep);
        fep
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const H: Ts = 3600;

    #[test]
    fn slots_are_16_bytes() {
        // Five per pair, in a table of every live pair: size matters (BENCHMARKS.md).
        assert_eq!(std::mem::size_of::<Option<OpenConversation>>(), 16);
    }

    #[test]
    fn expired_state_reads_as_empty() {
        let mut s = ScopeState::default();
        s.on_inbound(0, true);
        s.open_fep(H, 72 * H, EraId::Cbp2023, true);
        let e = s.expires_at();
        // The free entry point (opened at 1 h, 72 h long) outlives the CSW and referral.
        assert_eq!(e, 73 * H);
        assert_eq!(s.live_at(e), ScopeState::default());
        assert_eq!(s.live_at(e - 1), s);
    }

    #[test]
    fn place_never_replaces_a_newer_conversation() {
        let mut s = ScopeState::default();
        let newer = OpenConversation::new(10 * H, DAY, Origin::Utility, EraId::Cbp2023);
        let older = OpenConversation::new(5 * H, DAY, Origin::Utility, EraId::Cbp2023);
        s.place(Slot::Utility, newer);
        s.place(Slot::Utility, older);
        assert_eq!(s.slot(Slot::Utility), Some(newer));
    }

    #[test]
    fn fep_closes_other_slots_only_in_category_eras() {
        let mut s = ScopeState::default();
        let m = OpenConversation::new(0, DAY, Origin::Marketing, EraId::Cbp2023);
        s.place(Slot::Marketing, m);
        s.on_inbound(H, true);
        let mut kept = s;
        kept.open_fep(2 * H, 72 * H, EraId::Cbp2022, false);
        assert_eq!(kept.slot(Slot::Marketing), Some(m));
        s.open_fep(2 * H, 72 * H, EraId::Cbp2023, true);
        assert_eq!(s.slot(Slot::Marketing), None);
        assert!(s.fep_consumed);
        assert!(s.fep_open_at(2 * H).is_some());
    }
}
