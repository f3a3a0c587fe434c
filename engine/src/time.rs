//! Time values of the journal: [`Timestamp`] (an instant, RFC 3339 on the wire) and [`Duration`]
//! (a span, humantime on the wire).
//!
//! The engine never reads a clock: every instant is handed in by the caller. Both types are
//! millisecond-precision newtypes so that arithmetic is exact, comparisons are cheap and a
//! journal written and read back is bit-for-bit the same plan.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use jiff::SignedDuration;
use jiff::civil::DateTime;
use jiff::fmt::temporal::{DateTimeParser, PiecesOffset};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z, the last instant RFC 3339
/// can write with a four-digit year.
const MAX_MILLIS: i64 = 253_402_300_799_999;
/// The Unix epoch as a civil date-time in UTC. Instants are converted through `jiff`'s civil
/// date-time rather than `jiff::Timestamp`, whose range ends a day short of year 9999's last
/// instant (it leaves room for offsets).
const EPOCH: DateTime = DateTime::constant(1970, 1, 1, 0, 0, 0, 0);
/// The RFC 3339 / Temporal parser (a `const` value: no allocation, no time zone database).
static PARSER: DateTimeParser = DateTimeParser::new();

/// An instant in UTC with millisecond precision, serialised as RFC 3339 (`2026-01-01T10:00:00Z`,
/// or `2026-01-01T10:00:00.250Z` when the milliseconds are not zero).
///
/// # Guarantees
/// - The value lies in `0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z`; arithmetic saturates
///   at both ends, so a formatted timestamp always parses back to the same value.
/// - Parsing (by `jiff`) accepts any RFC 3339 offset (`Z`, `+02:00`) and up to nine fractional
///   digits; digits beyond milliseconds are truncated. A leap second (`:60`) reads as `:59`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(i64);

impl Timestamp {
    /// The earliest representable instant, `0000-01-01T00:00:00Z`.
    pub const MIN: Self = Self(-62_167_219_200_000);
    /// The latest representable instant, `9999-12-31T23:59:59.999Z`.
    pub const MAX: Self = Self(MAX_MILLIS);

    /// An instant from milliseconds since the Unix epoch, clamped to [`Self::MIN`]..=[`Self::MAX`].
    pub const fn from_unix_millis(millis: i64) -> Self {
        if millis < Self::MIN.0 {
            Self::MIN
        } else if millis > MAX_MILLIS {
            Self::MAX
        } else {
            Self(millis)
        }
    }

    /// Milliseconds since the Unix epoch.
    pub const fn unix_millis(self) -> i64 {
        self.0
    }

    /// This instant moved forward by `duration`, saturating at [`Self::MAX`].
    #[must_use]
    pub fn saturating_add(self, duration: Duration) -> Self {
        let delta = i64::try_from(duration.as_millis()).unwrap_or(i64::MAX);
        Self::from_unix_millis(self.0.saturating_add(delta))
    }

    /// The span from `earlier` to `self`, or zero when `earlier` is later.
    pub fn duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }

    /// Parses an RFC 3339 date-time.
    pub fn parse_rfc3339(text: &str) -> Result<Self, TimeError> {
        parse_rfc3339(text).ok_or_else(|| TimeError(format!("invalid RFC 3339 timestamp `{text}`")))
    }

    /// The instant as a civil date-time in UTC (always in range: see [`EPOCH`]).
    fn civil(self) -> Option<DateTime> {
        EPOCH.checked_add(SignedDuration::from_millis(self.0)).ok()
    }
}

/// RFC 3339 text: `YYYY-MM-DDTHH:MM:SSZ`, with `.mmm` (always three digits) when the
/// milliseconds are not zero. Journals written by earlier versions use exactly this form.
impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole_second = self.0.rem_euclid(1000) == 0;
        // Fast path: `jiff::Timestamp` covers every instant but the last day of year 9999.
        if let Ok(ts) = jiff::Timestamp::from_millisecond(self.0) {
            return if whole_second {
                write!(f, "{ts}")
            } else {
                write!(f, "{ts:.3}")
            };
        }
        let civil = self.civil().ok_or(fmt::Error)?;
        if whole_second {
            write!(f, "{civil}Z")
        } else {
            write!(f, "{civil:.3}Z")
        }
    }
}

impl FromStr for Timestamp {
    type Err = TimeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse_rfc3339(s)
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse_rfc3339(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> Cow<'static, str> {
        "Timestamp".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string", "format": "date-time" })
    }
}

/// A non-negative span with millisecond precision, serialised in humantime form (`"10s"`,
/// `"1m 30s"`, `"250ms"`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

impl Duration {
    /// The empty span.
    pub const ZERO: Self = Self(0);

    /// A span of `millis` milliseconds.
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// A span of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// The span in milliseconds.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Whether the span is zero.
    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Parses humantime text such as `"15m"` or `"1h 30m"`; sub-millisecond parts are truncated.
    pub fn parse(text: &str) -> Result<Self, TimeError> {
        humantime::parse_duration(text.trim())
            .map(Self::from)
            .map_err(|e| TimeError(format!("invalid duration `{text}`: {e}")))
    }
}

