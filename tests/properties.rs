//! Property tests over generated traffic (docs/billing-rules.md §3 invariants). The engine runs in memory
//! here for speed; `determinism_through_rocksdb` runs the real replay path.

mod common;

use std::collections::{BTreeMap, HashMap};

use proptest::prelude::*;
use serde_json::Value;

use wabill::billing::{MarketMap, Origin, RateCard};
use wabill::config::Config;
use wabill::ingest::{EventKind, MessageEvent, Normaliser, StatusKind};
use wabill::pipeline::engine::{Engine, Setup};
use wabill::pipeline::{Billed, ConversationBilled};
use wabill::sim::{self, Rng, SimConfig};

const LATENESS: i64 = 120;

fn setup(free_tier: u32) -> (Config, Setup) {
    let toml = format!(
        "allowed_lateness_secs = {LATENESS}\n[[waba]]\nid = \"{}\"\nfree_tier = {free_tier}\ntime_zone = \"America/Sao_Paulo\"\n",
        sim::waba_id(0)
    );
    let cfg: Config = toml::from_str(&toml).unwrap();
    let s = Setup::new(&cfg, RateCard::bundled_sample().unwrap(), MarketMap::bundled()).unwrap();
    (cfg, s)
}

fn traffic(seed: u64, events: u64, users: u64, days: i64) -> Vec<MessageEvent> {
    normalised(&SimConfig {
        seed,
        events,
        users,
        wabas: 3,
        days,
        max_disorder_secs: 0,
        ..SimConfig::default()
    })
}

/// Generated traffic, normalised; the generator's traffic is always clean.
fn normalised(cfg: &SimConfig) -> Vec<MessageEvent> {
    let mut norm = Normaliser::new(None, 4 << 20);
    let mut evs = Vec::new();
    let mut bad = Vec::new();
    sim::generate(cfg, |line| {
        norm.normalise(line, &mut evs, &mut bad).unwrap();
    });
    assert!(bad.is_empty(), "simulated traffic is clean: {bad:?}");
    evs
}

/// `evs` in an arrival order where each event is delayed by up to the allowed lateness
/// (random, from `seed`): what the engine must absorb without changing its output.
fn shuffled_within_lateness(evs: Vec<MessageEvent>, seed: u64) -> Vec<MessageEvent> {
    let mut rng = Rng::new(seed);
    let mut keyed: Vec<(i64, u64, MessageEvent)> = evs
        .into_iter()
        .map(|e| (e.ts + rng.range(0, LATENESS + 1), rng.next_u64(), e))
        .collect();
    keyed.sort_by_key(|k| (k.0, k.1));
    keyed.into_iter().map(|k| k.2).collect()
}

/// Billed records (none may be rejected).
fn run(setup: &Setup, events: impl IntoIterator<Item = MessageEvent>) -> Vec<ConversationBilled> {
    let (billed, rejected) = run_all(setup, events);
    assert!(rejected.is_empty(), "{rejected:?}");
    billed
}

/// The conversation records of `run_units` (traffic of the conversation eras).
fn run_all(
    setup: &Setup,
    events: impl IntoIterator<Item = MessageEvent>,
) -> (Vec<ConversationBilled>, Vec<wabill::pipeline::Rejected>) {
    let (billed, rejected) = run_units(setup, events);
    let conversations = billed
        .into_iter()
        .map(|b| match b {
            Billed::Conversation(c) => c,
            Billed::Message(m) => panic!("a message charge in conversation-era traffic: {m:?}"),
        })
        .collect();
    (conversations, rejected)
}

/// Billed records, sorted, and the rejections, with a checkpoint (memory purge) every
/// 997 events.
fn run_units(
    setup: &Setup,
    events: impl IntoIterator<Item = MessageEvent>,
) -> (Vec<Billed>, Vec<wabill::pipeline::Rejected>) {
    let mut engine = Engine::new(setup, None);
    let mut billed = Vec::new();
    let mut rejected = Vec::new();
    for (i, ev) in events.into_iter().enumerate() {
        engine.push(ev, i as u64, &mut billed, &mut rejected).unwrap();
        if i % 997 == 0 {
            engine.checkpoint().unwrap();
        }
    }
    engine.finish(&mut billed, &mut rejected).unwrap();
    billed.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    (billed, rejected)
}

