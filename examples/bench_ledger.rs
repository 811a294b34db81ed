//! The ledger at scale (issue #23 targets: ≤ 1 GiB, a month's statement < 2 s).
//!
//! ```text
//! cargo run --release --example bench_ledger -- [keys] [days] [dir]
//! ```
//!
//! Defaults: 100 000 keys × 400 days, 20 % of key-days with spend, 3 models
//! each (24 M spend rows), in a temporary directory. The rows are written
//! straight into the schema `Ledger::open` creates (a day per transaction,
//! in key order, as days arrive), every key with one settled coverage run,
//! then the ledger is reopened and measured: file size, a month's statement,
//! one company's statement, the months list, health, restore after a
//! restart, and a day's activity reads of 1 000 keys through `record_reads`.
//! Given a `dir` that already holds a ledger, it only measures (drop the page
//! cache first, `echo 1 > /proc/sys/vm/drop_caches`, for cold figures).

use std::path::PathBuf;
use std::time::Instant;

use chrono::{Duration, NaiveDate};
use openrouter_cost_exporter::activity::ActivityRow;
use openrouter_cost_exporter::ledger::{KeyRead, Ledger, Month, FILE_NAME};
use rusqlite::{params, Connection};

const COMPANIES: i64 = 200;
const MODELS: i64 = 40;
const SPEND_SHARE: f64 = 0.2;
const MODELS_PER_KEY_DAY: i64 = 3;

fn day_number(day: NaiveDate) -> i64 {
    (day - NaiveDate::from_ymd_opt(1970, 1, 1).unwrap_or_default()).num_days()
}

fn hash(key: i64) -> String {
    format!("{key:064x}")
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let keys: i64 = args.next().map_or(Ok(100_000), |a| a.parse())?;
    let days: i64 = args.next().map_or(Ok(400), |a| a.parse())?;
    let temp = tempfile::tempdir()?;
    let dir: PathBuf = args
        .next()
        .map_or_else(|| temp.path().to_path_buf(), PathBuf::from);
    let today = NaiveDate::from_ymd_opt(2026, 8, 1).ok_or("date")?;
    let first = today - Duration::days(days);
    if !dir.join(FILE_NAME).exists() {
        drop(Ledger::open(&dir, 400)?);
        let started = Instant::now();
        let rows = generate(&dir.join(FILE_NAME), keys, first, days)?;
        let took = started.elapsed().as_secs_f64();
        println!("generated {rows} spend rows ({keys} keys × {days} days) in {took:.1} s");
        let size = std::fs::metadata(dir.join(FILE_NAME))?.len() as f64;
        let per_row = size / rows as f64;
        println!(
            "file size: {:.1} MiB ({per_row:.1} bytes a spend row)",
            size / 1048576.0
        );
    }

    let started = Instant::now();
    let ledger = Ledger::open(&dir, 400)?;
    println!("open: {:.3} s", started.elapsed().as_secs_f64());
    let month = Month::of(today).previous();
    for round in ["cold", "warm"] {
        let started = Instant::now();
        let st = ledger.statement(month.days(), today)?;
        println!(
            "statement {month} ({round}): {:.3} s, {} companies, {} keys, total ${}, {:?}",
            started.elapsed().as_secs_f64(),
            st.companies.len(),
            st.total_keys,
            st.total.usage,
            st.status
        );
    }
    let started = Instant::now();
    let cs = ledger
        .company_statement(month.days(), "company-7", today)?
        .ok_or("company-7")?;
    println!(
        "company statement: {:.3} s, {} keys, {} models",
        started.elapsed().as_secs_f64(),
        cs.keys.len(),
        cs.models.len()
    );
    let started = Instant::now();
    let months = ledger.months(today)?;
    println!(
        "months list: {:.3} s, {} months",
        started.elapsed().as_secs_f64(),
        months.len()
    );
    let started = Instant::now();
    let health = ledger.health(today)?;
    println!(
        "health: {:.3} s, {} days held, {} settled",
        started.elapsed().as_secs_f64(),
        health.days_held,
        health.days_settled
    );
    let started = Instant::now();
    let mut restored_rows = 0;
    let summary = ledger.restore(today, |k| restored_rows += k.rows.len())?;
    println!(
        "restore: {:.1} s, {} keys restored ({} rows), {} lacking",
        started.elapsed().as_secs_f64(),
        summary.restored,
        restored_rows,
        summary.lacking
    );
    write_day(&ledger, today + Duration::days(1), keys.min(1000))?;
    Ok(())
}

