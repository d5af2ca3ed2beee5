//! RocksDB backend: one column family per `Family`, expiry-driven compaction filter.

use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use rocksdb::compaction_filter::Decision;
use rocksdb::{ColumnFamilyDescriptor, Options, WriteBatch, WriteOptions, DB};

use super::codec::expiry_of;
use super::{Backend, Family, StoreError, WriteSet};
use crate::billing::Ts;

/// Meta key of the store-wide state format marker.
pub const FORMAT_KEY: &[u8] = b"state.format_version";

/// Memtable size per column family (see `open`).
const WRITE_BUFFER_BYTES: usize = 8 << 20;

pub struct RocksBackend {
    db: DB,
    purge_before: Vec<(Family, Arc<AtomicI64>)>,
}

impl RocksBackend {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(path)?;
        let purge_before: Vec<(Family, Arc<AtomicI64>)> = Family::ALL
            .iter()
            .map(|f| (*f, Arc::new(AtomicI64::new(Ts::MIN))))
            .collect();
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        // No WAL: the durable log is the changelog topic (Kafka) or the input (replay).
        // Atomic flush keeps the families consistent with each other at every flush, so a
        // crash loses a suffix of batches, never half of one; restore replays the rest.
        db_opts.set_atomic_flush(true);
        let cfs = Family::ALL.iter().map(|f| {
            let mut o = Options::default();
            // Checkpoint batches insert keys spread over the whole key space (new message
            // ids), so each memtable insert walks the skiplist from the top: in RocksDB's
            // default 64 MiB memtable that walk leaves the CPU cache, in 8 MiB it mostly
            // stays in it. Measured on the benchmark month: replay 15-20 % faster, the
            // extra flushes run on a background thread. Three buffers so a flush in
            // progress does not stall the next checkpoint.
            o.set_write_buffer_size(WRITE_BUFFER_BYTES);
            o.set_max_write_buffer_number(3);
            o.set_compression_type(rocksdb::DBCompressionType::Lz4);
            // Most lookups are for keys that do not exist yet (new message ids): a bloom
            // filter answers those without touching data blocks.
            let mut bb = rocksdb::BlockBasedOptions::default();
            bb.set_bloom_filter(10.0, false);
            bb.set_cache_index_and_filter_blocks(true);
            o.set_block_based_table_factory(&bb);
            if !matches!(f, Family::Meta | Family::Pending) {
                let pb = purge_before
                    .iter()
                    .find(|(g, _)| g == f)
                    .map(|(_, a)| a.clone())
                    .unwrap_or_default();
                // Flink-style TTL: the expiry is in the value; compaction drops dead state.
                o.set_compaction_filter(
                    "wabill-expiry",
                    move |_level: u32, _k: &[u8], v: &[u8]| match expiry_of(v) {
                        Some(e) if e < pb.load(Ordering::Relaxed) => Decision::Remove,
                        _ => Decision::Keep,
                    },
                );
            }
            ColumnFamilyDescriptor::new(f.name(), o)
        });
        let db = DB::open_cf_descriptors(&db_opts, path, cfs)?;
        let backend = RocksBackend { db, purge_before };
        backend.check_format(path)?;
        Ok(backend)
    }

    /// The store-wide format marker (`state::codec`): a store written by a newer wabill
    /// fails here, at start-up, with its version named; an older or new store is marked
    /// with this wabill's format (its values say their own format, so an older store's
    /// values are still read one by one).
    fn check_format(&self, path: &Path) -> Result<(), StoreError> {
        use super::codec::{meta_i64_value, read_meta_i64, split_value, FormatError, FORMAT_VERSION, OLDEST_READABLE};
        let cf = self.cf(Family::Meta)?;
        let newer = |found: i64| StoreError::NewerFormat {
            path: path.display().to_string(),
            found,
            oldest: OLDEST_READABLE,
            current: FORMAT_VERSION,
        };
        if let Some(v) = self.db.get_cf(cf, FORMAT_KEY)? {
            // A marker whose own header is from a newer wabill names that version;
            // an unreadable one is treated as newer than anything this wabill knows.
            let found = match split_value(&v) {
                Err(FormatError::Newer { found }) => i64::from(found),
                _ => read_meta_i64(&v).unwrap_or(i64::MAX),
            };
            if found > i64::from(FORMAT_VERSION) {
                return Err(newer(found));
            }
            if found == i64::from(FORMAT_VERSION) {
                return Ok(());
            }
        }
        self.db
            .put_cf(cf, FORMAT_KEY, meta_i64_value(i64::from(FORMAT_VERSION)))?;
        Ok(())
    }

    /// True when no family holds any key but the format marker (a brand-new store).
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        for f in Family::ALL {
            let cf = self.cf(f)?;
            for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start).take(2) {
                let (k, _) = item?;
                if !(f == Family::Meta && &*k == FORMAT_KEY) {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// Flushes memtables of every family (atomically) to SST files.
    pub fn flush(&self) -> Result<(), StoreError> {
        let cfs: Vec<&rocksdb::ColumnFamily> = Family::ALL.iter().filter_map(|f| self.db.cf_handle(f.name())).collect();
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }

    fn cf(&self, f: Family) -> Result<&rocksdb::ColumnFamily, StoreError> {
        self.db.cf_handle(f.name()).ok_or_else(|| StoreError::Corrupt {
            family: f.name(),
            key: String::new(),
            reason: "column family missing".into(),
        })
    }

    /// Forces a full compaction (tests use it to check that expired state goes).
    pub fn compact_all(&self) -> Result<(), StoreError> {
        for f in Family::ALL {
            let cf = self.cf(f)?;
            self.db.compact_range_cf(cf, None::<&[u8]>, None::<&[u8]>);
        }
        Ok(())
    }

    /// Bytes on disk and in memtables over all families, from RocksDB's own counters
    /// (no scan): what operators size volumes by.
    pub fn size_bytes(&self) -> u64 {
        let mut total = 0;
        for f in Family::ALL {
            let Ok(cf) = self.cf(f) else { continue };
            for prop in ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"] {
                if let Ok(Some(v)) = self.db.property_int_value_cf(cf, prop) {
                    total += v;
                }
            }
        }
        total
    }

    /// Number of live keys in a family (exact scan: for tests and small stores).
    pub fn count(&self, f: Family) -> Result<usize, StoreError> {
        let cf = self.cf(f)?;
        let mut n = 0;
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            item?;
            n += 1;
        }
        Ok(n)
    }
}

