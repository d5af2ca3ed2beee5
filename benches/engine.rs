//! Throughput benchmarks (criterion). Numbers and method are in BENCHMARKS.md.
//!
//! (a) `engine_in_memory`: the pure engine (windows + ledger) on already-normalised
//!     events with the in-memory store.
//! (b) `replay_path`: parse Meta JSON, normalise, engine with the RocksDB-backed store.
//!
//! Traffic: a generated month, ≥ 1 M events, 100 k users, 50 WABAs. Override the size
//! with WABILL_BENCH_EVENTS for a quick run.
//!
//! `WABILL_BENCH_ONCE=engine` (or `replay`) runs that workload exactly once instead of
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
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
