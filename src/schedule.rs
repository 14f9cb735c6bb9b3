//! When each policy's rotations come due: cron expressions with crontab semantics in an IANA
//! time zone, or a fixed interval (`every`).
//!
//! This module owns three things the `cron` crate (0.17) gets wrong for us, all verified here:
//!
//! - **Field count and day-of-week numbers.** The crate wants 6 or 7 fields (seconds first) and
//!   numbers days of the week 1-7 from Sunday; crontab has 5 fields and numbers them 0-7 with
//!   0 and 7 = Sunday, 1 = Monday. We parse every field ourselves (which also gives messages that
//!   say exactly what is wrong) and hand the crate an expression of explicit lists in its own
//!   numbering. Both the 5-field form and the 6-field form (`sec min hour dom month dow`) read
//!   day-of-week numbers the crontab way.
//! - **Day of month and day of week.** The crate requires both to match; crontab (Vixie cron,
//!   cronie) fires when *either* matches if both are restricted. As in cronie, a field written
//!   with a leading `*` (`*`, `*/2`) or `?` counts as unrestricted, and then the other one alone
//!   decides (`0 0 */10 * 1` is "Mondays that are the 1st, 11th, 21st or 31st", as in cronie).
//!   The OR is the union of two crate schedules.
//! - **Daylight-saving time.** We never let the crate iterate in a zone: it iterates wall-clock
//!   times on a UTC clock (no gaps, no folds), and this module maps each wall-clock time to an
//!   instant by one of two rules, picked from the schedule's hour field:
//!   - *Time-of-day schedules* (the hour field does not cover all 24 hours: daily, weekly,
//!     `0 1-5 * * *`, ...) get **exactly one run per matching wall-clock time**. A time that
//!     happens twice (fall-back) fires at its first occurrence only; a time that does not exist
//!     (spring-forward) fires at the first instant after the gap (02:30 in Europe/Berlin on its
//!     spring-forward day fires at 03:00 CEST). Due times that fall into the same gap merge into
//!     that one instant. This is DESIGN's "exactly one run on each of those days".
//!   - *Hourly-or-finer schedules* (the hour field covers every hour: `0 * * * *`, `*/15 * * * *`)
//!     measure elapsed time, not a time of day, so they fire at **every real instant whose wall
//!     clock matches**: in the repeated hour they fire in both passes, in the skipped hour not at
//!     all. `0 * * * *` thus fires once at every UTC hour across both transitions, never twice at
//!     one instant, and never leaves a two-hour hole.
//!
//! `every` schedules are plain intervals: the next due time is the last run plus the interval;
//! the caller anchors them.
//!
//! The crate only knows the years 1970-2100: a cron schedule has no due times after 2100.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::Tz;

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

/// A parsed cron expression: what the crate iterates, and how DST meets it.
#[derive(Debug, Clone)]
pub struct CronRule {
    /// One crate schedule, or two whose union is crontab's "day of month OR day of week". Each
    /// is iterated on a UTC clock that stands for the zone's wall clock.
    matchers: Vec<cron::Schedule>,
    /// How wall-clock due times become instants around DST transitions.
    dst: DstRule,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DstRule {
    /// One run per matching wall-clock time: first occurrence of a repeated one, first instant
    /// after the gap for a missing one.
    WallClock,
    /// Every real instant whose wall clock matches: both passes of a repeated time, none for a
    /// missing one.
    Elapsed,
}

/// One field of a cron expression, named as messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CronField {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl fmt::Display for CronField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CronField::Second => "second",
            CronField::Minute => "minute",
            CronField::Hour => "hour",
            CronField::DayOfMonth => "day-of-month",
            CronField::Month => "month",
            CronField::DayOfWeek => "day-of-week",
        })
    }
}

