//! `Schedule`: when a stage polls its registry (SPEC §3, "Registry watching") or a background
//! job runs. Schedules are parsed when they are set, so a stage or setting holding one can
//! always compute its next run; the scheduler loop, not this type, does the waiting.
//!
//! Accepted forms, as robfig/cron users know them:
//! - a cron expression of 5 fields (`minute hour day-of-month month day-of-week`) or 6 (a
//!   `second` field first), with croner's syntax (`*/5`, `1-5`, `MON-FRI`, `L`, `#`);
//! - `@every <duration>` with a [`HumanDuration`] of at least one second (`@every 30s`);
//! - the descriptors `@hourly`, `@daily` (= `@midnight`), `@weekly` (Sunday), `@monthly` and
//!   `@yearly` (= `@annually`), which stand for the usual cron expressions.
//!
//! Every schedule is evaluated in UTC, and `TZ=` prefixes are rejected rather than ignored so
//! that nobody believes a schedule runs in local time. A cron expression that can never fire
//! (`0 0 30 2 *`) is rejected too, as a typo that would otherwise silently stop polling.
//! croner is wrapped rather than exposed because it rejects `@every` and the `TZ=` prefix
//! with messages written for programmers, and accepts a 7th (year) field the SPEC does not
//! mention.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use chrono::{DateTime, Timelike, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use serde::{Deserialize, Serialize};

use crate::domain::ParseError;
use crate::domain::duration::HumanDuration;

/// The shortest `@every` interval: polling more often than once a second is a mistake.
const MIN_EVERY_MILLIS: u64 = 1_000;

const DESCRIPTORS_HINT: &str =
    "use @every <duration>, @hourly, @daily, @midnight, @weekly, @monthly, @yearly or @annually";

/// A parsed schedule; see the module documentation. Equal when the canonical strings are.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Schedule {
    /// The canonical string: `@every` with a canonical duration, a lowercase descriptor, or
    /// the cron fields separated by single spaces.
    source: String,
    rule: Rule,
}

#[derive(Clone, Debug)]
enum Rule {
    Every(HumanDuration),
    Cron(Box<Cron>),
}

impl Schedule {
    /// Parses a cron expression or descriptor. Surrounding whitespace is ignored.
    pub fn parse(input: &str) -> Result<Self, ParseError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(ParseError::new(format!(
                "schedule must not be empty; give a cron expression like */5 * * * * or \
                 a descriptor ({DESCRIPTORS_HINT})"
            )));
        }
        if s.starts_with('@') {
            return Self::parse_descriptor(s);
        }
        let upper = s.to_ascii_uppercase();
        if upper.starts_with("TZ=") || upper.starts_with("CRON_TZ=") {
            return Err(ParseError::new(
                "time zone prefixes (TZ=…) are not supported; schedules are evaluated in UTC",
            ));
        }
        if s.contains('@') {
            return Err(ParseError::new(format!(
                "'@' may only start a descriptor; {DESCRIPTORS_HINT}"
            )));
        }
        let fields: Vec<&str> = s.split_whitespace().collect();
        if !(5..=6).contains(&fields.len()) {
            return Err(ParseError::new(format!(
                "cron expression must have 5 fields (minute hour day-of-month month day-of-week) \
                 or 6 (with seconds first), not {}",
                fields.len()
            )));
        }
        let source = fields.join(" ");
        let cron = compile_cron(&source)?;
        Ok(Self {
            source,
            rule: Rule::Cron(Box::new(cron)),
        })
    }

    fn parse_descriptor(s: &str) -> Result<Self, ParseError> {
        // `@every` is ASCII, so a prefix match on the lower-cased string gives the byte
        // offset of the duration in the original, whose case is kept for the duration parser.
        let lower = s.to_ascii_lowercase();
        if lower.starts_with("@every") {
            let rest = &s["@every".len()..];
            if rest.trim().is_empty() {
                return Err(ParseError::new(
                    "@every needs a duration, like @every 30s or @every 5m",
                ));
            }
            if !rest.starts_with(char::is_whitespace) {
                return Err(ParseError::new(
                    "write a space between @every and the duration, like @every 5m",
                ));
            }
            let interval = HumanDuration::parse(rest)
                .map_err(|e| ParseError::new(format!("invalid @every duration: {e}")))?;
            if interval.as_millis() < MIN_EVERY_MILLIS {
                return Err(ParseError::new("@every must be at least 1s"));
            }
            return Ok(Self::every(interval));
        }
        let (canonical, expression) = match lower.as_str() {
            "@hourly" => ("@hourly", "0 * * * *"),
            "@daily" => ("@daily", "0 0 * * *"),
            "@midnight" => ("@midnight", "0 0 * * *"),
            "@weekly" => ("@weekly", "0 0 * * 0"),
            "@monthly" => ("@monthly", "0 0 1 * *"),
            "@yearly" => ("@yearly", "0 0 1 1 *"),
            "@annually" => ("@annually", "0 0 1 1 *"),
            _ => {
                return Err(ParseError::new(format!(
                    "unknown schedule descriptor \"{s}\"; {DESCRIPTORS_HINT}"
                )));
            }
        };
        let cron = compile_cron(expression)?;
        Ok(Self {
            source: canonical.to_owned(),
            rule: Rule::Cron(Box::new(cron)),
        })
    }

    /// A schedule running every `interval`, for jobs configured in code. Intervals under a
    /// second are raised to one second, the shortest that [`Self::parse`] accepts, so the
    /// canonical string always parses back.
    pub fn every(interval: HumanDuration) -> Self {
        let interval = interval.max(HumanDuration::from_millis(MIN_EVERY_MILLIS));
        Self {
            source: format!("@every {interval}"),
            rule: Rule::Every(interval),
        }
    }

    /// The interval of an `@every` schedule; `None` for cron expressions and descriptors.
    pub fn interval(&self) -> Option<HumanDuration> {
        match &self.rule {
            Rule::Every(interval) => Some(*interval),
            Rule::Cron(_) => None,
        }
    }

    /// The first time strictly after `after` the schedule fires, in UTC: `after + interval` for
    /// `@every`, else the next matching whole second. `None` only when that lies beyond what
    /// the date types can represent.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match &self.rule {
            Rule::Every(interval) => after.checked_add_signed(interval.as_chrono()),
            Rule::Cron(cron) => {
                // croner searches from a whole second; from the start of `after`'s second,
                // "strictly after" gives the next matching second, which is after `after`.
                let whole_second = after.with_nanosecond(0)?;
                cron.find_next_occurrence(&whole_second, false).ok()
            }
        }
    }
}

