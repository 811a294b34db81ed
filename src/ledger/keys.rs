//! Recording a listing: the keys' metadata (name, label, workspace,
//! creator, company, first and last seen), their departures (deleted or
//! expired), and today's listing figure for days `/activity` has not read.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use rusqlite::{params, Connection, OptionalExtension as _, Transaction};

use super::range::day_number;
use super::schema::LISTING_MODEL;
use super::{nanos_i64, Failure, Ledger, LedgerError};
use crate::money::Usd;

/// One key of a complete listing, attributed to `company` now.
#[derive(Debug, Clone, Copy)]
pub struct ListedKey<'a> {
    pub hash: &'a str,
    pub name: &'a str,
    pub label: &'a str,
    pub workspace: Option<&'a str>,
    pub creator: Option<&'a str>,
    pub company: &'a str,
    /// Unix seconds; a key past it has departed ("expired").
    pub expires_at: Option<i64>,
    /// The listing's `usage_daily` and `byok_usage_daily`: today so far.
    pub usage_today: Option<Usd>,
    pub byok_today: Option<Usd>,
}

/// What a listing changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ListingSummary {
    pub new_keys: usize,
    /// Keys whose metadata, company or last-seen day changed.
    pub updated_keys: usize,
    /// Keys no longer listed (deleted) or past their expiry, this time.
    pub departed_keys: usize,
    /// Listing figures written for today (days `/activity` has not covered).
    pub listing_days: usize,
}

/// A key as the ledger has it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    id: i64,
    name: String,
    label: String,
    workspace: Option<String>,
    creator: Option<String>,
    company: i64,
    expires_at: Option<i64>,
    last_seen: i64,
    departed_on: Option<i64>,
}

impl Ledger {
    /// Records a **complete** listing seen at `seen_at`: new keys are added,
    /// changed ones updated (each key's days keep the company they had),
    /// keys missing from it depart as deleted (or expired, past their
    /// expiry), and a key listed again returns. Today's figure of a key is
    /// kept as a provisional listing figure until `/activity` covers the day.
    /// A partial listing would depart the keys it misses: do not pass one.
    pub fn record_listing(
        &self,
        seen_at: DateTime<Utc>,
        keys: &[ListedKey<'_>],
    ) -> Result<ListingSummary, LedgerError> {
        self.write(|tx, names| {
            let today = day_number(seen_at.date_naive());
            let mut summary = ListingSummary::default();
            let mut listed = HashSet::with_capacity(keys.len());
            for key in keys {
                let company = names.company_id(tx, key.company)?;
                let id = upsert_key(tx, key, company, seen_at, &mut summary)?;
                listed.insert(id);
                if let (Some(usage), byok) = (key.usage_today, key.byok_today.unwrap_or(Usd::ZERO))
                {
                    summary.listing_days += listing_figure(tx, today, id, company, usage, byok)?;
                }
            }
            summary.departed_keys += depart_unlisted(tx, &listed, seen_at)?;
            Ok(summary)
        })
    }
}

/// The key with `hash` as the ledger has it. One indexed lookup per listed
/// key, rather than every key the retention keeps loaded into one map at
/// each recorded listing (a spike of tens of MB at 100k keys).
fn stored_key(conn: &Connection, hash: &str) -> rusqlite::Result<Option<Stored>> {
    conn.prepare_cached(
        "SELECT id, name, label, workspace, creator, company_id, expires_at, last_seen, departed_on \
         FROM keys WHERE hash = ?1",
    )?
    .query_row([hash], |r| {
        Ok(Stored {
            id: r.get(0)?,
            name: r.get(1)?,
            label: r.get(2)?,
            workspace: r.get(3)?,
            creator: r.get(4)?,
            company: r.get(5)?,
            expires_at: r.get(6)?,
            last_seen: r.get(7)?,
            departed_on: r.get(8)?,
        })
    })
    .optional()
}

/// Marks every key still present but not in `listed` as departed on the
/// day of `seen_at`: expired when past its expiry, deleted otherwise. How many.
fn depart_unlisted(
    tx: &Transaction<'_>,
    listed: &HashSet<i64>,
    seen_at: DateTime<Utc>,
) -> rusqlite::Result<usize> {
    let today = day_number(seen_at.date_naive());
    let leaving: Vec<(i64, Option<i64>)> = {
        let mut present =
            tx.prepare_cached("SELECT id, expires_at FROM keys WHERE departed_on IS NULL")?;
        let rows = present.query_map([], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, Option<i64>>(1)?))
        })?;
        let mut leaving = Vec::new();
        for row in rows {
            let (id, expires_at) = row?;
            if !listed.contains(&id) {
                leaving.push((id, expires_at));
            }
        }
        leaving
    };
    for (id, expires_at) in &leaving {
        let reason = if expires_at.is_some_and(|e| e <= seen_at.timestamp()) {
            "expired"
        } else {
            "deleted"
        };
        tx.prepare_cached("UPDATE keys SET departed_on = ?2, departed_reason = ?3 WHERE id = ?1")?
            .execute(params![id, today, reason])?;
    }
    Ok(leaving.len())
}

