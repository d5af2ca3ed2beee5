//! Binary encodings of state values: fixed layouts, expiry first.

use super::StoreValue;
use crate::billing::window::{OpenConversation, ScopeState};
use crate::billing::{Origin, Ts};

fn put_i64(out: &mut Vec<u8>, v: i64) {
    out.extend_from_slice(&v.to_be_bytes());
}
fn get_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_be_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// Reads the expiry prefix of any stored value (for the compaction filter).
pub fn expiry_of(bytes: &[u8]) -> Option<Ts> {
    get_i64(bytes, 0)
}

impl StoreValue for ScopeState {
    fn expires_at(&self) -> Ts {
        ScopeState::expires_at(self)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_i64(out, ScopeState::expires_at(self));
        put_i64(out, self.csw_until);
        put_i64(out, self.last_inbound_at);
        let mut flags = 0u8;
        if self.last_inbound_ad {
            flags |= 1;
        }
        if self.fep_consumed {
            flags |= 2;
        }
        out.push(flags);
        match self.conv {
            None => out.push(0),
            Some(c) => {
                out.push(c.origin.code());
                put_i64(out, c.opened_at);
                put_i64(out, c.expires_at);
            }
        }
    }
    fn decode(b: &[u8]) -> Option<Self> {
        let flags = *b.get(24)?;
        let origin_code = *b.get(25)?;
        let conv = if origin_code == 0 {
            None
        } else {
            Some(OpenConversation {
                origin: Origin::from_code(origin_code)?,
                opened_at: get_i64(b, 26)?,
                expires_at: get_i64(b, 34)?,
            })
        };
        Some(ScopeState {
            csw_until: get_i64(b, 8)?,
            last_inbound_at: get_i64(b, 16)?,
            last_inbound_ad: flags & 1 != 0,
            fep_consumed: flags & 2 != 0,
            conv,
        })
    }
}

/// Dedupe memory of one message id: which of inbound/sent/delivered/read/failed were
/// seen, and whether its delivery was applied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MessageSeen {
    pub expires_at: Ts,
    pub seen: u8,
}

/// Set once the first `delivered`/`read` of a message has been applied.
pub const DELIVERY_APPLIED: u8 = 0x80;

impl StoreValue for MessageSeen {
    fn expires_at(&self) -> Ts {
        self.expires_at
    }
    fn encode(&self, out: &mut Vec<u8>) {
        put_i64(out, self.expires_at);
        out.push(self.seen);
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(MessageSeen {
            expires_at: get_i64(b, 0)?,
            seen: *b.get(8)?,
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
        put_i64(out, self.expires_at);
        out.extend_from_slice(&self.value.to_be_bytes());
    }
    fn decode(b: &[u8]) -> Option<Self> {
        Some(Counter {
            expires_at: get_i64(b, 0)?,
            value: u64::from_be_bytes(b.get(8..16)?.try_into().ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn scope_state_round_trips(csw in any::<i64>(), last in any::<i64>(), ad: bool, used: bool,
                                   conv in proptest::option::of((any::<i64>(), any::<i64>(), 1u8..=7))) {
            let s = ScopeState {
                csw_until: csw, last_inbound_at: last, last_inbound_ad: ad, fep_consumed: used,
                conv: conv.map(|(o, e, c)| OpenConversation { opened_at: o, expires_at: e, origin: Origin::from_code(c).unwrap() }),
            };
            let mut b = Vec::new();
            s.encode(&mut b);
            prop_assert_eq!(ScopeState::decode(&b), Some(s));
            prop_assert_eq!(expiry_of(&b), Some(s.expires_at()));
        }
    }

    #[test]
    fn truncated_values_do_not_decode() {
        let mut b = Vec::new();
        MessageSeen { expires_at: 5, seen: 3 }.encode(&mut b);
        assert!(MessageSeen::decode(&b[..8]).is_none());
        assert!(ScopeState::decode(&[0; 10]).is_none());
    }
}
