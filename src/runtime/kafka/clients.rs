//! librdkafka clients configured for wabill: idempotent producers whose deliveries are
//! tracked (a batch is acknowledged only when every record is), and group consumers with
//! manual offsets, cooperative-sticky assignment and rebalance events handed to the loop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::TopicPartitionList;

use super::KafkaRunError;
use crate::config::KafkaConfig;

/// librdkafka statistics feed the consumer-lag metric of group consumers only; other
/// clients would just log them.
const STATISTICS_INTERVAL: &str = "statistics.interval.ms";

/// Which kind of client a configuration is for: each gets the shared pass-through
/// properties plus its own, so a consumer-only setting never reaches a producer (where
/// librdkafka would log a `CONFWARN` for it at every start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Admin and metadata clients: shared properties only.
    Shared,
    Consumer,
    Producer,
}

/// Client settings every wabill client shares, then the user's pass-through properties
/// (which win, so security settings and tuning reach librdkafka unchanged).
pub fn base_config(k: &KafkaConfig, role: Role) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &k.brokers);
    c.set("client.id", format!("{}-wabill", k.prefix));
    c.set("log_level", "4");
    apply_properties(&mut c, k, role);
    c
}

/// The user's properties for `role`: `[kafka.properties]`, then the role's own table.
/// Applied last by every constructor, so they override wabill's defaults.
fn apply_properties(c: &mut ClientConfig, k: &KafkaConfig, role: Role) {
    let own = match role {
        Role::Shared => None,
        Role::Consumer => Some(&k.consumer_properties),
        Role::Producer => Some(&k.producer_properties),
    };
    for (key, v) in k.properties.iter().chain(own.into_iter().flatten()) {
        if key != STATISTICS_INTERVAL {
            c.set(key, v);
        }
    }
}

/// Delivery reports: errors, and the highest acknowledged offset per (topic, partition)
/// (the changelog offset a local checkpoint corresponds to).
#[derive(Default)]
pub struct Deliveries {
    pub errors: AtomicU64,
    pub last_error: Mutex<Option<String>>,
    pub acked: Mutex<HashMap<(String, i32), i64>>,
}

#[derive(Clone, Default)]
pub struct TrackingContext(pub Arc<Deliveries>);

impl ClientContext for TrackingContext {}

impl ProducerContext for TrackingContext {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(m) => {
                if let Ok(mut acked) = self.0.acked.lock() {
                    let e = acked.entry((m.topic().to_string(), m.partition())).or_insert(-1);
                    *e = (*e).max(m.offset());
                }
            }
            Err((e, _)) => {
                self.0.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut l) = self.0.last_error.lock() {
                    *l = Some(e.to_string());
                }
            }
        }
    }
}

pub struct Out {
    producer: BaseProducer<TrackingContext>,
    pub deliveries: Arc<Deliveries>,
}

/// One record to produce. `partition: None` lets the key pick it (murmur2, as Java).
pub struct OutRecord<'a> {
    pub topic: &'a str,
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
    pub partition: Option<i32>,
    pub headers: Option<OwnedHeaders>,
}

/// How long one delivery-report poll of `Out::flush` waits (librdkafka's poll runs to
/// its timeout). Acks normally arrive within 1–15 ms, so 1 ms steps while they keep
/// coming; once none has come for 50 ms (a broker that is gone, e.g. a SIGTERM while it
/// is down) the steps grow to 100 ms instead of a thousand wake-ups a second until the
/// flush deadline.
fn poll_step(since_progress: Duration) -> Duration {
    if since_progress < Duration::from_millis(50) {
        Duration::from_millis(1)
    } else {
        (since_progress / 10).min(Duration::from_millis(100))
    }
}

/// Every producer wabill makes: idempotent, acks from all replicas, lz4, Java's
/// partitioner (so keys land where Kafka Streams would put them), then the user's
/// shared and producer properties.
pub fn producer_config(k: &KafkaConfig, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = base_config(k, Role::Producer);
    c.set("enable.idempotence", "true");
    c.set("acks", "all");
    c.set("partitioner", "murmur2_random");
    c.set("linger.ms", "5");
    c.set("compression.type", "lz4");
    c.set("queue.buffering.max.messages", "1000000");
    c.set("queue.buffering.max.kbytes", "1048576");
    if let Some(id) = transactional_id {
        c.set("transactional.id", id);
    }
    apply_properties(&mut c, k, Role::Producer);
    c
}

impl Out {
    pub fn new(k: &KafkaConfig, transactional_id: Option<&str>) -> Result<Out, KafkaRunError> {
        let deliveries = Arc::new(Deliveries::default());
        let c = producer_config(k, transactional_id);
        let producer = c.create_with_context(TrackingContext(deliveries.clone()))?;
        Ok(Out { producer, deliveries })
    }

    pub fn producer(&self) -> &BaseProducer<TrackingContext> {
        &self.producer
    }

