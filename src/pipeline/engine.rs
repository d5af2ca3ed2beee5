//! Windows and ledger wired together in one process: the replay driver's engine, and the
//! reference the Kafka topology must equal record for record.

use std::sync::Arc;

use super::ledger::{LedgerOutput, LedgerStage};
use super::privacy::UserHasher;
use super::records::{Billed, Rejected};
use super::windows::{WindowsOutput, WindowsStage};
use crate::billing::{MarketMap, RateCard, Ts, VolumeTiers, DAY_SECS};
use crate::config::{Config, ConfigError, Profiles};
use crate::ingest::MessageEvent;
use crate::state::{Backend, Family, StoreError, WriteSet};

/// State that expired more than this before stream time is dropped from memory and may
/// be dropped by compaction. Late events up to this far behind still see exactly the
/// state they would have seen on time.
pub const PURGE_MARGIN: Ts = 2 * DAY_SECS;

/// Events between purges of expired state when there is no backend (and so no
/// checkpoints): keeps a long in-memory run's tables at the size of the live state
/// instead of growing with every message id ever seen.
const MEMORY_PURGE_EVERY: u32 = 50_000;

/// Everything the stages need that comes from configuration, validated.
#[derive(Clone)]
pub struct Setup {
    pub profiles: Arc<Profiles>,
    pub markets: Arc<MarketMap>,
    pub card: Arc<RateCard>,
    /// Volume tiers of the message eras (none unless given: `with_tiers`).
    pub tiers: Arc<VolumeTiers>,
    pub lateness: Ts,
    pub dedupe_horizon: Ts,
    pub cache_entries: usize,
    /// `[privacy] hash_users`: the ledger's output carries keyed hashes of users.
    pub user_hasher: Option<Arc<UserHasher>>,
}

impl Setup {
    /// Start-up: validates the configuration and reads the user hash key, when hashing is
    /// on, from `WABILL_USER_HASH_KEY` or `[privacy] key_file` (the stages do no I/O).
    pub fn new(config: &Config, card: RateCard, markets: MarketMap) -> Result<Setup, ConfigError> {
        let profiles = config.profiles(&card)?;
        let user_hasher = config.privacy.user_hasher(|k| std::env::var(k).ok())?;
        Ok(Setup {
            profiles: Arc::new(profiles),
            markets: Arc::new(markets),
            card: Arc::new(card),
            tiers: Arc::new(VolumeTiers::none()),
            lateness: config.allowed_lateness_secs as Ts,
            dedupe_horizon: config.dedupe_horizon_secs as Ts,
            cache_entries: config.state_cache_entries,
            user_hasher: user_hasher.map(Arc::new),
        })
    }

    /// The same set-up, pricing message-era charges with `tiers`.
    pub fn with_tiers(mut self, tiers: VolumeTiers) -> Setup {
        self.tiers = Arc::new(tiers);
        self
    }

    /// A windows stage as configured: the replay engine and each Kafka windows task
    /// build theirs here, so the two cannot drift apart.
    pub fn windows_stage(&self) -> WindowsStage {
        WindowsStage::new(
            self.profiles.clone(),
            self.markets.clone(),
            self.card.clone(),
            self.lateness,
            self.dedupe_horizon,
            self.cache_entries,
        )
    }

    /// A ledger stage as configured (see `windows_stage`).
    pub fn ledger_stage(&self) -> LedgerStage {
        LedgerStage::new(
            self.profiles.clone(),
            self.markets.clone(),
            self.card.clone(),
            self.tiers.clone(),
            self.lateness,
            self.cache_entries,
        )
        .with_user_hasher(self.user_hasher.clone())
    }
}

pub struct Engine {
    pub windows: WindowsStage,
    pub ledger: LedgerStage,
    backend: Option<Box<dyn Backend>>,
    wout: WindowsOutput,
    lout: LedgerOutput,
    /// Events since the last purge (memory-only engines).
    since_purge: u32,
    /// The checkpoint batch, kept between checkpoints for its buffers.
    set: WriteSet,
}

