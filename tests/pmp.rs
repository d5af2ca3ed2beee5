//! The per-message eras (`pmp-2025-07`, `pmp-2026-10`) of docs/billing-rules.md §5,
//! replayed as real payloads — Meta's Cloud API webhooks plus the BSP's send-log records —
//! through `wabill replay` with a RocksDB store.
//!
//! Every expectation is derived by hand from the rules and the bundled sample card
//! (`data/rates/sample-usd.csv`), never copied from wabill's output. Rates used:
//! - "North America" (the test users +1 650 …), 2025-07-01 row: marketing 0.0184, utility
//!   0.0103, authentication 0.0093, marketing_lite 0.0166 (90 % of marketing, rounded), no
//!   service rate (service is never charged in `pmp-2025-07`). 2026-10-01 row: the same, and
//!   service 0.0103 (= utility, Meta's rule from 2026-10-01).
//! - "India", 2025-07-01 row: authentication 0.0042, authentication_international 0.0280.
//! - Singapore (+65): "Rest of Asia Pacific" until 2026-06-30 (2025-07-01 row, marketing
//!   0.0738), its own market "Singapore" from 2026-07-01 (2026-07-01 row, marketing 0.0760).
//!
//! Tests that are not about volume tiers configure none, so the card's rate applies and
//! `tier` is null; the tier tests write their own small bands.

mod common;
use common::*;

use serde_json::{json, Value};

/// 2025-07-01T00:00:00Z: `pmp-2025-07` starts here in UTC.
const PMP2025: i64 = 1_751_328_000;
/// 2025-08-04T00:00:00Z, a Monday of `pmp-2025-07`.
const AUG4: i64 = 1_754_265_600;
const AUG10: i64 = 1_754_784_000;
const AUG20: i64 = 1_755_648_000;
/// 2025-09-01T00:00:00Z.
const SEP1: i64 = 1_756_684_800;
/// 2026-06-30T00:00:00Z and 2026-07-01T00:00:00Z (Singapore becomes its own market).
const JUN30_2026: i64 = 1_782_777_600;
const JUL1_2026: i64 = 1_782_864_000;
/// 2026-10-05T00:00:00Z, a Monday of `pmp-2026-10`.
const OCT5_2026: i64 = 1_791_158_400;
/// 2026-10-31T00:00:00Z.
const OCT31_2026: i64 = 1_793_404_800;
const M: i64 = 60;

const PNID2: &str = "106540352242999";
const INDIA: &str = "919876543210";
const SINGAPORE: &str = "6591234567";

/// A status with no `pricing` object: the message's kind comes from the send log alone.
fn bare_status(waba: &str, pnid: &str, user: &str, id: &str, status: &str, ts: i64) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": pnid},
            "statuses": [{"id": id, "status": status, "timestamp": ts.to_string(), "recipient_id": user}]
        }}]}]
    })
    .to_string()
}

/// A send-log record; `category: None` is a non-template message.
fn send_log(waba: &str, pnid: &str, user: &str, id: &str, ts: i64, category: Option<&str>) -> String {
    let template = match category {
        None => Value::Null,
        Some(c) => json!({"name": "a_template", "language": "en_US", "category": c}),
    };
    json!({
        "object": "send_log", "message_id": id, "waba_id": waba, "phone_number_id": pnid,
        "to": user, "timestamp": ts.to_string(), "template": template
    })
    .to_string()
}

/// A business message logged and sent at `ts`, delivered at `ts + 1` (D).
fn msg_on(waba: &str, pnid: &str, user: &str, id: &str, ts: i64, category: Option<&str>) -> Vec<String> {
    vec![
        send_log(waba, pnid, user, id, ts, category),
        bare_status(waba, pnid, user, id, "sent", ts),
        bare_status(waba, pnid, user, id, "delivered", ts + 1),
    ]
}

fn msg(id: &str, ts: i64, category: Option<&str>) -> Vec<String> {
    msg_on(WABA, PNID, USER, id, ts, category)
}

