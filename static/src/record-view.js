// Off the record in the room: the toggle (ask / cancel / decline / back on), the banner while a
// request stands or the record is off (who asked, what it means) and the other member's
// "agree" button.
import { formatTime } from "./common.js";

const NOT_KEPT = "the chat is not kept: not saved, searched or exported. The notes are still saved.";

export class RecordView {
  /**
   * @param {object} opts
   * @param {import("./session-model.js").SessionModel} opts.model
   * @param {(frame: object) => void} opts.send
   * @param {HTMLButtonElement} opts.toggle  [data-testid=record-toggle]
   * @param {HTMLElement} opts.banner        [data-testid=record-banner]
   * @param {HTMLElement} opts.text          the banner's text
   * @param {HTMLButtonElement} opts.accept  [data-testid=record-accept]
   */
  constructor({ model, send, toggle, banner, text, accept }) {
    this.model = model;
    this.send = send;
    this.toggle = toggle;
    this.banner = banner;
    this.text = text;
    this.accept = accept;
    this.enabled = true;
    toggle.addEventListener("click", () => {
      if (!this.enabled) return;
      this.send({ t: "record", on: this.model.recordView().toggle.on });
    });
    accept.addEventListener("click", () => {
      if (!this.enabled || !this.model.recordView().canAccept) return;
      this.send({ t: "record", on: false }); // agreeing is asking too: the second "off"
    });
  }

  name(userId) {
    return userId === this.model.me ? "you" : this.model.memberName(userId);
  }

  setEnabled(enabled) {
    this.enabled = enabled;
    this.render();
  }

  /** The banner's sentence for a view of the recording state. */
  bannerText(view) {
    const peer = this.model.memberName(this.model.other(this.model.me));
    if (view.state === "requested") {
      return view.askedByMe
        ? `You asked to go off the record. Waiting for ${peer} to agree. Off the record, ${NOT_KEPT}`
        : `${this.model.memberName(view.requestedBy)} asks to go off the record. If you agree, ${NOT_KEPT} Either of you can turn recording back on.`;
    }
    if (view.state === "off") {
      const since = view.since ? ` since ${formatTime(view.since)}` : "";
      const asked = view.requestedBy ? this.name(view.requestedBy) : "one of you";
      const agreed = view.agreedBy ? this.name(view.agreedBy) : "the other";
      return `Off the record${since} (asked by ${asked}, agreed by ${agreed}): ${NOT_KEPT}`;
    }
    return "";
  }

  render() {
    const view = this.model.recordView();
    this.toggle.dataset.state = view.state;
    this.toggle.textContent = view.toggle.label;
    this.toggle.disabled = !this.enabled || view.busy;
    this.toggle.setAttribute("aria-pressed", String(view.state !== "on"));
    this.banner.dataset.state = view.state;
    this.banner.hidden = !view.banner;
    this.text.textContent = this.bannerText(view);
    this.accept.hidden = !view.canAccept;
    this.accept.disabled = !this.enabled || view.busy;
    document.body.dataset.record = view.state;
  }
}
