//! The one text form of a time, on the wire and in the database: RFC 3339 in UTC with
//! milliseconds and a `Z`, such as `2026-11-22T00:00:00.000Z`.
//!
//! Times are [`DateTime<Utc>`] everywhere in the code; this module is the only place that turns
//! them into text and back. Serde fields use [`wire`]
//! (`#[serde(with = "shared_model::time::wire")]`); the stores and the few places that print a
//! time (CSV, messages) use [`rfc3339`] and [`parse`].
//!
//! The text must stay byte for byte what earlier versions wrote: databases written by them are
//! read by this one, and clients compare the JSON. Fixed width and always UTC, it also sorts as
//! text in time order.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};

/// `at` as the wire and the database write it: `2026-11-22T00:00:00.000Z`. Digits below the millisecond are
/// cut off, not rounded.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Reads a time written by [`rfc3339`]; any RFC 3339 offset is accepted and turned into UTC.
pub fn parse(text: &str) -> Result<DateTime<Utc>, chrono::ParseError> {
    DateTime::parse_from_rfc3339(text).map(|at| at.with_timezone(&Utc))
}

/// `at` cut to the millisecond: the precision the text form keeps, so a time held in memory
/// equals the one read back from the database or the wire.
pub fn to_millis(at: DateTime<Utc>) -> DateTime<Utc> {
    at.trunc_subsecs(3)
}

/// The server's clock, cut to the millisecond (see [`to_millis`]).
pub fn now() -> DateTime<Utc> {
    to_millis(Utc::now())
}

/// The serde `with` module for a [`DateTime<Utc>`] field: written by [`rfc3339`], read by
/// [`parse`].
pub mod wire {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes `at` as [`super::rfc3339`] text.
    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&super::rfc3339(*at))
    }

    /// Reads RFC 3339 text, as [`super::parse`] does.
    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<DateTime<Utc>, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        super::parse(&text).map_err(|e| {
            serde::de::Error::custom(format_args!(
                "{text:?} is not an RFC 3339 time such as 2026-11-22T00:00:00.000Z: {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, TimeZone};

    use super::*;

    #[test]
    fn writes_utc_with_milliseconds_and_z() {
        let at = Utc.with_ymd_and_hms(2026, 11, 22, 0, 0, 0).unwrap();
        assert_eq!(rfc3339(at), "2026-11-22T00:00:00.000Z");
        let odd = at + Duration::microseconds(123_999);
        assert_eq!(rfc3339(odd), "2026-11-22T00:00:00.123Z", "cut, not rounded");
    }

    #[test]
    fn what_earlier_versions_wrote_reads_back_to_the_same_text() {
        // Written by `to_rfc3339_opts(SecondsFormat::Millis, true)`, as every earlier version
        // stored and sent times, including Bilibili imports from the epoch on.
        for old in [
            "2026-11-22T00:00:00.000Z",
            "2024-01-01T00:00:01.000Z",
            "2020-09-13T12:26:40.000Z",
            "2025-03-01T12:00:00.123Z",
            "1970-01-01T00:00:00.000Z",
            "9999-12-31T23:59:59.999Z",
        ] {
            assert_eq!(rfc3339(parse(old).unwrap()), old);
        }
    }

    #[test]
    fn other_offsets_are_read_as_utc() {
        let at = parse("2026-11-22T09:00:00.500+09:00").unwrap();
        assert_eq!(rfc3339(at), "2026-11-22T00:00:00.500Z");
    }

    #[test]
    fn text_that_is_not_a_time_is_refused() {
        for bad in ["", "x", "2026-11-22", "2026-11-22 00:00:00", "1700000000"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn now_round_trips_through_text() {
        let at = now();
        assert_eq!(parse(&rfc3339(at)).unwrap(), at);
        assert_eq!(to_millis(at), at);
    }

    #[test]
    fn serde_uses_the_same_text() {
        #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        struct Stamp {
            #[serde(with = "super::wire")]
            at: DateTime<Utc>,
        }
        let stamp = Stamp {
            at: parse("2026-11-22T00:00:05.000Z").unwrap(),
        };
        let json = serde_json::to_string(&stamp).unwrap();
        assert_eq!(json, r#"{"at":"2026-11-22T00:00:05.000Z"}"#);
        assert_eq!(serde_json::from_str::<Stamp>(&json).unwrap(), stamp);
        let err = serde_json::from_str::<Stamp>(r#"{"at":"soon"}"#).unwrap_err();
        assert!(err.to_string().contains("RFC 3339"), "{err}");
    }
}
