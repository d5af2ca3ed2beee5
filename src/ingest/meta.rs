//! Meta webhook payloads → `MessageEvent`s.
//!
//! The envelope is parsed first with every message and status kept as raw JSON, then each
//! one on its own: a bad status (missing timestamp, wrong type, bad number) becomes one
//! dead letter and the rest of the payload is still billed.

use std::borrow::Cow;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::value::RawValue;
use thiserror::Error;

use super::event::{EventKind, MessageEvent, MetaPricing, Referral, StatusKind};
use crate::billing::{CountryResolver, MessageKind, Origin, TemplateCategory, Ts};

/// A whole payload that cannot be used: one dead letter for the line.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PayloadError {
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    #[error("payload has the wrong shape: {0}")]
    Shape(String),
    #[error("payload object is {0:?}, not \"whatsapp_business_account\"")]
    WrongObject(String),
    #[error("payload has neither `entry` (Cloud API) nor `messages`/`statuses` (On-Premises)")]
    NotWebhook,
    #[error("On-Premises payload, but no [on_premises] waba_id/phone_number_id is configured")]
    OnPremisesNotConfigured,
    #[error("payload of {size} bytes exceeds max_payload_bytes ({max})")]
    TooLarge { size: usize, max: usize },
    #[error("send-log record: {0}")]
    SendLog(String),
}

/// One event inside a payload that cannot be billed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEvent {
    /// JSON path inside the payload, e.g. `entry[0].changes[1].value.statuses[3]`.
    pub path: String,
    pub reason: String,
    /// The event's own JSON text.
    pub original: String,
    pub waba_id: Option<String>,
    pub phone_number_id: Option<String>,
}

/// Counters of what a payload held besides billable events.
#[derive(Debug, Default, Clone, Copy)]
pub struct PayloadStats {
    /// Changes of other webhook fields (templates, account updates, ...): ignored.
    pub ignored_changes: u64,
    /// System messages (number changes): not user messages, ignored.
    pub ignored_messages: u64,
    /// Numbers that parse but fail libphonenumber validation (billed anyway).
    pub invalid_numbers: u64,
}

#[derive(Debug, Clone)]
pub struct OnPremises {
    pub waba_id: String,
    pub phone_number_id: String,
}

/// Stateful only for its caches; turning the same line into events always gives the same
/// events.
pub struct Normaliser {
    resolver: CountryResolver,
    on_premises: Option<OnPremises>,
    pub max_payload_bytes: usize,
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    object: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    entry: Option<Vec<Entry<'a>>>,
    #[serde(borrow, default)]
    messages: Option<Vec<&'a RawValue>>,
    #[serde(borrow, default)]
    statuses: Option<Vec<&'a RawValue>>,
}

/// A send-log record (docs/billing-rules.md §6), one per line beside the webhooks. Fields wabill does
/// not use are ignored, as in Meta's payloads.
#[derive(Deserialize)]
struct SendLogJson<'a> {
    #[serde(borrow)]
    message_id: Cow<'a, str>,
    #[serde(borrow)]
    waba_id: Cow<'a, str>,
    #[serde(borrow)]
    phone_number_id: Cow<'a, str>,
    #[serde(borrow)]
    to: Cow<'a, str>,
    #[serde(deserialize_with = "unix_ts")]
    timestamp: Ts,
    /// Required: `null` says "not a template"; a missing key is an error, not a guess.
    #[serde(borrow, deserialize_with = "template_field")]
    template: Option<TemplateJson<'a>>,
}

#[derive(Deserialize)]
struct TemplateJson<'a> {
    #[serde(borrow)]
    category: Cow<'a, str>,
}

/// `template` must be present (an object or `null`).
fn template_field<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TemplateJson<'de>>, D::Error> {
    Option::<TemplateJson<'de>>::deserialize(d)
}

#[derive(Deserialize)]
struct Entry<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    changes: Vec<Change<'a>>,
}

#[derive(Deserialize)]
struct Change<'a> {
    #[serde(borrow, default)]
    field: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    value: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChangeValue<'a> {
    #[serde(borrow)]
    metadata: Metadata<'a>,
    #[serde(borrow, default)]
    messages: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    statuses: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow)]
    phone_number_id: Cow<'a, str>,
}

