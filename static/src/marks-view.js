// Key moments in the room: the kind picker a chat message's mark button opens, and the list of
// the session's moments (a click on one brings its message into view).
import { formatTime, h } from "./common.js";
import { MARK_KINDS, MAX_MARK, truncate } from "./session-model.js";

/** The mark button of one chat message. `source()` gives {text, seq} when it is clicked. */
export function markButton(onPick, source) {
  const button = h(
    "button",
    {
      type: "button",
      class: "mark-button",
      "data-testid": "mark-button",
      "aria-label": "Mark as a key moment",
      "aria-haspopup": "true",
      "aria-expanded": "false",
      title: "Mark as a key moment",
    },
    "☆",
  );
  button.addEventListener("click", (ev) => {
    ev.stopPropagation();
    openPicker(button, (kind) => onPick(kind, source()));
  });
  return button;
}

let openOne = null; // {picker, button, close}

/** The kind picker next to `button`: one button per kind; Escape or a click elsewhere closes. */
function openPicker(button, onChoose) {
  const wasOpen = openOne && openOne.button === button;
  closePicker();
  if (wasOpen) return;
  const picker = h("div", { class: "mark-picker", role: "group", "aria-label": "Mark this message as" });
  for (const kind of MARK_KINDS) {
    const choice = h("button", { type: "button", class: `mark-choice kind-${kind}`, "data-kind": kind }, kind);
    choice.addEventListener("click", (ev) => {
      ev.stopPropagation();
      closePicker();
      onChoose(kind);
    });
    picker.append(choice);
  }
  const onKey = (ev) => {
    if (ev.key === "Escape") {
      closePicker();
      button.focus();
    }
  };
  const onOutside = (ev) => {
    if (!picker.contains(ev.target)) closePicker();
  };
  button.after(picker);
  button.setAttribute("aria-expanded", "true");
  document.addEventListener("keydown", onKey);
  document.addEventListener("click", onOutside);
  openOne = {
    button,
    close() {
      picker.remove();
      button.setAttribute("aria-expanded", "false");
      document.removeEventListener("keydown", onKey);
      document.removeEventListener("click", onOutside);
    },
  };
  picker.querySelector("button").focus();
}

export function closePicker() {
  if (openOne) openOne.close();
  openOne = null;
}

/** The mark frame for a message: its text (cut to the limit) and its seq as the ref. */
export function markFrame(kind, { text, seq }) {
  const clean = truncate((text || "").trim(), MAX_MARK) || kind;
  return { t: "mark", kind, text: clean, ref: Number.isInteger(seq) ? seq : null };
}

export class MarksView {
  /**
   * @param {object} opts
   * @param {import("./session-model.js").SessionModel} opts.model
   * @param {HTMLElement} opts.list   <ol> of the key moments
   * @param {HTMLElement} opts.empty  shown while there is none
   * @param {(seq: number) => void} opts.onJump  bring the message a moment points at into view
   */
  constructor({ model, list, empty, onJump }) {
    this.model = model;
    this.list = list;
    this.empty = empty;
    this.onJump = onJump;
  }

  render() {
    const marks = this.model.marksView();
    this.list.replaceChildren(
      ...marks.map((m) => {
        const who = m.by === this.model.me ? "you" : this.model.memberName(m.by);
        const li = h(
          "li",
          {
            class: `mark kind-${m.kind}`,
            "data-testid": "mark",
            "data-kind": m.kind,
            "data-pending": String(m.pending),
            "data-seq": m.seq ?? null,
          },
          h("span", { class: "mark-kind" }, m.kind),
          h("span", { class: "mark-text" }, m.text),
          h("span", { class: "mark-by" }, m.pending ? "saving…" : `${who}${m.ts ? ` · ${formatTime(m.ts)}` : ""}`),
        );
        if (Number.isInteger(m.ref)) {
          const jump = h("button", { type: "button", class: "mark-jump", "aria-label": "Show the message" }, "↪");
          jump.addEventListener("click", () => this.onJump(m.ref));
          li.append(jump);
        }
        return li;
      }),
    );
    this.empty.hidden = marks.length > 0;
  }

  /** The kind marked on each message seq (the latest mark pointing at it). */
  kindsByRef() {
    const kinds = new Map();
    for (const m of this.model.marksView()) if (Number.isInteger(m.ref)) kinds.set(m.ref, m.kind);
    return kinds;
  }
}
