//! Throughput benchmarks (criterion). Numbers and method are in BENCHMARKS.md.
//!
//! (a) `engine_in_memory`: the pure engine (windows + ledger) on already-normalised
//!     events with the in-memory store.
//! (b) `replay_path`: parse Meta JSON, normalise, engine with the RocksDB-backed store;
//!     `replay_path_rocksdb_cbp2023` the same on a generated `cbp-2023` month (categories,
//!     send-log records, Meta's category pricing objects).
//!
//! Traffic: a generated month, ≥ 1 M events, 100 k users, 50 WABAs. Override the size
//! with WABILL_BENCH_EVENTS for a quick run.
//!
//! (c) `state_floor` and (d) `state_floor_full`: not wabill's engine but what a redesign
//!     of it could reach on this machine. Both keep the windows state in the idealised
//!     layout such a redesign would use (message ids as precomputed 128-bit fingerprints
//!     in one flat table, scopes in a dense array by interned id) and decide with the
//!     same docs/billing-rules.md §3 functions. (c) is that state alone, events pre-sorted, no output;
//!     (d) puts it inside wabill's own reorder buffer, era check, conversation ids,
//!     records and ledger. They are how #2's 10 M events/s target was checked against
//!     what the hardware allows.
//!
//! `WABILL_BENCH_ONCE=engine` (or `replay`, `replay_cbp2023`, `floor`, `floor_full`) runs that workload exactly once instead of
//! criterion, for instruction counts: `valgrind --tool=callgrind
//! --toggle-collect='engine::run_*'` counts only the measured function.

use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use wabill::billing::era::EraCalendar;
use wabill::billing::policy::{Cbp2022, Delivery, EraPolicy};
use wabill::billing::window::{DeliveryDecision, OpenConversation};
use wabill::billing::Ts;
use wabill::billing::{MarketMap, RateCard};
use wabill::config::{Config, Profiles};
use wabill::ingest::{MessageEvent, Normaliser};
use wabill::pipeline::engine::{Engine, Setup, PURGE_MARGIN};
use wabill::pipeline::reorder::Admit;
use wabill::pipeline::Unit;
use wabill::sim::{self, SimConfig};
use wabill::state::RocksBackend;
use wabill::state::WriteSet;

