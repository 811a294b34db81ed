//! Why the ledger cannot be opened, written or read: one error type whose
//! messages say what to do, for the log and for the statement pages' 503.

use std::path::PathBuf;

use rusqlite::ErrorCode;

/// Everything that can go wrong with the ledger. Messages name the file and
/// the remedy; none of them panics the exporter (`/metrics` keeps serving).
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// `--storage.path` could not be created or is not a writable directory.
    #[error(
        "ledger directory {path} is unusable: {reason} (check --storage.path and its permissions)"
    )]
    PathUnusable { path: PathBuf, reason: String },

    /// Another process (a second exporter, or a `sqlite3` shell writing to it)
    /// holds the ledger's exclusive lock.
    #[error(
        "ledger {path} is held by another process (another exporter on the same --storage.path?); \
         stop it or give this one its own --storage.path"
    )]
    Locked { path: PathBuf },

    /// The file is not a SQLite database, or its pages are damaged.
    #[error(
        "ledger {path} is corrupt or not a SQLite database ({detail}); move it aside to start a \
         new ledger, or restore it from a backup"
    )]
    Corrupt { path: PathBuf, detail: String },

    /// A SQLite file that is not an openrouter-cost-exporter ledger, or one
    /// written by a newer version with a schema this one does not know.
    #[error("ledger {path} cannot be used: {reason}")]
    Incompatible { path: PathBuf, reason: String },

    /// An amount or count does not fit SQLite's 64-bit integers (over $9.2
    /// billion, or 9.2e18 tokens): refused rather than wrapped.
    #[error("{what} does not fit the ledger's 64-bit integers; nothing was written")]
    Overflow { what: String },

    /// Any other SQLite failure (disk full, I/O error, …).
    #[error("ledger {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
}

impl LedgerError {
    /// A SQLite error on `path`, sorted into the variants above: busy or
    /// locked is [`LedgerError::Locked`], a damaged file [`LedgerError::Corrupt`].
    pub(crate) fn sqlite(path: &std::path::Path, source: rusqlite::Error) -> LedgerError {
        let path = path.to_path_buf();
        match source.sqlite_error_code() {
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => {
                LedgerError::Locked { path }
            }
            Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt) => LedgerError::Corrupt {
                path,
                detail: source.to_string(),
            },
            _ => LedgerError::Sqlite { path, source },
        }
    }

    pub(crate) fn overflow(what: impl Into<String>) -> LedgerError {
        LedgerError::Overflow { what: what.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_is_locked_and_notadb_is_corrupt() {
        let busy = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
            None,
        );
        let e = LedgerError::sqlite(std::path::Path::new("/x/ledger.sqlite3"), busy);
        assert!(matches!(e, LedgerError::Locked { .. }));
        assert!(e.to_string().contains("held by another process"), "{e}");
        let notadb = rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTADB),
            None,
        );
        let e = LedgerError::sqlite(std::path::Path::new("/x/ledger.sqlite3"), notadb);
        assert!(matches!(e, LedgerError::Corrupt { .. }));
        assert!(e.to_string().contains("corrupt"), "{e}");
    }
}
