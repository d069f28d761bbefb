//! Which schema changes a running poller may follow.
//!
//! Consumers decode each event with the schema it carries, so a change is safe when every
//! reader that knew the old shape still finds what it relied on: new nullable columns and
//! dropped nullable non-key columns are fine; everything else stops the table.

use ledgerhost_core::TableSchema;

/// A schema change the poller refuses to follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("table {table}, column {column}: {reason}")]
pub struct Incompatibility {
    /// The table whose schema changed.
    pub table: String,
    /// The column the change concerns (the key columns, joined by `,`, for a key change).
    pub column: String,
    /// Why the change cannot be followed.
    pub reason: String,
}

/// Ok when `new` can replace `old` while running.
pub fn check_compatible(old: &TableSchema, new: &TableSchema) -> Result<(), Incompatibility> {
    let fail = |column: &str, reason: String| {
        Err(Incompatibility {
            table: new.name.clone(),
            column: column.to_string(),
            reason,
        })
    };
    if old.primary_key != new.primary_key {
        return fail(
            &new.primary_key.join(","),
            format!(
                "primary key changed from ({}) to ({})",
                old.primary_key.join(", "),
                new.primary_key.join(", ")
            ),
        );
    }
    if old.commit_ts_column != new.commit_ts_column {
        return fail(
            &new.commit_ts_column,
            format!(
                "commit-timestamp column changed from {}",
                old.commit_ts_column
            ),
        );
    }
    for o in &old.columns {
        match new.columns.iter().find(|n| n.name == o.name) {
            Some(n) if n.ty != o.ty => {
                return fail(
                    &o.name,
                    format!("type changed from {:?} to {:?}", o.ty, n.ty),
                );
            }
            Some(n) if o.nullable && !n.nullable => {
                return fail(&o.name, "became NOT NULL".into());
            }
            Some(_) => {}
            None if old.primary_key.contains(&o.name) => {
                return fail(&o.name, "a primary-key column was dropped".into());
            }
            None if !o.nullable => {
                return fail(
                    &o.name,
                    "a NOT NULL column was dropped (readers rely on it)".into(),
                );
            }
            None => {}
        }
    }
    for n in &new.columns {
        if !n.nullable && !old.columns.iter().any(|o| o.name == n.name) {
            return fail(
                &n.name,
                "a NOT NULL column was added (older readers cannot default it); add it as \
                 nullable"
                    .into(),
            );
        }
    }
    Ok(())
}