impl Engine {
    /// `backend: None` keeps all state in memory (tests, the pure-engine benchmark).
    pub fn new(setup: &Setup, backend: Option<Box<dyn Backend>>) -> Self {
        let memory_only = backend.is_none();
        let mut e = Engine {
            windows: setup.windows_stage(),
            ledger: setup.ledger_stage(),
            backend,
            wout: WindowsOutput::default(),
            lout: LedgerOutput::default(),
            since_purge: 0,
            set: WriteSet::default(),
        };
        if memory_only {
            e.windows.memory_only();
            e.ledger.memory_only();
        }
        e
    }

    pub fn push(
        &mut self,
        ev: MessageEvent,
        position: u64,
        billed: &mut Vec<Billed>,
        rejected: &mut Vec<Rejected>,
    ) -> Result<(), StoreError> {
        let backend = self.backend.as_deref();
        self.windows.push(backend, ev, position, &mut self.wout)?;
        self.forward(billed, rejected)?;
        if self.backend.is_none() {
            self.since_purge += 1;
            if self.since_purge >= MEMORY_PURGE_EVERY {
                self.since_purge = 0;
                self.checkpoint()?;
            }
        }
        Ok(())
    }

    fn forward(&mut self, billed: &mut Vec<Billed>, rejected: &mut Vec<Rejected>) -> Result<(), StoreError> {
        let backend = self.backend.as_deref();
        rejected.append(&mut self.wout.rejected);
        for (u, position) in self.wout.units.drain(..) {
            self.ledger.push(backend, u, position, &mut self.lout)?;
        }
        billed.append(&mut self.lout.billed);
        rejected.append(&mut self.lout.rejected);
        Ok(())
    }

    /// End of input: applies everything still waiting for the watermark.
    pub fn finish(&mut self, billed: &mut Vec<Billed>, rejected: &mut Vec<Rejected>) -> Result<(), StoreError> {
        let backend = self.backend.as_deref();
        self.windows.flush(backend, &mut self.wout)?;
        self.forward(billed, rejected)?;
        let backend = self.backend.as_deref();
        self.ledger.flush(backend, &mut self.lout)?;
        billed.append(&mut self.lout.billed);
        rejected.append(&mut self.lout.rejected);
        Ok(())
    }

    /// Persists dirty state in one atomic batch and trims the caches. Returns the number
    /// of keys written.
    pub fn checkpoint(&mut self) -> Result<usize, StoreError> {
        let has_backend = self.backend.is_some();
        let purge = self.windows.stream_time().saturating_sub(PURGE_MARGIN);
        // Reused from one checkpoint to the next (the backend leaves it empty).
        let mut set = std::mem::take(&mut self.set);
        set.clear();
        self.windows.drain(&mut set, purge, has_backend);
        let ledger_purge = self.ledger.drain(&mut set, has_backend);
        let n = set.len();
        if let Some(b) = self.backend.as_deref_mut() {
            b.set_purge_before(Family::Scopes, purge);
            b.set_purge_before(Family::Messages, purge);
            b.set_purge_before(Family::Conversations, ledger_purge);
            b.set_purge_before(Family::Counters, ledger_purge);
            if !set.is_empty() {
                b.write(&mut set)?;
            }
        }
        self.set = set;
        Ok(n)
    }

    /// Declares the backend brand-new (see `Table::assume_complete`).
    pub fn assume_fresh_store(&mut self) {
        self.windows.assume_fresh_store();
        self.ledger.assume_fresh_store();
    }

    /// Makes the persisted state durable on local disk.
    pub fn sync(&self) -> Result<(), StoreError> {
        match self.backend.as_deref() {
            Some(b) => b.sync(),
            None => Ok(()),
        }
    }

    pub fn free_tier_used(&mut self, waba_id: &str, month: &str) -> Result<u64, StoreError> {
        let backend = self.backend.as_deref();
        self.ledger.used(backend, waba_id, month)
    }

    pub fn service_free_used(&mut self, phone_number_id: &str, month: &str) -> Result<u64, StoreError> {
        let backend = self.backend.as_deref();
        self.ledger.service_free_used(backend, phone_number_id, month)
    }
}
