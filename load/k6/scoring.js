// The scoring API's wire format for k6 (docs/serving.md), as `harness load` speaks it (docs/load.md): request
// bodies (JSON, or the packed msgpack form) and the check of every answer. Plain JavaScript with no k6 module,
// so that node can test it against the service's own decoder (tests/test_locust.py); score.js drives k6 with it.

export const START_TIME = 1704067200; // 2024-01-01T00:00:00Z, as harness.load.payload
export const STEP_S = 300;
export const LENGTH = 4032; // values per stream before they come round
export const CONTENT_TYPES = { json: "application/json", msgpack: "application/msgpack" };
export const ORDER = { order: "arrival" }; // every request's stream settings: time jumps back once a round
const MAX_EVENTS = 10000; // the service's default serve.max_events_per_request
const MIN_TOKEN_CHARS = 16;

// The run's settings from the environment (`env`: k6's __ENV); throws one line naming a bad variable.
export function settingsFrom(env, readFile) {
  const encoding = env.HARNESS_ENCODING || "json";
  if (!(encoding in CONTENT_TYPES)) throw new Error(`HARNESS_ENCODING: expected json or msgpack, got '${encoding}'`);
  const number = (name, fallback, low, high, integer) => {
    const raw = env[name] === undefined ? fallback : env[name];
    const value = Number(raw);
    if (raw === "" || !Number.isFinite(value) || value < low || value > high || (integer && !Number.isInteger(value))) {
      throw new Error(`${name}: expected ${integer ? "an integer" : "a number"} in [${low}, ${high}], got '${raw}'`);
    }
    return value;
  };
  return {
    url: (env.HARNESS_URL || "http://127.0.0.1:8000").replace(/\/+$/, "").replace(/\/v1\/score$/, "") + "/v1/score",
    events: number("HARNESS_EVENTS_PER_REQUEST", "1000", 1, MAX_EVENTS, true),
    encoding,
    warmupS: number("HARNESS_WARMUP_S", "5", 0, Infinity, false),
    token: tokenFrom(env, readFile),
  };
}

// HARNESS_TOKEN_FILE's one line (read with `readFile`, k6's open), else HARNESS_TOKEN, else null.
function tokenFrom(env, readFile) {
  let name = "HARNESS_TOKEN_FILE";
  let token = null;
  if (env.HARNESS_TOKEN_FILE) {
    try {
      token = String(readFile(env.HARNESS_TOKEN_FILE)).trim();
    } catch (e) {
      throw new Error(`HARNESS_TOKEN_FILE: cannot read ${env.HARNESS_TOKEN_FILE} (${e.message || e})`);
    }
  } else if (env.HARNESS_TOKEN !== undefined) {
    name = "HARNESS_TOKEN";
    token = String(env.HARNESS_TOKEN).trim();
  }
  if (token !== null && (/\s/.test(token) || token.length < MIN_TOKEN_CHARS)) {
    throw new Error(`${name}: expected one line of at least ${MIN_TOKEN_CHARS} characters without spaces`);
  }
  return token;
}

// A stream's values: a daily sine at 5-minute steps with noise (seeded, so every run replays the same).
export function streamValues(seed) {
  let state = (seed * 2654435761 + 1) >>> 0;
  const uniform = () => {
    state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
    return (state + 0.5) / 4294967296;
  };
  const values = new Array(LENGTH);
  for (let t = 0; t < LENGTH; t++) {
    const noise = Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
    values[t] = 50 + 10 * Math.sin((2 * Math.PI * t) / 288 + seed) + noise;
  }
  return values;
}

// The body of a request carrying events first .. first + n - 1 of `stream`, with its settings.
export function encode(stream, first, n, values, encoding) {
  if (encoding === "json") {
    const events = new Array(n);
    for (let k = 0; k < n; k++) {
      const p = first + k;
      events[k] = { stream, timestamp: START_TIME + p * STEP_S, value: values[p % values.length] };
    }
    return JSON.stringify({ events, streams: { [stream]: ORDER } });
  }
  const index = new Uint8Array(4 * n); // uint32 0 for every event: the request's one stream
  const timestamp = new DataView(new ArrayBuffer(8 * n));
  const value = new DataView(new ArrayBuffer(8 * n));
  for (let k = 0; k < n; k++) {
    const p = first + k;
    timestamp.setFloat64(8 * k, START_TIME + p * STEP_S, true);
    value.setFloat64(8 * k, values[p % values.length], true);
  }
  return pack({ streams: [stream], index, timestamp: new Uint8Array(timestamp.buffer), value: new Uint8Array(value.buffer),
    settings: { [stream]: ORDER } }).buffer;
}

// One pass over a stream's values after its warm-up (`first`: the events that took), encoded once.
export function cycle(stream, first, n, values, encoding) {
  const bodies = [];
  for (let k = 0; k < Math.max(1, Math.ceil(values.length / n)); k++) bodies.push(encode(stream, first + k * n, n, values, encoding));
  return bodies;
}

