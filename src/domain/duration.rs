//! `HumanDuration`: a positive span of time written the way people write it in settings and
//! schedules (`30s`, `10m`, `6h`, `1d`, `1h30m`, `500ms`), used by `@every` schedules,
//! `min_release_age`, `stale_scan_interval` and the like.
//!
//! The grammar is one or more `<whole number><unit>` parts with no spaces between them; units
//! are `d`, `h`, `m`, `s` and `ms`, each used at most once, from the largest to the smallest.
//! A duration is never zero or negative: every use of one is a wait or an age, and a zero wait
//! is a busy loop. The precision is a millisecond, and the longest duration is `i64::MAX`
//! milliseconds (about 292 million years), so that it always converts to a [`chrono::TimeDelta`]
//! and arithmetic on user input cannot overflow. [`fmt::Display`] writes the canonical form,
//! the shortest spelling with the largest units (`5400s` → `1h30m`), which parses back to the
//! same value.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::ParseError;

/// The longest duration in milliseconds: what a `chrono::TimeDelta` can hold.
const MAX_MILLIS: u64 = i64::MAX as u64;

/// Units from the largest to the smallest, with their length in milliseconds. The order is
/// the order the parts of a duration must be written in.
const UNITS: [(&str, u64); 5] = [
    ("d", 86_400_000),
    ("h", 3_600_000),
    ("m", 60_000),
    ("s", 1_000),
    ("ms", 1),
];

const UNIT_LIST: &str = "ms, s, m, h or d";

/// A positive duration with millisecond precision; see the module documentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HumanDuration {
    millis: u64,
}

impl HumanDuration {
    /// Parses a duration such as `30s`, `1h30m` or `500ms`. Surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseError::new(
                "duration must not be empty; write a number and a unit, like 30s, 10m or 1h30m",
            ));
        }
        if s.starts_with('-') {
            return Err(ParseError::new("duration must not be negative"));
        }
        let bytes = s.as_bytes();
        let mut i = 0;
        let mut total: u64 = 0;
        let mut previous_unit: Option<usize> = None;
        while i < bytes.len() {
            let number_start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if number_start == i {
                return Err(unexpected_character(s, i));
            }
            let number: u64 = s[number_start..i].parse().map_err(|_| too_long())?;
            if i < bytes.len() && (bytes[i] == b'.' || bytes[i] == b',') {
                return Err(ParseError::new(
                    "duration must use whole numbers, like 1h30m instead of 1.5h",
                ));
            }
            let unit_start = i;
            while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit = &s[unit_start..i];
            if unit.is_empty() {
                if i == bytes.len() {
                    return Err(ParseError::new(format!(
                        "duration \"{s}\" needs a unit ({UNIT_LIST}), like {number}s"
                    )));
                }
                return Err(unexpected_character(s, i));
            }
            let Some(rank) = UNITS.iter().position(|(name, _)| *name == unit) else {
                return Err(ParseError::new(format!(
                    "unknown duration unit \"{unit}\"; use {UNIT_LIST}"
                )));
            };
            if previous_unit.is_some_and(|previous| rank <= previous) {
                return Err(ParseError::new(
                    "duration parts must go from the largest unit to the smallest, each unit \
                     once, like 1h30m",
                ));
            }
            previous_unit = Some(rank);
            total = number
                .checked_mul(UNITS[rank].1)
                .and_then(|millis| total.checked_add(millis))
                .ok_or_else(too_long)?;
        }
        Self::from_parsed_millis(total)
    }

    /// A duration of `millis` milliseconds, for values computed by code (user input goes
    /// through [`Self::parse`]): saturating, so 0 becomes the shortest duration (1ms) and
    /// anything beyond the longest becomes the longest. Never fails, never panics.
    pub fn from_millis(millis: u64) -> Self {
        Self {
            millis: millis.clamp(1, MAX_MILLIS),
        }
    }

    /// A duration of `secs` seconds; saturating like [`Self::from_millis`].
    pub fn from_secs(secs: u64) -> Self {
        Self::from_millis(secs.saturating_mul(1_000))
    }

    /// Converts a standard duration, rounding down to whole milliseconds (computed intervals
    /// such as a seventh of a threshold need not be whole); saturating like
    /// [`Self::from_millis`].
    pub fn from_std(duration: Duration) -> Self {
        Self::from_millis(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
    }

    /// Checks the total of a parsed duration: zero and too-long durations are errors here,
    /// where the constructors saturate.
    fn from_parsed_millis(millis: u64) -> Result<Self, ParseError> {
        if millis == 0 {
            return Err(ParseError::new("duration must be greater than zero"));
        }
        if millis > MAX_MILLIS {
            return Err(too_long());
        }
        Ok(Self { millis })
    }

    pub fn as_std(&self) -> Duration {
        Duration::from_millis(self.millis)
    }

    pub fn as_chrono(&self) -> chrono::TimeDelta {
        // Never fails: `millis` is at most `i64::MAX`, which `TimeDelta` holds.
        i64::try_from(self.millis)
            .ok()
            .and_then(chrono::TimeDelta::try_milliseconds)
            .unwrap_or(chrono::TimeDelta::MAX)
    }

    pub fn as_millis(&self) -> u64 {
        self.millis
    }
}

