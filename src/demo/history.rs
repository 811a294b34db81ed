//! The demo's ledger: a fresh temporary directory per run (the clone's
//! `data/` is never written), seeded so that `/statements` shows the current
//! month and the two before it. The simulator's `/activity` covers 30 days,
//! so the older days are generated here: deterministic from the demo keys
//! and the date, in exact nano-dollars, with one key (`globex-eu`) that was
//! deleted last month and keeps its days. The account's own spend is seeded
//! for every day too, as the account-wide `/activity` would have answered:
//! every key's rows and those of short-lived keys never listed
//! ([`UNLISTED_KEYS`]), so each past month shows a small unattributed line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, NaiveTime, Utc};

use super::{demo_hash, demo_state, MODELS, UNLISTED_KEYS};
use crate::activity::{ActivityRow, HISTORY_DAYS};
use crate::ledger::{
    AccountRead, KeyRead, Ledger, LedgerError, ListedKey, Month, DEFAULT_RETENTION_DAYS,
};
use crate::sim::SimState;

/// The key the demo config still names although OpenRouter deleted it.
const DEPARTED_KEY: &str = "globex-eu";

/// Each demo key's company, as `demo_config.yaml` attributes it.
const COMPANIES: [(&str, &str); 16] = [
    ("acme-production", "acme"),
    ("acme-staging", "acme"),
    ("acme-research", "acme"),
    ("globex-prod", "globex"),
    ("globex-staging", "globex"),
    ("globex-eu", "globex"),
    ("initech-api", "initech"),
    ("initech-batch", "initech"),
    ("umbrella-chat", "umbrella"),
    ("umbrella-embed", "umbrella"),
    ("legacy-shared-key", "unassigned"),
    ("hooli-web", "hooli"),
    ("hooli-batch", "hooli"),
    ("platform-ci", "platform-team"),
    ("platform-evals", "platform-team"),
    ("intern-sandbox", "unassigned"),
];

/// The demo's ledger, removed with its directory when dropped.
#[derive(Debug)]
pub struct DemoLedger {
    ledger: Arc<Ledger>,
    dir: PathBuf,
}

