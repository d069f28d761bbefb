//! A partition query's result rows as [`ChangeRecord`]s.
//!
//! The one column, `ChangeRecord`, is an `ARRAY<STRUCT<data_change_record ARRAY<STRUCT<…>>,
//! heartbeat_record ARRAY<STRUCT<…>>, child_partitions_record ARRAY<STRUCT<…>>>>`; a struct
//! travels as a list of its fields' values. Fields are found by the names the result's
//! metadata gives, not by position, so a field Spanner adds later changes nothing here.

use google_cloud_spanner::model;
use google_cloud_spanner::value::{Kind, Value as SpValue};

use super::record::{ChangeRecord, Child, ChildPartitions, DataChange, Mod, ModType, RecordKey};
use crate::spanner::values::from_spanner;
use ledgerhost_core::{ColumnType, Value};

/// The names of a result type's struct fields, at every depth (an array's shape is its
/// element's).
#[derive(Debug, Clone, Default)]
pub struct Shape {
    fields: Vec<(String, Shape)>,
}

impl Shape {
    /// The shape of values of type `ty`.
    pub fn of(ty: &model::Type) -> Shape {
        if let Some(element) = &ty.array_element_type {
            return Shape::of(element);
        }
        Shape {
            fields: ty
                .struct_type
                .iter()
                .flat_map(|s| s.fields.iter())
                .map(|f| {
                    let shape = f.r#type.as_deref().map(Shape::of).unwrap_or_default();
                    (f.name.clone(), shape)
                })
                .collect(),
        }
    }
}

/// A value with the shape of its type: fields are read by name.
#[derive(Clone, Copy)]
struct Node<'a> {
    value: &'a SpValue,
    shape: &'a Shape,
    /// Where in the record this is, for errors.
    path: &'static str,
}

impl<'a> Node<'a> {
    fn field(self, name: &'static str) -> Result<Node<'a>, String> {
        let index = self
            .shape
            .fields
            .iter()
            .position(|(n, _)| n == name)
            .ok_or_else(|| format!("{} has no field `{name}`", self.path))?;
        let value = self
            .value
            .as_list()
            .and_then(|l| l.get(index))
            .ok_or_else(|| format!("{} is not a struct with field `{name}`", self.path))?;
        Ok(Node {
            value,
            shape: &self.shape.fields[index].1,
            path: name,
        })
    }

    /// The elements of an array (none for NULL).
    fn items(self) -> Result<impl Iterator<Item = Node<'a>>, String> {
        if self.value.is_null() {
            return Ok(None.into_iter().flatten());
        }
        let list = self
            .value
            .as_list()
            .ok_or_else(|| format!("`{}` is not an array", self.path))?;
        Ok(Some(list.iter().map(move |value| Node {
            value,
            shape: self.shape,
            path: self.path,
        }))
        .into_iter()
        .flatten())
    }

    fn text(self) -> Result<&'a str, String> {
        self.value
            .as_str()
            .ok_or_else(|| format!("`{}` is not text: {:?}", self.path, self.value.kind()))
    }

    /// JSON arrives as its text; NULL as an empty object.
    fn json(self) -> Result<String, String> {
        if self.value.is_null() {
            return Ok("{}".into());
        }
        self.text().map(str::to_string)
    }

    fn flag(self) -> Result<bool, String> {
        match self.value.kind() {
            Kind::Null => Ok(false),
            _ => self
                .value
                .as_bool()
                .ok_or_else(|| format!("`{}` is not a BOOL", self.path)),
        }
    }

    fn micros(self) -> Result<i64, String> {
        match from_spanner(self.value, &ColumnType::Timestamp) {
            Ok(Value::Timestamp(t)) => Ok(t),
            Ok(_) => Err(format!("`{}` is NULL", self.path)),
            Err(e) => Err(format!("`{}`: {e}", self.path)),
        }
    }
}

/// The records of one result row (one `ChangeRecord` value, of shape `shape`).
pub fn records(value: &SpValue, shape: &Shape) -> Result<Vec<ChangeRecord>, String> {
    let row = Node {
        value,
        shape,
        path: "ChangeRecord",
    };
    let mut out = Vec::new();
    for record in row.items()? {
        for data in record.field("data_change_record")?.items()? {
            out.push(ChangeRecord::Data(data_change(data)?));
        }
        for heartbeat in record.field("heartbeat_record")?.items()? {
            out.push(ChangeRecord::Heartbeat {
                at: heartbeat.field("timestamp")?.micros()?,
            });
        }
        for children in record.field("child_partitions_record")?.items()? {
            out.push(ChangeRecord::Children(child_partitions(children)?));
        }
    }
    Ok(out)
}

fn data_change(node: Node<'_>) -> Result<DataChange, String> {
    let mod_type = node.field("mod_type")?.text()?;
    let mods = node
        .field("mods")?
        .items()?
        .map(|m| {
            Ok(Mod {
                keys: m.field("keys")?.json()?,
                new_values: m.field("new_values")?.json()?,
                old_values: m.field("old_values")?.json()?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(DataChange {
        key: RecordKey {
            commit_ts: node.field("commit_timestamp")?.micros()?,
            transaction: node.field("server_transaction_id")?.text()?.to_string(),
            sequence: node.field("record_sequence")?.text()?.to_string(),
        },
        last_in_partition: node
            .field("is_last_record_in_transaction_in_partition")?
            .flag()?,
        table: node.field("table_name")?.text()?.to_string(),
        mod_type: ModType::parse(mod_type)
            .ok_or_else(|| format!("unknown mod_type `{mod_type}`"))?,
        value_capture_type: node.field("value_capture_type")?.text()?.to_string(),
        mods,
    })
}

fn child_partitions(node: Node<'_>) -> Result<ChildPartitions, String> {
    let children = node
        .field("child_partitions")?
        .items()?
        .map(|c| {
            Ok(Child {
                token: c.field("token")?.text()?.to_string(),
                parents: c
                    .field("parent_partition_tokens")?
                    .items()?
                    .map(|p| p.text().map(str::to_string))
                    .collect::<Result<_, String>>()?,
            })
        })
        .collect::<Result<_, String>>()?;
    Ok(ChildPartitions {
        start: node.field("start_timestamp")?.micros()?,
        children,
    })
}
