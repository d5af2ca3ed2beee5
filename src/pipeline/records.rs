//! Records passed between stages and to sinks (docs/billing-rules.md §10).

use rust_decimal::Decimal;
use serde::Serialize;

use crate::billing::{Country, EraId, MessageCategory, MessagePricing, Origin, PricingType, Ts};

/// Output of the windows stage, input of the ledger: a conversation was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationOpened {
    pub conversation_id: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub user: String,
    pub era: EraId,
    pub origin: Origin,
    pub opened_at: Ts,
    pub expires_at: Ts,
    pub opening_message_id: String,
    pub country: Country,
    pub late: bool,
}

/// Output of the ledger: a priced conversation, the record billing systems consume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationBilled {
    pub opened: ConversationOpened,
    /// WABA-local `YYYY-MM` of `opened_at`.
    pub month: String,
    pub market: String,
    pub free_tier: bool,
    pub billable: bool,
    pub price: Decimal,
    pub billed_price: Decimal,
    pub currency: String,
}

/// The JSON/Avro field set of docs/billing-rules.md §10, in contract order; `kind` says which of the
/// record kinds of §8 a JSON line is (Avro says it by the record name).
#[derive(Serialize)]
pub struct BilledRecordOut<'a> {
    pub kind: &'static str,
    pub conversation_id: &'a str,
    pub waba_id: &'a str,
    pub phone_number_id: &'a str,
    pub user: &'a str,
    pub era: &'a str,
    pub origin: &'a str,
    pub opened_at: String,
    pub expires_at: String,
    pub month: &'a str,
    pub opening_message_id: &'a str,
    pub country: &'a str,
    pub market: &'a str,
    pub free_tier: bool,
    pub billable: bool,
    pub price: String,
    pub billed_price: String,
    pub currency: &'a str,
    pub late: bool,
}

impl ConversationBilled {
    pub fn to_out(&self) -> BilledRecordOut<'_> {
        let o = &self.opened;
        BilledRecordOut {
            kind: "conversation",
            conversation_id: &o.conversation_id,
            waba_id: &o.waba_id,
            phone_number_id: &o.phone_number_id,
            user: &o.user,
            era: o.era.as_str(),
            origin: o.origin.as_str(),
            opened_at: crate::billing::time::format_ts(o.opened_at),
            expires_at: crate::billing::time::format_ts(o.expires_at),
            month: &self.month,
            opening_message_id: &o.opening_message_id,
            country: o.country.as_str(),
            market: &self.market,
            free_tier: self.free_tier,
            billable: self.billable,
            price: crate::billing::money::to_output(self.price),
            billed_price: crate::billing::money::to_output(self.billed_price),
            currency: &self.currency,
            late: o.late,
        }
    }

    /// Output order: `opened_at`, then `conversation_id`.
    pub fn sort_key(&self) -> (Ts, &str) {
        (self.opened.opened_at, &self.opened.conversation_id)
    }
}

/// Output of the windows stage in a per-message era (docs/billing-rules.md §5): a business
/// message was delivered and is billed by itself; the ledger finishes its price.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageDelivered {
    pub charge_id: String,
    pub waba_id: String,
    pub phone_number_id: String,
    pub user: String,
    pub era: EraId,
    pub message_id: String,
    /// D (docs/billing-rules.md §1).
    pub delivered_at: Ts,
    pub country: Country,
    pub category: MessageCategory,
    pub pricing: MessagePricing,
    pub late: bool,
}

/// Output of the ledger in a per-message era: the message charge of docs/billing-rules.md §10.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageCharged {
    pub delivered: MessageDelivered,
    pub portfolio: String,
    /// WABA-local `YYYY-MM` of `delivered_at`.
    pub month: String,
    pub market: String,
    pub pricing_type: PricingType,
    /// The volume band that priced it (`"from:to"`), `None` when free or untiered.
    pub tier: Option<String>,
    pub billable: bool,
    pub price: Decimal,
    pub billed_price: Decimal,
    pub currency: String,
}

