// Small helpers shared by the pages: DOM, formatting, the HTTP API, a safe Markdown renderer.
import { parseInline, parseMarkdown } from "./markdown.js";

/** The page's script runs: take down the "script is missing" banner the HTML starts with. */
export function bundleLoaded() {
  const banner = document.getElementById("bundle-missing");
  if (banner) banner.remove();
}

export function $(selector, root = document) {
  const el = root.querySelector(selector);
  if (!el) throw new Error(`missing element ${selector}`);
  return el;
}

/** Create an element with attributes and children (strings become text nodes, never HTML). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** A fragment with the token (never sent to the server) and maybe a place in the page. */
export function fragmentWithToken(token, at = null) {
  return `#token=${encodeURIComponent(token)}${at ? `&at=${encodeURIComponent(at)}` : ""}`;
}

/** The place a link points at inside a page ("seq-42", "notes"): `at=` or a bare `seq-42`. */
export function anchorFromFragment(hash = window.location.hash) {
  const params = new URLSearchParams(hash.replace(/^#/, ""));
  const at = params.get("at");
  if (at) return at;
  for (const key of params.keys()) if (/^seq-\d+$/.test(key)) return key;
  return null;
}

/** Save a blob as a file named `filename` (a click on a temporary link). */
export function downloadBlob(blob, filename, type = "text/markdown;charset=utf-8") {
  const url = URL.createObjectURL(blob.type ? blob : new Blob([blob], { type }));
  const a = h("a", { href: url, download: filename });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60000);
}

export function formatTime(ts) {
  return new Date(ts * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

export function formatDateTime(ts) {
  return new Date(ts * 1000).toLocaleString([], {
    weekday: "short",
    year: "numeric",
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

export function formatDate(ts) {
  return new Date(ts * 1000).toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

/** A due date "YYYY-MM-DD" as the reader's calendar says it (it is a day, not an instant). */
export function formatDue(due) {
  const [y, m, d] = due.split("-").map(Number);
  return new Date(y, m - 1, d).toLocaleDateString([], { year: "numeric", month: "short", day: "numeric" });
}

export function formatDuration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "";
  const total = Math.round(seconds);
  const h = Math.floor(total / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (h) return `${h} h ${String(m).padStart(2, "0")} min`;
  if (m) return `${m} min`;
  return `${s} s`;
}

export function roleLabel(role) {
  return role === "mentor" ? "Mentor" : role === "mentee" ? "Mentee" : role;
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** GET from the HTTP API with the member's token as Bearer. */
export async function apiGet(path, token, { as = "json" } = {}) {
  let res;
  try {
    res = await fetch(path, { headers: { Authorization: `Bearer ${token}` } });
  } catch {
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection and reload.");
  }
  if (!res.ok) {
    let code = "error";
    let message = `The server answered ${res.status}.`;
    try {
      const body = await res.json();
      if (body && body.error) ({ code, message } = body.error);
    } catch {
      /* not JSON */
    }
    throw new ApiError(res.status, code, message);
  }
  if (as === "text") return res.text();
  if (as === "blob") return res.blob();
  return res.json();
}

export function apiErrorText(err) {
  if (err instanceof ApiError) {
    if (err.status === 401) return "This link has expired or is invalid. Ask for a new link.";
    if (err.status === 403) return "You are not a member of this room.";
    if (err.status === 404) return "Nothing was found at this address. The link may be wrong.";
    return err.message;
  }
  return "Something went wrong. Reload the page to try again.";
}

export function showFatal(message) {
  const box = document.querySelector('[data-testid="error-message"]');
  if (box) {
    box.replaceChildren(h("strong", {}, "Can't open this page. "), message);
    box.hidden = false;
  }
  document.body.dataset.state = "error";
}

// ---- a small, safe Markdown renderer -----------------------------------------------------
// The parser (./markdown.js) is linear on any input; here its tokens become DOM nodes with text
// content: no HTML is parsed, links are absolute http(s)/mailto only.

function inlineNodes(tokens) {
  return tokens.map((t) => {
    if (t.type === "code") return h("code", {}, t.text);
    if (t.type === "strong") return h("strong", {}, inlineNodes(t.children));
    if (t.type === "em") return h("em", {}, inlineNodes(t.children));
    if (t.type === "link") return h("a", { href: t.href, rel: "noopener noreferrer", target: "_blank" }, t.text);
    return t.text;
  });
}

export function renderInline(text) {
  return inlineNodes(parseInline(text));
}

function blockNodes(blocks) {
  return blocks.map((b) => {
    // Notes headings sit under the page's own headings: start at h3.
    if (b.type === "heading") return h(`h${Math.min(6, b.level + 2)}`, {}, inlineNodes(b.children));
    if (b.type === "code") return h("pre", {}, h("code", {}, b.text));
    if (b.type === "rule") return h("hr");
    if (b.type === "quote") return h("blockquote", {}, blockNodes(b.children));
    if (b.type === "list") {
      return h(
        b.ordered ? "ol" : "ul",
        {},
        b.items.map((item) => {
          if (item.task === null) return h("li", {}, inlineNodes(item.children));
          const box = h("input", { type: "checkbox", disabled: true, "aria-label": "task" });
          box.checked = item.task;
          return h("li", { class: "task" }, box, " ", inlineNodes(item.children));
        }),
      );
    }
    const p = h("p");
    b.lines.forEach((line, n) => {
      if (n) p.append(h("br"));
      p.append(...inlineNodes(line));
    });
    return p;
  });
}

export function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  root.append(...blockNodes(parseMarkdown(source)));
  return root;
}

/** Wire the page's #download button to fetch `path` as Markdown and save it as `filename`. */
export function wireMarkdownDownload(path, token, filename) {
  const download = $("#download");
  download.disabled = false;
  download.addEventListener("click", async () => {
    download.disabled = true;
    const status = $("#download-status");
    try {
      downloadBlob(await apiGet(path, token, { as: "blob" }), filename());
      status.textContent = "The Markdown file was downloaded.";
    } catch (err) {
      status.textContent = "";
      const box = $("#error");
      box.textContent = `The download failed: ${apiErrorText(err)}`;
      box.hidden = false;
    } finally {
      download.disabled = false;
    }
  });
}
