// The wire client: one room socket (menteo.v1.msgpack), reconnect with backoff, resume from the
// last seq, re-send unacknowledged frames (chats, goals, items, item updates, marks, record
// changes: the outbox) with their original ids, deliver durable events once each and in seq
// order (waiting briefly for a missing one). It knows nothing about the page:
// the room listens to its events. The socket, clock and network are injected, so the same code
// runs under `node --test` with fakes.
import { decode, encode } from "@msgpack/msgpack";
import { Backoff } from "./backoff.js";
import { systemClock } from "./clock.js";
import { EventSequencer } from "./sequencer.js";

export const SUBPROTOCOL = "menteo.v1.msgpack";

/** Client frames the server acks once stored; they wait in the outbox until then. */
export const ACKED_TYPES = new Set(["chat", "goal", "item", "item_update", "mark", "record"]);
/** Acked frames that belong to the pair, not to one session: still worth sending in the next. */
const CARRIED_TYPES = new Set(["chat", "item", "item_update"]);

/** How long a missing seq may take to arrive before the client resumes from the last one. */
export const GAP_WAIT_MS = 1500;
export const RECONNECT_MIN_MS = 500;
export const RECONNECT_MAX_MS = 15000;
/** A connection that lived this long after its welcome was healthy: the backoff starts over. */
export const HEALTHY_AFTER_MS = 10000;
export const CHAT_RETRY_MS = 1000;
const PING_EVERY_MS = 15000;
const PONG_WITHIN_MS = 8000;
const CONNECT_WITHIN_MS = 10000;
const SOCKET_OPEN = 1; // WebSocket.OPEN (Node 20 has no WebSocket global)

// Close codes after which reconnecting cannot help.
const FATAL = {
  4401: "This link has expired or is invalid. Ask for a new link to rejoin the room.",
  4403: "You are not a member of this room. Check that you opened your own link.",
  4409: "This room was opened in another tab or window. Continue there, or use it here instead.",
};

