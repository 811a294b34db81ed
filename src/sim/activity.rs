//! The activity endpoint: `GET /activity`, one key's spend rows over the last
//! 30 completed UTC days (`api_key_hash`), or the whole account's (no
//! `api_key_hash`), or one of those days (`date`).

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Utc};
use hyper::Response;
use serde_json::{json, Value};

use super::account::SimState;
use super::http::{error_response, json_response, SimBody};

/// `GET /activity?[api_key_hash=…][&date=YYYY-MM-DD]`: with `api_key_hash`,
/// the key's rows in `st.activity` (or its dense `st.activity_every_day`
/// rows); without, the account's ([`account_rows`]); within the window.
pub(super) fn list(params: &HashMap<String, String>, st: &SimState) -> Response<SimBody> {
    // The last 30 completed UTC days; today or older dates are a 400, as upstream.
    let today = st.today.unwrap_or_else(|| Utc::now().date_naive());
    let oldest = today - chrono::Duration::days(30);
    let date = match params.get("date") {
        Some(d) => match NaiveDate::parse_from_str(d, "%Y-%m-%d") {
            Ok(d) if d < today && d >= oldest => Some(d),
            _ => {
                return error_response(400, "Date must be within the last 30 (completed) UTC days")
            }
        },
        None => None,
    };
    let in_window = |row: &Value| match (row_day(row), date) {
        (Some(d), Some(want)) => d == want,
        (Some(d), None) => d < today && d >= oldest,
        // An unreadable date is served as is: the client must not take it for a zero.
        (None, _) => true,
    };
    let rows: Vec<Value> = match params.get("api_key_hash") {
        Some(hash) => {
            if let Some(status) = st.activity_failures.get(hash) {
                return error_response(*status, "Simulated activity failure");
            }
            let listed = match &st.key_hashes {
                Some(hashes) => hashes.contains(hash),
                None => st.keys.iter().any(|k| k.hash() == hash),
            };
            if !st.activity.contains_key(hash) && !listed {
                return error_response(404, "Resource not found");
            }
            let every_day = if st.activity.contains_key(hash) {
                Vec::new()
            } else {
                every_day_rows(st, today)
            };
            let own = st.activity.get(hash).into_iter().flatten();
            own.chain(&every_day)
                .filter(|row| in_window(row))
                .cloned()
                .collect()
        }
        None => {
            if let Some(status) = st.account_activity_failure {
                return error_response(status, "Simulated account activity failure");
            }
            account_rows(st, today, in_window)
        }
    };
    json_response(200, json!({ "data": rows }))
}

/// The day of a row: the first 10 characters of its `date`.
fn row_day(row: &Value) -> Option<NaiveDate> {
    let date = row.get("date")?.as_str()?.get(..10)?;
    NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()
}

/// `st.activity_every_day` dated on each of the 30 completed days before `today`.
fn every_day_rows(st: &SimState, today: NaiveDate) -> Vec<Value> {
    let days = (1..=30).map(|back| today - chrono::Duration::days(back));
    days.flat_map(|day| {
        st.activity_every_day.iter().map(move |row| {
            let mut row = row.clone();
            row["date"] = json!(format!("{day} 00:00:00"));
            row
        })
    })
    .collect()
}

/// What the account spent, as upstream answers an undated call without
/// `api_key_hash`: every hash's rows in `st.activity` (listed keys, keys
/// deleted since, keys never listed), and `st.activity_every_day` for each
/// listed key without rows of its own, summed per date, model and endpoint
/// (amounts in whole nano-dollars, so the sums are exact; a dense account of
/// 100k keys answers 30 days × its models, not a row per key). Rows without
/// a readable date or amount are served as they are.
fn account_rows(st: &SimState, today: NaiveDate, in_window: impl Fn(&Value) -> bool) -> Vec<Value> {
    let mut merged: BTreeMap<Group, Sum> = BTreeMap::new();
    let mut odd = Vec::new();
    let mut add = |row: &Value, times: i128| {
        if !in_window(row) {
            return;
        }
        match Sum::of(row, times) {
            Some((group, sum)) => merged.entry(group).or_default().add(&sum),
            None => odd.push(row.clone()),
        }
    };
    let mut hashes: Vec<&String> = st.activity.keys().collect();
    hashes.sort();
    for hash in hashes {
        for row in &st.activity[hash] {
            add(row, 1);
        }
    }
    let dense = st
        .keys
        .iter()
        .filter(|k| !st.activity.contains_key(k.hash()))
        .count();
    if dense > 0 {
        for row in every_day_rows(st, today) {
            add(&row, dense as i128);
        }
    }
    let mut rows: Vec<Value> = merged
        .into_iter()
        .map(|(group, sum)| sum.row(group))
        .collect();
    rows.extend(odd);
    rows
}

