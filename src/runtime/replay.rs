//! `wabill replay`: webhook files → billing records, no broker. The embedded default and
//! the reference the Kafka path must match.

use std::fs::File;
use std::io::{self, BufRead, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde::Serialize;
use thiserror::Error;

use crate::billing::statement::{statements, MonthStatement};
use crate::config::Config;
use crate::ingest::{BadEvent, Normaliser};
use crate::pipeline::engine::{Engine, Setup};
use crate::pipeline::{Billed, Rejected};
use crate::state::{RocksBackend, StoreError};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error("cannot read {path}: {source}")]
    Input { path: String, source: io::Error },
    #[error("cannot write {path}: {source}")]
    Output { path: String, source: io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct ReplayOptions {
    pub inputs: Vec<String>,
    /// `None`: records are only counted (benchmarks).
    pub output: Option<String>,
    pub dead_letter: Option<String>,
    /// `None`: a temporary directory removed at exit.
    pub state_dir: Option<PathBuf>,
    pub progress: bool,
}

#[derive(Debug, Default, Clone)]
pub struct ReplayReport {
    pub lines: u64,
    pub bytes: u64,
    pub events: u64,
    pub dead_letters: u64,
    pub records: u64,
    pub invalid_numbers: u64,
    pub ignored: u64,
    pub duplicates: u64,
    pub late: u64,
    pub before_first_era: u64,
    /// Everything the windows stage counted (message kinds, unknown kinds, ...).
    pub windows: crate::pipeline::windows::WindowStats,
    pub elapsed: Duration,
    pub statements: Vec<MonthStatement>,
}

/// One dead-letter line (docs/billing-rules.md §8): original text, where it came from, why.
#[derive(Serialize)]
struct DeadLetterOut<'a> {
    input: &'a str,
    line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    waba_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    phone_number_id: Option<&'a str>,
    reason: &'a str,
    original: &'a str,
    /// The exact bytes, when they are not UTF-8 (then `original` is a lossy rendering).
    #[serde(skip_serializing_if = "Option::is_none")]
    original_base64: Option<String>,
}

impl<'a> DeadLetterOut<'a> {
    /// A whole input line that cannot be used (no path, WABA or number known).
    fn line(input: &'a str, line: u64, reason: &'a str, original: &'a str) -> Self {
        DeadLetterOut {
            input,
            line,
            path: None,
            waba_id: None,
            phone_number_id: None,
            reason,
            original,
            original_base64: None,
        }
    }
}

struct DeadLetters {
    out: Box<dyn Write>,
    path: String,
    count: u64,
}

impl DeadLetters {
    fn write(&mut self, d: DeadLetterOut<'_>) -> Result<(), ReplayError> {
        self.count += 1;
        let io_err = |source| ReplayError::Output {
            path: self.path.clone(),
            source,
        };
        serde_json::to_writer(&mut self.out, &d).map_err(|e| io_err(io::Error::other(e)))?;
        self.out.write_all(b"\n").map_err(io_err)
    }
}

/// Events between state checkpoints (one RocksDB write batch each).
const CHECKPOINT_EVERY: u64 = 50_000;

