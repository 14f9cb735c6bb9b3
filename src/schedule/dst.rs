//! Daylight-saving time: how the wall-clock due times of a [`CronRule`] become instants.
//!
//! We never let the `cron` crate iterate in a zone: it iterates wall-clock times on a UTC clock
//! (no gaps, no folds), and this module maps each wall-clock time to an instant by one of two
//! rules ([`DstRule`]), picked from the schedule's hour field:
//!
//! - *Time-of-day schedules* (the hour field does not cover all 24 hours: daily, weekly,
//!   `0 1-5 * * *`, ...) get **exactly one run per matching wall-clock time**. A time that
//!   happens twice (fall-back) fires at its first occurrence only; a time that does not exist
//!   (spring-forward) fires at the first instant after the gap (02:30 in Europe/Berlin on its
//!   spring-forward day fires at 03:00 CEST). Due times that fall into the same gap merge into
//!   that one instant. This is DESIGN's "exactly one run on each of those days".
//! - *Hourly-or-finer schedules* (the hour field covers every hour: `0 * * * *`, `*/15 * * * *`)
//!   measure elapsed time, not a time of day, so they fire at **every real instant whose wall
//!   clock matches**: in the repeated hour they fire in both passes, in the skipped hour not at
//!   all. `0 * * * *` thus fires once at every UTC hour across both transitions, never twice at
//!   one instant, and never leaves a two-hour hole.
//!
//! It also finds a zone's offset changes, around which `Schedule::min_gap` looks for the gaps
//! DST shortens.

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone, Timelike, Utc};
use chrono_tz::Tz;

use super::crontab::{CronRule, DstRule};

/// Bound on the wall-clock candidates one `next_after` looks at. Only candidates that map to
/// `after` or earlier are skipped (the second pass of a repeated hour, or a skipped hour for an
/// hourly-or-finer schedule): at most a day of a per-second schedule in any real zone.
const MAX_CANDIDATES: usize = 200_000;
/// Bound, in minutes, on the length of a DST gap (the longest real one, Samoa's 2011 date-line
/// move, is 24 hours).
const MAX_GAP_MINUTES: i64 = 48 * 60;
/// How far ahead an hourly-or-finer schedule looks for a fall-back whose repeated wall-clock
/// times it has already passed once; longer than any real fall-back (2h at most).
const REPEAT_LOOKAHEAD: TimeDelta = TimeDelta::hours(3);
/// How `offset_transitions` steps through time to find offset changes; no zone changes twice
/// in 6 hours.
const TRANSITION_PROBE: TimeDelta = TimeDelta::hours(6);
pub(super) const ONE_SECOND: TimeDelta = TimeDelta::seconds(1);

