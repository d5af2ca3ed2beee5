//! One policy per era (docs/billing-rules.md §2): the era table says *when*, a policy says *what*.
//!
//! A policy owns everything that differs between eras: which slot (scope) a conversation
//! lives in, the decision at a delivery given the message's kind, whether that decision
//! needs the kind at all, which conversations take free tier and what a free one costs,
//! and the category that goes into the conversation id. The stages call `policy_for` and
//! `decide_delivery` and never name an era; a new era is a new `EraPolicy`, a row in
//! `POLICIES` and its tests.
//!
//! The era transition rule (docs/billing-rules.md §2: an open conversation runs to its expiry under its own
//! era's rules) lives in `decide_delivery`, and only there.

use super::era::{EraCalendar, EraId};
use super::message::{MessageCategory, MessagePricing, MessageVerdict, PricingType};
use super::origin::Origin;
use super::time::{Ts, DAY};
use super::window::{DeliveryDecision, OpenConversation, ScopeState, Slot};
use super::{MessageKind, TemplateCategory};

/// What the ledger does with a conversation of some origin (docs/billing-rules.md §3 rule 5, §4 rule 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pricing {
    /// Never charged, `billable = false` (free entry point).
    NotBillable,
    /// Free and `billable = false`, no free tier (`cbp-2024-11` service).
    Free,
    /// Takes the WABA-month's free tier while it lasts, else charged at the card's rate.
    FreeTierThenCharged,
    /// Charged at the card's rate.
    Charged,
}

/// The unit an era bills (docs/billing-rules.md §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BillingUnit {
    Conversation,
    Message,
}

/// Everything a delivery decision may look at besides the pair's state.
pub struct Delivery<'a> {
    pub d: Ts,
    /// Template of a category, non-template, or unknown (`None`).
    pub kind: Option<MessageKind>,
    pub calendar: &'a EraCalendar,
    /// docs/billing-rules.md §4 rule 3, asked only when an authentication template opens a conversation:
    /// the WABA bills authentication-international from a date on or before D, the user's
    /// country is not excluded, and the card in effect has the market's rate.
    pub auth_international: &'a dyn Fn() -> bool,
}

/// Whether a delivery joins a given open conversation under some era's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Join {
    Joins,
    DoesNot,
    /// Depends on the message's kind, which is unknown.
    NeedsKind,
}

pub trait EraPolicy: Sync {
    fn era(&self) -> EraId;

    fn unit(&self) -> BillingUnit {
        BillingUnit::Conversation
    }

    /// Conversation category for the id (docs/billing-rules.md §10): empty in `cbp-2022`.
    fn id_category(&self, origin: Origin) -> &'static str;

    /// Rule 1 (CSW) and the referral bookkeeping of rule 3: the same in every era so far.
    fn on_inbound(&self, scope: &mut ScopeState, t: Ts, referral_ad: bool) {
        scope.on_inbound(t, referral_ad)
    }

