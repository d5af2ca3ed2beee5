//! A typed write-back cache over one column family, like Kafka Streams' caching store:
//! reads hit memory first and fall back to the backend; writes stay in memory, marked
//! dirty, until the driver drains them into one atomic write batch.
//!
//! Layout: key bytes live in one append-only arena; the hash table holds small fixed
//! records (hash, arena offset, value). The engine does one or two read-modify-writes per
//! event on tables of hundreds of thousands of keys, so what matters is bytes touched:
//! a record is 2-3× smaller than a bucket holding the key inline, growing the table moves
//! that much less memory, and a miss (a new message id, the common case) is decided on
//! the stored hash without reading any key.

use std::hash::Hasher;

use hashbrown::hash_table::{Entry as RawEntry, HashTable};
use rustc_hash::FxHasher;

use super::{Backend, Family, StoreError, StoreValue, WriteSet};
use crate::billing::Ts;

/// Arena offsets and key lengths are `u32`: records stay small, and the arena is
/// compacted long before it could reach 4 GiB of keys (it holds at most twice the live
/// keys, see `compact`).
const ARENA_LIMIT: usize = u32::MAX as usize;

fn hash_key(key: &[u8]) -> u32 {
    let mut h = FxHasher::default();
    h.write(key);
    let x = h.finish();
    (x ^ (x >> 32)) as u32
}

/// The 64-bit hash hashbrown sees: the 32-bit key hash in both halves, so the bucket
/// index (low bits) and the control byte (top seven bits) both come from it.
fn spread(h: u32) -> u64 {
    u64::from(h) | (u64::from(h) << 32)
}

struct Rec<V> {
    hash: u32,
    off: u32,
    len: u32,
    dirty: bool,
    /// `None`: known to be absent in the backend (negative cache) or deleted.
    value: Option<V>,
}

/// One key's slot, from `Table::entry`.
pub struct Entry<'a, V> {
    rec: &'a mut Rec<V>,
    dirty: &'a mut Vec<(u32, u32, u32)>,
    track: bool,
}

impl<V: Copy> Entry<'_, V> {
    pub fn get(&self) -> Option<V> {
        self.rec.value
    }

    /// Writes the value back (as `Table::put`).
    pub fn set(self, value: Option<V>) {
        self.rec.value = value;
        if self.track && !self.rec.dirty {
            self.rec.dirty = true;
            self.dirty.push((self.rec.hash, self.rec.off, self.rec.len));
        }
    }
}

pub struct Table<V> {
    family: Family,
    map: HashTable<Rec<V>>,
    /// Key bytes of every record (and of evicted ones until the next compaction).
    arena: Vec<u8>,
    /// Bytes of `arena` that belong to evicted records.
    garbage: usize,
    /// The arena before the last compaction, kept for the next one.
    spare: Vec<u8>,
    /// (hash, arena offset, length) of records written since the last drain.
    dirty: Vec<(u32, u32, u32)>,
    /// Maximum entries kept after a drain; 0 = unbounded (pure in-memory runs).
    capacity: usize,
    /// True while every key the backend holds is also in `map` (the store started empty
    /// and nothing has been evicted for capacity): a miss then means absent, with no read.
    complete: bool,
    /// Whether writes are remembered for `drain_dirty` (false for pure in-memory runs).
    track: bool,
    /// `ARENA_LIMIT` (lowered by tests).
    arena_limit: usize,
}

fn key_of<'a, V>(arena: &'a [u8], r: &Rec<V>) -> &'a [u8] {
    &arena[r.off as usize..r.off as usize + r.len as usize]
}

