//! Binary encodings of state values, with a format version in front.
//!
//! Every stored value (RocksDB, and the changelog records that copy it byte for byte),
//! every meta entry and every restart-journal entry is `[version][expiry i64 BE][payload]`.
//! The expiry stays at a fixed place so the compaction filter can read it without knowing
//! the payload.
//!
//! Format 1 — wabill before format versions — had no version byte: values started with
//! the expiry. Its first byte is therefore `0x00` for every real timestamp (year ≤ 9999,
//! ≥ 1970) or `0x7F` for "never" (`i64::MAX`), and neither is a version number this or
//! any later wabill writes (they count up from 2). So a value says which format it is in,
//! format-1 values are read (and rewritten as format 2 the next time they change), and a
//! value from a newer wabill is an error naming its version, never a misread.
//!
//! Format 3 has format 2's layout; the number says the store may hold state of the
//! per-message eras (the ledger's service free-tier and volume-tier counters, waiting
//! `MessageDelivered` units in its journal), which a wabill that reads only format 2 must
//! refuse at start-up rather than misread. Formats 2 and 3 read the same way.

use super::StoreValue;
use crate::billing::window::{OpenConversation, ScopeState, Slot, SLOTS};
use crate::billing::{EraId, MessageKind, Origin, Ts};

/// The format this wabill writes.
pub const FORMAT_VERSION: u8 = 3;
/// The oldest format it reads.
pub const OLDEST_READABLE: u8 = 1;

/// A value split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned<'a> {
    pub version: u8,
    pub expires_at: Ts,
    pub payload: &'a [u8],
}

/// Why a value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("value of {len} bytes is too short for its header")]
    Short { len: usize },
    #[error("value is in state format {found}, written by a newer wabill; this one reads formats {OLDEST_READABLE} to {FORMAT_VERSION}")]
    Newer { found: u8 },
    #[error("value starts with byte {found:#04x}, which is no state format version")]
    Unknown { found: u8 },
}

fn get_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Writes the header of a current-format value.
pub fn put_header(out: &mut Vec<u8>, expires_at: Ts) {
    out.push(FORMAT_VERSION);
    out.extend_from_slice(&expires_at.to_be_bytes());
}

/// Reads the header of a value of any readable format.
pub fn split_value(b: &[u8]) -> Result<Versioned<'_>, FormatError> {
    let short = || FormatError::Short { len: b.len() };
    match b.first().copied() {
        None => Err(short()),
        // Format 1: the first byte is the expiry's own.
        Some(0x00 | 0x7F) => Ok(Versioned {
            version: 1,
            expires_at: get_i64(b, 0).ok_or_else(short)?,
            payload: &b[8..],
        }),
        Some(v @ 2..=FORMAT_VERSION) => Ok(Versioned {
            version: v,
            expires_at: get_i64(b, 1).ok_or_else(short)?,
            payload: &b[9..],
        }),
        Some(v) if v > FORMAT_VERSION && v < 0x7F => Err(FormatError::Newer { found: v }),
        Some(v) => Err(FormatError::Unknown { found: v }),
    }
}

/// A meta value holding one i64 (stream time, watermarks, offsets, the format marker):
/// never expires.
pub fn meta_i64_value(v: i64) -> Vec<u8> {
    let mut b = Vec::with_capacity(17);
    put_header(&mut b, Ts::MAX);
    b.extend_from_slice(&v.to_be_bytes());
    b
}

/// Reads a meta i64 of any readable format.
pub fn read_meta_i64(bytes: &[u8]) -> Option<i64> {
    let v = split_value(bytes).ok()?;
    Some(i64::from_be_bytes(v.payload.get(..8)?.try_into().ok()?))
}

/// Reads the expiry of any stored value (for the compaction filter); `None` keeps it.
pub fn expiry_of(bytes: &[u8]) -> Option<Ts> {
    split_value(bytes).ok().map(|v| v.expires_at)
}

/// Why a stored value does not decode, for error messages.
pub fn describe_undecodable(bytes: &[u8]) -> String {
    match split_value(bytes) {
        Err(e) => e.to_string(),
        Ok(v) => format!("{} bytes of state format {} do not decode", bytes.len(), v.version),
    }
}

// Scope (pair) state.
//
// Format 2 payload: csw_until i64, last_inbound_at i64, flags u8, slot mask u8, then per
// present slot in slot order: opened_at i64, duration u32, origin u8, era u8.
// Format 1 payload: csw_until i64, last_inbound_at i64, flags u8, origin u8 (0 = none),
// then opened_at i64, expires_at i64 when an origin is there: one cbp-2022 conversation,
// which is the pair slot of format 2.

const SLOT_BYTES: usize = 14;