impl DemoLedger {
    /// Opens a new ledger in a temporary directory and seeds its history
    /// for `now`.
    pub fn open(now: DateTime<Utc>) -> Result<DemoLedger, LedgerError> {
        let dir = std::env::temp_dir().join(format!(
            "openrouter-cost-exporter-demo-{}-{:08x}",
            std::process::id(),
            fastrand::u32(..)
        ));
        let ledger = match Ledger::open(&dir, DEFAULT_RETENTION_DAYS) {
            Ok(ledger) => Arc::new(ledger),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let demo = DemoLedger { ledger, dir };
        seed(&demo.ledger, now)?;
        Ok(demo)
    }

    /// The ledger, for the server (`LedgerAccess::Open`) and the exporter.
    pub fn ledger(&self) -> Arc<Ledger> {
        Arc::clone(&self.ledger)
    }

    /// The temporary directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for DemoLedger {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A demo key as the history knows it.
struct HistoryKey {
    name: String,
    hash: String,
    company: &'static str,
    /// Typical spend per day, in nano-dollars.
    per_day: i64,
    /// The simulator's 30 days, as its `/activity` answers them.
    recent: Vec<ActivityRow>,
}

/// The demo keys (the departed one too), each with its rows taken out of
/// `state.activity`: what is left there is spend no listed key explains.
fn history_keys(state: &mut SimState) -> Vec<HistoryKey> {
    let mut keys: Vec<HistoryKey> = state
        .keys
        .iter()
        .filter_map(|k| {
            let name = k.fields.get("name")?.as_str()?.to_string();
            let hash = k.hash().to_string();
            let recent = state
                .activity
                .remove(&hash)
                .unwrap_or_default()
                .into_iter()
                .filter_map(|row| serde_json::from_value(row).ok())
                .collect();
            Some(HistoryKey {
                company: company_of(&name),
                per_day: (k.num("usage_monthly").unwrap_or(0.0) / 20.0 * 1e9) as i64,
                name,
                hash,
                recent,
            })
        })
        .collect();
    keys.push(HistoryKey {
        name: DEPARTED_KEY.to_string(),
        hash: demo_hash(DEPARTED_KEY),
        company: company_of(DEPARTED_KEY),
        per_day: 35_250_000_000,
        recent: Vec::new(),
    });
    keys
}

/// The keys never listed, as the history knows them (only the account sees their rows).
fn unlisted_key() -> HistoryKey {
    HistoryKey {
        name: UNLISTED_KEYS.to_string(),
        hash: demo_hash(UNLISTED_KEYS),
        company: "",
        per_day: 180_000_000,
        recent: Vec::new(),
    }
}

/// The rows of every read, and the unlisted keys' (a window's account-wide answer).
fn account_rows(key_rows: &[Vec<ActivityRow>], unlisted: Vec<ActivityRow>) -> Vec<ActivityRow> {
    key_rows.iter().flatten().cloned().chain(unlisted).collect()
}

fn company_of(name: &str) -> &'static str {
    COMPANIES
        .iter()
        .find(|(key, _)| *key == name)
        .map_or("unassigned", |(_, company)| company)
}

/// Lists the keys from the first history day (the departed one until its
/// departure), records generated reads for every day older than the
/// simulator's 30 (each window's account-wide answer too: every key's rows
/// and the unlisted keys'), then the simulator's own 30 days.
fn seed(ledger: &Ledger, now: DateTime<Utc>) -> Result<(), LedgerError> {
    let today = now.date_naive();
    let first = Month::of(today).previous().previous().first_day();
    let departed_on = Month::of(today).previous().first_day() + Duration::days(9);
    let (mut state, _) = demo_state("demo");
    let keys = history_keys(&mut state);
    let unlisted = unlisted_key();
    let listing = |with_departed: bool| -> Vec<ListedKey<'_>> {
        keys.iter()
            .filter(|k| with_departed || k.name != DEPARTED_KEY)
            .map(|k| ListedKey {
                hash: &k.hash,
                name: &k.name,
                label: "sk-or-v1-…",
                workspace: None,
                creator: None,
                company: k.company,
                expires_at: None,
                usage_today: None,
                byok_today: None,
            })
            .collect()
    };
    ledger.record_listing(at(first, 0), &listing(true))?;
    // Windows of 30 days from `first` to where the simulator's begin (the
    // last may overlap the one before: the same rows again change nothing).
    let sim_first = today - Duration::days(HISTORY_DAYS);
    let mut end = first;
    while end < sim_first {
        end = (end + Duration::days(HISTORY_DAYS)).min(sim_first);
        let rows: Vec<Vec<ActivityRow>> = keys
            .iter()
            .map(|k| generated_rows(k, end, first, departed_on))
            .collect();
        let reads: Vec<KeyRead<'_>> = keys
            .iter()
            .zip(&rows)
            .map(|(k, rows)| key_read(k, rows, end))
            .collect();
        ledger.record_reads(&reads)?;
        let account = account_rows(&rows, generated_rows(&unlisted, end, first, departed_on));
        ledger.record_account(AccountRead {
            today: end,
            read_at: at(end, 7),
            rows: &account,
        })?;
    }
    ledger.record_listing(at(departed_on, 0), &listing(false))?;
    seed_recent(ledger, &keys, state, now)
}

/// The simulator's own 30 days, read at `now`: each key's, and the account's
/// (its keys' rows and the rest of `state.activity`, as its account-wide
/// `/activity` answers them).
fn seed_recent(
    ledger: &Ledger,
    keys: &[HistoryKey],
    state: SimState,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let today = now.date_naive();
    let recent: Vec<KeyRead<'_>> = keys
        .iter()
        .filter(|k| !k.recent.is_empty())
        .map(|k| KeyRead {
            read_at: now,
            ..key_read(k, &k.recent, today)
        })
        .collect();
    ledger.record_reads(&recent)?;
    let recent_rows: Vec<Vec<ActivityRow>> = keys.iter().map(|k| k.recent.clone()).collect();
    let rest = state
        .activity
        .into_values()
        .flatten()
        .filter_map(|row| serde_json::from_value(row).ok())
        .collect();
    let account = account_rows(&recent_rows, rest);
    ledger.record_account(AccountRead {
        today,
        read_at: now,
        rows: &account,
    })?;
    Ok(())
}

/// A read for the 30 days before `today`, settled (read at 07:00 UTC).
fn key_read<'a>(key: &'a HistoryKey, rows: &'a [ActivityRow], today: NaiveDate) -> KeyRead<'a> {
    KeyRead {
        hash: &key.hash,
        company: key.company,
        today,
        read_at: at(today, 7),
        rows,
    }
}

