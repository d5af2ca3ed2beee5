//! `wabill run`: the Kafka topology (README.md "Topology").
//!
//! ```text
//! webhooks ─► ingest ─► events (key: user) ─► windows ─► conversations (key: WABA) ─► ledger ─► billing (key: WABA)
//! ```
//!
//! Each stage is a consumer group of its own (`<prefix>-ingest`, `-windows`, `-ledger`),
//! so stages scale and fail independently. The delivery guarantee is effectively-once
//! without broker transactions: for every batch, outputs are acknowledged first, then
//! state (changelog, then the local RocksDB write batch holding the input offset), then
//! offsets are committed. A crash anywhere replays input whose outputs are byte-identical
//! (deterministic ids), and the ledger drops conversations it has already billed.

pub mod clients;
pub mod ingest;
pub mod stateful;
pub mod store;
pub mod tools;
pub mod topics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::codec::avro::{Framing, RecordKind};
use crate::codec::registry;
use crate::config::Config;
use crate::pipeline::engine::Setup;
use crate::state::StoreError;

#[derive(Debug, Error)]
pub enum KafkaRunError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{failed} record(s) could not be delivered (last error: {last})")]
    Delivery { failed: u64, last: String },
    #[error("topic {name}: {reason}")]
    Topic { name: String, reason: String },
    #[error("restoring {topic}[{partition}]: {reason}")]
    Restore {
        topic: String,
        partition: i32,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("configuration: {0}")]
    Config(String),
    #[error("stage {stage} failed: {reason}")]
    Stage { stage: &'static str, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StageKind {
    Ingest,
    Windows,
    Ledger,
}

impl StageKind {
    pub fn name(self) -> &'static str {
        match self {
            StageKind::Ingest => "ingest",
            StageKind::Windows => "windows",
            StageKind::Ledger => "ledger",
        }
    }
}

