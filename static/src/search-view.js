// The search box of the sessions page: searches the pair's chat, notes, goals, items and key
// moments across every session (as you type, or on Enter) and lists the results; each one opens
// its session's transcript at that moment.
import { apiErrorText, apiGet, formatDateTime, formatTime, fragmentWithToken, h } from "./common.js";
import { highlightParts, queryWords } from "./describe.js";

const KIND_LABEL = { chat: "Chat", notes: "Notes", goal: "Goal", item: "Action item", mark: "Key moment" };
const TYPE_DELAY_MS = 300;
const MIN_CHARS = 2;

/** The transcript link of one result: at its seq, or at the notes for a notes result. */
export function resultHref(result, token) {
  const at = Number.isInteger(result.seq) ? `seq-${result.seq}` : result.kind === "notes" ? "notes" : null;
  return `/sessions/${encodeURIComponent(result.session_id)}${fragmentWithToken(token, at)}`;
}

export class SearchView {
  constructor({ pairId, token, form, input, results, status, sessions = [] }) {
    this.pairId = pairId;
    this.token = token;
    this.input = input;
    this.results = results;
    this.status = status;
    this.started = new Map(sessions.map((s) => [s.id, s.started_at]));
    this.asked = 0; // the number of the latest request: older answers are ignored
    this.timer = null;
    this.lastQuery = "";
    form.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.search(this.input.value, { now: true });
    });
    input.addEventListener("input", () => this.search(this.input.value));
    input.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape") {
        this.input.value = "";
        this.search("", { now: true });
      }
    });
    // the page serves the form disabled: an Enter before this script bound it would submit it
    // natively (a reload that drops the query)
    for (const el of form.elements) el.disabled = false;
  }

  search(raw, { now = false } = {}) {
    clearTimeout(this.timer);
    const q = raw.trim();
    if (!q) {
      this.asked++;
      this.lastQuery = "";
      this.results.replaceChildren();
      this.status.textContent = "";
      document.body.dataset.search = "idle";
      return;
    }
    if (!now && q.length < MIN_CHARS) return;
    if (!now && q === this.lastQuery) return;
    this.timer = setTimeout(() => this.run(q), now ? 0 : TYPE_DELAY_MS);
  }

  async run(q) {
    const ticket = ++this.asked;
    this.lastQuery = q;
    document.body.dataset.search = "loading";
    this.status.textContent = "Searching…";
    let body;
    try {
      body = await apiGet(
        `/api/rooms/${encodeURIComponent(this.pairId)}/search?q=${encodeURIComponent(q)}&limit=50`,
        this.token,
      );
    } catch (err) {
      if (ticket !== this.asked) return;
      this.status.textContent = `The search failed: ${apiErrorText(err)}`;
      document.body.dataset.search = "error";
      return;
    }
    if (ticket !== this.asked) return;
    this.render(q, Array.isArray(body.results) ? body.results : []);
  }

  render(q, results) {
    const words = queryWords(q);
    this.results.replaceChildren(
      ...results.map((r) => {
        const started = this.started.get(r.session_id);
        const when = started ? `Session of ${formatDateTime(started)}` : "A session";
        const excerpt = highlightParts(r.text || "", words).map((p) => (p.hit ? h("mark", {}, p.text) : p.text));
        return h(
          "li",
          {},
          h(
            "a",
            {
              class: `search-result kind-${r.kind}`,
              "data-testid": "search-result",
              "data-session-id": r.session_id,
              "data-kind": r.kind,
              "data-seq": Number.isInteger(r.seq) ? r.seq : null,
              href: resultHref(r, this.token),
            },
            h(
              "span",
              { class: "result-head" },
              h("span", { class: "result-kind" }, KIND_LABEL[r.kind] || r.kind),
              h("span", { class: "result-when" }, r.ts ? `${when} · ${formatTime(r.ts)}` : when),
            ),
            h("span", { class: "result-text" }, excerpt),
          ),
        );
      }),
    );
    const n = results.length;
    this.status.textContent = n
      ? `${n} result${n === 1 ? "" : "s"} for “${q}”`
      : `Nothing found for “${q}”. Words match whole; try another word.`;
    document.body.dataset.search = "done";
  }
}
