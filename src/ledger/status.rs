//! Day statuses over many keys: which days of a period are settled for each
//! company (every key-day of its keys settled) and for the whole account,
//! and which keys each company had in the period.

use std::collections::{HashMap, HashSet};

use rusqlite::Connection;

use super::coverage::{KeyCoverage, Run};

/// Every key with its coverage runs, in key order (two table scans).
pub(crate) fn load_coverage(conn: &Connection) -> rusqlite::Result<Vec<KeyCoverage>> {
    let mut keys: Vec<KeyCoverage> = Vec::new();
    let mut stmt =
        conn.prepare("SELECT id, company_id, first_seen, departed_on FROM keys ORDER BY id")?;
    let rows = stmt.query_map([], |r| {
        Ok(KeyCoverage {
            key_id: r.get(0)?,
            company_now: r.get(1)?,
            first_seen: r.get(2)?,
            departed_on: r.get(3)?,
            runs: Vec::new(),
        })
    })?;
    for row in rows {
        keys.push(row?);
    }
    let mut stmt = conn.prepare("SELECT key_id, first_day, last_day, settled, company_id FROM coverage ORDER BY key_id, first_day")?;
    let mut rows = stmt.query([])?;
    let mut i = 0;
    while let Some(r) = rows.next()? {
        let key: i64 = r.get(0)?;
        while keys.get(i).is_some_and(|k| k.key_id < key) {
            i += 1;
        }
        if let Some(k) = keys.get_mut(i).filter(|k| k.key_id == key) {
            k.runs.push(Run {
                first: r.get(1)?,
                last: r.get(2)?,
                settled: r.get(3)?,
                company: r.get(4)?,
            });
        }
    }
    Ok(keys)
}

/// The first day the ledger holds: the earliest day of any key, not before `oldest`.
pub(crate) fn held_from(keys: &[KeyCoverage], oldest: i64) -> Option<i64> {
    keys.iter()
        .map(KeyCoverage::start)
        .min()
        .map(|d| d.max(oldest))
}

/// One company over a period.
#[derive(Debug, Clone, Default)]
pub(crate) struct CompanyDays {
    /// Keys with a day of the period attributed to the company.
    pub keys: HashSet<i64>,
    /// Per day of the period: some key-day of the company is not settled.
    pub unsettled: Vec<bool>,
    /// Per key (of a company asked for by [`Statuses::of`]): its days not settled.
    pub key_unsettled: HashMap<i64, u32>,
}

/// Day statuses of the past days `from..=last` of a period.
#[derive(Debug, Clone, Default)]
pub(crate) struct Statuses {
    pub from: i64,
    /// Days from `from` that are past (may be 0).
    pub days: usize,
    pub held_from: Option<i64>,
    pub companies: HashMap<i64, CompanyDays>,
    /// Per day: some key-day of the account is not settled.
    pub unsettled: Vec<bool>,
}

impl Statuses {
    /// Statuses of `from..=last` (`last` the last past day of the period;
    /// before `from` for a period in the future). With `only`, companies
    /// other than it are skipped, and its keys' unsettled days are counted.
    pub fn of(
        keys: &[KeyCoverage],
        from: i64,
        last: i64,
        oldest: i64,
        only: Option<i64>,
    ) -> Statuses {
        let days = usize::try_from(last - from + 1).unwrap_or(0);
        let mut st = Statuses {
            from,
            days,
            held_from: held_from(keys, oldest),
            companies: HashMap::new(),
            unsettled: vec![false; days],
        };
        for key in keys {
            for seg in key.segments(from, last) {
                if only.is_some_and(|c| c != seg.company) {
                    continue;
                }
                let entry = st
                    .companies
                    .entry(seg.company)
                    .or_insert_with(|| CompanyDays {
                        unsettled: vec![false; days],
                        ..CompanyDays::default()
                    });
                entry.keys.insert(key.key_id);
                if seg.settled {
                    continue;
                }
                for i in (seg.first - from)..=(seg.last - from) {
                    let i = usize::try_from(i).unwrap_or(usize::MAX);
                    if let (Some(c), Some(a)) =
                        (entry.unsettled.get_mut(i), st.unsettled.get_mut(i))
                    {
                        (*c, *a) = (true, true);
                    }
                }
                if only.is_some() {
                    let n = u32::try_from(seg.last - seg.first + 1).unwrap_or(0);
                    *entry.key_unsettled.entry(key.key_id).or_default() += n;
                }
            }
        }
        st
    }

    /// Days of the period that are held and settled, given `unsettled` flags.
    pub fn settled_days(&self, unsettled: Option<&[bool]>) -> u32 {
        let Some(held) = self.held_from else {
            return 0;
        };
        let count = (0..self.days)
            .filter(|i| self.from + *i as i64 >= held)
            .filter(|i| !unsettled.and_then(|u| u.get(*i)).copied().unwrap_or(false))
            .count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Past days of the period on which every key of `company` is settled.
    pub fn company_settled(&self, company: i64) -> u32 {
        self.settled_days(self.companies.get(&company).map(|c| c.unsettled.as_slice()))
    }

    /// Past days of the period on which every key of the account is settled.
    pub fn account_settled(&self) -> u32 {
        self.settled_days(Some(&self.unsettled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: i64, runs: Vec<Run>) -> KeyCoverage {
        KeyCoverage {
            key_id: id,
            company_now: 1,
            first_seen: 100,
            departed_on: None,
            runs,
        }
    }

    fn run(first: i64, last: i64, settled: bool, company: i64) -> Run {
        Run {
            first,
            last,
            settled,
            company,
        }
    }

    #[test]
    fn a_day_is_settled_when_every_key_of_the_company_is() {
        let keys = vec![
            key(1, vec![run(10, 19, true, 1)]),
            key(2, vec![run(10, 18, true, 1), run(19, 19, false, 1)]),
            key(3, vec![run(10, 19, true, 2)]),
        ];
        let st = Statuses::of(&keys, 10, 19, 0, None);
        assert_eq!(st.company_settled(1), 9);
        assert_eq!(st.company_settled(2), 10);
        assert_eq!(st.account_settled(), 9);
        assert_eq!(st.companies[&1].keys.len(), 2);
        // Days before the ledger's first day are not settled.
        let st = Statuses::of(&keys, 5, 19, 0, None);
        assert_eq!(st.company_settled(2), 10);
        assert_eq!(st.held_from, Some(10));
    }

    #[test]
    fn one_company_counts_its_keys_days() {
        let keys = vec![
            key(1, vec![run(10, 17, true, 1)]),
            key(2, vec![run(10, 19, true, 1)]),
        ];
        let st = Statuses::of(&keys, 10, 19, 0, Some(1));
        // Key 1 is not read for 18 and 19 (still listed: missing, company now).
        assert_eq!(st.companies[&1].key_unsettled.get(&1), Some(&2));
        assert_eq!(st.companies[&1].key_unsettled.get(&2), None);
        assert_eq!(st.company_settled(1), 8);
    }
}