impl StoreValue for ScopeState {
    fn expires_at(&self) -> Ts {
        ScopeState::expires_at(self)
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_header(out, ScopeState::expires_at(self));
        out.extend_from_slice(&self.csw_until.to_be_bytes());
        out.extend_from_slice(&self.last_inbound_at.to_be_bytes());
        out.push(u8::from(self.last_inbound_ad) | u8::from(self.fep_consumed) << 1);
        let mask = self
            .convs
            .iter()
            .enumerate()
            .fold(0u8, |m, (i, c)| m | (u8::from(c.is_some()) << i));
        out.push(mask);
        for c in self.convs.iter().flatten() {
            out.extend_from_slice(&c.opened_at.to_be_bytes());
            out.extend_from_slice(&c.duration.to_be_bytes());
            out.push(c.origin.code());
            out.push(c.era.code());
        }
    }

    fn decode(b: &[u8]) -> Option<Self> {
        let v = split_value(b).ok()?;
        let p = v.payload;
        let flags = *p.get(16)?;
        let mut s = ScopeState {
            csw_until: get_i64(p, 0)?,
            last_inbound_at: get_i64(p, 8)?,
            last_inbound_ad: flags & 1 != 0,
            fep_consumed: flags & 2 != 0,
            convs: [None; SLOTS],
        };
        match v.version {
            1 => {
                let origin_code = *p.get(17)?;
                if origin_code != 0 {
                    let opened_at = get_i64(p, 18)?;
                    let expires_at = get_i64(p, 26)?;
                    s.convs[Slot::Pair as usize] = Some(OpenConversation::new(
                        opened_at,
                        expires_at.checked_sub(opened_at)?,
                        Origin::from_code(origin_code)?,
                        EraId::Cbp2022,
                    ));
                }
            }
            _ => {
                let mask = *p.get(17)?;
                if mask >> SLOTS != 0 {
                    return None;
                }
                let mut at = 18;
                for (i, slot) in s.convs.iter_mut().enumerate() {
                    if mask & (1 << i) == 0 {
                        continue;
                    }
                    let c = p.get(at..at + SLOT_BYTES)?;
                    *slot = Some(OpenConversation {
                        opened_at: get_i64(c, 0)?,
                        duration: get_u32(c, 8)?,
                        origin: Origin::from_code(c[12])?,
                        era: EraId::from_code(c[13])?,
                    });
                    at += SLOT_BYTES;
                }
                if at != p.len() {
                    return None;
                }
            }
        }
        Some(s)
    }
}

/// Dedupe memory of one message id: which of inbound/sent/delivered/read/failed/send-log
/// were seen, whether its delivery was applied, and its kind as far as known.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageSeen {
    pub expires_at: Ts,
    pub seen: u8,
    /// `MessageKind::code`, 0 when unknown.
    pub kind: u8,
    /// Whether `kind` came from the send log (which wins over a status's pricing).
    pub kind_from_send_log: bool,
    /// Whether a disagreement between the two sources was already counted (once per
    /// message).
    pub kind_disagreed: bool,
}

impl MessageSeen {
    pub fn kind(&self) -> Option<MessageKind> {
        MessageKind::from_code(self.kind)
    }
}

/// Set once the first `delivered`/`read` of a message has been applied.
pub const DELIVERY_APPLIED: u8 = 0x80;

impl StoreValue for MessageSeen {
    fn expires_at(&self) -> Ts {
        self.expires_at
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_header(out, self.expires_at);
        out.push(self.seen);
        out.push(self.kind | u8::from(self.kind_disagreed) << 6 | u8::from(self.kind_from_send_log) << 7);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        let v = split_value(b).ok()?;
        let seen = *v.payload.first()?;
        let (kind, from_log, disagreed) = match v.version {
            1 => (0, false, false),
            _ => {
                let k = *v.payload.get(1)?;
                (k & 0x3F, k & 0x80 != 0, k & 0x40 != 0)
            }
        };
        if kind != 0 {
            MessageKind::from_code(kind)?;
        }
        Some(MessageSeen {
            expires_at: v.expires_at,
            seen,
            kind,
            kind_from_send_log: from_log,
            kind_disagreed: disagreed,
        })
    }
}

/// A ledger counter or marker: an expiry and a number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    pub expires_at: Ts,
    pub value: u64,
}