pub fn run(config: &Config, setup: &Setup, opts: &ReplayOptions) -> Result<ReplayReport, ReplayError> {
    let started = Instant::now();
    let _tmp;
    let state_dir = match &opts.state_dir {
        Some(d) => d.clone(),
        None => {
            _tmp = tempfile::Builder::new()
                .prefix("wabill-state-")
                .tempdir()
                .map_err(|source| ReplayError::Output {
                    path: "temporary state directory".into(),
                    source,
                })?;
            _tmp.path().to_path_buf()
        }
    };
    let backend = RocksBackend::open(&state_dir)?;
    let fresh = backend.is_empty()?;
    let mut engine = Engine::new(setup, Some(Box::new(backend)));
    if fresh {
        engine.assume_fresh_store();
    }
    let mut normaliser = Normaliser::new(config.on_premises(), config.max_payload_bytes);

    let dl_path = opts.dead_letter.clone().unwrap_or_else(|| "<stderr>".into());
    let dl_out: Box<dyn Write> = match &opts.dead_letter {
        Some(p) => Box::new(BufWriter::new(File::create(p).map_err(|source| {
            ReplayError::Output {
                path: p.clone(),
                source,
            }
        })?)),
        None => Box::new(io::stderr()),
    };
    let mut dead = DeadLetters {
        out: dl_out,
        path: dl_path,
        count: 0,
    };

    let mut report = ReplayReport::default();
    let mut billed: Vec<Billed> = Vec::new();
    let mut rejected: Vec<Rejected> = Vec::new();
    let mut events = Vec::new();
    let mut bad: Vec<BadEvent> = Vec::new();
    let mut since_checkpoint = 0u64;
    let mut progress = Progress::new(opts.progress);
    // Global position of an event: input line number across all inputs (1-based), so a
    // rejected event points back to its line.
    let mut line_base = 0u64;
    let mut starts: Vec<(u64, String)> = Vec::new();

    for input in &opts.inputs {
        starts.push((line_base, input.clone()));
        let (reader, total): (Box<dyn Read>, Option<u64>) = if input == "-" {
            (Box::new(io::stdin().lock()), None)
        } else {
            let f = File::open(input).map_err(|source| ReplayError::Input {
                path: input.clone(),
                source,
            })?;
            let len = f.metadata().ok().map(|m| m.len());
            (Box::new(f), len)
        };
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        let mut buf = Vec::with_capacity(4096);
        let mut line_no = 0u64;
        let mut read_bytes = 0u64;
        loop {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|source| ReplayError::Input {
                    path: input.clone(),
                    source,
                })?;
            if n == 0 {
                break;
            }
            line_no += 1;
            read_bytes += n as u64;
            report.lines += 1;
            report.bytes += n as u64;
            let line = match std::str::from_utf8(&buf) {
                Ok(t) => t.trim_end_matches(['\n', '\r']),
                Err(e) => {
                    // Never bill bytes we had to change: the line goes to the dead letters
                    // with its exact bytes (base64).
                    let reason = format!("line is not valid UTF-8 (invalid byte at offset {})", e.valid_up_to());
                    let lossy = String::from_utf8_lossy(&buf);
                    dead.write(DeadLetterOut {
                        original_base64: Some(BASE64.encode(&buf)),
                        ..DeadLetterOut::line(input, line_no, &reason, &lossy)
                    })?;
                    continue;
                }
            };
            if line.trim().is_empty() {
                continue;
            }
            events.clear();
            bad.clear();
            match normaliser.normalise(line, &mut events, &mut bad) {
                Ok(stats) => {
                    report.invalid_numbers += stats.invalid_numbers;
                    report.ignored += stats.ignored_changes + stats.ignored_messages;
                }
                Err(e) => {
                    let reason = e.to_string();
                    dead.write(DeadLetterOut::line(input, line_no, &reason, line))?;
                }
            }
            for b in &bad {
                dead.write(DeadLetterOut {
                    input,
                    line: line_no,
                    path: Some(&b.path),
                    waba_id: b.waba_id.as_deref(),
                    phone_number_id: b.phone_number_id.as_deref(),
                    reason: &b.reason,
                    original: &b.original,
                    original_base64: None,
                })?;
            }
            for ev in events.drain(..) {
                report.events += 1;
                since_checkpoint += 1;
                engine.push(ev, line_base + line_no, &mut billed, &mut rejected)?;
            }
            write_rejected(&mut dead, &starts, &mut rejected)?;
            if since_checkpoint >= CHECKPOINT_EVERY {
                since_checkpoint = 0;
                engine.checkpoint()?;
            }
            progress.tick(input, line_no, read_bytes, total, report.events);
        }
        line_base += line_no;
    }
    engine.finish(&mut billed, &mut rejected)?;
    write_rejected(&mut dead, &starts, &mut rejected)?;
    engine.checkpoint()?;
    engine.sync()?;
    dead.out.flush().map_err(|source| ReplayError::Output {
        path: dead.path.clone(),
        source,
    })?;

    billed.sort_by(|a, b| a.sort_key().cmp(&b.sort_key()));
    if let Some(path) = &opts.output {
        write_records(path, &billed)?;
    }
    let used_err = std::cell::RefCell::new(None);
    let engine = std::cell::RefCell::new(engine);
    report.statements = statements(
        &billed,
        |waba, month| {
            let limit = u64::from(setup.profiles.get(waba).free_tier);
            let used = engine.borrow_mut().free_tier_used(waba, month).unwrap_or_else(|e| {
                *used_err.borrow_mut() = Some(e);
                0
            });
            (used, limit)
        },
        |waba, number, month| {
            let limit = u64::from(setup.profiles.get(waba).service_free_tier);
            let used = engine
                .borrow_mut()
                .service_free_used(number, month)
                .unwrap_or_else(|e| {
                    *used_err.borrow_mut() = Some(e);
                    0
                });
            (used, limit)
        },
    );
    if let Some(e) = used_err.into_inner() {
        return Err(e.into());
    }
    let engine = engine.into_inner();
    report.records = billed.len() as u64;
    report.dead_letters = dead.count;
    report.duplicates = engine.windows.stats.duplicates + engine.ledger.stats.duplicates;
    report.late = engine.windows.stats.late;
    report.before_first_era = engine.windows.stats.before_first_era;
    report.windows = engine.windows.stats;
    report.elapsed = started.elapsed();
    progress.done(&report);
    Ok(report)
}

