//! Event-time ordering within the allowed lateness (docs/billing-rules.md §8).
//!
//! Items wait until the highest timestamp seen is more than `lateness` ahead of them,
//! then leave in key order. An arriving item already behind that watermark is *late*: it
//! is handed back at once to be applied against current state. Any arrival order in which
//! no item is late therefore yields exactly the sorted order.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::billing::Ts;

/// Heap entry: the ordering key and where the item lives. Items stay put in a slab, so
/// sifting the heap moves a few words, not whole events.
pub struct Keyed<K: Ord, T> {
    key: K,
    seq: u64,
    item: Slot<T>,
}

/// Index into the slab (the type parameter keeps entries typed).
pub struct Slot<T>(usize, std::marker::PhantomData<fn() -> T>);

impl<K: Ord, T> PartialEq for Keyed<K, T> {
    fn eq(&self, o: &Self) -> bool {
        self.key == o.key && self.seq == o.seq
    }
}
impl<K: Ord, T> Eq for Keyed<K, T> {}
impl<K: Ord, T> PartialOrd for Keyed<K, T> {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl<K: Ord, T> Ord for Keyed<K, T> {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (&self.key, self.seq).cmp(&(&o.key, o.seq))
    }
}

pub enum Admit<K, T> {
    /// Waiting; the number identifies it in a persisted buffer.
    Buffered(u64),
    /// Behind the watermark: handed back (with its key) to be applied at once.
    Late(K, T),
}

/// `K` starts with the event time; the rest breaks ties deterministically.
pub struct ReorderBuffer<K: Ord, T> {
    heap: BinaryHeap<Reverse<Keyed<K, T>>>,
    slab: Vec<Option<T>>,
    free: Vec<usize>,
    lateness: Ts,
    max_seen: Ts,
    seq: u64,
    /// When set, the watermark is driven from outside (the ledger takes the minimum of
    /// its upstream partitions' watermarks) instead of by this buffer's stream time.
    external: Option<Ts>,
}

impl<K: Ord, T> ReorderBuffer<K, T> {
    pub fn new(lateness: Ts) -> Self {
        ReorderBuffer {
            heap: BinaryHeap::new(),
            slab: Vec::new(),
            free: Vec::new(),
            lateness,
            max_seen: Ts::MIN,
            seq: 0,
            external: None,
        }
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Highest event time seen so far (stream time).
    pub fn stream_time(&self) -> Ts {
        self.max_seen
    }

    /// Items with a time below this are released; arrivals below it are late.
    pub fn watermark(&self) -> Ts {
        match self.external {
            Some(w) => w,
            None => self.max_seen.saturating_sub(self.lateness),
        }
    }

    /// Switches to (or advances) an externally driven watermark. It never goes back.
    pub fn set_external_watermark(&mut self, w: Ts) {
        self.external = Some(self.external.map_or(w, |cur| cur.max(w)));
    }

    /// Restores stream time after a restart.
    pub fn set_stream_time(&mut self, ts: Ts) {
        self.max_seen = self.max_seen.max(ts);
    }

    /// Puts back an item that was waiting when the state was persisted.
    pub fn restore(&mut self, seq: u64, key: K, item: T) {
        self.seq = self.seq.max(seq);
        let item = self.store(item);
        self.heap.push(Reverse(Keyed { key, seq, item }));
    }

    fn store(&mut self, item: T) -> Slot<T> {
        match self.free.pop() {
            Some(i) => {
                self.slab[i] = Some(item);
                Slot(i, std::marker::PhantomData)
            }
            None => {
                self.slab.push(Some(item));
                Slot(self.slab.len() - 1, std::marker::PhantomData)
            }
        }
    }

    fn take(&mut self, slot: Slot<T>) -> Option<T> {
        let item = self.slab.get_mut(slot.0)?.take();
        self.free.push(slot.0);
        item
    }

    pub fn admit(&mut self, ts: Ts, key: K, item: T) -> Admit<K, T> {
        if ts < self.watermark() {
            self.max_seen = self.max_seen.max(ts);
            return Admit::Late(key, item);
        }
        self.max_seen = self.max_seen.max(ts);
        self.seq += 1;
        let item = self.store(item);
        self.heap.push(Reverse(Keyed {
            key,
            seq: self.seq,
            item,
        }));
        Admit::Buffered(self.seq)
    }

    /// Pops the next item whose time (given by `time_of`) is below the watermark.
    /// Returns the key too: callers may move parts of an item into its key (to avoid
    /// cloning) and put them back.
    pub fn pop_ready(&mut self, time_of: impl Fn(&K) -> Ts) -> Option<(u64, K, T)> {
        let w = self.watermark();
        match self.heap.peek() {
            Some(Reverse(k)) if time_of(&k.key) < w => {
                let Reverse(k) = self.heap.pop()?;
                let item = self.take(k.item)?;
                Some((k.seq, k.key, item))
            }
            _ => None,
        }
    }

    /// Event time of the earliest waiting item.
    pub fn min_waiting(&self, time_of: impl Fn(&K) -> Ts) -> Option<Ts> {
        self.heap.peek().map(|Reverse(k)| time_of(&k.key))
    }

    /// Pops the next item regardless of the watermark (end of input, idle flush).
    pub fn pop_any(&mut self) -> Option<(u64, K, T)> {
        let Reverse(k) = self.heap.pop()?;
        let item = self.take(k.item)?;
        Some((k.seq, k.key, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_in_order_and_flags_late() {
        let mut b: ReorderBuffer<(Ts, u32), u32> = ReorderBuffer::new(10);
        let mut out = vec![];
        for (ts, id) in [(5, 1), (3, 2), (14, 3), (16, 4), (2, 5), (30, 6)] {
            if let Admit::Late(_, x) = b.admit(ts, (ts, id), id) {
                out.push(100 + x);
            }
            while let Some((_, _, x)) = b.pop_ready(|k| k.0) {
                out.push(x);
            }
        }
        while let Some((_, _, x)) = b.pop_any() {
            out.push(x);
        }
        // 2@ts3, 1@ts5 released when 16 arrives (watermark 6); 5@ts2 is late then.
        assert_eq!(out, vec![2, 1, 105, 3, 4, 6]);
    }
}
