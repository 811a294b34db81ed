//! The ledger's SQL schema, in one place, and opening a file with it: the
//! pragmas (WAL, full sync, exclusive lock), the identity check and creation.
//!
//! Days are integers (days since 1970-01-01), money integer nano-dollars,
//! and keys, companies and models integer ids: a spend row is ~35 bytes, so
//! 100k keys × 400 days fit in well under 1 GiB. The views at the end show
//! the same data with dates, names and dollars for people using `sqlite3`.

use rusqlite::Connection;

/// `PRAGMA application_id`: "ORLG", so a stray SQLite file is not taken for a ledger.
pub(crate) const APPLICATION_ID: i64 = 0x4F52_4C47;
/// `PRAGMA user_version` of the schema below.
pub(crate) const SCHEMA_VERSION: i64 = 1;
/// The model id of a listing figure: the key's `usage_daily`, model unknown.
pub(crate) const LISTING_MODEL: i64 = 0;

/// Applied to every connection before anything is read. EXCLUSIVE locking
/// keeps the file locked by this process for as long as it is open (a second
/// exporter fails at once, `busy_timeout` 0); WAL with `synchronous=FULL`
/// makes a committed transaction survive a crash or a power cut.
pub(crate) const PRAGMAS: &str = "\
PRAGMA busy_timeout = 0;
PRAGMA locking_mode = EXCLUSIVE;
PRAGMA journal_mode = WAL;
PRAGMA synchronous = FULL;
PRAGMA foreign_keys = OFF;
PRAGMA cache_size = -8192;
";

/// The tables, each with what it holds.
const SCHEMA: &str = "
-- Small facts about the ledger itself: last_write (Unix seconds),
-- restated_days (key-days whose settled figures changed on a re-read).
CREATE TABLE meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;

-- Company names as attributed by the config (the unassigned company included).
CREATE TABLE companies (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);

-- Model slugs from /activity; id 0 is a listing figure (model not known).
CREATE TABLE models (
    id   INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE
);
INSERT INTO models (id, name) VALUES (0, '(listing figure)');

-- Every key ever seen, kept after it leaves (its days stay). Dates are day
-- numbers; company_id is the key's attribution now (each day keeps its own).
CREATE TABLE keys (
    id              INTEGER PRIMARY KEY,
    hash            TEXT NOT NULL UNIQUE,
    name            TEXT NOT NULL DEFAULT '',
    label           TEXT NOT NULL DEFAULT '',
    workspace       TEXT,
    creator         TEXT,
    company_id      INTEGER NOT NULL,
    expires_at      INTEGER,               -- Unix seconds, when it expires
    first_seen      INTEGER NOT NULL,      -- day number
    last_seen       INTEGER NOT NULL,      -- day number
    departed_on     INTEGER,               -- day number; NULL while listed
    departed_reason TEXT CHECK (departed_reason IN ('deleted', 'expired'))
);

-- Per UTC day, key and model: what /activity reported (endpoints summed), or
-- a listing figure (model 0) for a day /activity has not covered yet.
-- company_id is the company the key was attributed to on that day.
CREATE TABLE spend (
    day               INTEGER NOT NULL,
    key_id            INTEGER NOT NULL,
    model_id          INTEGER NOT NULL,
    company_id        INTEGER NOT NULL,
    usage_nanos       INTEGER NOT NULL,
    byok_nanos        INTEGER NOT NULL,
    requests          INTEGER NOT NULL,
    prompt_tokens     INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    reasoning_tokens  INTEGER NOT NULL,
    PRIMARY KEY (day, key_id, model_id)
) WITHOUT ROWID;

-- Which days each key's /activity reads covered (a covered day without spend
-- rows spent nothing), as runs of days with one status and one company:
-- settled = 1 when read at least 6 h after the day ended, else provisional.
CREATE TABLE coverage (
    key_id     INTEGER NOT NULL,
    first_day  INTEGER NOT NULL,
    last_day   INTEGER NOT NULL,
    settled    INTEGER NOT NULL,
    company_id INTEGER NOT NULL,
    PRIMARY KEY (key_id, first_day)
) WITHOUT ROWID;

-- The account's own spend per UTC day (undated /activity, every key), to
-- tie a statement to what OpenRouter billed.
CREATE TABLE account_days (
    day         INTEGER PRIMARY KEY,
    settled     INTEGER NOT NULL,
    usage_nanos INTEGER NOT NULL,
    byok_nanos  INTEGER NOT NULL,
    requests    INTEGER NOT NULL
) WITHOUT ROWID;

