//! Deterministic conversation ids (docs/billing-rules.md §10): the same input always yields the same ids,
//! so a replayed Kafka batch produces byte-identical records that downstream can dedupe.

use sha2::{Digest, Sha256};

use super::time::Ts;

/// 32 hex characters (128 bits of SHA-256) over (business number, user, category,
/// opened_at). The category is empty in `cbp-2022`. Fields are length-prefixed so no two
/// different tuples can hash the same input bytes.
pub fn conversation_id(phone_number_id: &str, user: &str, category: &str, opened_at: Ts) -> String {
    let mut h = Sha256::new();
    for part in [phone_number_id, user, category] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part.as_bytes());
    }
    h.update(opened_at.to_be_bytes());
    hex32(&h.finalize())
}

/// 32 hex characters over (business number, user, message id): a message charge's id
/// (docs/billing-rules.md §10). A different domain tag from conversation ids, so the two
/// kinds can never share an id.
pub fn charge_id(phone_number_id: &str, user: &str, message_id: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"message-charge\0");
    for part in [phone_number_id, user, message_id] {
        h.update((part.len() as u32).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex32(&h.finalize())
}

/// The first 128 bits of a digest, as 32 lower-case hex characters.
fn hex32(digest: &[u8]) -> String {
    hex(&digest[..16])
}

/// Lower-case hex of `bytes` (ids here, keyed hashes in `pipeline::privacy`).
pub fn hex(bytes: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(HEX[usize::from(b >> 4)] as char);
        s.push(HEX[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_distinct() {
        let a = conversation_id("106540352242922", "16505551234", "", 1_650_000_000);
        assert_eq!(a.len(), 32);
        assert_eq!(a, conversation_id("106540352242922", "16505551234", "", 1_650_000_000));
        assert_ne!(a, conversation_id("106540352242922", "16505551234", "", 1_650_000_001));
        assert_ne!(
            conversation_id("1", "23", "", 0),
            conversation_id("12", "3", "", 0),
            "length prefix separates fields"
        );
        let c = charge_id("106540352242922", "16505551234", "wamid.A");
        assert_eq!(c.len(), 32);
        assert_eq!(c, charge_id("106540352242922", "16505551234", "wamid.A"));
        assert_ne!(c, charge_id("106540352242922", "16505551234", "wamid.B"));
    }
}
