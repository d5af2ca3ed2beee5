//! Topics are created at start-up when missing (admin API). Changelogs are compacted.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::clients::base_config;
use super::KafkaRunError;
use crate::config::KafkaConfig;

pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compact: bool,
}

pub fn ensure(k: &KafkaConfig, specs: &[TopicSpec]) -> Result<(), KafkaRunError> {
    let admin: AdminClient<DefaultClientContext> = base_config(k).create()?;
    let new: Vec<NewTopic> = specs
        .iter()
        .map(|s| {
            let t = NewTopic::new(&s.name, s.partitions, TopicReplication::Fixed(k.replication));
            // Tansu describes only the configs given at creation: give both explicitly.
            if s.compact {
                t.set("cleanup.policy", "compact")
            } else {
                t.set("cleanup.policy", "delete")
            }
        })
        .collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let results = rt.block_on(admin.create_topics(
        &new,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    for r in results {
        match r {
            Ok(name) => tracing::info!(topic = %name, "created topic"),
            Err((name, RDKafkaErrorCode::TopicAlreadyExists)) => tracing::debug!(topic = %name, "topic exists"),
            Err((name, code)) => {
                return Err(KafkaRunError::Topic {
                    name,
                    reason: code.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Partition count of an existing topic (waits for metadata up to `timeout`).
pub fn partitions(k: &KafkaConfig, topic: &str, timeout: Duration) -> Result<i32, KafkaRunError> {
    let c: BaseConsumer = base_config(k).create()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let md = c.fetch_metadata(Some(topic), Duration::from_secs(5))?;
        if let Some(t) = md.topics().iter().find(|t| t.name() == topic) {
            if !t.partitions().is_empty() {
                return Ok(t.partitions().len() as i32);
            }
        }
        if std::time::Instant::now() > deadline {
            return Err(KafkaRunError::Topic {
                name: topic.to_string(),
                reason: "no partitions in metadata".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
