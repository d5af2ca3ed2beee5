//! The category eras (`cbp-2023`, `cbp-2024-11`) and the era transitions of docs/billing-rules.md §2,
//! replayed as real payloads — Meta's Cloud API webhooks plus the BSP's send-log records
//! (docs/billing-rules.md §6) — through `wabill replay` with a RocksDB store.
//!
//! Every expectation is derived by hand from docs/billing-rules.md §2/§4 and the bundled sample card
//! (`data/rates/sample-usd.csv`), never copied from wabill's output. Rates used:
//! - "North America" (the test users +1 650 …): 2022-02-01 row `business_initiated` 0.0147;
//!   2023-06-01 row marketing 0.0184, utility 0.0103, authentication 0.0093, no
//!   authentication_international, service 0.0088.
//! - "Indonesia": 2023-06-01 authentication 0.0208; 2024-06-01 authentication 0.0208,
//!   authentication_international 0.0300.
//! - "India": 2024-06-01 authentication 0.0042, authentication_international 0.0280.
//!
//! Unless a test is about the free tier, WABAs have `free_tier = 0`, so prices show.

mod common;
use common::*;

use serde_json::{json, Value};

/// 2023-07-03T00:00:00Z, a Monday of `cbp-2023`.
const J: i64 = 1_688_342_400;
/// 2023-06-01T00:00:00Z: `cbp-2023` starts here in UTC.
const CBP2023: i64 = 1_685_577_600;
/// 2024-11-01T00:00:00Z: `cbp-2024-11` starts here in UTC.
const CBP2024: i64 = 1_730_419_200;
const M: i64 = 60;
const D: i64 = 24 * H;

/// A send-log record (docs/billing-rules.md §6); `category: None` is a non-template message.
fn send_log_to(waba: &str, user: &str, id: &str, ts: i64, category: Option<&str>) -> String {
    let template = match category {
        None => Value::Null,
        Some(c) => json!({"name": "a_template", "language": "en_US", "category": c}),
    };
    json!({
        "object": "send_log", "message_id": id, "waba_id": waba, "phone_number_id": PNID,
        "to": user, "timestamp": ts.to_string(), "template": template
    })
    .to_string()
}

/// A status with Meta's `pricing` object carrying `category` (or no pricing at all).
fn priced_status(waba: &str, user: &str, id: &str, status: &str, ts: i64, category: Option<&str>) -> String {
    let mut s = json!({"id": id, "status": status, "timestamp": ts.to_string(), "recipient_id": user});
    if let Some(c) = category {
        s["conversation"] = json!({"id": "CONVERSATION_ID", "origin": {"type": c}});
        s["pricing"] = json!({"billable": true, "pricing_model": "CBP", "category": c});
    }
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": waba, "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PNID},
            "statuses": [s]
        }}]}]
    })
    .to_string()
}

/// How a test message tells wabill its kind.
#[derive(Clone, Copy)]
enum Source {
    /// A send-log record; statuses carry no pricing object.
    SendLog,
    /// No send log; Meta's `pricing.category` on `sent` and `delivered`.
    Pricing,
}

/// A business message of `category` (`None`: non-template) sent at `ts` and delivered at
/// `ts + 1`, its kind told by `source`. Meta's `pricing.category` of a non-template is
/// `service` unless `meta_category` says otherwise (under CBP Meta names the
/// conversation's category, docs/billing-rules.md §9).
fn message(
    waba: &str,
    user: &str,
    id: &str,
    ts: i64,
    category: Option<&str>,
    source: Source,
    meta_category: Option<&str>,
) -> Vec<String> {
    match source {
        Source::SendLog => vec![
            send_log_to(waba, user, id, ts, category),
            priced_status(waba, user, id, "sent", ts, None),
            priced_status(waba, user, id, "delivered", ts + 1, None),
        ],
        Source::Pricing => {
            let c = meta_category.or(category).unwrap_or("service").to_ascii_lowercase();
            vec![
                priced_status(waba, user, id, "sent", ts, Some(&c)),
                priced_status(waba, user, id, "delivered", ts + 1, Some(&c)),
            ]
        }
    }
}

