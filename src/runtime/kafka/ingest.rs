//! Stage 1, `ingest`: stateless. Raw webhook payloads → one `MessageEvent` per message or
//! status on the events topic, keyed by user; bad payloads and events → dead letters.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::clients::{group_consumer, Out, OutRecord, RebalanceEvent};
use super::stateful::{take_rebalance_events, task_producer};
use super::{classify, Framings, KafkaRunError, Polled, POLL};
use crate::codec::avro::{encode_dead_letter, encode_event, DeadLetterRecord};
use crate::config::Config;
use crate::ingest::Normaliser;
use crate::ops::health::health;
use crate::ops::metrics::{metrics, DeadLetterReason};

pub fn run(config: &Config, framings: &Framings, shutdown: &AtomicBool) -> Result<(), KafkaRunError> {
    let k = &config.kafka;
    let source = k.webhooks_topic();
    let events_topic = k.events_topic();
    let dlq = k.dead_letter_topic();
    let consumer = group_consumer(k, "ingest", k.exactly_once())?;
    consumer.subscribe(&[source.as_str()])?;
    let out = Out::new(k, None)?;
    let mut norm = Normaliser::new(config.on_premises(), config.max_payload_bytes);
    let mut events = Vec::new();
    let mut bad = Vec::new();
    let mut buf = Vec::with_capacity(512);
    let h = metrics().stage("ingest");
    let m_all = metrics();
    // Stateless: an assignment needs no restore, only bookkeeping for /readyz and lag.
    let mut assigned: BTreeSet<i32> = BTreeSet::new();
    // Exactly-once: one transactional producer per assigned input partition.
    let mut txns: BTreeMap<i32, Out> = BTreeMap::new();
    let track_assignment = |assigned: &mut BTreeSet<i32>, txns: &mut BTreeMap<i32, Out>| -> Result<(), KafkaRunError> {
        for ev in take_rebalance_events(&consumer) {
            match ev {
                RebalanceEvent::Assigned(ps) => {
                    m_all.rebalances.with_label_values(&["ingest", "assigned"]).inc();
                    health().joined("ingest");
                    for p in ps {
                        if let Some(txn) = task_producer(k, "ingest", p)? {
                            txns.insert(p, txn);
                        }
                        assigned.insert(p);
                    }
                }
                RebalanceEvent::Revoked(ps) => {
                    m_all.rebalances.with_label_values(&["ingest", "revoked"]).inc();
                    for p in ps {
                        assigned.remove(&p);
                        if let Some(txn) = txns.remove(&p) {
                            txn.abort_transaction(Duration::from_secs(30));
                        }
                        let _ = m_all.consumer_lag.remove_label_values(&["ingest", &p.to_string()]);
                    }
                }
            }
            health().assigned("ingest", assigned.len());
        }
        Ok(())
    };
    tracing::info!(topic = %source, "ingest started");
    while !shutdown.load(Ordering::SeqCst) {
        let started = Instant::now();
        let span = tracing::debug_span!("batch", stage = "ingest", records = tracing::field::Empty);
        let _batch = span.enter();
        let mut next: Vec<(i32, i64)> = Vec::new();
        let mut n = 0usize;
        while n < k.batch_max {
            let polled = consumer.poll(if n == 0 { POLL } else { Duration::ZERO });
            track_assignment(&mut assigned, &mut txns)?;
            let m = match classify(polled) {
                Polled::Record(m) => m,
                Polled::Nothing => break,
                Polled::Retry => continue,
            };
            n += 1;
            let payload = m.payload().unwrap_or_default();
            let producer = txns.get(&m.partition()).unwrap_or(&out);
            let dead = |reason: String, original: &[u8]| DeadLetterRecord {
                stage: "ingest".into(),
                source_topic: source.clone(),
                source_partition: m.partition(),
                source_offset: m.offset(),
                reason,
                original: original.to_vec(),
                key: m.key().map(<[u8]>::to_vec),
            };
            let mut dead_letters = Vec::new();
            match std::str::from_utf8(payload) {
                Err(e) => dead_letters.push((
                    DeadLetterReason::InvalidPayload,
                    dead(
                        format!("payload is not valid UTF-8 (byte {})", e.valid_up_to()),
                        payload,
                    ),
                )),
                Ok(text) => {
                    events.clear();
                    bad.clear();
                    if let Err(e) = norm.normalise(text, &mut events, &mut bad) {
                        dead_letters.push((DeadLetterReason::InvalidPayload, dead(e.to_string(), payload)));
                    }
                    for b in bad.drain(..) {
                        dead_letters.push((
                            DeadLetterReason::InvalidEvent,
                            dead(format!("{} at {}", b.reason, b.path), b.original.as_bytes()),
                        ));
                    }
                    h.produced.inc_by(events.len() as u64);
                    for ev in events.drain(..) {
                        buf.clear();
                        encode_event(&ev, &framings.events, &mut buf);
                        producer.send(OutRecord {
                            topic: &events_topic,
                            key: ev.user.as_bytes(),
                            value: Some(&buf),
                            partition: None,
                            headers: None,
                        })?;
                    }
                }
            }
            for (class, d) in dead_letters {
                m_all.dead_letter("ingest", class);
                buf.clear();
                encode_dead_letter(&d, &framings.dead_letter, &mut buf);
                producer.send(OutRecord {
                    topic: &dlq,
                    key: m.key().unwrap_or_default(),
                    value: Some(&buf),
                    partition: None,
                    headers: None,
                })?;
            }
            match next.iter_mut().find(|(p, _)| *p == m.partition()) {
                Some(e) => e.1 = m.offset() + 1,
                None => next.push((m.partition(), m.offset() + 1)),
            }
        }
        if n == 0 {
            continue;
        }
        h.input.inc_by(n as u64);
        span.record("records", n);
        // Outputs acknowledged before the input offsets move.
        let persisting = Instant::now();
        out.flush(Duration::from_secs(120))?;
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &next {
            match txns.get(p) {
                Some(txn) => {
                    let mut offsets = TopicPartitionList::new();
                    offsets.add_partition_offset(&source, *p, Offset::Offset(*o))?;
                    let group = consumer.group_metadata().ok_or_else(|| {
                        KafkaRunError::Config("no consumer group metadata for the transaction".into())
                    })?;
                    txn.commit_transaction(&offsets, &group, Duration::from_secs(120))?;
                }
                None => tpl.add_partition_offset(&source, *p, Offset::Offset(*o))?,
            }
        }
        if tpl.count() > 0 {
            consumer.commit(&tpl, CommitMode::Async)?;
        }
        h.commit.observe(persisting.elapsed().as_secs_f64());
        h.batch.observe(started.elapsed().as_secs_f64());
    }
    out.flush(Duration::from_secs(30))?;
    tracing::info!("ingest stopped");
    Ok(())
}