fn events_target() -> u64 {
    std::env::var("WABILL_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

fn month_lines() -> Vec<String> {
    let cfg = SimConfig::benchmark_month(events_target());
    let mut lines = Vec::new();
    sim::generate(&cfg, |l| lines.push(l.to_string()));
    lines
}

/// The same month in `cbp-2023` (July 2023): categories, send-log records (about one per
/// business message, as extra lines) and Meta's category pricing objects.
fn month_lines_cbp2023() -> Vec<String> {
    let cfg = SimConfig {
        start: 1_688_169_600, // 2023-07-01T00:00:00Z
        send_log: true,
        ..SimConfig::benchmark_month(events_target())
    };
    let mut lines = Vec::new();
    sim::generate(&cfg, |l| lines.push(l.to_string()));
    lines
}

fn setup() -> Setup {
    let cfg = Config::default();
    let mut s = Setup::new(&cfg, RateCard::bundled_sample().unwrap(), MarketMap::bundled()).unwrap();
    s.profiles = Arc::new(Profiles::default_profiles());
    s
}

fn normalise(lines: &[String]) -> Vec<MessageEvent> {
    let mut n = Normaliser::new(None, 4 << 20);
    let mut evs = Vec::new();
    let mut bad = Vec::new();
    for l in lines {
        n.normalise(l, &mut evs, &mut bad).unwrap();
    }
    evs
}

/// (a): windows + ledger over normalised events, in-memory store.
#[inline(never)]
fn run_engine(s: &Setup, evs: Vec<MessageEvent>) -> usize {
    let mut engine = Engine::new(s, None);
    // The consumer takes records in batches of 4 k, as a sink would.
    let mut billed = Vec::with_capacity(1 << 13);
    let mut rejected = Vec::new();
    let mut total = 0;
    for (i, ev) in evs.into_iter().enumerate() {
        engine.push(ev, i as u64, &mut billed, &mut rejected).unwrap();
        if billed.len() >= 4096 {
            total += billed.len();
            billed.clear();
        }
    }
    engine.finish(&mut billed, &mut rejected).unwrap();
    total + billed.len()
}

/// (b): Meta JSON lines → normaliser → engine with the RocksDB store, checkpoints every
/// 50 k events, as `wabill replay` does on a new state directory.
#[inline(never)]
fn run_replay(s: &Setup, lines: &[String], dir: &std::path::Path) -> usize {
    let backend = RocksBackend::open(dir).unwrap();
    let fresh = backend.is_empty().unwrap();
    let mut engine = Engine::new(s, Some(Box::new(backend)));
    if fresh {
        engine.assume_fresh_store();
    }
    let mut norm = Normaliser::new(None, 4 << 20);
    let mut evs = Vec::new();
    let mut bad = Vec::new();
    let mut billed = Vec::with_capacity(1 << 16);
    let mut rejected = Vec::new();
    let mut pos = 0u64;
    let mut since = 0u64;
    let mut total = 0;
    for l in lines {
        pos += 1;
        norm.normalise(l, &mut evs, &mut bad).unwrap();
        for ev in evs.drain(..) {
            since += 1;
            engine.push(ev, pos, &mut billed, &mut rejected).unwrap();
        }
        if since >= 50_000 {
            since = 0;
            engine.checkpoint().unwrap();
        }
        if billed.len() > 60_000 {
            total += billed.len();
            billed.clear();
        }
    }
    engine.finish(&mut billed, &mut rejected).unwrap();
    engine.checkpoint().unwrap();
    engine.sync().unwrap();
    total + billed.len()
}

/// One event of the floor workload: everything precomputed that a redesigned normaliser
/// could hand the engine.
#[derive(Clone, Copy)]
struct FloorEvent {
    ts: wabill::billing::Ts,
    /// 128-bit fingerprint of the message id (dedupe key).
    fp: u128,
    /// Interned (business number, user) scope.
    scope: u32,
    bit: u8,
    /// 0 inbound (1 = from an ad), 2 delivered/read, 3 other statuses.
    what: u8,
    /// Application-order tie breaks (docs/billing-rules.md §3): inbound before statuses, lifecycle rank.
    class: u8,
    rank: u8,
    /// Index of the source event (its strings, for records).
    src: u32,
}

/// Strings a redesigned engine would keep out of the hot path and read only to write a
/// record: per scope (business number, user) and per source event.
struct FloorNames<'a> {
    scopes: Vec<(String, String)>,
    events: &'a [MessageEvent],
}

/// Interns scopes and fingerprints message ids, keeping arrival order (`sorted` gives
/// application order): all outside the measured region.
fn floor_events(events: &[MessageEvent]) -> (Vec<FloorEvent>, FloorNames<'_>) {
    use std::hash::{Hash, Hasher};
    use wabill::ingest::{EventKind, Referral, StatusKind};
    let mut scopes = std::collections::HashMap::new();
    let mut names = Vec::new();
    let fp = |id: &str| {
        let mut a = std::collections::hash_map::DefaultHasher::new();
        id.hash(&mut a);
        let mut b = std::collections::hash_map::DefaultHasher::new();
        (id, 0x5bd1e995u32).hash(&mut b);
        (u128::from(a.finish()) << 64) | u128::from(b.finish())
    };
    let arrival: Vec<FloorEvent> = events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let n = scopes.len() as u32;
            let scope = *scopes
                .entry((e.phone_number_id.clone(), e.user.clone()))
                .or_insert_with(|| {
                    names.push((e.phone_number_id.clone(), e.user.clone()));
                    n
                });
            let what = match e.kind {
                EventKind::Inbound { referral } => u8::from(referral == Referral::Ad),
                EventKind::Status {
                    status: StatusKind::Delivered | StatusKind::Read,
                } => 2,
                EventKind::Status { .. } | EventKind::SendLog => 3,
            };
            let class = u8::from(!matches!(e.kind, EventKind::Inbound { .. }));
            FloorEvent {
                ts: e.ts,
                fp: fp(&e.message_id),
                scope,
                bit: e.kind.bit(),
                what,
                class,
                rank: e.kind.rank(),
                src: i as u32,
            }
        })
        .collect();
    let names = FloorNames { scopes: names, events };
    (arrival, names)
}

/// The floor workload in application order (what the reorder buffer would release).
fn sorted(arrival: &[FloorEvent]) -> Vec<FloorEvent> {
    let mut v = arrival.to_vec();
    v.sort_by_key(|e| (e.ts, e.class, e.fp, e.rank));
    v
}

/// The windows stage's state with the idealised layout: fingerprint-keyed dedupe, scopes
/// in a dense array. Decisions are docs/billing-rules.md §3's, through the same `ScopeState` functions.
struct FloorState {
    seen: hashbrown::HashMap<u128, (u8, Ts), rustc_hash::FxBuildHasher>,
    scopes: Vec<wabill::billing::window::ScopeState>,
    /// How long a message id is remembered (`Setup::dedupe_horizon`).
    dedupe_horizon: Ts,
}

impl FloorState {
    const DELIVERY_APPLIED: u8 = 0x80;

    fn new(n_scopes: usize, dedupe_horizon: Ts) -> Self {
        FloorState {
            seen: hashbrown::HashMap::default(),
            scopes: vec![Default::default(); n_scopes],
            dedupe_horizon,
        }
    }