/// A message whose kind nobody tells: no send log, statuses without `pricing`.
fn msg_unknown(id: &str, ts: i64) -> Vec<String> {
    vec![
        bare_status(WABA, PNID, USER, id, "sent", ts),
        bare_status(WABA, PNID, USER, id, "delivered", ts + 1),
    ]
}

fn run(lines: &[String], config: &str) -> common::Billed {
    let b = replay_lines(lines, config);
    assert!(b.dead.is_empty(), "unexpected dead letters: {:#?}", b.dead);
    b
}

/// The record of a delivered message, by wamid (exactly one).
fn charge<'a>(b: &'a common::Billed, message_id: &str) -> &'a Value {
    let found: Vec<&Value> = b.records.iter().filter(|r| r["message_id"] == message_id).collect();
    assert_eq!(found.len(), 1, "{message_id}: {found:#?}\nall: {:#?}", b.records);
    found[0]
}

/// Checks what a message charge (docs/billing-rules.md §10, SPEC §8.2) says.
fn check(r: &Value, era: &str, category: &str, pricing_type: &str, tier: Option<&str>, price: &str) {
    let ctx = format!("record {r}");
    assert_eq!(r["kind"], "message", "{ctx}");
    assert_eq!(r["era"], era, "{ctx}");
    assert_eq!(r["category"], category, "{ctx}");
    assert_eq!(r["pricing_type"], pricing_type, "{ctx}");
    assert_eq!(r["tier"], tier.map_or(Value::Null, |t| json!(t)), "{ctx}");
    assert_eq!(r["billable"], pricing_type == "regular", "{ctx}");
    assert_eq!(r["price"], price, "{ctx}");
    assert_eq!(r["billed_price"], price, "{ctx}: no markup configured");
}

fn no_record_for(b: &common::Billed, message_id: &str) {
    assert!(
        !b.records
            .iter()
            .any(|r| r["message_id"] == message_id || r["opening_message_id"] == message_id),
        "{message_id} must not be billed by itself: {:#?}",
        b.records
    );
}

// ---------------------------------------------------------------------------------------
// Rule 1: free entry point windows
// ---------------------------------------------------------------------------------------

#[test]
fn free_entry_point_window_frees_every_message_including_the_one_that_opens_it() {
    for (era, a) in [("pmp-2025-07", AUG4), ("pmp-2026-10", OCT5_2026)] {
        let mut l = vec![inbound_ad(USER, "wamid.ad", a)];
        // Delivered at a + 1 h + 1 s, < 24 h after the ad click: opens the 72 h window and
        // is itself free, whatever its category.
        l.extend(msg("wamid.open", a + H, Some("MARKETING")));
        // Inside the window (until a + 73 h + 1 s): free, even a utility template, and
        // even a message whose kind nobody tells (rule 1 does not need it).
        l.extend(msg("wamid.in", a + 50 * H, Some("UTILITY")));
        l.extend(msg_unknown("wamid.unknown", a + 60 * H));
        // After the window: a marketing template is charged at the card's rate.
        l.extend(msg("wamid.after", a + 74 * H, Some("MARKETING")));
        let b = run(&l, "");
        assert_eq!(b.records.len(), 4, "one charge per delivered message: {:#?}", b.records);
        for id in ["wamid.open", "wamid.in", "wamid.unknown"] {
            check(
                charge(&b, id),
                era,
                "referral_conversion",
                "free_entry_point",
                None,
                "0",
            );
        }
        check(charge(&b, "wamid.after"), era, "marketing", "regular", None, "0.0184");
    }
}

// ---------------------------------------------------------------------------------------
// Rules 2 and 3: the customer service window, per era
// ---------------------------------------------------------------------------------------