#[derive(Deserialize)]
pub(super) struct InboundJson<'a> {
    #[serde(borrow)]
    pub(super) from: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    #[serde(deserialize_with = "unix_ts")]
    pub(super) timestamp: Ts,
    #[serde(borrow, default, rename = "type")]
    pub(super) kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) referral: Option<ReferralJson<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ReferralJson<'a> {
    #[serde(borrow, default)]
    pub(super) source_type: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct StatusJson<'a> {
    #[serde(borrow)]
    pub(super) id: Cow<'a, str>,
    #[serde(borrow)]
    pub(super) status: Cow<'a, str>,
    #[serde(deserialize_with = "unix_ts")]
    pub(super) timestamp: Ts,
    #[serde(borrow)]
    pub(super) recipient_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub(super) conversation: Option<ConversationJson<'a>>,
    #[serde(borrow, default)]
    pub(super) pricing: Option<PricingJson<'a>>,
}

#[derive(Deserialize)]
pub(super) struct ConversationJson<'a> {
    #[serde(borrow, default)]
    pub(super) id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub(super) origin: Option<OriginJson<'a>>,
}

#[derive(Deserialize)]
pub(super) struct OriginJson<'a> {
    #[serde(borrow, default, rename = "type")]
    pub(super) kind: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
pub(super) struct PricingJson<'a> {
    #[serde(default)]
    pub(super) billable: Option<bool>,
    #[serde(borrow, default)]
    pub(super) category: Option<Cow<'a, str>>,
}

/// Year 1970..=9999: anything else is not a real Meta timestamp.
pub(super) const TS_RANGE: std::ops::RangeInclusive<Ts> = 0..=253_402_300_799;

