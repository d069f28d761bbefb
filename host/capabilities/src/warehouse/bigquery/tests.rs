use super::schema::*;
use super::values::*;
use ledgerhost_core::{ColumnType, Value};

#[test]
fn decimals_are_normalised_like_the_codec() {
    for (raw, want) in [
        ("1.500000000", "1.5"),
        ("-0.000000000", "0"),
        ("12", "12"),
        ("007.10", "7.1"),
        ("-3.000", "-3"),
        ("0.000000001", "0.000000001"),
    ] {
        assert_eq!(normal_decimal(raw), want, "{raw}");
    }
}

#[test]
fn values_round_trip_through_parameters_and_cells() {
    let cases = [
        (ColumnType::Float64, Value::Float64(0.1)),
        (ColumnType::Float32, Value::Float32(1.25)),
        (ColumnType::Bytes, Value::Bytes(vec![0, 1, 255])),
        (ColumnType::Int64, Value::Int64(i64::MIN)),
        (
            ColumnType::Array(Box::new(ColumnType::Int64)),
            Value::Array(ColumnType::Int64, vec![Value::Int64(1), Value::Null]),
        ),
    ];
    for (ty, v) in cases {
        let text = param_value("t", "c", &ty, &v).unwrap().unwrap();
        let back = parse_cell("t", "c", &ty, Some(&serde_json::Value::String(text))).unwrap();
        assert_eq!(back, v);
    }
    assert!(param_value("t", "c", &ColumnType::Int64, &Value::String("x".into())).is_err());
    assert!(check_column_name("t", "1a").is_err());
    assert!(check_column_name("t", "_event_id").is_err());
}