#[test]
fn pmp_2025_07_frees_non_templates_and_utility_inside_the_csw() {
    let b0 = AUG4;
    let mut l = vec![inbound(USER, "wamid.in", b0)]; // CSW until b0 + 24 h
    l.extend(msg("wamid.u1", b0 + 2 * H, Some("UTILITY"))); // inside: free
    l.extend(msg("wamid.s1", b0 + 3 * H, None)); // non-template: free
    l.extend(msg("wamid.ml", b0 + 4 * H, Some("MARKETING_LITE"))); // own column
    l.extend(msg("wamid.u2", b0 + 25 * H, Some("UTILITY"))); // CSW closed: charged
    l.extend(msg("wamid.s2", b0 + 26 * H, None)); // non-template: free in or out of the CSW
    let b = run(&l, "");
    assert_eq!(b.records.len(), 5);
    let era = "pmp-2025-07";
    check(
        charge(&b, "wamid.u1"),
        era,
        "utility",
        "free_customer_service",
        None,
        "0",
    );
    check(
        charge(&b, "wamid.s1"),
        era,
        "service",
        "free_customer_service",
        None,
        "0",
    );
    check(charge(&b, "wamid.ml"), era, "marketing_lite", "regular", None, "0.0166");
    check(charge(&b, "wamid.u2"), era, "utility", "regular", None, "0.0103");
    check(
        charge(&b, "wamid.s2"),
        era,
        "service",
        "free_customer_service",
        None,
        "0",
    );
}

#[test]
fn pmp_2026_10_charges_utility_inside_the_csw() {
    let c = OCT5_2026;
    let mut l = vec![inbound(USER, "wamid.in", c)];
    l.extend(msg("wamid.u1", c + 2 * H, Some("UTILITY"))); // inside the CSW: charged now
    l.extend(msg("wamid.s1", c + 3 * H, None)); // service: the number's free tier (1,000)
    l.extend(msg("wamid.ml", c + 4 * H, Some("marketing_lite")));
    l.extend(msg("wamid.a1", c + 5 * H, Some("AUTHENTICATION")));
    l.extend(msg("wamid.u2", c + 25 * H, Some("UTILITY")));
    let b = run(&l, "");
    assert_eq!(b.records.len(), 5);
    let era = "pmp-2026-10";
    check(charge(&b, "wamid.u1"), era, "utility", "regular", None, "0.0103");
    check(
        charge(&b, "wamid.s1"),
        era,
        "service",
        "free_customer_service",
        None,
        "0",
    );
    check(charge(&b, "wamid.ml"), era, "marketing_lite", "regular", None, "0.0166");
    check(charge(&b, "wamid.a1"), era, "authentication", "regular", None, "0.0093");
    check(charge(&b, "wamid.u2"), era, "utility", "regular", None, "0.0103");
}

#[test]
fn service_free_tier_per_business_number_runs_out_and_resets_in_the_wabas_month() {
    // Kolkata is UTC+5:30: 2026-10-31T18:00Z is 23:30 on October 31st there, 19:00Z is
    // 00:30 on November 1st.
    let config = format!("[[waba]]\nid = \"{WABA}\"\ntime_zone = \"Asia/Kolkata\"\nservice_free_tier = 2\n");
    let c = OCT5_2026;
    let mut l = vec![inbound(USER, "wamid.in", c)];
    l.extend(msg("wamid.s1", c + H, None)); // 1st of October on PNID: free
    l.extend(msg("wamid.s2", c + 2 * H, None)); // 2nd: free
    l.extend(msg("wamid.s3", c + 3 * H, None)); // 3rd: charged at the service rate
    l.extend(msg_on(WABA, PNID2, USER, "wamid.n2", c + 4 * H, None)); // the other number's 1st
    l.extend(msg("wamid.s4", OCT31_2026 + 18 * H, None)); // still October locally: 4th, charged
    l.extend(msg("wamid.s5", OCT31_2026 + 19 * H, None)); // November locally: 1st, free
    let b = run(&l, &config);
    let era = "pmp-2026-10";
    check(
        charge(&b, "wamid.s1"),
        era,
        "service",
        "free_customer_service",
        None,
        "0",
    );
    check(
        charge(&b, "wamid.s2"),
        era,
        "service",
        "free_customer_service",
        None,
        "0",
    );
    check(charge(&b, "wamid.s3"), era, "service", "regular", None, "0.0103");
    check(
        charge(&b, "wamid.n2"),
        era,
        "service",
        "free_customer_service",
        None,
        "0",
    );
    check(charge(&b, "wamid.s4"), era, "service", "regular", None, "0.0103");
    assert_eq!(charge(&b, "wamid.s4")["month"], "2026-10");
    check(
        charge(&b, "wamid.s5"),
        era,
        "service",
        "free_customer_service",
        None,
        "0",
    );
    assert_eq!(charge(&b, "wamid.s5")["month"], "2026-11");
    // The statement of October: PNID used its 2, PNID2 one of 2.
    let oct = b
        .report
        .statements
        .iter()
        .find(|s| s.month == "2026-10")
        .expect("an October statement");
    assert_eq!((oct.service_free[PNID].used, oct.service_free[PNID].limit), (2, 2));
    assert_eq!((oct.service_free[PNID2].used, oct.service_free[PNID2].limit), (1, 2));
}

