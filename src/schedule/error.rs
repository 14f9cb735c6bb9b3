//! What can be wrong with a schedule, in words that say what and where: [`ScheduleError`], and
//! [`CronField`], the name of the cron field at fault.

use std::fmt;

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
