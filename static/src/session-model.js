// What the room shows of the session besides chat and notes: the goal, the pair's action items
// ("since last time" and this session's), the key moments and the recording state. Built from
// the welcome and the durable events, with this member's own changes shown at once while they
// wait for their ack (optimistic, undone if the server refuses them). No DOM, no socket: the
// room feeds it and renders what it says, and `node --test` drives it directly.

export const MARK_KINDS = ["learning", "feedback", "decision", "question"];
export const MAX_GOAL = 300;
export const MAX_ITEM = 500;
export const MAX_MARK = 500;
const ITEM_FIELDS = ["state", "text", "owner", "due"];
const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

/** The first `max` characters (Unicode code points, as the server counts them). */
export function truncate(text, max) {
  const chars = Array.from(text);
  return chars.length <= max ? text : chars.slice(0, max).join("");
}

/** A "YYYY-MM-DD" date, or null for anything else (an empty date field). */
export function dueOrNull(value) {
  return typeof value === "string" && /^\d{4}-\d{2}-\d{2}$/.test(value) ? value : null;
}

export class SessionModel {
  constructor() {
    this.sessionId = null;
    this.me = null;
    this.members = [];
    this._clearSession();
    this.pending = new Map(); // own frame id -> {frame, awaitSeq}: sent, not yet in the events
  }

  _clearSession() {
    this.goal = null;
    this.items = new Map(); // item id -> the item's current fields (+ sessionItem order)
    this.stubs = new Set(); // ids of items known only from an update (text still unknown)
    this.marks = new Map(); // seq -> mark event
    this.record = { state: "on", by: null, requestedBy: null, agreedBy: null, since: null };
    this.lastSeq = 0;
    this.order = 0; // insertion counter, the tie-break of the item order
  }

  /** The other member's id, given one of the two. */
  other(userId) {
    const m = this.members.find((x) => x.id !== userId);
    return m ? m.id : null;
  }

  memberName(userId) {
    const m = this.members.find((x) => x.id === userId);
    return m ? m.name : "A member";
  }

  // ---- input ---------------------------------------------------------------------------------

  /**
   * A welcome. Of a new session: everything starts over from it (the outbox's frames of the old
   * session are the caller's to propose again). Of the same session (a reconnect): the items it
   * lists are refreshed and the ones ticked off meanwhile stay; the replay that follows brings
   * the rest.
   */
  onWelcome(w) {
    const sameSession = this.sessionId === w.session_id;
    this.me = w.user ? w.user.id : null;
    this.members = Array.isArray(w.members) ? w.members : [];
    if (!sameSession) {
      this._clearSession();
      this.pending.clear();
      this.sessionId = w.session_id;
    }
    this.goal = typeof w.goal === "string" && w.goal !== "" ? w.goal : null;
    for (const item of Array.isArray(w.items) ? w.items : []) this._putItem(item);
    this._setRecord(typeof w.record === "string" ? w.record : "on", w.record_by ?? null, null);
  }

  /** A durable event of this session, in seq order (the client guarantees order and once). */
  applyEvent(e) {
    if (typeof e.seq === "number") this.lastSeq = Math.max(this.lastSeq, e.seq);
    switch (e.t) {
      case "goal":
        this.goal = e.text ? e.text : null;
        break;
      case "item":
        if (e.item && typeof e.item.id === "string") this._putItem(e.item);
        break;
      case "item_update":
        this._updateItem(e);
        break;
      case "mark":
        this.marks.set(e.seq, e);
        break;
      case "record":
        this._setRecord(e.state, e.by ?? null, e.ts ?? null);
        break;
      default:
        break;
    }
    // Own frames whose event is now in: their optimistic copy gives way to the real one.
    for (const [id, p] of this.pending) {
      if ((p.awaitSeq !== null && p.awaitSeq <= this.lastSeq) || (e.id === id && e.t === p.frame.t)) {
        this.pending.delete(id);
      }
    }
  }

  _putItem(item) {
    const known = this.items.get(item.id);
    const stubFields = this.stubs.has(item.id) && known ? known.fromEvents : {};
    this.stubs.delete(item.id);
    this.items.set(item.id, {
      ...item,
      ...stubFields,
      order: known ? known.order : this.order++,
    });
  }

  _updateItem(e) {
    if (typeof e.item !== "string") return;
    let item = this.items.get(e.item);
    if (!item) {
      // An item of an earlier session whose creation we did not see (a reload after it was
      // closed in this session): listed from what the update says until its text is known.
      item = { id: e.item, text: null, owner: null, due: null, state: "open", session_id: null,
        created_at: 0, order: this.order++, fromEvents: {} };
      this.items.set(e.item, item);
      this.stubs.add(e.item);
    }
    for (const field of ITEM_FIELDS) {
      if (has(e, field)) {
        item[field] = e[field];
        if (item.fromEvents) item.fromEvents[field] = e[field];
      }
    }
  }

