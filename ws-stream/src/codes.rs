//! Secrets of the live service, with nothing else in them: check-in codes and host tokens.
//!
//! A check-in's codes are TOTP-style (RFC 6238): the code of time step `k` is HOTP (RFC 4226:
//! an HMAC of the 8-byte big-endian counter `k`, dynamic truncation, 6 decimal digits) keyed by
//! the check-in's [`CheckinSecret`], 32 random bytes the store made when it opened and keeps.
//! The hash is SHA-256 (RFC 6238's `HMAC-SHA-256` variant); the steps count from the check-in's
//! `opened_at` (not the Unix epoch) in its own `interval_secs`: `k = floor((now - opened_at) /
//! interval)` ([`CodeSchedule`]). So every instance computes the same code at the same moment
//! with no coordination, and a restart resumes the sequence where it stands. Instances must
//! agree on the time (NTP): a code is taken during its step and the next one.
//!
//! Two consecutive steps with the same code would leave the host's screen unchanged for a step;
//! plain HOTP does that once in a million steps. [`CodeSchedule::code`] avoids it cheaply: when
//! step `k`'s HOTP equals step `k - 1`'s, step `k` shows the HOTP of counter `k | 2^63` instead
//! (a counter no step reaches). A repeat now needs two one-in-a-million coincidences at once.
//!
//! A host token is 256 random bits; the store keeps only its SHA-256. Codes and tokens are both
//! compared in constant time. The hub uses the codes, the room rules ([`crate::rooms`]) the
//! tokens.

use chrono::{DateTime, TimeDelta, Utc};
use danmaku_store::{CheckinRecord, CheckinSecret};
use hmac::{Hmac, Mac};
use rand::Rng;
use sha2::{Digest, Sha256};

/// Decimal digits in a check-in code.
pub const CODE_DIGITS: u32 = 6;

/// Set in the HOTP counter of a step whose plain code repeats the step before's (see the module
/// docs); no step number reaches it.
const REPEAT_COUNTER_BIT: u64 = 1 << 63;

/// HOTP (RFC 4226, section 5.3) with HMAC-SHA-256: the HMAC of `counter` as 8 big-endian bytes,
/// 31 bits taken at the offset its last 4 bits name, modulo `10^digits`.
fn hotp(key: &[u8], counter: u64, digits: u32) -> u32 {
    // HMAC takes a key of any length: this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(&counter.to_be_bytes());
    let hash = mac.finalize().into_bytes();
    let offset = usize::from(hash[hash.len() - 1] & 0x0f);
    let word = [
        hash[offset],
        hash[offset + 1],
        hash[offset + 2],
        hash[offset + 3],
    ];
    (u32::from_be_bytes(word) & 0x7fff_ffff) % 10u32.pow(digits)
}

/// The codes of one check-in: which step it is, its code, and when the step ends. Every
/// instance that has the check-in's record computes the same ones.
#[derive(Clone)]
pub struct CodeSchedule {
    /// What the codes are keyed with.
    secret: CheckinSecret,
    /// Where step 0 starts.
    opened_at: DateTime<Utc>,
    /// The length of a step, in milliseconds (at least 1).
    step_millis: i64,
}

impl CodeSchedule {
    /// The codes of the check-in `record`.
    pub fn new(record: &CheckinRecord) -> Self {
        Self {
            secret: record.secret.clone(),
            opened_at: record.opened_at,
            step_millis: (i64::from(record.interval_secs) * 1000).max(1),
        }
    }

    /// The step at `now`: `floor((now - opened_at) / interval)`; 0 before `opened_at` (a clock a
    /// little behind the one of the instance that opened it).
    pub fn step_at(&self, now: DateTime<Utc>) -> u64 {
        let elapsed = (now - self.opened_at).num_milliseconds();
        u64::try_from(elapsed / self.step_millis).unwrap_or(0)
    }

