//! When each policy's rotations come due: cron expressions with crontab semantics in an IANA
//! time zone, or a fixed interval (`every`).
//!
//! [`Schedule`] is what the rest of the crate uses: the next due time after an instant, the next
//! few (for `check`), and the shortest gap between two (so that a grace period as long as the
//! time to the next rotation is refused). A cron schedule is read in two steps:
//!
//! - `crontab`: the expression, parsed field by field with crontab's meaning (5 or 6 fields,
//!   day of week 0-7 with 0 and 7 = Sunday, day of month OR day of week) and messages that say
//!   exactly what is wrong, then handed to the `cron` crate (0.17) as explicit lists in its own
//!   numbering, which it iterates as wall-clock times.
//! - `dst`: how those wall-clock times become instants in the zone across daylight-saving
//!   transitions: one run per matching time for time-of-day schedules, every matching instant
//!   for hourly-or-finer ones.
//!
//! What can be wrong ([`ScheduleError`], naming the [`CronField`] at fault) is in `error`.
//!
//! `every` schedules are plain intervals: the next due time is the last run plus the interval;
//! the caller anchors them.
//!
//! The crate only knows the years 1970-2100: a cron schedule has no due times after 2100.

mod crontab;
mod dst;
mod error;

use std::time::Duration;

use chrono::{DateTime, Datelike, TimeDelta, Utc};
use chrono_tz::Tz;

pub use crontab::CronRule;
pub use error::{CronField, ScheduleError};

use dst::ONE_SECOND;

/// When a policy's rotations come due.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression (crontab semantics), read in `timezone`.
    Cron {
        /// The expression as written, with runs of whitespace made single spaces.
        expression: String,
        /// The zone whose wall clock the expression describes.
        timezone: Tz,
        /// The parsed expression; only [`Schedule::cron`] can make one.
        rule: CronRule,
    },
    /// A fixed interval after the last run; [`Schedule::every`] refuses intervals under 1s.
    Every(Duration),
}

/// How far ahead `min_gap` looks.
const MIN_GAP_HORIZON: TimeDelta = TimeDelta::days(731);
/// At most this many due times in `min_gap`'s straight scan; DST transitions within the horizon
/// are scanned separately, so a frequent schedule is still checked where DST bends its gaps.
const MIN_GAP_SCAN_LIMIT: usize = 5_000;
/// At most this many due times around each DST transition in `min_gap`.
const MIN_GAP_WINDOW_LIMIT: usize = 500;

impl Schedule {
    /// Parses a cron expression with crontab semantics: 5 fields (min hour dom month dow) or 6
    /// (sec min hour dom month dow). Day-of-week numbers are crontab's in both forms (0 and 7 =
    /// Sunday, 1 = Monday); names (`MON`, `mon-fri`, `JAN`) work in the day-of-week and month
    /// fields; `@daily`-style shorthands work too.
    pub fn cron(expr: &str, tz: Tz) -> Result<Schedule, ScheduleError> {
        let expression = expr.split_whitespace().collect::<Vec<_>>().join(" ");
        let rule = CronRule::parse(&expression)?;
        Ok(Schedule::Cron {
            expression,
            timezone: tz,
            rule,
        })
    }

    /// A fixed interval. Refuses zero and anything under 1s: due times are whole seconds, so a
    /// shorter interval would come due again before its due time could move on.
    pub fn every(interval: Duration) -> Result<Schedule, ScheduleError> {
        if interval.is_zero() {
            return Err(ScheduleError::ZeroInterval);
        }
        let shown = crate::duration::format(interval);
        if interval < Duration::from_secs(1) {
            return Err(ScheduleError::IntervalTooShort(shown));
        }
        // Refuse what chrono cannot add to a date: it would never come due.
        let fits = TimeDelta::from_std(interval)
            .ok()
            .and_then(|d| DateTime::UNIX_EPOCH.checked_add_signed(d))
            .is_some_and(|t| t.year() <= 9999);
        if !fits {
            return Err(ScheduleError::IntervalTooLong(shown));
        }
        Ok(Schedule::Every(interval))
    }