/// Meta sends Unix seconds as strings; On-Premises and hand-made feeds sometimes as
/// numbers. Both are accepted; anything else is an error naming the value.
fn unix_ts<'de, D: Deserializer<'de>>(d: D) -> Result<Ts, D::Error> {
    struct V;
    impl<'de> de::Visitor<'de> for V {
        type Value = Ts;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a timestamp in Unix seconds (string or integer)")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Ts, E> {
            in_range(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Ts, E> {
            i64::try_from(v)
                .map_err(|_| E::custom(format!("timestamp {v} is out of range")))
                .and_then(in_range)
        }
        fn visit_str<E: de::Error>(self, s: &str) -> Result<Ts, E> {
            let v = s
                .trim()
                .parse::<i64>()
                .map_err(|_| E::custom(format!("timestamp {s:?} is not Unix seconds")))?;
            in_range(v)
        }
    }
    fn in_range<E: de::Error>(t: i64) -> Result<Ts, E> {
        if TS_RANGE.contains(&t) {
            Ok(t)
        } else {
            Err(E::custom(format!("timestamp {t} is out of range")))
        }
    }
    d.deserialize_any(V)
}

fn short(e: &serde_json::Error) -> String {
    e.to_string()
}

impl Normaliser {
    pub fn new(on_premises: Option<OnPremises>, max_payload_bytes: usize) -> Self {
        CountryResolver::warm_up();
        Normaliser {
            resolver: CountryResolver::new(1 << 20),
            on_premises,
            max_payload_bytes,
        }
    }

    /// Splits one payload into events (appended to `out`) and bad events (to `bad`).
    pub fn normalise(
        &mut self,
        payload: &str,
        out: &mut Vec<MessageEvent>,
        bad: &mut Vec<BadEvent>,
    ) -> Result<PayloadStats, PayloadError> {
        if payload.len() > self.max_payload_bytes {
            return Err(PayloadError::TooLarge {
                size: payload.len(),
                max: self.max_payload_bytes,
            });
        }
        let n_out = out.len();
        if let Some(stats) = super::fast::normalise(self, payload, out) {
            return Ok(stats);
        }
        // The fast scanner gave up: whatever it produced is discarded and the payload is
        // read again the general way, which also words every error.
        out.truncate(n_out);
        self.normalise_general(payload, out, bad)
    }

    /// The general path alone (also the reference the fast scanner is tested against).
    pub(super) fn normalise_general(
        &mut self,
        payload: &str,
        out: &mut Vec<MessageEvent>,
        bad: &mut Vec<BadEvent>,
    ) -> Result<PayloadStats, PayloadError> {
        match payload.trim_start().as_bytes().first() {
            Some(b'{') => {}
            Some(b'[') => return Err(PayloadError::Shape("payload is a JSON array, not an object".into())),
            _ => {}
        }
        let env: Envelope = serde_json::from_str(payload).map_err(|e| {
            if e.is_data() {
                PayloadError::Shape(short(&e))
            } else {
                PayloadError::NotJson(short(&e))
            }
        })?;
        let mut stats = PayloadStats::default();
        if env.object.as_deref() == Some("send_log") {
            out.push(self.send_log(payload, &mut stats)?);
            return Ok(stats);
        }
        if let Some(entries) = env.entry {
            if let Some(o) = env.object.as_deref() {
                if o != "whatsapp_business_account" {
                    return Err(PayloadError::WrongObject(o.to_string()));
                }
            }
            for (ei, entry) in entries.iter().enumerate() {
                for (ci, change) in entry.changes.iter().enumerate() {
                    if change.field.as_deref().is_some_and(|f| f != "messages") {
                        stats.ignored_changes += 1;
                        continue;
                    }
                    let path = format!("entry[{ei}].changes[{ci}].value");
                    let Some(raw) = change.value else {
                        bad.push(BadEvent {
                            path,
                            reason: "change has no value".into(),
                            original: String::new(),
                            waba_id: Some(entry.id.to_string()),
                            phone_number_id: None,
                        });
                        continue;
                    };
                    let value: ChangeValue = match serde_json::from_str(raw.get()) {
                        Ok(v) => v,
                        Err(e) => {
                            bad.push(BadEvent {
                                path,
                                reason: format!("change value has the wrong shape: {}", short(&e)),
                                original: raw.get().to_string(),
                                waba_id: Some(entry.id.to_string()),
                                phone_number_id: None,
                            });
                            continue;
                        }
                    };
                    let ctx = Ctx {
                        waba_id: &entry.id,
                        phone_number_id: &value.metadata.phone_number_id,
                        path: &path,
                    };
                    self.events(&ctx, &value.messages, &value.statuses, out, bad, &mut stats);
                }
            }
            return Ok(stats);
        }
        if env.messages.is_none() && env.statuses.is_none() {
            return Err(PayloadError::NotWebhook);
        }
        let op = self.on_premises.clone().ok_or(PayloadError::OnPremisesNotConfigured)?;
        let ctx = Ctx {
            waba_id: &op.waba_id,
            phone_number_id: &op.phone_number_id,
            path: "",
        };
        let messages = env.messages.unwrap_or_default();
        let statuses = env.statuses.unwrap_or_default();
        self.events(&ctx, &messages, &statuses, out, bad, &mut stats);
        Ok(stats)
    }

    /// A send-log line → one `SendLog` event keyed by the user like the statuses.
    fn send_log(&mut self, payload: &str, stats: &mut PayloadStats) -> Result<MessageEvent, PayloadError> {
        let r: SendLogJson = serde_json::from_str(payload).map_err(|e| PayloadError::SendLog(short(&e)))?;
        for (field, v) in [
            ("message_id", &r.message_id),
            ("waba_id", &r.waba_id),
            ("phone_number_id", &r.phone_number_id),
        ] {
            if v.is_empty() {
                return Err(PayloadError::SendLog(format!("{field} is empty")));
            }
        }
        let kind = match &r.template {
            None => MessageKind::NonTemplate,
            Some(t) => MessageKind::Template(TemplateCategory::parse(&t.category).ok_or_else(|| {
                PayloadError::SendLog(format!(
                    "template category {:?} is not one wabill bills (marketing, marketing_lite, utility, authentication, authentication_international)",
                    t.category
                ))
            })?),
        };
        let (country, number_valid) = self.resolve(&r.to, stats).map_err(PayloadError::SendLog)?;
        Ok(MessageEvent {
            ts: r.timestamp,
            waba_id: r.waba_id.into_owned(),
            phone_number_id: r.phone_number_id.into_owned(),
            user: r.to.into_owned(),
            message_id: r.message_id.into_owned(),
            kind: EventKind::SendLog,
            country,
            number_valid,
            meta: None,
            message_kind: Some(kind),
        })
    }

    fn events(
        &mut self,
        ctx: &Ctx<'_>,
        messages: &[&RawValue],
        statuses: &[&RawValue],
        out: &mut Vec<MessageEvent>,
        bad: &mut Vec<BadEvent>,
        stats: &mut PayloadStats,
    ) {
        for (i, raw) in messages.iter().enumerate() {
            match self.inbound(ctx, raw.get(), stats) {
                Ok(Some(ev)) => out.push(ev),
                Ok(None) => stats.ignored_messages += 1,
                Err(reason) => bad.push(ctx.bad(format!("messages[{i}]"), reason, raw.get())),
            }
        }
        for (i, raw) in statuses.iter().enumerate() {
            match self.status(ctx, raw.get(), stats) {
                Ok(ev) => out.push(ev),
                Err(reason) => bad.push(ctx.bad(format!("statuses[{i}]"), reason, raw.get())),
            }
        }
    }

    fn resolve(&mut self, user: &str, stats: &mut PayloadStats) -> Result<(crate::billing::Country, bool), String> {
        let r = self.resolver.resolve(user).map_err(|e| e.to_string())?;
        if !r.valid {
            stats.invalid_numbers += 1;
        }
        Ok((r.country, r.valid))
    }

    fn inbound(&mut self, ctx: &Ctx<'_>, raw: &str, stats: &mut PayloadStats) -> Result<Option<MessageEvent>, String> {
        let m: InboundJson = serde_json::from_str(raw).map_err(|e| format!("inbound message: {}", short(&e)))?;
        self.inbound_parsed(ctx, m, stats)
    }

    /// An inbound message as parsed (by serde or by the fast scanner) → event.
    pub(super) fn inbound_parsed(
        &mut self,
        ctx: &Ctx<'_>,
        m: InboundJson<'_>,
        stats: &mut PayloadStats,
    ) -> Result<Option<MessageEvent>, String> {
        if m.kind.as_deref() == Some("system") {
            return Ok(None);
        }
        if m.id.is_empty() {
            return Err("inbound message has an empty id".into());
        }
        let (country, number_valid) = self.resolve(&m.from, stats)?;
        let referral = match m.referral {
            None => Referral::None,
            Some(r) if r.source_type.as_deref() == Some("ad") => Referral::Ad,
            Some(_) => Referral::Other,
        };
        Ok(Some(MessageEvent {
            ts: m.timestamp,
            waba_id: ctx.waba_id.to_string(),
            phone_number_id: ctx.phone_number_id.to_string(),
            user: m.from.into_owned(),
            message_id: m.id.into_owned(),
            kind: EventKind::Inbound { referral },
            country,
            number_valid,
            meta: None,
            message_kind: None,
        }))
    }

    fn status(&mut self, ctx: &Ctx<'_>, raw: &str, stats: &mut PayloadStats) -> Result<MessageEvent, String> {
        let s: StatusJson = serde_json::from_str(raw).map_err(|e| format!("status: {}", short(&e)))?;
        self.status_parsed(ctx, s, stats)
    }

    /// A status as parsed (by serde or by the fast scanner) → event.
    pub(super) fn status_parsed(
        &mut self,
        ctx: &Ctx<'_>,
        s: StatusJson<'_>,
        stats: &mut PayloadStats,
    ) -> Result<MessageEvent, String> {
        let status = StatusKind::parse(&s.status).ok_or_else(|| {
            format!(
                "unknown status value {:?} (expected sent, delivered, read or failed)",
                s.status
            )
        })?;
        if s.id.is_empty() {
            return Err("status has an empty message id".into());
        }
        let (country, number_valid) = self.resolve(&s.recipient_id, stats)?;
        let message_kind = s
            .pricing
            .as_ref()
            .and_then(|p| p.category.as_deref())
            .and_then(MessageKind::from_pricing_category);
        let meta = if s.conversation.is_some() || s.pricing.is_some() {
            let origin = s
                .conversation
                .as_ref()
                .and_then(|c| c.origin.as_ref())
                .and_then(|o| o.kind.as_deref())
                .or_else(|| s.pricing.as_ref().and_then(|p| p.category.as_deref()))
                .and_then(Origin::normalise);
            let m = MetaPricing {
                conversation_id: s
                    .conversation
                    .as_ref()
                    .and_then(|c| c.id.as_deref())
                    .map(str::to_string),
                origin,
                billable: s.pricing.as_ref().and_then(|p| p.billable),
            };
            // Nothing usable is the same as no object (and survives Avro unchanged).
            (m != MetaPricing::default()).then_some(m)
        } else {
            None
        };
        Ok(MessageEvent {
            ts: s.timestamp,
            waba_id: ctx.waba_id.to_string(),
            phone_number_id: ctx.phone_number_id.to_string(),
            user: s.recipient_id.into_owned(),
            message_id: s.id.into_owned(),
            kind: EventKind::Status { status },
            country,
            number_valid,
            meta,
            message_kind,
        })
    }
}

pub(super) struct Ctx<'a> {
    pub(super) waba_id: &'a str,
    pub(super) phone_number_id: &'a str,
    pub(super) path: &'a str,
}

impl Ctx<'_> {
    fn bad(&self, item: String, reason: String, raw: &str) -> BadEvent {
        let path = if self.path.is_empty() {
            item
        } else {
            format!("{}.{item}", self.path)
        };
        BadEvent {
            path,
            reason,
            original: raw.to_string(),
            waba_id: Some(self.waba_id.to_string()),
            phone_number_id: Some(self.phone_number_id.to_string()),
        }
    }
}
