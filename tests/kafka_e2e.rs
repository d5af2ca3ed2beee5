//! `wabill run` against a real broker (Tansu, SQLite storage): the billing topic must hold
//! exactly the records `wabill replay` writes for the same webhooks — also when the
//! processor is killed with SIGKILL again and again — and poison records must reach the
//! dead-letter topic while everything else is billed. In the per-message eras too: both
//! record kinds, volume bands numbered per portfolio whichever windows partition applied a
//! delivery, across kills, a restore and an instance joining and leaving.

mod common;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use support::broker::{Broker, Record};
use wabill::codec::avro::{decode_billing, decode_dead_letter, decode_event, no_registry};
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

/// Records on the billing topic (both kinds), decoded and rendered as the replay's JSON
/// lines.
fn billing_records(broker: &Broker, prefix: &str, expected: usize, timeout: Duration) -> Vec<String> {
    let topic = format!("{prefix}-billing");
    static READERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = READERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let got = broker.consume_all(&topic, &format!("{prefix}-test-reader-{n}"), expected, timeout);
    got.iter()
        .map(|c| {
            let b =
                decode_billing(c.value.as_deref().unwrap_or_default(), &no_registry).expect("billing record decodes");
            let mut line = Vec::new();
            wabill::codec::json::write_billed(&mut line, &b).unwrap();
            String::from_utf8(line).unwrap().trim_end().to_string()
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
            wait_for_store(&state);
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

// ---------------------------------------------------------------------------------------
// The per-message eras (docs/billing-rules.md §2, §6, §8.2) on Kafka.

/// 2025-06-28T00:00Z and 2026-09-28T00:00Z: a week of traffic around each per-message
/// switch (2025-07-01, 2026-10-01), in every WABA's time zone.
const PMP_WEEKS: [i64; 2] = [1_751_068_800, 1_790_553_600];

/// The business portfolio of three of the four generated WABAs, in three time zones: its
/// volume-tier counters take charges from all three, and from users in every windows
/// partition.
const PORTFOLIO: &str = "acme";

/// Markets of the generated users that get volume bands; the others are priced at the
/// card's rate (`tier` null), so both kinds of regular charge are on the topic.
const BANDED_MARKETS: [&str; 9] = [
    "North America",
    "Brazil",
    "India",
    "United Kingdom",
    "Germany",
    "Mexico",
    "Nigeria",
    "Rest of Africa",
    "Argentina",
];

/// The two weeks of traffic, in order.
fn pmp_weeks() -> [Vec<String>; 2] {
    let mut weeks: [Vec<String>; 2] = Default::default();
    for (i, (start, lines)) in PMP_WEEKS.iter().zip(&mut weeks).enumerate() {
        let cfg = sim::SimConfig {
            seed: 71 + i as u64,
            events: 2000,
            users: 150,
            days: 7,
            start: *start,
            first_waba_share: 0.5,
            send_log: true,
            ..sim::SimConfig::default()
        };
        sim::generate(&cfg, |l| lines.push(l.to_string()));
    }
    weeks
}

fn pmp_traffic() -> Vec<String> {
    pmp_weeks().concat()
}

/// Small bands, so that a portfolio's charges cross them within the generated week (the
/// 3rd and 4th, the 8th and 9th message of a month are priced differently) and any
/// numbering that differs from replay's (D, message id) order shows in `tier` and `price`.
fn write_pmp_tiers(dir: &Path) -> std::path::PathBuf {
    let mut csv = String::from("effective_from,market,currency,category,from,to,rate\n");
    for market in BANDED_MARKETS {
        for (category, rates) in [
            ("utility", ["0.0500", "0.0400", "0.0300"]),
            ("authentication", ["0.0450", "0.0350", "0.0250"]),
        ] {
            for ((from, to), rate) in [("0", "3"), ("4", "8"), ("9", "")].into_iter().zip(rates) {
                csv.push_str(&format!("2025-07-01,{market},USD,{category},{from},{to},{rate}\n"));
            }
        }
    }
    let path = dir.join("tiers.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

/// Four WABAs: three in the portfolio (São Paulo, Kolkata, UTC), one alone (London); a
/// service free tier of 5 per business number and month, so it runs out in `pmp-2026-10`.
/// `tiers` goes into the file (`wabill run`); replay gets `--tiers` instead.
fn pmp_billing_config(tiers: Option<&Path>) -> String {
    let mut s = String::from("allowed_lateness_secs = 120\n");
    if let Some(t) = tiers {
        s.push_str(&format!("tiers = \"{}\"\n", t.display()));
    }
    for (i, zone, portfolio) in [
        (0, "America/Sao_Paulo", Some(PORTFOLIO)),
        (1, "Asia/Kolkata", Some(PORTFOLIO)),
        (2, "Europe/London", None),
        (3, "UTC", Some(PORTFOLIO)),
    ] {
        s.push_str(&format!(
            "[[waba]]\nid = \"{}\"\ntime_zone = \"{zone}\"\nservice_free_tier = 5\n",
            sim::waba_id(i)
        ));
        if let Some(p) = portfolio {
            s.push_str(&format!("portfolio = \"{p}\"\n"));
        }
        if i == 0 {
            s.push_str("markup_percent = \"12.5\"\n");
        }
    }
    s
}

/// `session.timeout.ms` of the message-era runs with one instance per pipeline: one that is
/// killed is restarted after it (`kill9_and_wait_out_its_session`), so short.
const SESSION: Duration = Duration::from_secs(4);
/// `session.timeout.ms` where two instances share the groups: Tansu may expel a member a
/// session timeout after a rebalance gave it partitions, starting the next one (its quirks,
/// tests/support/broker.rs); nothing is killed there, so it can be long.
const SHARED_SESSION: Duration = Duration::from_secs(30);

fn pmp_run_config(
    broker: &Broker,
    prefix: &str,
    state_dir: &Path,
    tiers: &Path,
    partitions: i32,
    session: Duration,
) -> String {
    format!(
        "{}\n[kafka]\nbrokers = \"{}\"\nprefix = \"{prefix}\"\npartitions = {partitions}\nbatch_max = 500\nidle_flush_ms = 3000\n\
         [kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"10\"\n\"session.timeout.ms\" = \"{}\"\n\"heartbeat.interval.ms\" = \"500\"\n\
         [state]\ndir = \"{}\"\n[http]\naddr = \"127.0.0.1:0\"\n",
        pmp_billing_config(Some(tiers)),
        broker.bootstrap(),
        session.as_millis(),
        state_dir.display()
    )
}

/// SIGKILL; then the killed instance's consumer-group sessions run out before anything
/// joins again (Tansu's quirks, tests/support/broker.rs: a member expiring while the group
/// forms takes its partitions out of the assignment for good).
fn kill9_and_wait_out_its_session(p: &mut common::Wabill) {
    p.kill9();
    std::thread::sleep(SESSION + Duration::from_millis(500));
}

/// What `wabill replay --tiers` (the CLI, as an operator runs it) makes of the traffic: the
/// reference `wabill run` must equal.
struct PmpReference {
    /// The `--output` lines, as compact JSON.
    records: BTreeSet<String>,
    values: Vec<Value>,
    /// The `--output` file, byte for byte.
    output: Vec<u8>,
    dead_reasons: BTreeSet<String>,
    /// `--summary`: the month statements.
    summary: String,
}

fn pmp_reference(dir: &Path, lines: &[String], tiers: &Path) -> PmpReference {
    let dir = dir.join("replay");
    std::fs::create_dir_all(&dir).unwrap();
    let (input, config) = (dir.join("webhooks.jsonl"), dir.join("wabill.toml"));
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    std::fs::write(&config, pmp_billing_config(None)).unwrap();
    let (output, dead) = (dir.join("billing.jsonl"), dir.join("dead.jsonl"));
    let path = |p: &Path| p.to_str().expect("UTF-8 path").to_string();
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_wabill"))
        .args(["replay", "--quiet", "--summary", "--input", &path(&input)])
        .args(["--config", &path(&config), "--tiers", &path(tiers)])
        .args(["--output", &path(&output), "--dead-letter", &path(&dead)])
        .output()
        .expect("run wabill replay");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let output = std::fs::read(&output).unwrap();
    let values: Vec<Value> = String::from_utf8(output.clone())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dead_reasons = std::fs::read_to_string(&dead)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["reason"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    PmpReference {
        records: values.iter().map(Value::to_string).collect(),
        values,
        output,
        dead_reasons,
        summary: String::from_utf8(run.stdout).unwrap(),
    }
}

/// Per (market, tier counter, month) of the shared portfolio's banded charges: the bands
/// they reached, and what a function says of each charge.
type Bands<T> = BTreeMap<(String, String, String), (BTreeSet<String>, BTreeSet<T>)>;

impl PmpReference {
    fn messages(&self) -> impl Iterator<Item = &Value> {
        self.values.iter().filter(|r| r["kind"] == "message")
    }

    fn portfolio_bands<T: Ord>(&self, of: impl Fn(&Value) -> T) -> Bands<T> {
        let mut bands = Bands::new();
        for r in self.messages().filter(|r| r["portfolio"] == PORTFOLIO) {
            if let Some(tier) = r["tier"].as_str() {
                let counter = if r["category"] == "utility" {
                    "utility"
                } else {
                    "authentication"
                };
                let e = bands
                    .entry((r["market"].to_string(), counter.into(), r["month"].to_string()))
                    .or_default();
                e.0.insert(tier.to_string());
                e.1.insert(of(r));
            }
        }
        bands
    }

    /// The traffic exercises what the Kafka path must get right, or equality would prove
    /// little: both record kinds and the three eras around 2025-07-01 (a conversation era
    /// before, `pmp-2025-07`, `pmp-2026-10`); service messages free, then charged once the
    /// tier of 5 ran out; and, in the shared portfolio, months whose charges reach all
    /// three bands and come from several of its WABAs.
    fn assert_exercises_the_rules(&self) {
        let eras: BTreeSet<(&str, &str)> = self
            .values
            .iter()
            .map(|r| (r["kind"].as_str().unwrap(), r["era"].as_str().unwrap()))
            .collect();
        assert_eq!(
            eras.into_iter().collect::<Vec<_>>(),
            [
                ("conversation", "cbp-2024-11"),
                ("message", "pmp-2025-07"),
                ("message", "pmp-2026-10")
            ]
        );
        let service = |t: &str| {
            self.messages()
                .filter(|r| r["era"] == "pmp-2026-10" && r["category"] == "service" && r["pricing_type"] == t)
                .count()
        };
        assert!(service("free_customer_service") > 0 && service("regular") > 0);
        let shared = self.portfolio_bands(|r| r["waba_id"].to_string());
        let crossing = shared
            .values()
            .filter(|(bands, wabas)| bands.len() == 3 && wabas.len() > 1)
            .count();
        assert!(crossing >= 3, "{shared:#?}");
        assert!(!self.dead_reasons.is_empty());
    }
}

/// Event times of an input line: a send-log record's, or every message's and status's
/// of a Meta payload.
fn line_times(line: &str) -> Vec<i64> {
    let v: Value = serde_json::from_str(line).expect("generated lines are JSON");
    let mut ts = vec![v["timestamp"].clone()];
    for change in v["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| e["changes"].as_array().into_iter().flatten())
    {
        for kind in ["messages", "statuses"] {
            ts.extend(
                change["value"][kind]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| m["timestamp"].clone()),
            );
        }
    }
    ts.iter().filter_map(|t| t.as_str()?.parse().ok()).collect()
}

/// `lines` in `n` slices of about the same size, each cut where no later line holds an
/// event earlier than any line before it. Between slices the test pauses (and kills): a
/// partition idle for `idle_flush_ms` applies what it holds (README "Event time across
/// partitions"), so a pause inside the generator's disorder may legitimately apply two
/// events in another order than replay; at a clean cut it cannot.
fn clean_chunks(lines: &[String], n: usize) -> Vec<&[String]> {
    let times: Vec<Vec<i64>> = lines.iter().map(|l| line_times(l)).collect();
    let mut suffix_min = vec![i64::MAX; lines.len() + 1];
    for i in (0..lines.len()).rev() {
        suffix_min[i] = times[i].iter().copied().fold(suffix_min[i + 1], i64::min);
    }
    let per = lines.len().div_ceil(n);
    let mut cuts = vec![0];
    let mut prefix_max = i64::MIN;
    for i in 1..lines.len() {
        prefix_max = times[i - 1].iter().copied().fold(prefix_max, i64::max);
        if cuts.len() < n && i >= cuts[cuts.len() - 1] + per && prefix_max < suffix_min[i] {
            cuts.push(i);
        }
    }
    cuts.push(lines.len());
    assert_eq!(cuts.len(), n + 1, "no clean cuts: {cuts:?}");
    cuts.windows(2).map(|w| &lines[w[0]..w[1]]).collect()
}

fn log_count(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log).unwrap_or_default().matches(needle).count()
}

/// Waits until an instance logged that it owns a partition of every stateful stage more
/// than `before` times (the log is appended to across restarts): it has joined.
fn wait_for_tasks(log: &Path, before: (usize, usize)) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while log_count(log, "windows task ready") <= before.0 || log_count(log, "ledger task ready") <= before.1 {
        assert!(
            Instant::now() < deadline,
            "no task became ready:\n{}",
            common::tail(&std::fs::read_to_string(log).unwrap_or_default())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits until `stage` has committed every record of its input `topic`: all of them are
/// applied, their outputs acknowledged and (stateful stages) their state persisted.
fn wait_for_drained(broker: &Broker, prefix: &str, stage: &str, topic: &str) {
    let (group, topic) = (format!("{prefix}-{stage}"), format!("{prefix}-{topic}"));
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ends: BTreeMap<i32, i64> = broker
            .watermarks(&topic)
            .into_iter()
            .map(|(p, _, high)| (p, high))
            .collect();
        let committed = broker.committed_offsets(&group, &topic);
        if committed.iter().all(|(p, c)| c.unwrap_or(0) >= ends[p]) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{group} did not commit the end of {topic}: {committed:?} of {ends:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the consumer groups of all three stages are formed, at two looks a second
/// apart (a cooperative rebalance forms a group between its rounds): an instance may then
/// leave gracefully without stalling them (Tansu's quirks, tests/support/broker.rs).
fn wait_for_formed_groups(broker: &Broker, prefix: &str) {
    let formed = || {
        ["ingest", "windows", "ledger"]
            .iter()
            .all(|s| broker.group_formed(&format!("{prefix}-{s}")))
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if formed() {
            std::thread::sleep(Duration::from_secs(1));
            if formed() {
                return;
            }
        }
        assert!(Instant::now() < deadline, "the consumer groups did not form");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The reasons of every record on the dead-letter topic (a replayed batch repeats some).
fn dead_letter_reasons(broker: &Broker, prefix: &str, at_least: usize) -> BTreeSet<String> {
    let topic = format!("{prefix}-dead-letter");
    let on_topic: i64 = broker.watermarks(&topic).iter().map(|(_, low, high)| high - low).sum();
    broker
        .consume_all(
            &topic,
            &format!("{prefix}-dl-reader"),
            at_least.max(on_topic as usize),
            Duration::from_secs(60),
        )
        .iter()
        .map(|d| decode_dead_letter(d.value.as_deref().unwrap_or_default()).expect("dead letter decodes"))
        .map(|d| d.reason)
        .collect()
}

/// `wabill statements` on the drained billing topic: (stdout, `--output` bytes).
fn kafka_statements(cfg: &Path, dir: &Path) -> (String, Vec<u8>) {
    let records = dir.join("statements.jsonl");
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_wabill"))
        .args(["statements", "--config", cfg.to_str().unwrap()])
        .args(["--drained-after-secs", "2", "--timeout-secs", "120"])
        .args(["--output", records.to_str().unwrap()])
        .output()
        .expect("run wabill statements");
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    (String::from_utf8(run.stdout).unwrap(), std::fs::read(&records).unwrap())
}

/// Three slices a week. Event time jumps 15 months between the weeks, beyond every dedupe
/// memory (days of event time: `dedupe_horizon_secs`, the ledger's retention): a batch
/// replayed after a kill or a rebalance that spanned the jump would bring week-1 events
/// back as new, late ones — an artifact of this traffic, not of Meta's. So the tests feed
/// week 2 only once ingest and windows have committed all of week 1 (`wait_for_week_1`).
fn pmp_slices(weeks: &[Vec<String>; 2]) -> Vec<&[String]> {
    weeks.iter().flat_map(|w| clean_chunks(w, 3)).collect()
}

fn wait_for_week_1(broker: &Broker, prefix: &str) {
    wait_for_drained(broker, prefix, "ingest", "webhooks");
    wait_for_drained(broker, prefix, "windows", "events");
}

/// The billing topic (both record kinds) and the dead-letter topic equal replay's output,
/// and `wabill statements` reads replay's records and month statements back.
fn assert_equals_reference(
    broker: &Broker,
    prefix: &str,
    reference: &PmpReference,
    cfg: &Path,
    dir: &Path,
    logs: &[&Path],
) {
    let got = wait_for_distinct(broker, prefix, &reference.records, Duration::from_secs(240));
    let context: String = logs
        .iter()
        .map(|l| {
            format!(
                "{}:\n{}\n",
                l.display(),
                common::tail(&std::fs::read_to_string(l).unwrap_or_default())
            )
        })
        .collect();
    assert_same(&as_set(&got), &reference.records, &context);
    assert_eq!(
        dead_letter_reasons(broker, prefix, reference.dead_reasons.len()),
        reference.dead_reasons,
        "{context}"
    );
    let (statements, records) = kafka_statements(cfg, dir);
    assert_eq!(
        String::from_utf8_lossy(&records),
        String::from_utf8_lossy(&reference.output)
    );
    assert_eq!(statements, reference.summary);
}

/// A restore test deletes the store after a kill: on a loaded machine the runs before it
/// may have been killed before they opened one, so wait (bounded) until it exists.
fn wait_for_store(state: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !state.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn restored_with_records(log: &str) -> usize {
    log.lines()
        .filter(|l| l.contains("store restored") && !l.contains("records=0"))
        .count()
}

#[test]
fn message_eras_run_equals_replay_across_kill9_and_a_restore() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "pmp";
    let weeks = pmp_weeks();
    let tiers = write_pmp_tiers(dir.path());
    let reference = pmp_reference(dir.path(), &weeks.concat(), &tiers);
    reference.assert_exercises_the_rules();
    let state = dir.path().join("state");
    let cfg = dir.path().join("wabill.toml");
    std::fs::write(
        &cfg,
        pmp_run_config(&broker, prefix, &state, &tiers, PARTITIONS, SESSION),
    )
    .unwrap();
    let log = dir.path().join("wabill.log");
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p = common::Wabill::run(&cfg, &log);
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    let mut rng = Rng::new(0x9A7E);
    let slices = pmp_slices(&weeks);
    let mut restore_from = None;
    for (i, slice) in slices.iter().enumerate() {
        if i == 3 {
            wait_for_week_1(&broker, prefix);
        }
        produce_webhooks(&broker, prefix, slice);
        if i + 1 == slices.len() {
            break;
        }
        // SIGKILL while it works on the slice.
        std::thread::sleep(Duration::from_millis(500 + rng.below(3000)));
        if i == 1 {
            wait_for_store(&state);
        }
        kill9_and_wait_out_its_session(&mut p);
        if i == 1 {
            // A restore: the local stores are gone; they come back from the changelogs.
            std::fs::remove_dir_all(&state).unwrap();
            restore_from = Some(std::fs::read_to_string(&log).unwrap_or_default().len());
        }
        p = common::Wabill::run(&cfg, &log);
    }
    assert_equals_reference(&broker, prefix, &reference, &cfg, dir.path(), &[&log]);
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        restored_with_records(&text[restore_from.unwrap_or_default()..]) > 0,
        "nothing was restored after the state directory went:\n{}",
        common::tail(&text)
    );
    assert!(p.terminate().success(), "{}", common::tail(&text));
}

#[test]
fn message_eras_run_equals_replay_as_a_second_instance_joins_and_leaves() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "pmp-rebalance";
    let weeks = pmp_weeks();
    let tiers = write_pmp_tiers(dir.path());
    let reference = pmp_reference(dir.path(), &weeks.concat(), &tiers);
    let (cfg1, cfg2) = (dir.path().join("one.toml"), dir.path().join("two.toml"));
    for (cfg, state) in [(&cfg1, "state-1"), (&cfg2, "state-2")] {
        let state = dir.path().join(state);
        std::fs::write(
            cfg,
            pmp_run_config(&broker, prefix, &state, &tiers, PARTITIONS, SHARED_SESSION),
        )
        .unwrap();
    }
    let (log1, log2) = (dir.path().join("one.log"), dir.path().join("two.log"));
    broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
    let mut p1 = common::Wabill::run(&cfg1, &log1);
    wait_for_topic(&broker, &format!("{prefix}-webhooks"));
    let slices = pmp_slices(&weeks);
    produce_webhooks(&broker, prefix, slices[0]);
    // A second instance joins: partitions move to it and are restored from changelogs ...
    wait_for_tasks(&log1, (0, 0));
    let mut p2 = common::Wabill::run(&cfg2, &log2);
    produce_webhooks(&broker, prefix, slices[1]);
    wait_for_tasks(&log2, (0, 0));
    produce_webhooks(&broker, prefix, slices[2]);
    wait_for_week_1(&broker, prefix);
    produce_webhooks(&broker, prefix, slices[3]);
    // ... and leaves gracefully, once every group is formed (Tansu's quirks,
    // tests/support/broker.rs): its partitions come back to the first.
    wait_for_formed_groups(&broker, prefix);
    assert!(p2.terminate().success());
    for slice in &slices[4..] {
        produce_webhooks(&broker, prefix, slice);
    }
    assert_equals_reference(&broker, prefix, &reference, &cfg1, dir.path(), &[&log1, &log2]);
    let l2 = std::fs::read_to_string(&log2).unwrap_or_default();
    assert!(
        restored_with_records(&l2) > 0,
        "the joining instance restored nothing:\n{}",
        common::tail(&l2)
    );
    assert!(p1.terminate().success());
}

/// Every message charge as (tier, price, billed price), by charge id.
fn charges(records: &BTreeSet<String>) -> BTreeMap<String, (Value, Value, Value)> {
    records
        .iter()
        .map(|r| serde_json::from_str::<Value>(r).unwrap())
        .filter(|r| r["kind"] == "message")
        .map(|r| {
            let id = r["charge_id"].as_str().unwrap().to_string();
            (id, (r["tier"].clone(), r["price"].clone(), r["billed_price"].clone()))
        })
        .collect()
}

/// Volume bands count per portfolio in (D, message id) order, whichever windows partition
/// applied each delivery: on four partitions the ledger takes a portfolio's units from all
/// of them and releases them only below their common watermark. The same traffic through
/// a pipeline whose topics have one partition and through one with four (concurrently, on
/// one broker) must give every message charge the same band and price — replay's.
#[test]
fn message_charges_are_the_same_on_one_windows_partition_and_on_four() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let lines = pmp_traffic();
    let tiers = write_pmp_tiers(dir.path());
    let reference = pmp_reference(dir.path(), &lines, &tiers);
    let want = &reference.records;
    let mut runs = Vec::new();
    for (prefix, partitions) in [("pmp-one", 1), ("pmp-four", 4)] {
        let cfg = dir.path().join(format!("{prefix}.toml"));
        let state = dir.path().join(format!("{prefix}-state"));
        std::fs::write(
            &cfg,
            pmp_run_config(&broker, prefix, &state, &tiers, partitions, SESSION),
        )
        .unwrap();
        let log = dir.path().join(format!("{prefix}.log"));
        broker.create_topic(&format!("{prefix}-webhooks"), 1, false);
        runs.push((prefix, common::Wabill::run(&cfg, &log), log));
    }
    for (prefix, ..) in &runs {
        wait_for_topic(&broker, &format!("{prefix}-webhooks"));
        produce_webhooks(&broker, prefix, &lines);
    }
    let mut by_run = Vec::new();
    for (prefix, p, log) in &mut runs {
        let got = as_set(&wait_for_distinct(&broker, prefix, want, Duration::from_secs(240)));
        let text = std::fs::read_to_string(&*log).unwrap_or_default();
        assert_same(&got, want, &format!("{prefix}:\n{}", common::tail(&text)));
        assert!(p.terminate().success(), "{}", common::tail(&text));
        by_run.push(charges(&got));
    }
    assert_eq!(by_run[0], by_run[1]);
    assert_eq!(by_run[0], charges(want));

    // On four partitions the portfolio's banded charges did come from several windows
    // partitions, in months where its bands were crossed (else this proves nothing).
    let events = format!("{}-events", runs[1].0);
    let total: i64 = broker.watermarks(&events).iter().map(|(_, low, high)| high - low).sum();
    let partition_of: BTreeMap<String, i32> = broker
        .consume_all(&events, "pmp-events-reader", total as usize, Duration::from_secs(60))
        .iter()
        .map(|c| {
            let ev = decode_event(c.value.as_deref().unwrap_or_default()).expect("event decodes");
            (ev.user, c.partition)
        })
        .collect();
    let spread = reference.portfolio_bands(|r| partition_of[r["user"].as_str().unwrap()]);
    assert!(
        spread
            .values()
            .filter(|(bands, parts)| bands.len() > 1 && parts.len() > 1)
            .count()
            >= 3,
        "{spread:#?}"
    );
}