    #[inline]
    fn apply(&mut self, e: &FloorEvent, calendar: &EraCalendar) -> Option<OpenConversation> {
        let slot = self.seen.entry(e.fp).or_insert((0, 0));
        if slot.1 <= e.ts {
            *slot = (0, 0);
        }
        if slot.0 & e.bit != 0 {
            return None;
        }
        slot.0 |= e.bit;
        slot.1 = slot.1.max(e.ts.saturating_add(self.dedupe_horizon));
        match e.what {
            0 | 1 => {
                let s = &mut self.scopes[e.scope as usize];
                *s = s.live_at(e.ts);
                s.on_inbound(e.ts, e.what == 1);
                None
            }
            2 if slot.0 & Self::DELIVERY_APPLIED == 0 => {
                slot.0 |= Self::DELIVERY_APPLIED;
                let s = &mut self.scopes[e.scope as usize];
                *s = s.live_at(e.ts);
                let no = || false;
                let delivery = Delivery {
                    d: e.ts,
                    kind: None,
                    calendar,
                    auth_international: &no,
                };
                match Cbp2022.on_delivery(s, &delivery) {
                    DeliveryDecision::Opened(c) => Some(c),
                    DeliveryDecision::Joined(_) | DeliveryDecision::NeedsKind | DeliveryDecision::Message(_) => None,
                }
            }
            _ => None,
        }
    }

    /// Drops dedupe entries that expired `PURGE_MARGIN` before `now`, as the engine's
    /// checkpoint does.
    fn purge(&mut self, now: Ts) {
        let before = now.saturating_sub(PURGE_MARGIN);
        self.seen.retain(|_, v| v.1 >= before);
    }
}

/// (c) `state_floor`: the idealised state alone, events already in application order.
/// Returns conversations opened (it should equal (a)'s count: the same decisions).
#[inline(never)]
fn run_floor(evs: &[FloorEvent], n_scopes: usize, calendar: &EraCalendar, s: &Setup) -> usize {
    let mut st = FloorState::new(n_scopes, s.dedupe_horizon);
    let mut opened = 0;
    for (i, e) in evs.iter().enumerate() {
        opened += usize::from(st.apply(e, calendar).is_some());
        if i % 50_000 == 49_999 {
            st.purge(e.ts);
        }
    }
    opened
}

/// (d) `state_floor_full`: the idealised state inside everything else the engine does,
/// with wabill's own parts: events in arrival order through the reorder buffer (compact
/// keys and items), the era check, conversation ids and records, and the real ledger
/// (free tier, prices, months). What a redesign around interned ids could reach.
#[inline(never)]
fn run_floor_full(arrival: &[FloorEvent], names: &FloorNames, s: &Setup) -> usize {
    use wabill::billing::policy::policy_for;
    use wabill::pipeline::ledger::{LedgerOutput, LedgerStage};
    use wabill::pipeline::reorder::ReorderBuffer;
    use wabill::pipeline::ConversationOpened;
    let calendar = EraCalendar::new(&chrono_tz::UTC);
    let mut st = FloorState::new(names.scopes.len(), s.dedupe_horizon);
    let mut reorder: ReorderBuffer<(Ts, u8, u128, u8), FloorEvent> = ReorderBuffer::new(s.lateness);
    let mut ledger = s.ledger_stage();
    ledger.memory_only();
    let mut lout = LedgerOutput::default();
    let mut billed = 0;
    let mut since_purge = 0;
    let apply = |e: &FloorEvent, late: bool, st: &mut FloorState, ledger: &mut LedgerStage, lout: &mut LedgerOutput| {
        let Some(policy) = policy_for(calendar.era_at(e.ts).era.id) else {
            return;
        };
        if let Some(c) = st.apply(e, &calendar) {
            let (phone, user) = &names.scopes[e.scope as usize];
            let src = &names.events[e.src as usize];
            let opened = ConversationOpened {
                conversation_id: wabill::billing::ids::conversation_id(
                    phone,
                    user,
                    policy.id_category(c.origin),
                    c.opened_at,
                ),
                waba_id: src.waba_id.clone(),
                phone_number_id: phone.clone(),
                user: user.clone(),
                era: policy.era(),
                origin: c.origin,
                opened_at: c.opened_at,
                expires_at: c.expires_at(),
                opening_message_id: src.message_id.clone(),
                country: src.country,
                late,
            };
            ledger
                .push(None, Unit::Conversation(opened), u64::from(e.src), lout)
                .unwrap();
        }
    };
    for e in arrival {
        match reorder.admit(e.ts, (e.ts, e.class, e.fp, e.rank), *e) {
            Admit::Late(_, e) => apply(&e, true, &mut st, &mut ledger, &mut lout),
            Admit::Buffered(_) => {}
        }
        while let Some((_, _, e)) = reorder.pop_ready(|k| k.0) {
            apply(&e, false, &mut st, &mut ledger, &mut lout);
        }
        since_purge += 1;
        if since_purge == 50_000 {
            since_purge = 0;
            st.purge(reorder.stream_time());
            ledger.drain(&mut WriteSet::default(), false);
        }
        if lout.billed.len() >= 4096 {
            billed += lout.billed.len();
            lout.billed.clear();
        }
    }
    while let Some((_, _, e)) = reorder.pop_any() {
        apply(&e, false, &mut st, &mut ledger, &mut lout);
    }
    ledger.flush(None, &mut lout).unwrap();
    billed + lout.billed.len()
}

