//! The Avro binary encoding, by hand, for the types a table can hold.

use ledgerhost_core::{Column, ColumnType, Value};

const MAGIC: &[u8; 4] = b"Obj\x01";

/// Spanner's NUMERIC scale: values travel as unscaled integers × 10^-9.
pub const NUMERIC_SCALE: u32 = 9;

/// A sync marker derived from the schema fingerprint, so encoding is deterministic.
pub fn sync_marker(fingerprint: &str) -> [u8; 16] {
    let mut sync = [0u8; 16];
    let bytes = fingerprint.as_bytes();
    // FNV-1a over the fingerprint, twice with different seeds: stable and well spread.
    for (half, seed) in [
        (0usize, 0xcbf2_9ce4_8422_2325u64),
        (8, 0x8422_2325_cbf2_9ce4),
    ] {
        let mut h = seed;
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        sync[half..half + 8].copy_from_slice(&h.to_le_bytes());
    }
    sync
}

/// Magic, metadata (schema, null codec) and sync marker.
pub fn container_header(schema_json: &[u8], sync: &[u8; 16]) -> Vec<u8> {
    let mut out = Vec::with_capacity(schema_json.len() + 64);
    out.extend_from_slice(MAGIC);
    write_long(&mut out, 2);
    write_bytes(&mut out, b"avro.schema");
    write_bytes(&mut out, schema_json);
    write_bytes(&mut out, b"avro.codec");
    write_bytes(&mut out, b"null");
    write_long(&mut out, 0);
    out.extend_from_slice(sync);
    out
}

/// Zig-zag varint.
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; MAX_LONG_BYTES];
    let n = write_long_into(&mut buf, 0, v);
    out.extend_from_slice(&buf[..n]);
}

/// The most bytes an Avro long takes (zig-zag varint of 64 bits).
pub const MAX_LONG_BYTES: usize = 10;

/// Writes `v` as an Avro long into `out` at `at`, returning the position after it (`out`
/// must have room: [`MAX_LONG_BYTES`] for any `i64`).
pub fn write_long_into(out: &mut [u8], mut at: usize, v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out[at] = (z as u8) | 0x80;
        at += 1;
        z >>= 7;
    }
    out[at] = z as u8;
    at + 1
}

fn write_bytes(out: &mut Vec<u8>, b: &[u8]) {
    write_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// Writes one column value (with the `["null", T]` union when the column is nullable).
pub fn write_column(out: &mut Vec<u8>, column: &Column, value: &Value) -> Result<(), String> {
    if column.nullable {
        if matches!(value, Value::Null) {
            write_long(out, 0);
            return Ok(());
        }
        write_long(out, 1);
    } else if matches!(value, Value::Null) {
        return Err("NULL in a NOT NULL column".into());
    }
    write_value(out, &column.ty, value)
}

fn write_value(out: &mut Vec<u8>, ty: &ColumnType, value: &Value) -> Result<(), String> {
    match (ty, value) {
        (ColumnType::Bool, Value::Bool(b)) => out.push(u8::from(*b)),
        (ColumnType::Int64, Value::Int64(v)) | (ColumnType::Timestamp, Value::Timestamp(v)) => {
            write_long(out, *v)
        }
        // Sources may hand timestamps stored as integers, and vice versa.
        (ColumnType::Timestamp, Value::Int64(v)) | (ColumnType::Int64, Value::Timestamp(v)) => {
            write_long(out, *v)
        }
        (ColumnType::Date, Value::Date(d)) => write_long(out, i64::from(*d)),
        (ColumnType::Float32, Value::Float32(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (ColumnType::Float64, Value::Float64(f)) => out.extend_from_slice(&f.to_le_bytes()),
        (ColumnType::Float32, Value::Float64(f)) => {
            out.extend_from_slice(&(*f as f32).to_le_bytes())
        }
        (ColumnType::Numeric, Value::Numeric(text)) => {
            let unscaled = parse_decimal(text)?;
            write_bytes(out, &decimal_bytes(unscaled));
        }
        (ColumnType::String, Value::String(s)) | (ColumnType::Json, Value::Json(s)) => {
            write_bytes(out, s.as_bytes())
        }
        (ColumnType::Json, Value::String(s)) | (ColumnType::String, Value::Json(s)) => {
            write_bytes(out, s.as_bytes())
        }
        (ColumnType::Bytes, Value::Bytes(b)) => write_bytes(out, b),
        (ColumnType::Array(elem), Value::Array(_, items)) => {
            if !items.is_empty() {
                write_long(out, items.len() as i64);
                for item in items {
                    // Array items are always ["null", T].
                    if matches!(item, Value::Null) {
                        write_long(out, 0);
                    } else {
                        write_long(out, 1);
                        write_value(out, elem, item)?;
                    }
                }
            }
            write_long(out, 0);
        }
        (ty, v) => return Err(format!("value {v:?} does not fit type {ty:?}")),
    }
    Ok(())
}

/// Parses decimal text into an integer scaled by 10^9.
pub fn parse_decimal(text: &str) -> Result<i128, String> {
    let bad = || format!("`{text}` is not a decimal number with at most 9 fractional digits");
    let t = text.trim();
    let (neg, digits) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (int_part, frac_part) = digits.split_once('.').unwrap_or((digits, ""));
    if (int_part.is_empty() && frac_part.is_empty())
        || frac_part.len() > NUMERIC_SCALE as usize
        || !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad());
    }
    let mut v: i128 = 0;
    for b in int_part.bytes() {
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(b - b'0')))
            .ok_or_else(bad)?;
    }
    for i in 0..NUMERIC_SCALE as usize {
        let d = frac_part.as_bytes().get(i).map_or(0, |b| b - b'0');
        v = v
            .checked_mul(10)
            .and_then(|v| v.checked_add(i128::from(d)))
            .ok_or_else(bad)?;
    }
    // NUMERIC(38, 9): at most 38 significant digits, i.e. |unscaled| < 10^38.
    if v >= 10i128.pow(38) {
        return Err(format!(
            "`{text}` has more than 38 digits (29 before the point), beyond NUMERIC(38, 9)"
        ));
    }
    Ok(if neg { -v } else { v })
}