    /// The first due time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Every(interval) => {
                if interval.is_zero() {
                    return None;
                }
                after.checked_add_signed(TimeDelta::from_std(*interval).ok()?)
            }
            Schedule::Cron { timezone, rule, .. } => rule.next_after(*timezone, after),
        }
    }

    /// The next `n` due times strictly after `after` (for `check`).
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut due = Vec::with_capacity(n.min(64));
        let mut cursor = after;
        while due.len() < n {
            let Some(next) = self.next_after(cursor) else {
                break;
            };
            due.push(next);
            cursor = next;
        }
        due
    }

    /// The shortest gap between two consecutive due times from `from` on: every due time for
    /// about two years (at most 5000 of them, and at least two), plus the due times around each
    /// DST transition in those two years, where gaps can shrink. Used to refuse a grace period
    /// not shorter than it. `None` if there are fewer than two due times (only near 2100).
    pub fn min_gap(&self, from: DateTime<Utc>) -> Option<Duration> {
        let timezone = match self {
            Schedule::Every(interval) => return (!interval.is_zero()).then_some(*interval),
            Schedule::Cron { timezone, .. } => *timezone,
        };
        let horizon = from.checked_add_signed(MIN_GAP_HORIZON)?;
        let mut shortest: Option<TimeDelta> = None;
        let mut note = |gap: TimeDelta| shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
        self.scan_gaps(from, horizon, MIN_GAP_SCAN_LIMIT, &mut note);
        for transition in dst::offset_transitions(timezone, from, horizon) {
            let start = self.start_before(transition, from);
            let until = transition
                .checked_add_signed(TimeDelta::days(1))
                .unwrap_or(horizon);
            self.scan_gaps(start, until, MIN_GAP_WINDOW_LIMIT, &mut note);
        }
        shortest.and_then(|gap| gap.to_std().ok())
    }

    /// The zone a cron schedule is read in; UTC for `every`.
    pub fn timezone(&self) -> Tz {
        match self {
            Schedule::Cron { timezone, .. } => *timezone,
            Schedule::Every(_) => chrono_tz::UTC,
        }
    }

    /// A short human description for `check`/`status`: `0 3 * * 0 (Europe/Berlin)`, or
    /// `every 30d`, the interval written as a config writes it.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Cron {
                expression,
                timezone,
                ..
            } => {
                format!("{expression} ({})", timezone.name())
            }
            Schedule::Every(interval) => {
                format!("every {}", crate::duration::format(*interval))
            }
        }
    }

    /// Feeds `note` the gaps between consecutive due times from the first after `start` until
    /// one passes `until`, or `limit` gaps; always at least one gap if there are two due times
    /// (`0 0 29 2 *` may first come due beyond `until`).
    fn scan_gaps(
        &self,
        start: DateTime<Utc>,
        until: DateTime<Utc>,
        limit: usize,
        note: &mut impl FnMut(TimeDelta),
    ) {
        let Some(mut prev) = self.next_after(start) else {
            return;
        };
        for i in 0..limit {
            if prev > until && i > 0 {
                break;
            }
            let Some(next) = self.next_after(prev) else {
                break;
            };
            note(next - prev);
            prev = next;
        }
    }

    /// A start (not before `from`) whose next due time is the last one before `transition`, or
    /// close to it, so that a short scan from it crosses the transition.
    fn start_before(&self, transition: DateTime<Utc>, from: DateTime<Utc>) -> DateTime<Utc> {
        const LOOK_BACK: [TimeDelta; 8] = [
            TimeDelta::minutes(1),
            TimeDelta::minutes(10),
            TimeDelta::hours(1),
            TimeDelta::hours(6),
            TimeDelta::days(1),
            TimeDelta::days(8),
            TimeDelta::days(32),
            TimeDelta::days(366),
        ];
        for back in LOOK_BACK {
            let start = transition
                .checked_sub_signed(back)
                .map_or(from, |s| s.max(from));
            if self.next_after(start).is_some_and(|due| due < transition) {
                return start;
            }
            if start == from {
                break;
            }
        }
        transition
            .checked_sub_signed(ONE_SECOND)
            .map_or(from, |s| s.max(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Australia::Lord_Howe;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    // Shared with the tests of `crontab` and `dst`.
    pub(super) fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    pub(super) fn cron(expr: &str, tz: Tz) -> Schedule {
        Schedule::cron(expr, tz).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    pub(super) fn rfc(times: &[DateTime<Utc>]) -> Vec<String> {
        times.iter().map(|t| t.to_rfc3339()).collect()
    }

    #[test]
    fn upcoming_gives_the_next_n() {
        let schedule = cron("0 3 * * 0", Berlin);
        let got = schedule.upcoming(utc("2026-03-20T00:00:00Z"), 3);
        assert_eq!(
            rfc(&got),
            [
                "2026-03-22T02:00:00+00:00", // 03:00 CET
                "2026-03-29T01:00:00+00:00", // 03:00 CEST, the spring-forward day
                "2026-04-05T01:00:00+00:00",
            ]
        );
        assert!(schedule.upcoming(utc("2026-03-20T00:00:00Z"), 0).is_empty());
        let every = Schedule::every(Duration::from_secs(3600)).unwrap();
        assert_eq!(
            rfc(&every.upcoming(utc("2026-03-20T00:00:00Z"), 3)),
            [
                "2026-03-20T01:00:00+00:00",
                "2026-03-20T02:00:00+00:00",
                "2026-03-20T03:00:00+00:00",
            ]
        );
    }

    #[test]
    fn every_is_an_interval_after_the_anchor() {
        let thirty_days = Duration::from_secs(30 * 86_400);
        let schedule = Schedule::every(thirty_days).unwrap();
        let after = utc("2026-03-20T10:11:12Z");
        assert_eq!(
            schedule.next_after(after),
            Some(utc("2026-04-19T10:11:12Z"))
        );
        assert_eq!(schedule.min_gap(after), Some(thirty_days));
        assert_eq!(schedule.timezone(), UTC);
        assert_eq!(schedule.describe(), "every 30d");
        assert!(Schedule::every(Duration::from_millis(1500)).is_ok());

        let cases: &[(Duration, &str)] = &[
            (
                Duration::ZERO,
                "the interval is zero: a schedule must move forward in time",
            ),
            (
                Duration::from_millis(500),
                "the interval 500ms is shorter than 1s, the resolution of due times",
            ),
            (
                Duration::from_secs(u64::MAX),
                "the interval 213503982334601d 7h 15s is too long to schedule",
            ),
        ];
        for (interval, want) in cases {
            let err = Schedule::every(*interval).unwrap_err();
            assert_eq!(err.to_string(), *want, "{interval:?}");
        }
        // Built by hand, a zero interval never comes due rather than repeating `after`.
        assert_eq!(Schedule::Every(Duration::ZERO).next_after(after), None);
    }

    #[test]
    fn describe_and_timezone() {
        let schedule = cron("  0  3 *\t* 0 ", Berlin);
        assert_eq!(schedule.describe(), "0 3 * * 0 (Europe/Berlin)");
        assert_eq!(schedule.timezone(), Berlin);
        assert_eq!(cron("@daily", UTC).describe(), "@daily (UTC)");
    }

    #[test]
    fn min_gap() {
        let from = utc("2026-01-15T00:00:00Z");
        let h = |hours: u64| Duration::from_secs(hours * 3600);
        let m = |minutes: u64| Duration::from_secs(minutes * 60);
        let cases: &[(&str, Tz, Duration)] = &[
            ("0 3 * * 0", UTC, h(7 * 24)),
            // Berlin's clocks change on Sundays: the spring-forward week is an hour short.
            ("0 3 * * 0", Berlin, h(7 * 24 - 1)),
            ("*/5 * * * *", UTC, m(5)),
            ("*/5 * * * *", Berlin, m(5)),
            ("0 3 1 * *", UTC, h(28 * 24)),
            ("0 3 1 * *", Berlin, h(28 * 24)),
            ("0 3 * * *", UTC, h(24)),
            ("0 3 * * *", Berlin, h(23)),
            ("30 2 * * *", Berlin, m(23 * 60 + 30)),
            ("0 * * * *", Berlin, h(1)),
            ("30 * * * *", Berlin, h(1)),
            // Time of day: 02:15 fires at 03:00 CEST on the spring-forward day, then 03:15.
            ("15 2,3 * * *", Berlin, m(15)),
            // Lord Howe falls back half an hour (02:00 -> 01:30): 01:45 comes twice, 30 min apart.
            ("45 * * * *", Lord_Howe, m(30)),
            ("0 0 1 1 *", UTC, h(365 * 24)),
            // Even when the first due time lies beyond the two years scanned.
            ("0 0 29 2 *", UTC, h(1461 * 24)),
            ("*/20 * * * * *", UTC, Duration::from_secs(20)),
        ];
        for (expr, tz, want) in cases {
            assert_eq!(cron(expr, *tz).min_gap(from), Some(*want), "{expr} in {tz}");
        }
    }
}
