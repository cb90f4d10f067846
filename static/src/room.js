// The room page: wires the wire client, the chat, the notes, the call and the session's goal,
// action items, key moments and recording state to the DOM.
import { Call } from "./call.js";
import { $, apiGet, bundleLoaded, formatTime, fragmentWithToken, h, roleLabel } from "./common.js";
import { GoalView } from "./goal-view.js";
import { ItemsView } from "./items-view.js";
import { MarksView, closePicker, markButton, markFrame } from "./marks-view.js";
import { Notes } from "./notes.js";
import { RoomClient, pageStorage, takeToken } from "./protocol.js";
import { RecordView } from "./record-view.js";
import { MAX_ITEM, SessionModel, truncate } from "./session-model.js";
import { parseTaskLine } from "./task-line.js";

const TYPING_IDLE_MS = 2500; // stop "typing" after this long without a keystroke
const TYPING_SHOW_MAX_MS = 8000; // hide the other's indicator if no "off" comes

const pairId = decodeURIComponent(window.location.pathname.split("/")[2] || "");
bundleLoaded();
const token = pairId ? takeToken(`pair:${pairId}`) : "";

const el = {
  body: document.body,
  conn: $('[data-testid="connection-state"]'),
  connLabel: $("#conn-label"),
  error: $("#error"),
  notice: $("#notice"),
  endedBanner: $("#ended-banner"),
  endedReview: $("#ended-review"),
  newSession: $("#new-session"),
  meName: $("#me-name"),
  meRole: $("#me-role"),
  meAvatar: $("#me-avatar"),
  peerCard: $("#peer-card"),
  peerName: $("#peer-name"),
  peerRole: $("#peer-role"),
  peerStatus: $("#peer-status"),
  peerAvatar: $("#peer-avatar"),
  reviewLink: $("#review-link"),
  endSession: $("#end-session"),
  endDialog: $("#end-dialog"),
  confirmEnd: $("#confirm-end"),
  endError: $("#end-error"),
  log: $("#chat-log"),
  typing: $("#typing"),
  typingText: $("#typing-text"),
  composer: $("#composer"),
  input: $("#chat-input"),
  send: $("#chat-send"),
  chatHint: $("#chat-hint"),
  notesHost: $("#notes"),
  notesStatus: $("#notes-status"),
  callPanel: $("#call-panel"),
  stageOverlay: $("#stage-overlay"),
  stageAvatar: $("#stage-avatar"),
  stageTitle: $("#stage-title"),
  stageSub: $("#stage-sub"),
  unmute: $("#unmute-remote"),
  localVideo: $("#local-video"),
  remoteVideo: $("#remote-video"),
  pipOff: $("#pip-off"),
  startCall: $("#start-call"),
  hangUp: $("#hang-up"),
  mic: $("#toggle-mic"),
  camera: $("#toggle-camera"),
  share: $("#share-screen"),
  sessionGoal: $('[data-testid="session-goal"]'),
  goalForm: $("#goal-form"),
  goalInput: $('[data-testid="goal-input"]'),
  recordToggle: $('[data-testid="record-toggle"]'),
  recordBanner: $('[data-testid="record-banner"]'),
  recordText: $("#record-text"),
  recordAccept: $('[data-testid="record-accept"]'),
  itemsSince: $("#items-since"),
  sinceTitle: $("#since-title"),
  itemsNow: $("#items-now"),
  nowTitle: $("#now-title"),
  itemsEmpty: $("#items-empty"),
  itemForm: $("#item-form"),
  markList: $("#mark-list"),
  marksEmpty: $("#marks-empty"),
  notesToItem: $('[data-testid="notes-to-item"]'),
};

const storage = pageStorage(`menteo:room:${pairId}`);
const client = new RoomClient({ pairId, token, storage });
const notes = new Notes({
  parent: el.notesHost,
  status: el.notesStatus,
  client,
  storage,
  onLine: (text) => onNotesLine(text),
});
const call = new Call({
  client,
  storage,
  localVideo: el.localVideo,
  remoteVideo: el.remoteVideo,
});