/// Formats an integer scaled by 10^9 as the shortest exact decimal text ("12.5", "-3", "0.000000001").
pub fn format_decimal(unscaled: i128) -> String {
    let neg = unscaled < 0;
    let abs = unscaled.unsigned_abs();
    let scale = 10u128.pow(NUMERIC_SCALE);
    let int = abs / scale;
    let frac = abs % scale;
    let mut s = if neg { "-".to_string() } else { String::new() };
    s.push_str(&int.to_string());
    if frac != 0 {
        let f = format!("{frac:09}");
        s.push('.');
        s.push_str(f.trim_end_matches('0'));
    }
    s
}

/// Minimal big-endian two's-complement bytes, as Avro's decimal wants.
fn decimal_bytes(v: i128) -> Vec<u8> {
    let full = v.to_be_bytes();
    let mut start = 0;
    while start < 15 {
        let (b, next) = (full[start], full[start + 1]);
        if (b == 0x00 && next & 0x80 == 0) || (b == 0xff && next & 0x80 != 0) {
            start += 1;
        } else {
            break;
        }
    }
    full[start..].to_vec()
}

fn decimal_from_bytes(b: &[u8]) -> Result<i128, String> {
    if b.is_empty() || b.len() > 16 {
        return Err(format!("decimal of {} bytes", b.len()));
    }
    let fill = if b[0] & 0x80 != 0 { 0xff } else { 0x00 };
    let mut full = [fill; 16];
    full[16 - b.len()..].copy_from_slice(b);
    Ok(i128::from_be_bytes(full))
}

/// The parts of a single-block container.
pub struct Container<'a> {
    pub schema_json: &'a [u8],
    pub sync: [u8; 16],
    pub datum: &'a [u8],
}

