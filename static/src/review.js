// The review pages: a pair's past sessions (with search across them), and one session's
// transcript (goal, items, key moments, off-the-record stretches; opened at a given moment).
import {
  $,
  anchorFromFragment,
  bundleLoaded,
  apiErrorText,
  apiGet,
  formatDateTime,
  formatDuration,
  formatTime,
  fragmentWithToken,
  h,
  renderMarkdown,
  roleLabel,
  showFatal,
  wireMarkdownDownload,
} from "./common.js";
import {
  itemCreatedText,
  itemUpdateText,
  recordStretches,
  stretchText,
} from "./describe.js";
import { takeToken } from "./protocol.js";
import { SearchView } from "./search-view.js";

bundleLoaded();
const parts = window.location.pathname.split("/").filter(Boolean).map(decodeURIComponent);
// /rooms/{pair_id}/sessions keeps the token per pair, /sessions/{session_id} per session.
const token = parts[1] ? takeToken(parts[0] === "rooms" ? `pair:${parts[1]}` : `session:${parts[1]}`) : "";

function done() {
  document.body.dataset.state = "ready";
  const loading = document.getElementById("loading");
  if (loading) loading.hidden = true;
}

function fail(err) {
  const loading = document.getElementById("loading");
  if (loading) loading.hidden = true;
  showFatal(typeof err === "string" ? err : apiErrorText(err));
}

// ---- /rooms/{pair_id}/sessions -------------------------------------------------------------

async function sessionsPage() {
  const pairId = parts[1];
  $("#room-link").href = `/rooms/${encodeURIComponent(pairId)}${fragmentWithToken(token)}`;
  $("#journey-link").href = `/rooms/${encodeURIComponent(pairId)}/journey${fragmentWithToken(token)}`;
  const sessions = await apiGet(`/api/rooms/${encodeURIComponent(pairId)}/sessions`, token);
  new SearchView({
    pairId,
    token,
    form: $("#search-form"),
    input: $('[data-testid="search-input"]'),
    results: $("#search-results"),
    status: $("#search-status"),
    sessions,
  });
  const list = $("#session-list");
  for (const s of sessions) {
    const live = s.ended_at === null || s.ended_at === undefined;
    const duration = live ? null : formatDuration(s.ended_at - s.started_at);
    const count = `${s.message_count} message${s.message_count === 1 ? "" : "s"}`;
    const link = h(
      "a",
      {
        class: "session-item",
        "data-testid": "session-item",
        href: `/sessions/${encodeURIComponent(s.id)}${fragmentWithToken(token)}`,
      },
      h(
        "span",
        { class: "session-when" },
        h("time", { datetime: new Date(s.started_at * 1000).toISOString() }, formatDateTime(s.started_at)),
        live ? h("span", { class: "tag tag-live" }, "Live now") : null,
      ),
      s.goal ? h("span", { class: "session-goal" }, h("span", { class: "session-goal-label" }, "Goal"), s.goal) : null,
      h(
        "span",
        { class: "session-facts" },
        h("span", { class: "fact" }, live ? "in progress" : duration),
        h("span", { class: "fact" }, count),
      ),
      h("span", { class: "chevron", "aria-hidden": "true" }, "›"),
    );
    list.append(h("li", {}, link));
  }
  $("#empty").hidden = sessions.length > 0;
  done();
}

// ---- /sessions/{session_id} ----------------------------------------------------------------

