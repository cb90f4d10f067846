// The review pages: a pair's past sessions, and one session's transcript.
import {
  $,
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
} from "./common.js";
import { tokenFromFragment } from "./protocol.js";

const token = tokenFromFragment();
const parts = window.location.pathname.split("/").filter(Boolean).map(decodeURIComponent);

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
  const sessions = await apiGet(`/api/rooms/${encodeURIComponent(pairId)}/sessions`, token);
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

  const timeline = $("#timeline");
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
    }
    if (item) timeline.append(item);
  }
  // Counts what is shown: a void (a seq the server could not fill) is not an event to a reader.
  const shown = timeline.children.length;
  $("#timeline-count").textContent = `${shown} event${shown === 1 ? "" : "s"}`;

  const notesBox = $("#notes");
  if (notes && notes.trim()) notesBox.append(renderMarkdown(notes));
  else notesBox.append(h("p", { class: "empty" }, "No notes were written in this session."));
  $("#transcript").hidden = false;

  const download = $("#download");
  download.disabled = false;
  download.addEventListener("click", async () => {
    download.disabled = true;
    const status = $("#download-status");
    try {
      const blob = await apiGet(
        `/api/sessions/${encodeURIComponent(sessionId)}/transcript?format=md`,
        token,
        { as: "blob" },
      );
      const url = URL.createObjectURL(
        blob.type ? blob : new Blob([blob], { type: "text/markdown;charset=utf-8" }),
      );
      const day = new Date(session.started_at * 1000).toISOString().slice(0, 10);
      const a = h("a", { href: url, download: `menteo-session-${day}-${sessionId.slice(0, 8)}.md` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(url), 60000);
      status.textContent = "The Markdown file was downloaded.";
    } catch (err) {
      status.textContent = "";
      const box = $("#error");
      box.textContent = `The download failed: ${apiErrorText(err)}`;
      box.hidden = false;
    } finally {
      download.disabled = false;
    }
  });
  done();
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