    /// When `step` starts: `opened_at + step * interval` (the end of time past the range of
    /// dates, which no check-in reaches).
    pub fn step_start(&self, step: u64) -> DateTime<Utc> {
        i64::try_from(step)
            .ok()
            .and_then(|step| step.checked_mul(self.step_millis))
            .and_then(TimeDelta::try_milliseconds)
            .and_then(|offset| self.opened_at.checked_add_signed(offset))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }

    /// When `step` ends, and the next starts: what the host's screen shows as `valid_until`.
    pub fn step_end(&self, step: u64) -> DateTime<Utc> {
        self.step_start(step.saturating_add(1))
    }

    /// The code of `step`, [`CODE_DIGITS`] digits, never the same as the step before's unless
    /// two one-in-a-million coincidences meet (see the module docs).
    pub fn code(&self, step: u64) -> String {
        let key = self.secret.expose();
        let mut code = hotp(key, step, CODE_DIGITS);
        if step > 0 && code == hotp(key, step - 1, CODE_DIGITS) {
            code = hotp(key, step | REPEAT_COUNTER_BIT, CODE_DIGITS);
        }
        format!("{code:0width$}", width = CODE_DIGITS as usize)
    }

    /// Whether `given` is the code of the step at `now` or of the step before it. Both are
    /// compared, each in constant time, whichever matches.
    pub fn accepts(&self, given: &str, now: DateTime<Utc>) -> bool {
        let step = self.step_at(now);
        let current = codes_match(given, &self.code(step));
        let previous = step > 0 && codes_match(given, &self.code(step - 1));
        current | previous
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

    /// RFC 6238 Appendix B, the SHA-256 rows: the 32-byte seed, T0 = 0 and X = 30 s, so the
    /// counter is `floor(unix time / 30)`; 8 digits there, and their last 6 here.
    const RFC_6238_SEED: &[u8; 32] = b"12345678901234567890123456789012";
    const RFC_6238_SHA256: [(u64, u32); 6] = [
        (59, 46_119_246),
        (1_111_111_109, 68_084_774),
        (1_111_111_111, 67_062_674),
        (1_234_567_890, 91_819_424),
        (2_000_000_000, 90_698_825),
        (20_000_000_000, 77_737_706),
    ];

    #[test]
    fn hotp_gives_the_rfc_6238_sha256_test_values() {
        for (unix, expected) in RFC_6238_SHA256 {
            assert_eq!(hotp(RFC_6238_SEED, unix / 30, 8), expected, "time {unix}");
            assert_eq!(
                hotp(RFC_6238_SEED, unix / 30, 6),
                expected % 1_000_000,
                "time {unix}"
            );
        }
    }

    fn record(opened_at: DateTime<Utc>, interval_secs: u32, secret: [u8; 32]) -> CheckinRecord {
        CheckinRecord {
            id: 1,
            room: shared_model::ChannelId::parse("r").unwrap(),
            interval_secs,
            opened_at,
            closes_at: opened_at + TimeDelta::hours(1),
            closed: false,
            secret: CheckinSecret::from_bytes(secret),
        }
    }

    /// The RFC's seed as a check-in secret, opened at the Unix epoch with 30 s steps: the
    /// schedule's codes are the RFC's (last 6 digits), step by step.
    #[test]
    fn a_check_in_opened_at_the_epoch_with_30_s_steps_shows_the_rfc_6238_codes() {
        let codes = CodeSchedule::new(&record(DateTime::UNIX_EPOCH, 30, *RFC_6238_SEED));
        for (unix, expected) in RFC_6238_SHA256 {
            let now = DateTime::from_timestamp(unix as i64, 0).unwrap();
            let step = codes.step_at(now);
            assert_eq!(step, unix / 30);
            // No test value's step repeats the step before's code, so none is replaced.
            assert_eq!(codes.code(step), format!("{:06}", expected % 1_000_000));
            assert!(codes.accepts(&format!("{:06}", expected % 1_000_000), now));
        }
    }

    #[test]
    fn steps_start_at_opened_at_and_turn_exactly_at_each_boundary() {
        let opened = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let codes = CodeSchedule::new(&record(opened, 5, [7; 32]));
        let ms = TimeDelta::milliseconds;
        assert_eq!(codes.step_at(opened - ms(1)), 0, "a clock a little behind");
        assert_eq!(codes.step_at(opened - TimeDelta::days(1)), 0);
        assert_eq!(codes.step_at(opened), 0);
        assert_eq!(codes.step_at(opened + ms(4_999)), 0);
        assert_eq!(codes.step_at(opened + ms(5_000)), 1);
        assert_eq!(codes.step_at(opened + ms(9_999)), 1);
        assert_eq!(codes.step_at(opened + ms(10_000)), 2);
        assert_eq!(codes.step_start(0), opened);
        assert_eq!(codes.step_start(3), opened + ms(15_000));
        assert_eq!(codes.step_end(0), opened + ms(5_000));
        assert_eq!(codes.step_end(2), codes.step_start(3));
        assert_eq!(codes.step_start(u64::MAX), DateTime::<Utc>::MAX_UTC);
        for step in 0..100 {
            assert_eq!(codes.step_at(codes.step_start(step)), step);
            assert_eq!(codes.step_at(codes.step_end(step) - ms(1)), step);
        }
    }

    #[test]
    fn the_current_and_the_previous_steps_code_are_taken_and_no_other() {
        let opened = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let codes = CodeSchedule::new(&record(opened, 10, [9; 32]));
        let at = |step: u64| codes.step_start(step) + TimeDelta::seconds(3);
        assert!(codes.accepts(&codes.code(0), at(0)));
        assert!(codes.accepts(&codes.code(0), at(1)), "the previous step's");
        assert!(!codes.accepts(&codes.code(0), at(2)), "two steps old");
        assert!(!codes.accepts(&codes.code(1), at(0)), "not before its step");
        assert!(codes.accepts(&codes.code(5), at(5)));
        assert!(!codes.accepts("", at(5)));
        assert!(!codes.accepts(&codes.code(5)[..5], at(5)));
        // The same secret and times give the same codes, wherever they are computed.
        let again = CodeSchedule::new(&record(opened, 10, [9; 32]));
        assert_eq!(
            (0..50).map(|k| codes.code(k)).collect::<Vec<_>>(),
            (0..50).map(|k| again.code(k)).collect::<Vec<_>>()
        );
        let other = CodeSchedule::new(&record(opened, 10, [8; 32]));
        assert_ne!(codes.code(0), other.code(0));
    }

    #[test]
    fn codes_are_six_digits_and_consecutive_steps_differ() {
        let codes = CodeSchedule::new(&record(DateTime::UNIX_EPOCH, 2, [3; 32]));
        let all: Vec<String> = (0..5_000).map(|k| codes.code(k)).collect();
        for (k, code) in all.iter().enumerate() {
            assert_eq!(code.len(), 6, "step {k}");
            assert!(code.bytes().all(|b| b.is_ascii_digit()), "step {k}");
        }
        assert!(all.windows(2).all(|w| w[0] != w[1]));
    }

    /// A secret and a step whose plain HOTP repeats the step before's (587999 both), found by
    /// trying the steps of this secret in order.
    const REPEATING: ([u8; 32], u64) = ([5; 32], 884_426);

    /// Such a step shows the HOTP of its counter with the top bit set instead.
    #[test]
    fn a_step_whose_plain_code_repeats_the_previous_one_shows_another() {
        let (secret, step) = REPEATING;
        let codes = CodeSchedule::new(&record(DateTime::UNIX_EPOCH, 2, secret));
        assert_eq!(
            hotp(&secret, step, CODE_DIGITS),
            hotp(&secret, step - 1, CODE_DIGITS)
        );
        assert_ne!(codes.code(step), codes.code(step - 1));
        assert_eq!(
            codes.code(step),
            format!(
                "{:06}",
                hotp(&secret, step | REPEAT_COUNTER_BIT, CODE_DIGITS)
            )
        );
    }
}
