// Fakes for the client's logic under `node --test`: a clock whose timers run only when told,
// a WebSocket the test plays the server of, and a RoomClient wired to both.
import { decode, encode } from "@msgpack/msgpack";
import { RoomClient } from "../src/protocol.js";

export const ME = { id: "u-ada", name: "Ada", role: "mentor" };
export const PEER = { id: "u-grace", name: "Grace", role: "mentee" };
const EMPTY_NOTES = new Uint8Array([0, 0]); // an empty Yjs document's state

/** Timers that fire only inside advance(), in time order; now() is the fake time. */
export class FakeClock {
  constructor(start = 1_000_000) {
    this.time = start;
    this.timers = new Map(); // id -> {at, fn, every}
    this.nextId = 1;
  }

  now() {
    return this.time;
  }

  setTimeout(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn, every: null });
    return id;
  }

  setInterval(fn, ms) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + ms, fn, every: ms });
    return id;
  }

  clearTimeout(id) {
    this.timers.delete(id);
  }

  clearInterval(id) {
    this.timers.delete(id);
  }

  get pending() {
    return this.timers.size;
  }

  _due(until) {
    let found = null;
    for (const [id, timer] of this.timers) {
      if (timer.at <= until && (!found || timer.at < found[1].at)) found = [id, timer];
    }
    return found;
  }

  /** Move time forward by `ms`, firing every timer that falls due on the way. */
  advance(ms) {
    const end = this.time + ms;
    for (let due = this._due(end); due; due = this._due(end)) {
      const [id, timer] = due;
      this.time = timer.at;
      if (timer.every) timer.at += timer.every;
      else this.timers.delete(id);
      timer.fn();
    }
    this.time = end;
  }
}

/** A WebSocket as the client sees it; the test drives the server's side. */
export class FakeSocket {
  constructor(url, protocols, createdAt) {
    this.url = url;
    this.protocols = protocols;
    this.createdAt = createdAt;
    this.readyState = 0;
    this.sent = []; // decoded frames, in order
    this.closedWith = null;
    this.onopen = this.onmessage = this.onclose = this.onerror = null;
  }

  send(data) {
    if (this.readyState !== 1) throw new Error("send on a socket that is not open");
    this.sent.push(decode(data));
  }

  close(code, reason) {
    this.readyState = 3;
    this.closedWith = { code, reason };
  }

  get closed() {
    return this.readyState === 3;
  }

  /** Frames of one type the client sent. */
  frames(t) {
    return this.sent.filter((f) => f.t === t);
  }

  // ---- the server's side

  open() {
    this.readyState = 1;
    if (this.onopen) this.onopen({});
  }

  receive(frame) {
    const bytes = encode(frame);
    const data = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    if (this.onmessage) this.onmessage({ data });
  }

  welcome(fields = {}) {
    this.receive(welcomeFrame(fields));
  }

  serverClose(code = 1006, reason = "") {
    this.readyState = 3;
    if (this.onclose) this.onclose({ code, reason });
  }
}

export function welcomeFrame(fields = {}) {
  return {
    t: "welcome",
    session_id: "s1",
    user: ME,
    members: [ME, PEER],
    peers: [PEER],
    head: 0,
    ice_servers: [],
    notes: EMPTY_NOTES,
    ...fields,
  };
}

/** A chat event from the peer with this seq. */
export function chat(seq, fields = {}) {
  const ts = 1700000000 + seq;
  return { t: "chat", seq, id: `c${seq}`, from: PEER.id, text: `message ${seq}`, ts, ...fields };
}

export function memoryStorage() {
  let record = null;
  return {
    load: () => (record ? JSON.parse(JSON.stringify(record)) : null),
    save: (obj) => {
      record = { ...(record || {}), ...obj };
    },
    clear: () => {
      record = null;
    },
  };
}

/** A RoomClient on a fake clock and fake sockets, with everything it emits recorded. */
export function harness({ random = () => 0.5, storage = null } = {}) {
  const clock = new FakeClock();
  const sockets = [];
  const client = new RoomClient({
    pairId: "p1",
    token: "tok",
    storage,
    url: "ws://test/ws/rooms/p1",
    createSocket: (url, protocols) => {
      const socket = new FakeSocket(url, protocols, clock.now());
      sockets.push(socket);
      return socket;
    },
    clock,
    random,
    network: null,
    fetch: async () => ({ ok: false }),
  });
  const seen = { events: [], acks: [], welcomes: [], states: [], frames: [], fatal: [] };
  client.addEventListener("event", (ev) => seen.events.push(ev.detail));
  client.addEventListener("ack", (ev) => seen.acks.push(ev.detail));
  client.addEventListener("welcome", (ev) => seen.welcomes.push(ev.detail));
  client.addEventListener("state", (ev) => seen.states.push(ev.detail));
  client.addEventListener("frame", (ev) => seen.frames.push(ev.detail));
  client.addEventListener("fatal", (ev) => seen.fatal.push(ev.detail));
  return {
    clock,
    sockets,
    client,
    seen,
    get socket() {
      return sockets[sockets.length - 1];
    },
    seqs: () => seen.events.map((e) => e.seq),
    /** Start, open the socket and welcome it: a live client. */
    live(fields = {}) {
      client.start();
      const socket = sockets[sockets.length - 1];
      socket.open();
      socket.welcome(fields);
      return socket;
    },
    /** Let the pending reconnect happen; returns the new socket, opened. */
    reconnect() {
      const before = sockets.length;
      for (let i = 0; i < 100 && sockets.length === before; i++) clock.advance(100);
      if (sockets.length === before) throw new Error("no reconnect within 10 s");
      const socket = sockets[sockets.length - 1];
      socket.open();
      return socket;
    },
  };
}