    /// Queues a record, waiting for room when librdkafka's queue is full.
    pub fn send(&self, r: OutRecord<'_>) -> Result<(), KafkaRunError> {
        let mut rec = BaseRecord::to(r.topic).key(r.key);
        if let Some(v) = r.value {
            rec = rec.payload(v);
        }
        if let Some(p) = r.partition {
            rec = rec.partition(p);
        }
        if let Some(h) = r.headers {
            rec = rec.headers(h);
        }
        loop {
            match self.producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    rec = back;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
    }

    /// Waits until every queued record is acknowledged. Any failed delivery fails the
    /// batch: the caller must not persist state or commit offsets after it.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaRunError> {
        let deadline = Instant::now() + timeout;
        // Not `BaseProducer::flush` in a loop: with delivery reports pending it polls in
        // steps of 100 ms that each run to their end, so every flush took ≥ 100 ms while
        // the acks arrive in 1–15 ms (profiled: the stages sat idle 40–80 % of the run).
        // A zero-timeout flush wakes the broker threads to send what lingers; then serve
        // delivery reports 1 ms at a time until none is outstanding.
        match self.producer.flush(Duration::ZERO) {
            Ok(()) | Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)) => {}
            Err(e) => return Err(e.into()),
        }
        let mut in_flight = self.producer.in_flight_count();
        let mut progress_at = Instant::now();
        while in_flight > 0 {
            let now = Instant::now();
            if now >= deadline {
                return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut).into());
            }
            let step = poll_step(now - progress_at).min(deadline - now);
            self.producer.poll(step);
            let left = self.producer.in_flight_count();
            if left < in_flight {
                progress_at = Instant::now();
            }
            in_flight = left;
        }
        self.take_delivery_errors()?;
        Ok(())
    }

    /// Fails if any record queued since the last check was not delivered.
    fn take_delivery_errors(&self) -> Result<(), KafkaRunError> {
        let errors = self.deliveries.errors.swap(0, Ordering::Relaxed);
        if errors > 0 {
            let last = self
                .deliveries
                .last_error
                .lock()
                .ok()
                .and_then(|l| l.clone())
                .unwrap_or_default();
            return Err(KafkaRunError::Delivery { failed: errors, last });
        }
        Ok(())
    }

    /// Exactly-once mode: registers the transactional id (fencing and aborting whatever a
    /// previous incarnation left open) and opens the first transaction.
    pub fn start_transactions(&self, timeout: Duration) -> Result<(), KafkaRunError> {
        self.producer.init_transactions(timeout)?;
        self.producer.begin_transaction()?;
        Ok(())
    }

    /// Commits the open transaction with the consumer's input offsets in it, then opens
    /// the next one. Any failure fails the batch (the process restarts from its stores and
    /// the committed offsets; the aborted outputs are invisible to read_committed readers).
    pub fn commit_transaction(
        &self,
        offsets: &TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
        timeout: Duration,
    ) -> Result<(), KafkaRunError> {
        self.producer.send_offsets_to_transaction(offsets, group, timeout)?;
        self.producer.commit_transaction(timeout)?;
        self.take_delivery_errors()?;
        self.producer.begin_transaction()?;
        Ok(())
    }

    /// Abandons the open transaction (a revoked task between batches has an empty one).
    pub fn abort_transaction(&self, timeout: Duration) {
        if let Err(e) = self.producer.abort_transaction(timeout) {
            tracing::warn!(error = %e, "aborting a transaction");
        }
    }

    pub fn acked_offset(&self, topic: &str, partition: i32) -> Option<i64> {
        self.deliveries
            .acked
            .lock()
            .ok()?
            .get(&(topic.to_string(), partition))
            .copied()
    }
}

/// Assignment changes seen inside `poll`, handled by the loop right after it returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    Assigned(Vec<i32>),
    Revoked(Vec<i32>),
}

pub struct GroupContext {
    /// The stage this consumer feeds (metric label).
    pub stage: &'static str,
    pub events: Mutex<Vec<RebalanceEvent>>,
}