    /// Whether a delivery joins `open`, a conversation opened under this era and still
    /// open at the delivery, judged by this era's rules; changes nothing.
    fn joins(&self, scope: &ScopeState, open: &OpenConversation, delivery: &Delivery<'_>) -> Join;

    /// The decision of this era at a delivery (the era of the delivery's own instant).
    fn on_delivery(&self, scope: &mut ScopeState, delivery: &Delivery<'_>) -> DeliveryDecision;

    /// How the ledger prices a conversation of `origin` opened in this era.
    fn pricing(&self, origin: Origin) -> Pricing;

    /// Whether service messages of this era take a business number's monthly free tier
    /// (docs/billing-rules.md §5 rule 3).
    fn has_service_free_tier(&self) -> bool {
        false
    }

    /// Whether some conversation of this era can take the monthly free tier.
    fn has_free_tier(&self) -> bool {
        [Origin::UserInitiated, Origin::BusinessInitiated, Origin::Service]
            .into_iter()
            .any(|o| self.pricing(o) == Pricing::FreeTierThenCharged)
    }
}

/// `cbp-2022` (docs/billing-rules.md §3): one conversation per pair, user- or business-initiated by the
/// CSW; the message's kind never matters.
pub struct Cbp2022;

impl EraPolicy for Cbp2022 {
    fn era(&self) -> EraId {
        EraId::Cbp2022
    }

    fn id_category(&self, _origin: Origin) -> &'static str {
        ""
    }

    fn joins(&self, scope: &ScopeState, open: &OpenConversation, delivery: &Delivery<'_>) -> Join {
        // Order of rule 3: an open free entry point takes everything; a delivery that
        // would open a free entry point does not join; otherwise anything joins.
        if open.origin == Origin::FreeEntryPoint || !scope.fep_eligible(delivery.d) {
            Join::Joins
        } else {
            Join::DoesNot
        }
    }

    fn on_delivery(&self, scope: &mut ScopeState, delivery: &Delivery<'_>) -> DeliveryDecision {
        let d = delivery.d;
        if let Some(fep) = scope.fep_open_at(d) {
            return DeliveryDecision::Joined(fep);
        }
        if scope.fep_eligible(d) {
            // The 2022 scope is the pair: the free entry point replaces the conversation
            // in the pair slot (there is no other slot in this era).
            let fep = scope.open_fep(d, delivery.calendar.fep_duration(d), EraId::Cbp2022, false);
            return DeliveryDecision::Opened(fep);
        }
        if let Some(c) = scope.open_in(Slot::Pair, d) {
            return DeliveryDecision::Joined(c);
        }
        let origin = if d < scope.csw_until {
            Origin::UserInitiated
        } else {
            Origin::BusinessInitiated
        };
        let c = OpenConversation::new(d, DAY, origin, EraId::Cbp2022);
        scope.place(Slot::Pair, c);
        DeliveryDecision::Opened(c)
    }

    fn pricing(&self, origin: Origin) -> Pricing {
        match origin {
            Origin::FreeEntryPoint => Pricing::NotBillable,
            // Only these two exist in this era.
            _ => Pricing::FreeTierThenCharged,
        }
    }
}

/// `cbp-2023` and `cbp-2024-11` (docs/billing-rules.md §4): conversations by category, several open at
/// once. They differ only in how service conversations are priced.
pub struct CategoryEra {
    era: EraId,
    /// `cbp-2024-11`: every service conversation is free and there is no free tier.
    service_free: bool,
}

pub static CBP_2023: CategoryEra = CategoryEra {
    era: EraId::Cbp2023,
    service_free: false,
};
pub static CBP_2024_11: CategoryEra = CategoryEra {
    era: EraId::Cbp2024_11,
    service_free: true,
};

impl EraPolicy for CategoryEra {
    fn era(&self) -> EraId {
        self.era
    }

    fn id_category(&self, origin: Origin) -> &'static str {
        origin.as_str()
    }

    fn joins(&self, scope: &ScopeState, open: &OpenConversation, delivery: &Delivery<'_>) -> Join {
        if open.origin == Origin::FreeEntryPoint {
            return Join::Joins;
        }
        if scope.fep_eligible(delivery.d) {
            return Join::DoesNot;
        }
        match delivery.kind {
            None => Join::NeedsKind,
            // Free-form messages join any open conversation.
            Some(MessageKind::NonTemplate) => Join::Joins,
            Some(MessageKind::Template(c)) if Slot::of_template(c) == Slot::of_origin(open.origin) => Join::Joins,
            Some(MessageKind::Template(_)) => Join::DoesNot,
        }
    }

