//! The worked examples of the two seed documents the project started from (two BSP articles, quoted below),
//! the Zoko example of a BSP billing page, and the docs/billing-rules.md §9 decisions
//! where the seeds are wrong, each replayed as real Cloud API webhook payloads through
//! `wabill replay` (RocksDB store).
//!
//! Every expectation is derived from docs/billing-rules.md §3 and the bundled sample card
//! (`data/rates/sample-usd.csv`): the test user 16505551234 is in market "North America",
//! whose 2022-02-01 row charges `user_initiated` 0.0088 and `business_initiated` 0.0147 USD.
//! Unless a test is about the free tier, the WABA is configured with `free_tier = 0` so every
//! user/business-initiated conversation is charged and its price is visible.
//!
//! Time: `T0` is Tuesday 2022-03-01T00:00:00Z (`cbp-2022`). The kit's `reply(user, id, ts)`
//! sends at `ts` and reports `delivered` at `ts + 1`, so a conversation opened by it starts
//! one second after the send (docs/billing-rules.md §1: it opens at delivery).

mod common;
use common::*;

use serde_json::Value;

const M: i64 = 60;
const D: i64 = 24 * H;

/// Rates of the sample card's 2022-02-01 "North America" row.
const UIC_RATE: &str = "0.0088";
const BIC_RATE: &str = "0.0147";

/// A second business number of the same WABA.
const PNID2: &str = "106540352242923";

fn config(free_tier: u32, time_zone: Option<&str>) -> String {
    let mut c = format!("[[waba]]\nid = \"{WABA}\"\nfree_tier = {free_tier}\n");
    if let Some(tz) = time_zone {
        c.push_str(&format!("time_zone = \"{tz}\"\n"));
    }
    c
}

/// Replays with the free tier off, so prices show; no input here may be a dead letter.
fn run(lines: &[String]) -> Billed {
    run_with(lines, &config(0, None))
}

fn run_with(lines: &[String], config_toml: &str) -> Billed {
    let b = replay_lines(lines, config_toml);
    assert!(b.dead.is_empty(), "unexpected dead letters: {:#?}", b.dead);
    b
}

/// A business message whose `sent` and `delivered` statuses have the given timestamps.
fn sent_delivered(id: &str, sent: i64, delivered: i64) -> Vec<String> {
    vec![status(USER, id, "sent", sent), status(USER, id, "delivered", delivered)]
}

/// Checks one output record against docs/billing-rules.md §10 for the test user and WABA.
#[allow(clippy::too_many_arguments)]
fn assert_record(
    r: &Value,
    origin: &str,
    opened_at: &str,
    expires_at: &str,
    free_tier: bool,
    billable: bool,
    price: &str,
) {
    let ctx = format!("record {r}");
    assert_eq!(r["origin"], origin, "{ctx}");
    assert_eq!(r["opened_at"], opened_at, "{ctx}");
    assert_eq!(r["expires_at"], expires_at, "{ctx}");
    assert_eq!(r["free_tier"], free_tier, "{ctx}");
    assert_eq!(r["billable"], billable, "{ctx}");
    assert_eq!(r["price"], price, "{ctx}");
    // No markup is configured: billed_price = price × (1 + 0/100).
    assert_eq!(r["billed_price"], price, "{ctx}");
    assert_eq!(r["era"], "cbp-2022", "{ctx}");
    assert_eq!(r["waba_id"], WABA, "{ctx}");
    assert_eq!(r["user"], USER, "{ctx}");
    assert_eq!(r["country"], "US", "{ctx}");
    assert_eq!(r["market"], "North America", "{ctx}");
    assert_eq!(r["currency"], "USD", "{ctx}");
    assert_eq!(r["late"], false, "{ctx}");
}

/// A charged user-initiated conversation (free tier off).
fn assert_uic(r: &Value, opened_at: &str, expires_at: &str) {
    assert_record(r, "user_initiated", opened_at, expires_at, false, true, UIC_RATE);
}

/// A charged business-initiated conversation (free tier off).
fn assert_bic(r: &Value, opened_at: &str, expires_at: &str) {
    assert_record(r, "business_initiated", opened_at, expires_at, false, true, BIC_RATE);
}

/// A free entry point conversation: never charged, not billable, not free tier.
fn assert_fep(r: &Value, opened_at: &str, expires_at: &str) {
    assert_record(r, "free_entry_point", opened_at, expires_at, false, false, "0");
}

