//! Which days each key's `/activity` reads covered, and with what status:
//! runs of days (pure functions, stored in the `coverage` table).
//!
//! A read covers a window of days. Days read at least 6 h after they ended
//! are settled, later ones provisional; a settled day stays settled. The
//! company of a day is fixed when the day is first covered: the key's
//! attribution on that day, not the one of a later re-read.

/// A run of days `first..=last` of one key with one status and one company.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Run {
    pub first: i64,
    pub last: i64,
    pub settled: bool,
    pub company: i64,
}

/// The run covering `day`, if any (`runs` sorted, as stored).
pub(crate) fn run_at(runs: &[Run], day: i64) -> Option<&Run> {
    let i = runs.partition_point(|r| r.last < day);
    runs.get(i).filter(|r| r.first <= day)
}

/// `old` after a read covering `from..=to` whose days up to `settled_through`
/// are settled. Days covered before keep their company and never go back
/// from settled; new days get `company`. Sorted and merged.
pub(crate) fn paint(
    old: &[Run],
    from: i64,
    to: i64,
    settled_through: i64,
    company: i64,
) -> Vec<Run> {
    let mut pieces: Vec<Run> = Vec::with_capacity(old.len() + 3);
    for r in old {
        if r.last < from || r.first > to {
            pieces.push(*r);
            continue;
        }
        if r.first < from {
            pieces.push(Run {
                last: from - 1,
                ..*r
            });
        }
        if r.last > to {
            pieces.push(Run {
                first: to + 1,
                ..*r
            });
        }
    }
    let mut day = from;
    while day <= to {
        let covering = run_at(old, day).copied();
        let segment_end = match covering {
            Some(r) => r.last.min(to),
            // Up to the next covered day, or the window's end.
            None => old
                .iter()
                .map(|r| r.first)
                .filter(|f| *f > day)
                .min()
                .map_or(to, |f| (f - 1).min(to)),
        };
        // The read's status changes after `settled_through`.
        let mut start = day;
        while start <= segment_end {
            let end = if start <= settled_through {
                settled_through.min(segment_end)
            } else {
                segment_end
            };
            let read_settled = end <= settled_through;
            let (settled, company) = match covering {
                Some(r) => (r.settled || read_settled, r.company),
                None => (read_settled, company),
            };
            pieces.push(Run {
                first: start,
                last: end,
                settled,
                company,
            });
            start = end + 1;
        }
        day = segment_end + 1;
    }
    merge(pieces)
}

/// Sorts runs and joins neighbours with the same status and company.
fn merge(mut pieces: Vec<Run>) -> Vec<Run> {
    pieces.sort_by_key(|r| r.first);
    let mut out: Vec<Run> = Vec::with_capacity(pieces.len());
    for r in pieces {
        match out.last_mut() {
            Some(prev)
                if prev.last + 1 == r.first
                    && prev.settled == r.settled
                    && prev.company == r.company =>
            {
                prev.last = r.last;
            }
            _ => out.push(r),
        }
    }
    out
}

/// One key as the day statuses see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyCoverage {
    pub key_id: i64,
    /// The key's attribution now: the company of days never covered.
    pub company_now: i64,
    /// Day number the exporter first listed it.
    pub first_seen: i64,
    pub departed_on: Option<i64>,
    pub runs: Vec<Run>,
}

impl KeyCoverage {
    /// The first day that is the key's: its first covered or first listed day.
    pub fn start(&self) -> i64 {
        self.runs
            .first()
            .map_or(self.first_seen, |r| r.first.min(self.first_seen))
    }

    /// `day` for this key: `None` when the day is not the key's (before it
    /// was known, or after it left); else whether it is settled, and its
    /// company. A departed key's days are all settled: nothing more can be
    /// read for it, so its provisional figures are final. (The rule day by
    /// day, which the tests hold [`KeyCoverage::segments`] to.)
    #[cfg(test)]
    pub fn day(&self, day: i64) -> Option<(bool, i64)> {
        if day < self.start() {
            return None;
        }
        let departed = self.departed_on.is_some();
        if let Some(r) = run_at(&self.runs, day) {
            return Some((r.settled || departed, r.company));
        }
        match self.departed_on {
            Some(on) if on <= day => None,
            Some(_) => Some((true, self.company_now)),
            None => Some((false, self.company_now)),
        }
    }
}

/// Days `first..=last` of a key with one status and company ([`KeyCoverage::day`] over a span).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub first: i64,
    pub last: i64,
    pub settled: bool,
    pub company: i64,
}

impl KeyCoverage {
    /// The status and company of every day of `from..=last`, as runs: the
    /// key's days only, in order. O(runs), not O(days).
    pub fn segments(&self, from: i64, last: i64) -> Vec<Segment> {
        let mut out = Vec::new();
        let mut day = from.max(self.start());
        let departed = self.departed_on.is_some();
        for r in &self.runs {
            if r.last < day || r.first > last {
                continue;
            }
            if r.first > day {
                self.gap(day, r.first - 1, &mut out);
            }
            let first = r.first.max(day);
            out.push(Segment {
                first,
                last: r.last.min(last),
                settled: r.settled || departed,
                company: r.company,
            });
            day = r.last + 1;
        }
        if day <= last {
            self.gap(day, last, &mut out);
        }
        out
    }

    /// Uncovered days `from..=last`: settled up to a departure, none after.
    fn gap(&self, from: i64, last: i64, out: &mut Vec<Segment>) {
        let (last, settled) = match self.departed_on {
            Some(on) => (last.min(on - 1), true),
            None => (last, false),
        };
        if from <= last {
            out.push(Segment {
                first: from,
                last,
                settled,
                company: self.company_now,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(first: i64, last: i64, settled: bool, company: i64) -> Run {
        Run {
            first,
            last,
            settled,
            company,
        }
    }

    #[test]
    fn a_first_read_splits_at_the_settled_day() {
        let runs = paint(&[], 10, 39, 38, 1);
        assert_eq!(runs, vec![run(10, 38, true, 1), run(39, 39, false, 1)]);
        // The 6 h re-read settles the last day and merges the run.
        let runs = paint(&runs, 10, 39, 39, 1);
        assert_eq!(runs, vec![run(10, 39, true, 1)]);
    }

    #[test]
    fn covered_days_keep_their_company_and_new_days_take_the_new_one() {
        let runs = paint(&[run(10, 39, true, 1)], 11, 40, 39, 2);
        assert_eq!(runs, vec![run(10, 39, true, 1), run(40, 40, false, 2)]);
    }

    #[test]
    fn settled_never_goes_back_and_gaps_fill() {
        let old = [run(0, 5, true, 1), run(20, 25, true, 1)];
        let runs = paint(&old, 3, 22, 0, 1);
        assert_eq!(
            runs,
            vec![
                run(0, 5, true, 1),
                run(6, 19, false, 1),
                run(20, 25, true, 1)
            ]
        );
    }

    #[test]
    fn key_days_follow_departure() {
        let key = KeyCoverage {
            key_id: 1,
            company_now: 7,
            first_seen: 40,
            departed_on: None,
            runs: vec![run(10, 38, true, 1), run(39, 39, false, 1)],
        };
        assert_eq!(key.day(9), None);
        assert_eq!(key.day(10), Some((true, 1)));
        assert_eq!(key.day(39), Some((false, 1)));
        assert_eq!(key.day(41), Some((false, 7)));
        let gone = KeyCoverage {
            departed_on: Some(41),
            ..key
        };
        assert_eq!(gone.day(39), Some((true, 1)));
        assert_eq!(gone.day(40), Some((true, 7)));
        assert_eq!(gone.day(41), None);
    }
}