fn too_long() -> ParseError {
    ParseError::new("duration is too long")
}

/// The error for a character that cannot start a number or a unit at byte `at` of `s`,
/// which is always a character boundary because only ASCII was consumed before it.
fn unexpected_character(s: &str, at: usize) -> ParseError {
    match s.get(at..).and_then(|rest| rest.chars().next()) {
        Some(c) if c.is_whitespace() => {
            ParseError::new("duration must not contain spaces; write the parts together, like 1h30m")
        }
        Some(c) => ParseError::new(format!(
            "unexpected {c:?} in duration \"{s}\"; write a number and a unit, like 30s, 10m or 1h30m"
        )),
        None => ParseError::new(format!("duration \"{s}\" is incomplete")),
    }
}

impl FromStr for HumanDuration {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for HumanDuration {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<HumanDuration> for String {
    fn from(duration: HumanDuration) -> Self {
        duration.to_string()
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.millis;
        for (unit, length) in UNITS {
            let count = rest / length;
            rest %= length;
            if count > 0 {
                write!(f, "{count}{unit}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis_of(input: &str) -> u64 {
        match HumanDuration::parse(input) {
            Ok(d) => d.as_millis(),
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn error_of(input: &str) -> String {
        match HumanDuration::parse(input) {
            Ok(d) => panic!("{input:?} should be rejected, got {d}"),
            Err(e) => e.to_string(),
        }
    }

    fn canonical(input: &str) -> String {
        match HumanDuration::parse(input) {
            Ok(d) => d.to_string(),
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    #[test]
    fn single_unit_durations_parse() {
        assert_eq!(millis_of("500ms"), 500);
        assert_eq!(millis_of("30s"), 30_000);
        assert_eq!(millis_of("90s"), 90_000);
        assert_eq!(millis_of("10m"), 600_000);
        assert_eq!(millis_of("6h"), 21_600_000);
        assert_eq!(millis_of("1d"), 86_400_000);
    }

    #[test]
    fn compound_durations_add_their_parts() {
        assert_eq!(millis_of("1h30m"), 5_400_000);
        assert_eq!(millis_of("1d2h3m4s5ms"), 93_784_005);
        assert_eq!(millis_of("0h5m"), 300_000);
    }

    #[test]
    fn surrounding_whitespace_is_ignored_but_inner_spaces_are_not() {
        assert_eq!(millis_of(" 5m\n"), 300_000);
        assert!(error_of("1h 30m").contains("spaces"));
    }

    #[test]
    fn display_is_the_canonical_form_with_the_largest_units() {
        assert_eq!(canonical("5400s"), "1h30m");
        assert_eq!(canonical("90s"), "1m30s");
        assert_eq!(canonical("1500ms"), "1s500ms");
        assert_eq!(canonical("24h"), "1d");
        assert_eq!(canonical("500ms"), "500ms");
        assert_eq!(canonical("0d0h10m"), "10m");
    }

    #[test]
    fn the_canonical_form_parses_back_to_the_same_duration() {
        for input in ["5400s", "1d1ms", "36h", "123456789ms", "59s999ms"] {
            let d = HumanDuration::parse(input).expect("valid");
            assert_eq!(HumanDuration::parse(&d.to_string()), Ok(d));
        }
    }

    #[test]
    fn zero_is_rejected() {
        assert_eq!(error_of("0s"), "duration must be greater than zero");
        assert_eq!(error_of("0h0m"), "duration must be greater than zero");
    }

    #[test]
    fn negative_and_fractional_numbers_are_rejected() {
        assert_eq!(error_of("-5s"), "duration must not be negative");
        assert!(error_of("1.5h").contains("whole numbers"));
        assert!(error_of("+5s").contains("unexpected '+'"));
    }

    #[test]
    fn a_number_without_a_unit_is_rejected_with_a_suggestion() {
        assert_eq!(
            error_of("30"),
            "duration \"30\" needs a unit (ms, s, m, h or d), like 30s"
        );
    }

    #[test]
    fn unknown_units_are_named() {
        assert!(error_of("2w").contains("unknown duration unit \"w\""));
        assert!(error_of("10M").contains("\"M\""));
        assert!(error_of("5sec").contains("\"sec\""));
        assert!(error_of("5µs").contains("'µ'"));
    }

    #[test]
    fn parts_out_of_order_or_repeated_are_rejected() {
        assert!(error_of("30m1h").contains("largest unit to the smallest"));
        assert!(error_of("1h1h").contains("largest unit to the smallest"));
        assert!(error_of("1s1s").contains("largest unit to the smallest"));
    }

    #[test]
    fn empty_and_garbage_input_is_rejected() {
        assert!(error_of("").contains("must not be empty"));
        assert!(error_of("h").contains("unexpected 'h'"));
        assert!(error_of("abc").contains("unexpected 'a'"));
    }

    #[test]
    fn huge_values_are_rejected_instead_of_overflowing() {
        assert_eq!(error_of("99999999999999999999999s"), "duration is too long");
        assert_eq!(error_of("18446744073709551615d"), "duration is too long");
        assert_eq!(error_of("9223372036854775s808ms"), "duration is too long");
        let max = HumanDuration::parse("9223372036854775807ms").expect("the longest duration");
        assert_eq!(max.as_chrono(), chrono::TimeDelta::MAX);
    }

    #[test]
    fn conversions_to_std_and_chrono_agree() {
        let d = HumanDuration::parse("1h30m").expect("valid");
        assert_eq!(d.as_std(), Duration::from_secs(5400));
        assert_eq!(d.as_chrono(), chrono::TimeDelta::seconds(5400));
    }

    #[test]
    fn from_std_rounds_down_to_milliseconds() {
        let d = HumanDuration::from_std(Duration::from_micros(1_500_700));
        assert_eq!(d.to_string(), "1s500ms");
    }

    #[test]
    fn the_code_side_constructors_saturate_instead_of_failing() {
        assert_eq!(HumanDuration::from_std(Duration::from_micros(999)).as_millis(), 1);
        assert_eq!(HumanDuration::from_std(Duration::ZERO).as_millis(), 1);
        assert_eq!(HumanDuration::from_secs(0).as_millis(), 1);
        assert_eq!(HumanDuration::from_millis(0).as_millis(), 1);
        assert_eq!(HumanDuration::from_std(Duration::MAX).as_millis(), MAX_MILLIS);
        assert_eq!(HumanDuration::from_secs(u64::MAX).as_millis(), MAX_MILLIS);
        assert_eq!(
            HumanDuration::from_secs(u64::MAX).as_chrono(),
            chrono::TimeDelta::MAX
        );
    }

    #[test]
    fn from_secs_builds_whole_second_durations() {
        assert_eq!(HumanDuration::from_secs(5400).to_string(), "1h30m");
        assert_eq!(
            HumanDuration::from_secs(300),
            HumanDuration::parse("5m").expect("valid")
        );
    }

    #[test]
    fn durations_order_by_length() {
        let short = HumanDuration::parse("59m").expect("valid");
        let long = HumanDuration::parse("1h").expect("valid");
        assert!(short < long);
        assert_eq!(short.max(long), long);
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let d = HumanDuration::parse("90m").expect("valid");
        assert_eq!(serde_json::to_string(&d).expect("serializes"), "\"1h30m\"");
        let back: HumanDuration = serde_json::from_str("\"5400s\"").expect("deserializes");
        assert_eq!(back, d);
        let err = serde_json::from_str::<HumanDuration>("\"0s\"").expect_err("zero");
        assert!(err.to_string().contains("greater than zero"));
    }
}