let me = null;
let peer = null;
let peerOnline = false;
let ended = false;
let fatal = false;
const own = new Map(); // own chat id -> <li>, sending or delivered
let typingOn = false;
let typingTimer = null;
let peerTypingTimer = null;
let noticeTimer = null;
const offSeen = new Set(); // ids of the other member's off-the-record chats already shown
let journeyAsked = false; // the journey was fetched for the texts of items seen only in updates

// ---- goal, items, key moments, off the record -------------------------------------------------

const model = new SessionModel();

/** Put an acked frame (goal, item, item_update, mark, record) in the outbox and show it. */
function sendAcked(frame) {
  if (ended || fatal) return null;
  const id = client.sendAcked(frame);
  model.propose(id, frame);
  renderSession();
  return id;
}

const goalView = new GoalView({
  model,
  send: sendAcked,
  display: el.sessionGoal,
  form: el.goalForm,
  input: el.goalInput,
});
const itemsView = new ItemsView({
  model,
  send: sendAcked,
  sinceList: el.itemsSince,
  sinceTitle: el.sinceTitle,
  nowList: el.itemsNow,
  nowTitle: el.nowTitle,
  empty: el.itemsEmpty,
  form: el.itemForm,
});
const marksView = new MarksView({ model, list: el.markList, empty: el.marksEmpty, onJump: jumpToSeq });
const recordView = new RecordView({
  model,
  send: sendAcked,
  toggle: el.recordToggle,
  banner: el.recordBanner,
  text: el.recordText,
  accept: el.recordAccept,
});

function renderSession() {
  goalView.render();
  itemsView.render();
  marksView.render();
  recordView.render();
  renderMarkBadges();
  renderTaskButton();
  el.input.placeholder =
    model.record.state === "off" ? "Off the record: this chat is not kept…" : "Write a message…";
}

// A notes line such as "- [ ] send the draft @Grace" becomes an action item with one click.
let taskLine = null; // the task on the notes line the cursor is on, or null

function onNotesLine(text) {
  taskLine = parseTaskLine(text, model.members);
  renderTaskButton();
}

function renderTaskButton() {
  const button = el.notesToItem;
  if (!taskLine || ended || fatal) {
    button.hidden = true;
    return;
  }
  const { text, owner } = taskLine;
  const exists = model.itemsView().some((v) => v.text === text && v.state === "open");
  button.hidden = false;
  button.disabled = exists;
  button.textContent = exists
    ? "Already an action item"
    : `Make it an action item${owner ? ` for ${model.memberName(owner)}` : ""}`;
  button.title = exists ? text : `Add “${text}” to the action items`;
}

el.notesToItem.addEventListener("click", () => {
  if (!taskLine) return;
  const { text, owner, due } = taskLine;
  sendAcked({ t: "item", text: truncate(text, MAX_ITEM), owner: owner || itemsView.defaultOwner(), due });
});

/** Each chat message a key moment points at shows that moment's kind. */
function renderMarkBadges() {
  const kinds = marksView.kindsByRef();
  for (const li of el.log.querySelectorAll('[data-testid="chat-message"]')) {
    const kind = li.dataset.seq ? kinds.get(Number(li.dataset.seq)) : undefined;
    if (kind) li.dataset.marked = kind;
    else delete li.dataset.marked;
  }
}

function jumpToSeq(seq) {
  const li = el.log.querySelector(`[data-seq="${Number(seq)}"]`);
  if (!li) return;
  li.scrollIntoView({ block: "center", behavior: "smooth" });
  li.classList.remove("flash");
  void li.offsetWidth; // restart the animation
  li.classList.add("flash");
}

/** Items seen only in an update (a reload after one was closed): their text from the journey. */
function fillUnknownItems() {
  if (!model.stubs.size || journeyAsked) return;
  journeyAsked = true;
  apiGet(`/api/rooms/${encodeURIComponent(pairId)}/journey`, token)
    .then((journey) => {
      model.fillItems(Array.isArray(journey.items) ? journey.items : []);
      renderSession();
    })
    .catch(() => {
      /* they stay listed as "an item from an earlier session" */
    });
}

