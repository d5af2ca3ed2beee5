//! Liveness and readiness of `wabill run`.
//!
//! Ready means: every stage this process runs has joined its consumer group (it received
//! an assignment, possibly empty) and none of its assigned partitions is restoring. An
//! orchestrator must not count a pod as serving while its stores are still catching up
//! from the changelog, or rolling restarts would move partitions faster than they restore.

use std::collections::BTreeMap;
use std::sync::{LazyLock, Mutex};

use serde::Serialize;

use super::metrics::metrics;

#[derive(Debug, Clone, Default, Serialize)]
pub struct StageHealth {
    pub joined: bool,
    pub assigned: usize,
    pub restoring: usize,
    /// Set when the stage stopped with an error (the process is shutting down).
    pub failed: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Readiness {
    pub ready: bool,
    pub stages: BTreeMap<&'static str, StageHealth>,
}

#[derive(Default)]
pub struct Health {
    stages: Mutex<BTreeMap<&'static str, StageHealth>>,
}

static HEALTH: LazyLock<Health> = LazyLock::new(Health::default);

pub fn health() -> &'static Health {
    &HEALTH
}

impl Health {
    fn update(&self, stage: &'static str, f: impl FnOnce(&mut StageHealth)) {
        if let Ok(mut s) = self.stages.lock() {
            f(s.entry(stage).or_default());
            let r = readiness_of(&s);
            metrics().ready.set(i64::from(r));
        }
    }

    /// A stage this process will run (not ready until it joins).
    pub fn register(&self, stage: &'static str) {
        self.update(stage, |_| {});
    }

    pub fn joined(&self, stage: &'static str) {
        self.update(stage, |s| s.joined = true);
    }

    pub fn assigned(&self, stage: &'static str, partitions: usize) {
        self.update(stage, |s| s.assigned = partitions);
        metrics()
            .assigned_partitions
            .with_label_values(&[stage])
            .set(partitions as i64);
    }

    pub fn restoring(&self, stage: &'static str, delta: isize) {
        self.update(stage, |s| s.restoring = s.restoring.saturating_add_signed(delta));
        metrics()
            .restoring_partitions
            .with_label_values(&[stage])
            .add(delta as i64);
    }

    pub fn failed(&self, stage: &'static str, reason: String) {
        self.update(stage, |s| s.failed = Some(reason));
    }

    pub fn readiness(&self) -> Readiness {
        let stages = self.stages.lock().map(|s| s.clone()).unwrap_or_default();
        Readiness {
            ready: readiness_of(&stages),
            stages,
        }
    }
}

fn readiness_of(stages: &BTreeMap<&'static str, StageHealth>) -> bool {
    !stages.is_empty()
        && stages
            .values()
            .all(|s| s.joined && s.restoring == 0 && s.failed.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_stage_joined_and_nothing_restores() {
        let h = Health::default();
        assert!(!h.readiness().ready, "no stage yet");
        h.register("windows");
        h.register("ledger");
        assert!(!h.readiness().ready);
        h.joined("windows");
        assert!(!h.readiness().ready, "ledger has not joined");
        h.joined("ledger");
        assert!(h.readiness().ready);
        h.restoring("windows", 1);
        assert!(!h.readiness().ready, "a partition restores");
        h.restoring("windows", -1);
        assert!(h.readiness().ready);
        h.failed("ledger", "broker gone".into());
        assert!(!h.readiness().ready);
    }
}
