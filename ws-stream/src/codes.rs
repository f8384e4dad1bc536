//! Secrets of the live service, with nothing else in them: check-in codes and host tokens.
//!
//! A code is 6 digits from a cryptographically secure generator (`rand`'s thread-local
//! generator: ChaCha, seeded from the operating system). A host token is 256 random bits; the
//! store keeps only its SHA-256. Both are compared in constant time. The hub uses the codes, the
//! room rules ([`crate::rooms`]) the tokens.

use rand::Rng;
use sha2::{Digest, Sha256};

/// A fresh 6-digit code, never the same as `previous` (so a rotation is always visible).
pub fn new_code(previous: Option<&str>) -> String {
    let mut rng = rand::rng();
    loop {
        let code = format!("{:06}", rng.random_range(0..1_000_000u32));
        if Some(code.as_str()) != previous {
            return code;
        }
    }
}

/// Whether two codes are equal, compared in constant time.
pub fn codes_match(given: &str, expected: &str) -> bool {
    constant_time_eq::constant_time_eq(given.as_bytes(), expected.as_bytes())
}

/// A fresh host token: 32 random bytes as 64 hex digits.
pub fn new_host_token() -> String {
    let bytes: [u8; 32] = rand::rng().random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What the store keeps of a host token.
pub fn token_digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Whether `token` is the one whose digest is `digest`, compared in constant time.
pub fn token_matches(token: &str, digest: &[u8; 32]) -> bool {
    constant_time_eq::constant_time_eq_32(&token_digest(token), digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_and_change() {
        let mut previous = new_code(None);
        for _ in 0..1000 {
            let code = new_code(Some(&previous));
            assert_eq!(code.len(), 6);
            assert!(code.bytes().all(|b| b.is_ascii_digit()));
            assert_ne!(code, previous);
            previous = code;
        }
    }

    #[test]
    fn host_tokens_are_random_and_checked_by_digest() {
        let token = new_host_token();
        assert_eq!(token.len(), 64);
        assert_ne!(token, new_host_token());
        let digest = token_digest(&token);
        assert!(token_matches(&token, &digest));
        assert!(!token_matches("not it", &digest));
    }

    #[test]
    fn codes_match_only_when_equal() {
        assert!(codes_match("012345", "012345"));
        assert!(!codes_match("012345", "012346"));
        assert!(!codes_match("01234", "012345"));
    }
}
