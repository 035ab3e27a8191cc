//! The one wall clock of the crate: "now" as the Unix epoch sees it.
//!
//! Time enters the pipeline here and only here: the cycle takes `now` from
//! [`now_ms`] once per tick and passes it down, so the store, the detectors and the
//! regression judge are pure functions of their input and tests give them any time they
//! like. `clippy.toml` bans `SystemTime::now` and `chrono::Utc::now` everywhere else.
//! Durations (how long a query took) use the monotonic `Instant`, which is not a clock
//! of the data and stays allowed.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch (0 if the system clock is before 1970).
#[allow(clippy::disallowed_methods)]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Seconds since the Unix epoch, with the fraction (for `*_timestamp_seconds` gauges).
#[allow(clippy::disallowed_methods)]
pub fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// A time in milliseconds as RFC 3339 UTC to the second (the milliseconds as digits
/// when out of chrono's range): the one time format of kpiwatch's reports.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        assert_eq!(rfc3339(1_796_119_200_500), "2026-12-01T10:00:00Z");
    }

    #[test]
    fn both_units_read_the_same_clock() {
        let ms = now_ms();
        let s = now_secs();
        assert!(ms > 1_600_000_000_000, "clock before 2020: {ms}");
        assert!((s * 1000.0 - ms as f64).abs() < 5_000.0, "{s} s vs {ms} ms");
    }
}
