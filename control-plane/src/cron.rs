//! Cron schedules for CronJobs: parsing `spec.schedule`, resolving `spec.timeZone`, and
//! computing firing times, with the semantics Kubernetes users know from Vixie cron.
//!
//! Syntax: five fields, `minute hour day-of-month month day-of-week`, each `*`, `?` (same as
//! `*`), a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (`a` through the field's
//! maximum), or a comma list of those. Months may be written `JAN`-`DEC` and days of week
//! `SUN`-`SAT` (any case); day-of-week 0 and 7 are both Sunday. The macros `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight` and `@hourly` are accepted.
//! A `TZ=`/`CRON_TZ=` prefix is rejected, as Kubernetes does: the zone belongs in
//! `spec.timeZone`.
//!
//! Skiff extension: an optional leading seconds field (six fields,
//! `second minute hour day-of-month month day-of-week`) for fast schedules; with five fields
//! the second is 0.
//!
//! Days follow Vixie cron: when both day fields are restricted (neither starts with `*` or
//! `?`), a day matches if either matches; otherwise both must (so the `*` one matches all).
//!
//! Firing times are wall-clock times in the schedule's zone. A wall time that does not exist
//! (skipped by a spring-forward transition) does not fire; a wall time that occurs twice
//! (fall-back) fires once, at its earlier instant.
//!
//! Time zones come from jiff's IANA database (the system's `/usr/share/zoneinfo`). On a
//! machine without one, only the UTC names work (see [`parse_time_zone`]).

use std::str::FromStr;

use jiff::civil::{Date, DateTime};
use jiff::tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase};
use jiff::Timestamp;

/// How many wall-clock years past `after` [`Schedule::next_after`] searches. Eight, because
/// consecutive leap years can be that far apart (2096, then 2104), so `0 0 29 2 *` is always
/// found; a schedule that can never fire (`0 0 30 2 *`) gives up after that.
const HORIZON_YEARS: i16 = 8;

const MONTH_NAMES: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const DAY_NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// Names that mean UTC; they work even when no time zone database is installed.
const UTC_NAMES: [&str; 10] = [
    "UTC",
    "Etc/UTC",
    "UCT",
    "Etc/UCT",
    "Universal",
    "Etc/Universal",
    "Zulu",
    "Etc/Zulu",
    "GMT",
    "Etc/GMT",
];

/// One field of a schedule, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Second,
    Minute,
    Hour,
    DayOfMonth,
    Month,
    DayOfWeek,
}

impl Field {
    fn name(self) -> &'static str {
        match self {
            Field::Second => "second",
            Field::Minute => "minute",
            Field::Hour => "hour",
            Field::DayOfMonth => "day-of-month",
            Field::Month => "month",
            Field::DayOfWeek => "day-of-week",
        }
    }

    /// The values `*` stands for (and the end of `a/n`).
    fn span(self) -> (u32, u32) {
        match self {
            Field::Second | Field::Minute => (0, 59),
            Field::Hour => (0, 23),
            Field::DayOfMonth => (1, 31),
            Field::Month => (1, 12),
            Field::DayOfWeek => (0, 6),
        }
    }

    /// The largest value that may be written: 7 is Sunday again in day-of-week.
    fn limit(self) -> u32 {
        match self {
            Field::DayOfWeek => 7,
            _ => self.span().1,
        }
    }

    /// Names usable in place of numbers, and the value of the first name.
    fn names(self) -> (&'static [&'static str], u32) {
        match self {
            Field::Month => (&MONTH_NAMES, 1),
            Field::DayOfWeek => (&DAY_NAMES, 0),
            _ => (&[], 0),
        }
    }

    fn expected(self) -> &'static str {
        match self {
            Field::Month => "a number or month name (JAN-DEC)",
            Field::DayOfWeek => "a number or day name (SUN-SAT)",
            _ => "a number",
        }
    }
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with one field of a schedule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldProblem {
    #[error("empty list item")]
    EmptyItem,
    #[error("malformed item {0:?}")]
    Malformed(String),
    #[error("{value:?} is not {expected}")]
    Invalid {
        value: String,
        expected: &'static str,
    },
    #[error("value {value} is out of range {min}-{max}")]
    OutOfRange { value: String, min: u32, max: u32 },
    #[error("range {0:?} is reversed")]
    Reversed(String),
    #[error("step {0:?} is not a positive number")]
    BadStep(String),
}

/// Why a schedule or time zone was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    #[error("schedule is empty")]
    Empty,
    #[error("expected 5 fields (or 6 with seconds), got {0}")]
    FieldCount(usize),
    #[error(
        "unknown macro {0:?}; expected @yearly, @annually, @monthly, @weekly, @daily, \
         @midnight or @hourly"
    )]
    UnknownMacro(String),
    #[error("{0:?} is not allowed in the schedule; set spec.timeZone instead")]
    TimeZoneInSchedule(String),
    #[error("{field} field {text:?}: {problem}")]
    Field {
        field: Field,
        text: String,
        problem: FieldProblem,
    },
    #[error("time zone {name:?}: {reason}")]
    TimeZone { name: String, reason: String },
}

