//! Days as the ledger stores them (integers since 1970-01-01), calendar
//! months (`YYYY-MM`), and date ranges from a query string, validated into a
//! typed error whose message the server returns with its 400.

use chrono::{Datelike, Duration, NaiveDate};

/// 1970-01-01 as a day count from the common era, for [`day_number`].
const UNIX_EPOCH_CE_DAYS: i64 = 719_163;

/// A UTC day as stored: days since 1970-01-01 (2 bytes in SQLite until 2059).
pub(crate) fn day_number(day: NaiveDate) -> i64 {
    i64::from(day.num_days_from_ce()) - UNIX_EPOCH_CE_DAYS
}

/// The day stored as `n`; `None` outside chrono's range (a damaged row).
pub(crate) fn day_from_number(n: i64) -> Option<NaiveDate> {
    let ce = i32::try_from(n.checked_add(UNIX_EPOCH_CE_DAYS)?).ok()?;
    NaiveDate::from_num_days_from_ce_opt(ce)
}

/// The oldest day the ledger keeps on `today` with `retention_days` of retention.
pub fn oldest_kept(today: NaiveDate, retention_days: u32) -> NaiveDate {
    today
        .checked_sub_signed(Duration::days(i64::from(retention_days)))
        .unwrap_or(NaiveDate::MIN)
}

/// A calendar month, as in `/statements/2025-11`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    first: NaiveDate,
}

impl Month {
    /// `YYYY-MM`, exactly; `None` for anything else.
    pub fn parse(text: &str) -> Option<Month> {
        let (year, month) = text.split_once('-')?;
        if year.len() != 4
            || month.len() != 2
            || !(year.bytes().chain(month.bytes())).all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let first = NaiveDate::from_ymd_opt(year.parse().ok()?, month.parse().ok()?, 1)?;
        Some(Month { first })
    }

    /// The month `day` falls in.
    pub fn of(day: NaiveDate) -> Month {
        Month {
            first: day.with_day(1).unwrap_or(day),
        }
    }

    pub fn first_day(self) -> NaiveDate {
        self.first
    }

    pub fn last_day(self) -> NaiveDate {
        self.next().first.pred_opt().unwrap_or(self.first)
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        let (y, m) = (self.first.year(), self.first.month());
        let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        Month {
            first: NaiveDate::from_ymd_opt(y, m, 1).unwrap_or(self.first),
        }
    }

    /// The month before this one.
    pub fn previous(self) -> Month {
        Month::of(self.first.pred_opt().unwrap_or(self.first))
    }

    /// Every day of the month.
    pub fn days(self) -> DayRange {
        DayRange {
            from: self.first_day(),
            to: self.last_day(),
        }
    }

    /// "November 2025".
    pub fn title(self) -> String {
        self.first.format("%B %Y").to_string()
    }
}

impl std::fmt::Display for Month {
    /// `2025-11`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.first.format("%Y-%m"))
    }
}

/// Inclusive UTC days `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DayRange {
    pub from: NaiveDate,
    pub to: NaiveDate,
}

impl DayRange {
    /// How many days the range holds (at least 1 for a valid range).
    pub fn len(self) -> u32 {
        u32::try_from((self.to - self.from).num_days() + 1).unwrap_or(0)
    }

    pub fn is_empty(self) -> bool {
        self.to < self.from
    }

    pub fn contains(self, day: NaiveDate) -> bool {
        self.from <= day && day <= self.to
    }

    pub fn iter(self) -> impl Iterator<Item = NaiveDate> {
        self.from.iter_days().take_while(move |d| *d <= self.to)
    }
}

/// Why `from`/`to` cannot be answered: the message is the 400's body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("give both from= and to= (inclusive UTC days, YYYY-MM-DD); {0}= is missing")]
    Missing(&'static str),
    #[error("{field}= is given twice")]
    Repeated { field: &'static str },
    #[error("{field}={value:?} is not a date; write YYYY-MM-DD, e.g. 2025-11-01")]
    Malformed { field: &'static str, value: String },
    #[error("from={from} is after to={to}; the range is inclusive, from first")]
    Inverted { from: NaiveDate, to: NaiveDate },
    #[error("to={to} is in the future (today is {today} UTC)")]
    Future { to: NaiveDate, today: NaiveDate },
    #[error(
        "from={from} is older than the ledger keeps: its oldest day is {oldest} \
         (--storage.retention {retention_days}d)"
    )]
    BeforeRetention {
        from: NaiveDate,
        oldest: NaiveDate,
        retention_days: u32,
    },
}

/// The range of a query string (`from=2025-11-01&to=2025-11-30`, other
/// parameters ignored). `Ok(None)` when neither `from` nor `to` is given: the
/// request is not a range request. Days after today, days older than the
/// retention, an inverted or a half-given range are errors.
pub fn parse_range_query(
    query: &str,
    today: NaiveDate,
    retention_days: u32,
) -> Result<Option<DayRange>, RangeError> {
    let mut from = None;
    let mut to = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (field, slot) = match name {
            "from" => ("from", &mut from),
            "to" => ("to", &mut to),
            _ => continue,
        };
        if slot.is_some() {
            return Err(RangeError::Repeated { field });
        }
        *slot = Some(parse_day(field, value)?);
    }
    match (from, to) {
        (None, None) => Ok(None),
        (None, Some(_)) => Err(RangeError::Missing("from")),
        (Some(_), None) => Err(RangeError::Missing("to")),
        (Some(from), Some(to)) => validate_range(from, to, today, retention_days).map(Some),
    }
}

