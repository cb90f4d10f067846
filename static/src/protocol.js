// The wire client: one room socket (menteo.v1.msgpack), reconnect with backoff, resume from the
// last seq, re-send unacknowledged chats with their original ids, de-duplicate durable events.
// It knows nothing about the page: the room listens to its events.
import { decode, encode } from "@msgpack/msgpack";

export const SUBPROTOCOL = "menteo.v1.msgpack";

// Close codes after which reconnecting cannot help.
const FATAL = {
  4401: "This link has expired or is invalid. Ask for a new link to rejoin the room.",
  4403: "You are not a member of this room. Check that you opened your own link.",
  4409: "This room was opened in another tab or window. Continue there, or use it here instead.",
};

const BACKOFF_FIRST_MS = 500;
const BACKOFF_MAX_MS = 10000;
const PING_EVERY_MS = 15000;
const PONG_WITHIN_MS = 8000;
const CONNECT_WITHIN_MS = 10000;

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

export function wsUrl(pairId) {
  const scheme = window.location.protocol === "https:" ? "wss:" : "ws:";
  return `${scheme}//${window.location.host}/ws/rooms/${encodeURIComponent(pairId)}`;
}

/**
 * Events (EventTarget, detail in event.detail):
 *  state        {state: "connecting"|"live"|"reconnecting"|"ended"|"failed", retryInMs?}
 *  welcome      {welcome, newSession: bool, previousSessionId}
 *  event        a durable event (chat/presence/ended), once each, in seq order
 *  ack          {id, seq}
 *  frame        any live frame (typing, notes, awareness, signal, error, pong)
 *  fatal        {code, message}
 *  ended        the ended event (also sent as "event")
 */
