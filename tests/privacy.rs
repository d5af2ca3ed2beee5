//! `[privacy] hash_users`: with it on, no billing record or statement — replay's JSON
//! lines, `--summary`, the Kafka billing topic — holds an end user's number, not even in
//! base64 inside a Meta message id or behind an unkeyed conversation id; `user` is
//! HMAC-SHA-256(key, number) in hex (computed here independently with the hmac crate),
//! replay and `wabill run` agree, and dead letters keep the original bytes.

mod common;
mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde_json::Value;

use common::{H, T0};
use support::broker::{Broker, Record};
use wabill::billing::statement::render;
use wabill::codec::avro::{decode_billed, decode_dead_letter};

const KEY: &[u8] = b"correct horse battery staple";
/// A user billed only in the hand-made lines below (the sim's numbers are random).
const USER: &str = "5511987654321";
/// A user whose only line is dead-lettered (unknown status value).
const DEAD_USER: &str = "4915112345678";

fn hmac_hex(key: &[u8], msg: &str) -> String {
    let mut m = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("any key length");
    m.update(msg.as_bytes());
    m.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Every end-user number in the webhooks: `wa_id`, `from`, `recipient_id`, send-log `to`.
fn users_in(lines: &[String]) -> BTreeSet<String> {
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("wa_id" | "from" | "recipient_id" | "to", Value::String(s)) => {
                            out.insert(s.clone());
                        }
                        _ => walk(v, out),
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    for l in lines {
        if let Ok(v) = serde_json::from_str::<Value>(l) {
            walk(&v, &mut out);
        }
    }
    out
}

/// A message id as Meta writes them: base64 of a protobuf that starts with the user's
/// number (`wamid.HBgL…` for 11 digits; the example in Meta's webhook docs decodes to
/// `16505076520`).
fn meta_wamid(user: &str, tail: &str) -> String {
    let mut b = vec![0x1c, 0x18, user.len() as u8];
    b.extend_from_slice(user.as_bytes());
    b.extend_from_slice(&[0x15, 0x02, 0x00, 0x11, 0x18, tail.len() as u8]);
    b.extend_from_slice(tail.as_bytes());
    b.push(0);
    format!("wamid.{}", BASE64.encode(b))
}

/// The numbers of `users` inside base64 in any string field of `records` (Meta's
/// message ids).
fn leaked_in_base64<'a>(records: &[Value], users: &'a BTreeSet<String>) -> Vec<&'a String> {
    let mut decoded = String::new();
    for r in records {
        for v in r.as_object().expect("records are objects").values() {
            let Some(text) = v.as_str() else { continue };
            if let Ok(bytes) = BASE64.decode(text.strip_prefix("wamid.").unwrap_or(text)) {
                decoded.push_str(&String::from_utf8_lossy(&bytes));
                decoded.push('\n');
            }
        }
    }
    leaked(&decoded, users)
}

/// The simulated fortnight, then a conversation of `USER` and a dead-lettered status of
/// `DEAD_USER` after it (in event-time order: nothing late).
fn input() -> Vec<String> {
    let mut lines = common::traffic(41, 3000, 200);
    let t = T0 + 11 * 24 * H;
    lines.push(common::inbound(USER, &meta_wamid(USER, "9A3CA5B3D4CD6E67E7"), t));
    lines.extend(common::reply(USER, &meta_wamid(USER, "9A3CA5B3D4CD6E67E8"), t + 60));
    lines.push(common::status(DEAD_USER, "wamid.privacy-bad", "deleted", t + 120));
    lines
}

fn key_file(dir: &Path, key: &[u8]) -> String {
    let path = dir.join("user-hash.key");
    // As `echo KEY > file` writes it: the newline is not part of the key.
    std::fs::write(&path, [key, b"\n"].concat()).unwrap();
    path.display().to_string()
}

fn privacy_toml(key_file: &str) -> String {
    format!("[privacy]\nhash_users = true\nkey_file = \"{key_file}\"\n")
}

/// The numbers of `users` that occur anywhere in `text`.
fn leaked<'a>(text: &str, users: &'a BTreeSet<String>) -> Vec<&'a String> {
    users.iter().filter(|u| text.contains(u.as_str())).collect()
}

/// `records` with `user`, `opening_message_id` and `conversation_id` (its first 32 hex
/// characters) replaced by their keyed hashes, as compact JSON strings.
fn expected_hashed(records: &[Value], key: &[u8]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| {
            let mut r = r.clone();
            for (field, len) in [("user", 64), ("opening_message_id", 64), ("conversation_id", 32)] {
                let plain = r[field].as_str().expect("a string field").to_string();
                r[field] = Value::String(hmac_hex(key, &plain)[..len].to_string());
            }
            r.to_string()
        })
        .collect()
}

