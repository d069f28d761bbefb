// The example filter in JavaScript: routes high-value orders to a derived topic.
//
// It does exactly what the Rust example (`plugins/filter`) does, against the same WIT world
// (`ledgerhost:plugin/consumer@0.2.0`): a batch carries its columns once and each event's
// values by position, and the manifest asks, as the Rust filter's does, only for the `amount`
// column, the Avro and the attributes (`subscription.columns`, `.avro`, `.attributes`). Every
// order whose `amount` is at least the `threshold`
// config value (default 1000) is republished unchanged (its Avro, ordering key and
// attributes) onto the `topic` config value (default `orders-high-value`). Tombstones are
// routed by their last amount. Everything else is acknowledged; an `amount` that is not a
// number is rejected (dead-lettered with the reason) rather than silently skipped.
//
// Messages (reject and retry reasons) are word for word those of the Rust filter, so the
// dead-letter topic reads the same whichever language a team chose.

import { createTopic, publish } from 'ledgerhost:plugin/ledger@0.1.0';
import { get as configGet } from 'wasi:config/store@0.2.0-rc.1';

const DEFAULT_TOPIC = 'orders-high-value';
const DEFAULT_THRESHOLD = '1000';

// What Rust's `parse_decimal` reads (the SDK's): `[+|-]digits[.digits]`, either side of the
// point may be empty but not both, ASCII digits only; no exponent, `inf`, `NaN` or `_`.
const PLAIN_DECIMAL = /^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)$/;

/**
 * Decimal text as an exact `{ units, scale, text }` (value = units / 10^scale, units a BigInt),
 * so NUMERIC amounts compare without float rounding; throws a DecimalError with the reason.
 */
function parseDecimal(text) {
  // String.prototype.trim and Rust's str::trim both strip Unicode white space.
  const t = text.trim();
  if (t.length > 1000 || !PLAIN_DECIMAL.test(t)) {
    throw new DecimalError(`\`${text}\` is not a decimal number`);
  }
  const [int, frac = ''] = t.replace(/^[+-]/, '').split('.');
  return { units: BigInt(`${t[0] === '-' ? '-' : ''}${int}${frac}`), scale: frac.length, text: t };
}

/** True when decimal `a` >= decimal `b`: both brought to the larger scale, then compared. */
function decimalGe(a, b) {
  const scale = Math.max(a.scale, b.scale);
  const at = (d) => d.units * 10n ** BigInt(scale - d.scale);
  return at(a) >= at(b);
}

class DecimalError extends Error {}

/** A string as Rust's `{:?}` prints it, so reasons match the Rust filter's. */
function rustStr(s) {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (ch === '\\') out += '\\\\';
    else if (ch === '"') out += '\\"';
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (c === 0) out += '\\0';
    else if (c < 0x20 || c === 0x7f) out += `\\u{${c.toString(16)}}`;
    else out += ch;
  }
  return out + '"';
}

/** A float as Rust's `{:?}` prints it (`1.0`, `NaN`, `inf`, `1e20`, `0.0001`). */
function rustFloat(x) {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'inf' : '-inf';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  // toExponential() with no argument gives the shortest digits that round-trip.
  const [mantissa, expText] = x.toExponential().split('e');
  const exp = Number(expText);
  const ax = Math.abs(x);
  if (ax < 1e-4 || ax >= 1e16) return `${mantissa}e${exp}`;
  const text = String(x);
  return /[.e]/.test(text) ? text : `${text}.0`;
}

/** An f32 as Rust prints it: the shortest digits that round-trip through f32. */
function rustF32(x) {
  if (!Number.isFinite(x)) return rustFloat(x);
  for (let p = 1; p <= 9; p++) {
    const y = Number(x.toPrecision(p));
    if (Math.fround(y) === x) return rustFloat(y);
  }
  return rustFloat(x);
}

/** One value or array element; `kind` says how a number prints: 'f32', 'f64' or integer. */
function rustItem(x, kind) {
  if (x === undefined || x === null) return 'None';
  if (typeof x === 'boolean') return x ? 'true' : 'false';
  if (typeof x === 'number') {
    if (kind === 'f32') return rustF32(x);
    if (kind === 'f64') return rustFloat(x);
    return String(x);
  }
  if (typeof x === 'string') return rustStr(x);
  // list<u8> arrives as a typed array (or a plain array): Rust prints `[1, 2]`.
  if (ArrayBuffer.isView(x) || Array.isArray(x)) return `[${Array.from(x).join(', ')}]`;
  return String(x);
}

/** `int64-array` -> `Int64Array`: the case names as the Rust bindings spell them. */
function caseName(tag) {
  return tag.replace(/(^|-)([a-z0-9])/g, (_, __, c) => c.toUpperCase());
}

/** A WIT value as the Rust filter's `{other:?}` prints it. */
function rustValue(v) {
  const name = caseName(v.tag);
  if (v.tag === 'null') return `Value::${name}`;
  if (Array.isArray(v.val)) {
    const kind = v.tag === 'float32-array' ? 'f32' : v.tag === 'float64-array' ? 'f64' : 'int';
    // Array elements are option<T>: a nested option may come as {tag, val} or as T/undefined.
    const items = v.val.map((x) => {
      const inner = x && typeof x === 'object' && 'tag' in x ? (x.tag === 'some' ? x.val : undefined) : x;
      return inner === undefined || inner === null ? 'None' : `Some(${rustItem(inner, kind)})`;
    });
    return `Value::${name}([${items.join(', ')}])`;
  }
  const kind = v.tag === 'float32' ? 'f32' : v.tag === 'float64' ? 'f64' : 'int';
  return `Value::${name}(${rustItem(v.val, kind)})`;
}

