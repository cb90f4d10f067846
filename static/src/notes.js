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
import { Compartment, EditorState } from "@codemirror/state";
import { EditorView, drawSelection, keymap } from "@codemirror/view";
import { defaultKeymap, insertNewline } from "@codemirror/commands";
import { HighlightStyle, syntaxHighlighting } from "@codemirror/language";
import { markdown } from "@codemirror/lang-markdown";
import { tags } from "@lezer/highlight";

const REMOTE = "remote";
// A local change goes out at once, unless one went out less than this long ago: then the
// changes are merged and sent together (at most ~25 notes frames a second, however fast
// anyone types, well under the server's rate limit).
const NOTES_FLUSH_MS = 40;
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
  "&": { height: "100%", fontSize: "15px", backgroundColor: "transparent" },
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
   * @param {{parent: HTMLElement, client: import("./protocol.js").RoomClient, storage: any}} opts
   */
  constructor({ parent, client, storage }) {
    this.parent = parent;
    this.client = client;
    this.storage = storage;
    this.sessionId = null;
    this.doc = null;
    this.awareness = null;
    this.view = null;
    this.me = null;
    this.editable = new Compartment();
    this.readOnly = false;
    this.pending = [];
    this.notesTimer = null;
    this.lastNotesSent = 0;
    this.awarenessDirty = false;
    this.awarenessTimer = null;
    this.saveTimer = null;
    this.resyncTimer = null;
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
    doc.on("update", (update, origin) => {
      this._scheduleSave();
      if (origin === REMOTE) return;
      this.pending.push(update);
      if (this.notesTimer) return;
      const wait = this.lastNotesSent + NOTES_FLUSH_MS - Date.now();
      if (wait <= 0) this._flushNotes();
      else this.notesTimer = setTimeout(() => this._flushNotes(), wait);
    });
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
    this.view = new EditorView({ state, parent: this.parent });
    this._markEmpty(state.doc.length === 0);
    this.doc = doc;
    this.ytext = ytext;
    this.awareness = awareness;
  }

  _markEmpty(empty) {
    this.parent.dataset.empty = String(empty);
  }

  _destroy() {
    for (const t of ["notesTimer", "awarenessTimer", "saveTimer", "resyncTimer"]) {
      if (this[t]) clearTimeout(this[t]);
      this[t] = null;
    }
    this.pending = [];
    if (this.view) this.view.destroy();
    if (this.awareness) this.awareness.destroy();
    if (this.doc) this.doc.destroy();
    this.view = this.awareness = this.doc = null;
    this.parent.replaceChildren();
  }

  _flushNotes() {
    this.notesTimer = null;
    if (!this.pending.length) return;
    this.lastNotesSent = Date.now();
    const update = this.pending.length === 1 ? this.pending[0] : Y.mergeUpdates(this.pending);
    this.pending = [];
    // Not live: dropped here, and sent again after the next welcome as part of the diff.
    this.client.send({ t: "notes", u: update });
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
    // that never reached the server), as one update; then take the server's state.
    const server = new Y.Doc();
    let missing = null;
    try {
      Y.applyUpdate(server, serverState);
      missing = Y.encodeStateAsUpdate(this.doc, Y.encodeStateVector(server));
      Y.applyUpdate(this.doc, serverState, REMOTE);
    } catch (err) {
      console.warn("notes: bad welcome state", err);
    } finally {
      server.destroy();
    }
    // Local edits not flushed yet are part of `missing`.
    if (this.notesTimer) clearTimeout(this.notesTimer);
    this.notesTimer = null;
    this.pending = [];
    if (missing && missing.length > 2) this.client.send({ t: "notes", u: missing });
    this._sendOwnAwareness();
  }

  onFrame(frame) {
    if (!this.doc) return;
    if (frame.t === "notes" && frame.u instanceof Uint8Array) {
      try {
        Y.applyUpdate(this.doc, frame.u, REMOTE);
      } catch (err) {
        console.warn("notes: bad update", err);
      }
    } else if (frame.t === "awareness" && frame.u instanceof Uint8Array) {
      try {
        applyAwarenessUpdate(this.awareness, frame.u, REMOTE);
      } catch (err) {
        console.warn("notes: bad awareness update", err);
      }
    } else if (frame.t === "error" && (frame.code === "rate_limited" || frame.code === "notes_rejected")) {
      // A notes frame may have been dropped: send our whole state once (idempotent).
      if (!this.resyncTimer) {
        this.resyncTimer = setTimeout(() => {
          this.resyncTimer = null;
          if (this.doc) this.client.send({ t: "notes", u: Y.encodeStateAsUpdate(this.doc) });
        }, 1000);
      }
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
    this._destroy();
    this.sessionId = null;
  }

  text() {
    return this.ytext ? this.ytext.toString() : "";
  }
}