impl CronRule {
    /// The first due time strictly after `after`, in `tz`.
    pub(super) fn next_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let from_crate = self.next_instant_after(tz, after);
        let repeated = match self.dst {
            DstRule::Elapsed => self.next_repeated_after(tz, after),
            DstRule::WallClock => None,
        };
        let next = match (from_crate, repeated) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        next.filter(|t| *t > after)
    }

    /// The first instant after `after` that a wall-clock due time later than `after`'s own wall
    /// clock maps to. For hourly-or-finer schedules [`Self::next_repeated_after`] adds the second
    /// pass of times the clock is about to repeat.
    fn next_instant_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // Wall-clock times up to `after`'s own map to `after` or earlier (the first occurrence of
        // a time is never later than the first occurrence of a later time), so start there.
        let mut cursor = after.with_timezone(&tz).naive_local();
        for _ in 0..MAX_CANDIDATES {
            let local = self.next_local_after(cursor)?;
            cursor = local;
            match tz.from_local_datetime(&local) {
                LocalResult::Single(t) => {
                    let t = t.with_timezone(&Utc);
                    if t > after {
                        return Some(t);
                    }
                }
                LocalResult::Ambiguous(a, b) => {
                    let (a, b) = (a.with_timezone(&Utc), b.with_timezone(&Utc));
                    let (first, second) = (a.min(b), a.max(b));
                    if first > after {
                        return Some(first);
                    }
                    // The first pass is over; only an elapsed-time schedule fires again.
                    if self.dst == DstRule::Elapsed && second > after {
                        return Some(second);
                    }
                }
                LocalResult::None => {
                    let Some(gap_end) = first_instant_after_gap(tz, local) else {
                        continue;
                    };
                    match self.dst {
                        DstRule::WallClock if gap_end > after => return Some(gap_end),
                        DstRule::WallClock => {}
                        // Skip the rest of the gap in one step.
                        DstRule::Elapsed => {
                            let end_local = gap_end.with_timezone(&tz).naive_local();
                            if let Some(before_end) = end_local.checked_sub_signed(ONE_SECOND) {
                                cursor = cursor.max(before_end);
                            }
                        }
                    }
                }
            }
        }
        None
    }

    /// For an hourly-or-finer schedule, when the clock falls back within the next few hours: the
    /// second pass of the first matching wall-clock time in the stretch it repeats. Those times
    /// may be at or before `after`'s wall clock (already fired once), so the forward scan from
    /// `after`'s wall clock does not see them.
    fn next_repeated_after(&self, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let horizon = after.checked_add_signed(REPEAT_LOOKAHEAD)?;
        let offset_before = utc_offset(tz, after);
        if utc_offset(tz, horizon) >= offset_before {
            return None;
        }
        let transition = find_transition(tz, after, horizon)?;
        let offset_after = utc_offset(tz, transition);
        if offset_after >= offset_before {
            return None;
        }
        // The clock reads [start, end) twice: before the transition and again after it.
        let start = transition
            .naive_utc()
            .checked_add_signed(TimeDelta::seconds(offset_after))?;
        let end = transition
            .naive_utc()
            .checked_add_signed(TimeDelta::seconds(offset_before))?;
        let local = self.next_local_after(start.checked_sub_signed(ONE_SECOND)?)?;
        if local >= end {
            return None;
        }
        let second_pass =
            Utc.from_utc_datetime(&local.checked_sub_signed(TimeDelta::seconds(offset_after))?);
        (second_pass > after).then_some(second_pass)
    }
}

/// The zone's offset from UTC at `at`, in seconds.
fn utc_offset(tz: Tz, at: DateTime<Utc>) -> i64 {
    i64::from(
        tz.offset_from_utc_datetime(&at.naive_utc())
            .fix()
            .local_minus_utc(),
    )
}