impl StoreValue for Counter {
    fn expires_at(&self) -> Ts {
        self.expires_at
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_header(out, self.expires_at);
        out.extend_from_slice(&self.value.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Option<Self> {
        let v = split_value(b).ok()?;
        Some(Counter {
            expires_at: v.expires_at,
            value: u64::from_be_bytes(v.payload.get(..8)?.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn conv() -> impl Strategy<Value = Option<OpenConversation>> {
        proptest::option::of(
            (any::<i64>(), any::<u32>(), 0usize..8, 0usize..5).prop_map(|(o, d, c, e)| OpenConversation {
                opened_at: o,
                duration: d,
                origin: Origin::ALL[c],
                era: crate::billing::era::ERA_TABLE[e].id,
            }),
        )
    }

    proptest! {
        #[test]
        fn scope_state_round_trips(csw in any::<i64>(), last in any::<i64>(), ad: bool, used: bool,
                                   convs in proptest::array::uniform5(conv())) {
            let s = ScopeState { csw_until: csw, last_inbound_at: last, last_inbound_ad: ad, fep_consumed: used, convs };
            let mut b = Vec::new();
            s.encode(&mut b);
            prop_assert_eq!(b[0], FORMAT_VERSION);
            prop_assert_eq!(ScopeState::decode(&b), Some(s));
            prop_assert_eq!(expiry_of(&b), Some(s.expires_at()));
        }
    }

    /// A format-1 scope value exactly as wabill 0.1 (before format versions) wrote it.
    fn v1_scope(expires: i64, csw: i64, last: i64, flags: u8, conv: Option<(u8, i64, i64)>) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&expires.to_be_bytes());
        b.extend_from_slice(&csw.to_be_bytes());
        b.extend_from_slice(&last.to_be_bytes());
        b.push(flags);
        match conv {
            None => b.push(0),
            Some((origin, o, e)) => {
                b.push(origin);
                b.extend_from_slice(&o.to_be_bytes());
                b.extend_from_slice(&e.to_be_bytes());
            }
        }
        b
    }

    #[test]
    fn format_1_values_are_read() {
        // A user-initiated 2022 conversation (origin code 1) opened at 1 646 100 000.
        let b = v1_scope(
            1_646_186_400,
            1_646_150_000,
            1_646_063_600,
            1,
            Some((1, 1_646_100_000, 1_646_186_400)),
        );
        let s = ScopeState::decode(&b).unwrap();
        assert_eq!(s.csw_until, 1_646_150_000);
        assert!(s.last_inbound_ad && !s.fep_consumed);
        let c = s.slot(Slot::Pair).unwrap();
        assert_eq!(
            (c.opened_at, c.expires_at(), c.origin, c.era),
            (1_646_100_000, 1_646_186_400, Origin::UserInitiated, EraId::Cbp2022)
        );
        assert_eq!(expiry_of(&b), Some(1_646_186_400));
        // Message and counter values of format 1: expiry, then the old fields.
        let mut m = 1_700_000_000i64.to_be_bytes().to_vec();
        m.push(0b101);
        let seen = MessageSeen::decode(&m).unwrap();
        assert_eq!((seen.expires_at, seen.seen, seen.kind()), (1_700_000_000, 0b101, None));
        let mut c = i64::MAX.to_be_bytes().to_vec();
        c.extend_from_slice(&7u64.to_be_bytes());
        assert_eq!(Counter::decode(&c).unwrap().value, 7);
    }

    #[test]
    fn newer_and_unknown_formats_are_named_not_misread() {
        let mut b = Vec::new();
        Counter {
            expires_at: 5,
            value: 1,
        }
        .encode(&mut b);
        b[0] = FORMAT_VERSION + 1;
        assert_eq!(Counter::decode(&b), None);
        assert!(describe_undecodable(&b).contains(&format!("format {}", FORMAT_VERSION + 1)));
        assert_eq!(expiry_of(&b), None, "the compaction filter keeps what it cannot read");
        b[0] = 0xC3;
        assert!(matches!(split_value(&b), Err(FormatError::Unknown { found: 0xC3 })));
    }

    #[test]
    fn message_kind_round_trips() {
        let m = MessageSeen {
            expires_at: 9,
            seen: 3,
            kind: MessageKind::NonTemplate.code(),
            kind_from_send_log: true,
            kind_disagreed: true,
        };
        let mut b = Vec::new();
        m.encode(&mut b);
        assert_eq!(MessageSeen::decode(&b), Some(m));
        b[10] = 0x3E; // no such kind
        assert_eq!(MessageSeen::decode(&b), None);
    }

    #[test]
    fn truncated_values_do_not_decode() {
        let mut b = Vec::new();
        MessageSeen {
            expires_at: 5,
            seen: 3,
            ..Default::default()
        }
        .encode(&mut b);
        assert!(MessageSeen::decode(&b[..9]).is_none());
        assert!(ScopeState::decode(&[0; 10]).is_none());
        let mut s = Vec::new();
        ScopeState::default().encode(&mut s);
        s.push(0);
        assert!(ScopeState::decode(&s).is_none(), "trailing bytes");
    }
}