/// Effective end of each conversation: its expiry, or the opening of a free entry point
/// that closed it (docs/billing-rules.md §3 rule 4).
fn effective_ends(convs: &[&ConversationBilled]) -> Vec<i64> {
    convs
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut end = c.opened.expires_at;
            if let Some(next) = convs.get(i + 1) {
                if next.opened.origin == Origin::FreeEntryPoint && next.opened.opened_at < end {
                    end = next.opened.opened_at;
                }
            }
            end
        })
        .collect()
}

fn by_scope(billed: &[ConversationBilled]) -> BTreeMap<(String, String), Vec<&ConversationBilled>> {
    let mut m: BTreeMap<(String, String), Vec<&ConversationBilled>> = BTreeMap::new();
    for b in billed {
        m.entry((b.opened.phone_number_id.clone(), b.opened.user.clone()))
            .or_default()
            .push(b);
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// No two conversations of a scope overlap, except that a free entry point may cut
    /// an open one short; nothing opens while a free entry point is open.
    #[test]
    fn no_overlapping_conversations(seed in any::<u64>()) {
        let (_, s) = setup(1000);
        let billed = run(&s, traffic(seed, 3000, 60, 6));
        prop_assert!(!billed.is_empty());
        for (_, convs) in by_scope(&billed) {
            for w in convs.windows(2) {
                let (a, b) = (w[0], w[1]);
                prop_assert!(b.opened.opened_at > a.opened.opened_at);
                if a.opened.origin == Origin::FreeEntryPoint {
                    prop_assert!(b.opened.opened_at >= a.opened.expires_at, "opened inside a FEP");
                } else if b.opened.opened_at < a.opened.expires_at {
                    prop_assert_eq!(b.opened.origin, Origin::FreeEntryPoint, "overlap without FEP");
                }
            }
        }
    }

    /// Every delivered business message lies in exactly one conversation of its scope,
    /// and every conversation is opened by a delivered message at its opened_at.
    #[test]
    fn every_delivery_in_exactly_one_conversation(seed in any::<u64>()) {
        let (_, s) = setup(1000);
        let evs = traffic(seed, 3000, 60, 6);
        // Delivery instant per message: earliest delivered/read (docs/billing-rules.md §1).
        let mut delivery: HashMap<(String, String, String), i64> = HashMap::new();
        for e in &evs {
            if let EventKind::Status { status: StatusKind::Delivered | StatusKind::Read } = e.kind {
                let k = (e.phone_number_id.clone(), e.user.clone(), e.message_id.clone());
                let d = delivery.entry(k).or_insert(e.ts);
                *d = (*d).min(e.ts);
            }
        }
        let billed = run(&s, evs);
        let scopes = by_scope(&billed);
        for ((pn, user, id), d) in &delivery {
            let convs = scopes.get(&(pn.clone(), user.clone())).cloned().unwrap_or_default();
            let ends = effective_ends(&convs);
            let n = convs.iter().zip(&ends).filter(|(c, end)| c.opened.opened_at <= *d && *d < **end).count();
            prop_assert_eq!(n, 1, "message {} delivered at {} lies in {} conversations", id, d, n);
        }
        for b in &billed {
            let k = (b.opened.phone_number_id.clone(), b.opened.user.clone(), b.opened.opening_message_id.clone());
            prop_assert_eq!(delivery.get(&k), Some(&b.opened.opened_at));
        }
    }

    /// Free tier per WABA-month = min(limit, eligible conversations), and the free ones
    /// are the first of the month by (opened_at, conversation_id).
    #[test]
    fn free_tier_is_min_of_limit_and_eligible(seed in any::<u64>(), limit in 0u32..60) {
        let (_, s) = setup(limit);
        let billed = run(&s, traffic(seed, 4000, 200, 45));
        let mut months: BTreeMap<(String, String), Vec<&ConversationBilled>> = BTreeMap::new();
        for b in &billed {
            months.entry((b.opened.waba_id.clone(), b.month.clone())).or_default().push(b);
        }
        for ((waba, _), convs) in months {
            let lim = if waba == sim::waba_id(0) { limit as usize } else { 1000 };
            let eligible: Vec<_> = convs.iter().filter(|c| c.opened.origin != Origin::FreeEntryPoint).collect();
            let free = eligible.iter().filter(|c| c.free_tier).count();
            prop_assert_eq!(free, lim.min(eligible.len()));
            // The free ones come first.
            let first_paid = eligible.iter().position(|c| !c.free_tier).unwrap_or(eligible.len());
            prop_assert!(eligible[..first_paid].iter().all(|c| c.free_tier));
            prop_assert!(convs.iter().filter(|c| c.opened.origin == Origin::FreeEntryPoint).all(|c| !c.free_tier && !c.billable));
        }
    }

    /// Any arrival order in which no event is more than the allowed lateness behind the
    /// highest timestamp already seen gives the same records.
    #[test]
    fn shuffling_within_lateness_changes_nothing(seed in any::<u64>(), shuffle_seed in any::<u64>()) {
        let (_, s) = setup(25);
        let mut evs = traffic(seed, 2500, 40, 4);
        evs.sort_by_key(|e| e.ts);
        let reference = run(&s, evs.clone());
        let shuffled = run(&s, shuffled_within_lateness(evs, shuffle_seed));
        prop_assert_eq!(shuffled.len(), reference.len());
        prop_assert!(shuffled.iter().all(|b| !b.opened.late));
        prop_assert_eq!(shuffled, reference);
    }
}

/// Two replays of the same file through the real RocksDB path give identical bytes.
#[test]
fn determinism_through_rocksdb() {
    let cfg = SimConfig {
        seed: 7,
        events: 6000,
        users: 300,
        ..SimConfig::default()
    };
    let mut lines = Vec::new();
    sim::generate(&cfg, |l| lines.push(l.to_string()));
    let toml = format!("[[waba]]\nid = \"{}\"\nfree_tier = 10\n", sim::waba_id(0));
    let a = common::replay_lines(&lines, &toml);
    let b = common::replay_lines(&lines, &toml);
    assert!(a.records.len() > 100);
    assert_eq!(a.output_bytes, b.output_bytes);
    // Sorted by opened_at, then conversation_id.
    let keys: Vec<(String, String)> = a
        .records
        .iter()
        .map(|r: &Value| {
            (
                r["opened_at"].as_str().unwrap().to_string(),
                r["conversation_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
}

/// The RocksDB-backed replay and the in-memory engine agree record for record.
#[test]
fn rocksdb_store_equals_memory_store() {
    let cfg = SimConfig {
        seed: 11,
        events: 5000,
        users: 200,
        ..SimConfig::default()
    };
    let mut lines = Vec::new();
    sim::generate(&cfg, |l| lines.push(l.to_string()));
    let replayed = common::replay_lines(&lines, "");
    let (_, s) = setup(1000);
    let mut norm = Normaliser::new(None, 4 << 20);
    let mut evs = Vec::new();
    let mut bad = Vec::new();
    for l in &lines {
        norm.normalise(l, &mut evs, &mut bad).unwrap();
    }
    // Same config as the replay (no WABA overrides): default profiles.
    let s = Setup {
        profiles: std::sync::Arc::new(wabill::config::Profiles::default_profiles()),
        ..s
    };
    let mem = run(&s, evs);
    let mem_ids: Vec<&str> = mem.iter().map(|b| b.opened.conversation_id.as_str()).collect();
    let rocks_ids: Vec<&str> = replayed
        .records
        .iter()
        .map(|r| r["conversation_id"].as_str().unwrap())
        .collect();
    assert_eq!(mem_ids, rocks_ids);
}

/// A reused state directory continues from its state: replaying the same file again
/// bills nothing (state read back from RocksDB, not from a warm cache).
#[test]
fn reused_state_dir_continues_from_its_state() {
    let cfg = SimConfig {
        seed: 5,
        events: 3000,
        users: 150,
        ..SimConfig::default()
    };
    let mut lines = Vec::new();
    sim::generate(&cfg, |l| lines.push(l.to_string()));
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let toml = format!("[[waba]]\nid = \"{}\"\nfree_tier = 10\n", sim::waba_id(0));
    let inputs = [input.display().to_string()];
    let first = common::replay_files(&inputs, &toml, dir.path());
    assert!(first.records.len() > 100);
    let second = common::replay_files(&inputs, &toml, dir.path());
    // Nothing is billed twice: recent events are windows duplicates (dedupe memory, 7 days);
    // conversations re-opened from events older than that horizon are ledger duplicates
    // (conversation ids are remembered 100 days).
    assert!(
        second.records.is_empty(),
        "{} records billed twice",
        second.records.len()
    );
    assert!(
        second.report.duplicates >= first.report.events / 4,
        "{}",
        second.report.duplicates
    );
}

// ---------------------------------------------------------------------------------------
// Multi-era traffic (docs/billing-rules.md §2 transitions, §4): generated days that cross 2023-06-01 and
// 2024-11-01, with send-log records and Meta's category pricing objects.

/// 2023-05-29T00:00:00Z and 2024-10-29T00:00:00Z: six days from each cross an era switch
/// in every time zone the properties configure.
const ERA_STARTS: [i64; 2] = [1_685_318_400, 1_730_160_000];

fn era_traffic(seed: u64, start: i64, events: u64, users: u64) -> Vec<MessageEvent> {
    normalised(&SimConfig {
        seed,
        events,
        users,
        wabas: 3,
        days: 6,
        start,
        max_disorder_secs: 0,
        send_log: true,
        ..SimConfig::default()
    })
}

/// The scope slot a conversation occupies (docs/billing-rules.md §4 rule 1): the pair for `cbp-2022`
/// conversations and free entry points, else its category (authentication and
/// authentication-international share one).
fn slot(o: Origin) -> &'static str {
    match o {
        Origin::UserInitiated | Origin::BusinessInitiated | Origin::FreeEntryPoint => "pair",
        Origin::Marketing => "marketing",
        Origin::Utility => "utility",
        Origin::Authentication | Origin::AuthenticationInternational => "authentication",
        Origin::Service => "service",
    }
}

/// Each conversation's effective end: its expiry, or the opening of a later free entry
/// point of the pair that closed it (docs/billing-rules.md §4 rule 2).
fn effective_end(c: &ConversationBilled, pair: &[&ConversationBilled]) -> i64 {
    let mut end = c.opened.expires_at;
    for f in pair {
        if f.opened.origin == Origin::FreeEntryPoint && f.opened.opened_at > c.opened.opened_at {
            end = end.min(f.opened.opened_at);
        }
    }
    end
}

fn multi_era_setup() -> Setup {
    // Three WABAs in three zones: each crosses the switches at its own midnight.
    let toml = format!(
        "allowed_lateness_secs = {LATENESS}\n[[waba]]\nid = \"{}\"\nfree_tier = 5\ntime_zone = \"America/Sao_Paulo\"\n[[waba]]\nid = \"{}\"\ntime_zone = \"Asia/Kolkata\"\n",
        sim::waba_id(0),
        sim::waba_id(1)
    );
    let cfg: Config = toml::from_str(&toml).unwrap();
    Setup::new(&cfg, RateCard::bundled_sample().unwrap(), MarketMap::bundled()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 16, .. ProptestConfig::default() })]

    /// Across era switches: no two conversations of one scope (pair + category slot)
    /// overlap; a `cbp-2022` conversation or a free entry point overlaps nothing of its
    /// pair (a free entry point cuts the others short); every delivered business message
    /// whose kind is known lies in a conversation its kind may join — exactly one for a
    /// template — and one whose kind is unknown is either dead-lettered or inside a
    /// conversation that takes any message (a `cbp-2022` one or a free entry point).
    #[test]
    fn multi_era_scopes_and_deliveries(seed in any::<u64>(), which in 0usize..2) {
        let s = multi_era_setup();
        let evs = era_traffic(seed, ERA_STARTS[which], 2500, 50);
        let (billed, rejected) = run_all(&s, evs.iter().cloned());
        prop_assert!(!billed.is_empty());
        let mut pairs: BTreeMap<(String, String), Vec<&ConversationBilled>> = BTreeMap::new();
        for b in &billed {
            pairs.entry((b.opened.phone_number_id.clone(), b.opened.user.clone())).or_default().push(b);
        }
        for convs in pairs.values() {
            for (i, a) in convs.iter().enumerate() {
                for b in &convs[i + 1..] {
                    let overlap = b.opened.opened_at < effective_end(a, convs) && a.opened.opened_at < effective_end(b, convs);
                    if !overlap {
                        continue;
                    }
                    let pairwide = |c: &ConversationBilled| slot(c.opened.origin) == "pair";
                    prop_assert!(!pairwide(a) && !pairwide(b), "pair-wide conversation overlaps: {:?} {:?}", a.opened, b.opened);
                    prop_assert_ne!(slot(a.opened.origin), slot(b.opened.origin), "same scope overlaps");
                }
            }
        }
        // Each message's kind as docs/billing-rules.md §6 defines it: the send log, else pricing.category.
        let mut kind: HashMap<&str, (bool, wabill::billing::MessageKind)> = HashMap::new();
        let mut delivery: HashMap<(&str, &str, &str), (i64, u64)> = HashMap::new();
        for (i, e) in evs.iter().enumerate() {
            if let Some(k) = e.message_kind {
                let from_log = e.kind == EventKind::SendLog;
                let slot = kind.entry(&e.message_id).or_insert((from_log, k));
                if from_log && !slot.0 {
                    *slot = (true, k);
                }
            }
            if let EventKind::Status { status: StatusKind::Delivered | StatusKind::Read } = e.kind {
                let k = (e.phone_number_id.as_str(), e.user.as_str(), e.message_id.as_str());
                let d = delivery.entry(k).or_insert((e.ts, i as u64));
                if e.ts < d.0 {
                    *d = (e.ts, i as u64);
                }
            }
        }
        let dead: std::collections::HashSet<u64> = rejected.iter().map(|r| r.position).collect();
        for ((pn, user, id), (d, _)) in &delivery {
            let empty = Vec::new();
            let convs = pairs.get(&(pn.to_string(), user.to_string())).unwrap_or(&empty);
            let open: Vec<&&ConversationBilled> = convs
                .iter()
                .filter(|c| c.opened.opened_at <= *d && *d < effective_end(c, convs))
                .collect();
            let takes_any = |c: &ConversationBilled| slot(c.opened.origin) == "pair";
            match kind.get(id).map(|k| k.1) {
                Some(wabill::billing::MessageKind::Template(c)) => {
                    let want = match c {
                        wabill::billing::TemplateCategory::Marketing | wabill::billing::TemplateCategory::MarketingLite => "marketing",
                        wabill::billing::TemplateCategory::Utility => "utility",
                        wabill::billing::TemplateCategory::Authentication => "authentication",
                    };
                    let n = open.iter().filter(|c| takes_any(c) || slot(c.opened.origin) == want).count();
                    prop_assert_eq!(n, 1, "template {} ({}) at {} lies in {} conversations", id, want, d, n);
                }
                Some(wabill::billing::MessageKind::NonTemplate) => {
                    prop_assert!(!open.is_empty(), "free-form {} at {} lies in no conversation", id, d);
                }
                None => {
                    let in_any = open.iter().any(|c| takes_any(c));
                    let pos = delivery[&(*pn, *user, *id)].1;
                    prop_assert!(in_any || dead.contains(&pos), "unknown-kind {} neither joined nor dead-lettered", id);
                }
            }
        }
        for r in &rejected {
            prop_assert!(r.reason.starts_with("unknown message category"), "{}", r.reason);
        }
    }

    /// Lateness shuffles change nothing on multi-era traffic either.
    #[test]
    fn multi_era_shuffling_within_lateness_changes_nothing(seed in any::<u64>(), shuffle_seed in any::<u64>(), which in 0usize..2) {
        let s = multi_era_setup();
        let mut evs = era_traffic(seed, ERA_STARTS[which], 2000, 40);
        evs.sort_by_key(|e| e.ts);
        let (reference, ref_dead) = run_all(&s, evs.iter().cloned());
        let shuffled = shuffled_within_lateness(evs, shuffle_seed);
        let (again, dead) = run_all(&s, shuffled);
        prop_assert_eq!(again, reference);
        prop_assert_eq!(dead.len(), ref_dead.len());
    }
}

/// Replaying generated multi-era files twice through RocksDB gives identical bytes.
#[test]
fn multi_era_determinism_through_rocksdb() {
    let mut lines = Vec::new();
    for (i, start) in ERA_STARTS.iter().enumerate() {
        let cfg = SimConfig {
            seed: 70 + i as u64,
            events: 4000,
            users: 200,
            days: 6,
            start: *start,
            send_log: true,
            ..SimConfig::default()
        };
        sim::generate(&cfg, |l| lines.push(l.to_string()));
    }
    let toml = format!("[[waba]]\nid = \"{}\"\nfree_tier = 10\n", sim::waba_id(0));
    let a = common::replay_lines(&lines, &toml);
    let b = common::replay_lines(&lines, &toml);
    let eras: std::collections::BTreeSet<&str> = a.records.iter().map(|r| r["era"].as_str().unwrap()).collect();
    assert_eq!(
        eras.into_iter().collect::<Vec<_>>(),
        ["cbp-2022", "cbp-2023", "cbp-2024-11"]
    );
    assert_eq!(a.output_bytes, b.output_bytes);
    // Dead letters (unknown kinds) are the same too, apart from the temporary input path.
    let dead = |d: &[Value]| -> Vec<(Value, Value, Value)> {
        d.iter()
            .map(|x| (x["line"].clone(), x["reason"].clone(), x["original"].clone()))
            .collect()
    };
    assert!(!a.dead.is_empty());
    assert_eq!(dead(&a.dead), dead(&b.dead));
}

// ---------------------------------------------------------------------------------------
// The per-message eras (docs/billing-rules.md §5)
// ---------------------------------------------------------------------------------------

/// 2025-06-29T00:00Z and 2026-09-29T00:00Z: eight days from here cross 2025-07-01 and
/// 2026-10-01 in every time zone of the set-up.
const PMP_STARTS: [i64; 2] = [1_751_155_200, 1_790_640_000];
/// Messages delivered this long after the window's start lie where no conversation of an
/// earlier era can still be open (a free entry point lasts 72 h; two days of margin for
/// the time zones): each yields exactly one charge or one dead letter.
const ALL_MESSAGE_ERA_FROM: i64 = 6 * 86_400;

/// Bands small enough that generated traffic climbs them: utility and authentication of
/// the markets the generator uses most.
fn small_bands() -> wabill::billing::VolumeTiers {
    let mut csv = String::from("effective_from,market,currency,category,from,to,rate\n");
    for market in ["North America", "Brazil", "India", "United Kingdom", "Germany"] {
        for category in ["utility", "authentication"] {
            csv.push_str(&format!(
                "2025-07-01,{market},USD,{category},0,3,0.0100\n2025-07-01,{market},USD,{category},4,9,0.0050\n2025-07-01,{market},USD,{category},10,,0.0010\n"
            ));
        }
    }
    wabill::billing::VolumeTiers::parse(&csv).unwrap()
}

/// Two WABAs of one portfolio in different zones, a third alone, a small service free
/// tier.
fn message_era_setup() -> Setup {
    let toml = format!(
        "allowed_lateness_secs = {LATENESS}\n\
         [[waba]]\nid = \"{}\"\nportfolio = \"P\"\ntime_zone = \"America/Sao_Paulo\"\nservice_free_tier = 3\n\
         [[waba]]\nid = \"{}\"\nportfolio = \"P\"\ntime_zone = \"Asia/Kolkata\"\n",
        sim::waba_id(0),
        sim::waba_id(1)
    );
    let cfg: Config = toml::from_str(&toml).unwrap();
    Setup::new(&cfg, RateCard::bundled_sample().unwrap(), MarketMap::bundled())
        .unwrap()
        .with_tiers(small_bands())
}

fn message_era_traffic(seed: u64, start: i64, events: u64) -> Vec<MessageEvent> {
    normalised(&SimConfig {
        seed,
        events,
        users: 60,
        wabas: 3,
        days: 8,
        start,
        max_disorder_secs: 0,
        send_log: true,
        ..SimConfig::default()
    })
}

/// The tier counter of a charge's category (docs/billing-rules.md §5 rule 5).
fn counter_of(category: &str) -> Option<&'static str> {
    match category {
        "utility" => Some("utility"),
        "authentication" | "authentication_international" => Some("authentication"),
        _ => None,
    }
}

/// `"from:to"` contains the n-th message.
fn band_holds(tier: &str, n: u64) -> bool {
    let (from, to) = tier.split_once(':').unwrap();
    let from: u64 = from.parse().unwrap();
    from <= n && (to == "MAX" || n <= to.parse::<u64>().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, .. ProptestConfig::default() })]

    /// Every message delivered where only message eras can decide has exactly one charge
    /// or exactly one dead letter; no message is ever charged twice; and per (portfolio,
    /// market, tier counter, month) the n-th charged message, in (D, message id) order
    /// across the portfolio's WABAs, is priced by the band that holds n — so bands never
    /// go down and never hold more messages than their width.
    #[test]
    fn message_eras_one_charge_per_delivery_and_bands_in_order(seed in any::<u64>(), which in 0usize..2) {
        let s = message_era_setup();
        let start = PMP_STARTS[which];
        let evs = message_era_traffic(seed, start, 3000);
        let (billed, rejected) = run_units(&s, evs.iter().cloned());
        let charges: Vec<&wabill::pipeline::MessageCharged> = billed.iter().filter_map(Billed::message).collect();
        prop_assert!(!charges.is_empty());
        // D of each business message: its earliest delivered/read status.
        let mut delivered: HashMap<&str, i64> = HashMap::new();
        for e in &evs {
            if let EventKind::Status { status: StatusKind::Delivered | StatusKind::Read } = e.kind {
                let d = delivered.entry(&e.message_id).or_insert(e.ts);
                *d = (*d).min(e.ts);
            }
        }
        let mut charged: HashMap<&str, usize> = HashMap::new();
        for c in &charges {
            *charged.entry(c.delivered.message_id.as_str()).or_default() += 1;
        }
        for (id, n) in &charged {
            prop_assert_eq!(*n, 1, "{} charged {} times", id, n);
            prop_assert!(delivered.contains_key(id), "{} charged but never delivered", id);
        }
        for (id, d) in &delivered {
            if *d < start + ALL_MESSAGE_ERA_FROM {
                continue;
            }
            let dead = rejected.iter().filter(|r| r.record.contains(*id)).count();
            let n = charged.get(id).copied().unwrap_or(0);
            prop_assert_eq!(n + dead, 1, "{} delivered at {}: {} charges, {} dead letters", id, d, n, dead);
        }
        // Bands in (D, message id) order.
        let mut groups: BTreeMap<(String, String, &str, String), Vec<&wabill::pipeline::MessageCharged>> = BTreeMap::new();
        for c in &charges {
            if let (true, Some(counter)) = (c.billable, counter_of(c.delivered.category.as_str())) {
                groups.entry((c.portfolio.clone(), c.market.clone(), counter, c.month.clone())).or_default().push(c);
            }
        }
        let mut climbed = false;
        for (key, mut list) in groups {
            list.sort_by(|a, b| (a.delivered.delivered_at, &a.delivered.message_id).cmp(&(b.delivered.delivered_at, &b.delivered.message_id)));
            for (i, c) in list.iter().enumerate() {
                let n = i as u64 + 1;
                if let Some(t) = &c.tier {
                    prop_assert!(band_holds(t, n), "{:?}: message {} of the month got band {}", key, n, t);
                    climbed |= !t.starts_with("0:");
                }
            }
        }
        prop_assert!(climbed, "the traffic never left the first band: the property tested nothing");
    }

    /// Lateness shuffles change nothing on message-era traffic either.
    #[test]
    fn message_eras_shuffling_within_lateness_changes_nothing(seed in any::<u64>(), shuffle_seed in any::<u64>(), which in 0usize..2) {
        let s = message_era_setup();
        let mut evs = message_era_traffic(seed, PMP_STARTS[which], 2000);
        evs.sort_by_key(|e| e.ts);
        let (reference, ref_dead) = run_units(&s, evs.iter().cloned());
        let shuffled = shuffled_within_lateness(evs, shuffle_seed);
        let (again, dead) = run_units(&s, shuffled);
        prop_assert_eq!(again, reference);
        prop_assert_eq!(dead.len(), ref_dead.len());
    }
}

