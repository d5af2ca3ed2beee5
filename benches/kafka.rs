//! Kafka throughput (issue #3): produce N webhook events to a real Tansu broker, then in
//! the same run measure (a) the raw consume rate of that topic by a bare rdkafka
//! consumer and (b) `wabill run` end to end (webhooks → billing drained), and report the
//! ratio. Not a timed test: run with `cargo bench --bench kafka` (WABILL_BENCH_EVENTS,
//! default 1,000,000; WABILL_BENCH_STORAGE=memory|sqlite, default memory;
//! WABILL_BENCH_MONTH=cbp2022|pmp2026, default cbp2022: the month of `benches/engine.rs`'s
//! replay benchmarks of that era, billed with the bundled sample card and bands).

#[allow(dead_code)]
#[path = "../tests/support/broker.rs"]
mod broker;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use wabill::sim::{self, SimConfig};

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        return; // `cargo test --all-targets` smoke run: nothing to measure.
    }
    let events: u64 = std::env::var("WABILL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let sqlite = std::env::var("WABILL_BENCH_STORAGE")
        .map(|v| v == "sqlite")
        .unwrap_or(false);
    let broker = if sqlite {
        broker::Broker::start()
    } else {
        broker::Broker::start_memory()
    };
    let prefix = "bench";
    let partitions = 4;
    let webhooks = format!("{prefix}-webhooks");
    // One webhooks partition: the supported setup (a time-ordered raw feed; see README).
    broker.create_topic(&webhooks, 1, false);

    let cfg = match std::env::var("WABILL_BENCH_MONTH").as_deref() {
        Ok("pmp2026") => SimConfig {
            start: 1_790_812_800, // 2026-10-01T00:00:00Z, as benches/engine.rs
            send_log: true,
            ..SimConfig::benchmark_month(events)
        },
        Ok("cbp2022") | Err(_) => SimConfig::benchmark_month(events),
        Ok(other) => panic!("WABILL_BENCH_MONTH={other}: expected cbp2022 or pmp2026"),
    };
    let mut lines = Vec::new();
    sim::generate(&cfg, |l| lines.push(l.to_string()));
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "2000000")
        .create()
        .expect("producer");
    let t = Instant::now();
    for l in &lines {
        let mut rec = BaseRecord::<(), _>::to(&webhooks).payload(l.as_str());
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((_, back)) => {
                    rec = back;
                    producer.poll(Duration::from_millis(5));
                }
            }
        }
    }
    producer.flush(Duration::from_secs(300)).expect("flush");
    let produce_secs = t.elapsed().as_secs_f64();
    let n_lines = lines.len();
    drop(lines);
    println!(
        "produced {n_lines} payloads ({events} events) in {produce_secs:.2}s ({:.0} payloads/s)",
        n_lines as f64 / produce_secs
    );

    // (a) raw consume rate, bare consumer, from offset 0.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "bench-raw")
        .set("auto.offset.reset", "earliest")
        .set("fetch.wait.max.ms", "10")
        .set("session.timeout.ms", "6000")
        .create()
        .expect("consumer");
    consumer.subscribe(&[&webhooks]).expect("subscribe");
    let mut got = 0usize;
    let mut first: Option<Instant> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while got < n_lines && Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            first.get_or_insert_with(Instant::now);
            std::hint::black_box(m.payload());
            got += 1;
        }
    }
    let raw_secs = first.map(|f| f.elapsed().as_secs_f64()).unwrap_or(f64::NAN);
    drop(consumer);
    let raw_rate = got as f64 / raw_secs;
    println!("raw consume: {got} payloads in {raw_secs:.2}s = {raw_rate:.0} payloads/s");
    if got < n_lines {
        eprintln!("raw consume read {got} of {n_lines} payloads before its deadline: no rate");
        std::process::exit(1);
    }

    // (b) wabill run end to end: time from start until the billing topic stops growing
    // and the ledger group has consumed everything.
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("wabill.toml");
    std::fs::write(
        &config,
        format!(
            "[kafka]\nbrokers = \"{}\"\nprefix = \"{prefix}\"\npartitions = {partitions}\nidle_flush_ms = 2000\nbatch_max = {}\n\
             [kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"10\"\n\"session.timeout.ms\" = \"6000\"\n[state]\ndir = \"{}\"\n",
            broker.bootstrap(),
            std::env::var("WABILL_BENCH_BATCH").ok().and_then(|v| v.parse::<usize>().ok()).unwrap_or(50_000),
            dir.path().join("state").display()
        ),
    )
    .expect("config");
    let t = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wabill"))
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("wabill run");
    // Drained = every stage's committed offset reached the end of its input topic and the
    // billing topic has not grown for 8 s (> two idle flushes). The time reported is when the last billing
    // record appeared.
    let mut last_billing = -1i64;
    let mut stable_since = Instant::now();
    let mut end_at = None;
    let mut drained = false;
    // Its own deadline: a slow broker (the SQLite engine) needs minutes for what the
    // memory engine does in seconds.
    let deadline = Instant::now() + Duration::from_secs(1800);
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        let ingest_done: i64 = broker
            .committed_offsets(&format!("{prefix}-ingest"), &webhooks)
            .iter()
            .map(|(_, o)| o.unwrap_or(0))
            .sum();
        let billing: i64 = broker
            .watermarks(&format!("{prefix}-billing"))
            .iter()
            .map(|(_, _, h)| *h)
            .sum();
        if billing != last_billing {
            last_billing = billing;
            stable_since = Instant::now();
            end_at = Some(t.elapsed());
        }
        let caught_up = |group: &str, topic: &str| {
            let end: i64 = broker.watermarks(topic).iter().map(|(_, _, h)| *h).sum();
            let done: i64 = broker
                .committed_offsets(group, topic)
                .iter()
                .map(|(_, o)| o.unwrap_or(0))
                .sum();
            end > 0 && done >= end
        };
        if ingest_done as usize >= n_lines
            && caught_up(&format!("{prefix}-windows"), &format!("{prefix}-events"))
            && caught_up(&format!("{prefix}-ledger"), &format!("{prefix}-conversations"))
            && stable_since.elapsed() > Duration::from_secs(8)
        {
            drained = true;
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    if !drained {
        // A run that did not finish has no throughput: reporting the time of its last
        // billing record would be a number for work that was never done.
        eprintln!(
            "wabill run did NOT drain before the deadline: some stage's committed offset is \
             short of its input's end (billing had {last_billing} records); no end-to-end rate"
        );
        std::process::exit(1);
    }
    let e2e = end_at.map(|d| d.as_secs_f64()).unwrap_or(f64::NAN);
    let e2e_rate = n_lines as f64 / e2e;
    println!(
        "wabill run end to end: {n_lines} payloads ({events} events) → {last_billing} billing records in {e2e:.2}s = {e2e_rate:.0} payloads/s ({:.0} events/s)",
        events as f64 / e2e
    );
    println!("ratio end-to-end / raw consume: {:.3}", e2e_rate / raw_rate);

    // (c) changelog restore rate: rebuild every windows store from its changelog into an
    // empty state directory, as a new instance taking the partitions would.
    let mut kcfg: wabill::config::Config =
        toml::from_str(&std::fs::read_to_string(&config).expect("config")).expect("toml");
    let fresh = tempfile::tempdir().expect("tempdir");
    kcfg.state.dir = fresh.path().display().to_string();
    let changelog = kcfg.kafka.changelog_topic("windows");
    let (mut records, mut secs) = (0u64, 0f64);
    for p in 0..partitions {
        let (_store, stats) =
            wabill::runtime::kafka::store::PartitionStore::open(&kcfg.kafka, &kcfg.state.dir, "windows", &changelog, p)
                .expect("restore");
        records += stats.records;
        secs += stats.seconds;
    }
    println!(
        "changelog restore: {records} records in {secs:.2}s = {:.0} keys/s",
        records as f64 / secs
    );
}
