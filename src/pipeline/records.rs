//! Records passed between stages and to sinks (docs/billing-rules.md §10).

use rust_decimal::Decimal;
use serde::Serialize;

use crate::billing::{Country, EraId, Origin, Ts};

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
