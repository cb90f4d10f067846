// The load generator for the Node.js peer (server.js): R rooms x 2 members with socket.io-client,
// driven like bench/loadgen.py drives the python-socketio peer.
//
//   node loadgen.js --url http://127.0.0.1:8200 --rooms 1000 --mode rate --rate 1 \
//       --warmup 5 --seconds 20 --drain 10
//
// Modes: "rate" (each client sends `rate` chats/s, each at a random phase within its period) and
// "saturate" (each client keeps `window` chats awaiting their ack). Timeline: connect every member
// (timed, `concurrency` at a time) -> sending starts -> `warmup` -> `seconds` of measurement ->
// sending stops -> drain until every chat is acked and delivered (bounded by `drain`) -> count.
//
// Each chat carries its number as `id` and its send time (process.hrtime, ns) at the head of its
// text, so the other member measures fan-out latency on the same clock. Latency samples are the
// chats sent in the measuring window; the per-second rates count what happened in it.
//
// stdout: ONE JSON object with the keys of bench/loadgen.py's result where they apply.
// stderr: `bench:window-start` and `bench:window-end` as the measuring window opens and closes
// (bench/run.py samples the server's CPU and RSS then), and any problem.
"use strict";

const { io } = require("socket.io-client");

const DEFAULTS = {
  url: "http://127.0.0.1:8200",
  rooms: 10,
  mode: "rate",
  rate: 1,
  window: 10,
  senders: 2,
  warmup: 5,
  seconds: 20,
  drain: 10,
  concurrency: 100,
  "connect-timeout": 60,
  seed: 1,
};
const PAD = "x".repeat(40);

function options() {
  const o = { ...DEFAULTS };
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "");
    if (!(key in DEFAULTS) || i + 1 >= argv.length) {
      throw new Error(`unknown or incomplete option ${argv[i]}`);
    }
    o[key] = typeof DEFAULTS[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  if (!["rate", "saturate"].includes(o.mode)) throw new Error(`unknown mode ${o.mode}`);
  return o;
}

function rng(seed) {
  // mulberry32: a small seeded generator for the send phases
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const nowNs = () => Number(process.hrtime.bigint());
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));

/** p50/p95/p99/max of `values` (ms) and how many, like bench/loadgen.py's percentiles(). */
function percentiles(values) {
  if (!values.length) return { n: 0, p50: null, p95: null, p99: null, max: null };
  const s = Float64Array.from(values).sort();
  const at = (q) => Math.round(s[Math.min(s.length - 1, Math.floor(q * s.length))] * 1000) / 1000;
  return { n: s.length, p50: at(0.5), p95: at(0.95), p99: at(0.99), max: at(1) };
}

class Run {
  constructor(o) {
    this.o = o;
    this.random = rng(o.seed);
    this.members = [];
    for (let room = 0; room < o.rooms; room++) {
      for (let role = 0; role < 2; role++) {
        this.members.push({
          room,
          role,
          socket: null,
          sent: 0,
          acked: 0,
          outstanding: new Map(), // n -> send time (ns)
          seen: new Set(), // n of the other member's chats received
          dups: 0,
          closed: false,
        });
      }
    }
    this.connectMs = [];
    this.connectFailures = [];
    this.fanout = []; // ms
    this.acklat = []; // ms
    this.lag = []; // ms, how late a rate sender sent
    this.w0 = Infinity; // measuring window, ns
    this.w1 = Infinity;
    this.stop = Infinity; // ns: no chat is sent from then on
    this.measuring = false;
    this.stopping = false;
    this.sentInWindow = 0;
    this.ackedInWindow = 0;
    this.deliveredInWindow = 0;
    this.totalSent = 0;
    this.totalAcked = 0;
    this.totalDelivered = 0;
    this.errors = 0;
    this.closedEarly = 0;
  }

  open(m) {
    return new Promise((resolve) => {
      const t0 = nowNs();
      const socket = io(this.o.url, {
        transports: ["websocket"],
        forceNew: true,
        reconnection: false,
        timeout: this.o["connect-timeout"] * 1000,
        auth: { room: `r${m.room}`, user: `u${m.room}-${m.role}` },
      });
      socket.once("connect", () => {
        this.connectMs.push((nowNs() - t0) / 1e6);
        m.socket = socket;
        resolve();
      });
      socket.on("connect_error", (err) => {
        if (m.socket === null) {
          this.connectFailures.push(String(err && err.message).slice(0, 200));
          socket.close();
          resolve();
        } else {
          this.errors += 1;
        }
      });
      socket.on("disconnect", () => {
        if (m.socket === null || m.closed) return;
        m.closed = true;
        if (!this.stopping) this.closedEarly += 1;
      });
      socket.on("chat", (msg) => this.onChat(m, msg));
    });
  }

  async connectAll() {
    const t0 = nowNs();
    let next = 0;
    const worker = async () => {
      while (next < this.members.length) await this.open(this.members[next++]);
    };
    const n = Math.max(1, Math.min(this.o.concurrency, this.members.length));
    await Promise.all(Array.from({ length: n }, worker));
    return (nowNs() - t0) / 1e9;
  }

