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
    #[error("state directory {path} holds state format {found}, written by a newer wabill; this wabill reads formats {oldest} to {current}: run the wabill version that wrote it, or start from an empty state directory")]
    NewerFormat {
        path: String,
        found: i64,
        oldest: u8,
        current: u8,
    },
}

/// A value the tables can persist.
pub trait StoreValue: Copy {
    fn expires_at(&self) -> Ts;
    fn encode(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Option<Self>;
}

/// One batch of changes, written atomically (one RocksDB write batch): state changes and
/// the input position they correspond to land together or not at all.
///
/// Flat: every key and value is appended to one buffer, so a checkpoint of hundreds of
/// thousands of changes costs a few buffer growths instead of two allocations (and two
/// frees) per change.
#[derive(Debug, Default)]
pub struct WriteSet {
    bytes: Vec<u8>,
    ops: Vec<Op>,
}

/// Where one change's key (and value, right after it) sit in `WriteSet::bytes`.
#[derive(Debug, Clone, Copy)]
struct Op {
    family: Family,
    at: usize,
    key_len: usize,
    /// `None`: a deletion.
    value_len: Option<usize>,
}

/// One key's new value in a family; `None` deletes it.
pub type Change<'a> = (Family, &'a [u8], Option<&'a [u8]>);

/// A stored (key, value) pair.
pub type KeyValue = (Vec<u8>, Vec<u8>);

impl WriteSet {
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Removes every change, keeping the buffers.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ops.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values held.
    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    pub fn put(&mut self, family: Family, key: &[u8], value: Option<&[u8]>) {
        self.put_with(
            family,
            key,
            value.map(|v| move |out: &mut Vec<u8>| out.extend_from_slice(v)),
        );
    }

    /// Appends a change whose value `encode` writes straight into the set's buffer.
    pub fn put_with(&mut self, family: Family, key: &[u8], encode: Option<impl FnOnce(&mut Vec<u8>)>) {
        let at = self.bytes.len();
        self.bytes.extend_from_slice(key);
        let value_len = encode.map(|f| {
            let start = self.bytes.len();
            f(&mut self.bytes);
            self.bytes.len() - start
        });
        self.ops.push(Op {
            family,
            at,
            key_len: key.len(),
            value_len,
        });
    }

    fn change(&self, op: &Op) -> Change<'_> {
        let key_end = op.at + op.key_len;
        let value = op.value_len.map(|n| &self.bytes[key_end..key_end + n]);
        (op.family, &self.bytes[op.at..key_end], value)
    }

    /// The changes in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = Change<'_>> + '_ {
        self.ops.iter().map(|op| self.change(op))
    }

    /// Sorts each run of consecutive changes of one family by key, stably (changes of
    /// one key keep their order, so the batch leaves exactly the same state).
    pub fn sort_family_runs(&mut self) {
        let bytes = &self.bytes;
        let key = |op: &Op| &bytes[op.at..op.at + op.key_len];
        let mut start = 0;
        while start < self.ops.len() {
            let family = self.ops[start].family;
            let len = self.ops[start..].iter().take_while(|o| o.family == family).count();
            let run = &mut self.ops[start..start + len];
            if !run.is_sorted_by(|a, b| key(a) <= key(b)) {
                run.sort_by(|a, b| key(a).cmp(key(b)));
            }
            start += len;
        }
    }
}

/// Durable storage behind the tables.
pub trait Backend {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every (key, value) of a family, in key order (restores pending buffers).
    fn scan(&self, family: Family) -> Result<Vec<KeyValue>, StoreError>;
    /// Writes `set` atomically and leaves it empty, keeping its buffers for the next
    /// batch (a checkpoint set is megabytes; a fresh one faults in fresh pages).
    fn write(&mut self, set: &mut WriteSet) -> Result<(), StoreError>;
    /// Values whose expiry is before this instant may be dropped by compaction. Driven
    /// by stream time (minus a safety margin), never by the wall clock.
    fn set_purge_before(&self, family: Family, ts: Ts);
    /// Makes everything written so far durable locally (end of a replay, shutdown).
    fn sync(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Changes come back exactly as added (values, deletions, empty values); sorting
    /// orders each family's run by key and keeps two changes of one key in order.
    #[test]
    fn write_set_keeps_changes_and_sorts_runs_stably() {
        let mut set = WriteSet::default();
        set.put(Family::Messages, b"m2", Some(b"second"));
        set.put(Family::Messages, b"m1", None);
        set.put_with(
            Family::Messages,
            b"m2",
            Some(|out: &mut Vec<u8>| out.extend_from_slice(b"third")),
        );
        set.put(Family::Meta, b"a", Some(b""));
        set.put(Family::Scopes, b"s9", Some(b"x"));
        set.put(Family::Scopes, b"s1", Some(b"y"));
        let added: Vec<Change> = vec![
            (Family::Messages, b"m2", Some(b"second")),
            (Family::Messages, b"m1", None),
            (Family::Messages, b"m2", Some(b"third")),
            (Family::Meta, b"a", Some(b"")),
            (Family::Scopes, b"s9", Some(b"x")),
            (Family::Scopes, b"s1", Some(b"y")),
        ];
        assert!(set.iter().eq(added.iter().copied()));
        assert_eq!(set.len(), 6);
        set.sort_family_runs();
        let sorted: Vec<Change> = vec![
            (Family::Messages, b"m1", None),
            (Family::Messages, b"m2", Some(b"second")),
            (Family::Messages, b"m2", Some(b"third")),
            (Family::Meta, b"a", Some(b"")),
            (Family::Scopes, b"s1", Some(b"y")),
            (Family::Scopes, b"s9", Some(b"x")),
        ];
        assert!(set.iter().eq(sorted.iter().copied()));
    }
}
