// The notes renderer of the review page: linear on any input, nothing unsafe passes.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseInline, parseMarkdown, safeHref } from "../src/markdown.js";

const PATHOLOGICAL = {
  backticks: "`".repeat(8000) + "a",
  "backticks then backticks": "`".repeat(4000) + "a" + "`".repeat(3999) + "b",
  stars: "*".repeat(8000) + "a",
  "star pairs": "*a".repeat(8000),
  underscores: "_".repeat(8000) + "a",
  "underscore pairs": "_ a".repeat(8000),
  brackets: "[".repeat(8000) + "a",
  "link openers": "](".repeat(8000) + "a",
  "bracket link openers": "[a](".repeat(4000) + "a",
  "unclosed labels": "[a".repeat(8000),
  urls: "http://a(".repeat(4000),
  mixed: "*_[`](".repeat(3000) + "x",
  "heading spaces": "# a" + " ".repeat(8000) + "x",
  "heading hashes": "# a " + "# ".repeat(8000) + "x",
  "rule-ish": "- - " + "- ".repeat(8000) + "x",
  "list-ish": " ".repeat(8000) + "1" + "2".repeat(8000),
  quotes: ">".repeat(8000) + "a",
  "many lines": "`a\n*b\n[c](\n".repeat(3000),
};

for (const [name, line] of Object.entries(PATHOLOGICAL)) {
  test(`a pathological line renders in well under a second: ${name}`, () => {
    const start = performance.now();
    const blocks = parseMarkdown(line);
    const ms = performance.now() - start;
    assert.ok(blocks.length > 0);
    assert.ok(ms < 500, `${name} took ${ms.toFixed(1)} ms`);
  });
}

test("parsing time grows linearly with the line", () => {
  const time = (n) => {
    const line = "`".repeat(n) + "a" + "*".repeat(n) + "[".repeat(n) + "](".repeat(n);
    const start = performance.now();
    for (let k = 0; k < 5; k++) parseMarkdown(line);
    return performance.now() - start;
  };
  time(2000); // warm up
  const small = Math.max(time(8000), 1);
  const big = time(64000);
  assert.ok(big < small * 30, `8x the input took ${(big / small).toFixed(1)}x the time`);
});

test("inline code, bold, italic and links", () => {
  assert.deepEqual(parseInline("a `x*y` **b** _c_ [d](https://e.org/f) http://g.org/h."), [
    { type: "text", text: "a " },
    { type: "code", text: "x*y" },
    { type: "text", text: " " },
    { type: "strong", children: [{ type: "text", text: "b" }] },
    { type: "text", text: " " },
    { type: "em", children: [{ type: "text", text: "c" }] },
    { type: "text", text: " " },
    { type: "link", href: "https://e.org/f", text: "d" },
    { type: "text", text: " " },
    { type: "link", href: "http://g.org/h", text: "http://g.org/h" },
    { type: "text", text: "." },
  ]);
  assert.deepEqual(parseInline("``a ` b``"), [{ type: "code", text: "a ` b" }]);
});

test("no javascript:, data: or relative links; raw HTML stays text", () => {
  for (const bad of ["javascript:alert(1)", "JaVaScRiPt:alert(1)", "data:text/html,x", "/x", "vbscript:x", " javascript:x"]) {
    assert.equal(safeHref(bad), null, bad);
    const tokens = parseInline(`[click](${bad})`);
    assert.ok(tokens.every((t) => t.type === "text"), bad);
  }
  const html = '<img src=x onerror="alert(1)"><script>alert(1)</script>';
  assert.deepEqual(parseMarkdown(html), [{ type: "paragraph", lines: [[{ type: "text", text: html }]] }]);
});

test("blocks: headings, lists with tasks, quotes, fences, rules", () => {
  const blocks = parseMarkdown("## Next ##\n- [x] done\n- open\n> quoted\n```\n<b>\n```\n---\ntext");
  assert.deepEqual(
    blocks.map((b) => b.type),
    ["heading", "list", "quote", "code", "rule", "paragraph"],
  );
  assert.equal(blocks[0].level, 2);
  assert.deepEqual(blocks[0].children, [{ type: "text", text: "Next" }]);
  assert.deepEqual(blocks[1].items.map((i) => i.task), [true, null]);
  assert.equal(blocks[3].text, "<b>");
});
