//! One RocksDB store per (stage, partition), its compacted changelog, and restore.
//!
//! Changelog record: key = family code (1 byte) + store key, value = stored bytes, or a
//! tombstone for a delete. The input offset the state corresponds to is a meta entry
//! written in the same write batch as the state and the same changelog batch, so a
//! restored store always knows where to resume.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::clients::{plain_consumer, Out, OutRecord};
use super::KafkaRunError;
use crate::config::KafkaConfig;
use crate::pipeline::pending::{meta_i64, read_meta_i64};
use crate::state::{Backend, Family, RocksBackend, WriteSet};

/// Local-only: the last changelog offset already reflected in this RocksDB. Never
/// changelogged itself (it is only known after the changelog write is acknowledged).
const LOCAL_CHANGELOG_OFFSET: &str = "local.changelog_offset";
/// The last input offset applied (or buffered) by this state.
pub const INPUT_OFFSET: &str = "input.offset";

pub struct PartitionStore {
    pub partition: i32,
    pub backend: RocksBackend,
    pub changelog_topic: String,
    /// Next input offset to apply; `None` for a brand-new store (start where the group
    /// stands).
    pub next_offset: Option<i64>,
    /// Nothing local and nothing in the changelog: caches need no reads on a miss.
    pub fresh: bool,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct RestoreStats {
    pub records: u64,
    pub seconds: f64,
}

pub fn store_dir(state_dir: &str, stage: &str, partition: i32) -> PathBuf {
    Path::new(state_dir).join(stage).join(format!("{partition:04}"))
}

impl PartitionStore {
    /// Opens the local store and replays the changelog from its checkpoint to the end.
    pub fn open(
        k: &KafkaConfig,
        state_dir: &str,
        stage: &str,
        changelog_topic: &str,
        partition: i32,
    ) -> Result<(PartitionStore, RestoreStats), KafkaRunError> {
        let started = Instant::now();
        let mut backend = RocksBackend::open(&store_dir(state_dir, stage, partition))?;
        let local = backend
            .get(Family::Meta, LOCAL_CHANGELOG_OFFSET.as_bytes())?
            .and_then(|v| read_meta_i64(&v))
            .unwrap_or(-1);
        let consumer = plain_consumer(k, stage)?;
        let (low, high) = super::topics::retry(Duration::from_secs(300), || {
            consumer.fetch_watermarks(changelog_topic, partition, Duration::from_secs(10))
        })?;
        let mut records = 0u64;
        let from = (local + 1).max(low);
        if high > from {
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(changelog_topic, partition, Offset::Offset(from))?;
            consumer.assign(&tpl)?;
            let mut set = WriteSet::default();
            let restored = crate::ops::metrics::metrics()
                .restore_records
                .with_label_values(&[stage]);
            // Next offset to read. Under read_committed, transaction markers and aborted
            // records take offsets no message shows: the consumer's position covers them.
            let mut next = from;
            let deadline = Instant::now() + Duration::from_secs(600);
            while next < high {
                if Instant::now() > deadline {
                    return Err(KafkaRunError::Restore {
                        topic: changelog_topic.to_string(),
                        partition,
                        reason: format!("stuck at offset {next} of {high}"),
                    });
                }
                let m = match super::classify(consumer.poll(Duration::from_millis(200))) {
                    super::Polled::Record(m) => m,
                    super::Polled::Nothing | super::Polled::Retry => {
                        if let Some(pos) = consumer.position().ok().and_then(|tpl| {
                            tpl.find_partition(changelog_topic, partition)
                                .and_then(|e| e.offset().to_raw())
                        }) {
                            next = next.max(pos);
                        }
                        continue;
                    }
                };
                next = m.offset() + 1;
                let Some(key) = m.key() else { continue };
                let Some((&code, rest)) = key.split_first() else {
                    continue;
                };
                let Some(family) = Family::from_code(code) else {
                    continue;
                };
                set.put(family, rest, m.payload());
                records += 1;
                if set.len() >= 10_000 {
                    restored.inc_by(set.len() as u64);
                    backend.write(&mut set)?;
                }
            }
            restored.inc_by(set.len() as u64);
            meta_i64(&mut set, LOCAL_CHANGELOG_OFFSET, next - 1);
            backend.write(&mut set)?;
        }
        let next_offset = backend
            .get(Family::Meta, INPUT_OFFSET.as_bytes())?
            .and_then(|v| read_meta_i64(&v))
            .map(|o| o + 1);
        let fresh = backend.is_empty()?;
        let stats = RestoreStats {
            records,
            seconds: started.elapsed().as_secs_f64(),
        };
        tracing::info!(
            stage,
            partition,
            records,
            seconds = stats.seconds,
            ?next_offset,
            "store restored"
        );
        Ok((
            PartitionStore {
                partition,
                backend,
                changelog_topic: changelog_topic.to_string(),
                next_offset,
                fresh,
            },
            stats,
        ))
    }

    /// Step 1 of persisting a batch (after its outputs were acknowledged): queue the
    /// state changes, plus the input offset they correspond to, on the changelog.
    pub fn send_changelog(&self, out: &Out, set: &mut WriteSet, input_offset: i64) -> Result<(), KafkaRunError> {
        meta_i64(set, INPUT_OFFSET, input_offset);
        let mut key = Vec::with_capacity(64);
        for (family, k, v) in set.iter() {
            key.clear();
            key.push(family.code());
            key.extend_from_slice(k);
            out.send(OutRecord {
                topic: &self.changelog_topic,
                key: &key,
                value: v,
                partition: Some(self.partition),
                headers: None,
            })?;
        }
        Ok(())
    }

    /// Step 2, after the changelog records were acknowledged: the local write batch
    /// (state, input offset, changelog checkpoint) — atomically.
    pub fn write_local(&mut self, out: &Out, mut set: WriteSet, input_offset: i64) -> Result<(), KafkaRunError> {
        if let Some(o) = out.acked_offset(&self.changelog_topic, self.partition) {
            meta_i64(&mut set, LOCAL_CHANGELOG_OFFSET, o);
        }
        self.backend.write(&mut set)?;
        self.next_offset = Some(input_offset + 1);
        Ok(())
    }
}