/// What is wrong with a schedule. Every one is permanent: the config must change.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("the cron expression is empty")]
    Empty,
    #[error("expected 5 fields (crontab) or 6 (with seconds), found {found}")]
    FieldCount { found: usize },
    #[error(
        "expected 5 fields (crontab) or 6 (with seconds), found 7: a year field is not supported"
    )]
    YearField,
    #[error("{field} value {value} is out of range {min}-{max}")]
    OutOfRange {
        field: CronField,
        value: String,
        min: u32,
        max: u32,
    },
    #[error(
        "{field} range {start}-{end} runs backwards (a range cannot wrap; use a list such as 22-23,0-2)"
    )]
    BackwardRange {
        field: CronField,
        start: String,
        end: String,
    },
    #[error("{field} step {step} is out of range 1-{max}")]
    StepOutOfRange {
        field: CronField,
        step: String,
        max: u32,
    },
    #[error("{field} name \"{name}\" is not {expected}")]
    UnknownName {
        field: CronField,
        name: String,
        expected: &'static str,
    },
    #[error(
        "{field} field \"{text}\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them"
    )]
    Malformed { field: CronField, text: String },
    #[error(
        "\"@{0}\" is not a known shorthand (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)"
    )]
    UnknownShorthand(String),
    #[error("@reboot is not a schedule: use `run --once` to rotate at start")]
    Reboot,
    #[error("the schedule never comes due: none of the selected months has a day {day}")]
    NeverDue { day: u32 },
    #[error("the translated expression \"{translated}\" was refused by the cron crate: {reason}")]
    Translation { translated: String, reason: String },
    #[error("the interval is zero: a schedule must move forward in time")]
    ZeroInterval,
    #[error("the interval {0} is shorter than 1s, the resolution of due times")]
    IntervalTooShort(String),
    #[error("the interval {0} is too long to schedule")]
    IntervalTooLong(String),
}