    fn on_delivery(&self, scope: &mut ScopeState, delivery: &Delivery<'_>) -> DeliveryDecision {
        let d = delivery.d;
        // 1. Free entry point: an open one takes everything; an eligible delivery opens
        //    one (72 h from 2023-03-01) and closes every other conversation of the pair.
        if let Some(fep) = scope.fep_open_at(d) {
            return DeliveryDecision::Joined(fep);
        }
        if scope.fep_eligible(d) {
            let fep = scope.open_fep(d, delivery.calendar.fep_duration(d), self.era, true);
            return DeliveryDecision::Opened(fep);
        }
        let (slot, origin) = match delivery.kind {
            None => return DeliveryDecision::NeedsKind,
            // 2. A template of category C joins the open C conversation, else opens one,
            //    whether or not a CSW is open.
            Some(MessageKind::Template(c)) => {
                let slot = Slot::of_template(c);
                if let Some(open) = scope.open_in(slot, d) {
                    return DeliveryDecision::Joined(open);
                }
                let origin = match c {
                    TemplateCategory::Marketing | TemplateCategory::MarketingLite => Origin::Marketing,
                    TemplateCategory::Utility => Origin::Utility,
                    TemplateCategory::Authentication if (delivery.auth_international)() => {
                        Origin::AuthenticationInternational
                    }
                    TemplateCategory::Authentication => Origin::Authentication,
                };
                (slot, origin)
            }
            // 3. A non-template joins any open conversation, else opens a service one.
            Some(MessageKind::NonTemplate) => {
                if let Some(open) = category_slots(scope, d).next() {
                    return DeliveryDecision::Joined(open);
                }
                (Slot::Service, Origin::Service)
            }
        };
        let c = OpenConversation::new(d, DAY, origin, self.era);
        scope.place(slot, c);
        DeliveryDecision::Opened(c)
    }

    fn pricing(&self, origin: Origin) -> Pricing {
        match origin {
            Origin::FreeEntryPoint => Pricing::NotBillable,
            Origin::Service if self.service_free => Pricing::Free,
            Origin::Service => Pricing::FreeTierThenCharged,
            _ => Pricing::Charged,
        }
    }
}

/// `pmp-2025-07` and `pmp-2026-10` (docs/billing-rules.md §5): every delivered business message
/// is billed by itself. The pair's state still decides the free parts (a free entry point
/// window, the customer service window); the ledger finishes the price with its counters.
/// They differ in what is free outside a free entry point window.
pub struct PerMessageEra {
    era: EraId,
    /// `pmp-2025-07`: utility templates inside the CSW and every non-template are free.
    /// `pmp-2026-10`: templates are always charged; non-templates take the business
    /// number's service free tier, then are charged.
    csw_free: bool,
}

pub static PMP_2025_07: PerMessageEra = PerMessageEra {
    era: EraId::Pmp2025_07,
    csw_free: true,
};
pub static PMP_2026_10: PerMessageEra = PerMessageEra {
    era: EraId::Pmp2026_10,
    csw_free: false,
};

impl EraPolicy for PerMessageEra {
    fn era(&self) -> EraId {
        self.era
    }

    fn unit(&self) -> BillingUnit {
        BillingUnit::Message
    }