// Why an answer does not count as scored (`shed`, `HTTP <status>`, `bad_response: ...`), or null for a 200
// with exactly one finite score per event; `warming` is the answer's.
export function check(status, body, retryAfter, events, encoding) {
  if (status === 0) return { why: "connection: no answer", warming: {} };
  if (status !== 200) return { why: status === 503 && retryAfter ? "shed" : `HTTP ${status}`, warming: {} };
  let scores;
  let doc;
  try {
    if (encoding === "msgpack") {
      doc = unpack(new Uint8Array(body));
      if (!(doc.scores instanceof Uint8Array) || doc.scores.length % 8) return { why: "bad_response: scores are not float64 data", warming: {} };
      const view = new DataView(doc.scores.buffer, doc.scores.byteOffset, doc.scores.length);
      scores = [];
      for (let i = 0; i < doc.scores.length; i += 8) scores.push(view.getFloat64(i, true));
    } else {
      doc = JSON.parse(typeof body === "string" ? body : utf8Decode(new Uint8Array(body)));
      scores = doc.scores;
      if (!Array.isArray(scores)) throw new Error("no scores");
    }
  } catch (e) {
    return { why: "bad_response: undecodable answer", warming: {} };
  }
  if (scores.length !== events) return { why: `bad_response: ${scores.length} scores for ${events} events`, warming: {} };
  if (!scores.every((s) => typeof s === "number" && Number.isFinite(s))) return { why: "bad_response: a score is not a finite number", warming: {} };
  return { why: null, warming: doc.warming || {} };
}

// --- msgpack, as much as the API needs ------------------------------------------------------------------------

export function pack(doc) {
  const out = [];
  const bytes = (n, v) => { for (let s = 8 * (n - 1); s >= 0; s -= 8) out.push(Math.floor(v / 2 ** s) % 256); };
  const head = (v, fix, fixMax, codes) => { // codes: 8-, 16- and 32-bit length forms (null: none)
    if (v <= fixMax && fix !== null) out.push(fix + v);
    else if (v < 256 && codes[0] !== null) { out.push(codes[0]); bytes(1, v); }
    else if (v < 65536) { out.push(codes[1]); bytes(2, v); }
    else { out.push(codes[2]); bytes(4, v); }
  };
  const put = (x) => {
    if (x instanceof Uint8Array) { head(x.length, null, -1, [0xc4, 0xc5, 0xc6]); for (const b of x) out.push(b); }
    else if (typeof x === "string") { const u = utf8Encode(x); head(u.length, 0xa0, 31, [0xd9, 0xda, 0xdb]); for (const b of u) out.push(b); }
    else if (Number.isInteger(x) && x >= 0 && x < 2 ** 32) { if (x < 128) out.push(x); else head(x, null, -1, [0xcc, 0xcd, 0xce]); }
    else if (Array.isArray(x)) { head(x.length, 0x90, 15, [null, 0xdc, 0xdd]); x.forEach(put); }
    else if (x && typeof x === "object") { const keys = Object.keys(x); head(keys.length, 0x80, 15, [null, 0xde, 0xdf]); for (const k of keys) { put(k); put(x[k]); } }
    else throw new Error(`cannot pack ${x}`);
  };
  put(doc);
  return Uint8Array.from(out);
}

export function unpack(buf) {
  let at = 0;
  const view = new DataView(buf.buffer, buf.byteOffset, buf.length);
  const uint = (n) => { let v = 0; for (let i = 0; i < n; i++) v = v * 256 + buf[at++]; return v; };
  const take = (n) => { if (at + n > buf.length) throw new Error("truncated"); const b = buf.subarray(at, at + n); at += n; return b; };
  const many = (n, map) => {
    if (!map) { const a = []; for (let i = 0; i < n; i++) a.push(get()); return a; }
    const o = {}; for (let i = 0; i < n; i++) { const k = get(); o[k] = get(); } return o;
  };
  const get = () => {
    if (at >= buf.length) throw new Error("truncated");
    const c = buf[at++];
    if (c < 0x80) return c;
    if (c >= 0xe0) return c - 256;
    if (c >= 0xa0 && c <= 0xbf) return utf8Decode(take(c - 0xa0));
    if (c >= 0x90 && c <= 0x9f) return many(c - 0x90, false);
    if (c >= 0x80 && c <= 0x8f) return many(c - 0x80, true);
    const sizes = { 0xc4: 1, 0xc5: 2, 0xc6: 4, 0xd9: 1, 0xda: 2, 0xdb: 4, 0xdc: 2, 0xdd: 4, 0xde: 2, 0xdf: 4, 0xcc: 1, 0xcd: 2, 0xce: 4, 0xcf: 8 };
    if (c === 0xc0) return null;
    if (c === 0xc2 || c === 0xc3) return c === 0xc3;
    if (c === 0xca) { const v = view.getFloat32(at); at += 4; return v; }
    if (c === 0xcb) { const v = view.getFloat64(at); at += 8; return v; }
    if (c >= 0xd0 && c <= 0xd3) { const n = 2 ** (c - 0xd0); const u = uint(n); return u >= 2 ** (8 * n - 1) ? u - 2 ** (8 * n) : u; }
    if (!(c in sizes)) throw new Error(`msgpack type 0x${c.toString(16)} not expected in an answer`);
    const n = uint(sizes[c]);
    if (c >= 0xcc && c <= 0xcf) return n;
    if (c <= 0xc6) return take(n).slice();
    if (c <= 0xdb) return utf8Decode(take(n));
    return many(n, c >= 0xde);
  };
  const doc = get();
  if (at !== buf.length) throw new Error("trailing bytes");
  return doc;
}

function utf8Encode(s) {
  const out = [];
  for (const ch of s) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return out;
}

function utf8Decode(b) {
  let s = "";
  for (let i = 0; i < b.length;) {
    const c = b[i++];
    let cp = c;
    if (c >= 0xf0) cp = ((c & 7) << 18) | ((b[i++] & 63) << 12) | ((b[i++] & 63) << 6) | (b[i++] & 63);
    else if (c >= 0xe0) cp = ((c & 15) << 12) | ((b[i++] & 63) << 6) | (b[i++] & 63);
    else if (c >= 0xc0) cp = ((c & 31) << 6) | (b[i++] & 63);
    s += String.fromCodePoint(cp);
  }
  return s;
}