async function sessionPage() {
  const sessionId = parts[1];
  const data = await apiGet(`/api/sessions/${encodeURIComponent(sessionId)}/transcript`, token);
  const { session, events, notes } = data;
  const listLink = $("#list-link");
  listLink.href = `/rooms/${encodeURIComponent(session.pair_id)}/sessions${fragmentWithToken(token)}`;
  listLink.hidden = false;

  const users = new Map();
  for (const e of events) if (e.t === "presence" && e.user) users.set(e.user.id, e.user);
  const itemTexts = await itemTextsFor(events, session.pair_id);
  const nameOf = (id) => (users.get(id) ? users.get(id).name : "A member");
  const people = Array.from(users.values()).sort((a, b) => (a.role === "mentor" ? -1 : 1) - (b.role === "mentor" ? -1 : 1));

  const started = formatDateTime(session.started_at);
  $("#title").textContent = `Session of ${started}`;
  document.title = `Session of ${started} · Menteo`;
  const facts = [];
  if (people.length) facts.push(people.map((p) => `${p.name} (${roleLabel(p.role)})`).join(" and "));
  facts.push(
    session.ended_at
      ? `${formatDuration(session.ended_at - session.started_at)}, ended ${formatTime(session.ended_at)}`
      : "still in progress",
  );
  const chats = events.filter((e) => e.t === "chat").length;
  facts.push(`${chats} message${chats === 1 ? "" : "s"}`);
  $("#meta").textContent = facts.join(" · ");
  renderSummary(events, itemTexts, nameOf);

  const timeline = $("#timeline");
  const sysLine = (e, cls, ...body) =>
    h(
      "li",
      { class: `tl tl-sys ${cls}`, "data-testid": "transcript-event", "data-seq": e.seq, id: `seq-${e.seq}` },
      h("time", { class: "tl-time" }, formatTime(e.ts)),
      h("div", { class: "tl-body" }, ...body),
    );
  const stretches = new Map(recordStretches(events, Array.from(users.keys())).map((s) => [s.seq, s]));
  for (const e of events) {
    let item;
    if (e.t === "chat") {
      const role = users.get(e.from) ? users.get(e.from).role : "";
      item = h(
        "li",
        { class: `tl tl-chat role-${role}`, "data-testid": "transcript-event", "data-seq": e.seq },
        h("time", { class: "tl-time" }, formatTime(e.ts)),
        h(
          "div",
          { class: "tl-body" },
          h("span", { class: "tl-author" }, nameOf(e.from)),
          h("p", { class: "tl-text" }, e.text),
        ),
      );
    } else if (e.t === "presence") {
      item = h(
        "li",
        { class: "tl tl-sys", "data-testid": "transcript-event", "data-seq": e.seq },
        h("time", { class: "tl-time" }, formatTime(e.ts)),
        h("div", { class: "tl-body" }, `${e.user.name} ${e.state === "joined" ? "joined" : "left"}`),
      );
    } else if (e.t === "ended") {
      item = h(
        "li",
        { class: "tl tl-sys tl-ended", "data-testid": "transcript-event", "data-seq": e.seq },
        h("time", { class: "tl-time" }, formatTime(e.ts)),
        h("div", { class: "tl-body" }, `Session ended by ${nameOf(e.by)}`),
      );
    } else if (e.t === "goal") {
      item = sysLine(e, "tl-goal", e.text ? `${nameOf(e.by)} set the goal: ${e.text}` : `${nameOf(e.by)} cleared the goal`);
    } else if (e.t === "item" && e.item) {
      item = sysLine(e, "tl-item", itemCreatedText(e.item, nameOf));
      item.dataset.itemId = e.item.id;
    } else if (e.t === "item_update") {
      item = sysLine(e, "tl-item", itemUpdateText(e, itemTexts.get(e.item), nameOf));
      item.dataset.itemId = e.item;
    } else if (e.t === "mark") {
      item = sysLine(
        e,
        `tl-mark kind-${e.kind}`,
        h("span", { class: "mark-kind" }, e.kind),
        " ",
        h("span", { class: "tl-mark-text" }, e.text),
        ` · marked by ${nameOf(e.by)}`,
        Number.isInteger(e.ref) ? jumpButton(e.ref) : null,
      );
      item.dataset.kind = e.kind;
    } else if (e.t === "record" && stretches.has(e.seq)) {
      const stretch = stretches.get(e.seq);
      item = sysLine(e, `tl-record tl-record-${stretch.kind}`, stretchText(stretch, nameOf, formatTime));
      item.dataset.kind = stretch.kind === "off" ? "off-record" : `record-${stretch.kind}`;
    }
    if (item) {
      if (!item.id && e.seq) item.id = `seq-${e.seq}`;
      timeline.append(item);
    }
  }
  // Counts what is shown: a void (a seq the server could not fill) is not an event to a reader.
  const shown = timeline.children.length;
  $("#timeline-count").textContent = `${shown} event${shown === 1 ? "" : "s"}`;

  const notesBox = $("#notes");
  if (notes && notes.trim()) notesBox.append(renderMarkdown(notes));
  else notesBox.append(h("p", { class: "empty" }, "No notes were written in this session."));
  $("#transcript").hidden = false;
  openAt(anchorFromFragment());

  const day = new Date(session.started_at * 1000).toISOString().slice(0, 10);
  wireMarkdownDownload(
    `/api/sessions/${encodeURIComponent(sessionId)}/transcript?format=md`,
    token,
    () => `menteo-session-${day}-${sessionId.slice(0, 8)}.md`,
  );
  done();
}

