//! The ledger end to end on a temporary directory: round trips, settling,
//! restatements, departures, exact sums, retention, locking, corruption.

use chrono::{DateTime, NaiveDate, Utc};

use super::*;
use crate::activity::ActivityRow;
use crate::money::Usd;

fn d(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn row(day: &str, model: &str, usage: f64, requests: u64) -> ActivityRow {
    ActivityRow {
        date: day.to_string(),
        model: model.to_string(),
        usage: Some(usage),
        byok_usage_inference: 0.0,
        requests,
        prompt_tokens: requests * 10,
        completion_tokens: requests * 3,
        reasoning_tokens: 0,
    }
}

fn usd(v: f64) -> Usd {
    Usd::from_f64(v).unwrap()
}

fn read<'a>(
    hash: &'a str,
    company: &'a str,
    read_at: &str,
    rows: &'a [ActivityRow],
) -> KeyRead<'a> {
    let read_at = at(read_at);
    KeyRead {
        hash,
        company,
        today: read_at.date_naive(),
        read_at,
        rows,
    }
}

fn listed<'a>(hash: &'a str, company: &'a str) -> ListedKey<'a> {
    ListedKey {
        hash,
        name: hash,
        label: "sk-or-v1-abc...xyz",
        workspace: None,
        creator: None,
        company,
        expires_at: None,
        usage_today: None,
        byok_today: None,
    }
}

fn november() -> DayRange {
    Month::parse("2025-11").unwrap().days()
}

fn line<'a>(st: &'a Statement, company: &str) -> &'a CompanyLine {
    st.companies.iter().find(|c| c.company == company).unwrap()
}

#[test]
fn a_read_round_trips_and_settles_at_the_six_hour_re_read() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let rows = [
        row("2025-11-03", "openai/gpt-4.1", 1.0, 2),
        row("2025-11-03", "openai/gpt-4.1", 0.5, 1), // another endpoint
        row("2025-11-30", "anthropic/claude", 0.25, 1),
        row("2025-12-01", "anthropic/claude", 9.0, 1), // today: not ours
    ];
    let first = ledger
        .record_reads(&[read("k1", "acme", "2025-12-01T00:30:00Z", &rows)])
        .unwrap();
    assert_eq!(
        (first.keys, first.days_written, first.restated_days),
        (1, 2, 0)
    );
    let st = ledger.statement(november(), d("2025-12-01")).unwrap();
    let acme = line(&st, "acme");
    assert_eq!(acme.spend.usage, usd(1.75));
    assert_eq!(acme.spend.requests, 4);
    assert_eq!(
        (acme.days_settled, acme.status),
        (29, PeriodStatus::Provisional)
    );
    assert_eq!(st.status, PeriodStatus::Provisional);

    let again = ledger
        .record_reads(&[read("k1", "acme", "2025-12-01T06:30:00Z", &rows)])
        .unwrap();
    assert_eq!((again.days_written, again.restated_days), (0, 0));
    let st = ledger.statement(november(), d("2025-12-01")).unwrap();
    assert_eq!(
        (line(&st, "acme").days_settled, st.status),
        (30, PeriodStatus::Final)
    );
    let months = ledger.months(d("2025-12-01")).unwrap();
    assert_eq!(months[0].month.to_string(), "2025-12");
    assert_eq!(months[0].status, PeriodStatus::Open);
    assert_eq!(
        (months[1].month.to_string(), months[1].status),
        ("2025-11".to_string(), PeriodStatus::Final)
    );
    // Reopened, the ledger has it all.
    drop(ledger);
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    assert_eq!(
        line(
            &ledger.statement(november(), d("2025-12-01")).unwrap(),
            "acme"
        )
        .spend
        .usage,
        usd(1.75)
    );
}

