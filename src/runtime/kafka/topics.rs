//! Topics are created at start-up when missing (admin API). Changelogs are compacted.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::types::RDKafkaErrorCode;

use super::clients::{base_config, Role};
use super::KafkaRunError;
use crate::config::KafkaConfig;

pub struct TopicSpec {
    pub name: String,
    pub partitions: i32,
    pub compact: bool,
}

pub fn ensure(k: &KafkaConfig, specs: &[TopicSpec]) -> Result<(), KafkaRunError> {
    // Only missing topics are created: clusters that forbid CreateTopics to applications
    // work as long as the topics were made beforehand.
    let probe: BaseConsumer = base_config(k, Role::Shared).create()?;
    let md = retry(Duration::from_secs(60), || {
        probe.fetch_metadata(None, Duration::from_secs(10))
    })?;
    let existing: std::collections::HashSet<&str> = md
        .topics()
        .iter()
        .filter(|t| !t.partitions().is_empty())
        .map(|t| t.name())
        .collect();
    let missing: Vec<&TopicSpec> = specs.iter().filter(|s| !existing.contains(s.name.as_str())).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = base_config(k, Role::Shared).create()?;
    let new: Vec<NewTopic> = missing
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
    let c: BaseConsumer = base_config(k, Role::Shared).create()?;
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let md = retry(Duration::from_secs(60), || {
            c.fetch_metadata(Some(topic), Duration::from_secs(5))
        })?;
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

/// Retries a metadata request through transient failures (broker restarting, leader
/// moving) until `within` has passed.
pub fn retry<T>(within: Duration, mut f: impl FnMut() -> rdkafka::error::KafkaResult<T>) -> Result<T, KafkaRunError> {
    let deadline = std::time::Instant::now() + within;
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "metadata request failed; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => return Err(e.into()),
        }
    }
}
