//! Bad input (docs/billing-rules.md §6, §9): a record that cannot be parsed, or an event that cannot be
//! billed, goes to the dead-letter output with the original text, the source position
//! and a reason; processing continues; nothing is dropped silently; nothing panics.
//!
//! Every test checks two things:
//! (a) exactly the expected dead letters (reason naming the problem, `line`, `path` for
//!     per-event errors, `original`), and
//! (b) the good events of the same file are still billed: the records are identical to a
//!     replay of the same file with the bad lines (or bad events) removed.

mod common;
use common::*;

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use serde_json::{json, Value};

use wabill::ingest::Normaliser;

const NO_CONFIG: &str = "";
const UK: &str = "447700900123";
const BR: &str = "5511987654321";
const S0: &str = "entry[0].changes[0].value.statuses[0]";
const M0: &str = "entry[0].changes[0].value.messages[0]";
const S0_PTR: &str = "/entry/0/changes/0/value/statuses/0";
const M0_PTR: &str = "/entry/0/changes/0/value/messages/0";
/// 2025-08-01T00:00:00Z: inside `pmp-2025-07`, where every delivery's price depends on its
/// kind (docs/billing-rules.md §5 rule 2), so a delivery with no send log and no
/// `pricing.category` cannot be billed.
const PMP_DAY: i64 = 1_754_006_400;
const ON_PREMISES_CONFIG: &str = "[on_premises]\nwaba_id = \"1\"\nphone_number_id = \"2\"\n";

// ---------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------

/// A clean file: three conversations (user_initiated US, business_initiated GB,
/// free_entry_point BR).
fn good_lines() -> Vec<String> {
    vec![
        inbound(USER, "wamid.good.in1", T0),
        status(USER, "wamid.good.out1", "sent", T0 + 60),
        status(USER, "wamid.good.out1", "delivered", T0 + 61),
        status(UK, "wamid.good.out2", "sent", T0 + H),
        status(UK, "wamid.good.out2", "delivered", T0 + H + 5),
        inbound_ad(BR, "wamid.good.in2", T0 + 2 * H),
        status(BR, "wamid.good.out3", "sent", T0 + 2 * H + 30),
        status(BR, "wamid.good.out3", "delivered", T0 + 2 * H + 31),
        status(USER, "wamid.good.out1", "read", T0 + 3 * H),
    ]
}

/// Good lines with `bad[i]` inserted after good line `i`; returns the file and the
/// (1-based) line numbers of the bad lines.
fn interleave(bad: &[String]) -> (Vec<String>, Vec<u64>) {
    let mut good = good_lines().into_iter();
    let mut lines = Vec::new();
    let mut at = Vec::new();
    for b in bad {
        if let Some(g) = good.next() {
            lines.push(g);
        }
        lines.push(b.clone());
        at.push(lines.len() as u64);
    }
    lines.extend(good);
    (lines, at)
}

/// Parses a payload, lets `f` change it, serialises it again (compact, one line).
fn edit(line: &str, f: impl FnOnce(&mut Value)) -> String {
    let mut v: Value = serde_json::from_str(line).expect("fixture is JSON");
    f(&mut v);
    v.to_string()
}

fn at<'a>(v: &'a mut Value, ptr: &str) -> &'a mut Value {
    v.pointer_mut(ptr).unwrap_or_else(|| panic!("fixture has no {ptr}"))
}

fn item(line: &str, ptr: &str) -> Value {
    let v: Value = serde_json::from_str(line).expect("JSON");
    v.pointer(ptr).unwrap_or_else(|| panic!("no {ptr} in {line}")).clone()
}

fn remove_field(line: &str, ptr: &str, field: &str) -> String {
    edit(line, |v| {
        at(v, ptr)
            .as_object_mut()
            .expect("object")
            .remove(field)
            .expect("field present");
    })
}

fn set_field(line: &str, ptr: &str, field: &str, value: Value) -> String {
    edit(line, |v| at(v, ptr)[field] = value)
}

/// The same event as an On-Premises payload: the change value without the Cloud API
/// envelope (`metadata`, `messaging_product`).
fn on_premises(cloud_line: &str) -> String {
    let mut v = item(cloud_line, "/entry/0/changes/0/value");
    let o = v.as_object_mut().expect("object");
    o.remove("metadata");
    o.remove("messaging_product");
    v.to_string()
}

// ---------------------------------------------------------------------------------------
// Assertions
// ---------------------------------------------------------------------------------------

enum Orig {
    /// The whole input line, unchanged.
    Line,
    /// The event's own JSON (per-event errors).
    Json(Value),
    /// Text containing this (engine rejections carry the normalised event).
    Contains(String),
}

struct Want {
    input: String,
    line: u64,
    path: Option<String>,
    reason: Vec<String>,
    original: Orig,
    /// waba_id and phone_number_id; `None`: neither field present.
    ids: Option<(String, Option<String>)>,
}

impl Want {
    fn input(mut self, suffix: &str) -> Self {
        self.input = suffix.to_string();
        self
    }
    fn ids(mut self, waba: &str, pnid: Option<&str>) -> Self {
        self.ids = Some((waba.to_string(), pnid.map(str::to_string)));
        self
    }
    fn original(mut self, o: Orig) -> Self {
        self.original = o;
        self
    }
}

/// A whole line that could not be used.
fn line_err(line: u64, reason: &[&str]) -> Want {
    Want {
        input: "in.jsonl".into(),
        line,
        path: None,
        reason: reason.iter().map(|s| s.to_string()).collect(),
        original: Orig::Line,
        ids: None,
    }
}

