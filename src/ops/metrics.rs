//! Prometheus metrics of `wabill run` (names and labels: README "Operations").
//!
//! One process-wide registry, because a scrape must see every stage thread's counters at
//! once. Hot paths never touch it per record: stages count in their own plain counters
//! and publish the difference once per batch (`publish_*`), so metrics cost nothing
//! measurable in throughput. No label carries a user or a WABA (unbounded cardinality);
//! markets, eras, origins, currencies, stages and partitions are bounded sets.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use rust_decimal::prelude::ToPrimitive;

use crate::pipeline::ledger::LedgerStats;
use crate::pipeline::records::Billed;
use crate::pipeline::windows::WindowStats;

/// Why a record went to the dead-letter topic, as a bounded label value (the full,
/// human-readable reason travels in the dead letter itself).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// A webhook payload that is not JSON/UTF-8 or not a Meta payload at all.
    InvalidPayload,
    /// One message/status inside a payload that cannot be billed (missing field, bad number...).
    InvalidEvent,
    /// A record on an internal topic that does not decode (wrong Avro, foreign producer).
    InvalidRecord,
    /// An event of an era whose rules are not implemented yet.
    UnsupportedEra,
    /// A conversation no rate card row prices.
    Unpriceable,
    /// A malformed watermark control record.
    MalformedControl,
    /// A delivery whose decision needs the message's kind, which is unknown.
    UnknownCategory,
}

impl From<crate::pipeline::RejectClass> for DeadLetterReason {
    fn from(c: crate::pipeline::RejectClass) -> Self {
        match c {
            crate::pipeline::RejectClass::UnsupportedEra => DeadLetterReason::UnsupportedEra,
            crate::pipeline::RejectClass::UnknownCategory => DeadLetterReason::UnknownCategory,
            crate::pipeline::RejectClass::Unpriceable => DeadLetterReason::Unpriceable,
        }
    }
}

impl DeadLetterReason {
    pub const ALL: [DeadLetterReason; 7] = [
        DeadLetterReason::InvalidPayload,
        DeadLetterReason::InvalidEvent,
        DeadLetterReason::InvalidRecord,
        DeadLetterReason::UnsupportedEra,
        DeadLetterReason::Unpriceable,
        DeadLetterReason::MalformedControl,
        DeadLetterReason::UnknownCategory,
    ];

    pub fn label(self) -> &'static str {
        match self {
            DeadLetterReason::InvalidPayload => "invalid_payload",
            DeadLetterReason::InvalidEvent => "invalid_event",
            DeadLetterReason::InvalidRecord => "invalid_record",
            DeadLetterReason::UnsupportedEra => "unsupported_era",
            DeadLetterReason::Unpriceable => "unpriceable",
            DeadLetterReason::MalformedControl => "malformed_control",
            DeadLetterReason::UnknownCategory => "unknown_category",
        }
    }
}

pub struct StageHandles {
    pub input: IntCounter,
    pub produced: IntCounter,
    pub batch: Histogram,
    pub commit: Histogram,
    /// Windows and ledger only (ingest keeps no state and no event time).
    pub stateful: Option<StatefulHandles>,
}

pub struct StatefulHandles {
    pub latency: Histogram,
    pub buffered: IntGauge,
    pub stream_time: prometheus::Gauge,
    pub store_bytes: IntGauge,
}

impl StageHandles {
    /// Records that an output whose event time is `event_ts` (unix seconds) left now.
    /// Wall clock: this is the runtime edge, never the billing core.
    pub fn output_latency(&self, event_ts: i64, now: std::time::SystemTime) {
        let Some(s) = &self.stateful else { return };
        let now = now
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        s.latency.observe((now - event_ts as f64).max(0.0));
    }
}

/// Buckets for event time → output. Outputs wait at least for the allowed lateness
/// (120 s by default) or the idle flush, so the interesting range is seconds to hours.
const LATENCY_BUCKETS: &[f64] = &[
    0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0,
];
/// Batches and commits: milliseconds to the librdkafka flush timeout.
const BATCH_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
const RESTORE_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0];