  onChat(m, msg) {
    const t = nowNs();
    const n = msg.id;
    if (m.seen.has(n)) {
      m.dups += 1;
      return;
    }
    m.seen.add(n);
    this.totalDelivered += 1;
    const tSent = Number(msg.text.slice(0, msg.text.indexOf(" ")));
    if (this.w0 <= tSent && tSent < this.w1) this.fanout.push((t - tSent) / 1e6);
    if (this.w0 <= t && t < this.w1) this.deliveredInWindow += 1;
  }

  onAck(m, n) {
    const t = nowNs();
    const tSent = m.outstanding.get(n);
    if (tSent === undefined) return;
    m.outstanding.delete(n);
    m.acked += 1;
    this.totalAcked += 1;
    if (this.w0 <= tSent && tSent < this.w1) this.acklat.push((t - tSent) / 1e6);
    if (this.w0 <= t && t < this.w1) this.ackedInWindow += 1;
    if (this.o.mode === "saturate") this.pump(m);
  }

  send(m) {
    const n = m.sent;
    m.sent += 1;
    this.totalSent += 1;
    const t = nowNs();
    m.outstanding.set(n, t);
    if (this.w0 <= t && t < this.w1) this.sentInWindow += 1;
    m.socket.emit("chat", { id: n, text: `${t} ${PAD}` }, () => this.onAck(m, n));
  }

  /** saturate: top the member's window of outstanding acks up, until the stop time. */
  pump(m) {
    while (!m.closed && m.outstanding.size < this.o.window && nowNs() < this.stop) this.send(m);
  }

  /** rate: one chat every 1/rate s from a random phase, until the stop time; how late each was. */
  async rateSender(m, startNs) {
    const period = 1e9 / this.o.rate;
    let due = startNs + this.random() * period;
    while (due < this.stop && !m.closed) {
      await sleep(Math.ceil((due - nowNs()) / 1e6)); // timers have 1 ms steps: never early
      if (this.measuring) this.lag.push((nowNs() - due) / 1e6);
      this.send(m);
      due += period;
    }
  }

  settled() {
    return this.totalAcked >= this.totalSent && this.totalDelivered >= this.totalSent;
  }

  async traffic(live) {
    const o = this.o;
    const start = nowNs() + 200e6;
    this.w0 = start + o.warmup * 1e9;
    this.w1 = this.stop = this.w0 + o.seconds * 1e9;
    const senders = live.filter((m) => m.role < o.senders);
    const rateSenders =
      o.mode === "rate" ? senders.map((m) => this.rateSender(m, start)) : [];
    if (o.mode === "saturate") {
      await sleep((start - nowNs()) / 1e6);
      for (const m of senders) this.pump(m);
    }
    await sleep((this.w0 - nowNs()) / 1e6);
    this.measuring = true;
    process.stderr.write("bench:window-start\n");
    await sleep((this.w1 - nowNs()) / 1e6);
    process.stderr.write("bench:window-end\n");
    this.measuring = false;
    await Promise.race([Promise.all(rateSenders), sleep(5000)]);
    const drainStart = nowNs();
    while (!this.settled() && nowNs() - drainStart < o.drain * 1e9) {
      if (this.closedEarly && live.every((m) => m.closed)) break;
      await sleep(50);
    }
    const measured = (this.w1 - this.w0) / 1e9;
    const sum = (f) => this.members.reduce((acc, m) => acc + f(m), 0);
    const sent = sum((m) => m.sent);
    const unique = sum((m) => m.seen.size);
    return {
      measured_s: Math.round(measured * 100) / 100,
      drain_s: Math.round((nowNs() - drainStart) / 1e7) / 100,
      sent,
      acked: sum((m) => m.acked),
      delivered: unique,
      lost: sent - unique,
      dup: sum((m) => m.dups),
      unacked: sum((m) => m.outstanding.size),
      echo_missing: null,
      errors: this.errors,
      closed_early: this.closedEarly,
      sent_per_s: Math.round((10 * this.sentInWindow) / measured) / 10,
      delivered_per_s: Math.round((10 * this.deliveredInWindow) / measured) / 10,
      acks_per_s: Math.round((10 * this.ackedInWindow) / measured) / 10,
      fanout_ms: percentiles(this.fanout),
      ack_ms: percentiles(this.acklat),
      send_lag_ms: percentiles(this.lag),
    };
  }

  async run() {
    const connectS = await this.connectAll();
    const live = this.members.filter((m) => m.socket !== null);
    const result = {
      rooms: this.o.rooms,
      connections: this.members.length,
      connected: live.length,
      connect_failures: this.connectFailures.length,
      connect_failure_examples: this.connectFailures.slice(0, 3),
      setup_s: 0,
      connect_s: Math.round(connectS * 100) / 100,
      connect_ms: percentiles(this.connectMs),
      generator: `node ${process.version}, socket.io-client`,
    };
    try {
      Object.assign(result, await this.traffic(live));
    } finally {
      this.stopping = true;
      for (const m of live) m.socket.disconnect();
    }
    return result;
  }
}

async function main() {
  const o = options();
  // Bounded in time whatever happens: connecting, the run itself, the drain, and a margin.
  const limit = 2 * o["connect-timeout"] + o.warmup + o.seconds + o.drain + 30;
  setTimeout(() => {
    process.stderr.write(`loadgen.js: still running after ${limit} s, giving up\n`);
    process.exit(2);
  }, limit * 1000).unref();
  const result = await new Run(o).run();
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`loadgen.js: ${(err && err.stack) || err}\n`);
  process.exit(1);
});