/// One event inside a payload that could not be billed.
fn event_err(line: u64, path: &str, reason: &[&str], original: Value) -> Want {
    Want {
        input: "in.jsonl".into(),
        line,
        path: Some(path.to_string()),
        reason: reason.iter().map(|s| s.to_string()).collect(),
        original: Orig::Json(original),
        ids: Some((WABA.to_string(), Some(PNID.to_string()))),
    }
}

/// An event the engine rejected (no path: it was rejected after normalisation).
fn engine_err(line: u64, reason: &[&str], contains: &str) -> Want {
    Want {
        input: "in.jsonl".into(),
        line,
        path: None,
        reason: reason.iter().map(|s| s.to_string()).collect(),
        original: Orig::Contains(contains.to_string()),
        ids: None,
    }
}

/// Dead letters with their `original` cut short, for failure messages.
fn show(dead: &[Value]) -> String {
    let mut out = String::new();
    for d in dead {
        let mut d = d.clone();
        if let Some(o) = d["original"].as_str() {
            if o.len() > 300 {
                let cut: String = o.chars().take(300).collect();
                d["original"] = json!(format!("{cut}... ({} bytes)", o.len()));
            }
        }
        out.push_str(&d.to_string());
        out.push('\n');
    }
    out
}

fn assert_dead(b: &Billed, lines: &[String], wants: Vec<Want>) {
    let dead_txt = show(&b.dead);
    assert_eq!(
        b.dead.len(),
        wants.len(),
        "expected {} dead letters, got {}:\n{dead_txt}",
        wants.len(),
        b.dead.len()
    );
    assert_eq!(
        b.report.dead_letters as usize,
        b.dead.len(),
        "report counts every dead letter"
    );
    let key = |input: &str, line: u64, path: &str| {
        (
            input.rsplit('/').next().unwrap_or("").to_string(),
            line,
            path.to_string(),
        )
    };
    let mut dead: Vec<&Value> = b.dead.iter().collect();
    dead.sort_by_key(|d| {
        key(
            d["input"].as_str().unwrap_or(""),
            d["line"].as_u64().unwrap_or(0),
            d["path"].as_str().unwrap_or(""),
        )
    });
    let mut wants = wants;
    wants.sort_by_key(|w| key(&w.input, w.line, w.path.as_deref().unwrap_or("")));
    for (d, w) in dead.iter().zip(&wants) {
        let ctx = format!("dead letter {}\nall dead letters:\n{dead_txt}", show(&[(*d).clone()]));
        let input = d["input"]
            .as_str()
            .unwrap_or_else(|| panic!("`input` is a string: {ctx}"));
        assert!(
            input.ends_with(&w.input),
            "input {input:?} should end with {:?}: {ctx}",
            w.input
        );
        assert_eq!(d["line"].as_u64(), Some(w.line), "line: {ctx}");
        assert_eq!(d["path"].as_str(), w.path.as_deref(), "path: {ctx}");
        let reason = d["reason"]
            .as_str()
            .unwrap_or_else(|| panic!("`reason` is a string: {ctx}"));
        for r in &w.reason {
            assert!(
                reason.to_lowercase().contains(&r.to_lowercase()),
                "reason {reason:?} should mention {r:?}: {ctx}"
            );
        }
        let original = d["original"]
            .as_str()
            .unwrap_or_else(|| panic!("`original` is a string: {ctx}"));
        match &w.original {
            Orig::Line => {
                let want = &lines[(w.line - 1) as usize];
                assert!(
                    original == want.as_str(),
                    "original should be input line {} unchanged: {ctx}",
                    w.line
                );
            }
            Orig::Json(v) => {
                let got: Value = serde_json::from_str(original)
                    .unwrap_or_else(|e| panic!("original of a per-event dead letter is the event's JSON ({e}): {ctx}"));
                assert_eq!(&got, v, "original: {ctx}");
            }
            Orig::Contains(s) => assert!(original.contains(s.as_str()), "original should contain {s:?}: {ctx}"),
        }
        match &w.ids {
            Some((waba, pnid)) => {
                assert_eq!(d["waba_id"].as_str(), Some(waba.as_str()), "waba_id: {ctx}");
                assert_eq!(d["phone_number_id"].as_str(), pnid.as_deref(), "phone_number_id: {ctx}");
            }
            None => {
                assert!(d.get("waba_id").is_none(), "no waba_id expected: {ctx}");
                assert!(d.get("phone_number_id").is_none(), "no phone_number_id expected: {ctx}");
            }
        }
    }
}

/// (b): the records equal a clean replay of `reference` (same config), which must have
/// no dead letters and at least one record.
fn assert_same_records(b: &Billed, reference: &[String], config: &str) -> Billed {
    let r = replay_lines(reference, config);
    assert!(r.dead.is_empty(), "reference file is clean:\n{}", show(&r.dead));
    assert!(!r.records.is_empty(), "reference file bills something");
    assert_eq!(
        b.records, r.records,
        "good events are billed exactly as without the bad input"
    );
    r
}

fn without(lines: &[String], drop: &[u64]) -> Vec<String> {
    lines
        .iter()
        .enumerate()
        .filter(|(i, _)| !drop.contains(&(*i as u64 + 1)))
        .map(|(_, l)| l.clone())
        .collect()
}

