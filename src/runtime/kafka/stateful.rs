//! Stages 2 and 3 on Kafka: `windows` (events → conversations) and `ledger`
//! (conversations → billing), each with one RocksDB store per assigned partition.
//!
//! Batch protocol (README.md "Delivery guarantee"):
//! 1. poll up to `batch_max` records; apply them to their partition's stage;
//! 2. produce the outputs and wait for every acknowledgement;
//! 3. changelog the state changes (with the input offset) and wait for acknowledgement;
//! 4. write the same changes to RocksDB in one atomic write batch;
//! 5. commit the input offsets.
//!
//! A crash between any two steps replays input from the store's own offset; outputs are
//! deterministic, so replays produce byte-identical records, which the ledger dedupes.
//! Rebalances happen only inside `poll`, i.e. between batches, when nothing is in flight.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::clients::{group_consumer, GroupConsumer, Out, OutRecord, RebalanceEvent};
use super::store::PartitionStore;
use super::{classify, topics, Framings, KafkaRunError, Polled, POLL};
use crate::billing::Ts;
use crate::codec::avro::{
    decode_event, decode_unit, encode_billing, encode_dead_letter, encode_unit, DeadLetterRecord, Framing,
};
use crate::config::{Config, Profiles};
use crate::ops::health::health;
use crate::ops::metrics::{metrics, DeadLetterReason, StageHandles};
use crate::pipeline::engine::{Setup, PURGE_MARGIN};
use crate::pipeline::ledger::{LedgerOutput, LedgerStage, LedgerStats};
use crate::pipeline::pending::{meta_i64, read_meta_i64};
use crate::pipeline::records::{Billed, Rejected};
use crate::pipeline::windows::{WindowStats, WindowsOutput, WindowsStage};
use crate::state::{Backend, Family, WriteSet};

/// Key prefix of watermark control records on the conversations topic (no WABA id
/// starts with a NUL byte).
const WATERMARK_KEY: &[u8] = b"\0wabill-watermark";

/// What the metrics read from a stage: counters published as differences once per
/// batch, never per record.
trait Observed {
    type Snapshot: Copy + Default;
    const NAME: &'static str;
    fn snapshot(&self) -> Self::Snapshot;
    fn publish(now: &Self::Snapshot, last: &Self::Snapshot);
    fn waiting(&self) -> usize;
    fn event_time(&self) -> Ts;
}

impl Observed for WindowsStage {
    type Snapshot = WindowStats;
    const NAME: &'static str = "windows";
    fn snapshot(&self) -> WindowStats {
        self.stats
    }
    fn publish(now: &WindowStats, last: &WindowStats) {
        metrics().publish_windows(now, last);
    }
    fn waiting(&self) -> usize {
        self.buffered()
    }
    fn event_time(&self) -> Ts {
        self.stream_time()
    }
}

impl Observed for LedgerStage {
    type Snapshot = LedgerStats;
    const NAME: &'static str = "ledger";
    fn snapshot(&self) -> LedgerStats {
        self.stats
    }
    fn publish(now: &LedgerStats, last: &LedgerStats) {
        metrics().publish_ledger(now, last);
    }
    fn waiting(&self) -> usize {
        self.buffered()
    }
    fn event_time(&self) -> Ts {
        self.stream_time()
    }
}

struct Task<S: Observed> {
    store: PartitionStore,
    stage: S,
    /// Stage counters as last published to the metrics.
    reported: S::Snapshot,
    /// Highest input offset consumed (applied or waiting in the stage's buffer).
    consumed: Option<i64>,
    last_input: Instant,
    dirty: bool,
    /// Watermark last announced downstream (windows only).
    announced: Ts,
    /// Upstream watermarks by source partition (ledger only).
    upstream: HashMap<i32, Ts>,
    /// Set by an idle flush (caught up, nothing waiting); cleared by new input.
    idle_flushed: bool,
    /// When an idle partition may next ask the broker whether it is caught up.
    next_idle_check: Option<Instant>,
    /// Exactly-once: this task's transactional producer (its outputs, changelog and input
    /// offsets commit atomically). `None`: the stage's shared producer.
    txn: Option<Out>,
}

