//! The ledger through its public API (issue #23): a month of keys that are
//! created, moved between companies and deleted; statements equal, to the
//! nano-dollar, the sum of every `/activity` row of the company's keys, and
//! a restart restores activity collection without reading anything again.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDate, Utc};
use openrouter_cost_exporter::activity::{ActivityCache, ActivityRow};
use openrouter_cost_exporter::ledger::{
    AccountRead, KeyRead, Ledger, LedgerError, ListedKey, Month, PeriodStatus,
};
use openrouter_cost_exporter::money::Usd;
use openrouter_cost_exporter::page;

const MODELS: [&str; 3] = [
    "openai/gpt-4.1",
    "anthropic/claude-sonnet-4",
    "google/gemini-2.5-flash",
];

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn at(day: NaiveDate, hour: u32) -> DateTime<Utc> {
    day.and_hms_opt(hour, 0, 0).unwrap().and_utc()
}

/// A key's whole history (every day it spent), as `/activity` rows.
fn history(seed: u64, from: NaiveDate, to: NaiveDate) -> Vec<ActivityRow> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut rows = Vec::new();
    let mut day = from;
    while day <= to {
        if rng.f64() < 0.6 {
            for model in MODELS.iter().take(rng.usize(1..=3)) {
                // Up to 9 decimals, as OpenRouter sends them.
                let nanos = rng.i64(1..5_000_000_000);
                rows.push(ActivityRow {
                    date: day.format("%Y-%m-%d").to_string(),
                    model: model.to_string(),
                    usage: Some(nanos as f64 / 1e9),
                    byok_usage_inference: 0.0,
                    requests: rng.u64(1..100),
                    prompt_tokens: rng.u64(0..100_000),
                    completion_tokens: rng.u64(0..10_000),
                    reasoning_tokens: 0,
                });
            }
        }
        day += Duration::days(1);
    }
    rows
}

/// The rows `/activity` returns on `today`: the 30 days before it.
fn window(rows: &[ActivityRow], today: NaiveDate) -> Vec<ActivityRow> {
    rows.iter()
        .filter(|r| {
            r.day()
                .is_some_and(|day| day < today && day >= today - Duration::days(30))
        })
        .cloned()
        .collect()
}

fn nanos(rows: &[ActivityRow], month: Month) -> i128 {
    rows.iter()
        .filter(|r| r.day().is_some_and(|day| Month::of(day) == month))
        .map(|r| Usd::from_f64(r.usage.unwrap()).unwrap().nanos())
        .sum()
}

struct Key {
    hash: String,
    rows: Vec<ActivityRow>,
    /// The company per day range: the key moves from the first to the second on `moved`.
    companies: (&'static str, &'static str),
    moved: NaiveDate,
    deleted: Option<NaiveDate>,
}

/// The key's company at `t`: the config moves it at noon on `moved`.
fn company_at(key: &Key, t: DateTime<Utc>) -> &'static str {
    if t < at(key.moved, 12) {
        key.companies.0
    } else {
        key.companies.1
    }
}

fn listed(key: &Key, day: NaiveDate) -> ListedKey<'_> {
    ListedKey {
        hash: &key.hash,
        name: &key.hash,
        label: "sk-or-v1-abc...xyz",
        workspace: None,
        creator: None,
        company: company_at(key, at(day, 0)),
        expires_at: None,
        usage_today: None,
        byok_today: None,
    }
}