impl ClientContext for GroupContext {
    /// librdkafka's periodic statistics (`statistics.interval.ms`): consumer lag per
    /// assigned partition, measured against the committed offset, as Kafka tooling does.
    fn stats(&self, statistics: rdkafka::Statistics) {
        let lag = &crate::ops::metrics::metrics().consumer_lag;
        for topic in statistics.topics.values() {
            for (p, part) in &topic.partitions {
                if *p < 0 {
                    continue; // librdkafka's internal "unassigned" partition
                }
                let label = p.to_string();
                if part.consumer_lag >= 0 {
                    lag.with_label_values(&[self.stage, &label]).set(part.consumer_lag);
                } else {
                    let _ = lag.remove_label_values(&[self.stage, &label]);
                }
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = r {
            let parts = tpl.elements().iter().map(|e| e.partition()).collect();
            if let Ok(mut ev) = self.events.lock() {
                ev.push(RebalanceEvent::Revoked(parts));
            }
        }
    }
    fn post_rebalance(&self, _c: &BaseConsumer<Self>, r: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = r {
            let parts = tpl.elements().iter().map(|e| e.partition()).collect();
            if let Ok(mut ev) = self.events.lock() {
                ev.push(RebalanceEvent::Assigned(parts));
            }
        }
    }
}

pub type GroupConsumer = BaseConsumer<GroupContext>;

pub fn group_consumer(
    k: &KafkaConfig,
    stage: &'static str,
    read_committed: bool,
) -> Result<GroupConsumer, KafkaRunError> {
    Ok(
        group_consumer_config(k, stage, read_committed).create_with_context(GroupContext {
            stage,
            events: Mutex::default(),
        })?,
    )
}

fn group_consumer_config(k: &KafkaConfig, stage: &'static str, read_committed: bool) -> ClientConfig {
    let mut c = base_config(k, Role::Consumer);
    c.set("group.id", k.group(stage));
    // Consumer lag for /metrics comes from librdkafka's statistics.
    c.set(
        STATISTICS_INTERVAL,
        k.consumer_properties
            .get(STATISTICS_INTERVAL)
            .or_else(|| k.properties.get(STATISTICS_INTERVAL))
            .map_or("5000", String::as_str),
    );
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("auto.offset.reset", "earliest");
    c.set("partition.assignment.strategy", "cooperative-sticky");
    // A store restores inside the poll loop (no poll while it runs). librdkafka's 5 min
    // default would make a restore of more than ~10 M changelog keys leave the group;
    // 15 min covers ~35 M keys at the measured SQLite-broker rate. Still overridable.
    c.set("max.poll.interval.ms", "900000");
    c.set(
        "isolation.level",
        if read_committed {
            "read_committed"
        } else {
            "read_uncommitted"
        },
    );
    apply_properties(&mut c, k, Role::Consumer);
    c
}

/// A consumer outside any group, for restoring changelogs by manual assignment.
pub fn plain_consumer(k: &KafkaConfig, purpose: &str) -> Result<BaseConsumer, KafkaRunError> {
    let mut c = base_config(k, Role::Consumer);
    // Exactly-once: a changelog holds aborted transactions; only committed state restores.
    if k.exactly_once() {
        c.set("isolation.level", "read_committed");
    }
    c.set("group.id", format!("{}-{purpose}-restore", k.prefix));
    c.set("enable.auto.commit", "false");
    c.set("enable.auto.offset.store", "false");
    c.set("auto.offset.reset", "earliest");
    apply_properties(&mut c, k, Role::Consumer);
    Ok(c.create()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kafka(toml_text: &str) -> KafkaConfig {
        toml::from_str(toml_text).expect("test config parses")
    }

    #[test]
    fn role_properties_reach_only_their_role() {
        let k = kafka(
            r#"
            [properties]
            "security.protocol" = "SASL_SSL"
            "linger.ms" = "20"
            [consumer_properties]
            "fetch.wait.max.ms" = "10"
            [producer_properties]
            "linger.ms" = "50"
            "#,
        );
        let producer = producer_config(&k, None);
        assert_eq!(producer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(producer.get("fetch.wait.max.ms"), None);
        // The role's own table wins over the shared one and over wabill's default (5).
        assert_eq!(producer.get("linger.ms"), Some("50"));

        let consumer = base_config(&k, Role::Consumer);
        assert_eq!(consumer.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(consumer.get("fetch.wait.max.ms"), Some("10"));
        assert_eq!(consumer.get("linger.ms"), Some("20"));

        let admin = base_config(&k, Role::Shared);
        assert_eq!(admin.get("security.protocol"), Some("SASL_SSL"));
        assert_eq!(admin.get("fetch.wait.max.ms"), None);
    }

    #[test]
    fn flush_polls_fast_while_acks_come_and_backs_off_when_they_stop() {
        let ms = Duration::from_millis;
        assert_eq!(poll_step(ms(0)), ms(1));
        assert_eq!(poll_step(ms(49)), ms(1));
        assert!(poll_step(ms(200)) > ms(1));
        assert_eq!(poll_step(ms(5_000)), ms(100));
        // Never longer than the cap, and never shrinking as the stall goes on.
        let mut last = Duration::ZERO;
        for t in (0..10_000).step_by(7) {
            let s = poll_step(ms(t));
            assert!(s <= ms(100) && s >= last);
            last = s;
        }
    }

    #[test]
    fn group_consumers_take_statistics_interval_from_either_table() {
        let interval = |text: &str| {
            group_consumer_config(&kafka(text), "windows", false)
                .get(STATISTICS_INTERVAL)
                .map(str::to_string)
        };
        assert_eq!(
            interval("[properties]\n\"statistics.interval.ms\" = \"1000\"\n").as_deref(),
            Some("1000")
        );
        assert_eq!(
            interval("[consumer_properties]\n\"statistics.interval.ms\" = \"2000\"\n").as_deref(),
            Some("2000")
        );
        assert_eq!(interval("").as_deref(), Some("5000"));
    }
}
