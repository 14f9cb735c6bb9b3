//! Durations written for people the way the config writes them: `7d`, `24h`, `10m`, `1h 30m`,
//! `1500ms`, never humantime's `7days` or `1day 30m`, and read the way the config reads them
//! ([`parse`]: the config and `history --since` share it). Every string this makes parses back
//! to the same duration. Imports nothing of the crate.

use std::fmt::Write;
use std::time::Duration;

const MINUTE: u64 = 60;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

/// `d` compactly: days (from two days on), hours, minutes, seconds and milliseconds, largest
/// first and zero parts left out (`7d`, `30d`, `2d 12h`, `24h`, `36h`, `1h 30m`, `45s`,
/// `250ms`). Under two days it counts hours, so a day prints `24h`, as configs usually write
/// it. What is finer than a millisecond is printed in `us`/`ns` so nothing is rounded away.
pub fn format(d: Duration) -> String {
    let secs = d.as_secs();
    let nanos = d.subsec_nanos();
    if secs == 0 && nanos == 0 {
        return "0s".to_owned();
    }
    let days = if secs >= 2 * DAY { secs / DAY } else { 0 };
    let parts = [
        (days, "d"),
        ((secs - days * DAY) / HOUR, "h"),
        (secs % HOUR / MINUTE, "m"),
        (secs % MINUTE, "s"),
        (u64::from(nanos / 1_000_000), "ms"),
        (u64::from(nanos / 1_000 % 1_000), "us"),
        (u64::from(nanos % 1_000), "ns"),
    ];
    let mut out = String::new();
    for (value, unit) in parts {
        if value == 0 {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(out, "{value}{unit}");
    }
    out
}

/// Parses `30s`, `10m`, `24h`, `7d`, `1h 30m` (humantime's syntax): what every duration in
/// the config and on the command line takes. The error says what was given and what would do.
pub fn parse(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!(
            "\"{text}\" is not a duration ({e}); write e.g. \"30s\", \"10m\", \"24h\" or \"30d\""
        )
    })
}

/// [`format`] to the millisecond: for waits the code computed (backoff, `Retry-After`), whose
/// nanoseconds say nothing to a reader.
pub fn format_millis(d: Duration) -> String {
    format(Duration::from_millis(
        u64::try_from(d.as_millis()).unwrap_or(u64::MAX),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_print_as_a_config_writes_them() {
        let cases = [
            (Duration::from_secs(7 * DAY), "7d"),
            (Duration::from_secs(30 * DAY), "30d"),
            (Duration::from_secs(2 * DAY), "2d"),
            (Duration::from_secs(DAY), "24h"),
            (Duration::from_secs(36 * HOUR), "36h"),
            (Duration::from_secs(DAY + 30 * MINUTE), "24h 30m"),
            (Duration::from_secs(2 * DAY + 1), "2d 1s"),
            (Duration::from_secs(60 * HOUR), "2d 12h"),
            (Duration::from_secs(47 * HOUR), "47h"),
            (Duration::from_secs(10 * MINUTE), "10m"),
            (Duration::from_secs(90 * MINUTE), "1h 30m"),
            (Duration::from_secs(3725), "1h 2m 5s"),
            (Duration::from_secs(30), "30s"),
            (Duration::from_millis(1500), "1s 500ms"),
            (Duration::from_millis(250), "250ms"),
            (Duration::from_nanos(1_000_001), "1ms 1ns"),
            (Duration::ZERO, "0s"),
        ];
        for (d, want) in cases {
            assert_eq!(format(d), want, "{d:?}");
        }
    }

    #[test]
    fn computed_waits_print_to_the_millisecond() {
        assert_eq!(format_millis(Duration::new(1, 234_567_891)), "1s 234ms");
        assert_eq!(format_millis(Duration::from_micros(999)), "0s");
    }

    #[test]
    fn what_is_printed_parses_back_to_the_same_duration() {
        for secs in [
            1,
            59,
            60,
            61,
            3599,
            3600,
            DAY - 1,
            DAY,
            DAY + 1,
            2 * DAY,
            365 * DAY,
        ] {
            for nanos in [0, 1, 999, 1_000, 999_999_999] {
                let d = Duration::new(secs, nanos);
                let shown = format(d);
                assert_eq!(parse(&shown).ok(), Some(d), "{shown}");
            }
        }
    }
}