/// Runs the exporter's day: a listing, then each listed key's read after
/// midnight and again after 6 h, plus the account's read.
fn run_day(ledger: &Ledger, keys: &[Key], today: NaiveDate, account_extra: &[ActivityRow]) {
    let alive: Vec<&Key> = keys
        .iter()
        .filter(|k| k.deleted.map_or(true, |del| today < del))
        .collect();
    let listing: Vec<ListedKey<'_>> = alive.iter().map(|k| listed(k, today)).collect();
    ledger.record_listing(at(today, 0), &listing).unwrap();
    let windows: Vec<Vec<ActivityRow>> = alive.iter().map(|k| window(&k.rows, today)).collect();
    for hour in [0, 7] {
        let reads: Vec<KeyRead<'_>> = alive
            .iter()
            .zip(&windows)
            .map(|(k, rows)| KeyRead {
                hash: &k.hash,
                company: company_at(k, at(today, hour)),
                today,
                read_at: at(today, hour),
                rows,
            })
            .collect();
        ledger.record_reads(&reads).unwrap();
    }
    let mut account: Vec<ActivityRow> = keys.iter().flat_map(|k| window(&k.rows, today)).collect();
    account.extend(window(account_extra, today));
    ledger
        .record_account(AccountRead {
            today,
            read_at: at(today, 7),
            rows: &account,
        })
        .unwrap();
}

/// Four keys from Oct 20 to Dec 2: one deleted, one moved, one unassigned.
fn keys() -> Vec<Key> {
    let (start, end) = (d("2025-10-20"), d("2025-12-02"));
    let never = d("2100-01-01");
    vec![
        Key {
            hash: "a".into(),
            rows: history(1, start, end),
            companies: ("acme", "acme"),
            moved: never,
            deleted: None,
        },
        // Deleted on Nov 20: its last read is Nov 19's (through Nov 18); Nov 19 and 20 are lost to the account line.
        Key {
            hash: "b".into(),
            rows: history(2, start, d("2025-11-20")),
            companies: ("acme", "acme"),
            moved: never,
            deleted: Some(d("2025-11-20")),
        },
        // Moves from acme to beta at noon on Nov 15: days before stay acme's.
        Key {
            hash: "c".into(),
            rows: history(3, start, end),
            companies: ("acme", "beta"),
            moved: d("2025-11-15"),
            deleted: None,
        },
        Key {
            hash: "u".into(),
            rows: history(4, start, end),
            companies: ("unassigned", "unassigned"),
            moved: never,
            deleted: None,
        },
    ]
}