// ---------------------------------------------------------------------------------------
// Era transition (SPEC §2)
// ---------------------------------------------------------------------------------------

#[test]
fn a_delivery_joining_a_conversation_open_across_2025_07_01_yields_no_charge() {
    // free_tier = 0 so the conversation's price shows.
    let config = format!("[[waba]]\nid = \"{WABA}\"\nfree_tier = 0\n");
    let mut l = Vec::new();
    // 2025-06-30T20:00:01Z: a marketing template opens a cbp-2024-11 MARKETING
    // conversation, open until 2025-07-01T20:00:01Z, priced at the 2023-06-01 row.
    l.extend(msg("wamid.m1", PMP2025 - 4 * H, Some("MARKETING")));
    // After midnight, another marketing template joins it: no charge of its own.
    l.extend(msg("wamid.m2", PMP2025 + H, Some("MARKETING")));
    // A utility template does not join a marketing conversation: pmp-2025-07 decides,
    // outside any CSW → charged.
    l.extend(msg("wamid.u", PMP2025 + 2 * H, Some("UTILITY")));
    // A free-form message joins any open conversation of its era: no charge.
    l.extend(msg("wamid.f", PMP2025 + 3 * H, None));
    // After the conversation expired, a marketing template is charged per message.
    l.extend(msg("wamid.m3", PMP2025 + 21 * H, Some("MARKETING")));
    let b = run(&l, &config);
    assert_eq!(b.records.len(), 3, "{:#?}", b.records);
    let conv = &b.records[0];
    assert_eq!(conv["kind"], "conversation");
    assert_eq!(conv["era"], "cbp-2024-11");
    assert_eq!(conv["origin"], "marketing");
    assert_eq!(conv["opened_at"], "2025-06-30T20:00:01Z");
    assert_eq!(conv["price"], "0.0184");
    no_record_for(&b, "wamid.m2");
    no_record_for(&b, "wamid.f");
    check(
        charge(&b, "wamid.u"),
        "pmp-2025-07",
        "utility",
        "regular",
        None,
        "0.0103",
    );
    check(
        charge(&b, "wamid.m3"),
        "pmp-2025-07",
        "marketing",
        "regular",
        None,
        "0.0184",
    );
}

// ---------------------------------------------------------------------------------------
// Rule 5: volume tiers (Meta's examples, reference §1)
// ---------------------------------------------------------------------------------------

/// Small bands so counts matter: North America utility 1–2 / 3–4 / 5+, India
/// authentication 1 / 2+, India authentication-international 1–2 / 3+.
const BANDS: &str = "effective_from,market,currency,category,from,to,rate
2025-07-01,North America,USD,utility,0,2,0.0100
2025-07-01,North America,USD,utility,3,4,0.0050
2025-07-01,North America,USD,utility,5,,0.0010
2025-07-01,India,USD,authentication,0,1,0.0040
2025-07-01,India,USD,authentication,2,,0.0030
2025-07-01,India,USD,authentication_international,0,2,0.0250
2025-07-01,India,USD,authentication_international,3,,0.0200
";