/// The JSON field set of docs/billing-rules.md §10, in contract order.
#[derive(Serialize)]
pub struct MessageChargeOut<'a> {
    pub kind: &'static str,
    pub charge_id: &'a str,
    pub waba_id: &'a str,
    pub portfolio: &'a str,
    pub phone_number_id: &'a str,
    pub user: &'a str,
    pub era: &'a str,
    pub message_id: &'a str,
    pub delivered_at: String,
    pub month: &'a str,
    pub category: &'a str,
    pub pricing_type: &'a str,
    pub tier: Option<&'a str>,
    pub country: &'a str,
    pub market: &'a str,
    pub billable: bool,
    pub price: String,
    pub billed_price: String,
    pub currency: &'a str,
    pub late: bool,
}

impl MessageCharged {
    pub fn to_out(&self) -> MessageChargeOut<'_> {
        let m = &self.delivered;
        MessageChargeOut {
            kind: "message",
            charge_id: &m.charge_id,
            waba_id: &m.waba_id,
            portfolio: &self.portfolio,
            phone_number_id: &m.phone_number_id,
            user: &m.user,
            era: m.era.as_str(),
            message_id: &m.message_id,
            delivered_at: crate::billing::time::format_ts(m.delivered_at),
            month: &self.month,
            category: m.category.as_str(),
            pricing_type: self.pricing_type.as_str(),
            tier: self.tier.as_deref(),
            country: m.country.as_str(),
            market: &self.market,
            billable: self.billable,
            price: crate::billing::money::to_output(self.price),
            billed_price: crate::billing::money::to_output(self.billed_price),
            currency: &self.currency,
            late: m.late,
        }
    }
}

/// A billing unit on its way from the windows stage to the ledger (the conversations
/// topic on Kafka carries both kinds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unit {
    Conversation(ConversationOpened),
    Message(MessageDelivered),
}

impl Unit {
    pub fn waba_id(&self) -> &str {
        match self {
            Unit::Conversation(c) => &c.waba_id,
            Unit::Message(m) => &m.waba_id,
        }
    }

    /// The instant the ledger orders it by: `opened_at`, or D.
    pub fn ts(&self) -> Ts {
        match self {
            Unit::Conversation(c) => c.opened_at,
            Unit::Message(m) => m.delivered_at,
        }
    }

    /// The tie-breaker of the ledger's order (docs/billing-rules.md §5 rule 5: (D, message
    /// id) for messages), moved out while the unit waits and put back by `restore_order_id`.
    pub fn take_order_id(&mut self) -> String {
        match self {
            Unit::Conversation(c) => std::mem::take(&mut c.conversation_id),
            Unit::Message(m) => std::mem::take(&mut m.message_id),
        }
    }

    pub fn restore_order_id(&mut self, id: String) {
        match self {
            Unit::Conversation(c) => c.conversation_id = id,
            Unit::Message(m) => m.message_id = id,
        }
    }
}

/// A record for the billing sinks: one per opened conversation or delivered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Billed {
    Conversation(ConversationBilled),
    Message(MessageCharged),
}

impl Billed {
    /// Output order: the unit's instant, then its id.
    pub fn sort_key(&self) -> (Ts, &str) {
        match self {
            Billed::Conversation(c) => c.sort_key(),
            Billed::Message(m) => (m.delivered.delivered_at, &m.delivered.charge_id),
        }
    }

    pub fn waba_id(&self) -> &str {
        match self {
            Billed::Conversation(c) => &c.opened.waba_id,
            Billed::Message(m) => &m.delivered.waba_id,
        }
    }

    pub fn conversation(&self) -> Option<&ConversationBilled> {
        match self {
            Billed::Conversation(c) => Some(c),
            Billed::Message(_) => None,
        }
    }

    pub fn message(&self) -> Option<&MessageCharged> {
        match self {
            Billed::Message(m) => Some(m),
            Billed::Conversation(_) => None,
        }
    }
}

/// The class of a rejection: what the dead-letter metric counts it as, decided where the
/// rejection is, not guessed later from the stage that emitted it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectClass {
    /// An event of an era whose rules are not implemented.
    UnsupportedEra,
    /// A delivery whose decision needs the message's kind, which is unknown (docs/billing-rules.md §6).
    UnknownCategory,
    /// A unit the rate card cannot price.
    Unpriceable,
}

/// Something a stage could not process: it goes to the dead-letter sink with the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub class: RejectClass,
    pub reason: String,
    /// The record as JSON (a normalised event or a conversation).
    pub record: String,
    /// Source position (input line in replay, offset in Kafka).
    pub position: u64,
}
