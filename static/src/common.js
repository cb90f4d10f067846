// Small helpers shared by the pages: DOM, formatting, the HTTP API, a safe Markdown renderer.

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
// Headings, paragraphs, lists, block quotes, fenced code, rules; inline code, bold, italic and
// http(s)/mailto links. Everything becomes DOM nodes with text content: no HTML is parsed.

function safeHref(url) {
  try {
    const u = new URL(url, window.location.href);
    return ["http:", "https:", "mailto:"].includes(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

const INLINE = /(`+)([\s\S]*?[^`])\1(?!`)|\*\*([^*]+?)\*\*|__([^_]+?)__|\*([^*\s][^*]*?)\*|_([^_\s][^_]*?)_|\[([^\]]+)\]\(([^)\s]+)\)|(https?:\/\/[^\s<>()]+[^\s<>().,;:!?'"])/g;

export function renderInline(text) {
  const out = [];
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) out.push(text.slice(last, m.index));
    if (m[1]) out.push(h("code", {}, m[2]));
    else if (m[3] || m[4]) out.push(h("strong", {}, renderInline(m[3] || m[4])));
    else if (m[5] || m[6]) out.push(h("em", {}, renderInline(m[5] || m[6])));
    else if (m[7]) {
      const href = safeHref(m[8]);
      out.push(href ? h("a", { href, rel: "noopener noreferrer", target: "_blank" }, m[7]) : m[0]);
    } else if (m[9]) {
      const href = safeHref(m[9]);
      out.push(href ? h("a", { href, rel: "noopener noreferrer", target: "_blank" }, m[9]) : m[9]);
    }
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

export function renderMarkdown(source) {
  const root = document.createDocumentFragment();
  const lines = source.replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  const isList = (l) => /^\s*([-*+]|\d+[.)])\s+/.test(l);
  const isBlockStart = (l) =>
    /^\s*(#{1,6}\s|```|~~~|>|([-*_])\s*\2\s*\2[\s\-*_]*$)/.test(l) || isList(l);
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    const fence = line.match(/^\s*(```|~~~)/);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence[1])) body.push(lines[i++]);
      i++;
      root.append(h("pre", {}, h("code", {}, body.join("\n"))));
      continue;
    }
    const heading = line.match(/^\s*(#{1,6})\s+(.*?)\s*#*\s*$/);
    if (heading) {
      // Notes headings sit under the page's own headings: start at h3.
      const level = Math.min(6, heading[1].length + 2);
      root.append(h(`h${level}`, {}, renderInline(heading[2])));
      i++;
      continue;
    }
    if (/^\s*([-*_])\s*\1\s*\1[\s\-*_]*$/.test(line)) {
      root.append(h("hr"));
      i++;
      continue;
    }
    if (/^\s*>/.test(line)) {
      const body = [];
      while (i < lines.length && /^\s*>/.test(lines[i])) body.push(lines[i++].replace(/^\s*>\s?/, ""));
      const quote = h("blockquote");
      quote.append(renderMarkdown(body.join("\n")));
      root.append(quote);
      continue;
    }
    if (isList(line)) {
      const ordered = /^\s*\d+[.)]/.test(line);
      const list = h(ordered ? "ol" : "ul");
      while (i < lines.length && isList(lines[i])) {
        let item = lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, "");
        i++;
        // Continuation lines (indented, not a new item).
        while (i < lines.length && lines[i].trim() && /^\s{2,}/.test(lines[i]) && !isList(lines[i])) {
          item += ` ${lines[i].trim()}`;
          i++;
        }
        const task = item.match(/^\[([ xX])\]\s+(.*)$/);
        if (task) {
          const box = h("input", { type: "checkbox", disabled: true, "aria-label": "task" });
          box.checked = task[1] !== " ";
          list.append(h("li", { class: "task" }, box, " ", renderInline(task[2])));
        } else {
          list.append(h("li", {}, renderInline(item)));
        }
      }
      root.append(list);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && (para.length === 0 || !isBlockStart(lines[i]))) {
      para.push(lines[i++].trim());
    }
    const p = h("p");
    para.forEach((text, n) => {
      if (n) p.append(h("br"));
      p.append(...renderInline(text));
    });
    root.append(p);
  }
  return root;
}