impl From<std::time::Duration> for Duration {
    fn from(value: std::time::Duration) -> Self {
        Self(u64::try_from(value.as_millis()).unwrap_or(u64::MAX))
    }
}

impl From<Duration> for std::time::Duration {
    fn from(value: Duration) -> Self {
        Self::from_millis(value.0)
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            return f.write_str("0s");
        }
        fmt::Display::fmt(
            &humantime::format_duration(std::time::Duration::from_millis(self.0)),
            f,
        )
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <Cow<'de, str>>::deserialize(deserializer)?;
        Self::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({ "type": "string" })
    }
}

/// A timestamp or duration that failed to parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct TimeError(String);

/// An RFC 3339 date-time (parsed by `jiff`: a date, a time and an offset are required) as
/// milliseconds since the epoch, sub-millisecond digits truncated, clamped to the journal range.
fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    // Fast path: `jiff::Timestamp` covers every instant but the last day of year 9999.
    if let Ok(ts) = PARSER.parse_timestamp(text) {
        return Some(Timestamp::from_unix_millis(clamp_millis(
            ts.as_nanosecond().div_euclid(1_000_000),
        )));
    }
    let pieces = PARSER.parse_pieces(text).ok()?;
    let offset = match pieces.offset()? {
        PiecesOffset::Numeric(numeric) => i128::from(numeric.offset().seconds()),
        // `Z`, or `-00:00` (RFC 3339's "unknown local offset"): the instant is in UTC.
        _ => 0,
    };
    let civil = pieces.date().to_datetime(pieces.time()?);
    let millis = civil.duration_since(EPOCH).as_nanos().div_euclid(1_000_000) - offset * 1000;
    Some(Timestamp::from_unix_millis(clamp_millis(millis)))
}

fn clamp_millis(millis: i128) -> i64 {
    i64::try_from(millis).unwrap_or(if millis < 0 { i64::MIN } else { i64::MAX })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_rfc3339_and_parse_back() {
        for (millis, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_767_225_600_000, "2026-01-01T00:00:00Z"),
            (1_767_225_600_250, "2026-01-01T00:00:00.250Z"),
            (951_782_400_000, "2000-02-29T00:00:00Z"),
            (-1, "1969-12-31T23:59:59.999Z"),
            (MAX_MILLIS, "9999-12-31T23:59:59.999Z"),
        ] {
            let ts = Timestamp::from_unix_millis(millis);
            assert_eq!(ts.to_string(), text);
            assert_eq!(Timestamp::parse_rfc3339(text).unwrap(), ts);
        }
        assert_eq!(Timestamp::MIN.to_string(), "0000-01-01T00:00:00Z");
    }

    #[test]
    fn offsets_and_long_fractions_are_accepted() {
        let ts = Timestamp::parse_rfc3339("2026-01-01T02:00:00.123456+02:00").unwrap();
        assert_eq!(ts.to_string(), "2026-01-01T00:00:00.123Z");
        assert!(Timestamp::parse_rfc3339("2026-02-30T00:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("2026-01-01 00:00:00").is_err());
        assert!(Timestamp::parse_rfc3339("2026-01-01T24:00:00Z").is_err());
        assert!(Timestamp::parse_rfc3339("not a time").is_err());
        // RFC 3339 `-00:00`: the instant is in UTC, the local offset unknown.
        let unknown = Timestamp::parse_rfc3339("2026-01-01T00:00:00-00:00").unwrap();
        assert_eq!(unknown.to_string(), "2026-01-01T00:00:00Z");
        let leap = Timestamp::parse_rfc3339("2016-12-31T23:59:60Z").unwrap();
        assert_eq!(leap.to_string(), "2016-12-31T23:59:59Z");
        let before_epoch = Timestamp::parse_rfc3339("1969-12-31T23:59:59.9995Z").unwrap();
        assert_eq!(before_epoch.unix_millis(), -1);
    }

    #[test]
    fn arithmetic_saturates_within_the_representable_range() {
        let ts = Timestamp::MAX.saturating_add(Duration::from_secs(10));
        assert_eq!(ts, Timestamp::MAX);
        assert_eq!(Timestamp::from_unix_millis(i64::MIN), Timestamp::MIN);
        let a = Timestamp::from_unix_millis(1000);
        assert_eq!(
            a.saturating_add(Duration::from_millis(500))
                .duration_since(a)
                .as_millis(),
            500
        );
        assert_eq!(
            a.duration_since(a.saturating_add(Duration::from_secs(1))),
            Duration::ZERO
        );
    }

    #[test]
    fn durations_use_humantime_text() {
        assert_eq!(Duration::parse("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(Duration::parse("1m 30s").unwrap().to_string(), "1m 30s");
        assert_eq!(Duration::ZERO.to_string(), "0s");
        assert!(Duration::parse("ten seconds").is_err());
        let json = serde_json::to_string(&Duration::from_millis(250)).unwrap();
        assert_eq!(json, "\"250ms\"");
        assert_eq!(
            serde_json::from_str::<Duration>(&json).unwrap(),
            Duration::from_millis(250)
        );
    }
}