#[test]
fn replay_output_and_statements_hold_no_user_number() {
    let lines = input();
    let users = users_in(&lines);
    assert!(users.len() > 150 && users.contains(USER) && users.contains(DEAD_USER));
    let dir = tempfile::tempdir().unwrap();
    let key_path = key_file(dir.path(), KEY);

    let plain = common::replay_lines(&lines, "");
    let hashed = common::replay_lines(&lines, &privacy_toml(&key_path));

    // The check can fail: without hashing the numbers are there.
    let plain_text = String::from_utf8_lossy(&plain.output_bytes);
    assert!(leaked(&plain_text, &users).len() > 100, "the plain output names users");
    assert!(plain_text.contains(USER));
    assert_eq!(
        leaked_in_base64(&plain.records, &users),
        vec![USER],
        "the plain output's Meta message id holds the number"
    );

    let text = String::from_utf8_lossy(&hashed.output_bytes);
    assert!(hashed.records.len() > 300, "{} records", hashed.records.len());
    assert_eq!(leaked(&text, &users), Vec::<&String>::new(), "numbers in the output");
    assert_eq!(leaked_in_base64(&hashed.records, &users), Vec::<&String>::new());
    let summary = render(&hashed.report.statements);
    assert_eq!(
        leaked(&summary, &users),
        Vec::<&String>::new(),
        "numbers in the statements"
    );
    assert_eq!(summary, render(&plain.report.statements), "statements do not change");

    // `user` is HMAC-SHA-256(key, number), the ids are keyed hashes too (an unkeyed
    // conversation id would give the number to anyone trying every number of the
    // country), and nothing else changes.
    let want_user = hmac_hex(KEY, USER);
    assert_eq!(want_user.len(), 64);
    assert!(
        hashed.records.iter().any(|r| r["user"] == want_user.as_str()),
        "a record of {USER} with user = {want_user}"
    );
    let got: BTreeSet<String> = hashed.records.iter().map(Value::to_string).collect();
    assert_eq!(got, expected_hashed(&plain.records, KEY));
    let ids = |b: &common::Billed| -> BTreeSet<String> {
        b.records.iter().map(|r| r["conversation_id"].to_string()).collect()
    };
    assert_eq!(ids(&hashed).len(), hashed.records.len(), "ids stay distinct");
    assert!(ids(&hashed).is_disjoint(&ids(&plain)), "no unkeyed conversation id");

    // Dead letters keep the original text, numbers included (they are for re-processing).
    let without_input = |dead: &[Value]| -> Vec<Value> {
        let mut dead = dead.to_vec();
        dead.iter_mut().for_each(|d| d["input"] = Value::Null);
        dead
    };
    assert_eq!(without_input(&hashed.dead), without_input(&plain.dead));
    let dead_text: String = hashed.dead.iter().map(Value::to_string).collect();
    assert!(dead_text.contains(DEAD_USER), "{dead_text}");
}

fn wabill(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wabill"));
    c.args(args).env_remove("WABILL_USER_HASH_KEY");
    c
}

#[test]
fn cli_replay_takes_the_key_from_the_environment_first() {
    let dir = tempfile::tempdir().unwrap();
    let lines = input();
    let users = users_in(&lines);
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, lines.join("\n") + "\n").unwrap();
    let config = dir.path().join("wabill.toml");
    std::fs::write(&config, privacy_toml(&key_file(dir.path(), b"the file's key"))).unwrap();
    let out = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let p = |p: &Path| p.display().to_string();
    let args = [
        "replay",
        "--input",
        &p(&input_path),
        "--output",
        &p(&out),
        "--dead-letter",
        &p(&dead),
        "--config",
        &p(&config),
        "--summary",
        "--quiet",
    ];
    let run = wabill(&args)
        .env("WABILL_USER_HASH_KEY", "the environment's key")
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let summary = String::from_utf8_lossy(&run.stdout);
    assert!(summary.contains("WABA "), "{summary}");
    assert_eq!(leaked(&summary, &users), Vec::<&String>::new());
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(leaked(&text, &users), Vec::<&String>::new());
    let records: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let mine = records
        .iter()
        .filter(|r| r["user"] == hmac_hex(b"the environment's key", USER).as_str())
        .count();
    assert_eq!(
        mine, 1,
        "one conversation of {USER}, hashed under the environment's key"
    );
    assert!(std::fs::read_to_string(&dead).unwrap().contains(DEAD_USER));

    // Without the environment the file's key (less its newline) hashes.
    let run = wabill(&args).output().unwrap();
    assert!(run.status.success(), "{}", String::from_utf8_lossy(&run.stderr));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(text.contains(&hmac_hex(b"the file's key", USER)));
}

