//! `wabill run` against a real broker (Tansu, SQLite storage): the billing topic must hold
//! exactly the records `wabill replay` writes for the same webhooks — also when the
//! processor is killed with SIGKILL again and again — and poison records must reach the
//! dead-letter topic while everything else is billed.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::broker::{Broker, Record};
use wabill::codec::avro::{decode_billed, decode_dead_letter};
use wabill::sim::{self, Rng};

const PARTITIONS: i32 = 4;

fn billing_config(free_tier: u32) -> String {
    format!(
        "allowed_lateness_secs = 120\n[[waba]]\nid = \"{}\"\ntime_zone = \"America/Sao_Paulo\"\nmarkup_percent = \"12.5\"\nfree_tier = {free_tier}\n",
        sim::waba_id(0)
    )
}

fn run_config(broker: &Broker, prefix: &str, state_dir: &Path, free_tier: u32) -> String {
    format!(
        "{}\n[kafka]\nbrokers = \"{}\"\nprefix = \"{prefix}\"\npartitions = {PARTITIONS}\nbatch_max = 500\nidle_flush_ms = 3000\n\
         [kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"10\"\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         [state]\ndir = \"{}\"\n[http]\naddr = \"127.0.0.1:0\"\n",
        billing_config(free_tier),
        broker.bootstrap(),
        state_dir.display()
    )
}

/// Records on the billing topic, decoded and rendered as the replay's JSON lines.
fn billing_records(broker: &Broker, prefix: &str, expected: usize, timeout: Duration) -> Vec<String> {
    let topic = format!("{prefix}-billing");
    static READERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let got = broker.consume_all(&topic, &format!("{prefix}-test-reader-{n}"), expected, timeout);
    got.iter()
        .map(|c| {
            let b = decode_billed(c.value.as_deref().unwrap_or_default()).expect("billing record decodes");
            serde_json::to_string(&b.to_out()).unwrap()
        })
        .collect()
}

fn replay_reference(lines: &[String], free_tier: u32) -> Vec<String> {
    let billed = common::replay_lines(lines, &billing_config(free_tier));
    assert!(
        billed.dead.is_empty(),
        "reference replay has dead letters: {:?}",
        billed.dead
    );
    billed.records.iter().map(Value::to_string).collect()
}

fn assert_same(got: &BTreeSet<String>, want: &BTreeSet<String>, context: &str) {
    let missing: Vec<_> = want.difference(got).take(3).collect();
    let extra: Vec<_> = got.difference(want).take(3).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} missing, {} unexpected\nmissing e.g. {missing:#?}\nunexpected e.g. {extra:#?}\n{context}",
        want.difference(got).count(),
        got.difference(want).count()
    );
}

fn as_set(v: &[String]) -> BTreeSet<String> {
    v.iter()
        .map(|s| serde_json::from_str::<Value>(s).unwrap().to_string())
        .collect()
}

fn produce_webhooks(broker: &Broker, prefix: &str, lines: &[String]) {
    let records: Vec<Record> = lines.iter().map(|l| Record::new(b"", l.as_bytes())).collect();
    broker.produce_records(&format!("{prefix}-webhooks"), &records);
}

/// Reads the billing topic until it holds every wanted record (duplicates allowed).
fn wait_for_distinct(broker: &Broker, prefix: &str, want: &BTreeSet<String>, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let got = billing_records(broker, prefix, want.len() * 3, Duration::from_secs(15));
        let distinct = as_set(&got);
        if distinct.len() >= want.len() || Instant::now() > deadline {
            return got;
        }
    }
}

#[test]
fn run_equals_replay_end_to_end() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "e2e";
    let lines = common::traffic(21, 4000, 300);
    let want = as_set(&replay_reference(&lines, 20));
    assert!(want.len() > 300);
    let cfg = dir.path().join("wabill.toml");
    std::fs::write(&cfg, run_config(&broker, prefix, &dir.path().join("state"), 20)).unwrap();
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p = common::Wabill::run(&cfg, &dir.path().join("wabill.log"));
    // Topics exist once the processor started; produce the whole month.
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    produce_webhooks(&broker, prefix, &lines);
    let got = wait_for_distinct(&broker, prefix, &want, Duration::from_secs(240));
    let log = std::fs::read_to_string(dir.path().join("wabill.log")).unwrap_or_default();
    let got_set = as_set(&got);
    assert_same(&got_set, &want, common::tail(&log));
    // Graceful stop: finishes the batch, leaves the groups, exit 0.
    assert!(p.terminate().success(), "{}", common::tail(&log));
}

