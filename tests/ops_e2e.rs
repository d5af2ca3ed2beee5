//! Operations, end to end with real parts: `wabill run` on a real broker (Tansu), scraped
//! by a real Prometheus (Debian's package). What Prometheus reads must equal what is on
//! the billing and dead-letter topics; every metric the dashboard and the alert rules use
//! must exist in the binary's /metrics (a conversation-era run and a message-era run
//! between them export every one); /readyz must be false while a store restores.

mod common;
#[path = "support/metric_names.rs"]
mod metric_names;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;
use serde_json::Value;

use support::broker::{free_port, Broker};
use wabill::codec::avro::{decode_billing, decode_dead_letter, no_registry};
use wabill::pipeline::records::Billed;
use wabill::sim;

fn config(broker: &Broker, prefix: &str, state: &Path, http_port: u16) -> String {
    format!(
        "[[waba]]\nid = \"{}\"\nmarkup_percent = \"10\"\nfree_tier = 40\n\
         [kafka]\nbrokers = \"{}\"\nprefix = \"{prefix}\"\npartitions = 3\nbatch_max = 2000\nidle_flush_ms = 2000\n\
         [kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"10\"\n\"statistics.interval.ms\" = \"1000\"\n\
         [state]\ndir = \"{}\"\n[http]\naddr = \"127.0.0.1:{http_port}\"\n",
        sim::waba_id(0),
        broker.bootstrap(),
        state.display()
    )
}

/// A broker, a configuration for it, and the webhooks already on the webhooks topic
/// (written by `wabill produce`, which this also tests).
struct Setup {
    broker: Broker,
    dir: tempfile::TempDir,
    cfg: PathBuf,
    log: PathBuf,
    http_port: u16,
    state: PathBuf,
}

impl Setup {
    fn produced(prefix: &str, lines: &[String]) -> Setup {
        let broker = Broker::start();
        let dir = tempfile::tempdir().unwrap();
        let http_port = free_port();
        let state = dir.path().join("state");
        let cfg = dir.path().join("wabill.toml");
        std::fs::write(&cfg, config(&broker, prefix, &state, http_port)).unwrap();
        let log = dir.path().join("wabill.log");
        let input = dir.path().join("webhooks.jsonl");
        std::fs::write(&input, lines.join("\n") + "\n").unwrap();
        let mut produce = common::Wabill::spawn(
            &[
                "produce",
                "--quiet",
                "--config",
                cfg.to_str().unwrap(),
                "--input",
                input.to_str().unwrap(),
            ],
            &log,
        );
        assert!(produce.0.wait().unwrap().success(), "wabill produce failed");
        Setup {
            broker,
            dir,
            cfg,
            log,
            http_port,
            state,
        }
    }
}

/// `wabill run` on webhooks already produced (`Setup::produced`), scraped by Prometheus.
struct Scraped {
    setup: Setup,
    run: common::Wabill,
    prom: Prometheus,
}

impl Scraped {
    fn start(prefix: &str, lines: &[String]) -> Scraped {
        let setup = Setup::produced(prefix, lines);
        let run = common::Wabill::run(&setup.cfg, &setup.log);
        let prom = Prometheus::start(setup.http_port);
        Scraped { setup, run, prom }
    }
}

/// A bare HTTP/1.1 GET (no client library in the way of what the server really sends).
fn http_get(port: u16, target: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let out = String::from_utf8_lossy(&out).to_string();
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let body = if head.to_ascii_lowercase().contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_string()
    };
    Some((code, body))
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

fn urlencode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