#[test]
fn a_changed_settled_day_is_replaced_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let rows = [row("2025-11-10", "m", 2.0, 1)];
    ledger
        .record_reads(&[read("k1", "acme", "2025-12-01T07:00:00Z", &rows)])
        .unwrap();
    let changed = [row("2025-11-10", "m", 2.5, 1)];
    let w = ledger
        .record_reads(&[read("k1", "acme", "2025-12-02T07:00:00Z", &changed)])
        .unwrap();
    assert_eq!(w.restated_days, 1);
    let health = ledger.health(d("2025-12-02")).unwrap();
    assert_eq!(health.restated_days_total, 1);
    assert!(health.up && health.last_write.is_some() && health.size_bytes > 0);
    assert_eq!(
        line(
            &ledger.statement(november(), d("2025-12-02")).unwrap(),
            "acme"
        )
        .spend
        .usage,
        usd(2.5)
    );
    // A provisional day that changes is no restatement.
    let early = [changed[0].clone(), row("2025-12-02", "m", 1.0, 1)];
    ledger
        .record_reads(&[read("k1", "acme", "2025-12-03T00:10:00Z", &early)])
        .unwrap();
    let later = [changed[0].clone(), row("2025-12-02", "m", 1.2, 1)];
    let w = ledger
        .record_reads(&[read("k1", "acme", "2025-12-03T06:10:00Z", &later)])
        .unwrap();
    assert_eq!((w.restated_days, w.days_written), (0, 1));
}

#[test]
fn departed_keys_keep_their_days_and_days_keep_their_company() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    ledger
        .record_listing(
            at("2025-12-01T00:00:00Z"),
            &[listed("k1", "acme"), listed("k2", "acme")],
        )
        .unwrap();
    let r1 = [row("2025-11-05", "m", 1.0, 1)];
    let r2 = [row("2025-11-06", "m", 0.000000003, 1)];
    ledger
        .record_reads(&[
            read("k1", "acme", "2025-12-01T07:00:00Z", &r1),
            read("k2", "acme", "2025-12-01T07:00:00Z", &r2),
        ])
        .unwrap();
    // k2 is deleted, k1 moves to beta.
    let s = ledger
        .record_listing(at("2025-12-02T00:00:00Z"), &[listed("k1", "beta")])
        .unwrap();
    assert_eq!(s.departed_keys, 1);
    ledger
        .record_reads(&[read("k1", "beta", "2025-12-02T07:00:00Z", &r1)])
        .unwrap();
    let st = ledger.statement(november(), d("2025-12-02")).unwrap();
    assert_eq!(
        line(&st, "acme").spend.usage,
        Usd::from_nanos(1_000_000_003)
    );
    assert_eq!(
        (line(&st, "acme").keys, st.status),
        (2, PeriodStatus::Final)
    );
    assert!(st.companies.iter().all(|c| c.company != "beta"));
    let cs = ledger
        .company_statement(november(), "acme", d("2025-12-02"))
        .unwrap()
        .unwrap();
    let k2 = cs.keys.iter().find(|k| k.hash == "k2").unwrap();
    assert_eq!(
        k2.departed.as_ref().map(|p| (p.on, p.reason.as_str())),
        Some((d("2025-12-02"), "deleted"))
    );
    assert_eq!(cs.models[0].model, "m");
    // Restore hands back only the listed key.
    let mut restored = Vec::new();
    let sum = ledger
        .restore(d("2025-12-02"), |k| restored.push(k))
        .unwrap();
    assert_eq!((sum.restored, sum.lacking), (1, 0));
    assert_eq!(restored[0].hash, "k1");
    assert_eq!(restored[0].rows.len(), 1);
    assert_eq!(restored[0].read_at, at("2025-12-02T06:00:00Z"));
    assert_eq!(
        ledger
            .company_statement(november(), "nobody", d("2025-12-02"))
            .unwrap(),
        None
    );
}

