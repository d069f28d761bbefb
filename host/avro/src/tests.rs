use super::*;
use ledgerhost_core::event::encode_key;
use ledgerhost_core::{Column, ColumnType};

fn col(name: &str, ty: ColumnType, nullable: bool) -> Column {
    Column {
        name: name.into(),
        ty,
        nullable,
    }
}

fn every_type() -> TableSchema {
    use ColumnType::*;
    TableSchema {
        name: "all_types".into(),
        columns: vec![
            col("id", Int64, false),
            col("region", String, false),
            col("b", Bool, true),
            col("f32", Float32, true),
            col("f64", Float64, true),
            col("num", Numeric, true),
            col("s", String, true),
            col("raw", Bytes, true),
            col("day", Date, true),
            col("at", Timestamp, true),
            col("doc", Json, true),
            col("tags", Array(Box::new(String)), true),
            col("nums", Array(Box::new(Int64)), true),
            col("amounts", Array(Box::new(Numeric)), true),
            col("deleted", Bool, true),
            col("commit_ts", Timestamp, true),
        ],
        primary_key: vec!["region".into(), "id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: Some("deleted".into()),
    }
}

fn full_row(id: i64, ts: i64) -> Row {
    Row {
        values: vec![
            Value::Int64(id),
            Value::String("eu/west,1".into()),
            Value::Bool(true),
            Value::Float32(-1.5),
            Value::Float64(1e300),
            Value::Numeric("-12345678901234567890123456789.123456789".into()),
            Value::String("héllo".into()),
            Value::Bytes(vec![0, 255, 7]),
            Value::Date(-3),
            Value::Timestamp(-1_000_001),
            Value::Json("{\"a\":[1,2]}".into()),
            Value::Array(
                ColumnType::String,
                vec![Value::String("x".into()), Value::Null],
            ),
            Value::Array(ColumnType::Int64, vec![]),
            Value::Array(
                ColumnType::Numeric,
                vec![Value::Null, Value::Numeric("0.5".into())],
            ),
            Value::Bool(false),
            Value::Timestamp(ts),
        ],
        commit_ts: ts,
    }
}

fn null_row(id: i64, ts: i64) -> Row {
    let mut values = vec![Value::Int64(id), Value::String("r".into())];
    values.extend(std::iter::repeat_n(Value::Null, 13));
    values.push(Value::Timestamp(ts));
    Row {
        values,
        commit_ts: ts,
    }
}

fn attrs(m: &Message) -> Vec<(String, String)> {
    m.attributes
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

#[test]
fn every_type_round_trips_with_key_id_and_attributes() {
    let table = every_type();
    let enc = Encoder::new(&table).unwrap();
    let dec = Decoder::new();
    for row in [full_row(7, 1_700_000_000_000_001), null_row(8, 5)] {
        let msg = enc.encode(&row).unwrap();
        let event = dec.decode(&msg.data, &attrs(&msg)).unwrap();
        let values: Vec<Value> = event.fields.iter().map(|f| f.value.clone()).collect();
        assert_eq!(values, row.values);
        assert_eq!(event.commit_ts, row.commit_ts);
        assert_eq!(event.key.len(), 2);
        assert_eq!(&*event.key[0].name, "region");
        assert_eq!(event.id.0, msg.attributes[attr::EVENT_ID]);
        assert_eq!(event.schema_fingerprint, enc.schema().fingerprint);
        assert_eq!(event.avro, msg.data);
        assert!(!event.deleted);
        // The ordering key is the default ordering shard of the encoded primary key.
        let key = encode_key(&[values[1].clone(), values[0].clone()]);
        assert_eq!(msg.ordering_key, Ordering::default().key_for(&key));
        let by_key = Encoder::new(&table)
            .unwrap()
            .with_ordering(Ordering::Key)
            .encode(&row)
            .unwrap();
        assert_eq!(by_key.ordering_key, key);
    }
}

#[test]
fn an_event_id_too_long_for_an_attribute_travels_as_a_digest_and_decodes_whole() {
    let table = TableSchema {
        name: "t".into(),
        columns: vec![
            col("k", ColumnType::String, false),
            col("ts", ColumnType::Timestamp, false),
        ],
        primary_key: vec!["k".into()],
        commit_ts_column: "ts".into(),
        deleted_column: None,
    };
    let long = "k".repeat(5000);
    let msg = Encoder::new(&table)
        .unwrap()
        .encode(&Row {
            values: vec![Value::String(long.clone()), Value::Timestamp(7)],
            commit_ts: 7,
        })
        .unwrap();
    ledgerhost_core::ledger::limits::check_message(&msg).expect("within Pub/Sub's limits");
    assert!(msg.attributes[attr::EVENT_ID].starts_with("sha256:"));
    let attrs: Vec<(String, String)> = msg.attributes.clone().into_iter().collect();
    let event = Decoder::new().decode(&msg.data, &attrs).unwrap();
    assert_eq!(
        event.id.0,
        format!("t/{long}/7"),
        "the full id, from the data"
    );
}

#[test]
fn encoding_is_deterministic_and_tombstones_decode_as_deleted() {
    let enc = Encoder::new(&every_type()).unwrap();
    let mut row = full_row(1, 10);
    assert_eq!(enc.encode(&row).unwrap(), enc.encode(&row).unwrap());
    row.values[14] = Value::Bool(true);
    let msg = enc.encode(&row).unwrap();
    let event = Decoder::new().decode(&msg.data, &[]).unwrap();
    assert!(event.deleted);
    // Attributes are rebuilt from the record alone (archived Avro has none).
    let map: std::collections::BTreeMap<_, _> = event.attributes.into_iter().collect();
    assert_eq!(map[attr::TABLE], "all_types");
    assert_eq!(map[attr::COMMIT_TS], "10");
}

#[test]
fn containers_are_readable_by_apache_avro() {
    let enc = Encoder::new(&every_type()).unwrap();
    let msg = enc.encode(&full_row(3, 99)).unwrap();
    let reader = apache_avro::Reader::new(&msg.data[..]).unwrap();
    let records: Vec<_> = reader.collect::<Result<_, _>>().unwrap();
    assert_eq!(records.len(), 1);
    let apache_avro::types::Value::Record(fields) = &records[0] else {
        panic!("not a record: {:?}", records[0]);
    };
    assert_eq!(
        fields[0],
        ("id".to_string(), apache_avro::types::Value::Long(3))
    );
    assert_eq!(fields.len(), every_type().columns.len());
    assert_eq!(
        table_schema_of(&msg.data).unwrap(),
        every_type(),
        "the table schema travels in the container"
    );
}

#[test]
fn decimals_keep_their_exact_value() {
    use codec::{format_decimal, parse_decimal};
    for (text, norm) in [
        ("0", "0"),
        ("12.50", "12.5"),
        ("-0.000000001", "-0.000000001"),
        (
            "99999999999999999999999999999.999999999",
            "99999999999999999999999999999.999999999",
        ),
        ("+3.", "3"),
    ] {
        assert_eq!(format_decimal(parse_decimal(text).unwrap()), norm, "{text}");
    }
    assert!(
        parse_decimal("1.0000000001").is_err(),
        "more than 9 fractional digits"
    );
    assert!(parse_decimal("abc").is_err());
    assert!(parse_decimal("").is_err());
}

#[test]
fn many_pseudo_random_rows_round_trip() {
    let table = every_type();
    let enc = Encoder::new(&table).unwrap();
    let dec = Decoder::new();
    let mut x: u64 = 42;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..2000 {
        let mut row = if next() % 3 == 0 {
            null_row(i, i)
        } else {
            full_row(i, i)
        };
        row.values[0] = Value::Int64(next() as i64);
        if let Value::Bytes(b) = &mut row.values[7] {
            b.extend((0..next() % 50).map(|_| next() as u8));
        }
        if matches!(row.values[5], Value::Numeric(_)) {
            let n = (next() % 1_000_000_000_000) as i64 - 500_000_000_000;
            row.values[5] = Value::Numeric(
                format!("{n}.{:09}", next() % 1_000_000_000)
                    .trim_end_matches('0')
                    .trim_end_matches('.')
                    .to_string(),
            );
        }
        let msg = enc.encode(&row).unwrap();
        let event = dec.decode(&msg.data, &[]).unwrap();
        let values: Vec<Value> = event.fields.into_iter().map(|f| f.value).collect();
        assert_eq!(values, row.values, "row {i}");
    }
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let enc = Encoder::new(&every_type()).unwrap();
    let good = enc.encode(&full_row(1, 1)).unwrap().data;
    let dec = Decoder::new();
    let ctx = vec![(attr::EVENT_ID.to_string(), "all_types/x/1".to_string())];
    let err = dec.decode(b"garbage", &ctx).unwrap_err().to_string();
    assert!(
        err.contains("bad magic") && err.contains("all_types/x/1"),
        "{err}"
    );
    for cut in [5, 20, good.len() / 2, good.len() - 17, good.len() - 1] {
        assert!(dec.decode(&good[..cut], &[]).is_err(), "truncated at {cut}");
    }
    let mut flipped = good.clone();
    let n = flipped.len();
    flipped[n - 20] ^= 0xff;
    let _ = dec.decode(&flipped, &[]); // any result, but no panic
    let mut x: u64 = 7;
    for _ in 0..500 {
        let mut noisy = good.clone();
        for _ in 0..4 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = (x as usize) % noisy.len();
            noisy[i] = (x >> 32) as u8;
        }
        let _ = dec.decode(&noisy, &[]);
    }
}

#[test]
fn wrong_values_and_names_are_reported_with_table_and_column() {
    let table = every_type();
    let enc = Encoder::new(&table).unwrap();
    let mut row = full_row(1, 1);
    row.values[0] = Value::String("not a number".into());
    let err = enc.encode(&row).unwrap_err().to_string();
    assert!(
        err.contains("all_types") && err.contains("column id"),
        "{err}"
    );
    let mut bad = table.clone();
    bad.columns[2].name = "has space".into();
    let err = Encoder::new(&bad).unwrap_err().to_string();
    assert!(err.contains("has space"), "{err}");
}

#[test]
fn compatible_and_incompatible_changes() {
    let old = every_type();
    let mut added = old.clone();
    added.columns.push(col("note", ColumnType::String, true));
    assert!(check_compatible(&old, &added).is_ok());
    let mut dropped = old.clone();
    dropped.columns.retain(|c| c.name != "doc");
    assert!(check_compatible(&old, &dropped).is_ok());

    let mut retyped = old.clone();
    retyped.columns[6].ty = ColumnType::Int64;
    let e = check_compatible(&old, &retyped).unwrap_err();
    assert_eq!(e.column, "s");
    let mut key_dropped = old.clone();
    key_dropped.columns.retain(|c| c.name != "region");
    key_dropped.primary_key = vec!["id".into()];
    assert!(check_compatible(&old, &key_dropped).is_err());
    let mut not_null = old.clone();
    not_null.columns.push(col("must", ColumnType::Int64, false));
    let e = check_compatible(&old, &not_null).unwrap_err();
    assert!(e.to_string().contains("NOT NULL"), "{e}");
}

#[test]
fn huge_or_negative_block_counts_are_errors() {
    // Metadata map whose block count is i64::MIN (zig-zag u64::MAX): must not overflow.
    let mut data = b"Obj\x01".to_vec();
    data.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
    let err = Decoder::new().decode(&data, &[]).unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");

    // A valid header, then an array column claiming i64::MIN items.
    let table = TableSchema {
        name: "arr".into(),
        columns: vec![
            col("id", ColumnType::Int64, false),
            col("xs", ColumnType::Array(Box::new(ColumnType::Int64)), false),
            col("commit_ts", ColumnType::Timestamp, false),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    };
    let enc = Encoder::new(&table).unwrap();
    let sync = codec::sync_marker(&enc.schema().fingerprint);
    let mut datum = Vec::new();
    codec::write_long(&mut datum, 1); // id
    codec::write_long(&mut datum, i64::MIN); // array block count
    codec::write_long(&mut datum, 3); // block byte size
    let mut data = codec::container_header(enc.schema().json.as_bytes(), &sync);
    codec::write_long(&mut data, 1);
    codec::write_long(&mut data, datum.len() as i64);
    data.extend_from_slice(&datum);
    data.extend_from_slice(&sync);
    let err = Decoder::new().decode(&data, &[]).unwrap_err().to_string();
    assert!(
        err.contains("column xs") && err.contains("table arr"),
        "{err}"
    );
}

#[test]
fn containers_missing_ledgerhost_properties_are_refused_by_name() {
    let schema = r#"{"type":"record","name":"x","fields":[{"name":"id","type":"long"}]}"#;
    let parsed = apache_avro::Schema::parse_str(schema).unwrap();
    let mut w = apache_avro::Writer::new(&parsed, Vec::new()).unwrap();
    w.append_value(apache_avro::types::Value::Record(vec![(
        "id".into(),
        apache_avro::types::Value::Long(1),
    )]))
    .unwrap();
    let data = w.into_inner().unwrap();
    let err = Decoder::new().decode(&data, &[]).unwrap_err().to_string();
    assert!(err.contains("missing property ledgerhost.table"), "{err}");
    assert!(table_schema_of(&data).is_err());

    // Properties naming columns that do not exist are refused too.
    let mut t = every_type();
    t.primary_key = vec!["nope".into()];
    let err = schema_for(&t).unwrap_err().to_string();
    assert!(err.contains("`nope`"), "{err}");
    let json = schema_for(&every_type()).unwrap().json.replace(
        "\"ledgerhost.commit-ts-column\":\"commit_ts\"",
        "\"ledgerhost.commit-ts-column\":\"s\"",
    );
    let err = table_schema_from_json(&json).unwrap_err().to_string();
    assert!(err.contains("not a timestamp"), "{err}");
}

#[test]
fn a_datum_that_does_not_match_its_schema_is_reported_with_the_event() {
    let enc = Encoder::new(&every_type()).unwrap();
    let good = enc.encode(&full_row(1, 1)).unwrap().data;
    // Swap in a schema with one more NOT NULL column: the datum ends too early.
    let mut longer = every_type();
    longer.columns.push(col("extra", ColumnType::Int64, false));
    let other = Encoder::new(&longer).unwrap();
    let header_len = codec::container_header(
        enc.schema().json.as_bytes(),
        &codec::sync_marker(&enc.schema().fingerprint),
    )
    .len();
    let sync = codec::sync_marker(&other.schema().fingerprint);
    let mut data = codec::container_header(other.schema().json.as_bytes(), &sync);
    let body = &good[header_len..good.len() - 16];
    data.extend_from_slice(body);
    data.extend_from_slice(&sync);
    let ctx = vec![(attr::EVENT_ID.to_string(), "all_types/k/1".to_string())];
    let err = Decoder::new().decode(&data, &ctx).unwrap_err().to_string();
    assert!(
        err.contains("all_types/k/1") && err.contains("column extra"),
        "{err}"
    );
}

#[test]
fn apache_avro_reads_every_value_as_we_wrote_it() {
    use apache_avro::types::Value as A;
    let enc = Encoder::new(&every_type()).unwrap();
    let row = full_row(3, 99);
    let msg = enc.encode(&row).unwrap();
    let mut reader = apache_avro::Reader::new(&msg.data[..]).unwrap();
    let A::Record(fields) = reader.next().unwrap().unwrap() else {
        panic!("not a record")
    };
    assert!(reader.next().is_none(), "exactly one record");
    let got: std::collections::HashMap<_, _> = fields.into_iter().collect();
    let some = |v: A| A::Union(1, Box::new(v));
    let unscaled = |s: &str| codec::parse_decimal(s).unwrap();
    let dec = |v: &A| match v {
        A::Union(1, b) => match &**b {
            A::Decimal(d) => {
                let bytes: Vec<u8> = d.try_into().unwrap();
                let mut full = [if bytes[0] & 0x80 != 0 { 0xff } else { 0 }; 16];
                full[16 - bytes.len()..].copy_from_slice(&bytes);
                i128::from_be_bytes(full)
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    };
    assert_eq!(got["id"], A::Long(3));
    assert_eq!(got["region"], A::String("eu/west,1".into()));
    assert_eq!(got["b"], some(A::Boolean(true)));
    assert_eq!(got["f32"], some(A::Float(-1.5)));
    assert_eq!(got["f64"], some(A::Double(1e300)));
    assert_eq!(
        dec(&got["num"]),
        unscaled("-12345678901234567890123456789.123456789")
    );
    assert_eq!(got["s"], some(A::String("héllo".into())));
    assert_eq!(got["raw"], some(A::Bytes(vec![0, 255, 7])));
    assert_eq!(got["day"], some(A::Date(-3)));
    assert_eq!(got["at"], some(A::TimestampMicros(-1_000_001)));
    assert_eq!(got["doc"], some(A::String("{\"a\":[1,2]}".into())));
    assert_eq!(
        got["tags"],
        some(A::Array(vec![
            A::Union(1, Box::new(A::String("x".into()))),
            A::Union(0, Box::new(A::Null)),
        ]))
    );
    assert_eq!(got["nums"], some(A::Array(vec![])));
    assert_eq!(got["commit_ts"], some(A::TimestampMicros(99)));
}

#[test]
fn numeric_edges_and_float_specials_round_trip() {
    let table = TableSchema {
        name: "n".into(),
        columns: vec![
            col("id", ColumnType::Int64, false),
            col("num", ColumnType::Numeric, false),
            col("f", ColumnType::Float64, false),
            col("g", ColumnType::Float32, false),
            col("commit_ts", ColumnType::Timestamp, false),
        ],
        primary_key: vec!["id".into()],
        commit_ts_column: "commit_ts".into(),
        deleted_column: None,
    };
    let enc = Encoder::new(&table).unwrap();
    let dec = Decoder::new();
    let nums = [
        "0",
        "-1",
        "1",
        "127",
        "128",
        "-128",
        "-129",
        "0.000000001",
        "-0.000000001",
        "99999999999999999999999999999.999999999",
        "-99999999999999999999999999999.999999999",
        "170141183460469231731.687303715",
        "12.5",
    ];
    let floats = [
        (f64::INFINITY, f32::NEG_INFINITY),
        (-0.0, f32::MIN_POSITIVE),
        (f64::MAX, f32::MAX),
        (f64::MIN_POSITIVE, -1e-30),
    ];
    for (i, n) in nums.iter().enumerate() {
        let (f, g) = floats[i % floats.len()];
        let row = Row {
            values: vec![
                Value::Int64(i as i64 - 5),
                Value::Numeric(n.to_string()),
                Value::Float64(f),
                Value::Float32(g),
                Value::Timestamp(i as i64),
            ],
            commit_ts: i as i64,
        };
        let event = dec.decode(&enc.encode(&row).unwrap().data, &[]).unwrap();
        let values: Vec<Value> = event.fields.into_iter().map(|f| f.value).collect();
        assert_eq!(values, row.values, "{n}");
    }
    // Trailing zeros are normalised away; the exact value is kept.
    let row = Row {
        values: vec![
            Value::Int64(1),
            Value::Numeric("-000120.500000000".into()),
            Value::Float64(0.0),
            Value::Float32(0.0),
            Value::Timestamp(1),
        ],
        commit_ts: 1,
    };
    let event = dec.decode(&enc.encode(&row).unwrap().data, &[]).unwrap();
    assert_eq!(event.get("num"), Some(&Value::Numeric("-120.5".into())));
    // Out of range for NUMERIC(38, 9): an error naming the column, not a wrapped value.
    let mut too_big = row.clone();
    too_big.values[1] = Value::Numeric("1".repeat(40));
    let err = enc.encode(&too_big).unwrap_err().to_string();
    assert!(err.contains("column num"), "{err}");
}

#[test]
fn one_decoder_is_shared_by_threads_over_many_schemas() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Decoder>();
    assert_send_sync::<Encoder>();
    let dec = Arc::new(Decoder::new());
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let dec = dec.clone();
            std::thread::spawn(move || {
                for v in 0..20 {
                    let mut table = every_type();
                    table.name = format!("t{}", (t + v) % 5);
                    let enc = Encoder::new(&table).unwrap();
                    let row = full_row(v, v + 1);
                    let event = dec.decode(&enc.encode(&row).unwrap().data, &[]).unwrap();
                    assert_eq!(event.table, table.name);
                    assert_eq!(event.commit_ts, v + 1);
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

#[test]
fn fingerprints_follow_the_avro_shape() {
    let a = schema_for(&every_type()).unwrap();
    assert_eq!(a.fingerprint.len(), 16, "8 bytes of hex");
    assert_eq!(
        a.fingerprint,
        schema_for(&every_type()).unwrap().fingerprint
    );
    let mut retyped = every_type();
    retyped.columns[0].ty = ColumnType::Float64;
    assert_ne!(a.fingerprint, schema_for(&retyped).unwrap().fingerprint);
    let mut renamed = every_type();
    renamed.name = "9 other-table".into();
    let b = schema_for(&renamed).unwrap();
    assert_ne!(a.fingerprint, b.fingerprint);
    assert!(b.json.contains("\"name\":\"_9_other_table\""), "{}", b.json);
    assert!(b.json.contains("\"ledgerhost.table\":\"9 other-table\""));
}

#[test]
fn a_batch_holds_rows_as_their_messages_and_refuses_what_pubsub_would() {
    let enc = Encoder::new(&every_type()).unwrap();
    let mut batch = enc.batch();
    for id in 0..3 {
        enc.encode_into(&mut batch, &full_row(id, 10 + id)).unwrap();
    }
    let one_by_one: Vec<Message> = (0..3)
        .map(|id| enc.encode(&full_row(id, 10 + id)).unwrap())
        .collect();
    assert_eq!(batch.to_messages(), one_by_one);
    // A row that cannot be encoded leaves the batch as it was.
    let before = batch.clone();
    let mut bad = full_row(9, 9);
    bad.values[5] = Value::Numeric("1".repeat(40));
    assert!(enc.encode_into(&mut batch, &bad).is_err());
    assert_eq!(batch, before);
    // A batch of another schema is refused, not filled with the wrong header.
    let mut other = every_type();
    other.name = "other".into();
    let mut foreign = Encoder::new(&other).unwrap().batch();
    let err = enc.encode_into(&mut foreign, &full_row(1, 1)).unwrap_err();
    assert!(err.to_string().contains("another schema"), "{err}");
    // A table whose name Pub/Sub would refuse as an attribute value is refused up front.
    let mut long = every_type();
    long.name = "t".repeat(ledgerhost_core::ledger::limits::MAX_ATTRIBUTE_VALUE_BYTES + 1);
    let err = Encoder::new(&long).unwrap_err().to_string();
    assert!(err.contains("could not be published"), "{err}");
}
