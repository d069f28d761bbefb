//! Encode and decode throughput of single-row Avro containers, in rows per second.
//!
//! `cargo bench -p ledgerhost-avro` (optimised). Prints one line per measurement; the rows
//! look like the demo's orders table (keys, money, text, a timestamp, a short array).

use std::hint::black_box;
use std::time::Instant;

use ledgerhost_avro::{Decoder, Encoder};
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, TableSchema, Value};

const ROWS: usize = 200_000;

fn table() -> TableSchema {
    let col = Column::new;
    TableSchema {
        name: "orders".into(),
        columns: vec![
            col("id", ColumnType::Int64, false),
            col("client", ColumnType::String, false),
            col("amount", ColumnType::Numeric, true),
            col("status", ColumnType::String, true),
            col("created_at", ColumnType::Timestamp, true),
            col("note", ColumnType::String, true),
            col(
                "tags",
                ColumnType::Array(Box::new(ColumnType::String)),
                true,
            ),
            col("deleted", ColumnType::Bool, true),
            col("commit_ts", ColumnType::Timestamp, true),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: Some("deleted".into()),
    }
}

fn rows() -> Vec<Row> {
    (0..ROWS as i64)
        .map(|i| {
            let ts = 1_763_900_000_000_000 + i / 100;
            Row {
                values: vec![
                    Value::Int64(i),
                    Value::String(format!("client-{}", i % 997)),
                    Value::Numeric(format!("{}.{:02}", i % 10_000, i % 100)),
                    Value::String("paid".into()),
                    Value::Timestamp(ts - 5_000),
                    if i % 3 == 0 {
                        Value::Null
                    } else {
                        Value::String("deliver after 5pm".into())
                    },
                    Value::Array(
                        ColumnType::String,
                        vec![Value::String("eu".into()), Value::Null],
                    ),
                    Value::Bool(false),
                    Value::Timestamp(ts),
                ],
                commit_ts: ts,
            }
        })
        .collect()
}

fn report(what: &str, n: usize, start: Instant) {
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{what:<44} {n:>8} rows  {:>8.3} s  {:>12.0} rows/s",
        secs,
        n as f64 / secs
    );
}

fn main() {
    let table = table();
    let rows = rows();
    let encoder = Encoder::new(&table).expect("bench schema is valid");

    // Pages of 1000 messages, as the poller publishes them (memory is reused between pages).
    let start = Instant::now();
    for page in rows.chunks(1000) {
        let messages: Vec<_> = page
            .iter()
            .map(|r| encoder.encode(r).expect("bench row encodes"))
            .collect();
        black_box(messages);
    }
    report("encode (ledgerhost Encoder -> Message)", ROWS, start);
    let messages: Vec<_> = rows
        .iter()
        .map(|r| encoder.encode(r).expect("bench row encodes"))
        .collect();
    let bytes: usize = messages.iter().map(|m| m.data.len()).sum();
    println!(
        "  container size: {} bytes/row (schema header included)",
        bytes / ROWS
    );

    let attrs: Vec<Vec<(String, String)>> = messages
        .iter()
        .map(|m| m.attributes.clone().into_iter().collect())
        .collect();
    let decoder = Decoder::new();
    let start = Instant::now();
    for (m, a) in messages.iter().zip(&attrs) {
        black_box(decoder.decode(&m.data, a).expect("bench row decodes"));
    }
    report("decode (ledgerhost Decoder -> Event)", ROWS, start);

    // Reference point: apache-avro's own reader on the same containers.
    let n = ROWS / 10;
    let start = Instant::now();
    for m in &messages[..n] {
        let reader = apache_avro::Reader::new(&m.data[..]).expect("apache-avro reads it");
        for v in reader {
            black_box(v.expect("apache-avro decodes it"));
        }
    }
    report("decode (apache-avro Reader, reference)", n, start);

    // Reference point: apache-avro's writer producing one container per row.
    let schema = encoder.schema().schema.clone();
    let start = Instant::now();
    for r in &rows[..n] {
        let mut w = apache_avro::Writer::new(&schema, Vec::new()).expect("apache-avro writer");
        let record = apache_avro::types::Value::Record(
            table
                .columns
                .iter()
                .zip(&r.values)
                .map(|(c, v)| (c.name.clone(), to_apache(v, c.nullable)))
                .collect(),
        );
        w.append_value(record).expect("apache-avro writes it");
        black_box(w.into_inner().expect("apache-avro flushes"));
    }
    report("encode (apache-avro Writer, reference)", n, start);
}

fn to_apache(v: &Value, nullable: bool) -> apache_avro::types::Value {
    use apache_avro::types::Value as A;
    let inner = match v {
        Value::Null => return A::Union(0, Box::new(A::Null)),
        Value::Bool(b) => A::Boolean(*b),
        Value::Int64(i) => A::Long(*i),
        Value::Timestamp(t) => A::TimestampMicros(*t),
        Value::Numeric(s) => {
            let (int, frac) = s.split_once('.').unwrap_or((s, ""));
            let unscaled: i128 = format!("{int}{frac:0<9}").parse().expect("bench numeric");
            A::Decimal(apache_avro::Decimal::from(unscaled.to_be_bytes().to_vec()))
        }
        Value::String(s) => A::String(s.clone()),
        Value::Array(_, items) => A::Array(items.iter().map(|i| to_apache(i, true)).collect()),
        other => panic!("bench does not use {other:?}"),
    };
    if nullable {
        A::Union(1, Box::new(inner))
    } else {
        inner
    }
}