/** A random id usable outside secure contexts too (crypto.randomUUID needs one). */
export function newId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Read the token from the URL fragment (#token=...). It never goes into a request URL. */
export function tokenFromFragment(hash = window.location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  return params.get("token") || "";
}

/**
 * The member's token for this page. A link brings it in the fragment (#token=…): it is kept in
 * sessionStorage under `key` (this tab only, it survives reloads) and taken out of the address
 * bar and the history entry at once (history.replaceState), where a shared screen would show it.
 * Without a token in the fragment, the kept one is used (a reload, a reconnect).
 */
export function takeToken(key, loc = window.location) {
  const storageKey = `menteo.token.${key}`;
  const params = new URLSearchParams(loc.hash.replace(/^#/, ""));
  const fromLink = params.get("token") || "";
  if (fromLink) {
    try {
      window.sessionStorage.setItem(storageKey, fromLink);
    } catch {
      /* storage disabled: the token still works for this page view */
    }
    params.delete("token");
    const rest = params.toString().replace(/=(?=&|$)/g, "");
    try {
      window.history.replaceState(window.history.state, "", `${loc.pathname}${loc.search}${rest ? `#${rest}` : ""}`);
    } catch {
      /* not allowed (sandboxed): the page still works */
    }
    return fromLink;
  }
  try {
    return window.sessionStorage.getItem(storageKey) || "";
  } catch {
    return "";
  }
}

export function wsUrl(pairId) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}/ws/rooms/${encodeURIComponent(pairId)}`;
}

/** The browser's idea of the network: navigator.onLine and the online/offline events. */
export function browserNetwork() {
  if (typeof window === "undefined") return null;
  return {
    isOnline: () => navigator.onLine !== false,
    listen(onOnline, onOffline) {
      window.addEventListener("online", onOnline);
      window.addEventListener("offline", onOffline);
      return () => {
        window.removeEventListener("online", onOnline);
        window.removeEventListener("offline", onOffline);
      };
    },
  };
}

/**
 * Events (EventTarget, detail in event.detail):
 *  state        {state: "connecting"|"live"|"reconnecting"|"ended"|"failed", retryInMs?}
 *  welcome      {welcome, newSession: bool, firstWelcome: bool, previousSessionId}
 *  event        a durable event (chat/presence/ended/…), once each, in seq order; never a void
 *  ack          {id, seq, t, off?}, once per acked frame sent (from the ack or from its own
 *               event, whichever comes first); seq is null for a chat kept off the record
 *               (off: true) and for a record frame that changed nothing
 *  frame        any live frame (typing, notes, awareness, signal, error, off-the-record chat)
 *  fatal        {code, message}
 *  ended        the ended event (also sent as "event")
 *  send-failed  {id, t, frame, message, reason}: an outbox frame given up for good: refused as
 *               invalid (reason "invalid"), or an off-the-record chat that can no longer be sent
 *               off the record (reason "record-on")
 *  chat-failed  {id, message}: the same, for chats only (v1's event)
 *  orphans      {stored, resend, dropped}: outbox entries ({id, t, frame, text}) left unacked by
 *               a session that has since ended: found in its transcript, sent again in the new
 *               session, or given up (goals, marks and record changes belong to their session)
 */
export class RoomClient extends EventTarget {
  /**
   * @param {object} opts
   * @param {string} opts.pairId
   * @param {string} opts.token
   * @param {{load(): any, save(obj: any): void, clear(): void} | null} [opts.storage]
   *   what must survive a reload
   * @param {string | null} [opts.url] the WebSocket URL (default: this page's server)
   * @param {(url: string, protocols: string[]) => any} [opts.createSocket]
   * @param {import("./clock.js").Clock} [opts.clock]
   * @param {() => number} [opts.random] for the backoff's jitter
   * @param {ReturnType<typeof browserNetwork>} [opts.network] null: always online
   * @param {typeof fetch} [opts.fetch]
   */
  constructor({
    pairId,
    token,
    storage = null,
    url = null,
    createSocket = (address, protocols) => new WebSocket(address, protocols),
    clock = systemClock,
    random = Math.random,
    network = browserNetwork(),
    fetch = (...args) => globalThis.fetch(...args),
  }) {
    super();
    this.pairId = pairId;
    this.token = token;
    this.storage = storage;
    this.url = url;
    this.createSocket = createSocket;
    this.clock = clock;
    this.network = network;
    this.fetch = fetch;
    this.backoff = new Backoff({ minMs: RECONNECT_MIN_MS, maxMs: RECONNECT_MAX_MS, random });
    this.sequencer = new EventSequencer();
    this.ws = null;
    this.state = "connecting";
    this.sessionId = null;
    this.head = 0;
    this.user = null;
    this.welcome = null;
    this.welcomedAt = null; // clock time of the current connection's welcome
    this.unacked = new Map(); // id -> {frame, off}: the outbox, in send order
    this.record = "on"; // the session's recording state as last heard: on, requested, off
    this.everLive = false;
    this.endedSeen = false;
    this.stopped = false;
    this.reconnectTimer = null;
    this.connectTimer = null;
    this.gapTimer = null;
    this.gapFrom = 0; // the lastSeq the running gap timer waits to move past
    this.pingTimer = null;
    this.pongTimer = null;
    this.unlistenNetwork = null;
    const saved = storage ? storage.load() : null;
    this.restoredSessionId = null;
    if (saved && saved.sessionId && Array.isArray(saved.unacked)) {
      this.restoredSessionId = saved.sessionId;
      for (const saved_ of saved.unacked) {
        const entry = restoredEntry(saved_);
        if (entry) this.unacked.set(entry.frame.id, entry);
      }
    }
    this._onOnline = () => {
      if (this.stopped || this.state === "live") return;
      this._endConnection("online"); // a half-made attempt: start afresh now
      this._clearReconnect();
      this.backoff.reset();
      this._connect();
    };
    this._onOffline = () => {
      if (!this.stopped && this.ws) this._drop("offline");
    };
    this._listenNetwork();
  }

  /** The seq of the last durable event delivered. */
  get lastSeq() {
    return this.sequencer.lastSeq;
  }

  get live() {
    return this.state === "live" && this.ws !== null && this.ws.readyState === SOCKET_OPEN;
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, extra = {}) {
    this.state = state;
    this._emit("state", { state, ...extra });
  }

  _persist() {
    if (!this.storage) return;
    this.storage.save({
      sessionId: this.sessionId || this.restoredSessionId,
      unacked: Array.from(this.unacked, ([id, { frame, off }]) => ({ id, frame, off })),
    });
  }

  _listenNetwork() {
    if (this.network && !this.unlistenNetwork) {
      this.unlistenNetwork = this.network.listen(this._onOnline, this._onOffline);
    }
  }

  _unlistenNetwork() {
    if (this.unlistenNetwork) this.unlistenNetwork();
    this.unlistenNetwork = null;
  }

  start() {
    this._connect();
  }

  /** Stop for good (ended or fatal): no more reconnects. */
  stop() {
    this.stopped = true;
    this._clearReconnect();
    this._unlistenNetwork();
    this._endConnection("stop", 1000);
  }

  /** Reconnect now after a stop (e.g. "use here" after 4409, or a new session after ended). */
  restart({ fresh = false } = {}) {
    this.stop();
    this.stopped = false;
    this.backoff.reset();
    if (fresh) {
      this.sessionId = null;
      this.sequencer.reset();
      this.everLive = false;
      this.endedSeen = false;
    }
    this._listenNetwork();
    this._setState(this.everLive ? "reconnecting" : "connecting");
    this._connect();
  }

  // ---- the connection ------------------------------------------------------------------------

  _connect() {
    if (this.stopped) return;
    this._clearReconnect();
    if (this.network && !this.network.isOnline()) {
      // Wait for the "online" event; try now and then anyway in case the browser is wrong.
      this._scheduleReconnect(RECONNECT_MAX_MS);
      return;
    }
    let ws;
    try {
      ws = this.createSocket(this.url ?? wsUrl(this.pairId), [SUBPROTOCOL]);
    } catch {
      this._scheduleReconnect();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.connectTimer = this.clock.setTimeout(() => {
      this.connectTimer = null;
      if (this.ws === ws && this.welcomedAt === null) this._drop("connect timeout");
    }, CONNECT_WITHIN_MS);
    ws.onopen = () => {
      if (this.ws !== ws) return;
      const hello = { t: "hello", token: this.token };
      if (this.sessionId) hello.resume = { session_id: this.sessionId, last_seq: this.lastSeq };
      ws.send(encode(hello));
    };
    ws.onmessage = (msg) => {
      if (this.ws !== ws) return;
      let frame;
      try {
        frame = decode(new Uint8Array(msg.data));
      } catch (err) {
        console.warn("undecodable frame", err);
        return;
      }
      if (!frame || typeof frame !== "object" || typeof frame.t !== "string") return;
      this._onFrame(frame);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this._endConnection("closed");
      this._onClose(ev.code);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  /** Forget the current socket and everything tied to it; close it if it is still open. */
  _endConnection(why, code = 4000) {
    const ws = this.ws;
    this.ws = null;
    this._stopPing();
    if (this.connectTimer) this.clock.clearTimeout(this.connectTimer);
    if (this.gapTimer) this.clock.clearTimeout(this.gapTimer);
    this.connectTimer = this.gapTimer = null;
    this.sequencer.dropHeld(); // the resume replays them
    if (this.welcomedAt !== null && this.clock.now() - this.welcomedAt >= HEALTHY_AFTER_MS) {
      this.backoff.reset();
    }
    this.welcomedAt = null;
    if (!ws) return;
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    if (ws.readyState <= SOCKET_OPEN) {
      try {
        ws.close(code, why);
      } catch {
        /* already closing */
      }
    }
  }

  _clearReconnect() {
    if (this.reconnectTimer) this.clock.clearTimeout(this.reconnectTimer);
    this.reconnectTimer = null;
  }

  /** Try again after the backoff's next delay (and at least `atLeastMs`). */
  _scheduleReconnect(atLeastMs = 0) {
    if (this.stopped) return;
    const delay = Math.max(atLeastMs, this.backoff.next());
    this._clearReconnect();
    this.reconnectTimer = this.clock.setTimeout(() => {
      this.reconnectTimer = null;
      this._connect();
    }, delay);
    this._setState(this.everLive ? "reconnecting" : "connecting", { retryInMs: delay });
  }

  /** Give up on the current socket (dead, offline, a gap that did not fill) and resume. */
  _drop(why) {
    this._endConnection(why);
    this._scheduleReconnect();
  }

  _onClose(code) {
    if (this.stopped) return;
    if (FATAL[code]) {
      this.stopped = true;
      this._unlistenNetwork();
      this._emit("fatal", { code, message: FATAL[code] });
      this._setState("failed", { code });
      return;
    }
    if (code === 1000 && this.endedSeen) {
      this.stopped = true;
      this._unlistenNetwork();
      this._setState("ended");
      return;
    }
    this._scheduleReconnect(code === 4429 ? RECONNECT_MAX_MS : 0);
  }

  _startPing() {
    this._stopPing();
    this.pingTimer = this.clock.setInterval(() => {
      if (!this.live) return;
      this._sendRaw({ t: "ping" });
      if (!this.pongTimer) {
        this.pongTimer = this.clock.setTimeout(() => {
          this.pongTimer = null;
          this._drop("no pong");
        }, PONG_WITHIN_MS);
      }
    }, PING_EVERY_MS);
  }

  _stopPing() {
    if (this.pingTimer) this.clock.clearInterval(this.pingTimer);
    if (this.pongTimer) this.clock.clearTimeout(this.pongTimer);
    this.pingTimer = null;
    this.pongTimer = null;
  }

  // ---- sending -------------------------------------------------------------------------------

  _sendRaw(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== SOCKET_OPEN) return false;
    ws.send(encode(frame));
    return true;
  }

  /** Live-only frames (typing, notes, awareness, signal, end): dropped unless live. */
  send(frame) {
    if (this.state !== "live") return false;
    return this._sendRaw(frame);
  }

  /** A chat: kept until acked (or seen in the event stream), re-sent on every welcome. */
  sendChat(text) {
    return this.sendAcked({ t: "chat", text });
  }

  /**
   * An acked frame (chat, goal, item, item_update, mark, record) without its id: it gets a new
   * id, waits in the outbox until its ack and is re-sent with that id after a reconnect.
   * Returns the id.
   */
  sendAcked(frame) {
    if (!ACKED_TYPES.has(frame.t)) throw new Error(`not an acked frame: ${frame.t}`);
    const id = newId();
    // A chat written while off the record must never be sent once recording is back on.
    const off = frame.t === "chat" && this.record === "off";
    this.unacked.set(id, { frame: { ...frame, id }, off });
    this._persist();
    if (this.state === "live") this._sendRaw({ ...frame, id });
    return id;
  }

  /** The outbox's chats, in send order: [{id, text, off}]. */
  pendingChats() {
    const chats = [];
    for (const [id, { frame, off }] of this.unacked) {
      if (frame.t === "chat") chats.push({ id, text: frame.text, off });
    }
    return chats;
  }

  /** The outbox, in send order: [{id, t, frame, off}]. */
  pending() {
    return Array.from(this.unacked, ([id, { frame, off }]) => ({ id, t: frame.t, frame, off }));
  }

  // ---- receiving -----------------------------------------------------------------------------

  _onFrame(frame) {
    // Any frame proves the socket is alive.
    if (this.pongTimer) {
      this.clock.clearTimeout(this.pongTimer);
      this.pongTimer = null;
    }
    if (frame.t === "welcome") {
      this._onWelcome(frame);
    } else if (frame.t === "ack") {
      this._acked(frame.id, typeof frame.seq === "number" ? frame.seq : null, frame.off === true);
    } else if (typeof frame.seq === "number") {
      this._onDurable(frame);
    } else if (frame.t === "pong") {
      // A head past what we have means something is missing: the same rule as a seq gap.
      this.sequencer.expect(frame.head);
      this._watchGap();
    } else {
      if (frame.t === "error") this._onError(frame);
      this._emit("frame", frame);
      // Our own chat relayed off the record proves it arrived, like its ack would.
      if (frame.t === "chat" && frame.off === true && this._isOwn(frame, "chat")) {
        this._acked(frame.id, null, true);
      }
    }
  }

  /** An event or frame sent by this member for the outbox entry of the same id and type. */
  _isOwn(e, t) {
    if (!this.user || typeof e.id !== "string") return false;
    const entry = this.unacked.get(e.id);
    return Boolean(entry) && entry.frame.t === t && (e.from ?? e.by) === this.user.id;
  }

  _acked(id, seq, off = false) {
    const entry = this.unacked.get(id);
    if (!entry) return; // already acked, or not ours
    this.unacked.delete(id);
    this._persist();
    const detail = { id, seq, t: entry.frame.t };
    if (off) detail.off = true;
    this._emit("ack", detail);
  }

  /** Give up an outbox entry for good. */
  _fail(id, reason, message) {
    const entry = this.unacked.get(id);
    if (!entry) return;
    this.unacked.delete(id);
    this._persist();
    const { frame } = entry;
    this._emit("send-failed", { id, t: frame.t, frame, message, reason });
    if (frame.t === "chat") this._emit("chat-failed", { id, message });
  }

  _onWelcome(w) {
    if (this.connectTimer) this.clock.clearTimeout(this.connectTimer);
    this.connectTimer = null;
    const previousSessionId = this.sessionId || this.restoredSessionId;
    const newSession = previousSessionId !== null && previousSessionId !== w.session_id;
    const firstWelcome = this.welcome === null;
    if (this.sessionId !== w.session_id) this.sequencer.reset();
    this.sessionId = w.session_id;
    this.head = w.head;
    this.user = w.user;
    this.welcome = w;
    this.welcomedAt = this.clock.now();
    this.everLive = true;
    this.restoredSessionId = null;
    this.record = typeof w.record === "string" ? w.record : "on";
    // A chat written off the record is sent off the record or not at all.
    for (const [id, entry] of Array.from(this.unacked)) {
      if (entry.off && (newSession || this.record !== "off")) {
        this._fail(id, "record-on", "Not sent: recording is on again, and this message was written off the record.");
      }
    }
    const orphans = newSession ? this.pending() : [];
    if (newSession) this.unacked.clear();
    this._persist();
    this._setState("live");
    this._emit("welcome", { welcome: w, newSession, firstWelcome, previousSessionId });
    // Re-send what the server may not have, in order, with the same ids.
    for (const { frame } of this.unacked.values()) this._sendRaw(frame);
    if (orphans.length) this._recoverOrphans(previousSessionId, orphans);
    this._startPing();
  }

  /**
   * Frames unacked when their session ended: chats, items and item updates are sent again in
   * the new session unless the old transcript has them; goals, marks and record changes belong
   * to the old session and are given up.
   */
  async _recoverOrphans(oldSessionId, orphans) {
    let stored = new Set();
    try {
      const res = await this.fetch(`/api/sessions/${encodeURIComponent(oldSessionId)}/transcript`, {
        headers: { Authorization: `Bearer ${this.token}` },
      });
      if (res.ok) {
        const body = await res.json();
        stored = new Set(
          body.events
            .filter((e) => this.user && (e.from ?? e.by) === this.user.id && typeof e.id === "string")
            .map((e) => e.id),
        );
      }
    } catch {
      /* unknown: send them again, a duplicate is better than a loss */
    }
    const view = (o) => ({ id: o.id, t: o.t, frame: o.frame, text: o.frame.text });
    const kept = orphans.filter((o) => stored.has(o.id)).map(view);
    const resend = orphans.filter((o) => !stored.has(o.id) && CARRIED_TYPES.has(o.t)).map(view);
    const dropped = orphans.filter((o) => !stored.has(o.id) && !CARRIED_TYPES.has(o.t)).map(view);
    this._emit("orphans", { stored: kept, resend, dropped });
    for (const { id, frame } of resend) {
      this.unacked.set(id, { frame, off: false });
      if (this.state === "live") this._sendRaw(frame);
    }
    this._persist();
  }

  _onDurable(event) {
    for (const ready of this.sequencer.push(event)) {
      this._deliver(ready);
      if (this.stopped) return; // the page stopped us (the session ended)
    }
    this._watchGap();
  }

  _deliver(e) {
    if (e.t === "void") return; // a seq the server could not fill: it only moves lastSeq
    // Our own event (the server puts the frame's id on every acked kind) acks it too.
    const own = ACKED_TYPES.has(e.t) && this._isOwn(e, e.t);
    if (e.t === "ended") this.endedSeen = true;
    if (e.t === "record" && typeof e.state === "string") this.record = e.state;
    this._emit("event", e);
    if (own) this._acked(e.id, e.seq);
    if (e.t === "ended") {
      this._stopPing();
      this._emit("ended", e);
    }
  }

  /**
   * While a seq is missing, wait up to GAP_WAIT_MS for it (events after it are held back), then
   * resume from the last seq delivered. The wait starts over whenever the hole moves forward.
   */
  _watchGap() {
    if (!this.sequencer.hasGap || !this.ws) {
      if (this.gapTimer) this.clock.clearTimeout(this.gapTimer);
      this.gapTimer = null;
      return;
    }
    if (this.gapTimer && this.gapFrom === this.lastSeq) return;
    if (this.gapTimer) this.clock.clearTimeout(this.gapTimer);
    this.gapFrom = this.lastSeq;
    this.gapTimer = this.clock.setTimeout(() => {
      this.gapTimer = null;
      if (this.sequencer.hasGap) this._drop("gap");
    }, GAP_WAIT_MS);
  }

  _onError(err) {
    // A frame the server refuses as such (e.g. too long): sending it again cannot help.
    if (err.code === "invalid" && typeof err.ref === "string" && this.unacked.has(err.ref)) {
      this._fail(err.ref, "invalid", err.message);
      return;
    }
    // A frame that was refused for the moment: retry it with the same id a little later.
    if (
      (err.code === "rate_limited" || err.code === "unavailable") &&
      typeof err.ref === "string" &&
      this.unacked.has(err.ref)
    ) {
      const id = err.ref;
      this.clock.setTimeout(() => {
        if (this.unacked.has(id) && this.state === "live") this._sendRaw(this.unacked.get(id).frame);
      }, CHAT_RETRY_MS);
    }
  }

  /** Session over by the user's own hand or the other's: forget what belonged to it. */
  forgetSession() {
    this.unacked.clear();
    if (this.storage) this.storage.clear();
  }
}

/** An outbox entry read back from storage: {id, frame, off}, or v1's {id, text} chat. */
function restoredEntry(saved) {
  if (!saved || typeof saved.id !== "string") return null;
  if (saved.frame && ACKED_TYPES.has(saved.frame.t) && saved.frame.id === saved.id) {
    return { frame: saved.frame, off: saved.off === true };
  }
  if (typeof saved.text === "string") return { frame: { t: "chat", id: saved.id, text: saved.text }, off: false };
  return null;
}

/** sessionStorage-backed record for one pair, JSON. */
export function pageStorage(key) {
  return {
    load() {
      try {
        return JSON.parse(window.sessionStorage.getItem(key) || "null");
      } catch {
        return null;
      }
    },
    save(obj) {
      try {
        const current = this.load() || {};
        window.sessionStorage.setItem(key, JSON.stringify({ ...current, ...obj }));
      } catch {
        /* storage full or disabled: the in-memory state still works */
      }
    },
    clear() {
      try {
        window.sessionStorage.removeItem(key);
      } catch {
        /* ignore */
      }
    },
  };
}