#[test]
fn kill9_at_random_points_loses_nothing_and_never_takes_free_tier_twice() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "crash";
    let lines = common::traffic(33, 4000, 300);
    let reference = replay_reference(&lines, 20);
    let want = as_set(&reference);
    let cfg = dir.path().join("wabill.toml");
    std::fs::write(&cfg, run_config(&broker, prefix, &dir.path().join("state"), 20)).unwrap();
    let log = dir.path().join("wabill.log");
    let mut rng = Rng::new(0xC0FFEE);
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p = common::Wabill::run(&cfg, &log);
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    // Produce in slices while killing the processor at random moments.
    let slices = 12;
    let per = lines.len().div_ceil(slices);
    let mut kills = 0;
    for chunk in lines.chunks(per) {
        produce_webhooks(&broker, prefix, chunk);
        std::thread::sleep(Duration::from_millis(500 + rng.below(4000)));
        p.kill9();
        kills += 1;
        p = common::Wabill::run(&cfg, &log);
    }
    assert!(kills >= 10);
    let got = wait_for_distinct(&broker, prefix, &want, Duration::from_secs(300));
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    // Every record is byte-identical to the replay's, duplicates included.
    let got_set = as_set(&got);
    assert_same(&got_set, &want, common::tail(&log_text));
    // No conversation took free tier twice: per WABA-month, distinct free conversations
    // equal the replay's, whatever the duplicates.
    let free = |recs: &BTreeSet<String>| -> BTreeMap<(String, String), usize> {
        let mut m = BTreeMap::new();
        for r in recs {
            let v: Value = serde_json::from_str(r).unwrap();
            if v["free_tier"] == Value::Bool(true) {
                *m.entry((v["waba_id"].to_string(), v["month"].to_string())).or_default() += 1;
            }
        }
        m
    };
    assert_eq!(free(&got_set), free(&want));
    assert!(p.terminate().success());
}

#[test]
fn poison_records_go_to_the_dead_letter_topic_and_the_rest_is_billed() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "poison";
    let lines = common::traffic(5, 800, 60);
    let want = as_set(&replay_reference(&lines, 1000));
    let cfg = dir.path().join("wabill.toml");
    std::fs::write(&cfg, run_config(&broker, prefix, &dir.path().join("state"), 1000)).unwrap();
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p = common::Wabill::run(&cfg, &dir.path().join("wabill.log"));
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    let mut poisoned: Vec<String> = lines.clone();
    poisoned.insert(3, "this is not json".into());
    poisoned.insert(10, r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"2"},"statuses":[{"id":"wamid.x","status":"delivered","timestamp":"1646092800","recipient_id":"12ab"}]}}]}]}"#.into());
    produce_webhooks(&broker, prefix, &poisoned);
    // Wrong Avro straight onto the events topic.
    broker.produce_records(
        &format!("{prefix}-events"),
        &[Record::new(b"16505551234", b"\xC3\x01garbage")],
    );
    let got = wait_for_distinct(&broker, prefix, &want, Duration::from_secs(240));
    assert_same(&as_set(&got), &want, "");
    let dead = broker.consume_all(
        &format!("{prefix}-dead-letter"),
        "dl-reader",
        3,
        Duration::from_secs(60),
    );
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| decode_dead_letter(d.value.as_deref().unwrap_or_default()).expect("dead letter decodes"))
        .map(|d| format!("{}: {} ({} bytes)", d.stage, d.reason, d.original.len()))
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("ingest:") && r.contains("not valid JSON")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("ingest:") && r.contains("12ab")),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|r| r.starts_with("windows:") && r.contains("MessageEvent")),
        "{reasons:?}"
    );
    assert!(p.terminate().success());
}

#[test]
fn second_instance_joins_and_leaves_mid_stream() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "rebalance";
    let lines = common::traffic(44, 4000, 300);
    let want = as_set(&replay_reference(&lines, 20));
    let cfg1 = dir.path().join("one.toml");
    let cfg2 = dir.path().join("two.toml");
    std::fs::write(&cfg1, run_config(&broker, prefix, &dir.path().join("state-1"), 20)).unwrap();
    std::fs::write(&cfg2, run_config(&broker, prefix, &dir.path().join("state-2"), 20)).unwrap();
    let (log1, log2) = (dir.path().join("one.log"), dir.path().join("two.log"));
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p1 = common::Wabill::run(&cfg1, &log1);
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    let third = lines.len() / 3;
    produce_webhooks(&broker, prefix, &lines[..third]);
    std::thread::sleep(Duration::from_secs(8));
    // A second instance joins: partitions move to it and are restored from changelogs.
    let mut p2 = common::Wabill::run(&cfg2, &log2);
    produce_webhooks(&broker, prefix, &lines[third..2 * third]);
    std::thread::sleep(Duration::from_secs(15));
    // It leaves gracefully: its partitions come back to the first instance.
    assert!(p2.terminate().success());
    produce_webhooks(&broker, prefix, &lines[2 * third..]);
    let got = wait_for_distinct(&broker, prefix, &want, Duration::from_secs(240));
    let l1 = std::fs::read_to_string(&log1).unwrap_or_default();
    let l2 = std::fs::read_to_string(&log2).unwrap_or_default();
    assert_eq!(
        as_set(&got),
        want,
        "instance 1:\n{}\ninstance 2:\n{}",
        common::tail(&l1),
        common::tail(&l2)
    );
    // Restores were observed: the joining instance rebuilt stores from the changelogs.
    let restored_with_records = |log: &str| {
        log.lines()
            .filter(|l| l.contains("store restored") && !l.contains("records=0"))
            .count()
    };
    assert!(
        restored_with_records(&l2) > 0,
        "instance 2 restored nothing:\n{}",
        common::tail(&l2)
    );
    assert!(p1.terminate().success());
}