const FRAME_WHAT = {
  goal: "The goal",
  item: "The new item",
  item_update: "The change to the item",
  mark: "The key moment",
  record: "The off-the-record change",
};

// ---- connection state ----------------------------------------------------------------------

const STATE_LABEL = {
  connecting: "Connecting…",
  live: "Live",
  reconnecting: "Reconnecting…",
  ended: "Session ended",
};

function setConnState(state, label = STATE_LABEL[state]) {
  el.conn.dataset.state = state;
  el.connLabel.textContent = label;
  el.body.dataset.state = state;
  const live = state === "live";
  el.endSession.disabled = !live || ended;
  el.startCall.disabled = !live || ended;
  el.chatHint.textContent =
    state === "reconnecting" || (state === "connecting" && client.everLive)
      ? "Offline: new messages wait and are sent when you are back."
      : "";
}

client.addEventListener("state", (ev) => {
  const { state, retryInMs } = ev.detail;
  if (ended) return;
  if (state === "failed") {
    setConnState("ended", "Disconnected");
    return;
  }
  if (state === "ended") {
    markEnded();
    return;
  }
  if (state === "reconnecting" && retryInMs >= 2000 && navigator.onLine !== false) {
    setConnState("reconnecting", `Reconnecting in ${Math.round(retryInMs / 1000)} s…`);
  } else if (state === "reconnecting" && navigator.onLine === false) {
    setConnState("reconnecting", "Offline · waiting for the network…");
  } else if (state === "connecting" && retryInMs) {
    setConnState("connecting", "Can't reach the server · retrying…");
  } else {
    setConnState(state);
  }
});

// ---- errors and notices ----------------------------------------------------------------------

let errorKind = null; // "fatal" | "media" | null

function showError(message, { action = null, kind = "fatal" } = {}) {
  errorKind = kind;
  el.error.dataset.kind = kind;
  el.error.replaceChildren(h("span", { class: "banner-text" }, message));
  if (action) el.error.append(action);
  if (kind !== "fatal") {
    const close = h(
      "button",
      { type: "button", class: "banner-close", "aria-label": "Dismiss this message" },
      "×",
    );
    close.addEventListener("click", () => clearError());
    el.error.append(close);
  }
  el.error.hidden = false;
}

function clearError(kind = null) {
  if (kind && errorKind !== kind) return;
  errorKind = null;
  el.error.hidden = true;
  el.error.replaceChildren();
}

function showNotice(message, ms = 6000) {
  el.notice.textContent = message;
  el.notice.hidden = false;
  if (noticeTimer) clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => {
    el.notice.hidden = true;
  }, ms);
}

client.addEventListener("fatal", (ev) => {
  const { code, message } = ev.detail;
  fatal = true;
  call.endLocal();
  setInputsEnabled(false);
  if (!client.everLive) el.body.classList.add("fatal-only");
  if (code === 4409) {
    const useHere = h(
      "button",
      { type: "button", class: "btn btn-small btn-light" },
      "Use this tab instead",
    );
    useHere.addEventListener("click", () => {
      fatal = false;
      clearError();
      setInputsEnabled(true);
      client.restart();
    });
    showError(message, { action: useHere });
  } else {
    showError(message);
  }
});

// ---- members and presence ------------------------------------------------------------------

function initials(name) {
  return (name || "?")
    .split(/\s+/)
    .filter(Boolean)
    .slice(0, 2)
    .map((w) => w[0].toUpperCase())
    .join("");
}

function renderMembers() {
  if (!me || !peer) return;
  el.meName.textContent = me.name;
  el.meRole.textContent = roleLabel(me.role);
  el.meAvatar.textContent = initials(me.name);
  el.meAvatar.dataset.role = me.role;
  el.peerName.textContent = peer.name;
  el.peerRole.textContent = roleLabel(peer.role);
  el.peerAvatar.replaceChildren(initials(peer.name), h("span", { class: "presence-dot" }));
  el.peerAvatar.dataset.role = peer.role;
  el.stageAvatar.textContent = initials(peer.name);
  el.stageAvatar.dataset.role = peer.role;
  el.typingText.textContent = `${peer.name} is typing…`;
  document.title = `${peer.name} · Menteo`;
}