impl Backend for RocksBackend {
    fn get(&self, family: Family, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.db.get_cf(self.cf(family)?, key)?)
    }

    fn scan(&self, family: Family) -> Result<Vec<super::KeyValue>, StoreError> {
        let cf = self.cf(family)?;
        let mut out = Vec::new();
        for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    fn write(&mut self, set: &mut WriteSet) -> Result<(), StoreError> {
        // In key order, memtable inserts are cheaper (RocksDB's sequential-insert splice).
        // Tables drain in key order already; any other run is sorted here.
        set.sort_family_runs();
        // Sized up front: growing the batch by doubling copies it and faults in fresh
        // pages at every step (a checkpoint batch is megabytes).
        let mut batch = WriteBatch::with_capacity_bytes(set.byte_len() + 16 * set.len() + 64);
        // One handle lookup per family, not per change (a lookup is a map search by name).
        let mut handles: [Option<&rocksdb::ColumnFamily>; Family::ALL.len()] = [None; Family::ALL.len()];
        for (f, k, v) in set.iter() {
            let cf = match handles.get_mut(usize::from(f.code())) {
                Some(Some(cf)) => *cf,
                Some(slot) => *slot.insert(self.cf(f)?),
                None => self.cf(f)?,
            };
            match v {
                Some(v) => batch.put_cf(cf, k, v),
                None => batch.delete_cf(cf, k),
            }
        }
        let mut wo = WriteOptions::default();
        wo.set_sync(false);
        wo.disable_wal(true);
        self.db.write_opt(batch, &wo)?;
        set.clear();
        Ok(())
    }

    fn sync(&self) -> Result<(), StoreError> {
        self.flush()
    }

    fn set_purge_before(&self, family: Family, ts: Ts) {
        for (f, a) in &self.purge_before {
            if *f == family {
                a.store(ts, Ordering::Relaxed);
            }
        }
    }
}