impl<S: Observed> Task<S> {
    fn new(store: PartitionStore, stage: S, upstream: HashMap<i32, Ts>, txn: Option<Out>) -> Self {
        Task {
            store,
            reported: stage.snapshot(),
            stage,
            consumed: None,
            last_input: Instant::now(),
            dirty: false,
            announced: Ts::MIN,
            upstream,
            idle_flushed: false,
            next_idle_check: None,
            txn,
        }
    }

    /// Where this task's records go: its transaction, or the shared producer.
    fn producer<'a>(&'a self, shared: &'a Out) -> &'a Out {
        self.txn.as_ref().unwrap_or(shared)
    }
}

/// Exactly-once: the task's transactional producer, registered (fencing a predecessor and
/// aborting what it left open) before the store restores, so the changelog's last
/// stable offset is not held back by a dead transaction.
pub(super) fn task_producer(k: &crate::config::KafkaConfig, stage: &str, p: i32) -> Result<Option<Out>, KafkaRunError> {
    if !k.exactly_once() {
        return Ok(None);
    }
    let txn = Out::new(k, Some(&k.transactional_id(stage, p)))?;
    txn.start_transactions(Duration::from_secs(60))?;
    Ok(Some(txn))
}

/// One step of a batch: a record admitted to its partition's task, a record to skip
/// (partition not ours, or already applied before a restart), a retry, or the end.
enum Next<'c> {
    Record(BorrowedMessage<'c>),
    Skip,
    /// A transient consume error: poll again (does not count toward the batch).
    Retry,
    Done,
}

/// Polls one record for a stateful stage, applying assignment changes seen around the
/// poll first (so a partition is restored before any of its records is applied), and
/// admits it by offset.
fn next_record<'c, S: Observed>(
    consumer: &'c GroupConsumer,
    tasks: &mut BTreeMap<i32, Task<S>>,
    open: &impl Fn(i32) -> Result<Task<S>, KafkaRunError>,
    first: bool,
) -> Result<Next<'c>, KafkaRunError> {
    for ev in take_rebalance_events(consumer) {
        apply_rebalance(ev, tasks, open)?;
    }
    let m = match classify(consumer.poll(if first { POLL } else { Duration::ZERO })) {
        Polled::Record(m) => m,
        Polled::Nothing => return Ok(Next::Done),
        Polled::Retry => return Ok(Next::Retry),
    };
    for ev in take_rebalance_events(consumer) {
        apply_rebalance(ev, tasks, open)?;
    }
    let Some(t) = tasks.get_mut(&m.partition()) else {
        return Ok(Next::Skip);
    };
    if !admit_offset(t, m.offset()) {
        return Ok(Next::Skip);
    }
    t.dirty = true;
    Ok(Next::Record(m))
}

fn dead_letter(
    out: &Out,
    dlq: &str,
    stage: &str,
    m: &BorrowedMessage<'_>,
    (class, reason): (DeadLetterReason, String),
    framing: &Framing,
) -> Result<(), KafkaRunError> {
    metrics().dead_letter(stage, class);
    let d = DeadLetterRecord {
        stage: stage.into(),
        source_topic: m.topic().to_string(),
        source_partition: m.partition(),
        source_offset: m.offset(),
        reason,
        original: m.payload().unwrap_or_default().to_vec(),
        key: m.key().map(<[u8]>::to_vec),
    };
    let mut buf = Vec::new();
    encode_dead_letter(&d, framing, &mut buf);
    out.send(OutRecord {
        topic: dlq,
        key: m.key().unwrap_or_default(),
        value: Some(&buf),
        partition: None,
        headers: None,
    })
}