export class RoomClient extends EventTarget {
  constructor({ pairId, token, storage = null }) {
    super();
    this.pairId = pairId;
    this.token = token;
    this.storage = storage; // {load(), save(obj)} for what must survive a reload
    this.ws = null;
    this.state = "connecting";
    this.sessionId = null;
    this.lastSeq = 0;
    this.head = 0;
    this.user = null;
    this.welcome = null;
    this.unacked = new Map(); // id -> text, in send order
    this.attempt = 0;
    this.everLive = false;
    this.stopped = false;
    this.timer = null;
    this.pingTimer = null;
    this.pongTimer = null;
    this.connectTimer = null;
    this.restored = false;
    const saved = storage ? storage.load() : null;
    if (saved && saved.sessionId && Array.isArray(saved.unacked)) {
      this.restoredSessionId = saved.sessionId;
      for (const item of saved.unacked) {
        if (item && typeof item.id === "string" && typeof item.text === "string") {
          this.unacked.set(item.id, item.text);
        }
      }
    } else {
      this.restoredSessionId = null;
    }
    this._onOnline = () => {
      if (this.stopped || this.state === "live") return;
      this._clearTimer();
      this.attempt = 0;
      this._connect();
    };
    this._onOffline = () => {
      if (this.stopped) return;
      if (this.ws) this._drop("offline");
    };
    window.addEventListener("online", this._onOnline);
    window.addEventListener("offline", this._onOffline);
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
      unacked: Array.from(this.unacked, ([id, text]) => ({ id, text })),
    });
  }

  start() {
    this._connect();
  }

  /** Stop for good (ended or fatal): no more reconnects. */
  stop() {
    this.stopped = true;
    this._clearTimer();
    this._stopPing();
    window.removeEventListener("online", this._onOnline);
    window.removeEventListener("offline", this._onOffline);
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000);
  }

  /** Reconnect now after a stop (e.g. "use here" after 4409, or a new session after ended). */
  restart({ fresh = false } = {}) {
    this.stop();
    this.stopped = false;
    this.attempt = 0;
    if (fresh) {
      this.sessionId = null;
      this.lastSeq = 0;
      this.everLive = false;
    }
    window.addEventListener("online", this._onOnline);
    window.addEventListener("offline", this._onOffline);
    this._setState(this.everLive ? "reconnecting" : "connecting");
    this._connect();
  }

  get live() {
    return this.state === "live" && this.ws && this.ws.readyState === WebSocket.OPEN;
  }

  _clearTimer() {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
  }

  _connect() {
    if (this.stopped) return;
    this._clearTimer();
    if (typeof navigator !== "undefined" && navigator.onLine === false) {
      // Wait for the "online" event; try now and then anyway in case onLine is wrong.
      this._schedule(BACKOFF_MAX_MS);
      return;
    }
    let ws;
    try {
      ws = new WebSocket(wsUrl(this.pairId), [SUBPROTOCOL]);
    } catch (err) {
      this._schedule();
      return;
    }
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.connectTimer = setTimeout(() => {
      if (this.ws === ws && this.state !== "live") this._drop("connect timeout");
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
      this.ws = null;
      this._onClose(ev.code, ev.reason);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  _schedule(delayMs = null) {
    if (this.stopped) return;
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.attempt);
    const delay = delayMs ?? Math.round(base * (0.5 + Math.random() * 0.5));
    this.attempt = Math.min(this.attempt + 1, 10);
    this._clearTimer();
    this.timer = setTimeout(() => this._connect(), delay);
    this._setState(this.everLive ? "reconnecting" : "connecting", { retryInMs: delay });
  }

  /** Give up on the current socket (dead, offline, gap) and reconnect. */
  _drop(why) {
    const ws = this.ws;
    this.ws = null;
    this._stopPing();
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close(4000, why);
      } catch {
        /* already closing */
      }
    }
    if (this.stopped) return;
    if (why === "gap") {
      this._setState("reconnecting");
      this._connect();
      return;
    }
    this._schedule();
  }

  _onClose(code, reason) {
    this._stopPing();
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.stopped) return;
    if (FATAL[code]) {
      this.stopped = true;
      this._emit("fatal", { code, reason, message: FATAL[code] });
      this._setState("failed", { code });
      return;
    }
    if (code === 1000 && this.endedSeen) {
      this.stopped = true;
      this._setState("ended");
      return;
    }
    if (code === 4429) {
      this._schedule(BACKOFF_MAX_MS);
      return;
    }
    this._schedule();
  }

  _startPing() {
    this._stopPing();
    this.pingTimer = setInterval(() => {
      if (!this.live) return;
      this._sendRaw({ t: "ping" });
      if (!this.pongTimer) {
        this.pongTimer = setTimeout(() => this._drop("no pong"), PONG_WITHIN_MS);
      }
    }, PING_EVERY_MS);
  }

  _stopPing() {
    if (this.pingTimer) clearInterval(this.pingTimer);
    if (this.pongTimer) clearTimeout(this.pongTimer);
    this.pingTimer = null;
    this.pongTimer = null;
  }

  _sendRaw(frame) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return false;
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
    const id = newId();
    this.unacked.set(id, text);
    this._persist();
    if (this.state === "live") this._sendRaw({ t: "chat", id, text });
    return id;
  }

  _onFrame(frame) {
    // Any frame proves the socket is alive.
    if (this.pongTimer) {
      clearTimeout(this.pongTimer);
      this.pongTimer = null;
    }
    switch (frame.t) {
      case "welcome":
        this._onWelcome(frame);
        return;
      case "chat":
      case "presence":
      case "ended":
        if (typeof frame.seq === "number") {
          this._onDurable(frame);
          return;
        }
        break;
      case "ack":
        if (this.unacked.delete(frame.id)) this._persist();
        this._emit("ack", { id: frame.id, seq: frame.seq });
        return;
      case "pong":
        if (typeof frame.head === "number" && frame.head > this.lastSeq) {
          // Something was missed: resume from what we have.
          this._drop("gap");
        }
        return;
      case "error":
        this._onError(frame);
        break;
      default:
        break;
    }
    this._emit("frame", frame);
  }

  _onWelcome(w) {
    if (this.connectTimer) clearTimeout(this.connectTimer);
    const previousSessionId = this.sessionId || this.restoredSessionId;
    const newSession = previousSessionId !== null && previousSessionId !== w.session_id;
    const firstWelcome = this.welcome === null;
    if (this.sessionId !== w.session_id) this.lastSeq = 0;
    this.sessionId = w.session_id;
    this.head = w.head;
    this.user = w.user;
    this.welcome = w;
    this.attempt = 0;
    this.everLive = true;
    this.restoredSessionId = null;
    const orphans = newSession ? Array.from(this.unacked, ([id, text]) => ({ id, text })) : [];
    if (newSession) this.unacked.clear();
    this._persist();
    this._setState("live");
    this._emit("welcome", { welcome: w, newSession, firstWelcome, previousSessionId });
    // Re-send what the server may not have, in order, with the same ids.
    for (const [id, text] of this.unacked) this._sendRaw({ t: "chat", id, text });
    if (orphans.length) this._recoverOrphans(previousSessionId, orphans);
    this._startPing();
  }

  /** Chats unacked when their session ended: send again only those its transcript lacks. */
  async _recoverOrphans(oldSessionId, orphans) {
    let stored = new Set();
    try {
      const res = await fetch(`/api/sessions/${encodeURIComponent(oldSessionId)}/transcript`, {
        headers: { Authorization: `Bearer ${this.token}` },
      });
      if (res.ok) {
        const body = await res.json();
        stored = new Set(
          body.events
            .filter((e) => e.t === "chat" && this.user && e.from === this.user.id)
            .map((e) => e.id),
        );
      }
    } catch {
      /* unknown: send them again, a duplicate is better than a loss */
    }
    const resend = orphans.filter((o) => !stored.has(o.id));
    this._emit("orphans", { stored: orphans.filter((o) => stored.has(o.id)), resend });
    for (const { id, text } of resend) {
      this.unacked.set(id, text);
      if (this.state === "live") this._sendRaw({ t: "chat", id, text });
    }
    this._persist();
  }

  _onDurable(e) {
    if (e.seq <= this.lastSeq) return; // already applied
    if (e.seq > this.lastSeq + 1) {
      this._drop("gap");
      return;
    }
    this.lastSeq = e.seq;
    if (e.t === "chat" && this.user && e.from === this.user.id && this.unacked.delete(e.id)) {
      this._persist();
    }
    if (e.t === "ended") this.endedSeen = true;
    this._emit("event", e);
    if (e.t === "ended") {
      this._stopPing();
      this._emit("ended", e);
    }
  }

  _onError(err) {
    // A chat the server refuses as such (e.g. too long): sending it again cannot help.
    if (err.code === "invalid" && typeof err.ref === "string" && this.unacked.has(err.ref)) {
      this.unacked.delete(err.ref);
      this._persist();
      this._emit("chat-failed", { id: err.ref, message: err.message });
      return;
    }
    // A chat that was refused for the moment: retry it with the same id a little later.
    if (
      (err.code === "rate_limited" || err.code === "unavailable") &&
      typeof err.ref === "string" &&
      this.unacked.has(err.ref)
    ) {
      const id = err.ref;
      setTimeout(() => {
        if (this.unacked.has(id) && this.state === "live") {
          this._sendRaw({ t: "chat", id, text: this.unacked.get(id) });
        }
      }, 1000);
    }
  }

  /** Session over by the user's own hand or the other's: forget what belonged to it. */
  forgetSession() {
    this.unacked.clear();
    if (this.storage) this.storage.clear();
  }
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
