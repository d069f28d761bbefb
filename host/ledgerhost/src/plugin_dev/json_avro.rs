//! The events `plugin test` reads: recorded Avro containers, or JSON objects turned into real
//! Avro events (encoded and decoded as the host does).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use ledgerhost_avro::{Decoder, Encoder};
use ledgerhost_core::source::Row;
use ledgerhost_core::{Column, ColumnType, Event, TableSchema, Value};

/// One recorded event in the JSON form `plugin test` reads.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonEvent {
    table: String,
    /// Primary-key columns (default `["id"]`).
    #[serde(default)]
    key: Option<Vec<String>>,
    /// Microseconds since the epoch (default: the event's position, 1, 2, ...).
    #[serde(default)]
    commit_ts: Option<i64>,
    #[serde(default)]
    deleted: bool,
    row: serde_json::Map<String, serde_json::Value>,
    /// Column types where JSON cannot tell: `NUMERIC` (text), `TIMESTAMP` (µs), `DATE`
    /// (days), `JSON`, `BYTES` (hex).
    #[serde(default)]
    types: BTreeMap<String, String>,
}

/// Reads events from `path`: a `.avro` container, a directory of them (in file-name order),
/// or JSON (an array, one object, or one object per line).
pub fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let decoder = Decoder::new();
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let data = std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?;
            out.push(
                decoder
                    .decode(&data, &[])
                    .with_context(|| format!("{} is not a ledgerhost Avro event", f.display()))?,
            );
        }
        return Ok(out);
    }
    let data = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if data.starts_with(b"Obj\x01") {
        let event = decoder
            .decode(&data, &[])
            .with_context(|| format!("{} is not a ledgerhost Avro event", path.display()))?;
        return Ok(vec![event]);
    }
    let text = std::str::from_utf8(&data)
        .with_context(|| format!("{} is neither Avro nor UTF-8 JSON", path.display()))?;
    let items: Vec<(String, serde_json::Value)> = match serde_json::from_str(text) {
        Ok(serde_json::Value::Array(items)) => items
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{}[{i}]", path.display()), v))
            .collect(),
        Ok(v) => vec![(path.display().to_string(), v)],
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| {
                serde_json::from_str(l)
                    .map(|v| (format!("{}:{}", path.display(), i + 1), v))
                    .with_context(|| format!("{}:{}: not a JSON object", path.display(), i + 1))
            })
            .collect::<anyhow::Result<_>>()?,
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, (place, v))| {
            let e: JsonEvent = serde_json::from_value(v).with_context(|| {
                format!(
                    "{place}: expected {{\"table\": ..., \"key\": [...], \"commit_ts\": µs, \
                     \"row\": {{...}}}}"
                )
            })?;
            json_event(e, i as i64 + 1, &decoder).with_context(|| place.clone())
        })
        .collect()
}

/// Turns a JSON event into a real Avro event (encoded and decoded as the host does).
fn json_event(e: JsonEvent, position: i64, decoder: &Decoder) -> anyhow::Result<Event> {
    let key = e.key.unwrap_or_else(|| vec!["id".into()]);
    for k in &key {
        if !e.row.contains_key(k) {
            bail!("key column `{k}` is not in `row` (set \"key\": [...] to the primary key)");
        }
    }
    let commit_ts = e.commit_ts.unwrap_or(position);
    let mut columns = Vec::new();
    let mut values = Vec::new();
    for (name, v) in &e.row {
        let (ty, value) = json_value(name, v, e.types.get(name).map(String::as_str))?;
        columns.push(Column {
            name: name.clone(),
            ty,
            nullable: !key.contains(name),
        });
        values.push(value);
    }
    let commit_col = if e.row.contains_key("commit_ts") {
        "_commit_ts".to_string()
    } else {
        "commit_ts".to_string()
    };
    columns.push(Column {
        name: commit_col.clone(),
        ty: ColumnType::Timestamp,
        nullable: false,
    });
    values.push(Value::Timestamp(commit_ts));
    let mut deleted_column = None;
    if e.deleted {
        columns.push(Column {
            name: "_deleted".into(),
            ty: ColumnType::Bool,
            nullable: false,
        });
        values.push(Value::Bool(true));
        deleted_column = Some("_deleted".to_string());
    }
    let schema = TableSchema {
        name: e.table.clone(),
        columns,
        primary_key: key,
        commit_ts_column: commit_col,
        deleted_column,
    };
    let message = Encoder::new(&schema)?.encode(&Row { values, commit_ts })?;
    Ok(decoder.decode_message(&message)?)
}

