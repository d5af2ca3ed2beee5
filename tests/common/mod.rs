//! Test kit: Meta webhook payload builders and a helper that runs the real replay path
//! (RocksDB store, JSON output files) and reads the records back.
#![allow(dead_code)]

use serde_json::{json, Value};

use wabill::billing::{MarketMap, RateCard};
use wabill::config::Config;
use wabill::pipeline::engine::Setup;
use wabill::runtime::replay::{self, ReplayOptions, ReplayReport};

pub const WABA: &str = "102290129340398";
pub const PNID: &str = "106540352242922";
pub const USER: &str = "16505551234";

pub const H: i64 = 3600;
/// 2022-03-01T00:00:00Z: a quiet day well inside `cbp-2022`.
pub const T0: i64 = 1_646_092_800;

fn envelope(waba: &str, pnid: &str, value: Value) -> String {
    let mut v = value;
    v["messaging_product"] = json!("whatsapp");
    v["metadata"] = json!({"display_phone_number": "15550783881", "phone_number_id": pnid});
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba, "changes": [{"value": v, "field": "messages"}]}]
    })
    .to_string()
}

/// An inbound user message (Cloud API), optionally from an ad (`Some("ad")`) or post.
pub fn inbound_to(waba: &str, pnid: &str, user: &str, id: &str, ts: i64, referral: Option<&str>) -> String {
    let mut m = json!({
        "from": user, "id": id, "timestamp": ts.to_string(),
        "text": {"body": "Hi, where is my order?"}, "type": "text"
    });
    if let Some(src) = referral {
        m["referral"] = json!({
            "source_url": "https://fb.me/3cr4Wqqkv", "source_id": "120226305854810726",
            "source_type": src, "body": "Summer Succulents are here!", "headline": "Chat with us",
            "media_type": "image"
        });
    }
    envelope(
        waba,
        pnid,
        json!({"contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": user}], "messages": [m]}),
    )
}

pub fn inbound(user: &str, id: &str, ts: i64) -> String {
    inbound_to(WABA, PNID, user, id, ts, None)
}

pub fn inbound_ad(user: &str, id: &str, ts: i64) -> String {
    inbound_to(WABA, PNID, user, id, ts, Some("ad"))
}

/// A status webhook for an outbound business message.
pub fn status_to(waba: &str, pnid: &str, user: &str, id: &str, status: &str, ts: i64) -> String {
    let mut s = json!({"id": id, "status": status, "timestamp": ts.to_string(), "recipient_id": user});
    if status == "sent" || status == "delivered" {
        s["conversation"] = json!({"id": "CONVERSATION_ID", "origin": {"type": "user_initiated"}});
        s["pricing"] = json!({"billable": true, "pricing_model": "CBP", "category": "user_initiated"});
    }
    envelope(waba, pnid, json!({"statuses": [s]}))
}

pub fn status(user: &str, id: &str, status: &str, ts: i64) -> String {
    status_to(WABA, PNID, user, id, status, ts)
}

/// sent at `ts`, delivered one second later: the usual pair for a business message.
pub fn reply(user: &str, id: &str, ts: i64) -> Vec<String> {
    vec![status(user, id, "sent", ts), status(user, id, "delivered", ts + 1)]
}

pub struct Billed {
    pub records: Vec<Value>,
    pub dead: Vec<Value>,
    pub output_bytes: Vec<u8>,
    pub report: ReplayReport,
}

impl Billed {
    pub fn origins(&self) -> Vec<String> {
        self.records
            .iter()
            .map(|r| r["origin"].as_str().unwrap_or("").to_string())
            .collect()
    }
}

/// Runs `wabill replay` (the library entry point the CLI calls) over `lines`.
pub fn replay_lines(lines: &[String], config_toml: &str) -> Billed {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write input");
    replay_files(&[input.display().to_string()], config_toml, dir.path())
}

