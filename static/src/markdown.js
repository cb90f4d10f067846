// A small, safe Markdown parser for the review page's notes, linear in its input.
//
// Headings, paragraphs, lists (with task boxes), block quotes, fenced code, rules; inline code,
// bold, italic, [label](url) links and bare http(s) URLs. It returns plain tokens; the page turns
// them into DOM nodes with text content (never HTML). No regular expression here can backtrack
// over a line: inline syntax is found by one left-to-right scan with precomputed "next index of"
// tables, so a line of 8,000 backticks (or `*`, `_`, `[`, `](`) costs a few milliseconds.

/** A link target the page may open: absolute http(s) or mailto only. */
export function safeHref(url) {
  const text = String(url).trim();
  if (!/^(https?:\/\/|mailto:)/i.test(text)) return null;
  try {
    const u = new URL(text);
    return ["http:", "https:", "mailto:"].includes(u.protocol) ? u.href : null;
  } catch {
    return null;
  }
}

const isSpace = (c) => c === " " || c === "\t" || c === "\n" || c === "\r" || c === "\f" || c === "\v";

/** next[i] = the smallest j >= i with pred(text[j]), or text.length. */
function nextIndex(text, pred) {
  const n = text.length;
  const next = new Int32Array(n + 1);
  next[n] = n;
  for (let i = n - 1; i >= 0; i--) next[i] = pred(text[i]) ? i : next[i + 1];
  return next;
}

const URL_STOP = (c) => isSpace(c) || c === "<" || c === ">" || c === "(" || c === ")";
const URL_TRAILING = new Set([".", ",", ";", ":", "!", "?", "'", '"', ")", "("]);

/**
 * Inline tokens of one line: {type:"text",text}, {type:"code",text}, {type:"strong",children},
 * {type:"em",children}, {type:"link",href,text}. Unsafe or unclosed syntax stays text.
 */
export function parseInline(text, depth = 0) {
  text = String(text);
  const n = text.length;
  const out = [];
  let buf = "";
  const flush = () => {
    if (buf) out.push({ type: "text", text: buf });
    buf = "";
  };
  if (!n) return out;

  // Backtick runs: for each run length, the positions of runs of exactly that length, in order.
  const runs = new Map();
  for (let i = 0; i < n; ) {
    if (text[i] !== "`") {
      i++;
      continue;
    }
    let j = i;
    while (j < n && text[j] === "`") j++;
    const len = j - i;
    if (!runs.has(len)) runs.set(len, { at: [], next: 0 });
    runs.get(len).at.push(i);
    i = j;
  }
  // "Next index of" tables, each built once (on first use) for the whole line.
  const lazy = (pred) => {
    let table = null;
    return (k) => (table || (table = nextIndex(text, pred)))[k];
  };
  const nextStar = lazy((c) => c === "*");
  const nextUnder = lazy((c) => c === "_");
  const nextClose = lazy((c) => c === "]");
  const nextParenOrSpace = lazy((c) => c === ")" || isSpace(c));
  const nextUrlStop = lazy(URL_STOP);

  let i = 0;
  while (i < n) {
    const c = text[i];
    if (c === "`") {
      let j = i;
      while (j < n && text[j] === "`") j++;
      const len = j - i;
      const list = runs.get(len);
      // Runs of this length are visited in order: the pointer only moves forward.
      while (list.next < list.at.length && list.at[list.next] <= i) list.next++;
      if (list.next < list.at.length) {
        const close = list.at[list.next];
        list.next++;
        flush();
        out.push({ type: "code", text: text.slice(j, close) });
        i = close + len;
      } else {
        buf += text.slice(i, j);
        i = j;
      }
      continue;
    }
    if ((c === "*" || c === "_") && depth < 4) {
      const next = c === "*" ? nextStar : nextUnder;
      if (text[i + 1] === c) {
        // **strong** / __strong__: no delimiter character inside.
        const end = next(i + 2);
        if (end > i + 2 && end + 1 < n && text[end + 1] === c) {
          flush();
          out.push({ type: "strong", children: parseInline(text.slice(i + 2, end), depth + 1) });
          i = end + 2;
          continue;
        }
        buf += c + c;
        i += 2;
        continue;
      }
      // *em* / _em_: starts with neither space nor the delimiter.
      const end = next(i + 1);
      if (i + 1 < n && !isSpace(text[i + 1]) && end < n && end > i + 1) {
        flush();
        out.push({ type: "em", children: parseInline(text.slice(i + 1, end), depth + 1) });
        i = end + 1;
        continue;
      }
      buf += c;
      i++;
      continue;
    }
    if (c === "[") {
      const close = nextClose(i + 1);
      if (close > i + 1 && close + 1 < n && text[close + 1] === "(") {
        const end = nextParenOrSpace(close + 2);
        if (end > close + 2 && end < n && text[end] === ")") {
          const label = text.slice(i + 1, close);
          const href = safeHref(text.slice(close + 2, end));
          flush();
          if (href) out.push({ type: "link", href, text: label });
          else out.push({ type: "text", text: text.slice(i, end + 1) });
          i = end + 1;
          continue;
        }
      }
      buf += c;
      i++;
      continue;
    }
    if ((c === "h" || c === "H") && /^https?:\/\//i.test(text.slice(i, i + 8))) {
      let end = nextUrlStop(i);
      while (end > i && URL_TRAILING.has(text[end - 1])) end--;
      const raw = text.slice(i, end);
      const href = /^https?:\/\/./i.test(raw) ? safeHref(raw) : null;
      if (href) {
        flush();
        out.push({ type: "link", href, text: raw });
        i = end;
        continue;
      }
      buf += text.slice(i, Math.max(end, i + 1));
      i = Math.max(end, i + 1);
      continue;
    }
    buf += c;
    i++;
  }
  flush();
  return out;
}