/// Replaying generated message-era files twice through RocksDB gives identical bytes, and
/// both message eras (and the conversation era before them) show up.
#[test]
fn message_era_determinism_through_rocksdb() {
    let mut lines = Vec::new();
    for (i, start) in PMP_STARTS.iter().enumerate() {
        let cfg = SimConfig {
            seed: 90 + i as u64,
            events: 4000,
            users: 200,
            days: 6,
            start: *start,
            send_log: true,
            ..SimConfig::default()
        };
        sim::generate(&cfg, |l| lines.push(l.to_string()));
    }
    let toml = format!("[[waba]]\nid = \"{}\"\nservice_free_tier = 10\n", sim::waba_id(0));
    let a = common::replay_lines(&lines, &toml);
    let b = common::replay_lines(&lines, &toml);
    let eras: std::collections::BTreeSet<&str> = a.records.iter().map(|r| r["era"].as_str().unwrap()).collect();
    assert_eq!(
        eras.into_iter().collect::<Vec<_>>(),
        ["cbp-2024-11", "pmp-2025-07", "pmp-2026-10"]
    );
    assert_eq!(a.output_bytes, b.output_bytes);
}

// Per-message traffic (docs/billing-rules.md §2 transitions, §6): generated days that cross
// 2025-07-01 and 2026-10-01, with send-log records and Meta's PMP pricing objects.