impl<V: StoreValue> Table<V> {
    pub fn new(family: Family, capacity: usize) -> Self {
        Table {
            family,
            map: HashTable::new(),
            arena: Vec::new(),
            garbage: 0,
            spare: Vec::new(),
            dirty: Vec::new(),
            capacity,
            complete: false,
            track: true,
            arena_limit: ARENA_LIMIT,
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

    fn find(&self, hash: u32, key: &[u8]) -> Option<&Rec<V>> {
        let arena = &self.arena;
        self.map
            .find(spread(hash), |r| r.hash == hash && key_of(arena, r) == key)
    }

    /// Reads a value, loading it from the backend on a miss. Without a backend the table
    /// is authoritative and a miss means absent.
    pub fn get(&mut self, backend: Option<&dyn Backend>, key: &[u8]) -> Result<Option<V>, StoreError> {
        if let Some(r) = self.find(hash_key(key), key) {
            return Ok(r.value);
        }
        match backend {
            Some(_) if !self.complete => Ok(self.entry(backend, key)?.get()),
            _ => Ok(None),
        }
    }

    /// A key's value in the backend.
    fn load(&self, b: &dyn Backend, key: &[u8]) -> Result<Option<V>, StoreError> {
        match b.get(self.family, key)? {
            None => Ok(None),
            Some(bytes) => V::decode(&bytes).map(Some).ok_or_else(|| StoreError::Corrupt {
                family: self.family.name(),
                key: String::from_utf8_lossy(key).into_owned(),
                reason: super::codec::describe_undecodable(&bytes),
            }),
        }
    }

    /// Reads a value (loading it from the backend on a miss, as `get`) and keeps the
    /// table's slot for it, so the read-modify-write of one key costs one hash probe
    /// instead of two or three (`get`, `put`, the insert's own probe).
    pub fn entry(&mut self, backend: Option<&dyn Backend>, key: &[u8]) -> Result<Entry<'_, V>, StoreError> {
        let hash = hash_key(key);
        // A miss reads the backend before the map is borrowed for the insert: the
        // read is the rare path (a restored or evicted store), the probe the common one.
        let loaded = match backend {
            Some(b) if !self.complete && self.find(hash, key).is_none() => self.load(b, key)?,
            _ => None,
        };
        if self.arena.len() + key.len() > self.arena_limit {
            if self.garbage > 0 {
                self.compact();
            }
            if self.arena.len() + key.len() > self.arena_limit {
                return Err(StoreError::Full {
                    family: self.family.name(),
                });
            }
        }
        let arena = &mut self.arena;
        let rec = match self.map.entry(
            spread(hash),
            |r| r.hash == hash && key_of(arena, r) == key,
            |r| spread(r.hash),
        ) {
            RawEntry::Occupied(o) => o.into_mut(),
            RawEntry::Vacant(v) => {
                let off = arena.len() as u32;
                arena.extend_from_slice(key);
                v.insert(Rec {
                    hash,
                    off,
                    len: key.len() as u32,
                    dirty: false,
                    value: loaded,
                })
                .into_mut()
            }
        };
        Ok(Entry {
            rec,
            dirty: &mut self.dirty,
            track: self.track,
        })
    }

    /// Pure in-memory tables (no backend) never drain, so they skip dirty bookkeeping.
    pub fn untracked(&mut self) {
        self.track = false;
    }

    /// Replaces a key's value, without reading the backend first.
    pub fn put(&mut self, key: &[u8], value: Option<V>) -> Result<(), StoreError> {
        self.entry(None, key)?.set(value);
        Ok(())
    }

    /// Moves every dirty entry into `set` (encoded), in key order, and marks it clean.
    /// (Key order makes RocksDB's memtable inserts cheaper; the keys are distinct, so the
    /// order changes nothing else.)
    pub fn drain_dirty(&mut self, set: &mut WriteSet) {
        let mut marks = std::mem::take(&mut self.dirty);
        let arena = &self.arena;
        let key = |&(_, off, len): &(u32, u32, u32)| &arena[off as usize..(off + len) as usize];
        marks.sort_unstable_by(|a, b| key(a).cmp(key(b)));
        for m in &marks {
            let (hash, off, _) = *m;
            // A record's arena offset identifies it: no key comparison needed.
            if let Some(r) = self.map.find_mut(spread(hash), |r| r.off == off) {
                r.dirty = false;
                let value = r.value;
                set.put_with(
                    self.family,
                    key(m),
                    value.map(|v| move |out: &mut Vec<u8>| v.encode(out)),
                );
            }
        }
        marks.clear();
        self.dirty = marks;
    }

    /// Drops clean entries that expired before `purge_before` (they read as absent
    /// anyway) and, when over capacity, clean entries until a quarter below it. Without
    /// a backend only expired entries may go: the table is the only copy.
    pub fn evict(&mut self, purge_before: Ts, has_backend: bool) {
        let mut freed = 0usize;
        self.map.retain(|s| {
            let keep = s.dirty
                || s.value.is_some_and(|v| v.expires_at() >= purge_before)
                || (s.value.is_none() && has_backend);
            if !keep {
                freed += s.len as usize;
            }
            keep
        });
        if has_backend && self.capacity > 0 && self.map.len() > self.capacity {
            self.complete = false;
            let target = self.capacity - self.capacity / 4;
            let mut excess = self.map.len() - target;
            self.map.retain(|s| {
                if excess > 0 && !s.dirty {
                    excess -= 1;
                    freed += s.len as usize;
                    false
                } else {
                    true
                }
            });
        }
        self.garbage += freed;
        if self.garbage > 1 << 16 && self.garbage > self.arena.len() / 2 {
            self.compact();
        }
    }

    /// Rewrites the arena with only the keys of live records (evicted keys are garbage
    /// until then), keeping it at most about twice the live keys.
    fn compact(&mut self) {
        let live = self.arena.len() - self.garbage;
        // The previous arena is reused: its pages are already mapped, so the copy and the
        // appends after it fault nothing in. Room for twice the live keys (compaction
        // comes back when half the arena is garbage), so it is not regrown in between.
        let mut arena = std::mem::take(&mut self.spare);
        arena.clear();
        arena.reserve(2 * live + (1 << 20));
        for r in self.map.iter_mut() {
            let off = arena.len() as u32;
            arena.extend_from_slice(key_of(&self.arena, r));
            r.off = off;
        }
        self.spare = std::mem::replace(&mut self.arena, arena);
        self.garbage = 0;
        // Dirty marks name records by offset: rebuild them.
        if !self.dirty.is_empty() {
            self.dirty.clear();
            self.dirty
                .extend(self.map.iter().filter(|r| r.dirty).map(|r| (r.hash, r.off, r.len)));
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
            seed_set.put(Family::Counters, format!("k{i}").as_bytes(), Some(&b));
        }
        backend.write(&mut seed_set).unwrap();
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
                    a.put(&key, v).unwrap();
                    slot.set(v);
                }
                if step.is_multiple_of(300) {
                    let (mut da, mut de) = (WriteSet::default(), WriteSet::default());
                    a.drain_dirty(&mut da);
                    e.drain_dirty(&mut de);
                    assert!(da.iter().eq(de.iter()), "step {step}");
                }
            }
        }
    }

    #[test]
    fn keys_of_every_length_find_their_entries() {
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
            )
            .unwrap();
        }
        for (i, k) in keys.iter().enumerate() {
            let want = keys.iter().rposition(|o| o == k).unwrap_or(i) as u64;
            assert_eq!(t.get(None, k).unwrap().map(|c| c.value), Some(want), "{k:?}");
        }
        let mut set = WriteSet::default();
        t.drain_dirty(&mut set);
        let mut drained: Vec<&[u8]> = set.iter().map(|c| c.1).collect();
        let mut distinct: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(drained.len(), distinct.len());
        drained.dedup();
        assert_eq!(drained, distinct, "drained once each, in key order");
    }

    /// Evicting most keys compacts the arena; every live key still finds its value, the
    /// evicted ones read as absent, and keys written before and after the compaction
    /// drain exactly once each.
    #[test]
    fn compaction_keeps_live_keys_and_dirty_marks() {
        let mut t: Table<Counter> = Table::new(Family::Counters, 0);
        let key = |i: u64| format!("wamid.{i:040}").into_bytes();
        for i in 0..20_000u64 {
            let c = Counter {
                expires_at: if i % 10 == 0 { 100 } else { 5 },
                value: i,
            };
            t.put(&key(i), Some(c)).unwrap();
        }
        t.drain_dirty(&mut WriteSet::default());
        // Dirty before the eviction: must survive it and drain after it.
        t.put(
            &key(3),
            Some(Counter {
                expires_at: 7,
                value: 33,
            }),
        )
        .unwrap();
        let before = t.arena.len();
        t.evict(50, false);
        assert!(t.arena.len() < before / 4, "arena {} -> {}", before, t.arena.len());
        assert_eq!(t.garbage, 0);
        assert_eq!(t.len(), 2_001);
        for i in 0..20_000u64 {
            let got = t.get(None, &key(i)).unwrap().map(|c| c.value);
            let want = if i == 3 { Some(33) } else { (i % 10 == 0).then_some(i) };
            assert_eq!(got, want, "key {i}");
        }
        t.put(
            &key(20_001),
            Some(Counter {
                expires_at: 100,
                value: 1,
            }),
        )
        .unwrap();
        let mut set = WriteSet::default();
        t.drain_dirty(&mut set);
        let keys: Vec<Vec<u8>> = set.iter().map(|c| c.1.to_vec()).collect();
        assert_eq!(keys, vec![key(3), key(20_001)]);
        let mut again = WriteSet::default();
        t.drain_dirty(&mut again);
        assert!(again.is_empty());
    }

    /// A full arena first compacts away evicted keys; only live keys filling it are an
    /// error, and the table still answers for everything it holds.
    #[test]
    fn full_arena_compacts_then_reports() {
        let mut t: Table<Counter> = Table::new(Family::Counters, 0);
        t.arena_limit = 100;
        let c = |expires_at| Some(Counter { expires_at, value: 7 });
        for i in 0..10u8 {
            t.put(&[b'k', i, 0, 0, 0, 0, 0, 0, 0, 0], c(if i < 5 { 1 } else { 50 }))
                .unwrap();
        }
        let err = t.put(b"one-more", c(50)).unwrap_err();
        assert!(matches!(err, StoreError::Full { family: "counters" }), "{err}");
        // Expired keys go once drained (garbage below the compaction threshold, so
        // nothing is compacted yet); the next insert compacts and fits.
        t.drain_dirty(&mut WriteSet::default());
        t.evict(10, false);
        assert_eq!(t.garbage, 50);
        t.put(b"one-more", c(50)).unwrap();
        assert_eq!(t.garbage, 0);
        assert_eq!(t.arena.len(), 58);
        for i in 5..10u8 {
            assert_eq!(t.get(None, &[b'k', i, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap(), c(50));
        }
        assert_eq!(t.get(None, b"one-more").unwrap(), c(50));
    }
}
