"""The example filter in Python: routes high-value orders to a derived topic.

It does exactly what the Rust example (`plugins/filter`) does, against the same WIT world
(`ledgerhost:plugin/consumer@0.2.0`): a batch carries its columns once and each event's values
by position, and the manifest asks, as the Rust filter's does, only for the `amount` column,
the Avro and the attributes (`subscription.columns`, `.avro`, `.attributes`). Every order whose `amount` is at least the `threshold`
config value (default 1000) is republished unchanged (its Avro, ordering key and attributes)
onto the `topic` config value (default `orders-high-value`). Tombstones are routed by their
last amount. Everything else is acknowledged; an `amount` that is not a number is rejected
(dead-lettered with the reason) rather than silently skipped.

Messages (reject and retry reasons) are word for word those of the Rust filter, so the
dead-letter topic reads the same whichever language a team chose.
"""

import math
import re
import struct
from decimal import Decimal

import wit_world
from componentize_py_types import Err
from wit_world.imports import ledger, store, types

DEFAULT_TOPIC = "orders-high-value"
DEFAULT_THRESHOLD = "1000"

# What Rust's `parse_decimal` reads (the SDK's): `[+|-]digits[.digits]`, either side of the
# point may be empty but not both, ASCII digits only; no exponent, `inf`, `NaN` or `_`, all
# of which `decimal.Decimal` would accept on its own. At most 1 000 characters.
_PLAIN_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)", re.ASCII)


def parse_decimal(text):
    """Decimal text as an exact `Decimal`; raises ValueError with the Rust SDK's reason."""
    t = text.strip()
    if len(t) > 1000 or not _PLAIN_DECIMAL.fullmatch(t):
        raise ValueError(f"`{text}` is not a decimal number")
    return Decimal(t)


def _rust_str(s):
    """A string as Rust's `{:?}` prints it, so reasons match the Rust filter's."""
    out = ['"']
    for ch in s:
        if ch == "\\":
            out.append("\\\\")
        elif ch == '"':
            out.append('\\"')
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\0":
            out.append("\\0")
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{{{ord(ch):x}}}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _rust_float(x):
    """A float as Rust's `{:?}` prints it (`1.0`, `NaN`, `inf`, `1e20`)."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    text = repr(x)
    if "e" in text:
        mantissa, exp = text.split("e")
        return f"{mantissa.removesuffix('.0')}e{int(exp)}"
    return text


def _rust_f32(x):
    """An f32 (widened to a Python float) as Rust prints it: its shortest f32 digits."""
    if math.isnan(x) or math.isinf(x):
        return _rust_float(x)
    for precision in range(1, 10):
        text = f"{x:.{precision}g}"
        if struct.unpack("<f", struct.pack("<f", float(text)))[0] == x:
            return _rust_float(float(text))
    return _rust_float(x)


def _rust_item(x, f32=False):
    if x is None:
        return "None"
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, float):
        return _rust_f32(x) if f32 else _rust_float(x)
    if isinstance(x, str):
        return _rust_str(x)
    if isinstance(x, (bytes, bytearray)):
        return "[" + ", ".join(str(b) for b in x) + "]"
    return str(x)


# The WIT case names as the Rust bindings spell them (`Value::Int64Array`).
_CASE_NAMES = {
    types.Value_Null: "Null",
    types.Value_Bool: "Bool",
    types.Value_Int64: "Int64",
    types.Value_Float32: "Float32",
    types.Value_Float64: "Float64",
    types.Value_Numeric: "Numeric",
    types.Value_String: "String",
    types.Value_Bytes: "Bytes",
    types.Value_Date: "Date",
    types.Value_Timestamp: "Timestamp",
    types.Value_Json: "Json",
    types.Value_BoolArray: "BoolArray",
    types.Value_Int64Array: "Int64Array",
    types.Value_Float32Array: "Float32Array",
    types.Value_Float64Array: "Float64Array",
    types.Value_NumericArray: "NumericArray",
    types.Value_StringArray: "StringArray",
    types.Value_BytesArray: "BytesArray",
    types.Value_DateArray: "DateArray",
    types.Value_TimestampArray: "TimestampArray",
    types.Value_JsonArray: "JsonArray",
}


def _rust_value(v):
    """A WIT value as the Rust filter's `{other:?}` prints it."""
    name = _CASE_NAMES.get(type(v), type(v).__name__)
    if isinstance(v, types.Value_Null):
        return f"Value::{name}"
    payload = v.value
    if isinstance(payload, list):
        f32 = isinstance(v, types.Value_Float32Array)
        items = ", ".join("None" if x is None else f"Some({_rust_item(x, f32)})" for x in payload)
        return f"Value::{name}([{items}])"
    return f"Value::{name}({_rust_item(payload)})"


