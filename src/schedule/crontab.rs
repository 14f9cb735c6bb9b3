//! The crontab parser: a cron expression, field by field, into a [`CronRule`] the `cron` crate
//! (0.17) iterates, fixing two things the crate gets wrong for us (its behaviour is pinned by
//! a test below):
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
//!
//! The crate iterates wall-clock times on a UTC clock (no gaps, no folds); [`super::dst`] maps
//! them to instants, by the rule the hour field picks here.

use std::collections::BTreeSet;
use std::str::FromStr;

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeZone, Timelike, Utc};

use super::error::{CronField, ScheduleError};

/// A parsed cron expression: what the crate iterates, and how DST meets it.
#[derive(Debug, Clone)]
pub struct CronRule {
    /// One crate schedule, or two whose union is crontab's "day of month OR day of week". Each
    /// is iterated on a UTC clock that stands for the zone's wall clock.
    pub(super) matchers: Vec<cron::Schedule>,
    /// How wall-clock due times become instants around DST transitions.
    pub(super) dst: DstRule,
}

/// How wall-clock due times become instants around DST transitions, picked from the hour
/// field (all 24 hours: elapsed time); [`super::dst`] applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DstRule {
    /// One run per matching wall-clock time: first occurrence of a repeated one, first instant
    /// after the gap for a missing one.
    WallClock,
    /// Every real instant whose wall clock matches: both passes of a repeated time, none for a
    /// missing one.
    Elapsed,
}

/// The crate knows no year after this; asking it about later times is pointless.
const LAST_YEAR: i32 = 2100;

impl CronRule {
    pub(super) fn parse(expression: &str) -> Result<CronRule, ScheduleError> {
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
    pub(super) fn next_local_after(&self, cursor: NaiveDateTime) -> Option<NaiveDateTime> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::Schedule;
    use crate::schedule::tests::{cron, rfc, utc};
    use chrono::Weekday;
    use chrono_tz::Europe::Berlin;
    use chrono_tz::UTC;

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
