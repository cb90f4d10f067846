// The room's model of the session: goal, items (since last time, done stays), key moments,
// off the record (who may agree), and own changes shown before their ack.
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { SessionModel, dueOrNull, truncate } from "../src/session-model.js";
import { ME, PEER, welcomeFrame } from "./fakes.js";

const item = (id, fields = {}) => ({
  id,
  text: `item ${id}`,
  owner: PEER.id,
  due: null,
  state: "open",
  by: ME.id,
  session_id: "s0",
  created_at: 100,
  ...fields,
});

function model(fields = {}, as = ME) {
  const m = new SessionModel();
  m.onWelcome(welcomeFrame({ user: as, ...fields }));
  return m;
}

const keys = (m) => m.itemsView().map((v) => v.key);

describe("items", () => {
  test("since last time first (oldest first), then this session's", () => {
    const m = model({
      items: [item("s0.1", { created_at: 100 }), item("s1.3", { session_id: "s1", created_at: 300 }), item("s0.2", { created_at: 200 })],
    });
    m.applyEvent({ t: "item", seq: 4, by: PEER.id, item: item("s1.4", { session_id: "s1", created_at: 250 }), ts: 250 });
    assert.deepEqual(keys(m), ["s0.1", "s0.2", "s1.4", "s1.3"]);
    assert.deepEqual(
      m.itemsView().map((v) => v.sinceLastTime),
      [true, true, false, false],
    );
  });

  test("an item ticked off stays listed as done until the session ends", () => {
    const m = model({ items: [item("s0.1"), item("s0.2")] });
    m.applyEvent({ t: "item_update", seq: 1, by: PEER.id, item: "s0.1", state: "done", ts: 5 });
    assert.deepEqual(
      m.itemsView().map((v) => [v.id, v.state]),
      [
        ["s0.1", "done"],
        ["s0.2", "open"],
      ],
    );
    // a reconnect: the welcome lists open items only; the done one stays
    m.onWelcome(welcomeFrame({ items: [item("s0.2", { owner: ME.id })] }));
    assert.deepEqual(
      m.itemsView().map((v) => [v.id, v.state, v.owner]),
      [
        ["s0.1", "done", PEER.id],
        ["s0.2", "open", ME.id],
      ],
    );
    // the next session: only what is still open
    m.onWelcome(welcomeFrame({ session_id: "s2", items: [item("s0.2")] }));
    assert.deepEqual(keys(m), ["s0.2"]);
  });

  test("updates change only the fields they carry; a null due clears it", () => {
    const m = model({ items: [item("s0.1", { due: "2026-12-01" })] });
    m.applyEvent({ t: "item_update", seq: 1, by: ME.id, item: "s0.1", owner: ME.id, ts: 1 });
    m.applyEvent({ t: "item_update", seq: 2, by: ME.id, item: "s0.1", due: null, text: "new words", ts: 2 });
    const [view] = m.itemsView();
    assert.equal(view.owner, ME.id);
    assert.equal(view.due, null);
    assert.equal(view.text, "new words");
    assert.equal(view.state, "open");
  });

  test("an own change shows at once, stays after the ack until its event, and goes if refused", () => {
    const m = model({ items: [item("s0.1"), item("s0.2")] });
    m.propose("f1", { t: "item_update", item: "s0.1", state: "done" });
    m.propose("f2", { t: "item_update", item: "s0.2", state: "done" });
    assert.deepEqual(
      m.itemsView().map((v) => [v.state, v.pending]),
      [
        ["done", true],
        ["done", true],
      ],
    );
    m.settle("f1", 7);
    assert.equal(m.itemsView()[0].state, "done", "acked, the event not in yet: still shown done");
    m.applyEvent({ t: "item_update", seq: 7, by: ME.id, item: "s0.1", state: "done", ts: 7 });
    assert.deepEqual(
      [m.itemsView()[0].state, m.itemsView()[0].pending],
      ["done", false],
    );
    m.fail("f2");
    assert.deepEqual(
      [m.itemsView()[1].state, m.itemsView()[1].pending],
      ["open", false],
    );
  });

  test("a new item shows as pending, then as the server's item", () => {
    const m = model();
    m.propose("f1", { t: "item", text: "Book the room", owner: PEER.id, due: "2026-12-24" });
    assert.deepEqual(
      m.itemsView().map((v) => [v.key, v.id, v.text, v.pending, v.sinceLastTime]),
      [["pending:f1", null, "Book the room", true, false]],
    );
    m.applyEvent({ t: "item", seq: 3, by: ME.id, item: item("s1.3", { session_id: "s1", text: "Book the room" }), ts: 3 });
    m.settle("f1", 3); // the ack after its event
    assert.deepEqual(
      m.itemsView().map((v) => [v.key, v.pending]),
      [["s1.3", false]],
    );
  });

  test("an update of an item the page never saw is listed and filled from the journey", () => {
    const m = model({ items: [] });
    m.applyEvent({ t: "item_update", seq: 2, by: PEER.id, item: "s0.9", state: "done", ts: 2 });
    assert.deepEqual(
      m.itemsView().map((v) => [v.id, v.text, v.state]),
      [["s0.9", null, "done"]],
    );
    assert.deepEqual(Array.from(m.stubs), ["s0.9"]);
    m.fillItems([item("s0.9", { text: "Call Alan", state: "open" }), item("s0.8")]);
    assert.deepEqual(
      m.itemsView().map((v) => [v.id, v.text, v.state]),
      [["s0.9", "Call Alan", "done"]],
      "the journey fills the text; the event's state wins; other items are not added",
    );
    assert.equal(m.stubs.size, 0);
  });
});