fn waba_config(id: &str, free_tier: u32, extra: &str) -> String {
    format!("[[waba]]\nid = \"{id}\"\nfree_tier = {free_tier}\n{extra}\n")
}

fn run(lines: &[String], config: &str) -> Billed {
    let b = replay_lines(lines, config);
    assert!(b.dead.is_empty(), "unexpected dead letters: {:#?}", b.dead);
    b
}

/// Checks the fields a conversation record of docs/billing-rules.md §10 must carry.
#[allow(clippy::too_many_arguments)]
fn check(
    r: &Value,
    era: &str,
    origin: &str,
    opened_at: &str,
    expires_at: &str,
    billable: bool,
    free_tier: bool,
    price: &str,
) {
    let ctx = format!("record {r}");
    assert_eq!(r["kind"], "conversation", "{ctx}");
    assert_eq!(r["era"], era, "{ctx}");
    assert_eq!(r["origin"], origin, "{ctx}");
    assert_eq!(r["opened_at"], opened_at, "{ctx}");
    assert_eq!(r["expires_at"], expires_at, "{ctx}");
    assert_eq!(r["billable"], billable, "{ctx}");
    assert_eq!(r["free_tier"], free_tier, "{ctx}");
    assert_eq!(r["price"], price, "{ctx}");
    assert_eq!(r["billed_price"], price, "{ctx}: no markup configured");
}

fn worked_example(source: Source) -> Vec<String> {
    // docs/billing-rules.md §4, Meta's worked example, with H0 = J:
    let mut l = Vec::new();
    // H0: marketing template → MARKETING opens at its delivery (J + 1 s), until J + 24 h + 1 s.
    l.extend(message(WABA, USER, "wamid.h0", J, Some("MARKETING"), source, None));
    // H4: the user writes (CSW until H28).
    l.push(inbound(USER, "wamid.in.h4", J + 4 * H));
    // H5: free-form → joins MARKETING (Meta names the open conversation's category).
    l.extend(message(
        WABA,
        USER,
        "wamid.h5",
        J + 5 * H,
        None,
        source,
        Some("marketing"),
    ));
    // H25: free-form after MARKETING expired → SERVICE opens at H25 + 1 s.
    l.extend(message(WABA, USER, "wamid.h25", J + 25 * H, None, source, None));
    // H26: free-form → joins SERVICE.
    l.extend(message(WABA, USER, "wamid.h26", J + 26 * H, None, source, None));
    l
}

#[test]
fn metas_worked_example_with_the_send_log() {
    let b = run(&worked_example(Source::SendLog), &waba_config(WABA, 0, ""));
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    check(
        &b.records[0],
        "cbp-2023",
        "marketing",
        "2023-07-03T00:00:01Z",
        "2023-07-04T00:00:01Z",
        true,
        false,
        "0.0184",
    );
    assert_eq!(b.records[0]["opening_message_id"], "wamid.h0");
    check(
        &b.records[1],
        "cbp-2023",
        "service",
        "2023-07-04T01:00:01Z",
        "2023-07-05T01:00:01Z",
        true,
        false,
        "0.0088",
    );
    assert_eq!(b.records[1]["opening_message_id"], "wamid.h25");
    assert_eq!(b.report.windows.send_logs, 4);
}

#[test]
fn metas_worked_example_with_pricing_category_only() {
    // The same conversations when the kind comes only from Meta's pricing.category.
    let b = run(&worked_example(Source::Pricing), &waba_config(WABA, 0, ""));
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    check(
        &b.records[0],
        "cbp-2023",
        "marketing",
        "2023-07-03T00:00:01Z",
        "2023-07-04T00:00:01Z",
        true,
        false,
        "0.0184",
    );
    check(
        &b.records[1],
        "cbp-2023",
        "service",
        "2023-07-04T01:00:01Z",
        "2023-07-05T01:00:01Z",
        true,
        false,
        "0.0088",
    );
    assert_eq!(b.report.windows.send_logs, 0);
}

