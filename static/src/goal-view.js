// The session goal in the room's header: shown to both members, edited in place by either one
// (a click on it opens the field, Enter saves, Escape cancels).
import { MAX_GOAL, truncate } from "./session-model.js";

export class GoalView {
  /**
   * @param {object} opts
   * @param {import("./session-model.js").SessionModel} opts.model
   * @param {(frame: object) => void} opts.send  puts an acked frame in the outbox
   * @param {HTMLElement} opts.display  [data-testid=session-goal]
   * @param {HTMLFormElement} opts.form
   * @param {HTMLInputElement} opts.input  [data-testid=goal-input]
   */
  constructor({ model, send, display, form, input }) {
    this.model = model;
    this.send = send;
    this.display = display;
    this.form = form;
    this.input = input;
    this.enabled = true;
    display.addEventListener("click", () => this.edit());
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.save();
    });
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        ev.preventDefault();
        this.close();
      }
    });
    input.addEventListener("blur", () => {
      // Leaving the field unchanged closes it; a change waits for Enter (or Escape).
      if (!this.form.hidden && this.input.value.trim() === (this.model.goalView().text || "")) {
        this.close();
      }
    });
  }

  get editing() {
    return !this.form.hidden;
  }

  edit() {
    if (!this.enabled) return;
    this.input.value = this.model.goalView().text || "";
    this.form.hidden = false;
    this.display.hidden = true;
    this.input.focus();
    this.input.select();
  }

  close() {
    this.form.hidden = true;
    this.display.hidden = false;
  }

  save() {
    const text = truncate(this.input.value.trim(), MAX_GOAL);
    if (text !== (this.model.goalView().text || "")) this.send({ t: "goal", text });
    this.close();
    this.display.focus();
  }

  setEnabled(enabled) {
    this.enabled = enabled;
    this.display.disabled = !enabled;
    if (!enabled) this.close();
  }

  render() {
    const { text, pending } = this.model.goalView();
    this.display.textContent = text || "";
    if (text) delete this.display.dataset.empty;
    else this.display.dataset.empty = "";
    this.display.dataset.pending = String(pending);
    this.display.title = text ? "Click to change the goal" : "Click to set the goal";
    this.display.setAttribute(
      "aria-label",
      text ? `Session goal: ${text}. Change it` : "Set a goal for this session",
    );
  }
}