#[test]
fn broker_restart_mid_stream_loses_nothing() {
    let mut broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "brokerrestart";
    let lines = common::traffic(55, 3000, 250);
    let want = as_set(&replay_reference(&lines, 20));
    let cfg = dir.path().join("wabill.toml");
    std::fs::write(&cfg, run_config(&broker, prefix, &dir.path().join("state"), 20)).unwrap();
    let log = dir.path().join("wabill.log");
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p = common::Wabill::run(&cfg, &log);
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    let half = lines.len() / 2;
    produce_webhooks(&broker, prefix, &lines[..half]);
    std::thread::sleep(Duration::from_secs(4));
    broker.kill9();
    std::thread::sleep(Duration::from_secs(2));
    broker.restart();
    produce_webhooks(&broker, prefix, &lines[half..]);
    let got = wait_for_distinct(&broker, prefix, &want, Duration::from_secs(240));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_same(&as_set(&got), &want, common::tail(&text));
    assert!(
        p.terminate().success(),
        "the processor survived the broker restart:\n{}",
        common::tail(&text)
    );
}

/// Generated traffic across both conversation-era switches (2023-06-01 and 2024-11-01)
/// with send-log records and Meta's category pricing objects (docs/billing-rules.md §6).
fn multi_era_traffic() -> Vec<String> {
    let mut lines = Vec::new();
    for (i, start) in [1_685_318_400i64, 1_730_160_000].iter().enumerate() {
        let cfg = sim::SimConfig {
            seed: 90 + i as u64,
            events: 2000,
            users: 150,
            days: 6,
            start: *start,
            send_log: true,
            ..sim::SimConfig::default()
        };
        sim::generate(&cfg, |l| lines.push(l.to_string()));
    }
    lines
}

#[test]
fn multi_era_run_equals_replay_across_kill9_and_a_restore() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "eras";
    let lines = multi_era_traffic();
    // The reference: wabill replay. Unknown-kind deliveries are dead letters there too.
    let reference = common::replay_lines(&lines, &billing_config(20));
    let want: BTreeSet<String> = reference.records.iter().map(Value::to_string).collect();
    let eras: BTreeSet<&str> = reference.records.iter().filter_map(|r| r["era"].as_str()).collect();
    assert_eq!(
        eras.into_iter().collect::<Vec<_>>(),
        ["cbp-2022", "cbp-2023", "cbp-2024-11"]
    );
    let want_dead: BTreeSet<String> = reference
        .dead
        .iter()
        .map(|d| d["reason"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!want_dead.is_empty() && want_dead.iter().all(|r| r.starts_with("unknown message category")));
    let state = dir.path().join("state");
    let cfg = dir.path().join("wabill.toml");
    std::fs::write(&cfg, run_config(&broker, prefix, &state, 20)).unwrap();
    let log = dir.path().join("wabill.log");
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p = common::Wabill::run(&cfg, &log);
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    let mut rng = Rng::new(0xE7A5);
    let chunks: Vec<&[String]> = lines.chunks(lines.len().div_ceil(6)).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        produce_webhooks(&broker, prefix, chunk);
        std::thread::sleep(Duration::from_millis(500 + rng.below(3000)));
        if i == 3 {
            // The restore below needs a store to delete: on a loaded machine the first
            // runs may have been killed before they opened one.
            let deadline = std::time::Instant::now() + Duration::from_secs(120);
            while !state.exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        p.kill9();
        if i == 3 {
            // A restore: the local stores are gone; they come back from the changelogs.
            std::fs::remove_dir_all(&state).unwrap();
        }
        p = common::Wabill::run(&cfg, &log);
    }
    let got = wait_for_distinct(&broker, prefix, &want, Duration::from_secs(300));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_same(&as_set(&got), &want, common::tail(&text));
    let dead = broker.consume_all(
        &format!("{prefix}-dead-letter"),
        "eras-dl-reader",
        want_dead.len(),
        Duration::from_secs(60),
    );
    let got_dead: BTreeSet<String> = dead
        .iter()
        .map(|d| decode_dead_letter(d.value.as_deref().unwrap_or_default()).expect("dead letter decodes"))
        .map(|d| d.reason)
        .collect();
    assert_eq!(got_dead, want_dead, "{}", common::tail(&text));
    assert!(p.terminate().success());
}

fn wait_for_topic(broker: &Broker, topic: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while broker.partitions(topic).is_empty() {
        assert!(Instant::now() < deadline, "topic {topic} never appeared");
        std::thread::sleep(Duration::from_millis(200));
    }
}
