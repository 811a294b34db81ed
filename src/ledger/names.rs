//! Company and model names ↔ their integer ids, cached in memory (a few
//! hundred of each), so that writing a row never looks a name up in SQLite.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension as _};

/// One interned table (`companies` or `models`).
#[derive(Debug, Default)]
struct Interned {
    ids: HashMap<String, i64>,
    names: HashMap<i64, String>,
}

impl Interned {
    fn load(conn: &Connection, table: &str) -> rusqlite::Result<Interned> {
        let mut stmt = conn.prepare(&format!("SELECT id, name FROM {table}"))?;
        let mut out = Interned::default();
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (id, name) = row?;
            out.ids.insert(name.clone(), id);
            out.names.insert(id, name);
        }
        Ok(out)
    }

    fn id(&mut self, conn: &Connection, table: &str, name: &str) -> rusqlite::Result<i64> {
        if let Some(id) = self.ids.get(name) {
            return Ok(*id);
        }
        conn.prepare_cached(&format!(
            "INSERT INTO {table} (name) VALUES (?1) ON CONFLICT (name) DO NOTHING"
        ))?
        .execute([name])?;
        let id: i64 = conn
            .prepare_cached(&format!("SELECT id FROM {table} WHERE name = ?1"))?
            .query_row([name], |r| r.get(0))?;
        self.ids.insert(name.to_string(), id);
        self.names.insert(id, name.to_string());
        Ok(id)
    }
}

/// The names of companies and models.
#[derive(Debug, Default)]
pub(crate) struct Names {
    companies: Interned,
    models: Interned,
}

impl Names {
    pub fn load(conn: &Connection) -> rusqlite::Result<Names> {
        Ok(Names {
            companies: Interned::load(conn, "companies")?,
            models: Interned::load(conn, "models")?,
        })
    }

    /// The id of company `name`, added if new (inside the caller's transaction).
    pub fn company_id(&mut self, conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        self.companies.id(conn, "companies", name)
    }

    /// The id of model `name`, added if new.
    pub fn model_id(&mut self, conn: &Connection, name: &str) -> rusqlite::Result<i64> {
        self.models.id(conn, "models", name)
    }

    /// The id of company `name` if the ledger has it (reads never add names).
    pub fn find_company(&self, name: &str) -> Option<i64> {
        self.companies.ids.get(name).copied()
    }

    pub fn company(&self, id: i64) -> &str {
        self.companies
            .names
            .get(&id)
            .map_or("(unknown company)", String::as_str)
    }

    pub fn model(&self, id: i64) -> &str {
        self.models
            .names
            .get(&id)
            .map_or("(unknown model)", String::as_str)
    }
}

/// The id of the key `hash`, if the ledger has it.
pub(crate) fn find_key(conn: &Connection, hash: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT id FROM keys WHERE hash = ?1")?
        .query_row([hash], |r| r.get(0))
        .optional()
}
