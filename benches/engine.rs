//! Throughput benchmarks (criterion). Numbers and method are in BENCHMARKS.md.
//!
//! (a) `engine_in_memory`: the pure engine (windows + ledger) on already-normalised
//!     events with the in-memory store.
//! (b) `replay_path`: parse Meta JSON, normalise, engine with the RocksDB-backed store.
//!
//! Traffic: a generated month, ≥ 1 M events, 100 k users, 50 WABAs. Override the size
//! with WABILL_BENCH_EVENTS for a quick run.
//!
//! (c) `state_floor`: not wabill's engine but a lower bound for any engine on this
//!     machine. It runs the SPEC §3 state machine (`ScopeState`) and the 7-day dedupe over
//!     the same events, already in application order, with the idealised state a
//!     redesigned engine could hope for: message ids as precomputed 128-bit fingerprints
//!     in one flat hash table, scopes as a dense array indexed by interned ids. No
//!     reordering, no records, no ledger. It is how #2's 10 M events/s target was checked
//!     against what the hardware allows.
//!
//! `WABILL_BENCH_ONCE=engine` (or `replay`, `floor`, `floor_ids`) runs that workload exactly once instead of
//! criterion, for instruction counts: `valgrind --tool=callgrind
//! --toggle-collect='engine::run_*'` counts only the measured function.

use std::sync::Arc;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

use wabill::billing::{MarketMap, RateCard};
use wabill::config::{Config, Profiles};
use wabill::ingest::{MessageEvent, Normaliser};
use wabill::pipeline::engine::{Engine, Setup};
use wabill::sim::{self, SimConfig};
use wabill::state::RocksBackend;

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
}

/// Interns scopes, fingerprints message ids and sorts into application order (SPEC §3):
/// all outside the measured region.
fn floor_events(events: &[MessageEvent]) -> (Vec<FloorEvent>, Vec<(String, String)>) {
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
    let mut out: Vec<(FloorEvent, u8)> = events
        .iter()
        .map(|e| {
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
                EventKind::Status { .. } => 3,
            };
            let class = u8::from(!matches!(e.kind, EventKind::Inbound { .. }));
            let ev = FloorEvent {
                ts: e.ts,
                fp: fp(&e.message_id),
                scope,
                bit: e.kind.bit(),
                what,
            };
            (ev, class * 8 + e.kind.rank())
        })
        .collect();
    out.sort_by_key(|(e, order)| (e.ts, *order >> 3, e.fp, *order & 7));
    (out.into_iter().map(|(e, _)| e).collect(), names)
}

/// (c): the floor. Returns conversations opened (it should equal (a)'s count: the same
/// decisions, minus everything around them). With `ids`, each opened conversation also
/// gets its SPEC §8 id, the least any output record needs.
#[inline(never)]
fn run_floor(
    evs: &[FloorEvent],
    names: &[(String, String)],
    calendar: &wabill::billing::era::EraCalendar,
    ids: bool,
) -> usize {
    use wabill::billing::window::{DeliveryDecision, ScopeState};
    const DELIVERY_APPLIED: u8 = 0x80;
    const HORIZON: wabill::billing::Ts = 7 * 86_400;
    let mut seen: hashbrown::HashMap<u128, (u8, wabill::billing::Ts), rustc_hash::FxBuildHasher> =
        hashbrown::HashMap::default();
    let mut scopes = vec![ScopeState::default(); names.len()];
    let mut opened = 0;
    let mut id_bytes = 0;
    for (i, e) in evs.iter().enumerate() {
        let slot = seen.entry(e.fp).or_insert((0, 0));
        if slot.1 <= e.ts {
            *slot = (0, 0);
        }
        if slot.0 & e.bit != 0 {
            continue;
        }
        slot.0 |= e.bit;
        slot.1 = slot.1.max(e.ts + HORIZON);
        match e.what {
            0 | 1 => {
                let s = &mut scopes[e.scope as usize];
                *s = s.live_at(e.ts);
                s.on_inbound(e.ts, e.what == 1);
            }
            2 if slot.0 & DELIVERY_APPLIED == 0 => {
                slot.0 |= DELIVERY_APPLIED;
                let s = &mut scopes[e.scope as usize];
                *s = s.live_at(e.ts);
                if let DeliveryDecision::Opened(c) = s.on_delivery_2022(e.ts, calendar.fep_duration(e.ts)) {
                    opened += 1;
                    if ids {
                        let (phone, user) = &names[e.scope as usize];
                        id_bytes += wabill::billing::ids::conversation_id(phone, user, "", c.opened_at).len();
                    }
                }
            }
            _ => {}
        }
        // Purge as the engine does (every 50 k events, two days' margin).
        if i % 50_000 == 49_999 {
            let before = e.ts - 2 * 86_400;
            seen.retain(|_, v| v.1 >= before);
        }
    }
    std::hint::black_box(id_bytes);
    opened
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
            "floor" | "floor_ids" => {
                let (fev, names) = floor_events(&events);
                let calendar = wabill::billing::era::EraCalendar::new(&chrono_tz::UTC);
                let started = std::time::Instant::now();
                let cpu_started = thread_cpu_secs();
                let n = run_floor(&fev, &names, &calendar, which == "floor_ids");
                let secs = started.elapsed().as_secs_f64();
                let cpu = thread_cpu_secs() - cpu_started;
                eprintln!(
                    "{which}: {n} conversations, {secs:.3} s, {:.0} events/s ({:.1} ns/event); this thread's CPU {cpu:.3} s",
                    n_events as f64 / secs,
                    secs * 1e9 / n_events as f64
                );
                std::process::exit(0);
            }
            "replay" => {
                let dir = tempfile::tempdir().unwrap();
                run_replay(&s, &lines, dir.path())
            }
            other => panic!("WABILL_BENCH_ONCE={other}: expected engine or replay"),
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

    g.bench_function("replay_path_rocksdb", |b| {
        b.iter_batched(
            || tempfile::tempdir().unwrap(),
            |dir| {
                run_replay(&s, &lines, dir.path());
                dir
            },
            BatchSize::PerIteration,
        )
    });

    let (fev, names) = floor_events(&events);
    let calendar = wabill::billing::era::EraCalendar::new(&chrono_tz::UTC);
    g.bench_function("state_floor", |b| b.iter(|| run_floor(&fev, &names, &calendar, false)));
    g.bench_function("state_floor_with_ids", |b| {
        b.iter(|| run_floor(&fev, &names, &calendar, true))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
