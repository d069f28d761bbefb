//! Capture: the commit-timestamp column a user adds, the triggers and index the host
//! installs, and the epoch clock a poll closes to get its read point.

use ledgerhost_core::{PortError, PortResult, TableSchema};
use rusqlite::{Connection, OptionalExtension};

use super::connection::NOW_MICROS;
use super::names::{BACKEND, quote};

/// Default name of the commit-timestamp column.
pub const DEFAULT_COMMIT_TS_COLUMN: &str = "commit_ts";

/// The SQL a user runs to make a table capturable: the commit-timestamp column. The host
/// installs the stamping triggers itself when it starts.
pub fn capture_ddl(table: &str, commit_ts_column: &str) -> String {
    format!(
        "ALTER TABLE {} ADD COLUMN {} INTEGER;",
        quote(table),
        quote(commit_ts_column)
    )
}

/// The capture index on (commit-ts column, primary key) that every page reads through.
pub(super) fn index_name(table: &str) -> String {
    format!("_ledgerhost_{table}_ts")
}

/// Installs the keyset index and the stamping triggers (replacing triggers of another
/// definition), and stamps rows that predate capture. Idempotent; one write transaction.
/// Returns how many rows were stamped.
pub(super) fn install_capture(conn: &mut Connection, schema: &TableSchema) -> PortResult<usize> {
    let failed = |what: &str, e: rusqlite::Error| {
        PortError::unavailable(
            BACKEND,
            format!("cannot {what} on table `{}`: {e}", schema.name),
        )
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| failed("start the capture transaction", e))?;
    let without_rowid: bool = tx
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE schema = 'main' AND name = ?1",
            [&schema.name],
            |r| r.get(0),
        )
        .map_err(|e| failed("read the table kind", e))?;
    let t = quote(&schema.name);
    let ts = quote(&schema.commit_ts_column);
    let keys: Vec<String> = schema.primary_key.iter().map(|k| quote(k)).collect();
    tx.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {t} ({ts}, {})",
        quote(&index_name(&schema.name)),
        keys.join(", ")
    ))
    .map_err(|e| failed("create the commit-timestamp index", e))?;
    let this_row = if without_rowid {
        keys.iter()
            .map(|k| format!("{k} = NEW.{k}"))
            .collect::<Vec<_>>()
            .join(" AND ")
    } else {
        "rowid = NEW.rowid".to_string()
    };
    let stamp = format!(
        "BEGIN
  UPDATE _ledgerhost_clock SET ts = max(ts + 1, {NOW_MICROS}), open = 1 WHERE id = 1 AND open = 0;
  UPDATE {t} SET {ts} = (SELECT ts FROM _ledgerhost_clock WHERE id = 1) WHERE {this_row};
END"
    );
    let triggers = [
        (
            format!("_ledgerhost_{}_ins", schema.name),
            format!("AFTER INSERT ON {t}"),
        ),
        (
            format!("_ledgerhost_{}_upd", schema.name),
            // Skips rows already stamped with the open epoch: the trigger's own update, and a
            // row written twice in one transaction.
            format!(
                "AFTER UPDATE ON {t} WHEN NOT EXISTS (SELECT 1 FROM _ledgerhost_clock \
                 WHERE id = 1 AND open = 1 AND ts IS NEW.{ts})"
            ),
        ),
    ];
    for (name, when) in triggers {
        let sql = format!("CREATE TRIGGER {} {when}\n{stamp}", quote(&name));
        let existing: Option<String> = tx
            .query_row(
                "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?1",
                [&name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| failed("read the capture triggers", e))?;
        if existing.as_deref() == Some(sql.as_str()) {
            continue;
        }
        if existing.is_some() {
            tracing::info!(table = %schema.name, trigger = %name, "replacing capture trigger of an older definition");
            tx.execute_batch(&format!("DROP TRIGGER {}", quote(&name)))
                .map_err(|e| failed("drop an outdated capture trigger", e))?;
        }
        tx.execute_batch(&sql)
            .map_err(|e| failed("install the capture triggers", e))?;
        tracing::info!(table = %schema.name, trigger = %name, "capture trigger installed");
    }
    // Setting NULL to NULL fires the update trigger, which stamps the row.
    let stamped = tx
        .execute(
            &format!("UPDATE {t} SET {ts} = NULL WHERE {ts} IS NULL"),
            [],
        )
        .map_err(|e| failed("stamp rows written before capture", e))?;
    tx.commit()
        .map_err(|e| failed("commit the capture transaction", e))?;
    if stamped > 0 {
        tracing::info!(table = %schema.name, rows = stamped, "stamped rows written before capture began");
    }
    Ok(stamped)
}
