// Shared notes: a Y.Doc with one Y.Text "notes", edited in CodeMirror 6 through
// y-codemirror.next, with the other member's cursor and name carried by Yjs awareness.
import * as Y from "yjs";
import {
  Awareness,
  applyAwarenessUpdate,
  encodeAwarenessUpdate,
  removeAwarenessStates,
} from "y-protocols/awareness";
import { yCollab, yUndoManagerKeymap } from "y-codemirror.next";
import { remoteCursors } from "./cursors.js";
import { NotesSync, REMOTE } from "./notes-sync.js";
import { Compartment, EditorState } from "@codemirror/state";
import { EditorView, drawSelection, keymap } from "@codemirror/view";
import { defaultKeymap, insertNewline } from "@codemirror/commands";
import { HighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { markdown } from "@codemirror/lang-markdown";
import { tags } from "@lezer/highlight";

const AWARENESS_FLUSH_MS = 120;
const SAVE_MS = 400;

const COLORS = {
  mentor: { color: "#2563eb", colorLight: "#2563eb33" },
  mentee: { color: "#c2410c", colorLight: "#c2410c33" },
};

function toBase64(bytes) {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

function fromBase64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

// Markdown in the editor: what you type is what is stored (no auto-continued list markers),
// lightly styled so headings, emphasis, code and links stand out.
const notesHighlight = HighlightStyle.define([
  { tag: tags.heading1, fontWeight: "700", fontSize: "1.25em" },
  { tag: tags.heading2, fontWeight: "700", fontSize: "1.12em" },
  { tag: [tags.heading3, tags.heading4, tags.heading5, tags.heading6], fontWeight: "700" },
  { tag: tags.strong, fontWeight: "700" },
  { tag: tags.emphasis, fontStyle: "italic" },
  { tag: tags.strikethrough, textDecoration: "line-through" },
  { tag: tags.link, color: "var(--accent)", textDecoration: "underline" },
  { tag: tags.url, color: "var(--accent)" },
  { tag: tags.monospace, color: "#b42318" },
  { tag: [tags.processingInstruction, tags.meta], color: "var(--muted)" },
  { tag: tags.quote, color: "#475467", fontStyle: "italic" },
]);

const editorTheme = EditorView.theme({
  "&": { height: "100%", flex: "1", minHeight: "0", fontSize: "15px", backgroundColor: "transparent" },
  "&.cm-focused": { outline: "none" },
  ".cm-scroller": {
    fontFamily: "var(--font-mono)",
    lineHeight: "1.6",
    overflow: "auto",
  },
  ".cm-content": { padding: "20px 16px 14px", caretColor: "var(--accent)" },
  ".cm-placeholder": { color: "var(--muted)" },
});

export class Notes {
  /**
   * @param {{parent: HTMLElement, status?: HTMLElement | null,
   *   client: import("./protocol.js").RoomClient, storage: any}} opts
   * `status` shows what the wire side has to say (not saved yet, refused).
   */
  constructor({ parent, status = null, client, storage, onLine = null }) {
    this.parent = parent;
    // The editor lives in a shadow root: CodeMirror then puts its styles in a constructed
    // (adopted) style sheet, which a Content-Security-Policy without 'unsafe-inline' allows,
    // instead of a <style> element, which it blocks.
    this.root = parent.shadowRoot || (parent.attachShadow ? parent.attachShadow({ mode: "open" }) : parent);
    this.onLine = onLine; // (text of the line the cursor is on) => void
    this.statusEl = status;
    this.client = client;
    this.storage = storage;
    this.sessionId = null;
    this.doc = null;
    this.sync = null;
    this.awareness = null;
    this.view = null;
    this.me = null;
    this.editable = new Compartment();
    this.readOnly = false;
    this.awarenessDirty = false;
    this.awarenessTimer = null;
    this.saveTimer = null;
  }

  /** Build a fresh document (and editor) for a session, restoring a saved copy if any. */
  _build(sessionId) {
    this._destroy();
    this.sessionId = sessionId;
    const doc = new Y.Doc();
    const saved = this.storage ? this.storage.load() : null;
    if (saved && saved.notesSession === sessionId && typeof saved.notes === "string") {
      try {
        Y.applyUpdate(doc, fromBase64(saved.notes), REMOTE);
      } catch {
        /* a damaged copy: the welcome state is the truth */
      }
    }
    const ytext = doc.getText("notes");
    const awareness = new Awareness(doc);
    if (this.me) {
      const colors = COLORS[this.me.role] || COLORS.mentor;
      awareness.setLocalStateField("user", { name: this.me.name, ...colors });
    }
    doc.on("update", () => this._scheduleSave());
    const sync = new NotesSync({ doc, send: (frame) => this.client.send(frame) });
    sync.addEventListener("status", (ev) => this._showStatus(ev.detail));
    awareness.on("update", (_changes, origin) => {
      if (origin !== "local") return;
      this.awarenessDirty = true;
      if (!this.awarenessTimer) {
        this.awarenessTimer = setTimeout(() => this._flushAwareness(), AWARENESS_FLUSH_MS);
      }
    });
    const undoManager = new Y.UndoManager(ytext);
    const state = EditorState.create({
      doc: ytext.toString(),
      extensions: [
        keymap.of([{ key: "Enter", run: insertNewline }, ...yUndoManagerKeymap, ...defaultKeymap]),
        drawSelection(),
        EditorView.lineWrapping,
        markdown({ addKeymap: false }),
        syntaxHighlighting(notesHighlight),
        // The empty-notes hint is CSS on the host, so the editable text stays exactly the notes.
        EditorView.updateListener.of((u) => {
          if (u.docChanged) this._markEmpty(u.state.doc.length === 0);
          if (this.onLine && (u.selectionSet || u.docChanged || u.focusChanged)) {
            this.onLine(u.state.doc.lineAt(u.state.selection.main.head).text);
          }
        }),
        editorTheme,
        this.editable.of(EditorView.editable.of(!this.readOnly)),
        EditorView.contentAttributes.of({
          "data-testid": "notes-editor",
          "aria-label": "Shared notes, Markdown",
          "aria-multiline": "true",
          role: "textbox",
        }),
        // Sync and undo from y-codemirror.next; the other's cursor from ./cursors.js.
        yCollab(ytext, null, { undoManager }),
        remoteCursors(ytext, awareness),
      ],
    });
    this.view = new EditorView({ state, parent: this.root });
    this._markEmpty(state.doc.length === 0);
    this.doc = doc;
    this.sync = sync;
    this.ytext = ytext;
    this.awareness = awareness;
  }

  _markEmpty(empty) {
    this.parent.dataset.empty = String(empty);
  }

  _showStatus({ state, message }) {
    const el = this.statusEl;
    if (!el) return;
    el.dataset.state = state;
    el.replaceChildren();
    el.hidden = !message;
    if (!message) return;
    el.append(document.createTextNode(message));
    if (state === "rejected") {
      const close = document.createElement("button");
      close.type = "button";
      close.className = "banner-close";
      close.setAttribute("aria-label", "Dismiss this message");
      close.textContent = "×";
      close.addEventListener("click", () => this._showStatus({ state: "ok", message: "" }));
      el.append(close);
    }
  }

  _destroy() {
    for (const t of ["awarenessTimer", "saveTimer"]) {
      if (this[t]) clearTimeout(this[t]);
      this[t] = null;
    }
    if (this.sync) this.sync.destroy();
    if (this.view) this.view.destroy();
    if (this.awareness) this.awareness.destroy();
    if (this.doc) this.doc.destroy();
    this.view = this.awareness = this.doc = this.sync = null;
    this.root.replaceChildren();
    this._showStatus({ state: "ok", message: "" });
  }

  _flushAwareness() {
    this.awarenessTimer = null;
    if (!this.awarenessDirty || !this.awareness) return;
    this.awarenessDirty = false;
    this._sendOwnAwareness();
  }

  _sendOwnAwareness() {
    if (!this.awareness || !this.doc) return;
    const u = encodeAwarenessUpdate(this.awareness, [this.doc.clientID]);
    this.client.send({ t: "awareness", u });
  }

  _scheduleSave() {
    if (!this.storage || this.saveTimer) return;
    this.saveTimer = setTimeout(() => {
      this.saveTimer = null;
      if (!this.doc) return;
      this.storage.save({
        notesSession: this.sessionId,
        notes: toBase64(Y.encodeStateAsUpdate(this.doc)),
      });
    }, SAVE_MS);
  }

  /** On every welcome: a new document for a new session, else send what the server lacks. */
  onWelcome(welcome) {
    this.me = welcome.user;
    const serverState = welcome.notes instanceof Uint8Array ? welcome.notes : new Uint8Array();
    if (!this.doc || this.sessionId !== welcome.session_id) this._build(welcome.session_id);
    else if (this.awareness) {
      const colors = COLORS[this.me.role] || COLORS.mentor;
      this.awareness.setLocalStateField("user", { name: this.me.name, ...colors });
    }
    // What the local document holds that the welcome's state lacks (offline edits, updates
    // that never reached the server) goes out as one update; then the server's state is taken.
    this.sync.onWelcome(serverState);
    this._sendOwnAwareness();
  }

  onFrame(frame) {
    if (!this.doc) return;
    if (frame.t === "awareness" && frame.u instanceof Uint8Array) {
      try {
        applyAwarenessUpdate(this.awareness, frame.u, REMOTE);
      } catch (err) {
        console.warn("notes: bad awareness update", err);
      }
    } else {
      this.sync.onFrame(frame);
    }
  }

  /** The other member is here (again): show them our cursor. */
  peerJoined() {
    this._sendOwnAwareness();
  }

  /** The other member left: drop their cursor. */
  peerLeft() {
    if (!this.awareness || !this.doc) return;
    const others = Array.from(this.awareness.getStates().keys()).filter(
      (id) => id !== this.doc.clientID,
    );
    if (others.length) removeAwarenessStates(this.awareness, others, REMOTE);
  }

  setReadOnly(readOnly) {
    this.readOnly = readOnly;
    if (this.view) {
      this.view.dispatch({
        effects: this.editable.reconfigure(EditorView.editable.of(!readOnly)),
      });
    }
  }

  /** Start over (a new session). */
  reset() {
    if (this.onLine) this.onLine("");
    this._destroy();
    this.sessionId = null;
  }

  text() {
    return this.ytext ? this.ytext.toString() : "";
  }
}