// ---------------------------------------------------------------------------------------
// Seed 000 (Chat API)
// ---------------------------------------------------------------------------------------

// Seed 000, "Case one - the client initiates a dialog": "The client writes to you about his
// order. Until you answer him, this dialog is not considered open. As soon as the bot or
// manager responds to the client with a template message, the dialog will be considered open
// and funds will be debited from you, as for the dialog that the client initiated."
#[test]
fn seed000_case_one_client_writes_first_and_the_answer_opens_a_user_initiated_dialog() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];

    // Not answered yet: no conversation (docs/billing-rules.md §3 rule 2: only a delivery opens one).
    let b = run(&lines);
    assert_eq!(b.records.len(), 0, "{:#?}", b.records);

    // Answered at 09:20 (delivered 09:20:01), inside the CSW: user_initiated, charged.
    lines.extend(reply(USER, "wamid.out.1", T0 + 9 * H + 20 * M));
    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T09:20:01Z", "2022-03-02T09:20:01Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.1");
    assert_eq!(b.records[0]["month"], "2022-03");
}

// Seed 000, "Case two - Business initiates a dialogue": "if you send a template message and it
// gets the status "Delivered", then this opens a dialogue with the client. This dialogue will
// be considered a dialogue initiated by the business and will be taxed according to the
// appropriate pricing."
#[test]
fn seed000_case_two_delivered_template_opens_a_business_initiated_dialog() {
    // Only "sent" so far: nothing opens.
    let mut lines = vec![status(USER, "wamid.out.1", "sent", T0 + 8 * H)];
    let b = run(&lines);
    assert_eq!(b.records.len(), 0, "{:#?}", b.records);

    // "Delivered" 30 s later opens a business-initiated conversation at the delivery.
    lines.push(status(USER, "wamid.out.1", "delivered", T0 + 8 * H + 30));
    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-01T08:00:30Z", "2022-03-02T08:00:30Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.1");
}

// Seed 000, "The third case is with going beyond the 24-hour window": "the client wrote to you
// first, you answered and the task was closed. If after 24 hours from the moment of the first
// message, you write to the client again, then this will be considered a new dialogue
// initiated by the business."
#[test]
fn seed000_case_three_business_writes_again_after_24h_opens_business_initiated() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 9 * H + 5 * M)); // delivered 09:05:01
                                                                  // Next day 12:00: 27 h after the client's message (CSW closed at 03-02 09:00) and after the
                                                                  // first conversation expired (03-02 09:05:01).
    lines.extend(reply(USER, "wamid.out.2", T0 + D + 12 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T09:05:01Z", "2022-03-02T09:05:01Z");
    assert_bic(&b.records[1], "2022-03-02T12:00:01Z", "2022-03-03T12:00:01Z");
    assert_eq!(b.records[1]["opening_message_id"], "wamid.out.2");
}

// Seed 000, "The third case ...": "If the client writes to you first, then with a new dialog
// initiated by the client."
#[test]
fn seed000_case_three_client_writes_first_after_24h_opens_user_initiated() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 9 * H + 5 * M)); // delivered 09:05:01
                                                                  // Next day, after the first conversation expired, the client writes first ...
    lines.push(inbound(USER, "wamid.in.2", T0 + D + 12 * H));
    // ... and the business answers ten minutes later.
    lines.extend(reply(USER, "wamid.out.2", T0 + D + 12 * H + 10 * M));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T09:05:01Z", "2022-03-02T09:05:01Z");
    assert_uic(&b.records[1], "2022-03-02T12:10:01Z", "2022-03-03T12:10:01Z");
    assert_eq!(b.records[1]["opening_message_id"], "wamid.out.2");
}

// ---------------------------------------------------------------------------------------
// Seed 002 (user-initiated situations)
// ---------------------------------------------------------------------------------------