/// Compiles a 5- or 6-field cron expression with croner, and proves that it fires at all.
fn compile_cron(expression: &str) -> Result<Cron, ParseError> {
    // croner skips empty list items, so `,` would be a field matching nothing, and searching
    // for a time that never comes walks tens of millions of seconds: refuse it up front.
    if let Some(field) = expression
        .split(' ')
        .find(|field| field.split(',').any(str::is_empty))
    {
        return Err(ParseError::new(format!(
            "invalid cron expression \"{expression}\": the field \"{field}\" has an empty item \
             in its list"
        )));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build();
    let cron = parser
        .parse(expression)
        .map_err(|e| ParseError::new(format!("invalid cron expression \"{expression}\": {e}")))?;
    // The same guard for anything else that leaves a time field empty: the search below is
    // only cheap when the impossibility lies in the day fields.
    let pattern = &cron.pattern;
    let time_fields = [
        ("second", &pattern.seconds),
        ("minute", &pattern.minutes),
        ("hour", &pattern.hours),
        ("month", &pattern.months),
    ];
    if let Some((name, _)) = time_fields
        .iter()
        .find(|(_, component)| component.values().is_empty())
    {
        return Err(ParseError::new(format!(
            "cron expression \"{expression}\" never fires: its {name} field matches nothing"
        )));
    }
    // Any fixed start works: an expression that fires at all fires within a few years of it.
    let fires = DateTime::<Utc>::from_timestamp(946_684_800, 0) // 2000-01-01T00:00:00Z
        .is_some_and(|start| cron.find_next_occurrence(&start, false).is_ok());
    if !fires {
        return Err(ParseError::new(format!(
            "cron expression \"{expression}\" never fires (is the day of the month valid for \
             the month?)"
        )));
    }
    Ok(cron)
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Schedule {}

impl Hash for Schedule {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl FromStr for Schedule {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for Schedule {
    type Error = ParseError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Schedule> for String {
    fn from(schedule: Schedule) -> Self {
        schedule.source
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn schedule(input: &str) -> Schedule {
        match Schedule::parse(input) {
            Ok(s) => s,
            Err(e) => panic!("{input:?} should parse: {e}"),
        }
    }

    fn error_of(input: &str) -> String {
        match Schedule::parse(input) {
            Ok(s) => panic!("{input:?} should be rejected, got {s}"),
            Err(e) => e.to_string(),
        }
    }

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        match Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single() {
            Some(t) => t,
            None => panic!("invalid test time"),
        }
    }

    fn next(input: &str, after: DateTime<Utc>) -> DateTime<Utc> {
        match schedule(input).next_after(after) {
            Some(t) => t,
            None => panic!("{input:?} should fire after {after}"),
        }
    }

    #[test]
    fn a_five_field_cron_fires_at_the_next_matching_minute() {
        assert_eq!(
            next("*/5 * * * *", at(2024, 5, 1, 10, 2, 30)),
            at(2024, 5, 1, 10, 5, 0)
        );
    }

    #[test]
    fn next_after_is_strictly_after_even_on_a_matching_instant() {
        assert_eq!(
            next("*/5 * * * *", at(2024, 5, 1, 10, 5, 0)),
            at(2024, 5, 1, 10, 10, 0)
        );
        let just_after = at(2024, 5, 1, 10, 5, 0) + chrono::TimeDelta::microseconds(1);
        assert_eq!(next("*/5 * * * *", just_after), at(2024, 5, 1, 10, 10, 0));
        let just_before = at(2024, 5, 1, 10, 5, 0) - chrono::TimeDelta::milliseconds(1);
        assert_eq!(next("*/5 * * * *", just_before), at(2024, 5, 1, 10, 5, 0));
    }

    #[test]
    fn a_six_field_cron_has_a_seconds_field_first() {
        assert_eq!(
            next("*/10 * * * * *", at(2024, 5, 1, 10, 0, 5)),
            at(2024, 5, 1, 10, 0, 10)
        );
        assert_eq!(
            next("30 0 12 * * *", at(2024, 5, 1, 10, 0, 0)),
            at(2024, 5, 1, 12, 0, 30)
        );
    }

    #[test]
    fn every_adds_its_interval() {
        let start = at(2024, 5, 1, 10, 0, 0) + chrono::TimeDelta::milliseconds(250);
        assert_eq!(next("@every 30s", start), start + chrono::TimeDelta::seconds(30));
        assert_eq!(
            next("@every 1h30m", start),
            start + chrono::TimeDelta::minutes(90)
        );
    }

    #[test]
    fn daily_and_midnight_fire_at_the_next_utc_midnight() {
        assert_eq!(next("@daily", at(2024, 5, 1, 10, 2, 30)), at(2024, 5, 2, 0, 0, 0));
        assert_eq!(
            next("@midnight", at(2024, 12, 31, 23, 59, 59)),
            at(2025, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn the_other_descriptors_map_to_their_cron_expressions() {
        let t = at(2024, 5, 1, 10, 2, 30); // a Wednesday
        assert_eq!(next("@hourly", t), at(2024, 5, 1, 11, 0, 0));
        assert_eq!(next("@weekly", t), at(2024, 5, 5, 0, 0, 0));
        assert_eq!(next("@monthly", t), at(2024, 6, 1, 0, 0, 0));
        assert_eq!(next("@yearly", t), at(2025, 1, 1, 0, 0, 0));
        assert_eq!(next("@annually", t), at(2025, 1, 1, 0, 0, 0));
    }

    #[test]
    fn named_days_and_months_are_understood() {
        let wednesday = at(2024, 5, 1, 10, 0, 0);
        assert_eq!(next("0 9 * * MON-FRI", wednesday), at(2024, 5, 2, 9, 0, 0));
        assert_eq!(next("0 0 1 JAN *", wednesday), at(2025, 1, 1, 0, 0, 0));
    }

    #[test]
    fn a_february_29_schedule_waits_for_a_leap_year() {
        assert_eq!(
            next("0 0 29 2 *", at(2025, 3, 1, 0, 0, 0)),
            at(2028, 2, 29, 0, 0, 0)
        );
    }

    #[test]
    fn display_is_the_canonical_string_and_parses_back() {
        assert_eq!(schedule("  */5   *  * * * ").to_string(), "*/5 * * * *");
        assert_eq!(schedule("@every 300s").to_string(), "@every 5m");
        assert_eq!(schedule("@every   1h").to_string(), "@every 1h");
        assert_eq!(schedule("@DAILY").to_string(), "@daily");
        for input in [
            "*/5 * * * *",
            "0 */10 * * * *",
            "@every 90s",
            "@midnight",
            "0 9 * * MON",
        ] {
            let s = schedule(input);
            assert_eq!(Schedule::parse(&s.to_string()), Ok(s));
        }
    }

    #[test]
    fn schedules_compare_by_their_canonical_string() {
        assert_eq!(schedule("@every 60s"), schedule("@every 1m"));
        assert_eq!(
            schedule("@every 5m"),
            Schedule::every(HumanDuration::from_secs(300))
        );
        assert_ne!(schedule("@daily"), schedule("@midnight"));
    }

    #[test]
    fn every_constructor_keeps_at_least_one_second() {
        let fast = Schedule::every(HumanDuration::from_millis(10));
        assert_eq!(fast.to_string(), "@every 1s");
        assert_eq!(fast.interval(), Some(HumanDuration::from_secs(1)));
        assert_eq!(schedule("@hourly").interval(), None);
    }

    #[test]
    fn wrong_field_counts_are_rejected() {
        assert!(error_of("* * *").contains("5 fields"));
        assert!(error_of("* * *").contains("not 3"));
        assert!(error_of("0 0 0 1 1 * 2030").contains("not 7"));
    }

    #[test]
    fn out_of_range_and_malformed_fields_are_rejected() {
        for bad in [
            "61 * * * *",
            "* 24 * * *",
            "* * 32 * *",
            "* * * 13 *",
            "*/0 * * * *",
            "a b c d e",
            "60 * * * * *",
        ] {
            let message = error_of(bad);
            assert!(message.starts_with("invalid cron expression"), "{bad}: {message}");
        }
    }

    #[test]
    fn empty_list_items_are_rejected_quickly() {
        for bad in [", * * * *", "* 1,,2 * * *", "0 0 ,1 * *", "* * * * * 5,"] {
            assert!(error_of(bad).contains("empty item"), "{bad}");
        }
    }

    #[test]
    fn a_cron_expression_that_never_fires_is_rejected() {
        assert!(error_of("0 0 30 2 *").contains("never fires"));
        assert!(error_of("0 0 31 4 *").contains("never fires"));
    }

    #[test]
    fn bad_every_durations_are_rejected() {
        assert!(error_of("@every 0s").contains("greater than zero"));
        assert_eq!(error_of("@every 500ms"), "@every must be at least 1s");
        assert!(error_of("@every").contains("needs a duration"));
        assert!(error_of("@every   ").contains("needs a duration"));
        assert!(error_of("@every5m").contains("space"));
        assert!(error_of("@every 5").contains("needs a unit"));
        assert!(error_of("@every -5m").contains("negative"));
    }

    #[test]
    fn unknown_descriptors_and_time_zones_are_rejected() {
        assert!(error_of("@sometimes").contains("unknown schedule descriptor \"@sometimes\""));
        assert!(error_of("@reboot").contains("@every <duration>"));
        assert!(error_of("TZ=Europe/Paris 0 9 * * *").contains("UTC"));
        assert!(error_of("CRON_TZ=UTC 0 9 * * *").contains("UTC"));
        assert!(error_of("0 @daily").contains("'@'"));
        assert!(error_of("").contains("must not be empty"));
    }

    #[test]
    fn odd_cron_fields_never_panic() {
        let odd = [
            "*",
            "*/0",
            "0-",
            "-1",
            "1-0",
            "59-0",
            "L",
            "W",
            "LW",
            "#",
            "5#6",
            "1#0",
            "7L",
            "?",
            ",",
            "1,,2",
            "99999999999999999999",
            "/5",
            "0/5",
            "JAN-DEC",
            "MON-SUN",
            "15W",
            "*/99",
            "1-5/2",
            "+1",
            "é",
            "0x1",
        ];
        let after = at(2024, 5, 1, 10, 0, 0);
        for field in odd {
            for position in 0..6 {
                let mut fields = ["*"; 6];
                fields[position] = field;
                for expression in [fields.join(" "), fields[1..].join(" ")] {
                    if let Ok(s) = Schedule::parse(&expression) {
                        assert!(
                            s.next_after(after).is_some(),
                            "{expression} parsed but never fires"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn next_after_at_the_end_of_time_is_none_rather_than_a_panic() {
        assert_eq!(schedule("@every 1d").next_after(DateTime::<Utc>::MAX_UTC), None);
        assert_eq!(schedule("* * * * *").next_after(DateTime::<Utc>::MAX_UTC), None);
    }

    #[test]
    fn serde_uses_the_canonical_string() {
        let s = schedule("@every 300s");
        assert_eq!(serde_json::to_string(&s).expect("serializes"), "\"@every 5m\"");
        let back: Schedule = serde_json::from_str("\"@every 5m\"").expect("deserializes");
        assert_eq!(back, s);
        let err = serde_json::from_str::<Schedule>("\"@sometimes\"").expect_err("unknown");
        assert!(err.to_string().contains("unknown schedule descriptor"));
    }
}
