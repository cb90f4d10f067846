// The room page: wires the wire client, the chat, the notes and the call to the DOM.
import { Call } from "./call.js";
import { $, formatTime, fragmentWithToken, h, roleLabel } from "./common.js";
import { Notes } from "./notes.js";
import { RoomClient, pageStorage, tokenFromFragment } from "./protocol.js";

const TYPING_IDLE_MS = 2500; // stop "typing" after this long without a keystroke
const TYPING_SHOW_MAX_MS = 8000; // hide the other's indicator if no "off" comes

const pairId = decodeURIComponent(window.location.pathname.split("/")[2] || "");
const token = tokenFromFragment();

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
};

const storage = pageStorage(`menteo:room:${pairId}`);
const client = new RoomClient({ pairId, token, storage });
const notes = new Notes({ parent: el.notesHost, status: el.notesStatus, client, storage });
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

function messageEl({ id, text, from, ts, seq, status, mine }) {
  const author = mine ? "You" : peer && from === peer.id ? peer.name : "Member";
  const li = h(
    "li",
    {
      class: `msg ${mine ? "mine" : "theirs"}`,
      "data-testid": "chat-message",
      "data-status": status,
      "data-id": id,
    },
    h(
      "div",
      { class: "msg-meta" },
      h("span", { class: "msg-author" }, author),
      h("time", { class: "msg-time" }, ts ? formatTime(ts) : ""),
      mine ? statusNode(status) : null,
    ),
    h("p", { class: "msg-text" }, text),
  );
  if (seq) li.dataset.seq = String(seq);
  return li;
}

/** Put an element with a seq at its place: after the last element with a lower seq. */
function placeBySeq(li, seq) {
  li.dataset.seq = String(seq);
  let after = null;
  for (let node = el.log.lastElementChild; node; node = node.previousElementSibling) {
    if (node === li) continue;
    const s = Number(node.dataset.seq);
    if (node.dataset.seq && s < seq) {
      after = node;
      break;
    }
  }
  const before = after ? after.nextElementSibling : el.log.firstElementChild;
  if (before !== li) el.log.insertBefore(li, before);
}

function markDelivered(li, seq, ts) {
  li.dataset.status = "delivered";
  const meta = li.querySelector(".msg-status");
  if (meta) meta.replaceWith(statusNode("delivered"));
  if (ts) li.querySelector(".msg-time").textContent = formatTime(ts);
  placeBySeq(li, seq);
}

function scrollLog(force = false) {
  const log = el.log;
  const nearBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 120;
  if (force || nearBottom) log.scrollTop = log.scrollHeight;
}

function addPending(id, text) {
  const li = messageEl({ id, text, status: "sending", mine: true });
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

function onDurable(e) {
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
  const li = own.get(ev.detail.id);
  if (li && li.dataset.status !== "delivered") markDelivered(li, ev.detail.seq, null);
  else if (li && !li.dataset.seq) placeBySeq(li, ev.detail.seq);
});

client.addEventListener("chat-failed", (ev) => {
  const li = own.get(ev.detail.id);
  if (!li) return;
  li.classList.add("failed");
  const status = li.querySelector(".msg-status");
  if (status) status.textContent = "Not sent: the server refused this message";
});

client.addEventListener("orphans", (ev) => {
  // Chats unacked when the previous session ended: the stored ones belong to its transcript.
  for (const { id } of ev.detail.stored) {
    const li = own.get(id);
    if (li) {
      li.remove();
      own.delete(id);
    }
  }
  for (const { id, text } of ev.detail.resend) {
    if (!own.has(id)) addPending(id, text);
  }
});

function sendChat() {
  if (ended || fatal) return;
  const text = el.input.value.replace(/\s+$/, "");
  if (!text.trim()) return;
  const id = client.sendChat(text);
  addPending(id, text);
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
}

// ---- live frames -----------------------------------------------------------------------------

client.addEventListener("frame", (ev) => {
  const f = ev.detail;
  switch (f.t) {
    case "typing":
      if (peer && f.from === peer.id) showPeerTyping(Boolean(f.on));
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
  for (const [id, text] of client.unacked) addPending(id, text);
  notes.reset();
  if (message) systemLine(message, { kind: "ended" });
}

client.addEventListener("welcome", (ev) => {
  const { welcome, newSession, firstWelcome } = ev.detail;
  me = welcome.user;
  peer = welcome.members.find((m) => m.id !== me.id) || null;
  renderMembers();
  if (newSession && !firstWelcome) {
    resetSessionView("The previous session ended. This is a new session.");
    call.endLocal();
  }
  clearError("fatal");
  call.configure({ iceServers: welcome.ice_servers, polite: me.role === "mentee" });
  notes.onWelcome(welcome);
  setInputsEnabled(true);
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
  for (const [id, text] of client.unacked) addPending(id, text);
  setConnState("connecting");
  renderCall();
  client.start();
}

// For tests and diagnostics (no secrets: the token is already in the page's URL).
window.menteo = { client, call, notes, callStats: () => call.stats() };

boot();
