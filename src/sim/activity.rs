//! The activity endpoint: `GET /activity`, one key's spend rows over the last
//! 30 completed UTC days, or one of those days.

use std::collections::HashMap;

use chrono::{NaiveDate, Utc};
use hyper::Response;
use serde_json::{json, Value};

use super::account::SimState;
use super::http::{error_response, json_response, SimBody};

/// `GET /activity?api_key_hash=…[&date=YYYY-MM-DD]`: the key's rows in
/// `st.activity` (or its dense `st.activity_every_day` rows), within the window.
pub(super) fn list(params: &HashMap<String, String>, st: &SimState) -> Response<SimBody> {
    // The last 30 completed UTC days; today or older dates are a 400, as upstream.
    let today = Utc::now().date_naive();
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
    let hash = params.get("api_key_hash").cloned().unwrap_or_default();
    if let Some(status) = st.activity_failures.get(&hash) {
        return error_response(*status, "Simulated activity failure");
    }
    if !st.activity.contains_key(&hash) && !st.keys.iter().any(|k| k.hash() == hash) {
        return error_response(404, "Resource not found");
    }
    let every_day = if st.activity.contains_key(&hash) {
        Vec::new()
    } else {
        every_day_rows(st, today)
    };
    let rows: Vec<Value> = st
        .activity
        .get(&hash)
        .into_iter()
        .flatten()
        .chain(&every_day)
        .filter(|row| {
            let d = row
                .get("date")
                .and_then(Value::as_str)
                .and_then(|d| d.get(..10))
                .and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
            match (d, date) {
                (Some(d), Some(want)) => d == want,
                (Some(d), None) => d < today && d >= oldest,
                // An unreadable date is served as is: the client must not take it for a zero.
                (None, _) => true,
            }
        })
        .cloned()
        .collect();
    json_response(200, json!({ "data": rows }))
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