/// CPU time of the calling thread: less sensitive than wall time to whatever else the
/// machine runs, and it answers "on one core" directly.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return f64::NAN;
    }
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

fn bench(c: &mut Criterion) {
    let lines = month_lines();
    let events = normalise(&lines);
    let n_events = events.len() as u64;
    eprintln!("bench traffic: {} payload lines, {} events", lines.len(), n_events);
    let s = setup();

    if let Ok(which) = std::env::var("WABILL_BENCH_ONCE") {
        let started = std::time::Instant::now();
        let cpu_started = thread_cpu_secs();
        let n = match which.as_str() {
            "engine" => run_engine(&s, events),
            "replay" => {
                let dir = tempfile::tempdir().unwrap();
                run_replay(&s, &lines, dir.path())
            }
            "replay_cbp2023" => {
                let lines = month_lines_cbp2023();
                eprintln!(
                    "cbp-2023 traffic: {} lines, {} events",
                    lines.len(),
                    normalise(&lines).len()
                );
                let dir = tempfile::tempdir().unwrap();
                let started = std::time::Instant::now();
                let n = run_replay(&s, &lines, dir.path());
                eprintln!(
                    "replay_cbp2023: {n} conversations, {:.3} s",
                    started.elapsed().as_secs_f64()
                );
                std::process::exit(0);
            }
            "floor" | "floor_full" => {
                let (arrival, names) = floor_events(&events);
                let in_order = sorted(&arrival);
                let calendar = EraCalendar::new(&chrono_tz::UTC);
                let started = std::time::Instant::now();
                let cpu_started = thread_cpu_secs();
                let n = if which == "floor" {
                    run_floor(&in_order, names.scopes.len(), &calendar, &s)
                } else {
                    run_floor_full(&arrival, &names, &s)
                };
                let secs = started.elapsed().as_secs_f64();
                let cpu = thread_cpu_secs() - cpu_started;
                eprintln!(
                    "{which}: {n} conversations, {secs:.3} s, {:.0} events/s ({:.1} ns/event); this thread's CPU {cpu:.3} s",
                    n_events as f64 / secs,
                    secs * 1e9 / n_events as f64
                );
                std::process::exit(0);
            }
            other => panic!("WABILL_BENCH_ONCE={other}: expected engine, replay, floor or floor_full"),
        };
        let secs = started.elapsed().as_secs_f64();
        let cpu = thread_cpu_secs() - cpu_started;
        eprintln!(
            "{which}: {n} conversations, {secs:.3} s, {:.0} events/s; this thread's CPU {cpu:.3} s ({:.0} events per CPU-second; RocksDB's background threads not included)",
            n_events as f64 / secs,
            n_events as f64 / cpu
        );
        std::process::exit(0);
    }

    let mut g = c.benchmark_group("wabill");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.throughput(Throughput::Elements(n_events));

    g.bench_function("engine_in_memory", |b| {
        b.iter_batched(|| events.clone(), |evs| run_engine(&s, evs), BatchSize::PerIteration)
    });

    // The replay path on the cbp-2022 month, then on the cbp-2023 month (its own element
    // count: send-log records are events too).
    let lines_2023 = month_lines_cbp2023();
    let n_2023 = normalise(&lines_2023).len() as u64;
    eprintln!("cbp-2023 bench traffic: {} lines, {} events", lines_2023.len(), n_2023);
    for (name, month, n) in [
        ("replay_path_rocksdb", &lines, n_events),
        ("replay_path_rocksdb_cbp2023", &lines_2023, n_2023),
    ] {
        g.throughput(Throughput::Elements(n));
        g.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| {
                    run_replay(&s, month, dir.path());
                    dir
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.throughput(Throughput::Elements(n_events));

    let (arrival, names) = floor_events(&events);
    let in_order = sorted(&arrival);
    let calendar = EraCalendar::new(&chrono_tz::UTC);
    g.bench_function("state_floor", |b| {
        b.iter(|| run_floor(&in_order, names.scopes.len(), &calendar, &s))
    });
    g.bench_function("state_floor_full", |b| b.iter(|| run_floor_full(&arrival, &names, &s)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