fn json_value(
    name: &str,
    v: &serde_json::Value,
    ty: Option<&str>,
) -> anyhow::Result<(ColumnType, Value)> {
    use serde_json::Value as J;
    let bad = |want: &str| anyhow::anyhow!("column `{name}`: {want}, got {v}");
    Ok(match (ty.map(str::to_ascii_uppercase).as_deref(), v) {
        (Some("NUMERIC"), J::Null) => (ColumnType::Numeric, Value::Null),
        (Some("NUMERIC"), J::String(s)) => (ColumnType::Numeric, Value::Numeric(s.clone())),
        (Some("NUMERIC"), J::Number(n)) => (ColumnType::Numeric, Value::Numeric(n.to_string())),
        (Some("NUMERIC"), _) => return Err(bad("NUMERIC wants decimal text")),
        (Some("TIMESTAMP"), J::Null) => (ColumnType::Timestamp, Value::Null),
        (Some("TIMESTAMP"), J::Number(n)) => (
            ColumnType::Timestamp,
            Value::Timestamp(
                n.as_i64()
                    .ok_or_else(|| bad("TIMESTAMP wants integer µs"))?,
            ),
        ),
        (Some("TIMESTAMP"), _) => return Err(bad("TIMESTAMP wants integer µs")),
        (Some("DATE"), J::Null) => (ColumnType::Date, Value::Null),
        (Some("DATE"), J::Number(n)) => (
            ColumnType::Date,
            Value::Date(
                n.as_i64()
                    .and_then(|d| i32::try_from(d).ok())
                    .ok_or_else(|| bad("DATE wants days since 1970-01-01"))?,
            ),
        ),
        (Some("DATE"), _) => return Err(bad("DATE wants days since 1970-01-01")),
        (Some("JSON"), J::Null) => (ColumnType::Json, Value::Null),
        (Some("JSON"), other) => (ColumnType::Json, Value::Json(other.to_string())),
        (Some("BYTES"), J::Null) => (ColumnType::Bytes, Value::Null),
        (Some("BYTES"), J::String(hex)) => (
            ColumnType::Bytes,
            Value::Bytes(
                (0..hex.len())
                    .step_by(2)
                    .map(|i| {
                        hex.get(i..i + 2)
                            .and_then(|b| u8::from_str_radix(b, 16).ok())
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| bad("BYTES wants hex text"))?,
            ),
        ),
        (Some("BYTES"), _) => return Err(bad("BYTES wants hex text")),
        (Some(other), _) => bail!(
            "column `{name}`: type `{other}` is not one of NUMERIC, TIMESTAMP, DATE, JSON, BYTES \
             (other types are inferred from the JSON value)"
        ),
        (None, J::Null) => (ColumnType::String, Value::Null),
        (None, J::Bool(b)) => (ColumnType::Bool, Value::Bool(*b)),
        (None, J::Number(n)) => match n.as_i64() {
            Some(i) => (ColumnType::Int64, Value::Int64(i)),
            None => (
                ColumnType::Float64,
                Value::Float64(n.as_f64().ok_or_else(|| bad("a number"))?),
            ),
        },
        (None, J::String(s)) => (ColumnType::String, Value::String(s.clone())),
        (None, other) => (ColumnType::Json, Value::Json(other.to_string())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_events_become_real_avro_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        std::fs::write(
            &path,
            r#"[{"table": "orders", "commit_ts": 5, "row": {"id": 1, "total": "12.50", "note": null},
                 "types": {"total": "NUMERIC"}},
                {"table": "orders", "deleted": true, "row": {"id": 2, "total": "1", "note": "x"},
                 "types": {"total": "NUMERIC"}}]"#,
        )
        .unwrap();
        let events = read_events(&path).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].id.0, "orders/1/5");
        assert_eq!(events[0].get("total"), Some(&Value::Numeric("12.5".into())));
        assert_eq!(events[0].get("note"), Some(&Value::Null));
        assert!(!events[0].deleted);
        // Position as the default commit time; the tombstone flag survives the Avro trip.
        assert_eq!(events[1].commit_ts, 2);
        assert!(events[1].deleted);
        // The avro bytes are a container the host's decoder reads back to the same event.
        let again = Decoder::new().decode(&events[0].avro, &[]).unwrap();
        assert_eq!(again.id, events[0].id);
    }

    #[test]
    fn avro_files_and_directories_are_read_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        std::fs::write(
            &path,
            "{\"table\":\"t\",\"commit_ts\":1,\"row\":{\"id\":7}}\n\
             {\"table\":\"t\",\"commit_ts\":2,\"row\":{\"id\":8}}\n",
        )
        .unwrap();
        let events = read_events(&path).unwrap();
        let avro_dir = dir.path().join("archive");
        std::fs::create_dir(&avro_dir).unwrap();
        // Written in reverse: the name order (commit time in archive names) wins.
        std::fs::write(avro_dir.join("b.avro"), &events[1].avro).unwrap();
        std::fs::write(avro_dir.join("a.avro"), &events[0].avro).unwrap();
        let read: Vec<String> = read_events(&avro_dir)
            .unwrap()
            .into_iter()
            .map(|e| e.id.0)
            .collect();
        assert_eq!(read, ["t/7/1", "t/8/2"]);
        let one = read_events(&avro_dir.join("b.avro")).unwrap();
        assert_eq!(one[0].id.0, "t/8/2");
    }

    #[test]
    fn bad_events_are_named_by_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.json");
        std::fs::write(
            &path,
            "{\"table\":\"t\",\"row\":{\"id\":1}}\n{\"table\":\"t\",\"row\":{\"no_id\":1}}\n",
        )
        .unwrap();
        let err = format!("{:#}", read_events(&path).unwrap_err());
        assert!(err.contains("events.json:2"), "{err}");
        assert!(err.contains("key column `id`"), "{err}");
    }
}