    /// No conversation of a message era is ever billed (its free entry point windows are
    /// state, not records).
    fn id_category(&self, _origin: Origin) -> &'static str {
        ""
    }

    /// A free entry point window of a message era is not a conversation a later delivery
    /// "joins" without a record: every message era judges it itself (rule 1), so a window
    /// opened in `pmp-2025-07` still frees messages delivered in `pmp-2026-10`.
    fn joins(&self, _scope: &ScopeState, _open: &OpenConversation, _delivery: &Delivery<'_>) -> Join {
        Join::DoesNot
    }

    fn on_delivery(&self, scope: &mut ScopeState, delivery: &Delivery<'_>) -> DeliveryDecision {
        let d = delivery.d;
        let free_entry_point = MessageVerdict {
            category: MessageCategory::ReferralConversion,
            pricing: MessagePricing::Free(PricingType::FreeEntryPoint),
        };
        // Rule 1: inside an open free entry point window, or opening one (72 h), whatever
        // the message's kind.
        if scope.fep_open_at(d).is_some() {
            return DeliveryDecision::Message(free_entry_point);
        }
        if scope.fep_eligible(d) {
            scope.open_fep(d, delivery.calendar.fep_duration(d), self.era, true);
            return DeliveryDecision::Message(free_entry_point);
        }
        let verdict = match delivery.kind {
            None => return DeliveryDecision::NeedsKind,
            // Rules 2 and 3: non-template (service) messages.
            Some(MessageKind::NonTemplate) => MessageVerdict {
                category: MessageCategory::Service,
                pricing: if self.csw_free {
                    MessagePricing::Free(PricingType::FreeCustomerService)
                } else {
                    MessagePricing::ServiceFreeTierThenCharged
                },
            },
            Some(MessageKind::Template(c)) => {
                let category = match c {
                    TemplateCategory::Marketing => MessageCategory::Marketing,
                    TemplateCategory::MarketingLite => MessageCategory::MarketingLite,
                    TemplateCategory::Utility => MessageCategory::Utility,
                    // Rule 4: as docs/billing-rules.md §4 rule 3, per message.
                    TemplateCategory::Authentication if (delivery.auth_international)() => {
                        MessageCategory::AuthenticationInternational
                    }
                    TemplateCategory::Authentication => MessageCategory::Authentication,
                };
                let free = self.csw_free && category == MessageCategory::Utility && d < scope.csw_until;
                MessageVerdict {
                    category,
                    pricing: if free {
                        MessagePricing::Free(PricingType::FreeCustomerService)
                    } else {
                        MessagePricing::Charged
                    },
                }
            }
        };
        DeliveryDecision::Message(verdict)
    }

    fn has_service_free_tier(&self) -> bool {
        !self.csw_free
    }

    /// Message eras bill no conversation (and so have no conversation free tier).
    fn pricing(&self, _origin: Origin) -> Pricing {
        Pricing::NotBillable
    }
}

/// Open conversations of the category slots (the pair slot holds no category).
fn category_slots(scope: &ScopeState, d: Ts) -> impl Iterator<Item = OpenConversation> + '_ {
    Slot::ALL[1..].iter().filter_map(move |s| scope.open_in(*s, d))
}

/// The era table's policies (docs/billing-rules.md §2). Eras without one are dead-lettered as not
/// supported yet, never billed with another era's rules.
static POLICIES: &[(EraId, &dyn EraPolicy)] = &[
    (EraId::Cbp2022, &Cbp2022),
    (EraId::Cbp2023, &CBP_2023),
    (EraId::Cbp2024_11, &CBP_2024_11),
    (EraId::Pmp2025_07, &PMP_2025_07),
    (EraId::Pmp2026_10, &PMP_2026_10),
];

/// The implemented policy of an era, if any.
pub fn policy_for(era: EraId) -> Option<&'static dyn EraPolicy> {
    POLICIES.iter().find(|(e, _)| *e == era).map(|(_, p)| *p)
}