/// The common shape: bad lines interleaved with the good file, one dead letter per bad
/// line, good events billed as if the bad lines were not there.
fn check_bad_lines(bad: &[String], wants: impl FnOnce(&[u64]) -> Vec<Want>) -> Billed {
    let (lines, at) = interleave(bad);
    let b = replay_lines(&lines, NO_CONFIG);
    assert_dead(&b, &lines, wants(&at));
    assert_same_records(&b, &without(&lines, &at), NO_CONFIG);
    b
}

// ---------------------------------------------------------------------------------------
// Baseline
// ---------------------------------------------------------------------------------------

#[test]
fn baseline_good_file_bills_three_conversations_and_no_dead_letters() {
    let b = replay_lines(&good_lines(), NO_CONFIG);
    assert!(b.dead.is_empty(), "{}", show(&b.dead));
    assert_eq!(
        b.origins(),
        vec!["user_initiated", "business_initiated", "free_entry_point"]
    );
}

// ---------------------------------------------------------------------------------------
// Lines that are not webhook payloads
// ---------------------------------------------------------------------------------------

#[test]
fn truncated_json_lines_are_dead_lettered() {
    let full = status("16505550101", "wamid.trunc", "delivered", T0 + 10);
    let bad = vec![
        full[..full.len() / 4].to_string(),
        full[..full.len() / 2].to_string(),
        full[..full.len() - 1].to_string(),
    ];
    check_bad_lines(&bad, |at| {
        at.iter().map(|&l| line_err(l, &["not valid JSON"])).collect()
    });
}

#[test]
fn non_json_lines_are_dead_lettered() {
    let bad = vec![
        "this is not json".to_string(),
        "GET /webhook?hub.mode=subscribe HTTP/1.1".to_string(),
        "<xml>nope</xml>".to_string(),
    ];
    check_bad_lines(&bad, |at| {
        at.iter().map(|&l| line_err(l, &["not valid JSON"])).collect()
    });
}

#[test]
fn empty_object_is_dead_lettered() {
    check_bad_lines(&["{}".to_string()], |at| vec![line_err(at[0], &["neither `entry`"])]);
}

#[test]
fn json_array_lines_are_dead_lettered() {
    let wrapped = format!("[{}]", status("16505550102", "wamid.arr", "delivered", T0 + 10));
    let bad = vec![wrapped, "[1,2,3]".to_string(), "[]".to_string()];
    // Any payload-level reason will do, as long as the whole line is dead-lettered.
    let b = check_bad_lines(&bad, |at| at.iter().map(|&l| line_err(l, &[])).collect());
    for d in &b.dead {
        let r = d["reason"].as_str().unwrap_or("");
        assert!(
            r.contains("not valid JSON") || r.contains("wrong shape") || r.contains("neither `entry`"),
            "reason should say the payload is unusable: {r:?}"
        );
    }
}

/// An array whose elements line up with the envelope's fields
/// (`["whatsapp_business_account", [entry...]]`) is still not a webhook payload: Meta
/// always posts a JSON object. It must be dead-lettered, not billed.
#[test]
fn json_array_shaped_like_the_envelope_fields_is_not_billed() {
    let cloud = status("16505550103", "wamid.positional", "delivered", T0 + 10);
    let entries = item(&cloud, "/entry");
    let bad = json!(["whatsapp_business_account", entries]).to_string();
    let (lines, at) = interleave(&[bad]);
    let b = replay_lines(&lines, NO_CONFIG);
    let billed: Vec<&Value> = b
        .records
        .iter()
        .filter(|r| r["opening_message_id"] == "wamid.positional")
        .collect();
    assert!(
        billed.is_empty(),
        "a JSON array was billed as a webhook payload: {billed:#?}"
    );
    assert_dead(&b, &lines, vec![line_err(at[0], &[])]);
    assert_same_records(&b, &without(&lines, &at), NO_CONFIG);
}

#[test]
fn object_page_payload_is_dead_lettered() {
    let page = edit(&status("16505550104", "wamid.page", "delivered", T0 + 10), |v| {
        v["object"] = json!("page")
    });
    check_bad_lines(&[page], |at| {
        vec![line_err(at[0], &["\"page\"", "whatsapp_business_account"])]
    });
}

// ---------------------------------------------------------------------------------------
// Wrong JSON types
// ---------------------------------------------------------------------------------------

#[test]
fn entry_as_a_string_is_dead_lettered() {
    let bad = json!({"object": "whatsapp_business_account", "entry": WABA}).to_string();
    check_bad_lines(&[bad], |at| {
        vec![line_err(at[0], &["wrong shape", "invalid type: string"])]
    });
}

#[test]
fn timestamp_as_a_json_object_is_dead_lettered_naming_the_timestamp() {
    let obj = set_field(
        &status("16505550105", "wamid.tsobj", "delivered", T0 + 10),
        S0_PTR,
        "timestamp",
        json!({"seconds": T0 + 10}),
    );
    let boolean = set_field(
        &status("16505550106", "wamid.tsbool", "delivered", T0 + 20),
        S0_PTR,
        "timestamp",
        json!(true),
    );
    let bad = vec![obj.clone(), boolean.clone()];
    check_bad_lines(&bad, |at| {
        vec![
            event_err(at[0], S0, &["timestamp"], item(&obj, S0_PTR)),
            event_err(at[1], S0, &["timestamp"], item(&boolean, S0_PTR)),
        ]
    });
}

