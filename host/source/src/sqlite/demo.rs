//! The demo's application (`ledgerhost demo`): what an application writing to an SQLite
//! source does, an `orders` table and a writer inserting, updating and soft-deleting
//! orders. It plays the application, not the host: the host reads these rows through
//! [`super::SqliteSource`] like any other.

use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, params};

/// The demo's table, as an application would create it (see `ledgerhost sqlite-ddl`).
pub const ORDERS_DDL: &str = "CREATE TABLE IF NOT EXISTS orders (
    id INTEGER PRIMARY KEY,
    client_id TEXT NOT NULL,
    amount INTEGER NOT NULL,
    status TEXT NOT NULL,
    deleted BOOLEAN NOT NULL DEFAULT 0,
    commit_ts INTEGER
)";

/// Creates the `orders` table in the database file `db` if missing.
pub fn create_orders(db: &Path) -> rusqlite::Result<()> {
    Connection::open(db)?.execute_batch(ORDERS_DDL)
}

/// Inserts `rate` orders per second in small transactions, updates and soft-deletes a few.
pub fn write_orders(db: &Path, rate: u32, stop: &dyn Fn() -> bool) -> rusqlite::Result<()> {
    let mut conn = Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut next_id: i64 =
        conn.query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM orders", [], |r| {
            r.get(0)
        })?;
    let per_tick = (rate / 10).max(1);
    // A small deterministic generator: the demo needs variety, not randomness.
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15 ^ next_id as u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    while !stop() {
        let tx = conn.transaction()?;
        for _ in 0..per_tick {
            let client = format!("c-{}", rnd() % 20);
            let amount = (rnd() % 2000) as i64;
            tx.execute(
                "INSERT INTO orders (id, client_id, amount, status) VALUES (?1, ?2, ?3, 'new')",
                params![next_id, client, amount],
            )?;
            next_id += 1;
        }
        if next_id > 10 {
            let id = (rnd() % (next_id as u64 - 1)) as i64 + 1;
            if rnd() % 10 == 0 {
                tx.execute("UPDATE orders SET deleted = 1 WHERE id = ?1", [id])?;
            } else {
                tx.execute("UPDATE orders SET status = 'shipped' WHERE id = ?1", [id])?;
            }
        }
        tx.commit()?;
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}
