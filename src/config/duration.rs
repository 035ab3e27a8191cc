//! Durations as Prometheus writes them: `500ms`, `30s`, `5m`, `1h30m`, `1d`, `1w`, `1y`.

use std::time::Duration;

/// Parses a Prometheus duration. Units must be in decreasing order and each used once,
/// as in Prometheus (`1h30m` is valid, `30m1h` is not); `0` alone is accepted.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let expected = "expected a duration such as 30s, 5m, 1h30m or 1d";
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    if s.is_empty() {
        return Err(format!("empty string is not a duration ({expected})"));
    }
    // Units from largest to smallest; the index enforces the order.
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 86_400_000),
        ("w", 7 * 86_400_000),
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ];
    let bytes = s.as_bytes();
    let mut i = 0;
    let mut total_ms: u64 = 0;
    let mut last_unit: Option<usize> = None;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            i += 1;
        }
        if start == i {
            return Err(format!("{s:?} is not a duration ({expected})"));
        }
        let number: u64 = s[start..i]
            .parse()
            .map_err(|_| format!("{s:?} is not a duration: number too large"))?;
        let unit_start = i;
        while i < bytes.len() && bytes[i].is_ascii_alphabetic() {
            i += 1;
        }
        let unit = &s[unit_start..i];
        let Some(idx) = UNITS.iter().position(|(u, _)| *u == unit) else {
            return Err(format!("{s:?} is not a duration ({expected})"));
        };
        if last_unit.is_some_and(|l| idx <= l) {
            return Err(format!(
                "{s:?} is not a duration: units must go from largest to smallest, once each"
            ));
        }
        last_unit = Some(idx);
        total_ms = number
            .checked_mul(UNITS[idx].1)
            .and_then(|ms| total_ms.checked_add(ms))
            .ok_or_else(|| format!("{s:?} is not a duration: too large"))?;
    }
    Ok(Duration::from_millis(total_ms))
}

/// Formats a duration the way Prometheus would (`1h30m`, `15s`, `250ms`).
pub fn format_duration(d: Duration) -> String {
    let mut ms = d.as_millis() as u64;
    if ms == 0 {
        return "0s".into();
    }
    let mut out = String::new();
    for (unit, size) in [
        ("d", 86_400_000u64),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
        ("ms", 1),
    ] {
        if ms >= size {
            out.push_str(&format!("{}{unit}", ms / size));
            ms %= size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prometheus_durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("1d").unwrap(), Duration::from_secs(86_400));
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(
            parse_duration("1m500ms").unwrap(),
            Duration::from_millis(60_500)
        );
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
    }

    #[test]
    fn rejects_what_prometheus_rejects() {
        for bad in [
            "", "30", "30x", "s", "1.5h", "30m1h", "1h1h", "-5s", " 5s", "5 s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} should be rejected");
        }
        assert!(parse_duration("99999999999999999999s").is_err());
    }

    #[test]
    fn formats_round_trip() {
        for s in ["15s", "1h30m", "250ms", "1d", "5m"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