/// The crate knows no year after this; asking it about later times is pointless.
const LAST_YEAR: i32 = 2100;
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
/// How far ahead `min_gap` looks.
const MIN_GAP_HORIZON: TimeDelta = TimeDelta::days(731);
/// At most this many due times in `min_gap`'s straight scan; DST transitions within the horizon
/// are scanned separately, so a frequent schedule is still checked where DST bends its gaps.
const MIN_GAP_SCAN_LIMIT: usize = 5_000;
/// At most this many due times around each DST transition in `min_gap`.
const MIN_GAP_WINDOW_LIMIT: usize = 500;
/// How `min_gap` steps through time to find offset changes; no zone changes twice in 6 hours.
const TRANSITION_PROBE: TimeDelta = TimeDelta::hours(6);
const ONE_SECOND: TimeDelta = TimeDelta::seconds(1);

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
        let shown = humantime::format_duration(interval).to_string();
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
            Schedule::Cron { timezone, rule, .. } => {
                let from_crate = rule.next_instant_after(*timezone, after);
                let repeated = match rule.dst {
                    DstRule::Elapsed => rule.next_repeated_after(*timezone, after),
                    DstRule::WallClock => None,
                };
                let next = match (from_crate, repeated) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                next.filter(|t| *t > after)
            }
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
        for transition in offset_transitions(timezone, from, horizon) {
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
    /// `every 30days`.
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
                format!("every {}", humantime::format_duration(*interval))
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

impl CronRule {
    fn parse(expression: &str) -> Result<CronRule, ScheduleError> {
        let text = match expression.strip_prefix('@') {
            Some(name) => expand_shorthand(name)?,
            None => expression,
        };
        let fields: Vec<&str> = text.split_whitespace().collect();
        let (second, rest) = match fields.len() {
            0 => return Err(ScheduleError::Empty),
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            7 => return Err(ScheduleError::YearField),
            found => return Err(ScheduleError::FieldCount { found }),
        };
        let &[minute, hour, day_of_month, month, day_of_week] = rest else {
            return Err(ScheduleError::FieldCount {
                found: fields.len(),
            });
        };

        let seconds = parse_field(CronField::Second, second)?;
        let minutes = parse_field(CronField::Minute, minute)?;
        let hours = parse_field(CronField::Hour, hour)?;
        let days = parse_field(CronField::DayOfMonth, day_of_month)?;
        let months = parse_field(CronField::Month, month)?;
        let weekdays = parse_field(CronField::DayOfWeek, day_of_week)?;

        let time = format!(
            "{} {} {}",
            crate_list(&seconds, 60, 0),
            crate_list(&minutes, 60, 0),
            crate_list(&hours, 24, 0)
        );
        let days_text = crate_list(&days, 31, 0);
        let months_text = crate_list(&months, 12, 0);
        // Our weekdays are crontab's 0-6 from Sunday (7 already folded into 0); the crate's
        // are 1-7 from Sunday.
        let weekdays_text = crate_list(&weekdays, 7, 1);

        let first_day = days.first().copied().unwrap_or(1);
        // February counts with 29 days: the crate knows leap years, so Feb 29 does come due.
        let days_fit = months.iter().any(|&m| days_in_month(m) >= first_day);
        let either_day_field = !is_unrestricted(day_of_month) && !is_unrestricted(day_of_week);

        let translated = if either_day_field {
            // crontab: a day matches if its day of month OR its day of week does.
            let mut list = vec![format!("{time} * {months_text} {weekdays_text}")];
            if days_fit {
                list.push(format!("{time} {days_text} {months_text} *"));
            }
            list
        } else {
            if !days_fit {
                return Err(ScheduleError::NeverDue { day: first_day });
            }
            vec![format!("{time} {days_text} {months_text} {weekdays_text}")]
        };
        let matchers = translated
            .into_iter()
            .map(|t| {
                cron::Schedule::from_str(&t).map_err(|e| ScheduleError::Translation {
                    reason: e.to_string(),
                    translated: t,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let dst = if hours.len() == 24 {
            DstRule::Elapsed
        } else {
            DstRule::WallClock
        };
        Ok(CronRule { matchers, dst })
    }

    /// The first matching wall-clock time strictly after `cursor` (whole seconds).
    fn next_local_after(&self, cursor: NaiveDateTime) -> Option<NaiveDateTime> {
        if cursor.year() > LAST_YEAR {
            return None;
        }
        // Before 1970 the crate finds nothing; its first year is where the search must start.
        let floor = NaiveDate::from_ymd_opt(1969, 12, 31)?.and_hms_opt(23, 59, 59)?;
        let cursor = cursor.with_nanosecond(0)?.max(floor);
        let start = Utc.from_utc_datetime(&cursor);
        self.matchers
            .iter()
            .filter_map(|m| m.after(&start).next())
            .map(|t| t.naive_utc())
            .min()
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

fn expand_shorthand(name: &str) -> Result<&'static str, ScheduleError> {
    match name.to_ascii_lowercase().as_str() {
        "yearly" | "annually" => Ok("0 0 1 1 *"),
        "monthly" => Ok("0 0 1 * *"),
        "weekly" => Ok("0 0 * * 0"),
        "daily" | "midnight" => Ok("0 0 * * *"),
        "hourly" => Ok("0 * * * *"),
        "reboot" => Err(ScheduleError::Reboot),
        _ => Err(ScheduleError::UnknownShorthand(name.to_owned())),
    }
}

/// cronie's rule: a day field that starts with `*` (or is `?`) does not restrict the day.
fn is_unrestricted(text: &str) -> bool {
    text.starts_with('*') || text == "?"
}

impl CronField {
    /// The values a number in this field may take (crontab's; day of week includes 7 = Sunday).
    fn bounds(self) -> (u32, u32) {
        match self {
            CronField::Second | CronField::Minute => (0, 59),
            CronField::Hour => (0, 23),
            CronField::DayOfMonth => (1, 31),
            CronField::Month => (1, 12),
            CronField::DayOfWeek => (0, 7),
        }
    }

    /// Where `N/step` stops. For the week that is Saturday, so `1/2` is Mon, Wed, Fri and does
    /// not wrap round to Sunday as 7.
    fn step_end(self) -> u32 {
        match self {
            CronField::DayOfWeek => 6,
            other => other.bounds().1,
        }
    }
}

/// Parses one field into the set of values it selects, day of week folded to 0-6 from Sunday.
fn parse_field(field: CronField, text: &str) -> Result<BTreeSet<u32>, ScheduleError> {
    let malformed = || ScheduleError::Malformed {
        field,
        text: text.to_owned(),
    };
    let (min, max) = field.bounds();
    let mut values = BTreeSet::new();
    for element in text.split(',') {
        let (base, step) = match element.split_once('/') {
            Some((base, step)) => (base, Some(parse_step(field, step).ok_or_else(malformed)??)),
            None => (element, None),
        };
        let (start, end) = match base {
            "*" => (min, max),
            "?" if matches!(field, CronField::DayOfMonth | CronField::DayOfWeek) => (min, max),
            _ => match base.split_once('-') {
                Some((start_text, end_text)) => {
                    let start = parse_value(field, start_text).ok_or_else(malformed)??;
                    let mut end = parse_value(field, end_text).ok_or_else(malformed)??;
                    // `FRI-SUN`: a Sunday that ends a range is crontab's 7.
                    if field == CronField::DayOfWeek && end == 0 && start > 0 && is_name(end_text) {
                        end = 7;
                    }
                    if start > end {
                        return Err(ScheduleError::BackwardRange {
                            field,
                            start: start_text.to_owned(),
                            end: end_text.to_owned(),
                        });
                    }
                    (start, end)
                }
                None => {
                    let value = parse_value(field, base).ok_or_else(malformed)??;
                    match step {
                        Some(_) => (value, field.step_end().max(value)),
                        None => (value, value),
                    }
                }
            },
        };
        let step = usize::try_from(step.unwrap_or(1)).map_err(|_| malformed())?;
        values.extend((start..=end).step_by(step));
    }
    if field == CronField::DayOfWeek && values.remove(&7) {
        values.insert(0);
    }
    Ok(values)
}

fn is_name(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_alphabetic())
}

/// A number or (month, day of week) a name. `None`: not a value at all; `Some(Err)`: a value
/// that is out of range or an unknown name.
fn parse_value(field: CronField, text: &str) -> Option<Result<u32, ScheduleError>> {
    let (min, max) = field.bounds();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let out_of_range = || ScheduleError::OutOfRange {
            field,
            value: text.to_owned(),
            min,
            max,
        };
        return Some(match text.parse::<u32>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(out_of_range()),
        });
    }
    if !is_name(text) {
        return None;
    }
    let lower = text.to_ascii_lowercase();
    let (found, expected) = match field {
        CronField::DayOfWeek => (weekday_number(&lower), "a day (SUN-SAT)"),
        CronField::Month => (month_number(&lower), "a month (JAN-DEC)"),
        _ => return None,
    };
    Some(found.ok_or_else(|| ScheduleError::UnknownName {
        field,
        name: text.to_owned(),
        expected,
    }))
}

/// A step: `None` if not a number at all.
fn parse_step(field: CronField, text: &str) -> Option<Result<u32, ScheduleError>> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let max = field.bounds().1;
    Some(match text.parse::<u32>() {
        Ok(step) if (1..=max).contains(&step) => Ok(step),
        _ => Err(ScheduleError::StepOutOfRange {
            field,
            step: text.to_owned(),
            max,
        }),
    })
}

/// crontab's number (0 = Sunday) for a day name: three letters or the full name.
fn weekday_number(lower: &str) -> Option<u32> {
    Some(match lower {
        "sun" | "sunday" => 0,
        "mon" | "monday" => 1,
        "tue" | "tues" | "tuesday" => 2,
        "wed" | "wednesday" => 3,
        "thu" | "thur" | "thurs" | "thursday" => 4,
        "fri" | "friday" => 5,
        "sat" | "saturday" => 6,
        _ => return None,
    })
}

fn month_number(lower: &str) -> Option<u32> {
    const MONTHS: [&str; 12] = [
        "january",
        "february",
        "march",
        "april",
        "may",
        "june",
        "july",
        "august",
        "september",
        "october",
        "november",
        "december",
    ];
    MONTHS
        .iter()
        .position(|full| lower == *full || (lower.len() == 3 && full.starts_with(lower)))
        .and_then(|i| u32::try_from(i + 1).ok())
}

/// The crate's text for a set: `*` if it holds all `size` values, else the list, each value
/// shifted by `shift` into the crate's numbering.
fn crate_list(values: &BTreeSet<u32>, size: usize, shift: u32) -> String {
    if values.len() == size {
        return "*".to_owned();
    }
    values
        .iter()
        .map(|v| (v + shift).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The most days a month ever has (February: 29).
fn days_in_month(month: u32) -> u32 {
    match month {
        2 => 29,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
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
fn offset_transitions(tz: Tz, from: DateTime<Utc>, until: DateTime<Utc>) -> Vec<DateTime<Utc>> {
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
    use super::*;
    use chrono::Weekday;
    use chrono_tz::America::New_York;
    use chrono_tz::Australia::Lord_Howe;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn cron(expr: &str, tz: Tz) -> Schedule {
        Schedule::cron(expr, tz).unwrap_or_else(|e| panic!("{expr}: {e}"))
    }

    fn rfc(times: &[DateTime<Utc>]) -> Vec<String> {
        times.iter().map(|t| t.to_rfc3339()).collect()
    }

    /// The weekdays a daily-at-03:00-style schedule fires on over two weeks.
    fn weekdays(expr: &str) -> BTreeSet<u32> {
        let schedule = cron(expr, UTC);
        // 2026-03-01 is a Sunday.
        let start = utc("2026-03-01T00:00:00Z");
        let end = utc("2026-03-15T00:00:00Z");
        schedule
            .upcoming(start, 200)
            .into_iter()
            .take_while(|t| *t < end)
            .map(|t| t.weekday().num_days_from_sunday())
            .collect()
    }

    fn days(list: &[Weekday]) -> BTreeSet<u32> {
        list.iter().map(|d| d.num_days_from_sunday()).collect()
    }

    #[test]
    fn day_of_week_numbers_mean_crontab() {
        use Weekday::*;
        let cases: &[(&str, &[Weekday])] = &[
            ("0 3 * * 1", &[Mon]),
            ("0 3 * * 0", &[Sun]),
            ("0 3 * * 7", &[Sun]),
            ("0 3 * * 6", &[Sat]),
            ("0 3 * * 1-5", &[Mon, Tue, Wed, Thu, Fri]),
            ("0 3 * * */2", &[Sun, Tue, Thu, Sat]),
            ("0 3 * * 1-5/2", &[Mon, Wed, Fri]),
            ("0 3 * * 1/2", &[Mon, Wed, Fri]),
            ("0 3 * * 0-6/3", &[Sun, Wed, Sat]),
            ("0 3 * * 5-7", &[Fri, Sat, Sun]),
            ("0 3 * * 1-7/2", &[Mon, Wed, Fri, Sun]),
            ("0 3 * * 0-6", &[Sun, Mon, Tue, Wed, Thu, Fri, Sat]),
            ("0 3 * * 0-7", &[Sun, Mon, Tue, Wed, Thu, Fri, Sat]),
            ("0 3 * * 6,0", &[Sat, Sun]),
            ("0 3 * * 7,1", &[Sun, Mon]),
            ("0 3 * * 1,3-4", &[Mon, Wed, Thu]),
            ("0 3 * * MON", &[Mon]),
            ("0 3 * * mon-fri", &[Mon, Tue, Wed, Thu, Fri]),
            ("0 3 * * SAT-SUN", &[Sat, Sun]),
            ("0 3 * * FRI-SUN", &[Fri, Sat, Sun]),
            ("0 3 * * SUN-TUE", &[Sun, Mon, Tue]),
            ("0 3 * * Sunday,Wednesday", &[Sun, Wed]),
            ("0 3 * * MON-FRI/2", &[Mon, Wed, Fri]),
            ("0 3 * * ?", &[Sun, Mon, Tue, Wed, Thu, Fri, Sat]),
            // The 6-field form reads day-of-week numbers the crontab way too.
            ("0 0 3 * * 1", &[Mon]),
            ("30 0 3 * * 0", &[Sun]),
            ("0 0 3 * * 7", &[Sun]),
            ("0 0 3 * * 1-5", &[Mon, Tue, Wed, Thu, Fri]),
            ("@weekly", &[Sun]),
        ];
        for (expr, want) in cases {
            assert_eq!(weekdays(expr), days(want), "{expr}");
        }
    }

    #[test]
    fn monday_is_monday_at_the_exact_instant() {
        // 2026-03-04 is a Wednesday; the next Monday is the 9th.
        let after = utc("2026-03-04T12:00:00Z");
        for expr in ["0 3 * * 1", "0 0 3 * * 1", "0 3 * * MON"] {
            let next = cron(expr, UTC).next_after(after);
            assert_eq!(next, Some(utc("2026-03-09T03:00:00Z")), "{expr}");
        }
    }

    /// Pins what the crate does, so a change in it shows up here: Sunday is 1, and day of
    /// month and day of week must both match.
    #[test]
    fn cron_crate_behaviour_this_module_works_around() {
        let start = Utc.with_ymd_and_hms(2026, 3, 4, 12, 0, 0).unwrap();
        let sunday_is_one = cron::Schedule::from_str("0 0 3 * * 1").unwrap();
        let next = sunday_is_one.after(&start).next().unwrap();
        assert_eq!(next.weekday(), Weekday::Sun);
        // 1st of the month AND a Monday: 2026-06-01 is the first such day after March 4.
        let both = cron::Schedule::from_str("0 0 0 1 * 2").unwrap();
        assert_eq!(both.after(&start).next(), Some(utc("2026-06-01T00:00:00Z")));
        assert!(
            cron::Schedule::from_str("0 3 * * 1").is_err(),
            "the crate refuses 5 fields"
        );

        // Iterating in a zone, 02:30 daily skips Berlin's spring-forward day and fires twice on
        // its fall-back day.
        let daily = cron::Schedule::from_str("0 30 2 * * *").unwrap();
        let spring = daily.after(&Berlin.with_ymd_and_hms(2026, 3, 28, 12, 0, 0).unwrap());
        let spring: Vec<_> = spring
            .take(2)
            .map(|t| t.with_timezone(&Utc).to_rfc3339())
            .collect();
        assert_eq!(
            spring,
            ["2026-03-30T00:30:00+00:00", "2026-03-31T00:30:00+00:00"]
        );
        let fall = daily.after(&Berlin.with_ymd_and_hms(2026, 10, 24, 12, 0, 0).unwrap());
        let fall: Vec<_> = fall
            .take(2)
            .map(|t| t.with_timezone(&Utc).to_rfc3339())
            .collect();
        assert_eq!(
            fall,
            ["2026-10-25T00:30:00+00:00", "2026-10-25T01:30:00+00:00"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_as_in_crontab() {
        let after = utc("2026-03-25T12:00:00Z");
        let cases: &[(&str, &[&str])] = &[
            // Both restricted: the 1st of the month OR a Monday (2026-03-30, 04-06 are Mondays).
            (
                "0 0 1 * 1",
                &[
                    "2026-03-30T00:00:00+00:00",
                    "2026-04-01T00:00:00+00:00",
                    "2026-04-06T00:00:00+00:00",
                ],
            ),
            // Friday the 13th is not an AND either: every 13th and every Friday.
            (
                "0 0 13 * 5",
                &[
                    "2026-03-27T00:00:00+00:00",
                    "2026-04-03T00:00:00+00:00",
                    "2026-04-10T00:00:00+00:00",
                ],
            ),
            (
                "0 0 1 * *",
                &[
                    "2026-04-01T00:00:00+00:00",
                    "2026-05-01T00:00:00+00:00",
                    "2026-06-01T00:00:00+00:00",
                ],
            ),
            (
                "0 0 * * 1",
                &[
                    "2026-03-30T00:00:00+00:00",
                    "2026-04-06T00:00:00+00:00",
                    "2026-04-13T00:00:00+00:00",
                ],
            ),
            // cronie: a day field starting with `*` does not count as restricted, so this is an
            // AND: Mondays that are the 1st, 11th, 21st or 31st.
            (
                "0 0 */10 * 1",
                &[
                    "2026-05-11T00:00:00+00:00",
                    "2026-06-01T00:00:00+00:00",
                    "2026-08-31T00:00:00+00:00",
                ],
            ),
            // The 31st of a 30-day month never comes, but Mondays do.
            (
                "0 0 31 4 1",
                &[
                    "2026-04-06T00:00:00+00:00",
                    "2026-04-13T00:00:00+00:00",
                    "2026-04-20T00:00:00+00:00",
                ],
            ),
        ];
        for (expr, want) in cases {
            assert_eq!(rfc(&cron(expr, UTC).upcoming(after, 3)), *want, "{expr}");
        }
        // Sanity for the AND row: all three are Mondays.
        for day in [
            "2026-05-11T00:00:00Z",
            "2026-06-01T00:00:00Z",
            "2026-08-31T00:00:00Z",
        ] {
            assert_eq!(utc(day).weekday(), Weekday::Mon, "{day}");
        }
    }

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

    #[test]
    fn seconds_field() {
        let cases: &[(&str, &str, &[&str])] = &[
            (
                "30 15 10 * * *",
                "2026-03-04T12:00:00Z",
                &["2026-03-05T10:15:30+00:00", "2026-03-06T10:15:30+00:00"],
            ),
            (
                "*/20 * * * * *",
                "2026-03-04T12:00:05Z",
                &[
                    "2026-03-04T12:00:20+00:00",
                    "2026-03-04T12:00:40+00:00",
                    "2026-03-04T12:01:00+00:00",
                ],
            ),
            (
                "0 0 3 1 JAN,jul *",
                "2026-03-04T12:00:00Z",
                &["2026-07-01T03:00:00+00:00", "2027-01-01T03:00:00+00:00"],
            ),
        ];
        for (expr, after, want) in cases {
            assert_eq!(
                rfc(&cron(expr, UTC).upcoming(utc(after), want.len())),
                *want,
                "{expr}"
            );
        }
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
        assert_eq!(schedule.describe(), "every 30days");
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
                "the interval 584542046090years 7months 15days 17h 5m 3s is too long to schedule",
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

    #[test]
    fn errors_say_what_is_wrong() {
        let cases: &[(&str, &str)] = &[
            ("", "the cron expression is empty"),
            ("   ", "the cron expression is empty"),
            (
                "* * * *",
                "expected 5 fields (crontab) or 6 (with seconds), found 4",
            ),
            (
                "*",
                "expected 5 fields (crontab) or 6 (with seconds), found 1",
            ),
            (
                "0 0 0 1 1 * 2030",
                "expected 5 fields (crontab) or 6 (with seconds), found 7: a year field is not supported",
            ),
            (
                "0 0 0 1 1 * * *",
                "expected 5 fields (crontab) or 6 (with seconds), found 8",
            ),
            ("0 25 * * *", "hour value 25 is out of range 0-23"),
            ("60 * * * *", "minute value 60 is out of range 0-59"),
            ("61 0 3 * * *", "second value 61 is out of range 0-59"),
            ("0 3 0 * *", "day-of-month value 0 is out of range 1-31"),
            ("0 3 32 * *", "day-of-month value 32 is out of range 1-31"),
            ("0 3 * 13 *", "month value 13 is out of range 1-12"),
            ("0 3 * 0 *", "month value 0 is out of range 1-12"),
            ("0 3 * * 9", "day-of-week value 9 is out of range 0-7"),
            ("0 3 * * 1-99", "day-of-week value 99 is out of range 0-7"),
            ("0 3 * * 1,8", "day-of-week value 8 is out of range 0-7"),
            (
                "99999999999 * * * *",
                "minute value 99999999999 is out of range 0-59",
            ),
            ("*/0 * * * *", "minute step 0 is out of range 1-59"),
            ("0 */24 * * *", "hour step 24 is out of range 1-23"),
            ("0 3 * * */8", "day-of-week step 8 is out of range 1-7"),
            (
                "0 5-3 * * *",
                "hour range 5-3 runs backwards (a range cannot wrap; use a list such as 22-23,0-2)",
            ),
            (
                "0 3 * * FRI-MON",
                "day-of-week range FRI-MON runs backwards (a range cannot wrap; use a list such as 22-23,0-2)",
            ),
            (
                "0 3 * * FUNDAY",
                "day-of-week name \"FUNDAY\" is not a day (SUN-SAT)",
            ),
            ("0 3 * FOO *", "month name \"FOO\" is not a month (JAN-DEC)"),
            (
                "abc * * * *",
                "minute field \"abc\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "1,,2 * * * *",
                "minute field \"1,,2\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "0 1- * * *",
                "hour field \"1-\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "*/ * * * *",
                "minute field \"*/\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "0 MON * * *",
                "hour field \"MON\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "? * * * *",
                "minute field \"?\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "0 3 * * 1-2-3",
                "day-of-week field \"1-2-3\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "0 3 * * 1/2/3",
                "day-of-week field \"1/2/3\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "0 3 * * -1",
                "day-of-week field \"-1\" is not a number, a range (1-5), a step (*/15) or a comma-separated list of them",
            ),
            (
                "0 0 30 2 *",
                "the schedule never comes due: none of the selected months has a day 30",
            ),
            (
                "0 0 31 4,6 *",
                "the schedule never comes due: none of the selected months has a day 31",
            ),
            (
                "@reboot",
                "@reboot is not a schedule: use `run --once` to rotate at start",
            ),
            (
                "@fortnightly",
                "\"@fortnightly\" is not a known shorthand (@yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly)",
            ),
        ];
        for (expr, want) in cases {
            let err = Schedule::cron(expr, UTC).unwrap_err();
            assert_eq!(err.to_string(), *want, "{expr:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let inputs = [
            "@",
            "-",
            "/",
            ",",
            "*/",
            "-/-",
            "∞ * * * *",
            "0 3 * * ∞",
            "\u{0} * * * *",
            "1-/2 * * * *",
            "*/-1 * * * *",
            "0 3 * * 7-0",
            "0 3 * * SUN-",
            "0 3 * * /2",
            "0 0 29 2 *",
            "0 0 31 * *",
            "0 3 L * *",
            "0 3 * * 5#3",
            "0 3 ? ? ?",
        ];
        for input in inputs {
            if let Ok(schedule) = Schedule::cron(input, Berlin) {
                let _ = schedule.upcoming(utc("2026-01-01T00:00:00Z"), 3);
                let _ = schedule.min_gap(utc("2026-01-01T00:00:00Z"));
            }
        }
        // Feb 29 exists in leap years; that is a schedule, not an error.
        let leap = cron("0 0 29 2 *", UTC);
        assert_eq!(
            leap.next_after(utc("2026-01-01T00:00:00Z")),
            Some(utc("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn no_due_times_past_the_crates_last_year() {
        let schedule = cron("0 3 * * *", UTC);
        assert_eq!(schedule.next_after(utc("2101-01-01T00:00:00Z")), None);
        assert_eq!(schedule.next_after(utc("9999-12-31T23:59:59Z")), None);
        assert_eq!(
            schedule.next_after(utc("1900-01-01T00:00:00Z")),
            Some(utc("1970-01-01T03:00:00Z"))
        );
        assert!(schedule.upcoming(utc("2100-12-30T00:00:00Z"), 5).len() == 2);
        assert_eq!(schedule.min_gap(utc("2101-01-01T00:00:00Z")), None);
    }
}