function setPeerOnline(online, { joinedNow = false } = {}) {
  peerOnline = online;
  el.peerCard.dataset.state = online ? "online" : "offline";
  el.peerStatus.textContent = online ? "online" : "offline";
  el.peerCard.setAttribute(
    "aria-label",
    peer ? `${peer.name}, ${roleLabel(peer.role)}, ${online ? "online" : "offline"}` : "",
  );
  if (!online) {
    showPeerTyping(false);
    notes.peerLeft();
  } else if (joinedNow) {
    notes.peerJoined();
  }
  call.setPeerOnline(online, { joinedNow });
  renderCall();
}

// ---- chat ------------------------------------------------------------------------------------

function statusNode(status) {
  return status === "sending"
    ? h("span", { class: "msg-status" }, h("span", { class: "sr-only" }, "Status: "), "Sending…")
    : h("span", { class: "msg-status" }, h("span", { class: "sr-only" }, "Status: "), "Delivered");
}

const OFF_TAG = () => h("span", { class: "msg-off" }, "off the record");

function messageEl({ id, text, from, ts, seq, status, mine, off = false }) {
  const author = mine ? "You" : peer && from === peer.id ? peer.name : "Member";
  const li = h(
    "li",
    {
      class: `msg ${mine ? "mine" : "theirs"}${off ? " off" : ""}`,
      "data-testid": "chat-message",
      "data-status": status,
      "data-id": id,
    },
    h(
      "div",
      { class: "msg-meta" },
      h("span", { class: "msg-author" }, author),
      h("time", { class: "msg-time" }, ts ? formatTime(ts) : ""),
      off ? OFF_TAG() : null,
      mine ? statusNode(status) : null,
      // Nothing said off the record may be copied into a key moment.
      off
        ? null
        : markButton(
            (kind, source) => sendAcked(markFrame(kind, source)),
            () => ({ text, seq: li.dataset.seq ? Number(li.dataset.seq) : null }),
          ),
    ),
    h("p", { class: "msg-text" }, text),
  );
  if (seq) li.dataset.seq = String(seq);
  return li;
}

/**
 * Where a log line sits: its seq, or for a line without one (said off the record) just after
 * the last seq delivered when it came. Own chats still sending have none: they stay at the end.
 */
function positionOf(node) {
  if (node.dataset.seq) return Number(node.dataset.seq);
  if (node.dataset.after) return Number(node.dataset.after) + 0.5;
  return NaN;
}

/** Put an element at its position: after the last element placed lower. */
function placeAt(li, pos) {
  let after = null;
  for (let node = el.log.lastElementChild; node; node = node.previousElementSibling) {
    if (node === li) continue;
    if (positionOf(node) < pos) {
      after = node;
      break;
    }
  }
  const before = after ? after.nextElementSibling : el.log.firstElementChild;
  if (before !== li) el.log.insertBefore(li, before);
}

function placeBySeq(li, seq) {
  li.dataset.seq = String(seq);
  placeAt(li, seq);
}

/** A line said off the record: placed after everything delivered so far, never by seq. */
function placeOffRecord(li) {
  delete li.dataset.seq;
  li.dataset.after = String(client.lastSeq);
  placeAt(li, client.lastSeq + 0.5);
}

function markDelivered(li, seq, ts) {
  li.dataset.status = "delivered";
  const meta = li.querySelector(".msg-status");
  if (meta) meta.replaceWith(statusNode("delivered"));
  if (ts) li.querySelector(".msg-time").textContent = formatTime(ts);
  placeBySeq(li, seq);
}