def _rust_error(e):
    """A capability error as the Rust SDK displays it (`Error::Denied("...")`)."""
    for cls, name in (
        (types.Error_Denied, "Denied"),
        (types.Error_Backend, "Backend"),
        (types.Error_Invalid, "Invalid"),
    ):
        if isinstance(e, cls):
            return f"Error::{name}({_rust_str(e.value)})"
    return repr(e)


FORWARD = "forward"
SKIP = "skip"


def amount_position(batch):
    """The position of `amount` in each event's values; None when the batch lacks it."""
    for i, column in enumerate(batch.columns):
        if column.name == "amount":
            return i
    return None


def route(event, position, threshold):
    """FORWARD, SKIP, or the reject reason (a str) for one event against `threshold`;
    `position` is the amount's place in the event's values (`amount_position`)."""
    value = None if position is None else event.values[position]
    if value is None or isinstance(value, types.Value_Null):
        return SKIP
    if isinstance(value, types.Value_Int64):
        return FORWARD if Decimal(value.value) >= threshold else SKIP
    if isinstance(value, types.Value_Numeric):
        try:
            amount = parse_decimal(value.value)
        except ValueError as e:
            return f"{event.id}: amount {e}"
        return FORWARD if amount >= threshold else SKIP
    if isinstance(value, (types.Value_Float64, types.Value_Float32)):
        if math.isnan(value.value):
            return f"{event.id}: amount is NaN"
        # Decimal(float) is the float's exact value, as the Rust SDK compares it.
        return FORWARD if Decimal(value.value) >= threshold else SKIP
    return f"{event.id}: amount must be INT64, FLOAT64 or NUMERIC, got {_rust_value(value)}"


def ordering_key(event):
    """The key part of the id `table/key/commit_ts` (the key part escapes `/`)."""
    _, sep, rest = event.id.partition("/")
    if not sep:
        rest = ""
    head, sep, _ = rest.rpartition("/")
    return head if sep else rest


# The standard attributes every ledger message has. The host sends only those an event does
# not already say (normally none of them: it leaves out each whose value is the batch's table,
# the commit timestamp in decimal, the id, the batch's fingerprint), so a republished event
# gets back each one its list lacks, as the Rust SDK's `ledger::message_of` does; the
# standard four first, then the others.
_STANDARD = ("table", "commit_ts", "event_id", "schema_fingerprint")


def ledger_attributes(batch, event):
    """Every ledger attribute of `event` of `batch`; [] when the manifest asks for none."""
    sent = event.attributes
    if sent is None:
        return []
    derived = {
        "table": batch.table,
        "commit_ts": str(event.commit_ts),
        "event_id": event.id,
        "schema_fingerprint": batch.schema_fingerprint,
    }
    given = dict(sent)
    out = [(k, given.get(k, derived[k])) for k in _STANDARD]
    out.extend((k, v) for k, v in sent if k not in _STANDARD)
    return out


# The topic this instance already created, so `create-topic` is called once, not per batch.
_created = None


def _forward(topic, batch, events):
    """Republishes `events` of `batch` unchanged; None on success, else the retry reason."""
    global _created
    if not events:
        return None
    try:
        if _created != topic:
            ledger.create_topic(topic)
            _created = topic
        ledger.publish(
            topic,
            # Absent Avro or attributes (a manifest that does not ask) publish as empty,
            # as the Rust SDK's `republish` does.
            [
                ledger.Message(e.avro or b"", ordering_key(e), ledger_attributes(batch, e))
                for e in events
            ],
        )
    except Err as e:
        # A failed publish may mean the topic vanished; re-create it on the next attempt.
        _created = None
        return f"cannot publish to `{topic}`: {_rust_error(e.value)}"
    return None


def _config(key):
    """The granted config value of `key`, or None; raises ValueError if the store fails."""
    try:
        return store.get(key)
    except Err as e:
        name = "Upstream" if isinstance(e.value, store.Error_Upstream) else "Io"
        raise ValueError(
            f"config store failed reading `{key}`: Error::{name}({_rust_str(e.value.value)})"
        ) from None


class WitWorld(wit_world.WitWorld):
    """The `consumer` world's export."""

    def handle(self, batch):
        events = batch.events
        try:
            text = _config("threshold")
            threshold = parse_decimal(DEFAULT_THRESHOLD if text is None else text)
        except ValueError as e:
            reason = f"config `threshold`: {e}"
            return [types.Disposition_Retry(reason) for _ in events]
        try:
            topic = _config("topic")
            if topic is None:
                topic = DEFAULT_TOPIC
        except ValueError:
            # As the Rust filter: a failing store reads as absent.
            topic = DEFAULT_TOPIC
        position = amount_position(batch)
        routes = [route(e, position, threshold) for e in events]
        failed = _forward(topic, batch, [e for e, r in zip(events, routes) if r is FORWARD])
        out = []
        for r in routes:
            if r is FORWARD and failed is not None:
                out.append(types.Disposition_Retry(failed))
            elif r is FORWARD or r is SKIP:
                out.append(types.Disposition_Ack())
            else:
                out.append(types.Disposition_Reject(r))
        return out