/// A parsed cron schedule: the set of matching values of each field, as bit sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days_of_month: u64,
    months: u64,
    /// Bits 0 (Sunday) to 6; a written 7 is folded into bit 0.
    days_of_week: u64,
    /// The day-of-month field starts with `*` or `?` (Vixie's rule for combining day fields).
    day_of_month_star: bool,
    day_of_week_star: bool,
}

/// Firing times missed in an interval; see [`Schedule::missed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed {
    /// The latest firing time in the interval (exact even when `capped`).
    pub latest: Option<Timestamp>,
    /// How many firing times the interval holds, counting no further than the cap.
    pub count: usize,
    /// The interval holds more than the cap (Kubernetes: "too many missed start times").
    pub capped: bool,
}

/// Parses a schedule: five fields, six with a leading seconds field, or a macro.
pub fn parse(text: &str) -> Result<Schedule, CronError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(CronError::Empty);
    }
    let fields: Vec<&str> = text.split_whitespace().collect();
    if let Some(tz) = fields.iter().find(|f| {
        let upper = f.to_ascii_uppercase();
        upper.starts_with("TZ=") || upper.starts_with("CRON_TZ=")
    }) {
        return Err(CronError::TimeZoneInSchedule((*tz).to_string()));
    }
    if text.starts_with('@') {
        let expansion = match text.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 0 1 1 *",
            "@monthly" => "0 0 0 1 * *",
            "@weekly" => "0 0 0 * * 0",
            "@daily" | "@midnight" => "0 0 0 * * *",
            "@hourly" => "0 0 * * * *",
            _ => return Err(CronError::UnknownMacro(text.to_string())),
        };
        return parse(expansion);
    }
    let (second, minute, hour, dom, month, dow) = match fields[..] {
        [minute, hour, dom, month, dow] => ("0", minute, hour, dom, month, dow),
        [second, minute, hour, dom, month, dow] => (second, minute, hour, dom, month, dow),
        _ => return Err(CronError::FieldCount(fields.len())),
    };
    let days_of_week = parse_field(dow, Field::DayOfWeek)?;
    Ok(Schedule {
        seconds: parse_field(second, Field::Second)?,
        minutes: parse_field(minute, Field::Minute)?,
        hours: parse_field(hour, Field::Hour)?,
        days_of_month: parse_field(dom, Field::DayOfMonth)?,
        months: parse_field(month, Field::Month)?,
        days_of_week: (days_of_week | days_of_week >> 7) & 0x7f,
        day_of_month_star: is_star(dom),
        day_of_week_star: is_star(dow),
    })
}

impl FromStr for Schedule {
    type Err = CronError;

    fn from_str(text: &str) -> Result<Schedule, CronError> {
        parse(text)
    }
}

/// Resolves a CronJob's `spec.timeZone` (an IANA name such as `Europe/Berlin`, looked up
/// without regard to case). Whether an absent or empty value means UTC is the caller's
/// decision; an empty name is an error here, as is `Local`, which Kubernetes also refuses.
///
/// Names come from the system tz database found by jiff (`/usr/share/zoneinfo`, or `TZDIR`).
/// The UTC names (`UTC`, `Etc/UTC`, `GMT`, ...) resolve even when no database is installed.
pub fn parse_time_zone(name: &str) -> Result<TimeZone, CronError> {
    lookup_time_zone(jiff::tz::db(), name)
}

