//! Upgrades (house rule: a newer wabill never misreads an older store). A state directory
//! written by wabill before state format versions (format 1: values start with their
//! expiry, one `cbp-2022` conversation per scope) is read by this wabill and billing
//! continues from it; a directory marked by a newer wabill fails at start-up with a
//! message naming its format.
//!
//! The format-1 bytes are written here by hand, field by field, as the old `state/codec.rs`
//! laid them out (expiry i64 BE first; scope: csw_until, last_inbound_at, flags, origin
//! code, opened_at, expires_at; message: seen bits), not by the current encoder.

mod common;
use common::*;

use wabill::billing::{MarketMap, RateCard};
use wabill::config::Config;
use wabill::pipeline::engine::Setup;
use wabill::runtime::replay::{self, ReplayOptions};

const FAMILIES: [&str; 6] = ["scopes", "messages", "conversations", "counters", "meta", "pending"];

fn write_raw(dir: &std::path::Path, entries: &[(&str, Vec<u8>, Vec<u8>)]) {
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    opts.create_missing_column_families(true);
    let db = rocksdb::DB::open_cf(&opts, dir, FAMILIES).expect("open raw RocksDB");
    for (family, k, v) in entries {
        let cf = db.cf_handle(family).expect("family");
        db.put_cf(cf, k, v).expect("put");
    }
    db.flush().expect("flush");
}

fn be(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

/// A store-wide format marker as a later wabill could write it: `header` is the value's
/// own version byte, `format` the store format it names.
fn marker(header: u8, format: i64) -> (&'static str, Vec<u8>, Vec<u8>) {
    let mut v = vec![header];
    v.extend_from_slice(&be(i64::MAX));
    v.extend_from_slice(&be(format));
    ("meta", b"state.format_version".to_vec(), v)
}

fn replay_into(state: &std::path::Path, lines: &[String]) -> Result<Vec<serde_json::Value>, String> {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let cfg: Config = toml::from_str(&format!("[[waba]]\nid = \"{WABA}\"\nfree_tier = 0\n")).unwrap();
    let setup = Setup::new(&cfg, RateCard::bundled_sample().unwrap(), MarketMap::bundled()).unwrap();
    let out = dir.path().join("out.jsonl");
    let opts = ReplayOptions {
        inputs: vec![input.display().to_string()],
        output: Some(out.display().to_string()),
        dead_letter: Some(dir.path().join("dead.jsonl").display().to_string()),
        state_dir: Some(state.to_path_buf()),
        progress: false,
    };
    replay::run(&cfg, &setup, &opts).map_err(|e| e.to_string())?;
    Ok(std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect())
}

#[test]
fn a_format_1_state_directory_loads_and_billing_continues() {
    let state = tempfile::tempdir().unwrap();
    // The old wabill saw: USER wrote at T0 (CSW until T0+24h), a reply was delivered at
    // T0+1h and opened a user-initiated conversation until T0+25h.
    let (opened, expires, csw) = (T0 + H, T0 + 25 * H, T0 + 24 * H);
    let mut scope = be(expires).to_vec();
    scope.extend_from_slice(&be(csw));
    scope.extend_from_slice(&be(T0));
    scope.push(0); // flags: no ad referral, nothing consumed
    scope.push(1); // origin code 1 = user_initiated
    scope.extend_from_slice(&be(opened));
    scope.extend_from_slice(&be(expires));
    let mut scope_key = PNID.as_bytes().to_vec();
    scope_key.push(0);
    scope_key.extend_from_slice(USER.as_bytes());
    // The reply's dedupe memory: delivered (4) and applied (0x80), for 7 days.
    let mut seen = be(opened + 7 * 24 * H).to_vec();
    seen.push(4 | 0x80);
    write_raw(
        state.path(),
        &[("scopes", scope_key, scope), ("messages", b"wamid.old".to_vec(), seen)],
    );

    let mut lines = vec![status(USER, "wamid.old", "delivered", opened)];
    // Inside the conversation the old store holds: joins it, no record.
    lines.extend(reply(USER, "wamid.new1", T0 + 2 * H));
    // After it expired and the CSW closed: business-initiated (2022 NA row 0.0147).
    lines.extend(reply(USER, "wamid.new2", T0 + 26 * H));
    let records = replay_into(state.path(), &lines).expect("the old store loads");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["origin"], "business_initiated");
    assert_eq!(records[0]["opened_at"], "2022-03-02T02:00:01Z");
    assert_eq!(records[0]["price"], "0.0147");

    // The store is now marked with the current format and reads again (nothing new).
    let again = replay_into(state.path(), &lines).expect("reopens");
    assert!(again.is_empty(), "{again:#?}");
}

#[test]
fn a_state_directory_of_a_newer_wabill_fails_at_start_up_naming_its_format() {
    let state = tempfile::tempdir().unwrap();
    // A marker one format newer than this wabill's, in that format's own header.
    let next = wabill::state::codec::FORMAT_VERSION + 1;
    write_raw(state.path(), &[marker(next, i64::from(next))]);
    let err = replay_into(state.path(), &reply(USER, "wamid.x", T0)).expect_err("must not start");
    assert!(err.contains(&format!("state format {next}")), "{err}");
    assert!(err.contains("newer wabill"), "{err}");

    // A marker in the current layout naming a newer format fails the same way.
    let state = tempfile::tempdir().unwrap();
    write_raw(state.path(), &[marker(2, 7)]);
    let err = replay_into(state.path(), &reply(USER, "wamid.x", T0)).expect_err("must not start");
    assert!(err.contains("state format 7"), "{err}");
}

#[test]
fn a_format_2_store_opens_and_bills_on() {
    // Format 3 (the per-message eras' state) has format 2's layout. A store marked 2 by the
    // conversation-era wabill, holding a format-2 scope: USER wrote at T0 (CSW until
    // T0 + 24 h) and a user-initiated conversation opened at T0 + 1 h (until T0 + 25 h).
    use wabill::billing::window::{OpenConversation, ScopeState, Slot};
    use wabill::billing::{EraId, Origin};
    use wabill::state::StoreValue;
    let mut scope = ScopeState::default();
    scope.on_inbound(T0, false);
    scope.place(
        Slot::Pair,
        OpenConversation::new(T0 + H, 24 * H, Origin::UserInitiated, EraId::Cbp2022),
    );
    let mut value = Vec::new();
    scope.encode(&mut value);
    value[0] = 2; // the same bytes as format 2 wrote them
    let mut scope_key = PNID.as_bytes().to_vec();
    scope_key.push(0);
    scope_key.extend_from_slice(USER.as_bytes());
    let state = tempfile::tempdir().unwrap();
    write_raw(state.path(), &[marker(2, 2), ("scopes", scope_key, value)]);
    // Inside the stored conversation: joins it, no record. After it and the CSW: business-
    // initiated at the 2022 North America rate 0.0147 (free tier off).
    let mut lines = reply(USER, "wamid.in", T0 + 2 * H);
    lines.extend(reply(USER, "wamid.after", T0 + 26 * H));
    let records = replay_into(state.path(), &lines).expect("a format-2 store loads");
    assert_eq!(records.len(), 1, "{records:#?}");
    assert_eq!(records[0]["origin"], "business_initiated");
    assert_eq!(records[0]["price"], "0.0147");
}
