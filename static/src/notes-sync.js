// The shared notes on the wire: one Y.Doc kept in step with the server. Local changes go out in
// small batches; after a welcome, what the server's state lacks goes out as one update; when the
// server could not store an update, what its stored document lacks goes out again as one update
// (debounced, with backoff): the difference from the state vector the error carries, or from the
// last welcome's state. Never the whole document: that could exceed the server's per-update cap.
// No DOM here: the editor lives in notes.js.
import * as Y from "yjs";
import { Backoff } from "./backoff.js";
import { systemClock } from "./clock.js";

/** The origin of updates that came from the server: never sent back. */
export const REMOTE = "remote";
// A local change goes out at once, unless one went out less than this long ago: then the
// changes are merged and sent together (at most ~25 notes frames a second, however fast
// anyone types, well under the server's rate limit).
export const NOTES_FLUSH_MS = 40;
export const NOTES_RESEND_MS = 500;
export const NOTES_RESEND_MAX_MS = 15000;
/** A re-send followed by this long without a new failure went through: the backoff starts over. */
export const NOTES_SETTLED_MS = 5000;

export const NOTES_MESSAGES = {
  ok: "",
  retrying: "Notes not saved yet · trying again…",
  rejected:
    "The server refused your last change to the notes (too large?). It is shown here only: it " +
    "is not saved and the other member does not see it.",
};

/**
 * Events: status {state: "ok"|"retrying"|"rejected", message}.
 */
export class NotesSync extends EventTarget {
  /**
   * @param {object} opts
   * @param {Y.Doc} opts.doc holds a Y.Text named "notes"
   * @param {(frame: object) => boolean} opts.send false when the frame could not go out
   * @param {import("./clock.js").Clock} [opts.clock]
   * @param {() => number} [opts.random]
   */
  constructor({ doc, send, clock = systemClock, random = Math.random }) {
    super();
    this.doc = doc;
    this.send = send;
    this.clock = clock;
    this.backoff = new Backoff({ minMs: NOTES_RESEND_MS, maxMs: NOTES_RESEND_MAX_MS, random });
    this.pending = [];
    this.flushTimer = null;
    this.lastSentAt = -Infinity;
    this.resendTimer = null;
    this.settleTimer = null;
    /** The state vector of the server's stored document, from the latest notes error, if any. */
    this.serverSv = null;
    /** The last welcome's notes state: what the server was known to hold, failing a better guess. */
    this.welcomeNotes = null;
    this.status = "ok";
    this._onUpdate = (update, origin) => {
      if (origin === REMOTE) return;
      this.pending.push(update);
      if (this.flushTimer) return;
      const wait = this.lastSentAt + NOTES_FLUSH_MS - this.clock.now();
      if (wait <= 0) this.flush();
      else this.flushTimer = this.clock.setTimeout(() => this.flush(), wait);
    };
    doc.on("update", this._onUpdate);
  }

  /** Send the local changes not sent yet, as one update. */
  flush() {
    this._clear("flushTimer");
    if (!this.pending.length) return;
    this.lastSentAt = this.clock.now();
    const update = this.pending.length === 1 ? this.pending[0] : Y.mergeUpdates(this.pending);
    this.pending = [];
    // Not live: dropped here, and sent again after the next welcome as part of the difference.
    this.send({ t: "notes", u: update });
  }

  /** After every welcome: send what this document holds that the server's state lacks. */
  onWelcome(serverState) {
    const server = new Y.Doc();
    let missing = null;
    try {
      Y.applyUpdate(server, serverState);
      missing = Y.encodeStateAsUpdate(this.doc, Y.encodeStateVector(server));
      Y.applyUpdate(this.doc, serverState, REMOTE);
      this.welcomeNotes = serverState;
    } catch (err) {
      console.warn("notes: bad welcome state", err);
    } finally {
      server.destroy();
    }
    // Local edits not flushed yet and any re-send due are all part of `missing`.
    this._clear("flushTimer");
    this._clear("resendTimer");
    this._clear("settleTimer");
    this.pending = [];
    this.serverSv = null; // the welcome's state is newer than any error's
    if (this.status === "retrying") this._setStatus("ok");
    if (missing && missing.length > 2) this.send({ t: "notes", u: missing });
  }

  /** A notes frame from the other member, or an error frame (only notes' own concern us). */
  onFrame(frame) {
    if (frame.t === "notes" && frame.u instanceof Uint8Array) {
      try {
        Y.applyUpdate(this.doc, frame.u, REMOTE);
      } catch (err) {
        console.warn("notes: bad update", err);
      }
    } else if (frame.t === "error") {
      this._onError(frame);
    }
  }

  _onError(err) {
    if (err.code === "notes_rejected") {
      // Too large, or not our notes text: sending it again would be refused again.
      this._clear("resendTimer");
      this._clear("settleTimer");
      this.backoff.reset();
      this._setStatus("rejected");
      return;
    }
    const aboutNotes = err.about === "notes";
    // A rate-limited frame without a ref may have been a notes update that was dropped.
    const maybeNotes = err.code === "rate_limited" && err.ref == null && err.about == null;
    if ((err.code === "unavailable" || err.code === "rate_limited") && (aboutNotes || maybeNotes)) {
      // The server's document only grows: the latest state vector is the one to diff against.
      if (aboutNotes && err.sv instanceof Uint8Array) this.serverSv = err.sv;
      this._scheduleResend();
    }
  }

  /**
   * What the server's stored document lacks, as one update: the difference from the latest
   * error's state vector, else from the last welcome's state (larger, as the server may have
   * stored some updates since, but merging what it has is a no-op), else the whole state.
   */
  missingOnServer() {
    if (this.serverSv) {
      try {
        return Y.encodeStateAsUpdate(this.doc, this.serverSv);
      } catch (err) {
        console.warn("notes: bad state vector in an error", err);
      }
    }
    if (this.welcomeNotes) {
      try {
        return Y.encodeStateAsUpdate(this.doc, Y.encodeStateVectorFromUpdate(this.welcomeNotes));
      } catch (err) {
        console.warn("notes: bad welcome state", err);
      }
    }
    return Y.encodeStateAsUpdate(this.doc);
  }

  /** The server lacks some update: send what it lacks once, soon. */
  _scheduleResend() {
    if (this.resendTimer) return; // the re-send already due covers this failure too
    this._clear("settleTimer"); // the last re-send did not go through: the next waits longer
    const delay = this.backoff.next();
    this._setStatus("retrying");
    this.resendTimer = this.clock.setTimeout(() => {
      this.resendTimer = null;
      const update = this.missingOnServer();
      // Local edits not flushed yet are part of it.
      this._clear("flushTimer");
      this.pending = [];
      if (update.length > 2) {
        this.lastSentAt = this.clock.now();
        // Not live: the next welcome sends the difference instead.
        if (!this.send({ t: "notes", u: update })) return;
      }
      this.settleTimer = this.clock.setTimeout(() => {
        this.settleTimer = null;
        this.backoff.reset();
        if (this.status === "retrying") this._setStatus("ok");
      }, NOTES_SETTLED_MS);
    }, delay);
  }

  _setStatus(state) {
    this.status = state;
    this.dispatchEvent(new CustomEvent("status", { detail: { state, message: NOTES_MESSAGES[state] } }));
  }

  _clear(name) {
    if (this[name]) this.clock.clearTimeout(this[name]);
    this[name] = null;
  }

  destroy() {
    this.doc.off("update", this._onUpdate);
    this._clear("flushTimer");
    this._clear("resendTimer");
    this._clear("settleTimer");
    this.pending = [];
    this.serverSv = this.welcomeNotes = null;
  }
}