#[test]
fn range_sums_are_exact_to_the_nano_dollar() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let mut expected: i128 = 0;
    let mut rows = Vec::new();
    for day in 1..=30 {
        for (i, model) in ["a", "b", "c"].iter().enumerate() {
            let nanos = 123_456_789 * day + 7 * i as i64 + 1;
            if (10..=20).contains(&day) {
                expected += i128::from(nanos);
            }
            rows.push(row(
                &format!("2025-11-{day:02}"),
                model,
                nanos as f64 / 1e9,
                1,
            ));
        }
    }
    ledger
        .record_reads(&[read("k1", "acme", "2025-12-01T07:00:00Z", &rows)])
        .unwrap();
    let range = validate_range(d("2025-11-10"), d("2025-11-20"), d("2025-12-01"), 400).unwrap();
    let st = ledger.statement(range, d("2025-12-01")).unwrap();
    assert_eq!(line(&st, "acme").spend.usage, Usd::from_nanos(expected));
    assert_eq!(st.total.usage, Usd::from_nanos(expected));
    assert_eq!(line(&st, "acme").days_settled, 11);
    let daily = ledger.company_daily("acme", range).unwrap();
    let sum: i128 = daily.iter().map(|(_, v)| v.unwrap().nanos()).sum();
    assert_eq!(sum, expected);
}

#[test]
fn the_account_line_ties_the_statement_to_the_bill() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let rows = [row("2025-11-05", "m", 1.0, 1)];
    ledger
        .record_reads(&[read("k1", "acme", "2025-12-01T07:00:00Z", &rows)])
        .unwrap();
    let st = ledger.statement(november(), d("2025-12-01")).unwrap();
    assert_eq!(st.unattributed(), None);
    let account = [
        row("2025-11-05", "m", 1.0, 1),
        row("2025-11-05", "x", 0.4, 1),
        row("2025-11-09", "x", 0.1, 1),
    ];
    let when = at("2025-12-01T07:00:00Z");
    ledger
        .record_account(AccountRead {
            today: when.date_naive(),
            read_at: when,
            rows: &account,
        })
        .unwrap();
    let st = ledger.statement(november(), d("2025-12-01")).unwrap();
    assert_eq!((st.account.days_read, st.account.days_settled), (30, 30));
    assert_eq!(st.unattributed(), Some(usd(0.5)));
}

#[test]
fn the_account_is_restored_only_when_its_whole_window_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    assert_eq!(ledger.restore_account(d("2025-12-01")).unwrap(), None);
    let account = [row("2025-11-05", "m", 1.0, 1)];
    let record = |read_at: &str| {
        let when = at(read_at);
        ledger
            .record_account(AccountRead {
                today: when.date_naive(),
                read_at: when,
                rows: &account,
            })
            .unwrap();
    };
    // Read at 01:00: held, its last day not settled yet (re-read at 6 h).
    record("2025-12-01T01:00:00Z");
    assert_eq!(
        ledger.restore_account(d("2025-12-01")).unwrap(),
        Some(at("2025-12-01T00:00:00Z"))
    );
    record("2025-12-01T07:00:00Z");
    assert_eq!(
        ledger.restore_account(d("2025-12-01")).unwrap(),
        Some(at("2025-12-01T06:00:00Z"))
    );
    // The next day's window has a day the ledger lacks.
    assert_eq!(ledger.restore_account(d("2025-12-02")).unwrap(), None);
}

#[test]
fn listing_figures_count_until_activity_covers_the_day() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let mut key = listed("k1", "acme");
    key.usage_today = Some(usd(3.0));
    let s = ledger
        .record_listing(at("2025-11-30T12:00:00Z"), &[key])
        .unwrap();
    assert_eq!(s.listing_days, 1);
    let day = DayRange {
        from: d("2025-11-30"),
        to: d("2025-11-30"),
    };
    assert_eq!(
        ledger.company_daily("acme", day).unwrap(),
        vec![(d("2025-11-30"), Some(usd(3.0)))]
    );
    ledger
        .record_reads(&[read(
            "k1",
            "acme",
            "2025-12-01T00:30:00Z",
            &[row("2025-11-30", "m", 3.25, 1)],
        )])
        .unwrap();
    assert_eq!(
        ledger.company_daily("acme", day).unwrap(),
        vec![(d("2025-11-30"), Some(usd(3.25)))]
    );
    // A later listing of the covered day changes nothing.
    let s = ledger
        .record_listing(at("2025-11-30T23:59:00Z"), &[key])
        .unwrap();
    assert_eq!(s.listing_days, 0);
}