/// A row's figures, `times` over: amounts in nano-dollars, counts.
#[derive(Debug, Default, Clone, Copy)]
struct Sum {
    usage: i128,
    byok: i128,
    counts: [u64; 4],
}

/// The fields a row is merged on: date, model, permaslug, endpoint, provider.
type Group = (String, String, String, String, String);

const COUNTS: [&str; 4] = [
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "reasoning_tokens",
];

impl Sum {
    /// The row's group (date, model, permaslug, endpoint, provider) and
    /// figures; `None` when its date or usage cannot be read.
    fn of(row: &Value, times: i128) -> Option<(Group, Sum)> {
        let text = |field: &str| {
            row.get(field)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let nanos = |field: &str| -> Option<i128> {
            let v = row.get(field)?.as_f64().filter(|v| v.is_finite())?;
            Some((v * 1e9).round() as i128 * times)
        };
        let day = row_day(row)?;
        let usage = nanos("usage")?;
        let byok = nanos("byok_usage_inference").unwrap_or(0);
        let times = u64::try_from(times).ok()?;
        let counts = COUNTS.map(|f| {
            row.get(f)
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .saturating_mul(times)
        });
        let group = (
            format!("{day} 00:00:00"),
            text("model"),
            text("model_permaslug"),
            text("endpoint_id"),
            text("provider_name"),
        );
        Some((
            group,
            Sum {
                usage,
                byok,
                counts,
            },
        ))
    }

    fn add(&mut self, o: &Sum) {
        self.usage += o.usage;
        self.byok += o.byok;
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a = a.saturating_add(b);
        }
    }

    fn row(self, (date, model, permaslug, endpoint, provider): Group) -> Value {
        let mut row = json!({
            "date": date, "model": model, "model_permaslug": permaslug,
            "endpoint_id": endpoint, "provider_name": provider,
            "usage": self.usage as f64 / 1e9,
            "byok_usage_inference": self.byok as f64 / 1e9,
        });
        for (field, count) in COUNTS.iter().zip(self.counts) {
            row[*field] = json!(count);
        }
        row
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimKey;

    fn row(date: &str, model: &str, usage: f64) -> Value {
        json!({"date": date, "model": model, "model_permaslug": model, "endpoint_id": "e",
               "provider_name": "P", "usage": usage, "byok_usage_inference": 0.0,
               "requests": 2, "prompt_tokens": 10, "completion_tokens": 5, "reasoning_tokens": 0})
    }

    #[test]
    fn the_account_answer_sums_every_key_deleted_and_dense_ones_included() {
        let mut st = SimState::new("k");
        let today = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        st.today = Some(today);
        st.keys = vec![
            SimKey::new("w", "listed", "a"),
            SimKey::new("w", "dense", "b"),
        ];
        st.activity.insert(
            "listed".into(),
            vec![row("2025-12-31", "m", 0.1), row("2025-11-01", "m", 9.0)],
        );
        // Deleted (not listed any more): its rows are still the account's.
        st.activity
            .insert("deleted".into(), vec![row("2025-12-31 00:00:00", "m", 0.2)]);
        st.activity_every_day = vec![json!({"model": "m", "model_permaslug": "m",
            "endpoint_id": "e", "provider_name": "P", "usage": 0.000000001,
            "byok_usage_inference": 0.0, "requests": 1, "prompt_tokens": 1,
            "completion_tokens": 1, "reasoning_tokens": 0})];
        let rows = account_rows(&st, today, |r| {
            row_day(r).is_some_and(|d| d < today && d >= today - chrono::Duration::days(30))
        });
        // 30 days of the dense key, the 31st of December merged with the two keys' rows.
        assert_eq!(rows.len(), 30);
        let last = rows
            .iter()
            .find(|r| r["date"] == "2025-12-31 00:00:00")
            .unwrap();
        assert_eq!(last["usage"].as_f64(), Some(0.300000001));
        assert_eq!(last["requests"], 5);
    }
}
