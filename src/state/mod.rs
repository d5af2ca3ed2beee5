//! State stores. The engine works on typed in-memory tables (`Table`); a `Backend`
//! (RocksDB, or none for pure in-memory runs) holds what does not fit and survives
//! restarts. Every stored value begins with its expiry (8 bytes, big-endian Unix
//! seconds), so RocksDB's compaction filter can drop dead state without scans.

pub mod codec;
pub mod rocks;
pub mod table;

use thiserror::Error;

pub use rocks::RocksBackend;
pub use table::Table;

use crate::billing::Ts;

/// Column families: one per kind of state, so each has its own compaction and expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// windows: (business number, user) → CSW, conversation, FEP eligibility.
    Scopes,
    /// windows: message id → statuses seen (dedupe memory).
    Messages,
    /// ledger: conversation id → seen (dedupe of re-delivered conversations).
    Conversations,
    /// ledger: (WABA, month) → free-tier conversations used.
    Counters,
    /// bookkeeping: applied input positions, stream time, watermarks. Never expires.
    Meta,
    /// events (windows) or conversations (ledger) waiting for the watermark: consumed
    /// but not applied yet, so they are state too (a restart must not lose them).
    Pending,
}

impl Family {
    pub const ALL: [Family; 6] = [
        Family::Scopes,
        Family::Messages,
        Family::Conversations,
        Family::Counters,
        Family::Meta,
        Family::Pending,
    ];

    /// One-byte code used as the first byte of changelog keys.
    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<Family> {
        Family::ALL.into_iter().find(|f| f.code() == c)
    }

    pub fn name(self) -> &'static str {
        match self {
            Family::Scopes => "scopes",
            Family::Messages => "messages",
            Family::Conversations => "conversations",
            Family::Counters => "counters",
            Family::Meta => "meta",
            Family::Pending => "pending",
        }
    }
}

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("state store value for key {key:?} in {family} is corrupt: {reason}")]
    Corrupt {
        family: &'static str,
        key: String,
        reason: String,
    },
    #[error("state store: the in-memory {family} table holds 4 GiB of live keys")]
    Full { family: &'static str },
    #[error("state store I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A value the tables can persist.
pub trait StoreValue: Copy {
    fn expires_at(&self) -> Ts;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// One batch of changes, written atomically (one RocksDB write batch): state changes and
/// the input position they correspond to land together or not at all.
#[derive(Debug, Default)]
pub struct WriteSet {
    pub changes: Vec<Change>,
}

/// One key's new value in a family; `None` deletes it.
/// A stored (key, value) pair.
pub type KeyValue = (Vec<u8>, Vec<u8>);

pub type Change = (Family, Box<[u8]>, Option<Vec<u8>>);

impl WriteSet {
    pub fn len(&self) -> usize {
        self.changes.len()
    }
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

/// Durable storage behind the tables.
pub trait Backend {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every (key, value) of a family, in key order (restores pending buffers).
    fn scan(&self, family: Family) -> Result<Vec<KeyValue>, StoreError>;
    fn write(&mut self, set: WriteSet) -> Result<(), StoreError>;
    /// Values whose expiry is before this instant may be dropped by compaction. Driven
    /// by stream time (minus a safety margin), never by the wall clock.
    fn set_purge_before(&self, family: Family, ts: Ts);
    /// Makes everything written so far durable locally (end of a replay, shutdown).
    fn sync(&self) -> Result<(), StoreError>;
}