/** An own chat the server relayed off the record: delivered, kept nowhere. */
function markOffRecord(li, ts) {
  if (li.dataset.off === "true") return;
  li.dataset.status = "delivered";
  li.dataset.off = "true";
  li.classList.add("off");
  const meta = li.querySelector(".msg-status");
  if (meta) meta.replaceWith(statusNode("delivered"));
  if (!li.querySelector(".msg-off")) li.querySelector(".msg-time").after(OFF_TAG());
  const mark = li.querySelector(".mark-button");
  if (mark) mark.remove();
  if (ts) li.querySelector(".msg-time").textContent = formatTime(ts);
  placeOffRecord(li);
}

function onOffRecordChat(f) {
  const mine = me && f.from === me.id;
  const existing = mine ? own.get(f.id) : null;
  if (existing) {
    markOffRecord(existing, f.ts);
  } else if (!offSeen.has(f.id)) {
    offSeen.add(f.id);
    const li = messageEl({ ...f, status: "delivered", mine, off: true });
    li.dataset.off = "true";
    if (mine) own.set(f.id, li);
    placeOffRecord(li);
    if (!mine) showPeerTyping(false);
  }
  scrollLog(mine);
}

function scrollLog(force = false) {
  const log = el.log;
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  if (force || nearBottom) log.scrollTop = log.scrollHeight;
}

function addPending(id, text, { off = false } = {}) {
  const li = messageEl({ id, text, status: "sending", mine: true, off });
  own.set(id, li);
  el.log.append(li);
  scrollLog(true);
}

function systemLine(text, { seq = null, ts = null, kind = "presence" } = {}) {
  const li = h(
    "li",
    { class: `sys sys-${kind}` },
    h("span", {}, text),
    ts ? h("time", {}, formatTime(ts)) : null,
  );
  if (seq) placeBySeq(li, seq);
  else el.log.append(li);
  return li;
}

function nameOf(userId) {
  if (me && userId === me.id) return "You";
  return peer && userId === peer.id ? peer.name : "A member";
}

/** The log line of a record event, given the recording state before it. */
function recordLine(e, before) {
  const who = nameOf(e.by);
  if (e.state === "requested") return `${who} asked to go off the record`;
  if (e.state === "off") return `Off the record: ${who === "You" ? "you" : who} agreed. The chat from here is not kept.`;
  if (before.state === "requested") {
    return e.by === before.requestedBy
      ? `${who} withdrew the request to go off the record`
      : `${who} declined to go off the record`;
  }
  return `Back on the record: ${who === "You" ? "you" : who} turned recording on`;
}

const SESSION_KINDS = new Set(["goal", "item", "item_update", "mark", "record"]);

function onDurable(e) {
  const recordBefore = { ...model.record };
  model.applyEvent(e);
  if (SESSION_KINDS.has(e.t)) {
    if (e.t === "goal") {
      const who = nameOf(e.by);
      systemLine(e.text ? `${who} set the goal: ${e.text}` : `${who} cleared the goal`, { ...e, kind: "goal" });
    } else if (e.t === "record") {
      systemLine(recordLine(e, recordBefore), { ...e, kind: `record record-${e.state}` });
    } else if (e.t === "item_update") {
      fillUnknownItems();
    }
    renderSession();
    scrollLog();
    return;
  }
  if (e.t === "chat") {
    const mine = me && e.from === me.id;
    const existing = mine ? own.get(e.id) : null;
    if (existing) {
      markDelivered(existing, e.seq, e.ts);
    } else {
      const li = messageEl({ ...e, status: "delivered", mine });
      if (mine) own.set(e.id, li);
      placeBySeq(li, e.seq);
    }
    if (!mine && e.seq > client.head) showPeerTyping(false);
    scrollLog(mine);
  } else if (e.t === "presence") {
    const isPeer = peer && e.user.id === peer.id;
    if (isPeer) {
      const last = el.log.lastElementChild;
      if (
        e.state === "joined" &&
        last &&
        last.dataset.left === e.user.id &&
        Number(last.dataset.seq) === e.seq - 1
      ) {
        // A drop and a return in a row: one line, not two.
        last.firstChild.textContent = `${e.user.name} reconnected`;
        delete last.dataset.left;
        last.dataset.seq = String(e.seq);
      } else {
        const line = systemLine(`${e.user.name} ${e.state === "joined" ? "joined" : "left"}`, e);
        if (e.state === "left") line.dataset.left = e.user.id;
      }
      // Replayed events are history: welcome.peers told the state at the join.
      if (e.seq > client.head) setPeerOnline(e.state === "joined", { joinedNow: e.state === "joined" });
    }
    scrollLog();
  } else if (e.t === "ended") {
    const who = me && e.by === me.id ? "you" : peer && e.by === peer.id ? peer.name : "a member";
    systemLine(`Session ended by ${who}`, { ...e, kind: "ended" });
    scrollLog(true);
    markEnded();
  }
}

