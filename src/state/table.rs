//! A typed write-back cache over one column family, like Kafka Streams' caching store:
//! reads hit memory first and fall back to the backend; writes stay in memory, marked
//! dirty, until the driver drains them into one atomic write batch.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use rustc_hash::FxHashMap;

use super::{Backend, Family, StoreError, StoreValue, WriteSet};
use crate::billing::Ts;

/// Longest key stored inline in the table (scope keys, conversation ids and the
/// simulator's message ids fit; Meta's longer message ids go to the heap).
const INLINE: usize = 62;

/// A table key: inline up to `INLINE` bytes, so a lookup or a rehash reads the key from
/// the bucket itself instead of following a pointer, and a new key costs no allocation.
/// Hashes and compares exactly as the `[u8]` it holds (`Borrow<[u8]>` lookups).
#[derive(Clone)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Key {
    fn new(k: &[u8]) -> Key {
        if k.len() <= INLINE {
            let mut bytes = [0u8; INLINE];
            bytes[..k.len()].copy_from_slice(k);
            Key::Inline {
                len: k.len() as u8,
                bytes,
            }
        } else {
            Key::Heap(k.into())
        }
    }

    fn as_slice(&self) -> &[u8] {
        match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(b) => b,
        }
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_slice().hash(h)
    }
}

impl PartialEq for Key {
    fn eq(&self, o: &Key) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl Eq for Key {}

struct Slot<V> {
    /// `None`: known to be absent in the backend (negative cache) or deleted.
    value: Option<V>,
    dirty: bool,
}

pub struct Table<V> {
    family: Family,
    map: FxHashMap<Key, Slot<V>>,
    dirty: Vec<Key>,
    /// Maximum entries kept after a drain; 0 = unbounded (pure in-memory runs).
    capacity: usize,
    /// True while every key the backend holds is also in `map` (the store started empty
    /// and nothing has been evicted for capacity): a miss then means absent, with no read.
    complete: bool,
    /// Whether writes are remembered for `drain_dirty` (false for pure in-memory runs).
    track: bool,
}

impl<V: StoreValue> Table<V> {
    pub fn new(family: Family, capacity: usize) -> Self {
        Table {
            family,
            map: FxHashMap::default(),
            dirty: Vec::new(),
            capacity,
            complete: false,
            track: true,
        }
    }

    /// Declares that the backend holds nothing this table has not seen (a brand-new
    /// store), so misses need no backend read until the first capacity eviction.
    pub fn assume_complete(&mut self) {
        self.complete = true;
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Reads a value, loading it from the backend on a miss. Without a backend the table
    /// is authoritative and a miss means absent.
    pub fn get(&mut self, backend: Option<&dyn Backend>, key: &[u8]) -> Result<Option<V>, StoreError> {
        if let Some(slot) = self.map.get(key) {
            return Ok(slot.value);
        }
        let Some(b) = backend else { return Ok(None) };
        if self.complete {
            return Ok(None);
        }
        let value = match b.get(self.family, key)? {
            None => None,
            Some(bytes) => Some(V::decode(&bytes).ok_or_else(|| StoreError::Corrupt {
                family: self.family.name(),
                key: String::from_utf8_lossy(key).into_owned(),
                reason: format!("{} bytes do not decode", bytes.len()),
            })?),
        };
        self.map.insert(Key::new(key), Slot { value, dirty: false });
        Ok(value)
    }

    /// Pure in-memory tables (no backend) never drain, so they skip dirty bookkeeping.
    pub fn untracked(&mut self) {
        self.track = false;
    }

    pub fn put(&mut self, key: &[u8], value: Option<V>) {
        if !self.track {
            match self.map.get_mut(key) {
                Some(slot) => slot.value = value,
                None => {
                    self.map.insert(Key::new(key), Slot { value, dirty: false });
                }
            }
            return;
        }
        match self.map.get_mut(key) {
            Some(slot) => {
                slot.value = value;
                if !slot.dirty {
                    slot.dirty = true;
                    self.dirty.push(Key::new(key));
                }
            }
            None => {
                let k = Key::new(key);
                self.dirty.push(k.clone());
                self.map.insert(k, Slot { value, dirty: true });
            }
        }
    }

    /// Moves every dirty entry into `set` (encoded), in key order, and marks it clean.
    /// (Key order makes RocksDB's memtable inserts cheaper; the keys are distinct, so the
    /// order changes nothing else.)
    pub fn drain_dirty(&mut self, set: &mut WriteSet) {
        let mut keys: Vec<Box<[u8]>> = self
            .dirty
            .drain(..)
            .map(|k| match k {
                Key::Heap(b) => b,
                inline => inline.as_slice().into(),
            })
            .collect();
        keys.sort_unstable();
        for key in keys {
            if let Some(slot) = self.map.get_mut(&key[..]) {
                slot.dirty = false;
                let bytes = slot.value.map(|v| {
                    let mut b = Vec::with_capacity(48);
                    v.encode(&mut b);
                    b
                });
                set.changes.push((self.family, key, bytes));
            }
        }
    }

    /// Drops clean entries that expired before `purge_before` (they read as absent
    /// anyway) and, when over capacity, clean entries until a quarter below it. Without
    /// a backend only expired entries may go: the table is the only copy.
    pub fn evict(&mut self, purge_before: Ts, has_backend: bool) {
        self.map.retain(|_, s| {
            s.dirty || s.value.is_some_and(|v| v.expires_at() >= purge_before) || (s.value.is_none() && has_backend)
        });
        if has_backend && self.capacity > 0 && self.map.len() > self.capacity {
            self.complete = false;
            let target = self.capacity - self.capacity / 4;
            let mut excess = self.map.len() - target;
            self.map.retain(|_, s| {
                if excess > 0 && !s.dirty {
                    excess -= 1;
                    false
                } else {
                    true
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::codec::Counter;

    #[test]
    fn inline_and_heap_keys_find_the_same_entries() {
        let mut t: Table<Counter> = Table::new(Family::Counters, 0);
        let keys: Vec<Vec<u8>> = (0..200usize)
            .map(|n| (0..n % 100).map(|i| (i * 7 + n) as u8).collect())
            .collect();
        for (i, k) in keys.iter().enumerate() {
            t.put(
                k,
                Some(Counter {
                    expires_at: 1,
                    value: i as u64,
                }),
            );
        }
        for (i, k) in keys.iter().enumerate() {
            let want = keys.iter().rposition(|o| o == k).unwrap_or(i) as u64;
            assert_eq!(t.get(None, k).unwrap().map(|c| c.value), Some(want), "{k:?}");
        }
        let mut set = WriteSet::default();
        t.drain_dirty(&mut set);
        let mut drained: Vec<&[u8]> = set.changes.iter().map(|c| &c.1[..]).collect();
        let mut distinct: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(drained.len(), distinct.len());
        drained.dedup();
        assert_eq!(drained, distinct, "drained once each, in key order");
    }
}