/// 2025-06-28T00:00:00Z and 2026-09-28T00:00:00Z: six days from each cross a per-message
/// switch in every time zone the properties configure.
const PMP_SWITCH_STARTS: [i64; 2] = [1_751_068_800, 1_790_553_600];

proptest! {
    #![proptest_config(ProptestConfig { cases: 8, .. ProptestConfig::default() })]

    /// Every delivered business message yields exactly one message charge, at its D — or
    /// none when it is dead-lettered (kind needed and unknown) or lies in a conversation
    /// still open from a conversation era; nothing else yields one.
    #[test]
    fn per_message_traffic_one_charge_per_delivered_message(seed in any::<u64>(), which in 0usize..2) {
        let s = multi_era_setup();
        let evs = era_traffic(seed, PMP_SWITCH_STARTS[which], 2500, 50);
        let (billed, rejected) = run_units(&s, evs.iter().cloned());
        let mut delivery: HashMap<(&str, &str, &str), (i64, u64)> = HashMap::new();
        for (i, e) in evs.iter().enumerate() {
            if let EventKind::Status { status: StatusKind::Delivered | StatusKind::Read } = e.kind {
                let k = (e.phone_number_id.as_str(), e.user.as_str(), e.message_id.as_str());
                let d = delivery.entry(k).or_insert((e.ts, i as u64));
                if e.ts < d.0 {
                    *d = (e.ts, i as u64);
                }
            }
        }
        let mut charges: HashMap<(&str, &str, &str), Vec<i64>> = HashMap::new();
        let mut conversations: BTreeMap<(&str, &str), Vec<&ConversationBilled>> = BTreeMap::new();
        for b in &billed {
            match b {
                Billed::Message(m) => {
                    let d = &m.delivered;
                    charges
                        .entry((d.phone_number_id.as_str(), d.user.as_str(), d.message_id.as_str()))
                        .or_default()
                        .push(d.delivered_at);
                }
                Billed::Conversation(c) => conversations
                    .entry((c.opened.phone_number_id.as_str(), c.opened.user.as_str()))
                    .or_default()
                    .push(c),
            }
        }
        prop_assert!(charges.len() > 100, "{} charges", charges.len());
        let dead: std::collections::HashSet<u64> = rejected.iter().map(|r| r.position).collect();
        for (k, (d, pos)) in &delivery {
            match charges.get(k).map(Vec::as_slice) {
                Some([at]) => prop_assert_eq!(at, d, "{:?} charged at its D", k),
                Some(more) => prop_assert!(false, "{:?} charged {} times", k, more.len()),
                None => {
                    let empty = Vec::new();
                    let in_open = conversations
                        .get(&(k.0, k.1))
                        .unwrap_or(&empty)
                        .iter()
                        .any(|c| c.opened.opened_at <= *d && *d < c.opened.expires_at);
                    prop_assert!(in_open || dead.contains(pos), "{:?} at {} neither charged, in a conversation nor dead-lettered", k, d);
                }
            }
        }
        for k in charges.keys() {
            prop_assert!(delivery.contains_key(k), "{:?} charged but never delivered", k);
        }
        for r in &rejected {
            prop_assert!(r.reason.starts_with("unknown message category"), "{}", r.reason);
        }
        // Dead letters stay a few percent of the deliveries (the generator's messages that
        // neither the send log nor Meta's pricing describe).
        prop_assert!(rejected.len() * 100 <= delivery.len() * 3, "{} of {}", rejected.len(), delivery.len());
    }
}