#[test]
fn retention_prunes_older_days() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 20).unwrap();
    let rows = [
        row("2025-11-02", "m", 1.0, 1),
        row("2025-11-25", "m", 2.0, 1),
    ];
    ledger
        .record_reads(&[read("k1", "acme", "2025-12-01T07:00:00Z", &rows)])
        .unwrap();
    let pruned = ledger.prune(d("2025-12-01")).unwrap();
    assert_eq!(pruned.spend_rows, 1);
    let range = validate_range(d("2025-11-11"), d("2025-11-30"), d("2025-12-01"), 20).unwrap();
    let st = ledger.statement(range, d("2025-12-01")).unwrap();
    assert_eq!(
        (line(&st, "acme").spend.usage, st.status),
        (usd(2.0), PeriodStatus::Final)
    );
    assert!(validate_range(d("2025-11-10"), d("2025-11-30"), d("2025-12-01"), 20).is_err());
    assert_eq!(
        ledger
            .months(d("2025-12-01"))
            .unwrap()
            .last()
            .map(|m| m.status),
        Some(PeriodStatus::Provisional)
    );
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let first = Ledger::open(dir.path(), 400).unwrap();
    let second = Ledger::open(dir.path(), 400).unwrap_err();
    assert!(matches!(second, LedgerError::Locked { .. }), "{second:?}");
    assert!(
        second.to_string().contains("held by another process"),
        "{second}"
    );
    drop(first);
    Ledger::open(dir.path(), 400).unwrap();
}

#[test]
fn a_corrupt_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join(FILE_NAME), vec![0x5a_u8; 8192]).unwrap();
    let err = Ledger::open(dir.path(), 400).unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
    assert!(err.to_string().contains("move it aside"), "{err}");
}

#[test]
fn a_damaged_page_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let rows: Vec<ActivityRow> = (1..=30)
        .map(|n| row(&format!("2025-11-{n:02}"), "m", 1.0, 1))
        .collect();
    let reads: Vec<(String, Vec<ActivityRow>)> =
        (0..200).map(|k| (format!("k{k}"), rows.clone())).collect();
    let reads: Vec<KeyRead<'_>> = reads
        .iter()
        .map(|(h, r)| read(h, "acme", "2025-12-01T07:00:00Z", r))
        .collect();
    ledger.record_reads(&reads).unwrap();
    drop(ledger);
    // Checkpointed on close: overwrite pages past the schema with garbage.
    let path = dir.path().join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    assert!(bytes.len() > 8 * 4096, "{}", bytes.len());
    for b in &mut bytes[4 * 4096..] {
        *b = 0xA5;
    }
    std::fs::write(&path, bytes).unwrap();
    let outcome =
        Ledger::open(dir.path(), 400).and_then(|l| l.statement(november(), d("2025-12-01")));
    let err = outcome.unwrap_err();
    assert!(matches!(err, LedgerError::Corrupt { .. }), "{err:?}");
}

#[test]
fn an_unusable_path_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let err = Ledger::open(&file, 400).unwrap_err();
    assert!(matches!(err, LedgerError::PathUnusable { .. }), "{err:?}");
    assert!(err.to_string().contains("--storage.path"), "{err}");
}

#[test]
fn an_unreadable_read_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), 400).unwrap();
    let mut bad = row("2025-11-05", "m", 1.0, 1);
    bad.usage = None;
    let rows = [row("2025-11-04", "m", 1.0, 1), bad];
    let w = ledger
        .record_reads(&[read("k1", "acme", "2025-12-01T07:00:00Z", &rows)])
        .unwrap();
    assert_eq!(
        (w.keys, w.refused.as_slice()),
        (0, ["k1".to_string()].as_slice())
    );
    assert!(ledger
        .statement(november(), d("2025-12-01"))
        .unwrap()
        .companies
        .is_empty());
}