#[test]
fn statuses_holding_a_number_is_dead_lettered() {
    // An element of `statuses` is a number: that one status is bad.
    let elem = edit(&status("16505550107", "wamid.num", "delivered", T0 + 10), |v| {
        v["entry"][0]["changes"][0]["value"]["statuses"] = json!([42])
    });
    // `statuses` itself is a number: the change value cannot be read.
    let whole = edit(&status("16505550108", "wamid.num2", "delivered", T0 + 20), |v| {
        v["entry"][0]["changes"][0]["value"]["statuses"] = json!(42)
    });
    let bad = vec![elem, whole.clone()];
    check_bad_lines(&bad, |at| {
        vec![
            event_err(at[0], S0, &["invalid type: integer `42`"], json!(42)),
            event_err(
                at[1],
                "entry[0].changes[0].value",
                &["wrong shape", "invalid type: integer `42`"],
                item(&whole, "/entry/0/changes/0/value"),
            )
            .ids(WABA, None)
            .original(Orig::Json(item(&whole, "/entry/0/changes/0/value"))),
        ]
    });
}

// ---------------------------------------------------------------------------------------
// Missing fields
// ---------------------------------------------------------------------------------------

#[test]
fn status_without_timestamp_is_dead_lettered() {
    let bad = remove_field(
        &status("16505550109", "wamid.nots", "delivered", T0 + 10),
        S0_PTR,
        "timestamp",
    );
    let orig = item(&bad, S0_PTR);
    check_bad_lines(&[bad], |at| {
        vec![event_err(at[0], S0, &["missing field", "timestamp"], orig)]
    });
}

#[test]
fn status_without_recipient_id_is_dead_lettered() {
    let bad = remove_field(
        &status("16505550110", "wamid.norcpt", "delivered", T0 + 10),
        S0_PTR,
        "recipient_id",
    );
    let orig = item(&bad, S0_PTR);
    check_bad_lines(&[bad], |at| {
        vec![event_err(at[0], S0, &["missing field", "recipient_id"], orig)]
    });
}

#[test]
fn inbound_without_from_is_dead_lettered() {
    let bad = remove_field(&inbound("16505550111", "wamid.nofrom", T0 + 10), M0_PTR, "from");
    let orig = item(&bad, M0_PTR);
    check_bad_lines(&[bad], |at| {
        vec![event_err(at[0], M0, &["missing field", "`from`"], orig)]
    });
}

// ---------------------------------------------------------------------------------------
// Unknown values and bad numbers
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_status_value_is_dead_lettered() {
    let bad = status("16505550112", "wamid.deleted", "deleted", T0 + 10);
    let orig = item(&bad, S0_PTR);
    check_bad_lines(&[bad], |at| {
        vec![event_err(at[0], S0, &["unknown status", "deleted"], orig)]
    });
}

/// A delivery to `number` and an inbound message from it: both dead-lettered.
fn check_bad_number(number: &str, reason: &str) {
    let st = status(number, "wamid.badnum.out", "delivered", T0 + 10);
    let inb = inbound(number, "wamid.badnum.in", T0 + 20);
    let (so, mo) = (item(&st, S0_PTR), item(&inb, M0_PTR));
    check_bad_lines(&[st, inb], |at| {
        vec![event_err(at[0], S0, &[reason], so), event_err(at[1], M0, &[reason], mo)]
    });
}

#[test]
fn number_with_letters_is_dead_lettered() {
    check_bad_number("12ab", "other than digits");
}

#[test]
fn empty_number_is_dead_lettered() {
    check_bad_number("", "empty");
}

#[test]
fn number_without_a_country_calling_code_is_dead_lettered() {
    check_bad_number("999123456", "country calling code");
}

#[test]
fn non_geographic_number_is_dead_lettered() {
    check_bad_number("80012345678", "non-geographic");
}

#[test]
fn number_that_parses_but_is_invalid_is_billed_by_its_calling_code() {
    let mut lines = good_lines();
    lines.push(status("4412", "wamid.short.uk", "sent", T0 + 4 * H));
    lines.push(status("4412", "wamid.short.uk", "delivered", T0 + 4 * H + 1));
    let b = replay_lines(&lines, NO_CONFIG);
    assert_dead(&b, &lines, vec![]);
    assert!(
        b.report.invalid_numbers >= 1,
        "invalid numbers are counted: {:?}",
        b.report
    );
    let uk: Vec<&Value> = b
        .records
        .iter()
        .filter(|r| r["opening_message_id"] == "wamid.short.uk")
        .collect();
    assert_eq!(uk.len(), 1, "one conversation for +44 12: {:#?}", b.records);
    assert_eq!(uk[0]["country"], "GB");
    assert_eq!(uk[0]["market"], "United Kingdom");
    assert_eq!(uk[0]["origin"], "business_initiated");
    let rest: Vec<Value> = b
        .records
        .iter()
        .filter(|r| r["opening_message_id"] != "wamid.short.uk")
        .cloned()
        .collect();
    assert_eq!(rest, replay_lines(&good_lines(), NO_CONFIG).records);
}

// ---------------------------------------------------------------------------------------
// Batches, size, eras
// ---------------------------------------------------------------------------------------