  /** Items known only from an update get their fields (from the journey); events win. */
  fillItems(items) {
    for (const item of items) if (this.stubs.has(item.id)) this._putItem(item);
  }

  _setRecord(state, by, ts) {
    const r = this.record;
    if (state === "requested") {
      Object.assign(r, { requestedBy: by, agreedBy: null, since: ts });
    } else if (state === "off") {
      // Off needs both: whoever did not agree is who asked.
      const asked = r.state === "requested" && r.requestedBy ? r.requestedBy : this.other(by);
      Object.assign(r, { requestedBy: asked, agreedBy: by, since: ts ?? r.since });
    } else {
      Object.assign(r, { requestedBy: null, agreedBy: null, since: null });
    }
    r.state = state;
    r.by = by;
  }

  // ---- this member's own frames ---------------------------------------------------------------

  /** A frame just put in the outbox (its id included): shown at once. */
  propose(id, frame) {
    this.pending.set(id, { frame: { ...frame, id }, awaitSeq: null });
  }

  /** Its ack: the optimistic copy stays until the event with that seq is in. */
  settle(id, seq) {
    const p = this.pending.get(id);
    if (!p) return;
    if (seq === null || seq === undefined || seq <= this.lastSeq) this.pending.delete(id);
    else p.awaitSeq = seq;
  }

  /** Refused for good: the optimistic copy goes, what the events say shows again. */
  fail(id) {
    this.pending.delete(id);
  }

  _pendingOf(t) {
    return Array.from(this.pending.values(), (p) => p.frame).filter((f) => f.t === t);
  }

  // ---- what to show ---------------------------------------------------------------------------

  /** The goal as it will be once this member's edits are stored: {text|null, pending}. */
  goalView() {
    const mine = this._pendingOf("goal");
    if (mine.length) {
      const text = mine[mine.length - 1].text;
      return { text: text ? text : null, pending: true };
    }
    return { text: this.goal, pending: false };
  }

  /**
   * The item list: items from earlier sessions ("since last time") first, oldest first, then
   * this session's, then the ones being added. An item closed during this session stays, with
   * its state. Each: the item's fields plus {key, sinceLastTime, pending}.
   */
  itemsView() {
    const updates = this._pendingOf("item_update");
    const list = [];
    for (const item of this.items.values()) {
      const view = { ...item, key: item.id, pending: false };
      for (const u of updates) {
        if (u.item !== item.id) continue;
        for (const field of ITEM_FIELDS) if (has(u, field)) view[field] = u[field];
        view.pending = true;
      }
      view.sinceLastTime = item.session_id !== this.sessionId;
      delete view.fromEvents;
      list.push(view);
    }
    list.sort(
      (a, b) =>
        Number(b.sinceLastTime) - Number(a.sinceLastTime) ||
        (a.created_at || 0) - (b.created_at || 0) ||
        a.order - b.order,
    );
    for (const f of this._pendingOf("item")) {
      list.push({
        id: null,
        key: `pending:${f.id}`,
        text: f.text,
        owner: f.owner,
        due: f.due ?? null,
        state: "open",
        by: this.me,
        session_id: this.sessionId,
        sinceLastTime: false,
        pending: true,
      });
    }
    return list;
  }

  /** Key moments in seq order, then the ones being saved: the event's fields plus {pending}. */
  marksView() {
    const stored = Array.from(this.marks.values())
      .sort((a, b) => a.seq - b.seq)
      .map((m) => ({ ...m, pending: false }));
    const mine = this._pendingOf("mark").map((f) => ({
      ...f,
      seq: null,
      by: this.me,
      ts: null,
      pending: true,
    }));
    return [...stored, ...mine];
  }

  /**
   * The recording state for this member: what the toggle does, whether the banner shows and
   * whether this member may agree to the other's request.
   */
  recordView() {
    const r = this.record;
    const askedByMe = r.requestedBy !== null && r.requestedBy === this.me;
    const busy = this._pendingOf("record").length > 0;
    const view = {
      state: r.state,
      by: r.by,
      requestedBy: r.requestedBy,
      agreedBy: r.agreedBy,
      since: r.since,
      askedByMe,
      busy,
      banner: r.state !== "on",
      canAccept: r.state === "requested" && !askedByMe,
      toggle: { on: false, label: "Go off the record" },
    };
    if (r.state === "requested") {
      view.toggle = askedByMe
        ? { on: true, label: "Cancel the request" }
        : { on: true, label: "Decline" };
    } else if (r.state === "off") {
      view.toggle = { on: true, label: "Back on the record" };
    }
    return view;
  }
}