#[test]
fn hashing_on_without_a_key_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, common::inbound(USER, "wamid.a", T0) + "\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let p = |p: &Path| p.display().to_string();
    for (toml, env, says) in [
        ("[privacy]\nhash_users = true\n", None, "needs a key"),
        ("[privacy]\nhash_users = true\n", Some(""), "is empty"),
        (
            "[privacy]\nhash_users = true\nkey_file = \"/nonexistent/wabill.key\"\n",
            None,
            "/nonexistent/wabill.key",
        ),
    ] {
        let config = dir.path().join("wabill.toml");
        std::fs::write(&config, toml).unwrap();
        let mut cmd = wabill(&[
            "replay",
            "--input",
            &p(&input_path),
            "--output",
            &p(&out),
            "--config",
            &p(&config),
            "--quiet",
        ]);
        if let Some(v) = env {
            cmd.env("WABILL_USER_HASH_KEY", v);
        }
        let run = cmd.output().unwrap();
        let err = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success(), "{toml:?} {env:?} started");
        assert!(err.contains(says), "{toml:?} {env:?}: {err}");
        assert!(!out.exists(), "no output is written");
    }
}

/// `wabill run` with hashing on writes the replay's (hashed) records to the billing
/// topic, and its dead letters keep the original bytes.
#[test]
fn run_equals_replay_with_hashing_on() {
    let broker = Broker::start();
    let dir = tempfile::tempdir().unwrap();
    let prefix = "privacy";
    let mut lines = common::traffic(43, 1500, 120);
    let t = T0 + 11 * 24 * H;
    lines.push(common::inbound(USER, &meta_wamid(USER, "9A3CA5B3D4CD6E67E7"), t));
    lines.extend(common::reply(USER, &meta_wamid(USER, "9A3CA5B3D4CD6E67E8"), t + 60));
    let users = users_in(&lines);
    let key_path = key_file(dir.path(), KEY);
    let reference = common::replay_lines(&lines, &privacy_toml(&key_path));
    assert!(reference.dead.is_empty(), "{:?}", reference.dead);
    let want: BTreeSet<String> = reference.records.iter().map(Value::to_string).collect();
    assert!(want.len() > 150);
    assert!(want.iter().any(|r| r.contains(&hmac_hex(KEY, USER))));

    let cfg = dir.path().join("wabill.toml");
    std::fs::write(
        &cfg,
        format!(
            "{}[kafka]\nbrokers = \"{}\"\nprefix = \"{prefix}\"\npartitions = 2\nbatch_max = 500\nidle_flush_ms = 3000\n\
             [kafka.consumer_properties]\n\"fetch.wait.max.ms\" = \"10\"\n\
             [state]\ndir = \"{}\"\n[http]\naddr = \"\"\n",
            privacy_toml(&key_path),
            broker.bootstrap(),
            dir.path().join("state").display()
        ),
    )
    .unwrap();
    let webhooks = format!("{prefix}-webhooks");
    broker.create_topic(&webhooks, 1, false);
    let log = dir.path().join("wabill.log");
    let mut p = common::Wabill::run(&cfg, &log);
    let mut with_poison = lines.clone();
    with_poison.push(common::status(DEAD_USER, "wamid.privacy-bad", "deleted", t + 120));
    let records: Vec<Record> = with_poison.iter().map(|l| Record::new(b"", l.as_bytes())).collect();
    broker.produce_records(&webhooks, &records);

    let deadline = Instant::now() + Duration::from_secs(240);
    let mut got = BTreeSet::new();
    let mut raw = String::new();
    let mut reader = 0;
    while got.len() < want.len() && Instant::now() < deadline {
        reader += 1;
        let batch = broker.consume_all(
            &format!("{prefix}-billing"),
            &format!("{prefix}-reader-{reader}"),
            want.len(),
            Duration::from_secs(15),
        );
        got.clear();
        raw.clear();
        for c in &batch {
            let bytes = c.value.as_deref().unwrap_or_default();
            raw.push_str(&String::from_utf8_lossy(bytes));
            let b = decode_billed(bytes).expect("billing record decodes");
            let v: Value = serde_json::from_str(&serde_json::to_string(&b.to_out()).unwrap()).unwrap();
            got.insert(v.to_string());
        }
    }
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        got.symmetric_difference(&want).take(4).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "{}",
        common::tail(&log_text)
    );
    assert_eq!(
        leaked(&raw, &users),
        Vec::<&String>::new(),
        "numbers on the billing topic"
    );
    let got_values: Vec<Value> = got.iter().map(|r| serde_json::from_str(r).unwrap()).collect();
    assert_eq!(leaked_in_base64(&got_values, &users), Vec::<&String>::new());

    let dead = broker.consume_all(
        &format!("{prefix}-dead-letter"),
        "privacy-dl-reader",
        1,
        Duration::from_secs(60),
    );
    assert_eq!(dead.len(), 1, "{}", common::tail(&log_text));
    let d = decode_dead_letter(dead[0].value.as_deref().unwrap_or_default()).expect("dead letter decodes");
    assert!(
        String::from_utf8_lossy(&d.original).contains(DEAD_USER),
        "the original bytes: {d:?}"
    );
    assert!(p.terminate().success(), "{}", common::tail(&log_text));
}