#[test]
fn statements_equal_the_rows_of_every_key_departed_ones_included() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let keys = keys();
    // Spend of keys the ledger never sees (the account's read has it).
    let extra = history(5, d("2025-10-20"), d("2025-12-02"));
    let mut day = d("2025-11-01");
    while day <= d("2025-12-02") {
        run_day(&ledger, &keys, day, &extra);
        day += Duration::days(1);
    }
    let november = Month::parse("2025-11").unwrap();
    let today = d("2025-12-02");
    let st = ledger.statement(november.days(), today).unwrap();
    assert_eq!(st.status, PeriodStatus::Final);
    let c_before: Vec<ActivityRow> = keys[2]
        .rows
        .iter()
        .filter(|r| r.day().unwrap() < keys[2].moved)
        .cloned()
        .collect();
    let c_after: Vec<ActivityRow> = keys[2]
        .rows
        .iter()
        .filter(|r| r.day().unwrap() >= keys[2].moved)
        .cloned()
        .collect();
    // b's Nov 19 and 20 were never read (deleted before the read of Nov 19).
    let b_read: Vec<ActivityRow> = keys[1]
        .rows
        .iter()
        .filter(|r| r.day().unwrap() < d("2025-11-19"))
        .cloned()
        .collect();
    let mut expected: BTreeMap<&str, i128> = BTreeMap::new();
    expected.insert(
        "acme",
        nanos(&keys[0].rows, november) + nanos(&b_read, november) + nanos(&c_before, november),
    );
    expected.insert("beta", nanos(&c_after, november));
    expected.insert("unassigned", nanos(&keys[3].rows, november));
    let got: BTreeMap<&str, i128> = st
        .companies
        .iter()
        .map(|c| (c.company.as_str(), c.spend.usage.nanos()))
        .collect();
    assert_eq!(got, expected);
    let acme = st.companies.iter().find(|c| c.company == "acme").unwrap();
    assert_eq!(
        (acme.keys, acme.days_settled, acme.status),
        (3, 30, PeriodStatus::Final)
    );
    // The account line: everything OpenRouter billed, so the unattributed
    // spend is b's lost day plus the spend of keys the ledger never saw.
    let lost = nanos(&keys[1].rows, november) - nanos(&b_read, november) + nanos(&extra, november);
    assert_eq!(st.unattributed(), Some(Usd::from_nanos(lost)));
    let cs = ledger
        .company_statement(november.days(), "acme", today)
        .unwrap()
        .unwrap();
    let b = cs.keys.iter().find(|k| k.hash == "b").unwrap();
    assert_eq!(b.departed.as_ref().map(|p| p.on), Some(d("2025-11-20")));
    assert_eq!(b.spend.usage.nanos(), nanos(&b_read, november));
    let csv = page::statement_csv(&st, "unassigned", &|_| None);
    assert!(csv.contains(&format!(
        "company,\"acme\",2025-11-01,2025-11-30,{},",
        Usd::from_nanos(expected["acme"])
    )));
    // The range CSV of a part of the month: its days only.
    let range = openrouter_cost_exporter::ledger::parse_range_query(
        "from=2025-11-20&to=2025-11-21",
        today,
        400,
    )
    .unwrap()
    .unwrap();
    let part = ledger.statement(range, today).unwrap();
    let in_range = |rows: &[ActivityRow]| -> i128 {
        rows.iter()
            .filter(|r| range.contains(r.day().unwrap()))
            .map(|r| Usd::from_f64(r.usage.unwrap()).unwrap().nanos())
            .sum()
    };
    let beta = part.companies.iter().find(|c| c.company == "beta").unwrap();
    assert_eq!(beta.spend.usage.nanos(), in_range(&c_after));
}

#[test]
fn a_restart_restores_activity_collection_without_reading_again() {
    let dir = tempfile::tempdir().unwrap();
    let today = d("2025-12-02");
    let rows = history(9, d("2025-10-01"), today);
    let read = window(&rows, today);
    {
        let ledger = Ledger::open(dir.path(), 400).unwrap();
        let read_at = at(today, 7);
        ledger
            .record_reads(&[KeyRead {
                hash: "k",
                company: "acme",
                today,
                read_at,
                rows: &read,
            }])
            .unwrap();
    }
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let mut restored = ActivityCache::default();
    let summary = ledger
        .restore(today, |k| {
            restored
                .apply_at(&k.hash, &k.rows, today, k.read_at)
                .unwrap();
        })
        .unwrap();
    assert_eq!((summary.restored, summary.lacking), (1, 0));
    let mut direct = ActivityCache::default();
    direct.apply_at("k", &read, today, at(today, 7)).unwrap();
    for days in [6, 29, 30] {
        assert_eq!(
            restored.completed_usage("k", today, days),
            direct.completed_usage("k", today, days)
        );
    }
    let models = |c: &ActivityCache| -> Vec<(String, Usd)> {
        let mut m: Vec<(String, Usd)> = c
            .models("k", today)
            .unwrap()
            .map(|(n, t)| (n.to_string(), t.usage))
            .collect();
        m.sort();
        m
    };
    assert_eq!(models(&restored), models(&direct));
    // Restored after the 6 h re-read: nothing to read today.
    assert!(restored.plan(["k"], at(today, 8)).is_empty());
}

#[test]
fn a_second_exporter_on_the_same_path_is_told_why() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Ledger::open(dir.path(), 400).unwrap();
    match Ledger::open(dir.path(), 400) {
        Err(e @ LedgerError::Locked { .. }) => {
            assert!(e.to_string().contains("held by another process"))
        }
        other => panic!("expected Locked, got {other:?}"),
    }
}