// Seed 002, user-initiated "Situation 1: Concerning a plan upgrade": "The customer sends a
// message asking when the plan update will take effect. The company responds and opens the
// 24-hour session. The support message exchanges follow within the same window. What does the
// charge look like: A conversation initiated by the user, provided that the resolution occurs
// within 24 hours."
#[test]
fn seed002_user_situation_1_exchange_inside_one_window_is_one_user_initiated_conversation() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 10 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 10 * H + 2 * M)); // opens at 10:02:01
    lines.push(inbound(USER, "wamid.in.2", T0 + 10 * H + 5 * M));
    lines.extend(reply(USER, "wamid.out.2", T0 + 10 * H + 6 * M));
    lines.push(inbound(USER, "wamid.in.3", T0 + 14 * H));
    lines.extend(reply(USER, "wamid.out.3", T0 + 14 * H + M));
    // Resolution the next morning, still before the conversation's expiry at 03-02 10:02:01.
    lines.extend(reply(USER, "wamid.out.4", T0 + D + 9 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T10:02:01Z", "2022-03-02T10:02:01Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.1");
}

// Seed 002, user-initiated "Situation 2: delivery problem that exceeds 24 hours": "The customer
// asks about tracking the order. The store responds and logs in. The window expires without a
// complete solution. The following day, the store responds to the customer again after the
// 24-hour period. What does the charge look like: 2 conversations initiated by the user,
// because the resumption occurred after the expiration of the first session."
//
// Under docs/billing-rules.md §3 rule 4 the second conversation is user-initiated only if the customer service
// window is still open at the second delivery, i.e. the customer wrote again within the last
// 24 h (here: a follow-up the same evening). Without it the resumption is situation 3.
#[test]
fn seed002_user_situation_2_resumption_after_expiry_is_a_second_user_initiated_conversation() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 9 * H + 30 * M)); // 09:30:01 .. 03-02 09:30:01
                                                                   // "Still nothing arrived": CSW now runs to 03-02 20:00.
    lines.push(inbound(USER, "wamid.in.2", T0 + 20 * H));
    // The next day at 11:00, after the first conversation expired, inside the CSW.
    lines.extend(reply(USER, "wamid.out.2", T0 + D + 11 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T09:30:01Z", "2022-03-02T09:30:01Z");
    assert_uic(&b.records[1], "2022-03-02T11:00:01Z", "2022-03-03T11:00:01Z");
}

// Seed 002, user-initiated "Situation 3: customer activates the company and the chatbot
// responds": "The customer requests order status. The chatbot responds and opens the session
// initiated by the user. The conversation expires. The bot sends a message later, without a
// new recent message from the user. What does the charge look like: a conversation initiated
// by the user in the first window and, upon proactive resumption after expiration, the new
// session tends to enter as a conversation initiated by the company."
#[test]
fn seed002_user_situation_3_bot_resumes_without_new_user_message_business_initiated() {
    // The bot answers in the same second as the question (docs/billing-rules.md §3: at equal timestamps the
    // inbound message is applied first); delivered one second later.
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 9 * H));
    // Two days later, no new user message: business-initiated.
    lines.extend(reply(USER, "wamid.out.2", T0 + 2 * D + 9 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T09:00:01Z", "2022-03-02T09:00:01Z");
    assert_bic(&b.records[1], "2022-03-03T09:00:01Z", "2022-03-04T09:00:01Z");
}

// ---------------------------------------------------------------------------------------
// Seed 002 (company-initiated situations)
// ---------------------------------------------------------------------------------------

// Seed 002, company-initiated "Situation 1: Sequence of notifications within 24 hours": "The
// company sends an order confirmation notification. A few hours later, it sends payment
// confirmation. Both messages are delivered within the same 24-hour window. What does the
// charge look like: A conversation initiated by the company, because the submissions
// occurred within the same session."
#[test]
fn seed002_company_situation_1_two_notifications_in_one_window_are_one_business_initiated() {
    let mut lines = reply(USER, "wamid.order", T0 + 8 * H);
    lines.extend(reply(USER, "wamid.payment", T0 + 13 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-01T08:00:01Z", "2022-03-02T08:00:01Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.order");
}

// Seed 002, company-initiated "Situation 2: message that requires a response to release next
// steps": "The company sends a message asking the customer for authorization to continue. The
// customer responds after the window expires. The company responds to the customer's new
// message. What does the charge look like: A conversation initiated by the company in the
// first window; the subsequent response from the customer can open a conversation initiated
// by the user when the company replies within the new session."
#[test]
fn seed002_company_situation_2_late_customer_answer_then_reply_opens_user_initiated() {
    let mut lines = reply(USER, "wamid.auth", T0 + 8 * H); // 08:00:01 .. 03-02 08:00:01
                                                           // The customer answers the next day at 10:00, after the window expired.
    lines.push(inbound(USER, "wamid.in.1", T0 + D + 10 * H));
    lines.extend(reply(USER, "wamid.out.1", T0 + D + 10 * H + 15 * M));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-01T08:00:01Z", "2022-03-02T08:00:01Z");
    assert_uic(&b.records[1], "2022-03-02T10:15:01Z", "2022-03-03T10:15:01Z");
    assert_eq!(b.records[1]["opening_message_id"], "wamid.out.1");
}

// ---------------------------------------------------------------------------------------
// Reference §1.3: the Zoko worked example
// ---------------------------------------------------------------------------------------

// Reference §1.3 (Zoko, 2022): "The user writes Monday 11:00. The business replies Tuesday
// 05:00, so one UIC opens at 05:00. A business message Tuesday 15:00 costs nothing. The user
// writes Wednesday 14:00, after the UIC has expired. The next business reply opens a new UIC."
#[test]
fn reference_zoko_example_monday_to_wednesday() {
    let monday = T0 + 6 * D; // 2022-03-07 is a Monday (T0, 2022-03-01, is a Tuesday)
    let tuesday = monday + D;
    let wednesday = monday + 2 * D;
    let mut lines = vec![inbound(USER, "wamid.in.mon", monday + 11 * H)];
    lines.extend(reply(USER, "wamid.out.tue05", tuesday + 5 * H));
    lines.extend(reply(USER, "wamid.out.tue15", tuesday + 15 * H));
    lines.push(inbound(USER, "wamid.in.wed", wednesday + 14 * H));
    lines.extend(reply(USER, "wamid.out.wed", wednesday + 14 * H + 10 * M));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    // Tue 05:00 is 18 h after Mon 11:00: inside the CSW.
    assert_uic(&b.records[0], "2022-03-08T05:00:01Z", "2022-03-09T05:00:01Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.tue05");
    // Tue 15:00 joined the first UIC (no record). Wed 14:10 is after its expiry, inside the
    // CSW opened by Wed 14:00.
    assert_uic(&b.records[1], "2022-03-09T14:10:01Z", "2022-03-10T14:10:01Z");
    assert_eq!(b.records[1]["opening_message_id"], "wamid.out.wed");
}

// ---------------------------------------------------------------------------------------
// docs/billing-rules.md §9: decisions where the seeds (or BSP pages) are wrong
// ---------------------------------------------------------------------------------------

// Seed 000 says "24 hours are fixed and begin to expire from the moment the client sends the
// first message". docs/billing-rules.md §9: "The 24 h of a conversation start at that delivery, not at the
// user's first message", and rule 4: "A later message never extends it."
#[test]
fn spec_conversation_24h_start_at_delivery_not_at_the_users_message() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];
    // Sent 10:00, delivered 10:07: the conversation starts at 10:07:00.
    lines.extend(sent_delivered("wamid.out.1", T0 + 10 * H, T0 + 10 * H + 7 * M));
    // 03-02 09:30 is 24.5 h after the user's message (seed 000 would have ended the dialog at
    // 09:00) but before 10:07 (the expiry counted from delivery): joins, costs nothing.
    lines.extend(sent_delivered(
        "wamid.out.2",
        T0 + D + 9 * H + 30 * M,
        T0 + D + 9 * H + 30 * M + 1,
    ));
    // Delivered exactly at the expiry (half-open window): a new conversation. The CSW ended at
    // 03-02 09:00, so it is business-initiated.
    lines.extend(sent_delivered(
        "wamid.out.3",
        T0 + D + 10 * H + 6 * M,
        T0 + D + 10 * H + 7 * M,
    ));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T10:07:00Z", "2022-03-02T10:07:00Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.1");
    assert_bic(&b.records[1], "2022-03-02T10:07:00Z", "2022-03-03T10:07:00Z");
    assert_eq!(b.records[1]["opening_message_id"], "wamid.out.3");
}

// docs/billing-rules.md §9: "Conversation opens on delivery, not on send" and "An undelivered message opens
// nothing"; docs/billing-rules.md §1: "`sent` alone never opens anything".
#[test]
fn spec_message_sent_but_never_delivered_opens_nothing() {
    let mut lines = vec![status(USER, "wamid.out.1", "sent", T0 + 8 * H)];
    let b = run(&lines);
    assert_eq!(b.records.len(), 0, "{:#?}", b.records);

    // A later message that is delivered opens the conversation at its own delivery, not at the
    // earlier send.
    lines.extend(reply(USER, "wamid.out.2", T0 + 12 * H));
    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-01T12:00:01Z", "2022-03-02T12:00:01Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.2");
}

// docs/billing-rules.md §1: "`failed` never opens anything"; docs/billing-rules.md §9: "An undelivered message opens nothing
// (one BSP claims failed free-form opens a conversation; Meta does not say so)". 360dialog's
// claim: the failed message "opens a business-initiated conversation ... If the user replies
// within 24 hours of the failed delivery, this conversation will be charged as
// business-initiated".
#[test]
fn spec_failed_status_opens_nothing() {
    let failed = vec![
        status(USER, "wamid.out.1", "sent", T0 + 8 * H),
        status(USER, "wamid.out.1", "failed", T0 + 8 * H + 3),
    ];
    let b = run(&failed);
    assert_eq!(b.records.len(), 0, "{:#?}", b.records);

    // The user then writes within 24 h of the failure and the business answers: that answer
    // opens a user-initiated conversation (no business-initiated one was opened by the failure).
    let mut lines = failed;
    lines.push(inbound(USER, "wamid.in.1", T0 + 10 * H));
    lines.extend(reply(USER, "wamid.out.2", T0 + 11 * H));
    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T11:00:01Z", "2022-03-02T11:00:01Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.2");
}

// docs/billing-rules.md §1, delivery instant D: "a `read` status with no `delivered` implies delivery at the
// `read` timestamp; the earliest of them wins."
#[test]
fn spec_read_without_delivered_opens_at_the_read_time() {
    let read_only = vec![
        status(USER, "wamid.out.1", "sent", T0 + 8 * H),
        status(USER, "wamid.out.1", "read", T0 + 9 * H),
    ];
    let b = run(&read_only);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-01T09:00:00Z", "2022-03-02T09:00:00Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.1");

    // With both, the earlier `delivered` is D, and the `read` opens nothing more.
    let both = vec![
        status(USER, "wamid.out.1", "sent", T0 + 8 * H),
        status(USER, "wamid.out.1", "delivered", T0 + 8 * H + 1),
        status(USER, "wamid.out.1", "read", T0 + 9 * H),
    ];
    let b = run(&both);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-01T08:00:01Z", "2022-03-02T08:00:01Z");
}

// ---------------------------------------------------------------------------------------
// Free entry point (reference §3, docs/billing-rules.md §3 rule 4)
// ---------------------------------------------------------------------------------------

// Seed 000: "all incoming messages that were initiated by the "Call to Action" Click to
// WhatsApp buttons from your advertising companies are free". Reference §3 (Meta): an FEP
// conversation opens if the customer messages you via a CTWA ad and "you respond within 24
// hours"; docs/billing-rules.md §9: "Free entry point window 24 h until 2023-02-28".
#[test]
fn fep_ad_referral_answered_within_24h_is_free_and_lasts_24h_before_march_2023() {
    let mut lines = vec![inbound_ad(USER, "wamid.in.ad", T0 + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 10 * H)); // 10:00:01 .. 03-02 10:00:01
                                                           // 03-02 09:30: 24.5 h after the ad message (CSW closed), still inside the FEP: joins it.
    lines.extend(reply(USER, "wamid.out.2", T0 + D + 9 * H + 30 * M));

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_fep(&b.records[0], "2022-03-01T10:00:01Z", "2022-03-02T10:00:01Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.out.1");
}

// Reference §3 (Meta): "The free entry point conversation is opened as soon as your message
// is delivered and lasts 72 hours"; docs/billing-rules.md §9: "72 h from 2023-03-01". docs/billing-rules.md §2: `cbp-2023`
// starts 2023-06-01, so March 2023 is still `cbp-2022` (and the 2022-02-01 card row).
#[test]
fn fep_lasts_72h_from_2023_03_01_still_in_cbp_2022() {
    let day = T0 + 379 * D; // 2023-03-15T00:00:00Z
    let mut lines = vec![inbound_ad(USER, "wamid.in.ad", day + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", day + 10 * H)); // 03-15 10:00:01 .. 03-18 10:00:01
                                                            // 03-17 10:00: 49 h after the ad message, inside the 72 h: joins.
    lines.extend(reply(USER, "wamid.out.2", day + 2 * D + 10 * H));
    // 03-18 10:01: the FEP expired and the CSW closed long ago: business-initiated, charged.
    lines.extend(reply(USER, "wamid.out.3", day + 3 * D + 10 * H + M));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_fep(&b.records[0], "2023-03-15T10:00:01Z", "2023-03-18T10:00:01Z");
    assert_bic(&b.records[1], "2023-03-18T10:01:01Z", "2023-03-19T10:01:01Z");
    assert_eq!(b.records[1]["month"], "2023-03");
}

// docs/billing-rules.md §9: "Free entry point window 24 h until 2023-02-28, 72 h from 2023-03-01" (at
// WABA-local midnight; this WABA is UTC).
#[test]
fn fep_opened_on_2023_02_28_still_lasts_24h() {
    let day = T0 + 364 * D; // 2023-02-28T00:00:00Z
    let mut lines = vec![inbound_ad(USER, "wamid.in.ad", day + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", day + 10 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_fep(&b.records[0], "2023-02-28T10:00:01Z", "2023-03-01T10:00:01Z");
}

// Reference §3 pitfall: Click-to-WhatsApp *posts* "arrive with `referral.source_type = "post"`
// and do not get the free 72 h window"; docs/billing-rules.md §3: "`source_type = "post"` is not eligible."
#[test]
fn fep_post_referral_is_not_eligible() {
    let mut lines = vec![inbound_to(WABA, PNID, USER, "wamid.in.post", T0 + 9 * H, Some("post"))];
    lines.extend(reply(USER, "wamid.out.1", T0 + 10 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T10:00:01Z", "2022-03-02T10:00:01Z");
}

// Reference §3 (Meta): "If you do not respond within 24 hours, a free entry point conversation
// is not opened and you must use a template"; docs/billing-rules.md §3: "D is less than 24 h after that message".
#[test]
fn fep_reply_delivered_24h_after_the_ad_message_is_not_eligible() {
    let mut lines = vec![inbound_ad(USER, "wamid.in.ad", T0 + 9 * H)];
    // Delivered exactly 24 h after the ad message: neither FEP nor inside the CSW.
    lines.extend(sent_delivered("wamid.out.1", T0 + D + 9 * H - 1, T0 + D + 9 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-02T09:00:00Z", "2022-03-03T09:00:00Z");
}

// Reference §3 (Meta): "When a free entry point conversation is opened, it automatically closes
// all other open conversations between you and the customer, and no new conversations will be
// opened until the free entry point conversation expires." docs/billing-rules.md §3: the closed ones "stay
// charged and their emitted records are not rewritten".
#[test]
fn fep_preempts_an_open_user_initiated_conversation() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 9 * H + 10 * M)); // UIC 09:10:01 .. 03-02 09:10:01
                                                                   // The user then comes in through an ad while the UIC is open; the answer opens the FEP.
    lines.push(inbound_ad(USER, "wamid.in.ad", T0 + 12 * H));
    lines.extend(reply(USER, "wamid.out.2", T0 + 12 * H + 5 * M)); // FEP 12:05:01 .. 03-02 12:05:01
                                                                   // 03-02 10:00: the UIC has expired and the CSW (to 03-02 12:00) is open, so without the FEP
                                                                   // this would open a new user-initiated conversation; inside the FEP it joins it.
    lines.extend(reply(USER, "wamid.out.3", T0 + D + 10 * H));
    // 03-02 13:00: FEP expired, CSW closed: business-initiated.
    lines.extend(reply(USER, "wamid.out.4", T0 + D + 13 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 3, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T09:10:01Z", "2022-03-02T09:10:01Z");
    assert_fep(&b.records[1], "2022-03-01T12:05:01Z", "2022-03-02T12:05:01Z");
    assert_eq!(b.records[1]["opening_message_id"], "wamid.out.2");
    assert_bic(&b.records[2], "2022-03-02T13:00:01Z", "2022-03-03T13:00:01Z");
    assert_eq!(b.records[2]["opening_message_id"], "wamid.out.4");
}

// Seed 000: "The first dialog initiated using Click-to-WhatsApp or the Facebook action button
// will be free." Reference §3 (Meta, 2022): "The first conversation that starts from the entry
// point is free of charge, then subsequent conversations with the user are charged."
#[test]
fn fep_only_the_first_conversation_from_a_referral_is_free() {
    let mut lines = vec![inbound_ad(USER, "wamid.in.ad", T0 + 9 * H)];
    lines.extend(reply(USER, "wamid.out.1", T0 + 9 * H + M)); // FEP 09:01:01 .. 03-02 09:01:01
                                                              // A plain follow-up from the user keeps the CSW open until 03-02 20:00.
    lines.push(inbound(USER, "wamid.in.2", T0 + 20 * H));
    // 03-02 09:00:01: still inside the FEP, joins it.
    lines.extend(reply(USER, "wamid.out.2", T0 + D + 9 * H));
    // 03-02 10:00:01: after the FEP, inside the CSW: a charged user-initiated conversation.
    lines.extend(reply(USER, "wamid.out.3", T0 + D + 10 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 2, "{:#?}", b.records);
    assert_fep(&b.records[0], "2022-03-01T09:01:01Z", "2022-03-02T09:01:01Z");
    assert_uic(&b.records[1], "2022-03-02T10:00:01Z", "2022-03-03T10:00:01Z");
    assert_eq!(b.records[1]["opening_message_id"], "wamid.out.3");
}

// docs/billing-rules.md §3 rule 4: free entry point "when the user's latest inbound message at or before D
// carried a `referral` with `source_type = "ad"`".
#[test]
fn fep_needs_the_users_latest_message_to_carry_the_referral() {
    let mut lines = vec![inbound_ad(USER, "wamid.in.ad", T0 + 9 * H)];
    lines.push(inbound(USER, "wamid.in.2", T0 + 9 * H + 30 * M));
    lines.extend(reply(USER, "wamid.out.1", T0 + 10 * H));

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_uic(&b.records[0], "2022-03-01T10:00:01Z", "2022-03-02T10:00:01Z");
}

// ---------------------------------------------------------------------------------------
// Free tier (reference §2, docs/billing-rules.md §3 rule 5)
// ---------------------------------------------------------------------------------------

// Seed 000: "every first 1000 dialogues per month of one WhatsApp account are free. If you
// have several numbers in one WhatsApp account, the dialogs will be distributed between them".
// Reference §2: "These conversations can be either user or business-initiated ... the free
// tier is provided at the WABA level"; FEP conversations "will not be counted towards your
// free 1,000". Here the tier is configured to 2 per month.
#[test]
fn free_tier_first_two_of_the_waba_month_are_free_third_is_charged_fep_never_counts() {
    let mut lines = vec![inbound(USER, "wamid.in.1", T0 + 9 * H)];
    // 1st of March: user-initiated, free tier.
    lines.extend(reply(USER, "wamid.out.1", T0 + 10 * H));
    // An FEP on 03-03: free, but does not use the tier.
    lines.push(inbound_ad(USER, "wamid.in.ad", T0 + 2 * D + 9 * H));
    lines.extend(reply(USER, "wamid.out.2", T0 + 2 * D + 10 * H));
    // 2nd of March: business-initiated on 03-05, free tier.
    lines.extend(reply(USER, "wamid.out.3", T0 + 4 * D + 8 * H));
    // 3rd of March, on the WABA's other number: charged.
    lines.push(status_to(WABA, PNID2, USER, "wamid.out.4", "sent", T0 + 6 * D + 8 * H));
    lines.push(status_to(
        WABA,
        PNID2,
        USER,
        "wamid.out.4",
        "delivered",
        T0 + 6 * D + 8 * H + 1,
    ));
    // April has a fresh tier.
    lines.extend(reply(USER, "wamid.out.5", T0 + 31 * D + 8 * H));

    let b = run_with(&lines, &config(2, None));
    assert_eq!(b.records.len(), 5, "{:#?}", b.records);
    let r = &b.records;
    assert_record(
        &r[0],
        "user_initiated",
        "2022-03-01T10:00:01Z",
        "2022-03-02T10:00:01Z",
        true,
        true,
        "0",
    );
    assert_fep(&r[1], "2022-03-03T10:00:01Z", "2022-03-04T10:00:01Z");
    assert_record(
        &r[2],
        "business_initiated",
        "2022-03-05T08:00:01Z",
        "2022-03-06T08:00:01Z",
        true,
        true,
        "0",
    );
    assert_bic(&r[3], "2022-03-07T08:00:01Z", "2022-03-08T08:00:01Z");
    assert_eq!(r[3]["phone_number_id"], PNID2);
    assert_record(
        &r[4],
        "business_initiated",
        "2022-04-01T08:00:01Z",
        "2022-04-02T08:00:01Z",
        true,
        true,
        "0",
    );
    let months: Vec<&str> = r.iter().map(|x| x["month"].as_str().unwrap_or("")).collect();
    assert_eq!(months, ["2022-03", "2022-03", "2022-03", "2022-03", "2022-04"]);
}

// Reference §2 (Meta): "The free tier is refreshed monthly, based on the timezone associated
// with the WABA"; docs/billing-rules.md §9: "Free tier is per WABA, in the WABA's time zone — not UTC."
// America/Sao_Paulo is UTC-3 in 2022, so 2022-04-01T01:00:00Z is 2022-03-31 22:00 there.
#[test]
fn free_tier_month_is_the_waba_local_month() {
    let mut lines = reply(USER, "wamid.out.a", T0 + 14 * D + 15 * H); // 03-15 15:00:01Z
    lines.extend(sent_delivered("wamid.out.b", T0 + 31 * D + H - 1, T0 + 31 * D + H)); // 04-01 01:00:00Z
    lines.extend(sent_delivered(
        "wamid.out.c",
        T0 + 32 * D + 3 * H - 1,
        T0 + 32 * D + 3 * H,
    )); // 04-02 03:00:00Z

    // Sao Paulo, one free conversation a month: B is the second of (local) March, charged;
    // C is the first of April, free.
    let b = run_with(&lines, &config(1, Some("America/Sao_Paulo")));
    assert_eq!(b.records.len(), 3, "{:#?}", b.records);
    let r = &b.records;
    assert_record(
        &r[0],
        "business_initiated",
        "2022-03-15T15:00:01Z",
        "2022-03-16T15:00:01Z",
        true,
        true,
        "0",
    );
    assert_eq!(r[0]["month"], "2022-03");
    assert_bic(&r[1], "2022-04-01T01:00:00Z", "2022-04-02T01:00:00Z");
    assert_eq!(r[1]["month"], "2022-03");
    assert_record(
        &r[2],
        "business_initiated",
        "2022-04-02T03:00:00Z",
        "2022-04-03T03:00:00Z",
        true,
        true,
        "0",
    );
    assert_eq!(r[2]["month"], "2022-04");

    // The same input for a UTC WABA: B opens April's tier and C is charged.
    let b = run_with(&lines, &config(1, None));
    assert_eq!(b.records.len(), 3, "{:#?}", b.records);
    let r = &b.records;
    assert_eq!(r[0]["month"], "2022-03");
    assert_eq!(r[0]["free_tier"], true);
    assert_record(
        &r[1],
        "business_initiated",
        "2022-04-01T01:00:00Z",
        "2022-04-02T01:00:00Z",
        true,
        true,
        "0",
    );
    assert_eq!(r[1]["month"], "2022-04");
    assert_bic(&r[2], "2022-04-02T03:00:00Z", "2022-04-03T03:00:00Z");
    assert_eq!(r[2]["month"], "2022-04");
}

// docs/billing-rules.md §3: "Events with the same timestamp are applied inbound messages first, then statuses,
// then by message id." Two business messages reach the user in the same second, one reported
// `read` (no `delivered`), one `delivered`: both have D = that second, so the one applied first
// (the smaller message id, whatever its status kind) opens the conversation and the other
// joins it.
#[test]
fn spec_same_timestamp_statuses_are_applied_by_message_id() {
    let t = T0 + 8 * H;
    let lines = vec![
        status(USER, "wamid.B", "sent", t - 5),
        status(USER, "wamid.A", "sent", t - 5),
        status(USER, "wamid.B", "delivered", t),
        status(USER, "wamid.A", "read", t),
    ];

    let b = run(&lines);
    assert_eq!(b.records.len(), 1, "{:#?}", b.records);
    assert_bic(&b.records[0], "2022-03-01T08:00:00Z", "2022-03-02T08:00:00Z");
    assert_eq!(b.records[0]["opening_message_id"], "wamid.A");
}
