// The other member's cursor and selection in the notes editor, from Yjs awareness.
// Our own cursor goes into the awareness state as Yjs relative positions (stable under
// concurrent edits). The other's caret (with their name) and selection are drawn on editor
// layers, outside the content element: the editable text (and its innerText) holds only the
// notes, identical on both sides.
import * as Y from "yjs";
import { Annotation, EditorSelection } from "@codemirror/state";
import { EditorView, RectangleMarker, ViewPlugin, layer } from "@codemirror/view";

const awarenessChanged = Annotation.define();
const SAFE_COLOR = /^#[0-9a-fA-F]{3,8}$/;

/** A coloured marker: a RectangleMarker plus a colour and, for a caret, a name label. */
class RemoteMarker {
  constructor(rect, color, name = null) {
    this.rect = rect;
    this.color = color;
    this.name = name;
  }

  draw() {
    const elt = this.rect.draw();
    this.style(elt);
    return elt;
  }

  update(elt, prev) {
    if (!this.rect.update(elt, prev.rect)) return false;
    this.style(elt);
    return true;
  }

  style(elt) {
    elt.style.setProperty("--caret", this.color);
    if (this.name === null) elt.removeAttribute("data-name");
    else elt.setAttribute("data-name", this.name);
  }

  eq(other) {
    return (
      other instanceof RemoteMarker &&
      this.rect.eq(other.rect) &&
      this.color === other.color &&
      this.name === other.name
    );
  }
}

function remoteRanges(view, ytext, awareness) {
  const doc = ytext.doc;
  const length = view.state.doc.length;
  const out = [];
  awareness.getStates().forEach((state, clientId) => {
    if (clientId === doc.clientID || !state || !state.cursor) return;
    let anchor;
    let head;
    try {
      anchor = Y.createAbsolutePositionFromRelativePosition(
        Y.createRelativePositionFromJSON(state.cursor.anchor),
        doc,
      );
      head = Y.createAbsolutePositionFromRelativePosition(
        Y.createRelativePositionFromJSON(state.cursor.head),
        doc,
      );
    } catch {
      return;
    }
    if (!anchor || !head || anchor.type !== ytext || head.type !== ytext) return;
    const user = state.user || {};
    out.push({
      anchor: Math.min(anchor.index, length),
      head: Math.min(head.index, length),
      color: SAFE_COLOR.test(user.color) ? user.color : "#6366f1",
      name: typeof user.name === "string" && user.name ? user.name.slice(0, 60) : "Member",
    });
  });
  return out;
}

function redraws(update) {
  return (
    update.docChanged ||
    update.viewportChanged ||
    update.geometryChanged ||
    update.transactions.some((t) => t.annotation(awarenessChanged))
  );
}

export function remoteCursors(ytext, awareness) {
  const doc = ytext.doc;

  // Publishes our selection and asks for a redraw when the other's awareness changes.
  const publisher = ViewPlugin.fromClass(
    class {
      constructor(view) {
        this.onChange = ({ added, updated, removed }) => {
          if (added.concat(updated, removed).some((id) => id !== doc.clientID)) {
            queueMicrotask(() => {
              if (!this.destroyed) view.dispatch({ annotations: awarenessChanged.of(true) });
            });
          }
        };
        awareness.on("change", this.onChange);
      }

      destroy() {
        this.destroyed = true;
        awareness.off("change", this.onChange);
      }

      update(update) {
        const local = awareness.getLocalState();
        if (local === null || !update.view.hasFocus) return;
        if (!update.selectionSet && !update.docChanged && !update.focusChanged) return;
        const sel = update.state.selection.main;
        const anchor = Y.createRelativePositionFromTypeIndex(ytext, sel.anchor);
        const head = Y.createRelativePositionFromTypeIndex(ytext, sel.head);
        const current = local.cursor;
        if (
          current &&
          Y.compareRelativePositions(Y.createRelativePositionFromJSON(current.anchor), anchor) &&
          Y.compareRelativePositions(Y.createRelativePositionFromJSON(current.head), head)
        ) {
          return;
        }
        awareness.setLocalStateField("cursor", { anchor, head });
      }
    },
  );

  const selections = layer({
    above: false,
    class: "cm-remoteSelectionLayer",
    update: redraws,
    markers(view) {
      const markers = [];
      for (const r of remoteRanges(view, ytext, awareness)) {
        if (r.anchor === r.head) continue;
        const range = EditorSelection.range(r.anchor, r.head);
        for (const rect of RectangleMarker.forRange(view, "cm-remote-selection", range)) {
          markers.push(new RemoteMarker(rect, r.color));
        }
      }
      return markers;
    },
  });

  const carets = layer({
    above: true,
    class: "cm-remoteCaretLayer",
    update: redraws,
    markers(view) {
      const markers = [];
      for (const r of remoteRanges(view, ytext, awareness)) {
        const cursor = EditorSelection.cursor(r.head);
        for (const rect of RectangleMarker.forRange(view, "cm-remote-caret", cursor)) {
          markers.push(new RemoteMarker(rect, r.color, r.name));
        }
      }
      return markers;
    },
  });

  const theme = EditorView.baseTheme({
    ".cm-remoteCaretLayer": { pointerEvents: "none" },
    ".cm-remote-selection": {
      backgroundColor: "color-mix(in srgb, var(--caret) 22%, transparent)",
    },
    ".cm-remote-caret": {
      borderLeft: "2px solid var(--caret)",
      marginLeft: "-1px",
    },
    ".cm-remote-caret::after": {
      content: "attr(data-name)",
      position: "absolute",
      left: "-2px",
      bottom: "100%",
      padding: "1px 5px",
      borderRadius: "4px 4px 4px 0",
      background: "var(--caret)",
      color: "#fff",
      fontFamily: "var(--font-sans, sans-serif)",
      fontSize: "11px",
      fontWeight: "600",
      lineHeight: "1.3",
      whiteSpace: "nowrap",
    },
  });

  return [publisher, selections, carets, theme];
}
