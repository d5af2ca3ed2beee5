//! Journal of a reorder buffer's changes, so items consumed but not yet applied are
//! persisted with the rest of the state (and changelogged) on the Kafka path.

use rustc_hash::FxHashSet;

use crate::billing::Ts;
use crate::state::{Family, WriteSet};

/// Values in the pending family carry no expiry: they leave when applied.
pub const NEVER: Ts = Ts::MAX;

#[derive(Default)]
pub struct PendingJournal {
    pub enabled: bool,
    added: Vec<(u64, Vec<u8>)>,
    removed: FxHashSet<u64>,
}

impl PendingJournal {
    pub fn added(&mut self, seq: u64, encoded: impl FnOnce() -> Vec<u8>) {
        if self.enabled {
            self.added.push((seq, encoded()));
        }
    }

    pub fn removed(&mut self, seq: u64) {
        if self.enabled {
            self.removed.insert(seq);
        }
    }

    /// Writes the changes since the last drain: new waiting items, and deletions of the
    /// ones applied meanwhile (an item added and applied in the same interval never hits
    /// the store).
    pub fn drain(&mut self, set: &mut WriteSet) {
        let mut added_now = FxHashSet::default();
        for (seq, bytes) in self.added.drain(..) {
            added_now.insert(seq);
            if self.removed.contains(&seq) {
                continue;
            }
            set.put_with(
                Family::Pending,
                &seq.to_be_bytes(),
                Some(|out: &mut Vec<u8>| {
                    crate::state::codec::put_header(out, NEVER);
                    out.extend_from_slice(&bytes);
                }),
            );
        }
        for seq in self.removed.drain() {
            if !added_now.contains(&seq) {
                set.put(Family::Pending, &seq.to_be_bytes(), None);
            }
        }
    }
}

pub use crate::state::codec::read_meta_i64;

/// Meta entry holding one i64 (stream time, watermarks, offsets), versioned like every
/// stored value (`state::codec`).
pub fn meta_i64(set: &mut WriteSet, key: &str, v: i64) {
    set.put(
        Family::Meta,
        key.as_bytes(),
        Some(&crate::state::codec::meta_i64_value(v)),
    );
}

/// Splits a pending value into (seq from key, state format, payload after the version and
/// expiry), or says why it cannot be read.
pub fn pending_entry<'a>(key: &[u8], value: &'a [u8]) -> Result<(u64, u8, &'a [u8]), String> {
    let seq = u64::from_be_bytes(key.try_into().map_err(|_| "key is not a sequence number".to_string())?);
    let v = crate::state::codec::split_value(value).map_err(|e| e.to_string())?;
    Ok((seq, v.version, v.payload))
}

/// Every item waiting in a persisted reorder buffer, decoded, with its sequence number.
pub fn load_pending<T>(
    backend: &dyn crate::state::Backend,
    decode: impl Fn(u8, &[u8]) -> Result<T, String>,
) -> Result<Vec<(u64, T)>, crate::state::StoreError> {
    let mut out = Vec::new();
    for (k, v) in backend.scan(Family::Pending)? {
        let corrupt = |reason: String| crate::state::StoreError::Corrupt {
            family: "pending",
            key: format!("{k:?}"),
            reason,
        };
        let (seq, version, payload) = pending_entry(&k, &v).map_err(corrupt)?;
        out.push((seq, decode(version, payload).map_err(corrupt)?));
    }
    Ok(out)
}