/// The decision at a delivery, with the era transition rule of docs/billing-rules.md §2: a conversation
/// opened in an earlier era and still open at D is judged by *its* era's rules first — a
/// delivery that joins it under them joins it; any other delivery is decided by `now`,
/// the policy of D's own era.
pub fn decide_delivery(scope: &mut ScopeState, now: &dyn EraPolicy, delivery: &Delivery<'_>) -> DeliveryDecision {
    let d = delivery.d;
    let mut needs_kind = false;
    for open in scope.open_at(d) {
        if open.era == now.era() {
            continue;
        }
        let Some(theirs) = policy_for(open.era) else {
            continue;
        };
        match theirs.joins(scope, &open, delivery) {
            Join::Joins => return DeliveryDecision::Joined(open),
            Join::NeedsKind => needs_kind = true,
            Join::DoesNot => {}
        }
    }
    if needs_kind {
        // Whether an earlier era's conversation takes it depends on the unknown kind:
        // never guess (docs/billing-rules.md §6).
        return DeliveryDecision::NeedsKind;
    }
    now.on_delivery(scope, delivery)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::billing::time::HOUR as H;

    fn cal() -> EraCalendar {
        EraCalendar::new(&chrono_tz::UTC)
    }

    fn deliver(s: &mut ScopeState, d: Ts, kind: Option<MessageKind>) -> DeliveryDecision {
        let cal = cal();
        let now = policy_for(cal.era_at(d).era.id).unwrap();
        let no = || false;
        decide_delivery(
            s,
            now,
            &Delivery {
                d,
                kind,
                calendar: &cal,
                auth_international: &no,
            },
        )
    }

    const T: Option<MessageKind> = Some(MessageKind::NonTemplate);
    const MKT: Option<MessageKind> = Some(MessageKind::Template(TemplateCategory::Marketing));
    const UTIL: Option<MessageKind> = Some(MessageKind::Template(TemplateCategory::Utility));
    /// 2023-07-03T00:00:00Z, a Monday of cbp-2023.
    const J: Ts = 1_688_342_400;

    fn opened(d: DeliveryDecision) -> OpenConversation {
        match d {
            DeliveryDecision::Opened(c) => c,
            other => panic!("expected an opening, got {other:?}"),
        }
    }

    #[test]
    fn metas_worked_example() {
        // docs/billing-rules.md §4: H0 marketing template → MARKETING opens; H4 user writes; H5 free-form →
        // joins MARKETING; H24 MARKETING expires; H25 free-form → SERVICE opens; H26
        // free-form → joins SERVICE.
        let mut s = ScopeState::default();
        let m = opened(deliver(&mut s, J, MKT));
        assert_eq!((m.origin, m.expires_at()), (Origin::Marketing, J + 24 * H));
        s.on_inbound(J + 4 * H, false);
        assert_eq!(deliver(&mut s, J + 5 * H, T), DeliveryDecision::Joined(m));
        let svc = opened(deliver(&mut s, J + 25 * H, T));
        assert_eq!(svc.origin, Origin::Service);
        assert_eq!(deliver(&mut s, J + 26 * H, T), DeliveryDecision::Joined(svc));
    }

    #[test]
    fn open_service_plus_utility_template_opens_utility() {
        let mut s = ScopeState::default();
        s.on_inbound(J, false);
        let svc = opened(deliver(&mut s, J + H, T));
        assert_eq!(svc.origin, Origin::Service);
        let u = opened(deliver(&mut s, J + 2 * H, UTIL));
        assert_eq!(u.origin, Origin::Utility);
        // Both stay open: another utility joins utility, free-form joins one of them.
        assert_eq!(deliver(&mut s, J + 3 * H, UTIL), DeliveryDecision::Joined(u));
        assert!(matches!(deliver(&mut s, J + 3 * H, T), DeliveryDecision::Joined(_)));
    }

    #[test]
    fn unknown_kind_is_needed_unless_a_free_entry_point_decides() {
        let mut s = ScopeState::default();
        assert_eq!(deliver(&mut s, J, None), DeliveryDecision::NeedsKind);
        assert_eq!(s, ScopeState::default(), "nothing changes");
        s.on_inbound(J, true);
        let fep = opened(deliver(&mut s, J + H, None));
        assert_eq!((fep.origin, fep.duration), (Origin::FreeEntryPoint, 72 * 3600));
        assert_eq!(deliver(&mut s, J + 2 * H, None), DeliveryDecision::Joined(fep));
    }

    #[test]
    fn a_2022_conversation_open_across_the_boundary_absorbs_any_delivery() {
        // 2023-06-01T00:00:00Z in UTC. Opened 23:00 on May 31st under cbp-2022.
        let b = 1_685_577_600;
        let mut s = ScopeState::default();
        let c = opened(deliver(&mut s, b - H, None));
        assert_eq!((c.era, c.origin), (EraId::Cbp2022, Origin::BusinessInitiated));
        // After midnight a marketing template, and a message of unknown kind, join it.
        assert_eq!(deliver(&mut s, b + H, MKT), DeliveryDecision::Joined(c));
        assert_eq!(deliver(&mut s, b + 2 * H, None), DeliveryDecision::Joined(c));
        // After it expires, the category era decides.
        let m = opened(deliver(&mut s, b + 23 * H, MKT));
        assert_eq!((m.era, m.origin), (EraId::Cbp2023, Origin::Marketing));
    }
}