-- For people: the same rows with dates, names and exact dollars as text.
CREATE VIEW daily_spend AS
SELECT date(s.day * 86400, 'unixepoch') AS day, c.name AS company, k.name AS key_name,
       k.hash AS key_hash, m.name AS model, dollars(s.usage_nanos) AS usage_usd,
       dollars(s.byok_nanos) AS byok_usage_usd, s.requests, s.prompt_tokens,
       s.completion_tokens, s.reasoning_tokens
FROM spend s JOIN keys k ON k.id = s.key_id JOIN companies c ON c.id = s.company_id
JOIN models m ON m.id = s.model_id;

CREATE VIEW key_details AS
SELECT k.hash, k.name, k.label, k.workspace, k.creator, c.name AS company,
       date(k.first_seen * 86400, 'unixepoch') AS first_seen,
       date(k.last_seen * 86400, 'unixepoch') AS last_seen,
       date(k.departed_on * 86400, 'unixepoch') AS departed_on, k.departed_reason
FROM keys k JOIN companies c ON c.id = k.company_id;
";

/// `dollars(nanos)` in the views: exact decimal text, written out in SQL so
/// that a plain `sqlite3` shell shows the views without our code.
const DOLLARS: &str = "(CASE WHEN {x} < 0 THEN '-' ELSE '' END || (abs({x}) / 1000000000) || '.' || printf('%09d', abs({x}) % 1000000000))";

/// The schema with `dollars(…)` expanded.
fn schema_sql() -> String {
    let mut sql = SCHEMA.to_string();
    for column in ["s.usage_nanos", "s.byok_nanos"] {
        sql = sql.replace(
            &format!("dollars({column})"),
            &DOLLARS.replace("{x}", column),
        );
    }
    sql
}

/// What [`prepare`] found in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FileState {
    Ready,
    /// Not ours, or from a newer version: the reason.
    Incompatible(String),
}

/// Applies [`PRAGMAS`], takes the write lock at once (an immediate write
/// transaction, kept under EXCLUSIVE locking) and creates the schema in a
/// new file; checks the identity and version of an existing one.
pub(crate) fn prepare(conn: &Connection) -> rusqlite::Result<FileState> {
    conn.execute_batch(PRAGMAS)?;
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let state = check_or_create(conn);
    match state {
        Ok(_) => conn.execute_batch("COMMIT")?,
        Err(_) => {
            let _ = conn.execute_batch("ROLLBACK");
        }
    }
    state
}

fn check_or_create(conn: &Connection) -> rusqlite::Result<FileState> {
    let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))?;
    if app == 0 && version == 0 && tables == 0 {
        conn.execute_batch(&schema_sql())?;
        conn.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID}; PRAGMA user_version = {SCHEMA_VERSION};"
        ))?;
        return Ok(FileState::Ready);
    }
    if app != APPLICATION_ID {
        return Ok(FileState::Incompatible(
            "it is a SQLite database of another program (application_id differs)".to_string(),
        ));
    }
    if version != SCHEMA_VERSION {
        return Ok(FileState::Incompatible(format!(
            "its schema version is {version}; this exporter reads version {SCHEMA_VERSION}"
        )));
    }
    Ok(FileState::Ready)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_creates_and_views_show_exact_dollars() {
        let conn = Connection::open_in_memory().unwrap();
        assert_eq!(prepare(&conn).unwrap(), FileState::Ready);
        conn.execute_batch(
            "INSERT INTO companies VALUES (1, 'acme');
             INSERT INTO models VALUES (1, 'openai/gpt-4.1');
             INSERT INTO keys (id, hash, company_id, first_seen, last_seen) VALUES (1, 'h', 1, 0, 0);
             INSERT INTO spend VALUES (20422, 1, 1, 1, 1234567890123, -5, 1, 2, 3, 4);",
        )
        .unwrap();
        let (day, usd, byok): (String, String, String) = conn
            .query_row(
                "SELECT day, usage_usd, byok_usage_usd FROM daily_spend",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(
            (day.as_str(), usd.as_str(), byok.as_str()),
            ("2025-11-30", "1234.567890123", "-0.000000005")
        );
        // A second prepare finds the schema in place.
        assert_eq!(prepare(&conn).unwrap(), FileState::Ready);
    }

    #[test]
    fn a_foreign_database_is_refused() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE t (x)").unwrap();
        assert!(matches!(
            prepare(&conn).unwrap(),
            FileState::Incompatible(_)
        ));
    }
}