fn lookup_time_zone(db: &TimeZoneDatabase, name: &str) -> Result<TimeZone, CronError> {
    let error = |reason: &str| CronError::TimeZone {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    if name.is_empty() {
        return Err(error("name is empty"));
    }
    if name.eq_ignore_ascii_case("Local") {
        return Err(error("must be an explicit IANA time zone name"));
    }
    match db.get(name) {
        Ok(tz) => Ok(tz),
        Err(_) if UTC_NAMES.iter().any(|n| n.eq_ignore_ascii_case(name)) => Ok(TimeZone::UTC),
        Err(_) if db.is_definitively_empty() => Err(error(
            "no time zone database is installed (only UTC is available)",
        )),
        Err(_) => Err(error("not found in the IANA time zone database")),
    }
}

impl Schedule {
    /// Whether it may fire more than once a minute (a seconds field other than `0`).
    pub fn sub_minute(&self) -> bool {
        self.seconds != 1
    }

    /// The first firing time strictly after `after`, reading the schedule as wall-clock time
    /// in `tz`. None if there is none within eight calendar years (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let start = tz.to_datetime(after);
        let last_year = start.year().checked_add(HORIZON_YEARS)?;
        let mut cursor = Wall::of(start);
        cursor.next_second();
        loop {
            let wall = self.next_wall(cursor, last_year)?;
            let dt = wall.to_datetime()?;
            let offset = match tz.to_ambiguous_timestamp(dt).offset() {
                AmbiguousOffset::Unambiguous { offset } => Some(offset),
                // Skipped by a spring-forward transition: this wall time never happens.
                AmbiguousOffset::Gap { .. } => None,
                // Repeated by a fall-back transition: fire at the first occurrence only.
                AmbiguousOffset::Fold { before, .. } => Some(before),
            };
            if let Some(ts) = offset.and_then(|o| o.to_timestamp(dt).ok()) {
                // Past the fold's first occurrence, its wall times have already fired.
                if ts > after {
                    return Some(ts);
                }
            }
            cursor = wall;
            cursor.next_second();
        }
    }

    /// The firing times in `(earliest, now]`: the latest, and how many (counting stops at
    /// `cap`, with `capped` set when there are more). The CronJob controller starts only the
    /// latest; Kubernetes gives up on a CronJob with more than 100 missed start times.
    pub fn missed(&self, earliest: Timestamp, now: Timestamp, tz: &TimeZone, cap: usize) -> Missed {
        let mut missed = Missed {
            latest: None,
            count: 0,
            capped: false,
        };
        let mut cursor = earliest;
        while let Some(next) = self.next_after(cursor, tz).filter(|t| *t <= now) {
            if missed.count == cap {
                missed.capped = true;
                missed.latest = Some(self.latest_in(cursor, now, tz).unwrap_or(next));
                break;
            }
            missed.count += 1;
            missed.latest = Some(next);
            cursor = next;
        }
        missed
    }

    /// The latest firing time in `(lo, hi]`, given that there is at least one. Bisects on
    /// "the next firing after t is at or before hi" (true at lo, false at hi) down to one
    /// second; firing times are whole seconds, so the next after the final lo is the last.
    fn latest_in(&self, lo: Timestamp, hi: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let (mut lo_ns, mut hi_ns) = (lo.as_nanosecond(), hi.as_nanosecond());
        while hi_ns - lo_ns > 1_000_000_000 {
            let mid_ns = lo_ns + (hi_ns - lo_ns) / 2;
            let mid = Timestamp::from_nanosecond(mid_ns).ok()?;
            if self.next_after(mid, tz).is_some_and(|t| t <= hi) {
                lo_ns = mid_ns;
            } else {
                hi_ns = mid_ns;
            }
        }
        let lo = Timestamp::from_nanosecond(lo_ns).ok()?;
        self.next_after(lo, tz).filter(|t| *t <= hi)
    }

    /// The first matching wall-clock time at or after `w`, skipping whole months, days, hours
    /// and minutes that cannot match.
    fn next_wall(&self, mut w: Wall, last_year: i16) -> Option<Wall> {
        loop {
            if w.year > last_year {
                return None;
            }
            match next_bit(self.months, w.month) {
                None => {
                    w.month = 12;
                    w.next_month();
                    continue;
                }
                Some(m) if m != w.month => {
                    w.month = m;
                    w.day = 1;
                    w.hour = 0;
                    w.minute = 0;
                    w.second = 0;
                }
                Some(_) => {}
            }
            let weekday = Date::new(w.year, w.month, w.day)
                .ok()?
                .weekday()
                .to_sunday_zero_offset();
            let day = (w.day..=days_in_month(w.year, w.month))
                .find(|&d| self.day_matches(d, (weekday + d - w.day) % 7));
            match day {
                None => {
                    w.next_month();
                    continue;
                }
                Some(d) if d != w.day => {
                    w.day = d;
                    w.hour = 0;
                    w.minute = 0;
                    w.second = 0;
                }
                Some(_) => {}
            }
            match next_bit(self.hours, w.hour) {
                None => {
                    w.next_day();
                    continue;
                }
                Some(h) if h != w.hour => {
                    w.hour = h;
                    w.minute = 0;
                    w.second = 0;
                }
                Some(_) => {}
            }
            match next_bit(self.minutes, w.minute) {
                None => {
                    w.next_hour();
                    continue;
                }
                Some(m) if m != w.minute => {
                    w.minute = m;
                    w.second = 0;
                }
                Some(_) => {}
            }
            match next_bit(self.seconds, w.second) {
                None => {
                    w.next_minute();
                    continue;
                }
                Some(s) => w.second = s,
            }
            return Some(w);
        }
    }

    /// Vixie's rule: with both day fields restricted either may match; otherwise both must.
    fn day_matches(&self, day: i8, weekday: i8) -> bool {
        let dom = self.days_of_month & (1 << day) != 0;
        let dow = self.days_of_week & (1 << weekday) != 0;
        if self.day_of_month_star || self.day_of_week_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

/// A wall-clock time to the second, as plain numbers the search can step freely.
#[derive(Debug, Clone, Copy)]
struct Wall {
    year: i16,
    month: i8,
    day: i8,
    hour: i8,
    minute: i8,
    second: i8,
}

impl Wall {
    fn of(dt: DateTime) -> Wall {
        Wall {
            year: dt.year(),
            month: dt.month(),
            day: dt.day(),
            hour: dt.hour(),
            minute: dt.minute(),
            second: dt.second(),
        }
    }

    fn to_datetime(self) -> Option<DateTime> {
        let Wall {
            year,
            month,
            day,
            hour,
            minute,
            second,
        } = self;
        DateTime::new(year, month, day, hour, minute, second, 0).ok()
    }

    fn next_month(&mut self) {
        if self.month >= 12 {
            self.year = self.year.saturating_add(1);
            self.month = 1;
        } else {
            self.month += 1;
        }
        self.day = 1;
        self.hour = 0;
        self.minute = 0;
        self.second = 0;
    }

    fn next_day(&mut self) {
        if self.day >= days_in_month(self.year, self.month) {
            self.next_month();
        } else {
            self.day += 1;
            self.hour = 0;
            self.minute = 0;
            self.second = 0;
        }
    }

    fn next_hour(&mut self) {
        if self.hour >= 23 {
            self.next_day();
        } else {
            self.hour += 1;
            self.minute = 0;
            self.second = 0;
        }
    }

    fn next_minute(&mut self) {
        if self.minute >= 59 {
            self.next_hour();
        } else {
            self.minute += 1;
            self.second = 0;
        }
    }

    fn next_second(&mut self) {
        if self.second >= 59 {
            self.next_minute();
        } else {
            self.second += 1;
        }
    }
}

fn days_in_month(year: i16, month: i8) -> i8 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// The smallest set bit of `mask` at or above `from`.
fn next_bit(mask: u64, from: i8) -> Option<i8> {
    let from = u32::try_from(from).ok().filter(|f| *f < 64)?;
    let rest = mask >> from;
    (rest != 0).then(|| (from + rest.trailing_zeros()) as i8)
}

fn is_star(field: &str) -> bool {
    field.starts_with('*') || field.starts_with('?')
}

/// Parses one field (a comma list) into a bit set of its values.
fn parse_field(text: &str, field: Field) -> Result<u64, CronError> {
    text.split(',')
        .try_fold(0, |bits, item| Ok(bits | parse_item(item, field)?))
        .map_err(|problem| CronError::Field {
            field,
            text: text.to_string(),
            problem,
        })
}

/// Parses one list item: `*`, `?`, `a`, `a-b`, each optionally followed by `/step`.
fn parse_item(item: &str, field: Field) -> Result<u64, FieldProblem> {
    if item.is_empty() {
        return Err(FieldProblem::EmptyItem);
    }
    let malformed = || FieldProblem::Malformed(item.to_string());
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(parse_step(step)?)),
        None => (item, None),
    };
    let (min, max) = field.span();
    let (start, end) = if range == "*" || range == "?" {
        (min, max)
    } else if let Some((a, b)) = range.split_once('-') {
        if a.is_empty() || b.is_empty() || b.contains('-') {
            return Err(malformed());
        }
        let (a, b) = (parse_value(a, field)?, parse_value(b, field)?);
        if a > b {
            return Err(FieldProblem::Reversed(range.to_string()));
        }
        (a, b)
    } else if range.is_empty() {
        return Err(malformed());
    } else {
        let a = parse_value(range, field)?;
        // `a/n` runs from a through the field's maximum.
        (a, if step.is_some() { max.max(a) } else { a })
    };
    let step = step.unwrap_or(1);
    Ok((start..=end)
        .step_by(step)
        .fold(0, |bits, value| bits | 1 << value))
}

