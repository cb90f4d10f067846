// Review-page sentences: off-the-record stretches, item changes, search highlights.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { changePhrases, highlightParts, queryWords, recordStretches, stretchText } from "../src/describe.js";

const ADA = "u-ada";
const GRACE = "u-grace";
const names = { [ADA]: "Ada", [GRACE]: "Grace" };
const nameOf = (id) => names[id] || "A member";
const rec = (seq, by, state) => ({ t: "record", seq, by, state, ts: seq * 60 });

describe("off-the-record stretches", () => {
  test("one line per stretch, with who asked and who agreed", () => {
    const events = [
      { t: "chat", seq: 1 },
      rec(2, GRACE, "requested"),
      rec(3, ADA, "off"),
      rec(4, ADA, "on"),
      rec(5, ADA, "requested"),
      rec(6, ADA, "on"), // withdrawn
      rec(7, GRACE, "requested"),
      rec(8, ADA, "on"), // declined
      rec(9, GRACE, "requested"),
      rec(10, ADA, "off"), // to the end of the session
    ];
    const stretches = recordStretches(events, [ADA, GRACE]);
    assert.deepEqual(stretches, [
      { kind: "off", seq: 3, from: 180, to: 240, askedBy: GRACE, agreedBy: ADA, onBy: ADA },
      { kind: "withdrawn", seq: 6, askedBy: ADA, by: ADA, ts: 360 },
      { kind: "declined", seq: 8, askedBy: GRACE, by: ADA, ts: 480 },
      { kind: "off", seq: 10, from: 600, to: null, askedBy: GRACE, agreedBy: ADA, onBy: null },
    ]);
    const time = (ts) => `t${ts}`;
    assert.equal(
      stretchText(stretches[0], nameOf, time),
      "Off the record t180–t240, asked by Grace, agreed by Ada. What was said then is not kept.",
    );
    assert.match(stretchText(stretches[3], nameOf, time), /from t600 to the end of the session/);
    assert.equal(stretchText(stretches[2], nameOf, time), "Grace asked to go off the record; Ada declined");
  });

  test("a transcript that starts off (its request in an earlier page): the other one asked", () => {
    const [s] = recordStretches([rec(3, ADA, "off")], [ADA, GRACE]);
    assert.equal(s.askedBy, GRACE);
  });
});

describe("item changes", () => {
  test("phrases for each field", () => {
    assert.deepEqual(changePhrases({ state: "done" }, nameOf), ["marked done"]);
    assert.deepEqual(changePhrases({ state: "open", owner: ADA, due: null }, nameOf), [
      "reopened",
      "given to Ada",
      "due date removed",
    ]);
    assert.deepEqual(changePhrases({ text: "new" }, nameOf), ["reworded to “new”"]);
  });
});

describe("search highlights", () => {
  test("whole words and longer forms, case-insensitively", () => {
    const words = queryWords("Draft  chapter!");
    assert.deepEqual(words, ["draft", "chapter"]);
    assert.deepEqual(highlightParts("Send the drafts of Chapter 3; redraft later", words), [
      { text: "Send the ", hit: false },
      { text: "drafts", hit: true },
      { text: " of ", hit: false },
      { text: "Chapter", hit: true },
      { text: " 3; redraft later", hit: false },
    ]);
    assert.deepEqual(highlightParts("café", queryWords("CAFÉ")), [{ text: "café", hit: true }]);
  });
});
