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

/// One key's slot, from `Table::entry`.
pub struct Entry<'a, V> {
    slot: &'a mut Slot<V>,
    key: Key,
    dirty: &'a mut Vec<Key>,
    track: bool,
}

impl<V: Copy> Entry<'_, V> {
    pub fn get(&self) -> Option<V> {
        self.slot.value
    }

    /// Writes the value back (as `Table::put`).
    pub fn set(self, value: Option<V>) {
        self.slot.value = value;
        if self.track && !self.slot.dirty {
            self.slot.dirty = true;
            self.dirty.push(self.key);
        }
    }
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
        let value = self.load(b, key)?;
        self.map.insert(Key::new(key), Slot { value, dirty: false });
        Ok(value)
    }

    /// A key's value in the backend.
    fn load(&self, b: &dyn Backend, key: &[u8]) -> Result<Option<V>, StoreError> {
        match b.get(self.family, key)? {
            None => Ok(None),
            Some(bytes) => V::decode(&bytes).map(Some).ok_or_else(|| StoreError::Corrupt {
                family: self.family.name(),
                key: String::from_utf8_lossy(key).into_owned(),
                reason: format!("{} bytes do not decode", bytes.len()),
            }),
        }
    }

    /// Reads a value (loading it from the backend on a miss, as `get`) and keeps the
    /// table's slot for it, so the read-modify-write of one key costs one hash probe
    /// instead of two or three (`get`, `put`, the insert's own probe): the engine does
    /// one such update per event on tables of hundreds of thousands of keys, where every
    /// probe is a likely cache miss.
    pub fn entry(&mut self, backend: Option<&dyn Backend>, key: &[u8]) -> Result<Entry<'_, V>, StoreError> {
        let k = Key::new(key);
        // A miss reads the backend before the map is borrowed for the insert: the
        // read is the rare path (a restored or evicted store), the probe the common one.
        let value = match backend {
            Some(b) if !self.complete && !self.map.contains_key(key) => Some(self.load(b, key)?),
            _ => None,
        };
        let slot = self.map.entry(k.clone()).or_insert_with(|| Slot {
            value: value.flatten(),
            dirty: false,
        });
        Ok(Entry {
            slot,
            key: k,
            dirty: &mut self.dirty,
            track: self.track,
        })
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

    /// A read-modify-write through `entry` leaves the table exactly as `get` then `put`
    /// would: same values, same dirty keys drained, with and without a backend.
    #[test]
    fn entry_equals_get_then_put() {
        use crate::state::RocksBackend;
        let dir = tempfile::tempdir().unwrap();
        let mut backend = RocksBackend::open(dir.path()).unwrap();
        let mut seed_set = WriteSet::default();
        for i in 0..50u64 {
            let v = Counter {
                expires_at: 9,
                value: i,
            };
            let mut b = Vec::new();
            v.encode(&mut b);
            seed_set
                .changes
                .push((Family::Counters, format!("k{i}").into_bytes().into(), Some(b)));
        }
        backend.write(seed_set).unwrap();
        for with_backend in [false, true] {
            let b: Option<&dyn Backend> = if with_backend { Some(&backend) } else { None };
            let mut a: Table<Counter> = Table::new(Family::Counters, 0);
            let mut e: Table<Counter> = Table::new(Family::Counters, 0);
            let mut x = 0x9e37_79b9u64;
            for step in 0..2000u64 {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                let key = format!("k{}", (x >> 33) % 120).into_bytes();
                let write = !(x >> 20).is_multiple_of(4);
                let old_a = a.get(b, &key).unwrap();
                let slot = e.entry(b, &key).unwrap();
                assert_eq!(slot.get(), old_a, "step {step}");
                if write {
                    let v = (x >> 40 & 1 == 0).then_some(Counter {
                        expires_at: 9,
                        value: old_a.map_or(0, |c| c.value) + step,
                    });
                    a.put(&key, v);
                    slot.set(v);
                }
                if step.is_multiple_of(300) {
                    let (mut da, mut de) = (WriteSet::default(), WriteSet::default());
                    a.drain_dirty(&mut da);
                    e.drain_dirty(&mut de);
                    assert_eq!(da.changes, de.changes, "step {step}");
                }
            }
        }
    }

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
