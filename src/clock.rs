//! Where time comes from. Every workflow asks a [`Clock`] instead of calling `Utc::now()`, so
//! tests can move an application's time forward (seven days for stale detection) without
//! sleeping and without touching the machine's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

/// A shared clock handle, cheap to clone into every task.
pub type SharedClock = Arc<dyn Clock>;

/// The machine's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// The machine's clock plus an offset that tests move forward. Time keeps flowing (timeouts and
/// intervals still work), it just reads as later than it is.
#[derive(Debug, Default)]
pub struct OffsetClock {
    offset_ms: AtomicI64,
}

impl OffsetClock {
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves this clock forward (or back, with a negative delta).
    pub fn advance(&self, by: TimeDelta) {
        self.offset_ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for OffsetClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::milliseconds(self.offset_ms.load(Ordering::SeqCst))
    }
}

/// Formats a time the way the store and the API do: RFC 3339, UTC, milliseconds, `Z`.
pub fn format_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_offset_clock_reads_later_after_it_is_advanced() {
        let clock = OffsetClock::new();
        let before = clock.now();
        clock.advance(TimeDelta::days(7));
        let after = clock.now();
        assert!(after - before >= TimeDelta::days(7));
        assert!(after - before < TimeDelta::days(7) + TimeDelta::seconds(5));
    }

    #[test]
    fn times_are_formatted_in_utc_with_milliseconds() {
        let t = DateTime::parse_from_rfc3339("2026-01-02T03:04:05.678+02:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(format_time(t), "2026-01-02T01:04:05.678Z");
    }
}
