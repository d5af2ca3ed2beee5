//! `[privacy] hash_users`: end users' phone numbers kept out of the billing output.
//!
//! A BSP must often keep end-user numbers out of its billing warehouse. With hashing on,
//! `user` in every record the ledger emits is HMAC-SHA-256(key, number) in lower-case hex.
//! Keyed, not a bare hash: phone numbers are a small space, and an unkeyed hash of one is
//! reversed by hashing every number of the country. Deterministic: the same key gives the
//! same hash in replay and on Kafka, across restarts, so records still group per user.
//!
//! Two more fields give the number away and are keyed-hashed too: Meta's message ids
//! (`wamid.HBgL…`) carry the user's number in base64 (`opening_message_id`), and the
//! conversation id is an unkeyed hash of (business number, user, category, opened_at),
//! every part but the user in the record itself — trying every number of the country finds
//! the user. Both stay deterministic (the same record, the same values), and the
//! conversation id keeps its shape (32 hex characters).
//!
//! One seam: the ledger applies `UserHasher::pseudonymise` to each record as it leaves the
//! stage (`LedgerStage::apply`), so the replay's JSON lines, the billing topic's Avro and
//! the month statements all get it, and no sink knows about privacy. Any other record kind
//! the ledger emits goes through the same hasher (`apply`) at the same place.
//!
//! What keeps the number: state (store keys, journals, changelogs: the rules need it), the
//! internal topics between stages (events, conversations), and dead letters (the original
//! bytes, for re-processing). The key is read at start-up (`config::PrivacyConfig`); this
//! module does no I/O.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::billing::ids::hex;

use super::records::{ConversationOpened, MessageDelivered};

/// HMAC-SHA-256 under the configured key, prepared once (the key's inner and outer pads
/// are hashed at construction; each use clones that state).
#[derive(Clone)]
pub struct UserHasher {
    mac: Hmac<Sha256>,
}

impl UserHasher {
    /// `None` for an empty key: an empty key would make the hash a public function of the
    /// number, as reversible as no key at all.
    pub fn new(key: &[u8]) -> Option<UserHasher> {
        if key.is_empty() {
            return None;
        }
        // HMAC takes a key of any length (a long one is hashed first): this cannot fail.
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
        Some(UserHasher { mac })
    }

    /// The keyed hash of `value` (a user's number): 64 lower-case hex characters.
    pub fn apply(&self, value: &str) -> String {
        let digest = self.mac.clone().chain_update(value.as_bytes()).finalize().into_bytes();
        hex(&digest)
    }

    /// The keyed hash of an id whose shape is 32 hex characters (a conversation id):
    /// the first 128 bits of `apply`.
    pub fn apply_id(&self, id: &str) -> String {
        let mut h = self.apply(id);
        h.truncate(32);
        h
    }

    /// Replaces the user-identifying fields of a conversation about to leave the ledger:
    /// the user, and the ids that can be turned back into the user's number.
    pub fn pseudonymise(&self, c: &mut ConversationOpened) {
        c.user = self.apply(&c.user);
        c.conversation_id = self.apply_id(&c.conversation_id);
        c.opening_message_id = self.apply(&c.opening_message_id);
    }

    /// The same for a message charge: its user, its wamid (which encodes the number) and
    /// its charge id (an unkeyed hash of number, user and wamid).
    pub fn pseudonymise_message(&self, m: &mut MessageDelivered) {
        m.user = self.apply(&m.user);
        m.charge_id = self.apply_id(&m.charge_id);
        m.message_id = self.apply(&m.message_id);
    }
}

impl std::fmt::Debug for UserHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserHasher(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1 and 2 (HMAC-SHA-256): the standard algorithm, hex as shown
    /// there.
    #[test]
    fn rfc4231_vectors() {
        let h = UserHasher::new(&[0x0b; 20]).unwrap();
        assert_eq!(
            h.apply("Hi There"),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let h = UserHasher::new(b"Jefe").unwrap();
        assert_eq!(
            h.apply("what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn deterministic_per_key() {
        let a = UserHasher::new(b"key-a").unwrap();
        let again = UserHasher::new(b"key-a").unwrap();
        let b = UserHasher::new(b"key-b").unwrap();
        let user = "5511987654321";
        assert_eq!(a.apply(user), again.apply(user), "same key, same user: same hash");
        assert_eq!(a.apply(user), a.apply(user), "the prepared state is not consumed");
        assert_ne!(a.apply(user), b.apply(user), "another key: another hash");
        assert_ne!(a.apply(user), a.apply("5511987654322"), "another user: another hash");
        assert_eq!(a.apply(user).len(), 64);
        assert!(!a.apply(user).contains(user));
        assert!(UserHasher::new(b"").is_none(), "an empty key is refused");
        assert_eq!(a.apply_id("5b0c").len(), 32);
        assert!(a.apply(user).starts_with(&a.apply_id(user)));
        assert_eq!(format!("{a:?}"), "UserHasher(***)", "Debug shows no key");
    }
}