/// Runs the given stages until `shutdown` is set (SIGTERM/SIGINT) or one fails.
pub fn run(
    config: &Config,
    setup: &Setup,
    stages: &[StageKind],
    shutdown: Arc<AtomicBool>,
) -> Result<(), KafkaRunError> {
    let k = &config.kafka;
    let p = k.partitions;
    let mut specs = vec![
        // One partition: ingest reads partitions independently, so webhooks of one user
        // spread over several would interleave event times beyond the allowed lateness
        // (README "Decisions and limits"). An existing topic keeps its partitions.
        topics::TopicSpec {
            name: k.webhooks_topic(),
            partitions: 1,
            compact: false,
        },
        topics::TopicSpec {
            name: k.events_topic(),
            partitions: p,
            compact: false,
        },
        topics::TopicSpec {
            name: k.conversations_topic(),
            partitions: p,
            compact: false,
        },
        topics::TopicSpec {
            name: k.billing_topic(),
            partitions: p,
            compact: false,
        },
        topics::TopicSpec {
            name: k.dead_letter_topic(),
            partitions: p,
            compact: false,
        },
    ];
    for s in ["windows", "ledger"] {
        specs.push(topics::TopicSpec {
            name: k.changelog_topic(s),
            partitions: p,
            compact: true,
        });
    }
    topics::ensure(k, &specs)?;
    crate::billing::CountryResolver::warm_up();
    let framings = Framings::resolve(config)?;

    for &stage in stages {
        crate::ops::metrics::metrics().init_stage(stage.name());
        crate::ops::health::health().register(stage.name());
    }
    let mut handles = Vec::new();
    for &stage in stages {
        let config = config.clone();
        let setup = setup.clone();
        let shutdown = shutdown.clone();
        let framings = framings.clone();
        let h = std::thread::Builder::new()
            .name(format!("wabill-{}", stage.name()))
            .spawn(move || {
                let r = match stage {
                    StageKind::Ingest => ingest::run(&config, &framings, &shutdown),
                    StageKind::Windows => stateful::run_windows(&config, &setup, &framings, &shutdown),
                    StageKind::Ledger => stateful::run_ledger(&config, &setup, &framings, &shutdown),
                };
                if let Err(e) = &r {
                    tracing::error!(stage = stage.name(), error = %e, "stage failed; stopping");
                    crate::ops::health::health().failed(stage.name(), e.to_string());
                    shutdown.store(true, Ordering::SeqCst);
                }
                r
            })?;
        handles.push((stage, h));
    }
    let mut first_err = None;
    for (stage, h) in handles {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(_) => {
                first_err.get_or_insert(KafkaRunError::Stage {
                    stage: stage.name(),
                    reason: "panicked".into(),
                });
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

pub(crate) const POLL: Duration = Duration::from_millis(100);

/// What a poll gave: a record, nothing (batch done), or a transient error (broker
/// unreachable, leader moved): librdkafka reconnects and retries, the loop polls again.
pub(crate) enum Polled<M> {
    Record(M),
    Nothing,
    Retry,
}

pub(crate) fn classify<M>(r: Option<rdkafka::error::KafkaResult<M>>) -> Polled<M> {
    match r {
        None => Polled::Nothing,
        Some(Ok(m)) => Polled::Record(m),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "consume error (transient)");
            std::thread::sleep(Duration::from_millis(100));
            Polled::Retry
        }
    }
}

/// Wire framing of each output topic: Avro single-object encoding, or — with a schema
/// registry — the Confluent wire format with the id the registry gave the schema under
/// the `<topic>-value` subject.
#[derive(Debug, Clone)]
pub struct Framings {
    pub events: Framing,
    /// ConversationOpened on the conversations topic.
    pub conversations: Framing,
    /// MessageDelivered on the conversations topic.
    pub messages: Framing,
    /// ConversationBilled on the billing topic.
    pub billing: Framing,
    /// MessageCharged on the billing topic.
    pub charges: Framing,
    pub dead_letter: Framing,
}

impl Framings {
    /// The record kind a Confluent schema id of this run stands for (the ids it resolved).
    pub fn kind_of_schema_id(&self, id: u32) -> Option<RecordKind> {
        [
            (self.events, RecordKind::MessageEvent),
            (self.conversations, RecordKind::ConversationOpened),
            (self.messages, RecordKind::MessageDelivered),
            (self.billing, RecordKind::ConversationBilled),
            (self.charges, RecordKind::MessageCharged),
            (self.dead_letter, RecordKind::DeadLetter),
        ]
        .into_iter()
        .find(|(f, _)| *f == Framing::Confluent { schema_id: id })
        .map(|(_, k)| k)
    }

    pub fn resolve(config: &Config) -> Result<Framings, KafkaRunError> {
        let k = &config.kafka;
        let Some(url) = config.schema_registry.url.as_deref().filter(|u| !u.is_empty()) else {
            return Ok(Framings {
                events: Framing::SingleObject,
                conversations: Framing::SingleObject,
                messages: Framing::SingleObject,
                billing: Framing::SingleObject,
                charges: Framing::SingleObject,
                dead_letter: Framing::SingleObject,
            });
        };
        let sr = &config.schema_registry;
        let client = registry::RegistryClient::new(url, &registry::RegistryAuth::from_config(sr))
            .map_err(|e| KafkaRunError::Config(e.to_string()))?;
        // The record kinds of wabill 0.x keep their `<topic>-value` subjects; the second
        // kind on a topic (the message eras' records) uses Confluent's
        // TopicRecordNameStrategy, `<topic>-<record full name>`, so both can be registered.
        let reg = |topic: String, kind: RecordKind| -> Result<Framing, KafkaRunError> {
            let subject = match kind {
                RecordKind::MessageDelivered | RecordKind::MessageCharged => {
                    format!("{topic}-{}", kind.full_name())
                }
                _ => registry::value_subject(&topic),
            };
            let id = if sr.auto_register {
                client.register(&subject, kind.schema_text())
            } else {
                client.lookup(&subject, kind.schema_text())
            }
            .map_err(|e| KafkaRunError::Config(e.to_string()))?;
            tracing::info!(%subject, id, registered = sr.auto_register, "schema id resolved");
            Ok(Framing::Confluent { schema_id: id })
        };
        Ok(Framings {
            events: reg(k.events_topic(), RecordKind::MessageEvent)?,
            conversations: reg(k.conversations_topic(), RecordKind::ConversationOpened)?,
            messages: reg(k.conversations_topic(), RecordKind::MessageDelivered)?,
            billing: reg(k.billing_topic(), RecordKind::ConversationBilled)?,
            charges: reg(k.billing_topic(), RecordKind::MessageCharged)?,
            dead_letter: reg(k.dead_letter_topic(), RecordKind::DeadLetter)?,
        })
    }
}
