//! One policy per era (SPEC §2): the era table says *when*, a policy says *what*.

use super::era::{EraCalendar, EraId};
use super::window::{DeliveryDecision, ScopeState};
use super::Ts;

pub trait ConversationPolicy: Sync {
    fn era(&self) -> EraId;
    /// Conversation category for the id (SPEC §8): empty in `cbp-2022`.
    fn category(&self) -> &'static str;
    fn on_inbound(&self, scope: &mut ScopeState, t: Ts, referral_ad: bool);
    fn on_delivery(&self, scope: &mut ScopeState, d: Ts, calendar: &EraCalendar) -> DeliveryDecision;
}

pub struct Cbp2022;

impl ConversationPolicy for Cbp2022 {
    fn era(&self) -> EraId {
        EraId::Cbp2022
    }
    fn category(&self) -> &'static str {
        ""
    }
    fn on_inbound(&self, scope: &mut ScopeState, t: Ts, referral_ad: bool) {
        scope.on_inbound(t, referral_ad)
    }
    fn on_delivery(&self, scope: &mut ScopeState, d: Ts, calendar: &EraCalendar) -> DeliveryDecision {
        scope.on_delivery_2022(d, calendar.fep_duration(d))
    }
}

/// The implemented policy of an era, if any. Events of other eras are dead-lettered.
pub fn policy_for(era: EraId) -> Option<&'static dyn ConversationPolicy> {
    match era {
        EraId::Cbp2022 => Some(&Cbp2022),
        EraId::Cbp2023 | EraId::Cbp2024_11 | EraId::Pmp2025 => None,
    }
}