describe("goal and key moments", () => {
  test("the goal from the welcome, events, and own edits before their ack", () => {
    const m = model({ goal: "Chapter 3" });
    assert.deepEqual(m.goalView(), { text: "Chapter 3", pending: false });
    m.applyEvent({ t: "goal", seq: 1, by: PEER.id, text: "Chapter 4", ts: 1 });
    assert.deepEqual(m.goalView(), { text: "Chapter 4", pending: false });
    m.propose("g1", { t: "goal", text: "" });
    assert.deepEqual(m.goalView(), { text: null, pending: true });
    m.settle("g1", 2);
    m.applyEvent({ t: "goal", seq: 2, by: ME.id, text: "", ts: 2 });
    assert.deepEqual(m.goalView(), { text: null, pending: false });
    assert.deepEqual(model({ goal: null }).goalView(), { text: null, pending: false });
  });

  test("marks in seq order, own ones pending until stored", () => {
    const m = model();
    m.applyEvent({ t: "mark", seq: 4, by: PEER.id, kind: "feedback", text: "b", ref: 2, ts: 4 });
    m.applyEvent({ t: "mark", seq: 3, by: ME.id, kind: "learning", text: "a", ref: null, ts: 3 });
    m.propose("m1", { t: "mark", kind: "question", text: "c", ref: 1 });
    assert.deepEqual(
      m.marksView().map((x) => [x.kind, x.pending]),
      [
        ["learning", false],
        ["feedback", false],
        ["question", true],
      ],
    );
    m.settle("m1", null); // no seq: nothing to wait for
    assert.equal(m.marksView().length, 2);
  });

  test("limits are counted in code points", () => {
    assert.equal(truncate("😀".repeat(501), 500), "😀".repeat(500));
    assert.equal(truncate("short", 500), "short");
    assert.equal(dueOrNull("2026-12-09"), "2026-12-09");
    assert.equal(dueOrNull(""), null);
  });
});

describe("off the record", () => {
  test("one asks, only the other may agree; either turns it back on", () => {
    const mine = model();
    const theirs = model({}, PEER);
    const events = [{ t: "record", seq: 1, by: ME.id, state: "requested", ts: 10 }];
    for (const m of [mine, theirs]) m.applyEvent(events[0]);
    assert.deepEqual(
      [mine.recordView().canAccept, mine.recordView().toggle, mine.recordView().banner],
      [false, { on: true, label: "Cancel the request" }, true],
    );
    assert.deepEqual(
      [theirs.recordView().canAccept, theirs.recordView().toggle],
      [true, { on: true, label: "Decline" }],
    );
    for (const m of [mine, theirs]) m.applyEvent({ t: "record", seq: 2, by: PEER.id, state: "off", ts: 20 });
    for (const m of [mine, theirs]) {
      const v = m.recordView();
      assert.deepEqual(
        [v.state, v.requestedBy, v.agreedBy, v.since, v.canAccept, v.banner, v.toggle.on],
        ["off", ME.id, PEER.id, 20, false, true, true],
      );
    }
    for (const m of [mine, theirs]) m.applyEvent({ t: "record", seq: 3, by: PEER.id, state: "on", ts: 30 });
    for (const m of [mine, theirs]) {
      const v = m.recordView();
      assert.deepEqual([v.state, v.banner, v.canAccept, v.toggle.on], ["on", false, false, false]);
    }
  });

  test("joining while off: the one who did not agree is the one who asked", () => {
    const m = model({ record: "off", record_by: PEER.id });
    assert.deepEqual([m.recordView().requestedBy, m.recordView().agreedBy], [ME.id, PEER.id]);
    const asked = model({ record: "requested", record_by: PEER.id });
    assert.equal(asked.recordView().canAccept, true);
    assert.equal(model({}).recordView().state, "on", "a v1 welcome: on the record");
  });

  test("a record frame waiting for its ack makes the toggle busy", () => {
    const m = model();
    m.propose("r1", { t: "record", on: false });
    assert.equal(m.recordView().busy, true);
    assert.equal(m.recordView().state, "on", "the server decides the state");
    m.settle("r1", 1);
    m.applyEvent({ t: "record", seq: 1, by: ME.id, state: "requested", ts: 1 });
    assert.equal(m.recordView().busy, false);
    assert.equal(m.recordView().state, "requested");
  });
});