/// Adds or updates one listed key; its id.
fn upsert_key(
    tx: &Transaction<'_>,
    key: &ListedKey<'_>,
    company: i64,
    seen_at: DateTime<Utc>,
    summary: &mut ListingSummary,
) -> Result<i64, Failure> {
    let today = day_number(seen_at.date_naive());
    let expired_on = key
        .expires_at
        .filter(|e| *e <= seen_at.timestamp())
        .and_then(|e| DateTime::from_timestamp(e, 0))
        .map(|e| day_number(e.date_naive()));
    let old = stored_key(tx, key.hash)?;
    let old = old.as_ref();
    let wanted = Stored {
        id: old.map_or(0, |o| o.id),
        name: key.name.to_string(),
        label: key.label.to_string(),
        workspace: key.workspace.map(str::to_string),
        creator: key.creator.map(str::to_string),
        company,
        expires_at: key.expires_at,
        last_seen: today,
        departed_on: expired_on.map(|on| old.and_then(|o| o.departed_on).unwrap_or(on)),
    };
    if old == Some(&wanted) {
        return Ok(wanted.id);
    }
    let reason = wanted.departed_on.map(|_| "expired");
    let w = &wanted;
    let id = match old {
        Some(o) => {
            tx.prepare_cached(
                "UPDATE keys SET name = ?2, label = ?3, workspace = ?4, creator = ?5, company_id = ?6, \
                 expires_at = ?7, last_seen = ?8, departed_on = ?9, departed_reason = ?10 WHERE id = ?1",
            )?
            .execute(params![o.id, w.name, w.label, w.workspace, w.creator, w.company, w.expires_at, w.last_seen, w.departed_on, reason])?;
            if o.departed_on.is_none() && w.departed_on.is_some() {
                summary.departed_keys += 1;
            }
            summary.updated_keys += 1;
            o.id
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO keys (hash, name, label, workspace, creator, company_id, expires_at, first_seen, \
                 last_seen, departed_on, departed_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?8, ?9, ?10)",
            )?
            .execute(params![key.hash, w.name, w.label, w.workspace, w.creator, w.company, w.expires_at, today, w.departed_on, reason])?;
            summary.new_keys += 1;
            tx.last_insert_rowid()
        }
    };
    Ok(id)
}

/// Keeps today's listing figure of a key whose day `/activity` has not
/// covered (a zero removes it); 1 when a row changed.
fn listing_figure(
    tx: &Transaction<'_>,
    day: i64,
    key: i64,
    company: i64,
    usage: Usd,
    byok: Usd,
) -> Result<usize, Failure> {
    let covered: Option<i64> = tx
        .prepare_cached(
            "SELECT 1 FROM coverage WHERE key_id = ?1 AND first_day <= ?2 AND last_day >= ?2",
        )?
        .query_row([key, day], |r| r.get(0))
        .optional()?;
    if covered.is_some() {
        return Ok(0);
    }
    let usage = nanos_i64(usage, "a listing's usage_daily")?;
    let byok = nanos_i64(byok, "a listing's byok_usage_daily")?;
    if usage == 0 && byok == 0 {
        let gone = tx
            .prepare_cached("DELETE FROM spend WHERE day = ?1 AND key_id = ?2 AND model_id = ?3")?
            .execute(params![day, key, LISTING_MODEL])?;
        return Ok(gone);
    }
    let changed = tx
        .prepare_cached(
            "INSERT INTO spend (day, key_id, model_id, company_id, usage_nanos, byok_nanos, requests, prompt_tokens, \
             completion_tokens, reasoning_tokens) VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0, 0, 0, 0) \
             ON CONFLICT (day, key_id, model_id) DO UPDATE SET company_id = ?4, usage_nanos = ?5, byok_nanos = ?6 \
             WHERE usage_nanos != ?5 OR byok_nanos != ?6 OR company_id != ?4",
        )?
        .execute(params![day, key, LISTING_MODEL, company, usage, byok])?;
    Ok(changed)
}