fn parse_step(text: &str) -> Result<usize, FieldProblem> {
    match text.parse::<usize>() {
        Ok(step) if step > 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(step),
        _ => Err(FieldProblem::BadStep(text.to_string())),
    }
}

/// Parses a number or name and checks it against the field's range.
fn parse_value(text: &str, field: Field) -> Result<u32, FieldProblem> {
    let (min, max) = (field.span().0, field.limit());
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return match text.parse::<u32>() {
            Ok(value) if (min..=max).contains(&value) => Ok(value),
            _ => Err(FieldProblem::OutOfRange {
                value: text.to_string(),
                min,
                max,
            }),
        };
    }
    let (names, first) = field.names();
    match names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
        Some(index) => Ok(first + index as u32),
        None => Err(FieldProblem::Invalid {
            value: text.to_string(),
            expected: field.expected(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().expect("test timestamp")
    }

    fn sched(text: &str) -> Schedule {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(s) => panic!("{text:?} parsed as {s:?}"),
            Err(e) => e.to_string(),
        }
    }

    fn bits(values: &[u32]) -> u64 {
        values.iter().fold(0, |b, v| b | 1 << v)
    }

    /// The next `n` firing times in UTC, as RFC 3339 strings.
    fn next_n(text: &str, after: &str, n: usize) -> Vec<String> {
        let s = sched(text);
        let mut t = ts(after);
        let mut out = Vec::new();
        for _ in 0..n {
            match s.next_after(t, &TimeZone::UTC) {
                Some(next) => {
                    out.push(next.to_string());
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    fn new_york() -> Option<TimeZone> {
        match parse_time_zone("America/New_York") {
            Ok(tz) => Some(tz),
            Err(e) => {
                eprintln!("skipping DST assertions: {e}");
                None
            }
        }
    }

    #[test]
    fn field_syntax() {
        let s = sched("5 * * * *");
        assert_eq!(s.seconds, 1);
        assert_eq!(s.minutes, bits(&[5]));
        assert_eq!(s.hours, bits(&(0..24).collect::<Vec<_>>()));
        assert_eq!(sched("1-4 * * * *").minutes, bits(&[1, 2, 3, 4]));
        assert_eq!(sched("*/20 * * * *").minutes, bits(&[0, 20, 40]));
        assert_eq!(sched("10-30/10 * * * *").minutes, bits(&[10, 20, 30]));
        assert_eq!(sched("50/3 * * * *").minutes, bits(&[50, 53, 56, 59]));
        assert_eq!(
            sched("1,3,5-6,*/30 * * * *").minutes,
            bits(&[0, 1, 3, 5, 6, 30])
        );
        assert_eq!(sched("0 */6 * * *").hours, bits(&[0, 6, 12, 18]));
        assert_eq!(
            sched("0 0 ? * *").days_of_month,
            sched("0 0 * * *").days_of_month
        );
        assert_eq!(sched("0 0 * * ?"), sched("0 0 * * *"));
        assert_eq!(sched("0 0 */10 * *").days_of_month, bits(&[1, 11, 21, 31]));
        assert_eq!(sched("059 * * * *").minutes, bits(&[59]));
        assert_eq!(sched("  0\t0  *  * *  "), sched("0 0 * * *"));
        assert_eq!(sched("0 0 * * */2").days_of_week, bits(&[0, 2, 4, 6]));
        assert_eq!(sched("0 0 * * 1/2").days_of_week, bits(&[1, 3, 5]));
    }

    #[test]
    fn names_and_sunday() {
        assert_eq!(sched("0 0 * jan-MAR,Dec *").months, bits(&[1, 2, 3, 12]));
        assert_eq!(
            sched("0 0 * * mon-FRI").days_of_week,
            bits(&[1, 2, 3, 4, 5])
        );
        assert_eq!(sched("0 0 * * SUN"), sched("0 0 * * 0"));
        assert_eq!(sched("0 0 * * 7"), sched("0 0 * * 0"));
        assert_eq!(sched("0 0 * * 5-7").days_of_week, bits(&[0, 5, 6]));
        assert_eq!(
            sched("0 0 * * 0-7").days_of_week,
            bits(&[0, 1, 2, 3, 4, 5, 6])
        );
        assert_eq!(sched("0 0 * JAN/3 *").months, bits(&[1, 4, 7, 10]));
        assert_eq!(sched("0 0 * * 7/2").days_of_week, bits(&[0]));
    }

    #[test]
    fn macros() {
        assert_eq!(sched("@yearly"), sched("0 0 1 1 *"));
        assert_eq!(sched("@ANNUALLY"), sched("0 0 1 1 *"));
        assert_eq!(sched("@monthly"), sched("0 0 1 * *"));
        assert_eq!(sched("@weekly"), sched("0 0 * * 0"));
        assert_eq!(sched("@daily"), sched("0 0 * * *"));
        assert_eq!(sched(" @Midnight "), sched("0 0 * * *"));
        assert_eq!(sched("@hourly"), sched("0 * * * *"));
        assert_eq!(
            next_n("@hourly", "2024-12-31T22:59:59Z", 3),
            [
                "2024-12-31T23:00:00Z",
                "2025-01-01T00:00:00Z",
                "2025-01-01T01:00:00Z"
            ]
        );
    }

    #[test]
    fn error_messages() {
        let cases = [
            ("", "schedule is empty"),
            ("   ", "schedule is empty"),
            ("* * *", "expected 5 fields (or 6 with seconds), got 3"),
            (
                "* * * * * * *",
                "expected 5 fields (or 6 with seconds), got 7",
            ),
            (
                "61 * * * *",
                r#"minute field "61": value 61 is out of range 0-59"#,
            ),
            (
                "0 24 * * *",
                r#"hour field "24": value 24 is out of range 0-23"#,
            ),
            (
                "0 0 0 * *",
                r#"day-of-month field "0": value 0 is out of range 1-31"#,
            ),
            (
                "0 0 * 13 *",
                r#"month field "13": value 13 is out of range 1-12"#,
            ),
            (
                "0 0 * * 8",
                r#"day-of-week field "8": value 8 is out of range 0-7"#,
            ),
            (
                "60 0 0 * * *",
                r#"second field "60": value 60 is out of range 0-59"#,
            ),
            (
                "0 0 * * MON-",
                r#"day-of-week field "MON-": malformed item "MON-""#,
            ),
            ("-1 * * * *", r#"minute field "-1": malformed item "-1""#),
            (
                "1-2-3 * * * *",
                r#"minute field "1-2-3": malformed item "1-2-3""#,
            ),
            ("/5 * * * *", r#"minute field "/5": malformed item "/5""#),
            (
                "5-1 * * * *",
                r#"minute field "5-1": range "5-1" is reversed"#,
            ),
            (
                "0 0 * * FRI-MON",
                r#"day-of-week field "FRI-MON": range "FRI-MON" is reversed"#,
            ),
            (
                "*/0 * * * *",
                r#"minute field "*/0": step "0" is not a positive number"#,
            ),
            (
                "*/ * * * *",
                r#"minute field "*/": step "" is not a positive number"#,
            ),
            (
                "*/+2 * * * *",
                r#"minute field "*/+2": step "+2" is not a positive number"#,
            ),
            ("1,,2 * * * *", r#"minute field "1,,2": empty list item"#),
            ("1, * * * *", r#"minute field "1,": empty list item"#),
            ("x * * * *", r#"minute field "x": "x" is not a number"#),
            (
                "MON * * * *",
                r#"minute field "MON": "MON" is not a number"#,
            ),
            (
                "0 0 * FOO *",
                r#"month field "FOO": "FOO" is not a number or month name (JAN-DEC)"#,
            ),
            (
                "0 0 * * MONDAY",
                r#"day-of-week field "MONDAY": "MONDAY" is not a number or day name (SUN-SAT)"#,
            ),
            (
                "99999999999 * * * *",
                r#"minute field "99999999999": value 99999999999 is out of range 0-59"#,
            ),
            (
                "@reboot",
                "unknown macro \"@reboot\"; expected @yearly, @annually, @monthly, @weekly, \
                 @daily, @midnight or @hourly",
            ),
            (
                "CRON_TZ=UTC 0 0 * * *",
                r#""CRON_TZ=UTC" is not allowed in the schedule; set spec.timeZone instead"#,
            ),
            (
                "TZ=Europe/Berlin 0 0 * * *",
                r#""TZ=Europe/Berlin" is not allowed in the schedule; set spec.timeZone instead"#,
            ),
        ];
        for (text, want) in cases {
            assert_eq!(err(text), want, "schedule {text:?}");
        }
        assert!(matches!(
            parse("0 0 * * 8"),
            Err(CronError::Field {
                field: Field::DayOfWeek,
                problem: FieldProblem::OutOfRange { min: 0, max: 7, .. },
                ..
            })
        ));
        assert!("@every 5m".parse::<Schedule>().is_err());
    }

    #[test]
    fn next_after_crosses_month_and_year_ends() {
        assert_eq!(
            next_n("30 23 * * *", "2024-12-31T23:30:00Z", 2),
            ["2025-01-01T23:30:00Z", "2025-01-02T23:30:00Z"]
        );
        assert_eq!(
            next_n("0 12 31 * *", "2024-01-31T12:00:00Z", 3),
            [
                "2024-03-31T12:00:00Z",
                "2024-05-31T12:00:00Z",
                "2024-07-31T12:00:00Z"
            ]
        );
        assert_eq!(
            next_n("@yearly", "2024-06-01T00:00:00Z", 2),
            ["2025-01-01T00:00:00Z", "2026-01-01T00:00:00Z"]
        );
        assert_eq!(
            next_n("*/15 * * * *", "2024-02-29T23:50:00.5Z", 2),
            ["2024-03-01T00:00:00Z", "2024-03-01T00:15:00Z"]
        );
        // Strictly after: an exact firing time is not returned again.
        assert_eq!(
            next_n("0 * * * *", "2024-05-01T10:00:00Z", 1),
            ["2024-05-01T11:00:00Z"]
        );
        assert_eq!(
            next_n("0 9 * * MON-FRI", "2024-05-03T09:00:00Z", 2),
            ["2024-05-06T09:00:00Z", "2024-05-07T09:00:00Z"]
        );
    }

    #[test]
    fn leap_day() {
        assert_eq!(
            next_n("0 0 29 2 *", "2023-01-01T00:00:00Z", 3),
            [
                "2024-02-29T00:00:00Z",
                "2028-02-29T00:00:00Z",
                "2032-02-29T00:00:00Z"
            ]
        );
        // 2100 is not a leap year: eight years between leap days.
        assert_eq!(
            next_n("0 0 29 2 *", "2096-03-01T00:00:00Z", 1),
            ["2104-02-29T00:00:00Z"]
        );
    }

    #[test]
    fn day_of_month_or_day_of_week() {
        // Both restricted: the 1st of the month OR any Monday.
        assert_eq!(
            next_n("0 0 1 * MON", "2024-04-25T00:00:00Z", 4),
            [
                "2024-04-29T00:00:00Z",
                "2024-05-01T00:00:00Z",
                "2024-05-06T00:00:00Z",
                "2024-05-13T00:00:00Z"
            ]
        );
        // One is `*` (or starts with it): only the other restricts.
        assert_eq!(
            next_n("0 0 * * MON", "2024-04-25T00:00:00Z", 2),
            ["2024-04-29T00:00:00Z", "2024-05-06T00:00:00Z"]
        );
        assert_eq!(
            next_n("0 0 13 * ?", "2024-04-25T00:00:00Z", 1),
            ["2024-05-13T00:00:00Z"]
        );
        // Vixie: `*/2` starts with `*`, so both must match (odd days that are Mondays).
        assert_eq!(
            next_n("0 0 */2 * MON", "2024-04-25T00:00:00Z", 3),
            [
                "2024-04-29T00:00:00Z",
                "2024-05-13T00:00:00Z",
                "2024-05-27T00:00:00Z"
            ]
        );
    }

    #[test]
    fn seconds_extension() {
        assert_eq!(
            next_n("*/2 * * * * *", "2024-01-01T00:00:57Z", 3),
            [
                "2024-01-01T00:00:58Z",
                "2024-01-01T00:01:00Z",
                "2024-01-01T00:01:02Z"
            ]
        );
        assert_eq!(
            next_n("30 0 0 * * *", "2024-01-01T00:00:00Z", 1),
            ["2024-01-01T00:00:30Z"]
        );
    }

    #[test]
    fn impossible_schedules_never_fire() {
        let after = ts("2024-01-01T00:00:00Z");
        for text in ["0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 FEB *"] {
            assert_eq!(
                sched(text).next_after(after, &TimeZone::UTC),
                None,
                "{text}"
            );
        }
        // Near the end of representable time there is simply nothing more.
        assert_eq!(
            sched("* * * * *").next_after(Timestamp::MAX, &TimeZone::UTC),
            None
        );
        assert!(sched("* * * * *")
            .next_after(Timestamp::MIN, &TimeZone::UTC)
            .is_some());
    }

    #[test]
    fn time_zone_wall_clock() {
        let tokyo = match parse_time_zone("Asia/Tokyo") {
            Ok(tz) => tz,
            Err(e) => return eprintln!("skipping: {e}"),
        };
        let next = sched("0 9 * * *").next_after(ts("2024-05-01T00:00:00Z"), &tokyo);
        assert_eq!(next, Some(ts("2024-05-02T00:00:00Z")));
    }

    #[test]
    fn dst_in_new_york() {
        let Some(ny) = new_york() else { return };
        let next = |text: &str, after: &str| sched(text).next_after(ts(after), &ny);
        // 2024-03-10: 02:00 EST jumps to 03:00 EDT; 02:30 does not exist that day.
        assert_eq!(
            next("30 2 * * *", "2024-03-09T12:00:00Z"),
            Some(ts("2024-03-11T06:30:00Z"))
        );
        assert_eq!(
            next("0 * * * *", "2024-03-10T06:30:00Z"),
            Some(ts("2024-03-10T07:00:00Z"))
        );
        // 2024-11-03: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice, fires once.
        assert_eq!(
            next("30 1 * * *", "2024-11-02T12:00:00Z"),
            Some(ts("2024-11-03T05:30:00Z"))
        );
        assert_eq!(
            next("30 1 * * *", "2024-11-03T05:30:00Z"),
            Some(ts("2024-11-04T06:30:00Z"))
        );
        assert_eq!(
            next("0 * * * *", "2024-11-03T05:00:00Z"),
            Some(ts("2024-11-03T07:00:00Z"))
        );
        // From inside the repeated hour's second pass: its wall times already fired.
        assert_eq!(
            next("*/15 * * * *", "2024-11-03T06:10:00Z"),
            Some(ts("2024-11-03T07:00:00Z"))
        );
        let day = sched("0 * * * *").missed(
            ts("2024-11-03T04:00:00Z"),
            ts("2024-11-04T05:00:00Z"),
            &ny,
            100,
        );
        assert_eq!(day.count, 24);
    }

    #[test]
    fn missed_counts_and_caps() {
        let s = sched("*/10 * * * *");
        let utc = TimeZone::UTC;
        let m = s.missed(
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-01T01:00:00Z"),
            &utc,
            100,
        );
        assert_eq!(
            m,
            Missed {
                latest: Some(ts("2024-01-01T01:00:00Z")),
                count: 6,
                capped: false
            }
        );
        let m = s.missed(
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-01T00:59:59Z"),
            &utc,
            5,
        );
        assert_eq!((m.count, m.capped), (5, false));
        let m = s.missed(
            ts("2024-01-01T00:00:00Z"),
            ts("2024-03-01T12:34:56Z"),
            &utc,
            100,
        );
        assert_eq!(
            m,
            Missed {
                latest: Some(ts("2024-03-01T12:30:00Z")),
                count: 100,
                capped: true
            }
        );
        let m = s.missed(
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-01T00:09:59Z"),
            &utc,
            100,
        );
        assert_eq!((m.latest, m.count, m.capped), (None, 0, false));
        let m = s.missed(
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-01T00:30:00Z"),
            &utc,
            0,
        );
        assert_eq!(
            (m.latest, m.count, m.capped),
            (Some(ts("2024-01-01T00:30:00Z")), 0, true)
        );
        // Years of per-second firings are cheap: the latest is found by bisection.
        let m = sched("* * * * * *").missed(
            ts("2020-01-01T00:00:00Z"),
            ts("2024-06-01T12:00:00.7Z"),
            &utc,
            100,
        );
        assert_eq!(
            (m.latest, m.count, m.capped),
            (Some(ts("2024-06-01T12:00:00Z")), 100, true)
        );
    }

    #[test]
    fn time_zone_names() {
        assert_eq!(parse_time_zone("UTC"), Ok(TimeZone::UTC));
        assert!(parse_time_zone("Etc/UTC").is_ok());
        let none = TimeZoneDatabase::none();
        for name in ["UTC", "utc", "Etc/UTC", "GMT", "etc/universal"] {
            assert_eq!(lookup_time_zone(&none, name), Ok(TimeZone::UTC), "{name}");
        }
        assert_eq!(
            lookup_time_zone(&none, "Europe/Berlin").map_err(|e| e.to_string()),
            Err(
                "time zone \"Europe/Berlin\": no time zone database is installed \
                 (only UTC is available)"
                    .to_string()
            )
        );
        assert_eq!(
            parse_time_zone("").map_err(|e| e.to_string()),
            Err(r#"time zone "": name is empty"#.to_string())
        );
        assert_eq!(
            parse_time_zone("Local").map_err(|e| e.to_string()),
            Err(r#"time zone "Local": must be an explicit IANA time zone name"#.to_string())
        );
        assert!(parse_time_zone("Mars/Olympus_Mons").is_err());
        assert!(parse_time_zone("../../etc/passwd").is_err());
        if let Ok(tz) = parse_time_zone("america/new_york") {
            assert_eq!(tz.iana_name(), Some("America/New_York"));
        }
    }

    /// A tiny deterministic generator, so the property tests need no dependencies.
    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }

    #[test]
    fn garbage_never_panics() {
        let pieces = [
            "*",
            "?",
            "/",
            "-",
            ",",
            " ",
            "0",
            "1",
            "7",
            "31",
            "59",
            "60",
            "99999999999999999999",
            "MON",
            "jan",
            "@",
            "@daily",
            "TZ=",
            "x",
            "é",
            "\t",
            "\u{0}",
        ];
        let mut rng = Lcg(42);
        let after = ts("2024-01-01T00:00:00Z");
        for _ in 0..20_000 {
            let len = rng.next(16);
            let text: String = (0..len).map(|_| pieces[rng.next(pieces.len())]).collect();
            if let Ok(s) = parse(&text) {
                if let Some(next) = s.next_after(after, &TimeZone::UTC) {
                    assert!(next > after, "{text:?}");
                }
            }
            let _ = parse_time_zone(&text);
        }
    }

    /// Does this wall time match (checked directly, without the search)?
    fn matches(s: &Schedule, dt: DateTime) -> bool {
        let has = |mask: u64, v: i8| mask & (1 << v) != 0;
        has(s.seconds, dt.second())
            && has(s.minutes, dt.minute())
            && has(s.hours, dt.hour())
            && has(s.months, dt.month())
            && s.day_matches(dt.day(), dt.weekday().to_sunday_zero_offset())
    }

    #[test]
    fn search_agrees_with_brute_force() {
        let choices: [&[&str]; 5] = [
            &["*", "0", "*/7", "5-10", "59", "0,30", "10/20"],
            &["*", "0", "23", "*/5", "9-17", "1,13"],
            &["*", "1", "15", "31", "29", "*/10", "?"],
            &["*", "2", "FEB", "*/3", "6-8", "DEC"],
            &["*", "0", "7", "MON-FRI", "SAT", "?", "*/3"],
        ];
        let mut rng = Lcg(7);
        let start = ts("2023-12-20T13:37:00Z");
        for _ in 0..60 {
            let text = choices
                .iter()
                .map(|c| c[rng.next(c.len())])
                .collect::<Vec<_>>()
                .join(" ");
            let s = sched(&text);
            let mut dt = TimeZone::UTC.to_datetime(start);
            let want = (0..60 * 24 * 75).find_map(|_| {
                dt = dt.checked_add(jiff::SignedDuration::from_secs(60)).ok()?;
                matches(&s, dt).then_some(dt)
            });
            let got = s
                .next_after(start, &TimeZone::UTC)
                .map(|t| TimeZone::UTC.to_datetime(t))
                .filter(|g| *g <= dt);
            assert_eq!(got, want, "{text}");
        }
    }
}
