// The pair's action items in the room: "since last time" (open items from earlier sessions)
// first, then this session's, each one ticked off, reopened, dropped, given another owner or
// due date in place; and the form that adds one. Rows are kept by key and updated in place, so
// a select or date field being used is never rebuilt under the cursor.
import { formatDate, h } from "./common.js";
import { MAX_ITEM, dueOrNull, truncate } from "./session-model.js";

export class ItemsView {
  /**
   * @param {object} opts
   * @param {import("./session-model.js").SessionModel} opts.model
   * @param {(frame: object) => void} opts.send
   * @param {HTMLElement} opts.sinceList  <ul> of the items from earlier sessions
   * @param {HTMLElement} opts.sinceTitle its heading
   * @param {HTMLElement} opts.nowList    <ul> of this session's items
   * @param {HTMLElement} opts.nowTitle   its heading
   * @param {HTMLElement} opts.empty      shown when there is no item at all
   * @param {HTMLFormElement} opts.form   the add form (item-text, item-owner, item-due, item-add)
   */
  constructor({ model, send, sinceList, sinceTitle, nowList, nowTitle, empty, form }) {
    this.model = model;
    this.send = send;
    this.sinceList = sinceList;
    this.sinceTitle = sinceTitle;
    this.nowList = nowList;
    this.nowTitle = nowTitle;
    this.empty = empty;
    this.form = form;
    this.text = form.querySelector('[data-testid="item-text"]');
    this.owner = form.querySelector('[data-testid="item-owner"]');
    this.due = form.querySelector('[data-testid="item-due"]');
    this.add = form.querySelector('[data-testid="item-add"]');
    this.rows = new Map(); // key -> <li>
    this.membersKey = "";
    this.enabled = true;
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.addItem();
    });
  }

  /** Add the item written in the form (with its owner and due date). */
  addItem(text = this.text.value) {
    if (!this.enabled) return;
    const clean = truncate(text.trim(), MAX_ITEM);
    if (!clean) {
      this.text.focus();
      return;
    }
    this.send({
      t: "item",
      text: clean,
      owner: this.owner.value || this.defaultOwner(),
      due: dueOrNull(this.due.value),
    });
    this.text.value = "";
    this.due.value = "";
    this.text.focus();
  }

  /** Who an item belongs to unless chosen: the mentee, who is the one asked to act. */
  defaultOwner() {
    const members = this.model.members;
    const mentee = members.find((m) => m.role === "mentee");
    return (mentee || members[0] || { id: "" }).id;
  }

  setEnabled(enabled) {
    this.enabled = enabled;
    for (const control of this.form.elements) control.disabled = !enabled;
    for (const li of this.rows.values()) this._fillControls(li);
  }

  _memberOptions(select, value) {
    select.replaceChildren(
      ...this.model.members.map((m) => h("option", { value: m.id }, m.id === this.model.me ? `${m.name} (you)` : m.name)),
    );
    if (value) select.value = value;
  }

  _update(li, fields) {
    const id = li.dataset.itemId;
    if (!id || !this.enabled) return;
    this.send({ t: "item_update", item: id, ...fields });
  }

  _createRow() {
    const toggle = h("button", { type: "button", class: "item-check", "data-testid": "item-toggle" });
    const text = h("p", { class: "item-text" });
    const owner = h("select", { class: "item-owner-select", "data-testid": "item-set-owner", "aria-label": "Owner" });
    const due = h("input", { type: "date", class: "item-due-input", "data-testid": "item-set-due", "aria-label": "Due date" });
    const origin = h("span", { class: "item-origin" });
    const drop = h("button", { type: "button", class: "item-drop", "data-testid": "item-drop" }, "Drop");
    const li = h(
      "li",
      { class: "item", "data-testid": "item" },
      toggle,
      h("div", { class: "item-main" }, text, h("div", { class: "item-meta" }, owner, due, origin)),
      drop,
    );
    li._parts = { toggle, text, owner, due, origin, drop };
    toggle.addEventListener("click", () => {
      this._update(li, { state: li.dataset.state === "open" ? "done" : "open" });
    });
    drop.addEventListener("click", () => this._update(li, { state: "dropped" }));
    owner.addEventListener("change", () => {
      if (owner.value) this._update(li, { owner: owner.value });
    });
    due.addEventListener("change", () => {
      const value = dueOrNull(due.value);
      if (value !== (li._view.due ?? null)) this._update(li, { due: value });
    });
    return li;
  }

  _fillControls(li) {
    const view = li._view;
    if (!view) return;
    const { toggle, owner, due, drop } = li._parts;
    const editable = this.enabled && Boolean(view.id) && view.text !== null;
    toggle.disabled = !editable;
    owner.disabled = !editable;
    due.disabled = !editable;
    drop.disabled = !editable;
    drop.hidden = view.state !== "open";
  }

  _fill(li, view) {
    li._view = view;
    const { toggle, text, owner, due, origin } = li._parts;
    li.dataset.itemId = view.id || "";
    li.dataset.state = view.state;
    li.dataset.pending = String(view.pending);
    li.dataset.since = String(view.sinceLastTime);
    const label = view.text ?? "An item from an earlier session";
    text.textContent = label;
    const open = view.state === "open";
    toggle.textContent = view.state === "done" ? "✓" : view.state === "dropped" ? "–" : "";
    toggle.setAttribute("aria-pressed", String(!open));
    toggle.setAttribute("aria-label", open ? `Mark done: ${label}` : `Open again: ${label}`);
    toggle.title = open ? "Mark done" : "Open again";
    const membersKey = this.model.members.map((m) => m.id).join(",");
    if (li._membersKey !== membersKey) {
      this._memberOptions(owner, view.owner);
      li._membersKey = membersKey;
    }
    if (document.activeElement !== owner && view.owner) owner.value = view.owner;
    if (document.activeElement !== due) due.value = view.due || "";
    const bits = [];
    if (view.sinceLastTime && view.created_at) bits.push(`from ${formatDate(view.created_at)}`);
    if (view.state === "done") bits.push("done");
    if (view.state === "dropped") bits.push("dropped");
    if (view.pending) bits.push("saving…");
    origin.textContent = bits.join(" · ");
    this._fillControls(li);
  }

  /** Put `rows` into `list` in this order, moving only what is out of place. */
  static _arrange(list, rows) {
    rows.forEach((li, i) => {
      if (list.children[i] !== li) list.insertBefore(li, list.children[i] || null);
    });
    while (list.children.length > rows.length) list.lastElementChild.remove();
  }

  render() {
    const membersKey = this.model.members.map((m) => m.id).join(",");
    if (membersKey !== this.membersKey) {
      const chosen = this.owner.value;
      this._memberOptions(this.owner, chosen && membersKey.includes(chosen) ? chosen : this.defaultOwner());
      this.membersKey = membersKey;
    }
    const views = this.model.itemsView();
    const since = [];
    const now = [];
    const seen = new Set();
    for (const view of views) {
      let li = this.rows.get(view.key);
      if (!li) {
        li = this._createRow();
        this.rows.set(view.key, li);
      }
      this._fill(li, view);
      seen.add(view.key);
      (view.sinceLastTime ? since : now).push(li);
    }
    for (const [key, li] of this.rows) {
      if (!seen.has(key)) {
        li.remove();
        this.rows.delete(key);
      }
    }
    ItemsView._arrange(this.sinceList, since);
    ItemsView._arrange(this.nowList, now);
    this.sinceTitle.hidden = this.sinceList.hidden = since.length === 0;
    this.nowTitle.hidden = this.nowList.hidden = now.length === 0;
    this.empty.hidden = views.length > 0;
  }
}
