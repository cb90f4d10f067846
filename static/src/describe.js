// Sentences for the review pages: an item's changes, its history, a key moment, and the
// off-the-record stretches of a transcript (from its record events). Plain strings, no DOM.

const STATE_VERB = { done: "marked done", open: "reopened", dropped: "dropped" };

/** `due` ("YYYY-MM-DD") as a short day in the reader's calendar. */
export function dueText(due) {
  const [y, m, d] = String(due).split("-").map(Number);
  if (!y || !m || !d) return String(due);
  return new Date(y, m - 1, d).toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

/**
 * What an item_update (or a history entry after the first) changed, as phrases:
 * ["marked done", "given to Ada", "due date set to 3 Mar 2026", "reworded to “…”"].
 */
export function changePhrases(change, nameOf) {
  const out = [];
  if (typeof change.state === "string") out.push(STATE_VERB[change.state] || `set to ${change.state}`);
  if (typeof change.text === "string") out.push(`reworded to “${change.text}”`);
  if (typeof change.owner === "string") out.push(`given to ${nameOf(change.owner)}`);
  if (Object.prototype.hasOwnProperty.call(change, "due")) {
    out.push(change.due ? `due date set to ${dueText(change.due)}` : "due date removed");
  }
  return out;
}

/** "Ada: “Send the draft” marked done" — one transcript line for an item_update. */
export function itemUpdateText(update, itemText, nameOf) {
  const what = itemText ? `“${itemText}”` : "an item";
  const phrases = changePhrases(update, nameOf);
  return `${nameOf(update.by)}: ${what} ${phrases.length ? phrases.join(", ") : "changed"}`;
}

/** "Ada added an action item for Grace, due 3 Mar 2026: Send the draft" */
export function itemCreatedText(item, nameOf) {
  const due = item.due ? `, due ${dueText(item.due)}` : "";
  return `${nameOf(item.by)} added an action item for ${nameOf(item.owner)}${due}: ${item.text}`;
}

/** One entry of an item's history in the journey: the first is its creation. */
export function historyText(entry, first, nameOf) {
  if (first) {
    const due = entry.due ? `, due ${dueText(entry.due)}` : "";
    return `Added by ${nameOf(entry.by)} for ${nameOf(entry.owner)}${due}`;
  }
  const phrases = changePhrases(entry, nameOf);
  const said = phrases.length ? phrases.join(", ") : "changed";
  return `${said.charAt(0).toUpperCase()}${said.slice(1)} by ${nameOf(entry.by)}`;
}

/**
 * The record events of a transcript as what a reader needs: each stretch off the record (one
 * line, at the seq of the event that turned it off) and each request that was not agreed to
 * (at the seq of the event that ended it). `members` are the pair's two user ids.
 * Returns [{kind: "off", seq, from, to|null, askedBy, agreedBy, onBy|null}
 *        | {kind: "declined"|"withdrawn", seq, askedBy, by, ts}]
 */
export function recordStretches(events, members = []) {
  const other = (id) => members.find((m) => m !== id) ?? null;
  const out = [];
  let request = null; // the standing request: {by, ts, seq}
  let stretch = null; // the open stretch
  for (const e of events) {
    if (e.t !== "record") continue;
    if (e.state === "requested") {
      request = { by: e.by, ts: e.ts, seq: e.seq };
    } else if (e.state === "off") {
      stretch = {
        kind: "off",
        seq: e.seq,
        from: e.ts,
        to: null,
        askedBy: request ? request.by : other(e.by),
        agreedBy: e.by,
        onBy: null,
      };
      out.push(stretch);
      request = null;
    } else if (e.state === "on") {
      if (stretch) {
        stretch.to = e.ts;
        stretch.onBy = e.by;
        stretch = null;
      } else if (request) {
        out.push({
          kind: request.by === e.by ? "withdrawn" : "declined",
          seq: e.seq,
          askedBy: request.by,
          by: e.by,
          ts: e.ts,
        });
      }
      request = null;
    }
  }
  return out;
}

/** The sentence of one entry of recordStretches(). */
export function stretchText(s, nameOf, timeOf) {
  if (s.kind === "off") {
    const span = s.to ? `${timeOf(s.from)}–${timeOf(s.to)}` : `from ${timeOf(s.from)} to the end of the session`;
    return `Off the record ${span}, asked by ${nameOf(s.askedBy)}, agreed by ${nameOf(s.agreedBy)}. What was said then is not kept.`;
  }
  if (s.kind === "withdrawn") return `${nameOf(s.askedBy)} asked to go off the record, then withdrew the request`;
  return `${nameOf(s.askedBy)} asked to go off the record; ${nameOf(s.by)} declined`;
}

/** Words of a search query, for highlighting them in an excerpt. */
export function queryWords(q) {
  return Array.from(new Set((q.toLowerCase().match(/[\p{L}\p{N}]+/gu) || []).filter(Boolean)));
}

/**
 * Split `text` into [{text, hit}] parts where the query's words (and longer forms of them,
 * since a backend may match "drafts" for "draft") are hits.
 */
export function highlightParts(text, words) {
  if (!words.length) return [{ text, hit: false }];
  const escaped = words.map((w) => w.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
  const re = new RegExp(`(?<![\\p{L}\\p{N}])(?:${escaped.join("|")})[\\p{L}\\p{N}]*`, "giu");
  const parts = [];
  let last = 0;
  for (const m of text.matchAll(re)) {
    if (m.index > last) parts.push({ text: text.slice(last, m.index), hit: false });
    parts.push({ text: m[0], hit: true });
    last = m.index + m[0].length;
  }
  if (last < text.length) parts.push({ text: text.slice(last), hit: false });
  return parts;
}