/// Writes the key-days straight into the schema: ids, one settled run a key, spend rows.
fn generate(
    path: &std::path::Path,
    keys: i64,
    first: NaiveDate,
    days: i64,
) -> rusqlite::Result<u64> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")?;
    let tx = conn.transaction()?;
    for c in 0..COMPANIES {
        tx.execute(
            "INSERT INTO companies (id, name) VALUES (?1, ?2)",
            params![c + 1, format!("company-{c}")],
        )?;
    }
    for m in 1..=MODELS {
        tx.execute(
            "INSERT INTO models (id, name) VALUES (?1, ?2)",
            params![m, format!("vendor/model-{m}")],
        )?;
    }
    let first_day = day_number(first);
    let last_day = first_day + days - 1;
    for k in 1..=keys {
        let company = k % COMPANIES + 1;
        tx.execute(
            "INSERT INTO keys (id, hash, name, label, company_id, first_seen, last_seen) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![k, hash(k), format!("key {k}"), "sk-or-v1-abc...xyz", company, first_day, last_day + 1],
        )?;
        tx.execute(
            "INSERT INTO coverage (key_id, first_day, last_day, settled, company_id) VALUES (?1, ?2, ?3, 1, ?4)",
            params![k, first_day, last_day, company],
        )?;
    }
    tx.commit()?;
    let mut rng = fastrand::Rng::with_seed(23);
    let mut rows = 0u64;
    for day in first_day..=last_day {
        let tx = conn.transaction()?;
        {
            let mut insert = tx.prepare_cached(
                "INSERT INTO spend (day, key_id, model_id, company_id, usage_nanos, byok_nanos, requests, \
                 prompt_tokens, completion_tokens, reasoning_tokens) VALUES (?1, ?2, ?3, ?4, ?5, 0, ?6, ?7, ?8, ?9)",
            )?;
            for k in 1..=keys {
                if rng.f64() >= SPEND_SHARE {
                    continue;
                }
                let base = rng.i64(1..=MODELS - MODELS_PER_KEY_DAY);
                for m in base..base + MODELS_PER_KEY_DAY {
                    let requests = rng.i64(1..400);
                    let usage = rng.i64(10_000..3_000_000_000);
                    let reasoning = if rng.bool() { rng.i64(0..20_000) } else { 0 };
                    insert.execute(params![
                        day,
                        k,
                        m,
                        k % COMPANIES + 1,
                        usage,
                        requests,
                        requests * 900,
                        requests * 250,
                        reasoning
                    ])?;
                    rows += 1;
                }
            }
        }
        tx.commit()?;
    }
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(rows)
}

/// A day's first activity reads of `keys` keys (30 days each, one row a day).
fn write_day(
    ledger: &Ledger,
    today: NaiveDate,
    keys: i64,
) -> Result<(), Box<dyn std::error::Error>> {
    let rows: Vec<ActivityRow> = (1..=30)
        .map(|back| ActivityRow {
            date: (today - Duration::days(back))
                .format("%Y-%m-%d")
                .to_string(),
            model: "vendor/model-1".to_string(),
            usage: Some(0.25),
            byok_usage_inference: 0.0,
            requests: 3,
            prompt_tokens: 100,
            completion_tokens: 10,
            reasoning_tokens: 0,
        })
        .collect();
    let hashes: Vec<String> = (1..=keys).map(hash).collect();
    let read_at = today.and_hms_opt(0, 30, 0).ok_or("time")?.and_utc();
    let reads: Vec<KeyRead<'_>> = hashes
        .iter()
        .map(|h| KeyRead {
            hash: h,
            company: "company-1",
            today,
            read_at,
            rows: &rows,
        })
        .collect();
    let started = Instant::now();
    let summary = ledger.record_reads(&reads)?;
    println!(
        "record_reads: {keys} keys × 30 days in {:.2} s ({} key-days written, {} restated)",
        started.elapsed().as_secs_f64(),
        summary.days_written,
        summary.restated_days
    );
    Ok(())
}