/** A capability error as the Rust SDK displays it (`Error::Denied("...")`). */
function rustError(e) {
  const payload = e && typeof e === 'object' && 'payload' in e ? e.payload : e;
  if (payload && typeof payload === 'object' && 'tag' in payload) {
    return `Error::${caseName(payload.tag)}(${rustStr(String(payload.val))})`;
  }
  return String(payload);
}

const FORWARD = { route: 'forward' };
const SKIP = { route: 'skip' };

/** The position of `amount` in each event's values; -1 when the batch lacks it. */
function amountPosition(batch) {
  return batch.columns.findIndex((c) => c.name === 'amount');
}

/**
 * FORWARD, SKIP, or the reject reason (a string) for one event against `threshold`;
 * `position` is the amount's place in the event's values (`amountPosition`).
 */
function route(event, position, threshold) {
  const value = position < 0 ? undefined : event.values[position];
  if (value === undefined || value.tag === 'null') return SKIP;
  switch (value.tag) {
    case 'int64':
      return decimalGe({ units: BigInt(value.val), scale: 0 }, threshold) ? FORWARD : SKIP;
    case 'numeric': {
      let amount;
      try {
        amount = parseDecimal(value.val);
      } catch (e) {
        if (e instanceof DecimalError) return `${event.id}: amount ${e.message}`;
        throw e;
      }
      return decimalGe(amount, threshold) ? FORWARD : SKIP;
    }
    case 'float64':
    case 'float32': {
      const x = value.val;
      // The threshold is decimal text of modest size; its float value is exact enough for a
      // column that is itself a float.
      const t = Number(threshold.text);
      if (Number.isNaN(x)) return `${event.id}: amount is NaN`;
      return x >= t ? FORWARD : SKIP;
    }
    default:
      return `${event.id}: amount must be INT64, FLOAT64 or NUMERIC, got ${rustValue(value)}`;
  }
}

/** The key part of the id `table/key/commit_ts` (the key part escapes `/`). */
function orderingKey(event) {
  const first = event.id.indexOf('/');
  const rest = first < 0 ? '' : event.id.slice(first + 1);
  const last = rest.lastIndexOf('/');
  return last < 0 ? rest : rest.slice(0, last);
}

// The standard attributes every ledger message has. The host sends only those an event does
// not already say (normally none of them: it leaves out each whose value is the batch's table,
// the commit timestamp in decimal, the id, the batch's fingerprint), so a republished event
// gets back each one its list lacks, as the Rust SDK's `ledger::message_of` does; the
// standard four first, then the others.
const STANDARD = ['table', 'commit_ts', 'event_id', 'schema_fingerprint'];

/** Every ledger attribute of `event` of `batch`; [] when the manifest asks for none. */
function ledgerAttributes(batch, event) {
  const sent = event.attributes;
  if (sent === undefined || sent === null) return [];
  const derived = {
    table: batch.table,
    commit_ts: String(event.commitTs),
    event_id: event.id,
    schema_fingerprint: batch.schemaFingerprint,
  };
  const all = STANDARD.map((k) => {
    const found = sent.find(([name]) => name === k);
    return [k, found === undefined ? derived[k] : found[1]];
  });
  for (const [k, v] of sent) if (!STANDARD.includes(k)) all.push([k, v]);
  return all;
}

// The topic this instance already created, so `create-topic` is called once, not per batch.
let created = null;

/** Republishes `events` of `batch` unchanged; null on success, else the retry reason. */
function forward(topic, batch, events) {
  if (events.length === 0) return null;
  try {
    if (created !== topic) {
      createTopic(topic);
      created = topic;
    }
    publish(
      topic,
      // Absent Avro or attributes (a manifest that does not ask) publish as empty, as the
      // Rust SDK's `republish` does.
      events.map((e) => ({
        data: e.avro ?? new Uint8Array(0),
        orderingKey: orderingKey(e),
        attributes: ledgerAttributes(batch, e),
      })),
    );
  } catch (e) {
    // A failed publish may mean the topic vanished; re-create it on the next attempt.
    created = null;
    return `cannot publish to \`${topic}\`: ${rustError(e)}`;
  }
  return null;
}

/** The granted config value of `key`, or undefined; throws a reason if the store fails. */
function config(key) {
  try {
    const v = configGet(key);
    return v === null ? undefined : v;
  } catch (e) {
    throw new DecimalError(`config store failed reading \`${key}\`: ${rustError(e)}`);
  }
}

/** The `consumer` world's export: one disposition per event, in order. */
export function handle(batch) {
  const events = batch.events;
  let threshold;
  try {
    const text = config('threshold');
    threshold = parseDecimal(text === undefined ? DEFAULT_THRESHOLD : text);
  } catch (e) {
    if (!(e instanceof DecimalError)) throw e;
    const reason = `config \`threshold\`: ${e.message}`;
    return events.map(() => ({ tag: 'retry', val: reason }));
  }
  let topic;
  try {
    topic = config('topic');
  } catch (e) {
    // As the Rust filter: a failing store reads as absent.
    if (!(e instanceof DecimalError)) throw e;
  }
  if (topic === undefined) topic = DEFAULT_TOPIC;
  const position = amountPosition(batch);
  const routes = events.map((e) => route(e, position, threshold));
  const failed = forward(
    topic,
    batch,
    events.filter((_, i) => routes[i] === FORWARD),
  );
  return routes.map((r) => {
    if (r === FORWARD && failed !== null) return { tag: 'retry', val: failed };
    if (r === FORWARD || r === SKIP) return { tag: 'ack' };
    return { tag: 'reject', val: r };
  });
}