#[test]
fn batch_with_a_bad_status_in_the_middle_bills_the_other_two() {
    let s = |user: &str, id: &str, ts: i64| item(&status(user, id, "delivered", ts), S0_PTR);
    let first = s("16505550201", "wamid.batch.1", T0 + 4 * H);
    let mut middle = s("16505550202", "wamid.batch.2", T0 + 4 * H + 1);
    middle.as_object_mut().expect("object").remove("timestamp");
    let last = s("16505550203", "wamid.batch.3", T0 + 4 * H + 2);
    let template = status("16505550201", "wamid.batch.1", "delivered", T0 + 4 * H);
    let batch = set_field(
        &template,
        "/entry/0/changes/0/value",
        "statuses",
        json!([first, middle, last]),
    );
    let clean = set_field(&template, "/entry/0/changes/0/value", "statuses", json!([first, last]));

    let mut lines = good_lines();
    lines.push(batch);
    let b = replay_lines(&lines, NO_CONFIG);
    assert_dead(
        &b,
        &lines,
        vec![event_err(
            lines.len() as u64,
            "entry[0].changes[0].value.statuses[1]",
            &["timestamp"],
            middle,
        )],
    );
    let mut reference = good_lines();
    reference.push(clean);
    assert_same_records(&b, &reference, NO_CONFIG);
    let opened: Vec<&str> = b
        .records
        .iter()
        .filter_map(|r| r["opening_message_id"].as_str())
        .collect();
    assert!(
        opened.contains(&"wamid.batch.1") && opened.contains(&"wamid.batch.3"),
        "{opened:?}"
    );
    assert!(!opened.contains(&"wamid.batch.2"), "{opened:?}");
}

#[test]
fn ten_megabyte_line_is_dead_lettered_and_the_next_line_is_billed() {
    const SIZE: usize = 10 * 1024 * 1024;
    let head = "{\"object\":\"whatsapp_business_account\",\"padding\":\"";
    let tail = "\"}";
    let big = format!("{head}{}{tail}", "x".repeat(SIZE - head.len() - tail.len()));
    assert_eq!(big.len(), SIZE);
    let mut lines = good_lines();
    // After the `sent` of wamid.good.out1, right before the delivery that opens its
    // conversation.
    lines.insert(2, big);
    let b = replay_lines(&lines, NO_CONFIG);
    assert_dead(
        &b,
        &lines,
        vec![line_err(3, &["exceeds max_payload_bytes", "10485760"])],
    );
    assert!(
        b.records.iter().any(|r| r["opening_message_id"] == "wamid.good.out1"),
        "the line after the huge one is billed"
    );
    assert_same_records(&b, &good_lines(), NO_CONFIG);
}

#[test]
fn message_era_delivery_of_unknown_kind_is_dead_lettered_not_billed() {
    let mut lines = good_lines();
    // Last in the file, so its timestamp cannot make the good events late. No send log,
    // no pricing object, no ad referral: rule 2 of docs/billing-rules.md §5 needs the kind.
    lines.push(status("16505550301", "wamid.era2025", "delivered", PMP_DAY));
    let b = replay_lines(&lines, NO_CONFIG);
    assert_dead(
        &b,
        &lines,
        vec![engine_err(
            lines.len() as u64,
            &["unknown message category", "pmp-2025-07"],
            "wamid.era2025",
        )],
    );
    assert!(!b.records.iter().any(|r| r["message_id"] == "wamid.era2025"));
    assert_same_records(&b, &good_lines(), NO_CONFIG);
}

#[test]
fn timestamps_out_of_range_or_not_unix_seconds_are_dead_lettered() {
    let with_ts = |i: usize, ts: Value| {
        set_field(
            &status(
                &format!("1650555040{i}"),
                &format!("wamid.ts.{i}"),
                "delivered",
                T0 + 10,
            ),
            S0_PTR,
            "timestamp",
            ts,
        )
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!("-1"), "out of range"),
        (json!("1646092800000"), "out of range"), // milliseconds, year 54000
        (json!("99999999999999999999"), "not Unix seconds"),
        (json!("1646092800.5"), "not Unix seconds"),
        (json!(""), "not Unix seconds"),
        (json!("yesterday"), "not Unix seconds"),
    ];
    let bad: Vec<String> = cases
        .iter()
        .enumerate()
        .map(|(i, (ts, _))| with_ts(i, ts.clone()))
        .collect();
    check_bad_lines(&bad, |at| {
        at.iter()
            .zip(&cases)
            .zip(&bad)
            .map(|((&l, (_, reason)), line)| event_err(l, S0, &["timestamp", reason], item(line, S0_PTR)))
            .collect()
    });
}

#[test]
fn blank_lines_and_crlf_are_skipped_and_line_numbers_stay_right() {
    let good = good_lines();
    let mut lines = vec![
        good[0].clone(),
        String::new(),
        "   \t ".to_string(),
        format!("{}\r", good[1]),
    ];
    lines.push("not json".to_string()); // line 5
    lines.extend(good[2..].iter().map(|l| format!("{l}\r")));
    let b = replay_lines(&lines, NO_CONFIG);
    assert_dead(&b, &lines, vec![line_err(5, &["not valid JSON"])]);
    assert_same_records(&b, &good, NO_CONFIG);
}