client.addEventListener("event", (ev) => onDurable(ev.detail));

client.addEventListener("ack", (ev) => {
  const { id, seq, t, off } = ev.detail;
  if (t !== "chat") {
    model.settle(id, seq);
    renderSession();
    return;
  }
  const li = own.get(id);
  if (!li) return;
  if (off) markOffRecord(li, null);
  else if (li.dataset.status !== "delivered") markDelivered(li, seq, null);
  else if (!li.dataset.seq && seq) placeBySeq(li, seq);
});

client.addEventListener("send-failed", (ev) => {
  const { id, t, message, reason } = ev.detail;
  if (t === "chat") {
    const li = own.get(id);
    if (!li) return;
    li.classList.add("failed");
    const status = li.querySelector(".msg-status");
    if (status) {
      status.textContent =
        reason === "record-on"
          ? "Not sent: recording is on again, and this was written off the record"
          : "Not sent: the server refused this message";
    }
    return;
  }
  model.fail(id);
  renderSession();
  showNotice(`${FRAME_WHAT[t] || "The change"} was not saved: ${message || "the server refused it"}.`, 9000);
});

client.addEventListener("orphans", (ev) => {
  // Frames unacked when the previous session ended: the stored ones belong to its transcript.
  for (const { id } of ev.detail.stored) {
    const li = own.get(id);
    if (li) {
      li.remove();
      own.delete(id);
    }
  }
  for (const { id, t, text, frame } of ev.detail.resend) {
    if (t === "chat") {
      if (!own.has(id)) addPending(id, text);
    } else {
      model.propose(id, frame);
    }
  }
  if (ev.detail.dropped.length) {
    showNotice("Some changes made as the last session ended (goal, key moments, off the record) were not saved.", 9000);
  }
  renderSession();
});

function sendChat() {
  if (ended || fatal) return;
  const text = el.input.value.replace(/\s+$/, "");
  if (!text.trim()) return;
  const id = client.sendChat(text);
  addPending(id, text, { off: client.unacked.get(id).off });
  el.input.value = "";
  autoGrow();
  setTyping(false);
  el.input.focus();
}

el.composer.addEventListener("submit", (ev) => {
  ev.preventDefault();
  sendChat();
});

el.input.addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
    ev.preventDefault();
    sendChat();
  }
});

function autoGrow() {
  el.input.style.height = "auto";
  el.input.style.height = `${Math.min(el.input.scrollHeight, 160)}px`;
}

function setTyping(on) {
  if (typingTimer) clearTimeout(typingTimer);
  typingTimer = null;
  if (on) typingTimer = setTimeout(() => setTyping(false), TYPING_IDLE_MS);
  if (on === typingOn) return;
  typingOn = on;
  client.send({ t: "typing", on });
}

el.input.addEventListener("input", () => {
  autoGrow();
  setTyping(el.input.value.trim().length > 0);
});
el.input.addEventListener("blur", () => setTyping(false));

function showPeerTyping(on) {
  if (peerTypingTimer) clearTimeout(peerTypingTimer);
  peerTypingTimer = null;
  el.typing.hidden = !on;
  if (on) peerTypingTimer = setTimeout(() => showPeerTyping(false), TYPING_SHOW_MAX_MS);
}

function setInputsEnabled(enabled) {
  el.input.disabled = !enabled;
  el.send.disabled = !enabled;
  notes.setReadOnly(!enabled);
  goalView.setEnabled(enabled);
  itemsView.setEnabled(enabled);
  recordView.setEnabled(enabled);
  for (const button of el.log.querySelectorAll(".mark-button")) button.disabled = !enabled;
  if (!enabled) closePicker();
}

