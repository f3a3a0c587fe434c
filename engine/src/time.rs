//! Time values of the journal: [`Timestamp`] (an instant, RFC 3339 on the wire) and [`Duration`]
//! (a span, humantime on the wire).
//!
//! The engine never reads a clock: every instant is handed in by the caller. Both types are
//! millisecond-precision newtypes so that arithmetic is exact, comparisons are cheap and a
//! journal written and read back is bit-for-bit the same plan.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Milliseconds from 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999Z, the last instant RFC 3339
/// can write with a four-digit year.
const MAX_MILLIS: i64 = 253_402_300_799_999;
const MILLIS_PER_DAY: i64 = 86_400_000;

/// An instant in UTC with millisecond precision, serialised as RFC 3339 (`2026-01-01T10:00:00Z`,
/// or `2026-01-01T10:00:00.250Z` when the milliseconds are not zero).
///
/// # Guarantees
/// - The value lies in `0000-01-01T00:00:00Z ..= 9999-12-31T23:59:59.999Z`; arithmetic saturates
///   at both ends, so a formatted timestamp always parses back to the same value.
/// - Parsing accepts any RFC 3339 offset (`Z`, `+02:00`) and any number of fractional digits;
///   digits beyond milliseconds are truncated.
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
}

impl Timestamp {
    /// RFC 3339 text into a stack buffer (`YYYY-MM-DDTHH:MM:SS[.mmm]Z`), returning its length.
    /// Hand-rolled because journals hold thousands of timestamps and `write!` is slow.
    fn format_into(self, buf: &mut [u8; 24]) -> usize {
        let days = self.0.div_euclid(MILLIS_PER_DAY);
        let in_day = self.0.rem_euclid(MILLIS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        let (secs, millis) = (in_day / 1000, in_day % 1000);
        let fields: [(i64, usize, u8); 6] = [
            (year, 4, b'-'),
            (month, 2, b'-'),
            (day, 2, b'T'),
            (secs / 3600, 2, b':'),
            (secs / 60 % 60, 2, b':'),
            (secs % 60, 2, 0),
        ];
        let mut at = 0;
        for (value, width, separator) in fields {
            put_digits(&mut buf[at..at + width], value);
            at += width;
            if separator != 0 {
                buf[at] = separator;
                at += 1;
            }
        }
        if millis != 0 {
            buf[at] = b'.';
            put_digits(&mut buf[at + 1..at + 4], millis);
            at += 4;
        }
        buf[at] = b'Z';
        at + 1
    }
}

/// Writes `value` (0 ≤ value < 10^len) as exactly `out.len()` decimal digits.
fn put_digits(out: &mut [u8], mut value: i64) {
    for slot in out.iter_mut().rev() {
        *slot = b'0' + u8::try_from(value.rem_euclid(10)).unwrap_or(0);
        value /= 10;
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut buf = [0u8; 24];
        let len = self.format_into(&mut buf);
        // Only ASCII digits and separators were written.
        f.write_str(std::str::from_utf8(&buf[..len]).map_err(|_| fmt::Error)?)
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
        let mut buf = [0u8; 24];
        let len = self.format_into(&mut buf);
        let text = std::str::from_utf8(&buf[..len]).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(text)
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

/// Civil date from days since 1970-01-01 (H. Hinnant's `civil_from_days`, proleptic Gregorian).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a civil date (inverse of [`civil_from_days`]).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

fn digits(bytes: &[u8]) -> Option<i64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(bytes.iter().fold(0, |acc, b| acc * 10 + i64::from(b - b'0')))
}

fn parse_rfc3339(text: &str) -> Option<Timestamp> {
    let b = text.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let (year, month, day) = (digits(&b[0..4])?, digits(&b[5..7])?, digits(&b[8..10])?);
    let (hour, minute, second) = (digits(&b[11..13])?, digits(&b[14..16])?, digits(&b[17..19])?);
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    // A leap second (:60) is folded into the last millisecond-precision instant of its minute.
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut rest = &b[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let len = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let mut padded = [b'0'; 3];
        for (slot, digit) in padded.iter_mut().zip(&frac[..len]) {
            *slot = *digit;
        }
        millis = digits(&padded)?;
        rest = &frac[len..];
    }
    let offset_minutes = match rest {
        [b'Z' | b'z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let (h, m) = (digits(&[*h1, *h2])?, digits(&[*m1, *m2])?);
            if h > 23 || m > 59 {
                return None;
            }
            if *sign == b'-' { -(h * 60 + m) } else { h * 60 + m }
        }
        _ => return None,
    };
    let (second, millis) = if second == 60 { (59, 999) } else { (second, millis) };
    let days = days_from_civil(year, month, day);
    let total = days * MILLIS_PER_DAY + ((hour * 60 + minute - offset_minutes) * 60 + second) * 1000 + millis;
    Some(Timestamp::from_unix_millis(total))
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