#[test]
fn dead_letters_name_the_right_input_and_line_across_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = dir.path().join("a.jsonl");
    let second = dir.path().join("b.jsonl");
    let good = good_lines();
    std::fs::write(&a, good.join("\n") + "\n").expect("write a");
    let era = status("16505550302", "wamid.era.b", "delivered", PMP_DAY);
    let b_lines = vec![
        status("16505550303", "wamid.b.1", "delivered", T0 + 5 * H),
        "not json".to_string(),
        era,
    ];
    std::fs::write(&second, b_lines.join("\n") + "\n").expect("write b");
    let inputs = [a.display().to_string(), second.display().to_string()];
    let b = replay_files(&inputs, NO_CONFIG, dir.path());
    assert_dead(
        &b,
        &b_lines,
        vec![
            line_err(2, &["not valid JSON"]).input("b.jsonl"),
            engine_err(3, &["unknown message category"], "wamid.era.b").input("b.jsonl"),
        ],
    );
    let mut reference = good.clone();
    reference.push(b_lines[0].clone());
    assert_same_records(&b, &reference, NO_CONFIG);
}

// ---------------------------------------------------------------------------------------
// On-Premises
// ---------------------------------------------------------------------------------------

fn on_premises_lines() -> (Vec<String>, Vec<String>) {
    let cloud = vec![
        inbound_to("1", "2", "16505550401", "wamid.op.in", T0 + 5 * H, None),
        status_to("1", "2", "16505550401", "wamid.op.out1", "sent", T0 + 5 * H + 10),
        status_to("1", "2", "16505550401", "wamid.op.out1", "delivered", T0 + 5 * H + 11),
        status_to("1", "2", "16505550402", "wamid.op.out2", "sent", T0 + 5 * H + 20),
        status_to("1", "2", "16505550402", "wamid.op.out2", "delivered", T0 + 5 * H + 21),
    ];
    let op = cloud.iter().map(|l| on_premises(l)).collect();
    (op, cloud)
}

#[test]
fn on_premises_payload_without_config_is_dead_lettered() {
    let (op, _) = on_premises_lines();
    let b = check_bad_lines(&op, |at| {
        at.iter()
            .map(|&l| line_err(l, &["On-Premises", "[on_premises]"]))
            .collect()
    });
    assert!(!b.records.iter().any(|r| r["waba_id"] == "1"));
}

#[test]
fn on_premises_payload_with_config_is_billed() {
    let (op, cloud) = on_premises_lines();
    let bad_st = remove_field(
        &status_to("1", "2", "16505550403", "wamid.op.bad", "delivered", T0 + 5 * H + 30),
        S0_PTR,
        "recipient_id",
    );
    let bad_op = on_premises(&bad_st);
    let mut lines = good_lines();
    lines.extend(op);
    lines.push(bad_op.clone());
    let b = replay_lines(&lines, ON_PREMISES_CONFIG);
    assert_dead(
        &b,
        &lines,
        vec![event_err(
            lines.len() as u64,
            "statuses[0]",
            &["recipient_id"],
            item(&bad_op, "/statuses/0"),
        )
        .ids("1", Some("2"))],
    );
    // Billed exactly as the same events in Cloud API payloads for WABA 1 / number 2.
    let mut reference = good_lines();
    reference.extend(cloud);
    assert_same_records(&b, &reference, ON_PREMISES_CONFIG);
    let op_records: Vec<&Value> = b.records.iter().filter(|r| r["waba_id"] == "1").collect();
    assert_eq!(op_records.len(), 2, "{:#?}", b.records);
    assert!(op_records.iter().all(|r| r["phone_number_id"] == "2"));
}

// ---------------------------------------------------------------------------------------
// Invalid UTF-8
// ---------------------------------------------------------------------------------------

/// Writes `lines` (raw bytes) as one file and replays it.
fn replay_bytes(lines: &[Vec<u8>]) -> (Billed, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    let mut bytes = Vec::new();
    for l in lines {
        bytes.extend_from_slice(l);
        bytes.push(b'\n');
    }
    std::fs::write(&input, bytes).expect("write input");
    let b = replay_files(&[input.display().to_string()], NO_CONFIG, dir.path());
    (b, dir)
}

#[test]
fn invalid_utf8_garbage_line_is_dead_lettered() {
    let mut lines: Vec<Vec<u8>> = good_lines().into_iter().map(String::into_bytes).collect();
    let garbage = b"\xff\xfe\x00garbage \xc3\x28 \xed\xa0\x80".to_vec();
    lines.insert(1, garbage.clone());
    let (b, _dir) = replay_bytes(&lines);
    let as_text: Vec<String> = lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    assert_dead(
        &b,
        &as_text,
        vec![line_err(2, &[]).original(Orig::Contains("garbage".into()))],
    );
    assert_same_records(&b, &good_lines(), NO_CONFIG);
}

/// A payload that is JSON except for invalid UTF-8 inside a string is not valid JSON
/// (RFC 8259 §8.1): it must be dead-lettered, not billed with its bytes silently
/// replaced by U+FFFD.
#[test]
fn invalid_utf8_inside_an_otherwise_valid_payload_is_dead_lettered() {
    let line = status("16505550501", "wamid.utf8", "delivered", T0 + 10);
    assert!(line.contains("CONVERSATION_ID"));
    let raw = line.replacen("CONVERSATION_ID", "CONVERSATION_\u{1}", 1).into_bytes();
    let raw: Vec<u8> = raw.into_iter().map(|c| if c == 1 { 0xff } else { c }).collect();
    assert!(std::str::from_utf8(&raw).is_err());
    let mut lines: Vec<Vec<u8>> = good_lines().into_iter().map(String::into_bytes).collect();
    lines.insert(1, raw.clone());
    let (b, _dir) = replay_bytes(&lines);
    let billed: Vec<&Value> = b
        .records
        .iter()
        .filter(|r| r["opening_message_id"] == "wamid.utf8")
        .collect();
    assert!(
        billed.is_empty(),
        "a payload with invalid UTF-8 was billed (bytes replaced by U+FFFD): {billed:#?}"
    );
    let as_text: Vec<String> = lines.iter().map(|l| String::from_utf8_lossy(l).into_owned()).collect();
    assert_dead(
        &b,
        &as_text,
        vec![line_err(2, &["UTF-8"]).original(Orig::Contains("wamid.utf8".into()))],
    );
    assert_same_records(&b, &good_lines(), NO_CONFIG);
}

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