/// Parses a container holding exactly one record with the null codec.
pub fn read_container(data: &[u8]) -> Result<Container<'_>, String> {
    if data.len() < 4 || &data[..4] != MAGIC {
        return Err("not an Avro object container (bad magic)".into());
    }
    let mut r = Reader::new(&data[4..]);
    let mut schema = None;
    let mut codec: &[u8] = b"null";
    loop {
        let count = r.block_count()?;
        if count == 0 {
            break;
        }
        for _ in 0..count {
            let key = r.bytes()?;
            let value = r.bytes()?;
            match key {
                b"avro.schema" => schema = Some(value),
                b"avro.codec" => codec = value,
                _ => {}
            }
        }
    }
    if codec != b"null" {
        return Err(format!(
            "codec `{}` not supported for event records (use null)",
            String::from_utf8_lossy(codec)
        ));
    }
    let schema_json = schema.ok_or("container metadata has no avro.schema")?;
    let sync = r.take(16)?;
    let objects = r.long()?;
    if objects != 1 {
        return Err(format!(
            "expected one record per container, found {objects}"
        ));
    }
    let size = r.long()?;
    let size = usize::try_from(size).map_err(|_| "negative block size".to_string())?;
    let datum = r.take(size)?;
    let trailer = r
        .take(16)
        .map_err(|_| "block is not followed by its sync marker".to_string())?;
    if trailer != sync {
        return Err("sync marker after the block does not match the header".into());
    }
    let mut marker = [0u8; 16];
    marker.copy_from_slice(sync);
    Ok(Container {
        schema_json,
        sync: marker,
        datum,
    })
}

/// A cursor over Avro binary data; every read checks bounds.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Reads from the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// True when everything was consumed.
    pub fn is_empty(&self) -> bool {
        self.pos == self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| format!("truncated: wanted {n} bytes at offset {}", self.pos))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn long(&mut self) -> Result<i64, String> {
        let mut z: u64 = 0;
        let mut shift = 0;
        loop {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| format!("truncated varint at offset {}", self.pos))?;
            self.pos += 1;
            if shift >= 64 {
                return Err("varint longer than 10 bytes".into());
            }
            z |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                break;
            }
            shift += 7;
        }
        Ok((z >> 1) as i64 ^ -((z & 1) as i64))
    }

    /// A block's item count; a negative count is followed by the block's size in bytes.
    fn block_count(&mut self) -> Result<u64, String> {
        let count = self.long()?;
        if count < 0 {
            self.long()?; // block size in bytes, not needed to read the items
        }
        Ok(count.unsigned_abs())
    }

    fn bytes(&mut self) -> Result<&'a [u8], String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
        self.take(n)
    }

    fn string(&mut self) -> Result<String, String> {
        let b = self.bytes()?;
        String::from_utf8(b.to_vec()).map_err(|_| "string is not UTF-8".to_string())
    }

    /// Reads one column value.
    pub fn read_column(&mut self, column: &Column) -> Result<Value, String> {
        if column.nullable {
            match self.long()? {
                0 => return Ok(Value::Null),
                1 => {}
                i => return Err(format!("union branch {i} out of range")),
            }
        }
        self.read_value(&column.ty)
    }

    fn read_value(&mut self, ty: &ColumnType) -> Result<Value, String> {
        Ok(match ty {
            ColumnType::Bool => match self.take(1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(format!("boolean byte {b}")),
            },
            ColumnType::Int64 => Value::Int64(self.long()?),
            ColumnType::Timestamp => Value::Timestamp(self.long()?),
            ColumnType::Date => {
                let d = self.long()?;
                Value::Date(i32::try_from(d).map_err(|_| format!("date {d} out of range"))?)
            }
            ColumnType::Float32 => {
                let b = self.take(4)?;
                Value::Float32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            ColumnType::Float64 => {
                let b = self.take(8)?;
                let mut a = [0u8; 8];
                a.copy_from_slice(b);
                Value::Float64(f64::from_le_bytes(a))
            }
            ColumnType::Numeric => {
                Value::Numeric(format_decimal(decimal_from_bytes(self.bytes()?)?))
            }
            ColumnType::String => Value::String(self.string()?),
            ColumnType::Json => Value::Json(self.string()?),
            ColumnType::Bytes => Value::Bytes(self.bytes()?.to_vec()),
            ColumnType::Array(elem) => {
                let mut items = Vec::new();
                loop {
                    let count = self.block_count()?;
                    if count == 0 {
                        break;
                    }
                    // Every item takes at least one byte: refuse counts the data cannot hold
                    // before reserving anything.
                    if count > (self.buf.len() - self.pos) as u64 {
                        return Err(format!("array block of {count} items exceeds the data"));
                    }
                    for _ in 0..count {
                        match self.long()? {
                            0 => items.push(Value::Null),
                            1 => items.push(self.read_value(elem)?),
                            i => return Err(format!("array item union branch {i}")),
                        }
                    }
                }
                Value::Array((**elem).clone(), items)
            }
        })
    }
}