pub struct Metrics {
    registry: Registry,
    pub ready: IntGauge,
    pub input_records: IntCounterVec,
    pub events: IntCounterVec,
    pub conversations_opened: IntCounterVec,
    pub messages_charged: IntCounterVec,
    pub free_tier_conversations: IntCounter,
    pub billed_amount: prometheus::CounterVec,
    pub dead_letters: IntCounterVec,
    pub duplicates_dropped: IntCounterVec,
    pub late_events: IntCounterVec,
    pub records_produced: IntCounterVec,
    pub event_output_latency: HistogramVec,
    pub batch_duration: HistogramVec,
    pub commit_duration: HistogramVec,
    pub consumer_lag: IntGaugeVec,
    pub assigned_partitions: IntGaugeVec,
    pub restoring_partitions: IntGaugeVec,
    pub restore_records: IntCounterVec,
    pub restore_duration: HistogramVec,
    pub state_store_bytes: IntGaugeVec,
    pub buffered_events: IntGaugeVec,
    pub rebalances: IntCounterVec,
    pub stream_time: prometheus::GaugeVec,
    /// Windows-stage facts about message kinds (docs/billing-rules.md §4, §7.2).
    pub message_kinds: IntCounterVec,
    /// Billed amount counters by currency, resolved once (a handful of currencies).
    amount_by_currency: Mutex<HashMap<String, prometheus::Counter>>,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels)
        .unwrap_or_else(|e| unreachable!("metric {name} is well-formed: {e}"));
    r.register(Box::new(c.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
    c
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    r.register(Box::new(g.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
    g
}

fn histogram_vec(r: &Registry, name: &str, help: &str, labels: &[&str], buckets: &[f64]) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)
        .unwrap_or_else(|e| unreachable!("metric {name}: {e}"));
    r.register(Box::new(h.clone()))
        .unwrap_or_else(|e| unreachable!("metric {name} registered once: {e}"));
    h
}

impl Metrics {
    fn new() -> Metrics {
        let r = Registry::new();
        let build = IntGaugeVec::new(
            Opts::new("wabill_build_info", "Build of the running binary (value 1)."),
            &["version"],
        )
        .unwrap_or_else(|e| unreachable!("build info: {e}"));
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        r.register(Box::new(build))
            .unwrap_or_else(|e| unreachable!("build info registered once: {e}"));
        let ready = IntGauge::new(
            "wabill_ready",
            "1 when every stage has joined its group and no assigned partition is restoring (as /readyz).",
        )
        .unwrap_or_else(|e| unreachable!("ready: {e}"));
        r.register(Box::new(ready.clone()))
            .unwrap_or_else(|e| unreachable!("ready registered once: {e}"));
        let free = IntCounter::new(
            "wabill_free_tier_conversations_total",
            "Billed conversations that took the WABA's monthly free tier.",
        )
        .unwrap_or_else(|e| unreachable!("free tier: {e}"));
        r.register(Box::new(free.clone()))
            .unwrap_or_else(|e| unreachable!("free tier registered once: {e}"));
        let amount = prometheus::CounterVec::new(
            Opts::new(
                "wabill_billed_amount_total",
                "Sum of billed_price by currency (a float for dashboards; invoices come from the billing topic).",
            ),
            &["currency"],
        )
        .unwrap_or_else(|e| unreachable!("amount: {e}"));
        r.register(Box::new(amount.clone()))
            .unwrap_or_else(|e| unreachable!("amount registered once: {e}"));
        let stream_time = prometheus::GaugeVec::new(
            Opts::new(
                "wabill_stream_time_seconds",
                "Highest event time seen by the stage (unix seconds), over its partitions.",
            ),
            &["stage"],
        )
        .unwrap_or_else(|e| unreachable!("stream time: {e}"));
        r.register(Box::new(stream_time.clone()))
            .unwrap_or_else(|e| unreachable!("stream time registered once: {e}"));
        Metrics {
            ready,
            input_records: counter_vec(
                &r,
                "wabill_input_records_total",
                "Records consumed from the stage's input topic (control records excluded).",
                &["stage"],
            ),
            events: counter_vec(
                &r,
                "wabill_events_total",
                "Message events entering the windows stage, by type.",
                &["type"],
            ),
            conversations_opened: counter_vec(
                &r,
                "wabill_conversations_opened_total",
                "Conversations billed by the ledger, by era, origin and pricing market.",
                &["era", "origin", "market"],
            ),
            messages_charged: counter_vec(
                &r,
                "wabill_messages_charged_total",
                "Message charges of the per-message eras, by era, category, pricing type and pricing market.",
                &["era", "category", "pricing_type", "market"],
            ),
            free_tier_conversations: free,
            billed_amount: amount,
            dead_letters: counter_vec(
                &r,
                "wabill_dead_letters_total",
                "Records sent to the dead-letter topic, by stage and reason class.",
                &["stage", "reason"],
            ),
            duplicates_dropped: counter_vec(
                &r,
                "wabill_duplicates_dropped_total",
                "Repeated webhooks (windows) and re-delivered conversations (ledger) dropped.",
                &["stage"],
            ),
            late_events: counter_vec(
                &r,
                "wabill_late_events_total",
                "Records that arrived behind the stage's watermark (beyond the allowed lateness).",
                &["stage"],
            ),
            records_produced: counter_vec(
                &r,
                "wabill_records_produced_total",
                "Records produced to the stage's output topic (dead letters and control records excluded).",
                &["stage"],
            ),
            event_output_latency: histogram_vec(
                &r,
                "wabill_event_output_latency_seconds",
                "Wall clock at output minus the event time of the output record (opened_at).",
                &["stage"],
                LATENCY_BUCKETS,
            ),
            batch_duration: histogram_vec(
                &r,
                "wabill_batch_duration_seconds",
                "One batch: poll, apply, produce, persist and commit.",
                &["stage"],
                BATCH_BUCKETS,
            ),
            commit_duration: histogram_vec(
                &r,
                "wabill_commit_duration_seconds",
                "The persist part of a batch: outputs acknowledged, changelog, RocksDB write, offset commit.",
                &["stage"],
                BATCH_BUCKETS,
            ),
            consumer_lag: gauge_vec(
                &r,
                "wabill_consumer_lag",
                "Records in the input partition not yet consumed (high watermark minus position).",
                &["stage", "partition"],
            ),
            assigned_partitions: gauge_vec(
                &r,
                "wabill_assigned_partitions",
                "Input partitions currently assigned to this process.",
                &["stage"],
            ),
            restoring_partitions: gauge_vec(
                &r,
                "wabill_restoring_partitions",
                "Partitions currently restoring their store from the changelog.",
                &["stage"],
            ),
            restore_records: counter_vec(
                &r,
                "wabill_restore_records_total",
                "Changelog records applied while restoring stores.",
                &["stage"],
            ),
            restore_duration: histogram_vec(
                &r,
                "wabill_restore_duration_seconds",
                "Duration of one partition's restore (open, changelog catch-up).",
                &["stage"],
                RESTORE_BUCKETS,
            ),
            state_store_bytes: gauge_vec(
                &r,
                "wabill_state_store_bytes",
                "RocksDB size (SST files and memtables) over the stage's open stores.",
                &["stage"],
            ),
            buffered_events: gauge_vec(
                &r,
                "wabill_buffered_events",
                "Records held in the event-time reorder buffer, waiting for the watermark.",
                &["stage"],
            ),
            rebalances: counter_vec(
                &r,
                "wabill_rebalances_total",
                "Consumer group rebalance events, by kind (assigned, revoked).",
                &["stage", "kind"],
            ),
            stream_time,
            message_kinds: counter_vec(
                &r,
                "wabill_message_kind_events_total",
                "Windows-stage facts about message kinds: send_log (send-log records applied), disagreement (send log and Meta's pricing.category disagree; the send log decides), unknown (deliveries dead-lettered because their kind was needed and unknown), service_outside_csw (service conversations opened by a non-template delivered outside the customer service window).",
                &["fact"],
            ),
            amount_by_currency: Mutex::new(HashMap::new()),
            registry: r,
        }
    }

    /// Creates the series a stage will use, so dashboards and alerts see zeros rather
    /// than missing series before the first event of each kind.
    pub fn init_stage(&self, stage: &str) {
        self.input_records.with_label_values(&[stage]);
        self.records_produced.with_label_values(&[stage]);
        self.batch_duration.with_label_values(&[stage]);
        self.commit_duration.with_label_values(&[stage]);
        self.assigned_partitions.with_label_values(&[stage]);
        self.restoring_partitions.with_label_values(&[stage]);
        self.restore_records.with_label_values(&[stage]);
        self.restore_duration.with_label_values(&[stage]);
        self.state_store_bytes.with_label_values(&[stage]);
        for kind in ["assigned", "revoked"] {
            self.rebalances.with_label_values(&[stage, kind]);
        }
        for r in DeadLetterReason::ALL {
            self.dead_letters.with_label_values(&[stage, r.label()]);
        }
        if stage != "ingest" {
            self.duplicates_dropped.with_label_values(&[stage]);
            self.late_events.with_label_values(&[stage]);
            self.event_output_latency.with_label_values(&[stage]);
            self.buffered_events.with_label_values(&[stage]);
            self.stream_time.with_label_values(&[stage]);
        }
        if stage == "windows" {
            for t in ["message", "sent", "delivered", "read", "failed", "other"] {
                self.events.with_label_values(&[t]);
            }
        }
    }

    /// The handles a stage updates on its hot path, resolved once (label lookups hash and
    /// lock).
    pub fn stage(&self, stage: &str) -> StageHandles {
        let stateful = stage != "ingest";
        StageHandles {
            input: self.input_records.with_label_values(&[stage]),
            produced: self.records_produced.with_label_values(&[stage]),
            batch: self.batch_duration.with_label_values(&[stage]),
            commit: self.commit_duration.with_label_values(&[stage]),
            stateful: stateful.then(|| StatefulHandles {
                latency: self.event_output_latency.with_label_values(&[stage]),
                buffered: self.buffered_events.with_label_values(&[stage]),
                stream_time: self.stream_time.with_label_values(&[stage]),
                store_bytes: self.state_store_bytes.with_label_values(&[stage]),
            }),
        }
    }

    pub fn dead_letter(&self, stage: &str, reason: DeadLetterReason) {
        self.dead_letters.with_label_values(&[stage, reason.label()]).inc();
    }

    /// Publishes what a windows task counted since `last` (its previous snapshot).
    pub fn publish_windows(&self, now: &WindowStats, last: &WindowStats) {
        let d = |a: u64, b: u64| a.saturating_sub(b);
        let typed = [
            ("message", d(now.inbound, last.inbound)),
            ("sent", d(now.sent, last.sent)),
            ("delivered", d(now.delivered, last.delivered)),
            ("read", d(now.read, last.read)),
            ("failed", d(now.failed, last.failed)),
            ("send_log", d(now.send_logs, last.send_logs)),
        ];
        let dup = d(now.duplicates, last.duplicates);
        // Duplicates are counted once, in wabill_duplicates_dropped_total, and events of
        // unsupported eras in wabill_dead_letters_total.
        let all = d(now.events, last.events)
            .saturating_sub(dup)
            .saturating_sub(d(now.unsupported_era, last.unsupported_era));
        let mut known = 0;
        for (t, n) in typed {
            if n > 0 {
                self.events.with_label_values(&[t]).inc_by(n);
            }
            known += n;
        }
        if all > known {
            self.events.with_label_values(&["other"]).inc_by(all - known);
        }
        if dup > 0 {
            self.duplicates_dropped.with_label_values(&["windows"]).inc_by(dup);
        }
        let late = d(now.late, last.late);
        if late > 0 {
            self.late_events.with_label_values(&["windows"]).inc_by(late);
        }
        for (fact, n) in [
            ("send_log", d(now.send_logs, last.send_logs)),
            ("disagreement", d(now.kind_disagreements, last.kind_disagreements)),
            ("unknown", d(now.unknown_kind, last.unknown_kind)),
            (
                "service_outside_csw",
                d(now.service_outside_csw, last.service_outside_csw),
            ),
        ] {
            if n > 0 {
                self.message_kinds.with_label_values(&[fact]).inc_by(n);
            }
        }
    }

    pub fn publish_ledger(&self, now: &LedgerStats, last: &LedgerStats) {
        let dup = now.duplicates.saturating_sub(last.duplicates);
        if dup > 0 {
            self.duplicates_dropped.with_label_values(&["ledger"]).inc_by(dup);
        }
        let late = now.late.saturating_sub(last.late);
        if late > 0 {
            self.late_events.with_label_values(&["ledger"]).inc_by(late);
        }
    }

    /// Counts one conversation the ledger produced to the billing topic.
    pub fn billed(&self, b: &Billed) {
        let (amount, currency) = match b {
            Billed::Conversation(b) => {
                let o = &b.opened;
                self.conversations_opened
                    .with_label_values(&[o.era.as_str(), o.origin.as_str(), b.market.as_str()])
                    .inc();
                if b.free_tier {
                    self.free_tier_conversations.inc();
                }
                (b.billed_price, &b.currency)
            }
            Billed::Message(m) => {
                let d = &m.delivered;
                self.messages_charged
                    .with_label_values(&[
                        d.era.as_str(),
                        d.category.as_str(),
                        m.pricing_type.as_str(),
                        m.market.as_str(),
                    ])
                    .inc();
                (m.billed_price, &m.currency)
            }
        };
        // Prometheus counters are floats: an approximate running total for dashboards,
        // never what anyone bills from.
        if let Some(amount) = amount.to_f64() {
            if let Ok(mut by) = self.amount_by_currency.lock() {
                let c = by
                    .entry(currency.clone())
                    .or_insert_with(|| self.billed_amount.with_label_values(&[currency.as_str()]));
                c.inc_by(amount);
            }
        }
    }

    /// The text exposition format Prometheus scrapes.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            tracing::warn!(error = %e, "encoding metrics");
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::RejectClass;

    #[test]
    fn rejections_carry_their_metric_class() {
        // The class is decided where the rejection is made, not guessed from the stage.
        let label = |c| DeadLetterReason::from(c).label();
        assert_eq!(label(RejectClass::UnsupportedEra), "unsupported_era");
        assert_eq!(label(RejectClass::UnknownCategory), "unknown_category");
        assert_eq!(label(RejectClass::Unpriceable), "unpriceable");
        for r in DeadLetterReason::ALL {
            assert_eq!(
                DeadLetterReason::ALL.iter().filter(|o| o.label() == r.label()).count(),
                1
            );
        }
    }
}