fn wabill(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wabill"))
        .args(args)
        .output()
        .expect("run wabill")
}

fn read_json_lines(p: &Path) -> Vec<Value> {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn cli_replay_with_bad_lines_exits_zero() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = vec![
        "not json".to_string(),
        "{}".to_string(),
        remove_field(
            &status("16505550601", "wamid.cli", "delivered", T0 + 10),
            S0_PTR,
            "timestamp",
        ),
    ];
    let (lines, at) = interleave(&bad);
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").expect("write");
    let (out, dl) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let o = wabill(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--dead-letter",
        dl.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(
        o.status.success(),
        "exit {:?}, stderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
    let records = read_json_lines(&out);
    assert_eq!(records.len(), 3, "{records:#?}");
    let dead = read_json_lines(&dl);
    assert_eq!(dead.len(), 3, "{}", show(&dead));
    let mut dead_lines: Vec<u64> = dead.iter().map(|d| d["line"].as_u64().expect("line")).collect();
    dead_lines.sort();
    assert_eq!(dead_lines, at);
    for d in &dead {
        assert_eq!(d["input"].as_str(), input.to_str());
        assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()));
        assert!(d["original"].is_string());
    }
    assert_eq!(dead.iter().filter(|d| d["path"] == S0).count(), 1);
}

#[test]
fn cli_replay_of_a_missing_input_fails_naming_the_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (out, dl) = (dir.path().join("out.jsonl"), dir.path().join("dead.jsonl"));
    let missing = "/nonexistent-wabill-input/in.jsonl";
    let o = wabill(&[
        "replay",
        "--input",
        missing,
        "--output",
        out.to_str().unwrap(),
        "--dead-letter",
        dl.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!o.status.success(), "a missing input is an I/O error");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(missing), "stderr names the path: {stderr}");
}

#[test]
fn cli_replay_to_an_unwritable_output_fails() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, good_lines().join("\n") + "\n").expect("write");
    let dl = dir.path().join("dead.jsonl");
    let bad_out = "/nonexistent-dir/out.jsonl";
    let o = wabill(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        bad_out,
        "--dead-letter",
        dl.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(!o.status.success(), "an unwritable output is an I/O error");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(bad_out), "stderr names the path: {stderr}");

    let out = dir.path().join("out.jsonl");
    let bad_dl = "/nonexistent-dir/dead.jsonl";
    let o = wabill(&[
        "replay",
        "--input",
        input.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--dead-letter",
        bad_dl,
        "--quiet",
    ]);
    assert!(!o.status.success(), "an unwritable dead-letter file is an I/O error");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains(bad_dl), "stderr names the path: {stderr}");
}

// ---------------------------------------------------------------------------------------
// Property tests: no line panics the normaliser, and none vanishes without a trace.
// ---------------------------------------------------------------------------------------

/// Messages and statuses where the normaliser looks for them (changes of other fields are
/// ignored by design).
fn items_to_bill(v: &Value) -> usize {
    let len = |x: &Value| x.as_array().map_or(0, Vec::len);
    let Some(o) = v.as_object() else { return 0 };
    match o.get("entry") {
        Some(e) if !e.is_null() => e
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|en| en["changes"].as_array().cloned().unwrap_or_default())
            .filter(|c| c["field"].as_str().is_none_or(|f| f == "messages"))
            .map(|c| len(&c["value"]["messages"]) + len(&c["value"]["statuses"]))
            .sum(),
        _ => len(&v["messages"]) + len(&v["statuses"]),
    }
}

/// One non-blank line either fails as a whole (one dead letter), or yields events and/or
/// per-event dead letters; it may yield nothing only when it holds nothing to bill.
fn check_line(line: &str) -> Result<(), TestCaseError> {
    if line.trim().is_empty() {
        return Ok(());
    }
    let mut n = Normaliser::new(None, 4 << 20);
    let (mut events, mut bad) = (Vec::new(), Vec::new());
    match n.normalise(line, &mut events, &mut bad) {
        Err(e) => {
            prop_assert!(!e.to_string().is_empty());
            prop_assert!(events.is_empty(), "a rejected payload yields no events");
        }
        Ok(stats) => {
            for b in &bad {
                prop_assert!(!b.reason.is_empty() && !b.path.is_empty(), "{b:?}");
            }
            if events.is_empty() && bad.is_empty() {
                let items = serde_json::from_str::<Value>(line)
                    .map(|v| items_to_bill(&v))
                    .unwrap_or(usize::MAX);
                prop_assert_eq!(
                    items as u64,
                    stats.ignored_messages,
                    "line produced neither events nor dead letters: {:?}",
                    line
                );
            }
        }
    }
    Ok(())
}

