//! Smoke test of the real-broker harness: Tansu with SQLite storage on loopback.
//! Topics, keyed records with headers, a consumer group with committed offsets, then kill -9 and
//! restart: the records and the committed offsets must survive.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use support::broker::{Broker, Consumed, Record};

const TOPIC: &str = "smoke-events";
const COMPACT_TOPIC: &str = "smoke-changelog";
const N: usize = 1_000;
const TIMEOUT: Duration = Duration::from_secs(20);

fn record(i: usize) -> Record {
    Record::new(format!("user-{}", i % 97), format!("{{\"seq\":{i}}}"))
        .header("seq", i.to_string())
        .header("source", "smoke")
}

fn seq_of(c: &Consumed) -> usize {
    let value = String::from_utf8(c.value.clone().expect("value")).unwrap();
    value
        .trim_start_matches("{\"seq\":")
        .trim_end_matches('}')
        .parse()
        .unwrap_or_else(|_| panic!("unexpected value {value}"))
}

/// Every record `0..n` exactly once, with its key and headers, and a key always lands on the same
/// partition.
fn check_all(got: &[Consumed], range: std::ops::Range<usize>) {
    assert_eq!(got.len(), range.len(), "record count");
    let seqs: BTreeSet<usize> = got.iter().map(seq_of).collect();
    assert_eq!(seqs, range.clone().collect::<BTreeSet<_>>(), "sequence numbers");
    let mut partition_of_key: HashMap<Vec<u8>, i32> = HashMap::new();
    for c in got {
        let i = seq_of(c);
        let key = c.key.clone().expect("key");
        assert_eq!(key, format!("user-{}", i % 97).into_bytes());
        assert_eq!(
            c.headers,
            vec![
                ("seq".to_string(), Some(i.to_string().into_bytes())),
                ("source".to_string(), Some(b"smoke".to_vec())),
            ],
            "headers of record {i}"
        );
        let p = *partition_of_key.entry(key).or_insert(c.partition);
        assert_eq!(p, c.partition, "key of record {i} moved partition");
    }
}

#[test]
fn tansu_topics_groups_and_persistence_across_kill9() {
    let t0 = Instant::now();
    let mut broker = Broker::start();
    eprintln!(
        "broker up on {} in {:?} (dir {})",
        broker.bootstrap(),
        broker.last_start_duration(),
        broker.dir().display()
    );

    broker.create_topic(TOPIC, 4, false);
    broker.create_topic(COMPACT_TOPIC, 2, true);
    assert_eq!(broker.partitions(TOPIC), vec![0, 1, 2, 3]);
    assert_eq!(broker.partitions(COMPACT_TOPIC), vec![0, 1]);
    let config = broker.topic_config(COMPACT_TOPIC);
    assert_eq!(
        config.get("cleanup.policy").cloned().flatten().as_deref(),
        Some("compact"),
        "compacted topic config: {config:?}"
    );

    // 1,000 keyed records with headers over 4 partitions.
    let t = Instant::now();
    let records: Vec<Record> = (0..N).map(record).collect();
    let acked = broker.produce_records(TOPIC, &records);
    eprintln!("produced {N} records in {:?}", t.elapsed());
    assert!(broker.ensure_header_index());
    let per_partition: BTreeMap<i32, usize> = acked.iter().fold(BTreeMap::new(), |mut m, (p, _)| {
        *m.entry(*p).or_default() += 1;
        m
    });
    assert_eq!(
        per_partition.len(),
        4,
        "keys spread over all partitions: {per_partition:?}"
    );
    let high: Vec<(i32, i64)> = broker
        .watermarks(TOPIC)
        .into_iter()
        .map(|(p, low, high)| {
            assert_eq!(low, 0, "low watermark of partition {p}");
            (p, high)
        })
        .collect();
    for (p, high) in &high {
        assert_eq!(*high as usize, per_partition[p], "high watermark of partition {p}");
    }

    // A compacted topic takes keyed records too.
    for (k, v) in [("a", "1"), ("b", "1"), ("a", "2")] {
        broker.produce(COMPACT_TOPIC, k.as_bytes(), v.as_bytes());
    }

    // Consume everything in a group; consume_all commits what it read.
    let t = Instant::now();
    let got = broker.consume_all(TOPIC, "smoke-group", N, TIMEOUT);
    eprintln!("consumed {} records in a group in {:?}", got.len(), t.elapsed());
    check_all(&got, 0..N);
    let committed = broker.committed_offsets("smoke-group", TOPIC);
    let expected_committed: Vec<(i32, Option<i64>)> = high.iter().map(|(p, h)| (*p, Some(*h))).collect();
    assert_eq!(committed, expected_committed, "committed offsets before the crash");
    let compacted = broker.consume_all(COMPACT_TOPIC, "smoke-compact", 3, TIMEOUT);
    assert_eq!(compacted.len(), 3, "records of the compacted topic");

    // kill -9, restart on the same port and database.
    let t = Instant::now();
    broker.kill9();
    let killed = t.elapsed();
    broker.restart();
    eprintln!(
        "kill -9 took {killed:?}, restart {:?} (total {:?})",
        broker.last_start_duration(),
        t.elapsed()
    );

    assert_eq!(broker.partitions(TOPIC), vec![0, 1, 2, 3]);
    let after: Vec<(i32, i64)> = broker.watermarks(TOPIC).into_iter().map(|(p, _, h)| (p, h)).collect();
    assert_eq!(after, high, "high watermarks after restart");
    assert_eq!(
        broker.committed_offsets("smoke-group", TOPIC),
        expected_committed,
        "committed offsets after restart"
    );

    // Every record is still there for a new group...
    let t = Instant::now();
    let again = broker.consume_all(TOPIC, "smoke-fresh-group", N, TIMEOUT);
    eprintln!("re-read {} records after restart in {:?}", again.len(), t.elapsed());
    check_all(&again, 0..N);
    let before: BTreeSet<(i32, i64, usize)> = got.iter().map(|c| (c.partition, c.offset, seq_of(c))).collect();
    let now: BTreeSet<(i32, i64, usize)> = again.iter().map(|c| (c.partition, c.offset, seq_of(c))).collect();
    assert_eq!(before, now, "same records at the same offsets after restart");

    // ...and the old group resumes from its committed offsets: it sees only new records.
    let more: Vec<Record> = (N..N + 20).map(record).collect();
    broker.produce_records(TOPIC, &more);
    let resumed = broker.consume_all(TOPIC, "smoke-group", 20, TIMEOUT);
    check_all(&resumed, N..N + 20);

    eprintln!("smoke test total {:?}", t0.elapsed());
}

/// The memory engine (benchmarks only) starts and serves a topic read from offset 0.
#[test]
fn tansu_memory_engine_round_trip() {
    let broker = Broker::start_memory();
    eprintln!(
        "memory broker up on {} in {:?}",
        broker.bootstrap(),
        broker.last_start_duration()
    );
    assert!(broker.db_path().is_none());
    broker.create_topic("bench-events", 4, false);
    let records: Vec<Record> = (0..500).map(record).collect();
    broker.produce_records("bench-events", &records);
    let got = broker.consume_all("bench-events", "bench-group", 500, TIMEOUT);
    check_all(&got, 0..500);
}