#[allow(clippy::too_many_arguments)]
fn rejected_dead_letter(
    out: &Out,
    dlq: &str,
    stage: &str,
    source: &str,
    partition: i32,
    r: &Rejected,
    class: DeadLetterReason,
    framing: &Framing,
) -> Result<(), KafkaRunError> {
    metrics().dead_letter(stage, class);
    let d = DeadLetterRecord {
        stage: stage.into(),
        source_topic: source.to_string(),
        source_partition: partition,
        source_offset: r.position as i64,
        reason: r.reason.clone(),
        original: r.record.as_bytes().to_vec(),
        key: None,
    };
    let mut buf = Vec::new();
    encode_dead_letter(&d, framing, &mut buf);
    out.send(OutRecord {
        topic: dlq,
        key: &[],
        value: Some(&buf),
        partition: None,
        headers: None,
    })
}

/// Whether a partition without input since `last_input` should ask the broker now if it
/// is caught up: after `idle`, then at most once per `idle`. Each ask is a broker round
/// trip (ListOffsets); asking on every turn of the loop flooded a slow broker (Tansu on
/// SQLite) with them until its fetches timed out and the stage stopped receiving records.
fn idle_check_due(last_input: Instant, next_check: &mut Option<Instant>, idle: Duration) -> bool {
    if last_input.elapsed() < idle {
        return false;
    }
    let now = Instant::now();
    if next_check.is_some_and(|at| now < at) {
        return false;
    }
    *next_check = Some(now + idle);
    true
}

/// A partition is idle only when it is caught up: nothing waits in the broker beyond
/// what was consumed. Slow fetches (a broker failing over, request errors) are not
/// idleness, and flushing then would apply events out of event-time order.
fn caught_up(consumer: &GroupConsumer, topic: &str, partition: i32, consumed: Option<i64>) -> bool {
    match consumer.fetch_watermarks(topic, partition, Duration::from_secs(2)) {
        Ok((_, high)) => consumed.map_or(high == 0, |c| c + 1 >= high),
        Err(_) => false,
    }
}

pub(super) fn take_rebalance_events(consumer: &GroupConsumer) -> Vec<RebalanceEvent> {
    consumer
        .context()
        .events
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default()
}

/// Common batch tail: persist every dirty task (changelog, then local) and commit.
fn persist_and_commit<S: Observed>(
    out: &Out,
    consumer: &GroupConsumer,
    source: &str,
    tasks: &mut BTreeMap<i32, Task<S>>,
    mut drain: impl FnMut(&mut Task<S>, &mut WriteSet),
) -> Result<(), KafkaRunError> {
    let mut sets = Vec::new();
    for (p, t) in tasks.iter_mut() {
        if !t.dirty {
            continue;
        }
        let Some(consumed) = t.consumed else { continue };
        let _task = tracing::debug_span!("persist", stage = S::NAME, partition = *p, offset = consumed).entered();
        let mut set = WriteSet::default();
        drain(t, &mut set);
        t.store.send_changelog(t.producer(out), &mut set, consumed)?;
        sets.push((*p, set, consumed));
    }
    if sets.is_empty() {
        return Ok(());
    }
    out.flush(Duration::from_secs(120))?;
    let group = consumer.group_metadata();
    let mut tpl = TopicPartitionList::new();
    for (p, set, consumed) in sets {
        if let Some(t) = tasks.get_mut(&p) {
            if let Some(txn) = &t.txn {
                // Outputs, changelog and input offset become visible together, or not at
                // all; the local store follows only a committed transaction.
                let mut offsets = TopicPartitionList::new();
                offsets.add_partition_offset(source, p, Offset::Offset(consumed + 1))?;
                let group = group
                    .as_ref()
                    .ok_or_else(|| KafkaRunError::Config("no consumer group metadata for the transaction".into()))?;
                txn.commit_transaction(&offsets, group, Duration::from_secs(120))?;
                t.store.write_local(txn, set, consumed)?;
            } else {
                t.store.write_local(out, set, consumed)?;
                tpl.add_partition_offset(source, p, Offset::Offset(consumed + 1))?;
            }
            t.dirty = false;
        }
    }
    // The store holds the authoritative offset; a failed commit only means more replay.
    if tpl.count() > 0 {
        if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
            tracing::warn!(error = %e, "offset commit failed; the state store keeps the position");
        }
    }
    Ok(())
}