/// `from..=to` when it is in order, not in the future and within retention.
pub fn validate_range(
    from: NaiveDate,
    to: NaiveDate,
    today: NaiveDate,
    retention_days: u32,
) -> Result<DayRange, RangeError> {
    if from > to {
        return Err(RangeError::Inverted { from, to });
    }
    if to > today {
        return Err(RangeError::Future { to, today });
    }
    let oldest = oldest_kept(today, retention_days);
    if from < oldest {
        return Err(RangeError::BeforeRetention {
            from,
            oldest,
            retention_days,
        });
    }
    Ok(DayRange { from, to })
}

/// A strict `YYYY-MM-DD` (no time part, no signs, no spaces).
fn parse_day(field: &'static str, value: &str) -> Result<NaiveDate, RangeError> {
    let malformed = || RangeError::Malformed {
        field,
        value: value.chars().take(40).collect(),
    };
    let shape_ok = value.len() == 10
        && value.bytes().enumerate().all(|(i, b)| {
            if i == 4 || i == 7 {
                b == b'-'
            } else {
                b.is_ascii_digit()
            }
        });
    if !shape_ok {
        return Err(malformed());
    }
    NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| malformed())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn day_numbers_round_trip() {
        assert_eq!(day_number(d("1970-01-01")), 0);
        assert_eq!(day_number(d("2025-11-30")), 20_422);
        for n in [-1, 0, 20_000, 40_000] {
            assert_eq!(day_from_number(n).map(day_number), Some(n));
        }
        assert_eq!(day_from_number(i64::MAX), None);
    }

    #[test]
    fn months_parse_strictly_and_know_their_days() {
        let nov = Month::parse("2025-11").unwrap();
        assert_eq!(nov.first_day(), d("2025-11-01"));
        assert_eq!(nov.last_day(), d("2025-11-30"));
        assert_eq!(nov.days().len(), 30);
        assert_eq!(Month::parse("2024-02").unwrap().last_day(), d("2024-02-29"));
        assert_eq!(
            Month::parse("2025-12").unwrap().next().to_string(),
            "2026-01"
        );
        assert_eq!(
            Month::parse("2026-01").unwrap().previous().to_string(),
            "2025-12"
        );
        assert_eq!(nov.title(), "November 2025");
        for bad in [
            "2025-13",
            "2025-1",
            "25-11",
            "2025-11-01",
            "2025_11",
            "+025-11",
            "",
        ] {
            assert_eq!(Month::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn ranges_parse_and_validate() {
        let today = d("2025-12-03");
        let ok = parse_range_query("from=2025-11-01&to=2025-11-30&x=1", today, 400);
        assert_eq!(
            ok,
            Ok(Some(DayRange {
                from: d("2025-11-01"),
                to: d("2025-11-30")
            }))
        );
        assert_eq!(parse_range_query("", today, 400), Ok(None));
        assert_eq!(parse_range_query("format=csv", today, 400), Ok(None));
        assert_eq!(
            parse_range_query("to=2025-11-30&from=2025-11-30", today, 400)
                .map(|r| r.map(DayRange::len)),
            Ok(Some(1))
        );
    }

    #[test]
    fn range_errors_say_what_is_wrong() {
        let today = d("2025-12-03");
        let err = |q: &str| parse_range_query(q, today, 400).unwrap_err();
        assert_eq!(err("from=2025-11-01"), RangeError::Missing("to"));
        assert_eq!(err("to=2025-11-01"), RangeError::Missing("from"));
        assert!(matches!(
            err("from=2025-11-1&to=2025-11-30"),
            RangeError::Malformed { field: "from", .. }
        ));
        assert!(matches!(
            err("from=2025-02-30&to=2025-11-30"),
            RangeError::Malformed { .. }
        ));
        assert!(matches!(
            err("from=2025-11-01&to=2025-11-30T00"),
            RangeError::Malformed { field: "to", .. }
        ));
        assert!(matches!(
            err("from=2025-11-01&to=%32025-11-3"),
            RangeError::Malformed { .. }
        ));
        assert_eq!(
            err("from=2025-11-01&from=2025-11-02&to=2025-11-30"),
            RangeError::Repeated { field: "from" }
        );
        let inverted = err("from=2025-11-30&to=2025-11-01");
        assert_eq!(
            inverted.to_string(),
            "from=2025-11-30 is after to=2025-11-01; the range is inclusive, from first"
        );
        assert!(matches!(
            err("from=2025-11-01&to=2025-12-04"),
            RangeError::Future { .. }
        ));
        let old = err("from=2024-01-01&to=2024-01-31");
        assert!(
            old.to_string().contains("oldest day is 2024-10-29"),
            "{old}"
        );
        assert!(
            old.to_string().contains("--storage.retention 400d"),
            "{old}"
        );
    }
}
