//! `[privacy] hash_users`: end users' phone numbers kept out of the billing output.
//!
//! A BSP must often keep end-user numbers out of its billing warehouse. With hashing on,
//! `user` in every record the ledger emits is HMAC-SHA-256(key, number) in lower-case hex.
//! Keyed, not a bare hash: phone numbers are a small space, and an unkeyed hash of one is
//! reversed by hashing every number of the country. Deterministic: the same key gives the
//! same hash in replay and on Kafka, across restarts, so records still group per user.
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

use super::records::ConversationOpened;

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

    /// Replaces the user-identifying fields of a conversation about to leave the ledger.
    pub fn pseudonymise(&self, c: &mut ConversationOpened) {
        c.user = self.apply(&c.user);
    }
}

impl std::fmt::Debug for UserHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UserHasher(***)")
    }
}

fn hex(bytes: &[u8]) -> String {
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
        assert_eq!(format!("{a:?}"), "UserHasher(***)", "Debug shows no key");
    }
}