fn at(day: NaiveDate, hour: u32) -> DateTime<Utc> {
    day.and_time(NaiveTime::from_hms_opt(hour, 0, 0).unwrap_or(NaiveTime::MIN))
        .and_utc()
}

/// A key's rows for the 30 days before `end`, from `first` on (and, for the
/// departed key, before `departed_on`): one to three models a day, amounts
/// in whole nano-dollars that vary with the day.
fn generated_rows(
    key: &HistoryKey,
    end: NaiveDate,
    first: NaiveDate,
    departed_on: NaiveDate,
) -> Vec<ActivityRow> {
    let mut rows = Vec::new();
    let from = (end - Duration::days(HISTORY_DAYS)).max(first);
    let last = if key.name == DEPARTED_KEY {
        departed_on - Duration::days(1)
    } else {
        end - Duration::days(1)
    };
    for day in from.iter_days().take_while(|d| *d <= last) {
        let seed = key
            .hash
            .bytes()
            .chain(day.to_string().into_bytes())
            .fold(7u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let mut rng = fastrand::Rng::with_seed(seed);
        let first_model = key.hash.bytes().map(usize::from).sum::<usize>() % MODELS.len();
        for m in 0..1 + rng.usize(..3) {
            // 60–140 % of the key's pace, halved per further model.
            let nanos = (key.per_day * i64::from(60 + rng.u32(..81)) / 100) >> m;
            if nanos <= 0 {
                continue;
            }
            let requests = u64::try_from(nanos / 5_000_000).unwrap_or(0) + 1;
            rows.push(ActivityRow {
                date: format!("{day} 00:00:00"),
                model: MODELS[(first_model + m) % MODELS.len()].to_string(),
                usage: Some(nanos as f64 / 1e9),
                byok_usage_inference: 0.0,
                requests,
                prompt_tokens: requests * 1400,
                completion_tokens: requests * 350,
                reasoning_tokens: 0,
            });
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_ledger_holds_three_months_and_a_departed_key() {
        let now = Utc::now();
        let demo = DemoLedger::open(now).unwrap();
        let dir = demo.dir().to_path_buf();
        let ledger = demo.ledger();
        let today = now.date_naive();
        let months = ledger.months(today).unwrap();
        let this = Month::of(today);
        for month in [this, this.previous(), this.previous().previous()] {
            assert!(
                months.iter().any(|m| m.month == month),
                "{month} missing from {months:?}"
            );
        }
        let last = this.previous();
        let cs = ledger
            .company_statement(last.days(), "globex", today)
            .unwrap()
            .unwrap();
        let eu = cs.keys.iter().find(|k| k.name == DEPARTED_KEY).unwrap();
        assert_eq!(
            eu.departed.as_ref().map(|d| d.reason.as_str()),
            Some("deleted")
        );
        assert!(eu.spend.usage > crate::money::Usd::ZERO);
        let st = ledger.statement(last.days(), today).unwrap();
        assert!(st.companies.iter().any(|c| c.company == "acme"));
        // The account line ties the month, a little over its keys: the unlisted keys.
        assert_eq!(st.account.days_read, last.days().len());
        let unattributed = st.unattributed().unwrap();
        assert!(unattributed > crate::money::Usd::ZERO, "{unattributed}");
        assert!(
            unattributed.nanos() * 100 < st.total.usage.nanos(),
            "{unattributed}"
        );
        // This month's line holds the days read so far.
        let current = ledger.statement(this.days(), today).unwrap();
        let so_far = today.signed_duration_since(this.first_day()).num_days();
        assert_eq!(i64::from(current.account.days_read), so_far);
        drop(ledger);
        drop(demo);
        assert!(!dir.exists(), "the demo's directory is removed");
    }

    #[test]
    fn the_history_is_deterministic() {
        let now = Utc::now();
        let keys = history_keys(&mut demo_state("demo").0);
        let day = now.date_naive();
        let a = generated_rows(&keys[0], day, day - Duration::days(90), day);
        let b = generated_rows(&keys[0], day, day - Duration::days(90), day);
        assert_eq!(format!("{a:?}"), format!("{b:?}"));
        assert_eq!(company_of("hooli-web"), "hooli");
    }
}