/// The first whole second in `(lo, hi]` at which the offset differs from the one at `lo`, given
/// that the offsets at `lo` and `hi` differ.
fn find_transition(tz: Tz, lo: DateTime<Utc>, hi: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let before = utc_offset(tz, lo);
    let mut lo = lo.with_nanosecond(0)?;
    let mut hi = hi;
    for _ in 0..64 {
        let span = (hi - lo).num_seconds();
        if span <= 1 {
            break;
        }
        let mid = lo.checked_add_signed(TimeDelta::seconds(span / 2))?;
        if utc_offset(tz, mid) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Some(hi)
}

/// Every instant in `[from, until]` at which the zone's offset changes.
pub(super) fn offset_transitions(
    tz: Tz,
    from: DateTime<Utc>,
    until: DateTime<Utc>,
) -> Vec<DateTime<Utc>> {
    let mut transitions = Vec::new();
    let mut lo = from;
    let mut offset = utc_offset(tz, lo);
    let probes = (until - from).num_seconds() / TRANSITION_PROBE.num_seconds() + 2;
    for _ in 0..probes {
        if lo > until {
            break;
        }
        let Some(hi) = lo.checked_add_signed(TRANSITION_PROBE) else {
            break;
        };
        let next_offset = utc_offset(tz, hi);
        if next_offset != offset {
            transitions.extend(find_transition(tz, lo, hi));
            offset = next_offset;
        }
        lo = hi;
    }
    transitions
}

/// The first instant after the DST gap that swallows the wall-clock time `local`: the instant
/// whose wall clock reads the earliest existing time after `local` (03:00 for 02:30 on Europe's
/// spring-forward day). `None` only if no such time exists within two days.
fn first_instant_after_gap(tz: Tz, local: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut probe = local;
    let mut found = None;
    for _ in 0..MAX_GAP_MINUTES {
        probe = probe.checked_add_signed(TimeDelta::minutes(1))?;
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            found = Some((probe, t));
            break;
        }
    }
    let (mut probe, mut first) = found?;
    // The gap ended somewhere in the last minute stepped over; find the second.
    for _ in 0..60 {
        let Some(earlier) = probe.checked_sub_signed(ONE_SECOND) else {
            break;
        };
        if earlier <= local {
            break;
        }
        match tz.from_local_datetime(&earlier).earliest() {
            Some(t) => (probe, first) = (earlier, t),
            None => break,
        }
    }
    Some(first.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use crate::schedule::tests::{cron, rfc, utc};
    use chrono::TimeDelta;
    use chrono_tz::America::New_York;
    use chrono_tz::Australia::Lord_Howe;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::Tz;
    use chrono_tz::UTC;

    /// A daily schedule in a DST zone: exactly one run on every day, the week around each
    /// transition asserted instant by instant.
    #[test]
    fn daily_runs_once_per_day_across_dst() {
        let cases: &[(&str, Tz, &str, [&str; 7])] = &[
            // Berlin springs forward on 2026-03-29: 02:00 CET -> 03:00 CEST (01:00 UTC).
            (
                "30 2 * * *",
                Berlin,
                "2026-03-26T00:00:00Z",
                [
                    "2026-03-26T01:30:00+00:00", // 02:30 CET
                    "2026-03-27T01:30:00+00:00",
                    "2026-03-28T01:30:00+00:00",
                    "2026-03-29T01:00:00+00:00", // 02:30 does not exist: 03:00 CEST
                    "2026-03-30T00:30:00+00:00", // 02:30 CEST
                    "2026-03-31T00:30:00+00:00",
                    "2026-04-01T00:30:00+00:00",
                ],
            ),
            // Berlin falls back on 2026-10-25: 03:00 CEST -> 02:00 CET (01:00 UTC).
            (
                "30 2 * * *",
                Berlin,
                "2026-10-22T00:00:00Z",
                [
                    "2026-10-22T00:30:00+00:00", // 02:30 CEST
                    "2026-10-23T00:30:00+00:00",
                    "2026-10-24T00:30:00+00:00",
                    "2026-10-25T00:30:00+00:00", // first 02:30 (CEST) only
                    "2026-10-26T01:30:00+00:00", // 02:30 CET
                    "2026-10-27T01:30:00+00:00",
                    "2026-10-28T01:30:00+00:00",
                ],
            ),
            // New York springs forward on 2026-03-08: 02:00 EST -> 03:00 EDT (07:00 UTC).
            (
                "30 2 * * *",
                New_York,
                "2026-03-05T12:00:00Z",
                [
                    "2026-03-06T07:30:00+00:00", // 02:30 EST
                    "2026-03-07T07:30:00+00:00",
                    "2026-03-08T07:00:00+00:00", // 02:30 does not exist: 03:00 EDT
                    "2026-03-09T06:30:00+00:00", // 02:30 EDT
                    "2026-03-10T06:30:00+00:00",
                    "2026-03-11T06:30:00+00:00",
                    "2026-03-12T06:30:00+00:00",
                ],
            ),
            // New York falls back on 2026-11-01: 02:00 EDT -> 01:00 EST (06:00 UTC); 02:30 is
            // not repeated there, it just moves to EST.
            (
                "30 2 * * *",
                New_York,
                "2026-10-29T12:00:00Z",
                [
                    "2026-10-30T06:30:00+00:00",
                    "2026-10-31T06:30:00+00:00",
                    "2026-11-01T07:30:00+00:00", // 02:30 EST
                    "2026-11-02T07:30:00+00:00",
                    "2026-11-03T07:30:00+00:00",
                    "2026-11-04T07:30:00+00:00",
                    "2026-11-05T07:30:00+00:00",
                ],
            ),
            // New York's repeated hour is 01:00-02:00.
            (
                "30 1 * * *",
                New_York,
                "2026-10-29T12:00:00Z",
                [
                    "2026-10-30T05:30:00+00:00", // 01:30 EDT
                    "2026-10-31T05:30:00+00:00",
                    "2026-11-01T05:30:00+00:00", // first 01:30 (EDT) only
                    "2026-11-02T06:30:00+00:00", // 01:30 EST
                    "2026-11-03T06:30:00+00:00",
                    "2026-11-04T06:30:00+00:00",
                    "2026-11-05T06:30:00+00:00",
                ],
            ),
        ];
        for (expr, tz, after, want) in cases {
            let got = cron(expr, *tz).upcoming(utc(after), 7);
            assert_eq!(rfc(&got), want.to_vec(), "{expr} in {tz} after {after}");
            let local_days: BTreeSet<_> = got
                .iter()
                .map(|t| t.with_timezone(tz).date_naive())
                .collect();
            assert_eq!(local_days.len(), 7, "{expr} in {tz}: one run per local day");
        }
    }

    #[test]
    fn next_after_from_inside_a_transition() {
        let cases: &[(&str, Tz, &str, &str)] = &[
            // Just before the spring gap: the gap's end.
            (
                "30 2 * * *",
                Berlin,
                "2026-03-29T00:59:59Z",
                "2026-03-29T01:00:00+00:00",
            ),
            // At the gap's end, that run is done: the next day.
            (
                "30 2 * * *",
                Berlin,
                "2026-03-29T01:00:00Z",
                "2026-03-30T00:30:00+00:00",
            ),
            // In the first pass of the repeated hour, after 02:30 CEST: not again at 02:30 CET.
            (
                "30 2 * * *",
                Berlin,
                "2026-10-25T00:45:00Z",
                "2026-10-26T01:30:00+00:00",
            ),
            // In the second pass, before the second 02:30: still not again.
            (
                "30 2 * * *",
                Berlin,
                "2026-10-25T01:10:00Z",
                "2026-10-26T01:30:00+00:00",
            ),
            // Before the first pass: the first pass.
            (
                "30 2 * * *",
                Berlin,
                "2026-10-24T23:00:00Z",
                "2026-10-25T00:30:00+00:00",
            ),
            // Hourly, in the first pass after 02:00 CEST: the second pass's 02:00 (CET) is next.
            (
                "0 * * * *",
                Berlin,
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00+00:00",
            ),
            // Hourly, in the second pass: 03:00 CET.
            (
                "0 * * * *",
                Berlin,
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00+00:00",
            ),
            (
                "*/15 * * * *",
                Berlin,
                "2026-10-25T00:40:00Z",
                "2026-10-25T00:45:00+00:00",
            ),
            (
                "*/15 * * * *",
                Berlin,
                "2026-10-25T00:45:00Z",
                "2026-10-25T01:00:00+00:00",
            ),
            (
                "*/15 * * * *",
                Berlin,
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:15:00+00:00",
            ),
            // Sub-second `after`: strictly later, whole seconds.
            (
                "0 3 * * *",
                UTC,
                "2026-03-04T03:00:00.500Z",
                "2026-03-05T03:00:00+00:00",
            ),
            (
                "0 3 * * *",
                UTC,
                "2026-03-04T02:59:59.999Z",
                "2026-03-04T03:00:00+00:00",
            ),
        ];
        for (expr, tz, after, want) in cases {
            let got = cron(expr, *tz)
                .next_after(utc(after))
                .map(|t| t.to_rfc3339());
            assert_eq!(got.as_deref(), Some(*want), "{expr} in {tz} after {after}");
        }
    }

    /// Hourly-or-finer schedules fire at every real instant whose wall clock matches: every UTC
    /// hour across both transitions, the repeated hour in both passes, nothing twice.
    /// Time-of-day schedules (here hours 1-3) keep one run per wall-clock time.
    #[test]
    fn hourly_and_time_of_day_schedules_across_dst() {
        let cases: &[(&str, Tz, &str, &[&str])] = &[
            (
                "0 * * * *",
                Berlin,
                "2026-10-24T22:30:00Z",
                &[
                    "2026-10-24T23:00:00+00:00", // 01:00 CEST
                    "2026-10-25T00:00:00+00:00", // 02:00 CEST
                    "2026-10-25T01:00:00+00:00", // 02:00 CET
                    "2026-10-25T02:00:00+00:00", // 03:00 CET
                    "2026-10-25T03:00:00+00:00",
                ],
            ),
            (
                "0 * * * *",
                Berlin,
                "2026-03-28T22:30:00Z",
                &[
                    "2026-03-28T23:00:00+00:00", // 00:00 CET
                    "2026-03-29T00:00:00+00:00", // 01:00 CET
                    "2026-03-29T01:00:00+00:00", // 03:00 CEST (02:00 does not exist)
                    "2026-03-29T02:00:00+00:00",
                ],
            ),
            (
                "30 * * * *",
                Berlin,
                "2026-03-28T23:00:00Z",
                &[
                    "2026-03-28T23:30:00+00:00", // 00:30 CET
                    "2026-03-29T00:30:00+00:00", // 01:30 CET
                    "2026-03-29T01:30:00+00:00", // 03:30 CEST; 02:30 does not exist
                    "2026-03-29T02:30:00+00:00",
                ],
            ),
            (
                "30 * * * *",
                Berlin,
                "2026-10-24T23:00:00Z",
                &[
                    "2026-10-24T23:30:00+00:00", // 01:30 CEST
                    "2026-10-25T00:30:00+00:00", // 02:30 CEST
                    "2026-10-25T01:30:00+00:00", // 02:30 CET
                    "2026-10-25T02:30:00+00:00", // 03:30 CET
                ],
            ),
            (
                "0 * * * *",
                New_York,
                "2026-11-01T03:30:00Z",
                &[
                    "2026-11-01T04:00:00+00:00", // 00:00 EDT
                    "2026-11-01T05:00:00+00:00", // 01:00 EDT
                    "2026-11-01T06:00:00+00:00", // 01:00 EST
                    "2026-11-01T07:00:00+00:00", // 02:00 EST
                ],
            ),
            (
                "0 1-3 * * *",
                Berlin,
                "2026-10-24T22:00:00Z",
                &[
                    "2026-10-24T23:00:00+00:00", // 01:00 CEST
                    "2026-10-25T00:00:00+00:00", // 02:00 CEST, not again at 02:00 CET
                    "2026-10-25T02:00:00+00:00", // 03:00 CET
                    "2026-10-26T00:00:00+00:00", // 01:00 CET next day
                ],
            ),
            (
                "0 1-3 * * *",
                Berlin,
                "2026-03-28T23:30:00Z",
                &[
                    "2026-03-29T00:00:00+00:00", // 01:00 CET
                    "2026-03-29T01:00:00+00:00", // 02:00 and 03:00 both fire once, at 03:00 CEST
                    "2026-03-29T23:00:00+00:00", // 01:00 CEST next day
                ],
            ),
        ];
        for (expr, tz, after, want) in cases {
            let got = cron(expr, *tz).upcoming(utc(after), want.len());
            assert_eq!(rfc(&got), want.to_vec(), "{expr} in {tz} after {after}");
        }
    }

    /// Walks each schedule across both 2026 transitions from many starting points: due times
    /// strictly increase, and `next_after` is always strictly later than its argument.
    #[test]
    fn next_after_is_strictly_later_everywhere() {
        let exprs = [
            "30 2 * * *",
            "0 * * * *",
            "*/7 * * * *",
            "0 1-3 * * *",
            "15 2,3 * * *",
            "0 0 2 * * *",
        ];
        for tz in [Berlin, New_York, Lord_Howe, UTC] {
            for expr in exprs {
                let schedule = cron(expr, tz);
                for day in [
                    "2026-03-07T12:00:00Z",
                    "2026-03-28T12:00:00Z",
                    "2026-04-04T06:00:00Z",
                    "2026-10-24T12:00:00Z",
                    "2026-10-31T12:00:00Z",
                ] {
                    let mut at = utc(day);
                    for _ in 0..(36 * 60 / 7) {
                        let next = schedule.next_after(at).unwrap();
                        assert!(next > at, "{expr} in {tz}: {next} after {at}");
                        at += TimeDelta::minutes(7);
                    }
                    let due = schedule.upcoming(utc(day), 60);
                    assert!(
                        due.windows(2).all(|w| w[0] < w[1]),
                        "{expr} in {tz} from {day}"
                    );
                }
            }
        }
    }
}