pub fn replay_files(inputs: &[String], config_toml: &str, dir: &std::path::Path) -> Billed {
    let cfg: Config = toml::from_str(config_toml).expect("config");
    let mut setup = Setup::new(&cfg, RateCard::bundled_sample().expect("card"), MarketMap::bundled()).expect("setup");
    // As `wabill replay` does with the config's `tiers` key (a test writes its own bands).
    if let Some(path) = &cfg.tiers {
        let text = std::fs::read_to_string(path).expect("read tiers");
        setup = setup.with_tiers(wabill::billing::VolumeTiers::parse(&text).expect("tiers"));
    }
    let output = dir.join("out.jsonl");
    let dead = dir.join("dead.jsonl");
    let opts = ReplayOptions {
        inputs: inputs.to_vec(),
        output: Some(output.display().to_string()),
        dead_letter: Some(dead.display().to_string()),
        state_dir: Some(dir.join("state")),
        progress: false,
    };
    let report = replay::run(&cfg, &setup, &opts).expect("replay");
    let output_bytes = std::fs::read(&output).expect("read output");
    let parse = |b: &[u8]| -> Vec<Value> {
        String::from_utf8_lossy(b)
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    };
    let dead_bytes = std::fs::read(&dead).expect("read dead letters");
    Billed {
        records: parse(&output_bytes),
        dead: parse(&dead_bytes),
        output_bytes,
        report,
    }
}

/// Simulated webhook lines (deterministic for a seed) over ten days of March 2022.
pub fn traffic(seed: u64, events: u64, users: u64) -> Vec<String> {
    let cfg = wabill::sim::SimConfig {
        seed,
        events,
        users,
        days: 10,
        ..wabill::sim::SimConfig::default()
    };
    let mut lines = Vec::new();
    wabill::sim::generate(&cfg, |l| lines.push(l.to_string()));
    lines
}

/// The replay's records for `lines`, as compact JSON strings (the reference the Kafka
/// tests compare billing topics with).
pub fn replay_set(lines: &[String], config_toml: &str) -> std::collections::BTreeSet<String> {
    replay_lines(lines, config_toml)
        .records
        .iter()
        .map(|v| v.to_string())
        .collect()
}

/// The last ~6 kB of a log, for assertion messages.
pub fn tail(s: &str) -> &str {
    let mut i = s.len().saturating_sub(6000);
    while !s.is_char_boundary(i) {
        i += 1;
    }
    &s[i..]
}

/// The `wabill` binary as a child process, stderr appended to a log; killed on drop.
pub struct Wabill(pub std::process::Child);

impl Wabill {
    pub fn spawn(args: &[&str], log: &std::path::Path) -> Wabill {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open the wabill log");
        Wabill(
            std::process::Command::new(env!("CARGO_BIN_EXE_wabill"))
                .args(args)
                .env("RUST_LOG", "wabill=info")
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start wabill"),
        )
    }

    /// `wabill run --config <config>`.
    pub fn run(config: &std::path::Path, log: &std::path::Path) -> Wabill {
        Wabill::spawn(&["run", "--config", config.to_str().expect("UTF-8 path")], log)
    }

    pub fn kill9(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    /// SIGTERM, then waits (at most 60 s) for a clean exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            if let Some(s) = self.0.try_wait().expect("wait for wabill") {
                return s;
            }
            assert!(std::time::Instant::now() < deadline, "wabill did not stop on SIGTERM");
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Wabill {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Every record payload of `topic` from the start, until nothing new arrives for
/// `quiet` (for brokers whose end offsets the test cannot trust, like the mock
/// cluster's). `read_committed` skips aborted transactional records.
pub fn read_until_quiet(
    bootstrap: &str,
    topic: &str,
    group: &str,
    read_committed: bool,
    quiet: std::time::Duration,
) -> Vec<Vec<u8>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    let c: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set(
            "isolation.level",
            if read_committed {
                "read_committed"
            } else {
                "read_uncommitted"
            },
        )
        .create()
        .expect("consumer");
    c.subscribe(&[topic]).expect("subscribe");
    let mut out = Vec::new();
    let mut last = std::time::Instant::now();
    while last.elapsed() < quiet {
        if let Some(Ok(m)) = c.poll(std::time::Duration::from_millis(200)) {
            out.push(m.payload().unwrap_or_default().to_vec());
            last = std::time::Instant::now();
        }
    }
    out
}