// ---- blocks ---------------------------------------------------------------------------------

const leadingSpace = (l) => {
  let i = 0;
  while (i < l.length && (l[i] === " " || l[i] === "\t")) i++;
  return i;
};

/** "## Title ##" → {level: 2, text: "Title"}; null when not a heading. */
function heading(line) {
  const s = line.slice(leadingSpace(line));
  let k = 0;
  while (k < s.length && s[k] === "#") k++;
  if (k < 1 || k > 6) return null;
  if (k < s.length && !isSpace(s[k])) return null;
  let text = s.slice(k).trim();
  // A closing run of #s (after a space, or the whole text).
  let e = text.length;
  while (e > 0 && text[e - 1] === "#") e--;
  if (e === 0) text = "";
  else if (e < text.length && isSpace(text[e - 1])) text = text.slice(0, e).trim();
  return { level: k, text };
}

/** A thematic break: three or more of one of -, *, _ with only spaces between. */
function isRule(line) {
  const s = line.trim();
  if (s.length < 3) return false;
  const m = s[0];
  if (m !== "-" && m !== "*" && m !== "_") return false;
  let count = 0;
  for (const ch of s) {
    if (ch === m) count++;
    else if (ch !== " " && ch !== "\t") return false;
  }
  return count >= 3;
}

/** A list item's marker: {ordered, rest} or null. "- x", "* x", "+ x", "1. x", "1) x". */
function listItem(line) {
  let i = leadingSpace(line);
  let ordered = false;
  if (line[i] === "-" || line[i] === "*" || line[i] === "+") i++;
  else {
    const start = i;
    while (i < line.length && i - start < 10 && line[i] >= "0" && line[i] <= "9") i++;
    if (i === start || (line[i] !== "." && line[i] !== ")")) return null;
    i++;
    ordered = true;
  }
  if (i >= line.length || !isSpace(line[i])) return null;
  const rest = line.slice(i).trimStart();
  return rest ? { ordered, rest } : null;
}

const fenceOf = (line) => {
  const s = line.trimStart();
  return s.startsWith("```") ? "```" : s.startsWith("~~~") ? "~~~" : null;
};
const isQuote = (line) => line.trimStart().startsWith(">");
const isBlockStart = (line) => heading(line) !== null || fenceOf(line) !== null || isQuote(line) || isRule(line) || listItem(line) !== null;

/**
 * Block tokens: {type:"heading",level,children}, {type:"paragraph",lines:[inline[]]},
 * {type:"code",text}, {type:"rule"}, {type:"quote",children:[blocks]},
 * {type:"list",ordered,items:[{task:null|bool,children}]}.
 */
export function parseMarkdown(source, depth = 0) {
  const blocks = [];
  const lines = String(source).replace(/\r\n?|\u2028|\u2029/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i++;
      continue;
    }
    const fence = fenceOf(line);
    if (fence) {
      const body = [];
      i++;
      while (i < lines.length && !lines[i].trim().startsWith(fence)) body.push(lines[i++]);
      i++;
      blocks.push({ type: "code", text: body.join("\n") });
      continue;
    }
    const head = heading(line);
    if (head) {
      blocks.push({ type: "heading", level: head.level, children: parseInline(head.text) });
      i++;
      continue;
    }
    if (isRule(line)) {
      blocks.push({ type: "rule" });
      i++;
      continue;
    }
    if (isQuote(line)) {
      const body = [];
      while (i < lines.length && isQuote(lines[i])) {
        let rest = lines[i++].trimStart().slice(1);
        if (rest.startsWith(" ")) rest = rest.slice(1);
        body.push(rest);
      }
      // Nested quotes beyond a few levels are shown as text.
      if (depth < 8) blocks.push({ type: "quote", children: parseMarkdown(body.join("\n"), depth + 1) });
      else blocks.push({ type: "paragraph", lines: body.map((b) => parseInline(b)) });
      continue;
    }
    const first = listItem(line);
    if (first) {
      const list = { type: "list", ordered: first.ordered, items: [] };
      let item;
      while (i < lines.length && (item = listItem(lines[i]))) {
        let text = item.rest;
        i++;
        // Continuation lines (indented, not a new item).
        while (i < lines.length && lines[i].trim() && leadingSpace(lines[i]) >= 2 && !listItem(lines[i])) {
          text += ` ${lines[i].trim()}`;
          i++;
        }
        let task = null;
        if (text[0] === "[" && text[2] === "]" && " xX".includes(text[1]) && text.length > 3 && isSpace(text[3])) {
          task = text[1] !== " ";
          text = text.slice(4).trimStart();
        }
        list.items.push({ task, children: parseInline(text) });
      }
      blocks.push(list);
      continue;
    }
    const para = [];
    while (i < lines.length && lines[i].trim() && (para.length === 0 || !isBlockStart(lines[i]))) {
      para.push(parseInline(lines[i++].trim()));
    }
    blocks.push({ type: "paragraph", lines: para });
  }
  return blocks;
}