#[test]
fn open_service_plus_utility_template_opens_utility_too() {
    // docs/billing-rules.md §4: "an open SERVICE conversation plus a utility template → UTILITY opens too".
    let mut l = vec![inbound(USER, "wamid.in.1", J)];
    l.extend(message(
        WABA,
        USER,
        "wamid.ff1",
        J + 10 * M,
        None,
        Source::SendLog,
        None,
    )); // SERVICE at J+10m+1s
    l.extend(message(
        WABA,
        USER,
        "wamid.ut1",
        J + H,
        Some("UTILITY"),
        Source::SendLog,
        None,
    )); // UTILITY at J+1h+1s
    l.extend(message(
        WABA,
        USER,
        "wamid.ut2",
        J + 2 * H,
        Some("utility"),
        Source::SendLog,
        None,
    )); // joins UTILITY
    l.extend(message(WABA, USER, "wamid.ff2", J + 3 * H, None, Source::SendLog, None)); // joins an open one
                                                                                        // The send log may arrive after the statuses (arrival order), within the lateness.
    let late_log = send_log_to(WABA, USER, "wamid.mk1", J + 4 * H, Some("Marketing"));
    l.push(priced_status(WABA, USER, "wamid.mk1", "sent", J + 4 * H, None));
    l.push(priced_status(WABA, USER, "wamid.mk1", "delivered", J + 4 * H + 1, None));
    l.push(late_log); // MARKETING at J+4h+1s
    let b = run(&l, &waba_config(WABA, 0, ""));
    assert_eq!(b.origins(), ["service", "utility", "marketing"], "{:#?}", b.records);
    check(
        &b.records[0],
        "cbp-2023",
        "service",
        "2023-07-03T00:10:01Z",
        "2023-07-04T00:10:01Z",
        true,
        false,
        "0.0088",
    );
    check(
        &b.records[1],
        "cbp-2023",
        "utility",
        "2023-07-03T01:00:01Z",
        "2023-07-04T01:00:01Z",
        true,
        false,
        "0.0103",
    );
    check(
        &b.records[2],
        "cbp-2023",
        "marketing",
        "2023-07-03T04:00:01Z",
        "2023-07-04T04:00:01Z",
        true,
        false,
        "0.0184",
    );
    // Three categories open at once: three different ids.
    let ids: std::collections::BTreeSet<&str> = b
        .records
        .iter()
        .map(|r| r["conversation_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 3);
}

#[test]
fn a_2022_conversation_open_across_2023_06_01_absorbs_templates_after_midnight() {
    // docs/billing-rules.md §2 transitions: opened 2023-05-31T20:00:01Z under cbp-2022 (no CSW: business-
    // initiated, 2022 row 0.0147), open until 2023-06-01T20:00:01Z.
    let mut l = message(
        WABA,
        USER,
        "wamid.a",
        CBP2023 - 4 * H,
        Some("MARKETING"),
        Source::SendLog,
        None,
    );
    // 01:00 and 19:00 on June 1st: a marketing and a utility template join it (any message
    // joins a cbp-2022 conversation), so neither opens anything.
    l.extend(message(
        WABA,
        USER,
        "wamid.b",
        CBP2023 + H,
        Some("MARKETING"),
        Source::SendLog,
        None,
    ));
    l.extend(message(
        WABA,
        USER,
        "wamid.c",
        CBP2023 + 19 * H,
        Some("UTILITY"),
        Source::Pricing,
        None,
    ));
    // A delivery of unknown kind also joins it (kind not needed, docs/billing-rules.md §9).
    l.push(priced_status(
        WABA,
        USER,
        "wamid.u",
        "delivered",
        CBP2023 + 19 * H + 30,
        None,
    ));
    // 21:00, after it expired: the category era decides → MARKETING.
    l.extend(message(
        WABA,
        USER,
        "wamid.d",
        CBP2023 + 21 * H,
        Some("MARKETING"),
        Source::SendLog,
        None,
    ));
    let b = run(&l, &waba_config(WABA, 0, ""));
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    check(
        &b.records[0],
        "cbp-2022",
        "business_initiated",
        "2023-05-31T20:00:01Z",
        "2023-06-01T20:00:01Z",
        true,
        false,
        "0.0147",
    );
    assert_eq!(b.records[0]["month"], "2023-05");
    check(
        &b.records[1],
        "cbp-2023",
        "marketing",
        "2023-06-01T21:00:01Z",
        "2023-06-02T21:00:01Z",
        true,
        false,
        "0.0184",
    );
    assert_eq!(b.records[1]["month"], "2023-06");
}

#[test]
fn a_service_conversation_open_across_2024_11_01_runs_out_under_cbp_2023() {
    let mut l = vec![inbound(USER, "wamid.in.1", CBP2024 - 2 * H)];
    // 2024-10-31T22:30:01Z: SERVICE under cbp-2023, charged (free tier off): 0.0088.
    l.extend(message(
        WABA,
        USER,
        "wamid.s1",
        CBP2024 - 90 * M,
        None,
        Source::SendLog,
        None,
    ));
    // 01:00 on Nov 1st: a free-form joins it under cbp-2023 rules: no record.
    l.extend(message(
        WABA,
        USER,
        "wamid.s2",
        CBP2024 + H,
        None,
        Source::SendLog,
        None,
    ));
    // 02:00: a utility template does not join a service conversation (2023 rules), so
    // cbp-2024-11 decides: UTILITY at 0.0103.
    l.extend(message(
        WABA,
        USER,
        "wamid.u1",
        CBP2024 + 2 * H,
        Some("UTILITY"),
        Source::SendLog,
        None,
    ));
    // Nov 2nd 03:00, after both expired (service 22:30:01, utility Nov 2nd 02:00:01) and
    // inside a new CSW: SERVICE under cbp-2024-11 — free, not billable, no free tier.
    l.push(inbound(USER, "wamid.in.2", CBP2024 + D + 2 * H + 50 * M));
    l.extend(message(
        WABA,
        USER,
        "wamid.s3",
        CBP2024 + D + 3 * H,
        None,
        Source::SendLog,
        None,
    ));
    let b = run(&l, &waba_config(WABA, 0, ""));
    assert_eq!(b.records.len(), 3, "{:#?}", b.records);
    check(
        &b.records[0],
        "cbp-2023",
        "service",
        "2024-10-31T22:30:01Z",
        "2024-11-01T22:30:01Z",
        true,
        false,
        "0.0088",
    );
    check(
        &b.records[1],
        "cbp-2024-11",
        "utility",
        "2024-11-01T02:00:01Z",
        "2024-11-02T02:00:01Z",
        true,
        false,
        "0.0103",
    );
    check(
        &b.records[2],
        "cbp-2024-11",
        "service",
        "2024-11-02T03:00:01Z",
        "2024-11-03T03:00:01Z",
        false,
        false,
        "0",
    );
}

#[test]
fn wabas_in_three_time_zones_cross_2023_06_01_at_their_own_midnight() {
    // Three WABAs: UTC, São Paulo (UTC-3 in 2023) and Kolkata (UTC+5:30); six users, one
    // marketing template each, so no two deliveries share a conversation.
    let (a, b_, c) = ("111111111111111", "222222222222222", "333333333333333");
    let config = format!(
        "{}{}{}",
        waba_config(a, 0, "time_zone = \"UTC\""),
        waba_config(b_, 0, "time_zone = \"America/Sao_Paulo\""),
        waba_config(c, 0, "time_zone = \"Asia/Kolkata\"")
    );
    let users = [
        "16505551230",
        "16505551231",
        "16505551232",
        "16505551233",
        "16505551235",
        "16505551236",
    ];
    let mut l = Vec::new();
    // Delivered 2023-06-01T01:00:01Z: local 01:00 (A, June), 22:00 May 31st (B), 06:30 (C).
    for (i, w) in [a, b_, c].iter().enumerate() {
        l.extend(message(
            w,
            users[i],
            &format!("wamid.x{i}"),
            CBP2023 + H,
            Some("MARKETING"),
            Source::SendLog,
            None,
        ));
    }
    // Delivered 2023-05-31T20:00:01Z: local 20:00 (A), 17:00 (B), 01:30 June 1st (C).
    for (i, w) in [a, b_, c].iter().enumerate() {
        l.extend(message(
            w,
            users[i + 3],
            &format!("wamid.y{i}"),
            CBP2023 - 4 * H,
            Some("MARKETING"),
            Source::SendLog,
            None,
        ));
    }
    let b = run(&l, &config);
    assert_eq!(b.records.len(), 6, "{:#?}", b.records);
    let era_of = |user: &str| -> (String, String, String) {
        let r = b.records.iter().find(|r| r["user"] == user).expect("a record per user");
        (
            r["era"].as_str().unwrap().into(),
            r["origin"].as_str().unwrap().into(),
            r["month"].as_str().unwrap().into(),
        )
    };
    let t = |e: &str, o: &str, m: &str| (e.to_string(), o.to_string(), m.to_string());
    assert_eq!(era_of(users[0]), t("cbp-2023", "marketing", "2023-06"));
    assert_eq!(era_of(users[1]), t("cbp-2022", "business_initiated", "2023-05"));
    assert_eq!(era_of(users[2]), t("cbp-2023", "marketing", "2023-06"));
    assert_eq!(era_of(users[3]), t("cbp-2022", "business_initiated", "2023-05"));
    assert_eq!(era_of(users[4]), t("cbp-2022", "business_initiated", "2023-05"));
    assert_eq!(era_of(users[5]), t("cbp-2023", "marketing", "2023-06"));
}

/// Three users write and get a free-form answer (three SERVICE conversations, in this
/// order), one gets a marketing and one a utility template, from `t0` on.
fn mixed_month(t0: i64) -> Vec<String> {
    let mut l = Vec::new();
    l.extend(message(
        WABA,
        "16505551230",
        "wamid.mk",
        t0,
        Some("MARKETING"),
        Source::SendLog,
        None,
    ));
    for (i, u) in ["16505551231", "16505551232", "16505551233"].iter().enumerate() {
        let t = t0 + (i as i64 + 1) * H;
        l.push(inbound(u, &format!("wamid.in.{i}"), t));
        l.extend(message(
            WABA,
            u,
            &format!("wamid.ff.{i}"),
            t + M,
            None,
            Source::SendLog,
            None,
        ));
    }
    l.extend(message(
        WABA,
        "16505551235",
        "wamid.ut",
        t0 + 5 * H,
        Some("UTILITY"),
        Source::SendLog,
        None,
    ));
    l
}

#[test]
fn cbp_2023_free_tier_counts_only_service_conversations() {
    // free_tier = 2: the first two SERVICE conversations of the month (by opened_at) are
    // free (free_tier, price 0, still billable); the third is charged; marketing and
    // utility never take free tier, even though they opened first.
    let b = run(&mixed_month(J), &waba_config(WABA, 2, ""));
    assert_eq!(b.origins(), ["marketing", "service", "service", "service", "utility"]);
    check(
        &b.records[0],
        "cbp-2023",
        "marketing",
        "2023-07-03T00:00:01Z",
        "2023-07-04T00:00:01Z",
        true,
        false,
        "0.0184",
    );
    check(
        &b.records[1],
        "cbp-2023",
        "service",
        "2023-07-03T01:01:01Z",
        "2023-07-04T01:01:01Z",
        true,
        true,
        "0",
    );
    check(
        &b.records[2],
        "cbp-2023",
        "service",
        "2023-07-03T02:01:01Z",
        "2023-07-04T02:01:01Z",
        true,
        true,
        "0",
    );
    check(
        &b.records[3],
        "cbp-2023",
        "service",
        "2023-07-03T03:01:01Z",
        "2023-07-04T03:01:01Z",
        true,
        false,
        "0.0088",
    );
    check(
        &b.records[4],
        "cbp-2023",
        "utility",
        "2023-07-03T05:00:01Z",
        "2023-07-04T05:00:01Z",
        true,
        false,
        "0.0103",
    );
    let st = &b.report.statements[0];
    assert_eq!((st.free_tier_used, st.free_tier_limit), (2, 2));
    let text = wabill::billing::statement::render(&b.report.statements);
    assert!(text.contains("free tier used") && text.contains("service"), "{text}");
}

#[test]
fn cbp_2024_11_service_is_free_without_free_tier() {
    // 2024-11-04: every service conversation costs 0, billable = false, free_tier = false;
    // the free tier is not used at all (docs/billing-rules.md §4 rule 4).
    let k = CBP2024 + 3 * D;
    let b = run(&mixed_month(k), &waba_config(WABA, 2, ""));
    assert_eq!(b.origins(), ["marketing", "service", "service", "service", "utility"]);
    for r in &b.records[1..4] {
        assert_eq!(
            (r["billable"].as_bool(), r["free_tier"].as_bool(), r["price"].as_str()),
            (Some(false), Some(false), Some("0")),
            "{r}"
        );
        assert_eq!(r["era"], "cbp-2024-11");
    }
    assert_eq!(b.records[0]["price"], "0.0184");
    assert_eq!(b.records[4]["price"], "0.0103");
    assert_eq!(b.report.statements[0].free_tier_used, 0);
    // The statement says there is no free tier rather than "0 of 2 used".
    let text = wabill::billing::statement::render(&b.report.statements);
    assert!(text.contains("cbp-2024-11"), "{text}");
    assert!(
        text.contains("none in this era") && !text.contains("free tier used"),
        "{text}"
    );
}

#[test]
fn authentication_international() {
    // docs/billing-rules.md §4 rule 3. An Indian WABA (exclude IN), international from 2024-06-01 (UTC).
    let config = waba_config(
        WABA,
        0,
        "auth_international_from = \"2024-06-01\"\nauth_international_exclude = [\"IN\"]",
    );
    let june10 = 1_717_977_600; // 2024-06-10T00:00:00Z
    let (id_before, id_user, in_user) = ("6281234567801", "6281234567802", "919876543210");
    let mut l = Vec::new();
    // Before the start date: authentication (Indonesia 2023-06-01 row, 0.0208).
    l.extend(message(
        WABA,
        id_before,
        "wamid.a0",
        june10 - 10 * D,
        Some("AUTHENTICATION"),
        Source::SendLog,
        None,
    ));
    // Eligible: Indonesian user, on/after the date, card has the rate → 0.0300.
    l.extend(message(
        WABA,
        id_user,
        "wamid.a1",
        june10,
        Some("AUTHENTICATION"),
        Source::SendLog,
        None,
    ));
    // The same scope: a second authentication template joins it.
    l.extend(message(
        WABA,
        id_user,
        "wamid.a2",
        june10 + H,
        Some("authentication-international"),
        Source::Pricing,
        None,
    ));
    // Excluded country: India → authentication at India's 2024-06-01 rate, 0.0042.
    l.extend(message(
        WABA,
        in_user,
        "wamid.a3",
        june10,
        Some("AUTHENTICATION"),
        Source::SendLog,
        None,
    ));
    // Market without the rate (North America): authentication, 0.0093, whatever the spelling.
    l.extend(message(
        WABA,
        USER,
        "wamid.a4",
        june10,
        Some("AUTHENTICATION_INTERNATIONAL"),
        Source::SendLog,
        None,
    ));
    let b = run(&l, &config);
    assert_eq!(b.records.len(), 4, "{:#?}", b.records);
    let by_user = |u: &str| b.records.iter().find(|r| r["user"] == u).expect("record");
    let r = by_user(id_before);
    assert_eq!(
        (r["origin"].as_str(), r["price"].as_str(), r["market"].as_str()),
        (Some("authentication"), Some("0.0208"), Some("Indonesia"))
    );
    let r = by_user(id_user);
    assert_eq!(
        (r["origin"].as_str(), r["price"].as_str()),
        (Some("authentication_international"), Some("0.03"))
    );
    let r = by_user(in_user);
    assert_eq!(
        (r["origin"].as_str(), r["price"].as_str(), r["country"].as_str()),
        (Some("authentication"), Some("0.0042"), Some("IN"))
    );
    let r = by_user(USER);
    assert_eq!(
        (r["origin"].as_str(), r["price"].as_str()),
        (Some("authentication"), Some("0.0093"))
    );
}

#[test]
fn unknown_kind_is_one_dead_letter_never_a_guess() {
    // cbp-2023: no send log, no pricing object → the delivery needs the kind: one dead
    // letter (the delivered status), the later read status yields nothing, no record.
    let l = vec![
        priced_status(WABA, USER, "wamid.q", "sent", J, None),
        priced_status(WABA, USER, "wamid.q", "delivered", J + 1, None),
        priced_status(WABA, USER, "wamid.q", "read", J + 60, None),
        // A free entry point needs no kind: an ad referral, then an answer of unknown kind.
        inbound_to(WABA, PNID, "16505551230", "wamid.ad", J + H, Some("ad")),
        priced_status(WABA, "16505551230", "wamid.r", "delivered", J + H + 60, None),
    ];
    let b = replay_lines(&l, &waba_config(WABA, 0, ""));
    assert_eq!(b.dead.len(), 1, "{:#?}", b.dead);
    let reason = b.dead[0]["reason"].as_str().unwrap();
    assert!(reason.starts_with("unknown message category"), "{reason}");
    assert!(b.dead[0]["original"].as_str().unwrap().contains("wamid.q"));
    assert_eq!(b.dead[0]["line"], 2, "the delivered status's line");
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    check(
        &b.records[0],
        "cbp-2023",
        "free_entry_point",
        "2023-07-03T01:01:00Z",
        "2023-07-06T01:01:00Z",
        false,
        false,
        "0",
    );
    assert_eq!(b.report.windows.unknown_kind, 1);
}

#[test]
fn the_send_log_decides_when_it_and_metas_category_disagree() {
    // Send log: UTILITY; Meta's pricing.category on sent and delivered: marketing. The send
    // log wins (UTILITY, 0.0103) and the disagreement is counted once for the message.
    let mut l = vec![send_log_to(WABA, USER, "wamid.z", J, Some("UTILITY"))];
    l.push(priced_status(WABA, USER, "wamid.z", "sent", J, Some("marketing")));
    l.push(priced_status(
        WABA,
        USER,
        "wamid.z",
        "delivered",
        J + 1,
        Some("marketing"),
    ));
    // And the other way round in time: Meta's category first, the send log later in event
    // time but before the delivery: the send log still decides.
    l.push(priced_status(
        WABA,
        "16505551230",
        "wamid.w",
        "sent",
        J,
        Some("marketing"),
    ));
    l.push(send_log_to(
        WABA,
        "16505551230",
        "wamid.w",
        J + 5,
        Some("AUTHENTICATION"),
    ));
    l.push(priced_status(
        WABA,
        "16505551230",
        "wamid.w",
        "delivered",
        J + 10,
        Some("marketing"),
    ));
    let b = run(&l, &waba_config(WABA, 0, ""));
    assert_eq!(b.origins(), ["utility", "authentication"], "{:#?}", b.records);
    assert_eq!(b.records[0]["price"], "0.0103");
    assert_eq!(b.records[1]["price"], "0.0093");
    assert_eq!(b.report.windows.kind_disagreements, 2);
}

#[test]
fn malformed_send_log_records_are_dead_letters() {
    let l = vec![
        // Missing template key (null would mean non-template; absent is not a guess).
        json!({"object":"send_log","message_id":"wamid.1","waba_id":WABA,"phone_number_id":PNID,"to":USER,"timestamp":J.to_string()}).to_string(),
        // A category wabill does not bill.
        send_log_to(WABA, USER, "wamid.2", J, Some("GROUP_MARKETING")),
        // An unparseable number.
        send_log_to(WABA, "999", "wamid.3", J, Some("UTILITY")),
        // A good one, still billed.
        send_log_to(WABA, USER, "wamid.4", J, Some("UTILITY")),
        priced_status(WABA, USER, "wamid.4", "delivered", J + 1, None),
    ];
    let b = replay_lines(&l, &waba_config(WABA, 0, ""));
    assert_eq!(b.dead.len(), 3, "{:#?}", b.dead);
    for (d, needle) in b.dead.iter().zip(["template", "GROUP_MARKETING", "999"]) {
        let reason = d["reason"].as_str().unwrap();
        assert!(reason.starts_with("send-log record"), "{reason}");
        assert!(
            reason.contains(needle) || d["original"].as_str().unwrap().contains(needle),
            "{d}"
        );
    }
    assert_eq!(b.origins(), ["utility"]);
}
