// Notes task lines read as action items.
import assert from "node:assert/strict";
import { test } from "node:test";
import { parseTaskLine } from "../src/task-line.js";

const members = [
  { id: "u-ada", name: "Ada Lovelace", role: "mentor" },
  { id: "u-grace", name: "Grace Hopper", role: "mentee" },
];

test("an open task line with a mention and a date", () => {
  assert.deepEqual(parseTaskLine("- [ ] send the draft @Grace", members), {
    text: "send the draft",
    owner: "u-grace",
    due: null,
  });
  assert.deepEqual(parseTaskLine("  * [ ] review chapter 2 @ada_lovelace due 2026-12-09", members), {
    text: "review chapter 2",
    owner: "u-ada",
    due: "2026-12-09",
  });
  assert.deepEqual(parseTaskLine("1. [ ] call @Bob", members), { text: "call @Bob", owner: null, due: null });
});

test("anything else is not an item", () => {
  assert.equal(parseTaskLine("- [x] done already @Grace", members), null);
  assert.equal(parseTaskLine("- plain bullet", members), null);
  assert.equal(parseTaskLine("- [ ] @Grace", members), null);
  assert.equal(parseTaskLine("", members), null);
});