/// What the batch loop counted, for the batch metrics.
struct BatchEnd {
    started: Instant,
    /// Records polled (skipped ones included).
    records: usize,
    /// Records applied to a task.
    applied: u64,
}

/// The end of every stateful batch: outputs acknowledged, then (when a task changed)
/// state persisted and offsets committed, then the batch's metrics.
#[allow(clippy::too_many_arguments)]
fn finish_batch<S: Observed>(
    out: &Out,
    consumer: &GroupConsumer,
    source: &str,
    tasks: &mut BTreeMap<i32, Task<S>>,
    h: &StageHandles,
    sized_at: &mut Instant,
    batch: BatchEnd,
    drain: impl FnMut(&mut Task<S>, &mut WriteSet),
) -> Result<(), KafkaRunError> {
    h.input.inc_by(batch.applied);
    let dirty = tasks.values().any(|t| t.dirty);
    if dirty {
        let persisting = Instant::now();
        out.flush(Duration::from_secs(120))?;
        persist_and_commit(out, consumer, source, tasks, drain)?;
        h.commit.observe(persisting.elapsed().as_secs_f64());
    }
    publish_batch(h, tasks, sized_at);
    if batch.records > 0 || dirty {
        h.batch.observe(batch.started.elapsed().as_secs_f64());
    }
    Ok(())
}

/// Once per batch: stage counters (as differences), reorder-buffer depth and stream
/// time; store sizes at most every `STORE_SIZE_EVERY`. (Lag comes from librdkafka's
/// statistics, see `GroupContext`.)
fn publish_batch<S: Observed>(h: &StageHandles, tasks: &mut BTreeMap<i32, Task<S>>, sized_at: &mut Instant) {
    let mut waiting = 0;
    let mut time = Ts::MIN;
    for t in tasks.values_mut() {
        let now = t.stage.snapshot();
        S::publish(&now, &t.reported);
        t.reported = now;
        waiting += t.stage.waiting();
        time = time.max(t.stage.event_time());
    }
    let Some(h) = &h.stateful else { return };
    h.buffered.set(waiting as i64);
    if time > Ts::MIN {
        h.stream_time.set(time as f64);
    }
    if sized_at.elapsed() >= STORE_SIZE_EVERY {
        *sized_at = Instant::now();
        h.store_bytes
            .set(tasks.values().map(|t| t.store.backend.size_bytes()).sum::<u64>() as i64);
    }
}

const STORE_SIZE_EVERY: Duration = Duration::from_secs(10);

/// Whether a record at `offset` must be applied: records below the store's position were
/// already applied before a restart.
fn admit_offset<S: Observed>(t: &mut Task<S>, offset: i64) -> bool {
    if let Some(next) = t.store.next_offset {
        if offset < next {
            return false;
        }
        if offset > next && t.consumed.is_none() {
            tracing::warn!(
                partition = t.store.partition,
                offset,
                expected = next,
                "input gap (retention?); continuing"
            );
        }
    }
    t.consumed = Some(offset);
    true
}