/** Texts of the items this transcript mentions: its item events, else the pair's journey. */
async function itemTextsFor(events, pairId) {
  const texts = new Map();
  for (const e of events) if (e.t === "item" && e.item) texts.set(e.item.id, e.item.text);
  const unknown = events.some((e) => e.t === "item_update" && !texts.has(e.item));
  if (unknown && pairId) {
    try {
      const journey = await apiGet(`/api/rooms/${encodeURIComponent(pairId)}/journey`, token);
      for (const item of journey.items || []) if (!texts.has(item.id)) texts.set(item.id, item.text);
    } catch {
      /* the lines say "an item" */
    }
  }
  return texts;
}

/** The head of the transcript: the session's goal, its key moments and its action items. */
function renderSummary(events, itemTexts, nameOf) {
  let goal = null;
  for (const e of events) if (e.t === "goal") goal = e.text || null;
  const box = $("#summary");
  const goalLine = $("#summary-goal");
  goalLine.replaceChildren(h("span", { class: "summary-label" }, "Goal"), goal || "No goal was set.");
  goalLine.dataset.empty = String(!goal);
  const marks = events.filter((e) => e.t === "mark");
  const markList = $("#summary-marks");
  markList.replaceChildren(
    ...marks.map((m) =>
      h(
        "li",
        { class: `summary-mark kind-${m.kind}`, "data-kind": m.kind },
        h("span", { class: "mark-kind" }, m.kind),
        " ",
        m.text,
        jumpButton(m.seq, "Show in the timeline"),
      ),
    ),
  );
  $("#summary-marks-empty").hidden = marks.length > 0;
  // Items created or changed in this session, with the state this session left them in.
  const items = new Map();
  for (const e of events) {
    if (e.t === "item" && e.item) items.set(e.item.id, { ...e.item, created: true, seq: e.seq });
    if (e.t === "item_update") {
      const item = items.get(e.item) || { id: e.item, text: itemTexts.get(e.item) || "An item", created: false };
      for (const f of ["state", "text", "owner", "due"]) if (Object.prototype.hasOwnProperty.call(e, f)) item[f] = e[f];
      item.seq = item.seq ?? e.seq;
      items.set(e.item, item);
    }
  }
  const itemList = $("#summary-items");
  itemList.replaceChildren(
    ...Array.from(items.values(), (item) =>
      h(
        "li",
        { class: "summary-item", "data-state": item.state || "open", "data-item-id": item.id },
        h("span", { class: `state-tag state-${item.state || "open"}` }, item.state || "updated"),
        " ",
        item.text,
        item.owner ? h("span", { class: "summary-owner" }, ` · ${nameOf(item.owner)}`) : null,
        item.created ? null : h("span", { class: "summary-owner" }, " · from an earlier session"),
      ),
    ),
  );
  $("#summary-items-empty").hidden = items.size > 0;
  box.hidden = false;
}

function jumpButton(seq, label = "Show the message") {
  const button = h("button", { type: "button", class: "tl-jump", "aria-label": label, title: label }, "↪");
  button.addEventListener("click", () => openAt(`seq-${seq}`));
  return button;
}

/** Bring a place of the transcript into view and highlight it ("seq-42" or "notes"). */
function openAt(anchor) {
  if (!anchor) return;
  const target = anchor === "notes" ? document.getElementById("notes-panel") : document.getElementById(anchor);
  if (!target) return;
  for (const old of document.querySelectorAll("[data-highlight]")) {
    old.classList.remove("highlight");
    delete old.dataset.highlight;
  }
  target.classList.add("highlight");
  target.dataset.highlight = "true";
  target.setAttribute("tabindex", "-1");
  target.scrollIntoView({ block: "center" });
  target.focus({ preventScroll: true });
}

// ---- start -----------------------------------------------------------------------------------

async function main() {
  if (!token) {
    fail("This link is incomplete: it needs a #token=… part. Open the full link you were given.");
    return;
  }
  try {
    if (document.body.classList.contains("page-sessions")) await sessionsPage();
    else await sessionPage();
  } catch (err) {
    fail(err);
  }
}

main();
