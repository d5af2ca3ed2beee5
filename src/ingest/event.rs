//! The normalised event every stage after ingest works on: one per inbound message or
//! status, whatever payload shape it came in.

use serde::Serialize;

use crate::billing::{Country, MessageKind, Origin, Ts};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusKind {
    Sent,
    Delivered,
    Read,
    Failed,
}

impl StatusKind {
    pub fn parse(s: &str) -> Option<StatusKind> {
        Some(match s {
            "sent" => StatusKind::Sent,
            "delivered" => StatusKind::Delivered,
            "read" => StatusKind::Read,
            "failed" => StatusKind::Failed,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            StatusKind::Sent => "sent",
            StatusKind::Delivered => "delivered",
            StatusKind::Read => "read",
            StatusKind::Failed => "failed",
        }
    }
}

/// Where an inbound message came from, as far as the free entry point cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Referral {
    None,
    /// `referral.source_type = "ad"`: Click-to-WhatsApp ad or Page call-to-action.
    Ad,
    /// Any other source (e.g. `"post"`): not a free entry point.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    Inbound {
        referral: Referral,
    },
    Status {
        status: StatusKind,
    },
    /// The BSP's send-log record of a business message (docs/billing-rules.md §6): says what the message
    /// is (`MessageEvent::message_kind`), decides nothing by itself.
    SendLog,
}

impl EventKind {
    /// Dedupe bit (docs/billing-rules.md §8): an inbound id, or one (id, status) pair.
    pub fn bit(self) -> u8 {
        match self {
            EventKind::Inbound { .. } => 1,
            EventKind::Status {
                status: StatusKind::Sent,
            } => 2,
            EventKind::Status {
                status: StatusKind::Delivered,
            } => 4,
            EventKind::Status {
                status: StatusKind::Read,
            } => 8,
            EventKind::Status {
                status: StatusKind::Failed,
            } => 16,
            EventKind::SendLog => 32,
        }
    }

    /// Lifecycle rank: inbound, then send log < sent < delivered < read < failed. Used to
    /// order events of one message at one timestamp (the send log says what a message is
    /// before its statuses are applied).
    pub fn rank(self) -> u8 {
        match self {
            EventKind::Inbound { .. } => 0,
            EventKind::SendLog => 1,
            EventKind::Status { status } => 2 + status as u8,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            EventKind::Inbound { .. } => "inbound",
            EventKind::Status { status } => status.as_str(),
            EventKind::SendLog => "send_log",
        }
    }
}

/// What Meta said about pricing on a status, kept only for reconciliation: it never
/// decides anything in the `cbp-*` eras (docs/billing-rules.md §6).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct MetaPricing {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub billable: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageEvent {
    pub ts: Ts,
    pub waba_id: String,
    pub phone_number_id: String,
    /// The end user's `wa_id`: the partition key of the events topic.
    pub user: String,
    pub message_id: String,
    #[serde(flatten)]
    pub kind: EventKind,
    #[serde(serialize_with = "ser_country")]
    pub country: Country,
    /// libphonenumber's verdict; invalid numbers are billed but counted.
    pub number_valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub meta: Option<MetaPricing>,
    /// What the business message is: from the send log (`SendLog` events, always set), or
    /// from Meta's `pricing.category` on a status (the fallback, docs/billing-rules.md §6; `None` when
    /// absent or saying nothing of the kind). Always `None` on inbound messages.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "ser_kind")]
    pub message_kind: Option<MessageKind>,
}

fn ser_kind<S: serde::Serializer>(k: &Option<MessageKind>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.serialize_str(k.as_str()),
        None => s.serialize_none(),
    }
}

fn ser_country<S: serde::Serializer>(c: &Country, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(c.as_str())
}