struct Prometheus {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(target_port: u16) -> Prometheus {
        let bin = which("prometheus").expect("Debian's prometheus package is not installed: run `make deps`");
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(
            &cfg,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: wabill\n    \
                 static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = dir.path().join("prometheus.log");
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin)
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, port, _dir: dir };
        let deadline = Instant::now() + Duration::from_secs(60);
        while http_get(port, "/-/ready").map(|r| r.0) != Some(200) {
            assert!(
                Instant::now() < deadline,
                "prometheus not ready; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// Instant query; the result vector as (labels, value).
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let (code, body) = http_get(self.port, &format!("/api/v1/query?query={}", urlencode(q))).expect("query");
        assert_eq!(code, 200, "query {q}: {body}");
        let v: Value = serde_json::from_str(&body).expect("prometheus answers JSON");
        v["data"]["result"]
            .as_array()
            .expect("vector result")
            .iter()
            .map(|r| {
                let labels = r["metric"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                let value = r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }

    fn scalar(&self, q: &str) -> Option<f64> {
        self.query(q).first().map(|r| r.1)
    }

    /// The non-zero series of a `sum by (...)` query, keyed by the values of `labels`
    /// joined with a space (as the dashboard's legends show them).
    fn by(&self, q: &str, labels: &[&str]) -> BTreeMap<String, f64> {
        self.query(q)
            .into_iter()
            .filter(|(_, v)| *v > 0.0)
            .map(|(l, v)| {
                let key: Vec<&str> = labels.iter().map(|k| l.get(*k).map_or("", String::as_str)).collect();
                (key.join(" "), v)
            })
            .collect()
    }

    /// Waits (a minute at most) until Prometheus has scraped `sum(metric) == want`.
    fn wait_for_sum(&self, metric: &str, want: f64) {
        let q = format!("sum({metric})");
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.scalar(&q) != Some(want) {
            assert!(
                Instant::now() < deadline,
                "prometheus saw {:?} for {q}, the billing topic holds {want}",
                self.scalar(&q)
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The dashboard's running USD total (a float) equals the topic's exact sum.
    fn assert_usd_billed(&self, billed: Decimal) {
        let seen = self
            .scalar("sum(wabill_billed_amount_total{currency=\"USD\"})")
            .expect("billed amount series");
        let want = billed.to_f64().unwrap_or(f64::NAN);
        assert!(
            (seen - want).abs() <= 1e-6 * want.max(1.0),
            "billed amount: prometheus {seen}, topic {billed}"
        );
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

#[test]
fn prometheus_reads_the_billing_topic_totals_and_every_referenced_metric_exists() {
    let prefix = "ops";

    // Webhooks with poison: a non-JSON line and an event whose number is not a number.
    let mut lines = common::traffic(11, 3000, 200);
    lines.insert(5, "this is not json".into());
    lines.insert(20, r#"{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"metadata":{"phone_number_id":"2"},"statuses":[{"id":"wamid.x","status":"delivered","timestamp":"1646092800","recipient_id":"12ab"}]}}]}]}"#.into());
    let Scraped {
        setup:
            Setup {
                broker,
                dir: _dir,
                log,
                http_port,
                ..
            },
        run,
        prom,
    } = Scraped::start(prefix, &lines);

    let records: Vec<_> = drain_billing(&broker, prefix, &log)
        .into_iter()
        .map(|b| match b {
            Billed::Conversation(c) => c,
            Billed::Message(m) => panic!("a message charge from 2022 traffic: {m:?}"),
        })
        .collect();
    let ids: BTreeSet<&str> = records.iter().map(|r| r.opened.conversation_id.as_str()).collect();
    assert_eq!(ids.len(), records.len(), "no crash in this test, so no duplicates");
    let dead = broker.consume_all(&format!("{prefix}-dead-letter"), "dl", 100_000, Duration::from_secs(5));
    assert_eq!(dead.len(), 2, "the two poison lines");
    for d in &dead {
        decode_dead_letter(d.value.as_deref().unwrap_or_default()).expect("dead letter decodes");
    }

    // Wait until Prometheus has scraped the final values.
    let want_total = records.len() as f64;
    prom.wait_for_sum("wabill_conversations_opened_total", want_total);
    assert_eq!(prom.scalar("up{job=\"wabill\"}"), Some(1.0));

    // By origin and market, as the dashboard shows them.
    let mut by_origin: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_market: BTreeMap<String, f64> = BTreeMap::new();
    for r in &records {
        *by_origin.entry(r.opened.origin.as_str().to_string()).or_default() += 1.0;
        *by_market.entry(r.market.clone()).or_default() += 1.0;
    }
    assert_eq!(
        prom.by("sum by (origin) (wabill_conversations_opened_total)", &["origin"]),
        by_origin
    );
    assert_eq!(
        prom.by("sum by (market) (wabill_conversations_opened_total)", &["market"]),
        by_market
    );

    let free = records.iter().filter(|r| r.free_tier).count() as f64;
    assert!(
        free > 0.0 && free < want_total,
        "the WABA crosses its free tier: {free} of {want_total}"
    );
    assert_eq!(prom.scalar("wabill_free_tier_conversations_total"), Some(free));
    let billed: Decimal = records.iter().map(|r| r.billed_price).sum();
    prom.assert_usd_billed(billed);
    assert_eq!(
        prom.scalar("sum(wabill_dead_letters_total)"),
        Some(dead.len() as f64),
        "dead letters"
    );
    assert_eq!(
        prom.scalar("wabill_input_records_total{stage=\"ingest\"}"),
        Some(lines.len() as f64),
        "every webhook line consumed"
    );
    assert_eq!(
        prom.scalar("wabill_records_produced_total{stage=\"ledger\"}"),
        Some(want_total)
    );
    assert_eq!(prom.scalar("wabill_ready"), Some(1.0));

    let mut exported = exported_names(http_port);
    drop(prom);
    drop(run);
    drop(broker);

    // The per-message eras: their metric, and every name the dashboard and the alert rules
    // use, exported by one era's run or the other's.
    exported.extend(message_era_charges_reach_prometheus());
    let referenced = metric_names::referenced_metric_names(Path::new(env!("CARGO_MANIFEST_DIR")));
    assert!(!referenced.is_empty(), "the dashboard and rules reference metrics");
    let missing: Vec<_> = referenced.difference(&exported).collect();
    assert!(
        missing.is_empty(),
        "used by deploy/ but not exported: {missing:?}\nexported: {exported:?}"
    );
}

/// A week of generated `pmp-2026-10` traffic (send-log records, Meta's pricing objects,
/// the bundled sample card and bands) through `wabill run`: what Prometheus reads of
/// `wabill_messages_charged_total` by category and pricing type, and by market, equals the
/// message charges on the billing topic. Returns the metric names /metrics exported.
fn message_era_charges_reach_prometheus() -> BTreeSet<String> {
    let prefix = "ops-pmp";
    let mut lines = Vec::new();
    let cfg = sim::SimConfig {
        seed: 23,
        events: 3000,
        users: 200,
        days: 7,
        start: 1_791_158_400, // 2026-10-05T00:00:00Z
        send_log: true,
        ..sim::SimConfig::default()
    };
    sim::generate(&cfg, |l| lines.push(l.to_string()));
    let Scraped {
        setup:
            Setup {
                broker,
                dir: _dir,
                log,
                http_port,
                ..
            },
        run: _run,
        prom,
    } = Scraped::start(prefix, &lines);

    let charges: Vec<_> = drain_billing(&broker, prefix, &log)
        .into_iter()
        .map(|b| match b {
            Billed::Message(m) => m,
            Billed::Conversation(c) => panic!("a conversation from October 2026 traffic: {c:?}"),
        })
        .collect();
    let charged = charges.iter().filter(|m| m.billable).count();
    assert!(
        charged > 0 && charged < charges.len(),
        "the week has charged and free messages: {charged} of {}",
        charges.len()
    );

    let mut by_kind: BTreeMap<String, f64> = BTreeMap::new();
    let mut by_market: BTreeMap<String, f64> = BTreeMap::new();
    for m in &charges {
        let kind = format!("{} {}", m.delivered.category.as_str(), m.pricing_type.as_str());
        *by_kind.entry(kind).or_default() += 1.0;
        if m.billable {
            *by_market.entry(m.market.clone()).or_default() += 1.0;
        }
    }
    let want_total = charges.len() as f64;
    prom.wait_for_sum("wabill_messages_charged_total", want_total);
    // As the dashboard's two panels group them.
    assert_eq!(
        prom.by(
            "sum by (category, pricing_type) (wabill_messages_charged_total)",
            &["category", "pricing_type"]
        ),
        by_kind
    );
    assert_eq!(
        prom.by(
            "sum by (market) (wabill_messages_charged_total{pricing_type=\"regular\"})",
            &["market"]
        ),
        by_market
    );
    let billed: Decimal = charges.iter().map(|m| m.billed_price).sum();
    prom.assert_usd_billed(billed);
    exported_names(http_port)
}

/// Reads the billing topic until a round brings nothing new (one reader group, so each
/// round continues where the previous one committed), decoding both record kinds.
fn drain_billing(broker: &Broker, prefix: &str, log: &Path) -> Vec<Billed> {
    let mut billing = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let got = broker.consume_all(&format!("{prefix}-billing"), "reader", 100_000, Duration::from_secs(15));
        let grew = !got.is_empty();
        billing.extend(got);
        if !grew && !billing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "billing did not drain; wabill log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
    billing
        .iter()
        .map(|c| decode_billing(c.value.as_deref().unwrap_or_default(), &no_registry).expect("billing record decodes"))
        .collect()
}

/// The metric family names /metrics declares (`# TYPE` lines).
fn exported_names(http_port: u16) -> BTreeSet<String> {
    let (code, text) = http_get(http_port, "/metrics").expect("/metrics");
    assert_eq!(code, 200);
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn readyz_is_false_while_a_store_restores_and_true_after() {
    let Setup {
        broker: _broker,
        dir: _dir,
        cfg,
        log,
        http_port,
        state,
    } = Setup::produced("ready", &common::traffic(3, 20_000, 2000));

    // First run builds state (and its changelogs); wait until the windows stage is done.
    let mut first = common::Wabill::run(&cfg, &log);
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let lag: Option<f64> = http_get(http_port, "/metrics").and_then(|(_, t)| {
            let input = metric_value(&t, "wabill_input_records_total{stage=\"windows\"}")?;
            (input > 0.0).then_some(())?;
            let lags: Vec<f64> = t
                .lines()
                .filter(|l| l.starts_with("wabill_consumer_lag{") && l.contains("stage=\"windows\""))
                .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
                .collect();
            (!lags.is_empty()).then(|| lags.iter().sum())
        });
        if lag == Some(0.0) {
            break;
        }
        assert!(Instant::now() < deadline, "first run did not catch up");
        std::thread::sleep(Duration::from_millis(500));
    }
    first.terminate();

    // Lose the local stores: the next start must restore them from the changelogs.
    std::fs::remove_dir_all(&state).unwrap();
    let _second = common::Wabill::run(&cfg, &log);
    let mut saw_restoring = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some((code, body)) = http_get(http_port, "/readyz") {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let restoring: u64 = v["stages"]
                .as_object()
                .map(|s| s.values().filter_map(|st| st["restoring"].as_u64()).sum())
                .unwrap_or(0);
            if restoring > 0 {
                assert_eq!(code, 503, "restoring but ready: {body}");
                saw_restoring = true;
            }
            if code == 200 {
                assert_eq!(v["ready"], Value::Bool(true), "{body}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "never became ready");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(saw_restoring, "a restore was never observed on /readyz");
    let (_, text) = http_get(http_port, "/metrics").expect("/metrics");
    let restored = metric_value(&text, "wabill_restore_records_total{stage=\"windows\"}").unwrap_or(0.0);
    assert!(restored > 0.0, "restore records counted: {restored}");
    assert_eq!(metric_value(&text, "wabill_ready"), Some(1.0));
    assert_eq!(
        metric_value(&text, "wabill_restoring_partitions{stage=\"windows\"}"),
        Some(0.0)
    );
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