/// Replays with `BANDS` as the config's `tiers` and `wabas` as its `[[waba]]` tables.
fn run_tiered(lines: &[String], wabas: &str) -> common::Billed {
    let dir = tempfile::tempdir().expect("tempdir");
    let tiers = dir.path().join("tiers.csv");
    std::fs::write(&tiers, BANDS).expect("write tiers");
    let config = format!("tiers = {:?}\n{wabas}", tiers.display().to_string());
    run(lines, &config)
}

fn band(b: &common::Billed, id: &str) -> (String, String, String) {
    let r = charge(b, id);
    (
        r["tier"].as_str().unwrap_or("null").to_string(),
        r["price"].as_str().unwrap_or("").to_string(),
        r["month"].as_str().unwrap_or("").to_string(),
    )
}

fn b3(tier: &str, price: &str, month: &str) -> (String, String, String) {
    (tier.into(), price.into(), month.into())
}

#[test]
fn graduated_bands_and_only_charged_messages_count() {
    let a = AUG4;
    let mut l = Vec::new();
    l.extend(msg("wamid.1", a + H, Some("UTILITY"))); // charged, n = 1
    l.extend(msg("wamid.2", a + 2 * H, Some("UTILITY"))); // n = 2
    l.push(inbound(USER, "wamid.in", a + 2 * H + 30 * M)); // CSW until a + 26 h 30 min
    l.extend(msg("wamid.free", a + 3 * H, Some("UTILITY"))); // free in the CSW: not counted
    for (i, h) in [27, 28, 29, 30].into_iter().enumerate() {
        l.extend(msg(&format!("wamid.{}", i + 3), a + h * H, Some("UTILITY"))); // n = 3..6
    }
    let b = run_tiered(&l, "");
    check(
        charge(&b, "wamid.free"),
        "pmp-2025-07",
        "utility",
        "free_customer_service",
        None,
        "0",
    );
    let got: Vec<_> = (1..=6).map(|i| band(&b, &format!("wamid.{i}"))).collect();
    assert_eq!(
        got,
        vec![
            b3("0:2", "0.01", "2025-08"),
            b3("0:2", "0.01", "2025-08"),
            b3("3:4", "0.005", "2025-08"),
            b3("3:4", "0.005", "2025-08"),
            b3("5:MAX", "0.001", "2025-08"),
            b3("5:MAX", "0.001", "2025-08"),
        ]
    );
}

#[test]
fn two_wabas_of_one_portfolio_share_the_count_and_a_third_counts_alone() {
    let wabas = "[[waba]]\nid = \"111\"\nportfolio = \"P1\"\n[[waba]]\nid = \"222\"\nportfolio = \"P1\"\n[[waba]]\nid = \"333\"\n";
    let a = AUG4;
    let mut l = Vec::new();
    // (D, message id) order across the portfolio: 111, 222, 111, 222, then 111 → n = 1..5.
    l.extend(msg_on("111", "1110", USER, "wamid.a1", a + H, Some("UTILITY")));
    l.extend(msg_on("222", "2220", USER, "wamid.b1", a + 2 * H, Some("UTILITY")));
    l.extend(msg_on("111", "1110", USER, "wamid.a2", a + 3 * H, Some("UTILITY")));
    l.extend(msg_on("222", "2220", USER, "wamid.b2", a + 4 * H, Some("UTILITY")));
    l.extend(msg_on("333", "3330", USER, "wamid.c1", a + 5 * H, Some("UTILITY")));
    l.extend(msg_on("111", "1110", USER, "wamid.a3", a + 6 * H, Some("UTILITY")));
    let b = run_tiered(&l, wabas);
    let aug = "2025-08";
    assert_eq!(band(&b, "wamid.a1"), b3("0:2", "0.01", aug));
    assert_eq!(band(&b, "wamid.b1"), b3("0:2", "0.01", aug));
    assert_eq!(band(&b, "wamid.a2"), b3("3:4", "0.005", aug));
    assert_eq!(band(&b, "wamid.b2"), b3("3:4", "0.005", aug));
    assert_eq!(band(&b, "wamid.a3"), b3("5:MAX", "0.001", aug));
    // WABA 333 has no portfolio configured: its own id, its own count.
    assert_eq!(band(&b, "wamid.c1"), b3("0:2", "0.01", aug));
    assert_eq!(charge(&b, "wamid.b2")["portfolio"], "P1");
    assert_eq!(charge(&b, "wamid.c1")["portfolio"], "333");
}