// ---- live frames -----------------------------------------------------------------------------

client.addEventListener("frame", (ev) => {
  const f = ev.detail;
  switch (f.t) {
    case "typing":
      if (peer && f.from === peer.id) showPeerTyping(Boolean(f.on));
      break;
    case "chat":
      if (f.off === true) onOffRecordChat(f);
      break;
    case "notes":
    case "awareness":
      notes.onFrame(f);
      break;
    case "signal":
      if (peer && f.from === peer.id) call.onSignal(f.data);
      break;
    case "error":
      notes.onFrame(f);
      if (f.code !== "peer_absent") console.warn("server error", f.code, f.message);
      break;
    default:
      break;
  }
});

// ---- welcome ---------------------------------------------------------------------------------

function resetSessionView(message) {
  el.log.replaceChildren();
  own.clear();
  offSeen.clear();
  journeyAsked = false;
  closePicker();
  for (const { id, text, off } of client.pendingChats()) addPending(id, text, { off });
  notes.reset();
  if (message) systemLine(message, { kind: "ended" });
}

client.addEventListener("welcome", (ev) => {
  const { welcome, newSession, firstWelcome } = ev.detail;
  me = welcome.user;
  peer = welcome.members.find((m) => m.id !== me.id) || null;
  renderMembers();
  model.onWelcome(welcome);
  // Own frames still waiting for their ack (also after a reload) show as they will be.
  for (const p of client.pending()) {
    if (p.t !== "chat" && !model.pending.has(p.id)) model.propose(p.id, p.frame);
  }
  if (newSession && !firstWelcome) {
    resetSessionView("The previous session ended. This is a new session.");
    call.endLocal();
  }
  clearError("fatal");
  call.configure({ iceServers: welcome.ice_servers, polite: me.role === "mentee" });
  notes.onWelcome(welcome);
  setInputsEnabled(true);
  renderSession();
  const online = Boolean(peer && welcome.peers.some((p) => p.id === peer.id));
  setPeerOnline(online);
  typingOn = false;
  if (firstWelcome && call.wasInCall() && !newSession) {
    call.start(); // the page was reloaded during a call: bring it back, no click
  } else if (!firstWelcome) {
    call.onReconnected();
  }
  renderCall();
});

// ---- end of the session ----------------------------------------------------------------------

function markEnded() {
  if (ended) return;
  ended = true;
  setConnState("ended");
  client.forgetSession();
  client.stop();
  call.endLocal();
  setInputsEnabled(false);
  showPeerTyping(false);
  for (const li of own.values()) {
    if (li.dataset.status === "sending") li.classList.add("failed");
  }
  if (el.endDialog.open) el.endDialog.close();
  el.endedBanner.hidden = false;
  notes.peerLeft();
  setPeerOnline(false);
  renderCall();
  renderSession();
  scrollLog(true);
}

el.endSession.addEventListener("click", () => {
  el.endError.hidden = true;
  if (typeof el.endDialog.showModal === "function") el.endDialog.showModal();
  else el.endDialog.setAttribute("open", "");
});

el.confirmEnd.addEventListener("click", () => {
  if (!client.send({ t: "end" })) {
    el.endError.textContent = "You are offline right now. Try again when the connection is back.";
    el.endError.hidden = false;
    return;
  }
  el.confirmEnd.disabled = true;
  el.confirmEnd.textContent = "Ending…";
});

el.newSession.addEventListener("click", () => {
  ended = false;
  el.endedBanner.hidden = true;
  el.confirmEnd.disabled = false;
  el.confirmEnd.textContent = "End session";
  resetSessionView(null);
  setConnState("connecting");
  client.restart({ fresh: true });
});

// ---- call UI ---------------------------------------------------------------------------------