pub fn run_windows(
    config: &Config,
    setup: &Setup,
    framings: &Framings,
    shutdown: &AtomicBool,
) -> Result<(), KafkaRunError> {
    let k = &config.kafka;
    let source = k.events_topic();
    let conv_topic = k.conversations_topic();
    let dlq = k.dead_letter_topic();
    let changelog = k.changelog_topic("windows");
    let consumer = group_consumer(k, "windows", k.exactly_once())?;
    consumer.subscribe(&[source.as_str()])?;
    let out = Out::new(k, None)?;
    let conv_partitions = topics::partitions(k, &conv_topic, Duration::from_secs(30))?;
    let idle = Duration::from_millis(k.idle_flush_ms);
    let mut tasks: BTreeMap<i32, Task<WindowsStage>> = BTreeMap::new();
    let mut wout = WindowsOutput::default();
    let mut buf = Vec::with_capacity(512);
    let h = metrics().stage("windows");
    let mut sized_at = Instant::now();
    tracing::info!(topic = %source, "windows started");

    let open = |p: i32| -> Result<Task<WindowsStage>, KafkaRunError> {
        let txn = task_producer(k, "windows", p)?;
        let (store, stats) = PartitionStore::open(k, &config.state.dir, "windows", &changelog, p)?;
        let mut stage = setup.windows_stage();
        stage.enable_persistence();
        if store.fresh {
            stage.assume_fresh_store();
        }
        let waiting = stage.restore(&store.backend)?;
        tracing::info!(partition = p, waiting, restored = stats.records, "windows task ready");
        Ok(Task::new(store, stage, HashMap::new(), txn))
    };

    while !shutdown.load(Ordering::SeqCst) {
        let started = Instant::now();
        let span = tracing::debug_span!("batch", stage = "windows", records = tracing::field::Empty);
        let _batch = span.enter();
        let mut n = 0usize;
        let mut applied = 0u64;
        while n < k.batch_max {
            let m = match next_record(&consumer, &mut tasks, &open, n == 0)? {
                Next::Record(m) => m,
                Next::Skip => {
                    n += 1;
                    continue;
                }
                Next::Retry => continue,
                Next::Done => break,
            };
            n += 1;
            let Some(t) = tasks.get_mut(&m.partition()) else {
                continue;
            };
            applied += 1;
            t.last_input = Instant::now();
            t.idle_flushed = false;
            match decode_event(m.payload().unwrap_or_default()) {
                Err(e) => dead_letter(
                    t.producer(&out),
                    &dlq,
                    "windows",
                    &m,
                    (DeadLetterReason::InvalidRecord, format!("not a MessageEvent: {e}")),
                    &framings.dead_letter,
                )?,
                Ok(ev) => {
                    let backend: &dyn Backend = &t.store.backend;
                    t.stage.push(Some(backend), ev, m.offset() as u64, &mut wout)?;
                }
            }
            emit_windows(
                t.producer(&out),
                &conv_topic,
                &dlq,
                &source,
                m.partition(),
                &mut wout,
                framings,
                &setup.profiles,
                &mut buf,
                &h,
            )?;
        }
        // Idle partitions: apply what waits for the watermark (wall clock, only here).
        for (p, t) in tasks.iter_mut() {
            if t.stage.buffered() > 0
                && idle_check_due(t.last_input, &mut t.next_idle_check, idle)
                && caught_up(
                    &consumer,
                    &source,
                    *p,
                    t.consumed.or(t.store.next_offset.map(|o| o - 1)),
                )
            {
                let backend: &dyn Backend = &t.store.backend;
                t.stage.flush(Some(backend), &mut wout)?;
                t.dirty = true;
                t.idle_flushed = true;
                emit_windows(
                    t.producer(&out),
                    &conv_topic,
                    &dlq,
                    &source,
                    *p,
                    &mut wout,
                    framings,
                    &setup.profiles,
                    &mut buf,
                    &h,
                )?;
                if t.consumed.is_none() {
                    t.consumed = t.store.next_offset.map(|o| o - 1);
                }
            }
        }
        // Announce watermarks downstream: everything below was applied here.
        for (p, t) in tasks.iter_mut() {
            let wm = if t.stage.buffered() == 0 && t.last_input.elapsed() >= idle && t.idle_flushed {
                t.stage.stream_time().saturating_add(1)
            } else {
                t.stage.watermark()
            };
            if wm > t.announced && wm != Ts::MIN {
                t.announced = wm;
                let mut v = Vec::with_capacity(12);
                v.extend_from_slice(&p.to_be_bytes());
                v.extend_from_slice(&wm.to_be_bytes());
                // In a transaction, the announcement commits with this task's next batch.
                t.dirty |= t.txn.is_some() && t.consumed.is_some();
                for q in 0..conv_partitions {
                    t.producer(&out).send(OutRecord {
                        topic: &conv_topic,
                        key: WATERMARK_KEY,
                        value: Some(&v),
                        partition: Some(q),
                        headers: None,
                    })?;
                }
            }
        }
        span.record("records", applied);
        let batch = BatchEnd {
            started,
            records: n,
            applied,
        };
        finish_batch(
            &out,
            &consumer,
            &source,
            &mut tasks,
            &h,
            &mut sized_at,
            batch,
            |t, set| {
                let purge = t.stage.stream_time().saturating_sub(PURGE_MARGIN);
                t.stage.drain(set, purge, true);
                t.store.backend.set_purge_before(Family::Scopes, purge);
                t.store.backend.set_purge_before(Family::Messages, purge);
            },
        )?;
    }
    out.flush(Duration::from_secs(30))?;
    tracing::info!("windows stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn emit_windows(
    out: &Out,
    conv_topic: &str,
    dlq: &str,
    source: &str,
    partition: i32,
    wout: &mut WindowsOutput,
    framings: &Framings,
    profiles: &Profiles,
    buf: &mut Vec<u8>,
    h: &StageHandles,
) -> Result<(), KafkaRunError> {
    let now = std::time::SystemTime::now();
    for (u, _position) in wout.units.drain(..) {
        h.produced.inc();
        h.output_latency(u.ts(), now);
        buf.clear();
        encode_unit(&u, &framings.conversations, &framings.messages, buf);
        // Keyed by business portfolio: one ledger task owns a portfolio's counters.
        out.send(OutRecord {
            topic: conv_topic,
            key: profiles.portfolio_of(u.waba_id()).as_bytes(),
            value: Some(buf),
            partition: None,
            headers: None,
        })?;
    }
    for r in wout.rejected.drain(..) {
        rejected_dead_letter(
            out,
            dlq,
            "windows",
            source,
            partition,
            &r,
            r.class.into(),
            &framings.dead_letter,
        )?;
    }
    Ok(())
}

fn apply_rebalance<S: Observed>(
    ev: RebalanceEvent,
    tasks: &mut BTreeMap<i32, Task<S>>,
    open: &impl Fn(i32) -> Result<Task<S>, KafkaRunError>,
) -> Result<(), KafkaRunError> {
    let stage = S::NAME;
    let m = metrics();
    match ev {
        RebalanceEvent::Revoked(ps) => {
            m.rebalances.with_label_values(&[stage, "revoked"]).inc();
            for p in ps {
                // Everything of a revoked partition was persisted at the end of the last
                // batch (rebalances only happen inside poll, between batches).
                if let Some(t) = tasks.remove(&p) {
                    if let Some(txn) = &t.txn {
                        txn.abort_transaction(Duration::from_secs(30));
                    }
                    tracing::info!(stage, partition = p, "partition revoked; store closed");
                }
                let _ = m.consumer_lag.remove_label_values(&[stage, &p.to_string()]);
            }
        }
        RebalanceEvent::Assigned(ps) => {
            m.rebalances.with_label_values(&[stage, "assigned"]).inc();
            health().joined(stage);
            for p in ps {
                if let std::collections::btree_map::Entry::Vacant(e) = tasks.entry(p) {
                    let span = tracing::info_span!("restore", stage, partition = p);
                    let _g = span.enter();
                    health().restoring(stage, 1);
                    let started = Instant::now();
                    let task = open(p);
                    health().restoring(stage, -1);
                    m.restore_duration
                        .with_label_values(&[stage])
                        .observe(started.elapsed().as_secs_f64());
                    e.insert(task?);
                }
            }
        }
    }
    health().assigned(stage, tasks.len());
    Ok(())
}

fn upstream_key(p: i32) -> String {
    format!("ledger.upstream.{p}")
}

pub fn run_ledger(
    config: &Config,
    setup: &Setup,
    framings: &Framings,
    shutdown: &AtomicBool,
) -> Result<(), KafkaRunError> {
    let k = &config.kafka;
    let source = k.conversations_topic();
    let billing = k.billing_topic();
    let dlq = k.dead_letter_topic();
    let changelog = k.changelog_topic("ledger");
    let consumer = group_consumer(k, "ledger", k.exactly_once())?;
    consumer.subscribe(&[source.as_str()])?;
    let out = Out::new(k, None)?;
    let upstream_partitions = topics::partitions(k, &k.events_topic(), Duration::from_secs(30))?;
    let idle = Duration::from_millis(k.idle_flush_ms);
    let mut tasks: BTreeMap<i32, Task<LedgerStage>> = BTreeMap::new();
    let mut lout = LedgerOutput::default();
    let mut buf = Vec::with_capacity(512);
    let h = metrics().stage("ledger");
    let mut sized_at = Instant::now();
    tracing::info!(topic = %source, "ledger started");

    let open = |p: i32| -> Result<Task<LedgerStage>, KafkaRunError> {
        let txn = task_producer(k, "ledger", p)?;
        let (store, stats) = PartitionStore::open(k, &config.state.dir, "ledger", &changelog, p)?;
        let mut stage = setup.ledger_stage();
        stage.enable_persistence();
        stage.advance_watermark(None, Ts::MIN, &mut LedgerOutput::default())?;
        if store.fresh {
            stage.assume_fresh_store();
        }
        let waiting = stage.restore(&store.backend)?;
        let mut upstream = HashMap::new();
        for q in 0..upstream_partitions {
            if let Some(v) = store.backend.get(Family::Meta, upstream_key(q).as_bytes())? {
                if let Some(w) = read_meta_i64(&v) {
                    upstream.insert(q, w);
                }
            }
        }
        tracing::info!(partition = p, waiting, restored = stats.records, "ledger task ready");
        Ok(Task::new(store, stage, upstream, txn))
    };

    while !shutdown.load(Ordering::SeqCst) {
        let started = Instant::now();
        let span = tracing::debug_span!("batch", stage = "ledger", records = tracing::field::Empty);
        let _batch = span.enter();
        let mut n = 0usize;
        let mut applied = 0u64;
        while n < k.batch_max {
            let m = match next_record(&consumer, &mut tasks, &open, n == 0)? {
                Next::Record(m) => m,
                Next::Skip => {
                    n += 1;
                    continue;
                }
                Next::Retry => continue,
                Next::Done => break,
            };
            n += 1;
            let Some(t) = tasks.get_mut(&m.partition()) else {
                continue;
            };
            let payload = m.payload().unwrap_or_default();
            if m.key() == Some(WATERMARK_KEY) {
                match (payload.get(..4), payload.get(4..12)) {
                    (Some(p), Some(w)) => {
                        let src = i32::from_be_bytes(p.try_into().unwrap_or_default());
                        let wm = i64::from_be_bytes(w.try_into().unwrap_or_default());
                        let e = t.upstream.entry(src).or_insert(Ts::MIN);
                        *e = (*e).max(wm);
                    }
                    _ => dead_letter(
                        t.producer(&out),
                        &dlq,
                        "ledger",
                        &m,
                        (DeadLetterReason::MalformedControl, "malformed watermark record".into()),
                        &framings.dead_letter,
                    )?,
                }
                continue;
            }
            applied += 1;
            t.last_input = Instant::now();
            match decode_unit(payload, &|id| framings.kind_of_schema_id(id)) {
                Err(e) => dead_letter(
                    t.producer(&out),
                    &dlq,
                    "ledger",
                    &m,
                    (
                        DeadLetterReason::InvalidRecord,
                        format!("not a ConversationOpened or MessageDelivered: {e}"),
                    ),
                    &framings.dead_letter,
                )?,
                Ok(c) => {
                    let backend: &dyn Backend = &t.store.backend;
                    t.stage.push(Some(backend), c, m.offset().max(0) as u64, &mut lout)?;
                }
            }
            emit_ledger(
                t.producer(&out),
                &billing,
                &dlq,
                &source,
                m.partition(),
                &mut lout,
                framings,
                &mut buf,
                &h,
            )?;
        }
        for (p, t) in tasks.iter_mut() {
            let backend: &dyn Backend = &t.store.backend;
            // Release what every upstream partition has moved past.
            let min = (0..upstream_partitions)
                .map(|q| t.upstream.get(&q).copied().unwrap_or(Ts::MIN))
                .min();
            if let Some(w) = min {
                if w > Ts::MIN {
                    let before = t.stage.stats.conversations;
                    t.stage.advance_watermark(Some(backend), w, &mut lout)?;
                    t.dirty |= t.stage.stats.conversations != before;
                }
            }
            if t.stage.buffered() > 0
                && idle_check_due(t.last_input, &mut t.next_idle_check, idle)
                && caught_up(
                    &consumer,
                    &source,
                    *p,
                    t.consumed.or(t.store.next_offset.map(|o| o - 1)),
                )
            {
                t.stage.flush(Some(backend), &mut lout)?;
                t.dirty = true;
                if t.consumed.is_none() {
                    t.consumed = t.store.next_offset.map(|o| o - 1);
                }
            }
            emit_ledger(
                t.producer(&out),
                &billing,
                &dlq,
                &source,
                *p,
                &mut lout,
                framings,
                &mut buf,
                &h,
            )?;
        }
        span.record("records", applied);
        let batch = BatchEnd {
            started,
            records: n,
            applied,
        };
        finish_batch(
            &out,
            &consumer,
            &source,
            &mut tasks,
            &h,
            &mut sized_at,
            batch,
            |t, set| {
                for (q, w) in &t.upstream {
                    meta_i64(set, &upstream_key(*q), *w);
                }
                let purge = t.stage.drain(set, true);
                t.store.backend.set_purge_before(Family::Conversations, purge);
                t.store.backend.set_purge_before(Family::Counters, purge);
            },
        )?;
    }
    out.flush(Duration::from_secs(30))?;
    tracing::info!("ledger stopped");
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn emit_ledger(
    out: &Out,
    billing: &str,
    dlq: &str,
    source: &str,
    partition: i32,
    lout: &mut LedgerOutput,
    framings: &Framings,
    buf: &mut Vec<u8>,
    h: &StageHandles,
) -> Result<(), KafkaRunError> {
    let now = std::time::SystemTime::now();
    for b in lout.billed.drain(..) {
        h.produced.inc();
        h.output_latency(b.sort_key().0, now);
        metrics().billed(&b);
        buf.clear();
        encode_billing(&b, &framings.billing, &framings.charges, buf);
        let key = match &b {
            Billed::Conversation(c) => c.opened.waba_id.as_str(),
            Billed::Message(m) => m.portfolio.as_str(),
        };
        out.send(OutRecord {
            topic: billing,
            key: key.as_bytes(),
            value: Some(buf),
            partition: None,
            headers: None,
        })?;
    }
    for r in lout.rejected.drain(..) {
        rejected_dead_letter(
            out,
            dlq,
            "ledger",
            source,
            partition,
            &r,
            r.class.into(),
            &framings.dead_letter,
        )?;
    }
    Ok(())
}
