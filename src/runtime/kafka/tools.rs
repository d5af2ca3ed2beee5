//! Operator tools around `wabill run`: feed webhook files into the webhooks topic
//! (`wabill produce`) and read the billing topic back into month statements
//! (`wabill statements`). Used by `make demo`, and handy against a real cluster.

use std::collections::{BTreeMap, HashSet};
use std::io::BufRead;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::clients::{base_config, Out, OutRecord, Role};
use super::{classify, topics, KafkaRunError, Polled};
use crate::codec::avro::decode_billing;
use crate::config::Config;
use crate::pipeline::records::Billed;

/// Produces every non-empty line of `inputs` (`-` = stdin) to the webhooks topic, in
/// order, and waits until the broker acknowledged all of them. Creates the topic (one
/// partition, see README "Decisions and limits") when it is missing.
pub fn produce_webhooks(config: &Config, inputs: &[String], progress: bool) -> Result<u64, KafkaRunError> {
    let k = &config.kafka;
    let topic = k.webhooks_topic();
    topics::ensure(
        k,
        &[topics::TopicSpec {
            name: topic.clone(),
            partitions: 1,
            compact: false,
        }],
    )?;
    let out = Out::new(k, None)?;
    let started = Instant::now();
    let mut last_report = Instant::now();
    let mut n = 0u64;
    for input in inputs {
        let reader: Box<dyn BufRead> = if input == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            let f = std::fs::File::open(input)
                .map_err(|e| std::io::Error::new(e.kind(), format!("cannot open {input}: {e}")))?;
            Box::new(std::io::BufReader::with_capacity(1 << 20, f))
        };
        for line in reader.split(b'\n') {
            let line = line.map_err(|e| std::io::Error::new(e.kind(), format!("reading {input}: {e}")))?;
            let line = line.strip_suffix(b"\r").unwrap_or(&line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.send(OutRecord {
                topic: &topic,
                key: &[],
                value: Some(line),
                partition: None,
                headers: None,
            })?;
            n += 1;
            if progress && last_report.elapsed() >= Duration::from_secs(2) {
                last_report = Instant::now();
                eprintln!(
                    "wabill produce: {n} payloads ({:.0}/s) to {topic}",
                    n as f64 / started.elapsed().as_secs_f64()
                );
            }
        }
    }
    out.flush(Duration::from_secs(300))?;
    Ok(n)
}

/// Reads the billing topic from the beginning, deduplicated by conversation or charge id
/// (the effectively-once guarantee allows repeats), until it has been at its end with no
/// new record for `quiet`, or `timeout` passes. Returns the records in (instant, id) order.
/// Confluent-framed records are told apart by the schema ids of this configuration.
pub fn read_billing(
    config: &Config,
    quiet: Duration,
    timeout: Duration,
    progress: bool,
) -> Result<Vec<Billed>, KafkaRunError> {
    let framings = super::Framings::resolve(config)?;
    let k = &config.kafka;
    let topic = k.billing_topic();
    let mut c = base_config(k, Role::Consumer);
    c.set("group.id", format!("{}-statements", k.prefix));
    c.set("enable.auto.commit", "false");
    c.set("auto.offset.reset", "earliest");
    let consumer: BaseConsumer = c.create()?;
    let partitions = topics::partitions(k, &topic, Duration::from_secs(30))?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let started = Instant::now();
    let mut last_record = Instant::now();
    let mut last_report = Instant::now();
    let mut seen = HashSet::new();
    let mut records = Vec::new();
    let mut undecodable = 0u64;
    let mut next: BTreeMap<i32, i64> = BTreeMap::new();
    loop {
        match classify(consumer.poll(Duration::from_millis(200))) {
            Polled::Record(m) => {
                last_record = Instant::now();
                next.insert(m.partition(), m.offset() + 1);
                match decode_billing(m.payload().unwrap_or_default(), &|id| framings.kind_of_schema_id(id)) {
                    Ok(b) => {
                        if seen.insert(b.sort_key().1.to_string()) {
                            records.push(b);
                        }
                    }
                    Err(_) => undecodable += 1,
                }
            }
            Polled::Nothing | Polled::Retry => {
                let at_end = (0..partitions).all(|p| {
                    consumer
                        .fetch_watermarks(&topic, p, Duration::from_secs(5))
                        .map(|(low, high)| next.get(&p).copied().unwrap_or(low) >= high)
                        .unwrap_or(false)
                });
                if at_end && last_record.elapsed() >= quiet {
                    break;
                }
                if started.elapsed() >= timeout {
                    tracing::warn!(
                        records = records.len(),
                        "billing topic still growing at the timeout; statements are partial"
                    );
                    break;
                }
            }
        }
        if progress && last_report.elapsed() >= Duration::from_secs(5) {
            last_report = Instant::now();
            eprintln!(
                "wabill statements: {} records read from {topic}, waiting for the stream to drain",
                records.len()
            );
        }
    }
    if undecodable > 0 {
        tracing::warn!(undecodable, topic = %topic, "records on the billing topic did not decode; skipped");
    }
    records.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    Ok(records)
}