function renderCall() {
  const status = call.status;
  el.callPanel.dataset.call = status;
  const inCall = call.active;
  el.startCall.hidden = inCall;
  el.hangUp.hidden = !inCall;
  el.startCall.disabled = ended || fatal || client.state !== "live";
  el.mic.disabled = !inCall || !call.hasAudio;
  el.camera.disabled = !inCall || !call.hasVideo;
  el.share.disabled = !inCall || !call.peer;
  const micOn = call.micOn && call.hasAudio;
  el.mic.dataset.state = micOn ? "on" : "off";
  el.mic.setAttribute("aria-pressed", String(!call.micOn));
  el.mic.querySelector(".ctl-label").textContent = call.micOn ? "Mute" : "Unmute";
  el.mic.setAttribute("aria-label", call.micOn ? "Mute microphone" : "Unmute microphone");
  const camOn = call.cameraOn && call.hasVideo;
  el.camera.dataset.state = camOn ? "on" : "off";
  el.camera.setAttribute("aria-pressed", String(!call.cameraOn));
  el.camera.querySelector(".ctl-label").textContent = call.cameraOn ? "Camera off" : "Camera on";
  el.camera.setAttribute("aria-label", call.cameraOn ? "Turn camera off" : "Turn camera on");
  el.share.setAttribute("aria-pressed", String(call.sharing));
  el.share.dataset.state = call.sharing ? "on" : "off";
  el.share.querySelector(".ctl-label").textContent = call.sharing ? "Stop sharing" : "Share screen";
  el.pipOff.hidden = !inCall || camOn || call.sharing;
  el.callPanel.classList.toggle("has-local", inCall && Boolean(call.localStream));
  const peerName = peer ? peer.name : "the other member";
  let title = "";
  let sub = "";
  if (ended) {
    title = "The session has ended";
    sub = "";
  } else if (!inCall) {
    title = peerOnline ? `${peerName} is here` : `Waiting for ${peerName}`;
    sub = peerOnline
      ? "Start a call: it opens on both sides, no need for them to click."
      : "You can chat and write notes meanwhile. Start a call once they are here.";
  } else if (status === "waiting") {
    title = `Waiting for ${peerName}…`;
    sub = "The call connects by itself when they are back.";
  } else if (status === "connecting") {
    title = `Connecting to ${peerName}…`;
    sub = "";
  }
  el.stageTitle.textContent = title;
  el.stageSub.textContent = sub;
  el.stageOverlay.hidden = status === "connected";
}

call.addEventListener("change", renderCall);
call.addEventListener("media", renderCall);
call.addEventListener("media-error", (ev) => {
  if (errorKind !== "fatal") showError(ev.detail.message, { kind: "media" });
});
call.addEventListener("notice", (ev) => showNotice(ev.detail.message));
call.addEventListener("remote-muted", () => {
  el.unmute.hidden = false;
});
el.unmute.addEventListener("click", () => {
  call.unmuteRemote();
  el.unmute.hidden = true;
});

el.startCall.addEventListener("click", () => {
  clearError("media");
  call.start();
});
el.hangUp.addEventListener("click", () => call.hangUp());
el.mic.addEventListener("click", () => call.toggleMic());
el.camera.addEventListener("click", () => call.toggleCamera());
el.share.addEventListener("click", () => call.toggleScreen());

// ---- start -----------------------------------------------------------------------------------

function boot() {
  const review = `/rooms/${encodeURIComponent(pairId)}/sessions${fragmentWithToken(token)}`;
  el.reviewLink.href = review;
  el.endedReview.href = review;
  if (!pairId || !token) {
    fatal = true;
    el.body.classList.add("fatal-only");
    setConnState("ended", "Not connected");
    setInputsEnabled(false);
    showError(
      "This link is incomplete: it needs the room and a #token=… part. Open the full link you were given.",
    );
    return;
  }
  // Chats typed before a reload that were never acknowledged: shown as sending, sent again.
  for (const { id, text, off } of client.pendingChats()) addPending(id, text, { off });
  renderSession();
  setConnState("connecting");
  renderCall();
  client.start();
}

// For tests and diagnostics (the client holds the token, as this tab's sessionStorage does).
window.menteo = { client, call, notes, model, callStats: () => call.stats() };

boot();
