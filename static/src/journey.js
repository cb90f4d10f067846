// The journey page (/rooms/{pair_id}/journey): the pair's sessions, oldest first, each with its
// goal and key moments, and every action item with its state and history; the whole journey as
// one Markdown file.
import {
  $,
  apiErrorText,
  apiGet,
  bundleLoaded,
  formatDate,
  formatDateTime,
  formatDuration,
  fragmentWithToken,
  h,
  roleLabel,
  showFatal,
  wireMarkdownDownload,
} from "./common.js";
import { dueText, historyText } from "./describe.js";
import { takeToken } from "./protocol.js";

bundleLoaded();
const pairId = decodeURIComponent(window.location.pathname.split("/")[2] || "");
const token = pairId ? takeToken(`pair:${pairId}`) : "";
const STATES = [
  ["open", "Open"],
  ["done", "Done"],
  ["dropped", "Dropped"],
];

function sessionHref(sessionId, at = null) {
  return `/sessions/${encodeURIComponent(sessionId)}${fragmentWithToken(token, at)}`;
}

function sessionEl(s, n, nameOf) {
  const live = s.ended_at === null || s.ended_at === undefined;
  const facts = [
    live ? "in progress" : formatDuration(s.ended_at - s.started_at),
    `${s.message_count} message${s.message_count === 1 ? "" : "s"}`,
  ];
  const marks = Array.isArray(s.marks) ? s.marks : [];
  return h(
    "li",
    { class: "journey-session", "data-testid": "journey-session", "data-session-id": s.id },
    h(
      "div",
      { class: "journey-session-head" },
      h("span", { class: "journey-n" }, `#${n}`),
      h("a", { class: "journey-when", href: sessionHref(s.id) }, formatDateTime(s.started_at)),
      live ? h("span", { class: "tag tag-live" }, "Live now") : null,
      h("span", { class: "journey-facts" }, facts.join(" · ")),
    ),
    h(
      "p",
      { class: "journey-goal", "data-empty": String(!s.goal) },
      h("span", { class: "summary-label" }, "Goal"),
      s.goal || "No goal was set.",
    ),
    marks.length
      ? h(
          "ul",
          { class: "journey-marks" },
          marks.map((m) =>
            h(
              "li",
              { class: `journey-mark kind-${m.kind}`, "data-testid": "journey-mark", "data-kind": m.kind },
              h("span", { class: "mark-kind" }, m.kind),
              h(
                "a",
                { class: "journey-mark-text", href: sessionHref(s.id, `seq-${m.ref ?? m.seq}`) },
                m.text,
              ),
              h("span", { class: "mark-by" }, nameOf(m.by)),
            ),
          ),
        )
      : null,
  );
}

function itemEl(item, nameOf, sessionsById) {
  const history = Array.isArray(item.history) ? item.history : [];
  const facts = [`for ${nameOf(item.owner)}`];
  if (item.due) facts.push(`due ${dueText(item.due)}`);
  if (item.created_at) facts.push(`added ${formatDate(item.created_at)}`);
  return h(
    "li",
    { class: "journey-item", "data-testid": "journey-item", "data-state": item.state, "data-item-id": item.id },
    h("span", { class: `state-tag state-${item.state}` }, item.state),
    h("p", { class: "journey-item-text" }, item.text),
    h("p", { class: "journey-item-facts" }, facts.join(" · ")),
    history.length
      ? h(
          "details",
          { class: "journey-history" },
          h("summary", {}, `History (${history.length})`),
          h(
            "ol",
            {},
            history.map((entry, i) => {
              const session = sessionsById.get(entry.session_id);
              return h(
                "li",
                {},
                h(
                  "a",
                  { href: sessionHref(entry.session_id, entry.seq ? `seq-${entry.seq}` : null) },
                  entry.ts ? formatDate(entry.ts) : session ? formatDate(session.started_at) : "",
                ),
                " ",
                historyText(entry, i === 0, nameOf),
              );
            }),
          ),
        )
      : null,
  );
}

async function main() {
  if (!token || !pairId) {
    showFatal("This link is incomplete: it needs a #token=… part. Open the full link you were given.");
    return;
  }
  const back = $("#sessions-link");
  back.href = `/rooms/${encodeURIComponent(pairId)}/sessions${fragmentWithToken(token)}`;
  back.hidden = false;
  const room = $("#room-link");
  room.href = `/rooms/${encodeURIComponent(pairId)}${fragmentWithToken(token)}`;
  room.hidden = false;
  const journey = await apiGet(`/api/rooms/${encodeURIComponent(pairId)}/journey`, token);
  const pair = journey.pair || {};
  const people = [pair.mentor, pair.mentee].filter(Boolean);
  const names = new Map(people.map((p) => [p.id, p.name]));
  const nameOf = (id) => names.get(id) || "A member";
  if (pair.mentor && pair.mentee) {
    $("#title").textContent = `${pair.mentee.name}'s journey with ${pair.mentor.name}`;
    document.title = `Journey of ${pair.mentee.name} and ${pair.mentor.name} · Menteo`;
  }
  const sessions = Array.isArray(journey.sessions) ? journey.sessions : [];
  const items = Array.isArray(journey.items) ? journey.items : [];
  const open = items.filter((i) => i.state === "open").length;
  $("#lead").textContent = [
    people.map((p) => `${p.name} (${roleLabel(p.role || (p === pair.mentor ? "mentor" : "mentee"))})`).join(" and "),
    `${sessions.length} session${sessions.length === 1 ? "" : "s"}`,
    `${open} open item${open === 1 ? "" : "s"}`,
  ]
    .filter(Boolean)
    .join(" · ");

  $("#journey-sessions").replaceChildren(...sessions.map((s, i) => sessionEl(s, i + 1, nameOf)));
  $("#sessions-empty").hidden = sessions.length > 0;
  $("#sessions-count").textContent = `${sessions.length}`;

  const sessionsById = new Map(sessions.map((s) => [s.id, s]));
  const groups = $("#journey-items");
  for (const [state, label] of STATES) {
    const these = items.filter((i) => i.state === state);
    if (!these.length) continue;
    groups.append(
      h("h3", { class: "plan-sub" }, `${label} (${these.length})`),
      h("ul", { class: "journey-item-list", "data-state": state }, these.map((i) => itemEl(i, nameOf, sessionsById))),
    );
  }
  $("#items-empty").hidden = items.length > 0;
  $("#items-count").textContent = `${open} open of ${items.length}`;
  $("#journey").hidden = false;

  wireMarkdownDownload(
    `/api/rooms/${encodeURIComponent(pairId)}/journey?format=md`,
    token,
    () => `menteo-journey-${new Date().toISOString().slice(0, 10)}-${pairId.slice(0, 8)}.md`,
  );
  document.body.dataset.state = "ready";
  $("#loading").hidden = true;
}

main().catch((err) => {
  $("#loading").hidden = true;
  showFatal(apiErrorText(err));
});
