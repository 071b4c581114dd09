// k6 against the scoring API (docs/serving.md), speaking it as `harness load` does (docs/load.md):
//
//   HARNESS_URL=http://127.0.0.1:8000 HARNESS_EVENTS_PER_REQUEST=1000 HARNESS_ENCODING=json \
//     HARNESS_TOKEN_FILE=token.txt k6 run --vus 8 --duration 60s load/k6/score.js
//
// Each VU replays one stream of its own in time order, HARNESS_EVENTS_PER_REQUEST events a request, JSON or
// msgpack (HARNESS_ENCODING), waiting for each answer before the next (a closed loop, as `harness load
// --concurrency N` with N VUs). It first warms its stream (requests tagged phase=warm-up, sent until the answer
// no longer lists the stream in `warming`), keeps the tag for HARNESS_WARMUP_S seconds more (default 5), then
// tags its requests phase=score: read `http_req_duration{phase:score}` and the `scored` counter, and the line
// the summary ends with (rate over the measured window, p95). As `harness load`'s, the measured bodies are one
// pass over the stream's values, encoded once and sent round and round, every request with "order": "arrival".
// Every answer is checked as `harness load` checks it (a 200 with exactly one finite score per event; a 503
// with Retry-After is `shed`); the token (HARNESS_TOKEN_FILE's one line, or HARNESS_TOKEN) goes in
// `Authorization: Bearer`. A bad variable stops k6 before any load, with a line naming it.
import http from "k6/http";
import { sleep } from "k6";
import { Counter, Gauge } from "k6/metrics";
import { CONTENT_TYPES, check, cycle, encode, settingsFrom, streamValues } from "./scoring.js";

const SETTINGS = settingsFrom(__ENV, (path) => open(path));
const SHED_PATIENCE_S = 60; // a warm-up retries shed requests this long in all (harness.load.warmup)

export const options = {
  summaryTrendStats: ["avg", "p(50)", "p(95)", "p(99)", "max"],
  // any failed request fails the run (exit 99), as a run that is not VALID fails `harness load`; the other
  // threshold only puts the measured requests' latencies in the summary
  thresholds: { failed: ["count==0"], "http_req_duration{phase:score}": ["max>=0"] },
};

const scored = new Counter("scored");
const failed = new Counter("failed");
const windowFrom = new Gauge("window_from_ms"); // each VU's window start; the summary takes the earliest
const windowTo = new Gauge("window_to_ms"); // the latest answer scored

const headers = { "Content-Type": CONTENT_TYPES[SETTINGS.encoding] };
if (SETTINGS.token) headers.Authorization = `Bearer ${SETTINGS.token}`;
const vu = { stream: `k6-${Math.floor(Math.random() * 2 ** 32).toString(16)}-${__VU}`, next: 0, bodies: null, from: 0, started: false };

function post(body, phase) {
  const res = http.post(SETTINGS.url, body, { headers, tags: { phase }, responseType: SETTINGS.encoding === "msgpack" ? "binary" : "text",
    timeout: "10s" });
  const got = check(res.status, res.body, res.headers["Retry-After"], SETTINGS.events, SETTINGS.encoding);
  got.retryAfter = res.headers["Retry-After"];
  return got;
}

function warmUp() {
  const values = streamValues(__VU);
  const patience = Date.now() + SHED_PATIENCE_S * 1000;
  for (;;) {
    const got = post(encode(vu.stream, vu.next, SETTINGS.events, values, SETTINGS.encoding), "warm-up");
    if (got.why === "shed" && Date.now() < patience) { sleep(Math.min(Number(got.retryAfter) || 1, 10)); continue; }
    if (got.why) {
      failed.add(1, { phase: "warm-up", why: got.why });
      throw new Error(`warm-up of stream ${vu.stream} failed: ${got.why}`);
    }
    vu.next += SETTINGS.events;
    if (!(vu.stream in got.warming)) break;
  }
  vu.bodies = cycle(vu.stream, vu.next, SETTINGS.events, values, SETTINGS.encoding);
  vu.next = 0;
  vu.from = Date.now() + SETTINGS.warmupS * 1000;
}

export default function () {
  if (vu.bodies === null) warmUp();
  const measured = Date.now() >= vu.from;
  const sent = Date.now();
  const got = post(vu.bodies[vu.next++ % vu.bodies.length], measured ? "score" : "warm-up");
  if (got.why) failed.add(1, { phase: measured ? "score" : "warm-up", why: got.why });
  else if (measured) {
    if (!vu.started) { vu.started = true; windowFrom.add(sent); }
    scored.add(1);
    windowTo.add(Date.now());
  }
}

// The measured window's figures, in the words `harness load` prints them.
export function handleSummary(data) {
  const m = data.metrics;
  const n = m.scored ? m.scored.values.count : 0;
  const seconds = m.window_to_ms && m.window_from_ms ? (m.window_to_ms.values.max - m.window_from_ms.values.min) / 1000 : 0;
  const lat = m["http_req_duration{phase:score}"];
  const ms = (q) => (lat ? lat.values[q].toFixed(1) : "-");
  return { stdout: `scored ${(seconds ? n / seconds : 0).toFixed(1)} req/s over ${seconds.toFixed(1)} s\n` +
    `latency ms, scored: p50 ${ms("p(50)")}  p95 ${ms("p(95)")}  p99 ${ms("p(99)")}  max ${ms("max")}\n` +
    `requests ${n} scored, ${m.failed ? m.failed.values.count : 0} failed (the \`failed\` metric, tagged by why)\n` };
}