fn leaf_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        prop::sample::select(vec![
            -1i64,
            0,
            1,
            T0,
            253_402_300_799,
            253_402_300_800,
            i64::MAX,
            i64::MIN
        ])
        .prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        prop::sample::select(vec![
            "",
            " ",
            "sent",
            "delivered",
            "read",
            "failed",
            "deleted",
            "system",
            "ad",
            "messages",
            "whatsapp_business_account",
            "12ab",
            "999123456",
            "80012345678",
            "4412",
            "+16505551234",
            "1646092800",
            " 1646092800 ",
            "-5",
            "1e9",
        ])
        .prop_map(Value::from),
        "\\+?[0-9]{0,30}".prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a", null])),
        Just(json!({"id": "x", "status": "sent"})),
    ]
}

/// All JSON pointers in `v` (excluding the root).
fn pointers(v: &Value, base: String, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                let p = format!("{base}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{base}/{i}");
                out.push(p.clone());
                pointers(c, p, out);
            }
        }
        _ => {}
    }
}

fn templates() -> Vec<String> {
    let batch = {
        let st = |u: &str, id: &str, s: &str, ts: i64| item(&status(u, id, s, ts), S0_PTR);
        let msg = item(&inbound(BR, "wamid.t.in", T0), M0_PTR);
        edit(&status(USER, "wamid.t.a", "sent", T0), |v| {
            let val = at(v, "/entry/0/changes/0/value");
            val["statuses"] = json!([
                st(USER, "wamid.t.a", "sent", T0),
                st(UK, "wamid.t.b", "delivered", T0 + 1)
            ]);
            val["messages"] = json!([msg]);
        })
    };
    vec![
        status(USER, "wamid.t.s", "delivered", T0),
        inbound_ad(UK, "wamid.t.i", T0),
        batch,
        on_premises(&status(USER, "wamid.t.op", "sent", T0)),
    ]
}

/// A real payload with a few fields removed or replaced by other JSON, maybe truncated.
fn mutated_webhook() -> impl Strategy<Value = String> {
    let mutation = (any::<prop::sample::Index>(), any::<bool>(), leaf_value());
    (
        0..4usize,
        prop::collection::vec(mutation, 0..5),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    )
        .prop_map(|(t, muts, cut)| {
            let mut v: Value = serde_json::from_str(&templates()[t]).expect("template");
            for (idx, delete, leaf) in muts {
                let mut ptrs = Vec::new();
                pointers(&v, String::new(), &mut ptrs);
                if ptrs.is_empty() {
                    break;
                }
                let p = idx.get(&ptrs).clone();
                if delete {
                    let (parent, last) = p.rsplit_once('/').expect("pointer");
                    match v.pointer_mut(parent) {
                        Some(Value::Object(o)) => {
                            o.remove(&last.replace("~1", "/").replace("~0", "~"));
                        }
                        Some(Value::Array(a)) => {
                            if let Ok(i) = last.parse::<usize>() {
                                if i < a.len() {
                                    a.remove(i);
                                }
                            }
                        }
                        _ => {}
                    }
                } else if let Some(slot) = v.pointer_mut(&p) {
                    *slot = leaf;
                }
            }
            let s = v.to_string();
            match cut {
                Some(i) => {
                    let mut at = i.index(s.len());
                    while !s.is_char_boundary(at) {
                        at -= 1;
                    }
                    s[..at].to_string()
                }
                None => s,
            }
        })
}

proptest! {
    // PROPTEST_CASES raises the count for a longer fuzzing run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn prop_arbitrary_bytes_never_panic_and_never_vanish(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        check_line(&String::from_utf8_lossy(&bytes))?;
    }

    #[test]
    fn prop_jsonish_strings_never_panic_and_never_vanish(s in "[\\[\\]{}\":,0-9a-z_. \\\\-]{0,96}") {
        check_line(&s)?;
    }

    #[test]
    fn prop_mutated_webhooks_never_panic_and_never_vanish(line in mutated_webhook()) {
        check_line(&line)?;
    }

    #[test]
    fn prop_any_digit_string_as_a_number_never_panics(number in "\\+?[0-9]{0,40}") {
        let st = status(&number, "wamid.p.num", "delivered", T0);
        let inb = inbound(&number, "wamid.p.in", T0);
        for line in [st, inb] {
            let mut n = Normaliser::new(None, 4 << 20);
            let (mut events, mut bad) = (Vec::new(), Vec::new());
            let r = n.normalise(&line, &mut events, &mut bad);
            prop_assert!(r.is_ok(), "{:?}", r.err());
            prop_assert_eq!(events.len() + bad.len(), 1, "one event or one dead letter for {:?}", number);
        }
    }
}

/// A conversation the rate card cannot price is a ledger dead letter that names the line
/// of the delivery that opened it (it used to say position 0), with the card's reason, and
/// takes no free tier; the rest of the file is billed as without it.
#[test]
fn unpriceable_conversation_names_the_line_of_its_delivery() {
    // 2022-01-15: before the sample card's first rows (2022-02-01); billed as cbp-2022
    // (docs/billing-rules.md §2), which the card cannot price.
    let jan = 1_642_204_800;
    let mut lines = vec![
        status("16505550901", "wamid.jan", "sent", jan),
        status("16505550901", "wamid.jan", "delivered", jan + 1),
    ];
    lines.extend(good_lines());
    let b = replay_lines(&lines, NO_CONFIG);
    assert_dead(
        &b,
        &lines,
        vec![engine_err(
            2,
            &["cannot price", "no rate card row", "2022-01-15"],
            "wamid.jan",
        )],
    );
    assert_same_records(&b, &good_lines(), NO_CONFIG);
}
