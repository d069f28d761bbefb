//! The poller's progress record, as the ledger stores it: JSON
//! `{"w": W, "at": null | {"ts": commit_ts, "key": [[tag, text], …]}}`. `at` is the keyset
//! position of the last stored page of an unfinished poll; `null` means W covers everything.
//! Key values are tagged by type so the position is read back exactly.

use ledgerhost_core::Value;
use ledgerhost_core::source::Position;
use serde_json::{Value as Json, json};

/// The record of watermark `w` and, mid-poll, the position `at`.
pub fn encode(w: i64, at: Option<&Position>) -> Result<String, String> {
    let at = match at {
        None => Json::Null,
        Some(p) => {
            let key = p
                .key
                .iter()
                .map(|v| {
                    let (tag, text) = match v {
                        Value::Null => ("null", String::new()),
                        Value::Bool(b) => ("bool", b.to_string()),
                        Value::Int64(n) => ("int64", n.to_string()),
                        Value::Float32(x) => ("float32", x.to_string()),
                        Value::Float64(x) => ("float64", x.to_string()),
                        Value::Numeric(t) => ("numeric", t.clone()),
                        Value::String(t) => ("string", t.clone()),
                        Value::Bytes(b) => {
                            ("bytes", b.iter().map(|x| format!("{x:02x}")).collect())
                        }
                        Value::Date(d) => ("date", d.to_string()),
                        Value::Timestamp(t) => ("timestamp", t.to_string()),
                        Value::Json(t) => ("json", t.clone()),
                        Value::Array(..) => return Err("an array in a primary key".to_string()),
                    };
                    Ok(json!([tag, text]))
                })
                .collect::<Result<Vec<_>, String>>()?;
            json!({"ts": p.commit_ts, "key": key})
        }
    };
    Ok(json!({"w": w, "at": at}).to_string())
}

/// The watermark and mid-poll position of a record.
pub fn decode(record: &str) -> Result<(i64, Option<Position>), String> {
    let v: Json = serde_json::from_str(record).map_err(|e| e.to_string())?;
    let w = v["w"].as_i64().ok_or("no integer `w`")?;
    let at = &v["at"];
    if at.is_null() {
        return Ok((w, None));
    }
    let commit_ts = at["ts"].as_i64().ok_or("no integer `at.ts`")?;
    let parts = at["key"].as_array().ok_or("no array `at.key`")?;
    let mut key = Vec::with_capacity(parts.len());
    for part in parts {
        let (Some(tag), Some(text)) = (part[0].as_str(), part[1].as_str()) else {
            return Err(format!("key part {part} is not [tag, text]"));
        };
        let bad = |e: &dyn std::fmt::Display| format!("key part {part}: {e}");
        key.push(match tag {
            "null" => Value::Null,
            "bool" => Value::Bool(text.parse().map_err(|e| bad(&e))?),
            "int64" => Value::Int64(text.parse().map_err(|e| bad(&e))?),
            "float32" => Value::Float32(text.parse().map_err(|e| bad(&e))?),
            "float64" => Value::Float64(text.parse().map_err(|e| bad(&e))?),
            "numeric" => Value::Numeric(text.to_string()),
            "string" => Value::String(text.to_string()),
            "bytes" => Value::Bytes(
                (0..text.len())
                    .step_by(2)
                    .map(|i| {
                        text.get(i..i + 2)
                            .ok_or_else(|| bad(&"odd hex length"))
                            .and_then(|h| u8::from_str_radix(h, 16).map_err(|e| bad(&e)))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "date" => Value::Date(text.parse().map_err(|e| bad(&e))?),
            "timestamp" => Value::Timestamp(text.parse().map_err(|e| bad(&e))?),
            "json" => Value::Json(text.to_string()),
            other => return Err(format!("unknown key type `{other}`")),
        });
    }
    Ok((w, Some(Position { commit_ts, key })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_every_key_type() {
        let p = Position {
            commit_ts: 17,
            key: vec![
                Value::Int64(-5),
                Value::String("a,b/\"".into()),
                Value::Bytes(vec![0, 255]),
                Value::Float64(0.1),
                Value::Bool(true),
                Value::Date(-3),
                Value::Timestamp(9),
                Value::Numeric("1.50".into()),
                Value::Null,
            ],
        };
        let record = encode(4, Some(&p)).unwrap();
        assert_eq!(decode(&record).unwrap(), (4, Some(p)));
        assert_eq!(
            decode(&encode(i64::MIN, None).unwrap()).unwrap(),
            (i64::MIN, None)
        );
        assert!(decode("{\"w\": 1, \"at\": {\"ts\": 2, \"key\": [[\"x\", \"1\"]]}}").is_err());
        assert!(
            encode(
                1,
                Some(&Position {
                    commit_ts: 1,
                    key: vec![Value::Array(ledgerhost_core::ColumnType::Int64, vec![])]
                })
            )
            .is_err()
        );
    }
}