/// Maps a global line number back to (input, line in that input).
fn locate(starts: &[(u64, String)], position: u64) -> (&str, u64) {
    match starts.iter().rev().find(|(base, _)| *base < position) {
        Some((base, name)) => (name.as_str(), position - base),
        None => ("<input>", position),
    }
}

fn write_rejected(
    dead: &mut DeadLetters,
    starts: &[(u64, String)],
    rejected: &mut Vec<Rejected>,
) -> Result<(), ReplayError> {
    for r in rejected.drain(..) {
        let (input, line) = locate(starts, r.position);
        dead.write(DeadLetterOut::line(input, line, &r.reason, &r.record))?;
    }
    Ok(())
}

pub fn write_records(path: &str, records: &[Billed]) -> Result<(), ReplayError> {
    let io_err = |source| ReplayError::Output {
        path: path.to_string(),
        source,
    };
    let out: Box<dyn Write> = if path == "-" {
        Box::new(io::stdout().lock())
    } else {
        Box::new(File::create(Path::new(path)).map_err(io_err)?)
    };
    let mut w = BufWriter::with_capacity(1 << 20, out);
    for r in records {
        crate::codec::json::write_billed(&mut w, r).map_err(io_err)?;
    }
    w.flush().map_err(io_err)
}

/// A progress line on stderr once a run takes more than two seconds.
struct Progress {
    enabled: bool,
    started: Instant,
    last: Instant,
    shown: bool,
}

impl Progress {
    fn new(enabled: bool) -> Self {
        let now = Instant::now();
        Progress {
            enabled,
            started: now,
            last: now,
            shown: false,
        }
    }

    fn tick(&mut self, input: &str, line: u64, bytes: u64, total: Option<u64>, events: u64) {
        if !self.enabled || !line.is_multiple_of(1024) {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.started) < Duration::from_secs(2)
            || now.duration_since(self.last) < Duration::from_secs(1)
        {
            return;
        }
        self.last = now;
        self.shown = true;
        let secs = now.duration_since(self.started).as_secs_f64();
        let pct = total
            .filter(|t| *t > 0)
            .map(|t| format!(" {:.1}%", 100.0 * bytes as f64 / t as f64))
            .unwrap_or_default();
        eprint!(
            "\r{input}: line {line}{pct}, {events} events, {:.0} events/s   ",
            events as f64 / secs
        );
    }

    fn done(&mut self, r: &ReplayReport) {
        if self.enabled && self.shown {
            eprintln!();
        }
        if self.enabled {
            let secs = r.elapsed.as_secs_f64().max(1e-9);
            let conversations: u64 = r.statements.iter().map(|s| s.conversations).sum();
            let messages: u64 = r.statements.iter().map(|s| s.messages).sum();
            eprintln!(
                "replayed {} lines, {} events in {:.2}s ({:.0} events/s): {} records ({} conversations, {} message charges), {} dead letters, {} duplicates, {} late",
                r.lines,
                r.events,
                secs,
                r.events as f64 / secs,
                r.records,
                conversations,
                messages,
                r.dead_letters,
                r.duplicates,
                r.late
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    /// A line that is not UTF-8 is dead-lettered with its exact bytes in
    /// `original_base64` (standard alphabet, padded) and a lossy `original`.
    #[test]
    fn non_utf8_line_keeps_its_bytes_in_the_dead_letter() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.jsonl");
        let bad: &[u8] = b"{\"object\":\"whatsapp_business_account\",\"x\":\"\xff\xfe\"}";
        std::fs::write(&input, [bad, b"\n"].concat()).unwrap();
        let dead = dir.path().join("dead.jsonl");
        let config = crate::config::Config::default();
        let setup = super::Setup::new(
            &config,
            crate::billing::RateCard::bundled_sample().unwrap(),
            crate::billing::MarketMap::bundled(),
        )
        .unwrap();
        let opts = super::ReplayOptions {
            inputs: vec![input.display().to_string()],
            output: None,
            dead_letter: Some(dead.display().to_string()),
            state_dir: Some(dir.path().join("state")),
            progress: false,
        };
        let report = super::run(&config, &setup, &opts).unwrap();
        assert_eq!(report.dead_letters, 1);
        let text = std::fs::read_to_string(&dead).unwrap();
        let d: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(d["line"], 1);
        assert!(d["reason"].as_str().unwrap().contains("not valid UTF-8"), "{d}");
        let bytes = super::BASE64.decode(d["original_base64"].as_str().unwrap()).unwrap();
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
        assert_eq!(bytes, bad, "the exact bytes, not the lossy text");
        assert!(d["original"].as_str().unwrap().contains('\u{fffd}'), "{d}");
    }
}
