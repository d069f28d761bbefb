//! Why a row could not be encoded or a record decoded.

/// Why a row could not be encoded or a record decoded.
#[derive(Debug, thiserror::Error)]
pub enum AvroError {
    /// The table cannot be expressed in Avro (e.g. a column name Avro does not allow).
    #[error("table {table}: {message}")]
    Schema {
        /// Source table.
        table: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// A row's value does not fit its column type.
    #[error("table {table}, column {column}: {message}")]
    Value {
        /// Source table.
        table: String,
        /// Column whose value does not fit (`*` for the row as a whole).
        column: String,
        /// What is wrong.
        message: String,
    },
    /// The bytes are not a well-formed ledgerhost Avro container.
    #[error("malformed Avro record{context}: {message}")]
    Malformed {
        /// ` (event <id>)` or ` (table <name>)` when known, else empty.
        context: String,
        /// What is wrong (bad magic, truncated, missing property, ...).
        message: String,
    },
}

impl AvroError {
    pub(crate) fn malformed(context: &str, message: impl Into<String>) -> Self {
        AvroError::Malformed {
            context: if context.is_empty() {
                String::new()
            } else {
                format!(" ({context})")
            },
            message: message.into(),
        }
    }
}