#[test]
fn wabas_in_different_time_zones_count_toward_two_months_at_one_instant() {
    // Meta's Example 3: 222 is in Los Angeles (UTC-7 in summer), still in August while
    // 111 (UTC) is in September.
    let wabas = "[[waba]]\nid = \"111\"\nportfolio = \"P1\"\n[[waba]]\nid = \"222\"\nportfolio = \"P1\"\ntime_zone = \"America/Los_Angeles\"\n";
    let mut l = Vec::new();
    for (i, h) in [10, 11, 12].into_iter().enumerate() {
        l.extend(msg_on(
            "111",
            "1110",
            USER,
            &format!("wamid.aug.a{i}"),
            AUG20 + h * H,
            Some("UTILITY"),
        ));
    }
    // August n = 4.
    l.extend(msg_on(
        "222",
        "2220",
        USER,
        "wamid.aug.b",
        AUG20 + 5 * 24 * H,
        Some("UTILITY"),
    ));
    // 2025-09-01T02:00Z: September for 111 (n = 1 of September) …
    l.extend(msg_on(
        "111",
        "1110",
        USER,
        "wamid.sep.a1",
        SEP1 + 2 * H,
        Some("UTILITY"),
    ));
    // … while 19:30 on August 31st for 222: August n = 5.
    l.extend(msg_on(
        "222",
        "2220",
        USER,
        "wamid.aug.b2",
        SEP1 + 2 * H + 30 * M,
        Some("UTILITY"),
    ));
    // 01:00 on September 1st in Los Angeles: September n = 2.
    l.extend(msg_on(
        "222",
        "2220",
        USER,
        "wamid.sep.b1",
        SEP1 + 8 * H,
        Some("UTILITY"),
    ));
    // September n = 3.
    l.extend(msg_on(
        "111",
        "1110",
        USER,
        "wamid.sep.a2",
        SEP1 + 9 * H,
        Some("UTILITY"),
    ));
    let b = run_tiered(&l, wabas);
    assert_eq!(band(&b, "wamid.aug.b"), b3("3:4", "0.005", "2025-08"));
    assert_eq!(band(&b, "wamid.sep.a1"), b3("0:2", "0.01", "2025-09"));
    assert_eq!(band(&b, "wamid.aug.b2"), b3("5:MAX", "0.001", "2025-08"));
    assert_eq!(band(&b, "wamid.sep.b1"), b3("0:2", "0.01", "2025-09"));
    assert_eq!(band(&b, "wamid.sep.a2"), b3("3:4", "0.005", "2025-09"));
}

