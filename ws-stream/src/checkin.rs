//! The rules of the classroom check-in that are not about connections: codes, host tokens, and
//! what happens when someone types a code.
//!
//! A code is 6 digits from a cryptographically secure generator (`rand`'s thread-local
//! generator: ChaCha, seeded from the operating system). The hub keeps the current code and the
//! one before it in memory and rotates them; this module decides, with the store, whether an
//! attempt counts.

use std::ops::RangeInclusive;

use actix::Addr;
use chrono::Utc;
use rand::Rng;
use sha2::{Digest, Sha256};
use shared_model::comment::validate_author;
use shared_model::store::RoomStore;
use shared_model::time::rfc3339;
use shared_model::{ApiError, ErrorCode, StoreError};

use crate::hub::{Attended, LiveHub, VerifyCode};

/// Seconds between two codes, as the host may choose.
pub const INTERVAL_SECS: RangeInclusive<u32> = 2..=60;

/// How long a check-in stays open, in seconds, as the host may choose.
pub const DURATION_SECS: RangeInclusive<u32> = 10..=3600;

/// Wrong codes a name may give per check-in; after that it is refused, even with the right one.
pub const MAX_WRONG_CODES: u32 = 5;

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

/// Whether two codes are equal, compared in constant time.
pub fn codes_match(given: &str, expected: &str) -> bool {
    constant_time_eq::constant_time_eq(given.as_bytes(), expected.as_bytes())
}

fn store_failed(e: StoreError) -> ApiError {
    log::error!("check-in storage failed: {e}");
    ApiError::internal()
}

/// `name` types `code` for check-in `id`. Checking in twice is harmless (the first time is
/// kept). Each wrong code is `wrong_code`; once a name gave [`MAX_WRONG_CODES`] of them, every
/// later attempt of that name for this check-in is `too_many_attempts`, right code or not.
pub async fn attend(
    rooms: &dyn RoomStore,
    hub: &Addr<LiveHub>,
    id: i64,
    name: &str,
    code: &str,
) -> Result<(), ApiError> {
    let name = validate_author(name)?;
    let checkin = rooms
        .checkin(id)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, format!("no check-in {id}")))?;
    if checkin.closed || Utc::now() >= checkin.closes_at {
        return Err(ApiError::new(
            ErrorCode::CheckinClosed,
            format!("check-in {id} closed at {}", rfc3339(checkin.closes_at)),
        ));
    }
    let wrong = rooms.wrong_codes(id, &name).await.map_err(store_failed)?;
    if wrong >= MAX_WRONG_CODES {
        return Err(too_many(&name));
    }
    let valid = hub
        .send(VerifyCode {
            checkin: id,
            code: code.to_owned(),
        })
        .await
        .unwrap_or(false);
    if !valid {
        let wrong = rooms
            .record_wrong_code(id, &name)
            .await
            .map_err(store_failed)?;
        return Err(ApiError::new(
            ErrorCode::WrongCode,
            format!(
                "that is not the code on the host's screen ({} tries left)",
                MAX_WRONG_CODES.saturating_sub(wrong)
            ),
        ));
    }
    let at = Utc::now();
    if rooms
        .record_attendance(id, &name, at)
        .await
        .map_err(store_failed)?
    {
        hub.do_send(Attended {
            room: checkin.room,
            checkin: id,
            name,
            at,
        });
    }
    Ok(())
}

fn too_many(name: &str) -> ApiError {
    ApiError::new(
        ErrorCode::TooManyAttempts,
        format!("{name} gave {MAX_WRONG_CODES} wrong codes and cannot check in to this one"),
    )
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
}