#[test]
fn authentication_international_continues_the_authentication_count() {
    // Meta's Example 2: authentication-international starts mid-month (2025-08-15) and
    // its messages keep accruing on the month's authentication count.
    let wabas = format!("[[waba]]\nid = \"{WABA}\"\nauth_international_from = \"2025-08-15\"\n");
    let mut l = Vec::new();
    l.extend(msg_on(
        WABA,
        PNID,
        INDIA,
        "wamid.a1",
        AUG10 + 10 * H,
        Some("AUTHENTICATION"),
    )); // n = 1
    l.extend(msg_on(
        WABA,
        PNID,
        INDIA,
        "wamid.a2",
        AUG10 + 11 * H,
        Some("AUTHENTICATION"),
    )); // n = 2
        // From the 15th: international (India is not excluded; the card has its rate), and
        // n = 3 on the same counter → the 3+ band of the international bands (a separate
        // count would have given n = 1 → 0:2 at 0.025).
    l.extend(msg_on(
        WABA,
        PNID,
        INDIA,
        "wamid.i1",
        AUG20 + 10 * H,
        Some("AUTHENTICATION"),
    ));
    l.extend(msg_on(
        WABA,
        PNID,
        INDIA,
        "wamid.i2",
        AUG20 + 11 * H,
        Some("authentication-international"),
    ));
    let b = run_tiered(&l, &wabas);
    let era = "pmp-2025-07";
    check(
        charge(&b, "wamid.a1"),
        era,
        "authentication",
        "regular",
        Some("0:1"),
        "0.004",
    );
    check(
        charge(&b, "wamid.a2"),
        era,
        "authentication",
        "regular",
        Some("2:MAX"),
        "0.003",
    );
    check(
        charge(&b, "wamid.i1"),
        era,
        "authentication_international",
        "regular",
        Some("3:MAX"),
        "0.02",
    );
    check(
        charge(&b, "wamid.i2"),
        era,
        "authentication_international",
        "regular",
        Some("3:MAX"),
        "0.02",
    );
}

// ---------------------------------------------------------------------------------------
// Markets by date, categories wabill does not bill
// ---------------------------------------------------------------------------------------

#[test]
fn a_singapore_number_changes_market_on_2026_07_01() {
    let mut l = Vec::new();
    l.extend(msg_on(
        WABA,
        PNID,
        SINGAPORE,
        "wamid.before",
        JUN30_2026 + 12 * H,
        Some("MARKETING"),
    ));
    l.extend(msg_on(
        WABA,
        PNID,
        SINGAPORE,
        "wamid.after",
        JUL1_2026 + 12 * H,
        Some("MARKETING"),
    ));
    let b = run(&l, "");
    let before = charge(&b, "wamid.before");
    let after = charge(&b, "wamid.after");
    assert_eq!(
        (before["country"].as_str(), before["market"].as_str()),
        (Some("SG"), Some("Rest of Asia Pacific"))
    );
    assert_eq!(before["price"], "0.0738");
    assert_eq!(
        (after["country"].as_str(), after["market"].as_str()),
        (Some("SG"), Some("Singapore"))
    );
    assert_eq!(after["price"], "0.076");
}

#[test]
fn categories_wabill_does_not_bill_are_dead_lettered_never_guessed() {
    let a = AUG4;
    let mut l = Vec::new();
    // A send log naming a group category: the record is a dead letter, and its delivery
    // (no other source of its kind) is one more: "unknown message category".
    l.extend(msg("wamid.group", a + H, Some("GROUP_MARKETING")));
    // Meta's pricing.category of a group message, no send log: unknown kind.
    let mut s = bare_status(WABA, PNID, USER, "wamid.meta", "delivered", a + 2 * H);
    s = s.replace(
        "\"recipient_id\"",
        "\"pricing\":{\"billable\":true,\"pricing_model\":\"PMP\",\"type\":\"regular\",\"category\":\"group_utility\"},\"recipient_id\"",
    );
    l.push(s);
    l.extend(msg("wamid.ok", a + 3 * H, Some("MARKETING")));
    let b = replay_lines(&l, "");
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    check(
        charge(&b, "wamid.ok"),
        "pmp-2025-07",
        "marketing",
        "regular",
        None,
        "0.0184",
    );
    let reasons: Vec<&str> = b.dead.iter().filter_map(|d| d["reason"].as_str()).collect();
    assert_eq!(reasons.len(), 3, "{reasons:#?}");
    assert!(
        reasons[0].contains("GROUP_MARKETING") && reasons[0].contains("not one wabill bills"),
        "{reasons:#?}"
    );
    assert!(
        reasons[1].contains("unknown message category") && reasons[1].contains("wamid.group"),
        "{reasons:#?}"
    );
    assert!(
        reasons[2].contains("unknown message category") && reasons[2].contains("wamid.meta"),
        "{reasons:#?}"
    );
}
